/* Datasets: IDX files (plain and gzip, detected from the content), malformed
 * files, gzip members cut or followed by bytes, the file-size limit and gzip
 * bombs (memory measured with a counting allocator), allocation failures,
 * float datasets, subsets, label filters, batches and dynamic binarization.
 * Every file is written into a fresh temporary directory. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "vae/vae.h"

#include "test_util.h"

#if defined(__SANITIZE_ADDRESS__)
/* A loader that believes a header and allocates what it announces would ask
 * for tens of megabytes (or terabytes) here: make any allocation above 64 MB
 * fail, so such a loader returns VAE_ERR_NOMEM instead of VAE_ERR_FORMAT and
 * the test says so. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "max_allocation_size_mb=64:allocator_may_return_null=1";
}
#endif

/* ---- open, interposed ---------------------------------------------------------
 * Defined here, this open is the one the whole process calls, the library's
 * calls included. While fopen_fail_path is set, opening a path containing
 * it fails with errno fopen_errno (ENOMEM is how the kernel reports that it
 * could not allocate); every other call opens as open does. */

static const char *fopen_fail_path;
static int fopen_errno;

int open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (flags & O_CREAT) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    if (fopen_fail_path && strstr(path, fopen_fail_path)) {
        errno = fopen_errno;
        return -1;
    }
    return openat(AT_FDCWD, path, flags, mode);
}

/* ---- a counting allocator ---------------------------------------------------
 * Installed with vae_set_allocator: counts the calls of malloc_fn and
 * realloc_fn, fails call number fail_at (1-based; 0 fails none), and tracks
 * the live bytes, their peak and the largest single block. */

typedef struct counting {
    size_t calls, fail_at;
    size_t live_bytes, peak_bytes, largest;
} counting;

static counting cnt;

#define CNT_HEAD _Alignof(max_align_t) /* the block's size is kept before it */

static void cnt_note(counting *c, size_t old, size_t n)
{
    c->live_bytes += n - old;
    if (c->live_bytes > c->peak_bytes)
        c->peak_bytes = c->live_bytes;
    if (n > c->largest)
        c->largest = n;
}

static void *cnt_malloc(void *payload, size_t n)
{
    counting *c = payload;
    if (++c->calls == c->fail_at)
        return NULL;
    unsigned char *p = malloc(CNT_HEAD + n);
    if (!p)
        return NULL;
    memcpy(p, &n, sizeof n);
    cnt_note(c, 0, n);
    return p + CNT_HEAD;
}

static void *cnt_realloc(void *payload, void *q, size_t n)
{
    counting *c = payload;
    if (++c->calls == c->fail_at)
        return NULL;
    unsigned char *p = (unsigned char *)q - CNT_HEAD;
    size_t old;
    memcpy(&old, p, sizeof old);
    unsigned char *np = realloc(p, CNT_HEAD + n);
    if (!np)
        return NULL;
    memcpy(np, &n, sizeof n);
    cnt_note(c, old, n);
    return np + CNT_HEAD;
}

static void cnt_free(void *payload, void *q)
{
    counting *c = payload;
    unsigned char *p = (unsigned char *)q - CNT_HEAD;
    size_t n;
    memcpy(&n, p, sizeof n);
    c->live_bytes -= n;
    free(p);
}

static void use_counting(size_t fail_at)
{
    memset(&cnt, 0, sizeof cnt);
    cnt.fail_at = fail_at;
    const vae_allocator a = {sizeof a, cnt_malloc, cnt_realloc, cnt_free, &cnt};
    assert_int_equal(vae_allocations(), 0);
    assert_int_equal(vae_set_allocator(&a), VAE_OK);
}

/* Back to the C library's allocator, once nothing of the counting one is live. */
static void stop_counting(void)
{
    assert_int_equal(vae_allocations(), 0);
    assert_int_equal(cnt.live_bytes, 0);
    assert_int_equal(vae_set_allocator(NULL), VAE_OK);
}

static uint64_t default_file_limit;

/* Teardown of the tests that change the allocator or the limit: whatever
 * happened, the next test starts with the defaults. */
static int restore_defaults(void **state)
{
    (void)state;
    fopen_fail_path = NULL;
    cnt.fail_at = 0;
    if (vae_allocations() == 0)
        vae_set_allocator(NULL);
    return vae_set_limit(VAE_LIMIT_FILE_BYTES, default_file_limit);
}

/* ---- error checks --------------------------------------------------------- */

/* Error checks from test_util.h: the exact status, and a fresh message that
 * names fn and mentions needle (either may be NULL). */
#define EXPECT_ERR(call, expected, fn, needle) TU_EXPECT_ERR_MSG(call, expected, fn, needle)
#define OK(call) TU_OK(call)

/* ---- temporary directory and file writers ---------------------------------- */

static char tmpdir[64];

static int make_tmpdir(void **state)
{
    (void)state;
    default_file_limit = vae_get_limit(VAE_LIMIT_FILE_BYTES);
    return tu_make_tmpdir(tmpdir, sizeof tmpdir, "vae_test_dataset");
}

static int remove_tmpdir(void **state)
{
    (void)state;
    return tu_remove_tree(tmpdir);
}

/* Full path of `name` inside the temporary directory (static buffers in
 * rotation, so that an images path and a labels path can coexist). */
static const char *tpath(const char *name)
{
    return tu_path_in(tmpdir, name);
}

/* ---- a small gzip writer ------------------------------------------------------
 * Written here rather than taken from zlib, so the reader is checked against
 * an encoder that shares no code with it. One gzip member (RFC 1952) holding
 * one final deflate block (RFC 1951) with the fixed Huffman code, literals
 * only: real compressed data that inflate must decode symbol by symbol. */

typedef struct bitw {
    unsigned char *p;
    size_t n, cap;
    uint32_t acc;
    int bits;
} bitw;

static void bw_byte(bitw *w, unsigned char b)
{
    assert_true(w->n < w->cap);
    w->p[w->n++] = b;
}

/* LSB first, as deflate packs header fields. */
static void bw_bits(bitw *w, uint32_t v, int n)
{
    for (int i = 0; i < n; i++) {
        w->acc |= ((v >> i) & 1u) << w->bits;
        if (++w->bits == 8) {
            bw_byte(w, (unsigned char)w->acc);
            w->acc = 0;
            w->bits = 0;
        }
    }
}

/* Huffman codes go most significant bit first. */
static void bw_code(bitw *w, uint32_t code, int len)
{
    for (int i = len - 1; i >= 0; i--)
        bw_bits(w, (code >> i) & 1u, 1);
}

static void bw_u32le(bitw *w, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        bw_byte(w, (unsigned char)(v >> (8 * i)));
}

/* gzip of data[n] into out (capacity cap); returns the size. With `runs`,
 * each run of one byte value is its literal then as many matches of length
 * 258 at distance 1 as fit (13 bits per 258 bytes): a gzip bomb in
 * miniature, 1 MB of zeros in 6.5 kB. */
