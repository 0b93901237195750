/* `saefw tokens convert`: a Parquet token dataset into a flat .npy token file (by default the token
 * cache that saefw.tokens() reads, so a run started afterwards does not convert again). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parallel.h"
#include "token_dataset.h"
#include "dataset_resolve.h"
#include "tokens_cmd.h"
#include "util.h"

static const char TOKENS_USAGE[] =
    "usage: saefw tokens convert DATASET [--column NAME] [--out FILE.npy] [--threads N]\n"
    "  DATASET: hf://datasets/ORG/NAME[@REV][/GLOB], a cached ORG/NAME, a folder, a .parquet file or a glob\n"
    "  --out: default the token cache that saefw.tokens(DATASET) reads (converted once)\n";

int saefw_cmd_tokens(int argc, char **argv) {
    if (argc < 3 || strcmp(argv[1], "convert") != 0) {
        fputs(TOKENS_USAGE, stderr);
        return 2;
    }
    const char *spec = NULL, *column = NULL, *out = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--column") || !strcmp(a, "--out") || !strcmp(a, "--threads")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "saefw tokens convert: %s needs a value\n", a);
                return 2;
            }
            const char *v = argv[++i];
            if (!strcmp(a, "--column")) column = v;
            else if (!strcmp(a, "--out")) out = v;
            else {
                char terr[256];
                int t;
                if (saefw_threads_arg(v, SAEFW_MAX_THREADS, &t, terr, sizeof terr) != 0) {
                    fprintf(stderr, "saefw tokens convert: %s\n", terr);
                    return 2;
                }
                saefw_set_threads(t);
            }
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "saefw tokens convert: unknown option %s\n%s", a, TOKENS_USAGE);
            return 2;
        } else if (!spec) {
            spec = a;
        } else {
            fprintf(stderr, "saefw tokens convert: one dataset only (got '%s' and '%s')\n", spec, a);
            return 2;
        }
    }
    if (!spec) {
        fputs(TOKENS_USAGE, stderr);
        return 2;
    }
    char err[2048];
    char path[PATH_MAX];
    if (!out) {
        if (saefw_token_dataset_prepare(spec, column, -1, path, sizeof path, err, sizeof err) != 0) {
            fprintf(stderr, "saefw tokens convert: %s\n", err);
            return 1;
        }
        printf("%s\n", path);
        return 0;
    }
    saefw_shards sh;
    if (saefw_dataset_resolve(spec, NULL, &sh, err, sizeof err) != 0) {
        fprintf(stderr, "saefw tokens convert: %s\n", err);
        return 1;
    }
    saefw_token_convert_opts o = {
        .shards = (const char *const *)sh.paths, .n_shards = (int)sh.n, .column = column, .out = out, .progress = -1};
    saefw_token_convert_stats st;
    int rc = saefw_tokens_convert(&o, &st, err, sizeof err);
    saefw_shards_free(&sh);
    if (rc != 0) {
        fprintf(stderr, "saefw tokens convert: %s\n", err);
        return 1;
    }
    fprintf(stderr, "%lld rows, %lld tokens (%s%s) in %.1f s (%.1fM tokens/s)\n", (long long)st.rows,
            (long long)st.tokens, st.dtype_bits == 16 ? "uint16" : "int32",
            st.row_len > 0 ? ", equal rows" : ", one stream", st.seconds,
            st.seconds > 0 ? (double)st.tokens / st.seconds / 1e6 : 0.0);
    printf("%s\n", out);
    return 0;
}
