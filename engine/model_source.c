/* The model host as an activation source, and the seed's reconstruction score. */
#include "model_source.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "train.h"
#include "util.h"

typedef struct {
    saefw_model_source_opts o;
    saefw_model_work *work;
    int64_t seq_len, width, chunk_seqs;
    int64_t width_in; /* the input site's width: width without a target, else width - the target's */
    int with_target;  /* rows [hook | hook_out] (saefw_source_model_xy) */
    saefw_hook hook_out;
    int32_t *toks;           /* [chunk_seqs, seq_len] */
    float *acts;             /* [chunk_seqs * seq_len, width] */
    float *cap_in, *cap_out; /* with a target: each site's capture [chunk_seqs * seq_len, its width] */
    int64_t have, used;      /* rows of acts produced and already handed out */
    saefw_rng eval_rng;
    /* The training stream at the latest mark: token position, have, used and acts' rows then. */
    int64_t mark_pass, mark_cursor, mark_have, mark_used;
    float *mark_acts; /* [mark_have, width], NULL when mark_have is 0 */
} model_src;

static void tokens_log(void *ud, const char *msg) {
    saefw_source *s = ud;
    if (s->log) s->log(s->log_ud, msg);
}

/* The forward's scratch, made again after model_idle handed it back. */
static int ensure_scratch(model_src *ms, char *err, size_t errlen) {
    const int64_t rows = ms->chunk_seqs * ms->seq_len;
    if (!ms->acts && !(ms->acts = saefw_malloc(sizeof(float) * (size_t)(rows * ms->width), err, errlen))) return -1;
    if (ms->with_target && !ms->cap_in &&
        !(ms->cap_in = saefw_malloc(sizeof(float) * (size_t)(rows * ms->width_in), err, errlen)))
        return -1;
    if (ms->with_target && !ms->cap_out &&
        !(ms->cap_out = saefw_malloc(sizeof(float) * (size_t)(rows * (ms->width - ms->width_in)), err, errlen)))
        return -1;
    if (!ms->work && saefw_model_work_alloc(ms->o.model, ms->chunk_seqs, ms->seq_len, &ms->work, err, errlen) != 0)
        return -1;
    return 0;
}

/* Between buffer fills (every half buffer: 192 steps at the seed's shape) the forward's scratch and,
 * when no rows are pending, the activation chunk go back to the system: tens of MB that the training
 * step can use meanwhile. */
static void model_idle(saefw_source *s) {
    model_src *ms = s->impl;
    saefw_model_work_free(ms->work);
    ms->work = NULL;
    free(ms->cap_in);
    free(ms->cap_out);
    ms->cap_in = ms->cap_out = NULL;
    free(ms->mark_acts); /* the fill is complete: there is nothing to go back to */
    ms->mark_acts = NULL;
    ms->mark_have = 0;
    if (ms->used == ms->have) {
        ms->have = ms->used = 0;
        free(ms->acts);
        ms->acts = NULL;
    }
}

static int run_chunk(model_src *ms, int64_t n_seqs, char *err, size_t errlen) {
    if (ensure_scratch(ms, err, errlen) != 0) return -1;
    saefw_forward_opts fo;
    memset(&fo, 0, sizeof fo);
    fo.capture = &ms->o.hook;
    fo.capture_out = ms->acts;
    fo.stop_after_capture = 1;
    /* A target: the forward stops after the later site, and the rows are joined as [input | target]. */
    saefw_capture in = {ms->o.hook, ms->cap_in};
    if (ms->with_target) {
        fo.capture = &ms->hook_out;
        fo.capture_out = ms->cap_out;
        fo.captures = &in;
        fo.n_captures = 1;
    }
    if (saefw_model_forward(ms->o.model, ms->work, ms->toks, n_seqs, ms->seq_len, &fo, err, errlen) != 0) return -1;
    if (ms->with_target) {
        const int64_t wi = ms->width_in, wo = ms->width - wi;
        for (int64_t r = 0; r < n_seqs * ms->seq_len; r++) {
            memcpy(ms->acts + r * ms->width, ms->cap_in + r * wi, sizeof(float) * (size_t)wi);
            memcpy(ms->acts + r * ms->width + wi, ms->cap_out + r * wo, sizeof(float) * (size_t)wo);
        }
    }
    ms->have = n_seqs * ms->seq_len;
    ms->used = 0;
    return 0;
}

