/* Benchmark of the model host at gelu-1l's shape (random weights): forward tokens/s stopping at
 * blocks.0.mlp.hook_post and the full forward with the loss; the share of a training step that the
 * buffer refill costs in a real training run at the seed's shape (batch 4096, SAE 2048 -> 16384, L0
 * about 128), and beside it the share that reading those tokens from a token cache takes (a flat
 * uint16 .npy written here, shuffled rows of 128 as the refills read them; bench_tokens_read.h); with
 * --rss, a run with the seed's whole buffer and its peak RSS against buffer + 4 x the SAE's parameter
 * bytes + 10%. Beside the forward's figures, the machine's bound measured in the same run: OpenBLAS's
 * sgemm rate at each of the forward's product shapes (on 1 and 2 threads, and as the engine's fixed grid
 * of single-threaded calls), the forward's FLOPs per token, and the tokens/s that the products alone
 * would allow at the best of those rates.
 *   build/bin/bench_model [--reps N] [--forward-only | --forwards | --refill] [--no-bound] [--rss]
 * (figures printed, nothing asserted; --forward-only: the forward to hook_post alone, --forwards: both
 * forwards, no training run; --refill: a buffer fill of one seed model batch against the same tokens'
 * plain forwards, and its other parts, side by side in CPU time; --no-bound: without the sgemm
 * measurements) */
#include <cblas.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "model.h"
#include "eval.h"
#include "model_source.h"
#include "parallel.h"
#include "plugin_loader.h"
#include "sae.h"
#include "tensorfile.h"
#include "tokens.h"
#include "train.h"
#include "util.h"

#include "bench_gelu1l.h"
#include "bench_tokens_read.h"

enum {
    D_MODEL = BENCH_D_MODEL,
    D_MLP = BENCH_D_MLP,
    N_HEADS = BENCH_N_HEADS,
    D_HEAD = BENCH_D_HEAD,
    D_VOCAB = BENCH_D_VOCAB
};

static void die(const char *what, const char *err) {
    fprintf(stderr, "bench_model: %s: %s\n", what, err);
    exit(1);
}

static float *randn(saefw_rng *rng, size_t n, float scale) {
    float *p = malloc(sizeof(float) * n);
    if (!p) die("allocation", "out of memory");
    for (size_t i = 0; i < n; i++) p[i] = (float)(scale * saefw_rng_normal(rng));
    return p;
}

/* A token cache as `saefw tokens convert` writes it for gelu-1l's vocabulary: a flat uint16 .npy. */
static void write_token_cache(const char *path, int64_t n) {
    uint16_t *tok = malloc(sizeof(uint16_t) * (size_t)n);
    if (!tok) die("allocation", "out of memory");
    saefw_rng rng;
    saefw_rng_seed(&rng, 3);
    for (int64_t i = 0; i < n; i++) tok[i] = (uint16_t)saefw_rng_below(&rng, D_VOCAB);
    int64_t shape[1] = {n};
    char err[1024];
    if (saefw_npy_write(path, SAEFW_DT_U16, 1, shape, tok, err, sizeof err) != 0) die("writing the token cache", err);
    free(tok);
}

static double peak_rss_bytes(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss * 1024.0;
}

/* Resident set size now (from /proc/self/statm), or 0 where unavailable. */
static double rss_now_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages_total = 0, pages_res = 0;
    if (!f) return 0;
    int ok = fscanf(f, "%ld %ld", &pages_total, &pages_res) == 2;
    fclose(f);
    return ok ? (double)pages_res * (double)sysconf(_SC_PAGESIZE) : 0;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* CPU seconds of the whole process (every thread) so far. */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Where a buffer fill's time goes beyond the forward (issue 19.2): a bf16 buffer of 16 seed batches
 * filled by the model source (one model batch of 512 sequences, forwarded 32 at a time), against the
 * plain forwards of as many sequences in the same loop, the bf16 conversion and scattered writes of
 * those rows, and the shuffle of the seed's buffer order, each in CPU time (least of reps). */
