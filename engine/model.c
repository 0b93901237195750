/* The model host: config parsing, weight loading and the fp32 forward pass of the "neel" family of
 * transformers with TransformerLens semantics, with capture and intervention at hook sites. */
#include "model.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "parallel.h"
#include "sae_kernels.h"
#include "tensorfile.h"
#include "util.h"

/* Largest accepted dimension: keeps every product of two dimensions far inside int64 and every
 * sgemm size inside int. */
#define DIM_MAX (1 << 24)
/* Tokens per forward chunk and floats per logits chunk (gelu-1l: ~170 rows of 48262). */
#define CHUNK_TOKENS 2048
#define LOGIT_CHUNK_FLOATS (8 << 20)

/* ------------------------------------------------------------------------------------------------
 * Hook names */

static const struct {
    saefw_hook_kind kind;
    const char *full; /* suffix after "blocks.L." */
    const char *shorts[4];
} hook_names[] = {
    {SAEFW_HOOK_RESID_PRE, "hook_resid_pre", {"resid_pre", "hook_resid_pre"}},
    {SAEFW_HOOK_RESID_MID, "hook_resid_mid", {"resid_mid", "hook_resid_mid"}},
    {SAEFW_HOOK_MLP_POST, "mlp.hook_post", {"post", "mlp_post", "hook_post", "mlp.hook_post"}},
    {SAEFW_HOOK_MLP_OUT, "hook_mlp_out", {"mlp_out", "hook_mlp_out"}},
    {SAEFW_HOOK_RESID_POST, "hook_resid_post", {"resid_post", "hook_resid_post"}},
    {SAEFW_HOOK_LN1_NORMALIZED, "ln1.hook_normalized", {"ln1_normalized", "ln1.hook_normalized"}},
    {SAEFW_HOOK_ATTN_Q, "attn.hook_q", {"q", "hook_q", "attn.hook_q"}},
    {SAEFW_HOOK_ATTN_K, "attn.hook_k", {"k", "hook_k", "attn.hook_k"}},
    {SAEFW_HOOK_ATTN_V, "attn.hook_v", {"v", "hook_v", "attn.hook_v"}},
    {SAEFW_HOOK_ATTN_PATTERN, "attn.hook_pattern", {"pattern", "hook_pattern", "attn.hook_pattern"}},
    {SAEFW_HOOK_ATTN_Z, "attn.hook_z", {"z", "hook_z", "attn.hook_z"}},
    {SAEFW_HOOK_LN2_NORMALIZED, "ln2.hook_normalized", {"ln2_normalized", "ln2.hook_normalized"}},
    {SAEFW_HOOK_MLP_PRE, "mlp.hook_pre", {"mlp_pre", "hook_pre", "mlp.hook_pre"}},
};
#define LN_FINAL_NAME "ln_final.hook_normalized"
#define N_HOOK_KINDS ((int)(sizeof hook_names / sizeof hook_names[0]))

static int bad_hook(const char *name, char *err, size_t errlen) {
    return saefw_errf(err, errlen,
                      "unknown hook site '%.200s' (expected blocks.L.hook_resid_pre, blocks.L.hook_resid_mid, "
                      "blocks.L.mlp.hook_post, blocks.L.hook_mlp_out, blocks.L.hook_resid_post, "
                      "blocks.L.ln1.hook_normalized, blocks.L.attn.hook_q/k/v/z/pattern, blocks.L.ln2.hook_normalized, "
                      "blocks.L.mlp.hook_pre, " LN_FINAL_NAME ", or a short name: resid_pre, resid_mid, post, "
                      "mlp_out, resid_post, ln1_normalized, q, k, v, pattern, z, ln2_normalized, mlp_pre)",
                      name);
}

int saefw_hook_parse(const char *name, int layer, saefw_hook *out, char *err, size_t errlen) {
    if (!name) return saefw_errf(err, errlen, "hook site name is NULL");
    if (strcmp(name, LN_FINAL_NAME) == 0 || strcmp(name, "ln_final") == 0) {
        /* After the last layer: any layer given is ignored. */
        out->kind = SAEFW_HOOK_LN_FINAL_NORMALIZED;
        out->layer = 0;
        return 0;
    }
    if (strncmp(name, "blocks.", 7) == 0) {
        const char *p = name + 7;
        long L = 0;
        int digits = 0;
        while (*p >= '0' && *p <= '9' && digits < 8) {
            L = L * 10 + (*p++ - '0');
            digits++;
        }
        if (digits == 0 || digits == 8 || *p != '.') return bad_hook(name, err, errlen);
        p++;
        for (int i = 0; i < N_HOOK_KINDS; i++) {
            if (strcmp(p, hook_names[i].full) != 0) continue;
            if (layer >= 0 && layer != L)
                return saefw_errf(err, errlen, "hook site '%.200s' names layer %ld but layer %d was given", name, L,
                                  layer);
            out->kind = hook_names[i].kind;
            out->layer = (int)L;
            return 0;
        }
        return bad_hook(name, err, errlen);
    }
    for (int i = 0; i < N_HOOK_KINDS; i++) {
        for (int j = 0; j < 4 && hook_names[i].shorts[j]; j++) {
            if (strcmp(name, hook_names[i].shorts[j]) != 0) continue;
            if (layer < 0) return saefw_errf(err, errlen, "hook site '%.200s' needs a layer (got %d)", name, layer);
            out->kind = hook_names[i].kind;
            out->layer = layer;
            return 0;
        }
    }
    return bad_hook(name, err, errlen);
}

void saefw_hook_name(saefw_hook h, char *buf, size_t n) {
    if (h.kind == SAEFW_HOOK_LN_FINAL_NORMALIZED) {
        snprintf(buf, n, "%s", LN_FINAL_NAME);
        return;
    }
    const char *suffix = "?";
    for (int i = 0; i < N_HOOK_KINDS; i++)
        if (hook_names[i].kind == h.kind) suffix = hook_names[i].full;
    snprintf(buf, n, "blocks.%d.%s", h.layer, suffix);
}

/* ------------------------------------------------------------------------------------------------
 * Config */

/* An integer key: a JSON number with an integral value, or a string holding one (safetensors
 * metadata values are strings). */
