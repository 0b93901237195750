/* Fuzz target: the Hub client's handling of whatever a Hub answers. The JSON readers (whoami,
 * preupload, LFS batch, commit, repo info) are static in hf_upload/, so the target drives the
 * public entry points, hf_upload_folder and hf_download, against a loopback server in this process
 * that plays the fuzz input back as HTTP answers.
 *
 * Input: byte 0 picks the operation (see the MODE_ bits), the rest is a script of answers separated
 * by "\n===\n", one per request in order (a 404 once the script runs out). An answer that starts
 * with three digits and a newline is "STATUS\nHeader: value\n...\n\nbody"; any other is a 200 whose
 * body is the whole answer. The server is also set as the HTTP(S) proxy, so storage URLs on any
 * host reach it too, and nothing leaves the machine.
 *
 * Checked besides memory safety: the token is sent only to the endpoint and never appears in a
 * message, every file the client writes stays inside the cache, and results are well formed. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "hf.h"

#define SEP "\n===\n"
#define MAX_ANSWERS 64
#define MAX_REQUEST_HEAD 65536
#define TOKEN "hf_FuzzSecretToken0123456789abcdef"

enum {
    MODE_OP = 3,       /* 0: upload to org/repo, 1: upload to a bare name (whoami first),
                         * 2: download one file, 3: download the whole repo */
    MODE_CREATE = 4,   /* upload: create the repo first */
    MODE_REVISION = 8, /* a revision other than main, with characters that need escaping */
    MODE_PRIVATE = 16, /* upload: a private repo */
    MODE_NESTED = 32,  /* download one file: a path with folders */
};

typedef struct {
    int status;
    const uint8_t *head, *body; /* header lines ("Name: value\n"...) and body, into srv.script */
    size_t head_len, body_len;
} answer;

/* The server thread may still be answering a request the client already gave up on when the
 * input's run ends, so the answers live in a copy of the input that is replaced only under mu,
 * which the server holds while it answers. */
static struct {
    pthread_mutex_t mu;
    int listen_fd;
    char authority[64]; /* "127.0.0.1:PORT": the endpoint's host */
    uint8_t *script;
    size_t script_cap;
    answer answers[MAX_ANSWERS];
    int n_answers, next;
    char leak[256]; /* where the token went, when it went where it must not */
} srv = {.mu = PTHREAD_MUTEX_INITIALIZER, .listen_fd = -1};

static hf_config cfg;
static char home[1024], upload_dir[1024];

static void send_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return; /* the client gave up; nothing to do */
        c += w;
        n -= (size_t)w;
    }
}

static const char *find_header(const char *head, const char *name) {
    size_t n = strlen(name);
    for (const char *l = strstr(head, "\r\n"); l; l = strstr(l + 2, "\r\n"))
        if (!strncasecmp(l + 2, name, n) && l[2 + n] == ':') return l + 3 + n;
    return NULL;
}

/* Host[:port] of an absolute URL (proxy form) or a CONNECT target into out; "" for a path. */
static void target_authority(const char *method, const char *target, char *out, size_t n) {
    const char *a = target;
    if (!strncmp(target, "http://", 7)) a = target + 7;
    else if (!strncmp(target, "https://", 8)) a = target + 8;
    else if (strcmp(method, "CONNECT") != 0) a = NULL;
    out[0] = 0;
    if (a) snprintf(out, n, "%.*s", (int)strcspn(a, "/?# "), a);
}

/* Write answer a; called with srv.mu held, as a points into srv.script. */
static void send_answer(int fd, const char *method, const answer *a) {
    char line[128];
    int n = snprintf(line, sizeof line, "HTTP/1.1 %d Fuzz\r\n", a->status);
    send_all(fd, line, (size_t)n);
    int own_length = 0;
    for (size_t i = 0; i < a->head_len;) {
        const uint8_t *nl = memchr(a->head + i, '\n', a->head_len - i);
        size_t len = nl ? (size_t)(nl - a->head) - i : a->head_len - i;
        if (len > 0) {
            char h[4096];
            size_t k = len < sizeof h - 3 ? len : sizeof h - 3;
            memcpy(h, a->head + i, k);
            h[k] = 0;
            for (size_t j = 0; j < k; j++)
                if (h[j] == '\r') h[j] = ' ';
            if (!strncasecmp(h, "content-length:", 15) || !strncasecmp(h, "transfer-encoding:", 18)) own_length = 1;
            memcpy(h + k, "\r\n", 2);
            send_all(fd, h, k + 2);
        }
        i += len + 1;
    }
    if (!own_length) {
        n = snprintf(line, sizeof line, "Content-Length: %zu\r\n", a->body_len);
        send_all(fd, line, (size_t)n);
    }
    send_all(fd, "Connection: close\r\n\r\n", 21);
    if (strcmp(method, "HEAD") != 0) send_all(fd, a->body, a->body_len);
}

