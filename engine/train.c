/* The training loop of the seed recipe: batch -> forward -> backward -> decoder projection + renorm ->
 * after_backward hooks -> optimizer step -> after_step hooks -> metrics -> eval / checkpoint, as a
 * trainer opened once, stepped, and closed (final evaluation and checkpoint). */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist.h"
#include "eval.h"
#include "grad_clip.h"
#include "memory.h"
#include "rundir.h"
#include "train_internal.h"
#include "util.h"

static void log_line(const char *msg) { fprintf(stderr, "%s\n", msg); }

/* ---- crashes: a fault while a plugin runs names the plugin and what is lost ---- */

static saefw_run *volatile g_crash_run;
static char g_crash_stack[1 << 16];
static const int g_fault_sigs[SAEFW_TRAIN_FAULT_SIGS] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
#define N_FAULT_SIGS SAEFW_TRAIN_FAULT_SIGS

/* Async-signal-safe output: write(2) of plain strings and decimal numbers. */
static void crash_put(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    while (n > 0) {
        ssize_t k = write(STDERR_FILENO, s, n);
        if (k <= 0) return;
        s += k;
        n -= (size_t)k;
    }
}

static void crash_num(int64_t v) {
    char buf[24], *p = buf + sizeof buf - 1;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    *p = 0;
    do *--p = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    if (v < 0) *--p = '-';
    crash_put(p);
}

static void on_fault(int sig) {
    saefw_run *run = g_crash_run;
    const char *name = sig == SIGSEGV  ? "SIGSEGV"
                       : sig == SIGBUS ? "SIGBUS"
                       : sig == SIGFPE ? "SIGFPE"
                       : sig == SIGILL ? "SIGILL"
                                       : "SIGABRT";
    if (run) {
        crash_put("\nsaefw: ");
        if (run->current) {
            crash_put("plugin ");
            crash_put(run->current);
            crash_put(" crashed (");
            crash_put(name);
            crash_put(") in its ");
            crash_put(run->callback ? run->callback : "?");
            crash_put(" callback");
        } else {
            crash_put("crashed (");
            crash_put(name);
            crash_put(")");
        }
        crash_put(" at step ");
        crash_num(run->step);
        crash_put("; ");
        crash_num(run->step - run->ckpt_next);
        crash_put(" step(s) done since the last checkpoint are lost");
        if (run->ckpt_path) {
            crash_put(" (it is ");
            crash_put(run->ckpt_path);
            crash_put(": continue with --resume ");
            crash_put(run->o->run_dir ? run->o->run_dir : "RUN_DIR");
            crash_put(")");
        }
        crash_put("\n");
    }
    /* SA_RESETHAND made the action the default again: the signal, raised anew, ends the process as it
     * would have, once this handler returns. */
    raise(sig);
}

static void crash_handlers(saefw_run *run, struct sigaction *old, stack_t *old_ss) {
    stack_t ss;
    memset(&ss, 0, sizeof ss);
    ss.ss_sp = g_crash_stack; /* a plugin that overflows its stack still gets its line */
    ss.ss_size = sizeof g_crash_stack;
    sigaltstack(&ss, old_ss);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fault;
    sa.sa_flags = SA_RESETHAND | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    run->crash_prev = g_crash_run;
    g_crash_run = run;
    for (int i = 0; i < N_FAULT_SIGS; i++) sigaction(g_fault_sigs[i], &sa, &old[i]);
}

/* Trainers opened together close in the reverse order: each gives back what the one before it had. */
static void crash_handlers_off(saefw_run *run, const struct sigaction *old, const stack_t *old_ss) {
    for (int i = 0; i < N_FAULT_SIGS; i++) sigaction(g_fault_sigs[i], &old[i], NULL);
    g_crash_run = run->crash_prev;
    sigaltstack(old_ss, NULL);
}

/* "[label] " before a line of a run that trains beside others. */
static void label_prefix(const saefw_run *run) {
    if (run->o->label) fprintf(stderr, "[%s] ", run->o->label);
}

/* The evaluator that counts the feature frequencies in its own SAE pass (ev->feature_freq), or NULL.
 * Data-parallel runs keep their own frequency draws, whose sums across ranks the loop makes. */
static saefw_evaluator *freq_evaluator(const saefw_run *run) {
    if (run->ranks > 1) return NULL;
    for (int i = 0; i < run->o->n_evaluators; i++)
        if (run->o->evaluators[i]->feature_freq) return run->o->evaluators[i];
    return NULL;
}

