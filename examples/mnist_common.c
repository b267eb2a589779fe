/* isatty, mkdir, opendir, localtime_r and clock_gettime are POSIX. */
#define _POSIX_C_SOURCE 200809L

#include "mnist_common.h"

#include <dirent.h>
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

int file_exists(const char *path)
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

const char *plural(uint64_t n)
{
    return n == 1 ? "" : "s";
}

const char *format_seconds(double seconds, char *buf, size_t cap)
{
    if (!(seconds >= 0.0))
        seconds = 0.0;
    if (seconds < 10.0) {
        snprintf(buf, cap, "%.2f s", seconds);
    } else if (seconds < 60.0) {
        snprintf(buf, cap, "%.0f s", seconds);
    } else if (seconds < 3600.0) {
        long s = lround(seconds);
        snprintf(buf, cap, "%ld min %02ld s", s / 60, s % 60);
    } else {
        long m = lround(seconds / 60.0);
        snprintf(buf, cap, "%ld h %02ld min", m / 60, m % 60);
    }
    return buf;
}

void progress_begin(progress *p, const char *label)
{
    snprintf(p->label, sizeof p->label, "%s", label);
    p->tty = isatty(STDOUT_FILENO);
    p->drawn = 0;
    p->tenth = 0;
    p->first = 0;
    p->start = wall_seconds();
    p->last_draw = 0.0;
    p->last_line = p->start;
}

void progress_start_at(progress *p, size_t done)
{
    p->first = done;
}

int progress_update(void *payload, size_t done, size_t total, double running_loss)
{
    progress *p = payload;
    if (total == 0 || done > total)
        return 0;
    double t = wall_seconds();
    double el = t - p->start;
    size_t here = done > p->first ? done - p->first : 0; /* images of this phase */
    double rate = el > 0.0 ? (double)here / el : 0.0;
    char eta[32], spent[32];
    format_seconds(rate > 0.0 ? (double)(total - done) / rate : 0.0, eta, sizeof eta);
    format_seconds(el, spent, sizeof spent);
    int percent = (int)(100.0 * (double)done / (double)total);
    if (p->tty) {
        if (done < total && t - p->last_draw < 0.1)
            return 0;
        p->last_draw = t;
        enum { WIDTH = 24 };
        char bar[WIDTH + 1];
        size_t fill = done * WIDTH / total;
        for (size_t k = 0; k < WIDTH; k++)
            bar[k] = k < fill ? '#' : '.';
        bar[WIDTH] = '\0';
        printf("\r\033[K%s [%s] %3d%% %zu/%zu image%s  %.0f images/s  loss %.3f  %s, %s left",
               p->label, bar, percent, done, total, plural(total), rate, running_loss, spent,
               eta);
        p->drawn = 1;
        fflush(stdout);
        return 0;
    }
    int tenth = (int)(10.0 * (double)done / (double)total);
    if (done == total || el < 15.0 || t - p->last_line < 15.0 || tenth <= p->tenth)
        return 0;
    p->tenth = tenth;
    p->last_line = t;
    printf("  %s: %d%% (%zu of %zu image%s), %.0f images/s, running loss %.3f nats per image, "
           "%s so far, about %s left\n",
           p->label, percent, done, total, plural(total), rate, running_loss, spent, eta);
    fflush(stdout);
    return 0;
}

void progress_status(progress *p, const char *text)
{
    if (!p->tty)
        return;
    printf("\r\033[K%s", text);
    p->drawn = 1;
    fflush(stdout);
}

void progress_end(progress *p)
{
    if (p->tty && p->drawn) {
        fputs("\r\033[K", stdout);
        fflush(stdout);
    }
    p->drawn = 0;
}

void path_dirname(const char *path, char *buf, size_t cap)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(buf, cap, ".");
        return;
    }
    size_t n = (size_t)(slash - path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    if (n == 0)
        n = 1; /* "/file": the root */
    snprintf(buf, cap, "%.*s", (int)n, path);
}

