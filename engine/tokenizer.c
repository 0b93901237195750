/* Byte-level BPE from a Hugging Face tokenizer.json. Everything runs on raw bytes: the vocab's
 * byte-level strings (GPT-2's bytes-to-unicode alphabet) are turned back into bytes at load, so a
 * pre-token's bytes are the BPE's initial symbols and no text is re-encoded per call. Semantics follow
 * the official tokenizers (the JavaScript implementation is the test reference). */
#include "tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <dirent.h>
#include <limits.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

#include "model_resolve.h"
#include "util.h"

/* GPT-2's pre-tokenizer regex, used by ByteLevel when use_regex is true. */
static const char GPT2_PATTERN[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* Ids above this are taken for a damaged file, not allocated for. */
#define MAX_ID (1 << 24)
/* Pre-tokens at most this long go into the word cache. */
#define CACHE_MAX_WORD 256
/* A scratch's cache is emptied when it holds this many words. */
#define CACHE_MAX_WORDS (1u << 16)

enum { STEP_SPLIT, STEP_DIGITS, STEP_BYTELEVEL };
enum { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS };

typedef struct {
    int kind;
    pcre2_code *re;        /* STEP_SPLIT, or STEP_BYTELEVEL with use_regex (else NULL) */
    int behavior, invert;  /* STEP_SPLIT */
    int individual_digits; /* STEP_DIGITS */
    int add_prefix_space;  /* STEP_BYTELEVEL */
} pretok_step;

typedef struct {
    int32_t id;
    uint32_t off, len; /* content in t->pool */
    uint8_t special, lstrip, rstrip, single_word, normalized;
} added_token;

/* A byte trie over the added tokens' contents: leftmost-longest matching. */
typedef struct {
    int32_t child, sibling, tok; /* tok: index into t->added or -1 */
    uint8_t byte;
} trie_node;

typedef struct {
    trie_node *nodes;
    int32_t n, cap;
    int32_t root_child[256];
} trie;

typedef struct {
    uint64_t key; /* (left << 32) | right; UINT64_MAX when empty */
    int32_t rank, id;
} merge_slot;

struct saefw_tokenizer {
    char *pool; /* bytes of all tokens and added-token contents */
    size_t pool_len, pool_cap;
    int64_t vocab_size;
    uint32_t *tok_off, *tok_len; /* [vocab_size]; tok_len UINT32_MAX: no token */
    int32_t *map;                /* open-addressing: model vocab bytes -> id; -1 empty */
    size_t map_cap;
    int32_t byte_id[256];
    merge_slot *merges;
    size_t merges_cap;
    int ignore_merges;
    added_token *added;
    int n_added;
    trie trie_raw, trie_norm; /* added tokens matched before / after normalization */
    int nfc;
    pretok_step *steps;
    int n_steps;
    int32_t pre_ids[8], post_ids[8];
    int n_pre, n_post;
    int64_t bos, eos;
};

typedef struct {
    const char *p;
    uint32_t len;
} span;

typedef struct {
    int32_t rank, pos, lid, rid;
} heap_entry;

typedef struct {
    uint64_t hash;
    uint32_t key_off, key_len, val_off, val_len;
} cache_slot;

struct saefw_tokenizer_scratch {
    pcre2_match_data *md;
    pcre2_jit_stack *jit_stack; /* the default 32 KiB is too small for long runs of one class */
    pcre2_match_context *mctx;
    char *clean; /* the text with invalid UTF-8 replaced */
    size_t clean_cap;
    char *extra; /* pre-tokens with a prefix space */
    size_t extra_cap, extra_len;
    span *a, *b;
    size_t a_cap, b_cap;
    int32_t *sym, *prev, *next;
    size_t sym_cap;
    heap_entry *heap;
    size_t heap_cap;
    cache_slot *slots; /* CACHE_MAX_WORDS * 2 */
    uint32_t n_words;
    char *keys;
    size_t keys_len, keys_cap;
    int32_t *vals;
    size_t vals_len, vals_cap;
};

/* ---- small helpers ---- */

static uint64_t hash_bytes(const char *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem, char *err, size_t errlen) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return saefw_errf(err, errlen, "out of memory (%zu bytes)", c * elem);
    *p = q;
    *cap = c;
    return 0;
}

static int pool_add(saefw_tokenizer *t, const char *s, size_t n, uint32_t *off, char *err, size_t errlen) {
    if (grow((void **)&t->pool, &t->pool_cap, t->pool_len + n + 1, 1, err, errlen) != 0) return -1;
    memcpy(t->pool + t->pool_len, s, n);
    *off = (uint32_t)t->pool_len;
    t->pool_len += n;
    return 0;
}

/* The inverse of GPT-2's bytes_to_unicode (printable bytes keep their code point, the others get
 * 256 + n in order): code point -> byte, -1 for code points outside the alphabet. */
static void byte_level_table(int cp_byte[324]) {
    int n = 0;
    for (int i = 0; i < 324; i++) cp_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        cp_byte[printable ? b : 256 + n++] = b;
    }
}

/* Decode one byte-level string into raw bytes (written to out, which has room for n bytes: the
 * result is never longer). A character outside the alphabet is kept as its UTF-8, as HF's decoder
 * does. */
static size_t byte_level_decode(const char *s, size_t n, const int cp_byte[324], char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k <= 0) {
            out[o++] = s[i++];
            continue;
        }
        if (cp >= 0 && cp < 324 && cp_byte[cp] >= 0) out[o++] = (char)cp_byte[cp];
        else {
            memcpy(out + o, s + i, (size_t)k);
            o += (size_t)k;
        }
        i += (size_t)k;
    }
    return o;
}

/* The length of the valid UTF-8 sequence at p (1..4), or 0 when the bytes there start an invalid
 * one; *bad is then set to the length of its maximal invalid subpart (Unicode's U+FFFD policy). */
static int utf8_seq(const uint8_t *p, size_t n, size_t *bad) {
    uint8_t c = p[0];
    if (c < 0x80) return 1;
    int need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        *bad = 1;
        return 0;
    }
    size_t i = 1;
    for (; i <= (size_t)need; i++) {
        if (i >= n) break;
        uint8_t b = p[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) break;
    }
    if (i == (size_t)need + 1) return need + 1;
    *bad = i;
    return 0;
}

/* Copy src to dst replacing invalid UTF-8 by U+FFFD; returns the length written (dst has room for
 * 3 * n bytes). */
static size_t utf8_sanitize(const char *src, size_t n, char *dst) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t bad = 0;
        int k = utf8_seq((const uint8_t *)src + i, n - i, &bad);
        if (k > 0) {
            memcpy(dst + o, src + i, (size_t)k);
            o += (size_t)k;
            i += (size_t)k;
        } else {
            memcpy(dst + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += bad;
        }
    }
    return o;
}

static int utf8_valid(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        if ((uint8_t)s[i] < 0x80) {
            i++;
            continue;
        }
        size_t bad;
        int k = utf8_seq((const uint8_t *)s + i, n - i, &bad);
        if (k == 0) return 0;
        i += (size_t)k;
    }
    return 1;
}

/* ---- vocab map and merges ---- */

