/* Helpers for the Hub client: buffers, progress events, token scrubbing, sha256/base64 over
 * OpenSSL, URL escaping and path checks. */
#include "hf_internal.h"

#include "../engine/util.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int hf_buf_append(hf_buf *b, const void *data, size_t n) {
    if (b->oom) return -1;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) {
            if (cap > SIZE_MAX / 2) {
                b->oom = 1;
                return -1;
            }
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return -1;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = 0;
    return 0;
}

int hf_buf_puts(hf_buf *b, const char *s) { return hf_buf_append(b, s, strlen(s)); }

int hf_buf_printf(hf_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return -1;
    }
    char small[512];
    char *tmp = (size_t)n < sizeof small ? small : malloc((size_t)n + 1);
    if (!tmp) {
        b->oom = 1;
        return -1;
    }
    va_start(ap, fmt);
    vsnprintf(tmp, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = hf_buf_append(b, tmp, (size_t)n);
    if (tmp != small) free(tmp);
    return rc;
}

void hf_buf_free(hf_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

void hf_scrub(const hf_config *cfg, char *s) {
    if (!cfg || !cfg->token || !*cfg->token || !s) return;
    size_t tl = strlen(cfg->token);
    char *hit;
    while ((hit = strstr(s, cfg->token)) != NULL) {
        /* "***" is never longer than a real token; shift the tail left over the rest. */
        size_t stars = tl < 3 ? tl : 3;
        memset(hit, '*', stars);
        memmove(hit + stars, hit + tl, strlen(hit + tl) + 1);
    }
}

static void emit(const hf_config *cfg, hf_event_kind kind, const char *fmt, va_list ap) {
    if (!cfg || !cfg->progress) return;
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    hf_scrub(cfg, msg);
    hf_event ev = {.kind = kind, .msg = msg};
    cfg->progress(cfg->progress_ud, &ev);
}

void hf_step(const hf_config *cfg, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    emit(cfg, HF_EV_STEP, fmt, ap);
    va_end(ap);
}

void hf_note(const hf_config *cfg, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    emit(cfg, HF_EV_NOTE, fmt, ap);
    va_end(ap);
}

void hf_bytes(const hf_config *cfg, hf_event_kind kind, const char *name, uint64_t done, uint64_t total) {
    if (!cfg || !cfg->progress) return;
    hf_event ev = {.kind = kind, .name = name, .done = done, .total = total};
    cfg->progress(cfg->progress_ud, &ev);
}

char *hf_escape(const char *s, int keep_slash) {
    hf_buf b = {0};
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
                    *p == '_' || *p == '.' || *p == '~' || (keep_slash && *p == '/');
        if (plain) {
            hf_buf_append(&b, p, 1);
        } else {
            char enc[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            hf_buf_append(&b, enc, 3);
        }
    }
    if (hf_buf_append(&b, "", 0) != 0) {
        hf_buf_free(&b);
        return NULL;
    }
    return b.p;
}

void hf_sha256_hex(const void *data, size_t n, char hex[65]) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    hex[0] = 0;
    if (!EVP_Digest(data, n, md, &mdlen, EVP_sha256(), NULL)) return;
    for (unsigned i = 0; i < mdlen; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

int hf_sha256_file(const char *path, char hex[65], uint64_t *size, const char *needle, int *found, char *err,
                   size_t errlen) {
    enum { CHUNK = 1 << 20 };
    size_t nl = needle ? strlen(needle) : 0;
    if (found) *found = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return saefw_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    /* The tail of the previous chunk is kept in front of the next so a needle split across two
     * reads is still seen. */
    size_t keep = nl > 1 ? nl - 1 : 0;
    unsigned char *buf = malloc(CHUNK + keep);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int rc = -1;
    if (!buf || !ctx) {
        saefw_errf(err, errlen, "%s: out of memory hashing", path);
        goto out;
    }
    if (!EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
        saefw_errf(err, errlen, "%s: sha256 init failed", path);
        goto out;
    }
    uint64_t total = 0;
    size_t carried = 0;
    for (;;) {
        ssize_t got = read(fd, buf + carried, CHUNK);
        if (got < 0) {
            if (errno == EINTR) continue;
            saefw_errf(err, errlen, "%s: read failed: %s", path, strerror(errno));
            goto out;
        }
        if (got == 0) break;
        if (!EVP_DigestUpdate(ctx, buf + carried, (size_t)got)) {
            saefw_errf(err, errlen, "%s: sha256 failed", path);
            goto out;
        }
        total += (uint64_t)got;
        size_t have = carried + (size_t)got;
        if (nl && found && !*found && memmem(buf, have, needle, nl)) *found = 1;
        carried = have < keep ? have : keep;
        memmove(buf, buf + have - carried, carried);
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_DigestFinal_ex(ctx, md, &mdlen)) {
        saefw_errf(err, errlen, "%s: sha256 failed", path);
        goto out;
    }
    for (unsigned i = 0; i < mdlen; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    if (size) *size = total;
    rc = 0;
out:
    EVP_MD_CTX_free(ctx);
    free(buf);
    close(fd);
    return rc;
}

char *hf_base64(const void *data, size_t n) {
    /* EVP_EncodeBlock takes an int length: encode in slices that are a multiple of 3 bytes. */
    enum { SLICE = 3 * (1 << 20) };
    size_t outlen = 4 * ((n + 2) / 3) + 1;
    char *out = malloc(outlen);
    if (!out) return NULL;
    size_t o = 0;
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i += SLICE) {
        size_t k = n - i < SLICE ? n - i : SLICE;
        o += (size_t)EVP_EncodeBlock((unsigned char *)out + o, p + i, (int)k);
    }
    out[o] = 0;
    return out;
}

int hf_is_hex(const char *s, size_t n) {
    if (strlen(s) != n) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return 0;
    }
    return 1;
}

int hf_safe_relpath(const char *p) {
    if (!p || !*p || *p == '/') return 0;
    const char *s = p;
    while (*s) {
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.')) return 0;
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)s[i] < 0x20) return 0;
        if (!e) break;
        s = e + 1;
    }
    return p[strlen(p) - 1] != '/';
}

int hf_mkdirs_for(const char *path, char *err, size_t errlen) {
    char *dir = hf_strdup(path);
    if (!dir) return saefw_errf(err, errlen, "out of memory");
    char *slash = strrchr(dir, '/');
    int rc = 0;
    if (slash && slash != dir) {
        *slash = 0;
        rc = saefw_mkdirs(dir, err, errlen);
    }
    free(dir);
    return rc;
}

char *hf_strdup(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

char *hf_join(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    char *p = malloc(na + nb + 2);
    if (!p) return NULL;
    memcpy(p, a, na);
    p[na] = '/';
    memcpy(p + na + 1, b, nb + 1);
    return p;
}

void hf_human_size(uint64_t n, char *out, size_t len) {
    if (n >= (1u << 30)) snprintf(out, len, "%.2f GB", (double)n / (1 << 30));
    else if (n >= (1u << 20)) snprintf(out, len, "%.1f MB", (double)n / (1 << 20));
    else if (n >= 1024) snprintf(out, len, "%.1f kB", (double)n / 1024);
    else snprintf(out, len, "%llu B", (unsigned long long)n);
}
