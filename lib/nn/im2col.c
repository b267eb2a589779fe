/* im2col and its adjoint col2im, shared by Conv2D and ConvTranspose2D.
 *
 * im2col copies the image into a plane padded with zeros, where every window
 * lies inside, and then gathers each row of col from it through a table of
 * window offsets. col2im is written as a gather too: each pixel sums the
 * entries of col that reach it, in the row order of col (tap (i, j)
 * ascending), from +0: the sums a scatter of col's rows in order would make,
 * bit for bit, without a read-modify-write per entry. With AVX-512 both
 * gathers are the hardware's (vgatherdps), 16 lanes at a time; elsewhere they
 * are scalar loops over the same tables, with the same results. */
#include <stdint.h>
#include <string.h>

#include "../core/core.h"
#include "layer.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(VAE_NO_CLONES)
#include <immintrin.h>
#define IM2COL_AVX512 1
#endif

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

/* Most taps that reach one pixel: ceil(kh / stride) ceil(kw / stride). */
static size_t pixel_taps(const vae_im2col_geo *g)
{
    return ((g->kh + g->stride - 1) / g->stride) * ((g->kw + g->stride - 1) / g->stride);
}

/* The tables pay when the padded plane is no larger than the columns, and
 * their offsets fit 32 bits; only a padding far wider than the kernel fails
 * that, and then the row-by-row loops run. */
static int tables_fit(const vae_im2col_geo *g)
{
    const double plane = (double)(g->h + 2 * g->pad) * (double)(g->w + 2 * g->pad);
    const double cols = (double)(g->kh * g->kw) * (double)(g->oh * g->ow);
    const double taps = (double)pixel_taps(g) * (double)(g->h * g->w);
    return plane < 2147483648.0 && plane <= cols && taps <= 2.0 * cols + 4096.0 &&
           (double)g->c * cols < 2147483648.0;
}

/* Where the tables sit in work (floats). */
typedef struct layout {
    size_t planes, start, tap_r, tap_k, end;
} layout;

static layout work_layout(const vae_im2col_geo *g)
{
    const size_t hp = g->h + 2 * g->pad, wp = g->w + 2 * g->pad, t = pixel_taps(g);
    layout o;
    o.planes = 0;
    o.start = g->c * hp * wp;
    o.tap_r = o.start + g->oh * g->ow;
    o.tap_k = o.tap_r + t * g->h * g->w;
    o.end = o.tap_k + t * g->h * g->w;
    return o;
}

size_t vae_im2col_work(const vae_im2col_geo *g)
{
    return tables_fit(g) ? work_layout(g).end : 0;
}

void vae_im2col_prepare(const vae_im2col_geo *g, float *work)
{
    if (!tables_fit(g))
        return;
    const layout o = work_layout(g);
    const size_t wp = g->w + 2 * g->pad, hw = g->h * g->w, nt = pixel_taps(g);
    /* The padded planes' borders: zero for every image; vae_im2col writes
     * only the interiors. */
    memset(work + o.planes, 0, (o.start - o.planes) * sizeof *work);
    /* start[y ow + xx]: where the window of output (y, xx) begins in a
     * padded plane */
    int32_t *start = (int32_t *)(work + o.start);
    for (size_t y = 0; y < g->oh; y++)
        for (size_t xx = 0; xx < g->ow; xx++)
            start[y * g->ow + xx] = (int32_t)(y * g->stride * wp + xx * g->stride);
    /* For pixel p and its t-th tap in (i, j) order: the row i kw + j of a
     * channel's block of col and the column y ow + xx there (-1: no tap). */
    int32_t *tr = (int32_t *)(work + o.tap_r), *tk = (int32_t *)(work + o.tap_k);
    for (size_t py = 0; py < g->h; py++)
        for (size_t px = 0; px < g->w; px++) {
            const size_t p = py * g->w + px;
            size_t t = 0;
            for (size_t i = 0; i < g->kh; i++) {
                const size_t a = py + g->pad; /* = y stride + i */
                if (a < i || (a - i) % g->stride || (a - i) / g->stride >= g->oh)
                    continue;
                for (size_t j = 0; j < g->kw; j++) {
                    const size_t b = px + g->pad;
                    if (b < j || (b - j) % g->stride || (b - j) / g->stride >= g->ow)
                        continue;
                    tr[t * hw + p] = (int32_t)(i * g->kw + j);
                    tk[t * hw + p] = (int32_t)(((a - i) / g->stride) * g->ow + (b - j) / g->stride);
                    t++;
                }
            }
            for (; t < nt; t++) {
                tr[t * hw + p] = -1;
                tk[t * hw + p] = 0;
            }
        }
}