static int32_t vocab_find(const saefw_tokenizer *t, const char *s, size_t n) {
    size_t mask = t->map_cap - 1;
    for (size_t h = hash_bytes(s, n) & mask;; h = (h + 1) & mask) {
        int32_t id = t->map[h];
        if (id < 0) return -1;
        if (t->tok_len[id] == n && memcmp(t->pool + t->tok_off[id], s, n) == 0) return id;
    }
}

static void vocab_insert(saefw_tokenizer *t, int32_t id) {
    size_t mask = t->map_cap - 1;
    const char *s = t->pool + t->tok_off[id];
    size_t n = t->tok_len[id];
    for (size_t h = hash_bytes(s, n) & mask;; h = (h + 1) & mask) {
        int32_t o = t->map[h];
        if (o < 0) {
            t->map[h] = id;
            return;
        }
        if (t->tok_len[o] == n && memcmp(t->pool + t->tok_off[o], s, n) == 0) return; /* first id wins */
    }
}

static const merge_slot *merge_find(const saefw_tokenizer *t, int32_t a, int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t mask = t->merges_cap - 1;
    for (size_t h = hash_u64(key) & mask;; h = (h + 1) & mask) {
        const merge_slot *m = &t->merges[h];
        if (m->key == key) return m;
        if (m->key == UINT64_MAX) return NULL;
    }
}

/* ---- added-token tries ---- */

static int trie_add(trie *tr, const char *s, size_t n, int32_t tok, char *err, size_t errlen) {
    if (tr->n == 0)
        for (int i = 0; i < 256; i++) tr->root_child[i] = -1;
    int32_t parent = -1;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        int32_t cur = parent < 0 ? tr->root_child[c] : tr->nodes[parent].child;
        if (parent >= 0)
            while (cur >= 0 && tr->nodes[cur].byte != c) cur = tr->nodes[cur].sibling;
        if (cur < 0) {
            size_t cap = (size_t)tr->cap;
            if (grow((void **)&tr->nodes, &cap, (size_t)tr->n + 1, sizeof(trie_node), err, errlen) != 0) return -1;
            tr->cap = (int32_t)cap;
            cur = tr->n++;
            tr->nodes[cur] = (trie_node){-1, -1, -1, c};
            if (parent < 0) tr->root_child[c] = cur;
            else {
                tr->nodes[cur].sibling = tr->nodes[parent].child;
                tr->nodes[parent].child = cur;
            }
        }
        parent = cur;
    }
    if (parent >= 0 && tr->nodes[parent].tok < 0) tr->nodes[parent].tok = tok;
    return 0;
}

static int is_word_byte(uint8_t c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

/* The longest added token (allowed by `special`) at s[i]: its index into t->added and length. */
static int trie_match(const saefw_tokenizer *t, const trie *tr, const char *s, size_t n, size_t i, int special,
                      size_t *mlen) {
    if (tr->n == 0) return -1;
    int best = -1;
    int32_t cur = tr->root_child[(uint8_t)s[i]];
    for (size_t j = i; cur >= 0;) {
        const trie_node *nd = &tr->nodes[cur];
        if (nd->tok >= 0) {
            const added_token *a = &t->added[nd->tok];
            int ok = special || !a->special;
            if (ok && a->single_word)
                ok = (i == 0 || !is_word_byte((uint8_t)s[i - 1])) && (j + 1 >= n || !is_word_byte((uint8_t)s[j + 1]));
            if (ok) {
                best = nd->tok;
                *mlen = j + 1 - i;
            }
        }
        if (++j >= n) break;
        uint8_t c = (uint8_t)s[j];
        for (cur = nd->child; cur >= 0 && tr->nodes[cur].byte != c; cur = tr->nodes[cur].sibling) {}
    }
    return best;
}

/* ---- loading ---- */

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int jbool(const cJSON *o, const char *k, int dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    return dflt;
}

static int compile_re(const char *pattern, pcre2_code **out, const char *name, char *err, size_t errlen) {
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return saefw_errf(err, errlen, "%s: pre-tokenizer regex at offset %zu: %s", name, (size_t)eo, (char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* without JIT (an unsupported CPU) matching still works */
    *out = re;
    return 0;
}

static int add_step(saefw_tokenizer *t, pretok_step st, size_t *cap, char *err, size_t errlen) {
    if (grow((void **)&t->steps, cap, (size_t)t->n_steps + 1, sizeof st, err, errlen) != 0) {
        if (st.re) pcre2_code_free(st.re);
        return -1;
    }
    t->steps[t->n_steps++] = st;
    return 0;
}

/* The ASCII escape of a Split's String pattern as a PCRE2 pattern. */
static int escape_literal(const char *s, char *out, size_t n) {
    size_t o = 0;
    for (; *s; s++) {
        if (o + 3 >= n) return -1;
        if (strchr("\\^$.|?*+()[]{}", *s)) out[o++] = '\\';
        out[o++] = *s;
    }
    out[o] = 0;
    return 0;
}

static int load_pretok(saefw_tokenizer *t, const cJSON *p, size_t *cap, int *has_bl, const char *name, char *err,
                       size_t errlen) {
    const char *type = jstr(p, "type");
    if (!type) return saefw_errf(err, errlen, "%s: pre_tokenizer without a type", name);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        if (!cJSON_IsArray(list))
            return saefw_errf(err, errlen, "%s: Sequence pre-tokenizer without pretokenizers", name);
        const cJSON *it;
        cJSON_ArrayForEach(it, list) if (load_pretok(t, it, cap, has_bl, name, err, errlen) != 0) return -1;
        return 0;
    }
    pretok_step st = {0};
    if (!strcmp(type, "ByteLevel")) {
        st.kind = STEP_BYTELEVEL;
        st.add_prefix_space = jbool(p, "add_prefix_space", 0);
        if (jbool(p, "use_regex", 1) && compile_re(GPT2_PATTERN, &st.re, name, err, errlen) != 0) return -1;
        *has_bl = 1;
        return add_step(t, st, cap, err, errlen);
    }
    if (!strcmp(type, "Digits")) {
        st.kind = STEP_DIGITS;
        st.individual_digits = jbool(p, "individual_digits", 0);
        return add_step(t, st, cap, err, errlen);
    }
    if (!strcmp(type, "Split")) {
        st.kind = STEP_SPLIT;
        const char *beh = jstr(p, "behavior");
        static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                            "Contiguous"};
        st.behavior = -1;
        for (int i = 0; i < 5; i++)
            if (beh && !strcmp(beh, names[i])) st.behavior = i;
        if (st.behavior < 0)
            return saefw_errf(err, errlen, "%s: Split pre-tokenizer behavior '%s' is not known", name,
                              beh ? beh : "(none)");
        st.invert = jbool(p, "invert", 0);
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const char *re = jstr(pat, "Regex"), *lit = jstr(pat, "String");
        char buf[1024];
        if (!re && lit) {
            if (escape_literal(lit, buf, sizeof buf) != 0)
                return saefw_errf(err, errlen, "%s: Split pattern too long", name);
            re = buf;
        }
        if (!re) return saefw_errf(err, errlen, "%s: Split pre-tokenizer without a Regex or String pattern", name);
        if (compile_re(re, &st.re, name, err, errlen) != 0) return -1;
        return add_step(t, st, cap, err, errlen);
    }
    return saefw_errf(
        err, errlen,
        "%s: pre-tokenizer type '%s' is not supported (byte-level BPE: ByteLevel, Split, Digits, Sequence)", name,
        type);
}

static int load_normalizer(saefw_tokenizer *t, const cJSON *n, const char *name, char *err, size_t errlen) {
    if (!n || cJSON_IsNull(n)) return 0;
    const char *type = jstr(n, "type");
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(n, "normalizers")) {
            if (load_normalizer(t, it, name, err, errlen) != 0) return -1;
        }
        return 0;
    }
    if (type && !strcmp(type, "NFC")) {
        t->nfc = 1;
        return 0;
    }
    return saefw_errf(err, errlen, "%s: normalizer type '%s' is not supported (only NFC)", name,
                      type ? type : "(none)");
}