static int model_next(saefw_source *s, float *out, int64_t n, char *err, size_t errlen) {
    model_src *ms = s->impl;
    const int64_t vocab = saefw_model_config(ms->o.model)->d_vocab;
    while (n > 0) {
        if (ms->used == ms->have) {
            if (saefw_tokens_next(ms->o.tokens, ms->toks, ms->chunk_seqs, vocab, err, errlen) != 0) return -1;
            if (run_chunk(ms, ms->chunk_seqs, err, errlen) != 0) return -1;
        }
        int64_t k = ms->have - ms->used < n ? ms->have - ms->used : n;
        memcpy(out, ms->acts + ms->used * ms->width, sizeof(float) * (size_t)(k * ms->width));
        out += k * ms->width;
        ms->used += k;
        n -= k;
    }
    return 0;
}

/* The rows of the current model batch are kept whole, so that a rewound stream saves the same
 * state as one that never moved. */
static int model_mark(saefw_source *s, char *err, size_t errlen) {
    model_src *ms = s->impl;
    free(ms->mark_acts);
    ms->mark_acts = NULL;
    if (ms->have > 0) {
        ms->mark_acts = saefw_malloc(sizeof(float) * (size_t)(ms->have * ms->width), err, errlen);
        if (!ms->mark_acts) return -1;
        memcpy(ms->mark_acts, ms->acts, sizeof(float) * (size_t)(ms->have * ms->width));
    }
    ms->mark_have = ms->have;
    ms->mark_used = ms->used;
    ms->mark_pass = saefw_tokens_pass(ms->o.tokens);
    ms->mark_cursor = saefw_tokens_cursor(ms->o.tokens);
    return 0;
}

static int model_rewind(saefw_source *s, char *err, size_t errlen) {
    model_src *ms = s->impl;
    if (saefw_tokens_seek(ms->o.tokens, ms->mark_pass, ms->mark_cursor, err, errlen) != 0) return -1;
    if (ms->mark_have > 0) {
        if (ensure_scratch(ms, err, errlen) != 0) return -1;
        memcpy(ms->acts, ms->mark_acts, sizeof(float) * (size_t)(ms->mark_have * ms->width));
    }
    ms->have = ms->mark_have;
    ms->used = ms->mark_used;
    return 0;
}

/* Evaluation rows: every position of freshly drawn random sequences, as the seed's get_freqs. */
static int model_sample(saefw_source *s, float *out, int64_t n, char *err, size_t errlen) {
    model_src *ms = s->impl;
    const int64_t vocab = saefw_model_config(ms->o.model)->d_vocab;
    /* The training stream's leftover rows stay valid: evaluation uses its own chunk afterwards. */
    float *keep = NULL;
    int64_t left = ms->have - ms->used;
    if (left > 0) {
        keep = saefw_malloc(sizeof(float) * (size_t)(left * ms->width), err, errlen);
        if (!keep) return -1;
        memcpy(keep, ms->acts + ms->used * ms->width, sizeof(float) * (size_t)(left * ms->width));
    }
    int rc = 0;
    while (n > 0 && rc == 0) {
        int64_t seqs = (n + ms->seq_len - 1) / ms->seq_len;
        if (seqs > ms->chunk_seqs) seqs = ms->chunk_seqs;
        if (saefw_stop_requested()) {
            rc = saefw_stop_errf(err, errlen, "evaluation rows");
            break;
        }
        rc = saefw_tokens_sample(ms->o.tokens, &ms->eval_rng, ms->toks, seqs, vocab, err, errlen);
        if (rc == 0) rc = run_chunk(ms, seqs, err, errlen);
        if (rc == 0) {
            int64_t k = seqs * ms->seq_len < n ? seqs * ms->seq_len : n;
            memcpy(out, ms->acts, sizeof(float) * (size_t)(k * ms->width));
            out += k * ms->width;
            n -= k;
        }
    }
    if (left > 0) memcpy(ms->acts, keep, sizeof(float) * (size_t)(left * ms->width));
    ms->have = left > 0 ? left : 0;
    ms->used = 0;
    free(keep);
    return rc;
}

