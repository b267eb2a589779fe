/*
 * vae_bench_conv: the convolutional VAE of examples/mnist_vae --conv.
 *
 *   OPENBLAS_NUM_THREADS=1 vae_bench_conv [--batch 128] [--reps 20] [--model-threads 2]
 *                                         [--infer-reps 3] [--json [FILE]]
 *
 * Median (and minimum) over --reps repetitions after a warm-up of:
 *  (a) each convolution of the model run standalone (vae_layer_forward and
 *      vae_layer_backward with dx), at the model's geometry;
 *  (b) the model's training step: vae_trainer_forward_backward (Bernoulli,
 *      noise from the trainer's generator) then vae_trainer_apply (Adam),
 *      with 1 worker and with --model-threads N workers (default 2;
 *      vae_context_set_threads), which take the batch's blocks of at most
 *      64 samples (worker w blocks w, w + N, ...). Each worker count has its
 *      own model, context and trainer from the same seeds, timed
 *      alternately in one loop; their losses must agree to the bit
 *      (checked). With N > 1 the BLAS is set to one thread
 *      (vae_blas_set_threads(1)) for the whole run, as the context requires;
 *      with --model-threads 1 it keeps OPENBLAS_NUM_THREADS.
 *      In the same loop, the step's GEMM bounds: the bare cblas_sgemm calls
 *      of the step with the shapes, flags and leading dimensions of
 *      lib/nn/conv2d.c, conv2d_transpose.c and dense.c, per block, the
 *      convolutions' in chunks of samples as the library cuts them (a chunk
 *      holds about 2^17 floats of im2col columns: VAE_CONV_CHUNK_FLOATS of
 *      lib/nn/layer.h, copied here; if the library changes it, change
 *      CONV_CHUNK_FLOATS below). Block after block on one stream (the bound
 *      of 1 worker), and each worker's blocks on its own thread, all N at
 *      once (the bound of N workers). Operands are shared, results go to
 *      per-stream buffers; im2col/col2im, activations and Adam are not in
 *      the bound. Targets: with N workers the step at least 0.75 of the
 *      N-stream bound (the conv VAE's target of the performance round);
 *      with 1 worker, as vae_bench's, at most 1.10 times its one-stream
 *      GEMMs;
 *  (c) inference with each worker count: vae_encode then vae_decode of the
 *      means, and vae_reconstruct, at batch 1 (--reps repetitions) and batch
 *      1000 (--infer-reps).
 * GFLOP/s counts the GEMM work only: a convolution's forward is
 * 2 B C_out (H_out W_out) (C_in k_h k_w) FLOPs (the same count for the
 * transposed one with input and output swapped), its backward twice that (dW
 * and dX; the first layer of the step skips dX). im2col/col2im copies and
 * the activations are the time beyond it.
 *
 * --json alone prints one JSON object for the run on stdout instead of the
 * text; --json FILE prints the text and writes the object to FILE ("-" is
 * stdout). The object is laid out as vae_bench's (report.c writes it): the
 * machine (CPU model, cores, the BLAS and its configuration, the thread
 * settings), the library version, the settings of the run, the rows and a
 * summary against the targets above. Each row has an id, a name, its
 * section, workers (0 for bare GEMMs), batch, median, min, p10, p90 and max
 * ms, repetitions, GFLOP/s and, where it has one, its bound (id, ms and the
 * ratio to it). The ids carry a "conv." prefix, as bench_torch.py --model
 * conv names the same rows: conv.layer.<conv>.fwd/.bwd for (a);
 * conv.forward_backward, conv.optimizer and conv.step per worker count
 * (the first two only in the JSON: the two parts of the timed step), with
 * their bound conv.gemm.step.1stream (1 worker) or
 * conv.gemm.step.<N>streams (N workers), for (b); and
 * conv.encode_decode.b<n> and conv.reconstruct.b<n> per worker count for
 * (c). The JSON's median is timing_of()'s, as vae_bench's (the mean of the
 * two middle values for an even count); the text keeps the middle element
 * t[reps / 2] of the sorted times.
 */
