/* `saefw tokenize INPUT... --tokenizer NAME --out FILE`: text datasets to a token file. Inputs are read
 * in batches of a few MB (JSONL split at lines, plain text at line starts that no pre-token crosses,
 * Parquet a row group of its string column at a time), each batch is encoded on the threads in
 * contiguous pieces and written in order, so the output does not depend on the thread count. The
 * .npy header is rewritten with the final length at the end; the file appears atomically. */
#include "tokenize_cmd.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "parallel.h"
#include "parquet.h"
#include "tokenizer.h"
#include "util.h"

#define BATCH_BYTES (8u << 20)
#define MAX_THREADS 64
#define NPY_HEADER 128

static const char USAGE[] =
    "usage: saefw tokenize INPUT... --tokenizer NAME --out FILE.npy|FILE.bin [--field text] [--threads N]\n"
    "                      [--bos] [--append-eos] [--special] [--dtype uint16|int32]\n"
    "  INPUT: .jsonl / .jsonl.zst (one JSON object per line, text in --field), .parquet (one document per\n"
    "         row of the string column --field), other files plain text\n"
    "  --tokenizer: a tokenizer.json, a folder holding one, tiny-1l, gelu-1l or a Hub repo id in the cache\n"
    "  --bos / --append-eos: put the tokenizer's BOS before / EOS after each document\n"
    "  --special: special tokens written in the text become their ids (default: plain text)\n"
    "  --dtype: of the output (default uint16 when the vocabulary fits, else int32)\n";

enum { IN_TEXT, IN_JSONL, IN_PARQUET };

typedef struct {
    const char *path;
    int kind, zst;
    FILE *f;
    ZSTD_DStream *z;
    char *zin;
    ZSTD_inBuffer in;
    size_t zin_cap;
    int eof;
    uint64_t size, consumed; /* on-disk bytes: for progress */
} input;

typedef struct {
    const saefw_tokenizer *t;
    const char *path;
    int kind, flags, bos_first, eos_last;
    int32_t bos, eos;
    const char *field;
    const char *p; /* this worker's piece of the batch */
    size_t len;
    int64_t line;                  /* line number of the piece's first line */
    const saefw_parquet_batch *pq; /* Parquet: strings [d0, d1) of this row group's batch */
    int64_t d0, d1;
    int rg;
    saefw_tokenizer_scratch *s;
    int32_t *ids;
    size_t n, cap;
    int64_t docs;
    int rc;
    char err[512];
} worker;

static int input_kind(const char *path, int *zst) {
    *zst = saefw_ends_with(path, ".zst");
    if (saefw_ends_with(path, ".parquet")) return IN_PARQUET;
    if (saefw_ends_with(path, ".jsonl") || saefw_ends_with(path, ".jsonl.zst") || saefw_ends_with(path, ".json.zst") ||
        saefw_ends_with(path, ".ndjson"))
        return IN_JSONL;
    return IN_TEXT;
}

static int input_open(input *in, const char *path, char *err, size_t errlen) {
    memset(in, 0, sizeof *in);
    in->path = path;
    in->kind = input_kind(path, &in->zst);
    in->f = fopen(path, "rb");
    if (!in->f) return saefw_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(in->f), &st) == 0) in->size = (uint64_t)st.st_size;
    if (in->zst) {
        in->z = ZSTD_createDStream();
        in->zin_cap = ZSTD_DStreamInSize();
        in->zin = malloc(in->zin_cap);
        if (!in->z || !in->zin) return saefw_errf(err, errlen, "%s: out of memory", path);
        ZSTD_initDStream(in->z);
        in->in = (ZSTD_inBuffer){in->zin, 0, 0};
    }
    return 0;
}

static void input_close(input *in) {
    if (in->f) fclose(in->f);
    if (in->z) ZSTD_freeDStream(in->z);
    free(in->zin);
    memset(in, 0, sizeof *in);
}

