/* reinit_dead: the seed recipe's resampler. Every `every` steps it measures feature frequencies over
 * `batches` evaluation batches (or, with `from_steps`, over the training batches since its last
 * check) and gives each feature rarer than `threshold` a fresh kaiming-uniform
 * encoder column and decoder row and a zero encoder bias, leaving the optimizer state alone. The
 * other architectures re-initialise a latent as their init makes it (docs/architectures.md): a unit
 * kaiming-uniform decoder row, the encoder column equal to it, a zero encoder bias (gated: b_gate), and
 * the engine's reset_latents for the rest (jumprelu's threshold, gated's r_mag and b_mag, AuxK's
 * counter). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <saefw/plugin.h>

static const saefw_option OPTIONS[] = {
    {"every", SAEFW_OPT_INTEGER, 30000, NULL, "re-initialise after every this many steps (the seed: 30000)"},
    {"threshold", SAEFW_OPT_NUMBER, 3.1622776601683795e-06, NULL,
     "features firing on a smaller fraction of tokens are re-initialised (the seed: 10^-5.5)"},
    {"batches", SAEFW_OPT_INTEGER, 50, NULL, "evaluation batches for the frequency estimate (the seed: 50)"},
    {"from_steps", SAEFW_OPT_BOOL, 0, NULL,
     "count the frequencies over the training batches since the last check (as SAELens), not over "
     "`batches` fresh batches run through the SAE again (the seed)"},
    {NULL, 0, 0, NULL, NULL},
};

typedef struct {
    const saefw_host *host;
    int64_t every, batches;
    double threshold;
    float *freq;  /* [d_sae] */
    int64_t *idx; /* [d_sae]: the latents re-initialised at a step */
    /* from_steps: firings per feature [d_sae] and rows since the last check (a double: a sum across
     * ranks, exact below 2^53). */
    int from_steps;
    int64_t *count;
    double rows;
} reinit;

static void reinit_destroy(void *self) {
    reinit *r = self;
    if (!r) return;
    free(r->freq);
    free(r->idx);
    free(r->count);
    free(r);
}

static int reinit_create(const saefw_host *host, saefw_run *run, const saefw_opts *opts, void **self, char *err,
                         size_t errlen) {
    double every = host->opt_number(opts, "every"), threshold = host->opt_number(opts, "threshold");
    double batches = host->opt_number(opts, "batches");
    /* The engine's bound on evaluation batches; `every` past any run's length is kept inside int64. */
    if (!(every >= 1 && every <= 1e15))
        return saefw_fail(err, errlen, "option 'every' must be >= 1 and <= 1e15, got %g", every);
    if (!(threshold >= 0)) return saefw_fail(err, errlen, "option 'threshold' must be >= 0, got %g", threshold);
    if (!(batches >= 1 && batches <= 10000))
        return saefw_fail(err, errlen, "option 'batches' must be >= 1 and <= 10000, got %g", batches);
    if (!SAEFW_HOST_HAS(host, reset_latents))
        return saefw_fail(err, errlen, "needs an engine with plugin ABI 2.2 (reset_latents)");
    reinit *r = calloc(1, sizeof *r);
    if (!r) return saefw_fail(err, errlen, "out of memory");
    r->host = host;
    r->every = (int64_t)every;
    r->batches = (int64_t)batches;
    r->threshold = threshold;
    r->from_steps = host->opt_number(opts, "from_steps") != 0;
    r->freq = malloc(sizeof(float) * (size_t)host->d_sae(run));
    r->idx = malloc(sizeof(int64_t) * (size_t)host->d_sae(run));
    if (r->freq && r->from_steps) r->count = calloc((size_t)host->d_sae(run), sizeof(int64_t));
    if (!r->freq || !r->idx || (r->from_steps && !r->count))
        return reinit_destroy(r),
               saefw_fail(err, errlen, "out of memory for %lld frequencies", (long long)host->d_sae(run));
    *self = r;
    return 0;
}

/* A draw from PyTorch's kaiming_uniform_ default: uniform in [-bound, bound). */
static float kaiming(const saefw_host *host, saefw_run *run, double bound) {
    return (float)((2.0 * host->rng_uniform(run) - 1.0) * bound);
}

/* A latent of another architecture than relu as its init makes it: a kaiming-uniform decoder row [d]
 * scaled to unit norm, and the encoder column [d] equal to it (W_enc = W_dec^T). */
static void reinit_tied(const saefw_host *h, saefw_run *run, float *we, float *wd, int64_t j, int64_t d,
                        int64_t d_sae) {
    const double bound = sqrt(6.0 / (double)d);
    double ss = 0;
    for (int64_t i = 0; i < d; i++) {
        wd[j * d + i] = kaiming(h, run, bound);
        ss += (double)wd[j * d + i] * wd[j * d + i];
    }
    const float inv = (float)(1.0 / sqrt(ss));
    for (int64_t i = 0; i < d; i++) {
        wd[j * d + i] *= inv;
        we[i * d_sae + j] = wd[j * d + i];
    }
}

/* from_steps: this step's firings and rows, added to the window's (the counts are already the global
 * batch's; the rows are summed across ranks). */
