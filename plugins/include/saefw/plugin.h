/* saefw plugin ABI 2: the one header a plugin includes. A plugin is a shared object exporting
 * saefw_plugin_init, which returns a pointer to the plugin's own constant descriptor; the engine
 * copies the first min(plugin's struct_size, engine's) bytes of it and treats the rest as absent.
 * The plugin links to no engine symbol and reaches the engine only through the saefw_host table it
 * is given, whose struct_size says which fields this engine has (SAEFW_HOST_HAS). Structs that
 * cross the boundary are only ever appended to, so plugins and engines built against different
 * minor versions of this header work together in both directions. docs/plugins.md says which
 * version added what. */
#ifndef SAEFW_PLUGIN_H
#define SAEFW_PLUGIN_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped only on an incompatible change; the engine refuses a plugin built for another version. */
#define SAEFW_ABI_VERSION 2u
/* Bumped when fields are appended (informational: struct_size is what the engine and plugins check). */
#define SAEFW_ABI_MINOR 2u

/* Name of the one function a plugin exports. */
#define SAEFW_PLUGIN_ENTRY "saefw_plugin_init"

/* Most dimensions a tensor crossing the boundary has. */
#define SAEFW_PLUGIN_MAX_DIMS 4

typedef struct saefw_run saefw_run;                   /* the engine's training run (opaque) */
typedef struct saefw_opts saefw_opts;                 /* the plugin's options, validated and defaulted (opaque) */
typedef struct saefw_state_writer saefw_state_writer; /* a checkpoint being written (opaque) */
typedef struct saefw_state_reader saefw_state_reader; /* a checkpoint being read on resume (opaque) */

typedef enum {
    SAEFW_KIND_OPTIMIZER = 1,  /* updates the parameters from their gradients in `step` */
    SAEFW_KIND_RESAMPLER = 2,  /* revives dead features, usually in `after_step` */
    SAEFW_KIND_EXPERIMENT = 3, /* intervenes anywhere in the loop: schedules, projections, probes */
} saefw_plugin_kind;

typedef enum {
    SAEFW_OPT_NUMBER = 1,  /* double */
    SAEFW_OPT_INTEGER = 2, /* whole number, read with opt_number */
    SAEFW_OPT_BOOL = 3,    /* read with opt_number: 0 or 1 */
    SAEFW_OPT_STRING = 4,  /* read with opt_string */
} saefw_opt_type;

/* One option a plugin takes. A plugin's list ends with an entry whose name is NULL, and the
 * descriptor's option_size gives the size of one entry (sizeof(saefw_option) of the plugin's header),
 * so entries can grow: the engine reads each entry up to the smaller of the two sizes. The engine
 * rejects any option not listed, type-checks the rest and fills in the defaults. */
typedef struct saefw_option {
    const char *name;
    saefw_opt_type type;
    double def_number;      /* default for NUMBER, INTEGER, BOOL */
    const char *def_string; /* default for STRING (may be NULL: no default, i.e. required) */
    const char *help;
} saefw_option;

/* A named SAE tensor and its gradient, filled by the host. The caller sets struct_size (use
 * SAEFW_PARAM_INIT) and the host writes no byte past it; on return struct_size is the number of
 * bytes the host filled (less than the caller's when the engine is older). A struct_size smaller than
 * ABI 2.0's saefw_param is refused. `data` and `grad` are row-major float32 owned by the engine; a plugin may
 * write both during its callbacks. */
typedef struct saefw_param {
    uint32_t struct_size; /* in: sizeof(saefw_param) of the caller; out: the bytes filled */
    int ndim;             /* 1 .. SAEFW_PLUGIN_MAX_DIMS */
    const char *name;     /* e.g. "W_enc"; the list depends on the architecture */
    float *data;
    float *grad;
    int64_t shape[SAEFW_PLUGIN_MAX_DIMS]; /* entries past ndim are 0 */
    int64_t numel;
} saefw_param;

#define SAEFW_PARAM_INIT                                                                                               \
    { sizeof(saefw_param), 0, NULL, NULL, NULL, {0, 0, 0, 0}, 0 }

enum { SAEFW_LOG_DEBUG = 0, SAEFW_LOG_INFO = 1, SAEFW_LOG_WARN = 2 };

/* What the engine offers a plugin. Every function takes the run the callback was given. Fields are
 * only appended; SAEFW_HOST_HAS(host, field) tells whether this engine's table has one. */
