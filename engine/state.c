/* Checksummed safetensors files and the named entries of a resumable training state. */
#include "state.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* ---- checksums ---- */

typedef struct {
    const char *name;
    const void *data;
    size_t nbytes;
} span;

static int by_name(const void *a, const void *b) { return strcmp(((const span *)a)->name, ((const span *)b)->name); }

static int hash_spans(span *s, int n, char hex[65], char *err, size_t errlen) {
    qsort(s, (size_t)n, sizeof *s, by_name);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        return saefw_errf(err, errlen, "sha256: cannot initialise");
    }
    for (int i = 0; i < n; i++)
        if (s[i].nbytes && EVP_DigestUpdate(ctx, s[i].data, s[i].nbytes) != 1) {
            EVP_MD_CTX_free(ctx);
            return saefw_errf(err, errlen, "sha256: update failed");
        }
    unsigned char md[32];
    unsigned int len = 0;
    int ok = EVP_DigestFinal_ex(ctx, md, &len) == 1 && len == 32;
    EVP_MD_CTX_free(ctx);
    if (!ok) return saefw_errf(err, errlen, "sha256: final failed");
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return 0;
}

static size_t ref_bytes(const saefw_tensor_ref *t) {
    size_t n = saefw_dtype_size(t->dtype);
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
    return n;
}

int saefw_checksum_refs(const saefw_tensor_ref *t, int n, char hex[65], char *err, size_t errlen) {
    span *s = saefw_calloc((size_t)(n > 0 ? n : 1), sizeof *s, err, errlen);
    if (!s) return -1;
    for (int i = 0; i < n; i++) s[i] = (span){t[i].name, t[i].data, ref_bytes(&t[i])};
    int rc = hash_spans(s, n, hex, err, errlen);
    free(s);
    return rc;
}

int saefw_checksum_verify(const saefw_tensorfile *tf, const char *path, int *had, char *err, size_t errlen) {
    const char *want = saefw_tf_metadata(tf, SAEFW_CHECKSUM_KEY);
    if (had) *had = want != NULL;
    if (!want) return 0;
    int n = saefw_tf_count(tf);
    span *s = saefw_calloc((size_t)(n > 0 ? n : 1), sizeof *s, err, errlen);
    if (!s) return -1;
    for (int i = 0; i < n; i++) {
        const saefw_tensor_info *t = saefw_tf_get(tf, i);
        s[i] = (span){t->name, t->data, t->nbytes};
    }
    char got[65];
    int rc = hash_spans(s, n, got, err, errlen);
    free(s);
    if (rc != 0) return -1;
    if (strcmp(got, want) != 0)
        return saefw_errf(err, errlen,
                          "%s: checksum mismatch: the file is corrupted (sha256 of its tensors differs from the one it "
                          "was written with)",
                          path);
    return 0;
}

int saefw_write_checked(const char *path, const saefw_tensor_ref *t, int n, const char *const (*meta)[2], int n_meta,
                        char *err, size_t errlen) {
    char hex[65];
    if (saefw_checksum_refs(t, n, hex, err, errlen) != 0) return -1;
    const char *(*all)[2] = saefw_calloc((size_t)n_meta + 1, sizeof *all, err, errlen);
    if (!all) return -1;
    for (int i = 0; i < n_meta; i++) {
        all[i][0] = meta[i][0];
        all[i][1] = meta[i][1];
    }
    all[n_meta][0] = SAEFW_CHECKSUM_KEY;
    all[n_meta][1] = hex;
    int rc = saefw_safetensors_write(path, t, n, (const char *const(*)[2])all, n_meta + 1, err, errlen);
    free(all);
    return rc;
}

/* ---- state out ---- */

void saefw_state_out_init(saefw_state_out *s) { memset(s, 0, sizeof *s); }

void saefw_state_out_free(saefw_state_out *s) {
    for (int i = 0; i < s->n; i++) {
        free(s->names[i]);
        free(s->copies[i]);
    }
    free(s->refs);
    free(s->names);
    free(s->shapes);
    free(s->copies);
    memset(s, 0, sizeof *s);
}

void saefw_state_set_prefix(saefw_state_out *s, const char *prefix) {
    snprintf(s->prefix, sizeof s->prefix, "%s", prefix ? prefix : "");
}

static int grow(saefw_state_out *s, char *err, size_t errlen) {
    if (s->n < s->cap) return 0;
    int cap = s->cap ? 2 * s->cap : 32;
    saefw_tensor_ref *r = realloc(s->refs, sizeof *r * (size_t)cap);
    if (r) s->refs = r;
    char **nm = r ? realloc(s->names, sizeof *nm * (size_t)cap) : NULL;
    if (nm) s->names = nm;
    int64_t *sh = nm ? realloc(s->shapes, sizeof *sh * (size_t)cap * SAEFW_MAX_DIMS) : NULL;
    if (sh) s->shapes = sh;
    void **cp = sh ? realloc(s->copies, sizeof *cp * (size_t)cap) : NULL;
    if (cp) s->copies = cp;
    if (!cp) return saefw_errf(err, errlen, "training state: out of memory");
    /* The refs point into shapes: re-aim them after a move. */
    for (int i = 0; i < s->n; i++) s->refs[i].shape = s->shapes + (size_t)i * SAEFW_MAX_DIMS;
    s->cap = cap;
    return 0;
}

