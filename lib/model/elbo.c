/* The objective: negative ELBO, its gradient through the reparameterization,
 * the KL term and both likelihoods. Derivation in docs/math.md. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/core.h"
#include "../core/numeric.h"
#include "../core/rng.h"
#include "elbo.h"
#include "model.h"

#define LOG_2PI 1.8378770664093454836

int vae_elbo_create(vae_elbo **out)
{
    if (!out)
        return vae_fail(VAE_ERR_INVALID, "vae_elbo_create: out is NULL");
    vae_elbo *e = malloc(sizeof *e);
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
    free(e);
}

int vae_elbo_set_beta(vae_elbo *e, float beta)
{
    if (!e)
        return vae_fail(VAE_ERR_INVALID, "vae_elbo_set_beta: objective is NULL");
    if (!(beta >= 0.0f) || beta == INFINITY)
        return vae_fail(VAE_ERR_INVALID, "vae_elbo_set_beta: beta must be finite and >= 0, got %g",
                        (double)beta);
    e->beta = beta;
    return VAE_OK;
}

int vae_elbo_set_objective(vae_elbo *e, int objective)
{
    if (!e)
        return vae_fail(VAE_ERR_INVALID, "vae_elbo_set_objective: objective is NULL");
    if (objective != VAE_OBJECTIVE_ELBO && objective != VAE_OBJECTIVE_AUTOENCODER)
        return vae_fail(VAE_ERR_INVALID, "vae_elbo_set_objective: unknown objective %d",
                        objective);
    e->objective = objective;
    return VAE_OK;
}

int vae_check_input(const vae_model *m, const float *x, size_t n, const char *fn)
{
    size_t count = n * m->input_dim, bad = 0;
    if (!vae_all_finite(x, count, &bad))
        return vae_fail(VAE_ERR_NUMERIC, "%s: x[%zu][%zu] is not finite", fn,
                        bad / m->input_dim, bad % m->input_dim);
    if (m->likelihood == VAE_LIKELIHOOD_BERNOULLI) {
        for (size_t i = 0; i < count; i++)
            if (x[i] < 0.0f || x[i] > 1.0f)
                return vae_fail(VAE_ERR_INVALID,
                                "%s: x[%zu][%zu] = %g is outside [0, 1], which a Bernoulli "
                                "likelihood requires",
                                fn, i / m->input_dim, i % m->input_dim, (double)x[i]);
    }
    return VAE_OK;
}

double vae_recon_loss(const vae_model *m, const float *x, const float *out, size_t batch,
                      float *grad, float gscale, double *per_sample)
{
    const size_t D = m->input_dim;
    double total = 0.0;
    if (m->likelihood == VAE_LIKELIHOOD_BERNOULLI) {
        /* -log p = max(l,0) - l x + log1p(e^-|l|); d/dl = sigmoid(l) - x */
        for (size_t i = 0; i < batch; i++) {
            const float *l = out + i * D, *xi = x + i * D;
            double s = 0.0;
            for (size_t j = 0; j < D; j++) {
                float a = l[j], t = expf(-fabsf(a));
                s += (double)((a > 0.0f ? a : 0.0f) - a * xi[j] + vae_log1p_unit(t));
                if (grad) {
                    float sig = a >= 0.0f ? 1.0f / (1.0f + t) : t / (1.0f + t);
                    grad[i * D + j] = gscale * (sig - xi[j]);
                }
            }
            if (per_sample)
                per_sample[i] = s;
            total += s;
        }
    } else {
        /* -log p = sum (x-m)^2 / (2 s^2) + D (log s + log(2 pi)/2) */
        const double inv_var = 1.0 / ((double)m->sigma * (double)m->sigma);
        const double konst = (double)D * (log((double)m->sigma) + 0.5 * LOG_2PI);
        const float ginv = (float)inv_var * gscale;
        for (size_t i = 0; i < batch; i++) {
            const float *mu = out + i * D, *xi = x + i * D;
            double s = 0.0;
            for (size_t j = 0; j < D; j++) {
                float d = mu[j] - xi[j];
                s += (double)(d * d);
                if (grad)
                    grad[i * D + j] = ginv * d;
            }
            s = 0.5 * s * inv_var + konst;
            if (per_sample)
                per_sample[i] = s;
            total += s;
        }
    }
    return total;
}

