/* The feature-analysis engine: one streaming pass of the model and the SAE over a token file, with
 * per-feature top-k heaps, banded reservoirs and histograms; logit effects and neuron-basis sparsity
 * from the weights. Each feature's state is updated by one thread, rows in order, so the results do
 * not depend on how the features are split among threads. */
#include "features_analysis.h"

#include "tokenizer.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parallel.h"
#include "util.h"

/* ---- token display ---- */

static int bytes_token(void *ud, int32_t id, char *buf, size_t cap) {
    int32_t bos = (int32_t)(intptr_t)ud;
    if (id >= 0 && id < 256 && cap >= 1) {
        buf[0] = (char)id;
        return 1;
    }
    if (id == bos) {
        static const char s[] = "<|BOS|>";
        size_t n = sizeof s - 1 < cap ? sizeof s - 1 : cap;
        memcpy(buf, s, n);
        return (int)n;
    }
    return -1;
}

void saefw_token_decoder_bytes(saefw_token_decoder *d, int32_t bos_id) {
    d->name = "bytes";
    d->token_bytes = bytes_token;
    d->ud = (void *)(intptr_t)bos_id;
}

static int tokenizer_token(void *ud, int32_t id, char *buf, size_t cap) {
    size_t len = 0;
    const char *b = saefw_tokenizer_token_bytes(ud, id, &len);
    if (!b) return -1;
    if (len > cap) len = cap;
    memcpy(buf, b, len);
    return (int)len;
}

void saefw_token_decoder_tokenizer(saefw_token_decoder *d, const struct saefw_tokenizer *t, const char *name) {
    d->name = name;
    d->token_bytes = tokenizer_token;
    d->ud = (void *)t;
}

int saefw_token_decoder_for_model(saefw_token_decoder *d, const char *model_name, int32_t bytes,
                                  struct saefw_tokenizer **tok, char *why, size_t whyn) {
    char path[4096];
    *tok = NULL;
    if (saefw_tokenizer_resolve(model_name, path, sizeof path, why, whyn) == 0 &&
        saefw_tokenizer_load(path, tok, why, whyn) == 0) {
        saefw_token_decoder_tokenizer(d, *tok, "tokenizer.json");
        return 0;
    }
    if (bytes >= 0) {
        saefw_token_decoder_bytes(d, bytes);
        return 0;
    }
    memset(d, 0, sizeof *d);
    return 1;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 when s[0] does not start one. NUL is
 * treated as invalid: C strings cannot carry it. */
static int utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c >= 0x01 && c < 0x80) return 1;
    int len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) len = 3, lo = 0xA0;
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) len = 3;
    else if (c == 0xED) len = 3, hi = 0x9F;
    else if (c == 0xF0) len = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) len = 4, hi = 0x8F;
    else return 0;
    if ((size_t)len > n) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return len;
}

size_t saefw_token_text(const saefw_token_decoder *d, int32_t id, char *out, size_t cap) {
    if (cap == 0) return 0;
    unsigned char raw[256];
    int n = d && d->token_bytes ? d->token_bytes(d->ud, id, (char *)raw, sizeof raw) : -1;
    if (n < 0) {
        int k = snprintf(out, cap, "#%d", (int)id);
        return k < 0 ? 0 : (size_t)k < cap ? (size_t)k : cap - 1;
    }
    size_t w = 0;
    for (int i = 0; i < n;) {
        int len = utf8_len(raw + i, (size_t)(n - i));
        if (len > 0) {
            if (w + (size_t)len >= cap) break;
            memcpy(out + w, raw + i, (size_t)len);
            w += (size_t)len;
            i += len;
        } else {
            if (w + 4 >= cap) break;
            snprintf(out + w, 5, "\\x%02X", raw[i]);
            w += 4;
            i++;
        }
    }
    out[w] = 0;
    return w;
}

/* ---- options ---- */

void saefw_features_default_opts(saefw_features_opts *o) {
    memset(o, 0, sizeof *o);
    o->top_k = 20;
    o->ctx_before = 12;
    o->ctx_after = 4;
    o->n_bands = 4;
    o->band_k = 5;
    o->n_logits = 10;
    o->batch_rows = 16;
    o->seed = SAEFW_DEFAULT_SEED;
    o->rare_threshold = SAEFW_RARE_THRESHOLD;
}

