/*
 * The training step of vae_step_time (step_time.c) written against the 0.1
 * API, so that bench/compare_versions.sh can time 0.1 and this tree the
 * same way: one model and one worker count alone in a process. Built by
 * that script against a 0.1 build only.
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
        fprintf(stderr, "vae_step_time (0.1): %s: %s\n", what, vae_last_error());
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

static void add(vae_model *m, int enc, vae_layer *l)
{
    check(enc ? vae_model_add_encoder_layer(m, l) : vae_model_add_decoder_layer(m, l),
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
    const char *kind = argc > 1 ? argv[1] : "mlp";
    long workers = argc > 2 ? strtol(argv[2], NULL, 10) : 1, batch = 128;
    long reps = argc > 3 ? strtol(argv[3], NULL, 10) : 200;
    vae_model *m = NULL;
    if (!strcmp(kind, "conv"))
        m = conv_model();
    else {
        const size_t hidden[1] = {400};
        check(vae_model_create_mlp(&m, 784, hidden, 1, 20, VAE_ACT_RELU,
                                   VAE_LIKELIHOOD_BERNOULLI, 1),
              "vae_model_create_mlp");
    }
    vae_elbo *e = NULL;
    vae_optimizer *opt = NULL;
    vae_rng *rng = NULL;
    check(vae_model_set_threads(m, (size_t)workers), "vae_model_set_threads");
    check(vae_model_reserve(m, (size_t)batch), "vae_model_reserve");
    check(vae_elbo_create(&e), "vae_elbo_create");
    check(vae_optimizer_adam_create(&opt, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f), "adam");
    check(vae_rng_create(&rng, 3), "vae_rng_create");
    float *x = malloc((size_t)batch * 784 * sizeof *x);
    double *ms = malloc((size_t)reps * sizeof *ms);
    if (!x || !ms)
        return 1;
    check(vae_rng_uniform(rng, x, (size_t)batch * 784), "vae_rng_uniform");
    for (long i = 0; i < 10 + reps; i++) {
        double t0 = now_ms();
        check(vae_elbo_forward_backward(e, m, x, (size_t)batch, NULL, rng, NULL, NULL, NULL),
              "vae_elbo_forward_backward");
        check(vae_optimizer_step(opt, m), "vae_optimizer_step");
        if (i >= 10)
            ms[i - 10] = now_ms() - t0;
    }
    qsort(ms, (size_t)reps, sizeof *ms, cmp_double);
    printf("%s batch %ld, %ld worker%s: step %.3f ms median, %.3f min\n", kind, batch, workers,
           workers == 1 ? "" : "s", ms[reps / 2], ms[0]);
    return 0;
}