static void serve_one(int fd) {
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    static char req[MAX_REQUEST_HEAD + 1];
    size_t got = 0;
    char *end = NULL;
    while (!end && got < MAX_REQUEST_HEAD) {
        ssize_t r = recv(fd, req + got, MAX_REQUEST_HEAD - got, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return;
        got += (size_t)r;
        req[got] = 0;
        end = strstr(req, "\r\n\r\n");
    }
    if (!end) return;
    end[2] = 0; /* keep the last header's CRLF for find_header */
    char method[16] = "", target[2048] = "";
    if (sscanf(req, "%15s %2047s", method, target) != 2) return;

    /* The request body, if any, is read and dropped. */
    const char *cl = find_header(req, "Content-Length");
    long long left = cl ? strtoll(cl, NULL, 10) : 0;
    left -= (long long)(got - (size_t)(end + 4 - req));
    while (left > 0) {
        char sink[65536];
        ssize_t r = recv(fd, sink, sizeof sink, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        left -= r;
    }

    char where[256];
    target_authority(method, target, where, sizeof where);
    const char *auth = find_header(req, "Authorization");
    pthread_mutex_lock(&srv.mu);
    if (auth && strstr(auth, TOKEN) && where[0] && strcmp(where, srv.authority) != 0 && !srv.leak[0])
        snprintf(srv.leak, sizeof srv.leak, "%s %s", method, target);
    answer a = {404, NULL, NULL, 0, 0};
    int tunnel = !strcmp(method, "CONNECT");
    if (!tunnel && srv.next < srv.n_answers) a = srv.answers[srv.next++];
    if (tunnel) {
        /* No TLS here: an https URL fails the way an unreachable host does. */
        static const char no[] = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        send_all(fd, no, sizeof no - 1);
    } else {
        send_answer(fd, method, &a);
    }
    pthread_mutex_unlock(&srv.mu);
}

static void *server_main(void *arg) {
    (void)arg;
    for (;;) {
        int fd = accept(srv.listen_fd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            fuzz_fail("accept: %s", strerror(errno));
        }
        serve_one(fd);
        shutdown(fd, SHUT_WR);
        close(fd);
    }
    return NULL;
}

static void setup(void) {
    srv.listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    if (srv.listen_fd < 0 || bind(srv.listen_fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(srv.listen_fd, 64) != 0 || getsockname(srv.listen_fd, (struct sockaddr *)&sa, &sl) != 0)
        fuzz_fail("loopback server: %s", strerror(errno));
    snprintf(srv.authority, sizeof srv.authority, "127.0.0.1:%d", ntohs(sa.sin_port));
    pthread_t th;
    if (pthread_create(&th, NULL, server_main, NULL) != 0) fuzz_fail("cannot start the server thread");
    pthread_detach(th);

    char url[128];
    snprintf(url, sizeof url, "http://%s", srv.authority);
    fuzz_path(home, sizeof home, "home");
    fuzz_path(upload_dir, sizeof upload_dir, "up");
    if (mkdir(home, 0755) != 0 || mkdir(upload_dir, 0755) != 0) fuzz_fail("cannot create folders: %s", strerror(errno));
    static const char *const unset[] = {"HF_HUB_OFFLINE", "HF_HUB_CACHE",           "HUGGINGFACE_HUB_CACHE",
                                        "HF_TOKEN_PATH",  "HUGGING_FACE_HUB_TOKEN", "no_proxy",
                                        "NO_PROXY",       "XDG_CACHE_HOME"};
    for (size_t i = 0; i < sizeof unset / sizeof unset[0]; i++) unsetenv(unset[i]);
    static const char *const proxies[] = {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"};
    for (size_t i = 0; i < sizeof proxies / sizeof proxies[0]; i++) setenv(proxies[i], url, 1);
    setenv("HF_ENDPOINT", url, 1);
    setenv("HF_HOME", home, 1);
    setenv("HF_TOKEN", TOKEN, 1);
    setenv("SAEFW_HF_MAX_RETRIES", "0", 1); /* a retry would wait; the answers decide everything */
    setenv("SAEFW_HF_RETRY_BASE_MS", "0", 1);
    setenv("HF_HUB_ETAG_TIMEOUT", "2", 1);
    char err[1024];
    if (hf_config_from_env(&cfg, err, sizeof err) != 0) fuzz_fail("hf config: %s", err);

    /* A small checkpoint folder to upload; the corpus's LFS answers name these files' sha256. */
    static const char cfg_json[] = "{\"d_in\": 4, \"d_sae\": 8, \"model_name\": \"gelu-1l\", "
                                   "\"hook_name\": \"blocks.0.mlp.hook_post\"}\n";
    static const char weights[] =
        "\x3a\0\0\0\0\0\0\0{\"b_dec\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}"
        "\0\0\x80\x3f";
    char p[1200];
    snprintf(p, sizeof p, "%s/cfg.json", upload_dir);
    fuzz_write(p, cfg_json, sizeof cfg_json - 1);
    snprintf(p, sizeof p, "%s/sae_weights.safetensors", upload_dir);
    fuzz_write(p, weights, sizeof weights - 1);
}

/* path with "." and ".." resolved lexically and slashes collapsed, into out. */
static void normalize(const char *path, char *out, size_t n) {
    char buf[PATH_MAX * 2], *save = NULL;
    snprintf(buf, sizeof buf, "%s", path);
    char *parts[512];
    int k = 0;
    for (char *s = strtok_r(buf, "/", &save); s; s = strtok_r(NULL, "/", &save)) {
        if (!strcmp(s, ".")) continue;
        if (!strcmp(s, "..")) {
            if (k > 0) k--;
        } else if (k < 512) {
            parts[k++] = s;
        }
    }
    size_t o = 0;
    out[0] = 0;
    for (int i = 0; i < k && o < n; i++) o += (size_t)snprintf(out + o, n - o, "/%s", parts[i]);
}

/* Whether path is root or lies under it. */
static int under(const char *root, const char *path) {
    char r[PATH_MAX * 2], p[PATH_MAX * 2];
    normalize(root, r, sizeof r);
    normalize(path, p, sizeof p);
    size_t rl = strlen(r);
    return !strncmp(p, r, rl) && (p[rl] == 0 || p[rl] == '/');
}

static int check_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    if (ftw->level == 0) return 0;
    FUZZ_CHECK(under(cfg.cache_dir, path), "%s written outside the cache %s", path, cfg.cache_dir);
    if (flag == FTW_SL) {
        char target[PATH_MAX], joined[PATH_MAX * 2];
        ssize_t n = readlink(path, target, sizeof target - 1);
        FUZZ_CHECK(n > 0, "unreadable link %s", path);
        target[n] = 0;
        if (target[0] == '/') snprintf(joined, sizeof joined, "%s", target);
        else snprintf(joined, sizeof joined, "%.*s/%s", (int)(strrchr(path, '/') - path), path, target);
        FUZZ_CHECK(under(cfg.cache_dir, joined), "link %s -> %s leaves the cache", path, target);
    } else {
        FUZZ_CHECK(S_ISREG(st->st_mode) || S_ISDIR(st->st_mode), "odd file %s", path);
    }
    return 0;
}

static void check_files(void) {
    nftw(home, check_entry, 16, FTW_PHYS);
    /* The upload folder keeps exactly its two files: nothing is written beside them. */
    char p[1200];
    int n = 0;
    snprintf(p, sizeof p, "%s/cfg.json", upload_dir);
    n += access(p, F_OK) == 0;
    snprintf(p, sizeof p, "%s/sae_weights.safetensors", upload_dir);
    n += access(p, F_OK) == 0;
    FUZZ_CHECK(n == 2, "upload folder lost a file");
}

static void load_script(const uint8_t *data, size_t size) {
    pthread_mutex_lock(&srv.mu);
    if (size > srv.script_cap || !srv.script) {
        free(srv.script);
        srv.script_cap = size ? size : 1;
        if (!(srv.script = malloc(srv.script_cap))) fuzz_fail("out of memory");
    }
    if (size) memcpy(srv.script, data, size);
    const uint8_t *p = srv.script;
    srv.n_answers = 0;
    srv.next = 0;
    srv.leak[0] = 0;
    const uint8_t *end = p + size;
    while (srv.n_answers < MAX_ANSWERS) {
        const uint8_t *cut = memmem(p, (size_t)(end - p), SEP, sizeof SEP - 1);
        const uint8_t *stop = cut ? cut : end;
        answer *a = &srv.answers[srv.n_answers++];
        *a = (answer){200, NULL, p, 0, (size_t)(stop - p)};
        size_t n = (size_t)(stop - p);
        if (n >= 4 && isdigit(p[0]) && isdigit(p[1]) && isdigit(p[2]) && p[3] == '\n') {
            int s = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
            /* 1xx answers would make the client wait for a final one. */
            a->status = s >= 200 && s <= 599 ? s : 200;
            const uint8_t *h = p + 4;
            const uint8_t *blank = h < stop && *h == '\n' ? h : memmem(h, (size_t)(stop - h), "\n\n", 2);
            a->head = h;
            if (!blank) {
                a->head_len = (size_t)(stop - h);
                a->body = stop;
                a->body_len = 0;
            } else if (blank == h) {
                a->body = h + 1;
                a->body_len = (size_t)(stop - h - 1);
            } else {
                a->head_len = (size_t)(blank - h) + 1;
                a->body = blank + 2;
                a->body_len = (size_t)(stop - blank - 2);
            }
        }
        if (!cut) break;
        p = cut + sizeof SEP - 1;
    }
    pthread_mutex_unlock(&srv.mu);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int ready;
    if (!ready) {
        setup();
        ready = 1;
    }
    if (size < 1 || size > (1u << 16)) return 0;
    unsigned mode = data[0];
    load_script(data + 1, size - 1);
    fuzz_clear_dir(home);

    char err[1024] = "", *out = NULL;
    const char *revision = mode & MODE_REVISION ? "refs/pr/1" : NULL;
    int rc;
    if ((mode & MODE_OP) < 2) {
        hf_upload_opts o = {upload_dir,
                            (mode & MODE_OP) ? "fuzzrepo" : "org/fuzzrepo",
                            revision,
                            NULL,
                            (mode & MODE_CREATE) != 0,
                            (mode & MODE_PRIVATE) != 0,
                            NULL};
        rc = hf_upload_folder(&cfg, &o, &out, err, sizeof err);
        if (rc == 0) FUZZ_CHECK(out && out[0], "upload succeeded without a commit URL");
    } else {
        const char *one[] = {mode & MODE_NESTED ? "sub/dir/w.safetensors" : "cfg.json"};
        size_t nfiles = (mode & MODE_OP) == 2 ? 1 : 0;
        rc = hf_download(&cfg, "org/fuzzrepo", revision, one, nfiles, &out, err, sizeof err);
        if (rc == 0) {
            FUZZ_CHECK(out && under(cfg.cache_dir, out), "download path %s outside the cache", out ? out : "(null)");
        }
    }
    pthread_mutex_lock(&srv.mu);
    char leak[256];
    snprintf(leak, sizeof leak, "%s", srv.leak);
    int requests = srv.next;
    pthread_mutex_unlock(&srv.mu);
    fuzz_note("%s (%d answers used)", rc == 0 ? out : err, requests);
    if (rc != 0) FUZZ_CHECK(out == NULL && err[0], "failure without a message, or with a result");
    FUZZ_CHECK(!strstr(err, TOKEN), "the token appears in a message: %s", err);
    free(out);
    FUZZ_CHECK(!leak[0], "the token was sent off the endpoint: %s", leak);
    check_files();
    return 0;
}
