/* The example of the API reference main page (include/vae/vae.h, @mainpage):
 * train a 784-400-20 VAE on random data in [0, 1] for 100 steps. */
#include <stdio.h>
#include <vae/vae.h>

int main(void)
{
    enum { N = 64, D = 784, L = 20 };
    static float x[N * D];
    size_t hidden[] = {400};
    vae_model *m = NULL; vae_context *ctx = NULL; vae_elbo *e = NULL;
    vae_optimizer *opt = NULL; vae_trainer *t = NULL; vae_rng *rng = NULL;
    vae_epoch_stats st = {sizeof st};
    int rc = vae_rng_create(&rng, 42);
    if (!rc) rc = vae_rng_uniform(rng, x, N * D);
    if (!rc) rc = vae_model_create_mlp(&m, D, hidden, 1, L, VAE_ACT_RELU,
                                       VAE_LIKELIHOOD_BERNOULLI, 42);
    if (!rc) rc = vae_context_create(&ctx);
    if (!rc) rc = vae_elbo_create(&e);
    if (!rc) rc = vae_optimizer_create(&opt, VAE_OPTIMIZER_ADAM);
    if (!rc) rc = vae_trainer_create(&t, m, e, opt, ctx, 42);
    for (int step = 0; step < 100 && !rc; step++)
        rc = vae_trainer_step(t, x, N, &st);
    if (rc) fprintf(stderr, "%s: %s\n", vae_strerror(rc), vae_last_error());
    else printf("loss after 100 steps: %.2f nats per sample\n", st.loss);
    vae_trainer_free(t); vae_optimizer_free(opt); vae_elbo_free(e);
    vae_context_free(ctx); vae_model_free(m); vae_rng_free(rng);
    return rc ? 1 : 0;
}
