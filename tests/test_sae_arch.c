/* The architectures topk, batchtopk, jumprelu and gated against tests/fixtures/arch/ (written by
 * tests/reference/make_arch_fixtures.py, PyTorch from the papers): the constructed forward/backward
 * (fwd_*), 20 Adam steps at the small shape (tr_*) and at a shape where the sparse path runs (big_*),
 * on the dense and the sparse kernel path, and bit-identical results with 1 and 3 threads.
 * Usage: test_sae_arch [arch] (default: all four).
 * Tolerances (max |diff| / max |ref| per tensor): forward/backward 1e-5 (fp32 sums in another
 * order); after 20 small steps 1e-4 (losses and parameters); the big run's step-0 gradients 1e-4, its
 * losses 5e-4 and its final parameters 2e-3 (measured up to 9e-5 and 7e-4: jumprelu's sparse path; Adam magnifies rounding in near-zero gradients: the reference's own float32 and float64 runs differ
 * by up to 7e-5, docs/architectures.md). NaN fails every check. */
#include "parallel.h"
#include "sae.h"
#include "sae_arch.h"
#include "testutil.h"

static const double TOL_FWD = 1e-5, TOL_TR = 1e-4, TOL_BIG0 = 1e-4, TOL_BIG = 2e-3, TOL_BIG_LOSS = 5e-4;

/* An int64 fixture tensor as floats (the values are small integers). */
static float *t_int_tensor(saefw_tensorfile *tf, const char *name, int64_t *numel) {
    const saefw_tensor_info *t = saefw_tf_find(tf, name);
    REQUIRE(t && t->dtype == SAEFW_DT_I64, "fixture tensor '%s' missing or not int64", name);
    float *out = malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
    REQUIRE(out, "out of memory");
    for (int64_t i = 0; i < t->numel; i++) {
        int64_t v;
        memcpy(&v, (const char *)t->data + 8 * i, 8);
        out[i] = (float)v;
    }
    if (numel) *numel = t->numel;
    return out;
}

static double meta_or(saefw_tensorfile *tf, const char *big, const char *key, double def) {
    char name[64];
    snprintf(name, sizeof name, "big_%s", key);
    const char *v = big ? saefw_tf_metadata(tf, name) : NULL;
    if (!v) v = saefw_tf_metadata(tf, key);
    return v ? atof(v) : def;
}

/* The SAE of the fixture's architecture and hyperparameters (big: the big run's overrides). */
static void make_sae(saefw_tensorfile *tf, const char *arch, int big, int64_t d_in, int64_t d_sae, saefw_sae *sae) {
    saefw_sae_arch_cfg cfg;
    saefw_sae_arch a;
    char err[512];
    REQUIRE(saefw_sae_arch_parse(arch, &a, err, sizeof err) == 0, "%s", err);
    saefw_sae_arch_defaults(&cfg, a, d_in);
    const char *b = big ? "big" : NULL;
    cfg.k = (int64_t)meta_or(tf, b, "k", 1);
    cfg.k_aux = (int64_t)meta_or(tf, b, "k_aux", 1);
    cfg.dead_steps = (int64_t)meta_or(tf, b, "dead_steps", 0);
    cfg.aux_coeff = meta_or(tf, b, "aux_coeff", 0);
    cfg.theta_rate = meta_or(tf, b, "theta_rate", 0.01);
    cfg.bandwidth = meta_or(tf, b, "bandwidth", 0.001);
    cfg.l0_coeff = meta_or(tf, b, "l0_coeff", 0);
    REQUIRE(saefw_sae_alloc_arch(sae, d_in, d_sae, (float)meta_or(tf, b, "l1_coeff", 0), &cfg, err, sizeof err) == 0,
            "%s", err);
}

static void load_params(saefw_tensorfile *tf, const char *prefix, saefw_sae *sae) {
    char name[96];
    for (int i = 0; i < sae->n_params; i++) {
        snprintf(name, sizeof name, "%s%s", prefix, sae->names[i]);
        int64_t n;
        float *v = t_tensor(tf, name, &n);
        REQUIRE(n == sae->numel[i], "%s: %lld elements, want %lld", name, (long long)n, (long long)sae->numel[i]);
        memcpy(sae->p[i], v, sizeof(float) * (size_t)n);
        free(v);
    }
}

static void check_params(saefw_tensorfile *tf, const char *prefix, const saefw_sae *sae, int grads, double tol) {
    char name[96], what[128];
    for (int i = 0; i < sae->n_params; i++) {
        snprintf(name, sizeof name, "%s%s", prefix, sae->names[i]);
        float *want = t_tensor(tf, name, NULL);
        snprintf(what, sizeof what, "%s%s", grads ? "grad " : "", name);
        t_close(what, grads ? sae->g[i] : sae->p[i], want, sae->numel[i], tol, 1e-6);
        free(want);
    }
}

