/* The generic path of the SAE architectures beyond the seed's ReLU (topk with AuxK, batchtopk,
 * jumprelu, gated; docs/architectures.md has the math): the encoder product as fixed-grid sgemm, the
 * architecture's selection rule into per-row entries, then the decoder and the backward pass on those
 * entries (sparse: the entries regrouped by feature and sae_sparse.c's kernels over 32-column slabs of
 * the batch-side operands, as the seed's ReLU) or as dense products over [B, d_sae] arrays made from
 * them (dense). Every parallel
 * loop splits rows or features, each output computed by one thread in a fixed order, so results do not
 * depend on the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "parallel.h"
#include "sae_arch.h"
#include "sae_kernels.h"
#include "util.h"

/* g . w over n, in eight lanes summed in a fixed order. */
static inline __attribute__((always_inline)) float dot8(const float *restrict g, const float *restrict w, int64_t n) {
    v8 acc = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) acc += *(const v8u *)(g + i) * *(const v8u *)(w + i);
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++) s += g[i] * w[i];
    return s;
}

/* ---- names, defaults and checks ---- */

static const char *const ARCH_NAMES[SAEFW_ARCH_COUNT] = {"relu", "topk", "batchtopk", "jumprelu", "gated"};

const char *saefw_sae_arch_name(saefw_sae_arch a) { return (a >= 0 && a < SAEFW_ARCH_COUNT) ? ARCH_NAMES[a] : NULL; }

int saefw_sae_arch_parse(const char *name, saefw_sae_arch *out, char *err, size_t errlen) {
    for (int a = 0; a < SAEFW_ARCH_COUNT; a++)
        if (name && strcmp(name, ARCH_NAMES[a]) == 0) {
            *out = (saefw_sae_arch)a;
            return 0;
        }
    return saefw_errf(err, errlen, "arch must be relu, topk, batchtopk, jumprelu or gated (got '%s')",
                      name ? name : "(none)");
}

void saefw_sae_arch_defaults(saefw_sae_arch_cfg *cfg, saefw_sae_arch arch, int64_t d_in) {
    memset(cfg, 0, sizeof *cfg);
    cfg->arch = arch;
    /* Gao et al.: k_aux about d_model / 2, coefficient 1/32, dead after 10M tokens (2441 steps of
     * 4096 tokens); SAELens: BatchTopK's threshold rate 0.01. */
    cfg->k = 32;
    cfg->k_aux = d_in / 2 > 0 ? d_in / 2 : 1;
    cfg->dead_steps = 2441;
    cfg->aux_coeff = 1.0 / 32.0;
    cfg->theta_rate = 0.01;
    /* Rajamanoharan et al. (JumpReLU): bandwidth and initial threshold 0.001; SAELens's l0_coefficient 1. */
    cfg->bandwidth = 0.001;
    cfg->threshold = 0.001;
    cfg->l0_coeff = 1.0;
}

int saefw_sae_arch_check(const saefw_sae_arch_cfg *c, int64_t d_sae, char *err, size_t errlen) {
    if (!saefw_sae_arch_name(c->arch)) return saefw_errf(err, errlen, "sae: unknown architecture %d", (int)c->arch);
    if (c->arch == SAEFW_ARCH_TOPK || c->arch == SAEFW_ARCH_BATCHTOPK) {
        if (c->k <= 0 || c->k > d_sae)
            return saefw_errf(err, errlen, "k must be from 1 to d_sae (%lld), got %lld", (long long)d_sae,
                              (long long)c->k);
        if (c->k_aux <= 0 || c->k_aux > d_sae)
            return saefw_errf(err, errlen, "k_aux must be from 1 to d_sae (%lld), got %lld", (long long)d_sae,
                              (long long)c->k_aux);
        if (c->dead_steps < 0)
            return saefw_errf(err, errlen, "dead_steps must be >= 0, got %lld", (long long)c->dead_steps);
        if (!(c->aux_coeff >= 0 && c->aux_coeff <= 1e30))
            return saefw_errf(err, errlen, "aux_coeff must be a number >= 0, got %g", c->aux_coeff);
        if (!(c->theta_rate > 0 && c->theta_rate <= 1))
            return saefw_errf(err, errlen, "theta_rate must be in (0, 1], got %g", c->theta_rate);
    }
    if (c->arch == SAEFW_ARCH_JUMPRELU) {
        if (!(c->threshold > 0 && c->threshold <= 1e30))
            return saefw_errf(err, errlen, "threshold must be a number > 0, got %g", c->threshold);
        if (!(c->bandwidth > 0 && c->bandwidth <= 1e30))
            return saefw_errf(err, errlen, "bandwidth must be a number > 0, got %g", c->bandwidth);
        if (!(c->l0_coeff >= 0 && c->l0_coeff <= 1e30))
            return saefw_errf(err, errlen, "l0_coeff must be a number >= 0, got %g", c->l0_coeff);
    }
    return 0;
}

int saefw_arch_names(saefw_sae_arch arch, const char **names) {
    names[0] = "W_enc";
    names[1] = "W_dec";
    names[2] = arch == SAEFW_ARCH_GATED ? "b_gate" : "b_enc";
    names[3] = "b_dec";
    if (arch == SAEFW_ARCH_JUMPRELU) {
        names[SAEFW_LOG_THRESHOLD] = "log_threshold";
        return 5;
    }
    if (arch == SAEFW_ARCH_GATED) {
        names[SAEFW_R_MAG] = "r_mag";
        names[SAEFW_B_MAG] = "b_mag";
        return 6;
    }
    return 4;
}

void saefw_arch_init_params(saefw_sae *sae) {
    const int64_t d_in = sae->d_in, d_sae = sae->d_sae;
    for (int64_t i = 0; i < d_in; i++)
        for (int64_t j = 0; j < d_sae; j++) sae->p[SAEFW_W_ENC][i * d_sae + j] = sae->p[SAEFW_W_DEC][j * d_in + i];
    if (sae->arch.arch == SAEFW_ARCH_JUMPRELU)
        for (int64_t j = 0; j < d_sae; j++) sae->p[SAEFW_LOG_THRESHOLD][j] = (float)log(sae->arch.threshold);
    if (sae->arch.arch == SAEFW_ARCH_GATED) {
        memset(sae->p[SAEFW_R_MAG], 0, sizeof(float) * (size_t)d_sae);
        memset(sae->p[SAEFW_B_MAG], 0, sizeof(float) * (size_t)d_sae);
    }
    if (sae->since_fired) memset(sae->since_fired, 0, sizeof(int64_t) * (size_t)d_sae);
    sae->theta = 0;
}

/* ---- scratch ---- */