static size_t gzip_bytes_ex(unsigned char *out, size_t cap, const unsigned char *data, size_t n,
                            int runs)
{
    bitw w = {out, 0, cap, 0, 0};
    static const unsigned char head[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
    for (int i = 0; i < 10; i++)
        bw_byte(&w, head[i]);
    bw_bits(&w, 1, 1); /* BFINAL */
    bw_bits(&w, 1, 2); /* BTYPE 01: fixed Huffman */
    for (size_t i = 0; i < n;) {
        if (data[i] < 144)
            bw_code(&w, 0x30u + data[i], 8);
        else
            bw_code(&w, 0x190u + (data[i] - 144u), 9);
        size_t j = i + 1;
        while (runs && j + 258 <= n && !memcmp(data + j, data + j + 1, 257) && data[j] == data[i]) {
            bw_code(&w, 0xc5, 8); /* length code 285: 258 bytes, no extra bits */
            bw_code(&w, 0, 5);    /* distance code 0: distance 1 */
            j += 258;
        }
        i = j;
    }
    bw_code(&w, 0, 7); /* end of block */
    if (w.bits)
        bw_bits(&w, 0, 8 - w.bits);
    bw_u32le(&w, tu_crc32(data, n));
    bw_u32le(&w, (uint32_t)n);
    return w.n;
}

static size_t gzip_bytes(unsigned char *out, size_t cap, const unsigned char *data, size_t n)
{
    return gzip_bytes_ex(out, cap, data, n, 0);
}

static void write_gz(const char *path, const void *data, size_t n)
{
    size_t cap = 32 + 2 * n;
    unsigned char *buf = malloc(cap);
    assert_non_null(buf);
    size_t m = gzip_bytes(buf, cap, data, n);
    tu_write_file(path, buf, m);
    free(buf);
}

/* ---- IDX builders ---------------------------------------------------------- */

enum { N_IMG = 7, IMG_H = 3, IMG_W = 4, IMG_D = IMG_H * IMG_W };

/* Known pixels: every image differs, and 0 and 255 both occur. */
static uint8_t pixel(size_t i, size_t j)
{
    if (i == 0 && j == 0)
        return 0;
    if (i == N_IMG - 1 && j == IMG_D - 1)
        return 255;
    return (uint8_t)((i * 37 + j * 19 + 3) % 256);
}

/* An IDX file: magic 00 00 08 ndims, dims big-endian, then `ndata` bytes
 * from `data`. Returns the byte count written into out (capacity cap). */
static size_t idx_bytes(unsigned char *out, size_t cap, const uint32_t *dims, size_t ndims,
                        const uint8_t *data, size_t ndata)
{
    size_t n = 4 + 4 * ndims + ndata;
    assert_true(n <= cap);
    out[0] = 0;
    out[1] = 0;
    out[2] = 0x08;
    out[3] = (unsigned char)ndims;
    for (size_t i = 0; i < ndims; i++)
        tu_put_be32(out + 4 + 4 * i, dims[i]);
    if (ndata)
        memcpy(out + 4 + 4 * ndims, data, ndata);
    return n;
}

static size_t std_images(unsigned char *out, size_t cap)
{
    uint8_t px[N_IMG * IMG_D];
    for (size_t i = 0; i < N_IMG; i++)
        for (size_t j = 0; j < IMG_D; j++)
            px[i * IMG_D + j] = pixel(i, j);
    const uint32_t dims[3] = {N_IMG, IMG_H, IMG_W};
    return idx_bytes(out, cap, dims, 3, px, sizeof px);
}

static size_t std_labels(unsigned char *out, size_t cap, size_t count)
{
    uint8_t lab[64];
    assert_true(count <= sizeof lab);
    for (size_t i = 0; i < count; i++)
        lab[i] = (uint8_t)i;
    const uint32_t dims[1] = {(uint32_t)count};
    return idx_bytes(out, cap, dims, 1, lab, count);
}

/* Writes the standard image and label files under the given names,
 * compressed or not. */
static void write_std(const char *img_name, int img_gz, const char *lab_name, int lab_gz)
{
    unsigned char buf[512];
    size_t n = std_images(buf, sizeof buf);
    (img_gz ? write_gz : tu_write_file)(tpath(img_name), buf, n);
    if (lab_name) {
        n = std_labels(buf, sizeof buf, N_IMG);
        (lab_gz ? write_gz : tu_write_file)(tpath(lab_name), buf, n);
    }
}

/* Everything a correctly loaded standard dataset must show. */
static void check_std(const vae_dataset *ds, int labels)
{
    assert_non_null(ds);
    assert_int_equal(vae_dataset_count(ds), N_IMG);
    assert_int_equal(vae_dataset_dim(ds), IMG_D);
    size_t h = 0, w = 0;
    OK(vae_dataset_image_size(ds, &h, &w));
    assert_int_equal(h, IMG_H);
    assert_int_equal(w, IMG_W);
    assert_int_equal(vae_dataset_has_labels(ds), labels);
    for (size_t i = 0; labels && i < N_IMG; i++) {
        int32_t l = -1;
        OK(vae_dataset_label(ds, i, &l));
        assert_int_equal(l, (int32_t)i);
    }
    /* Pixels become p / 255 rounded once to float, the value torchvision's
     * ToTensor (a division by 255) gives. */
    float all[N_IMG * IMG_D];
    OK(vae_dataset_range(ds, 0, N_IMG, all));
    for (size_t i = 0; i < N_IMG; i++)
        for (size_t j = 0; j < IMG_D; j++) {
            float want = (float)pixel(i, j) / 255.0f;
            if (all[i * IMG_D + j] != want)
                fail_msg("image %zu pixel %zu (%u): got %.9g, expected %.9g", i, j,
                         (unsigned)pixel(i, j), (double)all[i * IMG_D + j], (double)want);
        }
    assert_true(all[0] == 0.0f);
    assert_true(all[N_IMG * IMG_D - 1] == 1.0f);
    /* A range starting inside the set. */
    float part[3 * IMG_D];
    OK(vae_dataset_range(ds, 4, 3, part));
    assert_memory_equal(part, all + 4 * IMG_D, sizeof part);
    /* A batch gathers the listed samples, repeats included, in order. */
    const size_t idx[5] = {6, 0, 6, 3, 5};
    float b[5 * IMG_D];
    OK(vae_dataset_batch(ds, idx, 5, 0, NULL, b));
    for (size_t r = 0; r < 5; r++)
        assert_memory_equal(b + r * IMG_D, all + idx[r] * IMG_D, IMG_D * sizeof(float));
}

/* ---- loading well-formed files ---------------------------------------------- */

static void test_load_plain(void **state)
{
    (void)state;
    write_std("img.idx", 0, "lab.idx", 0);
    vae_dataset *ds = NULL;
    OK(vae_dataset_load_idx(&ds, tpath("img.idx"), tpath("lab.idx")));
    check_std(ds, 1);
    vae_dataset_free(ds);

    /* Without labels. */
    OK(vae_dataset_load_idx(&ds, tpath("img.idx"), NULL));
    check_std(ds, 0);
    int32_t l = 0;
    EXPECT_ERR(vae_dataset_label(ds, 0, &l), VAE_ERR_STATE, "vae_dataset_label", "no labels");
    vae_dataset *sub = (vae_dataset *)&l; /* must be reset to NULL on failure */
    EXPECT_ERR(vae_dataset_filter_label(&sub, ds, 0, 1), VAE_ERR_STATE,
               "vae_dataset_filter_label", "no labels");
    assert_null(sub);
    vae_dataset_free(ds);
}

static void test_load_gzip(void **state)
{
    (void)state;
    /* The check value of the CRC-32 the gzip trailer uses. */
    assert_int_equal(tu_crc32("123456789", 9), 0xcbf43926u);
    write_std("img.idx.gz", 1, "lab.idx.gz", 1);
    vae_dataset *ds = NULL;
    OK(vae_dataset_load_idx(&ds, tpath("img.idx.gz"), tpath("lab.idx.gz")));
    check_std(ds, 1);
    vae_dataset_free(ds);

    /* One compressed, one not. */
    write_std("img2.idx", 0, "lab2.idx.gz", 1);
    OK(vae_dataset_load_idx(&ds, tpath("img2.idx"), tpath("lab2.idx.gz")));
    check_std(ds, 1);
    vae_dataset_free(ds);
}

static void test_load_misleading_names(void **state)
{
    (void)state;
    /* Compression comes from the content: plain bytes named .gz and gzip
     * bytes without the suffix both load. */
    write_std("plain.gz", 0, "gzip-labels.idx", 1);
    vae_dataset *ds = NULL;
    OK(vae_dataset_load_idx(&ds, tpath("plain.gz"), tpath("gzip-labels.idx")));
    check_std(ds, 1);
    vae_dataset_free(ds);

    write_std("gzip-images", 1, "plain-labels.gz", 0);
    OK(vae_dataset_load_idx(&ds, tpath("gzip-images"), tpath("plain-labels.gz")));
    check_std(ds, 1);
    vae_dataset_free(ds);

    /* And the file written compressed really is gzip (magic 1f 8b). */
    size_t n = 0;
    unsigned char *raw = tu_read_file(tpath("gzip-images"), &n);
    assert_true(n >= 2);
    assert_int_equal(raw[0], 0x1f);
    assert_int_equal(raw[1], 0x8b);
    free(raw);
}

static void test_load_two_dimensional(void **state)
{
    (void)state;
    /* ndims 2: count x values, a flat layout; geometry 1 x values. */
    uint8_t px[5 * 6];
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (uint8_t)(i * 8 + 1);
    const uint32_t dims[2] = {5, 6};
    unsigned char buf[128];
    size_t n = idx_bytes(buf, sizeof buf, dims, 2, px, sizeof px);
    tu_write_file(tpath("flat.idx"), buf, n);
    vae_dataset *ds = NULL;
    OK(vae_dataset_load_idx(&ds, tpath("flat.idx"), NULL));
    assert_int_equal(vae_dataset_count(ds), 5);
    assert_int_equal(vae_dataset_dim(ds), 6);
    size_t h = 0, w = 0;
    OK(vae_dataset_image_size(ds, &h, &w));
    assert_int_equal(h, 1);
    assert_int_equal(w, 6);
    float v[5 * 6];
    OK(vae_dataset_range(ds, 0, 5, v));
    for (size_t i = 0; i < sizeof px; i++)
        assert_true(v[i] == (float)px[i] / 255.0f);
    vae_dataset_free(ds);
}

/* ---- malformed files ------------------------------------------------------- */

/* Writes `bytes` as images (plain and gzip) and expects VAE_ERR_FORMAT with
 * a message naming the file and mentioning `needle`. */
static void expect_refused(const char *name, const void *bytes, size_t n, int status,
                           const char *needle)
{
    char gzname[128];
    snprintf(gzname, sizeof gzname, "%s.gz", name);
    const char *paths[2] = {tpath(name), tpath(gzname)};
    tu_write_file(paths[0], bytes, n);
    write_gz(paths[1], bytes, n);
    for (int k = 0; k < 2; k++) {
        vae_dataset *ds = (vae_dataset *)paths; /* must be reset to NULL */
        EXPECT_ERR(vae_dataset_load_idx(&ds, paths[k], NULL), status, paths[k], needle);
        assert_null(ds);
    }
}

static void expect_bad_images(const char *name, const void *bytes, size_t n, const char *needle)
{
    expect_refused(name, bytes, n, VAE_ERR_FORMAT, needle);
}

static void test_bad_magic(void **state)
{
    (void)state;
    unsigned char buf[512];
    size_t n = std_images(buf, sizeof buf);
    static const struct {
        int at;
        unsigned char v;
    } edits[] = {
        {2, 0x09}, /* type: int8 */
        {2, 0x0d}, /* type: float */
        {2, 0x00},
        {3, 0x04}, /* four dimensions */
        {3, 0x01}, /* one: a label file */
        {3, 0x00},
        {0, 0x01}, /* the first two bytes must be zero */
        {1, 0x08},
    };
    for (size_t e = 0; e < sizeof edits / sizeof edits[0]; e++) {
        unsigned char bad[512];
        memcpy(bad, buf, n);
        bad[edits[e].at] = edits[e].v;
        char name[32];
        snprintf(name, sizeof name, "magic%zu", e);
        expect_bad_images(name, bad, n, "magic");
    }
    /* A label file given as images and an image file given as labels. */
    n = std_labels(buf, sizeof buf, N_IMG);
    expect_bad_images("labels-as-images", buf, n, "magic");
    write_std("img.idx", 0, NULL, 0);
    n = std_images(buf, sizeof buf);
    tu_write_file(tpath("images-as-labels"), buf, n);
    vae_dataset *ds = NULL;
    EXPECT_ERR(vae_dataset_load_idx(&ds, tpath("img.idx"), tpath("images-as-labels")),
               VAE_ERR_FORMAT, "images-as-labels", "magic");
    assert_null(ds);
}

static void test_truncated_and_long(void **state)
{
    (void)state;
    unsigned char buf[512];
    size_t n = std_images(buf, sizeof buf);
    assert_int_equal(n, 16 + N_IMG * IMG_D);
    expect_bad_images("empty", buf, 0, "truncated header");
    expect_bad_images("two-bytes", buf, 2, "truncated header");
    expect_bad_images("half-dims", buf, 10, "truncated header");  /* 1.5 of 3 sizes */
    expect_bad_images("no-data", buf, 16, "truncated");
    expect_bad_images("short-data", buf, n - 1, "truncated");
    expect_bad_images("short-half", buf, 16 + 40, "truncated");
    /* One byte more than the header announces. */
    buf[n] = 7;
    expect_bad_images("long-data", buf, n + 1, "past the size");

    /* Labels too. */
    n = std_labels(buf, sizeof buf, N_IMG);
    write_std("img.idx", 0, NULL, 0);
    tu_write_file(tpath("lab-short"), buf, n - 1);
    tu_write_file(tpath("lab-long"), buf, n + 1);
    vae_dataset *ds = NULL;
    EXPECT_ERR(vae_dataset_load_idx(&ds, tpath("img.idx"), tpath("lab-short")), VAE_ERR_FORMAT,
               "lab-short", "truncated");
    EXPECT_ERR(vae_dataset_load_idx(&ds, tpath("img.idx"), tpath("lab-long")), VAE_ERR_FORMAT,
               "lab-long", "past the size");
    assert_null(ds);
}

static void test_absurd_headers(void **state)
{
    (void)state;
    unsigned char buf[256];
    uint8_t junk[84];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (uint8_t)i;
    /* 2^31 images of 2^12 x 2^12: 2^55 bytes announced, 84 present. Within
     * the format's bounds, but beyond VAE_LIMIT_FILE_BYTES (2^31 by
     * default): refused from the header, before anything is allocated. */
    {
        const uint32_t d[3] = {1u << 31, 1u << 12, 1u << 12};
        size_t n = idx_bytes(buf, sizeof buf, d, 3, junk, sizeof junk);
        expect_refused("huge", buf, n, VAE_ERR_NOMEM, "VAE_LIMIT_FILE_BYTES");
    }
    /* MNIST's training header on 84 bytes of data (100 bytes in all): must
     * fail without first allocating the 47 MB it announces. */
    {
        const uint32_t d[3] = {60000, 28, 28};
        size_t n = idx_bytes(buf, sizeof buf, d, 3, junk, sizeof junk);
        assert_int_equal(n, 100);
        expect_bad_images("mnist-header", buf, n, "truncated");
    }
    {
        const uint32_t d[3] = {100000, 28, 28};
        size_t n = idx_bytes(buf, sizeof buf, d, 3, junk, sizeof junk);
        expect_bad_images("big-header", buf, n, "truncated");
    }
    /* Values per sample beyond any image. */
    {
        const uint32_t d[3] = {1, 1u << 16, 1u << 16};
        size_t n = idx_bytes(buf, sizeof buf, d, 3, junk, sizeof junk);
        expect_bad_images("wide", buf, n, "absurd");
    }
    {
        const uint32_t d[3] = {0xffffffffu, 0xffffffffu, 0xffffffffu};
        size_t n = idx_bytes(buf, sizeof buf, d, 3, junk, sizeof junk);
        expect_bad_images("all-ones", buf, n, "absurd");
    }
    {
        const uint32_t d[3] = {0xffffffffu, 2, 2};
        size_t n = idx_bytes(buf, sizeof buf, d, 3, junk, sizeof junk);
        expect_bad_images("many", buf, n, "absurd");
    }
    /* Zero-sized dimensions. */
    {
        const uint32_t d[3] = {0, 3, 4};
        size_t n = idx_bytes(buf, sizeof buf, d, 3, junk, 0);
        expect_bad_images("zero-count", buf, n, "absurd");
    }
    {
        const uint32_t d[3] = {7, 0, 4};
        size_t n = idx_bytes(buf, sizeof buf, d, 3, junk, 0);
        expect_bad_images("zero-height", buf, n, "absurd");
    }
    /* A label file announcing 2^31 labels. */
    {
        const uint32_t d[1] = {1u << 31};
        size_t n = idx_bytes(buf, sizeof buf, d, 1, junk, sizeof junk);
        tu_write_file(tpath("huge-labels"), buf, n);
        write_std("img.idx", 0, NULL, 0);
        vae_dataset *ds = NULL;
        EXPECT_ERR(vae_dataset_load_idx(&ds, tpath("img.idx"), tpath("huge-labels")),
                   VAE_ERR_FORMAT, "huge-labels", NULL);
        assert_null(ds);
    }
}

static void test_label_count_mismatch(void **state)
{
    (void)state;
    write_std("img.idx", 0, NULL, 0);
    unsigned char buf[128];
    size_t n = std_labels(buf, sizeof buf, N_IMG - 1);
    tu_write_file(tpath("lab6"), buf, n);
    n = std_labels(buf, sizeof buf, N_IMG + 1);
    write_gz(tpath("lab8.gz"), buf, n);
    vae_dataset *ds = NULL;
    EXPECT_ERR(vae_dataset_load_idx(&ds, tpath("img.idx"), tpath("lab6")), VAE_ERR_FORMAT,
               "lab6", "6 labels");
    EXPECT_ERR(vae_dataset_load_idx(&ds, tpath("img.idx"), tpath("lab8.gz")), VAE_ERR_FORMAT,
               "lab8.gz", "8 labels");
    assert_null(ds);
}

static void test_corrupt_gzip(void **state)
{
    (void)state;
    /* A valid gzip member header (deflate, no flags, OS unix), then a
     * deflate block of the reserved type 3: the stream is invalid from its
     * first block. */
    unsigned char bad[64] = {0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03};
    for (size_t i = 10; i < sizeof bad; i++)
        bad[i] = 0xff;
    tu_write_file(tpath("garbage.gz"), bad, sizeof bad);
    vae_dataset *ds = NULL;
    EXPECT_ERR(vae_dataset_load_idx(&ds, tpath("garbage.gz"), NULL), VAE_ERR_FORMAT,
               "garbage.gz", "gzip");
    assert_null(ds);

    /* A real compressed IDX file with garbage over its middle. */
    write_std("img.gz", 1, NULL, 0);
    size_t n = 0;
    unsigned char *raw = tu_read_file(tpath("img.gz"), &n);
    assert_true(n > 24);
    for (size_t i = 12; i < n - 8; i++)
        raw[i] = (unsigned char)(0xff ^ i);
    tu_write_file(tpath("mangled.gz"), raw, n);
    EXPECT_ERR(vae_dataset_load_idx(&ds, tpath("mangled.gz"), NULL), VAE_ERR_FORMAT,
               "mangled.gz", NULL);
    assert_null(ds);
    free(raw);

    /* A compressed file cut in the middle of its deflate stream. */
    raw = tu_read_file(tpath("img.gz"), &n);
    tu_write_file(tpath("cut.gz"), raw, n / 2);
    EXPECT_ERR(vae_dataset_load_idx(&ds, tpath("cut.gz"), NULL), VAE_ERR_FORMAT, "cut.gz",
               NULL);
    assert_null(ds);
    free(raw);

    /* Intact deflate data under a wrong CRC-32 or a wrong length in the
     * gzip trailer. */
    for (int k = 0; k < 2; k++) {
        raw = tu_read_file(tpath("img.gz"), &n);
        raw[n - (k ? 4 : 8)] ^= 0x01;
        const char *name = k ? "bad-isize.gz" : "bad-crc.gz";
        tu_write_file(tpath(name), raw, n);
        EXPECT_ERR(vae_dataset_load_idx(&ds, tpath(name), NULL), VAE_ERR_FORMAT, name, "gzip");
        assert_null(ds);
        free(raw);
    }

    /* A good image file with corrupt compressed labels. */
    write_std("img.idx", 0, NULL, 0);
    EXPECT_ERR(vae_dataset_load_idx(&ds, tpath("img.idx"), tpath("garbage.gz")),
               VAE_ERR_FORMAT, "garbage.gz", "gzip");
    assert_null(ds);
}

static void test_missing_files_and_null(void **state)
{
    (void)state;
    vae_dataset *ds = (vae_dataset *)state;
    EXPECT_ERR(vae_dataset_load_idx(&ds, tpath("does-not-exist"), NULL), VAE_ERR_IO,
               "does-not-exist", NULL);
    assert_null(ds);
    write_std("img.idx", 0, NULL, 0);
    EXPECT_ERR(vae_dataset_load_idx(&ds, tpath("img.idx"), tpath("no-labels-here")),
               VAE_ERR_IO, "no-labels-here", NULL);
    assert_null(ds);
    /* A directory is not readable as a file: an I/O error, not a format one. */
    assert_int_equal(mkdir(tpath("subdir"), 0755), 0);
    EXPECT_ERR(vae_dataset_load_idx(&ds, tpath("subdir"), NULL), VAE_ERR_IO, "subdir", NULL);
    assert_null(ds);

    EXPECT_ERR(vae_dataset_load_idx(NULL, tpath("img.idx"), NULL), VAE_ERR_INVALID,
               "vae_dataset_load_idx", "out");
    /* On failure *out is NULL, whatever the reason (vae.h). */
    ds = (vae_dataset *)state;
    EXPECT_ERR(vae_dataset_load_idx(&ds, NULL, NULL), VAE_ERR_INVALID, "vae_dataset_load_idx",
               "images_path");
    assert_null(ds);

    /* Getters on NULL. */
    assert_int_equal(vae_dataset_count(NULL), 0);
    assert_int_equal(vae_dataset_dim(NULL), 0);
    assert_int_equal(vae_dataset_has_labels(NULL), 0);
    size_t h, w;
    EXPECT_ERR(vae_dataset_image_size(NULL, &h, &w), VAE_ERR_INVALID, "vae_dataset_image_size",
               "NULL");
    vae_dataset_free(NULL);
}

/* ---- gzip members: complete, verified, alone ------------------------------- */

/* The standard image file gzip-compressed, in a malloc'd buffer with room
 * for `spare` more bytes. */
static unsigned char *std_images_gz(size_t *n, size_t spare)
{
    unsigned char raw[512];
    size_t m = std_images(raw, sizeof raw);
    size_t cap = 32 + 2 * m;
    unsigned char *gz = malloc(cap + spare);
    assert_non_null(gz);
    *n = gzip_bytes(gz, cap, raw, m);
    return gz;
}

static void test_gzip_truncated_trailer(void **state)
{
    (void)state;
    size_t n = 0;
    unsigned char *gz = std_images_gz(&n, 0);
    tu_write_file(tpath("whole.gz"), gz, n);
    vae_dataset *ds = NULL;
    OK(vae_dataset_load_idx(&ds, tpath("whole.gz"), NULL));
    check_std(ds, 0);
    vae_dataset_free(ds);
    write_std("img.idx", 0, NULL, 0);

    /* Cut by 1 to 8 bytes the deflate data is whole and every pixel
     * inflates, but the trailer (CRC-32 and length) is incomplete; from 9 on
     * the deflate data is cut too. A gzip member must be complete. */
    for (size_t cut = 1; cut <= 24; cut++) {
        char name[32];
        snprintf(name, sizeof name, "cut%zu.gz", cut);
        tu_write_file(tpath(name), gz, n - cut);
        ds = (vae_dataset *)&n;
        EXPECT_ERR(vae_dataset_load_idx(&ds, tpath(name), NULL), VAE_ERR_FORMAT, name,
                   "truncated gzip data");
        assert_null(ds);
    }
    /* Labels too: the image data read is freed. */
    unsigned char lab[64], lgz[256];
    size_t ln = std_labels(lab, sizeof lab, N_IMG);
    size_t lgn = gzip_bytes(lgz, sizeof lgz, lab, ln);
    tu_write_file(tpath("lab-cut.gz"), lgz, lgn - 4);
    EXPECT_ERR(vae_dataset_load_idx(&ds, tpath("img.idx"), tpath("lab-cut.gz")), VAE_ERR_FORMAT,
               "lab-cut.gz", "truncated gzip data");
    assert_null(ds);

    /* One flipped bit anywhere in the deflate data of the pixels (past the
     * gzip header, 10 bytes, the block header and the 16 literals of the IDX
     * header, 131 bits): with the trailer the
     * CRC-32 (or the decoder) catches it; without the trailer (the file cut
     * by 8 bytes) nothing could, so that file is refused as cut (or for
     * what the flip broke, when that shows first: an invalid code, data
     * past the announced end). Some of these flips change one literal into another, i.e. one
     * pixel, and only the refusal of a cut member catches them. */
    unsigned char *bad = malloc(n);
    assert_non_null(bad);
    for (size_t at = 10 + 17; at < n - 9; at++) /* not the last, with padding bits */
        for (int bit = 0; bit < 8; bit++) {
            memcpy(bad, gz, n);
            bad[at] ^= (unsigned char)(1u << bit);
            for (int cut = 0; cut <= 8; cut += 8) {
                tu_write_file(tpath("flip.gz"), bad, n - (size_t)cut);
                ds = (vae_dataset *)&n;
                EXPECT_ERR(vae_dataset_load_idx(&ds, tpath("flip.gz"), NULL), VAE_ERR_FORMAT,
                           "flip.gz", NULL);
                assert_null(ds);
            }
        }
    free(bad);
    free(gz);
}

static void test_gzip_trailing_bytes(void **state)
{
    (void)state;
    size_t n = 0;
    unsigned char *gz = std_images_gz(&n, 1024);
    unsigned char second[64];
    static const unsigned char nothing[1] = {0};
    size_t sn = gzip_bytes(second, sizeof second, nothing, 0); /* a member holding 0 bytes */
    static const struct {
        const char *name;
        int kind; /* 0: one garbage byte, 1: 8 zero bytes, 2: empty member, 3: the file again */
    } cases[] = {{"garbage.gz", 0}, {"zeros.gz", 1}, {"empty-member.gz", 2}, {"twice.gz", 3}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        size_t m = n;
        switch (cases[c].kind) {
        case 0:
            gz[m++] = 'x';
            break;
        case 1:
            memset(gz + m, 0, 8);
            m += 8;
            break;
        case 2:
            memcpy(gz + m, second, sn);
            m += sn;
            break;
        default:
            memcpy(gz + m, gz, n);
            m += n;
        }
        tu_write_file(tpath(cases[c].name), gz, m);
        vae_dataset *ds = (vae_dataset *)&n;
        EXPECT_ERR(vae_dataset_load_idx(&ds, tpath(cases[c].name), NULL), VAE_ERR_FORMAT,
                   cases[c].name, "trailing bytes after the gzip member");
        assert_null(ds);
    }
    /* The same for a label file. */
    unsigned char lab[64], lgz[256];
    size_t ln = std_labels(lab, sizeof lab, N_IMG);
    size_t lgn = gzip_bytes(lgz, sizeof lgz - 1, lab, ln);
    lgz[lgn++] = 0x1f;
    tu_write_file(tpath("lab-trailing.gz"), lgz, lgn);
    write_std("img.idx", 0, NULL, 0);
    vae_dataset *ds = (vae_dataset *)&n;
    EXPECT_ERR(vae_dataset_load_idx(&ds, tpath("img.idx"), tpath("lab-trailing.gz")),
               VAE_ERR_FORMAT, "lab-trailing.gz", "trailing bytes");
    assert_null(ds);
    free(gz);
}

/* ---- memory: limits and bombs ---------------------------------------------- */

/* An IDX file with header dims[ndims] and nzeros zero bytes of data,
 * gzip-compressed with runs; malloc'd, its size in *n. */
static unsigned char *zeros_gz(const uint32_t *dims, size_t ndims, size_t nzeros, size_t *n)
{
    size_t raw_n = 4 + 4 * ndims + nzeros;
    unsigned char *raw = calloc(raw_n, 1);
    assert_non_null(raw);
    idx_bytes(raw, raw_n, dims, ndims, NULL, 0);
    size_t cap = 1024 + raw_n / 16;
    unsigned char *gz = malloc(cap);
    assert_non_null(gz);
    *n = gzip_bytes_ex(gz, cap, raw, raw_n, 1);
    free(raw);
    return gz;
}

/* What a refused file may cost, whatever it announces or inflates to: the
 * reader's fixed buffers (a 64 KiB read buffer, zlib's 7 kB state and 32 KiB
 * window), nothing of the data's size. */
#define REFUSED_LARGEST ((size_t)128 << 10)
#define REFUSED_PEAK ((size_t)256 << 10)

/* Loads path as images under the counting allocator and expects status with
 * needle in the message, within the bounds above (largest, peak). */
static void load_counted(const char *path, int status, const char *needle, size_t largest,
                         size_t peak)
{
    use_counting(0);
    vae_dataset *ds = (vae_dataset *)&cnt;
    EXPECT_ERR(vae_dataset_load_idx(&ds, path, NULL), status, path, needle);
    assert_null(ds);
    if (cnt.largest > largest || cnt.peak_bytes > peak)
        fail_msg("%s: largest allocation %zu bytes (bound %zu), peak %zu live bytes (bound %zu)",
                 path, cnt.largest, largest, cnt.peak_bytes, peak);
    stop_counting();
}

static void test_gzip_bomb(void **state)
{
    (void)state;
    enum { MB = 1 << 20 };
    /* A 7 kB file inflating to 1 MiB of zeros, under a header announcing
     * 2^21 images of 32 x 32: 2 GiB + 16 bytes, above the default limit
     * (2^31). Refused from the header: no data is inflated. */
    const uint32_t huge[3] = {1u << 21, 32, 32};
    size_t n = 0;
    unsigned char *gz = zeros_gz(huge, 3, MB, &n);
    assert_true(n < 8000);
    tu_write_file(tpath("bomb.gz"), gz, n);
    free(gz);
    assert_int_equal(vae_get_limit(VAE_LIMIT_FILE_BYTES), (uint64_t)1 << 31);
    load_counted(tpath("bomb.gz"), VAE_ERR_NOMEM, "VAE_LIMIT_FILE_BYTES = 2147483648",
                 REFUSED_LARGEST, REFUSED_PEAK);

    /* A consistent file (1024 images of 32 x 32 zeros, 1 MiB + 16 bytes of
     * content) under a limit of 256 KiB: refused, compressed or not. */
    const uint32_t fit[3] = {1024, 32, 32};
    gz = zeros_gz(fit, 3, MB, &n);
    tu_write_file(tpath("fit.gz"), gz, n);
    free(gz);
    unsigned char *raw = calloc(16 + MB, 1);
    assert_non_null(raw);
    idx_bytes(raw, 16 + MB, fit, 3, NULL, 0);
    tu_write_file(tpath("fit.idx"), raw, 16 + MB);
    free(raw);
    OK(vae_set_limit(VAE_LIMIT_FILE_BYTES, 256 << 10));
    load_counted(tpath("fit.gz"), VAE_ERR_NOMEM, "VAE_LIMIT_FILE_BYTES = 262144",
                 REFUSED_LARGEST, REFUSED_PEAK);
    load_counted(tpath("fit.idx"), VAE_ERR_NOMEM, "VAE_LIMIT_FILE_BYTES = 262144",
                 REFUSED_LARGEST, REFUSED_PEAK);
    /* The limit counts the whole content, header included: one byte short
     * is refused, exactly enough loads. */
    OK(vae_set_limit(VAE_LIMIT_FILE_BYTES, 16 + MB - 1));
    load_counted(tpath("fit.gz"), VAE_ERR_NOMEM, "VAE_LIMIT_FILE_BYTES", REFUSED_LARGEST,
                 REFUSED_PEAK);
    load_counted(tpath("fit.idx"), VAE_ERR_NOMEM, "VAE_LIMIT_FILE_BYTES", REFUSED_LARGEST,
                 REFUSED_PEAK);
    OK(vae_set_limit(VAE_LIMIT_FILE_BYTES, 16 + MB));
    for (int k = 0; k < 2; k++) {
        vae_dataset *ds = NULL;
        OK(vae_dataset_load_idx(&ds, tpath(k ? "fit.idx" : "fit.gz"), NULL));
        assert_int_equal(vae_dataset_count(ds), 1024);
        assert_int_equal(vae_dataset_dim(ds), 1024);
        float row[1024];
        OK(vae_dataset_range(ds, 1023, 1, row));
        for (size_t j = 0; j < 1024; j++)
            assert_true(row[j] == 0.0f);
        vae_dataset_free(ds);
    }
    OK(vae_set_limit(VAE_LIMIT_FILE_BYTES, default_file_limit));

    /* A header announcing 16 bytes of data over 1 MiB of zeros: the stream
     * is inflated one byte past the announced end, not to its end. */
    const uint32_t small[3] = {1, 4, 4};
    gz = zeros_gz(small, 3, MB, &n);
    tu_write_file(tpath("long.gz"), gz, n);
    free(gz);
    load_counted(tpath("long.gz"), VAE_ERR_FORMAT, "past the size", REFUSED_LARGEST,
                 REFUSED_PEAK);

    /* 1 GiB announced, within the default limit, over 1 MiB of zeros: the
     * data buffer grows with what arrives (at most twice that), never
     * toward the announced size, and the file is refused as truncated. */
    const uint32_t big[3] = {1u << 20, 32, 32};
    gz = zeros_gz(big, 3, MB, &n);
    tu_write_file(tpath("short.gz"), gz, n);
    free(gz);
    load_counted(tpath("short.gz"), VAE_ERR_FORMAT, "truncated", 2 * (size_t)MB,
                 2 * (size_t)MB + REFUSED_PEAK);
}

static void test_compressed_file_limit(void **state)
{
    (void)state;
    /* 600 images of 100 pixels of 255 (60012 bytes of content): each
     * literal takes 9 bits, so the gzip file (67531 bytes) is larger than
     * its content. Under a limit of 64 KiB the content fits, the file does
     * not: refused, as the limit holds for both. */
    enum { COUNT = 600, DIM = 100 };
    static uint8_t px[COUNT * DIM];
    memset(px, 255, sizeof px);
    const uint32_t dims[2] = {COUNT, DIM};
    size_t raw_n = 12 + sizeof px, cap = 2 * raw_n + (64 << 10) + 64;
    unsigned char *raw = malloc(raw_n), *gz = malloc(cap);
    assert_non_null(raw);
    assert_non_null(gz);
    idx_bytes(raw, raw_n, dims, 2, px, sizeof px);
    size_t n = gzip_bytes(gz, 2 * raw_n + 32, raw, raw_n);
    assert_true(raw_n <= 65536 && n > 65536);
    tu_write_file(tpath("wide.gz"), gz, n);
    OK(vae_set_limit(VAE_LIMIT_FILE_BYTES, 65536));
    load_counted(tpath("wide.gz"), VAE_ERR_NOMEM, "VAE_LIMIT_FILE_BYTES = 65536",
                 REFUSED_LARGEST, REFUSED_PEAK);

    /* The same through a pipe: not a regular file, refused before anything
     * is read (docs/format.md, "Reading"). */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fds[0]);
    if (access(path, R_OK) == 0) {
        vae_dataset *ds = (vae_dataset *)&n;
        EXPECT_ERR(vae_dataset_load_idx(&ds, path, NULL), VAE_ERR_IO, "vae_dataset_load_idx",
                   "is a FIFO, not a regular file");
        assert_null(ds);
    }
    close(fds[0]);
    close(fds[1]);
    assert_int_equal(vae_allocations(), 0);

    /* Under the default limit the file loads: every pixel 1. */
    OK(vae_set_limit(VAE_LIMIT_FILE_BYTES, default_file_limit));
    vae_dataset *ds = NULL;
    OK(vae_dataset_load_idx(&ds, tpath("wide.gz"), NULL));
    assert_int_equal(vae_dataset_count(ds), COUNT);
    float row[DIM];
    OK(vae_dataset_range(ds, COUNT - 1, 1, row));
    for (size_t j = 0; j < DIM; j++)
        assert_true(row[j] == 1.0f);
    vae_dataset_free(ds);
    free(raw);
    free(gz);
}

