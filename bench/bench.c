/*
 * vae_bench: where the time of one training step, and of inference, of the
 * 784-400-20 VAE goes.
 *
 *   OPENBLAS_NUM_THREADS=1 vae_bench [--batch 128] [--reps 200] [--model-threads 2]
 *                                    [--infer-reps 20]
 *
 * Four groups of rows, each the median (and minimum) over the timed
 * repetitions after a warm-up:
 *  (a) each dense layer of the model run standalone through
 *      vae_layer_forward/vae_layer_backward at the whole batch. A standalone
 *      layer copies x and y (forward) and dy (backward) into its own cache,
 *      which a layer inside a model does not, so these rows carry a little
 *      copy time on top of the model's own layer cost.
 *  (b) the whole training step: vae_trainer_forward_backward (Bernoulli, eps
 *      drawn from the trainer's generator) then vae_trainer_apply (Adam),
 *      with 1 worker and with --model-threads N workers (default 2;
 *      vae_context_set_threads). The context cuts the batch into blocks of
 *      at most 64 samples (ceil(B/64) blocks of nearly equal size) and the
 *      workers take blocks. Each worker count has its own model, context and
 *      trainer, made from the same seeds, so their losses must agree to the
 *      bit (checked). With N > 1 the BLAS is set to one thread for the whole
 *      run (vae_blas_set_threads(1)), as the context requires; with
 *      --model-threads 1 it keeps OPENBLAS_NUM_THREADS.
 *  (c) the bare cblas_sgemm calls of that step, with the same shapes,
 *      transpose flags and leading dimensions as lib/nn/dense.c: forward and
 *      dW for every layer, dX for all but the first. Per layer at the whole
 *      batch (the reference of (a)), and the 11 GEMMs per block that one
 *      step issues, one block after the other on one GEMM stream: the limit
 *      the library can reach with this BLAS on one stream. That set is timed
 *      alternately with the training steps of (b), in the same loop, so that
 *      machine noise affects all alike.
 *  (d) inference with each worker count: vae_encode then vae_decode of the
 *      means, and vae_reconstruct (the same GEMMs), at batch 1 and batch
 *      1000, against the 4 bare forward GEMMs per block, timed alternately
 *      in one loop. Batch 1 runs --reps repetitions, batch 1000
 *      --infer-reps.
 * GFLOP/s counts only GEMM work (2 B in out per GEMM; docs/math.md, "FLOP
 * count of a training step"). "x GEMM" is the row's time over the time of
 * its own bare GEMMs on one stream.
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
#define BLOCK 64 /* samples per block of a context */
#define MAX_WORKERS 2 /* worker counts compared: 1 and --model-threads */

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

/* Inference batch sizes of (d). */
static const size_t infer_batches[] = {1, 1000};
#define N_INFER (sizeof infer_batches / sizeof *infer_batches)

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

/* A context cuts n samples into ceil(n/64) blocks of nearly equal size. */
static size_t block_count(size_t n)
{
    return (n + BLOCK - 1) / BLOCK;
}

/* Size of block k of n samples: the first n % blocks blocks take one more. */
static size_t block_rows(size_t n, size_t k)
{
    size_t nb = block_count(n);
    return n / nb + (k < n % nb ? 1 : 0);
}

/* Blocks each of w workers runs at most, over all blocks: the ideal time on
 * w workers is the one-stream time times this over the block count. */
static double ideal_fraction(size_t n, size_t w)
{
    size_t nb = block_count(n);
    return (double)((nb + w - 1) / w) / (double)nb;
}

static void print_header(void)
{
    printf("%-32s %9s %9s %9s %8s\n", "pass", "ms", "min ms", "GFLOP/s", "x GEMM");
    printf("%-32s %9s %9s %9s %8s\n", "----", "--", "------", "-------", "------");
}