static int model_save(saefw_source *s, saefw_state_out *st, char *err, size_t errlen) {
    model_src *ms = s->impl;
    int64_t shape[2] = {ms->have, ms->width};
    if (saefw_tokens_save(ms->o.tokens, st, err, errlen) != 0 ||
        saefw_state_put_i64(st, "have", ms->have, err, errlen) != 0 ||
        saefw_state_put_i64(st, "used", ms->used, err, errlen) != 0 ||
        saefw_state_put_rng(st, "eval_rng", &ms->eval_rng, err, errlen) != 0)
        return -1;
    /* Rows of the last model batch not yet handed to the buffer. */
    return ms->have > 0 ? saefw_state_put(st, "pending", SAEFW_DT_F32, 2, shape, ms->acts, err, errlen) : 0;
}

static int model_load(saefw_source *s, saefw_state_in *st, char *err, size_t errlen) {
    model_src *ms = s->impl;
    int64_t have = 0, used = 0;
    if (saefw_tokens_load(ms->o.tokens, st, err, errlen) != 0 ||
        saefw_state_get_i64(st, "have", &have, err, errlen) != 0 ||
        saefw_state_get_i64(st, "used", &used, err, errlen) != 0 ||
        saefw_state_get_rng(st, "eval_rng", &ms->eval_rng, err, errlen) != 0)
        return -1;
    if (have < 0 || have > ms->chunk_seqs * ms->seq_len || used < 0 || used > have)
        return saefw_errf(err, errlen, "training state: the model source was saved with other batch sizes");
    if (have > 0 && (ensure_scratch(ms, err, errlen) != 0 ||
                     saefw_state_get(st, "pending", SAEFW_DT_F32, have * ms->width, ms->acts, err, errlen) != 0))
        return -1;
    ms->have = have;
    ms->used = used;
    return 0;
}

static void model_destroy(saefw_source *s) {
    model_src *ms = s->impl;
    if (ms) {
        saefw_model_work_free(ms->work);
        free(ms->toks);
        free(ms->acts);
        free(ms->cap_in);
        free(ms->cap_out);
        free(ms->mark_acts);
    }
    free(ms);
    free(s);
}

/* Position of a hook kind within a layer, in the forward's order. */
static int kind_rank(saefw_hook_kind k) {
    static const saefw_hook_kind order[] = {SAEFW_HOOK_RESID_PRE,      SAEFW_HOOK_LN1_NORMALIZED,
                                            SAEFW_HOOK_ATTN_Q,         SAEFW_HOOK_ATTN_K,
                                            SAEFW_HOOK_ATTN_V,         SAEFW_HOOK_ATTN_PATTERN,
                                            SAEFW_HOOK_ATTN_Z,         SAEFW_HOOK_RESID_MID,
                                            SAEFW_HOOK_LN2_NORMALIZED, SAEFW_HOOK_MLP_PRE,
                                            SAEFW_HOOK_MLP_POST,       SAEFW_HOOK_MLP_OUT,
                                            SAEFW_HOOK_RESID_POST,     SAEFW_HOOK_LN_FINAL_NORMALIZED};
    for (int i = 0; i < (int)(sizeof order / sizeof *order); i++)
        if (order[i] == k) return i;
    return (int)(sizeof order / sizeof *order);
}

int saefw_hook_before(saefw_hook a, saefw_hook b) {
    /* ln_final comes after every layer whatever its stored layer. */
    const int la = a.kind == SAEFW_HOOK_LN_FINAL_NORMALIZED ? 1 << 30 : a.layer;
    const int lb = b.kind == SAEFW_HOOK_LN_FINAL_NORMALIZED ? 1 << 30 : b.layer;
    return la < lb || (la == lb && kind_rank(a.kind) < kind_rank(b.kind));
}

