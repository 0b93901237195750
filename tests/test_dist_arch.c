/* Data parallel for topk, jumprelu and gated SAEs: each share of a global batch stepped with the global
 * row count (saefw_sae_step_set_norm_rows, as every rank does under mpirun), its gradients summed over
 * the shares, equals the gradient of the whole batch within float32 rounding, on both paths and for 2
 * and 3 uneven shares; the statistics add up as the trainer adds them. For topk, AuxK is active (latents
 * silent past dead_steps) and each share's fired flags become the whole batch's through
 * saefw_sae_step_set_fired_exchange, so every share sees the same dead latents and ends with the whole
 * batch's counters. Run in one process: the sums over ranks are simulated in rank order
 * (tests/test_dist.c checks the ring sum itself). */
#include <stdint.h>

#include "rng.h"
#include "sae.h"
#include "testutil.h"

#define D_IN 40
#define D_SAE 160
#define B 61 /* no share count of 2 or 3 divides it: uneven shares */
/* |summed - whole| <= TOL * max |whole| per tensor, as tests/test_dist.c: each share's sums are rounded
 * to float32 before they are added. */
#define TOL 1e-5

static void make_sae(saefw_sae *sae, saefw_sae_arch arch) {
    char err[256];
    saefw_sae_arch_cfg cfg;
    saefw_sae_arch_defaults(&cfg, arch, D_IN);
    /* A threshold and bandwidth at the scale of the pre-activations, so that the STE's window holds
     * entries of every share. */
    cfg.threshold = 0.2;
    cfg.bandwidth = 0.4;
    cfg.k = 8;
    cfg.dead_steps = 5;
    REQUIRE(saefw_sae_alloc_arch(sae, D_IN, D_SAE, 3e-3f, &cfg, err, sizeof err) == 0, "%s", err);
    saefw_rng rng;
    saefw_rng_seed(&rng, 11);
    saefw_sae_init_params(sae, &rng);
    for (int64_t j = 0; j < D_SAE; j++) sae->p[SAEFW_B_ENC][j] = (float)(0.05 * saefw_rng_normal(&rng));
    for (int64_t i = 0; i < D_IN; i++) sae->p[SAEFW_B_DEC][i] = (float)(0.1 * saefw_rng_normal(&rng));
    for (int t = SAEFW_N_PARAMS; t < sae->n_params; t++)
        for (int64_t j = 0; j < sae->numel[t]; j++) sae->p[t][j] += (float)(0.05 * saefw_rng_normal(&rng));
}

/* AuxK's counters before every step: a quarter of the latents silent for longer than dead_steps. */
static void reset_counters(saefw_sae *sae) {
    for (int64_t j = 0; sae->since_fired && j < D_SAE; j++) sae->since_fired[j] = j % 4 == 0 ? 10 : 0;
}

/* The whole batch's fired flags [D_SAE], which the simulated exchange gives every share. */
static unsigned char g_whole_fired[D_SAE];
static int g_exchanges;

static void exchange(void *ud, unsigned char *fired, int64_t n) {
    (void)ud;
    for (int64_t j = 0; j < n; j++) fired[j] = fired[j] || g_whole_fired[j];
    g_exchanges++;
}

/* One step of rows x; with norm_rows > 0 a share's (the global count, the whole batch's flags). */
static void grads(saefw_sae *sae, const float *x, int64_t rows, int64_t norm_rows, float *out, saefw_sae_stats *st) {
    char err[256];
    saefw_sae_step *w = NULL;
    REQUIRE(saefw_sae_step_alloc(&w, sae, B, err, sizeof err) == 0, "%s", err);
    saefw_sae_step_set_norm_rows(w, norm_rows);
    if (norm_rows > 0) saefw_sae_step_set_fired_exchange(w, exchange, NULL);
    reset_counters(sae);
    saefw_sae_train_step(sae, w, x, rows, st);
    memcpy(out, sae->grads, sizeof(float) * sae->n_total);
    if (norm_rows == 0) {
        int64_t count[D_SAE] = {0};
        REQUIRE(saefw_sae_step_count_active(sae, w, count, err, sizeof err) == 0, "%s", err);
        for (int64_t j = 0; j < D_SAE; j++) g_whole_fired[j] = count[j] > 0;
    }
    saefw_sae_step_free(w);
}