struct saefw_arch_work {
    int64_t cap, d_in, d_sae;
    saefw_sae_path path;
    int sparse, acts_made;
    int64_t rows;
    int64_t n_groups; /* column groups of d_in, SAEFW_SPARSE_GROUP wide */
    float *xin;       /* [cap, d_in]: the encoder's input (x - b_dec; jumprelu: x) */
    /* [cap, d_sae]: xin @ W_enc, without the bias; once the entries (and AuxK's) are selected, the
     * decoder's double slabs [n_groups, cap, GROUP] (it has room for both). */
    float *z;
    float *x_hat; /* [cap, d_in] */
    float *dxh;   /* [cap, d_in]: dLoss/dx_hat */
    float *xfro;  /* gated: [cap, d_in] the frozen-decoder reconstruction; AuxK: e_hat */
    float *dfro;  /* gated: dLoss/dx_frozen; AuxK: dLoss/de_hat */
    /* Entries by row: row b's are [row_start[b], row_start[b] + row_count[b]) (features ascending, except
     * TopK's: two ascending runs). */
    int64_t ecap;
    int64_t *row_start, *row_count; /* [cap] */
    int32_t *col;
    int32_t *erow; /* the entry's row */
    float *val;    /* the activation (0 for jumprelu's entries inside the kernel only) */
    float *pre;    /* the pre-activation (gated: pi_gate) */
    float *dot;    /* dLoss/dacts from the reconstruction */
    float *fdot;   /* gated: dLoss/dReLU(pi_gate) from the frozen-decoder term */
    float *dz;     /* dLoss/d(xin @ W_enc) of the entry */
    float *db;     /* dLoss/d(tensor 2: b_enc or b_gate) */
    float *dm;     /* gated: dLoss/dpi_mag */
    /* AuxK's entries: row b's are [b k_aux, b k_aux + aux_count[b]). */
    int64_t *aux_count;
    int32_t *aux_col;
    float *aux_val, *aux_dz;
    int64_t n_dead;
    int32_t *dead;                    /* [d_sae]: the dead latents, ascending */
    const unsigned char *forced_dead; /* tests: this mask instead of the counters' */
    /* Data parallel: makes this rank's fired flags the whole batch's before AuxK's counters read them. */
    saefw_arch_fired_fn fired_fn;
    void *fired_ud;
    /* The entries by feature: feature j's are fent[fstart[j] .. fstart[j + 1]), rows ascending; the same
     * for AuxK's. */
    int64_t *fstart, *fent, *afstart, *afent;
    /* The entries' operands of the slab kernels in that order: the row, the activation, gated's pi_gate
     * (the frozen decoder's activation), dLoss/dacts summed over the column groups in double, and dz;
     * AuxK's row, activation and dz. */
    int32_t *by_row, *aby_row;
    float *by_val, *by_pre, *by_dz, *aby_val, *aby_dz;
    double *by_dot, *aby_dot;
    float *slab_d, *slab_x, *slab_f; /* sparse path: dxh, xin and AuxK's dfro as [n_groups, cap, GROUP] slabs */
    double *colsum;                  /* [d_sae]: sum over rows of dz (b_dec's share through xin) */
    double *cstat;                   /* [5, d_in]: per column, sums over rows of the squared error, x, the
                                   * variance of x, the frozen/AuxK term's squared error, and dLoss/dx_hat */
    double var;                      /* the last batch's sum of the variance of x */
    float *dense[3];                 /* [cap, d_sae] each: the dense path's operands */
    float *acts;                     /* [cap, d_sae]: made on request */
    double l2, aux, extra, l0sum;    /* the last batch's terms */
    /* Rows the gradient's means are over: 0 for the batch's own; data parallel sets the global batch
     * (saefw_arch_set_norm_rows), so that the ranks' gradients add up to the global batch's. */
    int64_t norm_rows;
};

/* Arrays of 2 MiB and more are 2 MiB-aligned and asked to use huge pages (the kernels read rows
 * scattered over them), the others 64-byte aligned (the slab kernels read aligned vectors). */
static void *alloc_f(int64_t n, size_t size, int *failed, char *err, size_t errlen) {
    if (*failed) return NULL;
    const size_t bytes = (size_t)(n > 0 ? n : 1) * size, page2m = (size_t)2 << 20;
    void *p = NULL;
    if (posix_memalign(&p, bytes >= page2m ? page2m : 64, bytes) != 0) {
        *failed = 1;
        saefw_errf(err, errlen, "out of memory (%zu bytes)", bytes);
        return NULL;
    }
#ifdef MADV_HUGEPAGE
    if (bytes >= page2m) madvise(p, bytes, MADV_HUGEPAGE); /* advice only: failure changes nothing */
#endif
    return p;
}

int saefw_arch_work_alloc(saefw_arch_work **out, const saefw_sae *sae, int64_t cap, saefw_sae_path path, char *err,
                          size_t errlen) {
    *out = NULL;
    if (cap <= 0) return saefw_errf(err, errlen, "sae: a batch needs at least one row (got %lld)", (long long)cap);
    saefw_arch_work *a = calloc(1, sizeof *a);
    if (!a) return saefw_errf(err, errlen, "out of memory");
    const int64_t d_in = sae->d_in, d_sae = sae->d_sae;
    const saefw_sae_arch arch = sae->arch.arch;
    const int auxk = arch == SAEFW_ARCH_TOPK || arch == SAEFW_ARCH_BATCHTOPK;
    a->cap = cap;
    a->d_in = d_in;
    a->d_sae = d_sae;
    a->path = path;
    /* TopK keeps at most k entries a row; the others' counts depend on the data. Pages never written
     * cost no memory. */
    a->ecap = arch == SAEFW_ARCH_TOPK ? cap * sae->arch.k : cap * d_sae;
    a->n_groups = (d_in + SAEFW_SPARSE_GROUP - 1) / SAEFW_SPARSE_GROUP;
    const int64_t slab = a->n_groups * cap * SAEFW_SPARSE_GROUP, sparse = path != SAEFW_SAE_DENSE;
    int f = 0;
    a->xin = alloc_f(cap * d_in, sizeof(float), &f, err, errlen);
    a->z = alloc_f(cap * d_sae > 2 * slab ? cap * d_sae : 2 * slab, sizeof(float), &f, err, errlen);
    a->x_hat = alloc_f(cap * d_in, sizeof(float), &f, err, errlen);
    a->dxh = alloc_f(cap * d_in, sizeof(float), &f, err, errlen);
    a->xfro = alloc_f(cap * d_in, sizeof(float), &f, err, errlen);
    a->dfro = alloc_f(cap * d_in, sizeof(float), &f, err, errlen);
    a->row_start = alloc_f(cap, sizeof(int64_t), &f, err, errlen);
    a->row_count = alloc_f(cap, sizeof(int64_t), &f, err, errlen);
    a->col = alloc_f(a->ecap, sizeof(int32_t), &f, err, errlen);
    a->erow = alloc_f(a->ecap, sizeof(int32_t), &f, err, errlen);
    a->val = alloc_f(a->ecap, sizeof(float), &f, err, errlen);
    a->pre = alloc_f(a->ecap, sizeof(float), &f, err, errlen);
    a->dot = alloc_f(a->ecap, sizeof(float), &f, err, errlen);
    a->fdot = alloc_f(arch == SAEFW_ARCH_GATED ? a->ecap : 0, sizeof(float), &f, err, errlen);
    a->dz = alloc_f(a->ecap, sizeof(float), &f, err, errlen);
    a->db = alloc_f(a->ecap, sizeof(float), &f, err, errlen);
    a->dm = alloc_f(arch == SAEFW_ARCH_GATED ? a->ecap : 0, sizeof(float), &f, err, errlen);
    a->fent = alloc_f(a->ecap, sizeof(int64_t), &f, err, errlen);
    a->fstart = alloc_f(d_sae + 1, sizeof(int64_t), &f, err, errlen);
    const int64_t acap = auxk ? cap * sae->arch.k_aux : 0;
    a->aux_count = alloc_f(auxk ? cap : 0, sizeof(int64_t), &f, err, errlen);
    a->aux_col = alloc_f(acap, sizeof(int32_t), &f, err, errlen);
    a->aux_val = alloc_f(acap, sizeof(float), &f, err, errlen);
    a->aux_dz = alloc_f(acap, sizeof(float), &f, err, errlen);
    a->afent = alloc_f(acap, sizeof(int64_t), &f, err, errlen);
    a->afstart = alloc_f(d_sae + 1, sizeof(int64_t), &f, err, errlen);
    a->dead = alloc_f(d_sae, sizeof(int32_t), &f, err, errlen);
    a->by_row = alloc_f(a->ecap, sizeof(int32_t), &f, err, errlen);
    a->by_val = alloc_f(a->ecap, sizeof(float), &f, err, errlen);
    a->by_pre = alloc_f(arch == SAEFW_ARCH_GATED ? a->ecap : 0, sizeof(float), &f, err, errlen);
    a->by_dz = alloc_f(sparse ? a->ecap : 0, sizeof(float), &f, err, errlen);
    a->by_dot = alloc_f(sparse ? a->ecap : 0, sizeof(double), &f, err, errlen);
    a->aby_row = alloc_f(acap, sizeof(int32_t), &f, err, errlen);
    a->aby_val = alloc_f(acap, sizeof(float), &f, err, errlen);
    a->aby_dz = alloc_f(sparse ? acap : 0, sizeof(float), &f, err, errlen);
    a->aby_dot = alloc_f(sparse ? acap : 0, sizeof(double), &f, err, errlen);
    a->slab_f = alloc_f(sparse && auxk ? slab : 0, sizeof(float), &f, err, errlen);
    a->slab_d = alloc_f(sparse ? slab : 0, sizeof(float), &f, err, errlen);
    a->slab_x = alloc_f(sparse ? slab : 0, sizeof(float), &f, err, errlen);
    a->colsum = alloc_f(d_sae, sizeof(double), &f, err, errlen);
    a->cstat = alloc_f(5 * d_in, sizeof(double), &f, err, errlen);
    for (int i = 0; i < 3; i++)
        a->dense[i] = alloc_f(path == SAEFW_SAE_SPARSE || (i == 2 && arch != SAEFW_ARCH_GATED) ? 0 : cap * d_sae,
                              sizeof(float), &f, err, errlen);
    if (f) {
        saefw_arch_work_free(a);
        return -1;
    }
    *out = a;
    return 0;
}

