/* The parallel-for of the training step and the model: a persistent pool of saefw_threads() - 1 worker
 * threads that sleep between calls, plus the calling thread, each running one contiguous range of the
 * index space; and matrix products as fixed grids of single-threaded OpenBLAS calls on it. */
#include "parallel.h"
#include "util.h"

#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
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

int saefw_threads_arg(const char *v, int max, int *out, char *err, size_t errlen) {
    char *end = NULL;
    long n = v ? strtol(v, &end, 10) : 0;
    if (!v || !*v || *end || n < 1 || n > max)
        return saefw_errf(err, errlen, "--threads: expected a whole number from 1 to %d, got '%s'", max, v ? v : "");
    *out = (int)n;
    return 0;
}

int saefw_threads(void) { return g_threads > 0 ? g_threads : default_threads(); }

/* One job at a time: the caller publishes (fn, ctx, n, parts), bumps `gen` and wakes the workers;
 * worker k (from 1) runs part k and the caller part 0; the last worker to finish wakes the caller. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    pthread_t *tids;
    int n_workers; /* threads running */
    int target;    /* workers asked for; fewer run if pthread_create failed */
    uint64_t gen;  /* job counter */
    int stop;      /* workers exit at the next wake */
    int pending;   /* worker parts not finished yet */
    void (*fn)(void *ctx, int64_t begin, int64_t end);
    void *ctx;
    int64_t n;
    int parts;
    uint64_t start_gen; /* gen when the current workers were started */
} pool;

static pool g_pool = {
    .mu = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER, .done = PTHREAD_COND_INITIALIZER};
/* Held for a whole parallel_for: a second caller (another thread) runs its loop serially instead. */
static pthread_mutex_t g_call = PTHREAD_MUTEX_INITIALIZER;
/* Set on threads inside a parallel region, so a nested parallel_for runs serially instead of waiting
 * for itself. */
static __thread int t_inside = 0;

static void run_part(pool *p, int k) {
    int64_t begin = p->n * k / p->parts, end = p->n * (k + 1) / p->parts;
    if (begin < end) p->fn(p->ctx, begin, end);
}

static void *worker_main(void *arg) {
    const int k = (int)(intptr_t)arg;
    pool *p = &g_pool;
    t_inside = 1;
    pthread_mutex_lock(&p->mu);
    uint64_t seen = p->start_gen; /* a job published before this thread got here is still seen */
    for (;;) {
        while (p->gen == seen && !p->stop) pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop) break;
        seen = p->gen;
        int mine = k < p->parts;
        pthread_mutex_unlock(&p->mu);
        if (mine) run_part(p, k);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void stop_workers(pool *p) {
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_workers; i++) pthread_join(p->tids[i], NULL);
    p->n_workers = 0;
    p->stop = 0;
}

/* Make the pool hold `want` workers; on failure it keeps as many as could be started. Only called
 * with g_call held and no job running, so it runs when the thread count changes, never per call. */
static void resize(pool *p, int want) {
    if (p->target == want) return;
    p->target = want;
    stop_workers(p);
    free(p->tids);
    p->tids = want > 0 ? malloc(sizeof(pthread_t) * (size_t)want) : NULL;
    if (!p->tids) return;
    p->start_gen = p->gen;
    for (int i = 0; i < want; i++) {
        if (pthread_create(&p->tids[i], NULL, worker_main, (void *)(intptr_t)(i + 1)) != 0) break;
        p->n_workers = i + 1;
    }
}

void saefw_parallel_for(int64_t n, void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx) {
    if (n <= 0) return;
    int threads = saefw_threads();
    if (threads < 2 || n < 2 || t_inside || pthread_mutex_trylock(&g_call) != 0) {
        fn(ctx, 0, n);
        return;
    }
    pool *p = &g_pool;
    resize(p, threads - 1);
    int parts = 1 + p->n_workers;
    if ((int64_t)parts > n) parts = (int)n;
    if (parts < 2) {
        pthread_mutex_unlock(&g_call);
        fn(ctx, 0, n);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->parts = parts;
    p->pending = p->n_workers;
    p->gen++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);

    t_inside = 1;
    run_part(p, 0);
    t_inside = 0;

    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&g_call);
}

