/* The training loop of the seed recipe, the plugin host table, progress display and metrics.jsonl. */
#include "train.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "memory.h"
#include "rundir.h"
#include "eval.h"
#include "state.h"
#include "parallel.h"
#include "tensorfile.h"
#include "util.h"

struct saefw_run {
    const saefw_train_opts *o;
    saefw_sae *sae;
    saefw_sae_work work;
    saefw_sae_work sample_work; /* for sample_activations, allocated on first use */
    saefw_source *eval_src;
    float *batch;     /* [batch, d_in] */
    int64_t batch_rows; /* rows of batch and work.acts valid for plugins (0 outside a step) */
    int64_t *feat_counts; /* [d_sae]: batch_feature_counts, made on the first request of a step */
    int64_t counts_step;  /* the step they were made for, or -1 */
    float *freq;          /* [d_sae]: the latest eval's feature frequencies, for sparsity.safetensors */
    saefw_rng rng;
    int64_t step, tokens;
    double lr; /* the learning rate the optimizer applies (host learning_rate / set_learning_rate) */
    void *opt_self;
    void **plug_self;
    const char *current; /* name of the plugin whose callback runs */
    const char *callback; /* and that callback's name, for the crash report */
    int64_t ckpt_next;    /* the step the last checkpoint resumes at (0: none yet) */
    const char *ckpt_path; /* that checkpoint's folder, or NULL */
    int n_extra;
    char extra_name[SAEFW_MAX_EXTRA_METRICS][48];
    double extra_value[SAEFW_MAX_EXTRA_METRICS];
    FILE *metrics;    /* metrics.jsonl, or NULL */
    int64_t metrics_lines; /* lines in metrics.jsonl */
    cJSON *changes;   /* configuration changes accepted at resumes: [{step, key, from, to}] */
    const char *stopped_by; /* the event whose callback asked the run to end after this step */
    char metric_error[256]; /* a metric that could not be recorded (the run stops with this) */
    double t0;        /* when this process started training */
    double elapsed_before; /* seconds spent before a resume, for the reported rate */
    saefw_time_split time; /* where the run's wall time went (m.time at events) */
};

/* The fields of saefw_time_split, all doubles, saved with the training state as one array. */
#define TIME_PARTS ((int64_t)(sizeof(saefw_time_split) / sizeof(double)))

/* ---- host table ---- */

static void host_log(saefw_run *run, int level, const char *msg) {
    const char *lv = level >= SAEFW_LOG_WARN ? "warning: " : "";
    if (level == SAEFW_LOG_DEBUG && !getenv("SAEFW_DEBUG")) return;
    fprintf(stderr, "[%s] %s%s\n", run && run->current ? run->current : "plugin", lv, msg);
}

static double host_opt_number(const saefw_opts *o, const char *name) { return saefw_opts_number(o, name); }
static const char *host_opt_string(const saefw_opts *o, const char *name) { return saefw_opts_string(o, name); }
static int host_param_count(saefw_run *run) { return SAEFW_N_PARAMS; }

/* Fill a plugin's saefw_param up to the size it declares (it may come from an older or newer header). */
static int param_out(saefw_run *run, int i, saefw_param *out) {
    if (!out) return 0;
    if (out->struct_size < offsetof(saefw_param, numel) + sizeof out->numel) return -1;
    saefw_param v;
    saefw_sae_param_view(run->sae, i, &v);
    /* struct_size becomes what was filled: fields of a newer header past it are left as they were. */
    const uint32_t size = out->struct_size < sizeof v ? out->struct_size : (uint32_t)sizeof v;
    v.struct_size = size;
    memcpy(out, &v, size);
    return 0;
}

static int host_param_get(saefw_run *run, int i, saefw_param *out) {
    if (i < 0 || i >= SAEFW_N_PARAMS || !out) return -1;
    return param_out(run, i, out);
}

static int host_param_find(saefw_run *run, const char *name, saefw_param *out, int *index) {
    for (int i = 0; i < SAEFW_N_PARAMS; i++)
        if (name && strcmp(saefw_param_name(i), name) == 0) {
            if (param_out(run, i, out) != 0) return -1;
            if (index) *index = i;
            return 0;
        }
    return -1;
}

static int64_t host_d_in(saefw_run *run) { return run->sae->d_in; }
static int64_t host_d_sae(saefw_run *run) { return run->sae->d_sae; }

/* Checked here, so that every optimizer gets valid slices; one reset_state call per tensor. */
static int host_reset_opt(saefw_run *run, int param, int axis, const int64_t *idx, int64_t n, char *err,
                          size_t errlen) {
    const saefw_plugin *op = &run->o->optimizer.plugin->p;
    if (param == -1) {
        if (idx) return saefw_errf(err, errlen, "reset_optimizer_state: every tensor (-1) takes no indices");
        for (int i = 0; i < SAEFW_N_PARAMS; i++)
            if (host_reset_opt(run, i, 0, NULL, 0, err, errlen) != 0) return -1;
        return 0;
    }
    if (param < 0 || param >= SAEFW_N_PARAMS)
        return saefw_errf(err, errlen, "reset_optimizer_state: no tensor %d (there are %d)", param, SAEFW_N_PARAMS);
    saefw_param p;
    saefw_sae_param_view(run->sae, param, &p);
    if (idx) {
        if (axis < 0 || axis >= p.ndim)
            return saefw_errf(err, errlen, "reset_optimizer_state: %s has no axis %d", p.name, axis);
        for (int64_t k = 0; k < n; k++)
            if (idx[k] < 0 || idx[k] >= p.shape[axis])
                return saefw_errf(err, errlen, "reset_optimizer_state: %s: index %lld out of range along axis %d (size %lld)",
                                  p.name, (long long)idx[k], axis, (long long)p.shape[axis]);
    }
    if (!op->reset_state) return 0;
    const char *was = run->current;
    run->current = op->name;
    int rc = op->reset_state(run->opt_self, run, param, axis, idx, idx ? n : 0, err, errlen);
    run->current = was;
    return rc;
}

