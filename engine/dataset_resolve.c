/* Dataset resolution: hf://datasets/ URIs and ORG/NAME through the huggingface_hub cache, local
 * folders, files and globs, to a sorted list of local shard paths. */
#include "dataset_resolve.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model_resolve.h"
#include "util.h"

#define DEFAULT_PATTERN "**/*.parquet"
#define MAX_DEPTH 64

/* One [...] set at *pp against c: 1 match, 0 no match, -1 not a set (no closing ']'). Advances
 * *pp past the set when it is one. */
static int class_match(const char **pp, char c) {
    const char *p = *pp + 1;
    int neg = *p == '!' || *p == '^';
    if (neg) p++;
    int hit = 0, first = 1;
    while (*p && (*p != ']' || first)) {
        first = 0;
        if (p[1] == '-' && p[2] && p[2] != ']') {
            if ((unsigned char)c >= (unsigned char)p[0] && (unsigned char)c <= (unsigned char)p[2]) hit = 1;
            p += 3;
        } else {
            if (c == *p) hit = 1;
            p++;
        }
    }
    if (*p != ']') return -1;
    *pp = p + 1;
    return c != '/' && hit != neg;
}

int saefw_glob_match(const char *p, const char *s) {
    for (;;) {
        if (p[0] == '*' && p[1] == '*') {
            const char *rest = p + 2;
            while (*rest == '*') rest++;
            if (*rest == '/') {
                /* "**" + "/": zero or more whole folders. */
                if (saefw_glob_match(rest + 1, s)) return 1;
                for (const char *q = s; *q; q++)
                    if (*q == '/' && saefw_glob_match(rest + 1, q + 1)) return 1;
                return 0;
            }
            for (const char *q = s;; q++) {
                if (saefw_glob_match(rest, q)) return 1;
                if (!*q) return 0;
            }
        }
        if (*p == '*') {
            for (const char *q = s;; q++) {
                if (saefw_glob_match(p + 1, q)) return 1;
                if (!*q || *q == '/') return 0;
            }
        }
        if (!*p) return !*s;
        if (!*s) return 0;
        if (*p == '?') {
            if (*s == '/') return 0;
            p++, s++;
            continue;
        }
        if (*p == '[') {
            const char *q = p;
            int r = class_match(&q, *s);
            if (r == 0) return 0;
            if (r == 1) {
                p = q, s++;
                continue;
            }
        }
        if (*p != *s) return 0;
        p++, s++;
    }
}

static int has_magic(const char *s) { return strpbrk(s, "*?[") != NULL; }

/* Whether the glob spells a name with a leading '.', so hidden names are wanted. */
static int wants_hidden(const char *glob) { return glob[0] == '.' || strstr(glob, "/.") != NULL; }

typedef struct {
    char **v;
    size_t n, cap;
} paths;

static int paths_add(paths *l, const char *s, char *err, size_t errlen) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v) return saefw_errf(err, errlen, "out of memory listing shards");
        l->v = v;
        l->cap = cap;
    }
    if (!(l->v[l->n] = saefw_strdup(s, err, errlen))) return -1;
    l->n++;
    return 0;
}

