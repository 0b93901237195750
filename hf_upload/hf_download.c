/* Download Hub files of model and dataset repos into huggingface_hub's cache layout, so Python
 * and saefw share one cache (<kind> is "models" or "datasets"):
 *   <cache>/<kind>--org--name/blobs/<etag>               file bytes (.incomplete while arriving)
 *   <cache>/<kind>--org--name/refs/<revision>            commit hash the revision pointed at
 *   <cache>/<kind>--org--name/snapshots/<commit>/<path>  relative symlink to ../../blobs/<etag>
 *   <cache>/<kind>--org--name/.no_exist/<commit>/<path>  empty: the Hub said 404 EntryNotFound
 *   <cache>/.locks/<kind>--org--name/<etag>.lock         flock while a blob is written
 * Metadata comes from a HEAD on the resolve URL (X-Repo-Commit, X-Linked-Etag/ETag, sizes); a whole
 * repo is listed with the repo info (commit) and the paginated tree endpoint; interrupted
 * transfers resume with Range from the .incomplete file. */
#include "hf_internal.h"

#include "../engine/model_resolve.h"
#include "../engine/util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    const hf_config *cfg;
    const char *repo;
    const char *url_prefix; /* "" for models, "datasets/" in resolve URLs */
    const char *api_kind;   /* "models", "datasets" in API URLs */
    const char *what;       /* "model", "dataset": for messages */
    char *repo_dir;         /* <cache>/<kind>--org--name */
    char *lock_dir;         /* <cache>/.locks/<kind>--org--name */
    char *err;
    size_t errlen;
} dl;

/* "W/\"abc\"" -> "abc", as huggingface_hub normalises ETags. */
static void normalize_etag(const char *in, char *out, size_t n) {
    if (!strncmp(in, "W/", 2)) in += 2;
    size_t len = strlen(in);
    while (len && *in == '"') in++, len--;
    while (len && in[len - 1] == '"') len--;
    snprintf(out, n, "%.*s", (int)len, in);
}

static int etag_ok(const char *e) {
    if (!*e || strlen(e) > 200 || !strcmp(e, ".") || !strcmp(e, "..")) return 0;
    for (const char *p = e; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '_' || *p == '.'))
            return 0;
    return 1;
}

static char *path3(const char *a, const char *b, const char *c) {
    hf_buf p = {0};
    hf_buf_printf(&p, "%s/%s/%s", a, b, c);
    if (p.oom) {
        hf_buf_free(&p);
        return NULL;
    }
    return p.p;
}

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* Commit hash a revision resolves to from the cache alone: itself when it is one, else refs/. */
static int cached_commit(dl *d, const char *revision, char commit[64]) {
    if (hf_is_hex(revision, 40)) {
        snprintf(commit, 64, "%s", revision);
        return 0;
    }
    if (!hf_safe_relpath(revision)) return -1;
    char *ref = path3(d->repo_dir, "refs", revision);
    char *text = NULL;
    char e2[256];
    int rc = ref && saefw_read_file(ref, &text, NULL, e2, sizeof e2) == 0 ? 0 : -1;
    free(ref);
    if (rc == 0) {
        size_t n = strcspn(text, " \t\r\n");
        text[n] = 0;
        rc = hf_is_hex(text, 40) ? 0 : -1;
        if (rc == 0) snprintf(commit, 64, "%s", text);
    }
    free(text);
    return rc;
}

static char *snapshot_path(dl *d, const char *commit, const char *file) {
    char *snap = path3(d->repo_dir, "snapshots", commit);
    if (!snap || !file) return snap;
    char *p = hf_join(snap, file);
    free(snap);
    return p;
}

/* The cached copy of file at revision (or the snapshot folder when file is NULL), or NULL. */
static char *cache_lookup(dl *d, const char *revision, const char *file) {
    char commit[64];
    if (cached_commit(d, revision, commit) != 0) return NULL;
    char *p = snapshot_path(d, commit, file);
    if (p && !exists(p)) {
        free(p);
        p = NULL;
    }
    return p;
}