static uint64_t host_rng_u64(saefw_run *run) { return saefw_rng_u64(&run->rng); }
static double host_rng_uniform(saefw_run *run) { return saefw_rng_uniform(&run->rng); }
static double host_rng_normal(saefw_run *run) { return saefw_rng_normal(&run->rng); }
static int64_t host_step(saefw_run *run) { return run->step; }
static int64_t host_tokens(saefw_run *run) { return run->tokens; }
static double host_lr(saefw_run *run) { return run->lr; }

static int host_set_lr(saefw_run *run, double lr, char *err, size_t errlen) {
    if (!(lr >= 0) || !isfinite(lr)) return saefw_errf(err, errlen, "set_learning_rate: %g is not a finite number >= 0", lr);
    run->lr = lr;
    return 0;
}

static int host_loss_coeff(saefw_run *run, const char *name, double *value) {
    if (!name || strcmp(name, "l1") != 0) return -1;
    if (value) *value = run->sae->l1_coeff;
    return 0;
}

static int host_set_loss_coeff(saefw_run *run, const char *name, double value, char *err, size_t errlen) {
    if (!name || strcmp(name, "l1") != 0)
        return saefw_errf(err, errlen, "set_loss_coeff: no coefficient '%s' (this SAE has: l1)", name ? name : "(null)");
    if (!(value >= 0) || !isfinite(value))
        return saefw_errf(err, errlen, "set_loss_coeff: %s = %g is not a finite number >= 0", name, value);
    run->sae->l1_coeff = (float)value;
    return 0;
}

static void host_metric(saefw_run *run, const char *name, double value) {
    /* metric() returns nothing: a name that does not fit stops the run at its next metrics line. */
    if (!name || !*name || strlen(name) >= sizeof run->extra_name[0]) {
        if (!run->metric_error[0])
            snprintf(run->metric_error, sizeof run->metric_error, "plugin %s: metric name '%.60s%s' is %s (1 to %d "
                     "characters)", run->current ? run->current : "?", name ? name : "", name && strlen(name) > 60 ? "..." : "",
                     name && *name ? "too long" : "empty", (int)sizeof run->extra_name[0] - 1);
        return;
    }
    for (int i = 0; i < run->n_extra; i++)
        if (strcmp(run->extra_name[i], name) == 0) {
            run->extra_value[i] = value;
            return;
        }
    if (run->n_extra >= SAEFW_MAX_EXTRA_METRICS) {
        if (!run->metric_error[0])
            snprintf(run->metric_error, sizeof run->metric_error, "plugin %s: metric '%s' is one more than the %d "
                     "metrics a step can record", run->current ? run->current : "?", name, SAEFW_MAX_EXTRA_METRICS);
        return;
    }
    snprintf(run->extra_name[run->n_extra], sizeof run->extra_name[0], "%s", name);
    run->extra_value[run->n_extra++] = value;
}

static int host_sample(saefw_run *run, float *x, float *loss, int64_t n, char *err, size_t errlen) {
    const int64_t d = run->sae->d_in;
    /* Its own scratch space, made on first use, so the current batch's activations stay valid. */
    const int64_t cap = run->work.cap, piece = cap < SAEFW_EVAL_PIECE ? cap : SAEFW_EVAL_PIECE;
    if (loss && !run->sample_work.cap && saefw_sae_work_alloc(&run->sample_work, run->sae, piece, err, errlen) != 0)
        return -1;
    for (int64_t r = 0; r < n; r += cap) {
        int64_t k = n - r < cap ? n - r : cap;
        if (run->eval_src->sample(run->eval_src, x + r * d, k, err, errlen) != 0) return -1;
        for (int64_t p0 = r; loss && p0 < r + k; p0 += piece) {
            const int64_t np = r + k - p0 < piece ? r + k - p0 : piece;
            saefw_sae_forward(run->sae, &run->sample_work, x + p0 * d, np, NULL);
            if (saefw_sae_row_loss(run->sae, &run->sample_work, x + p0 * d, np, loss + p0, err, errlen) != 0) return -1;
        }
    }
    return 0;
}

int64_t saefw_eval_batch_rows(const saefw_source *src, int64_t batch) {
    return src->chunk_rows > 0 ? src->chunk_rows : batch;
}

int saefw_feature_frequencies(const saefw_sae *sae, saefw_source *src, int64_t rows, int64_t chunk, float *freq,
                              char *err, size_t errlen) {
    if (rows <= 0 || chunk <= 0) return saefw_errf(err, errlen, "feature frequencies: rows must be positive");
    if (chunk > rows) chunk = rows;
    /* Rows are drawn `chunk` at a time and run through the SAE in smaller pieces. */
    const int64_t piece = chunk < SAEFW_EVAL_PIECE ? chunk : SAEFW_EVAL_PIECE;
    saefw_sae_work w;
    if (saefw_sae_work_alloc(&w, sae, piece, err, errlen) != 0) return -1;
    float *x = saefw_malloc(sizeof(float) * (size_t)(chunk * sae->d_in), err, errlen);
    int64_t *count = x ? saefw_calloc((size_t)sae->d_sae, sizeof(int64_t), err, errlen) : NULL;
    int rc = count ? 0 : -1;
    for (int64_t done = 0; rc == 0 && done < rows; done += chunk) {
        int64_t k = rows - done < chunk ? rows - done : chunk;
        if (saefw_stop_requested() && (rc = saefw_stop_errf(err, errlen, "feature frequencies")) != 0) break;
        if (src->sample(src, x, k, err, errlen) != 0) {
            rc = -1;
            break;
        }
        for (int64_t p0 = 0; rc == 0 && p0 < k; p0 += piece) {
            const int64_t np = k - p0 < piece ? k - p0 : piece;
            saefw_sae_forward(sae, &w, x + p0 * sae->d_in, np, NULL);
            rc = saefw_sae_count_active(sae, &w, x + p0 * sae->d_in, np, count, err, errlen);
        }
    }
    if (rc == 0)
        for (int64_t j = 0; j < sae->d_sae; j++) freq[j] = (float)((double)count[j] / (double)rows);
    free(count);
    free(x);
    saefw_sae_work_free(&w);
    return rc;
}