/* The eval line's dead and rare fractions from run->freq, wherever it was counted. */
static void freq_metrics(const saefw_run *run, saefw_metrics *m) {
    const float *freq = run->freq;
    const int64_t d_sae = run->sae->d_sae;
    int64_t dead = 0, b6 = 0, b5 = 0;
    for (int64_t j = 0; j < d_sae; j++) {
        dead += freq[j] == 0.0f;
        b6 += freq[j] < 1e-6f;
        b5 += freq[j] < 1e-5f;
    }
    m->has_eval = 1;
    m->frac_dead = (double)dead / (double)d_sae;
    m->frac_below_1e6 = (double)b6 / (double)d_sae;
    m->frac_below_1e5 = (double)b5 / (double)d_sae;
}

/* The seed's frequencies: freq_batches batches of evaluation rows through the SAE. */
static int sample_frequencies(saefw_run *run, char *err, size_t errlen) {
    int64_t nb = run->o->freq_batches > 0 ? run->o->freq_batches : 5;
    const int64_t cap = saefw_sae_step_cap(run->work), rows = nb * saefw_eval_batch_rows(run->eval_src, cap);
    double t = saefw_now();
    if (saefw_train_frequencies(run, rows, run->freq, err, errlen) != 0) return -1;
    run->time.eval_freq += saefw_now() - t;
    return 0;
}

static int run_eval(saefw_run *run, saefw_metrics *m, char *err, size_t errlen) {
    const saefw_sae *sae = run->sae;
    /* The step's scratch holds nothing between steps: its pages go back while the evaluation's own
     * scratch is in use, so that peak memory is one of the two, not both. */
    saefw_sae_step_release(run->work);
    if (!run->freq && !(run->freq = saefw_malloc(sizeof(float) * (size_t)sae->d_sae, err, errlen))) return -1;
    /* With an evaluator that counts them, the frequencies come after it, from its SAE pass. */
    saefw_evaluator *fe = freq_evaluator(run);
    if (!fe) {
        if (sample_frequencies(run, err, errlen) != 0) return -1;
        freq_metrics(run, m);
    }
    m->n_score = 0;
    double t = saefw_now();
    for (int i = 0; i < run->o->n_evaluators; i++) {
        saefw_evaluator *ev = run->o->evaluators[i];
        char eerr[512] = "";
        run->current = ev->name; /* what its log messages and a crash in it are labelled with */
        run->callback = "evaluate";
        int erc = ev->evaluate(ev, run, sae, m, eerr, sizeof eerr);
        run->current = NULL;
        if (erc != 0) return saefw_errf(err, errlen, "evaluator %s: %s", ev->name, eerr[0] ? eerr : "failed");
    }
    run->time.eval_other += saefw_now() - t;
    if (fe) {
        if (!fe->feature_freq(fe, run->freq, sae->d_sae) && sample_frequencies(run, err, errlen) != 0) return -1;
        freq_metrics(run, m);
    }
    if (run->eval_src->idle) run->eval_src->idle(run->eval_src); /* its scratch is not needed until the next use */
    return 0;
}

static const char *hook_name(size_t offset) {
    return offset == offsetof(saefw_plugin, after_backward) ? "after_backward"
           : offset == offsetof(saefw_plugin, after_step)   ? "after_step"
           : offset == offsetof(saefw_plugin, on_eval)      ? "on_eval"
           : offset == offsetof(saefw_plugin, on_end)       ? "on_end"
           : offset == offsetof(saefw_plugin, before_step)  ? "before_step"
                                                            : "hook";
}

static int call_hooks(saefw_run *run, size_t offset, char *err, size_t errlen) {
    const saefw_train_opts *o = run->o;
    const double t0 = saefw_now();
    for (int i = 0; i < o->n_plugins; i++) {
        const saefw_plugin *p = &o->plugins[i].plugin->p;
        saefw_callback cb = *(const saefw_callback *)((const char *)p + offset);
        if (!cb) continue;
        run->current = p->name;
        run->callback = hook_name(offset);
        char perr[512] = "";
        int rc = cb(run->plug_self[i], run, perr, sizeof perr);
        run->current = NULL;
        if (rc != 0)
            return saefw_errf(err, errlen, "plugin %s: %s", p->name,
                              saefw_train_plugin_msg(perr, sizeof perr, "callback failed"));
    }
    run->time.plugins += saefw_now() - t0;
    return 0;
}

/* Destroy the plugin instances, close metrics.jsonl (a failure sets *rc when it was 0) and the run
 * folder's lock, free the scratch space and the trainer. */
