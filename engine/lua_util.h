/* Internal helpers of the Lua bindings (not part of any public API). */
#ifndef SAEFW_LUA_UTIL_H
#define SAEFW_LUA_UTIL_H

#include <cjson/cJSON.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>

/* Push "file:line: " of the innermost Lua frame outside the saefw library (or ""). */
void saefw_lua_push_user_where(lua_State *L);
/* Raise a Lua error located at the user's script line. Never returns. */
int saefw_lua_error(lua_State *L, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
int saefw_lua_where(lua_State *L);

/* Fields of an options table at index t; fn names the function in errors. */
int saefw_lua_has_field(lua_State *L, int t, const char *k);
double saefw_lua_opt_number(lua_State *L, int t, const char *fn, const char *k, double def);
int64_t saefw_lua_opt_int(lua_State *L, int t, const char *fn, const char *k, int64_t def, int64_t lo);
int64_t saefw_lua_req_int(lua_State *L, int t, const char *fn, const char *k, int64_t lo);
const char *saefw_lua_opt_string(lua_State *L, int t, const char *fn, const char *k, const char *def);
int saefw_lua_opt_bool(lua_State *L, int t, const char *fn, const char *k, int def);
void saefw_lua_check_table(lua_State *L, int idx, const char *fn);
/* Reject keys not in the NULL-terminated list, naming the valid ones. */
void saefw_lua_check_keys(lua_State *L, int t, const char *fn, const char *const *allowed);
/* A userdata class: __gc and __close call gc, __index calls index, methods in a "methods" field. */
void saefw_lua_new_class(lua_State *L, const char *name, lua_CFunction gc, lua_CFunction index,
                         const luaL_Reg *methods);

/* The Lua value at idx as JSON (numbers, strings, booleans, nested tables; depth counts the nesting,
 * 0 at the top), and a JSON value pushed as Lua; for cfg.json. */
cJSON *saefw_lua_to_json(lua_State *L, int idx, int depth);
void saefw_lua_push_json(lua_State *L, const cJSON *j, int depth);
/* Message handler for lua_pcall: keeps the error message (already located), or names a non-string
 * error object. */
int saefw_lua_traceback_handler(lua_State *L);

#endif
