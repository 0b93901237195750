/* Lua binding of training: saefw.train (options table to saefw_train_opts, callbacks on_log,
 * on_eval, on_end), saefw.config, saefw.model_batch, saefw.find_resumable and saefw.resume_dir. */
#include <lauxlib.h>
#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "checkpoint.h"
#include "eval.h"
#include "lua_classes.h"
#include "lua_util.h"
#include "model.h"
#include "rng.h"
#include "run.h"
#include "train.h"
#include "util.h"

static void stderr_line(const char *msg) { fprintf(stderr, "%s\n", msg); }

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
    const char *dir = saefw_run_cli_resume();
    if (dir) lua_pushstring(L, dir);
    else lua_pushnil(L);
    return 1;
}

/* ---- training ---- */

typedef struct train_ud {
    lua_State *L;
    int fn_idx[3]; /* on_log, on_eval, on_end (0: none) */
    char lua_err[1024];
    const char *name;      /* with several SAEs: the SAE whose event this is (metrics.name) */
    struct train_ud *main; /* with several SAEs: the ud that keeps the error */
} train_ud;

void saefw_lua_push_metrics(lua_State *L, const saefw_metrics *m) {
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

static int on_event(void *vud, saefw_event event, const saefw_metrics *m, char *err, size_t errlen) {
    train_ud *ud = vud;
    int which = event == SAEFW_EVENT_LOG ? 0 : event == SAEFW_EVENT_EVAL ? 1 : 2;
    if (!ud->fn_idx[which]) return SAEFW_EVENT_GO_ON;
    lua_State *L = ud->L;
    lua_pushcfunction(L, saefw_lua_traceback_handler);
    int h = lua_gettop(L);
    lua_pushvalue(L, ud->fn_idx[which]);
    saefw_lua_push_metrics(L, m);
    if (ud->name) {
        lua_pushstring(L, ud->name);
        lua_setfield(L, -2, "name");
    }
    if (lua_pcall(L, 1, 1, h) != LUA_OK) {
        train_ud *keep = ud->main ? ud->main : ud;
        snprintf(keep->lua_err, sizeof keep->lua_err, "%s", lua_tostring(L, -1));
        lua_pop(L, 2);
        return saefw_errf(err, errlen, "callback on_%s failed", saefw_event_name(event));
    }
    /* A callback returning false stops the run. */
    int stop = lua_isboolean(L, -1) && !lua_toboolean(L, -1);
    lua_pop(L, 2);
    return stop ? SAEFW_EVENT_STOP : SAEFW_EVENT_GO_ON;
}

static void read_optimizer(lua_State *L, int idx, saefw_plugin_use *u) {
    lplugin *op = saefw_lua_check_plugin(L, idx);
    u->plugin = op->lp;
    u->opts = op->opts;
    u->self = op->is_lua ? &((llua_plugin *)op)->st : NULL;
}

/* The list of hooks at the top of the stack (field `what`); the uses live in a userdata left on the stack. */
static int read_plugins(lua_State *L, const char *fn, const char *what, const saefw_plugin_use **out) {
    if (!lua_istable(L, -1)) return saefw_lua_error(L, "%s: field '%s' must be a list of plugins", fn, what);
    int t = lua_gettop(L);
    int n_plugins = (int)lua_rawlen(L, t);
    saefw_plugin_use *uses = lua_newuserdatauv(L, sizeof(saefw_plugin_use) * (size_t)(n_plugins + 1), 0);
    for (int i = 0; i < n_plugins; i++) {
        lua_rawgeti(L, t, i + 1);
        lplugin *p = saefw_lua_check_plugin(L, -1);
        if (p->lp->p.kind == SAEFW_KIND_OPTIMIZER)
            return saefw_lua_error(L, "%s: %s[%d] (%s) is an optimizer; pass it as 'optimizer'", fn, what, i + 1,
                                   p->lp->p.name);
        uses[i].plugin = p->lp;
        uses[i].opts = p->opts;
        uses[i].self = p->is_lua ? &((llua_plugin *)p)->st : NULL;
        lua_pop(L, 1);
    }
    *out = uses;
    return n_plugins;
}

/* saes = { {sae=, optimizer=, plugins=, name=}, ... }: the run's SAEs, in a userdata left on the stack
 * with the tables that keep their names and plugins alive. Returns their number. */
static int read_saes(lua_State *L, const char *fn, const saefw_run_sae **out) {
    lua_getfield(L, 1, "saes");
    if (!lua_istable(L, -1)) return saefw_lua_error(L, "%s: field 'saes' must be a list of SAE tables", fn);
    int t = lua_gettop(L), n = (int)lua_rawlen(L, t);
    if (n == 0) return saefw_lua_error(L, "%s: 'saes' is empty: give at least one SAE", fn);
    saefw_run_sae *saes = lua_newuserdatauv(L, sizeof(saefw_run_sae) * (size_t)n, 0);
    memset(saes, 0, sizeof(saefw_run_sae) * (size_t)n);
    lua_newtable(L); /* keeps the plugin lists and names alive, left on the stack */
    int keep = lua_gettop(L), n_keep = 0;
    for (int i = 0; i < n; i++) {
        char what[48];
        snprintf(what, sizeof what, "saes[%d]", i + 1);
        if (lua_rawgeti(L, t, i + 1) != LUA_TTABLE)
            return saefw_lua_error(L, "%s: %s must be a table {sae=, optimizer=, plugins=, name=}", fn, what);
        int e = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, e)) {
            lua_pop(L, 1);
            const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
            if (!k || (strcmp(k, "sae") && strcmp(k, "optimizer") && strcmp(k, "plugins") && strcmp(k, "name")))
                return saefw_lua_error(L, "%s: %s: unknown field '%s' (valid: name, optimizer, plugins, sae)", fn, what,
                                       k ? k : "?");
        }
        if (lua_getfield(L, e, "sae") == LUA_TNIL)
            return saefw_lua_error(L, "%s: %s: field 'sae' is required", fn, what);
        saes[i].sae = &saefw_lua_check_lsae(L, -1)->sae;
        if (lua_getfield(L, e, "optimizer") == LUA_TNIL)
            return saefw_lua_error(L, "%s: %s: field 'optimizer' is required", fn, what);
        read_optimizer(L, -1, &saes[i].optimizer);
        if (lua_getfield(L, e, "plugins") != LUA_TNIL) {
            char pw[64];
            snprintf(pw, sizeof pw, "%s.plugins", what);
            saes[i].n_plugins = read_plugins(L, fn, pw, &saes[i].plugins);
            lua_rawseti(L, keep, ++n_keep);
        }
        /* The name: the SAE's folder; by default its place in the list. */
        if (lua_getfield(L, e, "name") == LUA_TNIL) lua_pushfstring(L, "sae%d", i + 1);
        else if (lua_type(L, -1) != LUA_TSTRING)
            return saefw_lua_error(L, "%s: %s: field 'name' must be a string", fn, what);
        saes[i].name = lua_tostring(L, -1);
        lua_rawseti(L, keep, ++n_keep);
        lua_settop(L, e - 1);
    }
    lua_remove(L, t); /* the userdata stays; the list stays referenced by the options table */
    *out = saes;
    return n;
}

