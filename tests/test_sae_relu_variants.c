/* The ReLU SAE's 2024-recipe and transcoder variants against tests/fixtures/arch/ (written by
 * tests/reference/make_arch_fixtures.py from docs/architectures.md): relu_april (decoder-norm-weighted
 * L1, no b_dec on the input, April init shapes; the test applies the gradient clipping and the lr / L1
 * schedules itself from the formulas there) and the transcoder (a target of its own width d_out, the
 * seed's unit-norm decoder). For each: the forward/backward case, the 20-step small run and the 20-step
 * big run, on the dense and the sparse path, at 1 and 3 threads, whose results must be the same bytes.
 * Tolerances (relative to each tensor's largest reference value): forward, gradients, per-step loss
 * terms and the small run's final parameters 1e-5 (fp32 sums in another order; measured up to 4e-7);
 * the big run's final parameters 5e-4 (measured 4e-5: Adam magnifies rounding in near-zero gradients,
 * and the reference itself differs from float64 by 7e-5 there). */
#include "parallel.h"
#include "sae.h"
#include "testutil.h"

static const double TOL_FWD = 1e-5, TOL_STEP = 1e-5, TOL_SMALL = 1e-5, TOL_BIG = 5e-4;

typedef struct {
    const char *arch; /* "relu_april" or "transcoder" */
    int april;
    saefw_tensorfile *tf, *data;
} fixture;

/* Metadata key, or its big_ override when big and present. */
static double meta(const fixture *f, const char *key, int big) {
    char name[64];
    snprintf(name, sizeof name, "big_%s", key);
    const char *v = big ? saefw_tf_metadata(f->tf, name) : NULL;
    return v ? atof(v) : t_meta(f->tf, key);
}

static float *tensor(const fixture *f, const char *prefix, const char *name) {
    char full[96];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    return t_tensor(f->tf, full, NULL);
}

/* An int64 fixture tensor as a malloc'd array; exits if absent or of another dtype. */
static int64_t *tensor_i64(saefw_tensorfile *tf, const char *name, int64_t *numel) {
    const saefw_tensor_info *t = saefw_tf_find(tf, name);
    REQUIRE(t && t->dtype == SAEFW_DT_I64, "fixture tensor '%s' missing or not int64", name);
    int64_t *out = malloc(sizeof(int64_t) * (size_t)(t->numel ? t->numel : 1));
    REQUIRE(out, "out of memory");
    memcpy(out, t->data, sizeof(int64_t) * (size_t)t->numel);
    *numel = t->numel;
    return out;
}

/* An SAE with the fixture's options and the parameters <prefix>W_enc, ... */
static void make_sae(const fixture *f, saefw_sae *sae, const char *prefix, float l1c) {
    char name[96], err[256];
    snprintf(name, sizeof name, "%sW_enc", prefix);
    const saefw_tensor_info *we = saefw_tf_find(f->tf, name);
    snprintf(name, sizeof name, "%sW_dec", prefix);
    const saefw_tensor_info *wd = saefw_tf_find(f->tf, name);
    REQUIRE(we && wd && we->ndim == 2 && wd->ndim == 2, "fixture %s: %sW_enc / W_dec", f->arch, prefix);
    const int64_t d_in = we->shape[0], d_sae = we->shape[1], d_out = wd->shape[1];
    if (f->april) {
        REQUIRE(saefw_sae_alloc(sae, d_in, d_sae, l1c, err, sizeof err) == 0, "%s", err);
        sae->apply_b_dec_to_input = 0;
        sae->l1_weighting = SAEFW_L1_DECODER_NORM;
    } else {
        REQUIRE(saefw_sae_alloc_xy(sae, d_in, d_out, d_sae, l1c, err, sizeof err) == 0, "%s", err);
        sae->transcoder = 1;
        sae->apply_b_dec_to_input = 0;
    }
    REQUIRE(saefw_sae_check_options(sae, err, sizeof err) == 0, "%s", err);
    for (int i = 0; i < SAEFW_N_PARAMS; i++) {
        float *v = tensor(f, prefix, saefw_param_name(i));
        memcpy(sae->p[i], v, sizeof(float) * (size_t)sae->numel[i]);
        free(v);
    }
}