/* ---- out of memory ------------------------------------------------------------ */

static void fopen_fails(const char *images, const char *labels, const char *which, int err,
                        int status)
{
    fopen_fail_path = which;
    fopen_errno = err;
    vae_dataset *ds = (vae_dataset *)&err;
    EXPECT_ERR(vae_dataset_load_idx(&ds, images, labels), status, which, strerror(err));
    fopen_fail_path = NULL;
    assert_null(ds);
    assert_int_equal(vae_allocations(), 0);
}

static void test_open_out_of_memory(void **state)
{
    (void)state;
    write_std("img.idx", 0, "lab.idx.gz", 1);
    /* open reports with ENOMEM that the kernel could not allocate: out of
     * memory, not an I/O error; other errors stay I/O errors. */
    fopen_fails(tpath("img.idx"), NULL, "img.idx", ENOMEM, VAE_ERR_NOMEM);
    fopen_fails(tpath("img.idx"), tpath("lab.idx.gz"), "lab.idx.gz", ENOMEM, VAE_ERR_NOMEM);
    fopen_fails(tpath("img.idx"), tpath("lab.idx.gz"), "img.idx", EACCES, VAE_ERR_IO);
    fopen_fails(tpath("img.idx"), tpath("lab.idx.gz"), "lab.idx.gz", EMFILE, VAE_ERR_IO);
    vae_dataset *ds = NULL;
    OK(vae_dataset_load_idx(&ds, tpath("img.idx"), tpath("lab.idx.gz")));
    check_std(ds, 1);
    vae_dataset_free(ds);
}