static int cfg_int(const cJSON *root, const char *what, const char *key, int *out, char *err, size_t errlen) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!it) return saefw_errf(err, errlen, "%s: missing key %s", what, key);
    double v;
    if (cJSON_IsNumber(it)) {
        v = it->valuedouble;
    } else if (cJSON_IsString(it) && it->valuestring[0]) {
        char *end;
        v = strtod(it->valuestring, &end);
        if (*end) return saefw_errf(err, errlen, "%s: key %s is \"%.40s\", not an integer", what, key, it->valuestring);
    } else {
        return saefw_errf(err, errlen, "%s: key %s is not an integer", what, key);
    }
    if (!(v >= 1 && v <= DIM_MAX) || v != floor(v))
        return saefw_errf(err, errlen, "%s: key %s = %g is not an integer in [1, %d]", what, key, v, DIM_MAX);
    *out = (int)v;
    return 0;
}

/* A string key; NULL when absent. */
static int cfg_str(const cJSON *root, const char *what, const char *key, const char **out, char *err, size_t errlen) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    *out = NULL;
    if (!it || cJSON_IsNull(it)) return 0;
    if (!cJSON_IsString(it)) return saefw_errf(err, errlen, "%s: key %s is not a string", what, key);
    *out = it->valuestring;
    return 0;
}

/* A boolean flag as JSON bool or the strings "true"/"false"/"True"/"False"; dflt when absent. */
static int cfg_flag(const cJSON *root, const char *key, int dflt) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!it || cJSON_IsNull(it)) return dflt;
    if (cJSON_IsBool(it)) return cJSON_IsTrue(it);
    if (cJSON_IsString(it)) return strcmp(it->valuestring, "true") == 0 || strcmp(it->valuestring, "True") == 0;
    if (cJSON_IsNumber(it)) return it->valuedouble != 0;
    return dflt;
}

/* Range and support checks of a config however it was made. */
static int cfg_check(const saefw_model_cfg *c, const char *what, char *err, size_t errlen) {
    const struct {
        const char *key;
        int v;
    } dims[] = {{"n_layers", c->n_layers}, {"d_model", c->d_model}, {"d_mlp", c->d_mlp},    {"d_head", c->d_head},
                {"n_heads", c->n_heads},   {"n_ctx", c->n_ctx},     {"d_vocab", c->d_vocab}};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i].v < 1 || dims[i].v > DIM_MAX)
            return saefw_errf(err, errlen, "%s: %s = %d is outside [1, %d]", what, dims[i].key, dims[i].v, DIM_MAX);
    if ((int64_t)c->n_heads * c->d_head > DIM_MAX)
        return saefw_errf(err, errlen, "%s: n_heads * d_head = %" PRId64 " is too large", what,
                          (int64_t)c->n_heads * c->d_head);
    if (strncmp(c->act_fn, "gelu", sizeof c->act_fn) != 0)
        return saefw_errf(err, errlen, "%s: act_fn \"%.15s\" is not supported (only \"gelu\", the exact erf GELU)",
                          what, c->act_fn);
    if (strncmp(c->normalization, "LN", sizeof c->normalization) != 0)
        return saefw_errf(err, errlen, "%s: normalization \"%.15s\" is not supported (only \"LN\")", what,
                          c->normalization);
    if (!(c->ln_eps > 0 && c->ln_eps < 1))
        return saefw_errf(err, errlen, "%s: ln_eps %g outside (0, 1)", what, (double)c->ln_eps);
    return 0;
}

static int cfg_from_cjson(const cJSON *root, const char *what, saefw_model_cfg *cfg, char *err, size_t errlen) {
    if (!cJSON_IsObject(root)) return saefw_errf(err, errlen, "%s: not a JSON object", what);
    saefw_model_cfg c;
    memset(&c, 0, sizeof c);
    if (cfg_int(root, what, "n_layers", &c.n_layers, err, errlen) ||
        cfg_int(root, what, "d_model", &c.d_model, err, errlen) ||
        cfg_int(root, what, "d_mlp", &c.d_mlp, err, errlen) || cfg_int(root, what, "d_head", &c.d_head, err, errlen) ||
        cfg_int(root, what, "n_heads", &c.n_heads, err, errlen) ||
        cfg_int(root, what, "n_ctx", &c.n_ctx, err, errlen) || cfg_int(root, what, "d_vocab", &c.d_vocab, err, errlen))
        return -1;

    const char *act, *norm, *norm_type, *pos;
    if (cfg_str(root, what, "act_fn", &act, err, errlen) || cfg_str(root, what, "normalization", &norm, err, errlen) ||
        cfg_str(root, what, "normalization_type", &norm_type, err, errlen) ||
        cfg_str(root, what, "positional_embedding_type", &pos, err, errlen))
        return -1;
    if (!act) return saefw_errf(err, errlen, "%s: missing key act_fn", what);
    if (strcmp(act, "gelu") != 0)
        return saefw_errf(err, errlen, "%s: act_fn \"%.40s\" is not supported (only \"gelu\", the exact erf GELU)",
                          what, act);
    if (norm && norm_type && strcmp(norm, norm_type) != 0)
        return saefw_errf(err, errlen, "%s: normalization \"%.40s\" and normalization_type \"%.40s\" disagree", what,
                          norm, norm_type);
    if (!norm) norm = norm_type;
    if (!norm) return saefw_errf(err, errlen, "%s: missing key normalization (or normalization_type)", what);
    if (strcmp(norm, "LN") != 0)
        return saefw_errf(err, errlen, "%s: normalization \"%.40s\" is not supported (only \"LN\")", what, norm);
    if (pos && strcmp(pos, "standard") != 0)
        return saefw_errf(err, errlen, "%s: positional_embedding_type \"%.40s\" is not supported (only \"standard\")",
                          what, pos);
    static const char *const must_be_false[] = {"attn_only", "shortformer_pos", "gated_mlp", "parallel_attn_mlp",
                                                "final_rms"};
    for (size_t i = 0; i < sizeof must_be_false / sizeof must_be_false[0]; i++)
        if (cfg_flag(root, must_be_false[i], 0))
            return saefw_errf(err, errlen, "%s: %s = true is not supported (only gelu-1l's architecture is)", what,
                              must_be_false[i]);
    if (!cfg_flag(root, "use_attn_scale", 1))
        return saefw_errf(err, errlen, "%s: use_attn_scale = false is not supported", what);

    c.ln_eps = 1e-5f;
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(root, "ln_eps");
    if (eps && !cJSON_IsNull(eps)) {
        double e = -1;
        if (cJSON_IsNumber(eps))
            e = eps->valuedouble;
        else if (cJSON_IsString(eps)) {
            char *end;
            e = strtod(eps->valuestring, &end);
            if (*end || end == eps->valuestring) e = -1;
        }
        if (!(e > 0 && e < 1)) return saefw_errf(err, errlen, "%s: ln_eps is not a number in (0, 1)", what);
        c.ln_eps = (float)e;
    }
    snprintf(c.act_fn, sizeof c.act_fn, "%s", act);
    snprintf(c.normalization, sizeof c.normalization, "%s", norm);
    if (cfg_check(&c, what, err, errlen) != 0) return -1;
    *cfg = c;
    return 0;
}