static void trainer_free(saefw_run *run, int *rc, char *err, size_t errlen) {
    const saefw_train_opts *o = run->o;
    if (run->handlers_set) crash_handlers_off(run, run->old_fault, &run->old_ss);
    if (run->signals_set) {
        saefw_stop_defer(0);
        saefw_stop_end(&run->stop_scope);
    }
    for (int i = 0; i < run->n_created; i++)
        if (o->plugins[i].plugin->p.destroy && run->plug_self[i]) o->plugins[i].plugin->p.destroy(run->plug_self[i]);
    if (run->opt_created && o->optimizer.plugin->p.destroy && run->opt_self)
        o->optimizer.plugin->p.destroy(run->opt_self);
    if (run->metrics && fclose(run->metrics) != 0 && *rc == 0)
        *rc = saefw_errf(err, errlen, "metrics.jsonl: write failed");
    if (run->lock_fd >= 0) close(run->lock_fd);
    cJSON_Delete(run->changes);
    free(run->plug_self);
    free(run->batch);
    free(run->batch_xy);
    free(run->batch_y);
    free(run->feat_counts);
    free(run->freq);
    free(run->zbounds);
    saefw_sae_step_free(run->work);
    saefw_sae_eval_free(run->sample_work);
    free(run);
}

/* ---- data parallel: what the ranks must agree on, and the step's global figures ---- */

/* A digest of what this rank will run: the loop's options, the plugins and their order, the SAE's
 * shape and its initial parameters (which follow from the seed). Ranks that read different scripts or
 * options differ here. */
static uint64_t config_hash(const saefw_run *run) {
    const saefw_train_opts *o = run->o;
    const saefw_sae *sae = run->sae;
    uint64_t h = SAEFW_FNV_OFFSET;
    const int64_t v[] = {o->steps,        run->B,       o->log_every, o->eval_every, o->checkpoint_every,
                         o->freq_batches, o->n_plugins, sae->d_in,    sae->d_sae,    (int64_t)o->seed};
    h = saefw_fnv1a(h, v, sizeof v);
    const double f[] = {run->lr, sae->l1_coeff};
    h = saefw_fnv1a(h, f, sizeof f);
    h = saefw_fnv1a(h, o->optimizer.plugin->p.name, strlen(o->optimizer.plugin->p.name));
    h = saefw_fnv1a(h, &o->zero, sizeof o->zero);
    for (int i = 0; i < o->n_plugins; i++)
        h = saefw_fnv1a(h, o->plugins[i].plugin->p.name, strlen(o->plugins[i].plugin->p.name) + 1);
    return saefw_fnv1a(h, sae->params, sizeof(float) * sae->n_total);
}

/* The step's statistics over the global batch from each rank's over its rows: l2 and l0 are means over
 * rows and l1 a sum, so they add up exactly. Explained variance is 1 - sum (y - y_hat)^2 / sum (y -
 * mean(y))^2 over the whole batch: the ranks add their squared errors and each column's sum and sum of
 * squares of y (their rows of the batch y, or of the inputs), in double. Also agrees on a stop: a signal
 * that reached any rank stops all after this step. */
static int global_stats(saefw_run *run, const float *y, int64_t d_y, saefw_sae_stats *st, char *err, size_t errlen) {
    const double w = (double)run->rows;
    const int64_t n = 4 + 2 * d_y;
    double *v = saefw_calloc((size_t)n, sizeof(double), err, errlen);
    if (!v) return -1;
    v[0] = st->l2 * w;
    v[1] = st->l1;
    v[2] = st->l0 * w;
    v[3] = (double)saefw_stop_pending();
    double *sum = v + 4, *sq = v + 4 + d_y;
    for (int64_t r = 0; r < run->rows; r++)
        for (int64_t i = 0; i < d_y; i++) {
            const double x = y[r * d_y + i];
            sum[i] += x;
            sq[i] += x * x;
        }
    if (saefw_dist_sum_f64(v, n, err, errlen) != 0) {
        free(v);
        return -1;
    }
    const double B = (double)run->B;
    double var = 0;
    for (int64_t i = 0; i < d_y; i++) var += sq[i] - sum[i] * sum[i] / B;
    st->l2 = v[0] / B;
    st->l1 = v[1];
    st->loss = st->l2 + st->l1;
    st->l0 = v[2] / B;
    st->explained_variance = var > 0 ? 1.0 - v[0] / var : 0.0;
    if (v[3] > 0) saefw_stop_commit();
    free(v);
    return 0;
}

/* AuxK's fired flags of the global batch (saefw_sae_step_set_fired_exchange): the maximum over ranks,
 * exact. A failure inside the step ends the job, the way out while other ranks wait in the same call. */
static void fired_exchange(void *ud, unsigned char *fired, int64_t n) {
    (void)ud;
    char err[256];
    int64_t *v = saefw_malloc(sizeof(int64_t) * (size_t)n, err, sizeof err);
    if (v) {
        for (int64_t j = 0; j < n; j++) v[j] = fired[j];
        if (saefw_dist_max_i64(v, n, err, sizeof err) == 0) {
            for (int64_t j = 0; j < n; j++) fired[j] = v[j] > 0;
            free(v);
            return;
        }
    }
    free(v);
    fprintf(stderr, "train: AuxK's fired flags across ranks: %s\n", err);
    saefw_dist_abort(1);
}

