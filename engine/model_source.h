/* Activations from the model host as a source for the buffer, and the reconstruction score. */
#ifndef SAEFW_MODEL_SOURCE_H
#define SAEFW_MODEL_SOURCE_H

#include "model.h"
#include "sae.h"
#include "source.h"
#include "tokens.h"

/* Sequences per forward inside the engine: larger model batches are run in pieces of this size so
 * memory stays bounded; means over equal pieces equal the mean over the whole batch. */
#define SAEFW_FORWARD_CHUNK 32
/* Upper bound of a model batch, in sequences (the seed's is 512): more is a typo, not a plan. */
#define SAEFW_MAX_MODEL_BATCH 65536

typedef struct {
    const saefw_model *model; /* borrowed: must outlive the source */
    saefw_tokens *tokens;     /* borrowed: must outlive the source */
    saefw_hook hook;
    int64_t model_batch; /* sequences per model batch (the seed: batch_size / seq_len * 16) */
    uint64_t seed;       /* evaluation draws */
} saefw_model_source_opts;

/* The training stream runs the model over the token stream, model_batch sequences at a time, and
 * yields the activations at the hook ([sequences * seq_len, width], every position), stopping the
 * forward after the hook's layer. chunk_rows is one model batch of rows. */
int saefw_source_model(const saefw_model_source_opts *o, saefw_source **out, char *err, size_t errlen);
/* The same for a transcoder's data: rows [hook | hook_out] (the input site's activations, then the target
 * site's, which must come after the input site in the forward), [width + width_out] wide, and the
 * source's d_target is width_out. */
int saefw_source_model_xy(const saefw_model_source_opts *o, saefw_hook hook_out, saefw_source **out, char *err,
                          size_t errlen);

/* A second model source with src's options (model, tokens, hook, model batch, seed): its evaluation
 * draws (sample) have a generator of their own, starting where src's started, so that each of several
 * SAEs trained on one buffer is evaluated on the rows it would get alone. Its training stream is the
 * same token stream as src's: use it for sample only. -1 with err when src is not a model source. */
int saefw_source_model_eval_copy(const saefw_source *src, saefw_source **out, char *err, size_t errlen);

typedef struct {
    double score; /* (loss_zero - loss_recons) / (loss_zero - loss_clean) */
    double loss_clean, loss_recons, loss_zero;
} saefw_recons;

/* The seed's reconstruction score: n_batches batches of model_batch random sequences; each batch's
 * next-token loss clean, with the hook replaced by the SAE's reconstruction, and zero-ablated;
 * the three means over batches give the score. */
int saefw_recons_score(const saefw_model *m, const saefw_tokens *tok, saefw_hook hook, const saefw_sae *sae,
                       int64_t n_batches, int64_t model_batch, saefw_rng *rng, saefw_recons *out, char *err,
                       size_t errlen);

/* The same score on fixed token rows [n_batches * model_batch, seq_len] (ids checked by the forward).
 * With with_base the clean and zero-ablated losses are computed too; without, out's loss_clean and
 * loss_zero are taken as they are (from an earlier call on the same rows) and only the loss with the
 * SAE is computed: one forward per batch instead of three. */
int saefw_recons_score_fixed(const saefw_model *m, const saefw_tokens *tok, saefw_hook hook, const saefw_sae *sae,
                             const int32_t *rows, int64_t n_batches, int64_t model_batch, int with_base,
                             saefw_recons *out, char *err, size_t errlen);

/* The reconstruction score of a transcoder (sae->transcoder): the target hook (e.g. hook_mlp_out) replaced
 * by the transcoder's output computed from the input hook's activations of the same forward. rows NULL:
 * random batches from rng (the base losses always computed); else fixed rows as
 * saefw_recons_score_fixed, with_base saying whether the clean and zero-ablated losses are computed. */
int saefw_transcoder_recons_score(const saefw_model *m, const saefw_tokens *tok, saefw_hook hook_in,
                                  saefw_hook hook_out, const saefw_sae *sae, const int32_t *rows, int64_t n_batches,
                                  int64_t model_batch, saefw_rng *rng, int with_base, saefw_recons *out, char *err,
                                  size_t errlen);

/* The score of either kind (hook_in NULL: an SAE at hook; else a transcoder from hook_in to hook) on
 * fixed rows (rng unused) or, rows NULL, on random batches from rng (the base losses always computed),
 * that also counts features: adds to count [d_sae] the rows of the forward with the SAE on which each
 * feature fired (the evaluation pass's own activations, no second SAE pass) and sets *counted to the
 * rows it counted (n_batches * model_batch * seq_len when it succeeds). count NULL: nothing counted. */
int saefw_recons_score_counting(const saefw_model *m, const saefw_tokens *tok, const saefw_hook *hook_in,
                                saefw_hook hook, const saefw_sae *sae, const int32_t *rows, int64_t n_batches,
                                int64_t model_batch, saefw_rng *rng, int with_base, int64_t *count, int64_t *counted,
                                saefw_recons *out, char *err, size_t errlen);

/* 1 when hook a comes strictly before hook b in a forward pass (layers, then the order within a layer). */
int saefw_hook_before(saefw_hook a, saefw_hook b);

/* Mean next-token loss over n_batches random batches with an intervention (NULL: clean). */
int saefw_model_loss(const saefw_model *m, const saefw_tokens *tok, const saefw_intervention *iv, int64_t n_batches,
                     int64_t model_batch, saefw_rng *rng, double *loss, char *err, size_t errlen);

/* Mean activation at the hook [width] over n_batches random batches (for mean-ablation). */
int saefw_hook_mean(const saefw_model *m, const saefw_tokens *tok, saefw_hook hook, int64_t n_batches,
                    int64_t model_batch, saefw_rng *rng, float *mean, char *err, size_t errlen);

#endif
