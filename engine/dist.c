/* Data-parallel ranks over MPI (OpenMPI), or a single process when MPI is not built in or the process
 * was not started by mpirun. Sums are added in rank order on rank 0 and broadcast: the result is the
 * same bits on every rank and on every run with the same number of ranks. */
#include "dist.h"

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

#ifdef SAEFW_HAVE_MPI

int saefw_dist_built(void) { return 1; }

static int g_mpi = 0; /* MPI_Init ran */

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

/* Pieces small enough for an int count and a modest receive buffer on rank 0. */
#define PIECE ((int64_t)1 << 22)

#define DEFINE_SUM(NAME, T, MPI_T)                                                                                     \
    int NAME(T *data, int64_t n, char *err, size_t errlen) {                                                           \
        if (g_size == 1) return 0;                                                                                     \
        T *tmp = NULL;                                                                                                 \
        const int64_t piece = n < PIECE ? n : PIECE;                                                                   \
        if (g_rank == 0 && piece > 0 && !(tmp = saefw_malloc(sizeof(T) * (size_t)piece, err, errlen))) return -1;      \
        int rc = MPI_SUCCESS;                                                                                          \
        for (int64_t o = 0; o < n && rc == MPI_SUCCESS; o += piece) {                                                  \
            const int k = (int)(n - o < piece ? n - o : piece);                                                        \
            if (g_rank != 0) {                                                                                         \
                rc = MPI_Send(data + o, k, MPI_T, 0, 0, MPI_COMM_WORLD);                                               \
                continue;                                                                                              \
            }                                                                                                          \
            for (int r = 1; r < g_size && rc == MPI_SUCCESS; r++) {                                                    \
                rc = MPI_Recv(tmp, k, MPI_T, r, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);                                 \
                for (int i = 0; i < k && rc == MPI_SUCCESS; i++) data[o + i] += tmp[i];                                \
            }                                                                                                          \
        }                                                                                                              \
        for (int64_t o = 0; o < n && rc == MPI_SUCCESS; o += piece)                                                    \
            rc = MPI_Bcast(data + o, (int)(n - o < piece ? n - o : piece), MPI_T, 0, MPI_COMM_WORLD);                  \
        free(tmp);                                                                                                     \
        return rc == MPI_SUCCESS ? 0 : mpi_err(rc, "sum", err, errlen);                                                \
    }

DEFINE_SUM(saefw_dist_sum_f32, float, MPI_FLOAT)
DEFINE_SUM(saefw_dist_sum_f64, double, MPI_DOUBLE)

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
int saefw_dist_bcast(void *data, size_t n, int root, char *err, size_t errlen) { return 0; }
int saefw_dist_barrier(char *err, size_t errlen) { return 0; }
int saefw_dist_check_same(uint64_t hash, const char *what, char *err, size_t errlen) { return 0; }

#endif