int saefw_trainer_open(const saefw_train_opts *o, saefw_trainer **out, char *err, size_t errlen) {
    *out = NULL;
    saefw_sae *sae = o->sae;
    saefw_buffer *buf = o->buffer;
    if (!sae || !(buf || o->next_batch) || !o->optimizer.plugin)
        return saefw_errf(err, errlen, "train: sae, buffer and optimizer are required");
    if (!buf && (!o->eval_source || o->batch_size <= 0))
        return saefw_errf(err, errlen, "train: next_batch needs batch_size and eval_source");
    const saefw_source *data_src = buf ? buf->src : o->eval_source;
    const int64_t d_act = buf ? buf->d : o->eval_source->d_act;
    /* A transcoder's rows are [input | target] (a source with d_target); anything else gets input rows. */
    if (sae->transcoder != (data_src->d_target > 0) ||
        (o->eval_source && o->eval_source->d_target != data_src->d_target))
        return saefw_errf(err, errlen,
                          sae->transcoder ? "train: the SAE is a transcoder, but the activations hold one "
                                            "site (give the buffer a target site: site_out)"
                                          : "train: the activations hold an input and a target site (a "
                                            "transcoder's data), but the SAE is not a transcoder");
    const int64_t d_want = sae->d_in + (sae->transcoder ? sae->d_out : 0);
    if (sae->transcoder && data_src->d_target != sae->d_out)
        return saefw_errf(err, errlen, "train: the target site has width %lld, but the transcoder's d_out is %lld",
                          (long long)data_src->d_target, (long long)sae->d_out);
    if (d_act != d_want)
        return saefw_errf(err, errlen, "train: activations have width %lld, but the SAE expects d_in = %lld",
                          (long long)(d_act - data_src->d_target), (long long)sae->d_in);
    if (o->eval_source && o->eval_source->d_act != d_want)
        return saefw_errf(err, errlen, "train: eval_source has width %lld, but the SAE expects d_in = %lld",
                          (long long)(o->eval_source->d_act - data_src->d_target), (long long)sae->d_in);
    if (o->optimizer.plugin->p.kind != SAEFW_KIND_OPTIMIZER)
        return saefw_errf(err, errlen, "train: plugin %s is a %s, not an optimizer", o->optimizer.plugin->p.name,
                          saefw_plugin_kind_name(o->optimizer.plugin->p.kind));
    if (o->steps <= 0)
        return saefw_errf(err, errlen, "train: the number of steps must be positive (num_tokens >= batch_size)");
    if (o->freq_batches > SAEFW_MAX_EVAL_BATCHES)
        return saefw_errf(err, errlen, "train: freq_batches = %lld is more than %d", (long long)o->freq_batches,
                          SAEFW_MAX_EVAL_BATCHES);
    if (!(o->clip_grad_norm >= 0) || isinf(o->clip_grad_norm))
        return saefw_errf(err, errlen, "train: clip_grad_norm must be a finite number > 0 (0: no clipping), got %g",
                          o->clip_grad_norm);

    double mem_estimate = 0;
    if (!o->no_memory_check && saefw_train_memory_check(o, o->progress != 0, &mem_estimate, err, errlen) != 0)
        return -1;
    saefw_run *run = saefw_calloc(1, sizeof *run, err, errlen);
    if (!run) return -1;
    run->o = o;
    run->sae = sae;
    run->buf = buf;
    run->lock_fd = -1;
    run->mem_estimate = mem_estimate;
    run->res.stop = SAEFW_STOP_ERROR; /* until the run ends otherwise */
    run->eval_src = o->eval_source ? o->eval_source : buf->src;
    /* The engine owns the learning rate; by default it starts at the optimizer's own "lr" option. */
    run->lr = o->lr > 0 ? o->lr : o->optimizer.opts ? saefw_opts_number(o->optimizer.opts, "lr") : 0.0;
    saefw_rng_seed(&run->rng, o->seed ^ 0x706c7567696e73ULL);
    const int64_t B = buf ? buf->batch : o->batch_size, d = sae->d_in;
    run->B = B;
    run->rank = saefw_dist_rank();
    run->ranks = saefw_dist_size();
    saefw_dist_share(B, &run->row0, &run->rows);
    /* A buffer that holds this rank's share hands out only its rows of each batch. */
    run->sharded = buf && buf->take != B;
    if (run->sharded) run->row0 = 0;
    int rc = -1;
    if (B < run->ranks) {
        saefw_errf(err, errlen, "train: batch_size %lld is smaller than the %d ranks (each rank needs a row)",
                   (long long)B, run->ranks);
        goto fail;
    }
    if (run->ranks > 1 && sae->arch.arch == SAEFW_ARCH_BATCHTOPK) {
        /* Its selection is over the whole batch. The others select per row, their gradients' means are
         * over norm_rows, and AuxK's fired flags are the ranks' maximum (fired_exchange). */
        saefw_errf(err, errlen,
                   "train: data-parallel training serves relu, topk, jumprelu and gated SAEs; run arch = \"%s\" on "
                   "one rank",
                   saefw_sae_arch_name(sae->arch.arch));
        goto fail;
    }
    if (run->ranks > 1 && saefw_dist_check_same(config_hash(run), "configuration", err, errlen) != 0) goto fail;
    if (saefw_train_zero_setup(run, err, errlen) != 0) goto fail;

    /* The scratch holds the whole batch's rows on every rank, so that evaluations (whose pieces follow
     * the step's capacity) are the same for any rank count. */
    if (saefw_sae_step_alloc(&run->work, sae, B, err, errlen) != 0) goto fail;
    if (run->ranks > 1) {
        saefw_sae_step_set_norm_rows(run->work, B);
        saefw_sae_step_set_fired_exchange(run->work, fired_exchange, NULL);
    }
    run->batch = saefw_malloc(sizeof(float) * (size_t)(B * d), err, errlen);
    if (run->batch && sae->transcoder) {
        run->batch_xy = saefw_malloc(sizeof(float) * (size_t)(B * (d + sae->d_out)), err, errlen);
        run->batch_y = run->batch_xy ? saefw_malloc(sizeof(float) * (size_t)(B * sae->d_out), err, errlen) : NULL;
        if (!run->batch_y) goto fail;
    }
    run->feat_counts = run->batch ? saefw_malloc(sizeof(int64_t) * (size_t)sae->d_sae, err, errlen) : NULL;
    run->counts_step = -1;
    run->plug_self = run->feat_counts ? saefw_calloc((size_t)(o->n_plugins + 1), sizeof(void *), err, errlen) : NULL;
    if (!run->plug_self) goto fail;
    crash_handlers(run, run->old_fault, &run->old_ss);
    run->handlers_set = 1;

    const char *resume_from = o->resume_from;
    char found[PATH_MAX];
    if (o->run_dir && run->rank == 0) {
        /* The lock is held from here to the end of the run: a second writer is refused. */
        if (saefw_rundir_open(o->run_dir, o->resume || o->resume_from, &run->lock_fd, found, sizeof found, log_line,
                              err, errlen) != 0)
            goto fail;
        if (!resume_from && found[0]) resume_from = found;
        char mp[PATH_MAX];
        snprintf(mp, sizeof mp, "%s/metrics.jsonl", o->run_dir);
        FILE *mf = fopen(mp, resume_from ? "r+" : "w"); /* a resumed run keeps its lines up to the checkpoint */
        if (!mf && errno == ENOENT) {
            saefw_errf(err, errlen,
                       "%s is missing: the run's record cannot be continued (put it back to resume; "
                       "nothing was changed)",
                       mp);
            goto fail;
        }
        if (!mf) {
            saefw_errf(err, errlen, "%s: cannot open: %s", mp, strerror(errno));
            goto fail;
        }
        run->metrics = mf;
        if (fseek(mf, 0, SEEK_END) != 0) {
            saefw_errf(err, errlen, "%s: cannot open: %s", mp, strerror(errno));
            goto fail;
        }
    }

    /* Rank 0 alone owns the run folder; the others resume from the checkpoint it found (the folder must
     * be on a file system every rank sees). */
    if (run->ranks > 1) {
        if (!resume_from) found[0] = 0;
        else if (resume_from != found) snprintf(found, sizeof found, "%s", resume_from);
        if (saefw_dist_bcast(found, sizeof found, 0, err, errlen) != 0) goto fail;
        resume_from = found[0] ? found : NULL;
    }

    /* Instances: the optimizer first, then the hooks in the order given. */
    {
        const saefw_plugin *op = &o->optimizer.plugin->p;
        char perr[512] = "";
        run->current = op->name;
        run->callback = "create";
        run->opt_self = o->optimizer.self;
        if (op->create &&
            op->create(saefw_host_table(), run, o->optimizer.opts, &run->opt_self, perr, sizeof perr) != 0) {
            saefw_errf(err, errlen, "plugin %s: %s", op->name,
                       saefw_train_plugin_msg(perr, sizeof perr, "create failed"));
            goto fail;
        }
        run->opt_created = 1;
        for (int i = 0; i < o->n_plugins; i++) {
            const saefw_plugin *p = &o->plugins[i].plugin->p;
            run->current = p->name;
            run->plug_self[i] = o->plugins[i].self;
            if (p->create &&
                p->create(saefw_host_table(), run, o->plugins[i].opts, &run->plug_self[i], perr, sizeof perr) != 0) {
                saefw_errf(err, errlen, "plugin %s: %s", p->name,
                           saefw_train_plugin_msg(perr, sizeof perr, "create failed"));
                goto fail;
            }
            run->n_created = i + 1;
        }
        run->current = NULL;
    }

    int64_t start = 0;
    if (resume_from) {
        if (o->progress != 0 && run->rank == 0) fprintf(stderr, "resuming from %s\n", resume_from);
        start = saefw_train_read_state(run, resume_from, err, errlen);
        if (start < 0) goto fail;
        run->res.resumed_at = start;
        run->res.steps_done = start;
        run->ckpt_next = start;
        snprintf(run->resume_dir, sizeof run->resume_dir, "%s", resume_from);
        run->ckpt_path = run->resume_dir;
        if (o->progress != 0 && run->rank == 0)
            fprintf(stderr, "resumed at step %lld of %lld\n", (long long)start, (long long)o->steps);
    }
    run->next = start;

    saefw_stop_begin(&run->stop_scope);
    run->signals_set = 1;
    /* Ranks must stop after the same step: a signal waits for the step's agreement (global_stats). */
    if (run->ranks > 1) saefw_stop_defer(1);

    run->tty = o->progress < 0 && !o->label && run->rank == 0 && isatty(STDERR_FILENO);
    run->plain = o->progress < 0 && run->rank == 0 && !run->tty;
    run->t0 = saefw_now();
    run->tokens0 = run->tokens;
    run->m.steps = o->steps;
    *out = run;
    return 0;

fail:
    trainer_free(run, &rc, err, errlen);
    return -1;
}

