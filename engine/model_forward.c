/* The model host's fp32 forward pass: the work space, the layers (LayerNorm, attention, GELU, the
 * blocked products) and the forward over a batch with capture and intervention at hook sites and the
 * next-token loss. */
#include <cblas.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "parallel.h"
#include "sae_kernels.h"
#include "util.h"

/* Tokens per forward chunk and floats per logits chunk (gelu-1l: ~170 rows of 48262). */
#define CHUNK_TOKENS 2048
#define LOGIT_CHUNK_FLOATS (8 << 20)

/* ------------------------------------------------------------------------------------------------
 * Work space */

struct saefw_model_work {
    size_t bytes;        /* of the arrays below */
    saefw_model_cfg cfg; /* the model it was sized for */
    int64_t max_seq;
    int64_t chunk_seqs;  /* sequences per forward chunk */
    int64_t vocab_block; /* logits columns per block when the caller takes no logits */
    float *resid;        /* [R, d_model], R = chunk_seqs * max_seq: the residual stream */
    float *ln;           /* [R, d_model]: LayerNorm output */
    float *qkv;          /* [R, 3*H*Dh] */
    float *z;            /* [R, H*Dh] */
    float *out;          /* [R, d_model]: attention or MLP output */
    float *mlp;          /* [R, d_mlp] */
    float *logits;       /* [R, vocab_block] */
    float *lse_max;      /* [R]: running max of each row's logits over the vocabulary blocks so far */
    double *lse_sum;     /* [R]: running sum of exp(logit - lse_max) */
    float *lse_tgt;      /* [R]: the target's logit, once its block has come */
};

void saefw_model_work_free(saefw_model_work *w) {
    if (!w) return;
    free(w->resid);
    free(w->ln);
    free(w->qkv);
    free(w->z);
    free(w->out);
    free(w->mlp);
    free(w->logits);
    free(w->lse_max);
    free(w->lse_sum);
    free(w->lse_tgt);
    free(w);
}

int saefw_model_work_alloc(const saefw_model *m, int64_t max_batch, int64_t max_seq, saefw_model_work **out, char *err,
                           size_t errlen) {
    *out = NULL;
    const saefw_model_cfg *c = &m->cfg;
    if (max_batch < 1) return saefw_errf(err, errlen, "model work: max_batch %" PRId64 " < 1", max_batch);
    if (max_seq < 1 || max_seq > c->n_ctx)
        return saefw_errf(err, errlen, "model work: max_seq %" PRId64 " outside [1, n_ctx = %d]", max_seq, c->n_ctx);
    saefw_model_work *w = saefw_calloc(1, sizeof *w, err, errlen);
    if (!w) return -1;
    w->cfg = *c;
    w->max_seq = max_seq;
    w->chunk_seqs = CHUNK_TOKENS / max_seq;
    if (w->chunk_seqs < 1) w->chunk_seqs = 1;
    if (w->chunk_seqs > max_batch) w->chunk_seqs = max_batch;
    size_t R = (size_t)(w->chunk_seqs * max_seq);
    /* The loss alone goes through the vocabulary in blocks of vocab_block columns for all R rows (so
     * that W_U streams through once per chunk), keeping a running log-sum-exp per row. */
    w->vocab_block = LOGIT_CHUNK_FLOATS / (int64_t)R;
    if (w->vocab_block < 1) w->vocab_block = 1;
    if (w->vocab_block > c->d_vocab) w->vocab_block = c->d_vocab;
    size_t dm = (size_t)c->d_model, hd = (size_t)c->n_heads * (size_t)c->d_head;
    w->resid = saefw_malloc(sizeof(float) * R * dm, err, errlen);
    w->ln = w->resid ? saefw_malloc(sizeof(float) * R * dm, err, errlen) : NULL;
    w->qkv = w->ln ? saefw_malloc(sizeof(float) * R * 3 * hd, err, errlen) : NULL;
    w->z = w->qkv ? saefw_malloc(sizeof(float) * R * hd, err, errlen) : NULL;
    w->out = w->z ? saefw_malloc(sizeof(float) * R * dm, err, errlen) : NULL;
    w->mlp = w->out ? saefw_malloc(sizeof(float) * R * (size_t)c->d_mlp, err, errlen) : NULL;
    w->logits = w->mlp ? saefw_malloc(sizeof(float) * R * (size_t)w->vocab_block, err, errlen) : NULL;
    w->lse_max = w->logits ? saefw_malloc(sizeof(float) * R, err, errlen) : NULL;
    w->lse_sum = w->lse_max ? saefw_malloc(sizeof(double) * R, err, errlen) : NULL;
    w->lse_tgt = w->lse_sum ? saefw_malloc(sizeof(float) * R, err, errlen) : NULL;
    if (!w->lse_tgt) {
        saefw_model_work_free(w);
        return -1;
    }
    w->bytes =
        sizeof(float) * R * (3 * dm + 4 * hd + (size_t)c->d_mlp + (size_t)w->vocab_block + 2) + sizeof(double) * R;
    *out = w;
    return 0;
}

