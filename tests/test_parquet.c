/* Parquet reader: every fixture of tests/fixtures/parquet/ (written by parquet-wasm, see
 * tests/reference/make_parquet_fixtures.mjs) decodes to the generator's own values in expected.json;
 * nulls in token columns, not-Parquet files, every truncation of a small file, a wrong column type and
 * damaged pages give one-line errors naming the file (and row group and column); row groups decoded on
 * several threads give the same arrays. */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdint.h>

#include "parallel.h"
#include "parquet.h"
#include "testutil.h"
#include "util.h"

#define FIX "fixtures/parquet"

static unsigned kind_of(const char *k) {
    if (!strcmp(k, "list<int64>")) return SAEFW_PQ_LIST_INT64;
    if (!strcmp(k, "list<int32>")) return SAEFW_PQ_LIST_INT32;
    if (!strcmp(k, "int64")) return SAEFW_PQ_INT64;
    if (!strcmp(k, "int32")) return SAEFW_PQ_INT32;
    if (!strcmp(k, "string")) return SAEFW_PQ_STRING;
    return 0;
}

static int one_line(const char *s) { return s[0] && !strchr(s, '\n'); }

/* Whether a JSON list column holds a null list or a null element. */
static int has_null_token(const cJSON *vals) {
    for (const cJSON *r = vals->child; r; r = r->next) {
        if (cJSON_IsNull(r)) return 1;
        for (const cJSON *v = r->child; v; v = v->next)
            if (cJSON_IsNull(v)) return 1;
    }
    return 0;
}

static int has_null(const cJSON *vals) {
    for (const cJSON *v = vals->child; v; v = v->next)
        if (cJSON_IsNull(v)) return 1;
    return 0;
}

/* Compare one column, read row group by row group, with its expected values. */
static void check_column(const char *path, saefw_parquet *pq, const cJSON *jc, int64_t *values_seen) {
    const char *name = cJSON_GetObjectItem(jc, "name")->valuestring;
    const char *kind = cJSON_GetObjectItem(jc, "kind")->valuestring;
    const cJSON *vals = cJSON_GetObjectItem(jc, "values");
    unsigned k = kind_of(kind);
    char err[1024];
    int col = saefw_parquet_find(pq, name, k, err, sizeof err);
    CHECK(col >= 0, "%s: %s", path, err);
    if (col < 0) return;
    const saefw_parquet_column *info = saefw_parquet_column_info(pq, col);
    CHECK(info->kind == k && !strcmp(info->type, kind), "%s: column %s listed as %s", path, name, info->type);
    int expect_error = (k & SAEFW_PQ_LISTS) ? has_null_token(vals) : (k & SAEFW_PQ_INTS) ? has_null(vals) : 0;
    saefw_parquet_batch b;
    saefw_parquet_batch_init(&b);
    const cJSON *row = vals->child;
    int64_t r0 = 0;
    int errors = 0;
    for (int rg = 0; rg < saefw_parquet_row_groups(pq); rg++) {
        if (saefw_parquet_read(pq, rg, col, &b, err, sizeof err) != 0) {
            errors++;
            char want[512];
            T_FMT(want, "%s: row group %d, column '%s': ", path, rg, name);
            CHECK(expect_error, "%s", err);
            CHECK(strncmp(err, want, strlen(want)) == 0 && one_line(err) && strstr(err, "null"), "error '%s'", err);
            break;
        }
        CHECK(b.rows == saefw_parquet_row_group_rows(pq, rg), "%s rg %d: rows %" PRId64, path, rg, b.rows);
        if (k & SAEFW_PQ_LISTS) {
            CHECK(b.offsets[0] == 0 && b.offsets[b.rows] == b.n, "%s %s rg %d: offsets", path, name, rg);
            for (int64_t r = 0; r < b.rows && row; r++, row = row->next) {
                int64_t len = b.offsets[r + 1] - b.offsets[r];
                CHECK(len == cJSON_GetArraySize(row), "%s %s row %" PRId64 ": %" PRId64 " values, want %d", path, name,
                      r0 + r, len, cJSON_GetArraySize(row));
                if (len != cJSON_GetArraySize(row)) continue;
                const cJSON *v = row->child;
                for (int64_t i = 0; i < len; i++, v = v->next) {
                    int64_t got = b.values[b.offsets[r] + i];
                    CHECK(got == (int64_t)v->valuedouble, "%s %s row %" PRId64 "[%" PRId64 "]: %" PRId64 " != %.0f",
                          path, name, r0 + r, i, got, v->valuedouble);
                }
                *values_seen += len;
            }
        } else if (k & SAEFW_PQ_INTS) {
            CHECK(b.n == b.rows, "%s %s: %" PRId64 " values", path, name, b.n);
            for (int64_t r = 0; r < b.rows && row; r++, row = row->next) {
                int64_t want = cJSON_IsString(row) ? strtoll(row->valuestring, NULL, 10) : (int64_t)row->valuedouble;
                CHECK(b.values[r] == want, "%s %s row %" PRId64 ": %" PRId64 " != %" PRId64, path, name, r0 + r,
                      b.values[r], want);
                (*values_seen)++;
            }
        } else {
            int64_t i = 0, nulls = 0;
            for (int64_t r = 0; r < b.rows && row; r++, row = row->next) {
                if (cJSON_IsNull(row)) {
                    nulls++;
                    continue;
                }
                CHECK(i < b.n, "%s %s: too few strings", path, name);
                if (i >= b.n) break;
                size_t len = (size_t)(b.offsets[i + 1] - b.offsets[i]);
                CHECK(len == strlen(row->valuestring) && !memcmp(b.bytes + b.offsets[i], row->valuestring, len),
                      "%s %s row %" PRId64 ": '%.*s' != '%s'", path, name, r0 + r, (int)len, b.bytes + b.offsets[i],
                      row->valuestring);
                i++;
                (*values_seen)++;
            }
            CHECK(i == b.n && nulls == b.nulls_skipped, "%s %s rg %d: %" PRId64 " strings, %" PRId64 " nulls skipped",
                  path, name, rg, b.n, b.nulls_skipped);
        }
        r0 += b.rows;
    }
    CHECK(expect_error ? errors == 1 : (errors == 0 && r0 == cJSON_GetArraySize(vals)),
          "%s %s: %" PRId64 " rows read, %d errors", path, name, r0, errors);
    saefw_parquet_batch_free(&b);
}