static int write_ref(dl *d, const char *revision, const char *commit) {
    if (!strcmp(revision, commit) || !hf_safe_relpath(revision)) return 0;
    char *ref = path3(d->repo_dir, "refs", revision);
    if (!ref) return saefw_errf(d->err, d->errlen, "out of memory");
    char *old = NULL;
    char e2[256];
    int same = saefw_read_file(ref, &old, NULL, e2, sizeof e2) == 0 && !strcmp(old, commit);
    free(old);
    int rc = 0;
    if (!same)
        rc = hf_mkdirs_for(ref, d->err, d->errlen) ||
                     saefw_write_file_atomic(ref, commit, strlen(commit), d->err, d->errlen)
                 ? -1
                 : 0;
    free(ref);
    return rc;
}

/* snapshots/<commit>/<file> -> ../../blobs/<etag> (one more ../ per folder in file), replacing
 * whatever is there in one rename. */
static int link_pointer(dl *d, const char *pointer, const char *file, const char *etag) {
    hf_buf target = {0}, tmp = {0};
    hf_buf_puts(&target, "../../");
    for (const char *p = file; *p; p++)
        if (*p == '/') hf_buf_puts(&target, "../");
    hf_buf_printf(&target, "blobs/%s", etag);
    hf_buf_printf(&tmp, "%s.tmp.%ld", pointer, (long)getpid());
    int rc = 0;
    if (target.oom || tmp.oom) {
        rc = saefw_errf(d->err, d->errlen, "out of memory");
    } else if (hf_mkdirs_for(pointer, d->err, d->errlen) != 0) {
        rc = -1;
    } else {
        unlink(tmp.p);
        if (symlink(target.p, tmp.p) != 0)
            rc = saefw_errf(d->err, d->errlen, "%s: cannot create symlink: %s", pointer, strerror(errno));
        else if (rename(tmp.p, pointer) != 0) {
            rc = saefw_errf(d->err, d->errlen, "%s: cannot place symlink: %s", pointer, strerror(errno));
            unlink(tmp.p);
        }
    }
    hf_buf_free(&target);
    hf_buf_free(&tmp);
    return rc;
}

/* <cache>/CACHEDIR.TAG (the Cache Directory Tagging Standard), as huggingface_hub leaves it so
 * that backup tools skip the cache. Best effort: a failure is no reason to stop a download. */
static void tag_cache_dir(dl *d) {
    char *tag = hf_join(d->cfg->cache_dir, "CACHEDIR.TAG");
    if (tag && !exists(tag)) {
        static const char text[] = "Signature: 8a477f597d28d172789f06886806bc55\n"
                                   "# Cache directory tag written by saefw (huggingface_hub's cache layout).\n"
                                   "# See https://bford.info/cachedir/\n";
        char e2[256];
        saefw_write_file_atomic(tag, text, sizeof text - 1, e2, sizeof e2);
    }
    free(tag);
}

/* Record, as huggingface_hub does after a 404 EntryNotFound, that file is absent at commit: an
 * empty .no_exist/<commit>/<file>, and refs/<revision>. Best effort: a read-only cache only loses
 * the record, as in huggingface_hub, so failures leave err untouched. */
static void mark_no_exist(dl *d, const char *revision, const char *commit, const char *file) {
    char *dir = path3(d->repo_dir, ".no_exist", commit);
    char *p = dir ? hf_join(dir, file) : NULL;
    char e2[256];
    char *saved_err = d->err;
    size_t saved_len = d->errlen;
    d->err = e2;
    d->errlen = sizeof e2;
    if (p && !exists(p) && hf_mkdirs_for(p, e2, sizeof e2) == 0) {
        int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd >= 0) close(fd);
    }
    write_ref(d, revision, commit);
    d->err = saved_err;
    d->errlen = saved_len;
    free(dir);
    free(p);
}

/* Whether the cache records file as absent at the commit revision resolves to. */
static int no_exist_cached(dl *d, const char *revision, const char *file) {
    char commit[64];
    if (cached_commit(d, revision, commit) != 0) return 0;
    char *dir = path3(d->repo_dir, ".no_exist", commit);
    char *p = dir ? hf_join(dir, file) : NULL;
    int yes = p && exists(p);
    free(dir);
    free(p);
    return yes;
}

typedef struct {
    char commit[64];
    char etag[256];
    uint64_t size;
    int size_known;
    int lfs;
    char *get_url; /* where the bytes are: the resolve URL, or the storage URL it redirected to */
    int get_auth;  /* send the token there (only to the endpoint itself) */
} meta;

