/* The sparse path of the SAE step: the decoder product and the gradients of W_dec, W_enc and b_enc
 * computed from the active entries of the activations only, writing the same dense layouts as the
 * dense path (W_enc's gradient [d_in, d_sae], W_dec's [d_sae, d_out]).
 *
 * Every kernel walks the active entries by feature, one group of GROUP columns (of d_out or d_in) at
 * a time.
 * The batch-side operand of a group (x_hat, dxh or x_cent restricted to those columns, [B, GROUP])
 * is first copied into a contiguous slab that stays in the core's cache (in place, rows 8 KiB apart
 * would all fall into the same few cache sets); the feature-side rows (W_dec and the gradients)
 * stream through once. The decoder product splits the column groups between threads, the gradients
 * split the features; each output element is computed by one thread in a fixed order, so results do
 * not depend on the thread count. */
#include <string.h>

#include "parallel.h"
#include "sae_kernels.h"

#define GROUP SAEFW_SPARSE_GROUP
/* Features per block of the backward pass: W_enc's gradient is written 16 columns (64 bytes) at a time. */
#define FEAT_BLOCK 16

/* Slab rows are GROUP floats from a 2 MiB-aligned base, so whole v8 of them are aligned; feature-side
 * rows may not be: they are read through v8u. */
#define NV (GROUP / 8)
/* Rows ahead fetched early: feature rows (W_dec and gradient pieces), and the slab rows of entries
 * (scattered over the slab). */
#define PREFETCH 8

/* A piece of n_cols <= GROUP floats as NV vectors, zero-padded. */
static inline void load_piece(v8 *dst, const float *src, int64_t n_cols) {
    if (n_cols == GROUP) {
        for (int v = 0; v < NV; v++) dst[v] = *(const v8u *)(src + 8 * v);
        return;
    }
    float tmp[GROUP] = {0};
    for (int64_t c = 0; c < n_cols; c++) tmp[c] = src[c];
    for (int v = 0; v < NV; v++) dst[v] = *(const v8u *)(tmp + 8 * v);
}

static inline void store_piece(float *dst, const v8 *src, int64_t n_cols) {
    if (n_cols == GROUP) {
        for (int v = 0; v < NV; v++) *(v8u *)(dst + 8 * v) = src[v];
        return;
    }
    float tmp[GROUP];
    for (int v = 0; v < NV; v++) *(v8u *)(tmp + 8 * v) = src[v];
    for (int64_t c = 0; c < n_cols; c++) dst[c] = tmp[c];
}

/* The feature-side pieces are rows apart: no hardware prefetcher follows them. */
static inline void prefetch_piece(const float *p, int for_write) {
    for (int c = 0; c < GROUP; c += 16) {
        if (for_write) __builtin_prefetch(p + c, 1);
        else __builtin_prefetch(p + c, 0);
    }
}

static inline void prefetch_slab_row(const float *slab, const int32_t *rows, int64_t e, int64_t end) {
    if (e + PREFETCH < end) __builtin_prefetch(slab + (int64_t)rows[e + PREFETCH] * GROUP);
}

typedef float v4 __attribute__((vector_size(16)));
typedef double v4d __attribute__((vector_size(32)));

/* The gradients' sums over a feature's entries run in float over PARTIAL entries at a time, each
 * partial sum then joining a double total: a float sum over all of them (hundreds of rows) was several
 * times less exact than the dense path's blocked products (issue 19), a double sum of every entry
 * twice as slow. The runs depend on the entry order only, not on the thread count. */
#define PARTIAL 16

static inline void flush_partial(v4d *restrict tot, v8 *restrict acc) {
    for (int v = 0; v < NV; v++) {
        tot[2 * v] += __builtin_convertvector(__builtin_shufflevector(acc[v], acc[v], 0, 1, 2, 3), v4d);
        tot[2 * v + 1] += __builtin_convertvector(__builtin_shufflevector(acc[v], acc[v], 4, 5, 6, 7), v4d);
        acc[v] = (v8){0};
    }
}

static inline void total_to_float(v8 *restrict out, const v4d *restrict tot) {
    for (int v = 0; v < NV; v++) {
        const v4 lo = __builtin_convertvector(tot[2 * v], v4), hi = __builtin_convertvector(tot[2 * v + 1], v4);
        out[v] = __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7);
    }
}