static void paths_free(paths *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

typedef struct {
    const char *root; /* prefix of every output path ("" = relative to the current folder) */
    const char *glob; /* matched against the path relative to root */
    const char *repo; /* Hub dataset for messages, or NULL */
    int hidden;
    paths out;
    char *err;
    size_t errlen;
} walk;

static void join(char *out, size_t n, const char *a, const char *b) {
    if (!*a) snprintf(out, n, "%s", b);
    else if (!*b) snprintf(out, n, "%s", a);
    else snprintf(out, n, "%s%s%s", a, a[strlen(a) - 1] == '/' ? "" : "/", b);
}

/* Every file under root/rel whose relative path matches w->glob; folders always descended (a
 * glob with '**' can match at any depth). */
static int walk_dir(walk *w, const char *rel, int depth) {
    char dir[PATH_MAX];
    join(dir, sizeof dir, w->root, rel);
    if (depth > MAX_DEPTH) return saefw_errf(w->err, w->errlen, "%s: folders nested too deep (a symlink loop?)", dir);
    DIR *d = opendir(*dir ? dir : ".");
    if (!d) return saefw_errf(w->err, w->errlen, "%s: cannot list: %s", *dir ? dir : ".", strerror(errno));
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (e->d_name[0] == '.' && !w->hidden) continue;
        char sub[PATH_MAX], full[PATH_MAX];
        join(sub, sizeof sub, rel, e->d_name);
        join(full, sizeof full, w->root, sub);
        struct stat st, lst;
        if (stat(full, &st) != 0) {
            /* A snapshot entry whose blob is gone: say so rather than skipping a shard. */
            if (lstat(full, &lst) == 0 && S_ISLNK(lst.st_mode) && saefw_glob_match(w->glob, sub)) {
                if (w->repo)
                    rc = saefw_errf(w->err, w->errlen,
                                    "%s: the cache entry points at a missing blob (interrupted or "
                                    "cleaned cache?); run: saefw download --dataset %s",
                                    full, w->repo);
                else rc = saefw_errf(w->err, w->errlen, "%s: broken symlink", full);
            }
            continue;
        }
        if (S_ISDIR(st.st_mode)) rc = walk_dir(w, sub, depth + 1);
        else if (S_ISREG(st.st_mode) && saefw_glob_match(w->glob, sub))
            rc = paths_add(&w->out, full, w->err, w->errlen);
    }
    closedir(d);
    return rc;
}

static int cmp_path(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Walk root with glob into out (sorted); `what` names the source in the no-match message, `hint`
 * (may be "") ends it. */
static int collect(const char *root, const char *glob, const char *repo, const char *what, const char *hint,
                   saefw_shards *out, char *err, size_t errlen) {
    walk w = {.root = root, .glob = glob, .repo = repo, .hidden = wants_hidden(glob), .err = err, .errlen = errlen};
    if (walk_dir(&w, "", 0) != 0) {
        paths_free(&w.out);
        return -1;
    }
    if (w.out.n == 0) {
        paths_free(&w.out);
        return saefw_errf(err, errlen, "%s: no file matches %s%s", what, glob, hint);
    }
    qsort(w.out.v, w.out.n, sizeof *w.out.v, cmp_path);
    out->paths = w.out.v;
    out->n = w.out.n;
    if (!(out->root = saefw_strdup(root, err, errlen))) {
        saefw_shards_free(out);
        return -1;
    }
    return 0;
}

static int name_ok(const char *s, size_t n) {
    if (n == 0 || n > 96) return 0;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '_' || s[i] == '.')) return 0;
    return !(s[0] == '.' || s[0] == '-');
}

static int is_hex40(const char *s) {
    size_t i = 0;
    while (i < 40 && isxdigit((unsigned char)s[i]) && !isupper((unsigned char)s[i])) i++;
    return i == 40 && s[40] == 0;
}

/* %XX decoding of a revision in a URI (refs%2Fconvert%2Fparquet). */
static int percent_decode(const char *in, size_t n, char *out, size_t on) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k + 1 >= on) return -1;
        if (in[i] == '%' && i + 2 < n && isxdigit((unsigned char)in[i + 1]) && isxdigit((unsigned char)in[i + 2])) {
            char hex[3] = {in[i + 1], in[i + 2], 0};
            out[k++] = (char)strtol(hex, NULL, 16);
            i += 2;
        } else {
            out[k++] = in[i];
        }
    }
    out[k] = 0;
    return 0;
}