static char *origin_of(const char *url) {
    const char *p = strstr(url, "://");
    p = p ? strchr(p + 3, '/') : NULL;
    size_t n = p ? (size_t)(p - url) : strlen(url);
    char *o = malloc(n + 1);
    if (o) {
        memcpy(o, url, n);
        o[n] = 0;
    }
    return o;
}

/* HEAD the resolve URL without following absolute redirects (those lead to storage, whose
 * headers are not the Hub's); relative ones (renamed repos) are followed. Returns 0 with m
 * filled, 1 when the server could not be reached (message in err), -1 on an error answer. */
static int head_file(dl *d, const char *revision, const char *file, meta *m) {
    char *rev = hf_escape(revision, 0), *fe = hf_escape(file, 1);
    hf_buf url = {0};
    if (rev && fe) hf_buf_printf(&url, "%s/%s%s/resolve/%s/%s", d->cfg->endpoint, d->url_prefix, d->repo, rev, fe);
    free(rev);
    free(fe);
    if (!url.p || url.oom) {
        hf_buf_free(&url);
        return saefw_errf(d->err, d->errlen, "out of memory");
    }
    char *cur = url.p;
    int rc = -1;
    hf_resp resp = {0};
    for (int hop = 0;; hop++) {
        hf_req req;
        hf_req_init(&req, "HEAD", cur, "resolve");
        req.auth = d->cfg->token != NULL;
        req.idempotent = 1;
        req.headers[0] = "Accept-Encoding: identity";
        if (hf_http(d->cfg, &req, &resp, d->err, d->errlen) != 0) {
            rc = 1;
            break;
        }
        int redirect = resp.status >= 300 && resp.status < 400 && resp.location;
        if (redirect && resp.location[0] == '/' && hop < 5) {
            char *origin = origin_of(cur);
            hf_buf next = {0};
            if (origin) hf_buf_printf(&next, "%s%s", origin, resp.location);
            free(origin);
            if (!next.p || next.oom) {
                hf_buf_free(&next);
                saefw_errf(d->err, d->errlen, "out of memory");
                break;
            }
            if (cur != url.p) free(cur);
            cur = next.p;
            continue;
        }
        if (resp.status != 200 && !redirect) {
            char subject[512];
            const char *code = resp.error_code ? resp.error_code : "";
            if (resp.status == 404 && !strcmp(code, "EntryNotFound") && resp.repo_commit &&
                hf_is_hex(resp.repo_commit, 40))
                mark_no_exist(d, revision, resp.repo_commit, file);
            if (!strcmp(code, "RepoNotFound") || !strcmp(code, "RevisionNotFound"))
                snprintf(subject, sizeof subject, "repository %s", d->repo);
            else snprintf(subject, sizeof subject, "file %s in %s at revision %s", file, d->repo, revision);
            hf_http_fail(d->cfg, &req, &resp, subject,
                         resp.status == 403 ? "private and gated repos need a token with read access" : NULL, d->err,
                         d->errlen);
            break;
        }
        const char *commit = resp.repo_commit;
        const char *etag = resp.linked_etag ? resp.linked_etag : resp.etag;
        const char *size = resp.linked_size ? resp.linked_size : resp.content_length;
        if (!commit || !hf_is_hex(commit, 40) || !etag) {
            saefw_errf(d->err, d->errlen,
                       "resolve %s: the server sent no commit hash or ETag; is %s a Hugging Face Hub?", file,
                       d->cfg->endpoint);
            break;
        }
        snprintf(m->commit, sizeof m->commit, "%s", commit);
        normalize_etag(etag, m->etag, sizeof m->etag);
        if (!etag_ok(m->etag)) {
            saefw_errf(d->err, d->errlen, "resolve %s: unusable ETag from the server", file);
            break;
        }
        m->lfs = resp.linked_etag != NULL;
        if (size) {
            char *end;
            unsigned long long s = strtoull(size, &end, 10);
            m->size_known = end != size && *end == 0;
            m->size = s;
        }
        /* Storage URLs carry their own signature: the token is sent only to the endpoint. */
        m->get_url = hf_strdup(redirect ? resp.location : cur);
        m->get_auth = !redirect && d->cfg->token != NULL;
        rc = m->get_url ? 0 : saefw_errf(d->err, d->errlen, "out of memory");
        break;
    }
    hf_resp_free(&resp);
    if (cur != url.p) free(cur);
    hf_buf_free(&url);
    return rc;
}

