/* Token files: rows of seq_len cut from 1-D streams and 2-D tensors, the seed's BOS overwrite, the
 * keyed shuffle visits every row once per pass, wrap-around reshuffles and logs, raw .bin files,
 * a torch .pt token tensor, and clear errors for bad files and out-of-vocabulary ids. */
#include <unistd.h>

#include "tensorfile.h"
#include "testutil.h"
#include "tokens.h"

static int n_logs = 0;
static void on_log(void *ud, const char *msg) {
    n_logs++;
    printf("  log: %s\n", msg);
}

static saefw_tokens *open_t(const char *path, int64_t seq_len, int64_t bos, int shuffle, const char *dtype) {
    saefw_tokens_opts o = {path, NULL, dtype, seq_len, bos, shuffle, 7};
    saefw_tokens *t = NULL;
    char err[1024];
    REQUIRE(saefw_tokens_open(&o, &t, err, sizeof err) == 0, "%s", err);
    return t;
}

static void expect_open_error(const char *what, const char *path, const char *dtype, int64_t seq_len,
                              const char *phrase) {
    saefw_tokens_opts o = {path, NULL, dtype, seq_len, -1, 1, 7};
    saefw_tokens *t = NULL;
    char err[1024] = "";
    int rc = saefw_tokens_open(&o, &t, err, sizeof err);
    printf("  %-24s -> %s\n", what, err);
    CHECK(rc != 0 && strstr(err, phrase), "%s: '%s' lacks '%s'", what, err, phrase);
    saefw_tokens_free(t);
}

