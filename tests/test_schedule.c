/* The trainer side of the 2024 recipe: the schedule plugin driven by a real trainer for the 20 steps of
 * tests/fixtures/arch/relu_april.safetensors (lr warm-up 3, decay 4, L1 warm-up 5; the reference's
 * tr_lr and tr_l1_coeff, float64), with gradient clipping and no unit-norm decoder; a run resumed across
 * the schedule ends with the same bits as an uninterrupted one, and a resume with another clip_grad_norm
 * or unit_norm_decoder is refused naming the key; bad options are one-line errors before
 * any step. A probe plugin reads what the engine holds in after_backward: the schedule's lr is the one
 * the optimizer applies, and the L1 coefficient set before step t scales step t's L1 loss. */
#include <unistd.h>

#include "checkpoint.h"
#include "plugin_loader.h"
#include "sae.h"
#include "testutil.h"
#include "train.h"

#define MAX_STEPS 20

/* ---- the probe: an in-process plugin that records what the engine holds after the backward pass ---- */

typedef struct {
    int64_t fail_at; /* fail in this step's after_backward (-1: never), to leave a run to resume */
} probe_state;

static int probe_after_backward(void *self, saefw_run *run, char *err, size_t errlen) {
    const probe_state *ps = self;
    const saefw_host *h = saefw_host_table();
    if (h->step(run) == ps->fail_at) return saefw_fail(err, errlen, "stopping at step %lld", (long long)ps->fail_at);
    double l1 = 0;
    h->loss_coeff(run, "l1", &l1);
    h->metric(run, "probe_lr", h->learning_rate(run));
    h->metric(run, "probe_l1", l1);
    /* The encoder has not moved since the forward pass: these are the step's activations. */
    int64_t rows = 0;
    const float *acts = h->batch_acts(run, &rows);
    if (!acts) return saefw_fail(err, errlen, "no batch activations");
    double s = 0;
    for (int64_t i = 0; i < rows * h->d_sae(run); i++) s += fabs(acts[i]);
    h->metric(run, "probe_acts_sum", s);
    return 0;
}

static saefw_loaded_plugin g_probe = {
    .p = {.abi_version = SAEFW_ABI_VERSION,
          .struct_size = sizeof(saefw_plugin),
          .name = "probe",
          .kind = SAEFW_KIND_EXPERIMENT,
          .stateless = 1,
          .after_backward = probe_after_backward},
};

/* ---- runs ---- */

static saefw_metrics g_log[MAX_STEPS];
static int g_logged[MAX_STEPS];

static int on_event(void *ud, saefw_event event, const saefw_metrics *m, char *err, size_t errlen) {
    if (event == SAEFW_EVENT_LOG && m->step >= 0 && m->step < MAX_STEPS) g_log[m->step] = *m, g_logged[m->step] = 1;
    return 0;
}

static double metric(const saefw_metrics *m, const char *name) {
    for (int i = 0; i < m->n_extra; i++)
        if (!strcmp(m->extra_name[i], name)) return m->extra_value[i];
    return NAN;
}

/* The fixture's batches [steps, rows, d_in], one per step. */
typedef struct {
    const float *x;
    int64_t rows, d, next;
} replay;

static int next_batch(void *ud, float *out, int64_t batch_size, char *err, size_t errlen) {
    replay *r = ud;
    memcpy(out, r->x + r->next * r->rows * r->d, sizeof(float) * (size_t)(r->rows * r->d));
    r->next++;
    return 0;
}

static saefw_loaded_plugin *load(const char *name) {
    saefw_loaded_plugin *lp = NULL;
    char err[1024];
    REQUIRE(saefw_plugin_load(name, saefw_host_table(), &lp, err, sizeof err) == 0, "%s", err);
    return lp;
}

static saefw_opts *schedule_opts(saefw_loaded_plugin *sched, double lr_warmup, double lr_decay, double l1_warmup,
                                 const char *coeff) {
    saefw_opts *o = NULL;
    char err[1024];
    REQUIRE(saefw_opts_new(sched, &o, err, sizeof err) == 0 &&
                saefw_opts_set_number(o, sched, "lr_warmup_steps", lr_warmup, err, sizeof err) == 0 &&
                saefw_opts_set_number(o, sched, "lr_decay_steps", lr_decay, err, sizeof err) == 0 &&
                saefw_opts_set_number(o, sched, "coeff_warmup_steps", l1_warmup, err, sizeof err) == 0 &&
                (!coeff || saefw_opts_set_string(o, sched, "coeff", coeff, err, sizeof err) == 0),
            "%s", err);
    return o;
}