/* The sums of four vectors' lanes at once, in a fixed order: halves, then pairs twice. */
static inline v4 hsum4(const v8 *t) {
    v4 u0 = __builtin_shufflevector(t[0], t[0], 0, 1, 2, 3) + __builtin_shufflevector(t[0], t[0], 4, 5, 6, 7);
    v4 u1 = __builtin_shufflevector(t[1], t[1], 0, 1, 2, 3) + __builtin_shufflevector(t[1], t[1], 4, 5, 6, 7);
    v4 u2 = __builtin_shufflevector(t[2], t[2], 0, 1, 2, 3) + __builtin_shufflevector(t[2], t[2], 4, 5, 6, 7);
    v4 u3 = __builtin_shufflevector(t[3], t[3], 0, 1, 2, 3) + __builtin_shufflevector(t[3], t[3], 4, 5, 6, 7);
    v4 a = __builtin_shufflevector(u0, u1, 0, 2, 4, 6) + __builtin_shufflevector(u0, u1, 1, 3, 5, 7);
    v4 b = __builtin_shufflevector(u2, u3, 0, 2, 4, 6) + __builtin_shufflevector(u2, u3, 1, 3, 5, 7);
    return __builtin_shufflevector(a, b, 0, 2, 4, 6) + __builtin_shufflevector(a, b, 1, 3, 5, 7);
}

static inline float hsum(const v8 *v) {
    const float *t = (const float *)v;
    return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}

typedef struct {
    const saefw_sae *sae;
    saefw_sae *train; /* the same SAE, whose gradients the backward pass writes */
    saefw_sae_work *w;
    const float *x; /* the target [B, d_out] */
    int64_t B;
} sparse_ctx;

void saefw_slab_fill(float *dst, const float *src, int64_t B, int64_t d, int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; q++) {
        const int64_t g0 = q * GROUP, n_cols = saefw_slab_group_cols(d, q);
        float *s = dst + q * B * GROUP;
        for (int64_t b = 0; b < B; b++) {
            memcpy(s + b * GROUP, src + b * d + g0, sizeof(float) * (size_t)n_cols);
            for (int64_t i = n_cols; i < GROUP; i++) s[b * GROUP + i] = 0.0f;
        }
    }
}

/* ---- the entries by feature ---- */

/* Each thread owns a range of features and walks the entries of the tiles that hold them in row
 * order, so rows stay ascending within a feature. First the counts (into feat_next)... */
static void count_features(void *vctx, int64_t f0, int64_t f1) {
    const sparse_ctx *c = vctx;
    saefw_sae_work *w = c->w;
    int64_t *count = w->feat_next;
    for (int64_t j = f0; j < f1; j++) count[j] = 0;
    for (int64_t t = f0 / w->tile_w; t <= (f1 - 1) / w->tile_w; t++) {
        const int64_t j0 = t * w->tile_w;
        const uint64_t lo = (uint64_t)(f0 > j0 ? f0 - j0 : 0), span = (uint64_t)(f1 - j0) - lo;
        for (int64_t b = 0; b < c->B; b++) {
            const int32_t *f = w->act_feat + w->row_start[t * w->cap + b];
            for (int32_t e = 0; e < w->row_len[t * w->cap + b]; e++)
                if ((uint64_t)f[e] - lo < span) count[j0 + f[e]]++;
        }
    }
}

/* ...then, with feat_next set to each feature's start, the entries themselves. */
static void scatter_features(void *vctx, int64_t f0, int64_t f1) {
    const sparse_ctx *c = vctx;
    saefw_sae_work *w = c->w;
    for (int64_t t = f0 / w->tile_w; t <= (f1 - 1) / w->tile_w; t++) {
        const int64_t j0 = t * w->tile_w;
        const uint64_t lo = (uint64_t)(f0 > j0 ? f0 - j0 : 0), span = (uint64_t)(f1 - j0) - lo;
        for (int64_t b = 0; b < c->B; b++) {
            const int64_t s = w->row_start[t * w->cap + b];
            const int32_t *f = w->act_feat + s;
            const float *v = w->act_val + s;
            for (int32_t e = 0; e < w->row_len[t * w->cap + b]; e++)
                if ((uint64_t)f[e] - lo < span) {
                    int64_t p = w->feat_next[j0 + f[e]]++;
                    w->feat_row[p] = (int32_t)b;
                    w->feat_act[p] = v[e];
                }
        }
    }
}

