/* Activation sources (synthetic ground truth, memory-mapped files) and the seed's shuffling buffer. */
#include "source.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist.h"
#include "memory.h"
#include "parallel.h"
#include "tensorfile.h"
#include "util.h"

void saefw_source_free(saefw_source *s) {
    if (s && s->destroy) s->destroy(s);
}

static void source_log(saefw_source *s, const char *msg) {
    if (s->log) s->log(s->log_ud, msg);
}

/* ---- synthetic ---- */

typedef struct {
    saefw_synthetic_opts o;
    float *features; /* [n_features, d_in] unit rows */
    saefw_rng train_rng, eval_rng;
    saefw_rng mark_rng; /* train_rng at the latest mark */
} synthetic;

static void synth_rows(synthetic *sy, saefw_rng *rng, float *out, int64_t n) {
    const int64_t d = sy->o.d_in, F = sy->o.n_features;
    for (int64_t r = 0; r < n; r++) {
        float *row = out + r * d;
        memset(row, 0, sizeof(float) * (size_t)d);
        for (int64_t f = 0; f < F; f++) {
            if (saefw_rng_uniform(rng) >= sy->o.p_active) continue;
            float mag = (float)(saefw_rng_uniform(rng) * sy->o.max_magnitude);
            const float *v = sy->features + f * d;
            for (int64_t i = 0; i < d; i++) row[i] += mag * v[i];
        }
    }
}

static int synth_next(saefw_source *s, float *out, int64_t n, char *err, size_t errlen) {
    synthetic *sy = s->impl;
    synth_rows(sy, &sy->train_rng, out, n);
    return 0;
}

static int synth_sample(saefw_source *s, float *out, int64_t n, char *err, size_t errlen) {
    synthetic *sy = s->impl;
    synth_rows(sy, &sy->eval_rng, out, n);
    return 0;
}

static int synth_save(saefw_source *s, saefw_state_out *st, char *err, size_t errlen) {
    synthetic *sy = s->impl;
    if (saefw_state_put_rng(st, "train_rng", &sy->train_rng, err, errlen) != 0) return -1;
    return saefw_state_put_rng(st, "eval_rng", &sy->eval_rng, err, errlen);
}

static int synth_load(saefw_source *s, saefw_state_in *st, char *err, size_t errlen) {
    synthetic *sy = s->impl;
    if (saefw_state_get_rng(st, "train_rng", &sy->train_rng, err, errlen) != 0) return -1;
    return saefw_state_get_rng(st, "eval_rng", &sy->eval_rng, err, errlen);
}

static int synth_mark(saefw_source *s, char *err, size_t errlen) {
    synthetic *sy = s->impl;
    sy->mark_rng = sy->train_rng;
    return 0;
}

static int synth_rewind(saefw_source *s, char *err, size_t errlen) {
    synthetic *sy = s->impl;
    sy->train_rng = sy->mark_rng;
    return 0;
}

static void synth_destroy(saefw_source *s) {
    synthetic *sy = s->impl;
    if (sy) free(sy->features);
    free(sy);
    free(s);
}

