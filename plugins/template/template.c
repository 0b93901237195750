/* template: a minimal saefw plugin to copy when writing your own. It reports the fraction of the
 * current batch's activations that are non-zero every `every` steps, as the metric "active_frac".
 * Copy this folder to plugins/<name>/<name>.c (or anywhere, for an out-of-tree build), rename, and
 * replace the callbacks. docs/plugins.md explains the contract. */
#include <stdio.h>
#include <stdlib.h>

/* The only engine header a plugin includes; the rest must be libc/libm. */
#include <saefw/plugin.h>

/* The options the plugin takes. The engine rejects names not listed here and values of the wrong
 * type, and fills in the defaults; create() checks the ranges. The list ends with a NULL name, and the
 * descriptor below gives its entry size (option_size). */
static const saefw_option OPTIONS[] = {
    {"every", SAEFW_OPT_INTEGER, 100, NULL, "report every this many steps"},
    {NULL, 0, 0, NULL, NULL},
};

/* One instance per training run, made by create() and freed by destroy(). */
typedef struct {
    const saefw_host *host; /* the engine's function table, kept for the callbacks */
    long long every;
} state;

static int create(const saefw_host *host, saefw_run *run, const saefw_opts *opts, void **self, char *err,
                  size_t errlen) {
    (void)run; /* not needed here; a plugin that keeps per-run state sizes it with host->d_sae(run) */
    double every = host->opt_number(opts, "every");
    /* Errors name the option; the engine prefixes "plugin <name>: ". */
    if (!(every >= 1)) return saefw_fail(err, errlen, "option 'every' must be >= 1, got %g", every);
    state *s = calloc(1, sizeof *s);
    if (!s) return saefw_fail(err, errlen, "out of memory");
    s->host = host;
    s->every = (long long)every;
    *self = s;
    return 0;
}

static void destroy(void *self) { free(self); }

/* Runs after the optimizer step, every step; host->step(run) is the step's index, from 0. */
static int after_step(void *self, saefw_run *run, char *err, size_t errlen) {
    state *s = self;
    const saefw_host *h = s->host;
    if ((h->step(run) + 1) % s->every != 0) return 0;
    int64_t rows = 0;
    const float *acts = h->batch_acts(run, &rows); /* [rows, d_sae], valid until the step ends */
    if (!acts) return saefw_fail(err, errlen, "no batch activations at step %lld", (long long)h->step(run));
    const int64_t d_sae = h->d_sae(run);
    int64_t active = 0;
    for (int64_t k = 0; k < rows * d_sae; k++) active += acts[k] > 0.0f;
    h->metric(run, "active_frac", (double)active / (double)(rows * d_sae));
    return 0;
}

/* The descriptor: a constant the plugin owns. The engine copies it and never writes to it. */
static const saefw_plugin PLUGIN = {
    .abi_version = SAEFW_ABI_VERSION,
    .struct_size = sizeof(saefw_plugin),
    .name = "template", /* must match the file name <name>.so for loading by name */
    .description = "reports the fraction of active features in the batch (a template to copy)",
    .kind = SAEFW_KIND_EXPERIMENT,
    .stateless = 1, /* `every` comes from the options again on resume: nothing to save */
    .options = OPTIONS,
    .option_size = sizeof(saefw_option),
    .create = create,
    .destroy = destroy,
    .after_step = after_step,
};

/* The one exported symbol (declared in plugin.h). Return the descriptor, or NULL with err written. */
const saefw_plugin *saefw_plugin_init(const saefw_host *host, char *err, size_t errlen) {
    /* A field appended after ABI 2.0 would be checked like this before use; batch_acts is in 2.0. */
    if (!SAEFW_HOST_HAS(host, batch_acts)) {
        saefw_fail(err, errlen, "the engine is too old (no batch_acts)");
        return NULL;
    }
    return &PLUGIN;
}
