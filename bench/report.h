/* What the benchmark programs share for their reports: the summary of a
 * set of timings, a small JSON writer (strings escaped, non-finite numbers
 * as null), and the facts of the machine and of the BLAS a run had. Nothing
 * here is part of libvae. */
#ifndef VAE_BENCH_REPORT_H
#define VAE_BENCH_REPORT_H

#include <stdio.h>

#include "vae/vae.h"

/* The program's name for messages; each main() sets it first. */
extern const char *bench_program;
/* Exits with status 1 and a message naming `what` unless rc is VAE_OK. */
void check(int rc, const char *what);
/* malloc(n), or exit with status 1. */
void *xmalloc(size_t n);

/* Milliseconds on a monotonic clock. */
double now_ms(void);

/* Summary of n timings in ms (n >= 1). */
typedef struct {
    double median, min, max, p10, p90; /* p10/p90: nearest-rank percentiles */
    int n;
} timing;

/* Sorts t[0..n-1] in place and summarizes it. */
timing timing_of(double *t, int n);
/* One measurement: every statistic equal to ms, n = 1. */
timing timing_single(double ms);

/* Where say() prints the text tables: stdout, or NULL (nothing) when a
 * program writes only its JSON object. */
extern FILE *text_out;
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *plural(size_t n); /* "" for 1, else "s" */

/* A row of a report, as printed and as written to the JSON object. */
#define REPORT_MAX_ROWS 128
typedef struct {
    char id[48];        /* key; bench_torch.py uses the same for its rows */
    char name[64];
    char section;       /* 'a', 'b', ... */
    size_t workers;     /* of the library row; 0 for bare GEMMs */
    size_t batch;
    timing t;
    double flops;       /* GEMM FLOPs of one repetition, 0 if none */
    char bound[48];     /* id of the bound, "" if none */
    double bound_ms;
} report_row;

/* Records a row (bound may be NULL); the first REPORT_MAX_ROWS are kept. */
void report_add(char section, const char *id, const char *name, size_t workers, size_t batch,
                timing t, double flops, const char *bound, double bound_ms);

/* Peak resident set size of this process so far, in MB. */
double peak_rss_mb(void);

/* A JSON document written as it goes: open/close objects and arrays, keys,
 * values. Commas and indentation are handled here; a NULL key writes a bare
 * value (inside an array, or the document's outermost value). */
#define JSON_MAX_DEPTH 16
typedef struct {
    FILE *f;
    int depth;
    int count[JSON_MAX_DEPTH]; /* values written so far at each depth */
} json_writer;

void json_init(json_writer *w, FILE *f);
void json_open(json_writer *w, const char *key, char bracket);  /* '{' or '[' */
void json_close(json_writer *w, char bracket);                  /* '}' or ']' */
void json_str(json_writer *w, const char *key, const char *s);  /* NULL s: null */
void json_num(json_writer *w, const char *key, double x);       /* NaN, inf: null */
void json_int(json_writer *w, const char *key, long long x);
void json_bool(json_writer *w, const char *key, int b);
/* Ends the document with a newline. */
void json_end(json_writer *w);
/* json_end, then closes f unless it is stdout (json_file's). */
void json_finish(json_writer *w, FILE *f);
/* The file --json [FILE] names: stdout for NULL or "-"; exits with status 1
 * when it cannot be opened. */
FILE *json_file(const char *path);
/* The opening keys of a benchmark's object: program, library, version,
 * model and machine. */
void json_header(json_writer *w, const char *model);
/* The keys of "settings" both benchmarks share: the batch and its blocks
 * (block_count), the repetitions, the worker count asked for and each
 * context's, the BLAS threads and the model's parameters. */
void json_run_settings(json_writer *w, size_t batch, size_t blocks, int reps, int warmup,
                       int infer_reps, size_t model_threads, vae_context *const *ctx, size_t n_ctx,
                       size_t params);
/* The keys of "summary" that compare a training step with its GEMM bounds:
 * the one-worker step against its GEMMs on one stream, and (workers > 1) the
 * N-worker step against its N-stream bound, each with its target. */
void json_step_summary(json_writer *w, double step_1w, double gemm_1stream, double max_1w,
                       size_t workers, double step_nw, double gemm_nstream, double min_eff);
/* "rows": every recorded row with its id, name, section, workers, batch,
 * median/min/p10/p90/max ms, reps, GFLOP/s and bound (id, ms, ratio). */
void json_rows(json_writer *w);

/*
 * "machine": the CPU model (/proc/cpuinfo), online cores, the BLAS (vendor,
 * and OpenBLAS's build configuration and core when the BLAS exports
 * openblas_get_config/openblas_get_corename, looked up as weak symbols),
 * the BLAS's thread count now, and the thread variables of the environment
 * (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, as the process started).
 */
void json_machine(json_writer *w, const char *key);

/* The BLAS vendor as far as it can be told at run time: "OpenBLAS ..." with
 * its configuration string, "BLIS ..." or "unknown". Static storage. */
const char *blas_description(void);

#endif
