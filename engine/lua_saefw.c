/* Lua bindings: SAE, sources, buffer, plugins, checkpoints and the training loop as userdata with
 * metatables; misuse raises an error naming the argument at the user's script line. */
#include "lua_saefw.h"

#include <lauxlib.h>
#include <limits.h>
#include <lualib.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "eval.h"
#include "lua_tokenizer.h"
#include "lua_features.h"
#include "lua_util.h"
#include "memory.h"
#include "model.h"
#include "model_resolve.h"
#include "model_source.h"
#include "parallel.h"
#include "token_dataset.h"
#include "tokens.h"
#include "plugin_loader.h"
#include "sae.h"
#include "sae_resolve.h"
#include "source.h"
#include "tensorfile.h"
#include "train.h"
#include "util.h"

#define MT_SAE "saefw.SAE"
#define MT_SOURCE "saefw.Source"
#define MT_BUFFER "saefw.Buffer"
#define MT_PLUGIN "saefw.Plugin"
#define MT_MODEL "saefw.Model"
#define MT_TOKENS "saefw.Tokens"
#define MT_TENSOR "saefw.Tensor"

/* ---- SAE ---- */

typedef struct {
    saefw_sae sae;
    int alive;
} lsae;

static lsae *check_sae(lua_State *L, int idx) {
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

static int l_sae(lua_State *L) {
    static const char *const keys[] = {"d_in", "d_sae", "l1_coeff", "seed", NULL};
    saefw_lua_check_table(L, 1, "saefw.sae");
    saefw_lua_check_keys(L, 1, "saefw.sae", keys);
    int64_t d_in = saefw_lua_req_int(L, 1, "saefw.sae", "d_in", 1);
    int64_t d_sae = saefw_lua_req_int(L, 1, "saefw.sae", "d_sae", 1);
    double l1 = saefw_lua_opt_number(L, 1, "saefw.sae", "l1_coeff", 3e-4);
    if (l1 < 0) saefw_lua_error(L, "saefw.sae: field 'l1_coeff' must be >= 0");
    int64_t seed = saefw_lua_opt_int(L, 1, "saefw.sae", "seed", SAEFW_DEFAULT_SEED, 0);
    lsae *s = new_sae(L);
    char err[512];
    if (saefw_sae_alloc(&s->sae, d_in, d_sae, (float)l1, err, sizeof err) != 0) return saefw_lua_error(L, "saefw.sae: %s", err);
    s->alive = 1;
    saefw_rng rng;
    saefw_rng_seed(&rng, (uint64_t)seed);
    saefw_sae_init_params(&s->sae, &rng);
    return 1;
}

static int sae_gc(lua_State *L) {
    lsae *s = luaL_checkudata(L, 1, MT_SAE);
    if (s->alive) saefw_sae_free(&s->sae);
    s->alive = 0;
    return 0;
}

/* JSON <-> Lua for cfg.json: numbers, strings, booleans and nested tables. */
static cJSON *lua_to_json(lua_State *L, int idx, int depth) {
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER: return cJSON_CreateNumber(lua_tonumber(L, idx));
    case LUA_TBOOLEAN: return cJSON_CreateBool(lua_toboolean(L, idx));
    case LUA_TSTRING: return cJSON_CreateString(lua_tostring(L, idx));
    case LUA_TTABLE: {
        if (depth > 16) return NULL;
        lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
        cJSON *out = n > 0 ? cJSON_CreateArray() : cJSON_CreateObject();
        if (!out) return NULL;
        if (n > 0) {
            for (lua_Integer i = 1; i <= n; i++) {
                lua_rawgeti(L, idx, i);
                cJSON *v = lua_to_json(L, -1, depth + 1);
                lua_pop(L, 1);
                if (v) cJSON_AddItemToArray(out, v);
            }
            return out;
        }
        /* Keys sorted, so cfg.json reads the same from run to run. */
        lua_newtable(L);
        int keys = lua_gettop(L), nk = 0;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            lua_pop(L, 1);
            if (lua_type(L, -1) == LUA_TSTRING) {
                lua_pushvalue(L, -1);
                lua_rawseti(L, keys, ++nk);
            }
        }
        lua_getglobal(L, "table");
        lua_getfield(L, -1, "sort");
        lua_pushvalue(L, keys);
        lua_call(L, 1, 0);
        lua_pop(L, 1);
        for (int i = 1; i <= nk; i++) {
            lua_rawgeti(L, keys, i);
            lua_gettable(L, idx);
            cJSON *v = lua_to_json(L, -1, depth + 1);
            lua_pop(L, 1);
            lua_rawgeti(L, keys, i);
            if (v) cJSON_AddItemToObject(out, lua_tostring(L, -1), v);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
        return out;
    }
    default: return NULL; /* functions and userdata have no JSON form */
    }
}

static void json_to_lua(lua_State *L, const cJSON *j, int depth) {
    if (depth > 32) {
        lua_pushnil(L);
    } else if (cJSON_IsNumber(j)) {
        double v = j->valuedouble;
        if (v == floor(v) && fabs(v) < 9.0e15) lua_pushinteger(L, (lua_Integer)v);
        else lua_pushnumber(L, v);
    } else if (cJSON_IsString(j)) {
        lua_pushstring(L, j->valuestring);
    } else if (cJSON_IsBool(j)) {
        lua_pushboolean(L, cJSON_IsTrue(j));
    } else if (cJSON_IsArray(j)) {
        lua_newtable(L);
        int i = 1;
        for (const cJSON *c = j->child; c; c = c->next) {
            json_to_lua(L, c, depth + 1);
            lua_rawseti(L, -2, i++);
        }
    } else if (cJSON_IsObject(j)) {
        lua_newtable(L);
        for (const cJSON *c = j->child; c; c = c->next) {
            json_to_lua(L, c, depth + 1);
            lua_setfield(L, -2, c->string);
        }
    } else {
        lua_pushnil(L);
    }
}

