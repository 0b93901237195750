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
    /* More state a resumed run restores (NULL: none), under the prefix "eval/<name>/" of the training
     * state. load_state must accept a state without its entries (written before it had any). */
    int (*save_state)(saefw_evaluator *ev, saefw_state_out *st, char *err, size_t errlen);
    int (*load_state)(saefw_evaluator *ev, saefw_state_in *st, char *err, size_t errlen);
    /* Optional (NULL: none): the feature frequencies [d_sae] over the rows its own SAE pass ran on at
     * this eval. When it returns 1, the loop takes them instead of drawing rows of its own for the
     * frequencies, and calls the evaluators first; 0: it counted none this time. */
    int (*feature_freq)(saefw_evaluator *ev, float *freq, int64_t d_sae);
};

/* Add (or overwrite) a summary score; `label` is how the eval line prints it. -1 when the list is full. */
int saefw_metrics_add_score(saefw_metrics *m, const char *name, const char *label, double value);
/* A figure of m by name: a summary score or an extra metric; NaN when absent. */
double saefw_metrics_get(const saefw_metrics *m, const char *name);

/* How the reconstruction score picks its token rows. */
typedef enum {
    /* A held-out set fixed at the first evaluation: the last batches x model_batch rows of the training
     * stream's first pass (disjoint from the rows trained on until the stream gets there; a warning is
     * logged once it does). Its clean and zero-ablated losses are computed once per run and saved with
     * the training state; each later evaluation runs only the forward with the SAE. */
    SAEFW_RECONS_FIXED = 0,
    /* The seed's: fresh random rows at every evaluation (drawn with the evaluator's own generator,
     * which may pick rows the run trains on) and all three losses each time. */
    SAEFW_RECONS_FRESH,
} saefw_recons_mode;

/* "fixed" / "fresh" -> mode; -1 for other names. */
int saefw_recons_mode_parse(const char *name, saefw_recons_mode *out);

/* Where an evaluation's feature frequencies (dead fraction, the sparsity file) are counted. */
typedef enum {
    /* RECONS with the fixed held-out set, SEPARATE with fresh draws (or without a reconstruction score). */
    SAEFW_EVAL_FREQ_AUTO = 0,
    /* Over the reconstruction score's rows, from the activations of its forward with the SAE: no SAE
     * pass of their own (batches x model batch x seq_len rows, the same count as the seed's 5 batches
     * when recons_batches is 5). */
    SAEFW_EVAL_FREQ_RECONS,
    /* The seed's: freq_batches batches of fresh random rows, through the SAE once more. */
    SAEFW_EVAL_FREQ_SEPARATE,
} saefw_eval_freq_mode;

/* "auto" / "recons" / "separate" -> mode; -1 for other names. */
int saefw_eval_freq_mode_parse(const char *name, saefw_eval_freq_mode *out);

/* The seed's reconstruction score (saefw_recons_score, or saefw_recons_score_fixed) on `batches`
 * batches of `model_batch` sequences, recorded as the extra metrics recons_score, loss_clean,
 * loss_recons and loss_zero_abl. Its generator is derived from `seed` and saved with the training
 * state as "recons_rng"; the fixed rows and their clean and zero-ablated losses are saved under
 * "eval/recons_score/". The model and tokens are borrowed and must outlive the evaluator; free it
 * with saefw_recons_evaluator_free. */
typedef struct saefw_recons_evaluator_s {
    saefw_evaluator ev;
    const saefw_model *model;
    const saefw_tokens *tokens;
    saefw_hook hook;
    int64_t batches, model_batch;
    saefw_recons_mode mode;
    saefw_rng rng;
    saefw_recons last;  /* the latest evaluation */
    int32_t *rows;      /* FIXED: [batches * model_batch, seq_len] once drawn, else NULL */
    int has_base;       /* FIXED: last.loss_clean and last.loss_zero hold the set's losses */
    int64_t base_evals; /* how many times this process computed the clean and zero-ablated losses */
    int warned;         /* the stream-reached-the-held-out-rows warning was logged */
    /* A transcoder (set after init): hook is the target site it replaces, read from hook_in's
     * activations (saefw_transcoder_recons_score). */
    int transcoder;
    saefw_hook hook_in;
    /* FIXED, several SAEs on one buffer: once this evaluator (of an SAE that evaluates first) has its
     * held-out rows and their clean and zero-ablated losses, they are copied instead of computed: the
     * same rows and the same figures, one model pass for every SAE. NULL: none. Borrowed. */
    const struct saefw_recons_evaluator_s *base_from;
    /* Set after init: count the feature frequencies in the forward with the SAE (ev.feature_freq). */
    int count_freq;
    int64_t *freq_count; /* [d_sae] of the latest eval, NULL until one counted */
    int64_t freq_rows, freq_d_sae;
} saefw_recons_evaluator;

void saefw_recons_evaluator_init(saefw_recons_evaluator *e, const saefw_model *model, const saefw_tokens *tokens,
                                 saefw_hook hook, int64_t batches, int64_t model_batch, saefw_recons_mode mode,
                                 uint64_t seed);
void saefw_recons_evaluator_free(saefw_recons_evaluator *e);
/* Turn counting on (see count_freq) when `mode` asks for it with this evaluator's recons mode. */
void saefw_recons_evaluator_set_freq(saefw_recons_evaluator *e, saefw_eval_freq_mode mode);

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
