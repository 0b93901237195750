/* SAE numerics of the seed recipe: parameters, the encoder product on OpenBLAS (in feature tiles whose
 * ReLU pass records the active entries, for the sparse path; in row pieces for the dense path, where the
 * training step also makes a piece's gradients while its activations exist), the training step and the
 * evaluation forward pass built on one forward pass, statistics and the decoder projection. The sparse
 * path's kernels are in sae_sparse.c. Loops over big arrays
 * run on saefw_parallel_for; every output element and every partial sum is computed by one thread
 * over a split that does not depend on the thread count, so results do not either. */
#include "sae.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "parallel.h"
#include "sae_arch.h"
#include "sae_kernels.h"
#include "util.h"

static const char *const PARAM_NAMES[SAEFW_N_PARAMS] = {"W_enc", "W_dec", "b_enc", "b_dec"};

const char *saefw_param_name(int i) { return (i >= 0 && i < SAEFW_N_PARAMS) ? PARAM_NAMES[i] : NULL; }

/* Arrays of 2 MiB and more are aligned to 2 MiB and, when `huge`, asked to use transparent huge
 * pages: the kernels read rows scattered over hundreds of MiB and would otherwise miss the TLB on
 * almost every row. Free with free(). */
static void *alloc_big(size_t bytes, int zero, int huge, char *err, size_t errlen) {
    const size_t page2m = (size_t)2 << 20;
    void *p = NULL;
    if (posix_memalign(&p, bytes >= page2m ? page2m : 64, bytes ? bytes : 1) != 0) {
        saefw_errf(err, errlen, "out of memory (%zu bytes)", bytes);
        return NULL;
    }
#ifdef MADV_HUGEPAGE
    if (huge && bytes >= page2m) madvise(p, bytes, MADV_HUGEPAGE); /* advice only: failure changes nothing */
#endif
    if (zero) memset(p, 0, bytes);
    return p;
}

/* Every allocation: an architecture (relu for the transcoder), input and target widths. */
static int sae_alloc(saefw_sae *sae, int64_t d_in, int64_t d_out, int64_t d_sae, float l1_coeff,
                     const saefw_sae_arch_cfg *cfg, char *err, size_t errlen) {
    memset(sae, 0, sizeof *sae);
    if (d_in <= 0 || d_out <= 0 || d_sae <= 0)
        return saefw_errf(err, errlen, "sae: d_in, d_out and d_sae must be positive (got %lld, %lld, %lld)",
                          (long long)d_in, (long long)d_out, (long long)d_sae);
    if (d_in > (1 << 20) || d_out > (1 << 20) || d_sae > (1 << 24))
        return saefw_errf(err, errlen, "sae: d_in %lld, d_out %lld or d_sae %lld too large", (long long)d_in,
                          (long long)d_out, (long long)d_sae);
    sae->d_in = d_in;
    sae->d_out = d_out;
    sae->d_sae = d_sae;
    sae->l1_coeff = l1_coeff;
    if (saefw_sae_arch_check(cfg, d_sae, err, errlen) != 0) return -1;
    if (cfg->arch != SAEFW_ARCH_RELU && d_out != d_in)
        return saefw_errf(err, errlen, "sae: a transcoder (d_out %lld != d_in %lld) is a relu SAE, not %s",
                          (long long)d_out, (long long)d_in, saefw_sae_arch_name(cfg->arch));
    sae->arch = *cfg;
    sae->apply_b_dec_to_input = cfg->arch != SAEFW_ARCH_JUMPRELU; /* JumpReLU's encoder reads x */
    /* The {name, shape} table: every other piece (checkpoints, optimizers, tests) walks it. */
    int64_t shapes[SAEFW_MAX_PARAMS][2] = {{d_in, d_sae}, {d_sae, d_out}, {d_sae, 1},
                                           {d_out, 1},    {d_sae, 1},     {d_sae, 1}};
    int ndims[SAEFW_MAX_PARAMS] = {2, 2, 1, 1, 1, 1};
    sae->n_params = saefw_arch_names(cfg->arch, sae->names);
    size_t total = 0;
    for (int i = 0; i < sae->n_params; i++) {
        sae->shape[i][0] = shapes[i][0];
        sae->shape[i][1] = ndims[i] == 2 ? shapes[i][1] : 0;
        sae->ndim[i] = ndims[i];
        sae->numel[i] = shapes[i][0] * shapes[i][1];
        total += (size_t)sae->numel[i];
    }
    sae->n_total = total;
    sae->params = alloc_big(total * sizeof(float), 1, 1, err, errlen);
    sae->grads = sae->params ? alloc_big(total * sizeof(float), 1, 1, err, errlen) : NULL;
    if (sae->grads && (cfg->arch == SAEFW_ARCH_TOPK || cfg->arch == SAEFW_ARCH_BATCHTOPK))
        sae->since_fired = alloc_big((size_t)d_sae * sizeof(int64_t), 1, 0, err, errlen);
    if (!sae->params || !sae->grads ||
        (!sae->since_fired && (cfg->arch == SAEFW_ARCH_TOPK || cfg->arch == SAEFW_ARCH_BATCHTOPK))) {
        saefw_sae_free(sae);
        return -1;
    }
    size_t off = 0;
    for (int i = 0; i < sae->n_params; i++) {
        sae->p[i] = sae->params + off;
        sae->g[i] = sae->grads + off;
        off += (size_t)sae->numel[i];
    }
    return 0;
}

int saefw_sae_alloc_xy(saefw_sae *sae, int64_t d_in, int64_t d_out, int64_t d_sae, float l1_coeff, char *err,
                       size_t errlen) {
    saefw_sae_arch_cfg relu;
    saefw_sae_arch_defaults(&relu, SAEFW_ARCH_RELU, d_in);
    return sae_alloc(sae, d_in, d_out, d_sae, l1_coeff, &relu, err, errlen);
}

int saefw_sae_alloc_arch(saefw_sae *sae, int64_t d_in, int64_t d_sae, float l1_coeff, const saefw_sae_arch_cfg *cfg,
                         char *err, size_t errlen) {
    return sae_alloc(sae, d_in, d_in, d_sae, l1_coeff, cfg, err, errlen);
}

int saefw_sae_alloc(saefw_sae *sae, int64_t d_in, int64_t d_sae, float l1_coeff, char *err, size_t errlen) {
    if (d_in <= 0 || d_sae <= 0) {
        memset(sae, 0, sizeof *sae);
        return saefw_errf(err, errlen, "sae: d_in and d_sae must be positive (got %lld, %lld)", (long long)d_in,
                          (long long)d_sae);
    }
    if (d_in > (1 << 20) || d_sae > (1 << 24)) {
        memset(sae, 0, sizeof *sae);
        return saefw_errf(err, errlen, "sae: d_in %lld or d_sae %lld too large", (long long)d_in, (long long)d_sae);
    }
    return saefw_sae_alloc_xy(sae, d_in, d_in, d_sae, l1_coeff, err, errlen);
}

int saefw_sae_check_options(const saefw_sae *sae, char *err, size_t errlen) {
    if (sae->arch.arch != SAEFW_ARCH_RELU && (sae->l1_weighting != SAEFW_L1_PLAIN || sae->transcoder ||
                                              sae->apply_b_dec_to_input != (sae->arch.arch != SAEFW_ARCH_JUMPRELU)))
        return saefw_errf(err, errlen,
                          "sae: l1_weighting, apply_b_dec_to_input and d_out are options of the relu SAE, not of %s",
                          saefw_sae_arch_name(sae->arch.arch));
    if (sae->l1_weighting != SAEFW_L1_PLAIN && sae->l1_weighting != SAEFW_L1_DECODER_NORM)
        return saefw_errf(err, errlen, "sae: unknown l1_weighting %d", (int)sae->l1_weighting);
    if (sae->transcoder && sae->apply_b_dec_to_input)
        return saefw_errf(err, errlen,
                          "sae: a transcoder needs apply_b_dec_to_input = false (its b_dec [d_out] "
                          "lives in the target's space)");
    if (!sae->transcoder && sae->d_out != sae->d_in)
        return saefw_errf(err, errlen, "sae: d_out %lld differs from d_in %lld, which only a transcoder allows",
                          (long long)sae->d_out, (long long)sae->d_in);
    return 0;
}

