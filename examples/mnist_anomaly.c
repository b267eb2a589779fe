/*
 * mnist_anomaly: anomaly detection with a VAE. Trains on every MNIST
 * training digit except one held-out class, scores each test image by its
 * -ELBO, and measures how well that score flags the held-out digit (AUROC).
 * `mnist_anomaly --help` lists every option.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vae/vae.h>

#include "image.h"
#include "mnist_common.h"
#include "mnist_pictures.h"

enum { EXIT_USAGE = 2, SHOW = 32 };

typedef struct config {
    size_t holdout, epochs, batch, latent, threads, train_limit;
    double lr;
    uint64_t seed;
    const char *data, *out, *scores;
} config;

static void usage(FILE *f)
{
    fprintf(f,
"Usage: mnist_anomaly [OPTIONS]\n"
"\n"
"Trains a 784-400-20 VAE (ReLU, Bernoulli, Adam) on the MNIST training images\n"
"of every digit except the held-out one, then scores each of the 10000 test\n"
"images by its -ELBO (one draw of z per image; higher = less like the training\n"
"data). Prints the mean score per digit and the AUROC of the score for\n"
"telling the held-out digit from the others (0.5 = chance, 1 = perfect), and\n"
"writes OUT/anomaly.png: the 32 highest-scoring test images above the 32\n"
"lowest-scoring ones, held-out digits framed in red.\n"
"\n"
"Options:\n"
"  --holdout D       digit left out of training, 0-9 (default 9)\n"
"  --epochs N        passes over the training set (default 5)\n"
"  --batch N         minibatch size (default 128)\n"
"  --latent N        latent dimensions (default 20)\n"
"  --lr X            Adam learning rate (default 1e-3)\n"
"  --seed S          seed of weights, shuffling and noise (default 1)\n"
"  --threads N       N workers share every batch, the BLAS set to one thread\n"
"                    (as in mnist_vae --help; default 0: one worker)\n"
"  --train-limit N   use only the first N training images, before removing\n"
"                    the held-out digit (0 = all)\n"
"  --data DIR        the MNIST IDX files (default ./data);\n"
"                    examples/fetch_mnist.sh DIR gets them\n"
"  --out DIR         output directory, created when missing (default ./out)\n"
"  --scores FILE     also write 'index,label,score' for every test image\n"
"  -h, --help        this text\n"
"\n"
"Exit status: 0 on success, 1 when a library call or a file fails, 2 on a\n"
"bad command line.\n");
}

static int parse_args(int argc, char **argv, config *c)
{
    *c = (config){.holdout = 9, .epochs = 5, .batch = 128, .latent = 20, .lr = 1e-3,
                  .seed = 1, .data = "./data", .out = "./out"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int r;
#define FLAG(name) ((r = flag_value(argc, argv, &i, name, &v)) != 0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else if (FLAG("--holdout")) {
            if (r < 0 || parse_size(a, v, &c->holdout))
                return EXIT_USAGE;
        } else if (FLAG("--epochs")) {
            if (r < 0 || parse_size(a, v, &c->epochs))
                return EXIT_USAGE;
        } else if (FLAG("--batch")) {
            if (r < 0 || parse_size(a, v, &c->batch))
                return EXIT_USAGE;
        } else if (FLAG("--latent")) {
            if (r < 0 || parse_size(a, v, &c->latent))
                return EXIT_USAGE;
        } else if (FLAG("--lr")) {
            if (r < 0 || parse_double(a, v, &c->lr))
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
        } else if (FLAG("--data")) {
            if (r < 0)
                return EXIT_USAGE;
            c->data = v;
        } else if (FLAG("--out")) {
            if (r < 0)
                return EXIT_USAGE;
            c->out = v;
        } else if (FLAG("--scores")) {
            if (r < 0)
                return EXIT_USAGE;
            c->scores = v;
        } else {
            fprintf(stderr, "error: unknown argument '%s' (see --help)\n", a);
            return EXIT_USAGE;
        }
#undef FLAG
    }
    if (c->holdout > 9) {
        fprintf(stderr, "error: --holdout must be a digit 0-9\n");
        return EXIT_USAGE;
    }
    if (c->batch == 0 || c->latent == 0 || !(c->lr > 0.0) || c->threads > 64) {
        fprintf(stderr, "error: --batch, --latent, --lr must be positive, --threads sensible\n");
        return EXIT_USAGE;
    }
    return 0;
}

typedef struct scored {
    double score;
    size_t index;
} scored;

static int by_score(const void *a, const void *b)
{
    const scored *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index); /* stable order for ties */
}

