/* bench_parquet: decode speed of the Parquet reader on a file shaped like the seed's dataset (column
 * `tokens`, list<int64> of 1024 per row, SNAPPY, data pages v1 as pyarrow writes them), written here at
 * bench time by a minimal writer: once with PLAIN values and once dictionary-encoded (pyarrow's
 * default). Prints tokens/s on one thread and with row groups spread over the engine's threads, and
 * the share of a training step at the seed's shape (4096 tokens per step of about 2 s) that reading
 * those tokens would take.
 *
 *   bench_parquet [--tokens N] [--threads N] [--keep DIR]
 */
#include <snappy-c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "parallel.h"
#include "parquet.h"
#include "rng.h"
#include "util.h"

#define ROW_LEN 1024
#define ROWS_PER_PAGE 64
#define ROWS_PER_GROUP 1000
#define VOCAB 48262 /* gelu-1l's d_vocab */

/* ---- a growing byte buffer and the Thrift compact protocol, only what the writer needs ---- */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        size_t c = b->cap ? b->cap : 4096;
        while (c < b->n + n) c *= 2;
        b->p = realloc(b->p, c);
        if (!b->p) {
            fprintf(stderr, "bench_parquet: out of memory\n");
            exit(1);
        }
        b->cap = c;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void put_byte(buf *b, uint8_t v) { put(b, &v, 1); }

static void put_varint(buf *b, uint64_t v) {
    while (v >= 0x80) {
        put_byte(b, (uint8_t)(v | 0x80));
        v >>= 7;
    }
    put_byte(b, (uint8_t)v);
}