double saefw_arch_work_estimate(const saefw_sae *sae, int64_t cap) {
    const saefw_sae_arch arch = sae->arch.arch;
    const double d_in = (double)sae->d_in, d_sae = (double)sae->d_sae, B = (double)cap;
    const int gated = arch == SAEFW_ARCH_GATED, auxk = arch == SAEFW_ARCH_TOPK || arch == SAEFW_ARCH_BATCHTOPK;
    const double frac = SAEFW_SAE_SPARSE_MAX_FRACTION;
    const double slab = B * ceil(d_in / SAEFW_SPARSE_GROUP) * SAEFW_SPARSE_GROUP;
    /* xin, x_hat, dxh, and xfro and dfro where gated or AuxK uses them; z (or the decoder's slabs), and
     * the backward slabs of dxh and xin */
    double b = 4.0 * (3.0 + 2.0 * (gated || auxk)) * B * d_in + 4.0 * fmax(B * d_sae, 2.0 * slab) + 8.0 * slab;
    /* entries: col, row, value, pre, dot, dz, db, index (8), and by feature row, value, dz, dot (8) */
    const double n_ent = auxk ? B * (double)sae->arch.k : 0.5 * frac * B * d_sae;
    b += n_ent * (56.0 + 12.0 * gated);
    /* AuxK's entries (col, value, dz, index, and by feature row, value, dz, dot), at most k_aux a row,
     * and dfro's slabs */
    if (auxk) b += 40.0 * B * (double)sae->arch.k_aux + 4.0 * slab;
    /* the dense path's operands, when a batch can go dense */
    if (!auxk || (double)sae->arch.k > frac * d_sae) b += 4.0 * (2.0 + gated) * B * d_sae;
    return b + 16.0 * B + 36.0 * d_sae + 40.0 * d_in;
}

void saefw_arch_work_free(saefw_arch_work *a) {
    if (!a) return;
    void *ptrs[] = {
        a->xin,    a->z,         a->x_hat,    a->dxh,      a->xfro,   a->dfro,   a->row_start, a->row_count, a->col,
        a->erow,   a->val,       a->pre,      a->dot,      a->fdot,   a->dz,     a->db,        a->dm,        a->fent,
        a->fstart, a->aux_count, a->aux_col,  a->aux_val,  a->aux_dz, a->afent,  a->afstart,   a->dead,      a->colsum,
        a->cstat,  a->dense[0],  a->dense[1], a->dense[2], a->acts,   a->by_row, a->by_val,    a->by_pre,    a->by_dz,
        a->by_dot, a->aby_row,   a->aby_val,  a->aby_dz,   a->slab_d, a->slab_x, a->aby_dot,   a->slab_f};
    for (size_t i = 0; i < sizeof ptrs / sizeof *ptrs; i++) free(ptrs[i]);
    free(a);
}

int64_t saefw_arch_cap(const saefw_arch_work *a) { return a->cap; }
void saefw_arch_force_dead(saefw_arch_work *a, const unsigned char *mask) { a->forced_dead = mask; }
void saefw_arch_set_norm_rows(saefw_arch_work *a, int64_t rows) { a->norm_rows = rows; }
void saefw_arch_set_fired_exchange(saefw_arch_work *a, saefw_arch_fired_fn fn, void *ud) {
    a->fired_fn = fn;
    a->fired_ud = ud;
}

/* The rows a batch of B rows divides its gradient's means (and their loss terms) by. */
static inline double grad_rows(const saefw_arch_work *a, int64_t B) {
    return (double)(a->norm_rows > 0 ? a->norm_rows : B);
}
void saefw_arch_release(saefw_arch_work *a) { a->acts_made = 0; }
int saefw_arch_sparse(const saefw_arch_work *a) { return a->sparse; }

/* ---- the selection rules ---- */

/* A float's bits as an unsigned key that orders like the float. */
static inline uint32_t fkey(float v) {
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* The key of the k-th largest of n values v(i) = z[idx[i]] + bias[idx[i]] (idx NULL: i), 1 <= k <= n,
 * by a radix select in three passes of 11, 11 and 10 bits; *n_above gets how many keys are larger. */
static uint32_t kth_key(const float *z, const float *bias, const int32_t *idx, int64_t n, int64_t k, int64_t *n_above) {
    static const int shift[3] = {21, 10, 0}, bits[3] = {11, 11, 10};
    uint32_t prefix = 0, mask = 0;
    int64_t above = 0;
    for (int p = 0; p < 3; p++) {
        int64_t hist[2048] = {0};
        for (int64_t i = 0; i < n; i++) {
            const int64_t j = idx ? idx[i] : i;
            const uint32_t key = fkey(z[j] + bias[j]);
            if ((key & mask) == prefix) hist[(key >> shift[p]) & ((1u << bits[p]) - 1)]++;
        }
        int64_t bin = (1 << bits[p]) - 1;
        for (; bin > 0 && above + hist[bin] < k; bin--) above += hist[bin];
        prefix |= (uint32_t)bin << shift[p];
        mask |= ((1u << bits[p]) - 1) << shift[p];
    }
    *n_above = above;
    return prefix;
}

typedef struct {
    const saefw_sae *sae;
    saefw_arch_work *a;
    const float *x;
    int64_t B;
    int train;
    uint32_t bkey;     /* batchtopk: the k B-th largest key over the batch */
    int64_t *ties_row; /* batchtopk: ties at bkey taken by each row */
} actx;

/* The k largest of a row among n candidates (idx NULL: all features), ties to the lowest index, kept
 * when positive; written in feature order to col / val (pre too, when not NULL). Returns the count. */
static int64_t top_k_row(const float *zr, const float *bias, const int32_t *idx, int64_t n, int64_t k, int32_t *col,
                         float *val, float *pre) {
    if (k > n) k = n;
    if (k <= 0) return 0;
    int64_t above;
    const uint32_t t = kth_key(zr, bias, idx, n, k, &above);
    int64_t ties = k - above, m = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t j = idx ? idx[i] : i;
        const float v = zr[j] + bias[j];
        const uint32_t key = fkey(v);
        int take = key > t;
        if (key == t && ties > 0) {
            ties--;
            take = 1;
        }
        if (take && v > 0.0f) {
            col[m] = (int32_t)j;
            val[m] = v;
            if (pre) pre[m] = v;
            m++;
        }
    }
    return m;
}

/* top_k_row over a whole row in two scans instead of four: the histogram of the keys' top 11 bits, then
 * the entries above the k-th's bin taken at once and those in its bin gathered into cand [n], among
 * which the rest of the radix select runs. Entries come in two runs, each in feature order. */
