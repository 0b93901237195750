/* The byte-level BPE tokenizer against ids made by Hugging Face's JavaScript tokenizers
 * (tests/reference/make_tokenizer_fixtures.mjs): GPT-2, Llama 3, a GPT-NeoX-digits-like variant and
 * tiny-1l on English, code, multilingual text, digits, whitespace, special tokens, long words and
 * invalid UTF-8; decode round trips; two threads at once; errors for bad files. */
#include <cjson/cJSON.h>
#include <pthread.h>

#include "testutil.h"
#include "tokenizer.h"
#include "util.h"

#define FIX "fixtures/tokenizer/"

static char *read_all(const char *path, size_t *len) {
    char err[256], *s = NULL;
    REQUIRE(saefw_read_file(path, &s, len, err, sizeof err) == 0, "%s", err);
    return s;
}

/* The variant's tokenizer: the committed file, with the generator's patch applied when it has one. */
static saefw_tokenizer *load_variant(const cJSON *v) {
    char path[512], err[512];
    snprintf(path, sizeof path, "../%s", cJSON_GetObjectItem(v, "file")->valuestring);
    const cJSON *patch = cJSON_GetObjectItem(v, "patch"), *added = cJSON_GetObjectItem(v, "added");
    saefw_tokenizer *t = NULL;
    int pairs = cJSON_IsTrue(cJSON_GetObjectItem(v, "pair_merges"));
    if (cJSON_GetArraySize(patch) == 0 && cJSON_GetArraySize(added) == 0 && !pairs) {
        REQUIRE(saefw_tokenizer_load(path, &t, err, sizeof err) == 0, "%s", err);
        return t;
    }
    size_t len;
    char *text = read_all(path, &len);
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    REQUIRE(root, "%s: not JSON", path);
    const cJSON *it;
    cJSON_ArrayForEach(it, patch) cJSON_ReplaceItemInObject(root, it->string, cJSON_Duplicate(it, 1));
    cJSON *list = cJSON_GetObjectItem(root, "added_tokens");
    cJSON_ArrayForEach(it, added) cJSON_AddItemToArray(list, cJSON_Duplicate(it, 1));
    if (pairs) { /* "a b" -> ["a", "b"] */
        cJSON *merges = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "model"), "merges"), *m;
        cJSON_ArrayForEach(m, merges) {
            char *sp = strchr(m->valuestring, ' ');
            REQUIRE(sp, "merge without a space");
            *sp = 0;
            const char *ab[2] = {m->valuestring, sp + 1};
            cJSON *pair = cJSON_CreateStringArray(ab, 2);
            REQUIRE(pair, "oom");
            cJSON_ReplaceItemViaPointer(merges, m, pair);
            m = pair;
        }
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    REQUIRE(json, "print");
    REQUIRE(saefw_tokenizer_load_json(json, strlen(json), NULL, path, &t, err, sizeof err) == 0, "%s", err);
    free(json);
    return t;
}

static int first_diff(const int32_t *a, size_t na, const cJSON *b) {
    size_t nb = (size_t)cJSON_GetArraySize(b), i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, b) {
        if (i >= na || a[i] != (int32_t)it->valuedouble) return (int)i;
        i++;
    }
    return na == nb ? -1 : (int)i;
}

typedef struct {
    const saefw_tokenizer *t;
    const char *text;
    size_t len;
    int32_t *ids;
    size_t n;
    int rc;
} job;

static void *encode_many(void *arg) {
    job *j = arg;
    saefw_tokenizer_scratch *s = saefw_tokenizer_scratch_new(j->t);
    char err[256];
    size_t cap = 0;
    j->rc = s ? 0 : -1;
    for (int rep = 0; rep < 20 && j->rc == 0; rep++) {
        j->n = 0;
        j->rc =
            saefw_tokenizer_encode(j->t, s, j->text, j->len, SAEFW_TOK_SPECIAL, &j->ids, &j->n, &cap, err, sizeof err);
    }
    saefw_tokenizer_scratch_free(s);
    return NULL;
}