int saefw_model_cfg_from_json(const char *json_text, const char *what, saefw_model_cfg *cfg, char *err, size_t errlen) {
    if (!what) what = "config";
    if (!json_text || !cfg) return saefw_errf(err, errlen, "%s: no JSON text", what);
    cJSON *root = cJSON_Parse(json_text);
    if (!root) return saefw_errf(err, errlen, "%s: not valid JSON", what);
    int rc = cfg_from_cjson(root, what, cfg, err, errlen);
    cJSON_Delete(root);
    return rc;
}

/* The safetensors metadata as a JSON object of strings, so it goes through the same parser. */
static int cfg_from_metadata(const saefw_tensorfile *tf, const char *path, saefw_model_cfg *cfg, char *err,
                             size_t errlen) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return saefw_errf(err, errlen, "out of memory");
    int n = saefw_tf_metadata_count(tf);
    for (int i = 0; i < n; i++) {
        const char *k, *v;
        if (saefw_tf_metadata_at(tf, i, &k, &v) != 0) continue;
        if (!cJSON_AddStringToObject(root, k, v)) {
            cJSON_Delete(root);
            return saefw_errf(err, errlen, "out of memory");
        }
    }
    char what[600];
    snprintf(what, sizeof what, "%.500s metadata", path);
    int rc = cfg_from_cjson(root, what, cfg, err, errlen);
    cJSON_Delete(root);
    return rc;
}

/* config.json in the folder of path. Returns 1 if there is none. */
static int cfg_from_sibling(const char *path, saefw_model_cfg *cfg, char *err, size_t errlen) {
    char cpath[4096];
    const char *slash = strrchr(path, '/');
    int dir_len = slash ? (int)(slash - path) + 1 : 0;
    if (snprintf(cpath, sizeof cpath, "%.*sconfig.json", dir_len, path) >= (int)sizeof cpath)
        return saefw_errf(err, errlen, "%s: path too long", path);
    FILE *f = fopen(cpath, "rb");
    if (!f) return 1;
    fclose(f);
    char *text;
    size_t len;
    if (saefw_read_file(cpath, &text, &len, err, errlen) != 0) return -1;
    int rc = saefw_model_cfg_from_json(text, cpath, cfg, err, errlen);
    free(text);
    return rc;
}

/* ------------------------------------------------------------------------------------------------
 * Weights: one contiguous block carved into named tensors. W_Q, W_K and W_V ([n_heads, d_model,
 * d_head] in the file) are laid out as the column blocks of one W_qkv [d_model, 3*n_heads*d_head],
 * so one sgemm computes every head's queries, keys and values. */

typedef struct {
    float *ln1_w, *ln1_b; /* [d_model] */
    float *W_qkv;         /* [d_model, 3*H*Dh]: column (s*H + h)*Dh + d is head h's Q/K/V (s = 0/1/2) */
    float *b_qkv;         /* [3*H*Dh] */
    float *W_O;           /* [H*Dh, d_model] (the file's [H, Dh, d_model]) */
    float *b_O;           /* [d_model] */
    float *ln2_w, *ln2_b; /* [d_model] */
    float *W_in;          /* [d_model, d_mlp] */
    float *b_in;          /* [d_mlp] */
    float *W_out;         /* [d_mlp, d_model] */
    float *b_out;         /* [d_model] */
} layer_weights;

