/* Token files as rows of seq_len tokens, shuffled by a keyed permutation (no index array). Rows are
 * read with pread: a 2-billion-token file (16 GB) read at random through a mapping would leave every
 * page it touched counted in the process's resident memory; read this way they stay in the page
 * cache only. */
#include "tokens.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dist.h"
#include "tensorfile.h"
#include "util.h"

/* Tokens read at a time (one row is usually 128). */
#define ROW_PIECE 512

struct saefw_tokens {
    char *path;
    saefw_tensorfile *tf; /* for .npy, safetensors, .pt */
    const void *data;
    saefw_dtype dtype;
    int64_t file_rows, file_cols; /* 1-D files: one row of N tokens */
    int64_t pieces;               /* rows of seq_len per file row */
    int64_t seq_len, rows, bos;
    int shuffle;
    uint64_t seed, key;
    int64_t cursor, pass;
    /* Data parallel: this rank reads the positions of each pass congruent to `phase` mod `stride` (its
     * rank and the rank count); 0 and 1 alone. */
    int64_t phase, stride;
    int bits; /* Feistel domain is 2^bits >= rows */
    int fd;   /* rows are read from here at file_off, or from data when -1 */
    int64_t file_off;
    void (*log)(void *ud, const char *msg);
    void *log_ud;
};

/* ---- keyed permutation of [0, rows): a 4-round Feistel network with cycle walking ---- */

static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static int64_t permute_key(const saefw_tokens *t, uint64_t key, int64_t i) {
    if (!t->shuffle || t->rows <= 1) return i;
    const int half = t->bits / 2;
    const uint64_t mask = (1ULL << half) - 1;
    uint64_t x = (uint64_t)i;
    do {
        uint64_t l = x >> half, r = x & mask;
        for (int round = 0; round < 4; round++) {
            uint64_t f = mix(r ^ (key + 0x9e3779b97f4a7c15ULL * (uint64_t)(round + 1))) & mask;
            uint64_t nl = r;
            r = l ^ f;
            l = nl;
        }
        x = (l << half) | r;
    } while (x >= (uint64_t)t->rows); /* the domain is < 4 * rows, so this ends quickly */
    return (int64_t)x;
}

static uint64_t pass_key(const saefw_tokens *t, int64_t pass) {
    return mix(t->seed ^ mix((uint64_t)pass + 0x746f6b656e73ULL));
}

static int64_t permute(const saefw_tokens *t, int64_t i) { return permute_key(t, t->key, i); }

static void new_key(saefw_tokens *t) { t->key = pass_key(t, t->pass); }

/* ---- opening ---- */

static int open_bin(saefw_tokens *t, const char *dtype, char *err, size_t errlen) {
    if (!dtype)
        return saefw_errf(err, errlen, "%s: a raw .bin token file needs its dtype (uint16, int32 or int64)", t->path);
    if (!strcmp(dtype, "uint16")) t->dtype = SAEFW_DT_U16;
    else if (!strcmp(dtype, "int32")) t->dtype = SAEFW_DT_I32;
    else if (!strcmp(dtype, "int64")) t->dtype = SAEFW_DT_I64;
    else return saefw_errf(err, errlen, "%s: token dtype must be uint16, int32 or int64, got '%s'", t->path, dtype);
    int fd = open(t->path, O_RDONLY);
    if (fd < 0) return saefw_errf(err, errlen, "%s: cannot open: %s", t->path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return saefw_errf(err, errlen, "%s: cannot stat: %s", t->path, strerror(errno));
    }
    size_t isz = saefw_dtype_size(t->dtype);
    if (st.st_size <= 0 || (size_t)st.st_size % isz != 0) {
        close(fd);
        return saefw_errf(err, errlen, "%s: size %lld is not a whole number of %s tokens", t->path,
                          (long long)st.st_size, dtype);
    }
    t->fd = fd;
    t->file_off = 0;
    t->file_rows = 1;
    t->file_cols = (int64_t)((size_t)st.st_size / isz);
    return 0;
}

