/* SAE forward and backward against fixtures written by tests/reference/make_sae_fixtures.py
 * (PyTorch): loss, l2, l1, x_hat, acts, the raw and projected gradients, and the renormalised
 * decoder. Tolerance: 1e-5 of the largest reference value per tensor (fp32 sums in another order). */
#include "sae.h"
#include "testutil.h"

static const double TOL = 1e-5;

static void run_case(saefw_tensorfile *tf, const char *prefix) {
    char name[64];
#define T(n) (snprintf(name, sizeof name, "%s%s", prefix, n), t_tensor(tf, name, NULL))
    const saefw_tensor_info *xi = saefw_tf_find(tf, (snprintf(name, sizeof name, "%sx", prefix), name));
    REQUIRE(xi && xi->ndim == 2, "fixture %sx", prefix);
    int64_t B = xi->shape[0], d_in = xi->shape[1];
    const saefw_tensor_info *wi = saefw_tf_find(tf, (snprintf(name, sizeof name, "%sW_enc", prefix), name));
    REQUIRE(wi, "fixture W_enc");
    int64_t d_sae = wi->shape[1];
    double l1c = t_meta(tf, "l1_coeff");
    printf("case '%s': B %lld, d_in %lld, d_sae %lld, l1_coeff %g\n", prefix[0] ? prefix : "base", (long long)B,
           (long long)d_in, (long long)d_sae, l1c);

    saefw_sae sae;
    char err[512];
    REQUIRE(saefw_sae_alloc(&sae, d_in, d_sae, (float)l1c, err, sizeof err) == 0, "%s", err);
    static const char *names[4] = {"W_enc", "W_dec", "b_enc", "b_dec"};
    for (int i = 0; i < 4; i++) {
        float *v = T(names[i]);
        memcpy(sae.p[i], v, sizeof(float) * (size_t)sae.numel[i]);
        free(v);
    }
    float *x = T("x");
    saefw_sae_eval *e;
    saefw_sae_step *w;
    REQUIRE(saefw_sae_eval_alloc(&e, &sae, B, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_sae_step_alloc(&w, &sae, B, err, sizeof err) == 0, "%s", err);
    saefw_sae_stats st;
    /* The evaluation forward pass: statistics, x_hat and the activations. */
    const float *x_hat = saefw_sae_eval_forward(&sae, e, x, B, &st);

    float *loss = T("loss"), *l2 = T("l2"), *l1 = T("l1");
    t_close1("loss", st.loss, loss[0], TOL);
    t_close1("l2", st.l2, l2[0], TOL);
    t_close1("l1", st.l1, l1[0], TOL);
    float *want = T("x_hat");
    t_close("x_hat", x_hat, want, B * d_in, TOL, 1e-6);
    free(want);
    want = T("acts");
    char aerr[256];
    const float *acts = saefw_sae_eval_acts(&sae, e, aerr, sizeof aerr);
    REQUIRE(acts, "%s", aerr);
    t_close("acts", acts, want, B * d_sae, TOL, 1e-6);
    free(want);

    /* The training step: its statistics and the gradients. */
    saefw_sae_stats sst;
    saefw_sae_train_step(&sae, w, x, B, &sst);
    t_close1("loss (training step)", sst.loss, loss[0], TOL);
    want = T("acts");
    acts = saefw_sae_step_acts(&sae, w, aerr, sizeof aerr);
    REQUIRE(acts, "%s", aerr);
    t_close("acts (training step)", acts, want, B * d_sae, TOL, 1e-6);
    free(want);
    want = T("grad_W_dec_raw");
    t_close("grad W_dec (before proj.)", sae.g[SAEFW_W_DEC], want, sae.numel[SAEFW_W_DEC], TOL, 1e-6);
    free(want);
    saefw_sae_project_decoder(&sae);
    static const char *gnames[4] = {"grad_W_enc", "grad_W_dec", "grad_b_enc", "grad_b_dec"};
    for (int i = 0; i < 4; i++) {
        want = T(gnames[i]);
        t_close(gnames[i], sae.g[i], want, sae.numel[i], TOL, 1e-6);
        free(want);
    }
    want = T("W_dec_normed");
    t_close("W_dec after renorm", sae.p[SAEFW_W_DEC], want, sae.numel[SAEFW_W_DEC], TOL, 1e-6);
    free(want);
    free(loss);
    free(l2);
    free(l1);
    free(x);
    saefw_sae_eval_free(e);
    saefw_sae_step_free(w);
    saefw_sae_free(&sae);
#undef T
}

int main(void) {
    saefw_tensorfile *tf = NULL;
    char err[512];
    REQUIRE(saefw_tf_open("fixtures/sae/fwd_bwd.safetensors", &tf, err, sizeof err) == 0, "%s", err);
    run_case(tf, "");
    run_case(tf, "hi_");
    saefw_tf_close(tf);
    return t_finish("test_sae_reference");
}
