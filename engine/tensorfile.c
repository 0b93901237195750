/* Tensor files: dtype helpers, 16-bit float conversions, the safetensors and .npy readers and
 * writers, and saefw_tf_open, which maps a file and hands it to the reader its first bytes name
 * (the PyTorch zip reader lives in torchpt.c). */
#include "tensorfile_internal.h"
#include "torchpt.h"
#include "util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Misaligned tensors up to this size are copied so that `data` can be cast to the element type. */
#define TF_ALIGN_COPY_MAX ((size_t)64 << 20)
/* safetensors' own reader refuses larger headers too. */
#define ST_HEADER_MAX ((uint64_t)100 << 20)

static const struct {
    const char *name;
    size_t size;
    const char *npy; /* NumPy descr, NULL when NumPy has no such dtype */
} dtype_table[SAEFW_DT_COUNT] = {
    [SAEFW_DT_F32] = {"F32", 4, "<f4"}, [SAEFW_DT_F16] = {"F16", 2, "<f2"},   [SAEFW_DT_BF16] = {"BF16", 2, NULL},
    [SAEFW_DT_F64] = {"F64", 8, "<f8"}, [SAEFW_DT_I64] = {"I64", 8, "<i8"},   [SAEFW_DT_I32] = {"I32", 4, "<i4"},
    [SAEFW_DT_I16] = {"I16", 2, "<i2"}, [SAEFW_DT_U16] = {"U16", 2, "<u2"},   [SAEFW_DT_I8] = {"I8", 1, "|i1"},
    [SAEFW_DT_U8] = {"U8", 1, "|u1"},   [SAEFW_DT_BOOL] = {"BOOL", 1, "|b1"},
};

static int dtype_ok(saefw_dtype dt) { return (int)dt >= 0 && dt < SAEFW_DT_COUNT; }

const char *saefw_dtype_name(saefw_dtype dt) { return dtype_ok(dt) ? dtype_table[dt].name : "?"; }

size_t saefw_dtype_size(saefw_dtype dt) { return dtype_ok(dt) ? dtype_table[dt].size : 0; }

int saefw_dtype_parse(const char *name, saefw_dtype *out) {
    for (int i = 0; i < SAEFW_DT_COUNT; i++) {
        if (name && strcmp(name, dtype_table[i].name) == 0) {
            *out = (saefw_dtype)i;
            return 0;
        }
    }
    return -1;
}

/* ------------------------------------------------------------------------------------------------
 * 16-bit floats */

float saefw_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

uint16_t saefw_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    /* Rounding a NaN could carry into the exponent and make it Inf: keep it NaN and quiet. */
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float saefw_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
    if (exp == 0) {
        /* Zero or subnormal: man * 2^-24 is exact in float32. */
        float f = (float)man * 5.9604644775390625e-8f;
        return sign ? -f : f;
    }
    if (exp == 31) u = sign | 0x7f800000u | (man << 13);
    else u = sign | ((exp + 112u) << 23) | (man << 13);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

int saefw_tensor_slice_f32(const saefw_tensor_info *t, int64_t start, int64_t count, float *dst, char *err,
                           size_t errlen) {
    if (!t) return saefw_errf(err, errlen, "no tensor");
    if (start < 0 || count < 0 || start > t->numel || count > t->numel - start)
        return saefw_errf(err, errlen,
                          "tensor %s: elements [%" PRId64 ", %" PRId64 ") out of range (%" PRId64 " elements)", t->name,
                          start, start + count, t->numel);
    if (t->dtype != SAEFW_DT_F32 && t->dtype != SAEFW_DT_F16 && t->dtype != SAEFW_DT_BF16 && t->dtype != SAEFW_DT_F64)
        return saefw_errf(err, errlen, "tensor %s has dtype %s; only F32, F16, BF16 and F64 convert to float32",
                          t->name, saefw_dtype_name(t->dtype));
    if (count == 0) return 0;
    const uint8_t *p = (const uint8_t *)t->data + (size_t)start * dtype_table[t->dtype].size;
    switch (t->dtype) {
    case SAEFW_DT_F32: memcpy(dst, p, (size_t)count * 4); break;
    case SAEFW_DT_F16:
    case SAEFW_DT_BF16:
        for (int64_t i = 0; i < count; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = t->dtype == SAEFW_DT_F16 ? saefw_f16_to_f32(h) : saefw_bf16_to_f32(h);
        }
        break;
    default:
        for (int64_t i = 0; i < count; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = (float)d;
        }
        break;
    }
    return 0;
}

