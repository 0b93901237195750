/* SAE numerics of the seed recipe on OpenBLAS: dense forward and backward. */
#include "sae.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static const char *const PARAM_NAMES[SAEFW_N_PARAMS] = {"W_enc", "W_dec", "b_enc", "b_dec"};

const char *saefw_param_name(int i) { return (i >= 0 && i < SAEFW_N_PARAMS) ? PARAM_NAMES[i] : NULL; }

int saefw_sae_alloc(saefw_sae *sae, int64_t d_in, int64_t d_sae, float l1_coeff, char *err, size_t errlen) {
    memset(sae, 0, sizeof *sae);
    if (d_in <= 0 || d_sae <= 0) return saefw_errf(err, errlen, "sae: d_in and d_sae must be positive (got %lld, %lld)", (long long)d_in, (long long)d_sae);
    if (d_in > (1 << 20) || d_sae > (1 << 24)) return saefw_errf(err, errlen, "sae: d_in %lld or d_sae %lld too large", (long long)d_in, (long long)d_sae);
    sae->d_in = d_in;
    sae->d_sae = d_sae;
    sae->l1_coeff = l1_coeff;
    /* The {name, shape} table: every other piece (checkpoints, optimizers, tests) walks it. */
    int64_t shapes[SAEFW_N_PARAMS][2] = {{d_in, d_sae}, {d_sae, d_in}, {d_sae, 1}, {d_in, 1}};
    int ndims[SAEFW_N_PARAMS] = {2, 2, 1, 1};
    size_t total = 0;
    for (int i = 0; i < SAEFW_N_PARAMS; i++) {
        sae->shape[i][0] = shapes[i][0];
        sae->shape[i][1] = ndims[i] == 2 ? shapes[i][1] : 0;
        sae->ndim[i] = ndims[i];
        sae->numel[i] = shapes[i][0] * shapes[i][1];
        total += (size_t)sae->numel[i];
    }
    sae->n_total = total;
    sae->params = saefw_calloc(total, sizeof(float), err, errlen);
    sae->grads = saefw_calloc(total, sizeof(float), err, errlen);
    if (!sae->params || !sae->grads) {
        saefw_sae_free(sae);
        return -1;
    }
    size_t off = 0;
    for (int i = 0; i < SAEFW_N_PARAMS; i++) {
        sae->p[i] = sae->params + off;
        sae->g[i] = sae->grads + off;
        off += (size_t)sae->numel[i];
    }
    return 0;
}

void saefw_sae_free(saefw_sae *sae) {
    free(sae->params);
    free(sae->grads);
    memset(sae, 0, sizeof *sae);
}

static void normalize_rows(float *W, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; r++) {
        float *row = W + r * cols;
        double ss = 0;
        for (int64_t c = 0; c < cols; c++) ss += (double)row[c] * row[c];
        float inv = (float)(1.0 / sqrt(ss));
        for (int64_t c = 0; c < cols; c++) row[c] *= inv;
    }
}

void saefw_sae_init_params(saefw_sae *sae, saefw_rng *rng) {
    for (int i = 0; i < 2; i++) {
        double bound = sqrt(6.0 / (double)sae->shape[i][1]);
        float *W = sae->p[i];
        for (int64_t k = 0; k < sae->numel[i]; k++) W[k] = (float)((2.0 * saefw_rng_uniform(rng) - 1.0) * bound);
    }
    memset(sae->p[SAEFW_B_ENC], 0, sizeof(float) * (size_t)sae->d_sae);
    memset(sae->p[SAEFW_B_DEC], 0, sizeof(float) * (size_t)sae->d_in);
    normalize_rows(sae->p[SAEFW_W_DEC], sae->d_sae, sae->d_in);
}

void saefw_sae_param_view(saefw_sae *sae, int i, saefw_param *out) {
    memset(out, 0, sizeof *out);
    out->name = PARAM_NAMES[i];
    out->data = sae->p[i];
    out->grad = sae->g[i];
    out->ndim = sae->ndim[i];
    out->shape[0] = sae->shape[i][0];
    if (sae->ndim[i] == 2) out->shape[1] = sae->shape[i][1];
    out->numel = sae->numel[i];
}

