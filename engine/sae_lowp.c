/* enc_dtype's kernels: rounding to bf16 and fp16, and the low-precision product with its run-time choice
 * between the AVX512-BF16 kernel and the rounded-operand sgemm fallback.
 *
 * The AVX512-BF16 kernel (vdpbf16ps) is built for every x86-64 binary through a target attribute and
 * picked only where cpuid reports avx512_bf16. It has NOT been executed on the machine this was written
 * and measured on (AMD EPYC, AVX2 + FMA + F16C, no AVX-512): there the fallback runs, and only the
 * fallback is tested (tests/test_sae_lowp.c checks the choice). AVX512-FP16 has no fp32-accumulating
 * product (its FMAs accumulate in fp16), so fp16 always takes the fallback. */
#include "sae_lowp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "parallel.h"
#include "sae_kernels.h"
#include "util.h"

static const char *const DTYPE_NAMES[] = {"fp32", "bf16", "fp16"};

int saefw_enc_dtype_parse(const char *name, saefw_enc_dtype *out, char *err, size_t errlen) {
    for (int i = 0; i < 3; i++)
        if (name && strcmp(name, DTYPE_NAMES[i]) == 0) {
            *out = (saefw_enc_dtype)i;
            return 0;
        }
    return saefw_errf(err, errlen, "enc_dtype must be \"fp32\", \"bf16\" or \"fp16\" (got '%s')",
                      name ? name : "(null)");
}

const char *saefw_enc_dtype_name(saefw_enc_dtype dt) { return (int)dt >= 0 && (int)dt < 3 ? DTYPE_NAMES[dt] : "?"; }

float saefw_lowp_grad_scale(saefw_enc_dtype dt, int64_t B) {
    if (dt != SAEFW_ENC_FP16) return 1.0f;
    int e = 0;
    while (e < 40 && ((int64_t)1 << e) < B) e++;
    return ldexpf(1.0f, e + 3);
}

/* ---- rounding ---- */

/* fp32 bits -> bf16 bits, to nearest even; a NaN stays a (quiet) NaN instead of rounding into infinity. */
static inline uint32_t bf16_round_bits(uint32_t u) {
    const uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    return (u & 0x7fffffffu) > 0x7f800000u ? ((u | 0x00400000u) & 0xffff0000u) : r;
}

SAEFW_KERNEL static void round_bf16_range(float *dst, const float *src, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, src + i, sizeof u);
        u = bf16_round_bits(u);
        memcpy(dst + i, &u, sizeof u);
    }
}

/* The conversion to _Float16 rounds to nearest even (F16C's vcvtps2ph in the x86-64-v3 clone). */
SAEFW_KERNEL static void round_fp16_range(float *dst, const float *src, int64_t n, float scale) {
    const float inv = 1.0f / scale;
    for (int64_t i = 0; i < n; i++) dst[i] = (float)(_Float16)(src[i] * scale) * inv;
}

typedef struct {
    float *dst;
    const float *src;
    saefw_enc_dtype dt;
    float scale;
} round_ctx;

static void round_range(void *vctx, int64_t i0, int64_t i1) {
    const round_ctx *c = vctx;
    if (c->dt == SAEFW_ENC_BF16) round_bf16_range(c->dst + i0, c->src + i0, i1 - i0);
    else if (c->dt == SAEFW_ENC_FP16) round_fp16_range(c->dst + i0, c->src + i0, i1 - i0, c->scale);
    else if (c->dst != c->src) memcpy(c->dst + i0, c->src + i0, sizeof(float) * (size_t)(i1 - i0));
}

void saefw_lowp_round(float *dst, const float *src, int64_t n, saefw_enc_dtype dt, float scale) {
    round_ctx c = {dst, src, dt, scale};
    round_range(&c, 0, n);
}

void saefw_lowp_round_all(float *dst, const float *src, int64_t n, saefw_enc_dtype dt, float scale) {
    round_ctx c = {dst, src, dt, scale};
    /* Below this a thread's share costs less than waking the threads. */
    if (n < (1 << 16)) round_range(&c, 0, n);
    else saefw_parallel_for(n, round_range, &c);
}

/* ---- the AVX512-BF16 kernel (not executed on the machine this was written on; see the top) ---- */

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LOWP_HAVE_BF16_KERNEL 1
#include <immintrin.h>

#define BF16_TARGET __attribute__((target("avx512f,avx512bf16")))
/* Tile of C computed from registers: MR rows x NR columns (two zmm of 16 floats per row). */
#define MR 4
#define NR 32
/* Rows of A per block: its packed rows (MB x K/2 words) stay in L2 while the panels of B pass. */
#define MB 64

