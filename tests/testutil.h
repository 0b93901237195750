/* Tiny helpers for the test programs: checks that count failures, fixture access, comparisons
 * that print the max difference. Each test program exits non-zero if any check failed. */
#ifndef SAEFW_TESTUTIL_H
#define SAEFW_TESTUTIL_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "tensorfile.h"

static int t_failures = 0;

#define CHECK(cond, ...)                                                                                               \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            t_failures++;                                                                                              \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                            \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fputc('\n', stderr);                                                                                       \
        }                                                                                                              \
    } while (0)

/* Abort the program on a failed precondition (fixture missing, ...). */
#define REQUIRE(cond, ...)                                                                                             \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "FATAL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                           \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fputc('\n', stderr);                                                                                       \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

/* snprintf into an array that must hold the whole result: a cut path or command would quietly test
 * something else. */
#define T_FMT(buf, ...)                                                                                                \
    REQUIRE(snprintf((buf), sizeof(buf), __VA_ARGS__) < (int)sizeof(buf), "%s: result longer than %zu bytes", #buf,    \
            sizeof(buf))

/* Run a shell command (fmt, ap: printf-style) with stderr merged into buf [cap]; returns the exit
 * status, or 128 + the signal that ended it. */
static inline int t_vrun(char *buf, size_t cap, const char *fmt, va_list ap) {
    char cmd[4096], full[4200];
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    REQUIRE(p, "popen %s", cmd);
    size_t n = fread(buf, 1, cap - 1, p);
    buf[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* t_vrun with the arguments inline. */
static inline __attribute__((format(printf, 3, 4))) int t_run(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = t_vrun(buf, cap, fmt, ap);
    va_end(ap);
    return rc;
}

static inline int t_finish(const char *name) {
    if (t_failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", name, t_failures);
        return 1;
    }
    printf("%s: all checks passed\n", name);
    return 0;
}

/* Temporary folder for this test (under SAEFW_TEST_TMP, else /tmp), created fresh. */
static inline const char *t_tmpdir(const char *name) {
    static char buf[1024];
    const char *base = getenv("SAEFW_TEST_TMP");
    snprintf(buf, sizeof buf, "%s/%s", base && *base ? base : "/tmp", name);
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", buf, buf);
    REQUIRE(system(cmd) == 0, "cannot create %s", buf);
    return buf;
}

/* A fixture tensor converted to a malloc'd float array; exits if absent. */
static inline float *t_tensor(saefw_tensorfile *tf, const char *name, int64_t *numel) {
    const saefw_tensor_info *t = saefw_tf_find(tf, name);
    REQUIRE(t != NULL, "fixture tensor '%s' missing", name);
    float *out = malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
    char err[512];
    REQUIRE(out && saefw_tensor_to_f32(t, out, err, sizeof err) == 0, "tensor %s: %s", name, err);
    if (numel) *numel = t->numel;
    return out;
}

static inline double t_meta(saefw_tensorfile *tf, const char *key) {
    const char *v = saefw_tf_metadata(tf, key);
    REQUIRE(v != NULL, "fixture metadata '%s' missing", key);
    return atof(v);
}

/* The larger of worst and d, where NaN wins and stays: fold differences with it and check the
 * result with `worst <= tol`, which a NaN fails. fmax and `if (d > worst)` both drop a NaN. */
static inline double t_max(double worst, double d) {
    if (isnan(worst) || isnan(d)) return NAN;
    return d > worst ? d : worst;
}

/* Compare got with want: max |got - want| / max(max |want|, floor) <= tol. Prints the figure. A NaN
 * on either side fails (the first one found is reported). */
static inline int t_close(const char *what, const float *got, const float *want, int64_t n, double tol, double floor_) {
    double maxdiff = 0, maxref = floor_;
    int64_t worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (isnan(maxdiff)) break;
        if (!(d <= maxdiff)) {
            maxdiff = d;
            worst = i;
        }
        if (fabs(want[i]) > maxref) maxref = fabs(want[i]);
    }
    double rel = maxdiff / maxref;
    int ok = rel <= tol;
    printf("  %-28s max |diff| %.3e  rel %.3e  (tol %.0e)%s\n", what, maxdiff, rel, tol, ok ? "" : "  <-- FAIL");
    if (!ok) {
        t_failures++;
        fprintf(stderr, "FAIL %s: element %lld got %.9g want %.9g\n", what, (long long)worst, got[worst], want[worst]);
    }
    return ok;
}

/* One number against its reference; a NaN on either side fails. */
static inline int t_close1(const char *what, double got, double want, double tol) {
    double rel = fabs(got - want) / (fabs(want) > 1e-30 ? fabs(want) : 1.0);
    int ok = rel <= tol;
    printf("  %-28s got %.9g want %.9g rel %.3e (tol %.0e)%s\n", what, got, want, rel, tol, ok ? "" : "  <-- FAIL");
    if (!ok) t_failures++;
    return ok;
}

#endif