static saefw_opts *adam_opts(saefw_loaded_plugin *adam, double lr) {
    saefw_opts *o = NULL;
    char err[1024];
    REQUIRE(saefw_opts_new(adam, &o, err, sizeof err) == 0 &&
                saefw_opts_set_number(o, adam, "lr", lr, err, sizeof err) == 0 &&
                saefw_opts_set_number(o, adam, "beta2", 0.999, err, sizeof err) == 0,
            "%s", err);
    return o;
}

/* The fixture's 20 steps through saefw_train, checked step by step against tr_lr and tr_l1_coeff. */
static void fixture_case(saefw_loaded_plugin *adam, saefw_loaded_plugin *sched) {
    saefw_tensorfile *tf = NULL;
    char err[1024];
    REQUIRE(saefw_tf_open("fixtures/arch/relu_april.safetensors", &tf, err, sizeof err) == 0, "%s", err);
    const int64_t T = (int64_t)t_meta(tf, "steps");
    REQUIRE(T == MAX_STEPS, "the fixture has %lld steps", (long long)T);
    const saefw_tensor_info *bi = saefw_tf_find(tf, "tr_batches");
    REQUIRE(bi && bi->ndim == 3 && bi->shape[0] == T, "tr_batches is not [steps, rows, d_in]");
    const int64_t rows = bi->shape[1], d_in = bi->shape[2];
    const saefw_tensor_info *ei = saefw_tf_find(tf, "tr_init_W_enc");
    REQUIRE(ei && ei->ndim == 2 && ei->shape[0] == d_in, "tr_init_W_enc");
    float *x = t_tensor(tf, "tr_batches", NULL);
    const saefw_tensor_info *lri = saefw_tf_find(tf, "tr_lr"), *l1i = saefw_tf_find(tf, "tr_l1_coeff");
    REQUIRE(lri && l1i && lri->dtype == SAEFW_DT_F64 && l1i->dtype == SAEFW_DT_F64, "tr_lr / tr_l1_coeff not float64");
    const double *lr64 = (const double *)lri->data, *l164 = (const double *)l1i->data;

    saefw_sae sae;
    REQUIRE(saefw_sae_alloc(&sae, d_in, ei->shape[1], (float)t_meta(tf, "l1_coeff"), err, sizeof err) == 0, "%s", err);
    for (int i = 0; i < SAEFW_N_PARAMS; i++) {
        char name[64];
        snprintf(name, sizeof name, "tr_init_%s", saefw_param_name(i));
        float *v = t_tensor(tf, name, NULL);
        memcpy(sae.p[i], v, sizeof(float) * (size_t)sae.numel[i]);
        free(v);
    }
    saefw_synthetic_opts syn = {d_in, 24, 0.1, 1.0, 3};
    saefw_source *eval_src = NULL;
    REQUIRE(saefw_source_synthetic(&syn, &eval_src, err, sizeof err) == 0, "%s", err);
    replay rp = {x, rows, d_in, 0};
    saefw_opts *ao = adam_opts(adam, t_meta(tf, "lr"));
    saefw_opts *so =
        schedule_opts(sched, t_meta(tf, "lr_warmup"), t_meta(tf, "lr_decay"), t_meta(tf, "l1_warmup"), NULL);
    probe_state ps = {-1};
    saefw_plugin_use uses[2] = {{.plugin = sched, .opts = so}, {.plugin = &g_probe, .self = &ps}};
    saefw_train_opts o = {0};
    o.sae = &sae;
    o.next_batch = next_batch;
    o.next_batch_ud = &rp;
    o.batch_size = rows;
    o.eval_source = eval_src;
    o.steps = T;
    o.optimizer.plugin = adam;
    o.optimizer.opts = ao;
    o.plugins = uses;
    o.n_plugins = 2;
    o.log_every = 1;
    o.seed = 1;
    o.on_event = on_event;
    o.clip_grad_norm = t_meta(tf, "max_grad_norm");
    o.free_decoder = 1;
    memset(g_logged, 0, sizeof g_logged);
    saefw_train_result res;
    CHECK(saefw_train(&o, &res, err, sizeof err) == 0, "train: %s", err);

    printf("schedule over %lld steps (lr_warmup 3, lr_decay 4, l1_warmup 5):\n", (long long)T);
    double worst_lr = 0, worst_l1 = 0, worst_use = 0, worst_l1loss = 0;
    int clipped = 0;
    for (int64_t t = 0; t < T; t++) {
        REQUIRE(g_logged[t], "no log event for step %lld", (long long)t);
        const saefw_metrics *m = &g_log[t];
        const double lr = metric(m, "lr"), l1 = metric(m, "l1_coeff");
        /* lr: the same double operations as the reference, so exact; l1: kept as float32 by the SAE. */
        worst_lr = t_max(worst_lr, fabs(lr - lr64[t]) / lr64[t]);
        worst_l1 = t_max(worst_l1, fabs(l1 - l164[t]) / l164[t]);
        worst_use = t_max(worst_use, fabs(metric(m, "probe_lr") - lr) + fabs(metric(m, "probe_l1") - l1));
        /* The coefficient set before step t scales step t's L1 loss: l1_loss = coeff(t) * sum |acts|. */
        worst_l1loss = t_max(worst_l1loss, fabs(m->l1 - l1 * metric(m, "probe_acts_sum")) / m->l1);
        const double gn = metric(m, "grad_norm"), cc = metric(m, "clip_coef");
        CHECK(gn > 0 && cc > 0 && cc <= 1, "step %lld: grad_norm %g clip_coef %g", (long long)t, gn, cc);
        clipped += cc < 1;
        printf("  step %2lld: lr %.6g (want %.6g)  l1_coeff %.6g (want %.6g)  grad_norm %.5g clip_coef %.5g\n",
               (long long)t, lr, lr64[t], l1, l164[t], gn, cc);
    }
    printf("  max rel diff: lr %.3e (tol 0), l1_coeff %.3e (tol 1e-7); engine vs schedule %.3e (tol 0); L1 loss vs "
           "coeff(t) * sum|acts| %.3e (tol 1e-5); %d of %lld steps clipped\n",
           worst_lr, worst_l1, worst_use, worst_l1loss, clipped, (long long)T);
    CHECK(worst_lr == 0, "lr differs from tr_lr by %g (relative)", worst_lr);
    CHECK(worst_l1 <= 1e-7, "l1_coeff differs from tr_l1_coeff by %g (relative)", worst_l1);
    CHECK(worst_use == 0, "the engine's lr / l1 in after_backward differ from the schedule's by %g", worst_use);
    CHECK(worst_l1loss <= 1e-5, "the L1 loss is not coeff(t) * sum|acts| (rel %g)", worst_l1loss);
    CHECK(clipped > 0, "no step was clipped at max_norm %g", o.clip_grad_norm);
    /* No unit-norm decoder: the rows move off norm 1. */
    double worst_row = 0;
    for (int64_t j = 0; j < sae.d_sae; j++) {
        double s = 0;
        for (int64_t k = 0; k < d_in; k++)
            s += (double)sae.p[SAEFW_W_DEC][j * d_in + k] * sae.p[SAEFW_W_DEC][j * d_in + k];
        worst_row = t_max(worst_row, fabs(sqrt(s) - 1.0));
    }
    printf("  unit_norm_decoder off: max | ||W_dec row|| - 1 | = %.3e\n", worst_row);
    CHECK(worst_row > 1e-3, "W_dec rows stayed at unit norm (%g) with free_decoder", worst_row);
    free(x);
    saefw_opts_free(ao);
    saefw_opts_free(so);
    saefw_source_free(eval_src);
    saefw_sae_free(&sae);
    saefw_tf_close(tf);
}

