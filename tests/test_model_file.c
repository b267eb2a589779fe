/* Model files: the byte layout of format version 2 (dense and convolution
 * records), bit-exact round trips through a file and through memory, what
 * introspection reports of a loaded model, damaged and crafted files in both
 * versions the reader accepts, the chunk rules of version 2, checkpoints read
 * as models, non-finite parameters refused on save, atomic replacement on
 * save, limits, and bad arguments.
 *
 * Version 2, as the library writes it (little-endian):
 *     0  magic 89 'V' 'A' 'E' 0d 0a 1a 0a
 *     8  u32 format version (2)        12  u32 writer's VAE_VERSION_NUMBER
 *    16  chunks: 4 letters of type, u64 data length L, L bytes of data, and a
 *        CRC-32 of the type, the length and the data (12 + L bytes). A model
 *        file holds ARCH, PARM and DONE (empty), in that order.
 * The data of ARCH and PARM, at "payload offsets" (PO_* below):
 *     0  u32 likelihood   4 u32 reserved   8 f32 sigma   12 u32 reserved
 *    16  u64 input_dim   24 u64 latent_dim
 *    32  u32 n_layers    36 u32 n_enc (encoder layers; the head follows)
 *    40  n_layers records: u32 kind, u32 activation, u32 nfields, u32 reserved,
 *        u64 parameter count, nfields x u64 (dense: in, out) -- 40 bytes
 *        (ARCH ends here; PARM:) u64 parameter count, the parameters as f32.
 *
 * Version 1 (files of 0.1 and 1.0), still read: the magic, u32 1, u32 flags
 * (0), u64 payload bytes P, then the payload -- exactly the ARCH data
 * followed by the PARM data -- and a CRC-32 of every byte before it. The
 * tests make the version-1 file of each model from the library's version-2
 * bytes (to_v1) and run the crafted and damaged files through both. */
#define _POSIX_C_SOURCE 200809L

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

/* ---- the container: header, chunks, version 1 --------------------------------- */

enum {
    HDR = 16,        /* magic, format version, writer's version */
    OFF_FORMAT = 8,  /* u32 format version */
    OFF_WRITER = 12, /* u32 writer's VAE_VERSION_NUMBER (version 2) */
    CK = 16          /* a chunk's type, length and CRC */
};

/* Offsets in the payload: the ARCH data followed by the PARM data. */
enum {
    PO_LIK = 0, PO_RES1 = 4, PO_SIGMA = 8, PO_RES2 = 12, PO_INPUT = 16, PO_LATENT = 24,
    PO_NLAYERS = 32, PO_NENC = 36, PO_LAYERS = 40, REC = 40
};

/* Version 1: header fields and the payload's start. */
enum { V1_VERSION = 8, V1_FLAGS = 12, V1_LEN = 16, V1_HDR = 24 };

/* Payload offset of record i of a model of dense layers only. */
static size_t rec(size_t i)
{
    return PO_LAYERS + REC * i;
}

typedef struct chunk {
    size_t at; /* offset of its type; the data start 12 bytes later */
    char type[5];
    size_t len;
} chunk;

/* The chunks of a version-2 file the library wrote, walked independently of
 * its reader: every length inside the file, every CRC right, DONE last,
 * empty, and the end of the file. Returns how many (DONE included). */
static size_t chunks_of(const unsigned char *b, size_t n, chunk *out, size_t cap)
{
    assert_true(n >= HDR);
    size_t k = 0, at = HDR;
    for (;;) {
        assert_true(k < cap);
        if (n - at < CK)
            fail_msg("chunk %zu at byte %zu: only %zu bytes left", k, at, n - at);
        const uint64_t len = tu_get_le64(b + at + 4);
        if (len > n - at - CK)
            fail_msg("chunk %zu at byte %zu: length %llu, %zu bytes left", k, at,
                     (unsigned long long)len, n - at - CK);
        out[k].at = at;
        memcpy(out[k].type, b + at, 4);
        out[k].type[4] = '\0';
        out[k].len = (size_t)len;
        const uint32_t want = tu_crc32(b + at, 12 + (size_t)len),
                       got = tu_get_le32(b + at + 12 + (size_t)len);
        if (got != want)
            fail_msg("chunk %s at byte %zu: CRC %08x, expected %08x", out[k].type, at,
                     (unsigned)got, (unsigned)want);
        at += CK + (size_t)len;
        if (!strcmp(out[k++].type, "DONE")) {
            assert_int_equal(len, 0);
            assert_int_equal(at, n);
            return k;
        }
    }
}

/* The data of the one chunk of that type in a file the library wrote, and
 * its length. */
static const unsigned char *chunk_data(const unsigned char *b, size_t n, const char *type,
                                       size_t *len)
{
    chunk c[16];
    const size_t k = chunks_of(b, n, c, 16);
    const unsigned char *found = NULL;
    for (size_t i = 0; i < k; i++)
        if (!strcmp(c[i].type, type)) {
            if (found)
                fail_msg("chunk %s twice in the library's file", type);
            found = b + c[i].at + 12;
            *len = c[i].len;
        }
    if (!found)
        fail_msg("no chunk %s in the library's file", type);
    return found;
}

/* Rewrites the CRC of the chunk at `at` from its type, length and data. */
static void fix_chunk_crc(unsigned char *b, size_t at)
{
    const size_t len = (size_t)tu_get_le64(b + at + 4);
    tu_put_le32(b + at + 12 + len, tu_crc32(b + at, 12 + len));
}

/* Writes a chunk with a correct CRC at p; returns its size. */
static size_t put_chunk(unsigned char *p, const char *type, const void *data, size_t len)
{
    memcpy(p, type, 4);
    tu_put_le64(p + 4, len);
    if (len)
        memcpy(p + 12, data, len);
    tu_put_le32(p + 12 + len, tu_crc32(p, 12 + len));
    return CK + len;
}

/* The version-1 file of the model in version-2 bytes b: magic, u32 1,
 * u32 0, u64 P, ARCH data, PARM data, CRC-32 of everything before it. The
 * result has 64 bytes to spare beyond *n1. */
static unsigned char *to_v1(const unsigned char *b, size_t n, size_t *n1)
{
    size_t al = 0, pl = 0;
    const unsigned char *arch = chunk_data(b, n, "ARCH", &al),
                        *parm = chunk_data(b, n, "PARM", &pl);
    *n1 = V1_HDR + al + pl + 4;
    unsigned char *v = malloc(*n1 + 64);
    assert_non_null(v);
    memcpy(v, b, 8);
    tu_put_le32(v + V1_VERSION, 1);
    tu_put_le32(v + V1_FLAGS, 0);
    tu_put_le64(v + V1_LEN, al + pl);
    memcpy(v + V1_HDR, arch, al);
    memcpy(v + V1_HDR + al, parm, pl);
    tu_put_le32(v + *n1 - 4, tu_crc32(v, *n1 - 4));
    return v;
}

/* Where the layer records of a payload the library wrote end: the ARCH
 * data's length. */
static size_t arch_bytes(const unsigned char *payload, size_t pl)
{
    const size_t n_layers = tu_get_le32(payload + PO_NLAYERS);
    size_t off = PO_LAYERS;
    for (size_t i = 0; i < n_layers; i++) {
        assert_true(off + 24 <= pl);
        off += 24 + 8 * (size_t)tu_get_le32(payload + off + 8);
    }
    assert_true(off + 8 <= pl);
    return off;
}

/* A model file of either version being edited: the payload is reached by
 * payload offset whatever the container. Version 2 is laid out as the
 * library writes it: header, ARCH, PARM, DONE. */
typedef struct form {
    unsigned char *b;
    size_t n;
    int version;
    size_t arch; /* bytes of ARCH data: the payload offset where PARM's begin */
    size_t pl;   /* payload bytes */
} form;

/* A copy of src (with 64 bytes to spare) as a form of that version. */
static void make_form(form *f, const unsigned char *src, size_t n, int version)
{
    f->b = malloc(n + 64);
    assert_non_null(f->b);
    memcpy(f->b, src, n);
    f->n = n;
    f->version = version;
    assert_int_equal(tu_get_le32(src + OFF_FORMAT), version);
    if (version == 1) {
        f->pl = (size_t)tu_get_le64(src + V1_LEN);
        assert_int_equal(f->pl, n - V1_HDR - 4);
        f->arch = arch_bytes(src + V1_HDR, f->pl);
    } else {
        chunk c[4];
        assert_int_equal(chunks_of(src, n, c, 4), 3);
        assert_string_equal(c[0].type, "ARCH");
        assert_string_equal(c[1].type, "PARM");
        f->arch = c[0].len;
        f->pl = c[0].len + c[1].len;
        assert_int_equal(c[1].at, HDR + CK + f->arch);
    }
}

/* The byte at payload offset po. */
static unsigned char *at_po(const form *f, size_t po)
{
    assert_true(po < f->pl);
    if (f->version == 1)
        return f->b + V1_HDR + po;
    return f->b + (po < f->arch ? HDR + 12 + po : HDR + CK + 12 + po);
}

/* Where the file's chunks are (version 2). */
static size_t parm_at(const form *f)
{
    return HDR + CK + f->arch;
}

static size_t done_at(const form *f)
{
    return HDR + 2 * CK + f->pl;
}