/* One step's body; -1 with err on a failure, 1 when the step ran, 0 when an interrupted eval ended it. */
static int step_once(saefw_run *run, char *err, size_t errlen) {
    const saefw_train_opts *o = run->o;
    saefw_sae *sae = run->sae;
    saefw_metrics *m = &run->m;
    const int64_t i = run->next, B = run->B;
    run->step = i;
    run->n_extra = 0;
    if (call_hooks(run, offsetof(saefw_plugin, before_step), err, errlen) != 0) return -1;
    const double tb = saefw_now(), fills = run->buf ? run->buf->fill_seconds + run->buf->refill_seconds : 0;
    float *const into = run->batch_xy ? run->batch_xy : run->batch;
    int got = run->buf ? saefw_buffer_next(run->buf, into, err, errlen)
                       : o->next_batch(o->next_batch_ud, into, B, err, errlen);
    const double ts = saefw_now(), plug0 = run->time.plugins;
    const double refill = run->buf ? run->buf->fill_seconds + run->buf->refill_seconds - fills : 0;
    run->time.refill += refill;
    run->time.batch += ts - tb - refill;
    if (got != 0 && run->buf && saefw_stop_requested()) return 0; /* a refill left due: the steps done are saved */
    if (got != 0) return -1;
    if (run->batch_xy) {
        /* A transcoder's rows [x | y] apart: plugins see the input rows as the batch. */
        const int64_t di = sae->d_in, dout = sae->d_out;
        for (int64_t r = 0; r < (run->sharded ? run->rows : B); r++) {
            memcpy(run->batch + r * di, run->batch_xy + r * (di + dout), sizeof(float) * (size_t)di);
            memcpy(run->batch_y + r * dout, run->batch_xy + r * (di + dout) + di, sizeof(float) * (size_t)dout);
        }
    }
    saefw_sae_stats st;
    saefw_sae_train_step_xy(sae, run->work, run->batch + run->row0 * sae->d_in,
                            run->batch_y ? run->batch_y + run->row0 * sae->d_out : NULL, run->rows, &st);
    if (run->ranks > 1) {
        const double tc = saefw_now();
        if (saefw_train_zero_grad_sum(run, err, errlen) != 0 ||
            global_stats(run, run->batch_y ? run->batch_y + run->row0 * sae->d_out : run->batch + run->row0 * sae->d_in,
                         run->batch_y ? sae->d_out : sae->d_in, &st, err, errlen) != 0)
            return -1;
        run->comm_s += saefw_now() - tc;
    }
    if (!isfinite(st.loss))
        return saefw_errf(err, errlen, "step %lld: the loss is %s; training stopped (last good checkpoint: %s)",
                          (long long)i, isnan(st.loss) ? "NaN" : "infinite",
                          run->res.last_checkpoint[0] ? run->res.last_checkpoint : "none yet");
    if (!o->free_decoder) {
        if (run->zero) saefw_train_zero_project(run); /* the rows this rank updates; the rest arrive after */
        else saefw_sae_project_decoder(sae);
    }
    if (o->clip_grad_norm > 0) {
        /* After the projection, as torch users clip right before the step; before the hooks, so that
         * they see the gradients the optimizer gets (a projection there can only shrink the norm). */
        double norm, coef;
        saefw_clip_grad_norm(sae->grads, (int64_t)sae->n_total, o->clip_grad_norm, &norm, &coef);
        saefw_host_table()->metric(run, "grad_norm", norm);
        saefw_host_table()->metric(run, "clip_coef", coef);
    }
    saefw_fault_point("step");
    run->batch_rows = run->rows;
    if (call_hooks(run, offsetof(saefw_plugin, after_backward), err, errlen) != 0) return -1;
    {
        const saefw_plugin *op = &o->optimizer.plugin->p;
        char perr[512] = "";
        run->current = op->name;
        run->callback = "step";
        int src = op->step(run->opt_self, run, perr, sizeof perr);
        run->current = NULL;
        if (src != 0)
            return saefw_errf(err, errlen, "plugin %s: %s", op->name,
                              saefw_train_plugin_msg(perr, sizeof perr, "step failed"));
        if (run->zero && run->ranks > 1) {
            const double tc = saefw_now();
            if (saefw_train_zero_gather_params(run, err, errlen) != 0) return -1;
            run->comm_s += saefw_now() - tc;
        }
    }
    if (call_hooks(run, offsetof(saefw_plugin, after_step), err, errlen) != 0) return -1;
    run->time.step += saefw_now() - ts - (run->time.plugins - plug0);
    if (run->metric_error[0]) return saefw_errf(err, errlen, "%s", run->metric_error);
    run->batch_rows = 0; /* evaluation below reuses the scratch space */
    run->tokens += B;

    double now = saefw_now();
    m->step = i;
    m->tokens = run->tokens;
    m->loss = st.loss;
    m->l2 = st.l2;
    m->l1 = st.l1;
    m->l0 = st.l0;
    m->explained_variance = st.explained_variance;
    m->elapsed_s = run->elapsed_before + (now - run->t0);
    m->tokens_per_s = now > run->t0 ? (double)(run->tokens - run->tokens0) / (now - run->t0) : 0;
    m->has_eval = 0;
    run->res.steps_done = i + 1;

    if (o->log_every > 0 && i % o->log_every == 0) {
        if (saefw_train_emit(run, SAEFW_EVENT_LOG, m, err, errlen) != 0) return -1;
        if (run->plain) {
            label_prefix(run);
            saefw_train_progress_line(m, 0);
        }
    }
    if (run->tty && (now - run->last_draw > 0.2 || i + 1 == o->steps)) {
        saefw_train_progress_line(m, 1);
        run->last_draw = now;
    }
    if (o->eval_every > 0 && i % o->eval_every == 0) {
        if (run_eval(run, m, err, errlen) != 0)
            return saefw_stop_requested() ? 0 : -1; /* interrupted: the steps done are saved at close */
        if (call_hooks(run, offsetof(saefw_plugin, on_eval), err, errlen) != 0) return -1;
        if (saefw_train_emit(run, SAEFW_EVENT_EVAL, m, err, errlen) != 0) return -1;
        if (run->tty) fputs("\r\033[K", stderr);
        if (o->progress != 0 && run->rank == 0) {
            label_prefix(run);
            saefw_train_eval_line(run, m);
        }
    }
    if (o->checkpoint_every > 0 && (i + 1) % o->checkpoint_every == 0 && i + 1 < o->steps)
        if (saefw_train_save_checkpoint(run, NULL, m, i + 1, 1, &run->res, err, errlen) != 0) return -1;
    return 1;
}

