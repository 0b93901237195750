/* The feature-analysis engine against a brute-force dense computation in this test: an SAE on the
 * bundled tiny-1l's MLP activations (random encoder, one feature aimed at a known activation vector),
 * every activation of every token computed here in double and sorted; densities, means, maxima, top-k
 * lists and their contexts, histogram sums, logit effects against a direct matrix product, neuron
 * sparsity classes, token text, identical results at 1 and 3 threads, the report folder, and the
 * errors (d_in not matching the hook, an empty data set, a folder that is not a report); and the
 * command `saefw features` on a checkpoint, every JSON file of its report parsed. */
#include <stdarg.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint.h"
#include "features_report.h"
#include "parallel.h"
#include "testutil.h"
#include "util.h"

#define T 32
#define ROWS 96
#define D_SAE 48

static int contains(const char *s, const char *p) { return s && strstr(s, p) != NULL; }

static saefw_model *load_tiny(void) {
    saefw_model *m = NULL;
    char err[1024];
    REQUIRE(saefw_model_load("../models/tiny-1l/model.safetensors", NULL, &m, err, sizeof err) == 0, "%s", err);
    return m;
}

static saefw_tokens *open_tokens(const char *path) {
    saefw_tokens_opts o = {path, NULL, NULL, T, 256, 0, 1};
    saefw_tokens *t = NULL;
    char err[1024];
    REQUIRE(saefw_tokens_open(&o, &t, err, sizeof err) == 0, "%s", err);
    return t;
}

/* Random encoder and decoder, biases that keep a feature active on a fraction of the tokens, and
 * feature 0's encoder column along the activation x0 (it fires hardest where the activation is x0). */
static void make_sae(saefw_sae *sae, int64_t d_in, const float *x0) {
    char err[512];
    REQUIRE(saefw_sae_alloc(sae, d_in, D_SAE, 1e-3f, err, sizeof err) == 0, "%s", err);
    saefw_rng rng;
    saefw_rng_seed(&rng, 5);
    saefw_sae_init_params(sae, &rng);
    for (int64_t j = 0; j < D_SAE; j++) sae->p[SAEFW_B_ENC][j] = (float)(-0.05 - 0.1 * saefw_rng_uniform(&rng));
    if (x0) {
        double n = 0;
        for (int64_t i = 0; i < d_in; i++) n += (double)x0[i] * x0[i];
        for (int64_t i = 0; i < d_in; i++) sae->p[SAEFW_W_ENC][i * D_SAE] = (float)(x0[i] / sqrt(n));
        sae->p[SAEFW_B_ENC][0] = (float)(-0.5 * sqrt(n));
    }
}

typedef struct {
    double v;
    int64_t pos;
} entry;

