/* SAE checkpoints named by a Hub path: the files a checkpoint needs, found in the huggingface_hub
 * cache layout (models--ORG--NAME/refs/main, snapshots/<commit>/...) or fetched into it. */
#include "sae_resolve.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model_resolve.h"
#include "util.h"

static saefw_hub_fetch_fn g_fetch;

void saefw_sae_set_hub_fetch(saefw_hub_fetch_fn fn) { g_fetch = fn; }

#define MAX_FILES 3

/* What a checkpoint at `file` in a repo needs: files[0] is the checkpoint itself (the file, or the
 * folder's weights), then its config. Returns the count. */
static int needed_files(const char *file, char files[MAX_FILES][PATH_MAX]) {
    size_t n = strlen(file);
    if (saefw_ends_with(file, ".pt") || saefw_ends_with(file, ".pth")) {
        snprintf(files[0], PATH_MAX, "%s", file);
        snprintf(files[1], PATH_MAX, "%.*s_cfg.json", (int)(n - (saefw_ends_with(file, ".pt") ? 3 : 4)), file);
        return 2;
    }
    if (saefw_ends_with(file, ".safetensors")) {
        snprintf(files[0], PATH_MAX, "%s", file);
        const char *slash = strrchr(file, '/');
        if (slash) snprintf(files[1], PATH_MAX, "%.*s/cfg.json", (int)(slash - file), file);
        else snprintf(files[1], PATH_MAX, "cfg.json");
        return 2;
    }
    snprintf(files[0], PATH_MAX, "%s/sae_weights.safetensors", file);
    snprintf(files[1], PATH_MAX, "%s/cfg.json", file);
    return 2;
}

static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int snapshot_has(const char *snap, char files[MAX_FILES][PATH_MAX], int nf) {
    char p[PATH_MAX * 2];
    for (int i = 0; i < nf; i++) {
        snprintf(p, sizeof p, "%s/%s", snap, files[i]);
        if (!is_file(p)) return 0;
    }
    return 1;
}

/* The cache snapshot of repo holding every file: refs/main's first, else any. */
static int from_cache(const char *folder, char files[MAX_FILES][PATH_MAX], int nf, char *snap, size_t sn) {
    char p[PATH_MAX];
    if (saefw_hf_main_snapshot(folder, snap, sn) == 0 && snapshot_has(snap, files, nf)) return 0;
    /* A path that does not fit names no snapshot of ours. */
    if (saefw_pathf(p, sizeof p, NULL, 0, "%s/snapshots", folder) != 0) return -1;
    DIR *d = opendir(p);
    if (!d) return -1;
    struct dirent *e;
    int found = -1;
    while (found != 0 && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (saefw_pathf(snap, sn, NULL, 0, "%s/%s", p, e->d_name) == 0 && snapshot_has(snap, files, nf)) found = 0;
    }
    closedir(d);
    return found;
}

/* A repo id part: huggingface_hub's characters, no "..", not empty. */
static int repo_part_ok(const char *s, size_t n) {
    if (n == 0 || n > 96 || s[0] == '.' || s[0] == '-' || s[n - 1] == '.' || s[n - 1] == '-') return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
              c == '.'))
            return 0;
        if (i + 1 < n && ((c == '.' && s[i + 1] == '.') || (c == '-' && s[i + 1] == '-'))) return 0;
    }
    return 1;
}

/* A path inside a repo: relative, no empty, "." or ".." component. */
static int repo_path_ok(const char *s) {
    if (!*s || strlen(s) > 512) return 0;
    const char *p = s;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.')) return 0;
        if (!e) break;
        p = e + 1;
    }
    return p[0] != 0;
}

int saefw_sae_resolve(const char *spec, char *out, size_t n, int *from_hub, char *err, size_t errlen) {
    if (from_hub) *from_hub = 0;
    struct stat st;
    int hf = strncmp(spec, "hf://", 5) == 0;
    if (!hf && stat(spec, &st) == 0) {
        if (snprintf(out, n, "%s", spec) >= (int)n) return saefw_errf(err, errlen, "%s: path too long", spec);
        return 0;
    }
    const char *s = hf ? spec + 5 : spec;
    const char *s1 = strchr(s, '/'), *s2 = s1 ? strchr(s1 + 1, '/') : NULL;
    if (!s1 || !s2 || s[0] == '/' || !repo_part_ok(s, (size_t)(s1 - s)) ||
        !repo_part_ok(s1 + 1, (size_t)(s2 - s1 - 1)) || !repo_path_ok(s2 + 1)) {
        if (hf) return saefw_errf(err, errlen, "%s: expected hf://ORG/NAME/FILE", spec);
        return saefw_errf(err, errlen, "%s: no such file or folder (nor a Hub path ORG/NAME/FILE)", spec);
    }
    char repo[200], file[600];
    snprintf(repo, sizeof repo, "%.*s", (int)(s2 - s), s);
    /* "runs/x/final" with a typo is a missing local path, not a Hub repo named runs/x. */
    char org[128];
    snprintf(org, sizeof org, "%.*s", (int)(s1 - s), s);
    if (!hf && stat(org, &st) == 0 && S_ISDIR(st.st_mode))
        return saefw_errf(err, errlen, "%s: no such file or folder (write hf://%s for the Hub repo %s)", spec, spec,
                          repo);
    snprintf(file, sizeof file, "%s", s2 + 1);
    char files[MAX_FILES][PATH_MAX];
    int nf = needed_files(file, files);

    char hub[PATH_MAX], folder[PATH_MAX], snap[PATH_MAX * 2];
    if (saefw_hf_cache_dir(hub, sizeof hub) != 0)
        return saefw_errf(err, errlen, "%s: no Hugging Face cache folder (set HF_HOME or HOME)", spec);
    int k = snprintf(folder, sizeof folder, "%s/models--", hub);
    for (const char *c = repo; *c && k + 3 < (int)sizeof folder; c++) {
        if (*c == '/') {
            folder[k++] = '-';
            folder[k++] = '-';
        } else {
            folder[k++] = *c;
        }
    }
    folder[k] = 0;

    int found = from_cache(folder, files, nf, snap, sizeof snap) == 0;
    const char *off = getenv("HF_HUB_OFFLINE");
    int offline = off && *off && strcmp(off, "0") != 0 && strcmp(off, "false") != 0;
    if (!found && g_fetch && !offline) {
        const char *list[MAX_FILES];
        for (int i = 0; i < nf; i++) list[i] = files[i];
        char *got = NULL;
        if (g_fetch(repo, list, (size_t)nf, &got, err, errlen) != 0) return saefw_err_prefix(err, errlen, "%s", spec);
        snprintf(snap, sizeof snap, "%s", got);
        free(got);
        found = snapshot_has(snap, files, nf);
        if (!found) return saefw_errf(err, errlen, "%s: downloaded, but %s is not in %s", spec, files[0], snap);
    }
    if (!found)
        return saefw_errf(err, errlen,
                          "%s: not in the Hugging Face cache (%s)%s; fetch it with: saefw download %s %s %s", spec,
                          folder, offline ? " and HF_HUB_OFFLINE is set" : "", repo, files[0], files[1]);
    if (from_hub) *from_hub = 1;
    /* A seed .pt or a .safetensors file is itself the checkpoint; a folder is its own. */
    if (snprintf(out, n, "%s/%s", snap, file) >= (int)n) return saefw_errf(err, errlen, "%s: path too long", spec);
    return 0;
}