static int sae_save(lua_State *L) {
    lsae *s = check_sae(L, 1);
    const char *dir = luaL_checkstring(L, 2);
    cJSON *cfg = NULL;
    if (!lua_isnoneornil(L, 3)) {
        if (!lua_istable(L, 3)) return saefw_lua_error(L, "sae:save: argument 2 (cfg) must be a table");
        cfg = lua_to_json(L, 3, 0);
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
    if (saefw_checkpoint_load(path, &s->sae, &cfg, err, sizeof err) != 0) return saefw_lua_error(L, "saefw.load_sae: %s", err);
    s->alive = 1;
    if (saefw_checkpoint_require_l1(path, cfg, err, sizeof err) != 0) {
        cJSON_Delete(cfg);
        return saefw_lua_error(L, "saefw.load_sae: %s", err);
    }
    if (cfg) json_to_lua(L, cfg, 0);
    else lua_newtable(L);
    cJSON_Delete(cfg);
    lua_pushstring(L, path);
    return 3;
}

static int param_index(lua_State *L, const char *name) {
    for (int i = 0; i < SAEFW_N_PARAMS; i++)
        if (strcmp(saefw_param_name(i), name) == 0) return i;
    return saefw_lua_error(L, "no SAE tensor named '%s' (W_enc, W_dec, b_enc, b_dec)", name);
}

/* sae:tensor(name) -> flat Lua array copy and its shape (for analysis and tests on small SAEs). */
static int sae_tensor(lua_State *L) {
    lsae *s = check_sae(L, 1);
    int i = param_index(L, luaL_checkstring(L, 2));
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
    lsae *s = check_sae(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (!strcmp(k, "d_in")) lua_pushinteger(L, s->sae.d_in);
    else if (!strcmp(k, "d_sae")) lua_pushinteger(L, s->sae.d_sae);
    else if (!strcmp(k, "l1_coeff")) lua_pushnumber(L, s->sae.l1_coeff);
    else {
        luaL_getmetafield(L, 1, "methods");
        lua_getfield(L, -1, k);
    }
    return 1;
}

/* ---- sources ---- */

typedef struct {
    saefw_source *src;
    /* For sources on the model host (uservalues 1 and 2 hold the Model and Tokens userdata). */
    int on_model;
    saefw_hook hook;
    int64_t model_batch;
} lsource;

static saefw_source *check_source(lua_State *L, int idx) {
    lsource *s = luaL_testudata(L, idx, MT_SOURCE);
    if (!s) saefw_lua_error(L, "expected an activation source (saefw.synthetic, saefw.activations), got %s", luaL_typename(L, idx));
    if (!s->src) saefw_lua_error(L, "this source was closed");
    return s->src;
}

static void source_log(void *ud, const char *msg) { fprintf(stderr, "%s\n", msg); }

static lsource *new_source(lua_State *L) {
    lsource *s = lua_newuserdatauv(L, sizeof *s, 2);
    memset(s, 0, sizeof *s);
    luaL_setmetatable(L, MT_SOURCE);
    return s;
}

static int l_synthetic(lua_State *L) {
    static const char *const keys[] = {"d_in", "n_features", "p_active", "max_magnitude", "seed", NULL};
    const char *fn = "saefw.synthetic";
    saefw_lua_check_table(L, 1, fn);
    saefw_lua_check_keys(L, 1, fn, keys);
    saefw_synthetic_opts o;
    o.d_in = saefw_lua_req_int(L, 1, fn, "d_in", 1);
    o.n_features = saefw_lua_req_int(L, 1, fn, "n_features", 1);
    o.p_active = saefw_lua_opt_number(L, 1, fn, "p_active", 0.01);
    o.max_magnitude = saefw_lua_opt_number(L, 1, fn, "max_magnitude", 1.0);
    o.seed = (uint64_t)saefw_lua_opt_int(L, 1, fn, "seed", 0, 0);
    lsource *s = new_source(L);
    char err[512];
    if (saefw_source_synthetic(&o, &s->src, err, sizeof err) != 0) return saefw_lua_error(L, "%s: %s", fn, err);
    s->src->log = source_log;
    return 1;
}

/* saefw.activations{path=, tensor=, d_in=, seed=, shuffle=true}: activations from a file; with
 * shuffle = false an ordered feed (batches in file order, for replaying exact batches). */
static int l_activations(lua_State *L) {
    static const char *const keys[] = {"path", "tensor", "d_in", "seed", "shuffle", NULL};
    const char *fn = "saefw.activations";
    saefw_lua_check_table(L, 1, fn);
    saefw_lua_check_keys(L, 1, fn, keys);
    const char *path = saefw_lua_opt_string(L, 1, fn, "path", NULL);
    if (!path) return saefw_lua_error(L, "%s: field 'path' is required", fn);
    const char *tensor = saefw_lua_opt_string(L, 1, fn, "tensor", NULL);
    int64_t d_in = saefw_lua_opt_int(L, 1, fn, "d_in", 0, 0);
    int64_t seed = saefw_lua_opt_int(L, 1, fn, "seed", 0, 0);
    int shuffle = saefw_lua_opt_bool(L, 1, fn, "shuffle", 1);
    lsource *s = new_source(L);
    char err[1024];
    if (saefw_source_file(path, tensor, d_in, (uint64_t)seed, &s->src, err, sizeof err) != 0)
        return saefw_lua_error(L, "%s: %s", fn, err);
    s->src->log = source_log;
    s->src->in_order = !shuffle;
    return 1;
}

/* saefw.feed{d_in=, fn=function(n) return rows end}: an ordered feed from a Lua function, called
 * with the number of rows wanted; it returns n rows of d_in numbers (a list of rows, or one flat
 * list of n * d_in). Batches are used as given, unshuffled. */
typedef struct {
    lua_State *L;
    int fn_ref;
    int64_t d;
} lfeed;

static int feed_call(void *ud, float *out, int64_t n, char *err, size_t errlen) {
    lfeed *f = ud;
    lua_State *L = f->L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, f->fn_ref);
    lua_pushinteger(L, (lua_Integer)n);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        saefw_errf(err, errlen, "saefw.feed: %s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "error");
        lua_settop(L, top);
        return -1;
    }
    int rc = 0;
    if (!lua_istable(L, -1)) {
        rc = saefw_errf(err, errlen, "saefw.feed: the function returned %s, not a table of %lld rows",
                        luaL_typename(L, -1), (long long)n);
    } else {
        lua_rawgeti(L, -1, 1);
        int rows = lua_istable(L, -1);
        lua_pop(L, 1);
        int64_t len = (int64_t)lua_rawlen(L, -1);
        if (rows ? len != n : len != n * f->d)
            rc = saefw_errf(err, errlen, "saefw.feed: asked for %lld rows of %lld, the function returned %lld %s",
                            (long long)n, (long long)f->d, (long long)len, rows ? "rows" : "numbers");
        for (int64_t r = 0; rc == 0 && r < n; r++) {
            if (rows) {
                lua_rawgeti(L, -1, (lua_Integer)r + 1);
                if (!lua_istable(L, -1) || (int64_t)lua_rawlen(L, -1) != f->d) {
                    rc = saefw_errf(err, errlen, "saefw.feed: row %lld is not a list of %lld numbers", (long long)r + 1,
                                    (long long)f->d);
                    break;
                }
            }
            for (int64_t i = 0; i < f->d; i++) {
                lua_rawgeti(L, -1, rows ? (lua_Integer)i + 1 : (lua_Integer)(r * f->d + i) + 1);
                int ok;
                lua_Number v = lua_tonumberx(L, -1, &ok);
                lua_pop(L, 1);
                if (!ok) {
                    rc = saefw_errf(err, errlen, "saefw.feed: row %lld, column %lld is not a number", (long long)r + 1,
                                    (long long)i + 1);
                    break;
                }
                out[r * f->d + i] = (float)v;
            }
            if (rows) lua_pop(L, 1);
        }
    }
    lua_settop(L, top);
    return rc;
}

static void feed_free(void *ud) {
    lfeed *f = ud;
    luaL_unref(f->L, LUA_REGISTRYINDEX, f->fn_ref);
    free(f);
}

static int l_feed(lua_State *L) {
    static const char *const keys[] = {"d_in", "fn", NULL};
    const char *fn = "saefw.feed";
    saefw_lua_check_table(L, 1, fn);
    saefw_lua_check_keys(L, 1, fn, keys);
    int64_t d = saefw_lua_req_int(L, 1, fn, "d_in", 1);
    lua_getfield(L, 1, "fn");
    if (!lua_isfunction(L, -1))
        return saefw_lua_error(L, "%s: field 'fn' must be a function(n) returning n rows, got %s", fn, luaL_typename(L, -1));
    lfeed *f = malloc(sizeof *f);
    if (!f) return saefw_lua_error(L, "%s: out of memory", fn);
    lua_State *main = L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    main = lua_tothread(L, -1);
    lua_pop(L, 1);
    f->L = main;
    f->d = d;
    f->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lsource *s = new_source(L);
    char err[512];
    if (saefw_source_feed(d, feed_call, f, feed_free, &s->src, err, sizeof err) != 0) {
        feed_free(f);
        return saefw_lua_error(L, "%s: %s", fn, err);
    }
    s->src->log = source_log;
    return 1;
}

static int source_gc(lua_State *L) {
    lsource *s = luaL_checkudata(L, 1, MT_SOURCE);
    saefw_source_free(s->src);
    s->src = NULL;
    return 0;
}

static int source_index(lua_State *L) {
    saefw_source *src = check_source(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (!strcmp(k, "d_act") || !strcmp(k, "d_in")) lua_pushinteger(L, src->d_act);
    else if (!strcmp(k, "kind")) lua_pushstring(L, src->kind);
    else {
        luaL_getmetafield(L, 1, "methods");
        lua_getfield(L, -1, k);
    }
    return 1;
}

/* source:sample(n) -> flat array of n rows (for small analyses). */
static int source_sample(lua_State *L) {
    saefw_source *src = check_source(L, 1);
    lua_Integer n = luaL_checkinteger(L, 2);
    if (n <= 0 || n > (1 << 20) / src->d_act) return saefw_lua_error(L, "source:sample: n must be in 1..%lld", (long long)((1 << 20) / src->d_act));
    float *x = malloc(sizeof(float) * (size_t)(n * src->d_act));
    if (!x) return saefw_lua_error(L, "source:sample: out of memory");
    char err[512];
    if (src->sample(src, x, n, err, sizeof err) != 0) {
        free(x);
        return saefw_lua_error(L, "source:sample: %s", err);
    }
    lua_createtable(L, (int)(n * src->d_act), 0);
    for (lua_Integer k = 0; k < n * src->d_act; k++) {
        lua_pushnumber(L, x[k]);
        lua_rawseti(L, -2, k + 1);
    }
    free(x);
    return 1;
}

/* ---- buffer ---- */

typedef struct {
    saefw_buffer buf;
    int alive;
} lbuffer;

static int l_buffer(lua_State *L) {
    static const char *const keys[] = {"source", "size", "batch_size", "dtype", "seed", NULL};
    const char *fn = "saefw.buffer";
    saefw_lua_check_table(L, 1, fn);
    saefw_lua_check_keys(L, 1, fn, keys);
    lua_getfield(L, 1, "source");
    if (lua_isnil(L, -1)) return saefw_lua_error(L, "%s: field 'source' is required", fn);
    saefw_source *src = check_source(L, -1);
    int src_idx = lua_gettop(L);
    int64_t batch = saefw_lua_req_int(L, 1, fn, "batch_size", 1);
    int64_t size = src->in_order ? saefw_lua_opt_int(L, 1, fn, "size", batch, 1) : saefw_lua_req_int(L, 1, fn, "size", 1);
    const char *dt = saefw_lua_opt_string(L, 1, fn, "dtype", "bf16");
    saefw_buffer_dtype dtype;
    if (!strcmp(dt, "bf16")) dtype = SAEFW_BUF_BF16;
    else if (!strcmp(dt, "fp32") || !strcmp(dt, "f32")) dtype = SAEFW_BUF_F32;
    else return saefw_lua_error(L, "%s: field 'dtype' must be \"bf16\" or \"fp32\", got \"%s\"", fn, dt);
    int64_t seed = saefw_lua_opt_int(L, 1, fn, "seed", 0, 0);
    lbuffer *b = lua_newuserdatauv(L, sizeof *b, 1);
    memset(b, 0, sizeof *b);
    luaL_setmetatable(L, MT_BUFFER);
    lua_pushvalue(L, src_idx);
    lua_setiuservalue(L, -2, 1); /* keep the source alive as long as the buffer */
    char err[1024];
    if (saefw_buffer_init(&b->buf, src, size, batch, dtype, (uint64_t)seed, err, sizeof err) != 0)
        return saefw_lua_error(L, "%s: %s", fn, err);
    b->alive = 1;
    return 1;
}

static saefw_buffer *check_buffer(lua_State *L, int idx) {
    lbuffer *b = luaL_testudata(L, idx, MT_BUFFER);
    if (!b) saefw_lua_error(L, "expected a buffer (saefw.buffer), got %s", luaL_typename(L, idx));
    if (!b->alive) saefw_lua_error(L, "this buffer was closed");
    return &b->buf;
}

static int buffer_gc(lua_State *L) {
    lbuffer *b = luaL_checkudata(L, 1, MT_BUFFER);
    if (b->alive) saefw_buffer_free(&b->buf);
    b->alive = 0;
    return 0;
}

static int buffer_index(lua_State *L) {
    saefw_buffer *b = check_buffer(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (!strcmp(k, "d_act")) lua_pushinteger(L, b->d);
    else if (!strcmp(k, "size")) lua_pushinteger(L, b->rows);
    else if (!strcmp(k, "batch_size")) lua_pushinteger(L, b->batch);
    else if (!strcmp(k, "bytes")) lua_pushinteger(L, (lua_Integer)saefw_buffer_bytes(b));
    else if (!strcmp(k, "source")) lua_getiuservalue(L, 1, 1);
    else lua_pushnil(L);
    return 1;
}

/* ---- plugins ---- */

typedef struct {
    saefw_loaded_plugin *lp;
    saefw_opts *opts;
    int is_lua; /* a saefw.lua_plugin: an llua_plugin, with no shared object to unload */
} lplugin;

static void lua_plugin_release(lua_State *L, lplugin *p);

static int l_plugin(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    if (!lua_isnoneornil(L, 2) && !lua_istable(L, 2))
        return saefw_lua_error(L, "saefw.plugin: argument 2 (options) must be a table, got %s", luaL_typename(L, 2));
    lplugin *p = lua_newuserdatauv(L, sizeof *p, 0);
    memset(p, 0, sizeof *p);
    luaL_setmetatable(L, MT_PLUGIN);
    char err[1024];
    if (saefw_plugin_load(name, saefw_host_table(), &p->lp, err, sizeof err) != 0) return saefw_lua_error(L, "%s", err);
    if (saefw_opts_new(p->lp, &p->opts, err, sizeof err) != 0) return saefw_lua_error(L, "%s", err);
    if (lua_istable(L, 2)) {
        lua_pushnil(L);
        while (lua_next(L, 2)) {
            if (lua_type(L, -2) != LUA_TSTRING) return saefw_lua_error(L, "plugin %s: option names must be strings", p->lp->p.name);
            const char *k = lua_tostring(L, -2);
            int rc;
            switch (lua_type(L, -1)) {
            case LUA_TNUMBER: rc = saefw_opts_set_number(p->opts, p->lp, k, lua_tonumber(L, -1), err, sizeof err); break;
            case LUA_TBOOLEAN: rc = saefw_opts_set_bool(p->opts, p->lp, k, lua_toboolean(L, -1), err, sizeof err); break;
            case LUA_TSTRING: rc = saefw_opts_set_string(p->opts, p->lp, k, lua_tostring(L, -1), err, sizeof err); break;
            default:
                return saefw_lua_error(L, "plugin %s: option '%s' has unsupported type %s", p->lp->p.name, k, luaL_typename(L, -1));
            }
            if (rc != 0) return saefw_lua_error(L, "%s", err);
            lua_pop(L, 1);
        }
    }
    if (saefw_opts_check(p->opts, p->lp, err, sizeof err) != 0) return saefw_lua_error(L, "%s", err);
    return 1;
}

static lplugin *check_plugin(lua_State *L, int idx) {
    lplugin *p = luaL_testudata(L, idx, MT_PLUGIN);
    if (!p || !p->lp) saefw_lua_error(L, "expected a plugin (saefw.plugin), got %s", luaL_typename(L, idx));
    return p;
}

static int plugin_gc(lua_State *L) {
    lplugin *p = luaL_checkudata(L, 1, MT_PLUGIN);
    if (p->is_lua) {
        lua_plugin_release(L, p);
        return 0;
    }
    saefw_opts_free(p->opts);
    saefw_plugin_unload(p->lp);
    p->opts = NULL;
    p->lp = NULL;
    return 0;
}

static int plugin_index(lua_State *L) {
    lplugin *p = check_plugin(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (!strcmp(k, "name")) lua_pushstring(L, p->lp->p.name);
    else if (!strcmp(k, "kind")) lua_pushstring(L, saefw_plugin_kind_name(p->lp->p.kind));
    else if (!strcmp(k, "path")) lua_pushstring(L, p->lp->path ? p->lp->path : "(lua)");
    else if (!strcmp(k, "description")) lua_pushstring(L, p->lp->p.description ? p->lp->p.description : "");
    else if (!strcmp(k, "options")) {
        lua_newtable(L);
        for (int i = 0; i < p->opts->n; i++) {
            const saefw_option *s = &p->opts->spec[i];
            if (s->type == SAEFW_OPT_STRING) {
                if (p->opts->str[i]) lua_pushstring(L, p->opts->str[i]);
                else lua_pushnil(L);
            } else if (s->type == SAEFW_OPT_BOOL) {
                lua_pushboolean(L, p->opts->num[i] != 0);
            } else {
                lua_pushnumber(L, p->opts->num[i]);
            }
            lua_setfield(L, -2, s->name);
        }
    } else lua_pushnil(L);
    return 1;
}



/* ---- plugins written in Lua ---- */

static int traceback_handler(lua_State *L);

/* A Lua table of callbacks run as a plugin: each callback gets a context object (step, parameters
 * as tensor views, metrics, the run's RNG). For prototyping: port it to C when it is hot. */

#define MT_LUA_PLUGIN_CTX "saefw.PluginContext"
#define MT_TENSOR_VIEW "saefw.TensorView"

#define MT_STATE_IO "saefw.PluginState"

enum { LP_AFTER_BACKWARD, LP_AFTER_STEP, LP_ON_EVAL, LP_ON_END, LP_STEP, LP_SAVE_STATE, LP_LOAD_STATE, LP_N };
static const char *const LP_NAMES[LP_N] = {"after_backward", "after_step", "on_eval", "on_end",
                                           "step",           "save_state", "load_state"};

/* The writer or reader handed to a Lua plugin's save_state / load_state: valid during that call. */
typedef struct {
    void *io; /* saefw_state_writer * or saefw_state_reader *; NULL once the call returned */
    int writer;
} lstate_io;

typedef struct {
    lua_State *L;
    int fn_ref[LP_N];
    int ctx_ref;
    char name[64];
} lua_plugin_state;

typedef struct {
    saefw_run *run; /* set only while a callback runs */
    unsigned long generation;
} lplugin_ctx;

typedef struct {
    saefw_param p;
    unsigned long generation; /* views die when the callback that made them returns */
} ltensor_view;

static unsigned long g_view_generation = 1;

static lplugin_ctx *check_ctx(lua_State *L, int idx) {
    lplugin_ctx *c = luaL_checkudata(L, idx, MT_LUA_PLUGIN_CTX);
    if (!c->run) saefw_lua_error(L, "the plugin context is only valid inside its callback");
    return c;
}

static ltensor_view *check_view(lua_State *L, int idx) {
    ltensor_view *v = luaL_checkudata(L, idx, MT_TENSOR_VIEW);
    if (v->generation != g_view_generation) saefw_lua_error(L, "tensor view used after its callback returned");
    return v;
}

/* Flat 0-based offset from 1-based (i) or (i, j) at stack positions first, first+1; nvals values
 * follow the index. A 1-D tensor also takes (i, 1), as a column, so that t:set(i, 1, v) writes v. */
static int64_t view_offset(lua_State *L, ltensor_view *v, int first, int nvals, int *next) {
    lua_Integer i = luaL_checkinteger(L, first);
    int64_t off;
    if (v->p.ndim != 2 && lua_gettop(L) >= first + 1 + nvals) {
        lua_Integer j = luaL_checkinteger(L, first + 1);
        if (j != 1)
            saefw_lua_error(L, "%s is 1-D: its second index must be 1, got %lld", v->p.name, (long long)j);
        if (i < 1 || i > v->p.shape[0])
            saefw_lua_error(L, "%s[%lld] is out of range [%lld]", v->p.name, (long long)i, (long long)v->p.shape[0]);
        *next = first + 2;
        return i - 1;
    }
    if (v->p.ndim == 2) {
        lua_Integer j = luaL_checkinteger(L, first + 1);
        if (i < 1 || i > v->p.shape[0] || j < 1 || j > v->p.shape[1])
            saefw_lua_error(L, "%s[%lld, %lld] is out of range [%lld, %lld]", v->p.name, (long long)i, (long long)j,
                   (long long)v->p.shape[0], (long long)v->p.shape[1]);
        off = (int64_t)(i - 1) * v->p.shape[1] + (j - 1);
        *next = first + 2;
    } else {
        if (i < 1 || i > v->p.shape[0])
            saefw_lua_error(L, "%s[%lld] is out of range [%lld]", v->p.name, (long long)i, (long long)v->p.shape[0]);
        off = i - 1;
        *next = first + 1;
    }
    return off;
}

/* t:get(i[, j]), t:set(i[, j], v), and the same on the gradient: grad(), set_grad(). */
static int view_access(lua_State *L, int grad, int set) {
    ltensor_view *v = check_view(L, 1);
    int next;
    int64_t off = view_offset(L, v, 2, set, &next);
    float *a = grad ? v->p.grad : v->p.data;
    if (!set) {
        lua_pushnumber(L, a[off]);
        return 1;
    }
    a[off] = (float)luaL_checknumber(L, next);
    return 0;
}

static int view_get(lua_State *L) { return view_access(L, 0, 0); }
static int view_set(lua_State *L) { return view_access(L, 0, 1); }
static int view_grad(lua_State *L) { return view_access(L, 1, 0); }
static int view_set_grad(lua_State *L) { return view_access(L, 1, 1); }

static int view_index(lua_State *L) {
    ltensor_view *v = check_view(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (!strcmp(k, "name")) lua_pushstring(L, v->p.name);
    else if (!strcmp(k, "rows")) lua_pushinteger(L, v->p.shape[0]);
    else if (!strcmp(k, "cols")) lua_pushinteger(L, v->p.ndim == 2 ? v->p.shape[1] : 1);
    else if (!strcmp(k, "numel")) lua_pushinteger(L, v->p.numel);
    else {
        luaL_getmetafield(L, 1, "methods");
        lua_getfield(L, -1, k);
    }
    return 1;
}

static int view_gc(lua_State *L) { return 0; }

static int ctx_param(lua_State *L) {
    lplugin_ctx *c = check_ctx(L, 1);
    const char *name = luaL_checkstring(L, 2);
    ltensor_view *v = lua_newuserdatauv(L, sizeof *v, 0);
    v->p.struct_size = sizeof v->p;
    if (saefw_host_table()->param_find(c->run, name, &v->p, NULL) != 0)
        return saefw_lua_error(L, "ctx:param: no tensor named '%s' (W_enc, W_dec, b_enc, b_dec)", name);
    v->generation = g_view_generation;
    luaL_setmetatable(L, MT_TENSOR_VIEW);
    return 1;
}

static int ctx_metric(lua_State *L) {
    lplugin_ctx *c = check_ctx(L, 1);
    saefw_host_table()->metric(c->run, luaL_checkstring(L, 2), luaL_checknumber(L, 3));
    return 0;
}

static int ctx_log(lua_State *L) {
    lplugin_ctx *c = check_ctx(L, 1);
    saefw_host_table()->log(c->run, SAEFW_LOG_INFO, luaL_checkstring(L, 2));
    return 0;
}

static int ctx_uniform(lua_State *L) {
    lua_pushnumber(L, saefw_host_table()->rng_uniform(check_ctx(L, 1)->run));
    return 1;
}

static int ctx_normal(lua_State *L) {
    lua_pushnumber(L, saefw_host_table()->rng_normal(check_ctx(L, 1)->run));
    return 1;
}

/* What a C plugin reaches through the host, for Lua plugins: the batch, feature counts and
 * frequencies, optimizer-state reset, the learning rate and the loss coefficients. Arrays come back
 * as saefw.Tensor copies (shape, get, to_table). */
static float *push_tensor(lua_State *L, int ndim, const int64_t *shape);

/* ctx:batch_inputs() -> Tensor [rows, d_in]; ctx:batch_acts() -> Tensor [rows, d_sae] (after_backward
 * and after_step only). */
static int ctx_batch(lua_State *L, int acts) {
    lplugin_ctx *c = check_ctx(L, 1);
    const saefw_host *h = saefw_host_table();
    int64_t rows = 0;
    const float *x = acts ? h->batch_acts(c->run, &rows) : h->batch_inputs(c->run, &rows);
    if (!x)
        return saefw_lua_error(L, "ctx:%s: no training batch here (valid in after_backward and after_step)",
                               acts ? "batch_acts" : "batch_inputs");
    int64_t shape[2] = {rows, acts ? h->d_sae(c->run) : h->d_in(c->run)};
    memcpy(push_tensor(L, 2, shape), x, sizeof(float) * (size_t)(shape[0] * shape[1]));
    return 1;
}

static int ctx_batch_inputs(lua_State *L) { return ctx_batch(L, 0); }
static int ctx_batch_acts(lua_State *L) { return ctx_batch(L, 1); }

/* ctx:feature_counts() -> list [d_sae]: on how many rows of the batch each feature fired. */
static int ctx_feature_counts(lua_State *L) {
    lplugin_ctx *c = check_ctx(L, 1);
    const saefw_host *h = saefw_host_table();
    const int64_t *n = h->batch_feature_counts(c->run);
    if (!n) return saefw_lua_error(L, "ctx:feature_counts: no training batch here (valid in after_backward and after_step)");
    int64_t d = h->d_sae(c->run);
    lua_createtable(L, (int)d, 0);
    for (int64_t j = 0; j < d; j++) {
        lua_pushinteger(L, (lua_Integer)n[j]);
        lua_rawseti(L, -2, (lua_Integer)j + 1);
    }
    return 1;
}

/* ctx:frequencies([n_batches = 5]) -> Tensor [d_sae]: fraction of tokens on which each feature fired
 * over evaluation batches. */
static int ctx_frequencies(lua_State *L) {
    lplugin_ctx *c = check_ctx(L, 1);
    const saefw_host *h = saefw_host_table();
    lua_Integer nb = luaL_optinteger(L, 2, 5);
    if (nb < 1) return saefw_lua_error(L, "ctx:frequencies: n_batches must be >= 1, got %lld", (long long)nb);
    int64_t shape[1] = {h->d_sae(c->run)};
    float *freq = push_tensor(L, 1, shape);
    char err[512];
    if (h->feature_frequencies(c->run, (int64_t)nb, freq, err, sizeof err) != 0)
        return saefw_lua_error(L, "ctx:frequencies: %s", err);
    return 1;
}

/* ctx:reset_optimizer_state([name [, axis, {indices}]]): zero the optimizer's state of every
 * tensor (no name), of one tensor, or of its slices along axis (1-based, as the indices). */
static int ctx_reset_optimizer_state(lua_State *L) {
    lplugin_ctx *c = check_ctx(L, 1);
    const saefw_host *h = saefw_host_table();
    const char *fn = "ctx:reset_optimizer_state";
    int index = -1;
    if (!lua_isnoneornil(L, 2)) {
        saefw_param p;
        p.struct_size = sizeof p;
        const char *name = luaL_checkstring(L, 2);
        if (h->param_find(c->run, name, &p, &index) != 0) return saefw_lua_error(L, "%s: no tensor named '%s'", fn, name);
    }
    int axis = 0;
    int64_t *idx = NULL, n = 0;
    if (!lua_isnoneornil(L, 3)) {
        if (index < 0) return saefw_lua_error(L, "%s: an axis needs a tensor name", fn);
        axis = (int)luaL_checkinteger(L, 3) - 1;
        luaL_checktype(L, 4, LUA_TTABLE);
        n = (int64_t)lua_rawlen(L, 4);
        idx = lua_newuserdatauv(L, sizeof(int64_t) * (size_t)(n > 0 ? n : 1), 0);
        for (int64_t i = 0; i < n; i++) {
            lua_rawgeti(L, 4, (lua_Integer)i + 1);
            int ok;
            lua_Integer v = lua_tointegerx(L, -1, &ok);
            lua_pop(L, 1);
            if (!ok) return saefw_lua_error(L, "%s: indices[%lld] is not an integer", fn, (long long)i + 1);
            idx[i] = (int64_t)v - 1;
        }
    }
    char err[512];
    if (h->reset_optimizer_state(c->run, index, axis, idx, n, err, sizeof err) != 0)
        return saefw_lua_error(L, "%s: %s", fn, err);
    return 0;
}

/* ctx:set_lr(v): the engine-owned learning rate (ctx.lr reads it). */
static int ctx_set_lr(lua_State *L) {
    lplugin_ctx *c = check_ctx(L, 1);
    char err[512];
    if (saefw_host_table()->set_learning_rate(c->run, luaL_checknumber(L, 2), err, sizeof err) != 0)
        return saefw_lua_error(L, "ctx:set_lr: %s", err);
    return 0;
}

/* ctx:loss_coeff(name) -> number; ctx:set_loss_coeff(name, v) ("l1": the L1 coefficient). */
static int ctx_loss_coeff(lua_State *L) {
    lplugin_ctx *c = check_ctx(L, 1);
    const char *name = luaL_checkstring(L, 2);
    double v;
    if (saefw_host_table()->loss_coeff(c->run, name, &v) != 0)
        return saefw_lua_error(L, "ctx:loss_coeff: no loss coefficient named '%s'", name);
    lua_pushnumber(L, v);
    return 1;
}

static int ctx_set_loss_coeff(lua_State *L) {
    lplugin_ctx *c = check_ctx(L, 1);
    char err[512];
    if (saefw_host_table()->set_loss_coeff(c->run, luaL_checkstring(L, 2), luaL_checknumber(L, 3), err, sizeof err) != 0)
        return saefw_lua_error(L, "ctx:set_loss_coeff: %s", err);
    return 0;
}

static int ctx_index(lua_State *L) {
    lplugin_ctx *c = check_ctx(L, 1);
    const char *k = luaL_checkstring(L, 2);
    const saefw_host *h = saefw_host_table();
    if (!strcmp(k, "step")) lua_pushinteger(L, h->step(c->run));
    else if (!strcmp(k, "tokens")) lua_pushinteger(L, h->tokens_seen(c->run));
    else if (!strcmp(k, "d_in")) lua_pushinteger(L, h->d_in(c->run));
    else if (!strcmp(k, "d_sae")) lua_pushinteger(L, h->d_sae(c->run));
    else if (!strcmp(k, "lr")) lua_pushnumber(L, h->learning_rate(c->run));
    else if (!strcmp(k, "l1_coeff")) {
        double v = 0;
        h->loss_coeff(c->run, "l1", &v);
        lua_pushnumber(L, v);
    }
    else {
        luaL_getmetafield(L, 1, "methods");
        lua_getfield(L, -1, k);
    }
    return 1;
}

static int ctx_gc(lua_State *L) { return 0; }

/* Call callback `which` with ctx, and for save_state / load_state the writer or reader io. */
static int lua_plugin_call_io(void *self, saefw_run *run, int which, void *io, int writer, char *err, size_t errlen) {
    lua_plugin_state *st = self;
    if (st->fn_ref[which] == LUA_NOREF) return 0;
    lua_State *L = st->L;
    lua_pushcfunction(L, traceback_handler);
    int h = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->fn_ref[which]);
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->ctx_ref);
    lplugin_ctx *c = lua_touserdata(L, -1);
    c->run = run;
    lstate_io *sio = NULL;
    if (io) {
        sio = lua_newuserdatauv(L, sizeof *sio, 0);
        sio->io = io;
        sio->writer = writer;
        luaL_setmetatable(L, MT_STATE_IO);
    }
    int rc = lua_pcall(L, io ? 2 : 1, 0, h);
    if (sio) sio->io = NULL;
    c->run = NULL;
    g_view_generation++;
    if (rc != LUA_OK) {
        saefw_errf(err, errlen, "%s", lua_tostring(L, -1));
        lua_pop(L, 2);
        return -1;
    }
    lua_pop(L, 1);
    return 0;
}

static int lua_plugin_call(void *self, saefw_run *run, int which, char *err, size_t errlen) {
    return lua_plugin_call_io(self, run, which, NULL, 0, err, errlen);
}

static int lp_save_state(void *s, saefw_run *r, saefw_state_writer *w, char *e, size_t n) {
    return lua_plugin_call_io(s, r, LP_SAVE_STATE, w, 1, e, n);
}
static int lp_load_state(void *s, saefw_run *r, saefw_state_reader *rd, char *e, size_t n) {
    return lua_plugin_call_io(s, r, LP_LOAD_STATE, rd, 0, e, n);
}

static lstate_io *check_state_io(lua_State *L, int writer) {
    lstate_io *s = luaL_checkudata(L, 1, MT_STATE_IO);
    if (!s->io) saefw_lua_error(L, "the plugin state is only valid inside save_state / load_state");
    if (s->writer != writer)
        saefw_lua_error(L, "state:%s: this is the %s", writer ? "put" : "get", s->writer ? "writer of save_state" : "reader of load_state");
    return s;
}

/* state:put(name, v): a number, or a list of numbers (kept as float32, its length beside it). */
static int state_put(lua_State *L) {
    lstate_io *s = check_state_io(L, 1);
    const saefw_host *h = saefw_host_table();
    const char *name = luaL_checkstring(L, 2);
    char err[512], lname[300];
    snprintf(lname, sizeof lname, "%.250s#n", name);
    int rc;
    if (lua_type(L, 3) == LUA_TNUMBER) {
        rc = h->state_put_number(s->io, name, lua_tonumber(L, 3), err, sizeof err);
    } else {
        luaL_checktype(L, 3, LUA_TTABLE);
        int64_t n = (int64_t)lua_rawlen(L, 3);
        float *x = lua_newuserdatauv(L, sizeof(float) * (size_t)(n > 0 ? n : 1), 0);
        for (int64_t i = 0; i < n; i++) {
            lua_rawgeti(L, 3, (lua_Integer)i + 1);
            int ok;
            x[i] = (float)lua_tonumberx(L, -1, &ok);
            lua_pop(L, 1);
            if (!ok) return saefw_lua_error(L, "state:put: %s[%lld] is not a number", name, (long long)i + 1);
        }
        rc = h->state_put_number(s->io, lname, (double)n, err, sizeof err);
        if (rc == 0) rc = h->state_put_f32(s->io, name, x, n, err, sizeof err);
    }
    if (rc != 0) return saefw_lua_error(L, "state:put: %s", err);
    return 0;
}

/* state:get(name) -> the number, or the list, that save_state put under name. */
static int state_get(lua_State *L) {
    lstate_io *s = check_state_io(L, 0);
    const saefw_host *h = saefw_host_table();
    const char *name = luaL_checkstring(L, 2);
    char err[512], lname[300];
    snprintf(lname, sizeof lname, "%.250s#n", name);
    double n;
    if (h->state_get_number(s->io, lname, &n, err, sizeof err) != 0) {
        double v;
        if (h->state_get_number(s->io, name, &v, err, sizeof err) != 0) return saefw_lua_error(L, "state:get: %s", err);
        lua_pushnumber(L, v);
        return 1;
    }
    if (!(n >= 0 && n <= 1e12)) return saefw_lua_error(L, "state:get: %s: bad length", name);
    float *x = lua_newuserdatauv(L, sizeof(float) * (size_t)(n > 0 ? n : 1), 0);
    if (h->state_get_f32(s->io, name, x, (int64_t)n, err, sizeof err) != 0) return saefw_lua_error(L, "state:get: %s", err);
    lua_createtable(L, (int)n, 0);
    for (int64_t i = 0; i < (int64_t)n; i++) {
        lua_pushnumber(L, x[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

static int state_io_index(lua_State *L) {
    luaL_getmetafield(L, 1, "methods");
    lua_getfield(L, -1, luaL_checkstring(L, 2));
    return 1;
}

static int state_io_gc(lua_State *L) { return 0; }

static int lp_after_backward(void *s, saefw_run *r, char *e, size_t n) { return lua_plugin_call(s, r, LP_AFTER_BACKWARD, e, n); }
static int lp_after_step(void *s, saefw_run *r, char *e, size_t n) { return lua_plugin_call(s, r, LP_AFTER_STEP, e, n); }
static int lp_on_eval(void *s, saefw_run *r, char *e, size_t n) { return lua_plugin_call(s, r, LP_ON_EVAL, e, n); }
static int lp_on_end(void *s, saefw_run *r, char *e, size_t n) { return lua_plugin_call(s, r, LP_ON_END, e, n); }
static int lp_step(void *s, saefw_run *r, char *e, size_t n) { return lua_plugin_call(s, r, LP_STEP, e, n); }

typedef struct {
    lplugin base;               /* so check_plugin accepts it: lp points at `loaded` */
    saefw_loaded_plugin loaded;
    lua_plugin_state st;
} llua_plugin;

static void lua_plugin_release(lua_State *L, lplugin *base) {
    llua_plugin *p = (llua_plugin *)base;
    for (int i = 0; i < LP_N; i++) luaL_unref(L, LUA_REGISTRYINDEX, p->st.fn_ref[i]);
    luaL_unref(L, LUA_REGISTRYINDEX, p->st.ctx_ref);
    for (int i = 0; i < LP_N; i++) p->st.fn_ref[i] = LUA_NOREF;
    p->st.ctx_ref = LUA_NOREF;
    saefw_opts_free(p->base.opts);
    p->base.lp = NULL;
    p->base.opts = NULL;
}

/* saefw.lua_plugin{name=, kind="experiment"|"resampler"|"optimizer", after_backward=fn, after_step=fn,
 * on_eval=fn, on_end=fn, step=fn (optimizers)} -> a plugin to pass to saefw.train. */
static int l_lua_plugin(lua_State *L) {
    static const char *const keys[] = {"name", "kind", "after_backward", "after_step", "on_eval", "on_end", "step",
                                       "save_state", "load_state", "description", "stateless", NULL};
    const char *fn = "saefw.lua_plugin";
    saefw_lua_check_table(L, 1, fn);
    saefw_lua_check_keys(L, 1, fn, keys);
    const char *name = saefw_lua_opt_string(L, 1, fn, "name", NULL);
    if (!name || !*name) return saefw_lua_error(L, "%s: field 'name' is required", fn);
    const char *kind = saefw_lua_opt_string(L, 1, fn, "kind", "experiment");
    saefw_plugin_kind k;
    if (!strcmp(kind, "experiment")) k = SAEFW_KIND_EXPERIMENT;
    else if (!strcmp(kind, "resampler")) k = SAEFW_KIND_RESAMPLER;
    else if (!strcmp(kind, "optimizer")) k = SAEFW_KIND_OPTIMIZER;
    else return saefw_lua_error(L, "%s: field 'kind' must be \"experiment\", \"resampler\" or \"optimizer\", got \"%s\"", fn, kind);
    const char *desc = saefw_lua_opt_string(L, 1, fn, "description", "a plugin written in Lua");
    llua_plugin *p = lua_newuserdatauv(L, sizeof *p, 1);
    memset(p, 0, sizeof *p);
    for (int i = 0; i < LP_N; i++) p->st.fn_ref[i] = LUA_NOREF;
    p->st.ctx_ref = LUA_NOREF;
    p->base.is_lua = 1;
    luaL_setmetatable(L, MT_PLUGIN);
    int ud = lua_gettop(L);
    /* Keep the name and description strings alive with the plugin. */
    lua_newtable(L);
    lua_pushstring(L, name);
    lua_rawseti(L, -2, 1);
    lua_pushstring(L, desc);
    lua_rawseti(L, -2, 2);
    lua_rawgeti(L, -1, 1);
    const char *kept_name = lua_tostring(L, -1);
    lua_rawgeti(L, -2, 2);
    const char *kept_desc = lua_tostring(L, -1);
    lua_pop(L, 2);
    lua_setiuservalue(L, ud, 1);

    p->st.L = L;
    snprintf(p->st.name, sizeof p->st.name, "%s", name);
    int any = 0;
    for (int i = 0; i < LP_N; i++) {
        int ty = lua_getfield(L, 1, LP_NAMES[i]);
        if (ty == LUA_TNIL) {
            lua_pop(L, 1);
            continue;
        }
        if (ty != LUA_TFUNCTION) return saefw_lua_error(L, "%s: field '%s' must be a function", fn, LP_NAMES[i]);
        p->st.fn_ref[i] = luaL_ref(L, LUA_REGISTRYINDEX);
        any = 1;
    }
    if (!any) return saefw_lua_error(L, "%s: give at least one callback (after_backward, after_step, on_eval, on_end, step)", fn);
    if (k == SAEFW_KIND_OPTIMIZER && p->st.fn_ref[LP_STEP] == LUA_NOREF)
        return saefw_lua_error(L, "%s: an optimizer needs a 'step' callback", fn);
    lplugin_ctx *c = lua_newuserdatauv(L, sizeof *c, 0);
    memset(c, 0, sizeof *c);
    luaL_setmetatable(L, MT_LUA_PLUGIN_CTX);
    p->st.ctx_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    saefw_plugin *pl = &p->loaded.p;
    pl->abi_version = SAEFW_ABI_VERSION;
    pl->struct_size = sizeof *pl;
    pl->name = kept_name;
    pl->kind = k;
    pl->description = kept_desc;
    /* Lua-side state is not saved in checkpoints; a plugin keeping none says so to silence the warning. */
    pl->stateless = saefw_lua_opt_bool(L, 1, fn, "stateless", 0);
    /* No create(): the run borrows this state as the instance (saefw_plugin_use.self). */
    pl->after_backward = p->st.fn_ref[LP_AFTER_BACKWARD] != LUA_NOREF ? lp_after_backward : NULL;
    pl->after_step = p->st.fn_ref[LP_AFTER_STEP] != LUA_NOREF ? lp_after_step : NULL;
    pl->on_eval = p->st.fn_ref[LP_ON_EVAL] != LUA_NOREF ? lp_on_eval : NULL;
    pl->on_end = p->st.fn_ref[LP_ON_END] != LUA_NOREF ? lp_on_end : NULL;
    pl->step = p->st.fn_ref[LP_STEP] != LUA_NOREF ? lp_step : NULL;
    if ((p->st.fn_ref[LP_SAVE_STATE] == LUA_NOREF) != (p->st.fn_ref[LP_LOAD_STATE] == LUA_NOREF))
        return saefw_lua_error(L, "%s: give both save_state and load_state, or neither", fn);
    pl->save_state = p->st.fn_ref[LP_SAVE_STATE] != LUA_NOREF ? lp_save_state : NULL;
    pl->load_state = p->st.fn_ref[LP_LOAD_STATE] != LUA_NOREF ? lp_load_state : NULL;
    p->loaded.path = NULL;
    p->base.lp = &p->loaded;
    char err[256];
    if (saefw_opts_new(&p->loaded, &p->base.opts, err, sizeof err) != 0) return saefw_lua_error(L, "%s: %s", fn, err);
    lua_settop(L, ud);
    return 1;
}

/* ---- the model host ---- */

typedef struct {
    saefw_model *m;
    char name[256];
} lmodel;

typedef struct {
    saefw_tokens *t;
} ltokens;

static lmodel *check_model(lua_State *L, int idx) {
    lmodel *m = luaL_testudata(L, idx, MT_MODEL);
    if (!m || !m->m) saefw_lua_error(L, "expected a model (saefw.model), got %s", luaL_typename(L, idx));
    return m;
}

static ltokens *check_tokens(lua_State *L, int idx) {
    ltokens *t = luaL_testudata(L, idx, MT_TOKENS);
    if (!t || !t->t) saefw_lua_error(L, "expected tokens (saefw.tokens), got %s", luaL_typename(L, idx));
    return t;
}

saefw_sae *saefw_lua_check_sae(lua_State *L, int idx) { return &check_sae(L, idx)->sae; }
saefw_model *saefw_lua_check_model(lua_State *L, int idx) { return check_model(L, idx)->m; }
saefw_tokens *saefw_lua_check_tokens(lua_State *L, int idx) { return check_tokens(L, idx)->t; }

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
        if (saefw_read_file(config, &text, NULL, err, sizeof err) != 0) return saefw_lua_error(L, "saefw.model: %s", err);
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
    lmodel *m = check_model(L, 1);
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

/* ---- Tensor: a float32 array owned by Lua (model:run's results) ---- */

typedef struct {
    int ndim;
    int64_t shape[4];
    int64_t numel;
    float data[]; /* [numel], row-major */
} ltensor;

static ltensor *new_tensor(lua_State *L, int ndim, const int64_t *shape) {
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) numel *= shape[d];
    ltensor *t = lua_newuserdatauv(L, sizeof *t + sizeof(float) * (size_t)numel, 0);
    t->ndim = ndim;
    t->numel = numel;
    for (int d = 0; d < 4; d++) t->shape[d] = d < ndim ? shape[d] : 1;
    luaL_setmetatable(L, MT_TENSOR);
    return t;
}

static ltensor *check_tensor(lua_State *L, int idx) { return luaL_checkudata(L, idx, MT_TENSOR); }

static float *push_tensor(lua_State *L, int ndim, const int64_t *shape) { return new_tensor(L, ndim, shape)->data; }

/* t:get(i, j, ...) with one 1-based index per dimension. */
static int tensor_get(lua_State *L) {
    ltensor *t = check_tensor(L, 1);
    if (lua_gettop(L) - 1 != t->ndim)
        return saefw_lua_error(L, "tensor:get: expected %d indices (one per dimension), got %d", t->ndim, lua_gettop(L) - 1);
    int64_t off = 0;
    for (int d = 0; d < t->ndim; d++) {
        lua_Integer i = luaL_checkinteger(L, 2 + d);
        if (i < 1 || i > t->shape[d])
            return saefw_lua_error(L, "tensor:get: index %d is %lld, outside [1, %lld]", d + 1, (long long)i,
                                   (long long)t->shape[d]);
        off = off * t->shape[d] + (i - 1);
    }
    lua_pushnumber(L, t->data[off]);
    return 1;
}

static void push_nested(lua_State *L, const ltensor *t, int d, int64_t *off) {
    const int64_t n = d < 4 ? t->shape[d] : 0;
    lua_createtable(L, (int)n, 0);
    for (int64_t i = 0; i < n; i++) {
        if (d >= t->ndim - 1 || d >= 3) lua_pushnumber(L, t->data[(*off)++]);
        else push_nested(L, t, d + 1, off);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

/* t:to_table(): nested Lua tables, t:to_table()[i][j] == t:get(i, j). */
static int tensor_to_table(lua_State *L) {
    ltensor *t = check_tensor(L, 1);
    int64_t off = 0;
    luaL_checkstack(L, t->ndim + 4, "tensor:to_table");
    push_nested(L, t, 0, &off);
    return 1;
}

static int tensor_index(lua_State *L) {
    ltensor *t = check_tensor(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (!strcmp(k, "shape")) {
        lua_createtable(L, t->ndim, 0);
        for (int d = 0; d < t->ndim; d++) {
            lua_pushinteger(L, t->shape[d]);
            lua_rawseti(L, -2, d + 1);
        }
    } else if (!strcmp(k, "ndim")) {
        lua_pushinteger(L, t->ndim);
    } else if (!strcmp(k, "numel")) {
        lua_pushinteger(L, t->numel);
    } else {
        luaL_getmetafield(L, 1, "methods");
        lua_getfield(L, -1, k);
    }
    return 1;
}

static int tensor_gc(lua_State *L) { return 0; }

/* Token ids [B, T] of model:run's first argument: a list of ids (one row), a list of equally long
 * rows, or tokens with opts.rows (1-based row numbers). Returns a malloc'd array. */
static int32_t *run_tokens(lua_State *L, lmodel *m, int opts, int64_t *B, int64_t *T) {
    const char *fn = "model:run";
    const saefw_model_cfg *c = saefw_model_config(m->m);
    char err[1024];
    int32_t *ids = NULL;
    if (luaL_testudata(L, 2, MT_TOKENS)) {
        saefw_tokens *tok = check_tokens(L, 2)->t;
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
    if (*T > c->n_ctx) saefw_lua_error(L, "%s: %lld tokens per row, more than the model's n_ctx %d", fn, (long long)*T, c->n_ctx);
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
    lmodel *m = check_model(L, 1);
    if (lua_isnoneornil(L, 3)) {
        lua_settop(L, 2);
        lua_newtable(L);
    }
    saefw_lua_check_table(L, 3, fn);
    saefw_lua_check_keys(L, 3, fn, keys);
    int layer = (int)saefw_lua_opt_int(L, 3, fn, "layer", 0, 0);
    lua_getfield(L, 3, "sites");
    if (!lua_istable(L, -1)) return saefw_lua_error(L, "%s: field 'sites' (a list of hook names, \"logits\", \"loss\") is required", fn);
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
            if (!logits) logits = new_tensor(L, 3, shape)->data;
            else lua_getfield(L, result, "logits");
            lua_setfield(L, result, "logits");
        } else {
            saefw_hook h;
            if (saefw_model_hook_resolve(m->m, name, strncmp(name, "blocks.", 7) ? layer : -1, &h, err, sizeof err) != 0)
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
                caps[n_caps].out = new_tensor(L, nd, shape)->data;
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
    saefw_forward_opts o = {.captures = caps, .n_captures = n_caps, .logits_out = logits,
                            .loss_out = want_loss ? &loss : NULL};
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
    if (saefw_tokens_open_any(&o, column, -1, &t->t, err, sizeof err) != 0) return saefw_lua_error(L, "%s: %s", fn, err);
    return 1;
}

static int tokens_index(lua_State *L) {
    ltokens *t = check_tokens(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (!strcmp(k, "rows")) lua_pushinteger(L, saefw_tokens_rows(t->t));
    else if (!strcmp(k, "seq_len")) lua_pushinteger(L, saefw_tokens_seq_len(t->t));
    else if (!strcmp(k, "pass")) lua_pushinteger(L, saefw_tokens_pass(t->t));
    else lua_pushnil(L);
    return 1;
}

static saefw_hook read_hook(lua_State *L, int t, const char *fn, const saefw_model *m) {
    const char *site = saefw_lua_opt_string(L, t, fn, "site", NULL);
    if (!site) saefw_lua_error(L, "%s: field 'site' is required (a hook name such as \"post\" or \"blocks.0.mlp.hook_post\")", fn);
    /* A full name ("blocks.1.mlp.hook_post") carries its layer; a short one defaults to layer 0. */
    int64_t layer = saefw_lua_has_field(L, t, "layer") ? saefw_lua_opt_int(L, t, fn, "layer", 0, 0) : (strncmp(site, "blocks.", 7) ? 0 : -1);
    saefw_hook h;
    char err[512];
    if (saefw_hook_parse(site, (int)layer, &h, err, sizeof err) != 0) saefw_lua_error(L, "%s: %s", fn, err);
    int width = saefw_model_hook_width(m, h);
    if (width < 0)
        saefw_lua_error(L, "%s: layer %d is out of range: the model has %d layer(s)", fn, h.layer, saefw_model_config(m)->n_layers);
    if (width == 0) saefw_lua_error(L, "%s: %s is not one row per token (read it with model:run)", fn, site);
    return h;
}

/* saefw.model_source{model=, tokens=, site=, layer=, model_batch_size=, seed=}: activations at a hook. */
static int l_model_source(lua_State *L) {
    static const char *const keys[] = {"model", "tokens", "site", "layer", "model_batch_size", "seed", NULL};
    const char *fn = "saefw.model_source";
    saefw_lua_check_table(L, 1, fn);
    saefw_lua_check_keys(L, 1, fn, keys);
    lua_getfield(L, 1, "model");
    lmodel *m = check_model(L, -1);
    int mi = lua_gettop(L);
    lua_getfield(L, 1, "tokens");
    ltokens *t = check_tokens(L, -1);
    int ti = lua_gettop(L);
    saefw_model_source_opts o;
    memset(&o, 0, sizeof o);
    o.model = m->m;
    o.tokens = t->t;
    o.hook = read_hook(L, 1, fn, m->m);
    o.model_batch = saefw_lua_opt_int(L, 1, fn, "model_batch_size", 32, 1);
    o.seed = (uint64_t)saefw_lua_opt_int(L, 1, fn, "seed", SAEFW_DEFAULT_SEED, 0);
    lsource *s = new_source(L);
    lua_pushvalue(L, mi);
    lua_setiuservalue(L, -2, 1);
    lua_pushvalue(L, ti);
    lua_setiuservalue(L, -2, 2);
    char err[1024];
    if (saefw_source_model(&o, &s->src, err, sizeof err) != 0) return saefw_lua_error(L, "%s: %s", fn, err);
    s->src->log = source_log;
    s->on_model = 1;
    s->hook = o.hook;
    s->model_batch = o.model_batch;
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
    lmodel *m = check_model(L, 1);
    ltokens *t = check_tokens(L, 2);
    lsae *s = check_sae(L, 3);
    saefw_lua_check_table(L, 4, fn);
    saefw_lua_check_keys(L, 4, fn, keys);
    saefw_hook h = read_hook(L, 4, fn, m->m);
    int64_t batches = saefw_lua_opt_int(L, 4, fn, "batches", 5, 1), mb = saefw_lua_opt_int(L, 4, fn, "model_batch_size", 32, 1);
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
    lmodel *m = check_model(L, 1);
    ltokens *t = check_tokens(L, 2);
    if (lua_isnoneornil(L, 3)) lua_newtable(L);
    saefw_lua_check_table(L, 3, fn);
    saefw_lua_check_keys(L, 3, fn, keys);
    int64_t batches = saefw_lua_opt_int(L, 3, fn, "batches", 5, 1), mb = saefw_lua_opt_int(L, 3, fn, "model_batch_size", 32, 1);
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

/* saefw.save_tensor(path, values, shape): a float32 tensor from a flat Lua array, as .npy or (any
 * other name) safetensors with one tensor named "tensor"; written atomically. */
static int l_save_tensor(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int64_t n = (int64_t)lua_rawlen(L, 2);
    int64_t shape[SAEFW_MAX_DIMS];
    int ndim = 1;
    shape[0] = n;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        ndim = (int)lua_rawlen(L, 3);
        if (ndim < 1 || ndim > SAEFW_MAX_DIMS) return saefw_lua_error(L, "saefw.save_tensor: shape must have 1 to %d dims", SAEFW_MAX_DIMS);
        int64_t total = 1;
        for (int i = 0; i < ndim; i++) {
            lua_rawgeti(L, 3, i + 1);
            lua_Integer v = lua_tointeger(L, -1);
            lua_pop(L, 1);
            if (v <= 0) return saefw_lua_error(L, "saefw.save_tensor: shape entries must be positive integers");
            shape[i] = v;
            total *= v;
        }
        if (total != n) return saefw_lua_error(L, "saefw.save_tensor: shape holds %lld values, the array %lld", (long long)total, (long long)n);
    }
    if (n <= 0) return saefw_lua_error(L, "saefw.save_tensor: the array is empty");
    float *data = malloc(sizeof(float) * (size_t)n);
    if (!data) return saefw_lua_error(L, "saefw.save_tensor: out of memory");
    for (int64_t k = 0; k < n; k++) {
        lua_rawgeti(L, 2, (lua_Integer)k + 1);
        int ok;
        data[k] = (float)lua_tonumberx(L, -1, &ok);
        lua_pop(L, 1);
        if (!ok) {
            free(data);
            return saefw_lua_error(L, "saefw.save_tensor: entry %lld is not a number", (long long)k + 1);
        }
    }
    char err[1024];
    size_t len = strlen(path);
    int rc;
    if (len > 4 && !strcmp(path + len - 4, ".npy")) {
        rc = saefw_npy_write(path, SAEFW_DT_F32, ndim, shape, data, err, sizeof err);
    } else {
        saefw_tensor_ref ref = {"tensor", SAEFW_DT_F32, ndim, shape, data};
        rc = saefw_safetensors_write(path, &ref, 1, NULL, 0, err, sizeof err);
    }
    free(data);
    if (rc != 0) return saefw_lua_error(L, "saefw.save_tensor: %s", err);
    return 0;
}

static void stderr_line(const char *msg) { fprintf(stderr, "%s\n", msg); }

/* saefw.find_resumable(run_dir) -> the newest intact checkpoint folder holding a training state. */
/* saefw.find_resumable(run_dir) -> the newest intact checkpoint folder holding a training state, or
 * nil and the reason when there is none. */
static int l_find_resumable(lua_State *L) {
    const char *dir = luaL_checkstring(L, 1);
    char out[4096], err[1024];
    if (saefw_checkpoint_find_resumable(dir, out, sizeof out, stderr_line, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushstring(L, out);
    return 1;
}

/* saefw.resume_dir() -> the run folder given with `saefw run ... --resume DIR`, or nil. */
static int l_resume_dir(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, "saefw.resume");
    return 1;
}

/* saefw.threads([n]) -> the threads of the training step and the model's products, after setting them
 * to n when given (0: the default, OPENBLAS_NUM_THREADS, else all cores). */
static int l_threads(lua_State *L) {
    if (!lua_isnoneornil(L, 1)) {
        int ok = 0;
        lua_Integer n = lua_tointegerx(L, 1, &ok);
        if (!ok || n < 0 || n > 4096)
            return saefw_lua_error(L, "saefw.threads: expected a whole number from 0 (the default) to 4096, got %s",
                          luaL_tolstring(L, 1, NULL));
        saefw_set_threads((int)n);
    }
    lua_pushinteger(L, saefw_threads());
    return 1;
}

/* saefw.memory_policy(allow, limit): allow = true runs whatever the memory estimate says; limit (bytes,
 * or a size such as "8G") checks the estimate against it instead of the machine's available memory. */
static int l_memory_policy(lua_State *L) {
    int64_t limit = 0;
    char err[256];
    if (lua_type(L, 2) == LUA_TNUMBER) {
        if (!(lua_tonumber(L, 2) > 0)) return saefw_lua_error(L, "memory_limit: expected a positive size, got %s", luaL_tolstring(L, 2, NULL));
        limit = (int64_t)lua_tonumber(L, 2);
    } else if (lua_type(L, 2) == LUA_TSTRING) {
        if (saefw_mem_parse(lua_tostring(L, 2), &limit, err, sizeof err) != 0) return saefw_lua_error(L, "memory_limit: %s", err);
    } else if (!lua_isnoneornil(L, 2)) {
        return saefw_lua_error(L, "memory_limit: expected a size such as \"8G\" or a number of bytes");
    }
    saefw_mem_set_policy(lua_toboolean(L, 1), limit);
    return 0;
}

/* saefw.data_dir() -> the folder of saefw's bundled data (share/saefw next to the binary). */
static int l_data_dir(lua_State *L) {
    char dir[4096];
    if (saefw_exe_relative(SAEFW_DATA_SUBDIR, dir, sizeof dir) != 0)
        return saefw_lua_error(L, "saefw.data_dir: cannot find the saefw binary");
    lua_pushstring(L, dir);
    return 1;
}

/* saefw.hook_name(site, layer) -> the TransformerLens name ("blocks.0.mlp.hook_post"). */
static int l_hook_name(lua_State *L) {
    const char *site = luaL_checkstring(L, 1);
    lua_Integer layer = luaL_optinteger(L, 2, strncmp(site, "blocks.", 7) ? 0 : -1);
    saefw_hook h;
    char err[512], name[128];
    if (layer < -1 || layer > 100000) return saefw_lua_error(L, "saefw.hook_name: bad layer %lld", (long long)layer);
    if (saefw_hook_parse(site, (int)layer, &h, err, sizeof err) != 0) return saefw_lua_error(L, "saefw.hook_name: %s", err);
    saefw_hook_name(h, name, sizeof name);
    lua_pushstring(L, name);
    return 1;
}

/* ---- training ---- */

typedef struct {
    lua_State *L;
    int fn_idx[3]; /* on_log, on_eval, on_end (0: none) */
    char lua_err[1024];
} train_ud;

static void push_metrics(lua_State *L, const saefw_metrics *m) {
    lua_newtable(L);
#define SETN(k, v) (lua_pushnumber(L, (v)), lua_setfield(L, -2, k))
#define SETI(k, v) (lua_pushinteger(L, (v)), lua_setfield(L, -2, k))
    SETI("step", m->step);
    SETI("steps", m->steps);
    SETI("tokens", m->tokens);
    SETN("loss", m->loss);
    SETN("l2_loss", m->l2);
    SETN("l1_loss", m->l1);
    SETN("l0", m->l0);
    SETN("explained_variance", m->explained_variance);
    SETN("tokens_per_s", m->tokens_per_s);
    SETN("elapsed_s", m->elapsed_s);
    if (m->has_eval) {
        SETN("dead", m->frac_dead);
        SETN("below_1e-6", m->frac_below_1e6);
        SETN("below_1e-5", m->frac_below_1e5);
        for (int i = 0; i < m->n_score; i++)
            if (isfinite(m->score_value[i])) SETN(m->score_name[i], m->score_value[i]);
    }
    for (int i = 0; i < m->n_extra; i++) SETN(m->extra_name[i], m->extra_value[i]);
#undef SETN
#undef SETI
}

static int traceback_handler(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (!msg) msg = "(error object is not a string)";
    lua_pushstring(L, msg);
    return 1;
}

static int on_event(void *vud, saefw_event event, const saefw_metrics *m, char *err, size_t errlen) {
    train_ud *ud = vud;
    int which = event == SAEFW_EVENT_LOG ? 0 : event == SAEFW_EVENT_EVAL ? 1 : 2;
    if (!ud->fn_idx[which]) return SAEFW_EVENT_GO_ON;
    lua_State *L = ud->L;
    lua_pushcfunction(L, traceback_handler);
    int h = lua_gettop(L);
    lua_pushvalue(L, ud->fn_idx[which]);
    push_metrics(L, m);
    if (lua_pcall(L, 1, 1, h) != LUA_OK) {
        snprintf(ud->lua_err, sizeof ud->lua_err, "%s", lua_tostring(L, -1));
        lua_pop(L, 2);
        return saefw_errf(err, errlen, "callback on_%s failed", saefw_event_name(event));
    }
    /* A callback returning false stops the run. */
    int stop = lua_isboolean(L, -1) && !lua_toboolean(L, -1);
    lua_pop(L, 2);
    return stop ? SAEFW_EVENT_STOP : SAEFW_EVENT_GO_ON;
}

static int l_train(lua_State *L) {
    static const char *const keys[] = {"sae", "buffer", "eval_source", "steps", "optimizer", "plugins", "log_every",
                                       "eval_every", "checkpoint_every", "freq_batches", "run_dir", "config", "seed",
                                       "progress", "on_log", "on_eval", "on_end", "recons_batches", "resume_from", "resume",
                                       "allow_change", "recons_eval", NULL};
    const char *fn = "saefw.train";
    saefw_lua_check_table(L, 1, fn);
    saefw_lua_check_keys(L, 1, fn, keys);
    saefw_train_opts o;
    memset(&o, 0, sizeof o);
    lua_getfield(L, 1, "sae");
    o.sae = &check_sae(L, -1)->sae;
    lua_getfield(L, 1, "buffer");
    o.buffer = check_buffer(L, -1);
    /* Evaluators: MMCS when the evaluation draws come with ground truth (a synthetic source), the
     * reconstruction score when the buffer runs on the model host. */
    saefw_evaluator *evs[2];
    int n_evs = 0;
    saefw_recons_evaluator rev;
    saefw_mmcs_evaluator mev;
    lua_getiuservalue(L, -1, 1);
    lsource *bsrc = luaL_testudata(L, -1, MT_SOURCE);
    int64_t recons_batches = saefw_lua_opt_int(L, 1, fn, "recons_batches", 5, 0);
    if (recons_batches > SAEFW_MAX_EVAL_BATCHES) return saefw_lua_error(L, "%s: recons_batches = %lld is more than %d", fn, (long long)recons_batches, SAEFW_MAX_EVAL_BATCHES);
    const int with_recons = bsrc && bsrc->on_model && recons_batches > 0;
    const char *recons_eval = saefw_lua_opt_string(L, 1, fn, "recons_eval", "fixed");
    saefw_recons_mode recons_mode;
    if (saefw_recons_mode_parse(recons_eval, &recons_mode) != 0)
        return saefw_lua_error(L, "%s: recons_eval = '%s' is not one of fixed, fresh", fn, recons_eval);
    if (with_recons) {
        lua_getiuservalue(L, -1, 1);
        const saefw_model *rm = check_model(L, -1)->m;
        lua_getiuservalue(L, -2, 2);
        saefw_recons_evaluator_init(&rev, rm, check_tokens(L, -1)->t, bsrc->hook, recons_batches, bsrc->model_batch,
                                    recons_mode, (uint64_t)saefw_lua_opt_int(L, 1, fn, "seed", SAEFW_DEFAULT_SEED, 0));
    }
    if (lua_getfield(L, 1, "eval_source") != LUA_TNIL) o.eval_source = check_source(L, -1);
    char eerr[256];
    if (saefw_mmcs_evaluator_init(&mev, o.eval_source ? o.eval_source : o.buffer->src, eerr, sizeof eerr) == 0)
        evs[n_evs++] = &mev.ev;
    if (with_recons) evs[n_evs++] = &rev.ev;
    o.evaluators = evs;
    o.n_evaluators = n_evs;
    o.steps = saefw_lua_req_int(L, 1, fn, "steps", 1);
    if (lua_getfield(L, 1, "optimizer") == LUA_TNIL) return saefw_lua_error(L, "%s: field 'optimizer' is required", fn);
    lplugin *op = check_plugin(L, -1);
    o.optimizer.plugin = op->lp;
    o.optimizer.opts = op->opts;
    o.optimizer.self = op->is_lua ? &((llua_plugin *)op)->st : NULL;
    int n_plugins = 0;
    saefw_plugin_use *uses = NULL;
    if (lua_getfield(L, 1, "plugins") != LUA_TNIL) {
        if (!lua_istable(L, -1)) return saefw_lua_error(L, "%s: field 'plugins' must be a list of plugins", fn);
        int t = lua_gettop(L);
        n_plugins = (int)lua_rawlen(L, t);
        uses = lua_newuserdatauv(L, sizeof(saefw_plugin_use) * (size_t)(n_plugins + 1), 0);
        for (int i = 0; i < n_plugins; i++) {
            lua_rawgeti(L, t, i + 1);
            lplugin *p = check_plugin(L, -1);
            if (p->lp->p.kind == SAEFW_KIND_OPTIMIZER)
                return saefw_lua_error(L, "%s: plugins[%d] (%s) is an optimizer; pass it as 'optimizer'", fn, i + 1, p->lp->p.name);
            uses[i].plugin = p->lp;
            uses[i].opts = p->opts;
            uses[i].self = p->is_lua ? &((llua_plugin *)p)->st : NULL;
            lua_pop(L, 1);
        }
    }
    o.plugins = uses;
    o.n_plugins = n_plugins;
    o.log_every = saefw_lua_opt_int(L, 1, fn, "log_every", 100, 0);
    o.eval_every = saefw_lua_opt_int(L, 1, fn, "eval_every", 1000, 0);
    o.checkpoint_every = saefw_lua_opt_int(L, 1, fn, "checkpoint_every", 0, 0);
    o.freq_batches = saefw_lua_opt_int(L, 1, fn, "freq_batches", 5, 1);
    if (o.freq_batches > SAEFW_MAX_EVAL_BATCHES) return saefw_lua_error(L, "%s: freq_batches = %lld is more than %d", fn, (long long)o.freq_batches, SAEFW_MAX_EVAL_BATCHES);
    o.run_dir = saefw_lua_opt_string(L, 1, fn, "run_dir", NULL);
    o.resume_from = saefw_lua_opt_string(L, 1, fn, "resume_from", NULL);
    o.resume = saefw_lua_opt_bool(L, 1, fn, "resume", 0);
    /* allow_change: a list of names, kept alive on the stack until the run ends. */
    if (lua_getfield(L, 1, "allow_change") != LUA_TNIL) {
        if (!lua_istable(L, -1)) return saefw_lua_error(L, "%s: field 'allow_change' must be a list of names", fn);
        int t = lua_gettop(L), n = (int)lua_rawlen(L, t);
        const char **names = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
        for (int i = 0; i < n; i++) {
            lua_rawgeti(L, t, i + 1);
            if (lua_type(L, -1) != LUA_TSTRING) return saefw_lua_error(L, "%s: allow_change[%d] must be a string", fn, i + 1);
            names[i] = lua_tostring(L, -1);
            lua_rawseti(L, t, i + 1); /* the same string, left in the table that keeps it alive */
        }
        o.allow_change = names;
        o.n_allow_change = n;
    }
    o.seed = (uint64_t)saefw_lua_opt_int(L, 1, fn, "seed", SAEFW_DEFAULT_SEED, 0);
    int progress = saefw_lua_opt_bool(L, 1, fn, "progress", 1);
    o.progress = progress ? -1 : 0;
    cJSON *cfg = NULL;
    if (lua_getfield(L, 1, "config") != LUA_TNIL) {
        if (!lua_istable(L, -1)) return saefw_lua_error(L, "%s: field 'config' must be a table", fn);
        cfg = lua_to_json(L, -1, 0);
    }
    lua_pop(L, 1);
    o.cfg = cfg;
    train_ud ud;
    memset(&ud, 0, sizeof ud);
    ud.L = L;
    static const char *const cbs[3] = {"on_log", "on_eval", "on_end"};
    for (int i = 0; i < 3; i++) {
        int ty = lua_getfield(L, 1, cbs[i]);
        if (ty == LUA_TNIL) {
            lua_pop(L, 1);
            continue;
        }
        if (ty != LUA_TFUNCTION) {
            cJSON_Delete(cfg);
            return saefw_lua_error(L, "%s: field '%s' must be a function", fn, cbs[i]);
        }
        ud.fn_idx[i] = lua_gettop(L);
    }
    o.on_event = on_event;
    o.event_ud = &ud;
    saefw_train_result res;
    char err[1024] = "";
    int rc = saefw_train(&o, &res, err, sizeof err);
    if (with_recons) saefw_recons_evaluator_free(&rev);
    cJSON_Delete(cfg);
    if (rc != 0) {
        if (ud.lua_err[0]) {
            lua_pushstring(L, ud.lua_err); /* already carries the callback's file:line */
            return lua_error(L);
        }
        return saefw_lua_error(L, "%s", err);
    }
    push_metrics(L, &res.last);
    lua_pushstring(L, res.last_checkpoint);
    lua_setfield(L, -2, "checkpoint");
    lua_pushinteger(L, res.steps_done);
    lua_setfield(L, -2, "steps_done");
    if (res.stopped_by) {
        lua_pushfstring(L, "on_%s", res.stopped_by);
        lua_setfield(L, -2, "stopped_by");
    }
    return 1;
}

/* ---- analysis ---- */

static int l_frequencies(lua_State *L) {
    lsae *s = check_sae(L, 1);
    saefw_source *src = check_source(L, 2);
    lua_Integer batches = luaL_optinteger(L, 3, 5), batch = luaL_optinteger(L, 4, 4096);
    if (batches <= 0 || batch <= 0) return saefw_lua_error(L, "saefw.frequencies: batches and batch size must be positive");
    if (batches > SAEFW_MAX_EVAL_BATCHES) return saefw_lua_error(L, "saefw.frequencies: batches = %lld is more than %d", (long long)batches, SAEFW_MAX_EVAL_BATCHES);
    if (src->d_act != s->sae.d_in)
        return saefw_lua_error(L, "saefw.frequencies: source width %lld does not match the SAE's d_in %lld", (long long)src->d_act, (long long)s->sae.d_in);
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
    lsae *s = check_sae(L, 1);
    saefw_source *src = check_source(L, 2);
    int64_t n = 0;
    const float *truth = saefw_synthetic_features(src, &n);
    if (!truth) return saefw_lua_error(L, "saefw.mmcs: the source has no ground truth (only saefw.synthetic does)");
    if (src->d_act != s->sae.d_in) return saefw_lua_error(L, "saefw.mmcs: source width does not match the SAE's d_in");
    lua_pushnumber(L, saefw_mmcs(truth, n, s->sae.p[SAEFW_W_DEC], s->sae.d_sae, s->sae.d_in));
    return 1;
}

/* saefw.evaluate(sae, source, rows) -> {loss, l2_loss, l1_loss, l0, explained_variance} on fresh rows. */
static int l_evaluate(lua_State *L) {
    lsae *s = check_sae(L, 1);
    saefw_source *src = check_source(L, 2);
    lua_Integer rows = luaL_optinteger(L, 3, 4096);
    if (rows <= 0 || rows > (1 << 22)) return saefw_lua_error(L, "saefw.evaluate: rows must be in 1..%d", 1 << 22);
    if (src->d_act != s->sae.d_in) return saefw_lua_error(L, "saefw.evaluate: source width does not match the SAE's d_in");
    saefw_sae_work w;
    char err[512];
    if (saefw_sae_work_alloc(&w, &s->sae, rows, err, sizeof err) != 0) return saefw_lua_error(L, "saefw.evaluate: %s", err);
    float *x = malloc(sizeof(float) * (size_t)(rows * src->d_act));
    if (!x || src->sample(src, x, rows, err, sizeof err) != 0) {
        free(x);
        saefw_sae_work_free(&w);
        return saefw_lua_error(L, "saefw.evaluate: %s", x ? err : "out of memory");
    }
    saefw_sae_stats st;
    saefw_sae_forward(&s->sae, &w, x, rows, &st);
    free(x);
    saefw_sae_work_free(&w);
    saefw_metrics m;
    memset(&m, 0, sizeof m);
    m.loss = st.loss;
    m.l2 = st.l2;
    m.l1 = st.l1;
    m.l0 = st.l0;
    m.explained_variance = st.explained_variance;
    push_metrics(L, &m);
    return 1;
}

static int l_info(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    saefw_tensorfile *tf = NULL;
    char err[1024];
    if (saefw_tf_open(path, &tf, err, sizeof err) != 0) return saefw_lua_error(L, "saefw.info: %s", err);
    lua_newtable(L);
    for (int i = 0; i < saefw_tf_count(tf); i++) {
        const saefw_tensor_info *t = saefw_tf_get(tf, i);
        lua_newtable(L);
        lua_pushstring(L, t->name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, saefw_dtype_name(t->dtype));
        lua_setfield(L, -2, "dtype");
        lua_newtable(L);
        for (int k = 0; k < t->ndim; k++) {
            lua_pushinteger(L, t->shape[k]);
            lua_rawseti(L, -2, k + 1);
        }
        lua_setfield(L, -2, "shape");
        lua_rawseti(L, -2, i + 1);
    }
    saefw_tf_close(tf);
    return 1;
}

static int l_plugin_dirs(lua_State *L) {
    char *dirs[32];
    int n = saefw_plugin_dirs(dirs, 32);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushstring(L, dirs[i]);
        lua_rawseti(L, -2, i + 1);
    }
    saefw_plugin_dirs_free(dirs, n);
    return 1;
}

int luaopen_saefw_core(lua_State *L) {
    static const luaL_Reg sae_methods[] = {{"save", sae_save}, {"tensor", sae_tensor}, {NULL, NULL}};
    static const luaL_Reg source_methods[] = {{"sample", source_sample}, {NULL, NULL}};
    saefw_lua_new_class(L, MT_SAE, sae_gc, sae_index, sae_methods);
    saefw_lua_new_class(L, MT_SOURCE, source_gc, source_index, source_methods);
    saefw_lua_new_class(L, MT_BUFFER, buffer_gc, buffer_index, NULL);
    saefw_lua_new_class(L, MT_PLUGIN, plugin_gc, plugin_index, NULL);
    static const luaL_Reg model_methods[] = {{"run", model_run}, {NULL, NULL}};
    saefw_lua_new_class(L, MT_MODEL, model_gc, model_index, model_methods);
    static const luaL_Reg tensor_methods[] = {{"get", tensor_get}, {"to_table", tensor_to_table}, {NULL, NULL}};
    saefw_lua_new_class(L, MT_TENSOR, tensor_gc, tensor_index, tensor_methods);
    static const luaL_Reg ctx_methods[] = {{"param", ctx_param},
                                           {"metric", ctx_metric},
                                           {"log", ctx_log},
                                           {"uniform", ctx_uniform},
                                           {"normal", ctx_normal},
                                           {"batch_inputs", ctx_batch_inputs},
                                           {"batch_acts", ctx_batch_acts},
                                           {"feature_counts", ctx_feature_counts},
                                           {"frequencies", ctx_frequencies},
                                           {"reset_optimizer_state", ctx_reset_optimizer_state},
                                           {"set_lr", ctx_set_lr},
                                           {"loss_coeff", ctx_loss_coeff},
                                           {"set_loss_coeff", ctx_set_loss_coeff},
                                           {NULL, NULL}};
    static const luaL_Reg view_methods[] = {{"get", view_get}, {"set", view_set}, {"grad", view_grad},
                                            {"set_grad", view_set_grad}, {NULL, NULL}};
    saefw_lua_new_class(L, MT_LUA_PLUGIN_CTX, ctx_gc, ctx_index, ctx_methods);
    saefw_lua_new_class(L, MT_TENSOR_VIEW, view_gc, view_index, view_methods);
    static const luaL_Reg state_methods[] = {{"put", state_put}, {"get", state_get}, {NULL, NULL}};
    saefw_lua_new_class(L, MT_STATE_IO, state_io_gc, state_io_index, state_methods);
    saefw_lua_new_class(L, MT_TOKENS, tokens_gc, tokens_index, NULL);
    static const luaL_Reg fns[] = {
        {"sae", l_sae},
        {"load_sae", l_load_sae},
        {"synthetic", l_synthetic},
        {"activations", l_activations},
        {"feed", l_feed},
        {"buffer", l_buffer},
        {"plugin", l_plugin},
        {"train", l_train},
        {"frequencies", l_frequencies},
        {"mmcs", l_mmcs},
        {"evaluate", l_evaluate},
        {"info", l_info},
        {"plugin_dirs", l_plugin_dirs},
        {"lua_plugin", l_lua_plugin},
        {"model", l_model},
        {"tokens", l_tokens},
        {"model_source", l_model_source},
        {"recons_score", l_recons_score},
        {"model_loss", l_model_loss},
        {"hook_name", l_hook_name},
        {"data_dir", l_data_dir},
        {"save_tensor", l_save_tensor},
        {"find_resumable", l_find_resumable},
        {"resume_dir", l_resume_dir},
        {"memory_policy", l_memory_policy},
        {"threads", l_threads},
        {"where", saefw_lua_where},
        {"overrides", saefw_lua_overrides},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    saefw_lua_open_tokenizer(L, lua_gettop(L));
    saefw_lua_register_features(L);
    lua_pushstring(L, SAEFW_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}