static int64_t top_k_row_fast(const float *zr, const float *bias, int64_t n, int64_t k, int32_t *cand, int32_t *col,
                              float *val, float *pre) {
    if (k > n) k = n;
    if (k <= 0) return 0;
    int64_t hist[2048] = {0};
    for (int64_t j = 0; j < n; j++) hist[fkey(zr[j] + bias[j]) >> 21]++;
    int64_t bin = 2047, above = 0;
    for (; bin > 0 && above + hist[bin] < k; bin--) above += hist[bin];
    int64_t m = 0, nc = 0;
    for (int64_t j = 0; j < n; j++) {
        const float v = zr[j] + bias[j];
        const int64_t top = fkey(v) >> 21;
        if (top == bin) cand[nc++] = (int32_t)j;
        else if (top > bin && v > 0.0f) {
            col[m] = (int32_t)j;
            val[m] = v;
            pre[m] = v;
            m++;
        }
    }
    return m + top_k_row(zr, bias, cand, nc, k - above, col + m, val + m, pre + m);
}

/* Does entry (value v at feature j) belong to the row's list? Also its activation. */
static inline int keep_entry(const saefw_sae *sae, const actx *c, const float *zr, int64_t j, float *act, float *pre) {
    const saefw_sae_arch_cfg *cfg = &sae->arch;
    const float v = zr[j] + sae->p[SAEFW_B_ENC][j];
    *pre = v;
    switch (cfg->arch) {
    case SAEFW_ARCH_BATCHTOPK:
        if (c->train) {
            if (!(v > 0.0f) || fkey(v) < c->bkey) return 0;
            *act = v;
            return 1; /* ties at bkey are settled by the caller */
        }
        *act = v;
        return (double)v > sae->theta;
    case SAEFW_ARCH_JUMPRELU: {
        const float th = expf(sae->p[SAEFW_LOG_THRESHOLD][j]);
        *act = v > th ? v : 0.0f;
        if (v > th) return 1;
        return c->train && fabsf((v - th) / (float)cfg->bandwidth) < 0.5f;
    }
    case SAEFW_ARCH_GATED: {
        if (!(v > 0.0f)) return 0;
        const float mag = zr[j] * expf(sae->p[SAEFW_R_MAG][j]) + sae->p[SAEFW_B_MAG][j];
        *act = mag > 0.0f ? mag : 0.0f;
        return 1;
    }
    default: return 0;
    }
}

/* Rows of a range: how many entries each keeps (batchtopk training: strictly above the threshold key;
 * ties are added by the caller). */
static void count_rows(void *vctx, int64_t b0, int64_t b1) {
    actx *c = vctx;
    saefw_arch_work *a = c->a;
    const int64_t d_sae = a->d_sae;
    for (int64_t b = b0; b < b1; b++) {
        const float *zr = a->z + b * d_sae;
        int64_t n = 0, ties = 0;
        for (int64_t j = 0; j < d_sae; j++) {
            float act, pre;
            if (keep_entry(c->sae, c, zr, j, &act, &pre)) {
                if (c->ties_row && fkey(pre) == c->bkey) ties++;
                else n++;
            }
        }
        a->row_count[b] = n;
        if (c->ties_row) c->ties_row[b] = ties;
    }
}

/* Rows of a range: their entries into the slots that row_start gives them. */
static void fill_rows(void *vctx, int64_t b0, int64_t b1) {
    actx *c = vctx;
    saefw_arch_work *a = c->a;
    const int64_t d_sae = a->d_sae;
    for (int64_t b = b0; b < b1; b++) {
        const float *zr = a->z + b * d_sae;
        int64_t e = a->row_start[b], ties = c->ties_row ? c->ties_row[b] : 0;
        for (int64_t j = 0; j < d_sae; j++) {
            float act, pre;
            if (!keep_entry(c->sae, c, zr, j, &act, &pre)) continue;
            if (c->ties_row && fkey(pre) == c->bkey) {
                if (ties <= 0) continue;
                ties--;
            }
            a->col[e] = (int32_t)j;
            a->erow[e] = (int32_t)b;
            a->val[e] = act;
            a->pre[e] = pre;
            e++;
        }
        a->row_count[b] = e - a->row_start[b];
    }
}

static void topk_rows(void *vctx, int64_t b0, int64_t b1) {
    actx *c = vctx;
    saefw_arch_work *a = c->a;
    const int64_t k = c->sae->arch.k;
    /* The fast select's candidates; without the memory, the four-scan select. */
    int32_t *cand = malloc(sizeof(int32_t) * (size_t)a->d_sae);
    for (int64_t b = b0; b < b1; b++) {
        const int64_t s = b * k;
        const float *zr = a->z + b * a->d_sae, *bias = c->sae->p[SAEFW_B_ENC];
        a->row_start[b] = s;
        a->row_count[b] = cand ? top_k_row_fast(zr, bias, a->d_sae, k, cand, a->col + s, a->val + s, a->pre + s)
                               : top_k_row(zr, bias, NULL, a->d_sae, k, a->col + s, a->val + s, a->pre + s);
        for (int64_t e = s; e < s + a->row_count[b]; e++) a->erow[e] = (int32_t)b;
    }
    free(cand);
}

/* Rows of a range: the histogram of one radix pass over the batch's positive values (BatchTopK). */
typedef struct {
    actx *c;
    int64_t *hist;
    uint32_t prefix, mask;
    int shift, bits;
} hist_ctx;

static void hist_rows(void *vctx, int64_t b0, int64_t b1) {
    hist_ctx *h = vctx;
    saefw_arch_work *a = h->c->a;
    const float *bias = h->c->sae->p[SAEFW_B_ENC];
    int64_t local[2048] = {0};
    for (int64_t b = b0; b < b1; b++) {
        const float *zr = a->z + b * a->d_sae;
        for (int64_t j = 0; j < a->d_sae; j++) {
            const float v = zr[j] + bias[j];
            if (!(v > 0.0f)) continue;
            const uint32_t key = fkey(v);
            if ((key & h->mask) == h->prefix) local[(key >> h->shift) & ((1u << h->bits) - 1)]++;
        }
    }
    for (int i = 0; i < (1 << h->bits); i++)
        if (local[i]) __atomic_fetch_add(&h->hist[i], local[i], __ATOMIC_RELAXED);
}

/* BatchTopK: the key of the k B-th largest positive value of the batch and how many keys lie above it;
 * 1 when fewer than k B values are positive (then every positive one is kept). */
static int batch_key(actx *c, int64_t kb, uint32_t *key, int64_t *n_above) {
    static const int shift[3] = {21, 10, 0}, bits[3] = {11, 11, 10};
    hist_ctx h = {c, NULL, 0, 0, 0, 0};
    int64_t hist[2048], above = 0;
    h.hist = hist;
    for (int p = 0; p < 3; p++) {
        memset(hist, 0, sizeof hist);
        h.shift = shift[p];
        h.bits = bits[p];
        saefw_parallel_for(c->B, hist_rows, &h);
        if (p == 0) {
            int64_t total = 0;
            for (int i = 0; i < 2048; i++) total += hist[i];
            if (total <= kb) {
                *key = fkey(0.0f) + 1;
                *n_above = total;
                return 1;
            }
        }
        int64_t bin = (1 << bits[p]) - 1;
        for (; bin > 0 && above + hist[bin] < kb; bin--) above += hist[bin];
        h.prefix |= (uint32_t)bin << shift[p];
        h.mask |= ((1u << bits[p]) - 1) << shift[p];
    }
    *key = h.prefix;
    *n_above = above;
    return 0;
}

/* The entries of the batch under the architecture's rule (train: the training rule). */
static void select_entries(const saefw_sae *sae, saefw_arch_work *a, actx *c, int64_t B) {
    if (sae->arch.arch == SAEFW_ARCH_TOPK) {
        saefw_parallel_for(B, topk_rows, c);
        return;
    }
    int64_t ties_need = 0;
    if (sae->arch.arch == SAEFW_ARCH_BATCHTOPK && c->train) {
        int64_t above;
        if (!batch_key(c, sae->arch.k * B, &c->bkey, &above)) {
            ties_need = sae->arch.k * B - above;
            c->ties_row = a->aux_count; /* free until AuxK runs */
        }
    }
    saefw_parallel_for(B, count_rows, c);
    int64_t off = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t n = a->row_count[b];
        if (c->ties_row) {
            /* Ties at the threshold go to the lowest flat indices: earlier rows first. */
            int64_t t = c->ties_row[b] < ties_need ? c->ties_row[b] : ties_need;
            if (t < 0) t = 0;
            ties_need -= t;
            c->ties_row[b] = t;
            n += t;
        }
        a->row_start[b] = off;
        off += n;
    }
    saefw_parallel_for(B, fill_rows, c);
    c->ties_row = NULL;
}

