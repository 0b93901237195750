/* Lua binding of the model host: saefw.model (saefw.Model, model:run), saefw.tokens (saefw.Tokens),
 * saefw.model_source, saefw.recons_score, saefw.model_loss and saefw.hook_name. */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval.h"
#include "lua_classes.h"
#include "lua_saefw.h"
#include "lua_util.h"
#include "model.h"
#include "model_resolve.h"
#include "model_source.h"
#include "rng.h"
#include "token_dataset.h"
#include "tokens.h"
#include "util.h"

/* ---- the model host ---- */

lmodel *saefw_lua_check_lmodel(lua_State *L, int idx) {
    lmodel *m = luaL_testudata(L, idx, MT_MODEL);
    if (!m || !m->m) saefw_lua_error(L, "expected a model (saefw.model), got %s", luaL_typename(L, idx));
    return m;
}

ltokens *saefw_lua_check_ltokens(lua_State *L, int idx) {
    ltokens *t = luaL_testudata(L, idx, MT_TOKENS);
    if (!t || !t->t) saefw_lua_error(L, "expected tokens (saefw.tokens), got %s", luaL_typename(L, idx));
    return t;
}

saefw_model *saefw_lua_check_model(lua_State *L, int idx) { return saefw_lua_check_lmodel(L, idx)->m; }
saefw_tokens *saefw_lua_check_tokens(lua_State *L, int idx) { return saefw_lua_check_ltokens(L, idx)->t; }

static int model_gc(lua_State *L) {
    lmodel *m = luaL_checkudata(L, 1, MT_MODEL);
    saefw_model_free(m->m);
    m->m = NULL;
    return 0;
}

static int tokens_gc(lua_State *L) {
    ltokens *t = luaL_checkudata(L, 1, MT_TOKENS);
    saefw_tokens_free(t->t);
    t->t = NULL;
    return 0;
}

/* saefw.model(name_or_path): gelu-1l (and the rest of the family) from the Hugging Face cache, the
 * bundled tiny-1l, a repo id, a folder or a weights file. */
static int l_model(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    char weights[4096], config[4096], err[2048];
    if (saefw_model_resolve(name, weights, sizeof weights, config, sizeof config, err, sizeof err) != 0)
        return saefw_lua_error(L, "saefw.model: %s", err);
    saefw_model_cfg cfg, *cfgp = NULL;
    if (config[0]) {
        char *text = NULL;
        if (saefw_read_file(config, &text, NULL, err, sizeof err) != 0)
            return saefw_lua_error(L, "saefw.model: %s", err);
        int rc = saefw_model_cfg_from_json(text, config, &cfg, err, sizeof err);
        free(text);
        if (rc != 0) return saefw_lua_error(L, "saefw.model: %s", err);
        cfgp = &cfg;
    }
    lmodel *m = lua_newuserdatauv(L, sizeof *m, 0);
    memset(m, 0, sizeof *m);
    luaL_setmetatable(L, MT_MODEL);
    snprintf(m->name, sizeof m->name, "%s", name);
    if (saefw_model_load(weights, cfgp, &m->m, err, sizeof err) != 0) return saefw_lua_error(L, "saefw.model: %s", err);
    return 1;
}

static int model_index(lua_State *L) {
    lmodel *m = saefw_lua_check_lmodel(L, 1);
    const char *k = luaL_checkstring(L, 2);
    const saefw_model_cfg *c = saefw_model_config(m->m);
    if (!strcmp(k, "name")) lua_pushstring(L, m->name);
    else if (!strcmp(k, "n_layers")) lua_pushinteger(L, c->n_layers);
    else if (!strcmp(k, "d_model")) lua_pushinteger(L, c->d_model);
    else if (!strcmp(k, "d_mlp")) lua_pushinteger(L, c->d_mlp);
    else if (!strcmp(k, "d_head")) lua_pushinteger(L, c->d_head);
    else if (!strcmp(k, "n_heads")) lua_pushinteger(L, c->n_heads);
    else if (!strcmp(k, "n_ctx")) lua_pushinteger(L, c->n_ctx);
    else if (!strcmp(k, "d_vocab")) lua_pushinteger(L, c->d_vocab);
    else if (!strcmp(k, "param_bytes")) lua_pushinteger(L, (lua_Integer)saefw_model_param_bytes(m->m));
    else {
        luaL_getmetafield(L, 1, "methods");
        lua_getfield(L, -1, k);
    }
    return 1;
}