const char *saefw_l1_weighting_name(saefw_l1_weighting w) {
    return w == SAEFW_L1_DECODER_NORM ? "decoder_norm" : "plain";
}

int saefw_l1_weighting_parse(const char *s, saefw_l1_weighting *out, char *err, size_t errlen) {
    if (strcmp(s, "plain") == 0) *out = SAEFW_L1_PLAIN;
    else if (strcmp(s, "decoder_norm") == 0) *out = SAEFW_L1_DECODER_NORM;
    else return saefw_errf(err, errlen, "l1_weighting must be \"plain\" or \"decoder_norm\" (got '%s')", s);
    return 0;
}

void saefw_sae_free(saefw_sae *sae) {
    free(sae->params);
    free(sae->grads);
    free(sae->since_fired);
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
    memset(sae->p[SAEFW_B_DEC], 0, sizeof(float) * (size_t)sae->d_out);
    normalize_rows(sae->p[SAEFW_W_DEC], sae->d_sae, sae->d_out);
    if (sae->arch.arch != SAEFW_ARCH_RELU) saefw_arch_init_params(sae);
}

void saefw_sae_init_april(saefw_sae *sae, saefw_rng *rng) {
    const int64_t d_sae = sae->d_sae, d = sae->d_out;
    float *W_dec = sae->p[SAEFW_W_DEC];
    for (int64_t k = 0; k < sae->numel[SAEFW_W_DEC]; k++) W_dec[k] = (float)saefw_rng_normal(rng);
    normalize_rows(W_dec, d_sae, d);
    for (int64_t k = 0; k < sae->numel[SAEFW_W_DEC]; k++) W_dec[k] *= 0.1f;
    /* W_enc = W_dec^T where the shapes allow it (always, outside a transcoder). */
    if (sae->d_in == d)
        for (int64_t j = 0; j < d_sae; j++)
            for (int64_t i = 0; i < d; i++) sae->p[SAEFW_W_ENC][i * d_sae + j] = W_dec[j * d + i];
    memset(sae->p[SAEFW_B_ENC], 0, sizeof(float) * (size_t)d_sae);
    memset(sae->p[SAEFW_B_DEC], 0, sizeof(float) * (size_t)d);
}

int saefw_sae_param_index(const saefw_sae *sae, const char *name) {
    for (int i = 0; name && i < sae->n_params; i++)
        if (strcmp(sae->names[i], name) == 0) return i;
    return -1;
}

void saefw_sae_param_view(saefw_sae *sae, int i, saefw_param *out) {
    memset(out, 0, sizeof *out);
    out->name = sae->names[i];
    out->data = sae->p[i];
    out->grad = sae->g[i];
    out->ndim = sae->ndim[i];
    out->shape[0] = sae->shape[i][0];
    if (sae->ndim[i] == 2) out->shape[1] = sae->shape[i][1];
    out->numel = sae->numel[i];
}

/* ---- work areas and the choice of path ---- */

/* Rows per chunk of the ReLU pass: the unit of its parallel split and of the entry lists. */
#define CHUNK_ROWS 64

static saefw_sae_path g_path = SAEFW_SAE_AUTO;

void saefw_sae_set_path(saefw_sae_path path) { g_path = path; }

static int requested_path(saefw_sae_path *out, char *err, size_t errlen) {
    *out = g_path;
    if (g_path != SAEFW_SAE_AUTO) return 0;
    const char *env = getenv("SAEFW_SAE_PATH");
    if (!env || !*env || strcmp(env, "auto") == 0) return 0;
    if (strcmp(env, "dense") == 0) *out = SAEFW_SAE_DENSE;
    else if (strcmp(env, "sparse") == 0) *out = SAEFW_SAE_SPARSE;
    else return saefw_errf(err, errlen, "SAEFW_SAE_PATH must be auto, dense or sparse (got '%s')", env);
    return 0;
}

static void *alloc_n(saefw_sae_work *w, int64_t n, size_t size, int huge, int *failed, char *err, size_t errlen) {
    if (*failed) return NULL;
    const size_t bytes = (size_t)(n > 0 ? n : 1) * size;
    void *p = alloc_big(bytes, 0, huge, err, errlen);
    if (!p) *failed = 1;
    /* Whole 2 MiB-aligned arrays, which saefw_sae_work_release may hand back. */
    if (p && bytes >= ((size_t)2 << 20) && w->n_big < (int)(sizeof w->big / sizeof w->big[0])) {
        w->big[w->n_big] = p;
        w->big_bytes[w->n_big++] = bytes;
    }
    return p;
}

#ifdef MADV_DONTNEED
/* Hands back the whole pages inside [p, p + bytes) only: madvise rounds the length up to a page, and
 * the rest of an array's last page may be the allocator's header of the next block (zeroing it
 * corrupted the heap). */
static void release_pages(void *p, size_t bytes) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), a = (uintptr_t)p;
    const uintptr_t lo = (a + page - 1) / page * page, hi = (a + bytes) / page * page;
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED); /* advice: may fail */
}
#endif

static void work_release(saefw_sae_work *w) {
    w->acts_made = 0;
#ifdef MADV_DONTNEED
    for (int i = 0; i < w->n_big; i++) release_pages(w->big[i], w->big_bytes[i]);
    if (w->acts) release_pages(w->acts, w->acts_bytes);
#endif
}

/* Feature tiles of the sparse path's encoder product: as many as the blocks of a dense product, so that
 * the shared operand (x_cent) is repacked as often. */
#define N_TILES 8

static void work_free(saefw_sae_work *w);

