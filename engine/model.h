/* The model host: the "neel" family of transformers (gelu-1l, gelu-2l, ...) with TransformerLens
 * semantics, fp32 on OpenBLAS; reading and intervening at hook sites. */
#ifndef SAEFW_MODEL_H
#define SAEFW_MODEL_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int n_layers, d_model, d_mlp, d_head, n_heads, n_ctx, d_vocab;
    char act_fn[16];        /* "gelu" (exact erf) is the one supported */
    char normalization[16]; /* "LN" */
    float ln_eps;           /* 1e-5 */
} saefw_model_cfg;

/* Hook sites, by TransformerLens name: blocks.L.hook_resid_pre, blocks.L.hook_resid_mid,
 * blocks.L.mlp.hook_post, blocks.L.hook_mlp_out, blocks.L.hook_resid_post; and, appended,
 * blocks.L.ln1.hook_normalized, blocks.L.ln2.hook_normalized (LayerNorm output before its gain and
 * bias), blocks.L.attn.hook_q/hook_k/hook_v/hook_z ([pos, head, d_head] per row),
 * blocks.L.attn.hook_pattern ([batch, head, q, k]: not one row per token), blocks.L.mlp.hook_pre
 * (before the GELU) and ln_final.hook_normalized (no layer; stored as layer 0). The appended sites
 * can be captured; of them only mlp.hook_pre and attn.hook_z take interventions. */
typedef enum {
    SAEFW_HOOK_RESID_PRE = 0,
    SAEFW_HOOK_RESID_MID,
    SAEFW_HOOK_MLP_POST,
    SAEFW_HOOK_MLP_OUT,
    SAEFW_HOOK_RESID_POST,
    SAEFW_HOOK_LN1_NORMALIZED,
    SAEFW_HOOK_ATTN_Q,
    SAEFW_HOOK_ATTN_K,
    SAEFW_HOOK_ATTN_V,
    SAEFW_HOOK_ATTN_PATTERN,
    SAEFW_HOOK_ATTN_Z,
    SAEFW_HOOK_LN2_NORMALIZED,
    SAEFW_HOOK_MLP_PRE,
    SAEFW_HOOK_LN_FINAL_NORMALIZED,
} saefw_hook_kind;

typedef struct {
    saefw_hook_kind kind;
    int layer;
} saefw_hook;

/* Parse a full name ("blocks.0.mlp.hook_post") or a short one ("post", "mlp_post", "resid_pre",
 * "resid_mid", "mlp_out", "resid_post", also "hook_post" etc.) with the given layer. A short name
 * needs layer >= 0; a full name carries its layer, and `layer` must then be -1 or the same.
 * The layer's range is checked against a model by saefw_model_hook_resolve. */
int saefw_hook_parse(const char *name, int layer, saefw_hook *out, char *err, size_t errlen);
/* Canonical TransformerLens name into buf ("blocks.0.mlp.hook_post"). */
void saefw_hook_name(saefw_hook h, char *buf, size_t n);

typedef struct saefw_model saefw_model;

/* Parse a Hugging Face / TransformerLens config.json (keys n_layers, d_model, d_mlp, d_head, n_heads,
 * n_ctx, d_vocab, act_fn, normalization or normalization_type); unknown act_fn/normalization refused. */
int saefw_model_cfg_from_json(const char *json_text, const char *what, saefw_model_cfg *cfg, char *err, size_t errlen);

/* Load weights from a safetensors file or a PyTorch zip checkpoint (state dict with TransformerLens
 * names: embed.W_E, pos_embed.W_pos, blocks.L.ln1.w/b, blocks.L.attn.W_Q/W_K/W_V [n_heads, d_model,
 * d_head], W_O [n_heads, d_head, d_model], b_Q/b_K/b_V [n_heads, d_head], b_O, blocks.L.ln2.w/b,
 * blocks.L.mlp.W_in/b_in/W_out/b_out, ln_final.w/b, unembed.W_U, unembed.b_U (zeros if absent);
 * extra buffers such as attn.mask and attn.IGNORE are ignored). If cfg is NULL the shape comes from
 * the safetensors metadata (the same keys as config.json, as strings), else from a config.json in
 * the weights' folder. Every tensor's shape is checked; errors name the file and tensor. Free with
 * saefw_model_free. */
int saefw_model_load(const char *weights_path, const saefw_model_cfg *cfg, saefw_model **out, char *err, size_t errlen);
void saefw_model_free(saefw_model *m);
const saefw_model_cfg *saefw_model_config(const saefw_model *m);
/* Width of the activations at a hook, per token: d_mlp for mlp.hook_post and mlp.hook_pre, n_heads *
 * d_head for attn.hook_q/k/v/z, else d_model; 0 for attn.hook_pattern (not one row per token); -1 if
 * the layer is out of range. */