void saefw_sparse_index(saefw_sae_work *w, int64_t d_sae, int64_t B) {
    sparse_ctx c = {NULL, NULL, w, NULL, B};
    saefw_parallel_for(d_sae, count_features, &c);
    w->feat_start[0] = 0;
    for (int64_t j = 0; j < d_sae; j++) {
        w->feat_start[j + 1] = w->feat_start[j] + w->feat_next[j];
        w->feat_next[j] = w->feat_start[j];
    }
    saefw_parallel_for(d_sae, scatter_features, &c);
}

/* ---- decoder product ---- */

/* slab [B, GROUP] (double) += act * W_dec piece for every entry, features in ascending order (wp: W_dec
 * at the group's first column, rows ld apart; n_cols <= GROUP of them used). The products and sums are
 * in double: x_hat's rounding error reaches every gradient through dL/dx_hat, and a float sum over the
 * row's active features was less exact than the dense path's blocked product. */
SAEFW_KERNEL static void decode_slab(double *restrict slab, const float *restrict wp, int64_t ld, int64_t d_sae,
                                     const int64_t *restrict start, const int32_t *restrict rows,
                                     const float *restrict act, int64_t n_cols) {
    const int64_t end = start[d_sae];
    for (int64_t j = 0; j < d_sae; j++) {
        v8 wv[NV];
        v4d wd[2 * NV];
        if (j + PREFETCH < d_sae) prefetch_piece(wp + (j + PREFETCH) * ld, 0);
        load_piece(wv, wp + j * ld, n_cols);
        for (int v = 0; v < NV; v++) {
            wd[2 * v] = __builtin_convertvector(__builtin_shufflevector(wv[v], wv[v], 0, 1, 2, 3), v4d);
            wd[2 * v + 1] = __builtin_convertvector(__builtin_shufflevector(wv[v], wv[v], 4, 5, 6, 7), v4d);
        }
        for (int64_t e = start[j]; e < start[j + 1]; e++) {
            if (e + PREFETCH < end) {
                const double *p = slab + (int64_t)rows[e + PREFETCH] * GROUP;
                for (int c = 0; c < GROUP; c += 8) __builtin_prefetch(p + c, 1);
            }
            v4d *o = (v4d *)(slab + (int64_t)rows[e] * GROUP);
            const double a = act[e];
            for (int v = 0; v < 2 * NV; v++) o[v] += a * wd[v];
        }
    }
}

/* dxh = 2/B (x_hat - x) into sd, a [B, GROUP] slab, for the columns [g0, g0 + n_cols) of the target x
 * [B, d_out]; b_dec's gradient from the x_hat term, each column summed over rows in order in double (as the
 * dense path does). xh (rows ld apart) may be sd itself. */
static inline void backward_slab(const float *xh, int64_t ld, const float *x, int64_t d_out, int64_t B,
                                 int64_t grad_rows, int64_t g0, int64_t n_cols, float *sd, double *gb_dec) {
    const float c2 = 2.0f / (float)grad_rows;
    for (int64_t i = 0; i < n_cols; i++) gb_dec[g0 + i] = 0.0;
    for (int64_t b = 0; b < B; b++) {
        const float *xr = x + b * d_out + g0, *h = xh + b * ld;
        float *d = sd + b * GROUP;
        for (int64_t i = 0; i < n_cols; i++) {
            d[i] = c2 * (h[i] - xr[i]);
            gb_dec[g0 + i] += d[i];
        }
        /* The kernels read whole slab rows; a last, narrower group is padded with zeros. */
        for (int64_t i = n_cols; i < GROUP; i++) d[i] = 0.0f;
    }
}

/* Column groups of d_in in a range: x_cent into its [B, GROUP] slabs (zero-padded), W_enc's gradient's
 * operand. */
