/* Fuzz target: token files (saefw_tokens_open, then rows read in file order, through the shuffled
 * stream across a pass boundary, and at random). Byte 0 picks the file kind (low two bits: a tensor
 * file named .npy, or a raw .bin of uint16, int32 or int64; bit 2: ask for the tensor "tokens"),
 * byte 1 the row length, byte 2 flags (bit 0: BOS overwrite with byte 3, bit 1: shuffle, bit 2:
 * a vocabulary of 50 ids), byte 3 the BOS id; the file's bytes follow. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "rng.h"
#include "tokens.h"

#define MAX_VOCAB 50
#define MAX_READ_ROWS 40 /* rows read through the stream per input, so a long file stays quick */

static void on_log(void *ud, const char *msg) {
    FUZZ_CHECK(msg && msg[0], "empty log message");
    ++*(int *)ud;
}

static void check_row(const int32_t *row, int64_t seq_len, int64_t max_id, int64_t bos) {
    for (int64_t i = 0; i < seq_len; i++) {
        FUZZ_CHECK(row[i] >= 0 && (max_id <= 0 || row[i] < max_id), "token %d at %lld passed the range check",
                   (int)row[i], (long long)i);
    }
    if (bos >= 0) FUZZ_CHECK(row[0] == bos, "BOS %lld not applied (got %d)", (long long)bos, (int)row[0]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 4 || size > (1u << 20)) return 0;
    static const char *const bin_dtypes[] = {NULL, "uint16", "int32", "int64"};
    int kind = data[0] & 3;
    int64_t seq_len;
    switch (data[1]) {
    case 255: seq_len = INT64_MAX; break;
    case 254: seq_len = 1; break;
    case 253: seq_len = 0; break;
    case 252: seq_len = -5; break;
    default: seq_len = 2 + data[1] % 31;
    }
    int64_t max_id = data[2] & 4 ? MAX_VOCAB : 0;
    int64_t bos = data[2] & 1 ? data[3] : -1;

    char path[1024];
    fuzz_path(path, sizeof path, kind ? "tokens.bin" : "tokens.npy");
    fuzz_write(path, data + 4, size - 4);
    saefw_tokens_opts o = {path, data[0] & 4 ? "tokens" : NULL, bin_dtypes[kind], seq_len,
                           bos,  data[2] & 2 ? 1 : 0,           data[3]};
    saefw_tokens *t = NULL;
    char err[1024] = "";
    int rc = saefw_tokens_open(&o, &t, err, sizeof err);
    fuzz_note("%s", rc == 0 ? "opened" : err);
    if (rc != 0) {
        FUZZ_CHECK(t == NULL && err[0] != 0, "refused token file without a message, or left an object");
        return 0;
    }
    FUZZ_CHECK(seq_len >= 2 && seq_len <= 32, "accepted seq_len %lld", (long long)seq_len);
    int64_t rows = saefw_tokens_rows(t);
    FUZZ_CHECK(rows > 0 && saefw_tokens_seq_len(t) == seq_len, "rows %lld, seq_len %lld", (long long)rows,
               (long long)saefw_tokens_seq_len(t));
    int logs = 0;
    saefw_tokens_set_log(t, on_log, &logs);
    int32_t *row = malloc((size_t)seq_len * sizeof *row);
    if (!row) {
        saefw_tokens_free(t);
        return 0;
    }
    /* Out-of-vocabulary ids are a normal refusal; accepted rows must honour the range. */
    int64_t probe[] = {0, rows / 2, rows - 1};
    for (size_t k = 0; k < sizeof probe / sizeof probe[0]; k++)
        if (saefw_tokens_row(t, probe[k], row, max_id, err, sizeof err) == 0) check_row(row, seq_len, max_id, bos);
    FUZZ_CHECK(saefw_tokens_row(t, rows, row, max_id, err, sizeof err) != 0, "row past the end accepted");
    FUZZ_CHECK(saefw_tokens_row(t, -1, row, max_id, err, sizeof err) != 0, "row -1 accepted");
    int64_t n = rows + 1 < MAX_READ_ROWS ? rows + 1 : MAX_READ_ROWS;
    int ok = 1;
    for (int64_t k = 0; k < n && ok; k++) {
        ok = saefw_tokens_next(t, row, 1, max_id, err, sizeof err) == 0;
        if (ok) check_row(row, seq_len, max_id, bos);
    }
    if (ok && n == rows + 1) FUZZ_CHECK(saefw_tokens_pass(t) == 1 && logs == 1, "no new pass after every row");
    saefw_rng rng;
    saefw_rng_seed(&rng, data[3]);
    for (int k = 0; k < 4; k++)
        if (saefw_tokens_sample(t, &rng, row, 1, max_id, err, sizeof err) == 0) check_row(row, seq_len, max_id, bos);
    free(row);
    saefw_tokens_free(t);
    return 0;
}