size_t saefw_model_work_bytes(const saefw_model_work *w) { return w ? w->bytes : 0; }

/* ------------------------------------------------------------------------------------------------
 * Layers: plain functions over flat arrays, outputs first, dimensions last. */

/* Every layer runs on saefw_parallel_for over fixed splits, and the products on fixed grids of
 * single-threaded OpenBLAS calls (saefw_linear_blocks): the activations do not depend on the thread
 * count, and no OpenBLAS thread spins between layers. */

/* e^d, eight at a time, for d <= 0: 2^k e^r with r in [-ln2/2, ln2/2] and e^r by its Taylor series to
 * r^6 (relative error below 2e-7); 0 below -87 (where float32's exp leaves the normal range). */
static inline void exp_nonpos_v8(v8 *io) {
    v8 d = *io;
    const v8i under = d < -87.0f;
    const v8 floor_v = (v8){0} - 87.0f;
    d = (v8)(((v8i)d & ~under) | ((v8i)floor_v & under));
    const v8 shifter = (v8){0} + 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    const v8 kf = (d * 1.44269504f + shifter) - shifter;
    const v8 r = (d - kf * 0.693359375f) - kf * -2.12194440e-4f;
    v8 p = (v8){0} + (1.0f / 720.0f);
    p = p * r + (1.0f / 120.0f);
    p = p * r + (1.0f / 24.0f);
    p = p * r + (1.0f / 6.0f);
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const v8i bits = (__builtin_convertvector(kf, v8i) + 127) << 23;
    *io = (v8)((v8i)(p * (v8)bits) & ~under);
}

/* out [n, k_out] = in [n, k_in] @ W [k_in, k_out] + bias [k_out] (bias may be NULL); out's rows are
 * ld_out apart. */
static void linear(float *out, const float *in, const float *W, const float *bias, int64_t n, int64_t k_in,
                   int64_t k_out, int64_t ld_out) {
    saefw_linear_blocks(n, k_out, k_in, in, k_in, W, k_out, bias, out, ld_out);
}

typedef struct {
    float *out;
    const float *in, *w, *b;
    int64_t d;
    float eps;
} ln_job;

/* Four floats or doubles, read or written at any float's alignment. */
typedef float v4 __attribute__((vector_size(16)));
typedef float v4u __attribute__((vector_size(16), aligned(4), may_alias));
typedef double v4d __attribute__((vector_size(32)));

/* One row: y = (x - mean) / sqrt(biased var + eps) * w + b, the statistics in double over eight lanes
 * (a fixed order for a given d); without w, the normalized value alone (TransformerLens's
 * hook_normalized). */
SAEFW_KERNEL static void layernorm_row(float *restrict y, const float *restrict x, const float *restrict w,
                                       const float *restrict b, int64_t d, float eps) {
    v4d s0 = {0}, s1 = {0};
    int64_t i = 0;
    for (; i + 8 <= d; i += 8) {
        s0 += __builtin_convertvector(*(const v4u *)(x + i), v4d);
        s1 += __builtin_convertvector(*(const v4u *)(x + i + 4), v4d);
    }
    const int64_t body = i;
    double s = ((s0[0] + s1[0]) + (s0[1] + s1[1])) + ((s0[2] + s1[2]) + (s0[3] + s1[3]));
    for (; i < d; i++) s += x[i];
    const double mean = s / (double)d;
    const v4d mv = (v4d){0} + mean;
    v4d q0 = {0}, q1 = {0};
    for (i = 0; i < body; i += 8) {
        const v4d a = __builtin_convertvector(*(const v4u *)(x + i), v4d) - mv;
        const v4d c = __builtin_convertvector(*(const v4u *)(x + i + 4), v4d) - mv;
        q0 += a * a;
        q1 += c * c;
    }
    double v = ((q0[0] + q1[0]) + (q0[1] + q1[1])) + ((q0[2] + q1[2]) + (q0[3] + q1[3]));
    for (i = body; i < d; i++) v += ((double)x[i] - mean) * ((double)x[i] - mean);
    const double inv = 1.0 / sqrt(v / (double)d + (double)eps);
    const v4d iv = (v4d){0} + inv;
    for (i = 0; i + 4 <= d; i += 4) {
        const v4 n = __builtin_convertvector((__builtin_convertvector(*(const v4u *)(x + i), v4d) - mv) * iv, v4);
        *(v4u *)(y + i) = w ? n * *(const v4u *)(w + i) + *(const v4u *)(b + i) : n;
    }
    for (; i < d; i++) {
        const float n = (float)(((double)x[i] - mean) * inv);
        y[i] = w ? n * w[i] + b[i] : n;
    }
}

