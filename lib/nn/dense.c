/* Dense layer: y = act(x W^T + b). Derivation in docs/math.md, "Dense layer". */
#include "../blas/blas.h"
#include "../core/core.h"
#include "activation.h"
#include "layer.h"

static void dense_forward(const vae_layer *l, const float *x, size_t batch, float *y,
                          float *scratch)
{
    (void)scratch;
    /* y[B][out] = x[B][in] . W[out][in]^T */
    vae_sgemm(0, 1, batch, l->out, l->in, 1.0f, x, l->in, l->w, l->in, 0.0f, y, l->out);
    vae_act_bias_forward(l->activation, y, batch, l->out, l->b, 0);
}

static void dense_backward(const vae_layer *l, const float *x, const float *y, float *dy,
                           size_t batch, float *dx, float *scratch, float *grad,
                           int accumulate)
{
    float *dw = grad, *db = grad + l->n_weights, *dbt = scratch; /* dbt[out] */
    /* dy becomes dz = dy * act'(z) in place. */
    vae_act_backward(l->activation, y, dy, batch * l->out);
    /* db[out] (+)= sum over the batch of dz, summed on its own first */
    for (size_t j = 0; j < l->out; j++)
        dbt[j] = dy[j];
    for (size_t r = 1; r < batch; r++) {
        const float *row = dy + r * l->out;
        for (size_t j = 0; j < l->out; j++)
            dbt[j] += row[j];
    }
    vae_grad_store(db, dbt, l->out, accumulate);
    /* dW[out][in] (+)= dz[B][out]^T . x[B][in], the batch being one block of
     * at most VAE_BLOCK samples. Where the BLAS adds a finished product
     * (blas.h), beta 1 adds it straight into dW; otherwise it is formed in
     * scratch and added. */
    if (!accumulate || VAE_BLAS_BETA1_EXACT) {
        vae_sgemm(1, 0, l->out, l->in, batch, 1.0f, dy, l->out, x, l->in,
                  accumulate ? 1.0f : 0.0f, dw, l->in);
    } else {
        float *wt = scratch + l->out; /* [out][in] */
        vae_sgemm(1, 0, l->out, l->in, batch, 1.0f, dy, l->out, x, l->in, 0.0f, wt, l->in);
        vae_grad_store(dw, wt, l->n_weights, 1);
    }
    /* dx[B][in] = dz[B][out] . W[out][in] */
    if (dx)
        vae_sgemm(0, 0, batch, l->in, l->out, 1.0f, dy, l->out, l->w, l->in, 0.0f, dx, l->in);
}

static size_t dense_scratch(const vae_layer *l, size_t batch)
{
    (void)batch;
    return l->out + (VAE_BLAS_BETA1_EXACT ? 0 : l->n_weights);
}

static size_t dense_describe(const vae_layer *l, uint64_t *fields)
{
    fields[0] = l->in;
    fields[1] = l->out;
    return 2;
}

static int dense_from_fields(vae_layer **out, int activation, const uint64_t *f, size_t n)
{
    if (n != 2)
        return vae_fail(VAE_ERR_FORMAT, "dense layer record has %zu fields, expected 2", n);
    if (f[0] > SIZE_MAX || f[1] > SIZE_MAX)
        return vae_fail(VAE_ERR_FORMAT, "dense layer sizes out of range");
    return vae_layer_dense_create(out, (size_t)f[0], (size_t)f[1], activation);
}

static size_t dense_weight_shape(const vae_layer *l, size_t *shape)
{
    shape[0] = l->out;
    shape[1] = l->in;
    return 2;
}

const vae_layer_ops vae_dense_ops = {VAE_LAYER_DENSE, "dense", dense_forward, dense_backward,
                                     dense_scratch, dense_describe, dense_from_fields,
                                     dense_weight_shape};

int vae_layer_dense_create(vae_layer **out, size_t in, size_t out_features, int activation)
{
    if (!out)
        return vae_fail(VAE_ERR_INVALID, "vae_layer_dense_create: out is NULL");
    *out = NULL;
    if (in == 0 || out_features == 0)
        return vae_fail(VAE_ERR_INVALID,
                        "vae_layer_dense_create: sizes must be positive (in %zu, out %zu)", in,
                        out_features);
    /* Keeps every GEMM dimension inside int and W addressable. */
    if (in > (1u << 24) || out_features > (1u << 24) ||
        (double)in * (double)out_features > (double)(1u << 30))
        return vae_fail(VAE_ERR_INVALID,
                        "vae_layer_dense_create: %zu x %zu is too large", out_features, in);
    if (!vae_act_valid(activation))
        return vae_fail(VAE_ERR_INVALID, "vae_layer_dense_create: unknown activation %d",
                        activation);
    return vae_layer_alloc(out, &vae_dense_ops, in, out_features, activation,
                           in * out_features, out_features, in);
}
