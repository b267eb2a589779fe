/* Helpers shared by the cmocka tests: error-status assertions, a data
 * generator independent of the library's own RNG, double-precision vector
 * arithmetic for references and finite differences, the fields and CRC-32 of
 * the file formats, whole-file reads and writes, and temporary directories. */
#ifndef VAE_TEST_UTIL_H
#define VAE_TEST_UTIL_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vae/vae.h"

/* Leaves a known message from another function in vae_last_error(), so that
 * a call that fails without recording its own message is caught instead of
 * passing on a stale one. */
static inline void tu_prime_error(const char *fn)
{
    if (strstr(fn, "vae_rng_uniform"))
        (void)vae_layer_init(NULL, NULL);
    else
        (void)vae_rng_uniform(NULL, NULL, 0);
}

static inline void tu_check_error(int rc, int expected, const char *fn, const char *call,
                                  const char *file, int line)
{
    const char *msg = vae_last_error();
    if (rc != expected)
        fail_msg("%s:%d: %s returned %d (%s), expected %d (%s); last error: \"%s\"", file, line,
                 call, rc, vae_strerror(rc), expected, vae_strerror(expected),
                 msg ? msg : "(null)");
    if (!msg || !msg[0] || !strstr(msg, fn))
        fail_msg("%s:%d: %s: vae_last_error() is \"%s\", which does not name %s", file, line,
                 call, msg ? msg : "(null)", fn);
}

/* As tu_check_error, and the message must also contain needle; fn or needle
 * may be NULL to skip that part. */
static inline void tu_check_error_msg(int rc, int expected, const char *fn, const char *needle,
                                      const char *call, const char *file, int line)
{
    const char *msg = vae_last_error();
    if (rc != expected)
        fail_msg("%s:%d: %s returned %d (%s), expected %d (%s); last error: \"%s\"", file, line,
                 call, rc, vae_strerror(rc), expected, vae_strerror(expected),
                 msg ? msg : "(null)");
    if (!msg || !msg[0] || strstr(msg, "vae_rng_uniform: rng is NULL"))
        fail_msg("%s:%d: %s recorded no message of its own (\"%s\")", file, line, call,
                 msg ? msg : "(null)");
    if (fn && !strstr(msg, fn))
        fail_msg("%s:%d: %s: message \"%s\" does not name %s", file, line, call, msg, fn);
    if (needle && !strstr(msg, needle))
        fail_msg("%s:%d: %s: message \"%s\" does not mention \"%s\"", file, line, call, msg,
                 needle);
}

/* call must return `expected` with a fresh message containing fn and needle
 * (either may be NULL); a known message is planted first. */