int saefw_tensor_to_f32(const saefw_tensor_info *t, float *dst, char *err, size_t errlen) {
    if (!t) return saefw_errf(err, errlen, "no tensor");
    return saefw_tensor_slice_f32(t, 0, t->numel, dst, err, errlen);
}

static uint64_t rd_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* ------------------------------------------------------------------------------------------------
 * safetensors reader */

/* A JSON number that is an exact non-negative integer below 2^53. */
static int json_u64(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0.0 && d <= 9007199254740992.0) || d != (double)(uint64_t)d) return -1;
    *out = (uint64_t)d;
    return 0;
}

static int add_meta(saefw_tensorfile *tf, const char *key, const char *value, char *err, size_t errlen) {
    if (tf->n_meta == tf->cap_meta) {
        int cap = tf->cap_meta ? 2 * tf->cap_meta : 8;
        char **nm = realloc(tf->meta, 2 * (size_t)cap * sizeof *nm);
        if (!nm) return saefw_errf(err, errlen, "out of memory");
        tf->meta = nm;
        tf->cap_meta = cap;
    }
    char *k = saefw_strdup(key, err, errlen);
    if (!k) return -1;
    char *v = saefw_strdup(value, err, errlen);
    if (!v) {
        free(k);
        return -1;
    }
    tf->meta[2 * tf->n_meta] = k;
    tf->meta[2 * tf->n_meta + 1] = v;
    tf->n_meta++;
    return 0;
}

static int st_tensor(saefw_tensorfile *tf, const cJSON *it, const uint8_t *data, uint64_t data_len, char *err,
                     size_t errlen) {
    char nm[128];
    saefw_tfi_printable(nm, sizeof nm, it->string, strlen(it->string));
    if (!cJSON_IsObject(it)) return saefw_errf(err, errlen, "tensor %s: header entry is not a JSON object", nm);
    const cJSON *jdt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
    const cJSON *jshape = cJSON_GetObjectItemCaseSensitive(it, "shape");
    const cJSON *joff = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
    if (!cJSON_IsString(jdt)) return saefw_errf(err, errlen, "tensor %s: missing \"dtype\" string", nm);
    saefw_dtype dt;
    if (saefw_dtype_parse(jdt->valuestring, &dt) != 0) {
        char dn[64];
        return saefw_errf(err, errlen, "tensor %s: unknown dtype \"%s\"", nm,
                          saefw_tfi_printable(dn, sizeof dn, jdt->valuestring, strlen(jdt->valuestring)));
    }
    if (!cJSON_IsArray(jshape)) return saefw_errf(err, errlen, "tensor %s: missing \"shape\" array", nm);
    int ndim = cJSON_GetArraySize(jshape);
    if (ndim > SAEFW_MAX_DIMS)
        return saefw_errf(err, errlen, "tensor %s: shape has %d dimensions (at most %d)", nm, ndim, SAEFW_MAX_DIMS);
    int64_t shape[SAEFW_MAX_DIMS];
    int k = 0;
    for (const cJSON *d = jshape->child; d; d = d->next) {
        uint64_t v;
        if (json_u64(d, &v) != 0)
            return saefw_errf(err, errlen, "tensor %s: bad shape (dimension %d is not a non-negative integer)", nm, k);
        shape[k++] = (int64_t)v;
    }
    uint64_t b, e;
    if (!cJSON_IsArray(joff) || cJSON_GetArraySize(joff) != 2 || json_u64(joff->child, &b) != 0 ||
        json_u64(joff->child->next, &e) != 0)
        return saefw_errf(err, errlen, "tensor %s: \"data_offsets\" is not a pair of non-negative integers", nm);
    int64_t numel;
    size_t nbytes;
    if (saefw_tfi_shape_size(ndim, shape, dtype_table[dt].size, &numel, &nbytes) != 0)
        return saefw_errf(err, errlen, "tensor %s: shape too large (element count overflows)", nm);
    if (b > e || e > data_len)
        return saefw_errf(err, errlen,
                          "tensor %s: data_offsets [%" PRIu64 ", %" PRIu64 "] out of range (data section is %" PRIu64
                          " bytes)",
                          nm, b, e, data_len);
    if (e - b != (uint64_t)nbytes)
        return saefw_errf(err, errlen,
                          "tensor %s: data_offsets [%" PRIu64 ", %" PRIu64 "] span %" PRIu64
                          " bytes but shape and dtype %s need %zu",
                          nm, b, e, e - b, dtype_table[dt].name, nbytes);
    saefw_tensor_info *t;
    if (saefw_tfi_add(tf, it->string, strlen(it->string), &t, err, errlen) != 0) return -1;
    t->dtype = dt;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof shape[0]);
    t->numel = numel;
    t->nbytes = nbytes;
    t->data = data + b;
    return 0;
}