static int load_decoder(const cJSON *d, const char *name, char *err, size_t errlen) {
    if (!d || cJSON_IsNull(d)) return 0;
    const char *type = jstr(d, "type");
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(d, "decoders")) {
            if (load_decoder(it, name, err, errlen) != 0) return -1;
        }
        return 0;
    }
    if (type && !strcmp(type, "ByteLevel")) return 0;
    return saefw_errf(err, errlen, "%s: decoder type '%s' is not supported (only ByteLevel)", name,
                      type ? type : "(none)");
}

static int32_t added_id(const saefw_tokenizer *t, const char *content) {
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].len == strlen(content) && !memcmp(t->pool + t->added[i].off, content, t->added[i].len))
            return t->added[i].id;
    return -1;
}

static int load_post(saefw_tokenizer *t, const cJSON *p, const char *name, char *err, size_t errlen) {
    if (!p || cJSON_IsNull(p)) return 0;
    const char *type = jstr(p, "type");
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(p, "processors")) {
            if (load_post(t, it, name, err, errlen) != 0) return -1;
        }
        return 0;
    }
    if (type && !strcmp(type, "ByteLevel")) return 0;
    if (type && !strcmp(type, "TemplateProcessing")) {
        const cJSON *single = cJSON_GetObjectItemCaseSensitive(p, "single");
        const cJSON *specials = cJSON_GetObjectItemCaseSensitive(p, "special_tokens");
        const cJSON *it;
        int seen_seq = 0;
        t->n_pre = t->n_post = 0;
        cJSON_ArrayForEach(it, single) {
            if (cJSON_GetObjectItemCaseSensitive(it, "Sequence")) {
                seen_seq = 1;
                continue;
            }
            const char *sid = jstr(cJSON_GetObjectItemCaseSensitive(it, "SpecialToken"), "id");
            if (!sid)
                return saefw_errf(err, errlen, "%s: TemplateProcessing item is neither Sequence nor SpecialToken",
                                  name);
            const cJSON *ids = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(specials, sid), "ids");
            const cJSON *id;
            cJSON_ArrayForEach(id, ids) {
                if (!cJSON_IsNumber(id))
                    return saefw_errf(err, errlen, "%s: TemplateProcessing special token '%s' has a bad id", name, sid);
                int32_t *dst = seen_seq ? t->post_ids : t->pre_ids;
                int *nd = seen_seq ? &t->n_post : &t->n_pre;
                if (*nd >= 8)
                    return saefw_errf(err, errlen, "%s: TemplateProcessing has too many special tokens", name);
                dst[(*nd)++] = (int32_t)id->valuedouble;
            }
            if (!cJSON_IsArray(ids) || cJSON_GetArraySize(ids) == 0)
                return saefw_errf(err, errlen, "%s: TemplateProcessing special token '%s' is not in special_tokens",
                                  name, sid);
        }
        return 0;
    }
    return saefw_errf(err, errlen, "%s: post-processor type '%s' is not supported (ByteLevel, TemplateProcessing)",
                      name, type ? type : "(none)");
}

/* The id of a tokenizer_config.json entry such as "bos_token" (a string or {"content": ...}). */
static int64_t config_token(const saefw_tokenizer *t, const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    const char *s = cJSON_IsString(v) ? v->valuestring : jstr(v, "content");
    if (!s) return -1;
    int32_t id = added_id(t, s);
    return id >= 0 ? id : vocab_find(t, s, strlen(s));
}

static int load_model(saefw_tokenizer *t, const cJSON *model, const char *name, char *err, size_t errlen) {
    const char *type = jstr(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!type && !(cJSON_IsObject(vocab) && cJSON_IsArray(merges)))
        return saefw_errf(err, errlen, "%s: model has no type", name);
    if (type && strcmp(type, "BPE") != 0)
        return saefw_errf(err, errlen, "%s: model type '%s' is not supported (only byte-level BPE)", name, type);
    if (jbool(model, "byte_fallback", 0))
        return saefw_errf(err, errlen, "%s: BPE byte_fallback is not supported", name);
    const cJSON *drop = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (drop && !cJSON_IsNull(drop)) return saefw_errf(err, errlen, "%s: BPE dropout is not supported", name);
    const char *csp = jstr(model, "continuing_subword_prefix"), *eow = jstr(model, "end_of_word_suffix");
    if ((csp && *csp) || (eow && *eow))
        return saefw_errf(err, errlen, "%s: BPE continuing_subword_prefix/end_of_word_suffix are not supported", name);
    if (!cJSON_IsObject(vocab)) return saefw_errf(err, errlen, "%s: model.vocab is missing or not an object", name);
    if (!cJSON_IsArray(merges)) return saefw_errf(err, errlen, "%s: model.merges is missing or not an array", name);
    t->ignore_merges = jbool(model, "ignore_merges", 0);
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble >= MAX_ID)
            return saefw_errf(err, errlen, "%s: vocab entry '%s' has no valid id (0 .. %d)", name, it->string,
                              MAX_ID - 1);
        if ((int64_t)it->valuedouble + 1 > t->vocab_size) t->vocab_size = (int64_t)it->valuedouble + 1;
    }
    return 0;
}

static int fill_vocab(saefw_tokenizer *t, const cJSON *vocab, const int cp_byte[324], char *err, size_t errlen) {
    const cJSON *it;
    char buf[1024];
    cJSON_ArrayForEach(it, vocab) {
        size_t n = strlen(it->string);
        char *tmp = n <= sizeof buf ? buf : malloc(n);
        if (!tmp) return saefw_errf(err, errlen, "out of memory");
        size_t m = byte_level_decode(it->string, n, cp_byte, tmp);
        int32_t id = (int32_t)it->valuedouble;
        int rc = pool_add(t, tmp, m, &t->tok_off[id], err, errlen);
        if (tmp != buf) free(tmp);
        if (rc != 0) return -1;
        t->tok_len[id] = (uint32_t)m;
    }
    return 0;
}