/* The PARM data (the payload's end) grown or shrunk by delta bytes; new
 * bytes are for the caller to write. */
static void parm_resize(form *f, long delta)
{
    assert_true(delta >= -(long)(f->pl - f->arch) && delta <= 64);
    if (f->version == 2) /* PARM's CRC and the DONE chunk move */
        memmove(f->b + done_at(f) - 4 + delta, f->b + done_at(f) - 4, 4 + CK);
    f->pl = (size_t)((long)f->pl + delta);
    f->n = (size_t)((long)f->n + delta);
}

/* Rewrites the checksums (version 1: the CRC at the end; version 2: every
 * chunk's) from the bytes as they are, lengths included. */
static void fix_crcs(form *f)
{
    if (f->version == 1) {
        tu_put_le32(f->b + f->n - 4, tu_crc32(f->b, f->n - 4));
        return;
    }
    fix_chunk_crc(f->b, HDR);
    fix_chunk_crc(f->b, parm_at(f));
    fix_chunk_crc(f->b, done_at(f));
}

/* Rewrites the lengths (the payload's, or ARCH's and PARM's) and then the
 * checksums: only the content stays inconsistent. */
static void finalize(form *f)
{
    if (f->version == 1) {
        tu_put_le64(f->b + V1_LEN, f->pl);
    } else {
        tu_put_le64(f->b + HDR + 4, f->arch);
        tu_put_le64(f->b + parm_at(f) + 4, f->pl - f->arch);
    }
    fix_crcs(f);
}

/* A fresh allocation of exactly the n bytes of a version-2 file put
 * together from the header hdr and pieces, each a chunk with a correct CRC
 * (raw: bytes as they are). */
typedef struct piece {
    const char *type; /* NULL: raw bytes */
    const void *data;
    size_t len;
} piece;

static unsigned char *assemble(const unsigned char *hdr, const piece *ps, size_t np, size_t *n)
{
    size_t total = HDR;
    for (size_t i = 0; i < np; i++)
        total += (ps[i].type ? CK : 0) + ps[i].len;
    unsigned char *b = malloc(total);
    assert_non_null(b);
    memcpy(b, hdr, HDR);
    size_t at = HDR;
    for (size_t i = 0; i < np; i++) {
        if (ps[i].type) {
            at += put_chunk(b + at, ps[i].type, ps[i].data, ps[i].len);
        } else {
            memcpy(b + at, ps[i].data, ps[i].len);
            at += ps[i].len;
        }
    }
    assert_int_equal(at, total);
    *n = total;
    return b;
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

static char tmpdir[64];

static int make_tmpdir(void **state)
{
    (void)state;
    return tu_make_tmpdir(tmpdir, sizeof tmpdir, "vae_test_model_file");
}

static int remove_tmpdir(void **state)
{
    (void)state;
    return tu_remove_tree(tmpdir);
}

static const char *tpath(const char *name)
{
    return tu_path_in(tmpdir, name);
}

/* The directory holds exactly the names given (sorted, joined by spaces):
 * no temporary file of a save, whatever it is called, is left beside them. */
#define ASSERT_DIR_HOLDS(dir, expected)                                                     \
    do {                                                                                    \
        char dh_listing_[2048];                                                             \
        tu_list_dir((dir), dh_listing_, sizeof dh_listing_);                                \
        if (strcmp(dh_listing_, (expected)) != 0)                                           \
            fail_msg("%s:%d: %s holds \"%s\", expected \"%s\" and nothing else", __FILE__,  \
                     __LINE__, (dir), dh_listing_, (expected));                            \
    } while (0)

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
    /* The reference CRC itself, against the standard check value and a
     * value computed with zlib: the empty DONE chunk's. */
    assert_int_equal(tu_crc32("123456789", 9), 0xcbf43926u);
    static const unsigned char done_bytes[12] = {'D', 'O', 'N', 'E'};
    assert_int_equal(tu_crc32(done_bytes, 12), 0x1976d692u);

    vae_model *m = gaussian_model();
    size_t size = 0;
    unsigned char *b = tu_model_bytes(m, &size);
    const size_t A = rec(G_LAYERS), PL = 8 + 4 * G_PARAMS;
    assert_int_equal(size, HDR + (CK + A) + (CK + PL) + CK);

    /* The header: magic, format version 2, the writer's version (this
     * library's, as compiled and as loaded). */
    static const unsigned char magic[8] = {0x89, 'V', 'A', 'E', '\r', '\n', 0x1a, '\n'};
    assert_memory_equal(b, magic, 8);
    assert_int_equal(tu_get_le32(b + OFF_FORMAT), 2);
    assert_int_equal(tu_get_le32(b + OFF_WRITER), VAE_VERSION_NUMBER);
    assert_int_equal(tu_get_le32(b + OFF_WRITER), vae_version_number());

    /* ARCH, PARM, DONE, back to back, each with its length and its CRC. */
    chunk c[8];
    assert_int_equal(chunks_of(b, size, c, 8), 3);
    static const char *const types[3] = {"ARCH", "PARM", "DONE"};
    const size_t at[3] = {HDR, HDR + CK + A, HDR + 2 * CK + A + PL}, len[3] = {A, PL, 0};
    for (int k = 0; k < 3; k++) {
        assert_string_equal(c[k].type, types[k]);
        assert_int_equal(c[k].at, at[k]);
        assert_int_equal(tu_get_le64(b + at[k] + 4), len[k]);
        assert_int_equal(tu_get_le32(b + at[k] + 12 + len[k]), tu_crc32(b + at[k], 12 + len[k]));
    }
    assert_int_equal(tu_get_le32(b + at[2] + 12), 0x1976d692u);

    /* ARCH: the model's fields and its layer records. */
    const unsigned char *a = b + HDR + 12;
    assert_int_equal(tu_get_le32(a + PO_LIK), VAE_LIKELIHOOD_GAUSSIAN);
    assert_int_equal(tu_get_le32(a + PO_RES1), 0);
    assert_true(tu_get_le_f32(a + PO_SIGMA) == 0.37f);
    assert_int_equal(tu_get_le32(a + PO_RES2), 0);
    assert_int_equal(tu_get_le64(a + PO_INPUT), GD);
    assert_int_equal(tu_get_le64(a + PO_LATENT), GL);
    assert_int_equal(tu_get_le32(a + PO_NLAYERS), G_LAYERS);
    assert_int_equal(tu_get_le32(a + PO_NENC), G_NENC);
    for (size_t i = 0; i < G_LAYERS; i++) {
        const unsigned char *r = a + rec(i);
        assert_int_equal(tu_get_le32(r), VAE_LAYER_DENSE);
        assert_int_equal(tu_get_le32(r + 4), g_act[i]);
        assert_int_equal(tu_get_le32(r + 8), 2);
        assert_int_equal(tu_get_le32(r + 12), 0);
        assert_int_equal(tu_get_le64(r + 16), g_in[i] * g_out[i] + g_out[i]);
        assert_int_equal(tu_get_le64(r + 24), g_in[i]);
        assert_int_equal(tu_get_le64(r + 32), g_out[i]);
    }

    /* PARM: the count, then the slab bit for bit, as little-endian words
     * whatever the host's byte order. */
    const unsigned char *pm = b + at[1] + 12;
    assert_int_equal(tu_get_le64(pm), G_PARAMS);
    size_t n = 0;
    const float *p = vae_model_params(m, &n);
    assert_int_equal(n, G_PARAMS);
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &p[i], 4);
        if (tu_get_le32(pm + 8 + 4 * i) != u)
            fail_msg("parameter %zu: %08x in the file, %08x in the model", i,
                     (unsigned)tu_get_le32(pm + 8 + 4 * i), (unsigned)u);
    }

    /* The tests' own editing of the container gives the same bytes back
     * when nothing was changed, in both versions, and the version-1 file
     * made from these bytes is the model. */
    form f;
    make_form(&f, b, size, 2);
    assert_int_equal(f.arch, A);
    assert_int_equal(f.pl, A + PL);
    assert_ptr_equal(at_po(&f, PO_NENC), f.b + HDR + 12 + PO_NENC);
    assert_ptr_equal(at_po(&f, A), f.b + at[1] + 12);
    finalize(&f);
    assert_int_equal(f.n, size);
    assert_memory_equal(f.b, b, size);
    free(f.b);
    size_t n1 = 0;
    unsigned char *v1 = to_v1(b, size, &n1);
    assert_int_equal(n1, V1_HDR + A + PL + 4);
    assert_int_equal(tu_get_le32(v1 + V1_VERSION), 1);
    assert_int_equal(tu_get_le32(v1 + V1_FLAGS), 0);
    assert_int_equal(tu_get_le64(v1 + V1_LEN), A + PL);
    assert_memory_equal(v1 + V1_HDR, a, A);
    assert_memory_equal(v1 + V1_HDR + A, pm, PL);
    assert_int_equal(tu_get_le32(v1 + n1 - 4), tu_crc32(v1, n1 - 4));
    make_form(&f, v1, n1, 1);
    finalize(&f);
    assert_memory_equal(f.b, v1, n1);
    free(f.b);
    vae_model *old = NULL;
    OK(vae_model_load_mem(&old, v1, n1));
    assert_same_model(m, old);
    /* ... and saves as version 2, the same bytes as the original. */
    size_t again = 0;
    unsigned char *b2 = tu_model_bytes(old, &again);
    assert_int_equal(again, size);
    assert_memory_equal(b2, b, size);
    free(b2);
    vae_model_free(old);
    free(v1);
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
    unsigned char *mem = tu_model_bytes(m, &size);
    unsigned char *file = tu_read_file(path, &fsize);
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
    unsigned char *b = tu_model_bytes(m, &size);
    size_t al = 0, pl = 0;
    const unsigned char *a = chunk_data(b, size, "ARCH", &al),
                        *pm = chunk_data(b, size, "PARM", &pl);
    assert_int_equal(tu_get_le32(a + PO_NLAYERS), C_LAYERS);
    assert_int_equal(tu_get_le32(a + PO_NENC), C_NENC);
    assert_int_equal(tu_get_le64(a + PO_INPUT), CD);
    assert_int_equal(tu_get_le64(a + PO_LATENT), CL);
    assert_true(tu_get_le_f32(a + PO_SIGMA) == 1.5f);
    static const uint32_t kind[C_LAYERS] = {VAE_LAYER_CONV2D, VAE_LAYER_DENSE, VAE_LAYER_DENSE,
                                            VAE_LAYER_DENSE, VAE_LAYER_CONV2D_TRANSPOSE};
    static const uint32_t act[C_LAYERS] = {VAE_ACT_ELU, VAE_ACT_TANH, VAE_ACT_IDENTITY,
                                           VAE_ACT_RELU, VAE_ACT_IDENTITY};
    static const uint64_t params[C_LAYERS] = {14, 125, 36, 48, 25};
    static const uint64_t fields[C_LAYERS][9] = {
        {1, 5, 6, 2, 3, 2, 2, 1}, {24, 5}, {5, 6}, {3, 12}, {2, 2, 3, 1, 4, 3, 2, 1, 1}};
    static const uint32_t nfields[C_LAYERS] = {8, 2, 2, 2, 9};
    size_t off = PO_LAYERS;
    for (size_t i = 0; i < C_LAYERS; i++) {
        assert_int_equal(tu_get_le32(a + off), kind[i]);
        assert_int_equal(tu_get_le32(a + off + 4), act[i]);
        assert_int_equal(tu_get_le32(a + off + 8), nfields[i]);
        assert_int_equal(tu_get_le32(a + off + 12), 0);
        assert_int_equal(tu_get_le64(a + off + 16), params[i]);
        for (size_t k = 0; k < nfields[i]; k++)
            assert_int_equal(tu_get_le64(a + off + 24 + 8 * k), fields[i][k]);
        off += 24 + 8 * (size_t)nfields[i];
    }
    /* ARCH ends with the last record; PARM holds the count and the slab. */
    assert_int_equal(al, off);
    assert_int_equal(pl, 8 + 4 * C_PARAMS);
    assert_int_equal(tu_get_le64(pm), C_PARAMS);
    assert_int_equal(size, HDR + CK + al + CK + pl + CK);
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