static void check_fixtures(void) {
    char *text = NULL, err[1024];
    size_t len;
    REQUIRE(saefw_read_file(FIX "/expected.json", &text, &len, err, sizeof err) == 0, "%s", err);
    cJSON *root = cJSON_Parse(text);
    REQUIRE(root, "expected.json does not parse");
    int files = 0;
    int64_t values = 0;
    for (const cJSON *jf = cJSON_GetObjectItem(root, "files")->child; jf; jf = jf->next) {
        char path[512];
        snprintf(path, sizeof path, FIX "/%s", cJSON_GetObjectItem(jf, "file")->valuestring);
        saefw_parquet *pq;
        if (saefw_parquet_open(path, &pq, err, sizeof err) != 0) {
            CHECK(0, "%s", err);
            continue;
        }
        CHECK(saefw_parquet_rows(pq) == (int64_t)cJSON_GetObjectItem(jf, "rows")->valuedouble, "%s: rows", path);
        CHECK(saefw_parquet_row_groups(pq) == cJSON_GetObjectItem(jf, "row_groups")->valueint, "%s: %d row groups",
              path, saefw_parquet_row_groups(pq));
        const cJSON *cols = cJSON_GetObjectItem(jf, "columns");
        CHECK(saefw_parquet_columns(pq) == cJSON_GetArraySize(cols), "%s: %d columns", path, saefw_parquet_columns(pq));
        for (const cJSON *jc = cols->child; jc; jc = jc->next) check_column(path, pq, jc, &values);
        saefw_parquet_close(pq);
        files++;
    }
    printf("fixtures: %d files, %" PRId64 " values compared\n", files, values);
    CHECK(files >= 20, "only %d fixture files", files);
    cJSON_Delete(root);
    free(text);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    REQUIRE(f && fwrite(data, 1, n, f) == n && fclose(f) == 0, "cannot write %s", path);
}

/* Open path and read every column of every row group; 0 when all of it decoded. Errors must be one
 * line naming the file (and, from a read, the row group and column). */
static int read_all(const char *path) {
    char err[1024];
    saefw_parquet *pq;
    if (saefw_parquet_open(path, &pq, err, sizeof err) != 0) {
        CHECK(pq == NULL && one_line(err) && !strncmp(err, path, strlen(path)), "open error '%s'", err);
        return -1;
    }
    int rc = 0;
    saefw_parquet_batch b;
    saefw_parquet_batch_init(&b);
    b.max_values = 1 << 20;
    for (int rg = 0; rg < saefw_parquet_row_groups(pq); rg++) {
        for (int c = 0; c < saefw_parquet_columns(pq); c++) {
            if (saefw_parquet_read(pq, rg, c, &b, err, sizeof err) == 0) continue;
            char want[600];
            snprintf(want, sizeof want, "%s: row group %d, column '%s': ", path, rg,
                     saefw_parquet_column_info(pq, c)->name);
            CHECK(one_line(err) && !strncmp(err, want, strlen(want)), "read error '%s'", err);
            rc = -1;
        }
    }
    saefw_parquet_batch_free(&b);
    saefw_parquet_close(pq);
    return rc;
}

