/* Feature frequencies counted in the reconstruction score's own SAE pass (eval_freq "recons", the
 * default with the fixed held-out set): the counts of saefw_recons_score_counting equal an
 * independent count over the same rows (the hook captured by a plain forward, the encoder computed
 * here in double), a training run's frequencies (its final sparsity file and dead fraction) are those
 * counts over the held-out rows with no frequency pass of their own, and "separate" keeps the seed's
 * own draws. */
#include <math.h>

#include "checkpoint.h"
#include "eval.h"
#include "model.h"
#include "model_source.h"
#include "plugin_loader.h"
#include "tensorfile.h"
#include "testutil.h"
#include "util.h"

#define MODEL_DIR "../models/tiny-1l/"
#define SEQ 32
#define BATCH 64
#define MODEL_BATCH 4
#define RECONS_BATCHES 2
#define STEPS 12
#define N_ROWS ((int64_t)RECONS_BATCHES * MODEL_BATCH * SEQ)

typedef struct {
    saefw_model *model;
    saefw_tokens *tokens;
    saefw_source *src;
    saefw_buffer buf;
    saefw_sae sae;
    saefw_hook hook;
    saefw_loaded_plugin *adam;
    saefw_opts *opts;
    saefw_recons_evaluator rev;
} setup;

static void setup_make(setup *s, saefw_eval_freq_mode fm) {
    char err[512];
    memset(s, 0, sizeof *s);
    REQUIRE(saefw_model_load(MODEL_DIR "model.safetensors", NULL, &s->model, err, sizeof err) == 0, "model: %s", err);
    saefw_tokens_opts to = {.path = MODEL_DIR "tokens.npy", .seq_len = SEQ, .bos = 256, .shuffle = 1, .seed = 7};
    REQUIRE(saefw_tokens_open(&to, &s->tokens, err, sizeof err) == 0, "tokens: %s", err);
    REQUIRE(saefw_model_hook_resolve(s->model, "post", 0, &s->hook, err, sizeof err) == 0, "hook: %s", err);
    saefw_model_source_opts so = {s->model, s->tokens, s->hook, MODEL_BATCH, 7};
    REQUIRE(saefw_source_model(&so, &s->src, err, sizeof err) == 0, "source: %s", err);
    REQUIRE(saefw_buffer_init(&s->buf, s->src, BATCH * 8, BATCH, SAEFW_BUF_F32, 7, err, sizeof err) == 0, "buffer: %s",
            err);
    const int64_t d = saefw_model_hook_width(s->model, s->hook);
    REQUIRE(saefw_sae_alloc(&s->sae, d, d * 2, 1e-3f, err, sizeof err) == 0, "sae: %s", err);
    saefw_rng rng;
    saefw_rng_seed(&rng, 7);
    saefw_sae_init_params(&s->sae, &rng);
    /* Thresholds that make some features rare and some never fire, so that the counts differ. */
    for (int64_t j = 0; j < s->sae.d_sae; j++) s->sae.p[SAEFW_B_ENC][j] = -0.02f * (float)(j % 16);
    REQUIRE(saefw_plugin_load("adam", saefw_host_table(), &s->adam, err, sizeof err) == 0 &&
                saefw_opts_new(s->adam, &s->opts, err, sizeof err) == 0 &&
                saefw_opts_set_number(s->opts, s->adam, "lr", 1e-4, err, sizeof err) == 0,
            "adam: %s", err);
    saefw_recons_evaluator_init(&s->rev, s->model, s->tokens, s->hook, RECONS_BATCHES, MODEL_BATCH, SAEFW_RECONS_FIXED,
                                7);
    saefw_recons_evaluator_set_freq(&s->rev, fm);
}

static void setup_free(setup *s) {
    saefw_recons_evaluator_free(&s->rev);
    saefw_opts_free(s->opts);
    saefw_plugin_unload(s->adam);
    saefw_sae_free(&s->sae);
    saefw_buffer_free(&s->buf);
    saefw_source_free(s->src);
    saefw_tokens_free(s->tokens);
    saefw_model_free(s->model);
}

/* The held-out rows as the evaluator draws them: the end of the stream's first pass. */
static int32_t *held_out_rows(const setup *s) {
    char err[256];
    int32_t *rows = malloc(sizeof(int32_t) * (size_t)N_ROWS);
    REQUIRE(rows, "out of memory");
    const int64_t n = RECONS_BATCHES * MODEL_BATCH;
    REQUIRE(saefw_tokens_first_pass(s->tokens, saefw_tokens_rows(s->tokens) - n, rows, n,
                                    saefw_model_config(s->model)->d_vocab, err, sizeof err) == 0,
            "rows: %s", err);
    return rows;
}

/* Independent count: hook activations from plain forwards (no intervention), the encoder in double.
 * `near` gets the entries whose pre-activation is within 1e-5 of zero, where float and double may
 * disagree about firing. */
