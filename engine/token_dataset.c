/* Parquet token datasets converted into one flat .npy token file (the token cache), streamed row group
 * by row group: the dataset never has to fit in memory. */
#include "token_dataset.h"

#include <errno.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "parallel.h"
#include "dataset_resolve.h"
#include "parquet.h"
#include "util.h"

/* The .npy header is written once as a placeholder and rewritten at the end with the real shape. */
#define NPY_HEADER 128
#define ERR_LEN 1024

static int npy_header(char *h, const char *descr, int64_t rows, int64_t cols) {
    char dict[NPY_HEADER];
    int n;
    if (cols > 0)
        n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%lld, %lld), }", descr,
                     (long long)rows, (long long)cols);
    else
        n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%lld,), }", descr,
                     (long long)rows);
    if (n < 0 || n > NPY_HEADER - 11) return -1;
    memcpy(h, "\x93NUMPY\x01\x00", 8);
    h[8] = (char)((NPY_HEADER - 10) & 0xff);
    h[9] = (char)((NPY_HEADER - 10) >> 8);
    memset(h + 10, ' ', NPY_HEADER - 10);
    memcpy(h + 10, dict, (size_t)n);
    h[NPY_HEADER - 1] = '\n';
    return 0;
}

typedef struct {
    const saefw_parquet *pq;
    int col, rg0, nrg;
    saefw_parquet_batch *b;
    char (*errs)[ERR_LEN];
    int *rc;
} decode_ctx;

static void decode_range(void *vctx, int64_t begin, int64_t end) {
    decode_ctx *c = vctx;
    for (int64_t i = begin; i < end; i++) {
        if (i >= c->nrg) continue;
        c->rc[i] = saefw_parquet_read(c->pq, c->rg0 + (int)i, c->col, &c->b[i], c->errs[i], ERR_LEN);
    }
}

typedef struct {
    FILE *f;
    int bits; /* 16 or 32 */
    void *buf;
    size_t buf_cap;
    int64_t rows, tokens, row_len; /* row_len: -1 before the first row, 0 once rows differ */
    int overflow16;                /* an id >= 65536 was met while writing uint16 */
} writer;

/* Append one decoded row group (lists or plain ints) to the file, checking ids. */
static int write_batch(writer *w, const saefw_parquet_batch *b, int lists, const saefw_token_convert_opts *o,
                       const char *path, int rg, const char *col, char *err, size_t errlen) {
    const int64_t nrows = lists ? b->rows : b->n;
    if (lists) {
        for (int64_t r = 0; r < nrows; r++) {
            int64_t len = b->offsets[r + 1] - b->offsets[r];
            if (w->row_len < 0) w->row_len = len;
            else if (w->row_len != len) w->row_len = 0;
        }
    } else {
        w->row_len = 0;
    }
    const int64_t n = lists ? b->offsets[nrows] - b->offsets[0] : b->n;
    const int64_t *v = b->values + (lists ? b->offsets[0] : 0);
    const size_t esz = w->bits == 16 ? 2 : 4;
    if ((size_t)n * esz > w->buf_cap) {
        void *nb = realloc(w->buf, (size_t)n * esz);
        if (!nb && n > 0) return saefw_errf(err, errlen, "out of memory for a row group of %lld tokens", (long long)n);
        w->buf = nb;
        w->buf_cap = (size_t)n * esz;
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t id = v[i];
        if (id < 0 || (o->max_id > 0 && id >= o->max_id) || id > INT32_MAX) {
            int64_t row = 0;
            if (lists)
                while (row + 1 < nrows && b->offsets[row + 1] - b->offsets[0] <= i) row++;
            else row = i;
            if (id < 0)
                return saefw_errf(err, errlen, "%s: row group %d, column '%s': token id %lld in row %lld is negative",
                                  path, rg, col, (long long)id, (long long)row);
            if (o->max_id > 0 && id >= o->max_id)
                return saefw_errf(err, errlen,
                                  "%s: row group %d, column '%s': token id %lld in row %lld is not below the model's "
                                  "vocabulary size %lld",
                                  path, rg, col, (long long)id, (long long)row, (long long)o->max_id);
            return saefw_errf(err, errlen,
                              "%s: row group %d, column '%s': token id %lld in row %lld does not fit in int32", path,
                              rg, col, (long long)id, (long long)row);
        }
        if (w->bits == 16) {
            if (id > 65535) {
                w->overflow16 = 1;
                return 1;
            }
            ((uint16_t *)w->buf)[i] = (uint16_t)id;
        } else {
            ((int32_t *)w->buf)[i] = (int32_t)id;
        }
    }
    if (n > 0 && fwrite(w->buf, esz, (size_t)n, w->f) != (size_t)n)
        return saefw_errf(err, errlen, "%s: write failed: %s", o->out, strerror(errno));
    w->rows += nrows;
    w->tokens += n;
    return 0;
}