/* ---- the per-feature state ---- */

#define NB SAEFW_FEATURES_HIST_BINS

typedef struct {
    int64_t d_sae, T, C; /* features, tokens per row, context slots per example */
    int k, nb, bk, S;    /* top_k, bands, examples per band, slots per feature */
    int before, after;
    /* per feature */
    int64_t *count;     /* [d_sae] */
    double *sum;        /* [d_sae] */
    float *max;         /* [d_sae] */
    double *hist_w;     /* [d_sae]: 0 until the first activation */
    int64_t *hist;      /* [d_sae, NB] */
    uint64_t *rng;      /* [d_sae]: splitmix64 state */
    int32_t *heap_n;    /* [d_sae] */
    int32_t *heap;      /* [d_sae, k]: slot of each heap entry; the root is the weakest */
    int32_t *band_e;    /* [d_sae, nb]: exponent held by band slot group (INT_MIN: none) */
    int64_t *band_seen; /* [d_sae, nb] */
    int32_t *band_n;    /* [d_sae, nb] */
    /* per slot: [d_sae, S] (top slots first, then bands' groups of bk) */
    float *slot_val;
    int64_t *slot_pos;
    int32_t *slot_n, *slot_at;
    int32_t *slot_tok; /* [d_sae, S, C] */
    float *slot_act;   /* [d_sae, S, C] */
} fstate;

/* What one batch offers the update: the SAE's active entries (sparse path) or its dense activations. */
typedef struct {
    fstate *s;
    saefw_sae_entries ent; /* the active entries by feature, when acts is NULL */
    const float *acts;     /* [rows, d_sae] on the dense path, else NULL */
    const int32_t *toks;   /* [rows] */
    int64_t rows, pos0;    /* rows of the batch, stream index of its first token */
} batch_ctx;

/* Feature f's activation on row b of the batch. */
static float act_at(const batch_ctx *c, int64_t f, int64_t b) {
    if (c->acts) return c->acts[b * c->s->d_sae + f];
    int64_t lo = c->ent.start[f], hi = c->ent.start[f + 1]; /* rows ascend within a feature */
    const int64_t end = hi;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (c->ent.row[mid] < b) lo = mid + 1;
        else hi = mid;
    }
    return lo < end && c->ent.row[lo] == b ? c->ent.act[lo] : 0.0f;
}

static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, n) (n small next to 2^64: the bias is below 2^-40). */
static uint64_t below(uint64_t *x, uint64_t n) { return splitmix(x) % n; }

/* a is a weaker example than b: smaller, or as large and later. */
static int weaker(const fstate *s, int64_t f, int32_t a, int32_t b) {
    float va = s->slot_val[f * s->S + a], vb = s->slot_val[f * s->S + b];
    if (va != vb) return va < vb;
    return s->slot_pos[f * s->S + a] > s->slot_pos[f * s->S + b];
}

static void capture(const batch_ctx *c, int64_t f, int32_t slot, float v, int64_t b) {
    const fstate *s = c->s;
    int64_t i = f * s->S + slot;
    int64_t r = b / s->T, t = b % s->T;
    int64_t t0 = t - s->before < 0 ? 0 : t - s->before;
    int64_t t1 = t + s->after > s->T - 1 ? s->T - 1 : t + s->after;
    s->slot_val[i] = v;
    s->slot_pos[i] = c->pos0 + b;
    s->slot_n[i] = (int32_t)(t1 - t0 + 1);
    s->slot_at[i] = (int32_t)(t - t0);
    for (int64_t u = t0; u <= t1; u++) {
        s->slot_tok[i * s->C + (u - t0)] = c->toks[r * s->T + u];
        s->slot_act[i * s->C + (u - t0)] = act_at(c, f, r * s->T + u);
    }
}

static void heap_down(fstate *s, int64_t f, int32_t *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && weaker(s, f, h[l], h[m])) m = l;
        if (r < n && weaker(s, f, h[r], h[m])) m = r;
        if (m == i) return;
        int32_t t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static void heap_up(fstate *s, int64_t f, int32_t *h, int i) {
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!weaker(s, f, h[i], h[p])) return;
        int32_t t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

