/* The run folder: its lock, the fresh-start and resume policy, and the recorded configuration. */
#include "rundir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "plugin_loader.h"
#include "util.h"

int saefw_rundir_lock(const char *dir, int *fd_out, char *err, size_t errlen) {
    *fd_out = -1;
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/" SAEFW_RUN_LOCK, dir);
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return saefw_errf(err, errlen, "%s: cannot open the run folder's lock: %s", p, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        long pid = 0;
        /* The holder writes its PID just after taking the lock: give it a moment to. */
        for (int i = 0; e == EWOULDBLOCK && i < 50 && pid <= 0; i++) {
            char buf[32];
            ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
            if (n > 0) {
                buf[n] = 0;
                pid = strtol(buf, NULL, 10);
            }
            if (pid <= 0) usleep(10000);
        }
        close(fd);
        if (e != EWOULDBLOCK) return saefw_errf(err, errlen, "%s: cannot lock: %s", p, strerror(e));
        char who[64] = "another saefw process";
        if (pid > 0) snprintf(who, sizeof who, "saefw process %ld", pid);
        return saefw_errf(
            err, errlen,
            "%s is in use by %s (it holds %s); a run folder takes one writer at a time: wait for that run "
            "to end, or choose another run_dir",
            dir, who, SAEFW_RUN_LOCK);
    }
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)n, 0) != n) {
        int e = errno;
        close(fd);
        return saefw_errf(err, errlen, "%s: cannot write: %s", p, strerror(e));
    }
    *fd_out = fd;
    return 0;
}

static int numbered(const char *name) {
    if (!*name) return 0;
    for (const char *c = name; *c; c++)
        if (*c < '0' || *c > '9') return 0;
    return 1;
}

/* Whether metrics.jsonl's last line is the end event; *step gets its step. */
static int metrics_finished(const char *path, long long *step) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    static char buf[65536];
    size_t n = 0;
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        long from = size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0;
        if (size > 0 && fseek(f, from, SEEK_SET) == 0) n = fread(buf, 1, sizeof buf - 1, f);
    }
    fclose(f);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) n--;
    buf[n] = 0;
    char *line = strrchr(buf, '\n');
    line = line ? line + 1 : buf;
    if (strncmp(line, "{\"event\":\"end\"", 14) != 0) return 0;
    const char *s = strstr(line, "\"step\":");
    *step = s ? strtoll(s + 7, NULL, 10) : -1;
    return 1;
}

