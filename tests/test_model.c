/* Tests of the model host (engine/model_config.c, model_load.c, model_forward.c) against the PyTorch
 * reference in tests/fixtures/model/ (tests/reference/make_model_fixtures.py) and the bundled tiny
 * model in models/tiny-1l/. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "tensorfile.h"
#include "parallel.h"
#include "testutil.h"
#include "util.h"

#define FIX "fixtures/model/"
/* fp32 forward against the float64 reference: max |diff| relative to the largest |reference| of
 * each tensor, and relative difference of the losses. */
#define ACT_TOL 1e-4
#define LOSS_TOL 1e-5
/* Issue 3's criterion: activations and logits within 1e-4 max absolute difference. */
#define ACT_ABS_TOL 1e-4

static const char *const hook_short[] = {"resid_pre", "resid_mid", "post", "mlp_out", "resid_post"};
/* TransformerLens's other sites, by full name after "blocks.L." (ln_final's has no layer). */
static const char *const more_hooks[] = {"ln1.hook_normalized", "attn.hook_q", "attn.hook_k",         "attn.hook_v",
                                         "attn.hook_pattern",   "attn.hook_z", "ln2.hook_normalized", "mlp.hook_pre"};
#define N_MORE ((int)(sizeof more_hooks / sizeof more_hooks[0]))

static int contains(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

/* t_close (relative to the largest |want|) and an absolute bound on the same difference. */
static void close_act(const char *what, const float *got, const float *want, int64_t n) {
    t_close(what, got, want, n, ACT_TOL, 0);
    double md = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        md = d > md ? d : md;
    }
    CHECK(md <= ACT_ABS_TOL, "%s: max |diff| %.3e > %.0e", what, md, ACT_ABS_TOL);
}

static saefw_model *load(const char *path, const saefw_model_cfg *cfg) {
    saefw_model *m = NULL;
    char err[512];
    REQUIRE(saefw_model_load(path, cfg, &m, err, sizeof err) == 0, "load %s: %s", path, err);
    return m;
}

static int32_t *tokens_of(saefw_tensorfile *tf, const char *name, int64_t *B, int64_t *T) {
    const saefw_tensor_info *t = saefw_tf_find(tf, name);
    REQUIRE(t && t->dtype == SAEFW_DT_I32 && t->ndim == 2, "fixture tensor %s: int32 [B, T] expected", name);
    int32_t *tok = malloc(t->nbytes);
    REQUIRE(tok, "out of memory");
    memcpy(tok, t->data, t->nbytes);
    *B = t->shape[0];
    *T = t->shape[1];
    return tok;
}

/* Loading the .pth (config.json beside it) and the safetensors (config in metadata) gives the same
 * config and bit-identical weights; the .pth has no unembed.b_U, the safetensors has zeros. */
static void test_load_same(void) {
    printf("load: .pth and safetensors\n");
    saefw_model *a = load(FIX "model.pth", NULL), *b = load(FIX "model.safetensors", NULL);
    const saefw_model_cfg *ca = saefw_model_config(a), *cb = saefw_model_config(b);
    CHECK(ca->n_layers == 2 && ca->d_model == 32 && ca->d_mlp == 96 && ca->d_head == 6 && ca->n_heads == 4 &&
              ca->n_ctx == 16 && ca->d_vocab == 50,
          "config from config.json");
    CHECK(memcmp(ca, cb, sizeof *ca) == 0, "configs from config.json and metadata differ");
    size_t na, nb;
    const float *pa = saefw_model_params(a, &na), *pb = saefw_model_params(b, &nb);
    CHECK(na == nb && memcmp(pa, pb, na * sizeof(float)) == 0, "weights differ (%zu vs %zu floats)", na, nb);
    CHECK(saefw_model_param_bytes(a) == na * sizeof(float), "param bytes");
    printf("  %zu floats, identical: %s\n", na, na == nb && memcmp(pa, pb, na * sizeof(float)) == 0 ? "yes" : "no");

    /* An explicit cfg (as parsed from config.json) gives the same model. */
    char *text, err[512];
    size_t len;
    REQUIRE(saefw_read_file(FIX "config.json", &text, &len, err, sizeof err) == 0, "%s", err);
    saefw_model_cfg cfg;
    CHECK(saefw_model_cfg_from_json(text, "config.json", &cfg, err, sizeof err) == 0, "%s", err);
    free(text);
    saefw_model *c = load(FIX "model.pth", &cfg);
    size_t nc;
    const float *pc = saefw_model_params(c, &nc);
    CHECK(nc == na && memcmp(pa, pc, na * sizeof(float)) == 0, "explicit cfg gives other weights");
    saefw_model_free(a);
    saefw_model_free(b);
    saefw_model_free(c);
}