struct saefw_model {
    saefw_model_cfg cfg;
    float *params; /* [n_params], owns every tensor below */
    size_t n_params;
    float *W_E;            /* [d_vocab, d_model] */
    float *W_pos;          /* [n_ctx, d_model] */
    float *lnf_w, *lnf_b;  /* [d_model] */
    float *W_U;            /* [d_model, d_vocab] */
    float *b_U;            /* [d_vocab] */
    layer_weights *layers; /* [n_layers] */
};

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
    for (int i = 0; same && i < s->ndim; i++)
        same = t->shape[i] == s->shape[i];
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
        if (cfg_check(&c, "model config", err, errlen) != 0) goto fail;
    } else if (saefw_tf_metadata(tf, "n_layers")) {
        if (cfg_from_metadata(tf, weights_path, &c, err, errlen) != 0) goto fail;
    } else {
        int rc = cfg_from_sibling(weights_path, &c, err, errlen);
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

int saefw_model_hook_width(const saefw_model *m, saefw_hook h) {
    if (h.layer < 0 || h.layer >= m->cfg.n_layers) return -1;
    switch (h.kind) {
    case SAEFW_HOOK_MLP_POST:
    case SAEFW_HOOK_MLP_PRE: return m->cfg.d_mlp;
    case SAEFW_HOOK_ATTN_Q:
    case SAEFW_HOOK_ATTN_K:
    case SAEFW_HOOK_ATTN_V:
    case SAEFW_HOOK_ATTN_Z: return m->cfg.n_heads * m->cfg.d_head;
    case SAEFW_HOOK_ATTN_PATTERN: return 0;
    default: return m->cfg.d_model;
    }
}

int saefw_model_hook_shape(const saefw_model *m, saefw_hook h, int64_t B, int64_t T, int64_t shape[4]) {
    int width = saefw_model_hook_width(m, h);
    if (width < 0) return -1;
    const int64_t H = m->cfg.n_heads;
    shape[0] = B;
    if (h.kind == SAEFW_HOOK_ATTN_PATTERN) {
        shape[1] = H;
        shape[2] = T;
        shape[3] = T;
        return 4;
    }
    shape[1] = T;
    if (h.kind == SAEFW_HOOK_ATTN_Q || h.kind == SAEFW_HOOK_ATTN_K || h.kind == SAEFW_HOOK_ATTN_V ||
        h.kind == SAEFW_HOOK_ATTN_Z) {
        shape[2] = H;
        shape[3] = m->cfg.d_head;
        return 4;
    }
    shape[2] = width;
    return 3;
}

static int check_hook(const saefw_model *m, saefw_hook h, char *err, size_t errlen) {
    char nm[96];
    saefw_hook_name(h, nm, sizeof nm);
    if ((int)h.kind < 0 || (int)h.kind > SAEFW_HOOK_LN_FINAL_NORMALIZED)
        return saefw_errf(err, errlen, "unknown hook kind %d", (int)h.kind);
    if (h.layer < 0 || h.layer >= m->cfg.n_layers)
        return saefw_errf(err, errlen, "hook site %s: layer %d out of range: the model has %d layer%s", nm, h.layer,
                          m->cfg.n_layers, m->cfg.n_layers == 1 ? "" : "s");
    return 0;
}

int saefw_model_hook_resolve(const saefw_model *m, const char *name, int layer, saefw_hook *out, char *err,
                             size_t errlen) {
    saefw_hook h;
    if (saefw_hook_parse(name, layer, &h, err, errlen) != 0) return -1;
    if (check_hook(m, h, err, errlen) != 0) return -1;
    *out = h;
    return 0;
}

size_t saefw_model_param_bytes(const saefw_model *m) { return m->n_params * sizeof(float); }

const float *saefw_model_params(const saefw_model *m, size_t *count) {
    if (count) *count = m->n_params;
    return m->params;
}

/* ------------------------------------------------------------------------------------------------
 * Work space */

struct saefw_model_work {
    size_t bytes; /* of the arrays below */
    saefw_model_cfg cfg; /* the model it was sized for */
    int64_t max_seq;
    int64_t chunk_seqs; /* sequences per forward chunk */
    int64_t vocab_block; /* logits columns per block when the caller takes no logits */
    float *resid;       /* [R, d_model], R = chunk_seqs * max_seq: the residual stream */
    float *ln;          /* [R, d_model]: LayerNorm output */
    float *qkv;         /* [R, 3*H*Dh] */
    float *z;           /* [R, H*Dh] */
    float *out;         /* [R, d_model]: attention or MLP output */
    float *mlp;         /* [R, d_mlp] */
    float *logits;      /* [R, vocab_block] */
    float *lse_max;     /* [R]: running max of each row's logits over the vocabulary blocks so far */
    double *lse_sum;    /* [R]: running sum of exp(logit - lse_max) */
    float *lse_tgt;     /* [R]: the target's logit, once its block has come */
};

void saefw_model_work_free(saefw_model_work *w) {
    if (!w) return;
    free(w->resid);
    free(w->ln);
    free(w->qkv);
    free(w->z);
    free(w->out);
    free(w->mlp);
    free(w->logits);
    free(w->lse_max);
    free(w->lse_sum);
    free(w->lse_tgt);
    free(w);
}

int saefw_model_work_alloc(const saefw_model *m, int64_t max_batch, int64_t max_seq, saefw_model_work **out, char *err,
                           size_t errlen) {
    *out = NULL;
    const saefw_model_cfg *c = &m->cfg;
    if (max_batch < 1) return saefw_errf(err, errlen, "model work: max_batch %" PRId64 " < 1", max_batch);
    if (max_seq < 1 || max_seq > c->n_ctx)
        return saefw_errf(err, errlen, "model work: max_seq %" PRId64 " outside [1, n_ctx = %d]", max_seq, c->n_ctx);
    saefw_model_work *w = saefw_calloc(1, sizeof *w, err, errlen);
    if (!w) return -1;
    w->cfg = *c;
    w->max_seq = max_seq;
    w->chunk_seqs = CHUNK_TOKENS / max_seq;
    if (w->chunk_seqs < 1) w->chunk_seqs = 1;
    if (w->chunk_seqs > max_batch) w->chunk_seqs = max_batch;
    size_t R = (size_t)(w->chunk_seqs * max_seq);
    /* The loss alone goes through the vocabulary in blocks of vocab_block columns for all R rows (so
     * that W_U streams through once per chunk), keeping a running log-sum-exp per row. */
    w->vocab_block = LOGIT_CHUNK_FLOATS / (int64_t)R;
    if (w->vocab_block < 1) w->vocab_block = 1;
    if (w->vocab_block > c->d_vocab) w->vocab_block = c->d_vocab;
    size_t dm = (size_t)c->d_model, hd = (size_t)c->n_heads * (size_t)c->d_head;
    w->resid = saefw_malloc(sizeof(float) * R * dm, err, errlen);
    w->ln = w->resid ? saefw_malloc(sizeof(float) * R * dm, err, errlen) : NULL;
    w->qkv = w->ln ? saefw_malloc(sizeof(float) * R * 3 * hd, err, errlen) : NULL;
    w->z = w->qkv ? saefw_malloc(sizeof(float) * R * hd, err, errlen) : NULL;
    w->out = w->z ? saefw_malloc(sizeof(float) * R * dm, err, errlen) : NULL;
    w->mlp = w->out ? saefw_malloc(sizeof(float) * R * (size_t)c->d_mlp, err, errlen) : NULL;
    w->logits = w->mlp ? saefw_malloc(sizeof(float) * R * (size_t)w->vocab_block, err, errlen) : NULL;
    w->lse_max = w->logits ? saefw_malloc(sizeof(float) * R, err, errlen) : NULL;
    w->lse_sum = w->lse_max ? saefw_malloc(sizeof(double) * R, err, errlen) : NULL;
    w->lse_tgt = w->lse_sum ? saefw_malloc(sizeof(float) * R, err, errlen) : NULL;
    if (!w->lse_tgt) {
        saefw_model_work_free(w);
        return -1;
    }
    w->bytes = sizeof(float) * R * (3 * dm + 4 * hd + (size_t)c->d_mlp + (size_t)w->vocab_block + 2) + sizeof(double) * R;
    *out = w;
    return 0;
}

size_t saefw_model_work_bytes(const saefw_model_work *w) { return w ? w->bytes : 0; }

/* ------------------------------------------------------------------------------------------------
 * Layers: plain functions over flat arrays, outputs first, dimensions last. */

/* Every layer runs on saefw_parallel_for over fixed splits, and the products on fixed grids of
 * single-threaded OpenBLAS calls (saefw_linear_blocks): the activations do not depend on the thread
 * count, and no OpenBLAS thread spins between layers. */

/* out [n, k_out] = in [n, k_in] @ W [k_in, k_out] + bias [k_out] (bias may be NULL); out's rows are
 * ld_out apart. */
static void linear(float *out, const float *in, const float *W, const float *bias, int64_t n, int64_t k_in,
                   int64_t k_out, int64_t ld_out) {
    saefw_linear_blocks(n, k_out, k_in, in, k_in, W, k_out, bias, out, ld_out);
}

typedef struct {
    float *out;
    const float *in, *w, *b;
    int64_t d;
    float eps;
} ln_job;

/* Rows [r0, r1): out = (in - mean) / sqrt(biased var + eps) * w + b (statistics in double); without
 * w, the normalized value alone (TransformerLens's hook_normalized). */
static void layernorm_rows(void *ctx, int64_t r0, int64_t r1) {
    const ln_job *j = ctx;
    const int64_t d = j->d;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = j->in + r * d;
        float *y = j->out + r * d;
        double s = 0;
        for (int64_t i = 0; i < d; i++)
            s += x[i];
        double mean = s / (double)d, v = 0;
        for (int64_t i = 0; i < d; i++)
            v += ((double)x[i] - mean) * ((double)x[i] - mean);
        double inv = 1.0 / sqrt(v / (double)d + (double)j->eps);
        if (!j->w) {
            for (int64_t i = 0; i < d; i++)
                y[i] = (float)(((double)x[i] - mean) * inv);
            continue;
        }
        for (int64_t i = 0; i < d; i++)
            y[i] = (float)(((double)x[i] - mean) * inv) * j->w[i] + j->b[i];
    }
}

