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

/* Upper bound of VAE_OPT_LR and VAE_OPT_WEIGHT_DECAY (docs/math.md,
 * "Optimizers"): every coefficient a step derives from them stays a finite
 * float (lr / (1 - beta1^t) <= 1e6 * 2^24, lr * wd <= 1e12). */
#define VAE_OPT_MAX_RATE 1e6

/* The numbers one step uses, computed once per step from the
 * hyperparameters and t (the number of this step, 1 for the first), so
 * that every range of the step, and the check that may precede it, use the
 * same floats. */
typedef struct vae_adam_coef {
    float b1, c1, b2, c2;            /* beta1, 1 - beta1, beta2, 1 - beta2 */
    float eps, step, inv_sqrt_bc2;   /* lr / (1 - beta1^t), 1 / sqrt(1 - beta2^t) */
    float decay;                     /* 1 - lr wd */
    float m_flush, v_flush;          /* state below these is set to 0 (see below) */
} vae_adam_coef;

typedef struct vae_sgd_coef {
    float lr, wd, mu, damp;          /* damp = 1 - dampening */
    int nesterov, first;             /* first: the momentum buffer is filled, not updated */
} vae_sgd_coef;

void vae_adam_coef_init(vae_adam_coef *k, const vae_optimizer *o, uint64_t t);
void vae_sgd_coef_init(vae_sgd_coef *k, const vae_optimizer *o, int first);

/* Whether no float operation of a step can overflow (so every new value is
 * finite) when every |g| <= G, |p| <= P and the state is within its bounds
 * (Adam: |m| <= S1, 0 <= v <= S2; SGD: |buf| <= S1), all finite, and the
 * gradient scale is at most 1. A cheap sufficient test: when it fails the
 * step checks the values it would produce (vae_*_check) first. */
int vae_adam_safe(const vae_adam_coef *k, double G, double P, double S1, double S2);
int vae_sgd_safe(const vae_sgd_coef *k, double G, double P, double S1);

/* Updates p[lo..hi) and the state from gscale * g[lo..hi) and zeroes those
 * gradients; writes to smax[0] (and smax[1] for Adam) the largest |value|
 * of each state buffer it stored (SGD without momentum stores none and
 * leaves smax alone) and to *pmax the largest |new parameter|. Ranges of one
 * step may run in parallel. */
void vae_adam_update(const vae_adam_coef *k, float *p, float *g, float *m, float *v, size_t lo,
                     size_t hi, float gscale, float smax[2], float *pmax);
void vae_sgd_update(const vae_sgd_coef *k, float *p, float *g, float *buf, size_t lo, size_t hi,
                    float gscale, float smax[1], float *pmax);

/* The same update, writing nothing: the index in [lo, hi) of the first
 * parameter whose new value or new state would be NaN or infinite, or hi.
 * *what (when that index is returned) names the value: "parameter",
 * "first moment", "second moment" or "momentum buffer". */
size_t vae_adam_check(const vae_adam_coef *k, const float *p, const float *g, const float *m,
                      const float *v, size_t lo, size_t hi, float gscale, const char **what);
size_t vae_sgd_check(const vae_sgd_coef *k, const float *p, const float *g, const float *buf,
                     size_t lo, size_t hi, float gscale, const char **what);

/* State flush. A parameter whose gradient stays 0 (a dead ReLU unit, a
 * pixel that is always black) has its momentum decay geometrically into
 * subnormal floats, whose arithmetic the CPU runs in microcode: measured,
 * Adam's update went from 1.5 to 4.1 ms per step of a 784-400-20 model
 * within two MNIST epochs. So values too small to matter are set to 0.
 * Adam's thresholds scale with eps (vae_adam_coef_init; docs/math.md,
 * "Optimizers", says why they change no update beyond float rounding);
 * SGD's momentum below this is set to 0. */
#define VAE_STATE_FLUSH 1e-30f

#endif
