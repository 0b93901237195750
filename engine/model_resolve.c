/* Model name resolution through the Hugging Face cache layout (models--org--name/refs, snapshots). */
#include "model_resolve.h"

#include <ctype.h>
#include <dirent.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

typedef struct {
    const char *name, *repo, *weights;
} known_model;

/* The "neel" family of TransformerLens, and the model bundled with saefw. */
static const known_model KNOWN[] = {
    {"gelu-1l", "NeelNanda/GELU_1L512W_C4_Code", "model_final.pth"},
    {"gelu-2l", "NeelNanda/GELU_2L512W_C4_Code", "model_final.pth"},
    {"gelu-3l", "NeelNanda/GELU_3L512W_C4_Code", "model_final.pth"},
    {"gelu-4l", "NeelNanda/GELU_4L512W_C4_Code", "model_final.pth"},
};
#define BUNDLED "tiny-1l"

static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Growing a path in a fixed buffer; `over` sticks once the text did not fit. */
typedef struct {
    char *p;
    size_t n, len;
    int over;
} pathbuf;

static void pb_putn(pathbuf *b, const char *s, size_t k) {
    if (b->over || b->len + k >= b->n) {
        b->over = 1;
        return;
    }
    memcpy(b->p + b->len, s, k);
    b->len += k;
    b->p[b->len] = 0;
}

static void pb_puts(pathbuf *b, const char *s) { pb_putn(b, s, strlen(s)); }

static const char *env_set(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* Python's os.path.expanduser: "~" and "~/..." take $HOME (the password database when HOME is
 * unset), "~user/..." that user's home; anything else is unchanged. */
static void expand_user(const char *in, pathbuf *b) {
    if (in[0] != '~') {
        pb_puts(b, in);
        return;
    }
    size_t i = strcspn(in, "/");
    const char *home = NULL;
    if (i == 1) {
        home = getenv("HOME");
        if (!home) {
            struct passwd *pw = getpwuid(getuid());
            home = pw ? pw->pw_dir : NULL;
        }
    } else {
        char user[256];
        if (i - 1 < sizeof user) {
            memcpy(user, in + 1, i - 1);
            user[i - 1] = 0;
            struct passwd *pw = getpwnam(user);
            home = pw ? pw->pw_dir : NULL;
        }
    }
    if (!home) {
        pb_puts(b, in);
        return;
    }
    size_t hl = strlen(home);
    while (hl > 0 && home[hl - 1] == '/') hl--;
    pb_putn(b, home, hl);
    pb_puts(b, in + i);
    if (b->len == 0) pb_puts(b, "/");
}

/* Python's os.path.expandvars: $NAME and ${NAME} of set variables are replaced, others kept. */
static void expand_vars(const char *in, pathbuf *b) {
    for (const char *p = in; *p;) {
        if (*p != '$') {
            pb_putn(b, p++, 1);
            continue;
        }
        const char *name = p + 1, *end;
        size_t k;
        if (*name == '{') {
            end = strchr(name, '}');
            if (!end) {
                pb_putn(b, p++, 1);
                continue;
            }
            name++;
            k = (size_t)(end - name);
            end++;
        } else {
            k = 0;
            while (isalnum((unsigned char)name[k]) || name[k] == '_') k++;
            end = name + k;
            if (k == 0) {
                pb_putn(b, p++, 1);
                continue;
            }
        }
        char var[256];
        const char *val = NULL;
        if (k < sizeof var) {
            memcpy(var, name, k);
            var[k] = 0;
            val = getenv(var);
        }
        if (val) pb_puts(b, val);
        else pb_putn(b, p, (size_t)(end - p));
        p = end;
    }
}

/* expandvars(expanduser(in)), then "/" tail appended as os.path.join does. */
static int expand_path(const char *in, const char *tail, char *out, size_t n) {
    char tmp[PATH_MAX];
    pathbuf u = {tmp, sizeof tmp, 0, 0}, b = {out, n, 0, 0};
    tmp[0] = 0;
    if (n) out[0] = 0;
    expand_user(in, &u);
    if (u.over) return -1;
    expand_vars(tmp, &b);
    if (tail) {
        if (b.len > 0 && out[b.len - 1] != '/') pb_puts(&b, "/");
        pb_puts(&b, tail);
    }
    return b.over ? -1 : 0;
}

int saefw_hf_expand_path(const char *path, char *out, size_t n) { return expand_path(path, NULL, out, n); }