typedef struct {
    saefw_model *m;
    saefw_model_work *w;
    saefw_tensorfile *ref;
    int32_t *tok;
    int64_t B, T;
} fixture;

static int identity_fn(void *ud, float *acts, int64_t rows, int64_t width, char *err, size_t errlen) {
    (void)ud, (void)acts, (void)rows, (void)width, (void)err, (void)errlen;
    return 0;
}

static int half_fn(void *ud, float *acts, int64_t rows, int64_t width, char *err, size_t errlen) {
    int *calls = ud;
    (*calls)++;
    for (int64_t i = 0; i < rows * width; i++) acts[i] *= 0.5f;
    return 0;
}

static int failing_fn(void *ud, float *acts, int64_t rows, int64_t width, char *err, size_t errlen) {
    return saefw_errf(err, errlen, "sae says no");
}

static double loss_with(fixture *f, const saefw_intervention *iv) {
    double loss = -1;
    char err[512];
    saefw_forward_opts o = {.intervention = iv, .loss_out = &loss};
    CHECK(saefw_model_forward(f->m, f->w, f->tok, f->B, f->T, &o, err, sizeof err) == 0, "forward: %s", err);
    return loss;
}

static void test_forward(fixture *f, const char *label) {
    printf("forward (%s)\n", label);
    const saefw_model_cfg *c = saefw_model_config(f->m);
    int64_t n = f->B * f->T;
    char err[512];
    float *logits = malloc(sizeof(float) * (size_t)(n * c->d_vocab));
    REQUIRE(logits, "out of memory");
    double loss = -1, loss_only = -2;
    saefw_forward_opts o = {.logits_out = logits, .loss_out = &loss};
    CHECK(saefw_model_forward(f->m, f->w, f->tok, f->B, f->T, &o, err, sizeof err) == 0, "forward: %s", err);
    float *want = t_tensor(f->ref, "logits", NULL);
    close_act("logits", logits, want, n * c->d_vocab);
    t_close1("loss", loss, t_meta(f->ref, "loss"), LOSS_TOL);
    /* The loss without logits_out goes through the chunked unembed. */
    saefw_forward_opts o2 = {.loss_out = &loss_only};
    CHECK(saefw_model_forward(f->m, f->w, f->tok, f->B, f->T, &o2, err, sizeof err) == 0, "forward: %s", err);
    t_close1("loss (no logits_out)", loss_only, loss, 1e-6);
    free(want);
    free(logits);

    float *got = malloc(sizeof(float) * (size_t)(n * c->d_mlp)), *got2 = malloc(sizeof(float) * (size_t)(n * c->d_mlp));
    REQUIRE(got && got2, "out of memory");
    for (int L = 0; L < c->n_layers; L++) {
        for (int k = 0; k < 5; k++) {
            saefw_hook h;
            char name[96];
            CHECK(saefw_hook_parse(hook_short[k], L, &h, err, sizeof err) == 0, "%s", err);
            saefw_hook_name(h, name, sizeof name);
            int width = saefw_model_hook_width(f->m, h);
            float *ref = t_tensor(f->ref, name, NULL);
            saefw_forward_opts oc = {.capture = &h, .capture_out = got};
            CHECK(saefw_model_forward(f->m, f->w, f->tok, f->B, f->T, &oc, err, sizeof err) == 0, "%s: %s", name, err);
            close_act(name, got, ref, n * width);
            saefw_forward_opts os = {.capture = &h, .capture_out = got2, .stop_after_capture = 1};
            CHECK(saefw_model_forward(f->m, f->w, f->tok, f->B, f->T, &os, err, sizeof err) == 0, "%s: %s", name, err);
            CHECK(memcmp(got, got2, sizeof(float) * (size_t)(n * width)) == 0,
                  "%s: stop_after_capture gives other activations", name);
            free(ref);
        }
    }
    printf("  stop_after_capture: identical activations at every hook\n");
    free(got);
    free(got2);

    /* Every other TransformerLens site of every layer and ln_final.hook_normalized, read in one
     * forward that also gives the logits, in TransformerLens's shapes; then each alone with
     * stop_after_capture, identical. */
    enum { MAX_CAPS = 64 };
    saefw_capture caps[MAX_CAPS];
    char names[MAX_CAPS][96];
    int ncap = 0;
    for (int L = 0; L <= c->n_layers; L++) {
        for (int k = 0; k < N_MORE && ncap < MAX_CAPS; k++) {
            if (L == c->n_layers && k > 0) break;
            if (L == c->n_layers) snprintf(names[ncap], sizeof names[ncap], "ln_final.hook_normalized");
            else snprintf(names[ncap], sizeof names[ncap], "blocks.%d.%s", L, more_hooks[k]);
            CHECK(saefw_model_hook_resolve(f->m, names[ncap], -1, &caps[ncap].hook, err, sizeof err) == 0, "%s: %s",
                  names[ncap], err);
            char back[96];
            saefw_hook_name(caps[ncap].hook, back, sizeof back);
            CHECK(strcmp(back, names[ncap]) == 0, "name of %s: %s", names[ncap], back);
            int64_t shape[4];
            int nd = saefw_model_hook_shape(f->m, caps[ncap].hook, f->B, f->T, shape);
            const saefw_tensor_info *t = saefw_tf_find(f->ref, names[ncap]);
            REQUIRE(t, "fixture lacks %s", names[ncap]);
            int same = nd == t->ndim;
            for (int d = 0; same && d < nd; d++) same = shape[d] == t->shape[d];
            CHECK(same, "%s: shape has %d dims, differs from the fixture's", names[ncap], nd);
            caps[ncap].out = malloc(t->nbytes);
            REQUIRE(caps[ncap].out, "out of memory");
            ncap++;
        }
    }
    logits = malloc(sizeof(float) * (size_t)(n * c->d_vocab));
    REQUIRE(logits, "out of memory");
    saefw_forward_opts om = {.captures = caps, .n_captures = ncap, .logits_out = logits};
    CHECK(saefw_model_forward(f->m, f->w, f->tok, f->B, f->T, &om, err, sizeof err) == 0, "captures: %s", err);
    want = t_tensor(f->ref, "logits", NULL);
    close_act("logits (with captures)", logits, want, n * c->d_vocab);
    free(want);
    free(logits);
    for (int i = 0; i < ncap; i++) {
        float *ref = t_tensor(f->ref, names[i], NULL);
        const saefw_tensor_info *t = saefw_tf_find(f->ref, names[i]);
        int64_t numel = (int64_t)(t->nbytes / sizeof(float));
        close_act(names[i], caps[i].out, ref, numel);
        float *alone = malloc(t->nbytes);
        REQUIRE(alone, "out of memory");
        saefw_forward_opts os = {.capture = &caps[i].hook, .capture_out = alone, .stop_after_capture = 1};
        CHECK(saefw_model_forward(f->m, f->w, f->tok, f->B, f->T, &os, err, sizeof err) == 0, "%s: %s", names[i], err);
        CHECK(memcmp(alone, caps[i].out, t->nbytes) == 0, "%s: alone with stop_after_capture differs", names[i]);
        free(alone);
        free(ref);
    }
    printf("  %d more sites in one forward; each alone with stop_after_capture identical\n", ncap);
    /* A site captured twice, and an intervention where only reading is supported, are refused. */
    saefw_capture two[2] = {caps[0], caps[0]};
    saefw_forward_opts ot = {.captures = two, .n_captures = 2};
    err[0] = 0;
    CHECK(saefw_model_forward(f->m, f->w, f->tok, f->B, f->T, &ot, err, sizeof err) != 0 &&
              contains(err, "captured twice"),
          "twice: '%s'", err);
    saefw_intervention ivln = {.hook = caps[0].hook, .mode = SAEFW_INTERVENE_ZERO};
    saefw_forward_opts oi = {.intervention = &ivln, .loss_out = &loss};
    err[0] = 0;
    CHECK(saefw_model_forward(f->m, f->w, f->tok, f->B, f->T, &oi, err, sizeof err) != 0 &&
              contains(err, "blocks.0.ln1.hook_normalized can be read but not intervened on"),
          "intervention at ln1: '%s'", err);
    printf("  %s\n", err);
    for (int i = 0; i < ncap; i++) free(caps[i].out);
    got = malloc(sizeof(float) * (size_t)(n * c->d_mlp));
    got2 = malloc(sizeof(float) * (size_t)(n * c->d_mlp));
    REQUIRE(got && got2, "out of memory");

    saefw_hook post1 = {SAEFW_HOOK_MLP_POST, 1};
    saefw_intervention zero = {.hook = post1, .mode = SAEFW_INTERVENE_ZERO};
    t_close1("loss, post1 zero-ablated", loss_with(f, &zero), t_meta(f->ref, "loss_zero_post1"), LOSS_TOL);
    float *mean = t_tensor(f->ref, "mean_post1", NULL);
    saefw_intervention meaniv = {.hook = post1, .mode = SAEFW_INTERVENE_MEAN, .mean = mean};
    t_close1("loss, post1 mean-ablated", loss_with(f, &meaniv), t_meta(f->ref, "loss_mean_post1"), LOSS_TOL);
    int calls = 0;
    saefw_intervention half = {.hook = post1, .mode = SAEFW_INTERVENE_REPLACE, .fn = half_fn, .ud = &calls};
    t_close1("loss, post1 halved (fn)", loss_with(f, &half), t_meta(f->ref, "loss_half_post1"), LOSS_TOL);
    CHECK(calls >= 1, "replace fn never called");
    saefw_intervention ident = {.hook = post1, .mode = SAEFW_INTERVENE_REPLACE, .fn = identity_fn};
    double li = loss_with(f, &ident);
    CHECK(li == loss_only, "identity replace changed the loss: %.17g vs %.17g", li, loss_only);
    printf("  identity replace: loss %.9g, unchanged\n", li);
    saefw_intervention none = {.hook = post1, .mode = SAEFW_INTERVENE_NONE};
    CHECK(loss_with(f, &none) == loss_only, "mode NONE changed the loss");

    /* Capture and intervention at the same hook: capture sees the clean activations. */
    float *ref = t_tensor(f->ref, "blocks.1.mlp.hook_post", NULL);
    double lz = -1;
    saefw_forward_opts ob = {.capture = &post1, .capture_out = got, .intervention = &zero, .loss_out = &lz};
    CHECK(saefw_model_forward(f->m, f->w, f->tok, f->B, f->T, &ob, err, sizeof err) == 0, "%s", err);
    close_act("capture+zero: capture", got, ref, n * c->d_mlp);
    t_close1("capture+zero: loss", lz, t_meta(f->ref, "loss_zero_post1"), LOSS_TOL);
    free(ref);

    saefw_intervention bad = {.hook = post1, .mode = SAEFW_INTERVENE_REPLACE, .fn = failing_fn};
    saefw_forward_opts of = {.intervention = &bad, .loss_out = &lz};
    err[0] = 0;
    CHECK(saefw_model_forward(f->m, f->w, f->tok, f->B, f->T, &of, err, sizeof err) != 0 &&
              contains(err, "blocks.1.mlp.hook_post") && contains(err, "sae says no"),
          "failing fn: '%s'", err);
    free(mean);
    free(got);
    free(got2);
}

