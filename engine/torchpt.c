/* Reader for PyTorch zip checkpoints (torch.save's default format, e.g. model_final.pth or the seed's
 * N.pt): the zip reader (zipread.c) opens the archive and reads <prefix>/data.pkl, the pickle machine
 * (torch_pickle.c) turns it into the tensor list, and each tensor points into the read-only mapping of
 * its stored <prefix>/data/<key> record, or into a decompressed copy of a compressed one. */
#include "torchpt.h"
#include "tensorfile_internal.h"
#include "torch_pickle.h"
#include "util.h"
#include "zipread.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define PKL_MAX ((size_t)64 << 20)
#define NAME_LEN_MAX 1024

typedef struct {
    saefw_tensorfile *tf;
    saefw_zip *z;
    const char *prefix; /* "<prefix>/" into the mapping */
    size_t prefix_len;
    const uint8_t **inflated; /* [entries], decompressed copies owned by tf */
} archive;

static int find_prefix(archive *ar, char *err, size_t errlen) {
    static const char tail[] = "/data.pkl";
    const size_t tl = sizeof tail - 1;
    int found = 0;
    for (size_t i = 0; i < saefw_zip_count(ar->z); i++) {
        const saefw_zip_entry *e = saefw_zip_entry_at(ar->z, i);
        if (e->name_len <= tl || memcmp(e->name + e->name_len - tl, tail, tl) != 0) continue;
        if (memchr(e->name, '/', e->name_len - tl) || memchr(e->name, 0, e->name_len)) continue;
        if (found++) return saefw_errf(err, errlen, "more than one <prefix>/data.pkl record in the archive");
        ar->prefix = e->name;
        ar->prefix_len = e->name_len - tl + 1;
    }
    if (!found)
        return saefw_errf(err, errlen, "no <prefix>/data.pkl record: a zip archive but not a PyTorch checkpoint");
    return 0;
}

/* "<prefix>/<rest>" into buf. */
static int record_name(const archive *ar, char *buf, size_t buflen, const char *rest, size_t rest_len) {
    if (ar->prefix_len + rest_len + 1 > buflen) return -1;
    memcpy(buf, ar->prefix, ar->prefix_len);
    memcpy(buf + ar->prefix_len, rest, rest_len);
    buf[ar->prefix_len + rest_len] = 0;
    return 0;
}

static int check_byteorder(archive *ar, char *err, size_t errlen) {
    char name[NAME_LEN_MAX + 64];
    if (record_name(ar, name, sizeof name, "byteorder", 9) != 0) return 0;
    if (!saefw_zip_has(ar->z, name)) return 0;
    size_t idx;
    uint64_t off;
    uint8_t *buf;
    if (saefw_zip_find(ar->z, name, "byteorder", &idx, &off, err, errlen) != 0) return -1;
    if (saefw_zip_read(ar->z, idx, name, 64, &buf, err, errlen) != 0) return -1;
    int little = saefw_zip_entry_at(ar->z, idx)->size == 6 && memcmp(buf, "little", 6) == 0;
    free(buf);
    if (!little) return saefw_errf(err, errlen, "checkpoint was written on a big-endian machine; not supported");
    return 0;
}

