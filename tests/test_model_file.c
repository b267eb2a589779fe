/* Model files: the byte layout (dense and convolution records), bit-exact
 * round trips through a file and through memory, what introspection reports
 * of a loaded model, damaged and crafted files, atomic replacement on save,
 * and bad arguments.
 *
 * Layout (little-endian), as the library writes it:
 *     0  magic 89 'V' 'A' 'E' 0d 0a 1a 0a
 *     8  u32 format version (1)        12  u32 flags (0)
 *    16  u64 payload bytes (everything between offset 24 and the CRC)
 *    24  u32 likelihood  28 u32 reserved  32 f32 sigma  36 u32 reserved
 *    40  u64 input_dim   48 u64 latent_dim
 *    56  u32 n_layers    60 u32 n_enc (encoder layers; the head follows)
 *    64  n_layers records: u32 kind, u32 activation, u32 nfields, u32 reserved,
 *        u64 parameter count, nfields x u64 (dense: in, out) -- 40 bytes
 *        then u64 parameter count, the parameters as f32, and a CRC-32 of
 *        every byte before it. */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "vae/vae.h"

#include "test_util.h"

#if defined(__SANITIZE_ADDRESS__)
/* A loader that allocates whatever a crafted file announces fails here with
 * VAE_ERR_NOMEM ("out of memory") instead of quietly taking gigabytes. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "max_allocation_size_mb=64:allocator_may_return_null=1";
}
#endif

/* Error checks from test_util.h: the exact status, and a fresh message that
 * names fn and mentions needle (either may be NULL). */
#define EXPECT_ERR(call, expected, fn, needle) TU_EXPECT_ERR_MSG(call, expected, fn, needle)
#define OK(call) TU_OK(call)

/* ---- helpers ---------------------------------------------------------------- */

/* CRC-32 (ISO-HDLC, the one zlib and gzip use), written out here so the
 * checksum is checked against an implementation independent of the
 * library's. */
static uint32_t crc32_ref(const unsigned char *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0xedb88320u : c >> 1;
    }
    return c ^ 0xffffffffu;
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void set32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void set64(unsigned char *p, uint64_t v)
{
    set32(p, (uint32_t)v);
    set32(p + 4, (uint32_t)(v >> 32));
}

static void setf32(unsigned char *p, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    set32(p, u);
}

/* Rewrites the trailing CRC so that only the content is inconsistent. */
static void fix_crc(unsigned char *p, size_t n)
{
    set32(p + n - 4, crc32_ref(p, n - 4));
}

/* Rewrites the payload length and the CRC after a change of size. */
static void fix_len_crc(unsigned char *p, size_t n)
{
    set64(p + 16, (uint64_t)(n - 28));
    fix_crc(p, n);
}

enum {
    OFF_VERSION = 8, OFF_FLAGS = 12, OFF_LEN = 16, OFF_LIK = 24, OFF_RES1 = 28,
    OFF_SIGMA = 32, OFF_RES2 = 36, OFF_INPUT = 40, OFF_LATENT = 48, OFF_NLAYERS = 56,
    OFF_NENC = 60, OFF_LAYERS = 64, REC = 40
};

static size_t rec(size_t i)
{
    return OFF_LAYERS + REC * i;
}

/* splitmix64, for parameter values independent of the library's generator. */
static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void randomize_params(vae_model *m, uint64_t seed)
{
    size_t n = 0;
    float *p = vae_model_params(m, &n);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (float)((double)(mix(&seed) >> 11) * 0x1.0p-53 * 1.6 - 0.8);
}

/* Hands a new layer to the model, which takes it (and clears our pointer). */
static void add_layer(vae_model *m, int encoder, vae_layer *l)
{
    assert_non_null(l);
    if (encoder)
        OK(vae_model_add_encoder_layer(m, &l));
    else
        OK(vae_model_add_decoder_layer(m, &l));
    assert_null(l);
}

static void add_dense(vae_model *m, int encoder, size_t in, size_t out, int act)
{
    vae_layer *l = NULL;
    OK(vae_layer_dense_create(&l, in, out, act));
    add_layer(m, encoder, l);
}

/* Gaussian, sigma 0.37: encoder 6 -5 tanh- -4 elu-, head 4 -> 2x3, decoder
 * 3 -4 leaky- -5 softplus- -6 identity-. Layers 0..5 in file order. */
enum { GD = 6, GL = 3, G_LAYERS = 6, G_NENC = 2, G_PARAMS = 35 + 24 + 30 + 16 + 25 + 36 };
static const int g_act[G_LAYERS] = {VAE_ACT_TANH,       VAE_ACT_ELU,      VAE_ACT_IDENTITY,
                                    VAE_ACT_LEAKY_RELU, VAE_ACT_SOFTPLUS, VAE_ACT_IDENTITY};
static const size_t g_in[G_LAYERS] = {6, 5, 4, 3, 4, 5};
static const size_t g_out[G_LAYERS] = {5, 4, 6, 4, 5, 6};

static vae_model *gaussian_model(void)
{
    vae_model *m = NULL;
    OK(vae_model_create(&m, GD, GL, VAE_LIKELIHOOD_GAUSSIAN));
    add_dense(m, 1, 6, 5, VAE_ACT_TANH);
    add_dense(m, 0, 3, 4, VAE_ACT_LEAKY_RELU); /* decoder and encoder interleaved on purpose */
    add_dense(m, 1, 5, 4, VAE_ACT_ELU);
    add_dense(m, 0, 4, 5, VAE_ACT_SOFTPLUS);
    add_dense(m, 0, 5, 6, VAE_ACT_IDENTITY);
    OK(vae_model_build(m, 11));
    /* The file keeps sigma as a float: use a value a float holds exactly. */
    OK(vae_model_set_param(m, VAE_MODEL_GAUSSIAN_SIGMA, (double)0.37f));
    randomize_params(m, 1234);
    return m;
}

/* Bernoulli: the convenience MLP 5 -7- -4- 2 with sigmoid and relu layers. */
enum { BD = 5, BL = 2 };

static vae_model *bernoulli_model(void)
{
    vae_model *m = NULL;
    OK(vae_model_create(&m, BD, BL, VAE_LIKELIHOOD_BERNOULLI));
    add_dense(m, 1, 5, 7, VAE_ACT_SIGMOID);
    add_dense(m, 1, 7, 4, VAE_ACT_RELU);
    add_dense(m, 0, 2, 4, VAE_ACT_RELU);
    add_dense(m, 0, 4, 7, VAE_ACT_SIGMOID);
    add_dense(m, 0, 7, 5, VAE_ACT_IDENTITY);
    OK(vae_model_build(m, 12));
    randomize_params(m, 99);
    return m;
}

/* Convolutions, non-square everywhere: Gaussian, sigma 1.5, 1 x 5 x 6 images.
 * Encoder: Conv2D 1x5x6 -> 2x3x4 (kernel 3x2, stride 2, padding 1, elu),
 * dense 24 -5 tanh-, head 5 -> 2x3. Decoder: dense 3 -12 relu- (2x2x3),
 * ConvTranspose2D 2x2x3 -> 1x5x6 (kernel 4x3, stride 2, padding 1, output
 * padding 1, identity). */
enum { CD = 30, CL = 3, C_LAYERS = 5, C_NENC = 2, C_PARAMS = 14 + 125 + 36 + 48 + 25 };

static vae_model *conv_model(void)
{
    vae_model *m = NULL;
    vae_layer *l = NULL;
    OK(vae_model_create(&m, CD, CL, VAE_LIKELIHOOD_GAUSSIAN));
    OK(vae_layer_conv2d_create(&l, 1, 5, 6, 2, 3, 2, 2, 1, VAE_ACT_ELU));
    add_layer(m, 1, l);
    add_dense(m, 1, 24, 5, VAE_ACT_TANH);
    add_dense(m, 0, 3, 12, VAE_ACT_RELU);
    OK(vae_layer_conv2d_transpose_create(&l, 2, 2, 3, 1, 4, 3, 2, 1, 1, VAE_ACT_IDENTITY));
    add_layer(m, 0, l);
    OK(vae_model_build(m, 13));
    OK(vae_model_set_param(m, VAE_MODEL_GAUSSIAN_SIGMA, 1.5));
    randomize_params(m, 31);
    return m;
}

static unsigned char *save_to_mem(vae_model *m, size_t *size)
{
    OK(vae_model_save_mem(m, NULL, 0, size));
    unsigned char *buf = malloc(*size);
    assert_non_null(buf);
    size_t again = 0;
    OK(vae_model_save_mem(m, buf, *size, &again));
    assert_int_equal(again, *size);
    return buf;
}

static char tmpdir[64];

static int make_tmpdir(void **state)
{
    (void)state;
    strcpy(tmpdir, "/tmp/vae_test_model_file_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

/* Removes a directory and everything below it, even after a test failed
 * half-way and left files or subdirectories behind. */
static int remove_tree(const char *dir)
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
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            struct stat st;
            if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode) ? remove_tree(path) == 0
                                                              : unlink(path) == 0)
                found = 1;
        }
    }
    closedir(d);
    return rmdir(dir);
}

static int remove_tmpdir(void **state)
{
    (void)state;
    return remove_tree(tmpdir);
}

static const char *tpath(const char *name)
{
    static char buf[4][512];
    static int next;
    char *p = buf[next++ & 3];
    snprintf(p, sizeof buf[0], "%s/%s", tmpdir, name);
    return p;
}

