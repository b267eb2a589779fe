/*
 * vae_bench_sweep: the training step of the 784-400-20 VAE against batch
 * size, with 1 and N workers, against its GEMM bounds, as a table and a PNG
 * plot.
 *
 *   vae_bench_sweep [--batches 32,64,128,256,512,1024] [--reps 100] [--min-reps 20]
 *                   [--model-threads 2] [--png vae_bench_sweep.png] [--json FILE]
 *
 * Per batch size B: a model, context and trainer per worker count (1 and
 * --model-threads N, from the same seeds, as vae_bench (b)), and the bare
 * GEMMs of the step as vae_bench (c): the 11 GEMMs per block of 64 samples
 * block after block on one stream (the one-worker bound), and each
 * worker's blocks (w, w + N, ...) on its own thread, all N at once (the
 * N-worker bound). The four are timed alternately in one loop, max(--min-reps,
 * --reps x 128 / B) repetitions after a warm-up, so that every batch size
 * sees about the same number of samples. Efficiency is bound / step time:
 * the targets are >= 1/1.10 with one worker (the step at most 1.10 times
 * its GEMMs) and >= 0.85 with N workers.
 *
 * The BLAS is set to one thread (vae_blas_set_threads(1)) for the whole run.
 * Prints one line per batch size (medians), draws two panels into the PNG
 * (ms per step against batch size on log-log axes, with the bounds as
 * dashed lines; efficiency against batch size, with the targets), and with
 * --json FILE writes the machine facts and every point (median, p10, p90)
 * to FILE. The PNG writer is examples/image.c (libpng).
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../examples/image.h"
#include "gemm_streams.h"
#include "report.h"
#include "vae/vae.h"

#define MAX_BATCHES 32
#define N_DATA_BATCHES 4
#define TARGET_1W_RATIO 1.10
#define TARGET_NW_EFF 0.85

static long parse_long(const char *flag, const char *s, long lo, long hi, char **rest)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || (rest ? (*end != '\0' && *end != ',') : *end != '\0') || v < lo || v > hi) {
        fprintf(stderr, "vae_bench_sweep: %s must be in %ld..%ld\n", flag, lo, hi);
        exit(2);
    }
    if (rest)
        *rest = end;
    return v;
}

/* One batch size's medians (and spread) in ms. */
typedef struct {
    size_t batch;
    int reps;
    timing step1, stepn, gemm1, gemmn;
} point;

static point measure(size_t B, int reps, size_t nw, vae_rng *rng)
{
    point p = {.batch = B, .reps = reps};
    const size_t workers[2] = {1, nw};
    mlp_trainer run[2];
    for (int w = 0; w < 2; w++)
        mlp_trainer_create(&run[w], 400, workers[w], B);
    gemm_set g;
    gemm_streams *st = NULL;
    if (gemm_set_create(&g, B, nw, rng) != 0 ||
        gemm_streams_create(&st, nw, gemm_set_share, &g) != 0) {
        fprintf(stderr, "vae_bench_sweep: cannot set up the GEMM streams\n");
        exit(1);
    }
    float *data = xmalloc(N_DATA_BATCHES * B * 784 * sizeof *data);
    check(vae_rng_uniform(rng, data, N_DATA_BATCHES * B * 784), "vae_rng_uniform");
    double *t[4];
    for (int k = 0; k < 4; k++)
        t[k] = xmalloc((size_t)reps * sizeof(double));
    const int warmup = reps / 10 > 3 ? reps / 10 : 3;
    for (int r = -warmup; r < reps; r++) {
        const float *x = data + (size_t)((r + warmup) % N_DATA_BATCHES) * B * 784;
        double a = now_ms();
        gemm_step_share(&g, B, 0, 1);
        double g1 = now_ms() - a;
        double gn = gemm_streams_run(st, GEMM_JOB_STEP, B);
        double s[2];
        for (int w = 0; w < 2; w++) {
            double t0 = now_ms();
            check(vae_trainer_step(run[w].tr, x, B, NULL), "vae_trainer_step");
            s[w] = now_ms() - t0;
        }
        if (r >= 0) {
            t[0][r] = s[0];
            t[1][r] = s[1];
            t[2][r] = g1;
            t[3][r] = gn;
        }
    }
    p.step1 = timing_of(t[0], reps);
    p.stepn = timing_of(t[1], reps);
    p.gemm1 = timing_of(t[2], reps);
    p.gemmn = timing_of(t[3], reps);
    for (int k = 0; k < 4; k++)
        free(t[k]);
    free(data);
    gemm_streams_free(st);
    gemm_set_free(&g);
    for (int w = 0; w < 2; w++)
        mlp_trainer_free(&run[w]);
    return p;
}