/* Run a session of several SAEs and push a list of their results (each with name, checkpoint and
 * steps_done). */
static int train_multi(lua_State *L, saefw_session *s, const saefw_run_cfg *c, train_ud *ud, cJSON *cfg) {
    const int n = c->n_saes;
    saefw_train_result *res = lua_newuserdatauv(L, sizeof(saefw_train_result) * (size_t)n, 0);
    char err[1024] = "";
    int rc = saefw_session_train_multi(s, res, err, sizeof err);
    saefw_session_close(s);
    cJSON_Delete(cfg);
    if (rc != 0) {
        if (ud->lua_err[0]) {
            lua_pushstring(L, ud->lua_err);
            return lua_error(L);
        }
        return saefw_lua_error(L, "%s", err);
    }
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        saefw_lua_push_metrics(L, &res[i].last);
        lua_pushstring(L, c->saes[i].name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, res[i].last_checkpoint);
        lua_setfield(L, -2, "checkpoint");
        lua_pushinteger(L, res[i].steps_done);
        lua_setfield(L, -2, "steps_done");
        if (res[i].stopped_by) {
            lua_pushfstring(L, "on_%s", res[i].stopped_by);
            lua_setfield(L, -2, "stopped_by");
        }
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int l_train(lua_State *L) {
    static const char *const keys[] = {"sae",
                                       "buffer",
                                       "eval_source",
                                       "steps",
                                       "num_tokens",
                                       "optimizer",
                                       "plugins",
                                       "log_every",
                                       "eval_every",
                                       "checkpoint_every",
                                       "freq_batches",
                                       "run_dir",
                                       "script",
                                       "model_name",
                                       "config",
                                       "seed",
                                       "progress",
                                       "on_log",
                                       "on_eval",
                                       "on_end",
                                       "recons_batches",
                                       "recons_eval",
                                       "eval_freq",
                                       "resume_from",
                                       "resume",
                                       "allow_change",
                                       "clip_grad_norm",
                                       "unit_norm_decoder",
                                       "zero",
                                       "saes",
                                       NULL};
    const char *fn = "saefw.train";
    saefw_lua_check_table(L, 1, fn);
    saefw_lua_check_keys(L, 1, fn, keys);
    saefw_run_cfg c;
    saefw_run_cfg_init(&c);
    int multi = saefw_lua_has_field(L, 1, "saes");
    if (multi && saefw_lua_has_field(L, 1, "sae")) return saefw_lua_error(L, "%s: give 'sae' or 'saes', not both", fn);
    if (!multi) {
        lua_getfield(L, 1, "sae");
        c.sae = &saefw_lua_check_lsae(L, -1)->sae;
    }
    lua_getfield(L, 1, "buffer");
    c.buffer = saefw_lua_check_buffer(L, -1);
    /* A buffer on the model host: the run object adds the reconstruction score and cfg.json's fields. */
    saefw_run_model rm;
    memset(&rm, 0, sizeof rm);
    lua_getiuservalue(L, -1, 1);
    lsource *bsrc = luaL_testudata(L, -1, MT_SOURCE);
    c.recons_batches = saefw_lua_opt_int(L, 1, fn, "recons_batches", 5, 0);
    if (c.recons_batches > SAEFW_MAX_EVAL_BATCHES)
        return saefw_lua_error(L, "%s: recons_batches = %lld is more than %d", fn, (long long)c.recons_batches,
                               SAEFW_MAX_EVAL_BATCHES);
    const char *recons_eval = saefw_lua_opt_string(L, 1, fn, "recons_eval", "fixed");
    if (saefw_recons_mode_parse(recons_eval, &c.recons_mode) != 0)
        return saefw_lua_error(L, "%s: recons_eval = '%s' is not one of fixed, fresh", fn, recons_eval);
    const char *eval_freq = saefw_lua_opt_string(L, 1, fn, "eval_freq", "auto");
    if (saefw_eval_freq_mode_parse(eval_freq, &c.eval_freq) != 0)
        return saefw_lua_error(L, "%s: eval_freq = '%s' is not one of auto, recons, separate", fn, eval_freq);
    if (bsrc && bsrc->on_model) {
        lua_getiuservalue(L, -1, 1);
        rm.model = saefw_lua_check_lmodel(L, -1)->m;
        lua_getiuservalue(L, -2, 2);
        rm.tokens = saefw_lua_check_ltokens(L, -1)->t;
        rm.hook = bsrc->hook;
        rm.model_batch = bsrc->model_batch;
        if (bsrc->with_target) c.hook_out = &bsrc->hook_out;
        rm.model_name = saefw_lua_opt_string(L, 1, fn, "model_name", NULL);
        c.on_model = &rm;
    }
    if (lua_getfield(L, 1, "eval_source") != LUA_TNIL) c.eval_source = saefw_lua_check_source(L, -1);
    if (saefw_lua_has_field(L, 1, "steps")) c.steps = saefw_lua_opt_int(L, 1, fn, "steps", 0, 1);
    if (lua_getfield(L, 1, "num_tokens") != LUA_TNIL) c.num_tokens = luaL_checknumber(L, -1);
    if (!multi) {
        if (lua_getfield(L, 1, "optimizer") == LUA_TNIL)
            return saefw_lua_error(L, "%s: field 'optimizer' is required", fn);
        read_optimizer(L, -1, &c.optimizer);
        if (lua_getfield(L, 1, "plugins") != LUA_TNIL) c.n_plugins = read_plugins(L, fn, "plugins", &c.plugins);
    }
    c.log_every = saefw_lua_opt_int(L, 1, fn, "log_every", 100, 0);
    c.eval_every = saefw_lua_opt_int(L, 1, fn, "eval_every", 1000, 0);
    c.checkpoint_every = saefw_lua_opt_int(L, 1, fn, "checkpoint_every", 0, 0);
    c.freq_batches = saefw_lua_opt_int(L, 1, fn, "freq_batches", 5, 1);
    if (c.freq_batches > SAEFW_MAX_EVAL_BATCHES)
        return saefw_lua_error(L, "%s: freq_batches = %lld is more than %d", fn, (long long)c.freq_batches,
                               SAEFW_MAX_EVAL_BATCHES);
    /* run_dir = false: no run folder; absent: the run object's default one. */
    if (lua_getfield(L, 1, "run_dir") == LUA_TBOOLEAN && !lua_toboolean(L, -1)) c.no_run_dir = 1;
    else c.run_dir = saefw_lua_opt_string(L, 1, fn, "run_dir", NULL);
    c.script = saefw_lua_opt_string(L, 1, fn, "script", NULL);
    c.resume = saefw_lua_opt_string(L, 1, fn, "resume", NULL);
    c.resume_from = saefw_lua_opt_string(L, 1, fn, "resume_from", NULL);
    /* allow_change: a list of names, kept alive on the stack until the run ends. */
    if (lua_getfield(L, 1, "allow_change") != LUA_TNIL) {
        if (!lua_istable(L, -1)) return saefw_lua_error(L, "%s: field 'allow_change' must be a list of names", fn);
        int t = lua_gettop(L), n = (int)lua_rawlen(L, t);
        const char **names = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
        for (int i = 0; i < n; i++) {
            lua_rawgeti(L, t, i + 1);
            if (lua_type(L, -1) != LUA_TSTRING)
                return saefw_lua_error(L, "%s: allow_change[%d] must be a string", fn, i + 1);
            names[i] = lua_tostring(L, -1);
            lua_rawseti(L, t, i + 1); /* the same string, left in the table that keeps it alive */
        }
        c.allow_change = names;
        c.n_allow_change = n;
    }
    /* The 2024 recipe: clipping when given (off by default, as in the seed), an optional unit-norm decoder. */
    if (lua_getfield(L, 1, "clip_grad_norm") != LUA_TNIL) {
        if (!lua_isnumber(L, -1)) return saefw_lua_error(L, "%s: field 'clip_grad_norm' must be a number", fn);
        c.clip_grad_norm = lua_tonumber(L, -1);
        if (!(c.clip_grad_norm > 0) || isinf(c.clip_grad_norm))
            return saefw_lua_error(L, "%s: clip_grad_norm must be a finite number > 0, got %g", fn, c.clip_grad_norm);
    }
    lua_pop(L, 1);
    c.free_decoder = !saefw_lua_opt_bool(L, 1, fn, "unit_norm_decoder", 1);
    c.zero = (int)saefw_lua_opt_int(L, 1, fn, "zero", 0, 0);
    if (c.zero > 1) return saefw_lua_error(L, "%s: zero must be 0 or 1 (ZeRO stage 1), got %d", fn, c.zero);
    c.seed = (uint64_t)saefw_lua_opt_int(L, 1, fn, "seed", SAEFW_DEFAULT_SEED, 0);
    int progress = saefw_lua_opt_bool(L, 1, fn, "progress", 1);
    c.progress = progress ? -1 : 0;
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
        if (ty != LUA_TFUNCTION) return saefw_lua_error(L, "%s: field '%s' must be a function", fn, cbs[i]);
        ud.fn_idx[i] = lua_gettop(L);
    }
    c.on_event = on_event;
    c.event_ud = &ud;
    train_ud *uds = NULL;
    if (multi && (c.n_saes = read_saes(L, fn, &c.saes)) >= 0) {
        /* One event ud per SAE, naming it, over the same callbacks. */
        uds = lua_newuserdatauv(L, sizeof(train_ud) * (size_t)(c.n_saes + 1), 0);
        for (int i = 0; i < c.n_saes; i++) {
            uds[i] = ud;
            uds[i].name = c.saes[i].name;
            uds[i].main = &ud;
            ((saefw_run_sae *)c.saes)[i].event_ud = &uds[i];
        }
    }
    cJSON *cfg = NULL;
    if (lua_getfield(L, 1, "config") != LUA_TNIL) {
        if (!lua_istable(L, -1)) return saefw_lua_error(L, "%s: field 'config' must be a table", fn);
        cfg = saefw_lua_to_json(L, -1, 0);
    }
    lua_pop(L, 1);
    c.config = cfg;
    saefw_session *s;
    char err[1024] = "";
    if (saefw_session_open(&c, &s, err, sizeof err) != 0) {
        cJSON_Delete(cfg);
        return saefw_lua_error(L, "%s: %s", fn, err);
    }
    if (multi) return train_multi(L, s, &c, &ud, cfg);
    saefw_train_result res;
    int rc = saefw_session_train(s, &res, err, sizeof err);
    saefw_session_close(s);
    cJSON_Delete(cfg);
    if (rc != 0) {
        if (ud.lua_err[0]) {
            lua_pushstring(L, ud.lua_err); /* already carries the callback's file:line */
            return lua_error(L);
        }
        return saefw_lua_error(L, "%s", err);
    }
    saefw_lua_push_metrics(L, &res.last);
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

/* saefw.config{defaults} -> a copy of defaults with the command line's `--key value` overrides
 * applied by the run object (saefw_run_apply_overrides): this only translates the table. */
static int l_config(lua_State *L) {
    if (!lua_istable(L, 1)) return saefw_lua_error(L, "saefw.config: expected a table of defaults");
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        lua_pop(L, 1);
        n += lua_type(L, -1) == LUA_TSTRING;
    }
    /* Userdata, so that nothing leaks when a Lua error unwinds. */
    saefw_value_type *types = lua_newuserdatauv(L, sizeof *types * (size_t)(n + 1), 0);
    saefw_override *applied = lua_newuserdatauv(L, sizeof *applied * (size_t)(saefw_run_n_overrides() + 1), 0);
    cJSON *cfg = cJSON_CreateObject();
    int k = 0, ok = cfg != NULL;
    lua_pushnil(L);
    while (ok && lua_next(L, 1)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            lua_pop(L, 1);
            continue;
        }
        cJSON *v;
        switch (lua_type(L, -1)) {
        case LUA_TNUMBER: types[k] = lua_isinteger(L, -1) ? SAEFW_VALUE_INT : SAEFW_VALUE_FLOAT; break;
        case LUA_TBOOLEAN: types[k] = SAEFW_VALUE_BOOL; break;
        case LUA_TSTRING: types[k] = SAEFW_VALUE_STRING; break;
        default: types[k] = SAEFW_VALUE_NONE; break;
        }
        v = saefw_lua_to_json(L, -1, 0);
        if (!v) v = cJSON_CreateNull(); /* functions and userdata: kept in the copy, not settable */
        ok = v && cJSON_AddItemToObject(cfg, lua_tostring(L, -2), v);
        if (!ok) cJSON_Delete(v);
        k++;
        lua_pop(L, 1);
    }
    if (!ok) {
        cJSON_Delete(cfg);
        return saefw_lua_error(L, "saefw.config: out of memory");
    }
    char err[1024];
    int rc = saefw_run_apply_overrides(cfg, types, applied, err, sizeof err);
    cJSON_Delete(cfg);
    if (rc != 0) return saefw_lua_error(L, "%s", err);
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_settable(L, -4);
    }
    for (int i = 0; i < saefw_run_n_overrides(); i++) {
        const saefw_value *v = &applied[i].value;
        if (v->type == SAEFW_VALUE_INT) lua_pushinteger(L, (lua_Integer)v->i);
        else if (v->type == SAEFW_VALUE_FLOAT) lua_pushnumber(L, v->f);
        else if (v->type == SAEFW_VALUE_BOOL) lua_pushboolean(L, v->b);
        else lua_pushstring(L, v->s);
        lua_setfield(L, -2, applied[i].key);
    }
    return 1;
}