#define _POSIX_C_SOURCE 200809L

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gemm_streams.h"
#include "report.h"
#include "vae/vae.h"

#define MAX_WORKERS 2 /* worker counts compared: 1 and --model-threads */
#define TARGET_1W_RATIO 1.10 /* step / its GEMMs on one stream, at most */
#define TARGET_NW_EFF 0.75   /* N-stream GEMM bound / N-worker step, at least */

/* ---- output ------------------------------------------------------------ */

/* Summarizes t[0..n-1] (sorting it), records the row and, with `show`,
 * prints its text line: the middle element of the sorted times, the
 * minimum and GFLOP/s. Returns the summary. */
static timing add_row(int show, char section, const char *id, const char *name, size_t workers,
                      size_t batch, double *t, int n, double flops, const char *bound,
                      double bound_ms)
{
    timing s = timing_of(t, n);
    report_add(section, id, name, workers, batch, s, flops, bound, bound_ms);
    if (show)
        say("%-30s %9.3f %9.3f %9.1f\n", name, t[n / 2], t[0], flops / (t[n / 2] * 1e6));
    return s;
}

/* The value of --flag: an integer in lo..hi, or -1. */
static long flag_value(const char *s, long lo, long hi)
{
    char *end;
    long v = strtol(s, &end, 10);
    return end == s || *end != '\0' || v < lo || v > hi ? -1 : v;
}


static float *xmalloc_floats(size_t n)
{
    return xmalloc(n * sizeof(float));
}

