/* Lua binding of the SAE (saefw.SAE): saefw.sae, saefw.load_sae, sae:save, sae:tensor, and the
 * functions that measure one on a source: saefw.frequencies, saefw.mmcs, saefw.evaluate. */
#include <lauxlib.h>
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "lua_classes.h"
#include "lua_saefw.h"
#include "lua_util.h"
#include "rng.h"
#include "sae.h"
#include "sae_resolve.h"
#include "source.h"
#include "train.h"

/* ---- SAE ---- */

lsae *saefw_lua_check_lsae(lua_State *L, int idx) {
    lsae *s = luaL_testudata(L, idx, MT_SAE);
    if (!s) saefw_lua_error(L, "expected an SAE (from saefw.sae or saefw.load_sae), got %s", luaL_typename(L, idx));
    if (!s->alive) saefw_lua_error(L, "this SAE was closed");
    return s;
}

static lsae *new_sae(lua_State *L) {
    lsae *s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    luaL_setmetatable(L, MT_SAE);
    return s;
}

/* Whether field `key` of the table at idx is set. */
static int has_field(lua_State *L, int idx, const char *key) {
    int set = lua_getfield(L, idx, key) != LUA_TNIL;
    lua_pop(L, 1);
    return set;
}

/* The architecture options of saefw.sae{}: each paper's defaults (saefw_sae_arch_defaults), and an
 * option of another architecture is an error. */
static void arch_options(lua_State *L, int64_t d_in, saefw_sae_arch_cfg *cfg) {
    char err[512];
    const char *name = saefw_lua_opt_string(L, 1, "saefw.sae", "arch", "relu");
    saefw_sae_arch arch;
    if (saefw_sae_arch_parse(name, &arch, err, sizeof err) != 0) saefw_lua_error(L, "saefw.sae: field %s", err);
    saefw_sae_arch_defaults(cfg, arch, d_in);
    static const struct {
        const char *key;
        unsigned archs; /* bit per saefw_sae_arch */
    } own[] = {{"k", 1u << SAEFW_ARCH_TOPK | 1u << SAEFW_ARCH_BATCHTOPK},
               {"k_aux", 1u << SAEFW_ARCH_TOPK | 1u << SAEFW_ARCH_BATCHTOPK},
               {"aux_coeff", 1u << SAEFW_ARCH_TOPK | 1u << SAEFW_ARCH_BATCHTOPK},
               {"dead_steps", 1u << SAEFW_ARCH_TOPK | 1u << SAEFW_ARCH_BATCHTOPK},
               {"theta_rate", 1u << SAEFW_ARCH_BATCHTOPK},
               {"bandwidth", 1u << SAEFW_ARCH_JUMPRELU},
               {"threshold", 1u << SAEFW_ARCH_JUMPRELU},
               {"l0_coeff", 1u << SAEFW_ARCH_JUMPRELU},
               {"l1_coeff", 1u << SAEFW_ARCH_RELU | 1u << SAEFW_ARCH_GATED},
               {"enc_dtype", 1u << SAEFW_ARCH_RELU},
               {"d_out", 1u << SAEFW_ARCH_RELU},
               {"apply_b_dec_to_input", 1u << SAEFW_ARCH_RELU},
               {"l1_weighting", 1u << SAEFW_ARCH_RELU},
               {"init", 1u << SAEFW_ARCH_RELU},
               {"site_out", 1u << SAEFW_ARCH_RELU},
               {"layer_out", 1u << SAEFW_ARCH_RELU}};
    for (size_t i = 0; i < sizeof own / sizeof *own; i++)
        if (!(own[i].archs & (1u << arch)) && has_field(L, 1, own[i].key))
            saefw_lua_error(L, "saefw.sae: field '%s' does not apply to arch = \"%s\"", own[i].key, name);
    if (arch == SAEFW_ARCH_RELU) return;
    cfg->k = saefw_lua_opt_int(L, 1, "saefw.sae", "k", cfg->k, INT64_MIN);
    cfg->k_aux = saefw_lua_opt_int(L, 1, "saefw.sae", "k_aux", cfg->k_aux, INT64_MIN);
    cfg->dead_steps = saefw_lua_opt_int(L, 1, "saefw.sae", "dead_steps", cfg->dead_steps, INT64_MIN);
    cfg->aux_coeff = saefw_lua_opt_number(L, 1, "saefw.sae", "aux_coeff", cfg->aux_coeff);
    cfg->theta_rate = saefw_lua_opt_number(L, 1, "saefw.sae", "theta_rate", cfg->theta_rate);
    cfg->bandwidth = saefw_lua_opt_number(L, 1, "saefw.sae", "bandwidth", cfg->bandwidth);
    cfg->threshold = saefw_lua_opt_number(L, 1, "saefw.sae", "threshold", cfg->threshold);
    cfg->l0_coeff = saefw_lua_opt_number(L, 1, "saefw.sae", "l0_coeff", cfg->l0_coeff);
}

