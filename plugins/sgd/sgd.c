/* sgd: stochastic gradient descent with optional momentum, as torch.optim.SGD computes it, at the
 * engine's learning rate (which starts at the "lr" option). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <saefw/plugin.h>

static const saefw_option OPTIONS[] = {
    {"lr", SAEFW_OPT_NUMBER, 1e-3, NULL, "learning rate"},
    {"momentum", SAEFW_OPT_NUMBER, 0.0, NULL, "momentum factor (0: plain SGD)"},
    {"nesterov", SAEFW_OPT_BOOL, 0, NULL, "Nesterov momentum"},
    {"weight_decay", SAEFW_OPT_NUMBER, 0.0, NULL, "L2 penalty added to the gradient"},
    {NULL, 0, 0, NULL, NULL},
};

typedef struct {
    const saefw_host *host;
    float lr, momentum, wd; /* lr: this step's, from the host */
    int nesterov, n, started;
    float **buf; /* momentum buffers, NULL without momentum */
    int64_t *numel;
} sgd;

static void sgd_destroy(void *self) {
    sgd *s = self;
    if (!s) return;
    if (s->buf)
        for (int i = 0; i < s->n; i++) free(s->buf[i]);
    free(s->buf);
    free(s->numel);
    free(s);
}

static int sgd_create(const saefw_host *host, saefw_run *run, const saefw_opts *opts, void **self, char *err,
                      size_t errlen) {
    sgd *s = calloc(1, sizeof *s);
    if (!s) return saefw_fail(err, errlen, "out of memory");
    s->host = host;
    double lr = host->opt_number(opts, "lr"), mom = host->opt_number(opts, "momentum");
    double wd = host->opt_number(opts, "weight_decay");
    s->nesterov = host->opt_number(opts, "nesterov") != 0;
    if (!(lr >= 0)) return sgd_destroy(s), saefw_fail(err, errlen, "option 'lr' must be >= 0");
    if (!(mom >= 0 && mom < 1)) return sgd_destroy(s), saefw_fail(err, errlen, "option 'momentum' must be in [0, 1)");
    if (!(wd >= 0)) return sgd_destroy(s), saefw_fail(err, errlen, "option 'weight_decay' must be >= 0");
    if (s->nesterov && mom == 0) return sgd_destroy(s), saefw_fail(err, errlen, "option 'nesterov' needs momentum > 0");
    s->momentum = (float)mom;
    s->wd = (float)wd;
    s->n = host->param_count(run);
    s->numel = calloc((size_t)s->n, sizeof(int64_t));
    if (!s->numel) return sgd_destroy(s), saefw_fail(err, errlen, "out of memory");
    for (int i = 0; i < s->n; i++) {
        saefw_param p = SAEFW_PARAM_INIT;
        if (host->param_get(run, i, &p) != 0) return sgd_destroy(s), saefw_fail(err, errlen, "cannot read parameters");
        s->numel[i] = p.numel;
    }
    if (mom > 0) {
        s->buf = calloc((size_t)s->n, sizeof(float *));
        if (!s->buf) return sgd_destroy(s), saefw_fail(err, errlen, "out of memory");
        for (int i = 0; i < s->n; i++)
            if (!(s->buf[i] = calloc((size_t)s->numel[i], sizeof(float))))
                return sgd_destroy(s), saefw_fail(err, errlen, "out of memory for momentum");
    }
    *self = s;
    return 0;
}

/* One tensor's update. */
typedef struct {
    const sgd *s;
    float *w, *buf; /* buf: the momentum buffer, NULL without momentum */
    const float *g;
} sgd_job;

/* Elements [k0, k1) of one tensor; each element is updated alone, so any split gives the same result. */
static void sgd_range(void *ctx, int64_t k0, int64_t k1) {
    const sgd_job *j = ctx;
    const sgd *s = j->s;
    float *w = j->w, *b = j->buf;
    const float *g = j->g;
    for (int64_t k = k0; k < k1; k++) {
        float d = s->wd != 0.0f ? g[k] + s->wd * w[k] : g[k];
        if (b) {
            /* torch starts the buffer at the first gradient, without dampening. */
            b[k] = s->started ? b[k] * s->momentum + d : d;
            d = s->nesterov ? d + s->momentum * b[k] : b[k];
        }
        w[k] = w[k] - s->lr * d;
    }
}

static int sgd_step(void *self, saefw_run *run, char *err, size_t errlen) {
    sgd *s = self;
    s->lr = (float)s->host->learning_rate(run);
    /* The engine's threads when the host offers them (the update is memory-bound). */
    const int threads = SAEFW_HOST_HAS(s->host, parallel_for);
    for (int i = 0; i < s->n; i++) {
        saefw_param p = SAEFW_PARAM_INIT;
        if (s->host->param_get(run, i, &p) != 0) return saefw_fail(err, errlen, "cannot read parameters");
        sgd_job job = {s, p.data, s->buf ? s->buf[i] : NULL, p.grad};
        if (threads) s->host->parallel_for(p.numel, sgd_range, &job);
        else sgd_range(&job, 0, p.numel);
    }
    s->started = 1;
    return 0;
}

static int sgd_reset(void *self, saefw_run *run, int param, int axis, const int64_t *idx, int64_t n, char *err,
                     size_t errlen) {
    sgd *s = self;
    saefw_param p = SAEFW_PARAM_INIT;
    if (param < 0 || param >= s->n || s->host->param_get(run, param, &p) != 0 || p.numel != s->numel[param])
        return saefw_fail(err, errlen, "reset_state: no such tensor");
    return s->buf ? saefw_zero_slices(s->buf[param], &p, axis, idx, n, err, errlen) : 0;
}

/* Resume: whether the momentum buffers started, and the buffers. */
static int sgd_save(void *self, saefw_run *run, saefw_state_writer *w, char *err, size_t errlen) {
    sgd *s = self;
    if (s->host->state_put_number(w, "started", s->started, err, errlen) != 0) return -1;
    for (int i = 0; s->buf && i < s->n; i++) {
        char name[32];
        snprintf(name, sizeof name, "momentum%d", i);
        if (s->host->state_put_f32(w, name, s->buf[i], s->numel[i], err, errlen) != 0) return -1;
    }
    return 0;
}

static int sgd_load(void *self, saefw_run *run, saefw_state_reader *r, char *err, size_t errlen) {
    sgd *s = self;
    double started = 0;
    if (s->host->state_get_number(r, "started", &started, err, errlen) != 0) return -1;
    s->started = started != 0;
    for (int i = 0; s->buf && i < s->n; i++) {
        char name[32];
        snprintf(name, sizeof name, "momentum%d", i);
        if (s->host->state_get_f32(r, name, s->buf[i], s->numel[i], err, errlen) != 0) return -1;
    }
    return 0;
}

static const saefw_plugin PLUGIN = {
    .abi_version = SAEFW_ABI_VERSION,
    .struct_size = sizeof(saefw_plugin),
    .name = "sgd",
    .description = "SGD with optional (Nesterov) momentum, as torch.optim.SGD",
    .kind = SAEFW_KIND_OPTIMIZER,
    .options = OPTIONS,
    .option_size = sizeof(saefw_option),
    .create = sgd_create,
    .destroy = sgd_destroy,
    .step = sgd_step,
    .reset_state = sgd_reset,
    .save_state = sgd_save,
    .load_state = sgd_load,
};

const saefw_plugin *saefw_plugin_init(const saefw_host *host, char *err, size_t errlen) { return &PLUGIN; }
