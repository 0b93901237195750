/* The parallel-for of the training step: a persistent pool of saefw_threads() - 1 worker threads that
 * sleep between calls, plus the calling thread, each running one contiguous range of the index space. */
#include "parallel.h"

#include <cblas.h>
#include <pthread.h>
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

/* One job at a time: the caller publishes (fn, ctx, n, parts), bumps `gen` and wakes the workers;
 * worker k (from 1) runs part k and the caller part 0; the last worker to finish wakes the caller. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    pthread_t *tids;
    int n_workers;   /* threads running */
    int target;      /* workers asked for; fewer run if pthread_create failed */
    uint64_t gen;    /* job counter */
    int stop;        /* workers exit at the next wake */
    int pending;     /* worker parts not finished yet */
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