/* The model sites of saefw.sae{ model =, site =, layer =, site_out =, layer_out = }, resolved on the
 * model as saefw.buffer resolves them; a width of 0 means the site was not given. */
typedef struct {
    int64_t width, width_out;
    char name[96], name_out[96];
    const char *model;
} sae_sites;

static void read_sites(lua_State *L, sae_sites *s) {
    memset(s, 0, sizeof *s);
    const int site = has_field(L, 1, "site"), site_out = has_field(L, 1, "site_out");
    if (!has_field(L, 1, "model")) {
        if (site || site_out || has_field(L, 1, "layer") || has_field(L, 1, "layer_out"))
            saefw_lua_error(L, "saefw.sae: fields site / layer / site_out / layer_out need 'model' (the model "
                               "whose hook widths they give)");
        return;
    }
    if (!site) saefw_lua_error(L, "saefw.sae: field 'model' needs 'site' (the hook the SAE reads)");
    if (has_field(L, 1, "layer_out") && !site_out) saefw_lua_error(L, "saefw.sae: field 'layer_out' needs 'site_out'");
    lua_getfield(L, 1, "model");
    lmodel *m = saefw_lua_check_lmodel(L, -1);
    saefw_hook h = saefw_lua_read_hook(L, 1, "saefw.sae", m->m, "site", "layer");
    s->width = saefw_model_hook_width(m->m, h);
    saefw_hook_name(h, s->name, sizeof s->name);
    if (site_out) {
        h = saefw_lua_read_hook(L, 1, "saefw.sae", m->m, "site_out", "layer_out");
        s->width_out = saefw_model_hook_width(m->m, h);
        saefw_hook_name(h, s->name_out, sizeof s->name_out);
    }
    s->model = m->name;
    lua_pop(L, 1);
}

/* A width from field key, or the site's when the field is absent; both given must agree. */
static int64_t site_width(lua_State *L, const char *key, const char *site_key, int64_t width, const char *site,
                          const char *model) {
    if (!has_field(L, 1, key)) return width;
    int64_t d = saefw_lua_req_int(L, 1, "saefw.sae", key, 1);
    if (width > 0 && d != width)
        saefw_lua_error(L, "saefw.sae: %s = %lld does not match %s %s, whose width is %lld on model %s", key,
                        (long long)d, site_key, site, (long long)width, model);
    return d;
}

