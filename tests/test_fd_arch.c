/* Finite-difference check of the backward passes of topk (with AuxK), batchtopk (with AuxK), jumprelu
 * and gated (docs/architectures.md), on the dense and the sparse path, at two shapes. Each architecture is a
 * piecewise-smooth function whose selections (top-k sets, the batch's top k*B, thresholds, gates, the
 * AuxK set and its stop-gradient residual, gated's frozen decoder) are constant near the test point:
 * the inputs are searched until every selection has a margin, the margin is checked, and an
 * independent double-precision forward written here, with those selections held fixed, is
 * differenced centrally for every parameter. jumprelu's log_threshold has a pseudo-gradient (the
 * STE), which finite differences cannot see: it is checked against the STE formula recomputed here
 * in double. Differencing the engine's own loss instead would not work: its AuxK residual and gated's
 * frozen decoder are stop-gradients, recomputed from the perturbed parameters. Tolerance: max |engine -
 * reference| <= 1e-4 of the tensor's largest reference value (at least 1e-3); measured about 2e-7. The
 * engine's loss and activations are also checked against the reference's, so the selections held
 * fixed are the engine's. */
#include "rng.h"
#include "sae.h"
#include "testutil.h"

/* The shapes: a small one, and one whose d_in and d_sae span more than one of the sparse kernels'
 * tiles (64). K, K_AUX and N_DEAD are the same in both. */
enum { B_MAX = 8, D_IN_MAX = 40, D_SAE_MAX = 72, N_DEAD = 5, K = 3, K_AUX = 2 };

/* This case's shape: rows, input width, latents. */
static int nb, d_in, d_sae;

/* The smallest distance of any value that matters to its discontinuity or kink; the finite
 * differences move pre-activations by about 1e-5 and float32 rounds them by about 1e-6. */
#define MIN_MARGIN 2e-3

typedef struct {
    saefw_sae_arch arch;
    double l1;                              /* gated's l1_coeff */
    unsigned char sel[B_MAX * D_SAE_MAX];   /* main selection: top-k / batch top-k / above threshold / gate open */
    unsigned char aux[B_MAX * D_SAE_MAX];   /* AuxK's A_b */
    double e[B_MAX * D_IN_MAX];             /* AuxK's sg(x - x_hat) */
    double frz_W_dec[D_SAE_MAX * D_IN_MAX]; /* gated's sg(W_dec), sg(b_dec) */
    double frz_b_dec[D_IN_MAX];
    const saefw_sae_arch_cfg *cfg;
    int kernel_hits, aux_positive; /* entries inside jumprelu's STE kernel; AuxK entries with pre > 0 */
} fixed_sel;

/* Encoder pre-activations of row b: pre (topk/batchtopk/jumprelu) or pi_gate, and pi_mag for gated. */
static void ref_pre(const fixed_sel *f, double *const *p, const float *x, int b, double *pre, double *mag) {
    const int sub = f->arch != SAEFW_ARCH_JUMPRELU;
    for (int j = 0; j < d_sae; j++) {
        double s = 0;
        for (int i = 0; i < d_in; i++)
            s += (x[b * d_in + i] - (sub ? p[SAEFW_B_DEC][i] : 0.0)) * p[SAEFW_W_ENC][i * d_sae + j];
        pre[j] = s + p[SAEFW_B_ENC][j];
        if (mag) mag[j] = s * exp(p[SAEFW_R_MAG][j]) + p[SAEFW_B_MAG][j];
    }
}

/* The loss of docs/architectures.md in double with f's selections held fixed; x_hat_out [B, d_in] and
 * dacts [B, d_sae] (dLoss/dacts through l2) when not NULL. */