int saefw_source_synthetic(const saefw_synthetic_opts *o, saefw_source **out, char *err, size_t errlen) {
    *out = NULL;
    if (o->d_in <= 0 || o->n_features <= 0)
        return saefw_errf(err, errlen, "synthetic: d_in and n_features must be positive");
    if (!(o->p_active > 0 && o->p_active <= 1))
        return saefw_errf(err, errlen, "synthetic: p_active must be in (0, 1], got %g", o->p_active);
    if (!(o->max_magnitude > 0 && isfinite(o->max_magnitude)))
        return saefw_errf(err, errlen, "synthetic: max_magnitude must be positive, got %g", o->max_magnitude);
    saefw_source *s = saefw_calloc(1, sizeof *s, err, errlen);
    synthetic *sy = saefw_calloc(1, sizeof *sy, err, errlen);
    float *feat = sy && s ? saefw_malloc(sizeof(float) * (size_t)(o->d_in * o->n_features), err, errlen) : NULL;
    if (!s || !sy || !feat) {
        free(s);
        free(sy);
        return -1;
    }
    sy->o = *o;
    sy->features = feat;
    saefw_rng rng;
    saefw_rng_seed(&rng, o->seed);
    for (int64_t f = 0; f < o->n_features; f++) {
        float *v = feat + f * o->d_in;
        double ss = 0;
        for (int64_t i = 0; i < o->d_in; i++) {
            v[i] = (float)saefw_rng_normal(&rng);
            ss += (double)v[i] * v[i];
        }
        float inv = (float)(1.0 / sqrt(ss));
        for (int64_t i = 0; i < o->d_in; i++) v[i] *= inv;
    }
    /* Each rank draws rows of its own (rank 0 the rows a single process draws). */
    saefw_rng_seed(&sy->train_rng, saefw_dist_rank_seed(o->seed) ^ 0x747261696eULL);
    saefw_rng_seed(&sy->eval_rng, saefw_dist_rank_seed(o->seed) ^ 0x6576616cULL);
    s->kind = "synthetic";
    s->d_act = o->d_in;
    s->next = synth_next;
    s->sample = synth_sample;
    s->destroy = synth_destroy;
    s->save_state = synth_save;
    s->load_state = synth_load;
    s->mark = synth_mark;
    s->rewind = synth_rewind;
    s->impl = sy;
    *out = s;
    return 0;
}

const float *saefw_synthetic_features(const saefw_source *s, int64_t *n_features) {
    if (!s || !s->kind || strcmp(s->kind, "synthetic") != 0) return NULL;
    const synthetic *sy = s->impl;
    if (n_features) *n_features = sy->o.n_features;
    return sy->features;
}

double saefw_mmcs(const float *truth, int64_t n_truth, const float *D, int64_t n_rows, int64_t d) {
    double *inv = malloc(sizeof(double) * (size_t)n_rows);
    if (!inv) return NAN;
    for (int64_t r = 0; r < n_rows; r++) {
        double ss = 0;
        for (int64_t i = 0; i < d; i++) ss += (double)D[r * d + i] * D[r * d + i];
        inv[r] = ss > 0 ? 1.0 / sqrt(ss) : 0.0;
    }
    double total = 0;
    for (int64_t t = 0; t < n_truth; t++) {
        const float *g = truth + t * d;
        double gn = 0;
        for (int64_t i = 0; i < d; i++) gn += (double)g[i] * g[i];
        gn = gn > 0 ? 1.0 / sqrt(gn) : 0.0;
        double best = -1;
        for (int64_t r = 0; r < n_rows; r++) {
            double dot = 0;
            for (int64_t i = 0; i < d; i++) dot += (double)g[i] * D[r * d + i];
            dot *= inv[r] * gn;
            if (dot > best) best = dot;
        }
        total += best;
    }
    free(inv);
    return total / (double)n_truth;
}

/* ---- file ---- */

typedef struct {
    saefw_tensorfile *tf;
    const saefw_tensor_info *t;
    char *path;
    int64_t rows, cursor, wraps;
    int64_t lo, hi; /* the rows the training stream reads, [lo, hi): data parallel, this rank's block */
    int64_t mark_cursor, mark_wraps; /* cursor and wraps at the latest mark */
    saefw_rng eval_rng;
    /* Rows are read with pread, not through the mapping: a file cut short during the run is then an
     * error naming it instead of a SIGBUS. fd is -1 when the tensor was copied out of the mapping. */
    int fd;
    int64_t data_off; /* file offset of the tensor's first byte */
    void *raw;        /* [raw_cap] bytes of 16-bit rows before conversion */
    size_t raw_cap;
} file_source;