/*
 * Area under the ROC curve of `score` for separating positive[i] != 0 from
 * the rest, via the Mann-Whitney statistic: rank the scores (ties share
 * their average rank), then AUROC = (R+ - P(P+1)/2) / (P N), with R+ the sum
 * of the positives' ranks. `order` gets the indices sorted by ascending
 * score. Returns -1 when either class is empty.
 */
static double auroc(const double *score, const int *positive, size_t n, scored *order)
{
    for (size_t i = 0; i < n; i++)
        order[i] = (scored){score[i], i};
    qsort(order, n, sizeof *order, by_score);
    double rank_sum = 0.0, pos = 0.0;
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && order[j].score == order[i].score)
            j++;
        double avg_rank = 0.5 * ((double)(i + 1) + (double)j); /* ranks i+1..j */
        for (size_t k = i; k < j; k++)
            if (positive[order[k].index]) {
                rank_sum += avg_rank;
                pos += 1.0;
            }
        i = j;
    }
    double neg = (double)n - pos;
    if (pos == 0.0 || neg == 0.0)
        return -1.0;
    return (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg);
}

/* One labeled block: a title then `count` images in 2 rows of 16, the
 * held-out digit framed in red. Returns the block's height. */
static int draw_block(image *im, int x, int y, const char *title, const vae_dataset *test,
                      const scored *items, size_t count, int32_t holdout, float *buf,
                      int *status)
{
    enum { COLS = 16, SCALE = 2, PAD = 6, FRAME = 2 };
    const rgb red = {230, 40, 40};
    size_t d = vae_dataset_dim(test);
    int ph, pw;
    picture_shape(d, &ph, &pw);
    int h = picture_title(im, x, y, title) + 10;
    for (size_t i = 0; i < count; i++) {
        int rc = vae_dataset_range(test, items[i].index, 1, buf);
        int32_t label = -1;
        if (rc == VAE_OK)
            rc = vae_dataset_label(test, items[i].index, &label);
        if (rc != VAE_OK) {
            *status = report(rc, "reading a test image");
            return h;
        }
        int px = x + FRAME + (int)(i % COLS) * (pw * SCALE + PAD);
        int py = y + h + FRAME + (int)(i / COLS) * (ph * SCALE + PAD);
        if (label == holdout)
            image_frame(im, px - FRAME, py - FRAME, pw * SCALE + 2 * FRAME,
                        ph * SCALE + 2 * FRAME, FRAME, red);
        image_put_gray(im, px, py, buf, ph, pw, SCALE);
    }
    int rows = (int)((count + COLS - 1) / COLS);
    return h + rows * (ph * SCALE + PAD);
}

