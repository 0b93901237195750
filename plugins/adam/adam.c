/* adam: the optimizer of the seed recipe, computing exactly what torch.optim.Adam computes
 * (single-tensor path: float32 moments, bias correction in double, eps added after the sqrt). Its
 * learning rate is the engine's (host->learning_rate), which starts at the "lr" option, so a
 * schedule plugin can move it. Elementwise, so it runs on ZeRO-1 slices (zero_slices). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* madvise */
#endif
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <saefw/plugin.h>

static const saefw_option OPTIONS[] = {
    {"lr", SAEFW_OPT_NUMBER, 1e-4, NULL, "learning rate"},
    {"beta1", SAEFW_OPT_NUMBER, 0.9, NULL, "decay of the first moment"},
    {"beta2", SAEFW_OPT_NUMBER, 0.999, NULL, "decay of the second moment"},
    {"eps", SAEFW_OPT_NUMBER, 1e-8, NULL, "added to the denominator"},
    {"weight_decay", SAEFW_OPT_NUMBER, 0.0, NULL, "L2 penalty added to the gradient (torch's Adam, not AdamW)"},
    {NULL, 0, 0, NULL, NULL},
};

typedef struct {
    const saefw_host *host;
    double beta1, beta2, eps, wd;
    int n;
    int64_t t;      /* steps taken */
    float **m, **v; /* per tensor, same shape as the tensor */
    int64_t *numel;
} adam;

/* A zeroed moment. Large ones go on huge pages where the system offers them: every step streams all
 * of them, and with 4 KiB pages that stream ran about 8% slower at the seed's shape. */
static float *alloc_moment(int64_t n) {
    const size_t bytes = (size_t)n * sizeof(float);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const size_t huge = (size_t)2 << 20;
    if (bytes >= huge) {
        void *p = NULL;
        if (posix_memalign(&p, huge, bytes) != 0) return NULL;
        madvise(p, bytes, MADV_HUGEPAGE); /* advice only: failure changes nothing */
        memset(p, 0, bytes);
        return p;
    }
#endif
    return calloc(n > 0 ? (size_t)n : 1, sizeof(float)); /* a ZeRO-1 slice may be empty */
}

static void adam_destroy(void *self) {
    adam *a = self;
    if (!a) return;
    for (int i = 0; i < a->n; i++) {
        if (a->m) free(a->m[i]);
        if (a->v) free(a->v[i]);
    }
    free(a->m);
    free(a->v);
    free(a->numel);
    free(a);
}

static int adam_create(const saefw_host *host, saefw_run *run, const saefw_opts *opts, void **self, char *err,
                       size_t errlen) {
    adam *a = calloc(1, sizeof *a);
    if (!a) return saefw_fail(err, errlen, "out of memory");
    a->host = host;
    const double lr = host->opt_number(opts, "lr");
    a->beta1 = host->opt_number(opts, "beta1");
    a->beta2 = host->opt_number(opts, "beta2");
    a->eps = host->opt_number(opts, "eps");
    a->wd = host->opt_number(opts, "weight_decay");
    if (!(lr >= 0)) return adam_destroy(a), saefw_fail(err, errlen, "option 'lr' must be >= 0");
    if (!(a->beta1 >= 0 && a->beta1 < 1))
        return adam_destroy(a), saefw_fail(err, errlen, "option 'beta1' must be in [0, 1)");
    if (!(a->beta2 >= 0 && a->beta2 < 1))
        return adam_destroy(a), saefw_fail(err, errlen, "option 'beta2' must be in [0, 1)");
    if (!(a->eps >= 0)) return adam_destroy(a), saefw_fail(err, errlen, "option 'eps' must be >= 0");
    if (!(a->wd >= 0)) return adam_destroy(a), saefw_fail(err, errlen, "option 'weight_decay' must be >= 0");
    a->n = host->param_count(run);
    a->m = calloc((size_t)a->n, sizeof(float *));
    a->v = calloc((size_t)a->n, sizeof(float *));
    a->numel = calloc((size_t)a->n, sizeof(int64_t));
    if (!a->m || !a->v || !a->numel) return adam_destroy(a), saefw_fail(err, errlen, "out of memory");
    for (int i = 0; i < a->n; i++) {
        saefw_param p = SAEFW_PARAM_INIT;
        if (host->param_get(run, i, &p) != 0) return adam_destroy(a), saefw_fail(err, errlen, "cannot read parameters");
        a->numel[i] = p.numel;
        a->m[i] = alloc_moment(p.numel);
        a->v[i] = alloc_moment(p.numel);
        if (!a->m[i] || !a->v[i]) return adam_destroy(a), saefw_fail(err, errlen, "out of memory for Adam state");
    }
    *self = a;
    return 0;
}

