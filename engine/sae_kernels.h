/* Internal to the SAE: the dense products and the sparse-path kernels (sae_sparse.c) that sae.c calls,
 * and the attribute that builds a hot loop for both the baseline x86-64 and AVX2+FMA, picked at load
 * time. */
#ifndef SAEFW_SAE_KERNELS_H
#define SAEFW_SAE_KERNELS_H

#include <cblas.h>

#include "parallel.h"
#include "sae.h"

/* Clones selected by the CPU at load time (ifunc); the build itself targets baseline x86-64.
 * -DSAEFW_KERNEL= builds the baseline code alone (to test it on a machine with AVX2). */
#ifndef SAEFW_KERNEL
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define SAEFW_KERNEL __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define SAEFW_KERNEL
#endif
#endif

/* Scratch space of the step and of the evaluation (saefw_sae_step and saefw_sae_eval hold one),
 * allocated once for the largest batch. No [batch, d_sae] array is kept: the sparse path computes the
 * encoder product in feature tiles, each tile's pre-activations living only in a worker's scratch until
 * its active entries are recorded; the dense path works in pieces of SAEFW_DENSE_PIECE rows. The dense
 * activations are made on request. */
typedef struct {
    int64_t cap;   /* rows */
    float *x_cent; /* [cap, d_in] */
    float *x_hat;  /* [cap, d_out] */
    float *dxh;    /* [cap, d_out]: dLoss/dx_hat (dense path; shares memory with slab_d) */
    /* Workers' tiles [cap, tile_w] on the sparse path; on the dense path the first two pieces'
     * worth hold a piece's activations and its dLoss/d(pre-activation), [piece, d_sae] each. */
    float *scratch;
    int64_t n_slots; /* tiles computed at once */
    int64_t n_tiles, tile_w;
    float *acts;         /* [cap, d_sae]: made on request */
    double *row_l1;      /* [cap]: dense path, sum of each row's activations */
    saefw_sae_path path; /* the path asked for at allocation */
    int predict_dense;   /* AUTO: the last batch was too dense, the next one goes straight to the dense path */
    /* Rows the gradient's means are over (l2, the decoder-norm-weighted L1): 0 for the batch's own; data
     * parallel sets the global batch. Read it through saefw_grad_rows. */
    int64_t norm_rows;

    /* The last batch: its rows, whether its activations are the recorded entries (sparse path) or are
     * made again from x_cent (dense path), and whether acts holds them. */
    int64_t rows;
    int sparse;
    int acts_made;

    /* Active entries of the last forward pass on the sparse path, by tile and row. Rows come in chunks
     * of chunk_rows; tile t's chunk c keeps its entries at [(t n_chunks + c) chunk_cap, + chunk_cap) of
     * act_feat/act_val (features relative to the tile). */
    int64_t chunk_rows, n_chunks, chunk_cap;
    int64_t *row_start;    /* [n_tiles, cap]: offset of the entries of row b in tile t */
    int32_t *row_len;      /* [n_tiles, cap]: entries recorded for them */
    int32_t *act_feat;     /* [n_tiles * n_chunks * chunk_cap]: feature in the tile, ascending within a row */
    float *act_val;        /* the same: its activation */
    int64_t *chunk_active; /* [n_tiles, n_chunks]: active entries (recorded or not: a chunk may overflow) */
    int64_t *chunk_kept;   /* [n_tiles, n_chunks]: entries recorded */
    double *chunk_l1;      /* [n_tiles, n_chunks]: sum of acts */
    /* The same entries by feature: feature j's are [feat_start[j], feat_start[j + 1]), rows ascending. */
    int64_t feat_cap;
    int64_t *feat_start; /* [d_sae + 1] */
    int64_t *feat_next;  /* [d_sae]: fill cursor */
    int32_t *feat_row;   /* [feat_cap] */
    float *feat_act;     /* [feat_cap]: activation */
    float *feat_grad;    /* [feat_cap]: dLoss/d(pre-activation) */
    double *feat_dot;    /* [feat_cap]: dLoss/dacts, summed over the column groups in double */
    /* x_hat, then dxh, and x_cent, in column groups: group q holds columns [q G, q G + G) of all rows
     * as one contiguous [B, G] slab (G = SAEFW_SPARSE_GROUP). */
    float *slab_d;    /* [cap, d_out rounded up to G] */
    float *slab_x;    /* [cap, d_in rounded up to G] */
    double *col_stat; /* [3 * d_out]: per-column sums of the statistics */
    /* The bias gradients' sums over rows, kept in double until b_dec's gradient is complete (a float
     * sum over thousands of rows is an order of magnitude less exact than PyTorch's). */
    double *gb_enc_d; /* [d_sae] */
    double *gb_dec_d; /* [d_out]: the x_hat term */
    /* Decoder-norm-weighted L1 only (else NULL): ||W_dec[j,:]|| at the forward pass, each feature's
     * dL/dacts from the penalty (l1_coeff ||W_dec[j,:]|| / B), and its activations summed over the batch. */
    double *dec_norm; /* [d_sae] */
    float *l1w;       /* [d_sae] */
    double *act_sum;  /* [d_sae] */
    size_t acts_bytes;
    void *big[32]; /* the arrays a release hands back */
    size_t big_bytes[32];
    int n_big;
    /* enc_dtype's operands (NULL for fp32): the weights rounded at each forward pass, and a dense piece's
     * activations rounded for the decoder products (the fp32 ones keep the mask, L0 and L1). */
    saefw_enc_dtype dtype; /* the SAE's enc_dtype when the work area was allocated */
    float *lp_w_enc;       /* [d_in, d_sae] */
    float *lp_w_dec;       /* [d_sae, d_out] */
    float *lp_acts;        /* [piece, d_sae] */
} saefw_sae_work;

