/* Internal access to the generator for modules that draw numbers. */
#ifndef VAE_RNG_H
#define VAE_RNG_H

#include <stddef.h>
#include <stdint.h>

#include "vae/vae.h"

struct vae_rng {
    uint64_t s[4];      /* xoshiro256** state */
    int has_spare;      /* Box-Muller gives normals in pairs */
    float spare;
};

void vae_rng_seed(vae_rng *rng, uint64_t seed);
uint64_t vae_rng_u64(vae_rng *rng);
/* Uniform in [0, 1) with 53 random bits. */
double vae_rng_double(vae_rng *rng);
/* Uniform integer in [0, n), n > 0, without modulo bias. */
uint64_t vae_rng_below(vae_rng *rng, uint64_t n);
float vae_rng_gauss(vae_rng *rng);
/* Advances rng as m calls of vae_rng_gauss() would, to the same state. */
void vae_rng_gauss_skip(vae_rng *rng, size_t m);

/* Value q (from 0) of the normals vae_rng_gauss() would give from a state,
 * for any q, without drawing the ones before: the draws are skipped (a few
 * nanoseconds each), only the values asked for are transformed. Threads
 * fill their own ranges of one stream with a cursor each, in parallel. */
typedef struct vae_gauss_cursor {
    vae_rng start;   /* the state value 0 is drawn from */
    vae_rng r;       /* start advanced to pair `next` */
    size_t next;     /* the pair r draws next */
    size_t have;     /* 1 + the pair in cos/sin; 0 for none */
    float cos, sin;
} vae_gauss_cursor;

void vae_gauss_cursor_init(vae_gauss_cursor *c, const vae_rng *start);
/* out[q - q0] = value q, q0 <= q < q1. Calls on one cursor go forward: q0
 * at least the q1 of the call before. */
void vae_gauss_cursor_fill(vae_gauss_cursor *c, float *out, size_t q0, size_t q1);

#endif