/* ---- the plot ----------------------------------------------------------- */

static const rgb WHITE = {255, 255, 255}, BLACK = {0, 0, 0}, GRID = {225, 225, 225},
                 AXIS = {90, 90, 90}, BLUE = {31, 100, 180}, RED = {210, 70, 30},
                 LIGHT_BLUE = {120, 160, 215}, LIGHT_RED = {235, 150, 120};

#define TEXT_SCALE 2

/* A line of `thick` pixels from (x0, y0) to (x1, y1); dash > 0 draws dash
 * pixels on, dash off. */
static void draw_line(image *im, double x0, double y0, double x1, double y1, int thick,
                      int dash, rgb c)
{
    double len = hypot(x1 - x0, y1 - y0);
    int steps = (int)ceil(len * 2.0) + 1;
    for (int i = 0; i <= steps; i++) {
        double s = (double)i / steps, along = s * len;
        if (dash > 0 && (int)(along / dash) % 2 == 1)
            continue;
        double x = x0 + s * (x1 - x0), y = y0 + s * (y1 - y0);
        image_fill_rect(im, (int)lround(x - thick / 2.0), (int)lround(y - thick / 2.0), thick,
                        thick, c);
    }
}

/* A panel: plot area (px, py, pw, ph) in pixels, x = log2(batch), y linear
 * or log10. */
typedef struct {
    int px, py, pw, ph;
    double x0, x1, y0, y1; /* data ranges, in the axis's own units */
    int log_y;
} panel;

static double X(const panel *p, double batch)
{
    return p->px + (log2(batch) - p->x0) / (p->x1 - p->x0) * p->pw;
}

static double Y(const panel *p, double v)
{
    double u = p->log_y ? log10(v) : v;
    return p->py + p->ph - (u - p->y0) / (p->y1 - p->y0) * p->ph;
}

static void text_right(image *im, int x, int y, const char *s, rgb c)
{
    image_text(im, x - image_text_width(s, TEXT_SCALE), y, s, TEXT_SCALE, c);
}

static void text_center(image *im, int x, int y, const char *s, rgb c)
{
    image_text(im, x - image_text_width(s, TEXT_SCALE) / 2, y, s, TEXT_SCALE, c);
}

/* Frame, grid, tick labels of both axes and the titles. */
static void draw_axes(image *im, const panel *p, const point *pts, int n, const char *title,
                      const char *ylabel)
{
    int th = image_text_height(TEXT_SCALE);
    char buf[32];
    /* y ticks: 1-2-5 on a log axis, steps of 0.1 or 0.2 on a linear one */
    if (p->log_y) {
        for (int e = (int)floor(p->y0); e <= (int)ceil(p->y1); e++)
            for (int k = 0; k < 3; k++) {
                double v = (k == 0 ? 1.0 : k == 1 ? 2.0 : 5.0) * pow(10.0, e);
                double u = log10(v);
                if (u < p->y0 - 1e-9 || u > p->y1 + 1e-9)
                    continue;
                int y = (int)lround(Y(p, v));
                draw_line(im, p->px, y, p->px + p->pw, y, 1, 0, GRID);
                snprintf(buf, sizeof buf, v < 1.0 ? "%.1f" : "%.0f", v);
                text_right(im, p->px - 8, y - th / 2, buf, BLACK);
            }
    } else {
        double step = p->y1 - p->y0 > 1.0 ? 0.2 : 0.1;
        for (double v = ceil(p->y0 / step - 1e-9) * step; v <= p->y1 + 1e-9; v += step) {
            int y = (int)lround(Y(p, v));
            draw_line(im, p->px, y, p->px + p->pw, y, 1, 0, GRID);
            snprintf(buf, sizeof buf, "%.1f", fabs(v) < 1e-9 ? 0.0 : v);
            text_right(im, p->px - 8, y - th / 2, buf, BLACK);
        }
    }
    /* x ticks at the measured batch sizes */
    for (int i = 0; i < n; i++) {
        int x = (int)lround(X(p, (double)pts[i].batch));
        draw_line(im, x, p->py, x, p->py + p->ph, 1, 0, GRID);
        snprintf(buf, sizeof buf, "%zu", pts[i].batch);
        text_center(im, x, p->py + p->ph + 8, buf, BLACK);
    }
    image_frame(im, p->px, p->py, p->pw + 1, p->ph + 1, 2, AXIS);
    text_center(im, p->px + p->pw / 2, p->py + p->ph + 16 + th, "BATCH SIZE", BLACK);
    image_text(im, p->px - 60, p->py - 2 * th - 14, ylabel, TEXT_SCALE, BLACK);
    text_center(im, p->px + p->pw / 2, p->py - 3 * th - 30, title, BLACK);
}