static void reference_counts(const setup *s, const int32_t *rows, int64_t *count, int64_t *near) {
    char err[256];
    const saefw_sae *sae = &s->sae;
    const int64_t d_in = sae->d_in, d_sae = sae->d_sae;
    saefw_model_work *w = NULL;
    REQUIRE(saefw_model_work_alloc(s->model, MODEL_BATCH, SEQ, &w, err, sizeof err) == 0, "work: %s", err);
    float *acts = malloc(sizeof(float) * (size_t)(MODEL_BATCH * SEQ * d_in));
    double *xc = malloc(sizeof(double) * (size_t)d_in);
    REQUIRE(acts && xc, "out of memory");
    memset(count, 0, sizeof(int64_t) * (size_t)d_sae);
    memset(near, 0, sizeof(int64_t) * (size_t)d_sae);
    for (int b = 0; b < RECONS_BATCHES; b++) {
        saefw_forward_opts fo = {0};
        fo.capture = &s->hook;
        fo.capture_out = acts;
        fo.stop_after_capture = 1;
        REQUIRE(saefw_model_forward(s->model, w, rows + (int64_t)b * MODEL_BATCH * SEQ, MODEL_BATCH, SEQ, &fo, err,
                                    sizeof err) == 0,
                "forward: %s", err);
        for (int64_t r = 0; r < MODEL_BATCH * SEQ; r++) {
            for (int64_t i = 0; i < d_in; i++) xc[i] = (double)acts[r * d_in + i] - sae->p[SAEFW_B_DEC][i];
            for (int64_t j = 0; j < d_sae; j++) {
                double pre = sae->p[SAEFW_B_ENC][j];
                for (int64_t i = 0; i < d_in; i++) pre += xc[i] * sae->p[SAEFW_W_ENC][i * d_sae + j];
                count[j] += pre > 0;
                near[j] += fabs(pre) < 1e-5;
            }
        }
    }
    free(xc);
    free(acts);
    saefw_model_work_free(w);
}

static void check_counts(const char *what, const int64_t *got, const int64_t *ref, const int64_t *near, int64_t d) {
    int64_t bad = 0, varied = 0;
    for (int64_t j = 0; j < d; j++) {
        const int64_t diff = got[j] > ref[j] ? got[j] - ref[j] : ref[j] - got[j];
        bad += diff > near[j];
        varied += ref[j] > 0 && ref[j] < N_ROWS;
    }
    CHECK(bad == 0, "%s: %lld of %lld features counted differently from the reference", what, (long long)bad,
          (long long)d);
    CHECK(varied > d / 4, "%s: only %lld features fire on some but not all rows (the test needs variety)", what,
          (long long)varied);
}

static void test_counting(void) {
    setup s;
    setup_make(&s, SAEFW_EVAL_FREQ_AUTO);
    char err[512];
    const int64_t d = s.sae.d_sae;
    int32_t *rows = held_out_rows(&s);
    int64_t *got = calloc((size_t)d, sizeof(int64_t)), *ref = calloc((size_t)d, sizeof(int64_t));
    int64_t *near = calloc((size_t)d, sizeof(int64_t));
    REQUIRE(got && ref && near, "out of memory");
    saefw_recons r = {0}, plain = {0};
    int64_t counted = -1;
    REQUIRE(saefw_recons_score_counting(s.model, s.tokens, NULL, s.hook, &s.sae, rows, RECONS_BATCHES, MODEL_BATCH,
                                        NULL, 1, got, &counted, &r, err, sizeof err) == 0,
            "counting: %s", err);
    CHECK(counted == N_ROWS, "counted %lld rows, want %lld", (long long)counted, (long long)N_ROWS);
    reference_counts(&s, rows, ref, near);
    check_counts("fixed rows", got, ref, near, d);
    /* Counting changes nothing of the score itself. */
    REQUIRE(saefw_recons_score_fixed(s.model, s.tokens, s.hook, &s.sae, rows, RECONS_BATCHES, MODEL_BATCH, 1, &plain,
                                     err, sizeof err) == 0,
            "score: %s", err);
    CHECK(r.score == plain.score && r.loss_recons == plain.loss_recons && r.loss_clean == plain.loss_clean &&
              r.loss_zero == plain.loss_zero,
          "the score with counting %.9g differs from the score without %.9g", r.score, plain.score);
    /* Only the loss with the SAE (the base losses given): the same counts. */
    int64_t *again = calloc((size_t)d, sizeof(int64_t));
    REQUIRE(again, "out of memory");
    REQUIRE(saefw_recons_score_counting(s.model, s.tokens, NULL, s.hook, &s.sae, rows, RECONS_BATCHES, MODEL_BATCH,
                                        NULL, 0, again, &counted, &r, err, sizeof err) == 0,
            "counting: %s", err);
    CHECK(counted == N_ROWS && memcmp(again, got, sizeof(int64_t) * (size_t)d) == 0,
          "counts without the base losses differ");
    CHECK(r.score == plain.score, "score without the base losses %.9g, want %.9g", r.score, plain.score);
    free(again);
    free(near);
    free(ref);
    free(got);
    free(rows);
    setup_free(&s);
}

