/* The objective: negative ELBO, its gradient through the reparameterization,
 * the KL term and the likelihoods. Derivation in docs/math.md. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/core.h"
#include "../core/numeric.h"
#include "../core/rng.h"
#include "context.h"
#include "elbo.h"

#define LOG_2PI 1.8378770664093454836

int vae_elbo_create(vae_elbo **out)
{
    if (!out)
        return vae_fail(VAE_ERR_INVALID, "vae_elbo_create: out is NULL");
    vae_elbo *e = vae_malloc(sizeof *e);
    *out = NULL;
    if (!e)
        return vae_fail(VAE_ERR_NOMEM, "vae_elbo_create: out of memory");
    *e = vae_elbo_defaults();
    *out = e;
    return VAE_OK;
}

void vae_elbo_free(vae_elbo *e)
{
    vae_free(e);
}

int vae_elbo_set_param(vae_elbo *e, int param, double value)
{
    const char *fn = "vae_elbo_set_param";
    if (!e)
        return vae_fail(VAE_ERR_INVALID, "%s: objective is NULL", fn);
    switch (param) {
    case VAE_ELBO_BETA:
        if (!(value >= 0.0) || !((float)value < INFINITY))
            return vae_fail(VAE_ERR_INVALID, "%s: beta must be a finite float >= 0, got %g", fn,
                            value);
        e->beta = (float)value;
        return VAE_OK;
    case VAE_ELBO_OBJECTIVE:
        if (value != VAE_OBJECTIVE_ELBO && value != VAE_OBJECTIVE_AUTOENCODER &&
            value != VAE_OBJECTIVE_IWAE)
            return vae_fail(VAE_ERR_INVALID, "%s: unknown objective %g", fn, value);
        e->objective = (int)value;
        return VAE_OK;
    case VAE_ELBO_SAMPLES:
        if (!(value >= 1.0 && value <= VAE_MAX_SAMPLES) || value != floor(value))
            return vae_fail(VAE_ERR_INVALID, "%s: samples must be a whole number from 1 to %d, "
                                             "got %g",
                            fn, VAE_MAX_SAMPLES, value);
        e->samples = (size_t)value;
        return VAE_OK;
    case VAE_ELBO_WARMUP:
        if (!(value >= 0.0 && value <= (double)VAE_MAX_WARMUP) || value != floor(value))
            return vae_fail(VAE_ERR_INVALID, "%s: warm-up must be a whole number of steps from "
                                             "0 to 2^53, got %g",
                            fn, value);
        e->warmup = (uint64_t)value;
        return VAE_OK;
    case VAE_ELBO_FREE_BITS:
        if (!(value >= 0.0 && value <= VAE_MAX_FREE_BITS))
            return vae_fail(VAE_ERR_INVALID, "%s: free bits must be from 0 to 1e6 nats per "
                                             "latent dimension, got %g",
                            fn, value);
        e->free_bits = (float)value;
        return VAE_OK;
    default: return vae_fail(VAE_ERR_INVALID, "%s: unknown parameter %d", fn, param);
    }
}

vae_elbo vae_elbo_at_step(const vae_elbo *e, uint64_t step)
{
    vae_elbo r = *e;
    if (e->warmup && step < e->warmup - 1)
        r.beta = (float)((double)e->beta * ((double)(step + 1) / (double)e->warmup));
    return r;
}

int vae_elbo_get_param(const vae_elbo *e, int param, double *value)
{
    const char *fn = "vae_elbo_get_param";
    if (!e || !value)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn, e ? "value" : "objective");
    switch (param) {
    case VAE_ELBO_BETA: *value = e->beta; return VAE_OK;
    case VAE_ELBO_OBJECTIVE: *value = e->objective; return VAE_OK;
    case VAE_ELBO_SAMPLES: *value = (double)e->samples; return VAE_OK;
    case VAE_ELBO_WARMUP: *value = (double)e->warmup; return VAE_OK;
    case VAE_ELBO_FREE_BITS: *value = e->free_bits; return VAE_OK;
    default: return vae_fail(VAE_ERR_INVALID, "%s: unknown parameter %d", fn, param);
    }
}

/* ---- the continuous Bernoulli (docs/math.md, 4.3) ----------------------
 * With a = |l| and t = e^-a, per value
 *   -log p(x | l) = a (l > 0 ? 1 - x : x) + n(a),  n(a) = log((1 - t)/a),
 *   d/dl = E[x | l] - x,  E[x | l] = l > 0 ? 1 - h(a) : h(a),
 *   h(a) = E[x | -a] = 1/a - t/(1 - t) in [0, 1/2].
 * Both closed forms cancel as a -> 0 (n -> 0 and h -> 1/2 out of terms
 * near 1/a), so below CB_SWITCH they come from their Taylor series, whose
 * coefficients are Bernoulli numbers: n(a) = -a/2 + sum_k B_2k a^2k /
 * (2k (2k)!), h(a) = 1/2 - sum_k B_2k a^(2k-1) / (2k)!, radius 2 pi. At
 * 1.5 the six terms kept leave a remainder below 1e-8 relative (a tenth
 * of an ulp). Measured in float over 1.5 +- 5%: both series within 1.1
 * ulp of the exact values, both closed forms within 2.4 ulp; at 1.0 the
 * closed forms reach 4.9 ulp, at 2.0 six terms leave 7 ulp (docs/math.md,
 * 4.3, has the table). */
