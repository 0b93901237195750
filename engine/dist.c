/* Data-parallel ranks over MPI (OpenMPI), or a single process when MPI is not built in or the process
 * was not started by mpirun. Sums go around a ring in an order fixed by the number of ranks (not
 * MPI_Allreduce, whose order is the implementation's): the result is the same bits on every rank and
 * on every run with the same number of ranks. */
#include "dist.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#ifdef SAEFW_HAVE_MPI
#include <mpi.h>
#endif

static int g_rank = 0, g_size = 1;

uint64_t saefw_fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

int saefw_dist_rank(void) { return g_rank; }
int saefw_dist_size(void) { return g_size; }

void saefw_dist_share(int64_t n, int64_t *lo, int64_t *count) {
    const int64_t a = n * g_rank / g_size, b = n * (g_rank + 1) / g_size;
    *lo = a;
    *count = b - a;
}

uint64_t saefw_dist_rank_seed(uint64_t seed) {
    if (g_rank == 0) return seed;
    uint64_t x = seed ^ (0x9e3779b97f4a7c15ULL * (uint64_t)g_rank);
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

#ifdef SAEFW_HAVE_MPI

int saefw_dist_built(void) { return 1; }

static int g_mpi = 0;                      /* MPI_Init ran */
static int64_t g_piece = (int64_t)1 << 22; /* elements per piece of a sum (SAEFW_DIST_PIECE in tests) */

/* Started by mpirun (or another PMI launcher): only then is MPI initialised, so that a plain run
 * stays the single process it always was. */
static int launched(void) { return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_SIZE"); }

static int mpi_err(int rc, const char *what, char *err, size_t errlen) {
    char msg[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return saefw_errf(err, errlen, "MPI %s failed on rank %d: %s", what, g_rank, msg);
}

int saefw_dist_init(int *argc, char ***argv, char *err, size_t errlen) {
    if (!launched()) return 0;
    int provided = 0;
    /* Only the main thread calls MPI; the engine's worker threads never do. */
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return saefw_errf(err, errlen, "MPI_Init_thread failed");
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    /* Tests set smaller pieces to cover several segments with little data. */
    const char *piece = getenv("SAEFW_DIST_PIECE");
    if (piece && atoll(piece) > 0) g_piece = atoll(piece);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    g_mpi = 1;
    return 0;
}

void saefw_dist_finalize(void) {
    if (g_mpi) MPI_Finalize();
    g_mpi = 0;
}

void saefw_dist_abort(int code) {
    if (g_mpi) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

/* The sum is a ring all-reduce in an order fixed by the rank count alone. The data goes in segments
 * of P pieces (each piece at most PIECE elements: an int count and a bounded receive buffer). In the
 * reduce-scatter, piece c travels around the ring from rank c, each rank adding its own values to the
 * partial sum it received, so piece c is ((x_c + x_c+1) + ...) + x_c-1 (ranks mod P), complete on
 * rank c - 1; the all-gather then passes the complete pieces around. Each link carries 2 (P - 1) / P
 * of the data, whatever P is. */
#define PIECE g_piece

static int64_t piece_lo(int64_t L, int P, int c) { return L * c / P; }

#define DEFINE_SUM(NAME, T, MPI_T)                                                                                     \
    int NAME(T *data, int64_t n, char *err, size_t errlen) {                                                           \
        if (g_size == 1 || n <= 0) return 0;                                                                           \
        const int P = g_size, r = g_rank, next = (r + 1) % P, prev = (r + P - 1) % P;                                  \
        const int64_t seg = PIECE * P, first = n < seg ? n : seg;                                                      \
        T *tmp = saefw_malloc(sizeof(T) * (size_t)(first / P + 1), err, errlen);                                       \
        if (!tmp) return -1;                                                                                           \
        int rc = MPI_SUCCESS;                                                                                          \
        for (int64_t o = 0; o < n && rc == MPI_SUCCESS; o += seg) {                                                    \
            const int64_t L = n - o < seg ? n - o : seg;                                                               \
            T *base = data + o;                                                                                        \
            for (int s = 0; s < P - 1 && rc == MPI_SUCCESS; s++) {                                                     \
                const int sc = (r - s + P) % P, rcv = (r - s - 1 + 2 * P) % P;                                         \
                const int64_t slo = piece_lo(L, P, sc), rlo = piece_lo(L, P, rcv);                                     \
                const int sn = (int)(piece_lo(L, P, sc + 1) - slo), rn = (int)(piece_lo(L, P, rcv + 1) - rlo);         \
                rc = MPI_Sendrecv(base + slo, sn, MPI_T, next, 1, tmp, rn, MPI_T, prev, 1, MPI_COMM_WORLD,             \
                                  MPI_STATUS_IGNORE);                                                                  \
                for (int i = 0; i < rn && rc == MPI_SUCCESS; i++) base[rlo + i] = tmp[i] + base[rlo + i];              \
            }                                                                                                          \
            for (int s = 0; s < P - 1 && rc == MPI_SUCCESS; s++) {                                                     \
                const int sc = (r + 1 - s + P) % P, rcv = (r - s + P) % P;                                             \
                const int64_t slo = piece_lo(L, P, sc), rlo = piece_lo(L, P, rcv);                                     \
                const int sn = (int)(piece_lo(L, P, sc + 1) - slo), rn = (int)(piece_lo(L, P, rcv + 1) - rlo);         \
                rc = MPI_Sendrecv(base + slo, sn, MPI_T, next, 2, base + rlo, rn, MPI_T, prev, 2, MPI_COMM_WORLD,      \
                                  MPI_STATUS_IGNORE);                                                                  \
            }                                                                                                          \
        }                                                                                                              \
        free(tmp);                                                                                                     \
        return rc == MPI_SUCCESS ? 0 : mpi_err(rc, "sum", err, errlen);                                                \
    }

DEFINE_SUM(saefw_dist_sum_f32, float, MPI_FLOAT)
DEFINE_SUM(saefw_dist_sum_f64, double, MPI_DOUBLE)

/* One ring exchange of a reduce-scatter or all-gather step: send [sp, sp + sn) to the next rank and
 * receive [rp, rp + rn) from the previous one, in messages of at most PIECE elements (tmp [PIECE]);
 * add: the received values are added to this rank's (received + own), else they replace them. Every
 * rank makes the same number of exchanges, for the longest range (most, of all ranks), so that a
 * message never meets the next step's. */
static int ring_exchange(float *data, int64_t sp, int64_t sn, int64_t rp, int64_t rn, int64_t most, float *tmp, int add,
                         int tag) {
    const int next = (g_rank + 1) % g_size, prev = (g_rank + g_size - 1) % g_size;
    int rc = MPI_SUCCESS;
    for (int64_t q = 0; q < most && rc == MPI_SUCCESS; q += PIECE) {
        const int s = (int)(sn - q < 0 ? 0 : sn - q < PIECE ? sn - q : PIECE);
        const int k = (int)(rn - q < 0 ? 0 : rn - q < PIECE ? rn - q : PIECE);
        float *into = add ? tmp : data + rp + q;
        rc = MPI_Sendrecv(data + sp + q, s, MPI_FLOAT, next, tag, into, k, MPI_FLOAT, prev, tag, MPI_COMM_WORLD,
                          MPI_STATUS_IGNORE);
        if (add)
            for (int i = 0; i < k && rc == MPI_SUCCESS; i++) data[rp + q + i] = tmp[i] + data[rp + q + i];
    }
    return rc;
}

/* Range of owner o in a layout is piece o + 1 of the ring: it starts at rank o + 1 and ends complete on
 * rank o. */
static int64_t own_lo(const int64_t *b, int c) { return b[(c + g_size - 1) % g_size]; }
static int64_t own_len(const int64_t *b, int c) {
    const int o = (c + g_size - 1) % g_size;
    return b[o + 1] - b[o];
}
static int64_t longest(const int64_t *b) {
    int64_t m = 0;
    for (int q = 0; q < g_size; q++) m = b[q + 1] - b[q] > m ? b[q + 1] - b[q] : m;
    return m;
}

int saefw_dist_reduce_scatter_f32(float *data, int64_t n, const int64_t *bounds, char *err, size_t errlen) {
    if (g_size == 1 || n <= 0) return 0;
    if (bounds[0] != 0 || bounds[g_size] != n)
        return saefw_errf(err, errlen, "reduce-scatter: bounds do not cover the data");
    const int P = g_size, r = g_rank;
    float *tmp = saefw_malloc(sizeof(float) * (size_t)(n < PIECE ? n : PIECE), err, errlen);
    if (!tmp) return -1;
    int rc = MPI_SUCCESS;
    for (int s = 0; s < P - 1 && rc == MPI_SUCCESS; s++) {
        const int sc = (r - s + P) % P, rcv = (r - s - 1 + 2 * P) % P;
        rc = ring_exchange(data, own_lo(bounds, sc), own_len(bounds, sc), own_lo(bounds, rcv), own_len(bounds, rcv),
                           longest(bounds), tmp, 1, 3);
    }
    free(tmp);
    return rc == MPI_SUCCESS ? 0 : mpi_err(rc, "reduce-scatter", err, errlen);
}

int saefw_dist_all_gather_f32(float *data, int64_t n, const int64_t *bounds, char *err, size_t errlen) {
    if (g_size == 1 || n <= 0) return 0;
    if (bounds[0] != 0 || bounds[g_size] != n)
        return saefw_errf(err, errlen, "all-gather: bounds do not cover the data");
    const int P = g_size, r = g_rank;
    int rc = MPI_SUCCESS;
    for (int s = 0; s < P - 1 && rc == MPI_SUCCESS; s++) {
        const int sc = (r + 1 - s + P) % P, rcv = (r - s + P) % P;
        rc = ring_exchange(data, own_lo(bounds, sc), own_len(bounds, sc), own_lo(bounds, rcv), own_len(bounds, rcv),
                           longest(bounds), NULL, 0, 4);
    }
    return rc == MPI_SUCCESS ? 0 : mpi_err(rc, "all-gather", err, errlen);
}

int saefw_dist_gather_f32(const float *part, int64_t off, int64_t n, float *full, int64_t total, char *err,
                          size_t errlen) {
    if (g_size == 1) {
        if (off != 0 || n != total) return saefw_errf(err, errlen, "gather: one rank's part must be the whole");
        if (full != part && n > 0) memcpy(full, part, sizeof(float) * (size_t)n);
        return 0;
    }
    /* A failure on rank 0 returns while the others wait in the gather: the caller ends the job
     * (saefw_dist_abort), as for any failed rank. */
    int64_t mine[2] = {off, n}, *all = NULL;
    int *cnt = NULL, *dsp = NULL;
    if (g_rank == 0) {
        all = saefw_malloc(sizeof(int64_t) * 2 * (size_t)g_size, err, errlen);
        cnt = all ? saefw_malloc(sizeof(int) * 2 * (size_t)g_size, err, errlen) : NULL;
        if (!cnt) {
            free(all);
            return -1;
        }
        dsp = cnt + g_size;
    }
    int rc = MPI_Gather(mine, 2, MPI_INT64_T, all, 2, MPI_INT64_T, 0, MPI_COMM_WORLD), bad = 0;
    if (rc == MPI_SUCCESS && g_rank == 0) {
        int64_t at = 0;
        for (int q = 0; q < g_size; q++) {
            /* An empty part may have any offset. */
            if ((all[2 * q + 1] > 0 && all[2 * q] != at) || all[2 * q + 1] < 0 || all[2 * q + 1] > INT32_MAX) bad = 1;
            cnt[q] = (int)all[2 * q + 1];
            dsp[q] = cnt[q] > 0 ? (int)all[2 * q] : 0;
            at += all[2 * q + 1];
        }
        if (at != total || total > INT32_MAX) bad = 1;
    }
    if (bad) {
        free(all);
        free(cnt);
        return saefw_errf(err, errlen, "gather: the ranks' parts do not tile the %lld elements", (long long)total);
    }
    if (rc == MPI_SUCCESS) rc = MPI_Gatherv(part, (int)n, MPI_FLOAT, full, cnt, dsp, MPI_FLOAT, 0, MPI_COMM_WORLD);
    free(all);
    free(cnt);
    return rc == MPI_SUCCESS ? 0 : mpi_err(rc, "gather", err, errlen);
}

int saefw_dist_max_i64(int64_t *data, int64_t n, char *err, size_t errlen) {
    if (g_size == 1 || n == 0) return 0;
    int rc = MPI_Allreduce(MPI_IN_PLACE, data, (int)n, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? 0 : mpi_err(rc, "max", err, errlen);
}

int saefw_dist_bcast(void *data, size_t n, int root, char *err, size_t errlen) {
    if (g_size == 1 || n == 0) return 0;
    int rc = MPI_Bcast(data, (int)n, MPI_BYTE, root, MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? 0 : mpi_err(rc, "broadcast", err, errlen);
}

int saefw_dist_barrier(char *err, size_t errlen) {
    if (g_size == 1) return 0;
    int rc = MPI_Barrier(MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? 0 : mpi_err(rc, "barrier", err, errlen);
}

int saefw_dist_gather_shares(void *data, int64_t n, size_t item, char *err, size_t errlen) {
    if (g_size == 1 || n <= 0) return 0;
    int *counts = saefw_malloc(sizeof(int) * 2 * (size_t)g_size, err, errlen);
    if (!counts) return -1;
    int *displs = counts + g_size;
    for (int r = 0; r < g_size; r++) {
        const int64_t a = n * r / g_size, b = n * (r + 1) / g_size;
        if ((b - a) * (int64_t)item > INT_MAX || a * (int64_t)item > INT_MAX) {
            free(counts);
            return saefw_errf(err, errlen, "gathering %lld items of %zu bytes: more than 2 GiB", (long long)n, item);
        }
        counts[r] = (int)((b - a) * (int64_t)item);
        displs[r] = (int)(a * (int64_t)item);
    }
    int rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, counts, displs, MPI_BYTE, MPI_COMM_WORLD);
    free(counts);
    return rc == MPI_SUCCESS ? 0 : mpi_err(rc, "gather", err, errlen);
}

int saefw_dist_check_same(uint64_t hash, const char *what, char *err, size_t errlen) {
    if (g_size == 1) return 0;
    uint64_t *all = saefw_malloc(sizeof(uint64_t) * (size_t)g_size, err, errlen);
    if (!all) return -1;
    int rc = MPI_Allgather(&hash, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) {
        free(all);
        return mpi_err(rc, "allgather", err, errlen);
    }
    int bad = 0;
    for (int r = 1; r < g_size && !bad; r++)
        if (all[r] != all[0]) bad = r;
    if (bad)
        saefw_errf(err, errlen,
                   "rank %d's %s differs from rank 0's (hash %016llx against %016llx): every rank must run the "
                   "same script with the same options",
                   bad, what, (unsigned long long)all[bad], (unsigned long long)all[0]);
    free(all);
    return bad ? -1 : 0;
}

#else

int saefw_dist_built(void) { return 0; }
int saefw_dist_init(int *argc, char ***argv, char *err, size_t errlen) { return 0; }
void saefw_dist_finalize(void) {}
void saefw_dist_abort(int code) { exit(code); }
int saefw_dist_sum_f32(float *data, int64_t n, char *err, size_t errlen) { return 0; }
int saefw_dist_sum_f64(double *data, int64_t n, char *err, size_t errlen) { return 0; }
int saefw_dist_max_i64(int64_t *data, int64_t n, char *err, size_t errlen) { return 0; }
int saefw_dist_reduce_scatter_f32(float *data, int64_t n, const int64_t *bounds, char *err, size_t errlen) { return 0; }
int saefw_dist_all_gather_f32(float *data, int64_t n, const int64_t *bounds, char *err, size_t errlen) { return 0; }
int saefw_dist_gather_f32(const float *part, int64_t off, int64_t n, float *full, int64_t total, char *err,
                          size_t errlen) {
    if (off != 0 || n != total) return saefw_errf(err, errlen, "gather: one rank's part must be the whole");
    if (full != part && n > 0) memcpy(full, part, sizeof(float) * (size_t)n);
    return 0;
}
int saefw_dist_bcast(void *data, size_t n, int root, char *err, size_t errlen) { return 0; }
int saefw_dist_gather_shares(void *data, int64_t n, size_t item, char *err, size_t errlen) { return 0; }
int saefw_dist_barrier(char *err, size_t errlen) { return 0; }
int saefw_dist_check_same(uint64_t hash, const char *what, char *err, size_t errlen) { return 0; }

#endif