static int file_rows(saefw_source *s, file_source *fs, int64_t row, int64_t n, float *out, char *err, size_t errlen) {
    if (fs->fd < 0) {
        if (saefw_tensor_slice_f32(fs->t, row * s->d_act, n * s->d_act, out, err, errlen) != 0)
            return saefw_err_prefix(err, errlen, "%s", fs->path);
        return 0;
    }
    const size_t isz = saefw_dtype_size(fs->t->dtype), len = (size_t)(n * s->d_act) * isz;
    void *dst = out;
    if (isz != sizeof(float)) {
        if (len > fs->raw_cap) {
            void *r = realloc(fs->raw, len);
            if (!r) return saefw_errf(err, errlen, "%s: out of memory reading %lld rows", fs->path, (long long)n);
            fs->raw = r;
            fs->raw_cap = len;
        }
        dst = fs->raw;
    }
    const int64_t off = fs->data_off + row * s->d_act * (int64_t)isz;
    for (size_t got = 0; got < len;) {
        ssize_t k = pread(fs->fd, (char *)dst + got, len - got, (off_t)(off + (int64_t)got));
        if (k < 0 && errno == EINTR) continue;
        if (k < 0)
            return saefw_errf(err, errlen, "%s: cannot read rows %lld-%lld: %s", fs->path, (long long)row,
                              (long long)(row + n - 1), strerror(errno));
        if (k == 0)
            return saefw_errf(err, errlen,
                              "%s: the file ends at byte %lld, inside row %lld of %lld: it was cut short "
                              "or replaced while the run read it",
                              fs->path, (long long)(off + (int64_t)got),
                              (long long)(row + (int64_t)got / (s->d_act * (int64_t)isz)), (long long)fs->rows);
        got += (size_t)k;
    }
    if (dst != out) {
        saefw_tensor_info t = *fs->t;
        t.data = dst;
        t.numel = n * s->d_act;
        t.nbytes = len;
        if (saefw_tensor_slice_f32(&t, 0, t.numel, out, err, errlen) != 0)
            return saefw_err_prefix(err, errlen, "%s", fs->path);
    }
    return 0;
}

static int file_next(saefw_source *s, float *out, int64_t n, char *err, size_t errlen) {
    file_source *fs = s->impl;
    while (n > 0) {
        int64_t take = fs->hi - fs->cursor < n ? fs->hi - fs->cursor : n;
        if (file_rows(s, fs, fs->cursor, take, out, err, errlen) != 0) return -1;
        out += take * s->d_act;
        n -= take;
        fs->cursor += take;
        if (fs->cursor == fs->hi) {
            fs->cursor = fs->lo;
            fs->wraps++;
            char msg[512];
            snprintf(msg, sizeof msg, "%s: reached the end of %lld rows; starting pass %lld", fs->path,
                     (long long)(fs->hi - fs->lo), (long long)fs->wraps + 1);
            source_log(s, msg);
        }
    }
    return 0;
}

static int file_sample(saefw_source *s, float *out, int64_t n, char *err, size_t errlen) {
    file_source *fs = s->impl;
    for (int64_t r = 0; r < n; r++) {
        /* One read per row: an evaluation batch of a model batch's size (65536 rows) is seconds. */
        if (r % 4096 == 0 && saefw_stop_requested()) return saefw_stop_errf(err, errlen, "evaluation rows");
        int64_t row = (int64_t)saefw_rng_below(&fs->eval_rng, (uint64_t)fs->rows);
        if (file_rows(s, fs, row, 1, out + r * s->d_act, err, errlen) != 0) return -1;
    }
    return 0;
}

static int file_mark(saefw_source *s, char *err, size_t errlen) {
    file_source *fs = s->impl;
    fs->mark_cursor = fs->cursor;
    fs->mark_wraps = fs->wraps;
    return 0;
}

static int file_rewind(saefw_source *s, char *err, size_t errlen) {
    file_source *fs = s->impl;
    fs->cursor = fs->mark_cursor;
    fs->wraps = fs->mark_wraps;
    return 0;
}

static int file_save(saefw_source *s, saefw_state_out *st, char *err, size_t errlen) {
    file_source *fs = s->impl;
    if (saefw_state_put_i64(st, "rows", fs->rows, err, errlen) != 0 ||
        saefw_state_put_i64(st, "cursor", fs->cursor, err, errlen) != 0 ||
        saefw_state_put_i64(st, "wraps", fs->wraps, err, errlen) != 0)
        return -1;
    return saefw_state_put_rng(st, "eval_rng", &fs->eval_rng, err, errlen);
}

