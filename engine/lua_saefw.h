/* The Lua 5.4 bindings of the engine: module "saefw.core" (the Lua library "saefw" wraps it). */
#ifndef SAEFW_LUA_SAEFW_H
#define SAEFW_LUA_SAEFW_H

#include <lua.h>

#include "model.h"
#include "sae.h"
#include "tokens.h"

int luaopen_saefw_core(lua_State *L);

/* Set the folder of the Lua library (errors point past its frames, at the user's script). */
void saefw_lua_set_libdir(lua_State *L, const char *dir);

/* The engine objects behind saefw.sae / saefw.model / saefw.tokens userdata at idx; a Lua error
 * naming what was expected otherwise. Borrowed: valid while the userdata is. */
saefw_sae *saefw_lua_check_sae(lua_State *L, int idx);
saefw_model *saefw_lua_check_model(lua_State *L, int idx);
saefw_tokens *saefw_lua_check_tokens(lua_State *L, int idx);

#endif