static void check_errors(const char *tmp) {
    char path[1024], err[1024];
    saefw_parquet *pq;

    snprintf(path, sizeof path, "%s/text.parquet", tmp);
    write_bytes(path, "{\"tokens\": [1, 2, 3]}\n", 22);
    CHECK(saefw_parquet_open(path, &pq, err, sizeof err) != 0 && strstr(err, "not a Parquet file") && strstr(err, path),
          "not parquet: '%s'", err);
    CHECK(saefw_parquet_open(FIX "/missing.parquet", &pq, err, sizeof err) != 0 && strstr(err, "missing.parquet"),
          "missing: '%s'", err);

    /* Every truncation of a small file: refused at open, with the file named. */
    char *data;
    size_t n;
    REQUIRE(saefw_read_file(FIX "/nulls.parquet", &data, &n, err, sizeof err) == 0, "%s", err);
    snprintf(path, sizeof path, "%s/cut.parquet", tmp);
    int refused = 0, said_truncated = 0;
    for (size_t len = 0; len < n; len++) {
        write_bytes(path, data, len);
        if (saefw_parquet_open(path, &pq, err, sizeof err) != 0) {
            refused++;
            CHECK(one_line(err) && !strncmp(err, path, strlen(path)), "cut at %zu: '%s'", len, err);
            said_truncated += len >= 4 && strstr(err, "truncated") != NULL;
        } else {
            saefw_parquet_close(pq);
        }
    }
    CHECK(refused == (int)n && said_truncated == (int)n - 4, "truncations: %d of %zu refused, %d say truncated",
          refused, n, said_truncated);
    free(data);

    /* Wrong column type, and a column that is not there. */
    REQUIRE(saefw_parquet_open(FIX "/m_snappy_v1_dict.parquet", &pq, err, sizeof err) == 0, "%s", err);
    CHECK(saefw_parquet_find(pq, "text", SAEFW_PQ_LISTS, err, sizeof err) < 0 &&
              strstr(err, "m_snappy_v1_dict.parquet: column 'text' is string, expected list<int32|int64>"),
          "wrong type: '%s'", err);
    CHECK(saefw_parquet_find(pq, "tokens", SAEFW_PQ_INTS, err, sizeof err) < 0 &&
              strstr(err, "column 'tokens' is list<int64>, expected int32|int64"),
          "wrong type: '%s'", err);
    CHECK(saefw_parquet_find(pq, "input_ids", SAEFW_PQ_LISTS, err, sizeof err) < 0 &&
              strstr(err, "no column 'input_ids' (columns: tokens, tok32, id, text)"),
          "no column: '%s'", err);
    CHECK(saefw_parquet_read(pq, 3, 0, NULL, err, sizeof err) < 0 && strstr(err, "row group 3 out of range"), "'%s'",
          err);
    saefw_parquet_close(pq);

    /* A page header wiped: the first chunk starts at byte 4 with the header of its first page. */
    REQUIRE(saefw_read_file(FIX "/m_snappy_v1_plain.parquet", &data, &n, err, sizeof err) == 0, "%s", err);
    snprintf(path, sizeof path, "%s/damaged.parquet", tmp);
    char *bad = malloc(n);
    REQUIRE(bad, "oom");
    memcpy(bad, data, n);
    memset(bad + 4, 0, 8);
    write_bytes(path, bad, n);
    REQUIRE(saefw_parquet_open(path, &pq, err, sizeof err) == 0, "%s", err);
    saefw_parquet_batch b;
    saefw_parquet_batch_init(&b);
    char want[1100];
    snprintf(want, sizeof want, "%s: row group 0, column 'tokens': page 0: page header damaged", path);
    CHECK(saefw_parquet_read(pq, 0, 0, &b, err, sizeof err) != 0 && !strncmp(err, want, strlen(want)),
          "wiped header: '%s'", err);
    saefw_parquet_batch_free(&b);
    saefw_parquet_close(pq);

    /* Every single-byte change in the data of a compressed and an uncompressed file: decodes or fails
     * with a one-line error naming file, row group and column (AddressSanitizer watches the rest). */
    const char *sweep[] = {FIX "/m_snappy_v2_dict.parquet", FIX "/m_uncompressed_v1_dict.parquet"};
    for (int s = 0; s < 2; s++) {
        free(data);
        free(bad);
        REQUIRE(saefw_read_file(sweep[s], &data, &n, err, sizeof err) == 0, "%s", err);
        bad = malloc(n);
        REQUIRE(bad, "oom");
        int failed = 0, total = 0;
        for (size_t at = 4; at + 8 < n; at += 5) {
            memcpy(bad, data, n);
            bad[at] ^= (char)(0x5a + at % 7);
            write_bytes(path, bad, n);
            failed += read_all(path) != 0;
            total++;
        }
        printf("%s: %d of %d damaged copies refused\n", sweep[s], failed, total);
        CHECK(failed > total / 10, "%s: only %d of %d damaged copies refused", sweep[s], failed, total);
    }
    free(data);
    free(bad);
}

