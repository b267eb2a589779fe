/* im2col and its adjoint col2im, shared by Conv2D and ConvTranspose2D. */
#include <string.h>

#include "layer.h"

void vae_im2col(const float *x, size_t c, size_t h, size_t w, size_t kh, size_t kw,
                size_t stride, size_t pad, size_t oh, size_t ow, float *col, size_t ld)
{
    for (size_t ch = 0; ch < c; ch++)
        for (size_t i = 0; i < kh; i++)
            for (size_t j = 0; j < kw; j++) {
                float *row = col + ((ch * kh + i) * kw + j) * ld;
                for (size_t y = 0; y < oh; y++) {
                    /* iy = y*stride + i - pad, checked in signed arithmetic */
                    long iy = (long)(y * stride + i) - (long)pad;
                    float *dst = row + y * ow;
                    if (iy < 0 || iy >= (long)h) {
                        for (size_t xx = 0; xx < ow; xx++)
                            dst[xx] = 0.0f;
                        continue;
                    }
                    const float *src = x + (ch * h + (size_t)iy) * w;
                    for (size_t xx = 0; xx < ow; xx++) {
                        long ix = (long)(xx * stride + j) - (long)pad;
                        dst[xx] = ix >= 0 && ix < (long)w ? src[ix] : 0.0f;
                    }
                }
            }
}

void vae_col2im_add(const float *col, size_t c, size_t h, size_t w, size_t kh, size_t kw,
                    size_t stride, size_t pad, size_t oh, size_t ow, float *x, size_t ld)
{
    for (size_t ch = 0; ch < c; ch++)
        for (size_t i = 0; i < kh; i++)
            for (size_t j = 0; j < kw; j++) {
                const float *row = col + ((ch * kh + i) * kw + j) * ld;
                for (size_t y = 0; y < oh; y++) {
                    long iy = (long)(y * stride + i) - (long)pad;
                    if (iy < 0 || iy >= (long)h)
                        continue;
                    const float *src = row + y * ow;
                    float *dst = x + (ch * h + (size_t)iy) * w;
                    for (size_t xx = 0; xx < ow; xx++) {
                        long ix = (long)(xx * stride + j) - (long)pad;
                        if (ix >= 0 && ix < (long)w)
                            dst[ix] += src[xx];
                    }
                }
            }
}

void vae_nchw_to_cn(const float *src, size_t batch, size_t c, size_t hw, float *dst)
{
    for (size_t b = 0; b < batch; b++)
        for (size_t ch = 0; ch < c; ch++)
            memcpy(dst + ch * batch * hw + b * hw, src + (b * c + ch) * hw, hw * sizeof(float));
}

void vae_cn_to_nchw(const float *src, size_t batch, size_t c, size_t hw, float *dst)
{
    for (size_t b = 0; b < batch; b++)
        for (size_t ch = 0; ch < c; ch++)
            memcpy(dst + (b * c + ch) * hw, src + ch * batch * hw + b * hw, hw * sizeof(float));
}

size_t vae_conv_chunk(size_t per_sample, size_t batch)
{
    size_t n = per_sample ? VAE_CONV_CHUNK_FLOATS / per_sample : batch;
    if (n < 1)
        n = 1;
    return n < batch ? n : batch;
}
