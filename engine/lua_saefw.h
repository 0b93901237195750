/* The Lua 5.4 bindings of the engine: module "saefw.core" (the Lua library "saefw" wraps it). */
#ifndef SAEFW_LUA_SAEFW_H
#define SAEFW_LUA_SAEFW_H

#include <lua.h>

int luaopen_saefw_core(lua_State *L);

/* Set the folder of the Lua library (errors point past its frames, at the user's script). */
void saefw_lua_set_libdir(lua_State *L, const char *dir);
/* Store the command line's --key value overrides (pairs of strings) for saefw.config. */
void saefw_lua_set_overrides(lua_State *L, char **kv, int n_pairs);

/* Store the run folder given with --resume (NULL: none) for saefw.train. */
void saefw_lua_set_resume(lua_State *L, const char *run_dir);

#endif
