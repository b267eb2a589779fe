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
        /* -log p = max(l,0) - l x + log1p(e^-|l|); d/dl = sigmoid(l) - x.
         * Blocks of 64: a loop without calls or carried sums (vectorized)
         * fills the terms and gradients, then the terms are added in double
         * in element order. */
        enum { BLK = 64 };
        float term[BLK];
        for (size_t i = 0; i < batch; i++) {
            const float *l = out + i * D, *xi = x + i * D;
            float *gi = grad ? grad + i * D : NULL;
            double s = 0.0;
            for (size_t j0 = 0; j0 < D; j0 += BLK) {
                size_t nb = D - j0 < BLK ? D - j0 : BLK;
                const float *lb = l + j0, *xb = xi + j0;
                for (size_t j = 0; j < nb; j++) {
                    float a = lb[j], t = vae_exp_nonpos(-fabsf(a));
                    term[j] = (a > 0.0f ? a : 0.0f) - a * xb[j] + vae_log1p_unit(t);
                }
                if (gi) {
                    float *gb = gi + j0;
                    for (size_t j = 0; j < nb; j++) {
                        float a = lb[j], t = vae_exp_nonpos(-fabsf(a));
                        float sig = (a >= 0.0f ? 1.0f : t) / (1.0f + t);
                        gb[j] = gscale * (sig - xb[j]);
                    }
                }
                for (size_t j = 0; j < nb; j++)
                    s += (double)term[j];
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

/* A batch split over the model's workers: worker t takes a contiguous run
 * of rows. The noise of the whole batch is drawn before the split and the
 * per-sample terms are summed in row order afterwards, so the loss does not
 * depend on the worker count; the gradient sums its workers' parts in a
 * fixed order, so it is the same for the same worker count. */
typedef struct elbo_job {
    vae_elbo *e;
    vae_model *m;
    const float *x, *eps;
    size_t batch;
    int grads, sampled;
    int overflow[VAE_MAX_THREADS];
} elbo_job;

static void rows_of(const elbo_job *j, size_t t, size_t *start, size_t *n)
{
    size_t T = j->m->n_threads, base = j->batch / T, extra = j->batch % T;
    *start = t * base + (t < extra ? t : extra);
    *n = base + (t < extra);
}

static void forward_part(void *ctx, size_t t)
{
    elbo_job *j = ctx;
    vae_model *m = j->m;
    vae_ws *w = &m->ws[t];
    size_t start, b;
    rows_of(j, t, &start, &b);
    j->overflow[t] = 0;
    if (b == 0)
        return;
    const size_t L = m->latent_dim, D = m->input_dim;
    const float *x = j->x + start * D;
    vae_model_forward_encoder(m, w, x, b);
    const float *h = w->acts[m->n_enc]; /* [b][mu | logvar] */
    if (j->sampled) {
        const float *eps = j->eps + start * L;
        /* s^2 = exp(logvar) enters the KL gradient in float: past about
         * logvar 88.7 it overflows although the double KL is still finite. */
        int overflow = 0;
        for (size_t i = 0; i < b; i++)
            for (size_t k = 0; k < L; k++) {
                float mu = h[i * 2 * L + k], lv = h[i * 2 * L + L + k];
                float s = expf(0.5f * lv);
                overflow |= !(s * s < INFINITY);
                w->std[i * L + k] = s;
                w->z[i * L + k] = mu + s * eps[i * L + k];
            }
        j->overflow[t] = overflow;
    } else {
        for (size_t i = 0; i < b; i++)
            memcpy(w->z + i * L, h + i * 2 * L, L * sizeof(float));
    }
    vae_model_forward_decoder(m, w, w->z, b);
    vae_recon_loss(m, x, vae_model_out(m, w), b, j->grads ? w->grad_a : NULL,
                   1.0f / (float)j->batch, m->rec_ps + start);
    /* KL(N(mu, s^2) || N(0, 1)) = 1/2 sum (mu^2 + s^2 - 1 - log s^2) */
    for (size_t i = 0; i < b; i++) {
        double k = 0.0;
        for (size_t c = 0; j->sampled && c < L; c++) {
            double mu = h[i * 2 * L + c], lv = h[i * 2 * L + L + c];
            k += mu * mu + exp(lv) - 1.0 - lv;
        }
        m->kl_ps[start + i] = 0.5 * k;
    }
}

static void backward_part(void *ctx, size_t t)
{
    elbo_job *j = ctx;
    vae_model *m = j->m;
    vae_ws *w = &m->ws[t];
    size_t start, b;
    rows_of(j, t, &start, &b);
    if (w->grads)
        memset(w->grads, 0, m->n_params * sizeof(float));
    if (b == 0)
        return;
    const size_t L = m->latent_dim, D = m->input_dim;
    const float *h = w->acts[m->n_enc], *eps = j->sampled ? j->eps + start * L : NULL;
    vae_model_backward_decoder(m, w, w->z, w->grad_a, b, w->dz);
    /* dz -> [dmu | dlogvar], plus beta times the KL gradient (of the mean). */
    const float fb = j->e->beta / (float)j->batch;
    for (size_t i = 0; i < b; i++)
        for (size_t k = 0; k < L; k++) {
            float g = w->dz[i * L + k];
            float *dh = w->dhead + i * 2 * L;
            if (j->sampled) {
                float mu = h[i * 2 * L + k], s = w->std[i * L + k];
                dh[k] = g + fb * mu;
                dh[L + k] = 0.5f * g * eps[i * L + k] * s + 0.5f * fb * (s * s - 1.0f);
            } else {
                dh[k] = g;
                dh[L + k] = 0.0f;
            }
        }
    vae_model_backward_encoder(m, w, j->x + start * D, w->dhead, b);
}

/* grads += the workers' private gradients, each worker summing one range of
 * the slab over workers 1..T-1 in order. */
static void reduce_part(void *ctx, size_t t)
{
    elbo_job *j = ctx;
    vae_model *m = j->m;
    size_t T = m->n_threads, n = m->n_params;
    size_t lo = n * t / T, hi = n * (t + 1) / T;
    for (size_t u = 1; u < T; u++) {
        const float *g = m->ws[u].grads;
        for (size_t i = lo; i < hi; i++)
            m->grads[i] += g[i];
    }
}

static void run_parts(vae_model *m, vae_pool_fn fn, elbo_job *j)
{
    if (m->n_threads > 1)
        vae_pool_run(m->pool, fn, j);
    else
        fn(j, 0);
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
    if (sampled && !eps) {
        for (size_t k = 0; k < batch * L; k++)
            m->eps[k] = vae_rng_gauss(rng);
        eps = m->eps;
    }
    elbo_job job = {e, m, x, eps, batch, grads, sampled, {0}};
    run_parts(m, forward_part, &job);
    for (size_t t = 0; t < m->n_threads; t++)
        if (job.overflow[t])
            return vae_fail(VAE_ERR_NUMERIC,
                            "%s: exp(logvar) overflows float; the encoder's logvar output is "
                            "too large",
                            fn);
    const double beta = e->beta;
    double rsum = 0.0, ksum = 0.0;
    for (size_t i = 0; i < batch; i++) {
        rsum += m->rec_ps[i];
        ksum += m->kl_ps[i];
        if (per_sample)
            per_sample[i] = m->rec_ps[i] + beta * m->kl_ps[i];
    }
    double r = rsum / (double)batch, kk = ksum / (double)batch, total = r + beta * kk;
    if (!isfinite(total))
        return vae_fail(VAE_ERR_NUMERIC,
                        "%s: the loss is not finite (recon %g, kl %g); logvar or the decoder "
                        "output overflowed",
                        fn, r, kk);
    if (grads) {
        run_parts(m, backward_part, &job);
        if (m->n_threads > 1)
            vae_pool_run(m->pool, reduce_part, &job);
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
