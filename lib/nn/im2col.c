/* im2col and its adjoint col2im, shared by Conv2D and ConvTranspose2D. */
#include <stdint.h>
#include <string.h>

#include "../core/core.h"
#include "layer.h"

/* The output columns xx whose input column ix = xx stride + j - pad lies in
 * [0, w): [*lo, *hi). */
static void valid_range(size_t w, size_t stride, size_t pad, size_t j, size_t ow, size_t *lo,
                        size_t *hi)
{
    size_t a = j < pad ? (pad - j + stride - 1) / stride : 0;
    size_t b = w + pad > j ? (w + pad - j - 1) / stride + 1 : 0;
    b = b < ow ? b : ow;
    *lo = a < b ? a : b;
    *hi = b;
}

/* Sizes of the padded planes: every window of the image (kernel at a
 * position) lies inside [h + 2 pad][w + 2 pad]. The fast path keeps a padded
 * copy of the image there, and the offset of each window's corner. It needs
 * the copy to be no larger than the columns, and its offsets to fit 32 bits;
 * only a padding far wider than the kernel fails that. */
static int planes_fit(size_t h, size_t w, size_t kh, size_t kw, size_t pad, size_t oh, size_t ow)
{
    const double plane = (double)(h + 2 * pad) * (double)(w + 2 * pad);
    return plane < 2147483648.0 && plane <= (double)(kh * kw) * (double)(oh * ow);
}

size_t vae_im2col_work(size_t c, size_t h, size_t w, size_t kh, size_t kw, size_t pad, size_t oh,
                       size_t ow)
{
    return planes_fit(h, w, kh, kw, pad, oh, ow) ? c * (h + 2 * pad) * (w + 2 * pad) + oh * ow
                                                    : 0;
}

/* start[y ow + xx] = y stride wp + xx stride: where the window of output
 * position (y, xx) begins in a padded plane of width wp. */
static int32_t *window_starts(float *work, size_t planes, size_t stride, size_t wp, size_t oh,
                               size_t ow)
{
    int32_t *start = (int32_t *)(work + planes);
    for (size_t y = 0; y < oh; y++)
        for (size_t xx = 0; xx < ow; xx++)
            start[y * ow + xx] = (int32_t)(y * stride * wp + xx * stride);
    return start;
}

/* Without the padded planes: row by row, the valid range of each row copied
 * and the rest zeroed. */
static void im2col_rows(const float *x, size_t c, size_t h, size_t w, size_t kh, size_t kw,
                        size_t stride, size_t pad, size_t oh, size_t ow, float *col, size_t ld)
{
    for (size_t ch = 0; ch < c; ch++)
        for (size_t i = 0; i < kh; i++) {
            size_t ylo, yhi;
            valid_range(h, stride, pad, i, oh, &ylo, &yhi);
            for (size_t j = 0; j < kw; j++) {
                float *row = col + ((ch * kh + i) * kw + j) * ld;
                size_t lo, hi;
                valid_range(w, stride, pad, j, ow, &lo, &hi);
                memset(row, 0, ylo * ow * sizeof *row);
                for (size_t y = ylo; y < yhi; y++) {
                    float *dst = row + y * ow;
                    const float *src = x + (ch * h + y * stride + i - pad) * w + lo * stride + j -
                                       pad;
                    for (size_t xx = 0; xx < lo; xx++)
                        dst[xx] = 0.0f;
                    for (size_t t = 0; t < hi - lo; t++)
                        dst[lo + t] = src[t * stride];
                    for (size_t xx = hi; xx < ow; xx++)
                        dst[xx] = 0.0f;
                }
                memset(row + yhi * ow, 0, (oh - yhi) * ow * sizeof *row);
            }
        }
}

/* row[k] = q[start[k]], k < n: one gather across all output positions. */
static inline __attribute__((always_inline)) void gather(float *restrict row, const float *restrict q,
                          const int32_t *restrict start, size_t n)
{
    for (size_t k = 0; k < n; k++)
        row[k] = q[start[k]];
}

