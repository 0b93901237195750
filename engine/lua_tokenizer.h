/* Lua binding of the tokenizer: saefw.tokenizer(name_or_path). */
#ifndef SAEFW_LUA_TOKENIZER_H
#define SAEFW_LUA_TOKENIZER_H

#include <lua.h>

/* Register the saefw.Tokenizer class and put the function `tokenizer` into the module table at
 * module_index. */
void saefw_lua_open_tokenizer(lua_State *L, int module_index);

#endif