static int load_safetensors(saefw_tensorfile *tf, char *err, size_t errlen) {
    const uint8_t *m = tf->map;
    size_t size = tf->size;
    if (size < 8)
        return saefw_errf(err, errlen, "truncated: %zu bytes, shorter than the 8-byte safetensors header length", size);
    uint64_t hlen = rd_le64(m);
    if (hlen > size - 8) {
        if (size >= 3 && m[0] == 0x80 && m[1] <= 5 && m[2] == 0x8a)
            return saefw_errf(err, errlen,
                              "legacy (non-zip) PyTorch file; re-save it with torch.save's default zip format");
        return saefw_errf(err, errlen,
                          "not a safetensors, .npy or PyTorch zip file (safetensors header length %" PRIu64
                          " is larger than the file, %zu bytes)",
                          hlen, size);
    }
    if (hlen > ST_HEADER_MAX)
        return saefw_errf(err, errlen, "safetensors header length %" PRIu64 " exceeds the 100 MiB limit", hlen);
    const char *h = (const char *)m + 8;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(h, (size_t)hlen, &end, 0);
    if (!root) {
        size_t at = end && end >= h && end <= h + hlen ? (size_t)(end - h) : 0;
        return saefw_errf(err, errlen, "bad JSON in safetensors header near byte %zu", at);
    }
    for (const char *p = end; p < h + hlen; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(root);
            return saefw_errf(err, errlen, "bad JSON in safetensors header: bytes after the JSON object at byte %zu",
                              (size_t)(p - h));
        }
    }
    int rc = 0;
    if (!cJSON_IsObject(root)) rc = saefw_errf(err, errlen, "bad JSON: safetensors header is not a JSON object");
    const uint8_t *data = m + 8 + hlen;
    uint64_t data_len = size - 8 - hlen;
    for (const cJSON *it = rc ? NULL : root->child; it && rc == 0; it = it->next) {
        if (strcmp(it->string, "__metadata__") != 0) {
            rc = st_tensor(tf, it, data, data_len, err, errlen);
            continue;
        }
        if (!cJSON_IsObject(it)) {
            rc = saefw_errf(err, errlen, "__metadata__ is not a JSON object");
            break;
        }
        for (const cJSON *kv = it->child; kv && rc == 0; kv = kv->next) {
            if (!cJSON_IsString(kv)) {
                char kn[80];
                rc = saefw_errf(err, errlen, "__metadata__ value for \"%s\" is not a string",
                                saefw_tfi_printable(kn, sizeof kn, kv->string, strlen(kv->string)));
            } else {
                rc = add_meta(tf, kv->string, kv->valuestring, err, errlen);
            }
        }
    }
    cJSON_Delete(root);
    return rc;
}

/* ------------------------------------------------------------------------------------------------
 * .npy reader: the header is a Python dict literal, e.g.
 * {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), } */

typedef struct {
    const char *p, *end;
} cursor;

static void skip_ws(cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static int eat(cursor *c, char ch) {
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 0;
    }
    return -1;
}

static int py_str(cursor *c, const char **s, size_t *n) {
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return -1;
    char q = *c->p++;
    const char *start = c->p;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\') return -1; /* NumPy never writes escapes in these keys */
        c->p++;
    }
    if (c->p >= c->end) return -1;
    *s = start;
    *n = (size_t)(c->p - start);
    c->p++;
    return 0;
}

