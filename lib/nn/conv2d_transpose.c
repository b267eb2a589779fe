/* ConvTranspose2D (NCHW): the adjoint of Conv2D, i.e. its forward pass is the
 * convolution's input gradient (GEMM then col2im) and its input gradient is a
 * convolution (im2col then GEMM). W[in_c][out_c][kh][kw] then b[out_c], as
 * PyTorch stores it. Derivation in docs/math.md, "Transposed convolution". */
#include "../blas/blas.h"
#include "../core/core.h"
#include "activation.h"
#include "layer.h"

static void convt_forward(vae_layer *l, const float *x, size_t batch, float *y, float *col)
{
    const size_t ckk = l->out_c * l->kh * l->kw, hw = l->in_h * l->in_w;
    const size_t ohw = l->out_h * l->out_w;
    for (size_t b = 0; b < batch; b++) {
        float *yb = y + b * l->out;
        /* col[out_c kk][hw] = W[in_c][out_c kk]^T . x_b[in_c][hw] */
        vae_sgemm(1, 0, ckk, hw, l->in_c, 1.0f, l->w, ckk, x + b * l->in, hw, 0.0f, col, hw);
        for (size_t k = 0; k < l->out; k++)
            yb[k] = 0.0f;
        vae_col2im_add(col, l->out_c, l->out_h, l->out_w, l->kh, l->kw, l->stride, l->pad,
                       l->in_h, l->in_w, yb);
        vae_act_bias_forward(l->activation, yb, l->out_c, ohw, l->b, 1);
    }
}

static void convt_backward(vae_layer *l, const float *x, const float *y, float *dy,
                           size_t batch, float *dx, float *col, float *grad)
{
    float *dw = grad, *db = grad + l->n_weights;
    const size_t ckk = l->out_c * l->kh * l->kw, hw = l->in_h * l->in_w;
    const size_t ohw = l->out_h * l->out_w;
    vae_act_backward(l->activation, y, dy, batch * l->out);
    for (size_t b = 0; b < batch; b++) {
        const float *dz = dy + b * l->out; /* [out_c][ohw] */
        vae_conv_bias_grad(dz, l->out_c, ohw, db);
        vae_im2col(dz, l->out_c, l->out_h, l->out_w, l->kh, l->kw, l->stride, l->pad, l->in_h,
                   l->in_w, col);
        /* dW[in_c][out_c kk] += x_b[in_c][hw] . col[out_c kk][hw]^T */
        vae_sgemm(0, 1, l->in_c, ckk, hw, 1.0f, x + b * l->in, hw, col, hw, 1.0f, dw, ckk);
        /* dx_b[in_c][hw] = W[in_c][out_c kk] . col */
        if (dx)
            vae_sgemm(0, 0, l->in_c, hw, ckk, 1.0f, l->w, ckk, col, hw, 0.0f, dx + b * l->in,
                      hw);
    }
}

static size_t convt_scratch(const vae_layer *l, size_t batch)
{
    (void)batch;
    return l->out_c * l->kh * l->kw * l->in_h * l->in_w;
}

static const vae_layer_ops convt_ops = {convt_forward, convt_backward, convt_scratch};

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
    return vae_conv_alloc(out, &convt_ops, VAE_LAYER_CONV2D_TRANSPOSE, in_channels, in_h, in_w,
                          out_channels, (size_t)oh, (size_t)ow, kernel_h, kernel_w, stride,
                          padding, output_padding, activation,
                          out_channels * kernel_h * kernel_w, fn);
}
