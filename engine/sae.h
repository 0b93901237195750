/* The sparse autoencoder of the seed recipe: parameters in one block, forward, backward,
 * decoder-gradient projection and decoder renormalisation, over flat float32 arrays. After the dense
 * encoder product a step takes a dense path (OpenBLAS) or a sparse one (only the active entries of the
 * activations), chosen per batch by the fraction of active entries; both give the same results up to
 * float rounding. */
#ifndef SAEFW_SAE_H
#define SAEFW_SAE_H

#include <stddef.h>
#include <stdint.h>

#include "rng.h"
#include "sae_lowp.h"
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
    /* Precision of the encoder and decoder products (sae_lowp.h): fp32 (0, the default) or bf16 / fp16
     * operands with fp32 sums; parameters and gradients stay fp32. Work areas take it at allocation. */
    saefw_enc_dtype enc_dtype;
} saefw_sae;

/* Allocate an SAE with zeroed parameters and gradients. Free with saefw_sae_free. */
int saefw_sae_alloc(saefw_sae *sae, int64_t d_in, int64_t d_sae, float l1_coeff, char *err, size_t errlen);
void saefw_sae_free(saefw_sae *sae);

/* The seed's init: kaiming-uniform W_enc and W_dec (bound sqrt(6 / size(1))), biases zero,
 * then W_dec rows scaled to unit norm. */
void saefw_sae_init_params(saefw_sae *sae, saefw_rng *rng);
/* Fill a view of tensor i as the plugin ABI describes it. */
void saefw_sae_param_view(saefw_sae *sae, int i, saefw_param *out);

/* Which kernels run after the encoder product. */
typedef enum {
    SAEFW_SAE_AUTO = 0,   /* sparse when at most SAEFW_SAE_SPARSE_MAX_FRACTION of acts is active */
    SAEFW_SAE_DENSE = 1,  /* always the dense products */
    SAEFW_SAE_SPARSE = 2, /* always the sparse kernels (work areas then hold every entry: tests) */
} saefw_sae_path;

/* Fraction of active entries of a batch (L0 / d_sae) up to which AUTO takes the sparse path: above
 * it the dense products on OpenBLAS are faster (measured: BENCHMARKS.md). */
#define SAEFW_SAE_SPARSE_MAX_FRACTION 0.10

/* Path for work areas allocated from now on; SAEFW_SAE_AUTO, the default, defers to the
 * environment variable SAEFW_SAE_PATH (auto, dense or sparse) when it is set. */
void saefw_sae_set_path(saefw_sae_path path);

/* Rows of dLoss/d(pre-activation) the dense backward makes at a time. */
#define SAEFW_DENSE_PIECE 512

/* Rows of evaluation batches (feature frequencies, the reconstruction score) run through the SAE at a
 * time: their scratch space stays small next to the training step's. */
#define SAEFW_EVAL_PIECE 512

/* Per-batch scratch space, allocated once for the largest batch. No [batch, d_sae] array is kept:
 * the sparse path computes the encoder product in feature tiles, each tile's pre-activations living
 * only in a worker's scratch until its active entries are recorded; the dense path works in pieces of
 * SAEFW_DENSE_PIECE rows. The dense activations are made on request (saefw_sae_acts). */
