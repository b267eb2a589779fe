/*
 * vae_bench_conv: the convolutional VAE of examples/mnist_vae --conv.
 *
 *   OPENBLAS_NUM_THREADS=1 vae_bench_conv [--batch 128] [--reps 20] [--model-threads 1]
 *
 * Median (and minimum) over --reps repetitions after a warm-up of:
 *  (a) each convolution of the model run standalone (vae_layer_forward and
 *      vae_layer_backward with dx), at the model's geometry;
 *  (b) the model's training step: vae_elbo_forward_backward (Bernoulli) then
 *      vae_optimizer_step (Adam).
 * GFLOP/s counts the GEMM work only: a convolution's forward is
 * 2 B C_out (H_out W_out) (C_in k_h k_w) FLOPs (the same count for the
 * transposed one with input and output swapped), its backward twice that (dW
 * and dX; the first layer of the step skips dX). im2col/col2im copies and
 * the activations are the time beyond it.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vae/vae.h"

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

static void check(int rc, const char *what)
{
    if (rc != VAE_OK) {
        fprintf(stderr, "vae_bench_conv: %s failed: %s (%s)\n", what, vae_strerror(rc),
                vae_last_error());
        exit(1);
    }
}

static float *xmalloc_floats(size_t n)
{
    float *p = malloc(n * sizeof *p);
    if (!p) {
        fprintf(stderr, "vae_bench_conv: out of memory\n");
        exit(1);
    }
    return p;
}

/* The convolutions of mnist_vae --conv: kernel 4, stride 2, padding 1. */
static const struct {
    const char *name;
    int transpose;
    size_t in_c, in_hw, out_c;
} convs[] = {
    {"conv 1x28x28->32x14x14", 0, 1, 28, 32},
    {"conv 32x14x14->64x7x7", 0, 32, 14, 64},
    {"convT 64x7x7->32x14x14", 1, 64, 7, 32},
    {"convT 32x14x14->1x28x28", 1, 32, 14, 1},
};
#define N_CONV (sizeof convs / sizeof *convs)

static vae_layer *make_conv(size_t i)
{
    vae_layer *l = NULL;
    if (convs[i].transpose)
        check(vae_layer_conv2d_transpose_create(&l, convs[i].in_c, convs[i].in_hw,
                                                convs[i].in_hw, convs[i].out_c, 4, 4, 2, 1, 0,
                                                VAE_ACT_RELU),
              "vae_layer_conv2d_transpose_create");
    else
        check(vae_layer_conv2d_create(&l, convs[i].in_c, convs[i].in_hw, convs[i].in_hw,
                                      convs[i].out_c, 4, 4, 2, 1, VAE_ACT_RELU),
              "vae_layer_conv2d_create");
    return l;
}

/* GEMM FLOPs of one forward pass of convolution i at batch B. */
static double conv_flops(size_t i, size_t B)
{
    size_t small_hw = convs[i].transpose ? convs[i].in_hw : convs[i].in_hw / 2;
    size_t small_c = convs[i].transpose ? convs[i].in_c : convs[i].out_c;
    size_t big_c = convs[i].transpose ? convs[i].out_c : convs[i].in_c;
    return 2.0 * (double)B * (double)small_c * (double)(small_hw * small_hw) *
           (double)(big_c * 16);
}