/* Token ids [B, T] of model:run's first argument: a list of ids (one row), a list of equally long
 * rows, or tokens with opts.rows (1-based row numbers). Returns a malloc'd array. */
static int32_t *run_tokens(lua_State *L, lmodel *m, int opts, int64_t *B, int64_t *T) {
    const char *fn = "model:run";
    const saefw_model_cfg *c = saefw_model_config(m->m);
    char err[1024];
    int32_t *ids = NULL;
    if (luaL_testudata(L, 2, MT_TOKENS)) {
        saefw_tokens *tok = saefw_lua_check_ltokens(L, 2)->t;
        lua_getfield(L, opts, "rows");
        if (!lua_istable(L, -1))
            saefw_lua_error(L, "%s: field 'rows' (a list of 1-based row numbers) is required with tokens", fn);
        *B = (int64_t)lua_rawlen(L, -1);
        *T = saefw_tokens_seq_len(tok);
        if (*B < 1) saefw_lua_error(L, "%s: field 'rows' is empty", fn);
        ids = malloc(sizeof(int32_t) * (size_t)(*B * *T));
        if (!ids) saefw_lua_error(L, "%s: out of memory", fn);
        for (int64_t b = 0; b < *B; b++) {
            lua_rawgeti(L, -1, (lua_Integer)b + 1);
            int ok;
            lua_Integer r = lua_tointegerx(L, -1, &ok);
            lua_pop(L, 1);
            if (!ok || r < 1 || r > saefw_tokens_rows(tok)) {
                free(ids);
                saefw_lua_error(L, "%s: rows[%lld] must be a row number from 1 to %lld", fn, (long long)b + 1,
                                (long long)saefw_tokens_rows(tok));
            }
            if (saefw_tokens_row(tok, r - 1, ids + b * *T, c->d_vocab, err, sizeof err) != 0) {
                free(ids);
                saefw_lua_error(L, "%s: %s", fn, err);
            }
        }
        lua_pop(L, 1);
        return ids;
    }
    if (!lua_istable(L, 2))
        saefw_lua_error(L, "%s: argument 1 must be token ids (a list, or a list of rows) or tokens, got %s", fn,
                        luaL_typename(L, 2));
    lua_rawgeti(L, 2, 1);
    int two_d = lua_istable(L, -1);
    lua_pop(L, 1);
    *B = two_d ? (int64_t)lua_rawlen(L, 2) : 1;
    if (two_d) {
        lua_rawgeti(L, 2, 1);
        *T = (int64_t)lua_rawlen(L, -1);
        lua_pop(L, 1);
    } else {
        *T = (int64_t)lua_rawlen(L, 2);
    }
    if (*B < 1 || *T < 1) saefw_lua_error(L, "%s: no tokens", fn);
    if (*T > c->n_ctx)
        saefw_lua_error(L, "%s: %lld tokens per row, more than the model's n_ctx %d", fn, (long long)*T, c->n_ctx);
    ids = malloc(sizeof(int32_t) * (size_t)(*B * *T));
    if (!ids) saefw_lua_error(L, "%s: out of memory", fn);
    for (int64_t b = 0; b < *B; b++) {
        if (two_d) {
            lua_rawgeti(L, 2, (lua_Integer)b + 1);
            if (!lua_istable(L, -1) || (int64_t)lua_rawlen(L, -1) != *T) {
                free(ids);
                saefw_lua_error(L, "%s: row %lld is not a list of %lld ids (every row has the first row's length)", fn,
                                (long long)b + 1, (long long)*T);
            }
        } else {
            lua_pushvalue(L, 2);
        }
        for (int64_t i = 0; i < *T; i++) {
            lua_rawgeti(L, -1, (lua_Integer)i + 1);
            int ok;
            lua_Integer v = lua_tointegerx(L, -1, &ok);
            lua_pop(L, 1);
            if (!ok || v < 0 || v >= c->d_vocab) {
                free(ids);
                if (two_d)
                    saefw_lua_error(L, "%s: token [%lld][%lld] must be an id from 0 to %d", fn, (long long)b + 1,
                                    (long long)i + 1, c->d_vocab - 1);
                saefw_lua_error(L, "%s: token [%lld] must be an id from 0 to %d", fn, (long long)i + 1, c->d_vocab - 1);
            }
            ids[b * *T + i] = (int32_t)v;
        }
        lua_pop(L, 1);
    }
    return ids;
}

#define RUN_MAX_SITES 64

