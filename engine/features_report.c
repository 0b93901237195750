/* Writing the report folder of a feature analysis: JSON by hand (compact numbers, streamed, so a
 * shard never exists as a tree in memory), the viewer copied beside it, the folder swapped in whole. */
#include "features_report.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

/* ---- JSON output ---- */

static void j_str(FILE *fp, const char *s) {
    fputc('"', fp);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned c = *p;
        if (c == '"' || c == '\\') {
            fputc('\\', fp);
            fputc((int)c, fp);
        } else if (c == '\n') {
            fputs("\\n", fp);
        } else if (c == '\t') {
            fputs("\\t", fp);
        } else if (c == '\r') {
            fputs("\\r", fp);
        } else if (c < 0x20 || c == 0x7F) {
            fprintf(fp, "\\u%04x", c);
        } else if (c == 0xE2 && p[1] == 0x80 && (p[2] == 0xA8 || p[2] == 0xA9)) {
            /* U+2028/U+2029 are valid in JSON but end a line in older JavaScript. */
            fprintf(fp, "\\u%04x", p[2] == 0xA8 ? 0x2028 : 0x2029);
            p += 2;
        } else if (c == '<' && p[1] == '/') {
            fputs("<\\/", fp); /* no "</script>" in the data scripts */
            p++;
        } else {
            fputc((int)c, fp);
        }
    }
    fputc('"', fp);
}

/* A number with 6 significant digits; NaN and infinities (never expected) as null. */
static void j_num(FILE *fp, double v) {
    if (!isfinite(v)) fputs("null", fp);
    else if (v == 0) fputc('0', fp);
    else fprintf(fp, "%.6g", v);
}

static void j_key(FILE *fp, const char *k) {
    j_str(fp, k);
    fputc(':', fp);
}

/* ---- token strings, made once per id ---- */

typedef struct {
    const saefw_token_decoder *dec;
    int64_t V;
    char **s; /* [V]: made on first use */
} tok_cache;

static const char *tok_str(tok_cache *c, int32_t id) {
    static char bad[32];
    if (id < 0 || id >= c->V) {
        snprintf(bad, sizeof bad, "#%d", (int)id);
        return bad;
    }
    if (!c->s[id]) {
        char buf[1024];
        saefw_token_text(c->dec, id, buf, sizeof buf);
        c->s[id] = strdup(buf);
        if (!c->s[id]) return "";
    }
    return c->s[id];
}

/* ---- the objects ---- */

static void w_example_tokens(FILE *fp, tok_cache *tc, const saefw_feature_example *e) {
    j_key(fp, "tokens");
    fputc('[', fp);
    for (int i = 0; i < e->n; i++) {
        if (i) fputc(',', fp);
        j_str(fp, tok_str(tc, e->tokens[i]));
    }
    fputs("],", fp);
}

static void w_example_acts(FILE *fp, const saefw_feature_example *e) {
    fputc('[', fp);
    for (int i = 0; i < e->n; i++) {
        if (i) fputc(',', fp);
        j_num(fp, e->acts[i]);
    }
    fputc(']', fp);
}

/* The viewer's example: {"max","pos" (index of the max token in tokens),"stream_pos","tokens","acts"}. */
static void w_example(FILE *fp, tok_cache *tc, const saefw_feature_example *e) {
    fputs("{\"max\":", fp);
    j_num(fp, e->max);
    fprintf(fp, ",\"pos\":%d,\"stream_pos\":%lld,", (int)e->at, (long long)e->pos);
    w_example_tokens(fp, tc, e);
    fputs("\"acts\":", fp);
    w_example_acts(fp, e);
    fputc('}', fp);
}

static void band_label(char *buf, size_t n, const saefw_feature_band *b) {
    snprintf(buf, n, "%.4g to %.4g (%lld tokens)", b->lo, b->hi, (long long)b->seen);
}