int main(int argc, char **argv)
{
    size_t B = 128, threads = 1;
    int reps = 20;
    for (int i = 1; i < argc; i += 2) { /* flag, value */
        long v = i + 1 < argc ? strtol(argv[i + 1], NULL, 10) : 0;
        if (!strcmp(argv[i], "--batch") && v >= 1 && v <= 4096)
            B = (size_t)v;
        else if (!strcmp(argv[i], "--reps") && v >= 1 && v <= 100000)
            reps = (int)v;
        else if (!strcmp(argv[i], "--model-threads") && v >= 1 && v <= 64)
            threads = (size_t)v;
        else {
            fprintf(stderr, "usage: %s [--batch 1..4096] [--reps N] [--model-threads 1..64]\n",
                    argv[0]);
            return 2;
        }
    }
    const int warmup = 3;
    double *t = malloc((size_t)reps * sizeof *t), *t2 = malloc((size_t)reps * sizeof *t2);
    if (!t || !t2)
        return 1;
    const char *thr = getenv("OPENBLAS_NUM_THREADS");
    printf("libvae %s, conv VAE of mnist_vae --conv, batch %zu, %d reps after %d warm-up, "
           "OPENBLAS_NUM_THREADS=%s, model threads %zu\n",
           vae_version_string(), B, reps, warmup, thr ? thr : "(unset)", threads);
    vae_rng *rng = NULL;
    check(vae_rng_create(&rng, 42), "vae_rng_create");

    printf("\n(a) standalone convolutions, forward and backward (dW and dX)\n");
    printf("%-30s %9s %9s %9s\n", "pass", "ms", "min ms", "GFLOP/s");
    double f_step = 0.0;
    for (size_t i = 0; i < N_CONV; i++) {
        vae_layer *l = make_conv(i);
        check(vae_layer_init(l, rng), "vae_layer_init");
        size_t in = vae_layer_input_size(l), out = vae_layer_output_size(l);
        float *x = xmalloc_floats(B * in), *y = xmalloc_floats(B * out);
        float *dy = xmalloc_floats(B * out), *dx = xmalloc_floats(B * in);
        check(vae_rng_normal(rng, x, B * in), "vae_rng_normal");
        check(vae_rng_normal(rng, dy, B * out), "vae_rng_normal");
        for (int r = -warmup; r < reps; r++) {
            double t0 = now_ms();
            check(vae_layer_forward(l, x, B, y), "vae_layer_forward");
            double t1 = now_ms();
            check(vae_layer_backward(l, dy, dx), "vae_layer_backward");
            double t2v = now_ms();
            if (r >= 0) {
                t[r] = t1 - t0;
                t2[r] = t2v - t1;
            }
        }
        double f = conv_flops(i, B);
        f_step += f * (i == 0 ? 2.0 : 3.0);
        qsort(t, (size_t)reps, sizeof *t, cmp_double);
        qsort(t2, (size_t)reps, sizeof *t2, cmp_double);
        char name[64];
        snprintf(name, sizeof name, "%s fwd", convs[i].name);
        printf("%-30s %9.3f %9.3f %9.1f\n", name, t[reps / 2], t[0], f / (t[reps / 2] * 1e6));
        snprintf(name, sizeof name, "%s bwd", convs[i].name);
        printf("%-30s %9.3f %9.3f %9.1f\n", name, t2[reps / 2], t2[0],
               2.0 * f / (t2[reps / 2] * 1e6));
        free(x);
        free(y);
        free(dy);
        free(dx);
        vae_layer_free(l);
    }
    /* the three dense layers: 3136->256, head 256->40, 20->256, 256->3136 */
    const size_t dense[4][2] = {{3136, 256}, {256, 40}, {20, 256}, {256, 3136}};
    for (size_t i = 0; i < 4; i++)
        f_step += 3.0 * 2.0 * (double)B * (double)(dense[i][0] * dense[i][1]);

    /* (b) the training step, built as mnist_vae --conv builds it. */
    vae_model *m = NULL;
    vae_layer *l = NULL;
    check(vae_model_create(&m, 784, 20, VAE_LIKELIHOOD_BERNOULLI), "vae_model_create");
    for (size_t i = 0; i < 2; i++) {
        l = make_conv(i);
        check(vae_model_add_encoder_layer(m, l), "vae_model_add_encoder_layer");
    }
    check(vae_layer_dense_create(&l, 3136, 256, VAE_ACT_RELU), "vae_layer_dense_create");
    check(vae_model_add_encoder_layer(m, l), "vae_model_add_encoder_layer");
    check(vae_layer_dense_create(&l, 20, 256, VAE_ACT_RELU), "vae_layer_dense_create");
    check(vae_model_add_decoder_layer(m, l), "vae_model_add_decoder_layer");
    check(vae_layer_dense_create(&l, 256, 3136, VAE_ACT_RELU), "vae_layer_dense_create");
    check(vae_model_add_decoder_layer(m, l), "vae_model_add_decoder_layer");
    l = make_conv(2);
    check(vae_model_add_decoder_layer(m, l), "vae_model_add_decoder_layer");
    check(vae_layer_conv2d_transpose_create(&l, 32, 14, 14, 1, 4, 4, 2, 1, 0,
                                            VAE_ACT_IDENTITY),
          "vae_layer_conv2d_transpose_create");
    check(vae_model_add_decoder_layer(m, l), "vae_model_add_decoder_layer");
    check(vae_model_build(m, 1), "vae_model_build");
    if (threads > 1)
        check(vae_model_set_threads(m, threads), "vae_model_set_threads");
    check(vae_model_reserve(m, B), "vae_model_reserve");
    vae_elbo *e = NULL;
    vae_optimizer *opt = NULL;
    check(vae_elbo_create(&e), "vae_elbo_create");
    check(vae_optimizer_adam_create(&opt, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f), "adam");
    float *data = xmalloc_floats(B * 784);
    check(vae_rng_uniform(rng, data, B * 784), "vae_rng_uniform");
    double loss = 0.0;
    for (int r = -warmup; r < reps; r++) {
        double t0 = now_ms();
        check(vae_elbo_forward_backward(e, m, data, B, NULL, rng, &loss, NULL, NULL),
              "vae_elbo_forward_backward");
        check(vae_optimizer_step(opt, m), "vae_optimizer_step");
        if (r >= 0)
            t[r] = now_ms() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    size_t n_params = 0;
    vae_model_params(m, &n_params);
    printf("\n(b) conv VAE training step (%zu parameters), %.1f MFLOP of GEMMs per step\n",
           n_params, f_step * 1e-6);
    printf("%-30s %9.3f %9.3f %9.1f\n", "training step", t[reps / 2], t[0],
           f_step / (t[reps / 2] * 1e6));
    printf("%.1f s per 60000-image epoch at this step time; loss %.2f after the last step\n",
           t[reps / 2] * 1e-3 * 60000.0 / (double)B, loss);
    free(data);
    vae_optimizer_free(opt);
    vae_elbo_free(e);
    vae_model_free(m);
    vae_rng_free(rng);
    free(t);
    free(t2);
    return 0;
}