static int trainer_step(saefw_trainer *run, int anyway, char *err, size_t errlen) {
    if (run->failed) return saefw_errf(err, errlen, "train: a step failed before; the run can only be closed");
    if (run->next >= run->o->steps || (saefw_stop_requested() && !anyway) || run->stopped_by) return 0;
    g_crash_run = run; /* a crash names the trainer that was stepping */
    int rc = step_once(run, err, errlen);
    if (rc < 0) run->failed = 1;
    else if (rc == 0) run->next = run->o->steps; /* stopped by a signal */
    else run->next++;
    return rc;
}

int saefw_trainer_step(saefw_trainer *run, char *err, size_t errlen) { return trainer_step(run, 0, err, errlen); }

int saefw_trainer_step_anyway(saefw_trainer *run, char *err, size_t errlen) {
    return trainer_step(run, 1, err, errlen);
}

int64_t saefw_trainer_next_step(const saefw_trainer *run) { return run->next; }

/* The run's end: a checkpoint to resume from after a signal, else the final evaluation, on_end hooks,
 * the final checkpoint and the end event. */
static int finish(saefw_run *run, char *err, size_t errlen) {
    const saefw_train_opts *o = run->o;
    saefw_train_result *res = &run->res;
    saefw_metrics *m = &run->m;
    if (run->tty) fputc('\n', stderr);

    if (saefw_stop_requested()) {
    interrupted:
        res->interrupted = saefw_stop_requested();
        res->stop = SAEFW_STOP_SIGNAL;
        char cerr[512] = "";
        const char *sig = saefw_stop_requested() == SIGINT ? "SIGINT" : "SIGTERM";
        int saved = saefw_train_save_checkpoint(run, NULL, m, res->steps_done, 1, res, cerr, sizeof cerr) == 0;
        /* The record ends saying why; a resume cuts the file back to its checkpoint, this line included. */
        FILE *mf = run->metrics;
        if (mf && (fprintf(mf, "{\"event\":\"interrupted\",\"step\":%lld,\"signal\":\"%s\",\"checkpoint_saved\":%s}\n",
                           (long long)res->steps_done, sig, saved && o->run_dir ? "true" : "false") < 0 ||
                   fflush(mf) != 0))
            fprintf(stderr, "warning: metrics.jsonl: cannot record the interruption: %s\n", strerror(errno));
        if (!saved)
            saefw_errf(err, errlen, "interrupted by %s at step %lld; saving a checkpoint failed: %s", sig,
                       (long long)res->steps_done, cerr);
        else
            saefw_errf(err, errlen, "interrupted by %s after %lld steps; checkpoint saved to %s", sig,
                       (long long)res->steps_done, o->run_dir ? res->last_checkpoint : "(no run folder)");
        return -1;
    }

    if (run->stopped_by)
        fprintf(stderr,
                "the on_%s callback stopped the run after step %lld of %lld; finishing it there (final "
                "evaluation, checkpoint and end event)\n",
                run->stopped_by, (long long)m->step, (long long)o->steps);
    res->stopped_by = run->stopped_by;

    if (run_eval(run, m, err, errlen) != 0) {
        if (saefw_stop_requested()) goto interrupted; /* a checkpoint of the last step, to finish with --resume */
        return -1;
    }
    if (call_hooks(run, offsetof(saefw_plugin, on_end), err, errlen) != 0) return -1;
    /* Rank 0 writes the weights of all: they must be every rank's (a plugin that chose differently on
     * some rank would otherwise go unseen). */
    if (run->ranks > 1 &&
        saefw_dist_check_same(saefw_fnv1a(SAEFW_FNV_OFFSET, run->sae->params, sizeof(float) * run->sae->n_total),
                              "final weights", err, errlen) != 0)
        return -1;
    if (saefw_train_save_checkpoint(run, "final", m, o->steps, 0, res, err, errlen) != 0) return -1;
    if (saefw_train_emit(run, SAEFW_EVENT_END, m, err, errlen) != 0) return -1;
    res->last = *m;
    res->stop = run->stopped_by ? SAEFW_STOP_CALLBACK : SAEFW_STOP_DONE;
    if (o->progress != 0 && run->rank == 0) {
        char line[512];
        saefw_time_split_format(&m->time, line, sizeof line);
        label_prefix(run);
        fprintf(stderr, "%s\n", line);
        if (run->ranks > 1)
            fprintf(stderr,
                    "ranks: %d; summing gradients and statistics across them took %.1f s (%.1f %% of the SAE step)\n",
                    run->ranks, run->comm_s, m->time.step > 0 ? 100.0 * run->comm_s / m->time.step : 0.0);
    }
    if (o->progress != 0 && run->rank == 0 && saefw_mem_peak() > 0 && !o->no_memory_check) {
        char pk[32], es[32];
        fprintf(stderr, "memory: peak resident %s, estimated %s\n",
                saefw_mem_fmt((double)saefw_mem_peak(), pk, sizeof pk),
                saefw_mem_fmt(run->mem_estimate, es, sizeof es));
    }
    return 0;
}

int saefw_trainer_close(saefw_trainer *run, saefw_train_result *res, char *err, size_t errlen) {
    int rc = run->failed ? -1 : finish(run, err, errlen);
    if (res) *res = run->res;
    trainer_free(run, &rc, err, errlen);
    return rc;
}

int saefw_train(const saefw_train_opts *o, saefw_train_result *res, char *err, size_t errlen) {
    memset(res, 0, sizeof *res);
    res->stop = SAEFW_STOP_ERROR; /* until the run ends otherwise */
    saefw_trainer *t;
    if (saefw_trainer_open(o, &t, err, errlen) != 0) return -1;
    int rc;
    while ((rc = saefw_trainer_step(t, err, errlen)) > 0) {}
    if (rc < 0) {
        saefw_trainer_close(t, res, err, errlen);
        return -1;
    }
    return saefw_trainer_close(t, res, err, errlen);
}
