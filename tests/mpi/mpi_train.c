/*
 * mpirun -np N mpi_train [--conv] [--chunk BYTES] [--crash abort|exit]
 *
 * Data-parallel training over MPI equals one process bit for bit: every
 * rank trains 100 steps on global batches of uneven sizes (128, 100, 37, 1,
 * 200: fewer blocks than ranks, one sample) through vae_trainer_step, then
 * an epoch of vae_trainer_train_epoch (533 samples in batches of 128, the
 * last one of 21, binarized), with its trainer attached by vae_mpi_attach.
 * Rank 0 also runs the same schedule alone, with 1 and then 2 workers, and
 * broadcasts that run's losses and parameters; every rank checks that its
 * reported losses and its parameters are those, bit for bit, and
 * vae_mpi_check_identical agrees; then that it notices one rank whose
 * parameters were changed. --conv: a convolutional model instead of the
 * MLP. --chunk: every MPI call moves at most BYTES bytes (the windows of
 * vae_mpi_exchange and the broadcasts), so that the gradients cross in many
 * calls.
 *
 * The bytes the ranks exchange are counted through MPI's profiling
 * interface (this program's MPI_Allgatherv runs before PMPI_Allgatherv):
 * each step must move, through the trainer attached by vae_mpi_attach,
 * the loss terms of its samples and the gradient of each of its blocks,
 * (ranks + 2 n) * 8 + ceil(n / 64) * parameters * 4 bytes; nothing with
 * one rank.
 *
 * --crash abort|exit: rank 1 calls abort(), or exit(3), before its step 10,
 * while the other ranks wait for it in the exchange: the run must end
 * (Open MPI's mpirun kills the other ranks when one dies or exits without
 * MPI_Finalize) with a nonzero status; tests/mpi/expect_failure.sh checks it.
 */
#include <limits.h>
#include <math.h>

#include "mpi_test.h"

/* What the ranks all-gathered: calls and bytes. */
static unsigned long long g_calls, g_bytes;

int MPI_Allgatherv(const void *sendbuf, int sendcount, MPI_Datatype sendtype, void *recvbuf,
                   const int recvcounts[], const int displs[], MPI_Datatype recvtype,
                   MPI_Comm comm)
{
    int size = 0, type = 0;
    MPI_Comm_size(comm, &size);
    MPI_Type_size(recvtype, &type);
    for (int r = 0; r < size; r++)
        g_bytes += (unsigned long long)recvcounts[r] * (unsigned long long)type;
    g_calls++;
    return PMPI_Allgatherv(sendbuf, sendcount, sendtype, recvbuf, recvcounts, displs, recvtype,
                           comm);
}

/* The bytes one training pass on n samples exchanges among `world` ranks. */
static unsigned long long pass_bytes(size_t n, size_t world, size_t params)
{
    return world < 2 ? 0 : (world + 2 * n) * 8 + (n + 63) / 64 * params * 4;
}

static const size_t SIZES[] = {128, 100, 37, 1, 200};
enum { N_SIZES = sizeof SIZES / sizeof *SIZES, STEPS = 100, CRASH_STEP = 10 };

/* The schedule every run follows, distributed or not. crash: the rank
 * that crashes (-1: none), how. */
static void train(mt_run *s, mt_record *rec, int crash_rank, const char *how, size_t world)
{
    memset(rec, 0, sizeof *rec);
    const size_t params = vae_model_param_count(s->m);
    unsigned long long expected = g_bytes;
    for (size_t k = 0; k < STEPS; k++) {
        if ((int)k == CRASH_STEP && mt_rank == crash_rank) {
            fprintf(stderr, "rank %d: %s at step %zu, as asked\n", mt_rank, how, k);
            fflush(stderr);
            if (!strcmp(how, "abort"))
                abort();
            exit(3);
        }
        size_t n = SIZES[k % N_SIZES], first = (k * 37) % (MT_COUNT - n + 1);
        vae_epoch_stats st = {.size = sizeof st};
        MT_OK(vae_trainer_step(s->t, mt_x + first * MT_DIM, n, &st));
        mt_note(rec, &st);
        expected += pass_bytes(n, world, params);
    }
    vae_train_options o;
    MT_OK(vae_train_options_init(&o, sizeof o));
    o.batch_size = 128;
    o.binarize = 1;
    vae_epoch_stats st = {.size = sizeof st};
    MT_OK(vae_trainer_train_epoch(s->t, s->ds, &o, &st));
    mt_note(rec, &st);
    for (size_t done = 0; done < MT_COUNT; done += o.batch_size)
        expected += pass_bytes(MT_COUNT - done < o.batch_size ? MT_COUNT - done : o.batch_size,
                               world, params);
    MT_CHECK(g_bytes == expected, "%llu bytes exchanged, expected %llu", g_bytes, expected);
    mt_finish_record(rec, s);
}