static void refill_parts(saefw_model *m, saefw_tokens *tok, saefw_hook hook, saefw_model_work *w, int reps) {
    char err[1024];
    const int64_t T = 128, B = 32, seqs = 512, rows = seqs * T, d = D_MLP;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(B * T));
    float *acts = malloc(sizeof(float) * (size_t)(B * T * d));
    uint16_t *dst = malloc(sizeof(uint16_t) * (size_t)(rows * d));
    int64_t *perm = malloc(sizeof(int64_t) * (size_t)(4096 * 384));
    if (!ids || !acts || !dst || !perm) die("allocation", "out of memory");
    for (int64_t i = 0; i < 4096 * 384; i++) perm[i] = i;
    double c_fill = 1e30, c_fwd = 1e30, c_conv = 1e30, c_shuf = 1e30, w_fill = 1e30, w_fwd = 1e30;
    saefw_rng rng;
    saefw_rng_seed(&rng, 1);
    for (int r = 0; r < reps; r++) {
        saefw_model_source_opts so = {m, tok, hook, seqs, 1};
        saefw_source *src = NULL;
        saefw_buffer buf;
        if (saefw_source_model(&so, &src, err, sizeof err) != 0) die("source", err);
        double t0 = saefw_now(), c0 = cpu_now();
        if (saefw_buffer_init(&buf, src, rows, 4096, SAEFW_BUF_BF16, 1, err, sizeof err) != 0) die("buffer", err);
        double t1 = saefw_now(), c1 = cpu_now();
        c_fill = c1 - c0 < c_fill ? c1 - c0 : c_fill;
        w_fill = t1 - t0 < w_fill ? t1 - t0 : w_fill;
        saefw_buffer_free(&buf);
        saefw_source_free(src);
        t0 = saefw_now(), c0 = cpu_now();
        for (int64_t s = 0; s < seqs; s += B) {
            if (saefw_tokens_next(tok, ids, B, D_VOCAB, err, sizeof err) != 0) die("tokens", err);
            saefw_forward_opts fo = {.capture = &hook, .capture_out = acts, .stop_after_capture = 1};
            if (saefw_model_forward(m, w, ids, B, T, &fo, err, sizeof err) != 0) die("forward", err);
        }
        t1 = saefw_now(), c1 = cpu_now();
        c_fwd = c1 - c0 < c_fwd ? c1 - c0 : c_fwd;
        w_fwd = t1 - t0 < w_fwd ? t1 - t0 : w_fwd;
        c0 = cpu_now();
        for (int64_t k = 0; k < rows; k++) {
            const float *x = acts + (k % (B * T)) * d;
            uint16_t *o = dst + ((k * 7919) % rows) * d;
            for (int64_t i = 0; i < d; i++) o[i] = saefw_f32_to_bf16(x[i]);
        }
        c1 = cpu_now();
        c_conv = c1 - c0 < c_conv ? c1 - c0 : c_conv;
        c0 = cpu_now();
        saefw_rng_shuffle(&rng, perm, 4096 * 384);
        c1 = cpu_now();
        c_shuf = c1 - c0 < c_shuf ? c1 - c0 : c_shuf;
    }
    printf("  buffer fill of %lld rows (bf16): wall %.3f s, CPU %.3f s = %.1f us per token; plain forwards of as many "
           "sequences: wall %.3f s, CPU %.3f s = %.1f us per token (fill / forwards: wall %.2f, CPU %.2f)\n",
           (long long)rows, w_fill, c_fill, 1e6 * c_fill / (double)rows, w_fwd, c_fwd, 1e6 * c_fwd / (double)rows,
           w_fill / w_fwd, c_fill / c_fwd);
    printf("  of which, measured alone: bf16 conversion and scattered row writes %.3f s CPU (%.1f us per token); "
           "shuffling the seed's buffer order (1572864 rows, once per refill of 786432) %.3f s CPU\n",
           c_conv, 1e6 * c_conv / (double)rows, c_shuf);
    free(perm);
    free(dst);
    free(acts);
    free(ids);
}

