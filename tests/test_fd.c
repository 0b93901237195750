/* Finite-difference check of the SAE backward pass: the analytic gradients of all four tensors
 * against central differences of an independent double-precision forward written here. Also checks
 * that the decoder projection leaves gradient rows orthogonal to unit-norm decoder rows. */
#include "rng.h"
#include "sae.h"
#include "testutil.h"

enum { B = 6, D_IN = 5, D_SAE = 9 };

/* loss = mean_b sum_i (x_hat - x)^2 + l1 * sum |acts|, in double, straight from the recipe. */
static double ref_loss(const double *W_enc, const double *W_dec, const double *b_enc, const double *b_dec,
                       const float *x, double l1) {
    double l2 = 0, s1 = 0;
    for (int b = 0; b < B; b++) {
        double acts[D_SAE], xh[D_IN];
        for (int j = 0; j < D_SAE; j++) {
            double pre = b_enc[j];
            for (int i = 0; i < D_IN; i++) pre += (x[b * D_IN + i] - b_dec[i]) * W_enc[i * D_SAE + j];
            acts[j] = pre > 0 ? pre : 0;
            s1 += fabs(acts[j]);
        }
        for (int i = 0; i < D_IN; i++) {
            xh[i] = b_dec[i];
            for (int j = 0; j < D_SAE; j++) xh[i] += acts[j] * W_dec[j * D_IN + i];
            l2 += (xh[i] - x[b * D_IN + i]) * (xh[i] - x[b * D_IN + i]);
        }
    }
    return l2 / B + l1 * s1;
}

int main(void) {
    const double l1 = 0.05, h = 1e-5;
    saefw_sae sae;
    char err[256];
    REQUIRE(saefw_sae_alloc(&sae, D_IN, D_SAE, (float)l1, err, sizeof err) == 0, "%s", err);
    saefw_rng rng;
    saefw_rng_seed(&rng, 4);
    saefw_sae_init_params(&sae, &rng);
    for (int j = 0; j < D_SAE; j++) sae.p[SAEFW_B_ENC][j] = (float)(0.3 * saefw_rng_normal(&rng));
    for (int i = 0; i < D_IN; i++) sae.p[SAEFW_B_DEC][i] = (float)(0.2 * saefw_rng_normal(&rng));
    float x[B * D_IN];
    for (int k = 0; k < B * D_IN; k++) x[k] = (float)saefw_rng_normal(&rng);

    saefw_sae_step *w;
    REQUIRE(saefw_sae_step_alloc(&w, &sae, B, err, sizeof err) == 0, "%s", err);
    saefw_sae_stats st;
    saefw_sae_train_step(&sae, w, x, B, &st);

    double *p[4];
    for (int t = 0; t < 4; t++) {
        p[t] = malloc(sizeof(double) * (size_t)sae.numel[t]);
        for (int64_t k = 0; k < sae.numel[t]; k++) p[t][k] = sae.p[t][k];
    }
    double base = ref_loss(p[0], p[1], p[2], p[3], x, l1);
    t_close1("forward loss vs double ref", st.loss, base, 1e-5);

    /* Pre-activations must stay clear of the ReLU kink for differences of size h to be smooth. */
    int near_kink = 0;
    for (int b = 0; b < B; b++)
        for (int j = 0; j < D_SAE; j++) {
            double pre = p[2][j];
            for (int i = 0; i < D_IN; i++) pre += (x[b * D_IN + i] - p[3][i]) * p[0][i * D_SAE + j];
            near_kink += fabs(pre) < 1e-3;
        }
    REQUIRE(near_kink == 0, "%d pre-activations within 1e-3 of zero; pick another seed", near_kink);

    for (int t = 0; t < 4; t++) {
        int64_t n = sae.numel[t];
        float *fd = malloc(sizeof(float) * (size_t)n);
        for (int64_t k = 0; k < n; k++) {
            double keep = p[t][k];
            p[t][k] = keep + h;
            double up = ref_loss(p[0], p[1], p[2], p[3], x, l1);
            p[t][k] = keep - h;
            double dn = ref_loss(p[0], p[1], p[2], p[3], x, l1);
            p[t][k] = keep;
            fd[k] = (float)((up - dn) / (2 * h));
        }
        char what[64];
        snprintf(what, sizeof what, "d loss / d %s", saefw_param_name(t));
        t_close(what, sae.g[t], fd, n, 1e-4, 1e-3);
        free(fd);
    }

    /* After the projection: unit-norm decoder rows and gradient rows orthogonal to them. */
    saefw_sae_project_decoder(&sae);
    double worst_norm = 0, worst_dot = 0;
    for (int r = 0; r < D_SAE; r++) {
        double nn = 0, dot = 0;
        for (int i = 0; i < D_IN; i++) {
            nn += (double)sae.p[1][r * D_IN + i] * sae.p[1][r * D_IN + i];
            dot += (double)sae.p[1][r * D_IN + i] * sae.g[1][r * D_IN + i];
        }
        worst_norm = t_max(worst_norm, fabs(sqrt(nn) - 1));
        worst_dot = t_max(worst_dot, fabs(dot));
    }
    printf("  after projection: max | |W_dec row| - 1 | %.2e, max |row . grad row| %.2e\n", worst_norm, worst_dot);
    CHECK(worst_norm <= 1e-6, "decoder rows not unit norm: %g", worst_norm);
    CHECK(worst_dot <= 1e-5, "decoder gradient not orthogonal: %g", worst_dot);

    for (int t = 0; t < 4; t++) free(p[t]);
    saefw_sae_step_free(w);
    saefw_sae_free(&sae);
    return t_finish("test_fd");
}
