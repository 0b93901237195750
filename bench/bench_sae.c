/* bench_sae: the cost of one SAE training step against the one dense product it cannot avoid. For
 * each shape (the seed's d_in 2048, d_sae 16384, batch 4096, and a small one) and each L0 (about 32,
 * 128 and d_sae / 2, set through b_enc), prints the time of the step's parts called directly, the time
 * of a full step through the real training loop with the adam plugin loaded like any run loads it,
 * tokens/s, the time of one OpenBLAS sgemm of the encoder's shape and the ratio of the two, then the
 * peak RSS against 4 x the SAE's parameter bytes. The sgemm runs between the training steps, and each
 * step is compared with the sgemms just before and after it (the median of those ratios is printed).
 * Each time is the fastest of the timed repetitions, since other programs on the machine only ever add
 * time; CPU seconds are printed beside, as they change less when other programs compete for the cores.
 * RESULT lines are for bench/compare.sh.
 *
 * --enc_dtype bf16 or fp16 times the step with mixed-precision products (sae_lowp.h); the sgemm it is
 * compared with stays fp32.
 *
 * --arch relu,topk,... times each architecture in turn (issue 16; default relu): for topk and
 * batchtopk each L0 target is k; for jumprelu it sets the threshold, for gated b_gate, as b_enc does for
 * relu. AuxK costs nothing in those steps: no latent goes dead within them. --dead F (topk, batchtopk)
 * also times the step's forward and backward pass, called directly, with a fraction F of the latents
 * forced dead (AuxK's reconstruction, k_aux = d_in / 2 a row) against none dead.
 *
 *   bench_sae [--small | --full] [--reps N] [--threads N] [--path auto|dense|sparse] [--l0 a,b,...]
 *             [--enc_dtype fp32|bf16|fp16] [--arch relu,topk,batchtopk,jumprelu,gated]
 *             [--dead F]
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "parallel.h"
#include "plugin_loader.h"
#include "rng.h"
#include "sae.h"
#include "sae_arch.h"
#include "sae_kernels.h"
#include "source.h"
#include "train.h"
#include "util.h"

typedef struct {
    const char *name;
    int64_t d_in, d_sae, B;
} shape;

#define MAX_L0 8
#define MAX_STEPS 64

typedef struct {
    int small_only;
    int full_only;
    int reps;    /* timed repetitions of each measurement (after one warm-up); 0: 3 small, 1 full */
    int threads; /* 0: the default (OPENBLAS_NUM_THREADS, else all cores) */
    saefw_sae_path path;
    saefw_enc_dtype enc_dtype;
    double l0[MAX_L0]; /* targets; <= 0 means d_sae / 2 */
    int n_l0;
    saefw_sae_arch arch[SAEFW_ARCH_COUNT];
    int n_arch;
    double dead; /* AuxK: the fraction of latents forced dead (0: not timed) */
} bench_opts;

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* A value that about a fraction p of the n entries of pre exceed, from a random sample of them. */
static float upper_quantile(const float *pre, int64_t n, double p, saefw_rng *rng, float *sample, int64_t n_sample) {
    for (int64_t k = 0; k < n_sample; k++) sample[k] = pre[saefw_rng_below(rng, (uint64_t)n)];
    qsort(sample, (size_t)n_sample, sizeof(float), cmp_float);
    int64_t at = (int64_t)((1.0 - p) * (double)n_sample);
    if (at >= n_sample) at = n_sample - 1;
    return sample[at];
}

/* CPU seconds of all the process's threads: unlike wall time, little changed by other programs
 * competing for the cores. */
static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double peak_rss_bytes(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss * 1024.0;
}

/* The reference: one cblas_sgemm of the encoder's shape on OpenBLAS's own threads. */
static void reference_sgemm(const float *A, const float *W, float *C, int64_t B, int64_t d_in, int64_t d_sae) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)B, (int)d_sae, (int)d_in, 1.0f, A, (int)d_in, W,
                (int)d_sae, 0.0f, C, (int)d_sae);
}

/* The training loop is fed the same batch each step and timed at each step's log event. Between two
 * steps, the reference sgemm of the encoder's shape runs and is timed too, so that each step is
 * compared with the products timed just before and after it: the host's speed drifts by 30% over
 * minutes, and a ratio of two figures taken minutes apart drifts with it. */
