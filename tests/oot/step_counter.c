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

SAEFW_EXPORT int saefw_plugin_init(const saefw_host *host, saefw_plugin *out, char *err, size_t errlen) {
    out->abi_version = SAEFW_ABI_VERSION;
    out->struct_size = sizeof(saefw_plugin);
    out->name = "step_counter";
    out->kind = SAEFW_KIND_EXPERIMENT;
    out->description = "counts steps (out-of-tree test plugin)";
    out->options = OPTIONS;
    out->create = create;
    out->destroy = free;
    out->after_step = after_step;
    return 0;
}
