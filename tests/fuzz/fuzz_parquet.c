/* Fuzz target: the Parquet reader (footer and Thrift metadata at saefw_parquet_open, then every
 * column of every row group through saefw_parquet_read: page headers, levels, encodings, codecs).
 * Input: the file's bytes. Accepted columns must keep the batch's promises: offsets start at 0, never
 * go down and end at the number of values or bytes; integer columns have one value per row. */
#include <string.h>

#include "fuzz_common.h"
#include "parquet.h"

/* Values per column chunk: RLE runs can claim billions in a few bytes; a real reader sets its own cap. */
#define FUZZ_MAX_VALUES (1 << 20)

static void check_batch(const saefw_parquet_column *c, const saefw_parquet_batch *b) {
    FUZZ_CHECK(b->rows >= 0 && b->n >= 0, "negative rows %lld or values %lld", (long long)b->rows, (long long)b->n);
    if (c->kind & SAEFW_PQ_INTS) {
        FUZZ_CHECK(b->n == b->rows, "int column: %lld values for %lld rows", (long long)b->n, (long long)b->rows);
        int64_t sum = 0;
        for (int64_t i = 0; i < b->n; i++) sum += b->values[i] & 1; /* every value is read: ASan checks the array */
        (void)sum;
        return;
    }
    int64_t count = c->kind == SAEFW_PQ_STRING ? b->n : b->rows;
    if (c->kind == SAEFW_PQ_STRING)
        FUZZ_CHECK(b->n + b->nulls_skipped == b->rows, "%lld strings + %lld nulls for %lld rows", (long long)b->n,
                   (long long)b->nulls_skipped, (long long)b->rows);
    FUZZ_CHECK(b->offsets[0] == 0, "offsets start at %lld", (long long)b->offsets[0]);
    for (int64_t i = 0; i < count; i++)
        FUZZ_CHECK(b->offsets[i + 1] >= b->offsets[i], "offsets go down at %lld", (long long)i);
    if (c->kind == SAEFW_PQ_STRING) {
        int64_t sum = 0;
        for (int64_t i = 0; i < b->offsets[count]; i++) sum += b->bytes[i];
        (void)sum;
    } else {
        FUZZ_CHECK(b->offsets[count] == b->n, "offsets end at %lld, values %lld", (long long)b->offsets[count],
                   (long long)b->n);
        int64_t sum = 0;
        for (int64_t i = 0; i < b->n; i++) sum += b->values[i] & 1;
        (void)sum;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > (1u << 20)) return 0;
    char path[1024];
    fuzz_path(path, sizeof path, "input.parquet");
    fuzz_write(path, data, size);
    saefw_parquet *pq = NULL;
    char err[1024] = "";
    if (saefw_parquet_open(path, &pq, err, sizeof err) != 0) {
        fuzz_note("%s", err);
        FUZZ_CHECK(pq == NULL && err[0] && !strchr(err, '\n'), "refused without a one-line message, or left an object");
        return 0;
    }
    int n_rg = saefw_parquet_row_groups(pq), n_col = saefw_parquet_columns(pq);
    FUZZ_CHECK(n_rg >= 0 && n_col > 0, "%d row groups, %d columns", n_rg, n_col);
    fuzz_note("opened: %lld rows, %d row groups, %d columns", (long long)saefw_parquet_rows(pq), n_rg, n_col);
    saefw_parquet_batch b;
    saefw_parquet_batch_init(&b);
    b.max_values = FUZZ_MAX_VALUES;
    /* A few row groups per input keeps each run quick; the footer can list thousands. */
    for (int rg = 0; rg < n_rg && rg < 8; rg++) {
        for (int c = 0; c < n_col; c++) {
            const saefw_parquet_column *info = saefw_parquet_column_info(pq, c);
            FUZZ_CHECK(info && info->name && info->type, "column %d without name or type", c);
            err[0] = 0;
            if (saefw_parquet_read(pq, rg, c, &b, err, sizeof err) != 0) {
                fuzz_note("%s", err);
                FUZZ_CHECK(err[0] && !strchr(err, '\n') && strstr(err, "row group") && strstr(err, info->name),
                           "read refused without a one-line message naming row group and column: '%s'", err);
                FUZZ_CHECK(info->kind != SAEFW_PQ_OTHER || strstr(err, "cannot be read"), "other column: '%s'", err);
                continue;
            }
            FUZZ_CHECK(info->kind != SAEFW_PQ_OTHER, "column '%s' of type %s decoded", info->name, info->type);
            fuzz_note("row group %d, column '%s' (%s): %lld rows, %lld values", rg, info->name, info->type,
                      (long long)b.rows, (long long)b.n);
            check_batch(info, &b);
        }
    }
    saefw_parquet_batch_free(&b);
    saefw_parquet_close(pq);
    return 0;
}