/* The trainer options of resume_run (the 2024 recipe's: clipping, no unit-norm decoder) and the keys a
 * resume may change; resume_case varies them to see a resume with other values refused. */
static double g_clip = 0.05;
static int g_free_decoder = 1;
static const char *const *g_allow;
static int g_n_allow;

/* One run of MAX_STEPS steps on a synthetic buffer with the schedule, clipping and the probe; returns
 * saefw_train's status and leaves the final parameters in *sae (allocated here). */
static int resume_run(saefw_loaded_plugin *adam, saefw_loaded_plugin *sched, const char *dir, int resume,
                      int64_t fail_at, saefw_sae *sae, int64_t *resumed_at, char *err, size_t errlen) {
    saefw_synthetic_opts syn = {16, 24, 0.1, 1.0, 3};
    saefw_source *src = NULL;
    saefw_buffer buf;
    REQUIRE(saefw_source_synthetic(&syn, &src, err, errlen) == 0, "%s", err);
    REQUIRE(saefw_buffer_init(&buf, src, 64 * 8, 64, SAEFW_BUF_F32, 1, err, errlen) == 0, "%s", err);
    REQUIRE(saefw_sae_alloc(sae, 16, 64, 0.05f, err, errlen) == 0, "%s", err);
    saefw_rng rng;
    saefw_rng_seed(&rng, 49);
    saefw_sae_init_params(sae, &rng);
    saefw_opts *ao = adam_opts(adam, 3e-3), *so = schedule_opts(sched, 4, 8, 6, "l1");
    probe_state ps = {fail_at};
    saefw_plugin_use uses[2] = {{.plugin = sched, .opts = so}, {.plugin = &g_probe, .self = &ps}};
    saefw_train_opts o = {0};
    o.sae = sae;
    o.buffer = &buf;
    o.steps = MAX_STEPS;
    o.optimizer.plugin = adam;
    o.optimizer.opts = ao;
    o.plugins = uses;
    o.n_plugins = 2;
    o.log_every = 1;
    o.checkpoint_every = 7;
    o.run_dir = dir;
    o.resume = resume;
    o.seed = 5;
    o.progress = 0;
    o.clip_grad_norm = g_clip;
    o.free_decoder = g_free_decoder;
    o.allow_change = g_allow;
    o.n_allow_change = g_n_allow;
    saefw_train_result res;
    int rc = saefw_train(&o, &res, err, errlen);
    *resumed_at = res.resumed_at;
    saefw_opts_free(ao);
    saefw_opts_free(so);
    saefw_buffer_free(&buf);
    saefw_source_free(src);
    return rc;
}

