/* Declarations shared by the hf_upload sources only: growable buffers, events, the HTTP layer
 * with retries, hashing and path helpers. Not installed, not seen by the engine. */
#ifndef SAEFW_HF_INTERNAL_H
#define SAEFW_HF_INTERNAL_H

#include "hf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#if defined(__GNUC__)
#define HF_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define HF_PRINTF(a, b)
#endif

/* ---- growable byte buffer: NUL-terminated, `oom` sticks once an append failed ---- */
typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} hf_buf;

int hf_buf_append(hf_buf *b, const void *data, size_t n);
int hf_buf_puts(hf_buf *b, const char *s);
int hf_buf_printf(hf_buf *b, const char *fmt, ...) HF_PRINTF(2, 3);
void hf_buf_free(hf_buf *b);

/* ---- events: formatted, token scrubbed, sent to cfg->progress when set ---- */
void hf_step(const hf_config *cfg, const char *fmt, ...) HF_PRINTF(2, 3);
void hf_note(const hf_config *cfg, const char *fmt, ...) HF_PRINTF(2, 3);
void hf_bytes(const hf_config *cfg, hf_event_kind kind, const char *name, uint64_t done, uint64_t total);

/* Replace every occurrence of the token in s (in place) with "***". */
void hf_scrub(const hf_config *cfg, char *s);

/* ---- HTTP with bounded retries ---- */
#define HF_MAX_HEADERS 6

typedef struct hf_req hf_req;
struct hf_req {
    const char *method; /* "GET", "HEAD", "POST", "PUT" */
    const char *url;
    const char *what;                    /* short name of the step for messages: "preupload", "commit" */
    int auth;                            /* send the bearer token (only ever to the endpoint itself) */
    int follow;                          /* follow redirects */
    int idempotent;                      /* safe to resend after a dropped connection */
    const char *headers[HF_MAX_HEADERS]; /* extra header lines, NULL-terminated */
    /* request body: memory (body/body_len) or a file range (body_fd >= 0) */
    const void *body;
    size_t body_len;
    int body_fd;
    uint64_t body_off, body_size;
    /* response body of a 2xx goes to sink_fd at sink_off (downloads) when sink_fd >= 0 */
    int sink_fd;
    uint64_t sink_off;
    char range[64]; /* "Range: bytes=N-" line, or "" */
    /* progress of this transfer, reported as progress_base + bytes so far of progress_total */
    const char *progress_name;
    uint64_t progress_base, progress_total;
    /* called before every attempt (downloads set the Range from what is on disk) */
    int (*prepare)(void *ud, hf_req *req, char *err, size_t errlen);
    void *ud;
};

typedef struct {
    long status;
    hf_buf body; /* the body when not sunk to a file (API answers, error bodies), capped */
    char *etag, *location, *repo_commit, *linked_etag, *linked_size, *content_length, *retry_after, *error_code,
        *error_message, *content_range, *link;
    int attempts;          /* how many times the request was sent */
    int sink_error;        /* errno of a failed write to sink_fd */
    uint64_t sink_written; /* bytes written to sink_fd by the last attempt */
} hf_resp;

/* Initialise a request with no body, no sink, GET. */
void hf_req_init(hf_req *req, const char *method, const char *url, const char *what);
void hf_resp_free(hf_resp *resp);

/* Perform req, retrying with exponential backoff (honouring Retry-After) on 408/429/500/502/503/
 * 504 and on dropped connections (those only when req->idempotent, or when nothing was sent).
 * Returns 0 once a response arrived (resp->status holds it, whatever it is), -1 with a message
 * when the server could not be reached or the transfer kept failing. */
int hf_http(const hf_config *cfg, hf_req *req, hf_resp *resp, char *err, size_t errlen);

/* Turn a non-2xx response into a one-line message: "<what>: <meaning> (HTTP <code>): <server's
 * message>[; hint]". subject names the object (repository, file), hint may be NULL. Returns -1. */
int hf_http_fail(const hf_config *cfg, const hf_req *req, const hf_resp *resp, const char *subject, const char *hint,
                 char *err, size_t errlen);

/* URL-escape one path segment (all but unreserved characters) or a path (keeps '/'). malloc'd. */
char *hf_escape(const char *s, int keep_slash);

/* ---- hashing ---- */
/* sha256 of a file's bytes as 64 hex characters; also the size; also whether the bytes contain
 * `needle` (the token, so it is never uploaded; NULL to skip). */
int hf_sha256_file(const char *path, char hex[65], uint64_t *size, const char *needle, int *found, char *err,
                   size_t errlen);
void hf_sha256_hex(const void *data, size_t n, char hex[65]);
/* Standard base64 of data into a malloc'd NUL-terminated string (OpenSSL's encoder). */
char *hf_base64(const void *data, size_t n);

/* ---- paths and files ---- */
int hf_is_hex(const char *s, size_t n);
/* A repo-relative file path is safe when it is non-empty, relative, and has no empty, "." or ".."
 * component, so a server cannot make us write outside the cache. */
int hf_safe_relpath(const char *p);
/* mkdir -p of the folder part of path. */
int hf_mkdirs_for(const char *path, char *err, size_t errlen);
char *hf_strdup(const char *s);
char *hf_join(const char *a, const char *b); /* a "/" b, malloc'd */
/* A byte count for people: "812 B", "3.4 kB", "12.0 MB", "1.86 GB". */
void hf_human_size(uint64_t n, char *out, size_t len);

/* ---- progress on a terminal (stderr): a live line on a tty, plain lines otherwise ---- */
typedef struct {
    const char *prefix; /* "upload", "download" */
    int tty, live;      /* live: a \r line is showing and needs clearing */
    char name[256];     /* transfer being drawn */
    double t0, last;    /* its start, and the last redraw */
    double every;       /* seconds between plain progress lines when not a terminal */
    uint64_t base;      /* bytes already there when the transfer was first seen (resume) */
} hf_term;

void hf_term_init(hf_term *t, const char *prefix);
void hf_term_event(void *ud, const hf_event *ev); /* an hf_progress_fn; ud is the hf_term */
void hf_term_finish(hf_term *t);

#endif