static double ref_loss(const fixed_sel *f, double *const *p, const float *x, double *x_hat_out, double *dacts) {
    const saefw_sae_arch_cfg *c = f->cfg;
    double l2 = 0, aux = 0, sparse = 0;
    for (int b = 0; b < nb; b++) {
        double pre[d_sae], mag[d_sae], acts[d_sae], z[d_sae];
        ref_pre(f, p, x, b, pre, f->arch == SAEFW_ARCH_GATED ? mag : NULL);
        for (int j = 0; j < d_sae; j++) {
            const int s = f->sel[b * d_sae + j];
            switch (f->arch) {
            case SAEFW_ARCH_JUMPRELU:
                acts[j] = s ? pre[j] : 0;
                sparse += c->l0_coeff * s;
                break;
            case SAEFW_ARCH_GATED:
                acts[j] = s && mag[j] > 0 ? mag[j] : 0;
                sparse += s ? f->l1 * pre[j] : 0; /* ReLU(pi_gate) with the gate held */
                break;
            default: acts[j] = s && pre[j] > 0 ? pre[j] : 0;
            }
            z[j] = f->aux[b * d_sae + j] && pre[j] > 0 ? pre[j] : 0;
        }
        double xh[d_in];
        for (int i = 0; i < d_in; i++) {
            double yh = p[SAEFW_B_DEC][i], eh = 0, fr = f->frz_b_dec[i];
            for (int j = 0; j < d_sae; j++) {
                yh += acts[j] * p[SAEFW_W_DEC][j * d_in + i];
                eh += z[j] * p[SAEFW_W_DEC][j * d_in + i];
                if (f->sel[b * d_sae + j]) fr += pre[j] * f->frz_W_dec[j * d_in + i];
            }
            xh[i] = yh;
            if (x_hat_out) x_hat_out[b * d_in + i] = yh;
            l2 += (yh - x[b * d_in + i]) * (yh - x[b * d_in + i]);
            if (f->arch == SAEFW_ARCH_TOPK || f->arch == SAEFW_ARCH_BATCHTOPK)
                aux += (eh - f->e[b * d_in + i]) * (eh - f->e[b * d_in + i]);
            if (f->arch == SAEFW_ARCH_GATED) aux += (fr - x[b * d_in + i]) * (fr - x[b * d_in + i]);
        }
        if (dacts)
            for (int j = 0; j < d_sae; j++) {
                double s = 0;
                for (int i = 0; i < d_in; i++) s += (xh[i] - x[b * d_in + i]) * p[SAEFW_W_DEC][j * d_in + i];
                dacts[b * d_sae + j] = 2.0 * s / nb;
            }
    }
    double loss = (l2 + sparse) / nb;
    if (f->arch == SAEFW_ARCH_TOPK || f->arch == SAEFW_ARCH_BATCHTOPK) loss += c->aux_coeff * aux / nb;
    if (f->arch == SAEFW_ARCH_GATED) loss += aux / nb;
    return loss;
}

/* The smaller of a and b; a NaN wins, so that it fails the margin check. */
static double dmin(double a, double b) { return isnan(b) || b < a ? b : a; }

/* Indices of v[0..n) by value descending, ties to the lowest index (insertion sort: n is small). */
static void order_desc(const double *v, const int *idx_in, int n, int *out) {
    for (int a = 0; a < n; a++) {
        int k = a;
        while (k > 0 && (v[out[k - 1]] < v[idx_in[a]] || (v[out[k - 1]] == v[idx_in[a]] && out[k - 1] > idx_in[a]))) {
            out[k] = out[k - 1];
            k--;
        }
        out[k] = idx_in[a];
    }
}

/* The selections at the test point, as the engine makes them, into f; returns the smallest margin, or
 * -1 when the point does not exercise what the test needs (a dead latent fired, no AuxK entry is
 * positive, no entry inside jumprelu's kernel, no closed gate). dead: the latents whose counters say
 * dead unless they fire in this batch. */
