/* The training state of a run's checkpoints: everything a resume restores beyond the weights (counters,
 * generators, buffer and sources, plugin states, the recorded configuration), and checkpoint folders. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "dist.h"
#include "eval.h"
#include "rundir.h"
#include "state.h"
#include "train_internal.h"
#include "util.h"

/* The fields of saefw_time_split, all doubles, saved with the training state as one array. */
#define TIME_PARTS ((int64_t)(sizeof(saefw_time_split) / sizeof(double)))

static cJSON *checkpoint_cfg(const saefw_run *run, const saefw_metrics *m) {
    const saefw_train_opts *o = run->o;
    cJSON *c = o->cfg ? cJSON_Duplicate(o->cfg, 1) : cJSON_CreateObject();
    if (!c) return NULL;
    cJSON_DeleteItemFromObject(c, "step");
    cJSON_DeleteItemFromObject(c, "tokens_seen");
    cJSON_DeleteItemFromObject(c, "final_metrics");
    cJSON_DeleteItemFromObject(c, "config_changes");
    /* What a resume changed, so that the values above are not taken for those of every step. */
    if (run->changes && cJSON_GetArraySize(run->changes) > 0)
        cJSON_AddItemToObject(c, "config_changes", cJSON_Duplicate(run->changes, 1));
    cJSON_AddNumberToObject(c, "step", (double)m->step);
    cJSON_AddNumberToObject(c, "tokens_seen", (double)m->tokens);
    cJSON *fm = cJSON_AddObjectToObject(c, "final_metrics");
    if (fm) {
        if (isfinite(m->loss)) cJSON_AddNumberToObject(fm, "loss", m->loss);
        if (isfinite(m->l2)) cJSON_AddNumberToObject(fm, "l2_loss", m->l2);
        if (isfinite(m->l1)) cJSON_AddNumberToObject(fm, "l1_loss", m->l1);
        if (isfinite(m->l0)) cJSON_AddNumberToObject(fm, "l0", m->l0);
        if (isfinite(m->explained_variance)) cJSON_AddNumberToObject(fm, "explained_variance", m->explained_variance);
        if (m->has_eval) {
            cJSON_AddNumberToObject(fm, "dead", m->frac_dead);
            cJSON_AddNumberToObject(fm, "below_1e-5", m->frac_below_1e5);
            for (int i = 0; i < m->n_score; i++)
                if (isfinite(m->score_value[i])) cJSON_AddNumberToObject(fm, m->score_name[i], m->score_value[i]);
        }
    }
    return c;
}

/* Every plugin of the run with its instance and its name in the training state. */
typedef struct {
    const saefw_plugin *p;
    void *self;
    char prefix[96];
} plugin_slot;

static int plugin_slots(saefw_run *run, plugin_slot *slots) {
    const saefw_train_opts *o = run->o;
    slots[0].p = &o->optimizer.plugin->p;
    slots[0].self = run->opt_self;
    snprintf(slots[0].prefix, sizeof slots[0].prefix, "optimizer.%s/", slots[0].p->name);
    for (int i = 0; i < o->n_plugins; i++) {
        slots[i + 1].p = &o->plugins[i].plugin->p;
        slots[i + 1].self = run->plug_self[i];
        snprintf(slots[i + 1].prefix, sizeof slots[i + 1].prefix, "plugin.%d.%s/", i, slots[i + 1].p->name);
    }
    return o->n_plugins + 1;
}

static int source_state(saefw_run *run, saefw_source *src, const char *prefix, saefw_state_out *out, saefw_state_in *in,
                        char *err, size_t errlen) {
    if (!src->save_state) return 0;
    if (out) {
        saefw_state_set_prefix(out, prefix);
        return src->save_state(src, out, err, errlen);
    }
    saefw_state_in_prefix(in, prefix);
    return src->load_state(src, in, err, errlen);
}

/* The SAE's state beyond its checkpoint tensors: AuxK's counters, BatchTopK's theta, and JumpReLU's
 * log_threshold exactly (the weights file holds exp of it, whose log need not give it back). */
