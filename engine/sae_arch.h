/* Internal to the SAE: the generic path of the architectures other than the seed's ReLU (sae_arch.c),
 * which saefw_sae_train_step, saefw_sae_eval_forward and their companions in sae.c dispatch to. */
#ifndef SAEFW_SAE_ARCH_H
#define SAEFW_SAE_ARCH_H

#include "sae.h"

typedef struct saefw_arch_work saefw_arch_work;

/* The tensor names of arch into names (SAEFW_MAX_PARAMS room); returns their count. */
int saefw_arch_names(saefw_sae_arch arch, const char **names);
/* After the seed's init: W_enc = W_dec^T, jumprelu's log_threshold = log(threshold), the rest zero. */
void saefw_arch_init_params(saefw_sae *sae);

/* Scratch for batches of up to cap rows; path SAEFW_SAE_DENSE makes the decoder and backward products
 * dense, SAEFW_SAE_SPARSE keeps them on the selected entries, AUTO picks per batch by the entries'
 * fraction (SAEFW_SAE_SPARSE_MAX_FRACTION). */
int saefw_arch_work_alloc(saefw_arch_work **out, const saefw_sae *sae, int64_t cap, saefw_sae_path path, char *err,
                          size_t errlen);
void saefw_arch_work_free(saefw_arch_work *a);
/* Bytes of saefw_arch_work_alloc's arrays (automatic path) that a step of cap rows writes: the [cap,
 * d_sae] encoder output among them; entries at k a row (topk, batchtopk) or, for the others, at half
 * the sparse path's largest fraction. */
double saefw_arch_work_estimate(const saefw_sae *sae, int64_t cap);
int64_t saefw_arch_cap(const saefw_arch_work *a);
void saefw_arch_release(saefw_arch_work *a);
/* Tests: AuxK's dead latents are mask [d_sae] (nonzero: dead) instead of the counters' (NULL: the
 * counters again); the counters are still updated. */
void saefw_arch_force_dead(saefw_arch_work *a, const unsigned char *mask);
/* Data parallel: the gradient's means (and the per-batch loss terms of the statistics' l1) over `rows`
 * instead of each batch's own (0 restores that), as saefw_sae_step_set_norm_rows does for relu. */
void saefw_arch_set_norm_rows(saefw_arch_work *a, int64_t rows);
/* Data parallel, AuxK (topk): fn(ud, fired, d_sae) turns fired [d_sae] (1: the latent fired on this
 * rank's rows) into the whole batch's flags, the same on every rank, before the dead-latent counters
 * use them (fn must not return without doing so). NULL: the batch is the whole batch. */
typedef void (*saefw_arch_fired_fn)(void *ud, unsigned char *fired, int64_t n);
void saefw_arch_set_fired_exchange(saefw_arch_work *a, saefw_arch_fired_fn fn, void *ud);
/* 1 when the last batch took the sparse products. */
int saefw_arch_sparse(const saefw_arch_work *a);

/* The training forward and backward pass (the architecture's loss, all gradients), updating the
 * non-parameter state (AuxK's counters, BatchTopK's threshold). */
void saefw_arch_train_step(saefw_sae *sae, saefw_arch_work *a, const float *x, int64_t B, saefw_sae_stats *stats);
/* The inference forward pass (batchtopk: the JumpReLU with threshold theta); returns x_hat. */
const float *saefw_arch_eval_forward(const saefw_sae *sae, saefw_arch_work *a, const float *x, int64_t B,
                                     saefw_sae_stats *stats);
const float *saefw_arch_acts(const saefw_sae *sae, saefw_arch_work *a, char *err, size_t errlen);
int saefw_arch_count_active(const saefw_sae *sae, saefw_arch_work *a, int64_t *count);
int saefw_arch_row_loss(const saefw_sae *sae, saefw_arch_work *a, const float *x, float *loss);

#endif