/* One tensor's update, its constants in float32 as torch uses them. */
typedef struct {
    float *w, *m, *v;
    const float *g;
    float b1, b2, one_m_b1, one_m_b2, bc2_sqrt, eps, neg_step, wd;
} adam_job;

/* Elements [k0, k1) of one tensor. Each element goes through the same float32 operations in the same
 * order whether four at a time or alone (SSE is IEEE per lane, sqrt and division included), so the
 * result is torch's and does not depend on how the range is split between threads. */
static void adam_range(void *ctx, int64_t k0, int64_t k1) {
    const adam_job *j = ctx;
    float *w = j->w, *m = j->m, *v = j->v;
    const float *g = j->g;
    int64_t k = k0;
#if defined(__SSE2__)
    /* Four at a time: sqrtf would not vectorise, as it may set errno. */
    const __m128 b1 = _mm_set1_ps(j->b1), b2 = _mm_set1_ps(j->b2), omb1 = _mm_set1_ps(j->one_m_b1),
                 omb2 = _mm_set1_ps(j->one_m_b2), bc2 = _mm_set1_ps(j->bc2_sqrt), eps = _mm_set1_ps(j->eps),
                 step = _mm_set1_ps(j->neg_step), wd = _mm_set1_ps(j->wd);
    for (; k + 4 <= k1; k += 4) {
        __m128 wk = _mm_loadu_ps(w + k), gk = _mm_loadu_ps(g + k);
        if (j->wd != 0.0f) gk = _mm_add_ps(gk, _mm_mul_ps(wd, wk));
        __m128 mk = _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(m + k), b1), _mm_mul_ps(omb1, gk));
        __m128 vk = _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(v + k), b2), _mm_mul_ps(_mm_mul_ps(omb2, gk), gk));
        __m128 denom = _mm_add_ps(_mm_div_ps(_mm_sqrt_ps(vk), bc2), eps);
        _mm_storeu_ps(w + k, _mm_add_ps(wk, _mm_div_ps(_mm_mul_ps(step, mk), denom)));
        _mm_storeu_ps(m + k, mk);
        _mm_storeu_ps(v + k, vk);
    }
#endif
    for (; k < k1; k++) {
        float gk = j->wd != 0.0f ? g[k] + j->wd * w[k] : g[k];
        /* Each line is one torch op, rounded to float32 as torch rounds it. */
        float mk = m[k] * j->b1;
        mk = mk + j->one_m_b1 * gk;
        float vk = v[k] * j->b2;
        vk = vk + j->one_m_b2 * gk * gk;
        float denom = sqrtf(vk) / j->bc2_sqrt + j->eps;
        w[k] = w[k] + j->neg_step * mk / denom;
        m[k] = mk;
        v[k] = vk;
    }
}

static int adam_step(void *self, saefw_run *run, char *err, size_t errlen) {
    adam *a = self;
    const double lr = a->host->learning_rate(run);
    a->t++;
    const double bc1 = 1.0 - pow(a->beta1, (double)a->t);
    const double bc2 = 1.0 - pow(a->beta2, (double)a->t);
    adam_job job = {
        .b1 = (float)a->beta1,
        .b2 = (float)a->beta2,
        .one_m_b1 = (float)(1.0 - a->beta1),
        .one_m_b2 = (float)(1.0 - a->beta2),
        .bc2_sqrt = (float)sqrt(bc2),
        .eps = (float)a->eps,
        .neg_step = (float)(-(lr / bc1)),
        .wd = (float)a->wd,
    };
    /* The engine's threads when the host offers them (the update is memory-bound). */
    const int threads = SAEFW_HOST_HAS(a->host, parallel_for);
    for (int i = 0; i < a->n; i++) {
        saefw_param p = SAEFW_PARAM_INIT;
        if (a->host->param_get(run, i, &p) != 0) return saefw_fail(err, errlen, "cannot read parameters");
        job.w = p.data;
        job.g = p.grad;
        job.m = a->m[i];
        job.v = a->v[i];
        if (threads) a->host->parallel_for(p.numel, adam_range, &job);
        else adam_range(&job, 0, p.numel);
    }
    return 0;
}