/* ---- the row-by-row loops (no tables) ---------------------------------- */

static void im2col_rows(const vae_im2col_geo *g, const float *x, float *col, size_t ld)
{
    const size_t h = g->h, w = g->w, s = g->stride, pad = g->pad, oh = g->oh, ow = g->ow;
    for (size_t ch = 0; ch < g->c; ch++)
        for (size_t i = 0; i < g->kh; i++) {
            size_t ylo, yhi;
            valid_range(h, s, pad, i, oh, &ylo, &yhi);
            for (size_t j = 0; j < g->kw; j++) {
                float *row = col + ((ch * g->kh + i) * g->kw + j) * ld;
                size_t lo, hi;
                valid_range(w, s, pad, j, ow, &lo, &hi);
                memset(row, 0, ylo * ow * sizeof *row);
                for (size_t y = ylo; y < yhi; y++) {
                    float *dst = row + y * ow;
                    const float *src = x + (ch * h + y * s + i - pad) * w + lo * s + j - pad;
                    for (size_t xx = 0; xx < lo; xx++)
                        dst[xx] = 0.0f;
                    for (size_t t = 0; t < hi - lo; t++)
                        dst[lo + t] = src[t * s];
                    for (size_t xx = hi; xx < ow; xx++)
                        dst[xx] = 0.0f;
                }
                memset(row + yhi * ow, 0, (oh - yhi) * ow * sizeof *row);
            }
        }
}

static void col2im_rows(const vae_im2col_geo *g, const float *col, float *x, size_t ld)
{
    const size_t h = g->h, w = g->w, s = g->stride, pad = g->pad, oh = g->oh, ow = g->ow;
    memset(x, 0, g->c * h * w * sizeof *x);
    for (size_t ch = 0; ch < g->c; ch++)
        for (size_t i = 0; i < g->kh; i++) {
            size_t ylo, yhi;
            valid_range(h, s, pad, i, oh, &ylo, &yhi);
            for (size_t j = 0; j < g->kw; j++) {
                const float *row = col + ((ch * g->kh + i) * g->kw + j) * ld;
                size_t lo, hi;
                valid_range(w, s, pad, j, ow, &lo, &hi);
                for (size_t y = ylo; y < yhi; y++) {
                    float *dst = x + (ch * h + y * s + i - pad) * w + lo * s + j - pad;
                    const float *src = row + y * ow + lo;
                    for (size_t t = 0; t < hi - lo; t++)
                        dst[t * s] += src[t];
                }
            }
        }
}

/* ---- the gathers, scalar and AVX-512 ----------------------------------- */

/* row[k] = q[start[k]], k < n. */
static void gather_row(float *row, const float *q, const int32_t *start, size_t n)
{
    for (size_t k = 0; k < n; k++)
        row[k] = q[start[k]];
}

/* x[p] = the sum over the taps t of pixel p, in order, of
 * cb[tr[t][p] ld + tk[t][p]], from +0; p < hw. */
static void gather_sums(float *x, const float *cb, const int32_t *tr, const int32_t *tk,
                        size_t nt, size_t hw, size_t ld)
{
    for (size_t p = 0; p < hw; p++) {
        float acc = 0.0f;
        for (size_t t = 0; t < nt; t++) {
            const int32_t r = tr[t * hw + p];
            if (r >= 0)
                acc += cb[(size_t)r * ld + (size_t)tk[t * hw + p]];
        }
        x[p] = acc;
    }
}

#ifdef IM2COL_AVX512
__attribute__((target("avx512f"))) static void gather_row_avx512(float *row, const float *q,
                                                                const int32_t *start, size_t n)
{
    size_t k = 0;
    for (; k + 16 <= n; k += 16) {
        const __m512i ix = _mm512_loadu_si512((const void *)(start + k));
        _mm512_storeu_ps(row + k, _mm512_i32gather_ps(ix, q, 4));
    }
    if (k < n) {
        const __mmask16 m = (__mmask16)((1u << (n - k)) - 1u);
        const __m512i ix = _mm512_maskz_loadu_epi32(m, start + k);
        _mm512_mask_storeu_ps(row + k, m,
                              _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, ix, q, 4));
    }
}

