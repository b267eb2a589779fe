/* The objective: negative ELBO, its gradient through the reparameterization,
 * the KL term and both likelihoods. Derivation in docs/math.md. */
#include <float.h>
#include <math.h>
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
    e->beta = 1.0f;
    e->objective = VAE_OBJECTIVE_ELBO;
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
        if (value != VAE_OBJECTIVE_ELBO && value != VAE_OBJECTIVE_AUTOENCODER)
            return vae_fail(VAE_ERR_INVALID, "%s: unknown objective %g", fn, value);
        e->objective = (int)value;
        return VAE_OK;
    default: return vae_fail(VAE_ERR_INVALID, "%s: unknown parameter %d", fn, param);
    }
}

int vae_elbo_get_param(const vae_elbo *e, int param, double *value)
{
    const char *fn = "vae_elbo_get_param";
    if (!e || !value)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn, e ? "value" : "objective");
    switch (param) {
    case VAE_ELBO_BETA: *value = e->beta; return VAE_OK;
    case VAE_ELBO_OBJECTIVE: *value = e->objective; return VAE_OK;
    default: return vae_fail(VAE_ERR_INVALID, "%s: unknown parameter %d", fn, param);
    }
}

double vae_recon_loss(const vae_model *m, const float *x, const float *out, size_t batch,
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
                for (; nb % 8; nb++) /* pad the block to whole groups of 8 */
                    term[nb] = 0.0f;
                for (size_t j = 0; j < nb; j += 8)
                    for (size_t k = 0; k < 8; k++)
                        part[k] += (double)term[j + k];
            }
            double s = ((part[0] + part[1]) + (part[2] + part[3])) +
                       ((part[4] + part[5]) + (part[6] + part[7]));
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

void vae_sigmoid(const float *in, size_t n, float *out)
{
    for (size_t k = 0; k < n; k++)
        out[k] = vae_sigmoidf(in[k]);
}