static void fmt_eta(char *out, size_t n, double s) {
    if (!(s >= 0) || s > 1e7) snprintf(out, n, "?");
    else if (s >= 3600) snprintf(out, n, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else if (s >= 60) snprintf(out, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else snprintf(out, n, "%ds", (int)s);
}

/* One pass over every shard with the given element width; returns 1 when uint16 overflowed. */
static int convert_pass(const saefw_token_convert_opts *o, int bits, int64_t total_rows, saefw_token_convert_stats *st,
                        char *err, size_t errlen) {
    const char *colname = o->column ? o->column : "tokens";
    char tmp[4096];
    writer w = {.bits = bits, .row_len = -1};
    const int T = saefw_threads() > 0 ? saefw_threads() : 1;
    saefw_parquet_batch *b = saefw_calloc((size_t)T, sizeof *b, err, errlen);
    char(*errs)[ERR_LEN] = b ? saefw_calloc((size_t)T, ERR_LEN, err, errlen) : NULL;
    int *rcs = errs ? saefw_calloc((size_t)T, sizeof(int), err, errlen) : NULL;
    int rc = -1;
    saefw_parquet *pq = NULL;
    if (!rcs) goto done;
    for (int i = 0; i < T; i++) saefw_parquet_batch_init(&b[i]);
    w.f = saefw_atomic_open(o->out, tmp, sizeof tmp, err, errlen);
    if (!w.f) goto done;
    char hdr[NPY_HEADER];
    memset(hdr, ' ', sizeof hdr);
    if (fwrite(hdr, 1, sizeof hdr, w.f) != sizeof hdr) {
        saefw_errf(err, errlen, "%s: write failed: %s", o->out, strerror(errno));
        goto abort;
    }
    const int tty = o->progress < 0 && isatty(STDERR_FILENO);
    const double t0 = saefw_now();
    double last = t0;
    for (int s = 0; s < o->n_shards; s++) {
        if (saefw_parquet_open(o->shards[s], &pq, err, errlen) != 0) goto abort;
        int col = saefw_parquet_find(pq, colname, SAEFW_PQ_LISTS | SAEFW_PQ_INTS, err, errlen);
        if (col < 0) goto abort;
        const int lists = (saefw_parquet_column_info(pq, col)->kind & SAEFW_PQ_LISTS) != 0;
        const int nrg = saefw_parquet_row_groups(pq);
        for (int rg0 = 0; rg0 < nrg; rg0 += T) {
            decode_ctx c = {pq, col, rg0, nrg - rg0 < T ? nrg - rg0 : T, b, errs, rcs};
            for (int i = 0; i < T; i++) rcs[i] = 0;
            saefw_parallel_for(T, decode_range, &c);
            for (int i = 0; i < c.nrg; i++) {
                if (rcs[i] != 0) {
                    saefw_errf(err, errlen, "%s", errs[i]);
                    goto abort;
                }
                int wr = write_batch(&w, &b[i], lists, o, o->shards[s], rg0 + i, colname, err, errlen);
                if (wr == 1) {
                    rc = 1; /* ids past uint16: the caller starts again with int32 */
                    goto abort;
                }
                if (wr != 0) goto abort;
            }
            const double now = saefw_now();
            if (o->progress != 0 && (tty ? now - last > 0.25 : now - last > 10)) {
                last = now;
                const double rate = (double)w.tokens / (now - t0 > 1e-9 ? now - t0 : 1e-9);
                const double frac = total_rows > 0 ? (double)w.rows / (double)total_rows : 0;
                char eta[32];
                fmt_eta(eta, sizeof eta, frac > 0 ? (now - t0) * (1 - frac) / frac : -1);
                fprintf(stderr, "%sconverting shard %d/%d: %.1fM tokens (%.0f%%), %.1fM tokens/s, ETA %s%s",
                        tty ? "\r" : "", s + 1, o->n_shards, (double)w.tokens / 1e6, 100 * frac, rate / 1e6, eta,
                        tty ? "\x1b[K" : "\n");
                fflush(stderr);
            }
        }
        saefw_parquet_close(pq);
        pq = NULL;
    }
    if (o->progress != 0 && tty) fprintf(stderr, "\r\x1b[K");
    if (w.tokens == 0) {
        saefw_errf(err, errlen, "%s: the dataset holds no tokens in column '%s'", o->shards[0], colname);
        goto abort;
    }
    if (w.row_len < 0) w.row_len = 0;
    if (npy_header(hdr, bits == 16 ? "<u2" : "<i4", w.row_len > 0 ? w.rows : w.tokens, w.row_len) != 0 ||
        fseek(w.f, 0, SEEK_SET) != 0 || fwrite(hdr, 1, sizeof hdr, w.f) != sizeof hdr) {
        saefw_errf(err, errlen, "%s: cannot write the header: %s", o->out, strerror(errno));
        goto abort;
    }
    if (saefw_atomic_commit(w.f, tmp, o->out, err, errlen) != 0) {
        w.f = NULL;
        goto done;
    }
    w.f = NULL;
    if (st) {
        st->rows = w.rows;
        st->tokens = w.tokens;
        st->row_len = w.row_len;
        st->dtype_bits = bits;
        st->seconds = saefw_now() - t0;
    }
    rc = 0;
    goto done;
abort:
    if (w.f) saefw_atomic_abort(w.f, tmp);
    w.f = NULL;
done:
    saefw_parquet_close(pq);
    if (b)
        for (int i = 0; i < T; i++) saefw_parquet_batch_free(&b[i]);
    free(b);
    free(errs);
    free(rcs);
    free(w.buf);
    return rc;
}

int saefw_tokens_convert(const saefw_token_convert_opts *o, saefw_token_convert_stats *stats, char *err,
                         size_t errlen) {
    if (o->n_shards < 1) return saefw_errf(err, errlen, "token dataset: no shards to convert");
    int64_t total = 0;
    for (int s = 0; s < o->n_shards; s++) {
        saefw_parquet *pq;
        if (saefw_parquet_open(o->shards[s], &pq, err, errlen) != 0) return -1;
        total += saefw_parquet_rows(pq);
        saefw_parquet_close(pq);
    }
    int rc = convert_pass(o, 16, total, stats, err, errlen);
    if (rc == 1) {
        if (o->progress != 0) fprintf(stderr, "token ids past 65535: converting again as int32\n");
        rc = convert_pass(o, 32, total, stats, err, errlen);
    }
    return rc == 0 ? 0 : -1;
}

static int cache_root(char *out, size_t n) {
    const char *v = getenv("SAEFW_CACHE");
    if (v && *v) return snprintf(out, n, "%s", v) < (int)n ? 0 : -1;
    v = getenv("XDG_CACHE_HOME");
    if (v && *v) return snprintf(out, n, "%s/saefw", v) < (int)n ? 0 : -1;
    v = getenv("HOME");
    if (!v || !*v) return -1;
    return snprintf(out, n, "%s/.cache/saefw", v) < (int)n ? 0 : -1;
}

int saefw_token_cache_path(const char *const *shards, int n_shards, const char *column, const char *name, char *out,
                           size_t n, char *err, size_t errlen) {
    if (n_shards < 1) return saefw_errf(err, errlen, "token dataset: no shards");
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    if (!h || EVP_DigestInit_ex(h, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(h);
        return saefw_errf(err, errlen, "token cache: sha256 unavailable");
    }
    for (int s = 0; s < n_shards; s++) {
        char real[PATH_MAX];
        struct stat st;
        if (!realpath(shards[s], real) || stat(real, &st) != 0) {
            EVP_MD_CTX_free(h);
            return saefw_errf(err, errlen, "%s: cannot read: %s", shards[s], strerror(errno));
        }
        char line[PATH_MAX + 64];
        int len = snprintf(line, sizeof line, "%s\n%lld\n%lld\n", real, (long long)st.st_size, (long long)st.st_mtime);
        EVP_DigestUpdate(h, line, (size_t)len);
    }
    const char *col = column ? column : "tokens";
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dn = 0;
    int ok = EVP_DigestUpdate(h, col, strlen(col)) == 1 && EVP_DigestFinal_ex(h, d, &dn) == 1 && dn >= 8;
    EVP_MD_CTX_free(h);
    if (!ok) return saefw_errf(err, errlen, "token cache: sha256 failed");
    char root[PATH_MAX];
    if (cache_root(root, sizeof root) != 0)
        return saefw_errf(err, errlen, "token cache: set SAEFW_CACHE (no HOME or XDG_CACHE_HOME to put it under)");
    char label[128];
    const char *src = name;
    if (!src) {
        src = strrchr(shards[0], '/');
        src = src ? src + 1 : shards[0];
    }
    size_t k = 0;
    for (; *src && k < sizeof label - 1; src++) label[k++] = (*src == '/' || *src == ' ' || *src == ':') ? '-' : *src;
    label[k] = 0;
    char hex[17];
    for (int i = 0; i < 8; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    if (snprintf(out, n, "%s/tokens/%s-%s.npy", root, label, hex) >= (int)n)
        return saefw_errf(err, errlen, "token cache: path too long under %s", root);
    return 0;
}

int saefw_token_dataset_spec(const char *spec) {
    if (!strncmp(spec, "hf://", 5)) return 1;
    if (strpbrk(spec, "*?[")) return 1;
    struct stat st;
    if (stat(spec, &st) == 0) return S_ISDIR(st.st_mode) || saefw_ends_with(spec, ".parquet");
    /* ORG/NAME: one slash, no file extension */
    const char *slash = strchr(spec, '/');
    return slash && slash != spec && !strchr(slash + 1, '/') && slash[1] && !strchr(slash + 1, '.');
}

int saefw_token_dataset_prepare(const char *spec, const char *column, int progress, char *cache, size_t n, char *err,
                                size_t errlen) {
    saefw_shards sh;
    memset(&sh, 0, sizeof sh);
    if (saefw_dataset_resolve(spec, NULL, &sh, err, errlen) != 0) return -1;
    int rc = -1;
    /* The cache file's label: ORG--NAME for a Hub dataset (huggingface_hub's folder naming). */
    char label[256] = "";
    const char *name = NULL;
    if (sh.commit[0]) {
        const char *p = !strncmp(spec, "hf://datasets/", 14) ? spec + 14 : spec;
        size_t k = 0;
        int slashes = 0;
        for (; *p && *p != '@' && k + 3 < sizeof label; p++) {
            if (*p == '/' && ++slashes == 2) break;
            if (*p == '/') label[k++] = '-', label[k++] = '-';
            else label[k++] = *p;
        }
        label[k] = 0;
        name = label;
    }
    for (size_t i = 0; i < sh.n; i++)
        if (!saefw_ends_with(sh.paths[i], ".parquet")) {
            saefw_errf(err, errlen, "%s: not a Parquet shard (a token dataset is read from .parquet files)",
                       sh.paths[i]);
            goto done;
        }
    if (saefw_token_cache_path((const char *const *)sh.paths, (int)sh.n, column, name, cache, n, err, errlen) != 0)
        goto done;
    struct stat st;
    if (stat(cache, &st) == 0) {
        rc = 0;
        goto done;
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", cache);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    if (saefw_mkdirs(dir, err, errlen) != 0) goto done;
    if (progress != 0)
        fprintf(stderr, "token cache: converting %zu Parquet shard(s) of %s into %s (once)\n", sh.n, spec, cache);
    saefw_token_convert_opts o = {.shards = (const char *const *)sh.paths,
                                  .n_shards = (int)sh.n,
                                  .column = column,
                                  .out = cache,
                                  .progress = progress};
    saefw_token_convert_stats stt;
    if (saefw_tokens_convert(&o, &stt, err, errlen) != 0) goto done;
    if (progress != 0)
        fprintf(stderr, "token cache: %lld rows, %lld tokens (%s) in %.1f s\n", (long long)stt.rows,
                (long long)stt.tokens, stt.dtype_bits == 16 ? "uint16" : "int32", stt.seconds);
    rc = 0;
done:
    saefw_shards_free(&sh);
    return rc;
}

int saefw_tokens_open_any(const saefw_tokens_opts *o, const char *column, int progress, saefw_tokens **out, char *err,
                          size_t errlen) {
    if (!o->path || !saefw_token_dataset_spec(o->path)) return saefw_tokens_open(o, out, err, errlen);
    char cache[PATH_MAX];
    if (saefw_token_dataset_prepare(o->path, column, progress, cache, sizeof cache, err, errlen) != 0) return -1;
    saefw_tokens_opts c = *o;
    c.path = cache;
    return saefw_tokens_open(&c, out, err, errlen);
}