/* A data series: line through the points and a disc on each. */
static void draw_series(image *im, const panel *p, const point *pts, int n,
                        double (*value)(const point *), int dash, int markers, rgb c)
{
    for (int i = 0; i < n; i++) {
        double x = X(p, (double)pts[i].batch), y = Y(p, value(&pts[i]));
        if (i > 0)
            draw_line(im, X(p, (double)pts[i - 1].batch), Y(p, value(&pts[i - 1])), x, y, 3,
                      dash, c);
        if (markers)
            image_disc(im, x, y, 5.0, c);
    }
}

/* Legend entries in a box at (x, y). */
typedef struct {
    const char *label;
    rgb c;
    int dash, markers;
} legend_entry;

static void draw_legend(image *im, int x, int y, const legend_entry *e, int n)
{
    int th = image_text_height(TEXT_SCALE), w = 0;
    for (int i = 0; i < n; i++) {
        int tw = image_text_width(e[i].label, TEXT_SCALE);
        w = tw > w ? tw : w;
    }
    int row = th + 10, bw = w + 70, bh = n * row + 12;
    image_fill_rect(im, x, y, bw, bh, WHITE);
    image_frame(im, x, y, bw, bh, 1, AXIS);
    for (int i = 0; i < n; i++) {
        int cy = y + 8 + i * row + th / 2;
        draw_line(im, x + 10, cy, x + 50, cy, 3, e[i].dash, e[i].c);
        if (e[i].markers)
            image_disc(im, x + 30, cy, 5.0, e[i].c);
        image_text(im, x + 60, cy - th / 2, e[i].label, TEXT_SCALE, BLACK);
    }
}

static double v_step1(const point *p) { return p->step1.median; }
static double v_stepn(const point *p) { return p->stepn.median; }
static double v_gemm1(const point *p) { return p->gemm1.median; }
static double v_gemmn(const point *p) { return p->gemmn.median; }
static double v_eff1(const point *p) { return p->gemm1.median / p->step1.median; }
static double v_effn(const point *p) { return p->gemmn.median / p->stepn.median; }

