/*
 * mpirun -np N mpi_api [--large]
 *
 * The functions of libvae_mpi one by one, on any number of ranks:
 *  - arguments: NULL handles and pointers, chunk sizes out of range;
 *  - vae_mpi_exchange: parts of uneven sizes (some empty) from every rank
 *    arrive intact, in one MPI call and in windows of 1, 7, 1000 and 4096
 *    bytes (the chunking of buffers above INT_MAX bytes, in small);
 *  - vae_mpi_save, vae_mpi_restore, vae_mpi_model_load: the same status and
 *    the same message on every rank, naming the rank that failed: a save into
 *    a missing folder, a missing file, a folder, a model file that is not a
 *    checkpoint, a file above VAE_LIMIT_FILE_BYTES, a trainer of another
 *    architecture on the last rank only, a NULL trainer on the last rank; and
 *    a restore in windows of 100 bytes;
 *  - vae_mpi_check_identical: a NULL model on one rank.
 *
 * --large (2 ranks or more, about 2.5 GB of memory per rank): one exchange
 * of 2^31 + 1000 bytes from rank 0 and 300 MB from rank 1 with the default
 * chunk size, so parts and offsets above INT_MAX; every byte checked.
 */
#define _POSIX_C_SOURCE 200809L

#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpi_test.h"

static int rank, size;

/* Byte i of rank r's part. */
static unsigned char pattern(int r, size_t i)
{
    return (unsigned char)((i * 131u + (size_t)r * 71u + (i >> 8)) & 0xff);
}

static void check_exchange(vae_mpi *h, size_t chunk)
{
    size_t *bytes = calloc((size_t)size, sizeof *bytes), total = 0, mine = 0;
    for (int r = 0; r < size; r++) {
        bytes[r] = r % 3 == 1 ? 0 : 1000 + (size_t)r * 777 + (size_t)(r % 2) * 3;
        if (r == rank)
            mine = total;
        total += bytes[r];
    }
    unsigned char *buf = malloc(total);
    memset(buf, 0xEE, total);
    for (size_t i = 0; i < bytes[rank]; i++)
        buf[mine + i] = pattern(rank, i);
    if (chunk)
        MT_OK(vae_mpi_set_chunk_bytes(h, chunk));
    MT_OK(vae_mpi_exchange(h, buf, bytes));
    for (int r = 0, off = 0; r < size; off += (int)bytes[r], r++) {
        for (size_t i = 0; i < bytes[r]; i++) {
            if (buf[(size_t)off + i] != pattern(r, i)) {
                mt_fail(__FILE__, __LINE__, "chunk %zu: byte %zu of rank %d's part is %d, not %d",
                        chunk, i, r, buf[(size_t)off + i], pattern(r, i));
                break;
            }
        }
    }
    MT_OK(vae_mpi_set_chunk_bytes(h, (size_t)1 << 30));
    free(buf);
    free(bytes);
}

static void test_exchange(vae_mpi *h)
{
    const size_t chunks[] = {0, 1, 7, 1000, 4096};
    for (size_t k = 0; k < sizeof chunks / sizeof *chunks; k++)
        check_exchange(h, chunks[k]);
    /* Nothing to move: no call, no buffer needed. */
    size_t *zero = calloc((size_t)size, sizeof *zero);
    MT_OK(vae_mpi_exchange(h, NULL, zero));
    zero[0] = 1;
    MT_EXPECT(vae_mpi_exchange(h, NULL, zero), VAE_ERR_INVALID, "vae_mpi_exchange",
              "buf is NULL");
    MT_EXPECT(vae_mpi_exchange(NULL, zero, zero), VAE_ERR_INVALID, "vae_mpi_exchange",
              "payload");
    MT_EXPECT(vae_mpi_exchange(h, zero, NULL), VAE_ERR_INVALID, "vae_mpi_exchange", "bytes");
    free(zero);
}

