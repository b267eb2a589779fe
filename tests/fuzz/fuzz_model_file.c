/* Fuzz target for vae_model_load_mem (the model file reader: format
 * version 2, which this library writes, and version 1, which 0.1 and 1.0
 * wrote; a checkpoint's model part too).
 *
 * Input: one mode byte, then the candidate file. With an even mode byte the
 * bytes go in untouched. With an odd one the harness first makes the
 * checksums match the bytes (fixup.h), which lets mutations reach the layer
 * records and the parameters instead of dying at a CRC-32: a file whose
 * version field says 1 gets its payload length and CRC-32 rewritten, one
 * whose version says 2 gets each chunk's length and CRC-32 recomputed as far
 * as its chunks parse.
 *
 * Oracles (a failure aborts, which the fuzzer and the replay test report):
 * - a refusal is VAE_ERR_FORMAT or VAE_ERR_NOMEM with a message naming the
 *   function, and *out is NULL;
 * - a loaded model saves to a version-2 file: as many bytes as it was read
 *   from when that was a version-2 file of ARCH, PARM and DONE only, 36 more
 *   when it was a version-1 file (the same fields, three chunk framings
 *   instead of one); that file loads again into a model with the same
 *   parameters, bit for bit, which saves to the same bytes;
 *   all parameters are finite;
 * - what introspection reports of a loaded model is consistent (layers,
 *   head, parameter counts, named tensors tiling the slab);
 * - a loaded model whose workspace can be allocated encodes and reconstructs
 *   two inputs with finite outputs (probabilities in [0,1] for Bernoulli) or
 *   VAE_ERR_NUMERIC (finite parameters can still overflow); a workspace that
 *   cannot be allocated is refused with VAE_ERR_NOMEM.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixup.h"
#include "vae/vae.h"

#define BATCH 2

static void require(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_model_file: %s (last error: %s)\n", what, vae_last_error());
        abort();
    }
}

/* Saves m into a new buffer; *size gets its length. */
static unsigned char *save(const vae_model *m, size_t *size)
{
    size_t need = 0;
    require(vae_model_save_mem(m, NULL, 0, &need) == VAE_OK && need > 0, "save_mem size query");
    unsigned char *buf = malloc(need);
    require(buf != NULL, "out of memory in the harness");
    require(vae_model_save_mem(m, buf, need, size) == VAE_OK && *size == need, "save_mem");
    return buf;
}

/* What introspection reports of a loaded model is consistent: it is built,
 * has a dense identity head giving 2 * latent values, its layers' parameter
 * counts add up to the slab, and its named tensors (a weight and a bias per
 * layer, each found by its name) tile the slab in order. */
static void introspect(const vae_model *m)
{
    require(vae_model_is_built(m) == 1, "a loaded model is not built");
    size_t nl = vae_model_layer_count(m), ne = vae_model_encoder_layer_count(m);
    require(ne + 2 <= nl, "impossible layer counts");
    const vae_layer *head = vae_model_layer(m, ne);
    require(vae_layer_kind(head) == VAE_LAYER_DENSE &&
                vae_layer_activation(head) == VAE_ACT_IDENTITY &&
                vae_layer_output_size(head) == 2 * vae_model_latent_dim(m),
            "the head is not a dense identity layer to 2 * latent");
    require(vae_model_layer(m, nl) == NULL, "a layer past the last");
    size_t total = 0;
    for (size_t i = 0; i < nl; i++) {
        size_t p = 0;
        require(vae_layer_get_param(vae_model_layer(m, i), VAE_LAYER_PARAMS, &p) == VAE_OK,
                "layer parameter count unreadable");
        total += p;
    }
    require(total == vae_model_param_count(m), "layer parameter counts do not add up");
    size_t nt = vae_model_tensor_count(m), next = 0;
    require(nt == 2 * nl, "not two tensors per layer");
    for (size_t t = 0; t < nt; t++) {
        const char *name = vae_model_tensor_name(m, t);
        size_t idx = nt, off = 0, count = 0;
        require(name != NULL, "a tensor without a name");
        require(vae_model_tensor_find(m, name, &idx) == VAE_OK && idx == t,
                "a tensor not found by its name");
        require(vae_model_tensor_info(m, t, NULL, NULL, &off, &count) == VAE_OK,
                "tensor info failed");
        require(off == next, "tensors do not tile the slab");
        next += count;
    }
    require(next == vae_model_param_count(m), "tensors do not cover the slab");
}

