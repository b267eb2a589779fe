/* Conv2D (NCHW) as im2col + GEMM over chunks of samples; derivation in docs/math.md,
 * "Convolution". W[out_c][in_c][kh][kw] then b[out_c], as PyTorch. */
#include <string.h>

#include "../blas/blas.h"
#include "../core/core.h"
#include "activation.h"
#include "layer.h"

#define CONV_MAX_SIDE ((size_t)1 << 16)
#define CONV_MAX_FEATURES ((size_t)1 << 24)

/* Samples go through in chunks of bc: their columns side by side make one
 * GEMM of N = bc*ohw columns instead of bc small ones. Scratch: col
 * [ckk][N], then a [ckk][N] buffer (dcol), then [out_c][N] (outputs and
 * output gradients in channel-major order); after them, the weight and
 * bias gradients' sums, then the tables of im2col/col2im. */
static float *conv_work(const vae_layer *l, float *scratch, size_t bc)
{
    const size_t ckk = l->in_c * l->kh * l->kw, ohw = l->out_h * l->out_w;
    return scratch + (2 * ckk + l->out_c) * bc * ohw + l->n_weights + l->out_c;
}

/* The input's geometry under the kernel. */
static vae_im2col_geo conv_geo(const vae_layer *l)
{
    vae_im2col_geo g = {l->in_c,   l->in_h, l->in_w,  l->kh,   l->kw,
                        l->stride, l->pad,  l->out_h, l->out_w};
    return g;
}

static void conv_forward(const vae_layer *l, const float *x, size_t batch, float *y, float *scratch)
{
    const size_t ckk = l->in_c * l->kh * l->kw, ohw = l->out_h * l->out_w;
    const size_t bc = vae_conv_chunk(ckk * ohw, batch);
    float *col = scratch, *cn = scratch + 2 * ckk * bc * ohw, *work = conv_work(l, scratch, bc);
    const vae_im2col_geo g = conv_geo(l);
    vae_im2col_prepare(&g, work);
    for (size_t b0 = 0; b0 < batch; b0 += bc) {
        size_t nb = batch - b0 < bc ? batch - b0 : bc, n = nb * ohw;
        for (size_t b = 0; b < nb; b++)
            vae_im2col(&g, x + (b0 + b) * l->in, col + b * ohw, n, work);
        /* cn[out_c][n] = W[out_c][ckk] . col[ckk][n] */
        vae_sgemm(0, 0, l->out_c, n, ckk, 1.0f, l->w, ckk, col, n, 0.0f, cn, n);
        vae_cn_to_nchw(cn, nb, l->out_c, ohw, y + b0 * l->out);
    }
    for (size_t b = 0; b < batch; b++) /* one bias per channel: per sample */
        vae_act_bias_forward(l->activation, y + b * l->out, l->out_c, ohw, l->b, 1);
}

static void conv_backward(const vae_layer *l, const float *x, const float *y, float *dy,
                          size_t batch, float *dx, float *scratch, float *grad, int accumulate)
{
    float *dw = grad, *db = grad + l->n_weights;
    const size_t ckk = l->in_c * l->kh * l->kw, ohw = l->out_h * l->out_w;
    const size_t bc = vae_conv_chunk(ckk * ohw, batch);
    float *col = scratch, *dcol = scratch + ckk * bc * ohw, *dz = dcol + ckk * bc * ohw;
    float *work = conv_work(l, scratch, bc);
    const vae_im2col_geo g = conv_geo(l);
    vae_im2col_prepare(&g, work);
    /* This batch's weight gradient is summed over its chunks in wt, on its
     * own, then stored: a GEMM of many columns splits its inner dimension,
     * so adding chunk products straight into a slab that already holds
     * other blocks' sums would round differently from adding the block's
     * finished sum (docs/math.md, "Reproducibility"). */
    float *wt = accumulate ? dz + l->out_c * bc * ohw : dw, *bt = dz + l->out_c * bc * ohw +
                                                               l->n_weights;
    vae_act_backward(l->activation, y, dy, batch * l->out);
    vae_conv_bias_grad(dy, batch, l->out_c, ohw, bt, db, accumulate);
    for (size_t b0 = 0; b0 < batch; b0 += bc) {
        size_t nb = batch - b0 < bc ? batch - b0 : bc, n = nb * ohw;
        vae_nchw_to_cn(dy + b0 * l->out, nb, l->out_c, ohw, dz);
        /* The columns are rebuilt rather than kept from the forward pass:
         * the copy costs less than B times the column memory. */
        for (size_t b = 0; b < nb; b++)
            vae_im2col(&g, x + (b0 + b) * l->in, col + b * ohw, n, work);
        /* wt[out_c][ckk] (+)= dz[out_c][n] . col[ckk][n]^T */
        vae_sgemm(0, 1, l->out_c, ckk, n, 1.0f, dz, n, col, n, b0 ? 1.0f : 0.0f, wt, ckk);
        if (dx) {
            /* dcol[ckk][n] = W[out_c][ckk]^T . dz, then scattered back */
            vae_sgemm(1, 0, ckk, n, l->out_c, 1.0f, l->w, ckk, dz, n, 0.0f, dcol, n);
            for (size_t b = 0; b < nb; b++)
                vae_col2im(&g, dcol + b * ohw, dx + (b0 + b) * l->in, n, work);
        }
    }
    if (accumulate)
        vae_grad_store(dw, wt, l->n_weights, 1);
}