static int host_freqs(saefw_run *run, int64_t n_batches, float *freq, char *err, size_t errlen) {
    if (n_batches <= 0) return saefw_errf(err, errlen, "feature_frequencies: n_batches must be positive");
    int64_t rows = n_batches * saefw_eval_batch_rows(run->eval_src, run->work.cap);
    return saefw_feature_frequencies(run->sae, run->eval_src, rows, run->work.cap, freq, err, errlen);
}

static const float *host_batch_inputs(saefw_run *run, int64_t *rows) {
    if (rows) *rows = run->batch_rows;
    return run->batch_rows ? run->batch : NULL;
}

/* Made on the first request of a step (the step itself keeps only the active entries). */
static const float *host_batch_acts(saefw_run *run, int64_t *rows) {
    if (rows) *rows = run->batch_rows;
    if (!run->batch_rows) return NULL;
    char err[256];
    const float *a = saefw_sae_acts(run->sae, &run->work, run->batch, run->batch_rows, err, sizeof err);
    if (!a) host_log(run, SAEFW_LOG_WARN, err);
    return a;
}

static const int64_t *host_batch_feature_counts(saefw_run *run) {
    if (!run->batch_rows) return NULL;
    if (run->counts_step == run->step) return run->feat_counts;
    memset(run->feat_counts, 0, sizeof(int64_t) * (size_t)run->sae->d_sae);
    char err[256];
    if (saefw_sae_count_active(run->sae, &run->work, run->batch, run->batch_rows, run->feat_counts, err, sizeof err) != 0) {
        host_log(run, SAEFW_LOG_WARN, err);
        return NULL;
    }
    run->counts_step = run->step;
    return run->feat_counts;
}

static void host_free_tensor(float *data) { free(data); }

static int host_read_tensor(saefw_run *run, const char *path, const char *name, float **data, int64_t *numel,
                            int *ndim, int64_t shape[SAEFW_PLUGIN_MAX_DIMS], char *err, size_t errlen) {
    *data = NULL;
    saefw_tensorfile *tf = NULL;
    if (!path || saefw_tf_open(path, &tf, err, errlen) != 0) return path ? -1 : saefw_errf(err, errlen, "no path given");
    const saefw_tensor_info *t = NULL;
    if (name) t = saefw_tf_find(tf, name);
    else if (saefw_tf_count(tf) == 1) t = saefw_tf_get(tf, 0);
    int rc = -1;
    if (!t && name) saefw_errf(err, errlen, "%s: no tensor named '%s'", path, name);
    else if (!t) saefw_errf(err, errlen, "%s: holds %d tensors; name the one to read", path, saefw_tf_count(tf));
    else if (t->ndim > SAEFW_PLUGIN_MAX_DIMS)
        saefw_errf(err, errlen, "%s: tensor %s has %d dimensions (at most %d)", path, t->name, t->ndim, SAEFW_PLUGIN_MAX_DIMS);
    else if ((*data = saefw_malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1), err, errlen)) != NULL) {
        if (saefw_tensor_to_f32(t, *data, err, errlen) != 0) {
            saefw_err_prefix(err, errlen, "%s", path);
            free(*data);
            *data = NULL;
        } else {
            if (numel) *numel = t->numel;
            if (ndim) *ndim = t->ndim;
            for (int i = 0; shape && i < SAEFW_PLUGIN_MAX_DIMS; i++) shape[i] = i < t->ndim ? t->shape[i] : 0;
            rc = 0;
        }
    }
    saefw_tf_close(tf);
    return rc;
}

/* The plugin ABI's state writer and reader are the engine's state, with the plugin's prefix set. */
static int host_put_f32(saefw_state_writer *w, const char *name, const float *data, int64_t n, char *err, size_t errlen) {
    return saefw_state_put_copy((saefw_state_out *)w, name, SAEFW_DT_F32, n, data, err, errlen);
}
static int host_put_i64(saefw_state_writer *w, const char *name, const int64_t *data, int64_t n, char *err,
                        size_t errlen) {
    return saefw_state_put_copy((saefw_state_out *)w, name, SAEFW_DT_I64, n, data, err, errlen);
}
static int host_put_number(saefw_state_writer *w, const char *name, double v, char *err, size_t errlen) {
    return saefw_state_put_f64((saefw_state_out *)w, name, v, err, errlen);
}
static int host_get_f32(saefw_state_reader *r, const char *name, float *data, int64_t n, char *err, size_t errlen) {
    return saefw_state_get((saefw_state_in *)r, name, SAEFW_DT_F32, n, data, err, errlen);
}
static int host_get_i64(saefw_state_reader *r, const char *name, int64_t *data, int64_t n, char *err, size_t errlen) {
    return saefw_state_get((saefw_state_in *)r, name, SAEFW_DT_I64, n, data, err, errlen);
}
static int host_get_number(saefw_state_reader *r, const char *name, double *v, char *err, size_t errlen) {
    return saefw_state_get_f64((saefw_state_in *)r, name, v, err, errlen);
}

static const saefw_host HOST = {
    .abi_version = SAEFW_ABI_VERSION,
    .struct_size = sizeof(saefw_host),
    .log = host_log,
    .opt_number = host_opt_number,
    .opt_string = host_opt_string,
    .param_count = host_param_count,
    .param_get = host_param_get,
    .param_find = host_param_find,
    .d_in = host_d_in,
    .d_sae = host_d_sae,
    .reset_optimizer_state = host_reset_opt,
    .rng_u64 = host_rng_u64,
    .rng_uniform = host_rng_uniform,
    .rng_normal = host_rng_normal,
    .step = host_step,
    .tokens_seen = host_tokens,
    .learning_rate = host_lr,
    .set_learning_rate = host_set_lr,
    .loss_coeff = host_loss_coeff,
    .set_loss_coeff = host_set_loss_coeff,
    .metric = host_metric,
    .sample_activations = host_sample,
    .feature_frequencies = host_freqs,
    .batch_inputs = host_batch_inputs,
    .batch_acts = host_batch_acts,
    .read_tensor = host_read_tensor,
    .free_tensor = host_free_tensor,
    .parallel_for = saefw_parallel_for,
    .state_put_f32 = host_put_f32,
    .state_put_i64 = host_put_i64,
    .state_put_number = host_put_number,
    .state_get_f32 = host_get_f32,
    .state_get_i64 = host_get_i64,
    .state_get_number = host_get_number,
    .batch_feature_counts = host_batch_feature_counts,
};

