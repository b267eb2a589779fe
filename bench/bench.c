/*
 * vae_bench: where the time of one training step, and of inference, of the
 * 784-400-20 VAE goes, against the bare GEMMs of the same work.
 *
 *   OPENBLAS_NUM_THREADS=1 vae_bench [--batch 128] [--reps 200] [--model-threads 2]
 *                                    [--infer-reps 20] [--epoch-images 60000]
 *                                    [--json [FILE]]
 *
 * --json alone prints one JSON object for the run on stdout instead of the
 * text tables; --json FILE prints the tables and writes the object to FILE
 * ("-" is stdout). The object holds the machine (CPU model, cores, the BLAS
 * and its build configuration, the thread settings of the environment and
 * of the BLAS), the library version, the settings of the run, every row
 * below (id, name, workers, median, min, p10, p90, max, repetitions,
 * GFLOP/s, the id and time of its bound and the ratio to it), and a
 * summary against the targets: the step with one worker at most 1.10 times
 * its GEMMs on one stream; with N workers at least 0.85 of the N-stream
 * GEMM bound.
 *
 * Five groups of rows, each the median (and minimum) over the timed
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
 *      at most 64 samples (ceil(B/64) blocks of nearly equal size) and
 *      worker w takes blocks w, w + N, ... Each worker count has its own
 *      model, context and trainer, made from the same seeds, so their
 *      losses must agree to the bit (checked). With N > 1 the BLAS is set to
 *      one thread for the whole run (vae_blas_set_threads(1)), as the
 *      context requires; with --model-threads 1 it keeps
 *      OPENBLAS_NUM_THREADS.
 *  (b2) the steps of (b) and the GEMM bounds of (c) again, each repeated
 *      on its own as a training loop repeats its step (in (b) each run
 *      follows the others, which take the cache: the two models' state,
 *      parameters, gradients and Adam's moments, is 10 MB each), in 5
 *      segments that alternate: the steady-state ratios.
 *  (c) the bare cblas_sgemm calls of that step, with the same shapes,
 *      transpose flags and leading dimensions as lib/nn/dense.c: forward and
 *      dW for every layer, dX for all but the first. Per layer at the whole
 *      batch (the reference of (a)); the 11 GEMMs per block that one step
 *      issues, one block after the other on one GEMM stream (the bound of
 *      the one-worker step); and the N-stream bound of the N-worker step:
 *      each worker's blocks' GEMMs on its own thread (the BLAS at one
 *      thread), all N threads released at once and timed until the last
 *      one ends. Both sets are timed alternately with the training steps of
 *      (b), in the same loop, so that machine noise affects all alike.
 *  (d) inference with each worker count: vae_encode then vae_decode of the
 *      means, and vae_reconstruct (the same GEMMs), at batch 1 and batch
 *      1000, against the 4 bare forward GEMMs per block on one stream and
 *      on N streams, timed alternately in one loop. Batch 1 runs --reps
 *      repetitions, batch 1000 --infer-reps.
 *  (e) one epoch of --epoch-images synthetic images (default 60000, the
 *      size of MNIST; 0 skips it) through vae_trainer_train_epoch with N
 *      workers, batch --batch, Adam, shuffled: seconds, and the peak RSS of
 *      the process when it ends. It runs first, before the other groups
 *      allocate anything, so that the peak is the epoch's own. The images
 *      are random bytes, stored as an IDX file in $TMPDIR (removed once
 *      loaded) and read by vae_dataset_load_idx as MNIST is: one byte per
 *      pixel, scaled to [0, 1] per batch.
 *  (f) Adam alone, one worker: vae_trainer_apply on a slab of zero
 *      gradients (so the overflow test reads nothing, and the update does
 *      all its arithmetic: a square root and a division per parameter), for
 *      a 784-60-20 model whose parameters, gradient and two moments (1.6 MB)
 *      stay in a core's L2 cache, and for the step's 784-400-20 model (10.4
 *      MB): ns per parameter. The first is the update's arithmetic rate, the
 *      floor of its share of a step; the step's own update (b) also waits
 *      for the memory the GEMMs have taken over.
 * GFLOP/s counts only GEMM work (2 B in out per GEMM; docs/math.md, "FLOP
 * count of a training step"). "x bound" is the row's time over its bound:
 * the time of its own bare GEMMs on one stream for one worker, on N streams
 * at once for N workers.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gemm_streams.h"
#include "report.h"
#include "vae/vae.h"

#define N_DATA_BATCHES 8
#define MAX_WORKERS 2 /* worker counts compared: 1 and --model-threads */
#define TARGET_1W_RATIO 1.10 /* step / its GEMMs on one stream, at most */
#define TARGET_NW_EFF 0.85   /* N-stream GEMM bound / N-worker step, at least */