/* model:run(tokens, {sites = {...}, layer = 0}) -> {[site] = tensor, logits = tensor, loss = number}:
 * the activations of the given tokens at the named hook sites (TransformerLens names or short ones
 * with `layer`), in TransformerLens's shapes, keyed by the names given; "logits" [B, T, d_vocab]
 * and "loss" (mean next-token cross-entropy) when asked. */
static int model_run(lua_State *L) {
    static const char *const keys[] = {"sites", "layer", "rows", NULL};
    const char *fn = "model:run";
    lmodel *m = saefw_lua_check_lmodel(L, 1);
    if (lua_isnoneornil(L, 3)) {
        lua_settop(L, 2);
        lua_newtable(L);
    }
    saefw_lua_check_table(L, 3, fn);
    saefw_lua_check_keys(L, 3, fn, keys);
    int layer = (int)saefw_lua_opt_int(L, 3, fn, "layer", 0, 0);
    lua_getfield(L, 3, "sites");
    if (!lua_istable(L, -1))
        return saefw_lua_error(L, "%s: field 'sites' (a list of hook names, \"logits\", \"loss\") is required", fn);
    int sites = lua_gettop(L);
    int n_sites = (int)lua_rawlen(L, sites);
    if (n_sites < 1 || n_sites > RUN_MAX_SITES)
        return saefw_lua_error(L, "%s: field 'sites' must list from 1 to %d sites", fn, RUN_MAX_SITES);

    int64_t B, T;
    int32_t *ids = run_tokens(L, m, 3, &B, &T);
    /* The ids go into a userdata so that any error below frees them with the Lua stack. */
    int32_t *tok = lua_newuserdatauv(L, sizeof(int32_t) * (size_t)(B * T), 0);
    memcpy(tok, ids, sizeof(int32_t) * (size_t)(B * T));
    free(ids);

    lua_newtable(L); /* the result */
    int result = lua_gettop(L);
    saefw_capture caps[RUN_MAX_SITES];
    int n_caps = 0, want_loss = 0;
    float *logits = NULL;
    char err[1024];
    const saefw_model_cfg *c = saefw_model_config(m->m);
    for (int i = 1; i <= n_sites; i++) {
        lua_rawgeti(L, sites, i);
        if (lua_type(L, -1) != LUA_TSTRING) return saefw_lua_error(L, "%s: sites[%d] must be a string", fn, i);
        const char *name = lua_tostring(L, -1);
        if (!strcmp(name, "loss")) {
            if (T < 2) return saefw_lua_error(L, "%s: the loss needs at least 2 tokens per row", fn);
            want_loss = 1;
        } else if (!strcmp(name, "logits")) {
            int64_t shape[3] = {B, T, c->d_vocab};
            if (!logits) logits = saefw_lua_new_tensor(L, 3, shape)->data;
            else lua_getfield(L, result, "logits");
            lua_setfield(L, result, "logits");
        } else {
            saefw_hook h;
            if (saefw_model_hook_resolve(m->m, name, strncmp(name, "blocks.", 7) ? layer : -1, &h, err, sizeof err) !=
                0)
                return saefw_lua_error(L, "%s: sites[%d]: %s", fn, i, err);
            int k = 0;
            while (k < n_caps && !(caps[k].hook.kind == h.kind && caps[k].hook.layer == h.layer)) k++;
            if (k < n_caps) {
                /* The same site under another name: the same tensor. */
                char canon[96];
                saefw_hook_name(h, canon, sizeof canon);
                lua_getfield(L, result, canon);
                lua_setfield(L, result, name);
            } else {
                int64_t shape[4];
                int nd = saefw_model_hook_shape(m->m, h, B, T, shape);
                caps[n_caps].hook = h;
                caps[n_caps].out = saefw_lua_new_tensor(L, nd, shape)->data;
                n_caps++;
                char canon[96];
                saefw_hook_name(h, canon, sizeof canon);
                lua_pushvalue(L, -1);
                lua_setfield(L, result, canon);
                lua_setfield(L, result, name);
            }
        }
        lua_pop(L, 1);
    }
    saefw_model_work *w = NULL;
    if (saefw_model_work_alloc(m->m, B, T, &w, err, sizeof err) != 0) return saefw_lua_error(L, "%s: %s", fn, err);
    double loss = 0;
    saefw_forward_opts o = {
        .captures = caps, .n_captures = n_caps, .logits_out = logits, .loss_out = want_loss ? &loss : NULL};
    int rc = saefw_model_forward(m->m, w, tok, B, T, &o, err, sizeof err);
    saefw_model_work_free(w);
    if (rc != 0) return saefw_lua_error(L, "%s: %s", fn, err);
    if (want_loss) {
        lua_pushnumber(L, loss);
        lua_setfield(L, result, "loss");
    }
    lua_pushvalue(L, result);
    return 1;
}

