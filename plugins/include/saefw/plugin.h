/* saefw plugin ABI: the one header a plugin includes. A plugin is a shared object exporting
 * saefw_plugin_init; it links to no engine symbol and reaches the engine only through the
 * saefw_host table it is given. Both structs start with abi_version and struct_size and are only
 * ever appended to, so a plugin built against an older header keeps loading. */
#ifndef SAEFW_PLUGIN_H
#define SAEFW_PLUGIN_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped only on an incompatible change; the engine refuses a plugin built for another version. */
#define SAEFW_ABI_VERSION 1u

/* Name of the one function a plugin exports. */
#define SAEFW_PLUGIN_ENTRY "saefw_plugin_init"

typedef struct saefw_run saefw_run;   /* the engine's training run (opaque) */
typedef struct saefw_opts saefw_opts; /* the plugin's options, validated and defaulted (opaque) */
typedef struct saefw_state_writer saefw_state_writer; /* a checkpoint being written (opaque) */
typedef struct saefw_state_reader saefw_state_reader; /* a checkpoint being read on resume (opaque) */

typedef enum {
    SAEFW_KIND_OPTIMIZER = 1,  /* updates the parameters from their gradients in `step` */
    SAEFW_KIND_RESAMPLER = 2,  /* revives dead features, usually in `after_step` */
    SAEFW_KIND_EXPERIMENT = 3, /* intervenes anywhere in the loop */
} saefw_plugin_kind;

typedef enum {
    SAEFW_OPT_NUMBER = 1,  /* double */
    SAEFW_OPT_INTEGER = 2, /* whole number, read with opt_number */
    SAEFW_OPT_BOOL = 3,    /* read with opt_number: 0 or 1 */
    SAEFW_OPT_STRING = 4,  /* read with opt_string */
} saefw_opt_type;

/* One option a plugin takes. A plugin's list ends with an entry whose name is NULL. The engine
 * rejects any option not listed, type-checks the rest and fills in the defaults. */
typedef struct {
    const char *name;
    saefw_opt_type type;
    double def_number;     /* default for NUMBER, INTEGER, BOOL */
    const char *def_string; /* default for STRING (may be NULL: no default, i.e. required) */
    const char *help;
} saefw_option;

/* A named SAE tensor and its gradient. `data` and `grad` are row-major float32 and are owned by
 * the engine; a plugin may write both during its callbacks. */
typedef struct {
    const char *name; /* "W_enc" [d_in, d_sae], "W_dec" [d_sae, d_in], "b_enc" [d_sae], "b_dec" [d_in] */
    float *data;
    float *grad;
    int ndim;
    int64_t shape[4];
    int64_t numel;
} saefw_param;

enum { SAEFW_LOG_DEBUG = 0, SAEFW_LOG_INFO = 1, SAEFW_LOG_WARN = 2 };