/* saefw.default_run_dir([script]) -> runs/<script>-<date>-<time>, unique per second. */
static int l_default_run_dir(lua_State *L) {
    char dir[PATH_MAX];
    saefw_run_default_dir(luaL_optstring(L, 1, NULL), dir, sizeof dir);
    lua_pushstring(L, dir);
    return 1;
}

/* saefw.model_batch(batch_size, seq_len) -> the seed's model batch (saefw_run_model_batch), the
 * default of saefw.buffer{model=...}'s model_batch_size. */
static int l_model_batch(lua_State *L) {
    lua_Number b = luaL_checknumber(L, 1);
    lua_Integer seq_len = luaL_checkinteger(L, 2);
    if (b != floor(b) || fabs(b) > 9.0e15)
        return saefw_lua_error(L, "saefw.buffer: field 'batch_size' must be an integer, got %g", (double)b);
    lua_pushinteger(L, (lua_Integer)saefw_run_model_batch((int64_t)b, (int64_t)seq_len));
    return 1;
}

void saefw_lua_open_train(lua_State *L, int module_index) {
    static const luaL_Reg fns[] = {
        {"train", l_train},
        {"find_resumable", l_find_resumable},
        {"resume_dir", l_resume_dir},
        {"default_run_dir", l_default_run_dir},
        {"config", l_config},
        {"model_batch", l_model_batch},
        {NULL, NULL},
    };
    lua_pushvalue(L, module_index);
    luaL_setfuncs(L, fns, 0);
    lua_pop(L, 1);
}