static int resume_prepare(void *ud, hf_req *req, char *err, size_t errlen) {
    (void)ud, (void)err, (void)errlen;
    if (req->sink_off > 0)
        snprintf(req->range, sizeof req->range, "Range: bytes=%llu-", (unsigned long long)req->sink_off);
    else req->range[0] = 0;
    req->progress_base = req->sink_off;
    return 0;
}

/* Bring blobs/<etag> into existence: download into <blob>.incomplete (resuming what is there),
 * check size and, for LFS files, sha256, then rename. Called with the blob's lock held. */
static int fetch_blob(dl *d, const char *file, const meta *m, const char *blob) {
    hf_buf inc = {0};
    hf_buf_printf(&inc, "%s.incomplete", blob);
    if (inc.oom) return saefw_errf(d->err, d->errlen, "out of memory");
    int rc = -1;
    int fd = open(inc.p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        saefw_errf(d->err, d->errlen, "%s: cannot create: %s", inc.p, strerror(errno));
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        saefw_errf(d->err, d->errlen, "%s: %s", inc.p, strerror(errno));
        goto out;
    }
    uint64_t have = (uint64_t)st.st_size;
    if (m->size_known && have > m->size) {
        if (ftruncate(fd, 0) != 0) {
            saefw_errf(d->err, d->errlen, "%s: %s", inc.p, strerror(errno));
            goto out;
        }
        have = 0;
    }
    char label[512];
    snprintf(label, sizeof label, "%s", file);
    if (have > 0) hf_note(d->cfg, "resuming %s at byte %llu", file, (unsigned long long)have);
    if (!(m->size_known && have == m->size)) {
        hf_req req;
        hf_req_init(&req, "GET", m->get_url, "download");
        req.auth = m->get_auth;
        req.follow = 1;
        req.idempotent = 1;
        req.sink_fd = fd;
        req.sink_off = have;
        req.prepare = resume_prepare;
        req.progress_name = label;
        req.progress_total = m->size_known ? m->size : 0;
        hf_resp resp = {0};
        int hr = hf_http(d->cfg, &req, &resp, d->err, d->errlen);
        if (hr == 0 && resp.status != 200 && resp.status != 206) {
            char subject[512];
            snprintf(subject, sizeof subject, "file %s in %s", file, d->repo);
            hf_http_fail(d->cfg, &req, &resp, subject, NULL, d->err, d->errlen);
            hr = -1;
        }
        hf_resp_free(&resp);
        if (hr != 0) {
            saefw_err_prefix(d->err, d->errlen, "%s", file);
            goto out;
        }
        have = req.sink_off;
    }
    if (m->size_known && have != m->size) {
        saefw_errf(d->err, d->errlen, "%s: download incomplete (%llu of %llu bytes); run again to resume", file,
                   (unsigned long long)have, (unsigned long long)m->size);
        goto out;
    }
    if (fsync(fd) != 0) {
        saefw_errf(d->err, d->errlen, "%s: %s", inc.p, strerror(errno));
        goto out;
    }
    if (m->lfs && hf_is_hex(m->etag, 64)) {
        char sha[65];
        if (hf_sha256_file(inc.p, sha, NULL, NULL, NULL, d->err, d->errlen) != 0) goto out;
        if (strcmp(sha, m->etag) != 0) {
            unlink(inc.p);
            saefw_errf(d->err, d->errlen, "%s: the downloaded bytes do not match their sha256; removed them, run again",
                       file);
            goto out;
        }
    }
    if (rename(inc.p, blob) != 0) {
        saefw_errf(d->err, d->errlen, "%s: cannot move into place: %s", blob, strerror(errno));
        goto out;
    }
    hf_bytes(d->cfg, HF_EV_DONE, label, have, have);
    rc = 0;
out:
    if (fd >= 0) close(fd);
    hf_buf_free(&inc);
    return rc;
}

