/* Helpers shared by the fuzz targets (see fuzz_common.h). */
#include "fuzz_common.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tensorfile_internal.h"

/* Bytes of tensor data read per input, so a file that inflates to gigabytes stays quick. */
#define READ_BUDGET ((size_t)16 << 20)
/* Tensors up to this many elements are also converted to float32. */
#define CONVERT_MAX 4096
/* saefw_tensor_info.data is aligned to the item size up to this size (tensorfile.h). */
#define ALIGN_PROMISE ((size_t)64 << 20)

void fuzz_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FUZZ INVARIANT BROKEN: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}

void fuzz_note(const char *fmt, ...) {
    static int verbose = -1;
    if (verbose < 0) verbose = getenv("SAEFW_FUZZ_VERBOSE") != NULL;
    if (!verbose) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "  -> ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

static char tmpdir[512];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag;
    if (ftw->level > 0) remove(path);
    return 0;
}

void fuzz_clear_dir(const char *dir) { nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static void remove_tmpdir(void) {
    if (!tmpdir[0]) return;
    fuzz_clear_dir(tmpdir);
    rmdir(tmpdir);
}

const char *fuzz_tmpdir(void) {
    if (tmpdir[0]) return tmpdir;
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    snprintf(tmpdir, sizeof tmpdir, "%s/saefw-fuzz-XXXXXX", base);
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "fuzz: cannot create a folder under %s: %s\n", base, strerror(errno));
        exit(2);
    }
    atexit(remove_tmpdir);
    return tmpdir;
}

void fuzz_path(char *out, size_t outlen, const char *name) {
    if ((size_t)snprintf(out, outlen, "%s/%s", fuzz_tmpdir(), name) >= outlen) {
        fprintf(stderr, "fuzz: path too long for %s\n", name);
        exit(2);
    }
}

void fuzz_write(const char *path, const void *data, size_t size) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const char *p = data;
    size_t left = size;
    while (fd >= 0 && left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        p += w;
        left -= (size_t)w;
    }
    if (fd < 0 || left > 0 || close(fd) != 0) {
        fprintf(stderr, "fuzz: cannot write %s: %s\n", path, strerror(errno));
        exit(2);
    }
}

static int is_float(saefw_dtype dt) {
    return dt == SAEFW_DT_F32 || dt == SAEFW_DT_F16 || dt == SAEFW_DT_BF16 || dt == SAEFW_DT_F64;
}

void fuzz_check_tensorfile(const saefw_tensorfile *tf) {
    uintptr_t lo = (uintptr_t)tf->map, hi = lo + tf->size;
    size_t budget = READ_BUDGET;
    int n = saefw_tf_count(tf);
    FUZZ_CHECK(n >= 0 && n == tf->n_tensors, "tensor count %d", n);
    FUZZ_CHECK(tf->format != NULL, "no format");
    for (int i = 0; i < n; i++) {
        const saefw_tensor_info *t = saefw_tf_get(tf, i);
        FUZZ_CHECK(t && t->name, "tensor %d missing or unnamed", i);
        FUZZ_CHECK((int)t->dtype >= 0 && t->dtype < SAEFW_DT_COUNT, "%s: dtype %d", t->name, (int)t->dtype);
        FUZZ_CHECK(t->ndim >= 0 && t->ndim <= SAEFW_MAX_DIMS, "%s: ndim %d", t->name, t->ndim);
        size_t isz = saefw_dtype_size(t->dtype);
        int64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            FUZZ_CHECK(t->shape[d] >= 0, "%s: negative dimension %lld", t->name, (long long)t->shape[d]);
            FUZZ_CHECK(!__builtin_mul_overflow(numel, t->shape[d], &numel), "%s: element count overflows", t->name);
        }
        FUZZ_CHECK(numel == t->numel, "%s: numel %lld but the shape holds %lld", t->name, (long long)t->numel,
                   (long long)numel);
        size_t nbytes;
        FUZZ_CHECK(!__builtin_mul_overflow((size_t)numel, isz, &nbytes) && nbytes == t->nbytes,
                   "%s: nbytes %zu does not match %lld elements of %zu bytes", t->name, t->nbytes, (long long)numel,
                   isz);
        /* saefw_tf_find is a linear search: look up a few, so a file of a million tensors stays quick. */
        if (i < 64) FUZZ_CHECK(saefw_tf_find(tf, t->name) == t, "%s: name not unique or not found", t->name);
        if (t->nbytes == 0) continue;
        uintptr_t p = (uintptr_t)t->data;
        FUZZ_CHECK(p != 0, "%s: no data", t->name);
        if (p >= lo && p < hi)
            FUZZ_CHECK(t->nbytes <= hi - p, "%s: %zu bytes at offset %zu run past the end of the %zu-byte file",
                       t->name, t->nbytes, (size_t)(p - lo), tf->size);
        if (t->nbytes <= ALIGN_PROMISE) FUZZ_CHECK(p % isz == 0, "%s: data not aligned to %zu bytes", t->name, isz);
        if (t->nbytes <= budget) {
            /* Reading every byte makes AddressSanitizer check an owned copy's length. */
            const volatile uint8_t *b = t->data;
            unsigned sum = 0;
            for (size_t k = 0; k < t->nbytes; k++) sum += b[k];
            (void)sum;
            budget -= t->nbytes;
        }
        char err[512];
        if (t->numel <= CONVERT_MAX) {
            static float buf[CONVERT_MAX];
            int rc = saefw_tensor_to_f32(t, buf, err, sizeof err);
            FUZZ_CHECK((rc == 0) == is_float(t->dtype), "%s: to_f32 returned %d for dtype %s", t->name, rc,
                       saefw_dtype_name(t->dtype));
        }
        FUZZ_CHECK(saefw_tensor_slice_f32(t, t->numel, 1, NULL, err, sizeof err) != 0,
                   "%s: a slice past the end was accepted", t->name);
    }
    int nm = saefw_tf_metadata_count(tf);
    for (int i = 0; i < nm; i++) {
        const char *k = NULL, *v = NULL;
        FUZZ_CHECK(saefw_tf_metadata_at(tf, i, &k, &v) == 0 && k && v, "metadata %d missing", i);
        FUZZ_CHECK(saefw_tf_metadata(tf, k) != NULL, "metadata key %s not found", k);
    }
    FUZZ_CHECK(saefw_tf_metadata_at(tf, nm, NULL, NULL) != 0, "metadata index past the end accepted");
}

int fuzz_open_tensorfile_path(const char *path) {
    char err[1024] = "";
    saefw_tensorfile *tf = NULL;
    int rc = saefw_tf_open(path, &tf, err, sizeof err);
    fuzz_note("%s", rc == 0 ? "opened" : err);
    if (rc != 0) {
        FUZZ_CHECK(tf == NULL, "failed open left a file object");
        FUZZ_CHECK(err[0] != 0, "failed open gave no message");
        return -1;
    }
    FUZZ_CHECK(tf != NULL, "open succeeded without a file object");
    fuzz_check_tensorfile(tf);
    saefw_tf_close(tf);
    return 0;
}

int fuzz_open_tensorfile(const uint8_t *data, size_t size, const char *name) {
    char path[1024];
    fuzz_path(path, sizeof path, name);
    fuzz_write(path, data, size);
    return fuzz_open_tensorfile_path(path);
}
