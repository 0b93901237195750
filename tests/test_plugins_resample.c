/* The resampler and experiment plugins on the synthetic source, through the real training loop:
 * reinit_dead revives features killed with a large negative encoder bias (kaiming bounds, untouched
 * features bit-identical to a run without it); anthropic_resample revives features killed mid-run,
 * resets the Adam state of exactly the slices it wrote (seen through Adam's next update, which must be
 * the one from zero moments) and leaves every other slice bit-identical; remove_rare_dir keeps every
 * encoder column orthogonal to its direction; bad options fail naming the plugin and the option;
 * batch_feature_counts agrees with batch_acts on both paths. For topk, batchtopk, jumprelu and gated
 * both resamplers re-initialise a latent as the architecture's init does and reset what else it
 * carries (jumprelu's log_threshold, gated's r_mag and b_mag, AuxK's since_fired), anthropic_resample
 * resetting the optimizer state of every per-latent tensor. */
#include "plugin_loader.h"
#include "sae.h"
#include "testutil.h"
#include "train.h"

#define D_IN 32
#define D_SAE 128
#define BATCH 256
#define MAX_STEPS 256
#define LR 1e-3
#define BETA1 0.9
#define BETA2 0.99
#define EPS 1e-8
#define KILL_BIAS -100.0f

/* Features killed in the tests: 16 of 128. */
static int killed(int64_t j) { return j % 8 == 3; }

/* ---- one training setup: source, buffer, SAE, all seeded, so two runs see the same batches ---- */

typedef struct {
    saefw_source *src;
    saefw_buffer buf;
    saefw_sae sae;
} world;