/* Every parameter is finite, and m2's are m's, bit for bit. */
static void same_params(vae_model *m, vae_model *m2)
{
    size_t n = 0, n2 = 0;
    const float *p = vae_model_params(m, &n), *p2 = vae_model_params(m2, &n2);
    require(n == vae_model_param_count(m) && n == n2, "parameter counts differ");
    require(n == 0 || memcmp(p, p2, n * sizeof *p) == 0, "parameters change through a save");
    for (size_t i = 0; i < n; i++)
        require(isfinite(p[i]), "a loaded parameter is not finite");
}

static void require_finite(const float *x, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++)
        require(isfinite(x[i]), what);
}

static void exercise(const vae_model *m)
{
    size_t d = vae_model_input_dim(m), l = vae_model_latent_dim(m);
    if (d > 1 << 16 || l > 1 << 16)
        return; /* a large but valid model: nothing to run within the fuzzer's limits */
    vae_context *ctx = NULL;
    require(vae_context_create(&ctx) == VAE_OK, "context creation failed");
    int rc = vae_context_reserve(ctx, m, BATCH);
    if (rc != VAE_OK) {
        require(rc == VAE_ERR_NOMEM, "reserve failed other than for memory");
        vae_context_free(ctx); /* a workspace too large for the fuzzer's limits */
        return;
    }
    float *x = malloc(BATCH * d * sizeof *x), *y = malloc(BATCH * d * sizeof *y);
    float *mu = malloc(BATCH * l * sizeof *mu), *lv = malloc(BATCH * l * sizeof *lv);
    require(x && y && mu && lv, "out of memory in the harness");
    for (size_t i = 0; i < BATCH * d; i++)
        x[i] = (float)(i % 3) * 0.5f;
    /* Parameters are finite, but a wide enough layer can still overflow. */
    rc = vae_encode(ctx, m, x, BATCH, mu, lv);
    require(rc == VAE_OK || rc == VAE_ERR_NUMERIC, "encode failed unexpectedly");
    if (rc == VAE_OK) {
        require_finite(mu, BATCH * l, "an encoded mean is not finite");
        require_finite(lv, BATCH * l, "an encoded log-variance is not finite");
    }
    rc = vae_reconstruct(ctx, m, x, BATCH, y);
    require(rc == VAE_OK || rc == VAE_ERR_NUMERIC, "reconstruct failed unexpectedly");
    if (rc == VAE_OK) {
        int bern = vae_model_likelihood(m) == VAE_LIKELIHOOD_BERNOULLI;
        for (size_t i = 0; i < BATCH * d; i++)
            require(isfinite(y[i]) && (!bern || (y[i] >= 0.0f && y[i] <= 1.0f)),
                    "reconstruction out of range");
    }
    free(x);
    free(y);
    free(mu);
    free(lv);
    vae_context_free(ctx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int fix = data[0] & 1;
    size--;
    unsigned char *buf = malloc(size ? size : 1);
    require(buf != NULL, "out of memory in the harness");
    memcpy(buf, data + 1, size);
    if (fix)
        fix_checksums(buf, size);

    vae_model *m = (vae_model *)buf; /* must be overwritten with NULL on failure */
    int rc = vae_model_load_mem(&m, buf, size);
    if (rc != VAE_OK) {
        require(rc == VAE_ERR_FORMAT || rc == VAE_ERR_NOMEM, "unexpected status");
        require(m == NULL, "*out not cleared on failure");
        require(strstr(vae_last_error(), "vae_model_load_mem") != NULL, "message names no function");
        free(buf);
        return 0;
    }
    size_t n1 = 0, n2 = 0;
    unsigned char *s1 = save(m, &n1);
    require(fix_version(s1, n1) == 2 && fix_extra_chunks(s1, n1) == 0,
            "a model does not save to a version-2 file of ARCH, PARM and DONE");
    uint32_t version = fix_version(buf, size);
    require(version == 1 || version == 2, "a file of an unknown version loaded");
    if (version == 1)
        require(n1 == size + 36, "a version-1 file saves to a size other than its own + 36");
    else if (fix_extra_chunks(buf, size) == 0)
        require(n1 == size, "a model file saves to a different size");
    vae_model *m2 = NULL;
    require(vae_model_load_mem(&m2, s1, n1) == VAE_OK, "a saved model does not load");
    same_params(m, m2);
    unsigned char *s2 = save(m2, &n2);
    require(n1 == n2 && memcmp(s1, s2, n1) == 0, "save, load, save is not stable");
    introspect(m);
    exercise(m);
    free(s1);
    free(s2);
    vae_model_free(m2);
    vae_model_free(m);
    free(buf);
    return 0;
}
