/* anthropic_resample: the resampling of "Towards Monosemanticity". At each resampling step, every
 * feature that has not fired in the last `window` training steps gets an input drawn with probability
 * proportional to its squared SAE loss: its decoder row becomes that input normalised, its encoder
 * column the same direction scaled to encoder_scale times the mean norm of the live encoder columns,
 * its encoder bias 0, and the optimizer state of exactly those slices is reset. On topk, batchtopk,
 * jumprelu and gated SAEs the same, with the engine's reset_latents for what else a latent carries
 * (jumprelu's threshold, gated's r_mag and b_mag, AuxK's counter) and the optimizer state of every
 * per-latent tensor reset. A transcoder is refused: its decoder rows live at the target site, and the
 * inputs drawn are the input site's. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <saefw/plugin.h>

/* The paper resamples at a fixed list of steps (25k, 50k, 75k, 100k); a list does not fit the
 * option types, so the steps are start, start + every, start + 2 every, ... (counted in completed
 * steps), up to `times` of them. */
static const saefw_option OPTIONS[] = {
    {"every", SAEFW_OPT_INTEGER, 25000, NULL, "steps between resamplings"},
    {"start", SAEFW_OPT_INTEGER, 0, NULL, "completed steps at the first resampling (0: the same as every)"},
    {"times", SAEFW_OPT_INTEGER, 0, NULL, "resample at most this many times (0: no limit; the paper: 4)"},
    {"window", SAEFW_OPT_INTEGER, 0, NULL,
     "a feature that fired in none of this many recent training steps is dead (0: the same as every)"},
    {"samples", SAEFW_OPT_INTEGER, 819200, NULL, "inputs whose loss is computed to draw from (the paper: 819200)"},
    {"chunk", SAEFW_OPT_INTEGER, 16384, NULL, "inputs sampled per call, which bounds the memory used"},
    {"encoder_scale", SAEFW_OPT_NUMBER, 0.2, NULL, "encoder columns get this times the mean live column norm"},
    {NULL, 0, 0, NULL, NULL},
};

typedef struct {
    const saefw_host *host;
    int64_t every, start, times, window, samples, chunk;
    double encoder_scale;
    int64_t d_in, d_sae, done;
    int64_t *last_fired; /* [d_sae]: the last step on which the feature fired (-1: never) */
    int64_t *dead;       /* [d_sae]: indices of dead features at a resampling */
    float *chosen;       /* [d_sae, d_in]: the input drawn for each dead feature */
    float *x, *loss;     /* [chunk, d_in], [chunk] */
    double *cum;         /* [chunk]: running sums of squared losses inside a chunk */
} resampler;

static void rs_destroy(void *self) {
    resampler *r = self;
    if (!r) return;
    free(r->last_fired);
    free(r->dead);
    free(r->chosen);
    free(r->x);
    free(r->loss);
    free(r->cum);
    free(r);
}