/* The rows a batch of B rows divides its gradient's means by (norm_rows above). */
static inline int64_t saefw_grad_rows(const saefw_sae_work *w, int64_t B) {
    return w->norm_rows > 0 ? w->norm_rows : B;
}

/* Eight floats, and the same read or written at any float's alignment. */
typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4), may_alias));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef int32_t v8iu __attribute__((vector_size(32), aligned(4), may_alias));

/* Columns of d_in handled together by the sparse kernels: the batch-side slab of one group
 * ([B, GROUP] floats, 512 KiB at batch 4096) stays in the core's cache. */
#ifndef SAEFW_SPARSE_GROUP
#define SAEFW_SPARSE_GROUP 32
#endif

/* The W_enc and W_dec operands of the products: under enc_dtype, their copies rounded at the forward
 * pass (sae_lowp.h). */
static inline const float *saefw_w_enc_operand(const saefw_sae *sae, const saefw_sae_work *w) {
    return w->lp_w_enc ? w->lp_w_enc : sae->p[SAEFW_W_ENC];
}
static inline const float *saefw_w_dec_operand(const saefw_sae *sae, const saefw_sae_work *w) {
    return w->lp_w_dec ? w->lp_w_dec : sae->p[SAEFW_W_DEC];
}

/* The recorded entries (by row) regrouped by feature: feat_start, feat_row, feat_act. */
void saefw_sparse_index(saefw_sae_work *w, int64_t d_sae, int64_t B);

/* Per column i < n: the sums over B rows of (x_hat - x)^2 and of x, then of (x - mean)^2, in double, into
 * l2[i], mean[i] (divided by B) and var[i]; rows of xh and x are ldh and ldx apart. */
static inline void saefw_column_stats(const float *restrict xh, int64_t ldh, const float *restrict x, int64_t ldx,
                                      int64_t B, int64_t n, double *restrict l2, double *restrict mean,
                                      double *restrict var) {
    for (int64_t i = 0; i < n; i++) l2[i] = mean[i] = var[i] = 0.0;
    for (int64_t b = 0; b < B; b++) {
        const float *restrict xr = x + b * ldx, *restrict hr = xh + b * ldh;
        for (int64_t i = 0; i < n; i++) {
            double e = (double)hr[i] - (double)xr[i];
            l2[i] += e * e;
            mean[i] += xr[i];
        }
    }
    for (int64_t i = 0; i < n; i++) mean[i] /= (double)B;
    for (int64_t b = 0; b < B; b++) {
        const float *restrict xr = x + b * ldx;
        for (int64_t i = 0; i < n; i++) {
            double e = (double)xr[i] - mean[i];
            var[i] += e * e;
        }
    }
}

/* x_hat [B, d_out] = b_dec + the active entries of acts times W_dec, after saefw_sparse_index. With the
 * target x [B, d_out] (the training step: the backward pass follows), also w->col_stat for it and the
 * backward pass's dxh slabs. */
void saefw_sparse_decode(const saefw_sae *sae, saefw_sae_work *w, const float *x, int64_t B);

/* After saefw_sparse_decode with a target: W_dec's and W_enc's gradients (every element written; W_dec's
 * without the decoder-norm penalty's own term), b_enc's, and b_dec's x_hat term (the caller subtracts
 * W_enc @ gb_enc when b_dec is applied to the input). */
void saefw_sparse_backward(saefw_sae *sae, saefw_sae_work *w, int64_t B);

/* Columns of group q of a d-wide row: SAEFW_SPARSE_GROUP, fewer in the last group. */
static inline int64_t saefw_slab_group_cols(int64_t d, int64_t q) {
    return d - q * SAEFW_SPARSE_GROUP < SAEFW_SPARSE_GROUP ? d - q * SAEFW_SPARSE_GROUP : SAEFW_SPARSE_GROUP;
}

/* Column groups [q0, q1) of src [B, d] (rows d apart) into dst's zero-padded [B, GROUP] slabs, group q's
 * at dst + q * B * GROUP. */
void saefw_slab_fill(float *dst, const float *src, int64_t B, int64_t d, int64_t q0, int64_t q1);

/* The sparse path's kernels on one column group of GROUP columns, for the generic path (sae_arch.c),
 * whose entries by feature are start [d_sae + 1] (feature j's: [start[j], start[j + 1])), rows (ascending
 * within a feature) and act; slabs are [B, GROUP], zero-padded, 32-byte aligned.
 * decode: slab (double) += act[e] * the feature's W_dec piece (wp: the group's first column, rows ld
 * apart; n_cols <= GROUP of them) for every entry, features ascending. */
void saefw_slab_decode(double *slab, const float *wp, int64_t ld, int64_t d_sae, const int64_t *start,
                       const int32_t *rows, const float *act, int64_t n_cols);
/* Features [j0, j1): gW's piece of row j = sum_e act[e] slab[rows[e]] (written, not added), and dot[e] +=
 * slab[rows[e]] . W's piece of row j (in double; the caller zeroes dot before the first group). */
void saefw_slab_grad_dec(float *gW, const float *W, int64_t ld, const float *slab, const int64_t *start,
                         const int32_t *rows, const float *act, double *dot, int64_t j0, int64_t j1, int64_t n_cols);
/* Features [j0, j1): column j of gW (the group's first row, rows ld apart; n_cols rows) = sum_e coef[e]
 * slab[rows[e]] (written). */
void saefw_slab_grad_enc(float *gW, int64_t ld, const float *slab, const int64_t *start, const int32_t *rows,
                         const float *coef, int64_t j0, int64_t j1, int64_t n_cols);

#endif