typedef void (*ds_check)(const vae_dataset *ds, int labels);

/* Loads images (and labels) with the N-th allocation failing, for every N
 * until the load needs fewer: each failure is VAE_ERR_NOMEM with *out NULL
 * and nothing left allocated, and the same load then succeeds with the
 * allocator no longer failing. Returns the number of allocations a load
 * makes. */
static size_t fail_each_allocation(const char *images, const char *labels, ds_check check)
{
    size_t before = vae_allocations();
    assert_int_equal(before, 0);
    for (size_t at = 1;; at++) {
        use_counting(at);
        vae_dataset *ds = (vae_dataset *)&at;
        (void)vae_rng_uniform(NULL, NULL, 0); /* a message of another function */
        int rc = vae_dataset_load_idx(&ds, images, labels);
        if (cnt.calls < at) {
            /* Allocation `at` never came: every allocation has been failed once. */
            OK(rc);
            check(ds, labels != NULL);
            vae_dataset_free(ds);
            stop_counting();
            assert_true(at > (labels ? 4u : 2u));
            return at - 1;
        }
        tu_check_error_msg(rc, VAE_ERR_NOMEM, "vae_dataset_load_idx", "out of memory",
                           "vae_dataset_load_idx with an allocation failing", __FILE__,
                           __LINE__);
        assert_null(ds);
        assert_int_equal(vae_allocations(), before);
        assert_int_equal(cnt.live_bytes, 0);
        cnt.fail_at = 0;
        OK(vae_dataset_load_idx(&ds, images, labels));
        check(ds, labels != NULL);
        vae_dataset_free(ds);
        stop_counting();
    }
}