/* The loader's refusal of the n bytes at buf (copied to an allocation of
 * exactly n bytes, so that ASan sees any read past the end): VAE_ERR_FORMAT,
 * *out NULL, a fresh message of the loader that mentions needle. needle may
 * be NULL, or alternatives separated by '|'. */
static int mentions(const char *msg, const char *needle)
{
    char alt[128];
    for (const char *p = needle;;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        assert_true(len < sizeof alt);
        memcpy(alt, p, len);
        alt[len] = '\0';
        if (strstr(msg, alt))
            return 1;
        if (!bar)
            return 0;
        p = bar + 1;
    }
}

static void expect_format(const unsigned char *buf, size_t size, const char *needle,
                          const char *what, size_t at)
{
    unsigned char *copy = malloc(size ? size : 1);
    assert_non_null(copy);
    if (size)
        memcpy(copy, buf, size);
    vae_model *m = (vae_model *)&m;
    (void)vae_rng_uniform(NULL, NULL, 0);
    int rc = vae_model_load_mem(&m, copy, size);
    free(copy);
    const char *msg = vae_last_error();
    if (rc != VAE_ERR_FORMAT)
        fail_msg("%s at %zu: vae_model_load_mem returned %d (%s), expected VAE_ERR_FORMAT; "
                 "last error \"%s\"",
                 what, at, rc, vae_strerror(rc), msg);
    if (m != NULL)
        fail_msg("%s at %zu: *out is not NULL after a failure", what, at);
    if (!msg[0] || strstr(msg, "vae_rng_uniform") || !strstr(msg, "vae_model_load_mem"))
        fail_msg("%s at %zu: message \"%s\" is not the loader's", what, at, msg);
    if (needle && !mentions(msg, needle))
        fail_msg("%s at %zu: message \"%s\" does not mention \"%s\"", what, at, msg, needle);
}

/* The n bytes at buf load, as a model equal to `want` bit for bit. */
static void expect_loads(const unsigned char *buf, size_t n, vae_model *want, const char *what)
{
    unsigned char *copy = malloc(n);
    assert_non_null(copy);
    memcpy(copy, buf, n);
    vae_model *m = NULL;
    int rc = vae_model_load_mem(&m, copy, n);
    free(copy);
    if (rc != VAE_OK)
        fail_msg("%s: vae_model_load_mem returned %d (%s): %s", what, rc, vae_strerror(rc),
                 vae_last_error());
    assert_same_model(want, m);
    vae_model_free(m);
}

/* The version-2 bytes of the model, and the version-1 file made of them. */
static unsigned char *both_versions(vae_model *m, size_t *n2, unsigned char **v1, size_t *n1)
{
    unsigned char *v2 = tu_model_bytes(m, n2);
    *v1 = to_v1(v2, *n2, n1);
    return v2;
}

static void test_every_byte_flipped(void **state)
{
    (void)state;
    vae_model *models[2] = {gaussian_model(), bernoulli_model()};
    for (int k = 0; k < 2; k++) {
        size_t sizes[3] = {0};
        unsigned char *files[3] = {NULL};
        files[2] = both_versions(models[k], &sizes[2], &files[1], &sizes[1]);
        for (int version = 1; version <= 2; version++) {
            const unsigned char *b = files[version];
            const size_t size = sizes[version];
            unsigned char *c = malloc(size);
            assert_non_null(c);
            char what[64];
            snprintf(what, sizeof what, "version %d, flipped byte", version);
            static const unsigned char masks[3] = {0x01, 0x80, 0xff};
            /* Version 1: magic, version, flags, length, payload and CRC.
             * Version 2: magic, version, and every byte of every chunk
             * (type, length, data, CRC): any change is detected. */
            for (size_t i = 0; i < size; i++)
                for (int j = 0; j < 3; j++) {
                    memcpy(c, b, size);
                    c[i] ^= masks[j];
                    if (version == 2 && i >= OFF_WRITER && i < OFF_WRITER + 4)
                        /* The writer's version only informs: the file is
                         * read as before. */
                        expect_loads(c, size, models[k], "version 2, writer's version changed");
                    else
                        expect_format(c, size, NULL, what, i);
                }
            /* Two bytes far apart at once. */
            snprintf(what, sizeof what, "version %d, two flipped bytes", version);
            for (size_t i = 0; i + 200 < size; i += 7) {
                memcpy(c, b, size);
                c[i] ^= 0x10;
                c[i + 200] ^= 0x04;
                if (version == 2 && i >= OFF_WRITER && i < OFF_WRITER + 4)
                    c[i] ^= 0x10;
                expect_format(c, size, NULL, what, i);
            }
            free(c);
            free(files[version]);
        }
    }
    vae_model_free(models[0]);
    vae_model_free(models[1]);
}

static void test_truncated_and_extended(void **state)
{
    (void)state;
    vae_model *m = gaussian_model();
    size_t sizes[3] = {0};
    unsigned char *files[3] = {NULL};
    files[2] = both_versions(m, &sizes[2], &files[1], &sizes[1]);
    for (int version = 1; version <= 2; version++) {
        const unsigned char *b = files[version];
        const size_t size = sizes[version];
        char what[64];
        /* Every prefix: too short for a header, or truncated (version 2:
         * the header, a chunk's header, its data or the DONE chunk
         * missing; version 1: the payload length says so). */
        snprintf(what, sizeof what, "version %d truncated to", version);
        const size_t short_below = version == 1 ? V1_HDR + 4 : HDR;
        for (size_t n = 0; n < size; n++)
            expect_format(b, n, n < short_below ? "too short" : "truncated", what, n);
        /* Trailing garbage, short and long. */
        snprintf(what, sizeof what, "version %d extended by", version);
        const size_t extra[5] = {1, 3, 4, 16, 1000};
        for (int k = 0; k < 5; k++) {
            unsigned char *c = malloc(size + extra[k]);
            assert_non_null(c);
            memcpy(c, b, size);
            for (size_t i = 0; i < extra[k]; i++)
                c[size + i] = (unsigned char)(i * 13);
            expect_format(c, size + extra[k],
                          version == 1 ? "payload bytes" : "after the DONE chunk", what,
                          extra[k]);
            free(c);
        }
        /* The same through files. */
        const size_t cut[7] = {0, 7, 16, 24, 64, size / 2, size - 1};
        for (int k = 0; k < 7; k++) {
            tu_write_file(tpath("cut.vae"), b, cut[k]);
            vae_model *f = (vae_model *)m;
            EXPECT_ERR(vae_model_load(&f, tpath("cut.vae")), VAE_ERR_FORMAT, "cut.vae",
                       cut[k] < short_below ? "too short" : "truncated");
            assert_null(f);
        }
        free(files[version]);
    }
    assert_int_equal(unlink(tpath("cut.vae")), 0);
    vae_model_free(m);
}

