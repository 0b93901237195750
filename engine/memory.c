/* Memory before it is spent: available memory (MemAvailable, the cgroup's limit), the user's
 * override, and the refusal a run gets from its estimate before it allocates. */
#include "memory.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static int g_allow;
static int64_t g_limit;

void saefw_mem_set_policy(int allow, int64_t limit) {
    g_allow = allow;
    g_limit = limit;
}

/* The kB figure of `key` in a /proc file of "Key:   N kB" lines, or -1. */
static int64_t proc_kb(const char *path, const char *key) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[256];
    int64_t v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl) && line[kl] == ':') {
            long long kb = 0;
            if (sscanf(line + kl + 1, "%lld", &kb) == 1 && kb >= 0) v = (int64_t)kb * 1024;
            break;
        }
    fclose(f);
    return v;
}

/* A cgroup v2 file holding one number (or "max": -1). */
static int64_t cgroup_value(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long long v = -1;
    char word[32] = "";
    if (fscanf(f, "%31s", word) == 1 && strcmp(word, "max") != 0) {
        char *end = NULL;
        v = strtoll(word, &end, 10);
        if (*end || v < 0) v = -1;
    }
    fclose(f);
    return (int64_t)v;
}

int64_t saefw_mem_rss(void) { return proc_kb("/proc/self/status", "VmRSS"); }
int64_t saefw_mem_peak(void) { return proc_kb("/proc/self/status", "VmHWM"); }

int64_t saefw_mem_available(char *what, size_t whatlen) {
    const char *root = getenv("SAEFW_CGROUP_ROOT"); /* tests point it at a fake cgroup folder */
    char path[512];
    int64_t avail = proc_kb(getenv("SAEFW_MEMINFO") ? getenv("SAEFW_MEMINFO") : "/proc/meminfo", "MemAvailable");
    int64_t rss = saefw_mem_rss();
    if (rss < 0) rss = 0;
    snprintf(what, whatlen, "MemAvailable");
    snprintf(path, sizeof path, "%s/memory.max", root ? root : "/sys/fs/cgroup");
    int64_t max = cgroup_value(path);
    if (max >= 0) {
        snprintf(path, sizeof path, "%s/memory.current", root ? root : "/sys/fs/cgroup");
        int64_t cur = cgroup_value(path);
        int64_t room = max - (cur >= 0 ? cur : 0);
        if (room < 0) room = 0;
        if (avail < 0 || room < avail) {
            char lim[32];
            avail = room;
            snprintf(what, whatlen, "the cgroup's memory.max of %s", saefw_mem_fmt((double)max, lim, sizeof lim));
        }
    }
    if (avail < 0) return -1;
    return avail + rss; /* what the process holds now is part of what it can use */
}

int saefw_mem_parse(const char *text, int64_t *bytes, char *err, size_t errlen) {
    char *end = NULL;
    errno = 0;
    double v = text ? strtod(text, &end) : 0;
    if (!text || end == text || errno || !(v > 0))
        return saefw_errf(err, errlen, "expected a size such as 8G, got '%s'", text ? text : "");
    double mult = 1;
    if (*end) {
        const char *units = "KMGT";
        const char *u = strchr(units, *end == 'k' ? 'K' : *end);
        if (!u || !*u)
            return saefw_errf(err, errlen, "expected a size such as 8G (suffix K, M, G or T), got '%s'", text);
        for (const char *p = units; p <= u; p++) mult *= 1024;
        end++;
        if (*end == 'i') end++;
        if (*end == 'B') end++;
        if (*end) return saefw_errf(err, errlen, "expected a size such as 8G (suffix K, M, G or T), got '%s'", text);
    }
    v *= mult;
    if (v >= 9.2e18) return saefw_errf(err, errlen, "size '%s' is too large", text);
    *bytes = (int64_t)v;
    return 0;
}

const char *saefw_mem_fmt(double bytes, char *buf, size_t n) {
    if (bytes >= 1024.0 * 1024 * 1024 * 1024) snprintf(buf, n, "%.2f TiB", bytes / (1024.0 * 1024 * 1024 * 1024));
    else if (bytes >= 1024.0 * 1024 * 1024) snprintf(buf, n, "%.2f GiB", bytes / (1024.0 * 1024 * 1024));
    else if (bytes >= 1024.0 * 1024) snprintf(buf, n, "%.1f MiB", bytes / (1024.0 * 1024));
    else snprintf(buf, n, "%.0f KiB", bytes / 1024.0);
    return buf;
}