typedef struct saefw_host {
    uint32_t abi_version; /* SAEFW_ABI_VERSION of the engine */
    uint32_t struct_size; /* sizeof(saefw_host) in the engine */

    /* Logging: one line, printed with the plugin's name. */
    void (*log)(saefw_run *run, int level, const char *msg);

    /* Options given to this plugin instance (defaults filled in). Unknown names return 0 / NULL. */
    double (*opt_number)(const saefw_opts *opts, const char *name);
    const char *(*opt_string)(const saefw_opts *opts, const char *name);

    /* The SAE's tensors: a list of param_count entries (how many depends on the architecture; the
     * ReLU SAE has W_enc, W_dec, b_enc, b_dec). Return 0, or -1 when absent or when out->struct_size is
     * too small. param_find's index (may be NULL) is what reset_optimizer_state takes. */
    int (*param_count)(saefw_run *run);
    int (*param_get)(saefw_run *run, int index, saefw_param *out);
    int (*param_find)(saefw_run *run, const char *name, saefw_param *out, int *index);
    int64_t (*d_in)(saefw_run *run);
    int64_t (*d_sae)(saefw_run *run);

    /* Zero the optimizer's state for slices of tensor param_index: along `axis` (0 .. ndim - 1) at the
     * n given indices; idx NULL: the whole tensor; param_index -1: every tensor (idx must be NULL).
     * The engine checks the arguments, then calls the optimizer's reset_state once per tensor. */
    int (*reset_optimizer_state)(saefw_run *run, int param_index, int axis, const int64_t *idx, int64_t n, char *err,
                                 size_t errlen);

    /* The run's seeded random generator (shared by the engine and every plugin, so runs repeat). */
    uint64_t (*rng_u64)(saefw_run *run);
    double (*rng_uniform)(saefw_run *run); /* [0, 1) */
    double (*rng_normal)(saefw_run *run);  /* standard normal */

    /* Counters: steps completed so far (the current step's index inside callbacks) and tokens seen. */
    int64_t (*step)(saefw_run *run);
    int64_t (*tokens_seen)(saefw_run *run);

    /* The learning rate, owned by the engine: it starts at the run's lr (by default the optimizer's
     * "lr" option), an optimizer reads it at every step, and a schedule sets it (in after_backward, to
     * act on this step's update). set_learning_rate refuses a negative or non-finite value. */
    double (*learning_rate)(saefw_run *run);
    int (*set_learning_rate)(saefw_run *run, double lr, char *err, size_t errlen);
    /* The loss coefficients, owned by the engine, by name ("l1" for the ReLU SAE's L1 coefficient).
     * A change takes effect from the next forward pass. Both fail on an unknown name. */
    int (*loss_coeff)(saefw_run *run, const char *name, double *value);
    int (*set_loss_coeff)(saefw_run *run, const char *name, double value, char *err, size_t errlen);

    /* Record a metric for the current step (written to metrics.jsonl with the step's line). */
    void (*metric)(saefw_run *run, const char *name, double value);

    /* Draw n activation rows [n, d_in] from the evaluation stream (not the training batches), and,
     * if loss is not NULL, each row's SAE loss (l2 + l1 of that row) [n]. */
    int (*sample_activations)(saefw_run *run, float *x, float *loss, int64_t n, char *err, size_t errlen);

    /* Fraction of tokens on which each feature fired, over n_batches evaluation batches [d_sae]. An
     * evaluation batch is one model batch on the model host (the seed's get_freqs), else one training
     * batch. */
    int (*feature_frequencies)(saefw_run *run, int64_t n_batches, float *freq, char *err, size_t errlen);

    /* The current training batch, valid from after_backward to the end of the step: its inputs
     * [rows, d_in], the SAE's activations on them [rows, d_sae] (made on the first call of a step), and
     * on how many rows each feature fired [d_sae] (no [rows, d_sae] array on the sparse path). NULL
     * outside the window, or (with a logged message) when out of memory. */
    const float *(*batch_inputs)(saefw_run *run, int64_t *rows);
    const float *(*batch_acts)(saefw_run *run, int64_t *rows);
    const int64_t *(*batch_feature_counts)(saefw_run *run);

    /* Read a floating tensor from a file (safetensors, .npy, or a torch .pt tensor or state dict) as
     * float32. *data is allocated by the host: release it with free_tensor, never with free(). name may
     * be NULL for a file that holds one tensor. shape gets up to SAEFW_PLUGIN_MAX_DIMS dims. Errors name the
     * file. */
    int (*read_tensor)(saefw_run *run, const char *path, const char *name, float **data, int64_t *numel, int *ndim,
                       int64_t shape[SAEFW_PLUGIN_MAX_DIMS], char *err, size_t errlen);
    void (*free_tensor)(float *data); /* NULL is a no-op */

    /* The engine's threads: run fn(ctx, begin, end) over disjoint ranges covering [0, n), in parallel;
     * returns when all are done. For memory-bound loops such as an optimizer's update. */
    void (*parallel_for)(int64_t n, void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx);

    /* Resumable state, inside save_state / load_state: named arrays and numbers, private to the
     * plugin instance. A get fails (with err filled) when the entry is missing or of another size. */
    int (*state_put_f32)(saefw_state_writer *w, const char *name, const float *data, int64_t n, char *err,
                         size_t errlen);
    int (*state_put_i64)(saefw_state_writer *w, const char *name, const int64_t *data, int64_t n, char *err,
                         size_t errlen);
    int (*state_put_number)(saefw_state_writer *w, const char *name, double v, char *err, size_t errlen);
    int (*state_get_f32)(saefw_state_reader *r, const char *name, float *data, int64_t n, char *err, size_t errlen);
    int (*state_get_i64)(saefw_state_reader *r, const char *name, int64_t *data, int64_t n, char *err, size_t errlen);
    int (*state_get_number)(saefw_state_reader *r, const char *name, double *v, char *err, size_t errlen);

    /* Appended in ABI 2.1. */
    /* The run's total number of optimizer steps (T of a schedule; the same after a resume). */
    int64_t (*total_steps)(saefw_run *run);
    /* Data parallel (`mpirun -np N saefw run ...`): this process's rank in [0, ranks) and the number of
     * ranks (1 for a plain run). Each rank trains on its rows of every global batch, and batch_inputs /
     * batch_acts give this rank's rows only; batch_feature_counts, the metrics, learning rate, frequencies,
     * sample_activations and the generators are the same on every rank. all_reduce_sum makes data [n] the
     * sum over ranks on every rank, added in an order fixed by the rank count (the same bits on every rank and re-run); it is a
     * collective: every rank must call it (and batch_feature_counts) at the same point of the same step,
     * or the job waits. A plain run returns at once. */
    int (*rank)(saefw_run *run);
    int (*ranks)(saefw_run *run);
    int (*all_reduce_sum)(saefw_run *run, double *data, int64_t n, char *err, size_t errlen);

    /* Appended in ABI 2.2 (resamplers of every architecture). */
    /* The SAE's architecture: "relu", "transcoder" (a relu SAE whose W_dec rows are another site's),
     * "topk", "batchtopk", "jumprelu" or "gated" (docs/architectures.md). */
    const char *(*sae_arch)(saefw_run *run);
    /* Put latents idx [n] (each in [0, d_sae)) back to their architecture's start in what a resampler
     * does not write itself: jumprelu's log_threshold to log(threshold), gated's r_mag and b_mag to 0,
     * AuxK's steps since the latent fired (topk, batchtopk) to 0. W_enc, W_dec, the encoder bias
     * (b_enc; gated: b_gate) and the optimizer's state are left to the caller. */
    int (*reset_latents)(saefw_run *run, const int64_t *idx, int64_t n, char *err, size_t errlen);
    /* Appended in ABI 2.2. An optimizer's state laid out like tensor param_index as param_get gives it
     * to the optimizer (under zero = 1, ZeRO-1, this rank's slice of the tensor's rows: param_get's
     * shape[0] and numel are the slice's). put saves the whole tensor's entry: under zero = 1 it is a
     * collective in which rank 0 gathers every rank's slice, so the checkpoint is the one a single
     * rank writes and resumes on any setting; get reads this rank's slice of the whole entry. Without
     * zero = 1 they are state_put_f32 / state_get_f32 of numel values. */
    int (*state_put_f32_param)(saefw_run *run, saefw_state_writer *w, const char *name, const float *data,
                               int param_index, char *err, size_t errlen);
    int (*state_get_f32_param)(saefw_run *run, saefw_state_reader *r, const char *name, float *data, int param_index,
                               char *err, size_t errlen);
} saefw_host;