static void input_slabs(void *vctx, int64_t q0, int64_t q1) {
    const sparse_ctx *c = vctx;
    saefw_slab_fill(c->w->slab_x, c->w->x_cent, c->B, c->sae->d_in, q0, q1);
}

/* Column groups of a range: the group's x_hat accumulated in its slab and copied out. In the training
 * step (x given), while the slab is at hand, also the group's columns of the statistics and its backward
 * slabs (dxh in place of x_hat), so that neither pass reads x_hat back. */
SAEFW_KERNEL static void decode_groups(void *vctx, int64_t q0, int64_t q1) {
    const sparse_ctx *c = vctx;
    const saefw_sae *sae = c->sae;
    saefw_sae_work *w = c->w;
    const int64_t d_out = sae->d_out, B = c->B;
    /* This range's double slab [B, GROUP], in the encoder tiles' scratch (free once they are recorded). */
    double *dslab = (double *)w->scratch + q0 * B * GROUP;
    const float *b_dec = sae->p[SAEFW_B_DEC];
    for (int64_t q = q0; q < q1; q++) {
        const int64_t g0 = q * GROUP, n_cols = saefw_slab_group_cols(d_out, q);
        float *slab = w->slab_d + q * B * GROUP;
        memset(dslab, 0, sizeof(double) * (size_t)(B * GROUP));
        decode_slab(dslab, saefw_w_dec_operand(sae, w) + g0, d_out, sae->d_sae, w->feat_start, w->feat_row, w->feat_act,
                    n_cols);
        /* b_dec joins last, as in the dense path's product with beta = 1. */
        for (int64_t b = 0; b < B; b++) {
            for (int64_t i = 0; i < n_cols; i++)
                slab[b * GROUP + i] = (float)(dslab[b * GROUP + i] + (double)b_dec[g0 + i]);
            for (int64_t i = n_cols; i < GROUP; i++) slab[b * GROUP + i] = 0.0f;
            memcpy(w->x_hat + b * d_out + g0, slab + b * GROUP, sizeof(float) * (size_t)n_cols);
        }
        if (!c->x) continue;
        saefw_column_stats(slab, GROUP, c->x + g0, d_out, B, n_cols, w->col_stat + g0, w->col_stat + d_out + g0,
                           w->col_stat + 2 * d_out + g0);
        backward_slab(slab, GROUP, c->x, d_out, B, saefw_grad_rows(w, B), g0, n_cols, slab, w->gb_dec_d);
        /* enc_dtype: dxh as the products' operand (b_dec's sum above took the fp32 values). */
        if (w->dtype != SAEFW_ENC_FP32)
            saefw_lowp_round(slab, slab, B * GROUP, w->dtype, saefw_lowp_grad_scale(w->dtype, B));
    }
}

void saefw_sparse_decode(const saefw_sae *sae, saefw_sae_work *w, const float *x, int64_t B) {
    sparse_ctx c = {sae, NULL, w, x, B};
    saefw_parallel_for((sae->d_out + GROUP - 1) / GROUP, decode_groups, &c);
}

/* ---- gradients ---- */

/* Entry e of a feature: acc += act[e] dxh[rows[e]] (the gradient piece), *t += dxh[rows[e]] * the
 * feature's W_dec piece (its dot, lane by lane). */
static inline __attribute__((always_inline)) void grad_dec_entry(v8 *restrict acc, v8 *restrict t,
                                                                 const v8 *restrict wv, const float *restrict slab,
                                                                 const int32_t *restrict rows,
                                                                 const float *restrict act, int64_t e, int64_t end) {
    prefetch_slab_row(slab, rows, e, end);
    const v8 *m = (const v8 *)(slab + (int64_t)rows[e] * GROUP);
    const float a = act[e];
    for (int v = 0; v < NV; v++) {
        acc[v] += a * m[v];
        *t += m[v] * wv[v];
    }
}

/* Features [j0, j1), one column group: each feature's W_dec-gradient piece, sum_e act[e] dxh[rows[e]]
 * (in PARTIAL runs),
 * and each entry's share of dL/dacts, dot[e] += dxh[rows[e]] . the feature's W_dec piece (the groups'
 * shares summed in double); both read the entry's dxh piece once. gW and W point at the group's first
 * column, rows ld apart. */
