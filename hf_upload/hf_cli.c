/* `saefw upload` and `saefw download`: argument parsing, progress on stderr, the result on
 * stdout, and the process exit code. */
#include "hf_internal.h"

#include "../engine/util.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void hf_term_init(hf_term *t, const char *prefix) {
    memset(t, 0, sizeof *t);
    t->prefix = prefix;
    t->tty = isatty(STDERR_FILENO);
    /* SAEFW_HF_PROGRESS_EVERY_S: seconds between plain progress lines when stderr is no terminal. */
    const char *v = getenv("SAEFW_HF_PROGRESS_EVERY_S");
    char *end = NULL;
    double every = v && *v ? strtod(v, &end) : 10.0;
    t->every = end && *end == 0 && every >= 0 ? every : 10.0;
}

static void clear_live(hf_term *t) {
    if (t->live) fputs("\r\033[K", stderr);
    t->live = 0;
}

void hf_term_event(void *ud, const hf_event *ev) {
    hf_term *t = ud;
    double now = saefw_now();
    if (ev->kind == HF_EV_STEP || ev->kind == HF_EV_NOTE) {
        clear_live(t);
        fprintf(stderr, "%s: %s\n", t->prefix, ev->msg);
        return;
    }
    if (strcmp(t->name, ev->name) != 0) {
        snprintf(t->name, sizeof t->name, "%s", ev->name);
        t->t0 = now;
        t->last = 0;
        t->base = ev->done; /* a resumed transfer starts past 0: the rate counts this run's bytes */
    }
    char done[32], total[32];
    hf_human_size(ev->done, done, sizeof done);
    hf_human_size(ev->total, total, sizeof total);
    double secs = now - t->t0;
    if (ev->kind == HF_EV_DONE) {
        clear_live(t);
        fprintf(stderr, "%s: %s: %s in %.1f s\n", t->prefix, ev->name, done, secs);
        t->name[0] = 0;
        return;
    }
    /* A live line on a terminal, redrawn at most ten times a second; elsewhere (logs) a plain line
     * every t->every seconds, so a multi-GB shard shows it is moving. */
    if (t->tty ? now - t->last < 0.1 : now - t->last < t->every) return;
    if (!t->tty && t->last == 0 && now - t->t0 < t->every) return;
    t->last = now;
    char speed[48] = "", eta[48] = "";
    if (secs >= 0.5 && ev->done > t->base) {
        double rate = (double)(ev->done - t->base) / secs;
        hf_human_size((uint64_t)rate, speed + 2, sizeof speed - 4);
        speed[0] = ',';
        speed[1] = ' ';
        strcat(speed, "/s");
        if (ev->total > ev->done) {
            double left = (double)(ev->total - ev->done) / rate;
            long s = (long)(left + 0.5);
            if (s >= 3600) snprintf(eta, sizeof eta, ", ETA %ldh%02ldm", s / 3600, s / 60 % 60);
            else if (s >= 60) snprintf(eta, sizeof eta, ", ETA %ldm%02lds", s / 60, s % 60);
            else snprintf(eta, sizeof eta, ", ETA %lds", s);
        }
    }
    char pct[16] = "";
    if (ev->total) snprintf(pct, sizeof pct, " %3.0f%%", 100.0 * (double)ev->done / (double)ev->total);
    if (ev->total)
        fprintf(stderr, "%s%s: %s%s %s / %s%s%s%s", t->tty ? "\r\033[K" : "", t->prefix, ev->name, pct, done, total,
                speed, eta, t->tty ? "" : "\n");
    else
        fprintf(stderr, "%s%s: %s %s%s%s", t->tty ? "\r\033[K" : "", t->prefix, ev->name, done, speed,
                t->tty ? "" : "\n");
    fflush(stderr);
    t->live = t->tty;
}

void hf_term_finish(hf_term *t) { clear_live(t); }

static const char *USAGE_UPLOAD =
    "usage: saefw upload DIR --repo ORG/NAME [--path-in-repo SAE_ID] [--create] [--private] [--message MSG]\n"
    "                         [--revision BRANCH]\n";
static const char *USAGE_DOWNLOAD =
    "usage: saefw download REPO [FILE...] [--revision REV]\n"
    "       saefw download --dataset ORG/NAME [FILE... | --include GLOB ...] [--revision REV]\n"
    "  no FILE and no --include: the whole repo; --include (repeatable) takes huggingface_hub's\n"
    "  allow_patterns, e.g. --include 'data/*.parquet'\n";

static int usage(const char *cmd, const char *usage_text, const char *fmt, ...) HF_PRINTF(3, 4);

static int usage(const char *cmd, const char *usage_text, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "saefw %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n%s", usage_text);
    va_end(ap);
    return 2;
}

/* "--name value" or "--name=value": the value, advancing *i; NULL when the option is not `name`. */
static const char *opt_value(int argc, char **argv, int *i, const char *name, int *missing) {
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0) return NULL;
    if (argv[*i][n] == '=') return argv[*i] + n + 1;
    if (argv[*i][n] != 0) return NULL;
    if (*i + 1 >= argc) {
        *missing = 1;
        return NULL;
    }
    return argv[++*i];
}

static int finish(const char *cmd, hf_config *cfg, hf_term *term, int rc, char *result, const char *err) {
    hf_term_finish(term);
    if (rc == 0) {
        printf("%s\n", result);
        fflush(stdout);
    } else {
        fprintf(stderr, "saefw %s: %s\n", cmd, err);
    }
    free(result);
    hf_config_free(cfg);
    return rc == 0 ? 0 : 1;
}

