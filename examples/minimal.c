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
    int rc = vae_rng_create(&rng, 42);
    if (!rc) rc = vae_rng_uniform(rng, x, N * D);
    if (!rc) rc = vae_model_create_mlp(&m, D, hidden, 1, L, VAE_ACT_RELU,
                                       VAE_LIKELIHOOD_BERNOULLI, 42);
    if (!rc) rc = vae_elbo_create(&e);
    if (!rc) rc = vae_optimizer_adam_create(&opt, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f);
    for (int step = 0; step < 100 && !rc; step++) {
        rc = vae_elbo_forward_backward(e, m, x, N, NULL, rng, &loss, NULL, NULL);
        if (!rc) rc = vae_optimizer_step(opt, m);
    }
    if (rc) fprintf(stderr, "%s: %s\n", vae_strerror(rc), vae_last_error());
    else printf("loss after 100 steps: %.2f nats per sample\n", loss);
    vae_optimizer_free(opt); vae_elbo_free(e); vae_model_free(m); vae_rng_free(rng);
    return rc ? 1 : 0;
}
