/* ConvTranspose2D (NCHW): the adjoint of Conv2D, i.e. its forward pass is the
 * convolution's input gradient (GEMM then col2im) and its input gradient is a
 * convolution (im2col then GEMM). W[in_c][out_c][kh][kw] then b[out_c], as
 * PyTorch stores it. Derivation in docs/math.md, "Transposed convolution". */
#include <string.h>

#include "../blas/blas.h"
#include "../core/core.h"
#include "activation.h"
#include "layer.h"

/* Chunks of bc samples as in conv2d.c, N = bc*hw columns per GEMM. Scratch:
 * col [out_c kk][N], then the input (or its gradient) in channel-major
 * order [in_c][N], twice; after them, the weight and bias gradients' sums,
 * then the tables of im2col/col2im. */
static float *convt_work(const vae_layer *l, float *scratch, size_t bc)
{
    const size_t ckk = l->out_c * l->kh * l->kw, hw = l->in_h * l->in_w;
    return scratch + (ckk + 2 * l->in_c) * bc * hw + l->n_weights + l->out_c;
}

/* The output's geometry under the kernel: the convolution this layer is the
 * adjoint of runs over it to the input's positions. */
static vae_im2col_geo convt_geo(const vae_layer *l)
{
    vae_im2col_geo g = {l->out_c,  l->out_h, l->out_w, l->kh,  l->kw,
                        l->stride, l->pad,   l->in_h,  l->in_w};
    return g;
}

static void convt_forward(const vae_layer *l, const float *x, size_t batch, float *y, float *scratch)
{
    const size_t ckk = l->out_c * l->kh * l->kw, hw = l->in_h * l->in_w;
    const size_t ohw = l->out_h * l->out_w, bc = vae_conv_chunk(ckk * hw, batch);
    float *col = scratch, *xt = scratch + ckk * bc * hw, *work = convt_work(l, scratch, bc);
    const vae_im2col_geo g = convt_geo(l);
    vae_im2col_prepare(&g, work);
    for (size_t b0 = 0; b0 < batch; b0 += bc) {
        size_t nb = batch - b0 < bc ? batch - b0 : bc, n = nb * hw;
        vae_nchw_to_cn(x + b0 * l->in, nb, l->in_c, hw, xt);
        /* col[out_c kk][n] = W[in_c][out_c kk]^T . xt[in_c][n] */
        vae_sgemm(1, 0, ckk, n, l->in_c, 1.0f, l->w, ckk, xt, n, 0.0f, col, n);
        for (size_t b = 0; b < nb; b++)
            vae_col2im(&g, col + b * hw, y + (b0 + b) * l->out, n, work);
    }
    for (size_t b = 0; b < batch; b++) /* one bias per channel: per sample */
        vae_act_bias_forward(l->activation, y + b * l->out, l->out_c, ohw, l->b, 1);
}

static void convt_backward(const vae_layer *l, const float *x, const float *y, float *dy,
                           size_t batch, float *dx, float *scratch, float *grad, int accumulate)
{
    float *dw = grad, *db = grad + l->n_weights;
    const size_t ckk = l->out_c * l->kh * l->kw, hw = l->in_h * l->in_w;
    const size_t ohw = l->out_h * l->out_w, bc = vae_conv_chunk(ckk * hw, batch);
    float *col = scratch, *xt = scratch + ckk * bc * hw, *dxt = xt + l->in_c * bc * hw;
    float *work = convt_work(l, scratch, bc);
    const vae_im2col_geo g = convt_geo(l);
    vae_im2col_prepare(&g, work);
    /* The batch's weight gradient is summed on its own in wt (conv2d.c says why). */
    float *tail = dxt + l->in_c * bc * hw;
    float *wt = accumulate ? tail : dw, *bt = tail + l->n_weights;
    vae_act_backward(l->activation, y, dy, batch * l->out);
    vae_conv_bias_grad(dy, batch, l->out_c, ohw, bt, db, accumulate);
    for (size_t b0 = 0; b0 < batch; b0 += bc) {
        size_t nb = batch - b0 < bc ? batch - b0 : bc, n = nb * hw;
        for (size_t b = 0; b < nb; b++)
            vae_im2col(&g, dy + (b0 + b) * l->out, col + b * hw, n, work);
        vae_nchw_to_cn(x + b0 * l->in, nb, l->in_c, hw, xt);
        /* wt[in_c][out_c kk] (+)= xt[in_c][n] . col[out_c kk][n]^T */
        vae_sgemm(0, 1, l->in_c, ckk, n, 1.0f, xt, n, col, n, b0 ? 1.0f : 0.0f, wt, ckk);
        if (dx) {
            /* dxt[in_c][n] = W[in_c][out_c kk] . col */
            vae_sgemm(0, 0, l->in_c, n, ckk, 1.0f, l->w, ckk, col, n, 0.0f, dxt, n);
            vae_cn_to_nchw(dxt, nb, l->in_c, hw, dx + b0 * l->in);
        }
    }
    if (accumulate)
        vae_grad_store(dw, wt, l->n_weights, 1);
}