static void hist_add(fstate *s, int64_t f, float v) {
    int64_t *h = s->hist + f * NB;
    double w = s->hist_w[f];
    if (w == 0) w = s->hist_w[f] = ldexp(1.0, ilogbf(v) + 1) / NB; /* v lands in the upper half */
    int64_t idx = (int64_t)(v / w);
    while (idx >= NB) {
        for (int i = 0; i < NB / 2; i++) h[i] = h[2 * i] + h[2 * i + 1];
        for (int i = NB / 2; i < NB; i++) h[i] = 0;
        w = s->hist_w[f] = w * 2;
        idx = (int64_t)(v / w);
    }
    h[idx]++;
}

static void band_add(const batch_ctx *c, int64_t f, float v, int64_t b) {
    fstate *s = c->s;
    if (s->nb == 0) return;
    int top = ilogbf(s->max[f]), e = ilogbf(v);
    if (e <= top - s->nb) return;
    int g = ((e % s->nb) + s->nb) % s->nb;
    int64_t gi = f * s->nb + g;
    if (s->band_e[gi] != e) {
        s->band_e[gi] = e;
        s->band_seen[gi] = 0;
        s->band_n[gi] = 0;
    }
    int64_t seen = ++s->band_seen[gi];
    int32_t base = s->k + g * s->bk;
    if (s->band_n[gi] < s->bk) {
        capture(c, f, base + s->band_n[gi]++, v, b);
    } else {
        uint64_t r = below(&s->rng[f], (uint64_t)seen);
        if (r < (uint64_t)s->bk) capture(c, f, base + (int32_t)r, v, b);
    }
}

/* Feature f's state after activation v > 0 on row b. */
static void update_one(const batch_ctx *c, int64_t f, float v, int64_t b) {
    fstate *s = c->s;
    s->count[f]++;
    s->sum[f] += v;
    if (v > s->max[f]) s->max[f] = v;
    hist_add(s, f, v);
    int32_t *h = s->heap + f * s->k;
    if (s->heap_n[f] < s->k) {
        int n = s->heap_n[f]++;
        capture(c, f, n, v, b);
        h[n] = n;
        heap_up(s, f, h, n);
    } else if (v > s->slot_val[f * s->S + h[0]]) {
        capture(c, f, h[0], v, b);
        heap_down(s, f, h, s->k, 0);
    }
    band_add(c, f, v, b);
}

/* Dense path: features [f0, f1), rows in order. */
static void update_range(void *vctx, int64_t f0, int64_t f1) {
    const batch_ctx *c = vctx;
    for (int64_t b = 0; b < c->rows; b++) {
        const float *row = c->acts + b * c->s->d_sae;
        for (int64_t f = f0; f < f1; f++)
            if (row[f] > 0) update_one(c, f, row[f], b);
    }
}

/* Sparse path: the active entries of features [f0, f1), rows in order. */
static void update_entries(void *vctx, int64_t f0, int64_t f1) {
    const batch_ctx *c = vctx;
    for (int64_t f = f0; f < f1; f++)
        for (int64_t e = c->ent.start[f]; e < c->ent.start[f + 1]; e++)
            if (c->ent.act[e] > 0) update_one(c, f, c->ent.act[e], c->ent.row[e]);
}

static void fstate_free(fstate *s) {
    if (!s) return;
    free(s->count);
    free(s->sum);
    free(s->max);
    free(s->hist_w);
    free(s->hist);
    free(s->rng);
    free(s->heap_n);
    free(s->heap);
    free(s->band_e);
    free(s->band_seen);
    free(s->band_n);
    free(s->slot_val);
    free(s->slot_pos);
    free(s->slot_n);
    free(s->slot_at);
    free(s->slot_tok);
    free(s->slot_act);
    free(s);
}

