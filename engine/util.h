/* Small shared helpers for the engine: error reporting, checked allocation, atomic file writes. */
#ifndef SAEFW_UTIL_H
#define SAEFW_UTIL_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#if defined(__GNUC__)
#define SAEFW_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define SAEFW_PRINTF(a, b)
#endif

/* Format a one-line message into err (may be NULL) and return -1, so callers can write
 * `return saefw_errf(err, errlen, "...")`. */
int saefw_errf(char *err, size_t errlen, const char *fmt, ...) SAEFW_PRINTF(3, 4);

/* Prefix an existing message in err with "prefix: " (truncating if needed); returns -1. */
int saefw_err_prefix(char *err, size_t errlen, const char *fmt, ...) SAEFW_PRINTF(3, 4);

/* Format a path or name into buf [n]. A result that does not fit is an error naming its start
 * (a cut path would name another file), never a silent cut: returns 0, or -1 with err. */
int saefw_pathf(char *buf, size_t n, char *err, size_t errlen, const char *fmt, ...) SAEFW_PRINTF(5, 6);

/* Allocation that reports failure into err; returns NULL on failure. */
void *saefw_malloc(size_t n, char *err, size_t errlen);
void *saefw_calloc(size_t count, size_t size, char *err, size_t errlen);
char *saefw_strdup(const char *s, char *err, size_t errlen);

/* Write `len` bytes to `path` atomically: write `path.tmp.<pid>` in the same folder, fsync,
 * rename over `path`, fsync the folder. On failure the old file (if any) is untouched. */
int saefw_write_file_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen);

/* Open a temporary file beside `path` for an atomic write; finish with saefw_atomic_commit
 * (fsync + rename) or saefw_atomic_abort (unlink). tmp_path must hold at least 4096 bytes. */
FILE *saefw_atomic_open(const char *path, char *tmp_path, size_t tmp_len, char *err, size_t errlen);
int saefw_atomic_commit(FILE *f, const char *tmp_path, const char *path, char *err, size_t errlen);
void saefw_atomic_abort(FILE *f, const char *tmp_path);

/* Read a whole (small) file into a NUL-terminated malloc'd buffer. */
int saefw_read_file(const char *path, char **out, size_t *len, char *err, size_t errlen);

/* mkdir -p; succeeds if it already exists as a folder. */
int saefw_mkdirs(const char *path, char *err, size_t errlen);

/* "<folder of the running binary>/../<subdir>", resolved with realpath when it exists; the build
 * tree mirrors the install tree, so this finds plugins, the Lua library and bundled data in both. */
int saefw_exe_relative(const char *subdir, char *out, size_t n);

/* Whether s ends with suffix. */
int saefw_ends_with(const char *s, const char *suffix);

/* Wall-clock seconds (monotonic). */
double saefw_now(void);

/* Crash-consistency testing: when the environment has SAEFW_FAULT=name:N, the Nth call of
 * saefw_fault_point(name) kills the process with SIGKILL, as a power cut would. No effect otherwise. */
void saefw_fault_point(const char *name);
/* Testing long work: when the environment has SAEFW_SLOW=name:MS, each call of saefw_slow_point(name)
 * sleeps MS milliseconds (so a test can stand in for a large model's forward). No effect otherwise. */
void saefw_slow_point(const char *name);

/* The stop flag: SIGINT or SIGTERM while a scope is open sets it (to the signal's number), and every
 * long loop (training, evaluation, frequencies, buffer fill, feature analysis) checks it and stops
 * within about a second. Outside any scope the signals keep their own action (the process ends). */
typedef struct {
    struct sigaction old_int, old_term;
} saefw_stop_scope;
int saefw_stop_requested(void);
void saefw_stop_begin(saefw_stop_scope *s);
void saefw_stop_end(const saefw_stop_scope *s);
/* Data parallel: with defer on, SIGINT / SIGTERM are only recorded (saefw_stop_pending) until
 * saefw_stop_commit sets the stop flag, so that all ranks stop after the same step once they agreed. */
void saefw_stop_defer(int on);
int saefw_stop_pending(void);
void saefw_stop_commit(void);
/* "what: interrupted by SIGTERM" into err; returns -1. */
int saefw_stop_errf(char *err, size_t errlen, const char *what);

#endif
