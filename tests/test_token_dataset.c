/* Token datasets: Parquet shards (fixtures from an independent writer, tests/fixtures/parquet) converted
 * into the flat token cache and read back as the seed's rows; equal rows give [rows, L], others one
 * stream; ids past uint16 widen the file; the cache is made once and follows the shards; bad shards,
 * columns and ids fail with the file named. */
#include <cjson/cJSON.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dataset_resolve.h"
#include "parallel.h"
#include "tensorfile.h"
#include "testutil.h"
#include "token_dataset.h"
#include "tokens.h"
#include "util.h"

#define FIX "fixtures/parquet/"

static cJSON *expected;

/* The generator's own values for file/column: the concatenated stream and the row lengths. */
static int64_t expected_stream(const char *file, const char *column, int64_t **vals, int64_t **lens, int64_t *rows) {
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(expected, "files"), *f;
    cJSON_ArrayForEach(f, files) {
        if (strcmp(cJSON_GetObjectItemCaseSensitive(f, "file")->valuestring, file) != 0) continue;
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(f, "columns")) {
            if (strcmp(cJSON_GetObjectItemCaseSensitive(c, "name")->valuestring, column) != 0) continue;
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, "values"), *r, *x;
            int64_t n = 0, nr = cJSON_GetArraySize(v);
            cJSON_ArrayForEach(r, v) n += cJSON_IsArray(r) ? cJSON_GetArraySize(r) : 1;
            *vals = malloc(sizeof(int64_t) * (size_t)(n + 1));
            *lens = malloc(sizeof(int64_t) * (size_t)(nr + 1));
            int64_t k = 0, i = 0;
            cJSON_ArrayForEach(r, v) {
                if (cJSON_IsArray(r)) {
                    (*lens)[i++] = cJSON_GetArraySize(r);
                    cJSON_ArrayForEach(x, r)(*vals)[k++] = (int64_t)x->valuedouble;
                } else {
                    (*lens)[i++] = 1;
                    (*vals)[k++] = (int64_t)r->valuedouble;
                }
            }
            *rows = nr;
            return n;
        }
    }
    REQUIRE(0, "expected.json has no %s:%s", file, column);
    return -1;
}

static saefw_tensorfile *convert(const char *tmp, const char *name, const char *const *shards, int n,
                                 const char *column, saefw_token_convert_stats *st, char *out, size_t outn) {
    char err[2048];
    snprintf(out, outn, "%s/%s.npy", tmp, name);
    saefw_token_convert_opts o = {.shards = shards, .n_shards = n, .column = column, .out = out, .progress = 0};
    REQUIRE(saefw_tokens_convert(&o, st, err, sizeof err) == 0, "%s: %s", name, err);
    saefw_tensorfile *tf = NULL;
    REQUIRE(saefw_tf_open(out, &tf, err, sizeof err) == 0, "%s", err);
    return tf;
}

static int64_t elem(const saefw_tensor_info *t, int64_t i) {
    return t->dtype == SAEFW_DT_U16 ? ((const uint16_t *)t->data)[i] : ((const int32_t *)t->data)[i];
}

/* One file and column: the cache holds the generator's values in order, in the right shape and dtype. */
static void check_file(const char *tmp, const char *file, const char *column) {
    char path[1024], out[2048];
    snprintf(path, sizeof path, FIX "%s", file);
    const char *shards[1] = {path};
    int64_t *vals, *lens, rows;
    int64_t n = expected_stream(file, column, &vals, &lens, &rows);
    int equal = rows > 0, fits16 = 1;
    for (int64_t r = 1; r < rows; r++) equal &= lens[r] == lens[0];
    for (int64_t i = 0; i < n; i++) fits16 &= vals[i] < 65536;
    saefw_token_convert_stats st;
    char name[256];
    snprintf(name, sizeof name, "%s-%s", file, column);
    saefw_tensorfile *tf = convert(tmp, name, shards, 1, column, &st, out, sizeof out);
    const saefw_tensor_info *t = saefw_tf_get(tf, 0);
    int bad = 0;
    for (int64_t i = 0; i < n && i < t->numel; i++) bad += elem(t, i) != vals[i];
    printf("  %-32s %-7s rows %lld tokens %lld %s %s, %d differ\n", file, column, (long long)st.rows,
           (long long)st.tokens, t->dtype == SAEFW_DT_U16 ? "uint16" : "int32", t->ndim == 2 ? "2-D" : "1-D", bad);
    CHECK(t->numel == n && st.tokens == n && st.rows == rows, "%s: %lld tokens %lld rows, expected %lld, %lld", name,
          (long long)t->numel, (long long)st.rows, (long long)n, (long long)rows);
    CHECK(bad == 0, "%s: %d tokens differ", name, bad);
    CHECK(t->dtype == (fits16 ? SAEFW_DT_U16 : SAEFW_DT_I32), "%s: dtype %s", name, saefw_dtype_name(t->dtype));
    if (equal && lens[0] > 0)
        CHECK(t->ndim == 2 && t->shape[0] == rows && t->shape[1] == lens[0], "%s: shape not [%lld, %lld]", name,
              (long long)rows, (long long)lens[0]);
    else CHECK(t->ndim == 1, "%s: rows differ, so the file must be one stream", name);
    saefw_tf_close(tf);
    free(vals);
    free(lens);
}