static int file_load(saefw_source *s, saefw_state_in *st, char *err, size_t errlen) {
    file_source *fs = s->impl;
    int64_t rows = 0, cursor = 0, wraps = 0;
    if (saefw_state_get_i64(st, "rows", &rows, err, errlen) != 0 ||
        saefw_state_get_i64(st, "cursor", &cursor, err, errlen) != 0 ||
        saefw_state_get_i64(st, "wraps", &wraps, err, errlen) != 0)
        return -1;
    if (rows != fs->rows || cursor < fs->lo || cursor >= fs->hi)
        return saefw_errf(err, errlen, "%s: the run was saved with an activation file of %lld rows, this one has %lld",
                          fs->path, (long long)rows, (long long)fs->rows);
    fs->cursor = cursor;
    fs->wraps = wraps;
    return saefw_state_get_rng(st, "eval_rng", &fs->eval_rng, err, errlen);
}

static void file_destroy(saefw_source *s) {
    file_source *fs = s->impl;
    if (fs) {
        saefw_tf_close(fs->tf);
        if (fs->fd >= 0) close(fs->fd);
        free(fs->raw);
        free(fs->path);
    }
    free(fs);
    free(s);
}

int saefw_source_file(const char *path, const char *name, int64_t expect_d, uint64_t seed, saefw_source **out,
                      char *err, size_t errlen) {
    *out = NULL;
    saefw_tensorfile *tf = NULL;
    if (saefw_tf_open(path, &tf, err, errlen) != 0) return -1;
    const saefw_tensor_info *t = NULL;
    if (name) {
        t = saefw_tf_find(tf, name);
        if (!t) {
            saefw_tf_close(tf);
            return saefw_errf(err, errlen, "%s: no tensor named '%s'", path, name);
        }
    } else if (saefw_tf_count(tf) == 1) {
        t = saefw_tf_get(tf, 0);
    } else {
        int n = saefw_tf_count(tf);
        saefw_tf_close(tf);
        return saefw_errf(err, errlen, "%s: holds %d tensors; say which one holds the activations (tensor = ...)", path,
                          n);
    }
    int bad = 0;
    if (t->ndim != 2 || t->shape[0] <= 0 || t->shape[1] <= 0)
        bad = saefw_errf(err, errlen, "%s: activations must be a non-empty 2-D tensor [rows, d_in], got %d dims", path,
                         t->ndim);
    else if (t->dtype != SAEFW_DT_F32 && t->dtype != SAEFW_DT_BF16 && t->dtype != SAEFW_DT_F16)
        bad = saefw_errf(err, errlen, "%s: activations must be F32, BF16 or F16, got %s", path,
                         saefw_dtype_name(t->dtype));
    else if (expect_d > 0 && t->shape[1] != expect_d)
        bad = saefw_errf(err, errlen, "%s: activation width is %lld, expected d_in = %lld", path,
                         (long long)t->shape[1], (long long)expect_d);
    if (bad) {
        saefw_tf_close(tf); /* t points into tf: close only after the message is written */
        return -1;
    }
    saefw_source *s = saefw_calloc(1, sizeof *s, err, errlen);
    file_source *fs = s ? saefw_calloc(1, sizeof *fs, err, errlen) : NULL;
    char *p = fs ? saefw_strdup(path, err, errlen) : NULL;
    if (!p) {
        free(fs);
        free(s);
        saefw_tf_close(tf);
        return -1;
    }
    fs->tf = tf;
    fs->t = t;
    fs->path = p;
    fs->fd = -1;
    fs->data_off = saefw_tf_offset(tf, t->data, t->nbytes);
    if (fs->data_off >= 0 && (fs->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        saefw_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        free(p);
        free(fs);
        free(s);
        saefw_tf_close(tf);
        return -1;
    }
    fs->rows = t->shape[0];
    /* Data parallel: rank r trains on the r-th of `ranks` contiguous blocks of the file's rows (the
     * buffer shuffles them); evaluation draws come from the whole file, each rank's its own. */
    int64_t n_own = 0;
    saefw_dist_share(fs->rows, &fs->lo, &n_own);
    fs->hi = fs->lo + n_own;
    fs->cursor = fs->lo;
    if (n_own == 0) {
        saefw_errf(err, errlen, "%s: %lld rows is fewer than the %d ranks (each trains on its own rows)", path,
                   (long long)fs->rows, saefw_dist_size());
        s->impl = fs;
        file_destroy(s);
        return -1;
    }
    saefw_rng_seed(&fs->eval_rng, saefw_dist_rank_seed(seed) ^ 0x6576616cULL);
    s->kind = "file";
    s->d_act = t->shape[1];
    s->next = file_next;
    s->sample = file_sample;
    s->destroy = file_destroy;
    s->save_state = file_save;
    s->load_state = file_load;
    s->mark = file_mark;
    s->rewind = file_rewind;
    s->impl = fs;
    *out = s;
    return 0;
}

/* ---- ordered feed from a function ---- */

typedef struct {
    int (*fn)(void *ud, float *out, int64_t n, char *err, size_t errlen);
    void *ud;
    void (*destroy_ud)(void *ud);
    float *last; /* [last_n, d_act]: the rows of the latest call, what evaluation reads */
    int64_t last_n, last_cap;
} feed_src;

static int feed_next(saefw_source *s, float *out, int64_t n, char *err, size_t errlen) {
    feed_src *f = s->impl;
    if (f->fn(f->ud, out, n, err, errlen) != 0) return -1;
    if (n > f->last_cap) {
        float *p = realloc(f->last, sizeof(float) * (size_t)(n * s->d_act));
        if (!p) return saefw_errf(err, errlen, "feed: out of memory");
        f->last = p;
        f->last_cap = n;
    }
    memcpy(f->last, out, sizeof(float) * (size_t)(n * s->d_act));
    f->last_n = n;
    return 0;
}

/* Evaluation reads the latest rows again, cyclically: drawing from the function would move the
 * stream that is to be replayed. */
static int feed_sample(saefw_source *s, float *out, int64_t n, char *err, size_t errlen) {
    feed_src *f = s->impl;
    if (f->last_n == 0)
        return saefw_errf(err, errlen, "an ordered feed has given no rows yet to evaluate on: give an eval_source");
    for (int64_t r = 0; r < n; r++)
        memcpy(out + r * s->d_act, f->last + (r % f->last_n) * s->d_act, sizeof(float) * (size_t)s->d_act);
    return 0;
}

static void feed_destroy(saefw_source *s) {
    feed_src *f = s->impl;
    if (f && f->destroy_ud) f->destroy_ud(f->ud);
    if (f) free(f->last);
    free(f);
    free(s);
}

int saefw_source_feed(int64_t d_act, int (*fn)(void *ud, float *out, int64_t n, char *err, size_t errlen), void *ud,
                      void (*destroy_ud)(void *ud), saefw_source **out, char *err, size_t errlen) {
    *out = NULL;
    if (d_act <= 0 || !fn) return saefw_errf(err, errlen, "feed: d_act must be positive and fn given");
    saefw_source *s = saefw_calloc(1, sizeof *s, err, errlen);
    feed_src *f = s ? saefw_calloc(1, sizeof *f, err, errlen) : NULL;
    if (!f) {
        free(s);
        return -1;
    }
    f->fn = fn;
    f->ud = ud;
    f->destroy_ud = destroy_ud;
    s->kind = "feed";
    s->d_act = d_act;
    s->next = feed_next;
    s->sample = feed_sample;
    s->destroy = feed_destroy;
    s->impl = f;
    s->in_order = 1;
    *out = s;
    return 0;
}

/* ---- buffer ---- */

size_t saefw_buffer_bytes(const saefw_buffer *b) {
    if (b->in_order) return 0;
    return (size_t)(b->rows * b->d) * (b->dtype == SAEFW_BUF_BF16 ? 2 : 4);
}

typedef uint32_t bf16_u4 __attribute__((vector_size(16)));
typedef uint16_t bf16_h4 __attribute__((vector_size(8)));

/* saefw_f32_to_bf16 over n values, four at a time: the same bits (round to nearest even, a NaN kept a
 * quiet NaN), in SSE2 vector operations instead of a call per value. */
static void f32_to_bf16_row(const float *src, uint16_t *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        bf16_u4 u;
        memcpy(&u, src + i, sizeof u);
        const bf16_u4 rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        const bf16_u4 quiet = (u >> 16) | 0x0040u;
        const bf16_u4 nan = (bf16_u4)((u & 0x7fffffffu) > 0x7f800000u);
        const bf16_h4 h = __builtin_convertvector((nan & quiet) | (~nan & rounded), bf16_h4);
        memcpy(dst + i, &h, sizeof h);
    }
    for (; i < n; i++) dst[i] = saefw_f32_to_bf16(src[i]);
}