#define TU_EXPECT_ERR_MSG(call, expected, fn, needle)                                       \
    do {                                                                                    \
        (void)vae_rng_uniform(NULL, NULL, 0);                                               \
        int tu_rc_ = (call);                                                                \
        tu_check_error_msg(tu_rc_, (expected), (fn), (needle), #call, __FILE__, __LINE__);  \
    } while (0)

/* call must return exactly `expected` and leave a message naming fn. */
#define TU_EXPECT_ERR(call, expected, fn)                                                   \
    do {                                                                                    \
        tu_prime_error(fn);                                                                 \
        int tu_rc_ = (call);                                                                \
        tu_check_error(tu_rc_, (expected), (fn), #call, __FILE__, __LINE__);                \
    } while (0)

#define TU_OK(call)                                                                         \
    do {                                                                                    \
        int tu_rc_ = (call);                                                                \
        if (tu_rc_ != VAE_OK)                                                               \
            fail_msg("%s:%d: %s returned %d (%s): %s", __FILE__, __LINE__, #call, tu_rc_,   \
                     vae_strerror(tu_rc_), vae_last_error());                               \
    } while (0)

/* |actual - expected| <= atol + rtol * |expected|, reported with both values. */
#define TU_CLOSE(actual, expected, rtol, atol)                                              \
    do {                                                                                    \
        double tu_a_ = (double)(actual), tu_e_ = (double)(expected);                        \
        double tu_tol_ = (double)(atol) + (double)(rtol) * fabs(tu_e_);                     \
        if (!(fabs(tu_a_ - tu_e_) <= tu_tol_))                                              \
            fail_msg("%s:%d: %s = %.17g, expected %s = %.17g (diff %.3g > tol %.3g)",       \
                     __FILE__, __LINE__, #actual, tu_a_, #expected, tu_e_,                  \
                     fabs(tu_a_ - tu_e_), tu_tol_);                                         \
    } while (0)

/* Test data comes from splitmix64 seeded per test, not from vae_rng, so a
 * bug in the library's generator cannot hide in the data that tests it. */
typedef struct tu_rng {
    uint64_t s;
} tu_rng;

static inline uint64_t tu_u64(tu_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static inline double tu_unif(tu_rng *r)
{
    return (double)(tu_u64(r) >> 11) * 0x1.0p-53;
}

/* Uniform in [lo, hi). */
static inline double tu_range(tu_rng *r, double lo, double hi)
{
    return lo + (hi - lo) * tu_unif(r);
}

static inline double tu_gauss(tu_rng *r)
{
    double u1 = 1.0 - tu_unif(r), u2 = tu_unif(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static inline void tu_fill_range(tu_rng *r, float *x, size_t n, double lo, double hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)tu_range(r, lo, hi);
}

/* A random direction of unit Euclidean length. */
static inline void tu_unit_direction(tu_rng *r, double *v, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        v[i] = tu_gauss(r);
        s += v[i] * v[i];
    }
    s = 1.0 / sqrt(s);
    for (size_t i = 0; i < n; i++)
        v[i] *= s;
}

static inline double tu_dot_fd(const float *a, const double *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

static inline int tu_all_finite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

/* Allocation that fails the test instead of returning NULL. */
static inline void *tu_alloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        fail_msg("out of memory (%zu x %zu)", n, size);
    return p;
}

/* ---- added for the 1.0 API (trainers, contexts, size-prefixed structs) ---- */

/* A vae_epoch_stats full of 0xab garbage, with size = sizeof: every field a
 * call promises to fill must be overwritten. */
static inline vae_epoch_stats tu_stats(void)
{
    vae_epoch_stats st;
    memset(&st, 0xab, sizeof st);
    st.size = sizeof st;
    return st;
}

/* A heap copy of n floats (free it). */
static inline float *tu_copy_floats(const float *src, size_t n)
{
    float *p = (float *)tu_alloc(n, sizeof *p);
    if (n)
        memcpy(p, src, n * sizeof *p);
    return p;
}

/* Index of the first nonzero float, or n when all n are +0.0 or -0.0. */
static inline size_t tu_first_nonzero(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (x[i] != 0.0f)
            return i;
    return n;
}

/* Fails the test unless the trainer's gradient slab is all zero. */
#define TU_ASSERT_ZERO_GRADS(trainer)                                                       \
    do {                                                                                    \
        size_t tu_n_ = 0;                                                                   \
        const float *tu_g_ = vae_trainer_grads((trainer), &tu_n_);                          \
        if (!tu_g_ || !tu_n_)                                                               \
            fail_msg("%s:%d: vae_trainer_grads(%s) gave no slab", __FILE__, __LINE__,       \
                     #trainer);                                                             \
        size_t tu_i_ = tu_first_nonzero(tu_g_, tu_n_);                                      \
        if (tu_i_ != tu_n_)                                                                 \
            fail_msg("%s:%d: gradient %zu of %zu is %g, expected a zero slab", __FILE__,    \
                     __LINE__, tu_i_, tu_n_, (double)tu_g_[tu_i_]);                         \
    } while (0)

/* Index of the first byte of p[0..n) that differs from `byte`, or n. */
static inline size_t tu_first_byte_not(const void *p, size_t n, unsigned char byte)
{
    const unsigned char *b = (const unsigned char *)p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != byte)
            return i;
    return n;
}


/* ---- bytes of files: fixed-width fields, CRC-32 ---- */

/* Little-endian fields, as docs/format.md stores them. */
static inline uint32_t tu_get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t tu_get_le64(const unsigned char *p)
{
    return (uint64_t)tu_get_le32(p) | (uint64_t)tu_get_le32(p + 4) << 32;
}

static inline void tu_put_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline void tu_put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* IEEE 754 binary32 and binary64 values by their bits, little-endian. */
static inline float tu_get_le_f32(const unsigned char *p)
{
    uint32_t u = tu_get_le32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline void tu_put_le_f32(unsigned char *p, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    tu_put_le32(p, u);
}

static inline double tu_get_le_f64(const unsigned char *p)
{
    uint64_t u = tu_get_le64(p);
    double d;
    memcpy(&d, &u, 8);
    return d;
}

static inline void tu_put_le_f64(unsigned char *p, double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    tu_put_le64(p, u);
}

/* Big-endian, as IDX headers store their dimensions. */
static inline void tu_put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* CRC-32 (ISO-HDLC: the one zlib, gzip and the model and checkpoint files
 * use), written out bit by bit so that checksums are checked against code
 * that shares nothing with the library's. Check value: "123456789" gives
 * 0xcbf43926. */
static inline uint32_t tu_crc32(const void *data, size_t n)
{
    const unsigned char *p = (const unsigned char *)data;
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0xedb88320u : c >> 1;
    }
    return c ^ 0xffffffffu;
}

/* ---- whole files ---- */

/* The bytes of the file at path, in a malloc'd buffer (free it) with one
 * byte to spare; their count in *n. */
static inline unsigned char *tu_read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long len = ftell(f);
    assert_true(len >= 0);
    rewind(f);
    unsigned char *p = (unsigned char *)malloc((size_t)len + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return p;
}

/* Creates or truncates the file at path and writes n bytes into it. */
static inline void tu_write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* What vae_model_save_mem writes for m, in a malloc'd buffer (free it); the
 * size query must agree with the bytes written. */
static inline unsigned char *tu_model_bytes(const vae_model *m, size_t *size)
{
    TU_OK(vae_model_save_mem(m, NULL, 0, size));
    unsigned char *buf = (unsigned char *)malloc(*size);
    assert_non_null(buf);
    size_t again = 0;
    TU_OK(vae_model_save_mem(m, buf, *size, &again));
    assert_int_equal(again, *size);
    return buf;
}

/* ---- temporary directories (tests that define _POSIX_C_SOURCE 200809L) ---- */

#if defined(_POSIX_C_SOURCE) && _POSIX_C_SOURCE >= 200809L
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

/* Creates a fresh directory /tmp/<name>_XXXXXX, its path into dir (capacity
 * cap). Returns 0, or -1 when it could not (a cmocka setup's return). */
static inline int tu_make_tmpdir(char *dir, size_t cap, const char *name)
{
    int len = snprintf(dir, cap, "/tmp/%s_XXXXXX", name);
    if (len < 0 || (size_t)len >= cap)
        return -1;
    return mkdtemp(dir) ? 0 : -1;
}

/* Removes a directory and everything below it, even after a test failed
 * half-way and left files or subdirectories behind; symbolic links are
 * removed, not followed. Returns rmdir's result for dir itself. */
static inline int tu_remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    struct dirent *e;
    char path[1024];
    /* Removing entries while reading the directory may skip some: rescan
     * until a pass finds nothing left. */
    for (int found = 1; found;) {
        found = 0;
        rewinddir(d);
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            int len = snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            if (len < 0 || (size_t)len >= sizeof path)
                continue; /* too long to name: left, and rmdir below fails */
            struct stat st;
            if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode) ? tu_remove_tree(path) == 0
                                                              : unlink(path) == 0)
                found = 1;
        }
    }
    closedir(d);
    return rmdir(dir);
}

/* "dir/name" in a static buffer; eight are used in rotation, so a call may
 * take several paths at once. */
static inline const char *tu_path_in(const char *dir, const char *name)
{
    static char buf[8][512];
    static unsigned next;
    char *p = buf[next++ & 7u];
    snprintf(p, sizeof buf[0], "%s/%s", dir, name);
    return p;
}

/* The names in dir (at most 32; "." and ".." left out), sorted, joined by
 * single spaces, into out (capacity cap; the listing must fit). */
static inline void tu_list_dir(const char *dir, char *out, size_t cap)
{
    char names[32][260];
    size_t n = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        assert_true(n < 32);
        snprintf(names[n++], sizeof names[0], "%s", e->d_name);
    }
    closedir(d);
    for (size_t i = 1; i < n; i++) /* insertion sort */
        for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char t[260];
            memcpy(t, names[j], sizeof t);
            memcpy(names[j], names[j - 1], sizeof t);
            memcpy(names[j - 1], t, sizeof t);
        }
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        int w = snprintf(out + len, cap - len, "%s%s", i ? " " : "", names[i]);
        assert_true(w >= 0 && (size_t)w < cap - len);
        len += (size_t)w;
    }
}
#endif

#endif
