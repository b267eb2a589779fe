/* SGD as PyTorch's torch.optim.SGD: L2 weight decay added to the gradient,
 * momentum buffer b = mu b + (1 - dampening) g (b = g on the first step),
 * Nesterov uses g + mu b. */
#include <math.h>

#include "../core/core.h"
#include "optimizer.h"

VAE_CLONES void vae_sgd_update(const vae_optimizer *o, int first, float *p, float *g, float *buf,
                    size_t lo, size_t hi, float gscale)
{
    const float lr = o->lr, wd = o->weight_decay, mu = o->momentum, damp = 1.0f - o->dampening;
    for (size_t i = lo; i < hi; i++) {
        float d = gscale * g[i] + wd * p[i];
        g[i] = 0.0f;
        if (mu > 0.0f) {
            float bi = first ? d : mu * buf[i] + damp * d;
            buf[i] = fabsf(bi) < VAE_STATE_FLUSH ? 0.0f : bi;
            d = o->nesterov ? d + mu * buf[i] : buf[i];
        }
        p[i] -= lr * d;
    }
}
