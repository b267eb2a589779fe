/* The one place that includes CBLAS: every matrix product goes through here,
 * so switching BLAS (OpenBLAS, BLIS) touches no other file. */
#ifndef VAE_BLAS_H
#define VAE_BLAS_H

#include <stddef.h>

/* C[m][n] = alpha * op(A) op(B) + beta * C, row-major, explicit leading
 * dimensions; ta/tb nonzero transpose A/B. */
void vae_sgemm(int ta, int tb, size_t m, size_t n, size_t k, float alpha, const float *a,
               size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc);

#endif
