/* The model file: versioned, little-endian, CRC-32 checked, written
 * atomically. Version 2 (written) is chunked (chunk.h); version 1 (0.1 and
 * 1.0) is read. Byte-by-byte specification in docs/format.md. */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/core.h"
#include "../core/numeric.h"
#include "../model/model.h"
#include "../nn/layer.h"
#include "chunk.h"
#include "file.h"
#include "model_file.h"

#define V1_HEADER_BYTES 24u
#define MAX_LAYERS 4096u

/* A built model, or the error the model calls give. */
static int check_model(const vae_model *m, const char *fn)
{
    if (!m)
        return vae_fail(VAE_ERR_INVALID, "%s: model is NULL", fn);
    if (!vae_model_is_built(m))
        return vae_fail(VAE_ERR_STATE, "%s: build the model first", fn);
    return VAE_OK;
}

/* ---- saving ------------------------------------------------------------- */

void vae_model_chunks_put(vae_writer *w, const vae_model *m)
{
    vae_chunk_begin(w, vae_chunk_types[VAE_CK_ARCH]);
    const size_t n_layers = vae_model_layer_count(m);
    vae_put_u32(w, (uint32_t)m->likelihood);
    vae_put_u32(w, 0);
    vae_put_f32(w, m->likelihood == VAE_LIKELIHOOD_GAUSSIAN ? m->sigma : 1.0f);
    vae_put_u32(w, 0);
    vae_put_u64(w, m->input_dim);
    vae_put_u64(w, m->latent_dim);
    vae_put_u32(w, (uint32_t)n_layers);
    vae_put_u32(w, (uint32_t)m->n_enc);
    for (size_t i = 0; i < n_layers; i++) {
        const vae_layer *l = m->layers[i];
        uint64_t f[VAE_LAYER_MAX_FIELDS];
        size_t nf = l->ops->describe(l, f);
        vae_put_u32(w, (uint32_t)l->ops->kind);
        vae_put_u32(w, (uint32_t)l->activation);
        vae_put_u32(w, (uint32_t)nf);
        vae_put_u32(w, 0);
        vae_put_u64(w, l->n_params);
        for (size_t j = 0; j < nf; j++)
            vae_put_u64(w, f[j]);
    }
    vae_chunk_end(w);
    vae_chunk_begin(w, vae_chunk_types[VAE_CK_PARM]);
    vae_put_u64(w, m->n_params);
    vae_put_f32s(w, m->params, m->n_params);
    vae_chunk_end(w);
}

/* Index of the first non-finite value of x[0..n), or n. */
size_t vae_first_not_finite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (vae_not_finite(x[i]))
            return i;
    return n;
}

static void encode(const vae_model *m, vae_writer *w)
{
    vae_put_header(w);
    vae_model_chunks_put(w, m);
    vae_chunk_begin(w, "DONE");
    vae_chunk_end(w);
}

static int check_finite(const vae_model *m, const char *fn)
{
    size_t bad = vae_first_not_finite(m->params, m->n_params);
    if (bad < m->n_params)
        return vae_fail(VAE_ERR_NUMERIC, "%s: parameter %zu is %g: a model with a value that "
                                         "is not finite is not saved",
                        fn, bad, (double)m->params[bad]);
    return VAE_OK;
}

