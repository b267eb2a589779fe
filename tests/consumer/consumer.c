/* A program outside the libvae tree, built against an installed copy (once
 * through pkg-config, once through find_package(vae)). It checks that header
 * and library agree, that a few training steps through a trainer lower the
 * loss, and that the trained model encodes the two patterns apart. */
#include <stdio.h>
#include <string.h>

#include <vae/vae.h>

int main(void)
{
    enum { N = 32, D = 16, L = 2, STEPS = 60 };
    float x[N * D], mu[N * L], logvar[N * L];
    size_t hidden[] = {12};
    vae_model *m = NULL;
    vae_context *ctx = NULL;
    vae_elbo *e = NULL;
    vae_optimizer *opt = NULL;
    vae_trainer *t = NULL;
    vae_epoch_stats st;
    double first = 0, loss = 0;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    if (vae_version_number() != VAE_VERSION_NUMBER) {
        fprintf(stderr, "header %d, library %u\n", VAE_VERSION_NUMBER, vae_version_number());
        return 1;
    }
    /* Two alternating binary patterns: easy to learn in a few steps. */
    for (int i = 0; i < N; i++)
        for (int j = 0; j < D; j++)
            x[i * D + j] = (float)(((i & 1) ^ (j < D / 2)) != 0);
    int rc = vae_model_create_mlp(&m, D, hidden, 1, L, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI, 7);
    if (!rc)
        rc = vae_context_create(&ctx);
    if (!rc)
        rc = vae_elbo_create(&e);
    if (!rc)
        rc = vae_optimizer_create(&opt, VAE_OPTIMIZER_ADAM);
    if (!rc)
        rc = vae_optimizer_set_param(opt, VAE_OPT_LR, 1e-2);
    if (!rc)
        rc = vae_trainer_create(&t, m, e, opt, ctx, 7);
    for (int s = 0; s < STEPS && !rc; s++) {
        rc = vae_trainer_step(t, x, N, &st);
        if (!rc && s == 0)
            first = st.loss;
        loss = st.loss;
    }
    if (!rc && vae_trainer_steps(t) != STEPS) {
        fprintf(stderr, "the trainer counts %lu steps, not %d\n",
                (unsigned long)vae_trainer_steps(t), STEPS);
        rc = VAE_ERR_STATE;
    }
    if (!rc)
        rc = vae_encode(ctx, m, x, N, mu, logvar);
    vae_trainer_free(t);
    vae_optimizer_free(opt);
    vae_elbo_free(e);
    vae_context_free(ctx);
    vae_model_free(m);
    if (rc) {
        fprintf(stderr, "%s: %s\n", vae_strerror(rc), vae_last_error());
        return 1;
    }
    /* The codes are finite, and the two patterns lie apart in latent space:
     * the mean codes of the even and of the odd samples differ. */
    double gap = 0;
    for (int k = 0; k < L; k++) {
        double even = 0, odd = 0;
        for (int i = 0; i < N; i++) {
            /* finite: v - v is 0 (NaN for NaN and infinities); no libm needed */
            if (mu[i * L + k] - mu[i * L + k] != 0 || logvar[i * L + k] - logvar[i * L + k] != 0) {
                fprintf(stderr, "vae_encode gave a non-finite code for sample %d\n", i);
                return 1;
            }
            *(i & 1 ? &odd : &even) += mu[i * L + k] / (N / 2);
        }
        gap += (even - odd) * (even - odd);
    }
    printf("libvae %s: loss %.3f -> %.3f after %d steps; squared code gap %.3f\n",
           vae_version_string(), first, loss, STEPS, gap);
    /* The bound falls from ~11 nats towards the ~2 the patterns need. */
    return loss < 0.6 * first && gap > 0 ? 0 : 1;
}
