/*
 * mnist_vae: trains a variational autoencoder on MNIST with libvae, reports
 * the train and test loss per epoch, saves the model, a checkpoint to resume
 * from, and draws pictures. `mnist_vae --help` lists every option.
 *
 * Every training run writes into a folder of its own (a new runs/<time>/,
 * or --out DIR) and never replaces a model or checkpoint it did not write
 * without --force. Checkpoints (vae_trainer_save) hold the whole training
 * state and the run's settings as metadata (vae_trainer_set_meta); --resume
 * continues a run bit for bit, from an epoch boundary or from the middle of
 * an epoch (vae_trainer_train_epoch continues an open epoch).
 */
#define _POSIX_C_SOURCE 200809L

#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <vae/vae.h>

#include "mnist_common.h"
#include "mnist_pictures.h"

enum { MAX_HIDDEN = 16, EXIT_FAIL = 1, EXIT_USAGE = 2 };

/* Where training runs go unless --out DIR is given. */
#define RUNS_DIR "runs"
/* Seed of every evaluation's noise (the test loss of each epoch and --ll),
 * derived from --seed: each evaluation starts from the same draws, so the
 * numbers of an epoch do not depend on the evaluations before it, and a
 * resumed run prints what an uninterrupted one prints. */
#define EVAL_SEED(seed) ((seed) ^ 0x9E3779B97F4A7C15u)

/* Options given on the command line (config.given). */
enum {
    G_EPOCHS = 1u << 0, G_BATCH = 1u << 1, G_LATENT = 1u << 2, G_HIDDEN = 1u << 3,
    G_LR = 1u << 4, G_BETA = 1u << 5, G_SEED = 1u << 6, G_AE = 1u << 7, G_BINARIZE = 1u << 8,
    G_CONV = 1u << 9, G_TRAIN_LIMIT = 1u << 10, G_THREADS = 1u << 11, G_LL = 1u << 12,
    G_LL_LIMIT = 1u << 13, G_DATA = 1u << 14, G_OUT = 1u << 15, G_MODEL = 1u << 16,
    G_EVERY = 1u << 17, G_IWAE = 1u << 18, G_WARMUP = 1u << 19, G_FREE_BITS = 1u << 20,
    G_LIKELIHOOD = 1u << 21
};

typedef struct config {
    const char *mode; /* "train", "sample" or "reconstruct" */
    size_t epochs, batch, latent;
    size_t hidden[MAX_HIDDEN], n_hidden;
    double lr, beta;
    size_t likelihood; /* --likelihood: VAE_LIKELIHOOD_BERNOULLI or _CONTINUOUS_BERNOULLI */
    size_t iwae;      /* --iwae K: importance samples of the IWAE objective; 0: the ELBO */
    size_t warmup;    /* --warmup N: KL warm-up steps; 0: off */
    double free_bits; /* --free-bits X: nats per latent dimension; 0: off */
    uint64_t seed;
    size_t threads; /* 0: leave the BLAS alone */
    int ae, binarize, conv;
    const char *data, *out, *model, *resume;
    size_t train_limit, ll_k, ll_limit;
    size_t every;     /* --checkpoint-every; 0: only at the end and when stopped */
    int every_epochs; /* `every` counts epochs (suffix e), else optimizer steps */
    int force;
    unsigned given;   /* G_* of the options on the command line */
    int argc;
    char **argv;
    char data_buf[PATH_MAX]; /* --data as a resumed run stored it */
} config;

/* The signal (SIGINT, SIGTERM) that asked training to stop; 0 if none. The
 * handler does nothing else: the progress callback sees it after the step
 * under way and stops the epoch, and the program writes the checkpoint. */
static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    g_stop = sig;
}

static void catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

static void usage(FILE *f)
{
    fprintf(f,
"Usage: mnist_vae [train] [OPTIONS]\n"
"       mnist_vae --resume CHECKPOINT [--epochs TOTAL] [OPTIONS]\n"
"       mnist_vae sample [--model FILE] [--out DIR] [--seed S]\n"
"       mnist_vae reconstruct [--model FILE] [--data DIR] [--out DIR] [--ll K]\n"
"\n"
"train (the default) fits a VAE to the 60000 MNIST training images: by default\n"
"an MLP 784-400-20 with ReLU (--conv: a convolutional one), a Bernoulli\n"
"likelihood on the pixel intensities and Adam. Every epoch prints the mean\n"
"training loss (-ELBO, nats per image) with its reconstruction and KL parts,\n"
"the same over the 10000 test images, and the time taken. A progress bar\n"
"with the rate and the time left runs on a terminal; in a log, a line at\n"
"each tenth of a phase longer than 15 s.\n"
"\n"
"Each training run writes into a new folder runs/YYYYMMDD-HHMMSS/ (with -2,\n"
"-3, ... when that name is taken; never an existing folder), printed at the\n"
"start, or into --out DIR: model.vae, checkpoint.vae and the pictures below.\n"
"\n"
"sample loads a saved model and writes samples.png (and manifold.png for a\n"
"2-D latent space). reconstruct loads a saved model, prints its test loss and\n"
"writes reconstructions.png, interpolation.png (and manifold.png and\n"
"latent_scatter.png for a 2-D latent space). Both read --model (default: the\n"
"most recently written runs/*/model.vae) and write next to it unless --out\n"
"is given. The model file holds the architecture, MLP or convolutional, so\n"
"both modes work with either; a checkpoint works as a model file too.\n"
"\n"
"Model and training:\n"
"  --epochs N        passes over the training set (default 10); with --resume\n"
"                    the total the run is to reach, counting the epochs it\n"
"                    has done (default: the total it was started with; a\n"
"                    larger one extends a finished run)\n"
"  --batch N         minibatch size (default 128)\n"
"  --latent N        latent dimensions (default 20)\n"
"  --hidden LIST     MLP hidden layer sizes, input side first, e.g. 512,256\n"
"                    (default 400); the decoder mirrors them\n"
"  --conv            convolutional VAE instead of the MLP (ReLU, NCHW):\n"
"                      encoder 1x28x28 -conv-> 32x14x14 -conv-> 64x7x7\n"
"                              -dense-> 256 -> Gaussian head (mu, logvar)\n"
"                      decoder latent -dense-> 256 -dense-> 64x7x7\n"
"                              -convT-> 32x14x14 -convT-> 1x28x28 logits\n"
"                    every conv/convT has kernel 4, stride 2, padding 1;\n"
"                    --latent applies, --hidden is rejected. A step costs\n"
"                    about 10 times a 784-400-20 step\n"
"  --lr X            Adam learning rate (default 1e-3; betas 0.9/0.999)\n"
"  --beta X          weight of the KL term, beta-VAE (default 1)\n"
"  --ae              plain autoencoder: z = mu and no KL term\n"
"  --likelihood L    bernoulli (default) or cb: the continuous Bernoulli\n"
"                    (Loaiza-Ganem and Cunningham 2019), a normalised density\n"
"                    on [0, 1] for the grey levels; its losses are densities,\n"
"                    not comparable with the Bernoulli's, and the pictures\n"
"                    show its mean\n"
"  --iwae K          train the importance-weighted bound (IWAE, Burda et al.\n"
"                    2016) of K draws of z per image, 1 to 4096, instead of\n"
"                    the ELBO: a step costs about K times as much; the test\n"
"                    loss printed is then the same K-sample bound\n"
"  --warmup N        KL warm-up: the KL weight grows linearly from beta/N at\n"
"                    the first optimizer step to beta at step N (0 = off)\n"
"  --free-bits X     free bits: the KL term of each latent dimension counts\n"
"                    at least X nats (its batch mean), so the dimension gets\n"
"                    no KL gradient below that (0 = off; ELBO only)\n"
"  --binarize        dynamic binarization: each training batch is resampled\n"
"                    to 0/1 pixels (test losses use the intensities)\n"
"  --train-limit N   train on the first N training images only (0 = all)\n"
"  --seed S          seed of the weights, shuffling, noise and samples\n"
"                    (default 1; the same seed gives the same run)\n"
"  --model FILE      start from the architecture and parameters of FILE (a\n"
"                    model or a checkpoint) with a new optimizer and epoch\n"
"                    count: fine-tuning. FILE is only read; the result goes\n"
"                    to the run folder. To continue a run exactly, use\n"
"                    --resume\n"
"  --threads N       N workers share every batch in blocks of 64 images\n"
"                    (vae_context_set_threads), each running single-threaded\n"
"                    GEMMs: the BLAS is set to one thread. The results are the\n"
"                    same for every N >= 1 (default 0: one worker, the BLAS's\n"
"                    own threads)\n"
"Checkpoints and resuming:\n"
"  --checkpoint-every N   write RUN/checkpoint.vae every N optimizer steps, or\n"
"                    with the suffix e every N epochs (2e: every second\n"
"                    epoch); default 1e; 0: only at the end and when stopped.\n"
"                    A final checkpoint is always written at the end. A\n"
"                    checkpoint holds the whole training state (parameters,\n"
"                    Adam's moments, the generator, the position inside the\n"
"                    epoch) and the run's settings, and is replaced\n"
"                    atomically: a crash never leaves half a file\n"
"  --resume FILE     continue the run of checkpoint FILE where it stopped, with\n"
"                    the settings stored in it (--lr, --beta, --batch,\n"
"                    --binarize, --ae, --seed, the architecture,\n"
"                    --train-limit, and the training images, checked by a\n"
"                    checksum), to the same results, digit for digit, as a\n"
"                    run that never stopped. Giving one of those with another\n"
"                    value is refused. --epochs, --threads, --data, --ll,\n"
"                    --ll-limit and --checkpoint-every may be given; they\n"
"                    default to the run's own. Writes into FILE's folder\n"
"                    unless --out is given\n"
"  Ctrl-C            (or SIGTERM) stops training after the step under way,\n"
"                    writes RUN/checkpoint.vae and prints the command that\n"
"                    resumes; exit status 130 (143 for SIGTERM). Ctrl-C\n"
"                    pressed again meanwhile is ignored, so the checkpoint\n"
"                    is always completed (it takes well under a second);\n"
"                    Ctrl-\\ quits at once, losing the steps since the last\n"
"                    checkpoint\n"
"Evaluation:\n"
"  --ll K            also estimate the test negative log-likelihood by\n"
"                    importance sampling with K samples per image (default 0 =\n"
"                    off; K = 100..5000 is usual, cost grows with K)\n"
"  --ll-limit N      use only the first N test images for --ll (0 = all)\n"
"Files:\n"
"  --data DIR        the four MNIST IDX files, plain or .gz (default ./data);\n"
"                    examples/fetch_mnist.sh DIR gets them\n"
"  --out DIR         train: write the run into DIR (created when missing)\n"
"                    instead of a new runs/ folder; refused when DIR already\n"
"                    holds a model.vae or checkpoint.vae that this run did not\n"
"                    write. sample/reconstruct: where the pictures go\n"
"  --force           let --out replace DIR's model.vae and checkpoint.vae\n"
"  -h, --help        this text\n"
"\n"
"Pictures (white digits on black, pixel intensity = probability):\n"
"  samples.png          8x8 decoded draws z ~ N(0, I)\n"
"  reconstructions.png  8 rows of 8 pairs: test image | its reconstruction\n"
"  interpolation.png    8 rows: test digit a, decodings along the line\n"
"                       between the latent means of a and b, test digit b\n"
"  manifold.png         --latent 2 only: decodings of a 20x20 grid on [-3,3]^2\n"
"  latent_scatter.png   --latent 2 only: test-set means colored by digit\n"
"\n"
"Exit status: 0 on success, 1 when a library call or a file fails (the\n"
"message names the call, the status and the library's detail), 2 on a bad\n"
"command line or a refused overwrite or setting, 130 (143) when stopped by\n"
"Ctrl-C (SIGTERM) after writing the checkpoint.\n");
}