static void layernorm(float *out, const float *in, const float *w, const float *b, int64_t n, int64_t d, float eps) {
    ln_job j = {out, in, w, b, d, eps};
    saefw_parallel_for(n, layernorm_rows, &j);
}

typedef struct {
    float *z;
    const float *qkv;
    float *pattern; /* [bs, H, T, T] or NULL */
    int64_t T, H, Dh, max_seq;
    int failed; /* a part could not allocate its scratch */
} att_job;

/* Sequence-heads [p0, p1) (p = b * H + h): z = causal softmax(q k^T / sqrt(Dh)) v. */
static void attention_heads(void *ctx, int64_t p0, int64_t p1) {
    att_job *j = ctx;
    const int64_t T = j->T, H = j->H, Dh = j->Dh, hd = H * Dh, ld = 3 * hd;
    const float scale = (float)(1.0 / sqrt((double)Dh));
    float *att = malloc(sizeof(float) * (size_t)(T * T));
    if (!att) {
        __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    for (int64_t p = p0; p < p1; p++) {
        const int64_t b = p / H, h = p % H;
        const float *base = j->qkv + b * T * ld;
        const float *q = base + h * Dh, *k = base + hd + h * Dh, *v = base + 2 * hd + h * Dh;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)T, (int)Dh, scale, q, (int)ld, k, (int)ld, 0.0f,
                    att, (int)T);
        for (int64_t i = 0; i < T; i++) {
            float *a = att + i * T;
            float mx = a[0];
            for (int64_t c = 1; c <= i; c++)
                mx = a[c] > mx ? a[c] : mx;
            double sum = 0;
            for (int64_t c = 0; c <= i; c++) {
                a[c] = expf(a[c] - mx);
                sum += a[c];
            }
            float inv = (float)(1.0 / sum);
            for (int64_t c = 0; c <= i; c++)
                a[c] *= inv;
            for (int64_t c = i + 1; c < T; c++)
                a[c] = 0.0f;
        }
        if (j->pattern) memcpy(j->pattern + p * T * T, att, sizeof(float) * (size_t)(T * T));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)Dh, (int)T, 1.0f, att, (int)T, v, (int)ld,
                    0.0f, j->z + b * T * hd + h * Dh, (int)hd);
    }
    free(att);
}

/* z [bs*T, H*Dh] from qkv [bs*T, 3*H*Dh], one (sequence, head) at a time on the pool, each on
 * single-threaded OpenBLAS; the pattern [bs, H, T, T] too when pattern is not NULL. Returns -1 when
 * out of memory. */
static int attention(float *z, float *pattern, const float *qkv, int64_t bs, int64_t T, int64_t H, int64_t Dh,
                     char *err, size_t errlen) {
    att_job j = {z, qkv, pattern, T, H, Dh, T, 0};
    saefw_parallel_for_blas1(bs * H, attention_heads, &j);
    return j.failed ? saefw_errf(err, errlen, "forward: out of memory for the attention pattern") : 0;
}

typedef struct {
    float *y;
    const float *x;
} vec_job;

/* x = 0.5 x (1 + erf(x / sqrt 2)), in place. */
static void gelu_range(void *ctx, int64_t i0, int64_t i1) {
    float *x = ((vec_job *)ctx)->y;
    const float r2 = 0.70710678118654752f;
    for (int64_t i = i0; i < i1; i++)
        x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * r2));
}

static void gelu(float *x, int64_t n) {
    vec_job j = {x, NULL};
    saefw_parallel_for(n, gelu_range, &j);
}

static void add_range(void *ctx, int64_t i0, int64_t i1) {
    const vec_job *j = ctx;
    for (int64_t i = i0; i < i1; i++)
        j->y[i] += j->x[i];
}

static void add_inplace(float *y, const float *x, int64_t n) {
    vec_job j = {y, x};
    saefw_parallel_for(n, add_range, &j);
}

typedef struct {
    float *resid;
    const float *W_E, *W_pos;
    const int32_t *tokens; /* the chunk's first token */
    int64_t T, dm;
} embed_job;