/* torch 1.13's clip_grad_norm_ (the reference's rule): the 2-norm of all gradients together, and a
 * scale of max_norm / (norm + 1e-6) when that is below 1. Returns the norm; *coef gets the scale. */
static double clip(saefw_sae *sae, double max_norm, double *coef) {
    double ss = 0;
    for (size_t k = 0; k < sae->n_total; k++) ss += (double)sae->grads[k] * sae->grads[k];
    const double norm = sqrt(ss), c = max_norm / (norm + 1e-6);
    *coef = c < 1 ? c : 1.0;
    if (c < 1)
        for (size_t k = 0; k < sae->n_total; k++) sae->grads[k] *= (float)c;
    return norm;
}

/* torch 1.13's single-tensor Adam (tests/reference/README.md), step t >= 1, in float. */
static void adam(saefw_sae *sae, float *m, float *v, int t, double lr, double b1, double b2, double eps) {
    const double bc1 = 1 - pow(b1, t), bc2 = sqrt(1 - pow(b2, t));
    for (size_t k = 0; k < sae->n_total; k++) {
        const float g = sae->grads[k];
        m[k] = (float)b1 * m[k] + (float)(1 - b1) * g;
        v[k] = (float)b2 * v[k] + (float)(1 - b2) * g * g;
        const float denom = sqrtf(v[k]) / (float)bc2 + (float)eps;
        sae->params[k] -= (float)(lr / bc1) * (m[k] / denom);
    }
}

/* The relu_april schedules (docs/architectures.md) of step t out of T. */
static void schedule(const fixture *f, int big, int t, int T, double *lr, double *l1c) {
    const double lw = meta(f, "lr_warmup", big), ld = meta(f, "lr_decay", big), l1w = meta(f, "l1_warmup", big);
    *lr = meta(f, "lr", big);
    if (lw > 0) *lr *= fmin(1.0, (t + 1) / lw);
    if (ld > 0) *lr *= fmin(1.0, (T - t) / ld);
    *l1c = meta(f, "l1_coeff", big);
    if (l1w > 0) *l1c *= fmin(1.0, (t + 1) / l1w);
}

/* After backward: relu_april clips, the transcoder projects the decoder (the seed's order). */
static double post_backward(const fixture *f, saefw_sae *sae, int big, double *coef) {
    if (f->april) return clip(sae, meta(f, "max_grad_norm", big), coef);
    saefw_sae_project_decoder(sae);
    *coef = 1;
    return 0;
}

static void check_params(const fixture *f, const saefw_sae *sae, const char *prefix, double tol) {
    for (int i = 0; i < SAEFW_N_PARAMS; i++) {
        float *want = tensor(f, prefix, saefw_param_name(i));
        char what[64];
        snprintf(what, sizeof what, "%s%s", prefix, saefw_param_name(i));
        t_close(what, sae->p[i], want, sae->numel[i], tol, 1e-6);
        free(want);
    }
}