static void check(saefw_sae_arch arch, saefw_sae_path path, const char *path_name, int P) {
    const char *name = saefw_sae_arch_name(arch);
    saefw_sae_set_path(path);
    saefw_sae sae;
    make_sae(&sae, arch);
    float *x = malloc(sizeof(float) * B * D_IN), *whole = malloc(sizeof(float) * sae.n_total),
          *part = malloc(sizeof(float) * sae.n_total);
    double *sum = calloc(sae.n_total, sizeof(double));
    REQUIRE(x && whole && part && sum, "out of memory");
    saefw_rng rng;
    saefw_rng_seed(&rng, 5);
    for (int64_t k = 0; k < B * D_IN; k++) x[k] = (float)saefw_rng_normal(&rng);
    saefw_sae_stats st_whole, st;
    grads(&sae, x, B, 0, whole, &st_whole);
    int64_t whole_since[D_SAE], dead = 0, counters_differ = 0;
    for (int64_t j = 0; sae.since_fired && j < D_SAE; j++) {
        whole_since[j] = sae.since_fired[j];
        dead += whole_since[j] > sae.arch.dead_steps;
    }
    g_exchanges = 0;
    /* The trainer's sums of the statistics: l2 and L0 weighted by rows, l1 (the loss terms past l2) summed. */
    double l2 = 0, l1 = 0, l0 = 0;
    for (int r = 0; r < P; r++) {
        const int64_t r0 = B * r / P, r1 = B * (r + 1) / P;
        grads(&sae, x + r0 * D_IN, r1 - r0, B, part, &st);
        for (size_t k = 0; k < sae.n_total; k++) sum[k] += part[k];
        l2 += st.l2 * (double)(r1 - r0);
        l1 += st.l1;
        l0 += st.l0 * (double)(r1 - r0);
        for (int64_t j = 0; sae.since_fired && j < D_SAE; j++) counters_differ += sae.since_fired[j] != whole_since[j];
    }
    if (sae.since_fired) {
        printf("%s, %s path, %d shares: AuxK with %lld dead latents, %d exchanges of fired flags, %lld counters "
               "differ from the whole batch's\n",
               name, path_name, P, (long long)dead, g_exchanges, (long long)counters_differ);
        CHECK(dead > 0 && g_exchanges == P && counters_differ == 0, "%s: AuxK across shares", name);
    }
    for (int t = 0; t < sae.n_params; t++) {
        const size_t off = (size_t)(sae.g[t] - sae.grads);
        double maxd = 0, maxg = 0;
        int finite = 1;
        for (int64_t k = 0; k < sae.numel[t]; k++) {
            const double a = sum[off + k], b = whole[off + k];
            finite &= isfinite(a) && isfinite(b);
            maxd = t_max(maxd, fabs(a - b));
            maxg = t_max(maxg, fabs(b));
        }
        printf("%s, %s path, %d shares: %s gradient: max |summed - whole| = %.3g (max |whole| %.3g, tolerance "
               "%.3g)\n",
               name, path_name, P, sae.names[t], maxd, maxg, TOL * maxg);
        CHECK(finite && maxg > 0 && maxd <= TOL * maxg, "%s %s %s: max difference %g over tolerance %g", name,
              path_name, sae.names[t], maxd, TOL * maxg);
    }
    printf("%s, %s path, %d shares: l2 %.9g vs %.9g, l1 %.9g vs %.9g, L0 %.9g vs %.9g\n", name, path_name, P, l2 / B,
           st_whole.l2, l1, st_whole.l1, l0 / B, st_whole.l0);
    CHECK(fabs(l2 / B - st_whole.l2) <= 1e-6 * st_whole.l2, "%s l2 %.17g vs %.17g", name, l2 / B, st_whole.l2);
    CHECK(st_whole.l1 > 0 && fabs(l1 - st_whole.l1) <= 1e-6 * st_whole.l1, "%s l1 %.17g vs %.17g", name, l1,
          st_whole.l1);
    CHECK(fabs(l0 / B - st_whole.l0) <= 1e-12 * st_whole.l0, "%s l0 %.17g vs %.17g", name, l0 / B, st_whole.l0);
    free(x);
    free(whole);
    free(part);
    free(sum);
    saefw_sae_free(&sae);
    saefw_sae_set_path(SAEFW_SAE_AUTO);
}

int main(void) {
    static const saefw_sae_arch archs[] = {SAEFW_ARCH_TOPK, SAEFW_ARCH_JUMPRELU, SAEFW_ARCH_GATED};
    for (size_t a = 0; a < sizeof archs / sizeof *archs; a++)
        for (int P = 2; P <= 3; P++) {
            check(archs[a], SAEFW_SAE_DENSE, "dense", P);
            check(archs[a], SAEFW_SAE_SPARSE, "sparse", P);
        }
    return t_finish("test_dist_arch");
}