/* One product of the forward: C [M, N] = A [M, K] @ B [K, N], `count` times per chunk of M rows. */
typedef struct {
    const char *what;
    int64_t M, N, K;
    double count;
    int in_stop; /* part of the forward that stops after mlp.hook_post */
    double rate; /* best GFLOP/s measured */
} product;

/* Best GFLOP/s of C = A @ B at [M, K] x [K, N] over reps calls: OpenBLAS on `threads` threads, or
 * (grid) saefw's fixed grid of single-threaded calls on saefw's pool, as the forward runs them; and
 * in *cpu_rate (if not NULL) the best GFLOP per CPU second of the process. */
static double sgemm_rate(int64_t M, int64_t N, int64_t K, int threads, int grid, int reps, double *cpu_rate) {
    saefw_rng rng;
    saefw_rng_seed(&rng, 4);
    float *A = randn(&rng, (size_t)(M * K), 1.0f), *B = randn(&rng, (size_t)(K * N), 1.0f);
    float *C = malloc(sizeof(float) * (size_t)(M * N));
    if (!C) die("allocation", "out of memory");
    saefw_set_threads(threads);
    double best = 1e30, best_cpu = 1e30;
    for (int r = 0; r <= reps; r++) { /* the first call is a warm-up */
        const double t0 = saefw_now(), c0 = cpu_now();
        if (grid) saefw_linear_blocks(M, N, K, A, K, B, N, NULL, C, N);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0f, A, (int)K, B, (int)N,
                        0.0f, C, (int)N);
        const double t = saefw_now() - t0, c = cpu_now() - c0;
        if (r > 0 && t < best) best = t;
        if (r > 0 && c < best_cpu) best_cpu = c;
    }
    saefw_set_threads(0);
    free(A);
    free(B);
    free(C);
    const double gflop = 2.0 * (double)M * (double)N * (double)K / 1e9;
    if (cpu_rate) *cpu_rate = gflop / best_cpu;
    return gflop / best;
}

/* The forward's products per chunk of R rows (sequences of T tokens) at gelu-1l's shape, their sgemm
 * rates, and the bound they put on tokens/s: the products' FLOPs at the best measured rate of each,
 * everything else free. Attention's products run one (sequence, head) per task on single-threaded
 * OpenBLAS, so their rate is one thread's times the thread count. */