static void put_u32le(buf *b, uint32_t v) {
    uint8_t d[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(b, d, 4);
}

enum { TT_I32 = 5, TT_I64 = 6, TT_BINARY = 8, TT_LIST = 9, TT_STRUCT = 12 };

/* Field ids of the open structs, innermost last (field headers carry deltas from the previous id). */
typedef struct {
    buf *b;
    int last[8];
    int depth;
} tw;

static void t_field(tw *w, int id, int type) {
    put_byte(w->b, (uint8_t)((id - w->last[w->depth]) << 4 | type));
    w->last[w->depth] = id;
}
static void t_i64(tw *w, int id, int64_t v) {
    t_field(w, id, TT_I64);
    put_varint(w->b, (uint64_t)((v << 1) ^ (v >> 63)));
}
static void t_i32(tw *w, int id, int32_t v) {
    t_field(w, id, TT_I32);
    put_varint(w->b, (uint64_t)(uint32_t)((v << 1) ^ (v >> 31)));
}
static void t_str(tw *w, int id, const char *s) {
    t_field(w, id, TT_BINARY);
    put_varint(w->b, strlen(s));
    put(w->b, s, strlen(s));
}
static void t_list(tw *w, int id, int elem, int n) {
    t_field(w, id, TT_LIST);
    if (n < 15) {
        put_byte(w->b, (uint8_t)(n << 4 | elem));
    } else {
        put_byte(w->b, (uint8_t)(0xf0 | elem));
        put_varint(w->b, (uint64_t)n);
    }
}
static void t_begin(tw *w, int id) {
    if (id) t_field(w, id, TT_STRUCT);
    w->last[++w->depth] = 0;
}
static void t_end(tw *w) {
    put_byte(w->b, 0);
    w->depth--;
}

/* ---- the file ---- */

typedef struct {
    int64_t offset, dict_offset, compressed, uncompressed, values;
} chunk_meta;

static void page(buf *file, int type, const buf *body, int32_t num_values, int encoding, chunk_meta *cm) {
    size_t cap = snappy_max_compressed_length(body->n), clen = cap;
    char *comp = malloc(cap);
    if (!comp || snappy_compress((const char *)body->p, body->n, comp, &clen) != SNAPPY_OK) {
        fprintf(stderr, "bench_parquet: snappy failed\n");
        exit(1);
    }
    buf h = {0};
    tw w = {&h, {0}, 0};
    t_i32(&w, 1, type);
    t_i32(&w, 2, (int32_t)body->n);
    t_i32(&w, 3, (int32_t)clen);
    t_begin(&w, type == 2 ? 7 : 5);
    t_i32(&w, 1, num_values);
    t_i32(&w, 2, encoding);
    if (type == 0) {
        t_i32(&w, 3, 3); /* RLE levels */
        t_i32(&w, 4, 3);
    }
    t_end(&w);
    put_byte(&h, 0);
    put(file, h.p, h.n);
    put(file, comp, clen);
    cm->compressed += (int64_t)(h.n + clen);
    cm->uncompressed += (int64_t)(h.n + body->n);
    free(h.p);
    free(comp);
}

/* Levels of `rows` lists of ROW_LEN present elements (pyarrow's form: max rep 1, max def 3). */
static void levels(buf *b, int64_t rows) {
    buf r = {0};
    /* Repetition: 0 then 1 x 1023 per row, bit-packed at width 1 (1024 levels = 128 bytes per row). */
    put_varint(&r, (uint64_t)(rows * ROW_LEN / 8) << 1 | 1);
    for (int64_t i = 0; i < rows; i++) {
        put_byte(&r, 0xfe);
        for (int k = 1; k < ROW_LEN / 8; k++) put_byte(&r, 0xff);
    }
    put_u32le(b, (uint32_t)r.n);
    put(b, r.p, r.n);
    /* Definition: every level 3, one RLE run. */
    buf d = {0};
    put_varint(&d, (uint64_t)(rows * ROW_LEN) << 1);
    put_byte(&d, 3);
    put_u32le(b, (uint32_t)d.n);
    put(b, d.p, d.n);
    free(r.p);
    free(d.p);
}

static void write_file(const char *path, int64_t rows, int dict, uint64_t seed) {
    buf f = {0};
    put(&f, "PAR1", 4);
    int n_groups = (int)((rows + ROWS_PER_GROUP - 1) / ROWS_PER_GROUP);
    chunk_meta *cms = calloc((size_t)n_groups, sizeof *cms);
    saefw_rng rng;
    saefw_rng_seed(&rng, seed);
    int bw = 0;
    while ((1 << bw) < VOCAB) bw++;
    for (int g = 0; g < n_groups; g++) {
        int64_t g_rows =
            rows - (int64_t)g * ROWS_PER_GROUP < ROWS_PER_GROUP ? rows - (int64_t)g * ROWS_PER_GROUP : ROWS_PER_GROUP;
        chunk_meta *cm = &cms[g];
        cm->values = g_rows * ROW_LEN;
        cm->dict_offset = -1;
        if (dict) {
            /* The dictionary is the whole vocabulary, id i at index i. */
            buf d = {0};
            for (int64_t v = 0; v < VOCAB; v++) put(&d, &v, 8);
            cm->dict_offset = (int64_t)f.n;
            page(&f, 2, &d, VOCAB, 0, cm);
            free(d.p);
        }
        cm->offset = (int64_t)f.n;
        for (int64_t r0 = 0; r0 < g_rows; r0 += ROWS_PER_PAGE) {
            int64_t pr = g_rows - r0 < ROWS_PER_PAGE ? g_rows - r0 : ROWS_PER_PAGE;
            buf body = {0};
            levels(&body, pr);
            int64_t n = pr * ROW_LEN;
            if (dict) {
                /* Bit-packed indices: groups of 8 values at width bw. */
                put_byte(&body, (uint8_t)bw);
                put_varint(&body, (uint64_t)(n / 8) << 1 | 1);
                uint64_t acc = 0;
                int bits = 0;
                for (int64_t i = 0; i < n; i++) {
                    acc |= (uint64_t)(saefw_rng_below(&rng, VOCAB)) << bits;
                    bits += bw;
                    while (bits >= 8) {
                        put_byte(&body, (uint8_t)acc);
                        acc >>= 8;
                        bits -= 8;
                    }
                }
            } else {
                for (int64_t i = 0; i < n; i++) {
                    int64_t v = (int64_t)(saefw_rng_below(&rng, VOCAB));
                    put(&body, &v, 8);
                }
            }
            page(&f, 0, &body, (int32_t)n, dict ? 8 : 0, cm);
            free(body.p);
        }
    }
    size_t footer_at = f.n;
    tw w = {&f, {0}, 0};
    t_begin(&w, 0);
    t_i32(&w, 1, 1);
    t_list(&w, 2, TT_STRUCT, 4);
    const char *names[] = {"schema", "tokens", "list", "element"};
    for (int s = 0; s < 4; s++) {
        t_begin(&w, 0);
        if (s == 3) t_i32(&w, 1, 2);             /* INT64 */
        if (s > 0) t_i32(&w, 3, s == 2 ? 2 : 1); /* REPEATED list, OPTIONAL tokens and element */
        t_str(&w, 4, names[s]);
        if (s < 3) t_i32(&w, 5, 1);
        if (s == 1) t_i32(&w, 6, 3); /* LIST */
        t_end(&w);
    }
    t_i64(&w, 3, rows);
    t_list(&w, 4, TT_STRUCT, n_groups);
    for (int g = 0; g < n_groups; g++) {
        const chunk_meta *cm = &cms[g];
        t_begin(&w, 0);
        t_list(&w, 1, TT_STRUCT, 1);
        t_begin(&w, 0);
        t_i64(&w, 2, cm->offset);
        t_begin(&w, 3);
        t_i32(&w, 1, 2);
        t_list(&w, 2, TT_I32, dict ? 3 : 2);
        put_varint(&f, 0);            /* PLAIN */
        put_varint(&f, 6);            /* RLE (zigzag 3) */
        if (dict) put_varint(&f, 16); /* RLE_DICTIONARY (zigzag 8) */
        t_list(&w, 3, TT_BINARY, 3);
        for (int s = 1; s < 4; s++) {
            put_varint(&f, strlen(names[s]));
            put(&f, names[s], strlen(names[s]));
        }
        t_i32(&w, 4, 1); /* SNAPPY */
        t_i64(&w, 5, cm->values);
        t_i64(&w, 6, cm->uncompressed);
        t_i64(&w, 7, cm->compressed);
        t_i64(&w, 9, cm->offset);
        if (dict) t_i64(&w, 11, cm->dict_offset);
        t_end(&w);
        t_end(&w);
        t_i64(&w, 2, cm->uncompressed);
        t_i64(&w, 3, cm->values / ROW_LEN);
        t_end(&w);
    }
    t_end(&w);
    put_u32le(&f, (uint32_t)(f.n - footer_at));
    put(&f, "PAR1", 4);
    char err[512];
    if (saefw_write_file_atomic(path, f.p, f.n, err, sizeof err)) {
        fprintf(stderr, "bench_parquet: %s\n", err);
        exit(1);
    }
    free(f.p);
    free(cms);
}

/* ---- decoding ---- */

typedef struct {
    const saefw_parquet *pq;
    int col;
    int64_t tokens, sum;
    int failures;
} dec_ctx;

static void decode_range(void *p, int64_t begin, int64_t end) {
    dec_ctx *c = p;
    saefw_parquet_batch b;
    saefw_parquet_batch_init(&b);
    char err[1024];
    int64_t tokens = 0, sum = 0;
    for (int64_t rg = begin; rg < end; rg++) {
        if (saefw_parquet_read(c->pq, (int)rg, c->col, &b, err, sizeof err)) {
            fprintf(stderr, "bench_parquet: %s\n", err);
            __atomic_add_fetch(&c->failures, 1, __ATOMIC_RELAXED);
            continue;
        }
        tokens += b.n;
        for (int64_t i = 0; i < b.n; i++) sum += b.values[i];
    }
    __atomic_add_fetch(&c->tokens, tokens, __ATOMIC_RELAXED);
    __atomic_add_fetch(&c->sum, sum, __ATOMIC_RELAXED);
    saefw_parquet_batch_free(&b);
}

/* Fastest of reps full decodes, in tokens/s. */
static double decode_rate(const char *path, int threads, int reps, double *best_cpu) {
    char err[1024];
    saefw_parquet *pq;
    if (saefw_parquet_open(path, &pq, err, sizeof err)) {
        fprintf(stderr, "bench_parquet: %s\n", err);
        exit(1);
    }
    int col = saefw_parquet_find(pq, "tokens", SAEFW_PQ_LISTS, err, sizeof err);
    if (col < 0) {
        fprintf(stderr, "bench_parquet: %s\n", err);
        exit(1);
    }
    saefw_set_threads(threads);
    double best = 0;
    for (int r = 0; r < reps; r++) {
        dec_ctx c = {pq, col, 0, 0, 0};
        double t0 = saefw_now();
        clock_t c0 = clock();
        if (threads == 1) decode_range(&c, 0, saefw_parquet_row_groups(pq));
        else saefw_parallel_for(saefw_parquet_row_groups(pq), decode_range, &c);
        double dt = saefw_now() - t0;
        /* On one thread, CPU time too: other programs on a shared machine only add wall time. */
        if (threads == 1) {
            double cpu = (double)(clock() - c0) / CLOCKS_PER_SEC;
            if (cpu > 0 && c.tokens / cpu > *best_cpu) *best_cpu = c.tokens / cpu;
        }
        if (c.failures || c.tokens != saefw_parquet_rows(pq) * ROW_LEN) {
            fprintf(stderr, "bench_parquet: decode failed (%lld tokens)\n", (long long)c.tokens);
            exit(1);
        }
        if (c.tokens / dt > best) best = c.tokens / dt;
    }
    saefw_set_threads(0);
    saefw_parquet_close(pq);
    return best;
}

int main(int argc, char **argv) {
    int64_t tokens = 10 * 1000 * 1000;
    int threads = 0;
    const char *keep = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokens") && i + 1 < argc) tokens = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--keep") && i + 1 < argc) keep = argv[++i];
        else {
            fprintf(stderr, "usage: bench_parquet [--tokens N] [--threads N] [--keep DIR]\n");
            return 2;
        }
    }
    if (tokens < ROW_LEN) {
        fprintf(stderr, "bench_parquet: --tokens must be at least %d\n", ROW_LEN);
        return 2;
    }
    if (threads <= 0) threads = saefw_threads();
    char dir[1024];
    if (keep) {
        snprintf(dir, sizeof dir, "%s", keep);
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/bench_parquet.XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(dir)) {
            perror("bench_parquet: mkdtemp");
            return 1;
        }
    }
    int64_t rows = tokens / ROW_LEN;
    printf("bench_parquet: %lld rows of %d tokens (%lld tokens), row groups of %d rows, SNAPPY, page v1; %d threads\n",
           (long long)rows, ROW_LEN, (long long)(rows * ROW_LEN), ROWS_PER_GROUP, threads);
    for (int dict = 0; dict < 2; dict++) {
        char path[1100];
        snprintf(path, sizeof path, "%s/tokens_%s.parquet", dir, dict ? "dict" : "plain");
        double t0 = saefw_now();
        write_file(path, rows, dict, 1234);
        double wt = saefw_now() - t0;
        FILE *f = fopen(path, "rb");
        long size = 0;
        if (f && fseek(f, 0, SEEK_END) == 0) size = ftell(f);
        if (f) fclose(f);
        double cpu = 0, unused = 0;
        double one = decode_rate(path, 1, 3, &cpu), many = decode_rate(path, threads, 3, &unused);
        /* A training step at the seed's shape: 4096 tokens in about 2 s. */
        double share = 100.0 * (4096.0 / one) / 2.0;
        printf("%-5s  file %6.1f MB (written in %.1f s)  1 thread %7.1f M tokens/s (%.1f M per CPU second)  "
               "%d threads %7.1f M tokens/s  share of a 2 s step of 4096 tokens: %.5f %%\n",
               dict ? "dict" : "plain", size / 1e6, wt, one / 1e6, cpu / 1e6, threads, many / 1e6, share);
        printf("RESULT parquet_%s_tokens_per_s %.0f\n", dict ? "dict" : "plain", one);
        if (!keep) unlink(path);
    }
    if (!keep) rmdir(dir);
    return 0;
}
