/* Model stacks, parameter and gradient slabs, workspace. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/core.h"
#include "../core/rng.h"
#include "../nn/activation.h"
#include "model.h"

int vae_model_create(vae_model **out, size_t input_dim, size_t latent_dim, int likelihood)
{
    if (!out)
        return vae_fail(VAE_ERR_INVALID, "vae_model_create: out is NULL");
    *out = NULL;
    if (input_dim == 0 || latent_dim == 0)
        return vae_fail(VAE_ERR_INVALID,
                        "vae_model_create: dimensions must be positive (input %zu, latent %zu)",
                        input_dim, latent_dim);
    if (input_dim > (1u << 24) || latent_dim > (1u << 20))
        return vae_fail(VAE_ERR_INVALID, "vae_model_create: dimensions too large");
    if (likelihood != VAE_LIKELIHOOD_BERNOULLI && likelihood != VAE_LIKELIHOOD_GAUSSIAN)
        return vae_fail(VAE_ERR_INVALID, "vae_model_create: unknown likelihood %d", likelihood);
    vae_model *m = calloc(1, sizeof *m);
    if (!m)
        return vae_fail(VAE_ERR_NOMEM, "vae_model_create: out of memory");
    m->input_dim = input_dim;
    m->latent_dim = latent_dim;
    m->likelihood = likelihood;
    m->sigma = 1.0f;
    m->n_threads = 1;
    *out = m;
    return VAE_OK;
}

void vae_model_free(vae_model *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_layers; i++)
        vae_layer_destroy(m->layers[i]);
    free(m->layers);
    vae_pool_free(m->pool);
    free(m->ws[0].acts);
    free(m->params);
    free(m->grads);
    free(m->mem);
    free(m);
}

/* Before build, encoder layers come first in layers[], then decoder ones;
 * n_enc splits them, so adding an encoder layer shifts the decoder right. */
static int add_layer(vae_model *m, vae_layer *l, int encoder, const char *fn)
{
    if (!m || !l)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn, m ? "layer" : "model");
    if (m->built)
        return vae_fail(VAE_ERR_STATE, "%s: the model is already built", fn);
    if (l->owned_by_model)
        return vae_fail(VAE_ERR_INVALID, "%s: the layer already belongs to a model", fn);
    if (m->n_layers == m->cap_layers) {
        size_t cap = m->cap_layers ? 2 * m->cap_layers : 8;
        vae_layer **p = realloc(m->layers, (cap + 1) * sizeof *p); /* +1: the head */
        if (!p)
            return vae_fail(VAE_ERR_NOMEM, "%s: out of memory", fn);
        m->layers = p;
        m->cap_layers = cap;
    }
    size_t at = encoder ? m->n_enc : m->n_layers;
    memmove(m->layers + at + 1, m->layers + at, (m->n_layers - at) * sizeof *m->layers);
    m->layers[at] = l;
    m->n_layers++;
    if (encoder)
        m->n_enc++;
    l->owned_by_model = 1;
    return VAE_OK;
}

int vae_model_add_encoder_layer(vae_model *m, vae_layer *layer)
{
    return add_layer(m, layer, 1, "vae_model_add_encoder_layer");
}

int vae_model_add_decoder_layer(vae_model *m, vae_layer *layer)
{
    return add_layer(m, layer, 0, "vae_model_add_decoder_layer");
}

static int check_shapes(const vae_model *m)
{
    const char *fn = "vae_model_build";
    size_t width = m->input_dim;
    for (size_t i = 0; i < m->n_enc; i++) {
        if (m->layers[i]->in != width)
            return vae_fail(VAE_ERR_SHAPE,
                            "%s: encoder layer %zu expects %zu inputs, %s gives %zu", fn, i,
                            m->layers[i]->in, i ? "the previous layer" : "the model input",
                            width);
        width = m->layers[i]->out;
    }
    size_t n_dec = m->n_layers - m->n_enc;
    if (n_dec == 0)
        return vae_fail(VAE_ERR_SHAPE,
                        "%s: the decoder has no layers; one must map latent %zu to input %zu",
                        fn, m->latent_dim, m->input_dim);
    width = m->latent_dim;
    for (size_t j = 0; j < n_dec; j++) {
        const vae_layer *l = m->layers[m->n_enc + j];
        if (l->in != width)
            return vae_fail(VAE_ERR_SHAPE,
                            "%s: decoder layer %zu expects %zu inputs, %s gives %zu", fn, j,
                            l->in, j ? "the previous layer" : "the latent code", width);
        width = l->out;
    }
    if (width != m->input_dim)
        return vae_fail(VAE_ERR_SHAPE,
                        "%s: decoder layer %zu gives %zu outputs, the model input has %zu", fn,
                        n_dec - 1, width, m->input_dim);
    return VAE_OK;
}