static int rs_create(const saefw_host *host, saefw_run *run, const saefw_opts *opts, void **self, char *err,
                     size_t errlen) {
    double every = host->opt_number(opts, "every"), start = host->opt_number(opts, "start");
    double times = host->opt_number(opts, "times"), window = host->opt_number(opts, "window");
    double samples = host->opt_number(opts, "samples"), chunk = host->opt_number(opts, "chunk");
    double scale = host->opt_number(opts, "encoder_scale");
    /* Step counts past any run's length are kept inside int64; samples at 1000 x the paper's 819200. */
    if (!(every >= 1 && every <= 1e15))
        return saefw_fail(err, errlen, "option 'every' must be >= 1 and <= 1e15, got %g", every);
    if (!(start >= 0 && start <= 1e15))
        return saefw_fail(err, errlen, "option 'start' must be >= 0 and <= 1e15 (0: the same as every), got %g", start);
    if (!(times >= 0 && times <= 1e15))
        return saefw_fail(err, errlen, "option 'times' must be >= 0 and <= 1e15 (0: no limit), got %g", times);
    if (!(window >= 0 && window <= 1e15))
        return saefw_fail(err, errlen, "option 'window' must be >= 0 and <= 1e15 (0: the same as every), got %g",
                          window);
    if (!(samples >= 1 && samples <= 1e9))
        return saefw_fail(err, errlen, "option 'samples' must be >= 1 and <= 1e9, got %g", samples);
    if (!(chunk >= 1 && chunk <= 1e9))
        return saefw_fail(err, errlen, "option 'chunk' must be >= 1 and <= 1e9, got %g", chunk);
    if (!(scale > 0)) return saefw_fail(err, errlen, "option 'encoder_scale' must be > 0, got %g", scale);
    if (!SAEFW_HOST_HAS(host, reset_latents))
        return saefw_fail(err, errlen, "needs an engine with plugin ABI 2.2 (reset_latents)");
    if (!strcmp(host->sae_arch(run), "transcoder"))
        return saefw_fail(err, errlen,
                          "cannot resample a transcoder: a decoder row would be an input-site row, but it "
                          "reconstructs the target site (use reinit_dead)");

    resampler *r = calloc(1, sizeof *r);
    if (!r) return saefw_fail(err, errlen, "out of memory");
    r->host = host;
    r->every = (int64_t)every;
    r->start = start > 0 ? (int64_t)start : r->every;
    r->times = (int64_t)times;
    r->window = window > 0 ? (int64_t)window : r->every;
    r->samples = (int64_t)samples;
    r->chunk = chunk < samples ? (int64_t)chunk : (int64_t)samples;
    r->encoder_scale = scale;
    r->d_in = host->d_in(run);
    r->d_sae = host->d_sae(run);
    const size_t d_in = (size_t)r->d_in, d_sae = (size_t)r->d_sae, ch = (size_t)r->chunk;
    r->last_fired = malloc(sizeof(int64_t) * d_sae);
    r->dead = malloc(sizeof(int64_t) * d_sae);
    r->chosen = malloc(sizeof(float) * d_sae * d_in);
    r->x = malloc(sizeof(float) * ch * d_in);
    r->loss = malloc(sizeof(float) * ch);
    r->cum = malloc(sizeof(double) * ch);
    if (!r->last_fired || !r->dead || !r->chosen || !r->x || !r->loss || !r->cum)
        return rs_destroy(r), saefw_fail(err, errlen, "out of memory (option 'chunk' = %zu rows of %zu)", ch, d_in);
    for (size_t j = 0; j < d_sae; j++) r->last_fired[j] = -1;
    *self = r;
    return 0;
}