enum { BIG_COUNT = 3072 }; /* 3 MiB of 32 x 32 images: the data buffer grows twice */

static uint8_t big_pixel(size_t i, size_t j)
{
    return (uint8_t)((i * 7 + j * 13) >> 2);
}

static void check_big(const vae_dataset *ds, int labels)
{
    assert_false(labels);
    assert_int_equal(vae_dataset_count(ds), BIG_COUNT);
    assert_int_equal(vae_dataset_dim(ds), 1024);
    float row[1024];
    for (size_t i = 0; i < BIG_COUNT; i += 1021) {
        OK(vae_dataset_range(ds, i, 1, row));
        for (size_t j = 0; j < 1024; j++)
            assert_true(row[j] == (float)big_pixel(i, j) / 255.0f);
    }
}

static void test_allocation_failures(void **state)
{
    (void)state;
    write_std("img.idx", 0, "lab.idx", 0);
    write_std("img.idx.gz", 1, "lab.idx.gz", 1);
    size_t plain = fail_each_allocation(tpath("img.idx"), tpath("lab.idx"), check_std);
    size_t gz = fail_each_allocation(tpath("img.idx.gz"), tpath("lab.idx.gz"), check_std);
    /* zlib's allocations (its state and its window, per file) go through
     * the allocator too, so they were failed as well. */
    assert_true(gz >= plain + 4);
    plain = fail_each_allocation(tpath("img.idx"), NULL, check_std);
    gz = fail_each_allocation(tpath("img.idx.gz"), NULL, check_std);
    assert_true(gz >= plain + 2);

    /* A file of 3 MiB, so that the buffer's reallocations fail too. */
    size_t n = 16 + (size_t)BIG_COUNT * 1024;
    unsigned char *raw = malloc(n);
    assert_non_null(raw);
    const uint32_t dims[3] = {BIG_COUNT, 32, 32};
    idx_bytes(raw, n, dims, 3, NULL, 0);
    for (size_t i = 0; i < BIG_COUNT; i++)
        for (size_t j = 0; j < 1024; j++)
            raw[16 + i * 1024 + j] = big_pixel(i, j);
    tu_write_file(tpath("big.idx"), raw, n);
    write_gz(tpath("big.idx.gz"), raw, n);
    free(raw);
    assert_true(fail_each_allocation(tpath("big.idx"), NULL, check_big) > plain);
    assert_true(fail_each_allocation(tpath("big.idx.gz"), NULL, check_big) > gz);
}