static int fill_merges(saefw_tokenizer *t, const cJSON *merges, const int cp_byte[324], const char *name, char *err,
                       size_t errlen) {
    size_t n = (size_t)cJSON_GetArraySize(merges);
    t->merges_cap = 16;
    while (t->merges_cap < 2 * n + 16) t->merges_cap *= 2;
    t->merges = saefw_malloc(t->merges_cap * sizeof *t->merges, err, errlen);
    if (!t->merges) return -1;
    for (size_t i = 0; i < t->merges_cap; i++) t->merges[i].key = UINT64_MAX;
    const cJSON *it;
    int32_t rank = 0;
    cJSON_ArrayForEach(it, merges) {
        const char *a, *b;
        size_t la, lb;
        if (cJSON_IsString(it)) {
            a = it->valuestring;
            const char *sp = strchr(a, ' ');
            if (!sp || strchr(sp + 1, ' '))
                return saefw_errf(err, errlen, "%s: merge %d '%s' is not two tokens separated by a space", name, rank,
                                  a);
            la = (size_t)(sp - a);
            b = sp + 1;
            lb = strlen(b);
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            a = cJSON_GetArrayItem(it, 0)->valuestring;
            b = cJSON_GetArrayItem(it, 1)->valuestring;
            la = strlen(a);
            lb = strlen(b);
        } else {
            return saefw_errf(err, errlen, "%s: merge %d is neither \"a b\" nor [\"a\", \"b\"]", name, rank);
        }
        char *buf = malloc(la + lb + 1);
        if (!buf) return saefw_errf(err, errlen, "out of memory");
        size_t ra = byte_level_decode(a, la, cp_byte, buf);
        size_t rb = byte_level_decode(b, lb, cp_byte, buf + ra);
        int32_t ia = vocab_find(t, buf, ra), ib = vocab_find(t, buf + ra, rb), iab = vocab_find(t, buf, ra + rb);
        free(buf);
        if (ia < 0 || ib < 0 || iab < 0)
            return saefw_errf(err, errlen, "%s: merge %d ('%.*s' '%.*s'): %s is not in the vocab", name, rank, (int)la,
                              a, (int)lb, b,
                              ia < 0   ? "the left token"
                              : ib < 0 ? "the right token"
                                       : "the merged token");
        uint64_t key = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
        size_t mask = t->merges_cap - 1;
        for (size_t h = hash_u64(key) & mask;; h = (h + 1) & mask) {
            if (t->merges[h].key == key) break; /* a repeated pair keeps its first rank */
            if (t->merges[h].key == UINT64_MAX) {
                t->merges[h] = (merge_slot){key, rank, iab};
                break;
            }
        }
        rank++;
    }
    return 0;
}

static int load_added(saefw_tokenizer *t, const cJSON *list, const char *name, char *err, size_t errlen) {
    int n = cJSON_GetArraySize(list);
    if (n == 0) return 0;
    t->added = saefw_calloc((size_t)n, sizeof *t->added, err, errlen);
    if (!t->added) return -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, list) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        const char *content = jstr(it, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= MAX_ID || !content || !*content)
            return saefw_errf(err, errlen, "%s: added token %d has no valid id or content", name, t->n_added);
        added_token *a = &t->added[t->n_added];
        a->id = (int32_t)id->valuedouble;
        if (pool_add(t, content, strlen(content), &a->off, err, errlen) != 0) return -1;
        a->len = (uint32_t)strlen(content);
        a->special = (uint8_t)jbool(it, "special", 0);
        a->lstrip = (uint8_t)jbool(it, "lstrip", 0);
        a->rstrip = (uint8_t)jbool(it, "rstrip", 0);
        a->single_word = (uint8_t)jbool(it, "single_word", 0);
        a->normalized = (uint8_t)jbool(it, "normalized", !a->special);
        if (a->id + 1 > t->vocab_size) t->vocab_size = a->id + 1;
        t->n_added++;
    }
    return 0;
}

static const char *KNOWN_BOS[] = {"<|endoftext|>", "<|begin_of_text|>", "<|BOS|>", "<s>", "<bos>", "<|bos|>", NULL};
static const char *KNOWN_EOS[] = {"<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>", NULL};

static int64_t known_token(const saefw_tokenizer *t, const char *const *names) {
    for (int i = 0; names[i]; i++) {
        int32_t id = added_id(t, names[i]);
        if (id >= 0) return id;
    }
    return -1;
}

int saefw_tokenizer_load_json(const char *json, size_t len, const char *config_json, const char *name,
                              saefw_tokenizer **out, char *err, size_t errlen) {
    *out = NULL;
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return saefw_errf(err, errlen, "%s: not valid JSON", name);
    cJSON *cfg = config_json ? cJSON_Parse(config_json) : NULL;
    saefw_tokenizer *t = saefw_calloc(1, sizeof *t, err, errlen);
    int rc = -1;
    int cp_byte[324];
    byte_level_table(cp_byte);
    if (!t) goto done;
    t->bos = t->eos = -1;
    if (!cJSON_IsObject(root)) {
        saefw_errf(err, errlen, "%s: not a tokenizer.json (not a JSON object)", name);
        goto done;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) {
        saefw_errf(err, errlen, "%s: not a tokenizer.json (no model object)", name);
        goto done;
    }
    if (load_model(t, model, name, err, errlen) != 0) goto done;
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    size_t steps_cap = 0;
    int has_bl = 0;
    if (pre && !cJSON_IsNull(pre) && load_pretok(t, pre, &steps_cap, &has_bl, name, err, errlen) != 0) goto done;
    if (!has_bl) {
        saefw_errf(err, errlen, "%s: the pre-tokenizer has no ByteLevel step: not a byte-level BPE tokenizer", name);
        goto done;
    }
    if (load_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), name, err, errlen) != 0) goto done;
    if (load_decoder(cJSON_GetObjectItemCaseSensitive(root, "decoder"), name, err, errlen) != 0) goto done;
    if (load_added(t, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), name, err, errlen) != 0) goto done;
    if (t->vocab_size <= 0) {
        saefw_errf(err, errlen, "%s: the vocab is empty", name);
        goto done;
    }
    t->tok_off = saefw_calloc((size_t)t->vocab_size, sizeof *t->tok_off, err, errlen);
    t->tok_len = saefw_malloc((size_t)t->vocab_size * sizeof *t->tok_len, err, errlen);
    if (!t->tok_off || !t->tok_len) goto done;
    memset(t->tok_len, 0xff, (size_t)t->vocab_size * sizeof *t->tok_len);
    if (fill_vocab(t, cJSON_GetObjectItemCaseSensitive(model, "vocab"), cp_byte, err, errlen) != 0) goto done;
    t->map_cap = 16;
    while (t->map_cap < 2 * (size_t)t->vocab_size) t->map_cap *= 2;
    t->map = saefw_malloc(t->map_cap * sizeof *t->map, err, errlen);
    if (!t->map) goto done;
    memset(t->map, 0xff, t->map_cap * sizeof *t->map);
    for (int64_t id = 0; id < t->vocab_size; id++)
        if (t->tok_len[id] != UINT32_MAX) vocab_insert(t, (int32_t)id);
    /* A vocab may lack bytes that valid UTF-8 never holds (GPT-NeoX has no 0xC0, 0xC1, 0xF5-0xFF);
     * encoding text that needs a missing byte is an error then, never a dropped token. */
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_id[b] = vocab_find(t, &c, 1);
    }
    if (fill_merges(t, cJSON_GetObjectItemCaseSensitive(model, "merges"), cp_byte, name, err, errlen) != 0) goto done;
    /* Added tokens' ids take their content as their bytes (HF decodes them unchanged). */
    for (int i = 0; i < t->n_added; i++) {
        added_token *a = &t->added[i];
        t->tok_off[a->id] = a->off;
        t->tok_len[a->id] = a->len;
        trie *tr = (a->normalized && t->nfc) ? &t->trie_norm : &t->trie_raw;
        if (trie_add(tr, t->pool + a->off, a->len, i, err, errlen) != 0) goto done;
    }
    if (load_post(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), name, err, errlen) != 0) goto done;
    for (int i = 0; i < t->n_pre + t->n_post; i++) {
        int32_t id = i < t->n_pre ? t->pre_ids[i] : t->post_ids[i - t->n_pre];
        if (id < 0 || id >= t->vocab_size || t->tok_len[id] == UINT32_MAX) {
            saefw_errf(err, errlen, "%s: the post-processor's special token id %d is not in the vocab", name, id);
            goto done;
        }
    }
    t->bos = t->n_pre > 0 ? t->pre_ids[0] : config_token(t, cfg, "bos_token");
    if (t->bos < 0) t->bos = known_token(t, KNOWN_BOS);
    t->eos = t->n_post > 0 ? t->post_ids[t->n_post - 1] : config_token(t, cfg, "eos_token");
    if (t->eos < 0) t->eos = known_token(t, KNOWN_EOS);
    rc = 0;
