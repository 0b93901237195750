/* bench_dist: a data-parallel training step at the seed's shape (d_in 2048, d_sae 16384, global batch
 * 4096; b_enc set for an L0 near 64): each rank's SAE step on its rows, the gradient sum across ranks
 * (engine/dist.c, in the trainer's layout: a reduce-scatter and an all-gather), the decoder projection
 * and an Adam update (elementwise, the adam plugin's arithmetic). With --zero, ZeRO-1 as the trainer
 * runs it: reduce-scatter, the projection and Adam on this rank's range only (moments for that range
 * alone), all-gather of the weights. Prints per step the compute time (slowest rank), the wait for it,
 * the communication, the optimizer, tokens/s, the communication share, CPU seconds per step (all ranks)
 * and the largest peak resident memory of a rank. Run it alone and under mpirun to compare, on this
 * machine, 1 rank x 2 threads with 2 ranks x 1 thread, each with and without --zero:
 *   bench_dist --threads 2
 *   mpirun -np 2 bench_dist --threads 1 [--zero]
 *   bench_dist [--small] [--steps N] [--threads N] [--zero]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist.h"
#include "memory.h"
#include "parallel.h"
#include "rng.h"
#include "sae.h"
#include "train_internal.h"
#include "util.h"

typedef struct {
    float *w, *g, *m, *v;
    float bc2, step;
} adam_ctx;

/* torch.optim.Adam's update, as plugins/adam computes it (betas 0.9, 0.999, eps 1e-8). */
static void adam_range(void *vctx, int64_t k0, int64_t k1) {
    const adam_ctx *a = vctx;
    for (int64_t k = k0; k < k1; k++) {
        const float g = a->g[k];
        const float m = a->m[k] * 0.9f + 0.1f * g, v = a->v[k] * 0.999f + 0.001f * g * g;
        a->w[k] = a->w[k] + a->step * m / (sqrtf(v) / a->bc2 + 1e-8f);
        a->m[k] = m;
        a->v[k] = v;
    }
}

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    char err[512] = "";
    if (saefw_dist_init(&argc, &argv, err, sizeof err) != 0) {
        fprintf(stderr, "bench_dist: %s\n", err);
        return 1;
    }
    int64_t d_in = 2048, d_sae = 16384, B = 4096, steps = 4;
    int zero = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--small")) d_in = 256, d_sae = 2048, B = 1024;
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) saefw_set_threads(atoi(argv[++i]));
        else if (!strcmp(argv[i], "--zero")) zero = 1;
        else {
            fprintf(stderr, "bench_dist: unknown argument '%s' (--small, --steps N, --threads N, --zero)\n", argv[i]);
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
    const int64_t n = (int64_t)sae.n_total;
    int64_t *b = malloc(sizeof(int64_t) * (size_t)(P + 1));
    if (b) saefw_train_zero_layout(&sae, P, b);
    /* The range this rank updates: everything without --zero. W_dec rows of it for the projection. */
    const int64_t lo = zero && b ? b[r] : 0, hi = zero && b ? b[r + 1] : n;
    const int64_t dec0 = sae.p[SAEFW_W_DEC] - sae.params, dec_n = d_sae * d_in;
    int64_t dr0 = (lo > dec0 ? lo : dec0) - dec0, dr1 = (hi < dec0 + dec_n ? hi : dec0 + dec_n) - dec0;
    dr0 = dr0 < 0 ? 0 : dr0 / d_in;
    dr1 = dr1 < 0 ? 0 : dr1 / d_in;
    float *x = malloc(sizeof(float) * (size_t)(B * d_in));
    float *m = calloc((size_t)(hi - lo + 1), sizeof(float)), *v = calloc((size_t)(hi - lo + 1), sizeof(float));
    saefw_sae_step *w = NULL;
    if (!x || !b || !m || !v || saefw_sae_step_alloc(&w, &sae, B, err, sizeof err) != 0) {
        fprintf(stderr, "bench_dist: %s\n", x && b && m && v ? err : "out of memory");
        saefw_dist_abort(1);
    }
    for (int64_t k = 0; k < B * d_in; k++) x[k] = (float)saefw_rng_normal(&rng);
    saefw_sae_step_set_norm_rows(w, B);
    const int64_t r0 = B * r / P, rows = B * (r + 1) / P - r0;
    double sum[4] = {0, 0, 0, 0}, l0 = 0, cpu = 0; /* compute, wait, comm, optimizer */
    int failed = 0;
    for (int64_t s = -1; s < steps; s++) { /* step -1 warms up */
        saefw_sae_stats st;
        const double c0 = cpu_now(), t0 = saefw_now();
        saefw_sae_train_step(&sae, w, x + r0 * d_in, rows, &st);
        const double t1 = saefw_now();
        if ((failed = saefw_dist_barrier(err, sizeof err) != 0)) break;
        const double t2 = saefw_now();
        if ((failed = saefw_dist_reduce_scatter_f32(sae.grads, n, b, err, sizeof err) != 0)) break;
        if (!zero && (failed = saefw_dist_all_gather_f32(sae.grads, n, b, err, sizeof err) != 0)) break;
        const double t3 = saefw_now();
        saefw_sae_project_decoder_rows(&sae, dr0, dr1);
        adam_ctx a = {sae.params + lo,
                      sae.grads + lo,
                      m,
                      v,
                      (float)sqrt(1.0 - pow(0.999, (double)(s + 2))),
                      (float)(-1e-4 / (1.0 - pow(0.9, (double)(s + 2))))};
        saefw_parallel_for(hi - lo, adam_range, &a);
        const double t4 = saefw_now();
        if (zero && (failed = saefw_dist_all_gather_f32(sae.params, n, b, err, sizeof err) != 0)) break;
        const double t5 = saefw_now();
        double t[4] = {t1 - t0, t2 - t1, (t3 - t2) + (t5 - t4), t4 - t3};
        /* The slowest rank's compute sets the step: the max over ranks, by the exact max of integers. */
        int64_t us[4] = {(int64_t)(t[0] * 1e6), (int64_t)(t[1] * 1e6), (int64_t)(t[2] * 1e6), (int64_t)(t[3] * 1e6)};
        if ((failed = saefw_dist_max_i64(us, 4, err, sizeof err) != 0)) break;
        if (s >= 0) {
            for (int k = 0; k < 4; k++) sum[k] += (double)us[k] * 1e-6;
            cpu += cpu_now() - c0;
        }
        l0 = st.l0;
    }
    double cpu_all[1] = {cpu};
    int64_t peak[1] = {saefw_mem_peak()};
    if (!failed) failed = saefw_dist_sum_f64(cpu_all, 1, err, sizeof err) != 0;
    if (!failed) failed = saefw_dist_max_i64(peak, 1, err, sizeof err) != 0;
    if (failed) {
        fprintf(stderr, "bench_dist: %s\n", err);
        saefw_dist_abort(1);
    }
    if (r == 0) {
        const double c = sum[0] / (double)steps, wt = sum[1] / (double)steps, cm = sum[2] / (double)steps,
                     op = sum[3] / (double)steps;
        const double step = c + cm + op, bytes = 4.0 * (double)sae.n_total;
        char pk[32];
        printf("bench_dist: d_in %lld, d_sae %lld, global batch %lld; %d rank(s) x %d thread(s)%s; L0 of rank 0's "
               "rows %.1f\n",
               (long long)d_in, (long long)d_sae, (long long)B, P, saefw_threads(), zero ? ", ZeRO-1" : "", l0);
        printf("  per step (mean of %lld): compute %.3f s (slowest rank; wait for it %.3f s), communication %.3f s "
               "(%.0f MB of gradients per rank), optimizer %.3f s, step %.3f s, %.0f tokens/s, communication %.1f %%; "
               "CPU %.3f s per step (all ranks); peak resident %s per rank\n",
               (long long)steps, c, wt, cm, bytes / 1e6, op, step, (double)B / step, step > 0 ? 100.0 * cm / step : 0.0,
               cpu_all[0] / (double)steps, saefw_mem_fmt((double)peak[0], pk, sizeof pk));
        printf("RESULT ranks=%d threads=%d zero=%d compute_s=%.4f comm_s=%.4f opt_s=%.4f step_s=%.4f tokens_per_s=%.1f "
               "cpu_s=%.4f peak_rss=%lld bytes=%.0f\n",
               P, saefw_threads(), zero, c, cm, op, step, (double)B / step, cpu_all[0] / (double)steps,
               (long long)peak[0], bytes);
    }
    free(m);
    free(v);
    free(b);
    free(x);
    saefw_sae_step_free(w);
    saefw_sae_free(&sae);
    saefw_dist_finalize();
    return 0;
}