/* A crafted file: `edit` changes the payload of the Gaussian model's file
 * through at_po (and parm_resize), the same change in both versions; the
 * lengths and checksums are then made right again, so that only the content
 * is wrong, and the loader must refuse it with VAE_ERR_FORMAT and a message
 * that mentions `needle`: in version 1 at the version-1 offsets with the
 * file's CRC fixed, in version 2 inside the ARCH or PARM chunk with that
 * chunk's CRC fixed. */
typedef void (*edit_fn)(form *f);

static void expect_crafted(edit_fn edit, const char *needle, const char *what)
{
    vae_model *m = gaussian_model();
    size_t sizes[3] = {0};
    unsigned char *files[3] = {NULL};
    files[2] = both_versions(m, &sizes[2], &files[1], &sizes[1]);
    for (int version = 1; version <= 2; version++) {
        form f;
        make_form(&f, files[version], sizes[version], version);
        edit(&f);
        finalize(&f);
        if (version == 2) {
            /* Only ARCH and PARM changed: the header and DONE are the
             * library's. */
            assert_memory_equal(f.b, files[2], HDR);
            assert_memory_equal(f.b + done_at(&f), files[2] + sizes[2] - CK, CK);
        }
        char label[128];
        snprintf(label, sizeof label, "%s (version %d)", what, version);
        expect_format(f.b, f.n, needle, label, 0);
        free(f.b);
        free(files[version]);
    }
    vae_model_free(m);
}

#define P(po) at_po(f, (po))
#define CRAFT(name, body)                                                                   \
    static void name(form *f)                                                               \
    {                                                                                       \
        body;                                                                               \
    }

CRAFT(ed_likelihood, tu_put_le32(P(PO_LIK), 3))
CRAFT(ed_sigma0, tu_put_le_f32(P(PO_SIGMA), 0.0f))
CRAFT(ed_sigma_neg, tu_put_le_f32(P(PO_SIGMA), -1.0f))
CRAFT(ed_sigma_nan, tu_put_le_f32(P(PO_SIGMA), NAN))
CRAFT(ed_sigma_inf, tu_put_le_f32(P(PO_SIGMA), INFINITY))
CRAFT(ed_input0, tu_put_le64(P(PO_INPUT), 0))
CRAFT(ed_input_huge, tu_put_le64(P(PO_INPUT), (uint64_t)1 << 40))
CRAFT(ed_input7, tu_put_le64(P(PO_INPUT), 7))
CRAFT(ed_latent0, tu_put_le64(P(PO_LATENT), 0))
CRAFT(ed_latent2, tu_put_le64(P(PO_LATENT), 2))
CRAFT(ed_nlayers0, tu_put_le32(P(PO_NLAYERS), 0))
CRAFT(ed_nlayers_huge, tu_put_le32(P(PO_NLAYERS), 100000))
CRAFT(ed_nlayers5, tu_put_le32(P(PO_NLAYERS), 5))
CRAFT(ed_nlayers7, tu_put_le32(P(PO_NLAYERS), 7))
CRAFT(ed_nenc5, tu_put_le32(P(PO_NENC), 5))
CRAFT(ed_nenc6, tu_put_le32(P(PO_NENC), 6))
CRAFT(ed_nenc_wrap, tu_put_le32(P(PO_NENC), 0xfffffffeu))
CRAFT(ed_nenc_max, tu_put_le32(P(PO_NENC), 0xffffffffu))
CRAFT(ed_nenc1, tu_put_le32(P(PO_NENC), 1))
CRAFT(ed_kind77, tu_put_le32(P(rec(1)), 77))
CRAFT(ed_kind0, tu_put_le32(P(rec(4)), 0))
CRAFT(ed_act7, tu_put_le32(P(rec(0) + 4), 7))
CRAFT(ed_act_neg, tu_put_le32(P(rec(3) + 4), 0xffffffffu))
CRAFT(ed_nf3, tu_put_le32(P(rec(0) + 8), 3))
CRAFT(ed_nf1, tu_put_le32(P(rec(5) + 8), 1))
CRAFT(ed_nf_huge, tu_put_le32(P(rec(0) + 8), 1000))
CRAFT(ed_np_wrong, tu_put_le64(P(rec(0) + 16), 36))
CRAFT(ed_in0, tu_put_le64(P(rec(3) + 24), 0); tu_put_le64(P(rec(3) + 16), 4))
/* Encoder layer 1 takes 3 inputs (5 expected); its own count is consistent. */
CRAFT(ed_chain, tu_put_le64(P(rec(1) + 24), 3); tu_put_le64(P(rec(1) + 16), 3 * 4 + 4))
/* The last decoder layer gives 5 outputs for a 6-dimensional input. */
CRAFT(ed_last_out, tu_put_le64(P(rec(5) + 32), 5); tu_put_le64(P(rec(5) + 16), 5 * 5 + 5))
/* The same layer with 7 outputs: more parameters than the file holds. */
CRAFT(ed_last_out7, tu_put_le64(P(rec(5) + 32), 7); tu_put_le64(P(rec(5) + 16), 5 * 7 + 7))
CRAFT(ed_head_act, tu_put_le32(P(rec(2) + 4), VAE_ACT_TANH))
CRAFT(ed_head_in, tu_put_le64(P(rec(2) + 24), 5); tu_put_le64(P(rec(2) + 16), 5 * 6 + 6))
CRAFT(ed_head_kind, tu_put_le32(P(rec(2)), 9))
CRAFT(ed_count_plus, tu_put_le64(P(rec(G_LAYERS)), G_PARAMS + 1))
CRAFT(ed_count_minus, tu_put_le64(P(rec(G_LAYERS)), G_PARAMS - 1))
CRAFT(ed_nan17, tu_put_le_f32(P(rec(G_LAYERS) + 8 + 4 * 17), NAN))
CRAFT(ed_inf_last, tu_put_le_f32(P(rec(G_LAYERS) + 8 + 4 * (G_PARAMS - 1)), -INFINITY))
CRAFT(ed_extra_param, parm_resize(f, 4); tu_put_le_f32(P(f->pl - 4), 0.5f))
CRAFT(ed_one_param_less, parm_resize(f, -4))
CRAFT(ed_no_params, parm_resize(f, -(long)(4 * G_PARAMS)))

static void test_crafted_inconsistent(void **state)
{
    (void)state;
    /* Each file has valid checksums and lengths: only the content is wrong. */
    expect_crafted(ed_likelihood, "likelihood 3", "likelihood");
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
    expect_crafted(ed_no_params, "announces", "the count and no values");
}

/* The header of version 1: what only it has (flags, the payload length,
 * the CRC over the whole file) and its version word. */
static void test_v1_header(void **state)
{
    (void)state;
    vae_model *m = gaussian_model();
    size_t n2 = 0, n = 0;
    unsigned char *v1 = NULL, *v2 = both_versions(m, &n2, &v1, &n);
    unsigned char *c = malloc(n + 64);
    assert_non_null(c);
    expect_loads(v1, n, m, "version 1 as made");

    /* Flags: none are defined. */
    const uint32_t flags[3] = {1, 0x100, 0x80000000u};
    for (int k = 0; k < 3; k++) {
        memcpy(c, v1, n);
        tu_put_le32(c + V1_FLAGS, flags[k]);
        tu_put_le32(c + n - 4, tu_crc32(c, n - 4));
        expect_format(c, n, "flags", "version 1 flags", flags[k]);
    }
    /* A payload length other than the bytes between header and CRC. */
    const uint64_t lens[5] = {n - 29, n - 27, 0, (uint64_t)1 << 40, UINT64_MAX};
    for (int k = 0; k < 5; k++) {
        memcpy(c, v1, n);
        tu_put_le64(c + V1_LEN, lens[k]);
        tu_put_le32(c + n - 4, tu_crc32(c, n - 4));
        expect_format(c, n, "payload bytes", "version 1 payload length", (size_t)k);
    }
    /* The CRC: wrong in itself, or right for other bytes. */
    for (size_t i = n - 4; i < n; i++) {
        memcpy(c, v1, n);
        c[i] ^= 0x20;
        expect_format(c, n, "checksum", "version 1 CRC byte", i);
    }
    memcpy(c, v1, n);
    tu_put_le_f32(c + V1_HDR + rec(G_LAYERS) + 8, 0.25f); /* a parameter, CRC left */
    expect_format(c, n, "checksum", "version 1 parameter changed", 0);
    /* Version words other than 1 on a version-1 file. */
    memcpy(c, v1, n);
    tu_put_le32(c + V1_VERSION, 0);
    expect_format(c, n, "version 0", "version 1 labelled 0", 0);
    memcpy(c, v1, n);
    tu_put_le32(c + V1_VERSION, 3);
    expect_format(c, n, "version 3", "version 1 labelled 3", 0);
    /* Labelled 2, it is read as chunks, and is none. */
    memcpy(c, v1, n);
    tu_put_le32(c + V1_VERSION, 2);
    expect_format(c, n, NULL, "version 1 labelled 2", 0);
    /* A version-1 header alone, or with a CRC and no payload. */
    expect_format(v1, V1_HDR, "too short", "version 1 header only", 0);
    memcpy(c, v1, V1_HDR);
    tu_put_le64(c + V1_LEN, 0);
    tu_put_le32(c + V1_HDR, tu_crc32(c, V1_HDR));
    expect_format(c, V1_HDR + 4, "truncated", "version 1 without payload", 0);
    free(c);
    free(v1);
    free(v2);
    vae_model_free(m);
}