static double sparsity_want(saefw_tensorfile *tf, const char *arch, const char *pre, int64_t t, int big) {
    char name[64];
#define TERM(n) (snprintf(name, sizeof name, "%s%s", pre, n), t_tensor(tf, name, NULL))
    double s = 0;
    if (!strcmp(arch, "topk") || !strcmp(arch, "batchtopk")) {
        float *aux = TERM("aux");
        s = meta_or(tf, big ? "big" : NULL, "aux_coeff", 0) * aux[t];
        free(aux);
    } else if (!strcmp(arch, "jumprelu")) {
        float *loss = TERM("loss"), *l2 = TERM("l2");
        s = (double)loss[t] - l2[t];
        free(loss);
        free(l2);
    } else {
        float *l1 = TERM("l1"), *aux = TERM("aux");
        s = meta_or(tf, big ? "big" : NULL, "l1_coeff", 0) * l1[t] + aux[t];
        free(l1);
        free(aux);
    }
#undef TERM
    return s;
}

/* The constructed forward/backward case. */
static void fwd_case(saefw_tensorfile *tf, const char *arch) {
    int64_t n;
    float *x = t_tensor(tf, "fwd_x", &n);
    const saefw_tensor_info *wi = saefw_tf_find(tf, "fwd_W_enc");
    REQUIRE(wi && wi->ndim == 2, "fwd_W_enc");
    const int64_t d_in = wi->shape[0], d_sae = wi->shape[1], B = n / d_in;
    saefw_sae sae;
    make_sae(tf, arch, 0, d_in, d_sae, &sae);
    load_params(tf, "fwd_", &sae);
    char err[512];
    unsigned char *dead = NULL;
    if (saefw_tf_find(tf, "fwd_dead_mask")) {
        float *m = t_int_tensor(tf, "fwd_dead_mask", NULL);
        dead = calloc((size_t)d_sae, 1);
        REQUIRE(dead, "out of memory");
        for (int64_t j = 0; j < d_sae; j++) dead[j] = m[j] != 0.0f;
        free(m);
    }
    saefw_arch_work *a;
    REQUIRE(saefw_arch_work_alloc(&a, &sae, B, SAEFW_SAE_AUTO, err, sizeof err) == 0, "%s", err);
    saefw_arch_force_dead(a, dead);
    saefw_sae_stats st;
    saefw_arch_train_step(&sae, a, x, B, &st);
    float *loss = t_tensor(tf, "fwd_loss", NULL), *l2 = t_tensor(tf, "fwd_l2", NULL);
    t_close1("fwd loss", st.loss, loss[0], TOL_FWD);
    t_close1("fwd l2", st.l2, l2[0], TOL_FWD);
    t_close1("fwd sparsity terms", st.l1, sparsity_want(tf, arch, "fwd_", 0, 0), TOL_FWD);
    float *want = t_tensor(tf, "fwd_acts", NULL);
    const float *acts = saefw_arch_acts(&sae, a, err, sizeof err);
    REQUIRE(acts, "%s", err);
    t_close("fwd acts", acts, want, B * d_sae, TOL_FWD, 1e-6);
    free(want);
    want = t_tensor(tf, "fwd_grad_raw_W_dec", NULL);
    t_close("fwd grad W_dec (raw)", sae.g[SAEFW_W_DEC], want, d_sae * d_in, TOL_FWD, 1e-6);
    free(want);
    saefw_sae_project_decoder(&sae);
    check_params(tf, "fwd_grad_", &sae, 1, TOL_FWD);
    want = t_tensor(tf, "fwd_W_dec_normed", NULL);
    t_close("fwd W_dec renormalised", sae.p[SAEFW_W_DEC], want, d_sae * d_in, TOL_FWD, 1e-6);
    free(want);
    saefw_arch_work_free(a);

    /* The evaluation forward (batchtopk: the inference JumpReLU at fwd_theta) on the fixture's weights. */
    load_params(tf, "fwd_", &sae);
    saefw_sae_eval *e;
    REQUIRE(saefw_sae_eval_alloc(&e, &sae, B, err, sizeof err) == 0, "%s", err);
    const int inf = !strcmp(arch, "batchtopk");
    if (inf) {
        float *th = t_tensor(tf, "fwd_theta", NULL);
        sae.theta = th[0];
        free(th);
    }
    const float *xh = saefw_sae_eval_forward(&sae, e, x, B, NULL);
    want = t_tensor(tf, inf ? "fwd_x_hat_inf" : "fwd_x_hat", NULL);
    t_close("eval x_hat", xh, want, B * d_in, TOL_FWD, 1e-6);
    free(want);
    want = t_tensor(tf, inf ? "fwd_acts_inf" : "fwd_acts", NULL);
    acts = saefw_sae_eval_acts(&sae, e, err, sizeof err);
    REQUIRE(acts, "%s", err);
    t_close("eval acts", acts, want, B * d_sae, TOL_FWD, 1e-6);
    free(want);
    saefw_sae_eval_free(e);
    free(loss);
    free(l2);
    free(x);
    free(dead);
    saefw_sae_free(&sae);
}