/* ---- products ---- */

static void input_rows(void *vctx, int64_t b0, int64_t b1) {
    actx *c = vctx;
    const saefw_sae *sae = c->sae;
    const int64_t d_in = sae->d_in;
    const int sub = sae->arch.arch != SAEFW_ARCH_JUMPRELU; /* JumpReLU's encoder reads x itself */
    const float *b_dec = sae->p[SAEFW_B_DEC];
    for (int64_t b = b0; b < b1; b++)
        for (int64_t i = 0; i < d_in; i++) c->a->xin[b * d_in + i] = c->x[b * d_in + i] - (sub ? b_dec[i] : 0.0f);
}

/* dots[e] = g[b] . W_dec[col[e]] for the row's entries (sparse). */
typedef struct {
    actx *c;
    const float *g;
    float *dots;
    const int64_t *start, *count;
    const int32_t *col;
    int64_t stride;
} dot_ctx;

SAEFW_KERNEL static void dot_rows(void *vctx, int64_t b0, int64_t b1) {
    dot_ctx *d = vctx;
    const saefw_sae *sae = d->c->sae;
    const int64_t d_in = sae->d_in;
    for (int64_t b = b0; b < b1; b++) {
        const float *g = d->g + b * d_in;
        const int64_t s = d->start ? d->start[b] : b * d->stride;
        for (int64_t e = s; e < s + d->count[b]; e++) {
            d->dots[e] = dot8(g, sae->p[SAEFW_W_DEC] + (int64_t)d->col[e] * d_in, d_in);
        }
    }
}

/* A dense [B, d_sae] array from the entries: zero, then vals[e] at (b, col[e]). */
static void scatter_dense(saefw_arch_work *a, int64_t B, const float *vals, float *dst) {
    memset(dst, 0, sizeof(float) * (size_t)(B * a->d_sae));
    for (int64_t b = 0; b < B; b++)
        for (int64_t e = a->row_start[b]; e < a->row_start[b] + a->row_count[b]; e++)
            dst[b * a->d_sae + a->col[e]] = vals[e];
}

/* Per-feature lists (rows ascending) of entries given by row. */
static void index_by_feature(int64_t d_sae, int64_t B, const int64_t *start, const int64_t *count, int64_t stride,
                             const int32_t *col, int64_t *fstart, int64_t *fent) {
    memset(fstart, 0, sizeof(int64_t) * (size_t)(d_sae + 1));
    for (int64_t b = 0; b < B; b++) {
        const int64_t s = start ? start[b] : b * stride;
        for (int64_t e = s; e < s + count[b]; e++) fstart[col[e] + 1]++;
    }
    for (int64_t j = 0; j < d_sae; j++) fstart[j + 1] += fstart[j];
    for (int64_t b = 0; b < B; b++) {
        const int64_t s = start ? start[b] : b * stride;
        for (int64_t e = s; e < s + count[b]; e++) fent[fstart[col[e]]++] = e;
    }
    for (int64_t j = d_sae; j > 0; j--) fstart[j] = fstart[j - 1];
    fstart[0] = 0;
}

#define GROUP SAEFW_SPARSE_GROUP

/* The batch's entries by feature (fstart, fent) and the slab kernels' operands in that order. */
static void index_entries(saefw_arch_work *a, int64_t B, int gated) {
    index_by_feature(a->d_sae, B, a->row_start, a->row_count, 0, a->col, a->fstart, a->fent);
    for (int64_t p = 0; p < a->fstart[a->d_sae]; p++) {
        const int64_t e = a->fent[p];
        a->by_row[p] = a->erow[e];
        a->by_val[p] = a->val[e];
        if (gated) a->by_pre[p] = a->pre[e];
    }
}

/* out [B, d_in] = bias (may be NULL) + the entries' (by feature: start, rows, vals) products with W_dec:
 * each column group accumulated in double in its own slab of z, then rounded once. */
typedef struct {
    actx *c;
    const int64_t *start;
    const int32_t *rows;
    const float *vals;
    const float *bias;
    float *out;
} slab_dec_ctx;

static void decode_groups(void *vctx, int64_t q0, int64_t q1) {
    const slab_dec_ctx *d = vctx;
    const saefw_sae *sae = d->c->sae;
    const saefw_arch_work *a = d->c->a;
    const int64_t d_in = a->d_in, B = d->c->B;
    for (int64_t q = q0; q < q1; q++) {
        const int64_t g0 = q * GROUP, n_cols = saefw_slab_group_cols(d_in, q);
        double *ds = (double *)a->z + q * B * GROUP;
        memset(ds, 0, sizeof(double) * (size_t)(B * GROUP));
        saefw_slab_decode(ds, sae->p[SAEFW_W_DEC] + g0, d_in, a->d_sae, d->start, d->rows, d->vals, n_cols);
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < n_cols; i++)
                d->out[b * d_in + g0 + i] = (float)(ds[b * GROUP + i] + (d->bias ? (double)d->bias[g0 + i] : 0.0));
    }
}

static void decode_slabs(actx *c, const int64_t *start, const int32_t *rows, const float *vals, const float *bias,
                         float *out) {
    slab_dec_ctx d = {c, start, rows, vals, bias, out};
    saefw_parallel_for(c->a->n_groups, decode_groups, &d);
}

/* Column groups of a range: rows [B, d_in] (dxh or xin) into their zero-padded [B, GROUP] slabs. */
typedef struct {
    const saefw_arch_work *a;
    const float *src;
    float *dst;
    int64_t B;
} slab_copy_ctx;

static void copy_slabs(void *vctx, int64_t q0, int64_t q1) {
    const slab_copy_ctx *s = vctx;
    saefw_slab_fill(s->dst, s->src, s->B, s->a->d_in, q0, q1);
}

/* Features of a range: tensor 2's gradient and the extra tensors', and colsum for b_dec. */
static void feature_scalars(actx *c, int64_t j0, int64_t j1) {
    saefw_sae *sae = (saefw_sae *)c->sae;
    saefw_arch_work *a = c->a;
    const int64_t B = c->B;
    const saefw_sae_arch arch = sae->arch.arch;
    const int auxk = (arch == SAEFW_ARCH_TOPK || arch == SAEFW_ARCH_BATCHTOPK) && a->n_dead > 0;
    for (int64_t j = j0; j < j1; j++) {
        double sdb = 0, sdz = 0, sx = 0, sy = 0;
        const float th = arch == SAEFW_ARCH_JUMPRELU ? expf(sae->p[SAEFW_LOG_THRESHOLD][j]) : 0.0f;
        const float er = arch == SAEFW_ARCH_GATED ? expf(sae->p[SAEFW_R_MAG][j]) : 0.0f;
        for (int64_t q = a->fstart[j]; q < a->fstart[j + 1]; q++) {
            const int64_t e = a->fent[q];
            sdb += a->db[e];
            sdz += a->dz[e];
            if (arch == SAEFW_ARCH_JUMPRELU) {
                const float eps = (float)sae->arch.bandwidth;
                if (fabsf((a->pre[e] - th) / eps) < 0.5f)
                    sx += (double)a->dot[e] * -(th / eps) + sae->arch.l0_coeff / grad_rows(a, B) * -(1.0 / eps);
            }
            if (arch == SAEFW_ARCH_GATED) {
                sx += a->dm[e];
                sy += (double)a->dm[e] * er * (a->pre[e] - sae->p[SAEFW_B_ENC][j]);
            }
        }
        if (auxk)
            for (int64_t q = a->afstart[j]; q < a->afstart[j + 1]; q++) {
                const int64_t e = a->afent[q];
                sdb += a->aux_dz[e];
                sdz += a->aux_dz[e];
            }
        sae->g[SAEFW_B_ENC][j] = (float)sdb;
        a->colsum[j] = sdz;
        if (arch == SAEFW_ARCH_JUMPRELU) sae->g[SAEFW_LOG_THRESHOLD][j] = (float)((double)th * sx);
        if (arch == SAEFW_ARCH_GATED) {
            sae->g[SAEFW_B_MAG][j] = (float)sx;
            sae->g[SAEFW_R_MAG][j] = (float)sy;
        }
    }
}

