/* A stand-in gelu-1l for the benchmarks: its shapes with random weights, written as safetensors with
 * the config in the metadata, and a token file of random ids from its vocabulary. */
#ifndef SAEFW_BENCH_GELU1L_H
#define SAEFW_BENCH_GELU1L_H

#include <stdio.h>
#include <stdlib.h>

#include "rng.h"
#include "tensorfile.h"
#include "util.h"

enum {
    BENCH_D_MODEL = 512,
    BENCH_D_MLP = 2048,
    BENCH_N_HEADS = 8,
    BENCH_D_HEAD = 64,
    BENCH_N_CTX = 1024,
    BENCH_D_VOCAB = 48262
};

/* n values, normal with standard deviation `scale` (or all `scale` when rng is NULL); NULL when out of memory. */
static float *bench_fill(saefw_rng *rng, size_t n, float scale) {
    float *p = malloc(sizeof(float) * n);
    for (size_t i = 0; p && i < n; i++) p[i] = rng ? (float)(scale * saefw_rng_normal(rng)) : scale;
    return p;
}

/* gelu-1l's weights (random normal 0.02, LayerNorms 1 and 0, biases 0) at path. 0, or -1 with err. */
static int bench_write_gelu1l(const char *path, char *err, size_t errlen) {
    enum {
        D = BENCH_D_MODEL,
        M = BENCH_D_MLP,
        H = BENCH_N_HEADS,
        DH = BENCH_D_HEAD,
        C = BENCH_N_CTX,
        V = BENCH_D_VOCAB
    };
    saefw_rng rng;
    saefw_rng_seed(&rng, 1);
    struct {
        const char *name;
        int ndim;
        int64_t shape[3];
        float *data;
    } t[] = {
        {"embed.W_E", 2, {V, D}, bench_fill(&rng, (size_t)V * D, 0.02f)},
        {"pos_embed.W_pos", 2, {C, D}, bench_fill(&rng, (size_t)C * D, 0.02f)},
        {"blocks.0.ln1.w", 1, {D}, bench_fill(NULL, D, 1)},
        {"blocks.0.ln1.b", 1, {D}, bench_fill(NULL, D, 0)},
        {"blocks.0.attn.W_Q", 3, {H, D, DH}, bench_fill(&rng, (size_t)H * D * DH, 0.02f)},
        {"blocks.0.attn.W_K", 3, {H, D, DH}, bench_fill(&rng, (size_t)H * D * DH, 0.02f)},
        {"blocks.0.attn.W_V", 3, {H, D, DH}, bench_fill(&rng, (size_t)H * D * DH, 0.02f)},
        {"blocks.0.attn.W_O", 3, {H, DH, D}, bench_fill(&rng, (size_t)H * DH * D, 0.02f)},
        {"blocks.0.attn.b_Q", 2, {H, DH}, bench_fill(NULL, H * DH, 0)},
        {"blocks.0.attn.b_K", 2, {H, DH}, bench_fill(NULL, H * DH, 0)},
        {"blocks.0.attn.b_V", 2, {H, DH}, bench_fill(NULL, H * DH, 0)},
        {"blocks.0.attn.b_O", 1, {D}, bench_fill(NULL, D, 0)},
        {"blocks.0.ln2.w", 1, {D}, bench_fill(NULL, D, 1)},
        {"blocks.0.ln2.b", 1, {D}, bench_fill(NULL, D, 0)},
        {"blocks.0.mlp.W_in", 2, {D, M}, bench_fill(&rng, (size_t)D * M, 0.02f)},
        {"blocks.0.mlp.b_in", 1, {M}, bench_fill(NULL, M, 0)},
        {"blocks.0.mlp.W_out", 2, {M, D}, bench_fill(&rng, (size_t)M * D, 0.02f)},
        {"blocks.0.mlp.b_out", 1, {D}, bench_fill(NULL, D, 0)},
        {"ln_final.w", 1, {D}, bench_fill(NULL, D, 1)},
        {"ln_final.b", 1, {D}, bench_fill(NULL, D, 0)},
        {"unembed.W_U", 2, {D, V}, bench_fill(&rng, (size_t)D * V, 0.02f)},
    };
    enum { N = sizeof t / sizeof *t };
    saefw_tensor_ref refs[N];
    int rc = 0;
    for (int i = 0; i < N; i++) {
        if (!t[i].data) rc = saefw_errf(err, errlen, "out of memory");
        refs[i] = (saefw_tensor_ref){t[i].name, SAEFW_DT_F32, t[i].ndim, t[i].shape, t[i].data};
    }
    char v[7][16];
    const int vals[7] = {1, D, M, DH, H, C, V};
    for (int i = 0; i < 7; i++) snprintf(v[i], sizeof v[i], "%d", vals[i]);
    const char *meta[][2] = {{"n_layers", v[0]}, {"d_model", v[1]},  {"d_mlp", v[2]},
                             {"d_head", v[3]},   {"n_heads", v[4]},  {"n_ctx", v[5]},
                             {"d_vocab", v[6]},  {"act_fn", "gelu"}, {"normalization_type", "LN"}};
    if (rc == 0) rc = saefw_safetensors_write(path, refs, N, meta, 9, err, errlen);
    for (int i = 0; i < N; i++) free(t[i].data);
    return rc;
}

/* n random token ids below gelu-1l's vocabulary as a 1-D int32 .npy. 0, or -1 with err. */
static int bench_write_tokens(const char *path, int64_t n, char *err, size_t errlen) {
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)n);
    if (!tok) return saefw_errf(err, errlen, "out of memory");
    saefw_rng rng;
    saefw_rng_seed(&rng, 2);
    for (int64_t i = 0; i < n; i++) tok[i] = (int32_t)saefw_rng_below(&rng, BENCH_D_VOCAB);
    int64_t shape[1] = {n};
    int rc = saefw_npy_write(path, SAEFW_DT_I32, 1, shape, tok, err, errlen);
    free(tok);
    return rc;
}

#endif
