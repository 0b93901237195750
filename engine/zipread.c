/* Read-only zip archives in memory for the PyTorch loader: libzip validates the archive, reads and
 * decompresses entries and checks their CRC, and the central directory parsed here from the mapping
 * tells where a stored entry's data starts (libzip does not expose it), so that a tensor can point into
 * the mapping instead of being copied. */
#include "zipread.h"
#include "util.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

struct saefw_zip {
    const uint8_t *map; /* borrowed */
    size_t size;
    zip_t *za;
    saefw_zip_entry *cd;
    size_t n_cd;
};

static uint64_t le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* ------------------------------------------------------------------------------------------------
 * The zip's central directory, read from the mapping (libzip validates the archive but hides where
 * an entry's data starts). */

static int zip64_extra(const uint8_t *x, size_t xl, uint64_t *usize, uint64_t *csize, uint64_t *loff) {
    while (xl >= 4) {
        size_t id = (size_t)le(x, 2), l = (size_t)le(x + 2, 2);
        if (l > xl - 4) return -1;
        if (id == 1) {
            const uint8_t *q = x + 4;
            size_t left = l;
            uint64_t *fields[3] = {usize, csize, loff};
            for (int i = 0; i < 3; i++) {
                if (*fields[i] != 0xffffffffu) continue;
                if (left < 8) return -1;
                *fields[i] = le(q, 8);
                q += 8;
                left -= 8;
            }
            return 0;
        }
        x += 4 + l;
        xl -= 4 + l;
    }
    return -1;
}

static int cd_parse(const uint8_t *m, size_t size, saefw_zip_entry **out, size_t *n_out, char *err, size_t errlen) {
    *out = NULL;
    *n_out = 0;
    if (size < 22) return saefw_errf(err, errlen, "truncated zip archive (no end of central directory)");
    size_t lo = size - 22 > 65535 ? size - 22 - 65535 : 0, eocd = SIZE_MAX;
    for (size_t p = size - 22;; p--) {
        if (le(m + p, 4) == 0x06054b50u && p + 22 + le(m + p + 20, 2) <= size) {
            eocd = p;
            break;
        }
        if (p == lo) break;
    }
    if (eocd == SIZE_MAX) return saefw_errf(err, errlen, "truncated zip archive (no end of central directory)");
    uint64_t n_ent = le(m + eocd + 10, 2), cd_size = le(m + eocd + 12, 4), cd_off = le(m + eocd + 16, 4);
    if (le(m + eocd + 4, 2) != 0 || le(m + eocd + 6, 2) != 0 || le(m + eocd + 8, 2) != n_ent)
        return saefw_errf(err, errlen, "multi-disk zip archives are not supported");
    if (n_ent == 0xffff || cd_size == 0xffffffffu || cd_off == 0xffffffffu) {
        if (eocd < 20 || le(m + eocd - 20, 4) != 0x07064b50u)
            return saefw_errf(err, errlen, "bad zip archive: zip64 end of central directory locator missing");
        uint64_t z = le(m + eocd - 20 + 8, 8);
        if (z > eocd - 20 || eocd - 20 - z < 56 || le(m + z, 4) != 0x06064b50u)
            return saefw_errf(err, errlen, "bad zip archive: zip64 end of central directory record out of range");
        n_ent = le(m + z + 32, 8);
        cd_size = le(m + z + 40, 8);
        cd_off = le(m + z + 48, 8);
    }
    if (cd_off > size || cd_size > size - cd_off)
        return saefw_errf(err, errlen, "bad zip archive: central directory out of range (truncated?)");
    if (n_ent > cd_size / 46)
        return saefw_errf(err, errlen, "bad zip archive: %" PRIu64 " entries do not fit in the central directory",
                          n_ent);
    saefw_zip_entry *e = saefw_calloc(n_ent ? (size_t)n_ent : 1, sizeof *e, err, errlen);
    if (!e) return -1;
    const uint8_t *p = m + cd_off, *end = m + cd_off + cd_size;
    for (uint64_t i = 0; i < n_ent; i++) {
        if (end - p < 46 || le(p, 4) != 0x02014b50u) {
            free(e);
            return saefw_errf(err, errlen, "bad zip archive: central directory entry %" PRIu64 " is corrupt", i);
        }
        size_t nl = (size_t)le(p + 28, 2), xl = (size_t)le(p + 30, 2), cl = (size_t)le(p + 32, 2);
        if ((size_t)(end - p) - 46 < nl + xl + cl) {
            free(e);
            return saefw_errf(err, errlen, "bad zip archive: central directory entry %" PRIu64 " is truncated", i);
        }
        e[i].name = (const char *)p + 46;
        e[i].name_len = nl;
        e[i].method = (uint16_t)le(p + 10, 2);
        e[i].comp_size = le(p + 20, 4);
        e[i].size = le(p + 24, 4);
        e[i].local_off = le(p + 42, 4);
        if ((e[i].size == 0xffffffffu || e[i].comp_size == 0xffffffffu || e[i].local_off == 0xffffffffu) &&
            zip64_extra(p + 46 + nl, xl, &e[i].size, &e[i].comp_size, &e[i].local_off) != 0) {
            free(e);
            return saefw_errf(err, errlen, "bad zip archive: zip64 extra field of entry %" PRIu64 " missing or short",
                              i);
        }
        p += 46 + nl + xl + cl;
    }
    *out = e;
    *n_out = (size_t)n_ent;
    return 0;
}

static int zip_msg(char *err, size_t errlen, const char *what, zip_error_t *ze) {
    return saefw_errf(err, errlen, "bad zip archive: %s: %s", what, zip_error_strerror(ze));
}

