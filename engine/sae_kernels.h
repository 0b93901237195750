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

/* x_hat [B, d_in] = b_dec + the active entries of acts times W_dec, after saefw_sparse_index. With x
 * (a fused call: the backward pass follows), also w->col_stat for x and the backward pass's slabs. */
void saefw_sparse_decode(const saefw_sae *sae, saefw_sae_work *w, const float *x, int64_t B);

/* After saefw_sparse_decode on x [B, d_in]: W_dec's and W_enc's gradients (every element written),
 * b_enc's, and b_dec's x_hat term (the caller subtracts W_enc @ gb_enc). */
void saefw_sparse_backward(saefw_sae *sae, saefw_sae_work *w, const float *x, int64_t B);

#endif