static int l_sae(lua_State *L) {
    static const char *const keys[] = {
        "d_in",         "d_sae",     "l1_coeff",  "seed",     "enc_dtype", "d_out",     "apply_b_dec_to_input",
        "l1_weighting", "init",      "arch",      "k",        "k_aux",     "aux_coeff", "dead_steps",
        "theta_rate",   "bandwidth", "threshold", "l0_coeff", "model",     "site",      "layer",
        "site_out",     "layer_out", NULL};
    saefw_lua_check_table(L, 1, "saefw.sae");
    saefw_lua_check_keys(L, 1, "saefw.sae", keys);
    sae_sites sites;
    read_sites(L, &sites);
    int64_t d_in = sites.width > 0 ? site_width(L, "d_in", "site", sites.width, sites.name, sites.model)
                                   : saefw_lua_req_int(L, 1, "saefw.sae", "d_in", 1);
    int64_t d_sae = saefw_lua_req_int(L, 1, "saefw.sae", "d_sae", 1);
    saefw_sae_arch_cfg arch;
    arch_options(L, d_in, &arch);
    double l1 = saefw_lua_opt_number(L, 1, "saefw.sae", "l1_coeff",
                                     arch.arch == SAEFW_ARCH_RELU || arch.arch == SAEFW_ARCH_GATED ? 3e-4 : 0);
    if (l1 < 0) saefw_lua_error(L, "saefw.sae: field 'l1_coeff' must be >= 0");
    int64_t seed = saefw_lua_opt_int(L, 1, "saefw.sae", "seed", SAEFW_DEFAULT_SEED, 0);
    char err[512];
    if (saefw_sae_arch_check(&arch, d_sae, err, sizeof err) != 0) return saefw_lua_error(L, "saefw.sae: %s", err);
    saefw_enc_dtype enc;
    if (saefw_enc_dtype_parse(saefw_lua_opt_string(L, 1, "saefw.sae", "enc_dtype", "fp32"), &enc, err, sizeof err) != 0)
        return saefw_lua_error(L, "saefw.sae: field %s", err);
    /* The 2024 recipe's and the transcoder's options (docs/architectures.md); d_out (or site_out) makes a
     * transcoder. */
    int64_t d_out = site_width(L, "d_out", "site_out", sites.width_out, sites.name_out, sites.model);
    if (d_out > 0 && sites.width > 0 && sites.width_out == 0)
        return saefw_lua_error(L, "saefw.sae: d_out makes a transcoder: give site_out, the site it reconstructs");
    int apply = saefw_lua_opt_bool(L, 1, "saefw.sae", "apply_b_dec_to_input", d_out == 0);
    if (d_out > 0 && apply)
        return saefw_lua_error(L, "saefw.sae: a transcoder (d_out given) needs apply_b_dec_to_input = false");
    saefw_l1_weighting weighting;
    if (saefw_l1_weighting_parse(saefw_lua_opt_string(L, 1, "saefw.sae", "l1_weighting", "plain"), &weighting, err,
                                 sizeof err) != 0)
        return saefw_lua_error(L, "saefw.sae: field %s", err);
    const char *init = saefw_lua_opt_string(L, 1, "saefw.sae", "init", "kaiming");
    if (strcmp(init, "kaiming") != 0 && strcmp(init, "april") != 0)
        return saefw_lua_error(L, "saefw.sae: field init must be \"kaiming\" or \"april\" (got '%s')", init);
    if (!strcmp(init, "april") && d_out > 0 && d_out != d_in)
        return saefw_lua_error(L,
                               "saefw.sae: init \"april\" sets W_enc = W_dec^T, which needs d_out = d_in "
                               "(got d_in %lld, d_out %lld)",
                               (long long)d_in, (long long)d_out);
    lsae *s = new_sae(L);
    if ((d_out > 0 ? saefw_sae_alloc_xy(&s->sae, d_in, d_out, d_sae, (float)l1, err, sizeof err)
                   : saefw_sae_alloc_arch(&s->sae, d_in, d_sae, (float)l1, &arch, err, sizeof err)) != 0)
        return saefw_lua_error(L, "saefw.sae: %s", err);
    s->alive = 1;
    s->sae.enc_dtype = enc;
    if (arch.arch == SAEFW_ARCH_RELU) { /* the other architectures fix these (arch_options refuses them) */
        s->sae.transcoder = d_out > 0;
        s->sae.apply_b_dec_to_input = apply;
        s->sae.l1_weighting = weighting;
    }
    if (saefw_sae_check_options(&s->sae, err, sizeof err) != 0) return saefw_lua_error(L, "saefw.%s", err);
    snprintf(s->sae.hook_name, sizeof s->sae.hook_name, "%s", sites.name);
    snprintf(s->sae.hook_name_out, sizeof s->sae.hook_name_out, "%s", sites.name_out);
    saefw_rng rng;
    saefw_rng_seed(&rng, (uint64_t)seed);
    if (!strcmp(init, "april")) saefw_sae_init_april(&s->sae, &rng);
    else saefw_sae_init_params(&s->sae, &rng);
    return 1;
}

static int sae_gc(lua_State *L) {
    lsae *s = luaL_checkudata(L, 1, MT_SAE);
    if (s->alive) saefw_sae_free(&s->sae);
    s->alive = 0;
    return 0;
}

static int sae_save(lua_State *L) {
    lsae *s = saefw_lua_check_lsae(L, 1);
    const char *dir = luaL_checkstring(L, 2);
    cJSON *cfg = NULL;
    if (!lua_isnoneornil(L, 3)) {
        if (!lua_istable(L, 3)) return saefw_lua_error(L, "sae:save: argument 2 (cfg) must be a table");
        cfg = saefw_lua_to_json(L, 3, 0);
    }
    char err[1024];
    int rc = saefw_checkpoint_save(dir, &s->sae, cfg, err, sizeof err);
    cJSON_Delete(cfg);
    if (rc != 0) return saefw_lua_error(L, "sae:save: %s", err);
    return 0;
}

