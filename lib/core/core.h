/* Internal helpers shared by every module: error reporting, checked sizes. */
#ifndef VAE_CORE_H
#define VAE_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "vae/vae.h"

#if defined(__GNUC__)
#define VAE_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define VAE_PRINTF(a, b)
#endif

/* Records a message for vae_last_error() on this thread and returns status,
 * so a failure reads `return vae_fail(VAE_ERR_INVALID, "...", ...);`. */
int vae_fail(int status, const char *fmt, ...) VAE_PRINTF(2, 3);

/* a*b, or 0 with *overflow set when it does not fit in size_t. */
static inline size_t vae_mul_size(size_t a, size_t b, int *overflow)
{
    if (a != 0 && b > SIZE_MAX / a) {
        *overflow = 1;
        return 0;
    }
    return a * b;
}

/* 1 if every value is finite; else 0 and *where is the first bad index. */
int vae_all_finite(const float *x, size_t n, size_t *where);

#endif