done:
    cJSON_Delete(root);
    cJSON_Delete(cfg);
    if (rc == 0) *out = t;
    else saefw_tokenizer_free(t);
    return rc;
}

int saefw_tokenizer_load(const char *path, saefw_tokenizer **out, char *err, size_t errlen) {
    *out = NULL;
    char file[PATH_MAX], cfgpath[PATH_MAX];
    struct stat st;
    if (stat(path, &st) != 0) return saefw_errf(err, errlen, "%s: no such file or folder", path);
    if (S_ISDIR(st.st_mode)) {
        snprintf(file, sizeof file, "%s/tokenizer.json", path);
        if (stat(file, &st) != 0) return saefw_errf(err, errlen, "%s: the folder has no tokenizer.json", path);
    } else {
        snprintf(file, sizeof file, "%s", path);
    }
    const char *slash = strrchr(file, '/');
    snprintf(cfgpath, sizeof cfgpath, "%.*stokenizer_config.json", slash ? (int)(slash - file + 1) : 0, file);
    char *json = NULL, *cfg = NULL;
    size_t len = 0;
    if (saefw_read_file(file, &json, &len, err, errlen) != 0) return -1;
    char ignored[64];
    if (saefw_read_file(cfgpath, &cfg, NULL, ignored, sizeof ignored) != 0) cfg = NULL;
    int rc = saefw_tokenizer_load_json(json, len, cfg, file, out, err, errlen);
    free(json);
    free(cfg);
    return rc;
}

/* Models whose tokenizer lives in another Hub repo than their weights. */
static const struct {
    const char *name, *repo;
} KNOWN_TOKENIZERS[] = {
    {"gelu-1l", "NeelNanda/gpt-neox-tokenizer-digits"},
    {"gelu-2l", "NeelNanda/gpt-neox-tokenizer-digits"},
    {"gelu-3l", "NeelNanda/gpt-neox-tokenizer-digits"},
    {"gelu-4l", "NeelNanda/gpt-neox-tokenizer-digits"},
};

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

int saefw_tokenizer_resolve(const char *name, char *path, size_t n, char *err, size_t errlen) {
    struct stat st;
    if (stat(name, &st) == 0)
        return snprintf(path, n, "%s", name) < (int)n ? 0 : saefw_errf(err, errlen, "%s: path too long", name);
    if (!strcmp(name, "tiny-1l")) {
        char dir[PATH_MAX];
        if (saefw_exe_relative(SAEFW_DATA_SUBDIR "/models/tiny-1l", dir, sizeof dir) != 0)
            return saefw_errf(err, errlen,
                              "tokenizer tiny-1l: cannot find the bundled model's folder (reinstall saefw)");
        snprintf(path, n, "%s/tokenizer.json", dir);
        if (!file_exists(path))
            return saefw_errf(err, errlen, "tokenizer tiny-1l: %s is missing (reinstall saefw)", path);
        return 0;
    }
    const char *repo = NULL;
    for (size_t i = 0; i < sizeof KNOWN_TOKENIZERS / sizeof *KNOWN_TOKENIZERS; i++)
        if (!strcmp(name, KNOWN_TOKENIZERS[i].name)) repo = KNOWN_TOKENIZERS[i].repo;
    const char *slash = strchr(name, '/');
    if (!repo && slash && slash != name && slash[1] && !strchr(slash + 1, '/') && name[0] != '.') repo = name;
    if (!repo)
        return saefw_errf(
            err, errlen,
            "tokenizer %s: no such file or folder, and not a known name (tiny-1l, gelu-1l .. gelu-4l) or a "
            "Hugging Face repo id ORG/NAME",
            name);
    char folder[PATH_MAX];
    if (saefw_hf_repo_dir("model", repo, folder, sizeof folder) != 0)
        return saefw_errf(err, errlen, "tokenizer %s: cannot find the Hugging Face cache folder (set HF_HUB_CACHE)",
                          name);
    /* refs/main's snapshot first, else any snapshot that has the file. */
    char p[PATH_MAX], snap[PATH_MAX];
    if (saefw_hf_main_snapshot(folder, snap, sizeof snap) == 0) {
        if (saefw_pathf(path, n, NULL, 0, "%s/tokenizer.json", snap) == 0 && file_exists(path)) return 0;
    }
    /* A path that does not fit names no snapshot of ours. */
    DIR *d = saefw_pathf(p, sizeof p, NULL, 0, "%s/snapshots", folder) == 0 ? opendir(p) : NULL;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (saefw_pathf(path, n, NULL, 0, "%s/%s/tokenizer.json", p, e->d_name) == 0 && file_exists(path)) {
            closedir(d);
            return 0;
        }
    }
    if (d) closedir(d);
    path[0] = 0;
    return saefw_errf(
        err, errlen,
        "tokenizer %s: tokenizer.json of the Hugging Face repo %s is not in %s/snapshots/<revision>/ "
        "(run: saefw download %s tokenizer.json tokenizer_config.json), or pass a tokenizer.json file or folder",
        name, repo, folder, repo);
}

void saefw_tokenizer_free(saefw_tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_steps; i++)
        if (t->steps[i].re) pcre2_code_free(t->steps[i].re);
    free(t->steps);
    free(t->pool);
    free(t->tok_off);
    free(t->tok_len);
    free(t->map);
    free(t->merges);
    free(t->added);
    free(t->trie_raw.nodes);
    free(t->trie_norm.nodes);
    free(t);
}

int64_t saefw_tokenizer_vocab_size(const saefw_tokenizer *t) { return t->vocab_size; }
int64_t saefw_tokenizer_bos(const saefw_tokenizer *t) { return t->bos; }
int64_t saefw_tokenizer_eos(const saefw_tokenizer *t) { return t->eos; }
int saefw_tokenizer_add_bos(const saefw_tokenizer *t) { return t->n_pre > 0; }

const char *saefw_tokenizer_token_bytes(const saefw_tokenizer *t, int64_t id, size_t *len) {
    if (id < 0 || id >= t->vocab_size || t->tok_len[id] == UINT32_MAX) return NULL;
    *len = t->tok_len[id];
    return t->pool + t->tok_off[id];
}

/* ---- scratch ---- */

