/* The Hub client's HTTP layer over libcurl: one request with streamed bodies, bounded retries
 * with exponential backoff and Retry-After, and one-line messages for failed responses. */
#include "hf_internal.h"

#include "../engine/util.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* API answers larger than this are refused rather than buffered. */
#define HF_MAX_BODY (64u << 20)
/* A Retry-After longer than this is not waited for: the user is told to come back later. */
#define HF_MAX_RETRY_AFTER_S 300

typedef struct {
    const hf_config *cfg;
    hf_req *req;
    hf_resp *resp;
    long cur_status;    /* status of the response whose headers/body are arriving */
    int sink_started;   /* the first body byte of this attempt was seen */
    uint64_t pos;       /* request body position */
    uint64_t last_emit; /* progress bytes last reported */
} attempt;

void hf_req_init(hf_req *req, const char *method, const char *url, const char *what) {
    memset(req, 0, sizeof *req);
    req->method = method;
    req->url = url;
    req->what = what;
    req->body_fd = -1;
    req->sink_fd = -1;
}

static void clear_headers(hf_resp *r) {
    char **fields[] = {&r->etag,          &r->location,       &r->repo_commit, &r->linked_etag,
                       &r->linked_size,   &r->content_length, &r->retry_after, &r->error_code,
                       &r->error_message, &r->content_range,  &r->link};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        free(*fields[i]);
        *fields[i] = NULL;
    }
}

void hf_resp_free(hf_resp *resp) {
    clear_headers(resp);
    hf_buf_free(&resp->body);
}

static size_t on_header(char *line, size_t size, size_t nitems, void *ud) {
    attempt *a = ud;
    size_t n = size * nitems;
    if (n >= 5 && !strncmp(line, "HTTP/", 5)) {
        /* A new response starts (redirect hop, 100 Continue): forget the previous one's headers. */
        clear_headers(a->resp);
        const char *sp = memchr(line, ' ', n);
        a->cur_status = sp ? strtol(sp + 1, NULL, 10) : 0;
        return n;
    }
    const char *colon = memchr(line, ':', n);
    if (!colon) return n;
    size_t klen = (size_t)(colon - line);
    const char *v = colon + 1;
    const char *end = line + n;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ')) end--;
    static const struct {
        const char *name;
        size_t off;
    } known[] = {
        {"etag", offsetof(hf_resp, etag)},
        {"location", offsetof(hf_resp, location)},
        {"x-repo-commit", offsetof(hf_resp, repo_commit)},
        {"x-linked-etag", offsetof(hf_resp, linked_etag)},
        {"x-linked-size", offsetof(hf_resp, linked_size)},
        {"content-length", offsetof(hf_resp, content_length)},
        {"retry-after", offsetof(hf_resp, retry_after)},
        {"x-error-code", offsetof(hf_resp, error_code)},
        {"x-error-message", offsetof(hf_resp, error_message)},
        {"content-range", offsetof(hf_resp, content_range)},
        {"link", offsetof(hf_resp, link)},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (strlen(known[i].name) != klen || strncasecmp(line, known[i].name, klen) != 0) continue;
        char **slot = (char **)((char *)a->resp + known[i].off);
        free(*slot);
        *slot = malloc((size_t)(end - v) + 1);
        if (!*slot) return 0; /* aborts the transfer: out of memory */
        memcpy(*slot, v, (size_t)(end - v));
        (*slot)[end - v] = 0;
        break;
    }
    return n;
}

/* Start of a "bytes S-E/T" Content-Range, or -1. */
static long long range_start(const char *cr) {
    if (!cr) return -1;
    const char *p = cr;
    while (*p && !isdigit((unsigned char)*p)) p++;
    if (!*p) return -1;
    return strtoll(p, NULL, 10);
}

static size_t on_body(char *data, size_t size, size_t nitems, void *ud) {
    attempt *a = ud;
    hf_req *req = a->req;
    size_t n = size * nitems;
    if (req->sink_fd >= 0 && a->cur_status >= 200 && a->cur_status < 300) {
        if (!a->sink_started) {
            a->sink_started = 1;
            if (a->cur_status == 200 && req->sink_off > 0) {
                /* The server ignored our Range: start the file over. */
                if (ftruncate(req->sink_fd, 0) != 0) {
                    a->resp->sink_error = errno;
                    return 0;
                }
                req->sink_off = 0;
                req->progress_base = 0;
            } else if (a->cur_status == 206 && range_start(a->resp->content_range) != (long long)req->sink_off) {
                a->resp->sink_error = EPROTO;
                return 0;
            }
        }
        size_t done = 0;
        while (done < n) {
            ssize_t w = pwrite(req->sink_fd, data + done, n - done, (off_t)req->sink_off);
            if (w < 0) {
                if (errno == EINTR) continue;
                a->resp->sink_error = errno;
                return 0;
            }
            done += (size_t)w;
            req->sink_off += (uint64_t)w;
            a->resp->sink_written += (uint64_t)w;
        }
        return n;
    }
    if (a->resp->body.len + n > HF_MAX_BODY) {
        a->resp->body.oom = 1;
        return 0;
    }
    if (hf_buf_append(&a->resp->body, data, n) != 0) return 0;
    return n;
}