/* The header of version 2: the format version is checked, the writer's
 * version is not (it only informs), and a refusal of another format version
 * names the writer's version. */
static void test_v2_header(void **state)
{
    (void)state;
    vae_model *m = gaussian_model();
    size_t n = 0;
    unsigned char *b = tu_model_bytes(m, &n);
    unsigned char *c = malloc(n);
    assert_non_null(c);

    memcpy(c, b, n);
    tu_put_le32(c + OFF_FORMAT, 3);
    tu_put_le32(c + OFF_WRITER, 20304);
    expect_format(c, n, "format version 3", "version 3", 0);
    expect_format(c, n, "2.3.4", "version 3, written by 2.3.4", 0);
    /* The header alone is enough to say so. */
    expect_format(c, HDR, "2.3.4", "version 3, header only", 0);
    tu_put_le32(c + OFF_FORMAT, 0);
    expect_format(c, n, "format version 0", "version 0", 0);
    tu_put_le32(c + OFF_FORMAT, 0xffffffffu);
    expect_format(c, n, "format version 4294967295", "version 2^32 - 1", 0);
    /* A version-2 file labelled version 1: its writer's version is then
     * the flags, and not zero. */
    memcpy(c, b, n);
    tu_put_le32(c + OFF_FORMAT, 1);
    expect_format(c, n, NULL, "version 2 labelled 1", 0);

    /* Any writer's version, older or newer, with chunks this library knows:
     * the same model. */
    const uint32_t writers[4] = {0, 10000, 20304, 0xffffffffu};
    for (int k = 0; k < 4; k++) {
        memcpy(c, b, n);
        tu_put_le32(c + OFF_WRITER, writers[k]);
        expect_loads(c, n, m, "writer's version changed");
    }
    /* The magic, byte by byte. */
    for (size_t i = 0; i < 8; i++) {
        memcpy(c, b, n);
        c[i] ^= 0x40;
        expect_format(c, n, "magic", "magic byte", i);
    }
    /* The header and nothing after it, or only part of a chunk header. */
    expect_format(b, HDR, "truncated", "header only", HDR);
    expect_format(b, HDR + 11, "truncated", "part of a chunk header", HDR + 11);
    free(c);
    free(b);
    vae_model_free(m);
}

/* ---- chunks (version 2) ------------------------------------------------------- */

/* The pieces of the Gaussian model's file, for building variants of it. */
typedef struct parts {
    vae_model *m;
    unsigned char *b;
    size_t n;
    const unsigned char *arch, *parm;
    size_t al, pl;
} parts;

static void get_parts(parts *s)
{
    s->m = gaussian_model();
    s->b = tu_model_bytes(s->m, &s->n);
    s->arch = chunk_data(s->b, s->n, "ARCH", &s->al);
    s->parm = chunk_data(s->b, s->n, "PARM", &s->pl);
}

static void free_parts(parts *s)
{
    free(s->b);
    vae_model_free(s->m);
}

#define ARCH_PIECE(s) {"ARCH", (s).arch, (s).al}
#define PARM_PIECE(s) {"PARM", (s).parm, (s).pl}
#define DONE_PIECE {"DONE", NULL, 0}
#define NPIECES(a) (sizeof(a) / sizeof((a)[0]))

/* Builds the file of the pieces and expects it to load as the model. */
static void expect_pieces_load(const parts *s, const piece *ps, size_t np, const char *what)
{
    size_t n = 0;
    unsigned char *b = assemble(s->b, ps, np, &n);
    expect_loads(b, n, s->m, what);
    free(b);
}

static void expect_pieces_fail(const parts *s, const piece *ps, size_t np, const char *needle,
                               const char *what)
{
    size_t n = 0;
    unsigned char *b = assemble(s->b, ps, np, &n);
    expect_format(b, n, needle, what, 0);
    free(b);
}

/* Unknown ancillary chunks (first letter lowercase) are skipped wherever
 * they are; ARCH and PARM may come in either order. */
static void test_chunks_ancillary(void **state)
{
    (void)state;
    parts s;
    get_parts(&s);
    static const unsigned char junk[37] = "some bytes a later writer may add..";
    const piece same[] = {ARCH_PIECE(s), PARM_PIECE(s), DONE_PIECE};
    size_t n = 0;
    unsigned char *b = assemble(s.b, same, NPIECES(same), &n);
    assert_int_equal(n, s.n);
    assert_memory_equal(b, s.b, n); /* the pieces put back are the library's file */
    free(b);

    const piece before_done[] = {ARCH_PIECE(s), PARM_PIECE(s), {"zzzz", junk, sizeof junk},
                                 DONE_PIECE};
    expect_pieces_load(&s, before_done, NPIECES(before_done), "zzzz before DONE");
    const piece between[] = {ARCH_PIECE(s), {"zzzz", junk, sizeof junk}, PARM_PIECE(s),
                             DONE_PIECE};
    expect_pieces_load(&s, between, NPIECES(between), "zzzz between ARCH and PARM");
    const piece first[] = {{"zzzz", junk, 5}, ARCH_PIECE(s), PARM_PIECE(s), DONE_PIECE};
    expect_pieces_load(&s, first, NPIECES(first), "zzzz first");
    /* Empty ones, several, one with the name of a known critical chunk in
     * lowercase, and "zZZZ": only the first letter decides. */
    const piece many[] = {{"zzzz", NULL, 0},   ARCH_PIECE(s), {"arch", junk, 3},
                          {"zZZZ", junk, 17},  PARM_PIECE(s), {"qqqq", junk, sizeof junk},
                          {"zzzz", junk, 1},   DONE_PIECE};
    expect_pieces_load(&s, many, NPIECES(many), "several ancillary chunks");
    /* The chunk a checkpoint keeps its metadata in is ancillary too. */
    const piece meta[] = {ARCH_PIECE(s), PARM_PIECE(s), {"meta", "\0\0\0\0", 4}, DONE_PIECE};
    expect_pieces_load(&s, meta, NPIECES(meta), "an empty meta chunk");
    /* PARM first. */
    const piece swapped[] = {PARM_PIECE(s), ARCH_PIECE(s), DONE_PIECE};
    expect_pieces_load(&s, swapped, NPIECES(swapped), "PARM before ARCH");

    /* A model loaded from such a file saves as the library's file again,
     * without the chunks it skipped. */
    b = assemble(s.b, many, NPIECES(many), &n);
    vae_model *m = NULL;
    OK(vae_model_load_mem(&m, b, n));
    size_t again = 0;
    unsigned char *d = tu_model_bytes(m, &again);
    assert_int_equal(again, s.n);
    assert_memory_equal(d, s.b, s.n);
    free(d);
    free(b);
    vae_model_free(m);

    /* An ancillary chunk is still checked: its CRC, and its length. */
    const size_t at = HDR + CK + s.al + CK + s.pl; /* the zzzz chunk of before_done */
    b = assemble(s.b, before_done, NPIECES(before_done), &n);
    b[at + 12 + 10] ^= 0x08;
    expect_format(b, n, "checksum", "zzzz damaged", at);
    b[at + 12 + 10] ^= 0x08;
    tu_put_le64(b + at + 4, n); /* more than the file holds */
    expect_format(b, n, "announces", "zzzz longer than the file", at);
    free(b);
    free_parts(&s);
}

