/* A transcoder's data on the bundled tiny model (issue 16, point 2): the model source with a target
 * site gives rows [input | target] equal, bit for bit, to two one-site sources over the same tokens;
 * the transcoder's reconstruction score reads the input site of the same forward (checked against a
 * forward written here that replaces hook_mlp_out with rows captured by a separate forward, over a
 * batch the forward runs in more than one chunk), a transcoder that outputs zero scores exactly as
 * the zero-ablation; a target site before the input site and mismatched widths are one-line errors;
 * and a short training run through saefw_train records the score. */
#include "model.h"
#include "model_source.h"
#include "plugin_loader.h"
#include "testutil.h"
#include "eval.h"
#include "train.h"

#define MODEL_DIR "../models/tiny-1l/"
#define SEQ 128
#define MB 32 /* sequences per model batch: 4096 tokens, which the forward runs in two chunks */

static saefw_tokens *open_tokens(void) {
    char err[512];
    saefw_tokens *t;
    saefw_tokens_opts to = {.path = MODEL_DIR "tokens.npy", .seq_len = SEQ, .bos = 256, .shuffle = 1, .seed = 7};
    REQUIRE(saefw_tokens_open(&to, &t, err, sizeof err) == 0, "tokens: %s", err);
    return t;
}

static saefw_hook hook_of(const saefw_model *m, const char *name) {
    char err[512];
    saefw_hook h;
    REQUIRE(saefw_model_hook_resolve(m, name, 0, &h, err, sizeof err) == 0, "hook %s: %s", name, err);
    return h;
}

/* The test's own replacement: rows of a separate capture, in call order. */
typedef struct {
    const saefw_sae *sae;
    saefw_sae_eval *e;
    const float *x_in;
    int64_t cursor, calls;
} own_ud;

static int own_replace(void *vud, float *acts, int64_t rows, int64_t width, char *err, size_t errlen) {
    (void)err;
    (void)errlen;
    own_ud *u = vud;
    for (int64_t r = 0; r < rows; r += 512) {
        const int64_t k = rows - r < 512 ? rows - r : 512;
        const float *y =
            saefw_sae_eval_forward_xy(u->sae, u->e, u->x_in + (u->cursor + r) * u->sae->d_in, NULL, k, NULL);
        memcpy(acts + r * width, y, sizeof(float) * (size_t)(k * width));
    }
    u->cursor += rows;
    u->calls++;
    return 0;
}

