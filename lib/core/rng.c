#include <math.h>
#include <stdlib.h>

#include "core.h"
#include "rng.h"

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void vae_rng_seed(vae_rng *rng, uint64_t seed)
{
    /* splitmix64 expands any seed, 0 included, into a nonzero state. */
    for (int i = 0; i < 4; i++)
        rng->s[i] = splitmix64(&seed);
    rng->has_spare = 0;
    rng->spare = 0.0f;
}

uint64_t vae_rng_u64(vae_rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double vae_rng_double(vae_rng *rng)
{
    return (double)(vae_rng_u64(rng) >> 11) * 0x1.0p-53;
}

uint64_t vae_rng_below(vae_rng *rng, uint64_t n)
{
    /* Rejection on the top of the range keeps every value equally likely. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t r;
    do {
        r = vae_rng_u64(rng);
    } while (r >= limit);
    return r % n;
}

/* Box-Muller in double on the next two draws; 1 - u keeps the log argument
 * in (0, 1]. The only place its arithmetic is written. */
static void box_muller(vae_rng *rng, float *c, float *s)
{
    double u1 = 1.0 - vae_rng_double(rng);
    double u2 = vae_rng_double(rng);
    double r = sqrt(-2.0 * log(u1));
    double th = 6.283185307179586476925 * u2;
    *s = (float)(r * sin(th));
    *c = (float)(r * cos(th));
}

float vae_rng_gauss(vae_rng *rng)
{
    if (rng->has_spare) {
        rng->has_spare = 0;
        return rng->spare;
    }
    float c;
    box_muller(rng, &c, &rng->spare);
    rng->has_spare = 1;
    return c;
}

void vae_rng_gauss_skip(vae_rng *rng, size_t m)
{
    if (m && rng->has_spare) {
        rng->has_spare = 0;
        m--;
    }
    if (!m)
        return;
    /* m more values: (m + 1) / 2 pairs, the last one computed for its
     * second value, which is the spare (used or not) as vae_rng_gauss
     * leaves it. */
    for (size_t p = 0; p + 1 < (m + 1) / 2; p++) {
        vae_rng_u64(rng);
        vae_rng_u64(rng);
    }
    float c;
    box_muller(rng, &c, &rng->spare);
    rng->has_spare = (int)(m % 2);
}

void vae_gauss_cursor_init(vae_gauss_cursor *c, const vae_rng *start)
{
    c->start = *start;
    c->r = *start;
    c->r.has_spare = 0;
    c->next = 0;
    c->have = 0;
}

void vae_gauss_cursor_fill(vae_gauss_cursor *c, float *out, size_t q0, size_t q1)
{
    const size_t s0 = c->start.has_spare ? 1 : 0;
    for (size_t q = q0; q < q1; q++) {
        if (q < s0) {
            out[q - q0] = c->start.spare;
            continue;
        }
        const size_t p = (q - s0) / 2;
        if (c->have != p + 1) {
            for (; c->next < p; c->next++) {
                vae_rng_u64(&c->r);
                vae_rng_u64(&c->r);
            }
            box_muller(&c->r, &c->cos, &c->sin);
            c->next = p + 1;
            c->have = p + 1;
        }
        out[q - q0] = (q - s0) % 2 ? c->sin : c->cos;
    }
}

int vae_rng_create(vae_rng **out, uint64_t seed)
{
    if (!out)
        return vae_fail(VAE_ERR_INVALID, "vae_rng_create: out is NULL");
    *out = NULL;
    vae_rng *rng = vae_malloc(sizeof *rng);
    if (!rng)
        return vae_fail(VAE_ERR_NOMEM, "vae_rng_create: out of memory");
    vae_rng_seed(rng, seed);
    *out = rng;
    return VAE_OK;
}

void vae_rng_free(vae_rng *rng)
{
    vae_free(rng);
}

int vae_rng_normal(vae_rng *rng, float *out, size_t n)
{
    if (!rng || !out)
        return vae_fail(VAE_ERR_INVALID, "vae_rng_normal: %s is NULL", rng ? "out" : "rng");
    for (size_t i = 0; i < n; i++)
        out[i] = vae_rng_gauss(rng);
    return VAE_OK;
}

int vae_rng_uniform(vae_rng *rng, float *out, size_t n)
{
    if (!rng || !out)
        return vae_fail(VAE_ERR_INVALID, "vae_rng_uniform: %s is NULL", rng ? "out" : "rng");
    for (size_t i = 0; i < n; i++) {
        /* 24 bits: every float in [0, 1) this gives is exact and < 1. */
        out[i] = (float)(vae_rng_u64(rng) >> 40) * 0x1.0p-24f;
    }
    return VAE_OK;
}
