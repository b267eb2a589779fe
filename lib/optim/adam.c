/* Adam (Kingma & Ba) in PyTorch's arithmetic, with decoupled weight decay
 * (AdamW, Loshchilov & Hutter) when weight_decay > 0:
 *   p *= 1 - lr wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *   p -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps). */
#include <math.h>

#include "../core/core.h"
#include "optimizer.h"

int vae_optimizer_adam_create(vae_optimizer **out, float lr, float beta1, float beta2,
                              float eps, float weight_decay)
{
    const char *fn = "vae_optimizer_adam_create";
    if (out)
        *out = NULL;
    if (!(beta1 >= 0.0f && beta1 < 1.0f) || !(beta2 >= 0.0f && beta2 < 1.0f))
        return vae_fail(VAE_ERR_INVALID, "%s: betas must be in [0, 1), got %g and %g", fn,
                        (double)beta1, (double)beta2);
    if (!(eps > 0.0f && eps < INFINITY))
        return vae_fail(VAE_ERR_INVALID, "%s: eps must be finite and > 0, got %g", fn,
                        (double)eps);
    int rc = vae_optimizer_new(out, VAE_OPT_ADAM, lr, weight_decay, fn);
    if (rc)
        return rc;
    (*out)->beta1 = beta1;
    (*out)->beta2 = beta2;
    (*out)->eps = eps;
    return VAE_OK;
}

void vae_adam_update(vae_optimizer *o, float *p, float *g, size_t lo, size_t hi, float gscale)
{
    const double t = (double)o->t;
    const float b1 = o->beta1, b2 = o->beta2, eps = o->eps;
    const float step = (float)(o->lr / (1.0 - pow(o->beta1, t)));
    const float inv_sqrt_bc2 = (float)(1.0 / sqrt(1.0 - pow(o->beta2, t)));
    const float decay = 1.0f - o->lr * o->weight_decay;
    float *m = o->s1, *v = o->s2;
    for (size_t i = lo; i < hi; i++) {
        float gi = gscale * g[i];
        g[i] = 0.0f;
        float mi = b1 * m[i] + (1.0f - b1) * gi, vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi = fabsf(mi) < VAE_STATE_FLUSH ? 0.0f : mi;
        v[i] = vi = vi < VAE_STATE_FLUSH ? 0.0f : vi;
        p[i] = p[i] * decay - step * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);
    }
}