int vae_model_build(vae_model *m, uint64_t seed)
{
    if (!m)
        return vae_fail(VAE_ERR_INVALID, "vae_model_build: model is NULL");
    if (m->built)
        return vae_fail(VAE_ERR_STATE, "vae_model_build: the model is already built");
    int rc = check_shapes(m);
    if (rc)
        return rc;
    size_t head_in = m->n_enc ? m->layers[m->n_enc - 1]->out : m->input_dim;
    vae_layer *head = NULL;
    rc = vae_layer_dense_create(&head, head_in, 2 * m->latent_dim, VAE_ACT_IDENTITY);
    if (rc)
        return vae_fail(rc, "vae_model_build: cannot create the head (%zu -> %zu): %s", head_in,
                        2 * m->latent_dim, vae_strerror(rc));
    size_t total = 0;
    for (size_t i = 0; i < m->n_layers; i++)
        total += m->layers[i]->n_params;
    total += head->n_params;
    float *params = calloc(total, sizeof(float));
    float *grads = calloc(total, sizeof(float));
    if (!params || !grads) {
        free(params);
        free(grads);
        vae_layer_destroy(head);
        return vae_fail(VAE_ERR_NOMEM, "vae_model_build: out of memory for %zu parameters",
                        total);
    }
    /* layers[] has room for the head (add_layer keeps one spare slot). */
    memmove(m->layers + m->n_enc + 1, m->layers + m->n_enc,
            (m->n_layers - m->n_enc) * sizeof *m->layers);
    m->layers[m->n_enc] = head;
    head->owned_by_model = 1;
    m->n_layers++;

    vae_rng rng;
    vae_rng_seed(&rng, seed);
    size_t off = 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        vae_layer *l = m->layers[i];
        vae_layer_bind(l, params + off, grads + off);
        l->offset = off;
        free(l->own);
        l->own = NULL;
        free(l->cache);
        l->cache = NULL;
        l->cache_batch_cap = l->cache_batch = 0;
        vae_layer_init_rng(l, &rng);
        off += l->n_params;
    }
    m->params = params;
    m->grads = grads;
    m->n_params = total;
    m->built = 1;
    return VAE_OK;
}

int vae_model_create_mlp(vae_model **out, size_t input_dim, const size_t *hidden,
                         size_t n_hidden, size_t latent_dim, int activation, int likelihood,
                         uint64_t seed)
{
    const char *fn = "vae_model_create_mlp";
    if (!out)
        return vae_fail(VAE_ERR_INVALID, "%s: out is NULL", fn);
    *out = NULL;
    if (input_dim == 0 || latent_dim == 0)
        return vae_fail(VAE_ERR_INVALID, "%s: dimensions must be positive (input %zu, latent %zu)",
                        fn, input_dim, latent_dim);
    if (!vae_act_valid(activation))
        return vae_fail(VAE_ERR_INVALID, "%s: unknown activation %d", fn, activation);
    if (likelihood != VAE_LIKELIHOOD_BERNOULLI && likelihood != VAE_LIKELIHOOD_GAUSSIAN)
        return vae_fail(VAE_ERR_INVALID, "%s: unknown likelihood %d", fn, likelihood);
    if (n_hidden > 0 && !hidden)
        return vae_fail(VAE_ERR_INVALID, "%s: hidden is NULL with n_hidden %zu", fn, n_hidden);
    for (size_t i = 0; i < n_hidden; i++)
        if (hidden[i] == 0)
            return vae_fail(VAE_ERR_INVALID, "%s: hidden[%zu] is 0", fn, i);
    vae_model *m = NULL;
    int rc = vae_model_create(&m, input_dim, latent_dim, likelihood);
    if (rc)
        return rc;
    size_t width = input_dim;
    for (size_t i = 0; i < n_hidden && !rc; i++) {
        vae_layer *l = NULL;
        rc = vae_layer_dense_create(&l, width, hidden[i], activation);
        if (!rc && (rc = vae_model_add_encoder_layer(m, l)))
            vae_layer_free(l);
        width = hidden[i];
    }
    width = latent_dim;
    for (size_t i = n_hidden; i-- > 0 && !rc;) {
        vae_layer *l = NULL;
        rc = vae_layer_dense_create(&l, width, hidden[i], activation);
        if (!rc && (rc = vae_model_add_decoder_layer(m, l)))
            vae_layer_free(l);
        width = hidden[i];
    }
    if (!rc) {
        vae_layer *l = NULL;
        rc = vae_layer_dense_create(&l, width, input_dim, VAE_ACT_IDENTITY);
        if (!rc && (rc = vae_model_add_decoder_layer(m, l)))
            vae_layer_free(l);
    }
    if (!rc)
        rc = vae_model_build(m, seed);
    if (rc) {
        vae_model_free(m);
        return rc;
    }
    *out = m;
    return VAE_OK;
}

