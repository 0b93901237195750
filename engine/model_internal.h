/* What the model host's files share: the model's weights as they lie in memory, and the config and
 * hook checks that loading and the forward both use. Not installed. */
#ifndef SAEFW_MODEL_INTERNAL_H
#define SAEFW_MODEL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "tensorfile.h"

/* ------------------------------------------------------------------------------------------------
 * Weights: one contiguous block carved into named tensors. W_Q, W_K and W_V ([n_heads, d_model,
 * d_head] in the file) are laid out as the column blocks of one W_qkv [d_model, 3*n_heads*d_head],
 * so one sgemm computes every head's queries, keys and values. */

typedef struct {
    float *ln1_w, *ln1_b; /* [d_model] */
    float *W_qkv;         /* [d_model, 3*H*Dh]: column (s*H + h)*Dh + d is head h's Q/K/V (s = 0/1/2) */
    float *b_qkv;         /* [3*H*Dh] */
    float *W_O;           /* [H*Dh, d_model] (the file's [H, Dh, d_model]) */
    float *b_O;           /* [d_model] */
    float *ln2_w, *ln2_b; /* [d_model] */
    float *W_in;          /* [d_model, d_mlp] */
    float *b_in;          /* [d_mlp] */
    float *W_out;         /* [d_mlp, d_model] */
    float *b_out;         /* [d_model] */
} layer_weights;

struct saefw_model {
    saefw_model_cfg cfg;
    float *params; /* [n_params], owns every tensor below */
    size_t n_params;
    float *W_E;            /* [d_vocab, d_model] */
    float *W_pos;          /* [n_ctx, d_model] */
    float *lnf_w, *lnf_b;  /* [d_model] */
    float *W_U;            /* [d_model, d_vocab] */
    float *b_U;            /* [d_vocab] */
    layer_weights *layers; /* [n_layers] */
};

/* Range and support checks of a config however it was made. */
int saefw_model_cfg_check(const saefw_model_cfg *c, const char *what, char *err, size_t errlen);
/* The config from a safetensors file's metadata (the config.json keys as strings). */
int saefw_model_cfg_from_metadata(const saefw_tensorfile *tf, const char *path, saefw_model_cfg *cfg, char *err,
                                  size_t errlen);
/* The config from config.json in the folder of path. Returns 1 if there is none. */
int saefw_model_cfg_from_sibling(const char *path, saefw_model_cfg *cfg, char *err, size_t errlen);
/* A hook's kind and layer checked against the model ("layer 3 out of range: the model has 2 layers"). */
int saefw_model_check_hook(const saefw_model *m, saefw_hook h, char *err, size_t errlen);
/* x = GELU(x) = 0.5 x (1 + erf(x / sqrt 2)) in place, the forward's vectorised GELU (1 + erf within
 * 5e-7 of the exact value, relative: test_gelu); the same result for a value wherever it lies in x. */
void saefw_gelu_inplace(float *x, int64_t n);

#endif
