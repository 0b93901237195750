/* Data-parallel ranks: the one small interface the engine uses for MPI (rank, size, sums in a fixed
 * order, broadcast, a configuration check, abort). Built without MPI (SAEFW_MPI off, or no OpenMPI
 * found) or run outside mpirun, it is one process of rank 0 and every call is a no-op. */
#ifndef SAEFW_DIST_H
#define SAEFW_DIST_H

#include <stddef.h>
#include <stdint.h>

/* Join the job when this process was started by mpirun (OpenMPI's or a PMI launcher's environment);
 * otherwise stay a single process without touching MPI. Call once, before any other saefw_dist_*
 * call and before threads start. -1 with err when MPI fails to start. */
int saefw_dist_init(int *argc, char ***argv, char *err, size_t errlen);
/* Leave the job (MPI_Finalize) after all ranks are done; no-op for a single process. */
void saefw_dist_finalize(void);
/* This process's rank in [0, size) and the number of ranks (1 without MPI). */
int saefw_dist_rank(void);
int saefw_dist_size(void);
/* 1 when this build has MPI compiled in. */
int saefw_dist_built(void);

/* Every rank's data [n] becomes the sum over ranks, on every rank, by a ring all-reduce whose order of
 * addition is fixed by the rank count: cut into segments of 4M x size elements (the environment's
 * SAEFW_DIST_PIECE, read at init, sets another piece size than 4M: for tests), each segment into
 * size pieces of floor-split lengths, piece c is summed as ((x_c + x_c+1) + ...) + x_c-1 (ranks mod
 * size). So the result does not depend on timing or on the MPI implementation's reduction tree; each
 * rank sends and receives 2 (size - 1) / size of the data. -1 with err on an MPI error. */
int saefw_dist_sum_f32(float *data, int64_t n, char *err, size_t errlen);
int saefw_dist_sum_f64(double *data, int64_t n, char *err, size_t errlen);
/* The two halves of a sum over a layout of owners (ZeRO-1): bounds [size + 1] cut data [n] into
 * contiguous ranges, rank r owning [bounds[r], bounds[r+1]) (bounds[0] = 0, bounds[size] = n, never
 * decreasing). reduce_scatter leaves the sum over ranks in this rank's range only (the rest of data
 * holds partial sums), each element added as ((x_o+1 + x_o+2) + ...) + x_o for its owner o (ranks mod
 * size); all_gather then copies every owner's range to every rank. Together they are a sum whose bits
 * depend only on the layout and the rank count; each rank sends and receives (size - 1) / size of the
 * data in each half. -1 with err on an MPI error. */
int saefw_dist_reduce_scatter_f32(float *data, int64_t n, const int64_t *bounds, char *err, size_t errlen);
int saefw_dist_all_gather_f32(float *data, int64_t n, const int64_t *bounds, char *err, size_t errlen);
/* Rank 0 collects each rank's part [n] into full [total] at the rank's offset off (the parts, in rank
 * order, must tile full); full is only written on rank 0 (may be NULL elsewhere). Every rank calls it. */
int saefw_dist_gather_f32(const float *part, int64_t off, int64_t n, float *full, int64_t total, char *err,
                          size_t errlen);
/* Elementwise maximum over ranks (exact, so order does not matter). */
int saefw_dist_max_i64(int64_t *data, int64_t n, char *err, size_t errlen);
/* Rank root's bytes [n] to every rank. */
int saefw_dist_bcast(void *data, size_t n, int root, char *err, size_t errlen);
/* All ranks must agree on hash (a digest of what each rank will run): -1 with an error naming the
 * first rank whose `what` differs from rank 0's. */
int saefw_dist_check_same(uint64_t hash, const char *what, char *err, size_t errlen);
/* Wait until every rank gets here. -1 with err on an MPI error. */
int saefw_dist_barrier(char *err, size_t errlen);
/* End the whole job now with code (MPI_Abort): the way out when one rank fails while the others may
 * be waiting in a collective. A single process just exits. Does not return. */
void saefw_dist_abort(int code);

/* ---- each rank's share of the data ---- */

/* This rank's share of n items split in rank order: items [*lo, *lo + *count) with lo = n * rank /
 * size (floor; shares differ by at most one item). One rank: 0 and n. */
void saefw_dist_share(int64_t n, int64_t *lo, int64_t *count);
/* A generator seed of this rank's own: the seed itself on rank 0 (so a 1-rank run draws what it always
 * drew), mixed with the rank on the others (independent streams for each rank's data). */
uint64_t saefw_dist_rank_seed(uint64_t seed);
/* data [n] items of `item` bytes, of which each rank has filled its share (saefw_dist_share(n)):
 * afterwards every rank holds all n, in rank order. -1 with err on an MPI error or when a share is
 * more than 2 GiB. */
int saefw_dist_gather_shares(void *data, int64_t n, size_t item, char *err, size_t errlen);

/* FNV-1a over bytes, continuing from h (start with SAEFW_FNV_OFFSET). */
#define SAEFW_FNV_OFFSET 0xcbf29ce484222325ULL
uint64_t saefw_fnv1a(uint64_t h, const void *data, size_t n);

#endif
