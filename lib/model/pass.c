/* The ELBO over a batch and its gradient, cut into blocks (docs/math.md,
 * "Reproducibility"). Phase 1: every worker runs the forward pass of its
 * blocks (w, w + T, ...), keeping their activations, and writes each sample's
 * terms. The loss is checked before anything is added to the gradient.
 * Phase 2, in rounds of T blocks: worker 0 adds the round's first block's
 * gradient into the slab, workers 1.. write theirs into private buffers,
 * and the buffers are added to the slab in block order. The slab thus gets
 * the blocks' gradients one after another in block order, whatever T is. */
#include <math.h>
#include <string.h>

#include "../core/core.h"
#include "../core/rng.h"
#include "context.h"
#include "elbo.h"

typedef struct pass_job {
    vae_context *ctx;
    const vae_model *m;
    const vae_elbo *e;
    const float *x, *eps;
    size_t n, nblk, round;
    int sampled, train;
    float *grad;
    int overflow[VAE_MAX_THREADS];
} pass_job;

static void forward_part(void *arg, size_t w)
{
    pass_job *j = arg;
    const vae_model *m = j->m;
    j->overflow[w] = 0;
    if (w >= j->ctx->workers)
        return;
    const vae_ws *ws = &j->ctx->ws[w];
    const size_t L = m->latent_dim, D = m->input_dim, T = j->ctx->workers;
    /* Outside training one slot serves every block in turn. */
    for (size_t blk = w, slot = 0; blk < j->nblk; blk += T, slot += j->train) {
        size_t start, b;
        vae_block_range(j->n, j->nblk, blk, &start, &b);
        const float *x = j->x + start * D;
        vae_forward_encoder(m, ws, slot, x, b);
        const float *h = vae_ws_act(m, ws, m->n_enc, slot); /* [b][mu | logvar] */
        float *z = ws->z + slot * VAE_BLOCK * L, *sd = ws->std + slot * VAE_BLOCK * L;
        if (j->sampled) {
            const float *eps = j->eps + start * L;
            /* s^2 = exp(logvar) enters the KL gradient in float: past about
             * logvar 88.7 it overflows although the double KL is finite. */
            int overflow = 0;
            for (size_t i = 0; i < b; i++)
                for (size_t k = 0; k < L; k++) {
                    float mu = h[i * 2 * L + k], lv = h[i * 2 * L + L + k];
                    float s = expf(0.5f * lv);
                    overflow |= !(s * s < INFINITY);
                    sd[i * L + k] = s;
                    z[i * L + k] = mu + s * eps[i * L + k];
                }
            j->overflow[w] |= overflow;
        } else {
            for (size_t i = 0; i < b; i++)
                memcpy(z + i * L, h + i * 2 * L, L * sizeof(float));
        }
        vae_forward_decoder(m, ws, slot, z, b);
        float *dout = j->train ? ws->dout + slot * VAE_BLOCK * D : NULL;
        vae_recon_loss(m, x, vae_ws_act(m, ws, m->n_layers - 1, slot), b, dout,
                       1.0f / (float)j->n, j->ctx->rec + start);
        /* KL(N(mu, s^2) || N(0, 1)) = 1/2 sum (mu^2 + s^2 - 1 - log s^2) */
        for (size_t i = 0; i < b; i++) {
            double kl = 0.0;
            for (size_t c = 0; j->sampled && c < L; c++) {
                double mu = h[i * 2 * L + c], lv = h[i * 2 * L + L + c];
                kl += mu * mu + exp(lv) - 1.0 - lv;
            }
            j->ctx->kl[start + i] = 0.5 * kl;
        }
    }
}

/* Layers n_layers-1 .. first, backward from cur (overwritten); the last one
 * writes its input gradient to last_dx (may be NULL). */
static void backward_layers(const vae_model *m, const vae_ws *ws, size_t slot, size_t first,
                            size_t last, const float *x0, float *cur, size_t b,
                            float *last_dx, float *grad, int accumulate)
{
    for (size_t i = last + 1; i-- > first;) {
        const vae_layer *l = m->layers[i];
        const float *in = i == first ? x0 : vae_ws_act(m, ws, i - 1, slot);
        float *dx = i == first ? last_dx : (cur == ws->ga ? ws->gb : ws->ga);
        l->ops->backward(l, in, vae_ws_act(m, ws, i, slot), cur, b, dx, ws->scratch,
                         grad + l->offset, accumulate);
        cur = dx;
    }
}

