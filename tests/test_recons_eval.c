/* The reconstruction score's evaluation set (issue 19, point 2). Default "fixed": the held-out rows
 * are the end of the training stream's first pass, the clean and zero-ablated losses are computed
 * once per run (a counter), every eval sees the same rows and losses, and a run resumed from a
 * checkpoint restores them without recomputing while its final weights stay bit-exact. "fresh" (the
 * seed's) reproduces the metrics an older build printed (fixture from
 * tests/reference/make_recons_fresh_fixture.sh) and leaves the training weights as "fixed" does. */
#include <cjson/cJSON.h>

#include "eval.h"
#include "model.h"
#include "model_source.h"
#include "plugin_loader.h"
#include "testutil.h"
#include "util.h"

#define MODEL_DIR "../models/tiny-1l/"
#define SEQ 32
#define BATCH 64
#define MODEL_BATCH 4
#define RECONS_BATCHES 2
#define STEPS 30

typedef struct {
    saefw_model *model;
    saefw_tokens *tokens;
    saefw_source *src;
    saefw_buffer buf;
    saefw_sae sae;
    saefw_loaded_plugin *adam;
    saefw_opts *opts;
    saefw_recons_evaluator rev;
} setup;

/* The pieces of a small run on the bundled model, as saefw.train makes them. */
static void setup_make(setup *s, saefw_recons_mode mode) {
    char err[512];
    memset(s, 0, sizeof *s);
    REQUIRE(saefw_model_load(MODEL_DIR "model.safetensors", NULL, &s->model, err, sizeof err) == 0, "model: %s", err);
    saefw_tokens_opts to = {.path = MODEL_DIR "tokens.npy", .seq_len = SEQ, .bos = 256, .shuffle = 1, .seed = 5};
    REQUIRE(saefw_tokens_open(&to, &s->tokens, err, sizeof err) == 0, "tokens: %s", err);
    saefw_hook hook;
    REQUIRE(saefw_model_hook_resolve(s->model, "post", 0, &hook, err, sizeof err) == 0, "hook: %s", err);
    saefw_model_source_opts so = {s->model, s->tokens, hook, MODEL_BATCH, 5};
    REQUIRE(saefw_source_model(&so, &s->src, err, sizeof err) == 0, "source: %s", err);
    REQUIRE(saefw_buffer_init(&s->buf, s->src, BATCH * 8, BATCH, SAEFW_BUF_F32, 5, err, sizeof err) == 0, "buffer: %s",
            err);
    const int64_t d = saefw_model_hook_width(s->model, hook);
    REQUIRE(saefw_sae_alloc(&s->sae, d, d * 2, 1e-3f, err, sizeof err) == 0, "sae: %s", err);
    saefw_rng rng;
    saefw_rng_seed(&rng, 5);
    saefw_sae_init_params(&s->sae, &rng);
    REQUIRE(saefw_plugin_load("adam", saefw_host_table(), &s->adam, err, sizeof err) == 0 &&
                saefw_opts_new(s->adam, &s->opts, err, sizeof err) == 0 &&
                saefw_opts_set_number(s->opts, s->adam, "lr", 1e-3, err, sizeof err) == 0,
            "adam: %s", err);
    saefw_recons_evaluator_init(&s->rev, s->model, s->tokens, hook, RECONS_BATCHES, MODEL_BATCH, mode, 5);
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

/* The losses each eval event reported. */
typedef struct {
    int n;
    int64_t step[16];
    double clean[16], recons[16], zero[16];
} seen;

static int on_event(void *ud, saefw_event ev, const saefw_metrics *m, char *err, size_t errlen) {
    (void)err, (void)errlen;
    seen *s = ud;
    if (ev == SAEFW_EVENT_LOG || s->n == 16) return SAEFW_EVENT_GO_ON;
    s->step[s->n] = m->step;
    s->clean[s->n] = saefw_metrics_get(m, "loss_clean");
    s->recons[s->n] = saefw_metrics_get(m, "loss_recons");
    s->zero[s->n] = saefw_metrics_get(m, "loss_zero_abl");
    s->n++;
    return SAEFW_EVENT_GO_ON;
}

static int train(setup *s, const char *run_dir, const char *resume_from, seen *out, char *err, size_t errlen) {
    saefw_evaluator *evs[1] = {&s->rev.ev};
    saefw_train_opts o = {0};
    o.sae = &s->sae;
    o.buffer = &s->buf;
    o.steps = STEPS;
    o.optimizer.plugin = s->adam;
    o.optimizer.opts = s->opts;
    o.eval_every = 10;
    o.checkpoint_every = 15;
    o.freq_batches = 1;
    o.run_dir = run_dir;
    o.resume_from = resume_from;
    o.seed = 5;
    o.evaluators = evs;
    o.n_evaluators = 1;
    o.on_event = on_event;
    o.event_ud = out;
    saefw_train_result res;
    memset(out, 0, sizeof *out);
    return saefw_train(&o, &res, err, errlen);
}

/* The mean clean loss over the rows, computed here with plain forwards. */
static double clean_loss(const setup *s, const int32_t *rows) {
    char err[256];
    saefw_model_work *w = NULL;
    REQUIRE(saefw_model_work_alloc(s->model, MODEL_BATCH, SEQ, &w, err, sizeof err) == 0, "work: %s", err);
    double sum = 0;
    for (int b = 0; b < RECONS_BATCHES; b++) {
        double l = NAN;
        saefw_forward_opts fo = {0};
        fo.loss_out = &l;
        REQUIRE(saefw_model_forward(s->model, w, rows + (int64_t)b * MODEL_BATCH * SEQ, MODEL_BATCH, SEQ, &fo, err,
                                    sizeof err) == 0,
                "forward: %s", err);
        sum += l;
    }
    saefw_model_work_free(w);
    return sum / RECONS_BATCHES;
}

static void test_fixed_and_resume(const char *tmp) {
    char err[1024], dir_a[1100], dir_b[1100], ckpt[1200];
    snprintf(dir_a, sizeof dir_a, "%s/a", tmp);
    snprintf(dir_b, sizeof dir_b, "%s/b", tmp);

    /* The uninterrupted run: evals at steps 0, 10, 20 and the end; checkpoint 0 at step 15. */
    setup a;
    setup_make(&a, SAEFW_RECONS_FIXED);
    seen sa;
    REQUIRE(train(&a, dir_a, NULL, &sa, err, sizeof err) == 0, "run a: %s", err);
    CHECK(sa.n == 4, "run a: %d eval events, expected 4", sa.n);
    CHECK(a.rev.base_evals == 1, "clean and zero-ablated losses computed %lld times in one run, expected once",
          (long long)a.rev.base_evals);
    int same = 1;
    for (int i = 1; i < sa.n; i++) same &= sa.clean[i] == sa.clean[0] && sa.zero[i] == sa.zero[0];
    CHECK(same && isfinite(sa.clean[0]) && isfinite(sa.zero[0]) && sa.zero[0] > sa.clean[0],
          "the fixed set's clean/zero-ablated losses differ between evals (first %.9g / %.9g)", sa.clean[0],
          sa.zero[0]);
    CHECK(isfinite(sa.recons[0]) && sa.recons[sa.n - 1] != sa.recons[0], "the loss with the SAE did not move: %.9g",
          sa.recons[0]);

    /* The set is the end of the first pass, and its clean loss is the plain forward's. */
    const int64_t n = RECONS_BATCHES * MODEL_BATCH;
    int32_t *want = malloc(sizeof(int32_t) * (size_t)(n * SEQ));
    REQUIRE(want, "malloc");
    REQUIRE(saefw_tokens_first_pass(a.tokens, saefw_tokens_rows(a.tokens) - n, want, n, 0, err, sizeof err) == 0,
            "first pass: %s", err);
    CHECK(a.rev.rows && !memcmp(a.rev.rows, want, sizeof(int32_t) * (size_t)(n * SEQ)),
          "the held-out rows are not the last %lld rows of the first pass", (long long)n);
    const double cl = clean_loss(&a, want);
    CHECK(fabs(cl - sa.clean[0]) <= 1e-12 * fabs(cl), "clean loss %.12g, plain forwards %.12g (diff %.3g)", sa.clean[0],
          cl, fabs(cl - sa.clean[0]));

    /* Resumed from the step-15 checkpoint in a fresh setup: nothing recomputed, the same set and
     * losses, the same final weights. */
    setup b;
    setup_make(&b, SAEFW_RECONS_FIXED);
    seen sb;
    snprintf(ckpt, sizeof ckpt, "%s/0", dir_a);
    REQUIRE(train(&b, NULL, ckpt, &sb, err, sizeof err) == 0, "resumed run: %s", err);
    (void)dir_b;
    CHECK(b.rev.base_evals == 0, "the resumed run computed the clean/zero-ablated losses %lld times, expected 0",
          (long long)b.rev.base_evals);
    CHECK(sb.n == 2 && sb.step[0] == 20, "resumed run: %d eval events (first at step %lld), expected 2 from step 20",
          sb.n, sb.n ? (long long)sb.step[0] : -1LL);
    for (int i = 0; i < sb.n && i + 2 < sa.n; i++)
        CHECK(sb.clean[i] == sa.clean[i + 2] && sb.zero[i] == sa.zero[i + 2] && sb.recons[i] == sa.recons[i + 2],
              "eval %d after resume: %.9g %.9g %.9g, uninterrupted %.9g %.9g %.9g", i, sb.clean[i], sb.recons[i],
              sb.zero[i], sa.clean[i + 2], sa.recons[i + 2], sa.zero[i + 2]);
    CHECK(b.rev.rows && !memcmp(b.rev.rows, want, sizeof(int32_t) * (size_t)(n * SEQ)),
          "the resumed run's held-out rows differ");
    CHECK(!memcmp(a.sae.params, b.sae.params, sizeof(float) * a.sae.n_total),
          "the resumed run's final weights differ from the uninterrupted run's");
    free(want);
    setup_free(&a);
    setup_free(&b);
}

/* "fresh" is the seed's: each eval draws new rows with the evaluator's generator through
 * saefw_recons_score, so two evals differ in their clean loss. */
static void test_fresh_api(void) {
    setup s;
    setup_make(&s, SAEFW_RECONS_FRESH);
    char err[512];
    saefw_rng rng = s.rev.rng;
    saefw_recons want;
    REQUIRE(saefw_recons_score(s.model, s.tokens, s.rev.hook, &s.sae, RECONS_BATCHES, MODEL_BATCH, &rng, &want, err,
                               sizeof err) == 0,
            "recons score: %s", err);
    seen sn;
    REQUIRE(train(&s, NULL, NULL, &sn, err, sizeof err) == 0, "fresh run: %s", err);
    /* The SAE has taken a step by then: only the losses without it are comparable. */
    CHECK(sn.n == 4 && sn.clean[0] == want.loss_clean && sn.zero[0] == want.loss_zero,
          "fresh eval 0: clean %.9g zero-ablated %.9g, saefw_recons_score %.9g %.9g", sn.clean[0], sn.zero[0],
          want.loss_clean, want.loss_zero);
    CHECK(sn.n == 4 && sn.clean[1] != sn.clean[0], "fresh evals drew the same rows (clean %.9g)", sn.clean[0]);
    CHECK(s.rev.base_evals == 0 && !s.rev.rows, "the fresh evaluator kept a fixed set");
    setup_free(&s);
}

static char *slurp(const char *path) {
    char *text = NULL, err[256];
    return saefw_read_file(path, &text, NULL, err, sizeof err) == 0 ? text : NULL;
}

/* The recons fields of metrics.jsonl's eval and end lines, as the fixture writes them. */
static void recons_lines(const char *run_dir, char *out, size_t n) {
    char p[1200];
    snprintf(p, sizeof p, "%s/metrics.jsonl", run_dir);
    char *text = slurp(p);
    REQUIRE(text, "read %s", p);
    out[0] = 0;
    size_t u = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        REQUIRE(j, "%s: a line is not JSON", p);
        const char *ev = cJSON_GetStringValue(cJSON_GetObjectItem(j, "event"));
        if (ev && strcmp(ev, "log") != 0 && u < n)
            u += (size_t)snprintf(out + u, n - u, "%s %d %.9g %.9g %.9g %.9g\n", ev,
                                  (int)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "step")),
                                  cJSON_GetNumberValue(cJSON_GetObjectItem(j, "recons_score")),
                                  cJSON_GetNumberValue(cJSON_GetObjectItem(j, "loss_clean")),
                                  cJSON_GetNumberValue(cJSON_GetObjectItem(j, "loss_recons")),
                                  cJSON_GetNumberValue(cJSON_GetObjectItem(j, "loss_zero_abl")));
        cJSON_Delete(j);
    }
    free(text);
}

