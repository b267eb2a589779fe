/* The objective's settings and the per-sample terms of the loss. */
#ifndef VAE_ELBO_H
#define VAE_ELBO_H

#include "../core/core.h"
#include "model.h"

#include <stdint.h>

struct vae_elbo {
    float beta;
    int objective;
    size_t samples;     /* draws of z per input, 1 to VAE_MAX_SAMPLES */
    uint64_t warmup;    /* KL warm-up steps, 0: off */
    float free_bits;    /* nats per latent dimension, 0: off */
};

#define VAE_MAX_SAMPLES 4096
#define VAE_MAX_WARMUP ((uint64_t)1 << 53)
#define VAE_MAX_FREE_BITS 1e6

/* The defaults of vae_elbo_create(). */
static inline vae_elbo vae_elbo_defaults(void)
{
    return (vae_elbo){1.0f, VAE_OBJECTIVE_ELBO, 1, 0, 0.0f};
}

/* The objective a trainer's pass before step `step` uses: e with the
 * warm-up's beta. */
vae_elbo vae_elbo_at_step(const vae_elbo *e, uint64_t step);

/* Sum over the batch of -log p(x_i | out_i); writes grad = gscale * d/d(out)
 * when grad is not NULL and per_sample[i] when that is not NULL. */
double vae_recon_loss(const vae_model *m, const float *x, const float *out, size_t batch,
                      float *grad, float gscale, double *per_sample);
/* out[k] = sigmoid(in[k]): a Bernoulli decoder's logits as probabilities. */
void vae_sigmoid(const float *in, size_t n, float *out);
/* out[k] = 1/(1 - e^-l) - 1/l with l = in[k]: the mean of a continuous
 * Bernoulli with logit l, in [0, 1] (NaN stays NaN). */
void vae_cb_mean(const float *in, size_t n, float *out);

/* Loss and, when grad is not NULL, its gradient added into grad, of the n
 * samples x with noise eps (or drawn from rng into the context when eps is
 * NULL and the objective samples). On a context already entered. Per-sample
 * terms land in ctx->rec and ctx->kl; per_sample (may be NULL) gets
 * rec + beta kl; sums[3] gets the means of loss, recon and kl. Nothing is
 * added to grad unless the loss is finite. */
typedef struct vae_context vae_context;

/* A training pass shared out between the ranks of a data-parallel run
 * (vae_trainer_set_distributed): this rank computes its blocks only, and
 * the exchange brings every rank's loss terms and block gradients to all.
 * The buffers belong to the trainer and grow as needed. */
typedef struct vae_dist {
    size_t rank, world;
    vae_exchange_fn fn;
    void *payload;
    float *grads;        /* every block's gradient, block by block */
    size_t grads_cap;    /* floats */
    double *terms;       /* every rank's part: status, then its samples' rec and kl */
    size_t terms_cap;    /* doubles */
    size_t *bytes;       /* [world] part sizes for the exchange */
} vae_dist;

/* dist: NULL for a pass of this process alone; with grad only. After a
 * pass, ctx->rec[i], ctx->kl[i] and ctx->loss[i], i < n, hold sample i's
 * mean reconstruction term, KL and loss (free bits excepted). grad_max (with
 * grad; may be NULL): the largest |grad[i]| over the whole slab after the
 * pass, as vae_max_abs_bits(grad, n_params) would give it, found while the
 * final values are written. */
int vae_elbo_pass(vae_context *ctx, const vae_model *m, const vae_elbo *e, const float *x,
                  size_t n, const float *eps, vae_rng *rng, float *grad, uint32_t *grad_max,
                  double *per_sample, double sums[3], vae_dist *dist, const char *fn);

/* Lays the context out for passes of up to n samples with objective e,
 * training when train is set: what vae_elbo_pass() needs, so that a
 * trainer can have it before its first step. */
int vae_elbo_layout(vae_context *ctx, const vae_model *m, const vae_elbo *e, size_t n, int train,
                    const char *fn);

#endif
