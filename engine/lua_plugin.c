/* Lua binding of plugins: saefw.plugin loads a C plugin (saefw.Plugin), saefw.lua_plugin runs a
 * table of Lua callbacks as one (with its context, tensor views and state classes), and
 * saefw.plugin_dirs. */
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "lua_classes.h"
#include "lua_util.h"
#include "plugin_loader.h"
#include "train.h"
#include "util.h"

/* ---- plugins ---- */

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
            if (lua_type(L, -2) != LUA_TSTRING)
                return saefw_lua_error(L, "plugin %s: option names must be strings", p->lp->p.name);
            const char *k = lua_tostring(L, -2);
            int rc;
            switch (lua_type(L, -1)) {
            case LUA_TNUMBER:
                rc = saefw_opts_set_number(p->opts, p->lp, k, lua_tonumber(L, -1), err, sizeof err);
                break;
            case LUA_TBOOLEAN:
                rc = saefw_opts_set_bool(p->opts, p->lp, k, lua_toboolean(L, -1), err, sizeof err);
                break;
            case LUA_TSTRING:
                rc = saefw_opts_set_string(p->opts, p->lp, k, lua_tostring(L, -1), err, sizeof err);
                break;
            default:
                return saefw_lua_error(L, "plugin %s: option '%s' has unsupported type %s", p->lp->p.name, k,
                                       luaL_typename(L, -1));
            }
            if (rc != 0) return saefw_lua_error(L, "%s", err);
            lua_pop(L, 1);
        }
    }
    if (saefw_opts_check(p->opts, p->lp, err, sizeof err) != 0) return saefw_lua_error(L, "%s", err);
    return 1;
}

lplugin *saefw_lua_check_plugin(lua_State *L, int idx) {
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
    lplugin *p = saefw_lua_check_plugin(L, 1);
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

/* A Lua table of callbacks run as a plugin: each callback gets a context object (step, parameters
 * as tensor views, metrics, the run's RNG). For prototyping: port it to C when it is hot. */

#define MT_LUA_PLUGIN_CTX "saefw.PluginContext"
#define MT_TENSOR_VIEW "saefw.TensorView"

#define MT_STATE_IO "saefw.PluginState"

static const char *const LP_NAMES[LP_N] = {"after_backward", "after_step", "on_eval",    "on_end",
                                           "step",           "save_state", "load_state", "before_step"};

/* The writer or reader handed to a Lua plugin's save_state / load_state: valid during that call. */
typedef struct {
    void *io; /* saefw_state_writer * or saefw_state_reader *; NULL once the call returned */
    int writer;
} lstate_io;

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
        if (j != 1) saefw_lua_error(L, "%s is 1-D: its second index must be 1, got %lld", v->p.name, (long long)j);
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
    memcpy(saefw_lua_push_tensor(L, 2, shape), x, sizeof(float) * (size_t)(shape[0] * shape[1]));
    return 1;
}

static int ctx_batch_inputs(lua_State *L) { return ctx_batch(L, 0); }
static int ctx_batch_acts(lua_State *L) { return ctx_batch(L, 1); }

/* ctx:feature_counts() -> list [d_sae]: on how many rows of the batch each feature fired. */
static int ctx_feature_counts(lua_State *L) {
    lplugin_ctx *c = check_ctx(L, 1);
    const saefw_host *h = saefw_host_table();
    const int64_t *n = h->batch_feature_counts(c->run);
    if (!n)
        return saefw_lua_error(L,
                               "ctx:feature_counts: no training batch here (valid in after_backward and after_step)");
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
    float *freq = saefw_lua_push_tensor(L, 1, shape);
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
        if (h->param_find(c->run, name, &p, &index) != 0)
            return saefw_lua_error(L, "%s: no tensor named '%s'", fn, name);
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
    if (saefw_host_table()->set_loss_coeff(c->run, luaL_checkstring(L, 2), luaL_checknumber(L, 3), err, sizeof err) !=
        0)
        return saefw_lua_error(L, "ctx:set_loss_coeff: %s", err);
    return 0;
}

