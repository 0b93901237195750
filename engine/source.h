/* Activation sources and the shuffling activation buffer. A source produces rows of activations
 * [n, d_act]; the model host (tokens -> transformer -> hook site) is one more source. */
#ifndef SAEFW_SOURCE_H
#define SAEFW_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "rng.h"
#include "state.h"

typedef struct saefw_source saefw_source;
struct saefw_source {
    const char *kind; /* "synthetic", "file", ... */
    int64_t d_act;
    /* Sequential training stream: write the next n rows into out [n, d_act]. */
    int (*next)(saefw_source *s, float *out, int64_t n, char *err, size_t errlen);
    /* Independent evaluation draw of n rows (does not move the training stream). */
    int (*sample)(saefw_source *s, float *out, int64_t n, char *err, size_t errlen);
    /* Rows per natural chunk of work (a model forward); the buffer refills in whole chunks. 0: any. */
    int64_t chunk_rows;
    void (*destroy)(saefw_source *s);
    /* Resumable state (stream position, random generators, pending rows); NULL when there is none.
     * Names are relative: the caller sets the prefix. */
    int (*save_state)(saefw_source *s, saefw_state_out *st, char *err, size_t errlen);
    int (*load_state)(saefw_source *s, saefw_state_in *st, char *err, size_t errlen);
    /* Optional, both or neither: mark remembers the training stream's position (what next() gives
     * next), rewind goes back to the latest mark. A buffer refill stopped by a signal rewinds, so that
     * it leaves no trace in the stream; over a source without them a refill runs to its end. */
    int (*mark)(saefw_source *s, char *err, size_t errlen);
    int (*rewind)(saefw_source *s, char *err, size_t errlen);
    /* Optional: the buffer has finished filling; scratch memory may be handed back until the next call. */
    void (*idle)(saefw_source *s);
    /* Bytes the source holds at its peak beside the rows it hands out (a model's weights and forward
     * scratch), for the run's memory estimate. */
    double mem_bytes;
    void (*log)(void *ud, const char *msg); /* optional: where a source reports events (wrap-around) */
    void *log_ud;
    void *impl;
    /* 1: an ordered feed: a buffer over it hands out the source's rows unshuffled, batch after batch,
     * in the order next() gives them, so that exact batches can be replayed. */
    int in_order;
    /* > 0: each row is [input | target] (a transcoder's data): its last d_target columns are the target. */
    int64_t d_target;
};

void saefw_source_free(saefw_source *s);

/* Synthetic data with known ground truth (Sharkey et al.): n_features random unit directions in
 * d_in dims; each row sums the features that are on, each on independently with probability p and
 * a magnitude uniform in [0, max_magnitude). Data parallel, each rank draws its rows (training and
 * evaluation) from generators of its own; rank 0's are a single process's. */
typedef struct {
    int64_t d_in, n_features;
    double p_active, max_magnitude;
    uint64_t seed;
} saefw_synthetic_opts;

int saefw_source_synthetic(const saefw_synthetic_opts *o, saefw_source **out, char *err, size_t errlen);
/* The true features [n_features, d_in] of a synthetic source, or NULL for other sources. */
const float *saefw_synthetic_features(const saefw_source *s, int64_t *n_features);
/* Mean over true features of the max cosine similarity with any row of D [n_rows, d]. */
double saefw_mmcs(const float *truth, int64_t n_truth, const float *D, int64_t n_rows, int64_t d);

/* Activations from a file: a 2-D tensor [N, d_act] of F32, BF16 or F16 in .npy or safetensors
 * (tensor `name`, or the file's only tensor when name is NULL), memory-mapped. Rows are read in
 * order and wrap around at the end with a log line. Data parallel, rank r of P reads the r-th of P
 * contiguous blocks of rows (floor split) and wraps within it; evaluation draws come from the whole
 * file with a generator of the rank's own. */
int saefw_source_file(const char *path, const char *name, int64_t expect_d, uint64_t seed, saefw_source **out,
                      char *err, size_t errlen);

/* An ordered feed from a function: next(n) calls fn(ud, out [n, d_act], n), which fills the rows or
 * returns -1 with err; sample reads the rows of the latest call again, cyclically (drawing from fn
 * would move the stream; give an evaluation source of its own for anything else). in_order is set. destroy_ud (may be NULL) runs
 * on free. The function's state is not saved in checkpoints: a resumed run calls it again from
 * where it is asked. */
int saefw_source_feed(int64_t d_act, int (*fn)(void *ud, float *out, int64_t n, char *err, size_t errlen), void *ud,
                      void (*destroy_ud)(void *ud), saefw_source **out, char *err, size_t errlen);

typedef enum { SAEFW_BUF_F32 = 0, SAEFW_BUF_BF16 = 1 } saefw_buffer_dtype;

/* The seed's buffer: `rows` rows, filled completely at first; each batch is read in order; once
 * more than half minus a batch is used, the first half is refilled from the source and the whole
 * buffer is reshuffled. A SIGINT or SIGTERM (util.h's stop flag) stops a refill within one piece of
 * it over a source with mark and rewind: the source goes back to where the refill began and the
 * buffer to where it was before the batch that started the refill (the rows the refill wrote were
 * all due to be replaced), as if that call never happened. */
typedef struct {
    saefw_source *src;
    int64_t rows, d, batch;
    saefw_buffer_dtype dtype;
    void *data;    /* [rows, d] in dtype */
    int64_t *perm; /* logical row -> physical row */
    float *stage;  /* [chunk, d] staging for refills */
    int64_t stage_rows;
    int64_t pointer;
    int first;
    saefw_rng rng;
    int64_t refills;
    double fill_seconds;   /* wall time of the first fill */
    double refill_seconds; /* wall time of the refills after it (model forwards included) */
    int in_order;          /* the source is an ordered feed: each batch is read straight from it */
    /* Data parallel (dist.h, more than one rank, not in_order): each rank's buffer holds its share of
     * the rows (`rows` is this rank's, rows_total the whole buffer's), is shuffled by a generator of its
     * own, and each batch hands out this rank's `take` rows of the global `batch`. One rank: take =
     * batch, rows_total = rows. */
    int64_t take, rows_total;
} saefw_buffer;

/* Over a source with in_order set, the buffer holds nothing: each batch is the source's next
 * `batch` rows, in float32, and `rows`, dtype and seed are not used. */
int saefw_buffer_init(saefw_buffer *b, saefw_source *src, int64_t rows, int64_t batch, saefw_buffer_dtype dtype,
                      uint64_t seed, char *err, size_t errlen);
/* Next batch as float32: [take, d], this rank's rows of the global batch ([batch, d] on one rank or
 * in_order). A refill stopped by a signal returns -1 with the stop in err and
 * leaves buffer and source as they were before this call. */
int saefw_buffer_next(saefw_buffer *b, float *out, char *err, size_t errlen);
void saefw_buffer_free(saefw_buffer *b);
/* The buffer's position, order, generator and contents (by reference: write st before the next batch). */
int saefw_buffer_save(const saefw_buffer *b, saefw_state_out *st, char *err, size_t errlen);
int saefw_buffer_load(saefw_buffer *b, saefw_state_in *st, char *err, size_t errlen);
size_t saefw_buffer_bytes(const saefw_buffer *b);

#endif
