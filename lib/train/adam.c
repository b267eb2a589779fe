/* Adam (Kingma & Ba) in PyTorch's arithmetic, with decoupled weight decay
 * (AdamW, Loshchilov & Hutter) when weight_decay > 0:
 *   p *= 1 - lr wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *   p -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps). */
#include <float.h>
#include <math.h>
#include <string.h>

#include "../core/core.h"
#include "../core/numeric.h"
#include "optimizer.h"

void vae_adam_coef_init(vae_adam_coef *k, const vae_optimizer *o, uint64_t t)
{
    const double td = (double)t, b1 = o->beta1, b2 = o->beta2, bc1 = 1.0 - pow(b1, td);
    k->b1 = o->beta1;
    k->c1 = 1.0f - o->beta1;
    k->b2 = o->beta2;
    k->c2 = 1.0f - o->beta2;
    k->eps = o->eps;
    k->step = (float)(o->lr / bc1);
    k->inv_sqrt_bc2 = (float)(1.0 / sqrt(1.0 - pow(b2, td)));
    k->decay = 1.0f - o->lr * o->weight_decay;
    /* docs/math.md, "Optimizers": |m| below 2^-25 eps (1 - b1)(1 - b1^t)
     * moves the parameter by less than 2^-24 lr over all later steps; v
     * below (2^-26 eps / c)^2, c = 1 / sqrt(1 - b2^t), cannot change the
     * float eps + c sqrt(v) of this step, and changes later ones by less
     * than 2^-26 of themselves. For small eps these fall to subnormal
     * values or 0: then subnormal state is kept, slower but exact. */
    const double mf = 0x1p-25 * (double)o->eps * (1.0 - b1) * bc1;
    const double vr = 0x1p-26 * (double)o->eps / (double)k->inv_sqrt_bc2, vf = vr * vr;
    k->m_flush = (float)mf;
    k->v_flush = (float)(vf < FLT_MAX ? vf : FLT_MAX);
}

int vae_adam_safe(const vae_adam_coef *k, double G, double P, double S1, double S2)
{
    /* Bounds of every intermediate of adam_value, in double. Each float
     * value is within a factor (1 + 2^-24)^10 of its bound, so bounds below
     * FLT_MAX / 2 leave no room for an overflow; without one nothing is NaN
     * (v >= 0, and the denominator is at least eps > 0). */
    const double lim = FLT_MAX / 2;
    const double mb = S1 + G;                     /* |b1 m|, |(1-b1) g|, |m'| */
    const double vb = S2 + G * G;                 /* b2 v, (1-b2) g g, v' */
    const double den = sqrt(vb) * k->inv_sqrt_bc2 + k->eps;
    const double num = k->step * mb;              /* step m' */
    const double upd = num / k->eps;              /* step m' / den */
    const double pb = P * fabs(k->decay) + upd;   /* p decay, p' */
    return mb <= lim && vb <= lim && den <= lim && num <= lim && upd <= lim && pb <= lim;
}

/* One parameter's step; the only place its arithmetic is written. *mraw
 * and *vraw get the moments before the flush: bounds of the stored ones
 * (the loops take their maxima from these, which vectorize where maxima of
 * the flushed values do not). */
static inline void adam_value(vae_adam_coef k, float p, float g, float m, float v,
                              float gscale, float *pn, float *mn, float *vn, float *mraw,
                              float *vraw)
{
    float gi = gscale * g;
    float mi = k.b1 * m + k.c1 * gi, vi = k.b2 * v + k.c2 * gi * gi;
    *mraw = mi;
    *vraw = vi;
    mi = fabsf(mi) < k.m_flush ? 0.0f : mi;
    vi = vi < k.v_flush ? 0.0f : vi;
    *pn = p * k.decay - k.step * mi / (sqrtf(vi) * k.inv_sqrt_bc2 + k.eps);
    *mn = mi;
    *vn = vi;
}

VAE_CLONES void vae_adam_update(const vae_adam_coef *kp, float *p, float *g, float *m, float *v,
                                size_t lo, size_t hi, float gscale, float smax[2], float *pmax)
{
    /* A copy the stores below cannot alias: its fields stay in registers. */
    const vae_adam_coef k = *kp;
    /* Bounds of |m| and v: integer maxima of the bits (the order of
     * non-negative floats), which vectorize. */
    uint32_t mmax = 0, vmax = 0, pm = 0;
    for (size_t i = lo; i < hi; i++) {
        float pn, mn, vn, mr, vr;
        adam_value(k, p[i], g[i], m[i], v[i], gscale, &pn, &mn, &vn, &mr, &vr);
        g[i] = 0.0f;
        p[i] = pn;
        m[i] = mn;
        v[i] = vn;
        uint32_t a = vae_abs_bits(mr), b = vae_abs_bits(vr), c = vae_abs_bits(pn);
        mmax = a > mmax ? a : mmax;
        vmax = b > vmax ? b : vmax;
        pm = c > pm ? c : pm;
    }
    smax[0] = vae_float_of_bits(mmax);
    smax[1] = vae_float_of_bits(vmax);
    *pmax = vae_float_of_bits(pm);
}

VAE_CLONES size_t vae_adam_check(const vae_adam_coef *kp, const float *p, const float *g,
                                 const float *m, const float *v, size_t lo, size_t hi,
                                 float gscale, const char **what)
{
    /* A local copy, whose fields stay in registers. */
    const vae_adam_coef k = *kp;
    /* The largest bits of |p'| and of the moments before the flush (which
     * keeps NaN and infinity): NaN or infinity is at least 0x7f800000. A
     * maximum vectorizes where a flag of the flushed values does not. */
    uint32_t worst = 0;
    for (size_t i = lo; i < hi; i++) {
        float pn, mn, vn, mr, vr;
        adam_value(k, p[i], g[i], m[i], v[i], gscale, &pn, &mn, &vn, &mr, &vr);
        uint32_t a = vae_abs_bits(pn), b = vae_abs_bits(mr), c = vae_abs_bits(vr);
        a = b > a ? b : a;
        a = c > a ? c : a;
        worst = a > worst ? a : worst;
    }
    const int bad = worst >= 0x7f800000u;
    for (size_t i = lo; bad && i < hi; i++) {
        float pn, mn, vn, mr, vr;
        adam_value(k, p[i], g[i], m[i], v[i], gscale, &pn, &mn, &vn, &mr, &vr);
        if (vae_not_finite(mn) | vae_not_finite(vn) | vae_not_finite(pn)) {
            *what = vae_not_finite(mn) ? "first moment" : vae_not_finite(vn) ? "second moment"
                                                                     : "parameter";
            return i;
        }
    }
    return hi;
}
