/* Benchmark of the model host at gelu-1l's shape (random weights): forward tokens/s stopping at
 * blocks.0.mlp.hook_post and the full forward with the loss; the share of a training step that the
 * buffer refill costs at the seed's shape (batch 4096 = 32 sequences of 128 per step); and, with
 * --rss, the peak RSS of a real run at the seed's shape against buffer + 4 x SAE parameter bytes.
 *   build/bin/bench_model [--rss]                 (figures printed, nothing asserted) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "model.h"
#include "model_source.h"
#include "parallel.h"
#include "plugin_loader.h"
#include "sae.h"
#include "tensorfile.h"
#include "tokens.h"
#include "train.h"
#include "util.h"

enum { N_LAYERS = 1, D_MODEL = 512, D_MLP = 2048, N_HEADS = 8, D_HEAD = 64, N_CTX = 1024, D_VOCAB = 48262 };

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

static float *constant(size_t n, float v) {
    float *p = malloc(sizeof(float) * n);
    if (!p) die("allocation", "out of memory");
    for (size_t i = 0; i < n; i++) p[i] = v;
    return p;
}

/* A gelu-1l-shaped model with random weights, as safetensors with its config in the metadata. */
static void write_model(const char *path) {
    saefw_rng rng;
    saefw_rng_seed(&rng, 1);
    struct {
        const char *name;
        int ndim;
        int64_t shape[3];
        float *data;
    } t[] = {
        {"embed.W_E", 2, {D_VOCAB, D_MODEL}, randn(&rng, (size_t)D_VOCAB * D_MODEL, 0.02f)},
        {"pos_embed.W_pos", 2, {N_CTX, D_MODEL}, randn(&rng, (size_t)N_CTX * D_MODEL, 0.02f)},
        {"blocks.0.ln1.w", 1, {D_MODEL}, constant(D_MODEL, 1)},
        {"blocks.0.ln1.b", 1, {D_MODEL}, constant(D_MODEL, 0)},
        {"blocks.0.attn.W_Q", 3, {N_HEADS, D_MODEL, D_HEAD}, randn(&rng, (size_t)N_HEADS * D_MODEL * D_HEAD, 0.02f)},
        {"blocks.0.attn.W_K", 3, {N_HEADS, D_MODEL, D_HEAD}, randn(&rng, (size_t)N_HEADS * D_MODEL * D_HEAD, 0.02f)},
        {"blocks.0.attn.W_V", 3, {N_HEADS, D_MODEL, D_HEAD}, randn(&rng, (size_t)N_HEADS * D_MODEL * D_HEAD, 0.02f)},
        {"blocks.0.attn.W_O", 3, {N_HEADS, D_HEAD, D_MODEL}, randn(&rng, (size_t)N_HEADS * D_HEAD * D_MODEL, 0.02f)},
        {"blocks.0.attn.b_Q", 2, {N_HEADS, D_HEAD}, constant(N_HEADS * D_HEAD, 0)},
        {"blocks.0.attn.b_K", 2, {N_HEADS, D_HEAD}, constant(N_HEADS * D_HEAD, 0)},
        {"blocks.0.attn.b_V", 2, {N_HEADS, D_HEAD}, constant(N_HEADS * D_HEAD, 0)},
        {"blocks.0.attn.b_O", 1, {D_MODEL}, constant(D_MODEL, 0)},
        {"blocks.0.ln2.w", 1, {D_MODEL}, constant(D_MODEL, 1)},
        {"blocks.0.ln2.b", 1, {D_MODEL}, constant(D_MODEL, 0)},
        {"blocks.0.mlp.W_in", 2, {D_MODEL, D_MLP}, randn(&rng, (size_t)D_MODEL * D_MLP, 0.02f)},
        {"blocks.0.mlp.b_in", 1, {D_MLP}, constant(D_MLP, 0)},
        {"blocks.0.mlp.W_out", 2, {D_MLP, D_MODEL}, randn(&rng, (size_t)D_MLP * D_MODEL, 0.02f)},
        {"blocks.0.mlp.b_out", 1, {D_MODEL}, constant(D_MODEL, 0)},
        {"ln_final.w", 1, {D_MODEL}, constant(D_MODEL, 1)},
        {"ln_final.b", 1, {D_MODEL}, constant(D_MODEL, 0)},
        {"unembed.W_U", 2, {D_MODEL, D_VOCAB}, randn(&rng, (size_t)D_MODEL * D_VOCAB, 0.02f)},
    };
    enum { N = sizeof t / sizeof *t };
    saefw_tensor_ref refs[N];
    for (int i = 0; i < N; i++) refs[i] = (saefw_tensor_ref){t[i].name, SAEFW_DT_F32, t[i].ndim, t[i].shape, t[i].data};
    char v[7][16];
    snprintf(v[0], 16, "%d", N_LAYERS);
    snprintf(v[1], 16, "%d", D_MODEL);
    snprintf(v[2], 16, "%d", D_MLP);
    snprintf(v[3], 16, "%d", D_HEAD);
    snprintf(v[4], 16, "%d", N_HEADS);
    snprintf(v[5], 16, "%d", N_CTX);
    snprintf(v[6], 16, "%d", D_VOCAB);
    const char *meta[][2] = {{"n_layers", v[0]}, {"d_model", v[1]}, {"d_mlp", v[2]},      {"d_head", v[3]},
                             {"n_heads", v[4]},  {"n_ctx", v[5]},   {"d_vocab", v[6]},     {"act_fn", "gelu"},
                             {"normalization_type", "LN"}};
    char err[1024];
    if (saefw_safetensors_write(path, refs, N, meta, 9, err, sizeof err) != 0) die("writing the model", err);
    for (int i = 0; i < N; i++) free(t[i].data);
}

