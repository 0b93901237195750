/* bench_dist: a data-parallel training step at the seed's shape (d_in 2048, d_sae 16384, global batch
 * 4096; b_enc set for an L0 near 64): each rank's SAE step on its rows, then the gradient sum across
 * ranks in rank order (engine/dist.c). Prints per step the compute time (slowest rank), the wait for
 * the slowest rank, the sum's time and bytes, tokens/s and the communication share. Run it alone and
 * under mpirun to compare, on this machine, 1 rank x 2 threads with 2 ranks x 1 thread:
 *   bench_dist --threads 2
 *   mpirun -np 2 bench_dist --threads 1
 *   bench_dist [--small] [--steps N] [--threads N]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "parallel.h"
#include "rng.h"
#include "sae.h"
#include "util.h"

int main(int argc, char **argv) {
    char err[512] = "";
    if (saefw_dist_init(&argc, &argv, err, sizeof err) != 0) {
        fprintf(stderr, "bench_dist: %s\n", err);
        return 1;
    }
    int64_t d_in = 2048, d_sae = 16384, B = 4096, steps = 4;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--small")) d_in = 256, d_sae = 2048, B = 1024;
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) saefw_set_threads(atoi(argv[++i]));
        else {
            fprintf(stderr, "bench_dist: unknown argument '%s' (--small, --steps N, --threads N)\n", argv[i]);
            saefw_dist_abort(2);
        }
    }
    if (steps < 1) steps = 1;
    const int r = saefw_dist_rank(), P = saefw_dist_size();
    saefw_sae sae;
    if (saefw_sae_alloc(&sae, d_in, d_sae, 5e-4f, err, sizeof err) != 0) {
        fprintf(stderr, "bench_dist: %s\n", err);
        saefw_dist_abort(1);
    }
    saefw_rng rng;
    saefw_rng_seed(&rng, 49);
    saefw_sae_init_params(&sae, &rng);
    /* Pre-activations have a standard deviation near sqrt(2 d_in / d_sae) on unit-normal rows: b_enc at
     * -2.66 of it leaves about 64 of 16384 features active (the seed recipe's range). */
    const float bias = (float)(-2.66 * sqrt(2.0 * (double)d_in / (double)d_sae));
    for (int64_t j = 0; j < d_sae; j++) sae.p[SAEFW_B_ENC][j] = bias;
    float *x = malloc(sizeof(float) * (size_t)(B * d_in));
    saefw_sae_step *w = NULL;
    if (!x || saefw_sae_step_alloc(&w, &sae, B, err, sizeof err) != 0) {
        fprintf(stderr, "bench_dist: %s\n", x ? err : "out of memory");
        saefw_dist_abort(1);
    }
    for (int64_t k = 0; k < B * d_in; k++) x[k] = (float)saefw_rng_normal(&rng);
    saefw_sae_step_set_norm_rows(w, B);
    const int64_t r0 = B * r / P, rows = B * (r + 1) / P - r0;
    double sum[3] = {0, 0, 0}, l0 = 0; /* compute, wait, comm */
    int failed = 0;
    for (int64_t s = -1; s < steps; s++) { /* step -1 warms up */
        saefw_sae_stats st;
        const double t0 = saefw_now();
        saefw_sae_train_step(&sae, w, x + r0 * d_in, rows, &st);
        const double t1 = saefw_now();
        if ((failed = saefw_dist_barrier(err, sizeof err) != 0)) break;
        const double t2 = saefw_now();
        if ((failed = saefw_dist_sum_f32(sae.grads, (int64_t)sae.n_total, err, sizeof err) != 0)) break;
        const double t3 = saefw_now();
        double t[3] = {t1 - t0, t2 - t1, t3 - t2};
        /* The slowest rank's compute sets the step: the max over ranks, by the exact max of integers. */
        int64_t us[3] = {(int64_t)(t[0] * 1e6), (int64_t)(t[1] * 1e6), (int64_t)(t[2] * 1e6)};
        if ((failed = saefw_dist_max_i64(us, 3, err, sizeof err) != 0)) break;
        if (s >= 0)
            for (int k = 0; k < 3; k++) sum[k] += (double)us[k] * 1e-6;
        l0 = st.l0;
    }
    if (failed) {
        fprintf(stderr, "bench_dist: %s\n", err);
        saefw_dist_abort(1);
    }
    if (r == 0) {
        const double c = sum[0] / (double)steps, wt = sum[1] / (double)steps, m = sum[2] / (double)steps;
        const double step = c + m, bytes = 4.0 * (double)sae.n_total;
        printf("bench_dist: d_in %lld, d_sae %lld, global batch %lld; %d rank(s) x %d thread(s); L0 of rank 0's rows "
               "%.1f\n",
               (long long)d_in, (long long)d_sae, (long long)B, P, saefw_threads(), l0);
        printf("  per step (mean of %lld): compute %.3f s (slowest rank; wait for it %.3f s), gradient sum %.3f s "
               "(%.0f MB per rank), step %.3f s, %.0f tokens/s, communication %.1f %%\n",
               (long long)steps, c, wt, m, bytes / 1e6, step, (double)B / step, step > 0 ? 100.0 * m / step : 0.0);
        printf("RESULT ranks=%d threads=%d compute_s=%.4f comm_s=%.4f step_s=%.4f tokens_per_s=%.1f bytes=%.0f\n", P,
               saefw_threads(), c, m, step, (double)B / step, bytes);
    }
    free(x);
    saefw_sae_step_free(w);
    saefw_sae_free(&sae);
    saefw_dist_finalize();
    return 0;
}