static int count_step(reinit *r, saefw_run *run, char *err, size_t errlen) {
    const saefw_host *h = r->host;
    int64_t rows = 0;
    const int64_t *c = h->batch_feature_counts(run);
    if (!c || !h->batch_inputs(run, &rows))
        return saefw_fail(err, errlen, "from_steps: the batch's counts are missing");
    double n = (double)rows;
    if (SAEFW_HOST_HAS(h, ranks) && h->ranks(run) > 1 && h->all_reduce_sum(run, &n, 1, err, errlen) != 0) return -1;
    const int64_t d_sae = h->d_sae(run);
    for (int64_t j = 0; j < d_sae; j++) r->count[j] += c[j];
    r->rows += n;
    return 0;
}

static int reinit_after_step(void *self, saefw_run *run, char *err, size_t errlen) {
    reinit *r = self;
    const saefw_host *h = r->host;
    if (r->from_steps && count_step(r, run, err, errlen) != 0) return -1;
    if ((h->step(run) + 1) % r->every != 0) return 0;
    saefw_param we = SAEFW_PARAM_INIT, wd = SAEFW_PARAM_INIT, be = SAEFW_PARAM_INIT;
    /* The encoder bias is gated's b_gate. */
    if (h->param_find(run, "W_enc", &we, NULL) != 0 || h->param_find(run, "W_dec", &wd, NULL) != 0 ||
        (h->param_find(run, "b_enc", &be, NULL) != 0 && h->param_find(run, "b_gate", &be, NULL) != 0))
        return saefw_fail(err, errlen, "the SAE lacks W_enc, W_dec or b_enc");
    /* d_out: a transcoder's decoder rows are its target site's. */
    const int64_t d_in = we.shape[0], d_sae = we.shape[1], d_out = wd.shape[1];
    const char *arch = h->sae_arch(run);
    const int seed_way = !strcmp(arch, "relu") || !strcmp(arch, "transcoder");
    if (r->from_steps) {
        /* As the engine's estimate: the count over the rows in double, then to float. */
        for (int64_t j = 0; j < d_sae; j++) r->freq[j] = r->rows > 0 ? (float)((double)r->count[j] / r->rows) : 0.0f;
        memset(r->count, 0, sizeof(int64_t) * (size_t)d_sae);
        r->rows = 0;
    } else if (h->feature_frequencies(run, r->batches, r->freq, err, errlen) != 0) {
        return -1;
    }
    /* Bounds of kaiming_uniform_ on the full tensors: sqrt(6 / size(1)). */
    const double bound_enc = sqrt(6.0 / (double)d_sae), bound_dec = sqrt(6.0 / (double)d_out);
    int64_t count = 0;
    for (int64_t j = 0; j < d_sae; j++) {
        if (!((double)r->freq[j] < r->threshold)) continue;
        if (seed_way) {
            for (int64_t i = 0; i < d_in; i++) we.data[i * d_sae + j] = kaiming(h, run, bound_enc);
            /* Left unnormalised, as in the seed: the next step's decoder renorm (after its forward and
             * backward) scales the row to unit norm. Normalising here would change that next forward. */
            for (int64_t i = 0; i < d_out; i++) wd.data[j * d_out + i] = kaiming(h, run, bound_dec);
        } else {
            reinit_tied(h, run, we.data, wd.data, j, d_in, d_sae);
        }
        be.data[j] = 0.0f;
        r->idx[count++] = j;
    }
    if (!seed_way && h->reset_latents(run, r->idx, count, err, errlen) != 0) return -1;
    h->metric(run, "reinit_count", (double)count);
    char msg[200];
    if (r->from_steps)
        snprintf(msg, sizeof msg,
                 "step %lld: re-initialised %lld of %lld features (frequency < %g over the training rows since the "
                 "last check)",
                 (long long)h->step(run), (long long)count, (long long)d_sae, r->threshold);
    else
        snprintf(msg, sizeof msg, "step %lld: re-initialised %lld of %lld features (frequency < %g over %lld batches)",
                 (long long)h->step(run), (long long)count, (long long)d_sae, r->threshold, (long long)r->batches);
    h->log(run, SAEFW_LOG_INFO, msg);
    return 0;
}

/* from_steps: the window's counts so far, so that a resumed run re-initialises the same features. */
static int reinit_save(void *self, saefw_run *run, saefw_state_writer *w, char *err, size_t errlen) {
    reinit *r = self;
    if (!r->from_steps) return 0;
    if (r->host->state_put_i64(w, "count", r->count, r->host->d_sae(run), err, errlen) != 0) return -1;
    return r->host->state_put_number(w, "rows", r->rows, err, errlen);
}

static int reinit_load(void *self, saefw_run *run, saefw_state_reader *rd, char *err, size_t errlen) {
    reinit *r = self;
    if (!r->from_steps) return 0;
    if (r->host->state_get_i64(rd, "count", r->count, r->host->d_sae(run), err, errlen) != 0) return -1;
    return r->host->state_get_number(rd, "rows", &r->rows, err, errlen);
}

static const saefw_plugin PLUGIN = {
    .abi_version = SAEFW_ABI_VERSION,
    .struct_size = sizeof(saefw_plugin),
    .name = "reinit_dead",
    .description = "the seed's re-init: kaiming-uniform weights for features rarer than a threshold",
    .kind = SAEFW_KIND_RESAMPLER,
    .stateless = 1, /* its randomness is the engine's generator, which the engine saves; from_steps saves its counts */
    .options = OPTIONS,
    .option_size = sizeof(saefw_option),
    .create = reinit_create,
    .destroy = reinit_destroy,
    .after_step = reinit_after_step,
    .save_state = reinit_save,
    .load_state = reinit_load,
};

const saefw_plugin *saefw_plugin_init(const saefw_host *host, char *err, size_t errlen) { return &PLUGIN; }