int saefw_mem_check(const char *what, double need, char *err, size_t errlen) {
    if (g_allow) return 0;
    char src[160], a[32], b[32];
    int64_t have = g_limit > 0 ? g_limit : saefw_mem_available(src, sizeof src);
    if (g_limit > 0) snprintf(src, sizeof src, "memory_limit");
    if (have < 0 || need <= (double)have) return 0;
    return saefw_errf(err, errlen,
                      "%s needs an estimated %s, more than the %s this process can use (%s); make it "
                      "smaller, or run anyway with --allow-memory (allow_memory = true) or set memory_limit",
                      what, saefw_mem_fmt(need, a, sizeof a), saefw_mem_fmt((double)have, b, sizeof b), src);
}

int saefw_train_memory_check(const saefw_train_opts *o, int print, double *estimate, char *err, size_t errlen) {
    const saefw_sae *sae = o->sae;
    const saefw_buffer *buf = o->buffer;
    const int64_t B = buf ? buf->batch : o->batch_size, d = sae->d_in;
    const saefw_source *src = buf ? buf->src : NULL, *esrc = o->eval_source ? o->eval_source : src;
    const double buffer =
        buf ? (double)saefw_buffer_bytes(buf) + 8.0 * (double)buf->rows + 4.0 * (double)(buf->stage_rows * buf->d) : 0;
    const double params = 4.0 * (double)sae->n_total;
    /* Adam keeps two moments per parameter, SGD with momentum one; others are taken to be Adam-like. */
    const char *opt = o->optimizer.plugin->p.name;
    const double moments = (opt && !strcmp(opt, "sgd") ? 1.0 : 2.0) * params;
    const double step = saefw_sae_step_estimate(sae, B) + 4.0 * (double)(B * d) + 8.0 * (double)sae->d_sae;
    /* The step's scratch is handed back while the evaluation runs: the larger of the two counts. */
    const int64_t piece = B < SAEFW_EVAL_PIECE ? B : SAEFW_EVAL_PIECE;
    double eval = saefw_sae_step_estimate(sae, piece) + 4.0 * (double)(B * d) + 12.0 * (double)sae->d_sae;
    /* the reconstruction score runs its own model forward */
    if (o->n_evaluators > 0 && esrc && esrc->kind && !strcmp(esrc->kind, "model")) eval += esrc->mem_bytes;
    const double model = (src ? src->mem_bytes : 0) + (esrc && esrc != src ? esrc->mem_bytes : 0);
    /* What the process holds beside them (libraries, Lua, token files): its resident memory now,
     * less the parts above that are already made (buffer, parameters and gradients, model). */
    const int64_t rss = saefw_mem_rss();
    double base = rss > 0 ? (double)rss - buffer - 2.0 * params - model : 0;
    if (base < 0) base = 0;
    const double total = base + buffer + 2.0 * params + moments + (step > eval ? step : eval) + model;
    *estimate = total;
    if (print) {
        char x[32], t[32], a[32], b[32], c[32], e[32], f[32], g[32], h[32], src_what[160];
        int64_t have = g_limit > 0 ? g_limit : saefw_mem_available(src_what, sizeof src_what);
        if (g_limit > 0) snprintf(src_what, sizeof src_what, "memory_limit");
        fprintf(stderr,
                "memory: estimated peak %s (process %s, buffer %s, SAE + gradients %s, optimizer %s, step %s, "
                "evaluation %s, model %s); %s%s%s%s\n",
                saefw_mem_fmt(total, t, sizeof t), saefw_mem_fmt(base, x, sizeof x), saefw_mem_fmt(buffer, a, sizeof a),
                saefw_mem_fmt(2.0 * params, b, sizeof b), saefw_mem_fmt(moments, c, sizeof c),
                saefw_mem_fmt(step, e, sizeof e), saefw_mem_fmt(eval, f, sizeof f), saefw_mem_fmt(model, g, sizeof g),
                have >= 0 ? "available " : "available memory unknown",
                have >= 0 ? saefw_mem_fmt((double)have, h, sizeof h) : "", have >= 0 ? " by " : "",
                have >= 0 ? src_what : "");
    }
    return saefw_mem_check("this run", total, err, errlen);
}