static void test_large(vae_mpi *h)
{
    if (size < 2) {
        mt_fail(__FILE__, __LINE__, "--large needs 2 ranks or more");
        return;
    }
    size_t *bytes = calloc((size_t)size, sizeof *bytes), total = 0, mine = 0;
    bytes[0] = ((size_t)1 << 31) + 1000;
    bytes[1] = (size_t)300 << 20;
    for (int r = 0; r < size; r++) {
        if (r == rank)
            mine = total;
        total += bytes[r];
    }
    unsigned char *buf = malloc(total);
    if (!buf) {
        mt_fail(__FILE__, __LINE__, "no memory for %zu bytes", total);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    memset(buf, 0, total);
    for (size_t i = 0; i < bytes[rank]; i++)
        buf[mine + i] = pattern(rank, i);
    MT_OK(vae_mpi_exchange(h, buf, bytes));
    size_t off = 0;
    for (int r = 0; r < size; off += bytes[r], r++) {
        for (size_t i = 0; i < bytes[r]; i++) {
            if (buf[off + i] != pattern(r, i)) {
                mt_fail(__FILE__, __LINE__, "byte %zu of rank %d's part is %d, not %d", i, r,
                        buf[off + i], pattern(r, i));
                break;
            }
        }
    }
    free(buf);
    free(bytes);
}

/* A trainer over a small MLP, attached, after a few steps. */
static mt_run trained_run(vae_mpi *h, int conv)
{
    mt_run s = mt_make_run(mt_model(conv), 1);
    MT_OK(vae_mpi_attach(h, s.t));
    for (size_t k = 0; k < 5; k++) {
        vae_epoch_stats st = {.size = sizeof st};
        MT_OK(vae_trainer_step(s.t, mt_x + k * 50 * MT_DIM, 70, &st));
    }
    return s;
}

static void same_message(const char *what)
{
    MT_CHECK(mt_same_everywhere(MPI_COMM_WORLD, vae_mpi_last_error()),
             "%s: the ranks report different messages (this one: %s)", what,
             vae_mpi_last_error());
}

static void test_files(vae_mpi *h)
{
    char dir[256] = "";
    if (rank == 0) {
        snprintf(dir, sizeof dir, "%s/vae_mpi_api_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR")
                                                                             : "/tmp");
        MT_CHECK(mkdtemp(dir) != NULL, "mkdtemp failed");
    }
    MPI_Bcast(dir, (int)sizeof dir, MPI_CHAR, 0, MPI_COMM_WORLD);
    char ckpt[320], model[320], missing[320], nodir[320];
    snprintf(ckpt, sizeof ckpt, "%s/ckpt.vae", dir);
    snprintf(model, sizeof model, "%s/model.vae", dir);
    snprintf(missing, sizeof missing, "%s/missing.vae", dir);
    snprintf(nodir, sizeof nodir, "%s/no/such/folder/ckpt.vae", dir);
    char last[32];
    snprintf(last, sizeof last, "on rank %d", size - 1);

    mt_run s = trained_run(h, 0);
    size_t n = 0;
    float *p = vae_model_params(s.m, &n), *saved = malloc(n * sizeof *saved);
    memcpy(saved, p, n * sizeof *p);

    /* Saving: rank 0 writes, everyone hears how it went. */
    MT_OK(vae_mpi_save(h, s.t, ckpt));
    MT_EXPECT(vae_mpi_save(h, s.t, nodir), VAE_ERR_IO, "vae_mpi_save", "on rank 0",
              "vae_trainer_save");
    same_message("a save into a missing folder");
    MT_EXPECT(vae_mpi_save(h, rank == 0 ? NULL : s.t, ckpt), VAE_ERR_INVALID, "vae_mpi_save",
              "trainer is NULL on rank 0");
    same_message("a NULL trainer on rank 0");
    /* Only rank 0's trainer and path are read. */
    MT_OK(vae_mpi_save(h, rank == 0 ? s.t : NULL, rank == 0 ? ckpt : NULL));
    if (rank == 0)
        MT_OK(vae_model_save(s.m, model));

    /* Restoring: the checkpoint brings back the saved parameters. */
    vae_epoch_stats st = {.size = sizeof st};
    MT_OK(vae_trainer_step(s.t, mt_x, 64, &st));
    MT_CHECK(memcmp(p, saved, n * sizeof *p) != 0, "a step changed nothing");
    MT_OK(vae_mpi_restore(h, s.t, ckpt));
    MT_CHECK(!memcmp(p, saved, n * sizeof *p), "the restored parameters differ");
    MT_OK(vae_trainer_step(s.t, mt_x, 64, &st));
    MT_OK(vae_mpi_set_chunk_bytes(h, 100));
    MT_OK(vae_mpi_restore(h, s.t, ckpt));
    MT_CHECK(!memcmp(p, saved, n * sizeof *p), "the parameters restored in windows differ");
    MT_OK(vae_mpi_set_chunk_bytes(h, (size_t)1 << 30));
    MT_OK(vae_mpi_check_identical(h, s.m));

    MT_EXPECT(vae_mpi_restore(h, s.t, missing), VAE_ERR_IO, "vae_mpi_restore", "on rank 0",
              "cannot open", "missing.vae");
    same_message("a missing file");
    MT_EXPECT(vae_mpi_restore(h, s.t, dir), VAE_ERR_IO, "vae_mpi_restore", "on rank 0",
              "not a regular file");
    MT_EXPECT(vae_mpi_restore(h, s.t, model), VAE_ERR_FORMAT, "vae_mpi_restore", "on rank 0",
              "vae_trainer_restore_mem");
    same_message("a model file");
    MT_EXPECT(vae_mpi_restore(h, s.t, rank == 0 ? NULL : ckpt), VAE_ERR_INVALID,
              "vae_mpi_restore", "path is NULL");
    MT_EXPECT(vae_mpi_restore(h, rank == size - 1 ? NULL : s.t, ckpt), VAE_ERR_INVALID,
              "vae_mpi_restore", last, "trainer is NULL");
    same_message("a NULL trainer on the last rank");
    if (rank == 0)
        MT_OK(vae_set_limit(VAE_LIMIT_FILE_BYTES, 1000));
    MT_EXPECT(vae_mpi_restore(h, s.t, ckpt), VAE_ERR_NOMEM, "vae_mpi_restore", "on rank 0",
              "VAE_LIMIT_FILE_BYTES");
    if (rank == 0)
        MT_OK(vae_set_limit(VAE_LIMIT_FILE_BYTES, (uint64_t)1 << 31));
    MT_CHECK(!memcmp(p, saved, n * sizeof *p), "a failed restore changed the parameters");

    /* A trainer of another architecture on the last rank only: every rank
     * fails alike, and the last rank's trainer is as it was. */
    mt_run other = trained_run(h, 1);
    vae_trainer *t = rank == size - 1 ? other.t : s.t;
    MT_EXPECT(vae_mpi_restore(h, t, ckpt), VAE_ERR_SHAPE, "vae_mpi_restore", last,
              "vae_trainer_restore_mem");
    same_message("another architecture on the last rank");

    /* Loading the model: every rank gets it, or every rank gets NULL. */
    vae_model *m = (vae_model *)&m;
    MT_OK(vae_mpi_model_load(h, &m, ckpt));
    size_t n2 = 0;
    const float *p2 = vae_model_params(m, &n2);
    MT_CHECK(n2 == n && p2 && !memcmp(p2, saved, n * sizeof *p2),
             "the loaded model's parameters differ");
    vae_model_free(m);
    m = (vae_model *)&m;
    MT_EXPECT(vae_mpi_model_load(h, &m, missing), VAE_ERR_IO, "vae_mpi_model_load", "on rank 0",
              "cannot open");
    MT_CHECK(m == NULL, "a failed load left *out set");
    MT_EXPECT(vae_mpi_model_load(h, rank == size - 1 ? NULL : &m, ckpt), VAE_ERR_INVALID,
              "vae_mpi_model_load", last, "out is NULL");
    MT_CHECK(m == NULL, "a failed load left *out set");
    if (rank == 0)
        MT_OK(vae_set_limit(VAE_LIMIT_MODEL_PARAMS, 100));
    MT_EXPECT(vae_mpi_model_load(h, &m, model), VAE_ERR_NOMEM,
              "vae_mpi_model_load", "on rank 0", "VAE_LIMIT_MODEL_PARAMS");
    if (rank == 0)
        MT_OK(vae_set_limit(VAE_LIMIT_MODEL_PARAMS, (uint64_t)1 << 28));
    MT_CHECK(m == NULL, "a failed load left *out set");

    /* Comparing models. */
    MT_OK(vae_mpi_check_identical(h, s.m));
    MT_EXPECT(vae_mpi_check_identical(h, rank == size - 1 ? NULL : s.m), VAE_ERR_INVALID,
              "vae_mpi_check_identical", last, "NULL");
    same_message("a NULL model on the last rank");
    if (size > 1) {
        char needle[64];
        snprintf(needle, sizeof needle, "%d of %d ranks", size - 1, size);
        MT_EXPECT(vae_mpi_check_identical(h, rank == 0 ? other.m : s.m), VAE_ERR_STATE,
                  "vae_mpi_check_identical", needle, "model file has");
        same_message("another architecture on rank 0");
    }

    mt_free_run(&other);
    mt_free_run(&s);
    free(saved);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        remove(ckpt);
        remove(model);
        rmdir(dir);
    }
}