/* Whether this engine's host table has `field` (set and inside its struct_size). Check it before
 * using a field appended after the version a plugin requires. */
#define SAEFW_HOST_HAS(host, field)                                                                                    \
    ((host)->struct_size >= offsetof(saefw_host, field) + sizeof((host)->field) && (host)->field != NULL)

typedef int (*saefw_callback)(void *self, saefw_run *run, char *err, size_t errlen);

/* A plugin's descriptor: a constant the plugin owns (typically `static const`), returned by
 * saefw_plugin_init. The engine keeps a copy; it never writes to it. Any callback may be NULL. */
typedef struct saefw_plugin {
    uint32_t abi_version; /* SAEFW_ABI_VERSION */
    uint32_t struct_size; /* sizeof(saefw_plugin) */

    const char *name; /* the file's base name, for loading by name */
    const char *description;
    saefw_plugin_kind kind;
    /* 1 when the plugin keeps no state between callbacks (nothing to save; silences the resume warning). */
    int stateless;
    const saefw_option *options; /* ends with a NULL name; may be NULL for none */
    uint32_t option_size;        /* sizeof(saefw_option); required when options is set */

    /* Make an instance for one run. Store host and run if callbacks need them. If create fails it
     * frees what it allocated: destroy is called only for instances that were made. */
    int (*create)(const saefw_host *host, saefw_run *run, const saefw_opts *opts, void **self, char *err,
                  size_t errlen);
    void (*destroy)(void *self);

    /* Optimizer: update every parameter from its gradient, at the engine's learning rate. */
    saefw_callback step;
    /* Optimizer: zero the state of slices of one tensor (see saefw_host.reset_optimizer_state; the
     * engine has checked the arguments; idx NULL: the whole tensor). saefw_zero_slices does the work
     * for state laid out like the tensor. */
    int (*reset_state)(void *self, saefw_run *run, int param_index, int axis, const int64_t *idx, int64_t n, char *err,
                       size_t errlen);

    /* Hooks, in the order the training step calls them (before_step, appended in 2.1, comes first):
     * before_step -> batch, forward, backward, decoder projection + renorm, gradient clipping ->
     * after_backward -> optimizer step -> after_step -> metrics -> on_eval (every eval_every) -> ...
     * -> on_end. */
    saefw_callback after_backward;
    saefw_callback after_step;
    saefw_callback on_eval;
    saefw_callback on_end;

    /* Resume: save everything that a run continued from a checkpoint needs to go on exactly as if
     * uninterrupted (moments, counters, ...), and load it back after create(). A plugin with state
     * and no save_state makes resumed runs differ; the engine warns unless stateless is set. */
    int (*save_state)(void *self, saefw_run *run, saefw_state_writer *w, char *err, size_t errlen);
    int (*load_state)(void *self, saefw_run *run, saefw_state_reader *r, char *err, size_t errlen);

    /* Appended in ABI 2.1 (engines older than 2.1, whose host has no total_steps, never call it). */
    /* Hook: every step, first, before its batch and forward pass (host->step is the step about to
     * run). A loss coefficient set here acts on this step's loss; a schedule sets its values here. */
    saefw_callback before_step;

    /* Appended in ABI 2.2. Optimizer: 1 when its update and state are elementwise (an element's new
     * value depends only on that element's weight, gradient and state), so that under zero = 1 it can
     * run on this rank's slice of each tensor's rows: inside its callbacks param_get gives the slice,
     * reset_state gets indices within it, and it saves its state with state_put_f32_param. The engine
     * refuses zero = 1 for an optimizer without it. */
    int zero_slices;
} saefw_plugin;