static void resume_case(saefw_loaded_plugin *adam, saefw_loaded_plugin *sched) {
    char err[1024], a_dir[1200], b_dir[1200];
    const char *tmp = t_tmpdir("test_schedule");
    T_FMT(a_dir, "%s/straight", tmp);
    T_FMT(b_dir, "%s/resumed", tmp);
    saefw_sae a, b, b2;
    int64_t at = -1;
    CHECK(resume_run(adam, sched, a_dir, 0, -1, &a, &at, err, sizeof err) == 0, "straight run: %s", err);
    /* Fails in step 12, after the checkpoint at step 7 (mid warm-up) and 14 is never reached. */
    int rc = resume_run(adam, sched, b_dir, 0, 12, &b, &at, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "plugin probe: stopping at step 12"), "the interrupted run: rc %d, %s", rc, err);
    /* The trainer options are recorded like the others: a resume with other values is refused, naming the
     * key and both values, and leaves the run as it was. */
    saefw_sae r;
    g_clip = 0.1;
    rc = resume_run(adam, sched, b_dir, 1, -1, &r, &at, err, sizeof err);
    printf("resume with clip_grad_norm 0.1: %s\n", err);
    CHECK(rc != 0 && strstr(err, "clip_grad_norm 0.05 -> 0.1") && strstr(err, "--allow-change") && !strchr(err, '\n'),
          "a resume with another clip_grad_norm: rc %d, %s", rc, err);
    saefw_sae_free(&r);
    g_clip = 0;
    rc = resume_run(adam, sched, b_dir, 1, -1, &r, &at, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "clip_grad_norm 0.05 -> (not set: the default)"),
          "a resume without clipping: rc %d, %s", rc, err);
    saefw_sae_free(&r);
    g_clip = 0.05;
    g_free_decoder = 0;
    rc = resume_run(adam, sched, b_dir, 1, -1, &r, &at, err, sizeof err);
    printf("resume with unit_norm_decoder: %s\n", err);
    CHECK(rc != 0 && strstr(err, "unit_norm_decoder false -> (not set: the default)"),
          "a resume with the unit-norm decoder: rc %d, %s", rc, err);
    saefw_sae_free(&r);
    g_free_decoder = 1;
    CHECK(resume_run(adam, sched, b_dir, 1, -1, &b2, &at, err, sizeof err) == 0, "resumed run: %s", err);
    CHECK(at == 7, "the run resumed at step %lld, not at the checkpoint of step 7", (long long)at);
    int same = memcmp(a.params, b2.params, sizeof(float) * a.n_total) == 0;
    double maxd = 0;
    for (size_t i = 0; i < a.n_total; i++) maxd = t_max(maxd, fabs((double)a.params[i] - b2.params[i]));
    printf("resume across the schedule (checkpoint at step 7, stopped in step 12, resumed at %lld): final weights %s "
           "(max |diff| %.3e), l1 coefficient %g vs %g\n",
           (long long)at, same ? "identical" : "DIFFER", maxd, a.l1_coeff, b2.l1_coeff);
    CHECK(same && a.l1_coeff == b2.l1_coeff, "the resumed run differs from the uninterrupted one");
    saefw_sae_free(&a);
    saefw_sae_free(&b);
    saefw_sae_free(&b2);
}

