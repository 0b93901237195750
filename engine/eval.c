/* The evaluators the training loop runs at eval time (reconstruction score, MMCS) and the model-loss
 * evaluation with a hook site ablated. */
#include "eval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "util.h"

/* Generators of the evaluations, derived from the run's seed so that they differ from the others. */
#define RECONS_SEED_SALT 0x7265636f6e73ULL /* "recons" */
#define MEAN_SEED_SALT 0x6d65616eULL       /* "mean" */

int saefw_metrics_add_score(saefw_metrics *m, const char *name, const char *label, double value) {
    int i = 0;
    while (i < m->n_score && strcmp(m->score_name[i], name) != 0) i++;
    if (i == SAEFW_MAX_SCORES) return -1;
    snprintf(m->score_name[i], sizeof m->score_name[i], "%s", name);
    snprintf(m->score_label[i], sizeof m->score_label[i], "%s", label ? label : name);
    m->score_value[i] = value;
    if (i == m->n_score) m->n_score++;
    return 0;
}

double saefw_metrics_get(const saefw_metrics *m, const char *name) {
    for (int i = 0; i < m->n_score; i++)
        if (!strcmp(m->score_name[i], name)) return m->score_value[i];
    for (int i = 0; i < m->n_extra; i++)
        if (!strcmp(m->extra_name[i], name)) return m->extra_value[i];
    return NAN;
}

int saefw_recons_mode_parse(const char *name, saefw_recons_mode *out) {
    if (!strcmp(name, "fixed")) *out = SAEFW_RECONS_FIXED;
    else if (!strcmp(name, "fresh")) *out = SAEFW_RECONS_FRESH;
    else return -1;
    return 0;
}

int saefw_eval_freq_mode_parse(const char *name, saefw_eval_freq_mode *out) {
    if (!strcmp(name, "auto")) *out = SAEFW_EVAL_FREQ_AUTO;
    else if (!strcmp(name, "recons")) *out = SAEFW_EVAL_FREQ_RECONS;
    else if (!strcmp(name, "separate")) *out = SAEFW_EVAL_FREQ_SEPARATE;
    else return -1;
    return 0;
}

/* The held-out rows: the end of the training stream's first pass, which the stream reaches last. */
static int recons_draw_rows(saefw_recons_evaluator *e, char *err, size_t errlen) {
    const int64_t n = e->batches * e->model_batch, T = saefw_tokens_seq_len(e->tokens);
    if (!(e->rows = saefw_malloc(sizeof(int32_t) * (size_t)(n * T), err, errlen))) return -1;
    const int64_t rows = saefw_tokens_rows(e->tokens), mb = e->model_batch;
    /* A batch at a time, so that a signal stops a large set's draw (seconds at 10000 batches). */
    int rc = 0;
    for (int64_t b = 0; rc == 0 && b < e->batches; b++) {
        if (saefw_stop_requested()) rc = saefw_stop_errf(err, errlen, "reconstruction score's held-out rows");
        else
            rc = saefw_tokens_first_pass(e->tokens, rows - n + b * mb, e->rows + b * mb * T, mb,
                                         saefw_model_config(e->model)->d_vocab, err, errlen);
    }
    if (rc != 0) {
        free(e->rows);
        e->rows = NULL;
        return -1;
    }
    return 0;
}

/* Once the training stream has read into the held-out rows, they are no longer held out. */
static void recons_check_overlap(saefw_recons_evaluator *e, saefw_run *run) {
    const int64_t n = e->batches * e->model_batch, rows = saefw_tokens_rows(e->tokens);
    if (e->warned || (saefw_tokens_pass(e->tokens) == 0 && saefw_tokens_cursor(e->tokens) <= rows - n)) return;
    char msg[320];
    if (n >= rows)
        snprintf(msg, sizeof msg,
                 "reconstruction score: the held-out set (%lld rows) is not smaller than the token "
                 "file (%lld rows): it overlaps the training rows",
                 (long long)n, (long long)rows);
    else
        snprintf(msg, sizeof msg,
                 "reconstruction score: the training stream has reached the %lld held-out rows at the "
                 "end of its first pass; from here they overlap the rows trained on",
                 (long long)n);
    saefw_host_table()->log(run, SAEFW_LOG_WARN, msg);
    e->warned = 1;
}