static void write_tokens(const char *path, int64_t n) {
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)n);
    if (!tok) die("allocation", "out of memory");
    saefw_rng rng;
    saefw_rng_seed(&rng, 2);
    for (int64_t i = 0; i < n; i++) tok[i] = (int32_t)saefw_rng_below(&rng, D_VOCAB);
    int64_t shape[1] = {n};
    char err[1024];
    if (saefw_npy_write(path, SAEFW_DT_I32, 1, shape, tok, err, sizeof err) != 0) die("writing tokens", err);
    free(tok);
}

static double peak_rss_bytes(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss * 1024.0;
}

/* One training step of the seed's SAE at L0 about `l0`, timed (forward, backward, projection, and an
 * Adam-shaped memory pass over the parameters). */
static double sae_step_seconds(int64_t B, int64_t d_in, int64_t d_sae, double l0, int reps) {
    char err[512];
    saefw_sae sae;
    if (saefw_sae_alloc(&sae, d_in, d_sae, 3e-4f, err, sizeof err) != 0) die("sae", err);
    saefw_rng rng;
    saefw_rng_seed(&rng, 3);
    saefw_sae_init_params(&sae, &rng);
    saefw_sae_work w;
    if (saefw_sae_work_alloc(&w, &sae, B, err, sizeof err) != 0) die("sae work", err);
    float *x = randn(&rng, (size_t)(B * d_in), 1.0f);
    /* With x ~ N(0, 1) and kaiming W_enc (variance 2 / d_sae), pre-activations are about
     * N(0, 2 d_in / d_sae): a bias of -sigma z_p leaves a fraction p active. */
    const double sigma = sqrt(2.0 * (double)d_in / (double)d_sae);
    double p = l0 / (double)d_sae, lo = -6, hi = 6;
    for (int it = 0; it < 60; it++) {
        double mid = 0.5 * (lo + hi), q = 0.5 * erfc(mid / sqrt(2.0));
        if (q > p) lo = mid;
        else hi = mid;
    }
    for (int64_t j = 0; j < d_sae; j++) sae.p[SAEFW_B_ENC][j] = (float)(-sigma * lo);
    float *m = calloc(sae.n_total, sizeof(float)), *v = calloc(sae.n_total, sizeof(float));
    if (!m || !v) die("allocation", "out of memory");
    double best = 1e30;
    saefw_sae_stats st = {0};
    for (int r = 0; r < reps; r++) {
        double t0 = saefw_now();
        saefw_sae_forward(&sae, &w, x, B, &st);
        saefw_sae_backward(&sae, &w, x, B);
        saefw_sae_project_decoder(&sae);
        for (size_t k = 0; k < sae.n_total; k++) {
            float g = sae.grads[k];
            m[k] = 0.9f * m[k] + 0.1f * g;
            v[k] = 0.99f * v[k] + 0.01f * g * g;
            sae.params[k] -= 1e-4f * m[k] / (sqrtf(v[k]) + 1e-8f);
        }
        double t = saefw_now() - t0;
        if (t < best) best = t;
    }
    printf("  SAE step at batch %lld, %lld -> %lld, L0 %.1f: %.3f s\n", (long long)B, (long long)d_in, (long long)d_sae,
           st.l0, best);
    free(m);
    free(v);
    free(x);
    saefw_sae_work_free(&w);
    saefw_sae_free(&sae);
    return best;
}