/* Append up to `want` decompressed bytes to buf; sets in->eof at the end of the input. */
static int input_read(input *in, char *buf, size_t want, size_t *got, char *err, size_t errlen) {
    *got = 0;
    if (!in->zst) {
        size_t k = fread(buf, 1, want, in->f);
        if (k < want) {
            if (ferror(in->f)) return saefw_errf(err, errlen, "%s: read error: %s", in->path, strerror(errno));
            in->eof = 1;
        }
        in->consumed += k;
        *got = k;
        return 0;
    }
    ZSTD_outBuffer out = {buf, want, 0};
    while (out.pos < out.size) {
        if (in->in.pos == in->in.size) {
            size_t k = fread(in->zin, 1, in->zin_cap, in->f);
            if (k == 0) {
                if (ferror(in->f)) return saefw_errf(err, errlen, "%s: read error: %s", in->path, strerror(errno));
                in->eof = 1;
                break;
            }
            in->consumed += k;
            in->in = (ZSTD_inBuffer){in->zin, k, 0};
        }
        size_t r = ZSTD_decompressStream(in->z, &out, &in->in);
        if (ZSTD_isError(r)) return saefw_errf(err, errlen, "%s: zstd: %s", in->path, ZSTD_getErrorName(r));
    }
    *got = out.pos;
    return 0;
}

static int is_space_or_high(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' || c >= 0x80;
}

/* A place in text where no pre-token of the byte-level regexes (GPT-2's, cl100k/Llama 3's) continues
 * across and where cutting changes no match: just after a '\n' that has a byte other than whitespace
 * on each side (a run of whitespace at the end of a text would be matched whole; bytes >= 0x80 may be
 * Unicode spaces, so they do not count as other). */
static int text_cut_ok(const char *p, size_t i) {
    return i >= 2 && p[i - 1] == '\n' && !is_space_or_high((unsigned char)p[i - 2]) &&
           !is_space_or_high((unsigned char)p[i]);
}

/* The last cut point in p[lo, n) (0 when there is none). */
static size_t last_cut(const char *p, size_t lo, size_t n, int kind) {
    for (size_t i = n; i > lo; i--) {
        if (kind == IN_JSONL ? p[i - 1] == '\n' : text_cut_ok(p, i)) return i;
    }
    return 0;
}

static int push(worker *w, int32_t id) {
    if (w->n == w->cap) {
        size_t c = w->cap ? 2 * w->cap : 4096;
        int32_t *q = realloc(w->ids, c * sizeof *q);
        if (!q) return saefw_errf(w->err, sizeof w->err, "out of memory");
        w->ids = q;
        w->cap = c;
    }
    w->ids[w->n++] = id;
    return 0;
}

/* One document's ids, with BOS before and EOS after when asked (bos/eos < 0: not asked). */
static int encode_doc(worker *w, const char *p, size_t len, int bos, int eos) {
    if (bos && w->bos >= 0 && push(w, w->bos) != 0) return -1;
    if (saefw_tokenizer_encode(w->t, w->s, p, len, w->flags, &w->ids, &w->n, &w->cap, w->err, sizeof w->err) != 0)
        return -1;
    if (eos && w->eos >= 0 && push(w, w->eos) != 0) return -1;
    return 0;
}