typedef struct {
    double frac_dead, eval_freq_s;
    int evals;
} seen;

static int on_event(void *ud, saefw_event ev, const saefw_metrics *m, char *err, size_t errlen) {
    (void)err, (void)errlen;
    seen *s = ud;
    if (ev == SAEFW_EVENT_LOG) return SAEFW_EVENT_GO_ON;
    s->frac_dead = m->frac_dead;
    s->eval_freq_s = m->time.eval_freq;
    s->evals++;
    return SAEFW_EVENT_GO_ON;
}

static void train(setup *s, const char *run_dir, seen *out) {
    char err[1024];
    saefw_evaluator *evs[1] = {&s->rev.ev};
    saefw_train_opts o = {0};
    o.sae = &s->sae;
    o.buffer = &s->buf;
    o.steps = STEPS;
    o.optimizer.plugin = s->adam;
    o.optimizer.opts = s->opts;
    o.eval_every = 5;
    o.freq_batches = 1;
    o.run_dir = run_dir;
    o.seed = 7;
    o.evaluators = evs;
    o.n_evaluators = 1;
    o.on_event = on_event;
    o.event_ud = out;
    saefw_train_result res;
    memset(out, 0, sizeof *out);
    REQUIRE(saefw_train(&o, &res, err, sizeof err) == 0, "train: %s", err);
}

static void test_run(const char *tmp) {
    char dir[1100], path[1300], err[512];
    T_FMT(dir, "%s/recons", tmp);
    setup s;
    setup_make(&s, SAEFW_EVAL_FREQ_AUTO);
    seen got;
    train(&s, dir, &got);
    CHECK(got.evals >= 3, "%d eval events", got.evals);
    CHECK(got.eval_freq_s == 0.0, "a frequency pass of its own ran (%.3f s) although the score counted them",
          got.eval_freq_s);
    /* The final eval's frequencies: the counts over the held-out rows with the final weights. */
    const int64_t d = s.sae.d_sae;
    int32_t *rows = held_out_rows(&s);
    int64_t *ref = calloc((size_t)d, sizeof(int64_t)), *near = calloc((size_t)d, sizeof(int64_t));
    float *lg = malloc(sizeof(float) * (size_t)d);
    REQUIRE(ref && near && lg, "out of memory");
    reference_counts(&s, rows, ref, near);
    T_FMT(path, "%s/final/" SAEFW_SPARSITY_FILE, dir);
    saefw_tensorfile *tf = NULL;
    REQUIRE(saefw_tf_open(path, &tf, err, sizeof err) == 0, "%s", err);
    const saefw_tensor_info *t = saefw_tf_find(tf, "sparsity");
    REQUIRE(t && saefw_tensor_to_f32(t, lg, err, sizeof err) == 0, "%s: sparsity: %s", path, t ? err : "missing");
    int64_t bad = 0, dead = 0;
    for (int64_t j = 0; j < d; j++) {
        dead += ref[j] == 0;
        /* The file's value from the reference count, as the engine writes it. */
        const float want = log10f((float)((double)ref[j] / (double)N_ROWS) + SAEFW_SPARSITY_EPS);
        bad += near[j] == 0 && !(lg[j] == want);
    }
    CHECK(bad == 0, "%lld sparsity values differ from the held-out rows' counts", (long long)bad);
    CHECK(fabs(got.frac_dead - (double)dead / (double)d) < 1e-12 || near[0] + dead == 0,
          "final dead fraction %.6f, the held-out rows' %.6f", got.frac_dead, (double)dead / (double)d);
    saefw_tf_close(tf);
    free(lg);
    free(near);
    free(ref);
    free(rows);
    setup_free(&s);

    /* "separate": the seed's own draws, a pass of their own. */
    T_FMT(dir, "%s/separate", tmp);
    setup_make(&s, SAEFW_EVAL_FREQ_SEPARATE);
    CHECK(s.rev.ev.feature_freq == NULL, "separate: the evaluator still offers frequencies");
    train(&s, dir, &got);
    CHECK(got.eval_freq_s > 0.0, "separate: no frequency pass of its own ran");
    setup_free(&s);

    /* auto with the seed's fresh draws is separate too. */
    saefw_recons_evaluator e;
    saefw_recons_evaluator_init(&e, NULL, NULL, s.hook, 1, 1, SAEFW_RECONS_FRESH, 1);
    saefw_recons_evaluator_set_freq(&e, SAEFW_EVAL_FREQ_AUTO);
    CHECK(e.ev.feature_freq == NULL && !e.count_freq, "auto with fresh draws counts in the score's pass");
    saefw_eval_freq_mode fm;
    CHECK(saefw_eval_freq_mode_parse("recons", &fm) == 0 && fm == SAEFW_EVAL_FREQ_RECONS, "parse recons");
    CHECK(saefw_eval_freq_mode_parse("Recons", &fm) == -1, "parse is case-sensitive");
}

int main(void) {
    const char *tmp = t_tmpdir("eval_freq");
    test_counting();
    test_run(tmp);
    return t_finish("test_eval_freq");
}