/* torch 1.13's single-tensor Adam over every tensor (tests/reference/README.md). */
typedef struct {
    float *m, *v;
    int64_t t;
} adam;

static void adam_step(adam *s, saefw_sae *sae, double lr, double b1, double b2, double eps) {
    s->t++;
    const double bc1 = 1 - pow(b1, (double)s->t), bc2 = 1 - pow(b2, (double)s->t);
    for (size_t k = 0; k < sae->n_total; k++) {
        const float g = sae->grads[k];
        s->m[k] = (float)(b1 * s->m[k] + (1 - b1) * g);
        s->v[k] = (float)(b2 * s->v[k] + (1 - b2) * g * g);
        const float denom = (float)(sqrt(s->v[k]) / sqrt(bc2) + eps);
        sae->params[k] -= (float)(lr / bc1) * s->m[k] / denom;
    }
}

/* 20 steps of the tr_ or big_ run through saefw_sae_train_step; the final parameters are left in sae. */
static void run_steps(saefw_tensorfile *tf, const char *arch, int big, saefw_sae *sae, int check) {
    const char *pre = big ? "big_" : "tr_";
    char name[64];
    snprintf(name, sizeof name, "%sinit_W_enc", pre);
    const saefw_tensor_info *wi = saefw_tf_find(tf, name);
    REQUIRE(wi, "%s", name);
    const int64_t d_in = wi->shape[0], d_sae = wi->shape[1];
    make_sae(tf, arch, big, d_in, d_sae, sae);
    snprintf(name, sizeof name, "%sinit_", pre);
    load_params(tf, name, sae);
    int64_t B, steps = 20;
    float *data, *pool = NULL, *index = NULL;
    if (big) {
        saefw_tensorfile *dt = NULL;
        char err[512];
        REQUIRE(saefw_tf_open("fixtures/arch/data.safetensors", &dt, err, sizeof err) == 0, "%s", err);
        int64_t n;
        pool = t_tensor(dt, "big_pool", NULL);
        index = t_int_tensor(dt, "big_index", &n);
        saefw_tf_close(dt);
        B = n / steps;
        data = malloc(sizeof(float) * (size_t)(B * d_in));
        REQUIRE(data, "out of memory");
    } else {
        int64_t n;
        data = t_tensor(tf, "tr_batches", &n);
        B = n / (steps * d_in);
    }
    adam s = {calloc(sae->n_total, sizeof(float)), calloc(sae->n_total, sizeof(float)), 0};
    REQUIRE(s.m && s.v, "out of memory");
    saefw_sae_step *w;
    char err[512];
    REQUIRE(saefw_sae_step_alloc(&w, sae, B, err, sizeof err) == 0, "%s", err);
    snprintf(name, sizeof name, "%sloss", pre);
    float *loss = t_tensor(tf, name, NULL);
    float *theta = NULL; /* float64 in the file: float keeps 6e-8, far inside the tolerance */
    snprintf(name, sizeof name, "%stheta", pre);
    if (saefw_tf_find(tf, name)) theta = t_tensor(tf, name, NULL);
    double worst_loss = 0, worst_sp = 0, worst_theta = 0;
    int paths = 0;
    for (int64_t t = 0; t < steps; t++) {
        const float *x = data + (big ? 0 : t * B * d_in);
        if (big)
            for (int64_t b = 0; b < B; b++)
                memcpy(data + b * d_in, pool + (int64_t)index[t * B + b] * d_in, sizeof(float) * (size_t)d_in);
        saefw_sae_stats st;
        saefw_sae_train_step(sae, w, x, B, &st);
        paths |= saefw_sae_step_path(w) == SAEFW_SAE_SPARSE ? 1 : 2;
        if (check && big && t == 0) {
            snprintf(name, sizeof name, "big_x_hat0");
            float *acts0 = malloc(sizeof(float) * (size_t)(B * d_sae));
            REQUIRE(acts0, "out of memory");
            memset(acts0, 0, sizeof(float) * (size_t)(B * d_sae));
            int64_t n;
            float *idx = t_int_tensor(tf, "big_acts0_index", &n), *val = t_tensor(tf, "big_acts0_value", NULL);
            for (int64_t q = 0; q < n; q++) acts0[(int64_t)idx[q]] = val[q];
            const float *acts = saefw_sae_step_acts(sae, w, err, sizeof err);
            REQUIRE(acts, "%s", err);
            t_close("big step 0 acts", acts, acts0, B * d_sae, TOL_BIG0, 1e-6);
            free(acts0);
            free(idx);
            free(val);
            saefw_sae_project_decoder(sae);
            check_params(tf, "big_grad0_", sae, 1, TOL_BIG0);
        } else saefw_sae_project_decoder(sae);
        worst_loss = t_max(worst_loss, fabs(st.loss - loss[t]) / fabs(loss[t]));
        worst_sp = t_max(worst_sp, fabs(st.l1 - sparsity_want(tf, arch, pre, t, big)) / fabs(loss[t]));
        if (theta) worst_theta = t_max(worst_theta, fabs(sae->theta - theta[t]) / (fabs(theta[t]) + 1e-30));
        adam_step(&s, sae, meta_or(tf, NULL, "lr", 0), meta_or(tf, NULL, "beta1", 0), meta_or(tf, NULL, "beta2", 0),
                  meta_or(tf, NULL, "adam_eps", 0));
    }
    if (check) {
        const double tol = big ? TOL_BIG : TOL_TR;
        printf("  %s 20 steps (path%s%s): loss rel %.3e, sparsity terms rel %.3e%s\n", pre, paths & 1 ? " sparse" : "",
               paths & 2 ? " dense" : "", worst_loss, worst_sp, theta ? "" : "");
        CHECK(worst_loss <= (big ? TOL_BIG_LOSS : TOL_TR) && worst_sp <= (big ? TOL_BIG_LOSS : TOL_TR),
              "%s losses differ", pre);
        if (theta) {
            printf("  %stheta per step rel %.3e\n", pre, worst_theta);
            CHECK(worst_theta <= TOL_TR, "%s theta differs", pre);
        }
        check_params(tf, pre, sae, 0, tol);
        snprintf(name, sizeof name, "%ssteps_since_fired", pre);
        if (saefw_tf_find(tf, name)) {
            float *since = t_int_tensor(tf, name, NULL);
            int64_t bad = 0;
            for (int64_t j = 0; j < d_sae; j++) bad += (float)sae->since_fired[j] != since[j];
            printf("  %s: %lld of %lld differ\n", name, (long long)bad, (long long)d_sae);
            CHECK(bad == 0, "%s differs", name);
            free(since);
        }
    }
    saefw_sae_step_free(w);
    free(s.m);
    free(s.v);
    free(loss);
    free(theta);
    free(data);
    free(pool);
    free(index);
}

