/* The model file: versioned, little-endian, CRC-32 checked, written
 * atomically. Byte-by-byte specification in docs/format.md. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "../core/core.h"
#include "../nn/layer.h"
#include "file.h"

static const unsigned char MAGIC[8] = {0x89, 'V', 'A', 'E', '\r', '\n', 0x1a, '\n'};
#define FORMAT_VERSION 1u
#define HEADER_BYTES 24u
#define MAX_LAYERS 4096u

/* ---- little-endian writer over a buffer sized beforehand ---------------- */

typedef struct writer {
    unsigned char *p;
} writer;

static void put_u32(writer *w, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        *w->p++ = (unsigned char)(v >> (8 * i));
}

static void put_u64(writer *w, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        *w->p++ = (unsigned char)(v >> (8 * i));
}

static void put_f32(writer *w, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    put_u32(w, u);
}

/* ---- bounds-checked reader: a short read sets err and yields zeros ------ */

typedef struct reader {
    const unsigned char *p;
    size_t left;
    int err;
} reader;

static uint64_t get_le(reader *r, int bytes)
{
    if (r->err || r->left < (size_t)bytes) {
        r->err = 1;
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)r->p[i] << (8 * i);
    r->p += bytes;
    r->left -= (size_t)bytes;
    return v;
}

static uint32_t get_u32(reader *r)
{
    return (uint32_t)get_le(r, 4);
}

static uint64_t get_u64(reader *r)
{
    return get_le(r, 8);
}