static int py_shape(cursor *c, int *ndim, int64_t *shape) {
    if (eat(c, '(') != 0) return -1;
    int n = 0;
    skip_ws(c);
    if (c->p < c->end && *c->p == ')') {
        c->p++;
        *ndim = 0;
        return 0;
    }
    for (;;) {
        skip_ws(c);
        if (c->p >= c->end || *c->p < '0' || *c->p > '9') return -1;
        int64_t v = 0;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            int d = *c->p++ - '0';
            if (v > (INT64_MAX - d) / 10) return -1;
            v = v * 10 + d;
        }
        if (n == SAEFW_MAX_DIMS) return -1;
        shape[n++] = v;
        skip_ws(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            skip_ws(c);
            if (c->p < c->end && *c->p == ')') break;
            continue;
        }
        /* "(3)" is an int in Python, not a tuple. */
        if (c->p < c->end && *c->p == ')' && n > 1) break;
        return -1;
    }
    c->p++;
    *ndim = n;
    return 0;
}

static int load_npy(saefw_tensorfile *tf, char *err, size_t errlen) {
    const uint8_t *m = tf->map;
    size_t size = tf->size;
    if (size < 10) return saefw_errf(err, errlen, "truncated .npy file (%zu bytes)", size);
    int major = m[6], minor = m[7];
    size_t pre, hlen;
    if (major == 1 && minor == 0) {
        pre = 10;
        hlen = (size_t)m[8] | (size_t)m[9] << 8;
    } else if ((major == 2 || major == 3) && minor == 0) {
        if (size < 12) return saefw_errf(err, errlen, "truncated .npy file (%zu bytes)", size);
        pre = 12;
        hlen = (size_t)m[8] | (size_t)m[9] << 8 | (size_t)m[10] << 16 | (size_t)m[11] << 24;
    } else {
        return saefw_errf(err, errlen, "unsupported .npy version %d.%d", major, minor);
    }
    if (hlen > size - pre)
        return saefw_errf(err, errlen, ".npy header length %zu is larger than the file (%zu bytes)", hlen, size);
    cursor c = {(const char *)m + pre, (const char *)m + pre + hlen};
    const char *descr = NULL;
    size_t descr_len = 0;
    int fortran = -1, ndim = -1;
    int64_t shape[SAEFW_MAX_DIMS];
    if (eat(&c, '{') != 0) return saefw_errf(err, errlen, "bad .npy header: not a dict");
    for (;;) {
        if (eat(&c, '}') == 0) break;
        const char *key;
        size_t kl;
        if (py_str(&c, &key, &kl) != 0 || eat(&c, ':') != 0)
            return saefw_errf(err, errlen, "bad .npy header: expected 'key': value");
        if (kl == 5 && memcmp(key, "descr", 5) == 0 && !descr) {
            if (py_str(&c, &descr, &descr_len) != 0)
                return saefw_errf(err, errlen, "unsupported dtype in .npy header (descr is not a simple string)");
        } else if (kl == 13 && memcmp(key, "fortran_order", 13) == 0 && fortran < 0) {
            skip_ws(&c);
            if (c.end - c.p >= 4 && memcmp(c.p, "True", 4) == 0) {
                fortran = 1;
                c.p += 4;
            } else if (c.end - c.p >= 5 && memcmp(c.p, "False", 5) == 0) {
                fortran = 0;
                c.p += 5;
            } else {
                return saefw_errf(err, errlen, "bad .npy header: fortran_order is not True or False");
            }
        } else if (kl == 5 && memcmp(key, "shape", 5) == 0 && ndim < 0) {
            if (py_shape(&c, &ndim, shape) != 0)
                return saefw_errf(err, errlen, "bad .npy header: shape is not a tuple of at most %d integers",
                                  SAEFW_MAX_DIMS);
        } else {
            char kn[64];
            return saefw_errf(err, errlen, "bad .npy header: unexpected or repeated key '%s'",
                              saefw_tfi_printable(kn, sizeof kn, key, kl));
        }
        if (eat(&c, ',') == 0) continue;
        if (eat(&c, '}') == 0) break;
        return saefw_errf(err, errlen, "bad .npy header: expected ',' or '}'");
    }
    skip_ws(&c);
    if (c.p != c.end) return saefw_errf(err, errlen, "bad .npy header: bytes after the dict");
    if (!descr || fortran < 0 || ndim < 0)
        return saefw_errf(err, errlen, "bad .npy header: needs descr, fortran_order and shape");
    if (fortran) return saefw_errf(err, errlen, "fortran_order True is not supported; save the array in C order");
    int dt = -1;
    for (int i = 0; i < SAEFW_DT_COUNT; i++) {
        const char *d = dtype_table[i].npy;
        if (d && strlen(d) == descr_len && memcmp(d, descr, descr_len) == 0) dt = i;
    }
    if (dt < 0) {
        char dn[64];
        return saefw_errf(err, errlen, "unsupported dtype '%s' in .npy header%s",
                          saefw_tfi_printable(dn, sizeof dn, descr, descr_len),
                          descr_len && descr[0] == '>' ? " (big-endian)" : "");
    }
    int64_t numel;
    size_t nbytes;
    if (saefw_tfi_shape_size(ndim, shape, dtype_table[dt].size, &numel, &nbytes) != 0)
        return saefw_errf(err, errlen, ".npy shape too large (element count overflows)");
    size_t have = size - pre - hlen;
    if (have != nbytes)
        return saefw_errf(err, errlen, ".npy data has %zu bytes but shape and dtype %s need %zu%s", have,
                          dtype_table[dt].name, nbytes, have < nbytes ? " (truncated?)" : "");
    saefw_tensor_info *t;
    if (saefw_tfi_add(tf, "array", 5, &t, err, errlen) != 0) return -1;
    t->dtype = (saefw_dtype)dt;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof shape[0]);
    t->numel = numel;
    t->nbytes = nbytes;
    t->data = m + pre + hlen;
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Open / close / queries */