static int sae_state(saefw_sae *sae, saefw_state_out *out, saefw_state_in *in, char *err, size_t errlen) {
    const saefw_sae_arch arch = sae->arch.arch;
    if (out) {
        saefw_state_set_prefix(out, "sae/");
        if (sae->since_fired &&
            (saefw_state_put_copy(out, "since_fired", SAEFW_DT_I64, sae->d_sae, sae->since_fired, err, errlen) != 0 ||
             saefw_state_put_f64(out, "theta", sae->theta, err, errlen) != 0))
            return -1;
        if (arch == SAEFW_ARCH_JUMPRELU && saefw_state_put_copy(out, "log_threshold", SAEFW_DT_F32, sae->d_sae,
                                                                sae->p[SAEFW_LOG_THRESHOLD], err, errlen) != 0)
            return -1;
        return 0;
    }
    saefw_state_in_prefix(in, "sae/");
    if (sae->since_fired &&
        (saefw_state_get(in, "since_fired", SAEFW_DT_I64, sae->d_sae, sae->since_fired, err, errlen) != 0 ||
         saefw_state_get_f64(in, "theta", &sae->theta, err, errlen) != 0))
        return -1;
    if (arch == SAEFW_ARCH_JUMPRELU &&
        saefw_state_get(in, "log_threshold", SAEFW_DT_F32, sae->d_sae, sae->p[SAEFW_LOG_THRESHOLD], err, errlen) != 0)
        return -1;
    return 0;
}

/* The run's configuration (and the changes accepted so far) as JSON text, for a resume to compare. */
static int put_record(saefw_run *run, saefw_state_out *st, char *err, size_t errlen) {
    cJSON *r = saefw_run_record(run->o);
    if (r) cJSON_AddItemToObject(r, "changes", run->changes ? cJSON_Duplicate(run->changes, 1) : cJSON_CreateArray());
    char *text = r ? cJSON_PrintUnformatted(r) : NULL;
    cJSON_Delete(r);
    if (!text) return saefw_errf(err, errlen, "training state: out of memory");
    int64_t n = (int64_t)strlen(text);
    int rc = saefw_state_put_i64(st, "config_bytes", n, err, errlen) == 0 &&
                     saefw_state_put_copy(st, "config", SAEFW_DT_U8, n, text, err, errlen) == 0
                 ? 0
                 : -1;
    free(text);
    return rc;
}

/* Compare the configuration recorded in a training state with this run's: differences must be named
 * in allow_change; those go into run->changes, taking effect at step `next`. */
static int check_record(saefw_run *run, saefw_state_in *st, const char *dir, int64_t next, int *n_new, char *err,
                        size_t errlen) {
    const saefw_train_opts *o = run->o;
    *n_new = 0;
    if (!saefw_state_has(st, "config")) {
        fprintf(stderr,
                "warning: %s records no configuration (an older saefw wrote it): changes to the run's "
                "configuration cannot be checked\n",
                dir);
        return 0;
    }
    int64_t n = 0;
    if (saefw_state_get_i64(st, "config_bytes", &n, err, errlen) != 0) return -1;
    if (n <= 0 || n > (64 << 20)) return saefw_errf(err, errlen, "%s: the recorded configuration has a bad size", dir);
    char *text = saefw_malloc((size_t)n + 1, err, errlen);
    if (!text) return -1;
    if (saefw_state_get(st, "config", SAEFW_DT_U8, n, text, err, errlen) != 0) {
        free(text);
        return -1;
    }
    text[n] = 0;
    cJSON *rec = cJSON_Parse(text), *cur = saefw_run_record(o);
    free(text);
    int rc = -1;
    if (!rec || !cur) {
        saefw_errf(err, errlen, "%s: the recorded configuration cannot be read", dir);
        goto out;
    }
    const cJSON *old_changes = cJSON_GetObjectItemCaseSensitive(rec, "changes");
    run->changes = cJSON_IsArray(old_changes) ? cJSON_Duplicate(old_changes, 1) : cJSON_CreateArray();
    if (!run->changes) {
        saefw_errf(err, errlen, "out of memory");
        goto out;
    }
    int before = cJSON_GetArraySize(run->changes);
    if (saefw_run_record_diff(rec, cur, o->allow_change, o->n_allow_change, next, run->changes, err, errlen) != 0) {
        saefw_err_prefix(err, errlen, "--resume from %s", dir);
        goto out;
    }
    *n_new = cJSON_GetArraySize(run->changes) - before;
    rc = 0;
out:
    cJSON_Delete(rec);
    cJSON_Delete(cur);
    return rc;
}