#define CB_SWITCH 1.5f

/* log x for a positive normal float or +inf, with no call, so that the
 * loops around it vectorize: x = 2^e m, m in [sqrt(1/2), sqrt(2)),
 * log m = 2 atanh(s) = 2 (s + s^3/3 + ... + s^11/11), s = (m - 1)/(m + 1),
 * |s| <= 0.1716 (first omitted term below 6e-11 relative); e ln 2 with
 * ln 2 split in two parts as in vae_exp_nonpos. Measured within 2.5 ulp
 * of the exact logarithm over [1, 1e30]. +inf and NaN come back as they
 * are. */
static inline float log_pos(float x)
{
    uint32_t u = vae_abs_bits(x); /* x > 0: its bits */
    int e = (int)(u >> 23) - 127;
    float mf = vae_float_of_bits((u & 0x7fffffu) | 0x3f800000u);
    int big = mf > 1.41421356f;
    mf = big ? 0.5f * mf : mf;
    float ef = (float)(e + big);
    float s = (mf - 1.0f) / (mf + 1.0f), s2 = s * s;
    float p = 1.0f / 11.0f;
    p = p * s2 + 1.0f / 9.0f;
    p = p * s2 + 1.0f / 7.0f;
    p = p * s2 + 1.0f / 5.0f;
    p = p * s2 + 1.0f / 3.0f;
    p = p * s2 + 1.0f;
    float r = ef * 0.693145751953125f + (ef * 1.42860682030941723212e-6f + 2.0f * s * p);
    return x <= FLT_MAX ? r : x;
}

/* n(a) and h(a) for a = |l| >= 0 and t = e^-a. Both branches are computed
 * and one is selected, without a division by zero in the unused one.
 * NaN gives NaN; +inf gives n = -inf (the loss term is then NaN) and h = 0.
 * h is kept >= 0: for a above 87, t is e^-87 (vae_exp_nonpos), not e^-a. */