static int open_tensor(saefw_tokens *t, const char *name, char *err, size_t errlen) {
    if (saefw_tf_open(t->path, &t->tf, err, errlen) != 0) return -1;
    const saefw_tensor_info *ti = NULL;
    if (name) {
        ti = saefw_tf_find(t->tf, name);
        if (!ti) return saefw_errf(err, errlen, "%s: no tensor named '%s'", t->path, name);
    } else if (saefw_tf_count(t->tf) == 1) {
        ti = saefw_tf_get(t->tf, 0);
    } else if ((ti = saefw_tf_find(t->tf, "tokens")) == NULL) {
        return saefw_errf(err, errlen, "%s: holds %d tensors and none is named 'tokens'; name it with tensor = ...",
                          t->path, saefw_tf_count(t->tf));
    }
    if (ti->dtype != SAEFW_DT_I32 && ti->dtype != SAEFW_DT_I64 && ti->dtype != SAEFW_DT_U16)
        return saefw_errf(err, errlen, "%s: tokens must be int32, int64 or uint16, got %s", t->path,
                          saefw_dtype_name(ti->dtype));
    if (ti->ndim == 1) {
        t->file_rows = 1;
        t->file_cols = ti->shape[0];
    } else if (ti->ndim == 2) {
        t->file_rows = ti->shape[0];
        t->file_cols = ti->shape[1];
    } else {
        return saefw_errf(err, errlen, "%s: tokens must be 1-D [N] or 2-D [rows, length], got %d dimensions", t->path,
                          ti->ndim);
    }
    t->data = ti->data;
    t->dtype = ti->dtype;
    /* Read from the file itself unless opening converted or copied the tensor. */
    const size_t bytes = (size_t)(t->file_rows * t->file_cols) * saefw_dtype_size(t->dtype);
    const int64_t off = saefw_tf_offset(t->tf, t->data, bytes);
    if (off >= 0) {
        int fd = open(t->path, O_RDONLY);
        if (fd < 0) return saefw_errf(err, errlen, "%s: cannot open: %s", t->path, strerror(errno));
        t->fd = fd;
        t->file_off = off;
    }
    return 0;
}

int saefw_tokens_open(const saefw_tokens_opts *o, saefw_tokens **out, char *err, size_t errlen) {
    *out = NULL;
    if (!o->path) return saefw_errf(err, errlen, "tokens: no path given");
    if (o->seq_len <= 1)
        return saefw_errf(err, errlen, "%s: seq_len must be at least 2, got %lld", o->path, (long long)o->seq_len);
    saefw_tokens *t = saefw_calloc(1, sizeof *t, err, errlen);
    if (!t) return -1;
    t->fd = -1;
    t->path = saefw_strdup(o->path, err, errlen);
    if (!t->path) {
        free(t);
        return -1;
    }
    int rc =
        saefw_ends_with(o->path, ".bin") ? open_bin(t, o->dtype, err, errlen) : open_tensor(t, o->tensor, err, errlen);
    if (rc != 0) {
        saefw_tokens_free(t);
        return -1;
    }
    t->seq_len = o->seq_len;
    t->pieces = t->file_cols / o->seq_len;
    t->rows = t->file_rows * t->pieces;
    if (t->rows <= 0) {
        saefw_errf(err, errlen, "%s: rows of %lld tokens are shorter than seq_len %lld", o->path,
                   (long long)t->file_cols, (long long)o->seq_len);
        saefw_tokens_free(t);
        return -1;
    }
    t->bos = o->bos;
    t->shuffle = o->shuffle;
    t->seed = o->seed;
    t->bits = 2;
    while ((1LL << t->bits) < t->rows) t->bits += 2;
    t->phase = saefw_dist_rank();
    t->stride = saefw_dist_size();
    if (t->rows < t->stride) {
        saefw_errf(err, errlen, "%s: %lld rows of %lld tokens is fewer than the %lld ranks (each reads its own rows)",
                   o->path, (long long)t->rows, (long long)o->seq_len, (long long)t->stride);
        saefw_tokens_free(t);
        return -1;
    }
    new_key(t);
    *out = t;
    return 0;
}

