/* The model host's configuration and hook sites: parsing config.json (or a safetensors file's
 * metadata) into a checked config, the vocabulary of TransformerLens hook names, and resolving a name
 * to a hook of a given model. */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "util.h"

/* Largest accepted dimension: keeps every product of two dimensions far inside int64 and every
 * sgemm size inside int. */
#define DIM_MAX (1 << 24)

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
int saefw_model_cfg_check(const saefw_model_cfg *c, const char *what, char *err, size_t errlen) {
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
        if (cJSON_IsNumber(eps)) e = eps->valuedouble;
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
    if (saefw_model_cfg_check(&c, what, err, errlen) != 0) return -1;
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
int saefw_model_cfg_from_metadata(const saefw_tensorfile *tf, const char *path, saefw_model_cfg *cfg, char *err,
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
int saefw_model_cfg_from_sibling(const char *path, saefw_model_cfg *cfg, char *err, size_t errlen) {
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

int saefw_model_check_hook(const saefw_model *m, saefw_hook h, char *err, size_t errlen) {
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
    if (saefw_model_check_hook(m, h, err, errlen) != 0) return -1;
    *out = h;
    return 0;
}