static int write_picture(const config *c, const vae_dataset *test, const scored *order, size_t n)
{
    enum { COLS = 16, SCALE = 2, PAD = 6, MARGIN = 12 };
    int ph, pw, rc = VAE_OK;
    size_t d = vae_dataset_dim(test);
    picture_shape(d, &ph, &pw);
    size_t k = n < SHOW ? n : SHOW;
    scored top[SHOW], bottom[SHOW];
    for (size_t i = 0; i < k; i++) {
        top[i] = order[n - 1 - i]; /* highest score first */
        bottom[i] = order[i];      /* lowest score first */
    }
    /* Matches draw_block(): title, 10 px, then the rows of images. */
    int rows = (int)((k + COLS - 1) / COLS);
    int block_h = image_text_height(2) + 10 + rows * (ph * SCALE + PAD);
    int width = 2 * MARGIN + COLS * (pw * SCALE + PAD);
    int height = MARGIN + block_h + MARGIN + block_h + 4 + image_text_height(2) + MARGIN;
    image im;
    float *buf = malloc(d * sizeof *buf); /* one image */
    if (!buf || image_create(&im, width, height, PIC_BACKGROUND) != 0) {
        free(buf);
        fprintf(stderr, "error: out of memory while drawing\n");
        return -1;
    }
    char title[96];
    int y = MARGIN;
    snprintf(title, sizeof title, "%zu most anomalous test images (highest -ELBO)", k);
    y += draw_block(&im, MARGIN, y, title, test, top, k, (int32_t)c->holdout, buf, &rc) + MARGIN;
    snprintf(title, sizeof title, "%zu least anomalous test images (lowest -ELBO)", k);
    if (rc == VAE_OK)
        y += draw_block(&im, MARGIN, y, title, test, bottom, k, (int32_t)c->holdout, buf, &rc);
    snprintf(title, sizeof title, "red frame: held-out digit %zu", c->holdout);
    image_text(&im, MARGIN, y + 4, title, 2, (rgb){230, 40, 40});
    if (rc == VAE_OK)
        rc = pictures_save(&im, c->out, "anomaly.png");
    image_free(&im);
    free(buf);
    return rc;
}

static int write_scores(const char *path, const double *score, const vae_dataset *test)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "error: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(f, "index,label,score\n");
    for (size_t i = 0; i < vae_dataset_count(test); i++) {
        int32_t label = -1;
        vae_dataset_label(test, i, &label);
        fprintf(f, "%zu,%d,%.6f\n", i, (int)label, score[i]);
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "error: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    pictures_note_written(path);
    return 0;
}

