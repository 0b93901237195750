/* `saefw tokenize` end to end: a JSONL and the same as .jsonl.zst, and plain text files, turned into
 * .npy / .bin token files whose ids must equal those of Hugging Face's JavaScript tokenizers
 * (tests/fixtures/tokenizer/expected.json), for any thread count; Parquet string columns (the
 * parquet fixtures' `text`, strings from their expected.json) against the tokenizer's own encode of
 * the same strings; and its one-line errors. */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <zstd.h>

#include "testutil.h"
#include "tokenizer.h"
#include "util.h"

#define FIX "fixtures/tokenizer/"

static const char *BIN;
static char out[65536];

static char *slurp(const char *path, size_t *len) {
    char err[512], *s = NULL;
    REQUIRE(saefw_read_file(path, &s, len, err, sizeof err) == 0, "%s", err);
    return s;
}

static void write_file(const char *path, const void *p, size_t n) {
    char err[512];
    REQUIRE(saefw_write_file_atomic(path, p, n, err, sizeof err) == 0, "%s", err);
}

/* The ids of a token file: .npy (uint16 or int32, header read from the file) or raw int32 .bin. */
static int32_t *read_tokens(const char *path, size_t *n) {
    size_t len;
    char *s = slurp(path, &len);
    size_t off = 0, width = 4;
    if (saefw_ends_with(path, ".npy")) {
        REQUIRE(len >= 10 && !memcmp(s, "\x93NUMPY", 6), "%s: not .npy", path);
        off = 10 + (size_t)(uint8_t)s[8] + 256 * (size_t)(uint8_t)s[9];
        width = strstr(s + 10, "'<u2'") ? 2 : 4;
        char shape[64];
        snprintf(shape, sizeof shape, "(%zu,)", (len - off) / width);
        CHECK(strstr(s + 10, shape) != NULL, "%s: header shape is not %s", path, shape);
    }
    *n = (len - off) / width;
    int32_t *ids = malloc(sizeof *ids * (*n + 1));
    REQUIRE(ids, "oom");
    for (size_t i = 0; i < *n; i++) {
        if (width == 2) {
            uint16_t v;
            memcpy(&v, s + off + 2 * i, 2);
            ids[i] = v;
        } else {
            memcpy(&ids[i], s + off + 4 * i, 4);
        }
    }
    free(s);
    return ids;
}

/* The expected ids of one text (variant gpt2, special tokens not parsed). */
static const cJSON *expected(const cJSON *root, const char *variant, const char *text) {
    const cJSON *v, *c;
    cJSON_ArrayForEach(v, cJSON_GetObjectItem(root, "variants")) {
        if (strcmp(cJSON_GetObjectItem(v, "name")->valuestring, variant) != 0) continue;
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(v, "cases")) {
            if (!strcmp(cJSON_GetObjectItem(c, "text")->valuestring, text) &&
                !cJSON_IsTrue(cJSON_GetObjectItem(c, "special")))
                return cJSON_GetObjectItem(c, "ids");
        }
    }
    REQUIRE(0, "no expected ids for %s %s", variant, text);
    return NULL;
}

typedef struct {
    int32_t *ids;
    size_t n, cap;
} idvec;

static void push(idvec *v, int32_t id) {
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 1024;
        v->ids = realloc(v->ids, sizeof *v->ids * v->cap);
        REQUIRE(v->ids, "oom");
    }
    v->ids[v->n++] = id;
}

static void push_all(idvec *v, const cJSON *ids) {
    const cJSON *it;
    cJSON_ArrayForEach(it, ids) push(v, (int32_t)it->valuedouble);
}

static void check_tokens(const char *path, const idvec *want, const char *what) {
    size_t n;
    int32_t *got = read_tokens(path, &n);
    size_t d = 0;
    while (d < n && d < want->n && got[d] == want->ids[d]) d++;
    CHECK(n == want->n && d == n, "%s: %zu tokens, expected %zu; first difference at %zu", what, n, want->n, d);
    if (n == want->n && d == n) printf("  ok: %s (%zu tokens)\n", what, n);
    free(got);
}

static const char *const DOCS[] = {"english.txt",    "code.txt",    "multilingual.txt", "digits.txt",
                                   "whitespace.txt", "special.txt", "long.txt"};