static void print_row(const char *name, timing t, double flops, double gemm_ms)
{
    printf("%-32s %9.4f %9.4f", name, t.median, t.min);
    if (flops > 0.0)
        printf(" %9.1f", flops / (t.median * 1e6));
    if (gemm_ms > 0.0)
        printf("%s %8.2f", flops > 0.0 ? "" : "          ", t.median / gemm_ms);
    printf("\n");
}

/* ---- (c) bare GEMMs --------------------------------------------------- */

/* Buffers of one layer for the bare GEMMs, shapes as in the model, with
 * room for the largest batch; a block at row `off` uses rows off.. of x, y,
 * dz and dx, as the library's blocks use their own rows of the batch. */
typedef struct {
    float *x;   /* [rows][in]   input */
    float *w;   /* [out][in]    weights */
    float *y;   /* [rows][out]  forward output */
    float *dz;  /* [rows][out]  gradient at the pre-activation */
    float *dw;  /* [out][in]    weight gradient (accumulated, beta 1) */
    float *dx;  /* [rows][in]   input gradient */
} gemm_bufs;

static void gemm_forward(const gemm_bufs *g, size_t off, size_t B, size_t in, size_t out)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)B, (int)out, (int)in, 1.0f,
                g->x + off * in, (int)in, g->w, (int)in, 0.0f, g->y + off * out, (int)out);
}

static void gemm_dw(const gemm_bufs *g, size_t off, size_t B, size_t in, size_t out)
{
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)out, (int)in, (int)B, 1.0f,
                g->dz + off * out, (int)out, g->x + off * in, (int)in, 1.0f, g->dw, (int)in);
}

static void gemm_dx(const gemm_bufs *g, size_t off, size_t B, size_t in, size_t out)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)B, (int)in, (int)out, 1.0f,
                g->dz + off * out, (int)out, g->w, (int)in, 0.0f, g->dx + off * in, (int)in);
}

/* The 11 GEMMs of a training step on every block of a batch of n, in the
 * order the step issues them. */
static void gemm_step(gemm_bufs *g, size_t n)
{
    for (size_t k = 0, off = 0; k < block_count(n); off += block_rows(n, k), k++) {
        size_t b = block_rows(n, k);
        for (int l = 0; l < N_LAYERS; l++)
            gemm_forward(&g[l], off, b, layers[l].in, layers[l].out);
        for (int l = N_LAYERS - 1; l >= 0; l--) {
            gemm_dw(&g[l], off, b, layers[l].in, layers[l].out);
            if (l > 0)
                gemm_dx(&g[l], off, b, layers[l].in, layers[l].out);
        }
    }
}

/* The 4 forward GEMMs of inference on every block of a batch of n. */
static void gemm_infer(gemm_bufs *g, size_t n)
{
    for (size_t k = 0, off = 0; k < block_count(n); off += block_rows(n, k), k++)
        for (int l = 0; l < N_LAYERS; l++)
            gemm_forward(&g[l], off, block_rows(n, k), layers[l].in, layers[l].out);
}

