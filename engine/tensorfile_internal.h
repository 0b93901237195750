/* Internals shared by the tensor-file readers (tensorfile.c: open/close, safetensors, .npy;
 * torchpt.c and torch_pickle.c: PyTorch zip): the open-file structure and the helpers of
 * tensorfile_list.c that fill it. Not installed. */
#ifndef SAEFW_TENSORFILE_INTERNAL_H
#define SAEFW_TENSORFILE_INTERNAL_H

#include "tensorfile.h"

struct saefw_tensorfile {
    char *path;
    const char *format; /* static string */
    const uint8_t *map; /* whole file, read-only; NULL only while opening */
    size_t size;
    saefw_tensor_info *tensors; /* [n_tensors] */
    int n_tensors, cap_tensors;
    char **meta; /* [2 * n_meta]: key, value, key, value, ... (owned) */
    int n_meta, cap_meta;
    void **owned; /* names and converted buffers, freed on close */
    int n_owned, cap_owned;
};

/* Append a tensor named by a copy of name[0..name_len) and return it zeroed in *out. Fails on a name
 * with a NUL byte, on too many tensors, or out of memory. */
int saefw_tfi_add(saefw_tensorfile *tf, const char *name, size_t name_len, saefw_tensor_info **out, char *err,
                  size_t errlen);

/* Give buf to tf (freed on close). On failure buf is freed and -1 returned. */
int saefw_tfi_own(saefw_tensorfile *tf, void *buf, char *err, size_t errlen);

/* Element count and byte size of a shape; -1 on a negative dimension or on overflow. */
int saefw_tfi_shape_size(int ndim, const int64_t *shape, size_t itemsize, int64_t *numel, size_t *nbytes);

/* Write s[0..n) into out as one printable line (control bytes escaped, long text cut); returns out. */
const char *saefw_tfi_printable(char *out, size_t outlen, const char *s, size_t n);

#endif
