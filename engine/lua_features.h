/* The Lua binding of the feature analysis (engine/lua_features.c). */
#ifndef SAEFW_LUA_FEATURES_H
#define SAEFW_LUA_FEATURES_H

#include <lua.h>

/* Set field "features" (saefw.features{...}) of the module table on top of the stack. */
void saefw_lua_register_features(lua_State *L);

#endif
