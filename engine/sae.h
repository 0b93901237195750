/* The sparse autoencoder of the seed recipe over flat float32 arrays: parameters in one block, the
 * training step (forward pass, statistics and backward pass in one call), the decoder-gradient
 * projection and decoder renormalisation, and a forward pass for evaluation that takes the SAE as
 * const. After the encoder product a batch takes a dense path (OpenBLAS) or a sparse one (only the
 * active entries of the activations), chosen per batch by the fraction of active entries; both give the
 * same results up to float rounding. */
#ifndef SAEFW_SAE_H
#define SAEFW_SAE_H

#include <stddef.h>
#include <stdint.h>

#include "rng.h"
#include "sae_lowp.h"
#include "saefw/plugin.h"

/* The first four tensors of every architecture keep these indices (index 2 is b_gate for gated);
 * SAEFW_N_PARAMS is the ReLU SAE's count, an SAE's own is n_params. Extra tensors are appended:
 * jumprelu's log_threshold (4), gated's r_mag (4) and b_mag (5). */
enum { SAEFW_W_ENC = 0, SAEFW_W_DEC = 1, SAEFW_B_ENC = 2, SAEFW_B_DEC = 3, SAEFW_N_PARAMS = 4 };
enum { SAEFW_LOG_THRESHOLD = 4, SAEFW_R_MAG = 4, SAEFW_B_MAG = 5, SAEFW_MAX_PARAMS = 6 };

/* Name of the ReLU SAE's parameter i ("W_enc", ...), in the fixed order above. */
const char *saefw_param_name(int i);

/* The sparsity penalty's form. */
typedef enum {
    SAEFW_L1_PLAIN = 0,        /* the seed's: l1_coeff * sum over batch and features of acts */
    SAEFW_L1_DECODER_NORM = 1, /* the 2024 recipe's: l1_coeff * mean_b sum_i acts[b,i] ||W_dec[i,:]|| */
} saefw_l1_weighting;

/* The architectures (docs/architectures.md): the seed's ReLU and issue 16's four. */
typedef enum {
    SAEFW_ARCH_RELU = 0,
    SAEFW_ARCH_TOPK,
    SAEFW_ARCH_BATCHTOPK,
    SAEFW_ARCH_JUMPRELU,
    SAEFW_ARCH_GATED,
    SAEFW_ARCH_COUNT
} saefw_sae_arch;

/* "relu", "topk", ... or NULL for an unknown value. */
const char *saefw_sae_arch_name(saefw_sae_arch a);
/* 0 with *out set for a known name, else -1 with err. */
int saefw_sae_arch_parse(const char *name, saefw_sae_arch *out, char *err, size_t errlen);

/* An architecture and its hyperparameters; fields that do not belong to it are ignored. */
typedef struct {
    saefw_sae_arch arch;
    int64_t k;          /* topk, batchtopk: latents kept per row (batchtopk: on average) */
    int64_t k_aux;      /* topk, batchtopk: AuxK's dead latents per row */
    int64_t dead_steps; /* topk, batchtopk: a latent is dead after more steps than this without firing */
    double aux_coeff;   /* topk, batchtopk: AuxK's coefficient */
    double theta_rate;  /* batchtopk: rate of the inference threshold's moving average */
    double bandwidth;   /* jumprelu: the STE's rectangle kernel width */
    double threshold;   /* jumprelu: initial threshold (log_threshold = log(threshold)) */
    double l0_coeff;    /* jumprelu: the L0 term's coefficient */
} saefw_sae_arch_cfg;

/* The defaults of docs/architectures.md for arch, given d_in (k_aux = d_in / 2). */
void saefw_sae_arch_defaults(saefw_sae_arch_cfg *cfg, saefw_sae_arch arch, int64_t d_in);
/* 0 when cfg's values fit an SAE of d_sae latents, else -1 with a one-line err. */
int saefw_sae_arch_check(const saefw_sae_arch_cfg *cfg, int64_t d_sae, char *err, size_t errlen);