static float get_f32(reader *r)
{
    uint32_t u = get_u32(r);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* A built model, or the error the model calls give. */
static int check_model(const vae_model *m, const char *fn)
{
    if (!m)
        return vae_fail(VAE_ERR_INVALID, "%s: model is NULL", fn);
    if (!vae_model_is_built(m))
        return vae_fail(VAE_ERR_STATE, "%s: build the model first", fn);
    return VAE_OK;
}

/* CRC-32 (zlib's) of len bytes, fed to zlib in parts that fit its uInt. */
static uint32_t file_crc(const unsigned char *buf, size_t len)
{
    uLong crc = crc32(0L, Z_NULL, 0);
    for (size_t off = 0; off < len;) {
        uInt part = len - off > (1u << 30) ? (1u << 30) : (uInt)(len - off);
        crc = crc32(crc, buf + off, part);
        off += part;
    }
    return (uint32_t)crc;
}

/* ---- saving ------------------------------------------------------------- */

static size_t file_size(const vae_model *m)
{
    /* header; model fields: likelihood, reserved, sigma, reserved (4 bytes
     * each), input and latent dims (8 each), layer and encoder counts (4 each) */
    size_t n = HEADER_BYTES + 40;
    for (size_t i = 0; i < vae_model_layer_count(m); i++) {
        uint64_t f[VAE_LAYER_MAX_FIELDS];
        const vae_layer *l = vae_model_layer(m, i);
        n += 24 + 8 * l->ops->describe(l, f);
    }
    return n + 8 + 4 * vae_model_param_count(m) + 4; /* parameter count, parameters, CRC */
}

static void encode(const vae_model *m, unsigned char *buf, size_t size)
{
    writer w = {buf};
    memcpy(w.p, MAGIC, 8);
    w.p += 8;
    put_u32(&w, FORMAT_VERSION);
    put_u32(&w, 0); /* flags */
    put_u64(&w, size - HEADER_BYTES - 4);
    double sigma = 1.0;
    vae_model_get_param(m, VAE_MODEL_GAUSSIAN_SIGMA, &sigma);
    const size_t n_layers = vae_model_layer_count(m), n_params = vae_model_param_count(m);
    /* Read only: the slab of a const model. */
    const float *params = vae_model_params((vae_model *)(uintptr_t)m, NULL);
    put_u32(&w, (uint32_t)vae_model_likelihood(m));
    put_u32(&w, 0);
    put_f32(&w, (float)sigma);
    put_u32(&w, 0);
    put_u64(&w, vae_model_input_dim(m));
    put_u64(&w, vae_model_latent_dim(m));
    put_u32(&w, (uint32_t)n_layers);
    put_u32(&w, (uint32_t)vae_model_encoder_layer_count(m));
    for (size_t i = 0; i < n_layers; i++) {
        const vae_layer *l = vae_model_layer(m, i);
        uint64_t f[VAE_LAYER_MAX_FIELDS];
        size_t nf = l->ops->describe(l, f);
        put_u32(&w, (uint32_t)l->ops->kind);
        put_u32(&w, (uint32_t)l->activation);
        put_u32(&w, (uint32_t)nf);
        put_u32(&w, 0);
        put_u64(&w, l->n_params);
        for (size_t j = 0; j < nf; j++)
            put_u64(&w, f[j]);
    }
    put_u64(&w, n_params);
    for (size_t i = 0; i < n_params; i++)
        put_f32(&w, params[i]);
    put_u32(&w, file_crc(buf, size - 4));
}

int vae_model_save_mem(const vae_model *m, void *buf, size_t cap, size_t *size)
{
    const char *fn = "vae_model_save_mem";
    int rc = check_model(m, fn);
    if (rc)
        return rc;
    if (!size)
        return vae_fail(VAE_ERR_INVALID, "%s: size is NULL", fn);
    *size = file_size(m);
    if (!buf)
        return VAE_OK;
    if (cap < *size)
        return vae_fail(VAE_ERR_INVALID, "%s: the buffer has %zu bytes, the model needs %zu",
                        fn, cap, *size);
    encode(m, buf, *size);
    return VAE_OK;
}

int vae_model_save(const vae_model *m, const char *path)
{
    const char *fn = "vae_model_save";
    int rc = check_model(m, fn);
    if (rc)
        return rc;
    if (!path || !*path)
        return vae_fail(VAE_ERR_INVALID, "%s: path is %s", fn, path ? "empty" : "NULL");
    size_t size = file_size(m);
    unsigned char *buf = vae_malloc(size);
    if (!buf)
        return vae_fail(VAE_ERR_NOMEM, "%s: out of memory for %zu bytes", fn, size);
    encode(m, buf, size);
    rc = vae_file_write_atomic(path, buf, size, fn);
    vae_free(buf);
    return rc;
}

/* ---- loading ------------------------------------------------------------ */

/* The failure of an inner call (status rc), with its message wrapped in
 * this call's. An allocation that failed stays VAE_ERR_NOMEM (the file may
 * be fine: retrying with more memory can succeed); any other refusal of
 * the constructors means the file describes an impossible model, a format
 * error. vae_fail() formats into the very buffer vae_last_error() returns,
 * so the inner message is copied out first. */
static int fail_inner(int rc, const char *fn, const char *what, const char *context)
{
    char inner[512];
    snprintf(inner, sizeof inner, "%s", vae_last_error());
    return vae_fail(rc == VAE_ERR_NOMEM ? VAE_ERR_NOMEM : VAE_ERR_FORMAT, "%s: %s: %s: %s", fn,
                    what, context, inner);
}

/* a*b, saturating at UINT64_MAX. */
static uint64_t mul_sat(uint64_t a, uint64_t b)
{
    return a != 0 && b > UINT64_MAX / a ? UINT64_MAX : a * b;
}

/* The parameter count docs/format.md gives for a record's geometry, so that
 * a record's count is checked before its layer is constructed (the
 * constructor allocates storage for that many parameters). Returns 0 with
 * *count unset for a kind or field count the layer constructors reject
 * themselves. */
static int record_params(uint32_t kind, const uint64_t *f, uint32_t nf, uint64_t *count)
{
    if (kind == VAE_LAYER_DENSE && nf == 2) { /* W[out][in], b[out] */
        uint64_t w = mul_sat(f[0], f[1]);
        *count = w > UINT64_MAX - f[1] ? UINT64_MAX : w + f[1];
        return 1;
    }
    if ((kind == VAE_LAYER_CONV2D && nf == 8) ||
        (kind == VAE_LAYER_CONV2D_TRANSPOSE && nf == 9)) {
        /* in_c x out_c x kh x kw weights, out_c biases */
        uint64_t w = mul_sat(mul_sat(mul_sat(f[0], f[3]), f[4]), f[5]);
        *count = w > UINT64_MAX - f[3] ? UINT64_MAX : w + f[3];
        return 1;
    }
    return 0;
}

static int decode(vae_model **out, const unsigned char *buf, size_t size, const char *what,
                  const char *fn)
{
    if (size < HEADER_BYTES + 4)
        return vae_fail(VAE_ERR_FORMAT, "%s: %s: %zu bytes is too short for a model file", fn,
                        what, size);
    if (memcmp(buf, MAGIC, 8) != 0)
        return vae_fail(VAE_ERR_FORMAT, "%s: %s: not a libvae model file (bad magic)", fn, what);
    reader r = {buf + 8, size - 8, 0};
    uint32_t version = get_u32(&r);
    uint32_t flags = get_u32(&r);
    uint64_t plen = get_u64(&r);
    if (version != FORMAT_VERSION)
        return vae_fail(VAE_ERR_FORMAT, "%s: %s: format version %u, this library reads %u", fn,
                        what, (unsigned)version, FORMAT_VERSION);
    if (flags != 0)
        return vae_fail(VAE_ERR_FORMAT, "%s: %s: unknown flags 0x%x", fn, what, (unsigned)flags);
    if (plen != size - HEADER_BYTES - 4)
        return vae_fail(VAE_ERR_FORMAT,
                        "%s: %s: the header announces %llu payload bytes, there are %zu%s", fn,
                        what, (unsigned long long)plen, size - HEADER_BYTES - 4,
                        plen > size - HEADER_BYTES - 4 ? " (truncated)" : "");
    reader tail = {buf + size - 4, 4, 0};
    if (file_crc(buf, size - 4) != get_u32(&tail))
        return vae_fail(VAE_ERR_FORMAT, "%s: %s: checksum mismatch: the file is damaged", fn,
                        what);
    r.left = (size_t)plen;
    uint32_t likelihood = get_u32(&r);
    get_u32(&r);
    float sigma = get_f32(&r);
    get_u32(&r);
    uint64_t input_dim = get_u64(&r), latent_dim = get_u64(&r);
    uint32_t n_layers = get_u32(&r), n_enc = get_u32(&r);
    if (r.err)
        return vae_fail(VAE_ERR_FORMAT, "%s: %s: truncated model description", fn, what);
    if (n_layers > MAX_LAYERS || (uint64_t)n_enc + 2 > n_layers || input_dim > SIZE_MAX ||
        latent_dim > SIZE_MAX)
        return vae_fail(VAE_ERR_FORMAT, "%s: %s: impossible layer counts (%u layers, %u in the "
                                        "encoder) or sizes",
                        fn, what, (unsigned)n_layers, (unsigned)n_enc);
    vae_model *m = NULL;
    int rc = vae_model_create(&m, (size_t)input_dim, (size_t)latent_dim, (int)likelihood);
    if (rc)
        return fail_inner(rc, fn, what, "bad model header");
    if (likelihood == VAE_LIKELIHOOD_GAUSSIAN &&
        vae_model_set_param(m, VAE_MODEL_GAUSSIAN_SIGMA, sigma)) {
        vae_model_free(m);
        return vae_fail(VAE_ERR_FORMAT, "%s: %s: bad Gaussian sigma %g", fn, what,
                        (double)sigma);
    }
    /* Parameters the records announce so far: they must all fit in what
     * follows the records, so a short file cannot make the loader allocate
     * more than it holds. */
    uint64_t announced = 0;
    for (uint32_t i = 0; i < n_layers && !rc; i++) {
        uint32_t kind = get_u32(&r), act = get_u32(&r), nf = get_u32(&r);
        get_u32(&r);
        uint64_t np = get_u64(&r);
        uint64_t f[VAE_LAYER_MAX_FIELDS];
        if (nf > VAE_LAYER_MAX_FIELDS)
            r.err = 1;
        for (uint32_t j = 0; j < nf && !r.err; j++)
            f[j] = get_u64(&r);
        if (r.err) {
            rc = vae_fail(VAE_ERR_FORMAT, "%s: %s: truncated or bad record of layer %u", fn,
                          what, (unsigned)i);
            break;
        }
        if (np > r.left / 4 || (announced += np) > r.left / 4) {
            rc = vae_fail(VAE_ERR_FORMAT, "%s: %s: layer %u announces %llu parameters, more "
                                          "than the %zu bytes left can hold",
                          fn, what, (unsigned)i, (unsigned long long)np, r.left);
            break;
        }
        /* A model above the process's limit is refused as vae_model_build
         * would refuse it, before any layer of that size is constructed. */
        if (announced > vae_get_limit(VAE_LIMIT_MODEL_PARAMS)) {
            rc = vae_fail(VAE_ERR_NOMEM,
                          "%s: %s: layers 0 to %u have %llu parameters, above the limit "
                          "VAE_LIMIT_MODEL_PARAMS = %llu",
                          fn, what, (unsigned)i, (unsigned long long)announced,
                          (unsigned long long)vae_get_limit(VAE_LIMIT_MODEL_PARAMS));
            break;
        }
        if (i == n_enc) {
            /* The head is rebuilt by vae_model_build from the encoder's
             * output and the latent size: its record must describe exactly
             * that layer, checked before anything of its size is allocated. */
            size_t enc = vae_model_encoder_layer_count(m);
            uint64_t hin = enc ? vae_layer_output_size(vae_model_layer(m, enc - 1))
                               : vae_model_input_dim(m);
            uint64_t hout = 2 * (uint64_t)vae_model_latent_dim(m);
            if (kind != VAE_LAYER_DENSE || act != VAE_ACT_IDENTITY || nf != 2 || f[0] != hin ||
                f[1] != hout || np != (hin + 1) * hout) {
                rc = vae_fail(VAE_ERR_FORMAT,
                              "%s: %s: the Gaussian head record (layer %u) does not match the "
                              "model: expected a dense identity layer %llu -> %llu (latent "
                              "size %zu) with %llu parameters",
                              fn, what, (unsigned)i, (unsigned long long)hin,
                              (unsigned long long)hout, vae_model_latent_dim(m),
                              (unsigned long long)((hin + 1) * hout));
                break;
            }
            continue;
        }
        uint64_t implied = 0;
        if (record_params(kind, f, nf, &implied) && implied != np) {
            rc = vae_fail(VAE_ERR_FORMAT, "%s: %s: layer %u claims %llu parameters, its sizes "
                                          "give %llu",
                          fn, what, (unsigned)i, (unsigned long long)np,
                          (unsigned long long)implied);
            break;
        }
        vae_layer *l = NULL;
        const vae_layer_ops *ops = vae_layer_kind_ops(kind);
        if (!ops) {
            rc = vae_fail(VAE_ERR_FORMAT, "%s: %s: layer %u: unknown layer kind %u", fn, what,
                          (unsigned)i, (unsigned)kind);
            break;
        }
        if ((rc = ops->from_fields(&l, (int)act, f, nf))) {
            char context[32];
            snprintf(context, sizeof context, "layer %u", (unsigned)i);
            rc = fail_inner(rc, fn, what, context);
            break;
        }
        if (l->n_params != np) {
            vae_layer_free(l);
            rc = vae_fail(VAE_ERR_FORMAT, "%s: %s: layer %u claims %llu parameters, its sizes "
                                          "give %zu",
                          fn, what, (unsigned)i, (unsigned long long)np, l->n_params);
            break;
        }
        rc = i < n_enc ? vae_model_add_encoder_layer(m, &l) : vae_model_add_decoder_layer(m, &l);
        if (rc) { /* only an allocation can fail here */
            char context[32];
            snprintf(context, sizeof context, "layer %u", (unsigned)i);
            rc = fail_inner(rc, fn, what, context);
        }
    }
    if (!rc && (rc = vae_model_build(m, 0)))
        rc = fail_inner(rc, fn, what,
                        rc == VAE_ERR_NOMEM ? "building the model"
                                            : "the layers do not fit together");
    if (!rc) {
        uint64_t np = get_u64(&r);
        if (r.err || np != vae_model_param_count(m) || r.left != 4 * vae_model_param_count(m))
            rc = vae_fail(VAE_ERR_FORMAT, "%s: %s: %llu parameters stored, the model has %zu", fn,
                          what, (unsigned long long)np, vae_model_param_count(m));
    }
    /* Tensor by tensor through vae_model_tensor_set, which the model knows
     * about (a writable pointer to the slab would make every later training
     * step re-read the parameters: model.h), via a buffer of the largest. */
    size_t nt = rc ? 0 : vae_model_tensor_count(m), largest = 0, at = 0;
    for (size_t i = 0; i < nt; i++) {
        size_t count = 0;
        vae_model_tensor_info(m, i, NULL, NULL, NULL, &count);
        largest = count > largest ? count : largest;
    }
    float *tmp = nt ? vae_malloc(largest * sizeof *tmp) : NULL;
    if (nt && !tmp)
        rc = vae_fail(VAE_ERR_NOMEM, "%s: %s: out of memory for a tensor of %zu values", fn,
                      what, largest);
    for (size_t i = 0; !rc && i < nt; i++) {
        size_t count = 0;
        vae_model_tensor_info(m, i, NULL, NULL, NULL, &count);
        for (size_t k = 0; !rc && k < count; k++, at++) {
            tmp[k] = get_f32(&r);
            if (!isfinite(tmp[k]))
                rc = vae_fail(VAE_ERR_FORMAT, "%s: %s: parameter %zu is not finite", fn, what,
                              at);
        }
        if (!rc)
            rc = vae_model_tensor_set(m, i, tmp, count);
    }
    vae_free(tmp);
    if (rc) {
        vae_model_free(m);
        return rc;
    }
    *out = m;
    return VAE_OK;
}

int vae_model_load_mem(vae_model **out, const void *buf, size_t size)
{
    const char *fn = "vae_model_load_mem";
    if (out)
        *out = NULL;
    if (!out || !buf)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn, out ? "buf" : "out");
    if ((uint64_t)size > vae_get_limit(VAE_LIMIT_FILE_BYTES))
        return vae_fail(VAE_ERR_NOMEM, "%s: %zu bytes, above the limit VAE_LIMIT_FILE_BYTES = %llu",
                        fn, size, (unsigned long long)vae_get_limit(VAE_LIMIT_FILE_BYTES));
    return decode(out, buf, size, "buffer", fn);
}

int vae_model_load(vae_model **out, const char *path)
{
    const char *fn = "vae_model_load";
    if (out)
        *out = NULL;
    if (!out || !path)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn, out ? "path" : "out");
    unsigned char *buf = NULL;
    size_t size = 0;
    int rc = vae_file_read_all(path, fn, &buf, &size);
    if (!rc)
        rc = decode(out, buf, size, path, fn);
    vae_free(buf);
    return rc;
}
