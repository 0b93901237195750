/* The Lua binding of the feature analysis: saefw.features{...} returns the report's data as a table
 * and, with `out`, writes the report folder too. */
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

#include "features_report.h"
#include "lua_features.h"
#include "tokenizer.h"
#include "lua_saefw.h"
#include "lua_util.h"

static void set_num(lua_State *L, const char *k, double v) {
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

static void set_int(lua_State *L, const char *k, int64_t v) {
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

static void push_tok(lua_State *L, const saefw_token_decoder *d, int32_t id) {
    char buf[1024];
    size_t n = saefw_token_text(d, id, buf, sizeof buf);
    lua_pushlstring(L, buf, n);
}

static void push_example(lua_State *L, const saefw_token_decoder *d, const saefw_feature_example *e) {
    lua_createtable(L, 0, 5);
    set_num(L, "max", e->max);
    set_int(L, "pos", e->at);
    set_int(L, "stream_pos", e->pos);
    lua_createtable(L, e->n, 0);
    for (int i = 0; i < e->n; i++) {
        push_tok(L, d, e->tokens[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "tokens");
    lua_createtable(L, e->n, 0);
    for (int i = 0; i < e->n; i++) {
        lua_pushnumber(L, e->acts[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "acts");
}

static void push_logits(lua_State *L, const saefw_token_decoder *d, int n, const int32_t *ids, const float *vals) {
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_createtable(L, 0, 3);
        set_int(L, "id", ids[i]);
        push_tok(L, d, ids[i]);
        lua_setfield(L, -2, "str");
        set_num(L, "value", vals[i]);
        lua_rawseti(L, -2, i + 1);
    }
}

/* One feature with the fields of a report shard's feature. */
static void push_feature(lua_State *L, const saefw_token_decoder *d, int64_t i, const saefw_feature_info *fi) {
    lua_createtable(L, 0, 12);
    set_int(L, "i", i);
    set_num(L, "density", fi->density);
    set_num(L, "max_act", fi->max_act);
    set_num(L, "mean_act", fi->mean_act);
    set_int(L, "n_nonzero", fi->n_nonzero);
    lua_createtable(L, 0, 2);
    lua_createtable(L, fi->n_hist + 1, 0);
    for (int b = 0; fi->n_hist > 0 && b <= fi->n_hist; b++) {
        lua_pushnumber(L, b * fi->hist_width);
        lua_rawseti(L, -2, b + 1);
    }
    lua_setfield(L, -2, "edges");
    lua_createtable(L, fi->n_hist, 0);
    for (int b = 0; b < fi->n_hist; b++) {
        lua_pushinteger(L, (lua_Integer)fi->hist[b]);
        lua_rawseti(L, -2, b + 1);
    }
    lua_setfield(L, -2, "counts");
    lua_setfield(L, -2, "act_hist");
    push_logits(L, d, fi->n_logits, fi->pos_ids, fi->pos_values);
    lua_setfield(L, -2, "top_logits");
    push_logits(L, d, fi->n_logits, fi->neg_ids, fi->neg_values);
    lua_setfield(L, -2, "bottom_logits");
    lua_createtable(L, fi->n_top, 0);
    for (int k = 0; k < fi->n_top; k++) {
        push_example(L, d, &fi->top[k]);
        lua_rawseti(L, -2, k + 1);
    }
    lua_setfield(L, -2, "examples");
    lua_createtable(L, fi->n_bands, 0);
    for (int b = 0; b < fi->n_bands; b++) {
        const saefw_feature_band *bd = &fi->bands[b];
        lua_createtable(L, 0, 4);
        set_num(L, "lo", bd->lo);
        set_num(L, "hi", bd->hi);
        set_int(L, "seen", bd->seen);
        lua_createtable(L, bd->n, 0);
        for (int k = 0; k < bd->n; k++) {
            push_example(L, d, &bd->ex[k]);
            lua_rawseti(L, -2, k + 1);
        }
        lua_setfield(L, -2, "examples");
        lua_rawseti(L, -2, b + 1);
    }
    lua_setfield(L, -2, "quantiles");
    if (fi->neuron_class >= 0) {
        lua_pushstring(L, fi->neuron_class == 1 ? "1-sparse" : fi->neuron_class == 10 ? "10-sparse" : "dense");
        lua_setfield(L, -2, "neuron_sparsity");
    }
}

typedef struct {
    saefw_features_job job;
    saefw_features *f;
    int open;
    saefw_tokenizer *tokenizer; /* the model's, for an SAE passed as an object */
} lfeat_state;

/* Frees the job and the results when the call fails (a Lua error skips the C cleanup). */
static void state_release(lfeat_state *s) {
    saefw_features_free(s->f);
    s->f = NULL;
    if (s->open) saefw_features_job_close(&s->job);
    s->open = 0;
    saefw_tokenizer_free(s->tokenizer);
    s->tokenizer = NULL;
}

static int state_gc(lua_State *L) {
    state_release(lua_touserdata(L, 1));
    return 0;
}

/* saefw.features{sae=, model=, tokens=, site=, layer=, n_tokens=, top_k=, seed=, out=DIR, quiet=,
 * summary_only=}: sae a checkpoint path (model, hook and tokens then default from its cfg.json; model
 * and tokens may be given as a name and a path) or an SAE object with a model object, a tokens object
 * and the site. Returns the analysis as a table (features[i + 1] is feature i, with the fields of a
 * report shard's feature); with out, the report folder is written too and `path` names its
 * index.html. */
static int l_features(lua_State *L) {
    static const char *const keys[] = {"sae",   "model", "tokens", "site",  "layer",        "n_tokens",
                                       "top_k", "seed",  "out",    "quiet", "summary_only", NULL};
    const char *fn = "saefw.features";
    saefw_lua_check_table(L, 1, fn);
    saefw_lua_check_keys(L, 1, fn, keys);
    const char *out = saefw_lua_opt_string(L, 1, fn, "out", NULL);
    int quiet = saefw_lua_opt_bool(L, 1, fn, "quiet", 0),
        summary_only = saefw_lua_opt_bool(L, 1, fn, "summary_only", 0);
    saefw_features_opts o;
    saefw_features_default_opts(&o);
    o.n_tokens = saefw_lua_opt_int(L, 1, fn, "n_tokens", 0, 0);
    o.top_k = (int)saefw_lua_opt_int(L, 1, fn, "top_k", o.top_k, 1);
    o.seed = (uint64_t)saefw_lua_opt_int(L, 1, fn, "seed", (int64_t)o.seed, 0);

    lfeat_state *s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, state_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    char err[2048];
    const saefw_sae *sae;
    saefw_model *model;
    saefw_tokens *tok;
    saefw_hook hook;
    const char *ckpt = "", *model_name, *hook_name;
    char hname[128];
    saefw_token_decoder bytes_dec, *dec = &bytes_dec;
    lua_getfield(L, 1, "sae");
    if (lua_type(L, -1) == LUA_TSTRING) {
        ckpt = lua_tostring(L, -1);
        const char *mname = saefw_lua_opt_string(L, 1, fn, "model", NULL),
                   *data = saefw_lua_opt_string(L, 1, fn, "tokens", NULL);
        s->open = 1;
        if (saefw_features_job_open(&s->job, ckpt, mname, data, err, sizeof err) != 0)
            return saefw_lua_error(L, "%s: %s", fn, err);
        sae = &s->job.sae;
        model = s->job.model;
        tok = s->job.tokens;
        hook = s->job.hook;
        model_name = s->job.model_name;
        hook_name = s->job.hook_name;
        dec = &s->job.dec;
    } else {
        if (lua_isnil(L, -1))
            return saefw_lua_error(L, "%s: field 'sae' is required (a checkpoint path or an SAE)", fn);
        sae = saefw_lua_check_sae(L, -1);
        lua_getfield(L, 1, "model");
        model = saefw_lua_check_model(L, -1);
        lua_getfield(L, -1, "name");
        model_name = lua_tostring(L, -1) ? lua_tostring(L, -1) : "";
        lua_getfield(L, 1, "tokens");
        tok = saefw_lua_check_tokens(L, -1);
        const char *site = saefw_lua_opt_string(L, 1, fn, "site", NULL);
        if (!site)
            return saefw_lua_error(
                L, "%s: field 'site' is required with an SAE object (e.g. \"blocks.0.mlp.hook_post\")", fn);
        int layer = (int)saefw_lua_opt_int(L, 1, fn, "layer", strncmp(site, "blocks.", 7) ? 0 : -1, -1);
        if (saefw_model_hook_resolve(model, site, layer, &hook, err, sizeof err) != 0)
            return saefw_lua_error(L, "%s: %s", fn, err);
        saefw_hook_name(hook, hname, sizeof hname);
        hook_name = hname;
        char terr[1024];
        saefw_token_decoder_for_model(&bytes_dec, model_name, strcmp(model_name, "tiny-1l") ? -1 : 256, &s->tokenizer,
                                      terr, sizeof terr);
    }
    if (!dec->token_bytes && !quiet)
        fprintf(stderr, "saefw.features: no tokenizer for %s: tokens are shown as ids (#1234)\n", model_name);
    if (saefw_features_run(model, tok, hook, sae, &o, &s->f, err, sizeof err) != 0)
        return saefw_lua_error(L, "%s: %s", fn, err);
    if (out) {
        saefw_report_opts ro;
        memset(&ro, 0, sizeof ro);
        ro.checkpoint = ckpt;
        ro.model_name = model_name;
        ro.hook_name = hook_name;
        ro.dec = dec;
        if (saefw_features_write_report(s->f, &ro, out, err, sizeof err) != 0)
            return saefw_lua_error(L, "%s: %s", fn, err);
    }
    const saefw_features *f = s->f;
    lua_createtable(L, 0, 12);
    lua_pushstring(L, SAEFW_FEATURES_SCHEMA);
    lua_setfield(L, -2, "schema");
    set_int(L, "d_in", f->d_in);
    set_int(L, "d_sae", f->d_sae);
    set_int(L, "tokens_analyzed", f->tokens_analyzed);
    set_int(L, "top_k", f->top_k);
    set_int(L, "context_before", f->ctx_before);
    set_int(L, "context_after", f->ctx_after);
    set_int(L, "seed", (int64_t)f->seed);
    lua_pushstring(L, model_name);
    lua_setfield(L, -2, "model_name");
    lua_pushstring(L, hook_name);
    lua_setfield(L, -2, "hook_name");
    if (dec->token_bytes && dec->name) {
        lua_pushstring(L, dec->name);
        lua_setfield(L, -2, "tokenizer");
    }
    if (f->one_sparse >= 0) {
        lua_createtable(L, 0, 3);
        set_int(L, "one_sparse", f->one_sparse);
        set_int(L, "ten_sparse", f->ten_sparse);
        set_int(L, "dense", f->dense);
        lua_setfield(L, -2, "neuron_sparsity");
    }
    if (out) {
        lua_pushfstring(L, "%s/index.html", out);
        lua_setfield(L, -2, "path");
    }
    int64_t dead = 0;
    for (int64_t i = 0; i < f->d_sae; i++) dead += f->f[i].n_nonzero == 0;
    set_int(L, "dead", dead);
    if (!summary_only) {
        lua_createtable(L, (int)f->d_sae, 0);
        for (int64_t i = 0; i < f->d_sae; i++) {
            push_feature(L, dec, i, &f->f[i]);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        lua_setfield(L, -2, "features");
    }
    state_release(s);
    return 1;
}

void saefw_lua_register_features(lua_State *L) {
    lua_pushcfunction(L, l_features);
    lua_setfield(L, -2, "features");
}
