/*
 * vae_bench: where the time of one training step of the 784-400-20 VAE goes.
 *
 *   OPENBLAS_NUM_THREADS=1 vae_bench [--batch 128] [--reps 200] [--model-threads 1]
 *
 * Three groups of rows, each the median (and minimum) over --reps timed
 * repetitions after a warm-up:
 *  (a) each dense layer of the model run standalone through
 *      vae_layer_forward/vae_layer_backward. A standalone layer copies x and
 *      y (forward) and dy (backward) into its own cache, which a layer inside
 *      a model does not, so these rows carry a little copy time on top of the
 *      model's own layer cost.
 *  (b) the whole training step: vae_elbo_forward_backward (Bernoulli, eps
 *      drawn from the generator) then vae_optimizer_step (Adam), also split
 *      into its two calls. --model-threads n > 1 splits each batch over n
 *      workers (vae_model_set_threads); pair it with OPENBLAS_NUM_THREADS=1.
 *  (c) the 11 bare cblas_sgemm calls of that step, with the same shapes,
 *      transpose flags and leading dimensions as lib/nn/dense.c: forward and
 *      dW for every layer, dX for all but the first. Their sum is the limit
 *      the library can reach with this BLAS on one GEMM stream. The whole
 *      set of 11 is timed alternately with the training step of (b), in the
 *      same loop, so that machine noise affects both alike.
 * GFLOP/s counts only GEMM work (2 B in out per GEMM; docs/math.md, "FLOP
 * count of a training step"). "x GEMM" is the row's time over the time of
 * its own bare GEMMs. OpenBLAS threads come from OPENBLAS_NUM_THREADS.
 */
#define _POSIX_C_SOURCE 200809L

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "vae/vae.h"

#define N_LAYERS 4
#define N_DATA_BATCHES 8

/* The dense layers of vae_model_create_mlp(784, {400}, 1, 20, ...) in slab
 * order: encoder, head [mu | logvar], decoder. */
static const struct {
    const char *name;
    size_t in, out;
    int act;
} layers[N_LAYERS] = {
    {"enc 784->400 relu", 784, 400, VAE_ACT_RELU},
    {"head 400->40", 400, 40, VAE_ACT_IDENTITY},
    {"dec 20->400 relu", 20, 400, VAE_ACT_RELU},
    {"dec 400->784", 400, 784, VAE_ACT_IDENTITY},
};

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

typedef struct {
    double median, min;
} timing;

static timing summarize(double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    timing r = {n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]), t[0]};
    return r;
}

static void check(int rc, const char *what)
{
    if (rc != VAE_OK) {
        fprintf(stderr, "vae_bench: %s failed: %s (%s)\n", what, vae_strerror(rc),
                vae_last_error());
        exit(1);
    }
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p) {
        fprintf(stderr, "vae_bench: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

/* n floats uniform in [-a, a). */
static float *random_floats(vae_rng *rng, size_t n, float a)
{
    float *p = xmalloc(n * sizeof *p);
    check(vae_rng_uniform(rng, p, n), "vae_rng_uniform");
    for (size_t i = 0; i < n; i++)
        p[i] = a * (2.0f * p[i] - 1.0f);
    return p;
}

static void print_header(void)
{
    printf("%-28s %9s %9s %9s %8s\n", "pass", "ms", "min ms", "GFLOP/s", "x GEMM");
    printf("%-28s %9s %9s %9s %8s\n", "----", "--", "------", "-------", "------");
}

static void print_row(const char *name, timing t, double flops, double gemm_ms)
{
    printf("%-28s %9.4f %9.4f %9.1f", name, t.median, t.min, flops / (t.median * 1e6));
    if (gemm_ms > 0.0)
        printf(" %8.2f", t.median / gemm_ms);
    printf("\n");
}

/* ---- (c) bare GEMMs --------------------------------------------------- */

/* Buffers of one layer for the bare GEMMs, shapes as in the model. */
typedef struct {
    float *x;   /* [B][in]   input */
    float *w;   /* [out][in] weights */
    float *y;   /* [B][out]  forward output */
    float *dz;  /* [B][out]  gradient at the pre-activation */
    float *dw;  /* [out][in] weight gradient (accumulated, beta 1) */
    float *dx;  /* [B][in]   input gradient */
} gemm_bufs;

static void gemm_forward(const gemm_bufs *g, size_t B, size_t in, size_t out)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)B, (int)out, (int)in, 1.0f, g->x,
                (int)in, g->w, (int)in, 0.0f, g->y, (int)out);
}

