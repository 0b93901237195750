/* The model host's weights: loading a safetensors file or PyTorch checkpoint into one contiguous
 * block in the model's layout, with every tensor's shape and values checked, and access to them. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "util.h"

/* How one file tensor lands in the block. */
typedef struct {
    char name[64];
    int ndim;
    int64_t shape[3];
    float *dst;
    int qkv; /* 1: scatter [H, d_model, Dh] into the columns of W_qkv starting at col */
    int64_t col;
    int optional; /* zeros when absent */
} param_spec;

static size_t count_params(const saefw_model_cfg *c) {
    size_t dm = (size_t)c->d_model, hd = (size_t)c->n_heads * (size_t)c->d_head, mlp = (size_t)c->d_mlp;
    size_t V = (size_t)c->d_vocab;
    size_t layer = 2 * dm + dm * 3 * hd + 3 * hd + hd * dm + dm + 2 * dm + dm * mlp + mlp + mlp * dm + dm;
    return V * dm + (size_t)c->n_ctx * dm + 2 * dm + dm * V + V + (size_t)c->n_layers * layer;
}

static float *carve(float **cursor, size_t n) {
    float *p = *cursor;
    *cursor += n;
    return p;
}

static void add_spec(param_spec *s, int *n, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2,
                     float *dst) {
    param_spec *p = &s[(*n)++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->shape[0] = d0;
    p->shape[1] = d1;
    p->shape[2] = d2;
    p->dst = dst;
}

/* Carve the block and list what each file tensor fills; specs holds 6 + 16 * n_layers entries.
 * Returns the number of specs, or -1 if the carving does not use exactly count_params floats. */
static int layout(saefw_model *m, param_spec *specs) {
    const saefw_model_cfg *c = &m->cfg;
    int64_t dm = c->d_model, H = c->n_heads, Dh = c->d_head, hd = H * Dh, mlp = c->d_mlp, V = c->d_vocab;
    float *cur = m->params;
    int n = 0;
    char nm[64];
    m->W_E = carve(&cur, (size_t)(V * dm));
    m->W_pos = carve(&cur, (size_t)(c->n_ctx * dm));
    add_spec(specs, &n, "embed.W_E", 2, V, dm, 0, m->W_E);
    add_spec(specs, &n, "pos_embed.W_pos", 2, c->n_ctx, dm, 0, m->W_pos);
    for (int L = 0; L < c->n_layers; L++) {
        layer_weights *lw = &m->layers[L];
        lw->ln1_w = carve(&cur, (size_t)dm);
        lw->ln1_b = carve(&cur, (size_t)dm);
        lw->W_qkv = carve(&cur, (size_t)(dm * 3 * hd));
        lw->b_qkv = carve(&cur, (size_t)(3 * hd));
        lw->W_O = carve(&cur, (size_t)(hd * dm));
        lw->b_O = carve(&cur, (size_t)dm);
        lw->ln2_w = carve(&cur, (size_t)dm);
        lw->ln2_b = carve(&cur, (size_t)dm);
        lw->W_in = carve(&cur, (size_t)(dm * mlp));
        lw->b_in = carve(&cur, (size_t)mlp);
        lw->W_out = carve(&cur, (size_t)(mlp * dm));
        lw->b_out = carve(&cur, (size_t)dm);
#define SPEC(suffix, ndim, a, b, cc, dst)                                                                              \
    do {                                                                                                               \
        snprintf(nm, sizeof nm, "blocks.%d.%s", L, suffix);                                                            \
        add_spec(specs, &n, nm, ndim, a, b, cc, dst);                                                                  \
    } while (0)
        SPEC("ln1.w", 1, dm, 0, 0, lw->ln1_w);
        SPEC("ln1.b", 1, dm, 0, 0, lw->ln1_b);
        static const char *const qkv_w[3] = {"attn.W_Q", "attn.W_K", "attn.W_V"};
        static const char *const qkv_b[3] = {"attn.b_Q", "attn.b_K", "attn.b_V"};
        for (int s = 0; s < 3; s++) {
            SPEC(qkv_w[s], 3, H, dm, Dh, lw->W_qkv);
            specs[n - 1].qkv = 1;
            specs[n - 1].col = s * hd;
            SPEC(qkv_b[s], 2, H, Dh, 0, lw->b_qkv + s * hd);
        }
        SPEC("attn.W_O", 3, H, Dh, dm, lw->W_O);
        SPEC("attn.b_O", 1, dm, 0, 0, lw->b_O);
        SPEC("ln2.w", 1, dm, 0, 0, lw->ln2_w);
        SPEC("ln2.b", 1, dm, 0, 0, lw->ln2_b);
        SPEC("mlp.W_in", 2, dm, mlp, 0, lw->W_in);
        SPEC("mlp.b_in", 1, mlp, 0, 0, lw->b_in);
        SPEC("mlp.W_out", 2, mlp, dm, 0, lw->W_out);
        SPEC("mlp.b_out", 1, dm, 0, 0, lw->b_out);
#undef SPEC
    }
    m->lnf_w = carve(&cur, (size_t)dm);
    m->lnf_b = carve(&cur, (size_t)dm);
    m->W_U = carve(&cur, (size_t)(dm * V));
    m->b_U = carve(&cur, (size_t)V);
    add_spec(specs, &n, "ln_final.w", 1, dm, 0, 0, m->lnf_w);
    add_spec(specs, &n, "ln_final.b", 1, dm, 0, 0, m->lnf_b);
    add_spec(specs, &n, "unembed.W_U", 2, dm, V, 0, m->W_U);
    add_spec(specs, &n, "unembed.b_U", 1, V, 0, 0, m->b_U);
    specs[n - 1].optional = 1;
    return cur == m->params + m->n_params ? n : -1;
}

static void fmt_shape(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

/* A NaN or infinite weight would surface only as a NaN loss at step 0, naming nothing. */
static int check_finite(const float *x, int64_t n, const char *path, const char *name, char *err, size_t errlen) {
    for (int64_t k = 0; k < n; k++)
        if (!isfinite(x[k]))
            return saefw_errf(err, errlen, "%s: tensor %s holds %s at element %" PRId64 "; the weights are damaged",
                              path, name, isnan(x[k]) ? "NaN" : "an infinite value", k);
    return 0;
}

static int load_tensor(const saefw_tensorfile *tf, const char *path, const param_spec *s, float *tmp, int64_t dm,
                       int64_t hd3, char *err, size_t errlen) {
    const saefw_tensor_info *t = saefw_tf_find(tf, s->name);
    if (!t) {
        if (s->optional) return 0; /* the block is zeroed */
        return saefw_errf(err, errlen, "%s: missing tensor %s", path, s->name);
    }
    if (t->dtype != SAEFW_DT_F32 && t->dtype != SAEFW_DT_F16 && t->dtype != SAEFW_DT_BF16 && t->dtype != SAEFW_DT_F64)
        return saefw_errf(err, errlen, "%s: tensor %s has dtype %s, expected a floating dtype", path, s->name,
                          saefw_dtype_name(t->dtype));
    int same = t->ndim == s->ndim;
    for (int i = 0; same && i < s->ndim; i++) same = t->shape[i] == s->shape[i];
    if (!same) {
        char got[160], want[160];
        fmt_shape(got, sizeof got, t->ndim, t->shape);
        fmt_shape(want, sizeof want, s->ndim, s->shape);
        return saefw_errf(err, errlen, "%s: tensor %s has shape %s, expected %s", path, s->name, got, want);
    }
    char e2[512];
    if (!s->qkv) {
        if (saefw_tensor_to_f32(t, s->dst, e2, sizeof e2) != 0)
            return saefw_errf(err, errlen, "%s: tensor %s: %s", path, s->name, e2);
        return check_finite(s->dst, t->numel, path, s->name, err, errlen);
    }
    if (saefw_tensor_to_f32(t, tmp, e2, sizeof e2) != 0)
        return saefw_errf(err, errlen, "%s: tensor %s: %s", path, s->name, e2);
    if (check_finite(tmp, t->numel, path, s->name, err, errlen) != 0) return -1;
    int64_t H = s->shape[0], Dh = s->shape[2];
    for (int64_t h = 0; h < H; h++)
        for (int64_t i = 0; i < dm; i++)
            memcpy(s->dst + i * hd3 + s->col + h * Dh, tmp + (h * dm + i) * Dh, sizeof(float) * (size_t)Dh);
    return 0;
}

/* A "blocks.N." tensor with N >= n_layers means the config does not describe this file. */
static int check_extra_layers(const saefw_tensorfile *tf, const char *path, int n_layers, char *err, size_t errlen) {
    int n = saefw_tf_count(tf);
    for (int i = 0; i < n; i++) {
        const char *nm = saefw_tf_get(tf, i)->name;
        if (strncmp(nm, "blocks.", 7) != 0) continue;
        char *end;
        long L = strtol(nm + 7, &end, 10);
        if (end != nm + 7 && *end == '.' && L >= n_layers)
            return saefw_errf(err, errlen, "%s: tensor %.200s is for layer %ld, but the config has n_layers = %d", path,
                              nm, L, n_layers);
    }
    return 0;
}

int saefw_model_load(const char *weights_path, const saefw_model_cfg *cfg, saefw_model **out, char *err,
                     size_t errlen) {
    *out = NULL;
    if (!weights_path) return saefw_errf(err, errlen, "model weights path is NULL");
    saefw_tensorfile *tf = NULL;
    saefw_model *m = NULL;
    param_spec *specs = NULL;
    float *tmp = NULL;
    if (saefw_tf_open(weights_path, &tf, err, errlen) != 0) return -1;

    saefw_model_cfg c;
    if (cfg) {
        c = *cfg;
        if (saefw_model_cfg_check(&c, "model config", err, errlen) != 0) goto fail;
    } else if (saefw_tf_metadata(tf, "n_layers")) {
        if (saefw_model_cfg_from_metadata(tf, weights_path, &c, err, errlen) != 0) goto fail;
    } else {
        int rc = saefw_model_cfg_from_sibling(weights_path, &c, err, errlen);
        if (rc < 0) goto fail;
        if (rc > 0) {
            saefw_errf(err, errlen,
                       "%s: no model config: the file has no config keys in its metadata and there is no "
                       "config.json beside it",
                       weights_path);
            goto fail;
        }
    }

    m = saefw_calloc(1, sizeof *m, err, errlen);
    if (!m) goto fail;
    m->cfg = c;
    m->n_params = count_params(&c);
    m->params = saefw_calloc(m->n_params, sizeof(float), err, errlen);
    m->layers = saefw_calloc((size_t)c.n_layers, sizeof *m->layers, err, errlen);
    specs = saefw_calloc(6 + 16 * (size_t)c.n_layers, sizeof *specs, err, errlen);
    int64_t dm = c.d_model, hd3 = 3 * (int64_t)c.n_heads * c.d_head;
    tmp = saefw_malloc(sizeof(float) * (size_t)(dm * c.n_heads * c.d_head), err, errlen);
    if (!m->params || !m->layers || !specs || !tmp) goto fail;
    int n = layout(m, specs);
    if (n < 0) {
        saefw_errf(err, errlen, "%s: internal error: parameter layout does not match its size", weights_path);
        goto fail;
    }
    for (int i = 0; i < n; i++)
        if (load_tensor(tf, weights_path, &specs[i], tmp, dm, hd3, err, errlen) != 0) goto fail;
    if (check_extra_layers(tf, weights_path, c.n_layers, err, errlen) != 0) goto fail;
    free(tmp);
    free(specs);
    saefw_tf_close(tf);
    *out = m;
    return 0;
fail:
    free(tmp);
    free(specs);
    saefw_model_free(m);
    saefw_tf_close(tf);
    return -1;
}

void saefw_model_free(saefw_model *m) {
    if (!m) return;
    free(m->params);
    free(m->layers);
    free(m);
}

const saefw_model_cfg *saefw_model_config(const saefw_model *m) { return &m->cfg; }

size_t saefw_model_param_bytes(const saefw_model *m) { return m->n_params * sizeof(float); }

const float *saefw_model_params(const saefw_model *m, size_t *count) {
    if (count) *count = m->n_params;
    return m->params;
}

const float *saefw_model_weight(const saefw_model *m, const char *name, int layer) {
    if (!strcmp(name, "ln_final.w")) return m->lnf_w;
    if (!strcmp(name, "ln_final.b")) return m->lnf_b;
    if (!strcmp(name, "unembed.W_U")) return m->W_U;
    if (!strcmp(name, "unembed.b_U")) return m->b_U;
    if (layer < 0 || layer >= m->cfg.n_layers) return NULL;
    if (!strcmp(name, "mlp.W_out")) return m->layers[layer].W_out;
    if (!strcmp(name, "mlp.b_out")) return m->layers[layer].b_out;
    return NULL;
}
