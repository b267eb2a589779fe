/* The objective's settings and the per-sample terms of the loss. */
#ifndef VAE_ELBO_H
#define VAE_ELBO_H

#include "../core/core.h"
#include "model.h"

struct vae_elbo {
    float beta;
    int objective;
};

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

/* dist: NULL for a pass of this process alone; with grad only. */
int vae_elbo_pass(vae_context *ctx, const vae_model *m, const vae_elbo *e, const float *x,
                  size_t n, const float *eps, vae_rng *rng, float *grad, double *per_sample,
                  double sums[3], vae_dist *dist, const char *fn);

#endif