static void w_logits(FILE *fp, tok_cache *tc, const char *key, int n, const int32_t *ids, const float *vals) {
    j_key(fp, key);
    fputc('[', fp);
    for (int i = 0; i < n; i++) {
        if (i) fputc(',', fp);
        fprintf(fp, "{\"id\":%d,\"str\":", (int)ids[i]);
        j_str(fp, tok_str(tc, ids[i]));
        fputs(",\"value\":", fp);
        j_num(fp, vals[i]);
        fputc('}', fp);
    }
    fputc(']', fp);
}

/* One feature as the viewer's shard holds it. */
static void w_feature(FILE *fp, tok_cache *tc, int64_t i, const saefw_feature_info *fi) {
    fprintf(fp, "{\"i\":%lld,\"density\":", (long long)i);
    j_num(fp, fi->density);
    fputs(",\"max_act\":", fp);
    j_num(fp, fi->max_act);
    fputs(",\"mean_act\":", fp);
    j_num(fp, fi->mean_act);
    fputs(",\"act_hist\":{\"edges\":[", fp);
    for (int b = 0; fi->n_hist > 0 && b <= fi->n_hist; b++) {
        if (b) fputc(',', fp);
        j_num(fp, b * fi->hist_width);
    }
    fputs("],\"counts\":[", fp);
    for (int b = 0; b < fi->n_hist; b++) fprintf(fp, b ? ",%lld" : "%lld", (long long)fi->hist[b]);
    fputs("]},", fp);
    w_logits(fp, tc, "top_logits", fi->n_logits, fi->pos_ids, fi->pos_values);
    fputc(',', fp);
    w_logits(fp, tc, "bottom_logits", fi->n_logits, fi->neg_ids, fi->neg_values);
    fputs(",\"examples\":[", fp);
    for (int k = 0; k < fi->n_top; k++) {
        if (k) fputc(',', fp);
        w_example(fp, tc, &fi->top[k]);
    }
    fputs("],\"quantiles\":[", fp);
    for (int b = 0; b < fi->n_bands; b++) {
        char label[128];
        band_label(label, sizeof label, &fi->bands[b]);
        fputs(b ? ",{\"label\":" : "{\"label\":", fp);
        j_str(fp, label);
        fputs(",\"examples\":[", fp);
        for (int k = 0; k < fi->bands[b].n; k++) {
            if (k) fputc(',', fp);
            w_example(fp, tc, &fi->bands[b].ex[k]);
        }
        fputs("]}", fp);
    }
    fputs("]}", fp);
}

static const char *neuron_class_name(int c) {
    return c == 1 ? "1-sparse" : c == 10 ? "10-sparse" : c == 0 ? "dense" : NULL;
}

/* An example in Neuronpedia's activation shape. */
static void w_np_activation(FILE *fp, tok_cache *tc, const saefw_feature_example *e, const saefw_feature_band *b) {
    fputc('{', fp);
    w_example_tokens(fp, tc, e);
    fputs("\"values\":", fp);
    w_example_acts(fp, e);
    fputs(",\"maxValue\":", fp);
    j_num(fp, e->max);
    fprintf(fp, ",\"maxValueTokenIndex\":%d,\"stream_pos\":%lld", (int)e->at, (long long)e->pos);
    if (b) {
        fputs(",\"bin_min\":", fp);
        j_num(fp, b->lo);
        fputs(",\"bin_max\":", fp);
        j_num(fp, b->hi);
    }
    fputc('}', fp);
}