typedef struct {
    CBLAS_TRANSPOSE ta, tb;
    int64_t M, N, K, K2, NB;
    const float *A, *B;
    int64_t lda, ldb, ldc;
    float beta;
    float *C;
    uint32_t *Ap; /* [M, K2]: op(A)'s row m, elements 2p and 2p+1 in word p (low half first) */
    uint32_t *Bp; /* [NB, K2, NR]: panel nb, column c, elements 2p and 2p+1 of op(B)'s column nb NR + c */
} bf16_job;

static inline uint32_t bf16_bits(float v) {
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return bf16_round_bits(u) >> 16;
}

static inline float op_a(const bf16_job *j, int64_t m, int64_t k) {
    if (k >= j->K) return 0.0f;
    return j->ta == CblasNoTrans ? j->A[m * j->lda + k] : j->A[k * j->lda + m];
}

static inline float op_b(const bf16_job *j, int64_t k, int64_t n) {
    if (k >= j->K || n >= j->N) return 0.0f;
    return j->tb == CblasNoTrans ? j->B[k * j->ldb + n] : j->B[n * j->ldb + k];
}

static void pack_a_rows(void *vctx, int64_t m0, int64_t m1) {
    const bf16_job *j = vctx;
    for (int64_t m = m0; m < m1; m++)
        for (int64_t p = 0; p < j->K2; p++)
            j->Ap[m * j->K2 + p] = bf16_bits(op_a(j, m, 2 * p)) | (bf16_bits(op_a(j, m, 2 * p + 1)) << 16);
}

static void pack_b_panels(void *vctx, int64_t nb0, int64_t nb1) {
    const bf16_job *j = vctx;
    for (int64_t nb = nb0; nb < nb1; nb++)
        for (int64_t p = 0; p < j->K2; p++)
            for (int64_t c = 0; c < NR; c++)
                j->Bp[(nb * j->K2 + p) * NR + c] =
                    bf16_bits(op_b(j, 2 * p, nb * NR + c)) | (bf16_bits(op_b(j, 2 * p + 1, nb * NR + c)) << 16);
}

/* C's rows [m0, m0 + mr) x panel nb's nc columns over all of K, in a fixed order. */
BF16_TARGET static void bf16_tile(const bf16_job *j, int64_t m0, int mr, int64_t nb) {
    __m512 acc[MR][2];
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    const uint32_t *a[MR];
    for (int r = 0; r < MR; r++) a[r] = j->Ap + (m0 + (r < mr ? r : 0)) * j->K2;
    const uint32_t *bp = j->Bp + nb * j->K2 * NR;
    for (int64_t p = 0; p < j->K2; p++) {
        const __m512i b0 = _mm512_loadu_si512(bp + p * NR), b1 = _mm512_loadu_si512(bp + p * NR + 16);
        for (int r = 0; r < MR; r++) {
            const __m512i av = _mm512_set1_epi32((int)a[r][p]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], (__m512bh)av, (__m512bh)b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], (__m512bh)av, (__m512bh)b1);
        }
    }
    const int64_t n0 = nb * NR, nc = j->N - n0 < NR ? j->N - n0 : NR;
    for (int h = 0; h < 2; h++) {
        const int64_t w = nc - 16 * h;
        if (w <= 0) break;
        const __mmask16 mask = w >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << w) - 1u);
        for (int r = 0; r < mr; r++) {
            float *c = j->C + (m0 + r) * j->ldc + n0 + 16 * h;
            __m512 v = acc[r][h];
            if (j->beta != 0.0f) v = _mm512_fmadd_ps(_mm512_set1_ps(j->beta), _mm512_maskz_loadu_ps(mask, c), v);
            _mm512_mask_storeu_ps(c, mask, v);
        }
    }
}

BF16_TARGET static void bf16_row_blocks(void *vctx, int64_t b0, int64_t b1) {
    const bf16_job *j = vctx;
    for (int64_t b = b0; b < b1; b++) {
        const int64_t m_end = (b + 1) * MB < j->M ? (b + 1) * MB : j->M;
        for (int64_t nb = 0; nb < j->NB; nb++)
            for (int64_t m = b * MB; m < m_end; m += MR) bf16_tile(j, m, m_end - m < MR ? (int)(m_end - m) : MR, nb);
    }
}