/* A scratch; with_cache 0 leaves out the word cache (a one-call scratch, where filling it costs more
 * than it saves). */
static saefw_tokenizer_scratch *scratch_new(int with_cache) {
    saefw_tokenizer_scratch *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->md = pcre2_match_data_create(4, NULL);
    s->mctx = pcre2_match_context_create(NULL);
    s->jit_stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
    if (with_cache) s->slots = calloc(2 * (size_t)CACHE_MAX_WORDS, sizeof *s->slots);
    if (!s->md || !s->mctx || !s->jit_stack || (with_cache && !s->slots)) {
        saefw_tokenizer_scratch_free(s);
        return NULL;
    }
    pcre2_jit_stack_assign(s->mctx, NULL, s->jit_stack);
    return s;
}

saefw_tokenizer_scratch *saefw_tokenizer_scratch_new(const saefw_tokenizer *t) {
    (void)t;
    return scratch_new(1);
}

void saefw_tokenizer_scratch_free(saefw_tokenizer_scratch *s) {
    if (!s) return;
    if (s->md) pcre2_match_data_free(s->md);
    if (s->mctx) pcre2_match_context_free(s->mctx);
    if (s->jit_stack) pcre2_jit_stack_free(s->jit_stack);
    free(s->clean);
    free(s->extra);
    free(s->a);
    free(s->b);
    free(s->sym);
    free(s->prev);
    free(s->next);
    free(s->heap);
    free(s->slots);
    free(s->keys);
    free(s->vals);
    free(s);
}

static void cache_clear(saefw_tokenizer_scratch *s) {
    memset(s->slots, 0, 2 * (size_t)CACHE_MAX_WORDS * sizeof *s->slots);
    s->n_words = 0;
    s->keys_len = s->vals_len = 0;
}

/* ---- output ---- */

static int push_id(int32_t id, int32_t **ids, size_t *n, size_t *cap, char *err, size_t errlen) {
    if (*n == *cap && grow((void **)ids, cap, *n + 1, sizeof **ids, err, errlen) != 0) return -1;
    (*ids)[(*n)++] = id;
    return 0;
}

/* ---- BPE of one pre-token ---- */

static int heap_less(const heap_entry *a, const heap_entry *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(heap_entry *h, size_t *n, heap_entry e) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&e, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static heap_entry heap_pop(heap_entry *h, size_t *n) {
    heap_entry top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_less(&h[c + 1], &h[c])) c++;
        if (!heap_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0) h[i] = last;
    return top;
}

static void try_pair(const saefw_tokenizer *t, saefw_tokenizer_scratch *s, size_t *hn, int32_t pos) {
    int32_t r = s->next[pos];
    if (r < 0) return;
    const merge_slot *m = merge_find(t, s->sym[pos], s->sym[r]);
    if (m) heap_push(s->heap, hn, (heap_entry){m->rank, pos, s->sym[pos], s->sym[r]});
}

/* Merge the bytes of w by rank (the lowest rank first; among equal ranks the leftmost) and append the
 * resulting ids. */
