/* Helpers shared by the cmocka tests: error-status assertions, a data
 * generator independent of the library's own RNG, and double-precision
 * vector arithmetic for references and finite differences. */
#ifndef VAE_TEST_UTIL_H
#define VAE_TEST_UTIL_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vae/vae.h"

/* Leaves a known message from another function in vae_last_error(), so that
 * a call that fails without recording its own message is caught instead of
 * passing on a stale one. */
static inline void tu_prime_error(const char *fn)
{
    if (strstr(fn, "vae_rng_uniform"))
        (void)vae_layer_init(NULL, NULL);
    else
        (void)vae_rng_uniform(NULL, NULL, 0);
}

static inline void tu_check_error(int rc, int expected, const char *fn, const char *call,
                                  const char *file, int line)
{
    const char *msg = vae_last_error();
    if (rc != expected)
        fail_msg("%s:%d: %s returned %d (%s), expected %d (%s); last error: \"%s\"", file, line,
                 call, rc, vae_strerror(rc), expected, vae_strerror(expected),
                 msg ? msg : "(null)");
    if (!msg || !msg[0] || !strstr(msg, fn))
        fail_msg("%s:%d: %s: vae_last_error() is \"%s\", which does not name %s", file, line,
                 call, msg ? msg : "(null)", fn);
}

/* As tu_check_error, and the message must also contain needle; fn or needle
 * may be NULL to skip that part. */
static inline void tu_check_error_msg(int rc, int expected, const char *fn, const char *needle,
                                      const char *call, const char *file, int line)
{
    const char *msg = vae_last_error();
    if (rc != expected)
        fail_msg("%s:%d: %s returned %d (%s), expected %d (%s); last error: \"%s\"", file, line,
                 call, rc, vae_strerror(rc), expected, vae_strerror(expected),
                 msg ? msg : "(null)");
    if (!msg || !msg[0] || strstr(msg, "vae_rng_uniform: rng is NULL"))
        fail_msg("%s:%d: %s recorded no message of its own (\"%s\")", file, line, call,
                 msg ? msg : "(null)");
    if (fn && !strstr(msg, fn))
        fail_msg("%s:%d: %s: message \"%s\" does not name %s", file, line, call, msg, fn);
    if (needle && !strstr(msg, needle))
        fail_msg("%s:%d: %s: message \"%s\" does not mention \"%s\"", file, line, call, msg,
                 needle);
}

/* call must return `expected` with a fresh message containing fn and needle
 * (either may be NULL); a known message is planted first. */