static void layernorm_rows(void *ctx, int64_t r0, int64_t r1) {
    const ln_job *j = ctx;
    for (int64_t r = r0; r < r1; r++) layernorm_row(j->out + r * j->d, j->in + r * j->d, j->w, j->b, j->d, j->eps);
}

static void layernorm(float *out, const float *in, const float *w, const float *b, int64_t n, int64_t d, float eps) {
    ln_job j = {out, in, w, b, d, eps};
    saefw_parallel_for(n, layernorm_rows, &j);
}

typedef struct {
    float *z;
    const float *qkv;
    float *pattern; /* [bs, H, T, T] or NULL */
    int64_t T, H, Dh, max_seq;
    int failed; /* a part could not allocate its scratch */
} att_job;

/* a [T] = softmax of its first n entries, then zeros: exp eight at a time (exp_nonpos_v8), the last
 * few zero-padded, the sum over eight float lanes (at most T / 8 terms each) added in double. */
SAEFW_KERNEL static void causal_softmax_row(float *restrict a, int64_t n, int64_t T) {
    float mx = a[0];
    for (int64_t c = 1; c < n; c++) mx = a[c] > mx ? a[c] : mx;
    const v8 mv = (v8){0} + mx;
    v8 lane = {0};
    int64_t c = 0;
    for (; c + 8 <= n; c += 8) {
        v8 e = *(const v8u *)(a + c) - mv;
        exp_nonpos_v8(&e);
        *(v8u *)(a + c) = e;
        lane += e;
    }
    if (c < n) {
        v8 e = (v8){0} - 100.0f; /* padding: exp gives 0 */
        for (int64_t k = 0; c + k < n; k++) e[k] = a[c + k] - mx;
        exp_nonpos_v8(&e);
        for (int64_t k = 0; c + k < n; k++) a[c + k] = e[k];
        lane += e;
    }
    const double sum = (((double)lane[0] + lane[1]) + ((double)lane[2] + lane[3])) +
                       (((double)lane[4] + lane[5]) + ((double)lane[6] + lane[7]));
    const float inv = (float)(1.0 / sum);
    for (c = 0; c < n; c++) a[c] *= inv;
    for (; c < T; c++) a[c] = 0.0f;
}

/* Sequence-heads [p0, p1) (p = b * H + h): z = causal softmax(q k^T / sqrt(Dh)) v. */
static void attention_heads(void *ctx, int64_t p0, int64_t p1) {
    att_job *j = ctx;
    const int64_t T = j->T, H = j->H, Dh = j->Dh, hd = H * Dh, ld = 3 * hd;
    const float scale = (float)(1.0 / sqrt((double)Dh));
    float *att = malloc(sizeof(float) * (size_t)(T * T));
    if (!att) {
        __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    for (int64_t p = p0; p < p1; p++) {
        const int64_t b = p / H, h = p % H;
        const float *base = j->qkv + b * T * ld;
        const float *q = base + h * Dh, *k = base + hd + h * Dh, *v = base + 2 * hd + h * Dh;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)T, (int)Dh, scale, q, (int)ld, k, (int)ld,
                    0.0f, att, (int)T);
        for (int64_t i = 0; i < T; i++) causal_softmax_row(att + i * T, i + 1, T);
        if (j->pattern) memcpy(j->pattern + p * T * T, att, sizeof(float) * (size_t)(T * T));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)Dh, (int)T, 1.0f, att, (int)T, v, (int)ld,
                    0.0f, j->z + b * T * hd + h * Dh, (int)hd);
    }
    free(att);
}