static int source_model(const saefw_model_source_opts *o, const saefw_hook *hook_out, saefw_source **out, char *err,
                        size_t errlen) {
    *out = NULL;
    int width = saefw_model_hook_width(o->model, o->hook);
    if (width <= 0) return saefw_errf(err, errlen, "model source: layer %d is out of range", o->hook.layer);
    int width_out = 0;
    if (hook_out) {
        width_out = saefw_model_hook_width(o->model, *hook_out);
        if (width_out <= 0)
            return saefw_errf(err, errlen, "model source: the target's layer %d is out of range", hook_out->layer);
        if (!saefw_hook_before(o->hook, *hook_out))
            return saefw_errf(err, errlen,
                              "model source: the target site must come after the input site in the "
                              "forward pass");
    }
    const saefw_model_cfg *cfg = saefw_model_config(o->model);
    int64_t seq_len = saefw_tokens_seq_len(o->tokens);
    if (seq_len > cfg->n_ctx)
        return saefw_errf(err, errlen, "model source: seq_len %lld exceeds the model's context n_ctx %d",
                          (long long)seq_len, cfg->n_ctx);
    if (o->model_batch <= 0 || o->model_batch > SAEFW_MAX_MODEL_BATCH)
        return saefw_errf(err, errlen,
                          "model source: model_batch_size = %lld sequences is not in 1 .. %d (by default "
                          "it is batch_size // seq_len * 16)",
                          (long long)o->model_batch, SAEFW_MAX_MODEL_BATCH);
    saefw_source *s = saefw_calloc(1, sizeof *s, err, errlen);
    model_src *ms = s ? saefw_calloc(1, sizeof *ms, err, errlen) : NULL;
    if (!ms) {
        free(s);
        return -1;
    }
    s->impl = ms;
    s->destroy = model_destroy;
    ms->o = *o;
    ms->with_target = hook_out != NULL;
    if (hook_out) ms->hook_out = *hook_out;
    ms->seq_len = seq_len;
    ms->width_in = width;
    ms->width = width + width_out;
    ms->chunk_seqs = o->model_batch < SAEFW_FORWARD_CHUNK ? o->model_batch : SAEFW_FORWARD_CHUNK;
    ms->toks = saefw_malloc(sizeof(int32_t) * (size_t)(ms->chunk_seqs * seq_len), err, errlen);
    /* The scratch is made now too, so that a source that cannot have it fails here. */
    if (!ms->toks || ensure_scratch(ms, err, errlen) != 0) {
        model_destroy(s);
        return -1;
    }
    saefw_rng_seed(&ms->eval_rng, saefw_dist_rank_seed(o->seed) ^ 0x6d6f64656cULL);
    s->kind = "model";
    s->mem_bytes = (double)saefw_model_param_bytes(o->model) + (double)saefw_model_work_bytes(ms->work) +
                   4.0 * (double)(ms->chunk_seqs * seq_len) * (double)(1 + 2 * ms->width + (hook_out ? ms->width : 0));
    s->d_act = ms->width;
    s->d_target = width_out;
    s->next = model_next;
    s->sample = model_sample;
    s->save_state = model_save;
    s->load_state = model_load;
    s->idle = model_idle;
    s->mark = model_mark;
    s->rewind = model_rewind;
    s->chunk_rows = o->model_batch * seq_len;
    saefw_tokens_set_log(o->tokens, tokens_log, s);
    *out = s;
    return 0;
}

int saefw_source_model(const saefw_model_source_opts *o, saefw_source **out, char *err, size_t errlen) {
    return source_model(o, NULL, out, err, errlen);
}

int saefw_source_model_xy(const saefw_model_source_opts *o, saefw_hook hook_out, saefw_source **out, char *err,
                          size_t errlen) {
    return source_model(o, &hook_out, out, err, errlen);
}

