/* The activation buffer follows the seed's semantics: filled completely at first, batches read in
 * order, the first half refilled from the source once more than half minus a batch is used, then
 * reshuffled; no row is served twice between refills; bf16 storage rounds as bf16. Also the file
 * source: rows in order, wrap-around with a log line, width checks. */
#include <unistd.h>

#include "source.h"
#include "testutil.h"

/* A source whose row r holds r in every column. */
typedef struct {
    int64_t next;
} counter;

static int count_next(saefw_source *s, float *out, int64_t n, char *err, size_t errlen) {
    counter *c = s->impl;
    for (int64_t r = 0; r < n; r++, c->next++)
        for (int64_t i = 0; i < s->d_act; i++) out[r * s->d_act + i] = (float)c->next;
    return 0;
}

static int wraps = 0;
static void on_log(void *ud, const char *msg) { wraps += strstr(msg, "starting pass 2") != NULL; }

int main(void) {
    enum { ROWS = 64, BATCH = 4, D = 3 };
    counter c = {0};
    saefw_source src = {.kind = "counter", .d_act = D, .next = count_next, .impl = &c};
    saefw_buffer b;
    char err[512];
    REQUIRE(saefw_buffer_init(&b, &src, ROWS, BATCH, SAEFW_BUF_F32, 3, err, sizeof err) == 0, "%s", err);
    CHECK(c.next == ROWS, "first fill read %lld rows, want %d", (long long)c.next, ROWS);

    /* Batches until the first refill: (ROWS/2 - BATCH)/BATCH + 1 of them, each row once, all < ROWS. */
    int per_cycle = (ROWS / 2 - BATCH) / BATCH + 1;
    unsigned char seen[4096] = {0};
    float batch[BATCH * D];
    int dup = 0, sorted = 1;
    float prev = -1;
    for (int k = 0; k < per_cycle; k++) {
        REQUIRE(saefw_buffer_next(&b, batch, err, sizeof err) == 0, "%s", err);
        for (int r = 0; r < BATCH; r++) {
            int v = (int)batch[r * D];
            CHECK(batch[r * D + 1] == batch[r * D] && batch[r * D + 2] == batch[r * D], "row torn");
            CHECK(v >= 0 && v < ROWS, "row %d from outside the first fill", v);
            dup += seen[v]++;
            sorted &= batch[r * D] > prev;
            prev = batch[r * D];
        }
    }
    CHECK(dup == 0, "%d rows served twice before a refill", dup);
    CHECK(!sorted, "the buffer is not shuffled");
    CHECK(c.next == ROWS + ROWS / 2, "refill read %lld rows in all, want %d", (long long)c.next, ROWS + ROWS / 2);
    CHECK(b.refills == 2, "refills %lld", (long long)b.refills);

    /* After the refill the buffer holds the unread old rows and the new half, each exactly once. */
    unsigned char held[4096] = {0};
    for (int64_t r = 0; r < ROWS; r++) held[(int)((float *)b.data)[r * D]]++;
    int served_again = 0, missing_new = 0;
    for (int v = 0; v < ROWS; v++) served_again += seen[v] && held[v];
    for (int v = ROWS; v < ROWS + ROWS / 2; v++) missing_new += held[v] != 1;
    CHECK(served_again == 0, "%d served rows are still in the buffer", served_again);
    CHECK(missing_new == 0, "%d new rows missing from the buffer", missing_new);
    saefw_buffer_free(&b);

    /* bf16 storage rounds to nearest even. */
    c.next = 0;
    saefw_buffer bb;
    REQUIRE(saefw_buffer_init(&bb, &src, ROWS, BATCH, SAEFW_BUF_BF16, 3, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_buffer_next(&bb, batch, err, sizeof err) == 0, "%s", err);
    CHECK(saefw_bf16_to_f32(saefw_f32_to_bf16(257.0f)) == 256.0f, "bf16(257) != 256");
    for (int r = 0; r < BATCH; r++) CHECK(batch[r * D] == (float)(int)batch[r * D], "bf16 value %g", batch[r * D]);
    CHECK(saefw_buffer_bytes(&bb) == (size_t)ROWS * D * 2, "bf16 buffer bytes %zu", saefw_buffer_bytes(&bb));
    saefw_buffer_free(&bb);

    /* Bad sizes. */
    CHECK(saefw_buffer_init(&bb, &src, 8, BATCH, SAEFW_BUF_F32, 3, err, sizeof err) != 0 && strstr(err, "too small"),
          "tiny buffer accepted: %s", err);

    /* File source: rows in order, wrap-around with a log line, width mismatch. */
    const char *tmp = t_tmpdir("test_buffer");
    char path[2048];
    snprintf(path, sizeof path, "%s/acts.npy", tmp);
    float data[10 * D];
    for (int k = 0; k < 10 * D; k++) data[k] = (float)(k / D);
    int64_t shape[2] = {10, D};
    REQUIRE(saefw_npy_write(path, SAEFW_DT_F32, 2, shape, data, err, sizeof err) == 0, "%s", err);
    saefw_source *fs = NULL;
    CHECK(saefw_source_file(path, NULL, D + 1, 0, &fs, err, sizeof err) != 0 &&
              strstr(err, "activation width is 3, expected d_in = 4"),
          "width error: %s", err);
    REQUIRE(saefw_source_file(path, NULL, D, 0, &fs, err, sizeof err) == 0, "%s", err);
    fs->log = on_log;
    float rows[14 * D];
    REQUIRE(fs->next(fs, rows, 14, err, sizeof err) == 0, "%s", err);
    int in_order = 1;
    for (int r = 0; r < 14; r++) in_order &= rows[r * D] == (float)(r % 10);
    CHECK(in_order, "file rows out of order across the wrap");
    CHECK(wraps == 1, "wrap-around logged %d times", wraps);
    saefw_source_free(fs);

    /* A file cut short while a run reads it: an error naming the file, not a SIGBUS. BF16 rows go
     * through the conversion, F32 ones straight into the batch. */
    enum { BIG = 4096 };
    static uint16_t half[BIG * D];
    static float full[BIG * D], got[BIG * D];
    for (int k = 0; k < BIG * D; k++) {
        full[k] = (float)((k / D) % 256); /* whole numbers up to 256: exact in bf16 */
        half[k] = saefw_f32_to_bf16(full[k]);
    }
    const char *kinds[2] = {"BF16", "F32"};
    for (int f = 0; f < 2; f++) {
        char p2[2100];
        snprintf(p2, sizeof p2, "%s/acts_%s.safetensors", tmp, kinds[f]);
        int64_t bshape[2] = {BIG, D};
        saefw_tensor_ref ref = {"acts", f == 0 ? SAEFW_DT_BF16 : SAEFW_DT_F32, 2, bshape,
                                f == 0 ? (void *)half : (void *)full};
        REQUIRE(saefw_safetensors_write(p2, &ref, 1, NULL, 0, err, sizeof err) == 0, "%s", err);
        REQUIRE(saefw_source_file(p2, NULL, D, 0, &fs, err, sizeof err) == 0, "%s", err);
        REQUIRE(fs->next(fs, got, BIG / 2, err, sizeof err) == 0, "%s", err);
        CHECK(memcmp(got, full, sizeof(float) * (BIG / 2) * D) == 0, "%s rows read wrong", kinds[f]);
        REQUIRE(truncate(p2, 4096) == 0, "truncate %s", p2);
        err[0] = 0;
        CHECK(fs->next(fs, got, BIG / 2, err, sizeof err) != 0 && strstr(err, p2) && strstr(err, "cut short"),
              "%s file cut short: %s", kinds[f], err);
        saefw_source_free(fs);
    }
    return t_finish("test_buffer");
}