/* The staged rows [begin, end) written to their places in the buffer (logical row r0 + k). */
typedef struct {
    saefw_buffer *b;
    int64_t r0;
} stage_ctx;

static void stage_rows_out(void *vc, int64_t begin, int64_t end) {
    const stage_ctx *c = vc;
    const saefw_buffer *b = c->b;
    for (int64_t k = begin; k < end; k++) {
        const int64_t phys = b->perm[c->r0 + k];
        const float *src = b->stage + k * b->d;
        if (b->dtype == SAEFW_BUF_BF16) f32_to_bf16_row(src, (uint16_t *)b->data + phys * b->d, b->d);
        else memcpy((float *)b->data + phys * b->d, src, sizeof(float) * (size_t)b->d);
    }
}

/* Fill logical rows [from, to) from the source, in pieces of stage_rows. With `stoppable`, a SIGINT
 * or SIGTERM before a piece returns 1 with err saying how far it got (the rows written stay). */
static int buffer_fill(saefw_buffer *b, int64_t from, int64_t to, int stoppable, char *err, size_t errlen) {
    const char *what = b->first ? "buffer fill" : "buffer refill";
    for (int64_t r = from; r < to;) {
        int64_t n = to - r < b->stage_rows ? to - r : b->stage_rows;
        if (stoppable && saefw_stop_requested()) {
            char msg[96];
            snprintf(msg, sizeof msg, "%s (%lld of %lld rows made)", what, (long long)(r - from),
                     (long long)(to - from));
            saefw_stop_errf(err, errlen, msg);
            return 1;
        }
        if (b->src->next(b->src, b->stage, n, err, errlen) != 0) return -1;
        if (!b->first) saefw_slow_point("refill");
        stage_ctx c = {b, r};
        saefw_parallel_for(n, stage_rows_out, &c);
        r += n;
    }
    return 0;
}