/* Index of the first entry of cum [n] (non-decreasing) that exceeds u. */
static int64_t search(const double *cum, int64_t n, double u) {
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (cum[mid] > u) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

/* Draw one input for each of the n dead features, with replacement, with probability proportional
 * to loss^2, from `samples` inputs seen `chunk` at a time. Each draw holds its current pick; a new
 * chunk with weight W_c, after a running total S (W_c included), replaces it with probability W_c / S
 * by an input of the chunk drawn in proportion to its weight: by induction every input seen so far
 * is held with probability w / S. Returns 1 when drawn, 0 when every loss was zero. */
static int draw_inputs(resampler *r, saefw_run *run, int64_t n, char *err, size_t errlen) {
    const saefw_host *h = r->host;
    const int64_t d = r->d_in;
    double total = 0;
    for (int64_t done = 0; done < r->samples; done += r->chunk) {
        int64_t k = r->samples - done < r->chunk ? r->samples - done : r->chunk;
        if (h->sample_activations(run, r->x, r->loss, k, err, errlen) != 0) return -1;
        double s = 0;
        for (int64_t i = 0; i < k; i++) {
            double l = r->loss[i];
            s += l * l;
            r->cum[i] = s;
        }
        if (!(s > 0)) continue;
        total += s;
        for (int64_t f = 0; f < n; f++) {
            if (h->rng_uniform(run) * total >= s) continue;
            int64_t pick = search(r->cum, k, h->rng_uniform(run) * s);
            memcpy(r->chosen + f * d, r->x + pick * d, sizeof(float) * (size_t)d);
        }
    }
    return total > 0 ? 1 : 0;
}

/* The optimizer state of the n latents in r->dead, in every tensor that has a slice per latent: W_enc's
 * columns, W_dec's rows, and the [d_sae] vectors (b_enc or b_gate, log_threshold, r_mag, b_mag). */
static int reset_slices(resampler *r, saefw_run *run, int64_t n, char *err, size_t errlen) {
    const saefw_host *h = r->host;
    for (int i = 0; i < h->param_count(run); i++) {
        saefw_param p = SAEFW_PARAM_INIT;
        if (h->param_get(run, i, &p) != 0) return saefw_fail(err, errlen, "cannot read the SAE's tensor %d", i);
        int axis = -1;
        if (!strcmp(p.name, "W_enc")) axis = 1;
        else if (!strcmp(p.name, "W_dec")) axis = 0;
        else if (p.ndim == 1 && p.shape[0] == r->d_sae && strcmp(p.name, "b_dec") != 0) axis = 0;
        if (axis >= 0 && h->reset_optimizer_state(run, i, axis, r->dead, n, err, errlen) != 0) return -1;
    }
    return 0;
}

static int resample(resampler *r, saefw_run *run, char *err, size_t errlen) {
    const saefw_host *h = r->host;
    const int64_t d_in = r->d_in, d_sae = r->d_sae, step = h->step(run);
    saefw_param we = SAEFW_PARAM_INIT, wd = SAEFW_PARAM_INIT, be = SAEFW_PARAM_INIT;
    /* The encoder bias is gated's b_gate. */
    if (h->param_find(run, "W_enc", &we, NULL) != 0 || h->param_find(run, "W_dec", &wd, NULL) != 0 ||
        (h->param_find(run, "b_enc", &be, NULL) != 0 && h->param_find(run, "b_gate", &be, NULL) != 0))
        return saefw_fail(err, errlen, "the SAE lacks W_enc, W_dec or b_enc");

    /* Fired on none of the steps step - window + 1 .. step. last_fired starts at -1, so until
     * `window` steps have been seen no feature counts as dead. */
    int64_t n = 0;
    for (int64_t j = 0; j < d_sae; j++)
        if (r->last_fired[j] <= step - r->window) r->dead[n++] = j;
    char msg[200];
    if (n == 0) {
        h->metric(run, "resampled_count", 0);
        snprintf(msg, sizeof msg, "step %lld: no dead features (none silent for %lld steps)", (long long)step,
                 (long long)r->window);
        h->log(run, SAEFW_LOG_INFO, msg);
        return 0;
    }

    /* Mean encoder column norm over the live features, before any column changes. With no live
     * feature there is nothing to match, so the columns get encoder_scale times 1.0. */
    double norm_sum = 0;
    int64_t live = 0;
    for (int64_t j = 0, k = 0; j < d_sae; j++) {
        if (k < n && r->dead[k] == j) {
            k++;
            continue;
        }
        double ss = 0;
        for (int64_t i = 0; i < d_in; i++) ss += (double)we.data[i * d_sae + j] * we.data[i * d_sae + j];
        norm_sum += sqrt(ss);
        live++;
    }
    const double mean_norm = live > 0 ? norm_sum / (double)live : 1.0;

    int got = draw_inputs(r, run, n, err, errlen);
    if (got < 0) return -1;
    if (got == 0) {
        h->metric(run, "resampled_count", 0);
        snprintf(msg, sizeof msg, "step %lld: %lld dead features, but every sampled loss is zero; nothing resampled",
                 (long long)step, (long long)n);
        h->log(run, SAEFW_LOG_WARN, msg);
        return 0;
    }

    /* The raw input x, not x - b_dec: the paper sets the dictionary vector to "the normalized input
     * vector", and x is what the high loss was measured on. jumprelu's encoder reads x itself, so there
     * the latent's pre-activation on its input is exactly encoder_scale * mean_norm * |x|, which its
     * reset threshold (log(threshold)) must exceed for it to fire there. */
    int64_t written = 0;
    for (int64_t k = 0; k < n; k++) {
        const int64_t j = r->dead[k];
        const float *x = r->chosen + k * d_in;
        double ss = 0;
        for (int64_t i = 0; i < d_in; i++) ss += (double)x[i] * x[i];
        if (!(ss > 0)) continue; /* a zero input has a loss only through b_dec; keep the feature as it is */
        const double inv = 1.0 / sqrt(ss), enc = inv * r->encoder_scale * mean_norm;
        for (int64_t i = 0; i < d_in; i++) {
            wd.data[j * d_in + i] = (float)(x[i] * inv);
            we.data[i * d_sae + j] = (float)(x[i] * enc);
        }
        be.data[j] = 0.0f;
        r->dead[written++] = j;
        /* A revived feature gets a full window before it can count as dead again. */
        r->last_fired[j] = step;
    }
    n = written;

    if (n > 0 && (h->reset_latents(run, r->dead, n, err, errlen) != 0 || reset_slices(r, run, n, err, errlen) != 0))
        return -1;
    h->metric(run, "resampled_count", (double)n);
    snprintf(msg, sizeof msg,
             "step %lld: resampled %lld of %lld features (silent for %lld steps) from %lld inputs; mean live encoder "
             "norm %.4g%s",
             (long long)step, (long long)n, (long long)d_sae, (long long)r->window, (long long)r->samples, mean_norm,
             live ? "" : " (no live feature: 1.0 used)");
    h->log(run, SAEFW_LOG_INFO, msg);
    return 0;
}

static int rs_after_step(void *self, saefw_run *run, char *err, size_t errlen) {
    resampler *r = self;
    const saefw_host *h = r->host;
    const int64_t step = h->step(run);
    /* The counts, not the activations: on the sparse path they cost no [rows, d_sae] array. */
    const int64_t *fired = h->batch_feature_counts(run);
    if (!fired) return saefw_fail(err, errlen, "no feature counts for the current batch");
    for (int64_t j = 0; j < r->d_sae; j++)
        if (fired[j] > 0) r->last_fired[j] = step;
    const int64_t completed = step + 1;
    if (completed < r->start || (completed - r->start) % r->every != 0) return 0;
    if (r->times > 0 && r->done >= r->times) return 0;
    r->done++;
    return resample(r, run, err, errlen);
}

/* Resume: when each feature last fired, and how many resamplings were done. */
static int rs_save(void *self, saefw_run *run, saefw_state_writer *w, char *err, size_t errlen) {
    resampler *r = self;
    if (r->host->state_put_i64(w, "last_fired", r->last_fired, r->d_sae, err, errlen) != 0) return -1;
    return r->host->state_put_number(w, "done", (double)r->done, err, errlen);
}

static int rs_load(void *self, saefw_run *run, saefw_state_reader *rd, char *err, size_t errlen) {
    resampler *r = self;
    double done = 0;
    if (r->host->state_get_i64(rd, "last_fired", r->last_fired, r->d_sae, err, errlen) != 0) return -1;
    if (r->host->state_get_number(rd, "done", &done, err, errlen) != 0) return -1;
    r->done = (int64_t)done;
    return 0;
}

static const saefw_plugin PLUGIN = {
    .abi_version = SAEFW_ABI_VERSION,
    .struct_size = sizeof(saefw_plugin),
    .name = "anthropic_resample",
    .description = "Towards Monosemanticity: dead features get high-loss inputs; their optimizer state is reset",
    .kind = SAEFW_KIND_RESAMPLER,
    .options = OPTIONS,
    .option_size = sizeof(saefw_option),
    .create = rs_create,
    .destroy = rs_destroy,
    .after_step = rs_after_step,
    .save_state = rs_save,
    .load_state = rs_load,
};

const saefw_plugin *saefw_plugin_init(const saefw_host *host, char *err, size_t errlen) { return &PLUGIN; }
