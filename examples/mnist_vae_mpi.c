/*
 * mnist_vae_mpi: trains a variational autoencoder on MNIST with N MPI ranks
 * (libvae_mpi), for instance `mpirun -np 4 mnist_vae_mpi --epochs 10`.
 * `mnist_vae_mpi --help` lists every option.
 *
 * Every rank loads the whole dataset, builds the same model and trainer and
 * makes the same calls; vae_mpi_attach makes each rank compute only its
 * blocks of 64 images of every global batch and exchange gradients with the
 * others, so that all ranks take the same steps and the results are those
 * of mnist_vae with the same settings, digit for digit, whatever the
 * number of ranks. Rank 0 prints, evaluates the test set and writes the
 * files; checkpoints (vae_mpi_save) resume with any number of ranks
 * (vae_mpi_model_load, vae_mpi_restore).
 *
 * A failed call on one rank is printed by that rank, which then ends the
 * whole run with MPI_Abort: the other ranks would otherwise wait for it in
 * the next exchange forever.
 */
#define _POSIX_C_SOURCE 200809L

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <vae/vae_mpi.h>

#include "mnist_common.h"

enum { EXIT_FAIL = 1, EXIT_USAGE = 2 };

/* Where runs go unless --out DIR is given. */
#define RUNS_DIR "runs"
/* The evaluation noise of mnist_vae for the same --seed, so that the test
 * losses printed here are the ones it prints. */
#define EVAL_SEED(seed) ((seed) ^ 0x9E3779B97F4A7C15u)
#define PROGRAM "mnist_vae_mpi"

/* Options given on the command line. */
enum { G_EPOCHS = 1, G_BATCH = 2, G_LR = 4, G_SEED = 8, G_CONV = 16, G_LIMIT = 32 };

typedef struct config {
    size_t epochs, batch, threads, train_limit;
    double lr;
    uint64_t seed;
    int conv, every_epoch;
    const char *data, *out, *resume;
    unsigned given;
} config;

static int g_rank, g_size;

static void usage(FILE *f)
{
    fprintf(f,
"Usage: mpirun -np N mnist_vae_mpi [OPTIONS]\n"
"       mpirun -np N mnist_vae_mpi --resume CHECKPOINT [--epochs TOTAL] [OPTIONS]\n"
"\n"
"Trains the VAE of mnist_vae (an MLP 784-400-20 with ReLU, or --conv, a\n"
"Bernoulli likelihood, Adam) on the 60000 MNIST training images with N MPI\n"
"ranks. Every rank loads the whole dataset (it is replicated, not split) and\n"
"holds the whole model; each global batch of --batch images is cut into\n"
"blocks of 64 and each rank computes only its share of the blocks, then the\n"
"ranks exchange the blocks' gradients and all take the same step. The\n"
"results are those of one process, and of mnist_vae with the same settings,\n"
"digit for digit, with any N. Rank 0 prints the progress and, after every\n"
"epoch, the training and test loss (-ELBO, nats per image; the test set is\n"
"evaluated by rank 0 alone) and writes the files.\n"
"\n"
"Each run writes into a new folder runs/YYYYMMDD-HHMMSS/, or into --out DIR:\n"
"checkpoint.vae (the whole training state, at the end, and after every epoch\n"
"with --checkpoint-every-epoch) and model.vae at the end, once every rank's\n"
"model is checked to be the same.\n"
"\n"
"Options:\n"
"  --epochs N        passes over the training set (default 10); with --resume\n"
"                    the total to reach, counting the epochs done (default:\n"
"                    the run's own)\n"
"  --batch N         global minibatch size (default 128), shared by the ranks\n"
"                    in blocks of 64: at least 64 x N gives every rank a block\n"
"  --conv            the convolutional VAE of mnist_vae --conv\n"
"  --lr X            Adam learning rate (default 1e-3)\n"
"  --seed S          seed of the weights, shuffles and noise (default 1)\n"
"  --train-limit N   train on the first N training images only (0 = all)\n"
"  --threads T       workers per rank, each with single-threaded GEMMs\n"
"                    (default 1; ranks times workers should not exceed the\n"
"                    cores; 0 leaves one worker with the BLAS's own threads).\n"
"                    Open MPI binds each rank to one core when it starts two\n"
"                    ranks or fewer: for T > 1 give mpirun --bind-to none, or\n"
"                    --map-by slot:PE=T, or the workers share that core\n"
"  --data DIR        the four MNIST IDX files, plain or .gz (default ./data),\n"
"                    read by every rank\n"
"  --out DIR         write the run into DIR (created when missing); refused\n"
"                    when DIR holds a model.vae or checkpoint.vae, unless it\n"
"                    is the folder of the --resume checkpoint\n"
"  --resume FILE     continue the run of checkpoint FILE, with any number of\n"
"                    ranks, with its own settings (--batch, --lr, --seed,\n"
"                    --conv, --train-limit may not be given) and the same\n"
"                    training images; writes into FILE's folder unless --out\n"
"                    is given\n"
"  --checkpoint-every-epoch  also write checkpoint.vae after every epoch\n"
"  -h, --help        this text\n"
"\n"
"If a call fails on one rank only, that rank prints why and ends the whole\n"
"run (MPI_Abort): the other ranks would wait for it forever. Exit status: 0\n"
"on success, 1 when a call or a file fails, 2 on a bad command line or a\n"
"refused folder.\n");
}

