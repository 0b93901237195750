/* Checksummed tensor files for checkpoints, and the resumable training state: named tensors and
 * numbers that the engine, the sources and every plugin save and load. */
#ifndef SAEFW_STATE_H
#define SAEFW_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "rng.h"
#include "tensorfile.h"

/* Metadata key holding the sha256 (hex) of the tensors' bytes, taken in name order. */
#define SAEFW_CHECKSUM_KEY "saefw_sha256"

/* sha256 over the tensors' bytes in name order, as 64 hex digits + NUL. */
int saefw_checksum_refs(const saefw_tensor_ref *t, int n, char hex[65], char *err, size_t errlen);
/* Verify an open file's checksum if it carries one: 0 when it matches or is absent, -1 (err names
 * the file) when it differs. *had (may be NULL) tells whether there was one. */
int saefw_checksum_verify(const saefw_tensorfile *tf, const char *path, int *had, char *err, size_t errlen);

/* Write a safetensors file with its checksum in the metadata (plus the n_meta pairs given). */
int saefw_write_checked(const char *path, const saefw_tensor_ref *t, int n, const char *const (*meta)[2], int n_meta,
                        char *err, size_t errlen);

/* ---- training state being written: entries point at live memory until written ---- */
typedef struct {
    saefw_tensor_ref *refs;
    char **names;    /* owned */
    int64_t *shapes; /* owned, SAEFW_MAX_DIMS per entry */
    void **copies;   /* owned copies of small values */
    int n, cap;
    char prefix[128]; /* prepended to names (e.g. "plugin.0.adam/") */
} saefw_state_out;

void saefw_state_out_init(saefw_state_out *s);
void saefw_state_out_free(saefw_state_out *s);
void saefw_state_set_prefix(saefw_state_out *s, const char *prefix);
/* Add a tensor by reference (it must stay valid until the state is written). */
int saefw_state_put(saefw_state_out *s, const char *name, saefw_dtype dt, int ndim, const int64_t *shape,
                    const void *data, char *err, size_t errlen);
/* Add a copy of n values (for small arrays and scalars). */
int saefw_state_put_copy(saefw_state_out *s, const char *name, saefw_dtype dt, int64_t n, const void *data, char *err,
                         size_t errlen);
int saefw_state_put_i64(saefw_state_out *s, const char *name, int64_t v, char *err, size_t errlen);
int saefw_state_put_f64(saefw_state_out *s, const char *name, double v, char *err, size_t errlen);
int saefw_state_put_rng(saefw_state_out *s, const char *name, const saefw_rng *r, char *err, size_t errlen);
int saefw_state_write(const saefw_state_out *s, const char *path, char *err, size_t errlen);

/* ---- training state being read ---- */
typedef struct {
    saefw_tensorfile *tf;
    char path[1024];
    char prefix[128];
} saefw_state_in;

/* Open and verify (the checksum is required here). */
int saefw_state_open(const char *path, saefw_state_in *s, char *err, size_t errlen);
void saefw_state_close(saefw_state_in *s);
void saefw_state_in_prefix(saefw_state_in *s, const char *prefix);
int saefw_state_has(const saefw_state_in *s, const char *name);
/* Copy exactly n values of dtype dt into out; a missing entry or another size/dtype is an error. */
int saefw_state_get(const saefw_state_in *s, const char *name, saefw_dtype dt, int64_t n, void *out, char *err,
                    size_t errlen);
int saefw_state_get_i64(const saefw_state_in *s, const char *name, int64_t *v, char *err, size_t errlen);
int saefw_state_get_f64(const saefw_state_in *s, const char *name, double *v, char *err, size_t errlen);
int saefw_state_get_rng(const saefw_state_in *s, const char *name, saefw_rng *r, char *err, size_t errlen);

#endif