/* 0: filled and reshuffled; 1: stopped by a signal (a refill: with the source rewound); -1: error. */
static int buffer_refresh(saefw_buffer *b, char *err, size_t errlen) {
    const double t0 = saefw_now();
    const int first = b->first;
    int64_t upto = first ? b->rows : b->rows / 2;
    /* A refill may stop only where the source can go back to where it began. */
    const int stoppable = first || (b->src->mark && b->src->rewind);
    if (!first && stoppable && b->src->mark(b->src, err, errlen) != 0) return -1;
    int rc = buffer_fill(b, 0, upto, stoppable, err, errlen);
    if (rc == 1 && !first) {
        /* The rows written had been read or were to be dropped (saefw_buffer_next puts its batch
         * back); what the source gave for them it gives again. */
        char rerr[256];
        if (b->src->rewind(b->src, rerr, sizeof rerr) != 0) return saefw_errf(err, errlen, "buffer refill: %s", rerr);
    }
    if (rc != 0) return rc;
    b->first = 0;
    if (b->src->idle) b->src->idle(b->src);
    saefw_fault_point("refill");
    saefw_rng_shuffle(&b->rng, b->perm, b->rows);
    b->pointer = 0;
    b->refills++;
    *(first ? &b->fill_seconds : &b->refill_seconds) += saefw_now() - t0;
    return 0;
}