/* ---- threads ---- */

typedef struct {
    const saefw_parquet *pq;
    int col;
    int64_t **values, **offsets, *n;
    int failures;
} mt_ctx;

static void mt_range(void *ctxp, int64_t begin, int64_t end) {
    mt_ctx *ctx = ctxp;
    saefw_parquet_batch b;
    saefw_parquet_batch_init(&b);
    char err[1024];
    for (int64_t rg = begin; rg < end; rg++) {
        if (saefw_parquet_read(ctx->pq, (int)rg, ctx->col, &b, err, sizeof err) != 0) {
            __atomic_add_fetch(&ctx->failures, 1, __ATOMIC_RELAXED);
            continue;
        }
        ctx->n[rg] = b.n;
        ctx->values[rg] = malloc(sizeof(int64_t) * (size_t)(b.n + 1));
        ctx->offsets[rg] = malloc(sizeof(int64_t) * (size_t)(b.rows + 1));
        if (!ctx->values[rg] || !ctx->offsets[rg]) abort();
        memcpy(ctx->values[rg], b.values, sizeof(int64_t) * (size_t)b.n);
        memcpy(ctx->offsets[rg], b.offsets, sizeof(int64_t) * (size_t)(b.rows + 1));
    }
    saefw_parquet_batch_free(&b);
}

static void check_threads(void) {
    const char *files[] = {FIX "/seedlike_dict.parquet", FIX "/delta_v2.parquet", FIX "/m_zstd_v2_plain.parquet"};
    char err[1024];
    saefw_set_threads(3);
    for (int f = 0; f < 3; f++) {
        saefw_parquet *pq;
        REQUIRE(saefw_parquet_open(files[f], &pq, err, sizeof err) == 0, "%s", err);
        int col = saefw_parquet_find(pq, "tokens", SAEFW_PQ_LISTS, err, sizeof err);
        REQUIRE(col >= 0, "%s", err);
        int n_rg = saefw_parquet_row_groups(pq);
        REQUIRE(n_rg >= 3, "%s: %d row groups", files[f], n_rg);
        mt_ctx ctx = {pq,
                      col,
                      calloc((size_t)n_rg, sizeof(int64_t *)),
                      calloc((size_t)n_rg, sizeof(int64_t *)),
                      calloc((size_t)n_rg, sizeof(int64_t)),
                      0};
        REQUIRE(ctx.values && ctx.offsets && ctx.n, "oom");
        saefw_parallel_for(n_rg, mt_range, &ctx);
        CHECK(ctx.failures == 0, "%s: %d threaded reads failed", files[f], ctx.failures);
        saefw_parquet_batch b;
        saefw_parquet_batch_init(&b);
        for (int rg = 0; rg < n_rg && !ctx.failures; rg++) {
            REQUIRE(saefw_parquet_read(pq, rg, col, &b, err, sizeof err) == 0, "%s", err);
            CHECK(ctx.n[rg] == b.n && !memcmp(ctx.values[rg], b.values, sizeof(int64_t) * (size_t)b.n) &&
                      !memcmp(ctx.offsets[rg], b.offsets, sizeof(int64_t) * (size_t)(b.rows + 1)),
                  "%s rg %d: threaded decode differs", files[f], rg);
        }
        for (int rg = 0; rg < n_rg; rg++) {
            free(ctx.values[rg]);
            free(ctx.offsets[rg]);
        }
        free(ctx.values);
        free(ctx.offsets);
        free(ctx.n);
        saefw_parquet_batch_free(&b);
        saefw_parquet_close(pq);
    }
    saefw_set_threads(0);
}

int main(void) {
    const char *tmp = t_tmpdir("test_parquet");
    check_fixtures();
    check_errors(tmp);
    check_threads();
    return t_finish("test_parquet");
}