/* z [bs*T, H*Dh] from qkv [bs*T, 3*H*Dh], one (sequence, head) at a time on the pool, each on
 * single-threaded OpenBLAS; the pattern [bs, H, T, T] too when pattern is not NULL. Returns -1 when
 * out of memory. */
static int attention(float *z, float *pattern, const float *qkv, int64_t bs, int64_t T, int64_t H, int64_t Dh,
                     char *err, size_t errlen) {
    att_job j = {z, qkv, pattern, T, H, Dh, T, 0};
    saefw_parallel_for_blas1(bs * H, attention_heads, &j);
    return j.failed ? saefw_errf(err, errlen, "forward: out of memory for the attention pattern") : 0;
}

/* GELU of eight values at p: 0.5 x (1 + erf(x / sqrt 2)), with erf(a) for a = |x| / sqrt 2 by
 * Abramowitz and Stegun 7.1.26: 1 - erf(a) = t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) e^(-a^2),
 * t = 1 / (1 + p a), at most 1.5e-7 from erf in exact arithmetic. 1 + erf(x) is that product for
 * x < 0 (no cancellation in the negative tail) and 2 minus it otherwise. */
static inline void gelu_v8(float *p) {
    const v8 x = *(const v8u *)p;
    const v8 a = (v8)((v8i)(x * 0.70710678118654752f) & 0x7fffffff);
    const v8 t = 1.0f / (1.0f + 0.3275911f * a);
    const v8 poly =
        ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t;
    v8 e = -(a * a);
    exp_nonpos_v8(&e);
    const v8 erfc_a = poly * e;
    const v8i neg = x < 0.0f;
    const v8 one_plus_erf = (v8)(((v8i)erfc_a & neg) | ((v8i)(2.0f - erfc_a) & ~neg));
    *(v8u *)p = 0.5f * x * one_plus_erf;
}

/* x = GELU(x) in place; the last few go through the same eight-wide code (zero-padded), so a value's
 * result does not depend on where a thread's range starts. */
SAEFW_KERNEL void saefw_gelu_inplace(float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) gelu_v8(x + i);
    if (i == n) return;
    float tail[8] = {0};
    for (int64_t k = 0; i + k < n; k++) tail[k] = x[i + k];
    gelu_v8(tail);
    for (int64_t k = 0; i + k < n; k++) x[i + k] = tail[k];
}

typedef struct {
    float *y;
    const float *x;
} vec_job;

static void gelu_range(void *ctx, int64_t i0, int64_t i1) { saefw_gelu_inplace(((vec_job *)ctx)->y + i0, i1 - i0); }

static void gelu(float *x, int64_t n) {
    vec_job j = {x, NULL};
    saefw_parallel_for(n, gelu_range, &j);
}

static void add_range(void *ctx, int64_t i0, int64_t i1) {
    const vec_job *j = ctx;
    for (int64_t i = i0; i < i1; i++) j->y[i] += j->x[i];
}

static void add_inplace(float *y, const float *x, int64_t n) {
    vec_job j = {y, x};
    saefw_parallel_for(n, add_range, &j);
}

typedef struct {
    float *resid;
    const float *W_E, *W_pos;
    const int32_t *tokens; /* the chunk's first token */
    int64_t T, dm;
} embed_job;

static void embed_rows(void *ctx, int64_t r0, int64_t r1) {
    const embed_job *j = ctx;
    for (int64_t r = r0; r < r1; r++) {
        const float *e = j->W_E + (int64_t)j->tokens[r] * j->dm, *p = j->W_pos + (r % j->T) * j->dm;
        float *x = j->resid + r * j->dm;
        for (int64_t i = 0; i < j->dm; i++) x[i] = e[i] + p[i];
    }
}

/* Folds logits x [n] into a row's running log-sum-exp (*mx, *sum): the sum goes through eight float
 * lanes, emptied into doubles every 256 entries, in a fixed order; exp(x - max) eight at a time
 * (exp_nonpos_v8). */
