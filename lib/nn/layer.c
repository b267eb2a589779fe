/* Public layer API and what every layer kind shares. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/core.h"
#include "../core/rng.h"
#include "layer.h"

int vae_layer_alloc(vae_layer **out, const vae_layer_ops *ops, size_t in, size_t outf,
                    int activation, size_t n_weights, size_t n_bias, size_t fan_in)
{
    /* Called by the constructors only: name the public one that failed. */
    vae_layer *l = vae_calloc(1, sizeof *l);
    if (!l)
        return vae_fail(VAE_ERR_NOMEM, "vae_layer_%s_create: out of memory", ops->name);
    l->ops = ops;
    l->activation = activation;
    l->in = in;
    l->out = outf;
    l->fan_in = fan_in;
    l->n_weights = n_weights;
    l->n_params = n_weights + n_bias;
    l->own = vae_calloc(2 * l->n_params, sizeof(float));
    if (!l->own) {
        size_t n = l->n_params;
        vae_free(l);
        return vae_fail(VAE_ERR_NOMEM, "vae_layer_%s_create: out of memory for %zu parameters",
                        ops->name, n);
    }
    vae_layer_bind(l, l->own);
    l->dw = l->own + l->n_params;
    *out = l;
    return VAE_OK;
}

void vae_layer_bind(vae_layer *l, float *params)
{
    l->w = params;
    l->b = params + l->n_weights;
}

void vae_layer_init_rng(vae_layer *l, vae_rng *rng)
{
    /* PyTorch's nn.Linear / nn.Conv2d default: kaiming_uniform(a = sqrt 5)
     * for weights, which is uniform in +-1/sqrt(fan_in), and the same bound
     * for biases. Drawn in slab order: weights, then biases. */
    double bound = 1.0 / sqrt((double)l->fan_in);
    for (size_t i = 0; i < l->n_params; i++)
        l->w[i] = (float)((2.0 * vae_rng_double(rng) - 1.0) * bound);
}

void vae_layer_destroy(vae_layer *layer)
{
    if (!layer)
        return;
    vae_free(layer->own);
    vae_free(layer->cache);
    vae_free(layer);
}

void vae_layer_free(vae_layer *layer)
{
    /* A layer a model owns is freed with the model; freeing it here too
     * would be a double free, so that mistake is ignored. */
    if (layer && !layer->owned_by_model)
        vae_layer_destroy(layer);
}

const vae_layer_ops *vae_layer_kind_ops(uint32_t kind)
{
    static const vae_layer_ops *const kinds[] = {&vae_dense_ops, &vae_conv2d_ops,
                                                 &vae_conv2d_transpose_ops};
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++)
        if ((uint32_t)kinds[i]->kind == kind)
            return kinds[i];
    return NULL;
}

int vae_layer_init(vae_layer *layer, vae_rng *rng)
{
    if (!layer || !rng)
        return vae_fail(VAE_ERR_INVALID, "vae_layer_init: %s is NULL", layer ? "rng" : "layer");
    if (layer->owned_by_model)
        return vae_fail(VAE_ERR_STATE, "vae_layer_init: the layer belongs to a model");
    vae_layer_init_rng(layer, rng);
    return VAE_OK;
}

static int ensure_cache(vae_layer *l, size_t batch)
{
    if (batch <= l->cache_batch_cap)
        return VAE_OK;
    int ovf = 0;
    size_t sx = vae_mul_size(batch, l->in, &ovf);
    size_t sy = vae_mul_size(batch, l->out, &ovf);
    size_t ss = l->ops->scratch_floats(l, batch);
    size_t total = sx + 2 * sy + ss;
    if (ovf || total < sx || total > SIZE_MAX / sizeof(float))
        return vae_fail(VAE_ERR_INVALID, "vae_layer_forward: batch %zu is too large", batch);
    float *c = vae_malloc(total * sizeof(float));
    if (!c)
        return vae_fail(VAE_ERR_NOMEM, "vae_layer_forward: out of memory for batch %zu", batch);
    vae_free(l->cache);
    l->cache = c;
    l->cache_x = c;
    l->cache_y = c + sx;
    l->cache_dy = c + sx + sy;
    l->cache_scratch = c + sx + 2 * sy;
    l->cache_batch_cap = batch;
    return VAE_OK;
}

