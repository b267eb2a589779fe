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
 * - a loaded model whose workspace can be allocated runs one reconstruction
 *   and the outputs are finite (probabilities in [0,1] for Bernoulli).
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

static void exercise(vae_model *m)
{
    size_t d = vae_model_input_dim(m);
    if (d > 1 << 16 || vae_model_reserve(m, 1) != VAE_OK)
        return; /* a large but valid model: nothing to run within the fuzzer's limits */
    float *x = calloc(d, sizeof *x), *y = malloc(d * sizeof *y);
    require(x && y, "out of memory in the harness");
    for (size_t i = 0; i < d; i++)
        x[i] = (float)(i % 3) * 0.5f;
    int rc = vae_model_reconstruct(m, x, 1, y);
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
    exercise(m);
    free(s1);
    free(s2);
    vae_model_free(m2);
    vae_model_free(m);
    free(buf);
    return 0;
}
