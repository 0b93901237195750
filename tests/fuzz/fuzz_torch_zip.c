/* Fuzz target: the PyTorch zip reader behind saefw_tf_open. An input that starts with "PK" is the
 * file itself (central directory, local headers, zip64, records); any other input is built into a
 * well-formed archive first, so that mutations of the pickle and the storages are not all stopped
 * by libzip's CRC check: byte 0 holds flags, the rest is split at "@@@@" into data.pkl and the
 * storage records data/0, data/1, ... */
#include <stdio.h>
#include <string.h>
#include <zip.h>

#include "fuzz_common.h"

#define SEP "@@@@"
#define MAX_PARTS 16

enum {
    F_DEFLATE_STORAGES = 1, /* compressed storages are inflated into owned copies */
    F_DEFLATE_PICKLE = 2,
    F_BYTEORDER = 4,  /* add a byteorder record ... */
    F_BIG_ENDIAN = 8, /* ... saying "big" instead of "little" */
};

static void add(zip_t *za, const char *name, const void *p, size_t n, int deflate) {
    zip_source_t *s = zip_source_buffer(za, p, n, 0);
    zip_int64_t i = s ? zip_file_add(za, name, s, ZIP_FL_ENC_UTF_8 | ZIP_FL_OVERWRITE) : -1;
    if (i < 0) {
        zip_source_free(s);
        fuzz_fail("libzip cannot add %s: %s", name, zip_strerror(za));
    }
    if (zip_set_file_compression(za, (zip_uint64_t)i, deflate ? ZIP_CM_DEFLATE : ZIP_CM_STORE, 0) != 0)
        fuzz_fail("libzip cannot set compression of %s: %s", name, zip_strerror(za));
}

static void build_and_open(const uint8_t *data, size_t size) {
    char path[1024];
    fuzz_path(path, sizeof path, "built.pt");
    int zerr = 0;
    zip_t *za = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &zerr);
    if (!za) fuzz_fail("libzip cannot create %s (error %d)", path, zerr);
    unsigned flags = size ? data[0] : 0;
    const uint8_t *p = size ? data + 1 : data, *end = data + size;
    for (int part = 0; part < MAX_PARTS; part++) {
        const uint8_t *cut = memmem(p, (size_t)(end - p), SEP, 4);
        const uint8_t *stop = cut && part + 1 < MAX_PARTS ? cut : end;
        char name[64];
        if (part == 0) snprintf(name, sizeof name, "archive/data.pkl");
        else snprintf(name, sizeof name, "archive/data/%d", part - 1);
        add(za, name, p, (size_t)(stop - p), part == 0 ? flags & F_DEFLATE_PICKLE : flags & F_DEFLATE_STORAGES);
        if (stop == end) break;
        p = stop + 4;
    }
    if (flags & F_BYTEORDER) {
        const char *bo = flags & F_BIG_ENDIAN ? "big" : "little";
        add(za, "archive/byteorder", bo, strlen(bo), 0);
    }
    if (zip_close(za) != 0) {
        zip_discard(za);
        fuzz_fail("libzip cannot write %s", path);
    }
    fuzz_open_tensorfile_path(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > (1u << 20)) return 0;
    if (size >= 2 && memcmp(data, "PK", 2) == 0) fuzz_open_tensorfile(data, size, "input.pt");
    else build_and_open(data, size);
    return 0;
}
