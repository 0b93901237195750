/* The run object: one training run's policy around the loop, shared by `saefw run` (through the Lua
 * layer), Lua scripts and C programs. It owns the run folder (the default name, the lock, resume),
 * the one run seed every generator derives from, the evaluators built from the configuration, the
 * training length from num_tokens and the checkpoint's fields that describe the buffer. */
#ifndef SAEFW_RUN_H
#define SAEFW_RUN_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "eval.h"
#include "model.h"
#include "model_source.h"
#include "plugin_loader.h"
#include "rng.h"
#include "sae.h"
#include "source.h"
#include "tokens.h"
#include "train.h"

/* Where the buffer's activations come from when it runs on the model host. */
typedef struct {
    const saefw_model *model;   /* borrowed */
    const saefw_tokens *tokens; /* borrowed */
    saefw_hook hook;
    int64_t model_batch; /* sequences per model batch (saefw_run_model_batch) */
    /* Non-NULL: every cfg.json records model_name, hook_name, hook_layer, context_size and
     * model_batch_size (SAELens's fields) unless the config sets them. */
    const char *model_name;
} saefw_run_model;

/* One SAE of a run that trains several on one buffer (saefw_run_cfg.saes). Borrowed. */
typedef struct {
    const char *name; /* its folder under the run folder (and "[name]" on its lines); unique */
    saefw_sae *sae;
    saefw_plugin_use optimizer;
    const saefw_plugin_use *plugins;
    int n_plugins;
    void *event_ud; /* on_event's ud for this SAE's events (NULL: the cfg's event_ud) */
} saefw_run_sae;

/* Everything of a run that is not the model, the data or the SAE itself. saefw_run_cfg_init sets
 * saefw.train{}'s defaults. Pointers are borrowed until saefw_session_close. */
typedef struct {
    saefw_sae *sae;
    saefw_buffer *buffer;
    saefw_source *eval_source;       /* NULL: the buffer's source */
    const saefw_run_model *on_model; /* NULL: the buffer does not run on the model (no reconstruction score) */
    saefw_plugin_use optimizer;
    const saefw_plugin_use *plugins;
    int n_plugins;
    /* The length: steps, or (steps 0) num_tokens / the buffer's batch rows, rounded down (NaN: not
     * given). */
    int64_t steps;
    double num_tokens;
    int64_t log_every, eval_every, checkpoint_every; /* 0 disables */
    int64_t freq_batches;                            /* feature-frequency batches at every eval */
    int64_t recons_batches;                          /* reconstruction-score batches at every eval (0: none) */
    saefw_recons_mode
        recons_mode; /* its rows: a held-out set fixed at the start (the default) or the seed's fresh draws */
    /* Where the feature frequencies are counted: AUTO (0, the default) counts them in the fixed held-out
     * set's forward with the SAE, without an SAE pass of their own; SEPARATE: the seed's own draws. */
    saefw_eval_freq_mode eval_freq;
    uint64_t seed; /* the run seed: the plugins' generator and the evaluators' draws */
    int progress;  /* -1: live line on a terminal, plain lines otherwise; 0: quiet */
    /* The run folder: run_dir; NULL: runs/<script>-<date>-<time> (saefw_run_default_dir); no_run_dir:
     * none (nothing written). */
    const char *run_dir;
    int no_run_dir;
    const char *script; /* names the default run folder; NULL: "run" */
    /* resume: a run folder to continue from its newest intact checkpoint (it becomes the run folder;
     * NULL: the command line's --resume, saefw_run_set_cli);
     * resume_from: a checkpoint folder to continue from. allow_change names the configuration keys
     * a resume may change (saefw_train_opts.allow_change). */
    const char *resume;
    const char *resume_from;
    const char *const *allow_change;
    int n_allow_change;
    const cJSON *config; /* the script's configuration, recorded in every cfg.json; may be NULL */
    saefw_train_event_fn on_event;
    void *event_ud;
    /* saefw_train_opts's clip_grad_norm (0: none) and free_decoder (1: unit_norm_decoder = false). */
    double clip_grad_norm;
    int free_decoder;
    /* saefw_train_opts's zero (1: ZeRO-1, Adam's moments sharded across MPI ranks). */
    int zero;
    /* A transcoder's data: on_model's rows are [hook | *hook_out]; the reconstruction score replaces
     * *hook_out, and cfg.json records hook_name_out. NULL: one site. */
    const saefw_hook *hook_out;
    /* Several SAEs on the one buffer instead of sae, optimizer and plugins (saefw_multi_open): each
     * has its own trainer, generator (saefw_multi_seed of seed and its name), run folder
     * <run folder>/<name>, evaluation draws (on a model: a source of its own, as the buffer's source
     * draws) and reconstruction score (the held-out rows and their clean and zero-ablated losses
     * computed once for all). NULL: one SAE. */
    const saefw_run_sae *saes;
    int n_saes;
} saefw_run_cfg;

void saefw_run_cfg_init(saefw_run_cfg *c);

/* The run options of the command line (`saefw run SCRIPT --resume DIR --allow-change KEY ...`), kept
 * for the process: a session takes resume from them when its saefw_run_cfg leaves it unset, and adds
 * their allow_change names to the cfg's. */