/* ---- binarization ---------------------------------------------------------- */

static void test_binarize_frequencies(void **state)
{
    (void)state;
    /* One 1 x 6 image: pixels 0, 51, 128, 128, 204, 255. */
    const uint8_t px[6] = {0, 51, 128, 128, 204, 255};
    const uint32_t dims[3] = {1, 1, 6};
    unsigned char buf[64];
    size_t n = idx_bytes(buf, sizeof buf, dims, 3, px, sizeof px);
    tu_write_file(tpath("bin.idx"), buf, n);
    vae_dataset *ds = NULL;
    OK(vae_dataset_load_idx(&ds, tpath("bin.idx"), NULL));
    vae_rng *rng = NULL;
    OK(vae_rng_create(&rng, 2024));

    enum { ROWS = 1000, REPS = 200 }; /* 200000 draws per pixel */
    size_t *idx = calloc(ROWS, sizeof *idx);
    float *b = malloc(ROWS * 6 * sizeof *b);
    assert_non_null(idx);
    assert_non_null(b);
    double ones[6] = {0}, both = 0.0;
    for (int rep = 0; rep < REPS; rep++) {
        OK(vae_dataset_batch(ds, idx, ROWS, 1, rng, b));
        for (size_t r = 0; r < ROWS; r++) {
            const float *row = b + r * 6;
            for (size_t j = 0; j < 6; j++) {
                if (row[j] != 0.0f && row[j] != 1.0f)
                    fail_msg("binarized value %.9g is neither 0 nor 1", (double)row[j]);
                ones[j] += row[j];
            }
            both += row[2] * row[3];
        }
    }
    const double N = (double)ROWS * REPS;
    /* 0 never fires and 255 always does, without exception. */
    assert_true(ones[0] == 0.0);
    assert_true(ones[5] == N);
    /* The others: the frequency of ones is a binomial mean with standard
     * deviation sqrt(p (1 - p) / N) <= 0.0012; 5 of them is a false alarm
     * rate below 1e-6, and still separates 128/255 from 0.5 + 0.01. */
    for (size_t j = 1; j < 5; j++) {
        double p = px[j] / 255.0, f = ones[j] / N, sd = sqrt(p * (1.0 - p) / N);
        if (fabs(f - p) > 5.0 * sd)
            fail_msg("pixel %u: frequency of ones %.5f, expected %.5f +- %.5f", px[j], f, p,
                     5.0 * sd);
    }
    /* The two 128 pixels draw independently: P(both) = p^2, not p. */
    double p = 128.0 / 255.0, f2 = both / N, sd2 = sqrt(p * p * (1.0 - p * p) / N);
    if (fabs(f2 - p * p) > 5.0 * sd2)
        fail_msg("joint frequency %.5f, expected %.5f for independent draws", f2, p * p);

    /* Same seed, same draws; and binarization needs a generator. */
    vae_rng *r1 = NULL, *r2 = NULL;
    OK(vae_rng_create(&r1, 5));
    OK(vae_rng_create(&r2, 5));
    float c1[64 * 6], c2[64 * 6];
    OK(vae_dataset_batch(ds, idx, 64, 1, r1, c1));
    OK(vae_dataset_batch(ds, idx, 64, 1, r2, c2));
    assert_memory_equal(c1, c2, sizeof c1);
    EXPECT_ERR(vae_dataset_batch(ds, idx, 4, 1, NULL, c1), VAE_ERR_INVALID, "vae_dataset_batch",
               "rng");
    /* Without binarization the generator is not needed and not touched. */
    OK(vae_dataset_batch(ds, idx, 4, 0, NULL, c1));
    for (size_t j = 0; j < 6; j++)
        assert_true(c1[j] == (float)px[j] / 255.0f);

    vae_rng_free(r1);
    vae_rng_free(r2);
    free(idx);
    free(b);
    vae_rng_free(rng);
    vae_dataset_free(ds);
}

static void test_binarize_float_values(void **state)
{
    (void)state;
    /* Float datasets binarize too; values at or below 0 never fire, values
     * at or above 1 always do. */
    const float data[2 * 4] = {0.0f, 1.0f, -0.5f, 3.0f, 0.25f, 0.75f, 1.0f, 0.0f};
    vae_dataset *ds = NULL;
    OK(vae_dataset_from_floats(&ds, data, 2, 4, NULL));
    vae_rng *rng = NULL;
    OK(vae_rng_create(&rng, 77));
    size_t idx[2000];
    for (size_t i = 0; i < 2000; i++)
        idx[i] = i & 1;
    float *b = malloc(2000 * 4 * sizeof *b);
    assert_non_null(b);
    OK(vae_dataset_batch(ds, idx, 2000, 1, rng, b));
    double q = 0.0, t = 0.0;
    for (size_t i = 0; i < 2000; i++) {
        const float *row = b + i * 4;
        if (i & 1) {
            q += row[0];
            t += row[1];
            assert_true(row[2] == 1.0f);
            assert_true(row[3] == 0.0f);
        } else {
            assert_true(row[0] == 0.0f);
            assert_true(row[1] == 1.0f);
            assert_true(row[2] == 0.0f);
            assert_true(row[3] == 1.0f);
        }
    }
    /* 1000 draws each: sd <= 0.0137, tolerance 5 sd. */
    assert_true(fabs(q / 1000.0 - 0.25) < 5.0 * sqrt(0.25 * 0.75 / 1000.0));
    assert_true(fabs(t / 1000.0 - 0.75) < 5.0 * sqrt(0.25 * 0.75 / 1000.0));
    free(b);
    vae_rng_free(rng);
    vae_dataset_free(ds);
}

/* ---- float datasets, subsets, filters --------------------------------------- */