static void feature_grads(void *vctx, int64_t j0, int64_t j1) { feature_scalars(vctx, j0, j1); }

static void entry_grad(const actx *c, int64_t e);

/* Features per block of the sparse backward pass: W_enc's gradient is written 16 columns at a time. */
#define FEAT_BLOCK 16

/* Feature blocks of a range (sparse path): W_dec's gradient rows and each entry's dLoss/dacts (one sweep
 * over the column groups of dxh's slabs), then the entries' dz and the per-feature sums, then W_enc's
 * gradient columns (a sweep over xin's slabs) with AuxK's entries added feature by feature. */
static void backward_features(void *vctx, int64_t k0, int64_t k1) {
    actx *c = vctx;
    saefw_sae *sae = (saefw_sae *)c->sae;
    saefw_arch_work *a = c->a;
    const int64_t d_in = a->d_in, d_sae = a->d_sae, B = c->B;
    const int64_t j0 = k0 * FEAT_BLOCK, j1 = k1 * FEAT_BLOCK < d_sae ? k1 * FEAT_BLOCK : d_sae;
    const int64_t *start = a->fstart;
    for (int64_t p = start[j0]; p < start[j1]; p++) a->by_dot[p] = 0.0;
    for (int64_t q = 0; q < a->n_groups; q++)
        saefw_slab_grad_dec(sae->g[SAEFW_W_DEC] + q * GROUP, sae->p[SAEFW_W_DEC] + q * GROUP, d_in,
                            a->slab_d + q * B * GROUP, start, a->by_row, a->by_val, a->by_dot, j0, j1,
                            saefw_slab_group_cols(d_in, q));
    for (int64_t p = start[j0]; p < start[j1]; p++) {
        const int64_t e = a->fent[p];
        a->dot[e] = (float)a->by_dot[p];
        entry_grad(c, e);
        a->by_dz[p] = a->dz[e];
    }
    /* AuxK's dead latents: their entries' dots with dLoss/de_hat (dz: the ReLU of the kept positive
     * values passes it on) and their share of W_dec's rows, one feature at a time (its entries start at
     * afstart + j), added to the main entries' share. */
    for (int64_t k = 0; k < a->n_dead; k++) {
        const int64_t j = a->dead[k];
        if (j < j0 || j >= j1 || a->afstart[j] == a->afstart[j + 1]) continue;
        for (int64_t p = a->afstart[j]; p < a->afstart[j + 1]; p++) a->aby_dot[p] = 0.0;
        for (int64_t q = 0; q < a->n_groups; q++) {
            const int64_t n_cols = saefw_slab_group_cols(d_in, q);
            float piece[GROUP];
            saefw_slab_grad_dec(piece, sae->p[SAEFW_W_DEC] + j * d_in + q * GROUP, d_in, a->slab_f + q * B * GROUP,
                                a->afstart + j, a->aby_row, a->aby_val, a->aby_dot, 0, 1, n_cols);
            for (int64_t i = 0; i < n_cols; i++) sae->g[SAEFW_W_DEC][j * d_in + q * GROUP + i] += piece[i];
        }
        for (int64_t p = a->afstart[j]; p < a->afstart[j + 1]; p++) {
            a->aby_dz[p] = (float)a->aby_dot[p];
            a->aux_dz[a->afent[p]] = a->aby_dz[p];
        }
    }
    feature_scalars(c, j0, j1);
    for (int64_t q = 0; q < a->n_groups; q++)
        saefw_slab_grad_enc(sae->g[SAEFW_W_ENC] + q * GROUP * d_sae, d_sae, a->slab_x + q * B * GROUP, start, a->by_row,
                            a->by_dz, j0, j1, saefw_slab_group_cols(d_in, q));
    if (a->n_dead == 0) return;
    for (int64_t k = 0; k < a->n_dead; k++) {
        const int64_t j = a->dead[k];
        if (j < j0 || j >= j1 || a->afstart[j] == a->afstart[j + 1]) continue;
        for (int64_t q = 0; q < a->n_groups; q++) {
            const int64_t n_cols = saefw_slab_group_cols(d_in, q);
            float col[GROUP];
            /* Column j alone (its entries start at afstart + j), into col, then added. */
            saefw_slab_grad_enc(col, 1, a->slab_x + q * B * GROUP, a->afstart + j, a->aby_row, a->aby_dz, 0, 1, n_cols);
            for (int64_t i = 0; i < n_cols; i++) sae->g[SAEFW_W_ENC][(q * GROUP + i) * d_sae + j] += col[i];
        }
    }
}

/* Columns of a range: b_dec's gradient, sum_b dLoss/dx_hat minus (input x - b_dec) W_enc @ colsum. */
static void bias_dec_cols(void *vctx, int64_t i0, int64_t i1) {
    actx *c = vctx;
    saefw_sae *sae = (saefw_sae *)c->sae;
    saefw_arch_work *a = c->a;
    const int64_t d_in = a->d_in, d_sae = a->d_sae;
    const int sub = sae->arch.arch != SAEFW_ARCH_JUMPRELU;
    for (int64_t i = i0; i < i1; i++) {
        double s = a->cstat[4 * d_in + i];
        if (sub)
            for (int64_t j = 0; j < d_sae; j++) s -= (double)sae->p[SAEFW_W_ENC][i * d_sae + j] * a->colsum[j];
        sae->g[SAEFW_B_DEC][i] = (float)s;
    }
}

/* AuxK's selection: per row the k_aux dead latents with the largest pre-activation. */
static void aux_rows(void *vctx, int64_t b0, int64_t b1) {
    actx *c = vctx;
    saefw_arch_work *a = c->a;
    const int64_t ka = c->sae->arch.k_aux;
    for (int64_t b = b0; b < b1; b++)
        a->aux_count[b] = top_k_row(a->z + b * a->d_sae, c->sae->p[SAEFW_B_ENC], a->dead, a->n_dead, ka,
                                    a->aux_col + b * ka, a->aux_val + b * ka, NULL);
}

/* ---- forward and backward ---- */

/* Columns of a range, rows outer so that every read is contiguous: the statistics' sums (cstat), and
 * in training dLoss/dx_hat = 2/B (x_hat - x) with its column sums (b_dec's gradient), and gated's
 * frozen-decoder term and its gradient. */
SAEFW_KERNEL static void column_pass(void *vctx, int64_t i0, int64_t i1) {
    actx *c = vctx;
    saefw_arch_work *a = c->a;
    const int64_t d_in = a->d_in, B = c->B;
    const int gated = c->train && c->sae->arch.arch == SAEFW_ARCH_GATED;
    const float s2 = (float)(2.0 / grad_rows(a, B));
    double *l2 = a->cstat, *mean = l2 + d_in, *var = mean + d_in, *fro = var + d_in, *gd = fro + d_in;
    for (int64_t i = i0; i < i1; i++) l2[i] = mean[i] = var[i] = fro[i] = gd[i] = 0.0;
    for (int64_t b = 0; b < B; b++) {
        const float *x = c->x + b * d_in, *xh = a->x_hat + b * d_in, *xf = a->xfro + b * d_in;
        float *dx = a->dxh + b * d_in, *df = a->dfro + b * d_in;
        for (int64_t i = i0; i < i1; i++) {
            const double e = (double)xh[i] - (double)x[i];
            l2[i] += e * e;
            mean[i] += x[i];
            if (c->train) {
                dx[i] = s2 * (xh[i] - x[i]);
                gd[i] += dx[i];
            }
            if (gated) {
                const double f = (double)xf[i] - (double)x[i];
                fro[i] += f * f;
                df[i] = s2 * (xf[i] - x[i]);
            }
        }
    }
    for (int64_t i = i0; i < i1; i++) mean[i] /= (double)B;
    for (int64_t b = 0; b < B; b++) {
        const float *x = c->x + b * d_in;
        for (int64_t i = i0; i < i1; i++) var[i] += ((double)x[i] - mean[i]) * ((double)x[i] - mean[i]);
    }
}

