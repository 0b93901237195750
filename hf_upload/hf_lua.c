/* Lua module saefw.hf: upload{...} and download{...} over the Hub client, with errors that name
 * the bad argument. The engine registers luaopen_saefw_hf as package.preload["saefw.hf"]. */
#include "hf_internal.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

/* Refuse keys the function does not know, so a typo ("privat=true") is not silently ignored. */
static void check_keys(lua_State *L, const char *fn, const char *const *known) {
    lua_pushnil(L);
    while (lua_next(L, 1) != 0) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "saefw.hf.%s: arguments are named (a table of key = value)", fn);
        const char *k = lua_tostring(L, -1);
        const char *const *p = known;
        while (*p && strcmp(*p, k) != 0) p++;
        if (!*p) luaL_error(L, "saefw.hf.%s: unknown argument '%s'", fn, k);
    }
}

/* t[name] as a string (left on the stack so it stays alive), or NULL when absent and optional. */
static const char *field_string(lua_State *L, const char *fn, const char *name, int required) {
    int t = lua_getfield(L, 1, name);
    if (t == LUA_TNIL) {
        if (required) luaL_error(L, "saefw.hf.%s: argument '%s' (a string) is required", fn, name);
        return NULL;
    }
    if (t != LUA_TSTRING)
        luaL_error(L, "saefw.hf.%s: argument '%s' must be a string, got %s", fn, name, luaL_typename(L, -1));
    return lua_tostring(L, -1);
}

static int field_bool(lua_State *L, const char *fn, const char *name) {
    int t = lua_getfield(L, 1, name);
    int v = 0;
    if (t == LUA_TBOOLEAN) v = lua_toboolean(L, -1);
    else if (t != LUA_TNIL)
        luaL_error(L, "saefw.hf.%s: argument '%s' must be a boolean, got %s", fn, name, luaL_typename(L, -1));
    lua_pop(L, 1);
    return v;
}

/* Run the operation with C-side resources only, then raise or return once they are freed:
 * luaL_error does not return, so nothing may be pending when it is called. */
static int l_upload(lua_State *L) {
    static const char *const known[] = {"dir",     "repo",     "create",       "private",
                                        "message", "revision", "path_in_repo", NULL};
    luaL_checktype(L, 1, LUA_TTABLE);
    check_keys(L, "upload", known);
    hf_upload_opts o = {0};
    o.dir = field_string(L, "upload", "dir", 1);
    o.repo = field_string(L, "upload", "repo", 1);
    o.message = field_string(L, "upload", "message", 0);
    o.revision = field_string(L, "upload", "revision", 0);
    o.path_in_repo = field_string(L, "upload", "path_in_repo", 0);
    o.create = field_bool(L, "upload", "create");
    o.private_repo = field_bool(L, "upload", "private");
    if (o.private_repo && !o.create)
        luaL_error(L, "saefw.hf.upload: argument 'private' only applies with create = true");
    char err[1024] = "";
    hf_config cfg;
    char *url = NULL;
    int rc = hf_config_from_env(&cfg, err, sizeof err);
    if (rc == 0) {
        hf_term term;
        hf_term_init(&term, "upload");
        cfg.progress = hf_term_event;
        cfg.progress_ud = &term;
        rc = hf_upload_folder(&cfg, &o, &url, err, sizeof err);
        hf_term_finish(&term);
        hf_config_free(&cfg);
    }
    if (rc != 0) return luaL_error(L, "saefw.hf.upload: %s", err);
    lua_pushstring(L, url);
    free(url);
    return 1;
}

/* t[name]: one string or a list of strings, as a userdata-held array (the strings stay referenced
 * by the argument table); *n gets the count. */
static const char **field_strings(lua_State *L, const char *fn, const char *name, size_t *n) {
    int t = lua_getfield(L, 1, name);
    int idx = lua_gettop(L);
    *n = 0;
    if (t == LUA_TSTRING) {
        *n = 1;
    } else if (t == LUA_TTABLE) {
        *n = (size_t)luaL_len(L, idx);
        for (size_t i = 1; i <= *n; i++) {
            if (lua_geti(L, idx, (lua_Integer)i) != LUA_TSTRING)
                luaL_error(L, "saefw.hf.%s: argument '%s' must be a list of strings (item %d is a %s)", fn, name,
                           (int)i, luaL_typename(L, -1));
            lua_pop(L, 1);
        }
    } else if (t != LUA_TNIL) {
        luaL_error(L, "saefw.hf.%s: argument '%s' must be a string or a list of strings, got %s", fn, name,
                   luaL_typename(L, -1));
    }
    const char **v = lua_newuserdatauv(L, (*n ? *n : 1) * sizeof *v, 0);
    if (t == LUA_TSTRING) {
        v[0] = lua_tostring(L, idx);
    } else {
        for (size_t i = 1; i <= *n; i++) {
            lua_geti(L, idx, (lua_Integer)i);
            v[i - 1] = lua_tostring(L, -1); /* still referenced by the list */
            lua_pop(L, 1);
        }
    }
    return v;
}

static int l_download(lua_State *L) {
    static const char *const known[] = {"repo", "files", "revision", "repo_type", "include", NULL};
    luaL_checktype(L, 1, LUA_TTABLE);
    check_keys(L, "download", known);
    hf_download_opts o = {0};
    o.repo = field_string(L, "download", "repo", 1);
    o.revision = field_string(L, "download", "revision", 0);
    o.repo_type = field_string(L, "download", "repo_type", 0);
    if (o.repo_type && strcmp(o.repo_type, "model") != 0 && strcmp(o.repo_type, "dataset") != 0)
        luaL_error(L, "saefw.hf.download: argument 'repo_type' must be \"model\" or \"dataset\", got \"%s\"",
                   o.repo_type);
    o.files = field_strings(L, "download", "files", &o.nfiles);
    o.include = field_strings(L, "download", "include", &o.ninclude);
    if (o.nfiles && o.ninclude) luaL_error(L, "saefw.hf.download: arguments 'files' and 'include' exclude each other");
    char err[1024] = "";
    hf_config cfg;
    char *path = NULL;
    int rc = hf_config_from_env(&cfg, err, sizeof err);
    if (rc == 0) {
        hf_term term;
        hf_term_init(&term, "download");
        cfg.progress = hf_term_event;
        cfg.progress_ud = &term;
        rc = hf_download_repo(&cfg, &o, &path, err, sizeof err);
        hf_term_finish(&term);
        hf_config_free(&cfg);
    }
    if (rc != 0) return luaL_error(L, "saefw.hf.download: %s", err);
    lua_pushstring(L, path);
    free(path);
    return 1;
}

int luaopen_saefw_hf(lua_State *L) {
    static const luaL_Reg fns[] = {{"upload", l_upload}, {"download", l_download}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