static void test_from_floats(void **state)
{
    (void)state;
    float data[5 * 3];
    for (size_t i = 0; i < 15; i++)
        data[i] = (float)i * 0.5f - 3.0f; /* values outside [0, 1] are kept as they are */
    int32_t labels[5] = {4, -1, 4, 9, 2};
    vae_dataset *ds = NULL;
    OK(vae_dataset_from_floats(&ds, data, 5, 3, labels));
    /* The dataset holds a copy: changing the caller's buffers afterwards
     * changes nothing. */
    float saved[15];
    memcpy(saved, data, sizeof saved);
    for (size_t i = 0; i < 15; i++)
        data[i] = 1234.0f;
    labels[0] = labels[1] = 77;
    assert_int_equal(vae_dataset_count(ds), 5);
    assert_int_equal(vae_dataset_dim(ds), 3);
    size_t h = 0, w = 0;
    OK(vae_dataset_image_size(ds, &h, &w));
    assert_int_equal(h, 1);
    assert_int_equal(w, 3);
    assert_int_equal(vae_dataset_has_labels(ds), 1);
    float out[15];
    OK(vae_dataset_range(ds, 0, 5, out));
    assert_memory_equal(out, saved, sizeof out);
    int32_t l = 0;
    OK(vae_dataset_label(ds, 0, &l));
    assert_int_equal(l, 4);
    OK(vae_dataset_label(ds, 1, &l));
    assert_int_equal(l, -1);
    OK(vae_dataset_label(ds, 4, &l));
    assert_int_equal(l, 2);

    /* Out of range accesses. */
    EXPECT_ERR(vae_dataset_label(ds, 5, &l), VAE_ERR_INVALID, "vae_dataset_label", "index 5");
    EXPECT_ERR(vae_dataset_label(ds, SIZE_MAX, &l), VAE_ERR_INVALID, "vae_dataset_label", NULL);
    EXPECT_ERR(vae_dataset_label(ds, 0, NULL), VAE_ERR_INVALID, "vae_dataset_label", "NULL");
    EXPECT_ERR(vae_dataset_label(NULL, 0, &l), VAE_ERR_INVALID, "vae_dataset_label", "NULL");
    EXPECT_ERR(vae_dataset_range(ds, 5, 1, out), VAE_ERR_INVALID, "vae_dataset_range", NULL);
    EXPECT_ERR(vae_dataset_range(ds, 3, 3, out), VAE_ERR_INVALID, "vae_dataset_range", NULL);
    EXPECT_ERR(vae_dataset_range(ds, 6, 1, out), VAE_ERR_INVALID, "vae_dataset_range", NULL);
    EXPECT_ERR(vae_dataset_range(ds, SIZE_MAX, 2, out), VAE_ERR_INVALID, "vae_dataset_range",
               NULL);
    EXPECT_ERR(vae_dataset_range(ds, 1, SIZE_MAX, out), VAE_ERR_INVALID, "vae_dataset_range",
               NULL);
    EXPECT_ERR(vae_dataset_range(ds, 0, 0, out), VAE_ERR_INVALID, "vae_dataset_range", "n is 0");
    EXPECT_ERR(vae_dataset_range(ds, 0, 1, NULL), VAE_ERR_INVALID, "vae_dataset_range", "NULL");
    EXPECT_ERR(vae_dataset_range(NULL, 0, 1, out), VAE_ERR_INVALID, "vae_dataset_range", "NULL");
    /* The last sample exactly is in range. */
    OK(vae_dataset_range(ds, 4, 1, out));
    assert_memory_equal(out, saved + 12, 3 * sizeof(float));

    const size_t bad_idx[3] = {0, 5, 1};
    EXPECT_ERR(vae_dataset_batch(ds, bad_idx, 3, 0, NULL, out), VAE_ERR_INVALID,
               "vae_dataset_batch", "indices[1] = 5");
    EXPECT_ERR(vae_dataset_batch(ds, bad_idx, 0, 0, NULL, out), VAE_ERR_INVALID,
               "vae_dataset_batch", "n is 0");
    EXPECT_ERR(vae_dataset_batch(ds, NULL, 1, 0, NULL, out), VAE_ERR_INVALID,
               "vae_dataset_batch", "indices");
    EXPECT_ERR(vae_dataset_batch(ds, bad_idx, 1, 0, NULL, NULL), VAE_ERR_INVALID,
               "vae_dataset_batch", "out");
    EXPECT_ERR(vae_dataset_batch(NULL, bad_idx, 1, 0, NULL, out), VAE_ERR_INVALID,
               "vae_dataset_batch", "dataset");
    vae_dataset_free(ds);

    /* Without labels. */
    OK(vae_dataset_from_floats(&ds, saved, 5, 3, NULL));
    assert_int_equal(vae_dataset_has_labels(ds), 0);
    EXPECT_ERR(vae_dataset_label(ds, 0, &l), VAE_ERR_STATE, "vae_dataset_label", "no labels");
    vae_dataset_free(ds);
}

static void test_from_floats_bad(void **state)
{
    (void)state;
    float data[4 * 3] = {0};
    vae_dataset *ds = (vae_dataset *)data;
    EXPECT_ERR(vae_dataset_from_floats(&ds, data, 0, 3, NULL), VAE_ERR_INVALID,
               "vae_dataset_from_floats", "count (0)");
    assert_null(ds);
    EXPECT_ERR(vae_dataset_from_floats(&ds, data, 4, 0, NULL), VAE_ERR_INVALID,
               "vae_dataset_from_floats", "dim (0)");
    ds = (vae_dataset *)data;
    EXPECT_ERR(vae_dataset_from_floats(&ds, NULL, 4, 3, NULL), VAE_ERR_INVALID,
               "vae_dataset_from_floats", "data");
    assert_null(ds);
    EXPECT_ERR(vae_dataset_from_floats(NULL, data, 4, 3, NULL), VAE_ERR_INVALID,
               "vae_dataset_from_floats", "out");
    /* Non-finite values anywhere, named by sample and position. */
    data[2 * 3 + 1] = NAN;
    ds = (vae_dataset *)data;
    EXPECT_ERR(vae_dataset_from_floats(&ds, data, 4, 3, NULL), VAE_ERR_NUMERIC,
               "vae_dataset_from_floats", "data[2][1]");
    assert_null(ds);
    data[2 * 3 + 1] = 0.0f;
    data[11] = -INFINITY;
    EXPECT_ERR(vae_dataset_from_floats(&ds, data, 4, 3, NULL), VAE_ERR_NUMERIC,
               "vae_dataset_from_floats", "data[3][2]");
    data[11] = 0.0f;
    data[0] = INFINITY;
    EXPECT_ERR(vae_dataset_from_floats(&ds, data, 4, 3, NULL), VAE_ERR_NUMERIC,
               "vae_dataset_from_floats", "data[0][0]");
    /* Only count * dim values are read: a NaN just past them is not seen. */
    data[0] = 0.0f;
    data[9] = NAN;
    OK(vae_dataset_from_floats(&ds, data, 3, 3, NULL));
    vae_dataset_free(ds);
    /* Sizes whose product overflows. */
    ds = (vae_dataset *)data;
    EXPECT_ERR(vae_dataset_from_floats(&ds, data, SIZE_MAX / 2, 4, NULL), VAE_ERR_INVALID,
               "vae_dataset_from_floats", "too large");
    assert_null(ds);
}

static void test_subset(void **state)
{
    (void)state;
    write_std("img.idx", 0, "lab.idx", 0);
    vae_dataset *ds = NULL, *sub = NULL;
    OK(vae_dataset_load_idx(&ds, tpath("img.idx"), tpath("lab.idx")));
    const size_t idx[4] = {4, 1, 4, 6};
    OK(vae_dataset_subset(&sub, ds, idx, 4));
    /* The subset is independent of its parent. */
    float all[N_IMG * IMG_D];
    OK(vae_dataset_range(ds, 0, N_IMG, all));
    vae_dataset_free(ds);
    assert_int_equal(vae_dataset_count(sub), 4);
    assert_int_equal(vae_dataset_dim(sub), IMG_D);
    size_t h = 0, w = 0;
    OK(vae_dataset_image_size(sub, &h, &w));
    assert_int_equal(h, IMG_H);
    assert_int_equal(w, IMG_W);
    float rows[4 * IMG_D];
    OK(vae_dataset_range(sub, 0, 4, rows));
    for (size_t r = 0; r < 4; r++) {
        assert_memory_equal(rows + r * IMG_D, all + idx[r] * IMG_D, IMG_D * sizeof(float));
        int32_t l = -1;
        OK(vae_dataset_label(sub, r, &l));
        assert_int_equal(l, (int32_t)idx[r]);
    }
    /* A subset of a subset, of a float dataset. */
    vae_dataset *fl = NULL, *fsub = NULL;
    OK(vae_dataset_from_floats(&fl, rows, 4, IMG_D, NULL));
    const size_t j[2] = {3, 3};
    OK(vae_dataset_subset(&fsub, fl, j, 2));
    float two[2 * IMG_D];
    OK(vae_dataset_range(fsub, 0, 2, two));
    assert_memory_equal(two, rows + 3 * IMG_D, IMG_D * sizeof(float));
    assert_memory_equal(two + IMG_D, rows + 3 * IMG_D, IMG_D * sizeof(float));
    assert_int_equal(vae_dataset_has_labels(fsub), 0);
    vae_dataset_free(fsub);

    vae_dataset *bad = (vae_dataset *)state;
    const size_t out_of_range[3] = {0, 4, 1};
    EXPECT_ERR(vae_dataset_subset(&bad, fl, out_of_range, 3), VAE_ERR_INVALID,
               "vae_dataset_subset", "indices[1] = 4");
    assert_null(bad);
    EXPECT_ERR(vae_dataset_subset(&bad, fl, j, 0), VAE_ERR_INVALID, "vae_dataset_subset",
               "n is 0");
    bad = (vae_dataset *)state;
    EXPECT_ERR(vae_dataset_subset(&bad, fl, NULL, 1), VAE_ERR_INVALID, "vae_dataset_subset",
               "indices");
    assert_null(bad);
    bad = (vae_dataset *)state;
    EXPECT_ERR(vae_dataset_subset(&bad, NULL, j, 1), VAE_ERR_INVALID, "vae_dataset_subset",
               "dataset");
    assert_null(bad);
    EXPECT_ERR(vae_dataset_subset(NULL, fl, j, 1), VAE_ERR_INVALID, "vae_dataset_subset", "out");
    vae_dataset_free(fl);
    vae_dataset_free(sub);
}