static void products_bound(int64_t R, int64_t T, int reps, double *stop_tps, double *full_tps, double *stop_cpu,
                           double *full_cpu) {
    const int threads = saefw_threads();
    const int64_t hd = N_HEADS * D_HEAD, vb = (8 << 20) / R; /* the work's vocabulary block */
    product p[] = {
        {"ln1 @ W_qkv", R, 3 * hd, D_MODEL, 1, 1, 0},
        {"q @ k^T (one head)", T, T, D_HEAD, (double)(R / T) * N_HEADS, 1, 0},
        {"pattern @ v (one head)", T, D_HEAD, T, (double)(R / T) * N_HEADS, 1, 0},
        {"z @ W_O", R, D_MODEL, hd, 1, 1, 0},
        {"ln2 @ W_in", R, D_MLP, D_MODEL, 1, 1, 0},
        {"post @ W_out", R, D_MODEL, D_MLP, 1, 0, 0},
        {"ln_final @ W_U block", R, vb, D_MODEL, (double)D_VOCAB / (double)vb, 0, 0},
    };
    const int n = (int)(sizeof p / sizeof p[0]);
    printf("  sgemm GFLOP/s at the forward's product shapes (best of %d; OpenBLAS 1 thread, %d threads, the engine's "
           "grid on %d threads):\n",
           reps, threads, threads);
    double stop_s = 0, full_s = 0, stop_flop = 0, full_flop = 0, stop_c = 0, full_c = 0;
    for (int i = 0; i < n; i++) {
        double one_cpu;
        const double one = sgemm_rate(p[i].M, p[i].N, p[i].K, 1, 0, reps, &one_cpu);
        const int per_task = p[i].M == T;
        const double many = per_task ? one * threads : sgemm_rate(p[i].M, p[i].N, p[i].K, threads, 0, reps, NULL);
        const double grid = per_task ? one * threads : sgemm_rate(p[i].M, p[i].N, p[i].K, threads, 1, reps, NULL);
        p[i].rate = many > grid ? many : grid;
        const double flop = 2.0 * (double)p[i].M * (double)p[i].N * (double)p[i].K * p[i].count;
        printf("    %-24s [%5lld, %5lld] x [%5lld, %5lld] x %6.1f: %6.1f / %6.1f / %6.1f%s\n", p[i].what,
               (long long)p[i].M, (long long)p[i].K, (long long)p[i].K, (long long)p[i].N, p[i].count, one,
               per_task ? one * threads : many, grid, per_task ? " (1 thread x threads)" : "");
        full_s += flop / (p[i].rate * 1e9);
        full_flop += flop;
        full_c += flop / (one_cpu * 1e9);
        if (p[i].in_stop) {
            stop_s += flop / (p[i].rate * 1e9);
            stop_flop += flop;
            stop_c += flop / (one_cpu * 1e9);
        }
    }
    *stop_tps = (double)R / stop_s;
    *full_tps = (double)R / full_s;
    /* CPU seconds per token of the products on one thread's rate (per CPU second): the part of the
     * forward's own CPU time that no change outside the products can remove. */
    *stop_cpu = stop_c / (double)R;
    *full_cpu = full_c / (double)R;
    printf("  FLOPs per token: %.2f M to blocks.0.mlp.hook_post, %.2f M for the full forward (%.1f M of them the "
           "unembedding)\n",
           stop_flop / (double)R / 1e6, full_flop / (double)R / 1e6, 2.0 * D_MODEL * D_VOCAB / 1e6);
    printf("  bound from the products alone at those rates: %.0f tokens/s to hook_post, %.0f tokens/s full; at one "
           "thread's GFLOP per CPU second, %.1f / %.1f CPU us per token\n",
           *stop_tps, *full_tps, 1e6 * *stop_cpu, 1e6 * *full_cpu);
}

/* Times of the training loop's log events (one per step), and the step after which b_enc is set. */
typedef struct {
    saefw_sae *sae;
    const saefw_buffer *buf;
    float bias;          /* b_enc for L0 about the target */
    int64_t dense_steps; /* steps at the seed's initialisation before b_enc is set */
    int n;
    double t[4096];
    double l0[4096];
    double refill[4096]; /* the buffer's refill seconds so far */
    double rss_max;      /* largest RSS seen at a step's end */
} run_log;

static int on_event(void *ud, saefw_event event, const saefw_metrics *m, char *err, size_t errlen) {
    run_log *r = ud;
    if (event != SAEFW_EVENT_LOG || r->n >= 4096) return SAEFW_EVENT_GO_ON;
    r->t[r->n] = saefw_now();
    r->l0[r->n] = m->l0;
    r->refill[r->n] = r->buf->refill_seconds;
    const double rss = rss_now_bytes();
    if (rss > r->rss_max) r->rss_max = rss;
    if (++r->n == r->dense_steps)
        for (int64_t j = 0; j < r->sae->d_sae; j++) r->sae->p[SAEFW_B_ENC][j] = r->bias;
    return 0;
}

