#ifndef VAE_OPTIMIZER_H
#define VAE_OPTIMIZER_H

#include <stddef.h>
#include <stdint.h>

#include "vae/vae.h"

enum { VAE_OPT_SGD = 1, VAE_OPT_ADAM = 2 };

struct vae_optimizer {
    int kind;
    float lr, weight_decay, clip_norm;
    float beta1, beta2, eps;     /* Adam */
    float momentum;              /* SGD */
    int nesterov;
    uint64_t t;                  /* steps taken */
    uintptr_t bound;             /* address of the model whose layout the state has;
                                    an integer, as that model may be freed since */
    size_t n;                    /* state length (the model's parameters) */
    float *s1, *s2;              /* Adam m and v; SGD momentum buffer in s1 */
};

int vae_optimizer_new(vae_optimizer **out, int kind, float lr, float weight_decay,
                      const char *fn);
/* Updates p[lo..hi) from gscale * g[lo..hi) and zeroes those gradients; t is
 * already incremented. Kind-specific; ranges of one step may run in parallel. */
void vae_sgd_update(vae_optimizer *o, float *p, float *g, size_t lo, size_t hi, float gscale);
/* State values below this are set to 0. A parameter whose gradient stays 0
 * (a dead ReLU unit, a pixel that is always black) has its momentum decay
 * geometrically into subnormal floats, whose arithmetic the CPU runs in
 * microcode: measured, Adam's update went from 1.5 to 4.1 ms per step of a
 * 784-400-20 model within two MNIST epochs. Values this small change no
 * update by more than float rounding (docs/math.md, "Optimizers"). */
#define VAE_STATE_FLUSH 1e-30f

void vae_adam_update(vae_optimizer *o, float *p, float *g, size_t lo, size_t hi, float gscale);

#endif