static int usage(void)
{
    if (mt_rank == 0)
        fprintf(stderr, "usage: mpi_train [--conv] [--chunk BYTES] [--crash abort|exit]\n");
    MPI_Finalize();
    return 2;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &mt_rank);
    int conv = 0;
    size_t chunk = 0;
    const char *crash = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--conv"))
            conv = 1;
        else if (!strcmp(argv[i], "--chunk") && i + 1 < argc)
            chunk = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--crash") && i + 1 < argc &&
                 (!strcmp(argv[i + 1], "abort") || !strcmp(argv[i + 1], "exit")))
            crash = argv[++i];
        else
            return usage();
    }
    mt_make_data();
    MT_OK(vae_blas_set_threads(1));

    vae_mpi *h = NULL;
    MT_OK(vae_mpi_create(&h, MPI_COMM_WORLD));
    int size = vae_mpi_size(h);
    MT_CHECK(vae_mpi_rank(h) == mt_rank, "vae_mpi_rank is %d", vae_mpi_rank(h));
    if (chunk)
        MT_OK(vae_mpi_set_chunk_bytes(h, chunk));
    if (crash && size < 2) {
        mt_fail(__FILE__, __LINE__, "--crash needs at least 2 ranks");
        int rc = mt_finish("mpi_train");
        MPI_Finalize();
        return rc;
    }

    /* The reference on rank 0: one process, 1 and 2 workers. */
    mt_record *want = calloc(1, sizeof *want), *got = calloc(1, sizeof *got);
    if (!want || !got) {
        mt_fail(__FILE__, __LINE__, "out of memory");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (mt_rank == 0 && !crash) {
        for (size_t workers = 1; workers <= 2; workers++) {
            mt_run s = mt_make_run(mt_model(conv), workers);
            train(&s, workers == 1 ? want : got, -1, "", 1);
            mt_free_run(&s);
        }
        mt_compare(got, want, "one process, 2 workers against 1");
    }
    MPI_Bcast(want, (int)sizeof *want, MPI_BYTE, 0, MPI_COMM_WORLD);

    /* The distributed run. */
    mt_run s = mt_make_run(mt_model(conv), 1);
    MT_OK(vae_mpi_attach(h, s.t));
    train(&s, got, crash ? 1 : -1, crash ? crash : "", (size_t)size);
    if (mt_rank == 0)
        printf("mpi_train: %d rank%s, %llu bytes all-gathered in %llu call%s\n", size,
               size > 1 ? "s" : "", g_bytes, g_calls, g_calls == 1 ? "" : "s");
    char what[64];
    snprintf(what, sizeof what, "rank %d of %d against one process", mt_rank, size);
    mt_compare(got, want, what);
    MT_OK(vae_mpi_check_identical(h, s.m));

    /* One rank's parameters changed by one ulp: every rank hears of it. */
    if (size > 1) {
        size_t n = 0;
        float *p = vae_model_params(s.m, &n), keep = p[n / 2];
        if (mt_rank == size - 1)
            p[n / 2] = nextafterf(keep, 1e30f);
        char needle[64];
        snprintf(needle, sizeof needle, "1 of %d ranks", size);
        char first[32];
        snprintf(first, sizeof first, "rank %d", size - 1);
        MT_EXPECT(vae_mpi_check_identical(h, s.m), VAE_ERR_STATE, "vae_mpi_check_identical",
                  needle, first);
        MT_CHECK(mt_same_everywhere(MPI_COMM_WORLD, vae_mpi_last_error()),
                 "the ranks report different messages");
        p[n / 2] = keep;
        MT_OK(vae_mpi_check_identical(h, s.m));
    }
    mt_free_run(&s);
    vae_mpi_free(h);
    free(want);
    free(got);
    int rc = mt_finish("mpi_train");
    MPI_Finalize();
    return rc;
}