static void test_filter_label(void **state)
{
    (void)state;
    write_std("img.idx", 0, "lab.idx", 0);
    vae_dataset *ds = NULL, *f = NULL;
    OK(vae_dataset_load_idx(&ds, tpath("img.idx"), tpath("lab.idx")));
    float all[N_IMG * IMG_D];
    OK(vae_dataset_range(ds, 0, N_IMG, all));

    OK(vae_dataset_filter_label(&f, ds, 3, 1));
    assert_int_equal(vae_dataset_count(f), 1);
    float row[N_IMG * IMG_D];
    OK(vae_dataset_range(f, 0, 1, row));
    assert_memory_equal(row, all + 3 * IMG_D, IMG_D * sizeof(float));
    int32_t l = -1;
    OK(vae_dataset_label(f, 0, &l));
    assert_int_equal(l, 3);
    size_t h = 0, w = 0;
    OK(vae_dataset_image_size(f, &h, &w));
    assert_int_equal(h, IMG_H);
    assert_int_equal(w, IMG_W);
    vae_dataset_free(f);

    /* Exclusion keeps the others in their order. */
    OK(vae_dataset_filter_label(&f, ds, 3, 0));
    assert_int_equal(vae_dataset_count(f), N_IMG - 1);
    OK(vae_dataset_range(f, 0, N_IMG - 1, row));
    for (size_t i = 0, k = 0; i < N_IMG; i++) {
        if (i == 3)
            continue;
        assert_memory_equal(row + k * IMG_D, all + i * IMG_D, IMG_D * sizeof(float));
        OK(vae_dataset_label(f, k, &l));
        assert_int_equal(l, (int32_t)i);
        k++;
    }
    vae_dataset_free(f);

    /* Nothing left: no sample has label 9; excluding the only label of a
     * one-label set leaves nothing either. */
    f = (vae_dataset *)state;
    EXPECT_ERR(vae_dataset_filter_label(&f, ds, 9, 1), VAE_ERR_INVALID,
               "vae_dataset_filter_label", "label 9");
    assert_null(f);
    OK(vae_dataset_filter_label(&f, ds, 5, 1));
    vae_dataset *g = NULL;
    EXPECT_ERR(vae_dataset_filter_label(&g, f, 5, 0), VAE_ERR_INVALID,
               "vae_dataset_filter_label", "label 5");
    assert_null(g);
    vae_dataset_free(f);

    EXPECT_ERR(vae_dataset_filter_label(NULL, ds, 1, 1), VAE_ERR_INVALID,
               "vae_dataset_filter_label", "out");
    g = (vae_dataset *)state;
    EXPECT_ERR(vae_dataset_filter_label(&g, NULL, 1, 1), VAE_ERR_INVALID,
               "vae_dataset_filter_label", "dataset");
    assert_null(g);
    vae_dataset_free(ds);

    /* Float datasets with repeated labels; keep is a boolean, any nonzero. */
    const float data[5] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
    const int32_t lab[5] = {1, 2, 1, 1, 2};
    OK(vae_dataset_from_floats(&ds, data, 5, 1, lab));
    OK(vae_dataset_filter_label(&f, ds, 1, 42));
    float v[5];
    assert_int_equal(vae_dataset_count(f), 3);
    OK(vae_dataset_range(f, 0, 3, v));
    assert_true(v[0] == 0.1f && v[1] == 0.3f && v[2] == 0.4f);
    vae_dataset_free(f);
    OK(vae_dataset_filter_label(&f, ds, 1, 0));
    assert_int_equal(vae_dataset_count(f), 2);
    OK(vae_dataset_range(f, 0, 2, v));
    assert_true(v[0] == 0.2f && v[1] == 0.5f);
    vae_dataset_free(f);
    vae_dataset_free(ds);
}

/* Rows are kept in a zero-run code (or as they are when that is not
 * shorter): whatever the pattern, every row reads back as p / 255 exactly,
 * through vae_dataset_range, a subset in another order and a label filter.
 * Patterns: all zero (runs longer than 255), no zero, alternating (the code
 * would be longer: kept raw), 256 zeros then pixels, zeros only at the end,
 * one pixel, pairs of zeros before each pixel (a code exactly as long as
 * the row: kept raw too), and rows of every sparsity in between; widths 1,
 * 2 and 300. */
static void test_row_code_patterns(void **state)
{
    (void)state;
    const uint32_t widths[3] = {300, 1, 2};
    for (size_t wi = 0; wi < 3; wi++) {
        const uint32_t D = widths[wi], N = 48;
        uint8_t *px = tu_alloc((size_t)N * D, 1);
        tu_rng r = {77 + wi};
        for (uint32_t i = 0; i < N; i++) {
            uint8_t *row = px + (size_t)i * D;
            for (uint32_t j = 0; j < D; j++) {
                uint8_t v = (uint8_t)(1 + tu_u64(&r) % 255);
                switch (i) {
                case 0: v = 0; break;
                case 1: break;
                case 2: v = j % 2 ? v : 0; break;
                case 3: v = j < 256 ? 0 : v; break;
                case 4: v = j + 10 >= D ? 0 : v; break;
                case 5: v = j == D / 2 ? 200 : 0; break;
                case 6: v = j % 3 == 2 ? v : 0; break; /* a code of exactly D bytes */
                default: v = tu_unif(&r) * (N - 7) < (double)(i - 7) ? 0 : v;
                }
                row[j] = v;
            }
        }
        unsigned char *file = tu_alloc(16 + (size_t)N * D, 1), lab[64];
        const uint32_t dims[2] = {N, D}, ldims[1] = {N};
        size_t n = idx_bytes(file, 16 + (size_t)N * D, dims, 2, px, (size_t)N * D);
        tu_write_file(tpath("rows.idx"), file, n);
        for (uint32_t i = 0; i < N; i++)
            lab[i] = (uint8_t)(i % 3);
        n = idx_bytes(file, 16 + (size_t)N * D, ldims, 1, lab, N);
        tu_write_file(tpath("rows-labels.idx"), file, n);
        vae_dataset *ds = NULL, *sub = NULL, *odd = NULL;
        TU_OK(vae_dataset_load_idx(&ds, tpath("rows.idx"), tpath("rows-labels.idx")));
        float *out = tu_alloc((size_t)N * D, sizeof *out);
        TU_OK(vae_dataset_range(ds, 0, N, out));
        for (size_t k = 0; k < (size_t)N * D; k++)
            if (out[k] != (float)px[k] / 255.0f)
                fail_msg("width %u: value %zu (row %zu) is %g, expected %u/255", (unsigned)D, k,
                         k / D, (double)out[k], (unsigned)px[k]);
        size_t idx[48];
        for (size_t i = 0; i < N; i++)
            idx[i] = N - 1 - i;
        TU_OK(vae_dataset_subset(&sub, ds, idx, N));
        TU_OK(vae_dataset_range(sub, 0, N, out));
        for (size_t i = 0; i < N; i++)
            for (size_t j = 0; j < D; j++)
                assert_true(out[i * D + j] == (float)px[(N - 1 - i) * D + j] / 255.0f);
        TU_OK(vae_dataset_filter_label(&odd, ds, 1, 1));
        assert_int_equal(vae_dataset_count(odd), N / 3);
        TU_OK(vae_dataset_range(odd, 0, N / 3, out));
        for (size_t i = 0; i < N / 3; i++)
            for (size_t j = 0; j < D; j++)
                assert_true(out[i * D + j] == (float)px[(3 * i + 1) * D + j] / 255.0f);
        vae_dataset_free(odd);
        vae_dataset_free(sub);
        vae_dataset_free(ds);
        free(out);
        free(file);
        free(px);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_plain),
        cmocka_unit_test(test_load_gzip),
        cmocka_unit_test(test_load_misleading_names),
        cmocka_unit_test(test_load_two_dimensional),
        cmocka_unit_test(test_bad_magic),
        cmocka_unit_test(test_truncated_and_long),
        cmocka_unit_test(test_absurd_headers),
        cmocka_unit_test(test_label_count_mismatch),
        cmocka_unit_test(test_corrupt_gzip),
        cmocka_unit_test(test_gzip_truncated_trailer),
        cmocka_unit_test(test_gzip_trailing_bytes),
        cmocka_unit_test_teardown(test_gzip_bomb, restore_defaults),
        cmocka_unit_test_teardown(test_compressed_file_limit, restore_defaults),
        cmocka_unit_test_teardown(test_open_out_of_memory, restore_defaults),
        cmocka_unit_test_teardown(test_allocation_failures, restore_defaults),
        cmocka_unit_test(test_missing_files_and_null),
        cmocka_unit_test(test_binarize_frequencies),
        cmocka_unit_test(test_binarize_float_values),
        cmocka_unit_test(test_from_floats),
        cmocka_unit_test(test_from_floats_bad),
        cmocka_unit_test(test_subset),
        cmocka_unit_test(test_filter_label),
        cmocka_unit_test(test_row_code_patterns),
    };
    return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
