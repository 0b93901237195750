/* Userdata types, metatable names, accessors and open functions of the Lua binding's classes, shared
 * between their files (lua_sae.c, lua_buffer.c, lua_plugin.c, lua_model.c, lua_tensor.c,
 * lua_train.c) and lua_saefw.c, which opens them into the module. Internal. */
#ifndef SAEFW_LUA_CLASSES_H
#define SAEFW_LUA_CLASSES_H

#include <lua.h>
#include <stdint.h>

#include "model.h"
#include "plugin_loader.h"
#include "sae.h"
#include "source.h"
#include "tokens.h"
#include "train.h"

#define MT_SAE "saefw.SAE"
#define MT_SOURCE "saefw.Source"
#define MT_BUFFER "saefw.Buffer"
#define MT_PLUGIN "saefw.Plugin"
#define MT_MODEL "saefw.Model"
#define MT_TOKENS "saefw.Tokens"
#define MT_TENSOR "saefw.Tensor"

typedef struct {
    saefw_sae sae;
    int alive;
} lsae;

typedef struct {
    saefw_source *src;
    /* For sources on the model host (uservalues 1 and 2 hold the Model and Tokens userdata). */
    int on_model;
    saefw_hook hook;
    int64_t model_batch;
    int with_target; /* a transcoder's data: rows [hook | hook_out] */
    saefw_hook hook_out;
} lsource;

typedef struct {
    saefw_loaded_plugin *lp;
    saefw_opts *opts;
    int is_lua; /* a saefw.lua_plugin: an llua_plugin, with no shared object to unload */
} lplugin;

enum {
    LP_AFTER_BACKWARD,
    LP_AFTER_STEP,
    LP_ON_EVAL,
    LP_ON_END,
    LP_STEP,
    LP_SAVE_STATE,
    LP_LOAD_STATE,
    LP_BEFORE_STEP,
    LP_N
};

typedef struct {
    lua_State *L;
    int fn_ref[LP_N];
    int ctx_ref;
    char name[64];
} lua_plugin_state;

typedef struct {
    lplugin base; /* so saefw_lua_check_plugin accepts it: lp points at `loaded` */
    saefw_loaded_plugin loaded;
    lua_plugin_state st;
} llua_plugin;

typedef struct {
    saefw_model *m;
    char name[256];
} lmodel;

typedef struct {
    saefw_tokens *t;
} ltokens;

typedef struct {
    int ndim;
    int64_t shape[4];
    int64_t numel;
    float data[]; /* [numel], row-major */
} ltensor;

/* The userdata at idx (or the engine object inside it); a Lua error naming what was expected, or
 * that the object was closed, otherwise. Borrowed: valid while the userdata is. */
lsae *saefw_lua_check_lsae(lua_State *L, int idx);
saefw_source *saefw_lua_check_source(lua_State *L, int idx);
saefw_buffer *saefw_lua_check_buffer(lua_State *L, int idx);
lplugin *saefw_lua_check_plugin(lua_State *L, int idx);
lmodel *saefw_lua_check_lmodel(lua_State *L, int idx);
ltokens *saefw_lua_check_ltokens(lua_State *L, int idx);

/* The hook named by fields site_key and layer_key ("site", "layer"; "site_out", "layer_out" for a
 * transcoder's target) of the table at t, checked against m: its layer in range, one row per token.
 * A Lua error naming fn otherwise. */
saefw_hook saefw_lua_read_hook(lua_State *L, int t, const char *fn, const saefw_model *m, const char *site_key,
                               const char *layer_key);
/* Push a new, zeroed saefw.Source userdata (2 user values) for the caller to fill. */
lsource *saefw_lua_new_source(lua_State *L);
/* A source's log callback: the message on stderr. */
void saefw_lua_source_log(void *ud, const char *msg);
/* Push a new saefw.Tensor of the given shape (1 to 4 dims), data uninitialized. */
ltensor *saefw_lua_new_tensor(lua_State *L, int ndim, const int64_t *shape);
float *saefw_lua_push_tensor(lua_State *L, int ndim, const int64_t *shape);
/* Push a table of the training metrics (step, loss, ..., the evaluation's figures when present). */
void saefw_lua_push_metrics(lua_State *L, const saefw_metrics *m);

/* Register each file's classes and put its functions into the module table at module_index. */
void saefw_lua_open_sae(lua_State *L, int module_index);
void saefw_lua_open_buffer(lua_State *L, int module_index);
void saefw_lua_open_plugin(lua_State *L, int module_index);
void saefw_lua_open_model(lua_State *L, int module_index);
void saefw_lua_open_tensor(lua_State *L, int module_index);
void saefw_lua_open_train(lua_State *L, int module_index);

#endif
