/* The training loop: batch -> forward -> backward -> decoder projection + renorm -> after_backward
 * hooks -> optimizer step -> after_step hooks -> metrics -> eval / checkpoint, with the plugin host. */
#ifndef SAEFW_TRAIN_H
#define SAEFW_TRAIN_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "plugin_loader.h"
#include "sae.h"
#include "source.h"

#define SAEFW_MAX_EXTRA_METRICS 32
#define SAEFW_MAX_SCORES 8
/* Upper bound of an evaluation's batch counts (freq_batches, recons_batches): more is a typo, not a plan. */
#define SAEFW_MAX_EVAL_BATCHES 10000

/* Wall time of a run's parts in seconds, cumulative over the run (a resumed run continues the sums). */
typedef struct {
    double step;       /* the SAE step: forward, backward, decoder projection, optimizer */
    double batch;      /* taking a batch from the buffer, refills excluded */
    double refill;     /* buffer refills (on a model source: the model forward) */
    double eval_freq;  /* evaluation: feature frequencies (their activations included) */
    double eval_other; /* evaluation: the evaluators (reconstruction score, MMCS) */
    double checkpoint; /* checkpoints and the training state */
    double plugins;    /* plugin hooks other than the optimizer (resampling, interventions) */
    double logging;    /* metrics.jsonl lines, event callbacks, progress lines */
    double total;      /* the whole loop; total minus the parts above is the rest */
} saefw_time_split;

/* One line: the total, then each part in seconds and percent of the total, then the rest. */
void saefw_time_split_format(const saefw_time_split *t, char *out, size_t n);

/* What the loop reports at its events. Eval fields are set only when has_eval. */
typedef struct {
    int64_t step, steps, tokens;
    double loss, l2, l1, l0, explained_variance;
    double tokens_per_s, elapsed_s;
    int has_eval;
    double frac_dead, frac_below_1e6, frac_below_1e5;
    /* Summary scores of the evaluators (e.g. "mmcs"), with the label the eval line prints. */
    int n_score;
    char score_name[SAEFW_MAX_SCORES][48];
    char score_label[SAEFW_MAX_SCORES][16];
    double score_value[SAEFW_MAX_SCORES];
    /* Extra metrics recorded through the host's metric() by plugins and evaluators. */
    int n_extra;
    char extra_name[SAEFW_MAX_EXTRA_METRICS][48];
    double extra_value[SAEFW_MAX_EXTRA_METRICS];
    saefw_time_split time; /* up to this event (written to metrics.jsonl at eval and end events) */
} saefw_metrics;

/* The loop's events: LOG every log_every steps, EVAL every eval_every steps, END after the final
 * evaluation and checkpoint. */
typedef enum { SAEFW_EVENT_LOG = 0, SAEFW_EVENT_EVAL, SAEFW_EVENT_END } saefw_event;
/* "log", "eval", "end": the event's name in metrics.jsonl and Lua. */
const char *saefw_event_name(saefw_event e);

/* Why saefw_train returned. */
typedef enum {
    SAEFW_STOP_DONE = 0, /* every step ran */
    SAEFW_STOP_ERROR,    /* a failure: err says which */
    SAEFW_STOP_SIGNAL,   /* SIGINT or SIGTERM; a checkpoint was saved */
    SAEFW_STOP_CALLBACK, /* the event callback asked to stop; the run was finished there */
} saefw_stop_reason;
const char *saefw_stop_reason_name(saefw_stop_reason r);

/* Event callback: return SAEFW_EVENT_GO_ON (0) to continue; SAEFW_EVENT_STOP to end the run after
 * this step as if it were the last (final evaluation, final checkpoint, end event; saefw_train
 * returns 0 with result->stop = SAEFW_STOP_CALLBACK and result->stopped_by set); -1 with err filled
 * to stop it with that error. */
#define SAEFW_EVENT_GO_ON 0
#define SAEFW_EVENT_STOP 1
typedef int (*saefw_train_event_fn)(void *ud, saefw_event event, const saefw_metrics *m, char *err, size_t errlen);

/* An evaluation the loop runs at every eval (engine/eval.h). */
typedef struct saefw_evaluator saefw_evaluator;

typedef struct {
    saefw_loaded_plugin *plugin;
    saefw_opts *opts;
    void *self; /* the instance, for plugins without create() (plugins written in Lua) */
} saefw_plugin_use;

