/* bench_tokens: reading the training stream from a token file (the token cache of a Parquet dataset, or
 * any token file) as the buffer's refills do: shuffled rows of 128 with BOS, read with pread. Prints
 * tokens/s and the share of a seed-config run that reading takes: one refill reads batch_size *
 * buffer_mult / 2 = 786432 tokens (the buffer refills half its rows) for 192 steps of about 2 s.
 * bench_model measures the same beside the refill share of a real training run.
 *
 *   bench_tokens FILE [--seq_len 128] [--tokens N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_tokens_read.h"

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
    char err[1024];
    int64_t rows = 0, done = 0;
    const double rate = bench_tokens_read(argv[1], seq_len, want, &rows, &done, err, sizeof err);
    if (rate < 0) {
        fprintf(stderr, "bench_tokens: %s\n", err);
        return 1;
    }
    /* A seed-config run: 4096 tokens per step of about 2 s (bench_sae), so 2048 tokens/s of training. */
    printf("bench_tokens: %lld token rows of %lld in %s; read %lld tokens shuffled: %.1f M tokens/s; "
           "share of a seed-config run (2048 tokens/s of training): %.4f %%\n",
           (long long)rows, (long long)seq_len, argv[1], (long long)done, rate / 1e6, 100.0 * 2048.0 / rate);
    printf("RESULT tokens_read_per_s %.0f\n", rate);
    return 0;
}