/* One line of features.jsonl (field names after Neuronpedia's feature export). */
static void w_feature_np(FILE *fp, tok_cache *tc, int64_t i, const saefw_feature_info *fi) {
    fprintf(fp, "{\"index\":%lld,\"maxActApprox\":", (long long)i);
    j_num(fp, fi->max_act);
    fputs(",\"frac_nonzero\":", fp);
    j_num(fp, fi->density);
    fputs(",\"mean_act\":", fp);
    j_num(fp, fi->mean_act);
    const char *nc = neuron_class_name(fi->neuron_class);
    fputs(",\"neuron_sparsity\":", fp);
    if (nc) j_str(fp, nc);
    else fputs("null", fp);
    const char *keys[2][2] = {{"pos_str", "pos_values"}, {"neg_str", "neg_values"}};
    for (int s = 0; s < 2; s++) {
        const int32_t *ids = s ? fi->neg_ids : fi->pos_ids;
        const float *vals = s ? fi->neg_values : fi->pos_values;
        fputc(',', fp);
        j_key(fp, keys[s][0]);
        fputc('[', fp);
        for (int k = 0; k < fi->n_logits; k++) {
            if (k) fputc(',', fp);
            j_str(fp, tok_str(tc, ids[k]));
        }
        fputs("],", fp);
        j_key(fp, keys[s][1]);
        fputc('[', fp);
        for (int k = 0; k < fi->n_logits; k++) {
            if (k) fputc(',', fp);
            j_num(fp, vals[k]);
        }
        fputc(']', fp);
    }
    /* Bar heights and bar centres, parallel arrays as Neuronpedia reads them. */
    fputs(",\"freq_hist_data_bar_heights\":[", fp);
    for (int b = 0; b < fi->n_hist; b++) fprintf(fp, b ? ",%lld" : "%lld", (long long)fi->hist[b]);
    fputs("],\"freq_hist_data_bar_values\":[", fp);
    for (int b = 0; b < fi->n_hist; b++) {
        if (b) fputc(',', fp);
        j_num(fp, (b + 0.5) * fi->hist_width);
    }
    fputs("],\"activations\":[", fp);
    int first = 1;
    for (int k = 0; k < fi->n_top; k++, first = 0) {
        if (!first) fputc(',', fp);
        w_np_activation(fp, tc, &fi->top[k], NULL);
    }
    for (int b = 0; b < fi->n_bands; b++)
        for (int k = 0; k < fi->bands[b].n; k++, first = 0) {
            if (!first) fputc(',', fp);
            w_np_activation(fp, tc, &fi->bands[b].ex[k], &fi->bands[b]);
        }
    fputs("]}\n", fp);
}

static const char LOGIT_NOTE[] =
    "direct path: decoder row (through W_out at an MLP site) centred and scaled by ln_final.w (final "
    "LayerNorm folded; its 1/std left out), times W_U, centred over the vocab; b_U and ln_final.b excluded";

/* The summary object; edges of the density histogram: 0.25 wide from the lowest live density's (at
 * most 1e-6) down to 1e0, dead features as their own bar one decade below. */