SAEFW_KERNEL static void lse_fold(float *restrict x, const float *restrict bias, int64_t n, float *mx, double *sum) {
    float m = *mx;
    if (bias)
        for (int64_t i = 0; i < n; i++) x[i] += bias[i];
    for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    double s = *sum;
    if (m > *mx && *mx > -INFINITY) s *= exp((double)*mx - (double)m);
    double wide[8] = {0};
    v8 lane = {0};
    int64_t i = 0;
    const v8 mv = (v8){0} + m;
    for (; i + 8 <= n; i += 8) {
        v8 e = *(const v8u *)(x + i) - mv;
        exp_nonpos_v8(&e);
        lane += e;
        if ((i & 255) == 248) {
            for (int k = 0; k < 8; k++) wide[k] += lane[k];
            lane = (v8){0};
        }
    }
    for (int k = 0; k < 8; k++) wide[k] += lane[k];
    double tail = 0;
    for (; i < n; i++) tail += exp((double)x[i] - (double)m);
    s += (((wide[0] + wide[1]) + (wide[2] + wide[3])) + ((wide[4] + wide[5]) + (wide[6] + wide[7]))) + tail;
    *mx = m;
    *sum = s;
}

typedef struct {
    saefw_model_work *w;
    float *logits;     /* [n, ld], columns [v0, v0 + nb) of the vocabulary */
    const float *bias; /* b_U from column v0, added here (NULL: already in the logits) */
    int64_t ld, v0, nb, V, row0, T;
    const int32_t *tokens;
} lse_job;

/* Rows [r0, r1): fold one block of columns into the running log-sum-exp; keep the target's logit. A
 * sequence's last position has no target and is skipped. */
static void lse_rows(void *ctx, int64_t r0, int64_t r1) {
    const lse_job *j = ctx;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t g = j->row0 + r;
        if (g % j->T == j->T - 1) continue;
        if (j->v0 == 0) {
            j->w->lse_max[r] = -INFINITY;
            j->w->lse_sum[r] = 0;
        }
        float *x = j->logits + r * j->ld;
        lse_fold(x, j->bias, j->nb, &j->w->lse_max[r], &j->w->lse_sum[r]);
        const int64_t tg = j->tokens[g + 1];
        if (tg >= j->v0 && tg < j->v0 + j->nb) j->w->lse_tgt[r] = x[tg - j->v0];
    }
}

/* Sum over the chunk's n rows of -log_softmax(row)[next token], skipping each sequence's last
 * position, from the running log-sum-exps; rows summed in order. */
static double nll_total(const saefw_model_work *w, int64_t n, int64_t row0, int64_t T) {
    double total = 0;
    for (int64_t r = 0; r < n; r++)
        if ((row0 + r) % T != T - 1) total += log(w->lse_sum[r]) + (double)w->lse_max[r] - (double)w->lse_tgt[r];
    return total;
}

/* ------------------------------------------------------------------------------------------------
 * Forward */

typedef struct {
    const saefw_forward_opts *o;
    int64_t row0; /* first row of this chunk in the batch */
    int64_t rows;
    char *err;
    size_t errlen;
} hook_ctx;

static int same_hook(saefw_hook a, saefw_hook_kind kind, int layer) { return a.kind == kind && a.layer == layer; }

/* The whole-batch output of the capture at (kind, layer), or NULL if that site is not captured
 * (check_opts has made sure a site is captured at most once). */
static float *capture_out(const saefw_forward_opts *o, saefw_hook_kind kind, int layer) {
    if (o->capture && same_hook(*o->capture, kind, layer)) return o->capture_out;
    for (int i = 0; i < o->n_captures; i++)
        if (same_hook(o->captures[i].hook, kind, layer)) return o->captures[i].out;
    return NULL;
}

/* 1 when the intervention acts at (kind, layer). */
static int intervenes(const saefw_forward_opts *o, saefw_hook_kind kind, int layer) {
    return o->intervention && o->intervention->mode != SAEFW_INTERVENE_NONE &&
           same_hook(o->intervention->hook, kind, layer);
}

/* 1 when the forward stops after capturing (kind, layer). */
static int stop_here(const saefw_forward_opts *o, saefw_hook_kind kind, int layer) {
    return o->stop_after_capture && same_hook(*o->capture, kind, layer);
}

/* Capture the LayerNorm's normalized input (before gain and bias) of in [rows, d]: computed only
 * when captured. Returns 1 to stop, else 0. */
static int at_ln_hook(const hook_ctx *c, saefw_hook_kind kind, int layer, const float *in, int64_t d, float eps) {
    float *dst = capture_out(c->o, kind, layer);
    if (!dst) return 0;
    layernorm(dst + c->row0 * d, in, NULL, NULL, c->rows, d, eps);
    return stop_here(c->o, kind, layer);
}