static int cmp_entry(const void *a, const void *b) {
    const entry *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

/* Every activation at the hook for the first `rows` rows [rows * T, width]. */
static float *all_acts(const saefw_model *m, const saefw_tokens *tok, saefw_hook h, int64_t rows, int32_t *toks) {
    int width = saefw_model_hook_width(m, h);
    float *x = malloc(sizeof(float) * (size_t)(rows * T * width));
    saefw_model_work *w = NULL;
    char err[1024];
    REQUIRE(x && saefw_model_work_alloc(m, rows, T, &w, err, sizeof err) == 0, "work");
    for (int64_t r = 0; r < rows; r++)
        REQUIRE(saefw_tokens_row(tok, r, toks + r * T, 257, err, sizeof err) == 0, "%s", err);
    saefw_forward_opts fo;
    memset(&fo, 0, sizeof fo);
    fo.capture = &h;
    fo.capture_out = x;
    fo.stop_after_capture = 1;
    REQUIRE(saefw_model_forward(m, w, toks, rows, T, &fo, err, sizeof err) == 0, "%s", err);
    saefw_model_work_free(w);
    return x;
}

static saefw_features *run(const saefw_model *m, const saefw_tokens *tok, saefw_hook h, const saefw_sae *sae,
                           int threads) {
    saefw_set_threads(threads);
    saefw_features_opts o;
    saefw_features_default_opts(&o);
    o.n_tokens = ROWS * T - 5; /* rounded up to whole rows */
    o.top_k = 8;
    o.batch_rows = 10; /* batches that do not divide the rows */
    saefw_features *f = NULL;
    char err[1024];
    REQUIRE(saefw_features_run(m, tok, h, sae, &o, &f, err, sizeof err) == 0, "%s", err);
    saefw_set_threads(0);
    return f;
}

static void check_against_dense(const saefw_model *m, const saefw_tokens *tok, saefw_hook h, const saefw_sae *sae,
                                const saefw_features *f, const float *x, const int32_t *toks) {
    const int64_t N = ROWS * T, d_in = sae->d_in;
    CHECK(f->tokens_analyzed == N, "tokens_analyzed %lld", (long long)f->tokens_analyzed);
    entry *e = malloc(sizeof(entry) * (size_t)N);
    double worst_top = 0, worst_mean = 0;
    int64_t live = 0, count_off = 0;
    for (int64_t j = 0; j < D_SAE; j++) {
        int64_t nz = 0, near0 = 0;
        double sum = 0;
        for (int64_t t = 0; t < N; t++) {
            double pre = sae->p[SAEFW_B_ENC][j];
            for (int64_t i = 0; i < d_in; i++)
                pre += ((double)x[t * d_in + i] - sae->p[SAEFW_B_DEC][i]) * sae->p[SAEFW_W_ENC][i * D_SAE + j];
            double a = pre > 0 ? pre : 0;
            e[t].v = a;
            e[t].pos = t;
            nz += a > 0;
            near0 += fabs(pre) < 1e-5;
            sum += a;
        }
        const saefw_feature_info *fi = &f->f[j];
        /* Counts agree but for pre-activations within float rounding of zero. */
        int64_t diff = llabs(fi->n_nonzero - nz);
        count_off += diff;
        CHECK(diff <= near0, "feature %lld: %lld nonzero, dense %lld (%lld near 0)", (long long)j,
              (long long)fi->n_nonzero, (long long)nz, (long long)near0);
        CHECK(fabs(fi->density - (double)fi->n_nonzero / N) < 1e-12, "density");
        double dm = fabs(fi->mean_act - sum / N);
        if (!(dm <= worst_mean)) worst_mean = dm;
        CHECK(dm <= 1e-5 * (1 + sum / N), "feature %lld: mean %g, dense %g", (long long)j, fi->mean_act, sum / N);
        int64_t hs = 0;
        for (int b = 0; b < fi->n_hist; b++) hs += fi->hist[b];
        CHECK(hs == fi->n_nonzero, "feature %lld: histogram sums to %lld, nonzero %lld", (long long)j, (long long)hs,
              (long long)fi->n_nonzero);
        if (fi->n_nonzero > 0) {
            live++;
            CHECK(fi->n_hist > 0 && fi->max_act < fi->n_hist * fi->hist_width &&
                      fi->max_act >= (fi->n_hist - 1) * fi->hist_width,
                  "feature %lld: max %g outside the last bin of %d x %g", (long long)j, fi->max_act, fi->n_hist,
                  fi->hist_width);
        }
        qsort(e, (size_t)N, sizeof *e, cmp_entry);
        int64_t want = nz < 8 ? nz : 8;
        CHECK(llabs(fi->n_top - want) <= near0, "feature %lld: %d top examples, dense %lld", (long long)j, fi->n_top,
              (long long)want);
        CHECK(fabs(fi->max_act - e[0].v) <= 1e-4 * (1 + e[0].v), "feature %lld: max %g, dense %g", (long long)j,
              fi->max_act, e[0].v);
        for (int k = 0; k < fi->n_top && k < want; k++) {
            const saefw_feature_example *ex = &fi->top[k];
            double d = fabs(ex->max - e[k].v);
            if (!(d <= worst_top)) worst_top = d;
            CHECK(d <= 1e-4 * (1 + e[k].v), "feature %lld top %d: %g, dense %g", (long long)j, k, ex->max, e[k].v);
            /* Positions agree where the value is clear of its neighbours by more than rounding. */
            int clear = (k == 0 || e[k - 1].v - e[k].v > 1e-4) && (k + 1 >= N || e[k].v - e[k + 1].v > 1e-4);
            if (clear)
                CHECK(ex->pos == e[k].pos, "feature %lld top %d at %lld, dense %lld", (long long)j, k,
                      (long long)ex->pos, (long long)e[k].pos);
            /* The context: tokens of the row around pos, the max at `at`. */
            int64_t r = ex->pos / T, t = ex->pos % T;
            int64_t t0 = t - 12 < 0 ? 0 : t - 12, t1 = t + 4 > T - 1 ? T - 1 : t + 4;
            CHECK(ex->n == t1 - t0 + 1 && ex->at == t - t0, "feature %lld top %d: context %d at %d", (long long)j, k,
                  ex->n, ex->at);
            int same = 1;
            for (int u = 0; u < ex->n && ex->n == t1 - t0 + 1; u++) same &= ex->tokens[u] == toks[r * T + t0 + u];
            CHECK(same, "feature %lld top %d: context tokens differ from the file", (long long)j, k);
            CHECK(ex->acts[ex->at] == ex->max, "feature %lld top %d: acts[at] %g != max %g", (long long)j, k,
                  ex->acts[ex->at], ex->max);
            if (k > 0) CHECK(fi->top[k - 1].max >= ex->max, "feature %lld: top list not descending", (long long)j);
        }
        for (int b = 0; b < fi->n_bands; b++)
            for (int k = 0; k < fi->bands[b].n; k++) {
                float v = fi->bands[b].ex[k].max;
                CHECK(v >= fi->bands[b].lo && v < fi->bands[b].hi, "feature %lld band %d: %g outside [%g, %g)",
                      (long long)j, b, v, fi->bands[b].lo, fi->bands[b].hi);
            }
    }
    printf(
        "  %lld of %d features live; max |top-k value - dense| %.3g, max |mean - dense| %.3g, count differences %lld\n",
        (long long)live, D_SAE, worst_top, worst_mean, (long long)count_off);
    CHECK(live >= D_SAE / 2, "only %lld live features", (long long)live);
    free(e);

    /* Feature 0 aims at the activation of token 7 of row 3: its top example is there. */
    CHECK(f->f[0].n_top > 0 && f->f[0].top[0].pos == 3 * T + 7, "feature 0's top example at %lld, want %d",
          f->f[0].n_top ? (long long)f->f[0].top[0].pos : -1LL, 3 * T + 7);

    /* Logit effects against the direct product, folded as documented. */
    const saefw_model_cfg *c = saefw_model_config(m);
    const int64_t dm = c->d_model, V = c->d_vocab;
    const float *W_out = saefw_model_weight(m, "mlp.W_out", 0), *W_U = saefw_model_weight(m, "unembed.W_U", 0);
    const float *lnw = saefw_model_weight(m, "ln_final.w", 0);
    REQUIRE(W_out && W_U && lnw, "model weights");
    float *eff = malloc(sizeof(float) * (size_t)(D_SAE * V));
    char err[512];
    REQUIRE(saefw_feature_logit_effects(m, h, sae, 0, D_SAE, eff, err, sizeof err) == 0, "%s", err);
    double worst = 0, scale = 0;
    int order_ok = 1;
    for (int64_t j = 0; j < D_SAE; j++) {
        double u[512], ev[512], mu = 0, me = 0;
        REQUIRE(dm <= 512 && V <= 512, "shape");
        for (int64_t k = 0; k < dm; k++) {
            u[k] = 0;
            for (int64_t i = 0; i < d_in; i++) u[k] += (double)sae->p[SAEFW_W_DEC][j * d_in + i] * W_out[i * dm + k];
            mu += u[k] / dm;
        }
        for (int64_t v = 0; v < V; v++) {
            ev[v] = 0;
            for (int64_t k = 0; k < dm; k++) ev[v] += (u[k] - mu) * lnw[k] * W_U[k * V + v];
            me += ev[v] / V;
        }
        int64_t best = 0;
        for (int64_t v = 0; v < V; v++) {
            ev[v] -= me;
            double d = fabs(eff[j * V + v] - ev[v]);
            if (!(d <= worst)) worst = d;
            if (fabs(ev[v]) > scale) scale = fabs(ev[v]);
            if (ev[v] > ev[best]) best = v;
        }
        order_ok &= f->f[j].n_logits == 10 && f->f[j].pos_ids[0] == best;
        for (int k = 1; k < f->f[j].n_logits; k++)
            order_ok &= f->f[j].pos_values[k - 1] >= f->f[j].pos_values[k] &&
                        f->f[j].neg_values[k - 1] <= f->f[j].neg_values[k];
    }
    printf("  logit effects: max |diff| %.3g (largest effect %.3g)\n", worst, scale);
    CHECK(worst <= 1e-4 * scale, "logit effects differ by %g", worst);
    CHECK(order_ok, "top/bottom logits not the direct product's extremes in order");
    free(eff);
}

static int same_results(const saefw_features *a, const saefw_features *b) {
    for (int64_t j = 0; j < a->d_sae; j++) {
        const saefw_feature_info *x = &a->f[j], *y = &b->f[j];
        if (x->n_nonzero != y->n_nonzero || x->mean_act != y->mean_act || x->max_act != y->max_act ||
            x->n_top != y->n_top || x->n_hist != y->n_hist || x->hist_width != y->hist_width ||
            x->n_bands != y->n_bands)
            return 0;
        if (memcmp(x->hist, y->hist, sizeof(int64_t) * (size_t)x->n_hist)) return 0;
        for (int k = 0; k < x->n_top; k++)
            if (x->top[k].pos != y->top[k].pos || x->top[k].max != y->top[k].max ||
                memcmp(x->top[k].acts, y->top[k].acts, sizeof(float) * (size_t)x->top[k].n))
                return 0;
        for (int bnd = 0; bnd < x->n_bands; bnd++)
            for (int k = 0; k < x->bands[bnd].n; k++)
                if (x->bands[bnd].ex[k].pos != y->bands[bnd].ex[k].pos) return 0;
        for (int k = 0; k < x->n_logits; k++)
            if (x->pos_ids[k] != y->pos_ids[k] || x->pos_values[k] != y->pos_values[k]) return 0;
    }
    return 1;
}

static void test_token_text(void) {
    saefw_token_decoder d;
    saefw_token_decoder_bytes(&d, 256);
    char buf[64];
    saefw_token_text(&d, 'a', buf, sizeof buf);
    CHECK(!strcmp(buf, "a"), "'a' -> '%s'", buf);
    saefw_token_text(&d, 0xC3, buf, sizeof buf); /* the first byte of "é" alone */
    CHECK(!strcmp(buf, "\\xC3"), "0xC3 -> '%s'", buf);
    saefw_token_text(&d, 0, buf, sizeof buf);
    CHECK(!strcmp(buf, "\\x00"), "NUL -> '%s'", buf);
    saefw_token_text(&d, 256, buf, sizeof buf);
    CHECK(!strcmp(buf, "<|BOS|>"), "BOS -> '%s'", buf);
    saefw_token_text(&d, 300, buf, sizeof buf);
    CHECK(!strcmp(buf, "#300"), "300 -> '%s'", buf);
    saefw_token_text(NULL, 1234, buf, sizeof buf);
    CHECK(!strcmp(buf, "#1234"), "no decoder -> '%s'", buf);
}

/* A multi-byte decoder: whole characters stay, a character cut by the token boundary is escaped. */
static int multi_bytes(void *ud, int32_t id, char *buf, size_t cap) {
    static const char *const toks[] = {"caf\xC3\xA9", "\xE2\x82", "\xAC!", "\xF0\x9F\x98\x80"};
    if (id < 0 || id > 3) return -1;
    size_t n = strlen(toks[id]);
    memcpy(buf, toks[id], n);
    return (int)n;
}

static void test_multibyte_text(void) {
    saefw_token_decoder d = {"test", multi_bytes, NULL};
    char buf[64];
    saefw_token_text(&d, 0, buf, sizeof buf);
    CHECK(!strcmp(buf, "caf\xC3\xA9"), "whole character -> '%s'", buf);
    saefw_token_text(&d, 1, buf, sizeof buf);
    CHECK(!strcmp(buf, "\\xE2\\x82"), "first part of the euro sign -> '%s'", buf);
    saefw_token_text(&d, 2, buf, sizeof buf);
    CHECK(!strcmp(buf, "\\xAC!"), "last part -> '%s'", buf);
    saefw_token_text(&d, 3, buf, sizeof buf);
    CHECK(!strcmp(buf, "\xF0\x9F\x98\x80"), "4-byte character -> '%s'", buf);
}

static void test_neuron_classes(void) {
    float row[256];
    memset(row, 0, sizeof row);
    row[17] = -2;
    CHECK(saefw_neuron_sparsity_class(row, 256) == 1, "one-hot row is 1-sparse");
    for (int i = 0; i < 10; i++) row[i * 3] = 1;
    row[17] = 0;
    CHECK(saefw_neuron_sparsity_class(row, 256) == 10, "ten equal entries are 10-sparse");
    for (int i = 0; i < 256; i++) row[i] = (i % 2) ? 0.5f : -0.5f;
    CHECK(saefw_neuron_sparsity_class(row, 256) == 0, "a flat row is dense");
    /* top1 0.5 but the next nine hold 0.45 > 0.1: 10-sparse, not 1-sparse */
    memset(row, 0, sizeof row);
    row[0] = sqrtf(0.5f);
    for (int i = 1; i < 10; i++) row[i] = sqrtf(0.05f);
    row[100] = sqrtf(0.05f);
    CHECK(saefw_neuron_sparsity_class(row, 256) == 10, "top1 0.5 with 0.45 in the next nine is 10-sparse");
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *fp = fopen(path, "wb");
    REQUIRE(fp && fwrite(data, 1, n, fp) == n && fclose(fp) == 0, "write %s", path);
}

static void test_report_and_errors(const saefw_features *f, const saefw_sae *sae, const char *tmp) {
    char dir[2048], p[2200], err[1024];
    snprintf(dir, sizeof dir, "%s/report", tmp);
    saefw_token_decoder d;
    saefw_token_decoder_bytes(&d, 256);
    saefw_report_opts ro = {"ckpt", "tiny-1l", "blocks.0.mlp.hook_post", 16, &d, "/nonexistent"};
    CHECK(saefw_features_write_report(f, &ro, dir, err, sizeof err) == 0, "%s", err);
    /* written twice: the second replaces the first */
    CHECK(saefw_features_write_report(f, &ro, dir, err, sizeof err) == 0, "%s", err);
    const char *files[] = {"index.html",      "summary.json",       "features.jsonl",
                           "data/summary.js", "data/shard_0000.js", "data/shard_0002.js"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        CHECK(access(p, R_OK) == 0, "%s missing", p);
    }
    snprintf(p, sizeof p, "%s/data/shard_0003.js", dir);
    CHECK(access(p, F_OK) != 0, "48 features in shards of 16 make 3 shards");
    char *text = NULL;
    snprintf(p, sizeof p, "%s/index.html", dir);
    CHECK(saefw_read_file(p, &text, NULL, err, sizeof err) == 0 && contains(text, "not installed"),
          "placeholder index.html");
    free(text);
    snprintf(p, sizeof p, "%s/summary.json", dir);
    text = NULL;
    REQUIRE(saefw_read_file(p, &text, NULL, err, sizeof err) == 0, "%s", err);
    cJSON *j = cJSON_Parse(text);
    CHECK(j && cJSON_GetArraySize(cJSON_GetObjectItem(j, "features")) == D_SAE, "summary.json: %d features",
          j ? cJSON_GetArraySize(cJSON_GetObjectItem(j, "features")) : -1);
    CHECK(j && cJSON_IsObject(cJSON_GetObjectItem(j, "neuron_sparsity")), "neuron_sparsity at an MLP site");
    cJSON_Delete(j);
    free(text);

    /* a folder that is not a report is not replaced */
    snprintf(dir, sizeof dir, "%s/notreport", tmp);
    REQUIRE(saefw_mkdirs(dir, err, sizeof err) == 0, "%s", err);
    snprintf(p, sizeof p, "%s/precious.txt", dir);
    write_file(p, "x", 1);
    CHECK(saefw_features_write_report(f, &ro, dir, err, sizeof err) != 0 && contains(err, "not a saefw report") &&
              access(p, F_OK) == 0,
          "non-report folder: '%s'", err);
    printf("  not a report -> %s\n", err);

    /* checkpoints for the job: the wrong d_in, and an empty data set */
    saefw_sae small;
    REQUIRE(saefw_sae_alloc(&small, 64, 32, 1e-3f, err, sizeof err) == 0, "%s", err);
    cJSON *cfg = cJSON_CreateObject();
    cJSON_AddStringToObject(cfg, "model_name", "../models/tiny-1l");
    cJSON_AddStringToObject(cfg, "hook_name", "blocks.0.mlp.hook_post");
    snprintf(dir, sizeof dir, "%s/ckpt_small", tmp);
    REQUIRE(saefw_checkpoint_save(dir, &small, cfg, err, sizeof err) == 0, "%s", err);
    saefw_features_job job;
    CHECK(saefw_features_job_open(&job, dir, NULL, "../models/tiny-1l/tokens.npy", err, sizeof err) != 0 &&
              contains(err, "d_in 64") && contains(err, "256"),
          "d_in mismatch: '%s'", err);
    printf("  d_in mismatch -> %s\n", err);
    saefw_features_job_close(&job);
    snprintf(dir, sizeof dir, "%s/ckpt", tmp);
    REQUIRE(saefw_checkpoint_save(dir, sae, cfg, err, sizeof err) == 0, "%s", err);
    /* an .npy of shape (0,) */
    static const char npy[] = "\x93NUMPY\x01\x00\x76\x00{'descr': '<u2', 'fortran_order': False, 'shape': (0,), }";
    char hdr[128];
    memset(hdr, ' ', sizeof hdr);
    memcpy(hdr, npy, sizeof npy - 1);
    hdr[127] = '\n';
    snprintf(p, sizeof p, "%s/empty.npy", tmp);
    write_file(p, hdr, sizeof hdr);
    CHECK(saefw_features_job_open(&job, dir, NULL, p, err, sizeof err) != 0 && contains(err, "empty.npy") &&
              contains(err, "0 tokens"),
          "empty data: '%s'", err);
    printf("  empty data -> %s\n", err);
    saefw_features_job_close(&job);
    CHECK(saefw_features_job_open(&job, dir, NULL, "../models/tiny-1l/tokens.npy", err, sizeof err) == 0 &&
              !job.ids_only && job.dec.token_bytes && !strcmp(job.hook_name, "blocks.0.mlp.hook_post"),
          "a model folder with a tokenizer.json is shown through it (%s)", err);
    saefw_features_job_close(&job);
    /* The same model in a folder without tokenizer.json: ids, and the reason. */
    char bare[1200], cmd[4096];
    snprintf(bare, sizeof bare, "%s/bare-model", tmp);
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s' && cp ../models/tiny-1l/config.json ../models/tiny-1l/model.safetensors '%s/'", bare, bare);
    REQUIRE(system(cmd) == 0, "%s", cmd);
    CHECK(saefw_features_job_open(&job, dir, bare, "../models/tiny-1l/tokens.npy", err, sizeof err) == 0 &&
              job.ids_only && job.why_ids[0] && !strcmp(job.hook_name, "blocks.0.mlp.hook_post"),
          "a model without a tokenizer: ids (%s)", err);
    printf("  no tokenizer -> %s\n", job.why_ids);
    saefw_features_job_close(&job);
    cJSON_Delete(cfg);
    saefw_sae_free(&small);
}

static char out[1 << 16];

/* out is one line, "saefw features: ...". */
static int one_line_error(const char *s) {
    const char *nl = strchr(s, '\n');
    return !strncmp(s, "saefw features: ", 16) && nl && nl[1] == 0;
}

/* The JSON object of a data script "saefwReport.<fn>(<args>{...});". */
static cJSON *parse_script(const char *path, const char *fn) {
    char *text = NULL, err[512];
    if (saefw_read_file(path, &text, NULL, err, sizeof err) != 0) return NULL;
    cJSON *j = NULL;
    char *brace = strchr(text, '{'), *end = strrchr(text, ')');
    if (!strncmp(text, "saefwReport.", 12) && !strncmp(text + 12, fn, strlen(fn)) && brace && end && end > brace) {
        *end = 0;
        j = cJSON_Parse(brace);
    }
    free(text);
    return j;
}

static void test_cli(const saefw_sae *sae, const char *tmp) {
    const char *bin = getenv("SAEFW_BIN");
    if (!bin || !*bin) {
        printf("SAEFW_BIN not set: the command's test is skipped (run under ctest)\n");
        return;
    }
    printf("saefw features on a checkpoint\n");
    char ck[2048], rep[2048], p[2300], err[512];
    snprintf(ck, sizeof ck, "%s/cli_ckpt", tmp);
    snprintf(rep, sizeof rep, "%s/cli_report", tmp);
    cJSON *cfg = cJSON_CreateObject();
    cJSON_AddStringToObject(cfg, "model_name", "tiny-1l"); /* no data: the bundled tokens */
    cJSON_AddStringToObject(cfg, "hook_name", "blocks.0.mlp.hook_post");
    cJSON_AddNumberToObject(cfg, "context_size", 64);
    REQUIRE(saefw_checkpoint_save(ck, sae, cfg, err, sizeof err) == 0, "%s", err);
    cJSON_Delete(cfg);
    int rc = t_run(out, sizeof out, "'%s' features '%s' --out '%s' --tokens 8192 --top-k 5 --threads 2", bin, ck, rep);
    CHECK(rc == 0 && contains(out, "report: ") && contains(out, "index.html"), "exit %d:\n%s", rc, out);
    snprintf(p, sizeof p, "%s/data/summary.js", rep);
    cJSON *sum = parse_script(p, "summary(");
    CHECK(sum != NULL, "%s does not parse", p);
    int shards = 0, feats = 0;
    if (sum) {
        const cJSON *tk = cJSON_GetObjectItem(sum, "tokenizer");
        CHECK(cJSON_IsString(tk) && !strcmp(tk->valuestring, "tokenizer.json"),
              "tiny-1l is shown through its tokenizer.json");
        CHECK(cJSON_GetObjectItem(sum, "tokens_analyzed")->valuedouble == 8192, "tokens_analyzed");
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(sum, "features")) == D_SAE, "summary features");
        shards = (int)cJSON_GetObjectItem(sum, "n_shards")->valuedouble;
        cJSON_Delete(sum);
    }
    for (int s = 0; s < shards; s++) {
        snprintf(p, sizeof p, "%s/data/shard_%04d.js", rep, s);
        cJSON *j = parse_script(p, "shard(");
        CHECK(j != NULL, "%s does not parse", p);
        if (!j) continue;
        const cJSON *fs = cJSON_GetObjectItem(j, "features");
        feats += cJSON_GetArraySize(fs);
        const cJSON *f0 = cJSON_GetArrayItem(fs, 0);
        CHECK(f0 && cJSON_GetArraySize(cJSON_GetObjectItem(f0, "examples")) <= 5, "--top-k 5");
        cJSON_Delete(j);
    }
    CHECK(shards > 0 && feats == D_SAE, "%d shards hold %d features, want %d", shards, feats, D_SAE);
    snprintf(p, sizeof p, "%s/features.jsonl", rep);
    char *text = NULL;
    int lines = 0, bad = 0;
    if (saefw_read_file(p, &text, NULL, err, sizeof err) == 0) {
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
            cJSON *j = cJSON_Parse(line);
            bad += !j || !cJSON_IsNumber(cJSON_GetObjectItem(j, "index")) ||
                   !cJSON_IsArray(cJSON_GetObjectItem(j, "activations"));
            lines++;
            cJSON_Delete(j);
        }
    }
    free(text);
    CHECK(lines == D_SAE && bad == 0, "features.jsonl: %d lines, %d bad", lines, bad);
    printf("  %d shards, %d features, %d jsonl lines\n", shards, feats, lines);

    /* the same from Lua */
    snprintf(p, sizeof p, "%s/features.lua", tmp);
    char script[4096];
    T_FMT(script,
          "local saefw = require 'saefw'\n"
          "local r = saefw.features { sae = '%s', n_tokens = 2048, top_k = 4 }\n"
          "local f = r.features[1]\n"
          "print(string.format('lua: %%d features, %%d tokens, %%d examples, tokenizer %%s, hist %%d', #r.features,\n"
          "  r.tokens_analyzed, #f.examples, r.tokenizer, #f.act_hist.counts))\n"
          "local ok, e = pcall(saefw.features, { sae = '%s', top_k = 0 })\n"
          "print('error: ' .. tostring(e))\n"
          "local t = saefw.tokens(saefw.data_dir() .. '/models/tiny-1l/tokens.npy', { seq_len = 64, bos = 256 })\n"
          "local r2 = saefw.features { sae = saefw.load_sae('%s'), model = saefw.model('tiny-1l'), tokens = t,\n"
          "  site = 'blocks.0.mlp.hook_post', n_tokens = 2048, top_k = 4 }\n"
          "local same = #r2.features == #r.features\n"
          "for i, g in ipairs(r2.features) do\n"
          "  local h = r.features[i]\n"
          "  same = same and g.max_act == h.max_act and g.density == h.density and #g.examples == #h.examples\n"
          "end\n"
          "print('objects agree with the checkpoint path: ' .. tostring(same))\n",
          ck, ck, ck);
    write_file(p, script, strlen(script));
    rc = t_run(out, sizeof out, "'%s' run '%s'", bin, p);
    CHECK(rc == 0 && contains(out, "lua: 48 features, 2048 tokens, 4 examples, tokenizer tokenizer.json") &&
              contains(out, "error: ") && contains(out, "top_k") &&
              contains(out, "objects agree with the checkpoint path: true"),
          "saefw.features from Lua: exit %d:\n%s", rc, out);
    printf("  %s", out);

    rc = t_run(out, sizeof out, "'%s' features '%s'", bin, ck);
    CHECK(rc == 2 && contains(out, "missing --out DIR"), "no --out: exit %d: %s", rc, out);
    rc = t_run(out, sizeof out, "'%s' features '%s' --out '%s' --frobnicate 1", bin, ck, rep);
    CHECK(rc == 2 && contains(out, "unknown option --frobnicate"), "unknown option: exit %d: %s", rc, out);
    rc = t_run(out, sizeof out, "'%s' features '%s' --out '%s' --tokens many", bin, ck, rep);
    CHECK(rc == 2 && contains(out, "--tokens"), "bad --tokens: exit %d: %s", rc, out);
    rc = t_run(out, sizeof out, "'%s' features '%s' --out '%s' --model gelu-nope", bin, ck, rep);
    CHECK(rc == 1 && contains(out, "gelu-nope"), "unknown model: exit %d: %s", rc, out);

    /* The bad input of the command itself (test_report_and_errors made the files): one line each,
     * and no report folder left behind. */
    printf("saefw features on bad input\n");
    char bad_rep[2100];
    snprintf(bad_rep, sizeof bad_rep, "%s/bad_report", tmp);
    rc = t_run(out, sizeof out, "'%s' features '%s/ckpt_small' --out '%s' --data ../models/tiny-1l/tokens.npy", bin,
               tmp, bad_rep);
    CHECK(rc == 1 && one_line_error(out) && contains(out, "d_in 64") && contains(out, "--model"),
          "d_in mismatch: exit %d: %s", rc, out);
    printf("  %s", out);
    rc = t_run(out, sizeof out, "'%s' features '%s' --out '%s' --data '%s/empty.npy'", bin, ck, bad_rep, tmp);
    CHECK(rc == 1 && one_line_error(out) && contains(out, "empty.npy") && contains(out, "0 tokens"),
          "empty data: exit %d: %s", rc, out);
    printf("  %s", out);
    CHECK(access(bad_rep, F_OK) != 0, "a failed command left %s", bad_rep);
    /* A model without a tokenizer: said once, and the report shows ids. */
    rc =
        t_run(out, sizeof out,
              "'%s' features '%s' --out '%s' --model '%s/bare-model' --data ../models/tiny-1l/tokens.npy --tokens 2048 "
              "--top-k 2",
              bin, ck, bad_rep, tmp);
    int said = 0;
    for (const char *q = out; (q = strstr(q, "shown as ids")); q++) said++;
    CHECK(rc == 0 && said == 1, "no tokenizer: exit %d, said %d times:\n%s", rc, said, out);
    snprintf(p, sizeof p, "%s/data/shard_0000.js", bad_rep);
    text = NULL;
    CHECK(saefw_read_file(p, &text, NULL, err, sizeof err) == 0 && contains(text, "\"#"), "no ids in %s", p);
    free(text);
    snprintf(p, sizeof p, "%s/data/summary.js", bad_rep);
    sum = parse_script(p, "summary(");
    CHECK(sum && cJSON_IsNull(cJSON_GetObjectItem(sum, "tokenizer")), "a report shown as ids names no tokenizer");
    cJSON_Delete(sum);
}

