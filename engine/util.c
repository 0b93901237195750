/* Shared helpers: error messages, checked allocation, atomic writes, small file I/O. */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int saefw_errf(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int saefw_err_prefix(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return -1;
    char old[1024];
    snprintf(old, sizeof old, "%s", err);
    char pre[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    snprintf(err, errlen, "%s: %s", pre, old);
    return -1;
}

int saefw_pathf(char *buf, size_t n, char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    if (k >= 0 && (size_t)k < n) return 0;
    if (k < 0) return saefw_errf(err, errlen, "cannot format a path from '%.200s'", fmt);
    return saefw_errf(err, errlen, "path too long (%d bytes, at most %zu): %.200s...", k, n ? n - 1 : 0, buf);
}

void *saefw_malloc(size_t n, char *err, size_t errlen) {
    void *p = malloc(n ? n : 1);
    if (!p) saefw_errf(err, errlen, "out of memory allocating %zu bytes", n);
    return p;
}

void *saefw_calloc(size_t count, size_t size, char *err, size_t errlen) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) saefw_errf(err, errlen, "out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

char *saefw_strdup(const char *s, char *err, size_t errlen) {
    size_t n = strlen(s) + 1;
    char *p = saefw_malloc(n, err, errlen);
    if (p) memcpy(p, s, n);
    return p;
}

static int fsync_dir_of(const char *path) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    int fd = open(dirname(tmp), O_RDONLY | O_DIRECTORY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

FILE *saefw_atomic_open(const char *path, char *tmp_path, size_t tmp_len, char *err, size_t errlen) {
    int n = snprintf(tmp_path, tmp_len, "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= tmp_len) {
        saefw_errf(err, errlen, "%s: path too long", path);
        return NULL;
    }
    FILE *f = fopen(tmp_path, "wb");
    if (!f) saefw_errf(err, errlen, "%s: cannot create: %s", tmp_path, strerror(errno));
    return f;
}

int saefw_atomic_commit(FILE *f, const char *tmp_path, const char *path, char *err, size_t errlen) {
    int bad = 0;
    if (fflush(f) != 0) bad = errno;
    if (!bad && fsync(fileno(f)) != 0) bad = errno;
    if (fclose(f) != 0 && !bad) bad = errno;
    if (bad) {
        unlink(tmp_path);
        return saefw_errf(err, errlen, "%s: write failed: %s", path, strerror(bad));
    }
    if (rename(tmp_path, path) != 0) {
        int e = errno;
        unlink(tmp_path);
        return saefw_errf(err, errlen, "%s: rename failed: %s", path, strerror(e));
    }
    fsync_dir_of(path);
    return 0;
}

void saefw_atomic_abort(FILE *f, const char *tmp_path) {
    if (f) fclose(f);
    unlink(tmp_path);
}

int saefw_write_file_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen) {
    char tmp[4096];
    FILE *f = saefw_atomic_open(path, tmp, sizeof tmp, err, errlen);
    if (!f) return -1;
    if (len && fwrite(data, 1, len, f) != len) {
        int e = errno;
        saefw_atomic_abort(f, tmp);
        return saefw_errf(err, errlen, "%s: write failed: %s", path, strerror(e));
    }
    return saefw_atomic_commit(f, tmp, path, err, errlen);
}

int saefw_read_file(const char *path, char **out, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) return saefw_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = saefw_malloc(cap, err, errlen);
    if (!buf) {
        fclose(f);
        return -1;
    }
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                fclose(f);
                return saefw_errf(err, errlen, "%s: out of memory", path);
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        return saefw_errf(err, errlen, "%s: read error", path);
    }
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return 0;
}

int saefw_mkdirs(const char *path, char *err, size_t errlen) {
    char tmp[4096];
    int n = snprintf(tmp, sizeof tmp, "%s", path);
    if (n <= 0 || (size_t)n >= sizeof tmp) return saefw_errf(err, errlen, "%s: bad path", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return saefw_errf(err, errlen, "%s: cannot create folder: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return saefw_errf(err, errlen, "%s: cannot create folder: %s", tmp, strerror(errno));
    struct stat st;
    if (stat(tmp, &st) != 0 || !S_ISDIR(st.st_mode))
        return saefw_errf(err, errlen, "%s: exists and is not a folder", tmp);
    return 0;
}

int saefw_exe_relative(const char *subdir, char *out, size_t n) {
    char exe[4096];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) return -1;
    exe[len] = 0;
    char *slash = strrchr(exe, '/');
    if (!slash) return -1;
    *slash = 0;
    char joined[8192];
    snprintf(joined, sizeof joined, "%s/../%s", exe, subdir);
    char real[PATH_MAX];
    const char *use = realpath(joined, real) ? real : joined;
    return snprintf(out, n, "%s", use) < (int)n ? 0 : -1;
}

int saefw_ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

double saefw_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void saefw_fault_point(const char *name) {
    static const char *spec = NULL;
    static int checked = 0;
    static long count = 0;
    if (!checked) {
        spec = getenv("SAEFW_FAULT");
        checked = 1;
    }
    if (!spec) return;
    size_t n = strlen(name);
    if (strncmp(spec, name, n) != 0 || spec[n] != ':') return;
    if (++count == atol(spec + n + 1)) raise(SIGKILL);
}

void saefw_slow_point(const char *name) {
    static const char *spec = NULL;
    static int checked = 0;
    if (!checked) {
        spec = getenv("SAEFW_SLOW");
        checked = 1;
    }
    if (!spec) return;
    size_t n = strlen(name);
    if (strncmp(spec, name, n) != 0 || spec[n] != ':') return;
    long ms = atol(spec + n + 1);
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    /* The whole time even through a signal, as a forward would take it. */
    while (ms > 0 && nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* ---- the stop flag ---- */

static volatile sig_atomic_t g_stop;

static volatile sig_atomic_t g_stop_pending, g_stop_deferred;

static void on_stop_signal(int sig) {
    if (g_stop_deferred) g_stop_pending = sig;
    else g_stop = sig;
}

int saefw_stop_requested(void) { return g_stop; }

void saefw_stop_defer(int on) {
    g_stop_deferred = on;
    if (!on && g_stop_pending && !g_stop) g_stop = g_stop_pending;
}

int saefw_stop_pending(void) { return g_stop_pending ? g_stop_pending : g_stop; }

void saefw_stop_commit(void) { g_stop = g_stop_pending ? g_stop_pending : SIGTERM; }

void saefw_stop_begin(saefw_stop_scope *s) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &s->old_int);
    sigaction(SIGTERM, &sa, &s->old_term);
    /* The outermost scope starts with no stop pending; a nested one keeps what came before it. */
    if (s->old_int.sa_handler != on_stop_signal) g_stop = g_stop_pending = 0;
}

void saefw_stop_end(const saefw_stop_scope *s) {
    sigaction(SIGINT, &s->old_int, NULL);
    sigaction(SIGTERM, &s->old_term, NULL);
}

int saefw_stop_errf(char *err, size_t errlen, const char *what) {
    int sig = g_stop;
    return saefw_errf(err, errlen, "%s: interrupted by %s", what,
                      sig == SIGINT    ? "SIGINT"
                      : sig == SIGTERM ? "SIGTERM"
                                       : "a signal");
}
