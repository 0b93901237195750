/* Finite-difference check of the ReLU SAE's variants (docs/architectures.md): apply_b_dec_to_input =
 * false, the decoder-norm-weighted L1 (whose W_dec gradient has a term of its own), and a transcoder
 * target of another width, alone and together, on the dense and the sparse path. The analytic
 * gradients of all four tensors are checked against central differences of an independent
 * double-precision forward written here. */
#include "rng.h"
#include "sae.h"
#include "testutil.h"

enum { B = 6, D_IN = 5, D_SAE = 9, D_OUT_MAX = 40 };

typedef struct {
    const char *name;
    int apply_b_dec, weighted, transcoder;
    int64_t d_out;
} variant;

/* loss = mean_b sum_d (y_hat - y)^2 + penalty, in double, straight from the formulas: the penalty is
 * l1 * sum_{b,i} acts (plain) or l1 * mean_b sum_i acts[b,i] ||W_dec[i,:]|| (decoder_norm). */
static double ref_loss(const variant *v, const double *W_enc, const double *W_dec, const double *b_enc,
                       const double *b_dec, const float *x, const float *y, double l1) {
    const int64_t d_out = v->d_out;
    double norm[D_SAE];
    for (int j = 0; j < D_SAE; j++) {
        double ss = 0;
        for (int64_t i = 0; i < d_out; i++) ss += W_dec[j * d_out + i] * W_dec[j * d_out + i];
        norm[j] = sqrt(ss);
    }
    double l2 = 0, pen = 0;
    for (int b = 0; b < B; b++) {
        double acts[D_SAE];
        for (int j = 0; j < D_SAE; j++) {
            double pre = b_enc[j];
            for (int i = 0; i < D_IN; i++)
                pre += (x[b * D_IN + i] - (v->apply_b_dec ? b_dec[i] : 0.0)) * W_enc[i * D_SAE + j];
            acts[j] = pre > 0 ? pre : 0;
            pen += v->weighted ? acts[j] * norm[j] / B : acts[j];
        }
        for (int64_t i = 0; i < d_out; i++) {
            double yh = b_dec[i];
            for (int j = 0; j < D_SAE; j++) yh += acts[j] * W_dec[j * d_out + i];
            const double t = y[b * d_out + i];
            l2 += (yh - t) * (yh - t);
        }
    }
    return l2 / B + l1 * pen;
}

