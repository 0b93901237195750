/* Hub client configuration read from the environment as huggingface_hub reads it (token,
 * endpoint, offline mode, cache folders), and repo id validation. */
#include "hf_internal.h"

#include "../engine/model_resolve.h"
#include "../engine/util.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_OK;

static void curl_init(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

static const char *env_nonempty(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static int env_true(const char *name) {
    const char *v = getenv(name);
    if (!v) return 0;
    return !strcasecmp(v, "1") || !strcasecmp(v, "on") || !strcasecmp(v, "yes") || !strcasecmp(v, "true");
}

/* A path variable expanded as huggingface_hub expands it (the core's rules), malloc'd. */
static char *expand_home(const char *p) {
    char buf[PATH_MAX];
    return saefw_hf_expand_path(p, buf, sizeof buf) == 0 ? hf_strdup(buf) : NULL;
}

/* Trim surrounding whitespace in place; huggingface_hub strips tokens the same way. */
static char *trim(char *s) {
    while (*s && isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    return s;
}

/* Take a token candidate: trimmed, NULL when empty, refused when it could break an HTTP header.
 * The message names where it came from, never the token. */
static int take_token(hf_config *cfg, const char *raw, const char *source, char *err, size_t errlen) {
    char *copy = hf_strdup(raw);
    if (!copy) return saefw_errf(err, errlen, "out of memory");
    char *t = trim(copy);
    if (!*t) {
        free(copy);
        return 0;
    }
    for (const char *p = t; *p; p++) {
        if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
            free(copy);
            return saefw_errf(err, errlen,
                              "the token from %s contains spaces or control characters; "
                              "store only the token itself",
                              source);
        }
    }
    cfg->token = hf_strdup(t);
    free(copy);
    if (!cfg->token) return saefw_errf(err, errlen, "out of memory");
    return 0;
}

static long env_long(const char *name, long dflt, long lo, long hi) {
    const char *v = env_nonempty(name);
    if (!v) return dflt;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || x < lo || x > hi) return dflt;
    return x;
}

int hf_config_from_env(hf_config *cfg, char *err, size_t errlen) {
    memset(cfg, 0, sizeof *cfg);
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK)
        return saefw_errf(err, errlen, "libcurl init failed: %s", curl_easy_strerror(curl_init_rc));

    const char *ep = env_nonempty("HF_ENDPOINT");
    cfg->endpoint = hf_strdup(ep ? ep : "https://huggingface.co");
    if (!cfg->endpoint) goto oom;
    size_t n = strlen(cfg->endpoint);
    while (n > 0 && cfg->endpoint[n - 1] == '/') cfg->endpoint[--n] = 0;
    if (strncmp(cfg->endpoint, "http://", 7) != 0 && strncmp(cfg->endpoint, "https://", 8) != 0) {
        hf_config_free(cfg);
        return saefw_errf(err, errlen, "HF_ENDPOINT must start with http:// or https://");
    }

    /* The folders come from the core, so `saefw download` writes where saefw.model() looks. */
    char dir[PATH_MAX];
    if (saefw_hf_home_dir(dir, sizeof dir) != 0 || saefw_hf_cache_dir(dir, sizeof dir) != 0) {
        hf_config_free(cfg);
        return saefw_errf(err, errlen,
                          "the Hugging Face cache path (HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME) is too long");
    }
    if (!(cfg->cache_dir = hf_strdup(dir))) goto oom;
    if (saefw_hf_home_dir(dir, sizeof dir) != 0 || !(cfg->hf_home = hf_strdup(dir))) goto oom;

    /* huggingface_hub: HF_HUB_OFFLINE when set to anything, else TRANSFORMERS_OFFLINE. */
    const char *off = getenv("HF_HUB_OFFLINE");
    cfg->offline = off && *off ? env_true("HF_HUB_OFFLINE") : env_true("TRANSFORMERS_OFFLINE");
    cfg->retry_base_ms = env_long("SAEFW_HF_RETRY_BASE_MS", 1000, 0, 60000);
    cfg->max_retries = (int)env_long("SAEFW_HF_MAX_RETRIES", 5, 0, 20);
    cfg->connect_timeout_s = env_long("HF_HUB_ETAG_TIMEOUT", 10, 1, 600);

    /* Token order as in huggingface_hub: environment first, then the token file. */
    const char *sources[] = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"};
    for (size_t i = 0; i < 2 && !cfg->token; i++) {
        const char *v = getenv(sources[i]);
        if (v && take_token(cfg, v, sources[i], err, errlen) != 0) goto fail;
    }
    if (!cfg->token) {
        const char *tp = env_nonempty("HF_TOKEN_PATH");
        char *path = tp ? expand_home(tp) : hf_join(cfg->hf_home, "token");
        if (!path) goto oom;
        char *text = NULL;
        if (access(path, F_OK) == 0) {
            char e2[256];
            if (saefw_read_file(path, &text, NULL, e2, sizeof e2) != 0) {
                saefw_errf(err, errlen, "%s", e2);
                free(path);
                goto fail;
            }
            int rc = take_token(cfg, text, path, err, errlen);
            free(text);
            if (rc != 0) {
                free(path);
                goto fail;
            }
        }
        free(path);
    }
    return 0;
oom:
    saefw_errf(err, errlen, "out of memory reading the Hub configuration");
fail:
    hf_config_free(cfg);
    return -1;
}

void hf_config_free(hf_config *cfg) {
    if (!cfg) return;
    if (cfg->token) {
        /* Wipe the secret before the memory goes back to the allocator. */
        volatile char *t = cfg->token;
        while (*t) *t++ = 0;
    }
    free(cfg->token);
    free(cfg->endpoint);
    free(cfg->hf_home);
    free(cfg->cache_dir);
    cfg->token = cfg->endpoint = cfg->hf_home = cfg->cache_dir = NULL;
}

static int name_ok(const char *s, size_t n) {
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!(isalnum((unsigned char)c) || c == '-' || c == '_' || c == '.')) return 0;
    }
    /* Word boundaries at both ends, as huggingface_hub's \b...\b pattern demands. */
    if (s[0] == '-' || s[0] == '.' || s[n - 1] == '-' || s[n - 1] == '.') return 0;
    return 1;
}

int hf_validate_repo_id(const char *repo, char *err, size_t errlen) {
    if (!repo || !*repo) return saefw_errf(err, errlen, "empty repo id: use NAME or ORG/NAME");
    size_t n = strlen(repo);
    const char *slash = strchr(repo, '/');
    int ok = n <= 96 && !strstr(repo, "--") && !strstr(repo, "..");
    if (ok && slash)
        ok = !strchr(slash + 1, '/') && name_ok(repo, (size_t)(slash - repo)) && name_ok(slash + 1, strlen(slash + 1));
    else if (ok) ok = name_ok(repo, n);
    if (!ok)
        return saefw_errf(err, errlen,
                          "bad repo id '%.120s': use NAME or ORG/NAME (letters, digits, '-', '_', '.'; "
                          "no '--' or '..'; at most 96 characters)",
                          repo);
    return 0;
}