/* saefw.tokens(path_or_dataset, {seq_len=, bos=, shuffle=, dtype=, tensor=, seed=, column=}): a token
 * file, or a Parquet token dataset (hf://datasets/ORG/NAME, a folder, a glob), read through its token
 * cache (converted on first use). */
static int l_tokens(lua_State *L) {
    static const char *const keys[] = {"seq_len", "bos", "shuffle", "dtype", "tensor", "seed", "column", NULL};
    const char *fn = "saefw.tokens";
    const char *path = luaL_checkstring(L, 1);
    if (lua_isnoneornil(L, 2)) lua_newtable(L);
    else saefw_lua_check_table(L, 2, fn);
    saefw_lua_check_keys(L, 2, fn, keys);
    saefw_tokens_opts o;
    memset(&o, 0, sizeof o);
    o.path = path;
    o.seq_len = saefw_lua_opt_int(L, 2, fn, "seq_len", 128, 2);
    o.bos = saefw_lua_has_field(L, 2, "bos") ? saefw_lua_opt_int(L, 2, fn, "bos", 0, 0) : -1;
    o.shuffle = saefw_lua_opt_bool(L, 2, fn, "shuffle", 1);
    o.dtype = saefw_lua_opt_string(L, 2, fn, "dtype", NULL);
    o.tensor = saefw_lua_opt_string(L, 2, fn, "tensor", NULL);
    o.seed = (uint64_t)saefw_lua_opt_int(L, 2, fn, "seed", SAEFW_DEFAULT_SEED, 0);
    const char *column = saefw_lua_opt_string(L, 2, fn, "column", NULL);
    char err[1024];
    ltokens *t = lua_newuserdatauv(L, sizeof *t, 0);
    t->t = NULL;
    luaL_setmetatable(L, MT_TOKENS);
    if (saefw_tokens_open_any(&o, column, -1, &t->t, err, sizeof err) != 0)
        return saefw_lua_error(L, "%s: %s", fn, err);
    return 1;
}