int make_run_dir(const char *parent, char *buf, size_t cap)
{
    if (make_dirs(parent) != 0)
        return -1;
    time_t now = time(NULL);
    struct tm tm;
    char stamp[32];
    if (!localtime_r(&now, &tm) || !strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm))
        snprintf(stamp, sizeof stamp, "%lld", (long long)now);
    for (int k = 1; k < 10000; k++) {
        int n = k == 1 ? snprintf(buf, cap, "%s/%s", parent, stamp)
                       : snprintf(buf, cap, "%s/%s-%d", parent, stamp, k);
        if (n < 0 || (size_t)n >= cap) {
            fprintf(stderr, "error: the run folder name under %s is too long\n", parent);
            return -1;
        }
        if (mkdir(buf, 0777) == 0)
            return 0; /* created now: no earlier run's files can be in it */
        if (errno != EEXIST) {
            fprintf(stderr, "error: cannot create directory %s: %s\n", buf, strerror(errno));
            return -1;
        }
    }
    fprintf(stderr, "error: no free run folder name under %s/%s\n", parent, stamp);
    return -1;
}

int newest_run_model(const char *parent, char *buf, size_t cap)
{
    DIR *d = opendir(parent);
    if (!d)
        return -1;
    int found = 0;
    struct timespec best = {0, 0};
    char best_name[PATH_MAX] = "";
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[PATH_MAX];
        struct stat st;
        int n = snprintf(path, sizeof path, "%s/%s/model.vae", parent, e->d_name);
        if (n < 0 || (size_t)n >= sizeof path || stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        int newer = !found || st.st_mtim.tv_sec > best.tv_sec ||
                    (st.st_mtim.tv_sec == best.tv_sec &&
                     (st.st_mtim.tv_nsec > best.tv_nsec ||
                      (st.st_mtim.tv_nsec == best.tv_nsec && strcmp(path, best_name) > 0)));
        if (newer) {
            found = 1;
            best = st.st_mtim;
            snprintf(best_name, sizeof best_name, "%s", path);
        }
    }
    closedir(d);
    if (!found)
        return -1;
    snprintf(buf, cap, "%s", best_name);
    return 0;
}

void shell_append(char *buf, size_t cap, const char *arg)
{
    size_t n = strlen(buf);
    int plain = *arg != '\0';
    for (const char *q = arg; *q; q++)
        if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-./:=,+@%",
                    *q))
            plain = 0;
    if (n && n + 1 < cap)
        buf[n++] = ' ';
    if (plain) {
        snprintf(buf + n, cap - n, "%s", arg);
        return;
    }
    /* 'a'\''b': single quotes, each quote closed, escaped and reopened. */
    if (n + 1 < cap)
        buf[n++] = '\'';
    for (const char *q = arg; *q && n + 5 < cap; q++) {
        if (*q == '\'') {
            memcpy(buf + n, "'\\''", 4);
            n += 4;
        } else {
            buf[n++] = *q;
        }
    }
    if (n + 1 < cap)
        buf[n++] = '\'';
    buf[n < cap ? n : cap - 1] = '\0';
}

int dataset_fingerprint(const vae_dataset *ds, char *buf, size_t cap)
{
    enum { CHUNK = 1024 };
    size_t n = vae_dataset_count(ds), d = vae_dataset_dim(ds), h = 1, w = d;
    int rc = vae_dataset_image_size(ds, &h, &w);
    if (rc != VAE_OK)
        return report(rc, "vae_dataset_image_size");
    float *x = malloc(CHUNK * d * sizeof *x); /* x[CHUNK][d] */
    if (!x) {
        fprintf(stderr, "error: out of memory\n");
        return VAE_ERR_NOMEM;
    }
    uint64_t hash = 0xcbf29ce484222325u; /* FNV-1a, 64 bits, over 32-bit words */
    for (size_t first = 0; first < n; first += CHUNK) {
        size_t b = n - first < CHUNK ? n - first : CHUNK;
        if ((rc = vae_dataset_range(ds, first, b, x)) != VAE_OK) {
            free(x);
            return report(rc, "vae_dataset_range");
        }
        for (size_t i = 0; i < b * d; i++) {
            uint32_t bits;
            memcpy(&bits, &x[i], sizeof bits);
            hash = (hash ^ bits) * 0x100000001b3u;
        }
    }
    free(x);
    snprintf(buf, cap, "%zu image%s of %zux%zu, fnv1a64 %016llx", n, plural(n), h, w,
             (unsigned long long)hash);
    return VAE_OK;
}