int saefw_source_model_eval_copy(const saefw_source *src, saefw_source **out, char *err, size_t errlen) {
    *out = NULL;
    if (!src->kind || strcmp(src->kind, "model") != 0 || src->destroy != model_destroy)
        return saefw_errf(err, errlen, "model source copy: the source is not a model source");
    const model_src *ms = src->impl;
    if (source_model(&ms->o, ms->with_target ? &ms->hook_out : NULL, out, err, errlen) != 0) return -1;
    (*out)->log = src->log;
    (*out)->log_ud = src->log_ud;
    (*out)->mem_bytes -= (double)saefw_model_param_bytes(ms->o.model); /* the weights are src's */
    /* The token stream's messages stay with the training source. */
    saefw_tokens_set_log(ms->o.tokens, tokens_log, (saefw_source *)src);
    return 0;
}

/* ---- losses and the reconstruction score ---- */

typedef struct {
    const saefw_sae *sae;
    saefw_sae_eval *work;
    /* A transcoder: its input rows, the input site's capture in the same forward [rows, d_in], and the
     * next row the intervention reads (it is called in row order; reset before each forward). */
    const float *x_in;
    int64_t cursor;
    /* Feature counts of the rows the SAE replaces (NULL: not counted) and how many rows they cover. */
    int64_t *count;
    int64_t counted;
} recon_ud;

/* Replace activations by the SAE's reconstruction (a transcoder's output from its input rows), in pieces
 * that fit the SAE's scratch space. */
static int replace_with_sae(void *vud, float *acts, int64_t rows, int64_t width, char *err, size_t errlen) {
    recon_ud *ud = vud;
    const int64_t cap = saefw_sae_eval_cap(ud->work);
    for (int64_t r = 0; r < rows; r += cap) {
        int64_t k = rows - r < cap ? rows - r : cap;
        if (saefw_stop_requested()) return saefw_stop_errf(err, errlen, "reconstruction score");
        const float *in = ud->x_in ? ud->x_in + (ud->cursor + r) * ud->sae->d_in : acts + r * width;
        const float *x_hat = saefw_sae_eval_forward_xy(ud->sae, ud->work, in, NULL, k, NULL);
        /* Counted before x_hat is copied: the pass's activations are what the frequencies are over. */
        if (ud->count && saefw_sae_eval_count_active(ud->sae, ud->work, ud->count, err, errlen) != 0) return -1;
        memcpy(acts + r * width, x_hat, sizeof(float) * (size_t)(k * width));
    }
    if (ud->count) ud->counted += rows;
    ud->cursor += rows;
    return 0;
}

/* Loss of each of the n_iv interventions on the same n_batches batches: drawn at random with rng, or
 * the fixed rows [n_batches * model_batch, T] when rows is not NULL. A NULL entry of ivs is skipped
 * (its loss is left as it was). With cap, intervention 1's forwards also capture cap->hook into
 * cap->out, and *cursor is set to 0 before each of them. */