typedef struct {
    const float *x;
    int64_t B, d, d_sae;
    const float *W; /* the SAE's W_enc, read between steps */
    float *C;       /* the reference product's output [B, d_sae] */
    int n, total;
    double t[MAX_STEPS], cpu[MAX_STEPS], l0[MAX_STEPS];
    double start[MAX_STEPS], start_cpu[MAX_STEPS]; /* when each step began: after the previous sgemm */
    double gemm[MAX_STEPS], gemm_cpu[MAX_STEPS];   /* the sgemm after each step */
} feed;

static int feed_batch(void *ud, float *out, int64_t B, char *err, size_t errlen) {
    feed *f = ud;
    memcpy(out, f->x, sizeof(float) * (size_t)(B * f->d));
    return 0;
}

/* Stops the run after the last timed step, before its final evaluation and checkpoint. */
static int feed_event(void *ud, saefw_event event, const saefw_metrics *m, char *err, size_t errlen) {
    feed *f = ud;
    if (event != SAEFW_EVENT_LOG || f->n >= MAX_STEPS) return SAEFW_EVENT_GO_ON;
    const int n = f->n;
    f->t[n] = saefw_now();
    f->cpu[n] = cpu_now();
    f->l0[n] = m->l0;
    reference_sgemm(f->x, f->W, f->C, f->B, f->d, f->d_sae);
    f->start[n + 1] = saefw_now();
    f->start_cpu[n + 1] = cpu_now();
    f->gemm[n] = f->start[n + 1] - f->t[n];
    f->gemm_cpu[n] = f->start_cpu[n + 1] - f->cpu[n];
    return ++f->n < f->total ? SAEFW_EVENT_GO_ON : SAEFW_EVENT_STOP;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* What train_steps measured over steps 1..n-1 (step 0 also touches the optimizer's fresh state). */
typedef struct {
    double step_s, step_cpu;          /* the fastest step, as other programs only ever add time */
    double gemm_s;                    /* the fastest of the sgemms run between the steps */
    double ratio, ratio_lo, ratio_hi; /* step / the mean of the sgemms just before and after it: median, range */
    double cpu_ratio;                 /* the same in CPU seconds: median */
    double l0;
} step_figures;

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int train_steps(saefw_sae *sae, const float *x, float *C, int64_t B, saefw_loaded_plugin *adam, saefw_opts *opts,
                       saefw_source *eval, int reps, step_figures *out, char *err, size_t errlen) {
    feed f = {.x = x, .B = B, .d = sae->d_in, .d_sae = sae->d_sae, .W = sae->p[SAEFW_W_ENC], .C = C, .total = 1 + reps};
    saefw_train_opts o;
    memset(&o, 0, sizeof o);
    o.sae = sae;
    o.next_batch = feed_batch;
    o.next_batch_ud = &f;
    o.batch_size = B;
    o.eval_source = eval;
    o.steps = f.total + 1;
    o.optimizer.plugin = adam;
    o.optimizer.opts = opts;
    o.log_every = 1;
    o.progress = 0;
    o.on_event = feed_event;
    o.event_ud = &f;
    saefw_train_result res;
    int rc = saefw_train(&o, &res, err, errlen);
    if (f.n < f.total) {
        if (rc == 0) snprintf(err, errlen, "the training loop stopped after %d steps", f.n);
        return -1;
    }
    out->step_s = out->gemm_s = out->ratio_lo = INFINITY;
    out->step_cpu = out->ratio_hi = 0;
    double ratio[MAX_STEPS], cpu_ratio[MAX_STEPS];
    int nr = 0;
    for (int k = 1; k < f.n; k++) {
        const double s = f.t[k] - f.start[k], c = f.cpu[k] - f.start_cpu[k];
        if (s < out->step_s) {
            out->step_s = s;
            out->step_cpu = c;
        }
        out->gemm_s = fmin(out->gemm_s, f.gemm[k]);
        ratio[nr] = s / (0.5 * (f.gemm[k - 1] + f.gemm[k]));
        out->ratio_lo = fmin(out->ratio_lo, ratio[nr]);
        out->ratio_hi = fmax(out->ratio_hi, ratio[nr]);
        cpu_ratio[nr++] = c / (0.5 * (f.gemm_cpu[k - 1] + f.gemm_cpu[k]));
    }
    out->ratio = median(ratio, nr);
    out->cpu_ratio = median(cpu_ratio, nr);
    out->l0 = f.l0[f.n - 1];
    return 0;
}

/* The fastest of reps calls (after one that also faults C's pages in), and its CPU seconds: the
 * reference sgemm, or (blocks) the step's own product, fixed blocks on the pool. */
static double time_sgemm(const float *A, const float *W, float *C, int64_t B, int64_t d_in, int64_t d_sae, int reps,
                         int blocks, double *cpu) {
    double best = INFINITY;
    for (int r = 0; r < reps + 1; r++) {
        double t = saefw_now(), c = cpu_now();
        if (blocks) saefw_sgemm_blocks(CblasNoTrans, CblasNoTrans, B, d_sae, d_in, A, d_in, W, d_sae, 0.0f, C, d_sae);
        else reference_sgemm(A, W, C, B, d_in, d_sae);
        t = saefw_now() - t;
        c = cpu_now() - c;
        if (r > 0 && t < best) {
            best = t;
            *cpu = c;
        }
    }
    return best;
}

/* The SAE's L0 near target: the encoder bias (relu, gated's gate), k (topk, batchtopk) or the threshold
 * (jumprelu); thresh is the encoder product's value that about target of d_sae entries a row exceed. */
static void set_l0(saefw_sae *sae, double target, float thresh) {
    const saefw_sae_arch a = sae->arch.arch;
    for (int64_t j = 0; j < sae->d_sae; j++) {
        sae->p[SAEFW_B_ENC][j] = a == SAEFW_ARCH_RELU || a == SAEFW_ARCH_GATED ? -thresh : 0.0f;
        if (a == SAEFW_ARCH_JUMPRELU) sae->p[SAEFW_LOG_THRESHOLD][j] = logf(thresh > 1e-3f ? thresh : 1e-3f);
    }
    if (a == SAEFW_ARCH_TOPK || a == SAEFW_ARCH_BATCHTOPK) sae->arch.k = (int64_t)target;
}

/* AuxK's cost: the generic path's forward and backward pass, called directly, with every latent whose
 * index crosses a multiple of 1 / dead forced dead, against none; the fastest of reps (after a warm-up). */
static int time_auxk(saefw_sae *sae, const float *x, int64_t B, double dead, saefw_sae_path path, int reps, char *err,
                     size_t errlen) {
    saefw_arch_work *aw = NULL;
    unsigned char *mask = calloc((size_t)sae->d_sae, 1);
    if (!mask) return saefw_errf(err, errlen, "out of memory");
    if (saefw_arch_work_alloc(&aw, sae, B, path, err, errlen) != 0) {
        free(mask);
        return -1;
    }
    int64_t n_dead = 0;
    for (int64_t j = 0; j < sae->d_sae; j++) {
        mask[j] = (int64_t)((double)(j + 1) * dead) != (int64_t)((double)j * dead);
        n_dead += mask[j];
    }
    double t[2] = {INFINITY, INFINITY}, c[2] = {0, 0};
    for (int with = 0; with < 2; with++) {
        saefw_arch_force_dead(aw, with ? mask : NULL);
        for (int r = 0; r < reps + 1; r++) {
            saefw_sae_stats st;
            const double t0 = saefw_now(), c0 = cpu_now();
            saefw_arch_train_step(sae, aw, x, B, &st);
            const double dt = saefw_now() - t0, dc = cpu_now() - c0;
            if (r > 0 && dt < t[with]) {
                t[with] = dt;
                c[with] = dc;
            }
        }
    }
    saefw_arch_force_dead(aw, NULL);
    saefw_arch_work_free(aw);
    free(mask);
    printf("   AuxK, %lld of %lld latents dead (k_aux %lld): fwd+bwd %.3f s, %.3f CPU-s; none dead %.3f s, %.3f CPU-s "
           "(CPU ratio %.3f)\n",
           (long long)n_dead, (long long)sae->d_sae, (long long)sae->arch.k_aux, t[1], c[1], t[0], c[0], c[1] / c[0]);
    printf("RESULT auxk arch=%s k=%lld dead=%lld with_s=%.4f with_cpu_s=%.4f without_s=%.4f without_cpu_s=%.4f\n",
           saefw_sae_arch_name(sae->arch.arch), (long long)sae->arch.k, (long long)n_dead, t[1], c[1], t[0], c[0]);
    return 0;
}

static int run_shape(const shape *s, const bench_opts *bo, saefw_sae_arch arch, int reps, saefw_loaded_plugin *adam,
                     saefw_opts *opts, char *err, size_t errlen) {
    const int64_t d_in = s->d_in, d_sae = s->d_sae, B = s->B;
    saefw_sae sae;
    saefw_sae_step *w = NULL;
    float *x = NULL, *sample = NULL, *C = NULL;
    saefw_source *eval = NULL;
    int rc = -1;
    saefw_sae_arch_cfg cfg;
    saefw_sae_arch_defaults(&cfg, arch, d_in);
    if (saefw_sae_alloc_arch(&sae, d_in, d_sae, 3e-4f, &cfg, err, errlen) != 0) return -1;
    sae.enc_dtype = bo->enc_dtype;
    saefw_rng rng;
    saefw_rng_seed(&rng, SAEFW_DEFAULT_SEED);
    saefw_sae_init_params(&sae, &rng);
    const int64_t n_sample = 1 << 20;
    x = saefw_malloc(sizeof(float) * (size_t)(B * d_in), err, errlen);
    sample = x ? saefw_malloc(sizeof(float) * (size_t)n_sample, err, errlen) : NULL;
    if (!sample) goto done;
    for (int64_t k = 0; k < B * d_in; k++) x[k] = (float)saefw_rng_normal(&rng);
    saefw_synthetic_opts so = {d_in, 8, 0.1, 1.0, 1};
    if (saefw_source_synthetic(&so, &eval, err, errlen) != 0) goto done;

    printf("\n== shape %s: d_in %lld, d_sae %lld, batch %lld; arch %s; %d threads; %d timed reps\n", s->name,
           (long long)d_in, (long long)d_sae, (long long)B, saefw_sae_arch_name(arch), saefw_threads(), reps);
    /* The encoder product alone, on the step's own buffers; its output also sets the L0 targets. Its
     * output, [B, d_sae], is the bench's own (the step keeps no array of that size). */
    C = saefw_malloc(sizeof(float) * (size_t)(B * d_sae), err, errlen);
    if (!C) goto done;
    double c_gemm = 0, c_blocks = 0;
    const double t_gemm = time_sgemm(x, sae.p[SAEFW_W_ENC], C, B, d_in, d_sae, reps, 0, &c_gemm);
    const double t_blocks = time_sgemm(x, sae.p[SAEFW_W_ENC], C, B, d_in, d_sae, reps, 1, &c_blocks);
    const double gflop = 2.0 * (double)B * (double)d_in * (double)d_sae * 1e-9;
    printf("encoder sgemm %lld x %lld x %lld: %.3f s (%.1f GFLOP/s), %.3f CPU-s\n", (long long)B, (long long)d_in,
           (long long)d_sae, t_gemm, gflop / t_gemm, c_gemm);
    printf("the same product as the step runs it (fixed blocks on the pool): %.3f s (%.1f GFLOP/s), %.3f CPU-s\n",
           t_blocks, gflop / t_blocks, c_blocks);
    printf("RESULT shape=%s gemm_s=%.4f gemm_cpu_s=%.4f blocks_s=%.4f\n", s->name, t_gemm, c_gemm, t_blocks);
    float thresh[MAX_L0];
    double target[MAX_L0];
    for (int i = 0; i < bo->n_l0; i++) {
        target[i] = bo->l0[i] > 0 ? bo->l0[i] : (double)d_sae / 2;
        thresh[i] = upper_quantile(C, B * d_sae, target[i] / (double)d_sae, &rng, sample, n_sample);
    }

    printf("step/gemm: each step over the mean of the sgemms timed just before and after it; median (range)\n");
    printf("%8s %8s %6s | %8s %8s | %8s %9s %8s | %21s %10s | %9s\n", "L0 want", "L0", "path", "fwd+bwd s", "proj s",
           "step s", "tokens/s", "gemm s", "step/gemm", "efficiency", "CPU ratio");
    for (int i = 0; i < bo->n_l0; i++) {
        set_l0(&sae, target[i], thresh[i]);
        /* The step's parts, called directly. */
        if (saefw_sae_step_alloc(&w, &sae, B, err, errlen) != 0) goto done;
        double tfb = INFINITY, tp = INFINITY;
        saefw_sae_stats st;
        for (int r = 0; r < reps + 1; r++) {
            double t0 = saefw_now();
            saefw_sae_train_step(&sae, w, x, B, &st);
            double t1 = saefw_now();
            saefw_sae_project_decoder(&sae);
            double t2 = saefw_now();
            if (r == 0) continue; /* warm-up: first touch of the scratch pages */
            tfb = fmin(tfb, t1 - t0);
            tp = fmin(tp, t2 - t1);
        }
        const char *path = saefw_sae_step_path(w) == SAEFW_SAE_SPARSE ? "sparse" : "dense";
        saefw_sae_step_free(w);
        w = NULL;
        /* A full step through the training loop: batch copy, forward, backward, projection, Adam, metrics. */
        step_figures sf;
        if (train_steps(&sae, x, C, B, adam, opts, eval, reps, &sf, err, errlen) != 0) goto done;
        const double tps = (double)B / sf.step_s;
        printf("%8.0f %8.1f %6s | %8.3f %8.3f | %8.3f %9.0f %8.3f | %7.3f (%.3f-%.3f) %10.3f | %9.3f\n", target[i],
               st.l0, path, tfb, tp, sf.step_s, tps, sf.gemm_s, sf.ratio, sf.ratio_lo, sf.ratio_hi, 1.0 / sf.ratio,
               sf.cpu_ratio);
        printf("RESULT shape=%s%s%s l0_target=%.0f l0=%.1f path=%s step_s=%.4f tokens_per_s=%.1f gemm_s=%.4f "
               "step_cpu_s=%.4f ratio=%.4f ratio_lo=%.4f ratio_hi=%.4f cpu_ratio=%.4f\n",
               s->name,
               arch == SAEFW_ARCH_RELU ? "" : " arch=", arch == SAEFW_ARCH_RELU ? "" : saefw_sae_arch_name(arch),
               target[i], sf.l0, path, sf.step_s, tps, sf.gemm_s, sf.step_cpu, sf.ratio, sf.ratio_lo, sf.ratio_hi,
               sf.cpu_ratio);
        printf("   (Adam, batch copy and metrics: about %.3f s; peak RSS so far %.2f GiB)\n", sf.step_s - (tfb + tp),
               peak_rss_bytes() / (1 << 30));
        if (bo->dead > 0 && (arch == SAEFW_ARCH_TOPK || arch == SAEFW_ARCH_BATCHTOPK) &&
            time_auxk(&sae, x, B, bo->dead, bo->path, reps, err, errlen) != 0)
            goto done;
        fflush(stdout);
    }
    const double param_bytes = (double)sae.n_total * sizeof(float);
    printf("peak RSS %.2f GiB; 4 x parameter bytes %.2f GiB (ratio %.2f)\n", peak_rss_bytes() / (1 << 30),
           4 * param_bytes / (1 << 30), peak_rss_bytes() / (4 * param_bytes));
    rc = 0;
done:
    free(C);
    saefw_sae_step_free(w);
    saefw_source_free(eval);
    free(sample);
    free(x);
    saefw_sae_free(&sae);
    return rc;
}

static int parse_args(int argc, char **argv, bench_opts *bo) {
    bo->n_l0 = 3;
    bo->l0[0] = 32;
    bo->l0[1] = 128;
    bo->l0[2] = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--small") == 0) bo->small_only = 1;
        else if (strcmp(a, "--full") == 0) bo->full_only = 1;
        else if (strcmp(a, "--reps") == 0 && v) bo->reps = atoi(argv[++i]);
        else if (strcmp(a, "--threads") == 0 && v) bo->threads = atoi(argv[++i]);
        else if (strcmp(a, "--enc_dtype") == 0 && v) {
            char err[256];
            if (saefw_enc_dtype_parse(argv[++i], &bo->enc_dtype, err, sizeof err) != 0)
                return fprintf(stderr, "bench_sae: --%s\n", err), -1;
        } else if (strcmp(a, "--arch") == 0 && v) {
            i++;
            bo->n_arch = 0;
            for (char *p = argv[i]; *p && bo->n_arch < SAEFW_ARCH_COUNT;) {
                char name[32], err[256];
                size_t n = strcspn(p, ",");
                snprintf(name, sizeof name, "%.*s", (int)(n < 31 ? n : 31), p);
                if (saefw_sae_arch_parse(name, &bo->arch[bo->n_arch++], err, sizeof err) != 0)
                    return fprintf(stderr, "bench_sae: --%s\n", err), -1;
                p += n + (p[n] == ',');
            }
        } else if (strcmp(a, "--dead") == 0 && v) {
            bo->dead = atof(argv[++i]);
            if (!(bo->dead > 0 && bo->dead <= 1))
                return fprintf(stderr, "bench_sae: --dead takes a fraction in (0, 1]\n"), -1;
        } else if (strcmp(a, "--path") == 0 && v) {
            i++;
            if (strcmp(v, "auto") == 0) bo->path = SAEFW_SAE_AUTO;
            else if (strcmp(v, "dense") == 0) bo->path = SAEFW_SAE_DENSE;
            else if (strcmp(v, "sparse") == 0) bo->path = SAEFW_SAE_SPARSE;
            else return fprintf(stderr, "bench_sae: --path takes auto, dense or sparse\n"), -1;
        } else if (strcmp(a, "--l0") == 0 && v) {
            i++;
            bo->n_l0 = 0;
            for (char *p = argv[i]; *p && bo->n_l0 < MAX_L0;) {
                char *end;
                bo->l0[bo->n_l0++] = strtod(p, &end);
                if (end == p) return fprintf(stderr, "bench_sae: --l0 takes numbers separated by commas\n"), -1;
                p = *end == ',' ? end + 1 : end;
            }
        } else {
            fprintf(stderr, "usage: bench_sae [--small | --full] [--reps N] [--threads N] [--path auto|dense|sparse] "
                            "[--l0 a,b,...] [--enc_dtype fp32|bf16|fp16] [--arch relu,topk,...] [--dead F]\n");
            return -1;
        }
    }
    if (bo->small_only && bo->full_only)
        return fprintf(stderr, "bench_sae: --small and --full exclude each other\n"), -1;
    if (bo->reps < 0 || bo->reps > MAX_STEPS - 2)
        return fprintf(stderr, "bench_sae: --reps must be in 1..%d\n", MAX_STEPS - 2), -1;
    return 0;
}

int main(int argc, char **argv) {
    bench_opts bo;
    memset(&bo, 0, sizeof bo);
    if (parse_args(argc, argv, &bo) != 0) return 2;
    if (bo.threads > 0) saefw_set_threads(bo.threads);
    saefw_sae_set_path(bo.path);
    char err[1024];
    saefw_loaded_plugin *adam = NULL;
    saefw_opts *opts = NULL;
    if (saefw_plugin_load("adam", saefw_host_table(), &adam, err, sizeof err) != 0 ||
        saefw_opts_new(adam, &opts, err, sizeof err) != 0 ||
        /* A tiny learning rate keeps L0 where b_enc put it across the timed steps. */
        saefw_opts_set_number(opts, adam, "lr", 1e-7, err, sizeof err) != 0) {
        fprintf(stderr, "bench_sae: %s\n", err);
        return 1;
    }
    printf("saefw bench_sae: %d threads, OpenBLAS %s, SAE path %s, enc_dtype %s (kernel %s)\n", saefw_threads(),
           openblas_get_config(),
           bo.path == SAEFW_SAE_DENSE    ? "forced dense"
           : bo.path == SAEFW_SAE_SPARSE ? "forced sparse"
                                         : "auto",
           saefw_enc_dtype_name(bo.enc_dtype), saefw_lowp_kernel(bo.enc_dtype));
    static const shape SHAPES[2] = {{"small", 512, 4096, 1024}, {"full", 2048, 16384, 4096}};
    int rc = 0;
    if (bo.n_arch == 0) bo.arch[bo.n_arch++] = SAEFW_ARCH_RELU;
    for (int k = bo.full_only ? 1 : 0; k < (bo.small_only ? 1 : 2) && rc == 0; k++)
        for (int a = 0; a < bo.n_arch && rc == 0; a++)
            if (run_shape(&SHAPES[k], &bo, bo.arch[a],
                          bo.reps > 0 ? bo.reps
                          : k == 0    ? 3
                                      : 1,
                          adam, opts, err, sizeof err) != 0) {
                fprintf(stderr, "bench_sae: %s: %s\n", SHAPES[k].name, err);
                rc = 1;
            }
    saefw_opts_free(opts);
    saefw_plugin_unload(adam);
    return rc;
}