/* The score with the feature counts of its forward with the SAE (count_freq). */
static int recons_counting(saefw_recons_evaluator *e, const saefw_sae *sae, int with_base, char *err, size_t errlen) {
    if (e->freq_count && e->freq_d_sae != sae->d_sae) {
        free(e->freq_count);
        e->freq_count = NULL;
    }
    if (!e->freq_count && !(e->freq_count = saefw_malloc(sizeof(int64_t) * (size_t)sae->d_sae, err, errlen))) return -1;
    e->freq_d_sae = sae->d_sae;
    memset(e->freq_count, 0, sizeof(int64_t) * (size_t)sae->d_sae);
    e->freq_rows = 0;
    return saefw_recons_score_counting(e->model, e->tokens, e->transcoder ? &e->hook_in : NULL, e->hook, sae, e->rows,
                                       e->batches, e->model_batch, &e->rng, with_base, e->freq_count, &e->freq_rows,
                                       &e->last, err, errlen);
}

/* Data parallel: the means of this rank's nb batches (e->last) become the means over all batches, on
 * every rank: the sums of the ranks' batches added (base: the clean and zero-ablated losses too). */
static int recons_combine(saefw_recons_evaluator *e, int64_t nb, int base, char *err, size_t errlen) {
    const double w = (double)nb;
    double v[3] = {nb && base ? e->last.loss_clean * w : 0, nb ? e->last.loss_recons * w : 0,
                   nb && base ? e->last.loss_zero * w : 0};
    if (saefw_dist_sum_f64(v, 3, err, errlen) != 0) return -1;
    const double all = (double)e->batches;
    e->last.loss_recons = v[1] / all;
    if (base) {
        e->last.loss_clean = v[0] / all;
        e->last.loss_zero = v[2] / all;
    }
    e->last.score = (e->last.loss_zero - e->last.loss_recons) / (e->last.loss_zero - e->last.loss_clean);
    return 0;
}

static int recons_evaluate(saefw_evaluator *ev, saefw_run *run, const saefw_sae *sae, saefw_metrics *m, char *err,
                           size_t errlen) {
    (void)m;
    saefw_recons_evaluator *e = (saefw_recons_evaluator *)ev;
    /* Each rank evaluates its share of the batches (of the held-out rows, or drawn with its own
     * generator); one rank: all of them. Counting the feature frequencies in the same pass serves one
     * rank (data-parallel runs draw theirs apart, summed across ranks). */
    int64_t b0 = 0, nb = 0;
    saefw_dist_share(e->batches, &b0, &nb);
    const int64_t rows_per_batch = e->model_batch * saefw_tokens_seq_len(e->tokens);
    const int counting = e->count_freq && saefw_dist_size() == 1;
    int with_base = 1;
    e->freq_rows = 0;
    if (counting && e->mode == SAEFW_RECONS_FRESH && !e->transcoder) {
        if (recons_counting(e, sae, 1, err, errlen) != 0) return -1;
    } else if (e->transcoder) {
        if (e->mode == SAEFW_RECONS_FIXED && !e->rows && recons_draw_rows(e, err, errlen) != 0) return -1;
        if (e->rows) recons_check_overlap(e, run);
        with_base = !e->rows || !e->has_base;
        if (counting ? recons_counting(e, sae, with_base, err, errlen) != 0
                     : nb > 0 && saefw_transcoder_recons_score(e->model, e->tokens, e->hook_in, e->hook, sae,
                                                               e->rows ? e->rows + b0 * rows_per_batch : NULL, nb,
                                                               e->model_batch, &e->rng, with_base, &e->last, err,
                                                               errlen) != 0)
            return -1;
        if (e->rows && with_base) {
            e->has_base = 1;
            e->base_evals++;
        }
    } else if (e->mode == SAEFW_RECONS_FRESH) {
        if (nb > 0 && saefw_recons_score(e->model, e->tokens, e->hook, sae, nb, e->model_batch, &e->rng, &e->last, err,
                                         errlen) != 0)
            return -1;
    } else {
        const saefw_recons_evaluator *b = e->base_from;
        if (!e->has_base && b && b->has_base && b->rows && b->batches == e->batches &&
            b->model_batch == e->model_batch) {
            const size_t n = (size_t)(e->batches * rows_per_batch);
            if (!e->rows && !(e->rows = saefw_malloc(sizeof(int32_t) * n, err, errlen))) return -1;
            memcpy(e->rows, b->rows, sizeof(int32_t) * n);
            e->last.loss_clean = b->last.loss_clean;
            e->last.loss_zero = b->last.loss_zero;
            e->has_base = 1;
        }
        if (!e->rows && recons_draw_rows(e, err, errlen) != 0) return -1;
        recons_check_overlap(e, run);
        with_base = !e->has_base;
        if (counting
                ? recons_counting(e, sae, with_base, err, errlen) != 0
                : nb > 0 && saefw_recons_score_fixed(e->model, e->tokens, e->hook, sae, e->rows + b0 * rows_per_batch,
                                                     nb, e->model_batch, with_base, &e->last, err, errlen) != 0)
            return -1;
        if (with_base) {
            e->has_base = 1;
            e->base_evals++;
        }
    }
    if (saefw_dist_size() > 1 && recons_combine(e, nb, with_base, err, errlen) != 0) return -1;
    const saefw_host *h = saefw_host_table();
    h->metric(run, "recons_score", e->last.score);
    h->metric(run, "loss_clean", e->last.loss_clean);
    h->metric(run, "loss_recons", e->last.loss_recons);
    h->metric(run, "loss_zero_abl", e->last.loss_zero);
    return 0;
}

