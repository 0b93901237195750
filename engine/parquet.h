/* Parquet files as datasets write them (the Hub's `datasets` library, pyarrow, arrow-rs): a streaming
 * reader that decodes one row group's column at a time into flat arrays. Columns it reads: list<int32>
 * and list<int64> (3-level LIST as pyarrow writes it, the legacy 2-level form, a bare repeated int),
 * INT32/INT64 and BYTE_ARRAY strings; pages v1 and v2, dictionary pages, PLAIN, PLAIN_DICTIONARY /
 * RLE_DICTIONARY, DELTA_BINARY_PACKED, DELTA_LENGTH_BYTE_ARRAY; codecs UNCOMPRESSED, SNAPPY, GZIP, ZSTD.
 *
 * Use:
 *     saefw_parquet *pq;
 *     if (saefw_parquet_open("shard.parquet", &pq, err, sizeof err)) ...;
 *     int col = saefw_parquet_find(pq, "tokens", SAEFW_PQ_LISTS, err, sizeof err);   (-1 on error)
 *     saefw_parquet_batch b;
 *     saefw_parquet_batch_init(&b);
 *     for (int rg = 0; rg < saefw_parquet_row_groups(pq); rg++) {
 *         if (saefw_parquet_read(pq, rg, col, &b, err, sizeof err)) ...;
 *         row r of the row group: b.values[b.offsets[r] .. b.offsets[r + 1])
 *     }
 *     saefw_parquet_batch_free(&b);
 *     saefw_parquet_close(pq);
 *
 * Threads: after open, a saefw_parquet is read-only (pages are read with pread), so any number of
 * threads may call saefw_parquet_read on one handle at once, each with its own batch.
 * Memory: the footer metadata stays in memory; a read holds one column chunk (compressed), one
 * decompressed page and its output arrays; nothing else of the file is read.
 * Errors: one line naming the file, and for a read the row group and column, e.g.
 * `data.parquet: row group 3, column 'tokens': page header truncated`. */
#ifndef SAEFW_PARQUET_H
#define SAEFW_PARQUET_H

#include <stddef.h>
#include <stdint.h>

/* What a top-level column holds, as far as this reader is concerned. */
typedef enum {
    SAEFW_PQ_OTHER = 0,           /* anything else (double, struct, map, ...): listed, never decoded */
    SAEFW_PQ_INT32 = 1 << 0,      /* INT32, required or optional */
    SAEFW_PQ_INT64 = 1 << 1,      /* INT64, required or optional */
    SAEFW_PQ_STRING = 1 << 2,     /* BYTE_ARRAY (UTF8 strings, or unannotated bytes) */
    SAEFW_PQ_LIST_INT32 = 1 << 3, /* list<int32> */
    SAEFW_PQ_LIST_INT64 = 1 << 4, /* list<int64> */
} saefw_parquet_kind;

/* Masks for saefw_parquet_find. */
#define SAEFW_PQ_INTS (SAEFW_PQ_INT32 | SAEFW_PQ_INT64)
#define SAEFW_PQ_LISTS (SAEFW_PQ_LIST_INT32 | SAEFW_PQ_LIST_INT64)

typedef struct {
    const char *name; /* top-level field name, e.g. "tokens" */
    saefw_parquet_kind kind;
    const char *type; /* readable type for messages: "list<int64>", "string", "double", "struct", ... */
    int nullable;     /* the column (or a list's element) may hold nulls */
} saefw_parquet_column;

typedef struct saefw_parquet saefw_parquet;

/* Open a Parquet file and decode its footer (schema, row groups, column chunks). Every offset and
 * length is checked against the file's size. Errors name the file: not a Parquet file, truncated,
 * encrypted, metadata damaged. *out is NULL on failure. */
int saefw_parquet_open(const char *path, saefw_parquet **out, char *err, size_t errlen);
void saefw_parquet_close(saefw_parquet *pq); /* NULL is fine */

const char *saefw_parquet_path(const saefw_parquet *pq);
int64_t saefw_parquet_rows(const saefw_parquet *pq);
int saefw_parquet_row_groups(const saefw_parquet *pq);
int64_t saefw_parquet_row_group_rows(const saefw_parquet *pq, int rg); /* -1 when rg is out of range */
int saefw_parquet_columns(const saefw_parquet *pq);                    /* top-level fields */
/* Column c in [0, saefw_parquet_columns); NULL when out of range. Owned by pq. */
const saefw_parquet_column *saefw_parquet_column_info(const saefw_parquet *pq, int c);
const char *saefw_parquet_kind_name(saefw_parquet_kind kind);

/* The index of the top-level column `name` whose kind is in the mask `kinds`; -1 with an error that
 * names the file and the column ("no column 'tokens' (columns: text, meta)", "column 'text' is
 * string, expected list<int32|int64>") otherwise. */
int saefw_parquet_find(const saefw_parquet *pq, const char *name, unsigned kinds, char *err, size_t errlen);

/* One decoded column of one row group, and the scratch that decoding needs. The arrays belong to the
 * batch and are reused (grown) by the next read into it; one batch per thread.
 *   lists:   values [n] (int32 widened), offsets [rows + 1]: row r is values[offsets[r] .. offsets[r+1])
 *   ints:    values [rows], n == rows
 *   strings: bytes [offsets[n]] (not NUL-terminated), offsets [n + 1]: string i is
 *            bytes[offsets[i] .. offsets[i+1]); null strings are skipped, so n = rows - nulls_skipped.
 * A null list, a null list element or a null integer is an error (a token cannot be null). */
typedef struct {
    int64_t rows; /* rows of the row group */
    int64_t n;    /* values (lists, ints) or strings */
    int64_t *values;
    int64_t *offsets;
    char *bytes;
    int64_t nulls_skipped; /* null strings left out */
    int64_t max_values;    /* refuse a column chunk of more values or rows than this (0: 2^28, 2 GiB of
                               values; a dataset's row groups hold about 1M tokens). Outputs grow with what
                               was decoded, but RLE runs can claim billions of values in a few bytes. */
    /* scratch, private to the reader */
    size_t values_cap, offsets_cap, bytes_cap;
    uint8_t *chunk;
    size_t chunk_cap;
    uint8_t *page;
    size_t page_cap;
    int64_t *dict; /* dictionary of ints, or string offsets [dict_n + 1] into dict_bytes */
    size_t dict_cap;
    uint8_t *dict_bytes;
    size_t dict_bytes_cap;
    int64_t dict_n;
    uint32_t *levels; /* repetition levels [page values], then definition levels */
    size_t levels_cap;
    uint32_t *idx; /* dictionary indices or lengths of one page */
    size_t idx_cap;
} saefw_parquet_batch;

void saefw_parquet_batch_init(saefw_parquet_batch *b);
void saefw_parquet_batch_free(saefw_parquet_batch *b);

/* Decode column col (a top-level column of kind INT32, INT64, STRING, LIST_INT32 or LIST_INT64) of
 * row group rg into b. On failure b's arrays are unspecified (but still owned by b) and err says
 * what is wrong, with file, row group and column. */
int saefw_parquet_read(const saefw_parquet *pq, int rg, int col, saefw_parquet_batch *b, char *err, size_t errlen);

#endif
