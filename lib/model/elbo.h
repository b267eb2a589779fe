#ifndef VAE_ELBO_H
#define VAE_ELBO_H

#include "../core/core.h"

struct vae_elbo {
    float beta;
    int objective;
};

/* VAE_ERR_NUMERIC on a non-finite x, VAE_ERR_INVALID on Bernoulli x outside [0, 1]. */
int vae_check_input(const vae_model *m, const float *x, size_t n, const char *fn);
/* Sum over the batch of -log p(x_i | out_i); writes grad = gscale * d/d(out)
 * when grad is not NULL and per_sample[i] when that is not NULL. */
double vae_recon_loss(const vae_model *m, const float *x, const float *out, size_t batch,
                      float *grad, float gscale, double *per_sample);

#endif