/* One pass shared by training and evaluation; grads != 0 adds the gradient. */
static int run(vae_elbo *e, vae_model *m, const float *x, size_t batch, const float *eps,
               vae_rng *rng, int grads, double *loss, double *recon, double *kl,
               double *per_sample, const char *fn)
{
    if (!e || !m || !x)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn,
                        !e ? "objective" : !m ? "model" : "x");
    int rc = vae_model_check_ready(m, fn);
    if (rc)
        return rc;
    if (batch == 0)
        return vae_fail(VAE_ERR_INVALID, "%s: batch is 0", fn);
    const int sampled = e->objective == VAE_OBJECTIVE_ELBO;
    if (sampled && !eps && !rng)
        return vae_fail(VAE_ERR_INVALID, "%s: eps and rng are both NULL; one must give the noise",
                        fn);
    if ((rc = vae_model_ensure(m, batch, fn)) || (rc = vae_check_input(m, x, batch, fn)))
        return rc;
    const size_t L = m->latent_dim;
    size_t bad = 0;
    if (sampled && eps && !vae_all_finite(eps, batch * L, &bad))
        return vae_fail(VAE_ERR_NUMERIC, "%s: eps[%zu][%zu] is not finite", fn, bad / L,
                        bad % L);

    vae_model_forward_encoder(m, x, batch);
    const float *h = m->acts[m->n_enc]; /* [B][mu | logvar] */
    if (sampled) {
        if (!eps) {
            for (size_t k = 0; k < batch * L; k++)
                m->eps[k] = vae_rng_gauss(rng);
            eps = m->eps;
        }
        /* s^2 = exp(logvar) enters the KL gradient in float: past about
         * logvar 88.7 it overflows although the double KL is still finite. */
        int overflow = 0;
        for (size_t i = 0; i < batch; i++)
            for (size_t j = 0; j < L; j++) {
                float mu = h[i * 2 * L + j], lv = h[i * 2 * L + L + j];
                float s = expf(0.5f * lv);
                overflow |= !(s * s < INFINITY);
                m->std[i * L + j] = s;
                m->z[i * L + j] = mu + s * eps[i * L + j];
            }
        if (overflow)
            return vae_fail(VAE_ERR_NUMERIC,
                            "%s: exp(logvar) overflows float; the encoder's logvar output is "
                            "too large",
                            fn);
    } else {
        for (size_t i = 0; i < batch; i++)
            memcpy(m->z + i * L, h + i * 2 * L, L * sizeof(float));
    }
    vae_model_forward_decoder(m, m->z, batch);

    const float inv_b = 1.0f / (float)batch;
    double rsum = vae_recon_loss(m, x, vae_model_out(m), batch, grads ? m->grad_a : NULL,
                                 inv_b, per_sample);
    /* KL(N(mu, s^2) || N(0, 1)) = 1/2 sum (mu^2 + s^2 - 1 - log s^2) */
    double ksum = 0.0;
    const double beta = e->beta;
    if (sampled) {
        for (size_t i = 0; i < batch; i++) {
            double k = 0.0;
            for (size_t j = 0; j < L; j++) {
                double mu = h[i * 2 * L + j], lv = h[i * 2 * L + L + j];
                k += mu * mu + exp(lv) - 1.0 - lv;
            }
            k *= 0.5;
            if (per_sample)
                per_sample[i] += beta * k;
            ksum += k;
        }
    }
    double r = rsum / (double)batch, kk = ksum / (double)batch, total = r + beta * kk;
    if (!isfinite(total))
        return vae_fail(VAE_ERR_NUMERIC,
                        "%s: the loss is not finite (recon %g, kl %g); logvar or the decoder "
                        "output overflowed",
                        fn, r, kk);
    if (grads) {
        vae_model_backward_decoder(m, m->z, m->grad_a, batch, m->dz);
        /* dz -> [dmu | dlogvar], plus beta times the KL gradient. */
        const float fb = (float)beta * inv_b;
        for (size_t i = 0; i < batch; i++)
            for (size_t j = 0; j < L; j++) {
                float g = m->dz[i * L + j];
                float *dh = m->dhead + i * 2 * L;
                if (sampled) {
                    float mu = h[i * 2 * L + j], s = m->std[i * L + j];
                    dh[j] = g + fb * mu;
                    dh[L + j] = 0.5f * g * eps[i * L + j] * s + 0.5f * fb * (s * s - 1.0f);
                } else {
                    dh[j] = g;
                    dh[L + j] = 0.0f;
                }
            }
        vae_model_backward_encoder(m, x, m->dhead, batch);
    }
    if (loss)
        *loss = total;
    if (recon)
        *recon = r;
    if (kl)
        *kl = kk;
    return VAE_OK;
}

int vae_elbo_forward_backward(vae_elbo *e, vae_model *m, const float *x, size_t batch,
                              const float *eps, vae_rng *rng, double *loss, double *recon,
                              double *kl)
{
    return run(e, m, x, batch, eps, rng, 1, loss, recon, kl, NULL,
               "vae_elbo_forward_backward");
}

int vae_elbo_evaluate(vae_elbo *e, vae_model *m, const float *x, size_t batch,
                      const float *eps, vae_rng *rng, double *loss, double *recon, double *kl,
                      double *per_sample)
{
    return run(e, m, x, batch, eps, rng, 0, loss, recon, kl, per_sample, "vae_elbo_evaluate");
}
