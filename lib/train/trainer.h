/* The trainer object, shared by trainer.c and epoch.c. */
#ifndef VAE_TRAINER_H
#define VAE_TRAINER_H

#include <stddef.h>
#include <stdint.h>

#include "../core/rng.h"
#include "../model/model.h"

struct vae_trainer {
    vae_model *m;                /* borrowed: its parameters are trained */
    vae_elbo *e;                 /* borrowed */
    vae_optimizer *opt;          /* borrowed: read at every step */
    vae_context *ctx;            /* borrowed */
    int kind;                    /* opt->kind at creation: the state's layout */
    size_t n;                    /* parameters */
    float *grads;                /* [n] gradient slab; the state follows it in one block */
    float *s1, *s2;              /* Adam m and v, or SGD's momentum buffer in s1 */
    int momentum_started;        /* SGD: the momentum buffer has been filled */
    float state_max[2];          /* bounds of the largest |value| in s1 and s2, recorded
                                    by the last step that stored them (0 when new); every
                                    step's overflow test reads them (vae_adam_safe,
                                    vae_sgd_safe) */
    vae_rng rng;                 /* noise, shuffles, binarization */
    uint64_t steps, epochs;
};

/* The calls on a context already entered; fn names the public caller. */
int vae_trainer_forward_backward_in(vae_trainer *t, const float *x, size_t n, const float *eps,
                                    vae_epoch_stats *stats, const char *fn);
int vae_trainer_apply_in(vae_trainer *t, const char *fn);
int vae_trainer_step_in(vae_trainer *t, const float *x, size_t n, vae_epoch_stats *stats,
                        const char *fn);

#endif