/* The convolutions of mnist_vae --conv: kernel 4, stride 2, padding 1. */
static const struct {
    const char *id; /* short key for the JSON rows */
    const char *name;
    int transpose;
    size_t in_c, in_hw, out_c;
} convs[] = {
    {"conv1", "conv 1x28x28->32x14x14", 0, 1, 28, 32},
    {"conv2", "conv 32x14x14->64x7x7", 0, 32, 14, 64},
    {"convT1", "convT 64x7x7->32x14x14", 1, 64, 7, 32},
    {"convT2", "convT 32x14x14->1x28x28", 1, 32, 14, 1},
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

/* Inference batch sizes of (c). */
static const size_t infer_batches[] = {1, 1000};
#define N_INFER (sizeof infer_batches / sizeof *infer_batches)

/* The three dense layers and the head: 3136->256, head 256->40, 20->256,
 * 256->3136. */
static const size_t dense[4][2] = {{3136, 256}, {256, 40}, {20, 256}, {256, 3136}};

/* GEMM FLOPs of one forward pass of convolution i at batch B. */
static double conv_flops(size_t i, size_t B)
{
    size_t small_hw = convs[i].transpose ? convs[i].in_hw : convs[i].in_hw / 2;
    size_t small_c = convs[i].transpose ? convs[i].in_c : convs[i].out_c;
    size_t big_c = convs[i].transpose ? convs[i].out_c : convs[i].in_c;
    return 2.0 * (double)B * (double)small_c * (double)(small_hw * small_hw) *
           (double)(big_c * 16);
}

/* The model of mnist_vae --conv, built layer by layer; each add takes the
 * layer from `l` and leaves it NULL. */
static vae_model *make_model(void)
{
    vae_model *m = NULL;
    vae_layer *l = NULL;
    check(vae_model_create(&m, 784, 20, VAE_LIKELIHOOD_BERNOULLI), "vae_model_create");
    for (size_t i = 0; i < 2; i++) {
        l = make_conv(i);
        check(vae_model_add_encoder_layer(m, &l), "vae_model_add_encoder_layer");
    }
    check(vae_layer_dense_create(&l, 3136, 256, VAE_ACT_RELU), "vae_layer_dense_create");
    check(vae_model_add_encoder_layer(m, &l), "vae_model_add_encoder_layer");
    check(vae_layer_dense_create(&l, 20, 256, VAE_ACT_RELU), "vae_layer_dense_create");
    check(vae_model_add_decoder_layer(m, &l), "vae_model_add_decoder_layer");
    check(vae_layer_dense_create(&l, 256, 3136, VAE_ACT_RELU), "vae_layer_dense_create");
    check(vae_model_add_decoder_layer(m, &l), "vae_model_add_decoder_layer");
    l = make_conv(2);
    check(vae_model_add_decoder_layer(m, &l), "vae_model_add_decoder_layer");
    check(vae_layer_conv2d_transpose_create(&l, 32, 14, 14, 1, 4, 4, 2, 1, 0,
                                            VAE_ACT_IDENTITY),
          "vae_layer_conv2d_transpose_create");
    check(vae_model_add_decoder_layer(m, &l), "vae_model_add_decoder_layer");
    check(vae_model_build(m, 1), "vae_model_build");
    return m;
}

/* ---- the step's bare GEMMs (the bounds of (b)) ------------------------- */

#define CONV_CHUNK_FLOATS ((size_t)1 << 17) /* VAE_CONV_CHUNK_FLOATS, lib/nn/layer.h */

/* Samples per GEMM of a convolution, as vae_conv_chunk() (lib/nn/im2col.c). */
static size_t conv_chunk(size_t per_sample, size_t batch)
{
    size_t n = per_sample ? CONV_CHUNK_FLOATS / per_sample : batch;
    n = n < 1 ? 1 : n;
    return n < batch ? n : batch;
}

/* Shared operands and a result buffer per stream; the sizing pass finds
 * their sizes and counts the FLOPs. */
typedef struct {
    float *a, *b;              /* operands, max_a and max_b floats */
    float *c[MAX_STREAMS];     /* results per stream, max_c floats */
} conv_gemms;

typedef struct {
    size_t max_a, max_b, max_c;
    double flops;
} conv_sizes;

/* C[m][n] = op(A) op(B) + beta C, row-major, contiguous operands (the
 * library's leading dimensions); with sz, only sized and counted. */
static void op(const conv_gemms *g, conv_sizes *sz, size_t stream, int ta, int tb, size_t m,
               size_t n, size_t k, float beta)
{
    if (sz) {
        sz->max_a = m * k > sz->max_a ? m * k : sz->max_a;
        sz->max_b = k * n > sz->max_b ? k * n : sz->max_b;
        sz->max_c = m * n > sz->max_c ? m * n : sz->max_c;
        sz->flops += 2.0 * (double)m * (double)n * (double)k;
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)m, (int)n, (int)k, 1.0f, g->a, (int)(ta ? m : k), g->b, (int)(tb ? k : n),
                beta, g->c[stream], (int)n);
}

/* Convolution i (convs[]) on a block of `rows` samples: forward, or
 * backward (dW, and dX unless `no_dx`), chunk by chunk as the layer does. */
static void conv_gemm(const conv_gemms *g, conv_sizes *sz, size_t stream, size_t i, size_t rows,
                      int backward, int no_dx)
{
    size_t hw = convs[i].in_hw * convs[i].in_hw;
    if (!convs[i].transpose) { /* lib/nn/conv2d.c */
        size_t ckk = convs[i].in_c * 16, ohw = hw / 4, oc = convs[i].out_c;
        size_t bc = conv_chunk(ckk * ohw, rows);
        for (size_t b0 = 0; b0 < rows; b0 += bc) {
            size_t n = (rows - b0 < bc ? rows - b0 : bc) * ohw;
            if (!backward) {
                op(g, sz, stream, 0, 0, oc, n, ckk, 0.0f);
            } else {
                op(g, sz, stream, 0, 1, oc, ckk, n, b0 ? 1.0f : 0.0f);
                if (!no_dx)
                    op(g, sz, stream, 1, 0, ckk, n, oc, 0.0f);
            }
        }
    } else { /* lib/nn/conv2d_transpose.c */
        size_t ckk = convs[i].out_c * 16, ic = convs[i].in_c;
        size_t bc = conv_chunk(ckk * hw, rows);
        for (size_t b0 = 0; b0 < rows; b0 += bc) {
            size_t n = (rows - b0 < bc ? rows - b0 : bc) * hw;
            if (!backward) {
                op(g, sz, stream, 1, 0, ckk, n, ic, 0.0f);
            } else {
                op(g, sz, stream, 0, 1, ic, ckk, n, b0 ? 1.0f : 0.0f);
                if (!no_dx)
                    op(g, sz, stream, 0, 0, ic, n, ckk, 0.0f);
            }
        }
    }
}