static int adam_reset(void *self, saefw_run *run, int param, int axis, const int64_t *idx, int64_t n, char *err,
                      size_t errlen) {
    adam *a = self;
    saefw_param p = SAEFW_PARAM_INIT;
    if (param < 0 || param >= a->n || a->host->param_get(run, param, &p) != 0 || p.numel != a->numel[param])
        return saefw_fail(err, errlen, "reset_state: no such tensor");
    if (saefw_zero_slices(a->m[param], &p, axis, idx, n, err, errlen) != 0) return -1;
    return saefw_zero_slices(a->v[param], &p, axis, idx, n, err, errlen);
}

/* Resume: the step count and both moments of every tensor. */
static int adam_save(void *self, saefw_run *run, saefw_state_writer *w, char *err, size_t errlen) {
    adam *a = self;
    if (a->host->state_put_number(w, "t", (double)a->t, err, errlen) != 0) return -1;
    /* Through the tensor-slice calls where the engine has them: under zero = 1 they gather the slices. */
    const int sliced = SAEFW_HOST_HAS(a->host, state_put_f32_param);
    for (int i = 0; i < a->n; i++) {
        char name[32];
        snprintf(name, sizeof name, "m%d", i);
        if ((sliced ? a->host->state_put_f32_param(run, w, name, a->m[i], i, err, errlen)
                    : a->host->state_put_f32(w, name, a->m[i], a->numel[i], err, errlen)) != 0)
            return -1;
        snprintf(name, sizeof name, "v%d", i);
        if ((sliced ? a->host->state_put_f32_param(run, w, name, a->v[i], i, err, errlen)
                    : a->host->state_put_f32(w, name, a->v[i], a->numel[i], err, errlen)) != 0)
            return -1;
    }
    return 0;
}

static int adam_load(void *self, saefw_run *run, saefw_state_reader *r, char *err, size_t errlen) {
    adam *a = self;
    double t = 0;
    if (a->host->state_get_number(r, "t", &t, err, errlen) != 0) return -1;
    a->t = (int64_t)t;
    const int sliced = SAEFW_HOST_HAS(a->host, state_get_f32_param);
    for (int i = 0; i < a->n; i++) {
        char name[32];
        snprintf(name, sizeof name, "m%d", i);
        if ((sliced ? a->host->state_get_f32_param(run, r, name, a->m[i], i, err, errlen)
                    : a->host->state_get_f32(r, name, a->m[i], a->numel[i], err, errlen)) != 0)
            return -1;
        snprintf(name, sizeof name, "v%d", i);
        if ((sliced ? a->host->state_get_f32_param(run, r, name, a->v[i], i, err, errlen)
                    : a->host->state_get_f32(r, name, a->v[i], a->numel[i], err, errlen)) != 0)
            return -1;
    }
    return 0;
}

static const saefw_plugin PLUGIN = {
    .abi_version = SAEFW_ABI_VERSION,
    .struct_size = sizeof(saefw_plugin),
    .name = "adam",
    .description = "Adam as torch.optim.Adam computes it (bias correction, eps outside the sqrt)",
    .kind = SAEFW_KIND_OPTIMIZER,
    .options = OPTIONS,
    .option_size = sizeof(saefw_option),
    .create = adam_create,
    .destroy = adam_destroy,
    .step = adam_step,
    .reset_state = adam_reset,
    .save_state = adam_save,
    .load_state = adam_load,
    .zero_slices = 1,
};

const saefw_plugin *saefw_plugin_init(const saefw_host *host, char *err, size_t errlen) { return &PLUGIN; }