static fstate *fstate_alloc(int64_t d_sae, int64_t T, const saefw_features_opts *o, char *err, size_t errlen) {
    fstate *s = saefw_calloc(1, sizeof *s, err, errlen);
    if (!s) return NULL;
    s->d_sae = d_sae;
    s->T = T;
    s->k = o->top_k;
    s->nb = o->n_bands;
    s->bk = o->band_k;
    s->S = s->k + s->nb * s->bk;
    s->before = o->ctx_before;
    s->after = o->ctx_after;
    s->C = o->ctx_before + 1 + o->ctx_after;
    size_t D = (size_t)d_sae, S = (size_t)s->S, C = (size_t)s->C;
    int ok = (s->count = saefw_calloc(D, sizeof *s->count, err, errlen)) &&
             (s->sum = saefw_calloc(D, sizeof *s->sum, err, errlen)) &&
             (s->max = saefw_calloc(D, sizeof *s->max, err, errlen)) &&
             (s->hist_w = saefw_calloc(D, sizeof *s->hist_w, err, errlen)) &&
             (s->hist = saefw_calloc(D * NB, sizeof *s->hist, err, errlen)) &&
             (s->rng = saefw_calloc(D, sizeof *s->rng, err, errlen)) &&
             (s->heap_n = saefw_calloc(D, sizeof *s->heap_n, err, errlen)) &&
             (s->heap = saefw_calloc(D * (size_t)(s->k > 0 ? s->k : 1), sizeof *s->heap, err, errlen)) &&
             (s->band_e = saefw_calloc(D * (size_t)(s->nb > 0 ? s->nb : 1), sizeof *s->band_e, err, errlen)) &&
             (s->band_seen = saefw_calloc(D * (size_t)(s->nb > 0 ? s->nb : 1), sizeof *s->band_seen, err, errlen)) &&
             (s->band_n = saefw_calloc(D * (size_t)(s->nb > 0 ? s->nb : 1), sizeof *s->band_n, err, errlen)) &&
             (s->slot_val = saefw_calloc(D * S, sizeof *s->slot_val, err, errlen)) &&
             (s->slot_pos = saefw_calloc(D * S, sizeof *s->slot_pos, err, errlen)) &&
             (s->slot_n = saefw_calloc(D * S, sizeof *s->slot_n, err, errlen)) &&
             (s->slot_at = saefw_calloc(D * S, sizeof *s->slot_at, err, errlen)) &&
             (s->slot_tok = saefw_calloc(D * S * C, sizeof *s->slot_tok, err, errlen)) &&
             (s->slot_act = saefw_calloc(D * S * C, sizeof *s->slot_act, err, errlen));
    if (!ok) {
        saefw_err_prefix(err, errlen, "features: %lld features x %d examples of %lld tokens", (long long)d_sae, s->S,
                         (long long)s->C);
        fstate_free(s);
        return NULL;
    }
    for (size_t i = 0; i < D * (size_t)s->nb; i++) s->band_e[i] = INT_MIN;
    for (size_t f = 0; f < D; f++) s->rng[f] = o->seed ^ (0x5EEDF00DULL + 0x100000001B3ULL * (uint64_t)f);
    return s;
}

/* ---- logit effects and decoder sparsity ---- */

int saefw_feature_logit_effects(const saefw_model *model, saefw_hook hook, const saefw_sae *sae, int64_t f0, int64_t n,
                                float *out, char *err, size_t errlen) {
    const saefw_model_cfg *c = saefw_model_config(model);
    const int64_t dm = c->d_model, V = c->d_vocab, d_in = sae->d_in;
    const float *lnf_w = saefw_model_weight(model, "ln_final.w", 0), *W_U = saefw_model_weight(model, "unembed.W_U", 0);
    float *u = saefw_malloc(sizeof(float) * (size_t)(n * dm), err, errlen);
    if (!u) return -1;
    const float *W_dec = sae->p[SAEFW_W_DEC] + f0 * d_in;
    if (hook.kind == SAEFW_HOOK_MLP_POST) {
        const float *W_out = saefw_model_weight(model, "mlp.W_out", hook.layer); /* [d_mlp, d_model] */
        saefw_sgemm_blocks(CblasNoTrans, CblasNoTrans, n, dm, d_in, W_dec, d_in, W_out, dm, 0.0f, u, dm);
    } else {
        memcpy(u, W_dec, sizeof(float) * (size_t)(n * dm));
    }
    /* The final LayerNorm subtracts the mean over d_model, then scales by ln_final.w. */
    for (int64_t i = 0; i < n; i++) {
        float *r = u + i * dm;
        double m = 0;
        for (int64_t j = 0; j < dm; j++) m += r[j];
        m /= (double)dm;
        for (int64_t j = 0; j < dm; j++) r[j] = (float)(((double)r[j] - m) * lnf_w[j]);
    }
    saefw_sgemm_blocks(CblasNoTrans, CblasNoTrans, n, V, dm, u, dm, W_U, V, 0.0f, out, V);
    for (int64_t i = 0; i < n; i++) {
        float *r = out + i * V;
        double m = 0;
        for (int64_t v = 0; v < V; v++) m += r[v];
        m /= (double)V;
        for (int64_t v = 0; v < V; v++) r[v] = (float)((double)r[v] - m);
    }
    free(u);
    return 0;
}