#define N_DOCS (sizeof DOCS / sizeof *DOCS)

/* `saefw tokenize F.parquet --field text` equals the tokenizer's encode of the column's strings
 * (tests/fixtures/parquet/expected.json, which the Parquet writer was given), each followed by EOS;
 * null strings are skipped. */
static void test_parquet(const char *tmp, const char *gpt2) {
    size_t len;
    char *text = slurp("fixtures/parquet/expected.json", &len), err[512];
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    REQUIRE(root, "fixtures/parquet/expected.json");
    saefw_tokenizer *t = NULL;
    REQUIRE(saefw_tokenizer_load(gpt2, &t, err, sizeof err) == 0, "%s", err);
    saefw_tokenizer_scratch *sc = saefw_tokenizer_scratch_new(t);
    REQUIRE(sc, "oom");
    static const char *const files[] = {"m_zstd_v2_dict.parquet", "m_snappy_v1_plain.parquet",
                                        "m_gzip_v2_plain.parquet", "nulls.parquet"};
    for (size_t fi = 0; fi < sizeof files / sizeof *files; fi++) {
        const cJSON *f = NULL, *c, *col = NULL;
        cJSON_ArrayForEach(f, cJSON_GetObjectItem(root, "files")) {
            if (!strcmp(cJSON_GetObjectItem(f, "file")->valuestring, files[fi])) break;
        }
        REQUIRE(f, "%s not in expected.json", files[fi]);
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(f, "columns")) {
            if (!strcmp(cJSON_GetObjectItem(c, "name")->valuestring, "text")) col = c;
        }
        REQUIRE(col, "%s: no text column in expected.json", files[fi]);
        idvec want = {0};
        int docs = 0;
        const cJSON *v;
        cJSON_ArrayForEach(v, cJSON_GetObjectItem(col, "values")) {
            if (cJSON_IsNull(v)) continue;
            REQUIRE(saefw_tokenizer_encode(t, sc, v->valuestring, strlen(v->valuestring), 0, &want.ids, &want.n,
                                           &want.cap, err, sizeof err) == 0,
                    "%s", err);
            push(&want, 50256);
            docs++;
        }
        for (int threads = 1; threads <= 3; threads += 2) {
            char o[1100], what[128], docs_line[64];
            snprintf(o, sizeof o, "%s/pq%zu_%d.npy", tmp, fi, threads);
            CHECK(
                t_run(out, sizeof out,
                      "%s tokenize fixtures/parquet/%s --field text --tokenizer %s --out %s --append-eos --threads %d",
                      BIN, files[fi], gpt2, o, threads) == 0,
                "%s", out);
            snprintf(docs_line, sizeof docs_line, "from %d documents", docs);
            CHECK(strstr(out, docs_line), "%s: want '%s':\n%s", files[fi], docs_line, out);
            snprintf(what, sizeof what, "parquet %s, %d thread%s", files[fi], threads, threads > 1 ? "s" : "");
            check_tokens(o, &want, what);
        }
        free(want.ids);
    }
    /* A column of another type, a missing column, a file that is not Parquet: one line, no output. */
    char o[1100], bad[1100];
    snprintf(o, sizeof o, "%s/pq_bad.npy", tmp);
    CHECK(t_run(out, sizeof out, "%s tokenize fixtures/parquet/nulls.parquet --field null_int --tokenizer %s --out %s",
                BIN, gpt2, o) == 1 &&
              strstr(out,
                     "saefw tokenize: fixtures/parquet/nulls.parquet: column 'null_int' is int64, expected string\n") ==
                  out,
          "%s", out);
    CHECK(t_run(out, sizeof out, "%s tokenize fixtures/parquet/nulls.parquet --field nope --tokenizer %s --out %s", BIN,
                gpt2, o) == 1 &&
              strstr(out, "no column 'nope' (columns: ") && strstr(out, "text") && !strchr(strchr(out, '\n') + 1, '\n'),
          "%s", out);
    snprintf(bad, sizeof bad, "%s/fake.parquet", tmp);
    write_file(bad, "PAR1 this is not parquet PAR1", 29);
    CHECK(t_run(out, sizeof out, "%s tokenize %s --tokenizer %s --out %s", BIN, bad, gpt2, o) == 1 &&
              strstr(out, "fake.parquet"),
          "%s", out);
    CHECK(t_run(out, sizeof out, "test -e %s", o) != 0, "an output file was left after a Parquet error");
    saefw_tokenizer_scratch_free(sc);
    saefw_tokenizer_free(t);
    cJSON_Delete(root);
}