/* Locates entry `name`, checks libzip agrees with the central directory about it, and returns where
 * its data starts in the file. */
int saefw_zip_find(saefw_zip *z, const char *name, const char *what, size_t *idx, uint64_t *data_off, char *err,
                   size_t errlen) {
    zip_int64_t i = zip_name_locate(z->za, name, ZIP_FL_ENC_RAW);
    if (i < 0) return saefw_errf(err, errlen, "%s: record %s is missing from the archive", what, name);
    if ((size_t)i >= z->n_cd)
        return saefw_errf(err, errlen, "bad zip archive: libzip and the central directory disagree about %s", name);
    const saefw_zip_entry *e = &z->cd[i];
    zip_stat_t st;
    zip_stat_init(&st);
    if (e->name_len != strlen(name) || memcmp(e->name, name, e->name_len) != 0 ||
        zip_stat_index(z->za, (zip_uint64_t)i, ZIP_FL_ENC_RAW, &st) != 0 ||
        (st.valid & (ZIP_STAT_SIZE | ZIP_STAT_COMP_SIZE | ZIP_STAT_COMP_METHOD)) !=
            (ZIP_STAT_SIZE | ZIP_STAT_COMP_SIZE | ZIP_STAT_COMP_METHOD) ||
        st.size != e->size || st.comp_size != e->comp_size || st.comp_method != e->method)
        return saefw_errf(err, errlen, "bad zip archive: libzip and the central directory disagree about %s", name);
    const uint8_t *m = z->map;
    size_t size = z->size;
    if (e->local_off > size || size - e->local_off < 30 || le(m + e->local_off, 4) != 0x04034b50u)
        return saefw_errf(err, errlen, "bad zip archive: local header of %s out of range or corrupt", name);
    size_t nl = (size_t)le(m + e->local_off + 26, 2), xl = (size_t)le(m + e->local_off + 28, 2);
    uint64_t d = e->local_off + 30 + nl + xl;
    if (nl != e->name_len || d > size || memcmp(m + e->local_off + 30, e->name, nl) != 0)
        return saefw_errf(err, errlen, "bad zip archive: local header of %s disagrees with the central directory",
                          name);
    if (e->comp_size > size - d)
        return saefw_errf(err, errlen, "%s: data of %s runs past the end of the file (truncated?)", what, name);
    *idx = (size_t)i;
    *data_off = d;
    return 0;
}

/* Reads and decompresses a whole entry with libzip (which also checks its CRC). */
int saefw_zip_read(saefw_zip *z, size_t idx, const char *name, size_t max, uint8_t **out, char *err, size_t errlen) {
    uint64_t size = z->cd[idx].size;
    if (size > max) return saefw_errf(err, errlen, "record %s is too large (%" PRIu64 " bytes)", name, size);
    uint8_t *buf = saefw_malloc((size_t)size, err, errlen);
    if (!buf) return -1;
    zip_file_t *zf = zip_fopen_index(z->za, idx, 0);
    if (!zf) {
        free(buf);
        return zip_msg(err, errlen, name, zip_get_error(z->za));
    }
    uint64_t got = 0;
    zip_int64_t r = 1;
    while (got < size && r > 0) {
        r = zip_fread(zf, buf + got, size - got);
        if (r > 0) got += (uint64_t)r;
    }
    /* One more read makes libzip check the CRC at the end of the entry. */
    uint8_t extra;
    if (r >= 0 && got == size) r = zip_fread(zf, &extra, 1);
    int rc = 0;
    if (r < 0) rc = zip_msg(err, errlen, name, zip_file_get_error(zf));
    else if (got != size) rc = saefw_errf(err, errlen, "bad zip archive: %s is shorter than its stated size", name);
    else if (r > 0) rc = saefw_errf(err, errlen, "bad zip archive: %s is longer than its stated size", name);
    zip_fclose(zf);
    if (rc != 0) {
        free(buf);
        return rc;
    }
    *out = buf;
    return 0;
}

int saefw_zip_open(const uint8_t *map, size_t size, saefw_zip **out, char *err, size_t errlen) {
    *out = NULL;
    saefw_zip *z = saefw_calloc(1, sizeof *z, err, errlen);
    if (!z) return -1;
    z->map = map;
    z->size = size;
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *src = zip_source_buffer_create(map, size, 0, &ze);
    if (!src) {
        int rc = zip_msg(err, errlen, "opening", &ze);
        zip_error_fini(&ze);
        free(z);
        return rc;
    }
    z->za = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &ze);
    if (!z->za) {
        zip_source_free(src);
        int rc = saefw_errf(err, errlen, "bad zip archive (truncated or corrupt?): %s", zip_error_strerror(&ze));
        zip_error_fini(&ze);
        free(z);
        return rc;
    }
    zip_error_fini(&ze);
    int rc = cd_parse(map, size, &z->cd, &z->n_cd, err, errlen);
    if (rc == 0 && (zip_int64_t)z->n_cd != zip_get_num_entries(z->za, 0))
        rc = saefw_errf(err, errlen, "bad zip archive: libzip and the central directory disagree on the entry count");
    if (rc != 0) {
        saefw_zip_close(z);
        return rc;
    }
    *out = z;
    return 0;
}

size_t saefw_zip_count(const saefw_zip *z) { return z->n_cd; }

const saefw_zip_entry *saefw_zip_entry_at(const saefw_zip *z, size_t i) { return &z->cd[i]; }

int saefw_zip_has(const saefw_zip *z, const char *name) { return zip_name_locate(z->za, name, ZIP_FL_ENC_RAW) >= 0; }

void saefw_zip_close(saefw_zip *z) {
    if (!z) return;
    free(z->cd);
    if (z->za) zip_discard(z->za);
    free(z);
}