static int plot(const char *path, const point *pts, int n, size_t nw)
{
    /* plot areas 560 x 490, legends below them */
    const int W = 1500, H = 860, top = 140, pw = 560, ph = 490;
    image im;
    if (image_create(&im, W, H, WHITE) != 0) {
        fprintf(stderr, "vae_bench_sweep: out of memory for the plot\n");
        return -1;
    }
    char title[160], l1[64], ln[64], g1[64], gn[64], t1[64], tn[64];
    snprintf(title, sizeof title, "LIBVAE %s, 784-400-20 VAE, ADAM, BLAS 1 THREAD: "
                                  "TRAINING STEP AGAINST BATCH SIZE",
             vae_version_string());
    image_text(&im, 20, 16, title, TEXT_SCALE, BLACK);

    double lo = INFINITY, hi = 0.0, ehi = 1.0;
    for (int i = 0; i < n; i++) {
        double v[4] = {pts[i].step1.median, pts[i].stepn.median, pts[i].gemm1.median,
                       pts[i].gemmn.median};
        for (int k = 0; k < 4; k++) {
            lo = v[k] < lo ? v[k] : lo;
            hi = v[k] > hi ? v[k] : hi;
        }
        ehi = fmax(ehi, fmax(v_eff1(&pts[i]), v_effn(&pts[i])));
    }
    double xa = log2((double)pts[0].batch), xb = log2((double)pts[n - 1].batch);
    double xm = n > 1 ? 0.06 * (xb - xa) : 0.5;
    panel a = {110, top, pw, ph, xa - xm, xb + xm, log10(lo) - 0.08, log10(hi) + 0.08, 1};
    panel b = {110 + pw + 190, top, pw, ph, xa - xm, xb + xm, 0.0, ceil(ehi * 5.0 + 0.5) / 5.0,
               0};

    snprintf(l1, sizeof l1, "STEP, 1 WORKER");
    snprintf(ln, sizeof ln, "STEP, %zu WORKERS", nw);
    snprintf(g1, sizeof g1, "GEMMS, 1 STREAM");
    snprintf(gn, sizeof gn, "GEMMS, %zu STREAMS", nw);
    draw_axes(&im, &a, pts, n, "STEP TIME AND GEMM BOUNDS (LOG-LOG)", "MS PER STEP");
    draw_series(&im, &a, pts, n, v_gemm1, 10, 0, LIGHT_BLUE);
    draw_series(&im, &a, pts, n, v_gemmn, 10, 0, LIGHT_RED);
    draw_series(&im, &a, pts, n, v_step1, 0, 1, BLUE);
    draw_series(&im, &a, pts, n, v_stepn, 0, 1, RED);
    legend_entry la[4] = {{l1, BLUE, 0, 1}, {g1, LIGHT_BLUE, 10, 0}, {ln, RED, 0, 1},
                          {gn, LIGHT_RED, 10, 0}};
    const int legend_y = top + ph + 2 * image_text_height(TEXT_SCALE) + 40;
    draw_legend(&im, a.px, legend_y, la, 4);

    snprintf(title, sizeof title, "EFFICIENCY = GEMM BOUND / STEP");
    draw_axes(&im, &b, pts, n, title, "EFFICIENCY");
    double tgt1 = 1.0 / TARGET_1W_RATIO;
    draw_line(&im, b.px, Y(&b, tgt1), b.px + b.pw, Y(&b, tgt1), 2, 4, LIGHT_BLUE);
    draw_line(&im, b.px, Y(&b, TARGET_NW_EFF), b.px + b.pw, Y(&b, TARGET_NW_EFF), 2, 4,
              LIGHT_RED);
    draw_series(&im, &b, pts, n, v_eff1, 0, 1, BLUE);
    draw_series(&im, &b, pts, n, v_effn, 0, 1, RED);
    snprintf(l1, sizeof l1, "1 WORKER: 1-STREAM GEMMS / STEP");
    snprintf(ln, sizeof ln, "%zu WORKERS: %zu-STREAM GEMMS / STEP", nw, nw);
    snprintf(t1, sizeof t1, "TARGET 1 WORKER >= 1/1.10 = %.2f", tgt1);
    snprintf(tn, sizeof tn, "TARGET %zu WORKERS >= %.2f", nw, TARGET_NW_EFF);
    legend_entry lb[4] = {{l1, BLUE, 0, 1}, {t1, LIGHT_BLUE, 4, 0}, {ln, RED, 0, 1},
                          {tn, LIGHT_RED, 4, 0}};
    draw_legend(&im, b.px, legend_y, lb, 4);

    int rc = image_write_png(&im, path);
    image_free(&im);
    return rc;
}