static inline void cb_parts(float a, float t, float *n, float *h)
{
    const int small = a < CB_SWITCH;
    const float a2 = a * a;
    float pn = -4.403491782e-11f;      /* B_12 / (12 12!) */
    pn = pn * a2 + 1.0f / 479001600.0f;
    pn = pn * a2 - 1.0f / 9676800.0f;
    pn = pn * a2 + 1.0f / 181440.0f;
    pn = pn * a2 - 1.0f / 2880.0f;
    pn = pn * a2 + 1.0f / 24.0f;
    float ph = 5.284190139e-10f;       /* -B_12 / 12! */
    ph = ph * a2 - 1.0f / 47900160.0f;
    ph = ph * a2 + 1.0f / 1209600.0f;
    ph = ph * a2 - 1.0f / 30240.0f;
    ph = ph * a2 + 1.0f / 720.0f;
    ph = ph * a2 - 1.0f / 12.0f;
    const float ad = small ? 1.0f : a, om = small ? 1.0f : 1.0f - t;
    float nv = small ? a * (a * pn - 0.5f) : -log_pos(ad / om);
    float hv = small ? 0.5f + a * ph : 1.0f / ad - t / om;
    *n = nv;
    *h = hv < 0.0f ? 0.0f : hv;
}

/* Adds one block's terms (nb of them, term[] having room for a multiple of
 * 8) into 8 interleaved partial sums: a fixed order whose dependency chains
 * are 8 times shorter than one running sum's. */
static inline void add_terms(double part[8], float *term, size_t nb)
{
    for (; nb % 8; nb++) /* pad the block to whole groups of 8 */
        term[nb] = 0.0f;
    for (size_t j = 0; j < nb; j += 8)
        for (size_t k = 0; k < 8; k++)
            part[k] += (double)term[j + k];
}

static inline double sum_parts(const double part[8])
{
    return ((part[0] + part[1]) + (part[2] + part[3])) +
           ((part[4] + part[5]) + (part[6] + part[7]));
}

VAE_CLONES void vae_cb_mean(const float *in, size_t n, float *out)
{
    for (size_t k = 0; k < n; k++) {
        float l = in[k], a = fabsf(l), nv, h;
        cb_parts(a, vae_exp_nonpos(-a), &nv, &h);
        out[k] = l > 0.0f ? 1.0f - h : h;
    }
}