/* A real training run at the seed's shape on the model's activations: a bf16 buffer of `rows` rows
 * filled and refilled by the model, SAE 2048 -> 16384, Adam loaded as a plugin, the training loop.
 * The first dense_steps steps run at the seed's initialisation (b_enc = 0, about half the features
 * active: the dense path, as at the start of training); then b_enc is set so that about l0 features
 * are active (the sparse path, as for most of training). Prints the step time, the refill share, the
 * share that reading the run's tokens at read_rate tokens/s (from a token cache) takes, and the peak
 * RSS against the budget. */
static void training_run(saefw_model *m, saefw_tokens *tok, saefw_hook hook, int64_t rows, int64_t steps,
                         int64_t dense_steps, double l0, int64_t eval_every, double read_rate) {
    char err[1024];
    const int64_t batch = 4096, T = saefw_tokens_seq_len(tok);
    saefw_model_source_opts so = {m, tok, hook, batch / T * 16, 1};
    saefw_source *src = NULL;
    if (saefw_source_model(&so, &src, err, sizeof err) != 0) die("source", err);
    saefw_buffer buf;
    if (saefw_buffer_init(&buf, src, rows, batch, SAEFW_BUF_BF16, 1, err, sizeof err) != 0) die("buffer", err);
    saefw_sae sae;
    if (saefw_sae_alloc(&sae, D_MLP, 8 * D_MLP, 3e-4f, err, sizeof err) != 0) die("sae", err);
    saefw_rng rng;
    saefw_rng_seed(&rng, SAEFW_DEFAULT_SEED);
    saefw_sae_init_params(&sae, &rng);
    /* b_enc for the wanted L0: minus the value that a fraction l0 / d_sae of one batch's
     * pre-activations exceed (a batch taken from a copy of the buffer's stream would cost a second
     * buffer; one batch of this buffer is used instead). */
    float bias = 0.0f;
    {
        float *x = malloc(sizeof(float) * (size_t)(batch * D_MLP));
        saefw_sae_eval *w;
        if (!x || saefw_sae_eval_alloc(&w, &sae, 512, err, sizeof err) != 0) die("allocation", "out of memory");
        if (saefw_buffer_next(&buf, x, err, sizeof err) != 0) die("buffer", err);
        saefw_sae_eval_forward(&sae, w, x, 512, NULL);
        const int64_t n = 512 * sae.d_sae;
        float *v = malloc(sizeof(float) * (size_t)n);
        const float *acts = saefw_sae_eval_acts(&sae, w, err, sizeof err);
        if (!v || !acts) die("allocation", "out of memory");
        memcpy(v, acts, sizeof(float) * (size_t)n);
        qsort(v, (size_t)n, sizeof(float), cmp_float);
        bias = -v[(int64_t)((1.0 - l0 / (double)sae.d_sae) * (double)n)];
        free(v);
        free(x);
        saefw_sae_eval_free(w);
    }
    saefw_loaded_plugin *adam = NULL;
    saefw_opts *opts = NULL;
    if (saefw_plugin_load("adam", saefw_host_table(), &adam, err, sizeof err) != 0 ||
        saefw_opts_new(adam, &opts, err, sizeof err) != 0)
        die("adam", err);
    if (saefw_opts_set_number(opts, adam, "lr", 1e-7, err, sizeof err) != 0) die("adam", err); /* L0 stays put */
    static run_log rl;
    memset(&rl, 0, sizeof rl);
    rl.sae = &sae;
    rl.buf = &buf;
    rl.bias = bias;
    rl.dense_steps = dense_steps;
    const double rss_before = rss_now_bytes();
    if (dense_steps == 0)
        for (int64_t j = 0; j < sae.d_sae; j++) sae.p[SAEFW_B_ENC][j] = bias;
    saefw_train_opts o = {0};
    o.sae = &sae;
    o.buffer = &buf;
    o.steps = steps;
    o.optimizer.plugin = adam;
    o.optimizer.opts = opts;
    o.freq_batches = 1;
    o.log_every = 1;
    o.progress = 0;
    o.on_event = on_event;
    o.event_ud = &rl;
    /* Evaluations (feature frequencies and the core's reconstruction score) as a seed run makes them,
     * on one model batch of 32 sequences (the memory it needs does not grow with more batches). */
    saefw_recons_evaluator rev;
    saefw_recons_evaluator_init(&rev, m, tok, hook, 1, 32, SAEFW_RECONS_FRESH, SAEFW_DEFAULT_SEED);
    saefw_evaluator *evs[1] = {&rev.ev};
    o.eval_every = eval_every;
    o.evaluators = evs;
    o.n_evaluators = 1;
    saefw_train_result res;
    if (saefw_train(&o, &res, err, sizeof err) != 0) die("train", err);
    saefw_recons_evaluator_free(&rev);
    /* The share over the steps after the first (which also touches the optimizer's fresh state), up to
     * the last: the end-of-run evaluation is not training. */
    if (rl.n < 2) die("train", "too few steps to time");
    const double train_s = rl.t[rl.n - 1] - rl.t[0], refill_s = rl.refill[rl.n - 1] - rl.refill[0];
    /* Sparse steps: the fastest interval between log events after the switch (refills excluded). */
    double step = 1e30, l0_seen = 0;
    for (int k = (int)dense_steps + 1; k < rl.n; k++)
        if (rl.t[k] - rl.t[k - 1] < step) {
            step = rl.t[k] - rl.t[k - 1];
            l0_seen = rl.l0[k];
        }
    printf("  training run: buffer %lld rows (bf16), first fill %.1f s (%.0f tokens/s); %lld steps (%lld at the "
           "seed's initialisation, dense), %lld refills during the run\n",
           (long long)rows, buf.fill_seconds, (double)rows / buf.fill_seconds, (long long)steps, (long long)dense_steps,
           (long long)(buf.refills - 1));
    if (step < 1e30) printf("  sparse step at L0 %.1f: %.3f s (%.0f tokens/s)\n", l0_seen, step, (double)batch / step);
    if (buf.refills > 1)
        printf("  refill share: %.1f s of refills in %.1f s of training (steps 2 to %d) = %.1f%% of training time "
               "(target <= 15%%)\n",
               refill_s, train_s, rl.n, 100.0 * refill_s / train_s);
    /* Every activation the steps trained on is one token position that a refill read. */
    const double run_tokens = (double)batch * (rl.n - 1), read_s = run_tokens / read_rate;
    printf("  token-reading share: the %.0f tokens of steps 2 to %d read from a token cache (shuffled rows of %lld) "
           "at %.1f M tokens/s take %.4f s = %.4f%% of training time (target < 1%%)\n",
           run_tokens, rl.n, (long long)T, read_rate / 1e6, read_s, 100.0 * read_s / train_s);
    printf("  RSS: %.2f GB before training (model, tokens, buffer, SAE parameters), at most %.2f GB at the end of a "
           "step\n",
           rss_before / 1e9, rl.rss_max / 1e9);
    double buffer_bytes = (double)saefw_buffer_bytes(&buf), params = (double)sae.n_total * 4;
    double budget = (buffer_bytes + 4 * params) * 1.10, peak = peak_rss_bytes();
    printf("  peak RSS %.2f GB; buffer %.2f GB + 4 x SAE parameters %.2f GB (+ model %.2f GB)", peak / 1e9,
           buffer_bytes / 1e9, 4 * params / 1e9, (double)saefw_model_param_bytes(m) / 1e9);
    if (rows >= 4096LL * 384) /* the target is for the seed's buffer */
        printf("; target (buffer + 4 params) x 1.10 = %.2f GB: %s", budget / 1e9, peak <= budget ? "within" : "OVER");
    printf("\n");
    saefw_opts_free(opts);
    saefw_plugin_unload(adam);
    saefw_sae_free(&sae);
    saefw_buffer_free(&buf);
    saefw_source_free(src);
}

