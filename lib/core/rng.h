/* Internal access to the generator for modules that draw numbers. */
#ifndef VAE_RNG_H
#define VAE_RNG_H

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

#endif
