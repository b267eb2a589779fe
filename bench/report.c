/* Timings, JSON and machine facts of the benchmark reports (report.h). */
#define _POSIX_C_SOURCE 200809L

#include "report.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "vae/vae.h"

/* Exported by OpenBLAS (or BLIS); weak so that the programs link and run
 * with either and report what they find. */
extern char *openblas_get_config(void) __attribute__((weak));
extern char *openblas_get_corename(void) __attribute__((weak));
extern int openblas_get_parallel(void) __attribute__((weak));
extern char *bli_info_get_version_str(void) __attribute__((weak));

const char *bench_program = "bench";

void check(int rc, const char *what)
{
    if (rc != VAE_OK) {
        fprintf(stderr, "%s: %s failed: %s (%s)\n", bench_program, what, vae_strerror(rc),
                vae_last_error());
        exit(1);
    }
}

void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p) {
        fprintf(stderr, "%s: out of memory (%zu bytes)\n", bench_program, n);
        exit(1);
    }
    return p;
}

double now_ms(void)
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

/* Nearest-rank percentile p (0..100) of sorted t[0..n-1]. */
static double percentile(const double *t, int n, double p)
{
    int k = (int)ceil(p / 100.0 * n) - 1;
    return t[k < 0 ? 0 : k >= n ? n - 1 : k];
}

timing timing_of(double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    timing r;
    r.median = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
    r.min = t[0];
    r.max = t[n - 1];
    r.p10 = percentile(t, n, 10.0);
    r.p90 = percentile(t, n, 90.0);
    r.n = n;
    return r;
}

timing timing_single(double ms)
{
    timing r = {ms, ms, ms, ms, ms, 1};
    return r;
}

FILE *text_out;

void say(const char *fmt, ...)
{
    if (!text_out)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(text_out, fmt, ap);
    va_end(ap);
}

const char *plural(size_t n)
{
    return n == 1 ? "" : "s";
}

static report_row rows[REPORT_MAX_ROWS];
static int n_rows;

void report_add(char section, const char *id, const char *name, size_t workers, size_t batch,
                timing t, double flops, const char *bound, double bound_ms)
{
    if (n_rows >= REPORT_MAX_ROWS)
        return;
    report_row *r = &rows[n_rows++];
    snprintf(r->id, sizeof r->id, "%s", id);
    snprintf(r->name, sizeof r->name, "%s", name);
    r->section = section;
    r->workers = workers;
    r->batch = batch;
    r->t = t;
    r->flops = flops;
    snprintf(r->bound, sizeof r->bound, "%s", bound ? bound : "");
    r->bound_ms = bound ? bound_ms : 0.0;
}

double peak_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* Linux: kilobytes */
}

/* ---- JSON ------------------------------------------------------------ */

void json_init(json_writer *w, FILE *f)
{
    memset(w, 0, sizeof *w);
    w->f = f;
}

static void put_escaped(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f); /* UTF-8 bytes pass through */
        }
    }
    fputc('"', f);
}

/* Comma, newline and indentation before a value, then its key. */
static void begin_value(json_writer *w, const char *key)
{
    if (w->depth > 0) {
        fputs(w->count[w->depth] ? ",\n" : "\n", w->f);
        for (int i = 0; i < w->depth; i++)
            fputs("  ", w->f);
    }
    w->count[w->depth]++;
    if (key) {
        put_escaped(w->f, key);
        fputs(": ", w->f);
    }
}

void json_open(json_writer *w, const char *key, char bracket)
{
    begin_value(w, key);
    fputc(bracket, w->f);
    if (w->depth + 1 < JSON_MAX_DEPTH)
        w->count[++w->depth] = 0;
}

void json_close(json_writer *w, char bracket)
{
    int had = w->count[w->depth];
    if (w->depth > 0)
        w->depth--;
    if (had) {
        fputc('\n', w->f);
        for (int i = 0; i < w->depth; i++)
            fputs("  ", w->f);
    }
    fputc(bracket, w->f);
}

void json_str(json_writer *w, const char *key, const char *s)
{
    begin_value(w, key);
    if (s)
        put_escaped(w->f, s);
    else
        fputs("null", w->f);
}

void json_num(json_writer *w, const char *key, double x)
{
    begin_value(w, key);
    if (isfinite(x))
        fprintf(w->f, "%.6g", x);
    else
        fputs("null", w->f);
}

void json_int(json_writer *w, const char *key, long long x)
{
    begin_value(w, key);
    fprintf(w->f, "%lld", x);
}

void json_bool(json_writer *w, const char *key, int b)
{
    begin_value(w, key);
    fputs(b ? "true" : "false", w->f);
}

void json_finish(json_writer *w, FILE *f)
{
    json_end(w);
    if (f != stdout)
        fclose(f);
}

FILE *json_file(const char *path)
{
    if (!path || !strcmp(path, "-"))
        return stdout;
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "%s: cannot write %s\n", bench_program, path);
        exit(1);
    }
    return f;
}

void json_header(json_writer *w, const char *model)
{
    json_str(w, "program", bench_program);
    json_str(w, "library", "libvae");
    json_str(w, "version", vae_version_string());
    json_str(w, "model", model);
    json_machine(w, "machine");
}