static void check_variant(const variant *v, saefw_sae_path path) {
    const double l1 = 0.05, h = 1e-5;
    printf("%s, %s path:\n", v->name, path == SAEFW_SAE_DENSE ? "dense" : "sparse");
    saefw_sae_set_path(path);
    saefw_sae sae;
    char err[256];
    if (v->transcoder)
        REQUIRE(saefw_sae_alloc_xy(&sae, D_IN, v->d_out, D_SAE, (float)l1, err, sizeof err) == 0, "%s", err);
    else REQUIRE(saefw_sae_alloc(&sae, D_IN, D_SAE, (float)l1, err, sizeof err) == 0, "%s", err);
    sae.transcoder = v->transcoder;
    sae.apply_b_dec_to_input = v->apply_b_dec;
    sae.l1_weighting = v->weighted ? SAEFW_L1_DECODER_NORM : SAEFW_L1_PLAIN;
    REQUIRE(saefw_sae_check_options(&sae, err, sizeof err) == 0, "%s", err);
    saefw_rng rng;
    saefw_rng_seed(&rng, 4);
    saefw_sae_init_params(&sae, &rng);
    /* Decoder rows of different norms, so that the weighting matters. */
    for (int j = 0; j < D_SAE; j++)
        for (int64_t i = 0; i < v->d_out; i++) sae.p[SAEFW_W_DEC][j * v->d_out + i] *= (float)(0.5 + 0.2 * j);
    for (int j = 0; j < D_SAE; j++) sae.p[SAEFW_B_ENC][j] = (float)(0.3 * saefw_rng_normal(&rng));
    for (int64_t i = 0; i < v->d_out; i++) sae.p[SAEFW_B_DEC][i] = (float)(0.2 * saefw_rng_normal(&rng));
    float x[B * D_IN], ybuf[B * D_OUT_MAX];
    for (int k = 0; k < B * D_IN; k++) x[k] = (float)saefw_rng_normal(&rng);
    for (int k = 0; k < B * v->d_out; k++) ybuf[k] = (float)saefw_rng_normal(&rng);
    const float *y = v->transcoder ? ybuf : x;

    saefw_sae_step *w;
    REQUIRE(saefw_sae_step_alloc(&w, &sae, B, err, sizeof err) == 0, "%s", err);
    saefw_sae_stats st;
    saefw_sae_train_step_xy(&sae, w, x, v->transcoder ? y : NULL, B, &st);
    CHECK(saefw_sae_step_path(w) == path, "the step took the other path");

    double *p[4];
    for (int t = 0; t < 4; t++) {
        p[t] = malloc(sizeof(double) * (size_t)sae.numel[t]);
        REQUIRE(p[t], "out of memory");
        for (int64_t k = 0; k < sae.numel[t]; k++) p[t][k] = sae.p[t][k];
    }
    double base = ref_loss(v, p[0], p[1], p[2], p[3], x, y, l1);
    t_close1("forward loss vs double ref", st.loss, base, 1e-5);

    /* Pre-activations must stay clear of the ReLU kink for differences of size h to be smooth. */
    int near_kink = 0;
    for (int b = 0; b < B; b++)
        for (int j = 0; j < D_SAE; j++) {
            double pre = p[2][j];
            for (int i = 0; i < D_IN; i++)
                pre += (x[b * D_IN + i] - (v->apply_b_dec ? p[3][i] : 0.0)) * p[0][i * D_SAE + j];
            near_kink += fabs(pre) < 1e-3;
        }
    REQUIRE(near_kink == 0, "%d pre-activations within 1e-3 of zero; pick another seed", near_kink);

    for (int t = 0; t < 4; t++) {
        int64_t n = sae.numel[t];
        float *fd = malloc(sizeof(float) * (size_t)n);
        REQUIRE(fd, "out of memory");
        for (int64_t k = 0; k < n; k++) {
            double keep = p[t][k];
            p[t][k] = keep + h;
            double up = ref_loss(v, p[0], p[1], p[2], p[3], x, y, l1);
            p[t][k] = keep - h;
            double dn = ref_loss(v, p[0], p[1], p[2], p[3], x, y, l1);
            p[t][k] = keep;
            fd[k] = (float)((up - dn) / (2 * h));
        }
        char what[64];
        snprintf(what, sizeof what, "d loss / d %s", saefw_param_name(t));
        t_close(what, sae.g[t], fd, n, 1e-4, 1e-3);
        free(fd);
    }
    for (int t = 0; t < 4; t++) free(p[t]);
    saefw_sae_step_free(w);
    saefw_sae_free(&sae);
}

int main(void) {
    static const variant variants[] = {
        {"apply_b_dec_to_input = false", 0, 0, 0, D_IN},
        {"decoder_norm L1", 1, 1, 0, D_IN},
        {"relu_april (decoder_norm, no b_dec on the input)", 0, 1, 0, D_IN},
        {"transcoder 5 -> 7", 0, 0, 1, 7},
        /* More column groups of d_out (SAEFW_SPARSE_GROUP = 32) than of d_in on the sparse path. */
        {"transcoder 5 -> 40", 0, 0, 1, 40},
        {"transcoder 5 -> 3, decoder_norm L1", 0, 1, 1, 3},
    };
    for (size_t k = 0; k < sizeof variants / sizeof *variants; k++) {
        check_variant(&variants[k], SAEFW_SAE_DENSE);
        check_variant(&variants[k], SAEFW_SAE_SPARSE);
    }
    saefw_sae_set_path(SAEFW_SAE_AUTO);

    /* Options that do not fit together are refused with one line. */
    saefw_sae sae;
    char err[256];
    REQUIRE(saefw_sae_alloc_xy(&sae, D_IN, 7, D_SAE, 0.1f, err, sizeof err) == 0, "%s", err);
    sae.transcoder = 1;
    sae.apply_b_dec_to_input = 1;
    CHECK(saefw_sae_check_options(&sae, err, sizeof err) != 0 && strstr(err, "apply_b_dec_to_input"),
          "a transcoder applying b_dec to its input was accepted: %s", err);
    sae.transcoder = 0;
    sae.apply_b_dec_to_input = 0;
    CHECK(saefw_sae_check_options(&sae, err, sizeof err) != 0 && strstr(err, "d_out"),
          "d_out != d_in outside a transcoder was accepted: %s", err);
    saefw_sae_free(&sae);
    saefw_l1_weighting lw;
    CHECK(saefw_l1_weighting_parse("decoder-norm", &lw, err, sizeof err) != 0 && strstr(err, "decoder-norm"),
          "a bad l1_weighting was accepted: %s", err);
    return t_finish("test_fd_relu_variants");
}