/* One line per configuration change accepted at this resume (the last n of run->changes). */
static int write_changes(saefw_run *run, int n, char *err, size_t errlen) {
    int total = cJSON_GetArraySize(run->changes);
    for (int i = total - n; i < total; i++) {
        const cJSON *c = cJSON_GetArrayItem(run->changes, i);
        char *from = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(c, "from"));
        char *to = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(c, "to"));
        char *key = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(c, "key"));
        long long step = (long long)cJSON_GetObjectItemCaseSensitive(c, "step")->valuedouble;
        int rc = from && to && key ? 0 : saefw_errf(err, errlen, "out of memory");
        if (rc == 0) {
            fprintf(stderr, "resume: %s changed from %s to %s at step %lld (allowed with --allow-change)\n", key, from,
                    to, step);
            if (run->metrics) {
                fprintf(run->metrics, "{\"event\":\"config_change\",\"step\":%lld,\"key\":%s,\"from\":%s,\"to\":%s}\n",
                        step, key, from, to);
                run->metrics_lines++;
                if (fflush(run->metrics) != 0 || ferror(run->metrics))
                    rc = saefw_errf(err, errlen, "metrics.jsonl: write failed: %s", strerror(errno));
            }
        }
        free(from);
        free(to);
        free(key);
        if (rc != 0) return -1;
    }
    return 0;
}

/* Everything a resumed run needs beyond the weights, as of the end of step `next - 1`. */
/* with_plugins: the plugins' states too (rank 0's file; they are the same on every rank, and under ZeRO-1
 * saving them is a collective that rank 0's save alone makes). */
