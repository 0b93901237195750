/* saefw.tokenizer(name_or_path): a byte-level BPE tokenizer as a Lua userdata with encode, decode and
 * to_str_tokens, and the fields vocab_size, bos, eos and add_bos. */
#include "lua_tokenizer.h"

#include <lauxlib.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "lua_util.h"
#include "tokenizer.h"

#define MT_TOKENIZER "saefw.Tokenizer"

typedef struct {
    saefw_tokenizer *t;
    saefw_tokenizer_scratch *s; /* Lua runs one thread per state */
    char name[256];
} ltokenizer;

static ltokenizer *check_tok(lua_State *L, int idx) {
    ltokenizer *k = luaL_testudata(L, idx, MT_TOKENIZER);
    if (!k || !k->t) saefw_lua_error(L, "expected a tokenizer (saefw.tokenizer), got %s", luaL_typename(L, idx));
    return k;
}

static int tok_gc(lua_State *L) {
    ltokenizer *k = luaL_checkudata(L, 1, MT_TOKENIZER);
    saefw_tokenizer_scratch_free(k->s);
    saefw_tokenizer_free(k->t);
    k->s = NULL;
    k->t = NULL;
    return 0;
}

/* saefw.tokenizer(name_or_path): a tokenizer.json file, a folder holding one, "tiny-1l", "gelu-1l"
 * (NeelNanda/gpt-neox-tokenizer-digits) or a Hub repo id in the huggingface_hub cache. */
static int l_tokenizer(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    char path[PATH_MAX], err[2048];
    if (saefw_tokenizer_resolve(name, path, sizeof path, err, sizeof err) != 0)
        return saefw_lua_error(L, "saefw.tokenizer: %s", err);
    ltokenizer *k = lua_newuserdatauv(L, sizeof *k, 0);
    memset(k, 0, sizeof *k);
    luaL_setmetatable(L, MT_TOKENIZER);
    snprintf(k->name, sizeof k->name, "%s", name);
    if (saefw_tokenizer_load(path, &k->t, err, sizeof err) != 0) return saefw_lua_error(L, "saefw.tokenizer: %s", err);
    k->s = saefw_tokenizer_scratch_new(k->t);
    if (!k->s) return saefw_lua_error(L, "saefw.tokenizer: out of memory");
    return 1;
}

/* The ids of text at idx as a malloc'd array; opts at opt_idx: {special=, bos=}. */
static int32_t *encode_arg(lua_State *L, ltokenizer *k, int idx, int opt_idx, const char *fn, size_t *n) {
    static const char *const keys[] = {"special", "bos", NULL};
    size_t len;
    const char *text = luaL_checklstring(L, idx, &len);
    int special = 0, bos = 0;
    if (!lua_isnoneornil(L, opt_idx)) {
        saefw_lua_check_table(L, opt_idx, fn);
        saefw_lua_check_keys(L, opt_idx, fn, keys);
        special = saefw_lua_opt_bool(L, opt_idx, fn, "special", 0);
        bos = saefw_lua_opt_bool(L, opt_idx, fn, "bos", 0);
    }
    int64_t bos_id = saefw_tokenizer_bos(k->t);
    if (bos && bos_id < 0) saefw_lua_error(L, "%s: bos=true, but the tokenizer %s has no BOS token", fn, k->name);
    int32_t *ids = NULL;
    size_t cap = 0;
    char err[1024];
    *n = 0;
    if (bos) {
        ids = malloc(sizeof *ids * 64);
        if (!ids) saefw_lua_error(L, "%s: out of memory", fn);
        cap = 64;
        ids[(*n)++] = (int32_t)bos_id;
    }
    if (saefw_tokenizer_encode(k->t, k->s, text, len, special ? SAEFW_TOK_SPECIAL : 0, &ids, n, &cap, err,
                               sizeof err) != 0) {
        free(ids);
        saefw_lua_error(L, "%s: %s", fn, err);
    }
    return ids;
}

/* tok:encode(text [, {special=false, bos=false}]) -> {ids}: special parses special tokens written in
 * the text; bos puts the tokenizer's BOS first. */