int saefw_hf_home_dir(char *out, size_t n) {
    const char *v = env_set("HF_HOME");
    if (v) return expand_path(v, NULL, out, n);
    v = env_set("XDG_CACHE_HOME");
    if (v) return expand_path(v, "huggingface", out, n);
    return expand_path("~/.cache", "huggingface", out, n);
}

int saefw_hf_cache_dir(char *out, size_t n) {
    const char *v = env_set("HF_HUB_CACHE");
    if (!v) v = env_set("HUGGINGFACE_HUB_CACHE");
    if (v) return expand_path(v, NULL, out, n);
    char home[PATH_MAX];
    if (saefw_hf_home_dir(home, sizeof home) != 0) return -1;
    return expand_path(home, "hub", out, n);
}

int saefw_hf_repo_folder(const char *repo_type, const char *repo, char *out, size_t n) {
    if (strcmp(repo_type, "model") != 0 && strcmp(repo_type, "dataset") != 0 && strcmp(repo_type, "space") != 0)
        return -1;
    pathbuf b = {out, n, 0, 0};
    if (n) out[0] = 0;
    pb_puts(&b, repo_type);
    pb_puts(&b, "s--");
    for (const char *c = repo; *c; c++) pb_puts(&b, *c == '/' ? "--" : (char[2]){*c, 0});
    return b.over ? -1 : 0;
}

int saefw_hf_repo_dir(const char *repo_type, const char *repo, char *out, size_t n) {
    char hub[PATH_MAX], folder[PATH_MAX];
    if (saefw_hf_cache_dir(hub, sizeof hub) != 0 || saefw_hf_repo_folder(repo_type, repo, folder, sizeof folder) != 0)
        return -1;
    return snprintf(out, n, "%s/%s", hub, folder) < (int)n ? 0 : -1;
}

/* In a folder: config.json beside the weights (the known file name first, else the first
 * *.safetensors, else the first *.pth / *.pt). */
static int from_folder(const char *dir, const char *want, char *weights, size_t wn, char *config, size_t cn) {
    char p[PATH_MAX];
    weights[0] = 0;
    if (want) {
        snprintf(p, sizeof p, "%s/%s", dir, want);
        if (is_file(p)) snprintf(weights, wn, "%s", p);
    }
    static const char *const prefer[] = {"model.safetensors", "model_final.pth"};
    for (size_t i = 0; !weights[0] && i < sizeof prefer / sizeof *prefer; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, prefer[i]);
        if (is_file(p)) snprintf(weights, wn, "%s", p);
    }
    for (int pass = 0; pass < 2 && !weights[0]; pass++) {
        DIR *d = opendir(dir);
        if (!d) return -1;
        struct dirent *e;
        char best[NAME_MAX + 1] = "";
        while ((e = readdir(d))) {
            int ok = pass == 0 ? saefw_ends_with(e->d_name, ".safetensors")
                               : (saefw_ends_with(e->d_name, ".pth") || saefw_ends_with(e->d_name, ".pt"));
            if (ok && (!best[0] || strcmp(e->d_name, best) < 0)) snprintf(best, sizeof best, "%s", e->d_name);
        }
        closedir(d);
        if (best[0]) snprintf(weights, wn, "%s/%s", dir, best);
    }
    if (!weights[0]) return -1;
    snprintf(p, sizeof p, "%s/config.json", dir);
    if (is_file(p)) snprintf(config, cn, "%s", p);
    else config[0] = 0;
    return 0;
}

int saefw_hf_main_snapshot(const char *repo_folder, char *out, size_t n) {
    char p[PATH_MAX], rev[128] = "";
    snprintf(p, sizeof p, "%s/refs/main", repo_folder);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    if (!fgets(rev, sizeof rev, f)) rev[0] = 0;
    fclose(f);
    rev[strcspn(rev, "\r\n")] = 0;
    if (!rev[0] || strchr(rev, '/') || !strcmp(rev, "..") || !strcmp(rev, ".")) return -1;
    return snprintf(out, n, "%s/snapshots/%s", repo_folder, rev) < (int)n ? 0 : -1;
}