const saefw_host *saefw_host_table(void) { return &HOST; }

static void log_line(const char *msg) { fprintf(stderr, "%s\n", msg); }

/* A plugin's error message: its buffer ended by the host (a plugin may fill it without a NUL). */
static const char *plugin_msg(char *perr, size_t n, const char *fallback) {
    perr[n - 1] = 0;
    return perr[0] ? perr : fallback;
}

/* ---- crashes: a fault while a plugin runs names the plugin and what is lost ---- */

static saefw_run *volatile g_crash_run;
static char g_crash_stack[1 << 16];
static const int g_fault_sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
#define N_FAULT_SIGS ((int)(sizeof g_fault_sigs / sizeof *g_fault_sigs))

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
    const char *name = sig == SIGSEGV ? "SIGSEGV" : sig == SIGBUS ? "SIGBUS" : sig == SIGFPE ? "SIGFPE"
                     : sig == SIGILL ? "SIGILL" : "SIGABRT";
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
    g_crash_run = run;
    for (int i = 0; i < N_FAULT_SIGS; i++) sigaction(g_fault_sigs[i], &sa, &old[i]);
}

static void crash_handlers_off(const struct sigaction *old, const stack_t *old_ss) {
    for (int i = 0; i < N_FAULT_SIGS; i++) sigaction(g_fault_sigs[i], &old[i], NULL);
    g_crash_run = NULL;
    sigaltstack(old_ss, NULL);
}

/* ---- output ---- */

static void fmt_duration(double s, char *buf, size_t n) {
    if (!isfinite(s) || s < 0) {
        snprintf(buf, n, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60) snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, n, "%lds", t);
}

static void fmt_rate(double r, char *buf, size_t n) {
    if (r >= 1e6) snprintf(buf, n, "%.2fM", r / 1e6);
    else if (r >= 1e3) snprintf(buf, n, "%.1fk", r / 1e3);
    else snprintf(buf, n, "%.0f", r);
}

static void progress_line(const saefw_metrics *m, int tty) {
    char rate[32], eta[32];
    fmt_rate(m->tokens_per_s, rate, sizeof rate);
    double left = m->tokens_per_s > 0 ? (double)(m->steps - m->step - 1) * ((double)m->tokens / (double)(m->step + 1)) / m->tokens_per_s : NAN;
    fmt_duration(left, eta, sizeof eta);
    fprintf(stderr, "%sstep %lld/%lld (%.0f%%) | %s tok/s | loss %.5g l2 %.5g l1 %.5g | L0 %.1f | EV %.3f | ETA %s%s",
            tty ? "\r\033[K" : "", (long long)m->step, (long long)m->steps,
            100.0 * (double)(m->step + 1) / (double)m->steps, rate, m->loss, m->l2, m->l1, m->l0,
            m->explained_variance, eta, tty ? "" : "\n");
    fflush(stderr);
}

static void json_num(FILE *f, const char *key, double v) {
    if (isfinite(v)) fprintf(f, ",\"%s\":%.9g", key, v);
    else fprintf(f, ",\"%s\":null", key);
}

const char *saefw_event_name(saefw_event e) {
    switch (e) {
    case SAEFW_EVENT_LOG: return "log";
    case SAEFW_EVENT_EVAL: return "eval";
    case SAEFW_EVENT_END: return "end";
    }
    return "?";
}

const char *saefw_stop_reason_name(saefw_stop_reason r) {
    switch (r) {
    case SAEFW_STOP_DONE: return "done";
    case SAEFW_STOP_ERROR: return "error";
    case SAEFW_STOP_SIGNAL: return "signal";
    case SAEFW_STOP_CALLBACK: return "callback";
    }
    return "?";
}

static int write_metrics_line(FILE *f, saefw_event event, const char *stopped_by, const saefw_metrics *m, char *err,
                              size_t errlen) {
    if (!f) return 0;
    fprintf(f, "{\"event\":\"%s\",\"step\":%lld,\"tokens\":%lld", saefw_event_name(event), (long long)m->step,
            (long long)m->tokens);
    if (stopped_by) fprintf(f, ",\"stopped_by\":\"on_%s\"", stopped_by);
    if (event != SAEFW_EVENT_EVAL) {
        json_num(f, "loss", m->loss);
        json_num(f, "l2_loss", m->l2);
        json_num(f, "l1_loss", m->l1);
        json_num(f, "l0", m->l0);
        json_num(f, "explained_variance", m->explained_variance);
        json_num(f, "tokens_per_s", m->tokens_per_s);
        json_num(f, "elapsed_s", m->elapsed_s);
    }
    if (m->has_eval) {
        json_num(f, "dead", m->frac_dead);
        json_num(f, "below_1e-6", m->frac_below_1e6);
        json_num(f, "below_1e-5", m->frac_below_1e5);
        for (int i = 0; i < m->n_score; i++)
            if (isfinite(m->score_value[i])) json_num(f, m->score_name[i], m->score_value[i]);
    }
    for (int i = 0; i < m->n_extra; i++) json_num(f, m->extra_name[i], m->extra_value[i]);
    if (event != SAEFW_EVENT_LOG) {
        const saefw_time_split *t = &m->time;
        fprintf(f, ",\"time_s\":{\"step\":%.3f,\"batch\":%.3f,\"refill\":%.3f,\"eval_freq\":%.3f,\"eval_other\":%.3f,"
                "\"checkpoint\":%.3f,\"plugins\":%.3f,\"logging\":%.3f,\"total\":%.3f}",
                t->step, t->batch, t->refill, t->eval_freq, t->eval_other, t->checkpoint, t->plugins, t->logging, t->total);
    }
    fputs("}\n", f);
    if (fflush(f) != 0 || ferror(f)) return saefw_errf(err, errlen, "metrics.jsonl: write failed: %s", strerror(errno));
    return 0;
}

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