typedef struct {
    const char *resume; /* NULL: none */
    const char *const *allow_change;
    int n_allow_change;
    /* n_overrides pairs of strings (key, text): `--key text` for the script's configuration
     * (saefw_run_apply_overrides). */
    const char *const *overrides;
    int n_overrides;
} saefw_run_cli;

/* Keep a copy of cli (NULL: forget them); 0, or -1 with err (out of memory). Not thread-safe: call it
 * before any session opens. */
int saefw_run_set_cli(const saefw_run_cli *cli, char *err, size_t errlen);
/* The run folder given with --resume, or NULL. */
const char *saefw_run_cli_resume(void);

/* The number of `--key text` overrides of the command line (saefw_run_set_cli). */
int saefw_run_n_overrides(void);
/* Whether saefw_run_apply_overrides ran since saefw_run_set_cli (else the overrides were not applied). */
int saefw_run_overrides_taken(void);

/* A run made from a saefw_run_cfg: the run folder chosen, the evaluators built, the loop's options
 * derived. */
typedef struct saefw_session saefw_session;

/* Check the configuration and derive the run from it; 0, or -1 with err (a one-line message naming
 * the option, as saefw.train{} reports it). Nothing is written until saefw_session_train. */
int saefw_session_open(const saefw_run_cfg *c, saefw_session **s, char *err, size_t errlen);
/* The run folder (NULL without one). */
const char *saefw_session_run_dir(const saefw_session *s);
/* The optimizer steps the run takes. */
int64_t saefw_session_steps(const saefw_session *s);
/* The reconstruction score of the latest eval, or NULL when the run has none. */
const saefw_recons *saefw_session_recons(const saefw_session *s);
/* With several SAEs: how many, and the reconstruction score of SAE i's latest eval (NULL: none). */
int saefw_session_n_saes(const saefw_session *s);
const saefw_recons *saefw_session_recons_of(const saefw_session *s, int i);
/* With several SAEs: train them all (saefw_multi_train); res has room for saefw_session_n_saes. */
int saefw_session_train_multi(saefw_session *s, saefw_train_result *res, char *err, size_t errlen);
/* Train: saefw_train with the derived options (same returns, result and errors). Once per session. */
int saefw_session_train(saefw_session *s, saefw_train_result *res, char *err, size_t errlen);
void saefw_session_close(saefw_session *s);

/* runs/<script>-<date>-<time> (local time), with -2, -3, ... appended while a folder of that name
 * already holds a metrics.jsonl. script: a path or name; its folder and ".lua" are dropped. */
void saefw_run_default_dir(const char *script, char *buf, size_t n);

/* The seed's model batch: batch_size / seq_len * 16 sequences, at least 1. */
int64_t saefw_run_model_batch(int64_t batch_size, int64_t seq_len);

/* Optimizer steps from a token budget: floor(num_tokens / batch_size); -1 with err when that is less
 * than one step. */
int64_t saefw_run_steps(double num_tokens, int64_t batch_size, char *err, size_t errlen);

/* The type of a configuration value that the command line may set. */
/* SAEFW_VALUE_NONE: a value the command line cannot set (a table). */
typedef enum {
    SAEFW_VALUE_INT = 0,
    SAEFW_VALUE_FLOAT,
    SAEFW_VALUE_BOOL,
    SAEFW_VALUE_STRING,
    SAEFW_VALUE_NONE
} saefw_value_type;

typedef struct {
    saefw_value_type type;
    int64_t i;     /* SAEFW_VALUE_INT */
    double f;      /* SAEFW_VALUE_FLOAT */
    int b;         /* SAEFW_VALUE_BOOL */
    const char *s; /* SAEFW_VALUE_STRING: the text itself (borrowed) */
} saefw_value;

/* The command line's `--key text` for a config key whose default has type `type`, read as the seed's
 * argument parser (and Lua's tonumber) would: an integer (decimal or hex, or a number with an integral
 * value), a number, true/false (also 1/0, yes/no, on/off, any case), or the text. -1 with err naming
 * "--key" and the text otherwise. */
int saefw_run_parse_override(const char *key, const char *text, saefw_value_type type, saefw_value *out, char *err,
                             size_t errlen);

/* One override applied: the config key and its value as saefw_run_parse_override read it. */
typedef struct {
    const char *key; /* borrowed from the command line's copy */
    saefw_value value;
} saefw_override;

/* Apply the command line's `--key text` overrides (saefw_run_set_cli), in order, to config, a JSON
 * object of the script's defaults (saefw.config{}): each key must be one of config's members (else
 * "unknown config key '--KEY' (valid keys: A, B, ...)", sorted) and its text is read as the type of
 * that member's default (saefw_run_parse_override's errors) and replaces it. types gives the type of
 * each member in order, SAEFW_VALUE_NONE for one the command line cannot set; NULL: from the JSON
 * values (a number is an integer when it has an integral value). applied (NULL, or room for
 * saefw_run_n_overrides()) receives the overrides as applied. 0, or -1 with err. */
int saefw_run_apply_overrides(cJSON *config, const saefw_value_type *types, saefw_override *applied, char *err,
                              size_t errlen);

#endif
