/* Feature analysis of a trained SAE (what `saefw features` reports): one streaming pass of the model
 * and the SAE over a token file gives, per feature, its top-k activating contexts, samples from lower
 * activation bands, the histogram of its nonzero activations, density, mean and max activation; the
 * weights give its logit effects and the decoder's neuron-basis sparsity. Memory is bounded by the
 * per-feature lists, whatever the number of tokens. (Not "features.h": that would shadow libc's.) */
#ifndef SAEFW_FEATURES_ANALYSIS_H
#define SAEFW_FEATURES_ANALYSIS_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "sae.h"
#include "tokens.h"

/* How token ids are shown. token_bytes writes the bytes of token id into buf (at most cap) and
 * returns their number, or -1 when the id has no bytes (the caller then shows "#id"). A BPE
 * tokenizer plugs in here; with token_bytes NULL every token is shown as "#id". */
typedef struct {
    const char *name; /* for the report ("bytes", a tokenizer's name); NULL: ids only */
    int (*token_bytes)(void *ud, int32_t id, char *buf, size_t cap);
    void *ud;
} saefw_token_decoder;

/* The byte-level decoder of tiny-1l: ids 0..255 are the bytes themselves, bos_id is "<|BOS|>". */
void saefw_token_decoder_bytes(saefw_token_decoder *d, int32_t bos_id);

/* The tokens of a loaded tokenizer.json (borrowed: t must outlive d), shown as its bytes. */
struct saefw_tokenizer;
void saefw_token_decoder_tokenizer(saefw_token_decoder *d, const struct saefw_tokenizer *t, const char *name);

/* How a model's tokens are shown: its tokenizer.json when one resolves for model_name (loaded into
 * *tok, which the caller frees with saefw_tokenizer_free after d's last use), else the bytes of a
 * byte-level model (bytes >= 0: its BOS id), else ids. Returns 0, or 1 for ids with the reason in
 * why. */
int saefw_token_decoder_for_model(saefw_token_decoder *d, const char *model_name, int32_t bytes,
                                  struct saefw_tokenizer **tok, char *why, size_t whyn);

/* Display text of one token into out (NUL-terminated, truncated to cap): its bytes where they are
 * valid UTF-8, each invalid byte (such as one byte of a multi-byte character that the tokenizer split
 * across tokens) as the four characters \xNN; "#id" when the decoder has no bytes for it. Returns
 * the length written. */
size_t saefw_token_text(const saefw_token_decoder *d, int32_t id, char *out, size_t cap);

typedef struct {
    int64_t n_tokens;          /* tokens to analyse, rounded up to whole rows (<= 0: SAEFW_FEATURES_TOKENS,
                                * or the whole file when smaller) */
    int top_k;                 /* top contexts per feature (20) */
    int ctx_before, ctx_after; /* context tokens around the max token, within its row (12, 4) */
    int n_bands, band_k;       /* quantile samples: activation bands [2^e, 2^(e+1)) below the max (4),
                                * examples kept per band by reservoir sampling (5) */
    int n_logits;              /* promoted and suppressed tokens per feature (10) */
    int64_t batch_rows;        /* token rows per forward pass (16) */
    uint64_t seed;             /* reservoir sampling */
    /* Called after each batch with tokens done and total (may be NULL). */
    void (*progress)(void *ud, int64_t done, int64_t total);
    void *progress_ud;
    double rare_threshold; /* the rare direction's density threshold (SAEFW_RARE_THRESHOLD) */
} saefw_features_opts;

#define SAEFW_FEATURES_TOKENS ((int64_t)1 << 20)
/* Bins of the internal activation histogram; its width doubles as larger activations arrive, so at
 * least half of the bins are reported. */
#define SAEFW_FEATURES_HIST_BINS 64

void saefw_features_default_opts(saefw_features_opts *o);

typedef struct {
    float max;       /* activation at pos */
    int64_t pos;     /* index of the token in the analysed stream: row * seq_len + position */
    int32_t n, at;   /* context length, index of pos in it */
    int32_t *tokens; /* [n] */
    float *acts;     /* [n]: this feature's activation at each context token */
} saefw_feature_example;

