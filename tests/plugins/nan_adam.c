/* A broken optimizer for testing the tests: it takes Adam's options and writes NaN into every
 * parameter. test_optimizers' comparison with torch.optim.Adam must fail on it. */
#include <math.h>
#include <stdlib.h>

#include <saefw/plugin.h>

static const saefw_option OPTIONS[] = {
    {"lr", SAEFW_OPT_NUMBER, 1e-4, NULL, "ignored"},
    {"beta1", SAEFW_OPT_NUMBER, 0.9, NULL, "ignored"},
    {"beta2", SAEFW_OPT_NUMBER, 0.999, NULL, "ignored"},
    {"eps", SAEFW_OPT_NUMBER, 1e-8, NULL, "ignored"},
    {NULL, 0, 0, NULL, NULL},
};

static int create(const saefw_host *host, saefw_run *run, const saefw_opts *opts, void **self, char *err,
                  size_t errlen) {
    *self = (void *)host;
    return 0;
}

static void destroy(void *self) {}

static int step(void *self, saefw_run *run, char *err, size_t errlen) {
    const saefw_host *h = self;
    for (int i = 0; i < h->param_count(run); i++) {
        saefw_param p = SAEFW_PARAM_INIT;
        if (h->param_get(run, i, &p) != 0) return saefw_fail(err, errlen, "cannot read parameters");
        for (int64_t k = 0; k < p.numel; k++) p.data[k] = NAN;
    }
    return 0;
}

static const saefw_plugin PLUGIN = {
    .abi_version = SAEFW_ABI_VERSION,
    .struct_size = sizeof(saefw_plugin),
    .name = "nan_adam",
    .description = "writes NaN into every parameter (a mutant for testing the tests)",
    .kind = SAEFW_KIND_OPTIMIZER,
    .stateless = 1,
    .options = OPTIONS,
    .option_size = sizeof(saefw_option),
    .create = create,
    .destroy = destroy,
    .step = step,
};

const saefw_plugin *saefw_plugin_init(const saefw_host *host, char *err, size_t errlen) { return &PLUGIN; }