int main(void) {
    BIN = getenv("SAEFW_BIN");
    REQUIRE(BIN && *BIN, "SAEFW_BIN is not set (run under ctest)");
    const char *tmp = t_tmpdir("test_tokenize_cli");
    size_t len;
    char *text = slurp(FIX "expected.json", &len);
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    REQUIRE(root, "expected.json");

    /* docs.jsonl: one object per text, the text in "text", another field first; and its .zst. */
    char path[1024], zpath[1024];
    T_FMT(path, "%s/docs.jsonl", tmp);
    T_FMT(zpath, "%s/docs.jsonl.zst", tmp);
    char *jsonl = NULL;
    size_t jl = 0;
    for (size_t i = 0; i < N_DOCS; i++) {
        char p[512];
        snprintf(p, sizeof p, FIX "text/%s", DOCS[i]);
        char *t = slurp(p, &len);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", DOCS[i]);
        cJSON_AddStringToObject(o, "text", t);
        char *line = cJSON_PrintUnformatted(o);
        REQUIRE(line, "print");
        size_t ll = strlen(line);
        jsonl = realloc(jsonl, jl + ll + 3);
        REQUIRE(jsonl, "oom");
        memcpy(jsonl + jl, line, ll);
        jl += ll;
        jsonl[jl++] = '\n';
        if (i == 2) jsonl[jl++] = '\n'; /* an empty line is skipped */
        free(line);
        cJSON_Delete(o);
        free(t);
    }
    write_file(path, jsonl, jl);
    size_t zcap = ZSTD_compressBound(jl);
    char *z = malloc(zcap);
    REQUIRE(z, "oom");
    size_t zl = ZSTD_compress(z, zcap, jsonl, jl, 3);
    REQUIRE(!ZSTD_isError(zl), "zstd");
    write_file(zpath, z, zl);
    free(z);
    free(jsonl);

    const char *gpt2 = FIX "gpt2.json";
    idvec want = {0};
    for (size_t i = 0; i < N_DOCS; i++) {
        push_all(&want, expected(root, "gpt2", DOCS[i]));
        push(&want, 50256);
    }
    for (int threads = 1; threads <= 3; threads++) {
        char o[1100], what[64];
        snprintf(o, sizeof o, "%s/a%d.npy", tmp, threads);
        CHECK(t_run(out, sizeof out, "%s tokenize %s --tokenizer %s --out %s --append-eos --threads %d", BIN, path,
                    gpt2, o, threads) == 0,
              "%s", out);
        CHECK(strstr(out, "7 documents, dtype uint16"), "%s", out);
        snprintf(what, sizeof what, "jsonl --append-eos, %d threads", threads);
        check_tokens(o, &want, what);
    }

    want.n = 0;
    for (size_t i = 0; i < N_DOCS; i++) {
        push(&want, 50256);
        push_all(&want, expected(root, "gpt2", DOCS[i]));
    }
    char o[1100];
    snprintf(o, sizeof o, "%s/b.bin", tmp);
    CHECK(t_run(out, sizeof out, "%s tokenize %s --tokenizer %s --out %s --bos --dtype int32 --threads 2", BIN, zpath,
                gpt2, o) == 0,
          "%s", out);
    CHECK(strstr(out, "int32 (raw little-endian)"), "%s", out);
    check_tokens(o, &want, "jsonl.zst --bos, int32 .bin");

    /* Plain text: each file one document, cut between the threads at line starts. */
    char inputs[4096] = "";
    want.n = 0;
    for (size_t i = 0; i < N_DOCS; i++) {
        size_t u = strlen(inputs);
        snprintf(inputs + u, sizeof inputs - u, " " FIX "text/%s", DOCS[i]);
        push_all(&want, expected(root, "gpt2", DOCS[i]));
    }
    push_all(&want, expected(root, "gpt2", "invalid.bin"));
    for (int threads = 1; threads <= 4; threads += 3) {
        snprintf(o, sizeof o, "%s/c%d.npy", tmp, threads);
        CHECK(t_run(out, sizeof out, "%s tokenize%s " FIX "text/invalid.bin --tokenizer %s --out %s --threads %d", BIN,
                    inputs, gpt2, o, threads) == 0,
              "%s", out);
        check_tokens(o, &want, threads == 1 ? "plain text, 1 thread" : "plain text, 4 threads");
    }
    /* GPT-NeoX-20B (NFC, runs of spaces as added tokens) on the plain text, cut for 4 threads. */
    want.n = 0;
    for (size_t i = 0; i < N_DOCS; i++) push_all(&want, expected(root, "neox20b", DOCS[i]));
    snprintf(o, sizeof o, "%s/n.npy", tmp);
    CHECK(t_run(out, sizeof out, "%s tokenize%s --tokenizer " FIX "neox20b.json --out %s --threads 4", BIN, inputs,
                o) == 0,
          "%s", out);
    check_tokens(o, &want, "plain text, neox20b, 4 threads");
    /* Llama 3 (int32 by default: 128256 ids) on the same JSONL. */
    want.n = 0;
    for (size_t i = 0; i < N_DOCS; i++) push_all(&want, expected(root, "llama3", DOCS[i]));
    snprintf(o, sizeof o, "%s/d.npy", tmp);
    CHECK(t_run(out, sizeof out, "%s tokenize %s --tokenizer " FIX "llama3.json --out %s --threads 2", BIN, zpath, o) ==
              0,
          "%s", out);
    CHECK(strstr(out, "dtype int32"), "%s", out);
    check_tokens(o, &want, "jsonl.zst, llama3, int32 .npy");

    /* Errors: one line naming the file and what is wrong; no output file left behind. */
    char bad[1100];
    snprintf(bad, sizeof bad, "%s/bad.jsonl", tmp);
    write_file(bad, "{\"text\": \"ok\"}\n{\"text\": oops}\n", 31);
    snprintf(o, sizeof o, "%s/e.npy", tmp);
    CHECK(t_run(out, sizeof out, "%s tokenize %s --tokenizer %s --out %s", BIN, bad, gpt2, o) != 0 &&
              strstr(out, "bad.jsonl:2: not valid JSON"),
          "%s", out);
    CHECK(t_run(out, sizeof out, "test -e %s", o) != 0, "an output file was left after an error");
    write_file(bad, "{\"content\": \"ok\"}\n", 18);
    CHECK(t_run(out, sizeof out, "%s tokenize %s --tokenizer %s --out %s", BIN, bad, gpt2, o) != 0 &&
              strstr(out, "bad.jsonl:1: field 'text' is missing or not a string"),
          "%s", out);
    CHECK(t_run(out, sizeof out, "%s tokenize %s --field content --tokenizer %s --out %s", BIN, bad, gpt2, o) == 0,
          "%s", out);
    CHECK(t_run(out, sizeof out, "%s tokenize x.parquet --tokenizer %s --out %s", BIN, gpt2, o) != 0 &&
              strstr(out, "x.parquet"),
          "%s", out);
    CHECK(t_run(out, sizeof out, "%s tokenize %s --tokenizer %s --out %s/x.txt", BIN, bad, gpt2, tmp) == 2 &&
              strstr(out, ".npy or .bin"),
          "%s", out);
    CHECK(t_run(out, sizeof out, "%s tokenize %s --tokenizer %s --out %s --dtype uint16", BIN, path, FIX "llama3.json",
                o) != 0 &&
              strstr(out, "more than uint16 holds"),
          "%s", out);
    CHECK(t_run(out, sizeof out, "HF_HUB_CACHE=%s %s tokenize %s --tokenizer gelu-1l --out %s", tmp, BIN, path, o) !=
                  0 &&
              strstr(out, "saefw download NeelNanda/gpt-neox-tokenizer-digits tokenizer.json"),
          "%s", out);
    CHECK(t_run(out, sizeof out, "%s tokenize %s --tokenizer tiny-1l --out %s", BIN, path, o) == 0 &&
              strstr(out, "dtype uint16"),
          "%s", out);
    free(want.ids);
    cJSON_Delete(root);
    test_parquet(tmp, gpt2);
    return t_finish("test_tokenize_cli");
}
