/* Token datasets: Parquet shards whose column holds token ids (list<int32|int64> rows, as the Hub's
 * `datasets` library writes them, or a plain integer column), converted once into a flat token file
 * that saefw_tokens_open reads like any other. The seed's shuffle visits rows in a keyed random order,
 * which needs random access; compressed row groups do not give it, a flat file read with pread does. */
#ifndef SAEFW_TOKEN_DATASET_H
#define SAEFW_TOKEN_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "tokens.h"

typedef struct {
    const char *const *shards; /* Parquet files, in dataset order */
    int n_shards;
    const char *column; /* NULL: "tokens" */
    const char *out;    /* the .npy to write (atomically: a temporary name, fsync, rename) */
    int64_t max_id;     /* > 0: every id must be < max_id (the model's vocabulary) */
    int progress;       /* -1: a live line on a terminal, plain lines otherwise; 0: silent */
} saefw_token_convert_opts;

typedef struct {
    int64_t rows;    /* dataset rows read */
    int64_t tokens;  /* tokens written */
    int64_t row_len; /* the common row length, or 0 when rows differ (the file is then 1-D) */
    int dtype_bits;  /* 16 (uint16, every id < 65536) or 32 (int32) */
    double seconds;
} saefw_token_convert_stats;

/* Convert the shards into one .npy token file: [rows, row_len] when every row has the same length,
 * else the rows concatenated into one stream [tokens]. uint16 when every id fits, else int32. Row
 * groups are decoded on the engine's threads. Errors name the shard, row group and column; on error
 * nothing is left at o->out. stats may be NULL. */
int saefw_tokens_convert(const saefw_token_convert_opts *o, saefw_token_convert_stats *stats, char *err, size_t errlen);

/* The token cache file for these shards and column: <cache>/tokens/<name>-<key>.npy, where <cache> is
 * $SAEFW_CACHE, else $XDG_CACHE_HOME/saefw, else ~/.cache/saefw, and <key> hashes each shard's real
 * path, size and modification time with the column name (a changed shard gets a new cache file). name
 * is a readable label (e.g. the dataset's ORG--NAME); NULL uses the first shard's file name. */
int saefw_token_cache_path(const char *const *shards, int n_shards, const char *column, const char *name, char *out,
                           size_t n, char *err, size_t errlen);

/* Whether spec names a token dataset rather than a token file: hf://datasets/..., a folder, a
 * .parquet file, a glob, or ORG/NAME that is not a local path. */
int saefw_token_dataset_spec(const char *spec);

/* Resolve a dataset spec (see saefw_dataset_resolve) to its Parquet shards and return, in cache, the
 * token cache file for them, converting once when it is absent (with progress unless progress is 0).
 * column NULL means "tokens". */
int saefw_token_dataset_prepare(const char *spec, const char *column, int progress, char *cache, size_t n, char *err,
                                size_t errlen);

/* saefw_tokens_open for a token file or a token dataset spec (then through its token cache, made on
 * first use): o->path may be either. column NULL means "tokens". */
int saefw_tokens_open_any(const saefw_tokens_opts *o, const char *column, int progress, saefw_tokens **out, char *err,
                          size_t errlen);

#endif