static int cli_upload(int argc, char **argv) {
    hf_upload_opts o = {0};
    for (int i = 1; i < argc; i++) {
        int missing = 0;
        const char *v;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(USAGE_UPLOAD, stdout);
            return 0;
        } else if ((v = opt_value(argc, argv, &i, "--repo", &missing))) {
            o.repo = v;
        } else if ((v = opt_value(argc, argv, &i, "--message", &missing)) ||
                   (!missing && (v = opt_value(argc, argv, &i, "-m", &missing)))) {
            o.message = v;
        } else if ((v = opt_value(argc, argv, &i, "--revision", &missing))) {
            o.revision = v;
        } else if ((v = opt_value(argc, argv, &i, "--path-in-repo", &missing))) {
            o.path_in_repo = v; /* the SAE id: a sub-folder, as SAELens releases are laid out */
        } else if (missing) {
            return usage("upload", USAGE_UPLOAD, "%s needs a value", argv[i]);
        } else if (!strcmp(argv[i], "--create")) {
            o.create = 1;
        } else if (!strcmp(argv[i], "--private")) {
            o.private_repo = 1;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return usage("upload", USAGE_UPLOAD, "unknown option %s", argv[i]);
        } else if (!o.dir) {
            o.dir = argv[i];
        } else {
            return usage("upload", USAGE_UPLOAD, "unexpected argument %s (one folder per upload)", argv[i]);
        }
    }
    if (!o.dir) return usage("upload", USAGE_UPLOAD, "which folder? pass a checkpoint folder");
    if (!o.repo) return usage("upload", USAGE_UPLOAD, "--repo ORG/NAME is required");
    if (o.private_repo && !o.create)
        return usage("upload", USAGE_UPLOAD, "--private only applies with --create (a new repo)");
    char err[1024] = "";
    hf_config cfg;
    if (hf_config_from_env(&cfg, err, sizeof err) != 0) {
        fprintf(stderr, "saefw upload: %s\n", err);
        return 1;
    }
    hf_term term;
    hf_term_init(&term, "upload");
    cfg.progress = hf_term_event;
    cfg.progress_ud = &term;
    char *url = NULL;
    int rc = hf_upload_folder(&cfg, &o, &url, err, sizeof err);
    return finish("upload", &cfg, &term, rc, url, err);
}

static int cli_download(int argc, char **argv) {
    const char *repo = NULL, *revision = NULL, *repo_type = NULL;
    const char **files = calloc((size_t)argc, sizeof *files);
    const char **include = calloc((size_t)argc, sizeof *include);
    if (!files || !include) {
        fprintf(stderr, "saefw download: out of memory\n");
        free(files);
        free(include);
        return 1;
    }
    size_t nfiles = 0, ninclude = 0;
    int rc = -1;
    for (int i = 1; i < argc && rc == -1; i++) {
        int missing = 0;
        const char *v;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(USAGE_DOWNLOAD, stdout);
            rc = 0;
        } else if ((v = opt_value(argc, argv, &i, "--revision", &missing))) {
            revision = v;
        } else if (!missing && (v = opt_value(argc, argv, &i, "--include", &missing))) {
            include[ninclude++] = v;
        } else if (!missing && (v = opt_value(argc, argv, &i, "--repo-type", &missing))) {
            if (strcmp(v, "model") != 0 && strcmp(v, "dataset") != 0)
                rc = usage("download", USAGE_DOWNLOAD, "--repo-type is model or dataset, not '%s'", v);
            repo_type = v;
        } else if (!missing && (v = opt_value(argc, argv, &i, "--dataset", &missing))) {
            if (repo) rc = usage("download", USAGE_DOWNLOAD, "one repo per download (%s and %s)", repo, v);
            repo = v;
            repo_type = "dataset";
        } else if (missing) {
            rc = usage("download", USAGE_DOWNLOAD, "%s needs a value", argv[i]);
        } else if (argv[i][0] == '-' && argv[i][1]) {
            rc = usage("download", USAGE_DOWNLOAD, "unknown option %s", argv[i]);
        } else if (!repo) {
            repo = argv[i];
        } else {
            files[nfiles++] = argv[i];
        }
    }
    if (rc == -1 && !repo) rc = usage("download", USAGE_DOWNLOAD, "which repo? pass ORG/NAME (or --dataset ORG/NAME)");
    if (rc == -1 && nfiles && ninclude)
        rc = usage("download", USAGE_DOWNLOAD, "pass file names or --include patterns, not both");
    if (rc != -1) {
        free(files);
        free(include);
        return rc;
    }
    char err[1024] = "";
    hf_config cfg;
    if (hf_config_from_env(&cfg, err, sizeof err) != 0) {
        fprintf(stderr, "saefw download: %s\n", err);
        free(files);
        free(include);
        return 1;
    }
    hf_term term;
    hf_term_init(&term, "download");
    cfg.progress = hf_term_event;
    cfg.progress_ud = &term;
    char *path = NULL;
    hf_download_opts o = {.repo_type = repo_type,
                          .repo = repo,
                          .revision = revision,
                          .files = files,
                          .nfiles = nfiles,
                          .include = include,
                          .ninclude = ninclude};
    rc = hf_download_repo(&cfg, &o, &path, err, sizeof err);
    free(files);
    free(include);
    return finish("download", &cfg, &term, rc, path, err);
}

int saefw_hf_cli(int argc, char **argv) {
    if (argc < 1 || !argv[0]) {
        fprintf(stderr, "saefw: expected `upload` or `download`\n");
        return 2;
    }
    if (!strcmp(argv[0], "upload")) return cli_upload(argc, argv);
    if (!strcmp(argv[0], "download")) return cli_download(argc, argv);
    fprintf(stderr, "saefw: unknown Hub command '%s' (expected upload or download)\n", argv[0]);
    return 2;
}