int main(void) {
    const char *tmp = t_tmpdir("test_tokens");
    char path[2048], err[1024];

    /* A 1-D stream 0..N-1 (int32): row r holds r*seq_len .. r*seq_len + seq_len - 1. */
    static int32_t stream[10000];
    for (int i = 0; i < 10000; i++) stream[i] = i;
    int64_t shape1[1] = {10000};
    snprintf(path, sizeof path, "%s/stream.npy", tmp);
    REQUIRE(saefw_npy_write(path, SAEFW_DT_I32, 1, shape1, stream, err, sizeof err) == 0, "%s", err);

    /* The shuffle is a permutation for many row counts: each row exactly once per pass. */
    int64_t seq_lens[] = {2, 3, 7, 10, 64, 1250, 5000};
    for (size_t k = 0; k < sizeof seq_lens / sizeof *seq_lens; k++) {
        saefw_tokens *t = open_t(path, seq_lens[k], -1, 1, NULL);
        int64_t rows = saefw_tokens_rows(t), L = seq_lens[k];
        CHECK(rows == 10000 / L, "seq_len %lld: %lld rows", (long long)L, (long long)rows);
        unsigned char *seen = calloc((size_t)rows, 1);
        int32_t *row = malloc(sizeof(int32_t) * (size_t)L);
        int dup = 0, in_order = 1, torn = 0;
        for (int64_t r = 0; r < rows; r++) {
            REQUIRE(saefw_tokens_next(t, row, 1, 0, err, sizeof err) == 0, "%s", err);
            int64_t pick = row[0] / L;
            if (row[0] % L != 0 || pick >= rows || seen[pick]) dup++;
            else seen[pick] = 1;
            for (int64_t i = 1; i < L; i++) torn += row[i] != row[0] + i;
            in_order &= pick == r;
        }
        CHECK(dup == 0 && torn == 0, "seq_len %lld: %d duplicates, %d torn rows", (long long)L, dup, torn);
        if (rows > 8) CHECK(!in_order, "seq_len %lld: rows not shuffled", (long long)L);
        CHECK(saefw_tokens_pass(t) == 0, "pass advanced early");
        free(seen);
        free(row);
        saefw_tokens_free(t);
    }
    printf("  shuffle visits every row once for seq_len 2, 3, 7, 10, 64, 1250, 5000\n");

    /* Wrap-around: a new pass, a log line, a different order. */
    saefw_tokens *t = open_t(path, 100, -1, 1, NULL);
    saefw_tokens_set_log(t, on_log, NULL);
    int32_t a[100 * 100], b[100 * 100];
    REQUIRE(saefw_tokens_next(t, a, 100, 0, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_tokens_next(t, b, 100, 0, err, sizeof err) == 0, "%s", err);
    CHECK(saefw_tokens_pass(t) == 1 && n_logs == 1, "pass %lld, %d log lines", (long long)saefw_tokens_pass(t), n_logs);
    CHECK(memcmp(a, b, sizeof a) != 0, "second pass in the same order");
    saefw_tokens_free(t);

    /* No shuffle: file order; BOS overwrite at position 0 of every row. */
    t = open_t(path, 100, 4999, 0, NULL);
    /* Ids here go up to 9999. */
    REQUIRE(saefw_tokens_next(t, a, 3, 0, err, sizeof err) == 0, "%s", err);
    CHECK(a[0] == 4999 && a[1] == 1 && a[100] == 4999 && a[101] == 101 && a[299] == 299, "bos/order: %d %d %d %d", a[0],
          a[1], a[100], a[101]);
    CHECK(saefw_tokens_next(t, a, 1, 350, err, sizeof err) != 0 && strstr(err, "outside the vocabulary"),
          "out-of-vocabulary id accepted: %s", err);
    printf("  %-24s -> %s\n", "token >= d_vocab", err);
    saefw_tokens_free(t);

    /* 2-D [rows, 1024] cut into 8 rows of 128, as the seed's preprocessing. */
    static int64_t grid[6 * 1024];
    for (int i = 0; i < 6 * 1024; i++) grid[i] = i;
    int64_t shape2[2] = {6, 1024};
    snprintf(path, sizeof path, "%s/grid.npy", tmp);
    REQUIRE(saefw_npy_write(path, SAEFW_DT_I64, 2, shape2, grid, err, sizeof err) == 0, "%s", err);
    t = open_t(path, 128, -1, 0, NULL);
    CHECK(saefw_tokens_rows(t) == 48, "2-D rows %lld", (long long)saefw_tokens_rows(t));
    int32_t row[128];
    REQUIRE(saefw_tokens_row(t, 9, row, 0, err, sizeof err) == 0, "%s", err);
    CHECK(row[0] == 1024 + 128 && row[127] == 1024 + 255, "row 9 = %d..%d", row[0], row[127]);
    saefw_tokens_free(t);

    /* Raw .bin with a stated dtype. */
    snprintf(path, sizeof path, "%s/raw.bin", tmp);
    uint16_t raw[64];
    for (int i = 0; i < 64; i++) raw[i] = (uint16_t)(60000 + i);
    FILE *f = fopen(path, "wb");
    REQUIRE(f && fwrite(raw, 2, 64, f) == 64 && fclose(f) == 0, "write raw");
    t = open_t(path, 16, -1, 0, "uint16");
    REQUIRE(saefw_tokens_row(t, 3, row, 0, err, sizeof err) == 0, "%s", err);
    CHECK(saefw_tokens_rows(t) == 4 && row[0] == 60048 && row[15] == 60063, "raw row %d %d", row[0], row[15]);
    saefw_tokens_free(t);
    expect_open_error("raw .bin without dtype", path, NULL, 16, "needs its dtype");
    expect_open_error("raw .bin, bad dtype", path, "float32", 16, "must be uint16, int32 or int64");
    snprintf(path, sizeof path, "%s/odd.bin", tmp);
    f = fopen(path, "wb");
    REQUIRE(f && fwrite(raw, 1, 7, f) == 7 && fclose(f) == 0, "write odd");
    expect_open_error("raw .bin, odd size", path, "uint16", 2, "not a whole number");
    snprintf(path, sizeof path, "%s/grid.npy", tmp);
    expect_open_error("rows shorter than seq_len", path, NULL, 2048, "shorter than seq_len");
    expect_open_error("missing file", "fixtures/no_such_tokens.npy", NULL, 128, "no_such_tokens.npy");
    expect_open_error("float tokens", "fixtures/tensorfile/f32.npy", NULL, 2, "tokens must be int32, int64 or uint16");

    /* A torch .pt token tensor (written by tests/reference/make_tensor_fixtures.py: int64 [4, 8]). */
    t = open_t("fixtures/tensorfile/tokens_i64.pt", 4, -1, 0, NULL);
    REQUIRE(saefw_tokens_row(t, 1, row, 0, err, sizeof err) == 0, "%s", err);
    CHECK(saefw_tokens_rows(t) == 8 && row[0] == 45970 && row[3] == 21984, ".pt row 1: %d .. %d", row[0], row[3]);
    saefw_rng rng;
    saefw_rng_seed(&rng, 1);
    int32_t s1[4 * 5], s2[4 * 5];
    REQUIRE(saefw_tokens_sample(t, &rng, s1, 5, 0, err, sizeof err) == 0, "%s", err);
    saefw_rng_seed(&rng, 1);
    REQUIRE(saefw_tokens_sample(t, &rng, s2, 5, 0, err, sizeof err) == 0, "%s", err);
    CHECK(memcmp(s1, s2, sizeof s1) == 0, "sampling is not reproducible");
    saefw_tokens_free(t);

    /* A token file cut short while a run reads it: a one-line error naming it, not a crash. */
    snprintf(path, sizeof path, "%s/cut.npy", tmp);
    REQUIRE(saefw_npy_write(path, SAEFW_DT_I32, 1, shape1, stream, err, sizeof err) == 0, "%s", err);
    t = open_t(path, 100, -1, 0, NULL);
    REQUIRE(truncate(path, 4096) == 0, "truncate");
    REQUIRE(saefw_tokens_row(t, 5, row, 0, err, sizeof err) == 0, "%s", err); /* still inside the file */
    CHECK(row[0] == 500, "row 5 of the cut file starts with %d", row[0]);
    err[0] = 0;
    CHECK(saefw_tokens_row(t, 90, row, 0, err, sizeof err) != 0 && strstr(err, "cut.npy") &&
              strstr(err, "shorter than when opened"),
          "reading past the cut: '%s'", err);
    printf("  file cut while open: %s\n", err);
    saefw_tokens_free(t);
    return t_finish("test_tokens");
}
