/* Helpers shared by the Lua bindings: errors at the user's script line, typed table fields,
 * userdata classes. */
#include "lua_util.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lua_saefw.h"

#define REG_LIBDIR "saefw.libdir"

/* ---- errors at the user's line ---- */

/* Push "file:line: " of the innermost Lua frame outside the saefw library (or "" if none). */
void saefw_lua_push_user_where(lua_State *L) {
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

int saefw_lua_error(lua_State *L, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    saefw_lua_push_user_where(L);
    lua_pushstring(L, msg);
    lua_concat(L, 2);
    return lua_error(L);
}

int saefw_lua_where(lua_State *L) {
    saefw_lua_push_user_where(L);
    return 1;
}

void saefw_lua_set_libdir(lua_State *L, const char *dir) {
    lua_pushstring(L, dir);
    lua_setfield(L, LUA_REGISTRYINDEX, REG_LIBDIR);
}

/* ---- table fields ---- */

int saefw_lua_has_field(lua_State *L, int t, const char *k) {
    int ty = lua_getfield(L, t, k);
    lua_pop(L, 1);
    return ty != LUA_TNIL;
}

double saefw_lua_opt_number(lua_State *L, int t, const char *fn, const char *k, double def) {
    int ty = lua_getfield(L, t, k);
    if (ty == LUA_TNIL) {
        lua_pop(L, 1);
        return def;
    }
    if (ty != LUA_TNUMBER) saefw_lua_error(L, "%s: field '%s' must be a number, got %s", fn, k, luaL_typename(L, -1));
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (!isfinite(v)) saefw_lua_error(L, "%s: field '%s' must be finite", fn, k);
    return v;
}

int64_t saefw_lua_opt_int(lua_State *L, int t, const char *fn, const char *k, int64_t def, int64_t lo) {
    double v = saefw_lua_opt_number(L, t, fn, k, (double)def);
    if (v != floor(v) || v < (double)lo || v > 9.0e15)
        saefw_lua_error(L, "%s: field '%s' must be an integer >= %lld, got %g", fn, k, (long long)lo, v);
    return (int64_t)v;
}

int64_t saefw_lua_req_int(lua_State *L, int t, const char *fn, const char *k, int64_t lo) {
    if (!saefw_lua_has_field(L, t, k)) saefw_lua_error(L, "%s: field '%s' is required", fn, k);
    return saefw_lua_opt_int(L, t, fn, k, 0, lo);
}

const char *saefw_lua_opt_string(lua_State *L, int t, const char *fn, const char *k, const char *def) {
    int ty = lua_getfield(L, t, k);
    if (ty == LUA_TNIL) {
        lua_pop(L, 1);
        return def;
    }
    if (ty != LUA_TSTRING) saefw_lua_error(L, "%s: field '%s' must be a string, got %s", fn, k, luaL_typename(L, -1));
    const char *s = lua_tostring(L, -1);
    lua_pop(L, 1); /* the string stays alive: it is referenced by the table */
    return s;
}

int saefw_lua_opt_bool(lua_State *L, int t, const char *fn, const char *k, int def) {
    int ty = lua_getfield(L, t, k);
    if (ty == LUA_TNIL) {
        lua_pop(L, 1);
        return def;
    }
    if (ty != LUA_TBOOLEAN) saefw_lua_error(L, "%s: field '%s' must be a boolean, got %s", fn, k, luaL_typename(L, -1));
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

void saefw_lua_check_table(lua_State *L, int idx, const char *fn) {
    if (lua_type(L, idx) != LUA_TTABLE)
        saefw_lua_error(L, "%s: expected a table of options, got %s", fn, luaL_typename(L, idx));
}

/* Reject keys a function does not take (a typo must not silently fall back to a default). */
void saefw_lua_check_keys(lua_State *L, int t, const char *fn, const char *const *allowed) {
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) saefw_lua_error(L, "%s: option keys must be strings", fn);
        const char *k = lua_tostring(L, -1);
        int ok = 0;
        for (int i = 0; allowed[i]; i++) ok |= strcmp(allowed[i], k) == 0;
        if (!ok) {
            char list[512] = "";
            for (int i = 0; allowed[i]; i++) {
                size_t u = strlen(list);
                snprintf(list + u, sizeof list - u, "%s%s", i ? ", " : "", allowed[i]);
            }
            saefw_lua_error(L, "%s: unknown option '%s' (valid: %s)", fn, k, list);
        }
    }
}

void saefw_lua_new_class(lua_State *L, const char *name, lua_CFunction gc, lua_CFunction index,
                         const luaL_Reg *methods) {
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

/* ---- cfg.json and protected calls ---- */

/* JSON <-> Lua for cfg.json: numbers, strings, booleans and nested tables. */
cJSON *saefw_lua_to_json(lua_State *L, int idx, int depth) {
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
                cJSON *v = saefw_lua_to_json(L, -1, depth + 1);
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
            cJSON *v = saefw_lua_to_json(L, -1, depth + 1);
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

void saefw_lua_push_json(lua_State *L, const cJSON *j, int depth) {
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
            saefw_lua_push_json(L, c, depth + 1);
            lua_rawseti(L, -2, i++);
        }
    } else if (cJSON_IsObject(j)) {
        lua_newtable(L);
        for (const cJSON *c = j->child; c; c = c->next) {
            saefw_lua_push_json(L, c, depth + 1);
            lua_setfield(L, -2, c->string);
        }
    } else {
        lua_pushnil(L);
    }
}

int saefw_lua_traceback_handler(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (!msg) msg = "(error object is not a string)";
    lua_pushstring(L, msg);
    return 1;
}