/* One file at revision into the cache; *pointer gets snapshots/<commit>/<file>. */
static int download_one(dl *d, const char *revision, const char *file, char **pointer, char commit_out[64]) {
    *pointer = NULL;
    if (hf_is_hex(revision, 40)) {
        char *p = snapshot_path(d, revision, file);
        if (p && exists(p)) {
            snprintf(commit_out, 64, "%s", revision);
            *pointer = p;
            return 0;
        }
        free(p);
    }
    if (d->cfg->offline) {
        *pointer = cache_lookup(d, revision, file);
        if (*pointer) return cached_commit(d, revision, commit_out);
        if (no_exist_cached(d, revision, file))
            return saefw_errf(d->err, d->errlen,
                              "%s does not exist in %s %s at revision %s (the Hub said so earlier; "
                              "recorded in %s/.no_exist)",
                              file, d->what, d->repo, revision, d->repo_dir);
        return saefw_errf(d->err, d->errlen,
                          "HF_HUB_OFFLINE is set and %s of %s at revision %s is not in the cache "
                          "(%s); unset HF_HUB_OFFLINE to download it",
                          file, d->repo, revision, d->repo_dir);
    }
    meta m = {0};
    int hr = head_file(d, revision, file, &m);
    if (hr == 1) {
        /* Unreachable: what the cache holds is still good, as huggingface_hub does it. */
        *pointer = cache_lookup(d, revision, file);
        if (*pointer) {
            hf_note(d->cfg, "%s unreachable; using the cached %s", d->cfg->endpoint, file);
            return cached_commit(d, revision, commit_out);
        }
        return -1;
    }
    if (hr != 0) return -1;
    int rc = -1, lock_fd = -1;
    char *blob = NULL, *ptr = NULL, *lock = NULL;
    snprintf(commit_out, 64, "%s", m.commit);
    if (write_ref(d, revision, m.commit) != 0) goto out;
    blob = path3(d->repo_dir, "blobs", m.etag);
    ptr = snapshot_path(d, m.commit, file);
    hf_buf lk = {0};
    hf_buf_printf(&lk, "%s/%s.lock", d->lock_dir, m.etag);
    lock = lk.oom ? (hf_buf_free(&lk), NULL) : lk.p;
    if (!blob || !ptr || !lock) {
        saefw_errf(d->err, d->errlen, "out of memory");
        goto out;
    }
    if (exists(ptr)) {
        hf_note(d->cfg, "%s is up to date in the cache", file);
        rc = 0;
        goto out;
    }
    if (!exists(blob)) {
        if (saefw_mkdirs(d->lock_dir, d->err, d->errlen) != 0 || hf_mkdirs_for(blob, d->err, d->errlen) != 0) goto out;
        tag_cache_dir(d);
        lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (lock_fd < 0) {
            saefw_errf(d->err, d->errlen, "%s: cannot create lock: %s", lock, strerror(errno));
            goto out;
        }
        /* Python's filelock uses flock too, so both tools wait for each other here. */
        while (flock(lock_fd, LOCK_EX) != 0) {
            if (errno != EINTR) {
                saefw_errf(d->err, d->errlen, "%s: cannot lock: %s", lock, strerror(errno));
                goto out;
            }
        }
        if (!exists(blob) && fetch_blob(d, file, &m, blob) != 0) goto out;
    }
    if (link_pointer(d, ptr, file, m.etag) != 0) goto out;
    rc = 0;
out:
    if (lock_fd >= 0) {
        flock(lock_fd, LOCK_UN);
        close(lock_fd);
    }
    if (rc == 0) *pointer = ptr;
    else free(ptr);
    free(blob);
    free(lock);
    free(m.get_url);
    return rc;
}

typedef struct {
    char **v;
    uint64_t *size; /* bytes per file from the tree listing */
    size_t n, cap;
} strlist;

static void strlist_free(strlist *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    free(l->size);
    memset(l, 0, sizeof *l);
}

static int strlist_add(strlist *l, const char *s, uint64_t size) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v) return -1;
        l->v = v;
        uint64_t *sz = realloc(l->size, cap * sizeof *sz);
        if (!sz) return -1;
        l->size = sz;
        l->cap = cap;
    }
    if (!(l->v[l->n] = hf_strdup(s))) return -1;
    l->size[l->n++] = size;
    return 0;
}

/* The URL of rel="next" in an RFC 8288 Link header (the Hub's pagination), malloc'd, or NULL. */
static char *link_next(const char *link) {
    for (const char *p = link ? strchr(link, '<') : NULL; p; p = strchr(p + 1, '<')) {
        const char *e = strchr(p, '>');
        if (!e) break;
        size_t seg = strcspn(e, ",");
        int next = 0;
        for (const char *q = e; q + 8 <= e + seg && !next; q++)
            next = !strncmp(q, "rel=\"next\"", 10) || !strncmp(q, "rel=next", 8);
        if (next) {
            char *u = malloc((size_t)(e - p));
            if (u) {
                memcpy(u, p + 1, (size_t)(e - p - 1));
                u[e - p - 1] = 0;
            }
            return u;
        }
    }
    return NULL;
}

