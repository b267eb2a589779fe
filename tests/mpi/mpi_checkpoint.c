/*
 * mpirun -np N mpi_checkpoint save DIR
 * mpirun -np M mpi_checkpoint resume DIR
 *
 * Checkpoints across ranks, and across numbers of ranks. A run has two
 * phases: A is 30 steps on uneven global batches and an epoch stopped by its
 * progress callback after two batches (left open); B finishes that epoch,
 * takes 20 more steps and one more epoch.
 *
 * save: rank 0 first runs A and B alone, as the reference. Then every rank
 * runs A with its trainer attached, writes DIR/ckpt.vae with vae_mpi_save,
 * checks that vae_mpi_model_load reads the model it holds, and runs B: the
 * run that never stopped, whose losses and parameters must be the
 * reference's; rank 0 writes them to DIR/expected.bin.
 *
 * resume (a later mpirun, with any number of ranks): every rank loads the
 * model with vae_mpi_model_load, builds a trainer, attaches it, restores it
 * with vae_mpi_restore and runs B: the losses of B and the final parameters
 * must be those of DIR/expected.bin, bit for bit.
 */
#define _POSIX_C_SOURCE 200809L

#include <sys/stat.h>

#include "mpi_test.h"

static const size_t SIZES[] = {128, 100, 37, 1, 200};
enum { N_SIZES = sizeof SIZES / sizeof *SIZES, STEPS_A = 30, STEPS_B = 20, STOP_AFTER = 256 };

static void steps(mt_run *s, mt_record *rec, size_t from, size_t to)
{
    for (size_t k = from; k < to; k++) {
        size_t n = SIZES[k % N_SIZES], first = (k * 37) % (MT_COUNT - n + 1);
        vae_epoch_stats st = {.size = sizeof st};
        MT_OK(vae_trainer_step(s->t, mt_x + first * MT_DIM, n, &st));
        mt_note(rec, &st);
    }
}

/* Stops the epoch once STOP_AFTER samples are done: the same on every rank. */
static int stop_early(void *payload, size_t done, size_t total, double running_loss)
{
    (void)payload, (void)total, (void)running_loss;
    return done >= STOP_AFTER;
}

static void epoch(mt_run *s, mt_record *rec, int stop)
{
    vae_train_options o;
    MT_OK(vae_train_options_init(&o, sizeof o));
    o.batch_size = 128;
    o.binarize = 1;
    if (stop)
        o.progress = stop_early;
    vae_epoch_stats st = {.size = sizeof st};
    int rc = vae_trainer_train_epoch(s->t, s->ds, &o, &st);
    MT_CHECK(rc == (stop ? VAE_ERR_CANCELLED : VAE_OK), "vae_trainer_train_epoch returned %d: %s",
             rc, vae_last_error());
    mt_note(rec, &st);
}

static void phase_a(mt_run *s)
{
    mt_record scratch;
    memset(&scratch, 0, sizeof scratch);
    steps(s, &scratch, 0, STEPS_A);
    epoch(s, &scratch, 1);
}

static void phase_b(mt_run *s, mt_record *rec)
{
    memset(rec, 0, sizeof *rec);
    epoch(s, rec, 0);
    steps(s, rec, STEPS_A, STEPS_A + STEPS_B);
    epoch(s, rec, 0);
    mt_finish_record(rec, s);
}

static int write_record(const char *path, const mt_record *r)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    int ok = f && fwrite(r, sizeof *r, 1, f) == 1;
    ok = f && fclose(f) == 0 && ok;
    return ok && rename(tmp, path) == 0 ? 0 : -1;
}

