/* Lua bindings: SAE, sources, buffer, plugins, checkpoints and the training loop as userdata with
 * metatables; misuse raises an error naming the argument at the user's script line. */
#include "lua_saefw.h"

#include <lauxlib.h>
#include <lualib.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "plugin_loader.h"
#include "sae.h"
#include "source.h"
#include "tensorfile.h"
#include "train.h"
#include "util.h"

#define MT_SAE "saefw.SAE"
#define MT_SOURCE "saefw.Source"
#define MT_BUFFER "saefw.Buffer"
#define MT_PLUGIN "saefw.Plugin"
#define REG_LIBDIR "saefw.libdir"
#define REG_OVERRIDES "saefw.overrides"

/* ---- errors at the user's line ---- */

/* Push "file:line: " of the innermost Lua frame outside the saefw library (or "" if none). */
static void push_user_where(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, REG_LIBDIR);
    const char *lib = lua_tostring(L, -1);
    size_t liblen = lib ? strlen(lib) : 0;
    lua_Debug ar;
    for (int level = 1; lua_getstack(L, level, &ar); level++) {
        if (!lua_getinfo(L, "Sl", &ar) || ar.currentline <= 0) continue;
        if (lib && ar.source[0] == '@' && strncmp(ar.source + 1, lib, liblen) == 0) continue;
        lua_pop(L, 1);
        lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
        return;
    }
    lua_pop(L, 1);
    lua_pushliteral(L, "");
}

static int uerror(lua_State *L, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    push_user_where(L);
    lua_pushstring(L, msg);
    lua_concat(L, 2);
    return lua_error(L);
}

static int l_where(lua_State *L) {
    push_user_where(L);
    return 1;
}

void saefw_lua_set_libdir(lua_State *L, const char *dir) {
    lua_pushstring(L, dir);
    lua_setfield(L, LUA_REGISTRYINDEX, REG_LIBDIR);
}

void saefw_lua_set_overrides(lua_State *L, char **kv, int n) {
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_createtable(L, 2, 0);
        lua_pushstring(L, kv[2 * i]);
        lua_rawseti(L, -2, 1);
        lua_pushstring(L, kv[2 * i + 1]);
        lua_rawseti(L, -2, 2);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, LUA_REGISTRYINDEX, REG_OVERRIDES);
}

static int l_overrides(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, REG_OVERRIDES);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
    }
    return 1;
}

/* ---- table fields ---- */

static int has_field(lua_State *L, int t, const char *k) {
    int ty = lua_getfield(L, t, k);
    lua_pop(L, 1);
    return ty != LUA_TNIL;
}

static double opt_number(lua_State *L, int t, const char *fn, const char *k, double def) {
    int ty = lua_getfield(L, t, k);
    if (ty == LUA_TNIL) {
        lua_pop(L, 1);
        return def;
    }
    if (ty != LUA_TNUMBER) uerror(L, "%s: field '%s' must be a number, got %s", fn, k, luaL_typename(L, -1));
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (!isfinite(v)) uerror(L, "%s: field '%s' must be finite", fn, k);
    return v;
}

static int64_t opt_int(lua_State *L, int t, const char *fn, const char *k, int64_t def, int64_t lo) {
    double v = opt_number(L, t, fn, k, (double)def);
    if (v != floor(v) || v < (double)lo || v > 9.0e15)
        uerror(L, "%s: field '%s' must be an integer >= %lld, got %g", fn, k, (long long)lo, v);
    return (int64_t)v;
}

static int64_t req_int(lua_State *L, int t, const char *fn, const char *k, int64_t lo) {
    if (!has_field(L, t, k)) uerror(L, "%s: field '%s' is required", fn, k);
    return opt_int(L, t, fn, k, 0, lo);
}

static const char *opt_string(lua_State *L, int t, const char *fn, const char *k, const char *def) {
    int ty = lua_getfield(L, t, k);
    if (ty == LUA_TNIL) {
        lua_pop(L, 1);
        return def;
    }
    if (ty != LUA_TSTRING) uerror(L, "%s: field '%s' must be a string, got %s", fn, k, luaL_typename(L, -1));
    const char *s = lua_tostring(L, -1);
    lua_pop(L, 1); /* the string stays alive: it is referenced by the table */
    return s;
}

