#include <cblas.h>
#include <stdint.h>

#include "../core/core.h"
#include "blas.h"

void vae_sgemm(int ta, int tb, size_t m, size_t n, size_t k, float alpha, const float *a,
               size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc)
{
    /* Callers keep every dimension far below INT_MAX: layers check their
     * sizes and contexts their blocks. */
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)m, (int)n, (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

/* The BLAS's own thread setting. BLIS's cblas.h does not declare its
 * threading functions; their dim_t is int64_t in Debian's build. */
#if defined(VAE_BLAS_BLIS)
extern int64_t bli_thread_get_num_threads(void);
extern void bli_thread_set_num_threads(int64_t n);
#endif

size_t vae_blas_threads(void)
{
#if defined(VAE_BLAS_BLIS)
    int64_t n = bli_thread_get_num_threads();
#else
    int n = openblas_get_num_threads();
#endif
    return n > 1 ? (size_t)n : 1;
}

int vae_blas_set_threads(size_t n)
{
    if (n == 0 || n > 1024)
        return vae_fail(VAE_ERR_INVALID, "vae_blas_set_threads: %zu threads; 1 to 1024 are "
                                         "possible", n);
#if defined(VAE_BLAS_BLIS)
    bli_thread_set_num_threads((int64_t)n);
#else
    openblas_set_num_threads((int)n);
#endif
    return VAE_OK;
}
