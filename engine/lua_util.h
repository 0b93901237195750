/* Internal helpers of the Lua bindings (not part of any public API). */
#ifndef SAEFW_LUA_UTIL_H
#define SAEFW_LUA_UTIL_H

#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>

/* Push "file:line: " of the innermost Lua frame outside the saefw library (or ""). */
void push_user_where(lua_State *L);
/* Raise a Lua error located at the user's script line. Never returns. */
int uerror(lua_State *L, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
int l_where(lua_State *L);
int l_overrides(lua_State *L);

/* Fields of an options table at index t; fn names the function in errors. */
int has_field(lua_State *L, int t, const char *k);
double opt_number(lua_State *L, int t, const char *fn, const char *k, double def);
int64_t opt_int(lua_State *L, int t, const char *fn, const char *k, int64_t def, int64_t lo);
int64_t req_int(lua_State *L, int t, const char *fn, const char *k, int64_t lo);
const char *opt_string(lua_State *L, int t, const char *fn, const char *k, const char *def);
int opt_bool(lua_State *L, int t, const char *fn, const char *k, int def);
void check_table(lua_State *L, int idx, const char *fn);
/* Reject keys not in the NULL-terminated list, naming the valid ones. */
void check_keys(lua_State *L, int t, const char *fn, const char *const *allowed);
/* A userdata class: __gc and __close call gc, __index calls index, methods in a "methods" field. */
void new_class(lua_State *L, const char *name, lua_CFunction gc, lua_CFunction index, const luaL_Reg *methods);

#endif
