/* A program outside the libvae tree, built against an installed libvae_mpi
 * (once through pkg-config, once through find_package(vae COMPONENTS mpi))
 * and run under mpirun: every rank trains the same small VAE on its share of
 * each global batch, and the ranks end with identical models whose loss
 * went down. */
#include <stdio.h>
#include <string.h>

#include <vae/vae_mpi.h>

int main(int argc, char **argv)
{
    enum { N = 200, D = 16, L = 2, STEPS = 60 };
    static float x[N * D];
    size_t hidden[] = {12};
    vae_mpi *h = NULL;
    vae_model *m = NULL;
    vae_context *ctx = NULL;
    vae_elbo *e = NULL;
    vae_optimizer *opt = NULL;
    vae_trainer *t = NULL;
    vae_epoch_stats st;
    double first = 0, loss = 0;
    int rank = 0, size = 1, rc;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    /* Two alternating binary patterns; 200 samples: 4 blocks to share out. */
    for (int i = 0; i < N; i++)
        for (int j = 0; j < D; j++)
            x[i * D + j] = (float)(((i & 1) ^ (j < D / 2)) != 0);
    rc = vae_mpi_create(&h, MPI_COMM_WORLD);
    if (!rc)
        rc = vae_model_create_mlp(&m, D, hidden, 1, L, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI, 7);
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
    if (!rc)
        rc = vae_mpi_attach(h, t);
    for (int s = 0; s < STEPS && !rc; s++) {
        rc = vae_trainer_step(t, x, N, &st);
        if (!rc && s == 0)
            first = st.loss;
        loss = st.loss;
    }
    if (!rc)
        rc = vae_mpi_check_identical(h, m);
    if (rc) {
        fprintf(stderr, "rank %d: %s: %s | %s\n", rank, vae_strerror(rc), vae_last_error(),
                vae_mpi_last_error());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (rank == 0)
        printf("libvae %s over %d rank%s: loss %.3f -> %.3f after %d steps\n",
               vae_version_string(), size, size > 1 ? "s" : "", first, loss, STEPS);
    vae_trainer_free(t);
    vae_optimizer_free(opt);
    vae_elbo_free(e);
    vae_context_free(ctx);
    vae_model_free(m);
    vae_mpi_free(h);
    MPI_Finalize();
    return loss < 0.6 * first ? 0 : 1;
}