static void check_fixtures(void) {
    size_t len;
    char *text = read_all(FIX "expected.json", &len);
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    REQUIRE(root, "expected.json: not JSON");
    int cases = 0, tokens = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, cJSON_GetObjectItem(root, "variants")) {
        const char *vname = cJSON_GetObjectItem(v, "name")->valuestring;
        saefw_tokenizer *t = load_variant(v);
        saefw_tokenizer_scratch *s = saefw_tokenizer_scratch_new(t);
        REQUIRE(s, "scratch");
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(v, "cases")) {
            const char *tname = cJSON_GetObjectItem(c, "text")->valuestring;
            int special = cJSON_IsTrue(cJSON_GetObjectItem(c, "special"));
            int post = cJSON_IsTrue(cJSON_GetObjectItem(c, "post"));
            const cJSON *want = cJSON_GetObjectItem(c, "ids");
            char path[512], err[512];
            snprintf(path, sizeof path, FIX "text/%s", tname);
            size_t tlen;
            char *txt = read_all(path, &tlen);
            int32_t *ids = NULL;
            size_t n = 0, cap = 0;
            int flags = (special ? SAEFW_TOK_SPECIAL : 0) | (post ? SAEFW_TOK_POSTPROCESS : 0);
            /* Twice: the second pass goes through the word cache. */
            for (int pass = 0; pass < 2; pass++) {
                n = 0;
                int rc = saefw_tokenizer_encode(t, pass ? s : NULL, txt, tlen, flags, &ids, &n, &cap, err, sizeof err);
                CHECK(rc == 0, "%s %s: %s", vname, tname, err);
                int d = first_diff(ids, n, want);
                CHECK(d < 0, "%s %s special=%d pass %d: %zu ids, expected %d; first difference at %d: %d vs %d", vname,
                      tname, special, pass, n, cJSON_GetArraySize(want), d, d >= 0 && (size_t)d < n ? ids[d] : -1,
                      d >= 0 && d < cJSON_GetArraySize(want) ? (int)cJSON_GetArrayItem(want, d)->valuedouble : -1);
            }
            tokens += (int)n;
            char *dec = NULL;
            size_t dlen = 0;
            if (n > 0) {
                CHECK(saefw_tokenizer_decode(t, ids, n, &dec, &dlen, err, sizeof err) == 0, "%s", err);
                const char *wd = cJSON_GetObjectItem(c, "decoded")->valuestring;
                CHECK(dec && dlen == strlen(wd) && memcmp(dec, wd, dlen) == 0, "%s %s special=%d: decode differs",
                      vname, tname, special);
                /* Valid UTF-8 text comes back unchanged (special tokens included) where no normalizer,
                 * post-processor or lstrip/rstrip changes it. */
                if (special && (!strcmp(vname, "gpt2") || !strcmp(vname, "llama3")) &&
                    strcmp(tname, "invalid.bin") != 0)
                    CHECK(dec && dlen == tlen && memcmp(dec, txt, tlen) == 0, "%s %s: round trip differs", vname,
                          tname);
            }
            free(dec);
            free(ids);
            free(txt);
            cases++;
        }
        if (!strcmp(vname, "gpt2")) {
            size_t bl = 0;
            const char *b = saefw_tokenizer_token_bytes(t, 220, &bl);
            CHECK(b && bl == 1 && b[0] == ' ', "gpt2 token 220 is ' '");
            b = saefw_tokenizer_token_bytes(t, 50256, &bl);
            CHECK(b && bl == 13 && !memcmp(b, "<|endoftext|>", 13), "gpt2 token 50256");
            CHECK(saefw_tokenizer_token_bytes(t, 50257, &bl) == NULL, "no token 50257");
            CHECK(saefw_tokenizer_vocab_size(t) == 50257, "gpt2 vocab %lld", (long long)saefw_tokenizer_vocab_size(t));
            CHECK(saefw_tokenizer_bos(t) == 50256 && saefw_tokenizer_eos(t) == 50256 && !saefw_tokenizer_add_bos(t),
                  "gpt2 bos %lld", (long long)saefw_tokenizer_bos(t));
            int32_t bad = 50257;
            char *out = NULL, err[256];
            size_t ol;
            CHECK(saefw_tokenizer_decode(t, &bad, 1, &out, &ol, err, sizeof err) != 0 && strstr(err, "50257"),
                  "decode of a bad id fails: %s", err);
            /* Two threads with their own scratch get the same ids as one. */
            size_t tl;
            char *txt = read_all(FIX "text/multilingual.txt", &tl);
            job jobs[2] = {{t, txt, tl, NULL, 0, 0}, {t, txt, tl, NULL, 0, 0}};
            pthread_t th[2];
            for (int i = 0; i < 2; i++) REQUIRE(pthread_create(&th[i], NULL, encode_many, &jobs[i]) == 0, "thread");
            for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
            CHECK(jobs[0].rc == 0 && jobs[1].rc == 0 && jobs[0].n == jobs[1].n && jobs[0].n > 0 &&
                      !memcmp(jobs[0].ids, jobs[1].ids, jobs[0].n * sizeof(int32_t)),
                  "two threads agree");
            free(jobs[0].ids);
            free(jobs[1].ids);
            free(txt);
        }
        if (!strcmp(vname, "llama3_bos"))
            CHECK(saefw_tokenizer_add_bos(t) && saefw_tokenizer_bos(t) == 128000 &&
                      saefw_tokenizer_vocab_size(t) == 128256,
                  "llama3 bos %lld", (long long)saefw_tokenizer_bos(t));
        if (!strcmp(vname, "tiny1l"))
            CHECK(saefw_tokenizer_add_bos(t) && saefw_tokenizer_bos(t) == 256 && saefw_tokenizer_vocab_size(t) == 257,
                  "tiny-1l bos %lld vocab %lld", (long long)saefw_tokenizer_bos(t),
                  (long long)saefw_tokenizer_vocab_size(t));
        saefw_tokenizer_scratch_free(s);
        saefw_tokenizer_free(t);
    }
    printf("fixtures: %d cases, %d tokens compared\n", cases, tokens);
    CHECK(cases >= 80, "only %d cases", cases);
    cJSON_Delete(root);
}

