/* The pickle machine of PyTorch checkpoints (torch_pickle.c): data.pkl to a list of named tensors. */
#ifndef SAEFW_TORCH_PICKLE_H
#define SAEFW_TORCH_PICKLE_H

#include <stddef.h>
#include <stdint.h>

#include "tensorfile.h"

/* An unpickled data.pkl: its tensors in pickle order. */
typedef struct saefw_pickle saefw_pickle;

/* One tensor of the pickle and where its bytes are: elements [offset, offset + numel) of the storage
 * held in record data/<key>. Strings are owned by the pickle and live until saefw_pickle_free. */
typedef struct {
    const char *name; /* flattened state-dict key ("model.w", "tensor"), NUL-terminated */
    size_t name_len;
    const char *key; /* storage record key, NUL-terminated, unchecked (may hold '/' or NUL) */
    size_t key_len;
    saefw_dtype dtype;
    int64_t storage_numel; /* the storage's size as the pickle declares it */
    int64_t offset;        /* in elements */
    int ndim;
    int64_t shape[SAEFW_MAX_DIMS];
    int64_t numel;
    size_t nbytes;
} saefw_pickle_tensor;

/* Run the pickle pkl[0..len) (borrowed only during the call) and flatten what it builds: a tensor, or
 * a dict (nested dicts joined with ".") whose tensors are kept and scalars and strings skipped. Fails
 * with a message naming the byte offset of a bad opcode or the key of a bad entry. */
int saefw_pickle_load(const uint8_t *pkl, size_t len, saefw_pickle **out, char *err, size_t errlen);
size_t saefw_pickle_count(const saefw_pickle *p);
/* The i-th tensor (i < count), after checking its shape, contiguity and range against its storage's
 * declared size; the message names the tensor. */
int saefw_pickle_get(const saefw_pickle *p, size_t i, saefw_pickle_tensor *out, char *err, size_t errlen);
void saefw_pickle_free(saefw_pickle *p);

/* Run only the unpickler and the tensor checks over a data.pkl image, without a zip (for tests and the
 * fuzz replay). On success *n_tensors is the number of tensors the pickle describes. */
int saefw_tfi_unpickle_check(const uint8_t *pkl, size_t len, int *n_tensors, char *err, size_t errlen);

#endif