static void gemm_dw(const gemm_bufs *g, size_t B, size_t in, size_t out)
{
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)out, (int)in, (int)B, 1.0f, g->dz,
                (int)out, g->x, (int)in, 1.0f, g->dw, (int)in);
}

static void gemm_dx(const gemm_bufs *g, size_t B, size_t in, size_t out)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)B, (int)in, (int)out, 1.0f, g->dz,
                (int)out, g->w, (int)in, 0.0f, g->dx, (int)in);
}

/* The 11 GEMMs in the order a training step issues them. */
static void gemm_step(gemm_bufs *g, size_t B)
{
    for (int l = 0; l < N_LAYERS; l++)
        gemm_forward(&g[l], B, layers[l].in, layers[l].out);
    for (int l = N_LAYERS - 1; l >= 0; l--) {
        gemm_dw(&g[l], B, layers[l].in, layers[l].out);
        if (l > 0)
            gemm_dx(&g[l], B, layers[l].in, layers[l].out);
    }
}

int main(int argc, char **argv)
{
    size_t B = 128;
    int reps = 200;
    size_t model_threads = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--batch") && i + 1 < argc) {
            long v = strtol(argv[++i], NULL, 10);
            if (v < 1 || v > 65536) {
                fprintf(stderr, "vae_bench: --batch must be in 1..65536\n");
                return 2;
            }
            B = (size_t)v;
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            long v = strtol(argv[++i], NULL, 10);
            if (v < 1 || v > 1000000) {
                fprintf(stderr, "vae_bench: --reps must be in 1..1000000\n");
                return 2;
            }
            reps = (int)v;
        } else if (!strcmp(argv[i], "--model-threads") && i + 1 < argc) {
            long v = strtol(argv[++i], NULL, 10);
            if (v < 1 || v > 64) {
                fprintf(stderr, "vae_bench: --model-threads must be in 1..64\n");
                return 2;
            }
            model_threads = (size_t)v;
        } else {
            fprintf(stderr, "usage: %s [--batch N] [--reps N] [--model-threads N]\n"
                            "OpenBLAS threads: set OPENBLAS_NUM_THREADS.\n",
                    argv[0]);
            return 2;
        }
    }
    const int warmup = reps / 10 > 5 ? reps / 10 : 5;
    double *t = xmalloc((size_t)reps * sizeof *t);
    double *t2 = xmalloc((size_t)reps * sizeof *t2);
    double *t3 = xmalloc((size_t)reps * sizeof *t3);
    const char *thr = getenv("OPENBLAS_NUM_THREADS");

    printf("libvae %s, 784-400-20 VAE, batch %zu, %d reps after %d warm-up, "
           "OPENBLAS_NUM_THREADS=%s, model threads %zu\n",
           vae_version_string(), B, reps, warmup, thr ? thr : "(unset)", model_threads);

    vae_rng *rng = NULL;
    check(vae_rng_create(&rng, 42), "vae_rng_create");

    /* FLOPs of each GEMM kind per layer, and of the whole step. */
    double f_layer[N_LAYERS], f_step = 0.0;
    for (int l = 0; l < N_LAYERS; l++) {
        f_layer[l] = 2.0 * (double)B * (double)layers[l].in * (double)layers[l].out;
        f_step += f_layer[l] * (l == 0 ? 2.0 : 3.0);
    }

    /* ---- (c) first: the bare GEMMs give the reference for the others. */
    gemm_bufs g[N_LAYERS];
    for (int l = 0; l < N_LAYERS; l++) {
        size_t in = layers[l].in, out = layers[l].out;
        g[l].x = random_floats(rng, B * in, 1.0f);
        g[l].w = random_floats(rng, out * in, 0.05f);
        g[l].y = random_floats(rng, B * out, 0.0f);
        g[l].dz = random_floats(rng, B * out, 0.01f);
        g[l].dw = random_floats(rng, out * in, 0.0f);
        g[l].dx = random_floats(rng, B * in, 0.0f);
    }
    timing g_fwd[N_LAYERS], g_dw[N_LAYERS], g_dx[N_LAYERS];
    for (int l = 0; l < N_LAYERS; l++) {
        size_t in = layers[l].in, out = layers[l].out;
        for (int r = -warmup; r < reps; r++) {
            double t0 = now_ms();
            gemm_forward(&g[l], B, in, out);
            double t1 = now_ms();
            gemm_dw(&g[l], B, in, out);
            double t2v = now_ms();
            if (l > 0)
                gemm_dx(&g[l], B, in, out);
            double t3v = now_ms();
            if (r >= 0) {
                t[r] = t1 - t0;
                t2[r] = t2v - t1;
                t3[r] = t3v - t2v;
            }
        }
        g_fwd[l] = summarize(t, reps);
        g_dw[l] = summarize(t2, reps);
        g_dx[l] = summarize(t3, reps);
    }
    /* ---- (a) standalone layers. */
    timing l_fwd[N_LAYERS], l_bwd[N_LAYERS];
    for (int l = 0; l < N_LAYERS; l++) {
        size_t in = layers[l].in, out = layers[l].out;
        vae_layer *layer = NULL;
        check(vae_layer_dense_create(&layer, in, out, layers[l].act), "vae_layer_dense_create");
        check(vae_layer_init(layer, rng), "vae_layer_init");
        float *x = random_floats(rng, B * in, 1.0f);
        float *y = random_floats(rng, B * out, 0.0f);
        float *dy = random_floats(rng, B * out, 0.01f);
        float *dx = random_floats(rng, B * in, 0.0f);
        for (int r = -warmup; r < reps; r++) {
            double t0 = now_ms();
            check(vae_layer_forward(layer, x, B, y), "vae_layer_forward");
            double t1 = now_ms();
            /* The model computes no dX for its first layer. */
            check(vae_layer_backward(layer, dy, l == 0 ? NULL : dx), "vae_layer_backward");
            double t2v = now_ms();
            if (r >= 0) {
                t[r] = t1 - t0;
                t2[r] = t2v - t1;
            }
        }
        l_fwd[l] = summarize(t, reps);
        l_bwd[l] = summarize(t2, reps);
        vae_layer_free(layer);
        free(x);
        free(y);
        free(dy);
        free(dx);
    }

    /* ---- (b) the training step of the model. */
    const size_t hidden[1] = {400};
    vae_model *m = NULL;
    vae_elbo *e = NULL;
    vae_optimizer *opt = NULL;
    check(vae_model_create_mlp(&m, 784, hidden, 1, 20, VAE_ACT_RELU, VAE_LIKELIHOOD_BERNOULLI, 1),
          "vae_model_create_mlp");
    if (model_threads > 1)
        check(vae_model_set_threads(m, model_threads), "vae_model_set_threads");
    check(vae_model_reserve(m, B), "vae_model_reserve");
    check(vae_elbo_create(&e), "vae_elbo_create");
    check(vae_optimizer_adam_create(&opt, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f),
          "vae_optimizer_adam_create");
    size_t n_params = 0;
    vae_model_params(m, &n_params);
    /* Synthetic data in [0, 1): a few distinct batches, used in turn. */
    float *data = xmalloc(N_DATA_BATCHES * B * 784 * sizeof *data);
    check(vae_rng_uniform(rng, data, N_DATA_BATCHES * B * 784), "vae_rng_uniform");
    double loss = 0.0, first_loss = 0.0;
    double *t4 = xmalloc((size_t)reps * sizeof *t4);
    /* The 11 bare GEMMs and the library's step alternate within one loop, so
     * that a noisy machine slows both alike and their ratio stays meaningful. */
    for (int r = -warmup; r < reps; r++) {
        const float *x = data + (size_t)((r + warmup) % N_DATA_BATCHES) * B * 784;
        double tg = now_ms();
        gemm_step(g, B);
        double t0 = now_ms();
        if (r >= 0)
            t4[r] = t0 - tg;
        check(vae_elbo_forward_backward(e, m, x, B, NULL, rng, &loss, NULL, NULL),
              "vae_elbo_forward_backward");
        double t1 = now_ms();
        check(vae_optimizer_step(opt, m), "vae_optimizer_step");
        double t2v = now_ms();
        if (r == -warmup)
            first_loss = loss;
        if (r >= 0) {
            t[r] = t1 - t0;
            t2[r] = t2v - t1;
            t3[r] = t2v - t0;
        }
    }
    timing s_fb = summarize(t, reps), s_opt = summarize(t2, reps), s_step = summarize(t3, reps);
    timing g_step = summarize(t4, reps);
    free(t4);

    /* ---- report. */
    printf("\n(a) standalone layers via vae_layer_forward/backward "
           "(include copies of x, y, dy into the layer's cache)\n");
    print_header();
    char name[64];
    for (int l = 0; l < N_LAYERS; l++) {
        snprintf(name, sizeof name, "%s fwd", layers[l].name);
        print_row(name, l_fwd[l], f_layer[l], g_fwd[l].median);
        snprintf(name, sizeof name, "%s bwd%s", layers[l].name, l == 0 ? " (no dX)" : "");
        double gm = g_dw[l].median + (l > 0 ? g_dx[l].median : 0.0);
        print_row(name, l_bwd[l], f_layer[l] * (l == 0 ? 1.0 : 2.0), gm);
    }

    printf("\n(b) training step, vae_model_create_mlp(784, {400}, 1, 20, RELU, BERNOULLI), "
           "Adam, %zu parameters, %zu model thread%s\n",
           n_params, model_threads, model_threads == 1 ? "" : "s");
    print_header();
    double g_fb = g_step.median; /* every GEMM of the step is in forward_backward */
    print_row("elbo_forward_backward", s_fb, f_step, g_fb);
    print_row("optimizer_step (Adam)", s_opt, 0.0, 0.0);
    print_row("training step", s_step, f_step, g_step.median);

    printf("\n(c) bare cblas_sgemm, same shapes and flags (the GEMM limit)\n");
    print_header();
    for (int l = 0; l < N_LAYERS; l++) {
        snprintf(name, sizeof name, "%s X.W^T", layers[l].name);
        print_row(name, g_fwd[l], f_layer[l], 0.0);
        snprintf(name, sizeof name, "%s dZ^T.X", layers[l].name);
        print_row(name, g_dw[l], f_layer[l], 0.0);
        if (l > 0) {
            snprintf(name, sizeof name, "%s dZ.W", layers[l].name);
            print_row(name, g_dx[l], f_layer[l], 0.0);
        }
    }
    print_row("11 GEMMs of one step (*)", g_step, f_step, 0.0);
    printf("(*) timed alternately with the training step of (b), in the same loop\n");

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("\nsummary: step %.3f ms, GEMM limit %.3f ms, step/GEMM-limit %.2f; "
           "%.1f MFLOP per step (%.3f per image); %.2f s per 60000-image epoch at this step "
           "time\n",
           s_step.median, g_step.median, s_step.median / g_step.median, f_step * 1e-6,
           f_step * 1e-6 / (double)B, s_step.median * 1e-3 * 60000.0 / (double)B);
    if (model_threads > 1)
        printf("with %zu model threads the ideal is the GEMM limit / %zu = %.3f ms; "
               "step/ideal %.2f\n",
               model_threads, model_threads, g_step.median / (double)model_threads,
               s_step.median * (double)model_threads / g_step.median);
    printf("loss %.2f after the first step, %.2f after the last (synthetic data); "
           "peak RSS %.1f MB\n",
           first_loss, loss, (double)ru.ru_maxrss / 1024.0);

    vae_optimizer_free(opt);
    vae_elbo_free(e);
    vae_model_free(m);
    free(data);
    for (int l = 0; l < N_LAYERS; l++) {
        free(g[l].x);
        free(g[l].w);
        free(g[l].y);
        free(g[l].dz);
        free(g[l].dw);
        free(g[l].dx);
    }
    vae_rng_free(rng);
    free(t);
    free(t2);
    free(t3);
    return 0;
}