static void embed_rows(void *ctx, int64_t r0, int64_t r1) {
    const embed_job *j = ctx;
    for (int64_t r = r0; r < r1; r++) {
        const float *e = j->W_E + (int64_t)j->tokens[r] * j->dm, *p = j->W_pos + (r % j->T) * j->dm;
        float *x = j->resid + r * j->dm;
        for (int64_t i = 0; i < j->dm; i++)
            x[i] = e[i] + p[i];
    }
}

/* Folds logits x [n] into a row's running log-sum-exp (*mx, *sum): the sum goes through eight float
 * lanes, emptied into doubles every 256 entries, in a fixed order. exp(x - max) is computed eight at a
 * time as 2^k e^r with r in [-ln2/2, ln2/2] and e^r by its Taylor series to r^6 (relative error below
 * 2e-7), and is 0 below -87 (where float32's exp leaves the normal range). */
SAEFW_KERNEL static void lse_fold(float *restrict x, const float *restrict bias, int64_t n, float *mx, double *sum) {
    float m = *mx;
    if (bias)
        for (int64_t i = 0; i < n; i++)
            x[i] += bias[i];
    for (int64_t i = 0; i < n; i++)
        m = x[i] > m ? x[i] : m;
    double s = *sum;
    if (m > *mx && *mx > -INFINITY) s *= exp((double)*mx - (double)m);
    double wide[8] = {0};
    v8 lane = {0};
    int64_t i = 0;
    const v8 mv = (v8){0} + m;
    const v8 shifter = (v8){0} + 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    const v8 floor_v = (v8){0} - 87.0f;
    for (; i + 8 <= n; i += 8) {
        v8 d = *(const v8u *)(x + i) - mv;
        const v8i under = d < -87.0f;
        d = (v8)(((v8i)d & ~under) | ((v8i)floor_v & under));
        const v8 kf = (d * 1.44269504f + shifter) - shifter;
        const v8 r = (d - kf * 0.693359375f) - kf * -2.12194440e-4f;
        v8 p = (v8){0} + (1.0f / 720.0f);
        p = p * r + (1.0f / 120.0f);
        p = p * r + (1.0f / 24.0f);
        p = p * r + (1.0f / 6.0f);
        p = p * r + 0.5f;
        p = p * r + 1.0f;
        p = p * r + 1.0f;
        const v8i bits = (__builtin_convertvector(kf, v8i) + 127) << 23;
        lane += (v8)((v8i)(p * (v8)bits) & ~under);
        if ((i & 255) == 248) {
            for (int k = 0; k < 8; k++) wide[k] += lane[k];
            lane = (v8){0};
        }
    }
    for (int k = 0; k < 8; k++) wide[k] += lane[k];
    double tail = 0;
    for (; i < n; i++) tail += exp((double)x[i] - (double)m);
    s += (((wide[0] + wide[1]) + (wide[2] + wide[3])) + ((wide[4] + wide[5]) + (wide[6] + wide[7]))) + tail;
    *mx = m;
    *sum = s;
}

typedef struct {
    saefw_model_work *w;
    float *logits;       /* [n, ld], columns [v0, v0 + nb) of the vocabulary */
    const float *bias;   /* b_U from column v0, added here (NULL: already in the logits) */
    int64_t ld, v0, nb, V, row0, T;
    const int32_t *tokens;
} lse_job;

/* Rows [r0, r1): fold one block of columns into the running log-sum-exp; keep the target's logit. A
 * sequence's last position has no target and is skipped. */
static void lse_rows(void *ctx, int64_t r0, int64_t r1) {
    const lse_job *j = ctx;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t g = j->row0 + r;
        if (g % j->T == j->T - 1) continue;
        if (j->v0 == 0) {
            j->w->lse_max[r] = -INFINITY;
            j->w->lse_sum[r] = 0;
        }
        float *x = j->logits + r * j->ld;
        lse_fold(x, j->bias, j->nb, &j->w->lse_max[r], &j->w->lse_sum[r]);
        const int64_t tg = j->tokens[g + 1];
        if (tg >= j->v0 && tg < j->v0 + j->nb) j->w->lse_tgt[r] = x[tg - j->v0];
    }
}

/* Sum over the chunk's n rows of -log_softmax(row)[next token], skipping each sequence's last
 * position, from the running log-sum-exps; rows summed in order. */
static double nll_total(const saefw_model_work *w, int64_t n, int64_t row0, int64_t T) {
    double total = 0;
    for (int64_t r = 0; r < n; r++)
        if ((row0 + r) % T != T - 1) total += log(w->lse_sum[r]) + (double)w->lse_max[r] - (double)w->lse_tgt[r];
    return total;
}

/* ------------------------------------------------------------------------------------------------
 * Forward */

typedef struct {
    const saefw_forward_opts *o;
    int64_t row0; /* first row of this chunk in the batch */
    int64_t rows;
    char *err;
    size_t errlen;
} hook_ctx;

static int same_hook(saefw_hook a, saefw_hook_kind kind, int layer) { return a.kind == kind && a.layer == layer; }

/* The whole-batch output of the capture at (kind, layer), or NULL if that site is not captured
 * (check_opts has made sure a site is captured at most once). */
static float *capture_out(const saefw_forward_opts *o, saefw_hook_kind kind, int layer) {
    if (o->capture && same_hook(*o->capture, kind, layer)) return o->capture_out;
    for (int i = 0; i < o->n_captures; i++)
        if (same_hook(o->captures[i].hook, kind, layer)) return o->captures[i].out;
    return NULL;
}

/* 1 when the forward stops after capturing (kind, layer). */
static int stop_here(const saefw_forward_opts *o, saefw_hook_kind kind, int layer) {
    return o->stop_after_capture && same_hook(*o->capture, kind, layer);
}

/* Capture the LayerNorm's normalized input (before gain and bias) of in [rows, d]: computed only
 * when captured. Returns 1 to stop, else 0. */
static int at_ln_hook(const hook_ctx *c, saefw_hook_kind kind, int layer, const float *in, int64_t d, float eps) {
    float *dst = capture_out(c->o, kind, layer);
    if (!dst) return 0;
    layernorm(dst + c->row0 * d, in, NULL, NULL, c->rows, d, eps);
    return stop_here(c->o, kind, layer);
}

