/* Upload a checkpoint folder to the Hub as one commit, speaking huggingface_hub's protocol:
 * create repo -> preupload -> LFS batch -> basic PUT or multipart parts + completion -> verify ->
 * NDJSON commit. The commit is the last request and is sent only once every object is stored. */
#include "hf_internal.h"

#include "../engine/util.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SAMPLE_BYTES 512
#define BATCH_FILES 256
/* A file the server wants inline (base64 in the commit) must be small; the Hub sends anything
 * sizable to LFS, so a larger "regular" answer means something is wrong. */
#define MAX_INLINE_BYTES (32u << 20)

typedef struct {
    char *rel; /* path in the repo */
    char *abs; /* path on disk, NULL for generated files */
    char *mem; /* content of a generated file (the model card) */
    uint64_t size;
    char sha[65];
    unsigned char sample[SAMPLE_BYTES];
    size_t sample_len;
    int lfs, ignore, answered;
} upfile;

typedef struct {
    upfile *v;
    size_t n, cap;
} filelist;

typedef struct {
    const hf_config *cfg;
    char repo[128];
    char *rev_esc;
    const char *revision;
    filelist files;
    const char *root_arg; /* the folder as the user named it */
    char *err;
    size_t errlen;
} upload;

static void files_free(filelist *fl) {
    for (size_t i = 0; i < fl->n; i++) {
        free(fl->v[i].rel);
        free(fl->v[i].abs);
        free(fl->v[i].mem);
    }
    free(fl->v);
    memset(fl, 0, sizeof *fl);
}

static upfile *files_add(filelist *fl) {
    if (fl->n == fl->cap) {
        size_t cap = fl->cap ? fl->cap * 2 : 16;
        upfile *v = realloc(fl->v, cap * sizeof *v);
        if (!v) return NULL;
        fl->v = v;
        fl->cap = cap;
    }
    upfile *f = &fl->v[fl->n++];
    memset(f, 0, sizeof *f);
    return f;
}

/* Files skipped on upload: hidden ones (.git, .cache, editor files) and the leftovers of atomic
 * writes in progress ("x.tmp.<pid>"). */
static int skip_name(const char *name) { return name[0] == '.' || strstr(name, ".tmp.") != NULL; }

/* A symlink is uploaded (as its target's content) only when its target lies inside the folder being
 * uploaded (root: that folder's real path); one that leads out would publish a file from elsewhere. */
static int link_inside(const char *abs, const char *root) {
    char real[PATH_MAX];
    if (!realpath(abs, real)) return 0;
    size_t n = strlen(root);
    return !strncmp(real, root, n) && (real[n] == '/' || (n == 1 && root[0] == '/'));
}

static int scan(upload *u, const char *root, const char *absdir, const char *reldir, int depth) {
    if (depth > 32) return saefw_errf(u->err, u->errlen, "%s: folders nested too deep", absdir);
    DIR *d = opendir(absdir);
    if (!d) return saefw_errf(u->err, u->errlen, "%s: cannot open folder: %s", absdir, strerror(errno));
    int rc = 0;
    struct dirent *e;
    errno = 0;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (skip_name(e->d_name)) continue;
        char *abs = hf_join(absdir, e->d_name);
        char *rel = reldir ? hf_join(reldir, e->d_name) : hf_strdup(e->d_name);
        struct stat st, lst;
        if (!abs || !rel) {
            rc = saefw_errf(u->err, u->errlen, "out of memory listing %s", absdir);
        } else if (lstat(abs, &lst) != 0) {
            rc = saefw_errf(u->err, u->errlen, "%s: cannot stat: %s", abs, strerror(errno));
        } else if (S_ISLNK(lst.st_mode) && !link_inside(abs, root)) {
            rc = saefw_errf(u->err, u->errlen,
                            "%s is a symlink that leads outside %s (or nowhere); refusing to upload "
                            "it: remove it, or replace it with a copy of the file",
                            abs, u->root_arg);
        } else if (stat(abs, &st) != 0) {
            rc = saefw_errf(u->err, u->errlen, "%s: cannot stat: %s", abs, strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            /* Symlinked folders are not followed: they could loop. */
            if (!S_ISLNK(lst.st_mode)) rc = scan(u, root, abs, rel, depth + 1);
        } else if (!S_ISREG(st.st_mode)) {
            rc = saefw_errf(u->err, u->errlen,
                            "%s is not a regular file (a pipe, socket or device); refusing to "
                            "upload it: remove it from the folder",
                            abs);
        } else {
            upfile *f = files_add(&u->files);
            if (!f) {
                rc = saefw_errf(u->err, u->errlen, "out of memory listing %s", absdir);
            } else {
                f->abs = abs;
                f->rel = rel;
                f->size = (uint64_t)st.st_size;
                abs = rel = NULL;
            }
        }
        free(abs);
        free(rel);
        errno = 0;
    }
    if (rc == 0 && errno != 0) rc = saefw_errf(u->err, u->errlen, "%s: cannot list: %s", absdir, strerror(errno));
    closedir(d);
    return rc;
}

static int cmp_rel(const void *a, const void *b) { return strcmp(((const upfile *)a)->rel, ((const upfile *)b)->rel); }