static void test_bad_forward_args(fixture *f) {
    printf("forward: bad arguments\n");
    char err[512];
    double loss;
    saefw_forward_opts o = {.loss_out = &loss};
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)(f->B * f->T));
    REQUIRE(tok, "out of memory");
    memcpy(tok, f->tok, sizeof(int32_t) * (size_t)(f->B * f->T));
    tok[1 * f->T + 3] = 50;
    err[0] = 0;
    CHECK(saefw_model_forward(f->m, f->w, tok, f->B, f->T, &o, err, sizeof err) != 0 && contains(err, "[1, 3]") &&
              contains(err, "50"),
          "token out of range: '%s'", err);
    printf("  %s\n", err);
    tok[1 * f->T + 3] = -1;
    CHECK(saefw_model_forward(f->m, f->w, tok, f->B, f->T, &o, err, sizeof err) != 0, "negative token accepted");
    free(tok);
    err[0] = 0;
    CHECK(saefw_model_forward(f->m, f->w, f->tok, 1, 17, &o, err, sizeof err) != 0 && contains(err, "n_ctx"),
          "T > n_ctx: '%s'", err);
    printf("  %s\n", err);
    saefw_hook h3 = {SAEFW_HOOK_MLP_POST, 2};
    float buf[1];
    saefw_forward_opts oc = {.capture = &h3, .capture_out = buf, .stop_after_capture = 1};
    err[0] = 0;
    CHECK(saefw_model_forward(f->m, f->w, f->tok, f->B, f->T, &oc, err, sizeof err) != 0 &&
              contains(err, "out of range"),
          "capture at layer 2: '%s'", err);
    printf("  %s\n", err);
    saefw_hook h0 = {SAEFW_HOOK_MLP_POST, 0};
    saefw_forward_opts os = {.capture = &h0, .capture_out = buf, .stop_after_capture = 1, .loss_out = &loss};
    CHECK(saefw_model_forward(f->m, f->w, f->tok, f->B, f->T, &os, err, sizeof err) != 0,
          "stop_after_capture with a loss accepted");
    saefw_intervention mean_null = {.hook = h0, .mode = SAEFW_INTERVENE_MEAN};
    saefw_forward_opts om = {.intervention = &mean_null, .loss_out = &loss};
    CHECK(saefw_model_forward(f->m, f->w, f->tok, f->B, f->T, &om, err, sizeof err) != 0, "mean ablation without mean");
    CHECK(saefw_model_forward(f->m, f->w, f->tok, f->B, 1, &o, err, sizeof err) != 0, "loss with T = 1 accepted");
    saefw_model_work *w = NULL;
    err[0] = 0;
    CHECK(saefw_model_work_alloc(f->m, 4, 17, &w, err, sizeof err) != 0 && !w && contains(err, "n_ctx"),
          "work with max_seq > n_ctx: '%s'", err);
}