int saefw_buffer_init(saefw_buffer *b, saefw_source *src, int64_t rows, int64_t batch, saefw_buffer_dtype dtype,
                      uint64_t seed, char *err, size_t errlen) {
    memset(b, 0, sizeof *b);
    if (batch <= 0) return saefw_errf(err, errlen, "buffer: batch_size must be positive");
    /* Sizes whose bytes (8 per value at most, with the order) would not fit in an int64 cannot be meant. */
    const int64_t most = (INT64_MAX / 8) / (src->d_act > 0 ? src->d_act : 1);
    if (batch > most || (!src->in_order && rows > most))
        return saefw_errf(err, errlen, "buffer: %s = %lld rows of width %lld is more than memory can address",
                          batch > most ? "batch_size" : "size", (long long)(batch > most ? batch : rows),
                          (long long)src->d_act);
    if (src->in_order) {
        b->src = src;
        b->rows = batch;
        b->d = src->d_act;
        b->batch = batch;
        b->take = batch;
        b->rows_total = batch;
        b->dtype = SAEFW_BUF_F32;
        b->in_order = 1;
        return 0;
    }
    if (rows < 4 * batch)
        return saefw_errf(err, errlen, "buffer: %lld rows is too small for batch_size %lld (need at least 4 batches)",
                          (long long)rows, (long long)batch);
    /* Each rank holds its share of the rows and takes its share of each batch (rank 0 of one: all). */
    int64_t lo, own_rows, own_take;
    saefw_dist_share(rows, &lo, &own_rows);
    saefw_dist_share(batch, &lo, &own_take);
    if (own_take == 0)
        return saefw_errf(err, errlen, "buffer: batch_size %lld is smaller than the %d ranks (each rank needs a row)",
                          (long long)batch, saefw_dist_size());
    b->src = src;
    b->rows = own_rows;
    b->rows_total = rows;
    b->d = src->d_act;
    b->batch = batch;
    b->take = own_take;
    b->dtype = dtype;
    b->first = 1;
    /* Staging in small pieces: the rows written do not depend on the piece size, and a model batch of
     * the seed's size (65536 rows) would otherwise stage 512 MiB. */
    b->stage_rows = src->chunk_rows > 0 && src->chunk_rows < batch ? src->chunk_rows : batch;
    if (b->stage_rows > 512) b->stage_rows = 512;
    saefw_rng_seed(&b->rng, saefw_dist_rank_seed(seed) ^ 0x627566666572ULL);
    /* Before anything is allocated: a buffer that cannot fit is refused now, not after its fill. */
    const double need =
        (double)saefw_buffer_bytes(b) + 8.0 * (double)b->rows + 4.0 * (double)(b->stage_rows * b->d) + src->mem_bytes;
    char what[96];
    snprintf(what, sizeof what, "the activation buffer (%lld rows of %lld at %s)", (long long)b->rows, (long long)b->d,
             dtype == SAEFW_BUF_BF16 ? "bf16" : "f32");
    if (saefw_mem_check(what, need, err, errlen) != 0) {
        memset(b, 0, sizeof *b);
        return -1;
    }
    b->data = saefw_malloc(saefw_buffer_bytes(b), err, errlen);
    b->perm = b->data ? saefw_malloc(sizeof(int64_t) * (size_t)b->rows, err, errlen) : NULL;
    b->stage = b->perm ? saefw_malloc(sizeof(float) * (size_t)(b->stage_rows * b->d), err, errlen) : NULL;
    if (!b->stage) {
        saefw_buffer_free(b);
        return -1;
    }
    for (int64_t i = 0; i < b->rows; i++) b->perm[i] = i;
    saefw_stop_scope stop;
    saefw_stop_begin(&stop);
    int rc = buffer_refresh(b, err, errlen); /* a stop here (1) ends the fill with err said */
    saefw_stop_end(&stop);
    if (rc != 0) {
        saefw_buffer_free(b);
        return -1;
    }
    return 0;
}

int saefw_buffer_next(saefw_buffer *b, float *out, char *err, size_t errlen) {
    if (b->in_order) return b->src->next(b->src, out, b->batch, err, errlen);
    for (int64_t k = 0; k < b->take; k++) {
        int64_t phys = b->perm[b->pointer + k];
        if (b->dtype == SAEFW_BUF_BF16) {
            const uint16_t *src = (const uint16_t *)b->data + phys * b->d;
            for (int64_t i = 0; i < b->d; i++) out[k * b->d + i] = saefw_bf16_to_f32(src[i]);
        } else {
            memcpy(out + k * b->d, (const float *)b->data + phys * b->d, sizeof(float) * (size_t)b->d);
        }
    }
    b->pointer += b->take;
    if (b->pointer <= b->rows / 2 - b->take) return 0;
    int rc = buffer_refresh(b, err, errlen);
    if (rc == 1) {
        /* Stopped: the batch goes back to its rows, which the refill may have written over (bf16 rows
         * round-trip exactly), and is read again by the next call. */
        b->pointer -= b->take;
        for (int64_t k = 0; k < b->take; k++) {
            int64_t phys = b->perm[b->pointer + k];
            const float *src = out + k * b->d;
            if (b->dtype == SAEFW_BUF_BF16) {
                uint16_t *dst = (uint16_t *)b->data + phys * b->d;
                for (int64_t i = 0; i < b->d; i++) dst[i] = saefw_f32_to_bf16(src[i]);
            } else {
                memcpy((float *)b->data + phys * b->d, src, sizeof(float) * (size_t)b->d);
            }
        }
    }
    return rc == 0 ? 0 : -1;
}