void saefw_tf_close(saefw_tensorfile *tf) {
    if (!tf) return;
    if (tf->map) munmap((void *)tf->map, tf->size);
    for (int i = 0; i < tf->n_owned; i++) free(tf->owned[i]);
    for (int i = 0; i < 2 * tf->n_meta; i++) free(tf->meta[i]);
    free(tf->owned);
    free(tf->meta);
    free(tf->tensors);
    free(tf->path);
    free(tf);
}

static int cmp_name(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

static int check_unique(const saefw_tensorfile *tf, char *err, size_t errlen) {
    if (tf->n_tensors < 2) return 0;
    const char **names = saefw_malloc((size_t)tf->n_tensors * sizeof *names, err, errlen);
    if (!names) return -1;
    for (int i = 0; i < tf->n_tensors; i++) names[i] = tf->tensors[i].name;
    qsort(names, (size_t)tf->n_tensors, sizeof *names, cmp_name);
    int rc = 0;
    for (int i = 1; i < tf->n_tensors && rc == 0; i++) {
        if (strcmp(names[i - 1], names[i]) == 0) {
            char nm[128];
            rc = saefw_errf(err, errlen, "duplicate tensor name \"%s\"",
                            saefw_tfi_printable(nm, sizeof nm, names[i], strlen(names[i])));
        }
    }
    free(names);
    return rc;
}

int64_t saefw_tf_offset(const saefw_tensorfile *tf, const void *p, size_t n) {
    const uintptr_t a = (uintptr_t)p, lo = (uintptr_t)tf->map;
    return tf->map && a >= lo && n <= tf->size && a - lo <= tf->size - n ? (int64_t)(a - lo) : -1;
}

static int align_small(saefw_tensorfile *tf, char *err, size_t errlen) {
    for (int i = 0; i < tf->n_tensors; i++) {
        saefw_tensor_info *t = &tf->tensors[i];
        size_t a = dtype_table[t->dtype].size;
        if (t->nbytes == 0 || (uintptr_t)t->data % a == 0 || t->nbytes > TF_ALIGN_COPY_MAX) continue;
        void *copy = saefw_malloc(t->nbytes, err, errlen);
        if (!copy) return -1;
        memcpy(copy, t->data, t->nbytes);
        if (saefw_tfi_own(tf, copy, err, errlen) != 0) return -1;
        t->data = copy;
    }
    return 0;
}

int saefw_tf_open(const char *path, saefw_tensorfile **out, char *err, size_t errlen) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return saefw_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return saefw_errf(err, errlen, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return saefw_errf(err, errlen, "%s: not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return saefw_errf(err, errlen, "%s: empty file", path);
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return saefw_errf(err, errlen, "%s: file too large to map", path);
    }
    saefw_tensorfile *tf = calloc(1, sizeof *tf);
    char *pcopy = strdup(path);
    if (!tf || !pcopy) {
        free(tf);
        free(pcopy);
        close(fd);
        return saefw_errf(err, errlen, "%s: out of memory", path);
    }
    tf->path = pcopy;
    tf->size = (size_t)st.st_size;
    void *map = mmap(NULL, tf->size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED) {
        saefw_tf_close(tf);
        return saefw_errf(err, errlen, "%s: cannot map: %s", path, strerror(map_errno));
    }
    tf->map = map;
    int rc;
    if (tf->size >= 4 && memcmp(map, "PK", 2) == 0 && (tf->map[2] == 3 || tf->map[2] == 5)) {
        tf->format = "pytorch";
        rc = saefw_tfi_load_torch(tf, err, errlen);
    } else if (tf->size >= 6 && memcmp(map, "\x93NUMPY", 6) == 0) {
        tf->format = "npy";
        rc = load_npy(tf, err, errlen);
    } else {
        tf->format = "safetensors";
        rc = load_safetensors(tf, err, errlen);
    }
    if (rc == 0) rc = check_unique(tf, err, errlen);
    if (rc == 0) rc = align_small(tf, err, errlen);
    if (rc != 0) {
        saefw_err_prefix(err, errlen, "%s", path);
        saefw_tf_close(tf);
        return -1;
    }
    *out = tf;
    return 0;
}

const char *saefw_tf_format(const saefw_tensorfile *tf) { return tf->format; }

int saefw_tf_count(const saefw_tensorfile *tf) { return tf->n_tensors; }

const saefw_tensor_info *saefw_tf_get(const saefw_tensorfile *tf, int i) {
    return i >= 0 && i < tf->n_tensors ? &tf->tensors[i] : NULL;
}

const saefw_tensor_info *saefw_tf_find(const saefw_tensorfile *tf, const char *name) {
    for (int i = 0; i < tf->n_tensors; i++)
        if (strcmp(tf->tensors[i].name, name) == 0) return &tf->tensors[i];
    return NULL;
}

const char *saefw_tf_metadata(const saefw_tensorfile *tf, const char *key) {
    for (int i = 0; i < tf->n_meta; i++)
        if (strcmp(tf->meta[2 * i], key) == 0) return tf->meta[2 * i + 1];
    return NULL;
}

int saefw_tf_metadata_count(const saefw_tensorfile *tf) { return tf->n_meta; }

int saefw_tf_metadata_at(const saefw_tensorfile *tf, int i, const char **key, const char **value) {
    if (i < 0 || i >= tf->n_meta) return -1;
    if (key) *key = tf->meta[2 * i];
    if (value) *value = tf->meta[2 * i + 1];
    return 0;
}

int saefw_tf_print_info(const char *path, FILE *out, char *err, size_t errlen) {
    saefw_tensorfile *tf;
    if (saefw_tf_open(path, &tf, err, errlen) != 0) return -1;
    char nm[512];
    fprintf(out, "format: %s\n", tf->format);
    for (int i = 0; i < tf->n_tensors; i++) {
        const saefw_tensor_info *t = &tf->tensors[i];
        fprintf(out, "%s  %s  [", saefw_tfi_printable(nm, sizeof nm, t->name, strlen(t->name)),
                dtype_table[t->dtype].name);
        for (int d = 0; d < t->ndim; d++) fprintf(out, "%s%" PRId64, d ? ", " : "", t->shape[d]);
        fprintf(out, "]\n");
    }
    if (tf->n_meta > 0) {
        fprintf(out, "metadata:");
        for (int i = 0; i < tf->n_meta; i++)
            fprintf(out, "%s %s", i ? "," : "",
                    saefw_tfi_printable(nm, sizeof nm, tf->meta[2 * i], strlen(tf->meta[2 * i])));
        fprintf(out, "\n");
    }
    saefw_tf_close(tf);
    if (fflush(out) != 0 || ferror(out)) return saefw_errf(err, errlen, "%s: cannot write the listing", path);
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Writers */

static int check_ref(const char *path, const char *name, saefw_dtype dt, int ndim, const int64_t *shape,
                     const void *data, size_t *nbytes, char *err, size_t errlen) {
    if (!dtype_ok(dt)) return saefw_errf(err, errlen, "%s: tensor %s: bad dtype %d", path, name, (int)dt);
    if (ndim < 0 || ndim > SAEFW_MAX_DIMS || (ndim > 0 && !shape))
        return saefw_errf(err, errlen, "%s: tensor %s: bad number of dimensions %d", path, name, ndim);
    int64_t numel;
    if (saefw_tfi_shape_size(ndim, shape, dtype_table[dt].size, &numel, nbytes) != 0)
        return saefw_errf(err, errlen, "%s: tensor %s: negative or too large shape", path, name);
    if (*nbytes > 0 && !data) return saefw_errf(err, errlen, "%s: tensor %s: no data", path, name);
    return 0;
}

static int put_bytes(FILE *f, const void *p, size_t n) { return n == 0 || fwrite(p, 1, n, f) == n ? 0 : -1; }

static cJSON *json_int(int64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, v);
    return cJSON_CreateRaw(buf);
}

/* Builds {"__metadata__": {...}, name: {"dtype", "shape", "data_offsets"}, ...} in write order.
 * Integers go in as raw text so offsets beyond 2^53 stay exact. */
static char *st_header(const char *path, const saefw_tensor_ref *tensors, int n, const char *const (*meta)[2],
                       int n_meta, char *err, size_t errlen) {
    cJSON *root = cJSON_CreateObject();
    if (!root) {
        saefw_errf(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    int rc = 0;
    if (n_meta > 0) {
        cJSON *md = cJSON_AddObjectToObject(root, "__metadata__");
        if (!md) rc = saefw_errf(err, errlen, "%s: out of memory", path);
        for (int i = 0; i < n_meta && rc == 0; i++) {
            if (!meta[i][0] || !meta[i][1])
                rc = saefw_errf(err, errlen, "%s: metadata entry %d has a NULL key or value", path, i);
            else if (cJSON_GetObjectItemCaseSensitive(md, meta[i][0]))
                rc = saefw_errf(err, errlen, "%s: duplicate metadata key \"%s\"", path, meta[i][0]);
            else if (!cJSON_AddStringToObject(md, meta[i][0], meta[i][1]))
                rc = saefw_errf(err, errlen, "%s: out of memory", path);
        }
    }
    uint64_t off = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const saefw_tensor_ref *t = &tensors[i];
        size_t nbytes;
        if (!t->name || !t->name[0] || strcmp(t->name, "__metadata__") == 0) {
            rc = saefw_errf(err, errlen, "%s: tensor %d has an empty or reserved name", path, i);
            break;
        }
        if (cJSON_GetObjectItemCaseSensitive(root, t->name)) {
            rc = saefw_errf(err, errlen, "%s: duplicate tensor name \"%s\"", path, t->name);
            break;
        }
        rc = check_ref(path, t->name, t->dtype, t->ndim, t->shape, t->data, &nbytes, err, errlen);
        if (rc != 0) break;
        cJSON *o = cJSON_CreateObject(), *shape = cJSON_CreateArray(), *offs = cJSON_CreateArray();
        int ok = o && shape && offs;
        for (int d = 0; ok && d < t->ndim; d++) {
            cJSON *v = json_int(t->shape[d]);
            ok = v && cJSON_AddItemToArray(shape, v);
            if (!ok) cJSON_Delete(v);
        }
        cJSON *ob = ok ? json_int((int64_t)off) : NULL, *oe = ok ? json_int((int64_t)(off + nbytes)) : NULL;
        ok = ok && ob && cJSON_AddItemToArray(offs, ob);
        if (!ok) cJSON_Delete(ob);
        ok = ok && oe && cJSON_AddItemToArray(offs, oe);
        if (!ok) cJSON_Delete(oe);
        ok = ok && cJSON_AddStringToObject(o, "dtype", dtype_table[t->dtype].name);
        ok = ok && cJSON_AddItemToObject(o, "shape", shape);
        if (ok) shape = NULL;
        ok = ok && cJSON_AddItemToObject(o, "data_offsets", offs);
        if (ok) offs = NULL;
        ok = ok && cJSON_AddItemToObject(root, t->name, o);
        if (ok) o = NULL;
        cJSON_Delete(o);
        cJSON_Delete(shape);
        cJSON_Delete(offs);
        if (!ok) rc = saefw_errf(err, errlen, "%s: out of memory", path);
        off += nbytes;
    }
    char *json = rc == 0 ? cJSON_PrintUnformatted(root) : NULL;
    if (rc == 0 && !json) saefw_errf(err, errlen, "%s: out of memory", path);
    cJSON_Delete(root);
    return json;
}

int saefw_safetensors_write(const char *path, const saefw_tensor_ref *tensors, int n, const char *const (*meta)[2],
                            int n_meta, char *err, size_t errlen) {
    if (n < 0 || (n > 0 && !tensors) || n_meta < 0 || (n_meta > 0 && !meta))
        return saefw_errf(err, errlen, "%s: bad tensor or metadata list", path);
    char *json = st_header(path, tensors, n, meta, n_meta, err, errlen);
    if (!json) return -1;
    /* Pad with spaces so the data section starts 8-byte aligned, as safetensors itself does. */
    size_t jl = strlen(json), pad = (8 - (8 + jl) % 8) % 8;
    uint64_t hlen = jl + pad;
    uint8_t lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (uint8_t)(hlen >> (8 * i));
    char tmp[4096];
    FILE *f = saefw_atomic_open(path, tmp, sizeof tmp, err, errlen);
    if (!f) {
        cJSON_free(json);
        return -1;
    }
    int bad = put_bytes(f, lenbuf, 8) || put_bytes(f, json, jl) || put_bytes(f, "       ", pad);
    cJSON_free(json);
    for (int i = 0; i < n && !bad; i++) {
        int64_t numel;
        size_t nbytes = 0;
        saefw_tfi_shape_size(tensors[i].ndim, tensors[i].shape, dtype_table[tensors[i].dtype].size, &numel, &nbytes);
        bad = put_bytes(f, tensors[i].data, nbytes);
    }
    if (bad) {
        int e = errno;
        saefw_atomic_abort(f, tmp);
        return saefw_errf(err, errlen, "%s: write failed: %s", path, strerror(e));
    }
    return saefw_atomic_commit(f, tmp, path, err, errlen);
}

int saefw_npy_write(const char *path, saefw_dtype dtype, int ndim, const int64_t *shape, const void *data, char *err,
                    size_t errlen) {
    size_t nbytes;
    if (check_ref(path, "array", dtype, ndim, shape, data, &nbytes, err, errlen) != 0) return -1;
    if (!dtype_table[dtype].npy)
        return saefw_errf(err, errlen, "%s: %s has no NumPy dtype", path, dtype_table[dtype].name);
    char hdr[512];
    int len = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (", dtype_table[dtype].npy);
    for (int d = 0; d < ndim; d++)
        len += snprintf(hdr + len, sizeof hdr - (size_t)len, "%s%" PRId64, d ? ", " : "", shape[d]);
    len += snprintf(hdr + len, sizeof hdr - (size_t)len, "%s), }", ndim == 1 ? "," : "");
    /* NumPy pads with spaces and a final newline so the data starts 64-byte aligned; 8 dims of
     * 19 digits fit well within 1.0's 16-bit header length. */
    size_t total = 10 + (size_t)len + 1, pad = (64 - total % 64) % 64;
    size_t hlen = (size_t)len + pad + 1;
    uint8_t pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)(hlen & 0xff), (uint8_t)(hlen >> 8)};
    char spaces[64];
    memset(spaces, ' ', sizeof spaces);
    char tmp[4096];
    FILE *f = saefw_atomic_open(path, tmp, sizeof tmp, err, errlen);
    if (!f) return -1;
    int bad = put_bytes(f, pre, sizeof pre) || put_bytes(f, hdr, (size_t)len) || put_bytes(f, spaces, pad) ||
              put_bytes(f, "\n", 1) || put_bytes(f, data, nbytes);
    if (bad) {
        int e = errno;
        saefw_atomic_abort(f, tmp);
        return saefw_errf(err, errlen, "%s: write failed: %s", path, strerror(e));
    }
    return saefw_atomic_commit(f, tmp, path, err, errlen);
}
