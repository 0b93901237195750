/* A plugin compiled against the frozen ABI 2.0 header (tests/abi/saefw_plugin_2_0.h), for
 * test_plugin_abi: a schedule. From step `from` on it sets the engine's learning rate to `lr` and the
 * L1 coefficient to `l1` in after_backward (so the step's own update uses them), and it reports what
 * it sees through the host as metrics. */
#include <stdlib.h>

#include "saefw_plugin_2_0.h"

static const saefw_option OPTIONS[] = {
    {"from", SAEFW_OPT_INTEGER, 0, NULL, "first step of the new values"},
    {"lr", SAEFW_OPT_NUMBER, 0, NULL, "learning rate from step `from` on"},
    {"l1", SAEFW_OPT_NUMBER, 0, NULL, "L1 coefficient from step `from` on"},
    {"label", SAEFW_OPT_STRING, 0, "v20", "a string option, to check the engine reads the list right"},
    {NULL, 0, 0, NULL, NULL},
};

typedef struct {
    const saefw_host *host;
    long long from;
    double lr, l1, lr0;
    int label_ok;
} schedule;

static int create(const saefw_host *host, saefw_run *run, const saefw_opts *opts, void **self, char *err,
                  size_t errlen) {
    schedule *s = calloc(1, sizeof *s);
    if (!s) return saefw_fail(err, errlen, "out of memory");
    s->host = host;
    s->from = (long long)host->opt_number(opts, "from");
    s->lr = host->opt_number(opts, "lr");
    s->l1 = host->opt_number(opts, "l1");
    const char *label = host->opt_string(opts, "label");
    s->label_ok = label && label[0] == 'v' && label[1] == '2' && label[2] == '0' && !label[3];
    s->lr0 = host->learning_rate(run);
    *self = s;
    return 0;
}

static void destroy(void *self) { free(self); }

static int after_backward(void *self, saefw_run *run, char *err, size_t errlen) {
    schedule *s = self;
    const saefw_host *h = s->host;
    if (h->step(run) < s->from) return 0;
    if (h->set_learning_rate(run, s->lr, err, errlen) != 0) return -1;
    return h->set_loss_coeff(run, "l1", s->l1, err, errlen);
}

static int after_step(void *self, saefw_run *run, char *err, size_t errlen) {
    schedule *s = self;
    const saefw_host *h = s->host;
    saefw_param p = SAEFW_PARAM_INIT;
    if (h->param_find(run, "W_enc", &p, NULL) != 0) return saefw_fail(err, errlen, "no W_enc");
    double l1 = -1;
    if (h->loss_coeff(run, "l1", &l1) != 0) return saefw_fail(err, errlen, "no l1 coefficient");
    h->metric(run, "v20_lr", h->learning_rate(run));
    h->metric(run, "v20_lr0", s->lr0);
    h->metric(run, "v20_l1", l1);
    h->metric(run, "v20_label_ok", s->label_ok);
    h->metric(run, "v20_param_bytes", (double)p.struct_size);
    h->metric(run, "v20_plugin_bytes", (double)sizeof(saefw_plugin));
    h->metric(run, "v20_unknown_coeff", h->loss_coeff(run, "no_such", &l1) != 0);
    return 0;
}

static const saefw_plugin PLUGIN = {
    .abi_version = SAEFW_ABI_VERSION,
    .struct_size = sizeof(saefw_plugin),
    .name = "plugin_2_0",
    .description = "a schedule built against the frozen ABI 2.0 header",
    .kind = SAEFW_KIND_EXPERIMENT,
    .stateless = 1,
    .options = OPTIONS,
    .option_size = sizeof(saefw_option),
    .create = create,
    .destroy = destroy,
    .after_backward = after_backward,
    .after_step = after_step,
};

const saefw_plugin *saefw_plugin_init(const saefw_host *host, char *err, size_t errlen) { return &PLUGIN; }
