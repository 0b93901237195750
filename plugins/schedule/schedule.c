/* schedule: the 2024 recipe's schedules as a plugin. Before each step t of a run of T steps it sets
 * the engine's learning rate to lr * min(1, (t+1)/lr_warmup_steps) * min(1, (T-t)/lr_decay_steps)
 * and one loss coefficient to c * min(1, (t+1)/coeff_warmup_steps), where lr and c are the run's
 * values when the plugin is made; a warm-up or decay of 0 steps is none. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <saefw/plugin.h>

static const saefw_option OPTIONS[] = {
    {"lr_warmup_steps", SAEFW_OPT_INTEGER, 0, NULL,
     "raise the learning rate linearly from lr/n to lr over the first n steps (0: no warm-up)"},
    {"lr_decay_steps", SAEFW_OPT_INTEGER, 0, NULL,
     "lower the learning rate linearly towards 0 over the last n steps (lr/n in the last one; 0: no decay)"},
    {"coeff", SAEFW_OPT_STRING, 0, "l1", "the loss coefficient to warm up (the SAE's name for it)"},
    {"coeff_warmup_steps", SAEFW_OPT_INTEGER, 0, NULL,
     "raise the coefficient linearly from c/n to c over the first n steps (0: no warm-up)"},
    {NULL, 0, 0, NULL, NULL},
};

typedef struct {
    const saefw_host *host;
    int64_t lr_warmup, lr_decay, coeff_warmup;
    double lr0, coeff0; /* the run's values: the schedules' full height */
    char coeff[40];
    char coeff_metric[48]; /* "<coeff>_coeff" */
} schedule;

static void schedule_destroy(void *self) { free(self); }

/* A count of steps from option `name`: a whole number >= 0. */
static int steps_option(const saefw_host *host, const saefw_opts *opts, const char *name, int64_t *out, char *err,
                        size_t errlen) {
    double v = host->opt_number(opts, name);
    if (!(v >= 0 && v <= 1e15)) return saefw_fail(err, errlen, "option '%s' must be >= 0 and <= 1e15, got %g", name, v);
    *out = (int64_t)v;
    return 0;
}

static int schedule_create(const saefw_host *host, saefw_run *run, const saefw_opts *opts, void **self, char *err,
                           size_t errlen) {
    int64_t lw = 0, ld = 0, cw = 0;
    if (steps_option(host, opts, "lr_warmup_steps", &lw, err, errlen) != 0 ||
        steps_option(host, opts, "lr_decay_steps", &ld, err, errlen) != 0 ||
        steps_option(host, opts, "coeff_warmup_steps", &cw, err, errlen) != 0)
        return -1;
    const char *name = host->opt_string(opts, "coeff");
    if (!name || !*name || strlen(name) >= sizeof((schedule *)0)->coeff)
        return saefw_fail(err, errlen, "option 'coeff' must be a name of 1 to %d characters",
                          (int)sizeof((schedule *)0)->coeff - 1);
    double c0;
    if (host->loss_coeff(run, name, &c0) != 0)
        return saefw_fail(err, errlen, "option 'coeff': this SAE has no loss coefficient '%s'", name);
    schedule *s = calloc(1, sizeof *s);
    if (!s) return saefw_fail(err, errlen, "out of memory");
    s->host = host;
    s->lr_warmup = lw;
    s->lr_decay = ld;
    s->coeff_warmup = cw;
    s->lr0 = host->learning_rate(run);
    s->coeff0 = c0;
    snprintf(s->coeff, sizeof s->coeff, "%s", name);
    snprintf(s->coeff_metric, sizeof s->coeff_metric, "%s_coeff", name);
    *self = s;
    return 0;
}

/* Step t's values, in the reference's order of operations (tests/reference/make_arch_fixtures.py). */
static int schedule_before_step(void *self, saefw_run *run, char *err, size_t errlen) {
    schedule *s = self;
    const saefw_host *h = s->host;
    const double t = (double)h->step(run), T = (double)h->total_steps(run);
    if (s->lr_warmup > 0 || s->lr_decay > 0) {
        double lr = s->lr0;
        if (s->lr_warmup > 0) lr *= fmin(1.0, (t + 1) / (double)s->lr_warmup);
        if (s->lr_decay > 0) lr *= fmin(1.0, (T - t) / (double)s->lr_decay);
        if (h->set_learning_rate(run, lr, err, errlen) != 0) return -1;
    }
    if (s->coeff_warmup > 0 &&
        h->set_loss_coeff(run, s->coeff, s->coeff0 * fmin(1.0, (t + 1) / (double)s->coeff_warmup), err, errlen) != 0)
        return -1;
    double c = 0;
    h->loss_coeff(run, s->coeff, &c);
    h->metric(run, "lr", h->learning_rate(run));
    h->metric(run, s->coeff_metric, c);
    return 0;
}

static const saefw_plugin PLUGIN = {
    .abi_version = SAEFW_ABI_VERSION,
    .struct_size = sizeof(saefw_plugin),
    .name = "schedule",
    .description = "learning-rate warm-up and linear decay, loss-coefficient warm-up (the 2024 recipe)",
    .kind = SAEFW_KIND_EXPERIMENT,
    /* Every value is a function of the step, the run's length and the run's own lr and coefficient,
     * which a resumed run has again when the plugin is made (before the engine restores the rest). */
    .stateless = 1,
    .options = OPTIONS,
    .option_size = sizeof(saefw_option),
    .create = schedule_create,
    .destroy = schedule_destroy,
    .before_step = schedule_before_step,
};

const saefw_plugin *saefw_plugin_init(const saefw_host *host, char *err, size_t errlen) {
    /* before_step and total_steps came with ABI 2.1: an older engine would never call the schedule. */
    if (!SAEFW_HOST_HAS(host, total_steps)) {
        saefw_fail(err, errlen, "needs an engine with plugin ABI 2.1 or later (no total_steps in its host table)");
        return NULL;
    }
    return &PLUGIN;
}