/* Points out at the tensor's bytes: the mapping for a stored record, a decompressed copy otherwise. */
static int resolve(archive *ar, const saefw_pickle_tensor *t, saefw_tensor_info *out, char *err, size_t errlen) {
    char nm[128], key[96], name[NAME_LEN_MAX + 64];
    saefw_tfi_printable(nm, sizeof nm, t->name, t->name_len);
    saefw_tfi_printable(key, sizeof key, t->key, t->key_len);
    size_t isz = saefw_dtype_size(t->dtype);
    if (memchr(t->key, 0, t->key_len) || memchr(t->key, '/', t->key_len) ||
        ar->prefix_len + 5 + t->key_len + 1 > sizeof name)
        return saefw_errf(err, errlen, "tensor %s: bad storage key \"%s\"", nm, key);
    record_name(ar, name, sizeof name, "data/", 5);
    memcpy(name + ar->prefix_len + 5, t->key, t->key_len + 1);
    char what[256];
    snprintf(what, sizeof what, "tensor %s", nm);
    size_t idx;
    uint64_t off;
    if (saefw_zip_find(ar->z, name, what, &idx, &off, err, errlen) != 0) return -1;
    const saefw_zip_entry *e = saefw_zip_entry_at(ar->z, idx);
    uint64_t want = (uint64_t)t->storage_numel * isz;
    if (e->size != want)
        return saefw_errf(err, errlen,
                          "tensor %s: storage %s has %" PRIu64 " bytes but the pickle declares %" PRId64
                          " %s elements (%" PRIu64 " bytes)",
                          nm, key, e->size, t->storage_numel, saefw_dtype_name(t->dtype), want);
    const uint8_t *base;
    if (e->method == 0) {
        if (e->comp_size != e->size)
            return saefw_errf(err, errlen, "bad zip archive: stored record %s has different sizes", name);
        base = ar->tf->map + off;
    } else {
        if (!ar->inflated[idx]) {
            uint8_t *buf;
            if (saefw_zip_read(ar->z, idx, name, SIZE_MAX, &buf, err, errlen) != 0) return -1;
            if (saefw_tfi_own(ar->tf, buf, err, errlen) != 0) return -1;
            ar->inflated[idx] = buf;
        }
        base = ar->inflated[idx];
    }
    out->dtype = t->dtype;
    out->ndim = t->ndim;
    memcpy(out->shape, t->shape, (size_t)t->ndim * sizeof t->shape[0]);
    out->numel = t->numel;
    out->nbytes = t->nbytes;
    out->data = base + (size_t)t->offset * isz;
    return 0;
}

int saefw_tfi_load_torch(saefw_tensorfile *tf, char *err, size_t errlen) {
    archive ar;
    memset(&ar, 0, sizeof ar);
    ar.tf = tf;
    if (saefw_zip_open(tf->map, tf->size, &ar.z, err, errlen) != 0) return -1;

    saefw_pickle *pk = NULL;
    uint8_t *pkl = NULL;
    size_t idx;
    uint64_t off;
    char name[NAME_LEN_MAX + 64];
    int rc = find_prefix(&ar, err, errlen);
    if (rc == 0 && !(ar.inflated = calloc(saefw_zip_count(ar.z), sizeof *ar.inflated)))
        rc = saefw_errf(err, errlen, "out of memory");
    if (rc == 0 && record_name(&ar, name, sizeof name, "data.pkl", 8) != 0)
        rc = saefw_errf(err, errlen, "archive prefix too long");
    if (rc == 0) rc = saefw_zip_find(ar.z, name, "data.pkl", &idx, &off, err, errlen);
    if (rc == 0) rc = saefw_zip_read(ar.z, idx, name, PKL_MAX, &pkl, err, errlen);
    if (rc == 0) rc = check_byteorder(&ar, err, errlen);
    if (rc == 0) rc = saefw_pickle_load(pkl, saefw_zip_entry_at(ar.z, idx)->size, &pk, err, errlen);
    for (size_t i = 0; rc == 0 && i < saefw_pickle_count(pk); i++) {
        saefw_pickle_tensor pt;
        saefw_tensor_info tmp, *t;
        memset(&tmp, 0, sizeof tmp);
        rc = saefw_pickle_get(pk, i, &pt, err, errlen);
        if (rc == 0) rc = resolve(&ar, &pt, &tmp, err, errlen);
        if (rc == 0) rc = saefw_tfi_add(tf, pt.name, pt.name_len, &t, err, errlen);
        if (rc == 0) {
            tmp.name = t->name;
            *t = tmp;
        }
    }
    saefw_pickle_free(pk);
    free(pkl);
    free(ar.inflated);
    saefw_zip_close(ar.z);
    return rc;
}