static int source_state(saefw_run *run, saefw_source *src, const char *prefix, saefw_state_out *out,
                        saefw_state_in *in, char *err, size_t errlen) {
    if (!src->save_state) return 0;
    if (out) {
        saefw_state_set_prefix(out, prefix);
        return src->save_state(src, out, err, errlen);
    }
    saefw_state_in_prefix(in, prefix);
    return src->load_state(src, in, err, errlen);
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
             saefw_state_put_copy(st, "config", SAEFW_DT_U8, n, text, err, errlen) == 0 ? 0 : -1;
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
        fprintf(stderr, "warning: %s records no configuration (an older saefw wrote it): changes to the run's "
                "configuration cannot be checked\n", dir);
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
static int write_train_state(saefw_run *run, const char *path, int64_t next, char *err, size_t errlen) {
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
        put_record(run, &st, err, errlen) != 0)
        goto out;
    for (int i = 0; i < o->n_evaluators; i++)
        if (o->evaluators[i]->rng &&
            saefw_state_put_rng(&st, o->evaluators[i]->rng_name, o->evaluators[i]->rng, err, errlen) != 0)
            goto out;
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
    int ns = plugin_slots(run, slots);
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
                       plugin_msg(perr, sizeof perr, "failed"));
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
static int64_t read_train_state(saefw_run *run, const char *dir, char *err, size_t errlen) {
    const saefw_train_opts *o = run->o;
    char path[PATH_MAX];
    saefw_sae saved;
    if (saefw_checkpoint_load(dir, &saved, NULL, err, errlen) != 0) return -1;
    if (saved.d_in != run->sae->d_in || saved.d_sae != run->sae->d_sae) {
        saefw_errf(err, errlen, "%s: the checkpoint's SAE is %lld -> %lld, this run's %lld -> %lld", dir,
                   (long long)saved.d_in, (long long)saved.d_sae, (long long)run->sae->d_in, (long long)run->sae->d_sae);
        saefw_sae_free(&saved);
        return -1;
    }
    memcpy(run->sae->params, saved.params, sizeof(float) * saved.n_total);
    saefw_sae_free(&saved);

    snprintf(path, sizeof path, "%s/" SAEFW_TRAIN_STATE, dir);
    saefw_state_in st;
    if (saefw_state_open(path, &st, err, errlen) != 0) return -1;
    int64_t next = -1, tokens = 0, offset = 0, lines = -1;
    double elapsed = 0;
    int n_changes = 0;
    saefw_state_in_prefix(&st, "run/");
    if (saefw_state_get_i64(&st, "next_step", &next, err, errlen) != 0 ||
        saefw_state_get_i64(&st, "tokens", &tokens, err, errlen) != 0 ||
        saefw_state_get_i64(&st, "metrics_bytes", &offset, err, errlen) != 0 ||
        (saefw_state_has(&st, "metrics_lines") && saefw_state_get_i64(&st, "metrics_lines", &lines, err, errlen) != 0) ||
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
                snprintf(msg, sizeof msg, "plugin %s saves no state: the resumed run may differ from an uninterrupted one",
                         p->name);
                host_log(run, SAEFW_LOG_WARN, msg);
            }
            continue;
        }
        saefw_state_in_prefix(&st, slots[i].prefix);
        char perr[512] = "";
        run->current = p->name;
        run->callback = "load_state";
        int prc = p->load_state(slots[i].self, run, (saefw_state_reader *)&st, perr, sizeof perr);
        run->current = NULL;
        if (prc != 0) {
            saefw_errf(err, errlen, "plugin %s: restoring its state from %s: %s", p->name, path,
                       plugin_msg(perr, sizeof perr, "failed"));
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
    return -1;
}

typedef struct {
    saefw_run *run;
    int64_t next;
    int with_state, sparsity;
} state_writer_ud;

/* The checkpoint's files beside the weights: sparsity.safetensors (final), the training state. */
static int add_files(void *vud, const char *tmp_dir, char *err, size_t errlen) {
    state_writer_ud *ud = vud;
    if (ud->sparsity &&
        saefw_checkpoint_write_sparsity(tmp_dir, ud->run->freq, ud->run->sae->d_sae, err, errlen) != 0)
        return -1;
    if (!ud->with_state) return 0;
    saefw_fault_point("checkpoint");
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/" SAEFW_TRAIN_STATE, tmp_dir);
    return write_train_state(ud->run, path, ud->next, err, errlen);
}