/* A load of `json` fails with a message that contains each of the needles. */
static void check_error(const char *json, const char *needle1, const char *needle2) {
    saefw_tokenizer *t = NULL;
    char err[512] = "";
    int rc = saefw_tokenizer_load_json(json, strlen(json), NULL, "bad/tokenizer.json", &t, err, sizeof err);
    CHECK(rc != 0 && t == NULL, "load of bad json succeeded: %.60s", json);
    CHECK(strstr(err, "bad/tokenizer.json") && strstr(err, needle1) && (!needle2 || strstr(err, needle2)) &&
              !strchr(err, '\n'),
          "error '%s' lacks '%s'", err, needle1);
}

#define BL_PRE "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"use_regex\":true}"

static void check_errors(void) {
    /* A vocab with every byte, in GPT-2's alphabet, for the tests that need one. */
    char vocab[8192];
    size_t o = 0;
    int n = 0;
    o += (size_t)snprintf(vocab + o, sizeof vocab - o, "{");
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        int cp = printable ? b : 256 + n++;
        char u[8];
        if (cp < 0x80) snprintf(u, sizeof u, cp == '"' ? "\\\"" : cp == '\\' ? "\\\\" : "%c", cp);
        else snprintf(u, sizeof u, "%c%c", 0xC0 | (cp >> 6), 0x80 | (cp & 0x3F));
        o += (size_t)snprintf(vocab + o, sizeof vocab - o, "%s\"%s\":%d", b ? "," : "", u, b);
    }
    snprintf(vocab + o, sizeof vocab - o, "}");
    char json[12000];

    check_error("{not json", "not valid JSON", NULL);
    check_error("[1,2]", "not a tokenizer.json", NULL);
    check_error("{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}", "model type 'WordPiece'", NULL);
    check_error("{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", "model type 'Unigram'", NULL);
    snprintf(json, sizeof json,
             "{\"pre_tokenizer\":{\"type\":\"Metaspace\"},\"model\":{\"type\":\"BPE\",\"vocab\":%s,\"merges\":[]}}",
             vocab);
    check_error(json, "pre-tokenizer type 'Metaspace'", NULL);
    snprintf(json, sizeof json,
             "{\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Whitespace\"}]},"
             "\"model\":{\"type\":\"BPE\",\"vocab\":%s,\"merges\":[]}}",
             vocab);
    check_error(json, "pre-tokenizer type 'Whitespace'", NULL);
    snprintf(json, sizeof json,
             "{\"normalizer\":{\"type\":\"Lowercase\"}," BL_PRE
             ",\"model\":{\"type\":\"BPE\",\"vocab\":%s,\"merges\":[]}}",
             vocab);
    check_error(json, "normalizer type 'Lowercase'", NULL);
    snprintf(json, sizeof json,
             "{\"decoder\":{\"type\":\"Metaspace\"}," BL_PRE
             ",\"model\":{\"type\":\"BPE\",\"vocab\":%s,\"merges\":[]}}",
             vocab);
    check_error(json, "decoder type 'Metaspace'", NULL);
    snprintf(json, sizeof json, "{\"model\":{\"type\":\"BPE\",\"vocab\":%s,\"merges\":[]}}", vocab);
    check_error(json, "no ByteLevel", NULL);
    {
        /* A vocab without a byte loads (GPT-NeoX lacks bytes UTF-8 never has); text that needs the byte
         * is an error, not a dropped token. */
        const char *j = "{" BL_PRE ",\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}";
        saefw_tokenizer *t = NULL;
        char err[256] = "";
        int32_t *ids = NULL;
        size_t nn = 0, cap = 0;
        CHECK(saefw_tokenizer_load_json(j, strlen(j), NULL, "a-only", &t, err, sizeof err) == 0, "%s", err);
        CHECK(t && saefw_tokenizer_encode(t, NULL, "aa", 2, 0, &ids, &nn, &cap, err, sizeof err) == 0 && nn == 2 &&
                  ids[1] == 0,
              "a-only: %s", err);
        CHECK(t && saefw_tokenizer_encode(t, NULL, "ab", 2, 0, &ids, &nn, &cap, err, sizeof err) != 0 &&
                  strstr(err, "byte 0x62"),
              "a-only: %s", err);
        free(ids);
        saefw_tokenizer_free(t);
    }
    snprintf(json, sizeof json, "{" BL_PRE ",\"model\":{\"type\":\"BPE\",\"vocab\":%s,\"merges\":[\"a b\"]}}", vocab);
    check_error(json, "merge 0 ('a' 'b')", "the merged token is not in the vocab");
    snprintf(json, sizeof json, "{" BL_PRE ",\"model\":{\"type\":\"BPE\",\"vocab\":%s,\"merges\":[[\"a\",\"zz\"]]}}",
             vocab);
    check_error(json, "the right token is not in the vocab", NULL);
    snprintf(json, sizeof json, "{" BL_PRE ",\"model\":{\"type\":\"BPE\",\"vocab\":%s,\"merges\":[\"abc\"]}}", vocab);
    check_error(json, "merge 0", "not two tokens");
    snprintf(json, sizeof json,
             "{" BL_PRE ",\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"vocab\":%s,\"merges\":[]}}", vocab);
    check_error(json, "byte_fallback", NULL);
    check_error("{" BL_PRE ",\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-3},\"merges\":[]}}", "vocab entry 'a'",
                NULL);
    check_error("{" BL_PRE ",\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":4000000000},\"merges\":[]}}",
                "vocab entry 'a'", NULL);
    check_error("{" BL_PRE ",\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}", "vocab is empty", NULL);
    snprintf(json, sizeof json,
             "{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"},"
             "\"model\":{\"type\":\"BPE\",\"vocab\":%s,\"merges\":[]}}",
             vocab);
    check_error(json, "regex", NULL);

    /* Split's behaviours on "a-b--c" split at "-", seen through merges that join a piece's bytes:
     * a- (256), -b (257), -- (258), b- (259), -c (260). */
    char vocab2[9000];
    snprintf(vocab2, sizeof vocab2, "%.*s,\"a-\":256,\"-b\":257,\"--\":258,\"b-\":259,\"-c\":260}",
             (int)strlen(vocab) - 1, vocab);
    static const struct {
        const char *behavior;
        int invert;
        int32_t want[8];
        size_t n;
    } split_cases[] = {
        {"Isolated", 0, {'a', '-', 'b', '-', '-', 'c'}, 6}, {"Removed", 0, {'a', 'b', 'c'}, 3},
        {"MergedWithPrevious", 0, {256, 259, '-', 'c'}, 4}, {"MergedWithNext", 0, {'a', 257, '-', 260}, 4},
        {"Contiguous", 0, {'a', '-', 'b', 258, 'c'}, 5},    {"Removed", 1, {'-', '-', '-'}, 3},
        {"Isolated", 1, {'a', '-', 'b', '-', '-', 'c'}, 6},
    };
    for (size_t k = 0; k < sizeof split_cases / sizeof *split_cases; k++) {
        snprintf(json, sizeof json,
                 "{\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{"
                 "\"String\":\"-\"},"
                 "\"behavior\":\"%s\",\"invert\":%s},{\"type\":\"ByteLevel\",\"use_regex\":false}]},"
                 "\"model\":{\"type\":\"BPE\",\"vocab\":%s,\"merges\":[[\"a\",\"-\"],\"- b\",\"- -\",[\"b\",\"-\"],\"- "
                 "c\"]}}",
                 split_cases[k].behavior, split_cases[k].invert ? "true" : "false", vocab2);
        saefw_tokenizer *t = NULL;
        char err[256];
        REQUIRE(saefw_tokenizer_load_json(json, strlen(json), NULL, "split", &t, err, sizeof err) == 0, "%s", err);
        int32_t *ids = NULL;
        size_t nn = 0, cap = 0;
        CHECK(saefw_tokenizer_encode(t, NULL, "a-b--c", 6, 0, &ids, &nn, &cap, err, sizeof err) == 0, "%s", err);
        int same = nn == split_cases[k].n && !memcmp(ids, split_cases[k].want, nn * sizeof *ids);
        CHECK(same, "Split %s invert=%d: %zu ids (%d %d %d %d ...)", split_cases[k].behavior, split_cases[k].invert, nn,
              nn > 0 ? ids[0] : -1, nn > 1 ? ids[1] : -1, nn > 2 ? ids[2] : -1, nn > 3 ? ids[3] : -1);
        free(ids);
        saefw_tokenizer_free(t);
    }

    saefw_tokenizer *t = NULL;
    char err[512];
    CHECK(saefw_tokenizer_load("fixtures/tokenizer/no-such-file.json", &t, err, sizeof err) != 0 &&
              strstr(err, "no-such-file"),
          "missing file: %s", err);
    CHECK(saefw_tokenizer_load("fixtures/tokenizer/text", &t, err, sizeof err) != 0 && strstr(err, "no tokenizer.json"),
          "folder without tokenizer.json: %s", err);
    CHECK(saefw_tokenizer_load("../models/tiny-1l", &t, err, sizeof err) == 0, "folder: %s", err);
    saefw_tokenizer_free(t);
}

int main(void) {
    check_errors();
    check_fixtures();
    return t_finish("test_tokenizer");
}
