/* Inference: encode, decode, sample, reconstruct. Batches of any size run in
 * chunks of the reserved workspace, so inference never grows it past what
 * training asked for (or 256 rows when nothing was reserved). */
#include <math.h>
#include <string.h>

#include "../core/core.h"
#include "../core/rng.h"
#include "elbo.h"
#include "model.h"

static int prepare(vae_model *m, const void *in, const char *in_name, const void *out,
                   const char *out_name, size_t n, size_t *chunk, const char *fn)
{
    int rc = vae_model_check_ready(m, fn);
    if (rc)
        return rc;
    if (!in || !out)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn, !in ? in_name : out_name);
    if (n == 0)
        return vae_fail(VAE_ERR_INVALID, "%s: n is 0", fn);
    *chunk = m->ws_batch ? m->ws_batch : (n < 256 ? n : 256);
    return vae_model_ensure(m, *chunk, fn);
}

/* Finite inputs still give inf or NaN when the parameters make a layer
 * overflow (weights near FLT_MAX, say): report it instead of returning the
 * values, as the ELBO does for its loss. rows[0..b) of v start at row s. */
static int check_out(const float *v, size_t s, size_t b, size_t cols, const char *what,
                     const char *fn)
{
    size_t bad = 0;
    if (vae_all_finite(v, b * cols, &bad))
        return VAE_OK;
    return vae_fail(VAE_ERR_NUMERIC,
                    "%s: %s[%zu][%zu] is not finite: the model's activations overflow for "
                    "this input",
                    fn, what, s + bad / cols, bad % cols);
}

/* Decodes m->ws[0].z[b][latent] into out[b][input] as probabilities or means. */
static void decode_chunk(vae_model *m, size_t b, float *out)
{
    vae_model_forward_decoder(m, &m->ws[0], m->ws[0].z, b);
    const float *o = vae_model_out(m, &m->ws[0]);
    size_t n = b * m->input_dim;
    if (m->likelihood == VAE_LIKELIHOOD_BERNOULLI) {
        for (size_t k = 0; k < n; k++) {
            float t = expf(-fabsf(o[k]));
            out[k] = o[k] >= 0.0f ? 1.0f / (1.0f + t) : t / (1.0f + t);
        }
    } else {
        memcpy(out, o, n * sizeof(float));
    }
}

int vae_model_encode(vae_model *m, const float *x, size_t n, float *mu, float *logvar)
{
    const char *fn = "vae_model_encode";
    size_t chunk = 0;
    int rc = prepare(m, x, "x", mu, "mu", n, &chunk, fn);
    if (rc)
        return rc;
    if (!logvar)
        return vae_fail(VAE_ERR_INVALID, "%s: logvar is NULL", fn);
    if ((rc = vae_check_input(m, x, n, fn)))
        return rc;
    const size_t L = m->latent_dim, D = m->input_dim;
    for (size_t s = 0; s < n; s += chunk) {
        size_t b = n - s < chunk ? n - s : chunk;
        vae_model_forward_encoder(m, &m->ws[0], x + s * D, b);
        const float *h = m->ws[0].acts[m->n_enc];
        if ((rc = check_out(h, s, b, 2 * L, "[mu | logvar]", fn)))
            return rc;
        for (size_t i = 0; i < b; i++) {
            memcpy(mu + (s + i) * L, h + i * 2 * L, L * sizeof(float));
            memcpy(logvar + (s + i) * L, h + i * 2 * L + L, L * sizeof(float));
        }
    }
    return VAE_OK;
}

int vae_model_decode(vae_model *m, const float *z, size_t n, float *out)
{
    const char *fn = "vae_model_decode";
    size_t chunk = 0, bad = 0;
    int rc = prepare(m, z, "z", out, "out", n, &chunk, fn);
    if (rc)
        return rc;
    const size_t L = m->latent_dim, D = m->input_dim;
    if (!vae_all_finite(z, n * L, &bad))
        return vae_fail(VAE_ERR_NUMERIC, "%s: z[%zu][%zu] is not finite", fn, bad / L, bad % L);
    for (size_t s = 0; s < n; s += chunk) {
        size_t b = n - s < chunk ? n - s : chunk;
        memcpy(m->ws[0].z, z + s * L, b * L * sizeof(float));
        decode_chunk(m, b, out + s * D);
        if ((rc = check_out(out + s * D, s, b, D, "out", fn)))
            return rc;
    }
    return VAE_OK;
}

int vae_model_sample(vae_model *m, vae_rng *rng, size_t n, float *out)
{
    const char *fn = "vae_model_sample";
    size_t chunk = 0;
    int rc = prepare(m, rng, "rng", out, "out", n, &chunk, fn);
    if (rc)
        return rc;
    const size_t L = m->latent_dim, D = m->input_dim;
    for (size_t s = 0; s < n; s += chunk) {
        size_t b = n - s < chunk ? n - s : chunk;
        for (size_t k = 0; k < b * L; k++)
            m->ws[0].z[k] = vae_rng_gauss(rng);
        decode_chunk(m, b, out + s * D);
        if ((rc = check_out(out + s * D, s, b, D, "out", fn)))
            return rc;
    }
    return VAE_OK;
}

int vae_model_reconstruct(vae_model *m, const float *x, size_t n, float *out)
{
    const char *fn = "vae_model_reconstruct";
    size_t chunk = 0;
    int rc = prepare(m, x, "x", out, "out", n, &chunk, fn);
    if (rc)
        return rc;
    if ((rc = vae_check_input(m, x, n, fn)))
        return rc;
    const size_t L = m->latent_dim, D = m->input_dim;
    for (size_t s = 0; s < n; s += chunk) {
        size_t b = n - s < chunk ? n - s : chunk;
        vae_model_forward_encoder(m, &m->ws[0], x + s * D, b);
        const float *h = m->ws[0].acts[m->n_enc];
        for (size_t i = 0; i < b; i++)
            memcpy(m->ws[0].z + i * L, h + i * 2 * L, L * sizeof(float));
        decode_chunk(m, b, out + s * D);
        if ((rc = check_out(out + s * D, s, b, D, "out", fn)))
            return rc;
    }
    return VAE_OK;
}
