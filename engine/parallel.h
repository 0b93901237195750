/* Threads for the memory-bound parts of a step (optimizer updates, projections): a parallel-for over
 * index ranges, sized like OpenBLAS (the `threads` option, else OPENBLAS_NUM_THREADS, else all cores). */
#ifndef SAEFW_PARALLEL_H
#define SAEFW_PARALLEL_H

#include <stdint.h>

/* Run fn(ctx, begin, end) over [0, n) split into contiguous ranges, one per thread; returns when all
 * are done. Ranges never overlap, so fn may write its own range without locks. */
void saefw_parallel_for(int64_t n, void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx);

/* Threads used by saefw_parallel_for and OpenBLAS; n <= 0 restores the default. */
void saefw_set_threads(int n);
int saefw_threads(void);

#endif
