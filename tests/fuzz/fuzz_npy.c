/* Fuzz target: the .npy reader behind saefw_tf_open (version, header length, the dict literal). */
#include <string.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* Without the magic the file goes to another reader; keep this target on .npy. */
    if (size < 6 || memcmp(data, "\x93NUMPY", 6) != 0) return 0;
    if (size > (1u << 20)) return 0;
    fuzz_open_tensorfile(data, size, "input.npy");
    return 0;
}
