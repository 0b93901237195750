/* The adam plugin against torch.optim.Adam on the same gradient sequence (fixture from
 * tests/reference/make_sae_fixtures.py), and the sgd plugin against SGD's formula, both loaded
 * through the real loader and driven through a stand-in host table, as a plugin sees the engine. */
#include "plugin_loader.h"
#include "testutil.h"
#include "train.h"

/* A stand-in run: one tensor the optimizer updates. */
struct saefw_run {
    float *data, *grad;
    int64_t rows, cols;
};

static int fake_count(saefw_run *run) { return 1; }
static int fake_get(saefw_run *run, int i, saefw_param *out) {
    if (i != 0) return -1;
    memset(out, 0, sizeof *out);
    out->name = "p";
    out->data = run->data;
    out->grad = run->grad;
    out->ndim = 2;
    out->shape[0] = run->rows;
    out->shape[1] = run->cols;
    out->numel = run->rows * run->cols;
    return 0;
}

static saefw_host make_host(void) {
    saefw_host h = *saefw_host_table(); /* option access comes from the engine */
    h.param_count = fake_count;
    h.param_get = fake_get;
    return h;
}

static void *make(saefw_loaded_plugin *lp, const saefw_host *h, saefw_run *run, saefw_opts *o) {
    void *self = NULL;
    char err[256] = "";
    REQUIRE(lp->p.create(h, run, o, &self, err, sizeof err) == 0, "create: %s", err);
    return self;
}

static void test_adam(const saefw_host *h) {
    saefw_tensorfile *tf = NULL;
    char err[512];
    REQUIRE(saefw_tf_open("fixtures/sae/adam.safetensors", &tf, err, sizeof err) == 0, "%s", err);
    const saefw_tensor_info *gi = saefw_tf_find(tf, "grads");
    REQUIRE(gi && gi->ndim == 3, "grads");
    int64_t T = gi->shape[0], R = gi->shape[1], C = gi->shape[2], n = R * C;
    float *p = t_tensor(tf, "p0", NULL), *grads = t_tensor(tf, "grads", NULL), *want = t_tensor(tf, "params", NULL);
    saefw_run run = {p, NULL, R, C};

    saefw_loaded_plugin *lp = NULL;
    REQUIRE(saefw_plugin_load("adam", h, &lp, err, sizeof err) == 0, "%s", err);
    saefw_opts *o = NULL;
    REQUIRE(saefw_opts_new(lp, &o, err, sizeof err) == 0, "%s", err);
    static const char *keys[4] = {"lr", "beta1", "beta2", "eps"};
    for (int k = 0; k < 4; k++)
        REQUIRE(saefw_opts_set_number(o, lp, keys[k], t_meta(tf, keys[k]), err, sizeof err) == 0, "%s", err);
    void *self = make(lp, h, &run, o);
    double worst = 0;
    for (int64_t t = 0; t < T; t++) {
        run.grad = grads + t * n;
        CHECK(lp->p.step(self, &run, err, sizeof err) == 0, "step: %s", err);
        for (int64_t k = 0; k < n; k++) {
            double ref = want[t * n + k];
            double d = fabs(p[k] - ref) / fmax(fabs(ref), 1e-6);
            if (d > worst) worst = d;
        }
    }
    printf("  adam vs torch.optim.Adam: %lld steps, max relative difference %.3e (tol 1e-6)\n", (long long)T, worst);
    CHECK(worst <= 1e-6, "adam differs from torch by %g", worst);

    /* reset_state zeroes exactly the chosen rows: with a zero gradient, reset rows stay put. */
    float zero[64] = {0}, before[64];
    REQUIRE(n <= 64, "fixture too large");
    memcpy(before, p, sizeof(float) * (size_t)n);
    int64_t rows[2] = {1, 3};
    CHECK(lp->p.reset_state(self, &run, 0, 0, rows, 2, err, sizeof err) == 0, "reset: %s", err);
    run.grad = zero;
    CHECK(lp->p.step(self, &run, err, sizeof err) == 0, "step: %s", err);
    for (int64_t r = 0; r < R; r++) {
        int reset = r == 1 || r == 3, moved = 0;
        for (int64_t c = 0; c < C; c++) moved |= p[r * C + c] != before[r * C + c];
        CHECK(moved == !reset, "row %lld %s after reset_state", (long long)r, moved ? "moved" : "did not move");
    }
    int64_t bad = 99;
    CHECK(lp->p.reset_state(self, &run, 0, 0, &bad, 1, err, sizeof err) != 0, "out-of-range row accepted");

    lp->p.destroy(self);
    saefw_opts_free(o);
    saefw_plugin_unload(lp);
    free(p);
    free(grads);
    free(want);
    saefw_tf_close(tf);
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
    saefw_run run = {p, g, R, C};
    char err[256];
    saefw_loaded_plugin *lp = NULL;
    REQUIRE(saefw_plugin_load("sgd", h, &lp, err, sizeof err) == 0, "%s", err);
    saefw_opts *o = NULL;
    REQUIRE(saefw_opts_new(lp, &o, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_opts_set_number(o, lp, "lr", lr, err, sizeof err) == 0, "%s", err);
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
            worst = fmax(worst, fabs(p[k] - ref[k]) / fmax(fabs(ref[k]), 1e-3));
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
    test_adam(&h);
    test_sgd(&h, 0);
    test_sgd(&h, 1);
    return t_finish("test_optimizers");
}