static void *work(void *arg) {
    worker *w = arg;
    w->n = 0;
    w->docs = 0;
    w->rc = 0;
    if (w->kind == IN_TEXT) {
        w->rc = encode_doc(w, w->p, w->len, w->bos_first, w->eos_last);
        return NULL;
    }
    if (w->kind == IN_PARQUET) {
        for (int64_t i = w->d0; i < w->d1 && w->rc == 0; i++, w->docs++) {
            const int64_t *o = w->pq->offsets;
            if (encode_doc(w, w->pq->bytes + o[i], (size_t)(o[i + 1] - o[i]), 1, 1) != 0)
                w->rc = saefw_err_prefix(w->err, sizeof w->err, "%s: row group %d, string %lld", w->path, w->rg,
                                         (long long)i);
        }
        return NULL;
    }
    const char *p = w->p, *end = w->p + w->len;
    for (int64_t line = w->line; p < end && w->rc == 0; line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        size_t n = (size_t)(le - p);
        while (n > 0 && (p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
        if (n > 0) {
            cJSON *o = cJSON_ParseWithLength(p, n);
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, w->field);
            if (!o) w->rc = saefw_errf(w->err, sizeof w->err, "%s:%lld: not valid JSON", w->path, (long long)line);
            else if (!cJSON_IsString(v))
                w->rc = saefw_errf(w->err, sizeof w->err, "%s:%lld: field '%s' is missing or not a string", w->path,
                                   (long long)line, w->field);
            else if (encode_doc(w, v->valuestring, strlen(v->valuestring), 1, 1) != 0)
                w->rc = saefw_err_prefix(w->err, sizeof w->err, "%s:%lld", w->path, (long long)line);
            else w->docs++;
            cJSON_Delete(o);
        }
        p = nl ? nl + 1 : end;
    }
    return NULL;
}

static int write_ids(FILE *f, const int32_t *ids, size_t n, int u16, const char *out, char *err, size_t errlen) {
    uint16_t tmp[4096];
    if (!u16) {
        if (fwrite(ids, sizeof *ids, n, f) != n)
            return saefw_errf(err, errlen, "%s: write failed: %s", out, strerror(errno));
        return 0;
    }
    for (size_t i = 0; i < n;) {
        size_t k = n - i < 4096 ? n - i : 4096;
        for (size_t j = 0; j < k; j++) tmp[j] = (uint16_t)ids[i + j];
        if (fwrite(tmp, sizeof *tmp, k, f) != k)
            return saefw_errf(err, errlen, "%s: write failed: %s", out, strerror(errno));
        i += k;
    }
    return 0;
}

static void npy_header(char *h, int u16, uint64_t n) {
    memset(h, ' ', NPY_HEADER);
    memcpy(h, "\x93NUMPY\x01\x00", 8);
    h[8] = (char)(NPY_HEADER - 10);
    h[9] = 0;
    int k = snprintf(h + 10, NPY_HEADER - 10, "{'descr': '%s', 'fortran_order': False, 'shape': (%llu,), }",
                     u16 ? "<u2" : "<i4", (unsigned long long)n);
    h[10 + k] = ' ';
    h[NPY_HEADER - 1] = '\n';
}

typedef struct {
    const char *tok, *out, *field, *dtype;
    const char **inputs;
    int n_inputs, threads, bos, eos, special;
} options;

static int parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->field = "text";
    o->inputs = calloc((size_t)argc + 1, sizeof *o->inputs);
    if (!o->inputs) return -1;
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    o->threads = nc > 0 ? (int)(nc < MAX_THREADS ? nc : MAX_THREADS) : 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = !strcmp(a, "--tokenizer") ? &o->tok
                           : !strcmp(a, "--out")     ? &o->out
                           : !strcmp(a, "--field")   ? &o->field
                           : !strcmp(a, "--dtype")   ? &o->dtype
                                                     : NULL;
        if (dst) {
            if (i + 1 >= argc) {
                fprintf(stderr, "saefw tokenize: %s needs a value\n", a);
                return -1;
            }
            *dst = argv[++i];
        } else if (!strcmp(a, "--threads")) {
            char terr[256];
            if (saefw_threads_arg(i + 1 < argc ? argv[i + 1] : NULL, MAX_THREADS, &o->threads, terr, sizeof terr) !=
                0) {
                fprintf(stderr, "saefw tokenize: %s\n", terr);
                return -1;
            }
            i++;
        } else if (!strcmp(a, "--bos")) o->bos = 1;
        else if (!strcmp(a, "--append-eos")) o->eos = 1;
        else if (!strcmp(a, "--special")) o->special = 1;
        else if (!strncmp(a, "--", 2)) {
            fprintf(stderr, "saefw tokenize: unknown option %s\n%s", a, USAGE);
            return -1;
        } else o->inputs[o->n_inputs++] = a;
    }
    if (!o->tok || !o->out || o->n_inputs == 0) {
        fprintf(stderr, "saefw tokenize: %s\n%s",
                !o->n_inputs ? "no INPUT given"
                : !o->tok    ? "--tokenizer is required"
                             : "--out is required",
                USAGE);
        return -1;
    }
    if (!saefw_ends_with(o->out, ".npy") && !saefw_ends_with(o->out, ".bin")) {
        fprintf(stderr, "saefw tokenize: --out %s: the name must end in .npy or .bin\n", o->out);
        return -1;
    }
    if (o->dtype && strcmp(o->dtype, "uint16") && strcmp(o->dtype, "int32")) {
        fprintf(stderr, "saefw tokenize: --dtype: expected uint16 or int32, got '%s'\n", o->dtype);
        return -1;
    }
    return 0;
}