/* GET an API URL and parse its JSON answer into *j; *next gets the next page's URL (NULL when
 * none). The token goes only to the endpoint itself. Returns 0, 1 when the server could not be
 * reached, -1 on an error answer (message in err). */
static int api_get(dl *d, const char *url, const char *what, cJSON **j, char **next) {
    *j = NULL;
    if (next) *next = NULL;
    size_t el = strlen(d->cfg->endpoint);
    hf_req req;
    hf_req_init(&req, "GET", url, what);
    req.auth = d->cfg->token != NULL && !strncmp(url, d->cfg->endpoint, el) && url[el] == '/';
    req.idempotent = 1;
    hf_resp resp = {0};
    int rc = hf_http(d->cfg, &req, &resp, d->err, d->errlen) != 0 ? 1 : 0;
    char subject[256];
    snprintf(subject, sizeof subject, "%s repository %s", d->what, d->repo);
    if (rc == 0 && resp.status != 200)
        rc = hf_http_fail(d->cfg, &req, &resp, subject,
                          resp.status == 403 || resp.status == 401
                              ? "private and gated repos need a token with read access (HF_TOKEN)"
                              : NULL,
                          d->err, d->errlen);
    if (rc == 0) {
        *j = cJSON_ParseWithLength(resp.body.p ? resp.body.p : "", resp.body.len);
        if (!*j) rc = saefw_errf(d->err, d->errlen, "%s: the server's answer is not JSON", what);
    }
    if (rc == 0 && next && resp.link) {
        *next = link_next(resp.link);
        /* A relative next page is on the same server. */
        if (*next && (*next)[0] == '/') {
            hf_buf abs = {0};
            hf_buf_printf(&abs, "%s%s", d->cfg->endpoint, *next);
            free(*next);
            *next = abs.oom ? (hf_buf_free(&abs), NULL) : abs.p;
            if (!*next) rc = saefw_errf(d->err, d->errlen, "out of memory");
        }
    }
    hf_resp_free(&resp);
    if (rc != 0) {
        cJSON_Delete(*j);
        *j = NULL;
    }
    return rc;
}

/* Commit hash of the repo at revision (/api/<kind>/{repo}/revision/{rev}), then every file of that
 * commit from the tree endpoint, recursively, following its pages, as snapshot_download does.
 * Returns 1 when the server could not be reached. */
static int list_files(dl *d, const char *revision, char commit[64], strlist *out) {
    char *rev = hf_escape(revision, 0);
    hf_buf url = {0};
    if (rev) hf_buf_printf(&url, "%s/api/%s/%s/revision/%s", d->cfg->endpoint, d->api_kind, d->repo, rev);
    free(rev);
    if (!url.p || url.oom) {
        hf_buf_free(&url);
        return saefw_errf(d->err, d->errlen, "out of memory");
    }
    cJSON *j = NULL;
    int rc = api_get(d, url.p, "repo info", &j, NULL);
    hf_buf_free(&url);
    if (rc != 0) return rc;
    const cJSON *sha = cJSON_GetObjectItemCaseSensitive(j, "sha");
    if (!cJSON_IsString(sha) || !hf_is_hex(sha->valuestring, 40)) {
        cJSON_Delete(j);
        return saefw_errf(d->err, d->errlen, "repo info: the server's answer has no commit hash");
    }
    snprintf(commit, 64, "%s", sha->valuestring);
    cJSON_Delete(j);

    hf_buf_printf(&url, "%s/api/%s/%s/tree/%s?recursive=true&expand=false", d->cfg->endpoint, d->api_kind, d->repo,
                  commit);
    if (url.oom) {
        hf_buf_free(&url);
        return saefw_errf(d->err, d->errlen, "out of memory");
    }
    char *page = url.p;
    url.p = NULL;
    /* Bounded, so a server that keeps sending the same next link cannot hold us forever. */
    for (int npage = 0; page && rc == 0; npage++) {
        if (npage == 100000) {
            rc = saefw_errf(d->err, d->errlen, "repo tree: more than 100000 pages; giving up");
            break;
        }
        char *next = NULL;
        rc = api_get(d, page, "repo tree", &j, &next);
        free(page);
        page = next;
        if (rc != 0) break;
        if (!cJSON_IsArray(j)) rc = saefw_errf(d->err, d->errlen, "repo tree: the server's answer is not a list");
        const cJSON *it;
        cJSON_ArrayForEach(it, j) {
            if (rc != 0) break;
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(it, "type");
            const cJSON *path = cJSON_GetObjectItemCaseSensitive(it, "path");
            const cJSON *size = cJSON_GetObjectItemCaseSensitive(it, "size");
            if (!cJSON_IsString(type) || strcmp(type->valuestring, "file") != 0) continue;
            if (!cJSON_IsString(path) || !hf_safe_relpath(path->valuestring))
                rc = saefw_errf(d->err, d->errlen, "repo tree: the server listed an unsafe file name");
            else if (strlist_add(out, path->valuestring,
                                 cJSON_IsNumber(size) && size->valuedouble > 0 ? (uint64_t)size->valuedouble : 0) != 0)
                rc = saefw_errf(d->err, d->errlen, "out of memory");
        }
        cJSON_Delete(j);
        j = NULL;
    }
    free(page);
    return rc;
}