static upfile *find_rel(filelist *fl, const char *rel) {
    for (size_t i = 0; i < fl->n; i++)
        if (!strcmp(fl->v[i].rel, rel)) return &fl->v[i];
    return NULL;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* A checkpoint is what the engine writes: cfg.json + safetensors, or the seed's N.pt + N_cfg.json. */
static int has_checkpoint(const filelist *fl) {
    for (size_t i = 0; i < fl->n; i++) {
        const char *r = fl->v[i].rel;
        const char *base = strrchr(r, '/') ? strrchr(r, '/') + 1 : r;
        if (!strcmp(base, "cfg.json") || ends_with(base, "_cfg.json") || ends_with(base, ".safetensors") ||
            ends_with(base, ".pt") || ends_with(base, ".pth"))
            return 1;
    }
    return 0;
}

/* Hash every file (sha256, size, first bytes) and refuse any that holds the token. */
static int hash_files(upload *u) {
    for (size_t i = 0; i < u->files.n; i++) {
        upfile *f = &u->files.v[i];
        if (f->mem) {
            hf_sha256_hex(f->mem, f->size, f->sha);
            f->sample_len = f->size < SAMPLE_BYTES ? (size_t)f->size : SAMPLE_BYTES;
            memcpy(f->sample, f->mem, f->sample_len);
            if (u->cfg->token && strstr(f->mem, u->cfg->token))
                return saefw_errf(u->err, u->errlen, "%s would contain the Hugging Face token; refusing to upload it",
                                  f->rel);
            continue;
        }
        int found = 0;
        uint64_t size = 0;
        if (hf_sha256_file(f->abs, f->sha, &size, u->cfg->token, &found, u->err, u->errlen) != 0) return -1;
        if (found)
            return saefw_errf(u->err, u->errlen, "%s contains the Hugging Face token; remove it before uploading",
                              f->abs);
        f->size = size;
        int fd = open(f->abs, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return saefw_errf(u->err, u->errlen, "%s: cannot open: %s", f->abs, strerror(errno));
        ssize_t got = pread(fd, f->sample, SAMPLE_BYTES, 0);
        int e = errno;
        close(fd);
        if (got < 0) return saefw_errf(u->err, u->errlen, "%s: read failed: %s", f->abs, strerror(e));
        f->sample_len = (size_t)got;
    }
    return 0;
}

/* POST a JSON document to an endpoint URL with the token; the answer is left in resp. */
static int post_json(upload *u, const char *url, const char *what, cJSON *doc, const char *content_type,
                     const char *accept, int auth, int idempotent, hf_resp *resp) {
    char *text = cJSON_PrintUnformatted(doc);
    if (!text) return saefw_errf(u->err, u->errlen, "%s: out of memory", what);
    char ct[96], ac[96];
    snprintf(ct, sizeof ct, "Content-Type: %s", content_type);
    snprintf(ac, sizeof ac, "Accept: %s", accept);
    hf_req req;
    hf_req_init(&req, "POST", url, what);
    /* The token only ever goes to the endpoint itself, never to a storage URL. */
    req.auth =
        auth && !strncmp(url, u->cfg->endpoint, strlen(u->cfg->endpoint)) && url[strlen(u->cfg->endpoint)] == '/';
    req.idempotent = idempotent;
    req.headers[0] = ct;
    req.headers[1] = ac;
    req.body = text;
    req.body_len = strlen(text);
    int rc = hf_http(u->cfg, &req, resp, u->err, u->errlen);
    free(text);
    return rc;
}

static cJSON *parse_answer(upload *u, const hf_resp *resp, const char *what) {
    cJSON *j = resp->body.len ? cJSON_ParseWithLength(resp->body.p, resp->body.len) : NULL;
    if (!j) saefw_errf(u->err, u->errlen, "%s: the server's answer is not JSON", what);
    return j;
}

static int fail_resp(upload *u, const char *what, const char *url, const hf_resp *resp, const char *subject,
                     const char *hint) {
    hf_req req;
    hf_req_init(&req, "POST", url, what);
    return hf_http_fail(u->cfg, &req, resp, subject, hint, u->err, u->errlen);
}

/* "name" alone means the token owner's namespace: ask whoami-v2 who that is. */
static int resolve_namespace(upload *u, const char *repo) {
    if (strchr(repo, '/')) {
        snprintf(u->repo, sizeof u->repo, "%s", repo);
        return 0;
    }
    char url[1024];
    snprintf(url, sizeof url, "%s/api/whoami-v2", u->cfg->endpoint);
    hf_req req;
    hf_req_init(&req, "GET", url, "whoami");
    req.auth = 1;
    req.idempotent = 1;
    hf_resp resp = {0};
    if (hf_http(u->cfg, &req, &resp, u->err, u->errlen) != 0) {
        hf_resp_free(&resp);
        return -1;
    }
    if (resp.status != 200) {
        hf_http_fail(u->cfg, &req, &resp, "the token's account", NULL, u->err, u->errlen);
        hf_resp_free(&resp);
        return -1;
    }
    cJSON *j = parse_answer(u, &resp, "whoami");
    hf_resp_free(&resp);
    if (!j) return -1;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name");
    int rc = 0;
    if (!cJSON_IsString(name) ||
        snprintf(u->repo, sizeof u->repo, "%s/%s", name->valuestring, repo) >= (int)sizeof u->repo)
        rc = saefw_errf(u->err, u->errlen, "whoami: the server did not say which account the token belongs to");
    cJSON_Delete(j);
    if (rc == 0 && hf_validate_repo_id(u->repo, u->err, u->errlen) != 0) rc = -1;
    return rc;
}

static int create_repo(upload *u, int private_repo) {
    hf_step(u->cfg, "create repo %s", u->repo);
    char url[1024];
    snprintf(url, sizeof url, "%s/api/repos/create", u->cfg->endpoint);
    const char *slash = strchr(u->repo, '/');
    char org[128];
    snprintf(org, sizeof org, "%.*s", (int)(slash - u->repo), u->repo);
    cJSON *doc = cJSON_CreateObject();
    if (!doc || !cJSON_AddStringToObject(doc, "name", slash + 1) ||
        !cJSON_AddStringToObject(doc, "organization", org) || !cJSON_AddBoolToObject(doc, "private", private_repo)) {
        cJSON_Delete(doc);
        return saefw_errf(u->err, u->errlen, "create repo: out of memory");
    }
    hf_resp resp = {0};
    int rc = post_json(u, url, "create repo", doc, "application/json", "application/json", 1, 0, &resp);
    cJSON_Delete(doc);
    if (rc == 0) {
        if (resp.status == 409) hf_note(u->cfg, "repo %s already exists", u->repo);
        else if (resp.status < 200 || resp.status >= 300) rc = fail_resp(u, "create repo", url, &resp, u->repo, NULL);
    }
    hf_resp_free(&resp);
    return rc;
}

static int preupload(upload *u) {
    char url[1024];
    snprintf(url, sizeof url, "%s/api/models/%s/preupload/%s", u->cfg->endpoint, u->repo, u->rev_esc);
    char subject[256];
    snprintf(subject, sizeof subject, "repository %s", u->repo);
    for (size_t start = 0; start < u->files.n; start += BATCH_FILES) {
        size_t end = start + BATCH_FILES < u->files.n ? start + BATCH_FILES : u->files.n;
        hf_step(u->cfg, "preupload %zu file%s", end - start, end - start == 1 ? "" : "s");
        cJSON *doc = cJSON_CreateObject();
        cJSON *arr = doc ? cJSON_AddArrayToObject(doc, "files") : NULL;
        int bad = !arr;
        for (size_t i = start; i < end && !bad; i++) {
            upfile *f = &u->files.v[i];
            char *sample = hf_base64(f->sample, f->sample_len);
            cJSON *o = cJSON_CreateObject();
            bad = !sample || !o || !cJSON_AddStringToObject(o, "path", f->rel) ||
                  !cJSON_AddStringToObject(o, "sample", sample) ||
                  !cJSON_AddNumberToObject(o, "size", (double)f->size) || !cJSON_AddItemToArray(arr, o);
            if (bad && o) cJSON_Delete(o);
            free(sample);
        }
        if (bad) {
            cJSON_Delete(doc);
            return saefw_errf(u->err, u->errlen, "preupload: out of memory");
        }
        hf_resp resp = {0};
        int rc = post_json(u, url, "preupload", doc, "application/json", "application/json", 1, 1, &resp);
        cJSON_Delete(doc);
        if (rc == 0 && resp.status != 200)
            rc = fail_resp(u, "preupload", url, &resp, subject,
                           resp.status == 404 && resp.error_code && !strcmp(resp.error_code, "RevisionNotFound")
                               ? "--revision must name an existing branch"
                           : resp.status == 404 ? "check the repo id, or pass --create to create the repo"
                           : resp.status == 403 ? "uploading needs a token with write access"
                                                : NULL);
        cJSON *j = rc == 0 ? parse_answer(u, &resp, "preupload") : NULL;
        hf_resp_free(&resp);
        if (rc != 0 || !j) return -1;
        const cJSON *files = cJSON_GetObjectItemCaseSensitive(j, "files"), *it;
        cJSON_ArrayForEach(it, files) {
            const cJSON *p = cJSON_GetObjectItemCaseSensitive(it, "path");
            const cJSON *mode = cJSON_GetObjectItemCaseSensitive(it, "uploadMode");
            const cJSON *ign = cJSON_GetObjectItemCaseSensitive(it, "shouldIgnore");
            upfile *f = cJSON_IsString(p) ? find_rel(&u->files, p->valuestring) : NULL;
            if (!f || !cJSON_IsString(mode)) continue;
            f->answered = 1;
            f->lfs = !strcmp(mode->valuestring, "lfs");
            f->ignore = cJSON_IsTrue(ign);
        }
        cJSON_Delete(j);
        for (size_t i = start; i < end; i++)
            if (!u->files.v[i].answered)
                return saefw_errf(u->err, u->errlen, "preupload: the server gave no upload mode for %s",
                                  u->files.v[i].rel);
    }
    return 0;
}

/* Source of an LFS object's bytes: the file on disk or a generated file in memory. */
static int open_source(upload *u, const upfile *f, int *fd) {
    *fd = -1;
    if (f->mem) return 0;
    *fd = open(f->abs, O_RDONLY | O_CLOEXEC);
    if (*fd < 0) return saefw_errf(u->err, u->errlen, "%s: cannot open: %s", f->abs, strerror(errno));
    return 0;
}

static void set_body(hf_req *req, const upfile *f, int fd, uint64_t off, uint64_t len) {
    if (fd >= 0) {
        req->body_fd = fd;
        req->body_off = off;
        req->body_size = len;
    } else {
        req->body = f->mem + off;
        req->body_len = (size_t)len;
    }
}

/* Header lines from an LFS action's "header" object (git-lfs basic transfer asks clients to send
 * them); values with line breaks are dropped. Fills lines[] and returns how many. */
static int action_headers(const cJSON *header, char lines[][512], int max) {
    int n = 0;
    const cJSON *h;
    cJSON_ArrayForEach(h, header) {
        if (n >= max || !cJSON_IsString(h) || !h->string) continue;
        if (strpbrk(h->string, "\r\n:") || strpbrk(h->valuestring, "\r\n")) continue;
        snprintf(lines[n++], 512, "%s: %s", h->string, h->valuestring);
    }
    return n;
}

static int upload_basic(upload *u, const upfile *f, const cJSON *action, const char *label) {
    const cJSON *href = cJSON_GetObjectItemCaseSensitive(action, "href");
    char hl[HF_MAX_HEADERS - 1][512];
    int nh = action_headers(cJSON_GetObjectItemCaseSensitive(action, "header"), hl, HF_MAX_HEADERS - 1);
    int fd;
    if (open_source(u, f, &fd) != 0) return -1;
    hf_req req;
    hf_req_init(&req, "PUT", href->valuestring, "lfs upload");
    req.idempotent = 1;
    for (int i = 0; i < nh; i++) req.headers[i] = hl[i];
    set_body(&req, f, fd, 0, f->size);
    req.progress_name = label;
    req.progress_total = f->size;
    hf_resp resp = {0};
    int rc = hf_http(u->cfg, &req, &resp, u->err, u->errlen);
    if (rc == 0 && (resp.status < 200 || resp.status >= 300))
        rc = hf_http_fail(u->cfg, &req, &resp, f->rel, NULL, u->err, u->errlen);
    hf_resp_free(&resp);
    if (fd >= 0) close(fd);
    return rc;
}

static int upload_multipart(upload *u, const upfile *f, const cJSON *action, uint64_t chunk, const char *label) {
    const cJSON *href = cJSON_GetObjectItemCaseSensitive(action, "href");
    const cJSON *header = cJSON_GetObjectItemCaseSensitive(action, "header");
    uint64_t nparts = (f->size + chunk - 1) / chunk;
    /* Part URLs are the header's numeric keys ("00001", ...), in numeric order. */
    const char **urls = calloc(nparts ? nparts : 1, sizeof *urls);
    char **etags = calloc(nparts ? nparts : 1, sizeof *etags);
    int rc = 0, fd = -1;
    if (!urls || !etags) {
        rc = saefw_errf(u->err, u->errlen, "multipart: out of memory");
        goto out;
    }
    uint64_t seen = 0;
    const cJSON *h;
    cJSON_ArrayForEach(h, header) {
        if (!h->string || !*h->string || strspn(h->string, "0123456789") != strlen(h->string)) continue;
        unsigned long long k = strtoull(h->string, NULL, 10);
        if (!cJSON_IsString(h) || k < 1 || k > nparts || urls[k - 1]) {
            rc = saefw_errf(u->err, u->errlen, "multipart: bad part URL list from the server for %s", f->rel);
            goto out;
        }
        urls[k - 1] = h->valuestring;
        seen++;
    }
    if (seen != nparts) {
        rc = saefw_errf(u->err, u->errlen, "multipart: the server offered %llu part URLs for %s, expected %llu",
                        (unsigned long long)seen, f->rel, (unsigned long long)nparts);
        goto out;
    }
    if ((rc = open_source(u, f, &fd)) != 0) goto out;
    for (uint64_t i = 0; i < nparts && rc == 0; i++) {
        uint64_t off = i * chunk, len = f->size - off < chunk ? f->size - off : chunk;
        char what[64];
        snprintf(what, sizeof what, "multipart part %llu/%llu", (unsigned long long)i + 1, (unsigned long long)nparts);
        hf_req req;
        hf_req_init(&req, "PUT", urls[i], what);
        req.idempotent = 1;
        set_body(&req, f, fd, off, len);
        req.progress_name = label;
        req.progress_base = off;
        req.progress_total = f->size;
        hf_resp resp = {0};
        rc = hf_http(u->cfg, &req, &resp, u->err, u->errlen);
        if (rc == 0 && (resp.status < 200 || resp.status >= 300))
            rc = hf_http_fail(u->cfg, &req, &resp, f->rel, NULL, u->err, u->errlen);
        else if (rc == 0 && (!resp.etag || !*resp.etag))
            rc = saefw_errf(u->err, u->errlen, "%s of %s: the storage answered without an ETag", what, f->rel);
        else if (rc == 0 && !(etags[i] = hf_strdup(resp.etag)))
            rc = saefw_errf(u->err, u->errlen, "multipart: out of memory");
        hf_resp_free(&resp);
    }
    if (rc != 0) goto out;
    cJSON *doc = cJSON_CreateObject();
    cJSON *parts = doc ? cJSON_AddArrayToObject(doc, "parts") : NULL;
    int bad = !parts || !cJSON_AddStringToObject(doc, "oid", f->sha);
    for (uint64_t i = 0; i < nparts && !bad; i++) {
        cJSON *p = cJSON_CreateObject();
        bad = !p || !cJSON_AddNumberToObject(p, "partNumber", (double)(i + 1)) ||
              !cJSON_AddStringToObject(p, "etag", etags[i]) || !cJSON_AddItemToArray(parts, p);
        if (bad && p) cJSON_Delete(p);
    }
    if (bad) {
        cJSON_Delete(doc);
        rc = saefw_errf(u->err, u->errlen, "multipart: out of memory");
        goto out;
    }
    hf_resp resp = {0};
    /* Like huggingface_hub: the completion URL is signed, so it gets no token. */
    rc = post_json(u, href->valuestring, "multipart completion", doc, "application/vnd.git-lfs+json",
                   "application/vnd.git-lfs+json", 0, 1, &resp);
    cJSON_Delete(doc);
    if (rc == 0 && (resp.status < 200 || resp.status >= 300))
        rc = fail_resp(u, "multipart completion", href->valuestring, &resp, f->rel, NULL);
    hf_resp_free(&resp);
out:
    if (fd >= 0) close(fd);
    if (etags)
        for (uint64_t i = 0; i < nparts; i++) free(etags[i]);
    free(etags);
    free(urls);
    return rc;
}

static int verify_object(upload *u, const upfile *f, const cJSON *action) {
    const cJSON *href = cJSON_GetObjectItemCaseSensitive(action, "href");
    cJSON *doc = cJSON_CreateObject();
    if (!doc || !cJSON_AddStringToObject(doc, "oid", f->sha) ||
        !cJSON_AddNumberToObject(doc, "size", (double)f->size)) {
        cJSON_Delete(doc);
        return saefw_errf(u->err, u->errlen, "lfs verify: out of memory");
    }
    hf_resp resp = {0};
    int rc = post_json(u, href->valuestring, "lfs verify", doc, "application/vnd.git-lfs+json",
                       "application/vnd.git-lfs+json", 1, 1, &resp);
    cJSON_Delete(doc);
    if (rc == 0 && (resp.status < 200 || resp.status >= 300))
        rc = fail_resp(u, "lfs verify", href->valuestring, &resp, f->rel, NULL);
    hf_resp_free(&resp);
    return rc;
}

static int valid_action(const cJSON *a) {
    const cJSON *href = cJSON_GetObjectItemCaseSensitive(a, "href");
    const cJSON *header = cJSON_GetObjectItemCaseSensitive(a, "header");
    return cJSON_IsObject(a) && cJSON_IsString(href) &&
           (!strncmp(href->valuestring, "http://", 7) || !strncmp(href->valuestring, "https://", 8)) &&
           (!header || cJSON_IsObject(header));
}

static int lfs_object(upload *u, upfile *f, const cJSON *obj) {
    const cJSON *error = cJSON_GetObjectItemCaseSensitive(obj, "error");
    if (error) {
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(error, "message");
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(error, "code");
        saefw_errf(u->err, u->errlen, "lfs: the Hub refused %s (code %d): %.200s", f->rel,
                   cJSON_IsNumber(code) ? code->valueint : 0,
                   cJSON_IsString(msg) ? msg->valuestring : "no reason given");
        hf_scrub(u->cfg, u->err);
        return -1;
    }
    const cJSON *actions = cJSON_GetObjectItemCaseSensitive(obj, "actions");
    if (!actions) {
        hf_note(u->cfg, "%s is already stored on the Hub", f->rel);
        return 0;
    }
    const cJSON *up = cJSON_GetObjectItemCaseSensitive(actions, "upload");
    const cJSON *verify = cJSON_GetObjectItemCaseSensitive(actions, "verify");
    if (!valid_action(up) || (verify && !valid_action(verify)))
        return saefw_errf(u->err, u->errlen, "lfs: malformed upload action for %s", f->rel);
    char label[512];
    snprintf(label, sizeof label, "%s", f->rel);
    const cJSON *header = cJSON_GetObjectItemCaseSensitive(up, "header");
    const cJSON *chunk = cJSON_GetObjectItemCaseSensitive(header, "chunk_size");
    int rc;
    if (chunk) {
        /* The Hub signals multipart by a chunk_size (a string or a number) in the action header. */
        double cs = cJSON_IsString(chunk)   ? strtod(chunk->valuestring, NULL)
                    : cJSON_IsNumber(chunk) ? chunk->valuedouble
                                            : 0;
        if (!(cs >= 1 && cs <= 1e15))
            return saefw_errf(u->err, u->errlen, "lfs: bad multipart chunk_size for %s", f->rel);
        rc = upload_multipart(u, f, up, (uint64_t)cs, label);
    } else {
        rc = upload_basic(u, f, up, label);
    }
    if (rc != 0) return -1;
    hf_bytes(u->cfg, HF_EV_DONE, label, f->size, f->size);
    return verify ? verify_object(u, f, verify) : 0;
}

static int lfs_upload_all(upload *u) {
    char url[1024];
    snprintf(url, sizeof url, "%s/%s.git/info/lfs/objects/batch", u->cfg->endpoint, u->repo);
    size_t todo[BATCH_FILES];
    size_t i = 0;
    while (i < u->files.n) {
        size_t k = 0;
        for (; i < u->files.n && k < BATCH_FILES; i++)
            if (u->files.v[i].lfs && !u->files.v[i].ignore) todo[k++] = i;
        if (k == 0) break;
        hf_step(u->cfg, "lfs batch: %zu object%s", k, k == 1 ? "" : "s");
        cJSON *doc = cJSON_CreateObject();
        cJSON *transfers = doc ? cJSON_AddArrayToObject(doc, "transfers") : NULL;
        cJSON *objects = doc ? cJSON_AddArrayToObject(doc, "objects") : NULL;
        cJSON *ref = doc ? cJSON_AddObjectToObject(doc, "ref") : NULL;
        int bad = !transfers || !objects || !ref || !cJSON_AddStringToObject(doc, "operation", "upload") ||
                  !cJSON_AddStringToObject(doc, "hash_algo", "sha256") ||
                  !cJSON_AddStringToObject(ref, "name", u->revision) ||
                  !cJSON_AddItemToArray(transfers, cJSON_CreateString("basic")) ||
                  !cJSON_AddItemToArray(transfers, cJSON_CreateString("multipart"));
        for (size_t j = 0; j < k && !bad; j++) {
            cJSON *o = cJSON_CreateObject();
            bad = !o || !cJSON_AddStringToObject(o, "oid", u->files.v[todo[j]].sha) ||
                  !cJSON_AddNumberToObject(o, "size", (double)u->files.v[todo[j]].size) ||
                  !cJSON_AddItemToArray(objects, o);
            if (bad && o) cJSON_Delete(o);
        }
        if (bad) {
            cJSON_Delete(doc);
            return saefw_errf(u->err, u->errlen, "lfs batch: out of memory");
        }
        hf_resp resp = {0};
        int rc = post_json(u, url, "lfs batch", doc, "application/vnd.git-lfs+json", "application/vnd.git-lfs+json", 1,
                           1, &resp);
        cJSON_Delete(doc);
        char subject[256];
        snprintf(subject, sizeof subject, "repository %s", u->repo);
        if (rc == 0 && resp.status != 200)
            rc = fail_resp(u, "lfs batch", url, &resp, subject,
                           resp.status == 403 ? "uploading needs a token with write access" : NULL);
        cJSON *j = rc == 0 ? parse_answer(u, &resp, "lfs batch") : NULL;
        hf_resp_free(&resp);
        if (!j) return -1;
        const cJSON *objs = cJSON_GetObjectItemCaseSensitive(j, "objects");
        for (size_t t = 0; t < k && rc == 0; t++) {
            upfile *f = &u->files.v[todo[t]];
            const cJSON *obj = NULL, *it;
            cJSON_ArrayForEach(it, objs) {
                const cJSON *oid = cJSON_GetObjectItemCaseSensitive(it, "oid");
                if (cJSON_IsString(oid) && !strcmp(oid->valuestring, f->sha)) obj = it;
            }
            if (!obj) rc = saefw_errf(u->err, u->errlen, "lfs batch: the server did not answer for %s", f->rel);
            else rc = lfs_object(u, f, obj);
        }
        cJSON_Delete(j);
        if (rc != 0) return -1;
    }
    return 0;
}

/* One NDJSON line {"key": key, "value": value} appended to b; value is consumed. */
static int ndjson_line(hf_buf *b, const char *key, cJSON *value) {
    cJSON *line = cJSON_CreateObject();
    if (!line || !value) {
        cJSON_Delete(line);
        cJSON_Delete(value);
        return -1;
    }
    if (!cJSON_AddStringToObject(line, "key", key) || !cJSON_AddItemToObject(line, "value", value)) {
        cJSON_Delete(line);
        return -1;
    }
    char *text = cJSON_PrintUnformatted(line);
    cJSON_Delete(line);
    if (!text) return -1;
    int rc = hf_buf_puts(b, text) | hf_buf_puts(b, "\n");
    free(text);
    return rc;
}

/* The regular file's bytes as base64, checked against the hash taken before the transfer. */
static char *regular_content(upload *u, const upfile *f) {
    if (f->size > MAX_INLINE_BYTES) {
        saefw_errf(u->err, u->errlen, "commit: the server asked for %s (%llu bytes) inline; that is too large", f->rel,
                   (unsigned long long)f->size);
        return NULL;
    }
    char *data = f->mem;
    size_t len = (size_t)f->size;
    if (!f->mem && saefw_read_file(f->abs, &data, &len, u->err, u->errlen) != 0) return NULL;
    char sha[65];
    hf_sha256_hex(data, len, sha);
    char *b64 = NULL;
    if (strcmp(sha, f->sha) != 0)
        saefw_errf(u->err, u->errlen, "%s changed during the upload; upload again once it is complete", f->rel);
    else if (!(b64 = hf_base64(data, len))) saefw_errf(u->err, u->errlen, "commit: out of memory encoding %s", f->rel);
    if (data != f->mem) free(data);
    return b64;
}

static int commit(upload *u, const char *message, char **commit_url) {
    hf_buf b = {0};
    cJSON *hdr = cJSON_CreateObject();
    int bad =
        !hdr || !cJSON_AddStringToObject(hdr, "summary", message) || !cJSON_AddStringToObject(hdr, "description", "");
    if (bad) cJSON_Delete(hdr);
    else bad = ndjson_line(&b, "header", hdr) != 0;
    size_t nfiles = 0;
    for (size_t i = 0; i < u->files.n && !bad; i++) {
        upfile *f = &u->files.v[i];
        if (f->ignore) continue;
        nfiles++;
        cJSON *v = cJSON_CreateObject();
        if (!v || !cJSON_AddStringToObject(v, "path", f->rel)) {
            cJSON_Delete(v);
            bad = 1;
            break;
        }
        if (f->lfs) {
            bad = !cJSON_AddStringToObject(v, "algo", "sha256") || !cJSON_AddStringToObject(v, "oid", f->sha) ||
                  !cJSON_AddNumberToObject(v, "size", (double)f->size);
            bad = bad ? (cJSON_Delete(v), 1) : ndjson_line(&b, "lfsFile", v) != 0;
        } else {
            char *b64 = regular_content(u, f);
            if (!b64) {
                cJSON_Delete(v);
                hf_buf_free(&b);
                return -1;
            }
            bad = !cJSON_AddStringToObject(v, "content", b64) || !cJSON_AddStringToObject(v, "encoding", "base64");
            free(b64);
            bad = bad ? (cJSON_Delete(v), 1) : ndjson_line(&b, "file", v) != 0;
        }
    }
    if (bad || b.oom) {
        hf_buf_free(&b);
        return saefw_errf(u->err, u->errlen, "commit: out of memory");
    }
    hf_step(u->cfg, "commit %zu file%s to %s@%s", nfiles, nfiles == 1 ? "" : "s", u->repo, u->revision);
    char url[1024];
    snprintf(url, sizeof url, "%s/api/models/%s/commit/%s", u->cfg->endpoint, u->repo, u->rev_esc);
    hf_req req;
    hf_req_init(&req, "POST", url, "commit");
    req.auth = 1;
    req.headers[0] = "Content-Type: application/x-ndjson";
    req.headers[1] = "Accept: application/json";
    req.body = b.p;
    req.body_len = b.len;
    hf_resp resp = {0};
    int rc = hf_http(u->cfg, &req, &resp, u->err, u->errlen);
    hf_buf_free(&b);
    char subject[256];
    snprintf(subject, sizeof subject, "repository %s", u->repo);
    if (rc == 0 && (resp.status < 200 || resp.status >= 300))
        rc = hf_http_fail(u->cfg, &req, &resp, subject,
                          resp.status == 409 ? "the branch moved or the commit clashes; upload again" : NULL, u->err,
                          u->errlen);
    cJSON *j = rc == 0 ? parse_answer(u, &resp, "commit") : NULL;
    hf_resp_free(&resp);
    if (!j) return -1;
    const cJSON *cu = cJSON_GetObjectItemCaseSensitive(j, "commitUrl");
    const cJSON *oid = cJSON_GetObjectItemCaseSensitive(j, "commitOid");
    hf_buf out = {0};
    if (cJSON_IsString(cu)) hf_buf_puts(&out, cu->valuestring);
    else if (cJSON_IsString(oid)) hf_buf_printf(&out, "%s/%s/commit/%s", u->cfg->endpoint, u->repo, oid->valuestring);
    else hf_buf_printf(&out, "%s/%s/tree/%s", u->cfg->endpoint, u->repo, u->revision);
    cJSON_Delete(j);
    if (out.oom) {
        hf_buf_free(&out);
        return saefw_errf(u->err, u->errlen, "commit: out of memory");
    }
    *commit_url = out.p;
    return 0;
}

static int add_model_card(upload *u) {
    upfile *cfgf = find_rel(&u->files, "cfg.json");
    if (!cfgf || find_rel(&u->files, "README.md")) return 0;
    char *text = NULL;
    if (saefw_read_file(cfgf->abs, &text, NULL, u->err, u->errlen) != 0) return -1;
    char *card = NULL;
    int rc = hf_model_card(text, u->repo, &card, u->err, u->errlen);
    free(text);
    if (rc != 0) return saefw_err_prefix(u->err, u->errlen, "model card from %s", cfgf->abs);
    upfile *f = files_add(&u->files);
    if (!f || !(f->rel = hf_strdup("README.md"))) {
        free(card);
        return saefw_errf(u->err, u->errlen, "out of memory");
    }
    f->mem = card;
    f->size = strlen(card);
    hf_note(u->cfg, "generated README.md (model card) from cfg.json");
    return 0;
}

/* GET an endpoint URL with the token; *text gets the malloc'd body of a 200, NULL on a 404. */
static int get_optional(upload *u, const char *url, const char *what, const char *subject, char **text) {
    *text = NULL;
    hf_req req;
    hf_req_init(&req, "GET", url, what);
    req.auth = 1;
    req.follow = 1;
    req.idempotent = 1;
    hf_resp resp = {0};
    int rc = hf_http(u->cfg, &req, &resp, u->err, u->errlen);
    if (rc == 0 && resp.status == 200) {
        if (!(*text = malloc(resp.body.len + 1))) rc = saefw_errf(u->err, u->errlen, "%s: out of memory", what);
        else {
            if (resp.body.len) memcpy(*text, resp.body.p, resp.body.len);
            (*text)[resp.body.len] = 0;
        }
    } else if (rc == 0 && resp.status != 404) {
        rc = hf_http_fail(u->cfg, &req, &resp, subject, NULL, u->err, u->errlen);
    }
    hf_resp_free(&resp);
    return rc;
}

/* Put the folder's files under path_in_repo/ (before the root card is added). */
static int prefix_files(upload *u, const char *prefix) {
    for (size_t i = 0; i < u->files.n; i++) {
        char *rel = hf_join(prefix, u->files.v[i].rel);
        if (!rel) return saefw_errf(u->err, u->errlen, "out of memory");
        free(u->files.v[i].rel);
        u->files.v[i].rel = rel;
    }
    return 0;
}

/* The repo-root README listing the repo's SAEs: merged into the current card (fetched from the
 * Hub) and completed from the repo's file listing (every folder with a cfg.json is an SAE). */
static int add_repo_card(upload *u, const char *sae_id) {
    char url[1024], subject[256];
    snprintf(subject, sizeof subject, "repository %s", u->repo);
    snprintf(url, sizeof url, "%s/%s/resolve/%s/README.md", u->cfg->endpoint, u->repo, u->rev_esc);
    char *existing = NULL, *listing = NULL, *cfg_text = NULL, *card = NULL;
    const char **ids = NULL;
    size_t nids = 0;
    cJSON *j = NULL;
    int rc = -1;
    hf_step(u->cfg, "model card: reading the repo's README.md and file list");
    if (get_optional(u, url, "model card", subject, &existing) != 0) goto out;
    snprintf(url, sizeof url, "%s/api/models/%s/revision/%s", u->cfg->endpoint, u->repo, u->rev_esc);
    if (get_optional(u, url, "repo file list", subject, &listing) != 0) goto out;
    const cJSON *sib = NULL, *it;
    if (listing && (j = cJSON_Parse(listing))) sib = cJSON_GetObjectItemCaseSensitive(j, "siblings");
    ids = calloc((size_t)cJSON_GetArraySize(sib) + 1, sizeof *ids);
    if (!ids) {
        saefw_errf(u->err, u->errlen, "out of memory");
        goto out;
    }
    cJSON_ArrayForEach(it, sib) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(it, "rfilename");
        if (!cJSON_IsString(name) || !ends_with(name->valuestring, "/cfg.json")) continue;
        *strrchr(name->valuestring, '/') = 0; /* the SAE id is its folder */
        ids[nids++] = name->valuestring;
    }
    char cfg_rel[1100];
    snprintf(cfg_rel, sizeof cfg_rel, "%s/cfg.json", sae_id);
    upfile *cf = find_rel(&u->files, cfg_rel);
    if (cf && saefw_read_file(cf->abs, &cfg_text, NULL, u->err, u->errlen) != 0) goto out;
    if (hf_repo_card(existing, u->repo, ids, nids, sae_id, cfg_text, &card, u->err, u->errlen) != 0) goto out;
    rc = 0;
    if (!card) {
        hf_note(u->cfg, "README.md at the repo root is not saefw's card: left as it is");
        goto out;
    }
    upfile *f = files_add(&u->files);
    if (!f || !(f->rel = hf_strdup("README.md"))) {
        rc = saefw_errf(u->err, u->errlen, "out of memory");
        goto out;
    }
    f->mem = card;
    f->size = strlen(card);
    card = NULL;
    hf_note(u->cfg, "generated README.md at the repo root, listing the repo's SAEs");
out:
    free(existing);
    free(listing);
    free(cfg_text);
    free(card);
    free(ids);
    cJSON_Delete(j);
    return rc;
}

/* An SAE id as a repo sub-folder: relative, no empty, "." or ".." part, no ".git"; trailing
 * slashes dropped. */
static int path_in_repo(upload *u, const char *p, char *out, size_t n) {
    size_t len = strlen(p);
    while (len > 0 && p[len - 1] == '/') len--;
    if (len == 0 || len >= n)
        return saefw_errf(u->err, u->errlen,
                          "bad --path-in-repo '%.200s': give a sub-folder such as blocks.0.mlp.hook_post", p);
    snprintf(out, n, "%.*s", (int)len, p);
    if (!hf_safe_relpath(out) || !strncmp(out, ".git/", 5) || !strcmp(out, ".git") || strstr(out, "/.git/") ||
        strchr(out, '\\') || strpbrk(out, "\r\n"))
        return saefw_errf(u->err, u->errlen,
                          "bad --path-in-repo '%.200s': a relative sub-folder without '.', '..' or "
                          "empty parts",
                          p);
    return 0;
}

static int run_upload(upload *u, const hf_upload_opts *o, char **commit_url) {
    const hf_config *cfg = u->cfg;
    if (!o->dir || !o->repo) return saefw_errf(u->err, u->errlen, "upload needs a folder and a repo id");
    if (hf_validate_repo_id(o->repo, u->err, u->errlen) != 0) return -1;
    if (u->revision[0] == 0 || strlen(u->revision) > 200)
        return saefw_errf(u->err, u->errlen, "bad revision '%.200s'", u->revision);
    char sub[512] = "";
    if (o->path_in_repo && path_in_repo(u, o->path_in_repo, sub, sizeof sub) != 0) return -1;
    if (cfg->offline)
        return saefw_errf(u->err, u->errlen,
                          "HF_HUB_OFFLINE is set: uploading needs the network; unset HF_HUB_OFFLINE");
    if (!cfg->token)
        return saefw_errf(u->err, u->errlen,
                          "no Hugging Face token: set HF_TOKEN, or save one with `huggingface-cli "
                          "login` (a token with write access, from https://huggingface.co/settings/tokens)");
    struct stat st;
    if (stat(o->dir, &st) != 0) return saefw_errf(u->err, u->errlen, "%s: %s", o->dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return saefw_errf(u->err, u->errlen, "%s is not a folder: pass a checkpoint folder", o->dir);
    char root[PATH_MAX];
    if (!realpath(o->dir, root)) return saefw_errf(u->err, u->errlen, "%s: %s", o->dir, strerror(errno));
    u->root_arg = o->dir;
    if (scan(u, root, o->dir, NULL, 0) != 0) return -1;
    if (!has_checkpoint(&u->files))
        return saefw_errf(u->err, u->errlen,
                          "%s holds no checkpoint (no cfg.json, *.safetensors or *.pt); pass a "
                          "checkpoint folder such as checkpoints/RUN/final",
                          o->dir);
    qsort(u->files.v, u->files.n, sizeof *u->files.v, cmp_rel);
    if (!(u->rev_esc = hf_escape(u->revision, 0))) return saefw_errf(u->err, u->errlen, "out of memory");

    if (resolve_namespace(u, o->repo) != 0) return -1;
    if (sub[0]) {
        if (prefix_files(u, sub) != 0 || add_repo_card(u, sub) != 0) return -1;
    } else if (add_model_card(u) != 0) {
        return -1;
    }
    hf_step(cfg, "hashing %zu file%s", u->files.n, u->files.n == 1 ? "" : "s");
    if (hash_files(u) != 0) return -1;
    if (o->create && create_repo(u, o->private_repo) != 0) return -1;
    if (preupload(u) != 0) return -1;
    if (lfs_upload_all(u) != 0) return -1;

    char msg[512];
    if (o->message && *o->message) {
        snprintf(msg, sizeof msg, "%s", o->message);
    } else {
        /* The folder's last name, trailing slashes ignored: "checkpoints/run/final/" -> "final". */
        size_t end = strlen(o->dir);
        while (end > 1 && o->dir[end - 1] == '/') end--;
        size_t start = end;
        while (start > 0 && o->dir[start - 1] != '/') start--;
        if (sub[0]) snprintf(msg, sizeof msg, "Upload SAE %s with saefw", sub);
        else snprintf(msg, sizeof msg, "Upload %.*s with saefw", (int)(end - start), o->dir + start);
    }
    return commit(u, msg, commit_url);
}

int hf_upload_folder(const hf_config *cfg, const hf_upload_opts *opts, char **commit_url, char *err, size_t errlen) {
    upload u = {.cfg = cfg,
                .err = err,
                .errlen = errlen,
                .revision = opts->revision && *opts->revision ? opts->revision : "main"};
    *commit_url = NULL;
    int rc = run_upload(&u, opts, commit_url);
    files_free(&u.files);
    free(u.rev_esc);
    if (rc != 0) hf_scrub(cfg, err);
    return rc;
}
