/* A plugin compiled against a "newer" header (tests/abi/saefw_plugin_next.h: one more field in
 * saefw_option, saefw_param, saefw_host and saefw_plugin), for test_plugin_abi. The engine must load
 * it, read its longer option entries, never call the callback it does not know, and write nothing
 * past its own saefw_param; the plugin sees through SAEFW_HOST_HAS that the engine lacks the newer
 * host field. It reports all of this as metrics. */
#include <stdint.h>
#include <stdlib.h>

#include "saefw_plugin_next.h"

static const saefw_option OPTIONS[] = {
    {"alpha", SAEFW_OPT_NUMBER, 1.5, NULL, "a number", 10.0},
    {"beta", SAEFW_OPT_INTEGER, 3, NULL, "an integer", 100.0},
    {"gamma", SAEFW_OPT_BOOL, 0, NULL, "a boolean", 1.0},
    {NULL, 0, 0, NULL, NULL, 0},
};

#define SENTINEL 0x5a5a5a5a5a5aLL

typedef struct {
    const saefw_host *host;
    double alpha, beta, gamma;
    int before_forward_calls;
} next;

static int create(const saefw_host *host, saefw_run *run, const saefw_opts *opts, void **self, char *err,
                  size_t errlen) {
    next *n = calloc(1, sizeof *n);
    if (!n) return saefw_fail(err, errlen, "out of memory");
    n->host = host;
    n->alpha = host->opt_number(opts, "alpha");
    n->beta = host->opt_number(opts, "beta");
    n->gamma = host->opt_number(opts, "gamma");
    *self = n;
    return 0;
}

static void destroy(void *self) { free(self); }

static int before_forward(void *self, saefw_run *run, char *err, size_t errlen) {
    ((next *)self)->before_forward_calls++;
    return saefw_fail(err, errlen, "before_forward was called by an engine that does not know it");
}

static int after_step(void *self, saefw_run *run, char *err, size_t errlen) {
    next *n = self;
    const saefw_host *h = n->host;
    saefw_param p = SAEFW_PARAM_INIT;
    for (int i = 0; i < SAEFW_PLUGIN_MAX_DIMS; i++) p.stride[i] = SENTINEL;
    if (h->param_find(run, "W_dec", &p, NULL) != 0) return saefw_fail(err, errlen, "no W_dec");
    int untouched = 1;
    for (int i = 0; i < SAEFW_PLUGIN_MAX_DIMS; i++) untouched &= p.stride[i] == SENTINEL;
    h->metric(run, "next_stride_untouched", untouched);
    h->metric(run, "next_param_bytes", (double)p.struct_size);
    h->metric(run, "next_param_numel", (double)p.numel);
    h->metric(run, "next_host_has_future", SAEFW_HOST_HAS(h, future_call));
    h->metric(run, "next_host_has_free_tensor", SAEFW_HOST_HAS(h, free_tensor));
    h->metric(run, "next_alpha", n->alpha);
    h->metric(run, "next_beta", n->beta);
    h->metric(run, "next_gamma", n->gamma);
    h->metric(run, "next_before_forward_calls", n->before_forward_calls);
    return 0;
}

static const saefw_plugin PLUGIN = {
    .abi_version = SAEFW_ABI_VERSION,
    .struct_size = sizeof(saefw_plugin),
    .name = "plugin_next",
    .description = "built against a header one minor version newer than the engine's",
    .kind = SAEFW_KIND_EXPERIMENT,
    .stateless = 1,
    .options = OPTIONS,
    .option_size = sizeof(saefw_option),
    .create = create,
    .destroy = destroy,
    .after_step = after_step,
    .before_forward = before_forward,
};

const saefw_plugin *saefw_plugin_init(const saefw_host *host, char *err, size_t errlen) { return &PLUGIN; }