int main(void) {
    char err[512];
    saefw_model *model;
    REQUIRE(saefw_model_load(MODEL_DIR "model.safetensors", NULL, &model, err, sizeof err) == 0, "model: %s", err);
    const saefw_hook h_in = hook_of(model, "ln2.hook_normalized"), h_out = hook_of(model, "mlp_out");
    const int64_t d_in = saefw_model_hook_width(model, h_in), d_out = saefw_model_hook_width(model, h_out);

    /* 1. Rows [input | target] against one-site sources over the same token stream. */
    saefw_tokens *t2 = open_tokens(), *ta = open_tokens(), *tb = open_tokens();
    saefw_source *s2, *sa, *sb;
    saefw_model_source_opts o2 = {model, t2, h_in, 4, 5}, oa = {model, ta, h_in, 4, 5}, ob = {model, tb, h_out, 4, 5};
    REQUIRE(saefw_source_model_xy(&o2, h_out, &s2, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_source_model(&oa, &sa, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_source_model(&ob, &sb, err, sizeof err) == 0, "%s", err);
    CHECK(s2->d_act == d_in + d_out && s2->d_target == d_out && sa->d_target == 0, "widths %lld, %lld",
          (long long)s2->d_act, (long long)s2->d_target);
    enum { N = 700 };
    float *r2 = malloc(sizeof(float) * N * (size_t)(d_in + d_out)), *ra = malloc(sizeof(float) * N * (size_t)d_in);
    float *rb = malloc(sizeof(float) * N * (size_t)d_out);
    REQUIRE(r2 && ra && rb, "out of memory");
    REQUIRE(s2->next(s2, r2, N, err, sizeof err) == 0 && sa->next(sa, ra, N, err, sizeof err) == 0 &&
                sb->next(sb, rb, N, err, sizeof err) == 0,
            "%s", err);
    int64_t bad = 0;
    for (int64_t r = 0; r < N; r++) {
        bad += memcmp(r2 + r * (d_in + d_out), ra + r * d_in, sizeof(float) * (size_t)d_in) != 0;
        bad += memcmp(r2 + r * (d_in + d_out) + d_in, rb + r * d_out, sizeof(float) * (size_t)d_out) != 0;
    }
    printf("two-site rows vs one-site sources: %lld of %d rows differ\n", (long long)bad, N);
    CHECK(bad == 0, "the two-site source's rows differ from the one-site sources'");
    saefw_source *sx;
    saefw_model_source_opts ox = {model, t2, h_out, 4, 5};
    CHECK(saefw_source_model_xy(&ox, h_in, &sx, err, sizeof err) != 0 && strstr(err, "must come after") &&
              !strchr(err, '\n'),
          "a target before the input was accepted: %s", err);
    printf("  target before input: %s\n", err);

    /* 2. The score against the test's own forward on fixed rows. */
    saefw_sae tc;
    REQUIRE(saefw_sae_alloc_xy(&tc, d_in, d_out, 4 * d_in, 1e-3f, err, sizeof err) == 0, "%s", err);
    tc.transcoder = 1;
    tc.apply_b_dec_to_input = 0;
    saefw_rng rng;
    saefw_rng_seed(&rng, 3);
    saefw_sae_init_params(&tc, &rng);
    for (int64_t i = 0; i < d_out; i++) tc.p[SAEFW_B_DEC][i] = (float)(0.1 * saefw_rng_normal(&rng));
    int32_t *rows = malloc(sizeof(int32_t) * MB * SEQ);
    REQUIRE(rows, "out of memory");
    REQUIRE(saefw_tokens_next(ta, rows, MB, saefw_model_config(model)->d_vocab, err, sizeof err) == 0, "%s", err);
    saefw_recons got = {0};
    REQUIRE(saefw_transcoder_recons_score(model, ta, h_in, h_out, &tc, rows, 1, MB, NULL, 1, &got, err, sizeof err) ==
                0,
            "%s", err);
    printf("transcoder score %.6f (clean %.6f, with it %.6f, zero-ablated %.6f)\n", got.score, got.loss_clean,
           got.loss_recons, got.loss_zero);

    saefw_model_work *w;
    REQUIRE(saefw_model_work_alloc(model, MB, SEQ, &w, err, sizeof err) == 0, "%s", err);
    float *x_in = malloc(sizeof(float) * MB * SEQ * (size_t)d_in);
    REQUIRE(x_in, "out of memory");
    saefw_forward_opts fo;
    memset(&fo, 0, sizeof fo);
    fo.capture = &h_in;
    fo.capture_out = x_in;
    fo.stop_after_capture = 1;
    REQUIRE(saefw_model_forward(model, w, rows, MB, SEQ, &fo, err, sizeof err) == 0, "%s", err);
    own_ud u = {&tc, NULL, x_in, 0, 0};
    REQUIRE(saefw_sae_eval_alloc(&u.e, &tc, 512, err, sizeof err) == 0, "%s", err);
    saefw_intervention iv = {h_out, SAEFW_INTERVENE_REPLACE, NULL, own_replace, &u};
    double own = 0;
    memset(&fo, 0, sizeof fo);
    fo.intervention = &iv;
    fo.loss_out = &own;
    REQUIRE(saefw_model_forward(model, w, rows, MB, SEQ, &fo, err, sizeof err) == 0, "%s", err);
    printf("  the test's own forward: loss %.6f over %lld intervention calls\n", own, (long long)u.calls);
    CHECK(u.calls > 1, "the batch ran in one chunk; the test means to cover several");
    t_close1("loss with the transcoder", got.loss_recons, own, 1e-6);
    CHECK(got.loss_clean < got.loss_zero, "clean %g not below zero-ablated %g", got.loss_clean, got.loss_zero);

    /* A transcoder that outputs zero is the zero-ablation, exactly. */
    memset(tc.p[SAEFW_W_DEC], 0, sizeof(float) * (size_t)tc.numel[SAEFW_W_DEC]);
    memset(tc.p[SAEFW_B_DEC], 0, sizeof(float) * (size_t)d_out);
    saefw_recons zero = got;
    REQUIRE(saefw_transcoder_recons_score(model, ta, h_in, h_out, &tc, rows, 1, MB, NULL, 0, &zero, err, sizeof err) ==
                0,
            "%s", err);
    printf("  a zero transcoder: loss %.9g, zero-ablated %.9g, score %g\n", zero.loss_recons, zero.loss_zero,
           zero.score);
    CHECK(zero.loss_recons == zero.loss_zero && zero.score == 0.0, "a zero output is not the zero-ablation");

    /* Mismatched widths: one line. */
    saefw_sae small;
    REQUIRE(saefw_sae_alloc_xy(&small, d_in, d_out + 1, 8, 1e-3f, err, sizeof err) == 0, "%s", err);
    small.transcoder = 1;
    small.apply_b_dec_to_input = 0;
    CHECK(saefw_transcoder_recons_score(model, ta, h_in, h_out, &small, rows, 1, MB, NULL, 1, &zero, err, sizeof err) !=
                  0 &&
              strstr(err, "widths") && !strchr(err, '\n'),
          "mismatched widths accepted: %s", err);
    printf("  mismatched widths: %s\n", err);
    saefw_sae_free(&small);

    /* 3. A short training run on the two-site source, with the score as the evaluator. */
    saefw_sae_init_params(&tc, &rng);
    saefw_buffer buf;
    REQUIRE(saefw_buffer_init(&buf, s2, 256 * 4, 256, SAEFW_BUF_F32, 5, err, sizeof err) == 0, "%s", err);
    saefw_loaded_plugin *adam;
    saefw_opts *opts;
    REQUIRE(saefw_plugin_load("adam", saefw_host_table(), &adam, err, sizeof err) == 0 &&
                saefw_opts_new(adam, &opts, err, sizeof err) == 0 &&
                saefw_opts_set_number(opts, adam, "lr", 1e-3, err, sizeof err) == 0,
            "adam: %s", err);
    saefw_recons_evaluator rev;
    saefw_recons_evaluator_init(&rev, model, t2, h_out, 1, 4, SAEFW_RECONS_FIXED, 5);
    rev.transcoder = 1;
    rev.hook_in = h_in;
    saefw_evaluator *evs[1] = {&rev.ev};
    saefw_train_opts to = {0};
    to.sae = &tc;
    to.buffer = &buf;
    to.steps = 20;
    to.optimizer.plugin = adam;
    to.optimizer.opts = opts;
    to.eval_every = 10;
    to.evaluators = evs;
    to.n_evaluators = 1;
    to.freq_batches = 1;
    saefw_train_result res;
    REQUIRE(saefw_train(&to, &res, err, sizeof err) == 0, "train: %s", err);
    const double score = saefw_metrics_get(&res.last, "recons_score");
    printf("training 20 steps: loss %.4f, transcoder score %.4f\n", res.last.loss, score);
    CHECK(isfinite(res.last.loss) && isfinite(score), "loss %g, score %g", res.last.loss, score);

    saefw_recons_evaluator_free(&rev);
    saefw_opts_free(opts);
    saefw_plugin_unload(adam);
    saefw_buffer_free(&buf);
    saefw_sae_eval_free(u.e);
    saefw_model_work_free(w);
    saefw_sae_free(&tc);
    free(x_in);
    free(rows);
    free(r2);
    free(ra);
    free(rb);
    saefw_source_free(sa);
    saefw_source_free(sb);
    saefw_source_free(s2);
    saefw_tokens_free(t2);
    saefw_tokens_free(ta);
    saefw_tokens_free(tb);
    saefw_model_free(model);
    return t_finish("test_transcoder_data");
}