static int work_alloc(saefw_sae_work *w, const saefw_sae *sae, int64_t cap, char *err, size_t errlen) {
    memset(w, 0, sizeof *w);
    if (cap <= 0) return saefw_errf(err, errlen, "sae: a batch needs at least one row (got %lld)", (long long)cap);
    if (requested_path(&w->path, err, errlen) != 0) return -1;
    const int64_t d_in = sae->d_in, d_out = sae->d_out, d_sae = sae->d_sae;
    w->cap = cap;
    w->chunk_rows = cap < CHUNK_ROWS ? cap : CHUNK_ROWS;
    w->n_chunks = (cap + w->chunk_rows - 1) / w->chunk_rows;
    w->n_tiles = d_sae < N_TILES ? d_sae : N_TILES;
    w->tile_w = (d_sae + w->n_tiles - 1) / w->n_tiles;
    w->n_tiles = (d_sae + w->tile_w - 1) / w->tile_w;
    int64_t slots = saefw_threads();
    w->n_slots = slots < w->n_tiles ? slots : w->n_tiles;
    if (w->path == SAEFW_SAE_DENSE) w->n_slots = 0;
    /* AUTO keeps room for the allowed fraction of the batch, and lets a chunk hold twice its share so
     * that one busy chunk alone does not force the dense path. Pages never written cost no memory. */
    const double frac = SAEFW_SAE_SPARSE_MAX_FRACTION;
    if (w->path == SAEFW_SAE_SPARSE) {
        w->chunk_cap = w->chunk_rows * w->tile_w;
        w->feat_cap = cap * d_sae;
    } else if (w->path == SAEFW_SAE_AUTO) {
        w->chunk_cap = (int64_t)ceil(fmin(1.0, 2.0 * frac) * (double)(w->chunk_rows * w->tile_w));
        w->feat_cap = (int64_t)(frac * (double)(cap * d_sae));
    }
    const int64_t piece = cap < SAEFW_DENSE_PIECE ? cap : SAEFW_DENSE_PIECE;
    int64_t scratch = w->n_slots * cap * w->tile_w;
    if (scratch < 2 * piece * d_sae) scratch = 2 * piece * d_sae;
    const int64_t n_groups = (d_out + SAEFW_SPARSE_GROUP - 1) / SAEFW_SPARSE_GROUP;
    const int64_t n_groups_in = (d_in + SAEFW_SPARSE_GROUP - 1) / SAEFW_SPARSE_GROUP;
    int64_t slab_floats = cap * n_groups * SAEFW_SPARSE_GROUP;
    /* The sparse decoder product's double slabs live in scratch, one per thread at its first group. */
    if (w->path != SAEFW_SAE_DENSE && scratch < 2 * slab_floats) scratch = 2 * slab_floats;
    int failed = 0;
    w->x_cent = alloc_n(w, cap * d_in, sizeof(float), 1, &failed, err, errlen);
    w->x_hat = alloc_n(w, cap * d_out, sizeof(float), 1, &failed, err, errlen);
    w->scratch = alloc_n(w, scratch, sizeof(float), 1, &failed, err, errlen);
    w->row_l1 = alloc_n(w, cap, sizeof(double), 1, &failed, err, errlen);
    w->row_start = alloc_n(w, w->n_tiles * cap, sizeof(int64_t), 1, &failed, err, errlen);
    w->row_len = alloc_n(w, w->n_tiles * cap, sizeof(int32_t), 1, &failed, err, errlen);
    /* The entries by row are written chunk by chunk at spread-out offsets and read in order: normal
     * pages, so that the unused room of each chunk costs no memory. */
    w->act_feat = alloc_n(w, w->n_tiles * w->n_chunks * w->chunk_cap, sizeof(int32_t), 0, &failed, err, errlen);
    w->act_val = alloc_n(w, w->n_tiles * w->n_chunks * w->chunk_cap, sizeof(float), 0, &failed, err, errlen);
    w->chunk_active = alloc_n(w, w->n_tiles * w->n_chunks, sizeof(int64_t), 1, &failed, err, errlen);
    w->chunk_kept = alloc_n(w, w->n_tiles * w->n_chunks, sizeof(int64_t), 1, &failed, err, errlen);
    w->chunk_l1 = alloc_n(w, w->n_tiles * w->n_chunks, sizeof(double), 1, &failed, err, errlen);
    w->feat_start = alloc_n(w, d_sae + 1, sizeof(int64_t), 1, &failed, err, errlen);
    w->feat_next = alloc_n(w, d_sae, sizeof(int64_t), 1, &failed, err, errlen);
    w->feat_row = alloc_n(w, w->feat_cap, sizeof(int32_t), 1, &failed, err, errlen);
    w->feat_act = alloc_n(w, w->feat_cap, sizeof(float), 1, &failed, err, errlen);
    w->feat_grad = alloc_n(w, w->feat_cap, sizeof(float), 1, &failed, err, errlen);
    w->feat_dot = alloc_n(w, w->feat_cap, sizeof(double), 1, &failed, err, errlen);
    /* dxh (dense path) and slab_d (sparse path) are never needed in the same step. */
    w->slab_d = alloc_n(w, slab_floats, sizeof(float), 1, &failed, err, errlen);
    w->dxh = w->slab_d;
    w->slab_x = alloc_n(w, w->path == SAEFW_SAE_DENSE ? 0 : cap * n_groups_in * SAEFW_SPARSE_GROUP, sizeof(float), 1,
                        &failed, err, errlen);
    w->col_stat = alloc_n(w, 3 * d_out, sizeof(double), 1, &failed, err, errlen);
    w->gb_enc_d = alloc_n(w, d_sae, sizeof(double), 1, &failed, err, errlen);
    w->gb_dec_d = alloc_n(w, d_out, sizeof(double), 1, &failed, err, errlen);
    if (sae->l1_weighting == SAEFW_L1_DECODER_NORM) {
        w->dec_norm = alloc_n(w, d_sae, sizeof(double), 1, &failed, err, errlen);
        w->l1w = alloc_n(w, d_sae, sizeof(float), 1, &failed, err, errlen);
        w->act_sum = alloc_n(w, d_sae, sizeof(double), 1, &failed, err, errlen);
    }
    w->dtype = sae->enc_dtype;
    if (w->dtype != SAEFW_ENC_FP32) {
        w->lp_w_enc = alloc_n(w, d_in * d_sae, sizeof(float), 1, &failed, err, errlen);
        w->lp_w_dec = alloc_n(w, d_sae * d_out, sizeof(float), 1, &failed, err, errlen);
        w->lp_acts = alloc_n(w, piece * d_sae, sizeof(float), 1, &failed, err, errlen);
    }
    if (failed) {
        work_free(w);
        return -1;
    }
    return 0;
}

double saefw_sae_work_estimate(int64_t d_in, int64_t d_sae, int64_t cap) {
    /* The arrays of work_alloc on the automatic path; the sparse path's entries are counted
     * at half their room (a chunk's room is twice its share, and a run's L0 keeps them below it). */
    const int64_t chunk_rows = cap < CHUNK_ROWS ? cap : CHUNK_ROWS, n_chunks = (cap + chunk_rows - 1) / chunk_rows;
    int64_t n_tiles = d_sae < N_TILES ? d_sae : N_TILES;
    const int64_t tile_w = (d_sae + n_tiles - 1) / n_tiles;
    n_tiles = (d_sae + tile_w - 1) / tile_w;
    int64_t slots = saefw_threads() < n_tiles ? saefw_threads() : n_tiles;
    const double frac = SAEFW_SAE_SPARSE_MAX_FRACTION;
    const double chunk_cap = ceil(fmin(1.0, 2.0 * frac) * (double)(chunk_rows * tile_w));
    const double feat_cap = frac * (double)(cap * d_sae);
    const int64_t piece = cap < SAEFW_DENSE_PIECE ? cap : SAEFW_DENSE_PIECE;
    double scratch = (double)(slots * cap * tile_w);
    if (scratch < 2.0 * (double)(piece * d_sae)) scratch = 2.0 * (double)(piece * d_sae);
    const double slab = (double)(cap * ((d_in + SAEFW_SPARSE_GROUP - 1) / SAEFW_SPARSE_GROUP) * SAEFW_SPARSE_GROUP);
    double b = 4.0 * (2.0 * (double)(cap * d_in) + scratch + 2.0 * slab) + 8.0 * (double)cap +
               12.0 * (double)(n_tiles * cap) + 24.0 * (double)(n_tiles * n_chunks) + 24.0 * (double)d_sae +
               32.0 * (double)d_in; /* with the bias gradients' double sums */
    /* entries: row, activation and gradient (float), and dL/dacts (double) */
    b += 0.5 * (8.0 * (double)(n_tiles * n_chunks) * chunk_cap + 20.0 * feat_cap);
    return b;
}

double saefw_sae_step_estimate(const saefw_sae *sae, int64_t cap) {
    if (sae->arch.arch != SAEFW_ARCH_RELU) return saefw_arch_work_estimate(sae, cap);
    return saefw_sae_work_estimate(sae->d_in, sae->d_sae, cap);
}

static void work_free(saefw_sae_work *w) {
    free(w->x_cent);
    free(w->x_hat);
    free(w->scratch);
    free(w->acts);
    free(w->row_l1);
    free(w->row_start);
    free(w->row_len);
    free(w->act_feat);
    free(w->act_val);
    free(w->chunk_active);
    free(w->chunk_kept);
    free(w->chunk_l1);
    free(w->feat_start);
    free(w->feat_next);
    free(w->feat_row);
    free(w->feat_act);
    free(w->feat_grad);
    free(w->feat_dot);
    free(w->slab_d);
    free(w->slab_x);
    free(w->col_stat);
    free(w->gb_enc_d);
    free(w->gb_dec_d);
    free(w->dec_norm);
    free(w->l1w);
    free(w->act_sum);
    free(w->lp_w_enc);
    free(w->lp_w_dec);
    free(w->lp_acts);
    memset(w, 0, sizeof *w);
}

