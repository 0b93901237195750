/* A whole training run at the seed's configuration on a stand-in gelu-1l (random weights, real
 * shapes), end to end through saefw_train: the bf16 buffer filled and refilled by the model, the SAE
 * step (2048 -> 16384, batch 4096, L0 about 128: the sparse path), evaluations every eval_every steps
 * (feature frequencies and the reconstruction score), checkpoints with the training state, and the
 * seed's reinit_dead resampler. It prints the run's wall time split by part (the loop's own
 * accounting, saefw_time_split), the cost of one occurrence of each part, and the seed's 2e9-token run
 * projected on this machine, part by part, with the seed's intervals and sizes (the buffer of 384
 * batches, 5 evaluation batches of 512 sequences every 1000 steps, reinit every 30000 steps over 50
 * batches, a checkpoint every 30000 steps). Sizes are scaled down so that the run takes minutes; each
 * part is projected by what it scales with (tokens forwarded, rows through the SAE, bytes written).
 *   build/bin/bench_run [--steps N] [--buffer_batches B] [--eval_every E] [--checkpoint_every C]
 *                       [--reinit_every R] [--eval_seqs S] [--recons_eval fixed|fresh] [--l0 L]
 *                       [--eval_freq auto|recons|separate] [--reinit_from_steps]
 * (--eval_freq separate --reinit_from_steps off is the seed's way of counting frequencies; the
 * default counts them in the fixed set's reconstruction pass, issue 19.2)
 * Run on demand, never by ctest; figures printed, nothing asserted. */
#include <dirent.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "eval.h"
#include "model.h"
#include "model_source.h"
#include "parallel.h"
#include "plugin_loader.h"
#include "sae.h"
#include "tensorfile.h"
#include "tokens.h"
#include "train.h"
#include "util.h"

#include "bench_gelu1l.h"

/* The seed's run (DESIGN.md, experiments/baseline.lua). */
#define SEED_TOKENS 2e9
#define SEED_BATCH 4096
#define SEED_BUFFER_ROWS (4096.0 * 384)
#define SEED_MODEL_SEQS 512.0 /* batch / seq_len * 16 */
#define SEED_EVAL_EVERY 1000.0
#define SEED_EVAL_BATCHES 5.0
#define SEED_EVERY_30K 30000.0
#define SEED_REINIT_BATCHES 50.0
#define SEQ 128

static void die(const char *what, const char *err) {
    fprintf(stderr, "bench_run: %s: %s\n", what, err);
    exit(1);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* The split at each eval event, to tell the first reconstruction score (with the clean and
 * zero-ablated losses) from the later ones. */
typedef struct {
    int n;
    saefw_time_split at[64];
} eval_log;

static int on_event(void *ud, saefw_event event, const saefw_metrics *m, char *err, size_t errlen) {
    (void)err, (void)errlen;
    eval_log *l = ud;
    if (event != SAEFW_EVENT_LOG && l->n < 64) l->at[l->n++] = m->time;
    return SAEFW_EVENT_GO_ON;
}

/* Bytes of the files in a folder (a checkpoint). */
static double folder_bytes(const char *dir) {
    DIR *d = opendir(dir);
    double sum = 0;
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char p[4096];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) sum += (double)st.st_size;
    }
    closedir(d);
    return sum;
}

static long arg_long(int argc, char **argv, int *i) {
    if (*i + 1 >= argc || atol(argv[*i + 1]) < 0) die(argv[*i], "needs a number >= 0");
    return atol(argv[++*i]);
}

