/* Reading and writing tensor files: safetensors, NumPy .npy, and PyTorch zip checkpoints (.pt/.pth).
 * Files are memory-mapped; tensor data is never copied unless converted. */
#ifndef SAEFW_TENSORFILE_H
#define SAEFW_TENSORFILE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
    SAEFW_DT_F32 = 0,
    SAEFW_DT_F16,
    SAEFW_DT_BF16,
    SAEFW_DT_F64,
    SAEFW_DT_I64,
    SAEFW_DT_I32,
    SAEFW_DT_I16,
    SAEFW_DT_U16,
    SAEFW_DT_I8,
    SAEFW_DT_U8,
    SAEFW_DT_BOOL,
    SAEFW_DT_COUNT
} saefw_dtype;

#define SAEFW_MAX_DIMS 8

/* Safetensors dtype name ("F32", "BF16", ...). */
const char *saefw_dtype_name(saefw_dtype dt);
size_t saefw_dtype_size(saefw_dtype dt);
/* Parse a safetensors dtype name; returns -1 if unknown. */
int saefw_dtype_parse(const char *name, saefw_dtype *out);

typedef struct {
    const char *name; /* owned by the file */
    saefw_dtype dtype;
    int ndim;
    int64_t shape[SAEFW_MAX_DIMS];
    int64_t numel;
    const void *data; /* C-contiguous, points into the mapping; valid until close.
                                    * Aligned to the item size, except a misaligned tensor of more
                                    * than 64 MiB (small ones are copied to aligned memory). */
    size_t nbytes;
} saefw_tensor_info;

typedef struct saefw_tensorfile saefw_tensorfile;

/* Open a tensor file; the format is detected from its first bytes (zip -> PyTorch, \x93NUMPY -> .npy,
 * otherwise safetensors). A .npy file holds one tensor named "array"; a PyTorch file holding a single
 * tensor (torch.save(t)) holds one tensor named "tensor"; a state dict holds one per key.
 * Every error names the file and what is wrong. Caller closes with saefw_tf_close. */
int saefw_tf_open(const char *path, saefw_tensorfile **out, char *err, size_t errlen);
void saefw_tf_close(saefw_tensorfile *tf);

/* "safetensors", "npy" or "pytorch". */
const char *saefw_tf_format(const saefw_tensorfile *tf);
int saefw_tf_count(const saefw_tensorfile *tf);
const saefw_tensor_info *saefw_tf_get(const saefw_tensorfile *tf, int i);
/* NULL when absent. */
const saefw_tensor_info *saefw_tf_find(const saefw_tensorfile *tf, const char *name);
/* The file offset of [p, p + n) when it lies in the file's read-only mapping (not in a copy made when
 * opening), else -1. */
int64_t saefw_tf_offset(const saefw_tensorfile *tf, const void *p, size_t n);
/* Safetensors __metadata__ value for key, or NULL. */
const char *saefw_tf_metadata(const saefw_tensorfile *tf, const char *key);
int saefw_tf_metadata_count(const saefw_tensorfile *tf);
/* i-th metadata key/value; returns -1 when out of range. */
int saefw_tf_metadata_at(const saefw_tensorfile *tf, int i, const char **key, const char **value);

/* Convert n elements of a floating tensor (F32, F16, BF16, F64) to float32. Fails on other dtypes. */
int saefw_tensor_to_f32(const saefw_tensor_info *t, float *dst, char *err, size_t errlen);
/* Convert a run of `count` elements starting at element `start` of a floating tensor to float32. */
int saefw_tensor_slice_f32(const saefw_tensor_info *t, int64_t start, int64_t count, float *dst, char *err,
                           size_t errlen);

float saefw_bf16_to_f32(uint16_t h);
uint16_t saefw_f32_to_bf16(float f); /* round to nearest even, NaN kept NaN */
float saefw_f16_to_f32(uint16_t h);

/* One tensor to write. */
typedef struct {
    const char *name;
    saefw_dtype dtype;
    int ndim;
    const int64_t *shape;
    const void *data; /* C-contiguous */
} saefw_tensor_ref;

/* Write a safetensors file atomically (temp file in the same folder, fsync, rename). Tensors are
 * written in the order given; meta is an array of n_meta {key, value} string pairs (may be NULL). */
int saefw_safetensors_write(const char *path, const saefw_tensor_ref *tensors, int n, const char *const (*meta)[2],
                            int n_meta, char *err, size_t errlen);

/* Write a .npy file (C order) atomically. */
int saefw_npy_write(const char *path, saefw_dtype dtype, int ndim, const int64_t *shape, const void *data, char *err,
                    size_t errlen);

/* `saefw info FILE`: open path and print its format, one line per tensor (name, dtype, shape such as
 * [16, 64]) and the metadata keys, if any, to out. Returns -1 with err filled if the file does not
 * open or out cannot be written. */
int saefw_tf_print_info(const char *path, FILE *out, char *err, size_t errlen);

#endif