static int batch_losses(const saefw_model *m, const saefw_tokens *tok, const saefw_intervention *const *ivs,
                        const int *want, int n_iv, int64_t n_batches, int64_t model_batch, saefw_rng *rng,
                        const int32_t *rows, const saefw_capture *cap, int64_t *cursor, double *loss, char *err,
                        size_t errlen) {
    const saefw_model_cfg *cfg = saefw_model_config(m);
    const int64_t T = saefw_tokens_seq_len(tok);
    if (T > cfg->n_ctx)
        return saefw_errf(err, errlen, "seq_len %lld exceeds the model's context n_ctx %d", (long long)T, cfg->n_ctx);
    if (n_batches <= 0 || n_batches > SAEFW_MAX_EVAL_BATCHES)
        return saefw_errf(err, errlen, "loss: batches = %lld is not in 1 .. %d", (long long)n_batches,
                          SAEFW_MAX_EVAL_BATCHES);
    if (model_batch <= 0 || model_batch > SAEFW_MAX_MODEL_BATCH)
        return saefw_errf(err, errlen, "loss: model_batch_size = %lld sequences is not in 1 .. %d",
                          (long long)model_batch, SAEFW_MAX_MODEL_BATCH);
    const int64_t chunk = model_batch < SAEFW_FORWARD_CHUNK ? model_batch : SAEFW_FORWARD_CHUNK;
    saefw_model_work *w = NULL;
    if (saefw_model_work_alloc(m, chunk, T, &w, err, errlen) != 0) return -1;
    int32_t *toks = rows ? NULL : saefw_malloc(sizeof(int32_t) * (size_t)(model_batch * T), err, errlen);
    if (!rows && !toks) {
        saefw_model_work_free(w);
        return -1;
    }
    double *sum_iv = saefw_calloc((size_t)n_iv, sizeof(double), err, errlen);
    if (!sum_iv) {
        free(toks);
        saefw_model_work_free(w);
        return -1;
    }
    int rc = 0;
    for (int64_t b = 0; b < n_batches && rc == 0; b++) {
        const int32_t *bt = rows ? rows + b * model_batch * T : toks;
        if (!rows) rc = saefw_tokens_sample(tok, rng, toks, model_batch, cfg->d_vocab, err, errlen);
        for (int i = 0; i < n_iv && rc == 0; i++) {
            if (want && !want[i]) continue;
            double sum = 0;
            for (int64_t s = 0; s < model_batch && rc == 0; s += chunk) {
                int64_t k = model_batch - s < chunk ? model_batch - s : chunk;
                double l = 0;
                saefw_forward_opts fo;
                memset(&fo, 0, sizeof fo);
                fo.intervention = ivs[i];
                fo.loss_out = &l;
                if (cap && i == 1) {
                    fo.captures = cap;
                    fo.n_captures = 1;
                    *cursor = 0;
                }
                rc = saefw_stop_requested() ? saefw_stop_errf(err, errlen, "model loss")
                                            : saefw_model_forward(m, w, bt + s * T, k, T, &fo, err, errlen);
                sum += l * (double)k; /* each piece's mean is over k rows of equal length */
            }
            sum_iv[i] += sum / (double)model_batch;
        }
    }
    for (int i = 0; i < n_iv; i++)
        if (!want || want[i]) loss[i] = sum_iv[i] / (double)n_batches;
    free(sum_iv);
    free(toks);
    saefw_model_work_free(w);
    return rc;
}

int saefw_model_loss(const saefw_model *m, const saefw_tokens *tok, const saefw_intervention *iv, int64_t n_batches,
                     int64_t model_batch, saefw_rng *rng, double *loss, char *err, size_t errlen) {
    const saefw_intervention *ivs[1] = {iv};
    return batch_losses(m, tok, ivs, NULL, 1, n_batches, model_batch, rng, NULL, NULL, NULL, loss, err, errlen);
}

/* The three losses of the reconstruction score (clean, with the SAE, zero-ablated) on random batches
 * (rows NULL) or fixed rows; want[i] says which (NULL: all). With hook_in (a transcoder) the SAE reads
 * that site's activations of the same forward and its output replaces hook. */