int main(int argc, char **argv)
{
    bench_program = "vae_bench_sweep";
    size_t batches[MAX_BATCHES] = {32, 64, 128, 256, 512, 1024};
    int n_batches = 6, reps = 100, min_reps = 20;
    size_t nw = 2;
    const char *png = "vae_bench_sweep.png", *json_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--batches") && i + 1 < argc) {
            char *s = argv[++i];
            n_batches = 0;
            while (*s) {
                if (n_batches == MAX_BATCHES) {
                    fprintf(stderr, "vae_bench_sweep: at most %d batch sizes\n", MAX_BATCHES);
                    return 2;
                }
                batches[n_batches++] = (size_t)parse_long("--batches", s, 1, 65536, &s);
                if (*s == ',')
                    s++;
            }
            for (int k = 1; k < n_batches; k++)
                if (batches[k] <= batches[k - 1]) {
                    fprintf(stderr, "vae_bench_sweep: --batches must increase\n");
                    return 2;
                }
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = (int)parse_long("--reps", argv[++i], 1, 1000000, NULL);
        } else if (!strcmp(argv[i], "--min-reps") && i + 1 < argc) {
            min_reps = (int)parse_long("--min-reps", argv[++i], 1, 1000000, NULL);
        } else if (!strcmp(argv[i], "--model-threads") && i + 1 < argc) {
            nw = (size_t)parse_long("--model-threads", argv[++i], 2, MAX_STREAMS, NULL);
        } else if (!strcmp(argv[i], "--png") && i + 1 < argc) {
            png = argv[++i];
        } else if (!strcmp(argv[i], "--json") && i + 1 < argc) {
            json_path = argv[++i];
        } else {
            fprintf(stderr,
                    "usage: %s [--batches 32,64,128,256,512,1024] [--reps N] [--min-reps N]\n"
                    "          [--model-threads N] [--png FILE] [--json FILE]\n"
                    "The training step with 1 and N workers (default 2) against its GEMMs on\n"
                    "one and on N streams, per batch size; max(--min-reps, --reps x 128 / B)\n"
                    "repetitions (defaults 100 and 20). Draws ms per step and efficiency\n"
                    "against batch size into --png (default vae_bench_sweep.png); --json\n"
                    "FILE: every point with the machine facts.\n",
                    argv[0]);
            return 2;
        }
    }
    check(vae_blas_set_threads(1), "vae_blas_set_threads");
    vae_rng *rng = NULL;
    check(vae_rng_create(&rng, 42), "vae_rng_create");
    printf("libvae %s, 784-400-20 VAE, Adam, BLAS threads %zu, workers 1 and %zu\nBLAS: %s\n",
           vae_version_string(), vae_blas_threads(), nw, blas_description());
    printf("%6s %5s | %9s %9s %6s | %9s %9s %6s   (medians, ms)\n", "batch", "reps", "step 1w",
           "GEMM 1s", "eff", "step Nw", "GEMM Ns", "eff");
    point pts[MAX_BATCHES];
    for (int k = 0; k < n_batches; k++) {
        size_t B = batches[k];
        int r = (int)((double)reps * 128.0 / (double)B);
        r = r < min_reps ? min_reps : r;
        pts[k] = measure(B, r, nw, rng);
        const point *p = &pts[k];
        printf("%6zu %5d | %9.3f %9.3f %6.2f | %9.3f %9.3f %6.2f\n", B, r, p->step1.median,
               p->gemm1.median, v_eff1(p), p->stepn.median, p->gemmn.median, v_effn(p));
        fflush(stdout);
    }
    printf("eff: 1 worker, its GEMMs on one stream / step (target >= %.2f); %zu workers, their "
           "GEMMs on %zu streams at once / step (target >= %.2f)\n",
           1.0 / TARGET_1W_RATIO, nw, nw, TARGET_NW_EFF);
    int rc = 0;
    if (plot(png, pts, n_batches, nw) == 0)
        printf("plot: %s\n", png);
    else
        rc = 1;

    if (json_path) {
        FILE *f = fopen(json_path, "w");
        if (!f) {
            fprintf(stderr, "vae_bench_sweep: cannot write %s\n", json_path);
            return 1;
        }
        json_writer w;
        json_init(&w, f);
        json_open(&w, NULL, '{');
        json_str(&w, "program", "vae_bench_sweep");
        json_str(&w, "version", vae_version_string());
        json_machine(&w, "machine");
        json_int(&w, "workers", (long long)nw);
        json_open(&w, "points", '[');
        for (int k = 0; k < n_batches; k++) {
            const point *p = &pts[k];
            const struct {
                const char *key;
                timing t;
            } series[4] = {{"step_1w", p->step1},
                           {"step_nw", p->stepn},
                           {"gemm_1stream", p->gemm1},
                           {"gemm_nstream", p->gemmn}};
            json_open(&w, NULL, '{');
            json_int(&w, "batch", (long long)p->batch);
            json_int(&w, "reps", p->reps);
            for (int s = 0; s < 4; s++) {
                json_open(&w, series[s].key, '{');
                json_num(&w, "median_ms", series[s].t.median);
                json_num(&w, "p10_ms", series[s].t.p10);
                json_num(&w, "p90_ms", series[s].t.p90);
                json_num(&w, "min_ms", series[s].t.min);
                json_close(&w, '}');
            }
            json_num(&w, "efficiency_1w", v_eff1(p));
            json_num(&w, "efficiency_nw", v_effn(p));
            json_num(&w, "gflops_step_1w", mlp_step_flops(p->batch) / (p->step1.median * 1e6));
            json_num(&w, "gflops_step_nw", mlp_step_flops(p->batch) / (p->stepn.median * 1e6));
            json_close(&w, '}');
        }
        json_close(&w, ']');
        json_close(&w, '}');
        json_finish(&w, f);
    }
    vae_rng_free(rng);
    return rc;
}