/* Capture queries, keys and values from qkv [rows, 3*hd] (the column blocks of W_qkv) as [rows, hd]
 * each. Returns 1 to stop, else 0. */
static int at_qkv_hooks(const hook_ctx *c, int layer, const float *qkv, int64_t hd) {
    static const saefw_hook_kind kinds[3] = {SAEFW_HOOK_ATTN_Q, SAEFW_HOOK_ATTN_K, SAEFW_HOOK_ATTN_V};
    int stop = 0;
    for (int s = 0; s < 3; s++) {
        float *dst = capture_out(c->o, kinds[s], layer);
        if (!dst) continue;
        for (int64_t r = 0; r < c->rows; r++)
            memcpy(dst + (c->row0 + r) * hd, qkv + r * 3 * hd + s * hd, sizeof(float) * (size_t)hd);
        stop |= stop_here(c->o, kinds[s], layer);
    }
    return stop;
}

/* Capture, then intervene, at hook (kind, layer) on acts [rows, width]. Returns 1 to stop the
 * chunk here, 0 to go on, -1 on error. */
static int at_hook(const hook_ctx *c, saefw_hook_kind kind, int layer, float *acts, int64_t width) {
    const saefw_forward_opts *o = c->o;
    float *dst = capture_out(o, kind, layer);
    if (dst) {
        /* The forward may have computed the acts in the capture itself (see the MLP below). */
        if (dst + c->row0 * width != acts)
            memcpy(dst + c->row0 * width, acts, sizeof(float) * (size_t)(c->rows * width));
        if (stop_here(o, kind, layer)) return 1;
    }
    const saefw_intervention *iv = o->intervention;
    if (!iv || iv->mode == SAEFW_INTERVENE_NONE || iv->hook.kind != kind || iv->hook.layer != layer) return 0;
    switch (iv->mode) {
    case SAEFW_INTERVENE_ZERO: memset(acts, 0, sizeof(float) * (size_t)(c->rows * width)); break;
    case SAEFW_INTERVENE_MEAN:
        for (int64_t r = 0; r < c->rows; r++) memcpy(acts + r * width, iv->mean, sizeof(float) * (size_t)width);
        break;
    case SAEFW_INTERVENE_REPLACE:
        if (iv->fn(iv->ud, acts, c->rows, width, c->err, c->errlen) != 0) {
            char nm[96];
            saefw_hook_name(iv->hook, nm, sizeof nm);
            return saefw_err_prefix(c->err, c->errlen, "intervention at %s", nm);
        }
        break;
    default: break;
    }
    return 0;
}

static int check_opts(const saefw_model *m, const saefw_forward_opts *o, int64_t T, char *err, size_t errlen) {
    if (o->capture) {
        if (saefw_model_check_hook(m, *o->capture, err, errlen) != 0) return -1;
        if (!o->capture_out) return saefw_errf(err, errlen, "forward: capture hook given without capture_out");
    }
    if (o->n_captures < 0 || (o->n_captures > 0 && !o->captures))
        return saefw_errf(err, errlen, "forward: %d captures without a list", o->n_captures);
    for (int i = 0; i < o->n_captures; i++) {
        const saefw_capture *cp = &o->captures[i];
        if (saefw_model_check_hook(m, cp->hook, err, errlen) != 0) return -1;
        char nm[96];
        saefw_hook_name(cp->hook, nm, sizeof nm);
        if (!cp->out) return saefw_errf(err, errlen, "forward: capture at %s without an output", nm);
        int twice = o->capture && same_hook(*o->capture, cp->hook.kind, cp->hook.layer);
        for (int k = 0; k < i; k++) twice |= same_hook(o->captures[k].hook, cp->hook.kind, cp->hook.layer);
        if (twice) return saefw_errf(err, errlen, "forward: %s is captured twice", nm);
    }
    if (o->stop_after_capture) {
        if (!o->capture) return saefw_errf(err, errlen, "forward: stop_after_capture without a capture hook");
        if (o->logits_out || o->loss_out)
            return saefw_errf(err, errlen, "forward: stop_after_capture leaves no logits or loss to return");
    }
    const saefw_intervention *iv = o->intervention;
    if (iv && iv->mode != SAEFW_INTERVENE_NONE) {
        if (saefw_model_check_hook(m, iv->hook, err, errlen) != 0) return -1;
        if (iv->mode == SAEFW_INTERVENE_MEAN && !iv->mean)
            return saefw_errf(err, errlen, "forward: mean ablation without a mean vector");
        if (iv->mode == SAEFW_INTERVENE_REPLACE && !iv->fn)
            return saefw_errf(err, errlen, "forward: replace intervention without a function");
        if (iv->mode != SAEFW_INTERVENE_ZERO && iv->mode != SAEFW_INTERVENE_MEAN && iv->mode != SAEFW_INTERVENE_REPLACE)
            return saefw_errf(err, errlen, "forward: unknown intervention mode %d", (int)iv->mode);
        if (iv->hook.kind > SAEFW_HOOK_RESID_POST && iv->hook.kind != SAEFW_HOOK_MLP_PRE &&
            iv->hook.kind != SAEFW_HOOK_ATTN_Z) {
            char nm[96];
            saefw_hook_name(iv->hook, nm, sizeof nm);
            return saefw_errf(err, errlen,
                              "forward: %s can be read but not intervened on (interventions: the residual and MLP "
                              "sites, mlp.hook_pre and attn.hook_z)",
                              nm);
        }
    }
    if (o->loss_out && T < 2)
        return saefw_errf(err, errlen, "forward: the loss needs at least 2 positions (T = %" PRId64 ")", T);
    return 0;
}