static int tok_encode(lua_State *L) {
    ltokenizer *k = check_tok(L, 1);
    size_t n;
    int32_t *ids = encode_arg(L, k, 2, 3, "tokenizer:encode", &n);
    lua_createtable(L, (int)(n < INT_MAX ? n : INT_MAX), 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushinteger(L, ids[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    free(ids);
    return 1;
}

/* The ids of the table at idx; errors name the entry. */
static int32_t *table_ids(lua_State *L, ltokenizer *k, int idx, const char *fn, size_t *n) {
    saefw_lua_check_table(L, idx, fn);
    *n = (size_t)lua_rawlen(L, idx);
    int32_t *ids = malloc(sizeof *ids * (*n ? *n : 1));
    if (!ids) saefw_lua_error(L, "%s: out of memory", fn);
    int64_t vocab = saefw_tokenizer_vocab_size(k->t);
    for (size_t i = 0; i < *n; i++) {
        lua_rawgeti(L, idx, (lua_Integer)i + 1);
        int ok;
        lua_Integer v = lua_tointegerx(L, -1, &ok);
        lua_pop(L, 1);
        if (!ok || v < 0 || v >= vocab) {
            free(ids);
            saefw_lua_error(L, "%s: ids[%zu] is not a token id (0 .. %lld)", fn, i + 1, (long long)vocab - 1);
        }
        ids[i] = (int32_t)v;
    }
    return ids;
}

/* tok:decode(ids) -> string (invalid UTF-8 becomes U+FFFD, as Hugging Face's decoder does). */
static int tok_decode(lua_State *L) {
    ltokenizer *k = check_tok(L, 1);
    size_t n, len;
    int32_t *ids = table_ids(L, k, 2, "tokenizer:decode", &n);
    char *out = NULL, err[1024];
    int rc = saefw_tokenizer_decode(k->t, ids, n, &out, &len, err, sizeof err);
    free(ids);
    if (rc != 0) return saefw_lua_error(L, "tokenizer:decode: %s", err);
    lua_pushlstring(L, out, len);
    free(out);
    return 1;
}

/* tok:to_str_tokens(text_or_ids [, opts]) -> {strings}: each token decoded alone, as TransformerLens's
 * to_str_tokens does (a token holding part of a UTF-8 character shows as U+FFFD; the raw bytes are
 * saefw_tokenizer_token_bytes in C). */
static int tok_to_str_tokens(lua_State *L) {
    ltokenizer *k = check_tok(L, 1);
    size_t n;
    int32_t *ids = lua_type(L, 2) == LUA_TTABLE ? table_ids(L, k, 2, "tokenizer:to_str_tokens", &n)
                                                : encode_arg(L, k, 2, 3, "tokenizer:to_str_tokens", &n);
    lua_createtable(L, (int)(n < INT_MAX ? n : INT_MAX), 0);
    for (size_t i = 0; i < n; i++) {
        char *out = NULL, err[512];
        size_t len;
        if (saefw_tokenizer_decode(k->t, &ids[i], 1, &out, &len, err, sizeof err) != 0) {
            free(ids);
            return saefw_lua_error(L, "tokenizer:to_str_tokens: %s", err);
        }
        lua_pushlstring(L, out, len);
        free(out);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    free(ids);
    return 1;
}

static int tok_index(lua_State *L) {
    ltokenizer *k = check_tok(L, 1);
    const char *key = luaL_checkstring(L, 2);
    if (!strcmp(key, "vocab_size")) lua_pushinteger(L, saefw_tokenizer_vocab_size(k->t));
    else if (!strcmp(key, "bos") || !strcmp(key, "eos")) {
        int64_t id = key[0] == 'b' ? saefw_tokenizer_bos(k->t) : saefw_tokenizer_eos(k->t);
        if (id < 0) lua_pushnil(L);
        else lua_pushinteger(L, id);
    } else if (!strcmp(key, "add_bos")) lua_pushboolean(L, saefw_tokenizer_add_bos(k->t));
    else if (!strcmp(key, "name")) lua_pushstring(L, k->name);
    else {
        luaL_getmetafield(L, 1, "methods");
        lua_getfield(L, -1, key);
    }
    return 1;
}

void saefw_lua_open_tokenizer(lua_State *L, int module_index) {
    static const luaL_Reg methods[] = {
        {"encode", tok_encode}, {"decode", tok_decode}, {"to_str_tokens", tok_to_str_tokens}, {NULL, NULL}};
    saefw_lua_new_class(L, MT_TOKENIZER, tok_gc, tok_index, methods);
    lua_pushcfunction(L, l_tokenizer);
    lua_setfield(L, module_index, "tokenizer");
}
