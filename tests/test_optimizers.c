/* The adam plugin against torch.optim.Adam on the same gradient sequence (fixture from
 * tests/reference/make_sae_fixtures.py), and the sgd plugin against SGD's formula, both loaded
 * through the real loader and driven through a stand-in host table, as a plugin sees the engine.
 * The checks are tested too: an Adam that writes NaN (tests/plugins/nan_adam.c) and one that ignores
 * the engine's learning rate must both fail the comparison with torch. */
#include "plugin_loader.h"
#include "testutil.h"
#include "train.h"

/* A stand-in run: one tensor the optimizer updates, at the engine's learning rate lr. */
struct saefw_run {
    float *data, *grad;
    int64_t rows, cols;
    double lr;
};

static int fake_count(saefw_run *run) { return 1; }
static int fake_get(saefw_run *run, int i, saefw_param *out) {
    if (i != 0 || out->struct_size < sizeof *out) return -1;
    memset(out, 0, sizeof *out);
    out->struct_size = sizeof *out;
    out->name = "p";
    out->data = run->data;
    out->grad = run->grad;
    out->ndim = 2;
    out->shape[0] = run->rows;
    out->shape[1] = run->cols;
    out->numel = run->rows * run->cols;
    return 0;
}
static double fake_lr(saefw_run *run) { return run->lr; }

static saefw_host make_host(void) {
    saefw_host h = *saefw_host_table(); /* option access comes from the engine */
    h.param_count = fake_count;
    h.param_get = fake_get;
    h.learning_rate = fake_lr;
    return h;
}

static void *make(saefw_loaded_plugin *lp, const saefw_host *h, saefw_run *run, saefw_opts *o) {
    void *self = NULL;
    char err[256] = "";
    REQUIRE(lp->p.create(h, run, o, &self, err, sizeof err) == 0, "create: %s", err);
    return self;
}

/* Run the optimizer at `path` (a name or a file) on the fixture's gradients with the engine's learning
 * rate set to lr_scale times the fixture's; whether it matches torch.optim.Adam within 1e-6 (relative). */
static int adam_matches_torch(const char *what, const char *path, const saefw_host *h, double lr_scale) {
    saefw_tensorfile *tf = NULL;
    char err[512];
    REQUIRE(saefw_tf_open("fixtures/sae/adam.safetensors", &tf, err, sizeof err) == 0, "%s", err);
    const saefw_tensor_info *gi = saefw_tf_find(tf, "grads");
    REQUIRE(gi && gi->ndim == 3, "grads");
    int64_t T = gi->shape[0], R = gi->shape[1], C = gi->shape[2], n = R * C;
    float *p = t_tensor(tf, "p0", NULL), *grads = t_tensor(tf, "grads", NULL), *want = t_tensor(tf, "params", NULL);
    saefw_run run = {p, NULL, R, C, t_meta(tf, "lr") * lr_scale};

    saefw_loaded_plugin *lp = NULL;
    REQUIRE(saefw_plugin_load(path, h, &lp, err, sizeof err) == 0, "%s", err);
    saefw_opts *o = NULL;
    REQUIRE(saefw_opts_new(lp, &o, err, sizeof err) == 0, "%s", err);
    static const char *keys[3] = {"beta1", "beta2", "eps"};
    for (int k = 0; k < 3; k++)
        REQUIRE(saefw_opts_set_number(o, lp, keys[k], t_meta(tf, keys[k]), err, sizeof err) == 0, "%s", err);
    void *self = make(lp, h, &run, o);
    double worst = 0;
    int steps_ok = 1;
    for (int64_t t = 0; t < T; t++) {
        run.grad = grads + t * n;
        steps_ok &= lp->p.step(self, &run, err, sizeof err) == 0;
        for (int64_t k = 0; k < n; k++) {
            double ref = want[t * n + k];
            worst = t_max(worst, fabs(p[k] - ref) / fmax(fabs(ref), 1e-6));
        }
    }
    const int ok = steps_ok && worst <= 1e-6;
    printf("  %s vs torch.optim.Adam: %lld steps, max relative difference %.3e (tol 1e-6): %s\n", what, (long long)T,
           worst, ok ? "matches" : "differs");
    lp->p.destroy(self);
    saefw_opts_free(o);
    saefw_plugin_unload(lp);
    free(p);
    free(grads);
    free(want);
    saefw_tf_close(tf);
    return ok;
}