void saefw_buffer_free(saefw_buffer *b) {
    free(b->data);
    free(b->perm);
    free(b->stage);
    memset(b, 0, sizeof *b);
}

int saefw_buffer_save(const saefw_buffer *b, saefw_state_out *st, char *err, size_t errlen) {
    if (b->in_order)
        return saefw_state_put_i64(st, "batch", b->batch, err, errlen) != 0 ||
                       saefw_state_put_i64(st, "in_order", 1, err, errlen) != 0
                   ? -1
                   : 0;
    int64_t dshape[2] = {b->rows, b->d}, pshape[1] = {b->rows};
    if (saefw_state_put(st, "data", b->dtype == SAEFW_BUF_BF16 ? SAEFW_DT_BF16 : SAEFW_DT_F32, 2, dshape, b->data, err,
                        errlen) != 0 ||
        saefw_state_put(st, "perm", SAEFW_DT_I64, 1, pshape, b->perm, err, errlen) != 0 ||
        saefw_state_put_i64(st, "pointer", b->pointer, err, errlen) != 0 ||
        saefw_state_put_i64(st, "first", b->first, err, errlen) != 0 ||
        saefw_state_put_i64(st, "refills", b->refills, err, errlen) != 0 ||
        saefw_state_put_i64(st, "batch", b->batch, err, errlen) != 0)
        return -1;
    return saefw_state_put_rng(st, "rng", &b->rng, err, errlen);
}

int saefw_buffer_load(saefw_buffer *b, saefw_state_in *st, char *err, size_t errlen) {
    int64_t pointer = 0, first = 0, refills = 0, batch = 0;
    if (saefw_state_get_i64(st, "batch", &batch, err, errlen) != 0) return -1;
    if (batch != b->batch)
        return saefw_errf(err, errlen, "training state: the buffer was saved with batch_size %lld, this run uses %lld",
                          (long long)batch, (long long)b->batch);
    if (b->in_order) {
        int64_t in_order = 0;
        if (saefw_state_get_i64(st, "in_order", &in_order, err, errlen) != 0 || in_order != 1)
            return saefw_errf(err, errlen,
                              "training state: the run was saved with a shuffling buffer, this one is an ordered feed");
        return 0;
    }
    if (saefw_state_get(st, "data", b->dtype == SAEFW_BUF_BF16 ? SAEFW_DT_BF16 : SAEFW_DT_F32, b->rows * b->d, b->data,
                        err, errlen) != 0 ||
        saefw_state_get(st, "perm", SAEFW_DT_I64, b->rows, b->perm, err, errlen) != 0 ||
        saefw_state_get_i64(st, "pointer", &pointer, err, errlen) != 0 ||
        saefw_state_get_i64(st, "first", &first, err, errlen) != 0 ||
        saefw_state_get_i64(st, "refills", &refills, err, errlen) != 0 ||
        saefw_state_get_rng(st, "rng", &b->rng, err, errlen) != 0)
        return -1;
    for (int64_t i = 0; i < b->rows; i++)
        if (b->perm[i] < 0 || b->perm[i] >= b->rows)
            return saefw_errf(err, errlen, "training state: the buffer order is damaged");
    if (pointer < 0 || pointer > b->rows) return saefw_errf(err, errlen, "training state: bad buffer position");
    b->pointer = pointer;
    b->first = (int)first;
    b->refills = refills;
    return 0;
}