/* A checkpoint folder; with_state adds the training state as of the start of step `next`. */
static int save_checkpoint(saefw_run *run, const char *name, const saefw_metrics *m, int64_t next, int with_state,
                           saefw_train_result *res, char *err, size_t errlen) {
    const saefw_train_opts *o = run->o;
    if (!o->run_dir) return 0;
    char dir[PATH_MAX];
    if (name) snprintf(dir, sizeof dir, "%s/%s", o->run_dir, name);
    else snprintf(dir, sizeof dir, "%s/%d", o->run_dir, saefw_checkpoint_next_version(o->run_dir));
    const double t0 = saefw_now();
    cJSON *cfg = checkpoint_cfg(run, m);
    if (!cfg) return saefw_errf(err, errlen, "%s: out of memory", dir);
    /* The final checkpoint comes right after an eval: its frequencies are the final SAE's. */
    state_writer_ud ud = {run, next, with_state, name && run->freq};
    int rc = saefw_checkpoint_save_ex(dir, run->sae, cfg, with_state || ud.sparsity ? add_files : NULL, &ud, err,
                                      errlen);
    cJSON_Delete(cfg);
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

static int run_eval(saefw_run *run, saefw_metrics *m, char *err, size_t errlen) {
    const saefw_sae *sae = run->sae;
    /* The step's scratch holds nothing between steps: its pages go back while the evaluation's own
     * scratch is in use, so that peak memory is one of the two, not both. */
    saefw_sae_work_release(&run->work);
    if (!run->freq && !(run->freq = saefw_malloc(sizeof(float) * (size_t)sae->d_sae, err, errlen))) return -1;
    float *freq = run->freq;
    int64_t nb = run->o->freq_batches > 0 ? run->o->freq_batches : 5;
    int64_t rows = nb * saefw_eval_batch_rows(run->eval_src, run->work.cap);
    double t = saefw_now();
    if (saefw_feature_frequencies(sae, run->eval_src, rows, run->work.cap, freq, err, errlen) != 0) return -1;
    run->time.eval_freq += saefw_now() - t;
    int64_t dead = 0, b6 = 0, b5 = 0;
    for (int64_t j = 0; j < sae->d_sae; j++) {
        dead += freq[j] == 0.0f;
        b6 += freq[j] < 1e-6f;
        b5 += freq[j] < 1e-5f;
    }
    m->has_eval = 1;
    m->frac_dead = (double)dead / (double)sae->d_sae;
    m->frac_below_1e6 = (double)b6 / (double)sae->d_sae;
    m->frac_below_1e5 = (double)b5 / (double)sae->d_sae;
    m->n_score = 0;
    t = saefw_now();
    for (int i = 0; i < run->o->n_evaluators; i++) {
        saefw_evaluator *ev = run->o->evaluators[i];
        char eerr[512] = "";
        run->current = ev->name; /* what its log messages and a crash in it are labelled with */
        run->callback = "evaluate";
        int erc = ev->evaluate(ev, run, sae, m, eerr, sizeof eerr);
        run->current = NULL;
        if (erc != 0) return saefw_errf(err, errlen, "evaluator %s: %s", ev->name, eerr[0] ? eerr : "failed");
    }
    if (run->eval_src->idle) run->eval_src->idle(run->eval_src); /* its scratch is not needed until the next use */
    run->time.eval_other += saefw_now() - t;
    return 0;
}

static const char *hook_name(size_t offset) {
    return offset == offsetof(saefw_plugin, after_backward) ? "after_backward"
         : offset == offsetof(saefw_plugin, after_step)     ? "after_step"
         : offset == offsetof(saefw_plugin, on_eval)        ? "on_eval"
         : offset == offsetof(saefw_plugin, on_end)         ? "on_end"
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
        if (rc != 0) return saefw_errf(err, errlen, "plugin %s: %s", p->name, plugin_msg(perr, sizeof perr, "callback failed"));
    }
    run->time.plugins += saefw_now() - t0;
    return 0;
}

/* Returns 0, or -1 with err. A callback asking to stop (SAEFW_EVENT_STOP) ends the run after this
 * step as if it were the last: run->stopped_by names the event. */
static int emit(saefw_run *run, FILE *mf, saefw_event event, saefw_metrics *m, char *err, size_t errlen) {
    if (run->metric_error[0]) return saefw_errf(err, errlen, "%s", run->metric_error);
    const double t0 = saefw_now();
    m->time = run->time;
    m->time.total = run->elapsed_before + (t0 - run->t0);
    m->n_extra = run->n_extra;
    memcpy(m->extra_name, run->extra_name, sizeof m->extra_name);
    memcpy(m->extra_value, run->extra_value, sizeof m->extra_value);
    const int end = event == SAEFW_EVENT_END;
    if (write_metrics_line(mf, event, end ? run->stopped_by : NULL, m, err, errlen) != 0) return -1;
    if (mf) run->metrics_lines++;
    int rc = run->o->on_event ? run->o->on_event(run->o->event_ud, event, m, err, errlen) : SAEFW_EVENT_GO_ON;
    run->time.logging += saefw_now() - t0;
    /* A stop asked for at the end changes nothing: the run ends anyway. */
    if (rc == SAEFW_EVENT_STOP) {
        if (!end && !run->stopped_by) run->stopped_by = saefw_event_name(event);
        return 0;
    }
    return rc == SAEFW_EVENT_GO_ON ? 0 : -1;
}