static void test_chunks_refused(void **state)
{
    (void)state;
    parts s;
    get_parts(&s);
    static const unsigned char junk[9] = "12345678";
    char mine[32];
    snprintf(mine, sizeof mine, "%d.%d.%d", VAE_VERSION_MAJOR, VAE_VERSION_MINOR,
             VAE_VERSION_PATCH);

    /* Unknown critical chunks (first letter uppercase): refused, naming the
     * chunk and the version of the library that wrote the file. */
    const piece crit[] = {ARCH_PIECE(s), PARM_PIECE(s), {"ZZZZ", junk, sizeof junk}, DONE_PIECE};
    expect_pieces_fail(&s, crit, NPIECES(crit), "ZZZZ", "ZZZZ");
    expect_pieces_fail(&s, crit, NPIECES(crit), "critical", "ZZZZ");
    expect_pieces_fail(&s, crit, NPIECES(crit), mine, "ZZZZ, this writer");
    size_t n = 0;
    unsigned char *b = assemble(s.b, crit, NPIECES(crit), &n);
    tu_put_le32(b + OFF_WRITER, 20304);
    expect_format(b, n, "ZZZZ", "ZZZZ of 2.3.4", 0);
    expect_format(b, n, "2.3.4", "ZZZZ of 2.3.4", 0);
    free(b);
    const piece crit2[] = {{"Zzzz", NULL, 0}, ARCH_PIECE(s), PARM_PIECE(s), DONE_PIECE};
    expect_pieces_fail(&s, crit2, NPIECES(crit2), "Zzzz", "empty Zzzz first");
    /* A known chunk twice, critical or ancillary. */
    const piece arch2[] = {ARCH_PIECE(s), PARM_PIECE(s), ARCH_PIECE(s), DONE_PIECE};
    expect_pieces_fail(&s, arch2, NPIECES(arch2), "twice", "ARCH twice");
    expect_pieces_fail(&s, arch2, NPIECES(arch2), "ARCH", "ARCH twice");
    const piece parm2[] = {ARCH_PIECE(s), PARM_PIECE(s), PARM_PIECE(s), DONE_PIECE};
    expect_pieces_fail(&s, parm2, NPIECES(parm2), "twice", "PARM twice");
    const piece meta2[] = {ARCH_PIECE(s), {"meta", "\0\0\0\0", 4}, PARM_PIECE(s),
                           {"meta", "\0\0\0\0", 4}, DONE_PIECE};
    expect_pieces_fail(&s, meta2, NPIECES(meta2), "twice", "meta twice");

    /* Types that are not four letters. */
    static const char *const bad[] = {"ZZ1Z", "zz z", "@ZZZ", "[ZZZ", "`zzz", "{zzz",
                                      "zzz\x7f", "\xc1zzz", "zz\0z"};
    for (size_t k = 0; k < NPIECES(bad); k++) {
        const piece ps[] = {ARCH_PIECE(s), {bad[k], junk, 4}, PARM_PIECE(s), DONE_PIECE};
        expect_pieces_fail(&s, ps, NPIECES(ps), "invalid type", "a type not of letters");
    }

    /* ARCH or PARM missing. */
    const piece no_arch[] = {PARM_PIECE(s), DONE_PIECE};
    expect_pieces_fail(&s, no_arch, NPIECES(no_arch), "no ARCH", "no ARCH");
    const piece no_parm[] = {ARCH_PIECE(s), DONE_PIECE};
    expect_pieces_fail(&s, no_parm, NPIECES(no_parm), "no PARM", "no PARM");
    const piece nothing[] = {DONE_PIECE};
    expect_pieces_fail(&s, nothing, NPIECES(nothing), "no ARCH", "only DONE");
    const piece hidden[] = {{"aRCH", s.arch, s.al}, PARM_PIECE(s), DONE_PIECE};
    expect_pieces_fail(&s, hidden, NPIECES(hidden), "no ARCH", "ARCH as ancillary aRCH");

    /* DONE: empty, last, present. */
    const piece done1[] = {ARCH_PIECE(s), PARM_PIECE(s), {"DONE", junk, 1}};
    expect_pieces_fail(&s, done1, NPIECES(done1), "DONE", "DONE with one byte");
    const piece done8[] = {ARCH_PIECE(s), PARM_PIECE(s), {"DONE", junk, 8}};
    expect_pieces_fail(&s, done8, NPIECES(done8), "DONE", "DONE with 8 bytes");
    const piece after[] = {ARCH_PIECE(s), PARM_PIECE(s), DONE_PIECE, {NULL, junk, 1}};
    expect_pieces_fail(&s, after, NPIECES(after), "after the DONE", "a byte after DONE");
    const piece chunk_after[] = {ARCH_PIECE(s), PARM_PIECE(s), DONE_PIECE,
                                 {"zzzz", junk, sizeof junk}};
    expect_pieces_fail(&s, chunk_after, NPIECES(chunk_after), "after the DONE",
                       "a chunk after DONE");
    const piece done_twice[] = {ARCH_PIECE(s), PARM_PIECE(s), DONE_PIECE, DONE_PIECE};
    expect_pieces_fail(&s, done_twice, NPIECES(done_twice), "after the DONE", "DONE twice");
    const piece early[] = {ARCH_PIECE(s), DONE_PIECE, PARM_PIECE(s)};
    expect_pieces_fail(&s, early, NPIECES(early), "after the DONE", "DONE before PARM");
    const piece no_done[] = {ARCH_PIECE(s), PARM_PIECE(s)};
    expect_pieces_fail(&s, no_done, NPIECES(no_done), "truncated", "no DONE");
    /* ... which is the library's file cut right before its DONE chunk. */
    expect_format(s.b, s.n - CK, "truncated", "cut before DONE", s.n - CK);
    const piece no_done_anc[] = {ARCH_PIECE(s), PARM_PIECE(s), {"zzzz", junk, 2}};
    expect_pieces_fail(&s, no_done_anc, NPIECES(no_done_anc), "truncated",
                       "an ancillary chunk last");

    /* ARCH with bytes after its last record, or one record's field short;
     * PARM with bytes after the last value. */
    unsigned char *arch = malloc(s.al + 16);
    assert_non_null(arch);
    memcpy(arch, s.arch, s.al);
    memset(arch + s.al, 0, 16);
    static const size_t extra[4] = {1, 4, 8, 16};
    for (int k = 0; k < 4; k++) {
        const piece ps[] = {{"ARCH", arch, s.al + extra[k]}, PARM_PIECE(s), DONE_PIECE};
        expect_pieces_fail(&s, ps, NPIECES(ps), "after the last layer record",
                           "ARCH with trailing bytes");
    }
    const piece arch_short[] = {{"ARCH", arch, s.al - 8}, PARM_PIECE(s), DONE_PIECE};
    expect_pieces_fail(&s, arch_short, NPIECES(arch_short), "truncated or bad record of layer 5",
                       "ARCH 8 bytes short");
    free(arch);
    unsigned char *parm = calloc(s.pl + 4, 1);
    assert_non_null(parm);
    memcpy(parm, s.parm, s.pl);
    const piece parm_long[] = {ARCH_PIECE(s), {"PARM", parm, s.pl + 4}, DONE_PIECE};
    expect_pieces_fail(&s, parm_long, NPIECES(parm_long), "parameters stored",
                       "PARM with 4 bytes more");
    const piece parm_empty[] = {ARCH_PIECE(s), {"PARM", parm, 0}, DONE_PIECE};
    expect_pieces_fail(&s, parm_empty, NPIECES(parm_empty), "announces", "empty PARM");
    free(parm);
    free_parts(&s);
}

/* A bit flipped in any chunk's length, data or CRC, its CRC left as it was:
 * a checksum mismatch, or a length the file cannot hold. */
static void test_chunk_bits_flipped(void **state)
{
    (void)state;
    vae_model *models[2] = {gaussian_model(), conv_model()};
    for (int k = 0; k < 2; k++) {
        size_t n = 0;
        unsigned char *b = tu_model_bytes(models[k], &n);
        chunk c[4];
        assert_int_equal(chunks_of(b, n, c, 4), 3);
        unsigned char *d = malloc(n);
        assert_non_null(d);
        for (int j = 0; j < 3; j++) {
            char what[64];
            snprintf(what, sizeof what, "%s: bit flipped in the length", c[j].type);
            for (size_t bit = 0; bit < 64; bit++) {
                memcpy(d, b, n);
                d[c[j].at + 4 + bit / 8] ^= (unsigned char)(1u << (bit % 8));
                expect_format(d, n, "checksum|announces", what, bit);
            }
            snprintf(what, sizeof what, "%s: bit flipped in the data or CRC", c[j].type);
            for (size_t bit = 0; bit < 8 * (c[j].len + 4); bit++) {
                memcpy(d, b, n);
                d[c[j].at + 12 + bit / 8] ^= (unsigned char)(1u << (bit % 8));
                expect_format(d, n, "checksum", what, bit);
            }
        }
        free(d);
        free(b);
    }
    vae_model_free(models[0]);
    vae_model_free(models[1]);
}

/* A checkpoint is a model file with more chunks: vae_model_load reads its
 * model, the parameters bit for bit those of the trainer's model. */