static size_t convt_scratch(const vae_layer *l, size_t batch)
{
    const vae_im2col_geo g = convt_geo(l);
    const size_t ckk = l->out_c * l->kh * l->kw, hw = l->in_h * l->in_w;
    size_t bc = vae_conv_chunk(ckk * hw, batch ? batch : 1);
    return (ckk + 2 * l->in_c) * bc * hw + l->n_weights + l->out_c +
           vae_im2col_work(&g);
}

static int convt_from_fields(vae_layer **out, int activation, const uint64_t *fields, size_t n)
{
    size_t f[9];
    int rc = vae_conv_fields(fields, n, 9, f, "transposed convolution");
    return rc ? rc
              : vae_layer_conv2d_transpose_create(out, f[0], f[1], f[2], f[3], f[4], f[5], f[6],
                                                  f[7], f[8], activation);
}

static size_t convt_weight_shape(const vae_layer *l, size_t *shape)
{
    shape[0] = l->in_c;
    shape[1] = l->out_c;
    shape[2] = l->kh;
    shape[3] = l->kw;
    return 4;
}

const vae_layer_ops vae_conv2d_transpose_ops = {
    VAE_LAYER_CONV2D_TRANSPOSE, "conv2d_transpose", convt_forward, convt_backward,
    convt_scratch, vae_conv_describe, convt_from_fields, convt_weight_shape};

int vae_layer_conv2d_transpose_create(vae_layer **out, size_t in_channels, size_t in_h,
                                      size_t in_w, size_t out_channels, size_t kernel_h,
                                      size_t kernel_w, size_t stride, size_t padding,
                                      size_t output_padding, int activation)
{
    const char *fn = "vae_layer_conv2d_transpose_create";
    if (!out)
        return vae_fail(VAE_ERR_INVALID, "%s: out is NULL", fn);
    *out = NULL;
    int rc = vae_conv_check(fn, in_channels, in_h, in_w, out_channels, kernel_h, kernel_w,
                            stride, activation);
    if (rc)
        return rc;
    if (padding > (1u << 16))
        return vae_fail(VAE_ERR_INVALID, "%s: padding %zu is too large", fn, padding);
    if (output_padding >= stride)
        return vae_fail(VAE_ERR_SHAPE, "%s: output_padding %zu must be smaller than stride %zu",
                        fn, output_padding, stride);
    /* out = (in - 1) stride - 2 pad + kernel + output_padding, as PyTorch */
    double oh = ((double)in_h - 1) * (double)stride - 2.0 * (double)padding +
                (double)kernel_h + (double)output_padding;
    double ow = ((double)in_w - 1) * (double)stride - 2.0 * (double)padding +
                (double)kernel_w + (double)output_padding;
    if (oh < 1 || ow < 1)
        return vae_fail(VAE_ERR_SHAPE,
                        "%s: the output would be %.0fx%.0f (input %zux%zu, kernel %zux%zu, stride "
                        "%zu, padding %zu, output_padding %zu)",
                        fn, oh, ow, in_h, in_w, kernel_h, kernel_w, stride, padding,
                        output_padding);
    if (oh > (double)(1u << 16) || ow > (double)(1u << 16))
        return vae_fail(VAE_ERR_INVALID, "%s: the output %.0fx%.0f is too large", fn, oh, ow);
    /* PyTorch takes fan_in from dimension 1 of W[in_c][out_c][kh][kw]. */
    return vae_conv_alloc(out, &vae_conv2d_transpose_ops, in_channels, in_h, in_w,
                          out_channels, (size_t)oh, (size_t)ow, kernel_h, kernel_w, stride,
                          padding, output_padding, activation,
                          out_channels * kernel_h * kernel_w, fn);
}