#if defined(__GNUC__)
#define SAEFW_EXPORT __attribute__((visibility("default")))
#else
#define SAEFW_EXPORT
#endif

/* The entry point, the one symbol a plugin exports. Return the plugin's descriptor (it must stay
 * valid until the plugin is unloaded), or write err and return NULL. host is the engine's table:
 * check SAEFW_HOST_HAS for what the plugin needs. */
SAEFW_EXPORT const saefw_plugin *saefw_plugin_init(const saefw_host *host, char *err, size_t errlen);
typedef const saefw_plugin *(*saefw_plugin_init_fn)(const saefw_host *host, char *err, size_t errlen);

/* Write a formatted message into a callback's err buffer and return -1: `return saefw_fail(err, errlen, ...)`.
 * Header-only, so a plugin still links to nothing of the engine. */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static inline int
saefw_fail(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Zero the slices of `state` (an array laid out like tensor p) that reset_state names: along axis at
 * idx[0 .. n), or all of it when idx is NULL. For an optimizer's reset_state. Returns 0, or -1 with
 * err on an axis or index out of range. */
static inline int saefw_zero_slices(float *state, const saefw_param *p, int axis, const int64_t *idx, int64_t n,
                                    char *err, size_t errlen) {
    if (!idx) {
        memset(state, 0, sizeof(float) * (size_t)p->numel);
        return 0;
    }
    if (axis < 0 || axis >= p->ndim) return saefw_fail(err, errlen, "%s has no axis %d", p->name, axis);
    int64_t outer = 1, inner = 1;
    for (int a = 0; a < axis; a++) outer *= p->shape[a];
    for (int a = axis + 1; a < p->ndim; a++) inner *= p->shape[a];
    const int64_t dim = p->shape[axis];
    for (int64_t k = 0; k < n; k++) {
        if (idx[k] < 0 || idx[k] >= dim)
            return saefw_fail(err, errlen, "%s: index %lld out of range along axis %d (size %lld)", p->name,
                              (long long)idx[k], axis, (long long)dim);
        for (int64_t o = 0; o < outer; o++)
            memset(state + (o * dim + idx[k]) * inner, 0, sizeof(float) * (size_t)inner);
    }
    return 0;
}

#ifdef __cplusplus
}
#endif
#endif