static int opt_bool(lua_State *L, int t, const char *fn, const char *k, int def) {
    int ty = lua_getfield(L, t, k);
    if (ty == LUA_TNIL) {
        lua_pop(L, 1);
        return def;
    }
    if (ty != LUA_TBOOLEAN) uerror(L, "%s: field '%s' must be a boolean, got %s", fn, k, luaL_typename(L, -1));
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static void check_table(lua_State *L, int idx, const char *fn) {
    if (lua_type(L, idx) != LUA_TTABLE) uerror(L, "%s: expected a table of options, got %s", fn, luaL_typename(L, idx));
}

/* Reject keys a function does not take (a typo must not silently fall back to a default). */
static void check_keys(lua_State *L, int t, const char *fn, const char *const *allowed) {
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) uerror(L, "%s: option keys must be strings", fn);
        const char *k = lua_tostring(L, -1);
        int ok = 0;
        for (int i = 0; allowed[i]; i++) ok |= strcmp(allowed[i], k) == 0;
        if (!ok) {
            char list[512] = "";
            for (int i = 0; allowed[i]; i++) {
                size_t u = strlen(list);
                snprintf(list + u, sizeof list - u, "%s%s", i ? ", " : "", allowed[i]);
            }
            uerror(L, "%s: unknown option '%s' (valid: %s)", fn, k, list);
        }
    }
}

/* ---- SAE ---- */

typedef struct {
    saefw_sae sae;
    int alive;
} lsae;

static lsae *check_sae(lua_State *L, int idx) {
    lsae *s = luaL_testudata(L, idx, MT_SAE);
    if (!s) uerror(L, "expected an SAE (from saefw.sae or saefw.load_sae), got %s", luaL_typename(L, idx));
    if (!s->alive) uerror(L, "this SAE was closed");
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
    check_table(L, 1, "saefw.sae");
    check_keys(L, 1, "saefw.sae", keys);
    int64_t d_in = req_int(L, 1, "saefw.sae", "d_in", 1);
    int64_t d_sae = req_int(L, 1, "saefw.sae", "d_sae", 1);
    double l1 = opt_number(L, 1, "saefw.sae", "l1_coeff", 3e-4);
    if (l1 < 0) uerror(L, "saefw.sae: field 'l1_coeff' must be >= 0");
    int64_t seed = opt_int(L, 1, "saefw.sae", "seed", 49, 0);
    lsae *s = new_sae(L);
    char err[512];
    if (saefw_sae_alloc(&s->sae, d_in, d_sae, (float)l1, err, sizeof err) != 0) return uerror(L, "saefw.sae: %s", err);
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
        if (!lua_istable(L, 3)) return uerror(L, "sae:save: argument 2 (cfg) must be a table");
        cfg = lua_to_json(L, 3, 0);
    }
    char err[1024];
    int rc = saefw_checkpoint_save(dir, &s->sae, cfg, err, sizeof err);
    cJSON_Delete(cfg);
    if (rc != 0) return uerror(L, "sae:save: %s", err);
    return 0;
}

static int l_load_sae(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    lsae *s = new_sae(L);
    cJSON *cfg = NULL;
    char err[1024];
    if (saefw_checkpoint_load(path, &s->sae, &cfg, err, sizeof err) != 0) return uerror(L, "saefw.load_sae: %s", err);
    s->alive = 1;
    if (cfg) json_to_lua(L, cfg, 0);
    else lua_newtable(L);
    cJSON_Delete(cfg);
    return 2;
}

static int param_index(lua_State *L, const char *name) {
    for (int i = 0; i < SAEFW_N_PARAMS; i++)
        if (strcmp(saefw_param_name(i), name) == 0) return i;
    return uerror(L, "no SAE tensor named '%s' (W_enc, W_dec, b_enc, b_dec)", name);
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
} lsource;

static saefw_source *check_source(lua_State *L, int idx) {
    lsource *s = luaL_testudata(L, idx, MT_SOURCE);
    if (!s) uerror(L, "expected an activation source (saefw.synthetic, saefw.activations), got %s", luaL_typename(L, idx));
    if (!s->src) uerror(L, "this source was closed");
    return s->src;
}