int saefw_neuron_sparsity_class(const float *row, int64_t d) {
    double top[10], total = 0;
    int nt = 0;
    for (int64_t i = 0; i < d; i++) {
        double s = (double)row[i] * row[i];
        total += s;
        if (nt == 10 && !(s > top[9])) continue;
        int j = nt < 10 ? nt++ : 9;
        for (; j > 0 && s > top[j - 1]; j--) top[j] = top[j - 1];
        top[j] = s;
    }
    if (!(total > 0)) return 0;
    double top1 = top[0] / total, top10 = 0;
    for (int i = 0; i < nt; i++) top10 += top[i];
    top10 /= total;
    if (top1 > 0.35 && top10 - top1 < 0.1) return 1;
    if (top10 > 0.35) return 10;
    return 0;
}

/* Keep the n best (largest when sign > 0, smallest when sign < 0) of row [V]; ties: lower id first. */
static void select_extremes(const float *row, int64_t V, int n, int sign, int32_t *ids, float *vals) {
    int have = 0;
    for (int64_t v = 0; v < V; v++) {
        float x = row[v] * (float)sign;
        if (have == n && !(x > vals[n - 1] * (float)sign)) continue;
        int i = have < n ? have++ : n - 1;
        while (i > 0 && x > vals[i - 1] * (float)sign) {
            vals[i] = vals[i - 1];
            ids[i] = ids[i - 1];
            i--;
        }
        vals[i] = row[v];
        ids[i] = (int32_t)v;
    }
}

/* ---- the result ---- */

typedef struct {
    fstate *s;
    saefw_feature_example *ex; /* [d_sae, S] */
    saefw_feature_band *bands; /* [d_sae, nb] */
    int32_t *logit_ids;        /* [d_sae, 2 n_logits] */
    float *logit_vals;
} fimpl;

void saefw_features_free(saefw_features *f) {
    if (!f) return;
    fimpl *im = f->impl;
    if (im) {
        fstate_free(im->s);
        free(im->ex);
        free(im->bands);
        free(im->logit_ids);
        free(im->logit_vals);
        free(im);
    }
    free(f->f);
    free(f);
}