int saefw_rundir_open(const char *dir, int resume, int *lock_fd, char *resume_from, size_t n,
                      void (*log)(const char *msg), char *err, size_t errlen) {
    *lock_fd = -1;
    if (n) resume_from[0] = 0;
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (resume)
            return saefw_errf(err, errlen,
                              "--resume %s: no such run folder (check the path; without --resume a new "
                              "run starts there)",
                              dir);
        if (saefw_mkdirs(dir, err, errlen) != 0) return -1;
    } else if (!S_ISDIR(st.st_mode)) {
        return saefw_errf(err, errlen, "%s: not a folder; run_dir must name a folder", dir);
    }
    if (saefw_rundir_lock(dir, lock_fd, err, errlen) != 0) return -1;
    saefw_checkpoint_remove_leftovers(dir, log);

    /* What the folder holds, with the lock held so that no writer changes it meanwhile. */
    DIR *d = opendir(dir);
    if (!d) {
        saefw_errf(err, errlen, "%s: cannot list: %s", dir, strerror(errno));
        goto fail;
    }
    int checkpoints = 0, final = 0;
    long long metrics_size = -1;
    char other[256] = "";
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *name = e->d_name;
        if (!strcmp(name, ".") || !strcmp(name, "..") || !strcmp(name, SAEFW_RUN_LOCK)) continue;
        if (numbered(name)) checkpoints++;
        else if (!strcmp(name, "final")) final = 1;
        else if (!strcmp(name, "metrics.jsonl")) {
            char p[PATH_MAX];
            snprintf(p, sizeof p, "%s/%s", dir, name);
            metrics_size = stat(p, &st) == 0 ? (long long)st.st_size : 0;
        } else if (!other[0]) snprintf(other, sizeof other, "%s", name);
    }
    closedir(d);
    char mp[PATH_MAX];
    snprintf(mp, sizeof mp, "%s/metrics.jsonl", dir);
    long long end_step = -1;
    int finished = metrics_size > 0 && metrics_finished(mp, &end_step);

    if (!resume) {
        if (checkpoints || final || metrics_size > 0) {
            if (finished)
                saefw_errf(err, errlen,
                           "%s already holds a finished run (its end event is at step %lld); choose another "
                           "run_dir",
                           dir, end_step);
            else
                saefw_errf(err, errlen,
                           "%s already holds a run; continue it with --resume %s, or choose another run_dir", dir, dir);
            goto fail;
        }
        if (other[0]) {
            saefw_errf(err, errlen,
                       "%s is not empty (it holds '%s'); a new run starts only in an empty or absent "
                       "folder: choose another run_dir",
                       dir, other);
            goto fail;
        }
        return 0;
    }
    if (finished) {
        saefw_errf(err, errlen,
                   "--resume %s: that run has finished (its end event is at step %lld); there is nothing "
                   "to resume, and nothing was changed",
                   dir, end_step);
        goto fail;
    }
    if (checkpoints) {
        char why[1024];
        if (saefw_checkpoint_find_resumable(dir, resume_from, n, log, why, sizeof why) == 0) return 0;
        saefw_errf(err, errlen,
                   "--resume %s: %s; refusing to start over on top of its checkpoints (nothing was "
                   "changed)",
                   dir, why);
        goto fail;
    }
    if (final || other[0]) {
        saefw_errf(err, errlen,
                   "--resume %s: the folder holds %s%s%s but no checkpoint to resume from; refusing to "
                   "start over there (nothing was changed)",
                   dir, final ? "final/" : "", final && other[0] ? " and " : "", other[0] ? other : "");
        goto fail;
    }
    /* Nothing but the metrics of a run that stopped before its first checkpoint: nothing to lose. */
    if (log) {
        char msg[PATH_MAX + 128];
        snprintf(msg, sizeof msg,
                 "resume: %s has no checkpoint yet (the run stopped before its first one); starting "
                 "from the beginning",
                 dir);
        log(msg);
    }
    return 0;
fail:
    close(*lock_fd);
    *lock_fd = -1;
    return -1;
}

/* ---- the recorded configuration ---- */

static cJSON *plugin_record(const char *role, const saefw_plugin_use *u) {
    cJSON *p = cJSON_CreateObject();
    if (!p) return NULL;
    cJSON_AddStringToObject(p, "name", u->plugin->p.name ? u->plugin->p.name : "?");
    cJSON_AddStringToObject(p, "role", role);
    cJSON *opts = cJSON_AddObjectToObject(p, "options");
    const saefw_opts *o = u->opts;
    for (int i = 0; opts && o && i < o->n; i++) {
        const saefw_option *s = &o->spec[i];
        if (s->type == SAEFW_OPT_STRING) {
            if (o->str[i]) cJSON_AddStringToObject(opts, s->name, o->str[i]);
            else cJSON_AddNullToObject(opts, s->name);
        } else if (s->type == SAEFW_OPT_BOOL) {
            cJSON_AddBoolToObject(opts, s->name, o->num[i] != 0);
        } else {
            cJSON_AddNumberToObject(opts, s->name, o->num[i]);
        }
    }
    return p;
}

cJSON *saefw_run_record(const saefw_train_opts *o) {
    static const char *const volatile_keys[] = {"run_dir", "threads", "progress"};
    cJSON *r = cJSON_CreateObject();
    cJSON *cfg = o->cfg ? cJSON_Duplicate(o->cfg, 1) : cJSON_CreateObject();
    if (!r || !cfg) {
        cJSON_Delete(r);
        cJSON_Delete(cfg);
        return NULL;
    }
    for (size_t k = 0; k < sizeof volatile_keys / sizeof *volatile_keys; k++)
        cJSON_DeleteItemFromObjectCaseSensitive(cfg, volatile_keys[k]);
    cJSON_AddItemToObject(r, "config", cfg);
    cJSON *t = cJSON_AddObjectToObject(r, "train");
    if (t) {
        cJSON_AddNumberToObject(t, "steps", (double)o->steps);
        cJSON_AddNumberToObject(t, "batch_size", (double)(o->buffer ? o->buffer->batch : o->batch_size));
        cJSON_AddNumberToObject(t, "seed", (double)o->seed);
        cJSON_AddNumberToObject(t, "l1_coeff", (double)o->sae->l1_coeff);
        cJSON_AddNumberToObject(t, "log_every", (double)o->log_every);
        cJSON_AddNumberToObject(t, "eval_every", (double)o->eval_every);
        cJSON_AddNumberToObject(t, "checkpoint_every", (double)o->checkpoint_every);
        cJSON_AddNumberToObject(t, "freq_batches", (double)o->freq_batches);
        /* The 2024 recipe's trainer options, recorded only when set: a record written before they were
         * recorded (the seed's step) still compares equal. */
        if (o->clip_grad_norm > 0) cJSON_AddNumberToObject(t, "clip_grad_norm", o->clip_grad_norm);
        if (o->free_decoder) cJSON_AddBoolToObject(t, "unit_norm_decoder", 0);
    }
    cJSON *pl = cJSON_AddArrayToObject(r, "plugins");
    if (pl) {
        cJSON_AddItemToArray(pl, plugin_record("optimizer", &o->optimizer));
        for (int i = 0; i < o->n_plugins; i++) cJSON_AddItemToArray(pl, plugin_record("hook", &o->plugins[i]));
    }
    if (!t || !pl || cJSON_GetArraySize(pl) != o->n_plugins + 1) {
        cJSON_Delete(r);
        return NULL;
    }
    return r;
}