static int bpe_word(const saefw_tokenizer *t, saefw_tokenizer_scratch *s, const char *w, size_t n, int32_t **ids,
                    size_t *nid, size_t *cap, char *err, size_t errlen) {
    for (size_t i = 0; i < n; i++)
        if (t->byte_id[(uint8_t)w[i]] < 0)
            return saefw_errf(err, errlen, "encode: the vocab has no token for the byte 0x%02x of the text",
                              (uint8_t)w[i]);
    if (n == 1) return push_id(t->byte_id[(uint8_t)w[0]], ids, nid, cap, err, errlen);
    if (t->ignore_merges) {
        int32_t id = vocab_find(t, w, n);
        if (id >= 0) return push_id(id, ids, nid, cap, err, errlen);
    }
    size_t sc = s->sym_cap;
    if (grow((void **)&s->sym, &sc, n, sizeof *s->sym, err, errlen) != 0) return -1;
    sc = s->sym_cap;
    if (grow((void **)&s->prev, &sc, n, sizeof *s->prev, err, errlen) != 0) return -1;
    sc = s->sym_cap;
    if (grow((void **)&s->next, &sc, n, sizeof *s->next, err, errlen) != 0) return -1;
    s->sym_cap = sc;
    if (grow((void **)&s->heap, &s->heap_cap, 2 * n + 2, sizeof *s->heap, err, errlen) != 0) return -1;
    for (size_t i = 0; i < n; i++) {
        s->sym[i] = t->byte_id[(uint8_t)w[i]];
        s->prev[i] = (int32_t)i - 1;
        s->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    size_t hn = 0;
    for (size_t i = 0; i + 1 < n; i++) try_pair(t, s, &hn, (int32_t)i);
    while (hn > 0) {
        heap_entry e = heap_pop(s->heap, &hn);
        int32_t r = s->next[e.pos];
        if (s->sym[e.pos] != e.lid || r < 0 || s->sym[r] != e.rid) continue; /* stale */
        s->sym[e.pos] = merge_find(t, e.lid, e.rid)->id;
        s->sym[r] = -1;
        s->next[e.pos] = s->next[r];
        if (s->next[r] >= 0) s->prev[s->next[r]] = e.pos;
        /* Each merge removes one symbol and adds at most two pairs: the heap stays within 2n. */
        if (hn + 2 > s->heap_cap && grow((void **)&s->heap, &s->heap_cap, hn + 2, sizeof *s->heap, err, errlen) != 0)
            return -1;
        if (s->prev[e.pos] >= 0) try_pair(t, s, &hn, s->prev[e.pos]);
        try_pair(t, s, &hn, e.pos);
    }
    for (int32_t i = 0; i >= 0; i = s->next[i])
        if (push_id(s->sym[i], ids, nid, cap, err, errlen) != 0) return -1;
    return 0;
}

/* BPE through the scratch's word cache. */
static int encode_word(const saefw_tokenizer *t, saefw_tokenizer_scratch *s, const char *w, size_t n, int32_t **ids,
                       size_t *nid, size_t *cap, char *err, size_t errlen) {
    if (n == 0) return 0;
    if (!s->slots || n > CACHE_MAX_WORD || n == 1) return bpe_word(t, s, w, n, ids, nid, cap, err, errlen);
    uint64_t h = hash_bytes(w, n) | 1;
    size_t mask = 2 * (size_t)CACHE_MAX_WORDS - 1;
    size_t i = h & mask;
    for (;; i = (i + 1) & mask) {
        cache_slot *c = &s->slots[i];
        if (c->hash == 0) break;
        if (c->hash == h && c->key_len == n && memcmp(s->keys + c->key_off, w, n) == 0) {
            if (*nid + c->val_len > *cap && grow((void **)ids, cap, *nid + c->val_len, sizeof **ids, err, errlen) != 0)
                return -1;
            memcpy(*ids + *nid, s->vals + c->val_off, c->val_len * sizeof **ids);
            *nid += c->val_len;
            return 0;
        }
    }
    size_t before = *nid;
    if (bpe_word(t, s, w, n, ids, nid, cap, err, errlen) != 0) return -1;
    size_t m = *nid - before;
    if (s->n_words >= CACHE_MAX_WORDS) {
        cache_clear(s);
        for (i = h & mask; s->slots[i].hash != 0; i = (i + 1) & mask) {}
    }
    if (grow((void **)&s->keys, &s->keys_cap, s->keys_len + n, 1, err, errlen) != 0) return -1;
    if (grow((void **)&s->vals, &s->vals_cap, s->vals_len + m, sizeof *s->vals, err, errlen) != 0) return -1;
    memcpy(s->keys + s->keys_len, w, n);
    memcpy(s->vals + s->vals_len, *ids + before, m * sizeof *s->vals);
    s->slots[i] = (cache_slot){h, (uint32_t)s->keys_len, (uint32_t)n, (uint32_t)s->vals_len, (uint32_t)m};
    s->keys_len += n;
    s->vals_len += m;
    s->n_words++;
    return 0;
}

/* ---- pre-tokenization ---- */

typedef struct {
    const char *p;
    uint32_t len;
    int match;
} seg;

static size_t utf8_len_at(const char *p) {
    uint8_t c = (uint8_t)*p;
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

static int out_span(span **b, size_t *bn, size_t *bcap, const char *p, size_t len, char *err, size_t errlen) {
    if (len == 0) return 0;
    if (*bn == *bcap && grow((void **)b, bcap, *bn + 1, sizeof **b, err, errlen) != 0) return -1;
    (*b)[(*bn)++] = (span){p, (uint32_t)len};
    return 0;
}

/* Apply HF's split behaviour to the segments of one piece (matches and the gaps between them). */
static int emit_segments(const seg *sg, size_t ns, int behavior, span **b, size_t *bn, size_t *bcap, char *err,
                         size_t errlen) {
    if (behavior == SPLIT_ISOLATED || behavior == SPLIT_REMOVED) {
        for (size_t i = 0; i < ns; i++)
            if (!(behavior == SPLIT_REMOVED && sg[i].match) &&
                out_span(b, bn, bcap, sg[i].p, sg[i].len, err, errlen) != 0)
                return -1;
        return 0;
    }
    if (behavior == SPLIT_MERGED_NEXT) {
        /* A match joins the piece after it; walk backwards as HF does. */
        size_t start_n = *bn;
        int prev_match = 0;
        for (size_t k = ns; k-- > 0;) {
            if (sg[k].match && !prev_match && *bn > start_n) {
                span *last = &(*b)[*bn - 1];
                last->len += (uint32_t)(last->p - sg[k].p);
                last->p = sg[k].p;
            } else if (out_span(b, bn, bcap, sg[k].p, sg[k].len, err, errlen) != 0) {
                return -1;
            }
            prev_match = sg[k].match;
        }
        for (size_t i = start_n, j = *bn > start_n ? *bn - 1 : start_n; i < j; i++, j--) {
            span tmp = (*b)[i];
            (*b)[i] = (*b)[j];
            (*b)[j] = tmp;
        }
        return 0;
    }
    size_t start_n = *bn;
    int prev_match = behavior == SPLIT_CONTIGUOUS ? -1 : 0;
    for (size_t k = 0; k < ns; k++) {
        int join = behavior == SPLIT_MERGED_PREV ? (sg[k].match && !prev_match) : (sg[k].match == prev_match);
        if (join && *bn > start_n) {
            span *last = &(*b)[*bn - 1];
            last->len = (uint32_t)(sg[k].p + sg[k].len - last->p);
        } else if (out_span(b, bn, bcap, sg[k].p, sg[k].len, err, errlen) != 0) {
            return -1;
        }
        prev_match = sg[k].match;
    }
    return 0;
}

static int split_piece(const pretok_step *st, saefw_tokenizer_scratch *s, span pc, span **b, size_t *bn, size_t *bcap,
                       seg **sg, size_t *sgcap, int behavior, int invert, char *err, size_t errlen) {
    size_t ns = 0, prev = 0, start = 0;
    while (start < pc.len) {
        size_t ms, me;
        if (st->kind == STEP_DIGITS) {
            size_t i = start;
            while (i < pc.len && !(pc.p[i] >= '0' && pc.p[i] <= '9')) i++;
            if (i >= pc.len) break;
            ms = i;
            me = i + 1;
            if (!st->individual_digits)
                while (me < pc.len && pc.p[me] >= '0' && pc.p[me] <= '9') me++;
        } else {
            int rc = pcre2_match(st->re, (PCRE2_SPTR)pc.p, pc.len, start, PCRE2_NO_UTF_CHECK, s->md, s->mctx);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) {
                PCRE2_UCHAR msg[160];
                pcre2_get_error_message(rc, msg, sizeof msg);
                return saefw_errf(err, errlen, "pre-tokenizer regex: %s", (char *)msg);
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
            ms = ov[0];
            me = ov[1];
            if (me == ms) { /* an empty match splits nothing */
                start = ms + utf8_len_at(pc.p + ms);
                continue;
            }
        }
        if (grow((void **)sg, sgcap, ns + 2, sizeof **sg, err, errlen) != 0) return -1;
        if (ms > prev) (*sg)[ns++] = (seg){pc.p + prev, (uint32_t)(ms - prev), invert};
        (*sg)[ns++] = (seg){pc.p + ms, (uint32_t)(me - ms), !invert};
        prev = start = me;
    }
    if (prev < pc.len) {
        if (grow((void **)sg, sgcap, ns + 1, sizeof **sg, err, errlen) != 0) return -1;
        (*sg)[ns++] = (seg){pc.p + prev, (uint32_t)(pc.len - prev), invert};
    }
    return emit_segments(*sg, ns, behavior, b, bn, bcap, err, errlen);
}

/* Pre-tokenize and BPE one section of normalized text (no added tokens in it). */
static int encode_section(const saefw_tokenizer *t, saefw_tokenizer_scratch *s, const char *p, size_t len,
                          int32_t **ids, size_t *n, size_t *cap, char *err, size_t errlen) {
    if (len == 0) return 0;
    size_t an = 0, bn = 0;
    seg *sg = NULL;
    size_t sgcap = 0;
    int rc = -1;
    if (grow((void **)&s->a, &s->a_cap, 1, sizeof *s->a, err, errlen) != 0) return -1;
    s->a[an++] = (span){p, (uint32_t)len};
    s->extra_len = 0;
    for (int k = 0; k < t->n_steps; k++) {
        const pretok_step *st = &t->steps[k];
        bn = 0;
        if (st->kind == STEP_BYTELEVEL && st->add_prefix_space) {
            /* Room for every piece plus a space, so earlier spans into extra never move. */
            size_t need = s->extra_len;
            for (size_t i = 0; i < an; i++) need += s->a[i].len + 1;
            if (need > s->extra_cap) {
                if (s->extra_len > 0) {
                    saefw_errf(err, errlen, "ByteLevel add_prefix_space twice in one pre-tokenizer is not supported");
                    goto done;
                }
                if (grow((void **)&s->extra, &s->extra_cap, need, 1, err, errlen) != 0) goto done;
            }
            for (size_t i = 0; i < an; i++) {
                if (s->a[i].p[0] == ' ') continue;
                char *d = s->extra + s->extra_len;
                d[0] = ' ';
                memcpy(d + 1, s->a[i].p, s->a[i].len);
                s->a[i] = (span){d, s->a[i].len + 1};
                s->extra_len += s->a[i].len;
            }
        }
        if (st->kind == STEP_BYTELEVEL && !st->re) continue;
        for (size_t i = 0; i < an; i++) {
            int behavior = st->kind == STEP_SPLIT ? st->behavior : SPLIT_ISOLATED;
            if (split_piece(st, s, s->a[i], &s->b, &bn, &s->b_cap, &sg, &sgcap, behavior,
                            st->kind == STEP_SPLIT && st->invert, err, errlen) != 0)
                goto done;
        }
        span *tmp = s->a;
        s->a = s->b;
        s->b = tmp;
        size_t tc = s->a_cap;
        s->a_cap = s->b_cap;
        s->b_cap = tc;
        an = bn;
    }
    for (size_t i = 0; i < an; i++)
        if (encode_word(t, s, s->a[i].p, s->a[i].len, ids, n, cap, err, errlen) != 0) goto done;
    rc = 0;
done:
    free(sg);
    return rc;
}

/* JavaScript's String.prototype.trim whitespace (the reference implementation trims with it). */
static size_t ws_len_at(const char *p, size_t n) {
    uint8_t c = (uint8_t)p[0];
    if (c == ' ' || (c >= 9 && c <= 13)) return 1;
    if (c < 0x80) return 0;
    utf8proc_int32_t cp;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)p, (utf8proc_ssize_t)n, &cp);
    if (k <= 0) return 0;
    if (cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
        cp == 0x205F || cp == 0x3000 || cp == 0xFEFF)
        return (size_t)k;
    return 0;
}