static int recons_losses(const saefw_model *m, const saefw_tokens *tok, saefw_hook hook, const saefw_hook *hook_in,
                         const saefw_sae *sae, int64_t n_batches, int64_t model_batch, saefw_rng *rng,
                         const int32_t *rows, const int *want, int64_t *count, int64_t *counted, double l[3], char *err,
                         size_t errlen) {
    int width = saefw_model_hook_width(m, hook);
    if (width <= 0) return saefw_errf(err, errlen, "reconstruction score: layer %d is out of range", hook.layer);
    if (!hook_in && (sae->transcoder || width != sae->d_in))
        return saefw_errf(err, errlen, "reconstruction score: the hook has width %d but the SAE's d_in is %lld%s",
                          width, (long long)sae->d_in,
                          sae->transcoder ? " (a transcoder needs its input site too)" : "");
    if (hook_in) {
        const int width_in = saefw_model_hook_width(m, *hook_in);
        if (!sae->transcoder || width_in != sae->d_in || width != sae->d_out)
            return saefw_errf(err, errlen,
                              "reconstruction score: the transcoder's sites have widths %d -> %d but the SAE maps "
                              "%lld -> %lld",
                              width_in, width, (long long)sae->d_in, (long long)sae->d_out);
        if (!saefw_hook_before(*hook_in, hook))
            return saefw_errf(err, errlen, "reconstruction score: the input site must come before the target site");
    }
    recon_ud ud = {sae, NULL, NULL, 0, want && !want[1] ? NULL : count, 0};
    const int64_t T = saefw_tokens_seq_len(tok);
    const int64_t chunk = model_batch < SAEFW_FORWARD_CHUNK ? model_batch : SAEFW_FORWARD_CHUNK;
    if ((!want || want[1]) &&
        saefw_sae_eval_alloc(&ud.work, sae, chunk * T < SAEFW_EVAL_PIECE ? chunk * T : SAEFW_EVAL_PIECE, err, errlen) !=
            0)
        return -1;
    saefw_capture cap = {hook_in ? *hook_in : hook, NULL};
    if (hook_in && (!want || want[1])) {
        /* A forward of up to `chunk` sequences captures the input rows of all of them. */
        float *x_in = saefw_malloc(sizeof(float) * (size_t)(chunk * T * sae->d_in), err, errlen);
        if (!x_in) {
            saefw_sae_eval_free(ud.work);
            return -1;
        }
        cap.out = x_in;
        ud.x_in = x_in;
    }
    saefw_intervention recons = {hook, SAEFW_INTERVENE_REPLACE, NULL, replace_with_sae, &ud};
    saefw_intervention zero = {hook, SAEFW_INTERVENE_ZERO, NULL, NULL, NULL};
    const saefw_intervention *ivs[3] = {NULL, &recons, &zero};
    int rc = batch_losses(m, tok, ivs, want, 3, n_batches, model_batch, rng, rows, cap.out ? &cap : NULL, &ud.cursor, l,
                          err, errlen);
    free(cap.out);
    saefw_sae_eval_free(ud.work);
    if (counted) *counted = ud.counted;
    return rc;
}

static void recons_fill(saefw_recons *out, const double l[3]) {
    out->loss_clean = l[0];
    out->loss_recons = l[1];
    out->loss_zero = l[2];
    out->score = (l[2] - l[1]) / (l[2] - l[0]);
}

int saefw_recons_score(const saefw_model *m, const saefw_tokens *tok, saefw_hook hook, const saefw_sae *sae,
                       int64_t n_batches, int64_t model_batch, saefw_rng *rng, saefw_recons *out, char *err,
                       size_t errlen) {
    double l[3];
    if (recons_losses(m, tok, hook, NULL, sae, n_batches, model_batch, rng, NULL, NULL, NULL, NULL, l, err, errlen) !=
        0)
        return -1;
    recons_fill(out, l);
    return 0;
}

int saefw_recons_score_fixed(const saefw_model *m, const saefw_tokens *tok, saefw_hook hook, const saefw_sae *sae,
                             const int32_t *rows, int64_t n_batches, int64_t model_batch, int with_base,
                             saefw_recons *out, char *err, size_t errlen) {
    if (!rows) return saefw_errf(err, errlen, "reconstruction score: no fixed rows");
    double l[3] = {out->loss_clean, 0, out->loss_zero};
    const int want[3] = {with_base, 1, with_base};
    if (recons_losses(m, tok, hook, NULL, sae, n_batches, model_batch, NULL, rows, want, NULL, NULL, l, err, errlen) !=
        0)
        return -1;
    recons_fill(out, l);
    return 0;
}

int saefw_transcoder_recons_score(const saefw_model *m, const saefw_tokens *tok, saefw_hook hook_in,
                                  saefw_hook hook_out, const saefw_sae *sae, const int32_t *rows, int64_t n_batches,
                                  int64_t model_batch, saefw_rng *rng, int with_base, saefw_recons *out, char *err,
                                  size_t errlen) {
    double l[3] = {out->loss_clean, 0, out->loss_zero};
    const int want[3] = {with_base || !rows, 1, with_base || !rows};
    if (recons_losses(m, tok, hook_out, &hook_in, sae, n_batches, model_batch, rows ? NULL : rng, rows, want, NULL,
                      NULL, l, err, errlen) != 0)
        return -1;
    recons_fill(out, l);
    return 0;
}

