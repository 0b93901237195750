/* 20 full training steps (forward, backward, projection, renorm, Adam plugin) through the real
 * training loop, from the fixture's initialisation and batches, against PyTorch running the seed's
 * code (tests/reference/make_sae_fixtures.py): every step's loss, l2, l1 and the final weights
 * within 1e-4 relative. */
#include "plugin_loader.h"
#include "sae.h"
#include "testtrain.h"
#include "testutil.h"
#include "train.h"

typedef struct {
    const float *batches;
    int64_t next, n, rows, d;
} replay;

static int next_batch(void *ud, float *out, int64_t B, char *err, size_t errlen) {
    replay *r = ud;
    if (r->next >= r->n || B != r->rows) return -1;
    memcpy(out, r->batches + r->next * r->rows * r->d, sizeof(float) * (size_t)(r->rows * r->d));
    r->next++;
    return 0;
}

typedef struct {
    double loss[64], l2[64], l1[64];
    int n;
} seen;

static int on_event(void *ud, saefw_event event, const saefw_metrics *m, char *err, size_t errlen) {
    seen *s = ud;
    if (event == SAEFW_EVENT_LOG && s->n < 64) {
        s->loss[s->n] = m->loss;
        s->l2[s->n] = m->l2;
        s->l1[s->n] = m->l1;
        s->n++;
    }
    return 0;
}

int main(void) {
    saefw_tensorfile *tf = NULL;
    char err[1024];
    REQUIRE(saefw_tf_open("fixtures/sae/train20.safetensors", &tf, err, sizeof err) == 0, "%s", err);
    const saefw_tensor_info *bi = saefw_tf_find(tf, "batches");
    REQUIRE(bi && bi->ndim == 3, "batches");
    int64_t steps = bi->shape[0], B = bi->shape[1], d_in = bi->shape[2];
    const saefw_tensor_info *wi = saefw_tf_find(tf, "init_W_enc");
    REQUIRE(wi, "init_W_enc");
    int64_t d_sae = wi->shape[1];

    saefw_sae sae;
    REQUIRE(saefw_sae_alloc(&sae, d_in, d_sae, (float)t_meta(tf, "l1_coeff"), err, sizeof err) == 0, "%s", err);
    static const char *init[4] = {"init_W_enc", "init_W_dec", "init_b_enc", "init_b_dec"};
    for (int i = 0; i < 4; i++) {
        float *v = t_tensor(tf, init[i], NULL);
        memcpy(sae.p[i], v, sizeof(float) * (size_t)sae.numel[i]);
        free(v);
    }
    float *batches = t_tensor(tf, "batches", NULL);
    replay rp = {batches, 0, steps, B, d_in};

    t_adam adam = t_adam_load(t_meta(tf, "lr"), t_meta(tf, "beta1"), t_meta(tf, "beta2"));

    /* Evaluation draws (frequencies at the end) come from an unrelated source and change nothing. */
    saefw_synthetic_opts so = {d_in, 8, 0.1, 1.0, 1};
    saefw_source *eval = NULL;
    REQUIRE(saefw_source_synthetic(&so, &eval, err, sizeof err) == 0, "%s", err);

    seen s = {0};
    saefw_train_opts o = {0};
    o.sae = &sae;
    o.next_batch = next_batch;
    o.next_batch_ud = &rp;
    o.batch_size = B;
    o.eval_source = eval;
    o.steps = steps;
    o.optimizer.plugin = adam.plugin;
    o.optimizer.opts = adam.opts;
    o.log_every = 1;
    o.progress = 0;
    o.on_event = on_event;
    o.event_ud = &s;
    saefw_train_result res;
    int rc = saefw_train(&o, &res, err, sizeof err);
    CHECK(rc == 0, "train failed: %s", err);
    CHECK(s.n == steps, "saw %d log events, want %lld", s.n, (long long)steps);

    float *losses = t_tensor(tf, "losses", NULL), *l2s = t_tensor(tf, "l2s", NULL), *l1s = t_tensor(tf, "l1s", NULL);
    double worst = 0;
    for (int i = 0; i < s.n && i < steps; i++) {
        double rl = fabs(s.loss[i] - losses[i]) / fabs(losses[i]);
        double r2 = fabs(s.l2[i] - l2s[i]) / fabs(l2s[i]);
        double r1 = fabs(s.l1[i] - l1s[i]) / fabs(l1s[i]);
        double r = t_max(rl, t_max(r2, r1));
        worst = t_max(worst, r);
        CHECK(r <= 1e-4, "step %d: loss %.9g vs %.9g, l2 %.9g vs %.9g, l1 %.9g vs %.9g", i, s.loss[i], losses[i],
              s.l2[i], l2s[i], s.l1[i], l1s[i]);
    }
    printf("  per-step loss/l2/l1: max relative difference %.3e over %d steps (tol 1e-4)\n", worst, s.n);
    static const char *fin[4] = {"W_enc", "W_dec", "b_enc", "b_dec"};
    for (int i = 0; i < 4; i++) {
        float *want = t_tensor(tf, fin[i], NULL);
        char what[64];
        snprintf(what, sizeof what, "final %s", fin[i]);
        t_close(what, sae.p[i], want, sae.numel[i], 1e-4, 1e-6);
        free(want);
    }
    free(losses);
    free(l2s);
    free(l1s);
    free(batches);
    saefw_source_free(eval);
    t_adam_free(&adam);
    saefw_sae_free(&sae);
    saefw_tf_close(tf);
    return t_finish("test_train_reference");
}