typedef struct {
    int64_t d_in, d_sae;
    float l1_coeff; /* relu; gated: the gate's L1 coefficient */
    float *params;  /* one block: W_enc [d_in,d_sae], W_dec [d_sae,d_out], b_enc [d_sae], b_dec [d_out], extras */
    float *grads;   /* same layout as params */
    size_t n_total; /* floats in each block */
    int n_params;   /* tensors of this architecture (4 for relu) */
    const char *names[SAEFW_MAX_PARAMS];
    float *p[SAEFW_MAX_PARAMS]; /* views into params */
    float *g[SAEFW_MAX_PARAMS]; /* views into grads */
    int64_t shape[SAEFW_MAX_PARAMS][2];
    int ndim[SAEFW_MAX_PARAMS];
    int64_t numel[SAEFW_MAX_PARAMS];
    /* Precision of the encoder and decoder products (sae_lowp.h): fp32 (0, the default) or bf16 / fp16
     * operands with fp32 sums; parameters and gradients stay fp32. Work areas take it at allocation. */
    saefw_enc_dtype enc_dtype;
    saefw_sae_arch_cfg arch;
    /* Training state that is not a parameter (saved with the training state): AuxK's steps since each
     * latent last fired [d_sae] (topk, batchtopk; else NULL) and BatchTopK's inference threshold. */
    int64_t *since_fired;
    double theta;
    /* The ReLU SAE's variants (issue 16.2, 16.3). Width of the target and of the decoder's output: d_in
     * except for a transcoder. */
    int64_t d_out;
    /* 1 (the seed's): the encoder reads x - b_dec; 0: it reads x, and b_dec gets no gradient through it. */
    int apply_b_dec_to_input;
    saefw_l1_weighting l1_weighting;
    /* 1: a transcoder, whose target y is another site than its input (saefw_sae_alloc_xy). */
    int transcoder;
    /* The model sites the SAE reads and (a transcoder) reconstructs, by TransformerLens name, when they
     * were given (saefw.sae{ model =, site =, site_out = }); "" when not. Checkpoints write cfg.json's
     * hook_name / hook_name_out from them, and a run refuses a buffer that captures other sites. */
    char hook_name[96];
    char hook_name_out[96];
} saefw_sae;

/* Allocate a ReLU SAE with zeroed parameters and gradients, the seed's options (target x, b_dec applied
 * to the input, plain L1). Free with saefw_sae_free. */
int saefw_sae_alloc(saefw_sae *sae, int64_t d_in, int64_t d_sae, float l1_coeff, char *err, size_t errlen);
/* The same for a transcoder: input width d_in, target width d_out (W_dec [d_sae, d_out], b_dec [d_out]),
 * apply_b_dec_to_input 0. */
int saefw_sae_alloc_xy(saefw_sae *sae, int64_t d_in, int64_t d_out, int64_t d_sae, float l1_coeff, char *err,
                       size_t errlen);
/* The same for any architecture (cfg checked by saefw_sae_arch_check); relu gives saefw_sae_alloc's SAE. */
int saefw_sae_alloc_arch(saefw_sae *sae, int64_t d_in, int64_t d_sae, float l1_coeff, const saefw_sae_arch_cfg *cfg,
                         char *err, size_t errlen);
void saefw_sae_free(saefw_sae *sae);
/* Index of the SAE's tensor called name, or -1. */
int saefw_sae_param_index(const saefw_sae *sae, const char *name);
/* -1 with a one-line err when the options do not fit together (a transcoder applying b_dec to its input,
 * d_out != d_in outside a transcoder, an unknown l1_weighting, a variant on another architecture than relu). */
int saefw_sae_check_options(const saefw_sae *sae, char *err, size_t errlen);
/* "plain" / "decoder_norm" <-> the enum; parse returns -1 with err naming the value. */
const char *saefw_l1_weighting_name(saefw_l1_weighting w);
int saefw_l1_weighting_parse(const char *s, saefw_l1_weighting *out, char *err, size_t errlen);

/* The seed's init: kaiming-uniform W_enc and W_dec (bound sqrt(6 / size(1))), biases zero,
 * then W_dec rows scaled to unit norm. Other architectures then set W_enc = W_dec^T (their papers'
 * init), and jumprelu's log_threshold = log(threshold); r_mag and b_mag start at zero. */
void saefw_sae_init_params(saefw_sae *sae, saefw_rng *rng);
/* The April 2024 recipe's init: W_dec rows in random (normal) directions with norm 0.1, W_enc = W_dec^T
 * (needs d_out == d_in), biases zero. */
void saefw_sae_init_april(saefw_sae *sae, saefw_rng *rng);
/* Fill a view of tensor i as the plugin ABI describes it. */
void saefw_sae_param_view(saefw_sae *sae, int i, saefw_param *out);