static unsigned char *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long len = ftell(f);
    assert_true(len >= 0);
    rewind(f);
    unsigned char *p = malloc((size_t)len + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return p;
}

static void write_all(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* Names in directory `dir`, sorted, joined by spaces. */
static void list_dir(const char *dir, char *out, size_t cap)
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

/* What introspection reports of two models must agree: settings, every
 * layer's kind, activation and geometry, and every named tensor's name,
 * shape, place and values. Also checks that the reports are consistent with
 * each other (layer sizes sum to the slab, tensors tile it in order). */
static void assert_same_architecture(vae_model *a, vae_model *b)
{
    assert_int_equal(vae_model_is_built(a), 1);
    assert_int_equal(vae_model_is_built(b), 1);
    assert_int_equal(vae_model_input_dim(a), vae_model_input_dim(b));
    assert_int_equal(vae_model_latent_dim(a), vae_model_latent_dim(b));
    assert_int_equal(vae_model_likelihood(a), vae_model_likelihood(b));
    double sa = -1.0, sb = -2.0;
    OK(vae_model_get_param(a, VAE_MODEL_GAUSSIAN_SIGMA, &sa));
    OK(vae_model_get_param(b, VAE_MODEL_GAUSSIAN_SIGMA, &sb));
    if (memcmp(&sa, &sb, sizeof sa) != 0)
        fail_msg("sigma %.17g before saving, %.17g after loading", sa, sb);

    const size_t nl = vae_model_layer_count(a), ne = vae_model_encoder_layer_count(a);
    assert_int_equal(vae_model_layer_count(b), nl);
    assert_int_equal(vae_model_encoder_layer_count(b), ne);
    assert_true(ne + 2 <= nl); /* the head and at least one decoder layer */
    assert_int_equal(vae_model_param_count(b), vae_model_param_count(a));
    size_t np = 0;
    assert_non_null(vae_model_params(b, &np));
    assert_int_equal(np, vae_model_param_count(b));
    assert_null(vae_model_layer(a, nl));
    assert_null(vae_model_layer(b, nl));

    size_t total = 0;
    for (size_t i = 0; i < nl; i++) {
        const vae_layer *la = vae_model_layer(a, i), *lb = vae_model_layer(b, i);
        assert_non_null(la);
        assert_non_null(lb);
        if (vae_layer_kind(la) != vae_layer_kind(lb) ||
            vae_layer_activation(la) != vae_layer_activation(lb))
            fail_msg("layer %zu: kind %d activation %d saved, kind %d activation %d loaded", i,
                     vae_layer_kind(la), vae_layer_activation(la), vae_layer_kind(lb),
                     vae_layer_activation(lb));
        assert_int_equal(vae_layer_input_size(la), vae_layer_input_size(lb));
        assert_int_equal(vae_layer_output_size(la), vae_layer_output_size(lb));
        for (int p = VAE_LAYER_INPUTS; p <= VAE_LAYER_OUTPUT_PADDING; p++) {
            size_t va = (size_t)-1, vb = (size_t)-2;
            OK(vae_layer_get_param(la, p, &va));
            OK(vae_layer_get_param(lb, p, &vb));
            if (va != vb)
                fail_msg("layer %zu, vae_layer_get_param %d: %zu saved, %zu loaded", i, p, va,
                         vb);
        }
        size_t in = 0, out = 0, params = 0;
        OK(vae_layer_get_param(lb, VAE_LAYER_INPUTS, &in));
        OK(vae_layer_get_param(lb, VAE_LAYER_OUTPUTS, &out));
        OK(vae_layer_get_param(lb, VAE_LAYER_PARAMS, &params));
        assert_int_equal(in, vae_layer_input_size(lb));
        assert_int_equal(out, vae_layer_output_size(lb));
        total += params;
    }
    /* The head is a dense identity layer giving [mu | logvar]. */
    const vae_layer *head = vae_model_layer(b, ne);
    assert_int_equal(vae_layer_kind(head), VAE_LAYER_DENSE);
    assert_int_equal(vae_layer_activation(head), VAE_ACT_IDENTITY);
    assert_int_equal(vae_layer_output_size(head), 2 * vae_model_latent_dim(b));
    assert_int_equal(total, np);

    const size_t nt = vae_model_tensor_count(a);
    assert_int_equal(vae_model_tensor_count(b), nt);
    assert_int_equal(nt, 2 * nl);
    assert_null(vae_model_tensor_name(b, nt));
    const float *pb = vae_model_params(b, NULL);
    size_t next = 0;
    for (size_t t = 0; t < nt; t++) {
        const char *na = vae_model_tensor_name(a, t), *nb = vae_model_tensor_name(b, t);
        assert_non_null(na);
        assert_non_null(nb);
        assert_string_equal(na, nb);
        size_t idx = (size_t)-1;
        OK(vae_model_tensor_find(b, na, &idx));
        assert_int_equal(idx, t);
        size_t sha[4] = {0}, shb[4] = {0}, nda = 0, ndb = 0, oa = 0, ob = 0, ca = 0, cb = 0;
        OK(vae_model_tensor_info(a, t, sha, &nda, &oa, &ca));
        OK(vae_model_tensor_info(b, t, shb, &ndb, &ob, &cb));
        assert_int_equal(nda, ndb);
        assert_true(ndb == 1 || ndb == 2 || ndb == 4);
        assert_memory_equal(sha, shb, ndb * sizeof sha[0]);
        assert_int_equal(oa, ob);
        assert_int_equal(ca, cb);
        size_t prod = 1;
        for (size_t k = 0; k < ndb; k++)
            prod *= shb[k];
        assert_int_equal(prod, cb);
        assert_int_equal(ob, next); /* tensors tile the slab in order */
        next += cb;
        float *va = tu_alloc(ca, sizeof *va), *vb = tu_alloc(cb, sizeof *vb);
        OK(vae_model_tensor_get(a, t, va, ca));
        OK(vae_model_tensor_get(b, t, vb, cb));
        assert_memory_equal(va, vb, cb * sizeof *vb);
        assert_memory_equal(vb, pb + ob, cb * sizeof *vb);
        free(va);
        free(vb);
    }
    assert_int_equal(next, np);
}

/* Everything observable of two models must agree bit for bit: the slab,
 * the architecture as introspection reports it, and what encode, decode,
 * reconstruct, sample, the log-likelihood estimate and the objective (fixed
 * noise) compute. */
static void assert_same_model(vae_model *a, vae_model *b)
{
    size_t na = 0, nb = 0;
    const float *pa = vae_model_params(a, &na), *pb = vae_model_params(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(pa, pb, na * sizeof(float));
    assert_same_architecture(a, b);

    enum { N = 5, MAXD = 32 };
    const size_t D = vae_model_input_dim(a), L = vae_model_latent_dim(a);
    assert_true(D <= MAXD && L <= MAXD);
    float x[N * MAXD], z[N * MAXD], eps[N * MAXD], oa[N * MAXD], ob[N * MAXD], la[N * MAXD],
        lb[N * MAXD];
    uint64_t s = 42;
    for (size_t i = 0; i < N * D; i++)
        x[i] = (float)((double)(mix(&s) >> 11) * 0x1.0p-53); /* in [0, 1): fits both */
    for (size_t i = 0; i < N * L; i++) {
        z[i] = (float)((double)(mix(&s) >> 11) * 0x1.0p-53 * 4.0 - 2.0);
        eps[i] = (float)((double)(mix(&s) >> 11) * 0x1.0p-53 * 3.0 - 1.5);
    }
    vae_context *ctx = NULL;
    OK(vae_context_create(&ctx));
    OK(vae_decode(ctx, a, z, N, oa));
    OK(vae_decode(ctx, b, z, N, ob));
    assert_memory_equal(oa, ob, N * D * sizeof(float));
    OK(vae_encode(ctx, a, x, N, oa, la));
    OK(vae_encode(ctx, b, x, N, ob, lb));
    assert_memory_equal(oa, ob, N * L * sizeof(float));
    assert_memory_equal(la, lb, N * L * sizeof(float));
    OK(vae_reconstruct(ctx, a, x, N, oa));
    OK(vae_reconstruct(ctx, b, x, N, ob));
    assert_memory_equal(oa, ob, N * D * sizeof(float));

    vae_rng *ra = NULL, *rb = NULL;
    OK(vae_rng_create(&ra, 9));
    OK(vae_rng_create(&rb, 9));
    OK(vae_sample(ctx, a, ra, N, oa));
    OK(vae_sample(ctx, b, rb, N, ob));
    assert_memory_equal(oa, ob, N * D * sizeof(float));
    double lla[N], llb[N];
    OK(vae_log_likelihood(ctx, a, x, N, 3, ra, lla));
    OK(vae_log_likelihood(ctx, b, x, N, 3, rb, llb));
    assert_memory_equal(lla, llb, sizeof lla);
    vae_rng_free(ra);
    vae_rng_free(rb);

    vae_elbo *e = NULL;
    OK(vae_elbo_create(&e));
    vae_epoch_stats st[2];
    double ps[2][N];
    for (int k = 0; k < 2; k++) {
        memset(&st[k], 0, sizeof st[k]);
        st[k].size = sizeof st[k];
        OK(vae_elbo_evaluate(ctx, k ? b : a, e, x, N, eps, NULL, ps[k], &st[k]));
        assert_int_equal(st[k].samples, N);
    }
    assert_memory_equal(&st[0].loss, &st[1].loss, sizeof st[0].loss);
    assert_memory_equal(&st[0].recon, &st[1].recon, sizeof st[0].recon);
    assert_memory_equal(&st[0].kl, &st[1].kl, sizeof st[0].kl);
    assert_memory_equal(ps[0], ps[1], sizeof ps[0]);
    vae_elbo_free(e);
    vae_context_free(ctx);
}

/* ---- layout and round trips ------------------------------------------------- */

static void test_layout(void **state)
{
    (void)state;
    vae_model *m = gaussian_model();
    size_t size = 0;
    unsigned char *b = save_to_mem(m, &size);
    assert_int_equal(size, rec(G_LAYERS) + 8 + 4 * G_PARAMS + 4);
    static const unsigned char magic[8] = {0x89, 'V', 'A', 'E', '\r', '\n', 0x1a, '\n'};
    assert_memory_equal(b, magic, 8);
    assert_int_equal(get32(b + OFF_VERSION), 1);
    assert_int_equal(get32(b + OFF_FLAGS), 0);
    assert_int_equal(get64(b + OFF_LEN), size - 28);
    assert_int_equal(get32(b + OFF_LIK), VAE_LIKELIHOOD_GAUSSIAN);
    float sigma;
    uint32_t u = get32(b + OFF_SIGMA);
    memcpy(&sigma, &u, 4);
    assert_true(sigma == 0.37f);
    assert_int_equal(get64(b + OFF_INPUT), GD);
    assert_int_equal(get64(b + OFF_LATENT), GL);
    assert_int_equal(get32(b + OFF_NLAYERS), G_LAYERS);
    assert_int_equal(get32(b + OFF_NENC), G_NENC);
    for (size_t i = 0; i < G_LAYERS; i++) {
        const unsigned char *r = b + rec(i);
        assert_int_equal(get32(r), 1); /* dense */
        assert_int_equal(get32(r + 4), g_act[i]);
        assert_int_equal(get32(r + 8), 2);
        assert_int_equal(get64(r + 16), g_in[i] * g_out[i] + g_out[i]);
        assert_int_equal(get64(r + 24), g_in[i]);
        assert_int_equal(get64(r + 32), g_out[i]);
    }
    assert_int_equal(get64(b + rec(G_LAYERS)), G_PARAMS);
    size_t n = 0;
    const float *p = vae_model_params(m, &n);
    assert_int_equal(n, G_PARAMS);
    assert_memory_equal(b + rec(G_LAYERS) + 8, p, 4 * n); /* little-endian host */
    assert_int_equal(get32(b + size - 4), crc32_ref(b, size - 4));
    free(b);
    vae_model_free(m);
}

static void round_trip(vae_model *m, const char *name)
{
    const char *path = tpath(name);
    /* The encoding before saving, to compare with the loaded model's. */
    enum { NE = 3, MAXE = 32 };
    const size_t D = vae_model_input_dim(m), L = vae_model_latent_dim(m);
    assert_true(D <= MAXE && L <= MAXE);
    float xe[NE * MAXE], mu0[NE * MAXE], lv0[NE * MAXE], mu1[NE * MAXE], lv1[NE * MAXE];
    for (size_t i = 0; i < NE * D; i++)
        xe[i] = (float)((i * 7) % 11) / 10.0f;
    vae_context *ctx = NULL;
    OK(vae_context_create(&ctx));
    OK(vae_encode(ctx, m, xe, NE, mu0, lv0));

    OK(vae_model_save(m, path));
    vae_model *f = NULL, *mm = NULL;
    OK(vae_model_load(&f, path));
    OK(vae_encode(ctx, f, xe, NE, mu1, lv1));
    assert_memory_equal(mu0, mu1, NE * L * sizeof(float));
    assert_memory_equal(lv0, lv1, NE * L * sizeof(float));
    vae_context_free(ctx);
    assert_same_model(m, f);

    /* The memory path writes the same bytes as the file. */
    size_t size = 0, fsize = 0;
    unsigned char *mem = save_to_mem(m, &size);
    unsigned char *file = read_all(path, &fsize);
    assert_int_equal(fsize, size);
    assert_memory_equal(file, mem, size);
    OK(vae_model_load_mem(&mm, mem, size));
    assert_same_model(m, mm);

    /* A loaded model saves to the same bytes again, and a larger buffer
     * than needed is fine and only the needed bytes are written. */
    unsigned char *big = malloc(size + 16);
    assert_non_null(big);
    memset(big, 0xa5, size + 16);
    size_t again = 0;
    OK(vae_model_save_mem(f, big, size + 16, &again));
    assert_int_equal(again, size);
    assert_memory_equal(big, mem, size);
    for (size_t i = size; i < size + 16; i++)
        assert_int_equal(big[i], 0xa5);

    /* Too small a buffer: refused, and *size still says what is needed. */
    again = 0;
    EXPECT_ERR(vae_model_save_mem(m, big, size - 1, &again), VAE_ERR_INVALID,
               "vae_model_save_mem", "needs");
    assert_int_equal(again, size);
    EXPECT_ERR(vae_model_save_mem(m, big, 0, &again), VAE_ERR_INVALID, "vae_model_save_mem",
               NULL);
    free(big);
    free(file);
    free(mem);
    vae_model_free(f);
    vae_model_free(mm);
}

static void test_round_trip_gaussian(void **state)
{
    (void)state;
    vae_model *m = gaussian_model();
    round_trip(m, "gauss.vae");
    /* Sigma is part of what was checked: at sigma 1 the reconstruction
     * term differs. */
    vae_model *other = NULL;
    OK(vae_model_load(&other, tpath("gauss.vae")));
    double sigma = 0.0;
    OK(vae_model_get_param(other, VAE_MODEL_GAUSSIAN_SIGMA, &sigma));
    assert_true(sigma == (double)0.37f);
    OK(vae_model_set_param(other, VAE_MODEL_GAUSSIAN_SIGMA, 1.0));
    float x[GD] = {0.1f, 0.9f, 0.3f, 0.5f, 0.7f, 0.2f}, eps[GL] = {0.3f, -0.2f, 1.0f};
    vae_elbo *e = NULL;
    vae_context *ctx = NULL;
    OK(vae_elbo_create(&e));
    OK(vae_context_create(&ctx));
    vae_epoch_stats s1, s2;
    memset(&s1, 0, sizeof s1);
    memset(&s2, 0, sizeof s2);
    s1.size = s2.size = sizeof s1;
    OK(vae_elbo_evaluate(ctx, m, e, x, 1, eps, NULL, NULL, &s1));
    OK(vae_elbo_evaluate(ctx, other, e, x, 1, eps, NULL, NULL, &s2));
    assert_true(fabs(s1.recon - s2.recon) > 1e-3);
    vae_context_free(ctx);
    vae_elbo_free(e);
    vae_model_free(other);
    vae_model_free(m);
}

static void test_round_trip_bernoulli(void **state)
{
    (void)state;
    vae_model *m = bernoulli_model();
    round_trip(m, "bern.vae");
    vae_model_free(m);
    /* The convenience constructor, a single hidden layer, and a batch
     * larger than any before. */
    const size_t hidden[1] = {9};
    OK(vae_model_create_mlp(&m, 7, hidden, 1, 4, VAE_ACT_SOFTPLUS, VAE_LIKELIHOOD_GAUSSIAN, 5));
    OK(vae_model_set_param(m, VAE_MODEL_GAUSSIAN_SIGMA, 2.5));
    randomize_params(m, 7);
    round_trip(m, "mlp.vae");
    vae_model *f = NULL;
    OK(vae_model_load(&f, tpath("mlp.vae")));
    enum { N = 300 };
    float *z = malloc(N * 7 * sizeof *z), *o1 = malloc(N * 7 * sizeof *o1),
          *o2 = malloc(N * 7 * sizeof *o2), *v1 = malloc(N * 4 * sizeof *v1),
          *v2 = malloc(N * 4 * sizeof *v2);
    assert_true(z && o1 && o2 && v1 && v2);
    for (size_t i = 0; i < N * 4; i++)
        z[i] = (float)i / (float)(N * 4) - 0.5f;
    /* Batches run in blocks of 64 samples whatever the workspace: a
     * reserved context and a fresh one must give the same bits. */
    vae_context *c1 = NULL, *c2 = NULL;
    OK(vae_context_create(&c1));
    OK(vae_context_create(&c2));
    OK(vae_context_reserve(c1, m, N));
    OK(vae_decode(c1, m, z, N, o1));
    OK(vae_decode(c2, f, z, N, o2));
    assert_memory_equal(o1, o2, N * 7 * sizeof(float));
    /* And the loaded model encodes a large batch to the same bits. */
    for (size_t i = 0; i < N * 7; i++)
        z[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    OK(vae_encode(c1, m, z, N, o1, v1));
    OK(vae_encode(c2, f, z, N, o2, v2));
    assert_memory_equal(o1, o2, N * 4 * sizeof(float));
    assert_memory_equal(v1, v2, N * 4 * sizeof(float));
    vae_context_free(c1);
    vae_context_free(c2);
    free(z);
    free(o1);
    free(o2);
    free(v1);
    free(v2);
    vae_model_free(f);
    vae_model_free(m);
}

/* Convolution layers: their records as docs/format.md gives them (kind,
 * 8 or 9 geometry fields), a bit-exact round trip, and the geometry that
 * introspection reports after loading. */
static void test_round_trip_conv(void **state)
{
    (void)state;
    vae_model *m = conv_model();
    size_t size = 0;
    unsigned char *b = save_to_mem(m, &size);
    assert_int_equal(get32(b + OFF_NLAYERS), C_LAYERS);
    assert_int_equal(get32(b + OFF_NENC), C_NENC);
    assert_int_equal(get64(b + OFF_INPUT), CD);
    assert_int_equal(get64(b + OFF_LATENT), CL);
    static const uint32_t kind[C_LAYERS] = {VAE_LAYER_CONV2D, VAE_LAYER_DENSE, VAE_LAYER_DENSE,
                                            VAE_LAYER_DENSE, VAE_LAYER_CONV2D_TRANSPOSE};
    static const uint32_t act[C_LAYERS] = {VAE_ACT_ELU, VAE_ACT_TANH, VAE_ACT_IDENTITY,
                                           VAE_ACT_RELU, VAE_ACT_IDENTITY};
    static const uint64_t params[C_LAYERS] = {14, 125, 36, 48, 25};
    static const uint64_t fields[C_LAYERS][9] = {
        {1, 5, 6, 2, 3, 2, 2, 1}, {24, 5}, {5, 6}, {3, 12}, {2, 2, 3, 1, 4, 3, 2, 1, 1}};
    static const uint32_t nfields[C_LAYERS] = {8, 2, 2, 2, 9};
    size_t off = OFF_LAYERS;
    for (size_t i = 0; i < C_LAYERS; i++) {
        assert_int_equal(get32(b + off), kind[i]);
        assert_int_equal(get32(b + off + 4), act[i]);
        assert_int_equal(get32(b + off + 8), nfields[i]);
        assert_int_equal(get32(b + off + 12), 0);
        assert_int_equal(get64(b + off + 16), params[i]);
        for (size_t k = 0; k < nfields[i]; k++)
            assert_int_equal(get64(b + off + 24 + 8 * k), fields[i][k]);
        off += 24 + 8 * (size_t)nfields[i];
    }
    assert_int_equal(get64(b + off), C_PARAMS);
    assert_int_equal(size, off + 8 + 4 * C_PARAMS + 4);
    assert_int_equal(get32(b + size - 4), crc32_ref(b, size - 4));
    free(b);

    round_trip(m, "conv.vae");

    /* The geometry of the loaded layers, number by number. */
    vae_model *f = NULL;
    OK(vae_model_load(&f, tpath("conv.vae")));
    static const size_t want[C_LAYERS][14] = {
        /* in, out, params, in_c, in_h, in_w, out_c, out_h, out_w, kh, kw, stride, pad, opad */
        {30, 24, 14, 1, 5, 6, 2, 3, 4, 3, 2, 2, 1, 0},
        {24, 5, 125, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
        {5, 6, 36, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
        {3, 12, 48, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
        {12, 30, 25, 2, 2, 3, 1, 5, 6, 4, 3, 2, 1, 1},
    };
    assert_int_equal(vae_model_layer_count(f), C_LAYERS);
    assert_int_equal(vae_model_encoder_layer_count(f), C_NENC);
    for (size_t i = 0; i < C_LAYERS; i++) {
        const vae_layer *l = vae_model_layer(f, i);
        assert_int_equal(vae_layer_kind(l), (int)kind[i]);
        assert_int_equal(vae_layer_activation(l), (int)act[i]);
        for (int p = VAE_LAYER_INPUTS; p <= VAE_LAYER_OUTPUT_PADDING; p++) {
            size_t v = (size_t)-1;
            OK(vae_layer_get_param(l, p, &v));
            if (v != want[i][p - 1])
                fail_msg("loaded layer %zu, vae_layer_get_param %d: %zu, expected %zu", i, p, v,
                         want[i][p - 1]);
        }
    }
    double sigma = 0.0;
    OK(vae_model_get_param(f, VAE_MODEL_GAUSSIAN_SIGMA, &sigma));
    assert_true(sigma == 1.5);
    /* PyTorch's names and shapes. */
    static const char *const names[2 * C_LAYERS] = {
        "encoder.0.weight", "encoder.0.bias", "encoder.1.weight", "encoder.1.bias",
        "head.weight",      "head.bias",      "decoder.0.weight", "decoder.0.bias",
        "decoder.1.weight", "decoder.1.bias"};
    static const size_t shapes[2 * C_LAYERS][5] = {
        /* ndim, shape */
        {4, 2, 1, 3, 2}, {1, 2}, {2, 5, 24}, {1, 5}, {2, 6, 5},
        {1, 6},          {2, 12, 3}, {1, 12}, {4, 2, 1, 4, 3}, {1, 1}};
    assert_int_equal(vae_model_tensor_count(f), 2 * C_LAYERS);
    for (size_t t = 0; t < 2 * C_LAYERS; t++) {
        assert_string_equal(vae_model_tensor_name(f, t), names[t]);
        size_t shape[4] = {0}, ndim = 0;
        OK(vae_model_tensor_info(f, t, shape, &ndim, NULL, NULL));
        assert_int_equal(ndim, shapes[t][0]);
        assert_memory_equal(shape, &shapes[t][1], ndim * sizeof(size_t));
    }
    vae_model_free(f);
    vae_model_free(m);
}

/* The Gaussian model after loading: the architecture that was built, as
 * introspection reports it, against the values it was built from. */
static void test_introspection_after_load(void **state)
{
    (void)state;
    vae_model *m = gaussian_model();
    OK(vae_model_save(m, tpath("intro.vae")));
    vae_model *f = NULL;
    OK(vae_model_load(&f, tpath("intro.vae")));
    assert_same_architecture(m, f);
    assert_int_equal(vae_model_is_built(f), 1);
    assert_int_equal(vae_model_input_dim(f), GD);
    assert_int_equal(vae_model_latent_dim(f), GL);
    assert_int_equal(vae_model_likelihood(f), VAE_LIKELIHOOD_GAUSSIAN);
    assert_int_equal(vae_model_layer_count(f), G_LAYERS);
    assert_int_equal(vae_model_encoder_layer_count(f), G_NENC);
    assert_int_equal(vae_model_param_count(f), G_PARAMS);
    double sigma = 0.0;
    OK(vae_model_get_param(f, VAE_MODEL_GAUSSIAN_SIGMA, &sigma));
    assert_true(sigma == (double)0.37f);
    for (size_t i = 0; i < G_LAYERS; i++) {
        const vae_layer *l = vae_model_layer(f, i);
        assert_non_null(l);
        assert_int_equal(vae_layer_kind(l), VAE_LAYER_DENSE);
        assert_int_equal(vae_layer_activation(l), g_act[i]);
        assert_int_equal(vae_layer_input_size(l), g_in[i]);
        assert_int_equal(vae_layer_output_size(l), g_out[i]);
        for (int p = VAE_LAYER_INPUTS; p <= VAE_LAYER_OUTPUT_PADDING; p++) {
            size_t v = (size_t)-1,
                   want = p == VAE_LAYER_INPUTS    ? g_in[i]
                          : p == VAE_LAYER_OUTPUTS ? g_out[i]
                          : p == VAE_LAYER_PARAMS  ? g_in[i] * g_out[i] + g_out[i]
                                                   : 0;
            OK(vae_layer_get_param(l, p, &v));
            if (v != want)
                fail_msg("loaded layer %zu, vae_layer_get_param %d: %zu, expected %zu", i, p, v,
                         want);
        }
    }
    static const char *const names[2 * G_LAYERS] = {
        "encoder.0.weight", "encoder.0.bias", "encoder.1.weight", "encoder.1.bias",
        "head.weight",      "head.bias",      "decoder.0.weight", "decoder.0.bias",
        "decoder.1.weight", "decoder.1.bias", "decoder.2.weight", "decoder.2.bias"};
    assert_int_equal(vae_model_tensor_count(f), 2 * G_LAYERS);
    size_t off = 0;
    for (size_t t = 0; t < 2 * G_LAYERS; t++) {
        const size_t l = t / 2;
        assert_string_equal(vae_model_tensor_name(f, t), names[t]);
        size_t shape[4] = {0}, ndim = 0, offset = 0, count = 0;
        OK(vae_model_tensor_info(f, t, shape, &ndim, &offset, &count));
        if (t % 2 == 0) {
            assert_int_equal(ndim, 2);
            assert_int_equal(shape[0], g_out[l]);
            assert_int_equal(shape[1], g_in[l]);
        } else {
            assert_int_equal(ndim, 1);
            assert_int_equal(shape[0], g_out[l]);
        }
        assert_int_equal(offset, off);
        off += count;
    }
    assert_int_equal(off, G_PARAMS);
    vae_model_free(f);
    vae_model_free(m);
}

/* ---- damaged files ------------------------------------------------------------ */

static void expect_format(const unsigned char *buf, size_t size, const char *needle,
                          const char *what, size_t at)
{
    vae_model *m = (vae_model *)&m;
    (void)vae_rng_uniform(NULL, NULL, 0);
    int rc = vae_model_load_mem(&m, buf, size);
    const char *msg = vae_last_error();
    if (rc != VAE_ERR_FORMAT)
        fail_msg("%s at %zu: vae_model_load_mem returned %d (%s), expected VAE_ERR_FORMAT; "
                 "last error \"%s\"",
                 what, at, rc, vae_strerror(rc), msg);
    if (m != NULL)
        fail_msg("%s at %zu: *out is not NULL after a failure", what, at);
    if (!msg[0] || strstr(msg, "vae_rng_uniform") || !strstr(msg, "vae_model_load_mem"))
        fail_msg("%s at %zu: message \"%s\" is not the loader's", what, at, msg);
    if (needle && !strstr(msg, needle))
        fail_msg("%s at %zu: message \"%s\" does not mention \"%s\"", what, at, msg, needle);
}

static void test_every_byte_flipped(void **state)
{
    (void)state;
    vae_model *models[2] = {gaussian_model(), bernoulli_model()};
    for (int k = 0; k < 2; k++) {
        size_t size = 0;
        unsigned char *b = save_to_mem(models[k], &size);
        unsigned char *c = malloc(size);
        assert_non_null(c);
        static const unsigned char masks[3] = {0x01, 0x80, 0xff};
        /* Magic, version, flags, length, model fields, layer records,
         * parameters and CRC: any change of any byte is detected. */
        for (size_t i = 0; i < size; i++)
            for (int j = 0; j < 3; j++) {
                memcpy(c, b, size);
                c[i] ^= masks[j];
                expect_format(c, size, NULL, "flipped byte", i);
            }
        /* Two bytes far apart at once. */
        for (size_t i = 0; i + 200 < size; i += 7) {
            memcpy(c, b, size);
            c[i] ^= 0x10;
            c[i + 200] ^= 0x04;
            expect_format(c, size, NULL, "two flipped bytes", i);
        }
        free(c);
        free(b);
    }
    vae_model_free(models[0]);
    vae_model_free(models[1]);
}

static void test_truncated_and_extended(void **state)
{
    (void)state;
    vae_model *m = gaussian_model();
    size_t size = 0;
    unsigned char *b = save_to_mem(m, &size);
    for (size_t n = 0; n < size; n++) {
        /* A fresh allocation of exactly n bytes, so ASan sees any read past
         * the end. */
        unsigned char *c = malloc(n ? n : 1);
        assert_non_null(c);
        memcpy(c, b, n);
        expect_format(c, n, NULL, "truncated to", n);
        free(c);
    }
    /* Trailing garbage, short and long. */
    const size_t extra[4] = {1, 3, 4, 1000};
    for (int k = 0; k < 4; k++) {
        unsigned char *c = malloc(size + extra[k]);
        assert_non_null(c);
        memcpy(c, b, size);
        for (size_t i = 0; i < extra[k]; i++)
            c[size + i] = (unsigned char)(i * 13);
        expect_format(c, size + extra[k], "payload bytes", "extended by", extra[k]);
        free(c);
    }
    /* The same through files. */
    const size_t cut[6] = {0, 7, 24, 64, size / 2, size - 1};
    for (int k = 0; k < 6; k++) {
        write_all(tpath("cut.vae"), b, cut[k]);
        vae_model *f = (vae_model *)b;
        EXPECT_ERR(vae_model_load(&f, tpath("cut.vae")), VAE_ERR_FORMAT, "cut.vae", NULL);
        assert_null(f);
    }
    free(b);
    vae_model_free(m);
}

/* Applies `edit` to a copy of the Gaussian model's bytes, recomputes the CRC
 * (and the length when the size changed), and expects VAE_ERR_FORMAT with a
 * message mentioning `needle`. */
typedef void (*edit_fn)(unsigned char *b, size_t *size);

static void expect_crafted(edit_fn edit, const char *needle, const char *what)
{
    vae_model *m = gaussian_model();
    size_t size = 0;
    unsigned char *orig = save_to_mem(m, &size);
    unsigned char *b = malloc(size + 64);
    assert_non_null(b);
    memcpy(b, orig, size);
    size_t n = size;
    edit(b, &n);
    if (n != size)
        fix_len_crc(b, n);
    else
        fix_crc(b, n);
    expect_format(b, n, needle, what, 0);
    free(b);
    free(orig);
    vae_model_free(m);
}

#define CRAFT(name, body)                                                                   \
    static void name(unsigned char *b, size_t *size)                                        \
    {                                                                                       \
        (void)b;                                                                            \
        (void)size;                                                                         \
        body;                                                                               \
    }

CRAFT(ed_version2, set32(b + OFF_VERSION, 2))
CRAFT(ed_version0, set32(b + OFF_VERSION, 0))
CRAFT(ed_flags, set32(b + OFF_FLAGS, 1))
CRAFT(ed_likelihood, set32(b + OFF_LIK, 2))
CRAFT(ed_sigma0, setf32(b + OFF_SIGMA, 0.0f))
CRAFT(ed_sigma_neg, setf32(b + OFF_SIGMA, -1.0f))
CRAFT(ed_sigma_nan, setf32(b + OFF_SIGMA, NAN))
CRAFT(ed_sigma_inf, setf32(b + OFF_SIGMA, INFINITY))
CRAFT(ed_input0, set64(b + OFF_INPUT, 0))
CRAFT(ed_input_huge, set64(b + OFF_INPUT, (uint64_t)1 << 40))
CRAFT(ed_input7, set64(b + OFF_INPUT, 7))
CRAFT(ed_latent0, set64(b + OFF_LATENT, 0))
CRAFT(ed_latent2, set64(b + OFF_LATENT, 2))
CRAFT(ed_nlayers0, set32(b + OFF_NLAYERS, 0))
CRAFT(ed_nlayers_huge, set32(b + OFF_NLAYERS, 100000))
CRAFT(ed_nlayers5, set32(b + OFF_NLAYERS, 5))
CRAFT(ed_nlayers7, set32(b + OFF_NLAYERS, 7))
CRAFT(ed_nenc5, set32(b + OFF_NENC, 5))
CRAFT(ed_nenc6, set32(b + OFF_NENC, 6))
CRAFT(ed_nenc_wrap, set32(b + OFF_NENC, 0xfffffffeu))
CRAFT(ed_nenc_max, set32(b + OFF_NENC, 0xffffffffu))
CRAFT(ed_nenc1, set32(b + OFF_NENC, 1))
CRAFT(ed_kind77, set32(b + rec(1), 77))
CRAFT(ed_kind0, set32(b + rec(4), 0))
CRAFT(ed_act7, set32(b + rec(0) + 4, 7))
CRAFT(ed_act_neg, set32(b + rec(3) + 4, 0xffffffffu))
CRAFT(ed_nf3, set32(b + rec(0) + 8, 3))
CRAFT(ed_nf1, set32(b + rec(5) + 8, 1))
CRAFT(ed_nf_huge, set32(b + rec(0) + 8, 1000))
CRAFT(ed_np_wrong, set64(b + rec(0) + 16, 36))
CRAFT(ed_in0, set64(b + rec(3) + 24, 0); set64(b + rec(3) + 16, 4))
/* Encoder layer 1 takes 3 inputs (5 expected); its own count is consistent. */
CRAFT(ed_chain, set64(b + rec(1) + 24, 3); set64(b + rec(1) + 16, 3 * 4 + 4))
/* The last decoder layer gives 5 outputs for a 6-dimensional input. */
CRAFT(ed_last_out, set64(b + rec(5) + 32, 5); set64(b + rec(5) + 16, 5 * 5 + 5))
/* The same layer with 7 outputs: more parameters than the file holds. */
CRAFT(ed_last_out7, set64(b + rec(5) + 32, 7); set64(b + rec(5) + 16, 5 * 7 + 7))
CRAFT(ed_head_act, set32(b + rec(2) + 4, VAE_ACT_TANH))
CRAFT(ed_head_in, set64(b + rec(2) + 24, 5); set64(b + rec(2) + 16, 5 * 6 + 6))
CRAFT(ed_head_kind, set32(b + rec(2), 9))
CRAFT(ed_count_plus, set64(b + rec(G_LAYERS), G_PARAMS + 1))
CRAFT(ed_count_minus, set64(b + rec(G_LAYERS), G_PARAMS - 1))
CRAFT(ed_nan17, setf32(b + rec(G_LAYERS) + 8 + 4 * 17, NAN))
CRAFT(ed_inf_last, setf32(b + rec(G_LAYERS) + 8 + 4 * (G_PARAMS - 1), -INFINITY))
CRAFT(ed_extra_param, setf32(b + *size - 4, 0.5f); *size += 4)
CRAFT(ed_one_param_less, *size -= 4)

static void test_crafted_inconsistent(void **state)
{
    (void)state;
    /* Each file has a valid CRC and length: only the content is wrong. */
    expect_crafted(ed_version2, "version 2", "version 2");
    expect_crafted(ed_version0, "version 0", "version 0");
    expect_crafted(ed_flags, "flags", "flags");
    expect_crafted(ed_likelihood, "likelihood 2", "likelihood");
    expect_crafted(ed_sigma0, "sigma", "sigma 0");
    expect_crafted(ed_sigma_neg, "sigma", "sigma -1");
    expect_crafted(ed_sigma_nan, "sigma", "sigma NaN");
    expect_crafted(ed_sigma_inf, "sigma", "sigma inf");
    expect_crafted(ed_input0, "dimensions", "input_dim 0");
    expect_crafted(ed_input_huge, NULL, "input_dim 2^40");
    expect_crafted(ed_input7, "encoder layer 0 expects 6 inputs", "input_dim 7");
    expect_crafted(ed_latent0, "dimensions", "latent_dim 0");
    expect_crafted(ed_latent2, "latent", "latent_dim 2");
    expect_crafted(ed_nlayers0, "impossible layer counts", "no layers");
    expect_crafted(ed_nlayers_huge, "impossible layer counts", "100000 layers");
    expect_crafted(ed_nlayers5, NULL, "one layer fewer");
    expect_crafted(ed_nlayers7, NULL, "one layer more");
    expect_crafted(ed_nenc5, "impossible layer counts", "n_enc 5 of 6: no decoder");
    expect_crafted(ed_nenc6, "impossible layer counts", "n_enc 6 of 6");
    expect_crafted(ed_nenc_wrap, "impossible layer counts", "n_enc 2^32 - 2");
    expect_crafted(ed_nenc_max, "impossible layer counts", "n_enc 2^32 - 1");
    expect_crafted(ed_nenc1, NULL, "n_enc 1");
    expect_crafted(ed_kind77, "unknown layer kind 77", "kind 77");
    expect_crafted(ed_kind0, "unknown layer kind 0", "kind 0");
    expect_crafted(ed_act7, "unknown activation 7", "activation 7");
    expect_crafted(ed_act_neg, "unknown activation -1", "activation -1");
    expect_crafted(ed_nf3, "3 fields", "3 fields");
    expect_crafted(ed_nf1, "1 fields", "1 field");
    expect_crafted(ed_nf_huge, "layer 0", "1000 fields");
    expect_crafted(ed_np_wrong, "claims 36 parameters", "parameter count of a layer");
    expect_crafted(ed_in0, "layer 3", "zero inputs");
    expect_crafted(ed_chain, "encoder layer 1 expects 3 inputs", "layers that do not chain");
    expect_crafted(ed_last_out, "gives 5 outputs", "output of 5 for 6 inputs");
    expect_crafted(ed_last_out7, "layer 5 announces 42 parameters", "output of 7 for 6 inputs");
    expect_crafted(ed_head_act, "head", "head activation");
    expect_crafted(ed_head_in, "head", "head input");
    expect_crafted(ed_head_kind, "head", "head kind");
    expect_crafted(ed_count_plus, "parameters stored", "parameter count + 1");
    expect_crafted(ed_count_minus, "parameters stored", "parameter count - 1");
    expect_crafted(ed_nan17, "parameter 17 is not finite", "NaN parameter");
    expect_crafted(ed_inf_last, "parameter 165 is not finite", "infinite parameter");
    expect_crafted(ed_extra_param, "parameters stored", "one value too many");
    expect_crafted(ed_one_param_less, "parameters stored", "one value too few");
}

/* Peak resident memory, reset beforehand, so that a load that touches a lot
 * of memory and frees it again is still seen. Returns 0 when the system
 * does not offer the numbers. */
static int hwm_reset(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f)
        return 0;
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok;
}

static long status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long v = -1;
    size_t k = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, k) && line[k] == ':')
            v = strtol(line + k + 1, NULL, 10);
    fclose(f);
    return v;
}

/* A model file of a few hundred bytes whose records announce tens of
 * millions of parameters: the loader must see that the file cannot hold
 * them before it allocates anything of that size. */
static void expect_cheap_failure(const unsigned char *b, size_t n, const char *needle,
                                 const char *what)
{
    int have = hwm_reset();
    long before = status_kb("VmRSS");
    vae_model *m = (vae_model *)&have;
    (void)vae_rng_uniform(NULL, NULL, 0);
    int rc = vae_model_load_mem(&m, b, n);
    long peak = status_kb("VmHWM");
    const char *msg = vae_last_error();
    if (rc != VAE_ERR_FORMAT)
        fail_msg("%s: returned %d (%s): %s", what, rc, vae_strerror(rc), msg);
    assert_null(m);
    if (strstr(msg, "out of memory"))
        fail_msg("%s: the loader tried to allocate what the file announces: %s", what, msg);
    if (!strstr(msg, needle))
        fail_msg("%s: message \"%s\" does not mention \"%s\"", what, msg, needle);
    if (have && before > 0 && peak > 0 && peak - before > 32 * 1024)
        fail_msg("%s: loading %zu bytes raised the resident memory by %ld kB (%s)", what, n,
                 peak - before, msg);
}

static void test_crafted_huge_layers(void **state)
{
    (void)state;
    /* A small real model: encoder 4 -> 8, head 8 -> 2, decoder 1 -> 4. */
    vae_model *m = NULL;
    OK(vae_model_create(&m, 4, 1, VAE_LIKELIHOOD_GAUSSIAN));
    add_dense(m, 1, 4, 8, VAE_ACT_RELU);
    add_dense(m, 0, 1, 4, VAE_ACT_IDENTITY);
    OK(vae_model_build(m, 3));
    size_t size = 0;
    unsigned char *orig = save_to_mem(m, &size);
    assert_int_equal(get32(orig + OFF_NLAYERS), 3);
    unsigned char *b = malloc(size);
    assert_non_null(b);

    /* The encoder layer widened to 2^22 outputs (21 million parameters,
     * consistent with its sizes) and the head to match. */
    memcpy(b, orig, size);
    const uint64_t wide = (uint64_t)1 << 22;
    set64(b + rec(0) + 32, wide);
    set64(b + rec(0) + 16, 4 * wide + wide);
    set64(b + rec(1) + 24, wide);
    set64(b + rec(1) + 16, wide * 2 + 2);
    fix_crc(b, size);
    expect_cheap_failure(b, size, "parameters", "encoder layer of 2^22 outputs");

    /* The same layer with its record's own count left small: the sizes,
     * not the count, decide what constructing the layer allocates. */
    memcpy(b, orig, size);
    set64(b + rec(0) + 32, wide);
    fix_crc(b, size);
    expect_cheap_failure(b, size, "claims 40 parameters", "2^22 outputs, count unchanged");

    /* A latent code of 2^19: the head the loader builds itself would have
     * 2^23 parameters, and the decoder's first layer 2^21. */
    memcpy(b, orig, size);
    const uint64_t lat = (uint64_t)1 << 19;
    set64(b + OFF_LATENT, lat);
    set64(b + rec(1) + 32, 2 * lat);
    set64(b + rec(1) + 16, 8 * 2 * lat + 2 * lat);
    set64(b + rec(2) + 24, lat);
    set64(b + rec(2) + 16, lat * 4 + 4);
    fix_crc(b, size);
    expect_cheap_failure(b, size, "parameters", "latent code of 2^19");

    /* The same, with a head record that lies about its own size. */
    memcpy(b, orig, size);
    set64(b + OFF_LATENT, lat);
    set64(b + rec(2) + 24, lat);
    set64(b + rec(2) + 16, lat * 4 + 4);
    fix_crc(b, size);
    expect_cheap_failure(b, size, "head", "latent code of 2^19, head record unchanged");

    free(b);
    free(orig);
    vae_model_free(m);
}

/* Every byte changed in turn, with the CRC recomputed: the structure checks
 * alone must catch what they can, never crash, and whatever loads must be
 * exactly the model the bytes describe (saving it gives the bytes back,
 * apart from the reserved words, which the writer sets to zero). */
static void test_structure_fuzz(void **state)
{
    (void)state;
    vae_model *models[2] = {gaussian_model(), bernoulli_model()};
    for (int k = 0; k < 2; k++) {
        size_t size = 0;
        unsigned char *b = save_to_mem(models[k], &size);
        const size_t n_layers = get32(b + OFF_NLAYERS);
        unsigned char *c = malloc(size);
        assert_non_null(c);
        size_t loaded = 0;
        for (size_t i = 8; i < size - 4; i++) {
            static const unsigned char masks[2] = {0x01, 0xff};
            for (int j = 0; j < 2; j++) {
                memcpy(c, b, size);
                c[i] ^= masks[j];
                fix_crc(c, size);
                vae_model *m = NULL;
                int rc = vae_model_load_mem(&m, c, size);
                if (rc == VAE_ERR_FORMAT) {
                    assert_null(m);
                    assert_true(vae_last_error()[0] != '\0');
                    continue;
                }
                if (rc != VAE_OK)
                    fail_msg("byte %zu ^ 0x%02x: status %d (%s): %s", i, masks[j], rc,
                             vae_strerror(rc), vae_last_error());
                loaded++;
                size_t n2 = 0;
                unsigned char *d = save_to_mem(m, &n2);
                assert_int_equal(n2, size);
                /* Words the reader may ignore: the reserved ones, and sigma
                 * of a Bernoulli model (written back as 1). */
                int ignorable = (i >= OFF_RES1 && i < OFF_RES1 + 4) ||
                                (i >= OFF_RES2 && i < OFF_RES2 + 4);
                for (size_t l = 0; l < n_layers; l++)
                    ignorable |= i >= rec(l) + 12 && i < rec(l) + 16;
                if (vae_model_likelihood(m) == VAE_LIKELIHOOD_BERNOULLI) {
                    ignorable |= i >= OFF_SIGMA && i < OFF_SIGMA + 4;
                    setf32(c + OFF_SIGMA, 1.0f);
                    fix_crc(c, size);
                }
                if (ignorable) {
                    memcpy(c, b, size); /* as if nothing had changed */
                    if (vae_model_likelihood(m) == VAE_LIKELIHOOD_BERNOULLI) {
                        setf32(c + OFF_SIGMA, 1.0f);
                        fix_crc(c, size);
                    }
                } else {
                    /* What may change undetected: the likelihood, sigma, an
                     * activation other than the head's, a parameter. */
                    int value = (i >= OFF_LIK && i < OFF_LIK + 4) ||
                                (i >= OFF_SIGMA && i < OFF_SIGMA + 4) ||
                                i >= rec(n_layers) + 8;
                    for (size_t l = 0; l < n_layers; l++)
                        value |= l != (size_t)get32(b + OFF_NENC) && i >= rec(l) + 4 &&
                                 i < rec(l) + 8;
                    if (!value)
                        fail_msg("byte %zu ^ 0x%02x: a change outside any value loaded", i,
                                 masks[j]);
                }
                assert_memory_equal(d, c, size);
                free(d);
                vae_model_free(m);
            }
        }
        /* Most parameter bytes change a value and still load. */
        size_t np = 0;
        (void)vae_model_params(models[k], &np);
        assert_true(loaded >= 4 * np);
        free(c);
        free(b);
    }
    vae_model_free(models[0]);
    vae_model_free(models[1]);
}

/* ---- atomic save -------------------------------------------------------------- */

static void test_save_replaces_atomically(void **state)
{
    (void)state;
    assert_int_equal(mkdir(tpath("atomic"), 0755), 0);
    vae_model *m = gaussian_model();
    /* A longer file of something else at the target. */
    unsigned char junk[10000];
    memset(junk, 'x', sizeof junk);
    write_all(tpath("atomic/model.vae"), junk, sizeof junk);
    char listing[1024];
    list_dir(tpath("atomic"), listing, sizeof listing);
    assert_string_equal(listing, "model.vae");

    OK(vae_model_save(m, tpath("atomic/model.vae")));
    size_t size = 0, fsize = 0;
    unsigned char *mem = save_to_mem(m, &size);
    unsigned char *file = read_all(tpath("atomic/model.vae"), &fsize);
    assert_int_equal(fsize, size);
    assert_memory_equal(file, mem, size);
    free(file);
    /* No temporary file left beside it. */
    list_dir(tpath("atomic"), listing, sizeof listing);
    assert_string_equal(listing, "model.vae");

    /* Saving another model over it replaces it completely. */
    vae_model *b = bernoulli_model();
    OK(vae_model_save(b, tpath("atomic/model.vae")));
    size_t bsize = 0;
    unsigned char *bmem = save_to_mem(b, &bsize);
    file = read_all(tpath("atomic/model.vae"), &fsize);
    assert_int_equal(fsize, bsize);
    assert_memory_equal(file, bmem, bsize);
    free(file);
    list_dir(tpath("atomic"), listing, sizeof listing);
    assert_string_equal(listing, "model.vae");

    /* A directory that does not exist: an I/O error, nothing created. */
    EXPECT_ERR(vae_model_save(m, tpath("atomic/no-such-dir/model.vae")), VAE_ERR_IO,
               "vae_model_save", "no-such-dir");
    list_dir(tpath("atomic"), listing, sizeof listing);
    assert_string_equal(listing, "model.vae");

    /* A target that is a directory: the rename fails, the temporary file is
     * removed, the directory stays. */
    assert_int_equal(mkdir(tpath("atomic/adir"), 0755), 0);
    EXPECT_ERR(vae_model_save(m, tpath("atomic/adir")), VAE_ERR_IO, "vae_model_save", "adir");
    list_dir(tpath("atomic"), listing, sizeof listing);
    assert_string_equal(listing, "adir model.vae");
    struct stat st;
    assert_int_equal(stat(tpath("atomic/adir"), &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(rmdir(tpath("atomic/adir")), 0);

    /* A write that fails half-way (a file size limit, as a full disk would
     * do): the old file is untouched and no temporary file remains. */
    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = old;
    lim.rlim_cur = 100;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    (void)vae_rng_uniform(NULL, NULL, 0);
    int rc = vae_model_save(m, tpath("atomic/model.vae"));
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, old_handler);
    tu_check_error_msg(rc, VAE_ERR_IO, "vae_model_save", "model.vae", "save over a size limit",
                       __FILE__, __LINE__);
    file = read_all(tpath("atomic/model.vae"), &fsize);
    assert_int_equal(fsize, bsize);
    assert_memory_equal(file, bmem, bsize);
    free(file);
    list_dir(tpath("atomic"), listing, sizeof listing);
    assert_string_equal(listing, "model.vae");
    vae_model *again = NULL;
    OK(vae_model_load(&again, tpath("atomic/model.vae")));
    assert_same_model(b, again);
    vae_model_free(again);

    free(bmem);
    free(mem);
    vae_model_free(b);
    vae_model_free(m);
    assert_int_equal(unlink(tpath("atomic/model.vae")), 0);
    assert_int_equal(rmdir(tpath("atomic")), 0);
}

/* ---- limits ------------------------------------------------------------------- */

/* Restores a limit when the test ends, even after a failure half-way. */
static uint64_t saved_limits[4];

static void save_limits(void)
{
    for (int k = VAE_LIMIT_FILE_BYTES; k <= VAE_LIMIT_WORKSPACE_BYTES; k++)
        saved_limits[k] = vae_get_limit(k);
}

static void restore_limits(void)
{
    for (int k = VAE_LIMIT_FILE_BYTES; k <= VAE_LIMIT_WORKSPACE_BYTES; k++)
        OK(vae_set_limit(k, saved_limits[k]));
}

/* A model of a few thousand parameters whose layers need a workspace of
 * hundreds of megabytes: latent 2 -> dense 256 (1 x 16 x 16) ->
 * ConvTranspose2D to 512 x 32 x 32 (kernel 2, stride 2) -> Conv2D 1x1 back
 * to 1 x 32 x 32. Half a million floats of activations per sample, and the
 * workspace holds 64 samples' worth (a block), so even one sample would
 * take about 400 MB. */
enum { WD = 1024, WL = 2, W_PARAMS = (WD + 1) * 2 * WL + (WL + 1) * 256 + 2048 + 512 + 513 };

static vae_model *huge_workspace_model(void)
{
    vae_model *m = NULL;
    vae_layer *l = NULL;
    OK(vae_model_create(&m, WD, WL, VAE_LIKELIHOOD_BERNOULLI));
    add_dense(m, 0, WL, 256, VAE_ACT_RELU);
    OK(vae_layer_conv2d_transpose_create(&l, 1, 16, 16, 512, 2, 2, 2, 0, 0, VAE_ACT_RELU));
    add_layer(m, 0, l);
    OK(vae_layer_conv2d_create(&l, 512, 32, 32, 1, 1, 1, 1, 0, VAE_ACT_IDENTITY));
    add_layer(m, 0, l);
    OK(vae_model_build(m, 17));
    assert_int_equal(vae_model_param_count(m), W_PARAMS);
    return m;
}

/* A file of 32 kB whose model would take hundreds of megabytes to sample
 * one image from: with VAE_LIMIT_WORKSPACE_BYTES set low, the first call
 * that needs the workspace refuses, VAE_ERR_NOMEM naming the limit, before
 * allocating it; every kind of call does. A small model still runs under
 * the same limit. */
static void test_limit_workspace(void **state)
{
    (void)state;
    save_limits();
    vae_model *built = huge_workspace_model();
    OK(vae_model_save(built, tpath("wide.vae")));
    vae_model_free(built);
    struct stat st;
    assert_int_equal(stat(tpath("wide.vae"), &st), 0);
    assert_true(st.st_size < 40000);
    vae_model *m = NULL;
    OK(vae_model_load(&m, tpath("wide.vae")));

    OK(vae_set_limit(VAE_LIMIT_WORKSPACE_BYTES, (uint64_t)16 << 20));
    vae_context *ctx = NULL;
    vae_rng *rng = NULL;
    vae_elbo *e = NULL;
    vae_optimizer *opt = NULL;
    vae_trainer *t = NULL;
    OK(vae_context_create(&ctx));
    OK(vae_rng_create(&rng, 5));
    OK(vae_elbo_create(&e));
    OK(vae_optimizer_create(&opt, VAE_OPTIMIZER_ADAM));
    OK(vae_trainer_create(&t, m, e, opt, ctx, 3));
    float *x = calloc(WD, sizeof *x), *mu = calloc(WL, sizeof *mu), *lv = calloc(WL, sizeof *lv);
    float z[WL] = {0.5f, -0.5f};
    double ll = 0, per = 0;
    assert_non_null(x);
    assert_non_null(mu);
    assert_non_null(lv);
    const size_t live = vae_allocations();
    const char *lim = "VAE_LIMIT_WORKSPACE_BYTES";
    EXPECT_ERR(vae_sample(ctx, m, rng, 1, x), VAE_ERR_NOMEM, "vae_sample", lim);
    EXPECT_ERR(vae_decode(ctx, m, z, 1, x), VAE_ERR_NOMEM, "vae_decode", lim);
    EXPECT_ERR(vae_encode(ctx, m, x, 1, mu, lv), VAE_ERR_NOMEM, "vae_encode", lim);
    EXPECT_ERR(vae_reconstruct(ctx, m, x, 1, x), VAE_ERR_NOMEM, "vae_reconstruct", lim);
    EXPECT_ERR(vae_log_likelihood(ctx, m, x, 1, 2, rng, &ll), VAE_ERR_NOMEM,
               "vae_log_likelihood", lim);
    EXPECT_ERR(vae_elbo_evaluate(ctx, m, e, x, 1, NULL, rng, &per, NULL), VAE_ERR_NOMEM,
               "vae_elbo_evaluate", lim);
    EXPECT_ERR(vae_context_reserve(ctx, m, 1), VAE_ERR_NOMEM, "vae_context_reserve", lim);
    EXPECT_ERR(vae_trainer_step(t, x, 1, NULL), VAE_ERR_NOMEM, "vae_trainer_step", lim);
    EXPECT_ERR(vae_trainer_reserve(t, 1), VAE_ERR_NOMEM, "vae_trainer_reserve", lim);
    assert_int_equal(vae_allocations(), live); /* nothing of that size was allocated */
    assert_int_equal(vae_trainer_steps(t), 0);

    /* The same limit leaves room for an ordinary model. */
    vae_model *small = gaussian_model();
    float out[4 * GD];
    OK(vae_sample(ctx, small, rng, 4, out));

    vae_model_free(small);
    vae_trainer_free(t);
    vae_optimizer_free(opt);
    vae_elbo_free(e);
    vae_rng_free(rng);
    vae_context_free(ctx);
    vae_model_free(m);
    free(x);
    free(mu);
    free(lv);
    restore_limits();
    assert_int_equal(unlink(tpath("wide.vae")), 0);
}

/* vae_model_load and vae_model_load_mem refuse a file above
 * VAE_LIMIT_FILE_BYTES and a model above VAE_LIMIT_MODEL_PARAMS with
 * VAE_ERR_NOMEM (the file is not damaged: the process chose not to take
 * it), and accept both at the limit. */
static void test_limit_file_and_params(void **state)
{
    (void)state;
    save_limits();
    vae_model *m = gaussian_model();
    OK(vae_model_save(m, tpath("limit.vae")));
    size_t size = 0;
    unsigned char *buf = save_to_mem(m, &size);
    const size_t live = vae_allocations();

    vae_model *out = m;
    OK(vae_set_limit(VAE_LIMIT_FILE_BYTES, size - 1));
    EXPECT_ERR(vae_model_load(&out, tpath("limit.vae")), VAE_ERR_NOMEM, "vae_model_load",
               "VAE_LIMIT_FILE_BYTES");
    assert_null(out);
    out = m;
    EXPECT_ERR(vae_model_load_mem(&out, buf, size), VAE_ERR_NOMEM, "vae_model_load_mem",
               "VAE_LIMIT_FILE_BYTES");
    assert_null(out);
    assert_int_equal(vae_allocations(), live);
    OK(vae_set_limit(VAE_LIMIT_FILE_BYTES, size));
    OK(vae_model_load(&out, tpath("limit.vae")));
    assert_same_model(m, out);
    vae_model_free(out);
    OK(vae_model_load_mem(&out, buf, size));
    vae_model_free(out);
    restore_limits();

    OK(vae_set_limit(VAE_LIMIT_MODEL_PARAMS, G_PARAMS - 1));
    out = m;
    EXPECT_ERR(vae_model_load(&out, tpath("limit.vae")), VAE_ERR_NOMEM, "vae_model_load",
               "VAE_LIMIT_MODEL_PARAMS");
    assert_null(out);
    out = m;
    EXPECT_ERR(vae_model_load_mem(&out, buf, size), VAE_ERR_NOMEM, "vae_model_load_mem",
               "VAE_LIMIT_MODEL_PARAMS");
    assert_null(out);
    assert_int_equal(vae_allocations(), live);
    /* The limit bounds the model as a whole: a record that alone passes it
     * is refused where the running count passes it. */
    OK(vae_set_limit(VAE_LIMIT_MODEL_PARAMS, 35 + 24));
    EXPECT_ERR(vae_model_load_mem(&out, buf, size), VAE_ERR_NOMEM, "vae_model_load_mem",
               "layers 0 to 2 have 89 parameters");
    /* Building and the MLP constructor are held to it too. */
    static const size_t hidden[] = {40};
    EXPECT_ERR(vae_model_create_mlp(&out, 10, hidden, 1, 2, VAE_ACT_RELU,
                                    VAE_LIKELIHOOD_BERNOULLI, 1),
               VAE_ERR_NOMEM, "vae_model_build", "VAE_LIMIT_MODEL_PARAMS");
    assert_null(out);
    OK(vae_set_limit(VAE_LIMIT_MODEL_PARAMS, G_PARAMS));
    OK(vae_model_load_mem(&out, buf, size));
    assert_same_model(m, out);
    vae_model_free(out);
    restore_limits();

    free(buf);
    vae_model_free(m);
    assert_int_equal(unlink(tpath("limit.vae")), 0);
}

/* ---- bad arguments ------------------------------------------------------------ */

static void test_bad_arguments(void **state)
{
    (void)state;
    assert_int_equal(mkdir(tpath("args"), 0755), 0);
    vae_model *m = gaussian_model();
    size_t size = 0;
    unsigned char *buf = save_to_mem(m, &size);

    /* An unbuilt model has nothing to save. */
    vae_model *unbuilt = NULL;
    OK(vae_model_create(&unbuilt, 4, 2, VAE_LIKELIHOOD_BERNOULLI));
    assert_int_equal(vae_model_is_built(unbuilt), 0);
    assert_int_equal(vae_model_param_count(unbuilt), 0);
    assert_int_equal(vae_model_tensor_count(unbuilt), 0);
    EXPECT_ERR(vae_model_save(unbuilt, tpath("args/unbuilt.vae")), VAE_ERR_STATE, "vae_model_save",
               "build");
    EXPECT_ERR(vae_model_save_mem(unbuilt, NULL, 0, &size), VAE_ERR_STATE, "vae_model_save_mem",
               "build");
    vae_model_free(unbuilt);
    char listing[1024];
    list_dir(tpath("args"), listing, sizeof listing);
    assert_string_equal(listing, "");

    EXPECT_ERR(vae_model_save(NULL, tpath("x.vae")), VAE_ERR_INVALID, "vae_model_save", "model");
    EXPECT_ERR(vae_model_save(m, NULL), VAE_ERR_INVALID, "vae_model_save", "path");
    EXPECT_ERR(vae_model_save(m, ""), VAE_ERR_INVALID, "vae_model_save", "path");
    EXPECT_ERR(vae_model_save_mem(NULL, buf, size, &size), VAE_ERR_INVALID,
               "vae_model_save_mem", "model");
    EXPECT_ERR(vae_model_save_mem(m, buf, size, NULL), VAE_ERR_INVALID, "vae_model_save_mem",
               "size");

    vae_model *out = m;
    EXPECT_ERR(vae_model_load(NULL, tpath("x.vae")), VAE_ERR_INVALID, "vae_model_load", "out");
    EXPECT_ERR(vae_model_load(&out, NULL), VAE_ERR_INVALID, "vae_model_load", "path");
    assert_null(out);
    out = m;
    EXPECT_ERR(vae_model_load_mem(&out, NULL, size), VAE_ERR_INVALID, "vae_model_load_mem",
               "buf");
    assert_null(out);
    EXPECT_ERR(vae_model_load_mem(NULL, buf, size), VAE_ERR_INVALID, "vae_model_load_mem", "out");
    out = m;
    EXPECT_ERR(vae_model_load_mem(&out, buf, 0), VAE_ERR_FORMAT, "vae_model_load_mem", "short");
    assert_null(out);

    /* Files that are not there or not files. */
    out = m;
    EXPECT_ERR(vae_model_load(&out, tpath("missing.vae")), VAE_ERR_IO, "vae_model_load",
               "missing.vae");
    assert_null(out);
    EXPECT_ERR(vae_model_load(&out, tmpdir), VAE_ERR_IO, "vae_model_load", tmpdir);
    assert_null(out);
    /* An empty file is a format error, not an I/O one. */
    write_all(tpath("empty.vae"), "", 0);
    EXPECT_ERR(vae_model_load(&out, tpath("empty.vae")), VAE_ERR_FORMAT, "vae_model_load",
               "short");
    assert_int_equal(unlink(tpath("empty.vae")), 0);
    /* An IDX file, or text, is not a model. */
    write_all(tpath("text.vae"), "hello, this is not a model file at all", 38);
    EXPECT_ERR(vae_model_load(&out, tpath("text.vae")), VAE_ERR_FORMAT, "vae_model_load",
               "magic");
    assert_int_equal(unlink(tpath("text.vae")), 0);

    free(buf);
    vae_model_free(m);
    assert_int_equal(rmdir(tpath("args")), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_round_trip_gaussian),
        cmocka_unit_test(test_round_trip_bernoulli),
        cmocka_unit_test(test_round_trip_conv),
        cmocka_unit_test(test_introspection_after_load),
        cmocka_unit_test(test_every_byte_flipped),
        cmocka_unit_test(test_truncated_and_extended),
        cmocka_unit_test(test_crafted_inconsistent),
        cmocka_unit_test(test_crafted_huge_layers),
        cmocka_unit_test(test_structure_fuzz),
        cmocka_unit_test(test_save_replaces_atomically),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_limit_workspace),
        cmocka_unit_test(test_limit_file_and_params),
    };
    return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
