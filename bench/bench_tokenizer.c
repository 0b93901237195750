/* Benchmark of the byte-level BPE tokenizer: encode tokens/s over a few MB of text, on one thread and
 * on two (each thread its own scratch and word cache, documents dealt out in turn).
 *   build/bin/bench_tokenizer TOKENIZER FILE... [--mb N]   (figures printed, nothing asserted)
 * Each FILE is one document; the files are read in turn, repeated if needed, until N MB (default 8). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "util.h"

typedef struct {
    const char *p;
    size_t len;
} doc;

typedef struct {
    const saefw_tokenizer *t;
    const doc *docs;
    int n_docs, first, step;
    size_t tokens;
    int rc;
    char err[256];
} worker;

static void *run(void *arg) {
    worker *w = arg;
    saefw_tokenizer_scratch *s = saefw_tokenizer_scratch_new(w->t);
    int32_t *ids = NULL;
    size_t cap = 0;
    w->rc = s ? 0 : -1;
    for (int i = w->first; i < w->n_docs && w->rc == 0; i += w->step) {
        size_t n = 0;
        w->rc = saefw_tokenizer_encode(w->t, s, w->docs[i].p, w->docs[i].len, 0, &ids, &n, &cap, w->err, sizeof w->err);
        w->tokens += n;
    }
    free(ids);
    saefw_tokenizer_scratch_free(s);
    return NULL;
}

static double encode_all(const saefw_tokenizer *t, const doc *docs, int n_docs, int threads, size_t *tokens) {
    worker w[8];
    pthread_t th[8];
    double t0 = saefw_now();
    for (int i = 0; i < threads; i++) {
        w[i] = (worker){t, docs, n_docs, i, threads, 0, 0, ""};
        if (pthread_create(&th[i], NULL, run, &w[i]) != 0) {
            fprintf(stderr, "bench_tokenizer: cannot start a thread\n");
            exit(1);
        }
    }
    *tokens = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        if (w[i].rc != 0) {
            fprintf(stderr, "bench_tokenizer: encode: %s\n", w[i].err);
            exit(1);
        }
        *tokens += w[i].tokens;
    }
    return saefw_now() - t0;
}

int main(int argc, char **argv) {
    const char *tok_path = NULL;
    const char *files[4096];
    int n_files = 0;
    double mb = 8;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mb") && i + 1 < argc) mb = atof(argv[++i]);
        else if (!tok_path) tok_path = argv[i];
        else if (n_files < 4096) files[n_files++] = argv[i];
    }
    if (!tok_path || n_files == 0 || mb <= 0) {
        fprintf(stderr, "usage: bench_tokenizer TOKENIZER FILE... [--mb N]\n");
        return 2;
    }
    char err[512];
    saefw_tokenizer *t;
    double t0 = saefw_now();
    if (saefw_tokenizer_load(tok_path, &t, err, sizeof err) != 0) {
        fprintf(stderr, "bench_tokenizer: %s\n", err);
        return 1;
    }
    printf("load %s: %.3f s, vocab %lld\n", tok_path, saefw_now() - t0, (long long)saefw_tokenizer_vocab_size(t));
    char *texts[4096];
    size_t lens[4096], total = 0, want = (size_t)(mb * 1e6);
    for (int i = 0; i < n_files; i++)
        if (saefw_read_file(files[i], &texts[i], &lens[i], err, sizeof err) != 0) {
            fprintf(stderr, "bench_tokenizer: %s\n", err);
            return 1;
        }
    int cap = 1024, n_docs = 0;
    doc *docs = malloc(sizeof *docs * (size_t)cap);
    for (int i = 0; total < want && docs; i = (i + 1) % n_files) {
        if (n_docs == cap) docs = realloc(docs, sizeof *docs * (size_t)(cap *= 2));
        if (!docs) break;
        docs[n_docs++] = (doc){texts[i], lens[i]};
        total += lens[i];
    }
    if (!docs) {
        fprintf(stderr, "bench_tokenizer: out of memory\n");
        return 1;
    }
    printf("text: %d documents from %d files, %.2f MB\n", n_docs, n_files, total / 1e6);
    for (int threads = 1; threads <= 2; threads++) {
        size_t tokens;
        double dt = encode_all(t, docs, n_docs, threads, &tokens);
        printf("%d thread%s: %zu tokens in %.3f s: %.2f M tokens/s, %.1f MB/s, %.2f bytes/token\n", threads,
               threads > 1 ? "s" : " ", tokens, dt, tokens / dt / 1e6, total / dt / 1e6,
               (double)total / (double)tokens);
    }
    for (int i = 0; i < n_files; i++) free(texts[i]);
    free(docs);
    saefw_tokenizer_free(t);
    return 0;
}