/* saefw.load_sae(path) -> sae, cfg table, the local path it was read from (path may be a Hub path). */
static int l_load_sae(lua_State *L) {
    const char *spec = luaL_checkstring(L, 1);
    char path[PATH_MAX], err[1024];
    if (saefw_sae_resolve(spec, path, sizeof path, NULL, err, sizeof err) != 0)
        return saefw_lua_error(L, "saefw.load_sae: %s", err);
    lsae *s = new_sae(L);
    cJSON *cfg = NULL;
    if (saefw_checkpoint_load(path, &s->sae, &cfg, err, sizeof err) != 0)
        return saefw_lua_error(L, "saefw.load_sae: %s", err);
    s->alive = 1;
    if (saefw_checkpoint_require_l1(path, cfg, err, sizeof err) != 0) {
        cJSON_Delete(cfg);
        return saefw_lua_error(L, "saefw.load_sae: %s", err);
    }
    if (cfg) saefw_lua_push_json(L, cfg, 0);
    else lua_newtable(L);
    cJSON_Delete(cfg);
    lua_pushstring(L, path);
    return 3;
}

static int param_index(lua_State *L, const saefw_sae *sae, const char *name) {
    int i = saefw_sae_param_index(sae, name);
    if (i >= 0) return i;
    char names[128] = "";
    for (int k = 0; k < sae->n_params; k++) {
        size_t u = strlen(names);
        snprintf(names + u, sizeof names - u, "%s%s", k ? ", " : "", sae->names[k]);
    }
    return saefw_lua_error(L, "no SAE tensor named '%s' (%s)", name, names);
}

/* sae:tensor(name) -> flat Lua array copy and its shape (for analysis and tests on small SAEs). */
static int sae_tensor(lua_State *L) {
    lsae *s = saefw_lua_check_lsae(L, 1);
    int i = param_index(L, &s->sae, luaL_checkstring(L, 2));
    int64_t n = s->sae.numel[i];
    lua_createtable(L, (int)n, 0);
    for (int64_t k = 0; k < n; k++) {
        lua_pushnumber(L, s->sae.p[i][k]);
        lua_rawseti(L, -2, (lua_Integer)k + 1);
    }
    lua_createtable(L, 2, 0);
    for (int k = 0; k < s->sae.ndim[i]; k++) {
        lua_pushinteger(L, s->sae.shape[i][k]);
        lua_rawseti(L, -2, k + 1);
    }
    return 2;
}