static size_t on_read(char *buf, size_t size, size_t nitems, void *ud) {
    attempt *a = ud;
    hf_req *req = a->req;
    size_t want = size * nitems;
    if (req->body_fd >= 0) {
        uint64_t left = req->body_size - a->pos;
        if (want > left) want = (size_t)left;
        if (want == 0) return 0;
        ssize_t got;
        do got = pread(req->body_fd, buf, want, (off_t)(req->body_off + a->pos));
        while (got < 0 && errno == EINTR);
        if (got <= 0) return CURL_READFUNC_ABORT; /* the file shrank or failed under us */
        a->pos += (uint64_t)got;
        return (size_t)got;
    }
    uint64_t left = req->body_len - a->pos;
    if (want > left) want = (size_t)left;
    if (want) memcpy(buf, (const char *)req->body + a->pos, want);
    a->pos += want;
    return want;
}

static int on_seek(void *ud, curl_off_t offset, int origin) {
    attempt *a = ud;
    uint64_t size = a->req->body_fd >= 0 ? a->req->body_size : a->req->body_len;
    if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > size) return CURL_SEEKFUNC_CANTSEEK;
    a->pos = (uint64_t)offset;
    return CURL_SEEKFUNC_OK;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
    (void)dltotal, (void)ultotal;
    attempt *a = ud;
    hf_req *req = a->req;
    if (!req->progress_name) return 0;
    uint64_t now = req->progress_base + (uint64_t)(strcmp(req->method, "PUT") == 0 ? ulnow : dlnow);
    /* Report every 256 KiB, not every callback: the renderer need not throttle hard. */
    if (now >= a->last_emit + (256u << 10) ||
        (req->progress_total && now == req->progress_total && now != a->last_emit)) {
        a->last_emit = now;
        hf_bytes(a->cfg, HF_EV_BYTES, req->progress_name, now, req->progress_total);
    }
    return 0;
}

static int retry_status(long s) { return s == 408 || s == 429 || s == 500 || s == 502 || s == 503 || s == 504; }

static int dropped(CURLcode rc) {
    return rc == CURLE_SEND_ERROR || rc == CURLE_RECV_ERROR || rc == CURLE_GOT_NOTHING || rc == CURLE_PARTIAL_FILE ||
           rc == CURLE_OPERATION_TIMEDOUT || rc == CURLE_HTTP2 || rc == CURLE_HTTP2_STREAM ||
           rc == CURLE_SSL_CONNECT_ERROR;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

static long backoff_ms(const hf_config *cfg, int attempt_no) {
    long w = cfg->retry_base_ms;
    for (int i = 0; i < attempt_no && w < 8 * cfg->retry_base_ms; i++) w *= 2;
    return w < 8 * cfg->retry_base_ms ? w : 8 * cfg->retry_base_ms;
}

/* Seconds from a Retry-After value (delta seconds or an HTTP date), or -1. */
static long retry_after_s(const char *v) {
    if (!v || !*v) return -1;
    char *end;
    long s = strtol(v, &end, 10);
    if (end != v && *end == 0) return s < 0 ? 0 : s;
    time_t t = curl_getdate(v, NULL);
    if (t < 0) return -1;
    long d = (long)(t - time(NULL));
    return d < 0 ? 0 : d;
}

/* Copy url without its query (signatures do not belong in messages). */
static void url_for_msg(const char *url, char *out, size_t n) {
    size_t q = strcspn(url, "?");
    snprintf(out, n, "%.*s", (int)(q < 200 ? q : 200), url);
}

static int perform(const hf_config *cfg, hf_req *req, attempt *a, char *curlerr, CURLcode *rc_out) {
    CURL *c = curl_easy_init();
    if (!c) return -1;
    struct curl_slist *hdrs = NULL, *t;
    int ok = 1;
#define ADD(line)                                                                                                      \
    do {                                                                                                               \
        if (!(t = curl_slist_append(hdrs, line))) ok = 0;                                                              \
        else hdrs = t;                                                                                                 \
    } while (0)
    ADD("Expect:"); /* no 100-continue round trip before bodies */
    for (int i = 0; i < HF_MAX_HEADERS && req->headers[i]; i++) ADD(req->headers[i]);
    if (req->range[0]) ADD(req->range);
    if (req->auth && cfg->token) {
        size_t n = strlen(cfg->token) + 32;
        char *line = malloc(n);
        if (!line) {
            ok = 0;
        } else {
            snprintf(line, n, "Authorization: Bearer %s", cfg->token);
            ADD(line);
            memset(line, 0, n);
            free(line);
        }
    }
#undef ADD
    if (!ok) {
        curl_slist_free_all(hdrs);
        curl_easy_cleanup(c);
        return -1;
    }
    curl_easy_setopt(c, CURLOPT_URL, req->url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_USERAGENT,
                     "saefw/"
                     "0.1 (hf_upload; libcurl)");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, cfg->connect_timeout_s);
    /* A stalled transfer counts as dropped: under 1 byte/s for 60 s. */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, curlerr);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, a);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, a);
    if (req->follow) {
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    }
    int has_body = req->body_fd >= 0 || req->body;
    curl_off_t body_size = (curl_off_t)(req->body_fd >= 0 ? req->body_size : req->body_len);
    if (!strcmp(req->method, "HEAD")) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (!strcmp(req->method, "PUT")) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, has_body ? body_size : (curl_off_t)0);
    } else if (!strcmp(req->method, "POST")) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, has_body ? body_size : (curl_off_t)0);
    }
    curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(c, CURLOPT_READDATA, a);
    curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, on_seek);
    curl_easy_setopt(c, CURLOPT_SEEKDATA, a);

    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    a->resp->status = status;
    *rc_out = rc;
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    return 0;
}