/* huggingface_hub's allow_patterns: fnmatchcase on the whole path ('*' crosses '/'), backslashes
 * as '/', and a pattern ending in '/' means everything under that folder. */
static int pattern_match(const char *pattern, const char *path) {
    char pat[1024];
    size_t n = strlen(pattern);
    if (n + 2 > sizeof pat) return 0;
    memcpy(pat, pattern, n + 1);
    for (char *c = pat; *c; c++)
        if (*c == '\\') *c = '/';
    if (n && pat[n - 1] == '/') memcpy(pat + n, "*", 2);
    return fnmatch(pat, path, FNM_NOESCAPE) == 0;
}

static int matches_any(const hf_download_opts *o, const char *path) {
    for (size_t i = 0; i < o->ninclude; i++)
        if (pattern_match(o->include[i], path)) return 1;
    return 0;
}

/* The whole repo, or the files matching o->include, at revision. */
static int download_listed(dl *d, const hf_download_opts *o, const char *revision, char **path_out) {
    const hf_config *cfg = d->cfg;
    if (cfg->offline) {
        *path_out = cache_lookup(d, revision, NULL);
        if (*path_out) return 0;
        return saefw_errf(d->err, d->errlen,
                          "HF_HUB_OFFLINE is set and %s %s at revision %s is not in the cache (%s); "
                          "unset HF_HUB_OFFLINE to download it",
                          d->what, d->repo, revision, d->repo_dir);
    }
    char commit[64] = "";
    strlist all = {0};
    int lr = list_files(d, revision, commit, &all);
    if (lr == 1) {
        strlist_free(&all);
        *path_out = cache_lookup(d, revision, NULL);
        if (*path_out) {
            hf_note(cfg, "%s unreachable; using the cached snapshot", cfg->endpoint);
            return 0;
        }
        return -1;
    }
    if (lr != 0) {
        strlist_free(&all);
        return -1;
    }
    strlist names = {0};
    uint64_t total = 0;
    int rc = 0;
    for (size_t i = 0; i < all.n && rc == 0; i++) {
        if (o->ninclude && !matches_any(o, all.v[i])) continue;
        if (strlist_add(&names, all.v[i], all.size[i]) != 0) rc = saefw_errf(d->err, d->errlen, "out of memory");
        total += all.size[i];
    }
    strlist_free(&all);
    if (rc == 0 && o->ninclude && names.n == 0) {
        hf_buf pats = {0};
        for (size_t i = 0; i < o->ninclude; i++) hf_buf_printf(&pats, "%s'%s'", i ? ", " : "", o->include[i]);
        rc = saefw_errf(d->err, d->errlen, "no file of %s %s at revision %s matches --include %s", d->what, d->repo,
                        revision, pats.p ? pats.p : "");
        hf_buf_free(&pats);
    }
    if (rc == 0) {
        char tot[32];
        hf_human_size(total, tot, sizeof tot);
        hf_step(cfg, "download %zu file%s (%s) of %s %s@%s", names.n, names.n == 1 ? "" : "s", tot, d->what, d->repo,
                revision);
    }
    for (size_t i = 0; i < names.n && rc == 0; i++) {
        char *p = NULL, c2[64];
        if (names.n > 1) {
            char sz[32];
            hf_human_size(names.size[i], sz, sizeof sz);
            hf_step(cfg, "[%zu/%zu] %s (%s)", i + 1, names.n, names.v[i], sz);
        }
        rc = download_one(d, commit, names.v[i], &p, c2);
        free(p);
    }
    strlist_free(&names);
    if (rc != 0 || write_ref(d, revision, commit) != 0) return -1;
    if (!(*path_out = snapshot_path(d, commit, NULL))) return saefw_errf(d->err, d->errlen, "out of memory");
    /* An empty repo still gets its (empty) snapshot folder. */
    return saefw_mkdirs(*path_out, d->err, d->errlen);
}

