/* Fuzz target for vae_model_load_mem (the model file reader).
 *
 * Input: one mode byte, then the candidate file. With an odd mode byte the
 * harness first rewrites the payload length and the CRC-32 so they match the
 * bytes, which lets mutations reach the layer records instead of dying at the
 * checksum; with an even one the bytes go in untouched.
 *
 * Oracles (a failure aborts, which the fuzzer and the replay test report):
 * - a refusal is VAE_ERR_FORMAT or VAE_ERR_NOMEM with a message naming the
 *   function;
 * - a loaded model saves to exactly as many bytes as it was read from, and
 *   saving, loading and saving again gives the same bytes (the reader and the
 *   writer agree on the format);
 * - what introspection reports of a loaded model is consistent (layers,
 *   head, parameter counts, named tensors tiling the slab);
 * - a loaded model whose workspace can be allocated runs one reconstruction
 *   and the outputs are finite (probabilities in [0,1] for Bernoulli); a
 *   workspace that cannot be allocated is refused with VAE_ERR_NOMEM.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "vae/vae.h"

#define HEADER 24

static void require(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_model_file: %s (last error: %s)\n", what, vae_last_error());
        abort();
    }
}

static void put_le(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (unsigned char)(v >> (8 * i));
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

static void exercise(const vae_model *m)
{
    size_t d = vae_model_input_dim(m);
    if (d > 1 << 16)
        return; /* a large but valid model: nothing to run within the fuzzer's limits */
    vae_context *ctx = NULL;
    require(vae_context_create(&ctx) == VAE_OK, "context creation failed");
    int rc = vae_context_reserve(ctx, m, 1);
    if (rc != VAE_OK) {
        require(rc == VAE_ERR_NOMEM, "reserve failed other than for memory");
        vae_context_free(ctx); /* a workspace too large for the fuzzer's limits */
        return;
    }
    float *x = calloc(d, sizeof *x), *y = malloc(d * sizeof *y);
    require(x && y, "out of memory in the harness");
    for (size_t i = 0; i < d; i++)
        x[i] = (float)(i % 3) * 0.5f;
    rc = vae_reconstruct(ctx, m, x, 1, y);
    /* Parameters are finite, but a wide enough layer can still overflow. */
    require(rc == VAE_OK || rc == VAE_ERR_NUMERIC, "reconstruct failed unexpectedly");
    if (rc == VAE_OK) {
        int bern = vae_model_likelihood(m) == VAE_LIKELIHOOD_BERNOULLI;
        for (size_t i = 0; i < d; i++)
            require(isfinite(y[i]) && (!bern || (y[i] >= 0.0f && y[i] <= 1.0f)),
                    "reconstruction out of range");
    }
    free(x);
    free(y);
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
    if (fix && size >= HEADER + 4) {
        put_le(buf + 16, size - HEADER - 4, 8);
        put_le(buf + size - 4, crc32(0L, buf, (uInt)(size - 4)), 4);
    }

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
    require(n1 == size, "a loaded model saves to a different size");
    vae_model *m2 = NULL;
    require(vae_model_load_mem(&m2, s1, n1) == VAE_OK, "a saved model does not load");
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