typedef struct {
    int64_t cap;   /* rows */
    float *x_cent; /* [cap, d_in] */
    float *x_hat;  /* [cap, d_in] */
    float *dxh;    /* [cap, d_in]: dLoss/dx_hat (dense path; shares memory with slab_d) */
    /* Workers' tiles [cap, tile_w] on the sparse path; on the dense path the first two pieces'
     * worth hold a piece's activations and its dLoss/d(pre-activation), [piece, d_sae] each. */
    float *scratch;
    int64_t n_slots;       /* tiles computed at once */
    int64_t n_tiles, tile_w;
    float *acts;           /* [cap, d_sae]: made by saefw_sae_acts on first request */
    int acts_valid;        /* acts holds the last forward pass's activations */
    double *row_l1;        /* [cap]: dense path, sum of each row's activations */

    /* Active entries of the last forward pass on the sparse path, by tile and row. Rows come in chunks
     * of chunk_rows; tile t's chunk c keeps its entries at [(t n_chunks + c) chunk_cap, + chunk_cap) of
     * act_feat/act_val (features relative to the tile). */
    saefw_sae_path path;   /* the path asked for at allocation */
    int used_sparse;       /* the last forward pass took the sparse path (backward follows it) */
    int predict_dense;     /* the last batch was too dense: the next one goes straight to the dense path */
    int fused_pass;        /* the last forward pass was fused: on the dense path it made the gradients,
                            * on the sparse path col_stat, the backward slabs and b_dec's x_hat term */
    int fused;             /* set by the caller when a backward pass follows every forward pass: a dense
                            * forward pass then also makes the gradients, a sparse one the backward
                            * pass's slabs and b_dec's x_hat term */
    int64_t nnz;           /* active entries of the last forward pass */
    int64_t chunk_rows, n_chunks, chunk_cap;
    int64_t *row_start;    /* [n_tiles, cap]: offset of the entries of row b in tile t */
    int32_t *row_len;      /* [n_tiles, cap]: entries recorded for them */
    int32_t *act_feat;     /* [n_tiles * n_chunks * chunk_cap]: feature in the tile, ascending within a row */
    float *act_val;        /* the same: its activation */
    int64_t *chunk_active; /* [n_tiles, n_chunks]: active entries (recorded or not: a chunk may overflow) */
    int64_t *chunk_kept;   /* [n_tiles, n_chunks]: entries recorded */
    double *chunk_l1;      /* [n_tiles, n_chunks]: sum of acts */
    int overflow;          /* a chunk ran out of room: the batch goes to the dense path */
    int64_t next_item;     /* the next item of the tile product's list to take */
    /* The same entries by feature (built for the backward pass): feature j's are
     * [feat_start[j], feat_start[j + 1]), rows ascending. */
    int64_t feat_cap;
    int64_t *feat_start;   /* [d_sae + 1] */
    int64_t *feat_next;    /* [d_sae]: fill cursor */
    int32_t *feat_row;     /* [feat_cap] */
    float *feat_act;       /* [feat_cap]: activation */
    float *feat_grad;      /* [feat_cap]: dLoss/d(pre-activation) */
    double *feat_dot;      /* [feat_cap]: dLoss/dacts, summed over the column groups in double */
    /* x_hat, then dxh, and x_cent, in column groups: group q holds columns [q G, q G + G) of all rows
     * as one contiguous [B, G] slab (G = SAEFW_SPARSE_GROUP in sae_kernels.h). */
    float *slab_d, *slab_x; /* [cap, d_in rounded up to G] */
    double *col_stat;      /* [3 * d_in]: per-column sums of the statistics */
    /* The bias gradients' sums over rows, kept in double until b_dec's gradient is complete (a float
     * sum over thousands of rows is an order of magnitude less exact than PyTorch's). */
    double *gb_enc_d;      /* [d_sae] */
    double *gb_dec_d;      /* [d_in]: the x_hat term */
    size_t acts_bytes;
    void *big[24];         /* the arrays saefw_sae_work_release hands back */
    size_t big_bytes[24];
    int n_big;
    /* enc_dtype's operands (NULL for fp32): the weights rounded at each forward pass, and a dense piece's
     * activations rounded for the decoder products (the fp32 ones keep the mask, L0 and L1). */
    saefw_enc_dtype dtype; /* the SAE's enc_dtype when the work area was allocated */
    float *lp_w_enc;       /* [d_in, d_sae] */
    float *lp_w_dec;       /* [d_sae, d_in] */
    float *lp_acts;        /* [piece, d_sae] */
} saefw_sae_work;

/* Allocate scratch space for batches of up to cap rows, sized for the path saefw_sae_set_path (or
 * SAEFW_SAE_PATH) asks for; an unknown SAEFW_SAE_PATH value is an error. Free with saefw_sae_work_free. */
int saefw_sae_work_alloc(saefw_sae_work *w, const saefw_sae *sae, int64_t cap, char *err, size_t errlen);
void saefw_sae_work_free(saefw_sae_work *w);
/* Hand the pages of the work area's large arrays back to the system between steps (e.g. while an
 * evaluation needs memory of its own); they read as zeros afterwards and nothing in them is kept. */
void saefw_sae_work_release(saefw_sae_work *w);
/* Bytes held by an SAE's step scratch of `cap` rows that the training step writes (an estimate of
 * the resident part of saefw_sae_work_alloc's arrays at a low L0). */
double saefw_sae_work_estimate(int64_t d_in, int64_t d_sae, int64_t cap);

typedef struct {
    double loss, l2, l1;       /* l2: mean over rows of sum over d_in; l1: l1_coeff * sum of |acts| */
    double l0;                 /* mean number of active features per row */
    double explained_variance; /* 1 - sum (x - x_hat)^2 / sum (x - mean(x))^2, over the batch */
} saefw_sae_stats;

/* Forward pass of B rows x [B, d_in] into w->acts and w->x_hat (and, when the batch is sparse enough,
 * the active entries); stats may be NULL. B <= w->cap. */
void saefw_sae_forward(const saefw_sae *sae, saefw_sae_work *w, const float *x, int64_t B, saefw_sae_stats *stats);
/* The activations [B, d_sae] of the last forward pass (x is its input), made on the first request after
 * it: the first request allocates w->acts. NULL with err when out of memory. */
const float *saefw_sae_acts(const saefw_sae *sae, saefw_sae_work *w, const float *x, int64_t B, char *err,
                            size_t errlen);
/* Adds to count [d_sae] the rows of the last forward pass (x, B) on which each feature fired: from the
 * recorded entries on the sparse path, from saefw_sae_acts on the dense one. -1 with err when out of
 * memory. */
int saefw_sae_count_active(const saefw_sae *sae, saefw_sae_work *w, const float *x, int64_t B, int64_t *count,
                           char *err, size_t errlen);
/* Per-row loss (l2 + l1 of that row) after a forward pass [B]; -1 with err when out of memory. */
int saefw_sae_row_loss(const saefw_sae *sae, saefw_sae_work *w, const float *x, int64_t B, float *loss, char *err,
                       size_t errlen);
/* Backward pass after saefw_sae_forward on the same x: overwrites sae->grads (all four tensors, in
 * their documented layouts, on either path). */
void saefw_sae_backward(saefw_sae *sae, saefw_sae_work *w, const float *x, int64_t B);
/* Remove from W_dec's gradient its component along each normalised W_dec row, then set W_dec to
 * the normalised rows (the seed's make_decoder_weights_and_grad_unit_norm). */
void saefw_sae_project_decoder(saefw_sae *sae);

#endif