/* Capture queries, keys and values from qkv [rows, 3*hd] (the column blocks of W_qkv) as [rows, hd]
 * each. Returns 1 to stop, else 0. */
static int at_qkv_hooks(const hook_ctx *c, int layer, const float *qkv, int64_t hd) {
    static const saefw_hook_kind kinds[3] = {SAEFW_HOOK_ATTN_Q, SAEFW_HOOK_ATTN_K, SAEFW_HOOK_ATTN_V};
    int stop = 0;
    for (int s = 0; s < 3; s++) {
        float *dst = capture_out(c->o, kinds[s], layer);
        if (!dst) continue;
        for (int64_t r = 0; r < c->rows; r++)
            memcpy(dst + (c->row0 + r) * hd, qkv + r * 3 * hd + s * hd, sizeof(float) * (size_t)hd);
        stop |= stop_here(c->o, kinds[s], layer);
    }
    return stop;
}

/* Capture, then intervene, at hook (kind, layer) on acts [rows, width]. Returns 1 to stop the
 * chunk here, 0 to go on, -1 on error. */
static int at_hook(const hook_ctx *c, saefw_hook_kind kind, int layer, float *acts, int64_t width) {
    const saefw_forward_opts *o = c->o;
    float *dst = capture_out(o, kind, layer);
    if (dst) {
        memcpy(dst + c->row0 * width, acts, sizeof(float) * (size_t)(c->rows * width));
        if (stop_here(o, kind, layer)) return 1;
    }
    const saefw_intervention *iv = o->intervention;
    if (!iv || iv->mode == SAEFW_INTERVENE_NONE || iv->hook.kind != kind || iv->hook.layer != layer) return 0;
    switch (iv->mode) {
    case SAEFW_INTERVENE_ZERO:
        memset(acts, 0, sizeof(float) * (size_t)(c->rows * width));
        break;
    case SAEFW_INTERVENE_MEAN:
        for (int64_t r = 0; r < c->rows; r++)
            memcpy(acts + r * width, iv->mean, sizeof(float) * (size_t)width);
        break;
    case SAEFW_INTERVENE_REPLACE:
        if (iv->fn(iv->ud, acts, c->rows, width, c->err, c->errlen) != 0) {
            char nm[96];
            saefw_hook_name(iv->hook, nm, sizeof nm);
            return saefw_err_prefix(c->err, c->errlen, "intervention at %s", nm);
        }
        break;
    default:
        break;
    }
    return 0;
}

static int check_opts(const saefw_model *m, const saefw_forward_opts *o, int64_t T, char *err, size_t errlen) {
    if (o->capture) {
        if (check_hook(m, *o->capture, err, errlen) != 0) return -1;
        if (!o->capture_out) return saefw_errf(err, errlen, "forward: capture hook given without capture_out");
    }
    if (o->n_captures < 0 || (o->n_captures > 0 && !o->captures))
        return saefw_errf(err, errlen, "forward: %d captures without a list", o->n_captures);
    for (int i = 0; i < o->n_captures; i++) {
        const saefw_capture *cp = &o->captures[i];
        if (check_hook(m, cp->hook, err, errlen) != 0) return -1;
        char nm[96];
        saefw_hook_name(cp->hook, nm, sizeof nm);
        if (!cp->out) return saefw_errf(err, errlen, "forward: capture at %s without an output", nm);
        int twice = o->capture && same_hook(*o->capture, cp->hook.kind, cp->hook.layer);
        for (int k = 0; k < i; k++)
            twice |= same_hook(o->captures[k].hook, cp->hook.kind, cp->hook.layer);
        if (twice) return saefw_errf(err, errlen, "forward: %s is captured twice", nm);
    }
    if (o->stop_after_capture) {
        if (!o->capture) return saefw_errf(err, errlen, "forward: stop_after_capture without a capture hook");
        if (o->logits_out || o->loss_out)
            return saefw_errf(err, errlen, "forward: stop_after_capture leaves no logits or loss to return");
    }
    const saefw_intervention *iv = o->intervention;
    if (iv && iv->mode != SAEFW_INTERVENE_NONE) {
        if (check_hook(m, iv->hook, err, errlen) != 0) return -1;
        if (iv->mode == SAEFW_INTERVENE_MEAN && !iv->mean)
            return saefw_errf(err, errlen, "forward: mean ablation without a mean vector");
        if (iv->mode == SAEFW_INTERVENE_REPLACE && !iv->fn)
            return saefw_errf(err, errlen, "forward: replace intervention without a function");
        if (iv->mode != SAEFW_INTERVENE_ZERO && iv->mode != SAEFW_INTERVENE_MEAN && iv->mode != SAEFW_INTERVENE_REPLACE)
            return saefw_errf(err, errlen, "forward: unknown intervention mode %d", (int)iv->mode);
        if (iv->hook.kind > SAEFW_HOOK_RESID_POST && iv->hook.kind != SAEFW_HOOK_MLP_PRE &&
            iv->hook.kind != SAEFW_HOOK_ATTN_Z) {
            char nm[96];
            saefw_hook_name(iv->hook, nm, sizeof nm);
            return saefw_errf(err, errlen,
                              "forward: %s can be read but not intervened on (interventions: the residual and MLP "
                              "sites, mlp.hook_pre and attn.hook_z)",
                              nm);
        }
    }
    if (o->loss_out && T < 2)
        return saefw_errf(err, errlen, "forward: the loss needs at least 2 positions (T = %" PRId64 ")", T);
    return 0;
}

