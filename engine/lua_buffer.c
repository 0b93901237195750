/* Lua binding of activation sources and the shuffling buffer: saefw.synthetic, saefw.activations,
 * saefw.feed (saefw.Source) and saefw.buffer (saefw.Buffer). */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua_classes.h"
#include "lua_util.h"
#include "source.h"
#include "util.h"

/* ---- sources ---- */

saefw_source *saefw_lua_check_source(lua_State *L, int idx) {
    lsource *s = luaL_testudata(L, idx, MT_SOURCE);
    if (!s)
        saefw_lua_error(L, "expected an activation source (saefw.synthetic, saefw.activations), got %s",
                        luaL_typename(L, idx));
    if (!s->src) saefw_lua_error(L, "this source was closed");
    return s->src;
}

void saefw_lua_source_log(void *ud, const char *msg) { fprintf(stderr, "%s\n", msg); }

lsource *saefw_lua_new_source(lua_State *L) {
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
    lsource *s = saefw_lua_new_source(L);
    char err[512];
    if (saefw_source_synthetic(&o, &s->src, err, sizeof err) != 0) return saefw_lua_error(L, "%s: %s", fn, err);
    s->src->log = saefw_lua_source_log;
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
    lsource *s = saefw_lua_new_source(L);
    char err[1024];
    if (saefw_source_file(path, tensor, d_in, (uint64_t)seed, &s->src, err, sizeof err) != 0)
        return saefw_lua_error(L, "%s: %s", fn, err);
    s->src->log = saefw_lua_source_log;
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
        return saefw_lua_error(L, "%s: field 'fn' must be a function(n) returning n rows, got %s", fn,
                               luaL_typename(L, -1));
    lfeed *f = malloc(sizeof *f);
    if (!f) return saefw_lua_error(L, "%s: out of memory", fn);
    lua_State *main = L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    main = lua_tothread(L, -1);
    lua_pop(L, 1);
    f->L = main;
    f->d = d;
    f->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lsource *s = saefw_lua_new_source(L);
    char err[512];
    if (saefw_source_feed(d, feed_call, f, feed_free, &s->src, err, sizeof err) != 0) {
        feed_free(f);
        return saefw_lua_error(L, "%s: %s", fn, err);
    }
    s->src->log = saefw_lua_source_log;
    return 1;
}

static int source_gc(lua_State *L) {
    lsource *s = luaL_checkudata(L, 1, MT_SOURCE);
    saefw_source_free(s->src);
    s->src = NULL;
    return 0;
}

static int source_index(lua_State *L) {
    saefw_source *src = saefw_lua_check_source(L, 1);
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
    saefw_source *src = saefw_lua_check_source(L, 1);
    lua_Integer n = luaL_checkinteger(L, 2);
    if (n <= 0 || n > (1 << 20) / src->d_act)
        return saefw_lua_error(L, "source:sample: n must be in 1..%lld", (long long)((1 << 20) / src->d_act));
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
    saefw_source *src = saefw_lua_check_source(L, -1);
    int src_idx = lua_gettop(L);
    int64_t batch = saefw_lua_req_int(L, 1, fn, "batch_size", 1);
    int64_t size =
        src->in_order ? saefw_lua_opt_int(L, 1, fn, "size", batch, 1) : saefw_lua_req_int(L, 1, fn, "size", 1);
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

saefw_buffer *saefw_lua_check_buffer(lua_State *L, int idx) {
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
    saefw_buffer *b = saefw_lua_check_buffer(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (!strcmp(k, "d_act")) lua_pushinteger(L, b->d);
    /* A transcoder's data: rows [input | target] of d_act = d_in + d_target. */
    else if (!strcmp(k, "d_target")) lua_pushinteger(L, b->src->d_target);
    else if (!strcmp(k, "size")) lua_pushinteger(L, b->rows);
    else if (!strcmp(k, "batch_size")) lua_pushinteger(L, b->batch);
    else if (!strcmp(k, "bytes")) lua_pushinteger(L, (lua_Integer)saefw_buffer_bytes(b));
    else if (!strcmp(k, "source")) lua_getiuservalue(L, 1, 1);
    else lua_pushnil(L);
    return 1;
}

/* saefw.synthetic, saefw.activations, saefw.feed, saefw.buffer and their classes. */
void saefw_lua_open_buffer(lua_State *L, int module_index) {
    static const luaL_Reg source_methods[] = {{"sample", source_sample}, {NULL, NULL}};
    saefw_lua_new_class(L, MT_SOURCE, source_gc, source_index, source_methods);
    saefw_lua_new_class(L, MT_BUFFER, buffer_gc, buffer_index, NULL);
    static const luaL_Reg fns[] = {
        {"synthetic", l_synthetic},
        {"activations", l_activations},
        {"feed", l_feed},
        {"buffer", l_buffer},
        {NULL, NULL},
    };
    lua_pushvalue(L, module_index);
    luaL_setfuncs(L, fns, 0);
    lua_pop(L, 1);
}