/* Sums of eight lanes in a fixed order. */
static inline double sum8d(const double *l) {
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

/* ---- forward ---- */

typedef struct {
    const saefw_sae *sae;
    saefw_sae *train; /* the same SAE in the training step, whose gradients are written; else NULL */
    saefw_sae_work *w;
    const float *x; /* [B, d_in] */
    int64_t B;
    const float *y; /* the target [B, d_out]: x itself outside a transcoder; NULL when there is none */
} step_ctx;

/* x_cent = x - b_dec, or x itself when b_dec is not applied to the input. */
static void center_rows(void *vctx, int64_t b0, int64_t b1) {
    const step_ctx *c = vctx;
    const int64_t d_in = c->sae->d_in;
    const float *b_dec = c->sae->p[SAEFW_B_DEC];
    if (!c->sae->apply_b_dec_to_input) {
        memcpy(c->w->x_cent + b0 * d_in, c->x + b0 * d_in, sizeof(float) * (size_t)((b1 - b0) * d_in));
        return;
    }
    for (int64_t b = b0; b < b1; b++) {
        const float *restrict x = c->x + b * d_in;
        float *restrict xc = c->w->x_cent + b * d_in;
        for (int64_t i = 0; i < d_in; i++) xc[i] = x[i] - b_dec[i];
    }
}

/* One row of pre-activations a [d]: relu(a + bias), written back in place when `store`; the active
 * entries are appended to feat/val while room lasts. Returns the number of active entries; *l1 gets
 * their sum. */
static inline __attribute__((always_inline)) int64_t relu_impl(float *restrict a, const float *restrict bias, int64_t d,
                                                               int32_t *restrict feat, float *restrict val,
                                                               int64_t room, double *l1, const int store) {
    /* The sum goes through 16 float lanes, emptied into double lanes every 256 entries. */
    double wide[16] = {0};
    float lane[16] = {0};
    int64_t n = 0, kept = 0, j = 0;
    for (; j + 16 <= d; j += 16) {
        float v16[16];
        int count = 0;
        for (int k = 0; k < 16; k++) {
            float v = a[j + k] + bias[j + k];
            v = v > 0.0f ? v : 0.0f;
            v16[k] = v;
            if (store) a[j + k] = v;
            lane[k] += v;
            count += v > 0.0f;
        }
        if ((j & 255) == 240)
            for (int k = 0; k < 16; k++) {
                wide[k] += lane[k];
                lane[k] = 0.0f;
            }
        n += count;
        /* Blocks without an active entry, most of them at low L0, are not scanned. */
        if (count == 0 || kept >= room) continue;
        if (kept + 16 <= room) {
            /* Without branches, which dense blocks would mispredict: every slot is written, the
             * cursor moves past the active ones only. */
            for (int k = 0; k < 16; k++) {
                feat[kept] = (int32_t)(j + k);
                val[kept] = v16[k];
                kept += v16[k] > 0.0f;
            }
        } else {
            for (int k = 0; k < 16 && kept < room; k++)
                if (v16[k] > 0.0f) {
                    feat[kept] = (int32_t)(j + k);
                    val[kept++] = v16[k];
                }
        }
    }
    for (; j < d; j++) {
        float v = a[j] + bias[j];
        v = v > 0.0f ? v : 0.0f;
        if (store) a[j] = v;
        lane[0] += v;
        if (v > 0.0f) {
            if (kept < room) {
                feat[kept] = (int32_t)j;
                val[kept++] = v;
            }
            n++;
        }
    }
    for (int k = 0; k < 16; k++) wide[k] += lane[k];
    *l1 = sum8d(wide) + sum8d(wide + 8);
    return n;
}

/* In place (the dense path keeps the activations). */
SAEFW_KERNEL static int64_t relu_row(float *restrict a, const float *restrict bias, int64_t d, int32_t *restrict feat,
                                     float *restrict val, int64_t room, double *l1) {
    return relu_impl(a, bias, d, feat, val, room, l1, 1);
}

/* Entries only (a tile's pre-activations are dropped once its entries are recorded). */
SAEFW_KERNEL static int64_t relu_record(const float *restrict a, const float *restrict bias, int64_t d,
                                        int32_t *restrict feat, float *restrict val, int64_t room, double *l1) {
    return relu_impl((float *)a, bias, d, feat, val, room, l1, 0);
}

/* ---- sparse attempt: the encoder product in feature tiles ---- */

typedef struct {
    const saefw_sae *sae;
    saefw_sae_work *w;
    int64_t B;
    int overflow;      /* a chunk ran out of room: the batch goes to the dense path */
    int64_t next_item; /* the next item of the list to take */
} tile_ctx;

/* The product's work items: whole tiles, then the last TAIL_TILES tiles in TAIL_PIECES row pieces each,
 * so that the workers, which take the items in order as they come free, finish together. A whole tile
 * is too coarse a unit for that, and splitting every tile would repack W_enc's tiles as many times. */
#define TAIL_TILES 2
#define TAIL_PIECES 4

/* Item i of the product's list, which depends on the shapes only: tile *t, rows [*r0, *r1) (whole
 * chunks). Returns 0 past the end. */
static int tile_item(const saefw_sae_work *w, int64_t B, int64_t i, int64_t *t, int64_t *r0, int64_t *r1) {
    const int64_t tail = w->n_tiles < TAIL_TILES ? w->n_tiles : TAIL_TILES, n_whole = w->n_tiles - tail;
    if (i < n_whole) {
        *t = i;
        *r0 = 0;
        *r1 = B;
        return 1;
    }
    i -= n_whole;
    if (i >= tail * TAIL_PIECES) return 0;
    const int64_t chunks = (B + w->chunk_rows - 1) / w->chunk_rows;
    const int64_t per = (chunks + TAIL_PIECES - 1) / TAIL_PIECES * w->chunk_rows, p = i % TAIL_PIECES;
    *t = n_whole + i / TAIL_PIECES;
    *r0 = p * per < B ? p * per : B;
    *r1 = (p + 1) * per < B ? (p + 1) * per : B;
    return 1;
}

/* One item: its pre-activations [r1 - r0, tw] into the worker's scratch (single-threaded OpenBLAS), then
 * the ReLU pass recording the active entries chunk by chunk. A chunk out of room marks the batch dense,
 * and the items not started yet are skipped. */
static void run_tile(tile_ctx *c, int64_t t, int64_t r0, int64_t r1, float *S) {
    saefw_sae_work *w = c->w;
    const int64_t d_in = c->sae->d_in, d_sae = c->sae->d_sae;
    const int64_t j0 = t * w->tile_w, tw = d_sae - j0 < w->tile_w ? d_sae - j0 : w->tile_w;
    if (r0 >= r1) return;
    saefw_lowp_gemm(w->dtype, 0, CblasNoTrans, CblasNoTrans, r1 - r0, tw, d_in, w->x_cent + r0 * d_in, d_in,
                    saefw_w_enc_operand(c->sae, w) + j0, d_sae, 0.0f, S, tw);
    for (int64_t ch = r0 / w->chunk_rows; ch * w->chunk_rows < r1; ch++) {
        const int64_t slot = t * w->n_chunks + ch, base = slot * w->chunk_cap, b0 = ch * w->chunk_rows;
        const int64_t b1 = b0 + w->chunk_rows < r1 ? b0 + w->chunk_rows : r1;
        int64_t kept = 0, active = 0;
        double l1 = 0;
        const int stop = __atomic_load_n(&c->overflow, __ATOMIC_RELAXED);
        for (int64_t b = b0; b < b1; b++) {
            double row_l1;
            const int64_t room = stop ? 0 : w->chunk_cap - kept;
            int64_t n = relu_record(S + (b - r0) * tw, c->sae->p[SAEFW_B_ENC] + j0, tw, w->act_feat + base + kept,
                                    w->act_val + base + kept, room, &row_l1);
            int64_t k = n < room ? n : room;
            w->row_start[t * w->cap + b] = base + kept;
            w->row_len[t * w->cap + b] = (int32_t)k;
            kept += k;
            active += n;
            l1 += row_l1;
        }
        w->chunk_active[slot] = active;
        w->chunk_kept[slot] = kept;
        w->chunk_l1[slot] = l1;
        if (kept < active) __atomic_store_n(&c->overflow, 1, __ATOMIC_RELAXED);
    }
}

/* Worker k takes the next item of the list whenever it is free, with scratch slot k: which items a
 * thread runs changes nothing in the results. */
static void tile_workers(void *vctx, int64_t k0, int64_t k1) {
    tile_ctx *c = vctx;
    saefw_sae_work *w = c->w;
    for (int64_t k = k0; k < k1; k++) {
        float *S = w->scratch + k * w->cap * w->tile_w;
        int64_t t, r0, r1;
        while (!__atomic_load_n(&c->overflow, __ATOMIC_RELAXED) &&
               tile_item(w, c->B, __atomic_fetch_add(&c->next_item, 1, __ATOMIC_RELAXED), &t, &r0, &r1))
            run_tile(c, t, r0, r1, S);
    }
}

/* Runs the tiles; 1 when the batch is sparse enough for the sparse path (*active and *l1 then set). */
static int sparse_attempt(const saefw_sae *sae, saefw_sae_work *w, int64_t B, int64_t *active, double *l1) {
    tile_ctx c = {sae, w, B, 0, 0};
    saefw_parallel_for_blas1(w->n_slots, tile_workers, &c);
    if (c.overflow) return 0;
    const int64_t n_chunks = (B + w->chunk_rows - 1) / w->chunk_rows;
    int64_t a = 0;
    double s = 0;
    for (int64_t t = 0; t < w->n_tiles; t++)
        for (int64_t ch = 0; ch < n_chunks; ch++) {
            a += w->chunk_active[t * w->n_chunks + ch];
            s += w->chunk_l1[t * w->n_chunks + ch];
        }
    const double allowed = SAEFW_SAE_SPARSE_MAX_FRACTION * (double)(B * sae->d_sae);
    if (a > w->feat_cap || (w->path != SAEFW_SAE_SPARSE && (double)a > allowed)) return 0;
    *active = a;
    *l1 = s;
    return 1;
}

/* ---- dense path: pieces of SAEFW_DENSE_PIECE rows ---- */

typedef struct {
    const saefw_sae *sae;
    saefw_sae *train; /* the same SAE in the training step, whose gradients are written; else NULL */
    saefw_sae_work *w;
    const float *x; /* the target [B, d_out] */
    float *acts;    /* the piece's activations [k, d_sae] (pre-activations until the ReLU) */
    float *dpre;    /* [k, d_sae] */
    int64_t r0, k, B;
} piece_ctx;

/* Rows of a piece: ReLU with b_enc, each row's count of active entries and sum. */
static void relu_piece_rows(void *vctx, int64_t b0, int64_t b1) {
    const piece_ctx *c = vctx;
    const int64_t d_sae = c->sae->d_sae;
    for (int64_t b = b0; b < b1; b++) {
        double row_l1;
        c->w->row_len[c->r0 + b] =
            (int32_t)relu_row(c->acts + b * d_sae, c->sae->p[SAEFW_B_ENC], d_sae, NULL, NULL, 0, &row_l1);
        c->w->row_l1[c->r0 + b] = row_l1;
    }
}

static void fill_bias_rows(void *vctx, int64_t b0, int64_t b1) {
    const piece_ctx *c = vctx;
    const int64_t d_out = c->sae->d_out;
    for (int64_t b = b0; b < b1; b++)
        memcpy(c->w->x_hat + (c->r0 + b) * d_out, c->sae->p[SAEFW_B_DEC], sizeof(float) * (size_t)d_out);
}

/* Tiles of a piece's encoder product, in the sparse attempt's columns, so that both paths see the same
 * pre-activations (an entry at the threshold is active on both or on neither). */
static void piece_tiles(void *vctx, int64_t t0, int64_t t1) {
    const piece_ctx *c = vctx;
    const saefw_sae_work *w = c->w;
    const int64_t d_in = c->sae->d_in, d_sae = c->sae->d_sae;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t j0 = t * w->tile_w, tw = d_sae - j0 < w->tile_w ? d_sae - j0 : w->tile_w;
        saefw_lowp_gemm(w->dtype, 0, CblasNoTrans, CblasNoTrans, c->k, tw, d_in, w->x_cent + c->r0 * d_in, d_in,
                        saefw_w_enc_operand(c->sae, w) + j0, d_sae, 0.0f, c->acts + j0, d_sae);
    }
}

