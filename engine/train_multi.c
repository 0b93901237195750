/* Several SAEs on one buffer: one trainer per SAE, fed the batch the group draws once per step; the
 * group's own state (the buffer and its source) is saved beside the SAEs' folders at their
 * checkpoint steps, so that a resume restores all of them at one step. */
#include "train_multi.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "memory.h"
#include "rundir.h"
#include "state.h"
#include "train_internal.h"
#include "util.h"

struct saefw_multi {
    saefw_buffer *buf;
    int n;
    saefw_train_opts *opts; /* [n]: the callers' with the group's fields set */
    char (*dirs)[PATH_MAX]; /* [n] */
    saefw_trainer **t;      /* [n] */
    int n_open;
    float *batch; /* [B, d]: this step's batch */
    int64_t B, next, steps;
    const char *run_dir;
    int lock_fd;
    int64_t kept[2]; /* the steps of the buffer states kept (0: none) */
    double mem_estimate;
    double t_open; /* when the group opened, for its time line */
    int failed;
};

uint64_t saefw_multi_seed(uint64_t seed, const char *name) {
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 0x100000001b3ULL;
    /* splitmix64's finaliser, so that similar names give unrelated seeds */
    uint64_t z = seed ^ h;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The trainers' batch: a copy of the one the group drew. */
static int group_batch(void *ud, float *out, int64_t rows, char *err, size_t errlen) {
    saefw_multi *g = ud;
    if (rows != g->B)
        return saefw_errf(err, errlen, "train: a batch of %lld rows, not %lld", (long long)rows, (long long)g->B);
    memcpy(out, g->batch, sizeof(float) * (size_t)(g->B * g->buf->d));
    return 0;
}

static int name_ok(const char *s) {
    if (!s || !*s || !strcmp(s, ".") || !strcmp(s, "..") || strlen(s) > 128) return 0;
    for (; *s; s++)
        if (*s == '/' || (unsigned char)*s < 32) return 0;
    return 1;
}

/* The estimate of engine/memory.c for the buffer and model once and every SAE's share. */
static int memory_check(saefw_multi *g, int print, char *err, size_t errlen) {
    const saefw_buffer *buf = g->buf;
    const saefw_source *src = buf->src;
    const double buffer =
        (double)saefw_buffer_bytes(buf) + 8.0 * (double)buf->rows + 4.0 * (double)(buf->stage_rows * buf->d);
    double params = 0, moments = 0, work = 0, model = src->mem_bytes;
    for (int i = 0; i < g->n; i++) {
        const saefw_train_opts *o = &g->opts[i];
        const saefw_sae *sae = o->sae;
        const double p = 4.0 * (double)sae->n_total;
        const char *opt = o->optimizer.plugin->p.name;
        const int64_t B = g->B, d = sae->d_in, piece = B < SAEFW_EVAL_PIECE ? B : SAEFW_EVAL_PIECE;
        const double step = saefw_sae_step_estimate(sae, B) + 4.0 * (double)(B * d) + 8.0 * (double)sae->d_sae;
        double eval = saefw_sae_step_estimate(sae, piece) + 4.0 * (double)(B * d) + 12.0 * (double)sae->d_sae;
        const saefw_source *es = o->eval_source ? o->eval_source : src;
        if (o->n_evaluators > 0 && es->kind && !strcmp(es->kind, "model")) eval += es->mem_bytes;
        if (es != src) model += es->mem_bytes;
        params += 2.0 * p;
        moments += (opt && !strcmp(opt, "sgd") ? 1.0 : 2.0) * p;
        /* each trainer keeps its step scratch, handed back while it evaluates */
        work += step > eval ? step : eval;
    }
    work += 4.0 * (double)(g->B * buf->d); /* the group's batch */
    const int64_t rss = saefw_mem_rss();
    double base = rss > 0 ? (double)rss - buffer - params - src->mem_bytes : 0;
    if (base < 0) base = 0;
    const double total = base + buffer + params + moments + work + model;
    g->mem_estimate = total;
    if (print) {
        char t[32], x[32], a[32], b[32], c[32], e[32], f[32];
        fprintf(stderr,
                "memory: estimated peak %s for %d SAEs (process %s, buffer %s, SAEs + gradients %s, optimizers %s, "
                "steps and evaluations %s, model %s)\n",
                saefw_mem_fmt(total, t, sizeof t), g->n, saefw_mem_fmt(base, x, sizeof x),
                saefw_mem_fmt(buffer, a, sizeof a), saefw_mem_fmt(params, b, sizeof b),
                saefw_mem_fmt(moments, c, sizeof c), saefw_mem_fmt(work, e, sizeof e),
                saefw_mem_fmt(model, f, sizeof f));
    }
    char what[64];
    snprintf(what, sizeof what, "this run of %d SAEs", g->n);
    return saefw_mem_check(what, total, err, errlen);
}

static int buffer_state_path(const saefw_multi *g, int64_t step, char *path, size_t n, char *err, size_t errlen) {
    return saefw_pathf(path, n, err, errlen, "%s/buffer-%lld.safetensors", g->run_dir, (long long)step);
}

/* The buffer and its source as of the start of step `step`: written to a temporary name, then
 * renamed; the two newest are kept. */
static int save_buffer_state(saefw_multi *g, int64_t step, char *err, size_t errlen) {
    if (!g->run_dir) return 0;
    char path[PATH_MAX], tmp[PATH_MAX + 8];
    if (buffer_state_path(g, step, path, sizeof path, err, errlen) != 0) return -1;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    saefw_state_out st;
    saefw_state_out_init(&st);
    saefw_state_set_prefix(&st, "buffer/");
    int rc = saefw_buffer_save(g->buf, &st, err, errlen);
    if (rc == 0 && g->buf->src->save_state) {
        saefw_state_set_prefix(&st, "source/");
        rc = g->buf->src->save_state(g->buf->src, &st, err, errlen);
    }
    if (rc == 0) rc = saefw_state_write(&st, tmp, err, errlen);
    saefw_state_out_free(&st);
    if (rc == 0 && rename(tmp, path) != 0) rc = saefw_errf(err, errlen, "%s: cannot rename: %s", tmp, strerror(errno));
    if (rc != 0) {
        unlink(tmp);
        return -1;
    }
    if (g->kept[1] == step) return 0;
    if (g->kept[0] > 0 && buffer_state_path(g, g->kept[0], path, sizeof path, err, errlen) == 0) unlink(path);
    g->kept[0] = g->kept[1];
    g->kept[1] = step;
    return 0;
}

static int load_buffer_state(saefw_multi *g, int64_t step, char *err, size_t errlen) {
    char path[PATH_MAX];
    if (buffer_state_path(g, step, path, sizeof path, err, errlen) != 0) return -1;
    if (access(path, F_OK) != 0)
        return saefw_errf(err, errlen,
                          "--resume: %s is missing: the SAEs' checkpoints at step %lld cannot be continued", path,
                          (long long)step);
    saefw_state_in st;
    if (saefw_state_open(path, &st, err, errlen) != 0) return -1;
    saefw_state_in_prefix(&st, "buffer/");
    int rc = saefw_buffer_load(g->buf, &st, err, errlen);
    if (rc == 0 && g->buf->src->load_state) {
        saefw_state_in_prefix(&st, "source/");
        rc = g->buf->src->load_state(g->buf->src, &st, err, errlen);
    }
    saefw_state_close(&st);
    if (rc == 0) g->kept[1] = step;
    return rc;
}

/* The step a checkpoint's training state continues at, or -1 with err. */
static int64_t checkpoint_next_step(const char *dir, char *err, size_t errlen) {
    char path[PATH_MAX];
    if (saefw_pathf(path, sizeof path, err, errlen, "%s/" SAEFW_TRAIN_STATE, dir) != 0) return -1;
    saefw_state_in st;
    if (saefw_state_open(path, &st, err, errlen) != 0) return -1;
    saefw_state_in_prefix(&st, "run/");
    int64_t next = -1;
    int rc = saefw_state_get_i64(&st, "next_step", &next, err, errlen);
    saefw_state_close(&st);
    return rc == 0 ? next : -1;
}

static void quiet_log(const char *msg) { (void)msg; }

/* A stop between two SAEs' checkpoints of one step leaves the first a newer one than the rest: the
 * run continues at the older step, from the checkpoint of that step; the newer training states are
 * removed (their steps run again), so that a later resume does not take them. */
static int checkpoint_at(const char *dir, const char *newest, int64_t at, char *out, char *err, size_t errlen) {
    const char *slash = strrchr(newest, '/');
    long top = slash ? strtol(slash + 1, NULL, 10) : -1;
    for (long v = top; v >= 0; v--) {
        char cand[PATH_MAX], e2[256];
        if (saefw_pathf(cand, sizeof cand, err, errlen, "%s/%ld", dir, v) != 0) return -1;
        int64_t s = access(cand, F_OK) == 0 ? checkpoint_next_step(cand, e2, sizeof e2) : -1;
        if (s == at) {
            snprintf(out, PATH_MAX, "%s", cand);
            return 0;
        }
        if (s > at) {
            char st[PATH_MAX + 32];
            snprintf(st, sizeof st, "%s/" SAEFW_TRAIN_STATE, cand);
            unlink(st);
        }
    }
    return saefw_errf(err, errlen, "--resume: %s has no checkpoint at step %lld, where the other SAEs continue", dir,
                      (long long)at);
}

/* With resume: every SAE's checkpoint to continue from (all at one step), and the buffer restored at
 * that step; none at all: the run starts over. */
static int find_resume_points(saefw_multi *g, char (*from)[PATH_MAX], char *err, size_t errlen) {
    int64_t at = -1;
    int with = 0;
    int64_t *steps = saefw_calloc((size_t)g->n, sizeof *steps, err, errlen);
    if (!steps) return -1;
    for (int i = 0; i < g->n; i++) {
        char e2[512];
        from[i][0] = 0;
        steps[i] = -1;
        if (saefw_checkpoint_find_resumable(g->dirs[i], from[i], PATH_MAX, quiet_log, e2, sizeof e2) != 0) {
            from[i][0] = 0;
            continue;
        }
        if ((steps[i] = checkpoint_next_step(from[i], err, errlen)) < 0) {
            free(steps);
            return -1;
        }
        at = with && at < steps[i] ? at : steps[i];
        with++;
    }
    for (int i = 0; i < g->n; i++)
        if (steps[i] > at && checkpoint_at(g->dirs[i], from[i], at, from[i], err, errlen) != 0) {
            free(steps);
            return -1;
        }
    free(steps);
    if (with == 0) return 0;
    if (with < g->n)
        for (int i = 0; i < g->n; i++)
            if (!from[i][0])
                return saefw_errf(err, errlen,
                                  "--resume: SAE %s has no checkpoint to continue from, the others are at step %lld",
                                  g->opts[i].label, (long long)at);
    if (load_buffer_state(g, at, err, errlen) != 0) return -1;
    g->next = at;
    return 0;
}

static void group_free(saefw_multi *g) {
    if (g->lock_fd >= 0) close(g->lock_fd);
    free(g->opts);
    free(g->dirs);
    free(g->t);
    free(g->batch);
    free(g);
}

int saefw_multi_open(saefw_buffer *buf, const char *run_dir, int resume, const char *const *names,
                     const saefw_train_opts *opts, int n, saefw_multi **out, char *err, size_t errlen) {
    *out = NULL;
    if (!buf) return saefw_errf(err, errlen, "train: several SAEs need a buffer");
    if (n <= 0) return saefw_errf(err, errlen, "train: 'saes' is empty: give at least one SAE");
    if (n > SAEFW_MAX_MULTI) return saefw_errf(err, errlen, "train: %d SAEs, more than %d", n, SAEFW_MAX_MULTI);
    for (int i = 0; i < n; i++) {
        if (!name_ok(names[i]))
            return saefw_errf(err, errlen, "train: saes[%d]: the name '%s' is not a plain folder name", i + 1,
                              names[i] ? names[i] : "");
        for (int j = 0; j < i; j++)
            if (!strcmp(names[i], names[j]))
                return saefw_errf(err, errlen, "train: saes[%d] and saes[%d] are both named '%s'", j + 1, i + 1,
                                  names[i]);
        const saefw_train_opts *o = &opts[i];
        if (!o->sae || !o->optimizer.plugin)
            return saefw_errf(err, errlen, "train: SAE %s: sae and optimizer are required", names[i]);
        /* A transcoder's rows are [input | target]; each trainer checks the two widths in detail. */
        const int64_t width = o->sae->d_in + (o->sae->transcoder ? o->sae->d_out : 0);
        if (width != buf->d)
            return saefw_errf(err, errlen,
                              "train: SAE %s has d_in = %lld, but the buffer's activations have width %lld", names[i],
                              (long long)width, (long long)buf->d);
        if (o->resume_from)
            return saefw_errf(err, errlen, "train: SAE %s: resume_from is not for several SAEs", names[i]);
        if (o->steps != opts[0].steps || o->log_every != opts[0].log_every || o->eval_every != opts[0].eval_every ||
            o->checkpoint_every != opts[0].checkpoint_every)
            return saefw_errf(err, errlen,
                              "train: SAE %s: steps, log_every, eval_every and checkpoint_every must be "
                              "the same for every SAE",
                              names[i]);
        for (int j = 0; j < i; j++)
            if (opts[j].sae == o->sae)
                return saefw_errf(err, errlen, "train: SAEs %s and %s are the same SAE object", names[j], names[i]);
    }
    if (buf->take != buf->batch)
        return saefw_errf(err, errlen,
                          "train: several SAEs on one buffer run on one rank: under mpirun each rank's buffer holds "
                          "only its share of the rows");
    saefw_multi *g = saefw_calloc(1, sizeof *g, err, errlen);
    if (!g) return -1;
    g->lock_fd = -1;
    g->buf = buf;
    g->n = n;
    g->B = buf->batch;
    g->steps = opts[0].steps;
    g->run_dir = run_dir;
    g->opts = saefw_calloc((size_t)n, sizeof *g->opts, err, errlen);
    g->dirs = g->opts ? saefw_calloc((size_t)n, sizeof *g->dirs, err, errlen) : NULL;
    g->t = g->dirs ? saefw_calloc((size_t)n, sizeof *g->t, err, errlen) : NULL;
    g->batch = g->t ? saefw_malloc(sizeof(float) * (size_t)(g->B * buf->d), err, errlen) : NULL;
    char(*from)[PATH_MAX] = g->batch ? saefw_calloc((size_t)n, PATH_MAX, err, errlen) : NULL;
    if (!from) {
        group_free(g);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        saefw_train_opts *o = &g->opts[i];
        *o = opts[i];
        o->buffer = NULL;
        o->next_batch = group_batch;
        o->next_batch_ud = g;
        o->batch_size = g->B;
        if (!o->eval_source) o->eval_source = buf->src;
        o->label = names[i];
        o->no_memory_check = 1;
        o->resume = resume;
        o->run_dir = NULL;
        if (run_dir) {
            if (saefw_pathf(g->dirs[i], PATH_MAX, err, errlen, "%s/%s", run_dir, names[i]) != 0) goto fail;
            o->run_dir = g->dirs[i];
        }
    }
    if (memory_check(g, opts[0].progress != 0, err, errlen) != 0) goto fail;
    if (run_dir) {
        if (resume && access(run_dir, F_OK) != 0) {
            saefw_errf(err, errlen, "--resume: %s: no such run folder", run_dir);
            goto fail;
        }
        /* The group's lock guards its buffer states; each SAE's folder has its trainer's. */
        if (saefw_mkdirs(run_dir, err, errlen) != 0 || saefw_rundir_lock(run_dir, &g->lock_fd, err, errlen) != 0)
            goto fail;
        if (resume && find_resume_points(g, from, err, errlen) != 0) goto fail;
    }
    for (int i = 0; i < n; i++) {
        if (from[i][0]) g->opts[i].resume_from = from[i];
        if (saefw_trainer_open(&g->opts[i], &g->t[i], err, errlen) != 0) {
            saefw_err_prefix(err, errlen, "SAE %s", names[i]);
            goto fail;
        }
        g->n_open = i + 1;
        /* a trainer resumed from its newest checkpoint has the same step as the group's buffer */
        if (saefw_trainer_next_step(g->t[i]) != g->next) {
            saefw_errf(err, errlen, "--resume: SAE %s continues at step %lld, the buffer at step %lld", names[i],
                       (long long)saefw_trainer_next_step(g->t[i]), (long long)g->next);
            goto fail;
        }
    }
    for (int i = 0; i < n; i++) g->opts[i].resume_from = NULL; /* read by the open only */
    free(from);
    g->t_open = saefw_now();
    *out = g;
    return 0;
fail:
    free(from);
    for (int i = g->n_open - 1; i >= 0; i--) {
        char e2[256];
        g->t[i]->failed = 1;
        saefw_trainer_close(g->t[i], NULL, e2, sizeof e2);
    }
    group_free(g);
    return -1;
}

int saefw_multi_step(saefw_multi *g, char *err, size_t errlen) {
    if (g->failed) return saefw_errf(err, errlen, "train: a step failed before; the run can only be closed");
    if (g->next >= g->steps || saefw_stop_requested()) return 0;
    if (saefw_buffer_next(g->buf, g->batch, err, errlen) != 0) {
        if (saefw_stop_requested()) return 0; /* the refill was rolled back: the steps done are saved */
        g->failed = 1;
        return -1;
    }
    /* Before the SAEs write their checkpoints of this step: the buffer as the next step finds it. */
    const int64_t every = g->opts[0].checkpoint_every;
    if (every > 0 && (g->next + 1) % every == 0 && g->next + 1 < g->steps &&
        save_buffer_state(g, g->next + 1, err, errlen) != 0) {
        g->failed = 1;
        return -1;
    }
    int ran = 0;
    for (int i = 0; i < g->n; i++) {
        /* every SAE takes this step, a stop asked for meanwhile included: their checkpoints agree */
        int rc = saefw_trainer_step_anyway(g->t[i], err, errlen);
        if (rc < 0) {
            saefw_err_prefix(err, errlen, "SAE %s", g->opts[i].label);
            g->failed = 1;
            return -1;
        }
        ran |= saefw_trainer_next_step(g->t[i]) > g->next;
    }
    g->next++;
    return ran && !saefw_stop_requested() ? 1 : 0;
}

int saefw_multi_close(saefw_multi *g, saefw_train_result *res, char *err, size_t errlen) {
    int rc = g->failed ? -1 : 0;
    char first[1024] = "";
    if (rc != 0) snprintf(first, sizeof first, "%s", err);
    /* After a signal each trainer saves a checkpoint at the group's step; the buffer goes with them. */
    if (!g->failed && saefw_stop_requested() && g->next < g->steps && save_buffer_state(g, g->next, err, errlen) != 0) {
        rc = -1;
        snprintf(first, sizeof first, "%s", err);
    }
    /* After a failure no SAE finishes: each is only freed, as a single run that failed. */
    if (g->failed)
        for (int i = 0; i < g->n; i++) g->t[i]->failed = 1;
    /* In the reverse order of opening: each trainer gives back the crash handler it found. */
    for (int i = g->n - 1; i >= 0; i--) {
        char e2[1024] = "";
        if (g->failed) saefw_trainer_close(g->t[i], res ? &res[i] : NULL, e2, sizeof e2);
        else if (saefw_trainer_close(g->t[i], res ? &res[i] : NULL, e2, sizeof e2) != 0) {
            rc = -1;
            char named[1024];
            snprintf(named, sizeof named, "SAE %s: %s", g->opts[i].label, e2);
            /* the first SAE's message wins: the lines read in the order of the list */
            snprintf(first, sizeof first, "%s", named);
        }
    }
    if (rc != 0 && first[0]) snprintf(err, errlen, "%s", first);
    if (rc == 0 && g->opts[0].progress != 0) {
        /* The SAEs' time lines count the wall time of the whole group; the refills are the group's. */
        const double total = saefw_now() - g->t_open, fill = g->buf->fill_seconds + g->buf->refill_seconds;
        fprintf(stderr,
                "time %.1f s for %d SAEs on one buffer: buffer fills and refills (the model, once for all) %.1f s "
                "(%.1f %%); each SAE's time line counts the group's wall time\n",
                total, g->n, fill, total > 0 ? 100.0 * fill / total : 0.0);
    }
    if (rc == 0 && g->opts[0].progress != 0 && saefw_mem_peak() > 0) {
        char pk[32], es[32];
        fprintf(stderr, "memory: peak resident %s, estimated %s for %d SAEs\n",
                saefw_mem_fmt((double)saefw_mem_peak(), pk, sizeof pk), saefw_mem_fmt(g->mem_estimate, es, sizeof es),
                g->n);
    }
    group_free(g);
    return rc;
}

int saefw_multi_train(saefw_buffer *buf, const char *run_dir, int resume, const char *const *names,
                      const saefw_train_opts *opts, int n, saefw_train_result *res, char *err, size_t errlen) {
    saefw_multi *g;
    if (saefw_multi_open(buf, run_dir, resume, names, opts, n, &g, err, errlen) != 0) return -1;
    int rc;
    while ((rc = saefw_multi_step(g, err, errlen)) > 0) {}
    if (rc < 0) {
        saefw_multi_close(g, res, err, errlen);
        return -1;
    }
    return saefw_multi_close(g, res, err, errlen);
}
