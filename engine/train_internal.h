/* Inside the training run (engine/train*.c): the run's state and what its files share. Not an API. */
#ifndef SAEFW_TRAIN_INTERNAL_H
#define SAEFW_TRAIN_INTERNAL_H

#include <signal.h>
#include <stdio.h>

#include "rng.h"
#include "state.h"
#include "train.h"
#include "util.h"

#define SAEFW_TRAIN_FAULT_SIGS 5

struct saefw_run {
    const saefw_train_opts *o;
    saefw_sae *sae;
    saefw_sae_step *work;
    saefw_sae_eval *sample_work; /* for sample_activations, allocated on first use */
    saefw_source *eval_src;
    float *batch;         /* [batch, d_in] */
    float *batch_xy;      /* a transcoder's batch as the buffer gives it, [batch, d_in + d_out]; else NULL */
    float *batch_y;       /* its target columns [batch, d_out]; else NULL */
    int64_t batch_rows;   /* rows of batch and work.acts valid for plugins (0 outside a step) */
    int64_t *feat_counts; /* [d_sae]: batch_feature_counts, made on the first request of a step */
    int64_t counts_step;  /* the step they were made for, or -1 */
    float *freq;          /* [d_sae]: the latest eval's feature frequencies, for sparsity.safetensors */
    saefw_rng rng;
    int64_t step, tokens;
    double lr; /* the learning rate the optimizer applies (host learning_rate / set_learning_rate) */
    void *opt_self;
    void **plug_self;
    const char *current;   /* name of the plugin whose callback runs */
    const char *callback;  /* and that callback's name, for the crash report */
    int64_t ckpt_next;     /* the step the last checkpoint resumes at (0: none yet) */
    const char *ckpt_path; /* that checkpoint's folder, or NULL */
    int n_extra;
    char extra_name[SAEFW_MAX_EXTRA_METRICS][48];
    double extra_value[SAEFW_MAX_EXTRA_METRICS];
    FILE *metrics;          /* metrics.jsonl, or NULL */
    int64_t metrics_lines;  /* lines in metrics.jsonl */
    cJSON *changes;         /* configuration changes accepted at resumes: [{step, key, from, to}] */
    const char *stopped_by; /* the event whose callback asked the run to end after this step */
    char metric_error[256]; /* a metric that could not be recorded (the run stops with this) */
    double t0;              /* when this process started training */
    double elapsed_before;  /* seconds spent before a resume, for the reported rate */
    saefw_time_split time;  /* where the run's wall time went (m.time at events) */
    /* The loop's own state (saefw_trainer_open .. saefw_trainer_close). */
    saefw_train_result res; /* what saefw_trainer_close hands back */
    char resume_dir[4096];  /* the checkpoint this run resumed from */
    saefw_metrics m;        /* the latest step's figures (the eval's stay until the next eval) */
    saefw_buffer *buf;      /* o->buffer, or NULL when batches come from o->next_batch */
    int64_t B;              /* rows per step */
    int64_t next;           /* the next step to run */
    int tty, plain;         /* live progress line on a terminal; plain progress lines */
    double last_draw;       /* when the live line was last drawn */
    int64_t tokens0;        /* tokens seen when this process started training */
    double mem_estimate;
    int lock_fd;                /* the run folder's lock, or -1 */
    int opt_created, n_created; /* optimizer and hook instances to destroy */
    int handlers_set, signals_set, failed;
    struct sigaction old_fault[SAEFW_TRAIN_FAULT_SIGS];
    stack_t old_ss;
    saefw_run *crash_prev; /* the trainer the crash handler named before this one opened (trainers nest) */
    saefw_stop_scope stop_scope;
    /* Data parallel (dist.h): rank of ranks trains on rows [row0, row0 + rows) of each global batch of B
     * rows; one rank: 0 and B. */
    int rank, ranks;
    int64_t row0, rows;
    /* The buffer holds this rank's share of the token rows (saefw_buffer.take): each batch is only this
     * rank's rows, at row0 = 0 of batch. */
    int sharded;
    double comm_s; /* seconds in the step's sums across ranks (part of time.step) */
    /* ZeRO-1 (train_zero.c): the parameter block cut into row-aligned ranges, rank r owning
     * [zbounds[r], zbounds[r + 1]); the gradient sum goes by this layout on more than one rank, so
     * zero = 1 and 0 give the same bytes. zero: the optimizer sees and keeps only this rank's range. */
    int zero;
    int64_t *zbounds;
};