/* A piece's activations from x_cent: the encoder product and the ReLU. */
static void piece_acts(piece_ctx *pc) {
    saefw_parallel_for_blas1(pc->w->n_tiles, piece_tiles, pc);
    saefw_parallel_for(pc->k, relu_piece_rows, pc);
}

/* Columns of a range, over a piece's rows: dxh = 2/B (x_hat - x) and b_dec's gradient from the x_hat
 * term, rows summed in order across pieces. */
SAEFW_KERNEL static void dxh_columns(void *vctx, int64_t i0, int64_t i1) {
    const piece_ctx *c = vctx;
    const int64_t d_out = c->sae->d_out;
    const float c2 = 2.0f / (float)saefw_grad_rows(c->w, c->B);
    double *restrict gb_dec = c->w->gb_dec_d;
    if (c->r0 == 0)
        for (int64_t i = i0; i < i1; i++) gb_dec[i] = 0.0;
    for (int64_t b = c->r0; b < c->r0 + c->k; b++) {
        const float *restrict x = c->x + b * d_out, *restrict xh = c->w->x_hat + b * d_out;
        float *restrict d = c->w->dxh + b * d_out;
        for (int64_t i = i0; i < i1; i++) {
            d[i] = c2 * (xh[i] - x[i]);
            gb_dec[i] += d[i];
        }
    }
}

/* The L1 term adds l1_coeff where acts > 0, and the ReLU passes only there. */
SAEFW_KERNEL static void mask_rows(void *vctx, int64_t b0, int64_t b1) {
    const piece_ctx *c = vctx;
    const int64_t d_sae = c->sae->d_sae;
    const float l1c = c->sae->l1_coeff;
    const float *restrict acts = c->acts;
    float *restrict dpre = c->dpre;
    int64_t k = b0 * d_sae;
    /* Masked with bit operations: a conditional here keeps the compiler from vectorising. */
    for (; k + 8 <= b1 * d_sae; k += 8) {
        const v8i on = *(const v8u *)(acts + k) > 0.0f;
        const v8 g = *(const v8u *)(dpre + k) + l1c;
        *(v8iu *)(dpre + k) = (v8i)g & on;
    }
    for (; k < b1 * d_sae; k++) dpre[k] = acts[k] > 0.0f ? dpre[k] + l1c : 0.0f;
}

/* The same with the decoder-norm-weighted L1: feature j's term is l1w[j]. */
SAEFW_KERNEL static void mask_rows_weighted(void *vctx, int64_t b0, int64_t b1) {
    const piece_ctx *c = vctx;
    const int64_t d_sae = c->sae->d_sae;
    const float *restrict l1w = c->w->l1w;
    for (int64_t b = b0; b < b1; b++) {
        const float *restrict acts = c->acts + b * d_sae;
        float *restrict dpre = c->dpre + b * d_sae;
        for (int64_t j = 0; j < d_sae; j++) dpre[j] = acts[j] > 0.0f ? dpre[j] + l1w[j] : 0.0f;
    }
}

/* Decoder-norm-weighted L1: each feature's activations summed over the piece's rows, in order across
 * pieces, in double. */
static void act_sum_columns(void *vctx, int64_t j0, int64_t j1) {
    const piece_ctx *c = vctx;
    const int64_t d_sae = c->sae->d_sae;
    double *restrict sum = c->w->act_sum;
    if (c->r0 == 0)
        for (int64_t j = j0; j < j1; j++) sum[j] = 0.0;
    for (int64_t b = 0; b < c->k; b++) {
        const float *restrict a = c->acts + b * d_sae;
        for (int64_t j = j0; j < j1; j++) sum[j] += a[j];
    }
}

/* Adds the piece's rows to b_enc's gradient, each column in row order, in double; the last piece
 * writes the float gradient. */
SAEFW_KERNEL static void bias_enc_columns(void *vctx, int64_t j0, int64_t j1) {
    const piece_ctx *c = vctx;
    const int64_t d_sae = c->sae->d_sae;
    double *restrict gb_enc = c->w->gb_enc_d;
    if (c->r0 == 0)
        for (int64_t j = j0; j < j1; j++) gb_enc[j] = 0.0;
    for (int64_t b = 0; b < c->k; b++) {
        const float *restrict d = c->dpre + b * d_sae;
        for (int64_t j = j0; j < j1; j++) gb_enc[j] += d[j];
    }
    if (c->r0 + c->k == c->B)
        for (int64_t j = j0; j < j1; j++) c->train->g[SAEFW_B_ENC][j] = (float)gb_enc[j];
}

/* The dense path, piece by piece: activations, x_hat and, in the training step (train: the same SAE),
 * everything the backward pass needs from that piece (x_hat's rows are complete once its piece is done),
 * so that no [B, d_sae] array is needed: dW_dec, dW_enc and b_enc's gradient accumulate over the pieces
 * in order. */