void json_run_settings(json_writer *w, size_t batch, size_t blocks, int reps, int warmup,
                       int infer_reps, size_t model_threads, vae_context *const *ctx, size_t n_ctx,
                       size_t params)
{
    json_int(w, "batch", (long long)batch);
    json_int(w, "blocks", (long long)blocks);
    json_int(w, "reps", reps);
    json_int(w, "warmup", warmup);
    json_int(w, "infer_reps", infer_reps);
    json_int(w, "model_threads", (long long)model_threads);
    json_open(w, "context_workers", '[');
    for (size_t i = 0; i < n_ctx; i++)
        json_int(w, NULL, (long long)vae_context_threads(ctx[i]));
    json_close(w, ']');
    json_int(w, "blas_threads", (long long)vae_blas_threads());
    json_int(w, "params", (long long)params);
}

void json_step_summary(json_writer *w, double step_1w, double gemm_1stream, double max_1w,
                       size_t workers, double step_nw, double gemm_nstream, double min_eff)
{
    const double ratio1 = step_1w / gemm_1stream;
    json_num(w, "step_ms_1w", step_1w);
    json_num(w, "gemm_1stream_ms", gemm_1stream);
    json_num(w, "step_over_gemm_1w", ratio1);
    json_num(w, "target_step_over_gemm_1w_max", max_1w);
    json_bool(w, "target_1w_met", ratio1 <= max_1w);
    if (workers > 1) {
        const double eff = gemm_nstream / step_nw;
        json_int(w, "workers", (long long)workers);
        json_num(w, "step_ms_nw", step_nw);
        json_num(w, "gemm_nstream_ms", gemm_nstream);
        json_num(w, "efficiency_nw", eff);
        json_num(w, "target_efficiency_nw_min", min_eff);
        json_bool(w, "target_nw_met", eff >= min_eff);
    }
}

void json_rows(json_writer *w)
{
    json_open(w, "rows", '[');
    for (int i = 0; i < n_rows; i++) {
        const report_row *r = &rows[i];
        char sec[2] = {r->section, '\0'};
        json_open(w, NULL, '{');
        json_str(w, "id", r->id);
        json_str(w, "name", r->name);
        json_str(w, "section", sec);
        json_int(w, "workers", (long long)r->workers);
        json_int(w, "batch", (long long)r->batch);
        json_num(w, "median_ms", r->t.median);
        json_num(w, "min_ms", r->t.min);
        json_num(w, "p10_ms", r->t.p10);
        json_num(w, "p90_ms", r->t.p90);
        json_num(w, "max_ms", r->t.max);
        json_int(w, "reps", r->t.n);
        if (r->flops > 0.0)
            json_num(w, "gflops", r->flops / (r->t.median * 1e6));
        else
            json_str(w, "gflops", NULL);
        json_str(w, "bound", r->bound[0] ? r->bound : NULL);
        if (r->bound[0]) {
            json_num(w, "bound_ms", r->bound_ms);
            json_num(w, "ratio_to_bound", r->t.median / r->bound_ms);
        }
        json_close(w, '}');
    }
    json_close(w, ']');
}

void json_end(json_writer *w)
{
    fputc('\n', w->f);
    fflush(w->f);
}

/* ---- machine facts --------------------------------------------------- */

/* The first "model name" of /proc/cpuinfo, or "unknown". */
static void cpu_model(char *buf, size_t size)
{
    snprintf(buf, size, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10))
            continue;
        char *v = strchr(line, ':');
        if (!v)
            continue;
        v++;
        while (*v == ' ' || *v == '\t')
            v++;
        v[strcspn(v, "\n")] = '\0';
        snprintf(buf, size, "%s", v);
        break;
    }
    fclose(f);
}

const char *blas_description(void)
{
    static char buf[512];
    if (openblas_get_config) /* its configuration string names it already */
        snprintf(buf, sizeof buf, "%s", openblas_get_config());
    else if (bli_info_get_version_str)
        snprintf(buf, sizeof buf, "BLIS %s", bli_info_get_version_str());
    else
        snprintf(buf, sizeof buf, "unknown");
    return buf;
}

void json_machine(json_writer *w, const char *key)
{
    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    json_open(w, key, '{');
    json_str(w, "cpu", cpu);
    json_int(w, "cores", sysconf(_SC_NPROCESSORS_ONLN));
    json_open(w, "blas", '{');
    json_str(w, "vendor", openblas_get_config ? "OpenBLAS"
                          : bli_info_get_version_str ? "BLIS" : "unknown");
    json_str(w, "config", openblas_get_config ? openblas_get_config()
                          : bli_info_get_version_str ? bli_info_get_version_str() : NULL);
    json_str(w, "core", openblas_get_corename ? openblas_get_corename() : NULL);
    if (openblas_get_parallel) /* 0 sequential, 1 pthreads, 2 OpenMP */
        json_int(w, "parallel", openblas_get_parallel());
    json_int(w, "threads", (long long)vae_blas_threads());
    json_close(w, '}');
    json_open(w, "env", '{');
    json_str(w, "OPENBLAS_NUM_THREADS", getenv("OPENBLAS_NUM_THREADS"));
    json_str(w, "OMP_NUM_THREADS", getenv("OMP_NUM_THREADS"));
    json_close(w, '}');
    json_close(w, '}');
}
