/* The one place that includes CBLAS: every matrix product goes through here,
 * so switching BLAS (OpenBLAS, BLIS) touches no other file. */
#ifndef VAE_BLAS_H
#define VAE_BLAS_H

#include <stddef.h>

/* C[m][n] = alpha * op(A) op(B) + beta * C, row-major, explicit leading
 * dimensions; ta/tb nonzero transpose A/B. */
void vae_sgemm(int ta, int tb, size_t m, size_t n, size_t k, float alpha, const float *a,
               size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc);

/* 1 when a GEMM with beta 1 and an inner dimension of at most VAE_BLOCK adds
 * its finished product to C: C + (sum_k a_k b_k) rounded as two separate
 * steps, so adding a block's gradient through the GEMM gives the same bits
 * as computing it alone and adding it. OpenBLAS does so (its kernels add
 * alpha * AB to C after the whole inner loop, and it splits the inner
 * dimension only beyond GEMM_Q >= 256). BLIS 0.9 does not for inner
 * dimensions from about 44 up: measured, a third of the elements of a
 * 400x784 product with K = 50 or 64 differ, so with BLIS a block's product
 * goes to scratch first (docs/math.md, "Reproducibility"). */
#if defined(VAE_BLAS_BLIS)
#define VAE_BLAS_BETA1_EXACT 0
#else
#define VAE_BLAS_BETA1_EXACT 1
#endif

#endif
