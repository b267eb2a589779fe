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
/* Wall-clock seconds, for the stats of a call. */
double vae_seconds(void);

/* Structures that start with `size_t size` (vae_train_options,
 * vae_epoch_stats), by libgit2's rule: a caller's struct of `size` bytes,
 * compiled against an older header (smaller) or a newer one (larger), is
 * accepted when it holds at least the size field and every byte past the
 * `known` bytes of this library's struct is zero. VAE_ERR_INVALID else. */
int vae_struct_check(const void *s, size_t known, const char *fn, const char *what);
/* Copies this library's struct src (known bytes) into the caller's dst as
 * far as dst's size reaches; the size field is left alone. */
void vae_struct_put(void *dst, const void *src, size_t known);

#endif

/* Elementwise kernels compiled for several x86-64 levels, the best chosen
 * at load time (GCC/Clang function multiversioning over ifunc). The build
 * is ISO C (-std=c11), where floating-point contraction is off, so every
 * version computes the same roundings (IEEE add, mul, div, sqrt), only in
 * wider vectors (checked: the same parameters after Adam, SGD and ELU steps
 * with and without the clones). The likelihoods' loss and mean kernels,
 * built on vae_exp_nonpos, are clones too since 1.2, when that function
 * stopped keeping them from vectorizing above SSE2 (numeric.h): timed
 * alone on AVX-512, the Bernoulli loss of a 128 x 784 batch went from 0.32
 * to 0.13 ms and the continuous Bernoulli's from 0.61 to 0.21 ms, with the
 * same bits. CMake defines VAE_NO_CLONES for sanitizer builds. */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__) && !defined(VAE_NO_CLONES)
#define VAE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VAE_CLONES
#endif

/* Every allocation of the library: the allocator set with
 * vae_set_allocator() (the C library's by default). vae_calloc checks
 * count * size for overflow; zero sizes allocate one byte. */
void *vae_malloc(size_t n);
void *vae_calloc(size_t count, size_t size);
void *vae_realloc(void *p, size_t n);
void vae_free(void *p);

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
/* The largest |x[i]|, i < n, as the bits of the float (vae_abs_bits of
 * numeric.h: the order of non-negative floats; NaN and infinity are at
 * least 0x7f800000). */
uint32_t vae_max_abs_bits(const float *x, size_t n);
/* dst[i] += src[i], i < n; with want_max, returns vae_max_abs_bits of the
 * sums (else 0). */
uint32_t vae_add_floats(float *dst, const float *src, size_t n, int want_max);

/* Wall-clock seconds, for the stats of a call. */
double vae_seconds(void);

/* Structures that start with `size_t size` (vae_train_options,
 * vae_epoch_stats), by libgit2's rule: a caller's struct of `size` bytes,
 * compiled against an older header (smaller) or a newer one (larger), is
 * accepted when it holds at least the size field and every byte past the
 * `known` bytes of this library's struct is zero. VAE_ERR_INVALID else. */
int vae_struct_check(const void *s, size_t known, const char *fn, const char *what);
/* Copies this library's struct src (known bytes) into the caller's dst as
 * far as dst's size reaches; the size field is left alone. */
void vae_struct_put(void *dst, const void *src, size_t known);

#endif
