/* The sparse autoencoder of the seed recipe: parameters in one block, forward, backward,
 * decoder-gradient projection and decoder renormalisation, over flat float32 arrays. */
#ifndef SAEFW_SAE_H
#define SAEFW_SAE_H

#include <stddef.h>
#include <stdint.h>

#include "rng.h"
#include "saefw/plugin.h"

enum { SAEFW_W_ENC = 0, SAEFW_W_DEC = 1, SAEFW_B_ENC = 2, SAEFW_B_DEC = 3, SAEFW_N_PARAMS = 4 };

/* Name of parameter i ("W_enc", ...), in the fixed order above. */
const char *saefw_param_name(int i);

typedef struct {
    int64_t d_in, d_sae;
    float l1_coeff;
    float *params;           /* one block: W_enc [d_in,d_sae], W_dec [d_sae,d_in], b_enc [d_sae], b_dec [d_in] */
    float *grads;            /* same layout as params */
    size_t n_total;          /* floats in each block */
    float *p[SAEFW_N_PARAMS]; /* views into params */
    float *g[SAEFW_N_PARAMS]; /* views into grads */
    int64_t shape[SAEFW_N_PARAMS][2];
    int ndim[SAEFW_N_PARAMS];
    int64_t numel[SAEFW_N_PARAMS];
} saefw_sae;

/* Allocate an SAE with zeroed parameters and gradients. Free with saefw_sae_free. */
int saefw_sae_alloc(saefw_sae *sae, int64_t d_in, int64_t d_sae, float l1_coeff, char *err, size_t errlen);
void saefw_sae_free(saefw_sae *sae);

/* The seed's init: kaiming-uniform W_enc and W_dec (bound sqrt(6 / size(1))), biases zero,
 * then W_dec rows scaled to unit norm. */
void saefw_sae_init_params(saefw_sae *sae, saefw_rng *rng);
/* Fill a view of tensor i as the plugin ABI describes it. */
void saefw_sae_param_view(saefw_sae *sae, int i, saefw_param *out);

/* Per-batch scratch space, allocated once for the largest batch. */
typedef struct {
    int64_t cap;   /* rows */
    float *x_cent; /* [cap, d_in] */
    float *acts;   /* [cap, d_sae]: post-ReLU activations */
    float *x_hat;  /* [cap, d_in] */
    float *dxh;    /* [cap, d_in]: dLoss/dx_hat */
    float *dpre;   /* [cap, d_sae]: dLoss/d(pre-activation) */
} saefw_sae_work;

int saefw_sae_work_alloc(saefw_sae_work *w, const saefw_sae *sae, int64_t cap, char *err, size_t errlen);
void saefw_sae_work_free(saefw_sae_work *w);

typedef struct {
    double loss, l2, l1;       /* l2: mean over rows of sum over d_in; l1: l1_coeff * sum of |acts| */
    double l0;                 /* mean number of active features per row */
    double explained_variance; /* 1 - sum (x - x_hat)^2 / sum (x - mean(x))^2, over the batch */
} saefw_sae_stats;

/* Forward pass of B rows x [B, d_in] into w->acts and w->x_hat; stats may be NULL. B <= w->cap. */
void saefw_sae_forward(const saefw_sae *sae, saefw_sae_work *w, const float *x, int64_t B, saefw_sae_stats *stats);
/* Per-row loss (l2 + l1 of that row) after a forward pass [B]. */
void saefw_sae_row_loss(const saefw_sae *sae, const saefw_sae_work *w, const float *x, int64_t B, float *loss);
/* Backward pass after saefw_sae_forward on the same x: overwrites sae->grads. */
void saefw_sae_backward(saefw_sae *sae, saefw_sae_work *w, const float *x, int64_t B);
/* Remove from W_dec's gradient its component along each normalised W_dec row, then set W_dec to
 * the normalised rows (the seed's make_decoder_weights_and_grad_unit_norm). */
void saefw_sae_project_decoder(saefw_sae *sae);

#endif