int saefw_model_forward(const saefw_model *m, saefw_model_work *w, const int32_t *tokens, int64_t B, int64_t T,
                        const saefw_forward_opts *o, char *err, size_t errlen) {
    static const saefw_forward_opts none;
    if (!o) o = &none;
    if (!m || !w || !tokens) return saefw_errf(err, errlen, "forward: NULL model, work or tokens");
    const saefw_model_cfg *c = &m->cfg;
    if (w->cfg.n_layers != c->n_layers || w->cfg.d_model != c->d_model || w->cfg.d_mlp != c->d_mlp ||
        w->cfg.d_head != c->d_head || w->cfg.n_heads != c->n_heads || w->cfg.d_vocab != c->d_vocab)
        return saefw_errf(err, errlen, "forward: the work space was sized for a different model");
    if (B < 1 || T < 1) return saefw_errf(err, errlen, "forward: empty batch [%" PRId64 ", %" PRId64 "]", B, T);
    if (T > c->n_ctx) return saefw_errf(err, errlen, "forward: sequence length %" PRId64 " > n_ctx %d", T, c->n_ctx);
    if (T > w->max_seq)
        return saefw_errf(err, errlen, "forward: sequence length %" PRId64 " > the work space's max_seq %" PRId64, T,
                          w->max_seq);
    for (int64_t i = 0; i < B * T; i++)
        if (tokens[i] < 0 || tokens[i] >= c->d_vocab)
            return saefw_errf(err, errlen,
                              "forward: token %" PRId32 " at [%" PRId64 ", %" PRId64 "] is outside [0, d_vocab = %d)",
                              tokens[i], i / T, i % T, c->d_vocab);
    if (check_opts(m, o, T, err, errlen) != 0) return -1;

    const int64_t dm = c->d_model, H = c->n_heads, Dh = c->d_head, hd = H * Dh, dmlp = c->d_mlp, V = c->d_vocab;
    const int need_logits = o->logits_out || o->loss_out;
    double nll = 0;
    for (int64_t b0 = 0; b0 < B; b0 += w->chunk_seqs) {
        /* A chunk is the unit of work a SIGINT or SIGTERM waits for (util.h's stop flag). */
        if (saefw_stop_requested()) return saefw_stop_errf(err, errlen, "model forward");
        int64_t bs = B - b0 < w->chunk_seqs ? B - b0 : w->chunk_seqs;
        int64_t n = bs * T, row0 = b0 * T;
        hook_ctx hc = {o, row0, n, err, errlen};
        embed_job ej = {w->resid, m->W_E, m->W_pos, tokens + row0, T, dm};
        saefw_parallel_for(n, embed_rows, &ej);
        int rc = 0;
        for (int L = 0; L < c->n_layers && rc == 0; L++) {
            const layer_weights *lw = &m->layers[L];
            if ((rc = at_hook(&hc, SAEFW_HOOK_RESID_PRE, L, w->resid, dm)) != 0) break;
            if ((rc = at_ln_hook(&hc, SAEFW_HOOK_LN1_NORMALIZED, L, w->resid, dm, c->ln_eps)) != 0) break;
            layernorm(w->ln, w->resid, lw->ln1_w, lw->ln1_b, n, dm, c->ln_eps);
            linear(w->qkv, w->ln, lw->W_qkv, lw->b_qkv, n, dm, 3 * hd, 3 * hd);
            if ((rc = at_qkv_hooks(&hc, L, w->qkv, hd)) != 0) break;
            float *pattern = capture_out(o, SAEFW_HOOK_ATTN_PATTERN, L);
            if (attention(w->z, pattern ? pattern + b0 * H * T * T : NULL, w->qkv, bs, T, H, Dh, err, errlen) != 0)
                return -1;
            if (pattern && (rc = stop_here(o, SAEFW_HOOK_ATTN_PATTERN, L)) != 0) break;
            if ((rc = at_hook(&hc, SAEFW_HOOK_ATTN_Z, L, w->z, hd)) != 0) break;
            linear(w->out, w->z, lw->W_O, lw->b_O, n, hd, dm, dm);
            add_inplace(w->resid, w->out, n * dm);
            if ((rc = at_hook(&hc, SAEFW_HOOK_RESID_MID, L, w->resid, dm)) != 0) break;
            if ((rc = at_ln_hook(&hc, SAEFW_HOOK_LN2_NORMALIZED, L, w->resid, dm, c->ln_eps)) != 0) break;
            layernorm(w->ln, w->resid, lw->ln2_w, lw->ln2_b, n, dm, c->ln_eps);
            linear(w->mlp, w->ln, lw->W_in, lw->b_in, n, dm, dmlp, dmlp);
            if ((rc = at_hook(&hc, SAEFW_HOOK_MLP_PRE, L, w->mlp, dmlp)) != 0) break;
            gelu(w->mlp, n * dmlp);
            if ((rc = at_hook(&hc, SAEFW_HOOK_MLP_POST, L, w->mlp, dmlp)) != 0) break;
            linear(w->out, w->mlp, lw->W_out, lw->b_out, n, dmlp, dm, dm);
            if ((rc = at_hook(&hc, SAEFW_HOOK_MLP_OUT, L, w->out, dm)) != 0) break;
            add_inplace(w->resid, w->out, n * dm);
            rc = at_hook(&hc, SAEFW_HOOK_RESID_POST, L, w->resid, dm);
        }
        if (rc < 0) return -1;
        if (rc > 0) continue;
        if (at_ln_hook(&hc, SAEFW_HOOK_LN_FINAL_NORMALIZED, 0, w->resid, dm, c->ln_eps) != 0 || !need_logits) continue;
        layernorm(w->ln, w->resid, m->lnf_w, m->lnf_b, n, dm, c->ln_eps);
        if (o->logits_out) {
            float *lg = o->logits_out + row0 * V;
            linear(lg, w->ln, m->W_U, m->b_U, n, dm, V, V);
            if (o->loss_out) {
                lse_job j = {w, lg, NULL, V, 0, V, V, row0, T, tokens};
                saefw_parallel_for(n, lse_rows, &j);
                nll += nll_total(w, n, row0, T);
            }
        } else {
            for (int64_t v0 = 0; v0 < V; v0 += w->vocab_block) {
                if (saefw_stop_requested()) return saefw_stop_errf(err, errlen, "model loss");
                const int64_t nb = V - v0 < w->vocab_block ? V - v0 : w->vocab_block;
                /* b_U is added in the log-sum-exp pass rather than written first under the product. */
                saefw_linear_blocks(n, nb, dm, w->ln, dm, m->W_U + v0, V, NULL, w->logits, nb);
                lse_job j = {w, w->logits, m->b_U + v0, nb, v0, nb, V, row0, T, tokens};
                saefw_parallel_for(n, lse_rows, &j);
            }
            nll += nll_total(w, n, row0, T);
        }
    }
    if (o->loss_out) *o->loss_out = nll / (double)(B * (T - 1));
    return 0;
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