int hf_http(const hf_config *cfg, hf_req *req, hf_resp *resp, char *err, size_t errlen) {
    char where[256];
    url_for_msg(req->url, where, sizeof where);
    for (int attempt_no = 0;; attempt_no++) {
        hf_resp_free(resp);
        memset(resp, 0, sizeof *resp);
        resp->attempts = attempt_no + 1;
        if (req->prepare && req->prepare(req->ud, req, err, errlen) != 0) return -1;
        attempt a = {.cfg = cfg, .req = req, .resp = resp, .last_emit = req->progress_base};
        char curlerr[CURL_ERROR_SIZE] = "";
        CURLcode rc = CURLE_OK;
        if (perform(cfg, req, &a, curlerr, &rc) != 0)
            return saefw_errf(err, errlen, "%s: out of memory setting up the request", req->what);
        int can_retry = attempt_no < cfg->max_retries;
        if (rc != CURLE_OK) {
            if (resp->sink_error)
                return saefw_errf(err, errlen, "%s: writing the download failed: %s", req->what,
                                  resp->sink_error == EPROTO ? "server answered a different byte range"
                                                             : strerror(resp->sink_error));
            if (resp->body.oom)
                return saefw_errf(err, errlen, "%s: answer from %s too large or out of memory", req->what, where);
            if (rc == CURLE_ABORTED_BY_CALLBACK || rc == CURLE_READ_ERROR)
                return saefw_errf(err, errlen, "%s: reading the file to upload failed (did it change while uploading?)",
                                  req->what);
            /* A request that may have reached the server is resent only when that is harmless. */
            int retryable = rc == CURLE_COULDNT_CONNECT || (req->idempotent && dropped(rc));
            const char *msg = curlerr[0] ? curlerr : curl_easy_strerror(rc);
            if (retryable && can_retry) {
                long w = backoff_ms(cfg, attempt_no);
                hf_note(cfg, "%s: %s; retry %d/%d in %.1f s", req->what, msg, attempt_no + 1, cfg->max_retries,
                        (double)w / 1000.0);
                sleep_ms(w);
                continue;
            }
            char tail[64] = "";
            if (attempt_no > 0) snprintf(tail, sizeof tail, " (after %d attempts)", attempt_no + 1);
            if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST || rc == CURLE_COULDNT_RESOLVE_PROXY)
                saefw_errf(err, errlen,
                           "cannot reach %s: %s%s; check the network and HF_ENDPOINT (HF_HUB_OFFLINE=1 "
                           "uses only the local cache)",
                           cfg->endpoint, msg, tail);
            else saefw_errf(err, errlen, "%s: connection to %s failed: %s%s", req->what, where, msg, tail);
            hf_scrub(cfg, err);
            return -1;
        }
        if (retry_status(resp->status) && can_retry) {
            long ra = retry_after_s(resp->retry_after);
            if (ra > HF_MAX_RETRY_AFTER_S) return 0; /* hf_http_fail tells the user when to come back */
            long w = ra >= 0 ? ra * 1000 : backoff_ms(cfg, attempt_no);
            hf_note(cfg, "%s: HTTP %ld%s; retry %d/%d in %.1f s", req->what, resp->status,
                    ra >= 0 ? " with Retry-After" : "", attempt_no + 1, cfg->max_retries, (double)w / 1000.0);
            sleep_ms(w);
            continue;
        }
        return 0;
    }
}

