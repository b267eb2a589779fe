/*
 * mpi_step_time: median time of one training step of the default
 * 784-400-20 VAE at global batch 128 on MNIST images, in one process
 * (--alone) or as one of the ranks of an MPI run (libvae_mpi), and the bytes
 * and time of the exchange per step, counted by wrapping MPI_Allgatherv
 * (MPI's profiling interface). docs/distributed.md gives the commands.
 *
 *   mpi_step_time --data DIR [--alone] [--workers N] [--steps N]
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <vae/vae_mpi.h>

static unsigned long long g_bytes, g_calls;
static double g_secs;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Counts what libvae_mpi's exchange moves, then does it. */
int MPI_Allgatherv(const void *sb, int sc, MPI_Datatype st, void *rb, const int rc[],
                   const int d[], MPI_Datatype rt, MPI_Comm comm)
{
    int size = 0, ts = 0;
    MPI_Comm_size(comm, &size);
    MPI_Type_size(rt, &ts);
    for (int r = 0; r < size; r++)
        g_bytes += (unsigned long long)rc[r] * (unsigned long long)ts;
    g_calls++;
    double t0 = now();
    int status = PMPI_Allgatherv(sb, sc, st, rb, rc, d, rt, comm);
    g_secs += now() - t0;
    return status;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define CHECK(call)                                                                         \
    do {                                                                                    \
        int rc_ = (call);                                                                   \
        if (rc_) {                                                                          \
            fprintf(stderr, "%s: %s (%s)\n", #call, vae_last_error(), vae_mpi_last_error()); \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                   \
        }                                                                                   \
    } while (0)

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int alone = 0, rank = 0, size = 1;
    size_t workers = 1, steps = 300, warm = 30;
    const char *data = "data";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--alone"))
            alone = 1;
        else if (!strcmp(argv[i], "--workers") && i + 1 < argc)
            workers = (size_t)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = (size_t)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--data") && i + 1 < argc)
            data = argv[++i];
        else {
            fprintf(stderr, "usage: %s --data DIR [--alone] [--workers N] [--steps N]\n",
                    argv[0]);
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
    }
    if (workers < 1 || steps < 10) {
        fprintf(stderr, "mpi_step_time: --workers >= 1 and --steps >= 10\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    char img[1024];
    snprintf(img, sizeof img, "%s/train-images-idx3-ubyte", data);
    vae_dataset *ds = NULL;
    CHECK(vae_dataset_load_idx(&ds, img, NULL));
    enum { B = 128, NB = 64, D = 784 };
    float *x = malloc((size_t)B * NB * D * sizeof *x);
    double *ms = malloc(steps * sizeof *ms);
    if (!x || !ms) {
        fprintf(stderr, "mpi_step_time: out of memory\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    CHECK(vae_dataset_range(ds, 0, B * NB, x));
    const size_t hidden[1] = {400};
    vae_model *m = NULL;
    vae_elbo *e = NULL;
    vae_optimizer *o = NULL;
    vae_context *ctx = NULL;
    vae_trainer *t = NULL;
    vae_mpi *h = NULL;
    CHECK(vae_blas_set_threads(1));
    CHECK(vae_model_create_mlp(&m, D, hidden, 1, 20, VAE_ACT_RELU, VAE_LIKELIHOOD_BERNOULLI, 1));
    CHECK(vae_elbo_create(&e));
    CHECK(vae_optimizer_create(&o, VAE_OPTIMIZER_ADAM));
    CHECK(vae_context_create(&ctx));
    CHECK(vae_context_set_threads(ctx, workers));
    CHECK(vae_trainer_create(&t, m, e, o, ctx, 1));
    CHECK(vae_trainer_reserve(t, B));
    if (!alone) {
        CHECK(vae_mpi_create(&h, MPI_COMM_WORLD));
        CHECK(vae_mpi_attach(h, t));
    }
    unsigned long long b0 = 0, c0 = 0;
    double s0 = 0.0;
    for (size_t k = 0; k < warm + steps; k++) {
        if (k == warm) {
            b0 = g_bytes;
            c0 = g_calls;
            s0 = g_secs;
        }
        double t0 = now();
        CHECK(vae_trainer_step(t, x + (k % NB) * B * D, B, NULL));
        if (k >= warm)
            ms[k - warm] = 1e3 * (now() - t0);
    }
    if (h)
        CHECK(vae_mpi_check_identical(h, m));
    qsort(ms, steps, sizeof *ms, cmp);
    if (rank == 0)
        printf("%s, %d rank%s, %zu worker%s: %.3f ms per step median (p10 %.3f, p90 %.3f) over "
               "%zu steps; %.0f bytes all-gathered per step in %.1f calls, %.3f ms per step "
               "inside MPI_Allgatherv\n",
               alone ? "alone" : "attached", size, size == 1 ? "" : "s", workers,
               workers == 1 ? "" : "s", ms[steps / 2], ms[steps / 10], ms[steps * 9 / 10], steps,
               (double)(g_bytes - b0) / (double)steps, (double)(g_calls - c0) / (double)steps,
               1e3 * (g_secs - s0) / (double)steps);
    vae_trainer_free(t);
    vae_context_free(ctx);
    vae_optimizer_free(o);
    vae_elbo_free(e);
    vae_model_free(m);
    vae_dataset_free(ds);
    vae_mpi_free(h);
    free(x);
    free(ms);
    MPI_Finalize();
    return 0;
}
