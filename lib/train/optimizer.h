/* Optimizers: a kind and its hyperparameters. The state they update (Adam's
 * moments, SGD's momentum) belongs to a trainer and is passed in. */
#ifndef VAE_OPTIMIZER_H
#define VAE_OPTIMIZER_H

#include <stddef.h>
#include <stdint.h>

#include "vae/vae.h"

struct vae_optimizer {
    int kind;
    float lr, weight_decay, clip_norm;
    float beta1, beta2, eps;         /* Adam */
    float momentum, dampening;       /* SGD */
    int nesterov;
};

/* Updates p[lo..hi) from gscale * g[lo..hi) and zeroes those gradients.
 * t is the number of this step (1 for the first). Ranges of one step may
 * run in parallel. */
void vae_adam_update(const vae_optimizer *o, uint64_t t, float *p, float *g, float *m, float *v,
                     size_t lo, size_t hi, float gscale);
/* first: the momentum buffer is filled, not updated (torch.optim.SGD). */
void vae_sgd_update(const vae_optimizer *o, int first, float *p, float *g, float *buf,
                    size_t lo, size_t hi, float gscale);

/* State values below this are set to 0. A parameter whose gradient stays 0
 * (a dead ReLU unit, a pixel that is always black) has its momentum decay
 * geometrically into subnormal floats, whose arithmetic the CPU runs in
 * microcode: measured, Adam's update went from 1.5 to 4.1 ms per step of a
 * 784-400-20 model within two MNIST epochs. Values this small change no
 * update by more than float rounding (docs/math.md, "Optimizers"). */
#define VAE_STATE_FLUSH 1e-30f

#endif