static int run_download(dl *d, const hf_download_opts *o, const char *revision, char **path_out) {
    const hf_config *cfg = d->cfg;
    for (size_t i = 0; i < o->nfiles; i++)
        if (!hf_safe_relpath(o->files[i]))
            return saefw_errf(d->err, d->errlen, "bad file name '%.200s': use a path inside the repo such as %s",
                              o->files[i], strcmp(d->what, "dataset") ? "cfg.json" : "data/train-00000.parquet");
    for (size_t i = 0; i < o->ninclude; i++)
        if (!o->include[i] || !*o->include[i])
            return saefw_errf(d->err, d->errlen, "empty --include pattern: use a glob such as '*.parquet'");
    if (o->nfiles && o->ninclude)
        return saefw_errf(d->err, d->errlen, "pass file names or --include patterns, not both");
    if (o->nfiles == 0) return download_listed(d, o, revision, path_out);
    char commit[64] = "";
    hf_step(cfg, "download %zu file%s of %s %s@%s", o->nfiles, o->nfiles == 1 ? "" : "s", d->what, d->repo, revision);
    for (size_t i = 0; i < o->nfiles; i++) {
        char *p = NULL;
        if (download_one(d, revision, o->files[i], &p, commit) != 0) return -1;
        if (o->nfiles == 1) {
            *path_out = p;
            return 0;
        }
        free(p);
    }
    if (!(*path_out = snapshot_path(d, commit, NULL))) return saefw_errf(d->err, d->errlen, "out of memory");
    return 0;
}

int hf_download_repo(const hf_config *cfg, const hf_download_opts *o, char **path_out, char *err, size_t errlen) {
    *path_out = NULL;
    const char *type = o->repo_type ? o->repo_type : "model";
    dl d = {.cfg = cfg, .repo = o->repo, .err = err, .errlen = errlen};
    if (!strcmp(type, "model")) {
        d.url_prefix = "";
        d.api_kind = "models";
        d.what = "model";
    } else if (!strcmp(type, "dataset")) {
        d.url_prefix = "datasets/";
        d.api_kind = "datasets";
        d.what = "dataset";
    } else {
        return saefw_errf(err, errlen, "repo type '%.40s' is not supported: use \"model\" or \"dataset\"", type);
    }
    if (hf_validate_repo_id(o->repo, err, errlen) != 0) return -1;
    const char *revision = o->revision && *o->revision ? o->revision : "main";
    if (strlen(revision) > 200) return saefw_errf(err, errlen, "revision name too long");
    /* The folder name comes from the core, the same one saefw.model() and dataset resolution read. */
    char folder[PATH_MAX];
    if (saefw_hf_repo_folder(type, o->repo, folder, sizeof folder) != 0)
        return saefw_errf(err, errlen, "repo id too long for a cache folder name");
    int rc = -1;
    d.repo_dir = hf_join(cfg->cache_dir, folder);
    d.lock_dir = path3(cfg->cache_dir, ".locks", folder);
    if (!d.repo_dir || !d.lock_dir) saefw_errf(err, errlen, "out of memory");
    else rc = run_download(&d, o, revision, path_out);
    if (rc != 0) {
        free(*path_out);
        *path_out = NULL;
        hf_scrub(cfg, err);
    }
    free(d.repo_dir);
    free(d.lock_dir);
    return rc;
}

int hf_download(const hf_config *cfg, const char *repo, const char *revision, const char *const *files, size_t nfiles,
                char **path_out, char *err, size_t errlen) {
    hf_download_opts o = {.repo_type = "model", .repo = repo, .revision = revision, .files = files, .nfiles = nfiles};
    return hf_download_repo(cfg, &o, path_out, err, errlen);
}
