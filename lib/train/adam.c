/* Adam (Kingma & Ba) in PyTorch's arithmetic, with decoupled weight decay
 * (AdamW, Loshchilov & Hutter) when weight_decay > 0:
 *   p *= 1 - lr wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *   p -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps). */
#include <math.h>

#include "../core/core.h"
#include "optimizer.h"

VAE_CLONES void vae_adam_update(const vae_optimizer *o, uint64_t t, float *p, float *g, float *m, float *v,
                     size_t lo, size_t hi, float gscale)
{
    const double td = (double)t;
    const float b1 = o->beta1, b2 = o->beta2, eps = o->eps;
    const float step = (float)(o->lr / (1.0 - pow(o->beta1, td)));
    const float inv_sqrt_bc2 = (float)(1.0 / sqrt(1.0 - pow(o->beta2, td)));
    const float decay = 1.0f - o->lr * o->weight_decay;
    for (size_t i = lo; i < hi; i++) {
        float gi = gscale * g[i];
        g[i] = 0.0f;
        float mi = b1 * m[i] + (1.0f - b1) * gi, vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi = fabsf(mi) < VAE_STATE_FLUSH ? 0.0f : mi;
        v[i] = vi = vi < VAE_STATE_FLUSH ? 0.0f : vi;
        p[i] = p[i] * decay - step * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);
    }
}