static void aux_select(saefw_sae *sae, saefw_arch_work *a, actx *c, int64_t B);

/* The forward pass into a: entries (by row, and by feature where the sparse kernels or the training
 * step read them), x_hat (and for gated training the frozen-decoder reconstruction). train: the SAE
 * itself in the training step (AuxK's counters and selection), else NULL. */
static void forward(const saefw_sae *sae, saefw_arch_work *a, actx *c, int64_t B, saefw_sae *train) {
    const int64_t d_in = a->d_in, d_sae = a->d_sae;
    a->rows = B;
    a->acts_made = 0;
    a->n_dead = 0;
    saefw_parallel_for(B, input_rows, c);
    saefw_sgemm_blocks(CblasNoTrans, CblasNoTrans, B, d_sae, d_in, a->xin, d_in, sae->p[SAEFW_W_ENC], d_sae, 0.0f, a->z,
                       d_sae);
    select_entries(sae, a, c, B);
    int64_t n = 0;
    for (int64_t b = 0; b < B; b++) n += a->row_count[b];
    a->sparse = a->path == SAEFW_SAE_SPARSE ||
                (a->path == SAEFW_SAE_AUTO && (double)n <= SAEFW_SAE_SPARSE_MAX_FRACTION * (double)(B * d_sae));
    const int gated = sae->arch.arch == SAEFW_ARCH_GATED && c->train;
    /* AuxK reads z, which the sparse decoder then takes over. */
    if (train && (sae->arch.arch == SAEFW_ARCH_TOPK || sae->arch.arch == SAEFW_ARCH_BATCHTOPK))
        aux_select(train, a, c, B);
    if (a->sparse || train) index_entries(a, B, gated);
    if (a->sparse) {
        decode_slabs(c, a->fstart, a->by_row, a->by_val, sae->p[SAEFW_B_DEC], a->x_hat);
        if (gated) decode_slabs(c, a->fstart, a->by_row, a->by_pre, sae->p[SAEFW_B_DEC], a->xfro);
    } else {
        for (int pass = 0; pass < 1 + gated; pass++) {
            float *out = pass ? a->xfro : a->x_hat;
            scatter_dense(a, B, pass ? a->pre : a->val, a->dense[pass]);
            for (int64_t b = 0; b < B; b++) memcpy(out + b * d_in, sae->p[SAEFW_B_DEC], sizeof(float) * (size_t)d_in);
            saefw_sgemm_blocks(CblasNoTrans, CblasNoTrans, B, d_in, d_sae, a->dense[pass], d_sae, sae->p[SAEFW_W_DEC],
                               d_in, 1.0f, out, d_in);
        }
    }
    saefw_parallel_for(d_in, column_pass, c);
    double l2 = 0, l0 = 0, g1 = 0, fro = 0;
    a->var = 0;
    for (int64_t i = 0; i < d_in; i++) {
        l2 += a->cstat[i];
        a->var += a->cstat[2 * d_in + i];
        fro += a->cstat[3 * d_in + i];
    }
    for (int64_t b = 0; b < B; b++)
        for (int64_t e = a->row_start[b]; e < a->row_start[b] + a->row_count[b]; e++) {
            l0 += a->val[e] != 0.0f;
            if (sae->arch.arch == SAEFW_ARCH_GATED) g1 += a->pre[e];
        }
    a->l2 = l2 / (double)B;
    a->l0sum = l0;
    a->aux = 0;
    switch (sae->arch.arch) {
    case SAEFW_ARCH_JUMPRELU: a->extra = sae->arch.l0_coeff * l0 / grad_rows(a, B); break;
    case SAEFW_ARCH_GATED: a->extra = (double)sae->l1_coeff * g1 / grad_rows(a, B); break;
    default: a->extra = 0;
    }
    if (gated) a->aux = fro / grad_rows(a, B);
}

static void fill_stats(const saefw_arch_work *a, int64_t B, double sparsity, saefw_sae_stats *st) {
    if (!st) return;
    const double var = a->var;
    st->l2 = a->l2;
    st->l1 = sparsity;
    st->loss = a->l2 + sparsity;
    st->l0 = a->l0sum / (double)B;
    st->explained_variance = var > 0 ? 1.0 - a->l2 * (double)B / var : 0.0;
}

/* AuxK's selection (topk, batchtopk training): the dead-latent counters with this batch, then per row
 * the k_aux dead latents with the largest pre-activation, and the same by feature. */
static void aux_select(saefw_sae *sae, saefw_arch_work *a, actx *c, int64_t B) {
    const int64_t d_sae = a->d_sae, ka = sae->arch.k_aux;
    unsigned char *fired = (unsigned char *)a->colsum; /* free until the backward pass */
    memset(fired, 0, (size_t)d_sae);
    for (int64_t b = 0; b < B; b++)
        for (int64_t e = a->row_start[b]; e < a->row_start[b] + a->row_count[b]; e++)
            if (a->val[e] > 0.0f) fired[a->col[e]] = 1;
    if (a->fired_fn) a->fired_fn(a->fired_ud, fired, d_sae);
    a->n_dead = 0;
    for (int64_t j = 0; j < d_sae; j++) {
        sae->since_fired[j] = (fired[j] ? 0 : sae->since_fired[j]) + 1;
        if (a->forced_dead ? a->forced_dead[j] : sae->since_fired[j] > sae->arch.dead_steps)
            a->dead[a->n_dead++] = (int32_t)j;
    }
    if (a->n_dead == 0) return;
    saefw_parallel_for(B, aux_rows, c);
    index_by_feature(d_sae, B, NULL, a->aux_count, ka, a->aux_col, a->afstart, a->afent);
    for (int64_t p = 0; p < a->afstart[d_sae]; p++) {
        a->aby_row[p] = (int32_t)(a->afent[p] / ka);
        a->aby_val[p] = a->aux_val[a->afent[p]];
    }
}

/* AuxK, after the forward pass: the auxiliary reconstruction of the residual x - x_hat by the dead
 * latents (e_hat in xfro, its gradient in dfro) and, on the dense path, its entries' dLoss/dz. */
static void auxk(saefw_sae *sae, saefw_arch_work *a, actx *c, int64_t B) {
    const int64_t d_in = a->d_in;
    if (a->n_dead == 0) return;
    decode_slabs(c, a->afstart, a->aby_row, a->aby_val, NULL, a->xfro);
    const float scale = (float)(2.0 * sae->arch.aux_coeff / grad_rows(a, B));
    double s = 0;
    for (int64_t k = 0; k < B * d_in; k++) {
        const float res = c->x[k] - a->x_hat[k]; /* e = sg(x - x_hat) */
        const double diff = (double)a->xfro[k] - (double)res;
        s += diff * diff;
        a->dfro[k] = scale * (a->xfro[k] - res);
    }
    a->aux = s / grad_rows(a, B);
    if (a->sparse) return; /* the backward pass takes the dots on dfro's slabs */
    dot_ctx dc = {c, a->dfro, a->aux_dz, NULL, a->aux_count, a->aux_col, sae->arch.k_aux};
    saefw_parallel_for(B, dot_rows, &dc);
}