static void source_log(void *ud, const char *msg) { fprintf(stderr, "%s\n", msg); }

static lsource *new_source(lua_State *L) {
    lsource *s = lua_newuserdatauv(L, sizeof *s, 0);
    s->src = NULL;
    luaL_setmetatable(L, MT_SOURCE);
    return s;
}

static int l_synthetic(lua_State *L) {
    static const char *const keys[] = {"d_in", "n_features", "p_active", "max_magnitude", "seed", NULL};
    const char *fn = "saefw.synthetic";
    check_table(L, 1, fn);
    check_keys(L, 1, fn, keys);
    saefw_synthetic_opts o;
    o.d_in = req_int(L, 1, fn, "d_in", 1);
    o.n_features = req_int(L, 1, fn, "n_features", 1);
    o.p_active = opt_number(L, 1, fn, "p_active", 0.01);
    o.max_magnitude = opt_number(L, 1, fn, "max_magnitude", 1.0);
    o.seed = (uint64_t)opt_int(L, 1, fn, "seed", 0, 0);
    lsource *s = new_source(L);
    char err[512];
    if (saefw_source_synthetic(&o, &s->src, err, sizeof err) != 0) return uerror(L, "%s: %s", fn, err);
    s->src->log = source_log;
    return 1;
}

static int l_activations(lua_State *L) {
    static const char *const keys[] = {"path", "tensor", "d_in", "seed", NULL};
    const char *fn = "saefw.activations";
    check_table(L, 1, fn);
    check_keys(L, 1, fn, keys);
    const char *path = opt_string(L, 1, fn, "path", NULL);
    if (!path) return uerror(L, "%s: field 'path' is required", fn);
    const char *tensor = opt_string(L, 1, fn, "tensor", NULL);
    int64_t d_in = opt_int(L, 1, fn, "d_in", 0, 0);
    int64_t seed = opt_int(L, 1, fn, "seed", 0, 0);
    lsource *s = new_source(L);
    char err[1024];
    if (saefw_source_file(path, tensor, d_in, (uint64_t)seed, &s->src, err, sizeof err) != 0)
        return uerror(L, "%s: %s", fn, err);
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
    if (n <= 0 || n > (1 << 20) / src->d_act) return uerror(L, "source:sample: n must be in 1..%lld", (long long)((1 << 20) / src->d_act));
    float *x = malloc(sizeof(float) * (size_t)(n * src->d_act));
    if (!x) return uerror(L, "source:sample: out of memory");
    char err[512];
    if (src->sample(src, x, n, err, sizeof err) != 0) {
        free(x);
        return uerror(L, "source:sample: %s", err);
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
    check_table(L, 1, fn);
    check_keys(L, 1, fn, keys);
    lua_getfield(L, 1, "source");
    if (lua_isnil(L, -1)) return uerror(L, "%s: field 'source' is required", fn);
    saefw_source *src = check_source(L, -1);
    int src_idx = lua_gettop(L);
    int64_t batch = req_int(L, 1, fn, "batch_size", 1);
    int64_t size = req_int(L, 1, fn, "size", 1);
    const char *dt = opt_string(L, 1, fn, "dtype", "bf16");
    saefw_buffer_dtype dtype;
    if (!strcmp(dt, "bf16")) dtype = SAEFW_BUF_BF16;
    else if (!strcmp(dt, "fp32") || !strcmp(dt, "f32")) dtype = SAEFW_BUF_F32;
    else return uerror(L, "%s: field 'dtype' must be \"bf16\" or \"fp32\", got \"%s\"", fn, dt);
    int64_t seed = opt_int(L, 1, fn, "seed", 0, 0);
    lbuffer *b = lua_newuserdatauv(L, sizeof *b, 1);
    memset(b, 0, sizeof *b);
    luaL_setmetatable(L, MT_BUFFER);
    lua_pushvalue(L, src_idx);
    lua_setiuservalue(L, -2, 1); /* keep the source alive as long as the buffer */
    char err[1024];
    if (saefw_buffer_init(&b->buf, src, size, batch, dtype, (uint64_t)seed, err, sizeof err) != 0)
        return uerror(L, "%s: %s", fn, err);
    b->alive = 1;
    return 1;
}

static saefw_buffer *check_buffer(lua_State *L, int idx) {
    lbuffer *b = luaL_testudata(L, idx, MT_BUFFER);
    if (!b) uerror(L, "expected a buffer (saefw.buffer), got %s", luaL_typename(L, idx));
    if (!b->alive) uerror(L, "this buffer was closed");
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
} lplugin;

static int l_plugin(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    if (!lua_isnoneornil(L, 2) && !lua_istable(L, 2))
        return uerror(L, "saefw.plugin: argument 2 (options) must be a table, got %s", luaL_typename(L, 2));
    lplugin *p = lua_newuserdatauv(L, sizeof *p, 0);
    memset(p, 0, sizeof *p);
    luaL_setmetatable(L, MT_PLUGIN);
    char err[1024];
    if (saefw_plugin_load(name, saefw_host_table(), &p->lp, err, sizeof err) != 0) return uerror(L, "%s", err);
    if (saefw_opts_new(p->lp, &p->opts, err, sizeof err) != 0) return uerror(L, "%s", err);
    if (lua_istable(L, 2)) {
        lua_pushnil(L);
        while (lua_next(L, 2)) {
            if (lua_type(L, -2) != LUA_TSTRING) return uerror(L, "plugin %s: option names must be strings", p->lp->p.name);
            const char *k = lua_tostring(L, -2);
            int rc;
            switch (lua_type(L, -1)) {
            case LUA_TNUMBER: rc = saefw_opts_set_number(p->opts, p->lp, k, lua_tonumber(L, -1), err, sizeof err); break;
            case LUA_TBOOLEAN: rc = saefw_opts_set_bool(p->opts, p->lp, k, lua_toboolean(L, -1), err, sizeof err); break;
            case LUA_TSTRING: rc = saefw_opts_set_string(p->opts, p->lp, k, lua_tostring(L, -1), err, sizeof err); break;
            default:
                return uerror(L, "plugin %s: option '%s' has unsupported type %s", p->lp->p.name, k, luaL_typename(L, -1));
            }
            if (rc != 0) return uerror(L, "%s", err);
            lua_pop(L, 1);
        }
    }
    if (saefw_opts_check(p->opts, p->lp, err, sizeof err) != 0) return uerror(L, "%s", err);
    return 1;
}

static lplugin *check_plugin(lua_State *L, int idx) {
    lplugin *p = luaL_testudata(L, idx, MT_PLUGIN);
    if (!p || !p->lp) uerror(L, "expected a plugin (saefw.plugin), got %s", luaL_typename(L, idx));
    return p;
}

static int plugin_gc(lua_State *L) {
    lplugin *p = luaL_checkudata(L, 1, MT_PLUGIN);
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
    else if (!strcmp(k, "path")) lua_pushstring(L, p->lp->path);
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
        if (isfinite(m->mmcs)) SETN("mmcs", m->mmcs);
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

static int on_event(void *vud, const char *event, const saefw_metrics *m, char *err, size_t errlen) {
    train_ud *ud = vud;
    int which = !strcmp(event, "log") ? 0 : !strcmp(event, "eval") ? 1 : 2;
    if (!ud->fn_idx[which]) return 0;
    lua_State *L = ud->L;
    lua_pushcfunction(L, traceback_handler);
    int h = lua_gettop(L);
    lua_pushvalue(L, ud->fn_idx[which]);
    push_metrics(L, m);
    if (lua_pcall(L, 1, 1, h) != LUA_OK) {
        snprintf(ud->lua_err, sizeof ud->lua_err, "%s", lua_tostring(L, -1));
        lua_pop(L, 2);
        return saefw_errf(err, errlen, "callback on_%s failed", event);
    }
    /* A callback returning false stops the run. */
    int stop = lua_isboolean(L, -1) && !lua_toboolean(L, -1);
    lua_pop(L, 2);
    if (stop) {
        snprintf(ud->lua_err, sizeof ud->lua_err, "stopped");
        return saefw_errf(err, errlen, "stopped by the on_%s callback", event);
    }
    return 0;
}

static int l_train(lua_State *L) {
    static const char *const keys[] = {"sae", "buffer", "eval_source", "steps", "optimizer", "plugins", "log_every",
                                       "eval_every", "checkpoint_every", "freq_batches", "run_dir", "config", "seed",
                                       "progress", "on_log", "on_eval", "on_end", NULL};
    const char *fn = "saefw.train";
    check_table(L, 1, fn);
    check_keys(L, 1, fn, keys);
    saefw_train_opts o;
    memset(&o, 0, sizeof o);
    lua_getfield(L, 1, "sae");
    o.sae = &check_sae(L, -1)->sae;
    lua_getfield(L, 1, "buffer");
    o.buffer = check_buffer(L, -1);
    if (lua_getfield(L, 1, "eval_source") != LUA_TNIL) o.eval_source = check_source(L, -1);
    o.steps = req_int(L, 1, fn, "steps", 1);
    if (lua_getfield(L, 1, "optimizer") == LUA_TNIL) return uerror(L, "%s: field 'optimizer' is required", fn);
    lplugin *op = check_plugin(L, -1);
    o.optimizer.plugin = op->lp;
    o.optimizer.opts = op->opts;
    int n_plugins = 0;
    saefw_plugin_use *uses = NULL;
    if (lua_getfield(L, 1, "plugins") != LUA_TNIL) {
        if (!lua_istable(L, -1)) return uerror(L, "%s: field 'plugins' must be a list of plugins", fn);
        int t = lua_gettop(L);
        n_plugins = (int)lua_rawlen(L, t);
        uses = lua_newuserdatauv(L, sizeof(saefw_plugin_use) * (size_t)(n_plugins + 1), 0);
        for (int i = 0; i < n_plugins; i++) {
            lua_rawgeti(L, t, i + 1);
            lplugin *p = check_plugin(L, -1);
            if (p->lp->p.kind == SAEFW_KIND_OPTIMIZER)
                return uerror(L, "%s: plugins[%d] (%s) is an optimizer; pass it as 'optimizer'", fn, i + 1, p->lp->p.name);
            uses[i].plugin = p->lp;
            uses[i].opts = p->opts;
            lua_pop(L, 1);
        }
    }
    o.plugins = uses;
    o.n_plugins = n_plugins;
    o.log_every = opt_int(L, 1, fn, "log_every", 100, 0);
    o.eval_every = opt_int(L, 1, fn, "eval_every", 1000, 0);
    o.checkpoint_every = opt_int(L, 1, fn, "checkpoint_every", 0, 0);
    o.freq_batches = opt_int(L, 1, fn, "freq_batches", 5, 1);
    o.run_dir = opt_string(L, 1, fn, "run_dir", NULL);
    o.seed = (uint64_t)opt_int(L, 1, fn, "seed", 49, 0);
    int progress = opt_bool(L, 1, fn, "progress", 1);
    o.progress = progress ? -1 : 0;
    cJSON *cfg = NULL;
    if (lua_getfield(L, 1, "config") != LUA_TNIL) {
        if (!lua_istable(L, -1)) return uerror(L, "%s: field 'config' must be a table", fn);
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
            return uerror(L, "%s: field '%s' must be a function", fn, cbs[i]);
        }
        ud.fn_idx[i] = lua_gettop(L);
    }
    o.on_event = on_event;
    o.event_ud = &ud;
    saefw_train_result res;
    char err[1024] = "";
    int rc = saefw_train(&o, &res, err, sizeof err);
    cJSON_Delete(cfg);
    if (rc != 0) {
        if (ud.lua_err[0] && strcmp(ud.lua_err, "stopped") != 0) {
            lua_pushstring(L, ud.lua_err); /* already carries the callback's file:line */
            return lua_error(L);
        }
        if (!ud.lua_err[0]) return uerror(L, "%s", err);
    }
    push_metrics(L, &res.last);
    lua_pushstring(L, res.last_checkpoint);
    lua_setfield(L, -2, "checkpoint");
    lua_pushinteger(L, res.steps_done);
    lua_setfield(L, -2, "steps_done");
    return 1;
}

/* ---- analysis ---- */

static int l_frequencies(lua_State *L) {
    lsae *s = check_sae(L, 1);
    saefw_source *src = check_source(L, 2);
    lua_Integer batches = luaL_optinteger(L, 3, 5), batch = luaL_optinteger(L, 4, 4096);
    if (batches <= 0 || batch <= 0) return uerror(L, "saefw.frequencies: batches and batch size must be positive");
    if (src->d_act != s->sae.d_in)
        return uerror(L, "saefw.frequencies: source width %lld does not match the SAE's d_in %lld", (long long)src->d_act, (long long)s->sae.d_in);
    float *f = malloc(sizeof(float) * (size_t)s->sae.d_sae);
    if (!f) return uerror(L, "out of memory");
    char err[512];
    if (saefw_feature_frequencies(&s->sae, src, batch, batches, f, err, sizeof err) != 0) {
        free(f);
        return uerror(L, "saefw.frequencies: %s", err);
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
    if (!truth) return uerror(L, "saefw.mmcs: the source has no ground truth (only saefw.synthetic does)");
    if (src->d_act != s->sae.d_in) return uerror(L, "saefw.mmcs: source width does not match the SAE's d_in");
    lua_pushnumber(L, saefw_mmcs(truth, n, s->sae.p[SAEFW_W_DEC], s->sae.d_sae, s->sae.d_in));
    return 1;
}

/* saefw.evaluate(sae, source, rows) -> {loss, l2_loss, l1_loss, l0, explained_variance} on fresh rows. */
static int l_evaluate(lua_State *L) {
    lsae *s = check_sae(L, 1);
    saefw_source *src = check_source(L, 2);
    lua_Integer rows = luaL_optinteger(L, 3, 4096);
    if (rows <= 0 || rows > (1 << 22)) return uerror(L, "saefw.evaluate: rows must be in 1..%d", 1 << 22);
    if (src->d_act != s->sae.d_in) return uerror(L, "saefw.evaluate: source width does not match the SAE's d_in");
    saefw_sae_work w;
    char err[512];
    if (saefw_sae_work_alloc(&w, &s->sae, rows, err, sizeof err) != 0) return uerror(L, "saefw.evaluate: %s", err);
    float *x = malloc(sizeof(float) * (size_t)(rows * src->d_act));
    if (!x || src->sample(src, x, rows, err, sizeof err) != 0) {
        free(x);
        saefw_sae_work_free(&w);
        return uerror(L, "saefw.evaluate: %s", x ? err : "out of memory");
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
    if (saefw_tf_open(path, &tf, err, sizeof err) != 0) return uerror(L, "saefw.info: %s", err);
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

static void new_class(lua_State *L, const char *name, lua_CFunction gc, lua_CFunction index, const luaL_Reg *methods) {
    luaL_newmetatable(L, name);
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, index);
    lua_setfield(L, -2, "__index");
    lua_newtable(L);
    if (methods) luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "methods");
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
}

int luaopen_saefw_core(lua_State *L) {
    static const luaL_Reg sae_methods[] = {{"save", sae_save}, {"tensor", sae_tensor}, {NULL, NULL}};
    static const luaL_Reg source_methods[] = {{"sample", source_sample}, {NULL, NULL}};
    new_class(L, MT_SAE, sae_gc, sae_index, sae_methods);
    new_class(L, MT_SOURCE, source_gc, source_index, source_methods);
    new_class(L, MT_BUFFER, buffer_gc, buffer_index, NULL);
    new_class(L, MT_PLUGIN, plugin_gc, plugin_index, NULL);
    static const luaL_Reg fns[] = {
        {"sae", l_sae},
        {"load_sae", l_load_sae},
        {"synthetic", l_synthetic},
        {"activations", l_activations},
        {"buffer", l_buffer},
        {"plugin", l_plugin},
        {"train", l_train},
        {"frequencies", l_frequencies},
        {"mmcs", l_mmcs},
        {"evaluate", l_evaluate},
        {"info", l_info},
        {"plugin_dirs", l_plugin_dirs},
        {"where", l_where},
        {"overrides", l_overrides},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    lua_pushstring(L, SAEFW_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}