/* The rare direction against a direct computation from the encoder columns, at a threshold that
 * makes about half the features rare. */
static void test_rare_direction(const saefw_model *m, const saefw_tokens *tok, saefw_hook h, const saefw_sae *sae,
                                const saefw_features *f1) {
    double dens[D_SAE];
    for (int j = 0; j < D_SAE; j++) dens[j] = f1->f[j].density;
    double sorted[D_SAE];
    memcpy(sorted, dens, sizeof sorted);
    for (int a = 1; a < D_SAE; a++)
        for (int b = a; b > 0 && sorted[b - 1] > sorted[b]; b--) {
            double t = sorted[b];
            sorted[b] = sorted[b - 1];
            sorted[b - 1] = t;
        }
    const double thr = sorted[D_SAE / 2];
    saefw_features_opts o;
    saefw_features_default_opts(&o);
    o.n_tokens = ROWS * T - 5;
    o.top_k = 8;
    o.batch_rows = 10;
    o.rare_threshold = thr;
    saefw_features *f = NULL;
    char err[1024];
    REQUIRE(saefw_features_run(m, tok, h, sae, &o, &f, err, sizeof err) == 0, "%s", err);
    const int64_t d = sae->d_in;
    const float *W = sae->p[SAEFW_W_ENC];
    double dir[1024] = {0}, norm = 0;
    REQUIRE(d <= 1024, "d_in %lld", (long long)d);
    int64_t n = 0, want[SAEFW_RARE_BINS] = {0};
    for (int j = 0; j < D_SAE; j++)
        if (dens[j] > 0 && dens[j] < thr) {
            n++;
            for (int64_t i = 0; i < d; i++) dir[i] += W[i * D_SAE + j] / 1.0;
        }
    for (int64_t i = 0; i < d; i++) norm += dir[i] * dir[i];
    for (int j = 0; j < D_SAE; j++)
        if (dens[j] > 0 && dens[j] < thr) {
            double dot = 0, cn = 0;
            for (int64_t i = 0; i < d; i++)
                dot += dir[i] * W[i * D_SAE + j], cn += (double)W[i * D_SAE + j] * W[i * D_SAE + j];
            int k = (int)floor((dot / sqrt(norm * cn) + 1) / 2 * SAEFW_RARE_BINS);
            want[k < 0 ? 0 : k >= SAEFW_RARE_BINS ? SAEFW_RARE_BINS - 1 : k]++;
        }
    int same = f->n_rare == n;
    for (int b = 0; b < SAEFW_RARE_BINS; b++) same &= f->rare_cos_hist[b] == want[b];
    printf("  rare direction: %lld of %d features below density %.3g; cosine histogram %s the direct computation\n",
           (long long)f->n_rare, D_SAE, thr, same ? "equals" : "DIFFERS FROM");
    CHECK(n > 0 && same, "rare direction: %lld rare (want %lld) or the cosine histogram differs", (long long)f->n_rare,
          (long long)n);
    saefw_features_free(f);
}