int saefw_state_put(saefw_state_out *s, const char *name, saefw_dtype dt, int ndim, const int64_t *shape,
                    const void *data, char *err, size_t errlen) {
    if (ndim < 0 || ndim > SAEFW_MAX_DIMS) return saefw_errf(err, errlen, "training state: %s: bad dims", name);
    if (grow(s, err, errlen) != 0) return -1;
    size_t len = strlen(s->prefix) + strlen(name) + 1;
    char *full = saefw_malloc(len, err, errlen);
    if (!full) return -1;
    snprintf(full, len, "%s%s", s->prefix, name);
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->names[i], full)) {
            free(full);
            return saefw_errf(err, errlen, "training state: entry '%s%s' saved twice", s->prefix, name);
        }
    int64_t *sh = s->shapes + (size_t)s->n * SAEFW_MAX_DIMS;
    for (int d = 0; d < ndim; d++) sh[d] = shape[d];
    s->names[s->n] = full;
    s->copies[s->n] = NULL;
    s->refs[s->n] = (saefw_tensor_ref){full, dt, ndim, sh, data};
    s->n++;
    return 0;
}

int saefw_state_put_copy(saefw_state_out *s, const char *name, saefw_dtype dt, int64_t n, const void *data, char *err,
                         size_t errlen) {
    size_t bytes = (size_t)n * saefw_dtype_size(dt);
    void *c = saefw_malloc(bytes ? bytes : 1, err, errlen);
    if (!c) return -1;
    if (bytes) memcpy(c, data, bytes);
    int64_t shape[1] = {n};
    if (saefw_state_put(s, name, dt, 1, shape, c, err, errlen) != 0) {
        free(c);
        return -1;
    }
    s->copies[s->n - 1] = c;
    return 0;
}

int saefw_state_put_i64(saefw_state_out *s, const char *name, int64_t v, char *err, size_t errlen) {
    return saefw_state_put_copy(s, name, SAEFW_DT_I64, 1, &v, err, errlen);
}

int saefw_state_put_f64(saefw_state_out *s, const char *name, double v, char *err, size_t errlen) {
    return saefw_state_put_copy(s, name, SAEFW_DT_F64, 1, &v, err, errlen);
}

int saefw_state_put_rng(saefw_state_out *s, const char *name, const saefw_rng *r, char *err, size_t errlen) {
    return saefw_state_put_copy(s, name, SAEFW_DT_I64, 4, r->s, err, errlen);
}

int saefw_state_write(const saefw_state_out *s, const char *path, char *err, size_t errlen) {
    const char *meta[][2] = {{"format", "saefw-train-state-1"}};
    return saefw_write_checked(path, s->refs, s->n, meta, 1, err, errlen);
}

/* ---- state in ---- */

int saefw_state_open(const char *path, saefw_state_in *s, char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    snprintf(s->path, sizeof s->path, "%s", path);
    if (saefw_tf_open(path, &s->tf, err, errlen) != 0) return -1;
    int had = 0;
    if (saefw_checksum_verify(s->tf, path, &had, err, errlen) != 0 ||
        (!had && saefw_errf(err, errlen, "%s: no checksum: not a saefw training state", path))) {
        saefw_state_close(s);
        return -1;
    }
    return 0;
}

void saefw_state_close(saefw_state_in *s) {
    saefw_tf_close(s->tf);
    s->tf = NULL;
}

void saefw_state_in_prefix(saefw_state_in *s, const char *prefix) {
    snprintf(s->prefix, sizeof s->prefix, "%s", prefix ? prefix : "");
}

static const saefw_tensor_info *find(const saefw_state_in *s, const char *name) {
    char full[512];
    snprintf(full, sizeof full, "%s%s", s->prefix, name);
    return saefw_tf_find(s->tf, full);
}

int saefw_state_has(const saefw_state_in *s, const char *name) { return find(s, name) != NULL; }

int saefw_state_get(const saefw_state_in *s, const char *name, saefw_dtype dt, int64_t n, void *out, char *err,
                    size_t errlen) {
    const saefw_tensor_info *t = find(s, name);
    if (!t) return saefw_errf(err, errlen, "%s: training state lacks '%s%s'", s->path, s->prefix, name);
    if (t->dtype != dt || t->numel != n)
        return saefw_errf(err, errlen, "%s: training state entry '%s%s' holds %lld %s values, expected %lld %s",
                          s->path, s->prefix, name, (long long)t->numel, saefw_dtype_name(t->dtype), (long long)n,
                          saefw_dtype_name(dt));
    memcpy(out, t->data, t->nbytes);
    return 0;
}

int saefw_state_get_i64(const saefw_state_in *s, const char *name, int64_t *v, char *err, size_t errlen) {
    return saefw_state_get(s, name, SAEFW_DT_I64, 1, v, err, errlen);
}

int saefw_state_get_f64(const saefw_state_in *s, const char *name, double *v, char *err, size_t errlen) {
    return saefw_state_get(s, name, SAEFW_DT_F64, 1, v, err, errlen);
}

int saefw_state_get_rng(const saefw_state_in *s, const char *name, saefw_rng *r, char *err, size_t errlen) {
    return saefw_state_get(s, name, SAEFW_DT_I64, 4, r->s, err, errlen);
}
