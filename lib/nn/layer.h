/* The layer object shared by every layer kind. A kind supplies its ops: how it
 * runs forward and backward, and how it describes and rebuilds itself, so the
 * model, the file format and the public getters never switch on the kind. */
#ifndef VAE_LAYER_H
#define VAE_LAYER_H

#include <stddef.h>
#include <stdint.h>

#include "vae/vae.h"

/* Numbers of a layer's geometry a kind stores in files, at most this many. */
#define VAE_LAYER_MAX_FIELDS 16

typedef struct vae_layer_ops {
    int kind;        /* VAE_LAYER_*: the value model files store */
    const char *name;
    /* y[batch][out] = layer(x[batch][in]); scratch has scratch_floats(batch). */
    void (*forward)(const vae_layer *l, const float *x, size_t batch, float *y, float *scratch);
    /* dy[batch][out] holds dL/dy and may be overwritten. Computes G, this
     * batch's dL/dW and dL/db (n_params floats laid out like the parameters),
     * on its own: grad = G when accumulate is 0, grad += G otherwise, where
     * the result does not depend on how G's sums would have met grad's old
     * values (so a block's gradient added to a slab equals the same block's
     * gradient written alone, then added). Writes dx[batch][in] unless dx is
     * NULL. x and y are what the matching forward saw and produced. */
    void (*backward)(const vae_layer *l, const float *x, const float *y, float *dy,
                     size_t batch, float *dx, float *scratch, float *grad, int accumulate);
    size_t (*scratch_floats)(const vae_layer *l, size_t batch);
    /* The geometry as model files store it: returns the count of fields. */
    size_t (*describe)(const vae_layer *l, uint64_t *fields);
    /* The inverse: a new standalone layer from stored fields. VAE_ERR_FORMAT
     * for a wrong field count; the constructor's status for invalid sizes. */
    int (*from_fields)(vae_layer **out, int activation, const uint64_t *fields, size_t n);
    /* PyTorch's shape of the weight tensor: returns its rank. */
    size_t (*weight_shape)(const vae_layer *l, size_t *shape);
} vae_layer_ops;

struct vae_layer {
    const vae_layer_ops *ops;
    int activation;
    size_t in, out;          /* features per sample */
    size_t fan_in;           /* for the +-1/sqrt(fan_in) initialization */
    size_t n_weights;        /* then one bias per output channel */
    size_t n_params;
    size_t offset;           /* of the parameters in the model's slab */
    /* Convolution geometry (NCHW); zero for dense layers. */
    size_t in_c, in_h, in_w, out_c, out_h, out_w, kh, kw, stride, pad, out_pad;
    float *w, *b;            /* views: into own storage or the model's slab */
    float *dw;               /* standalone only: own gradients, else NULL */
    float *own;              /* standalone storage: params then grads; NULL in a model */
    int owned_by_model;

    /* Standalone use only (vae_layer_forward/backward): copies of the last
     * forward's input and output, a dy copy and scratch. */
    float *cache;            /* one allocation holding the four below */
    size_t cache_batch_cap;
    size_t cache_batch;      /* batch of the last forward, 0 = none yet */
    float *cache_x, *cache_y, *cache_dy, *cache_scratch;
};

/* Common constructor for kinds: allocates own storage for n_params. */
int vae_layer_alloc(vae_layer **out, const vae_layer_ops *ops, size_t in, size_t outf,
                    int activation, size_t n_weights, size_t n_bias, size_t fan_in);
/* Points w and b into params (n_params floats). */
void vae_layer_bind(vae_layer *l, float *params);
void vae_layer_init_rng(vae_layer *l, vae_rng *rng);
/* Frees any layer, owned by a model or not (vae_layer_free refuses owned ones). */
void vae_layer_destroy(vae_layer *l);
/* The ops of a kind as stored in files, or NULL for an unknown kind. */
const vae_layer_ops *vae_layer_kind_ops(uint32_t kind);

/* Convolution helpers (im2col.c). For an image x[c][h][w] and a kernel
 * kh x kw moved with stride and padding over it to oh x ow positions:
 * col[(c*kh + i)*kw + j][y*ow + x] = x[c][y*stride - pad + i][x*stride - pad + j]
 * (0 outside the image), rows ld floats apart, so that the columns of
 * several samples sit side by side for one GEMM. col2im is the adjoint: x =
 * the sum of col's entries at each pixel, added from +0 in the row order of
 * col. Both use work[vae_im2col_work()], whose tables (and the zero borders
 * of vae_im2col's padded planes) vae_im2col_prepare() writes once per
 * geometry, before the calls that use them; nothing else may write it in
 * between. 0 floats when the padding is too wide for the tables to pay. */
typedef struct vae_im2col_geo {
    size_t c, h, w, kh, kw, stride, pad, oh, ow;
} vae_im2col_geo;
size_t vae_im2col_work(const vae_im2col_geo *g);
void vae_im2col_prepare(const vae_im2col_geo *g, float *work);
void vae_im2col(const vae_im2col_geo *g, const float *x, float *col, size_t ld, float *work);
void vae_col2im(const vae_im2col_geo *g, const float *col, float *x, size_t ld,
                const float *work);
/* [batch][c][hw] <-> [c][batch * hw]: a batch as one matrix of channels. */
void vae_nchw_to_cn(const float *src, size_t batch, size_t c, size_t hw, float *dst);
void vae_cn_to_nchw(const float *src, size_t batch, size_t c, size_t hw, float *dst);
/* Samples per GEMM so that a chunk's columns stay near VAE_CONV_CHUNK_FLOATS
 * (per_sample floats each): at least 1, at most batch. 512 KB of columns stay
 * in a core's L2 cache while the GEMM reads them: measured on the MNIST conv
 * VAE, a step took 108 ms with one GEMM per sample, 83 ms with 256 KB to 1 MB
 * chunks and 123 ms with 8 MB ones. */
#define VAE_CONV_CHUNK_FLOATS ((size_t)1 << 17)
size_t vae_conv_chunk(size_t per_sample, size_t batch);

/* Shared by both convolution kinds (conv2d.c). */
/* db (+)= sum over samples and positions of dz[batch][channels][hw], summed
 * on its own in tmp[channels] first (see the ops' backward contract). */
void vae_conv_bias_grad(const float *dz, size_t batch, size_t channels, size_t hw, float *tmp,
                        float *db, int accumulate);
/* grad (+)= tmp[n] (accumulate) or grad = tmp. */
void vae_grad_store(float *grad, const float *tmp, size_t n, int accumulate);
size_t vae_conv_describe(const vae_layer *l, uint64_t *fields);
int vae_conv_check(const char *fn, size_t in_c, size_t in_h, size_t in_w, size_t out_c,
                   size_t kh, size_t kw, size_t stride, int activation);
int vae_conv_alloc(vae_layer **out, const vae_layer_ops *ops, size_t in_c, size_t in_h,
                   size_t in_w, size_t out_c, size_t out_h, size_t out_w, size_t kh,
                   size_t kw, size_t stride, size_t pad, size_t out_pad, int activation,
                   size_t fan_in, const char *fn);
/* Reads `want` fields of at most 2^32 each into f; VAE_ERR_FORMAT otherwise. */
int vae_conv_fields(const uint64_t *fields, size_t n, size_t want, size_t *f, const char *what);

extern const vae_layer_ops vae_dense_ops, vae_conv2d_ops, vae_conv2d_transpose_ops;

#endif