/* Dense layer d (dense[]) on a block, as lib/nn/dense.c: Y = X.W^T;
 * dW += dZ^T.X; dX = dZ.W. */
static void dense_gemm(const conv_gemms *g, conv_sizes *sz, size_t stream, size_t d, size_t rows,
                       int backward)
{
    size_t in = dense[d][0], out = dense[d][1];
    if (!backward) {
        op(g, sz, stream, 0, 1, rows, out, in, 0.0f);
    } else {
        op(g, sz, stream, 1, 0, out, in, rows, 1.0f);
        op(g, sz, stream, 0, 0, rows, in, out, 0.0f);
    }
}

/* The step's GEMMs on one block: layers in model order (conv 0, conv 1,
 * dense 0, head, dense 2, dense 3, convT 2, convT 3) forward, then back;
 * the first layer computes no dX. */
static void conv_step_block(const conv_gemms *g, conv_sizes *sz, size_t stream, size_t rows)
{
    conv_gemm(g, sz, stream, 0, rows, 0, 0);
    conv_gemm(g, sz, stream, 1, rows, 0, 0);
    for (size_t d = 0; d < 4; d++)
        dense_gemm(g, sz, stream, d, rows, 0);
    conv_gemm(g, sz, stream, 2, rows, 0, 0);
    conv_gemm(g, sz, stream, 3, rows, 0, 0);
    conv_gemm(g, sz, stream, 3, rows, 1, 0);
    conv_gemm(g, sz, stream, 2, rows, 1, 0);
    for (size_t d = 4; d-- > 0;)
        dense_gemm(g, sz, stream, d, rows, 1);
    conv_gemm(g, sz, stream, 1, rows, 1, 0);
    conv_gemm(g, sz, stream, 0, rows, 1, 1);
}

/* gemm_share_fn: blocks stream, stream + nstreams, ... of a batch of n. */
static void conv_step_share(const void *work, int job, size_t n, size_t stream, size_t nstreams)
{
    (void)job;
    for (size_t k = stream; k < block_count(n); k += nstreams)
        conv_step_block(work, NULL, stream, block_rows(n, k));
}

static void conv_gemms_create(conv_gemms *g, size_t B, size_t streams, vae_rng *rng,
                              double *flops)
{
    conv_sizes sz = {0};
    for (size_t k = 0; k < block_count(B); k++)
        conv_step_block(NULL, &sz, 0, block_rows(B, k));
    *flops = sz.flops;
    memset(g, 0, sizeof *g);
    g->a = xmalloc_floats(sz.max_a);
    g->b = xmalloc_floats(sz.max_b);
    check(vae_rng_uniform(rng, g->a, sz.max_a), "vae_rng_uniform");
    check(vae_rng_uniform(rng, g->b, sz.max_b), "vae_rng_uniform");
    for (size_t i = 0; i < sz.max_a; i++)
        g->a[i] = 0.01f * (g->a[i] - 0.5f);
    for (size_t t = 0; t < streams; t++) {
        g->c[t] = xmalloc_floats(sz.max_c);
        memset(g->c[t], 0, sz.max_c * sizeof(float));
    }
}

static void conv_gemms_free(conv_gemms *g)
{
    free(g->a);
    free(g->b);
    for (size_t t = 0; t < MAX_STREAMS; t++)
        free(g->c[t]);
}