/* train_host.c: a plugin's log line (also the engine's warnings about plugins). */
void saefw_train_host_log(saefw_run *run, int level, const char *msg);
/* A plugin's error message: its buffer ended by the host (a plugin may fill it without a NUL). */
const char *saefw_train_plugin_msg(char *perr, size_t n, const char *fallback);

/* train_host.c: the feature frequencies over `rows` rows of the evaluation draws, drawn at the step's
 * capacity; data parallel, each rank counts its share of the rows and the counts are summed, so that
 * every rank gets the global frequencies. */
int saefw_train_frequencies(saefw_run *run, int64_t rows, float *freq, char *err, size_t errlen);

/* train_report.c: the progress line (tty: redrawn in place), the eval line, and an event: its
 * metrics.jsonl line and the callback. saefw_train_emit returns 0, or -1 with err; a callback asking
 * to stop (SAEFW_EVENT_STOP) ends the run after this step as if it were the last (run->stopped_by). */
void saefw_train_progress_line(const saefw_metrics *m, int tty);
void saefw_train_eval_line(const saefw_run *run, const saefw_metrics *m);
int saefw_train_emit(saefw_run *run, saefw_event event, saefw_metrics *m, char *err, size_t errlen);

/* train_state.c: restore a run from a checkpoint folder (returns the step to continue from, or -1
 * with err); write a checkpoint folder (name NULL: the next numbered one), with_state adding the
 * training state as of the start of step `next`. */
int64_t saefw_train_read_state(saefw_run *run, const char *dir, char *err, size_t errlen);
int saefw_train_save_checkpoint(saefw_run *run, const char *name, const saefw_metrics *m, int64_t next, int with_state,
                                saefw_train_result *res, char *err, size_t errlen);

/* train_zero.c: ZeRO-1. setup checks the options (-1 with err) and cuts the layout (on more than one
 * rank, or with zero); grad_sum makes this rank's range of the gradients the sum over ranks (and, without
 * zero, all of them); project is the decoder projection of the rows this rank updates; gather_params
 * gives every rank the others' updated ranges; opt_view says whether param_get hands out this
 * rank's slice now (zero, inside an optimizer callback) and slice fills it; save_shadow is a
 * non-zero rank's part of rank 0's checkpoint (the optimizer's save_state, gathered). */
int saefw_train_zero_setup(saefw_run *run, char *err, size_t errlen);
/* The layout: P ranges b [P + 1] of the parameter block, cut on row boundaries (also for bench_dist). */
void saefw_train_zero_layout(const saefw_sae *sae, int P, int64_t *b);
int saefw_train_zero_grad_sum(saefw_run *run, char *err, size_t errlen);
void saefw_train_zero_project(saefw_run *run);
int saefw_train_zero_gather_params(saefw_run *run, char *err, size_t errlen);
int saefw_train_zero_opt_view(const saefw_run *run);
void saefw_train_zero_slice(const saefw_run *run, int i, saefw_param *v);
int saefw_train_zero_save_shadow(saefw_run *run, char *err, size_t errlen);
/* The host's state_put_f32_param / state_get_f32_param: data is laid out like tensor i as the
 * optimizer sees it (its slice under zero); the entry is always the whole tensor. */
int saefw_train_zero_put(saefw_run *run, saefw_state_out *w, const char *name, const float *data, int i, char *err,
                         size_t errlen);
int saefw_train_zero_get(saefw_run *run, saefw_state_in *r, const char *name, float *data, int i, char *err,
                         size_t errlen);

#endif