/* Which kernels run after the encoder product. */
typedef enum {
    SAEFW_SAE_AUTO = 0,   /* sparse when at most SAEFW_SAE_SPARSE_MAX_FRACTION of acts is active */
    SAEFW_SAE_DENSE = 1,  /* always the dense products */
    SAEFW_SAE_SPARSE = 2, /* always the sparse kernels (the scratch then holds every entry: tests) */
} saefw_sae_path;

/* Fraction of active entries of a batch (L0 / d_sae) up to which AUTO takes the sparse path: above
 * it the dense products on OpenBLAS are faster (measured: BENCHMARKS.md). */
#define SAEFW_SAE_SPARSE_MAX_FRACTION 0.10

/* Path for step and evaluation scratch allocated from now on; SAEFW_SAE_AUTO, the default, defers to
 * the environment variable SAEFW_SAE_PATH (auto, dense or sparse) when it is set. */
void saefw_sae_set_path(saefw_sae_path path);

/* Rows of dLoss/d(pre-activation) the dense backward makes at a time. */
#define SAEFW_DENSE_PIECE 512

/* Rows of evaluation batches (feature frequencies, the reconstruction score) run through the SAE at a
 * time: their scratch space stays small next to the training step's. */
#define SAEFW_EVAL_PIECE 512

/* Bytes held by an SAE's step scratch of `cap` rows that the training step writes (an estimate of
 * the resident part of saefw_sae_step_alloc's arrays at a low L0; an evaluation scratch of `cap` rows
 * holds no more). */
double saefw_sae_work_estimate(int64_t d_in, int64_t d_sae, int64_t cap);
/* The same for the SAE's own architecture (the generic path's scratch for those beyond relu). */
double saefw_sae_step_estimate(const saefw_sae *sae, int64_t cap);

/* With a target y (transcoder), y takes x's place in l2 and explained_variance. Without a target (a
 * transcoder's forward pass given x alone) l2, loss and explained_variance are NaN. */
typedef struct {
    double loss, l2, l1;       /* l2: mean over rows of sum over d_out; l1: the penalty term with l1_coeff
                                * (plain: l1_coeff * sum of |acts|; decoder_norm: see saefw_l1_weighting) */
    double l0;                 /* mean number of active features per row */
    double explained_variance; /* 1 - sum (x - x_hat)^2 / sum (x - mean(x))^2, over the batch */
} saefw_sae_stats;

/* ---- the training step ---- */

/* Scratch space of the training step for batches of up to cap rows. No [batch, d_sae] array is kept:
 * the activations exist as the active entries (sparse path) or a piece of rows at a time (dense path). */
typedef struct saefw_sae_step saefw_sae_step;

/* Allocate a step's scratch, sized for the path saefw_sae_set_path (or SAEFW_SAE_PATH) asks for; an
 * unknown SAEFW_SAE_PATH value is an error. Free with saefw_sae_step_free (NULL is allowed). */
int saefw_sae_step_alloc(saefw_sae_step **out, const saefw_sae *sae, int64_t cap, char *err, size_t errlen);
void saefw_sae_step_free(saefw_sae_step *s);
/* Rows the scratch was allocated for. */
int64_t saefw_sae_step_cap(const saefw_sae_step *s);
/* Hand the pages of the scratch's large arrays back to the system between steps (e.g. while an
 * evaluation needs memory of its own); nothing of the last step is kept. */
void saefw_sae_step_release(saefw_sae_step *s);

/* One training step's SAE part on B <= cap rows x [B, d_in]: the forward pass, its statistics (stats may
 * be NULL) and the backward pass, which overwrites sae->grads (all four tensors, in their documented
 * layouts). The path (dense or sparse) is chosen per batch; both give the same results up to float
 * rounding. */
void saefw_sae_train_step(saefw_sae *sae, saefw_sae_step *s, const float *x, int64_t B, saefw_sae_stats *stats);
/* The same with a target y [B, d_out] (a transcoder's); y NULL means y = x, which needs d_out == d_in
 * (otherwise nothing is computed: the gradients are zeroed and stats, when given, are NaN). */
void saefw_sae_train_step_xy(saefw_sae *sae, saefw_sae_step *s, const float *x, const float *y, int64_t B,
                             saefw_sae_stats *stats);
/* Data parallel: take l2's mean in the gradient over `rows` (the global batch) instead of each call's
 * B, so that the ranks' gradients add up to the global batch's. 0 (the default) restores B. */
void saefw_sae_step_set_norm_rows(saefw_sae_step *s, int64_t rows);
/* Data parallel, AuxK (topk): fn(ud, fired, d_sae) makes fired [d_sae] (1: the latent fired on this
 * call's rows) the global batch's flags, alike on every rank, before the dead-latent counters read them
 * (sae_arch.h). No effect on relu. */