/* The fixed rows and their base losses, once drawn (the fresh mode keeps only its generator). */
static int recons_save(saefw_evaluator *ev, saefw_state_out *st, char *err, size_t errlen) {
    saefw_recons_evaluator *e = (saefw_recons_evaluator *)ev;
    if (e->mode != SAEFW_RECONS_FIXED || !e->rows || !e->has_base) return 0;
    const int64_t shape[2] = {e->batches * e->model_batch, saefw_tokens_seq_len(e->tokens)};
    if (saefw_state_put(st, "rows", SAEFW_DT_I32, 2, shape, e->rows, err, errlen) != 0 ||
        saefw_state_put_f64(st, "loss_clean", e->last.loss_clean, err, errlen) != 0 ||
        saefw_state_put_f64(st, "loss_zero_abl", e->last.loss_zero, err, errlen) != 0)
        return -1;
    return 0;
}

static int recons_load(saefw_evaluator *ev, saefw_state_in *st, char *err, size_t errlen) {
    saefw_recons_evaluator *e = (saefw_recons_evaluator *)ev;
    if (e->mode != SAEFW_RECONS_FIXED || !saefw_state_has(st, "rows")) return 0;
    const int64_t n = e->batches * e->model_batch * saefw_tokens_seq_len(e->tokens);
    if (!e->rows && !(e->rows = saefw_malloc(sizeof(int32_t) * (size_t)n, err, errlen))) return -1;
    if (saefw_state_get(st, "rows", SAEFW_DT_I32, n, e->rows, err, errlen) != 0 ||
        saefw_state_get_f64(st, "loss_clean", &e->last.loss_clean, err, errlen) != 0 ||
        saefw_state_get_f64(st, "loss_zero_abl", &e->last.loss_zero, err, errlen) != 0) {
        free(e->rows);
        e->rows = NULL;
        return -1;
    }
    e->has_base = 1;
    return 0;
}

void saefw_recons_evaluator_init(saefw_recons_evaluator *e, const saefw_model *model, const saefw_tokens *tokens,
                                 saefw_hook hook, int64_t batches, int64_t model_batch, saefw_recons_mode mode,
                                 uint64_t seed) {
    memset(e, 0, sizeof *e);
    e->ev.name = "recons_score";
    e->ev.evaluate = recons_evaluate;
    e->ev.rng = &e->rng;
    e->ev.rng_name = "recons_rng";
    e->ev.save_state = recons_save;
    e->ev.load_state = recons_load;
    e->model = model;
    e->tokens = tokens;
    e->hook = hook;
    e->batches = batches;
    e->model_batch = model_batch;
    e->mode = mode;
    saefw_rng_seed(&e->rng, saefw_dist_rank_seed(seed) ^ RECONS_SEED_SALT); /* fresh rows: each rank its own */
}

