/* Token data for the model host: memory-mapped token files (.npy int32/int64/uint16, raw .bin with a
 * stated dtype, safetensors, torch .pt) viewed as shuffled rows of seq_len tokens, never read whole. */
#ifndef SAEFW_TOKENS_H
#define SAEFW_TOKENS_H

#include <stddef.h>
#include <stdint.h>

#include "rng.h"
#include "state.h"

typedef struct {
    const char *path;
    const char *tensor; /* tensor name in a multi-tensor file (NULL: the only one, or "tokens") */
    const char *dtype;  /* for raw .bin: "uint16", "int32", "int64" (required there) */
    int64_t seq_len;    /* tokens per row */
    int64_t bos;        /* >= 0: overwrite position 0 of every row with this id (the seed's preprocessing) */
    int shuffle;        /* visit rows in a seeded random order, reshuffled at each pass */
    uint64_t seed;
} saefw_tokens_opts;

typedef struct saefw_tokens saefw_tokens;

/* Open a token file. A 1-D stream [N] or a 2-D [rows, L] tensor is cut into rows of seq_len tokens
 * (2-D rows into floor(L / seq_len) pieces; a remainder is dropped). Errors name the file. */
int saefw_tokens_open(const saefw_tokens_opts *o, saefw_tokens **out, char *err, size_t errlen);
void saefw_tokens_free(saefw_tokens *t);

int64_t saefw_tokens_rows(const saefw_tokens *t);
int64_t saefw_tokens_seq_len(const saefw_tokens *t);
int64_t saefw_tokens_pass(const saefw_tokens *t); /* 0 on the first pass over the data */
int64_t saefw_tokens_cursor(const saefw_tokens *t);
/* Put the training stream back at a position that saefw_tokens_pass and saefw_tokens_cursor gave
 * (the shuffle of that pass comes back with it). */
int saefw_tokens_seek(saefw_tokens *t, int64_t pass, int64_t cursor, char *err, size_t errlen);

/* Copy row r (in file order, before shuffling) into out [seq_len], applying BOS. Checks ids >= 0 and
 * < max_id when max_id > 0. */
int saefw_tokens_row(const saefw_tokens *t, int64_t r, int32_t *out, int64_t max_id, char *err, size_t errlen);
/* The next n rows of the training stream [n, seq_len]. Past the last row it starts a new pass with a
 * fresh shuffle and reports it through log (if set). Data parallel (dist.h), each rank's stream is
 * its share of every pass: the positions congruent to its rank modulo the rank count (the file must
 * have a row for each rank). */
int saefw_tokens_next(saefw_tokens *t, int32_t *out, int64_t n, int64_t max_id, char *err, size_t errlen);
/* n rows drawn uniformly at random with rng (evaluation; does not move the stream). */
int saefw_tokens_sample(const saefw_tokens *t, saefw_rng *rng, int32_t *out, int64_t n, int64_t max_id, char *err,
                        size_t errlen);
/* n rows [n, seq_len] that the training stream visits at positions pos, pos+1, ... of its first pass
 * (wrapping at rows); does not move the stream. A held-out set taken from the end of the first pass
 * is disjoint from the rows trained on until the stream gets there. */
int saefw_tokens_first_pass(const saefw_tokens *t, int64_t pos, int32_t *out, int64_t n, int64_t max_id, char *err,
                            size_t errlen);
/* The stream's position (pass and cursor; the shuffle follows from them and the seed). */
int saefw_tokens_save(const saefw_tokens *t, saefw_state_out *st, char *err, size_t errlen);
int saefw_tokens_load(saefw_tokens *t, saefw_state_in *st, char *err, size_t errlen);
void saefw_tokens_set_log(saefw_tokens *t, void (*log)(void *ud, const char *msg), void *ud);

#endif