SAEFW_KERNEL static void grad_dec_group(float *restrict gW, const float *restrict W, int64_t ld,
                                        const float *restrict slab, const int64_t *restrict start,
                                        const int32_t *restrict rows, const float *restrict act, double *restrict dot,
                                        int64_t j0, int64_t j1, int64_t n_cols) {
    const int64_t end = start[j1];
    for (int64_t j = j0; j < j1; j++) {
        v8 acc[NV] = {{0}}, wv[NV];
        if (j + PREFETCH < j1) {
            prefetch_piece(W + (j + PREFETCH) * ld, 0);
            prefetch_piece(gW + (j + PREFETCH) * ld, 1);
        }
        load_piece(wv, W + j * ld, n_cols);
        v4d tot[2 * NV] = {{0}};
        for (int64_t e = start[j]; e < start[j + 1];) {
            const int64_t stop = start[j + 1] - e < PARTIAL ? start[j + 1] : e + PARTIAL;
            /* Four entries at a time, their dots summed together: a quarter of the horizontal sums. */
            for (; e + 4 <= stop; e += 4) {
                v8 t[4] = {{0}};
                for (int k = 0; k < 4; k++) grad_dec_entry(acc, &t[k], wv, slab, rows, act, e + k, end);
                v4d d;
                memcpy(&d, dot + e, sizeof d);
                d += __builtin_convertvector(hsum4(t), v4d);
                memcpy(dot + e, &d, sizeof d);
            }
            for (; e < stop; e++) {
                v8 t = {0};
                grad_dec_entry(acc, &t, wv, slab, rows, act, e, end);
                dot[e] += hsum(&t);
            }
            flush_partial(tot, acc);
        }
        total_to_float(acc, tot);
        store_piece(gW + j * ld, acc, n_cols);
    }
}

/* Features [j0, j1), one column group of W_enc's gradient: column j gets sum_e coef[e] x_cent[rows[e]]
 * (in PARTIAL runs: the first Adam step moves every element whose gradient is near eps by an amount set
 * by that element's rounding error, so this sum's exactness decides the trajectory's distance),
 * built FEAT_BLOCK features at a time as a tile and stored transposed, 64 bytes per row. gW points at
 * the group's first row of the gradient, rows ld apart. */
SAEFW_KERNEL static void grad_enc_group(float *restrict gW, int64_t ld, const float *restrict slab,
                                        const int64_t *restrict start, const int32_t *restrict rows,
                                        const float *restrict coef, int64_t j0, int64_t j1, int64_t n_cols) {
    v8 tile[FEAT_BLOCK][NV];
    const int64_t end = start[j1];
    for (int64_t jb = j0; jb < j1; jb += FEAT_BLOCK) {
        const int64_t nf = j1 - jb < FEAT_BLOCK ? j1 - jb : FEAT_BLOCK;
        /* The next block's destination: n_cols lines, rows apart. */
        if (jb + 2 * FEAT_BLOCK <= j1)
            for (int64_t i = 0; i < n_cols; i++) __builtin_prefetch(gW + i * ld + jb + FEAT_BLOCK, 1);
        for (int64_t f = 0; f < nf; f++) {
            v8 acc[NV] = {{0}};
            v4d tot[2 * NV] = {{0}};
            for (int64_t e = start[jb + f]; e < start[jb + f + 1];) {
                const int64_t stop = start[jb + f + 1] - e < PARTIAL ? start[jb + f + 1] : e + PARTIAL;
                for (; e < stop; e++) {
                    prefetch_slab_row(slab, rows, e, end);
                    const v8 *m = (const v8 *)(slab + (int64_t)rows[e] * GROUP);
                    const float a = coef[e];
                    for (int v = 0; v < NV; v++) acc[v] += a * m[v];
                }
                flush_partial(tot, acc);
            }
            total_to_float(tile[f], tot);
        }
        for (int64_t i = 0; i < n_cols; i++) {
            float *dst = gW + i * ld + jb;
            for (int64_t f = 0; f < nf; f++) dst[f] = tile[f][i / 8][i % 8];
        }
    }
}

/* Feature blocks of a range: W_dec's gradient rows and each entry's dL/dacts (one sweep over the
 * column groups), then dL/dpre and b_enc's gradient, then W_enc's gradient columns (a second sweep,
 * which needs the complete dL/dpre). */