static void test_hook_names(saefw_model *m) {
    printf("hook names\n");
    static const char *const full[] = {"blocks.1.hook_resid_pre", "blocks.1.hook_resid_mid", "blocks.1.mlp.hook_post",
                                       "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"};
    static const char *const alias[][2] = {{"hook_resid_pre", "resid_pre"},
                                           {"hook_resid_mid", "resid_mid"},
                                           {"mlp_post", "hook_post"},
                                           {"hook_mlp_out", "mlp.hook_post"},
                                           {"hook_resid_post", "resid_post"}};
    static const saefw_hook_kind alias_kind[][2] = {{SAEFW_HOOK_RESID_PRE, SAEFW_HOOK_RESID_PRE},
                                                    {SAEFW_HOOK_RESID_MID, SAEFW_HOOK_RESID_MID},
                                                    {SAEFW_HOOK_MLP_POST, SAEFW_HOOK_MLP_POST},
                                                    {SAEFW_HOOK_MLP_OUT, SAEFW_HOOK_MLP_POST},
                                                    {SAEFW_HOOK_RESID_POST, SAEFW_HOOK_RESID_POST}};
    char err[512], buf[96];
    for (int k = 0; k < 5; k++) {
        saefw_hook a, b;
        CHECK(saefw_hook_parse(full[k], -1, &a, err, sizeof err) == 0 && a.layer == 1, "%s: %s", full[k], err);
        CHECK(saefw_hook_parse(full[k], 1, &b, err, sizeof err) == 0 && b.kind == a.kind, "%s with layer 1", full[k]);
        saefw_hook_name(a, buf, sizeof buf);
        CHECK(strcmp(buf, full[k]) == 0, "name round trip: %s -> %s", full[k], buf);
        CHECK(saefw_hook_parse(hook_short[k], 1, &b, err, sizeof err) == 0 && b.kind == a.kind && b.layer == 1,
              "short %s", hook_short[k]);
        for (int j = 0; j < 2; j++)
            CHECK(saefw_hook_parse(alias[k][j], 0, &b, err, sizeof err) == 0 && b.kind == alias_kind[k][j] &&
                      b.layer == 0,
                  "alias %s: %s", alias[k][j], err);
        CHECK(saefw_model_hook_width(m, a) == (a.kind == SAEFW_HOOK_MLP_POST ? 96 : 32), "width of %s", full[k]);
    }
    static const char *const bad[] = {"blocks.x.hook_resid_pre",
                                      "blocks.0.hook_post",
                                      "blocks.0.mlp.hook_mid",
                                      "blocks..hook_resid_pre",
                                      "blocks.0",
                                      "pre",
                                      "",
                                      "blocks.-1.hook_mlp_out",
                                      "blocks.0.hook_resid_pre.x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        saefw_hook h;
        err[0] = 0;
        CHECK(saefw_hook_parse(bad[i], 0, &h, err, sizeof err) != 0 && contains(err, "unknown hook site") &&
                  contains(err, bad[i]),
              "bad name '%s': '%s'", bad[i], err);
    }
    printf("  e.g. %s\n", err);
    saefw_hook h;
    err[0] = 0;
    CHECK(saefw_hook_parse("post", -1, &h, err, sizeof err) != 0 && contains(err, "needs a layer"), "'%s'", err);
    err[0] = 0;
    CHECK(saefw_hook_parse("blocks.1.mlp.hook_post", 0, &h, err, sizeof err) != 0 && contains(err, "layer 1") &&
              contains(err, "layer 0"),
          "conflicting layers: '%s'", err);
    printf("  %s\n", err);
    err[0] = 0;
    CHECK(saefw_model_hook_resolve(m, "post", 2, &h, err, sizeof err) != 0 && contains(err, "out of range") &&
              contains(err, "blocks.2.mlp.hook_post") && contains(err, "2 layers"),
          "layer 2 of 2: '%s'", err);
    printf("  %s\n", err);
    err[0] = 0;
    CHECK(saefw_model_hook_resolve(m, "blocks.7.hook_resid_post", -1, &h, err, sizeof err) != 0 &&
              contains(err, "out of range"),
          "layer 7: '%s'", err);
    CHECK(saefw_model_hook_resolve(m, "blocks.1.hook_resid_post", -1, &h, err, sizeof err) == 0 && h.layer == 1,
          "resolve: %s", err);
    CHECK(saefw_model_hook_width(m, (saefw_hook){SAEFW_HOOK_MLP_POST, 2}) == -1, "width out of range");
}