static double select_fixed(fixed_sel *f, double *const *p, const float *x, const unsigned char *dead) {
    const saefw_sae_arch_cfg *c = f->cfg;
    double m = INFINITY, pre[nb * d_sae], mag[nb * d_sae];
    int all[d_sae], ord[nb * d_sae], flat[nb * d_sae];
    for (int j = 0; j < d_sae; j++) all[j] = j;
    memset(f->sel, 0, sizeof f->sel);
    memset(f->aux, 0, sizeof f->aux);
    const int gated = f->arch == SAEFW_ARCH_GATED;
    for (int b = 0; b < nb; b++) ref_pre(f, p, x, b, pre + b * d_sae, gated ? mag + b * d_sae : NULL);
    int hits = 0, closed = 0;
    switch (f->arch) {
    case SAEFW_ARCH_TOPK:
        for (int b = 0; b < nb; b++) {
            order_desc(pre + b * d_sae, all, d_sae, ord);
            m = dmin(m, pre[b * d_sae + ord[K - 1]] - pre[b * d_sae + ord[K]]);
            for (int r = 0; r < K; r++) {
                f->sel[b * d_sae + ord[r]] = 1;
                m = dmin(m, fabs(pre[b * d_sae + ord[r]]));
            }
        }
        break;
    case SAEFW_ARCH_BATCHTOPK: {
        double r[nb * d_sae];
        for (int k = 0; k < nb * d_sae; k++) {
            r[k] = pre[k] > 0 ? pre[k] : 0;
            flat[k] = k;
        }
        order_desc(r, flat, nb * d_sae, ord);
        m = dmin(m, r[ord[K * nb - 1]] - r[ord[K * nb]]);
        for (int k = 0; k < K * nb; k++) {
            f->sel[ord[k]] = 1;
            m = dmin(m, fabs(pre[ord[k]]));
        }
        break;
    }
    case SAEFW_ARCH_JUMPRELU:
        for (int k = 0; k < nb * d_sae; k++) {
            const double u = pre[k] - exp(p[SAEFW_LOG_THRESHOLD][k % d_sae]);
            f->sel[k] = u > 0;
            hits += fabs(u) < c->bandwidth / 2;
            m = dmin(m, dmin(fabs(u), fabs(fabs(u) - c->bandwidth / 2)));
            if (f->sel[k]) m = dmin(m, fabs(pre[k]));
        }
        if (hits == 0) return -1;
        f->kernel_hits = hits;
        break;
    case SAEFW_ARCH_GATED:
        for (int k = 0; k < nb * d_sae; k++) {
            f->sel[k] = pre[k] > 0;
            closed += !f->sel[k] || mag[k] <= 0;
            m = dmin(m, fabs(pre[k]));
            if (f->sel[k]) m = dmin(m, fabs(mag[k]));
        }
        if (closed == 0) return -1;
        memcpy(f->frz_b_dec, p[SAEFW_B_DEC], sizeof(double) * (size_t)d_in);
        for (int k = 0; k < d_sae * d_in; k++) f->frz_W_dec[k] = p[SAEFW_W_DEC][k];
        break;
    default: return -1;
    }
    if (f->arch == SAEFW_ARCH_TOPK || f->arch == SAEFW_ARCH_BATCHTOPK) {
        int dl[d_sae], nd = 0, pos = 0;
        for (int j = 0; j < d_sae; j++) {
            if (!dead[j]) continue;
            for (int b = 0; b < nb; b++)
                if (f->sel[b * d_sae + j] && pre[b * d_sae + j] > 0) return -1;
            dl[nd++] = j;
        }
        const int kp = nd < K_AUX ? nd : K_AUX;
        for (int b = 0; b < nb; b++) {
            order_desc(pre + b * d_sae, dl, nd, ord);
            if (nd > kp) m = dmin(m, pre[b * d_sae + ord[kp - 1]] - pre[b * d_sae + ord[kp]]);
            for (int r = 0; r < kp; r++) {
                f->aux[b * d_sae + ord[r]] = 1;
                m = dmin(m, fabs(pre[b * d_sae + ord[r]]));
                pos += pre[b * d_sae + ord[r]] > 0;
            }
        }
        if (pos == 0) return -1;
        f->aux_positive = pos;
        /* AuxK's residual is a constant: x - x_hat at the test point. */
        double xh[nb * d_in];
        memset(f->e, 0, sizeof f->e);
        ref_loss(f, p, x, xh, NULL);
        for (int k = 0; k < nb * d_in; k++) f->e[k] = x[k] - xh[k];
    }
    return m;
}