/* Entry e's gradients: dz (encoder product), db (tensor 2) and dm (gated), from its dLoss/dacts. */
static void entry_grad(const actx *c, int64_t e) {
    const saefw_sae *sae = c->sae;
    saefw_arch_work *a = c->a;
    const saefw_sae_arch arch = sae->arch.arch;
    const int32_t j = a->col[e];
    float dz;
    if (arch == SAEFW_ARCH_JUMPRELU) dz = a->pre[e] > expf(sae->p[SAEFW_LOG_THRESHOLD][j]) ? a->dot[e] : 0.0f;
    else if (arch == SAEFW_ARCH_GATED) {
        const float l1b = (float)((double)sae->l1_coeff / grad_rows(a, c->B));
        const float dm = a->val[e] > 0.0f ? a->dot[e] : 0.0f, dg = l1b + a->fdot[e];
        a->dm[e] = dm;
        a->db[e] = dg;
        a->dz[e] = dg + expf(sae->p[SAEFW_R_MAG][j]) * dm;
        return;
    } else dz = a->val[e] > 0.0f ? a->dot[e] : 0.0f;
    a->dz[e] = dz;
    a->db[e] = dz;
}

static void entry_grads(void *vctx, int64_t b0, int64_t b1) {
    const actx *c = vctx;
    for (int64_t b = b0; b < b1; b++)
        for (int64_t e = c->a->row_start[b]; e < c->a->row_start[b] + c->a->row_count[b]; e++) entry_grad(c, e);
}

void saefw_arch_train_step(saefw_sae *sae, saefw_arch_work *a, const float *x, int64_t B, saefw_sae_stats *stats) {
    const int64_t d_in = a->d_in, d_sae = a->d_sae;
    const saefw_sae_arch arch = sae->arch.arch;
    actx c = {sae, a, x, B, 1, 0, NULL};
    forward(sae, a, &c, B, sae);
    if (arch == SAEFW_ARCH_TOPK || arch == SAEFW_ARCH_BATCHTOPK) auxk(sae, a, &c, B);
    if (a->sparse) {
        /* The batch-side operands as slabs; gated's frozen-term dots by row; then everything else by
         * feature. */
        slab_copy_ctx sd = {a, a->dxh, a->slab_d, B}, sx = {a, a->xin, a->slab_x, B};
        saefw_parallel_for(a->n_groups, copy_slabs, &sd);
        saefw_parallel_for(a->n_groups, copy_slabs, &sx);
        if (a->n_dead > 0) {
            slab_copy_ctx sf = {a, a->dfro, a->slab_f, B};
            saefw_parallel_for(a->n_groups, copy_slabs, &sf);
        }
        if (arch == SAEFW_ARCH_GATED) {
            dot_ctx f = {&c, a->dfro, a->fdot, a->row_start, a->row_count, a->col, 0};
            saefw_parallel_for(B, dot_rows, &f);
        }
        saefw_parallel_for((d_sae + FEAT_BLOCK - 1) / FEAT_BLOCK, backward_features, &c);
    } else {
        /* dLoss/dacts (and the frozen term's) of every entry. */
        for (int pass = 0; pass < 1 + (arch == SAEFW_ARCH_GATED); pass++) {
            float *D = a->dense[1 + pass];
            saefw_sgemm_blocks(CblasNoTrans, CblasTrans, B, d_sae, d_in, pass ? a->dfro : a->dxh, d_in,
                               sae->p[SAEFW_W_DEC], d_in, 0.0f, D, d_sae);
            float *dst = pass ? a->fdot : a->dot;
            for (int64_t b = 0; b < B; b++)
                for (int64_t e = a->row_start[b]; e < a->row_start[b] + a->row_count[b]; e++)
                    dst[e] = D[b * d_sae + a->col[e]];
        }
        saefw_parallel_for(B, entry_grads, &c);
        saefw_parallel_for(d_sae, feature_grads, &c);
        /* dW_dec = A^T @ dxh, dW_enc = xin^T @ dZ; AuxK's terms are added from its entries. */
        saefw_sgemm_blocks(CblasTrans, CblasNoTrans, d_sae, d_in, B, a->dense[0], d_sae, a->dxh, d_in, 0.0f,
                           sae->g[SAEFW_W_DEC], d_in);
        scatter_dense(a, B, a->dz, a->dense[1]);
        if (a->n_dead > 0)
            for (int64_t b = 0; b < B; b++)
                for (int64_t e = b * sae->arch.k_aux; e < b * sae->arch.k_aux + a->aux_count[b]; e++) {
                    const int32_t j = a->aux_col[e];
                    a->dense[1][b * d_sae + j] += a->aux_dz[e];
                    for (int64_t i = 0; i < d_in; i++)
                        sae->g[SAEFW_W_DEC][j * d_in + i] += a->aux_val[e] * a->dfro[b * d_in + i];
                }
        saefw_sgemm_blocks(CblasTrans, CblasNoTrans, d_in, d_sae, B, a->xin, d_in, a->dense[1], d_sae, 0.0f,
                           sae->g[SAEFW_W_ENC], d_sae);
    }
    saefw_parallel_for(d_in, bias_dec_cols, &c);
    double sparsity = a->extra;
    if (arch == SAEFW_ARCH_TOPK || arch == SAEFW_ARCH_BATCHTOPK) sparsity += sae->arch.aux_coeff * a->aux;
    if (arch == SAEFW_ARCH_GATED) sparsity += a->aux;
    if (arch == SAEFW_ARCH_BATCHTOPK) {
        /* The inference threshold's moving average over the smallest kept activation (SAELens). */
        float m = INFINITY;
        for (int64_t b = 0; b < B; b++)
            for (int64_t e = a->row_start[b]; e < a->row_start[b] + a->row_count[b]; e++)
                if (a->val[e] > 0.0f && a->val[e] < m) m = a->val[e];
        if (isfinite(m)) sae->theta = (1.0 - sae->arch.theta_rate) * sae->theta + sae->arch.theta_rate * (double)m;
    }
    fill_stats(a, B, sparsity, stats);
}

const float *saefw_arch_eval_forward(const saefw_sae *sae, saefw_arch_work *a, const float *x, int64_t B,
                                     saefw_sae_stats *stats) {
    actx c = {sae, a, x, B, 0, 0, NULL};
    forward(sae, a, &c, B, NULL);
    fill_stats(a, B, a->extra, stats);
    return a->x_hat;
}

const float *saefw_arch_acts(const saefw_sae *sae, saefw_arch_work *a, char *err, size_t errlen) {
    if (a->acts_made) return a->acts;
    if (!a->acts && !(a->acts = saefw_malloc(sizeof(float) * (size_t)(a->cap * sae->d_sae), err, errlen))) return NULL;
    scatter_dense(a, a->rows, a->val, a->acts);
    a->acts_made = 1;
    return a->acts;
}

int saefw_arch_count_active(const saefw_sae *sae, saefw_arch_work *a, int64_t *count) {
    (void)sae;
    for (int64_t b = 0; b < a->rows; b++)
        for (int64_t e = a->row_start[b]; e < a->row_start[b] + a->row_count[b]; e++)
            count[a->col[e]] += a->val[e] > 0.0f;
    return 0;
}

int saefw_arch_row_loss(const saefw_sae *sae, saefw_arch_work *a, const float *x, float *loss) {
    const int64_t d_in = a->d_in;
    for (int64_t b = 0; b < a->rows; b++) {
        double l2 = 0, s = 0;
        for (int64_t i = 0; i < d_in; i++) {
            double d = (double)a->x_hat[b * d_in + i] - x[b * d_in + i];
            l2 += d * d;
        }
        for (int64_t e = a->row_start[b]; e < a->row_start[b] + a->row_count[b]; e++) {
            if (sae->arch.arch == SAEFW_ARCH_JUMPRELU) s += sae->arch.l0_coeff * (a->val[e] != 0.0f);
            if (sae->arch.arch == SAEFW_ARCH_GATED) s += (double)sae->l1_coeff * a->pre[e];
        }
        loss[b] = (float)(l2 + s);
    }
    return 0;
}
