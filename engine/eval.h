/* Evaluators: what the training loop measures at every evaluation beyond the feature frequencies
 * (the reconstruction score on the model host, MMCS against a synthetic source's true features),
 * and the model-loss evaluations the Lua layer and the benchmarks share. */
#ifndef SAEFW_EVAL_H
#define SAEFW_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "model_source.h"
#include "rng.h"
#include "sae.h"
#include "source.h"
#include "train.h"

/* An evaluator the loop calls at every eval, in the order given, after the feature frequencies. It
 * records its figures with saefw_host_table()->metric(run, ...) (extra metrics, after the plugins')
 * or saefw_metrics_add_score (summary scores: printed, in metrics.jsonl right after the frequencies,
 * in cfg.json's final_metrics). Implementations embed it as their first member. */
struct saefw_evaluator {
    const char *name;
    /* Return 0, or -1 with err (the run stops with "evaluator <name>: <err>"). */
    int (*evaluate)(saefw_evaluator *ev, saefw_run *run, const saefw_sae *sae, saefw_metrics *m, char *err,
                    size_t errlen);
    saefw_rng *rng;       /* a generator a resumed run restores (NULL: none) */
    const char *rng_name; /* its unique name in the training state */
};

/* Add (or overwrite) a summary score; `label` is how the eval line prints it. -1 when the list is full. */
int saefw_metrics_add_score(saefw_metrics *m, const char *name, const char *label, double value);
/* A figure of m by name: a summary score or an extra metric; NaN when absent. */
double saefw_metrics_get(const saefw_metrics *m, const char *name);

/* The seed's reconstruction score (saefw_recons_score) on `batches` batches of `model_batch` random
 * sequences, recorded as the extra metrics recons_score, loss_clean, loss_recons and loss_zero_abl.
 * Its generator is derived from `seed` and saved with the training state as "recons_rng". The model
 * and tokens are borrowed and must outlive the evaluator. */
typedef struct {
    saefw_evaluator ev;
    const saefw_model *model;
    const saefw_tokens *tokens;
    saefw_hook hook;
    int64_t batches, model_batch;
    saefw_rng rng;
    saefw_recons last; /* the latest evaluation */
} saefw_recons_evaluator;

void saefw_recons_evaluator_init(saefw_recons_evaluator *e, const saefw_model *model, const saefw_tokens *tokens,
                                 saefw_hook hook, int64_t batches, int64_t model_batch, uint64_t seed);

/* MMCS of the SAE's decoder rows against the true features of a synthetic source, recorded as the
 * summary score "mmcs" (printed "MMCS"). -1 with err when the source has no ground truth. The source
 * is borrowed. */
typedef struct {
    saefw_evaluator ev;
    const float *truth; /* [n_truth, d_in] */
    int64_t n_truth;
} saefw_mmcs_evaluator;

int saefw_mmcs_evaluator_init(saefw_mmcs_evaluator *e, const saefw_source *src, char *err, size_t errlen);

/* The mean next-token loss over `batches` batches of `model_batch` random sequences drawn with a
 * generator seeded from `seed`: clean with ablate NONE, else with the hook zero- or mean-ablated (the
 * mean measured first over as many batches, drawn from a generator derived from the same seed). */
int saefw_eval_model_loss(const saefw_model *m, const saefw_tokens *t, saefw_hook hook, saefw_intervene_mode ablate,
                          int64_t batches, int64_t model_batch, uint64_t seed, double *loss, char *err, size_t errlen);

#endif