static void w_summary(FILE *fp, tok_cache *tc, const saefw_features *f, const saefw_report_opts *o, int shard_size) {
    const int64_t D = f->d_sae;
    double lo = -6;
    int64_t dead = 0;
    for (int64_t i = 0; i < D; i++) {
        if (f->f[i].density > 0) {
            double l = log10(f->f[i].density);
            if (l < lo) lo = l;
        } else {
            dead++;
        }
    }
    lo = floor(lo * 4) / 4;
    int nbins = (int)llround(-lo * 4);
    fputs("{\"schema\":\"" SAEFW_FEATURES_SCHEMA "\",\"sae\":{\"checkpoint\":", fp);
    j_str(fp, o->checkpoint ? o->checkpoint : "");
    fprintf(fp, ",\"d_in\":%lld,\"d_sae\":%lld,\"hook_name\":", (long long)f->d_in, (long long)D);
    j_str(fp, o->hook_name ? o->hook_name : "");
    fputs(",\"model_name\":", fp);
    j_str(fp, o->model_name ? o->model_name : "");
    fprintf(fp,
            "},\"tokens_analyzed\":%lld,\"seed\":%llu,\"context_before\":%d,\"context_after\":%d,\"top_k\":%d,"
            "\"shard_size\":%d,\"n_shards\":%lld,\"tokenizer\":",
            (long long)f->tokens_analyzed, (unsigned long long)f->seed, f->ctx_before, f->ctx_after, f->top_k,
            shard_size, (long long)((D + shard_size - 1) / shard_size));
    if (o->dec && o->dec->token_bytes && o->dec->name) j_str(fp, o->dec->name);
    else fputs("null", fp);
    fputs(",\"density_histogram\":{\"log10_edges\":[", fp);
    for (int b = 0; b <= nbins; b++) {
        if (b) fputc(',', fp);
        j_num(fp, lo + b * 0.25);
    }
    fputs("],\"counts\":[", fp);
    for (int b = 0; b < nbins; b++) {
        int64_t n = 0;
        for (int64_t i = 0; i < D; i++) {
            double d = f->f[i].density;
            if (!(d > 0)) continue;
            int k = (int)floor((log10(d) - lo) * 4);
            if (k >= nbins) k = nbins - 1; /* density 1 belongs to the last bar */
            if (k < 0) k = 0;
            n += k == b;
        }
        fprintf(fp, b ? ",%lld" : "%lld", (long long)n);
    }
    fprintf(fp, "],\"dead\":%lld,\"dead_bin_log10\":", (long long)dead);
    j_num(fp, lo - 1);
    fputs("},\"logit_effects\":", fp);
    j_str(fp, LOGIT_NOTE);
    fputs(",\"neuron_sparsity\":", fp);
    if (f->one_sparse >= 0)
        fprintf(fp, "{\"one_sparse\":%lld,\"ten_sparse\":%lld,\"dense\":%lld}", (long long)f->one_sparse,
                (long long)f->ten_sparse, (long long)f->dense);
    else fputs("null", fp);
    fputs(",\"rare_direction\":", fp);
    if (f->n_rare > 0) {
        fprintf(fp, "{\"threshold\":%g,\"n_rare\":%lld,\"cos_edges\":[", f->rare_threshold, (long long)f->n_rare);
        for (int b = 0; b <= SAEFW_RARE_BINS; b++) fprintf(fp, b ? ",%g" : "%g", -1.0 + 2.0 * b / SAEFW_RARE_BINS);
        fputs("],\"cos_counts\":[", fp);
        for (int b = 0; b < SAEFW_RARE_BINS; b++) fprintf(fp, b ? ",%lld" : "%lld", (long long)f->rare_cos_hist[b]);
        fputs("]}", fp);
    } else {
        fputs("null", fp);
    }
    fputs(",\"features\":[", fp);
    for (int64_t i = 0; i < D; i++) {
        const saefw_feature_info *fi = &f->f[i];
        fprintf(fp, i ? ",\n{\"i\":%lld,\"density\":" : "\n{\"i\":%lld,\"density\":", (long long)i);
        j_num(fp, fi->density);
        fputs(",\"max_act\":", fp);
        j_num(fp, fi->max_act);
        fputs(",\"mean_act\":", fp);
        j_num(fp, fi->mean_act);
        fputs(",\"top_logits\":[", fp);
        for (int k = 0; k < fi->n_logits && k < 3; k++) {
            if (k) fputc(',', fp);
            j_str(fp, tok_str(tc, fi->pos_ids[k]));
        }
        fputs("]}", fp);
    }
    fputs("]}", fp);
}

/* ---- files and folders ---- */

static int close_checked(FILE *fp, const char *path, char *err, size_t errlen) {
    int bad = ferror(fp);
    if (fclose(fp) != 0 || bad)
        return saefw_errf(err, errlen, "%s: write failed: %s", path, strerror(errno ? errno : EIO));
    return 0;
}

static FILE *open_w(const char *path, char *err, size_t errlen) {
    FILE *fp = fopen(path, "w");
    if (!fp) saefw_errf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
    return fp;
}

/* Remove a folder of report files (regular files, one level of subfolders). */
static void remove_report_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[PATH_MAX];
        struct stat st;
        if (saefw_pathf(p, sizeof p, NULL, 0, "%s/%s", dir, e->d_name) != 0 || lstat(p, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            DIR *d2 = opendir(p);
            struct dirent *e2;
            while (d2 && (e2 = readdir(d2))) {
                if (!strcmp(e2->d_name, ".") || !strcmp(e2->d_name, "..")) continue;
                char p2[PATH_MAX];
                if (saefw_pathf(p2, sizeof p2, NULL, 0, "%s/%s", p, e2->d_name) == 0) unlink(p2);
            }
            if (d2) closedir(d2);
            rmdir(p);
        } else {
            unlink(p);
        }
    }
    closedir(d);
    rmdir(dir);
}