static void dense_pieces(const saefw_sae *sae, saefw_sae *train, saefw_sae_work *w, const float *x, int64_t B) {
    const int64_t d_in = sae->d_in, d_out = sae->d_out, d_sae = sae->d_sae;
    const int64_t P = w->cap < SAEFW_DENSE_PIECE ? w->cap : SAEFW_DENSE_PIECE;
    for (int64_t r0 = 0; r0 < B; r0 += P) {
        const int64_t k = B - r0 < P ? B - r0 : P;
        piece_ctx pc = {sae, train, w, x, w->scratch, w->scratch + P * d_sae, r0, k, B};
        piece_acts(&pc);
        if (w->act_sum) saefw_parallel_for(d_sae, act_sum_columns, &pc);
        saefw_parallel_for(k, fill_bias_rows, &pc);
        /* Under enc_dtype the decoder products read the activations rounded; mask, L0 and L1 the fp32 ones. */
        const float *acts_op = pc.acts;
        if (w->lp_acts) {
            saefw_lowp_round_all(w->lp_acts, pc.acts, k * d_sae, w->dtype, 1.0f);
            acts_op = w->lp_acts;
        }
        const float gscale = saefw_lowp_grad_scale(w->dtype, B);
        saefw_lowp_gemm(w->dtype, 1, CblasNoTrans, CblasNoTrans, k, d_out, d_sae, acts_op, d_sae,
                        saefw_w_dec_operand(sae, w), d_out, 1.0f, w->x_hat + r0 * d_out, d_out);
        if (!train) continue;
        const float beta = r0 == 0 ? 0.0f : 1.0f;
        saefw_parallel_for(d_out, dxh_columns, &pc);
        if (w->dtype != SAEFW_ENC_FP32)
            saefw_lowp_round_all(w->dxh + r0 * d_out, w->dxh + r0 * d_out, k * d_out, w->dtype, gscale);
        /* dW_dec += acts^T @ dxh */
        saefw_lowp_gemm(w->dtype, 1, CblasTrans, CblasNoTrans, d_sae, d_out, k, acts_op, d_sae, w->dxh + r0 * d_out,
                        d_out, beta, train->g[SAEFW_W_DEC], d_out);
        /* dacts = dxh @ W_dec^T, then the L1 term and the ReLU mask. */
        saefw_lowp_gemm(w->dtype, 1, CblasNoTrans, CblasTrans, k, d_sae, d_out, w->dxh + r0 * d_out, d_out,
                        saefw_w_dec_operand(sae, w), d_out, 0.0f, pc.dpre, d_sae);
        saefw_parallel_for(k, w->l1w ? mask_rows_weighted : mask_rows, &pc);
        saefw_parallel_for(d_sae, bias_enc_columns, &pc);
        /* b_enc's gradient above is the fp32 one; dW_enc's product reads dpre rounded. */
        if (w->dtype != SAEFW_ENC_FP32) saefw_lowp_round_all(pc.dpre, pc.dpre, k * d_sae, w->dtype, gscale);
        /* dW_enc += x_cent^T @ dpre */
        saefw_lowp_gemm(w->dtype, 1, CblasTrans, CblasNoTrans, d_in, d_sae, k, w->x_cent + r0 * d_in, d_in, pc.dpre,
                        d_sae, beta, train->g[SAEFW_W_ENC], d_sae);
    }
}

/* ---- the forward pass ---- */

/* Columns of a range: the statistics' sums (saefw_column_stats) against the target. */
SAEFW_KERNEL static void stat_columns(void *vctx, int64_t i0, int64_t i1) {
    const step_ctx *c = vctx;
    const int64_t d_out = c->sae->d_out;
    double *col = c->w->col_stat;
    saefw_column_stats(c->w->x_hat + i0, d_out, c->y + i0, d_out, c->B, i1 - i0, col + i0, col + d_out + i0,
                       col + 2 * d_out + i0);
}

/* Decoder-norm-weighted L1: rows of W_dec in a range, their norms (in double, over eight fixed lanes) and
 * each feature's dL/dacts from the penalty, l1_coeff ||W_dec[j,:]|| / B. */
SAEFW_KERNEL static void dec_norm_rows(void *vctx, int64_t j0, int64_t j1) {
    const step_ctx *c = vctx;
    const int64_t d_out = c->sae->d_out;
    const double scale = (double)c->sae->l1_coeff / (double)saefw_grad_rows(c->w, c->B);
    for (int64_t j = j0; j < j1; j++) {
        const float *restrict r = c->sae->p[SAEFW_W_DEC] + j * d_out;
        double ss[8] = {0};
        int64_t i = 0;
        for (; i + 8 <= d_out; i += 8)
            for (int k = 0; k < 8; k++) ss[k] += (double)r[i + k] * (double)r[i + k];
        for (; i < d_out; i++) ss[0] += (double)r[i] * (double)r[i];
        c->w->dec_norm[j] = sqrt(sum8d(ss));
        c->w->l1w[j] = (float)(scale * c->w->dec_norm[j]);
    }
}

/* Decoder-norm-weighted L1 on the sparse path: each feature's recorded activations summed, rows in
 * order, in double (the dense path's column sums, without its zeros). */
static void act_sum_features(void *vctx, int64_t j0, int64_t j1) {
    const step_ctx *c = vctx;
    const saefw_sae_work *w = c->w;
    for (int64_t j = j0; j < j1; j++) {
        double sum = 0.0;
        for (int64_t e = w->feat_start[j]; e < w->feat_start[j + 1]; e++) sum += w->feat_act[e];
        w->act_sum[j] = sum;
    }
}

/* The forward pass of B rows into w: x_cent, x_hat, and the activations as the recorded entries (sparse
 * path) or to be made again from x_cent (dense path); stats may be NULL. y is the target (x outside a
 * transcoder; NULL when there is none: no training, no l2). With train (the training step: the same SAE,
 * whose gradients are written) the dense path also makes the gradients of W_enc, W_dec and b_enc and
 * b_dec's x_hat term while each piece's activations exist, and the sparse decoder product the statistics'
 * sums and the backward pass's slabs while x_hat's slabs are in cache. */
static void forward(const saefw_sae *sae, saefw_sae *train, saefw_sae_work *w, const float *x, const float *y,
                    int64_t B, saefw_sae_stats *stats) {
    const int64_t d_in = sae->d_in, d_out = sae->d_out, d_sae = sae->d_sae;
    step_ctx c = {sae, train, w, x, B, y};
    w->rows = B;
    w->acts_made = 0;
    saefw_parallel_for(B, center_rows, &c);
    if (w->dtype != SAEFW_ENC_FP32) {
        /* enc_dtype: the products' operands. x_cent feeds only the encoder product and dW_enc's. */
        saefw_lowp_round_all(w->lp_w_enc, sae->p[SAEFW_W_ENC], d_in * d_sae, w->dtype, 1.0f);
        saefw_lowp_round_all(w->lp_w_dec, sae->p[SAEFW_W_DEC], d_sae * d_out, w->dtype, 1.0f);
        saefw_lowp_round_all(w->x_cent, w->x_cent, B * d_in, w->dtype, 1.0f);
    }
    if (w->dec_norm) saefw_parallel_for(d_sae, dec_norm_rows, &c);
    int64_t active = 0;
    double l1 = 0;
    /* The sparse path unless it is ruled out or the last batch was too dense (then straight to the
     * dense path, without computing tiles that would be thrown away). */
    int try_sparse = w->path == SAEFW_SAE_SPARSE || (w->path == SAEFW_SAE_AUTO && !w->predict_dense);
    w->sparse = try_sparse && sparse_attempt(sae, w, B, &active, &l1);
    if (w->sparse) {
        saefw_sparse_index(w, d_sae, B);
        if (w->act_sum) saefw_parallel_for(d_sae, act_sum_features, &c);
        /* The entries as the decoder products' operand (L0 and L1 were taken from the fp32 ones). */
        if (w->dtype != SAEFW_ENC_FP32)
            saefw_lowp_round_all(w->feat_act, w->feat_act, w->feat_start[d_sae], w->dtype, 1.0f);
        saefw_sparse_decode(sae, w, train ? y : NULL, B);
    } else {
        dense_pieces(sae, train, w, y, B);
        for (int64_t b = 0; b < B; b++) {
            active += w->row_len[b];
            l1 += w->row_l1[b];
        }
    }
    if (w->path == SAEFW_SAE_AUTO)
        w->predict_dense = (double)active > SAEFW_SAE_SPARSE_MAX_FRACTION * (double)(B * d_sae);
    if (!stats) return;
    if (w->act_sum) {
        /* The 2024 recipe's penalty: a mean over the batch of the decoder-norm-weighted sums. */
        double s1 = 0;
        for (int64_t j = 0; j < d_sae; j++) s1 += w->dec_norm[j] * w->act_sum[j];
        stats->l1 = (double)sae->l1_coeff * s1 / (double)B;
    } else {
        stats->l1 = (double)sae->l1_coeff * l1;
    }
    stats->l0 = (double)active / (double)B;
    if (!y) {
        stats->l2 = stats->loss = stats->explained_variance = NAN;
        return;
    }
    if (!(w->sparse && train)) saefw_parallel_for(d_out, stat_columns, &c);
    double l2 = 0, var = 0;
    for (int64_t i = 0; i < d_out; i++) {
        l2 += w->col_stat[i];
        var += w->col_stat[2 * d_out + i];
    }
    stats->l2 = l2 / (double)B;
    stats->loss = stats->l2 + stats->l1;
    stats->explained_variance = var > 0 ? 1.0 - l2 / var : 0.0;
}