static int same_bits(const saefw_sae *a, const saefw_sae *b) {
    return a->n_total == b->n_total && memcmp(a->params, b->params, sizeof(float) * a->n_total) == 0 &&
           a->theta == b->theta;
}

static void run_arch(const char *arch) {
    char path[128], err[512];
    snprintf(path, sizeof path, "fixtures/arch/%s.safetensors", arch);
    saefw_tensorfile *tf = NULL;
    REQUIRE(saefw_tf_open(path, &tf, err, sizeof err) == 0, "%s", err);
    static const saefw_sae_path paths[2] = {SAEFW_SAE_DENSE, SAEFW_SAE_SPARSE};
    static const char *const pnames[2] = {"dense", "sparse"};
    for (int p = 0; p < 2; p++) {
        printf("%s, %s path:\n", arch, pnames[p]);
        saefw_sae_set_path(paths[p]);
        saefw_set_threads(3);
        fwd_case(tf, arch);
        saefw_sae small, big, big1;
        run_steps(tf, arch, 0, &small, 1);
        run_steps(tf, arch, 1, &big, 1);
        saefw_set_threads(1);
        run_steps(tf, arch, 1, &big1, 0);
        int same = same_bits(&big, &big1);
        printf("  big run, 1 vs 3 threads: %s\n", same ? "bit-identical" : "DIFFERENT");
        CHECK(same, "%s %s: 1 and 3 threads differ", arch, pnames[p]);
        saefw_sae_free(&small);
        saefw_sae_free(&big);
        saefw_sae_free(&big1);
    }
    saefw_sae_set_path(SAEFW_SAE_AUTO);
    saefw_set_threads(0);
    saefw_tf_close(tf);
}

int main(int argc, char **argv) {
    static const char *const all[] = {"topk", "batchtopk", "jumprelu", "gated"};
    for (int i = 0; i < 4; i++)
        if (argc < 2 || !strcmp(argv[1], all[i])) run_arch(all[i]);
    return t_finish("test_sae_arch");
}
