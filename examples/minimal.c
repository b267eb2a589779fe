/* The README's example: train a VAE on random data in [0,1] for 100 steps. */
#include <stdio.h>
#include <vae/vae.h>

int main(void)
{
    enum { N = 64, D = 784, L = 20 };
    static float x[N * D];
    size_t hidden[] = {400};
    vae_model *m = NULL; vae_elbo *e = NULL; vae_optimizer *opt = NULL; vae_rng *rng = NULL;
    double loss = 0;
    if (vae_rng_create(&rng, 42) || vae_rng_uniform(rng, x, N * D) ||
        vae_model_create_mlp(&m, D, hidden, 1, L, VAE_ACT_RELU, VAE_LIKELIHOOD_BERNOULLI, 42) ||
        vae_elbo_create(&e) || vae_optimizer_adam_create(&opt, 1e-3f, 0.9f, 0.999f, 1e-8f, 0))
        goto fail;
    for (int step = 0; step < 100; step++)
        if (vae_elbo_forward_backward(e, m, x, N, NULL, rng, &loss, NULL, NULL) ||
            vae_optimizer_step(opt, m))
            goto fail;
    printf("loss after 100 steps: %.2f nats per sample\n", loss);
fail:
    if (*vae_last_error()) fprintf(stderr, "error: %s\n", vae_last_error());
    vae_optimizer_free(opt); vae_elbo_free(e); vae_model_free(m); vae_rng_free(rng);
    return *vae_last_error() ? 1 : 0;
}