/* The server's own explanation: X-Error-Message, else a JSON "error"/"message", else a short
 * plain-text body; flattened to one printable line. */
static void server_message(const hf_resp *resp, char *out, size_t n) {
    out[0] = 0;
    if (resp->error_message && *resp->error_message) {
        snprintf(out, n, "%s", resp->error_message);
    } else if (resp->body.len) {
        cJSON *j = cJSON_ParseWithLength(resp->body.p, resp->body.len);
        if (j) {
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
            if (!cJSON_IsString(e)) e = cJSON_GetObjectItemCaseSensitive(j, "message");
            if (cJSON_IsString(e)) snprintf(out, n, "%s", e->valuestring);
            cJSON_Delete(j);
        } else if (resp->body.p[0] != '<') {
            snprintf(out, n, "%.*s", (int)(resp->body.len < 200 ? resp->body.len : 200), resp->body.p);
        }
    }
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = ' ';
    size_t len = strlen(out);
    while (len && out[len - 1] == ' ') out[--len] = 0;
}

int hf_http_fail(const hf_config *cfg, const hf_req *req, const hf_resp *resp, const char *subject, const char *hint,
                 char *err, size_t errlen) {
    char server[320], meaning[384], advice[256] = "";
    server_message(resp, server, sizeof server);
    const char *code = resp->error_code ? resp->error_code : "";
    long s = resp->status;
    if (!strcmp(code, "GatedRepo")) {
        snprintf(meaning, sizeof meaning, "%s is gated (HTTP %ld)", subject, s);
        snprintf(advice, sizeof advice, "accept its conditions on the Hub, then use a token");
    } else if (s == 401 && !strcmp(code, "RepoNotFound")) {
        snprintf(meaning, sizeof meaning, "%s not found, or it is private and %s (HTTP 401)", subject,
                 cfg->token ? "the token cannot see it" : "no token is set");
        if (!cfg->token) snprintf(advice, sizeof advice, "set HF_TOKEN for private repos");
    } else if (s == 401 && !cfg->token) {
        snprintf(meaning, sizeof meaning, "authentication required (HTTP 401)");
        snprintf(advice, sizeof advice, "set HF_TOKEN or save a token with `huggingface-cli login`");
    } else if (s == 401) {
        snprintf(meaning, sizeof meaning, "the token was rejected (HTTP 401)");
        snprintf(advice, sizeof advice, "it is invalid or expired: set HF_TOKEN to a valid token");
    } else if (s == 403) {
        snprintf(meaning, sizeof meaning, "forbidden (HTTP 403): the token lacks the rights needed for %s", subject);
    } else if (s == 404 && !strcmp(code, "RevisionNotFound")) {
        snprintf(meaning, sizeof meaning, "revision not found in %s (HTTP 404)", subject);
    } else if (s == 404) {
        snprintf(meaning, sizeof meaning, "%s not found at %s (HTTP 404)", subject, cfg->endpoint);
    } else if (s == 409) {
        snprintf(meaning, sizeof meaning, "conflict on %s (HTTP 409)", subject);
    } else if (s == 413) {
        snprintf(meaning, sizeof meaning, "too large for the Hub (HTTP 413)");
    } else if (s == 429) {
        snprintf(meaning, sizeof meaning, "rate limited (HTTP 429) after %d attempts", resp->attempts);
        if (resp->retry_after)
            snprintf(advice, sizeof advice, "the Hub asks to retry after %.40s s", resp->retry_after);
    } else if (s >= 500) {
        snprintf(meaning, sizeof meaning, "server error (HTTP %ld) after %d attempts", s, resp->attempts);
        snprintf(advice, sizeof advice, "try again later");
    } else {
        snprintf(meaning, sizeof meaning, "unexpected answer (HTTP %ld)", s);
    }
    saefw_errf(err, errlen, "%s: %s%s%s%s%s%s%s", req->what, meaning, server[0] ? ": " : "", server,
               advice[0] ? "; " : "", advice, hint ? "; " : "", hint ? hint : "");
    hf_scrub(cfg, err);
    return -1;
}