int main(int argc, char **argv) {
    mallopt(M_MMAP_THRESHOLD, 1 << 20); /* as the saefw command does */
    setvbuf(stdout, NULL, _IOLBF, 0);   /* each figure as soon as it is measured, also through a pipe */
    int rss = 0, reps = 3, forward_only = 0, forwards = 0, no_bound = 0, refill = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rss")) rss = 1;
        else if (!strcmp(argv[i], "--forward-only")) forward_only = 1;
        else if (!strcmp(argv[i], "--forwards")) forwards = 1;
        else if (!strcmp(argv[i], "--refill")) refill = 1;
        else if (!strcmp(argv[i], "--no-bound")) no_bound = 1;
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc && atoi(argv[i + 1]) > 0) reps = atoi(argv[++i]);
        else {
            fprintf(stderr,
                    "usage: bench_model [--reps N] [--forward-only | --forwards | --refill] [--no-bound] [--rss]\n");
            return 2;
        }
    }
    char dir[] = "/tmp/saefw-bench-XXXXXX";
    if (!mkdtemp(dir)) die("temp folder", "mkdtemp failed");
    char mpath[128], tpath[128], cpath[128], err[1024];
    snprintf(mpath, sizeof mpath, "%s/gelu1l_random.safetensors", dir);
    snprintf(tpath, sizeof tpath, "%s/tokens.npy", dir);
    snprintf(cpath, sizeof cpath, "%s/token_cache.npy", dir);
    printf("bench_model: gelu-1l's shape (d_model %d, d_mlp %d, %d heads, d_vocab %d), random weights, %d threads\n",
           D_MODEL, D_MLP, N_HEADS, D_VOCAB, saefw_threads());
    char werr[1024];
    if (bench_write_gelu1l(mpath, werr, sizeof werr) != 0) die("writing the model", werr);
    const int64_t T = 128, B = 32; /* one model batch chunk: the engine forwards 32 sequences at a time */
    if (bench_write_tokens(tpath, rss ? 4096LL * 384 * 2 : 4096LL * 64, werr, sizeof werr) != 0)
        die("writing tokens", werr);
    saefw_model *m = NULL;
    if (saefw_model_load(mpath, NULL, &m, err, sizeof err) != 0) die("loading", err);
    saefw_model_work *w = NULL;
    if (saefw_model_work_alloc(m, B, T, &w, err, sizeof err) != 0) die("work", err);
    saefw_tokens_opts to = {tpath, NULL, NULL, T, -1, 1, 1};
    saefw_tokens *tok = NULL;
    if (saefw_tokens_open(&to, &tok, err, sizeof err) != 0) die("tokens", err);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(B * T));
    float *acts = malloc(sizeof(float) * (size_t)(B * T * D_MLP));
    if (!ids || !acts) die("allocation", "out of memory");
    if (saefw_tokens_next(tok, ids, B, D_VOCAB, err, sizeof err) != 0) die("tokens", err);
    saefw_hook hook = {SAEFW_HOOK_MLP_POST, 0};

    if (refill) {
        refill_parts(m, tok, hook, w, reps);
        goto cleanup;
    }
    /* Wall time (best of reps) and, beside it, the process's CPU time (least of reps, all threads):
     * on a shared host the wall time also counts other programs' turns, the CPU time does not. */
    double best_stop = 1e30, best_full = 1e30, cpu_stop = 1e30, cpu_full = 1e30, loss = 0;
    for (int r = 0; r < reps; r++) {
        saefw_forward_opts fo = {.capture = &hook, .capture_out = acts, .stop_after_capture = 1};
        double t0 = saefw_now(), c0 = cpu_now();
        if (saefw_model_forward(m, w, ids, B, T, &fo, err, sizeof err) != 0) die("forward", err);
        double t1 = saefw_now(), c1 = cpu_now();
        if (t1 - t0 < best_stop) best_stop = t1 - t0;
        if (c1 - c0 < cpu_stop) cpu_stop = c1 - c0;
        if (forward_only) continue;
        saefw_forward_opts full = {.loss_out = &loss};
        if (saefw_model_forward(m, w, ids, B, T, &full, err, sizeof err) != 0) die("forward", err);
        double t2 = saefw_now(), c2 = cpu_now();
        if (t2 - t1 < best_full) best_full = t2 - t1;
        if (c2 - c1 < cpu_full) cpu_full = c2 - c1;
    }
    double bound_stop = 0, bound_full = 0, bcpu_stop = 0, bcpu_full = 0;
    /* The bound right after the forward, so that both see the same load on the host. */
    if (!no_bound) products_bound(2048, T, reps, &bound_stop, &bound_full, &bcpu_stop, &bcpu_full);
    printf("  forward, %lld sequences x %lld tokens, stop after blocks.0.mlp.hook_post: %.3f s = %.0f tokens/s",
           (long long)B, (long long)T, best_stop, (double)(B * T) / best_stop);
    if (bound_stop > 0)
        printf(" (%.0f%% of the bound %.0f)", 100.0 * (double)(B * T) / best_stop / bound_stop, bound_stop);
    printf("; CPU %.3f s = %.1f us per token", cpu_stop, 1e6 * cpu_stop / (double)(B * T));
    if (bcpu_stop > 0) printf(" (products %.0f%%)", 100.0 * bcpu_stop * (double)(B * T) / cpu_stop);
    printf("\n");
    if (forward_only) goto cleanup;
    printf("  forward, full with the loss (unembedding over %d tokens):            %.3f s = %.0f tokens/s (loss %.3f)",
           D_VOCAB, best_full, (double)(B * T) / best_full, loss);
    if (bound_full > 0)
        printf(" (%.0f%% of the bound %.0f)", 100.0 * (double)(B * T) / best_full / bound_full, bound_full);
    printf("; CPU %.3f s = %.1f us per token", cpu_full, 1e6 * cpu_full / (double)(B * T));
    if (bcpu_full > 0) printf(" (products %.0f%%)", 100.0 * bcpu_full * (double)(B * T) / cpu_full);
    printf("\n");
    if (forwards) goto cleanup;

    /* The timing's own arrays are not part of a run. */
    free(ids);
    free(acts);
    ids = NULL;
    acts = NULL;
    /* Reading the stream from a token cache: 16 half refills of the seed's buffer (25 MB of uint16),
     * 8 of them read; the file is removed before the run so that it takes no memory there. */
    write_token_cache(cpath, 16 * 786432LL);
    const double read_rate = bench_tokens_read(cpath, T, 8 * 786432LL, NULL, NULL, err, sizeof err);
    if (read_rate < 0) die("reading the token cache", err);
    unlink(cpath);
    printf("  reading a token cache (uint16 .npy, shuffled rows of %lld, 8 x 786432 tokens): %.1f M tokens/s\n",
           (long long)T, read_rate / 1e6);
    if (rss) {
        /* The seed's buffer (4096 x 384 rows): peak RSS; 2 dense steps, then 3 sparse ones, with
         * evaluations after steps 0 and 3 and at the end. */
        printf("the seed's buffer, for the peak RSS:\n");
        training_run(m, tok, hook, 4096LL * 384, 5, 2, 128, 3, read_rate);
    } else {
        /* A buffer of 16 batches refills every 8 steps: the refill share of the seed's run (a
         * bigger buffer refills more rows less often: the same share). */
        printf("a training run refilling every 8 steps, for the refill share:\n");
        training_run(m, tok, hook, 4096LL * 16, 33, 0, 128, 0, read_rate);
    }

cleanup:
    free(ids);
    free(acts);
    saefw_tokens_free(tok);
    saefw_model_work_free(w);
    saefw_model_free(m);
    unlink(mpath);
    unlink(tpath);
    rmdir(dir);
    return 0;
}