int saefw_train(const saefw_train_opts *o, saefw_train_result *res, char *err, size_t errlen) {
    memset(res, 0, sizeof *res);
    res->stop = SAEFW_STOP_ERROR; /* until the run ends otherwise */
    saefw_sae *sae = o->sae;
    saefw_buffer *buf = o->buffer;
    if (!sae || !(buf || o->next_batch) || !o->optimizer.plugin)
        return saefw_errf(err, errlen, "train: sae, buffer and optimizer are required");
    if (!buf && (!o->eval_source || o->batch_size <= 0))
        return saefw_errf(err, errlen, "train: next_batch needs batch_size and eval_source");
    const int64_t d_act = buf ? buf->d : o->eval_source->d_act;
    if (d_act != sae->d_in)
        return saefw_errf(err, errlen, "train: activations have width %lld, but the SAE expects d_in = %lld",
                          (long long)d_act, (long long)sae->d_in);
    if (o->eval_source && o->eval_source->d_act != sae->d_in)
        return saefw_errf(err, errlen, "train: eval_source has width %lld, but the SAE expects d_in = %lld",
                          (long long)o->eval_source->d_act, (long long)sae->d_in);
    if (o->optimizer.plugin->p.kind != SAEFW_KIND_OPTIMIZER)
        return saefw_errf(err, errlen, "train: plugin %s is a %s, not an optimizer", o->optimizer.plugin->p.name,
                          saefw_plugin_kind_name(o->optimizer.plugin->p.kind));
    if (o->steps <= 0) return saefw_errf(err, errlen, "train: the number of steps must be positive (num_tokens >= batch_size)");
    if (o->freq_batches > SAEFW_MAX_EVAL_BATCHES)
        return saefw_errf(err, errlen, "train: freq_batches = %lld is more than %d", (long long)o->freq_batches, SAEFW_MAX_EVAL_BATCHES);

    saefw_run run;
    memset(&run, 0, sizeof run);
    run.o = o;
    run.sae = sae;
    run.eval_src = o->eval_source ? o->eval_source : buf->src;
    /* The engine owns the learning rate; by default it starts at the optimizer's own "lr" option. */
    run.lr = o->lr > 0 ? o->lr : o->optimizer.opts ? saefw_opts_number(o->optimizer.opts, "lr") : 0.0;
    saefw_rng_seed(&run.rng, o->seed ^ 0x706c7567696e73ULL);
    const int64_t B = buf ? buf->batch : o->batch_size, d = sae->d_in;
    FILE *mf = NULL;
    int rc = -1;
    int opt_created = 0, n_created = 0;
    struct sigaction old_fault[N_FAULT_SIGS];
    saefw_stop_scope stop_scope;
    stack_t old_ss;
    int signals_set = 0, lock_fd = -1;

    double mem_estimate = 0;
    if (saefw_train_memory_check(o, o->progress != 0, &mem_estimate, err, errlen) != 0) return -1;
    if (saefw_sae_work_alloc(&run.work, sae, B, err, errlen) != 0) return -1;
    run.work.fused = 1; /* every forward pass of the step is followed by its backward pass */
    run.batch = saefw_malloc(sizeof(float) * (size_t)(B * d), err, errlen);
    run.feat_counts = run.batch ? saefw_malloc(sizeof(int64_t) * (size_t)sae->d_sae, err, errlen) : NULL;
    run.counts_step = -1;
    run.plug_self = run.feat_counts ? saefw_calloc((size_t)(o->n_plugins + 1), sizeof(void *), err, errlen) : NULL;
    if (!run.plug_self) goto done;
    crash_handlers(&run, old_fault, &old_ss);

    const char *resume_from = o->resume_from;
    char found[PATH_MAX];
    if (o->run_dir) {
        /* The lock is held from here to the end of the run: a second writer is refused. */
        if (saefw_rundir_open(o->run_dir, o->resume || o->resume_from, &lock_fd, found, sizeof found, log_line, err,
                              errlen) != 0)
            goto done;
        if (!resume_from && found[0]) resume_from = found;
        char mp[PATH_MAX];
        snprintf(mp, sizeof mp, "%s/metrics.jsonl", o->run_dir);
        mf = fopen(mp, resume_from ? "r+" : "w"); /* a resumed run keeps its lines up to the checkpoint */
        if (!mf && errno == ENOENT) {
            saefw_errf(err, errlen, "%s is missing: the run's record cannot be continued (put it back to resume; "
                       "nothing was changed)", mp);
            goto done;
        }
        if (!mf) {
            saefw_errf(err, errlen, "%s: cannot open: %s", mp, strerror(errno));
            goto done;
        }
        if (fseek(mf, 0, SEEK_END) != 0) {
            saefw_errf(err, errlen, "%s: cannot open: %s", mp, strerror(errno));
            goto done;
        }
        run.metrics = mf;
    }

    /* Instances: the optimizer first, then the hooks in the order given. */
    {
        const saefw_plugin *op = &o->optimizer.plugin->p;
        char perr[512] = "";
        run.current = op->name;
        run.callback = "create";
        run.opt_self = o->optimizer.self;
        if (op->create && op->create(&HOST, &run, o->optimizer.opts, &run.opt_self, perr, sizeof perr) != 0) {
            saefw_errf(err, errlen, "plugin %s: %s", op->name, plugin_msg(perr, sizeof perr, "create failed"));
            goto done;
        }
        opt_created = 1;
        for (int i = 0; i < o->n_plugins; i++) {
            const saefw_plugin *p = &o->plugins[i].plugin->p;
            run.current = p->name;
            run.plug_self[i] = o->plugins[i].self;
            if (p->create && p->create(&HOST, &run, o->plugins[i].opts, &run.plug_self[i], perr, sizeof perr) != 0) {
                saefw_errf(err, errlen, "plugin %s: %s", p->name, plugin_msg(perr, sizeof perr, "create failed"));
                goto done;
            }
            n_created = i + 1;
        }
        run.current = NULL;
    }

    int64_t start = 0;
    if (resume_from) {
        if (o->progress != 0)
            fprintf(stderr, "resuming from %s\n", resume_from);
        start = read_train_state(&run, resume_from, err, errlen);
        if (start < 0) goto done;
        res->resumed_at = start;
        res->steps_done = start;
        run.ckpt_next = start;
        run.ckpt_path = resume_from;
        if (o->progress != 0)
            fprintf(stderr, "resumed at step %lld of %lld\n", (long long)start, (long long)o->steps);
    }

    saefw_stop_begin(&stop_scope);
    signals_set = 1;

    const int tty = o->progress < 0 && isatty(STDERR_FILENO);
    const int plain = o->progress < 0 && !tty;
    const double t0 = saefw_now();
    const int64_t tokens0 = run.tokens;
    run.t0 = t0;
    double last_draw = 0;
    saefw_metrics m;
    memset(&m, 0, sizeof m);
    m.steps = o->steps;

    for (int64_t i = start; i < o->steps; i++) {
        if (saefw_stop_requested() || run.stopped_by) break;
        run.step = i;
        run.n_extra = 0;
        const double tb = saefw_now(), fills = buf ? buf->fill_seconds + buf->refill_seconds : 0;
        int got = buf ? saefw_buffer_next(buf, run.batch, err, errlen)
                      : o->next_batch(o->next_batch_ud, run.batch, B, err, errlen);
        const double ts = saefw_now(), plug0 = run.time.plugins;
        const double refill = buf ? buf->fill_seconds + buf->refill_seconds - fills : 0;
        run.time.refill += refill;
        run.time.batch += ts - tb - refill;
        if (got != 0) goto done;
        saefw_sae_stats st;
        saefw_sae_forward(sae, &run.work, run.batch, B, &st);
        if (!isfinite(st.loss)) {
            saefw_errf(err, errlen, "step %lld: the loss is %s; training stopped (last good checkpoint: %s)",
                       (long long)i, isnan(st.loss) ? "NaN" : "infinite",
                       res->last_checkpoint[0] ? res->last_checkpoint : "none yet");
            goto done;
        }
        saefw_sae_backward(sae, &run.work, run.batch, B);
        saefw_sae_project_decoder(sae);
        saefw_fault_point("step");
        run.batch_rows = B;
        if (call_hooks(&run, offsetof(saefw_plugin, after_backward), err, errlen) != 0) goto done;
        {
            const saefw_plugin *op = &o->optimizer.plugin->p;
            char perr[512] = "";
            run.current = op->name;
            run.callback = "step";
            int src = op->step(run.opt_self, &run, perr, sizeof perr);
            run.current = NULL;
            if (src != 0) {
                saefw_errf(err, errlen, "plugin %s: %s", op->name, plugin_msg(perr, sizeof perr, "step failed"));
                goto done;
            }
        }
        if (call_hooks(&run, offsetof(saefw_plugin, after_step), err, errlen) != 0) goto done;
        run.time.step += saefw_now() - ts - (run.time.plugins - plug0);
        if (run.metric_error[0]) {
            saefw_errf(err, errlen, "%s", run.metric_error);
            goto done;
        }
        run.batch_rows = 0; /* evaluation below reuses the scratch space */
        run.tokens += B;

        double now = saefw_now();
        m.step = i;
        m.tokens = run.tokens;
        m.loss = st.loss;
        m.l2 = st.l2;
        m.l1 = st.l1;
        m.l0 = st.l0;
        m.explained_variance = st.explained_variance;
        m.elapsed_s = run.elapsed_before + (now - t0);
        m.tokens_per_s = now > t0 ? (double)(run.tokens - tokens0) / (now - t0) : 0;
        m.has_eval = 0;
        res->steps_done = i + 1;

        if (o->log_every > 0 && i % o->log_every == 0) {
            if (emit(&run, mf, SAEFW_EVENT_LOG, &m, err, errlen) != 0) goto done;
            if (plain) progress_line(&m, 0);
        }
        if (tty && (now - last_draw > 0.2 || i + 1 == o->steps)) {
            progress_line(&m, 1);
            last_draw = now;
        }
        if (o->eval_every > 0 && i % o->eval_every == 0) {
            if (run_eval(&run, &m, err, errlen) != 0) {
                if (saefw_stop_requested()) break; /* the steps done are saved below */
                goto done;
            }
            if (call_hooks(&run, offsetof(saefw_plugin, on_eval), err, errlen) != 0) goto done;
            if (emit(&run, mf, SAEFW_EVENT_EVAL, &m, err, errlen) != 0) goto done;
            if (tty) fputs("\r\033[K", stderr);
            if (o->progress != 0) {
                char mm[512] = "";
                for (int k = 0; k < m.n_score; k++) {
                    size_t u = strlen(mm);
                    if (isfinite(m.score_value[k]))
                        snprintf(mm + u, sizeof mm - u, ", %s %.4f", m.score_label[k], m.score_value[k]);
                }
                for (int k = 0; k < run.n_extra; k++) {
                    size_t u = strlen(mm);
                    snprintf(mm + u, sizeof mm - u, ", %s %.4g", run.extra_name[k], run.extra_value[k]);
                }
                fprintf(stderr, "eval step %lld: dead %.4f, below 1e-6 %.4f, below 1e-5 %.4f%s\n", (long long)i,
                        m.frac_dead, m.frac_below_1e6, m.frac_below_1e5, mm);
            }
        }
        if (o->checkpoint_every > 0 && (i + 1) % o->checkpoint_every == 0 && i + 1 < o->steps) {
            if (save_checkpoint(&run, NULL, &m, i + 1, 1, res, err, errlen) != 0) goto done;
        }
    }
    if (tty) fputc('\n', stderr);

    if (saefw_stop_requested()) {
    interrupted:
        res->interrupted = saefw_stop_requested();
        res->stop = SAEFW_STOP_SIGNAL;
        char cerr[512] = "";
        if (save_checkpoint(&run, NULL, &m, res->steps_done, 1, res, cerr, sizeof cerr) != 0)
            saefw_errf(err, errlen, "interrupted by signal %d at step %lld; saving a checkpoint failed: %s",
                       (int)saefw_stop_requested(), (long long)res->steps_done, cerr);
        else
            saefw_errf(err, errlen, "interrupted by %s after %lld steps; checkpoint saved to %s",
                       saefw_stop_requested() == SIGINT ? "SIGINT" : "SIGTERM", (long long)res->steps_done,
                       o->run_dir ? res->last_checkpoint : "(no run folder)");
        goto done;
    }

    if (run.stopped_by)
        fprintf(stderr, "the on_%s callback stopped the run after step %lld of %lld; finishing it there (final "
                "evaluation, checkpoint and end event)\n", run.stopped_by, (long long)m.step, (long long)o->steps);
    res->stopped_by = run.stopped_by;

    /* Final evaluation, hooks and checkpoint. */
    if (run_eval(&run, &m, err, errlen) != 0) {
        if (saefw_stop_requested()) goto interrupted; /* a checkpoint of the last step, to finish with --resume */
        goto done;
    }
    if (call_hooks(&run, offsetof(saefw_plugin, on_end), err, errlen) != 0) goto done;
    if (save_checkpoint(&run, "final", &m, o->steps, 0, res, err, errlen) != 0) goto done;
    if (emit(&run, mf, SAEFW_EVENT_END, &m, err, errlen) != 0) goto done;
    res->last = m;
    res->stop = run.stopped_by ? SAEFW_STOP_CALLBACK : SAEFW_STOP_DONE;
    rc = 0;
    if (o->progress != 0) {
        char line[512];
        saefw_time_split_format(&m.time, line, sizeof line);
        fprintf(stderr, "%s\n", line);
    }
    if (o->progress != 0 && saefw_mem_peak() > 0) {
        char pk[32], es[32];
        fprintf(stderr, "memory: peak resident %s, estimated %s\n", saefw_mem_fmt((double)saefw_mem_peak(), pk, sizeof pk),
                saefw_mem_fmt(mem_estimate, es, sizeof es));
    }

done:
    if (run.plug_self) crash_handlers_off(old_fault, &old_ss);
    if (signals_set) saefw_stop_end(&stop_scope);
    for (int i = 0; i < n_created; i++)
        if (o->plugins[i].plugin->p.destroy && run.plug_self[i]) o->plugins[i].plugin->p.destroy(run.plug_self[i]);
    if (opt_created && o->optimizer.plugin->p.destroy && run.opt_self) o->optimizer.plugin->p.destroy(run.opt_self);
    if (mf && fclose(mf) != 0 && rc == 0) rc = saefw_errf(err, errlen, "metrics.jsonl: write failed");
    if (lock_fd >= 0) close(lock_fd);
    cJSON_Delete(run.changes);
    free(run.plug_self);
    free(run.batch);
    free(run.feat_counts);
    free(run.freq);
    saefw_sae_work_free(&run.work);
    saefw_sae_work_free(&run.sample_work);
    return rc;
}