/* --checkpoint-every: "N" steps or "Ne" epochs. */
static int parse_every(const char *s, size_t *every, int *epochs)
{
    char buf[64];
    size_t n = strlen(s);
    *epochs = n > 1 && (s[n - 1] == 'e' || s[n - 1] == 'E');
    if (n == 0 || n >= sizeof buf) {
        fprintf(stderr, "error: --checkpoint-every: '%s' is not N (steps) or Ne (epochs)\n", s);
        return -1;
    }
    memcpy(buf, s, n + 1);
    if (*epochs)
        buf[n - 1] = '\0';
    return parse_size("--checkpoint-every", buf, every);
}

/* Returns 0, or EXIT_USAGE after printing why. */
static int parse_args(int argc, char **argv, config *c)
{
    *c = (config){.mode = "train", .epochs = 10, .batch = 128, .latent = 20,
                  .hidden = {400}, .n_hidden = 1, .lr = 1e-3, .beta = 1.0, .seed = 1,
                  .data = "./data", .every = 1, .every_epochs = 1, .argc = argc, .argv = argv};
    int i = 1;
    if (argc > 1 && argv[1][0] != '-') {
        c->mode = argv[1];
        if (strcmp(c->mode, "train") && strcmp(c->mode, "sample") &&
            strcmp(c->mode, "reconstruct")) {
            fprintf(stderr, "error: unknown mode '%s' (train, sample or reconstruct)\n",
                    c->mode);
            return EXIT_USAGE;
        }
        i = 2;
    }
    for (; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int r;
#define FLAG(name) ((r = flag_value(argc, argv, &i, name, &v)) != 0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--ae")) {
            c->ae = 1;
            c->given |= G_AE;
            continue;
        } else if (!strcmp(a, "--binarize")) {
            c->binarize = 1;
            c->given |= G_BINARIZE;
            continue;
        } else if (!strcmp(a, "--conv")) {
            c->conv = 1;
            c->given |= G_CONV;
            continue;
        } else if (!strcmp(a, "--force")) {
            c->force = 1;
            continue;
        } else if (FLAG("--epochs")) {
            if (r < 0 || parse_size(a, v, &c->epochs))
                return EXIT_USAGE;
            c->given |= G_EPOCHS;
        } else if (FLAG("--batch")) {
            if (r < 0 || parse_size(a, v, &c->batch))
                return EXIT_USAGE;
            c->given |= G_BATCH;
        } else if (FLAG("--latent")) {
            if (r < 0 || parse_size(a, v, &c->latent))
                return EXIT_USAGE;
            c->given |= G_LATENT;
        } else if (FLAG("--hidden")) {
            if (r < 0 || parse_size_list(a, v, c->hidden, MAX_HIDDEN, &c->n_hidden))
                return EXIT_USAGE;
            c->given |= G_HIDDEN;
        } else if (FLAG("--lr")) {
            if (r < 0 || parse_double(a, v, &c->lr))
                return EXIT_USAGE;
            c->given |= G_LR;
        } else if (FLAG("--beta")) {
            if (r < 0 || parse_double(a, v, &c->beta))
                return EXIT_USAGE;
            c->given |= G_BETA;
        } else if (FLAG("--likelihood")) {
            if (r < 0)
                return EXIT_USAGE;
            if (!strcmp(v, "bernoulli"))
                c->likelihood = VAE_LIKELIHOOD_BERNOULLI;
            else if (!strcmp(v, "cb"))
                c->likelihood = VAE_LIKELIHOOD_CONTINUOUS_BERNOULLI;
            else {
                fprintf(stderr, "error: --likelihood must be bernoulli or cb\n");
                return EXIT_USAGE;
            }
            c->given |= G_LIKELIHOOD;
        } else if (FLAG("--iwae")) {
            if (r < 0 || parse_size(a, v, &c->iwae))
                return EXIT_USAGE;
            c->given |= G_IWAE;
        } else if (FLAG("--warmup")) {
            if (r < 0 || parse_size(a, v, &c->warmup))
                return EXIT_USAGE;
            c->given |= G_WARMUP;
        } else if (FLAG("--free-bits")) {
            if (r < 0 || parse_double(a, v, &c->free_bits))
                return EXIT_USAGE;
            c->given |= G_FREE_BITS;
        } else if (FLAG("--seed")) {
            if (r < 0 || parse_u64(a, v, &c->seed))
                return EXIT_USAGE;
            c->given |= G_SEED;
        } else if (FLAG("--threads")) {
            if (r < 0 || parse_size(a, v, &c->threads))
                return EXIT_USAGE;
            c->given |= G_THREADS;
        } else if (FLAG("--train-limit")) {
            if (r < 0 || parse_size(a, v, &c->train_limit))
                return EXIT_USAGE;
            c->given |= G_TRAIN_LIMIT;
        } else if (FLAG("--ll")) {
            if (r < 0 || parse_size(a, v, &c->ll_k))
                return EXIT_USAGE;
            c->given |= G_LL;
        } else if (FLAG("--ll-limit")) {
            if (r < 0 || parse_size(a, v, &c->ll_limit))
                return EXIT_USAGE;
            c->given |= G_LL_LIMIT;
        } else if (FLAG("--checkpoint-every")) {
            if (r < 0 || parse_every(v, &c->every, &c->every_epochs))
                return EXIT_USAGE;
            c->given |= G_EVERY;
        } else if (FLAG("--data")) {
            if (r < 0)
                return EXIT_USAGE;
            c->data = v;
            c->given |= G_DATA;
        } else if (FLAG("--out")) {
            if (r < 0)
                return EXIT_USAGE;
            c->out = v;
            c->given |= G_OUT;
        } else if (FLAG("--model")) {
            if (r < 0)
                return EXIT_USAGE;
            c->model = v;
            c->given |= G_MODEL;
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
    int train = !strcmp(c->mode, "train");
    if (!train && (c->resume || c->force || (c->given & G_EVERY))) {
        fprintf(stderr, "error: --resume, --force and --checkpoint-every are for training, "
                        "not %s\n", c->mode);
        return EXIT_USAGE;
    }
    if (c->resume && c->model) {
        fprintf(stderr, "error: --resume continues a run from its checkpoint, --model starts "
                        "a new run from a model's parameters: give one of them\n");
        return EXIT_USAGE;
    }
    if (c->epochs == 0 && train && !c->resume)
        fprintf(stderr, "note: --epochs 0 saves and draws the untrained model\n");
    if (c->batch == 0 || c->latent == 0) {
        fprintf(stderr, "error: --batch and --latent must be positive\n");
        return EXIT_USAGE;
    }
    if (!(c->lr > 0.0) || c->beta < 0.0) {
        fprintf(stderr, "error: --lr must be positive and --beta non-negative\n");
        return EXIT_USAGE;
    }
    if (((c->given & G_IWAE) && (c->iwae == 0 || c->iwae > 4096)) ||
        !(c->free_bits >= 0.0 && c->free_bits <= 1e6)) {
        fprintf(stderr, "error: --iwae takes 1 to 4096 draws and --free-bits 0 to 1e6 nats\n");
        return EXIT_USAGE;
    }
    if ((c->iwae && (c->ae || c->free_bits > 0.0)) || (c->ae && (c->warmup || c->free_bits))) {
        fprintf(stderr, "error: --iwae, --ae and --free-bits are different objectives: "
                        "--iwae goes with neither of the others, and --ae has no KL term "
                        "for --warmup or --free-bits\n");
        return EXIT_USAGE;
    }
    if (c->conv && (c->given & G_HIDDEN)) {
        fprintf(stderr, "error: --hidden sets the MLP's layers; the --conv architecture is "
                        "fixed (see --help)\n");
        return EXIT_USAGE;
    }
    if (c->conv && !train)
        fprintf(stderr, "note: --conv only matters for train; %s uses the architecture stored "
                        "in the model file\n", c->mode);
    if (c->threads > 64) {
        fprintf(stderr, "error: --threads %zu: at most 64 are possible\n", c->threads);
        return EXIT_USAGE;
    }
    return 0;
}

/* ---- describing models --------------------------------------------------- */

static int model_is_mlp(const vae_model *m)
{
    for (size_t k = 0; k < vae_model_layer_count(m); k++)
        if (vae_layer_kind(vae_model_layer(m, k)) != VAE_LAYER_DENSE)
            return 0;
    return 1;
}

static size_t layer_param(const vae_layer *l, int param)
{
    size_t v = 0;
    vae_layer_get_param(l, param, &v);
    return v;
}

/* "MLP 784-400-20" or "conv 1x28x28-32x14x14-64x7x7-256-20": the input, the
 * output of every encoder layer, the latent size. */
static const char *describe_model(const vae_model *m, char *buf, size_t cap)
{
    size_t enc = vae_model_encoder_layer_count(m);
    const vae_layer *first = vae_model_layer(m, 0);
    int n;
    if (model_is_mlp(m)) {
        n = snprintf(buf, cap, "MLP %zu", vae_model_input_dim(m));
    } else if (first && vae_layer_kind(first) != VAE_LAYER_DENSE) {
        n = snprintf(buf, cap, "conv %zux%zux%zu", layer_param(first, VAE_LAYER_IN_CHANNELS),
                     layer_param(first, VAE_LAYER_IN_HEIGHT),
                     layer_param(first, VAE_LAYER_IN_WIDTH));
    } else {
        n = snprintf(buf, cap, "conv %zu", vae_model_input_dim(m));
    }
    for (size_t k = 0; k < enc && n > 0 && (size_t)n < cap; k++) {
        const vae_layer *l = vae_model_layer(m, k);
        if (vae_layer_kind(l) == VAE_LAYER_DENSE)
            n += snprintf(buf + n, cap - (size_t)n, "-%zu", vae_layer_output_size(l));
        else
            n += snprintf(buf + n, cap - (size_t)n, "-%zux%zux%zu",
                          layer_param(l, VAE_LAYER_OUT_CHANNELS),
                          layer_param(l, VAE_LAYER_OUT_HEIGHT),
                          layer_param(l, VAE_LAYER_OUT_WIDTH));
    }
    if (n > 0 && (size_t)n < cap)
        snprintf(buf + n, cap - (size_t)n, "-%zu", vae_model_latent_dim(m));
    return buf;
}

/* Same architecture: description (encoder and latent), likelihood and
 * parameter count. */
static int same_architecture(const vae_model *a, const vae_model *b)
{
    char da[256], db[256];
    return !strcmp(describe_model(a, da, sizeof da), describe_model(b, db, sizeof db)) &&
           vae_model_likelihood(a) == vae_model_likelihood(b) &&
           vae_model_param_count(a) == vae_model_param_count(b);
}

static const char *activation_name(int act)
{
    static const char *names[] = {"identity", "ReLU", "leaky ReLU", "tanh", "sigmoid",
                                  "softplus", "ELU"};
    return act >= 0 && act < (int)(sizeof names / sizeof *names) ? names[act] : "?";
}

/* The settings that describe an architecture (latent, hidden, conv) from a
 * model, for a run that starts from --model FILE. */
static void config_from_model(config *c, const vae_model *m)
{
    c->latent = vae_model_latent_dim(m);
    c->conv = !model_is_mlp(m);
    c->n_hidden = 0;
    if (!c->conv)
        for (size_t k = 0; k < vae_model_encoder_layer_count(m) && k < MAX_HIDDEN; k++)
            c->hidden[c->n_hidden++] = vae_layer_output_size(vae_model_layer(m, k));
}

static void format_hidden(const config *c, char *buf, size_t cap)
{
    buf[0] = '\0';
    size_t n = 0;
    for (size_t k = 0; k < c->n_hidden && n < cap; k++)
        n += (size_t)snprintf(buf + n, cap - n, k ? ",%zu" : "%zu", c->hidden[k]);
}

/* ---- run settings, kept as checkpoint metadata ---------------------------- */

static const char *meta_get(const vae_trainer *t, const char *key)
{
    const char *v = NULL;
    vae_trainer_get_meta(t, key, &v);
    return v;
}

static int meta_set(vae_trainer *t, const char *key, const char *fmt, ...)
{
    char value[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(value, sizeof value, fmt, ap);
    va_end(ap);
    int rc = vae_trainer_set_meta(t, key, value);
    return rc == VAE_OK ? rc : report(rc, "vae_trainer_set_meta");
}

static void format_every(const config *c, char *buf, size_t cap)
{
    snprintf(buf, cap, "%zu%s", c->every, c->every && c->every_epochs ? "e" : "");
}

/* The keys of the settings that decide a run's results, in the order they
 * are stored; a resumed run must keep them. */
static const char *const SETTING_KEYS[] = {"epochs", "batch", "lr", "beta", "seed", "binarize",
                                           "ae", "conv", "latent", "hidden", "train_limit",
                                           "data", "likelihood", "iwae", "warmup",
                                           "free_bits"};

/* Stores what a run needs to be resumed, or recognised, as metadata. */
static int set_run_meta(vae_trainer *t, const config *c, const char *data_id, const char *run_id)
{
    char argv_line[4096] = "", hidden[256], every[32];
    for (int k = 0; k < c->argc; k++)
        shell_append(argv_line, sizeof argv_line, c->argv[k]);
    format_hidden(c, hidden, sizeof hidden);
    format_every(c, every, sizeof every);
    int rc;
    if ((rc = meta_set(t, "program", "mnist_vae")) ||
        (rc = meta_set(t, "run", "%s", run_id)) ||
        (rc = meta_set(t, "argv", "%s", argv_line)) ||
        (rc = meta_set(t, "libvae", "%s", vae_version_string())) ||
        (rc = meta_set(t, "epochs", "%zu", c->epochs)) ||
        (rc = meta_set(t, "batch", "%zu", c->batch)) ||
        (rc = meta_set(t, "lr", "%.17g", c->lr)) ||
        (rc = meta_set(t, "beta", "%.17g", c->beta)) ||
        (rc = meta_set(t, "seed", "%llu", (unsigned long long)c->seed)) ||
        (rc = meta_set(t, "binarize", "%d", c->binarize)) ||
        (rc = meta_set(t, "ae", "%d", c->ae)) ||
        (rc = meta_set(t, "likelihood", "%zu", c->likelihood)) ||
        (rc = meta_set(t, "iwae", "%zu", c->iwae)) ||
        (rc = meta_set(t, "warmup", "%zu", c->warmup)) ||
        (rc = meta_set(t, "free_bits", "%.17g", c->free_bits)) ||
        (rc = meta_set(t, "conv", "%d", c->conv)) ||
        (rc = meta_set(t, "latent", "%zu", c->latent)) ||
        (rc = meta_set(t, "hidden", "%s", c->conv ? "-" : hidden)) ||
        (rc = meta_set(t, "train_limit", "%zu", c->train_limit)) ||
        (rc = meta_set(t, "data", "%s", data_id)) ||
        (rc = meta_set(t, "data_dir", "%s", c->data)) ||
        (rc = meta_set(t, "threads", "%zu", c->threads)) ||
        (rc = meta_set(t, "ll", "%zu", c->ll_k)) ||
        (rc = meta_set(t, "ll_limit", "%zu", c->ll_limit)) ||
        (rc = meta_set(t, "checkpoint_every", "%s", every)))
        return rc;
    if (c->model && (rc = meta_set(t, "init", "%s", c->model)))
        return rc;
    return VAE_OK;
}

/* Conflicts between the command line and a run's stored settings. */
typedef struct conflicts {
    char text[4096];
    size_t len;
} conflicts;

static void conflict(conflicts *k, const char *flag, const char *given, const char *stored)
{
    if (k->len < sizeof k->text)
        k->len += (size_t)snprintf(k->text + k->len, sizeof k->text - k->len,
                                   "  %s%s%s (the run has %s)\n", flag, *given ? " " : "", given,
                                   stored);
}

/* A stored setting, or NULL after printing that it is missing. */
static const char *stored(const vae_trainer *t, const char *key, const char *path)
{
    const char *v = meta_get(t, key);
    if (!v)
        fprintf(stderr, "error: %s lacks the setting '%s' of an mnist_vae run\n", path, key);
    return v;
}

/*
 * Takes the settings of the run stored in the checkpoint t was restored
 * from: the ones that decide the results replace the defaults, and one
 * given on the command line with another value is a conflict. Returns 0,
 * EXIT_USAGE (conflicts, printed) or EXIT_FAIL.
 */
static int take_run_settings(config *c, const vae_trainer *t, const char *path)
{
    const char *program = meta_get(t, "program");
    if (!program || strcmp(program, "mnist_vae")) {
        fprintf(stderr, "error: %s is a checkpoint without the settings of an mnist_vae run%s%s%s; "
                        "mnist_vae cannot tell how to continue it\n",
                path, program ? " (written by " : "", program ? program : "",
                program ? ")" : "");
        return EXIT_USAGE;
    }
    conflicts k = {.len = 0};
    const char *v;
    char given[256], tmp[64];
    size_t z;
    double d;
    uint64_t u;
#define STORED(key)                                                                              \
    if (!(v = stored(t, key, path)))                                                             \
        return EXIT_FAIL;
#define BAD(key)                                                                                 \
    do {                                                                                         \
        fprintf(stderr, "error: %s: the stored setting %s = '%s' is not valid\n", path, key, v); \
        return EXIT_FAIL;                                                                        \
    } while (0)
#define SIZE_VALUE(key, field, bit, flag)                                                        \
    if (parse_size(key, v, &z))                                                                  \
        BAD(key);                                                                                \
    if ((c->given & (bit)) && c->field != z) {                                                   \
        snprintf(given, sizeof given, "%zu", c->field);                                          \
        conflict(&k, flag, given, v);                                                            \
    }                                                                                            \
    c->field = z;
#define SIZE_SETTING(key, field, bit, flag)                                                      \
    STORED(key);                                                                                 \
    SIZE_VALUE(key, field, bit, flag)
#define FLAG_SETTING(key, field, bit, flag)                                                      \
    STORED(key);                                                                                 \
    if (strcmp(v, "0") && strcmp(v, "1"))                                                        \
        BAD(key);                                                                                \
    if ((c->given & (bit)) && !strcmp(v, "0"))                                                   \
        conflict(&k, flag, "", "it off");                                                        \
    c->field = !strcmp(v, "1");

    SIZE_SETTING("batch", batch, G_BATCH, "--batch");
    SIZE_SETTING("latent", latent, G_LATENT, "--latent");
    SIZE_SETTING("train_limit", train_limit, G_TRAIN_LIMIT, "--train-limit");
    FLAG_SETTING("binarize", binarize, G_BINARIZE, "--binarize");
    FLAG_SETTING("ae", ae, G_AE, "--ae");
    /* Settings of 1.2: a run of 1.1 lacks them and had them off. */
#define NEW_SIZE_SETTING(key, field, bit, flag)                                                  \
    if (!(v = meta_get(t, key)))                                                                 \
        v = "0";                                                                                 \
    SIZE_VALUE(key, field, bit, flag)
    NEW_SIZE_SETTING("likelihood", likelihood, G_LIKELIHOOD, "--likelihood");
    NEW_SIZE_SETTING("iwae", iwae, G_IWAE, "--iwae");
    NEW_SIZE_SETTING("warmup", warmup, G_WARMUP, "--warmup");
#undef NEW_SIZE_SETTING
    if (!(v = meta_get(t, "free_bits")))
        v = "0";
    if (parse_double("free_bits", v, &d))
        BAD("free_bits");
    if ((c->given & G_FREE_BITS) && c->free_bits != d) {
        snprintf(given, sizeof given, "%g", c->free_bits);
        conflict(&k, "--free-bits", given, v);
    }
    c->free_bits = d;
    FLAG_SETTING("conv", conv, G_CONV, "--conv");
    STORED("lr");
    if (parse_double("lr", v, &d))
        BAD("lr");
    if ((c->given & G_LR) && c->lr != d) {
        snprintf(given, sizeof given, "%g", c->lr);
        conflict(&k, "--lr", given, v);
    }
    c->lr = d;
    STORED("beta");
    if (parse_double("beta", v, &d))
        BAD("beta");
    if ((c->given & G_BETA) && c->beta != d) {
        snprintf(given, sizeof given, "%g", c->beta);
        conflict(&k, "--beta", given, v);
    }
    c->beta = d;
    STORED("seed");
    if (parse_u64("seed", v, &u))
        BAD("seed");
    if ((c->given & G_SEED) && c->seed != u) {
        snprintf(given, sizeof given, "%llu", (unsigned long long)c->seed);
        conflict(&k, "--seed", given, v);
    }
    c->seed = u;
    STORED("hidden");
    if (c->conv) {
        if (c->given & G_HIDDEN)
            conflict(&k, "--hidden", "", "the convolutional architecture");
    } else {
        size_t h[MAX_HIDDEN], nh = 0;
        if (parse_size_list("hidden", v, h, MAX_HIDDEN, &nh))
            BAD("hidden");
        if (c->given & G_HIDDEN) {
            format_hidden(c, given, sizeof given);
            if (strcmp(given, v))
                conflict(&k, "--hidden", given, v);
        }
        memcpy(c->hidden, h, sizeof h);
        c->n_hidden = nh;
    }
    /* Settings that do not change the results: the run's own unless given. */
    STORED("epochs");
    if (parse_size("epochs", v, &z))
        BAD("epochs");
    if (!(c->given & G_EPOCHS))
        c->epochs = z;
    if (!(c->given & G_DATA) && (v = meta_get(t, "data_dir"))) {
        /* A copy: the entry is replaced when the run's metadata is updated. */
        snprintf(c->data_buf, sizeof c->data_buf, "%s", v);
        c->data = c->data_buf;
    }
    if (!(c->given & G_THREADS) && (v = meta_get(t, "threads"))) {
        if (parse_size("threads", v, &z) || z > 64)
            BAD("threads");
        c->threads = z;
    }
    if (!(c->given & G_LL) && (v = meta_get(t, "ll")) && !parse_size("ll", v, &z))
        c->ll_k = z;
    if (!(c->given & G_LL_LIMIT) && (v = meta_get(t, "ll_limit")) &&
        !parse_size("ll_limit", v, &z))
        c->ll_limit = z;
    if (!(c->given & G_EVERY) && (v = meta_get(t, "checkpoint_every"))) {
        snprintf(tmp, sizeof tmp, "%s", v);
        if (parse_every(tmp, &c->every, &c->every_epochs))
            BAD("checkpoint_every");
    }
#undef STORED
#undef BAD
#undef SIZE_SETTING
#undef SIZE_VALUE
#undef FLAG_SETTING
    if (k.len) {
        fprintf(stderr, "error: --resume %s continues a run with the settings it started with; "
                        "these options conflict with them:\n%s"
                        "Drop them to continue the run, or start a new run (without --resume) "
                        "to change them.\n", path, k.text);
        return EXIT_USAGE;
    }
    return 0;
}

/* ---- objects -------------------------------------------------------------- */

/* A model with its trainer (Adam), as a checkpoint is read back. */
typedef struct session {
    vae_model *m;
    vae_elbo *e;
    vae_optimizer *opt;
    vae_trainer *t;
} session;

static void session_free(session *s)
{
    vae_trainer_free(s->t); /* before the model, objective and optimizer it borrows */
    vae_optimizer_free(s->opt);
    vae_elbo_free(s->e);
    vae_model_free(s->m);
    memset(s, 0, sizeof *s);
}

/* The objective, the optimizer and the trainer over s->m. */
static int session_trainer(session *s, vae_context *ctx, uint64_t seed)
{
    int rc;
    if ((rc = vae_elbo_create(&s->e)) ||
        (rc = vae_optimizer_create(&s->opt, VAE_OPTIMIZER_ADAM)) || /* betas 0.9, 0.999 */
        (rc = vae_trainer_create(&s->t, s->m, s->e, s->opt, ctx, seed)))
        return rc;
    return VAE_OK;
}

/* Reads a checkpoint: its model, and a trainer restored from it. Returns a
 * libvae status, not reported; `what` names the failing call. */
static int session_open(session *s, vae_context *ctx, const char *path, const char **what)
{
    int rc;
    memset(s, 0, sizeof *s);
    *what = "vae_model_load";
    if ((rc = vae_model_load(&s->m, path)))
        return rc;
    *what = "creating the trainer";
    if ((rc = session_trainer(s, ctx, 0)))
        return rc;
    *what = "vae_trainer_restore";
    return vae_trainer_restore(s->t, path);
}

/*
 * The convolutional VAE for one-channel h x w images (h, w multiples of 4),
 * built layer by layer. Per sample (NCHW, flat), for 28x28:
 *   encoder  1x28x28 -conv-> 32x14x14 -conv-> 64x7x7 (3136) -dense-> 256,
 *            then the model's Gaussian head (mu, logvar)
 *   decoder  latent -dense-> 256 -dense-> 3136 (64x7x7)
 *            -convT-> 32x14x14 -convT-> 1x28x28 logits
 * Every conv and convT has kernel 4, stride 2, padding 1 (output_padding 0),
 * which halves, resp. doubles, each side. ReLU everywhere but the last
 * layer, which is the identity (the Bernoulli likelihood takes logits).
 * vae_model_add_*_layer() takes each layer from `l`, leaving it NULL, on
 * success and on failure alike, so nothing here frees a layer.
 */
static int build_conv_model(vae_model **out, size_t h, size_t w, size_t latent, int likelihood,
                            uint64_t seed)
{
    enum { K = 4, S = 2, P = 1, C1 = 32, C2 = 64, HID = 256 };
    int rc = VAE_OK;
    vae_model *m = NULL;
    vae_layer *l = NULL; /* the constructors and the adds leave it NULL */
    const size_t h2 = h / 2, w2 = w / 2, h4 = h / 4, w4 = w / 4, flat = C2 * h4 * w4;
    *out = NULL;
    if (h % 4 || w % 4) {
        fprintf(stderr, "error: --conv needs image sides divisible by 4, the data has %zux%zu\n",
                h, w);
        return -1;
    }
    CHECK(vae_model_create(&m, h * w, latent, likelihood));
    CHECK(vae_layer_conv2d_create(&l, 1, h, w, C1, K, K, S, P, VAE_ACT_RELU));
    CHECK(vae_model_add_encoder_layer(m, &l));
    CHECK(vae_layer_conv2d_create(&l, C1, h2, w2, C2, K, K, S, P, VAE_ACT_RELU));
    CHECK(vae_model_add_encoder_layer(m, &l));
    CHECK(vae_layer_dense_create(&l, flat, HID, VAE_ACT_RELU));
    CHECK(vae_model_add_encoder_layer(m, &l));

    CHECK(vae_layer_dense_create(&l, latent, HID, VAE_ACT_RELU));
    CHECK(vae_model_add_decoder_layer(m, &l));
    CHECK(vae_layer_dense_create(&l, HID, flat, VAE_ACT_RELU));
    CHECK(vae_model_add_decoder_layer(m, &l));
    CHECK(vae_layer_conv2d_transpose_create(&l, C2, h4, w4, C1, K, K, S, P, 0, VAE_ACT_RELU));
    CHECK(vae_model_add_decoder_layer(m, &l));
    CHECK(vae_layer_conv2d_transpose_create(&l, C1, h2, w2, 1, K, K, S, P, 0,
                                            VAE_ACT_IDENTITY));
    CHECK(vae_model_add_decoder_layer(m, &l));
    CHECK(vae_model_build(m, seed));
    *out = m;
    m = NULL;
done:
    vae_model_free(m);
    return rc;
}

/* ---- evaluation and pictures ---------------------------------------------- */

/* Mean importance-sampled -log p(x) over the first `limit` test images,
 * next to the -ELBO of the same images. Returns 1 when a signal stopped it
 * (nothing printed), else a status. */
static int report_nll(vae_context *ctx, const vae_model *m, const vae_elbo *e,
                      const vae_dataset *test, size_t k, size_t limit, vae_rng *rng,
                      const config *c)
{
    enum { CHUNK = 100 };
    int rc = VAE_OK;
    size_t n = vae_dataset_count(test), d = vae_dataset_dim(test);
    if (limit && limit < n)
        n = limit;
    float *x = malloc(CHUNK * d * sizeof *x);        /* x[CHUNK][d] */
    double *ll = malloc(CHUNK * sizeof *ll);         /* ll[CHUNK] */
    double *neg_elbo = malloc(CHUNK * sizeof *neg_elbo); /* per-sample -ELBO */
    if (!x || !ll || !neg_elbo) {
        fprintf(stderr, "error: out of memory\n");
        rc = -1;
        goto done;
    }
    progress bar;
    char label[64], took[32];
    snprintf(label, sizeof label, "NLL, K=%zu", k);
    progress_begin(&bar, label);
    double t0 = wall_seconds(), sum_ll = 0.0, sum_elbo = 0.0;
    for (size_t first = 0; first < n; first += CHUNK) {
        if (g_stop) {
            progress_end(&bar);
            rc = 1;
            goto done;
        }
        size_t b = n - first < CHUNK ? n - first : CHUNK;
        CHECK(vae_dataset_range(test, first, b, x));
        CHECK(vae_log_likelihood(ctx, m, x, b, k, rng, ll));
        CHECK(vae_elbo_evaluate(ctx, m, e, x, b, NULL, rng, neg_elbo, NULL));
        for (size_t i = 0; i < b; i++) {
            sum_ll += ll[i];
            sum_elbo += neg_elbo[i];
        }
        progress_update(&bar, first + b, n, -sum_ll / (double)(first + b));
    }
    progress_end(&bar);
    printf("test NLL (importance sampling, K=%zu, %zu image%s): %.3f nats per image"
           "  (%s of the same images %.3f; %s)\n",
           k, n, plural(n), -sum_ll / (double)n,
           c->ae      ? "reconstruction loss"
           : c->iwae  ? "the training objective, the IWAE bound,"
           : c->beta != 1.0 ? "recon + beta KL"
                            : "-ELBO",
           sum_elbo / (double)n, format_seconds(wall_seconds() - t0, took, sizeof took));
    if (c->ae)
        printf("note: an autoencoder never trains its variance head, so this NLL estimate "
               "says little\n");
done:
    free(x);
    free(ll);
    free(neg_elbo);
    return rc;
}

static int check_dims(const vae_model *m, const vae_dataset *ds)
{
    if (vae_dataset_dim(ds) != vae_model_input_dim(m)) {
        fprintf(stderr, "error: the data has %zu values per image, the model expects %zu\n",
                vae_dataset_dim(ds), vae_model_input_dim(m));
        return -1;
    }
    return 0;
}

/* The pictures that need test data; manifold/scatter only for a 2-D latent. */
static int data_pictures(vae_context *ctx, const vae_model *m, const vae_dataset *test,
                         const char *out)
{
    int rc;
    if ((rc = picture_reconstructions(ctx, m, test, out)) ||
        (rc = picture_interpolation(ctx, m, test, out)))
        return rc;
    if (vae_model_latent_dim(m) == 2 && (rc = picture_latent_scatter(ctx, m, test, out)))
        return rc;
    return VAE_OK;
}

/* ---- the run folder --------------------------------------------------------- */

static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

static uint64_t meta_u64(const vae_trainer *t, const char *key)
{
    const char *v = meta_get(t, key);
    return v ? strtoull(v, NULL, 10) : 0;
}

/* One line about an existing checkpoint: its progress and how its settings
 * differ from those of `ours` (NULL: no comparison). */
static void describe_checkpoint(const char *path, vae_context *ctx, const vae_trainer *ours)
{
    session s;
    const char *what;
    int rc = session_open(&s, ctx, path, &what);
    if (rc != VAE_OK) {
        fprintf(stderr, "  %s: not readable as a checkpoint (%s: %s)\n", path, what,
                vae_last_error());
        session_free(&s);
        return;
    }
    char arch[256];
    size_t done = 0, total = 0;
    vae_trainer_epoch_position(s.t, &done, &total);
    uint64_t planned = meta_u64(s.t, "epochs");
    fprintf(stderr, "  %s: %s, %llu of %llu epoch%s done", path,
            describe_model(s.m, arch, sizeof arch),
            (unsigned long long)vae_trainer_epochs(s.t), (unsigned long long)planned,
            plural(planned));
    if (total)
        fprintf(stderr, " and %zu of %zu image%s of the next", done, total, plural(total));
    fprintf(stderr, ", step %llu", (unsigned long long)vae_trainer_steps(s.t));
    const char *run = meta_get(s.t, "run"), *our_run = ours ? meta_get(ours, "run") : NULL;
    if (run && our_run && !strcmp(run, our_run)) {
        fprintf(stderr, "; this same run, further along than step %llu where it would resume\n",
                (unsigned long long)vae_trainer_steps(ours));
        session_free(&s);
        return;
    }
    if (run)
        fprintf(stderr, "; the run begun %s", run);
    if (ours && meta_get(s.t, "program")) {
        int diffs = 0;
        for (size_t k = 0; k < sizeof SETTING_KEYS / sizeof *SETTING_KEYS; k++) {
            const char *theirs = meta_get(s.t, SETTING_KEYS[k]);
            const char *mine = meta_get(ours, SETTING_KEYS[k]);
            if (theirs && mine && strcmp(theirs, mine)) {
                fprintf(stderr, "%s%s %s (this run: %s)", diffs++ ? ", " : "; its settings: ",
                        SETTING_KEYS[k], theirs, mine);
            }
        }
        if (!diffs)
            fprintf(stderr, "; the same settings as this run");
    }
    fprintf(stderr, "\n");
    session_free(&s);
}

static void describe_model_file(const char *path, const vae_model *ours)
{
    vae_model *m = NULL;
    char theirs[256], mine[256];
    if (vae_model_load(&m, path) != VAE_OK) {
        fprintf(stderr, "  %s: not readable as a model (%s)\n", path, vae_last_error());
        return;
    }
    describe_model(m, theirs, sizeof theirs);
    describe_model(ours, mine, sizeof mine);
    if (same_architecture(m, ours))
        fprintf(stderr, "  %s: %s, %zu parameters (the same architecture as this run)\n", path,
                theirs, vae_model_param_count(m));
    else
        fprintf(stderr, "  %s: %s, %zu parameters (this run: %s, %zu parameters)\n", path,
                theirs, vae_model_param_count(m), mine, vae_model_param_count(ours));
    vae_model_free(m);
}

/*
 * The files this run writes into dir that exist already and that this run
 * did not write: for a new run, any model.vae or checkpoint.vae; when
 * resuming, a checkpoint of another run (or of this run, further along) and
 * a model.vae outside the checkpoint's own folder or of another
 * architecture. Without --force such a file stops the run (EXIT_USAGE,
 * after saying what is there and what to do); returns 0 otherwise.
 */
static int refuse_overwrite(const config *c, const char *dir, vae_context *ctx,
                            const vae_model *m, const vae_trainer *t)
{
    char model[PATH_MAX], ckpt[PATH_MAX], resume_dir[PATH_MAX];
    snprintf(model, sizeof model, "%s", join_path(dir, "model.vae"));
    snprintf(ckpt, sizeof ckpt, "%s", join_path(dir, "checkpoint.vae"));
    int bad_model = file_exists(model), bad_ckpt = file_exists(ckpt);
    if (c->resume) {
        path_dirname(c->resume, resume_dir, sizeof resume_dir);
        if (bad_ckpt && same_file(ckpt, c->resume)) {
            bad_ckpt = 0; /* the checkpoint being resumed */
        } else if (bad_ckpt) {
            session s;
            const char *what, *theirs;
            if (session_open(&s, ctx, ckpt, &what) == VAE_OK &&
                (theirs = meta_get(s.t, "run")) && meta_get(t, "run") &&
                !strcmp(theirs, meta_get(t, "run")) &&
                vae_trainer_steps(s.t) <= vae_trainer_steps(t))
                bad_ckpt = 0; /* an earlier checkpoint of this very run */
            session_free(&s);
        }
        if (bad_model && same_file(dir, resume_dir)) {
            vae_model *old = NULL;
            if (vae_model_load(&old, model) == VAE_OK && same_architecture(old, m))
                bad_model = 0; /* the model this run wrote when it last finished */
            vae_model_free(old);
        }
    }
    if (!bad_model && !bad_ckpt)
        return 0;
    if (c->force) {
        fprintf(stderr, "note: --force: replacing %s%s%s\n", bad_model ? model : "",
                bad_model && bad_ckpt ? " and " : "", bad_ckpt ? ckpt : "");
        return 0;
    }
    fprintf(stderr, "error: %s already holds %s that this run did not write, and this run "
                    "would replace %s; stopping before it does.\n",
            dir, bad_model && bad_ckpt ? "a model and a checkpoint" : bad_model ? "a model"
                                                                                : "a checkpoint",
            bad_model && bad_ckpt ? "them" : "it");
    if (bad_model)
        describe_model_file(model, m);
    if (bad_ckpt)
        describe_checkpoint(ckpt, ctx, t);
    char cmd[PATH_MAX + 64] = "";
    shell_append(cmd, sizeof cmd, c->argv[0]);
    shell_append(cmd, sizeof cmd, "--resume");
    shell_append(cmd, sizeof cmd, ckpt);
    char keep[32], replace[32];
    const char *them = bad_model && bad_ckpt ? "them" : "it";
    snprintf(keep, sizeof keep, "to keep %s:", them);
    snprintf(replace, sizeof replace, "to replace %s:", them);
    if (bad_ckpt && !c->resume)
        fprintf(stderr, "  %-22s%s [--epochs TOTAL]\n", "to continue that run:", cmd);
    fprintf(stderr, "  %-22sgive another --out DIR%s\n", keep,
            c->resume ? "" : ", or no --out (a new folder under " RUNS_DIR "/)");
    fprintf(stderr, "  %-22sadd --force\n", replace);
    return EXIT_USAGE;
}

/* ---- training ---------------------------------------------------------------- */

/* What the progress callback needs: the bar, the trainer and where its
 * checkpoints go. */
typedef struct training {
    progress bar;
    vae_trainer *t;
    const config *c;
    char ckpt[PATH_MAX];
    int saved;                       /* a checkpoint of this process exists */
    uint64_t saved_steps, saved_epochs;
    size_t saved_done;               /* its position in the open epoch */
    int warned;                      /* a periodic checkpoint failed (said once) */
} training;

static int checkpoint_is_current(const training *r)
{
    size_t done = 0;
    vae_trainer_epoch_position(r->t, &done, NULL);
    return r->saved && r->saved_steps == vae_trainer_steps(r->t) &&
           r->saved_epochs == vae_trainer_epochs(r->t) && r->saved_done == done;
}

/* Writes RUN/checkpoint.vae (atomically: vae_trainer_save writes a
 * temporary file and renames it over the old one). Returns the status,
 * not reported. */
static int save_checkpoint(training *r)
{
    if (checkpoint_is_current(r))
        return VAE_OK;
    int rc = vae_trainer_save(r->t, r->ckpt);
    if (rc == VAE_OK) {
        r->saved = 1;
        r->saved_steps = vae_trainer_steps(r->t);
        r->saved_epochs = vae_trainer_epochs(r->t);
        r->saved_done = 0;
        vae_trainer_epoch_position(r->t, &r->saved_done, NULL);
    }
    return rc;
}

static void periodic_checkpoint(training *r)
{
    int rc = save_checkpoint(r);
    if (rc != VAE_OK && !r->warned) {
        progress_end(&r->bar);
        fprintf(stderr, "warning: checkpoint %s not written: %s (%d): %s; training goes on\n",
                r->ckpt, vae_strerror(rc), rc, vae_last_error());
        r->warned = 1;
    }
}

/* vae_progress_fn: the bar, step checkpoints, and the stop on a signal. */
static int on_step(void *payload, size_t done, size_t total, double running_loss)
{
    training *r = payload;
    progress_update(&r->bar, done, total, running_loss);
    if (g_stop)
        return 1; /* the epoch stays open; the caller writes the checkpoint */
    if (r->c->every && !r->c->every_epochs && vae_trainer_steps(r->t) % r->c->every == 0)
        periodic_checkpoint(r);
    return 0;
}

static void resume_command(const training *r, char *buf, size_t cap)
{
    buf[0] = '\0';
    shell_append(buf, cap, r->c->argv[0]);
    shell_append(buf, cap, "--resume");
    shell_append(buf, cap, r->ckpt);
}

/* After a signal: writes the checkpoint, prints how to go on, and returns
 * the exit status (128 + the signal). */
static int stop_training(training *r)
{
    int sig = g_stop;
    progress_end(&r->bar);
    size_t done = 0, total = 0;
    vae_trainer_epoch_position(r->t, &done, &total);
    const char *why = sig == SIGINT ? "Ctrl-C" : "SIGTERM";
    if (total)
        printf("%s: stopped in epoch %llu after %zu of %zu image%s (step %llu); writing the "
               "checkpoint\n", why, (unsigned long long)vae_trainer_epochs(r->t) + 1, done,
               total, plural(total), (unsigned long long)vae_trainer_steps(r->t));
    else
        printf("%s: stopped after epoch %llu (step %llu); writing the checkpoint\n", why,
               (unsigned long long)vae_trainer_epochs(r->t),
               (unsigned long long)vae_trainer_steps(r->t));
    fflush(stdout);
    int rc = save_checkpoint(r);
    if (rc != VAE_OK) {
        report(rc, "vae_trainer_save");
        fprintf(stderr, "error: the steps since the last checkpoint are lost\n");
        return EXIT_FAIL;
    }
    char cmd[2 * PATH_MAX];
    resume_command(r, cmd, sizeof cmd);
    printf("saved %s. To continue where it stopped:\n  %s\n", r->ckpt, cmd);
    return 128 + sig;
}

/* The test-set loss with the evaluation noise of --seed. */
static int evaluate(vae_context *ctx, const vae_model *m, const vae_elbo *e,
                    const vae_dataset *test, uint64_t seed, vae_epoch_stats *ev)
{
    vae_rng *rng = NULL;
    int rc = vae_rng_create(&rng, EVAL_SEED(seed));
    if (rc != VAE_OK)
        return report(rc, "vae_rng_create");
    ev->size = sizeof *ev;
    rc = vae_evaluate_dataset(ctx, m, e, test, rng, NULL, ev);
    vae_rng_free(rng);
    return rc == VAE_OK ? rc : report(rc, "vae_evaluate_dataset");
}

/* "20250102-153000-12345": when and by which process a run began. */
static void make_run_id(char *buf, size_t cap)
{
    time_t now = time(NULL);
    struct tm tm;
    char stamp[32] = "0";
    if (localtime_r(&now, &tm))
        strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
    snprintf(buf, cap, "%s-%ld", stamp, (long)getpid());
}

static const char *likelihood_name(int likelihood)
{
    return likelihood == VAE_LIKELIHOOD_BERNOULLI              ? "Bernoulli"
           : likelihood == VAE_LIKELIHOOD_CONTINUOUS_BERNOULLI ? "continuous Bernoulli"
                                                               : "Gaussian";
}

static int run_train(config *c)
{
    int rc = VAE_OK, status = 0;
    vae_dataset *train = NULL, *test = NULL;
    vae_context *ctx = NULL;
    session s = {0};
    vae_rng *rng = NULL;
    training r;
    memset(&r, 0, sizeof r);
    r.c = c;
    char run_dir[PATH_MAX], model_path[PATH_MAX], arch[256], data_id[128], run_id[64], took[32],
        took2[32];
    const char *what = "";

    CHECK(vae_context_create(&ctx));
    size_t resumed_epochs = 0, resumed_done = 0, resumed_total = 0;
    if (c->resume) {
        /* The checkpoint's model part, then a trainer restored from it: the
         * parameters, Adam's state and settings, the generator, the counters,
         * the open epoch and the run's settings. */
        rc = session_open(&s, ctx, c->resume, &what);
        if (rc != VAE_OK) {
            report(rc, what);
            if (rc == VAE_ERR_FORMAT && s.m && strstr(vae_last_error(), "not a checkpoint"))
                fprintf(stderr, "hint: %s is a model file, not a checkpoint; to start a new run "
                                "from its parameters, use --model %s\n", c->resume, c->resume);
            status = EXIT_FAIL;
            goto done;
        }
        if ((status = take_run_settings(c, s.t, c->resume)))
            goto done;
        resumed_epochs = (size_t)vae_trainer_epochs(s.t);
        vae_trainer_epoch_position(s.t, &resumed_done, &resumed_total);
        if (c->epochs < resumed_epochs + (resumed_total ? 1 : 0)) {
            fprintf(stderr, "error: --epochs %zu: the run in %s has done %zu epoch%s%s; "
                            "--epochs is the total to reach, at least %zu\n",
                    c->epochs, c->resume, resumed_epochs, plural(resumed_epochs),
                    resumed_total ? " and part of the next" : "",
                    resumed_epochs + (resumed_total ? 1 : 0));
            status = EXIT_USAGE;
            goto done;
        }
        snprintf(run_id, sizeof run_id, "%s", meta_get(s.t, "run") ? meta_get(s.t, "run") : "");
    } else {
        make_run_id(run_id, sizeof run_id);
    }
    if ((rc = set_workers(ctx, c->threads)))
        goto fail;

    if ((rc = mnist_load(c->data, 1, &train)) || (rc = mnist_load(c->data, 0, &test)) ||
        (rc = dataset_take_first(&train, c->train_limit)) ||
        (rc = dataset_fingerprint(train, data_id, sizeof data_id)))
        goto fail;
    size_t dim = vae_dataset_dim(train);
    if (vae_dataset_dim(test) != dim) {
        fprintf(stderr, "error: training images have %zu pixels, test images %zu\n", dim,
                vae_dataset_dim(test));
        goto fail;
    }
    if (c->resume) {
        const char *theirs = meta_get(s.t, "data");
        if (!theirs || strcmp(theirs, data_id)) {
            fprintf(stderr, "error: the training images differ from the ones the run in %s "
                            "trained on:\n  here:    %s (from %s)\n  the run: %s (from %s)\n"
                            "A resumed run must see the same images; pass --data with "
                            "those files.\n",
                    c->resume, data_id, c->data, theirs ? theirs : "(not recorded)",
                    meta_get(s.t, "data_dir") ? meta_get(s.t, "data_dir") : "?");
            status = EXIT_USAGE;
            goto done;
        }
        if ((rc = check_dims(s.m, train)))
            goto fail;
        /* What may change on resume: the total, the data folder, the
         * workers, --ll and the checkpoint interval. */
        char every[32];
        format_every(c, every, sizeof every);
        if ((rc = meta_set(s.t, "epochs", "%zu", c->epochs)) ||
            (rc = meta_set(s.t, "data_dir", "%s", c->data)) ||
            (rc = meta_set(s.t, "threads", "%zu", c->threads)) ||
            (rc = meta_set(s.t, "ll", "%zu", c->ll_k)) ||
            (rc = meta_set(s.t, "ll_limit", "%zu", c->ll_limit)) ||
            (rc = meta_set(s.t, "checkpoint_every", "%s", every)))
            goto fail;
    } else {
        size_t img_h = 1, img_w = dim;
        CHECK(vae_dataset_image_size(train, &img_h, &img_w));
        if (c->model) {
            /* Fine-tuning: the architecture and parameters of FILE, which
             * is only read. */
            rc = vae_model_load(&s.m, c->model);
            if (rc != VAE_OK) {
                report(rc, "vae_model_load");
                fprintf(stderr, "(--model %s: the model to start from)\n", c->model);
                goto fail;
            }
            config from = *c;
            config_from_model(&from, s.m);
            char want[256], have[256];
            format_hidden(c, want, sizeof want);
            format_hidden(&from, have, sizeof have);
            if (((c->given & G_LATENT) && c->latent != from.latent) ||
                ((c->given & G_CONV) && !from.conv) ||
                ((c->given & G_HIDDEN) && (from.conv || strcmp(want, have)))) {
                fprintf(stderr, "error: --model %s is a %s; --latent, --hidden and --conv "
                                "cannot change the architecture of the model a run starts "
                                "from\n", c->model, describe_model(s.m, arch, sizeof arch));
                status = EXIT_USAGE;
                goto done;
            }
            config_from_model(c, s.m);
            if ((rc = check_dims(s.m, train)))
                goto fail;
        } else if (c->conv) {
            if (img_h * img_w != dim) {
                fprintf(stderr, "error: --conv needs one-channel images; the data has %zu "
                                "values per %zux%zu image\n", dim, img_h, img_w);
                goto fail;
            }
            if ((rc = build_conv_model(&s.m, img_h, img_w, c->latent, (int)c->likelihood, c->seed)))
                goto fail;
        } else {
            CHECK(vae_model_create_mlp(&s.m, dim, c->hidden, c->n_hidden, c->latent,
                                       VAE_ACT_RELU, (int)c->likelihood, c->seed));
        }
        /* The trainer draws the shuffles, the binarization and the noise
         * from its own generator seeded with --seed; evaluation and pictures
         * use separate streams, so the same seed trains the same model
         * whatever else is asked. */
        CHECK(session_trainer(&s, ctx, c->seed));
        CHECK(vae_elbo_set_param(s.e, VAE_ELBO_BETA, c->beta));
        if (c->ae)
            CHECK(vae_elbo_set_param(s.e, VAE_ELBO_OBJECTIVE, VAE_OBJECTIVE_AUTOENCODER));
        if (c->iwae) {
            CHECK(vae_elbo_set_param(s.e, VAE_ELBO_OBJECTIVE, VAE_OBJECTIVE_IWAE));
            CHECK(vae_elbo_set_param(s.e, VAE_ELBO_SAMPLES, (double)c->iwae));
        }
        CHECK(vae_elbo_set_param(s.e, VAE_ELBO_WARMUP, (double)c->warmup));
        CHECK(vae_elbo_set_param(s.e, VAE_ELBO_FREE_BITS, c->free_bits));
        CHECK(vae_optimizer_set_param(s.opt, VAE_OPT_LR, c->lr));
        if ((rc = set_run_meta(s.t, c, data_id, run_id)))
            goto fail;
    }
    CHECK(vae_trainer_reserve(s.t, c->batch));

    /* The run folder: the checkpoint's own when resuming, --out DIR, or a
     * new one under runs/. */
    if (c->out) {
        snprintf(run_dir, sizeof run_dir, "%s", c->out);
    } else if (c->resume) {
        path_dirname(c->resume, run_dir, sizeof run_dir);
    } else {
        run_dir[0] = '\0';
    }
    if (run_dir[0]) {
        if (make_dirs(run_dir) != 0)
            goto fail;
        if ((status = refuse_overwrite(c, run_dir, ctx, s.m, s.t)))
            goto done;
    } else if (make_run_dir(RUNS_DIR, run_dir, sizeof run_dir) != 0) {
        goto fail;
    }
    snprintf(model_path, sizeof model_path, "%s", join_path(run_dir, "model.vae"));
    snprintf(r.ckpt, sizeof r.ckpt, "%s", join_path(run_dir, "checkpoint.vae"));
    r.t = s.t;

    size_t n_params = vae_model_param_count(s.m), workers = vae_context_threads(ctx);
    const vae_layer *l0 = vae_model_layer(s.m, 0);
    char objective[128] = "";
    if (c->iwae)
        snprintf(objective, sizeof objective, ", IWAE with %zu draws", c->iwae);
    if (c->warmup)
        snprintf(objective + strlen(objective), sizeof objective - strlen(objective),
                 ", KL warm-up over %zu steps", c->warmup);
    if (c->free_bits > 0.0)
        snprintf(objective + strlen(objective), sizeof objective - strlen(objective),
                 ", free bits %g nats", c->free_bits);
    printf("libvae %s: %s %s, %zu parameters, %s, %s, Adam lr %g, batch %zu, %zu epoch%s, "
           "beta %g%s, seed %llu%s, %zu worker%s\n",
           vae_version_string(), describe_model(s.m, arch, sizeof arch),
           c->ae ? "autoencoder" : "VAE", n_params,
           l0 ? activation_name(vae_layer_activation(l0)) : "?",
           likelihood_name(vae_model_likelihood(s.m)),
           c->lr, c->batch, c->epochs, plural(c->epochs), c->beta, objective,
           (unsigned long long)c->seed,
           c->binarize ? ", dynamic binarization" : "", workers, plural(workers));
    printf("data: %zu training image%s, %zu test image%s from %s\n", vae_dataset_count(train),
           plural(vae_dataset_count(train)), vae_dataset_count(test),
           plural(vae_dataset_count(test)), c->data);
    if (c->model)
        printf("starting from the parameters of %s (new optimizer state and epoch count; "
               "the file is only read)\n", c->model);
    if (c->resume) {
        printf("resuming %s: %zu of %zu epoch%s done", c->resume, resumed_epochs, c->epochs,
               plural(c->epochs));
        if (resumed_total)
            printf(", and %zu of the %zu image%s of epoch %zu", resumed_done, resumed_total,
                   plural(resumed_total), resumed_epochs + 1);
        printf(" (step %llu)\n", (unsigned long long)vae_trainer_steps(s.t));
    }
    char every[64];
    if (!c->every)
        snprintf(every, sizeof every, "at the end");
    else if (c->every_epochs && c->every == 1)
        snprintf(every, sizeof every, "after every epoch");
    else
        snprintf(every, sizeof every, "every %zu %s", c->every,
                 c->every_epochs ? "epochs" : plural(c->every)[0] ? "steps" : "step");
    printf("run folder: %s/ (model.vae, pictures; checkpoint.vae %s and on Ctrl-C)\n", run_dir,
           every);
    fflush(stdout);

    vae_train_options opts;
    CHECK(vae_train_options_init(&opts, sizeof opts));
    opts.batch_size = c->batch;
    opts.binarize = c->binarize;
    opts.progress = on_step;
    opts.payload = &r;
    double train_seconds = 0.0;
    size_t trained = 0; /* epochs completed in this process */
    catch_signals();
    for (size_t ep = (size_t)vae_trainer_epochs(s.t) + 1; ep <= c->epochs; ep++) {
        char label[64], text[128];
        size_t done0 = 0;
        vae_trainer_epoch_position(s.t, &done0, NULL);
        snprintf(label, sizeof label, "epoch %zu/%zu", ep, c->epochs);
        progress_begin(&r.bar, label);
        progress_start_at(&r.bar, done0);
        vae_epoch_stats st = {.size = sizeof st};
        rc = vae_trainer_train_epoch(s.t, train, &opts, &st);
        if (rc == VAE_ERR_CANCELLED && g_stop) {
            status = stop_training(&r);
            goto done;
        }
        if (rc != VAE_OK) {
            progress_end(&r.bar);
            report(rc, "vae_trainer_train_epoch");
            goto fail;
        }
        snprintf(text, sizeof text, "%s: evaluating the %zu test image%s", label,
                 vae_dataset_count(test), plural(vae_dataset_count(test)));
        progress_status(&r.bar, text);
        vae_epoch_stats ev = {.size = sizeof ev};
        rc = evaluate(ctx, s.m, s.e, test, c->seed, &ev);
        progress_end(&r.bar);
        if (rc != VAE_OK)
            goto fail;
        train_seconds += st.seconds;
        trained++;
        printf("epoch %2zu/%zu  train loss %8.3f (recon %8.3f, KL %6.3f)  "
               "test loss %8.3f (recon %8.3f, KL %6.3f) nats per image  ",
               ep, c->epochs, st.loss, st.recon, st.kl, ev.loss, ev.recon, ev.kl);
        if (done0)
            printf("%.2f s for the rest of the epoch, resumed at image %zu (+%.2f s test)\n",
                   st.seconds, done0, ev.seconds);
        else
            printf("%.2f s/epoch (+%.2f s test)\n", st.seconds, ev.seconds);
        fflush(stdout);
        if (c->every && c->every_epochs && ep % c->every == 0)
            periodic_checkpoint(&r);
        if (g_stop) {
            status = stop_training(&r);
            goto done;
        }
    }
    if (trained)
        printf("training: %s for %zu epoch%s in this run, %s per epoch\n",
               format_seconds(train_seconds, took, sizeof took), trained, plural(trained),
               format_seconds(train_seconds / (double)trained, took2, sizeof took2));
    else if (c->resume)
        printf("the run has done all of its %zu epoch%s: nothing to train (a larger --epochs "
               "extends it)\n", c->epochs, plural(c->epochs));

    CHECK(vae_model_save(s.m, model_path));
    pictures_note_written(model_path);
    rc = save_checkpoint(&r); /* the final one: a later --resume --epochs N extends the run */
    if (rc != VAE_OK) {
        report(rc, "vae_trainer_save");
        goto fail;
    }
    pictures_note_written(r.ckpt);
    CHECK(vae_rng_create(&rng, c->seed + 1));
    if ((rc = picture_samples(ctx, s.m, rng, run_dir)) ||
        (rc = data_pictures(ctx, s.m, test, run_dir)))
        goto fail;
    if (vae_model_latent_dim(s.m) == 2 && (rc = picture_manifold(ctx, s.m, run_dir)))
        goto fail;
    if (c->ll_k) {
        vae_rng_free(rng);
        rng = NULL;
        CHECK(vae_rng_create(&rng, EVAL_SEED(c->seed)));
        rc = report_nll(ctx, s.m, s.e, test, c->ll_k, c->ll_limit, rng, c);
        if (rc == 1) {
            char cmd[2 * PATH_MAX] = "", num[32];
            shell_append(cmd, sizeof cmd, c->argv[0]);
            shell_append(cmd, sizeof cmd, "reconstruct");
            shell_append(cmd, sizeof cmd, "--model");
            shell_append(cmd, sizeof cmd, model_path);
            shell_append(cmd, sizeof cmd, "--ll");
            snprintf(num, sizeof num, "%zu", c->ll_k);
            shell_append(cmd, sizeof cmd, num);
            if (c->ll_limit) {
                shell_append(cmd, sizeof cmd, "--ll-limit");
                snprintf(num, sizeof num, "%zu", c->ll_limit);
                shell_append(cmd, sizeof cmd, num);
            }
            printf("%s: the NLL estimate was stopped; the model and the checkpoint are saved. "
                   "To estimate it later:\n  %s\n", g_stop == SIGINT ? "Ctrl-C" : "SIGTERM", cmd);
            status = 128 + g_stop;
            goto done;
        }
        if (rc != VAE_OK)
            goto fail;
    }
    {
        char cmd[2 * PATH_MAX];
        resume_command(&r, cmd, sizeof cmd);
        printf("to train this run further later: %s --epochs TOTAL (TOTAL > %zu)\n", cmd,
               c->epochs);
    }
    if (g_stop)
        status = 128 + g_stop; /* stopped during the last pictures; everything is written */
    goto done;
fail:
    status = EXIT_FAIL;
done:
    if (rc != VAE_OK && !status)
        status = EXIT_FAIL;
    pictures_print_written();
    session_free(&s); /* its trainer before the context it borrows */
    vae_rng_free(rng);
    vae_context_free(ctx);
    vae_dataset_free(test);
    vae_dataset_free(train);
    return status;
}

/* ---- sample and reconstruct --------------------------------------------------- */

static int run_saved(config *c)
{
    int rc = VAE_OK;
    vae_model *m = NULL;
    vae_context *ctx = NULL;
    vae_dataset *test = NULL;
    vae_elbo *e = NULL;
    vae_rng *rng = NULL;
    int sample = !strcmp(c->mode, "sample");
    char model_path[PATH_MAX], out_dir[PATH_MAX];

    if (c->model) {
        snprintf(model_path, sizeof model_path, "%s", c->model);
    } else if (newest_run_model(RUNS_DIR, model_path, sizeof model_path) == 0) {
        printf("model: %s, the most recently written %s/*/model.vae (--model FILE picks "
               "another)\n", model_path, RUNS_DIR);
    } else {
        fprintf(stderr, "error: %s needs a model: no %s/*/model.vae here, and no --model "
                        "FILE given. Train one first (mnist_vae), or pass --model FILE%s\n",
                c->mode, RUNS_DIR,
                file_exists("out/model.vae") ? " (out/model.vae, where earlier versions "
                                               "wrote, exists: --model out/model.vae)" : "");
        return EXIT_USAGE;
    }
    if (c->out)
        snprintf(out_dir, sizeof out_dir, "%s", c->out);
    else
        path_dirname(model_path, out_dir, sizeof out_dir);

    rc = vae_model_load(&m, model_path);
    if (rc != VAE_OK) {
        report(rc, "vae_model_load");
        fprintf(stderr, "(model file: %s)\n", model_path);
        goto done;
    }
    char arch[256];
    printf("loaded %s: %s, %zu inputs, %zu latent dimension%s\n", model_path,
           describe_model(m, arch, sizeof arch), vae_model_input_dim(m),
           vae_model_latent_dim(m), plural(vae_model_latent_dim(m)));
    if (make_dirs(out_dir) != 0) {
        rc = -1;
        goto done;
    }
    CHECK(vae_context_create(&ctx));
    if ((rc = set_workers(ctx, c->threads)))
        goto done;
    CHECK(vae_rng_create(&rng, c->seed));
    if (sample) {
        if ((rc = picture_samples(ctx, m, rng, out_dir)))
            goto done;
    } else {
        if ((rc = mnist_load(c->data, 0, &test)) || (rc = check_dims(m, test)))
            goto done;
        CHECK(vae_elbo_create(&e));
        vae_epoch_stats ev = {.size = sizeof ev};
        CHECK(vae_evaluate_dataset(ctx, m, e, test, rng, NULL, &ev));
        printf("test loss %.3f nats per image (recon %.3f, KL %.3f) over %zu image%s\n",
               ev.loss, ev.recon, ev.kl, vae_dataset_count(test),
               plural(vae_dataset_count(test)));
        if ((rc = data_pictures(ctx, m, test, out_dir)))
            goto done;
        if (c->ll_k && (rc = report_nll(ctx, m, e, test, c->ll_k, c->ll_limit, rng, c)))
            goto done;
    }
    if (vae_model_latent_dim(m) == 2 && (rc = picture_manifold(ctx, m, out_dir)))
        goto done;
done:
    pictures_print_written();
    vae_rng_free(rng);
    vae_elbo_free(e);
    vae_dataset_free(test);
    vae_context_free(ctx);
    vae_model_free(m);
    return rc == VAE_OK ? 0 : EXIT_FAIL;
}

int main(int argc, char **argv)
{
    config c;
    int rc = parse_args(argc, argv, &c);
    if (rc)
        return rc;
    if (vae_version_number() / 100 != VAE_VERSION_NUMBER / 100)
        fprintf(stderr, "warning: built against libvae %d.%d, running with %s\n",
                VAE_VERSION_MAJOR, VAE_VERSION_MINOR, vae_version_string());
    return !strcmp(c.mode, "train") ? run_train(&c) : run_saved(&c);
}