static int cmp_example(const void *a, const void *b) {
    const saefw_feature_example *x = a, *y = b;
    if (x->max != y->max) return x->max > y->max ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

static void fill_example(const fstate *s, int64_t f, int32_t slot, saefw_feature_example *e) {
    int64_t i = f * s->S + slot;
    e->max = s->slot_val[i];
    e->pos = s->slot_pos[i];
    e->n = s->slot_n[i];
    e->at = s->slot_at[i];
    e->tokens = s->slot_tok + i * s->C;
    e->acts = s->slot_act + i * s->C;
}

/* Turn the pass's state into the per-feature records. */
static void finish(saefw_features *out, fimpl *im) {
    const fstate *s = im->s;
    for (int64_t f = 0; f < s->d_sae; f++) {
        saefw_feature_info *fi = &out->f[f];
        fi->n_nonzero = s->count[f];
        fi->density = (double)s->count[f] / (double)out->tokens_analyzed;
        fi->mean_act = s->sum[f] / (double)out->tokens_analyzed;
        fi->max_act = s->max[f];
        fi->hist_width = s->hist_w[f];
        fi->hist = s->hist + f * NB;
        fi->n_hist = 0;
        if (s->count[f] > 0) {
            int64_t last = (int64_t)(s->max[f] / s->hist_w[f]);
            fi->n_hist = (int)(last < NB ? last + 1 : NB);
        }
        saefw_feature_example *ex = im->ex + f * s->S;
        fi->top = ex;
        fi->n_top = s->heap_n[f];
        for (int j = 0; j < fi->n_top; j++) fill_example(s, f, j, &ex[j]);
        qsort(ex, (size_t)fi->n_top, sizeof *ex, cmp_example);
        fi->bands = im->bands + f * s->nb;
        fi->n_bands = 0;
        int top = s->count[f] > 0 ? ilogbf(s->max[f]) : 0;
        for (int e = top; s->count[f] > 0 && e > top - s->nb; e--) {
            int g = ((e % s->nb) + s->nb) % s->nb;
            int64_t gi = f * s->nb + g;
            if (s->band_e[gi] != e || s->band_n[gi] == 0) continue;
            saefw_feature_band *b = &fi->bands[fi->n_bands++];
            b->lo = ldexp(1.0, e);
            b->hi = ldexp(1.0, e + 1);
            b->seen = s->band_seen[gi];
            b->n = s->band_n[gi];
            b->ex = ex + s->k + g * s->bk;
            for (int j = 0; j < b->n; j++) fill_example(s, f, s->k + g * s->bk + j, &b->ex[j]);
            qsort(b->ex, (size_t)b->n, sizeof *b->ex, cmp_example);
        }
    }
}

/* The seed's rare direction from the measured densities (lua/saefw/analysis.lua does the same for
 * `saefw analyze`): the normalised mean of the rare live features' encoder columns. */
static int rare_direction(const saefw_sae *sae, double threshold, saefw_features *out, char *err, size_t errlen) {
    const int64_t d = sae->d_in, D = sae->d_sae;
    const float *W = sae->p[SAEFW_W_ENC]; /* [d_in, d_sae] */
    out->rare_threshold = threshold > 0 ? threshold : SAEFW_RARE_THRESHOLD;
    out->n_rare = 0;
    memset(out->rare_cos_hist, 0, sizeof out->rare_cos_hist);
    double *dir = saefw_calloc((size_t)d, sizeof(double), err, errlen);
    if (!dir) return -1;
    for (int64_t j = 0; j < D; j++) {
        const double r = out->f[j].density;
        if (!(r > 0 && r < out->rare_threshold)) continue;
        out->n_rare++;
        for (int64_t i = 0; i < d; i++) dir[i] += W[i * D + j];
    }
    double norm = 0;
    for (int64_t i = 0; i < d; i++) norm += dir[i] * dir[i];
    norm = sqrt(norm);
    if (out->n_rare == 0 || norm == 0) {
        out->n_rare = 0;
        free(dir);
        return 0;
    }
    for (int64_t j = 0; j < D; j++) {
        const double r = out->f[j].density;
        if (!(r > 0 && r < out->rare_threshold)) continue;
        double dot = 0, cn = 0;
        for (int64_t i = 0; i < d; i++) {
            dot += dir[i] * W[i * D + j];
            cn += (double)W[i * D + j] * W[i * D + j];
        }
        const double c = cn > 0 ? dot / (norm * sqrt(cn)) : 0;
        int k = (int)floor((c + 1) / 2 * SAEFW_RARE_BINS);
        if (k < 0) k = 0;
        if (k >= SAEFW_RARE_BINS) k = SAEFW_RARE_BINS - 1;
        out->rare_cos_hist[k]++;
    }
    free(dir);
    return 0;
}

/* Logit effects and neuron classes of every feature, in blocks of features. */
static int weight_analysis(const saefw_model *model, saefw_hook hook, const saefw_sae *sae, int n_logits,
                           saefw_features *out, fimpl *im, char *err, size_t errlen) {
    const int64_t V = saefw_model_config(model)->d_vocab, D = sae->d_sae;
    out->one_sparse = out->ten_sparse = out->dense = -1;
    if (hook.kind == SAEFW_HOOK_MLP_POST) {
        out->one_sparse = out->ten_sparse = out->dense = 0;
        for (int64_t f = 0; f < D; f++) {
            int c = saefw_neuron_sparsity_class(sae->p[SAEFW_W_DEC] + f * sae->d_in, sae->d_in);
            out->f[f].neuron_class = c;
            if (c == 1) out->one_sparse++;
            else if (c == 10) out->ten_sparse++;
            else out->dense++;
        }
    } else {
        for (int64_t f = 0; f < D; f++) out->f[f].neuron_class = -1;
    }
    if (n_logits > V) n_logits = (int)V;
    if (n_logits <= 0) return 0;
    im->logit_ids = saefw_malloc(sizeof(int32_t) * (size_t)(D * 2 * n_logits), err, errlen);
    im->logit_vals = saefw_malloc(sizeof(float) * (size_t)(D * 2 * n_logits), err, errlen);
    int64_t blk = ((int64_t)1 << 24) / V;
    if (blk < 1) blk = 1;
    if (blk > D) blk = D;
    float *eff = im->logit_vals ? saefw_malloc(sizeof(float) * (size_t)(blk * V), err, errlen) : NULL;
    if (!im->logit_ids || !eff) {
        free(eff);
        return -1;
    }
    for (int64_t f0 = 0; f0 < D; f0 += blk) {
        int64_t n = D - f0 < blk ? D - f0 : blk;
        if (saefw_feature_logit_effects(model, hook, sae, f0, n, eff, err, errlen) != 0) {
            free(eff);
            return -1;
        }
        for (int64_t i = 0; i < n; i++) {
            saefw_feature_info *fi = &out->f[f0 + i];
            fi->n_logits = n_logits;
            fi->pos_ids = im->logit_ids + (f0 + i) * 2 * n_logits;
            fi->neg_ids = fi->pos_ids + n_logits;
            fi->pos_values = im->logit_vals + (f0 + i) * 2 * n_logits;
            fi->neg_values = fi->pos_values + n_logits;
            select_extremes(eff + i * V, V, n_logits, 1, fi->pos_ids, fi->pos_values);
            select_extremes(eff + i * V, V, n_logits, -1, fi->neg_ids, fi->neg_values);
        }
    }
    free(eff);
    return 0;
}

static int check_opts(const saefw_features_opts *o, char *err, size_t errlen) {
    if (o->top_k < 1 || o->top_k > 10000)
        return saefw_errf(err, errlen, "features: top_k must be from 1 to 10000, got %d", o->top_k);
    if (o->ctx_before < 0 || o->ctx_after < 0 || o->ctx_before + o->ctx_after > 4096)
        return saefw_errf(err, errlen, "features: context sizes must be >= 0 and together at most 4096");
    if (o->n_bands < 0 || o->n_bands > 64 || o->band_k < 0 || o->band_k > 1000)
        return saefw_errf(err, errlen, "features: bands must be from 0 to 64 with 0 to 1000 examples each");
    if (o->n_logits < 0 || o->n_logits > 1000)
        return saefw_errf(err, errlen, "features: n_logits must be from 0 to 1000");
    if (o->batch_rows < 1) return saefw_errf(err, errlen, "features: batch_rows must be positive");
    return 0;
}

int saefw_features_run(const saefw_model *model, const saefw_tokens *tok, saefw_hook hook, const saefw_sae *sae,
                       const saefw_features_opts *o, saefw_features **out, char *err, size_t errlen) {
    *out = NULL;
    saefw_features_opts def;
    if (!o) {
        saefw_features_default_opts(&def);
        o = &def;
    }
    if (check_opts(o, err, errlen) != 0) return -1;
    /* The logit effects and the neuron-basis classes read W_dec's rows at the input site; a transcoder's
     * rows live at its target site, with another width. */
    if (sae->transcoder)
        return saefw_errf(err, errlen,
                          "features: the SAE is a transcoder (its decoder writes another site than it reads); the "
                          "feature report supports SAEs only");
    char hname[128];
    saefw_hook_name(hook, hname, sizeof hname);
    int width = saefw_model_hook_width(model, hook);
    if (width <= 0) return saefw_errf(err, errlen, "features: %s is not a site of the model", hname);
    if (sae->d_in != width)
        return saefw_errf(err, errlen, "features: the SAE's d_in %lld does not match the width %d of the model's %s",
                          (long long)sae->d_in, width, hname);
    const saefw_model_cfg *mc = saefw_model_config(model);
    const int64_t T = saefw_tokens_seq_len(tok), R = saefw_tokens_rows(tok), D = sae->d_sae;
    if (R <= 0)
        return saefw_errf(err, errlen, "features: the token data set is empty (no row of %lld tokens)", (long long)T);
    if (T > mc->n_ctx)
        return saefw_errf(err, errlen, "features: rows of %lld tokens exceed the model's context n_ctx %d",
                          (long long)T, mc->n_ctx);
    int64_t want = o->n_tokens > 0 ? o->n_tokens : SAEFW_FEATURES_TOKENS;
    int64_t rows = (want + T - 1) / T;
    if (rows > R) rows = R;
    const int64_t B = rows < o->batch_rows ? rows : o->batch_rows;

    saefw_features *res = saefw_calloc(1, sizeof *res, err, errlen);
    fimpl *im = res ? saefw_calloc(1, sizeof *im, err, errlen) : NULL;
    if (!im) {
        free(res);
        return -1;
    }
    res->impl = im;
    res->d_in = sae->d_in;
    res->d_sae = D;
    res->d_vocab = mc->d_vocab;
    res->seq_len = T;
    res->tokens_analyzed = rows * T;
    res->top_k = o->top_k;
    res->ctx_before = o->ctx_before;
    res->ctx_after = o->ctx_after;
    res->seed = o->seed;

    int32_t *toks = NULL;
    float *x = NULL;
    saefw_model_work *mw = NULL;
    saefw_sae_eval *sw = NULL;
    int rc = -1;
    if (!(res->f = saefw_calloc((size_t)D, sizeof *res->f, err, errlen))) goto done;
    if (!(im->s = fstate_alloc(D, T, o, err, errlen))) goto done;
    if (!(im->ex = saefw_calloc((size_t)(D * im->s->S), sizeof *im->ex, err, errlen))) goto done;
    if (!(im->bands = saefw_calloc((size_t)(D * (o->n_bands > 0 ? o->n_bands : 1)), sizeof *im->bands, err, errlen)))
        goto done;
    if (!(toks = saefw_malloc(sizeof(int32_t) * (size_t)(B * T), err, errlen))) goto done;
    if (!(x = saefw_malloc(sizeof(float) * (size_t)(B * T * width), err, errlen))) goto done;
    if (saefw_model_work_alloc(model, B, T, &mw, err, errlen) != 0) goto done;
    if (saefw_sae_eval_alloc(&sw, sae, B * T, err, errlen) != 0) goto done;

    for (int64_t r0 = 0; r0 < rows; r0 += B) {
        int64_t nb = rows - r0 < B ? rows - r0 : B;
        if (saefw_stop_requested()) {
            char what[96];
            snprintf(what, sizeof what, "features (%lld of %lld tokens analysed)", (long long)(r0 * T),
                     (long long)(rows * T));
            saefw_stop_errf(err, errlen, what);
            goto done;
        }
        for (int64_t i = 0; i < nb; i++)
            if (saefw_tokens_row(tok, r0 + i, toks + i * T, mc->d_vocab, err, errlen) != 0) goto done;
        saefw_forward_opts fo;
        memset(&fo, 0, sizeof fo);
        fo.capture = &hook;
        fo.capture_out = x;
        fo.stop_after_capture = 1;
        if (saefw_model_forward(model, mw, toks, nb, T, &fo, err, errlen) != 0) goto done;
        saefw_sae_eval_forward(sae, sw, x, nb * T, NULL);
        batch_ctx bc = {im->s, {NULL, NULL, NULL}, NULL, toks, nb * T, r0 * T};
        if (saefw_sae_eval_entries(sw, &bc.ent)) {
            saefw_parallel_for(D, update_entries, &bc);
        } else {
            if (!(bc.acts = saefw_sae_eval_acts(sae, sw, err, errlen))) goto done;
            saefw_parallel_for(D, update_range, &bc);
        }
        if (o->progress) o->progress(o->progress_ud, (r0 + nb) * T, rows * T);
    }
    finish(res, im);
    if (weight_analysis(model, hook, sae, o->n_logits, res, im, err, errlen) != 0) goto done;
    if (rare_direction(sae, o->rare_threshold, res, err, errlen) != 0) goto done;
    rc = 0;
done:
    free(toks);
    free(x);
    saefw_model_work_free(mw);
    saefw_sae_eval_free(sw);
    if (rc != 0) {
        saefw_features_free(res);
        return -1;
    }
    *out = res;
    return 0;
}