static void expect_cfg_error(const char *json, const char *what, const char *must1, const char *must2) {
    saefw_model_cfg c;
    char err[512] = "";
    int rc = saefw_model_cfg_from_json(json, what, &c, err, sizeof err);
    CHECK(rc != 0 && contains(err, what) && contains(err, must1) && (!must2 || contains(err, must2)),
          "config %s: rc %d '%s'", json, rc, err);
    printf("  %s\n", err);
}

#define BASE_KEYS                                                                                                      \
    "\"n_layers\": 1, \"d_model\": 8, \"d_mlp\": 16, \"d_head\": 4, \"n_heads\": 2, \"n_ctx\": 4, \"d_vocab\": 10"

static void test_config(void) {
    printf("config.json\n");
    saefw_model_cfg c;
    char err[512];
    /* gelu-1l's style: numbers, "normalization", extra keys; metadata style: strings. */
    CHECK(saefw_model_cfg_from_json("{" BASE_KEYS
                                    ", \"act_fn\": \"gelu\", \"normalization\": \"LN\", \"ln_eps\": 1e-05,"
                                    " \"seed\": 6000, \"betas\": [0.9, 0.99], \"attn_only\": false}",
                                    "config.json", &c, err, sizeof err) == 0 &&
              c.d_mlp == 16 && c.ln_eps == 1e-5f && strcmp(c.act_fn, "gelu") == 0 && strcmp(c.normalization, "LN") == 0,
          "gelu-1l style: %s", err);
    CHECK(saefw_model_cfg_from_json("{\"n_layers\": \"3\", \"d_model\": \"8\", \"d_mlp\": \"16\", \"d_head\": \"4\","
                                    " \"n_heads\": \"2\", \"n_ctx\": \"4\", \"d_vocab\": \"10\", \"act_fn\": \"gelu\","
                                    " \"normalization_type\": \"LN\"}",
                                    "meta", &c, err, sizeof err) == 0 &&
              c.n_layers == 3 && c.ln_eps == 1e-5f,
          "string values: %s", err);
    expect_cfg_error("{" BASE_KEYS ", \"act_fn\": \"gelu_new\", \"normalization\": \"LN\"}", "config.json", "act_fn",
                     "gelu_new");
    expect_cfg_error("{" BASE_KEYS ", \"act_fn\": \"relu\", \"normalization_type\": \"LN\"}", "cfg", "act_fn", "relu");
    expect_cfg_error("{" BASE_KEYS ", \"act_fn\": \"gelu\", \"normalization\": \"LNPre\"}", "config.json",
                     "normalization", "LNPre");
    expect_cfg_error("{" BASE_KEYS ", \"act_fn\": \"gelu\"}", "config.json", "normalization", NULL);
    expect_cfg_error("{\"n_layers\": 1, \"d_model\": 8, \"d_head\": 4, \"n_heads\": 2, \"n_ctx\": 4, \"d_vocab\": 10,"
                     " \"act_fn\": \"gelu\", \"normalization\": \"LN\"}",
                     "config.json", "missing key d_mlp", NULL);
    expect_cfg_error("{" BASE_KEYS ", \"act_fn\": \"gelu\", \"normalization\": \"LN\", \"attn_only\": true}",
                     "config.json", "attn_only", NULL);
    expect_cfg_error("{\"n_layers\": 1.5, \"d_model\": 8, \"d_mlp\": 16, \"d_head\": 4, \"n_heads\": 2, \"n_ctx\": 4,"
                     " \"d_vocab\": 10, \"act_fn\": \"gelu\", \"normalization\": \"LN\"}",
                     "config.json", "n_layers", NULL);
    expect_cfg_error("[1, 2]", "config.json", "object", NULL);
    expect_cfg_error("{\"n_layers\": ", "config.json", "JSON", NULL);
}

