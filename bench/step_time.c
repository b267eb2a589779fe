/*
 * vae_step_time: the training step of one model with one worker count, alone
 * in its process, so that a comparison with another build or another
 * configuration is not disturbed by a second model sharing the caches.
 *
 *   vae_step_time [--model mlp|conv] [--workers N] [--batch B] [--reps R]
 *
 * The models are vae_bench's (784-400-20 MLP) and vae_bench_conv's (the conv
 * VAE of mnist_vae --conv), Adam, Bernoulli, synthetic data in [0, 1].
 * Prints the median and minimum ms of R steps after 10 warm-up steps. With
 * more than one worker the BLAS is set to one thread; with one it is left as
 * OPENBLAS_NUM_THREADS sets it.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vae/vae.h"

static void check(int rc, const char *what)
{
    if (rc) {
        fprintf(stderr, "vae_step_time: %s: %s\n", what, vae_last_error());
        exit(1);
    }
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Adds a layer to the encoder (enc) or decoder; the add takes it. */
static void add(vae_model *m, int enc, vae_layer *l)
{
    check(enc ? vae_model_add_encoder_layer(m, &l) : vae_model_add_decoder_layer(m, &l),
          "add layer");
}

static vae_model *conv_model(void)
{
    vae_model *m = NULL;
    vae_layer *l = NULL;
    check(vae_model_create(&m, 784, 20, VAE_LIKELIHOOD_BERNOULLI), "vae_model_create");
    check(vae_layer_conv2d_create(&l, 1, 28, 28, 32, 4, 4, 2, 1, VAE_ACT_RELU), "conv");
    add(m, 1, l);
    check(vae_layer_conv2d_create(&l, 32, 14, 14, 64, 4, 4, 2, 1, VAE_ACT_RELU), "conv");
    add(m, 1, l);
    check(vae_layer_dense_create(&l, 3136, 256, VAE_ACT_RELU), "dense");
    add(m, 1, l);
    check(vae_layer_dense_create(&l, 20, 256, VAE_ACT_RELU), "dense");
    add(m, 0, l);
    check(vae_layer_dense_create(&l, 256, 3136, VAE_ACT_RELU), "dense");
    add(m, 0, l);
    check(vae_layer_conv2d_transpose_create(&l, 64, 7, 7, 32, 4, 4, 2, 1, 0, VAE_ACT_RELU),
          "convT");
    add(m, 0, l);
    check(vae_layer_conv2d_transpose_create(&l, 32, 14, 14, 1, 4, 4, 2, 1, 0, VAE_ACT_IDENTITY),
          "convT");
    add(m, 0, l);
    check(vae_model_build(m, 1), "vae_model_build");
    return m;
}

int main(int argc, char **argv)
{
    const char *kind = "mlp";
    long workers = 1, batch = 128, reps = 200;
    for (int i = 1; i + 1 < argc || i < argc; i += 2) {
        const char *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(argv[i], "--model") && (!strcmp(v, "mlp") || !strcmp(v, "conv")))
            kind = v;
        else if (!strcmp(argv[i], "--workers") && (workers = strtol(v, NULL, 10)) >= 1 &&
                 workers <= 64)
            ;
        else if (!strcmp(argv[i], "--batch") && (batch = strtol(v, NULL, 10)) >= 1 &&
                 batch <= 4096)
            ;
        else if (!strcmp(argv[i], "--reps") && (reps = strtol(v, NULL, 10)) >= 1 &&
                 reps <= 100000)
            ;
        else {
            fprintf(stderr, "usage: %s [--model mlp|conv] [--workers 1..64] [--batch 1..4096] "
                            "[--reps N]\n", argv[0]);
            return 2;
        }
    }
    vae_model *m = NULL;
    if (!strcmp(kind, "conv"))
        m = conv_model();
    else {
        const size_t hidden[1] = {400};
        check(vae_model_create_mlp(&m, 784, hidden, 1, 20, VAE_ACT_RELU,
                                   VAE_LIKELIHOOD_BERNOULLI, 1),
              "vae_model_create_mlp");
    }
    vae_context *ctx = NULL;
    vae_elbo *e = NULL;
    vae_optimizer *opt = NULL;
    vae_trainer *t = NULL;
    vae_rng *rng = NULL;
    check(vae_context_create(&ctx), "vae_context_create");
    if (workers > 1) {
        check(vae_blas_set_threads(1), "vae_blas_set_threads");
        check(vae_context_set_threads(ctx, (size_t)workers), "vae_context_set_threads");
    }
    check(vae_elbo_create(&e), "vae_elbo_create");
    check(vae_optimizer_create(&opt, VAE_OPTIMIZER_ADAM), "vae_optimizer_create");
    check(vae_trainer_create(&t, m, e, opt, ctx, 7), "vae_trainer_create");
    check(vae_trainer_reserve(t, (size_t)batch), "vae_trainer_reserve");
    float *x = malloc((size_t)batch * 784 * sizeof *x);
    double *ms = malloc((size_t)reps * sizeof *ms);
    if (!x || !ms)
        return 1;
    check(vae_rng_create(&rng, 3), "vae_rng_create");
    check(vae_rng_uniform(rng, x, (size_t)batch * 784), "vae_rng_uniform");
    for (int i = 0; i < 10; i++)
        check(vae_trainer_step(t, x, (size_t)batch, NULL), "vae_trainer_step");
    for (long i = 0; i < reps; i++) {
        double t0 = now_ms();
        check(vae_trainer_step(t, x, (size_t)batch, NULL), "vae_trainer_step");
        ms[i] = now_ms() - t0;
    }
    qsort(ms, (size_t)reps, sizeof *ms, cmp_double);
    printf("%s batch %ld, %ld worker%s, BLAS threads %zu: step %.3f ms median, %.3f min\n",
           kind, batch, workers, workers == 1 ? "" : "s", vae_blas_threads(), ms[reps / 2],
           ms[0]);
    free(x);
    free(ms);
    vae_trainer_free(t);
    vae_optimizer_free(opt);
    vae_elbo_free(e);
    vae_context_free(ctx);
    vae_model_free(m);
    vae_rng_free(rng);
    return 0;
}