/* The fixture's lines through the same formatting. */
static void fixture_lines(char *out, size_t n) {
    char *text = slurp("fixtures/recons/fresh_metrics.txt");
    REQUIRE(text, "read fixtures/recons/fresh_metrics.txt");
    out[0] = 0;
    size_t u = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char ev[16];
        int step;
        double v[4];
        REQUIRE(sscanf(line, "%15s %d %lf %lf %lf %lf", ev, &step, &v[0], &v[1], &v[2], &v[3]) == 6,
                "fixture line '%s'", line);
        if (u < n)
            u += (size_t)snprintf(out + u, n - u, "%s %d %.9g %.9g %.9g %.9g\n", ev, step, v[0], v[1], v[2], v[3]);
    }
    free(text);
}

static void test_cli(const char *bin, const char *tmp) {
    static char out[1 << 16];
    const char *args = "--num_tokens 16384 --batch_size 256 --buffer_mult 8 --eval_every 30 --recons_batches 1 "
                       "--report_tokens 0";
    int rc = t_run(out, sizeof out, "%s run ../experiments/quickstart.lua %s --recons_eval fresh --run_dir %s/fresh",
                   bin, args, tmp);
    CHECK(rc == 0, "fresh run: rc %d\n%s", rc, out);
    rc = t_run(out, sizeof out, "%s run ../experiments/quickstart.lua %s --run_dir %s/fixed", bin, args, tmp);
    CHECK(rc == 0, "fixed run: rc %d\n%s", rc, out);
    CHECK(strstr(out, "time ") && strstr(out, "SAE step") && strstr(out, "refills"), "no time split at the end:\n%s",
          out);

    char got[4096], want[4096], fixed[4096], p1[1200], p2[1200];
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/fresh", tmp);
    recons_lines(dir, got, sizeof got);
    fixture_lines(want, sizeof want);
    CHECK(want[0] && !strcmp(got, want),
          "recons_eval = fresh differs from the older build's metrics:\n%s--- fixture:\n%s", got, want);

    /* The evaluator has its own rows: the training stream, hence the weights, are the same. */
    snprintf(p1, sizeof p1, "%s/fresh/final/sae_weights.safetensors", tmp);
    snprintf(p2, sizeof p2, "%s/fixed/final/sae_weights.safetensors", tmp);
    size_t n1 = 0, n2 = 0;
    char *w1 = NULL, *w2 = NULL;
    CHECK(saefw_read_file(p1, &w1, &n1, got, sizeof got) == 0 && saefw_read_file(p2, &w2, &n2, got, sizeof got) == 0 &&
              n1 == n2 && !memcmp(w1, w2, n1),
          "final weights differ between recons_eval = fresh and fixed");
    free(w1);
    free(w2);

    /* metrics.jsonl: the same clean and zero-ablated loss at every eval, and a time split. */
    snprintf(dir, sizeof dir, "%s/fixed", tmp);
    recons_lines(dir, fixed, sizeof fixed);
    double c0 = NAN, z0 = NAN;
    int lines = 0, same = 1;
    for (char *line = strtok(fixed, "\n"); line; line = strtok(NULL, "\n"), lines++) {
        double v[4];
        REQUIRE(sscanf(line, "%*s %*d %lf %lf %lf %lf", &v[0], &v[1], &v[2], &v[3]) == 4, "line '%s'", line);
        if (!lines) c0 = v[1], z0 = v[3];
        same &= v[1] == c0 && v[3] == z0;
    }
    CHECK(lines == 4 && same && isfinite(c0), "fixed: %d eval/end lines, same base losses %d", lines, same);
    snprintf(p1, sizeof p1, "%s/fixed/metrics.jsonl", tmp);
    char *m = slurp(p1);
    CHECK(m && strstr(m, "\"event\":\"end\"") && strstr(strstr(m, "\"event\":\"end\""), "\"time_s\":{\"step\":"),
          "the end line has no time_s");
    free(m);

    rc = t_run(out, sizeof out, "%s run ../experiments/quickstart.lua %s --recons_eval sometimes --run_dir %s/bad", bin,
               args, tmp);
    CHECK(rc != 0 && strstr(out, "recons_eval = 'sometimes' is not one of fixed, fresh"), "bad recons_eval: rc %d\n%s",
          rc, out);
}

int main(void) {
    const char *tmp = t_tmpdir("recons_eval");
    test_fresh_api();
    test_fixed_and_resume(tmp);
    const char *bin = getenv("SAEFW_BIN");
    if (bin) test_cli(bin, tmp);
    else fprintf(stderr, "SAEFW_BIN is not set: the command-line checks are skipped\n");
    return t_finish("test_recons_eval");
}
