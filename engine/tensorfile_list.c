/* The open tensor file's tensor list and owned buffers, and the shape and name helpers, shared by
 * every reader (tensorfile.c, torchpt.c, torch_pickle.c) so that the readers depend on this file and
 * never on each other. */
#include "tensorfile_internal.h"
#include "util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TF_MAX_TENSORS (1 << 22)

int saefw_tfi_own(saefw_tensorfile *tf, void *buf, char *err, size_t errlen) {
    if (tf->n_owned == tf->cap_owned) {
        int cap = tf->cap_owned ? 2 * tf->cap_owned : 16;
        void **nb = realloc(tf->owned, (size_t)cap * sizeof *nb);
        if (!nb) {
            free(buf);
            return saefw_errf(err, errlen, "out of memory");
        }
        tf->owned = nb;
        tf->cap_owned = cap;
    }
    tf->owned[tf->n_owned++] = buf;
    return 0;
}

int saefw_tfi_add(saefw_tensorfile *tf, const char *name, size_t name_len, saefw_tensor_info **out, char *err,
                  size_t errlen) {
    char shown[80];
    if (memchr(name, 0, name_len))
        return saefw_errf(err, errlen, "tensor name \"%s\" contains a NUL byte",
                          saefw_tfi_printable(shown, sizeof shown, name, name_len));
    if (tf->n_tensors >= TF_MAX_TENSORS) return saefw_errf(err, errlen, "more than %d tensors", TF_MAX_TENSORS);
    if (tf->n_tensors == tf->cap_tensors) {
        int cap = tf->cap_tensors ? 2 * tf->cap_tensors : 16;
        saefw_tensor_info *nt = realloc(tf->tensors, (size_t)cap * sizeof *nt);
        if (!nt) return saefw_errf(err, errlen, "out of memory");
        tf->tensors = nt;
        tf->cap_tensors = cap;
    }
    char *copy = saefw_malloc(name_len + 1, err, errlen);
    if (!copy) return -1;
    memcpy(copy, name, name_len);
    copy[name_len] = 0;
    if (saefw_tfi_own(tf, copy, err, errlen) != 0) return -1;
    saefw_tensor_info *t = &tf->tensors[tf->n_tensors++];
    memset(t, 0, sizeof *t);
    t->name = copy;
    *out = t;
    return 0;
}

int saefw_tfi_shape_size(int ndim, const int64_t *shape, size_t itemsize, int64_t *numel, size_t *nbytes) {
    if (ndim < 0 || ndim > SAEFW_MAX_DIMS || itemsize == 0) return -1;
    int64_t n = 1;
    int zero = 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        if (shape[i] == 0) zero = 1;
    }
    /* A zero dimension makes the product 0 however large the others are, but a huge shape is still
     * refused so that later index arithmetic on it cannot overflow. */
    for (int i = 0; i < ndim; i++) {
        int64_t d = shape[i] ? shape[i] : 1;
        if (n > INT64_MAX / d) return -1;
        n *= d;
    }
    if ((uint64_t)n > SIZE_MAX / itemsize || (uint64_t)n > (uint64_t)INT64_MAX / itemsize) return -1;
    if (zero) n = 0;
    *numel = n;
    *nbytes = (size_t)n * itemsize;
    return 0;
}

const char *saefw_tfi_printable(char *out, size_t outlen, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (outlen == 0) return out;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int esc = c < 0x20 || c == 0x7f || c == '\\' || c == '"';
        if (o + (esc ? 4 : 1) + 4 > outlen) {
            if (o + 4 <= outlen) {
                memcpy(out + o, "...", 3);
                o += 3;
            }
            break;
        }
        if (esc) {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        } else {
            out[o++] = (char)c;
        }
    }
    out[o < outlen ? o : outlen - 1] = 0;
    return out;
}