/* The cached snapshot of dataset repo at rev, matched with glob (NULL: pattern). */
static int from_cache(const char *repo, const char *rev, const char *glob, const char *pattern, int bare,
                      saefw_shards *out, char *err, size_t errlen) {
    /* bare: the spec was ORG/NAME, which could also have been a local path. */
    const char *absent = bare ? "is neither a local file or folder nor" : "is not";
    char cmd[512];
    snprintf(cmd, sizeof cmd, "saefw download --dataset %s%s%s", repo, strcmp(rev, "main") ? " --revision " : "",
             strcmp(rev, "main") ? rev : "");
    char dir[PATH_MAX];
    if (saefw_hf_repo_dir("dataset", repo, dir, sizeof dir) != 0)
        return saefw_errf(err, errlen, "dataset %s: the Hugging Face cache path is too long", repo);
    char commit[64] = "";
    if (is_hex40(rev)) {
        snprintf(commit, sizeof commit, "%s", rev);
    } else {
        if (strstr(rev, "..") || rev[0] == '/')
            return saefw_errf(err, errlen, "dataset %s: bad revision '%.100s'", repo, rev);
        char ref[PATH_MAX];
        if (saefw_pathf(ref, sizeof ref, err, errlen, "%s/refs/%s", dir, rev) != 0)
            return saefw_err_prefix(err, errlen, "dataset %s", repo);
        FILE *f = fopen(ref, "r");
        if (f) {
            if (!fgets(commit, sizeof commit, f)) commit[0] = 0;
            fclose(f);
            commit[strcspn(commit, " \t\r\n")] = 0;
        }
        if (!is_hex40(commit))
            return saefw_errf(err, errlen, "dataset %s (revision %s) %s in the Hugging Face cache (%s); run: %s", repo,
                              rev, absent, dir, cmd);
    }
    char snap[PATH_MAX];
    if (saefw_pathf(snap, sizeof snap, err, errlen, "%s/snapshots/%s", dir, commit) != 0)
        return saefw_err_prefix(err, errlen, "dataset %s", repo);
    struct stat st;
    if (stat(snap, &st) != 0 || !S_ISDIR(st.st_mode))
        return saefw_errf(err, errlen, "dataset %s (revision %s) %s in the Hugging Face cache (%s); run: %s", repo, rev,
                          absent, snap, cmd);
    /* A glob without magic names a folder (everything matching the pattern below it) or a file. */
    char sub[PATH_MAX];
    if (!glob) {
        glob = pattern;
    } else if (!has_magic(glob)) {
        if (saefw_pathf(sub, sizeof sub, err, errlen, "%s/%s", snap, glob) != 0)
            return saefw_err_prefix(err, errlen, "dataset %s", repo);
        if (stat(sub, &st) == 0 && S_ISDIR(st.st_mode)) {
            size_t gl = strlen(glob);
            while (gl > 0 && glob[gl - 1] == '/') gl--;
            if (saefw_pathf(sub, sizeof sub, err, errlen, "%.*s/%s", (int)gl, glob, pattern) != 0)
                return saefw_err_prefix(err, errlen, "dataset %s", repo);
            glob = sub;
        }
    }
    char what[PATH_MAX + 64], hint[600];
    snprintf(what, sizeof what, "dataset %s in the cache (%s)", repo, snap);
    snprintf(hint, sizeof hint, " (download the files: %s)", cmd);
    if (collect(snap, glob, repo, what, hint, out, err, errlen) != 0) return -1;
    snprintf(out->commit, sizeof out->commit, "%s", commit);
    return 0;
}