int main(int argc, char **argv) {
    int rss = 0, reps = 3, forward_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rss")) rss = 1;
        else if (!strcmp(argv[i], "--forward-only")) forward_only = 1;
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc && atoi(argv[i + 1]) > 0) reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_model [--reps N] [--forward-only] [--rss]\n");
            return 2;
        }
    }
    char dir[] = "/tmp/saefw-bench-XXXXXX";
    if (!mkdtemp(dir)) die("temp folder", "mkdtemp failed");
    char mpath[128], tpath[128], err[1024];
    snprintf(mpath, sizeof mpath, "%s/gelu1l_random.safetensors", dir);
    snprintf(tpath, sizeof tpath, "%s/tokens.npy", dir);
    printf("bench_model: gelu-1l's shape (d_model %d, d_mlp %d, %d heads, d_vocab %d), random weights, %d threads\n",
           D_MODEL, D_MLP, N_HEADS, D_VOCAB, saefw_threads());
    write_model(mpath);
    const int64_t T = 128, B = 32; /* one model batch chunk: the engine forwards 32 sequences at a time */
    write_tokens(tpath, rss ? 4096LL * 384 * 2 : B * T * 8);
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

    double best_stop = 1e30, best_full = 1e30, loss = 0;
    for (int r = 0; r < reps; r++) {
        saefw_forward_opts fo = {&hook, acts, 1, NULL, NULL, NULL};
        double t0 = saefw_now();
        if (saefw_model_forward(m, w, ids, B, T, &fo, err, sizeof err) != 0) die("forward", err);
        double t1 = saefw_now();
        if (t1 - t0 < best_stop) best_stop = t1 - t0;
        if (forward_only) continue;
        saefw_forward_opts full = {NULL, NULL, 0, NULL, NULL, &loss};
        if (saefw_model_forward(m, w, ids, B, T, &full, err, sizeof err) != 0) die("forward", err);
        double t2 = saefw_now();
        if (t2 - t1 < best_full) best_full = t2 - t1;
    }
    printf("  forward, %lld sequences x %lld tokens, stop after blocks.0.mlp.hook_post: %.3f s = %.0f tokens/s\n",
           (long long)B, (long long)T, best_stop, (double)(B * T) / best_stop);
    if (forward_only) goto cleanup;
    printf("  forward, full with the loss (unembedding over %d tokens):            %.3f s = %.0f tokens/s (loss %.3f)\n",
           D_VOCAB, best_full, (double)(B * T) / best_full, loss);

    /* The seed's shape: each step consumes batch_size = 4096 rows = 32 sequences of 128. */
    double step = sae_step_seconds(4096, D_MLP, 8 * D_MLP, 128, 2);
    printf("  buffer refill per step (32 sequences) %.3f s vs SAE step %.3f s: refill share %.1f%% of training time\n",
           best_stop, step, 100.0 * best_stop / (best_stop + step));

    if (rss) {
        /* A real run at the seed's shape: bf16 buffer of 4096 x 384 rows of d_mlp, SAE 2048 -> 16384. */
        saefw_model_source_opts so = {m, tok, hook, 4096 / 128 * 16, 1};
        saefw_source *src = NULL;
        if (saefw_source_model(&so, &src, err, sizeof err) != 0) die("source", err);
        saefw_buffer buf;
        double t0 = saefw_now();
        if (saefw_buffer_init(&buf, src, 4096LL * 384, 4096, SAEFW_BUF_BF16, 1, err, sizeof err) != 0) die("buffer", err);
        printf("  first buffer fill (%lld rows): %.1f s\n", (long long)buf.rows, saefw_now() - t0);
        saefw_sae sae;
        if (saefw_sae_alloc(&sae, D_MLP, 8 * D_MLP, 3e-4f, err, sizeof err) != 0) die("sae", err);
        saefw_rng rng;
        saefw_rng_seed(&rng, 49);
        saefw_sae_init_params(&sae, &rng);
        saefw_loaded_plugin *adam = NULL;
        saefw_opts *opts = NULL;
        if (saefw_plugin_load("adam", saefw_host_table(), &adam, err, sizeof err) != 0 ||
            saefw_opts_new(adam, &opts, err, sizeof err) != 0)
            die("adam", err);
        saefw_train_opts o = {0};
        o.sae = &sae;
        o.buffer = &buf;
        o.steps = 3;
        o.optimizer.plugin = adam;
        o.optimizer.opts = opts;
        o.freq_batches = 1;
        o.progress = 0;
        saefw_train_result res;
        if (saefw_train(&o, &res, err, sizeof err) != 0) die("train", err);
        double buffer_bytes = (double)saefw_buffer_bytes(&buf), params = (double)sae.n_total * 4;
        double budget = (buffer_bytes + 4 * params) * 1.10, peak = peak_rss_bytes();
        printf("  peak RSS %.2f GB; buffer %.2f GB + 4 x SAE parameters %.2f GB (+ model %.2f GB); "
               "target (buffer + 4 params) x 1.10 = %.2f GB: %s\n",
               peak / 1e9, buffer_bytes / 1e9, 4 * params / 1e9, (double)saefw_model_param_bytes(m) / 1e9, budget / 1e9,
               peak <= budget ? "within" : "OVER");
        saefw_opts_free(opts);
        saefw_plugin_unload(adam);
        saefw_sae_free(&sae);
        saefw_buffer_free(&buf);
        saefw_source_free(src);
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
