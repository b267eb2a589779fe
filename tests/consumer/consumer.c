/* A program outside the libvae tree, built against an installed copy (once
 * through pkg-config, once through find_package(vae)). It checks that header
 * and library agree and that a few training steps lower the loss. */
#include <stdio.h>

#include <vae/vae.h>

int main(void)
{
    enum { N = 32, D = 16, L = 2, STEPS = 60 };
    float x[N * D];
    size_t hidden[] = {12};
    vae_model *m = NULL;
    vae_elbo *e = NULL;
    vae_optimizer *opt = NULL;
    vae_rng *rng = NULL;
    double first = 0, loss = 0;
    if (vae_version_number() != VAE_VERSION_NUMBER) {
        fprintf(stderr, "header %d, library %u\n", VAE_VERSION_NUMBER, vae_version_number());
        return 1;
    }
    /* Two alternating binary patterns: easy to learn in a few steps. */
    for (int i = 0; i < N; i++)
        for (int j = 0; j < D; j++)
            x[i * D + j] = (float)(((i & 1) ^ (j < D / 2)) != 0);
    int rc = vae_rng_create(&rng, 7);
    if (!rc)
        rc = vae_model_create_mlp(&m, D, hidden, 1, L, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI, 7);
    if (!rc)
        rc = vae_elbo_create(&e);
    if (!rc)
        rc = vae_optimizer_adam_create(&opt, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f);
    for (int s = 0; s < STEPS && !rc; s++) {
        rc = vae_elbo_forward_backward(e, m, x, N, NULL, rng, &loss, NULL, NULL);
        if (!rc)
            rc = vae_optimizer_step(opt, m);
        if (s == 0)
            first = loss;
    }
    vae_optimizer_free(opt);
    vae_elbo_free(e);
    vae_model_free(m);
    vae_rng_free(rng);
    if (rc) {
        fprintf(stderr, "%s: %s\n", vae_strerror(rc), vae_last_error());
        return 1;
    }
    printf("libvae %s: loss %.3f -> %.3f after %d steps\n", vae_version_string(), first, loss,
           STEPS);
    /* The bound falls from ~11 nats towards the ~2 the patterns need. */
    return loss < 0.6 * first ? 0 : 1;
}