int main(void) {
    const char *tmp = t_tmpdir("test_features");
    char err[1024];
    test_token_text();
    test_multibyte_text();
    test_neuron_classes();

    saefw_model *m = load_tiny();
    saefw_tokens *tok = open_tokens("../models/tiny-1l/tokens.npy");
    saefw_hook h;
    REQUIRE(saefw_model_hook_resolve(m, "blocks.0.mlp.hook_post", -1, &h, err, sizeof err) == 0, "%s", err);
    int32_t *toks = malloc(sizeof(int32_t) * ROWS * T);
    float *x = all_acts(m, tok, h, ROWS, toks);
    const int64_t d_in = saefw_model_hook_width(m, h);
    saefw_sae sae;
    make_sae(&sae, d_in, x + (3 * T + 7) * d_in);

    printf("analysis against the dense computation (%d rows of %d tokens, %d features)\n", ROWS, T, D_SAE);
    saefw_features *f1 = run(m, tok, h, &sae, 1);
    check_against_dense(m, tok, h, &sae, f1, x, toks);
    printf("the same with the SAE's sparse path (its active entries)\n");
    saefw_sae_set_path(SAEFW_SAE_SPARSE);
    saefw_features *fs = run(m, tok, h, &sae, 2);
    saefw_sae_set_path(SAEFW_SAE_AUTO);
    check_against_dense(m, tok, h, &sae, fs, x, toks);
    saefw_features_free(fs);
    test_rare_direction(m, tok, h, &sae, f1);
    saefw_features *f3 = run(m, tok, h, &sae, 3);
    CHECK(same_results(f1, f3), "results differ between 1 and 3 threads");
    saefw_features_free(f3);

    printf("the d_in check and a resid site\n");
    saefw_hook hr;
    REQUIRE(saefw_model_hook_resolve(m, "resid_post", 0, &hr, err, sizeof err) == 0, "%s", err);
    saefw_features *bad = NULL;
    saefw_features_opts o;
    saefw_features_default_opts(&o);
    CHECK(saefw_features_run(m, tok, hr, &sae, &o, &bad, err, sizeof err) != 0 && !bad && contains(err, "d_in 256"),
          "d_in mismatch: '%s'", err);
    printf("  -> %s\n", err);

    /* At a residual site the effects are W_dec[f] . W_U, folded the same way. */
    saefw_sae rs;
    make_sae(&rs, 64, NULL);
    const saefw_model_cfg *mc = saefw_model_config(m);
    const int64_t V = mc->d_vocab;
    const float *W_U = saefw_model_weight(m, "unembed.W_U", 0), *lnw = saefw_model_weight(m, "ln_final.w", 0);
    float *eff = malloc(sizeof(float) * (size_t)(D_SAE * V));
    REQUIRE(eff && saefw_feature_logit_effects(m, hr, &rs, 0, D_SAE, eff, err, sizeof err) == 0, "%s", err);
    double worst = 0, scale = 0;
    for (int64_t j = 0; j < D_SAE; j++) {
        double u[64], ev[512], mu = 0, me = 0;
        for (int k = 0; k < 64; k++) mu += rs.p[SAEFW_W_DEC][j * 64 + k] / 64.0;
        for (int k = 0; k < 64; k++) u[k] = (rs.p[SAEFW_W_DEC][j * 64 + k] - mu) * lnw[k];
        for (int64_t v = 0; v < V; v++) {
            ev[v] = 0;
            for (int k = 0; k < 64; k++) ev[v] += u[k] * W_U[k * V + v];
            me += ev[v] / V;
        }
        for (int64_t v = 0; v < V; v++) {
            double d = fabs(eff[j * V + v] - (ev[v] - me));
            if (!(d <= worst)) worst = d;
            if (fabs(ev[v] - me) > scale) scale = fabs(ev[v] - me);
        }
    }
    printf("  resid_post logit effects: max |diff| %.3g (largest effect %.3g)\n", worst, scale);
    CHECK(worst <= 1e-4 * scale, "resid logit effects differ by %g", worst);
    saefw_features *fr = NULL;
    o.n_tokens = 1024;
    CHECK(saefw_features_run(m, tok, hr, &rs, &o, &fr, err, sizeof err) == 0 && fr && fr->one_sparse == -1 &&
              fr->f[0].neuron_class == -1 && fr->f[0].n_logits == 10,
          "resid site: %s", err);
    saefw_features_free(fr);
    free(eff);
    saefw_sae_free(&rs);

    test_report_and_errors(f1, &sae, tmp);
    test_cli(&sae, tmp);
    saefw_features_free(f1);
    saefw_sae_free(&sae);
    free(x);
    free(toks);
    saefw_tokens_free(tok);
    saefw_model_free(m);
    return t_finish("test_features");
}