/* The constructed forward/backward case. */
static void fwd_case(const fixture *f) {
    const float l1c = (float)meta(f, "l1_coeff", 0);
    saefw_sae sae;
    make_sae(f, &sae, "fwd_", l1c);
    const int64_t d_sae = sae.d_sae, d_out = sae.d_out;
    int64_t n;
    float *x = t_tensor(f->tf, "fwd_x", &n);
    const int64_t B = n / sae.d_in;
    float *y = f->april ? NULL : tensor(f, "fwd_", "y");
    char err[256];
    saefw_sae_eval *e;
    saefw_sae_step *s;
    REQUIRE(saefw_sae_eval_alloc(&e, &sae, B, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_sae_step_alloc(&s, &sae, B, err, sizeof err) == 0, "%s", err);
    float *loss = tensor(f, "fwd_", "loss"), *l2 = tensor(f, "fwd_", "l2"), *l1 = tensor(f, "fwd_", "l1");
    saefw_sae_stats st;
    const float *x_hat = saefw_sae_eval_forward_xy(&sae, e, x, y, B, &st);
    t_close1("fwd loss", st.loss, loss[0], TOL_FWD);
    t_close1("fwd l2", st.l2, l2[0], TOL_FWD);
    t_close1("fwd l1 (with l1_coeff)", st.l1, (double)l1c * l1[0], TOL_FWD);
    float *want = tensor(f, "fwd_", "x_hat");
    t_close("fwd x_hat", x_hat, want, B * d_out, TOL_FWD, 1e-6);
    free(want);
    want = tensor(f, "fwd_", "acts");
    const float *acts = saefw_sae_eval_acts(&sae, e, err, sizeof err);
    REQUIRE(acts, "%s", err);
    t_close("fwd acts", acts, want, B * d_sae, TOL_FWD, 1e-6);
    free(want);

    saefw_sae_stats sst;
    saefw_sae_train_step_xy(&sae, s, x, y, B, &sst);
    t_close1("fwd loss (training step)", sst.loss, loss[0], TOL_FWD);
    t_close1("fwd l1 (training step)", sst.l1, (double)l1c * l1[0], TOL_FWD);
    /* Raw gradients: all four for relu_april (before clipping), W_dec's for the transcoder (before the
     * projection). */
    for (int i = 0; i < SAEFW_N_PARAMS; i++) {
        if (!f->april && i != SAEFW_W_DEC) continue;
        char name[64];
        snprintf(name, sizeof name, "grad_raw_%s", saefw_param_name(i));
        want = tensor(f, "fwd_", name);
        t_close(name, sae.g[i], want, sae.numel[i], TOL_FWD, 1e-6);
        free(want);
    }
    double coef;
    const double norm = post_backward(f, &sae, 0, &coef);
    if (f->april) {
        float *gn = tensor(f, "fwd_", "grad_norm"), *cc = tensor(f, "fwd_", "clip_coef");
        t_close1("fwd grad_norm", norm, gn[0], TOL_FWD);
        t_close1("fwd clip_coef", coef, cc[0], TOL_FWD);
        free(gn);
        free(cc);
    } else {
        want = tensor(f, "fwd_", "W_dec_normed");
        t_close("fwd W_dec after renorm", sae.p[SAEFW_W_DEC], want, sae.numel[SAEFW_W_DEC], TOL_FWD, 1e-6);
        free(want);
    }
    for (int i = 0; i < SAEFW_N_PARAMS; i++) {
        char name[64];
        snprintf(name, sizeof name, "grad_%s", saefw_param_name(i));
        want = tensor(f, "fwd_", name);
        t_close(name, sae.g[i], want, sae.numel[i], TOL_FWD, 1e-6);
        free(want);
    }
    free(loss);
    free(l2);
    free(l1);
    free(x);
    free(y);
    saefw_sae_eval_free(e);
    saefw_sae_step_free(s);
    saefw_sae_free(&sae);
}

/* A 20-step run, small (tr_) or big (big_); out receives the final parameters [n_total]. */
static void run(const fixture *f, int big, float *out, size_t *n_out) {
    const char *pre = big ? "big_" : "tr_";
    char init[16];
    snprintf(init, sizeof init, "%sinit_", pre);
    const int T = (int)meta(f, "steps", big);
    const double l1_full = meta(f, "l1_coeff", big);
    saefw_sae sae;
    make_sae(f, &sae, init, (float)l1_full);
    const int64_t d_in = sae.d_in, d_out = sae.d_out;
    /* The batches: tr_batches [T, B, d_in] (tr_targets), or big_pool[big_index[t]] (big_pool_y). */
    float *xs = NULL, *ys = NULL, *pool = NULL, *pool_y = NULL;
    int64_t *index = NULL;
    int64_t B, n;
    if (big) {
        pool = t_tensor(f->data, "big_pool", NULL);
        pool_y = t_tensor(f->data, "big_pool_y", NULL);
        index = tensor_i64(f->data, "big_index", &n);
        B = n / T;
        xs = malloc(sizeof(float) * (size_t)(T * B * d_in));
        ys = malloc(sizeof(float) * (size_t)(T * B * d_out));
        REQUIRE(xs && ys, "out of memory");
        for (int64_t r = 0; r < T * B; r++) {
            const int64_t k = index[r];
            memcpy(xs + r * d_in, pool + k * d_in, sizeof(float) * (size_t)d_in);
            memcpy(ys + r * d_out, pool_y + k * d_out, sizeof(float) * (size_t)d_out);
        }
    } else {
        xs = t_tensor(f->tf, "tr_batches", &n);
        B = n / (T * d_in);
        if (!f->april) ys = t_tensor(f->tf, "tr_targets", NULL);
    }
    char err[256];
    saefw_sae_step *s;
    saefw_sae_eval *e;
    REQUIRE(saefw_sae_step_alloc(&s, &sae, B, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_sae_eval_alloc(&e, &sae, B, err, sizeof err) == 0, "%s", err);
    float *m = calloc(sae.n_total, sizeof(float)), *v = calloc(sae.n_total, sizeof(float));
    float *loss = calloc((size_t)T, sizeof(float)), *l2 = calloc((size_t)T, sizeof(float));
    float *l1 = calloc((size_t)T, sizeof(float)), *l0 = calloc((size_t)T, sizeof(float));
    float *gnorm = calloc((size_t)T, sizeof(float)), *ccoef = calloc((size_t)T, sizeof(float));
    REQUIRE(m && v && loss && l2 && l1 && l0 && gnorm && ccoef, "out of memory");
    const double b1 = meta(f, "beta1", big), b2 = meta(f, "beta2", big), eps = meta(f, "adam_eps", big);
    for (int t = 0; t < T; t++) {
        const float *x = xs + (int64_t)t * B * d_in, *y = f->april ? NULL : ys + (int64_t)t * B * d_out;
        double lr = meta(f, "lr", big), l1c = l1_full;
        if (f->april) schedule(f, big, t, T, &lr, &l1c);
        sae.l1_coeff = (float)l1c;
        if (big && t == 0) {
            /* Step 0's forward: x_hat and the active entries. */
            const float *x_hat = saefw_sae_eval_forward_xy(&sae, e, x, y, B, NULL);
            float *want = tensor(f, pre, "x_hat0");
            t_close("big x_hat0", x_hat, want, B * d_out, TOL_FWD, 1e-6);
            free(want);
            const float *acts = saefw_sae_eval_acts(&sae, e, err, sizeof err);
            REQUIRE(acts, "%s", err);
            int64_t na;
            int64_t *idx = tensor_i64(f->tf, "big_acts0_index", &na);
            float *val = tensor(f, pre, "acts0_value");
            float *dense = calloc((size_t)(B * sae.d_sae), sizeof(float));
            REQUIRE(dense, "out of memory");
            for (int64_t k = 0; k < na; k++) dense[idx[k]] = val[k];
            t_close("big acts0", acts, dense, B * sae.d_sae, TOL_FWD, 1e-6);
            free(dense);
            free(idx);
            free(val);
        }
        saefw_sae_stats st;
        saefw_sae_train_step_xy(&sae, s, x, y, B, &st);
        double coef;
        gnorm[t] = (float)post_backward(f, &sae, big, &coef);
        ccoef[t] = (float)coef;
        if (big && t == 0)
            for (int i = 0; i < SAEFW_N_PARAMS; i++) {
                char name[64];
                snprintf(name, sizeof name, "grad0_%s", saefw_param_name(i));
                float *want = tensor(f, pre, name);
                snprintf(name, sizeof name, "big grad0 %s", saefw_param_name(i));
                t_close(name, sae.g[i], want, sae.numel[i], TOL_FWD, 1e-6);
                free(want);
            }
        adam(&sae, m, v, t + 1, lr, b1, b2, eps);
        loss[t] = (float)st.loss;
        l2[t] = (float)st.l2;
        l1[t] = (float)(st.l1 / l1c); /* the fixture records the term without its coefficient */
        l0[t] = (float)st.l0;
    }
    static const char *const rec[] = {"loss", "l2", "l1", "l0"};
    float *got[] = {loss, l2, l1, l0};
    for (int k = 0; k < 4; k++) {
        float *want = tensor(f, pre, rec[k]);
        char what[64];
        snprintf(what, sizeof what, "%s%s per step", pre, rec[k]);
        t_close(what, got[k], want, T, TOL_STEP, 1e-6);
        free(want);
    }
    if (f->april) {
        float *want = tensor(f, pre, "grad_norm");
        char what[64];
        snprintf(what, sizeof what, "%sgrad_norm per step", pre);
        t_close(what, gnorm, want, T, TOL_STEP, 1e-6);
        free(want);
        want = tensor(f, pre, "clip_coef");
        snprintf(what, sizeof what, "%sclip_coef per step", pre);
        t_close(what, ccoef, want, T, TOL_STEP, 1e-6);
        free(want);
    }
    check_params(f, &sae, pre, big ? TOL_BIG : TOL_SMALL);
    memcpy(out, sae.params, sizeof(float) * sae.n_total);
    *n_out = sae.n_total;
    free(m);
    free(v);
    free(loss);
    free(l2);
    free(l1);
    free(l0);
    free(gnorm);
    free(ccoef);
    free(xs);
    free(ys);
    free(pool);
    free(pool_y);
    free(index);
    saefw_sae_step_free(s);
    saefw_sae_eval_free(e);
    saefw_sae_free(&sae);
}

static void run_arch(const char *arch, saefw_tensorfile *data) {
    char path[128], err[512];
    snprintf(path, sizeof path, "fixtures/arch/%s.safetensors", arch);
    fixture f = {arch, strcmp(arch, "relu_april") == 0, NULL, data};
    REQUIRE(saefw_tf_open(path, &f.tf, err, sizeof err) == 0, "%s", err);
    /* The big run's parameters (512 x 64 x 2 + ...) fit in this. */
    enum { CAP = 70000 };
    static float first[2][CAP], other[CAP];
    static const saefw_sae_path paths[2] = {SAEFW_SAE_DENSE, SAEFW_SAE_SPARSE};
    for (int p = 0; p < 2; p++)
        for (int th = 1; th <= 3; th += 2) {
            printf("%s, %s path, %d thread(s):\n", arch, p ? "sparse" : "dense", th);
            saefw_set_threads(th);
            saefw_sae_set_path(paths[p]);
            fwd_case(&f);
            size_t n_small, n_big;
            float small[4000];
            run(&f, 0, small, &n_small);
            REQUIRE(n_small <= 4000, "small run too large");
            run(&f, 1, th == 1 ? first[p] : other, &n_big);
            REQUIRE(n_big <= CAP, "big run too large");
            if (th == 3) {
                int same = memcmp(first[p], other, sizeof(float) * n_big) == 0;
                printf("  big run's final parameters at 1 and 3 threads: %s\n", same ? "same bytes" : "DIFFER");
                CHECK(same, "%s %s path: 1 and 3 threads give different parameters", arch, p ? "sparse" : "dense");
            }
        }
    saefw_set_threads(0);
    saefw_sae_set_path(SAEFW_SAE_AUTO);
    saefw_tf_close(f.tf);
}

int main(void) {
    saefw_tensorfile *data = NULL;
    char err[512];
    REQUIRE(saefw_tf_open("fixtures/arch/data.safetensors", &data, err, sizeof err) == 0, "%s", err);
    run_arch("relu_april", data);
    run_arch("transcoder", data);
    saefw_tf_close(data);
    return t_finish("test_sae_relu_variants");
}