void saefw_recons_evaluator_free(saefw_recons_evaluator *e) {
    free(e->rows);
    e->rows = NULL;
    e->has_base = 0;
    free(e->freq_count);
    e->freq_count = NULL;
    e->freq_rows = 0;
}

static int recons_feature_freq(saefw_evaluator *ev, float *freq, int64_t d_sae) {
    const saefw_recons_evaluator *e = (const saefw_recons_evaluator *)ev;
    if (!e->count_freq || e->freq_rows <= 0 || !e->freq_count || e->freq_d_sae != d_sae) return 0;
    /* As saefw_feature_frequencies: the count over the rows, in double, then to float. */
    for (int64_t j = 0; j < d_sae; j++) freq[j] = (float)((double)e->freq_count[j] / (double)e->freq_rows);
    return 1;
}

void saefw_recons_evaluator_set_freq(saefw_recons_evaluator *e, saefw_eval_freq_mode mode) {
    e->count_freq = mode == SAEFW_EVAL_FREQ_RECONS || (mode == SAEFW_EVAL_FREQ_AUTO && e->mode == SAEFW_RECONS_FIXED);
    e->ev.feature_freq = e->count_freq ? recons_feature_freq : NULL;
}

static int mmcs_evaluate(saefw_evaluator *ev, saefw_run *run, const saefw_sae *sae, saefw_metrics *m, char *err,
                         size_t errlen) {
    (void)run;
    saefw_mmcs_evaluator *e = (saefw_mmcs_evaluator *)ev;
    double v = saefw_mmcs(e->truth, e->n_truth, sae->p[SAEFW_W_DEC], sae->d_sae, sae->d_in);
    if (saefw_metrics_add_score(m, "mmcs", "MMCS", v) != 0) return saefw_errf(err, errlen, "too many scores");
    return 0;
}

int saefw_mmcs_evaluator_init(saefw_mmcs_evaluator *e, const saefw_source *src, char *err, size_t errlen) {
    memset(e, 0, sizeof *e);
    e->truth = saefw_synthetic_features(src, &e->n_truth);
    if (!e->truth) return saefw_errf(err, errlen, "MMCS: the source has no ground truth (only synthetic sources do)");
    e->ev.name = "mmcs";
    e->ev.evaluate = mmcs_evaluate;
    return 0;
}

int saefw_eval_model_loss(const saefw_model *m, const saefw_tokens *t, saefw_hook hook, saefw_intervene_mode ablate,
                          int64_t batches, int64_t model_batch, uint64_t seed, double *loss, char *err, size_t errlen) {
    if (ablate != SAEFW_INTERVENE_NONE && ablate != SAEFW_INTERVENE_ZERO && ablate != SAEFW_INTERVENE_MEAN)
        return saefw_errf(err, errlen, "model loss: ablation must be none, zero or mean");
    saefw_intervention iv;
    memset(&iv, 0, sizeof iv);
    iv.hook = hook;
    iv.mode = ablate;
    float *mean = NULL;
    saefw_rng rng;
    if (ablate == SAEFW_INTERVENE_MEAN) {
        const int width = saefw_model_hook_width(m, hook);
        if (width <= 0) return saefw_errf(err, errlen, "model loss: the hook site is not in the model");
        if (!(mean = saefw_malloc(sizeof(float) * (size_t)width, err, errlen))) return -1;
        saefw_rng_seed(&rng, seed ^ MEAN_SEED_SALT);
        if (saefw_hook_mean(m, t, hook, batches, model_batch, &rng, mean, err, errlen) != 0) {
            free(mean);
            return -1;
        }
        iv.mean = mean;
    }
    saefw_rng_seed(&rng, seed);
    int rc = saefw_model_loss(m, t, ablate != SAEFW_INTERVENE_NONE ? &iv : NULL, batches, model_batch, &rng, loss, err,
                              errlen);
    free(mean);
    return rc;
}