/* q[start[k]] += row[k], k < n; no two k share a start. */
static inline __attribute__((always_inline)) void scatter_add(float *restrict q, const float *restrict row,
                               const int32_t *restrict start, size_t n)
{
    for (size_t k = 0; k < n; k++)
        q[start[k]] += row[k];
}

VAE_CLONES void vae_im2col(const float *x, size_t c, size_t h, size_t w, size_t kh, size_t kw,
                           size_t stride, size_t pad, size_t oh, size_t ow, float *col, size_t ld,
                           float *work)
{
    if (!planes_fit(h, w, kh, kw, pad, oh, ow)) {
        im2col_rows(x, c, h, w, kh, kw, stride, pad, oh, ow, col, ld);
        return;
    }
    const size_t hp = h + 2 * pad, wp = w + 2 * pad, ohw = oh * ow;
    float *pl = work;
    for (size_t ch = 0; ch < c; ch++) {
        float *p = pl + ch * hp * wp;
        memset(p, 0, pad * wp * sizeof *p);
        for (size_t y = 0; y < h; y++) {
            float *r = p + (y + pad) * wp;
            memset(r, 0, pad * sizeof *r);
            memcpy(r + pad, x + (ch * h + y) * w, w * sizeof *r);
            memset(r + pad + w, 0, pad * sizeof *r);
        }
        memset(p + (h + pad) * wp, 0, pad * wp * sizeof *p);
    }
    const int32_t *start = window_starts(work, c * hp * wp, stride, wp, oh, ow);
    /* One gather per row of col, across all output positions at once. */
    for (size_t ch = 0; ch < c; ch++)
        for (size_t i = 0; i < kh; i++)
            for (size_t j = 0; j < kw; j++) {
                gather(col + ((ch * kh + i) * kw + j) * ld, pl + ch * hp * wp + i * wp + j, start,
                       ohw);
            }
}

/* Every element of x receives its terms in the order of (ch, i, j, y, xx),
 * whichever path runs: the sums do not depend on it. */
VAE_CLONES void vae_col2im(const float *col, size_t c, size_t h, size_t w, size_t kh, size_t kw,
                           size_t stride, size_t pad, size_t oh, size_t ow, float *x, size_t ld,
                           float *work)
{
    if (!planes_fit(h, w, kh, kw, pad, oh, ow)) {
        memset(x, 0, c * h * w * sizeof *x);
        for (size_t ch = 0; ch < c; ch++)
            for (size_t i = 0; i < kh; i++) {
                size_t ylo, yhi;
                valid_range(h, stride, pad, i, oh, &ylo, &yhi);
                for (size_t j = 0; j < kw; j++) {
                    const float *row = col + ((ch * kh + i) * kw + j) * ld;
                    size_t lo, hi;
                    valid_range(w, stride, pad, j, ow, &lo, &hi);
                    for (size_t y = ylo; y < yhi; y++) {
                        float *dst = x + (ch * h + y * stride + i - pad) * w + lo * stride + j -
                                     pad;
                        const float *src = row + y * ow + lo;
                        for (size_t t = 0; t < hi - lo; t++)
                            dst[t * stride] += src[t];
                    }
                }
            }
        return;
    }
    const size_t hp = h + 2 * pad, wp = w + 2 * pad, ohw = oh * ow;
    float *pl = work;
    memset(pl, 0, c * hp * wp * sizeof *pl);
    const int32_t *start = window_starts(work, c * hp * wp, stride, wp, oh, ow);
    for (size_t ch = 0; ch < c; ch++)
        for (size_t i = 0; i < kh; i++)
            for (size_t j = 0; j < kw; j++) {
                scatter_add(pl + ch * hp * wp + i * wp + j, col + ((ch * kh + i) * kw + j) * ld,
                            start, ohw);
            }
    /* The image is the planes' interior: sums that began at +0, as x's own
     * would have. */
    for (size_t ch = 0; ch < c; ch++)
        for (size_t y = 0; y < h; y++)
            memcpy(x + (ch * h + y) * w, pl + (ch * hp + y + pad) * wp + pad, w * sizeof *x);
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
