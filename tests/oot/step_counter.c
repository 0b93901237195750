/* An out-of-tree experiment plugin, built by tests/install_smoke.sh against the installed header
 * and pkg-config file alone: counts training steps and reports them as a metric. */
#include <stdio.h>
#include <stdlib.h>

#include <saefw/plugin.h>

static const saefw_option OPTIONS[] = {
    {"scale", SAEFW_OPT_NUMBER, 1.0, NULL, "multiplies the reported count"},
    {NULL, 0, 0, NULL, NULL},
};

typedef struct {
    const saefw_host *host;
    double scale;
    long calls;
} counter;

static int create(const saefw_host *host, saefw_run *run, const saefw_opts *opts, void **self, char *err,
                  size_t errlen) {
    counter *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->host = host;
    c->scale = host->opt_number(opts, "scale");
    *self = c;
    return 0;
}

static int after_step(void *self, saefw_run *run, char *err, size_t errlen) {
    counter *c = self;
    c->calls++;
    c->host->metric(run, "oot_steps", c->scale * (double)c->calls);
    return 0;
}

static const saefw_plugin PLUGIN = {
    .abi_version = SAEFW_ABI_VERSION,
    .struct_size = sizeof(saefw_plugin),
    .name = "step_counter",
    .description = "counts steps (out-of-tree test plugin)",
    .kind = SAEFW_KIND_EXPERIMENT,
    .options = OPTIONS,
    .option_size = sizeof(saefw_option),
    .create = create,
    .destroy = free,
    .after_step = after_step,
};

const saefw_plugin *saefw_plugin_init(const saefw_host *host, char *err, size_t errlen) { return &PLUGIN; }
