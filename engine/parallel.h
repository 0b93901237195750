/* Threads for the memory-bound parts of a step (optimizer updates, projections): a parallel-for over
 * index ranges, sized like OpenBLAS (the `threads` option, else OPENBLAS_NUM_THREADS, else all cores). */
#ifndef SAEFW_PARALLEL_H
#define SAEFW_PARALLEL_H

#include <cblas.h>
#include <stddef.h>
#include <stdint.h>

/* Run fn(ctx, begin, end) over [0, n) split into contiguous ranges, one per thread; returns when all
 * are done. Ranges never overlap, so fn may write its own range without locks. */
void saefw_parallel_for(int64_t n, void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx);

/* saefw_parallel_for whose ranges call OpenBLAS single-threaded: each range's products then depend on
 * the range alone, not on OpenBLAS's thread count. */
void saefw_parallel_for_blas1(int64_t n, void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx);

/* Threads used by saefw_parallel_for and OpenBLAS; n <= 0 restores the default. */
void saefw_set_threads(int n);
int saefw_threads(void);

/* The most threads a command line may ask for. */
#define SAEFW_MAX_THREADS 4096

/* A `--threads` value: a whole number from 1 to max into *out, else -1 with err
 * ("--threads: expected a whole number from 1 to MAX, got 'V'"). */
int saefw_threads_arg(const char *v, int max, int *out, char *err, size_t errlen);

/* C = op(A) op(B) + beta C (row-major) as a fixed grid of single-threaded OpenBLAS calls on
 * saefw_parallel_for: OpenBLAS's own threads split the work by their number, and its results change
 * with it; these blocks depend on the shape only, so the results do not depend on the thread count. */
void saefw_sgemm_blocks(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, const float *A,
                        int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* C [M, N] = A [M, K] @ W [K, N] + bias [N] (bias may be NULL), on the same fixed grid; each block
 * writes the bias into its part of C first, so no pass over C runs outside the blocks. */
void saefw_linear_blocks(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *W, int64_t ldw,
                         const float *bias, float *C, int64_t ldc);

#endif