static int read_record(const char *path, mt_record *r)
{
    FILE *f = fopen(path, "rb");
    int ok = f && fread(r, sizeof *r, 1, f) == 1;
    if (f)
        fclose(f);
    return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &mt_rank);
    if (argc != 3 || (strcmp(argv[1], "save") && strcmp(argv[1], "resume"))) {
        if (mt_rank == 0)
            fprintf(stderr, "usage: mpi_checkpoint save|resume DIR\n");
        MPI_Finalize();
        return 2;
    }
    const int save = !strcmp(argv[1], "save");
    char ckpt[4096], expected[4096];
    snprintf(ckpt, sizeof ckpt, "%s/ckpt.vae", argv[2]);
    snprintf(expected, sizeof expected, "%s/expected.bin", argv[2]);
    mt_make_data();
    MT_OK(vae_blas_set_threads(1));
    vae_mpi *h = NULL;
    MT_OK(vae_mpi_create(&h, MPI_COMM_WORLD));
    const int size = vae_mpi_size(h);
    mt_record *want = calloc(1, sizeof *want), *got = calloc(1, sizeof *got);
    if (!want || !got || !h) {
        mt_fail(__FILE__, __LINE__, "setup failed");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    char what[96];
    mt_run s;

    if (save) {
        if (mt_rank == 0) {
            mkdir(argv[2], 0777);
            remove(ckpt);
            remove(expected);
            s = mt_make_run(mt_model(0), 1); /* the reference: alone, never stopped */
            phase_a(&s);
            phase_b(&s, want);
            mt_free_run(&s);
        }
        MPI_Bcast(want, (int)sizeof *want, MPI_BYTE, 0, MPI_COMM_WORLD);
        s = mt_make_run(mt_model(0), 1);
        MT_OK(vae_mpi_attach(h, s.t));
        phase_a(&s);
        size_t done = 0;
        MT_OK(vae_trainer_epoch_position(s.t, &done, NULL));
        MT_CHECK(done == STOP_AFTER, "the open epoch has %zu samples done, not %d", done,
                 STOP_AFTER);
        MT_OK(vae_mpi_save(h, s.t, ckpt));
        /* The checkpoint's model is the one in memory, on every rank. */
        vae_model *m = NULL;
        MT_OK(vae_mpi_model_load(h, &m, ckpt));
        size_t n1 = 0, n2 = 0;
        const float *p1 = vae_model_params(s.m, &n1), *p2 = vae_model_params(m, &n2);
        MT_CHECK(m && n1 == n2 && !memcmp(p1, p2, n1 * sizeof *p1),
                 "the checkpoint's model differs from the trainer's");
        MT_OK(vae_mpi_check_identical(h, m));
        vae_model_free(m);
        phase_b(&s, got);
        snprintf(what, sizeof what, "rank %d of %d, saved and never stopped", mt_rank, size);
        mt_compare(got, want, what);
        MT_OK(vae_mpi_check_identical(h, s.m));
        mt_free_run(&s);
        if (mt_rank == 0)
            MT_CHECK(write_record(expected, got) == 0, "cannot write %s", expected);
    } else {
        if (mt_rank == 0)
            MT_CHECK(read_record(expected, want) == 0,
                     "cannot read %s; the save test writes it", expected);
        MPI_Bcast(want, (int)sizeof *want, MPI_BYTE, 0, MPI_COMM_WORLD);
        vae_model *m = NULL;
        MT_OK(vae_mpi_model_load(h, &m, ckpt));
        if (!m) {
            int rc = mt_finish("mpi_checkpoint resume");
            MPI_Finalize();
            return rc;
        }
        s = mt_make_run(m, 1);
        MT_OK(vae_mpi_attach(h, s.t));
        MT_OK(vae_mpi_restore(h, s.t, ckpt));
        size_t done = 0;
        MT_OK(vae_trainer_epoch_position(s.t, &done, NULL));
        MT_CHECK(done == STOP_AFTER && vae_trainer_steps(s.t) == STEPS_A + 2,
                 "restored at %zu samples of the open epoch and step %llu", done,
                 (unsigned long long)vae_trainer_steps(s.t));
        phase_b(&s, got);
        snprintf(what, sizeof what, "rank %d of %d, resumed", mt_rank, size);
        mt_compare(got, want, what);
        MT_OK(vae_mpi_check_identical(h, s.m));
        mt_free_run(&s);
    }
    vae_mpi_free(h);
    free(want);
    free(got);
    int rc = mt_finish(save ? "mpi_checkpoint save" : "mpi_checkpoint resume");
    MPI_Finalize();
    return rc;
}
