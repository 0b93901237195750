/* Read-only zip archives held in memory (zipread.c), as the PyTorch checkpoint loader needs them. */
#ifndef SAEFW_ZIPREAD_H
#define SAEFW_ZIPREAD_H

#include <stddef.h>
#include <stdint.h>

typedef struct saefw_zip saefw_zip;

/* One central-directory entry. */
typedef struct {
    const char *name; /* into the mapping, not NUL-terminated */
    size_t name_len;
    uint16_t method; /* 0: stored */
    uint64_t comp_size, size, local_off;
} saefw_zip_entry;

/* Open the archive held in map[0..size), which must stay valid until saefw_zip_close. libzip checks
 * its consistency and must agree with the central directory read here. Messages start "bad zip
 * archive" and do not name the file (the caller prefixes it). */
int saefw_zip_open(const uint8_t *map, size_t size, saefw_zip **out, char *err, size_t errlen);
void saefw_zip_close(saefw_zip *z);

size_t saefw_zip_count(const saefw_zip *z);
/* Entry i < count, in central-directory order. */
const saefw_zip_entry *saefw_zip_entry_at(const saefw_zip *z, size_t i);
/* Whether an entry of that exact name exists. */
int saefw_zip_has(const saefw_zip *z, const char *name);

/* Find entry `name`, check that libzip, the central directory and its local header agree about it and
 * that its data lies inside the file; *idx is its index and *data_off where its (possibly compressed)
 * data starts in map. `what` names the caller's object in the messages for a missing or cut entry. */
int saefw_zip_find(saefw_zip *z, const char *name, const char *what, size_t *idx, uint64_t *data_off, char *err,
                   size_t errlen);
/* Read and decompress entry idx (named `name` in messages) into a new buffer of its stated size, which
 * must be at most max; its CRC is checked. The caller frees *out. */
int saefw_zip_read(saefw_zip *z, size_t idx, const char *name, size_t max, uint8_t **out, char *err, size_t errlen);

#endif
