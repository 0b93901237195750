/* The plugin host table: what a plugin reaches of the training run (parameters, optimizer state,
 * generators, learning rate and loss coefficients, metrics, evaluation draws, tensors, state I/O). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "parallel.h"
#include "state.h"
#include "tensorfile.h"
#include "train_internal.h"
#include "util.h"

/* ---- host table ---- */

void saefw_train_host_log(saefw_run *run, int level, const char *msg) {
    const char *lv = level >= SAEFW_LOG_WARN ? "warning: " : "";
    if (level == SAEFW_LOG_DEBUG && !getenv("SAEFW_DEBUG")) return;
    fprintf(stderr, "[%s] %s%s\n", run && run->current ? run->current : "plugin", lv, msg);
}

static double host_opt_number(const saefw_opts *o, const char *name) { return saefw_opts_number(o, name); }
static const char *host_opt_string(const saefw_opts *o, const char *name) { return saefw_opts_string(o, name); }
static int host_param_count(saefw_run *run) { return run->sae->n_params; }

/* Fill a plugin's saefw_param up to the size it declares (it may come from an older or newer header). */
static int param_out(saefw_run *run, int i, saefw_param *out) {
    if (!out) return 0;
    if (out->struct_size < offsetof(saefw_param, numel) + sizeof out->numel) return -1;
    saefw_param v;
    saefw_sae_param_view(run->sae, i, &v);
    if (saefw_train_zero_opt_view(run)) saefw_train_zero_slice(run, i, &v);
    /* struct_size becomes what was filled: fields of a newer header past it are left as they were. */
    const uint32_t size = out->struct_size < sizeof v ? out->struct_size : (uint32_t)sizeof v;
    v.struct_size = size;
    memcpy(out, &v, size);
    return 0;
}

static int host_param_get(saefw_run *run, int i, saefw_param *out) {
    if (i < 0 || i >= run->sae->n_params || !out) return -1;
    return param_out(run, i, out);
}

static int host_param_find(saefw_run *run, const char *name, saefw_param *out, int *index) {
    const int i = saefw_sae_param_index(run->sae, name);
    if (i < 0) return -1;
    if (param_out(run, i, out) != 0) return -1;
    if (index) *index = i;
    return 0;
}

static int64_t host_d_in(saefw_run *run) { return run->sae->d_in; }
static int64_t host_d_sae(saefw_run *run) { return run->sae->d_sae; }

/* Checked here, so that every optimizer gets valid slices; one reset_state call per tensor. */
static int host_reset_opt(saefw_run *run, int param, int axis, const int64_t *idx, int64_t n, char *err,
                          size_t errlen) {
    const saefw_plugin *op = &run->o->optimizer.plugin->p;
    if (param == -1) {
        if (idx) return saefw_errf(err, errlen, "reset_optimizer_state: every tensor (-1) takes no indices");
        for (int i = 0; i < run->sae->n_params; i++)
            if (host_reset_opt(run, i, 0, NULL, 0, err, errlen) != 0) return -1;
        return 0;
    }
    if (param < 0 || param >= run->sae->n_params)
        return saefw_errf(err, errlen, "reset_optimizer_state: no tensor %d (there are %d)", param, run->sae->n_params);
    saefw_param p;
    saefw_sae_param_view(run->sae, param, &p);
    if (idx) {
        if (axis < 0 || axis >= p.ndim)
            return saefw_errf(err, errlen, "reset_optimizer_state: %s has no axis %d", p.name, axis);
        for (int64_t k = 0; k < n; k++)
            if (idx[k] < 0 || idx[k] >= p.shape[axis])
                return saefw_errf(err, errlen,
                                  "reset_optimizer_state: %s: index %lld out of range along axis %d (size %lld)",
                                  p.name, (long long)idx[k], axis, (long long)p.shape[axis]);
    }
    if (!op->reset_state) return 0;
    const char *was = run->current;
    run->current = op->name;
    /* ZeRO-1: the optimizer holds a slice of rows; indices along the rows become the slice's own. */
    int64_t *own = NULL;
    if (run->zero && idx && axis == 0) {
        saefw_param s = p;
        saefw_train_zero_slice(run, param, &s);
        const int64_t r0 = (s.data - p.data) / (p.numel / p.shape[0]);
        if (!(own = saefw_malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1), err, errlen))) return -1;
        int64_t k = 0;
        for (int64_t j = 0; j < n; j++)
            if (idx[j] >= r0 && idx[j] < r0 + s.shape[0]) own[k++] = idx[j] - r0;
        idx = own;
        n = k;
    }
    int rc = op->reset_state(run->opt_self, run, param, axis, idx, idx ? n : 0, err, errlen);
    free(own);
    run->current = was;
    return rc;
}

