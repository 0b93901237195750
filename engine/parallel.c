/* The parallel-for of the training step. */
#include "parallel.h"

#include <cblas.h>
#include <stdlib.h>
#include <unistd.h>

static int g_threads = 0;

static int default_threads(void) {
    const char *env = getenv("OPENBLAS_NUM_THREADS");
    int n = env ? atoi(env) : 0;
    if (n <= 0) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? n : 1;
}

void saefw_set_threads(int n) {
    g_threads = n > 0 ? n : default_threads();
    openblas_set_num_threads(g_threads);
}

int saefw_threads(void) { return g_threads > 0 ? g_threads : default_threads(); }

void saefw_parallel_for(int64_t n, void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx) {
    if (n > 0) fn(ctx, 0, n);
}