int main(int argc, char **argv) {
    mallopt(M_MMAP_THRESHOLD, 1 << 20); /* as the saefw command does */
    setvbuf(stdout, NULL, _IOLBF, 0);
    long steps = 13, buffer_batches = 16, eval_every = 6, ckpt_every = 7, reinit_every = 10, eval_seqs = 32;
    double l0 = 128;
    saefw_recons_mode mode = SAEFW_RECONS_FIXED;
    saefw_eval_freq_mode freq_mode = SAEFW_EVAL_FREQ_AUTO;
    int from_steps = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps")) steps = arg_long(argc, argv, &i);
        else if (!strcmp(argv[i], "--buffer_batches")) buffer_batches = arg_long(argc, argv, &i);
        else if (!strcmp(argv[i], "--eval_every")) eval_every = arg_long(argc, argv, &i);
        else if (!strcmp(argv[i], "--checkpoint_every")) ckpt_every = arg_long(argc, argv, &i);
        else if (!strcmp(argv[i], "--reinit_every")) reinit_every = arg_long(argc, argv, &i);
        else if (!strcmp(argv[i], "--eval_seqs")) eval_seqs = arg_long(argc, argv, &i);
        else if (!strcmp(argv[i], "--l0")) l0 = (double)arg_long(argc, argv, &i);
        else if (!strcmp(argv[i], "--recons_eval") && i + 1 < argc && saefw_recons_mode_parse(argv[i + 1], &mode) == 0)
            i++;
        else if (!strcmp(argv[i], "--eval_freq") && i + 1 < argc &&
                 saefw_eval_freq_mode_parse(argv[i + 1], &freq_mode) == 0)
            i++;
        else if (!strcmp(argv[i], "--reinit_from_steps")) from_steps = 1;
        else {
            fprintf(stderr,
                    "usage: bench_run [--steps N] [--buffer_batches B] [--eval_every E] [--checkpoint_every C]\n"
                    "                 [--reinit_every R] [--eval_seqs S] [--recons_eval fixed|fresh] [--l0 L]\n"
                    "                 [--eval_freq auto|recons|separate] [--reinit_from_steps]\n");
            return 2;
        }
    }
    if (steps < 2 || buffer_batches < 16 || eval_seqs < 1 || reinit_every < 1)
        die("options",
            "steps >= 2, buffer_batches >= 16 (one model batch of the seed's), eval_seqs >= 1, reinit_every >= 1");

    char dir[] = "/tmp/saefw-bench-run-XXXXXX", err[1024];
    if (!mkdtemp(dir)) die("temp folder", "mkdtemp failed");
    char mpath[128], tpath[128], run_dir[128];
    snprintf(mpath, sizeof mpath, "%s/gelu1l_random.safetensors", dir);
    snprintf(tpath, sizeof tpath, "%s/tokens.npy", dir);
    snprintf(run_dir, sizeof run_dir, "%s/run", dir);
    if (bench_write_gelu1l(mpath, err, sizeof err) != 0) die("writing the model", err);
    /* Enough rows that the run stays in its first pass (as the seed's 2e9 tokens nearly do). */
    const int64_t rows_needed = (buffer_batches + steps + 16) * SEED_BATCH / SEQ * 2;
    if (bench_write_tokens(tpath, rows_needed * SEQ, err, sizeof err) != 0) die("writing tokens", err);

    saefw_model *m = NULL;
    if (saefw_model_load(mpath, NULL, &m, err, sizeof err) != 0) die("model", err);
    saefw_tokens_opts to = {.path = tpath, .seq_len = SEQ, .bos = -1, .shuffle = 1, .seed = 1};
    saefw_tokens *tok = NULL;
    if (saefw_tokens_open(&to, &tok, err, sizeof err) != 0) die("tokens", err);
    const saefw_hook hook = {SAEFW_HOOK_MLP_POST, 0};
    /* Training activations in the seed's model batches; evaluations draw eval_seqs sequences per batch. */
    saefw_model_source_opts so = {m, tok, hook, SEED_BATCH / SEQ * 16, 1};
    saefw_model_source_opts eo = {m, tok, hook, eval_seqs, 1};
    saefw_source *src = NULL, *esrc = NULL;
    if (saefw_source_model(&so, &src, err, sizeof err) != 0 || saefw_source_model(&eo, &esrc, err, sizeof err) != 0)
        die("source", err);
    saefw_buffer buf;
    if (saefw_buffer_init(&buf, src, buffer_batches * SEED_BATCH, SEED_BATCH, SAEFW_BUF_BF16, 1, err, sizeof err) != 0)
        die("buffer", err);
    saefw_sae sae;
    if (saefw_sae_alloc(&sae, BENCH_D_MLP, 8 * BENCH_D_MLP, 3e-4f, err, sizeof err) != 0) die("sae", err);
    saefw_rng rng;
    saefw_rng_seed(&rng, SAEFW_DEFAULT_SEED);
    saefw_sae_init_params(&sae, &rng);
    /* b_enc for L0 about l0: minus the value that l0 / d_sae of the pre-activations of 512 rows of the
     * evaluation stream exceed (the training stream is left alone). */
    {
        const int64_t n_rows = 512, n = n_rows * sae.d_sae;
        float *x = malloc(sizeof(float) * (size_t)(n_rows * BENCH_D_MLP)), *v = malloc(sizeof(float) * (size_t)n);
        saefw_sae_eval *w = NULL;
        if (!x || !v || saefw_sae_eval_alloc(&w, &sae, n_rows, err, sizeof err) != 0)
            die("allocation", "out of memory");
        if (esrc->sample(esrc, x, n_rows, err, sizeof err) != 0) die("evaluation rows", err);
        saefw_sae_eval_forward(&sae, w, x, n_rows, NULL);
        const float *acts = saefw_sae_eval_acts(&sae, w, err, sizeof err);
        if (!acts) die("activations", err);
        memcpy(v, acts, sizeof(float) * (size_t)n);
        qsort(v, (size_t)n, sizeof(float), cmp_float);
        const float bias = -v[(int64_t)((1.0 - l0 / (double)sae.d_sae) * (double)n)];
        for (int64_t j = 0; j < sae.d_sae; j++) sae.p[SAEFW_B_ENC][j] = bias;
        free(v);
        free(x);
        saefw_sae_eval_free(w);
    }
    saefw_loaded_plugin *adam = NULL, *reinit = NULL;
    saefw_opts *opts = NULL, *ropts = NULL;
    if (saefw_plugin_load("adam", saefw_host_table(), &adam, err, sizeof err) != 0 ||
        saefw_opts_new(adam, &opts, err, sizeof err) != 0 ||
        saefw_opts_set_number(opts, adam, "lr", 1e-7, err, sizeof err) != 0 || /* L0 stays where it was put */
        saefw_plugin_load("reinit_dead", saefw_host_table(), &reinit, err, sizeof err) != 0 ||
        saefw_opts_new(reinit, &ropts, err, sizeof err) != 0 ||
        saefw_opts_set_number(ropts, reinit, "every", (double)reinit_every, err, sizeof err) != 0 ||
        saefw_opts_set_number(ropts, reinit, "batches", 5, err, sizeof err) != 0 ||
        saefw_opts_set_bool(ropts, reinit, "from_steps", from_steps, err, sizeof err) != 0)
        die("plugins", err);
    saefw_plugin_use plugins[1] = {{reinit, ropts, NULL}};
    saefw_recons_evaluator rev;
    saefw_recons_evaluator_init(&rev, m, tok, hook, (int64_t)SEED_EVAL_BATCHES, eval_seqs, mode, SAEFW_DEFAULT_SEED);
    saefw_recons_evaluator_set_freq(&rev, freq_mode);
    saefw_evaluator *evs[1] = {&rev.ev};
    eval_log el = {0};
    saefw_train_opts o = {0};
    o.sae = &sae;
    o.buffer = &buf;
    o.eval_source = esrc;
    o.steps = steps;
    o.optimizer.plugin = adam;
    o.optimizer.opts = opts;
    o.plugins = plugins;
    o.n_plugins = 1;
    o.log_every = 1;
    o.eval_every = eval_every;
    o.checkpoint_every = ckpt_every;
    o.freq_batches = (int64_t)SEED_EVAL_BATCHES;
    o.run_dir = run_dir;
    o.seed = SAEFW_DEFAULT_SEED;
    o.progress = 0;
    o.evaluators = evs;
    o.n_evaluators = 1;
    o.on_event = on_event;
    o.event_ud = &el;
    printf("bench_run: gelu-1l's shape (random weights), SAE %d -> %d, batch %d, L0 about %.0f, %d threads; buffer "
           "%ld batches (bf16), %ld steps, eval every %ld (5 batches of %ld sequences, recons_eval %s), checkpoint "
           "every %ld, reinit_dead every %ld (%s); frequencies %s\n",
           BENCH_D_MLP, 8 * BENCH_D_MLP, SEED_BATCH, l0, saefw_threads(), buffer_batches, steps, eval_every, eval_seqs,
           mode == SAEFW_RECONS_FIXED ? "fixed" : "fresh", ckpt_every, reinit_every,
           from_steps ? "from the training steps" : "5 batches",
           rev.count_freq ? "counted in the reconstruction score's pass" : "from their own batches");
    saefw_train_result res;
    if (saefw_train(&o, &res, err, sizeof err) != 0) die("train", err);
    const saefw_time_split *t = &res.last.time;
    char line[1024];
    saefw_time_split_format(t, line, sizeof line);
    printf("  %s\n", line);

    /* What each part scales with, here and in the seed's run. */
    const int64_t n_evals = el.n; /* the eval events and the end */
    const int64_t n_ckpt = (steps - 1) / (ckpt_every ? ckpt_every : steps + 1) + 1;
    const int64_t n_reinit = steps / reinit_every; /* reinit_dead runs after steps every-1, 2*every-1, ... */
    const double fwd_tokens =
        (double)(saefw_tokens_cursor(tok) + saefw_tokens_pass(tok) * saefw_tokens_rows(tok)) * SEQ;
    const double eval_tokens = SEED_EVAL_BATCHES * (double)eval_seqs * SEQ;
    const double first_recons = el.n > 0 ? el.at[0].eval_other : 0;
    const double later_recons = el.n > 1 ? (t->eval_other - first_recons) / (double)(el.n - 1) : first_recons;
    char ck[256];
    snprintf(ck, sizeof ck, "%s/final", run_dir);
    const double ckpt_bytes_final = folder_bytes(ck);
    snprintf(ck, sizeof ck, "%s/0", run_dir);
    const double ckpt_bytes_state = folder_bytes(ck);
    const double ckpt_bytes = ckpt_bytes_final + (n_ckpt - 1) * ckpt_bytes_state;

    const double seed_steps = SEED_TOKENS / SEED_BATCH, seed_evals = floor(seed_steps / SEED_EVAL_EVERY) + 1;
    const double seed_30k = floor(seed_steps / SEED_EVERY_30K);
    const double seed_eval_tokens = SEED_EVAL_BATCHES * SEED_MODEL_SEQS * SEQ;
    const double param_bytes = (double)sae.n_total * 4;
    /* A numbered checkpoint of the seed's run: parameters, Adam's moments and the bf16 buffer. */
    const double seed_state_bytes = 3 * param_bytes + SEED_BUFFER_ROWS * BENCH_D_MLP * 2;
    struct {
        const char *name;
        double measured, per, per_unit;
        const char *unit;
        double seed;
    } p[] = {
        {"SAE step", t->step, t->step / (double)steps, t->step / (double)steps, "step", 0},
        {"batches", t->batch, t->batch / (double)steps, t->batch / (double)steps, "step", 0},
        {"refills (model forward)", t->refill, t->refill, t->refill / fwd_tokens, "token forwarded", 0},
        {"eval: frequencies", t->eval_freq, t->eval_freq / (double)n_evals,
         t->eval_freq / (double)n_evals / eval_tokens, "eval token", 0},
        {"eval: recons (later evals)", t->eval_other - first_recons, later_recons, later_recons / eval_tokens,
         "eval token", 0},
        {"eval: recons (first eval)", first_recons, first_recons, first_recons / eval_tokens, "eval token", 0},
        {"checkpoints", t->checkpoint, t->checkpoint / (double)n_ckpt, ckpt_bytes > 0 ? t->checkpoint / ckpt_bytes : 0,
         "byte", 0},
        {"plugins (reinit_dead)", t->plugins, n_reinit > 0 ? t->plugins / (double)n_reinit : t->plugins,
         from_steps     ? t->plugins / (double)steps
         : n_reinit > 0 ? t->plugins / (double)n_reinit / (5.0 * (double)eval_seqs * SEQ)
                        : 0,
         from_steps ? "step" : "row", 0},
        {"logging", t->logging, t->logging / (double)steps, t->logging / (double)steps, "step", 0},
    };
    const int n_parts = (int)(sizeof p / sizeof *p);
    const int fixed = mode == SAEFW_RECONS_FIXED;
    p[0].seed = p[0].per_unit * seed_steps;
    p[1].seed = p[1].per_unit * seed_steps;
    p[2].seed = p[2].per_unit * (SEED_TOKENS + SEED_BUFFER_ROWS);
    p[3].seed = p[3].per_unit * seed_eval_tokens * seed_evals;
    p[4].seed = p[4].per_unit * seed_eval_tokens * (seed_evals - (fixed ? 1 : 0));
    p[5].seed = fixed ? p[5].per_unit * seed_eval_tokens : 0;
    p[6].seed = p[6].per_unit * (seed_30k * seed_state_bytes + 2 * param_bytes);
    /* from_steps: a count every step (the re-init itself is a few column writes). */
    p[7].seed = from_steps ? p[7].per_unit * seed_steps
                           : p[7].per_unit * seed_30k * SEED_REINIT_BATCHES * SEED_MODEL_SEQS * SEQ;
    p[8].seed = p[8].per_unit * seed_steps;
    printf("  counted here: %ld steps, %.0f tokens forwarded for the buffer (%lld refills after the first fill), %lld "
           "evaluations of %.0f tokens, %lld checkpoints (%.2f GB), %lld reinit_dead passes\n",
           steps, fwd_tokens, (long long)buf.refills - 1, (long long)n_evals, eval_tokens, (long long)n_ckpt,
           ckpt_bytes / 1e9, (long long)n_reinit);
    printf("  the seed's run: %.0f steps, %.3g tokens forwarded for the buffer, %.0f evaluations of %.0f tokens, %.0f "
           "checkpoints of %.2f GB, %.0f reinit_dead passes over %.0f rows\n",
           seed_steps, SEED_TOKENS + SEED_BUFFER_ROWS, seed_evals, seed_eval_tokens, seed_30k, seed_state_bytes / 1e9,
           seed_30k, SEED_REINIT_BATCHES * SEED_MODEL_SEQS * SEQ);
    double total = 0;
    for (int i = 0; i < n_parts; i++) total += p[i].seed;
    printf("  %-28s %10s %12s %14s %12s %8s\n", "part", "here s", "each s", "s per unit", "seed run h", "share");
    for (int i = 0; i < n_parts; i++)
        printf("  %-28s %10.2f %12.4g %14.4g %12.2f %7.2f%%   (unit: %s)\n", p[i].name, p[i].measured, p[i].per,
               p[i].per_unit, p[i].seed / 3600, 100 * p[i].seed / total, p[i].unit);
    printf("  projected seed run on this machine: %.1f hours (%.1f days); outside the SAE step: %.1f %% (target <= 15 "
           "%%)\n",
           total / 3600, total / 86400, 100 * (total - p[0].seed) / total);
    printf("  rest (loop bookkeeping not in any part) here: %.2f s of %.2f s\n",
           t->total - (t->step + t->batch + t->refill + t->eval_freq + t->eval_other + t->checkpoint + t->plugins +
                       t->logging),
           t->total);

    saefw_recons_evaluator_free(&rev);
    saefw_opts_free(ropts);
    saefw_opts_free(opts);
    saefw_plugin_unload(reinit);
    saefw_plugin_unload(adam);
    saefw_sae_free(&sae);
    saefw_buffer_free(&buf);
    saefw_source_free(esrc);
    saefw_source_free(src);
    saefw_tokens_free(tok);
    saefw_model_free(m);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "bench_run: could not remove %s\n", dir);
    return 0;
}