static void test_checkpoint_as_model(void **state)
{
    (void)state;
    vae_model *m = gaussian_model();
    vae_elbo *e = NULL;
    vae_optimizer *opt = NULL;
    vae_context *ctx = NULL;
    vae_trainer *t = NULL;
    OK(vae_elbo_create(&e));
    OK(vae_optimizer_create(&opt, VAE_OPTIMIZER_ADAM));
    OK(vae_context_create(&ctx));
    OK(vae_trainer_create(&t, m, e, opt, ctx, 21));
    enum { N = 8 };
    float x[N * GD];
    uint64_t seed = 5;
    for (size_t i = 0; i < N * GD; i++)
        x[i] = (float)((double)(mix(&seed) >> 11) * 0x1.0p-53);
    size_t np = 0;
    float *before = malloc(G_PARAMS * sizeof *before);
    assert_non_null(before);
    memcpy(before, vae_model_params(m, &np), G_PARAMS * sizeof *before);
    OK(vae_trainer_step(t, x, N, NULL));
    OK(vae_trainer_step(t, x, N, NULL));
    /* The steps changed the model: the comparison below is of the state
     * after them. */
    assert_true(memcmp(before, vae_model_params(m, NULL), G_PARAMS * sizeof *before) != 0);
    free(before);

    size_t n = 0, again = 0;
    OK(vae_trainer_save_mem(t, NULL, 0, &n));
    unsigned char *ck = malloc(n);
    assert_non_null(ck);
    OK(vae_trainer_save_mem(t, ck, n, &again));
    assert_int_equal(again, n);
    /* More chunks than a model file, and its ARCH and PARM are the model
     * file's. */
    chunk c[16];
    const size_t k = chunks_of(ck, n, c, 16);
    assert_true(k > 3);
    size_t mn = 0;
    unsigned char *mb = tu_model_bytes(m, &mn);
    assert_true(n > mn);
    size_t al = 0, pl = 0, cal = 0, cpl = 0;
    const unsigned char *a = chunk_data(mb, mn, "ARCH", &al),
                        *p = chunk_data(mb, mn, "PARM", &pl);
    const unsigned char *ca = chunk_data(ck, n, "ARCH", &cal),
                        *cp = chunk_data(ck, n, "PARM", &cpl);
    assert_int_equal(cal, al);
    assert_int_equal(cpl, pl);
    assert_memory_equal(ca, a, al);
    assert_memory_equal(cp, p, pl);
    assert_int_equal(tu_get_le32(ck + OFF_FORMAT), 2);

    vae_model *loaded = NULL;
    OK(vae_model_load_mem(&loaded, ck, n));
    assert_same_model(m, loaded);
    vae_model_free(loaded);
    /* Through a file too. */
    OK(vae_trainer_save(t, tpath("ck.vae")));
    OK(vae_model_load(&loaded, tpath("ck.vae")));
    assert_same_model(m, loaded);
    vae_model_free(loaded);
    assert_int_equal(unlink(tpath("ck.vae")), 0);
    /* Cut before its DONE chunk, it is refused like a model file. */
    expect_format(ck, n - CK, "truncated", "checkpoint without DONE", n - CK);

    free(mb);
    free(ck);
    vae_trainer_free(t);
    vae_context_free(ctx);
    vae_optimizer_free(opt);
    vae_elbo_free(e);
    vae_model_free(m);
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
    size_t sizes[3] = {0};
    unsigned char *files[3] = {NULL};
    files[2] = both_versions(m, &sizes[2], &files[1], &sizes[1]);
    const uint64_t wide = (uint64_t)1 << 22, lat = (uint64_t)1 << 19;
    for (int version = 1; version <= 2; version++) {
        form f;
        char what[128];
        make_form(&f, files[version], sizes[version], version);
        assert_int_equal(tu_get_le32(at_po(&f, PO_NLAYERS)), 3);
        free(f.b);

        /* The encoder layer widened to 2^22 outputs (21 million
         * parameters, consistent with its sizes) and the head to match. */
        make_form(&f, files[version], sizes[version], version);
        tu_put_le64(at_po(&f, rec(0) + 32), wide);
        tu_put_le64(at_po(&f, rec(0) + 16), 4 * wide + wide);
        tu_put_le64(at_po(&f, rec(1) + 24), wide);
        tu_put_le64(at_po(&f, rec(1) + 16), wide * 2 + 2);
        finalize(&f);
        snprintf(what, sizeof what, "version %d: encoder layer of 2^22 outputs", version);
        expect_cheap_failure(f.b, f.n, "parameters", what);
        free(f.b);

        /* The same layer with its record's own count left small: the sizes,
         * not the count, decide what constructing the layer allocates. */
        make_form(&f, files[version], sizes[version], version);
        tu_put_le64(at_po(&f, rec(0) + 32), wide);
        finalize(&f);
        snprintf(what, sizeof what, "version %d: 2^22 outputs, count unchanged", version);
        expect_cheap_failure(f.b, f.n, "claims 40 parameters", what);
        free(f.b);

        /* A latent code of 2^19: the head the loader builds itself would
         * have 2^23 parameters, and the decoder's first layer 2^21. */
        make_form(&f, files[version], sizes[version], version);
        tu_put_le64(at_po(&f, PO_LATENT), lat);
        tu_put_le64(at_po(&f, rec(1) + 32), 2 * lat);
        tu_put_le64(at_po(&f, rec(1) + 16), 8 * 2 * lat + 2 * lat);
        tu_put_le64(at_po(&f, rec(2) + 24), lat);
        tu_put_le64(at_po(&f, rec(2) + 16), lat * 4 + 4);
        finalize(&f);
        snprintf(what, sizeof what, "version %d: latent code of 2^19", version);
        expect_cheap_failure(f.b, f.n, "parameters", what);
        free(f.b);

        /* The same, with a head record that lies about its own size. */
        make_form(&f, files[version], sizes[version], version);
        tu_put_le64(at_po(&f, PO_LATENT), lat);
        tu_put_le64(at_po(&f, rec(2) + 24), lat);
        tu_put_le64(at_po(&f, rec(2) + 16), lat * 4 + 4);
        finalize(&f);
        snprintf(what, sizeof what, "version %d: latent 2^19, head record unchanged", version);
        expect_cheap_failure(f.b, f.n, "head", what);
        free(f.b);
        free(files[version]);
    }
    vae_model_free(m);
}

/* Where byte i of a form is: 'h' header (after the magic), 't' a chunk's
 * type, 'l' a chunk's or the payload's length, 'p' payload (*po set),
 * 'c' a checksum. */
static char byte_class(const form *f, size_t i, size_t *po)
{
    if (f->version == 1) {
        if (i < V1_LEN)
            return 'h';
        if (i < V1_HDR)
            return 'l';
        if (i >= f->n - 4)
            return 'c';
        *po = i - V1_HDR;
        return 'p';
    }
    if (i < HDR)
        return 'h';
    const size_t at[3] = {HDR, parm_at(f), done_at(f)};
    const size_t len[3] = {f->arch, f->pl - f->arch, 0}, first[3] = {0, f->arch, 0};
    for (int k = 0; k < 3; k++) {
        if (i < at[k] || i >= at[k] + CK + len[k])
            continue;
        const size_t r = i - at[k];
        if (r < 4)
            return 't';
        if (r < 12)
            return 'l';
        if (r >= 12 + len[k])
            return 'c';
        *po = first[k] + r - 12;
        return 'p';
    }
    fail_msg("byte %zu is in no chunk", i);
    return 0;
}

/* Every byte changed in turn, with the checksums recomputed: the structure
 * checks alone must catch what they can, never crash, and whatever loads
 * must be exactly the model the bytes describe (saving it gives the bytes
 * back, apart from the reserved words, which the writer sets to zero, and
 * the writer's version, which it sets to its own). Lengths and checksums are
 * left to test_every_byte_flipped. */
static void structure_fuzz(vae_model *model, int version)
{
    size_t n2 = 0, n1 = 0;
    unsigned char *v1 = NULL, *v2 = both_versions(model, &n2, &v1, &n1);
    form base;
    make_form(&base, version == 1 ? v1 : v2, version == 1 ? n1 : n2, version);
    const size_t n_layers = tu_get_le32(at_po(&base, PO_NLAYERS)),
                 n_enc = tu_get_le32(at_po(&base, PO_NENC));
    assert_int_equal(base.arch, rec(n_layers)); /* dense layers only */
    size_t loaded = 0, refused_types = 0;
    for (size_t i = 8; i < base.n; i++) {
        size_t po = (size_t)-1;
        const char cls = byte_class(&base, i, &po);
        if (cls == 'c' || (cls == 'l' && version == 2))
            continue;
        static const unsigned char masks[2] = {0x01, 0xff};
        for (int j = 0; j < 2; j++) {
            form c = base;
            c.b = malloc(base.n + 64);
            assert_non_null(c.b);
            memcpy(c.b, base.b, base.n);
            c.b[i] ^= masks[j];
            fix_crcs(&c);
            vae_model *m = NULL;
            int rc = vae_model_load_mem(&m, c.b, c.n);
            const int writer = version == 2 && i >= OFF_WRITER && i < OFF_WRITER + 4;
            if (cls == 't' || cls == 'l' || (cls == 'h' && !writer)) {
                /* The format version, the flags, the payload length, a
                 * chunk's type: always. */
                if (rc != VAE_ERR_FORMAT)
                    fail_msg("version %d, byte %zu ^ 0x%02x (%c): status %d, expected "
                             "VAE_ERR_FORMAT",
                             version, i, masks[j], cls, rc);
                refused_types += cls == 't';
            }
            if (rc == VAE_ERR_FORMAT) {
                assert_null(m);
                assert_true(vae_last_error()[0] != '\0');
                free(c.b);
                continue;
            }
            if (rc != VAE_OK)
                fail_msg("version %d, byte %zu ^ 0x%02x: status %d (%s): %s", version, i,
                         masks[j], rc, vae_strerror(rc), vae_last_error());
            loaded++;
            size_t nd = 0;
            unsigned char *d = tu_model_bytes(m, &nd);
            if (version == 1) {
                size_t nd1 = 0;
                unsigned char *d1 = to_v1(d, nd, &nd1);
                free(d);
                d = d1;
                nd = nd1;
            }
            assert_int_equal(nd, base.n);
            /* Words the reader may ignore: the writer's version, the
             * reserved ones, and sigma of a Bernoulli model (written back
             * as 1). */
            const int bern = vae_model_likelihood(m) == VAE_LIKELIHOOD_BERNOULLI;
            int ignorable = writer;
            if (cls == 'p') {
                ignorable |= (po >= PO_RES1 && po < PO_RES1 + 4) ||
                             (po >= PO_RES2 && po < PO_RES2 + 4) ||
                             (bern && po >= PO_SIGMA && po < PO_SIGMA + 4);
                for (size_t l = 0; l < n_layers; l++)
                    ignorable |= po >= rec(l) + 12 && po < rec(l) + 16;
            }
            if (ignorable)
                memcpy(c.b, base.b, base.n); /* as if nothing had changed */
            if (bern) {
                tu_put_le_f32(at_po(&c, PO_SIGMA), 1.0f);
                fix_crcs(&c);
            }
            if (!ignorable) {
                /* What may change undetected: the likelihood, sigma, an
                 * activation other than the head's, a parameter. */
                int value = cls == 'p' && (po < PO_LIK + 4 ||
                                           (po >= PO_SIGMA && po < PO_SIGMA + 4) ||
                                           po >= rec(n_layers) + 8);
                for (size_t l = 0; l < n_layers; l++)
                    value |= cls == 'p' && l != n_enc && po >= rec(l) + 4 && po < rec(l) + 8;
                if (!value)
                    fail_msg("version %d, byte %zu ^ 0x%02x: a change outside any value loaded",
                             version, i, masks[j]);
            }
            if (memcmp(d, c.b, nd) != 0) {
                size_t at = 0;
                while (d[at] == c.b[at])
                    at++;
                fail_msg("version %d, byte %zu ^ 0x%02x: saving the loaded model gives byte "
                         "%zu = 0x%02x, expected 0x%02x",
                         version, i, masks[j], at, d[at], c.b[at]);
            }
            free(d);
            free(c.b);
            vae_model_free(m);
        }
    }
    /* Most parameter bytes change a value and still load; every type byte
     * was refused. */
    size_t np = 0;
    (void)vae_model_params(model, &np);
    assert_true(loaded >= 4 * np);
    assert_int_equal(refused_types, version == 2 ? 3 * 4 * 2 : 0);
    free(base.b);
    free(v1);
    free(v2);
}