#define TU_EXPECT_ERR_MSG(call, expected, fn, needle)                                       \
    do {                                                                                    \
        (void)vae_rng_uniform(NULL, NULL, 0);                                               \
        int tu_rc_ = (call);                                                                \
        tu_check_error_msg(tu_rc_, (expected), (fn), (needle), #call, __FILE__, __LINE__);  \
    } while (0)

/* call must return exactly `expected` and leave a message naming fn. */
#define TU_EXPECT_ERR(call, expected, fn)                                                   \
    do {                                                                                    \
        tu_prime_error(fn);                                                                 \
        int tu_rc_ = (call);                                                                \
        tu_check_error(tu_rc_, (expected), (fn), #call, __FILE__, __LINE__);                \
    } while (0)

#define TU_OK(call)                                                                         \
    do {                                                                                    \
        int tu_rc_ = (call);                                                                \
        if (tu_rc_ != VAE_OK)                                                               \
            fail_msg("%s:%d: %s returned %d (%s): %s", __FILE__, __LINE__, #call, tu_rc_,   \
                     vae_strerror(tu_rc_), vae_last_error());                               \
    } while (0)

/* |actual - expected| <= atol + rtol * |expected|, reported with both values. */
#define TU_CLOSE(actual, expected, rtol, atol)                                              \
    do {                                                                                    \
        double tu_a_ = (double)(actual), tu_e_ = (double)(expected);                        \
        double tu_tol_ = (double)(atol) + (double)(rtol) * fabs(tu_e_);                     \
        if (!(fabs(tu_a_ - tu_e_) <= tu_tol_))                                              \
            fail_msg("%s:%d: %s = %.17g, expected %s = %.17g (diff %.3g > tol %.3g)",       \
                     __FILE__, __LINE__, #actual, tu_a_, #expected, tu_e_,                  \
                     fabs(tu_a_ - tu_e_), tu_tol_);                                         \
    } while (0)

/* Test data comes from splitmix64 seeded per test, not from vae_rng, so a
 * bug in the library's generator cannot hide in the data that tests it. */
typedef struct tu_rng {
    uint64_t s;
} tu_rng;

static inline uint64_t tu_u64(tu_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static inline double tu_unif(tu_rng *r)
{
    return (double)(tu_u64(r) >> 11) * 0x1.0p-53;
}

/* Uniform in [lo, hi). */
static inline double tu_range(tu_rng *r, double lo, double hi)
{
    return lo + (hi - lo) * tu_unif(r);
}

static inline double tu_gauss(tu_rng *r)
{
    double u1 = 1.0 - tu_unif(r), u2 = tu_unif(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static inline void tu_fill_range(tu_rng *r, float *x, size_t n, double lo, double hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)tu_range(r, lo, hi);
}

/* A random direction of unit Euclidean length. */
static inline void tu_unit_direction(tu_rng *r, double *v, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        v[i] = tu_gauss(r);
        s += v[i] * v[i];
    }
    s = 1.0 / sqrt(s);
    for (size_t i = 0; i < n; i++)
        v[i] *= s;
}

static inline double tu_dot_fd(const float *a, const double *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

static inline int tu_all_finite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

/* Allocation that fails the test instead of returning NULL. */
static inline void *tu_alloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        fail_msg("out of memory (%zu x %zu)", n, size);
    return p;
}

/* ---- added for the 1.0 API (trainers, contexts, size-prefixed structs) ---- */

/* A vae_epoch_stats full of 0xab garbage, with size = sizeof: every field a
 * call promises to fill must be overwritten. */
static inline vae_epoch_stats tu_stats(void)
{
    vae_epoch_stats st;
    memset(&st, 0xab, sizeof st);
    st.size = sizeof st;
    return st;
}

/* A heap copy of n floats (free it). */
static inline float *tu_copy_floats(const float *src, size_t n)
{
    float *p = (float *)tu_alloc(n, sizeof *p);
    if (n)
        memcpy(p, src, n * sizeof *p);
    return p;
}

/* Index of the first nonzero float, or n when all n are +0.0 or -0.0. */
static inline size_t tu_first_nonzero(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (x[i] != 0.0f)
            return i;
    return n;
}

/* Fails the test unless the trainer's gradient slab is all zero. */
#define TU_ASSERT_ZERO_GRADS(trainer)                                                       \
    do {                                                                                    \
        size_t tu_n_ = 0;                                                                   \
        const float *tu_g_ = vae_trainer_grads((trainer), &tu_n_);                          \
        if (!tu_g_ || !tu_n_)                                                               \
            fail_msg("%s:%d: vae_trainer_grads(%s) gave no slab", __FILE__, __LINE__,       \
                     #trainer);                                                             \
        size_t tu_i_ = tu_first_nonzero(tu_g_, tu_n_);                                      \
        if (tu_i_ != tu_n_)                                                                 \
            fail_msg("%s:%d: gradient %zu of %zu is %g, expected a zero slab", __FILE__,    \
                     __LINE__, tu_i_, tu_n_, (double)tu_g_[tu_i_]);                         \
    } while (0)

/* Index of the first byte of p[0..n) that differs from `byte`, or n. */
static inline size_t tu_first_byte_not(const void *p, size_t n, unsigned char byte)
{
    const unsigned char *b = (const unsigned char *)p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != byte)
            return i;
    return n;
}

#endif
