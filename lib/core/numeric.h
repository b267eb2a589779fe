/* Small numeric kernels written so the compiler can inline and vectorize
 * them under strict IEEE semantics (no -ffast-math). */
#ifndef VAE_NUMERIC_H
#define VAE_NUMERIC_H

/* log(1 + t) for t in [0, 1], as 2 atanh(u) with u = t / (2 + t) in [0, 1/3]:
 * 2 (u + u^3/3 + ... + u^15/15); the first omitted term is below 1.5e-9
 * relative, under float rounding. Several times faster than log1pf, which
 * the Bernoulli loss and softplus call once per element. */
static inline float vae_log1p_unit(float t)
{
    float u = t / (2.0f + t), u2 = u * u;
    float p = 1.0f / 15.0f;
    p = p * u2 + 1.0f / 13.0f;
    p = p * u2 + 1.0f / 11.0f;
    p = p * u2 + 1.0f / 9.0f;
    p = p * u2 + 1.0f / 7.0f;
    p = p * u2 + 1.0f / 5.0f;
    p = p * u2 + 1.0f / 3.0f;
    p = p * u2 + 1.0f;
    return 2.0f * u * p;
}

#endif