/* hf://datasets/ORG/NAME[@REV][/GLOB] */
static int from_uri(const char *spec, const char *pattern, saefw_shards *out, char *err, size_t errlen) {
    static const char pre[] = "hf://datasets/";
    if (strncmp(spec, pre, sizeof pre - 1) != 0)
        return saefw_errf(err, errlen, "dataset %.200s: only hf://datasets/ORG/NAME[@REV][/GLOB] URIs name datasets",
                          spec);
    const char *p = spec + sizeof pre - 1;
    const char *slash = strchr(p, '/');
    if (!slash || !name_ok(p, (size_t)(slash - p)))
        return saefw_errf(err, errlen, "dataset %.200s: expected hf://datasets/ORG/NAME", spec);
    const char *name = slash + 1;
    size_t nl = strcspn(name, "@/");
    if (!name_ok(name, nl)) return saefw_errf(err, errlen, "dataset %.200s: expected hf://datasets/ORG/NAME", spec);
    char repo[256];
    snprintf(repo, sizeof repo, "%.*s", (int)(name + nl - p), p);
    const char *rest = name + nl;
    char rev[256] = "main";
    if (*rest == '@') {
        size_t rl = strcspn(rest + 1, "/");
        if (rl == 0 || percent_decode(rest + 1, rl, rev, sizeof rev) != 0)
            return saefw_errf(err, errlen, "dataset %.200s: bad revision after '@'", spec);
        rest += 1 + rl;
    }
    const char *glob = *rest == '/' && rest[1] ? rest + 1 : NULL;
    if (*rest && *rest != '/') return saefw_errf(err, errlen, "dataset %.200s: expected hf://datasets/ORG/NAME", spec);
    return from_cache(repo, rev, glob, pattern ? pattern : DEFAULT_PATTERN, 0, out, err, errlen);
}

/* A local glob: its fixed leading folders are the root, the rest is matched below it. */
static int from_glob(const char *spec, saefw_shards *out, char *err, size_t errlen) {
    const char *magic = strpbrk(spec, "*?[");
    const char *cut = magic;
    while (cut > spec && cut[-1] != '/') cut--;
    char root[PATH_MAX];
    size_t rl = (size_t)(cut - spec);
    if (rl >= sizeof root) return saefw_errf(err, errlen, "dataset %.200s: path too long", spec);
    memcpy(root, spec, rl);
    root[rl] = 0;
    if (rl > 1) root[rl - 1] = 0; /* drop the '/' before the glob, keep "/" itself */
    char what[PATH_MAX + 32];
    snprintf(what, sizeof what, "dataset %s", spec);
    return collect(root, cut, NULL, what, "", out, err, errlen);
}

int saefw_dataset_resolve(const char *spec, const char *pattern, saefw_shards *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (!spec || !*spec)
        return saefw_errf(err, errlen, "dataset: empty name (a folder, files, ORG/NAME or hf://datasets/ORG/NAME)");
    if (!strncmp(spec, "hf://", 5)) return from_uri(spec, pattern, out, err, errlen);
    struct stat st;
    if (stat(spec, &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            char what[PATH_MAX + 32];
            snprintf(what, sizeof what, "dataset folder %s", spec);
            return collect(spec, pattern ? pattern : DEFAULT_PATTERN, NULL, what, "", out, err, errlen);
        }
        paths one = {0};
        if (paths_add(&one, spec, err, errlen) != 0) return -1;
        out->paths = one.v;
        out->n = 1;
        if (!(out->root = saefw_strdup(spec, err, errlen))) {
            saefw_shards_free(out);
            return -1;
        }
        return 0;
    }
    if (has_magic(spec)) return from_glob(spec, out, err, errlen);
    const char *slash = strchr(spec, '/');
    if (slash && !strchr(slash + 1, '/') && name_ok(spec, (size_t)(slash - spec)) &&
        name_ok(slash + 1, strlen(slash + 1))) {
        return from_cache(spec, "main", NULL, pattern ? pattern : DEFAULT_PATTERN, 1, out, err, errlen);
    }
    return saefw_errf(err, errlen, "dataset %.200s: no such file or folder (nor ORG/NAME or hf://datasets/ORG/NAME)",
                      spec);
}

void saefw_shards_free(saefw_shards *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) free(s->paths[i]);
    free(s->paths);
    free(s->root);
    memset(s, 0, sizeof *s);
}
