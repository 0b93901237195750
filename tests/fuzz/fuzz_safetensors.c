/* Fuzz target: the safetensors reader behind saefw_tf_open (header length, JSON header, offsets). */
#include <string.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* Zip and .npy magic send a file to the other readers; their own targets cover them. */
    if (size >= 2 && memcmp(data, "PK", 2) == 0) return 0;
    if (size >= 6 && memcmp(data, "\x93NUMPY", 6) == 0) return 0;
    if (size > (1u << 20)) return 0;
    fuzz_open_tensorfile(data, size, "input.safetensors");
    return 0;
}