void saefw_tokens_free(saefw_tokens *t) {
    if (!t) return;
    if (t->fd >= 0) close(t->fd);
    saefw_tf_close(t->tf);
    free(t->path);
    free(t);
}

int64_t saefw_tokens_rows(const saefw_tokens *t) { return t->rows; }
int64_t saefw_tokens_seq_len(const saefw_tokens *t) { return t->seq_len; }
int64_t saefw_tokens_pass(const saefw_tokens *t) { return t->pass; }
int64_t saefw_tokens_cursor(const saefw_tokens *t) { return t->cursor; }

int saefw_tokens_seek(saefw_tokens *t, int64_t pass, int64_t cursor, char *err, size_t errlen) {
    if (pass < 0 || cursor < 0 || cursor > t->rows)
        return saefw_errf(err, errlen, "%s: no stream position pass %lld, row %lld", t->path, (long long)pass,
                          (long long)cursor);
    t->pass = pass;
    t->cursor = cursor;
    new_key(t);
    return 0;
}

void saefw_tokens_set_log(saefw_tokens *t, void (*log)(void *ud, const char *msg), void *ud) {
    t->log = log;
    t->log_ud = ud;
}

/* Tokens [off, off + n) as int64, from the file or from memory. */
static int read_tokens(const saefw_tokens *t, int64_t off, int64_t n, int64_t *v, char *err, size_t errlen) {
    const size_t isz = saefw_dtype_size(t->dtype);
    unsigned char raw[ROW_PIECE * 8];
    const unsigned char *at = raw;
    if (t->fd >= 0) {
        const size_t want = (size_t)n * isz;
        size_t got = 0;
        while (got < want) {
            ssize_t k = pread(t->fd, raw + got, want - got, (off_t)(t->file_off + off * (int64_t)isz + (int64_t)got));
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0)
                return saefw_errf(err, errlen, "%s: cannot read tokens at offset %lld: %s", t->path,
                                  (long long)(off * (int64_t)isz),
                                  k < 0 ? strerror(errno) : "the file is shorter than when opened");
            got += (size_t)k;
        }
    } else {
        at = (const unsigned char *)t->data + off * (int64_t)isz;
    }
    for (int64_t i = 0; i < n; i++) {
        /* memcpy: the bytes may sit at any alignment. */
        switch (t->dtype) {
        case SAEFW_DT_U16: {
            uint16_t u;
            memcpy(&u, at + i * 2, 2);
            v[i] = u;
            break;
        }
        case SAEFW_DT_I32: {
            int32_t u;
            memcpy(&u, at + i * 4, 4);
            v[i] = u;
            break;
        }
        default: memcpy(&v[i], at + i * 8, 8); break;
        }
    }
    return 0;
}

int saefw_tokens_row(const saefw_tokens *t, int64_t r, int32_t *out, int64_t max_id, char *err, size_t errlen) {
    if (r < 0 || r >= t->rows) return saefw_errf(err, errlen, "%s: row %lld out of range", t->path, (long long)r);
    int64_t frow = r / t->pieces, off = frow * t->file_cols + (r % t->pieces) * t->seq_len;
    int64_t v[ROW_PIECE];
    for (int64_t i0 = 0; i0 < t->seq_len; i0 += ROW_PIECE) {
        const int64_t n = t->seq_len - i0 < ROW_PIECE ? t->seq_len - i0 : ROW_PIECE;
        if (read_tokens(t, off + i0, n, v, err, errlen) != 0) return -1;
        for (int64_t i = 0; i < n; i++) {
            int64_t x = v[i];
            if (i0 + i == 0 && t->bos >= 0) x = t->bos;
            if (x < 0 || (max_id > 0 && x >= max_id) || x > INT32_MAX)
                return saefw_errf(err, errlen,
                                  "%s: token id %lld at position %lld is outside the vocabulary (d_vocab %lld)",
                                  t->path, (long long)x, (long long)(off + i0 + i), (long long)max_id);
            out[i0 + i] = (int32_t)x;
        }
    }
    return 0;
}