/* ---- failing -------------------------------------------------------------------- */

/* A failed call on this rank: says so and ends every rank. */
static void die(int status, const char *what, const char *detail)
{
    fprintf(stderr, "rank %d of %d: error: %s: %s (%d): %s\n", g_rank, g_size, what,
            vae_strerror(status), status, detail);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, EXIT_FAIL);
    exit(EXIT_FAIL); /* not reached */
}

/* A libvae call (its message in vae_last_error) or a libvae_mpi one
 * (vae_mpi_last_error). A trainer call on an attached trainer may fail in
 * the exchange: then both messages tell. */
#define MUST(call)                                                                                \
    do {                                                                                          \
        int must_rc_ = (call);                                                                    \
        if (must_rc_ != VAE_OK)                                                                   \
            die(must_rc_, #call, vae_last_error());                                               \
    } while (0)
#define MUST_MPI(call)                                                                            \
    do {                                                                                          \
        int must_rc_ = (call);                                                                    \
        if (must_rc_ != VAE_OK)                                                                   \
            die(must_rc_, #call, vae_mpi_last_error());                                           \
    } while (0)
#define MUST_TRAIN(call)                                                                          \
    do {                                                                                          \
        int must_rc_ = (call);                                                                    \
        if (must_rc_ != VAE_OK) {                                                                 \
            char both_[1100];                                                                     \
            snprintf(both_, sizeof both_, "%s%s%s", vae_last_error(),                             \
                     must_rc_ == VAE_ERR_IO ? "; exchange: " : "",                                \
                     must_rc_ == VAE_ERR_IO ? vae_mpi_last_error() : "");                         \
            die(must_rc_, #call, both_);                                                          \
        }                                                                                         \
    } while (0)

/* A failure that every rank reports alike (vae_mpi_save, vae_mpi_restore,
 * vae_mpi_model_load and vae_mpi_check_identical agree on their outcome):
 * rank 0 says why, and every rank ends normally with status 1. */
static void agreed_failure(int status, const char *what)
{
    if (g_rank == 0) {
        fprintf(stderr, "error: %s: %s (%d): %s\n", what, vae_strerror(status), status,
                vae_mpi_last_error());
        fflush(stderr);
    }
    MPI_Finalize();
    exit(EXIT_FAIL);
}

#define MUST_AGREE(call)                                                                          \
    do {                                                                                          \
        int must_rc_ = (call);                                                                    \
        if (must_rc_ != VAE_OK)                                                                   \
            agreed_failure(must_rc_, #call);                                                      \
    } while (0)

/* Ends every rank with the same status, after rank 0 has said why (no
 * MPI_Abort: every rank gets here). */
static int finish(int status)
{
    MPI_Finalize();
    return status;
}

/* ---- the command line ------------------------------------------------------------------ */

static int parse_args(int argc, char **argv, config *c)
{
    *c = (config){.epochs = 10, .batch = 128, .threads = 1, .lr = 1e-3, .seed = 1,
                  .data = "./data"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int r;
#define FLAG(name) ((r = flag_value(argc, argv, &i, name, &v)) != 0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            return -1;
        } else if (!strcmp(a, "--conv")) {
            c->conv = 1;
            c->given |= G_CONV;
        } else if (!strcmp(a, "--checkpoint-every-epoch")) {
            c->every_epoch = 1;
        } else if (FLAG("--epochs")) {
            if (r < 0 || parse_size(a, v, &c->epochs))
                return EXIT_USAGE;
            c->given |= G_EPOCHS;
        } else if (FLAG("--batch")) {
            if (r < 0 || parse_size(a, v, &c->batch))
                return EXIT_USAGE;
            c->given |= G_BATCH;
        } else if (FLAG("--lr")) {
            if (r < 0 || parse_double(a, v, &c->lr))
                return EXIT_USAGE;
            c->given |= G_LR;
        } else if (FLAG("--seed")) {
            if (r < 0 || parse_u64(a, v, &c->seed))
                return EXIT_USAGE;
            c->given |= G_SEED;
        } else if (FLAG("--train-limit")) {
            if (r < 0 || parse_size(a, v, &c->train_limit))
                return EXIT_USAGE;
            c->given |= G_LIMIT;
        } else if (FLAG("--threads")) {
            if (r < 0 || parse_size(a, v, &c->threads))
                return EXIT_USAGE;
        } else if (FLAG("--data")) {
            if (r < 0)
                return EXIT_USAGE;
            c->data = v;
        } else if (FLAG("--out")) {
            if (r < 0)
                return EXIT_USAGE;
            c->out = v;
        } else if (FLAG("--resume")) {
            if (r < 0)
                return EXIT_USAGE;
            c->resume = v;
        } else {
            fprintf(stderr, "error: unknown argument '%s' (see --help)\n", a);
            return EXIT_USAGE;
        }
#undef FLAG
    }
    if (c->batch == 0 || !(c->lr > 0.0)) {
        fprintf(stderr, "error: --batch and --lr must be positive\n");
        return EXIT_USAGE;
    }
    if (c->threads > 64) {
        fprintf(stderr, "error: --threads %zu: at most 64 are possible\n", c->threads);
        return EXIT_USAGE;
    }
    if (c->resume && (c->given & (G_BATCH | G_LR | G_SEED | G_CONV | G_LIMIT))) {
        fprintf(stderr, "error: --resume continues a run with its own settings: --batch, --lr, "
                        "--seed, --conv and --train-limit cannot be given with it\n");
        return EXIT_USAGE;
    }
    return 0;
}

/* ---- the model --------------------------------------------------------------------------- */

/* The convolutional VAE of mnist_vae --conv, for 28x28 images: encoder
 * 1x28x28 -conv-> 32x14x14 -conv-> 64x7x7 -dense-> 256, decoder latent
 * -dense-> 256 -dense-> 64x7x7 -convT-> 32x14x14 -convT-> 1x28x28 logits;
 * kernel 4, stride 2, padding 1, ReLU but for the last layer. */
static void build_conv_model(vae_model **out, size_t latent, uint64_t seed)
{
    enum { K = 4, S = 2, P = 1, C1 = 32, C2 = 64, HID = 256 };
    vae_model *m = NULL;
    vae_layer *l = NULL; /* taken by each add, left NULL */
    MUST(vae_model_create(&m, 28 * 28, latent, VAE_LIKELIHOOD_BERNOULLI));
    MUST(vae_layer_conv2d_create(&l, 1, 28, 28, C1, K, K, S, P, VAE_ACT_RELU));
    MUST(vae_model_add_encoder_layer(m, &l));
    MUST(vae_layer_conv2d_create(&l, C1, 14, 14, C2, K, K, S, P, VAE_ACT_RELU));
    MUST(vae_model_add_encoder_layer(m, &l));
    MUST(vae_layer_dense_create(&l, C2 * 7 * 7, HID, VAE_ACT_RELU));
    MUST(vae_model_add_encoder_layer(m, &l));
    MUST(vae_layer_dense_create(&l, latent, HID, VAE_ACT_RELU));
    MUST(vae_model_add_decoder_layer(m, &l));
    MUST(vae_layer_dense_create(&l, HID, C2 * 7 * 7, VAE_ACT_RELU));
    MUST(vae_model_add_decoder_layer(m, &l));
    MUST(vae_layer_conv2d_transpose_create(&l, C2, 7, 7, C1, K, K, S, P, 0, VAE_ACT_RELU));
    MUST(vae_model_add_decoder_layer(m, &l));
    MUST(vae_layer_conv2d_transpose_create(&l, C1, 14, 14, 1, K, K, S, P, 0, VAE_ACT_IDENTITY));
    MUST(vae_model_add_decoder_layer(m, &l));
    MUST(vae_model_build(m, seed));
    *out = m;
}

static int model_is_conv(const vae_model *m)
{
    const vae_layer *l = vae_model_layer(m, 0);
    return l && vae_layer_kind(l) != VAE_LAYER_DENSE;
}

static void meta_set(vae_trainer *t, const char *key, const char *fmt, ...)
{
    char value[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(value, sizeof value, fmt, ap);
    va_end(ap);
    MUST(vae_trainer_set_meta(t, key, value));
}

static const char *meta_get(const vae_trainer *t, const char *key)
{
    const char *v = NULL;
    vae_trainer_get_meta(t, key, &v);
    return v;
}

/* ---- the run folder -------------------------------------------------------------------- */

static int same_dir(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* Rank 0 picks the run folder (a new runs/ folder, --out DIR, or the
 * resumed checkpoint's folder) and refuses one that holds another run's
 * files; every rank gets the folder, or the status to exit with. */
static int pick_run_dir(const config *c, char *dir, size_t cap)
{
    struct {
        int status;
        char dir[PATH_MAX];
    } d;
    memset(&d, 0, sizeof d);
    if (g_rank == 0) {
        char resume_dir[PATH_MAX] = "";
        if (c->resume)
            path_dirname(c->resume, resume_dir, sizeof resume_dir);
        if (c->out || c->resume) {
            snprintf(d.dir, sizeof d.dir, "%s", c->out ? c->out : resume_dir);
            if (make_dirs(d.dir) != 0) {
                d.status = EXIT_FAIL;
            } else if (!(c->resume && same_dir(d.dir, resume_dir))) {
                const char *model = join_path(d.dir, "model.vae");
                const char *ckpt = join_path(d.dir, "checkpoint.vae");
                if (file_exists(model) || file_exists(ckpt)) {
                    fprintf(stderr, "error: %s already holds %s of another run; give another "
                                    "--out DIR, or none (a new folder under " RUNS_DIR "/)\n",
                            d.dir, file_exists(model) ? model : ckpt);
                    d.status = EXIT_USAGE;
                }
            }
        } else if (make_run_dir(RUNS_DIR, d.dir, sizeof d.dir) != 0) {
            d.status = EXIT_FAIL;
        }
    }
    MPI_Bcast(&d, (int)sizeof d, MPI_BYTE, 0, MPI_COMM_WORLD);
    snprintf(dir, cap, "%s", d.dir);
    return d.status;
}

/* ---- training ------------------------------------------------------------------------------ */

/* The first `limit` training images (all for 0) and their fingerprint,
 * which a checkpoint keeps to recognise them. */
static void training_set(vae_dataset **train, size_t limit, char *id, size_t cap)
{
    if (dataset_take_first(train, limit) != VAE_OK)
        die(VAE_ERR_NOMEM, "dataset_take_first", "see above");
    if (dataset_fingerprint(*train, id, cap) != VAE_OK)
        die(VAE_ERR_NOMEM, "dataset_fingerprint", "see above");
}

/* The test-set loss with the evaluation noise of --seed (rank 0). */
static void evaluate(vae_context *ctx, const vae_model *m, const vae_elbo *e,
                     const vae_dataset *test, uint64_t seed, vae_epoch_stats *ev)
{
    vae_rng *rng = NULL;
    MUST(vae_rng_create(&rng, EVAL_SEED(seed)));
    ev->size = sizeof *ev;
    MUST(vae_evaluate_dataset(ctx, m, e, test, rng, NULL, ev));
    vae_rng_free(rng);
}

static void print_resume_command(const char *ckpt, size_t epochs)
{
    char cmd[2 * PATH_MAX] = "", np[32];
    snprintf(np, sizeof np, "%d", g_size);
    shell_append(cmd, sizeof cmd, "mpirun");
    shell_append(cmd, sizeof cmd, "-np");
    shell_append(cmd, sizeof cmd, np);
    shell_append(cmd, sizeof cmd, PROGRAM);
    shell_append(cmd, sizeof cmd, "--resume");
    shell_append(cmd, sizeof cmd, ckpt);
    printf("to train this run further (with any -np): %s --epochs TOTAL (TOTAL > %zu)\n", cmd,
           epochs);
}

/* Frees the handles of run (any may be NULL) and returns status. */
static int release(int status, vae_trainer *t, vae_optimizer *opt, vae_elbo *e, vae_model *m,
                  vae_dataset *train, vae_dataset *test, vae_context *ctx, vae_mpi *h)
{
    vae_trainer_free(t);
    vae_optimizer_free(opt);
    vae_elbo_free(e);
    vae_model_free(m);
    vae_dataset_free(train);
    vae_dataset_free(test);
    vae_context_free(ctx);
    vae_mpi_free(h);
    return status;
}

static int run(config *c)
{
    vae_mpi *h = NULL;
    vae_dataset *train = NULL, *test = NULL;
    vae_context *ctx = NULL;
    vae_model *m = NULL;
    vae_elbo *e = NULL;
    vae_optimizer *opt = NULL;
    vae_trainer *t = NULL;
    char data_id[128], dir[PATH_MAX], ckpt[PATH_MAX], model_path[PATH_MAX], took[32], each[32];

    MUST_MPI(vae_mpi_create(&h, MPI_COMM_WORLD));
    MUST(vae_context_create(&ctx));
    if (set_workers(ctx, c->threads) != VAE_OK)
        die(VAE_ERR_INVALID, "set_workers", "see above");

    /* The data, on every rank. A rank that cannot read it has said why; all
     * ranks then stop alike. */
    int rc = mnist_load(c->data, 1, &train);
    if (rc == VAE_OK)
        rc = mnist_load(c->data, 0, &test);
    int worst = 0;
    MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (worst != VAE_OK) {
        return release(EXIT_FAIL, t, opt, e, m, train, test, ctx, h);
    }

    /* The model and trainer: a new run, or the checkpoint's, read by rank 0
     * and restored on every rank. */
    if (c->resume) {
        MUST_AGREE(vae_mpi_model_load(h, &m, c->resume));
    } else if (c->conv) {
        build_conv_model(&m, 20, c->seed);
    } else {
        const size_t hidden[1] = {400};
        MUST(vae_model_create_mlp(&m, 784, hidden, 1, 20, VAE_ACT_RELU,
                                  VAE_LIKELIHOOD_BERNOULLI, c->seed));
    }
    if (vae_model_input_dim(m) != vae_dataset_dim(train))
        die(VAE_ERR_SHAPE, "the model and the data", "their sizes differ");
    MUST(vae_elbo_create(&e));
    MUST(vae_optimizer_create(&opt, VAE_OPTIMIZER_ADAM));
    MUST(vae_optimizer_set_param(opt, VAE_OPT_LR, c->lr));
    MUST(vae_trainer_create(&t, m, e, opt, ctx, c->seed));
    MUST_MPI(vae_mpi_attach(h, t));
    size_t done_epochs = 0;
    if (c->resume) {
        MUST_AGREE(vae_mpi_restore(h, t, c->resume));
        const char *program = meta_get(t, "program"), *batch = meta_get(t, "batch"),
                   *seed = meta_get(t, "seed"), *data = meta_get(t, "data"),
                   *epochs = meta_get(t, "epochs"), *lr = meta_get(t, "lr"),
                   *limit = meta_get(t, "train_limit");
        int status = 0;
        if (!program || strcmp(program, PROGRAM) || !batch || !seed || !data || !epochs || !lr ||
            !limit || parse_size("batch", batch, &c->batch) ||
            parse_u64("seed", seed, &c->seed) || parse_double("lr", lr, &c->lr) ||
            parse_size("train_limit", limit, &c->train_limit)) {
            if (g_rank == 0)
                fprintf(stderr, "error: %s is not a checkpoint of an " PROGRAM " run\n",
                        c->resume);
            status = EXIT_USAGE;
        } else if (training_set(&train, c->train_limit, data_id, sizeof data_id),
                   strcmp(data, data_id)) {
            if (g_rank == 0)
                fprintf(stderr, "error: the training images differ from the run's:\n"
                                "  here:    %s (from %s)\n  the run: %s\n",
                        data_id, c->data, data);
            status = EXIT_USAGE;
        } else if (!(c->given & G_EPOCHS) && parse_size("epochs", epochs, &c->epochs)) {
            status = EXIT_USAGE;
        }
        done_epochs = (size_t)vae_trainer_epochs(t);
        if (!status && c->epochs < done_epochs) {
            if (g_rank == 0)
                fprintf(stderr, "error: --epochs %zu: the run has done %zu epoch%s already\n",
                        c->epochs, done_epochs, plural(done_epochs));
            status = EXIT_USAGE;
        }
        c->conv = model_is_conv(m);
        if (status) {
            return release(status, t, opt, e, m, train, test, ctx, h);
        }
        meta_set(t, "epochs", "%zu", c->epochs);
    } else {
        training_set(&train, c->train_limit, data_id, sizeof data_id);
        meta_set(t, "program", PROGRAM);
        meta_set(t, "epochs", "%zu", c->epochs);
        meta_set(t, "batch", "%zu", c->batch);
        meta_set(t, "lr", "%.17g", c->lr);
        meta_set(t, "seed", "%llu", (unsigned long long)c->seed);
        meta_set(t, "conv", "%d", c->conv);
        meta_set(t, "train_limit", "%zu", c->train_limit);
        meta_set(t, "data", "%s", data_id);
    }
    MUST(vae_trainer_reserve(t, c->batch));

    int status = pick_run_dir(c, dir, sizeof dir);
    if (status) {
        return release(status, t, opt, e, m, train, test, ctx, h);
    }
    snprintf(ckpt, sizeof ckpt, "%s", join_path(dir, "checkpoint.vae"));
    snprintf(model_path, sizeof model_path, "%s", join_path(dir, "model.vae"));

    if (g_rank == 0) {
        size_t blocks = (c->batch + 63) / 64;
        printf("libvae %s over %d MPI rank%s: %s VAE, %zu parameters, Adam lr %g, global batch "
               "%zu (%zu block%s of up to 64 images shared by the ranks), %zu epoch%s, seed "
               "%llu, %zu worker%s per rank\n",
               vae_version_string(), g_size, plural((uint64_t)g_size),
               c->conv ? "convolutional" : "MLP 784-400-20", vae_model_param_count(m), c->lr,
               c->batch, blocks, plural(blocks), c->epochs, plural(c->epochs),
               (unsigned long long)c->seed, c->threads ? c->threads : 1,
               plural(c->threads ? c->threads : 1));
        if (blocks < (size_t)g_size)
            printf("note: %zu block%s per batch for %d ranks: some ranks have nothing to "
                   "compute; a --batch above %d keeps each one busy\n",
                   blocks, plural(blocks), g_size, 64 * (g_size - 1));
        printf("data: %zu training and %zu test images from %s, on every rank\n",
               vae_dataset_count(train), vae_dataset_count(test), c->data);
        if (c->resume)
            printf("resuming %s: %zu of %zu epoch%s done (step %llu)\n", c->resume, done_epochs,
                   c->epochs, plural(c->epochs), (unsigned long long)vae_trainer_steps(t));
        printf("run folder: %s/\n", dir);
        fflush(stdout);
    }

    progress bar;
    vae_train_options opts;
    MUST(vae_train_options_init(&opts, sizeof opts));
    opts.batch_size = c->batch;
    if (g_rank == 0) { /* returns 0 always, as it must on every rank */
        opts.progress = progress_update;
        opts.payload = &bar;
    }
    double seconds = 0.0;
    size_t trained = 0;
    for (size_t ep = done_epochs + 1; ep <= c->epochs; ep++) {
        char label[64];
        snprintf(label, sizeof label, "epoch %zu/%zu", ep, c->epochs);
        progress_begin(&bar, label);
        /* Plain lines, never a bar redrawn in place: mpirun gives the ranks a
         * terminal of their own even when its output goes to a file. */
        bar.tty = 0;
        vae_epoch_stats st = {.size = sizeof st};
        MUST_TRAIN(vae_trainer_train_epoch(t, train, &opts, &st));
        if (g_rank == 0) {
            progress_end(&bar);
            vae_epoch_stats ev = {.size = sizeof ev};
            evaluate(ctx, m, e, test, c->seed, &ev);
            printf("epoch %2zu/%zu  train loss %8.3f (recon %8.3f, KL %6.3f)  "
                   "test loss %8.3f (recon %8.3f, KL %6.3f) nats per image  "
                   "%.2f s/epoch (+%.2f s test)\n",
                   ep, c->epochs, st.loss, st.recon, st.kl, ev.loss, ev.recon, ev.kl, st.seconds,
                   ev.seconds);
            fflush(stdout);
        }
        seconds += st.seconds;
        trained++;
        if (c->every_epoch && ep < c->epochs)
            MUST_AGREE(vae_mpi_save(h, t, ckpt));
    }

    /* Every rank must hold the same model; then rank 0 writes it. */
    MUST_AGREE(vae_mpi_check_identical(h, m));
    MUST_AGREE(vae_mpi_save(h, t, ckpt));
    if (g_rank == 0) {
        MUST(vae_model_save(m, model_path));
        if (trained)
            printf("training: %s for %zu epoch%s, %s per epoch; the %d rank%s hold the same "
                   "model\n",
                   format_seconds(seconds, took, sizeof took), trained, plural(trained),
                   format_seconds(seconds / (double)trained, each, sizeof each), g_size,
                   plural((uint64_t)g_size));
        printf("wrote %s and %s\n", model_path, ckpt);
        print_resume_command(ckpt, c->epochs);
    }
    return release(0, t, opt, e, m, train, test, ctx, h);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    /* The same command line on every rank: rank 0 alone says what is wrong
     * with it (the parsers of mnist_common print to stderr). */
    int saved = -1;
    if (g_rank != 0) {
        fflush(stderr);
        saved = dup(STDERR_FILENO);
        FILE *null = fopen("/dev/null", "w");
        if (null) {
            dup2(fileno(null), STDERR_FILENO);
            fclose(null);
        }
    }
    config c;
    int rc = parse_args(argc, argv, &c);
    if (saved >= 0) {
        fflush(stderr);
        dup2(saved, STDERR_FILENO);
        close(saved);
    }
    if (rc < 0) {
        if (g_rank == 0)
            usage(stdout);
        return finish(0);
    }
    if (rc)
        return finish(rc);
    if (vae_version_number() / 100 != VAE_VERSION_NUMBER / 100 && g_rank == 0)
        fprintf(stderr, "warning: built against libvae %d.%d, running with %s\n",
                VAE_VERSION_MAJOR, VAE_VERSION_MINOR, vae_version_string());
    return finish(run(&c));
}