typedef struct {
    saefw_sae *sae;
    saefw_buffer *buffer; /* training batches */
    /* Instead of a buffer: a function that writes the next batch [batch_size, d_in] (for callers
     * that feed batches themselves, e.g. tests replaying fixed batches). */
    int (*next_batch)(void *ud, float *out, int64_t batch_size, char *err, size_t errlen);
    void *next_batch_ud;
    int64_t batch_size;        /* with next_batch only */
    saefw_source *eval_source; /* evaluation draws; NULL: the buffer's source (required with next_batch) */
    int64_t steps;             /* optimizer steps to take */
    double lr;                 /* > 0: the initial learning rate; else the optimizer's "lr" option (0 without one) */
    saefw_plugin_use optimizer;
    const saefw_plugin_use *plugins;
    int n_plugins;
    int64_t log_every, eval_every, checkpoint_every; /* 0 disables */
    int64_t freq_batches;                            /* eval batches for feature frequencies (the seed uses 5) */
    const char *run_dir;                             /* checkpoints and metrics.jsonl; NULL: none */
    const cJSON *cfg;                                /* fields written into every cfg.json (may be NULL) */
    uint64_t seed;
    int progress; /* -1: live line on a terminal, plain lines otherwise; 0: quiet */
    saefw_train_event_fn on_event;
    void *event_ud;
    /* Evaluations at every eval after the feature frequencies, in this order (e.g. the
     * reconstruction score on the model, MMCS on a synthetic source); their generators are saved
     * with the training state. Borrowed. */
    saefw_evaluator *const *evaluators;
    int n_evaluators;
    /* Continue the run in run_dir from its newest intact checkpoint: weights, optimizer and plugin
     * state, counters, generators, token position and buffer are restored, metrics.jsonl is cut back
     * to that step, and training goes on as if never interrupted. A run that stopped before its first
     * checkpoint starts over; a finished run, a missing folder or one whose checkpoints are all
     * damaged is refused. Without resume, run_dir must be absent or empty. The run folder is locked
     * for the whole run either way: a second writer is refused. */
    int resume;
    /* Continue from this checkpoint folder instead of the newest one in run_dir (implies resume). */
    const char *resume_from;
    /* Names of the configuration keys a resume may change ("lr", "adam.lr", "train.steps", "train.clip_grad_norm",
     * "plugins"); any other difference from the recorded configuration is refused. */
    const char *const *allow_change;
    int n_allow_change;
    /* The 2024 recipe's trainer options; zero gives the seed's step. clip_grad_norm > 0: after the
     * backward pass (and the decoder projection), scale all gradients together to a 2-norm of at most
     * this (saefw_clip_grad_norm), before the after_backward hooks; metrics grad_norm and clip_coef.
     * free_decoder: no decoder-gradient projection and no decoder renorm (unit_norm_decoder = false). */
    double clip_grad_norm;
    int free_decoder;
    /* 1: ZeRO-1 under mpirun: each rank keeps the optimizer's state for its slice of every tensor's rows
     * only (gradients reduce-scattered, weights all-gathered after the step; train_zero.c). The
     * weights are the same bytes as with 0; checkpoints are the same format. */
    int zero;
    /* Non-NULL: this run is one of several on one buffer (saefw_multi_open): its progress, eval and
     * summary lines start with "[label] " and are plain lines, never a redrawn one. */
    const char *label;
    /* 1: no memory estimate line and no refusal at open (the caller checked the runs together). */
    int no_memory_check;
} saefw_train_opts;

typedef struct {
    int64_t steps_done;
    saefw_metrics last;
    char last_checkpoint[4096];
    saefw_stop_reason stop;
    int interrupted;        /* signal number that stopped the run, or 0 */
    int64_t resumed_at;     /* the step a resumed run started from (0 for a fresh run) */
    const char *stopped_by; /* the event whose callback ended the run early ("log", "eval"), or NULL */
} saefw_train_result;

/* Run the loop. Returns 0 when all steps ran; -1 with err on any failure (a NaN loss, a plugin
 * error, I/O). SIGINT/SIGTERM save a checkpoint and return -1 with result->interrupted set.
 * result->stop says which. */
int saefw_train(const saefw_train_opts *o, saefw_train_result *result, char *err, size_t errlen);

/* A training run driven one step at a time, for callers that interleave steps with their own work
 * (several SAEs on one buffer, ranks). saefw_train is open, step until it returns 0, close.
 * saefw_trainer_open checks the options, locks and prepares run_dir, creates the plugin instances and
 * restores a resumed run; `o` and everything it points to must outlive the trainer. 0 or -1 with err
 * (nothing is left open then). */
typedef struct saefw_run saefw_trainer;
int saefw_trainer_open(const saefw_train_opts *o, saefw_trainer **t, char *err, size_t errlen);
/* One optimizer step with its log line, evaluation and checkpoint when due. Returns 1 when a step
 * ran, 0 when there is none left to run (all steps done, SIGINT/SIGTERM, or an event callback asked
 * to stop), -1 with err on a failure (the trainer can then only be closed). */
int saefw_trainer_step(saefw_trainer *t, char *err, size_t errlen);
/* As saefw_trainer_step, but a pending SIGINT/SIGTERM does not keep the step from running (its
 * evaluation may still stop early): trainers stepping together on one batch all take the step that
 * the first of them took, so that their checkpoints are at the same step. */
int saefw_trainer_step_anyway(saefw_trainer *t, char *err, size_t errlen);
/* The step the trainer runs next (the steps done so far). */
int64_t saefw_trainer_next_step(const saefw_trainer *t);
/* Finish the run (after a signal: a checkpoint to resume from; else the final evaluation, on_end
 * hooks, final checkpoint and end event), fill *res (may be NULL), and free the trainer. After a
 * failed step it only frees and returns -1, leaving err as the step left it. Otherwise the same
 * return as saefw_train. */
int saefw_trainer_close(saefw_trainer *t, saefw_train_result *res, char *err, size_t errlen);

/* Feature frequencies over `rows` rows drawn from src [d_sae], run through the SAE `chunk` rows at a time. */
int saefw_feature_frequencies(const saefw_sae *sae, saefw_source *src, int64_t rows, int64_t chunk, float *freq,
                              char *err, size_t errlen);
/* Rows in one evaluation batch of src: a model batch for sources with natural chunks, else `batch`. */
int64_t saefw_eval_batch_rows(const saefw_source *src, int64_t batch);

/* The host table every plugin receives. */
const saefw_host *saefw_host_table(void);

#endif
