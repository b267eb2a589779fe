/* isatty, mkdir and clock_gettime are POSIX. */
#define _POSIX_C_SOURCE 200809L

#include "mnist_common.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int report(int status, const char *what)
{
    const char *detail = vae_last_error();
    fprintf(stderr, "error: %s: %s (%d)%s%s\n", what, vae_strerror(status), status,
            detail && *detail ? ": " : "", detail ? detail : "");
    return status;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* DIR/NAME, or DIR/NAME.gz when only that exists. */
static const char *mnist_file(const char *dir, const char *name)
{
    const char *plain = join_path(dir, name);
    if (file_exists(plain))
        return plain;
    char gz[128];
    snprintf(gz, sizeof gz, "%s.gz", name);
    const char *packed = join_path(dir, gz);
    return file_exists(packed) ? packed : plain;
}

int mnist_load(const char *dir, int train, vae_dataset **out)
{
    const char *images = mnist_file(dir, train ? "train-images-idx3-ubyte"
                                               : "t10k-images-idx3-ubyte");
    const char *labels = mnist_file(dir, train ? "train-labels-idx1-ubyte"
                                               : "t10k-labels-idx1-ubyte");
    int rc = vae_dataset_load_idx(out, images, labels);
    if (rc != VAE_OK) {
        report(rc, "loading MNIST");
        fprintf(stderr, "hint: examples/fetch_mnist.sh %s downloads and checks the four files\n",
                dir);
    }
    return rc;
}

int dataset_take_first(vae_dataset **ds, size_t limit)
{
    size_t n = vae_dataset_count(*ds);
    if (limit == 0 || limit >= n)
        return VAE_OK;
    size_t *idx = malloc(limit * sizeof *idx);
    if (!idx) {
        fprintf(stderr, "error: out of memory\n");
        return VAE_ERR_NOMEM;
    }
    for (size_t i = 0; i < limit; i++)
        idx[i] = i;
    vae_dataset *sub = NULL;
    int rc = vae_dataset_subset(&sub, *ds, idx, limit);
    free(idx);
    if (rc != VAE_OK)
        return report(rc, "vae_dataset_subset");
    vae_dataset_free(*ds);
    *ds = sub;
    return VAE_OK;
}

int make_dirs(const char *path)
{
    char buf[PATH_MAX];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) {
        fprintf(stderr, "error: bad directory name '%s'\n", path);
        return -1;
    }
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
                fprintf(stderr, "error: cannot create directory %s: %s\n", buf, strerror(errno));
                return -1;
            }
            *p = saved;
            if (saved == '\0')
                break;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "error: %s is not a directory\n", path);
        return -1;
    }
    return 0;
}

const char *join_path(const char *dir, const char *name)
{
    static char bufs[8][PATH_MAX];
    static int next;
    char *b = bufs[next];
    next = (next + 1) % 8;
    size_t n = strlen(dir);
    if (n > 0 && dir[n - 1] == '/')
        snprintf(b, PATH_MAX, "%s%s", dir, name);
    else
        snprintf(b, PATH_MAX, "%s/%s", dir, name);
    return b;
}

void picture_shape(size_t dim, int *height, int *width)
{
    size_t s = (size_t)llround(sqrt((double)dim));
    if (s * s == dim) {
        *height = *width = (int)s;
    } else {
        *height = 1;
        *width = (int)dim;
    }
}

double wall_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int set_workers(vae_context *ctx, size_t n)
{
    if (n == 0)
        return VAE_OK;
    /* Each worker's GEMMs are too small to gain from BLAS threads, which
     * would only compete with the workers (docs/performance.md); the
     * context refuses a second worker while the BLAS runs several. */
    int rc = vae_blas_set_threads(1);
    if (rc != VAE_OK)
        return report(rc, "vae_blas_set_threads(1)");
    rc = vae_context_set_threads(ctx, n);
    if (rc != VAE_OK)
        return report(rc, "vae_context_set_threads");
    return VAE_OK;
}

int flag_value(int argc, char **argv, int *i, const char *name, const char **value)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0)
        return 0;
    if (a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    if (a[n] != '\0')
        return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "error: %s needs a value\n", name);
        return -1;
    }
    *value = argv[++*i];
    return 1;
}

int parse_u64(const char *flag, const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end != '\0' || *s == '-') {
        fprintf(stderr, "error: %s: '%s' is not a non-negative integer\n", flag, s);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

int parse_size(const char *flag, const char *s, size_t *out)
{
    uint64_t v;
    if (parse_u64(flag, s, &v))
        return -1;
    if (v > SIZE_MAX) {
        fprintf(stderr, "error: %s: %s is too large\n", flag, s);
        return -1;
    }
    *out = (size_t)v;
    return 0;
}

int parse_double(const char *flag, const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(v)) {
        fprintf(stderr, "error: %s: '%s' is not a finite number\n", flag, s);
        return -1;
    }
    *out = v;
    return 0;
}

int parse_size_list(const char *flag, const char *s, size_t *out, size_t cap, size_t *n)
{
    *n = 0;
    const char *p = s;
    for (;;) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(p, &end, 10);
        if (errno || end == p || v == 0 || *p == '-' || (*end != ',' && *end != '\0')) {
            fprintf(stderr, "error: %s: '%s' is not a list of positive integers like 512,256\n",
                    flag, s);
            return -1;
        }
        if (*n == cap) {
            fprintf(stderr, "error: %s: at most %zu sizes\n", flag, cap);
            return -1;
        }
        out[(*n)++] = (size_t)v;
        if (*end == '\0')
            return 0;
        p = end + 1;
    }
}

void progress_begin(progress *p, const char *label)
{
    snprintf(p->label, sizeof p->label, "%s", label);
    p->enabled = isatty(STDERR_FILENO);
    p->start = wall_seconds();
    p->last_draw = 0.0;
}

int progress_update(void *payload, size_t done, size_t total, double running_loss)
{
    progress *p = payload;
    if (!p->enabled || total == 0)
        return 0;
    double t = wall_seconds();
    if (done < total && t - p->last_draw < 0.1)
        return 0;
    p->last_draw = t;
    enum { WIDTH = 30 };
    char bar[WIDTH + 1];
    size_t fill = done * WIDTH / total;
    for (size_t k = 0; k < WIDTH; k++)
        bar[k] = k < fill ? '#' : '.';
    bar[WIDTH] = '\0';
    double el = t - p->start;
    double eta = done ? el * (double)(total - done) / (double)done : 0.0;
    fprintf(stderr, "\r\033[K%s [%s] %3d%% %zu/%zu  loss %.3f  %.1fs (eta %.1fs)", p->label, bar,
            (int)(100.0 * (double)done / (double)total), done, total, running_loss, el, eta);
    fflush(stderr);
    return 0;
}

void progress_end(progress *p)
{
    if (p->enabled) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
}