typedef struct {
    double lo, hi; /* activations in [lo, hi) */
    int64_t seen;  /* activations in the band (after the band entered the window of the max) */
    int n;
    saefw_feature_example *ex; /* [n], descending by max */
} saefw_feature_band;

typedef struct {
    int64_t n_nonzero;
    double density, mean_act; /* n_nonzero / tokens; sum of activations / tokens */
    float max_act;
    int n_hist; /* histogram of the nonzero activations: bin i is [i w, (i + 1) w) */
    double hist_width;
    int64_t *hist; /* [n_hist], sums to n_nonzero */
    int n_top;
    saefw_feature_example *top; /* [n_top], descending by max (ties: earlier pos first) */
    int n_bands;
    saefw_feature_band *bands;  /* [n_bands], highest band first */
    int n_logits;               /* 0 when the site has no logit effects */
    int32_t *pos_ids, *neg_ids; /* [n_logits]: promoted (descending), suppressed (ascending) */
    float *pos_values, *neg_values;
    int neuron_class; /* decoder row: 1: 1-sparse, 10: 10-sparse, 0: dense, -1: not an MLP site */
} saefw_feature_info;

#define SAEFW_RARE_BINS 20
#define SAEFW_RARE_THRESHOLD 1e-4

typedef struct {
    int64_t d_in, d_sae, d_vocab, seq_len, tokens_analyzed;
    int top_k, ctx_before, ctx_after;
    uint64_t seed;
    int64_t one_sparse, ten_sparse, dense; /* neuron_class counts; all -1 when not an MLP site */
    /* The seed's rare direction (as `saefw analyze`): the normalised mean encoder column of the live
     * features with density below rare_threshold, and the cosines of their columns with it in
     * SAEFW_RARE_BINS bins over [-1, 1]. n_rare 0: no such feature. */
    double rare_threshold;
    int64_t n_rare;
    int64_t rare_cos_hist[SAEFW_RARE_BINS];
    saefw_feature_info *f; /* [d_sae] */
    void *impl;            /* the memory behind the lists */
} saefw_features;

/* Analyse sae at hook of model over the first n_tokens of tok (rows in file order, with the tokens'
 * BOS rule). The SAE's d_in must equal the hook's width; an empty token file is an error, and so is a
 * transcoder (its W_dec rows live at another site). Logit effects: see saefw_feature_logit_effects.
 * Results do not depend on the thread count. Free *out with saefw_features_free. */
int saefw_features_run(const saefw_model *model, const saefw_tokens *tok, saefw_hook hook, const saefw_sae *sae,
                       const saefw_features_opts *o, saefw_features **out, char *err, size_t errlen);
void saefw_features_free(saefw_features *f);

/* Direct logit effects of features [f0, f0 + n) into out [n, d_vocab]: the decoder row (through the
 * layer's W_out for an mlp.hook_post site), centred over d_model and scaled by ln_final.w (the final
 * LayerNorm folded in as TransformerLens's fold_ln and center_writing_weights do; its division by the
 * standard deviation, a positive per-token scale, is left out), times W_U, then centred over the vocab
 * (center_unembed). b_U and ln_final.b are left out: they do not depend on the feature. Only the
 * direct path: later layers of a deeper model are not followed. -1 with err when out of memory. */
int saefw_feature_logit_effects(const saefw_model *model, saefw_hook hook, const saefw_sae *sae, int64_t f0, int64_t n,
                                float *out, char *err, size_t errlen);

/* The seed's neuron-basis sparsity of one decoder row [d] (1L-Sparse-Autoencoder analysis.py): with
 * s = the squares of its entries sorted descending, top1 = s[0] / sum s and top10 = (s[0] + ... +
 * s[9]) / sum s: 1 ("1-sparse") when top1 > 0.35 and top10 - top1 < 0.1, else 10 ("10-sparse") when
 * top10 > 0.35, else 0 ("dense"). */
int saefw_neuron_sparsity_class(const float *row, int64_t d);

#endif
