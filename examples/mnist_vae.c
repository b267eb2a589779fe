/*
 * mnist_vae: trains a variational autoencoder on MNIST with libvae, reports
 * the train and test loss per epoch, saves the model and draws pictures.
 * `mnist_vae --help` lists every option.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vae/vae.h>

#include "mnist_common.h"
#include "mnist_pictures.h"

enum { MAX_HIDDEN = 16, EXIT_USAGE = 2 };

typedef struct config {
    const char *mode; /* "train", "sample" or "reconstruct" */
    size_t epochs, batch, latent;
    size_t hidden[MAX_HIDDEN], n_hidden;
    double lr, beta;
    uint64_t seed;
    size_t threads; /* 0: leave the BLAS alone */
    int ae, binarize;
    int conv, hidden_given; /* --conv; whether --hidden was given */
    const char *data, *out, *model;
    size_t train_limit, ll_k, ll_limit;
} config;

static void usage(FILE *f)
{
    fprintf(f,
"Usage: mnist_vae [train] [OPTIONS]\n"
"       mnist_vae sample [--model FILE] [--out DIR] [--seed S]\n"
"       mnist_vae reconstruct [--model FILE] [--data DIR] [--out DIR] [--ll K]\n"
"\n"
"train (the default) fits a VAE to the 60000 MNIST training images: by default\n"
"an MLP 784-400-20 with ReLU (--conv: a convolutional one), a Bernoulli\n"
"likelihood on the pixel intensities and Adam. Every epoch prints the mean\n"
"training loss (-ELBO, nats per image) with its reconstruction and KL parts,\n"
"the same over the 10000 test images, and the seconds taken. Then it writes\n"
"OUT/model.vae and the pictures below.\n"
"sample loads a saved model and writes OUT/samples.png (and manifold.png for\n"
"a 2-D latent space). reconstruct loads a saved model, prints its test loss\n"
"and writes reconstructions.png, interpolation.png (and manifold.png and\n"
"latent_scatter.png for a 2-D latent space). The model file holds the\n"
"architecture, MLP or convolutional, so both modes work with either.\n"
"\n"
"Model and training:\n"
"  --epochs N        passes over the training set (default 10)\n"
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
"  --binarize        dynamic binarization: each training batch is resampled\n"
"                    to 0/1 pixels (test losses use the intensities)\n"
"  --train-limit N   train on the first N training images only (0 = all)\n"
"  --seed S          seed of the weights, shuffling, noise and samples\n"
"                    (default 1; the same seed gives the same run)\n"
"  --threads N       N workers share every batch in blocks of 64 images\n"
"                    (vae_context_set_threads), each running single-threaded\n"
"                    GEMMs: the BLAS is set to one thread. The results are the\n"
"                    same for every N >= 1 (default 0: one worker, the BLAS's\n"
"                    own threads)\n"
"Evaluation:\n"
"  --ll K            also estimate the test negative log-likelihood by\n"
"                    importance sampling with K samples per image (default 0 =\n"
"                    off; K = 100..5000 is usual, cost grows with K)\n"
"  --ll-limit N      use only the first N test images for --ll (0 = all)\n"
"Files:\n"
"  --data DIR        the four MNIST IDX files, plain or .gz (default ./data);\n"
"                    examples/fetch_mnist.sh DIR gets them\n"
"  --out DIR         output directory, created when missing (default ./out)\n"
"  --model FILE      model to load in sample/reconstruct (default OUT/model.vae)\n"
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
"command line.\n");
}

