/* Anomaly scores (vae_anomaly_score): the -ELBO and the reconstruction
 * probability as means over passes of the per-sample loss, the negated
 * importance-sampled log-likelihood, and that likelihood corrected by the
 * input's compressed length (Serra et al. 2020). Each kind is defined by the
 * public calls it is made of, so that a caller can reproduce it exactly. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <zlib.h>

#include "../core/core.h"
#include "context.h"
#include "elbo.h"

#define LN2 0.69314718055994530942

/* Mean over k passes of the per-sample loss with the given beta, noise
 * drawn from rng pass after pass; the sums are made in pass order. */
static int pass_mean(vae_context *ctx, const vae_model *m, const float *x, size_t n, float beta,
                     size_t k, vae_rng *rng, double *out, const char *fn)
{
    int rc = vae_ctx_enter(ctx, fn);
    if (rc)
        return rc;
    double *tmp = NULL; /* tmp[n]: one pass's losses after the first */
    if (k > 1 && !(tmp = vae_malloc(n * sizeof *tmp)))
        rc = vae_fail(VAE_ERR_NOMEM, "%s: out of memory for %zu scores", fn, n);
    vae_elbo e = vae_elbo_defaults();
    e.beta = beta;
    double sums[3];
    for (size_t r = 0; r < k && !rc; r++) {
        rc = vae_elbo_pass(ctx, m, &e, x, n, NULL, rng, NULL, NULL, r ? tmp : out, sums, NULL, fn);
        if (!rc && r)
            for (size_t i = 0; i < n; i++)
                out[i] += tmp[i];
    }
    if (!rc)
        for (size_t i = 0; i < n; i++)
            out[i] /= (double)k;
    vae_free(tmp);
    vae_ctx_leave(ctx);
    return rc;
}

/* out[i] -= 8 ln 2 times the zlib length of input i quantized to 8 bits. */
static int subtract_complexity(const vae_model *m, const float *x, size_t n, double *out,
                               const char *fn)
{
    const size_t D = m->input_dim;
    const uLong bound = compressBound((uLong)D);
    unsigned char *q = vae_malloc(D + bound); /* q[D] quantized input, then z[bound] */
    if (!q)
        return vae_fail(VAE_ERR_NOMEM, "%s: out of memory for the compression buffers", fn);
    unsigned char *z = q + D;
    int rc = VAE_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        const float *xi = x + i * D;
        for (size_t j = 0; j < D; j++) {
            float v = xi[j] < 0.0f ? 0.0f : xi[j] > 1.0f ? 1.0f : xi[j];
            q[j] = (unsigned char)(255.0f * v + 0.5f);
        }
        uLongf len = bound;
        int zr = compress2(z, &len, q, (uLong)D, Z_BEST_COMPRESSION);
        if (zr == Z_MEM_ERROR)
            rc = vae_fail(VAE_ERR_NOMEM, "%s: zlib ran out of memory compressing sample %zu", fn,
                          i);
        else if (zr != Z_OK)
            rc = vae_fail(VAE_ERR_NUMERIC, "%s: zlib failed (%d) compressing sample %zu", fn, zr,
                          i);
        else
            out[i] = out[i] - 8.0 * LN2 * (double)len;
    }
    vae_free(q);
    return rc;
}

int vae_anomaly_score(vae_context *ctx, const vae_model *m, const float *x, size_t n, int kind,
                      size_t k, vae_rng *rng, double *out)
{
    const char *fn = "vae_anomaly_score";
    const char *null = !ctx ? "ctx" : !m ? "m" : !x ? "x" : !rng ? "rng" : !out ? "out" : NULL;
    if (null)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn, null);
    if (kind < VAE_ANOMALY_NEG_ELBO || kind > VAE_ANOMALY_COMPLEXITY)
        return vae_fail(VAE_ERR_INVALID, "%s: kind = %d is not a VAE_ANOMALY_* score", fn, kind);
    if (n == 0 || n > VAE_MAX_BATCH)
        return vae_fail(VAE_ERR_INVALID, "%s: n = %zu; 1 to %zu are possible", fn, n,
                        VAE_MAX_BATCH);
    if (k == 0 || k > ((size_t)1 << 30))
        return vae_fail(VAE_ERR_INVALID, "%s: k = %zu; 1 to 2^30 are possible", fn, k);
    int rc = vae_model_check_ready(m, fn);
    if (rc)
        return rc;
    if (kind == VAE_ANOMALY_NEG_ELBO || kind == VAE_ANOMALY_RECON_PROB)
        return pass_mean(ctx, m, x, n, kind == VAE_ANOMALY_NEG_ELBO ? 1.0f : 0.0f, k, rng, out,
                         fn);
    rc = vae_log_likelihood(ctx, m, x, n, k, rng, out);
    if (rc) {
        /* The message names the call it comes from; it is reported as ours
         * (vae_fail formats aside, so its argument may be that message). */
        const char *msg = vae_last_error(), *inner = "vae_log_likelihood: ";
        if (!strncmp(msg, inner, strlen(inner)))
            msg += strlen(inner);
        return vae_fail(rc, "%s: %s", fn, msg);
    }
    for (size_t i = 0; i < n; i++)
        out[i] = -out[i];
    if (kind == VAE_ANOMALY_COMPLEXITY)
        rc = subtract_complexity(m, x, n, out, fn);
    return rc;
}