/* gather_sums, 16 pixels at a time: a lane adds a tap only where it has one
 * (a masked add), so every lane makes the scalar loop's sums. */
__attribute__((target("avx512f"))) static void gather_sums_avx512(float *x, const float *cb,
                                                                 const int32_t *tr,
                                                                 const int32_t *tk, size_t nt,
                                                                 size_t hw, size_t ld)
{
    const __m512i vld = _mm512_set1_epi32((int)ld), zero = _mm512_setzero_si512();
    for (size_t p = 0; p < hw; p += 16) {
        const __mmask16 live = hw - p >= 16 ? (__mmask16)0xffff
                                            : (__mmask16)((1u << (hw - p)) - 1u);
        __m512 acc = _mm512_setzero_ps();
        for (size_t t = 0; t < nt; t++) {
            const __m512i r = _mm512_maskz_loadu_epi32(live, tr + t * hw + p);
            const __m512i k = _mm512_maskz_loadu_epi32(live, tk + t * hw + p);
            const __mmask16 m = _mm512_mask_cmpge_epi32_mask(live, r, zero);
            const __m512i off = _mm512_add_epi32(_mm512_mullo_epi32(r, vld), k);
            const __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, off, cb, 4);
            acc = _mm512_mask_add_ps(acc, m, acc, v);
        }
        _mm512_mask_storeu_ps(x + p, live, acc);
    }
}

static int use_avx512(void)
{
    return __builtin_cpu_supports("avx512f");
}
#endif

/* ---- im2col and col2im ------------------------------------------------- */

void vae_im2col(const vae_im2col_geo *g, const float *x, float *col, size_t ld, float *work)
{
    if (!tables_fit(g)) {
        im2col_rows(g, x, col, ld);
        return;
    }
    const layout o = work_layout(g);
    const size_t h = g->h, w = g->w, pad = g->pad, hp = h + 2 * pad, wp = w + 2 * pad;
    const size_t taps = g->kh * g->kw, ohw = g->oh * g->ow;
    float *pl = work + o.planes;
    /* the interiors; the borders stay as vae_im2col_prepare zeroed them */
    for (size_t ch = 0; ch < g->c; ch++)
        for (size_t y = 0; y < h; y++)
            memcpy(pl + (ch * hp + y + pad) * wp + pad, x + (ch * h + y) * w, w * sizeof *x);
    const int32_t *start = (const int32_t *)(work + o.start);
#ifdef IM2COL_AVX512
    const int wide = use_avx512();
#endif
    for (size_t ch = 0; ch < g->c; ch++)
        for (size_t r = 0; r < taps; r++) {
            const float *q = pl + ch * hp * wp + (r / g->kw) * wp + r % g->kw;
            float *row = col + (ch * taps + r) * ld;
#ifdef IM2COL_AVX512
            if (wide) {
                gather_row_avx512(row, q, start, ohw);
                continue;
            }
#endif
            gather_row(row, q, start, ohw);
        }
}

void vae_col2im(const vae_im2col_geo *g, const float *col, float *x, size_t ld,
                const float *work)
{
    if (!tables_fit(g)) {
        col2im_rows(g, col, x, ld);
        return;
    }
    const layout o = work_layout(g);
    const size_t hw = g->h * g->w, taps = g->kh * g->kw, nt = pixel_taps(g);
    const int32_t *tr = (const int32_t *)(work + o.tap_r), *tk = (const int32_t *)(work + o.tap_k);
#ifdef IM2COL_AVX512
    if (use_avx512()) {
        for (size_t ch = 0; ch < g->c; ch++)
            gather_sums_avx512(x + ch * hw, col + ch * taps * ld, tr, tk, nt, hw, ld);
        return;
    }
#endif
    for (size_t ch = 0; ch < g->c; ch++)
        gather_sums(x + ch * hw, col + ch * taps * ld, tr, tk, nt, hw, ld);
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
