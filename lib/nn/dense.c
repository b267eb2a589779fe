/* Dense layer: y = act(x W^T + b). Derivation in docs/math.md, "Dense layer". */
#include "../blas/blas.h"
#include "../core/core.h"
#include "activation.h"
#include "layer.h"

static void dense_forward(vae_layer *l, const float *x, size_t batch, float *y, float *scratch)
{
    (void)scratch;
    /* y[B][out] = x[B][in] . W[out][in]^T */
    vae_sgemm(0, 1, batch, l->out, l->in, 1.0f, x, l->in, l->w, l->in, 0.0f, y, l->out);
    vae_act_bias_forward(l->activation, y, batch, l->out, l->b, 0);
}

static void dense_backward(vae_layer *l, const float *x, const float *y, float *dy,
                           size_t batch, float *dx, float *scratch, float *grad)
{
    (void)scratch;
    float *dw = grad, *db = grad + l->n_weights;
    /* dy becomes dz = dy * act'(z) in place. */
    vae_act_backward(l->activation, y, dy, batch * l->out);
    /* db[out] += sum over the batch of dz */
    for (size_t r = 0; r < batch; r++) {
        const float *row = dy + r * l->out;
        for (size_t j = 0; j < l->out; j++)
            db[j] += row[j];
    }
    /* dW[out][in] += dz[B][out]^T . x[B][in] */
    vae_sgemm(1, 0, l->out, l->in, batch, 1.0f, dy, l->out, x, l->in, 1.0f, dw, l->in);
    /* dx[B][in] = dz[B][out] . W[out][in] */
    if (dx)
        vae_sgemm(0, 0, batch, l->in, l->out, 1.0f, dy, l->out, l->w, l->in, 0.0f, dx, l->in);
}

static size_t dense_scratch(const vae_layer *l, size_t batch)
{
    (void)l;
    (void)batch;
    return 0;
}

const vae_layer_ops vae_dense_ops = {dense_forward, dense_backward, dense_scratch};

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
    return vae_layer_alloc(out, &vae_dense_ops, VAE_LAYER_DENSE, in, out_features, activation,
                           in * out_features, out_features, in);
}