/* Rows of a range of acts: zero, then the recorded entries (sparse path). */
static void scatter_rows(void *vctx, int64_t b0, int64_t b1) {
    const step_ctx *c = vctx;
    const saefw_sae_work *w = c->w;
    const int64_t d_sae = c->sae->d_sae;
    for (int64_t b = b0; b < b1; b++) {
        float *a = w->acts + b * d_sae;
        memset(a, 0, sizeof(float) * (size_t)d_sae);
        for (int64_t t = 0; t < w->n_tiles; t++) {
            const int64_t s = w->row_start[t * w->cap + b], j0 = t * w->tile_w;
            for (int32_t e = 0; e < w->row_len[t * w->cap + b]; e++) a[j0 + w->act_feat[s + e]] = w->act_val[s + e];
        }
    }
}

/* The activations [rows, d_sae] of the last forward pass, made on the first request after it. */
static const float *work_acts(const saefw_sae *sae, saefw_sae_work *w, char *err, size_t errlen) {
    if (w->acts_made) return w->acts;
    if (!w->acts) {
        w->acts_bytes = sizeof(float) * (size_t)(w->cap * sae->d_sae);
        if (!(w->acts = alloc_big(w->acts_bytes, 0, 1, err, errlen))) return NULL;
    }
    const int64_t B = w->rows;
    if (w->sparse) {
        step_ctx c = {sae, NULL, w, NULL, B, NULL};
        saefw_parallel_for(B, scatter_rows, &c);
    } else {
        /* The dense path keeps no activations: the encoder product again, with the same blocks. */
        const int64_t P = w->cap < SAEFW_DENSE_PIECE ? w->cap : SAEFW_DENSE_PIECE;
        for (int64_t r0 = 0; r0 < B; r0 += P) {
            piece_ctx pc = {sae, NULL, w, NULL, w->acts + r0 * sae->d_sae, NULL, r0, B - r0 < P ? B - r0 : P, B};
            piece_acts(&pc);
        }
    }
    w->acts_made = 1;
    return w->acts;
}

static int work_count_active(const saefw_sae *sae, saefw_sae_work *w, int64_t *count, char *err, size_t errlen) {
    const int64_t d_sae = sae->d_sae, B = w->rows;
    if (w->sparse) {
        /* Each recorded entry is one row on which its feature fired. */
        for (int64_t j = 0; j < d_sae; j++) count[j] += w->feat_start[j + 1] - w->feat_start[j];
        return 0;
    }
    const float *acts = work_acts(sae, w, err, errlen);
    if (!acts) return -1;
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < d_sae; j++) count[j] += acts[b * d_sae + j] > 0.0f;
    return 0;
}

/* ---- the training step ---- */

struct saefw_sae_step {
    saefw_sae_work w;
    saefw_arch_work *aw; /* the other architectures' scratch (sae_arch.c); NULL for relu */
};

/* Rows of W_enc in a range: b_dec's gradient is its x_hat term - W_enc row . gb_enc (x_cent = x - b_dec),
 * from the double sums, rounded once. */
SAEFW_KERNEL static void bias_dec_rows(void *vctx, int64_t i0, int64_t i1) {
    const step_ctx *c = vctx;
    saefw_sae *sae = c->train;
    const int64_t d_sae = sae->d_sae;
    const double *restrict gb_enc = c->w->gb_enc_d;
    for (int64_t i = i0; i < i1; i++) {
        const float *restrict w = sae->p[SAEFW_W_ENC] + i * d_sae;
        double lane[8] = {0};
        int64_t j = 0;
        for (; j + 8 <= d_sae; j += 8)
            for (int k = 0; k < 8; k++) lane[k] += (double)w[j + k] * gb_enc[j + k];
        for (; j < d_sae; j++) lane[0] += (double)w[j] * gb_enc[j];
        sae->g[SAEFW_B_DEC][i] = (float)(c->w->gb_dec_d[i] - sum8d(lane));
    }
}

/* Decoder-norm-weighted L1: rows of W_dec's gradient in a range get the penalty's own term,
 * l1_coeff / B * (sum_b acts[b,j]) * W_dec[j,:] / ||W_dec[j,:]|| (nothing for a zero row). */
SAEFW_KERNEL static void dec_norm_grad_rows(void *vctx, int64_t j0, int64_t j1) {
    const step_ctx *c = vctx;
    saefw_sae *sae = c->train;
    const int64_t d_out = sae->d_out;
    const double scale = (double)sae->l1_coeff / (double)saefw_grad_rows(c->w, c->B);
    for (int64_t j = j0; j < j1; j++) {
        if (!(c->w->dec_norm[j] > 0.0)) continue;
        const float f = (float)(scale * c->w->act_sum[j] / c->w->dec_norm[j]);
        const float *restrict r = sae->p[SAEFW_W_DEC] + j * d_out;
        float *restrict g = sae->g[SAEFW_W_DEC] + j * d_out;
        for (int64_t i = 0; i < d_out; i++) g[i] += f * r[i];
    }
}

void saefw_sae_train_step_xy(saefw_sae *sae, saefw_sae_step *s, const float *x, const float *y, int64_t B,
                             saefw_sae_stats *stats) {
    if (s->aw) {
        /* The other architectures have no target of their own (saefw_sae_check_options). */
        saefw_arch_train_step(sae, s->aw, x, B, stats);
        return;
    }
    saefw_sae_work *w = &s->w;
    if (!y && sae->d_out != sae->d_in) {
        /* No target of the decoder's width: a caller's mistake that must not read past x. */
        memset(sae->grads, 0, sizeof(float) * sae->n_total);
        if (stats) stats->loss = stats->l2 = stats->l1 = stats->l0 = stats->explained_variance = NAN;
        return;
    }
    if (!y) y = x;
    /* l2 = mean_b sum_i (x_hat - y)^2  =>  dL/dx_hat = 2/B (x_hat - y); b_dec gets this term there. On
     * the dense path the forward pass has made the other gradients already. */
    forward(sae, sae, w, x, y, B, stats);
    if (w->sparse) saefw_sparse_backward(sae, w, B);
    step_ctx c = {sae, sae, w, x, B, y};
    if (sae->apply_b_dec_to_input) {
        /* x_cent = x - b_dec: sum_b dL/dx_cent = W_enc @ gb_enc, so b_dec's grad is gb_dec - W_enc @ gb_enc. */
        saefw_parallel_for(sae->d_in, bias_dec_rows, &c);
    } else {
        for (int64_t i = 0; i < sae->d_out; i++) sae->g[SAEFW_B_DEC][i] = (float)w->gb_dec_d[i];
    }
    if (w->act_sum) saefw_parallel_for(sae->d_sae, dec_norm_grad_rows, &c);
}

void saefw_sae_train_step(saefw_sae *sae, saefw_sae_step *s, const float *x, int64_t B, saefw_sae_stats *stats) {
    saefw_sae_train_step_xy(sae, s, x, NULL, B, stats);
}

int saefw_sae_step_alloc(saefw_sae_step **out, const saefw_sae *sae, int64_t cap, char *err, size_t errlen) {
    *out = NULL;
    saefw_sae_step *s = calloc(1, sizeof *s);
    if (!s) return saefw_errf(err, errlen, "out of memory (%zu bytes)", sizeof *s);
    if (sae->arch.arch != SAEFW_ARCH_RELU) {
        saefw_sae_path path;
        if (requested_path(&path, err, errlen) != 0 ||
            saefw_arch_work_alloc(&s->aw, sae, cap, path, err, errlen) != 0) {
            free(s);
            return -1;
        }
        *out = s;
        return 0;
    }
    if (work_alloc(&s->w, sae, cap, err, errlen) != 0) {
        free(s);
        return -1;
    }
    *out = s;
    return 0;
}