int saefw_model_hook_width(const saefw_model *m, saefw_hook h);
/* Shape of a capture at h over tokens [B, T], as TransformerLens gives it: [B, T, width],
 * [B, T, n_heads, d_head] for attn.hook_q/k/v/z, [B, n_heads, T, T] for attn.hook_pattern. Returns
 * the number of dimensions (3 or 4), or -1 if the layer is out of range. */
int saefw_model_hook_shape(const saefw_model *m, saefw_hook h, int64_t B, int64_t T, int64_t shape[4]);
/* saefw_hook_parse, then check the layer against the model ("layer 3 out of range: the model has 2 layers"). */
int saefw_model_hook_resolve(const saefw_model *m, const char *name, int layer, saefw_hook *out, char *err,
                             size_t errlen);
/* Parameter count and bytes of the weights. */
size_t saefw_model_param_bytes(const saefw_model *m);
/* All weights as one contiguous block [count] in the model's own layout (W_Q/W_K/W_V of a layer
 * interleaved into one [d_model, 3*n_heads*d_head] matrix); owned by the model. Two loads of the
 * same weights give identical blocks. */
const float *saefw_model_params(const saefw_model *m, size_t *count);

/* A weight the analysis reads, owned by the model, in TransformerLens's layout: "ln_final.w",
 * "ln_final.b" [d_model], "unembed.W_U" [d_model, d_vocab], "unembed.b_U" [d_vocab] (layer ignored),
 * "mlp.W_out" [d_mlp, d_model], "mlp.b_out" [d_model] of `layer`. NULL for other names or layers. */
const float *saefw_model_weight(const saefw_model *m, const char *name, int layer);

typedef enum {
    SAEFW_INTERVENE_NONE = 0,
    SAEFW_INTERVENE_ZERO,    /* set the hook's activations to 0 */
    SAEFW_INTERVENE_MEAN,    /* set every row to `mean` [width] */
    SAEFW_INTERVENE_REPLACE, /* call fn to overwrite the rows in place (e.g. with an SAE's reconstruction) */
} saefw_intervene_mode;

typedef struct {
    saefw_hook hook;
    saefw_intervene_mode mode;
    const float *mean; /* [width] */
    /* Overwrite acts [rows, width] in place; return 0 or -1 with err. A forward may call it several
     * times, in order, each time on the rows of a run of whole sequences. */
    int (*fn)(void *ud, float *acts, int64_t rows, int64_t width, char *err, size_t errlen);
    void *ud;
} saefw_intervention;

/* Scratch space for sequences of up to max_seq tokens. The forward runs in chunks of whole sequences
 * (about 2048 tokens, at most max_batch sequences), so the work's size does not grow with the
 * batch; a forward may take any B. Free with saefw_model_work_free. */
typedef struct saefw_model_work saefw_model_work;
int saefw_model_work_alloc(const saefw_model *m, int64_t max_batch, int64_t max_seq, saefw_model_work **out, char *err,
                           size_t errlen);
void saefw_model_work_free(saefw_model_work *w);
/* Bytes of the work's arrays (0 for NULL). */
size_t saefw_model_work_bytes(const saefw_model_work *w);

/* One more capture site of a forward, with its own output (the shape of saefw_model_hook_shape). */
typedef struct {
    saefw_hook hook;
    float *out;
} saefw_capture;

typedef struct {
    const saefw_hook *capture;              /* read activations here (may be NULL) */
    float *capture_out;                     /* [B*T, width] */
    int stop_after_capture;                 /* stop after the capture hook's layer (no logits or loss) */
    const saefw_intervention *intervention; /* may be NULL */
    float *logits_out;                      /* [B*T, d_vocab], may be NULL */
    double *loss_out;              /* mean next-token cross-entropy over positions 0..T-2 of every row; may be NULL */
    const saefw_capture *captures; /* [n_captures] more sites to read, each at most once (may be NULL) */
    int n_captures;
} saefw_forward_opts;

/* Forward pass over tokens [B, T] (token ids < d_vocab, T <= n_ctx and <= the work's max_seq).
 * Capture happens before the intervention when both are at the same hook. Allocates nothing.
 * Returns -1 with err on bad arguments (naming the first bad token's position) or when the
 * intervention's fn fails. */
int saefw_model_forward(const saefw_model *m, saefw_model_work *w, const int32_t *tokens, int64_t B, int64_t T,
                        const saefw_forward_opts *o, char *err, size_t errlen);

#endif