int saefw_sae_work_alloc(saefw_sae_work *w, const saefw_sae *sae, int64_t cap, char *err, size_t errlen) {
    memset(w, 0, sizeof *w);
    w->cap = cap;
    size_t in = (size_t)(cap * sae->d_in), hid = (size_t)(cap * sae->d_sae);
    w->x_cent = saefw_malloc(in * sizeof(float), err, errlen);
    w->acts = saefw_malloc(hid * sizeof(float), err, errlen);
    w->x_hat = saefw_malloc(in * sizeof(float), err, errlen);
    w->dxh = saefw_malloc(in * sizeof(float), err, errlen);
    w->dpre = saefw_malloc(hid * sizeof(float), err, errlen);
    if (!w->x_cent || !w->acts || !w->x_hat || !w->dxh || !w->dpre) {
        saefw_sae_work_free(w);
        return -1;
    }
    return 0;
}

void saefw_sae_work_free(saefw_sae_work *w) {
    free(w->x_cent);
    free(w->acts);
    free(w->x_hat);
    free(w->dxh);
    free(w->dpre);
    memset(w, 0, sizeof *w);
}

void saefw_sae_forward(const saefw_sae *sae, saefw_sae_work *w, const float *x, int64_t B, saefw_sae_stats *stats) {
    const int64_t d_in = sae->d_in, d_sae = sae->d_sae;
    const float *W_enc = sae->p[SAEFW_W_ENC], *W_dec = sae->p[SAEFW_W_DEC];
    const float *b_enc = sae->p[SAEFW_B_ENC], *b_dec = sae->p[SAEFW_B_DEC];
    float *x_cent = w->x_cent, *acts = w->acts, *x_hat = w->x_hat; /* [B,d_in], [B,d_sae], [B,d_in] */

    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < d_in; i++) x_cent[b * d_in + i] = x[b * d_in + i] - b_dec[i];
    /* pre = x_cent @ W_enc, written into acts, then + b_enc and ReLU in place. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)B, (int)d_sae, (int)d_in, 1.0f, x_cent, (int)d_in,
                W_enc, (int)d_sae, 0.0f, acts, (int)d_sae);
    int64_t active = 0;
    double l1 = 0;
    for (int64_t b = 0; b < B; b++) {
        float *a = acts + b * d_sae;
        float row_l1 = 0;
        for (int64_t j = 0; j < d_sae; j++) {
            float v = a[j] + b_enc[j];
            v = v > 0.0f ? v : 0.0f;
            a[j] = v;
            row_l1 += v;
            active += v > 0.0f;
        }
        l1 += row_l1;
    }
    for (int64_t b = 0; b < B; b++) memcpy(x_hat + b * d_in, b_dec, sizeof(float) * (size_t)d_in);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)B, (int)d_in, (int)d_sae, 1.0f, acts, (int)d_sae,
                W_dec, (int)d_in, 1.0f, x_hat, (int)d_in);
    if (!stats) return;
    double l2 = 0, var = 0;
    for (int64_t i = 0; i < d_in; i++) {
        double mean = 0;
        for (int64_t b = 0; b < B; b++) mean += x[b * d_in + i];
        mean /= (double)B;
        for (int64_t b = 0; b < B; b++) {
            double d = (double)x[b * d_in + i] - mean;
            var += d * d;
        }
    }
    for (int64_t k = 0; k < B * d_in; k++) {
        double d = (double)x_hat[k] - (double)x[k];
        l2 += d * d;
    }
    stats->l2 = l2 / (double)B;
    stats->l1 = (double)sae->l1_coeff * l1;
    stats->loss = stats->l2 + stats->l1;
    stats->l0 = (double)active / (double)B;
    stats->explained_variance = var > 0 ? 1.0 - l2 / var : 0.0;
}

void saefw_sae_row_loss(const saefw_sae *sae, const saefw_sae_work *w, const float *x, int64_t B, float *loss) {
    const int64_t d_in = sae->d_in, d_sae = sae->d_sae;
    for (int64_t b = 0; b < B; b++) {
        double l2 = 0, l1 = 0;
        for (int64_t i = 0; i < d_in; i++) {
            double d = (double)w->x_hat[b * d_in + i] - x[b * d_in + i];
            l2 += d * d;
        }
        for (int64_t j = 0; j < d_sae; j++) l1 += w->acts[b * d_sae + j];
        loss[b] = (float)(l2 + sae->l1_coeff * l1);
    }
}

void saefw_sae_backward(saefw_sae *sae, saefw_sae_work *w, const float *x, int64_t B) {
    const int64_t d_in = sae->d_in, d_sae = sae->d_sae;
    const float *W_enc = sae->p[SAEFW_W_ENC], *W_dec = sae->p[SAEFW_W_DEC];
    float *gW_enc = sae->g[SAEFW_W_ENC], *gW_dec = sae->g[SAEFW_W_DEC];
    float *gb_enc = sae->g[SAEFW_B_ENC], *gb_dec = sae->g[SAEFW_B_DEC];
    const float *acts = w->acts, *x_cent = w->x_cent; /* [B,d_sae], [B,d_in] */
    float *dxh = w->dxh, *dpre = w->dpre;               /* [B,d_in], [B,d_sae] */
    const float c2 = 2.0f / (float)B, l1c = sae->l1_coeff;

    /* l2 = mean_b sum_i (x_hat - x)^2  =>  dL/dx_hat = 2/B (x_hat - x). */
    for (int64_t k = 0; k < B * d_in; k++) dxh[k] = c2 * (w->x_hat[k] - x[k]);
    /* b_dec gets the x_hat term here and the x_cent term below. */
    for (int64_t i = 0; i < d_in; i++) gb_dec[i] = 0.0f;
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < d_in; i++) gb_dec[i] += dxh[b * d_in + i];
    /* dW_dec = acts^T @ dxh */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d_sae, (int)d_in, (int)B, 1.0f, acts, (int)d_sae, dxh,
                (int)d_in, 0.0f, gW_dec, (int)d_in);
    /* dacts = dxh @ W_dec^T; the L1 term adds l1_coeff * sign(acts); ReLU passes where acts > 0. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)B, (int)d_sae, (int)d_in, 1.0f, dxh, (int)d_in, W_dec,
                (int)d_in, 0.0f, dpre, (int)d_sae);
    for (int64_t k = 0; k < B * d_sae; k++) dpre[k] = acts[k] > 0.0f ? dpre[k] + l1c : 0.0f;
    for (int64_t j = 0; j < d_sae; j++) gb_enc[j] = 0.0f;
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < d_sae; j++) gb_enc[j] += dpre[b * d_sae + j];
    /* dW_enc = x_cent^T @ dpre */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d_in, (int)d_sae, (int)B, 1.0f, x_cent, (int)d_in, dpre,
                (int)d_sae, 0.0f, gW_enc, (int)d_sae);
    /* x_cent = x - b_dec: sum_b dL/dx_cent = W_enc @ gb_enc, so b_dec's grad is gb_dec - W_enc @ gb_enc. */
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)d_in, (int)d_sae, -1.0f, W_enc, (int)d_sae, gb_enc, 1, 1.0f, gb_dec,
                1);
}

void saefw_sae_project_decoder(saefw_sae *sae) {
    const int64_t d_in = sae->d_in, d_sae = sae->d_sae;
    float *W = sae->p[SAEFW_W_DEC], *G = sae->g[SAEFW_W_DEC]; /* [d_sae, d_in] */
    for (int64_t r = 0; r < d_sae; r++) {
        float *w = W + r * d_in, *g = G + r * d_in;
        double ss = 0;
        for (int64_t c = 0; c < d_in; c++) ss += (double)w[c] * w[c];
        float inv = (float)(1.0 / sqrt(ss));
        double dot = 0;
        for (int64_t c = 0; c < d_in; c++) dot += (double)g[c] * (w[c] * inv);
        float fdot = (float)dot;
        for (int64_t c = 0; c < d_in; c++) {
            float n = w[c] * inv;
            g[c] -= fdot * n;
            w[c] = n;
        }
    }
}