int vae_model_ensure(vae_model *m, size_t batch, const char *fn)
{
    if (batch <= m->ws_batch)
        return VAE_OK;
    const size_t L = m->latent_dim, T = m->n_threads;
    size_t width = 2 * L, scratch = 0, acts = 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        const vae_layer *l = m->layers[i];
        if (l->in > width)
            width = l->in;
        if (l->out > width)
            width = l->out;
        acts += l->out;
        size_t s = l->ops->scratch_floats(l, batch);
        if (s > scratch)
            scratch = s;
    }
    /* Every GEMM dimension and leading dimension must fit in an int. */
    if (batch > (1u << 24) || (double)batch * (double)width > (double)INT_MAX)
        return vae_fail(VAE_ERR_INVALID, "%s: batch %zu is too large for this model", fn,
                        batch);
    /* Per worker: activations, z/std/dz, dhead, two gradient buffers, scratch
     * and (workers > 0) a gradient slab. Shared: eps and two double arrays. */
    double per_d = (double)batch * (double)(acts + 5 * L + 2 * width) + (double)scratch;
    double total_d = per_d * (double)T + (double)(T - 1) * (double)m->n_params +
                     (double)batch * (double)(L + 4);
    if (total_d * sizeof(float) > (double)(SIZE_MAX / 2))
        return vae_fail(VAE_ERR_NOMEM, "%s: workspace for batch %zu is too large", fn, batch);
    size_t per = batch * (acts + 5 * L + 2 * width) + scratch;
    /* + 1: the doubles start at an even float offset */
    size_t total = per * T + (T - 1) * m->n_params + batch * (L + 4) + 1;
    float *mem = malloc(total * sizeof(float));
    float **ap = malloc(T * m->n_layers * sizeof *ap);
    if (!mem || !ap) {
        free(mem);
        free(ap);
        return vae_fail(VAE_ERR_NOMEM, "%s: out of memory for a workspace of batch %zu", fn,
                        batch);
    }
    free(m->mem);
    free(m->ws[0].acts);
    m->mem = mem;
    float *p = mem;
    for (size_t t = 0; t < T; t++) {
        vae_ws *w = &m->ws[t];
        w->acts = ap + t * m->n_layers;
        for (size_t i = 0; i < m->n_layers; i++) {
            w->acts[i] = p;
            p += batch * m->layers[i]->out;
        }
        w->z = p; p += batch * L;
        w->std = p; p += batch * L;
        w->dz = p; p += batch * L;
        w->dhead = p; p += batch * 2 * L;
        w->grad_a = p; p += batch * width;
        w->grad_b = p; p += batch * width;
        w->scratch = p; p += scratch;
        w->grads = NULL;
        if (t > 0) {
            w->grads = p;
            p += m->n_params;
        }
    }
    m->eps = p; p += batch * L;
    /* doubles, 8-byte aligned: malloc's block is, so an even float offset is */
    if ((size_t)(p - mem) % 2)
        p++;
    m->rec_ps = (double *)(void *)p;
    m->kl_ps = m->rec_ps + batch;
    m->ws_batch = batch;
    return VAE_OK;
}

int vae_model_set_threads(vae_model *m, size_t n)
{
    const char *fn = "vae_model_set_threads";
    int rc = vae_model_check_ready(m, fn);
    if (rc)
        return rc;
    if (n == 0 || n > VAE_MAX_THREADS)
        return vae_fail(VAE_ERR_INVALID, "%s: %zu threads; 1 to %d are possible", fn, n,
                        VAE_MAX_THREADS);
    if (n == m->n_threads)
        return VAE_OK;
    vae_pool *pool = NULL;
    if (n > 1 && (rc = vae_pool_create(&pool, n)))
        return vae_fail(rc, "%s: %s", fn, vae_last_error());
    size_t batch = m->ws_batch;
    vae_pool_free(m->pool);
    m->pool = pool;
    m->n_threads = n;
    /* The workspace is rebuilt for the new worker count on the next use. */
    free(m->mem);
    free(m->ws[0].acts);
    memset(m->ws, 0, sizeof m->ws);
    m->mem = NULL;
    m->ws_batch = 0;
    return batch ? vae_model_ensure(m, batch, fn) : VAE_OK;
}