static void expect_error(const char *what, const char *const *shards, int n, const char *column, int64_t max_id,
                         const char *tmp, const char *p1, const char *p2) {
    char out[1024], err[2048] = "";
    snprintf(out, sizeof out, "%s/bad.npy", tmp);
    saefw_token_convert_opts o = {.shards = shards, .n_shards = n, .column = column, .out = out, .max_id = max_id};
    int rc = saefw_tokens_convert(&o, NULL, err, sizeof err);
    printf("  %-28s -> %s\n", what, err);
    CHECK(rc != 0 && strstr(err, p1) && (!p2 || strstr(err, p2)), "%s: '%s' lacks '%s' / '%s'", what, err, p1,
          p2 ? p2 : "");
    CHECK(access(out, F_OK) != 0, "%s: a failed conversion left %s", what, out);
    CHECK(!strchr(err, '\n'), "%s: the error is not one line", what);
}

int main(void) {
    const char *tmp = t_tmpdir("test_token_dataset");
    char err[2048], *json;
    size_t len;
    REQUIRE(saefw_read_file(FIX "expected.json", &json, &len, err, sizeof err) == 0, "%s", err);
    expected = cJSON_Parse(json);
    free(json);
    REQUIRE(expected, "expected.json does not parse");

    /* Every codec, page version and encoding; lists of varying length (with empty ones) and plain ints. */
    const char *files[] = {"seedlike_plain.parquet",  "seedlike_dict.parquet",   "m_snappy_v2_dict.parquet",
                           "m_zstd_v1_plain.parquet", "m_gzip_v2_plain.parquet", "m_uncompressed_v1_dict.parquet",
                           "delta_v2.parquet",        "dict_fallback.parquet"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) check_file(tmp, files[i], "tokens");
    check_file(tmp, "m_snappy_v1_dict.parquet", "tok32");
    check_file(tmp, "legacy_lists.parquet", "legacy");

    /* The seed's rows: 1024-token rows cut into 8 rows of 128, position 0 set to BOS, through tokens.h. */
    {
        const char *shards[1] = {FIX "seedlike_plain.parquet"};
        char out[2048];
        saefw_token_convert_stats st;
        saefw_tf_close(convert(tmp, "seed", shards, 1, NULL, &st, out, sizeof out));
        int64_t *vals, *lens, rows;
        expected_stream("seedlike_plain.parquet", "tokens", &vals, &lens, &rows);
        saefw_tokens_opts o = {.path = out, .seq_len = 128, .bos = 0, .shuffle = 0, .seed = 49};
        saefw_tokens *t = NULL;
        REQUIRE(saefw_tokens_open(&o, &t, err, sizeof err) == 0, "%s", err);
        CHECK(saefw_tokens_rows(t) == rows * (lens[0] / 128), "%lld rows of 128", (long long)saefw_tokens_rows(t));
        int32_t row[128];
        int bad = 0;
        for (int64_t r = 0; r < saefw_tokens_rows(t); r++) {
            REQUIRE(saefw_tokens_row(t, r, row, 0, err, sizeof err) == 0, "%s", err);
            for (int i = 0; i < 128; i++) bad += row[i] != (i == 0 ? 0 : vals[r * 128 + i]);
        }
        CHECK(bad == 0, "%d tokens of the seed's rows differ", bad);
        printf("  seed rows: %lld rows of 128 from %lld rows of %lld, %d differ\n", (long long)saefw_tokens_rows(t),
               (long long)rows, (long long)lens[0], bad);
        saefw_tokens_free(t);
        free(vals);
        free(lens);
    }

    /* Several shards in order, and the same result on 1 and 2 threads. */
    {
        const char *shards[2] = {FIX "m_snappy_v1_plain.parquet", FIX "m_zstd_v2_plain.parquet"};
        char out1[2048], out2[2048];
        saefw_token_convert_stats s1, s2;
        saefw_set_threads(1);
        saefw_tensorfile *a = convert(tmp, "two1", shards, 2, NULL, &s1, out1, sizeof out1);
        saefw_set_threads(2);
        saefw_tensorfile *b = convert(tmp, "two2", shards, 2, NULL, &s2, out2, sizeof out2);
        saefw_set_threads(0);
        const saefw_tensor_info *ta = saefw_tf_get(a, 0), *tb = saefw_tf_get(b, 0);
        int64_t *v1, *l1, r1, *v2, *l2, r2;
        int64_t n1 = expected_stream("m_snappy_v1_plain.parquet", "tokens", &v1, &l1, &r1);
        int64_t n2 = expected_stream("m_zstd_v2_plain.parquet", "tokens", &v2, &l2, &r2);
        int bad = 0;
        CHECK(ta->numel == n1 + n2 && s1.rows == r1 + r2, "two shards: %lld tokens", (long long)ta->numel);
        for (int64_t i = 0; i < n1 + n2 && i < ta->numel; i++) bad += elem(ta, i) != (i < n1 ? v1[i] : v2[i - n1]);
        CHECK(bad == 0, "two shards: %d tokens differ", bad);
        CHECK(ta->nbytes == tb->nbytes && !memcmp(ta->data, tb->data, ta->nbytes), "1 and 2 threads differ");
        saefw_tf_close(a);
        saefw_tf_close(b);
        free(v1), free(l1), free(v2), free(l2);
    }

    /* Bad input: the file, row group and column are named; nothing is left behind. */
    {
        char notpq[1024];
        T_FMT(notpq, "%s/fake.parquet", tmp);
        FILE *f = fopen(notpq, "w");
        REQUIRE(f && fputs("tokens,1,2,3\n", f) >= 0 && fclose(f) == 0, "cannot write %s", notpq);
        const char *s_not[1] = {notpq};
        expect_error("not Parquet", s_not, 1, NULL, 0, tmp, "fake.parquet", NULL);
        const char *s_m[1] = {FIX "m_snappy_v1_plain.parquet"};
        expect_error("string column", s_m, 1, "text", 0, tmp, "m_snappy_v1_plain.parquet", "'text'");
        expect_error("no such column", s_m, 1, "nope", 0, tmp, "m_snappy_v1_plain.parquet", "'nope'");
        expect_error("id past the vocabulary", s_m, 1, NULL, 100, tmp, "m_snappy_v1_plain.parquet",
                     "vocabulary size 100");
        const char *s_neg[1] = {FIX "legacy_lists.parquet"};
        expect_error("negative id", s_neg, 1, "bare", 0, tmp, "legacy_lists.parquet", "negative");
        const char *s_ids[1] = {FIX "m_zstd_v2_dict.parquet"};
        expect_error("negative id, int column", s_ids, 1, "id", 0, tmp, "m_zstd_v2_dict.parquet",
                     "row group 0, column 'id'");
        const char *s_null[1] = {FIX "nulls.parquet"};
        expect_error("null list", s_null, 1, "null_list", 0, tmp, "nulls.parquet", "null_list");
        const char *s_two[2] = {FIX "seedlike_plain.parquet", notpq};
        expect_error("bad second shard", s_two, 2, NULL, 0, tmp, "fake.parquet", NULL);
    }

    /* The cache: converted once, found again, and a new file when a shard changes. */
    {
        char cache[1024], dsdir[1024], shard[1200], cmd[4096];
        T_FMT(cache, "%s/cache", tmp);
        T_FMT(dsdir, "%s/ds", tmp);
        snprintf(shard, sizeof shard, "%s/train-00000.parquet", dsdir);
        snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp " FIX "seedlike_dict.parquet '%s'", dsdir, shard);
        REQUIRE(system(cmd) == 0, "%s", cmd);
        setenv("SAEFW_CACHE", cache, 1);
        CHECK(saefw_token_dataset_spec(dsdir), "a folder is a dataset spec");
        CHECK(saefw_token_dataset_spec("hf://datasets/ORG/NAME"), "hf://datasets is a dataset spec");
        CHECK(saefw_token_dataset_spec("ORG/NAME"), "ORG/NAME is a dataset spec");
        CHECK(!saefw_token_dataset_spec("fixtures/model/model.safetensors"), "a token file is not a dataset spec");
        char p1[4096], p2[4096], p3[4096];
        REQUIRE(saefw_token_dataset_prepare(dsdir, NULL, 0, p1, sizeof p1, err, sizeof err) == 0, "%s", err);
        struct stat st1, st2;
        REQUIRE(stat(p1, &st1) == 0, "no cache file %s", p1);
        CHECK(!strncmp(p1, cache, strlen(cache)), "cache %s is not under SAEFW_CACHE", p1);
        sleep(1);
        REQUIRE(saefw_token_dataset_prepare(dsdir, NULL, 0, p2, sizeof p2, err, sizeof err) == 0, "%s", err);
        REQUIRE(stat(p2, &st2) == 0, "no cache file %s", p2);
        CHECK(!strcmp(p1, p2) && st1.st_mtime == st2.st_mtime, "the cache was made again");
        snprintf(cmd, sizeof cmd, "cp " FIX "seedlike_plain.parquet '%s'", shard);
        REQUIRE(system(cmd) == 0, "%s", cmd);
        REQUIRE(saefw_token_dataset_prepare(dsdir, NULL, 0, p3, sizeof p3, err, sizeof err) == 0, "%s", err);
        CHECK(strcmp(p1, p3) != 0, "a changed shard kept the old cache file");
        printf("  cache: %s\n", p3);
        char empty[1200];
        snprintf(empty, sizeof empty, "%s/empty", tmp);
        REQUIRE(saefw_mkdirs(empty, err, sizeof err) == 0, "%s", err);
        int rc = saefw_token_dataset_prepare(empty, NULL, 0, p3, sizeof p3, err, sizeof err);
        printf("  %-28s -> %s\n", "empty folder", err);
        CHECK(rc != 0 && strstr(err, "no file matches"), "an empty folder: '%s'", err);
    }
    /* A Hub dataset in the huggingface_hub cache (the bundled corpus written as Parquet shards by an
     * independent writer): hf://datasets/ORG/NAME gives the seed's rows of the original tokens. */
    {
        char hub[1024], snap[1200], cmd[4096], cache[4096];
        const char *commit = "0123456789abcdef0123456789abcdef01234567";
        T_FMT(hub, "%s/hub", tmp);
        snprintf(snap, sizeof snap, "%s/datasets--saefw--tiny-tokens/snapshots/%s", hub, commit);
        T_FMT(cmd,
              "mkdir -p '%s/data' '%s/datasets--saefw--tiny-tokens/refs' && cp fixtures/dataset/data/*.parquet "
              "'%s/data/' "
              "&& printf %s > '%s/datasets--saefw--tiny-tokens/refs/main'",
              snap, hub, snap, commit, hub);
        REQUIRE(system(cmd) == 0, "%s", cmd);
        setenv("HF_HUB_CACHE", hub, 1);
        REQUIRE(saefw_token_dataset_prepare("hf://datasets/saefw/tiny-tokens", NULL, 0, cache, sizeof cache, err,
                                            sizeof err) == 0,
                "%s", err);
        CHECK(strstr(cache, "saefw--tiny-tokens-") != NULL, "cache name %s lacks the dataset's name", cache);
        saefw_tokens_opts o = {.path = cache, .seq_len = 128, .bos = 256, .shuffle = 0};
        saefw_tokens_opts ref = {.path = "../models/tiny-1l/tokens.npy", .seq_len = 128, .bos = 256, .shuffle = 0};
        saefw_tokens *t = NULL, *r = NULL;
        REQUIRE(saefw_tokens_open(&o, &t, err, sizeof err) == 0, "%s", err);
        REQUIRE(saefw_tokens_open(&ref, &r, err, sizeof err) == 0, "%s", err);
        int32_t a[128], b[128];
        int bad = 0;
        for (int64_t i = 0; i < saefw_tokens_rows(t); i++) {
            REQUIRE(saefw_tokens_row(t, i, a, 257, err, sizeof err) == 0, "%s", err);
            REQUIRE(saefw_tokens_row(r, i, b, 257, err, sizeof err) == 0, "%s", err);
            bad += memcmp(a, b, sizeof a) != 0;
        }
        printf("  hub dataset: %lld rows of 128 from %s, %d differ from tokens.npy\n", (long long)saefw_tokens_rows(t),
               cache, bad);
        CHECK(saefw_tokens_rows(t) == 160 * 8 && bad == 0, "hub dataset: %lld rows, %d differ",
              (long long)saefw_tokens_rows(t), bad);
        saefw_tokens_free(t);
        saefw_tokens_free(r);
        int rc =
            saefw_token_dataset_prepare("hf://datasets/saefw/absent", NULL, 0, cache, sizeof cache, err, sizeof err);
        printf("  %-28s -> %s\n", "absent dataset", err);
        CHECK(rc != 0 && strstr(err, "saefw download --dataset saefw/absent"), "absent dataset: '%s'", err);
    }
    cJSON_Delete(expected);
    return t_finish("test_token_dataset");
}