static size_t conv_scratch(const vae_layer *l, size_t batch)
{
    const vae_im2col_geo g = conv_geo(l);
    const size_t ckk = l->in_c * l->kh * l->kw, ohw = l->out_h * l->out_w;
    size_t bc = vae_conv_chunk(ckk * ohw, batch ? batch : 1);
    return (2 * ckk + l->out_c) * bc * ohw + l->n_weights + l->out_c +
           vae_im2col_work(&g);
}

static int conv_from_fields(vae_layer **out, int activation, const uint64_t *fields, size_t n)
{
    size_t f[8];
    int rc = vae_conv_fields(fields, n, 8, f, "convolution");
    return rc ? rc
              : vae_layer_conv2d_create(out, f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7],
                                        activation);
}

static size_t conv_weight_shape(const vae_layer *l, size_t *shape)
{
    shape[0] = l->out_c;
    shape[1] = l->in_c;
    shape[2] = l->kh;
    shape[3] = l->kw;
    return 4;
}

const vae_layer_ops vae_conv2d_ops = {VAE_LAYER_CONV2D, "conv2d", conv_forward, conv_backward,
                                      conv_scratch, vae_conv_describe, conv_from_fields,
                                      conv_weight_shape};

size_t vae_conv_describe(const vae_layer *l, uint64_t *fields)
{
    size_t v[9] = {l->in_c, l->in_h, l->in_w, l->out_c, l->kh, l->kw, l->stride, l->pad,
                   l->out_pad};
    size_t n = l->ops->kind == VAE_LAYER_CONV2D ? 8 : 9;
    for (size_t i = 0; i < n; i++)
        fields[i] = v[i];
    return n;
}

int vae_conv_fields(const uint64_t *fields, size_t n, size_t want, size_t *f, const char *what)
{
    if (n != want)
        return vae_fail(VAE_ERR_FORMAT, "%s record has %zu fields, expected %zu", what, n, want);
    for (size_t i = 0; i < want; i++) {
        if (fields[i] > ((uint64_t)1 << 32))
            return vae_fail(VAE_ERR_FORMAT, "%s field %zu out of range", what, i);
        f[i] = (size_t)fields[i];
    }
    return VAE_OK;
}

void vae_conv_bias_grad(const float *dz, size_t batch, size_t channels, size_t hw, float *tmp,
                        float *db, int accumulate)
{
    for (size_t c = 0; c < channels; c++)
        tmp[c] = 0.0f;
    for (size_t b = 0; b < batch; b++)
        for (size_t c = 0; c < channels; c++) {
            const float *p = dz + (b * channels + c) * hw;
            float s = 0.0f;
            for (size_t k = 0; k < hw; k++)
                s += p[k];
            tmp[c] += s;
        }
    vae_grad_store(db, tmp, channels, accumulate);
}