/* Returns 0, or EXIT_USAGE after printing why. */
static int parse_args(int argc, char **argv, config *c)
{
    *c = (config){.mode = "train", .epochs = 10, .batch = 128, .latent = 20,
                  .hidden = {400}, .n_hidden = 1, .lr = 1e-3, .beta = 1.0, .seed = 1,
                  .data = "./data", .out = "./out"};
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
            continue;
        } else if (!strcmp(a, "--binarize")) {
            c->binarize = 1;
            continue;
        } else if (!strcmp(a, "--conv")) {
            c->conv = 1;
            continue;
        } else if (FLAG("--epochs")) {
            if (r < 0 || parse_size(a, v, &c->epochs))
                return EXIT_USAGE;
        } else if (FLAG("--batch")) {
            if (r < 0 || parse_size(a, v, &c->batch))
                return EXIT_USAGE;
        } else if (FLAG("--latent")) {
            if (r < 0 || parse_size(a, v, &c->latent))
                return EXIT_USAGE;
        } else if (FLAG("--hidden")) {
            if (r < 0 || parse_size_list(a, v, c->hidden, MAX_HIDDEN, &c->n_hidden))
                return EXIT_USAGE;
            c->hidden_given = 1;
        } else if (FLAG("--lr")) {
            if (r < 0 || parse_double(a, v, &c->lr))
                return EXIT_USAGE;
        } else if (FLAG("--beta")) {
            if (r < 0 || parse_double(a, v, &c->beta))
                return EXIT_USAGE;
        } else if (FLAG("--seed")) {
            if (r < 0 || parse_u64(a, v, &c->seed))
                return EXIT_USAGE;
        } else if (FLAG("--threads")) {
            if (r < 0 || parse_size(a, v, &c->threads))
                return EXIT_USAGE;
        } else if (FLAG("--train-limit")) {
            if (r < 0 || parse_size(a, v, &c->train_limit))
                return EXIT_USAGE;
        } else if (FLAG("--ll")) {
            if (r < 0 || parse_size(a, v, &c->ll_k))
                return EXIT_USAGE;
        } else if (FLAG("--ll-limit")) {
            if (r < 0 || parse_size(a, v, &c->ll_limit))
                return EXIT_USAGE;
        } else if (FLAG("--data")) {
            if (r < 0)
                return EXIT_USAGE;
            c->data = v;
        } else if (FLAG("--out")) {
            if (r < 0)
                return EXIT_USAGE;
            c->out = v;
        } else if (FLAG("--model")) {
            if (r < 0)
                return EXIT_USAGE;
            c->model = v;
        } else {
            fprintf(stderr, "error: unknown argument '%s' (see --help)\n", a);
            return EXIT_USAGE;
        }
#undef FLAG
    }
    if (c->epochs == 0 && !strcmp(c->mode, "train"))
        fprintf(stderr, "note: --epochs 0 saves and draws the untrained model\n");
    if (c->batch == 0 || c->latent == 0) {
        fprintf(stderr, "error: --batch and --latent must be positive\n");
        return EXIT_USAGE;
    }
    if (!(c->lr > 0.0) || c->beta < 0.0) {
        fprintf(stderr, "error: --lr must be positive and --beta non-negative\n");
        return EXIT_USAGE;
    }
    if (c->conv && c->hidden_given) {
        fprintf(stderr, "error: --hidden sets the MLP's layers; the --conv architecture is "
                        "fixed (see --help)\n");
        return EXIT_USAGE;
    }
    if (c->conv && strcmp(c->mode, "train"))
        fprintf(stderr, "note: --conv only matters for train; %s uses the architecture stored "
                        "in the model file\n", c->mode);
    if (c->threads > 64) {
        fprintf(stderr, "error: --threads %zu: at most 64 are possible\n", c->threads);
        return EXIT_USAGE;
    }
    if (!c->model)
        c->model = join_path(c->out, "model.vae");
    return 0;
}

/* "MLP 784-400-20", or the shapes of the convolutional encoder for h x w
 * images. */
static void describe_arch(char *buf, size_t cap, size_t in, size_t h, size_t w, const config *c)
{
    if (c->conv) {
        snprintf(buf, cap, "conv 1x%zux%zu-32x%zux%zu-64x%zux%zu-256-%zu (decoder mirrored, "
                           "transposed convs)",
                 h, w, h / 2, w / 2, h / 4, w / 4, c->latent);
        return;
    }
    int n = snprintf(buf, cap, "MLP %zu", in);
    for (size_t k = 0; k < c->n_hidden && n > 0 && (size_t)n < cap; k++)
        n += snprintf(buf + n, cap - (size_t)n, "-%zu", c->hidden[k]);
    if (n > 0 && (size_t)n < cap)
        snprintf(buf + n, cap - (size_t)n, "-%zu", c->latent);
}