static void check_arch(saefw_sae_arch arch) {
    const double h = 1e-5;
    char err[256];
    saefw_sae_arch_cfg cfg;
    saefw_sae_arch_defaults(&cfg, arch, d_in);
    cfg.k = K;
    cfg.k_aux = K_AUX;
    cfg.dead_steps = 10;
    cfg.aux_coeff = 0.25; /* larger than 1/32 so that AuxK's share of the gradient shows */
    cfg.bandwidth = 0.2;  /* wide enough that entries fall inside the STE's kernel */
    cfg.l0_coeff = 0.5;
    saefw_sae sae;
    REQUIRE(saefw_sae_alloc_arch(&sae, d_in, d_sae, 0.05f, &cfg, err, sizeof err) == 0, "%s", err);
    const int np = sae.n_params;
    unsigned char dead[D_SAE_MAX] = {0};
    for (int j = d_sae - N_DEAD; j < d_sae; j++) dead[j] = 1;

    static fixed_sel f;
    f.arch = arch;
    f.cfg = &sae.arch;
    f.l1 = sae.l1_coeff;
    float x[nb * d_in];
    double *p[SAEFW_MAX_PARAMS] = {0};
    for (int t = 0; t < np; t++) {
        p[t] = malloc(sizeof(double) * (size_t)sae.numel[t]);
        REQUIRE(p[t], "out of memory");
    }
    /* Search seeds for a point whose selections all have margins. */
    double margin = -1;
    uint64_t seed = 0;
    for (seed = 1; seed <= 2000 && margin < MIN_MARGIN; seed++) {
        saefw_rng rng;
        saefw_rng_seed(&rng, seed);
        saefw_sae_init_params(&sae, &rng);
        /* Decoder rows of different norms; the dead latents' biases lower, so that they stay out of
         * the top k while some of their pre-activations are positive for AuxK. */
        for (int j = 0; j < d_sae; j++)
            for (int i = 0; i < d_in; i++) sae.p[SAEFW_W_DEC][j * d_in + i] *= (float)(0.5 + 0.1 * (j % 16));
        for (int j = 0; j < d_sae; j++)
            sae.p[2][j] = (float)(0.3 * saefw_rng_normal(&rng) + (dead[j] && arch != SAEFW_ARCH_GATED ? -0.7 : 0.0));
        for (int i = 0; i < d_in; i++) sae.p[SAEFW_B_DEC][i] = (float)(0.2 * saefw_rng_normal(&rng));
        if (arch == SAEFW_ARCH_JUMPRELU)
            for (int j = 0; j < d_sae; j++)
                sae.p[SAEFW_LOG_THRESHOLD][j] = (float)log(0.3 + 0.5 * saefw_rng_uniform(&rng));
        if (arch == SAEFW_ARCH_GATED)
            for (int j = 0; j < d_sae; j++) {
                sae.p[SAEFW_R_MAG][j] = (float)(0.3 * saefw_rng_normal(&rng));
                sae.p[SAEFW_B_MAG][j] = (float)(0.3 * saefw_rng_normal(&rng));
            }
        for (int k = 0; k < nb * d_in; k++) x[k] = (float)saefw_rng_normal(&rng);
        for (int t = 0; t < np; t++)
            for (int64_t k = 0; k < sae.numel[t]; k++) p[t][k] = sae.p[t][k];
        margin = select_fixed(&f, p, x, dead);
    }
    printf("%s, B %d, d_in %d, d_sae %d: seed %llu, smallest margin %.3e (need %.0e)\n", saefw_sae_arch_name(arch), nb,
           d_in, d_sae, (unsigned long long)(seed - 1), margin, MIN_MARGIN);
    REQUIRE(margin >= MIN_MARGIN, "%s: no seed up to 2000 gives selections with margins", saefw_sae_arch_name(arch));
    int nsel = 0, naux = 0;
    for (int k = 0; k < nb * d_sae; k++) {
        nsel += f.sel[k];
        naux += f.aux[k];
    }
    printf("  %d selected entries, %d AuxK entries (%d positive), %d inside the STE kernel\n", nsel, naux,
           naux ? f.aux_positive : 0, arch == SAEFW_ARCH_JUMPRELU ? f.kernel_hits : 0);

    double xh[nb * d_in], dacts[nb * d_sae];
    const double base = ref_loss(&f, p, x, xh, dacts);
    /* Central differences of the held-fixed double loss, for every parameter the function depends on. */
    float *fd[SAEFW_MAX_PARAMS] = {0};
    for (int t = 0; t < np; t++) {
        if (arch == SAEFW_ARCH_JUMPRELU && t == SAEFW_LOG_THRESHOLD) continue;
        fd[t] = malloc(sizeof(float) * (size_t)sae.numel[t]);
        REQUIRE(fd[t], "out of memory");
        for (int64_t k = 0; k < sae.numel[t]; k++) {
            const double keep = p[t][k];
            p[t][k] = keep + h;
            const double up = ref_loss(&f, p, x, NULL, NULL);
            p[t][k] = keep - h;
            const double dn = ref_loss(&f, p, x, NULL, NULL);
            p[t][k] = keep;
            fd[t][k] = (float)((up - dn) / (2 * h));
        }
    }
    /* jumprelu's STE (docs/architectures.md): d/d log_threshold = theta * sum_b K(u / eps) *
     * (dL/dacts * -(theta / eps) + (l0_coeff / B) * -(1 / eps)), u = pre - theta. */
    float ste[d_sae];
    if (arch == SAEFW_ARCH_JUMPRELU)
        for (int j = 0; j < d_sae; j++) {
            const double theta = exp(p[SAEFW_LOG_THRESHOLD][j]), eps = sae.arch.bandwidth;
            double g = 0;
            for (int b = 0; b < nb; b++) {
                double pre[d_sae];
                ref_pre(&f, p, x, b, pre, NULL);
                if (fabs(pre[j] - theta) / eps < 0.5)
                    g += dacts[b * d_sae + j] * -(theta / eps) + sae.arch.l0_coeff / nb * -(1.0 / eps);
            }
            ste[j] = (float)(theta * g);
        }

    for (int path = SAEFW_SAE_DENSE; path <= SAEFW_SAE_SPARSE; path++) {
        printf(" %s path:\n", path == SAEFW_SAE_DENSE ? "dense" : "sparse");
        saefw_sae_set_path((saefw_sae_path)path);
        /* The counters say dead for the last N_DEAD latents (none of them fires in this batch). */
        if (sae.since_fired)
            for (int j = 0; j < d_sae; j++) sae.since_fired[j] = dead[j] ? 100 : 0;
        saefw_sae_step *w;
        REQUIRE(saefw_sae_step_alloc(&w, &sae, nb, err, sizeof err) == 0, "%s", err);
        saefw_sae_stats st;
        saefw_sae_train_step(&sae, w, x, nb, &st);
        CHECK(saefw_sae_step_path(w) == (saefw_sae_path)path, "the step took the other path");
        t_close1("forward loss vs double ref", st.loss, base, 1e-5);
        if (arch == SAEFW_ARCH_TOPK || arch == SAEFW_ARCH_BATCHTOPK)
            CHECK(st.l1 > 0, "AuxK's term is %g: no dead latent took part", st.l1);
        /* The engine selected what the reference holds fixed. */
        const float *acts = saefw_sae_step_acts(&sae, w, err, sizeof err);
        REQUIRE(acts, "%s", err);
        int differ = 0;
        for (int b = 0; b < nb; b++) {
            double pre[d_sae], mag[d_sae];
            ref_pre(&f, p, x, b, pre, arch == SAEFW_ARCH_GATED ? mag : NULL);
            for (int j = 0; j < d_sae; j++) {
                const int k = b * d_sae + j;
                const double v = arch == SAEFW_ARCH_GATED ? mag[j] : pre[j];
                const double want = f.sel[k] && (arch == SAEFW_ARCH_JUMPRELU || v > 0) ? v : 0;
                differ += (acts[k] != 0) != (want != 0) || !(fabs(acts[k] - want) <= 1e-4);
            }
        }
        CHECK(differ == 0, "%d activations differ from the reference's selection", differ);
        for (int t = 0; t < np; t++) {
            char what[64];
            const int is_ste = arch == SAEFW_ARCH_JUMPRELU && t == SAEFW_LOG_THRESHOLD;
            snprintf(what, sizeof what, "d loss / d %s%s", sae.names[t], is_ste ? " (STE)" : "");
            t_close(what, sae.g[t], is_ste ? ste : fd[t], sae.numel[t], 1e-4, 1e-3);
        }
        saefw_sae_step_free(w);
    }
    saefw_sae_set_path(SAEFW_SAE_AUTO);
    for (int t = 0; t < np; t++) {
        free(p[t]);
        free(fd[t]);
    }
    saefw_sae_free(&sae);
}

int main(void) {
    static const int shapes[][3] = {{8, 6, 16}, {6, D_IN_MAX, D_SAE_MAX}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        nb = shapes[s][0];
        d_in = shapes[s][1];
        d_sae = shapes[s][2];
        check_arch(SAEFW_ARCH_TOPK);
        check_arch(SAEFW_ARCH_BATCHTOPK);
        check_arch(SAEFW_ARCH_JUMPRELU);
        check_arch(SAEFW_ARCH_GATED);
    }
    return t_finish("test_fd_arch");
}