int main(int argc, char **argv)
{
    config c;
    int rc = parse_args(argc, argv, &c);
    if (rc)
        return rc;

    vae_dataset *all = NULL, *train = NULL, *test = NULL;
    vae_model *m = NULL;
    vae_context *ctx = NULL;
    vae_elbo *e = NULL;
    vae_optimizer *opt = NULL;
    vae_trainer *t = NULL;
    vae_rng *eval_rng = NULL;
    double *score = NULL;
    int *positive = NULL;
    scored *order = NULL;

    if ((rc = mnist_load(c.data, 1, &all)) || (rc = mnist_load(c.data, 0, &test)) ||
        (rc = dataset_take_first(&all, c.train_limit)))
        goto done;
    CHECK(vae_dataset_filter_label(&train, all, (int32_t)c.holdout, 0));
    vae_dataset_free(all);
    all = NULL;
    if (make_dirs(c.out) != 0) {
        rc = -1;
        goto done;
    }
    size_t dim = vae_dataset_dim(train), n = vae_dataset_count(test);
    size_t hidden[1] = {400};
    CHECK(vae_model_create_mlp(&m, dim, hidden, 1, c.latent, VAE_ACT_RELU,
                               VAE_LIKELIHOOD_BERNOULLI, c.seed));
    CHECK(vae_context_create(&ctx));
    if ((rc = set_workers(ctx, c.threads)))
        goto done;
    CHECK(vae_elbo_create(&e));
    CHECK(vae_optimizer_create(&opt, VAE_OPTIMIZER_ADAM));
    CHECK(vae_optimizer_set_param(opt, VAE_OPT_LR, c.lr));
    /* Shuffles and noise of training come from the trainer's own generator. */
    CHECK(vae_trainer_create(&t, m, e, opt, ctx, c.seed));
    CHECK(vae_trainer_reserve(t, c.batch));
    CHECK(vae_rng_create(&eval_rng, c.seed ^ 0x9E3779B97F4A7C15u));

    printf("libvae %s: %zu-400-%zu VAE, trained on %zu images without digit %zu, "
           "%zu epoch%s, seed %llu\n",
           vae_version_string(), dim, c.latent, vae_dataset_count(train), c.holdout, c.epochs,
           c.epochs == 1 ? "" : "s", (unsigned long long)c.seed);
    fflush(stdout);

    vae_train_options opts;
    CHECK(vae_train_options_init(&opts, sizeof opts));
    opts.batch_size = c.batch;
    progress bar;
    opts.progress = progress_update;
    opts.payload = &bar;
    for (size_t ep = 1; ep <= c.epochs; ep++) {
        char label[64];
        snprintf(label, sizeof label, "epoch %zu/%zu", ep, c.epochs);
        progress_begin(&bar, label);
        vae_epoch_stats st = {.size = sizeof st};
        rc = vae_trainer_train_epoch(t, train, &opts, &st);
        progress_end(&bar);
        if (rc != VAE_OK) {
            report(rc, "vae_trainer_train_epoch");
            goto done;
        }
        printf("epoch %2zu/%zu  train loss %8.3f (recon %8.3f, KL %6.3f) nats per image  "
               "%.2f s\n",
               ep,
               c.epochs, st.loss, st.recon, st.kl, st.seconds);
        fflush(stdout);
    }

    score = malloc(n * sizeof *score);
    positive = malloc(n * sizeof *positive);
    order = malloc(n * sizeof *order);
    if (!score || !positive || !order) {
        fprintf(stderr, "error: out of memory\n");
        rc = -1;
        goto done;
    }
    vae_epoch_stats ev = {.size = sizeof ev};
    CHECK(vae_evaluate_dataset(ctx, m, e, test, eval_rng, score, &ev));
    double test_loss = ev.loss;
    double sum[10] = {0}, cnt[10] = {0};
    for (size_t i = 0; i < n; i++) {
        int32_t label = -1;
        CHECK(vae_dataset_label(test, i, &label));
        positive[i] = label == (int32_t)c.holdout;
        if (label >= 0 && label < 10) {
            sum[label] += score[i];
            cnt[label] += 1.0;
        }
    }
    printf("test -ELBO over all %zu images: %.3f nats per image\n"
           "mean -ELBO per test digit (nats):\n",
           n, test_loss);
    for (int k = 0; k < 10; k++)
        if (cnt[k] > 0)
            printf("  %d: %8.3f  (%4.0f images)%s\n", k, sum[k] / cnt[k], cnt[k],
                   k == (int)c.holdout ? "  <- held out" : "");
    double auc = auroc(score, positive, n, order);
    if (auc < 0.0)
        printf("AUROC: undefined (the test set lacks the held-out digit or the others)\n");
    else
        printf("AUROC of -ELBO for flagging digit %zu among all %zu test images: %.4f\n",
               c.holdout, n, auc);
    size_t flagged = 0;
    for (size_t i = 0; i < SHOW && i < n; i++)
        flagged += (size_t)positive[order[n - 1 - i].index];
    printf("held-out digits among the %d highest scores: %zu\n", SHOW, flagged);

    if (c.scores && write_scores(c.scores, score, test) != 0) {
        rc = -1;
        goto done;
    }
    rc = write_picture(&c, test, order, n);
done:
    pictures_print_written();
    free(order);
    free(positive);
    free(score);
    vae_trainer_free(t);
    vae_rng_free(eval_rng);
    vae_optimizer_free(opt);
    vae_elbo_free(e);
    vae_context_free(ctx);
    vae_model_free(m);
    vae_dataset_free(test);
    vae_dataset_free(train);
    vae_dataset_free(all);
    return rc == VAE_OK ? 0 : 1;
}