typedef struct {
    const char *const *allow;
    int n_allow;
    int64_t step;
    cJSON *changes;
    char refused[1024]; /* the differences not allowed, as "key a -> b, ..." */
    int n_refused;
    int oom;
} differ;

static int allowed(const differ *df, const char *key) {
    const char *dot = strrchr(key, '.');
    for (int i = 0; i < df->n_allow; i++)
        if (!strcmp(df->allow[i], key) || (dot && !strcmp(df->allow[i], dot + 1))) return 1;
    return 0;
}

static void value_text(const cJSON *v, char *buf, size_t n) {
    char *s = v ? cJSON_PrintUnformatted(v) : NULL;
    snprintf(buf, n, "%s", s ? s : "(not set: the default)");
    free(s);
}

static void difference(differ *df, const char *key, const cJSON *a, const cJSON *b) {
    if (a && b && cJSON_Compare(a, b, 1)) return;
    if (!allowed(df, key)) {
        char va[128], vb[128];
        value_text(a, va, sizeof va);
        value_text(b, vb, sizeof vb);
        size_t u = strlen(df->refused);
        snprintf(df->refused + u, sizeof df->refused - u, "%s%s %s -> %s", df->n_refused ? ", " : "", key, va, vb);
        df->n_refused++;
        return;
    }
    cJSON *c = cJSON_CreateObject();
    cJSON *from = a ? cJSON_Duplicate(a, 1) : cJSON_CreateNull(), *to = b ? cJSON_Duplicate(b, 1) : cJSON_CreateNull();
    if (!c || !from || !to) {
        cJSON_Delete(c);
        cJSON_Delete(from);
        cJSON_Delete(to);
        df->oom = 1;
        return;
    }
    cJSON_AddNumberToObject(c, "step", (double)df->step);
    cJSON_AddStringToObject(c, "key", key);
    cJSON_AddItemToObject(c, "from", from);
    cJSON_AddItemToObject(c, "to", to);
    cJSON_AddItemToArray(df->changes, c);
}

/* Every key of either object, compared; names are prefix + key. */
static void diff_objects(differ *df, const char *prefix, const cJSON *a, const cJSON *b) {
    char key[256];
    const cJSON *e;
    cJSON_ArrayForEach(e, a) {
        snprintf(key, sizeof key, "%s%s", prefix, e->string);
        difference(df, key, e, cJSON_GetObjectItemCaseSensitive(b, e->string));
    }
    cJSON_ArrayForEach(e, b) {
        if (cJSON_GetObjectItemCaseSensitive(a, e->string)) continue;
        snprintf(key, sizeof key, "%s%s", prefix, e->string);
        difference(df, key, NULL, e);
    }
}

/* The plugin list as text: "adam, anthropic_resample". */
static cJSON *plugin_names(const cJSON *list) {
    char buf[1024] = "";
    const cJSON *p;
    cJSON_ArrayForEach(p, list) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(p, "name");
        size_t u = strlen(buf);
        snprintf(buf + u, sizeof buf - u, "%s%s", u ? ", " : "", cJSON_IsString(name) ? name->valuestring : "?");
    }
    return cJSON_CreateString(buf);
}