static int ctx_index(lua_State *L) {
    lplugin_ctx *c = check_ctx(L, 1);
    const char *k = luaL_checkstring(L, 2);
    const saefw_host *h = saefw_host_table();
    if (!strcmp(k, "step")) lua_pushinteger(L, h->step(c->run));
    else if (!strcmp(k, "tokens")) lua_pushinteger(L, h->tokens_seen(c->run));
    else if (!strcmp(k, "total_steps")) lua_pushinteger(L, h->total_steps(c->run));
    else if (!strcmp(k, "d_in")) lua_pushinteger(L, h->d_in(c->run));
    else if (!strcmp(k, "d_sae")) lua_pushinteger(L, h->d_sae(c->run));
    else if (!strcmp(k, "lr")) lua_pushnumber(L, h->learning_rate(c->run));
    else if (!strcmp(k, "l1_coeff")) {
        double v = 0;
        h->loss_coeff(c->run, "l1", &v);
        lua_pushnumber(L, v);
    } else {
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
    lua_pushcfunction(L, saefw_lua_traceback_handler);
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
        saefw_lua_error(L, "state:%s: this is the %s", writer ? "put" : "get",
                        s->writer ? "writer of save_state" : "reader of load_state");
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
    if (h->state_get_f32(s->io, name, x, (int64_t)n, err, sizeof err) != 0)
        return saefw_lua_error(L, "state:get: %s", err);
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

static int lp_after_backward(void *s, saefw_run *r, char *e, size_t n) {
    return lua_plugin_call(s, r, LP_AFTER_BACKWARD, e, n);
}
static int lp_after_step(void *s, saefw_run *r, char *e, size_t n) {
    return lua_plugin_call(s, r, LP_AFTER_STEP, e, n);
}
static int lp_on_eval(void *s, saefw_run *r, char *e, size_t n) { return lua_plugin_call(s, r, LP_ON_EVAL, e, n); }
static int lp_on_end(void *s, saefw_run *r, char *e, size_t n) { return lua_plugin_call(s, r, LP_ON_END, e, n); }
static int lp_step(void *s, saefw_run *r, char *e, size_t n) { return lua_plugin_call(s, r, LP_STEP, e, n); }
static int lp_before_step(void *s, saefw_run *r, char *e, size_t n) {
    return lua_plugin_call(s, r, LP_BEFORE_STEP, e, n);
}

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

/* saefw.lua_plugin{name=, kind="experiment"|"resampler"|"optimizer", before_step=fn, after_backward=fn,
 * after_step=fn, on_eval=fn, on_end=fn, step=fn (optimizers)} -> a plugin to pass to saefw.train. */
static int l_lua_plugin(lua_State *L) {
    static const char *const keys[] = {
        "name",       "kind",       "after_backward", "after_step", "on_eval",     "on_end", "step",
        "save_state", "load_state", "description",    "stateless",  "before_step", NULL};
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
    else
        return saefw_lua_error(L, "%s: field 'kind' must be \"experiment\", \"resampler\" or \"optimizer\", got \"%s\"",
                               fn, kind);
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
    if (!any)
        return saefw_lua_error(
            L, "%s: give at least one callback (before_step, after_backward, after_step, on_eval, on_end, step)", fn);
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
    pl->before_step = p->st.fn_ref[LP_BEFORE_STEP] != LUA_NOREF ? lp_before_step : NULL;
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

/* saefw.plugin, saefw.plugin_dirs, saefw.lua_plugin and the plugin classes. */
void saefw_lua_open_plugin(lua_State *L, int module_index) {
    saefw_lua_new_class(L, MT_PLUGIN, plugin_gc, plugin_index, NULL);
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
    static const luaL_Reg view_methods[] = {
        {"get", view_get}, {"set", view_set}, {"grad", view_grad}, {"set_grad", view_set_grad}, {NULL, NULL}};
    saefw_lua_new_class(L, MT_LUA_PLUGIN_CTX, ctx_gc, ctx_index, ctx_methods);
    saefw_lua_new_class(L, MT_TENSOR_VIEW, view_gc, view_index, view_methods);
    static const luaL_Reg state_methods[] = {{"put", state_put}, {"get", state_get}, {NULL, NULL}};
    saefw_lua_new_class(L, MT_STATE_IO, state_io_gc, state_io_index, state_methods);
    static const luaL_Reg fns[] = {
        {"plugin", l_plugin},
        {"plugin_dirs", l_plugin_dirs},
        {"lua_plugin", l_lua_plugin},
        {NULL, NULL},
    };
    lua_pushvalue(L, module_index);
    luaL_setfuncs(L, fns, 0);
    lua_pop(L, 1);
}
