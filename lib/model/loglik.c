/* Importance-sampled log-likelihood (docs/math.md):
 *   log p(x) ~ log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x),
 * with log-sum-exp in double. The K draws of one sample are decoded in chunks
 * of the workspace batch. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/core.h"
#include "../core/rng.h"
#include "elbo.h"
#include "model.h"


int vae_model_log_likelihood(vae_model *m, const float *x, size_t n, size_t k, vae_rng *rng,
                             double *out_per_sample)
{
    const char *fn = "vae_model_log_likelihood";
    int rc = vae_model_check_ready(m, fn);
    if (rc)
        return rc;
    if (!x || !rng || !out_per_sample)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn,
                        !x ? "x" : !rng ? "rng" : "out_per_sample");
    if (n == 0 || k == 0)
        return vae_fail(VAE_ERR_INVALID, "%s: n (%zu) and k (%zu) must be positive", fn, n, k);
    if (k > ((size_t)1 << 30))
        return vae_fail(VAE_ERR_INVALID, "%s: k = %zu is too large", fn, k);
    if ((rc = vae_check_input(m, x, n, fn)))
        return rc;
    size_t chunk = m->ws_batch ? m->ws_batch : (k < 256 ? k : 256);
    if ((rc = vae_model_ensure(m, chunk, fn)))
        return rc;
    const size_t L = m->latent_dim, D = m->input_dim;
    double *logw = malloc(k * sizeof *logw);
    float *post = malloc(2 * L * sizeof *post); /* mu | logvar of the current sample */
    if (!logw || !post) {
        free(logw);
        free(post);
        return vae_fail(VAE_ERR_NOMEM, "%s: out of memory", fn);
    }
    for (size_t i = 0; i < n && !rc; i++) {
        const float *xi = x + i * D;
        vae_model_forward_encoder(m, &m->ws[0], xi, 1);
        memcpy(post, m->ws[0].acts[m->n_enc], 2 * L * sizeof *post);
        double sum_lv = 0.0;
        for (size_t j = 0; j < L; j++)
            sum_lv += post[L + j];
        for (size_t s = 0; s < k; s += chunk) {
            size_t b = k - s < chunk ? k - s : chunk;
            for (size_t r = 0; r < b; r++) {
                /* log p(z) - log q(z|x) = -1/2 sum z^2 + 1/2 sum eps^2 + 1/2 sum logvar */
                double zz = 0.0, ee = 0.0;
                for (size_t j = 0; j < L; j++) {
                    float e = vae_rng_gauss(rng);
                    float z = post[j] + expf(0.5f * post[L + j]) * e;
                    m->ws[0].z[r * L + j] = z;
                    zz += (double)z * z;
                    ee += (double)e * e;
                }
                logw[s + r] = 0.5 * (ee - zz + sum_lv);
            }
            vae_model_forward_decoder(m, &m->ws[0], m->ws[0].z, b);
            const float *out = vae_model_out(m, &m->ws[0]);
            for (size_t r = 0; r < b; r++)
                logw[s + r] -= vae_recon_loss(m, xi, out + r * D, 1, NULL, 0.0f, NULL);
        }
        double mx = -INFINITY;
        for (size_t s = 0; s < k; s++)
            if (logw[s] > mx)
                mx = logw[s];
        double acc = 0.0;
        for (size_t s = 0; s < k; s++)
            acc += exp(logw[s] - mx);
        double ll = mx + log(acc) - log((double)k);
        if (!isfinite(ll))
            rc = vae_fail(VAE_ERR_NUMERIC, "%s: log-likelihood of sample %zu is not finite", fn,
                          i);
        out_per_sample[i] = ll;
    }
    free(logw);
    free(post);
    return rc;
}
