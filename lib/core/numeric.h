/* Small numeric kernels written so the compiler can inline and vectorize
 * them under strict IEEE semantics (no -ffast-math). */
#ifndef VAE_NUMERIC_H
#define VAE_NUMERIC_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* log(1 + t) for t in [0, 1], as 2 atanh(u) with u = t / (2 + t) in [0, 1/3]:
 * 2 (u + u^3/3 + ... + u^15/15); the first omitted term is below 1.5e-9
 * relative, under float rounding. Several times faster than log1pf, which
 * the Bernoulli loss and softplus call once per element. */
static inline float vae_log1p_unit(float t)
{
    float u = t / (2.0f + t), u2 = u * u;
    float p = 1.0f / 15.0f;
    p = p * u2 + 1.0f / 13.0f;
    p = p * u2 + 1.0f / 11.0f;
    p = p * u2 + 1.0f / 9.0f;
    p = p * u2 + 1.0f / 7.0f;
    p = p * u2 + 1.0f / 5.0f;
    p = p * u2 + 1.0f / 3.0f;
    p = p * u2 + 1.0f;
    return 2.0f * u * p;
}

/* e^x for x <= 0, to 2 ulp, with no call, table or branch, so that loops
 * around it vectorize (even on baseline SSE2). Arguments below -87 give
 * e^-87 ~ 1.6e-38 instead of smaller values: results stay normal floats,
 * whose arithmetic is fast, and no use of it here can tell the
 * difference. x = k ln2 + r, |r| <= ln2/2 (Cody-Waite), e^r by Taylor to
 * r^7, then the exponent field gets k.
 * Defined for every float: NaN gives NaN, -inf gives e^-87, +inf gives
 * +inf (positive x are outside the domain: finite ones give some finite
 * value or +inf). A float-to-int conversion of NaN or of a value outside
 * int's range is undefined behaviour, so k is computed from a copy of x
 * that is always in [-87, 0]: -|x| (a no-op for x <= 0) clamped with NaN
 * going to -87. r keeps NaN and +inf, so they come out. For x <= 0 both
 * copies equal the clamped x: results are those of the single clamp, and
 * the loops keep their speed (the extra andps and maxps; clamping the
 * converted value instead made GCC duplicate the whole polynomial). */
static inline float vae_exp_nonpos(float x)
{
    float xk = -fabsf(x);
    xk = xk > -87.0f ? xk : -87.0f;             /* NaN and -inf become -87 */
    x = x < -87.0f ? -87.0f : x;                /* NaN and +inf stay */
    int k = (int)(xk * 1.44269504088896341f - 0.5f); /* round half down */
    /* k as a float, exactly (k + 127 is 1 to 127): written so, not (float)k,
     * because GCC turns (float)(int)y into a truncation with range checks
     * when SSE4.1 or AVX is on, and those branches kept every loop around
     * this function from vectorizing in the AVX2 and AVX-512 clones. */
    float kf = (float)(k + 127) - 127.0f;
    float r = (x - kf * 0.693145751953125f) - kf * 1.42860682030941723212e-6f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union {
        uint32_t u;
        float f;
    } scale = {(uint32_t)(k + 127) << 23};
    return p * scale.f;
}

/* The logistic sigmoid, the library's one: e^-|a| from vae_exp_nonpos, so
 * it never overflows and vectorizes. NaN gives NaN, -inf 1.6e-38, +inf 1. */
static inline float vae_sigmoidf(float a)
{
    float t = vae_exp_nonpos(-fabsf(a));
    return (a >= 0.0f ? 1.0f : t) / (1.0f + t);
}

/* |x| as the bits of the float: for non-negative floats the integer order is
 * the numeric order, and NaN and infinity lie above every finite value, at
 * or above 0x7f800000. Integer maxima of these vectorize where float maxima
 * do not. */
static inline uint32_t vae_abs_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u & 0x7fffffffu;
}

static inline float vae_float_of_bits(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* NaN or infinite: the exponent bits all ones. */
static inline uint32_t vae_not_finite(float x)
{
    return vae_abs_bits(x) >= 0x7f800000u;
}

#endif