/* Progress: a rewritten line on a terminal, a plain line every 10 s otherwise. */
static void progress(double t0, double *last, int final, uint64_t done, uint64_t total, uint64_t tokens) {
    double now = saefw_now(), dt = now - t0;
    int tty = isatty(fileno(stderr));
    if (!final && now - *last < (tty ? 0.5 : 10.0)) return;
    *last = now;
    double rate = dt > 0 ? (double)tokens / dt : 0, frac = total ? (double)done / (double)total : 1;
    double eta = frac > 0 ? dt * (1 - frac) / frac : 0;
    fprintf(stderr, "%stokenize: %.1f / %.1f MB (%.0f%%), %llu tokens, %.2f M tokens/s, ETA %.0f s%s", tty ? "\r" : "",
            done / 1e6, total / 1e6, 100 * frac, (unsigned long long)tokens, rate / 1e6, final ? 0.0 : eta,
            tty && !final ? "   " : "\n");
    fflush(stderr);
}

/* Run the nt workers' pieces on threads (w[0] on this one) and write their ids in order. */
static int run_workers(worker *w, int nt, FILE *f, int u16, const char *out, uint64_t *tokens, uint64_t *docs,
                       char *err, size_t errlen) {
    pthread_t th[MAX_THREADS];
    int started = 0;
    for (int k = 1; k < nt; k++, started++)
        if (pthread_create(&th[k], NULL, work, &w[k]) != 0) break;
    if (nt > 0) work(&w[0]);
    for (int k = 1; k <= started; k++) pthread_join(th[k], NULL);
    if (started < nt - 1) return saefw_errf(err, errlen, "cannot start a thread");
    for (int k = 0; k < nt; k++) {
        if (w[k].rc != 0) return saefw_errf(err, errlen, "%s", w[k].err);
        if (write_ids(f, w[k].ids, w[k].n, u16, out, err, errlen) != 0) return -1;
        *tokens += w[k].n;
        *docs += (uint64_t)(w[k].kind != IN_TEXT ? w[k].docs : 0);
    }
    return 0;
}

/* A Parquet input: each row group's string column `field` decoded, its strings (one document each,
 * nulls skipped) shared between the threads in contiguous runs of about equal bytes. */
static int tokenize_parquet(const char *path, const worker *proto, worker *w, int threads, FILE *f, int u16,
                            const char *out, double t0, double *last, uint64_t *done_bytes, uint64_t total_bytes,
                            uint64_t *tokens, uint64_t *docs, char *err, size_t errlen) {
    saefw_parquet *pq = NULL;
    saefw_parquet_batch b;
    saefw_parquet_batch_init(&b);
    int rc = -1, col;
    struct stat st;
    uint64_t size = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
    if (saefw_parquet_open(path, &pq, err, errlen) != 0) goto out;
    if ((col = saefw_parquet_find(pq, proto->field, SAEFW_PQ_STRING, err, errlen)) < 0) goto out;
    int nrg = saefw_parquet_row_groups(pq);
    for (int rg = 0; rg < nrg; rg++) {
        if (saefw_parquet_read(pq, rg, col, &b, err, errlen) != 0) goto out;
        int64_t i = 0;
        int nt = 0;
        for (int k = 0; k < threads && i < b.n; k++) {
            int64_t j = i;
            if (k == threads - 1) j = b.n;
            else {
                int64_t want = b.offsets[i] + (b.offsets[b.n] - b.offsets[i]) / (threads - k);
                while (j < b.n && (j == i || b.offsets[j] < want)) j++;
            }
            worker *x = &w[nt++];
            saefw_tokenizer_scratch *s = x->s;
            int32_t *ids = x->ids;
            size_t cap = x->cap;
            *x = *proto;
            x->s = s;
            x->ids = ids;
            x->cap = cap;
            x->kind = IN_PARQUET;
            x->path = path;
            x->pq = &b;
            x->rg = rg;
            x->d0 = i;
            x->d1 = j;
            i = j;
        }
        if (run_workers(w, nt, f, u16, out, tokens, docs, err, errlen) != 0) goto out;
        progress(t0, last, 0, *done_bytes + size * (uint64_t)(rg + 1) / (uint64_t)nrg, total_bytes, *tokens);
    }
    *done_bytes += size;
    rc = 0;
out:
    saefw_parquet_batch_free(&b);
    saefw_parquet_close(pq);
    return rc;
}