static size_t trim_start(const char *p, size_t n) {
    size_t i = 0, k;
    while (i < n && (k = ws_len_at(p + i, n - i)) > 0) i += k;
    return i;
}

static size_t trim_end(const char *p, size_t n) {
    size_t end = n;
    while (end > 0) {
        size_t i = end - 1;
        while (i > 0 && ((uint8_t)p[i] & 0xC0) == 0x80) i--;
        if (ws_len_at(p + i, end - i) != end - i) break;
        end = i;
    }
    return end;
}

/* Split [p, p+len) by the added tokens of one trie; plain text goes to `plain` (normalized == 0) or to
 * the normalizer (normalized == 1). lstrip/rstrip take the whitespace beside the token out. */
static int encode_added(const saefw_tokenizer *t, saefw_tokenizer_scratch *s, const trie *tr, const char *p, size_t len,
                        int flags, int stage, int32_t **ids, size_t *n, size_t *cap, char *err, size_t errlen);

static int encode_plain(const saefw_tokenizer *t, saefw_tokenizer_scratch *s, const char *p, size_t len, int flags,
                        int stage, int32_t **ids, size_t *n, size_t *cap, char *err, size_t errlen) {
    if (len == 0) return 0;
    if (stage == 1 || !t->nfc) return encode_section(t, s, p, len, ids, n, cap, err, errlen);
    int needs = 0;
    for (size_t i = 0; i < len; i++)
        if ((uint8_t)p[i] >= 0xCC) {
            needs = 1;
            break;
        }
    if (!needs) return encode_added(t, s, &t->trie_norm, p, len, flags, 1, ids, n, cap, err, errlen);
    utf8proc_uint8_t *nfc = NULL;
    utf8proc_ssize_t m =
        utf8proc_map((const utf8proc_uint8_t *)p, (utf8proc_ssize_t)len, &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (m < 0) return saefw_errf(err, errlen, "NFC: %s", utf8proc_errmsg(m));
    int rc = encode_added(t, s, &t->trie_norm, (const char *)nfc, (size_t)m, flags, 1, ids, n, cap, err, errlen);
    free(nfc);
    return rc;
}

static int encode_added(const saefw_tokenizer *t, saefw_tokenizer_scratch *s, const trie *tr, const char *p, size_t len,
                        int flags, int stage, int32_t **ids, size_t *n, size_t *cap, char *err, size_t errlen) {
    int special = (flags & SAEFW_TOK_SPECIAL) != 0;
    size_t start = 0, i = 0;
    while (i < len) {
        size_t mlen = 0;
        int k = trie_match(t, tr, p, len, i, special, &mlen);
        if (k < 0) {
            i++;
            continue;
        }
        const added_token *a = &t->added[k];
        size_t end = i;
        if (a->lstrip) end = start + trim_end(p + start, i - start);
        if (encode_plain(t, s, p + start, end - start, flags, stage, ids, n, cap, err, errlen) != 0) return -1;
        if (push_id(a->id, ids, n, cap, err, errlen) != 0) return -1;
        i += mlen;
        if (a->rstrip) i += trim_start(p + i, len - i);
        start = i;
    }
    return encode_plain(t, s, p + start, len - start, flags, stage, ids, n, cap, err, errlen);
}

int saefw_tokenizer_encode(const saefw_tokenizer *t, saefw_tokenizer_scratch *s, const char *text, size_t len,
                           int flags, int32_t **ids, size_t *n, size_t *cap, char *err, size_t errlen) {
    if (len > (size_t)1 << 30) return saefw_errf(err, errlen, "encode: a text of %zu bytes is longer than 1 GiB", len);
    saefw_tokenizer_scratch *own = NULL;
    if (!s) {
        own = s = scratch_new(0);
        if (!s) return saefw_errf(err, errlen, "out of memory");
    }
    int rc = -1;
    if (!utf8_valid(text, len)) {
        if (grow((void **)&s->clean, &s->clean_cap, 3 * len + 1, 1, err, errlen) != 0) goto done;
        len = utf8_sanitize(text, len, s->clean);
        text = s->clean;
    }
    if (flags & SAEFW_TOK_POSTPROCESS)
        for (int i = 0; i < t->n_pre; i++)
            if (push_id(t->pre_ids[i], ids, n, cap, err, errlen) != 0) goto done;
    if (encode_added(t, s, &t->trie_raw, text, len, flags, 0, ids, n, cap, err, errlen) != 0) goto done;
    if (flags & SAEFW_TOK_POSTPROCESS)
        for (int i = 0; i < t->n_post; i++)
            if (push_id(t->post_ids[i], ids, n, cap, err, errlen) != 0) goto done;
    rc = 0;
done:
    saefw_tokenizer_scratch_free(own);
    return rc;
}

int saefw_tokenizer_decode(const saefw_tokenizer *t, const int32_t *ids, size_t n, char **out, size_t *len, char *err,
                           size_t errlen) {
    *out = NULL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->vocab_size || t->tok_len[ids[i]] == UINT32_MAX)
            return saefw_errf(err, errlen, "decode: token %zu: id %d is not in the vocabulary (size %lld)", i, ids[i],
                              (long long)t->vocab_size);
        total += t->tok_len[ids[i]];
    }
    char *raw = saefw_malloc(total + 1, err, errlen);
    if (!raw) return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(raw + o, t->pool + t->tok_off[ids[i]], t->tok_len[ids[i]]);
        o += t->tok_len[ids[i]];
    }
    if (utf8_valid(raw, total)) {
        raw[total] = 0;
        *out = raw;
        *len = total;
        return 0;
    }
    char *clean = saefw_malloc(3 * total + 1, err, errlen);
    if (!clean) {
        free(raw);
        return -1;
    }
    *len = utf8_sanitize(raw, total, clean);
    clean[*len] = 0;
    free(raw);
    *out = clean;
    return 0;
}