/* reset_state zeroes exactly the chosen slices: with a zero gradient, reset entries stay put. */
static void test_adam_reset(const saefw_host *h) {
    enum { R = 4, C = 5 };
    float p[R * C], g[R * C], before[R * C], zero[R * C] = {0};
    saefw_rng rng;
    saefw_rng_seed(&rng, 5);
    for (int k = 0; k < R * C; k++) p[k] = (float)saefw_rng_normal(&rng);
    saefw_run run = {p, g, R, C, 1e-2};
    char err[512];
    saefw_loaded_plugin *lp = NULL;
    REQUIRE(saefw_plugin_load("adam", h, &lp, err, sizeof err) == 0, "%s", err);
    saefw_opts *o = NULL;
    REQUIRE(saefw_opts_new(lp, &o, err, sizeof err) == 0, "%s", err);
    void *self = make(lp, h, &run, o);
    /* Three cases: rows 1 and 3; column 2; the whole tensor (idx NULL). */
    const int64_t rows[2] = {1, 3}, col = 2;
    for (int c = 0; c < 3; c++) {
        for (int t = 0; t < 3; t++) {
            for (int k = 0; k < R * C; k++) g[k] = (float)saefw_rng_normal(&rng);
            run.grad = g;
            CHECK(lp->p.step(self, &run, err, sizeof err) == 0, "step: %s", err);
        }
        memcpy(before, p, sizeof p);
        int rc = c == 0   ? lp->p.reset_state(self, &run, 0, 0, rows, 2, err, sizeof err)
                 : c == 1 ? lp->p.reset_state(self, &run, 0, 1, &col, 1, err, sizeof err)
                          : lp->p.reset_state(self, &run, 0, 0, NULL, 0, err, sizeof err);
        CHECK(rc == 0, "reset %d: %s", c, err);
        run.grad = zero;
        CHECK(lp->p.step(self, &run, err, sizeof err) == 0, "step: %s", err);
        int64_t wrong = 0;
        for (int r = 0; r < R; r++)
            for (int k = 0; k < C; k++) {
                int reset = c == 0 ? (r == 1 || r == 3) : c == 1 ? k == col : 1;
                wrong += (p[r * C + k] != before[r * C + k]) != !reset;
            }
        CHECK(wrong == 0, "reset case %d: %lld entries moved or stayed wrongly", c, (long long)wrong);
    }
    int64_t bad = 99;
    CHECK(lp->p.reset_state(self, &run, 0, 0, &bad, 1, err, sizeof err) != 0, "out-of-range row accepted");
    CHECK(lp->p.reset_state(self, &run, 0, 2, rows, 1, err, sizeof err) != 0, "axis 2 of a 2-D tensor accepted");
    lp->p.destroy(self);
    saefw_opts_free(o);
    saefw_plugin_unload(lp);
}

/* torch.optim.SGD with momentum m and Nesterov flag, in double: buf = g (first step), then
 * buf = m buf + g; update with g + m buf (Nesterov) or buf. */
static void test_sgd(const saefw_host *h, int nesterov) {
    enum { R = 3, C = 4, T = 12 };
    const double lr = 0.05, mom = 0.9;
    float p[R * C], g[R * C];
    double ref[R * C], buf[R * C];
    saefw_rng rng;
    saefw_rng_seed(&rng, 11);
    for (int k = 0; k < R * C; k++) ref[k] = p[k] = (float)saefw_rng_normal(&rng);
    saefw_run run = {p, g, R, C, lr};
    char err[256];
    saefw_loaded_plugin *lp = NULL;
    REQUIRE(saefw_plugin_load("sgd", h, &lp, err, sizeof err) == 0, "%s", err);
    saefw_opts *o = NULL;
    REQUIRE(saefw_opts_new(lp, &o, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_opts_set_number(o, lp, "momentum", mom, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_opts_set_bool(o, lp, "nesterov", nesterov, err, sizeof err) == 0, "%s", err);
    void *self = make(lp, h, &run, o);
    double worst = 0;
    for (int t = 0; t < T; t++) {
        for (int k = 0; k < R * C; k++) g[k] = (float)saefw_rng_normal(&rng);
        CHECK(lp->p.step(self, &run, err, sizeof err) == 0, "step: %s", err);
        for (int k = 0; k < R * C; k++) {
            buf[k] = t == 0 ? g[k] : mom * buf[k] + g[k];
            ref[k] -= lr * (nesterov ? g[k] + mom * buf[k] : buf[k]);
            worst = t_max(worst, fabs(p[k] - ref[k]) / fmax(fabs(ref[k]), 1e-3));
        }
    }
    printf("  sgd (momentum %.1f%s) vs formula: max relative difference %.3e (tol 1e-5)\n", mom,
           nesterov ? ", nesterov" : "", worst);
    CHECK(worst <= 1e-5, "sgd differs by %g", worst);
    lp->p.destroy(self);
    saefw_opts_free(o);
    saefw_plugin_unload(lp);
}

int main(void) {
    saefw_host h = make_host();
    CHECK(adam_matches_torch("adam", "adam", &h, 1.0), "adam differs from torch.optim.Adam");
    test_adam_reset(&h);
    /* Tests of the test: the comparison must fail on a NaN-writing Adam and on the wrong learning rate. */
    const char *dir = getenv("SAEFW_TEST_PLUGINS");
    REQUIRE(dir && *dir, "SAEFW_TEST_PLUGINS is not set (run under ctest)");
    char nan_adam[1024];
    snprintf(nan_adam, sizeof nan_adam, "%s/nan_adam.so", dir);
    CHECK(!adam_matches_torch("nan_adam (must differ)", nan_adam, &h, 1.0), "the check passed an Adam that writes NaN");
    CHECK(!adam_matches_torch("adam at 2 lr (must differ)", "adam", &h, 2.0),
          "the check passed an Adam at twice the learning rate: is the engine's learning rate used?");
    test_sgd(&h, 0);
    test_sgd(&h, 1);
    return t_finish("test_optimizers");
}