static void test_arguments(vae_mpi *h)
{
    vae_mpi *x = (vae_mpi *)&x;
    MT_EXPECT(vae_mpi_create(NULL, MPI_COMM_WORLD), VAE_ERR_INVALID, "vae_mpi_create",
              "out is NULL");
    MT_EXPECT(vae_mpi_create(&x, MPI_COMM_NULL), VAE_ERR_INVALID, "vae_mpi_create",
              "MPI_COMM_NULL");
    MT_CHECK(x == NULL, "a failed create left *out set");
    MT_CHECK(vae_mpi_rank(NULL) == -1 && vae_mpi_size(NULL) == 0, "getters of NULL");
    MT_CHECK(vae_mpi_rank(h) == rank && vae_mpi_size(h) == size, "rank %d, size %d",
             vae_mpi_rank(h), vae_mpi_size(h));
    MT_EXPECT(vae_mpi_set_chunk_bytes(NULL, 10), VAE_ERR_INVALID, "vae_mpi_set_chunk_bytes",
              "handle is NULL");
    MT_EXPECT(vae_mpi_set_chunk_bytes(h, 0), VAE_ERR_INVALID, "vae_mpi_set_chunk_bytes",
              "out of range");
    MT_EXPECT(vae_mpi_set_chunk_bytes(h, (size_t)INT_MAX + 1), VAE_ERR_INVALID,
              "vae_mpi_set_chunk_bytes", "out of range");
    MT_OK(vae_mpi_set_chunk_bytes(h, (size_t)INT_MAX));
    MT_OK(vae_mpi_set_chunk_bytes(h, (size_t)1 << 30));
    MT_EXPECT(vae_mpi_attach(NULL, NULL), VAE_ERR_INVALID, "vae_mpi_attach", "handle is NULL");
    MT_EXPECT(vae_mpi_attach(h, NULL), VAE_ERR_INVALID, "vae_mpi_attach", "trainer is NULL");
    MT_EXPECT(vae_mpi_save(NULL, NULL, NULL), VAE_ERR_INVALID, "vae_mpi_save", "handle");
    MT_EXPECT(vae_mpi_restore(NULL, NULL, NULL), VAE_ERR_INVALID, "vae_mpi_restore", "handle");
    MT_EXPECT(vae_mpi_model_load(NULL, NULL, NULL), VAE_ERR_INVALID, "vae_mpi_model_load",
              "handle");
    MT_EXPECT(vae_mpi_check_identical(NULL, NULL), VAE_ERR_INVALID, "vae_mpi_check_identical",
              "handle");
    vae_mpi_free(NULL);
    /* A second handle on the same communicator works alongside the first. */
    vae_mpi *h2 = NULL;
    MT_OK(vae_mpi_create(&h2, MPI_COMM_WORLD));
    MT_CHECK(vae_mpi_rank(h2) == rank && vae_mpi_size(h2) == size, "second handle");
    vae_mpi_free(h2);
    /* A communicator of the even ranks only. */
    MPI_Comm half;
    MPI_Comm_split(MPI_COMM_WORLD, rank % 2, rank, &half);
    MT_OK(vae_mpi_create(&h2, half));
    MT_CHECK(vae_mpi_rank(h2) == rank / 2 && vae_mpi_size(h2) == (size + 1 - rank % 2) / 2,
             "a split communicator: rank %d of %d", vae_mpi_rank(h2), vae_mpi_size(h2));
    vae_mpi_free(h2);
    MPI_Comm_free(&half);
}

int main(int argc, char **argv)
{
    /* Before MPI_Init: refused. */
    vae_mpi *h = NULL;
    int early = vae_mpi_create(&h, MPI_COMM_WORLD);
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    mt_rank = rank;
    MT_CHECK(early == VAE_ERR_STATE && strstr(vae_mpi_last_error(), "not initialized"),
             "vae_mpi_create before MPI_Init returned %d: %s", early, vae_mpi_last_error());
    mt_make_data();
    MT_OK(vae_blas_set_threads(1));
    MT_OK(vae_mpi_create(&h, MPI_COMM_WORLD));
    if (argc > 1 && !strcmp(argv[1], "--large")) {
        test_large(h);
    } else {
        test_arguments(h);
        test_exchange(h);
        test_files(h);
    }
    vae_mpi_free(h);
    int rc = mt_finish("mpi_api");
    MPI_Finalize();
    return rc;
}