/* A config.json beside the weights with a bad act_fn; a .pth missing a tensor; a tensor of the wrong
 * shape; a config that does not describe the file. */
static void test_bad_files(void) {
    printf("bad files\n");
    char err[512], path[1200], cfgp[1200];
    saefw_model *m = NULL;
    const char *dir = t_tmpdir("test_model");
    snprintf(path, sizeof path, "%s/model.pth", dir);
    snprintf(cfgp, sizeof cfgp, "%s/config.json", dir);
    char *data;
    size_t len;
    REQUIRE(saefw_read_file(FIX "model.pth", &data, &len, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_write_file_atomic(path, data, len, err, sizeof err) == 0, "%s", err);
    free(data);
    const char *bad_cfg =
        "{\"n_layers\": 2, \"d_model\": 32, \"d_mlp\": 96, \"d_head\": 6, \"n_heads\": 4, \"n_ctx\": 16,"
        " \"d_vocab\": 50, \"act_fn\": \"solu_ln\", \"normalization\": \"LN\"}";
    REQUIRE(saefw_write_file_atomic(cfgp, bad_cfg, strlen(bad_cfg), err, sizeof err) == 0, "%s", err);
    err[0] = 0;
    CHECK(saefw_model_load(path, NULL, &m, err, sizeof err) != 0 && !m && contains(err, "config.json") &&
              contains(err, "act_fn") && contains(err, "solu_ln"),
          "bad act_fn: '%s'", err);
    printf("  %s\n", err);
    remove(cfgp);
    err[0] = 0;
    CHECK(saefw_model_load(path, NULL, &m, err, sizeof err) != 0 && contains(err, "no model config"), "no config: '%s'",
          err);
    printf("  %s\n", err);

    saefw_model_cfg small;
    REQUIRE(saefw_model_cfg_from_json("{" BASE_KEYS ", \"act_fn\": \"gelu\", \"normalization\": \"LN\"}", "small",
                                      &small, err, sizeof err) == 0,
            "%s", err);
    err[0] = 0;
    CHECK(saefw_model_load(FIX "bad_missing.pth", &small, &m, err, sizeof err) != 0 &&
              contains(err, "bad_missing.pth") && contains(err, "missing tensor blocks.0.mlp.W_in"),
          "missing tensor: '%s'", err);
    printf("  %s\n", err);
    err[0] = 0;
    CHECK(saefw_model_load(FIX "bad_shape.pth", &small, &m, err, sizeof err) != 0 && contains(err, "bad_shape.pth") &&
              contains(err, "tensor blocks.0.attn.W_K has shape [2, 8, 3], expected [2, 8, 4]"),
          "wrong shape: '%s'", err);
    printf("  %s\n", err);

    saefw_model_cfg one;
    REQUIRE(
        saefw_model_cfg_from_json("{\"n_layers\": 1, \"d_model\": 32, \"d_mlp\": 96, \"d_head\": 6, \"n_heads\": 4,"
                                  " \"n_ctx\": 16, \"d_vocab\": 50, \"act_fn\": \"gelu\", \"normalization\": \"LN\"}",
                                  "one", &one, err, sizeof err) == 0,
        "%s", err);
    err[0] = 0;
    CHECK(saefw_model_load(FIX "model.pth", &one, &m, err, sizeof err) != 0 && contains(err, "blocks.1.") &&
              contains(err, "n_layers = 1"),
          "extra layer: '%s'", err);
    printf("  %s\n", err);
    one.n_layers = 2;
    one.d_vocab = 51;
    err[0] = 0;
    CHECK(saefw_model_load(FIX "model.pth", &one, &m, err, sizeof err) != 0 &&
              contains(err, "tensor embed.W_E has shape [50, 32], expected [51, 32]"),
          "d_vocab mismatch: '%s'", err);
    snprintf(one.act_fn, sizeof one.act_fn, "relu");
    CHECK(saefw_model_load(FIX "model.pth", &one, &m, err, sizeof err) != 0 && contains(err, "relu"),
          "caller cfg with relu: '%s'", err);
    err[0] = 0;
    CHECK(saefw_model_load(FIX "nope.safetensors", NULL, &m, err, sizeof err) != 0 && contains(err, "nope.safetensors"),
          "absent file: '%s'", err);
}

/* The bundled tiny model: the C loss on held-out sequences matches the torch loss that
 * make_tiny_model.py computed (float64 reference on the fp32 weights). */
static void test_tiny(void) {
    printf("bundled tiny model (models/tiny-1l)\n");
    saefw_model *m = load("../models/tiny-1l/model.safetensors", NULL);
    const saefw_model_cfg *c = saefw_model_config(m);
    char *text, err[512];
    size_t len;
    REQUIRE(saefw_read_file("../models/tiny-1l/config.json", &text, &len, err, sizeof err) == 0, "%s", err);
    saefw_model_cfg cj;
    CHECK(saefw_model_cfg_from_json(text, "config.json", &cj, err, sizeof err) == 0, "%s", err);
    free(text);
    CHECK(memcmp(&cj, c, sizeof cj) == 0, "tiny: config.json and metadata differ");
    CHECK(c->n_layers == 1 && c->d_vocab == 257, "tiny: n_layers %d d_vocab %d", c->n_layers, c->d_vocab);
    saefw_tensorfile *tf;
    REQUIRE(saefw_tf_open(FIX "tiny_heldout.safetensors", &tf, err, sizeof err) == 0, "%s", err);
    int64_t B, T;
    int32_t *tok = tokens_of(tf, "tokens", &B, &T);
    saefw_model_work *w;
    REQUIRE(saefw_model_work_alloc(m, B, T, &w, err, sizeof err) == 0, "%s", err);
    double loss = -1;
    saefw_forward_opts o = {.loss_out = &loss};
    CHECK(saefw_model_forward(m, w, tok, B, T, &o, err, sizeof err) == 0, "%s", err);
    printf("  %lld held-out sequences of %lld tokens\n", (long long)B, (long long)T);
    t_close1("tiny held-out loss", loss, t_meta(tf, "loss"), LOSS_TOL);
    saefw_model_work_free(w);
    free(tok);
    saefw_tf_close(tf);
    saefw_model_free(m);
}

/* Logits, loss and a hook's activations do not depend on the thread count: every layer runs on
 * fixed splits. */
static void test_threads(fixture *f) {
    printf("threads\n");
    const saefw_model_cfg *c = saefw_model_config(f->m);
    const int64_t n = f->B * f->T;
    char err[512];
    float *lg[2], *post[2];
    double loss[2];
    saefw_hook h = {SAEFW_HOOK_MLP_POST, 0};
    for (int k = 0; k < 2; k++) {
        saefw_set_threads(k == 0 ? 1 : 3);
        lg[k] = malloc(sizeof(float) * (size_t)(n * c->d_vocab));
        post[k] = malloc(sizeof(float) * (size_t)(n * c->d_mlp));
        REQUIRE(lg[k] && post[k], "out of memory");
        saefw_forward_opts o = {.capture = &h, .capture_out = post[k], .logits_out = lg[k], .loss_out = &loss[k]};
        CHECK(saefw_model_forward(f->m, f->w, f->tok, f->B, f->T, &o, err, sizeof err) == 0, "forward: %s", err);
    }
    saefw_set_threads(0);
    int same = memcmp(lg[0], lg[1], sizeof(float) * (size_t)(n * c->d_vocab)) == 0 &&
               memcmp(post[0], post[1], sizeof(float) * (size_t)(n * c->d_mlp)) == 0 && loss[0] == loss[1];
    CHECK(same, "1 and 3 threads differ (loss %.17g vs %.17g)", loss[0], loss[1]);
    printf("  logits, blocks.0.mlp.hook_post and loss with 1 and 3 threads: %s\n",
           same ? "bit-identical" : "DIFFERENT");
    for (int k = 0; k < 2; k++) {
        free(lg[k]);
        free(post[k]);
    }
}

int main(void) {
    char err[512];
    test_load_same();
    test_config();

    fixture f = {0};
    f.m = load(FIX "model.pth", NULL);
    REQUIRE(saefw_tf_open(FIX "reference.safetensors", &f.ref, err, sizeof err) == 0, "%s", err);
    f.tok = tokens_of(f.ref, "tokens", &f.B, &f.T);
    REQUIRE(saefw_model_work_alloc(f.m, f.B, f.T, &f.w, err, sizeof err) == 0, "%s", err);
    test_forward(&f, "one chunk of 3 sequences");
    /* A work space of one sequence runs the batch as 3 chunks. */
    saefw_model_work *big = f.w;
    REQUIRE(saefw_model_work_alloc(f.m, 1, saefw_model_config(f.m)->n_ctx, &f.w, err, sizeof err) == 0, "%s", err);
    test_forward(&f, "3 chunks of 1 sequence");
    saefw_model_work_free(f.w);
    f.w = big;
    test_threads(&f);
    test_bad_forward_args(&f);
    test_hook_names(f.m);
    saefw_model_work_free(f.w);
    free(f.tok);
    saefw_tf_close(f.ref);
    saefw_model_free(f.m);

    test_bad_files();
    test_tiny();
    return t_finish("test_model");
}