int saefw_model_forward(const saefw_model *m, saefw_model_work *w, const int32_t *tokens, int64_t B, int64_t T,
                        const saefw_forward_opts *o, char *err, size_t errlen) {
    static const saefw_forward_opts none;
    if (!o) o = &none;
    if (!m || !w || !tokens) return saefw_errf(err, errlen, "forward: NULL model, work or tokens");
    const saefw_model_cfg *c = &m->cfg;
    if (w->cfg.n_layers != c->n_layers || w->cfg.d_model != c->d_model || w->cfg.d_mlp != c->d_mlp ||
        w->cfg.d_head != c->d_head || w->cfg.n_heads != c->n_heads || w->cfg.d_vocab != c->d_vocab)
        return saefw_errf(err, errlen, "forward: the work space was sized for a different model");
    if (B < 1 || T < 1) return saefw_errf(err, errlen, "forward: empty batch [%" PRId64 ", %" PRId64 "]", B, T);
    if (T > c->n_ctx) return saefw_errf(err, errlen, "forward: sequence length %" PRId64 " > n_ctx %d", T, c->n_ctx);
    if (T > w->max_seq)
        return saefw_errf(err, errlen, "forward: sequence length %" PRId64 " > the work space's max_seq %" PRId64, T,
                          w->max_seq);
    for (int64_t i = 0; i < B * T; i++)
        if (tokens[i] < 0 || tokens[i] >= c->d_vocab)
            return saefw_errf(err, errlen,
                              "forward: token %" PRId32 " at [%" PRId64 ", %" PRId64 "] is outside [0, d_vocab = %d)",
                              tokens[i], i / T, i % T, c->d_vocab);
    if (check_opts(m, o, T, err, errlen) != 0) return -1;

    const int64_t dm = c->d_model, H = c->n_heads, Dh = c->d_head, hd = H * Dh, dmlp = c->d_mlp, V = c->d_vocab;
    const int need_logits = o->logits_out || o->loss_out;
    double nll = 0;
    for (int64_t b0 = 0; b0 < B; b0 += w->chunk_seqs) {
        /* A chunk is the unit of work a SIGINT or SIGTERM waits for (util.h's stop flag). */
        if (saefw_stop_requested()) return saefw_stop_errf(err, errlen, "model forward");
        int64_t bs = B - b0 < w->chunk_seqs ? B - b0 : w->chunk_seqs;
        int64_t n = bs * T, row0 = b0 * T;
        hook_ctx hc = {o, row0, n, err, errlen};
        embed_job ej = {w->resid, m->W_E, m->W_pos, tokens + row0, T, dm};
        saefw_parallel_for(n, embed_rows, &ej);
        int rc = 0;
        for (int L = 0; L < c->n_layers && rc == 0; L++) {
            const layer_weights *lw = &m->layers[L];
            if ((rc = at_hook(&hc, SAEFW_HOOK_RESID_PRE, L, w->resid, dm)) != 0) break;
            if ((rc = at_ln_hook(&hc, SAEFW_HOOK_LN1_NORMALIZED, L, w->resid, dm, c->ln_eps)) != 0) break;
            layernorm(w->ln, w->resid, lw->ln1_w, lw->ln1_b, n, dm, c->ln_eps);
            linear(w->qkv, w->ln, lw->W_qkv, lw->b_qkv, n, dm, 3 * hd, 3 * hd);
            if ((rc = at_qkv_hooks(&hc, L, w->qkv, hd)) != 0) break;
            float *pattern = capture_out(o, SAEFW_HOOK_ATTN_PATTERN, L);
            if (attention(w->z, pattern ? pattern + b0 * H * T * T : NULL, w->qkv, bs, T, H, Dh, err, errlen) != 0)
                return -1;
            if (pattern && (rc = stop_here(o, SAEFW_HOOK_ATTN_PATTERN, L)) != 0) break;
            if ((rc = at_hook(&hc, SAEFW_HOOK_ATTN_Z, L, w->z, hd)) != 0) break;
            linear(w->out, w->z, lw->W_O, lw->b_O, n, hd, dm, dm);
            add_inplace(w->resid, w->out, n * dm);
            if ((rc = at_hook(&hc, SAEFW_HOOK_RESID_MID, L, w->resid, dm)) != 0) break;
            if ((rc = at_ln_hook(&hc, SAEFW_HOOK_LN2_NORMALIZED, L, w->resid, dm, c->ln_eps)) != 0) break;
            layernorm(w->ln, w->resid, lw->ln2_w, lw->ln2_b, n, dm, c->ln_eps);
            /* A captured hook_post that no intervention changes is computed in the capture itself,
             * which saves copying it (R x d_mlp floats, the forward's largest array). */
            float *post = capture_out(o, SAEFW_HOOK_MLP_POST, L);
            float *mlp = post && !intervenes(o, SAEFW_HOOK_MLP_POST, L) ? post + row0 * dmlp : w->mlp;
            linear(mlp, w->ln, lw->W_in, lw->b_in, n, dm, dmlp, dmlp);
            if ((rc = at_hook(&hc, SAEFW_HOOK_MLP_PRE, L, mlp, dmlp)) != 0) break;
            gelu(mlp, n * dmlp);
            if ((rc = at_hook(&hc, SAEFW_HOOK_MLP_POST, L, mlp, dmlp)) != 0) break;
            linear(w->out, mlp, lw->W_out, lw->b_out, n, dmlp, dm, dm);
            if ((rc = at_hook(&hc, SAEFW_HOOK_MLP_OUT, L, w->out, dm)) != 0) break;
            add_inplace(w->resid, w->out, n * dm);
            rc = at_hook(&hc, SAEFW_HOOK_RESID_POST, L, w->resid, dm);
        }
        if (rc < 0) return -1;
        if (rc > 0) continue;
        if (at_ln_hook(&hc, SAEFW_HOOK_LN_FINAL_NORMALIZED, 0, w->resid, dm, c->ln_eps) != 0 || !need_logits) continue;
        layernorm(w->ln, w->resid, m->lnf_w, m->lnf_b, n, dm, c->ln_eps);
        if (o->logits_out) {
            float *lg = o->logits_out + row0 * V;
            linear(lg, w->ln, m->W_U, m->b_U, n, dm, V, V);
            if (o->loss_out) {
                lse_job j = {w, lg, NULL, V, 0, V, V, row0, T, tokens};
                saefw_parallel_for(n, lse_rows, &j);
                nll += nll_total(w, n, row0, T);
            }
        } else {
            for (int64_t v0 = 0; v0 < V; v0 += w->vocab_block) {
                if (saefw_stop_requested()) return saefw_stop_errf(err, errlen, "model loss");
                const int64_t nb = V - v0 < w->vocab_block ? V - v0 : w->vocab_block;
                /* b_U is added in the log-sum-exp pass rather than written first under the product. */
                saefw_linear_blocks(n, nb, dm, w->ln, dm, m->W_U + v0, V, NULL, w->logits, nb);
                lse_job j = {w, w->logits, m->b_U + v0, nb, v0, nb, V, row0, T, tokens};
                saefw_parallel_for(n, lse_rows, &j);
            }
            nll += nll_total(w, n, row0, T);
        }
    }
    if (o->loss_out) *o->loss_out = nll / (double)(B * (T - 1));
    return 0;
}