int main(int argc, char **argv)
{
    bench_program = "vae_bench_conv";
    size_t B = 128, threads = 2;
    int reps = 20, infer_reps = 3;
    int json = 0;
    const char *json_path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json")) {
            json = 1;
            /* an optional FILE: the next argument unless it is a flag */
            if (i + 1 < argc && (argv[i + 1][0] != '-' || !strcmp(argv[i + 1], "-")))
                json_path = argv[++i];
            continue;
        }
        /* the other flags take a value in 1..hi */
        long hi = !strcmp(a, "--batch") ? 4096
                  : !strcmp(a, "--reps") || !strcmp(a, "--infer-reps") ? 100000
                  : !strcmp(a, "--model-threads") ? 64 : 0;
        long v = hi && i + 1 < argc ? flag_value(argv[++i], 1, hi) : -1;
        if (v < 0) {
            fprintf(stderr, "usage: %s [--batch 1..4096] [--reps N] [--model-threads 1..64] "
                            "[--infer-reps N] [--json [FILE]]\n"
                            "Times 1 worker and N workers (default 2; 1: one worker only, the "
                            "BLAS left as\nOPENBLAS_NUM_THREADS sets it). --infer-reps: "
                            "repetitions at batch 1000 (default 3).\n"
                            "--json: one JSON object on stdout instead of the text; --json "
                            "FILE: the text,\nand the object in FILE (\"-\": stdout).\n",
                    argv[0]);
            return 2;
        }
        if (!strcmp(a, "--batch"))
            B = (size_t)v;
        else if (!strcmp(a, "--reps"))
            reps = (int)v;
        else if (!strcmp(a, "--infer-reps"))
            infer_reps = (int)v;
        else
            threads = (size_t)v;
    }
    text_out = json && !json_path ? NULL : stdout;
    size_t workers[MAX_WORKERS] = {1, threads};
    const size_t n_wk = threads > 1 ? 2 : 1;
    if (n_wk > 1) /* several workers need a single-threaded BLAS; every row uses it */
        check(vae_blas_set_threads(1), "vae_blas_set_threads");
    const int warmup = 3;
    int max_reps = reps > infer_reps ? reps : infer_reps;
    double *t = xmalloc((size_t)max_reps * sizeof *t);
    double *t2 = xmalloc((size_t)max_reps * sizeof *t2);
    const char *thr = getenv("OPENBLAS_NUM_THREADS");
    say("libvae %s, conv VAE of mnist_vae --conv, batch %zu, %d reps after %d warm-up, "
        "OPENBLAS_NUM_THREADS=%s, BLAS threads %zu, workers 1",
        vae_version_string(), B, reps, warmup, thr ? thr : "(unset)", vae_blas_threads());
    if (n_wk > 1)
        say(" and %zu", threads);
    say("\n");
    vae_rng *rng = NULL;
    check(vae_rng_create(&rng, 42), "vae_rng_create");
    char name[64], id[48];

    say("\n(a) standalone convolutions, forward and backward (dW and dX)\n");
    say("%-30s %9s %9s %9s\n", "pass", "ms", "min ms", "GFLOP/s");
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
        snprintf(name, sizeof name, "%s fwd", convs[i].name);
        snprintf(id, sizeof id, "conv.layer.%s.fwd", convs[i].id);
        add_row(1, 'a', id, name, 1, B, t, reps, f, NULL, 0.0);
        snprintf(name, sizeof name, "%s bwd", convs[i].name);
        snprintf(id, sizeof id, "conv.layer.%s.bwd", convs[i].id);
        add_row(1, 'a', id, name, 1, B, t2, reps, 2.0 * f, NULL, 0.0);
        free(x);
        free(y);
        free(dy);
        free(dx);
        vae_layer_free(l);
    }
    for (size_t i = 0; i < 4; i++)
        f_step += 3.0 * 2.0 * (double)B * (double)(dense[i][0] * dense[i][1]);

    /* (b) the training step, built as mnist_vae --conv builds it: a model,
     * a context and a trainer per worker count, from the same seeds. */
    vae_model *m[MAX_WORKERS] = {NULL};
    vae_context *ctx[MAX_WORKERS] = {NULL};
    vae_trainer *tr[MAX_WORKERS] = {NULL};
    vae_elbo *e = NULL;
    vae_optimizer *opt = NULL;
    check(vae_elbo_create(&e), "vae_elbo_create");
    check(vae_optimizer_create(&opt, VAE_OPTIMIZER_ADAM), "vae_optimizer_create");
    check(vae_optimizer_set_param(opt, VAE_OPT_LR, 1e-3), "vae_optimizer_set_param");
    for (size_t w = 0; w < n_wk; w++) {
        m[w] = make_model();
        check(vae_context_create(&ctx[w]), "vae_context_create");
        if (workers[w] > 1)
            check(vae_context_set_threads(ctx[w], workers[w]), "vae_context_set_threads");
        check(vae_trainer_create(&tr[w], m[w], e, opt, ctx[w], 7), "vae_trainer_create");
        check(vae_trainer_reserve(tr[w], B), "vae_trainer_reserve");
    }
    float *data = xmalloc_floats(B * 784);
    check(vae_rng_uniform(rng, data, B * 784), "vae_rng_uniform");
    double loss[MAX_WORKERS] = {0};
    /* per worker count: forward_backward, apply, the whole step */
    double *t_fb[MAX_WORKERS], *t_ap[MAX_WORKERS], *ts[MAX_WORKERS];
    int same_loss = 1;
    for (size_t w = 0; w < n_wk; w++) {
        t_fb[w] = xmalloc((size_t)reps * sizeof(double));
        t_ap[w] = xmalloc((size_t)reps * sizeof(double));
        ts[w] = xmalloc((size_t)reps * sizeof(double));
    }
    /* The GEMM bounds, on one stream and on `threads` streams at once. */
    const size_t top = workers[n_wk - 1];
    conv_gemms cg;
    double f_gemms = 0.0;
    conv_gemms_create(&cg, B, top, rng, &f_gemms);
    gemm_streams *streams = NULL;
    if (gemm_streams_create(&streams, top, conv_step_share, &cg) != 0) {
        fprintf(stderr, "vae_bench_conv: cannot start %zu GEMM threads\n", top - 1);
        return 1;
    }
    for (int r = -warmup; r < reps; r++) {
        double g0 = now_ms();
        conv_step_share(&cg, 0, B, 0, 1);
        double g1 = now_ms() - g0;
        double gn = n_wk > 1 ? gemm_streams_run(streams, 0, B) : 0.0;
        if (r >= 0) {
            t[r] = g1;
            t2[r] = gn;
        }
        for (size_t w = 0; w < n_wk; w++) {
            vae_epoch_stats st = {.size = sizeof st};
            double t0 = now_ms();
            check(vae_trainer_forward_backward(tr[w], data, B, NULL, &st),
                  "vae_trainer_forward_backward");
            double t1 = now_ms();
            check(vae_trainer_apply(tr[w]), "vae_trainer_apply");
            double t2v = now_ms();
            if (r >= 0) {
                t_fb[w][r] = t1 - t0;
                t_ap[w][r] = t2v - t1;
                ts[w][r] = t2v - t0;
            }
            loss[w] = st.loss;
        }
        for (size_t w = 1; w < n_wk; w++)
            same_loss &= loss[w] == loss[0];
    }
    char bound1[48], boundn[48];
    snprintf(bound1, sizeof bound1, "conv.gemm.step.1stream");
    snprintf(boundn, sizeof boundn, "conv.gemm.step.%zustreams", top);
    const timing g1s = timing_of(t, reps), gns = n_wk > 1 ? timing_of(t2, reps) : g1s;
    size_t n_params = vae_model_param_count(m[0]);
    say("\n(b) conv VAE training step (%zu parameters), %.1f MFLOP of GEMMs per step\n",
        n_params, f_step * 1e-6);
    say("%-30s %9s %9s %9s\n", "pass", "ms", "min ms", "GFLOP/s");
    double step_ms[MAX_WORKERS]; /* of the text: the middle element */
    timing s_st[MAX_WORKERS];
    for (size_t w = 0; w < n_wk; w++) {
        const char *bd = w == 0 ? bound1 : boundn;
        double bms = w == 0 ? g1s.median : gns.median;
        snprintf(name, sizeof name, "trainer_forward_backward, %zu worker%s", workers[w],
                 plural(workers[w]));
        add_row(0, 'b', "conv.forward_backward", name, workers[w], B, t_fb[w], reps, f_step, bd,
                bms);
        snprintf(name, sizeof name, "trainer_apply (Adam), %zu worker%s", workers[w],
                 plural(workers[w]));
        add_row(0, 'b', "conv.optimizer", name, workers[w], B, t_ap[w], reps, 0.0, NULL, 0.0);
        snprintf(name, sizeof name, "training step, %zu worker%s", workers[w],
                 plural(workers[w]));
        s_st[w] = add_row(1, 'b', "conv.step", name, workers[w], B, ts[w], reps, f_step, bd, bms);
        step_ms[w] = ts[w][reps / 2];
        free(t_fb[w]);
        free(t_ap[w]);
        free(ts[w]);
    }
    add_row(1, 'b', bound1, "step's GEMMs, 1 stream", 0, B, t, reps, f_gemms, NULL, 0.0);
    double g1_ms = t[reps / 2], gn_ms = g1_ms;
    if (n_wk > 1) {
        snprintf(name, sizeof name, "same, %zu streams at once", top);
        add_row(1, 'b', boundn, name, 0, B, t2, reps, f_gemms, NULL, 0.0);
        gn_ms = t2[reps / 2];
    }
    gemm_streams_free(streams);
    conv_gemms_free(&cg);
    if (f_gemms < 0.999 * f_step || f_gemms > 1.001 * f_step)
        say("(the bare GEMMs count %.1f MFLOP against the %.1f of the layers' formula: "
            "their shapes no longer match the model)\n",
            f_gemms * 1e-6, f_step * 1e-6);
    say("1 worker: step / its GEMMs on one stream %.2f (target <= %.2f: %s)",
        step_ms[0] / g1_ms, TARGET_1W_RATIO,
        step_ms[0] / g1_ms <= TARGET_1W_RATIO ? "met" : "not met");
    if (n_wk > 1)
        say("; %zu workers: %zu-stream GEMMs / step %.2f (target >= %.2f: %s)", top, top,
            gn_ms / step_ms[1], TARGET_NW_EFF,
            gn_ms / step_ms[1] >= TARGET_NW_EFF ? "met" : "not met");
    say("\n");
    say("a 60000-image epoch at these step times:");
    for (size_t w = 0; w < n_wk; w++)
        say("%s %.1f s with %zu worker%s", w ? "," : "",
            step_ms[w] * 1e-3 * 60000.0 / (double)B, workers[w], plural(workers[w]));
    if (n_wk > 1)
        say(" (%.2f of 1 worker)", step_ms[1] / step_ms[0]);
    say("\n");

    /* (c) inference on the first model with each worker count. */
    double f_fwd1 = 0.0; /* GEMM FLOPs of one forward pass per sample */
    for (size_t i = 0; i < N_CONV; i++)
        f_fwd1 += conv_flops(i, 1);
    for (size_t i = 0; i < 4; i++)
        f_fwd1 += 2.0 * (double)(dense[i][0] * dense[i][1]);
    size_t max_infer = 0;
    for (size_t k = 0; k < N_INFER; k++)
        if (infer_batches[k] > max_infer)
            max_infer = infer_batches[k];
    float *xi = xmalloc_floats(max_infer * 784), *yi = xmalloc_floats(max_infer * 784);
    float *mu = xmalloc_floats(max_infer * 20), *lv = xmalloc_floats(max_infer * 20);
    check(vae_rng_uniform(rng, xi, max_infer * 784), "vae_rng_uniform");
    for (size_t w = 0; w < n_wk; w++)
        check(vae_context_reserve(ctx[w], m[0], max_infer), "vae_context_reserve");
    say("\n(c) inference: vae_encode + vae_decode of the means, and vae_reconstruct\n");
    say("%-30s %9s %9s %9s\n", "pass", "ms", "min ms", "GFLOP/s");
    timing i_rec[N_INFER][MAX_WORKERS];
    for (size_t k = 0; k < N_INFER; k++) {
        size_t n = infer_batches[k];
        int rk = n == 1 ? reps : infer_reps, wk = n == 1 ? warmup : 1;
        double *te[MAX_WORKERS], *trc[MAX_WORKERS];
        for (size_t w = 0; w < n_wk; w++) {
            te[w] = xmalloc((size_t)rk * sizeof(double));
            trc[w] = xmalloc((size_t)rk * sizeof(double));
        }
        for (int r = -wk; r < rk; r++)
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
        say("batch %zu, %d reps:\n", n, rk);
        for (size_t w = 0; w < n_wk; w++) {
            snprintf(name, sizeof name, "  encode+decode, %zu worker%s", workers[w],
                     plural(workers[w]));
            snprintf(id, sizeof id, "conv.encode_decode.b%zu", n);
            add_row(1, 'c', id, name, workers[w], n, te[w], rk, f_fwd1 * (double)n, NULL, 0.0);
            snprintf(name, sizeof name, "  reconstruct, %zu worker%s", workers[w],
                     plural(workers[w]));
            snprintf(id, sizeof id, "conv.reconstruct.b%zu", n);
            i_rec[k][w] = add_row(1, 'c', id, name, workers[w], n, trc[w], rk,
                                  f_fwd1 * (double)n, NULL, 0.0);
            free(te[w]);
            free(trc[w]);
        }
    }
    say("\nloss %.2f after the last step (synthetic data)", loss[0]);
    if (n_wk > 1)
        say(", %s with %zu workers", same_loss ? "bit-identical" : "DIFFERENT (a bug)",
            threads);
    say("\n");

    if (json) {
        FILE *jf = json_file(json_path);
        json_writer jw;
        json_init(&jw, jf);
        json_open(&jw, NULL, '{');
        json_header(&jw, "conv 1x28x28-32x14x14-64x7x7-256-20, relu, bernoulli");
        json_open(&jw, "settings", '{');
        json_run_settings(&jw, B, block_count(B), reps, warmup, infer_reps, threads, ctx, n_wk,
                          n_params);
        json_int(&jw, "conv_chunk_floats", (long long)CONV_CHUNK_FLOATS);
        json_close(&jw, '}');
        json_rows(&jw);
        json_open(&jw, "summary", '{');
        json_step_summary(&jw, s_st[0].median, g1s.median, TARGET_1W_RATIO, n_wk > 1 ? top : 1,
                          n_wk > 1 ? s_st[1].median : 0.0, gns.median, TARGET_NW_EFF);
        json_num(&jw, "mflop_per_step", f_step * 1e-6);
        json_num(&jw, "mflop_gemms_per_step", f_gemms * 1e-6);
        for (size_t k = 0; k < N_INFER; k++)
            for (size_t w = 0; w < n_wk; w++) {
                snprintf(id, sizeof id, "reconstruct_b%zu_ms_%zuw", infer_batches[k],
                         workers[w]);
                json_num(&jw, id, i_rec[k][w].median);
            }
        json_num(&jw, "loss_last", loss[0]);
        json_bool(&jw, "bit_identical", same_loss);
        json_num(&jw, "peak_rss_mb", peak_rss_mb());
        json_close(&jw, '}');
        json_close(&jw, '}');
        json_finish(&jw, jf);
    }

    free(xi);
    free(yi);
    free(mu);
    free(lv);
    free(data);
    for (size_t w = 0; w < n_wk; w++) {
        vae_trainer_free(tr[w]);
        vae_context_free(ctx[w]);
        vae_model_free(m[w]);
    }
    vae_optimizer_free(opt);
    vae_elbo_free(e);
    vae_rng_free(rng);
    free(t);
    free(t2);
    return same_loss ? 0 : 1;
}