/* A run that must be refused before its first step, with a one-line message containing `want`. */
static void refused(saefw_loaded_plugin *adam, saefw_loaded_plugin *sched, saefw_opts *so, double clip,
                    const char *want) {
    saefw_synthetic_opts syn = {16, 24, 0.1, 1.0, 3};
    saefw_source *src = NULL;
    saefw_buffer buf;
    char err[1024] = "";
    REQUIRE(saefw_source_synthetic(&syn, &src, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_buffer_init(&buf, src, 64 * 4, 64, SAEFW_BUF_F32, 1, err, sizeof err) == 0, "%s", err);
    saefw_sae sae;
    REQUIRE(saefw_sae_alloc(&sae, 16, 64, 0.05f, err, sizeof err) == 0, "%s", err);
    saefw_opts *ao = adam_opts(adam, 1e-3);
    saefw_plugin_use use = {.plugin = sched, .opts = so};
    saefw_train_opts o = {0};
    o.sae = &sae;
    o.buffer = &buf;
    o.steps = 5;
    o.optimizer.plugin = adam;
    o.optimizer.opts = ao;
    o.plugins = &use;
    o.n_plugins = 1;
    o.progress = 0;
    o.clip_grad_norm = clip;
    saefw_train_result res;
    int rc = saefw_train(&o, &res, err, sizeof err);
    printf("  refused: %s\n", err);
    CHECK(rc != 0 && res.steps_done == 0 && strstr(err, want) && !strchr(err, '\n'),
          "expected a one-line error containing \"%s\" before any step; rc %d, %lld steps, got: %s", want, rc,
          (long long)res.steps_done, err);
    saefw_opts_free(ao);
    saefw_sae_free(&sae);
    saefw_buffer_free(&buf);
    saefw_source_free(src);
}

static void bad_options(saefw_loaded_plugin *adam, saefw_loaded_plugin *sched) {
    printf("bad options:\n");
    saefw_opts *neg = schedule_opts(sched, -1, 0, 0, NULL), *neg_c = schedule_opts(sched, 0, 0, -3, NULL);
    saefw_opts *noname = schedule_opts(sched, 0, 0, 5, "l0"), *ok = schedule_opts(sched, 0, 0, 0, NULL);
    refused(adam, sched, neg, 0, "plugin schedule: option 'lr_warmup_steps' must be >= 0");
    refused(adam, sched, neg_c, 0, "plugin schedule: option 'coeff_warmup_steps' must be >= 0");
    refused(adam, sched, noname, 0, "plugin schedule: option 'coeff': this SAE has no loss coefficient 'l0'");
    refused(adam, sched, ok, -1, "train: clip_grad_norm must be a finite number > 0");
    refused(adam, sched, ok, NAN, "train: clip_grad_norm must be a finite number > 0");
    refused(adam, sched, ok, INFINITY, "train: clip_grad_norm must be a finite number > 0");
    saefw_opts_free(neg);
    saefw_opts_free(neg_c);
    saefw_opts_free(noname);
    saefw_opts_free(ok);

    /* From Lua, 0 is refused too (0 means "no clipping" only in C's zero-initialised options). */
    const char *bin = getenv("SAEFW_BIN");
    REQUIRE(bin && *bin, "SAEFW_BIN is not set (run under ctest)");
    char script[1200], out[8192];
    T_FMT(script, "%s/clip0.lua", t_tmpdir("test_schedule_lua"));
    FILE *f = fopen(script, "w");
    REQUIRE(f, "cannot write %s", script);
    fputs("local saefw = require 'saefw'\n"
          "local sae = saefw.sae { d_in = 16, d_sae = 64, l1_coeff = 1e-3, seed = 1 }\n"
          "local source = saefw.synthetic { d_in = 16, n_features = 32, p_active = 0.05, seed = 1 }\n"
          "saefw.train { sae = sae, source = source, batch_size = 64, buffer_size = 64 * 4, steps = 5,\n"
          "  optimizer = saefw.plugin('adam', { lr = 1e-3 }), run_dir = false, clip_grad_norm = 0 }\n",
          f);
    REQUIRE(fclose(f) == 0, "cannot write %s", script);
    int st = t_run(out, sizeof out, "'%s' run '%s'", bin, script);
    printf("  lua: exit %d: %s", st, out);
    CHECK(st != 0 && strstr(out, "clip_grad_norm must be a finite number > 0, got 0"),
          "saefw.train{clip_grad_norm = 0} was not refused: exit %d, %s", st, out);
}

/* A schedule written in Lua: before_step sees the step about to run and total_steps, and the L1
 * coefficient it sets there is the one the step's after_backward sees. */
static void lua_before_step(void) {
    const char *bin = getenv("SAEFW_BIN");
    REQUIRE(bin && *bin, "SAEFW_BIN is not set (run under ctest)");
    char script[1200], out[8192];
    T_FMT(script, "%s/before_step.lua", t_tmpdir("test_schedule_lua2"));
    FILE *f = fopen(script, "w");
    REQUIRE(f, "cannot write %s", script);
    fputs("local saefw = require 'saefw'\n"
          "local sae = saefw.sae { d_in = 16, d_sae = 64, l1_coeff = 1e-3, seed = 1 }\n"
          "local source = saefw.synthetic { d_in = 16, n_features = 32, p_active = 0.05, seed = 1 }\n"
          "local seen, bad = 0, nil\n"
          "local warm = saefw.lua_plugin { name = 'warm', stateless = true,\n"
          "  before_step = function(ctx) ctx:set_loss_coeff('l1', 1e-3 * (ctx.step + 1) / ctx.total_steps) end,\n"
          "  after_backward = function(ctx)\n"
          "    seen = seen + 1\n"
          "    local want = 1e-3 * (ctx.step + 1) / ctx.total_steps\n"
          "    if ctx.total_steps ~= 6 or math.abs(ctx.l1_coeff - want) > 1e-9 then bad = ctx.step end\n"
          "  end }\n"
          "saefw.train { sae = sae, source = source, batch_size = 64, buffer_size = 64 * 4, steps = 6,\n"
          "  optimizer = saefw.plugin('adam', { lr = 1e-3 }), plugins = { warm }, run_dir = false,\n"
          "  clip_grad_norm = 0.5, unit_norm_decoder = false, progress = false }\n"
          "print(string.format('lua before_step: %d steps seen, bad step %s', seen, tostring(bad)))\n",
          f);
    REQUIRE(fclose(f) == 0, "cannot write %s", script);
    int st = t_run(out, sizeof out, "'%s' run '%s'", bin, script);
    printf("%s", out);
    CHECK(st == 0 && strstr(out, "lua before_step: 6 steps seen, bad step nil"),
          "a Lua before_step schedule failed: exit %d, %s", st, out);
}

int main(void) {
    saefw_loaded_plugin *adam = load("adam"), *sched = load("schedule");
    fixture_case(adam, sched);
    resume_case(adam, sched);
    bad_options(adam, sched);
    lua_before_step();
    saefw_plugin_unload(adam);
    saefw_plugin_unload(sched);
    return t_finish("test_schedule");
}