void saefw_sae_step_set_fired_exchange(saefw_sae_step *s, void (*fn)(void *ud, unsigned char *fired, int64_t n),
                                       void *ud);
/* The path the last step took: SAEFW_SAE_DENSE or SAEFW_SAE_SPARSE (benchmarks and tests). */
saefw_sae_path saefw_sae_step_path(const saefw_sae_step *s);
/* The activations [B, d_sae] of the last step's batch, made on the first request after it (the first
 * request allocates them; on the dense path they are the encoder product again, with the SAE's current
 * encoder). Valid until the next step or release. NULL with err when out of memory. */
const float *saefw_sae_step_acts(const saefw_sae *sae, saefw_sae_step *s, char *err, size_t errlen);
/* Adds to count [d_sae] the rows of the last step's batch on which each feature fired (from the active
 * entries on the sparse path, from saefw_sae_step_acts on the dense one). -1 with err when out of
 * memory. */
int saefw_sae_step_count_active(const saefw_sae *sae, saefw_sae_step *s, int64_t *count, char *err, size_t errlen);

/* Remove from W_dec's gradient its component along each normalised W_dec row, then set W_dec to
 * the normalised rows (the seed's make_decoder_weights_and_grad_unit_norm); rows of d_out. */
void saefw_sae_project_decoder(saefw_sae *sae);
/* The same for W_dec rows [r0, r1) only (a ZeRO-1 rank's own rows): each row's result is the bits the
 * whole projection gives it. */
void saefw_sae_project_decoder_rows(saefw_sae *sae, int64_t r0, int64_t r1);

/* ---- evaluation: a forward pass that changes nothing but its own scratch ---- */

/* Scratch space of the evaluation forward pass for batches of up to cap rows. */
typedef struct saefw_sae_eval saefw_sae_eval;

/* Allocate an evaluation scratch (the path as for saefw_sae_step_alloc). Free with saefw_sae_eval_free
 * (NULL is allowed). */
int saefw_sae_eval_alloc(saefw_sae_eval **out, const saefw_sae *sae, int64_t cap, char *err, size_t errlen);
void saefw_sae_eval_free(saefw_sae_eval *e);
int64_t saefw_sae_eval_cap(const saefw_sae_eval *e);

/* Forward pass of B <= cap rows x [B, d_in]; stats may be NULL. Returns x_hat [B, d_out], which lives in
 * e until the next forward pass on it. The results are the training step's, bit for bit. */
const float *saefw_sae_eval_forward(const saefw_sae *sae, saefw_sae_eval *e, const float *x, int64_t B,
                                    saefw_sae_stats *stats);
/* The same with a target y [B, d_out] for the statistics; y NULL: x when d_out == d_in, else none. */
const float *saefw_sae_eval_forward_xy(const saefw_sae *sae, saefw_sae_eval *e, const float *x, const float *y,
                                       int64_t B, saefw_sae_stats *stats);
/* The activations [B, d_sae] of the last forward pass, made on the first request after it (the first
 * request allocates them). NULL with err when out of memory. */
const float *saefw_sae_eval_acts(const saefw_sae *sae, saefw_sae_eval *e, char *err, size_t errlen);
/* Adds to count [d_sae] the rows of the last forward pass on which each feature fired. -1 with err when
 * out of memory. */
int saefw_sae_eval_count_active(const saefw_sae *sae, saefw_sae_eval *e, int64_t *count, char *err, size_t errlen);
/* Per-row loss [B] (l2 + l1 of that row) of the last forward pass, whose target (its input x, or y for
 * a transcoder) was x [B, d_out]. -1 with err when out of memory. */
int saefw_sae_eval_row_loss(const saefw_sae *sae, saefw_sae_eval *e, const float *x, float *loss, char *err,
                            size_t errlen);

/* The active entries of a batch by feature: feature j's are [start[j], start[j + 1]) of row and act,
 * rows ascending. */
typedef struct {
    const int64_t *start; /* [d_sae + 1] */
    const int32_t *row;
    const float *act; /* > 0 */
} saefw_sae_entries;

/* 1 with *out set when the last forward pass took the sparse path (its activations are then exactly
 * these entries, valid until the next forward pass on e); 0 on the dense path (ask saefw_sae_eval_acts). */
int saefw_sae_eval_entries(const saefw_sae_eval *e, saefw_sae_entries *out);

#endif