static int write_train_state(saefw_run *run, const char *path, int64_t next, int with_plugins, char *err,
                             size_t errlen) {
    const saefw_train_opts *o = run->o;
    saefw_state_out st;
    saefw_state_out_init(&st);
    int rc = -1;
    long offset = 0;
    if (run->metrics) {
        if (fflush(run->metrics) != 0) {
            saefw_errf(err, errlen, "metrics.jsonl: write failed: %s", strerror(errno));
            goto out;
        }
        offset = ftell(run->metrics);
    }
    saefw_state_set_prefix(&st, "run/");
    saefw_time_split time = run->time;
    time.total = run->elapsed_before + (saefw_now() - run->t0);
    if (saefw_state_put_i64(&st, "next_step", next, err, errlen) != 0 ||
        saefw_state_put_i64(&st, "tokens", run->tokens, err, errlen) != 0 ||
        saefw_state_put_i64(&st, "metrics_bytes", offset, err, errlen) != 0 ||
        saefw_state_put_i64(&st, "metrics_lines", run->metrics_lines, err, errlen) != 0 ||
        saefw_state_put_f64(&st, "elapsed_s", run->elapsed_before + (saefw_now() - run->t0), err, errlen) != 0 ||
        saefw_state_put_rng(&st, "rng", &run->rng, err, errlen) != 0 ||
        saefw_state_put_f64(&st, "lr", run->lr, err, errlen) != 0 ||
        saefw_state_put_f64(&st, "l1_coeff", run->sae->l1_coeff, err, errlen) != 0 ||
        saefw_state_put_copy(&st, "time_split", SAEFW_DT_F64, TIME_PARTS, &time, err, errlen) != 0 ||
        put_record(run, &st, err, errlen) != 0 ||
        (run->sharded && saefw_state_put_i64(&st, "data_ranks", run->ranks, err, errlen) != 0))
        goto out;
    for (int i = 0; i < o->n_evaluators; i++)
        if (o->evaluators[i]->rng &&
            saefw_state_put_rng(&st, o->evaluators[i]->rng_name, o->evaluators[i]->rng, err, errlen) != 0)
            goto out;
    if (sae_state(run->sae, &st, NULL, err, errlen) != 0) goto out;
    if (o->buffer) {
        saefw_state_set_prefix(&st, "buffer/");
        if (saefw_buffer_save(o->buffer, &st, err, errlen) != 0) goto out;
        if (source_state(run, o->buffer->src, "source/", &st, NULL, err, errlen) != 0) goto out;
    }
    if (o->eval_source && (!o->buffer || o->eval_source != o->buffer->src) &&
        source_state(run, o->eval_source, "eval_source/", &st, NULL, err, errlen) != 0)
        goto out;
    plugin_slot slots[64];
    if (o->n_plugins + 1 > 64) {
        saefw_errf(err, errlen, "training state: too many plugins");
        goto out;
    }
    int ns = with_plugins ? plugin_slots(run, slots) : 0;
    for (int i = 0; i < ns; i++) {
        if (!slots[i].p->save_state) continue;
        saefw_state_set_prefix(&st, slots[i].prefix);
        char perr[512] = "";
        run->current = slots[i].p->name;
        run->callback = "save_state";
        int prc = slots[i].p->save_state(slots[i].self, run, (saefw_state_writer *)&st, perr, sizeof perr);
        run->current = NULL;
        if (prc != 0) {
            saefw_errf(err, errlen, "plugin %s: saving its state: %s", slots[i].p->name,
                       saefw_train_plugin_msg(perr, sizeof perr, "failed"));
            goto out;
        }
    }
    for (int i = 0; i < o->n_evaluators; i++) {
        saefw_evaluator *ev = o->evaluators[i];
        char pre[96];
        snprintf(pre, sizeof pre, "eval/%s/", ev->name);
        saefw_state_set_prefix(&st, pre);
        if (ev->save_state && ev->save_state(ev, &st, err, errlen) != 0) goto out;
    }
    rc = saefw_state_write(&st, path, err, errlen);
out:
    saefw_state_out_free(&st);
    return rc;
}