VAE_CLONES double vae_recon_loss(const vae_model *m, const float *x, const float *out, size_t batch,
                      float *grad, float gscale, double *per_sample)
{
    const size_t D = m->input_dim;
    double total = 0.0;
    if (m->likelihood == VAE_LIKELIHOOD_BERNOULLI) {
        /* -log p = max(l,0) - l x + log1p(t), t = e^-|l|;
         * d/dl = sigmoid(l) - x, sigmoid(l) = (l >= 0 ? 1 : t) / (1 + t).
         * Blocks of 64: one loop without calls (vectorized) fills the terms
         * and the gradient from one t per element, then the terms are added
         * in double into 8 interleaved partial sums combined pairwise: a
         * fixed order whose dependency chains are 8 times shorter than one
         * running sum's. The gradient is finite whenever the term is: for
         * a finite logit it lies in [-gscale, gscale]; a NaN or infinite
         * logit makes the term NaN or infinite. */
        enum { BLK = 64 };
        float term[BLK];
        for (size_t i = 0; i < batch; i++) {
            const float *l = out + i * D, *xi = x + i * D;
            float *gi = grad ? grad + i * D : NULL;
            double part[8] = {0};
            for (size_t j0 = 0; j0 < D; j0 += BLK) {
                size_t nb = D - j0 < BLK ? D - j0 : BLK;
                const float *lb = l + j0, *xb = xi + j0;
                if (gi) {
                    float *gb = gi + j0;
                    for (size_t j = 0; j < nb; j++) {
                        float a = lb[j], t = vae_exp_nonpos(-fabsf(a));
                        term[j] = (a > 0.0f ? a : 0.0f) - a * xb[j] + vae_log1p_unit(t);
                        gb[j] = gscale * ((a >= 0.0f ? 1.0f : t) / (1.0f + t) - xb[j]);
                    }
                } else {
                    for (size_t j = 0; j < nb; j++) {
                        float a = lb[j], t = vae_exp_nonpos(-fabsf(a));
                        term[j] = (a > 0.0f ? a : 0.0f) - a * xb[j] + vae_log1p_unit(t);
                    }
                }
                add_terms(part, term, nb);
            }
            double s = sum_parts(part);
            if (per_sample)
                per_sample[i] = s;
            total += s;
        }
    } else if (m->likelihood == VAE_LIKELIHOOD_CONTINUOUS_BERNOULLI) {
        /* -log p = a (l > 0 ? 1 - x : x) + n(a), d/dl = E[x | l] - x, from
         * one t = e^-a per element (cb_parts); the sums as for the
         * Bernoulli. a (1 - x) rather than l - l x keeps the term's rounding
         * relative where the density is largest (x near 1 for l > 0). For a
         * finite logit the gradient lies in [-gscale, gscale]; a NaN or
         * infinite logit makes the term NaN. */
        enum { BLK = 64 };
        float term[BLK];
        for (size_t i = 0; i < batch; i++) {
            const float *l = out + i * D, *xi = x + i * D;
            float *gi = grad ? grad + i * D : NULL;
            double part[8] = {0};
            for (size_t j0 = 0; j0 < D; j0 += BLK) {
                size_t nb = D - j0 < BLK ? D - j0 : BLK;
                const float *lb = l + j0, *xb = xi + j0;
                if (gi) {
                    float *gb = gi + j0;
                    for (size_t j = 0; j < nb; j++) {
                        float v = lb[j], a = fabsf(v), nv, h;
                        cb_parts(a, vae_exp_nonpos(-a), &nv, &h);
                        const int pos = v > 0.0f;
                        term[j] = a * (pos ? 1.0f - xb[j] : xb[j]) + nv;
                        gb[j] = gscale * ((pos ? 1.0f - h : h) - xb[j]);
                    }
                } else {
                    for (size_t j = 0; j < nb; j++) {
                        float v = lb[j], a = fabsf(v), nv, h;
                        cb_parts(a, vae_exp_nonpos(-a), &nv, &h);
                        term[j] = a * (v > 0.0f ? 1.0f - xb[j] : xb[j]) + nv;
                    }
                }
                add_terms(part, term, nb);
            }
            double s = sum_parts(part);
            if (per_sample)
                per_sample[i] = s;
            total += s;
        }
    } else {
        /* -log p = sum (x-m)^2 / (2 s^2) + D (log s + log(2 pi)/2);
         * d/dm = (m - x) / s^2. A sample whose gradient would not be
         * finite (computed or not: the pass checks the loss before any
         * gradient is used) gets an infinite term, so that the pass fails
         * with VAE_ERR_NUMERIC instead of succeeding with a finite double
         * loss and an infinite gradient. Sigma in [1e-6, 1e6]
         * (vae_model_set_param) rules that out unless (m - x)^2 itself
         * overflows float, which makes the term infinite anyway; the check
         * costs a compare per value, in a loop its double sum keeps scalar.
         * With gscale 0 (no gradient wanted) nothing is checked. */
        const double inv_var = 1.0 / ((double)m->sigma * (double)m->sigma);
        const double konst = (double)D * (log((double)m->sigma) + 0.5 * LOG_2PI);
        const float iv = inv_var <= FLT_MAX ? (float)inv_var : INFINITY;
        const float ginv = gscale == 0.0f ? 0.0f : iv * gscale;
        for (size_t i = 0; i < batch; i++) {
            const float *mu = out + i * D, *xi = x + i * D;
            double s = 0.0;
            int bad = 0;
            for (size_t j = 0; j < D; j++) {
                float d = mu[j] - xi[j], gj = ginv * d;
                s += (double)(d * d);
                bad |= !(fabsf(gj) <= FLT_MAX);
                if (grad)
                    grad[i * D + j] = gj;
            }
            s = bad ? INFINITY : 0.5 * s * inv_var + konst;
            if (per_sample)
                per_sample[i] = s;
            total += s;
        }
    }
    return total;
}

VAE_CLONES void vae_sigmoid(const float *in, size_t n, float *out)
{
    for (size_t k = 0; k < n; k++)
        out[k] = vae_sigmoidf(in[k]);
}