int saefw_recons_score_counting(const saefw_model *m, const saefw_tokens *tok, const saefw_hook *hook_in,
                                saefw_hook hook, const saefw_sae *sae, const int32_t *rows, int64_t n_batches,
                                int64_t model_batch, saefw_rng *rng, int with_base, int64_t *count, int64_t *counted,
                                saefw_recons *out, char *err, size_t errlen) {
    if (!rows && !rng) return saefw_errf(err, errlen, "reconstruction score: neither fixed rows nor a generator");
    double l[3] = {out->loss_clean, 0, out->loss_zero};
    const int want[3] = {with_base || !rows, 1, with_base || !rows};
    *counted = 0;
    if (recons_losses(m, tok, hook, hook_in, sae, n_batches, model_batch, rows ? NULL : rng, rows, want, count, counted,
                      l, err, errlen) != 0)
        return -1;
    recons_fill(out, l);
    return 0;
}

int saefw_hook_mean(const saefw_model *m, const saefw_tokens *tok, saefw_hook hook, int64_t n_batches,
                    int64_t model_batch, saefw_rng *rng, float *mean, char *err, size_t errlen) {
    int width = saefw_model_hook_width(m, hook);
    if (width <= 0) return saefw_errf(err, errlen, "mean activation: layer %d is out of range", hook.layer);
    if (n_batches <= 0 || n_batches > SAEFW_MAX_EVAL_BATCHES || model_batch <= 0 || model_batch > SAEFW_MAX_MODEL_BATCH)
        return saefw_errf(err, errlen,
                          "mean activation: batches = %lld (1 .. %d) and model_batch_size = %lld (1 .. %d) "
                          "must be in range",
                          (long long)n_batches, SAEFW_MAX_EVAL_BATCHES, (long long)model_batch, SAEFW_MAX_MODEL_BATCH);
    const int64_t T = saefw_tokens_seq_len(tok);
    const int64_t chunk = model_batch < SAEFW_FORWARD_CHUNK ? model_batch : SAEFW_FORWARD_CHUNK;
    saefw_model_work *w = NULL;
    if (saefw_model_work_alloc(m, chunk, T, &w, err, errlen) != 0) return -1;
    int32_t *toks = saefw_malloc(sizeof(int32_t) * (size_t)(chunk * T), err, errlen);
    float *acts = toks ? saefw_malloc(sizeof(float) * (size_t)(chunk * T * width), err, errlen) : NULL;
    double *sum = acts ? saefw_calloc((size_t)width, sizeof(double), err, errlen) : NULL;
    int rc = sum ? 0 : -1;
    int64_t rows = 0;
    for (int64_t b = 0; b < n_batches && rc == 0; b++)
        for (int64_t s = 0; s < model_batch && rc == 0; s += chunk) {
            int64_t k = model_batch - s < chunk ? model_batch - s : chunk;
            rc = saefw_stop_requested()
                     ? saefw_stop_errf(err, errlen, "mean activation")
                     : saefw_tokens_sample(tok, rng, toks, k, saefw_model_config(m)->d_vocab, err, errlen);
            saefw_forward_opts fo;
            memset(&fo, 0, sizeof fo);
            fo.capture = &hook;
            fo.capture_out = acts;
            fo.stop_after_capture = 1;
            if (rc == 0) rc = saefw_model_forward(m, w, toks, k, T, &fo, err, errlen);
            for (int64_t r = 0; rc == 0 && r < k * T; r++)
                for (int i = 0; i < width; i++) sum[i] += acts[r * width + i];
            rows += k * T;
        }
    if (rc == 0)
        for (int i = 0; i < width; i++) mean[i] = (float)(sum[i] / (double)rows);
    free(sum);
    free(acts);
    free(toks);
    saefw_model_work_free(w);
    return rc;
}