/* What the engine offers a plugin. Every function takes the run the callback was given. */
typedef struct saefw_host {
    uint32_t abi_version; /* SAEFW_ABI_VERSION of the engine */
    uint32_t struct_size; /* sizeof(saefw_host) in the engine: check before using a later field */

    /* Logging: one line, printed with the plugin's name. */
    void (*log)(saefw_run *run, int level, const char *msg);

    /* Options given to this plugin instance (defaults filled in). Unknown names return 0 / NULL. */
    double (*opt_number)(const saefw_opts *opts, const char *name);
    const char *(*opt_string)(const saefw_opts *opts, const char *name);

    /* The SAE's tensors, in a fixed order: W_enc, W_dec, b_enc, b_dec. Return 0, or -1 when absent. */
    int (*param_count)(saefw_run *run);
    int (*param_get)(saefw_run *run, int index, saefw_param *out);
    int (*param_find)(saefw_run *run, const char *name, saefw_param *out, int *index);
    int64_t (*d_in)(saefw_run *run);
    int64_t (*d_sae)(saefw_run *run);

    /* Zero the optimizer's state for chosen slices of a tensor: along `axis` (0: rows, 1: columns)
     * at the n given indices. Calls the optimizer plugin's reset_state. */
    int (*reset_optimizer_state)(saefw_run *run, int param_index, int axis, const int64_t *idx,
                                 int64_t n, char *err, size_t errlen);

    /* The run's seeded random generator (shared by the engine and every plugin, so runs repeat). */
    uint64_t (*rng_u64)(saefw_run *run);
    double (*rng_uniform)(saefw_run *run); /* [0, 1) */
    double (*rng_normal)(saefw_run *run);  /* standard normal */

    /* Counters: steps completed so far (the current step's index inside callbacks) and tokens seen. */
    int64_t (*step)(saefw_run *run);
    int64_t (*tokens_seen)(saefw_run *run);
    double (*learning_rate)(saefw_run *run); /* the optimizer's lr option, for plugins that scale by it */

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
     * [rows, d_in] and the SAE's activations on them [rows, d_sae]. */
    const float *(*batch_inputs)(saefw_run *run, int64_t *rows);
    const float *(*batch_acts)(saefw_run *run, int64_t *rows);

    /* Read a floating tensor from a file (safetensors, .npy, or a torch .pt tensor or state dict) as
     * float32: *data is malloc'd (the plugin frees it with free()). name may be NULL for a file that
     * holds one tensor. shape gets up to 4 dims. Errors name the file. */
    int (*read_tensor)(saefw_run *run, const char *path, const char *name, float **data, int64_t *numel, int *ndim,
                       int64_t shape[4], char *err, size_t errlen);

    /* The engine's threads: run fn(ctx, begin, end) over disjoint ranges covering [0, n), in parallel;
     * returns when all are done. For memory-bound loops such as an optimizer's update. */
    void (*parallel_for)(int64_t n, void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx);

    /* Resumable state, inside save_state / load_state: named arrays and numbers, private to the
     * plugin instance. A get fails (with err filled) when the entry is missing or of another size. */
    int (*state_put_f32)(saefw_state_writer *w, const char *name, const float *data, int64_t n, char *err, size_t errlen);
    int (*state_put_i64)(saefw_state_writer *w, const char *name, const int64_t *data, int64_t n, char *err,
                         size_t errlen);
    int (*state_put_number)(saefw_state_writer *w, const char *name, double v, char *err, size_t errlen);
    int (*state_get_f32)(saefw_state_reader *r, const char *name, float *data, int64_t n, char *err, size_t errlen);
    int (*state_get_i64)(saefw_state_reader *r, const char *name, int64_t *data, int64_t n, char *err, size_t errlen);
    int (*state_get_number)(saefw_state_reader *r, const char *name, double *v, char *err, size_t errlen);

    /* Appended after the first release (check struct_size before use): on how many rows of the
     * current training batch each feature fired [d_sae], valid in the same window as batch_acts. On the
     * sparse path it costs d_sae subtractions and no [rows, d_sae] array, unlike batch_acts. NULL
     * outside the window, or (with a logged message) when out of memory. */
    const int64_t *(*batch_feature_counts)(saefw_run *run);
} saefw_host;

typedef int (*saefw_callback)(void *self, saefw_run *run, char *err, size_t errlen);

/* A plugin's answer to saefw_plugin_init. Any callback may be NULL. */
typedef struct saefw_plugin {
    uint32_t abi_version; /* set to SAEFW_ABI_VERSION */
    uint32_t struct_size; /* set to sizeof(saefw_plugin) */

    const char *name;
    saefw_plugin_kind kind;
    const char *description;
    const saefw_option *options; /* ends with {NULL}; may be NULL for none */

    /* Make an instance for one run. Store host and run if callbacks need them. */
    int (*create)(const saefw_host *host, saefw_run *run, const saefw_opts *opts, void **self,
                  char *err, size_t errlen);
    void (*destroy)(void *self);

    /* Optimizer: update every parameter from its gradient. */
    saefw_callback step;
    /* Optimizer: zero the state of chosen slices (see saefw_host.reset_optimizer_state). */
    int (*reset_state)(void *self, saefw_run *run, int param_index, int axis, const int64_t *idx,
                       int64_t n, char *err, size_t errlen);

    /* Hooks, in the order the training step calls them:
     * forward, backward, decoder projection + renorm -> after_backward -> optimizer step ->
     * after_step -> metrics -> on_eval (every eval_every) -> ... -> on_end. */
    saefw_callback after_backward;
    saefw_callback after_step;
    saefw_callback on_eval;
    saefw_callback on_end;

    /* Resume: save everything that a run continued from a checkpoint needs to go on exactly as if
     * uninterrupted (moments, counters, ...), and load it back after create(). A plugin with state
     * and no save_state makes resumed runs differ; the engine warns. */
    int (*save_state)(void *self, saefw_run *run, saefw_state_writer *w, char *err, size_t errlen);
    int (*load_state)(void *self, saefw_run *run, saefw_state_reader *r, char *err, size_t errlen);
    /* Set to 1 when the plugin keeps no state between callbacks (nothing to save). */
    int stateless;
} saefw_plugin;

/* The entry point. `out` arrives zeroed with abi_version/struct_size describing the engine's struct;
 * fill it (never past out->struct_size bytes) and return 0, or write err and return non-zero. */
typedef int (*saefw_plugin_init_fn)(const saefw_host *host, saefw_plugin *out, char *err, size_t errlen);

/* Write a formatted message into a callback's err buffer and return -1: `return saefw_fail(err, errlen, ...)`.
 * Header-only, so a plugin still links to nothing of the engine. */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static inline int saefw_fail(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

#if defined(__GNUC__)
#define SAEFW_EXPORT __attribute__((visibility("default")))
#else
#define SAEFW_EXPORT
#endif

#ifdef __cplusplus
}
#endif
#endif
