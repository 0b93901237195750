/* The Lua 5.4 module "saefw.core" (the Lua library "saefw" wraps it): its open function, which opens
 * each class's file (lua_sae.c, lua_buffer.c, lua_plugin.c, lua_model.c, lua_tensor.c, lua_train.c,
 * lua_tokenizer.c, lua_features.c) into the module, and the functions that belong to no class.
 * Misuse of any binding raises an error naming the argument at the user's script line. */
#include "lua_saefw.h"

#include <lauxlib.h>

#include "lua_classes.h"
#include "lua_features.h"
#include "lua_tokenizer.h"
#include "lua_util.h"
#include "memory.h"
#include "parallel.h"
#include "util.h"

/* saefw.threads([n]) -> the threads of the training step and the model's products, after setting them
 * to n when given (0: the default, OPENBLAS_NUM_THREADS, else all cores). */
static int l_threads(lua_State *L) {
    if (!lua_isnoneornil(L, 1)) {
        int ok = 0;
        lua_Integer n = lua_tointegerx(L, 1, &ok);
        if (!ok || n < 0 || n > SAEFW_MAX_THREADS)
            return saefw_lua_error(L, "saefw.threads: expected a whole number from 0 (the default) to %d, got %s",
                                   SAEFW_MAX_THREADS, luaL_tolstring(L, 1, NULL));
        saefw_set_threads((int)n);
    }
    lua_pushinteger(L, saefw_threads());
    return 1;
}

/* saefw.memory_policy(allow, limit): allow = true runs whatever the memory estimate says; limit (bytes,
 * or a size such as "8G") checks the estimate against it instead of the machine's available memory. */
static int l_memory_policy(lua_State *L) {
    int64_t limit = 0;
    char err[256];
    if (lua_type(L, 2) == LUA_TNUMBER) {
        if (!(lua_tonumber(L, 2) > 0))
            return saefw_lua_error(L, "memory_limit: expected a positive size, got %s", luaL_tolstring(L, 2, NULL));
        limit = (int64_t)lua_tonumber(L, 2);
    } else if (lua_type(L, 2) == LUA_TSTRING) {
        if (saefw_mem_parse(lua_tostring(L, 2), &limit, err, sizeof err) != 0)
            return saefw_lua_error(L, "memory_limit: %s", err);
    } else if (!lua_isnoneornil(L, 2)) {
        return saefw_lua_error(L, "memory_limit: expected a size such as \"8G\" or a number of bytes");
    }
    saefw_mem_set_policy(lua_toboolean(L, 1), limit);
    return 0;
}

/* saefw.data_dir() -> the folder of saefw's bundled data (share/saefw next to the binary). */
static int l_data_dir(lua_State *L) {
    char dir[4096];
    if (saefw_exe_relative(SAEFW_DATA_SUBDIR, dir, sizeof dir) != 0)
        return saefw_lua_error(L, "saefw.data_dir: cannot find the saefw binary");
    lua_pushstring(L, dir);
    return 1;
}

int luaopen_saefw_core(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"data_dir", l_data_dir},
        {"memory_policy", l_memory_policy},
        {"threads", l_threads},
        {"where", saefw_lua_where},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    int lib = lua_gettop(L);
    saefw_lua_open_sae(L, lib);
    saefw_lua_open_buffer(L, lib);
    saefw_lua_open_plugin(L, lib);
    saefw_lua_open_model(L, lib);
    saefw_lua_open_tensor(L, lib);
    saefw_lua_open_train(L, lib);
    saefw_lua_open_tokenizer(L, lib);
    saefw_lua_register_features(L);
    lua_pushstring(L, SAEFW_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}