/* The snapshot folder of repo in the cache: refs/main's commit, else any snapshot holding `want`. */
static int from_cache(const char *repo, const char *want, char *weights, size_t wn, char *config, size_t cn,
                      char *where, size_t whn) {
    char folder[PATH_MAX];
    if (saefw_hf_repo_dir("model", repo, folder, sizeof folder) != 0) {
        snprintf(where, whn, "the Hugging Face cache (its path from HF_HUB_CACHE/HF_HOME/XDG_CACHE_HOME is too long)");
        return -1;
    }
    if (snprintf(where, whn, "%s/snapshots/<revision>/", folder) >= (int)whn) return -1;
    char p[PATH_MAX];
    if (saefw_hf_main_snapshot(folder, p, sizeof p) == 0 && from_folder(p, want, weights, wn, config, cn) == 0 &&
        (!want || saefw_ends_with(weights, want)))
        return 0;
    /* A path that does not fit names no snapshot of ours: it is skipped. */
    if (saefw_pathf(p, sizeof p, NULL, 0, "%s/snapshots", folder) != 0) return -1;
    DIR *d = opendir(p);
    if (!d) return -1;
    struct dirent *e;
    int found = -1;
    while (found != 0 && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char snap[PATH_MAX];
        if (saefw_pathf(snap, sizeof snap, NULL, 0, "%s/%s", p, e->d_name) != 0) continue;
        if (is_dir(snap) && from_folder(snap, want, weights, wn, config, cn) == 0 &&
            (!want || saefw_ends_with(weights, want)))
            found = 0;
    }
    closedir(d);
    return found;
}

static int bundled_dir(char *out, size_t n) { return saefw_exe_relative(SAEFW_DATA_SUBDIR "/models/" BUNDLED, out, n); }

int saefw_model_resolve(const char *name, char *weights, size_t wn, char *config, size_t cn, char *err, size_t errlen) {
    weights[0] = config[0] = 0;
    if (is_dir(name)) {
        if (from_folder(name, NULL, weights, wn, config, cn) != 0)
            return saefw_errf(err, errlen, "model %s: the folder holds no weights (*.safetensors, *.pth or *.pt)",
                              name);
        return 0;
    }
    if (is_file(name)) {
        const char *slash = strrchr(name, '/');
        char p[PATH_MAX];
        if (saefw_pathf(weights, wn, err, errlen, "%s", name) != 0 ||
            saefw_pathf(p, sizeof p, err, errlen, "%.*s/config.json", slash ? (int)(slash - name) : 1,
                        slash ? name : ".") != 0)
            return saefw_err_prefix(err, errlen, "model %.200s", name);
        if (is_file(p) && saefw_pathf(config, cn, err, errlen, "%s", p) != 0)
            return saefw_err_prefix(err, errlen, "model");
        return 0;
    }
    if (strcmp(name, BUNDLED) == 0) {
        char dir[PATH_MAX];
        if (bundled_dir(dir, sizeof dir) != 0 || from_folder(dir, NULL, weights, wn, config, cn) != 0)
            return saefw_errf(err, errlen, "model %s: the bundled model is missing from %s (reinstall saefw)", name,
                              dir);
        return 0;
    }
    const char *repo = NULL, *want = NULL;
    for (size_t i = 0; i < sizeof KNOWN / sizeof *KNOWN; i++)
        if (strcmp(name, KNOWN[i].name) == 0) {
            repo = KNOWN[i].repo;
            want = KNOWN[i].weights;
        }
    if (!repo && strchr(name, '/') && !strchr(strchr(name, '/') + 1, '/') && name[0] != '/' && name[0] != '.')
        repo = name;
    if (!repo) {
        char list[256] = "";
        for (size_t i = 0; i < sizeof KNOWN / sizeof *KNOWN; i++) {
            size_t u = strlen(list);
            snprintf(list + u, sizeof list - u, "%s, ", KNOWN[i].name);
        }
        return saefw_errf(err, errlen,
                          "model %s: not a known model (%s" BUNDLED "), a Hugging Face repo id, a folder or a file",
                          name, list);
    }
    char where[PATH_MAX];
    if (from_cache(repo, want, weights, wn, config, cn, where, sizeof where) == 0) return 0;
    weights[0] = config[0] = 0;
    return saefw_errf(err, errlen,
                      "model %s: weights not found: need config.json and %s from the Hugging Face repo %s in %s "
                      "(run: saefw download %s config.json %s), or pass a local folder or file",
                      name, want ? want : "the weights (*.safetensors or *.pth)", repo, where, repo,
                      want ? want : "model.safetensors");
}