static void backward_features(void *vctx, int64_t k0, int64_t k1) {
    const sparse_ctx *c = vctx;
    saefw_sae *sae = c->train;
    saefw_sae_work *w = c->w;
    const int64_t d_in = sae->d_in, d_out = sae->d_out, d_sae = sae->d_sae, B = c->B;
    const int64_t n_groups = (d_in + GROUP - 1) / GROUP, n_groups_out = (d_out + GROUP - 1) / GROUP;
    const int64_t j0 = k0 * FEAT_BLOCK, j1 = k1 * FEAT_BLOCK < d_sae ? k1 * FEAT_BLOCK : d_sae;
    const int64_t *start = w->feat_start;

    for (int64_t e = start[j0]; e < start[j1]; e++) w->feat_dot[e] = 0.0;
    for (int64_t q = 0; q < n_groups_out; q++)
        grad_dec_group(sae->g[SAEFW_W_DEC] + q * GROUP, saefw_w_dec_operand(sae, w) + q * GROUP, d_out,
                       w->slab_d + q * B * GROUP, start, w->feat_row, w->feat_act, w->feat_dot, j0, j1,
                       saefw_slab_group_cols(d_out, q));
    /* dL/dpre = dL/dacts + the L1 term at active entries (l1_coeff, or the feature's decoder-norm weight);
     * b_enc's gradient sums it over rows in order, in double. */
    for (int64_t j = j0; j < j1; j++) {
        const double l1c = w->l1w ? (double)w->l1w[j] : (double)sae->l1_coeff;
        double sum = 0.0;
        for (int64_t e = start[j]; e < start[j + 1]; e++) {
            /* Rounded once, after the L1 term: dL/dacts and l1_coeff often nearly cancel. */
            const float g = (float)(w->feat_dot[e] + l1c);
            w->feat_grad[e] = g;
            sum += g;
        }
        w->gb_enc_d[j] = sum;
        sae->g[SAEFW_B_ENC][j] = (float)sum;
    }
    /* enc_dtype: dW_enc's product reads dL/dpre rounded (b_enc's gradient took the fp32 values). */
    if (w->dtype != SAEFW_ENC_FP32)
        saefw_lowp_round(w->feat_grad + start[j0], w->feat_grad + start[j0], start[j1] - start[j0], w->dtype,
                         saefw_lowp_grad_scale(w->dtype, B));
    for (int64_t q = 0; q < n_groups; q++)
        grad_enc_group(sae->g[SAEFW_W_ENC] + q * GROUP * d_sae, d_sae, w->slab_x + q * B * GROUP, start, w->feat_row,
                       w->feat_grad, j0, j1, saefw_slab_group_cols(d_in, q));
}

void saefw_sparse_backward(saefw_sae *sae, saefw_sae_work *w, int64_t B) {
    sparse_ctx c = {sae, sae, w, NULL, B};
    saefw_parallel_for((sae->d_in + GROUP - 1) / GROUP, input_slabs, &c);
    saefw_parallel_for((sae->d_sae + FEAT_BLOCK - 1) / FEAT_BLOCK, backward_features, &c);
}

/* ---- the same kernels for the generic path (sae_arch.c) ---- */

void saefw_slab_decode(double *slab, const float *wp, int64_t ld, int64_t d_sae, const int64_t *start,
                       const int32_t *rows, const float *act, int64_t n_cols) {
    decode_slab(slab, wp, ld, d_sae, start, rows, act, n_cols);
}

void saefw_slab_grad_dec(float *gW, const float *W, int64_t ld, const float *slab, const int64_t *start,
                         const int32_t *rows, const float *act, double *dot, int64_t j0, int64_t j1, int64_t n_cols) {
    grad_dec_group(gW, W, ld, slab, start, rows, act, dot, j0, j1, n_cols);
}

void saefw_slab_grad_enc(float *gW, int64_t ld, const float *slab, const int64_t *start, const int32_t *rows,
                         const float *coef, int64_t j0, int64_t j1, int64_t n_cols) {
    grad_enc_group(gW, ld, slab, start, rows, coef, j0, j1, n_cols);
}