static int copy_file(const char *src, const char *dst, char *err, size_t errlen) {
    char *data = NULL;
    size_t len = 0;
    if (saefw_read_file(src, &data, &len, err, errlen) != 0) return -1;
    FILE *fp = open_w(dst, err, errlen);
    if (!fp) {
        free(data);
        return -1;
    }
    fwrite(data, 1, len, fp);
    free(data);
    return close_checked(fp, dst, err, errlen);
}

/* Copy the viewer's regular files; 0 with *found = 0 when there is no viewer folder. */
static int copy_viewer(const char *src_dir, const char *dst_dir, int *found, char *err, size_t errlen) {
    *found = 0;
    DIR *d = src_dir ? opendir(src_dir) : NULL;
    if (!d) return 0;
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        char s[PATH_MAX], t[PATH_MAX];
        struct stat st;
        if (e->d_name[0] == '.') continue;
        if ((rc = saefw_pathf(s, sizeof s, err, errlen, "%s/%s", src_dir, e->d_name)) != 0) break;
        if (stat(s, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        if ((rc = saefw_pathf(t, sizeof t, err, errlen, "%s/%s", dst_dir, e->d_name)) != 0) break;
        rc = copy_file(s, t, err, errlen);
        if (!strcmp(e->d_name, "index.html")) *found = 1;
    }
    closedir(d);
    return rc;
}

static const char PLACEHOLDER[] = "<!doctype html>\n<meta charset=\"utf-8\">\n<title>saefw feature report</title>\n"
                                  "<p>The saefw report viewer is not installed, so this report has its data only: "
                                  "<code>summary.json</code>, <code>features.jsonl</code> and <code>data/</code> "
                                  "(the format is described in saefw's docs/features.md).</p>\n";

/* Whether dir may be replaced: absent, empty, or an earlier report. */
static int replaceable(const char *dir, int *exists, char *err, size_t errlen) {
    struct stat st;
    *exists = 0;
    if (stat(dir, &st) != 0) return 0;
    *exists = 1;
    if (!S_ISDIR(st.st_mode)) return saefw_errf(err, errlen, "%s exists and is not a folder", dir);
    char p[PATH_MAX];
    if (saefw_pathf(p, sizeof p, err, errlen, "%s/summary.json", dir) != 0) return -1;
    if (access(p, F_OK) == 0) return 0;
    DIR *d = opendir(dir);
    if (!d) return saefw_errf(err, errlen, "%s: cannot read: %s", dir, strerror(errno));
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = 0;
    closedir(d);
    if (!empty)
        return saefw_errf(err, errlen, "%s exists and is not a saefw report (no summary.json): choose another folder",
                          dir);
    return 0;
}

static int write_all(const saefw_features *f, const saefw_report_opts *o, int shard_size, const char *tmp, char *err,
                     size_t errlen) {
    tok_cache tc = {o->dec, f->d_vocab, NULL};
    tc.s = saefw_calloc((size_t)(f->d_vocab > 0 ? f->d_vocab : 1), sizeof(char *), err, errlen);
    if (!tc.s) return -1;
    int rc = -1;
    char path[PATH_MAX], viewer[PATH_MAX];
    FILE *fp = NULL;
    if (saefw_pathf(path, sizeof path, err, errlen, "%s/data", tmp) != 0 || saefw_mkdirs(path, err, errlen) != 0)
        goto out;
    /* summary.json and data/summary.js */
    for (int js = 0; js < 2; js++) {
        if (saefw_pathf(path, sizeof path, err, errlen, js ? "%s/data/summary.js" : "%s/summary.json", tmp) != 0 ||
            !(fp = open_w(path, err, errlen)))
            goto out;
        if (js) fputs("saefwReport.summary(", fp);
        w_summary(fp, &tc, f, o, shard_size);
        fputs(js ? ");\n" : "\n", fp);
        int c = close_checked(fp, path, err, errlen);
        fp = NULL;
        if (c != 0) goto out;
    }
    /* shards */
    for (int64_t s0 = 0, sh = 0; s0 < f->d_sae; s0 += shard_size, sh++) {
        if (saefw_pathf(path, sizeof path, err, errlen, "%s/data/shard_%04lld.js", tmp, (long long)sh) != 0 ||
            !(fp = open_w(path, err, errlen)))
            goto out;
        fprintf(fp, "saefwReport.shard(%lld,{\"first\":%lld,\"features\":[", (long long)sh, (long long)s0);
        for (int64_t i = s0; i < f->d_sae && i < s0 + shard_size; i++) {
            if (i > s0) fputs(",\n", fp);
            w_feature(fp, &tc, i, &f->f[i]);
        }
        fputs("]});\n", fp);
        int c = close_checked(fp, path, err, errlen);
        fp = NULL;
        if (c != 0) goto out;
    }
    if (saefw_pathf(path, sizeof path, err, errlen, "%s/features.jsonl", tmp) != 0 || !(fp = open_w(path, err, errlen)))
        goto out;
    for (int64_t i = 0; i < f->d_sae; i++) w_feature_np(fp, &tc, i, &f->f[i]);
    {
        int c = close_checked(fp, path, err, errlen);
        fp = NULL;
        if (c != 0) goto out;
    }
    /* the viewer */
    const char *vdir = o->viewer_dir;
    if (!vdir && saefw_exe_relative(SAEFW_DATA_SUBDIR "/report", viewer, sizeof viewer) == 0) vdir = viewer;
    int found = 0;
    if (copy_viewer(vdir, tmp, &found, err, errlen) != 0) goto out;
    if (!found) {
        if (saefw_pathf(path, sizeof path, err, errlen, "%s/index.html", tmp) != 0 || !(fp = open_w(path, err, errlen)))
            goto out;
        fputs(PLACEHOLDER, fp);
        int c = close_checked(fp, path, err, errlen);
        fp = NULL;
        if (c != 0) goto out;
    }
    rc = 0;
out:
    if (fp) fclose(fp);
    for (int64_t i = 0; i < f->d_vocab; i++) free(tc.s[i]);
    free(tc.s);
    return rc;
}

int saefw_features_write_report(const saefw_features *f, const saefw_report_opts *o, const char *dir, char *err,
                                size_t errlen) {
    saefw_report_opts def;
    if (!o) {
        memset(&def, 0, sizeof def);
        o = &def;
    }
    int shard_size = o->shard_size > 0 ? o->shard_size : 64;
    int exists = 0;
    if (replaceable(dir, &exists, err, errlen) != 0) return -1;
    char tmp[PATH_MAX], old[PATH_MAX];
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dl--;
    if (saefw_pathf(tmp, sizeof tmp, err, errlen, "%.*s.tmp.%ld", (int)dl, dir, (long)getpid()) != 0 ||
        saefw_pathf(old, sizeof old, err, errlen, "%.*s.old.%ld", (int)dl, dir, (long)getpid()) != 0)
        return -1;
    remove_report_dir(tmp);
    if (write_all(f, o, shard_size, tmp, err, errlen) != 0) {
        remove_report_dir(tmp);
        return -1;
    }
    if (exists && rename(dir, old) != 0) {
        int e = errno;
        remove_report_dir(tmp);
        return saefw_errf(err, errlen, "%s: cannot move the earlier report aside: %s", dir, strerror(e));
    }
    if (rename(tmp, dir) != 0) {
        int e = errno;
        if (exists) rename(old, dir);
        remove_report_dir(tmp);
        return saefw_errf(err, errlen, "%s: cannot rename the new report into place: %s", dir, strerror(e));
    }
    if (exists) remove_report_dir(old);
    return 0;
}