void saefw_sae_step_set_norm_rows(saefw_sae_step *s, int64_t rows) {
    s->w.norm_rows = rows;
    if (s->aw) saefw_arch_set_norm_rows(s->aw, rows);
}

void saefw_sae_step_set_fired_exchange(saefw_sae_step *s, void (*fn)(void *ud, unsigned char *fired, int64_t n),
                                       void *ud) {
    if (s->aw) saefw_arch_set_fired_exchange(s->aw, fn, ud);
}

void saefw_sae_step_free(saefw_sae_step *s) {
    if (!s) return;
    if (s->aw) saefw_arch_work_free(s->aw);
    else work_free(&s->w);
    free(s);
}

int64_t saefw_sae_step_cap(const saefw_sae_step *s) { return s->aw ? saefw_arch_cap(s->aw) : s->w.cap; }

void saefw_sae_step_release(saefw_sae_step *s) {
    if (s->aw) saefw_arch_release(s->aw);
    else work_release(&s->w);
}

saefw_sae_path saefw_sae_step_path(const saefw_sae_step *s) {
    if (s->aw) return saefw_arch_sparse(s->aw) ? SAEFW_SAE_SPARSE : SAEFW_SAE_DENSE;
    return s->w.sparse ? SAEFW_SAE_SPARSE : SAEFW_SAE_DENSE;
}

const float *saefw_sae_step_acts(const saefw_sae *sae, saefw_sae_step *s, char *err, size_t errlen) {
    if (s->aw) return saefw_arch_acts(sae, s->aw, err, errlen);
    return work_acts(sae, &s->w, err, errlen);
}

int saefw_sae_step_count_active(const saefw_sae *sae, saefw_sae_step *s, int64_t *count, char *err, size_t errlen) {
    if (s->aw) return saefw_arch_count_active(sae, s->aw, count);
    return work_count_active(sae, &s->w, count, err, errlen);
}

/* ---- evaluation ---- */

struct saefw_sae_eval {
    saefw_sae_work w;
    saefw_arch_work *aw; /* the other architectures' scratch (sae_arch.c); NULL for relu */
};

int saefw_sae_eval_alloc(saefw_sae_eval **out, const saefw_sae *sae, int64_t cap, char *err, size_t errlen) {
    *out = NULL;
    saefw_sae_eval *e = calloc(1, sizeof *e);
    if (!e) return saefw_errf(err, errlen, "out of memory (%zu bytes)", sizeof *e);
    if (sae->arch.arch != SAEFW_ARCH_RELU) {
        saefw_sae_path path;
        if (requested_path(&path, err, errlen) != 0 ||
            saefw_arch_work_alloc(&e->aw, sae, cap, path, err, errlen) != 0) {
            free(e);
            return -1;
        }
        *out = e;
        return 0;
    }
    if (work_alloc(&e->w, sae, cap, err, errlen) != 0) {
        free(e);
        return -1;
    }
    *out = e;
    return 0;
}

void saefw_sae_eval_free(saefw_sae_eval *e) {
    if (!e) return;
    if (e->aw) saefw_arch_work_free(e->aw);
    else work_free(&e->w);
    free(e);
}

int64_t saefw_sae_eval_cap(const saefw_sae_eval *e) { return e->aw ? saefw_arch_cap(e->aw) : e->w.cap; }

const float *saefw_sae_eval_forward_xy(const saefw_sae *sae, saefw_sae_eval *e, const float *x, const float *y,
                                       int64_t B, saefw_sae_stats *stats) {
    if (e->aw) return saefw_arch_eval_forward(sae, e->aw, x, B, stats);
    if (!y && sae->d_out == sae->d_in) y = x;
    forward(sae, NULL, &e->w, x, y, B, stats);
    return e->w.x_hat;
}

const float *saefw_sae_eval_forward(const saefw_sae *sae, saefw_sae_eval *e, const float *x, int64_t B,
                                    saefw_sae_stats *stats) {
    return saefw_sae_eval_forward_xy(sae, e, x, NULL, B, stats);
}

const float *saefw_sae_eval_acts(const saefw_sae *sae, saefw_sae_eval *e, char *err, size_t errlen) {
    if (e->aw) return saefw_arch_acts(sae, e->aw, err, errlen);
    return work_acts(sae, &e->w, err, errlen);
}

int saefw_sae_eval_count_active(const saefw_sae *sae, saefw_sae_eval *e, int64_t *count, char *err, size_t errlen) {
    if (e->aw) return saefw_arch_count_active(sae, e->aw, count);
    return work_count_active(sae, &e->w, count, err, errlen);
}

int saefw_sae_eval_row_loss(const saefw_sae *sae, saefw_sae_eval *e, const float *x, float *loss, char *err,
                            size_t errlen) {
    if (e->aw) return saefw_arch_row_loss(sae, e->aw, x, loss);
    const int64_t d_out = sae->d_out, d_sae = sae->d_sae, B = e->w.rows;
    const float *acts = work_acts(sae, &e->w, err, errlen);
    if (!acts) return -1;
    for (int64_t b = 0; b < B; b++) {
        double l2 = 0, l1 = 0;
        for (int64_t i = 0; i < d_out; i++) {
            double d = (double)e->w.x_hat[b * d_out + i] - x[b * d_out + i];
            l2 += d * d;
        }
        /* The row's own penalty: weighted by the decoder norms (not divided by the batch) when asked. */
        if (e->w.dec_norm)
            for (int64_t j = 0; j < d_sae; j++) l1 += acts[b * d_sae + j] * e->w.dec_norm[j];
        else
            for (int64_t j = 0; j < d_sae; j++) l1 += acts[b * d_sae + j];
        loss[b] = (float)(l2 + sae->l1_coeff * l1);
    }
    return 0;
}

int saefw_sae_eval_entries(const saefw_sae_eval *e, saefw_sae_entries *out) {
    if (e->aw || !e->w.sparse) return 0;
    out->start = e->w.feat_start;
    out->row = e->w.feat_row;
    out->act = e->w.feat_act;
    return 1;
}

/* ---- decoder projection ---- */

/* Rows of a range: n = w / ||w||, g -= (g . n) n, w = n; the norms and dots in double, over eight
 * fixed lanes so that the loop vectorises. */
SAEFW_KERNEL static void project_rows(void *vctx, int64_t r0, int64_t r1) {
    saefw_sae *sae = vctx;
    const int64_t d_out = sae->d_out;
    for (int64_t r = r0; r < r1; r++) {
        float *restrict w = sae->p[SAEFW_W_DEC] + r * d_out, *restrict g = sae->g[SAEFW_W_DEC] + r * d_out;
        double ss[8] = {0}, dot[8] = {0};
        int64_t c = 0;
        for (; c + 8 <= d_out; c += 8)
            for (int k = 0; k < 8; k++) ss[k] += (double)w[c + k] * (double)w[c + k];
        for (; c < d_out; c++) ss[0] += (double)w[c] * (double)w[c];
        const float inv = (float)(1.0 / sqrt(sum8d(ss)));
        for (c = 0; c + 8 <= d_out; c += 8)
            for (int k = 0; k < 8; k++) dot[k] += (double)g[c + k] * (double)(w[c + k] * inv);
        for (; c < d_out; c++) dot[0] += (double)g[c] * (double)(w[c] * inv);
        const float fdot = (float)sum8d(dot);
        for (c = 0; c < d_out; c++) {
            float n = w[c] * inv;
            g[c] -= fdot * n;
            w[c] = n;
        }
    }
}

void saefw_sae_project_decoder(saefw_sae *sae) { saefw_parallel_for(sae->d_sae, project_rows, sae); }

typedef struct {
    saefw_sae *sae;
    int64_t r0;
} project_part;

static void project_part_rows(void *vctx, int64_t a, int64_t b) {
    const project_part *pp = vctx;
    project_rows(pp->sae, pp->r0 + a, pp->r0 + b);
}

void saefw_sae_project_decoder_rows(saefw_sae *sae, int64_t r0, int64_t r1) {
    project_part pp = {sae, r0};
    if (r1 > r0) saefw_parallel_for(r1 - r0, project_part_rows, &pp);
}