int saefw_cmd_tokenize(int argc, char **argv) {
    options o;
    if (parse_args(argc, argv, &o) != 0) {
        free(o.inputs);
        return 2;
    }
    char err[1024], path[PATH_MAX], tmp[4096];
    saefw_tokenizer *t = NULL;
    FILE *f = NULL;
    worker w[MAX_THREADS];
    memset(w, 0, sizeof w);
    char *buf = NULL;
    input in = {0};
    int rc = 1;
    if (saefw_tokenizer_resolve(o.tok, path, sizeof path, err, sizeof err) != 0 ||
        saefw_tokenizer_load(path, &t, err, sizeof err) != 0)
        goto fail;
    int64_t vocab = saefw_tokenizer_vocab_size(t);
    int u16 = o.dtype ? !strcmp(o.dtype, "uint16") : vocab <= 65536;
    if (u16 && vocab > 65536) {
        saefw_errf(err, sizeof err, "--dtype uint16: the vocabulary has %lld ids, more than uint16 holds",
                   (long long)vocab);
        goto fail;
    }
    int32_t bos = (int32_t)saefw_tokenizer_bos(t), eos = (int32_t)saefw_tokenizer_eos(t);
    if ((o.bos && bos < 0) || (o.eos && eos < 0)) {
        saefw_errf(err, sizeof err, "%s: the tokenizer has no %s token", path, o.bos && bos < 0 ? "BOS" : "EOS");
        goto fail;
    }
    uint64_t total_bytes = 0, done_bytes = 0, tokens = 0, docs = 0;
    for (int i = 0; i < o.n_inputs; i++) {
        struct stat st;
        int zst;
        if (stat(o.inputs[i], &st) != 0 || !S_ISREG(st.st_mode)) {
            saefw_errf(err, sizeof err, "%s: no such file", o.inputs[i]);
            goto fail;
        }
        if (input_kind(o.inputs[i], &zst) == IN_PARQUET) { /* the column is checked before anything is written */
            saefw_parquet *pq = NULL;
            int bad = saefw_parquet_open(o.inputs[i], &pq, err, sizeof err) != 0 ||
                      saefw_parquet_find(pq, o.field, SAEFW_PQ_STRING, err, sizeof err) < 0;
            saefw_parquet_close(pq);
            if (bad) goto fail;
        }
        total_bytes += (uint64_t)st.st_size;
    }
    f = saefw_atomic_open(o.out, tmp, sizeof tmp, err, sizeof err);
    if (!f) goto fail;
    int npy = saefw_ends_with(o.out, ".npy");
    char hdr[NPY_HEADER];
    npy_header(hdr, u16, 0);
    if (npy && fwrite(hdr, 1, NPY_HEADER, f) != NPY_HEADER) {
        saefw_errf(err, sizeof err, "%s: write failed: %s", o.out, strerror(errno));
        goto fail;
    }
    for (int i = 0; i < o.threads; i++) {
        w[i].s = saefw_tokenizer_scratch_new(t);
        if (!w[i].s) {
            saefw_errf(err, sizeof err, "out of memory");
            goto fail;
        }
    }
    size_t cap = 2 * (size_t)BATCH_BYTES, len = 0;
    buf = malloc(cap + 1);
    if (!buf) {
        saefw_errf(err, sizeof err, "out of memory");
        goto fail;
    }
    double t0 = saefw_now(), last = t0;
    for (int fi = 0; fi < o.n_inputs; fi++) {
        int zst;
        if (input_kind(o.inputs[fi], &zst) == IN_PARQUET) {
            worker proto = {.t = t,
                            .flags = o.special ? SAEFW_TOK_SPECIAL : 0,
                            .bos = o.bos ? bos : -1,
                            .eos = o.eos ? eos : -1,
                            .field = o.field};
            if (tokenize_parquet(o.inputs[fi], &proto, w, o.threads, f, u16, o.out, t0, &last, &done_bytes, total_bytes,
                                 &tokens, &docs, err, sizeof err) != 0)
                goto fail;
            continue;
        }
        if (input_open(&in, o.inputs[fi], err, sizeof err) != 0) goto fail;
        int64_t line = 1;
        int first = 1;
        len = 0;
        while (!in.eof || len > 0) {
            while (!in.eof && len < BATCH_BYTES) {
                size_t got;
                if (input_read(&in, buf + len, cap - len, &got, err, sizeof err) != 0) goto fail;
                len += got;
            }
            /* The batch: up to the last cut point (or everything at the end of the input). */
            size_t bl = in.eof ? len : last_cut(buf, 0, len, in.kind);
            if (bl == 0) {
                if (len >= cap) { /* one line or text run longer than the buffer: grow it */
                    char *q = realloc(buf, 2 * cap + 1);
                    if (!q) {
                        saefw_errf(err, sizeof err, "%s: out of memory for a %zu-byte line", in.path, len);
                        goto fail;
                    }
                    buf = q;
                    cap *= 2;
                }
                if (!in.eof) {
                    size_t got;
                    if (input_read(&in, buf + len, cap - len, &got, err, sizeof err) != 0) goto fail;
                    len += got;
                    continue;
                }
                bl = len;
            }
            /* Pieces for the threads, each ending at a cut point. */
            int nt = 0;
            size_t start = 0;
            int64_t l = line;
            for (int k = 0; k < o.threads && start < bl; k++) {
                size_t end = k == o.threads - 1 ? bl : start + (bl - start) / (size_t)(o.threads - k);
                if (end < bl) {
                    size_t c = last_cut(buf, start, end, in.kind);
                    end = c > start ? c : bl;
                }
                worker *x = &w[nt++];
                x->t = t;
                x->path = in.path;
                x->kind = in.kind;
                x->flags = o.special ? SAEFW_TOK_SPECIAL : 0;
                x->bos = o.bos ? bos : -1;
                x->eos = o.eos ? eos : -1;
                x->bos_first = first && start == 0;
                x->eos_last = in.eof && end == bl && bl == len;
                x->field = o.field;
                x->p = buf + start;
                x->len = end - start;
                x->line = l;
                if (in.kind == IN_JSONL)
                    for (const char *q = x->p; (q = memchr(q, '\n', (size_t)(buf + end - q))); q++) l++;
                start = end;
            }
            if (run_workers(w, nt, f, u16, o.out, &tokens, &docs, err, sizeof err) != 0) goto fail;
            line = l;
            first = 0;
            memmove(buf, buf + bl, len - bl);
            len -= bl;
            progress(t0, &last, 0, done_bytes + in.consumed, total_bytes, tokens);
        }
        if (in.kind == IN_TEXT) docs++;
        done_bytes += in.consumed;
        input_close(&in);
    }
    if (npy) {
        npy_header(hdr, u16, tokens);
        if (fseek(f, 0, SEEK_SET) != 0 || fwrite(hdr, 1, NPY_HEADER, f) != NPY_HEADER) {
            saefw_errf(err, sizeof err, "%s: write failed: %s", o.out, strerror(errno));
            goto fail;
        }
    }
    FILE *ff = f;
    f = NULL;
    if (saefw_atomic_commit(ff, tmp, o.out, err, sizeof err) != 0) goto fail;
    progress(t0, &last, 1, total_bytes, total_bytes, tokens);
    printf("wrote %s: %llu tokens from %llu documents, dtype %s%s, %.1f s\n", o.out, (unsigned long long)tokens,
           (unsigned long long)docs, u16 ? "uint16" : "int32", npy ? "" : " (raw little-endian)", saefw_now() - t0);
    rc = 0;
fail:
    if (rc != 0) fprintf(stderr, "saefw tokenize: %s\n", err);
    if (f) saefw_atomic_abort(f, tmp);
    input_close(&in);
    for (int i = 0; i < MAX_THREADS; i++) {
        saefw_tokenizer_scratch_free(w[i].s);
        free(w[i].ids);
    }
    free(buf);
    saefw_tokenizer_free(t);
    free(o.inputs);
    return rc;
}