int vae_model_save_mem(const vae_model *m, void *buf, size_t cap, size_t *size)
{
    const char *fn = "vae_model_save_mem";
    int rc = check_model(m, fn);
    if (rc)
        return rc;
    if (!size)
        return vae_fail(VAE_ERR_INVALID, "%s: size is NULL", fn);
    vae_writer w = {0};
    encode(m, &w);
    *size = w.n;
    if (!buf)
        return VAE_OK;
    if (cap < *size)
        return vae_fail(VAE_ERR_INVALID, "%s: the buffer has %zu bytes, the model needs %zu",
                        fn, cap, *size);
    if ((rc = check_finite(m, fn)))
        return rc;
    w = (vae_writer){buf, buf, 0, 0};
    encode(m, &w);
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
    if ((rc = check_finite(m, fn)))
        return rc;
    vae_writer w = {0};
    encode(m, &w);
    size_t size = w.n;
    unsigned char *buf = vae_malloc(size);
    if (!buf)
        return vae_fail(VAE_ERR_NOMEM, "%s: out of memory for %zu bytes", fn, size);
    w = (vae_writer){buf, buf, 0, 0};
    encode(m, &w);
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

/* The model of an ARCH chunk (or of a version-1 payload up to its
 * parameter count), built, its parameters zero. room: the bytes the
 * parameters can have, or SIZE_MAX for "what is left in r" (version 1,
 * where they follow in the same payload). */
static int decode_arch(vae_reader *r, size_t room_fixed, vae_model **out, const char *what,
                       const char *fn)
{
    uint32_t likelihood = vae_get_u32(r);
    vae_get_u32(r);
    float sigma = vae_get_f32(r);
    vae_get_u32(r);
    uint64_t input_dim = vae_get_u64(r), latent_dim = vae_get_u64(r);
    uint32_t n_layers = vae_get_u32(r), n_enc = vae_get_u32(r);
    if (r->err)
        return vae_fail(VAE_ERR_FORMAT, "%s: %s: truncated model description", fn, what);
    if (n_layers > MAX_LAYERS || (uint64_t)n_enc + 2 > n_layers || input_dim > SIZE_MAX ||
        latent_dim > SIZE_MAX)
        return vae_fail(VAE_ERR_FORMAT, "%s: %s: impossible layer counts (%u layers, %u in the "
                                        "encoder) or sizes",
                        fn, what, (unsigned)n_layers, (unsigned)n_enc);
    vae_model *m = NULL;
    *out = NULL;
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
        uint32_t kind = vae_get_u32(r), act = vae_get_u32(r), nf = vae_get_u32(r);
        vae_get_u32(r);
        uint64_t np = vae_get_u64(r);
        uint64_t f[VAE_LAYER_MAX_FIELDS];
        if (nf > VAE_LAYER_MAX_FIELDS)
            r->err = 1;
        for (uint32_t j = 0; j < nf && !r->err; j++)
            f[j] = vae_get_u64(r);
        if (r->err) {
            rc = vae_fail(VAE_ERR_FORMAT, "%s: %s: truncated or bad record of layer %u", fn,
                          what, (unsigned)i);
            break;
        }
        size_t room = room_fixed == SIZE_MAX ? r->left : room_fixed;
        if (np > room / 4 || (announced += np) > room / 4) {
            rc = vae_fail(VAE_ERR_FORMAT, "%s: %s: layer %u announces %llu parameters, more "
                                          "than the %zu bytes left can hold",
                          fn, what, (unsigned)i, (unsigned long long)np, room);
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
    if (rc) {
        vae_model_free(m);
        return rc;
    }
    *out = m;
    return VAE_OK;
}

/* The parameter count and the parameters, which must end r exactly. */
static int decode_params(vae_reader *r, vae_model *m, const char *what, const char *fn)
{
    int rc = VAE_OK;
    uint64_t np = vae_get_u64(r);
    if (r->err || np != vae_model_param_count(m) || r->left != 4 * vae_model_param_count(m))
        rc = vae_fail(VAE_ERR_FORMAT, "%s: %s: %llu parameters stored, the model has %zu", fn,
                      what, (unsigned long long)np, vae_model_param_count(m));
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
            tmp[k] = vae_get_f32(r);
            if (!isfinite(tmp[k]))
                rc = vae_fail(VAE_ERR_FORMAT, "%s: %s: parameter %zu is not finite", fn, what,
                              at);
        }
        if (!rc)
            rc = vae_model_tensor_set(m, i, tmp, count);
    }
    vae_free(tmp);
    return rc;
}

/* "kind 2, activation 1, fields 1 28 28 32 4 4 2 1" into buf. */
static const char *describe_record(char *buf, size_t cap, uint32_t kind, uint32_t act,
                                   const uint64_t *f, size_t nf)
{
    int at = snprintf(buf, cap, "kind %u, activation %u, fields", (unsigned)kind, (unsigned)act);
    for (size_t j = 0; j < nf && at > 0 && (size_t)at < cap; j++)
        at += snprintf(buf + at, cap - (size_t)at, " %llu", (unsigned long long)f[j]);
    return buf;
}

int vae_arch_match(const unsigned char *arch, size_t len, const vae_model *m, float *sigma,
                   const char *what, const char *fn)
{
    vae_reader r = {arch, len, 0};
    uint32_t lik = vae_get_u32(&r);
    vae_get_u32(&r);
    float sg = vae_get_f32(&r);
    vae_get_u32(&r);
    uint64_t d = vae_get_u64(&r), l = vae_get_u64(&r);
    uint32_t n = vae_get_u32(&r), e = vae_get_u32(&r);
    if (r.err)
        return vae_fail(VAE_ERR_FORMAT, "%s: %s: truncated model description", fn, what);
    if (d != m->input_dim || l != m->latent_dim || lik != (uint32_t)m->likelihood)
        return vae_fail(VAE_ERR_SHAPE, "%s: %s: the checkpoint's model has input %llu, latent "
                                       "%llu, likelihood %u; the trainer's has %zu, %zu, %d",
                        fn, what, (unsigned long long)d, (unsigned long long)l, (unsigned)lik,
                        m->input_dim, m->latent_dim, m->likelihood);
    if (n != m->n_layers || e != m->n_enc)
        return vae_fail(VAE_ERR_SHAPE, "%s: %s: the checkpoint's model has %u layers (%u in the "
                                       "encoder); the trainer's has %zu (%zu)",
                        fn, what, (unsigned)n, (unsigned)e, m->n_layers, m->n_enc);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t kind = vae_get_u32(&r), act = vae_get_u32(&r), nf = vae_get_u32(&r);
        vae_get_u32(&r);
        uint64_t np = vae_get_u64(&r), f[VAE_LAYER_MAX_FIELDS];
        if (nf > VAE_LAYER_MAX_FIELDS)
            r.err = 1;
        for (uint32_t j = 0; j < nf && !r.err; j++)
            f[j] = vae_get_u64(&r);
        if (r.err)
            return vae_fail(VAE_ERR_FORMAT, "%s: %s: truncated or bad record of layer %u", fn,
                            what, (unsigned)i);
        const vae_layer *ly = m->layers[i];
        uint64_t g[VAE_LAYER_MAX_FIELDS];
        size_t ng = ly->ops->describe(ly, g);
        if (kind != (uint32_t)ly->ops->kind || act != (uint32_t)ly->activation || nf != ng ||
            memcmp(f, g, ng * sizeof *g) != 0 || np != ly->n_params) {
            char a[200], b[200];
            return vae_fail(VAE_ERR_SHAPE, "%s: %s: layer %u differs: %s in the checkpoint; %s "
                                           "in the trainer's model",
                            fn, what, (unsigned)i, describe_record(a, sizeof a, kind, act, f, nf),
                            describe_record(b, sizeof b, (uint32_t)ly->ops->kind,
                                            (uint32_t)ly->activation, g, ng));
        }
    }
    if (r.left != 0)
        return vae_fail(VAE_ERR_FORMAT, "%s: %s: %zu bytes after the last layer record of the "
                                        "ARCH chunk",
                        fn, what, r.left);
    if (m->likelihood == VAE_LIKELIHOOD_GAUSSIAN && !(sg >= 1e-6f && sg <= 1e6f))
        return vae_fail(VAE_ERR_FORMAT, "%s: %s: bad Gaussian sigma %g", fn, what, (double)sg);
    *sigma = sg;
    return VAE_OK;
}