/* Move the cursor to this rank's next position of the pass (the pass's end when it has none left). */
static void own_position(saefw_tokens *t) {
    if (t->stride > 1 && t->cursor < t->rows) t->cursor += (t->phase - t->cursor % t->stride + t->stride) % t->stride;
    if (t->cursor > t->rows) t->cursor = t->rows;
}

int saefw_tokens_next(saefw_tokens *t, int32_t *out, int64_t n, int64_t max_id, char *err, size_t errlen) {
    for (int64_t k = 0; k < n; k++) {
        own_position(t);
        if (t->cursor == t->rows) {
            t->cursor = 0;
            t->pass++;
            new_key(t);
            own_position(t);
            if (t->log) {
                char msg[512];
                snprintf(msg, sizeof msg, "%s: used all %lld rows; starting pass %lld%s", t->path, (long long)t->rows,
                         (long long)t->pass + 1, t->shuffle ? " with a fresh shuffle" : "");
                t->log(t->log_ud, msg);
            }
        }
        if (saefw_tokens_row(t, permute(t, t->cursor), out + k * t->seq_len, max_id, err, errlen) != 0) return -1;
        t->cursor++;
    }
    return 0;
}

int saefw_tokens_sample(const saefw_tokens *t, saefw_rng *rng, int32_t *out, int64_t n, int64_t max_id, char *err,
                        size_t errlen) {
    for (int64_t k = 0; k < n; k++) {
        int64_t r = (int64_t)saefw_rng_below(rng, (uint64_t)t->rows);
        if (saefw_tokens_row(t, r, out + k * t->seq_len, max_id, err, errlen) != 0) return -1;
    }
    return 0;
}

int saefw_tokens_first_pass(const saefw_tokens *t, int64_t pos, int32_t *out, int64_t n, int64_t max_id, char *err,
                            size_t errlen) {
    const uint64_t key = pass_key(t, 0);
    for (int64_t k = 0; k < n; k++) {
        int64_t r = permute_key(t, key, ((pos + k) % t->rows + t->rows) % t->rows);
        if (saefw_tokens_row(t, r, out + k * t->seq_len, max_id, err, errlen) != 0) return -1;
    }
    return 0;
}

int saefw_tokens_save(const saefw_tokens *t, saefw_state_out *st, char *err, size_t errlen) {
    if (saefw_state_put_i64(st, "rows", t->rows, err, errlen) != 0 ||
        saefw_state_put_i64(st, "cursor", t->cursor, err, errlen) != 0)
        return -1;
    return saefw_state_put_i64(st, "pass", t->pass, err, errlen);
}

int saefw_tokens_load(saefw_tokens *t, saefw_state_in *st, char *err, size_t errlen) {
    int64_t rows = 0, cursor = 0, pass = 0;
    if (saefw_state_get_i64(st, "rows", &rows, err, errlen) != 0 ||
        saefw_state_get_i64(st, "cursor", &cursor, err, errlen) != 0 ||
        saefw_state_get_i64(st, "pass", &pass, err, errlen) != 0)
        return -1;
    if (rows != t->rows || cursor < 0 || cursor > rows || pass < 0)
        return saefw_errf(err, errlen, "%s: the run was saved with a token file of %lld rows, this one has %lld",
                          t->path, (long long)rows, (long long)t->rows);
    t->cursor = cursor;
    t->pass = pass;
    new_key(t);
    return 0;
}
