/* bench_tokens: reading the training stream from a token file (the token cache of a Parquet dataset, or
 * any token file) as the buffer's refills do: shuffled rows of 128 with BOS, read with pread. Prints
 * tokens/s and the share of a seed-config run that reading takes: one refill reads batch_size *
 * buffer_mult / 2 = 786432 tokens (the buffer refills half its rows) for 192 steps of about 2 s.
 *
 *   bench_tokens FILE [--seq_len 128] [--tokens N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokens.h"
#include "util.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_tokens FILE [--seq_len 128] [--tokens N]\n");
        return 2;
    }
    int64_t seq_len = 128, want = 8 * 786432;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--seq_len")) seq_len = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--tokens")) want = (int64_t)atof(argv[i + 1]);
        else {
            fprintf(stderr, "bench_tokens: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    saefw_tokens_opts o = {.path = argv[1], .seq_len = seq_len, .bos = 0, .shuffle = 1, .seed = SAEFW_DEFAULT_SEED};
    saefw_tokens *t = NULL;
    char err[1024];
    if (saefw_tokens_open(&o, &t, err, sizeof err) != 0) {
        fprintf(stderr, "bench_tokens: %s\n", err);
        return 1;
    }
    const int64_t rows = 6144; /* one call per half refill of the seed's buffer (786432 tokens) */
    int32_t *out = malloc(sizeof(int32_t) * (size_t)(rows * seq_len));
    if (!out) return 1;
    int64_t done = 0;
    const double t0 = saefw_now();
    while (done < want) {
        if (saefw_tokens_next(t, out, rows, 0, err, sizeof err) != 0) {
            fprintf(stderr, "bench_tokens: %s\n", err);
            return 1;
        }
        done += rows * seq_len;
    }
    const double s = saefw_now() - t0, rate = (double)done / s;
    /* A seed-config run: 4096 tokens per step of about 2 s (bench_sae), so 2048 tokens/s of training. */
    printf("bench_tokens: %lld token rows of %lld in %s; read %lld tokens shuffled in %.3f s: %.1f M tokens/s; "
           "share of a seed-config run (2048 tokens/s of training): %.4f %%\n",
           (long long)saefw_tokens_rows(t), (long long)seq_len, argv[1], (long long)done, s, rate / 1e6,
           100.0 * 2048.0 / rate);
    printf("RESULT tokens_read_per_s %.0f\n", rate);
    free(out);
    saefw_tokens_free(t);
    return 0;
}