static int decode(vae_model **out, const unsigned char *buf, size_t size, const char *what,
                  const char *fn)
{
    if (size < VAE_FILE_HEADER_BYTES)
        return vae_fail(VAE_ERR_FORMAT, "%s: %s: %zu bytes is too short for a model file", fn,
                        what, size);
    if (memcmp(buf, vae_file_magic, VAE_FILE_MAGIC_BYTES) != 0)
        return vae_fail(VAE_ERR_FORMAT, "%s: %s: not a libvae model file (bad magic)", fn, what);
    vae_reader r = {buf + 8, size - 8, 0};
    uint32_t version = vae_get_u32(&r);
    vae_model *m = NULL;
    int rc;
    if (version == 2) {
        vae_chunks c;
        if ((rc = vae_chunks_parse(&c, buf, size, what, fn)))
            return rc;
        vae_reader ra = {c.at[VAE_CK_ARCH], c.len[VAE_CK_ARCH], 0};
        vae_reader rp = {c.at[VAE_CK_PARM], c.len[VAE_CK_PARM], 0};
        if ((rc = decode_arch(&ra, c.len[VAE_CK_PARM], &m, what, fn)))
            return rc;
        if (ra.left != 0)
            rc = vae_fail(VAE_ERR_FORMAT, "%s: %s: %zu bytes after the last layer record of the "
                                          "ARCH chunk",
                          fn, what, ra.left);
        else
            rc = decode_params(&rp, m, what, fn);
    } else if (version == 1) {
        /* 0.1 and 1.0: one payload between a 24-byte header and a CRC-32. */
        if (size < V1_HEADER_BYTES + 4)
            return vae_fail(VAE_ERR_FORMAT, "%s: %s: %zu bytes is too short for a model file",
                            fn, what, size);
        uint32_t flags = vae_get_u32(&r);
        uint64_t plen = vae_get_u64(&r);
        if (flags != 0)
            return vae_fail(VAE_ERR_FORMAT, "%s: %s: unknown flags 0x%x", fn, what,
                            (unsigned)flags);
        if (plen != size - V1_HEADER_BYTES - 4)
            return vae_fail(VAE_ERR_FORMAT,
                            "%s: %s: the header announces %llu payload bytes, there are %zu%s",
                            fn, what, (unsigned long long)plen, size - V1_HEADER_BYTES - 4,
                            plen > size - V1_HEADER_BYTES - 4 ? " (truncated)" : "");
        vae_reader tail = {buf + size - 4, 4, 0};
        if (vae_crc32(buf, size - 4) != vae_get_u32(&tail))
            return vae_fail(VAE_ERR_FORMAT, "%s: %s: checksum mismatch: the file is damaged",
                            fn, what);
        r.left = (size_t)plen;
        if ((rc = decode_arch(&r, SIZE_MAX, &m, what, fn)))
            return rc;
        rc = decode_params(&r, m, what, fn);
    } else {
        /* Bytes 12..15 name the writer from version 2 on (version 1 had
         * its flags there, always 0). */
        vae_reader rw = {buf + 12, 4, 0};
        uint32_t writer = vae_get_u32(&rw);
        char wv[48] = "";
        if (writer != 0) {
            char num[16];
            snprintf(wv, sizeof wv, " (written by libvae %s)", vae_version_text(writer, num));
        }
        return vae_fail(VAE_ERR_FORMAT, "%s: %s: format version %u%s; this library reads "
                                        "versions 1 and 2",
                        fn, what, (unsigned)version, wv);
    }
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