/* 0 when done; -1 when the packing buffers could not be allocated (the caller falls back). */
static int bf16_gemm(int parallel, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K,
                     const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    bf16_job j = {ta, tb, M, N, K, (K + 1) / 2, (N + NR - 1) / NR, A, B, lda, ldb, ldc, beta, C, NULL, NULL};
    j.Ap = malloc(sizeof(uint32_t) * (size_t)(M * j.K2 + 1));
    j.Bp = malloc(sizeof(uint32_t) * (size_t)(j.NB * j.K2 * NR + 1));
    if (!j.Ap || !j.Bp) {
        free(j.Ap);
        free(j.Bp);
        return -1;
    }
    const int64_t n_blocks = (M + MB - 1) / MB;
    if (parallel) {
        saefw_parallel_for(M, pack_a_rows, &j);
        saefw_parallel_for(j.NB, pack_b_panels, &j);
        saefw_parallel_for(n_blocks, bf16_row_blocks, &j);
    } else {
        pack_a_rows(&j, 0, M);
        pack_b_panels(&j, 0, j.NB);
        bf16_row_blocks(&j, 0, n_blocks);
    }
    free(j.Ap);
    free(j.Bp);
    return 0;
}

/* The kernel has not run on the machine it was written on, so before its first use it must reproduce
 * small products of every transpose combination, with and without beta, within fp32 summation error
 * of a double reference; if it does not (or its buffers cannot be allocated), the fallback runs. */
static int bf16_self_check(void) {
    enum { M = 7, N = 37, K = 19 };
    float A[M * K], Bm[K * N], C[M * N], ref[M * N];
    for (int i = 0; i < M * K; i++) A[i] = (float)((i * 37 % 101) - 50) / 32.0f;
    for (int i = 0; i < K * N; i++) Bm[i] = (float)((i * 53 % 97) - 48) / 16.0f;
    for (int t = 0; t < 8; t++) {
        const CBLAS_TRANSPOSE ta = (t & 1) ? CblasTrans : CblasNoTrans, tb = (t & 2) ? CblasTrans : CblasNoTrans;
        const float beta = (t & 4) ? 0.5f : 0.0f;
        const int64_t lda = ta == CblasNoTrans ? K : M, ldb = tb == CblasNoTrans ? N : K;
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) {
                double acc = 0;
                for (int k = 0; k < K; k++) {
                    const double a = ta == CblasNoTrans ? A[m * lda + k] : A[k * lda + m];
                    const double b = tb == CblasNoTrans ? Bm[k * ldb + n] : Bm[n * ldb + k];
                    acc += a * b;
                }
                C[m * N + n] = 1.0f + (float)(m - n) / 8.0f;
                ref[m * N + n] = (float)(acc + (double)beta * C[m * N + n]);
            }
        if (bf16_gemm(0, ta, tb, M, N, K, A, lda, Bm, ldb, beta, C, N) != 0) return 0;
        for (int i = 0; i < M * N; i++)
            if (!(fabsf(C[i] - ref[i]) <= 1e-4f * (1.0f + fabsf(ref[i])))) return 0;
    }
    return 1;
}
#endif

/* ---- dispatch ---- */

static int use_bf16_kernel(saefw_enc_dtype dt) {
#ifdef LOWP_HAVE_BF16_KERNEL
    static int cpu = -1; /* workers may race to set it: they all store the same value */
    if (dt != SAEFW_ENC_BF16) return 0;
    int known = __atomic_load_n(&cpu, __ATOMIC_RELAXED);
    if (known < 0) {
        const char *env = getenv("SAEFW_LOWP_KERNEL");
        const int forced_off = env && strcmp(env, "fallback") == 0;
        /* cpuid leaf 7 subleaf 1, EAX bit 5, with the OS saving the zmm state (libgcc checks XCR0). */
        __builtin_cpu_init();
        known = !forced_off && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16") &&
                bf16_self_check();
        __atomic_store_n(&cpu, known, __ATOMIC_RELAXED);
    }
    return known;
#else
    (void)dt;
    return 0;
#endif
}

const char *saefw_lowp_kernel(saefw_enc_dtype dt) { return use_bf16_kernel(dt) ? "avx512bf16" : "sgemm"; }

void saefw_lowp_gemm(saefw_enc_dtype dt, int parallel, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N,
                     int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                     int64_t ldc) {
#ifdef LOWP_HAVE_BF16_KERNEL
    if (use_bf16_kernel(dt) && bf16_gemm(parallel, ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc) == 0) return;
#endif
    /* fp32, and the fallback: the operands hold low-precision values already, so sgemm's products are
     * exact and only its fp32 sums round. */
    if (parallel) saefw_sgemm_blocks(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
    else cblas_sgemm(CblasRowMajor, ta, tb, (int)M, (int)N, (int)K, 1.0f, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}
