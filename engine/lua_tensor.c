/* Lua binding of tensors: saefw.Tensor (a float32 array owned by Lua, model:run's results),
 * saefw.save_tensor and saefw.info (a tensor file's tensors). */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "lua_classes.h"
#include "lua_util.h"
#include "tensorfile.h"

/* ---- Tensor: a float32 array owned by Lua (model:run's results) ---- */

ltensor *saefw_lua_new_tensor(lua_State *L, int ndim, const int64_t *shape) {
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) numel *= shape[d];
    ltensor *t = lua_newuserdatauv(L, sizeof *t + sizeof(float) * (size_t)numel, 0);
    t->ndim = ndim;
    t->numel = numel;
    for (int d = 0; d < 4; d++) t->shape[d] = d < ndim ? shape[d] : 1;
    luaL_setmetatable(L, MT_TENSOR);
    return t;
}

static ltensor *check_tensor(lua_State *L, int idx) { return luaL_checkudata(L, idx, MT_TENSOR); }

float *saefw_lua_push_tensor(lua_State *L, int ndim, const int64_t *shape) {
    return saefw_lua_new_tensor(L, ndim, shape)->data;
}

/* t:get(i, j, ...) with one 1-based index per dimension. */
static int tensor_get(lua_State *L) {
    ltensor *t = check_tensor(L, 1);
    if (lua_gettop(L) - 1 != t->ndim)
        return saefw_lua_error(L, "tensor:get: expected %d indices (one per dimension), got %d", t->ndim,
                               lua_gettop(L) - 1);
    int64_t off = 0;
    for (int d = 0; d < t->ndim; d++) {
        lua_Integer i = luaL_checkinteger(L, 2 + d);
        if (i < 1 || i > t->shape[d])
            return saefw_lua_error(L, "tensor:get: index %d is %lld, outside [1, %lld]", d + 1, (long long)i,
                                   (long long)t->shape[d]);
        off = off * t->shape[d] + (i - 1);
    }
    lua_pushnumber(L, t->data[off]);
    return 1;
}

static void push_nested(lua_State *L, const ltensor *t, int d, int64_t *off) {
    const int64_t n = d < 4 ? t->shape[d] : 0;
    lua_createtable(L, (int)n, 0);
    for (int64_t i = 0; i < n; i++) {
        if (d >= t->ndim - 1 || d >= 3) lua_pushnumber(L, t->data[(*off)++]);
        else push_nested(L, t, d + 1, off);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

/* t:to_table(): nested Lua tables, t:to_table()[i][j] == t:get(i, j). */
static int tensor_to_table(lua_State *L) {
    ltensor *t = check_tensor(L, 1);
    int64_t off = 0;
    luaL_checkstack(L, t->ndim + 4, "tensor:to_table");
    push_nested(L, t, 0, &off);
    return 1;
}

static int tensor_index(lua_State *L) {
    ltensor *t = check_tensor(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (!strcmp(k, "shape")) {
        lua_createtable(L, t->ndim, 0);
        for (int d = 0; d < t->ndim; d++) {
            lua_pushinteger(L, t->shape[d]);
            lua_rawseti(L, -2, d + 1);
        }
    } else if (!strcmp(k, "ndim")) {
        lua_pushinteger(L, t->ndim);
    } else if (!strcmp(k, "numel")) {
        lua_pushinteger(L, t->numel);
    } else {
        luaL_getmetafield(L, 1, "methods");
        lua_getfield(L, -1, k);
    }
    return 1;
}

static int tensor_gc(lua_State *L) { return 0; }

/* saefw.save_tensor(path, values, shape): a float32 tensor from a flat Lua array, as .npy or (any
 * other name) safetensors with one tensor named "tensor"; written atomically. */
static int l_save_tensor(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int64_t n = (int64_t)lua_rawlen(L, 2);
    int64_t shape[SAEFW_MAX_DIMS];
    int ndim = 1;
    shape[0] = n;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        ndim = (int)lua_rawlen(L, 3);
        if (ndim < 1 || ndim > SAEFW_MAX_DIMS)
            return saefw_lua_error(L, "saefw.save_tensor: shape must have 1 to %d dims", SAEFW_MAX_DIMS);
        int64_t total = 1;
        for (int i = 0; i < ndim; i++) {
            lua_rawgeti(L, 3, i + 1);
            lua_Integer v = lua_tointeger(L, -1);
            lua_pop(L, 1);
            if (v <= 0) return saefw_lua_error(L, "saefw.save_tensor: shape entries must be positive integers");
            shape[i] = v;
            total *= v;
        }
        if (total != n)
            return saefw_lua_error(L, "saefw.save_tensor: shape holds %lld values, the array %lld", (long long)total,
                                   (long long)n);
    }
    if (n <= 0) return saefw_lua_error(L, "saefw.save_tensor: the array is empty");
    float *data = malloc(sizeof(float) * (size_t)n);
    if (!data) return saefw_lua_error(L, "saefw.save_tensor: out of memory");
    for (int64_t k = 0; k < n; k++) {
        lua_rawgeti(L, 2, (lua_Integer)k + 1);
        int ok;
        data[k] = (float)lua_tonumberx(L, -1, &ok);
        lua_pop(L, 1);
        if (!ok) {
            free(data);
            return saefw_lua_error(L, "saefw.save_tensor: entry %lld is not a number", (long long)k + 1);
        }
    }
    char err[1024];
    size_t len = strlen(path);
    int rc;
    if (len > 4 && !strcmp(path + len - 4, ".npy")) {
        rc = saefw_npy_write(path, SAEFW_DT_F32, ndim, shape, data, err, sizeof err);
    } else {
        saefw_tensor_ref ref = {"tensor", SAEFW_DT_F32, ndim, shape, data};
        rc = saefw_safetensors_write(path, &ref, 1, NULL, 0, err, sizeof err);
    }
    free(data);
    if (rc != 0) return saefw_lua_error(L, "saefw.save_tensor: %s", err);
    return 0;
}

static int l_info(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    saefw_tensorfile *tf = NULL;
    char err[1024];
    if (saefw_tf_open(path, &tf, err, sizeof err) != 0) return saefw_lua_error(L, "saefw.info: %s", err);
    lua_newtable(L);
    for (int i = 0; i < saefw_tf_count(tf); i++) {
        const saefw_tensor_info *t = saefw_tf_get(tf, i);
        lua_newtable(L);
        lua_pushstring(L, t->name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, saefw_dtype_name(t->dtype));
        lua_setfield(L, -2, "dtype");
        lua_newtable(L);
        for (int k = 0; k < t->ndim; k++) {
            lua_pushinteger(L, t->shape[k]);
            lua_rawseti(L, -2, k + 1);
        }
        lua_setfield(L, -2, "shape");
        lua_rawseti(L, -2, i + 1);
    }
    saefw_tf_close(tf);
    return 1;
}

/* saefw.info, saefw.save_tensor and the Tensor class. */
void saefw_lua_open_tensor(lua_State *L, int module_index) {
    static const luaL_Reg tensor_methods[] = {{"get", tensor_get}, {"to_table", tensor_to_table}, {NULL, NULL}};
    saefw_lua_new_class(L, MT_TENSOR, tensor_gc, tensor_index, tensor_methods);
    static const luaL_Reg fns[] = {
        {"info", l_info},
        {"save_tensor", l_save_tensor},
        {NULL, NULL},
    };
    lua_pushvalue(L, module_index);
    luaL_setfuncs(L, fns, 0);
    lua_pop(L, 1);
}