int vae_layer_forward(vae_layer *layer, const float *x, size_t batch, float *y)
{
    if (!layer || !x || !y)
        return vae_fail(VAE_ERR_INVALID, "vae_layer_forward: %s is NULL",
                        !layer ? "layer" : !x ? "x" : "y");
    if (batch == 0)
        return vae_fail(VAE_ERR_INVALID, "vae_layer_forward: batch is 0");
    if (batch > (1u << 24))
        return vae_fail(VAE_ERR_INVALID, "vae_layer_forward: batch %zu is too large", batch);
    if (layer->owned_by_model)
        return vae_fail(VAE_ERR_STATE,
                        "vae_layer_forward: the layer belongs to a model; use the model");
    int rc = ensure_cache(layer, batch);
    if (rc)
        return rc;
    memcpy(layer->cache_x, x, batch * layer->in * sizeof(float));
    layer->ops->forward(layer, layer->cache_x, batch, layer->cache_y, layer->cache_scratch);
    memcpy(y, layer->cache_y, batch * layer->out * sizeof(float));
    layer->cache_batch = batch;
    return VAE_OK;
}

int vae_layer_backward(vae_layer *layer, const float *dy, float *dx)
{
    if (!layer || !dy)
        return vae_fail(VAE_ERR_INVALID, "vae_layer_backward: %s is NULL",
                        layer ? "dy" : "layer");
    if (layer->owned_by_model)
        return vae_fail(VAE_ERR_STATE,
                        "vae_layer_backward: the layer belongs to a model; use the model");
    if (layer->cache_batch == 0)
        return vae_fail(VAE_ERR_STATE, "vae_layer_backward: no vae_layer_forward() before it");
    size_t batch = layer->cache_batch;
    memcpy(layer->cache_dy, dy, batch * layer->out * sizeof(float));
    layer->ops->backward(layer, layer->cache_x, layer->cache_y, layer->cache_dy, batch, dx,
                         layer->cache_scratch, layer->dw, 1);
    return VAE_OK;
}

float *vae_layer_params(vae_layer *layer, size_t *count)
{
    int ok = layer && !layer->owned_by_model;
    if (count)
        *count = ok ? layer->n_params : 0;
    return ok ? layer->w : NULL;
}

float *vae_layer_grads(vae_layer *layer, size_t *count)
{
    int ok = layer && !layer->owned_by_model;
    if (count)
        *count = ok ? layer->n_params : 0;
    return ok ? layer->dw : NULL;
}

size_t vae_layer_input_size(const vae_layer *layer)
{
    return layer ? layer->in : 0;
}

size_t vae_layer_output_size(const vae_layer *layer)
{
    return layer ? layer->out : 0;
}

int vae_layer_kind(const vae_layer *layer)
{
    return layer ? layer->ops->kind : -1;
}

int vae_layer_activation(const vae_layer *layer)
{
    return layer ? layer->activation : -1;
}

int vae_layer_get_param(const vae_layer *layer, int param, size_t *value)
{
    const char *fn = "vae_layer_get_param";
    if (!layer || !value)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn, layer ? "value" : "layer");
    const vae_layer *l = layer;
    size_t v;
    switch (param) {
    case VAE_LAYER_INPUTS: v = l->in; break;
    case VAE_LAYER_OUTPUTS: v = l->out; break;
    case VAE_LAYER_PARAMS: v = l->n_params; break;
    case VAE_LAYER_IN_CHANNELS: v = l->in_c; break;
    case VAE_LAYER_IN_HEIGHT: v = l->in_h; break;
    case VAE_LAYER_IN_WIDTH: v = l->in_w; break;
    case VAE_LAYER_OUT_CHANNELS: v = l->out_c; break;
    case VAE_LAYER_OUT_HEIGHT: v = l->out_h; break;
    case VAE_LAYER_OUT_WIDTH: v = l->out_w; break;
    case VAE_LAYER_KERNEL_HEIGHT: v = l->kh; break;
    case VAE_LAYER_KERNEL_WIDTH: v = l->kw; break;
    case VAE_LAYER_STRIDE: v = l->stride; break;
    case VAE_LAYER_PADDING: v = l->pad; break;
    case VAE_LAYER_OUTPUT_PADDING: v = l->out_pad; break;
    default: return vae_fail(VAE_ERR_INVALID, "%s: unknown parameter %d", fn, param);
    }
    *value = v;
    return VAE_OK;
}

void vae_grad_store(float *grad, const float *tmp, size_t n, int accumulate)
{
    if (accumulate)
        for (size_t i = 0; i < n; i++)
            grad[i] += tmp[i];
    else
        memcpy(grad, tmp, n * sizeof *grad);
}