/* Restore a run from a checkpoint folder; returns the step to continue from, or -1. */
int64_t saefw_train_read_state(saefw_run *run, const char *dir, char *err, size_t errlen) {
    const saefw_train_opts *o = run->o;
    char path[PATH_MAX];
    saefw_sae saved;
    if (saefw_checkpoint_load(dir, &saved, NULL, err, errlen) != 0) return -1;
    if (saved.arch.arch != run->sae->arch.arch) {
        saefw_errf(err, errlen, "%s: the checkpoint's SAE is a %s SAE, this run's a %s SAE", dir,
                   saefw_sae_arch_name(saved.arch.arch), saefw_sae_arch_name(run->sae->arch.arch));
        saefw_sae_free(&saved);
        return -1;
    }
    if (saved.d_in != run->sae->d_in || saved.d_sae != run->sae->d_sae) {
        saefw_errf(err, errlen, "%s: the checkpoint's SAE is %lld -> %lld, this run's %lld -> %lld", dir,
                   (long long)saved.d_in, (long long)saved.d_sae, (long long)run->sae->d_in,
                   (long long)run->sae->d_sae);
        saefw_sae_free(&saved);
        return -1;
    }
    memcpy(run->sae->params, saved.params, sizeof(float) * saved.n_total);
    saefw_sae_free(&saved);

    saefw_state_in st, st0;
    int has0 = 0;
    if (saefw_pathf(path, sizeof path, err, errlen, "%s/" SAEFW_TRAIN_STATE, dir) != 0 ||
        saefw_state_open(path, &st, err, errlen) != 0)
        return -1;
    /* Each rank's buffer and data position are its own share: they resume on as many ranks, each from
     * its own state (rank 0's is the main one). */
    int64_t data_ranks = 1;
    saefw_state_in_prefix(&st, "run/");
    if (saefw_state_has(&st, "data_ranks") && saefw_state_get_i64(&st, "data_ranks", &data_ranks, err, errlen) != 0)
        goto fail;
    const int64_t ranks_now = run->sharded ? run->ranks : 1;
    if (data_ranks != ranks_now) {
        saefw_errf(err, errlen,
                   "%s: the checkpoint's data was split among %lld rank(s), this run has %lld: resume it on %lld "
                   "rank(s) (each rank's activation buffer and token position are its own)",
                   dir, (long long)data_ranks, (long long)ranks_now, (long long)data_ranks);
        goto fail;
    }
    /* The plugins' states are rank 0's (see write_train_state); the rest is this rank's own. */
    if (run->sharded && run->rank > 0) {
        st0 = st;
        has0 = 1;
        if (saefw_pathf(path, sizeof path, err, errlen, "%s/" SAEFW_TRAIN_STATE_RANK, dir, run->rank) != 0 ||
            saefw_state_open(path, &st, err, errlen) != 0) {
            saefw_state_close(&st0);
            return -1;
        }
    }
    saefw_state_in *pst = has0 ? &st0 : &st;
    int64_t next = -1, tokens = 0, offset = 0, lines = -1;
    double elapsed = 0;
    int n_changes = 0;
    saefw_state_in_prefix(&st, "run/");
    if (saefw_state_get_i64(&st, "next_step", &next, err, errlen) != 0 ||
        saefw_state_get_i64(&st, "tokens", &tokens, err, errlen) != 0 ||
        saefw_state_get_i64(&st, "metrics_bytes", &offset, err, errlen) != 0 ||
        (saefw_state_has(&st, "metrics_lines") &&
         saefw_state_get_i64(&st, "metrics_lines", &lines, err, errlen) != 0) ||
        saefw_state_get_f64(&st, "elapsed_s", &elapsed, err, errlen) != 0 ||
        saefw_state_get_rng(&st, "rng", &run->rng, err, errlen) != 0)
        goto fail;
    /* Before anything is restored: metrics.jsonl must still hold the lines up to the checkpoint (it is
     * cut back to them below, never padded), and the configuration must be the recorded one. */
    if (run->metrics && o->run_dir) {
        char mp[PATH_MAX];
        snprintf(mp, sizeof mp, "%s/metrics.jsonl", o->run_dir);
        if (saefw_rundir_check_metrics(run->metrics, mp, offset, lines, err, errlen) != 0) goto fail;
    }
    if (check_record(run, &st, dir, next, &n_changes, err, errlen) != 0) goto fail;
    /* Schedules may have moved them; states written before ABI 2 lack them (the run's values stand). */
    double l1 = run->sae->l1_coeff;
    if ((saefw_state_has(&st, "lr") && saefw_state_get_f64(&st, "lr", &run->lr, err, errlen) != 0) ||
        (saefw_state_has(&st, "l1_coeff") && saefw_state_get_f64(&st, "l1_coeff", &l1, err, errlen) != 0))
        goto fail;
    run->sae->l1_coeff = (float)l1;
    if (saefw_state_has(&st, "time_split") &&
        saefw_state_get(&st, "time_split", SAEFW_DT_F64, TIME_PARTS, &run->time, err, errlen) != 0)
        goto fail;
    for (int i = 0; i < o->n_evaluators; i++)
        if (o->evaluators[i]->rng &&
            saefw_state_get_rng(&st, o->evaluators[i]->rng_name, o->evaluators[i]->rng, err, errlen) != 0)
            goto fail;
    if (sae_state(run->sae, NULL, &st, err, errlen) != 0) goto fail;
    if (o->buffer) {
        saefw_state_in_prefix(&st, "buffer/");
        if (saefw_buffer_load(o->buffer, &st, err, errlen) != 0) goto fail;
        if (source_state(run, o->buffer->src, "source/", NULL, &st, err, errlen) != 0) goto fail;
    }
    if (o->eval_source && (!o->buffer || o->eval_source != o->buffer->src) &&
        source_state(run, o->eval_source, "eval_source/", NULL, &st, err, errlen) != 0)
        goto fail;
    plugin_slot slots[64];
    if (o->n_plugins + 1 > 64) {
        saefw_errf(err, errlen, "training state: too many plugins");
        goto fail;
    }
    int ns = plugin_slots(run, slots);
    for (int i = 0; i < ns; i++) {
        const saefw_plugin *p = slots[i].p;
        if (!p->load_state) {
            if (!p->stateless) {
                char msg[256];
                snprintf(msg, sizeof msg,
                         "plugin %s saves no state: the resumed run may differ from an uninterrupted one", p->name);
                saefw_train_host_log(run, SAEFW_LOG_WARN, msg);
            }
            continue;
        }
        saefw_state_in_prefix(pst, slots[i].prefix);
        char perr[512] = "";
        run->current = p->name;
        run->callback = "load_state";
        int prc = p->load_state(slots[i].self, run, (saefw_state_reader *)pst, perr, sizeof perr);
        run->current = NULL;
        if (prc != 0) {
            saefw_errf(err, errlen, "plugin %s: restoring its state from %s: %s", p->name, path,
                       saefw_train_plugin_msg(perr, sizeof perr, "failed"));
            goto fail;
        }
    }
    for (int i = 0; i < o->n_evaluators; i++) {
        saefw_evaluator *ev = o->evaluators[i];
        char pre[96], eerr[512] = "";
        snprintf(pre, sizeof pre, "eval/%s/", ev->name);
        saefw_state_in_prefix(&st, pre);
        if (ev->load_state && ev->load_state(ev, &st, eerr, sizeof eerr) != 0) {
            saefw_errf(err, errlen, "evaluator %s: restoring its state from %s: %s", ev->name, path, eerr);
            goto fail;
        }
    }
    saefw_state_close(&st);
    if (has0) saefw_state_close(&st0);
    if (next < 0 || next > o->steps) {
        saefw_errf(err, errlen, "%s: the checkpoint is at step %lld, past this run's %lld steps", dir, (long long)next,
                   (long long)o->steps);
        return -1;
    }
    /* Lines written after the checkpoint belong to steps that will run again. */
    if (run->metrics) {
        if (fflush(run->metrics) != 0 || ftruncate(fileno(run->metrics), (off_t)offset) != 0 ||
            fseek(run->metrics, 0, SEEK_END) != 0)
            return saefw_errf(err, errlen, "metrics.jsonl: cannot cut back to the checkpoint: %s", strerror(errno));
        run->metrics_lines = lines;
    }
    if (write_changes(run, n_changes, err, errlen) != 0) return -1;
    run->tokens = tokens;
    run->elapsed_before = elapsed;
    return next;
fail:
    saefw_state_close(&st);
    if (has0) saefw_state_close(&st0);
    return -1;
}