static long parse_flag(const char *flag, const char *s, long lo, long hi)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "vae_bench: %s must be in %ld..%ld\n", flag, lo, hi);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    size_t B = 128;
    int reps = 200, infer_reps = 20;
    size_t model_threads = 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--batch") && i + 1 < argc) {
            B = (size_t)parse_flag("--batch", argv[++i], 1, 65536);
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = (int)parse_flag("--reps", argv[++i], 1, 1000000);
        } else if (!strcmp(argv[i], "--infer-reps") && i + 1 < argc) {
            infer_reps = (int)parse_flag("--infer-reps", argv[++i], 1, 1000000);
        } else if (!strcmp(argv[i], "--model-threads") && i + 1 < argc) {
            model_threads = (size_t)parse_flag("--model-threads", argv[++i], 1, 64);
        } else {
            fprintf(stderr,
                    "usage: %s [--batch N] [--reps N] [--model-threads N] [--infer-reps N]\n"
                    "Times 1 worker and N workers (default 2; 1: one worker only, the BLAS\n"
                    "left as OPENBLAS_NUM_THREADS sets it). --infer-reps: repetitions of the\n"
                    "batch-1000 inference rows (default 20).\n",
                    argv[0]);
            return 2;
        }
    }
    /* Worker counts: 1, and model_threads when it is more. */
    size_t workers[MAX_WORKERS] = {1, model_threads};
    const size_t n_wk = model_threads > 1 ? 2 : 1;
    /* Several workers need a single-threaded BLAS; set it before any timing
     * so that every row, bare GEMMs included, runs with the same BLAS. */
    if (n_wk > 1)
        check(vae_blas_set_threads(1), "vae_blas_set_threads");

    const int warmup = reps / 10 > 5 ? reps / 10 : 5;
    int max_reps = reps > infer_reps ? reps : infer_reps;
    double *t = xmalloc((size_t)max_reps * sizeof *t);
    double *t2 = xmalloc((size_t)max_reps * sizeof *t2);
    double *t3 = xmalloc((size_t)max_reps * sizeof *t3);
    const char *thr = getenv("OPENBLAS_NUM_THREADS");

    printf("libvae %s, 784-400-20 VAE, batch %zu (%zu block%s of <= %d), %d reps after %d "
           "warm-up, OPENBLAS_NUM_THREADS=%s, BLAS threads %zu, workers 1",
           vae_version_string(), B, block_count(B), block_count(B) == 1 ? "" : "s", BLOCK,
           reps, warmup, thr ? thr : "(unset)", vae_blas_threads());
    if (n_wk > 1)
        printf(" and %zu", model_threads);
    printf("\n");

    vae_rng *rng = NULL;
    check(vae_rng_create(&rng, 42), "vae_rng_create");

    /* FLOPs of each GEMM kind per layer and sample, of the whole step and of
     * one forward pass per sample. */
    double f_layer[N_LAYERS], f_step = 0.0, f_fwd1 = 0.0;
    for (int l = 0; l < N_LAYERS; l++) {
        f_layer[l] = 2.0 * (double)B * (double)layers[l].in * (double)layers[l].out;
        f_step += f_layer[l] * (l == 0 ? 2.0 : 3.0);
        f_fwd1 += 2.0 * (double)layers[l].in * (double)layers[l].out;
    }

    /* ---- (c) first: the bare GEMMs give the reference for the others. */
    size_t rows = B;
    for (size_t k = 0; k < N_INFER; k++)
        if (infer_batches[k] > rows)
            rows = infer_batches[k];
    gemm_bufs g[N_LAYERS];
    for (int l = 0; l < N_LAYERS; l++) {
        size_t in = layers[l].in, out = layers[l].out;
        g[l].x = random_floats(rng, rows * in, 1.0f);
        g[l].w = random_floats(rng, out * in, 0.05f);
        g[l].y = random_floats(rng, rows * out, 0.0f);
        g[l].dz = random_floats(rng, rows * out, 0.01f);
        g[l].dw = random_floats(rng, out * in, 0.0f);
        g[l].dx = random_floats(rng, rows * in, 0.0f);
    }
    timing g_fwd[N_LAYERS], g_dw[N_LAYERS], g_dx[N_LAYERS];
    for (int l = 0; l < N_LAYERS; l++) {
        size_t in = layers[l].in, out = layers[l].out;
        for (int r = -warmup; r < reps; r++) {
            double t0 = now_ms();
            gemm_forward(&g[l], 0, B, in, out);
            double t1 = now_ms();
            gemm_dw(&g[l], 0, B, in, out);
            double t2v = now_ms();
            if (l > 0)
                gemm_dx(&g[l], 0, B, in, out);
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

    /* ---- (b) the training step: per worker count a model, a context and a
     * trainer, all from the same seeds. */
    const size_t hidden[1] = {400};
    vae_model *m[MAX_WORKERS] = {NULL};
    vae_context *ctx[MAX_WORKERS] = {NULL};
    vae_trainer *tr[MAX_WORKERS] = {NULL};
    vae_elbo *e = NULL;
    vae_optimizer *opt = NULL;
    check(vae_elbo_create(&e), "vae_elbo_create");
    check(vae_optimizer_create(&opt, VAE_OPTIMIZER_ADAM), "vae_optimizer_create");
    check(vae_optimizer_set_param(opt, VAE_OPT_LR, 1e-3), "vae_optimizer_set_param");
    for (size_t w = 0; w < n_wk; w++) {
        check(vae_model_create_mlp(&m[w], 784, hidden, 1, 20, VAE_ACT_RELU,
                                   VAE_LIKELIHOOD_BERNOULLI, 1),
              "vae_model_create_mlp");
        check(vae_context_create(&ctx[w]), "vae_context_create");
        if (workers[w] > 1)
            check(vae_context_set_threads(ctx[w], workers[w]), "vae_context_set_threads");
        check(vae_trainer_create(&tr[w], m[w], e, opt, ctx[w], 7), "vae_trainer_create");
        check(vae_trainer_reserve(tr[w], B), "vae_trainer_reserve");
    }
    size_t n_params = vae_model_param_count(m[0]);
    /* Synthetic data in [0, 1): a few distinct batches, used in turn. */
    float *data = xmalloc(N_DATA_BATCHES * B * 784 * sizeof *data);
    check(vae_rng_uniform(rng, data, N_DATA_BATCHES * B * 784), "vae_rng_uniform");
    double loss[MAX_WORKERS] = {0}, first_loss[MAX_WORKERS] = {0};
    int same_loss = 1;
    double *t_fb[MAX_WORKERS], *t_ap[MAX_WORKERS], *t_st[MAX_WORKERS];
    for (size_t w = 0; w < n_wk; w++) {
        t_fb[w] = xmalloc((size_t)reps * sizeof(double));
        t_ap[w] = xmalloc((size_t)reps * sizeof(double));
        t_st[w] = xmalloc((size_t)reps * sizeof(double));
    }
    /* The bare GEMMs and the library's steps alternate within one loop, so
     * that a noisy machine slows all alike and their ratios stay meaningful. */
    for (int r = -warmup; r < reps; r++) {
        const float *x = data + (size_t)((r + warmup) % N_DATA_BATCHES) * B * 784;
        double tg = now_ms();
        gemm_step(g, B);
        double tg1 = now_ms();
        if (r >= 0)
            t[r] = tg1 - tg;
        for (size_t w = 0; w < n_wk; w++) {
            vae_epoch_stats st = {.size = sizeof st};
            double t0 = now_ms();
            check(vae_trainer_forward_backward(tr[w], x, B, NULL, &st),
                  "vae_trainer_forward_backward");
            double t1 = now_ms();
            check(vae_trainer_apply(tr[w]), "vae_trainer_apply");
            double t2v = now_ms();
            loss[w] = st.loss;
            if (r == -warmup)
                first_loss[w] = st.loss;
            if (r >= 0) {
                t_fb[w][r] = t1 - t0;
                t_ap[w][r] = t2v - t1;
                t_st[w][r] = t2v - t0;
            }
        }
        for (size_t w = 1; w < n_wk; w++)
            same_loss &= loss[w] == loss[0];
    }
    timing g_step = summarize(t, reps);
    timing s_fb[MAX_WORKERS], s_ap[MAX_WORKERS], s_st[MAX_WORKERS];
    for (size_t w = 0; w < n_wk; w++) {
        s_fb[w] = summarize(t_fb[w], reps);
        s_ap[w] = summarize(t_ap[w], reps);
        s_st[w] = summarize(t_st[w], reps);
        free(t_fb[w]);
        free(t_ap[w]);
        free(t_st[w]);
    }

    /* ---- (d) inference on the first model, with each worker count. */
    size_t max_infer = 0;
    for (size_t k = 0; k < N_INFER; k++)
        if (infer_batches[k] > max_infer)
            max_infer = infer_batches[k];
    float *xi = xmalloc(max_infer * 784 * sizeof *xi);
    float *mu = xmalloc(max_infer * 20 * sizeof *mu);
    float *lv = xmalloc(max_infer * 20 * sizeof *lv);
    float *yi = xmalloc(max_infer * 784 * sizeof *yi);
    check(vae_rng_uniform(rng, xi, max_infer * 784), "vae_rng_uniform");
    for (size_t w = 0; w < n_wk; w++)
        check(vae_context_reserve(ctx[w], m[0], max_infer), "vae_context_reserve");
    timing i_gemm[N_INFER], i_ed[N_INFER][MAX_WORKERS], i_rec[N_INFER][MAX_WORKERS];
    int i_reps[N_INFER];
    for (size_t k = 0; k < N_INFER; k++) {
        size_t n = infer_batches[k];
        int rk = n <= BLOCK ? reps : infer_reps;
        int wk = rk / 10 > 2 ? rk / 10 : 2;
        i_reps[k] = rk;
        double *te[MAX_WORKERS], *trc[MAX_WORKERS];
        for (size_t w = 0; w < n_wk; w++) {
            te[w] = xmalloc((size_t)rk * sizeof(double));
            trc[w] = xmalloc((size_t)rk * sizeof(double));
        }
        for (int r = -wk; r < rk; r++) {
            double t0 = now_ms();
            gemm_infer(g, n);
            double t1 = now_ms();
            if (r >= 0)
                t[r] = t1 - t0;
            for (size_t w = 0; w < n_wk; w++) {
                double a = now_ms();
                check(vae_encode(ctx[w], m[0], xi, n, mu, lv), "vae_encode");
                check(vae_decode(ctx[w], m[0], mu, n, yi), "vae_decode");
                double b = now_ms();
                check(vae_reconstruct(ctx[w], m[0], xi, n, yi), "vae_reconstruct");
                double c = now_ms();
                if (r >= 0) {
                    te[w][r] = b - a;
                    trc[w][r] = c - b;
                }
            }
        }
        i_gemm[k] = summarize(t, rk);
        for (size_t w = 0; w < n_wk; w++) {
            i_ed[k][w] = summarize(te[w], rk);
            i_rec[k][w] = summarize(trc[w], rk);
            free(te[w]);
            free(trc[w]);
        }
    }

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
           "Adam, %zu parameters, batch %zu in %zu block%s\n",
           n_params, B, block_count(B), block_count(B) == 1 ? "" : "s");
    print_header();
    double g_lim = g_step.median; /* every GEMM of the step is in forward_backward */
    for (size_t w = 0; w < n_wk; w++) {
        printf("%zu worker%s:\n", workers[w], workers[w] == 1 ? "" : "s");
        print_row("  trainer_forward_backward", s_fb[w], f_step, g_lim);
        print_row("  trainer_apply (Adam)", s_ap[w], 0.0, 0.0);
        print_row("  training step", s_st[w], f_step, g_lim);
    }

    printf("\n(c) bare cblas_sgemm, same shapes and flags (the GEMM limit)\n");
    print_header();
    double whole = 0.0;
    for (int l = 0; l < N_LAYERS; l++) {
        snprintf(name, sizeof name, "%s X.W^T", layers[l].name);
        print_row(name, g_fwd[l], f_layer[l], 0.0);
        snprintf(name, sizeof name, "%s dZ^T.X", layers[l].name);
        print_row(name, g_dw[l], f_layer[l], 0.0);
        whole += g_fwd[l].median + g_dw[l].median;
        if (l > 0) {
            snprintf(name, sizeof name, "%s dZ.W", layers[l].name);
            print_row(name, g_dx[l], f_layer[l], 0.0);
            whole += g_dx[l].median;
        }
    }
    snprintf(name, sizeof name, "11 GEMMs x %zu block%s (*)", block_count(B),
             block_count(B) == 1 ? "" : "s");
    print_row(name, g_step, f_step, 0.0);
    printf("(*) one step's GEMMs, block after block on one stream, timed alternately with\n"
           "    the training steps of (b) in the same loop; the rows above at the whole\n"
           "    batch add up to %.4f ms\n", whole);

    printf("\n(d) inference: vae_encode + vae_decode of the means, and vae_reconstruct\n");
    print_header();
    for (size_t k = 0; k < N_INFER; k++) {
        size_t n = infer_batches[k];
        double f = f_fwd1 * (double)n;
        printf("batch %zu (%zu block%s), %d reps:\n", n, block_count(n),
               block_count(n) == 1 ? "" : "s", i_reps[k]);
        for (size_t w = 0; w < n_wk; w++) {
            snprintf(name, sizeof name, "  encode+decode, %zu worker%s", workers[w],
                     workers[w] == 1 ? "" : "s");
            print_row(name, i_ed[k][w], f, i_gemm[k].median);
            snprintf(name, sizeof name, "  reconstruct, %zu worker%s", workers[w],
                     workers[w] == 1 ? "" : "s");
            print_row(name, i_rec[k][w], f, i_gemm[k].median);
        }
        snprintf(name, sizeof name, "  4 GEMMs x %zu block%s (bare)", block_count(n),
                 block_count(n) == 1 ? "" : "s");
        print_row(name, i_gemm[k], f, 0.0);
    }

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("\nsummary: step %.3f ms with 1 worker, GEMM limit %.3f ms, step/GEMM-limit %.2f; "
           "%.1f MFLOP per step (%.3f per image); %.2f s per 60000-image epoch at this step "
           "time\n",
           s_st[0].median, g_lim, s_st[0].median / g_lim, f_step * 1e-6,
           f_step * 1e-6 / (double)B, s_st[0].median * 1e-3 * 60000.0 / (double)B);
    for (size_t w = 1; w < n_wk; w++) {
        double ideal = g_lim * ideal_fraction(B, workers[w]);
        printf("with %zu workers: step %.3f ms (%.2f of 1 worker), %.2f s per epoch; the ideal "
               "is the GEMM limit spread over the workers by blocks = %.3f ms; step/ideal "
               "%.2f\n",
               workers[w], s_st[w].median, s_st[w].median / s_st[0].median,
               s_st[w].median * 1e-3 * 60000.0 / (double)B, ideal, s_st[w].median / ideal);
    }
    for (size_t k = 0; k < N_INFER; k++)
        for (size_t w = 0; w < n_wk; w++)
            printf("inference, batch %zu, %zu worker%s: reconstruct %.4f ms = %.2f us per "
                   "image\n",
                   infer_batches[k], workers[w], workers[w] == 1 ? "" : "s",
                   i_rec[k][w].median, i_rec[k][w].median * 1e3 / (double)infer_batches[k]);
    printf("loss %.2f after the first step, %.2f after the last (synthetic data)", first_loss[0],
           loss[0]);
    if (n_wk > 1)
        printf(", %s with %zu workers", same_loss ? "bit-identical" : "DIFFERENT (a bug)",
               model_threads);
    printf("; peak RSS %.1f MB\n", (double)ru.ru_maxrss / 1024.0);

    for (size_t w = 0; w < n_wk; w++) {
        vae_trainer_free(tr[w]);
        vae_context_free(ctx[w]);
        vae_model_free(m[w]);
    }
    vae_optimizer_free(opt);
    vae_elbo_free(e);
    free(data);
    free(xi);
    free(mu);
    free(lv);
    free(yi);
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
    return same_loss ? 0 : 1;
}