/* Mean importance-sampled -log p(x) over the first `limit` test images,
 * next to the -ELBO of the same images. */
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
    char label[64];
    snprintf(label, sizeof label, "NLL, K=%zu", k);
    progress_begin(&bar, label);
    double t0 = wall_seconds(), sum_ll = 0.0, sum_elbo = 0.0;
    for (size_t first = 0; first < n; first += CHUNK) {
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
    printf("test NLL (importance sampling, K=%zu, %zu images): %.3f nats"
           "  (%s of the same images %.3f; %.1f s)\n",
           k, n, -sum_ll / (double)n,
           c->ae ? "reconstruction loss" : c->beta != 1.0 ? "recon + beta KL" : "-ELBO",
           sum_elbo / (double)n, wall_seconds() - t0);
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
static int build_conv_model(vae_model **out, size_t h, size_t w, size_t latent, uint64_t seed)
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
    CHECK(vae_model_create(&m, h * w, latent, VAE_LIKELIHOOD_BERNOULLI));
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

static int run_train(const config *c)
{
    int rc = VAE_OK;
    vae_dataset *train = NULL, *test = NULL;
    vae_model *m = NULL;
    vae_context *ctx = NULL;
    vae_elbo *e = NULL;
    vae_optimizer *opt = NULL;
    vae_trainer *t = NULL;
    vae_rng *eval_rng = NULL, *pic_rng = NULL;

    if ((rc = mnist_load(c->data, 1, &train)) || (rc = mnist_load(c->data, 0, &test)) ||
        (rc = dataset_take_first(&train, c->train_limit)))
        goto done;
    size_t dim = vae_dataset_dim(train);
    if (vae_dataset_dim(test) != dim) {
        fprintf(stderr, "error: training images have %zu pixels, test images %zu\n", dim,
                vae_dataset_dim(test));
        rc = -1;
        goto done;
    }
    if (make_dirs(c->out) != 0) {
        rc = -1;
        goto done;
    }

    size_t img_h = 1, img_w = dim;
    CHECK(vae_dataset_image_size(train, &img_h, &img_w));
    if (c->conv) {
        if (img_h * img_w != dim) {
            fprintf(stderr, "error: --conv needs one-channel images; the data has %zu values "
                            "per %zux%zu image\n", dim, img_h, img_w);
            rc = -1;
            goto done;
        }
        if ((rc = build_conv_model(&m, img_h, img_w, c->latent, c->seed)))
            goto done;
    } else {
        CHECK(vae_model_create_mlp(&m, dim, c->hidden, c->n_hidden, c->latent, VAE_ACT_RELU,
                                   VAE_LIKELIHOOD_BERNOULLI, c->seed));
    }
    size_t n_params = vae_model_param_count(m);
    CHECK(vae_context_create(&ctx));
    if ((rc = set_workers(ctx, c->threads)))
        goto done;
    CHECK(vae_elbo_create(&e));
    CHECK(vae_elbo_set_param(e, VAE_ELBO_BETA, c->beta));
    if (c->ae)
        CHECK(vae_elbo_set_param(e, VAE_ELBO_OBJECTIVE, VAE_OBJECTIVE_AUTOENCODER));
    CHECK(vae_optimizer_create(&opt, VAE_OPTIMIZER_ADAM)); /* betas 0.9, 0.999, eps 1e-8 */
    CHECK(vae_optimizer_set_param(opt, VAE_OPT_LR, c->lr));
    /* The trainer draws the shuffles, the binarization and the noise from its
     * own generator seeded with --seed; evaluation and pictures use separate
     * streams, so the same seed trains the same model whatever else is asked. */
    CHECK(vae_trainer_create(&t, m, e, opt, ctx, c->seed));
    CHECK(vae_trainer_reserve(t, c->batch));
    CHECK(vae_rng_create(&eval_rng, c->seed ^ 0x9E3779B97F4A7C15u));
    CHECK(vae_rng_create(&pic_rng, c->seed + 1));

    char arch[256];
    describe_arch(arch, sizeof arch, dim, img_h, img_w, c);
    printf("libvae %s: %s %s, %zu parameters, ReLU, Bernoulli, Adam lr %g, batch %zu, "
           "%zu epochs, beta %g, seed %llu%s, %zu worker%s\n",
           vae_version_string(), arch, c->ae ? "autoencoder" : "VAE", n_params, c->lr, c->batch,
           c->epochs, c->beta, (unsigned long long)c->seed,
           c->binarize ? ", dynamic binarization" : "", vae_context_threads(ctx),
           vae_context_threads(ctx) == 1 ? "" : "s");
    printf("data: %zu training images, %zu test images from %s\n", vae_dataset_count(train),
           vae_dataset_count(test), c->data);
    fflush(stdout);

    vae_train_options opts;
    CHECK(vae_train_options_init(&opts, sizeof opts));
    opts.batch_size = c->batch;
    opts.binarize = c->binarize;
    progress bar;
    opts.progress = progress_update;
    opts.payload = &bar;
    double total_train = 0.0;
    for (size_t ep = 1; ep <= c->epochs; ep++) {
        char label[64];
        snprintf(label, sizeof label, "epoch %zu/%zu", ep, c->epochs);
        progress_begin(&bar, label);
        vae_epoch_stats st = {.size = sizeof st};
        rc = vae_trainer_train_epoch(t, train, &opts, &st);
        progress_end(&bar);
        if (rc != VAE_OK) {
            report(rc, "vae_trainer_train_epoch");
            goto done;
        }
        vae_epoch_stats ev = {.size = sizeof ev};
        CHECK(vae_evaluate_dataset(ctx, m, e, test, eval_rng, NULL, &ev));
        total_train += st.seconds;
        printf("epoch %2zu/%zu  train loss %8.3f (recon %8.3f, kl %6.3f)  "
               "test loss %8.3f (recon %8.3f, kl %6.3f)  %.2f s/epoch (+%.2f s test)\n",
               ep, c->epochs, st.loss, st.recon, st.kl, ev.loss, ev.recon, ev.kl, st.seconds,
               ev.seconds);
        fflush(stdout);
    }
    if (c->epochs)
        printf("training: %.2f s in total, %.2f s per epoch\n", total_train,
               total_train / (double)c->epochs);

    CHECK(vae_model_save(m, c->model));
    pictures_note_written(c->model);
    if ((rc = picture_samples(ctx, m, pic_rng, c->out)) ||
        (rc = data_pictures(ctx, m, test, c->out)))
        goto done;
    if (c->latent == 2 && (rc = picture_manifold(ctx, m, c->out)))
        goto done;
    if (c->ll_k && (rc = report_nll(ctx, m, e, test, c->ll_k, c->ll_limit, eval_rng, c)))
        goto done;
done:
    pictures_print_written();
    vae_trainer_free(t); /* before the model, objective, optimizer and context it borrows */
    vae_rng_free(pic_rng);
    vae_rng_free(eval_rng);
    vae_optimizer_free(opt);
    vae_elbo_free(e);
    vae_context_free(ctx);
    vae_model_free(m);
    vae_dataset_free(test);
    vae_dataset_free(train);
    return rc;
}

static int run_saved(const config *c)
{
    int rc = VAE_OK;
    vae_model *m = NULL;
    vae_context *ctx = NULL;
    vae_dataset *test = NULL;
    vae_elbo *e = NULL;
    vae_rng *rng = NULL;
    int sample = !strcmp(c->mode, "sample");

    rc = vae_model_load(&m, c->model);
    if (rc != VAE_OK) {
        report(rc, "vae_model_load");
        fprintf(stderr, "(model file: %s; train one with `mnist_vae --out DIR`)\n", c->model);
        goto done;
    }
    printf("loaded %s: %zu inputs, %zu latent dimensions\n", c->model, vae_model_input_dim(m),
           vae_model_latent_dim(m));
    if (make_dirs(c->out) != 0) {
        rc = -1;
        goto done;
    }
    CHECK(vae_context_create(&ctx));
    if ((rc = set_workers(ctx, c->threads)))
        goto done;
    CHECK(vae_rng_create(&rng, c->seed));
    if (sample) {
        if ((rc = picture_samples(ctx, m, rng, c->out)))
            goto done;
    } else {
        if ((rc = mnist_load(c->data, 0, &test)) || (rc = check_dims(m, test)))
            goto done;
        CHECK(vae_elbo_create(&e));
        vae_epoch_stats ev = {.size = sizeof ev};
        CHECK(vae_evaluate_dataset(ctx, m, e, test, rng, NULL, &ev));
        printf("test loss %.3f (recon %.3f, kl %.3f) over %zu images\n", ev.loss, ev.recon,
               ev.kl, vae_dataset_count(test));
        if ((rc = data_pictures(ctx, m, test, c->out)))
            goto done;
        if (c->ll_k && (rc = report_nll(ctx, m, e, test, c->ll_k, c->ll_limit, rng, c)))
            goto done;
    }
    if (vae_model_latent_dim(m) == 2 && (rc = picture_manifold(ctx, m, c->out)))
        goto done;
done:
    pictures_print_written();
    vae_rng_free(rng);
    vae_elbo_free(e);
    vae_dataset_free(test);
    vae_context_free(ctx);
    vae_model_free(m);
    return rc;
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
    rc = !strcmp(c.mode, "train") ? run_train(&c) : run_saved(&c);
    return rc == VAE_OK ? 0 : 1;
}