typedef struct {
    saefw_run *run;
    int64_t next;
    int with_state, sparsity;
    int ranks_told; /* rank 0 has sent the other ranks the folder for their states */
} state_writer_ud;

/* Data parallel with each rank's own data: the other ranks' training states go into the checkpoint
 * folder rank 0 is writing (on a file system every rank sees) before it is renamed into place. Rank
 * 0 sends the folder's temporary name (an empty one when it failed before), each rank writes its
 * state there, and all agree on whether every rank succeeded. */
static int rank_states(saefw_run *run, const char *tmp_dir, int64_t next, char *err, size_t errlen) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", run->rank == 0 ? tmp_dir : "");
    if (saefw_dist_bcast(dir, sizeof dir, 0, err, errlen) != 0) return -1;
    if (!dir[0]) return 0;
    char path[PATH_MAX], werr[512] = "";
    int failed = 0;
    if (run->rank > 0)
        failed = saefw_pathf(path, sizeof path, werr, sizeof werr, "%s/" SAEFW_TRAIN_STATE_RANK, dir, run->rank) != 0 ||
                 write_train_state(run, path, next, 0, werr, sizeof werr) != 0;
    if (failed) fprintf(stderr, "rank %d: checkpoint: %s\n", run->rank, werr);
    double any = failed;
    if (saefw_dist_sum_f64(&any, 1, err, errlen) != 0) return -1;
    if (any > 0)
        return saefw_errf(err, errlen, "checkpoint: %s",
                          failed ? werr : "another rank could not write its training state (its message is above)");
    return 0;
}