size_t vae_model_threads(const vae_model *m)
{
    return m ? m->n_threads : 0;
}

int vae_model_reserve(vae_model *m, size_t max_batch)
{
    if (!m)
        return vae_fail(VAE_ERR_INVALID, "vae_model_reserve: model is NULL");
    if (!m->built)
        return vae_fail(VAE_ERR_STATE, "vae_model_reserve: build the model first");
    if (max_batch == 0)
        return vae_fail(VAE_ERR_INVALID, "vae_model_reserve: max_batch is 0");
    return vae_model_ensure(m, max_batch, "vae_model_reserve");
}

int vae_model_check_ready(const vae_model *m, const char *fn)
{
    if (!m)
        return vae_fail(VAE_ERR_INVALID, "%s: model is NULL", fn);
    if (!m->built)
        return vae_fail(VAE_ERR_STATE, "%s: build the model first", fn);
    return VAE_OK;
}

void vae_model_forward_encoder(vae_model *m, vae_ws *w, const float *x, size_t batch)
{
    const float *in = x;
    for (size_t i = 0; i <= m->n_enc; i++) {
        vae_layer *l = m->layers[i];
        l->ops->forward(l, in, batch, w->acts[i], w->scratch);
        in = w->acts[i];
    }
}

void vae_model_forward_decoder(vae_model *m, vae_ws *w, const float *z, size_t batch)
{
    const float *in = z;
    for (size_t i = m->n_enc + 1; i < m->n_layers; i++) {
        vae_layer *l = m->layers[i];
        l->ops->forward(l, in, batch, w->acts[i], w->scratch);
        in = w->acts[i];
    }
}

static float *layer_grad(vae_model *m, vae_ws *w, const vae_layer *l)
{
    return (w->grads ? w->grads : m->grads) + l->offset;
}

void vae_model_backward_decoder(vae_model *m, vae_ws *w, const float *z, float *dout,
                                size_t batch, float *dz)
{
    float *cur = dout;
    size_t first = m->n_enc + 1;
    for (size_t i = m->n_layers; i-- > first;) {
        vae_layer *l = m->layers[i];
        const float *x = i == first ? z : w->acts[i - 1];
        float *dx = i == first ? dz : (cur == w->grad_a ? w->grad_b : w->grad_a);
        l->ops->backward(l, x, w->acts[i], cur, batch, dx, w->scratch, layer_grad(m, w, l));
        cur = dx;
    }
}

void vae_model_backward_encoder(vae_model *m, vae_ws *w, const float *x, float *dhead,
                                size_t batch)
{
    float *cur = dhead;
    for (size_t i = m->n_enc + 1; i-- > 0;) {
        vae_layer *l = m->layers[i];
        const float *in = i == 0 ? x : w->acts[i - 1];
        float *dx = i == 0 ? NULL : (cur == w->grad_a ? w->grad_b : w->grad_a);
        l->ops->backward(l, in, w->acts[i], cur, batch, dx, w->scratch, layer_grad(m, w, l));
        cur = dx;
    }
}

int vae_model_set_gaussian_sigma(vae_model *m, float sigma)
{
    if (!m)
        return vae_fail(VAE_ERR_INVALID, "vae_model_set_gaussian_sigma: model is NULL");
    if (!(sigma > 0.0f) || sigma == INFINITY)
        return vae_fail(VAE_ERR_INVALID,
                        "vae_model_set_gaussian_sigma: sigma must be finite and > 0, got %g",
                        (double)sigma);
    m->sigma = sigma;
    return VAE_OK;
}

size_t vae_model_input_dim(const vae_model *m)
{
    return m ? m->input_dim : 0;
}

size_t vae_model_latent_dim(const vae_model *m)
{
    return m ? m->latent_dim : 0;
}

int vae_model_likelihood(const vae_model *m)
{
    return m ? m->likelihood : -1;
}

float *vae_model_params(vae_model *m, size_t *count)
{
    if (count)
        *count = m && m->built ? m->n_params : 0;
    return m && m->built ? m->params : NULL;
}

float *vae_model_grads(vae_model *m, size_t *count)
{
    if (count)
        *count = m && m->built ? m->n_params : 0;
    return m && m->built ? m->grads : NULL;
}

int vae_model_zero_grads(vae_model *m)
{
    int rc = vae_model_check_ready(m, "vae_model_zero_grads");
    if (rc)
        return rc;
    memset(m->grads, 0, m->n_params * sizeof(float));
    return VAE_OK;
}
