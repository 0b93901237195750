/* Reading the training stream from a token file as the buffer's refills do (shuffled rows with BOS,
 * read with pread, 6144 rows per call: half a refill of the seed's buffer), shared by bench_tokens
 * and bench_model. */
#ifndef SAEFW_BENCH_TOKENS_READ_H
#define SAEFW_BENCH_TOKENS_READ_H

#include <stdlib.h>

#include "tokens.h"
#include "util.h"

/* Read at least `want` tokens of path in shuffled rows of seq_len; returns tokens/s, or -1 with err.
 * *rows gets the file's row count and *read the tokens read (either may be NULL). */
static double bench_tokens_read(const char *path, int64_t seq_len, int64_t want, int64_t *rows, int64_t *read,
                                char *err, size_t errlen) {
    saefw_tokens_opts o = {.path = path, .seq_len = seq_len, .bos = 0, .shuffle = 1, .seed = SAEFW_DEFAULT_SEED};
    saefw_tokens *t = NULL;
    if (saefw_tokens_open(&o, &t, err, errlen) != 0) return -1;
    const int64_t chunk = 6144; /* one call per half refill of the seed's buffer (786432 tokens) */
    int32_t *out = malloc(sizeof(int32_t) * (size_t)(chunk * seq_len));
    if (!out) {
        saefw_tokens_free(t);
        saefw_errf(err, errlen, "out of memory");
        return -1;
    }
    int64_t done = 0;
    const double t0 = saefw_now();
    while (done < want) {
        if (saefw_tokens_next(t, out, chunk, 0, err, errlen) != 0) {
            free(out);
            saefw_tokens_free(t);
            return -1;
        }
        done += chunk * seq_len;
    }
    const double s = saefw_now() - t0;
    if (rows) *rows = saefw_tokens_rows(t);
    if (read) *read = done;
    free(out);
    saefw_tokens_free(t);
    return (double)done / (s > 1e-9 ? s : 1e-9);
}

#endif
