/* Gradient-norm clipping against torch 1.13's clip_grad_norm_ (tests/fixtures/arch/relu_april.safetensors,
 * made by tests/reference/make_arch_fixtures.py): the raw gradients fwd_grad_raw_* go in, and the
 * clipped fwd_grad_*, fwd_grad_norm and fwd_clip_coef must come out. The reference sums the squares in
 * float64 and scales in float32, as saefw does, so the tolerances are a few float32 roundings: 1e-6
 * relative for the gradients, the norm and the coefficient. Also: no change at all when the norm is
 * under the bound, and the same bits for any thread count on a block large enough to be split. */
#include "grad_clip.h"
#include "parallel.h"
#include "rng.h"
#include "sae.h"
#include "testutil.h"

#define TOL 1e-6

static void fixture_case(void) {
    saefw_tensorfile *tf = NULL;
    char err[512];
    REQUIRE(saefw_tf_open("fixtures/arch/relu_april.safetensors", &tf, err, sizeof err) == 0, "%s", err);
    const double max_norm = t_meta(tf, "max_grad_norm");
    int64_t n_enc = 0;
    float *w_enc = t_tensor(tf, "fwd_W_enc", &n_enc);
    const saefw_tensor_info *ti = saefw_tf_find(tf, "fwd_W_enc");
    REQUIRE(ti && ti->ndim == 2, "fwd_W_enc is not a matrix");
    saefw_sae sae;
    REQUIRE(saefw_sae_alloc(&sae, ti->shape[0], ti->shape[1], 5.0f, err, sizeof err) == 0, "%s", err);
    for (int i = 0; i < SAEFW_N_PARAMS; i++) {
        char name[64];
        int64_t n = 0;
        snprintf(name, sizeof name, "fwd_grad_raw_%s", saefw_param_name(i));
        float *g = t_tensor(tf, name, &n);
        REQUIRE(n == sae.numel[i], "%s has %lld entries, expected %lld", name, (long long)n, (long long)sae.numel[i]);
        memcpy(sae.g[i], g, sizeof(float) * (size_t)n);
        free(g);
    }
    double norm = 0, coef = 0;
    saefw_clip_grad_norm(sae.grads, (int64_t)sae.n_total, max_norm, &norm, &coef);
    printf("relu_april forward case (max_norm %g):\n", max_norm);
    float *want_norm = t_tensor(tf, "fwd_grad_norm", NULL), *want_coef = t_tensor(tf, "fwd_clip_coef", NULL);
    t_close1("grad_norm", norm, want_norm[0], TOL);
    t_close1("clip_coef", coef, want_coef[0], TOL);
    CHECK(coef < 1, "the fixture's case must clip (coef %g)", coef);
    for (int i = 0; i < SAEFW_N_PARAMS; i++) {
        char name[64];
        snprintf(name, sizeof name, "fwd_grad_%s", saefw_param_name(i));
        float *want = t_tensor(tf, name, NULL);
        t_close(name, sae.g[i], want, sae.numel[i], TOL, 1e-12);
        free(want);
    }

    /* Under the bound: not a bit changes and the coefficient is 1. */
    float *before = malloc(sizeof(float) * sae.n_total);
    REQUIRE(before, "out of memory");
    memcpy(before, sae.grads, sizeof(float) * sae.n_total);
    double norm2 = 0, coef2 = 0;
    saefw_clip_grad_norm(sae.grads, (int64_t)sae.n_total, 10.0 * max_norm, &norm2, &coef2);
    CHECK(coef2 == 1.0 && memcmp(before, sae.grads, sizeof(float) * sae.n_total) == 0,
          "clipping changed gradients under the bound (coef %g)", coef2);
    CHECK(fabs(norm2 - max_norm) <= 1e-5 * max_norm, "the clipped norm is %.9g, expected about %g", norm2, max_norm);
    free(before);
    free(want_norm);
    free(want_coef);
    free(w_enc);
    saefw_sae_free(&sae);
    saefw_tf_close(tf);
}

/* A block split into many pieces: 1 thread and 4 give the same norm and gradients, bit for bit. */
static void thread_case(void) {
    const int64_t n = 3 * 1000 * 1000 + 17;
    float *a = malloc(sizeof(float) * (size_t)n), *b = malloc(sizeof(float) * (size_t)n);
    REQUIRE(a && b, "out of memory");
    saefw_rng rng;
    saefw_rng_seed(&rng, 7);
    for (int64_t i = 0; i < n; i++) a[i] = b[i] = (float)saefw_rng_normal(&rng);
    double n1, c1, n4, c4;
    saefw_set_threads(1);
    saefw_clip_grad_norm(a, n, 1.0, &n1, &c1);
    saefw_set_threads(4);
    saefw_clip_grad_norm(b, n, 1.0, &n4, &c4);
    saefw_set_threads(0);
    printf("3M entries: norm %.17g (1 thread) %.17g (4 threads), coef %.9g\n", n1, n4, c1);
    CHECK(n1 == n4 && c1 == c4 && memcmp(a, b, sizeof(float) * (size_t)n) == 0,
          "the result depends on the thread count");
    CHECK(fabs(n1 - sqrt((double)n)) < 0.01 * sqrt((double)n), "norm %g of %lld standard normals", n1, (long long)n);
    free(a);
    free(b);
}

int main(void) {
    fixture_case();
    thread_case();
    return t_finish("test_grad_clip");
}