static uint64_t host_rng_u64(saefw_run *run) { return saefw_rng_u64(&run->rng); }
static double host_rng_uniform(saefw_run *run) { return saefw_rng_uniform(&run->rng); }
static double host_rng_normal(saefw_run *run) { return saefw_rng_normal(&run->rng); }
static int64_t host_step(saefw_run *run) { return run->step; }
static int64_t host_tokens(saefw_run *run) { return run->tokens; }
static int64_t host_total_steps(saefw_run *run) { return run->o->steps; }
static double host_lr(saefw_run *run) { return run->lr; }

static int host_set_lr(saefw_run *run, double lr, char *err, size_t errlen) {
    if (!(lr >= 0) || !isfinite(lr))
        return saefw_errf(err, errlen, "set_learning_rate: %g is not a finite number >= 0", lr);
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
        return saefw_errf(err, errlen, "set_loss_coeff: no coefficient '%s' (this SAE has: l1)",
                          name ? name : "(null)");
    if (!(value >= 0) || !isfinite(value))
        return saefw_errf(err, errlen, "set_loss_coeff: %s = %g is not a finite number >= 0", name, value);
    run->sae->l1_coeff = (float)value;
    return 0;
}

static void host_metric(saefw_run *run, const char *name, double value) {
    /* metric() returns nothing: a name that does not fit stops the run at its next metrics line. */
    if (!name || !*name || strlen(name) >= sizeof run->extra_name[0]) {
        if (!run->metric_error[0])
            snprintf(run->metric_error, sizeof run->metric_error,
                     "plugin %s: metric name '%.60s%s' is %s (1 to %d "
                     "characters)",
                     run->current ? run->current : "?", name ? name : "", name && strlen(name) > 60 ? "..." : "",
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
            snprintf(run->metric_error, sizeof run->metric_error,
                     "plugin %s: metric '%s' is one more than the %d "
                     "metrics a step can record",
                     run->current ? run->current : "?", name, SAEFW_MAX_EXTRA_METRICS);
        return;
    }
    snprintf(run->extra_name[run->n_extra], sizeof run->extra_name[0], "%s", name);
    run->extra_value[run->n_extra++] = value;
}

/* Data parallel: each rank draws its share of the n rows (from its own evaluation draws) and the
 * shares are gathered, so that every rank sees the same n rows and losses and a plugin that picks
 * among them picks the same rows everywhere. */
static int host_sample(saefw_run *run, float *x, float *loss, int64_t n, char *err, size_t errlen) {
    const int64_t d = run->sae->d_in;
    /* The caller's rows are [n, d_in]: a transcoder's source would write its targets too. */
    if (run->eval_src->d_target > 0)
        return saefw_errf(err, errlen,
                          "sample_activations is not available for a transcoder (its rows hold two sites)");
    /* Its own scratch space, made on first use, so the current batch's activations stay valid. */
    const int64_t cap = saefw_sae_step_cap(run->work), piece = cap < SAEFW_EVAL_PIECE ? cap : SAEFW_EVAL_PIECE;
    if (loss && !run->sample_work && saefw_sae_eval_alloc(&run->sample_work, run->sae, piece, err, errlen) != 0)
        return -1;
    int64_t lo, own;
    saefw_dist_share(n, &lo, &own);
    for (int64_t r = lo; r < lo + own; r += cap) {
        int64_t k = lo + own - r < cap ? lo + own - r : cap;
        if (run->eval_src->sample(run->eval_src, x + r * d, k, err, errlen) != 0) return -1;
        for (int64_t p0 = r; loss && p0 < r + k; p0 += piece) {
            const int64_t np = r + k - p0 < piece ? r + k - p0 : piece;
            saefw_sae_eval_forward(run->sae, run->sample_work, x + p0 * d, np, NULL);
            if (saefw_sae_eval_row_loss(run->sae, run->sample_work, x + p0 * d, loss + p0, err, errlen) != 0) return -1;
        }
    }
    if (run->ranks > 1 && (saefw_dist_gather_shares(x, n, sizeof(float) * (size_t)d, err, errlen) != 0 ||
                           (loss && saefw_dist_gather_shares(loss, n, sizeof(float), err, errlen) != 0)))
        return -1;
    return 0;
}

int64_t saefw_eval_batch_rows(const saefw_source *src, int64_t batch) {
    return src->chunk_rows > 0 ? src->chunk_rows : batch;
}

/* Counts [d_sae] (added to) of the features active on `rows` rows of src, drawn `chunk` at a time. */
static int feature_counts(const saefw_sae *sae, saefw_source *src, int64_t rows, int64_t chunk, int64_t *count,
                          char *err, size_t errlen) {
    if (chunk > rows) chunk = rows;
    /* Rows are drawn `chunk` at a time and run through the SAE in smaller pieces. */
    const int64_t piece = chunk < SAEFW_EVAL_PIECE ? chunk : SAEFW_EVAL_PIECE;
    saefw_sae_eval *w;
    if (saefw_sae_eval_alloc(&w, sae, piece, err, errlen) != 0) return -1;
    /* A transcoder's rows [input | target]: the input columns are moved to the front of x. */
    const int64_t d_row = src->d_target > 0 ? src->d_act : sae->d_in;
    float *x = saefw_malloc(sizeof(float) * (size_t)(chunk * d_row), err, errlen);
    int rc = x ? 0 : -1;
    for (int64_t done = 0; rc == 0 && done < rows; done += chunk) {
        int64_t k = rows - done < chunk ? rows - done : chunk;
        if (saefw_stop_requested() && (rc = saefw_stop_errf(err, errlen, "feature frequencies")) != 0) break;
        if (src->sample(src, x, k, err, errlen) != 0) {
            rc = -1;
            break;
        }
        if (d_row != sae->d_in)
            for (int64_t r = 1; r < k; r++)
                memmove(x + r * sae->d_in, x + r * d_row, sizeof(float) * (size_t)sae->d_in);
        for (int64_t p0 = 0; rc == 0 && p0 < k; p0 += piece) {
            const int64_t np = k - p0 < piece ? k - p0 : piece;
            /* A model batch at the seed's size is 128 pieces of about a quarter second each. */
            if (saefw_stop_requested() && (rc = saefw_stop_errf(err, errlen, "feature frequencies")) != 0) break;
            saefw_sae_eval_forward(sae, w, x + p0 * sae->d_in, np, NULL);
            rc = saefw_sae_eval_count_active(sae, w, count, err, errlen);
        }
    }
    free(x);
    saefw_sae_eval_free(w);
    return rc;
}

int saefw_feature_frequencies(const saefw_sae *sae, saefw_source *src, int64_t rows, int64_t chunk, float *freq,
                              char *err, size_t errlen) {
    if (rows <= 0 || chunk <= 0) return saefw_errf(err, errlen, "feature frequencies: rows must be positive");
    int64_t *count = saefw_calloc((size_t)sae->d_sae, sizeof(int64_t), err, errlen);
    if (!count) return -1;
    int rc = feature_counts(sae, src, rows, chunk, count, err, errlen);
    if (rc == 0)
        for (int64_t j = 0; j < sae->d_sae; j++) freq[j] = (float)((double)count[j] / (double)rows);
    free(count);
    return rc;
}

int saefw_train_frequencies(saefw_run *run, int64_t rows, float *freq, char *err, size_t errlen) {
    const saefw_sae *sae = run->sae;
    const int64_t cap = saefw_sae_step_cap(run->work);
    if (run->ranks == 1) return saefw_feature_frequencies(sae, run->eval_src, rows, cap, freq, err, errlen);
    if (rows <= 0) return saefw_errf(err, errlen, "feature frequencies: rows must be positive");
    int64_t lo, own;
    saefw_dist_share(rows, &lo, &own);
    int64_t *count = saefw_calloc((size_t)sae->d_sae, sizeof(int64_t), err, errlen);
    double *sum = count ? saefw_malloc(sizeof(double) * (size_t)sae->d_sae, err, errlen) : NULL;
    int rc = sum ? 0 : -1;
    if (rc == 0 && own > 0) rc = feature_counts(sae, run->eval_src, own, cap, count, err, errlen);
    /* Counts stay below 2^53: their sum in double is exact, whatever the order. */
    for (int64_t j = 0; rc == 0 && j < sae->d_sae; j++) sum[j] = (double)count[j];
    if (rc == 0) rc = saefw_dist_sum_f64(sum, sae->d_sae, err, errlen);
    for (int64_t j = 0; rc == 0 && j < sae->d_sae; j++) freq[j] = (float)(sum[j] / (double)rows);
    free(sum);
    free(count);
    return rc;
}

static int host_freqs(saefw_run *run, int64_t n_batches, float *freq, char *err, size_t errlen) {
    if (n_batches <= 0 || n_batches > SAEFW_MAX_EVAL_BATCHES)
        return saefw_errf(err, errlen, "feature_frequencies: n_batches = %lld is not in 1 .. %d", (long long)n_batches,
                          SAEFW_MAX_EVAL_BATCHES);
    const int64_t cap = saefw_sae_step_cap(run->work), rows = n_batches * saefw_eval_batch_rows(run->eval_src, cap);
    return saefw_train_frequencies(run, rows, freq, err, errlen);
}

static const float *host_batch_inputs(saefw_run *run, int64_t *rows) {
    if (rows) *rows = run->batch_rows;
    return run->batch_rows ? run->batch + run->row0 * run->sae->d_in : NULL;
}

/* Made on the first request of a step (the step itself keeps only the active entries). */
static const float *host_batch_acts(saefw_run *run, int64_t *rows) {
    if (rows) *rows = run->batch_rows;
    if (!run->batch_rows) return NULL;
    char err[256];
    const float *a = saefw_sae_step_acts(run->sae, run->work, err, sizeof err);
    if (!a) saefw_train_host_log(run, SAEFW_LOG_WARN, err);
    return a;
}

static const int64_t *host_batch_feature_counts(saefw_run *run) {
    if (!run->batch_rows) return NULL;
    if (run->counts_step == run->step) return run->feat_counts;
    memset(run->feat_counts, 0, sizeof(int64_t) * (size_t)run->sae->d_sae);
    char err[256];
    if (saefw_sae_step_count_active(run->sae, run->work, run->feat_counts, err, sizeof err) != 0) {
        saefw_train_host_log(run, SAEFW_LOG_WARN, err);
        return NULL;
    }
    if (run->ranks > 1) {
        /* The global batch's counts: every rank asks at the same point of the same step. Counts stay
         * below 2^53, so the sum in double is exact. */
        const int64_t n = run->sae->d_sae;
        double *c = saefw_malloc(sizeof(double) * (size_t)n, err, sizeof err);
        for (int64_t j = 0; c && j < n; j++) c[j] = (double)run->feat_counts[j];
        if (!c || saefw_dist_sum_f64(c, n, err, sizeof err) != 0) {
            saefw_train_host_log(run, SAEFW_LOG_WARN, err);
            free(c);
            return NULL;
        }
        for (int64_t j = 0; j < n; j++) run->feat_counts[j] = (int64_t)c[j];
        free(c);
    }
    run->counts_step = run->step;
    return run->feat_counts;
}

static void host_free_tensor(float *data) { free(data); }

static int host_read_tensor(saefw_run *run, const char *path, const char *name, float **data, int64_t *numel, int *ndim,
                            int64_t shape[SAEFW_PLUGIN_MAX_DIMS], char *err, size_t errlen) {
    *data = NULL;
    saefw_tensorfile *tf = NULL;
    if (!path || saefw_tf_open(path, &tf, err, errlen) != 0)
        return path ? -1 : saefw_errf(err, errlen, "no path given");
    const saefw_tensor_info *t = NULL;
    if (name) t = saefw_tf_find(tf, name);
    else if (saefw_tf_count(tf) == 1) t = saefw_tf_get(tf, 0);
    int rc = -1;
    if (!t && name) saefw_errf(err, errlen, "%s: no tensor named '%s'", path, name);
    else if (!t) saefw_errf(err, errlen, "%s: holds %d tensors; name the one to read", path, saefw_tf_count(tf));
    else if (t->ndim > SAEFW_PLUGIN_MAX_DIMS)
        saefw_errf(err, errlen, "%s: tensor %s has %d dimensions (at most %d)", path, t->name, t->ndim,
                   SAEFW_PLUGIN_MAX_DIMS);
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
static int host_put_f32(saefw_state_writer *w, const char *name, const float *data, int64_t n, char *err,
                        size_t errlen) {
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

static int host_rank(saefw_run *run) { return run->rank; }
static int host_ranks(saefw_run *run) { return run->ranks; }
static int host_all_reduce_sum(saefw_run *run, double *data, int64_t n, char *err, size_t errlen) {
    if (n < 0 || (n > 0 && !data)) return saefw_errf(err, errlen, "all_reduce_sum: no data");
    return saefw_dist_sum_f64(data, n, err, errlen);
}

static const char *host_sae_arch(saefw_run *run) {
    return run->sae->transcoder ? "transcoder" : saefw_sae_arch_name(run->sae->arch.arch);
}

static int host_reset_latents(saefw_run *run, const int64_t *idx, int64_t n, char *err, size_t errlen) {
    saefw_sae *sae = run->sae;
    if (n < 0 || (n > 0 && !idx)) return saefw_errf(err, errlen, "reset_latents: no latents");
    for (int64_t k = 0; k < n; k++)
        if (idx[k] < 0 || idx[k] >= sae->d_sae)
            return saefw_errf(err, errlen, "reset_latents: latent %lld is not in 0..%lld", (long long)idx[k],
                              (long long)sae->d_sae - 1);
    /* The values saefw_arch_init_params starts them at. */
    const saefw_sae_arch a = sae->arch.arch;
    for (int64_t k = 0; k < n; k++) {
        const int64_t j = idx[k];
        if (a == SAEFW_ARCH_JUMPRELU) sae->p[SAEFW_LOG_THRESHOLD][j] = (float)log(sae->arch.threshold);
        if (a == SAEFW_ARCH_GATED) sae->p[SAEFW_R_MAG][j] = sae->p[SAEFW_B_MAG][j] = 0.0f;
        if (sae->since_fired) sae->since_fired[j] = 0;
    }
    return 0;
}

static int host_put_f32_param(saefw_run *run, saefw_state_writer *w, const char *name, const float *data, int i,
                              char *err, size_t errlen) {
    if (i < 0 || i >= run->sae->n_params) return saefw_errf(err, errlen, "state_put_f32_param: no tensor %d", i);
    return saefw_train_zero_put(run, (saefw_state_out *)w, name, data, i, err, errlen);
}

static int host_get_f32_param(saefw_run *run, saefw_state_reader *r, const char *name, float *data, int i, char *err,
                              size_t errlen) {
    if (i < 0 || i >= run->sae->n_params) return saefw_errf(err, errlen, "state_get_f32_param: no tensor %d", i);
    return saefw_train_zero_get(run, (saefw_state_in *)r, name, data, i, err, errlen);
}

static const saefw_host HOST = {
    .abi_version = SAEFW_ABI_VERSION,
    .struct_size = sizeof(saefw_host),
    .log = saefw_train_host_log,
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
    .total_steps = host_total_steps,
    .rank = host_rank,
    .ranks = host_ranks,
    .all_reduce_sum = host_all_reduce_sum,
    .sae_arch = host_sae_arch,
    .reset_latents = host_reset_latents,
    .state_put_f32_param = host_put_f32_param,
    .state_get_f32_param = host_get_f32_param,
};

const saefw_host *saefw_host_table(void) { return &HOST; }

/* A plugin's error message: its buffer ended by the host (a plugin may fill it without a NUL). */
const char *saefw_train_plugin_msg(char *perr, size_t n, const char *fallback) {
    perr[n - 1] = 0;
    return perr[0] ? perr : fallback;
}