static void backward_part(void *arg, size_t w)
{
    pass_job *j = arg;
    const size_t T = j->ctx->workers, blk = j->round * T + w;
    if (w >= T || blk >= j->nblk)
        return;
    const vae_model *m = j->m;
    const vae_ws *ws = &j->ctx->ws[w];
    const size_t L = m->latent_dim, D = m->input_dim, slot = j->round;
    size_t start, b;
    vae_block_range(j->n, j->nblk, blk, &start, &b);
    float *grad = w == 0 ? j->grad : ws->grad;
    const int acc = w == 0;
    const float *h = vae_ws_act(m, ws, m->n_enc, slot);
    const float *z = ws->z + slot * VAE_BLOCK * L, *sd = ws->std + slot * VAE_BLOCK * L;
    const float *eps = j->sampled ? j->eps + start * L : NULL;
    /* The decoder, from dL/d(output) to dL/dz. */
    float *dout = ws->dout + slot * VAE_BLOCK * D;
    backward_layers(m, ws, slot, m->n_enc + 1, m->n_layers - 1, z, dout, b, ws->dz, grad, acc);
    /* dz -> [dmu | dlogvar], plus beta times the KL gradient (of the mean). */
    const float fb = j->e->beta / (float)j->n;
    for (size_t i = 0; i < b; i++)
        for (size_t k = 0; k < L; k++) {
            float g = ws->dz[i * L + k];
            float *dh = ws->dhead + i * 2 * L;
            if (j->sampled) {
                float mu = h[i * 2 * L + k], s = sd[i * L + k];
                dh[k] = g + fb * mu;
                dh[L + k] = 0.5f * g * eps[i * L + k] * s + 0.5f * fb * (s * s - 1.0f);
            } else {
                dh[k] = g;
                dh[L + k] = 0.0f;
            }
        }
    backward_layers(m, ws, slot, 0, m->n_enc, j->x + start * D, ws->dhead, b, NULL, grad, acc);
}

/* grad += the round's private gradients in block order; worker t sums one
 * range of the slab. */
static void fold_part(void *arg, size_t t)
{
    pass_job *j = arg;
    const size_t T = j->ctx->workers;
    if (t >= T)
        return;
    size_t in_round = j->nblk - j->round * T;
    in_round = in_round < T ? in_round : T;
    const size_t n = j->m->n_params, lo = n * t / T, hi = n * (t + 1) / T;
    for (size_t u = 1; u < in_round; u++) {
        const float *g = j->ctx->ws[u].grad;
        for (size_t i = lo; i < hi; i++)
            j->grad[i] += g[i];
    }
}

int vae_elbo_pass(vae_context *ctx, const vae_model *m, const vae_elbo *e, const float *x,
                  size_t n, const float *eps, vae_rng *rng, float *grad, double *per_sample,
                  double sums[3], const char *fn)
{
    if (n == 0)
        return vae_fail(VAE_ERR_INVALID, "%s: n is 0", fn);
    if (n > VAE_MAX_BATCH)
        return vae_fail(VAE_ERR_INVALID, "%s: n = %zu is above %zu; split the batch", fn, n,
                        VAE_MAX_BATCH);
    const int sampled = e->objective == VAE_OBJECTIVE_ELBO;
    if (sampled && !eps && !rng)
        return vae_fail(VAE_ERR_INVALID, "%s: eps and rng are both NULL; one must give the noise",
                        fn);
    int rc = vae_check_input(m, x, n, fn);
    if (rc)
        return rc;
    const size_t L = m->latent_dim;
    size_t bad = 0;
    if (sampled && eps && !vae_all_finite(eps, n * L, &bad))
        return vae_fail(VAE_ERR_NUMERIC, "%s: eps[%zu][%zu] is not finite", fn, bad / L,
                        bad % L);
    if ((rc = vae_ctx_layout(ctx, m, n, grad != NULL, n, fn)))
        return rc;
    if (sampled && !eps) {
        /* One stream in sample order, drawn here on the calling thread. */
        for (size_t k = 0; k < n * L; k++)
            ctx->eps[k] = vae_rng_gauss(rng);
        eps = ctx->eps;
    }
    pass_job job = {ctx, m, e, x, eps, n, vae_blocks(n), 0, sampled, grad != NULL, grad, {0}};
    vae_ctx_run(ctx, forward_part, &job);
    for (size_t t = 0; t < ctx->workers; t++)
        if (job.overflow[t])
            return vae_fail(VAE_ERR_NUMERIC,
                            "%s: exp(logvar) overflows float; the encoder's logvar output is "
                            "too large",
                            fn);
    const double beta = e->beta;
    double rsum = 0.0, ksum = 0.0;
    for (size_t i = 0; i < n; i++) {
        rsum += ctx->rec[i];
        ksum += ctx->kl[i];
    }
    double r = rsum / (double)n, kk = ksum / (double)n, total = r + beta * kk;
    if (!isfinite(total))
        return vae_fail(VAE_ERR_NUMERIC,
                        "%s: the loss is not finite (recon %g, kl %g); logvar or the decoder "
                        "output overflowed",
                        fn, r, kk);
    if (per_sample)
        for (size_t i = 0; i < n; i++)
            per_sample[i] = ctx->rec[i] + beta * ctx->kl[i];
    if (grad) {
        const size_t T = ctx->workers;
        for (job.round = 0; job.round * T < job.nblk; job.round++) {
            vae_ctx_run(ctx, backward_part, &job);
            if (T > 1 && job.nblk - job.round * T > 1)
                vae_ctx_run(ctx, fold_part, &job);
        }
    }
    sums[0] = total;
    sums[1] = r;
    sums[2] = kk;
    return VAE_OK;
}
