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
    const vae_model *bound;      /* the model whose layout the state has */
    size_t n;                    /* state length (the model's parameters) */
    float *s1, *s2;              /* Adam m and v; SGD momentum buffer in s1 */
};

int vae_optimizer_new(vae_optimizer **out, int kind, float lr, float weight_decay,
                      const char *fn);
/* Updates p[lo..hi) from gscale * g[lo..hi) and zeroes those gradients; t is
 * already incremented. Kind-specific; ranges of one step may run in parallel. */
void vae_sgd_update(vae_optimizer *o, float *p, float *g, size_t lo, size_t hi, float gscale);
void vae_adam_update(vae_optimizer *o, float *p, float *g, size_t lo, size_t hi, float gscale);

#endif