/* The checkpoint's files beside the weights: sparsity.safetensors (final), the training state. */
static int add_files(void *vud, const char *tmp_dir, char *err, size_t errlen) {
    state_writer_ud *ud = vud;
    if (ud->sparsity && saefw_checkpoint_write_sparsity(tmp_dir, ud->run->freq, ud->run->sae->d_sae, err, errlen) != 0)
        return -1;
    if (!ud->with_state) return 0;
    saefw_fault_point("checkpoint");
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/" SAEFW_TRAIN_STATE, tmp_dir);
    if (write_train_state(ud->run, path, ud->next, 1, err, errlen) != 0) return -1;
    if (!ud->run->sharded) return 0;
    ud->ranks_told = 1;
    return rank_states(ud->run, tmp_dir, ud->next, err, errlen);
}

/* A checkpoint folder; with_state adds the training state as of the start of step `next`. */
int saefw_train_save_checkpoint(saefw_run *run, const char *name, const saefw_metrics *m, int64_t next, int with_state,
                                saefw_train_result *res, char *err, size_t errlen) {
    const saefw_train_opts *o = run->o;
    /* Every rank holds the same weights and optimizer state: rank 0 writes the checkpoint. Under ZeRO-1
     * the optimizer's state is in slices, which the others send it; then each rank's own share of the
     * data has its state written into the same folder (rank_states). */
    if (!o->run_dir) return 0;
    if (run->rank != 0) {
        if (!with_state) return 0;
        if (run->zero && saefw_train_zero_save_shadow(run, err, errlen) != 0) return -1;
        return run->sharded ? rank_states(run, NULL, next, err, errlen) : 0;
    }
    char dir[PATH_MAX];
    if ((name ? saefw_pathf(dir, sizeof dir, err, errlen, "%s/%s", o->run_dir, name)
              : saefw_pathf(dir, sizeof dir, err, errlen, "%s/%d", o->run_dir,
                            saefw_checkpoint_next_version(o->run_dir))) != 0)
        return -1;
    const double t0 = saefw_now();
    cJSON *cfg = checkpoint_cfg(run, m);
    if (!cfg) return saefw_errf(err, errlen, "%s: out of memory", dir);
    /* The final checkpoint comes right after an eval: its frequencies are the final SAE's. */
    state_writer_ud ud = {run, next, with_state, name && run->freq, 0};
    int rc =
        saefw_checkpoint_save_ex(dir, run->sae, cfg, with_state || ud.sparsity ? add_files : NULL, &ud, err, errlen);
    cJSON_Delete(cfg);
    /* Failed before the other ranks were told where to write: they wait to hear that there is nowhere. */
    if (with_state && run->sharded && !ud.ranks_told) {
        char derr[256];
        if (rank_states(run, "", next, derr, sizeof derr) != 0 && rc == 0) rc = saefw_errf(err, errlen, "%s", derr);
    }
    if (rc == 0) {
        snprintf(res->last_checkpoint, sizeof res->last_checkpoint, "%s", dir);
        /* Training states hold the whole buffer: keep the newest two. */
        if (with_state) {
            saefw_checkpoint_prune_states(o->run_dir, 2);
            run->ckpt_next = next;
            run->ckpt_path = res->last_checkpoint;
        }
    }
    run->time.checkpoint += saefw_now() - t0;
    return rc;
}