int saefw_run_record_diff(const cJSON *recorded, const cJSON *current, const char *const *allow, int n_allow,
                          int64_t step, cJSON *changes, char *err, size_t errlen) {
    differ df;
    memset(&df, 0, sizeof df);
    df.allow = allow;
    df.n_allow = n_allow;
    df.step = step;
    df.changes = changes;
    diff_objects(&df, "", cJSON_GetObjectItemCaseSensitive(recorded, "config"),
                 cJSON_GetObjectItemCaseSensitive(current, "config"));
    diff_objects(&df, "train.", cJSON_GetObjectItemCaseSensitive(recorded, "train"),
                 cJSON_GetObjectItemCaseSensitive(current, "train"));
    const cJSON *pa = cJSON_GetObjectItemCaseSensitive(recorded, "plugins");
    const cJSON *pb = cJSON_GetObjectItemCaseSensitive(current, "plugins");
    int same_list = cJSON_GetArraySize(pa) == cJSON_GetArraySize(pb);
    for (int i = 0; same_list && i < cJSON_GetArraySize(pa); i++) {
        const cJSON *x = cJSON_GetArrayItem(pa, i), *y = cJSON_GetArrayItem(pb, i);
        same_list =
            cJSON_Compare(cJSON_GetObjectItemCaseSensitive(x, "name"), cJSON_GetObjectItemCaseSensitive(y, "name"),
                          1) &&
            cJSON_Compare(cJSON_GetObjectItemCaseSensitive(x, "role"), cJSON_GetObjectItemCaseSensitive(y, "role"), 1);
    }
    if (!same_list) {
        cJSON *na = plugin_names(pa), *nb = plugin_names(pb);
        difference(&df, "plugins", na, nb);
        cJSON_Delete(na);
        cJSON_Delete(nb);
    } else {
        for (int i = 0; i < cJSON_GetArraySize(pa); i++) {
            const cJSON *x = cJSON_GetArrayItem(pa, i);
            char prefix[160];
            snprintf(prefix, sizeof prefix, "%s.", cJSON_GetObjectItemCaseSensitive(x, "name")->valuestring);
            diff_objects(&df, prefix, cJSON_GetObjectItemCaseSensitive(x, "options"),
                         cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(pb, i), "options"));
        }
    }
    if (df.oom) return saefw_errf(err, errlen, "out of memory comparing the run's configuration");
    if (df.n_refused)
        return saefw_errf(err, errlen,
                          "the run's configuration differs from the one it ran with: %s; name each change "
                          "to accept it (--allow-change KEY, recorded in metrics.jsonl and cfg.json), or resume with "
                          "the recorded values",
                          df.refused);
    return 0;
}

int saefw_rundir_check_metrics(FILE *f, const char *path, int64_t bytes, int64_t lines, char *err, size_t errlen) {
    struct stat st;
    if (fflush(f) != 0 || fstat(fileno(f), &st) != 0)
        return saefw_errf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
    if ((int64_t)st.st_size < bytes)
        return saefw_errf(err, errlen,
                          "%s is %lld bytes, but the checkpoint recorded %lld: the file was cut short or "
                          "replaced since; put the whole file back to resume (nothing was changed)",
                          path, (long long)st.st_size, (long long)bytes);
    if (lines < 0) return 0;
    int fd = fileno(f);
    static char buf[1 << 16];
    int64_t got = 0, nl = 0;
    char last = '\n';
    while (got < bytes) {
        size_t want = bytes - got < (int64_t)sizeof buf ? (size_t)(bytes - got) : sizeof buf;
        ssize_t r = pread(fd, buf, want, (off_t)got);
        if (r <= 0)
            return saefw_errf(err, errlen, "%s: cannot read: %s", path, r < 0 ? strerror(errno) : "end of file");
        for (ssize_t i = 0; i < r; i++) {
            nl += buf[i] == '\n';
            if (buf[i] == 0)
                return saefw_errf(err, errlen,
                                  "%s: a NUL byte at offset %lld; the file is damaged (nothing was changed)", path,
                                  (long long)(got + i));
        }
        last = buf[r - 1];
        got += r;
    }
    if (nl != lines || last != '\n')
        return saefw_errf(err, errlen,
                          "%s: its first %lld bytes hold %lld lines, but the checkpoint recorded %lld: the "
                          "file was changed since; put the original back to resume (nothing was changed)",
                          path, (long long)bytes, (long long)nl, (long long)lines);
    return 0;
}