/* Shared argument checks of both convolution kinds. */
int vae_conv_check(const char *fn, size_t in_c, size_t in_h, size_t in_w, size_t out_c,
                   size_t kh, size_t kw, size_t stride, int activation)
{
    if (in_c == 0 || in_h == 0 || in_w == 0 || out_c == 0 || kh == 0 || kw == 0 || stride == 0)
        return vae_fail(VAE_ERR_INVALID,
                        "%s: channels, image sizes, kernel and stride must be positive (in_c %zu, "
                        "in %zux%zu, out_c %zu, kernel %zux%zu, stride %zu)",
                        fn, in_c, in_h, in_w, out_c, kh, kw, stride);
    if (in_c > CONV_MAX_SIDE || in_h > CONV_MAX_SIDE || in_w > CONV_MAX_SIDE ||
        out_c > CONV_MAX_SIDE || kh > CONV_MAX_SIDE || kw > CONV_MAX_SIDE ||
        stride > CONV_MAX_SIDE)
        return vae_fail(VAE_ERR_INVALID, "%s: a size exceeds %zu", fn, CONV_MAX_SIDE);
    if (!vae_act_valid(activation))
        return vae_fail(VAE_ERR_INVALID, "%s: unknown activation %d", fn, activation);
    return VAE_OK;
}

int vae_conv_alloc(vae_layer **out, const vae_layer_ops *ops, size_t in_c,
                   size_t in_h, size_t in_w, size_t out_c, size_t out_h, size_t out_w,
                   size_t kh, size_t kw, size_t stride, size_t pad, size_t out_pad,
                   int activation, size_t fan_in, const char *fn)
{
    size_t in = in_c * in_h * in_w, outf = out_c * out_h * out_w;
    int kind = ops->kind;
    double cols = (double)(kind == VAE_LAYER_CONV2D ? in_c : out_c) * (double)(kh * kw) *
                  (double)(kind == VAE_LAYER_CONV2D ? out_h * out_w : in_h * in_w);
    if (in > CONV_MAX_FEATURES || outf > CONV_MAX_FEATURES || cols > (double)(1u << 28) ||
        (double)in_c * (double)out_c * (double)(kh * kw) > (double)(1u << 28))
        return vae_fail(VAE_ERR_INVALID, "%s: layer too large (%zu inputs, %zu outputs)", fn, in,
                        outf);
    int rc = vae_layer_alloc(out, ops, in, outf, activation, in_c * out_c * kh * kw,
                             out_c, fan_in);
    if (rc)
        return rc;
    vae_layer *l = *out;
    l->in_c = in_c;
    l->in_h = in_h;
    l->in_w = in_w;
    l->out_c = out_c;
    l->out_h = out_h;
    l->out_w = out_w;
    l->kh = kh;
    l->kw = kw;
    l->stride = stride;
    l->pad = pad;
    l->out_pad = out_pad;
    return VAE_OK;
}

int vae_layer_conv2d_create(vae_layer **out, size_t in_channels, size_t in_h, size_t in_w,
                            size_t out_channels, size_t kernel_h, size_t kernel_w,
                            size_t stride, size_t padding, int activation)
{
    const char *fn = "vae_layer_conv2d_create";
    if (!out)
        return vae_fail(VAE_ERR_INVALID, "%s: out is NULL", fn);
    *out = NULL;
    int rc = vae_conv_check(fn, in_channels, in_h, in_w, out_channels, kernel_h, kernel_w,
                            stride, activation);
    if (rc)
        return rc;
    if (padding > CONV_MAX_SIDE)
        return vae_fail(VAE_ERR_INVALID, "%s: padding %zu is too large", fn, padding);
    if (kernel_h > in_h + 2 * padding || kernel_w > in_w + 2 * padding)
        return vae_fail(VAE_ERR_SHAPE,
                        "%s: kernel %zux%zu is larger than the padded input %zux%zu (input "
                        "%zux%zu, padding %zu)",
                        fn, kernel_h, kernel_w, in_h + 2 * padding, in_w + 2 * padding, in_h,
                        in_w, padding);
    /* out = floor((in + 2 pad - kernel) / stride) + 1, as PyTorch's Conv2d */
    size_t oh = (in_h + 2 * padding - kernel_h) / stride + 1;
    size_t ow = (in_w + 2 * padding - kernel_w) / stride + 1;
    return vae_conv_alloc(out, &vae_conv2d_ops, in_channels, in_h, in_w,
                          out_channels, oh, ow, kernel_h, kernel_w, stride, padding, 0,
                          activation, in_channels * kernel_h * kernel_w, fn);
}