/* ---- blocked products ---- */

void saefw_parallel_for_blas1(int64_t n, void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx) {
    const int prev = openblas_get_num_threads();
    openblas_set_num_threads(1);
    saefw_parallel_for(n, fn, ctx);
    openblas_set_num_threads(prev);
}

/* Blocks of C in a dense product: enough for a few threads, few enough that repacking the shared
 * operand once per block stays cheap. */
#define GEMM_PARTS 8

typedef struct {
    CBLAS_TRANSPOSE ta, tb;
    int64_t M, N, K, parts;
    const float *A; /* op(A) [M, K] */
    const float *B; /* op(B) [K, N] */
    int64_t lda, ldb, ldc;
    float beta;
    const float *bias; /* [N] or NULL */
    float *C;          /* [M, N] */
    int split_rows;
} gemm_job;

static void fill_bias(float *C, int64_t ldc, int64_t rows, const float *bias, int64_t n) {
    for (int64_t r = 0; r < rows; r++) memcpy(C + r * ldc, bias, sizeof(float) * (size_t)n);
}

static void gemm_blocks(void *vctx, int64_t q0, int64_t q1) {
    const gemm_job *g = vctx;
    const float beta = g->bias ? 1.0f : g->beta;
    for (int64_t q = q0; q < q1; q++) {
        if (g->split_rows) {
            const int64_t m0 = g->M * q / g->parts, m1 = g->M * (q + 1) / g->parts;
            const float *A = g->ta == CblasNoTrans ? g->A + m0 * g->lda : g->A + m0;
            if (g->bias) fill_bias(g->C + m0 * g->ldc, g->ldc, m1 - m0, g->bias, g->N);
            cblas_sgemm(CblasRowMajor, g->ta, g->tb, (int)(m1 - m0), (int)g->N, (int)g->K, 1.0f, A, (int)g->lda, g->B,
                        (int)g->ldb, beta, g->C + m0 * g->ldc, (int)g->ldc);
        } else {
            const int64_t n0 = g->N * q / g->parts, n1 = g->N * (q + 1) / g->parts;
            const float *B = g->tb == CblasNoTrans ? g->B + n0 : g->B + n0 * g->ldb;
            if (g->bias) fill_bias(g->C + n0, g->ldc, g->M, g->bias + n0, n1 - n0);
            cblas_sgemm(CblasRowMajor, g->ta, g->tb, (int)g->M, (int)(n1 - n0), (int)g->K, 1.0f, g->A, (int)g->lda, B,
                        (int)g->ldb, beta, g->C + n0, (int)g->ldc);
        }
    }
}

static void run_gemm(gemm_job *g) {
    /* Splitting C's rows repacks all of op(B) in every block, splitting its columns all of op(A): the
     * split repacks the smaller. */
    g->split_rows = g->N < g->M;
    const int64_t dim = g->split_rows ? g->M : g->N;
    g->parts = dim < GEMM_PARTS ? dim : GEMM_PARTS;
    saefw_parallel_for_blas1(g->parts, gemm_blocks, g);
}

void saefw_sgemm_blocks(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, const float *A,
                        int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    gemm_job g = {ta, tb, M, N, K, 0, A, B, lda, ldb, ldc, beta, NULL, C, 0};
    run_gemm(&g);
}

void saefw_linear_blocks(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *W, int64_t ldw,
                         const float *bias, float *C, int64_t ldc) {
    gemm_job g = {CblasNoTrans, CblasNoTrans, M, N, K, 0, A, W, lda, ldw, ldc, 0.0f, bias, C, 0};
    run_gemm(&g);
}
