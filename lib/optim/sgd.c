/* SGD as PyTorch's torch.optim.SGD (dampening 0): L2 weight decay added to
 * the gradient, momentum buffer b = mu b + g (b = g on the first step),
 * Nesterov uses g + mu b. */
#include <math.h>

#include "../core/core.h"
#include "optimizer.h"

int vae_optimizer_sgd_create(vae_optimizer **out, float lr, float momentum, int nesterov,
                             float weight_decay)
{
    const char *fn = "vae_optimizer_sgd_create";
    if (out)
        *out = NULL;
    if (!(momentum >= 0.0f && momentum < 1.0f))
        return vae_fail(VAE_ERR_INVALID, "%s: momentum must be in [0, 1), got %g", fn,
                        (double)momentum);
    if (nesterov && momentum == 0.0f)
        return vae_fail(VAE_ERR_INVALID, "%s: Nesterov needs momentum > 0", fn);
    int rc = vae_optimizer_new(out, VAE_OPT_SGD, lr, weight_decay, fn);
    if (rc)
        return rc;
    (*out)->momentum = momentum;
    (*out)->nesterov = nesterov != 0;
    return VAE_OK;
}

void vae_sgd_update(vae_optimizer *o, float *p, float *g, size_t lo, size_t hi, float gscale)
{
    const float lr = o->lr, wd = o->weight_decay, mu = o->momentum;
    float *b = o->s1;
    const int first = o->t == 1;
    for (size_t i = lo; i < hi; i++) {
        float d = gscale * g[i] + wd * p[i];
        g[i] = 0.0f;
        if (b) {
            float bi = first ? d : mu * b[i] + d;
            b[i] = fabsf(bi) < VAE_STATE_FLUSH ? 0.0f : bi;
            d = o->nesterov ? d + mu * b[i] : b[i];
        }
        p[i] -= lr * d;
    }
}