static int tokens_index(lua_State *L) {
    ltokens *t = saefw_lua_check_ltokens(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (!strcmp(k, "rows")) lua_pushinteger(L, saefw_tokens_rows(t->t));
    else if (!strcmp(k, "seq_len")) lua_pushinteger(L, saefw_tokens_seq_len(t->t));
    else if (!strcmp(k, "pass")) lua_pushinteger(L, saefw_tokens_pass(t->t));
    else lua_pushnil(L);
    return 1;
}

saefw_hook saefw_lua_read_hook(lua_State *L, int t, const char *fn, const saefw_model *m, const char *site_key,
                               const char *layer_key) {
    const char *site = saefw_lua_opt_string(L, t, fn, site_key, NULL);
    if (!site)
        saefw_lua_error(L, "%s: field '%s' is required (a hook name such as \"post\" or \"blocks.0.mlp.hook_post\")",
                        fn, site_key);
    /* A full name ("blocks.1.mlp.hook_post") carries its layer; a short one defaults to layer 0. */
    int64_t layer = saefw_lua_has_field(L, t, layer_key) ? saefw_lua_opt_int(L, t, fn, layer_key, 0, 0)
                                                         : (strncmp(site, "blocks.", 7) ? 0 : -1);
    saefw_hook h;
    char err[512];
    if (saefw_hook_parse(site, (int)layer, &h, err, sizeof err) != 0) saefw_lua_error(L, "%s: %s", fn, err);
    int width = saefw_model_hook_width(m, h);
    if (width < 0)
        saefw_lua_error(L, "%s: layer %d is out of range: the model has %d layer(s)", fn, h.layer,
                        saefw_model_config(m)->n_layers);
    if (width == 0) saefw_lua_error(L, "%s: %s is not one row per token (read it with model:run)", fn, site);
    return h;
}

static saefw_hook read_hook(lua_State *L, int t, const char *fn, const saefw_model *m) {
    return saefw_lua_read_hook(L, t, fn, m, "site", "layer");
}

/* saefw.model_source{model=, tokens=, site=, layer=, model_batch_size=, seed=, site_out=, layer_out=}:
 * activations at a hook; with site_out, rows [site | site_out] (a transcoder's input and target). */
static int l_model_source(lua_State *L) {
    static const char *const keys[] = {"model", "tokens",   "site",      "layer", "model_batch_size",
                                       "seed",  "site_out", "layer_out", NULL};
    const char *fn = "saefw.model_source";
    saefw_lua_check_table(L, 1, fn);
    saefw_lua_check_keys(L, 1, fn, keys);
    lua_getfield(L, 1, "model");
    lmodel *m = saefw_lua_check_lmodel(L, -1);
    int mi = lua_gettop(L);
    lua_getfield(L, 1, "tokens");
    ltokens *t = saefw_lua_check_ltokens(L, -1);
    int ti = lua_gettop(L);
    saefw_model_source_opts o;
    memset(&o, 0, sizeof o);
    o.model = m->m;
    o.tokens = t->t;
    o.hook = read_hook(L, 1, fn, m->m);
    const int with_target = saefw_lua_has_field(L, 1, "site_out");
    saefw_hook hook_out = with_target ? saefw_lua_read_hook(L, 1, fn, m->m, "site_out", "layer_out") : o.hook;
    o.model_batch = saefw_lua_opt_int(L, 1, fn, "model_batch_size", 32, 1);
    o.seed = (uint64_t)saefw_lua_opt_int(L, 1, fn, "seed", SAEFW_DEFAULT_SEED, 0);
    lsource *s = saefw_lua_new_source(L);
    lua_pushvalue(L, mi);
    lua_setiuservalue(L, -2, 1);
    lua_pushvalue(L, ti);
    lua_setiuservalue(L, -2, 2);
    char err[1024];
    if ((with_target ? saefw_source_model_xy(&o, hook_out, &s->src, err, sizeof err)
                     : saefw_source_model(&o, &s->src, err, sizeof err)) != 0)
        return saefw_lua_error(L, "%s: %s", fn, err);
    s->src->log = saefw_lua_source_log;
    s->on_model = 1;
    s->hook = o.hook;
    s->model_batch = o.model_batch;
    s->with_target = with_target;
    s->hook_out = hook_out;
    return 1;
}

static void push_recons(lua_State *L, const saefw_recons *r) {
    lua_newtable(L);
    lua_pushnumber(L, r->score);
    lua_setfield(L, -2, "score");
    lua_pushnumber(L, r->loss_clean);
    lua_setfield(L, -2, "loss_clean");
    lua_pushnumber(L, r->loss_recons);
    lua_setfield(L, -2, "loss_recons");
    lua_pushnumber(L, r->loss_zero);
    lua_setfield(L, -2, "loss_zero");
}

/* saefw.recons_score(model, tokens, sae, {site=, layer=, batches=5, model_batch_size=32, seed=}) */
static int l_recons_score(lua_State *L) {
    static const char *const keys[] = {"site", "layer", "batches", "model_batch_size", "seed", NULL};
    const char *fn = "saefw.recons_score";
    lmodel *m = saefw_lua_check_lmodel(L, 1);
    ltokens *t = saefw_lua_check_ltokens(L, 2);
    lsae *s = saefw_lua_check_lsae(L, 3);
    saefw_lua_check_table(L, 4, fn);
    saefw_lua_check_keys(L, 4, fn, keys);
    saefw_hook h = read_hook(L, 4, fn, m->m);
    int64_t batches = saefw_lua_opt_int(L, 4, fn, "batches", 5, 1),
            mb = saefw_lua_opt_int(L, 4, fn, "model_batch_size", 32, 1);
    saefw_rng rng;
    saefw_rng_seed(&rng, (uint64_t)saefw_lua_opt_int(L, 4, fn, "seed", SAEFW_DEFAULT_SEED, 0));
    saefw_recons r;
    char err[1024];
    if (saefw_recons_score(m->m, t->t, h, &s->sae, batches, mb, &rng, &r, err, sizeof err) != 0)
        return saefw_lua_error(L, "%s: %s", fn, err);
    push_recons(L, &r);
    return 1;
}

/* saefw.model_loss(model, tokens, {batches=, model_batch_size=, seed=, ablate="zero"|"mean", site=, layer=}) */
static int l_model_loss(lua_State *L) {
    static const char *const keys[] = {"site", "layer", "batches", "model_batch_size", "seed", "ablate", NULL};
    const char *fn = "saefw.model_loss";
    lmodel *m = saefw_lua_check_lmodel(L, 1);
    ltokens *t = saefw_lua_check_ltokens(L, 2);
    if (lua_isnoneornil(L, 3)) lua_newtable(L);
    saefw_lua_check_table(L, 3, fn);
    saefw_lua_check_keys(L, 3, fn, keys);
    int64_t batches = saefw_lua_opt_int(L, 3, fn, "batches", 5, 1),
            mb = saefw_lua_opt_int(L, 3, fn, "model_batch_size", 32, 1);
    uint64_t seed = (uint64_t)saefw_lua_opt_int(L, 3, fn, "seed", SAEFW_DEFAULT_SEED, 0);
    const char *ablate = saefw_lua_opt_string(L, 3, fn, "ablate", NULL);
    saefw_hook hook = {SAEFW_HOOK_MLP_POST, 0};
    saefw_intervene_mode mode = SAEFW_INTERVENE_NONE;
    if (ablate) {
        hook = read_hook(L, 3, fn, m->m);
        if (!strcmp(ablate, "zero")) mode = SAEFW_INTERVENE_ZERO;
        else if (!strcmp(ablate, "mean")) mode = SAEFW_INTERVENE_MEAN;
        else return saefw_lua_error(L, "%s: field 'ablate' must be \"zero\" or \"mean\", got \"%s\"", fn, ablate);
    }
    char err[1024];
    double loss = 0;
    if (saefw_eval_model_loss(m->m, t->t, hook, mode, batches, mb, seed, &loss, err, sizeof err) != 0)
        return saefw_lua_error(L, "%s: %s", fn, err);
    lua_pushnumber(L, loss);
    return 1;
}

/* saefw.hook_name(site, layer) -> the TransformerLens name ("blocks.0.mlp.hook_post"). */
static int l_hook_name(lua_State *L) {
    const char *site = luaL_checkstring(L, 1);
    lua_Integer layer = luaL_optinteger(L, 2, strncmp(site, "blocks.", 7) ? 0 : -1);
    saefw_hook h;
    char err[512], name[128];
    if (layer < -1 || layer > 100000) return saefw_lua_error(L, "saefw.hook_name: bad layer %lld", (long long)layer);
    if (saefw_hook_parse(site, (int)layer, &h, err, sizeof err) != 0)
        return saefw_lua_error(L, "saefw.hook_name: %s", err);
    saefw_hook_name(h, name, sizeof name);
    lua_pushstring(L, name);
    return 1;
}

/* model:hook_width(site [, layer]) -> the width of a row at the site (saefw_model_hook_width); an error
 * for a layer out of range or a site without one row per token. */
static int model_hook_width(lua_State *L) {
    lmodel *m = saefw_lua_check_lmodel(L, 1);
    luaL_checkstring(L, 2);
    const int with_layer = !lua_isnoneornil(L, 3);
    const lua_Integer layer = with_layer ? luaL_checkinteger(L, 3) : 0;
    lua_settop(L, 2);
    lua_createtable(L, 0, 2);
    lua_pushvalue(L, 2);
    lua_setfield(L, -2, "site");
    if (with_layer) {
        lua_pushinteger(L, layer);
        lua_setfield(L, -2, "layer");
    }
    saefw_hook h = saefw_lua_read_hook(L, lua_gettop(L), "model:hook_width", m->m, "site", "layer");
    lua_pushinteger(L, saefw_model_hook_width(m->m, h));
    return 1;
}

/* saefw.model, saefw.tokens, saefw.model_source, saefw.recons_score, saefw.model_loss, saefw.hook_name
 * and the Model and Tokens classes. */
void saefw_lua_open_model(lua_State *L, int module_index) {
    static const luaL_Reg model_methods[] = {{"run", model_run}, {"hook_width", model_hook_width}, {NULL, NULL}};
    saefw_lua_new_class(L, MT_MODEL, model_gc, model_index, model_methods);
    saefw_lua_new_class(L, MT_TOKENS, tokens_gc, tokens_index, NULL);
    static const luaL_Reg fns[] = {
        {"model", l_model},
        {"tokens", l_tokens},
        {"model_source", l_model_source},
        {"recons_score", l_recons_score},
        {"model_loss", l_model_loss},
        {"hook_name", l_hook_name},
        {NULL, NULL},
    };
    lua_pushvalue(L, module_index);
    luaL_setfuncs(L, fns, 0);
    lua_pop(L, 1);
}
