/* Helpers shared by the fuzz targets: a private scratch folder per process, writing an input to a
 * file, and the invariants every opened tensor file must keep whatever bytes it came from. */
#ifndef SAEFW_FUZZ_COMMON_H
#define SAEFW_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "tensorfile.h"

/* libFuzzer's entry point, also called by replay_main.c. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Report a broken invariant (a bug in the code under test) and abort, so both libFuzzer and the
 * replay runner count the input as a crash. */
void fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
#define FUZZ_CHECK(cond, ...)                                                                                          \
    do {                                                                                                               \
        if (!(cond)) fuzz_fail(__VA_ARGS__);                                                                           \
    } while (0)

/* With SAEFW_FUZZ_VERBOSE set, print what the code under test answered (to check that the seeds
 * reach the paths they are meant for); silent otherwise, as fuzzing wants. */
void fuzz_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A folder of this process's own, created on first use and removed at exit. */
const char *fuzz_tmpdir(void);
/* fuzz_tmpdir()/name into out. */
void fuzz_path(char *out, size_t outlen, const char *name);
/* Write data to path, replacing it; a failure here is the harness's, so it aborts too. */
void fuzz_write(const char *path, const void *data, size_t size);
/* rm -rf of a folder's contents (the folder itself stays). */
void fuzz_clear_dir(const char *dir);

/* Check what saefw_tf_open promised about an open file: shapes and sizes agree, every tensor's
 * bytes lie inside the mapping or an owned copy (all of them are read, so AddressSanitizer sees
 * a copy that is too short), alignment, and float conversion of small tensors. */
void fuzz_check_tensorfile(const saefw_tensorfile *tf);

/* Write data to fuzz_tmpdir()/name, open it with saefw_tf_open, check it and close it. Returns 0
 * when it opened, -1 when it was refused (with a message, as the contract demands). */
int fuzz_open_tensorfile(const uint8_t *data, size_t size, const char *name);
/* The same for a file already written. */
int fuzz_open_tensorfile_path(const char *path);

#endif