static int sae_index(lua_State *L) {
    lsae *s = saefw_lua_check_lsae(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (!strcmp(k, "d_in")) lua_pushinteger(L, s->sae.d_in);
    else if (!strcmp(k, "d_sae")) lua_pushinteger(L, s->sae.d_sae);
    else if (!strcmp(k, "d_out")) lua_pushinteger(L, s->sae.d_out);
    else if (!strcmp(k, "apply_b_dec_to_input")) lua_pushboolean(L, s->sae.apply_b_dec_to_input);
    else if (!strcmp(k, "l1_weighting")) lua_pushstring(L, saefw_l1_weighting_name(s->sae.l1_weighting));
    else if (!strcmp(k, "l1_coeff")) lua_pushnumber(L, s->sae.l1_coeff);
    else if (!strcmp(k, "enc_dtype")) lua_pushstring(L, saefw_enc_dtype_name(s->sae.enc_dtype));
    else if (!strcmp(k, "arch")) lua_pushstring(L, saefw_sae_arch_name(s->sae.arch.arch));
    else if (!strcmp(k, "hook_name") || !strcmp(k, "hook_name_out")) {
        const char *h = k[9] ? s->sae.hook_name_out : s->sae.hook_name;
        if (h[0]) lua_pushstring(L, h);
        else lua_pushnil(L);
    } else if (!strcmp(k, "names")) {
        lua_createtable(L, s->sae.n_params, 0);
        for (int i = 0; i < s->sae.n_params; i++) {
            lua_pushstring(L, s->sae.names[i]);
            lua_rawseti(L, -2, i + 1);
        }
    } else if (!strcmp(k, "k") && (s->sae.arch.arch == SAEFW_ARCH_TOPK || s->sae.arch.arch == SAEFW_ARCH_BATCHTOPK))
        lua_pushinteger(L, s->sae.arch.k);
    else {
        luaL_getmetafield(L, 1, "methods");
        lua_getfield(L, -1, k);
    }
    return 1;
}

saefw_sae *saefw_lua_check_sae(lua_State *L, int idx) { return &saefw_lua_check_lsae(L, idx)->sae; }

/* ---- analysis ---- */

static int l_frequencies(lua_State *L) {
    lsae *s = saefw_lua_check_lsae(L, 1);
    saefw_source *src = saefw_lua_check_source(L, 2);
    lua_Integer batches = luaL_optinteger(L, 3, 5), batch = luaL_optinteger(L, 4, 4096);
    if (batches <= 0 || batch <= 0)
        return saefw_lua_error(L, "saefw.frequencies: batches and batch size must be positive");
    if (batches > SAEFW_MAX_EVAL_BATCHES)
        return saefw_lua_error(L, "saefw.frequencies: batches = %lld is more than %d", (long long)batches,
                               SAEFW_MAX_EVAL_BATCHES);
    if (src->d_act != s->sae.d_in)
        return saefw_lua_error(L, "saefw.frequencies: source width %lld does not match the SAE's d_in %lld",
                               (long long)src->d_act, (long long)s->sae.d_in);
    float *f = malloc(sizeof(float) * (size_t)s->sae.d_sae);
    if (!f) return saefw_lua_error(L, "out of memory");
    char err[512];
    int64_t rows = (int64_t)batches * saefw_eval_batch_rows(src, batch);
    if (saefw_feature_frequencies(&s->sae, src, rows, batch, f, err, sizeof err) != 0) {
        free(f);
        return saefw_lua_error(L, "saefw.frequencies: %s", err);
    }
    lua_createtable(L, (int)s->sae.d_sae, 0);
    for (int64_t j = 0; j < s->sae.d_sae; j++) {
        lua_pushnumber(L, f[j]);
        lua_rawseti(L, -2, (lua_Integer)j + 1);
    }
    free(f);
    return 1;
}

static int l_mmcs(lua_State *L) {
    lsae *s = saefw_lua_check_lsae(L, 1);
    saefw_source *src = saefw_lua_check_source(L, 2);
    int64_t n = 0;
    const float *truth = saefw_synthetic_features(src, &n);
    if (!truth) return saefw_lua_error(L, "saefw.mmcs: the source has no ground truth (only saefw.synthetic does)");
    if (src->d_act != s->sae.d_in) return saefw_lua_error(L, "saefw.mmcs: source width does not match the SAE's d_in");
    lua_pushnumber(L, saefw_mmcs(truth, n, s->sae.p[SAEFW_W_DEC], s->sae.d_sae, s->sae.d_in));
    return 1;
}

/* saefw.evaluate(sae, source, rows) -> {loss, l2_loss, l1_loss, l0, explained_variance} on fresh rows. */
static int l_evaluate(lua_State *L) {
    lsae *s = saefw_lua_check_lsae(L, 1);
    saefw_source *src = saefw_lua_check_source(L, 2);
    lua_Integer rows = luaL_optinteger(L, 3, 4096);
    if (rows <= 0 || rows > (1 << 22)) return saefw_lua_error(L, "saefw.evaluate: rows must be in 1..%d", 1 << 22);
    if (src->d_act != s->sae.d_in)
        return saefw_lua_error(L, "saefw.evaluate: source width does not match the SAE's d_in");
    saefw_sae_eval *w;
    char err[512];
    if (saefw_sae_eval_alloc(&w, &s->sae, rows, err, sizeof err) != 0)
        return saefw_lua_error(L, "saefw.evaluate: %s", err);
    float *x = malloc(sizeof(float) * (size_t)(rows * src->d_act));
    if (!x || src->sample(src, x, rows, err, sizeof err) != 0) {
        free(x);
        saefw_sae_eval_free(w);
        return saefw_lua_error(L, "saefw.evaluate: %s", x ? err : "out of memory");
    }
    saefw_sae_stats st;
    saefw_sae_eval_forward(&s->sae, w, x, rows, &st);
    free(x);
    saefw_sae_eval_free(w);
    saefw_metrics m;
    memset(&m, 0, sizeof m);
    m.loss = st.loss;
    m.l2 = st.l2;
    m.l1 = st.l1;
    m.l0 = st.l0;
    m.explained_variance = st.explained_variance;
    saefw_lua_push_metrics(L, &m);
    return 1;
}

/* saefw.sae, saefw.load_sae, saefw.frequencies, saefw.mmcs, saefw.evaluate and the SAE class. */
void saefw_lua_open_sae(lua_State *L, int module_index) {
    static const luaL_Reg sae_methods[] = {{"save", sae_save}, {"tensor", sae_tensor}, {NULL, NULL}};
    saefw_lua_new_class(L, MT_SAE, sae_gc, sae_index, sae_methods);
    static const luaL_Reg fns[] = {
        {"sae", l_sae},   {"load_sae", l_load_sae}, {"frequencies", l_frequencies},
        {"mmcs", l_mmcs}, {"evaluate", l_evaluate}, {NULL, NULL},
    };
    lua_pushvalue(L, module_index);
    luaL_setfuncs(L, fns, 0);
    lua_pop(L, 1);
}