/* Inference batch sizes of (d). */
static const size_t infer_batches[] = {1, 1000};
#define N_INFER (sizeof infer_batches / sizeof *infer_batches)

/* ---- output ------------------------------------------------------------ */

static void print_header(void)
{
    say("%-34s %9s %9s %9s %9s %8s\n", "pass", "ms", "min ms", "p90 ms", "GFLOP/s", "x bound");
    say("%-34s %9s %9s %9s %9s %8s\n", "----", "--", "------", "------", "-------", "-------");
}

/* Records a row and prints it. */
static void add_row(char section, const char *id, const char *name, size_t workers,
                    size_t batch, timing t, double flops, const char *bound, double bound_ms)
{
    report_add(section, id, name, workers, batch, t, flops, bound, bound_ms);
    say("%-34s %9.4f %9.4f %9.4f", name, t.median, t.min, t.p90);
    if (flops > 0.0)
        say(" %9.1f", flops / (t.median * 1e6));
    else if (bound)
        say(" %9s", "");
    if (bound && bound_ms > 0.0)
        say(" %8.2f", t.median / bound_ms);
    say("\n");
}

/* ---- helpers ----------------------------------------------------------- */

/* n floats uniform in [-a, a). */
static float *random_floats(vae_rng *rng, size_t n, float a)
{
    float *p = xmalloc(n * sizeof *p);
    check(vae_rng_uniform(rng, p, n), "vae_rng_uniform");
    for (size_t i = 0; i < n; i++)
        p[i] = a * (2.0f * p[i] - 1.0f);
    return p;
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


static void put_be32(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* `count` random 28x28 byte images written as an IDX file in $TMPDIR (or
 * /tmp), loaded as a dataset, the file removed. Exits on failure. */
static vae_dataset *synthetic_mnist(vae_rng *rng, size_t count)
{
    const char *dir = getenv("TMPDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/vae_bench_images_XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "wb");
    if (!f) {
        fprintf(stderr, "vae_bench: cannot create a temporary file in %s\n",
                dir && *dir ? dir : "/tmp");
        exit(1);
    }
    unsigned char head[16];
    put_be32(head, 0x0803); /* unsigned bytes, 3 dimensions */
    put_be32(head + 4, (unsigned)count);
    put_be32(head + 8, 28);
    put_be32(head + 12, 28);
    int ok = fwrite(head, 1, sizeof head, f) == sizeof head;
    float u[784];
    unsigned char px[784];
    for (size_t i = 0; ok && i < count; i++) {
        check(vae_rng_uniform(rng, u, 784), "vae_rng_uniform");
        for (size_t j = 0; j < 784; j++)
            px[j] = (unsigned char)(u[j] * 256.0f > 255.0f ? 255.0f : u[j] * 256.0f);
        ok = fwrite(px, 1, sizeof px, f) == sizeof px;
    }
    ok &= fclose(f) == 0;
    vae_dataset *ds = NULL;
    int rc = ok ? vae_dataset_load_idx(&ds, path, NULL) : VAE_ERR_IO;
    unlink(path);
    if (!ok) {
        fprintf(stderr, "vae_bench: cannot write %s\n", path);
        exit(1);
    }
    check(rc, "vae_dataset_load_idx");
    return ds;
}

/* (f): median ms of vae_trainer_apply (Adam, zero gradients) on a
 * 784-hidden-20 MLP, one worker; *params receives its parameter count. */
static timing adam_alone(size_t hidden, int reps, size_t *params)
{
    mlp_trainer r;
    mlp_trainer_create(&r, hidden, 1, 0);
    vae_model_params(r.m, params);
    double *t = xmalloc((size_t)reps * sizeof *t);
    for (int k = -reps / 10 - 2; k < reps; k++) {
        double t0 = now_ms();
        check(vae_trainer_apply(r.tr), "vae_trainer_apply");
        if (k >= 0)
            t[k] = now_ms() - t0;
    }
    timing s = timing_of(t, reps);
    free(t);
    mlp_trainer_free(&r);
    return s;
}

/* (e): one epoch with `workers` workers; returns its seconds and sets the
 * final loss. */
static double run_epoch(size_t images, size_t batch, size_t workers, double *loss)
{
    vae_rng *rng = NULL;
    check(vae_rng_create(&rng, 1234), "vae_rng_create");
    vae_dataset *ds = synthetic_mnist(rng, images);
    mlp_trainer r;
    mlp_trainer_create(&r, 400, workers, 0);
    vae_train_options o;
    check(vae_train_options_init(&o, sizeof o), "vae_train_options_init");
    o.batch_size = batch;
    vae_epoch_stats st = {.size = sizeof st};
    double t0 = now_ms();
    check(vae_trainer_train_epoch(r.tr, ds, &o, &st), "vae_trainer_train_epoch");
    double sec = (now_ms() - t0) * 1e-3;
    *loss = st.loss;
    mlp_trainer_free(&r);
    vae_dataset_free(ds);
    vae_rng_free(rng);
    return sec;
}

int main(int argc, char **argv)
{
    bench_program = "vae_bench";
    size_t B = 128, epoch_images = 60000;
    int reps = 200, infer_reps = 20;
    size_t model_threads = 2;
    int json = 0;
    const char *json_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--batch") && i + 1 < argc) {
            B = (size_t)parse_flag("--batch", argv[++i], 1, 65536);
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = (int)parse_flag("--reps", argv[++i], 1, 1000000);
        } else if (!strcmp(argv[i], "--infer-reps") && i + 1 < argc) {
            infer_reps = (int)parse_flag("--infer-reps", argv[++i], 1, 1000000);
        } else if (!strcmp(argv[i], "--model-threads") && i + 1 < argc) {
            model_threads = (size_t)parse_flag("--model-threads", argv[++i], 1, MAX_STREAMS);
        } else if (!strcmp(argv[i], "--epoch-images") && i + 1 < argc) {
            epoch_images = (size_t)parse_flag("--epoch-images", argv[++i], 0, 10000000);
        } else if (!strcmp(argv[i], "--json")) {
            json = 1;
            /* an optional FILE: the next argument unless it is a flag */
            if (i + 1 < argc && (argv[i + 1][0] != '-' || !strcmp(argv[i + 1], "-")))
                json_path = argv[++i];
        } else {
            fprintf(stderr,
                    "usage: %s [--batch N] [--reps N] [--model-threads N] [--infer-reps N]\n"
                    "          [--epoch-images N] [--json [FILE]]\n"
                    "Times 1 worker and N workers (default 2; 1: one worker only, the BLAS\n"
                    "left as OPENBLAS_NUM_THREADS sets it) against their GEMMs on one and\n"
                    "on N streams. --infer-reps: repetitions of the batch-1000 inference\n"
                    "rows (default 20). --epoch-images: images of the timed epoch with N\n"
                    "workers (default 60000; 0 skips it). --json: one JSON object on stdout\n"
                    "instead of the tables; --json FILE: the tables, and the object in FILE.\n",
                    argv[0]);
            return 2;
        }
    }
    text_out = json && !json_path ? NULL : stdout;
    /* Worker counts: 1, and model_threads when it is more. */
    size_t workers[MAX_WORKERS] = {1, model_threads};
    const size_t n_wk = model_threads > 1 ? 2 : 1;
    const size_t top = workers[n_wk - 1]; /* the largest worker count */
    /* Several workers need a single-threaded BLAS; set it before any timing
     * so that every row, bare GEMMs included, runs with the same BLAS. */
    if (n_wk > 1)
        check(vae_blas_set_threads(1), "vae_blas_set_threads");

    const int warmup = reps / 10 > 5 ? reps / 10 : 5;
    const char *thr = getenv("OPENBLAS_NUM_THREADS");
    char bound1[48], boundn[48];
    snprintf(bound1, sizeof bound1, "gemm.step.1stream");
    snprintf(boundn, sizeof boundn, "gemm.step.%zustreams", top);

    say("libvae %s, 784-400-20 VAE, batch %zu (%zu block%s of <= %d), %d reps after %d "
        "warm-up, OPENBLAS_NUM_THREADS=%s, BLAS threads %zu, workers 1",
        vae_version_string(), B, block_count(B), plural(block_count(B)), BENCH_BLOCK, reps,
        warmup, thr ? thr : "(unset)", vae_blas_threads());
    if (n_wk > 1)
        say(" and %zu", model_threads);
    say("\nBLAS: %s\n", blas_description());

    /* ---- (e) first, so that its peak RSS is its own. */
    double epoch_s = 0.0, epoch_loss = 0.0, epoch_rss = 0.0;
    if (epoch_images > 0) {
        epoch_s = run_epoch(epoch_images, B, top, &epoch_loss);
        epoch_rss = peak_rss_mb();
    }

    vae_rng *rng = NULL;
    check(vae_rng_create(&rng, 42), "vae_rng_create");
    int max_reps = reps > infer_reps ? reps : infer_reps;
    double *t = xmalloc((size_t)max_reps * sizeof *t);
    double *t2 = xmalloc((size_t)max_reps * sizeof *t2);
    double *t3 = xmalloc((size_t)max_reps * sizeof *t3);

    /* FLOPs of each GEMM kind per layer at the whole batch, of the step and
     * of one forward pass per sample. */
    double f_layer[MLP_LAYERS];
    for (int l = 0; l < MLP_LAYERS; l++)
        f_layer[l] = 2.0 * (double)B * (double)mlp_layers[l].in * (double)mlp_layers[l].out;
    const double f_step = mlp_step_flops(B), f_fwd1 = mlp_forward_flops(1);

    /* ---- (c) first: the bare GEMMs give the reference for the others. */
    size_t max_rows = B;
    for (size_t k = 0; k < N_INFER; k++)
        if (infer_batches[k] > max_rows)
            max_rows = infer_batches[k];
    gemm_set g;
    if (gemm_set_create(&g, max_rows, top, rng) != 0) {
        fprintf(stderr, "vae_bench: out of memory for the GEMM buffers\n");
        return 1;
    }
    gemm_streams *streams = NULL;
    if (gemm_streams_create(&streams, top, gemm_set_share, &g) != 0) {
        fprintf(stderr, "vae_bench: cannot start %zu GEMM threads\n", top - 1);
        return 1;
    }
    timing g_fwd[MLP_LAYERS], g_dw[MLP_LAYERS], g_dx[MLP_LAYERS];
    for (int l = 0; l < MLP_LAYERS; l++) {
        for (int r = -warmup; r < reps; r++) {
            double t0 = now_ms();
            gemm_forward(&g, l, 0, B);
            double t1 = now_ms();
            gemm_dw(&g, l, 0, B, 0);
            double t2v = now_ms();
            if (l > 0)
                gemm_dx(&g, l, 0, B);
            double t3v = now_ms();
            if (r >= 0) {
                t[r] = t1 - t0;
                t2[r] = t2v - t1;
                t3[r] = t3v - t2v;
            }
        }
        g_fwd[l] = timing_of(t, reps);
        g_dw[l] = timing_of(t2, reps);
        g_dx[l] = timing_of(t3, reps);
    }
    /* ---- (a) standalone layers. */
    timing l_fwd[MLP_LAYERS], l_bwd[MLP_LAYERS];
    for (int l = 0; l < MLP_LAYERS; l++) {
        size_t in = mlp_layers[l].in, out = mlp_layers[l].out;
        vae_layer *layer = NULL;
        check(vae_layer_dense_create(&layer, in, out, mlp_layers[l].act),
              "vae_layer_dense_create");
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
        l_fwd[l] = timing_of(t, reps);
        l_bwd[l] = timing_of(t2, reps);
        vae_layer_free(layer);
        free(x);
        free(y);
        free(dy);
        free(dx);
    }

    /* ---- (b) the training step: per worker count a model, a context and a
     * trainer, all from the same seeds. */
    mlp_trainer run[MAX_WORKERS];
    vae_context *ctx[MAX_WORKERS] = {NULL};
    for (size_t w = 0; w < n_wk; w++) {
        mlp_trainer_create(&run[w], 400, workers[w], B);
        ctx[w] = run[w].ctx;
    }
    vae_model *const model = run[0].m;
    size_t n_params = vae_model_param_count(model);
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
    /* The bare GEMMs, on one stream and on N, and the library's steps
     * alternate within one loop, so that a noisy machine slows all alike
     * and their ratios stay meaningful. */
    for (int r = -warmup; r < reps; r++) {
        const float *x = data + (size_t)((r + warmup) % N_DATA_BATCHES) * B * 784;
        double tg = now_ms();
        gemm_step_share(&g, B, 0, 1);
        double tg1 = now_ms();
        double tgn = n_wk > 1 ? gemm_streams_run(streams, GEMM_JOB_STEP, B) : 0.0;
        if (r >= 0) {
            t[r] = tg1 - tg;
            t2[r] = tgn;
        }
        for (size_t w = 0; w < n_wk; w++) {
            vae_epoch_stats st = {.size = sizeof st};
            double t0 = now_ms();
            check(vae_trainer_forward_backward(run[w].tr, x, B, NULL, &st),
                  "vae_trainer_forward_backward");
            double t1 = now_ms();
            check(vae_trainer_apply(run[w].tr), "vae_trainer_apply");
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
    timing g_step = timing_of(t, reps);
    timing g_stepn = n_wk > 1 ? timing_of(t2, reps) : g_step;

    /* (b2) Each of the same four runs repeated on its own, as a training
     * loop repeats its step (its model's state, 10 MB with Adam's moments,
     * stays in cache from one step to the next, where above each step
     * follows the other runs), in STEADY_SEGMENTS segments that alternate
     * so that noise still hits all alike. */
    enum { STEADY_SEGMENTS = 5 };
    const int seg_reps = reps / STEADY_SEGMENTS > 0 ? reps / STEADY_SEGMENTS : 1;
    const int steady_n = seg_reps * STEADY_SEGMENTS;
    double *ts[2 + MAX_WORKERS];
    for (size_t c = 0; c < 2 + n_wk; c++)
        ts[c] = xmalloc((size_t)steady_n * sizeof(double));
    for (int sgm = 0; sgm < STEADY_SEGMENTS; sgm++)
        for (size_t c = 0; c < 2 + n_wk; c++) {
            if (c == 1 && n_wk < 2)
                continue;
            for (int r = -2; r < seg_reps; r++) {
                const float *x = data + (size_t)((r + 2) % N_DATA_BATCHES) * B * 784;
                double t0 = now_ms(), ms;
                if (c == 0) {
                    gemm_step_share(&g, B, 0, 1);
                    ms = now_ms() - t0;
                } else if (c == 1) {
                    ms = gemm_streams_run(streams, GEMM_JOB_STEP, B);
                } else {
                    check(vae_trainer_forward_backward(run[c - 2].tr, x, B, NULL, NULL),
                          "vae_trainer_forward_backward");
                    check(vae_trainer_apply(run[c - 2].tr), "vae_trainer_apply");
                    ms = now_ms() - t0;
                }
                if (r >= 0)
                    ts[c][sgm * seg_reps + r] = ms;
            }
        }
    timing y_gemm = timing_of(ts[0], steady_n);
    timing y_gemmn = n_wk > 1 ? timing_of(ts[1], steady_n) : y_gemm;
    timing y_step[MAX_WORKERS];
    for (size_t w = 0; w < n_wk; w++)
        y_step[w] = timing_of(ts[2 + w], steady_n);
    for (size_t c = 0; c < 2 + n_wk; c++)
        free(ts[c]);
    timing s_fb[MAX_WORKERS], s_ap[MAX_WORKERS], s_st[MAX_WORKERS];
    for (size_t w = 0; w < n_wk; w++) {
        s_fb[w] = timing_of(t_fb[w], reps);
        s_ap[w] = timing_of(t_ap[w], reps);
        s_st[w] = timing_of(t_st[w], reps);
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
        check(vae_context_reserve(ctx[w], model, max_infer), "vae_context_reserve");
    timing i_gemm[N_INFER], i_gemmn[N_INFER], i_ed[N_INFER][MAX_WORKERS],
        i_rec[N_INFER][MAX_WORKERS];
    for (size_t k = 0; k < N_INFER; k++) {
        size_t n = infer_batches[k];
        int rk = n <= BENCH_BLOCK ? reps : infer_reps;
        int wk = rk / 10 > 2 ? rk / 10 : 2;
        double *te[MAX_WORKERS], *trc[MAX_WORKERS];
        for (size_t w = 0; w < n_wk; w++) {
            te[w] = xmalloc((size_t)rk * sizeof(double));
            trc[w] = xmalloc((size_t)rk * sizeof(double));
        }
        for (int r = -wk; r < rk; r++) {
            double t0 = now_ms();
            gemm_infer_share(&g, n, 0, 1);
            double t1 = now_ms();
            double tn = n_wk > 1 ? gemm_streams_run(streams, GEMM_JOB_INFER, n) : 0.0;
            if (r >= 0) {
                t[r] = t1 - t0;
                t2[r] = tn;
            }
            for (size_t w = 0; w < n_wk; w++) {
                double a = now_ms();
                check(vae_encode(ctx[w], model, xi, n, mu, lv), "vae_encode");
                check(vae_decode(ctx[w], model, mu, n, yi), "vae_decode");
                double b = now_ms();
                check(vae_reconstruct(ctx[w], model, xi, n, yi), "vae_reconstruct");
                double c = now_ms();
                if (r >= 0) {
                    te[w][r] = b - a;
                    trc[w][r] = c - b;
                }
            }
        }
        i_gemm[k] = timing_of(t, rk);
        i_gemmn[k] = n_wk > 1 ? timing_of(t2, rk) : i_gemm[k];
        for (size_t w = 0; w < n_wk; w++) {
            i_ed[k][w] = timing_of(te[w], rk);
            i_rec[k][w] = timing_of(trc[w], rk);
            free(te[w]);
            free(trc[w]);
        }
    }

    /* ---- report. */
    char name[64], id[48], bid[48];
    say("\n(a) standalone layers via vae_layer_forward/backward "
        "(include copies of x, y, dy into the layer's cache)\n");
    print_header();
    for (int l = 0; l < MLP_LAYERS; l++) {
        snprintf(name, sizeof name, "%s fwd", mlp_layers[l].name);
        snprintf(id, sizeof id, "layer.%s.fwd", mlp_layers[l].id);
        snprintf(bid, sizeof bid, "gemm.%s.fwd", mlp_layers[l].id);
        add_row('a', id, name, 1, B, l_fwd[l], f_layer[l], bid, g_fwd[l].median);
        snprintf(name, sizeof name, "%s bwd%s", mlp_layers[l].name, l == 0 ? " (no dX)" : "");
        snprintf(id, sizeof id, "layer.%s.bwd", mlp_layers[l].id);
        snprintf(bid, sizeof bid, l == 0 ? "gemm.%s.dw" : "gemm.%s.dw+dx", mlp_layers[l].id);
        double gm = g_dw[l].median + (l > 0 ? g_dx[l].median : 0.0);
        add_row('a', id, name, 1, B, l_bwd[l], f_layer[l] * (l == 0 ? 1.0 : 2.0), bid, gm);
    }

    say("\n(b) training step, vae_model_create_mlp(784, {400}, 1, 20, RELU, BERNOULLI), "
        "Adam, %zu parameters, batch %zu in %zu block%s\n",
        n_params, B, block_count(B), plural(block_count(B)));
    print_header();
    for (size_t w = 0; w < n_wk; w++) {
        /* every GEMM of the step is in forward_backward */
        const char *bd = w == 0 ? bound1 : boundn;
        double bms = w == 0 ? g_step.median : g_stepn.median;
        say("%zu worker%s (bound: the step's GEMMs on %zu stream%s):\n", workers[w],
            plural(workers[w]), workers[w], plural(workers[w]));
        add_row('b', "forward_backward", "  trainer_forward_backward", workers[w], B, s_fb[w],
                f_step, bd, bms);
        add_row('b', "optimizer", "  trainer_apply (Adam)", workers[w], B, s_ap[w], 0.0, NULL,
                0.0);
        add_row('b', "step", "  training step", workers[w], B, s_st[w], f_step, bd, bms);
    }
    say("(b2) the same, each run repeated on its own (steady state, as in a training loop), "
        "%d segments alternating\n",
        STEADY_SEGMENTS);
    print_header();
    char ybound1[64], yboundn[64];
    snprintf(ybound1, sizeof ybound1, "steady.%s", bound1);
    snprintf(yboundn, sizeof yboundn, "steady.%s", boundn);
    for (size_t w = 0; w < n_wk; w++) {
        snprintf(name, sizeof name, "  training step, %zu worker%s", workers[w],
                 plural(workers[w]));
        add_row('B', "steady.step", name, workers[w], B, y_step[w], f_step,
                w == 0 ? ybound1 : yboundn, w == 0 ? y_gemm.median : y_gemmn.median);
    }
    add_row('B', ybound1, "  GEMMs, 1 stream", 0, B, y_gemm, f_step, NULL, 0.0);
    if (n_wk > 1) {
        snprintf(name, sizeof name, "  GEMMs, %zu streams at once", top);
        add_row('B', yboundn, name, 0, B, y_gemmn, f_step, NULL, 0.0);
    }

    say("\n(c) bare cblas_sgemm, same shapes and flags (the GEMM bounds)\n");
    print_header();
    double whole = 0.0;
    for (int l = 0; l < MLP_LAYERS; l++) {
        snprintf(name, sizeof name, "%s X.W^T", mlp_layers[l].name);
        snprintf(id, sizeof id, "gemm.%s.fwd", mlp_layers[l].id);
        add_row('c', id, name, 0, B, g_fwd[l], f_layer[l], NULL, 0.0);
        snprintf(name, sizeof name, "%s dZ^T.X", mlp_layers[l].name);
        snprintf(id, sizeof id, "gemm.%s.dw", mlp_layers[l].id);
        add_row('c', id, name, 0, B, g_dw[l], f_layer[l], NULL, 0.0);
        whole += g_fwd[l].median + g_dw[l].median;
        if (l > 0) {
            snprintf(name, sizeof name, "%s dZ.W", mlp_layers[l].name);
            snprintf(id, sizeof id, "gemm.%s.dx", mlp_layers[l].id);
            add_row('c', id, name, 0, B, g_dx[l], f_layer[l], NULL, 0.0);
            whole += g_dx[l].median;
        }
    }
    snprintf(name, sizeof name, "11 GEMMs x %zu block%s, 1 stream", block_count(B),
             plural(block_count(B)));
    add_row('c', bound1, name, 0, B, g_step, f_step, NULL, 0.0);
    if (n_wk > 1) {
        snprintf(name, sizeof name, "same, %zu streams at once", top);
        add_row('c', boundn, name, 0, B, g_stepn, f_step, NULL, 0.0);
    }
    say("one step's GEMMs block after block on one stream and, with N workers, each worker's\n"
        "blocks on its own thread, all at once; timed alternately with the training steps\n"
        "of (b) in the same loop. The rows above at the whole batch add up to %.4f ms\n",
        whole);

    say("\n(d) inference: vae_encode + vae_decode of the means, and vae_reconstruct\n");
    print_header();
    for (size_t k = 0; k < N_INFER; k++) {
        size_t n = infer_batches[k];
        double f = f_fwd1 * (double)n;
        char b1[48], bn[48];
        snprintf(b1, sizeof b1, "gemm.infer.b%zu.1stream", n);
        snprintf(bn, sizeof bn, "gemm.infer.b%zu.%zustreams", n, top);
        say("batch %zu (%zu block%s), %d reps:\n", n, block_count(n), plural(block_count(n)),
            i_gemm[k].n);
        for (size_t w = 0; w < n_wk; w++) {
            const char *bd = w == 0 ? b1 : bn;
            double bms = w == 0 ? i_gemm[k].median : i_gemmn[k].median;
            snprintf(name, sizeof name, "  encode+decode, %zu worker%s", workers[w],
                     plural(workers[w]));
            snprintf(id, sizeof id, "encode_decode.b%zu", n);
            add_row('d', id, name, workers[w], n, i_ed[k][w], f, bd, bms);
            snprintf(name, sizeof name, "  reconstruct, %zu worker%s", workers[w],
                     plural(workers[w]));
            snprintf(id, sizeof id, "reconstruct.b%zu", n);
            add_row('d', id, name, workers[w], n, i_rec[k][w], f, bd, bms);
        }
        snprintf(name, sizeof name, "  4 GEMMs x %zu block%s, 1 stream", block_count(n),
                 plural(block_count(n)));
        add_row('d', b1, name, 0, n, i_gemm[k], f, NULL, 0.0);
        if (n_wk > 1) {
            snprintf(name, sizeof name, "  same, %zu streams at once", top);
            add_row('d', bn, name, 0, n, i_gemmn[k], f, NULL, 0.0);
        }
    }

    if (epoch_images > 0) {
        say("\n(e) one epoch of %zu synthetic images, batch %zu, Adam, shuffled, "
            "vae_trainer_train_epoch\n",
            epoch_images, B);
        print_header();
        snprintf(name, sizeof name, "epoch, %zu worker%s", top, plural(top));
        size_t steps = (epoch_images + B - 1) / B;
        double bms = (n_wk > 1 ? g_stepn.median : g_step.median) * (double)steps;
        add_row('e', "epoch", name, top, B, timing_single(epoch_s * 1e3),
                mlp_step_flops(B) * (double)(epoch_images / B) +
                    mlp_step_flops(epoch_images % B),
                n_wk > 1 ? boundn : bound1, bms);
        say("%.2f s (%zu steps; the bound is the step's GEMM bound times the steps), loss "
            "%.2f at the end, peak RSS %.1f MB after it\n",
            epoch_s, steps, epoch_loss, epoch_rss);
    }

    say("\n(f) Adam alone: vae_trainer_apply on zero gradients, 1 worker\n");
    print_header();
    const size_t adam_hidden[2] = {60, 400};
    double adam_ns[2];
    for (int k = 0; k < 2; k++) {
        size_t np = 0;
        timing a = adam_alone(adam_hidden[k], reps, &np);
        adam_ns[k] = a.median * 1e6 / (double)np;
        snprintf(id, sizeof id, "adam.%s", k == 0 ? "in_cache" : "step_model");
        snprintf(name, sizeof name, "  %zu parameters (%.1f MB)", np, (double)np * 16e-6);
        add_row('f', id, name, 1, 0, a, 0.0, NULL, 0.0);
    }
    say("%.3f ns per parameter in cache (the update's arithmetic), %.3f at the step's model's "
        "size\n",
        adam_ns[0], adam_ns[1]);

    /* Against the targets. */
    double ratio1 = s_st[0].median / g_step.median;
    double effn = n_wk > 1 ? g_stepn.median / s_st[1].median : 0.0;
    say("\nsummary: step %.3f ms with 1 worker, its GEMMs on one stream %.3f ms, step/GEMMs "
        "%.2f (target <= %.2f: %s); %.1f MFLOP per step (%.3f per image); %.2f s per "
        "60000-image epoch at this step time\n",
        s_st[0].median, g_step.median, ratio1, TARGET_1W_RATIO,
        ratio1 <= TARGET_1W_RATIO ? "met" : "not met", f_step * 1e-6, f_step * 1e-6 / (double)B,
        s_st[0].median * 1e-3 * 60000.0 / (double)B);
    if (n_wk > 1)
        say("with %zu workers: step %.3f ms (%.2f of 1 worker), %.2f s per epoch at this step "
            "time; the %zu-stream GEMM bound %.3f ms (%.2f of one stream); efficiency "
            "bound/step %.2f (target >= %.2f: %s)\n",
            top, s_st[1].median, s_st[1].median / s_st[0].median,
            s_st[1].median * 1e-3 * 60000.0 / (double)B, top, g_stepn.median,
            g_stepn.median / g_step.median, effn, TARGET_NW_EFF,
            effn >= TARGET_NW_EFF ? "met" : "not met");
    say("steady state (b2): step/GEMMs %.2f with 1 worker", y_step[0].median / y_gemm.median);
    if (n_wk > 1)
        say(", efficiency %.2f with %zu", y_gemmn.median / y_step[1].median, top);
    say("\n");
    for (size_t k = 0; k < N_INFER; k++)
        for (size_t w = 0; w < n_wk; w++)
            say("inference, batch %zu, %zu worker%s: reconstruct %.4f ms = %.2f us per image\n",
                infer_batches[k], workers[w], plural(workers[w]), i_rec[k][w].median,
                i_rec[k][w].median * 1e3 / (double)infer_batches[k]);
    double rss = peak_rss_mb();
    say("loss %.2f after the first step, %.2f after the last (synthetic data)", first_loss[0],
        loss[0]);
    if (n_wk > 1)
        say(", %s with %zu workers", same_loss ? "bit-identical" : "DIFFERENT (a bug)",
            model_threads);
    say("; peak RSS %.1f MB\n", rss);

    if (json) {
        FILE *jf = json_file(json_path);
        json_writer jw;
        json_init(&jw, jf);
        json_open(&jw, NULL, '{');
        json_header(&jw, "mlp 784-400-20, relu, bernoulli");
        json_open(&jw, "settings", '{');
        json_run_settings(&jw, B, block_count(B), reps, warmup, infer_reps, model_threads, ctx,
                          n_wk, n_params);
        json_int(&jw, "epoch_images", (long long)epoch_images);
        json_close(&jw, '}');
        json_rows(&jw);
        json_open(&jw, "summary", '{');
        json_step_summary(&jw, s_st[0].median, g_step.median, TARGET_1W_RATIO, n_wk > 1 ? top : 1,
                          n_wk > 1 ? s_st[1].median : 0.0, g_stepn.median, TARGET_NW_EFF);
        json_num(&jw, "mflop_per_step", f_step * 1e-6);
        json_num(&jw, "steady_step_over_gemm_1w", y_step[0].median / y_gemm.median);
        if (n_wk > 1)
            json_num(&jw, "steady_efficiency_nw", y_gemmn.median / y_step[1].median);
        if (epoch_images > 0) {
            json_num(&jw, "epoch_s", epoch_s);
            json_int(&jw, "epoch_workers", (long long)top);
            json_num(&jw, "epoch_loss", epoch_loss);
            json_num(&jw, "epoch_peak_rss_mb", epoch_rss);
        }
        json_num(&jw, "loss_first", first_loss[0]);
        json_num(&jw, "loss_last", loss[0]);
        json_bool(&jw, "bit_identical", same_loss);
        json_num(&jw, "peak_rss_mb", rss);
        json_close(&jw, '}');
        json_close(&jw, '}');
        json_finish(&jw, jf);
    }

    gemm_streams_free(streams);
    for (size_t w = 0; w < n_wk; w++)
        mlp_trainer_free(&run[w]);
    free(data);
    free(xi);
    free(mu);
    free(lv);
    free(yi);
    gemm_set_free(&g);
    vae_rng_free(rng);
    free(t);
    free(t2);
    free(t3);
    return same_loss ? 0 : 1;
}
