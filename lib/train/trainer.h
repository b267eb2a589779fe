/* The trainer object, shared by trainer.c and epoch.c. */
#ifndef VAE_TRAINER_H
#define VAE_TRAINER_H

#include <stddef.h>
#include <stdint.h>

#include "../core/rng.h"
#include "../model/elbo.h"
#include "../model/model.h"

/* An epoch of vae_trainer_train_epoch that has begun and not finished. Its
 * order is drawn from a copy of the generator as the epoch began, so a
 * call that continues it, in this process or after a restore, visits the
 * same samples in the same order. */
typedef struct vae_open_epoch {
    int open;
    int shuffle;                 /* the order is a permutation (else 0..total-1) */
    vae_rng rng;                 /* the trainer's generator as the epoch began */
    size_t total, done, steps;   /* samples of the dataset, samples and steps done */
    double sums[3];              /* loss, reconstruction, KL, summed over samples done */
} vae_open_epoch;

/* One metadata entry: key and value in one block, NUL-terminated each. */
typedef struct vae_meta_entry {
    char *key, *value;           /* value points into the key's block */
} vae_meta_entry;

#define VAE_META_MAX_ENTRIES 1024
#define VAE_META_MAX_KEY 255
#define VAE_META_MAX_VALUE 65535

struct vae_trainer {
    vae_model *m;                /* borrowed: its parameters are trained */
    vae_elbo *e;                 /* borrowed */
    vae_optimizer *opt;          /* borrowed: read at every step */
    vae_context *ctx;            /* borrowed */
    int kind;                    /* opt->kind at creation: the state's layout */
    size_t n;                    /* parameters */
    float *grads;                /* [n] gradient slab; the state follows it in one block */
    /* grad_max: the largest |grads[i]| (vae_abs_bits), valid while
     * grad_max_known, which only the calls that write the slab set (a pass
     * finds it as it writes the final sums; the update leaves zeros).
     * Once vae_trainer_grads() has handed the slab out, anyone may write it:
     * every step scans it again (grads_exposed). */
    int grads_exposed, grad_max_known;
    uint32_t grad_max;
    float *s1, *s2;              /* Adam m and v, or SGD's momentum buffer in s1 */
    int momentum_started;        /* SGD: the momentum buffer has been filled */
    float state_max[2];          /* bounds of the largest |value| in s1 and s2, recorded
                                    by the last step that stored them (0 when new); every
                                    step's overflow test reads them (vae_adam_safe,
                                    vae_sgd_safe) */
    vae_rng rng;                 /* noise, shuffles, binarization */
    uint64_t steps, epochs;
    vae_open_epoch ep;
    vae_dist dist;               /* world 1: not distributed */
    vae_meta_entry *meta;        /* [n_meta], in the order first set */
    size_t n_meta;
};

/* The order of an epoch over n samples: 0..n-1, shuffled (Fisher-Yates)
 * from *rng when shuffle is set. */
void vae_epoch_order(size_t *order, size_t n, int shuffle, vae_rng *rng);

/* Frees entries [0, n) of a metadata array and the array. */
void vae_meta_free(vae_meta_entry *meta, size_t n);
/* Whether key (klen bytes) and value (vlen bytes) are within the bounds of
 * vae_trainer_set_meta; NULL when they are, else what is wrong. */
const char *vae_meta_check(const char *key, size_t klen, const char *value, size_t vlen);
/* A new entry from key[0..klen) and value[0..vlen); 0 when out of memory. */
int vae_meta_make(vae_meta_entry *e, const char *key, size_t klen, const char *value,
                  size_t vlen);

/* The calls on a context already entered; fn names the public caller. */
int vae_trainer_forward_backward_in(vae_trainer *t, const float *x, size_t n, const float *eps,
                                    vae_epoch_stats *stats, const char *fn);
int vae_trainer_apply_in(vae_trainer *t, const char *fn);
/* Zeroes the gradient slab (and records that its largest value is 0). */
void vae_trainer_clear_grads(vae_trainer *t);
int vae_trainer_step_in(vae_trainer *t, const float *x, size_t n, vae_epoch_stats *stats,
                        const char *fn);

#endif
