/* SGD as PyTorch's torch.optim.SGD: L2 weight decay added to the gradient,
 * momentum buffer b = mu b + (1 - dampening) g (b = g on the first step),
 * Nesterov uses g + mu b. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "../core/core.h"
#include "../core/numeric.h"
#include "optimizer.h"

void vae_sgd_coef_init(vae_sgd_coef *k, const vae_optimizer *o, int first)
{
    k->lr = o->lr;
    k->wd = o->weight_decay;
    k->mu = o->momentum;
    k->damp = 1.0f - o->dampening;
    k->nesterov = o->nesterov;
    k->first = first;
}

int vae_sgd_safe(const vae_sgd_coef *k, double G, double P, double S1)
{
    /* As vae_adam_safe: bounds of every intermediate of sgd_value. */
    const double lim = FLT_MAX / 2;
    const double d = G + (double)k->wd * P;                 /* wd p, d */
    double b = 0.0, dn = d;
    if (k->mu > 0.0f) {
        b = k->first ? d : (double)k->mu * S1 + (double)k->damp * d;  /* buf' */
        dn = k->nesterov ? d + (double)k->mu * b : b;
    }
    const double step = (double)k->lr * dn, pb = P + step;
    return d <= lim && b <= lim && dn <= lim && step <= lim && pb <= lim;
}

/* One parameter's step; the only place its arithmetic is written. With
 * momentum 0 the buffer is neither read nor written (*bn = buf). *braw
 * gets the buffer before the flush, a bound of the stored one (as in
 * adam.c, maxima of it vectorize where maxima of the flushed one do not). */
static inline void sgd_value(vae_sgd_coef k, float p, float g, float buf, float gscale,
                             float *pn, float *bn, float *braw)
{
    float d = gscale * g + k.wd * p;
    *braw = 0.0f;
    if (k.mu > 0.0f) {
        float bi = k.first ? d : k.mu * buf + k.damp * d;
        *braw = bi;
        buf = fabsf(bi) < VAE_STATE_FLUSH ? 0.0f : bi;
        d = k.nesterov ? d + k.mu * buf : buf;
    }
    *pn = p - k.lr * d;
    *bn = buf;
}

VAE_CLONES void vae_sgd_update(const vae_sgd_coef *kp, float *p, float *g, float *buf, size_t lo,
                               size_t hi, float gscale, float smax[1], float *pmax)
{
    /* A copy the stores below cannot alias: its fields stay in registers. */
    const vae_sgd_coef k = *kp;
    uint32_t bmax = 0, pm = 0;
    if (k.mu > 0.0f) {
        for (size_t i = lo; i < hi; i++) {
            float pn, bn, br;
            sgd_value(k, p[i], g[i], buf[i], gscale, &pn, &bn, &br);
            g[i] = 0.0f;
            p[i] = pn;
            buf[i] = bn;
            uint32_t a = vae_abs_bits(br), c = vae_abs_bits(pn);
            bmax = a > bmax ? a : bmax;
            pm = c > pm ? c : pm;
        }
        memcpy(smax, &bmax, sizeof bmax);
    } else {
        /* The buffer is not used: smax is not written. */
        for (size_t i = lo; i < hi; i++) {
            float pn, bn, br;
            sgd_value(k, p[i], g[i], 0.0f, gscale, &pn, &bn, &br);
            g[i] = 0.0f;
            p[i] = pn;
            uint32_t c = vae_abs_bits(pn);
            pm = c > pm ? c : pm;
        }
    }
    memcpy(pmax, &pm, sizeof pm);
}

VAE_CLONES size_t vae_sgd_check(const vae_sgd_coef *kp, const float *p, const float *g,
                                const float *buf, size_t lo, size_t hi, float gscale,
                                const char **what)
{
    /* A local copy, whose fields stay in registers. */
    const vae_sgd_coef k = *kp;
    /* As vae_adam_check: the largest bits of |p'| and of the buffer
     * before the flush. */
    uint32_t worst = 0;
    if (k.mu > 0.0f) {
        for (size_t i = lo; i < hi; i++) {
            float pn, bn, br;
            sgd_value(k, p[i], g[i], buf[i], gscale, &pn, &bn, &br);
            uint32_t a = vae_abs_bits(pn), b = vae_abs_bits(br);
            a = b > a ? b : a;
            worst = a > worst ? a : worst;
        }
    } else {
        for (size_t i = lo; i < hi; i++) {
            float pn, bn, br;
            sgd_value(k, p[i], g[i], 0.0f, gscale, &pn, &bn, &br);
            uint32_t a = vae_abs_bits(pn);
            worst = a > worst ? a : worst;
        }
    }
    const int bad = worst >= 0x7f800000u;
    for (size_t i = lo; bad && i < hi; i++) {
        float pn, bn, br;
        sgd_value(k, p[i], g[i], k.mu > 0.0f ? buf[i] : 0.0f, gscale, &pn, &bn, &br);
        if (vae_not_finite(bn) | vae_not_finite(pn)) {
            *what = vae_not_finite(bn) ? "momentum buffer" : "parameter";
            return i;
        }
    }
    return hi;
}