static void world_init(world *w) {
    char err[1024];
    saefw_synthetic_opts so = {D_IN, 48, 0.04, 1.0, 7};
    REQUIRE(saefw_source_synthetic(&so, &w->src, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_sae_alloc(&w->sae, D_IN, D_SAE, 1e-3f, err, sizeof err) == 0, "%s", err);
    saefw_rng rng;
    saefw_rng_seed(&rng, 49);
    saefw_sae_init_params(&w->sae, &rng);
    REQUIRE(saefw_buffer_init(&w->buf, w->src, BATCH * 16, BATCH, SAEFW_BUF_F32, 1, err, sizeof err) == 0, "%s", err);
}

static void world_free(world *w) {
    saefw_buffer_free(&w->buf);
    saefw_sae_free(&w->sae);
    saefw_source_free(w->src);
}

/* ---- what the loop reported: the metrics of every log and eval event, by step ---- */

typedef struct {
    saefw_metrics log[MAX_STEPS], eval[MAX_STEPS], end;
    unsigned char has_log[MAX_STEPS], has_eval[MAX_STEPS];
} recorder;

static int on_event(void *ud, saefw_event event, const saefw_metrics *m, char *err, size_t errlen) {
    recorder *r = ud;
    if (event == SAEFW_EVENT_END) r->end = *m;
    else if (m->step >= 0 && m->step < MAX_STEPS) {
        if (event == SAEFW_EVENT_LOG) r->log[m->step] = *m, r->has_log[m->step] = 1;
        else r->eval[m->step] = *m, r->has_eval[m->step] = 1;
    }
    return 0;
}

/* A metric a plugin recorded; NAN when absent. */
static double metric(const saefw_metrics *m, const char *name) {
    for (int i = 0; i < m->n_extra; i++)
        if (!strcmp(m->extra_name[i], name)) return m->extra_value[i];
    return NAN;
}

/* ---- plugins ---- */

static saefw_loaded_plugin *load(const char *name) {
    char err[1024];
    saefw_loaded_plugin *lp = NULL;
    REQUIRE(saefw_plugin_load(name, saefw_host_table(), &lp, err, sizeof err) == 0, "%s", err);
    return lp;
}

static saefw_opts *opts_new(const saefw_loaded_plugin *lp) {
    char err[1024];
    saefw_opts *o = NULL;
    REQUIRE(saefw_opts_new(lp, &o, err, sizeof err) == 0, "%s", err);
    return o;
}

static void set_num(saefw_opts *o, const saefw_loaded_plugin *lp, const char *k, double v) {
    char err[1024];
    REQUIRE(saefw_opts_set_number(o, lp, k, v, err, sizeof err) == 0, "%s", err);
}

static void set_str(saefw_opts *o, const saefw_loaded_plugin *lp, const char *k, const char *v) {
    char err[1024];
    REQUIRE(saefw_opts_set_string(o, lp, k, v, err, sizeof err) == 0, "%s", err);
}

/* An optimizer that is the real adam plugin, watched: it records every reset_state call, and at one
 * chosen step it copies the parameters and gradients before Adam's update and the parameters after. */
#define MAX_RESETS 8
static struct {
    saefw_loaded_plugin *adam;
    const saefw_host *host;
    int64_t snap_step;
    float *before, *grad, *after; /* all four tensors, in the engine's order */
    int snapped;
    int n_resets;
    int reset_param[MAX_RESETS], reset_axis[MAX_RESETS];
    int64_t reset_n[MAX_RESETS];
    int64_t *reset_idx[MAX_RESETS];
} g_probe;

static int probe_create(const saefw_host *host, saefw_run *run, const saefw_opts *opts, void **self, char *err,
                        size_t errlen) {
    g_probe.host = host;
    return g_probe.adam->p.create(host, run, opts, self, err, errlen);
}

static void probe_destroy(void *self) { g_probe.adam->p.destroy(self); }

static void snapshot(saefw_run *run, float *data, float *grad) {
    size_t off = 0;
    for (int i = 0; i < g_probe.host->param_count(run); i++) {
        saefw_param p = SAEFW_PARAM_INIT;
        REQUIRE(g_probe.host->param_get(run, i, &p) == 0, "param_get %d", i);
        memcpy(data + off, p.data, sizeof(float) * (size_t)p.numel);
        if (grad) memcpy(grad + off, p.grad, sizeof(float) * (size_t)p.numel);
        off += (size_t)p.numel;
    }
}

static int probe_step(void *self, saefw_run *run, char *err, size_t errlen) {
    int snap = g_probe.host->step(run) == g_probe.snap_step;
    if (snap) snapshot(run, g_probe.before, g_probe.grad);
    int rc = g_probe.adam->p.step(self, run, err, errlen);
    if (snap) snapshot(run, g_probe.after, NULL), g_probe.snapped = 1;
    return rc;
}

static int probe_reset(void *self, saefw_run *run, int param, int axis, const int64_t *idx, int64_t n, char *err,
                       size_t errlen) {
    REQUIRE(g_probe.n_resets < MAX_RESETS, "too many reset_state calls");
    int k = g_probe.n_resets++;
    g_probe.reset_param[k] = param;
    g_probe.reset_axis[k] = axis;
    g_probe.reset_n[k] = n;
    g_probe.reset_idx[k] = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    REQUIRE(g_probe.reset_idx[k], "out of memory");
    if (idx) memcpy(g_probe.reset_idx[k], idx, sizeof(int64_t) * (size_t)n);
    return g_probe.adam->p.reset_state(self, run, param, axis, idx, n, err, errlen);
}

static void probe_clear(void) {
    for (int k = 0; k < g_probe.n_resets; k++) free(g_probe.reset_idx[k]);
    g_probe.n_resets = 0;
    g_probe.snapped = 0;
}

/* An in-process experiment plugin with these callbacks. */
static saefw_loaded_plugin experiment(const char *name,
                                      int (*create)(const saefw_host *, saefw_run *, const saefw_opts *, void **,
                                                    char *, size_t),
                                      saefw_callback after_step) {
    saefw_loaded_plugin lp = {0};
    lp.p.abi_version = SAEFW_ABI_VERSION;
    lp.p.struct_size = sizeof(saefw_plugin);
    lp.p.name = name;
    lp.p.kind = SAEFW_KIND_EXPERIMENT;
    lp.p.create = create;
    lp.p.after_step = after_step;
    return lp;
}

/* An experiment that kills the chosen features (encoder bias KILL_BIAS) after step g_kill_step. */
static int64_t g_kill_step;
static const saefw_host *g_killer_host;

static int killer_create(const saefw_host *host, saefw_run *run, const saefw_opts *opts, void **self, char *err,
                         size_t errlen) {
    g_killer_host = host;
    *self = NULL;
    return 0;
}

static int killer_after_step(void *self, saefw_run *run, char *err, size_t errlen) {
    if (g_killer_host->step(run) != g_kill_step) return 0;
    saefw_param b = SAEFW_PARAM_INIT;
    if (g_killer_host->param_find(run, "b_enc", &b, NULL) != 0 &&
        g_killer_host->param_find(run, "b_gate", &b, NULL) != 0)
        return snprintf(err, errlen, "no b_enc"), -1;
    for (int64_t j = 0; j < b.numel; j++)
        if (killed(j)) b.data[j] = KILL_BIAS;
    return 0;
}

/* An experiment that checks batch_feature_counts against batch_acts at every step. */
static const saefw_host *g_counter_host;
static int64_t g_count_steps, g_count_mismatches;

static int counter_create(const saefw_host *host, saefw_run *run, const saefw_opts *opts, void **self, char *err,
                          size_t errlen) {
    g_counter_host = host;
    *self = NULL;
    return 0;
}

static int counter_after_step(void *self, saefw_run *run, char *err, size_t errlen) {
    const saefw_host *h = g_counter_host;
    const int64_t *counts = h->batch_feature_counts(run);
    int64_t rows = 0;
    const float *acts = h->batch_acts(run, &rows);
    if (!counts || !acts) return snprintf(err, errlen, "no counts or activations"), -1;
    for (int64_t j = 0; j < D_SAE; j++) {
        int64_t n = 0;
        for (int64_t b = 0; b < rows; b++) n += acts[b * D_SAE + j] > 0.0f;
        g_count_mismatches += n != counts[j];
    }
    g_count_steps++;
    return 0;
}

/* ---- training ---- */

static int train(world *w, saefw_plugin_use opt, const saefw_plugin_use *plugins, int n, int64_t steps,
                 int64_t eval_every, recorder *rec, char *err, size_t errlen) {
    saefw_train_opts o = {0};
    o.sae = &w->sae;
    o.buffer = &w->buf;
    o.steps = steps;
    o.optimizer = opt;
    o.plugins = plugins;
    o.n_plugins = n;
    o.log_every = 1;
    o.eval_every = eval_every;
    o.seed = 5;
    o.progress = 0;
    o.on_event = rec ? on_event : NULL;
    o.event_ud = rec;
    saefw_train_result res;
    return saefw_train(&o, &res, err, errlen);
}

static double col_norm(const float *W_enc, int64_t j) {
    double ss = 0;
    for (int64_t i = 0; i < D_IN; i++) ss += (double)W_enc[i * D_SAE + j] * W_enc[i * D_SAE + j];
    return sqrt(ss);
}

/* Whether feature j's encoder column, decoder row and encoder bias are bit-identical in a and b. */
static int feature_same(const saefw_sae *a, const saefw_sae *b, int64_t j) {
    for (int64_t i = 0; i < D_IN; i++)
        if (memcmp(&a->p[SAEFW_W_ENC][i * D_SAE + j], &b->p[SAEFW_W_ENC][i * D_SAE + j], sizeof(float))) return 0;
    return !memcmp(a->p[SAEFW_W_DEC] + j * D_IN, b->p[SAEFW_W_DEC] + j * D_IN, sizeof(float) * D_IN) &&
           !memcmp(&a->p[SAEFW_B_ENC][j], &b->p[SAEFW_B_ENC][j], sizeof(float));
}

/* ---- reinit_dead ---- */

/* from_steps: the frequencies over the training batches since the last check instead of fresh batches. */
static void test_reinit_dead(saefw_loaded_plugin *adam, saefw_opts *adam_opts, int from_steps) {
    printf("reinit_dead%s:\n", from_steps ? " (from_steps)" : "");
    const int64_t every = 100;
    char err[1024];
    saefw_loaded_plugin *rd = load("reinit_dead");
    saefw_opts *ro = opts_new(rd);
    set_num(ro, rd, "every", (double)every);
    set_num(ro, rd, "batches", 20);
    if (from_steps) REQUIRE(saefw_opts_set_bool(ro, rd, "from_steps", 1, err, sizeof err) == 0, "%s", err);
    saefw_plugin_use opt = {.plugin = adam, .opts = adam_opts}, use = {.plugin = rd, .opts = ro};

    static recorder with, without;
    world a, c;
    world_init(&a);
    world_init(&c);
    for (int64_t j = 0; j < D_SAE; j++)
        if (killed(j)) a.sae.p[SAEFW_B_ENC][j] = c.sae.p[SAEFW_B_ENC][j] = KILL_BIAS;
    CHECK(train(&a, opt, &use, 1, every, 1, &with, err, sizeof err) == 0, "train: %s", err);
    CHECK(train(&c, opt, NULL, 0, every, 1, &without, err, sizeof err) == 0, "train: %s", err);

    const int64_t s = every - 1; /* the re-init runs in this step's after_step */
    REQUIRE(with.has_eval[s - 1] && with.has_eval[s] && with.has_log[s], "missing events");
    double before = with.eval[s - 1].frac_dead * D_SAE, after = with.eval[s].frac_dead * D_SAE;
    double count = metric(&with.log[s], "reinit_count");
    printf("  dead features: %.0f at step %lld, %.0f after the re-init at step %lld (reinit_count %.0f, 16 killed)\n",
           before, (long long)(s - 1), after, (long long)s, count);
    CHECK(before >= 16, "the killed features should be dead before the re-init: %g", before);
    CHECK(after < before, "the dead count did not drop: %g -> %g", before, after);
    CHECK(after <= before - 12, "too few features revived: %g -> %g", before, after);
    CHECK(isnan(metric(&with.log[s - 1], "reinit_count")), "reinit_count reported before the re-init step");

    /* The re-initialised features are those that differ from the run without the plugin. */
    const double bound_enc = sqrt(6.0 / D_SAE), bound_dec = sqrt(6.0 / D_IN);
    double max_enc = 0, max_dec = 0;
    int64_t n_changed = 0, killed_changed = 0, bad_bias = 0;
    for (int64_t j = 0; j < D_SAE; j++) {
        if (feature_same(&a.sae, &c.sae, j)) continue;
        n_changed++;
        killed_changed += killed(j);
        bad_bias += a.sae.p[SAEFW_B_ENC][j] != 0.0f;
        for (int64_t i = 0; i < D_IN; i++) {
            max_enc = t_max(max_enc, fabs(a.sae.p[SAEFW_W_ENC][i * D_SAE + j]));
            max_dec = t_max(max_dec, fabs(a.sae.p[SAEFW_W_DEC][j * D_IN + i]));
        }
    }
    printf("  %lld features re-initialised (%lld of them killed); max |W_enc| %.4f (bound %.4f), max |W_dec| %.4f "
           "(bound %.4f)\n",
           (long long)n_changed, (long long)killed_changed, max_enc, bound_enc, max_dec, bound_dec);
    CHECK(killed_changed == 16, "only %lld of the 16 killed features were re-initialised", (long long)killed_changed);
    CHECK(n_changed == (int64_t)count, "%lld features changed, reinit_count says %g", (long long)n_changed, count);
    CHECK(bad_bias == 0, "%lld re-initialised features have a non-zero b_enc", (long long)bad_bias);
    CHECK(max_enc <= bound_enc && max_enc > 0.9 * bound_enc, "W_enc columns not kaiming-uniform: max %g, bound %g",
          max_enc, bound_enc);
    CHECK(max_dec <= bound_dec && max_dec > 0.9 * bound_dec, "W_dec rows not kaiming-uniform: max %g, bound %g",
          max_dec, bound_dec);
    CHECK(!memcmp(a.sae.p[SAEFW_B_DEC], c.sae.p[SAEFW_B_DEC], sizeof(float) * D_IN), "b_dec changed");

    world_free(&a);
    world_free(&c);
    saefw_opts_free(ro);
    saefw_plugin_unload(rd);
}

/* ---- anthropic_resample ---- */

static int64_t in_set(const int64_t *idx, int64_t n, int64_t j) {
    for (int64_t k = 0; k < n; k++)
        if (idx[k] == j) return 1;
    return 0;
}

static void test_anthropic(saefw_opts *adam_opts) {
    printf("anthropic_resample:\n");
    const int64_t every = 150, window = 60;
    char err[1024];
    saefw_loaded_plugin *ar = load("anthropic_resample");
    saefw_opts *ao = opts_new(ar);
    set_num(ao, ar, "every", (double)every);
    set_num(ao, ar, "window", (double)window);
    set_num(ao, ar, "samples", 8192);
    set_num(ao, ar, "chunk", 1000);

    saefw_loaded_plugin probe = {0}, killer = {0};
    probe.p = g_probe.adam->p;
    probe.p.name = "adam";
    probe.p.create = probe_create;
    probe.p.destroy = probe_destroy;
    probe.p.step = probe_step;
    probe.p.reset_state = probe_reset;
    killer = experiment("killer", killer_create, killer_after_step);
    /* Killed after step 89: alive long enough to have Adam moments, silent for the 60-step window
     * before the resampling after step 149. */
    g_kill_step = every - window - 1;

    size_t total = D_IN * D_SAE * 2 + D_SAE + D_IN;
    float *bB = malloc(sizeof(float) * total);
    g_probe.before = malloc(sizeof(float) * total);
    g_probe.grad = malloc(sizeof(float) * total);
    g_probe.after = malloc(sizeof(float) * total);
    REQUIRE(bB && g_probe.before && g_probe.grad && g_probe.after, "out of memory");
    g_probe.snap_step = every; /* the step after the resampling */

    saefw_plugin_use opt = {.plugin = &probe, .opts = adam_opts};
    saefw_plugin_use without_uses[1] = {{.plugin = &killer}},
                     with_uses[2] = {{.plugin = &killer}, {.plugin = ar, .opts = ao}};
    static recorder rec;
    world w;

    /* Without resampling: the reference for the untouched slices. */
    world_init(&w);
    probe_clear();
    CHECK(train(&w, opt, without_uses, 1, every + 1, 0, NULL, err, sizeof err) == 0, "train: %s", err);
    REQUIRE(g_probe.snapped, "no snapshot");
    CHECK(g_probe.n_resets == 0, "reset_state called without a resampler");
    memcpy(bB, g_probe.before, sizeof(float) * total);
    world_free(&w);

    world_init(&w);
    probe_clear();
    CHECK(train(&w, opt, with_uses, 2, every + 1, 1, &rec, err, sizeof err) == 0, "train: %s", err);
    REQUIRE(g_probe.snapped, "no snapshot");
    const int64_t s = every - 1;
    REQUIRE(rec.has_eval[s - 1] && rec.has_eval[s] && rec.has_log[s], "missing events");
    double before = rec.eval[s - 1].frac_dead * D_SAE, after = rec.eval[s].frac_dead * D_SAE;
    double count = metric(&rec.log[s], "resampled_count");
    printf("  dead features: %.0f at step %lld, %.0f after the resampling at step %lld (resampled_count %.0f, 16 "
           "killed)\n",
           before, (long long)(s - 1), after, (long long)s, count);
    CHECK(before >= 16, "the killed features should be dead before resampling: %g", before);
    CHECK(after < before, "the dead count did not fall: %g -> %g", before, after);
    CHECK(after <= before - 12, "too few features revived: %g -> %g", before, after);

    /* reset_state: W_dec rows, W_enc columns, b_enc entries, each for the same features. */
    CHECK(g_probe.n_resets == 3, "%d reset_state calls, want 3", g_probe.n_resets);
    int64_t *R = NULL, nR = 0;
    int seen[3] = {0, 0, 0};
    for (int k = 0; k < g_probe.n_resets; k++) {
        int pm = g_probe.reset_param[k], ax = g_probe.reset_axis[k];
        int which = pm == SAEFW_W_DEC && ax == 0   ? 0
                    : pm == SAEFW_W_ENC && ax == 1 ? 1
                    : pm == SAEFW_B_ENC && ax == 0 ? 2
                                                   : -1;
        CHECK(which >= 0, "reset of tensor %d along axis %d", pm, ax);
        if (which < 0) continue;
        seen[which] = 1;
        if (!R) {
            R = g_probe.reset_idx[k];
            nR = g_probe.reset_n[k];
            continue;
        }
        int same = g_probe.reset_n[k] == nR;
        for (int64_t q = 0; same && q < nR; q++) same = in_set(R, nR, g_probe.reset_idx[k][q]);
        CHECK(same, "reset call %d covers other features than the first", k);
    }
    CHECK(seen[0] && seen[1] && seen[2], "missing resets: W_dec rows %d, W_enc columns %d, b_enc %d", seen[0], seen[1],
          seen[2]);
    REQUIRE(R, "no reset at all");
    int64_t killed_reset = 0;
    for (int64_t j = 0; j < D_SAE; j++) killed_reset += killed(j) && in_set(R, nR, j);
    printf("  optimizer state reset for %lld features (%lld of the 16 killed)\n", (long long)nR,
           (long long)killed_reset);
    CHECK(killed_reset == 16, "only %lld killed features resampled", (long long)killed_reset);
    CHECK(nR == (int64_t)count, "resampled_count %g, but %lld features reset", count, (long long)nR);

    /* Slices as they were entering the step after resampling, with the run without resampling. */
    const float *A = g_probe.before;
    const float *AW_enc = A, *AW_dec = A + D_IN * D_SAE, *Ab_enc = AW_dec + D_SAE * D_IN, *Ab_dec = Ab_enc + D_SAE;
    const float *BW_enc = bB, *BW_dec = bB + D_IN * D_SAE, *Bb_enc = BW_dec + D_SAE * D_IN, *Bb_dec = Bb_enc + D_SAE;
    int64_t untouched_diff = 0, live = 0;
    double live_norm = 0;
    for (int64_t j = 0; j < D_SAE; j++) {
        if (in_set(R, nR, j)) continue;
        int same = !memcmp(AW_dec + j * D_IN, BW_dec + j * D_IN, sizeof(float) * D_IN) &&
                   !memcmp(&Ab_enc[j], &Bb_enc[j], sizeof(float));
        for (int64_t i = 0; i < D_IN; i++)
            same = same && !memcmp(&AW_enc[i * D_SAE + j], &BW_enc[i * D_SAE + j], sizeof(float));
        untouched_diff += !same;
        live_norm += col_norm(AW_enc, j);
        live++;
    }
    live_norm /= (double)(live ? live : 1);
    printf("  untouched features that differ from the run without resampling: %lld of %lld\n",
           (long long)untouched_diff, (long long)live);
    CHECK(untouched_diff == 0, "%lld untouched features are not bit-identical", (long long)untouched_diff);
    CHECK(!memcmp(Ab_dec, Bb_dec, sizeof(float) * D_IN), "b_dec is not bit-identical");

    /* Touched features: unit decoder row, encoder column along it with 0.2 x the mean live norm, b_enc 0. */
    double worst_dir = 0, worst_norm = 0, worst_unit = 0;
    int64_t nonzero_bias = 0;
    for (int64_t k = 0; k < nR; k++) {
        int64_t j = R[k];
        double en = col_norm(AW_enc, j), ss = 0;
        for (int64_t i = 0; i < D_IN; i++) ss += (double)AW_dec[j * D_IN + i] * AW_dec[j * D_IN + i];
        worst_unit = t_max(worst_unit, fabs(sqrt(ss) - 1));
        worst_norm = t_max(worst_norm, fabs(en / (0.2 * live_norm) - 1));
        for (int64_t i = 0; i < D_IN; i++)
            worst_dir = t_max(worst_dir, fabs(AW_enc[i * D_SAE + j] / en - AW_dec[j * D_IN + i] / sqrt(ss)));
        nonzero_bias += Ab_enc[j] != 0.0f;
    }
    printf("  resampled: |dec row norm - 1| <= %.2e, encoder norm / (0.2 x mean live %.4f) - 1 <= %.2e, "
           "direction mismatch <= %.2e\n",
           worst_unit, live_norm, worst_norm, worst_dir);
    CHECK(worst_unit < 1e-5 && worst_norm < 1e-5 && worst_dir < 1e-5, "resampled slices are not as specified");
    CHECK(nonzero_bias == 0, "%lld resampled features have b_enc != 0", (long long)nonzero_bias);

    /* Adam's next update of a reset slice is the one from zero moments at t = every + 1. */
    const double t = (double)(every + 1);
    const float omb1 = (float)(1.0 - BETA1), omb2 = (float)(1.0 - BETA2);
    const float neg_step = (float)(-(LR / (1.0 - pow(BETA1, t)))), bc2_sqrt = (float)sqrt(1.0 - pow(BETA2, t));
    int64_t touched_bad = 0, touched_n = 0, other_match = 0, other_n = 0;
    double touched_worst = 0;
    const int64_t n_slices = D_IN * D_SAE * 2 + D_SAE;
    for (int64_t e = 0; e < n_slices; e++) {
        int64_t j = e < D_IN * D_SAE       ? e % D_SAE
                    : e < 2 * D_IN * D_SAE ? (e - D_IN * D_SAE) / D_IN
                                           : e - 2 * D_IN * D_SAE;
        float g = g_probe.grad[e];
        float m = omb1 * g, v = omb2 * g * g;
        float denom = sqrtf(v) / bc2_sqrt + (float)EPS;
        float want = g_probe.before[e] + neg_step * m / denom;
        double diff = fabs((double)g_probe.after[e] - want);
        if (in_set(R, nR, j)) {
            touched_n++;
            touched_worst = t_max(touched_worst, diff);
            touched_bad += !(diff <= 1e-6); /* a NaN counts as bad */
        } else {
            other_n++;
            other_match += diff <= 1e-6;
        }
    }
    printf("  next Adam update vs zero moments: touched slices max |diff| %.2e over %lld entries; untouched entries "
           "that also match %lld of %lld\n",
           touched_worst, (long long)touched_n, (long long)other_match, (long long)other_n);
    CHECK(touched_bad == 0, "%lld entries of reset slices did not update from zero Adam state", (long long)touched_bad);
    CHECK(other_match < other_n / 20, "the check cannot tell reset state from kept state (%lld of %lld match)",
          (long long)other_match, (long long)other_n);

    world_free(&w);
    probe_clear();
    free(bB);
    free(g_probe.before);
    free(g_probe.grad);
    free(g_probe.after);
    saefw_opts_free(ao);
    saefw_plugin_unload(ar);
}

/* ---- remove_rare_dir ---- */

static double max_dir_dot(const saefw_sae *sae, const double *d) {
    double worst = 0;
    for (int64_t j = 0; j < D_SAE; j++) {
        double s = 0;
        for (int64_t i = 0; i < D_IN; i++) s += d[i] * sae->p[SAEFW_W_ENC][i * D_SAE + j];
        worst = t_max(worst, fabs(s));
    }
    return worst;
}

static void write_vec(const char *path, const float *v, int64_t n) {
    char err[1024];
    REQUIRE(saefw_npy_write(path, SAEFW_DT_F32, 1, &n, v, err, sizeof err) == 0, "%s", err);
}

static void test_remove_rare_dir(saefw_loaded_plugin *adam, saefw_opts *adam_opts, const char *tmp) {
    printf("remove_rare_dir:\n");
    char err[1024], path[1200];
    float dir[D_IN];
    double unit[D_IN], ss = 0;
    saefw_rng rng;
    saefw_rng_seed(&rng, 3);
    for (int i = 0; i < D_IN; i++) dir[i] = (float)(3.0 * saefw_rng_normal(&rng)); /* deliberately not unit */
    for (int i = 0; i < D_IN; i++) ss += (double)dir[i] * dir[i];
    for (int i = 0; i < D_IN; i++) unit[i] = dir[i] / sqrt(ss);
    snprintf(path, sizeof path, "%s/dir.npy", tmp);
    write_vec(path, dir, D_IN);

    saefw_loaded_plugin *rr = load("remove_rare_dir");
    saefw_opts *ro = opts_new(rr);
    set_str(ro, rr, "direction", path);
    saefw_plugin_use opt = {.plugin = adam, .opts = adam_opts}, use = {.plugin = rr, .opts = ro};
    static recorder rec;
    world w, base;
    world_init(&w);
    world_init(&base);
    CHECK(train(&w, opt, &use, 1, 200, 50, &rec, err, sizeof err) == 0, "train: %s", err);
    CHECK(train(&base, opt, NULL, 0, 200, 0, NULL, err, sizeof err) == 0, "train: %s", err);
    double with = max_dir_dot(&w.sae, unit), without = max_dir_dot(&base.sae, unit);
    double reported = metric(&rec.end, "max_abs_dir_dot"), at_eval = metric(&rec.eval[50], "max_abs_dir_dot");
    printf("  max |d . W_enc column| after 200 steps: %.3e with the plugin (reported %.3e; at the step-50 eval "
           "%.3e), %.3e without\n",
           with, reported, at_eval, without);
    CHECK(with < 1e-5, "encoder columns not orthogonal to d: %g", with);
    CHECK(without > 1e-2, "the baseline is already orthogonal (%g): the test shows nothing", without);
    CHECK(fabs(reported - with) < 1e-6, "reported max_abs_dir_dot %g, computed %g", reported, with);
    CHECK(rec.has_eval[50] && at_eval < 1e-5, "no or wrong max_abs_dir_dot at eval: %g", at_eval);
    world_free(&w);
    world_free(&base);
    saefw_opts_free(ro);
    saefw_plugin_unload(rr);
}

/* ---- the other architectures ---- */

static void world_init_arch(world *w, saefw_sae_arch arch) {
    char err[1024];
    saefw_synthetic_opts so = {D_IN, 48, 0.04, 1.0, 7};
    REQUIRE(saefw_source_synthetic(&so, &w->src, err, sizeof err) == 0, "%s", err);
    saefw_sae_arch_cfg cfg;
    saefw_sae_arch_defaults(&cfg, arch, D_IN);
    cfg.k = 8;
    REQUIRE(saefw_sae_alloc_arch(&w->sae, D_IN, D_SAE, 1e-3f, &cfg, err, sizeof err) == 0, "%s", err);
    saefw_rng rng;
    saefw_rng_seed(&rng, 49);
    saefw_sae_init_params(&w->sae, &rng);
    REQUIRE(saefw_buffer_init(&w->buf, w->src, BATCH * 16, BATCH, SAEFW_BUF_F32, 1, err, sizeof err) == 0, "%s", err);
}

/* Latent j of an architecture's SAE is as a resampler leaves it: a unit W_dec row, the W_enc column
 * along it (equal to it when tied), a zero encoder bias, and the architecture's other values at their
 * start. Returns the number of failed properties. */
static int latent_reset_ok(const saefw_sae *sae, int64_t j, int tied) {
    double ss = 0, dot = 0, es = 0;
    int equal = 1;
    for (int64_t i = 0; i < D_IN; i++) {
        const float d = sae->p[SAEFW_W_DEC][j * D_IN + i], e = sae->p[SAEFW_W_ENC][i * D_SAE + j];
        ss += (double)d * d;
        es += (double)e * e;
        dot += (double)d * e;
        equal &= e == d;
    }
    int bad = 0;
    bad += !(fabs(sqrt(ss) - 1.0) < 1e-5);
    bad += tied ? !equal : !(fabs(dot / sqrt(ss * es) - 1.0) < 1e-5); /* parallel */
    bad += sae->p[SAEFW_B_ENC][j] != 0.0f;
    if (sae->arch.arch == SAEFW_ARCH_JUMPRELU) bad += sae->p[SAEFW_LOG_THRESHOLD][j] != (float)log(sae->arch.threshold);
    if (sae->arch.arch == SAEFW_ARCH_GATED) bad += sae->p[SAEFW_R_MAG][j] != 0.0f || sae->p[SAEFW_B_MAG][j] != 0.0f;
    if (sae->since_fired) bad += sae->since_fired[j] != 0;
    return bad;
}

static void test_archs(saefw_opts *adam_opts) {
    static const saefw_sae_arch archs[] = {SAEFW_ARCH_TOPK, SAEFW_ARCH_BATCHTOPK, SAEFW_ARCH_JUMPRELU,
                                           SAEFW_ARCH_GATED};
    char err[1024];
    saefw_loaded_plugin probe = {0};
    probe.p = g_probe.adam->p;
    probe.p.name = "adam";
    probe.p.create = probe_create;
    probe.p.destroy = probe_destroy;
    probe.p.step = probe_step;
    probe.p.reset_state = probe_reset;
    g_probe.snap_step = -1;
    saefw_plugin_use opt = {.plugin = &probe, .opts = adam_opts};
    saefw_loaded_plugin killer = experiment("killer", killer_create, killer_after_step);
    saefw_loaded_plugin *rd = load("reinit_dead"), *ar = load("anthropic_resample");
    saefw_opts *ro = opts_new(rd), *ao = opts_new(ar);
    const int64_t every = 40, window = 15;
    set_num(ro, rd, "every", (double)every);
    set_num(ro, rd, "batches", 10);
    set_num(ao, ar, "every", (double)every);
    set_num(ao, ar, "window", (double)window);
    set_num(ao, ar, "samples", 4096);
    set_num(ao, ar, "chunk", 1000);
    for (size_t q = 0; q < sizeof archs / sizeof *archs; q++) {
        const char *name = saefw_sae_arch_name(archs[q]);
        /* reinit_dead: latents killed from the start, against a run without it. */
        world a, c;
        world_init_arch(&a, archs[q]);
        world_init_arch(&c, archs[q]);
        for (int64_t j = 0; j < D_SAE; j++)
            if (killed(j)) a.sae.p[SAEFW_B_ENC][j] = c.sae.p[SAEFW_B_ENC][j] = KILL_BIAS;
        static recorder with;
        saefw_plugin_use use = {.plugin = rd, .opts = ro};
        probe_clear();
        CHECK(train(&a, opt, &use, 1, every, 0, &with, err, sizeof err) == 0, "%s reinit_dead: %s", name, err);
        CHECK(train(&c, opt, NULL, 0, every, 0, NULL, err, sizeof err) == 0, "%s: %s", name, err);
        int64_t changed = 0, killed_changed = 0, bad = 0, stale = 0;
        for (int64_t j = 0; j < D_SAE; j++) {
            if (feature_same(&a.sae, &c.sae, j)) {
                if (a.sae.since_fired) stale += a.sae.since_fired[j] != c.sae.since_fired[j];
                continue;
            }
            changed++;
            killed_changed += killed(j);
            bad += latent_reset_ok(&a.sae, j, 1) != 0;
        }
        const double count = metric(&with.log[every - 1], "reinit_count");
        printf("  %s reinit_dead: %lld latents re-initialised (%lld of the 16 killed, reinit_count %.0f), %lld not "
               "as the %s init makes them\n",
               name, (long long)changed, (long long)killed_changed, count, (long long)bad, name);
        CHECK(killed_changed == 16 && changed == (int64_t)count, "%s reinit_dead: %lld changed, %lld killed, count %g",
              name, (long long)changed, (long long)killed_changed, count);
        CHECK(bad == 0 && stale == 0, "%s reinit_dead: %lld latents wrong, %lld untouched counters changed", name,
              (long long)bad, (long long)stale);
        CHECK(g_probe.n_resets == 0, "%s reinit_dead reset optimizer state", name);
        world_free(&a);
        world_free(&c);

        /* anthropic_resample: latents killed after step every - window - 1. */
        world w;
        world_init_arch(&w, archs[q]);
        g_kill_step = every - window - 1;
        saefw_plugin_use uses[2] = {{.plugin = &killer}, {.plugin = ar, .opts = ao}};
        probe_clear();
        CHECK(train(&w, opt, uses, 2, every, 0, NULL, err, sizeof err) == 0, "%s anthropic_resample: %s", name, err);
        /* One reset per per-latent tensor: W_enc, W_dec, the encoder bias, and log_threshold / r_mag, b_mag. */
        const int want = archs[q] == SAEFW_ARCH_JUMPRELU ? 4 : archs[q] == SAEFW_ARCH_GATED ? 5 : 3;
        int covered = 1;
        for (int k = 0; k < g_probe.n_resets; k++) {
            const int pm = g_probe.reset_param[k];
            covered &= g_probe.reset_axis[k] == (pm == SAEFW_W_ENC) && pm != SAEFW_B_DEC;
            for (int64_t j = 0; j < D_SAE; j++)
                covered &= !killed(j) || in_set(g_probe.reset_idx[k], g_probe.reset_n[k], j);
        }
        bad = 0;
        int64_t n_res = g_probe.n_resets ? g_probe.reset_n[0] : 0;
        for (int64_t k = 0; k < n_res; k++) bad += latent_reset_ok(&w.sae, g_probe.reset_idx[0][k], 0) != 0;
        printf("  %s anthropic_resample: %lld latents resampled, optimizer state reset in %d tensors (want %d), %lld "
               "latents wrong\n",
               name, (long long)n_res, g_probe.n_resets, want, (long long)bad);
        CHECK(g_probe.n_resets == want && covered && n_res >= 16, "%s anthropic_resample: %d resets, covered %d", name,
              g_probe.n_resets, covered);
        CHECK(bad == 0, "%s anthropic_resample: %lld latents not reset", name, (long long)bad);
        world_free(&w);
    }
    probe_clear();
    saefw_opts_free(ro);
    saefw_opts_free(ao);
    saefw_plugin_unload(rd);
    saefw_plugin_unload(ar);
}

/* ---- bad input: each fails at the start of the run, naming the plugin and the option ---- */

static void expect_fail(const char *plugin, const char *key, double num, const char *str, const char *want1,
                        const char *want2, saefw_loaded_plugin *adam, saefw_opts *adam_opts) {
    char err[1024] = "";
    saefw_loaded_plugin *lp = load(plugin);
    saefw_opts *o = opts_new(lp);
    int rc;
    if (str) rc = saefw_opts_set_string(o, lp, key, str, err, sizeof err);
    else rc = saefw_opts_set_number(o, lp, key, num, err, sizeof err);
    REQUIRE(rc == 0, "%s", err);
    world w;
    world_init(&w);
    saefw_plugin_use opt = {.plugin = adam, .opts = adam_opts}, use = {.plugin = lp, .opts = o};
    rc = train(&w, opt, &use, 1, 5, 0, NULL, err, sizeof err);
    printf("  %s %s: %s\n", plugin, key, err);
    CHECK(rc != 0, "%s with bad %s was accepted", plugin, key);
    char pname[128];
    snprintf(pname, sizeof pname, "plugin %s:", plugin);
    CHECK(strstr(err, pname) && strstr(err, want1) && (!want2 || strstr(err, want2)),
          "error '%s' lacks '%s', '%s' or '%s'", err, pname, want1, want2 ? want2 : "");
    world_free(&w);
    saefw_opts_free(o);
    saefw_plugin_unload(lp);
}

static void test_bad_input(saefw_loaded_plugin *adam, saefw_opts *adam_opts, const char *tmp) {
    printf("bad input:\n");
    char shortp[1200], zerop[1200];
    float v[D_IN];
    for (int i = 0; i < D_IN; i++) v[i] = 1.0f;
    snprintf(shortp, sizeof shortp, "%s/short.npy", tmp);
    write_vec(shortp, v, 16);
    for (int i = 0; i < D_IN; i++) v[i] = 0.0f;
    snprintf(zerop, sizeof zerop, "%s/zero.npy", tmp);
    write_vec(zerop, v, D_IN);

    expect_fail("remove_rare_dir", "direction", 0, shortp, "direction has 16 entries, expected d_in = 32",
                "option 'direction'", adam, adam_opts);
    expect_fail("remove_rare_dir", "direction", 0, zerop, "zero norm", "option 'direction'", adam, adam_opts);
    expect_fail("remove_rare_dir", "direction", 0, "/nonexistent/dir.npy", "/nonexistent/dir.npy", "option 'direction'",
                adam, adam_opts);
    expect_fail("reinit_dead", "every", 0, NULL, "option 'every'", ">= 1", adam, adam_opts);
    expect_fail("reinit_dead", "threshold", -1e-6, NULL, "option 'threshold'", ">= 0", adam, adam_opts);
    expect_fail("reinit_dead", "batches", 0, NULL, "option 'batches'", ">= 1", adam, adam_opts);
    expect_fail("anthropic_resample", "every", 0, NULL, "option 'every'", ">= 1", adam, adam_opts);
    expect_fail("anthropic_resample", "samples", 0, NULL, "option 'samples'", ">= 1", adam, adam_opts);
    expect_fail("anthropic_resample", "encoder_scale", -0.2, NULL, "option 'encoder_scale'", "> 0", adam, adam_opts);

    /* A required option left out is caught before the run. */
    char err[1024] = "";
    saefw_loaded_plugin *rr = load("remove_rare_dir");
    saefw_opts *o = opts_new(rr);
    CHECK(saefw_opts_check(o, rr, err, sizeof err) != 0 && strstr(err, "plugin remove_rare_dir") &&
              strstr(err, "'direction'"),
          "missing direction: '%s'", err);
    printf("  remove_rare_dir without direction: %s\n", err);
    saefw_opts_free(o);
    saefw_plugin_unload(rr);
}

/* batch_feature_counts agrees with the activations on either path. */
static void test_feature_counts(saefw_loaded_plugin *adam, saefw_opts *adam_opts) {
    printf("batch_feature_counts\n");
    saefw_loaded_plugin counter = experiment("counter", counter_create, counter_after_step);
    saefw_plugin_use opt = {.plugin = adam, .opts = adam_opts}, uses[1] = {{.plugin = &counter}};
    static const saefw_sae_path paths[2] = {SAEFW_SAE_DENSE, SAEFW_SAE_SPARSE};
    for (int k = 0; k < 2; k++) {
        world w;
        world_init(&w);
        char err[1024];
        g_count_steps = g_count_mismatches = 0;
        saefw_sae_set_path(paths[k]);
        int rc = train(&w, opt, uses, 1, 20, 0, NULL, err, sizeof err);
        saefw_sae_set_path(SAEFW_SAE_AUTO);
        CHECK(rc == 0, "%s", err);
        CHECK(g_count_steps == 20 && g_count_mismatches == 0, "%s path: %lld steps, %lld counts differ",
              k ? "sparse" : "dense", (long long)g_count_steps, (long long)g_count_mismatches);
        printf("  %s path: %lld steps, %lld feature counts differing from the activations'\n", k ? "sparse" : "dense",
               (long long)g_count_steps, (long long)g_count_mismatches);
        world_free(&w);
    }
}

int main(void) {
    const char *tmp = t_tmpdir("plugins_resample");
    g_probe.adam = load("adam");
    saefw_opts *adam_opts = opts_new(g_probe.adam);
    set_num(adam_opts, g_probe.adam, "lr", LR);
    set_num(adam_opts, g_probe.adam, "beta1", BETA1);
    set_num(adam_opts, g_probe.adam, "beta2", BETA2);
    set_num(adam_opts, g_probe.adam, "eps", EPS);

    test_reinit_dead(g_probe.adam, adam_opts, 0);
    test_reinit_dead(g_probe.adam, adam_opts, 1);
    test_anthropic(adam_opts);
    printf("other architectures:\n");
    test_archs(adam_opts);
    test_remove_rare_dir(g_probe.adam, adam_opts, tmp);
    test_bad_input(g_probe.adam, adam_opts, tmp);
    test_feature_counts(g_probe.adam, adam_opts);

    saefw_opts_free(adam_opts);
    saefw_plugin_unload(g_probe.adam);
    return t_finish("test_plugins_resample");
}
