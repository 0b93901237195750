/* enc_dtype: the SAE's products in bf16 or fp16 with fp32 accumulation (mixed precision). The parameters,
 * their gradients and the optimizer state stay fp32; each encoder and decoder product, forward and
 * backward, takes its operands rounded to the low precision (round to nearest even). Every such product
 * of the SAE goes through saefw_lowp_gemm, which picks a kernel by the CPU at run time: vdpbf16ps where
 * the CPU has AVX512-BF16, else OpenBLAS's sgemm on the rounded operands (exact products: a bf16 or
 * fp16 significand has at most 11 bits, so the product of two fits in fp32's 24). */
#ifndef SAEFW_SAE_LOWP_H
#define SAEFW_SAE_LOWP_H

#include <cblas.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    SAEFW_ENC_FP32 = 0, /* the default: every product in fp32 */
    SAEFW_ENC_BF16 = 1,
    SAEFW_ENC_FP16 = 2,
} saefw_enc_dtype;

/* "fp32", "bf16" or "fp16" (the seed's cfg["enc_dtype"] names) into *out; else -1 with an error that
 * names the value. */
int saefw_enc_dtype_parse(const char *name, saefw_enc_dtype *out, char *err, size_t errlen);
/* The name of dt ("fp32", ...); "?" for a value out of range. */
const char *saefw_enc_dtype_name(saefw_enc_dtype dt);

/* fp16's range ends at 65504 and its normal numbers at 6.1e-5: the gradient-side operands (dL/dx_hat,
 * which is 2/B times the reconstruction error, and dL/dpre) are multiplied by this power of two (8 B
 * rounded up) before rounding and divided by it after, as loss scaling does. 1 for bf16 and fp32. */
float saefw_lowp_grad_scale(saefw_enc_dtype dt, int64_t B);

/* dst[i] = round_dt(src[i] * scale) / scale for i < n (dst may be src); scale a power of two. Rounding
 * is to nearest even, with IEEE overflow to infinity; fp32 copies. Single-threaded (callable from a
 * saefw_parallel_for worker). */
void saefw_lowp_round(float *dst, const float *src, int64_t n, saefw_enc_dtype dt, float scale);
/* The same on saefw_parallel_for when n is large (not from inside a worker). */
void saefw_lowp_round_all(float *dst, const float *src, int64_t n, saefw_enc_dtype dt, float scale);

/* C = op(A) op(B) + beta C (row-major, cblas's conventions) with A and B already rounded to dt
 * (saefw_lowp_round): products exact, sums in fp32. `parallel`: on saefw_parallel_for (fixed blocks,
 * results independent of the thread count); else single-threaded (the caller is a worker). */
void saefw_lowp_gemm(saefw_enc_dtype dt, int parallel, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N,
                     int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                     int64_t ldc);

/* The kernel saefw_lowp_gemm runs for dt on this CPU: "sgemm" (fp32, or the rounded-operand fallback)
 * or "avx512bf16" (vdpbf16ps, where cpuid reports AVX512-BF16 and the kernel passed its self-check on
 * first use). SAEFW_LOWP_KERNEL=fallback in the environment forces the fallback. */
const char *saefw_lowp_kernel(saefw_enc_dtype dt);

#endif