static void test_structure_fuzz(void **state)
{
    (void)state;
    vae_model *models[2] = {gaussian_model(), bernoulli_model()};
    for (int k = 0; k < 2; k++) {
        structure_fuzz(models[k], 1);
        structure_fuzz(models[k], 2);
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
    tu_write_file(tpath("atomic/model.vae"), junk, sizeof junk);
    ASSERT_DIR_HOLDS(tpath("atomic"), "model.vae");

    OK(vae_model_save(m, tpath("atomic/model.vae")));
    size_t size = 0, fsize = 0;
    unsigned char *mem = tu_model_bytes(m, &size);
    unsigned char *file = tu_read_file(tpath("atomic/model.vae"), &fsize);
    assert_int_equal(fsize, size);
    assert_memory_equal(file, mem, size);
    free(file);
    /* Nothing but the target left in the directory. */
    ASSERT_DIR_HOLDS(tpath("atomic"), "model.vae");

    /* Saving another model over it replaces it completely. */
    vae_model *b = bernoulli_model();
    OK(vae_model_save(b, tpath("atomic/model.vae")));
    size_t bsize = 0;
    unsigned char *bmem = tu_model_bytes(b, &bsize);
    file = tu_read_file(tpath("atomic/model.vae"), &fsize);
    assert_int_equal(fsize, bsize);
    assert_memory_equal(file, bmem, bsize);
    free(file);
    ASSERT_DIR_HOLDS(tpath("atomic"), "model.vae");

    /* A directory that does not exist: an I/O error, nothing created. */
    EXPECT_ERR(vae_model_save(m, tpath("atomic/no-such-dir/model.vae")), VAE_ERR_IO,
               "vae_model_save", "no-such-dir");
    ASSERT_DIR_HOLDS(tpath("atomic"), "model.vae");

    /* A target that is a directory: the rename fails, the temporary file is
     * removed, the directory stays. */
    assert_int_equal(mkdir(tpath("atomic/adir"), 0755), 0);
    EXPECT_ERR(vae_model_save(m, tpath("atomic/adir")), VAE_ERR_IO, "vae_model_save", "adir");
    ASSERT_DIR_HOLDS(tpath("atomic"), "adir model.vae");
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
    file = tu_read_file(tpath("atomic/model.vae"), &fsize);
    assert_int_equal(fsize, bsize);
    assert_memory_equal(file, bmem, bsize);
    free(file);
    ASSERT_DIR_HOLDS(tpath("atomic"), "model.vae");
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

/* Saving refuses a model with a parameter that is not finite: nothing is
 * written, the file already at the path (if any) stays as it was, and no
 * file is created when there was none. */
static void test_save_refuses_non_finite(void **state)
{
    (void)state;
    assert_int_equal(mkdir(tpath("nonfinite"), 0755), 0);
    char path[512]; /* tpath's buffers are reused */
    snprintf(path, sizeof path, "%s", tpath("nonfinite/model.vae"));
    vae_model *m = gaussian_model();
    size_t good_size = 0;
    unsigned char *good = tu_model_bytes(m, &good_size);
    size_t n = 0;
    float *p = vae_model_params(m, &n);
    assert_int_equal(n, G_PARAMS);
    const float keep17 = p[17], keep_last = p[n - 1], keep0 = p[0];

    /* No file at the path: none is created. */
    p[17] = NAN;
    EXPECT_ERR(vae_model_save(m, path), VAE_ERR_NUMERIC, "vae_model_save", "parameter 17 ");
    ASSERT_DIR_HOLDS(tpath("nonfinite"), "");
    struct stat st;
    assert_int_equal(stat(path, &st), -1);

    /* In memory: the size query still answers, a buffer gets nothing. */
    size_t size = 0;
    OK(vae_model_save_mem(m, NULL, 0, &size));
    assert_int_equal(size, good_size);
    unsigned char *buf = malloc(good_size);
    assert_non_null(buf);
    memset(buf, 0xa5, good_size);
    size = 0;
    EXPECT_ERR(vae_model_save_mem(m, buf, good_size, &size), VAE_ERR_NUMERIC,
               "vae_model_save_mem", "parameter 17 ");
    for (size_t i = 0; i < good_size; i++)
        if (buf[i] != 0xa5)
            fail_msg("byte %zu of the buffer written by a refused save", i);

    /* Finite again: saved, and the same bytes as before. */
    p[17] = keep17;
    OK(vae_model_save(m, path));
    size_t fsize = 0;
    unsigned char *file = tu_read_file(path, &fsize);
    assert_int_equal(fsize, good_size);
    assert_memory_equal(file, good, good_size);
    free(file);

    /* A file at the path: it stays byte for byte. +inf in the last
     * parameter, -inf in the first, NaN of either sign. */
    static const char *const needles[4] = {"parameter 165 ", "parameter 0 ", "parameter 40 ",
                                           "parameter 41 "};
    for (int k = 0; k < 4; k++) {
        size_t idx = k == 0 ? n - 1 : k == 1 ? 0 : (size_t)(38 + k);
        const float keep = p[idx];
        p[idx] = k == 0 ? INFINITY : k == 1 ? -INFINITY : k == 2 ? NAN : -NAN;
        EXPECT_ERR(vae_model_save(m, path), VAE_ERR_NUMERIC, "vae_model_save", needles[k]);
        EXPECT_ERR(vae_model_save_mem(m, buf, good_size, &size), VAE_ERR_NUMERIC,
                   "vae_model_save_mem", needles[k]);
        OK(vae_model_save_mem(m, NULL, 0, &size));
        assert_int_equal(size, good_size);
        file = tu_read_file(path, &fsize);
        assert_int_equal(fsize, good_size);
        assert_memory_equal(file, good, good_size);
        free(file);
        ASSERT_DIR_HOLDS(tpath("nonfinite"), "model.vae");
        p[idx] = keep;
    }
    assert_true(p[n - 1] == keep_last && p[0] == keep0);
    /* The model itself was not changed by the refusals, and loads back. */
    vae_model *back = NULL;
    OK(vae_model_load(&back, path));
    assert_same_model(m, back);
    vae_model_free(back);

    free(buf);
    free(good);
    vae_model_free(m);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(tpath("nonfinite")), 0);
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
    unsigned char *buf = tu_model_bytes(m, &size);
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
    unsigned char *buf = tu_model_bytes(m, &size);

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
    ASSERT_DIR_HOLDS(tpath("args"), "");

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
    tu_write_file(tpath("empty.vae"), "", 0);
    EXPECT_ERR(vae_model_load(&out, tpath("empty.vae")), VAE_ERR_FORMAT, "vae_model_load",
               "short");
    assert_int_equal(unlink(tpath("empty.vae")), 0);
    /* An IDX file, or text, is not a model. */
    tu_write_file(tpath("text.vae"), "hello, this is not a model file at all", 38);
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
        cmocka_unit_test(test_v1_header),
        cmocka_unit_test(test_v2_header),
        cmocka_unit_test(test_chunks_ancillary),
        cmocka_unit_test(test_chunks_refused),
        cmocka_unit_test(test_chunk_bits_flipped),
        cmocka_unit_test(test_checkpoint_as_model),
        cmocka_unit_test(test_crafted_huge_layers),
        cmocka_unit_test(test_structure_fuzz),
        cmocka_unit_test(test_save_refuses_non_finite),
        cmocka_unit_test(test_save_replaces_atomically),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_limit_workspace),
        cmocka_unit_test(test_limit_file_and_params),
    };
    return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
