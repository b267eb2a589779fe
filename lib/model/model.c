/* Model stacks, the parameter slab, introspection and named tensors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/core.h"
#include "../core/rng.h"
#include "../nn/activation.h"
#include "model.h"

static int likelihood_known(int likelihood)
{
    return likelihood == VAE_LIKELIHOOD_BERNOULLI || likelihood == VAE_LIKELIHOOD_GAUSSIAN ||
           likelihood == VAE_LIKELIHOOD_CONTINUOUS_BERNOULLI;
}

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
    if (!likelihood_known(likelihood))
        return vae_fail(VAE_ERR_INVALID, "vae_model_create: unknown likelihood %d", likelihood);
    vae_model *m = vae_calloc(1, sizeof *m);
    if (!m)
        return vae_fail(VAE_ERR_NOMEM, "vae_model_create: out of memory");
    m->input_dim = input_dim;
    m->latent_dim = latent_dim;
    m->likelihood = likelihood;
    m->sigma = 1.0f;
    *out = m;
    return VAE_OK;
}

void vae_model_free(vae_model *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_layers; i++)
        vae_layer_destroy(m->layers[i]);
    vae_free(m->layers);
    vae_free(m->params);
    vae_free(m->names);
    vae_free(m->name_of);
    vae_free(m);
}

/* Before build, encoder layers come first in layers[], then decoder ones;
 * n_enc splits them, so adding an encoder layer shifts the decoder right.
 * The layer is taken from the caller in every case: on failure it is freed,
 * so no error path leaves the caller a layer to remember to free. */
static int add_layer(vae_model *m, vae_layer **lp, int encoder, const char *fn)
{
    if (!lp || !*lp)
        return vae_fail(VAE_ERR_INVALID, "%s: layer is NULL", fn);
    vae_layer *l = *lp;
    if (l->owned_by_model) {
        *lp = NULL; /* a model's layer: the model frees it, not this call */
        return vae_fail(VAE_ERR_INVALID, "%s: the layer already belongs to a model", fn);
    }
    *lp = NULL;
    int rc = VAE_OK;
    if (!m)
        rc = vae_fail(VAE_ERR_INVALID, "%s: model is NULL", fn);
    else if (m->built)
        rc = vae_fail(VAE_ERR_STATE, "%s: the model is already built", fn);
    else if (m->n_layers == m->cap_layers) {
        size_t cap = m->cap_layers ? 2 * m->cap_layers : 8;
        vae_layer **p = vae_realloc(m->layers, (cap + 1) * sizeof *p); /* +1: the head */
        if (!p)
            rc = vae_fail(VAE_ERR_NOMEM, "%s: out of memory", fn);
        else {
            m->layers = p;
            m->cap_layers = cap;
        }
    }
    if (rc) {
        vae_layer_destroy(l);
        return rc;
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

int vae_model_add_encoder_layer(vae_model *m, vae_layer **layer)
{
    return add_layer(m, layer, 1, "vae_model_add_encoder_layer");
}

int vae_model_add_decoder_layer(vae_model *m, vae_layer **layer)
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

/* Tensor names of a model whose layers[] already holds the head:
 * encoder.<i>.weight/bias, head.weight/bias, decoder.<j>.weight/bias. */
static int make_names(const vae_model *m, size_t n_layers, char **names_out,
                      const char ***name_of_out)
{
    size_t bytes = 0;
    char buf[64];
    for (int pass = 0; pass < 2; pass++) {
        char *names = NULL;
        const char **name_of = NULL;
        if (pass == 1) {
            names = vae_malloc(bytes);
            name_of = vae_malloc(2 * n_layers * sizeof *name_of);
            if (!names || !name_of) {
                vae_free(names);
                vae_free(name_of);
                return vae_fail(VAE_ERR_NOMEM, "vae_model_build: out of memory");
            }
        }
        size_t at = 0;
        for (size_t i = 0; i < n_layers; i++)
            for (int t = 0; t < 2; t++) {
                const char *what = t ? "bias" : "weight";
                int len;
                if (i < m->n_enc)
                    len = snprintf(buf, sizeof buf, "encoder.%zu.%s", i, what);
                else if (i == m->n_enc)
                    len = snprintf(buf, sizeof buf, "head.%s", what);
                else
                    len = snprintf(buf, sizeof buf, "decoder.%zu.%s", i - m->n_enc - 1, what);
                if (pass == 1) {
                    memcpy(names + at, buf, (size_t)len + 1);
                    name_of[2 * i + (size_t)t] = names + at;
                }
                at += (size_t)len + 1;
            }
        bytes = at;
        if (pass == 1) {
            *names_out = names;
            *name_of_out = name_of;
        }
    }
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
    size_t total = head->n_params;
    for (size_t i = 0; i < m->n_layers; i++)
        total += m->layers[i]->n_params;
    if ((uint64_t)total > vae_get_limit(VAE_LIMIT_MODEL_PARAMS)) {
        vae_layer_destroy(head);
        return vae_fail(VAE_ERR_NOMEM,
                        "vae_model_build: %zu parameters, above the limit "
                        "VAE_LIMIT_MODEL_PARAMS = %llu",
                        total, (unsigned long long)vae_get_limit(VAE_LIMIT_MODEL_PARAMS));
    }
    float *params = vae_calloc(total, sizeof(float));
    char *names = NULL;
    const char **name_of = NULL;
    if (!params || (rc = make_names(m, m->n_layers + 1, &names, &name_of))) {
        vae_free(params);
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
        vae_layer_bind(l, params + off);
        l->offset = off;
        l->dw = NULL;
        vae_free(l->own);
        l->own = NULL;
        vae_free(l->cache);
        l->cache = NULL;
        l->cache_batch_cap = l->cache_batch = 0;
        vae_layer_init_rng(l, &rng);
        off += l->n_params;
    }
    m->params = params;
    m->n_params = total;
    m->names = names;
    m->name_of = name_of;
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
    if (!likelihood_known(likelihood))
        return vae_fail(VAE_ERR_INVALID, "%s: unknown likelihood %d", fn, likelihood);
    if (n_hidden > 0 && !hidden)
        return vae_fail(VAE_ERR_INVALID, "%s: hidden is NULL with n_hidden %zu", fn, n_hidden);
    for (size_t i = 0; i < n_hidden; i++)
        if (hidden[i] == 0)
            return vae_fail(VAE_ERR_INVALID, "%s: hidden[%zu] is 0", fn, i);
    vae_model *m = NULL;
    int rc = vae_model_create(&m, input_dim, latent_dim, likelihood);
    if (rc)
        return vae_fail(rc, "%s: %s", fn, vae_last_error());
    size_t width = input_dim;
    for (size_t i = 0; i < n_hidden && !rc; i++) {
        vae_layer *l = NULL;
        if (!(rc = vae_layer_dense_create(&l, width, hidden[i], activation)))
            rc = vae_model_add_encoder_layer(m, &l);
        width = hidden[i];
    }
    width = latent_dim;
    for (size_t i = n_hidden; i-- > 0 && !rc;) {
        vae_layer *l = NULL;
        if (!(rc = vae_layer_dense_create(&l, width, hidden[i], activation)))
            rc = vae_model_add_decoder_layer(m, &l);
        width = hidden[i];
    }
    if (!rc) {
        vae_layer *l = NULL;
        if (!(rc = vae_layer_dense_create(&l, width, input_dim, VAE_ACT_IDENTITY)))
            rc = vae_model_add_decoder_layer(m, &l);
    }
    if (!rc)
        rc = vae_model_build(m, seed);
    if (rc) {
        vae_model_free(m);
        /* The inner call's message, under this function's name. */
        return vae_fail(rc, "%s: %s", fn, vae_last_error());
    }
    *out = m;
    return VAE_OK;
}

int vae_model_check_ready(const vae_model *m, const char *fn)
{
    if (!m)
        return vae_fail(VAE_ERR_INVALID, "%s: model is NULL", fn);
    if (!m->built)
        return vae_fail(VAE_ERR_STATE, "%s: build the model first", fn);
    return VAE_OK;
}

int vae_model_set_param(vae_model *m, int param, double value)
{
    const char *fn = "vae_model_set_param";
    if (!m)
        return vae_fail(VAE_ERR_INVALID, "%s: model is NULL", fn);
    switch (param) {
    case VAE_MODEL_GAUSSIAN_SIGMA: {
        /* [1e-6, 1e6] as a float (docs/math.md, section 4.2): at 1e-6 the
         * loss and its gradient stay finite floats for |x - mean| up to 1e6
         * (and the gradient for any difference whose square is a finite
         * float); at 1e6 1/sigma^2 = 1e-12 is still a normal float after
         * the 1/n of a batch of 2^20. The double is range-checked before it
         * is converted. */
        const float lo = 1e-6f, hi = 1e6f;
        float f = value >= 0.5 * lo && value <= 2.0 * hi ? (float)value : 0.0f;
        if (!(f >= lo && f <= hi))
            return vae_fail(VAE_ERR_INVALID, "%s: sigma must be in [1e-6, 1e6], got %g", fn,
                            value);
        m->sigma = f;
        return VAE_OK;
    }
    default: return vae_fail(VAE_ERR_INVALID, "%s: unknown parameter %d", fn, param);
    }
}

int vae_model_get_param(const vae_model *m, int param, double *value)
{
    const char *fn = "vae_model_get_param";
    if (!m || !value)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn, m ? "value" : "model");
    switch (param) {
    case VAE_MODEL_GAUSSIAN_SIGMA: *value = m->sigma; return VAE_OK;
    default: return vae_fail(VAE_ERR_INVALID, "%s: unknown parameter %d", fn, param);
    }
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

int vae_model_is_built(const vae_model *m)
{
    return m && m->built;
}

size_t vae_model_layer_count(const vae_model *m)
{
    return m ? m->n_layers : 0;
}

size_t vae_model_encoder_layer_count(const vae_model *m)
{
    return m ? m->n_enc : 0;
}

const vae_layer *vae_model_layer(const vae_model *m, size_t index)
{
    return m && index < m->n_layers ? m->layers[index] : NULL;
}

float *vae_model_params(vae_model *m, size_t *count)
{
    if (count)
        *count = m && m->built ? m->n_params : 0;
    if (m && m->built)
        m->params_exposed = 1;
    return m && m->built ? m->params : NULL;
}

size_t vae_model_param_count(const vae_model *m)
{
    return m && m->built ? m->n_params : 0;
}

size_t vae_model_tensor_count(const vae_model *m)
{
    return m && m->built ? 2 * m->n_layers : 0;
}

const char *vae_model_tensor_name(const vae_model *m, size_t index)
{
    return m && m->built && index < 2 * m->n_layers ? m->name_of[index] : NULL;
}

/* Geometry of tensor index of a built model: shape, rank, offset, count. */
static size_t tensor_geometry(const vae_model *m, size_t index, size_t *shape, size_t *offset,
                              size_t *count)
{
    const vae_layer *l = m->layers[index / 2];
    if (index % 2 == 0) {
        *offset = l->offset;
        *count = l->n_weights;
        return l->ops->weight_shape(l, shape);
    }
    *offset = l->offset + l->n_weights;
    *count = l->n_params - l->n_weights;
    shape[0] = *count;
    return 1;
}

static int check_tensor(const vae_model *m, size_t index, const char *fn)
{
    int rc = vae_model_check_ready(m, fn);
    if (rc)
        return rc;
    if (index >= 2 * m->n_layers)
        return vae_fail(VAE_ERR_INVALID, "%s: tensor %zu does not exist; the model has %zu", fn,
                        index, 2 * m->n_layers);
    return VAE_OK;
}

int vae_model_tensor_find(const vae_model *m, const char *name, size_t *index)
{
    const char *fn = "vae_model_tensor_find";
    int rc = vae_model_check_ready(m, fn);
    if (rc)
        return rc;
    if (!name || !index)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn, name ? "index" : "name");
    for (size_t i = 0; i < 2 * m->n_layers; i++)
        if (strcmp(m->name_of[i], name) == 0) {
            *index = i;
            return VAE_OK;
        }
    return vae_fail(VAE_ERR_INVALID, "%s: no tensor is named \"%.64s\"", fn, name);
}

int vae_model_tensor_info(const vae_model *m, size_t index, size_t shape[4], size_t *ndim,
                          size_t *offset, size_t *count)
{
    int rc = check_tensor(m, index, "vae_model_tensor_info");
    if (rc)
        return rc;
    size_t s[4] = {0}, off, n;
    size_t r = tensor_geometry(m, index, s, &off, &n);
    if (shape)
        memcpy(shape, s, sizeof s);
    if (ndim)
        *ndim = r;
    if (offset)
        *offset = off;
    if (count)
        *count = n;
    return VAE_OK;
}

int vae_model_tensor_get(const vae_model *m, size_t index, float *out, size_t count)
{
    const char *fn = "vae_model_tensor_get";
    int rc = check_tensor(m, index, fn);
    if (rc)
        return rc;
    if (!out)
        return vae_fail(VAE_ERR_INVALID, "%s: out is NULL", fn);
    size_t s[4], off, n;
    tensor_geometry(m, index, s, &off, &n);
    if (count != n)
        return vae_fail(VAE_ERR_SHAPE, "%s: %s has %zu values, count is %zu", fn,
                        m->name_of[index], n, count);
    memcpy(out, m->params + off, n * sizeof *out);
    return VAE_OK;
}

int vae_model_tensor_set(vae_model *m, size_t index, const float *in, size_t count)
{
    const char *fn = "vae_model_tensor_set";
    int rc = check_tensor(m, index, fn);
    if (rc)
        return rc;
    if (!in)
        return vae_fail(VAE_ERR_INVALID, "%s: in is NULL", fn);
    size_t s[4], off, n, bad = 0;
    tensor_geometry(m, index, s, &off, &n);
    if (count != n)
        return vae_fail(VAE_ERR_SHAPE, "%s: %s has %zu values, count is %zu", fn,
                        m->name_of[index], n, count);
    if (!vae_all_finite(in, n, &bad))
        return vae_fail(VAE_ERR_NUMERIC, "%s: value %zu for %s is not finite", fn, bad,
                        m->name_of[index]);
    memcpy(m->params + off, in, n * sizeof *in);
    m->param_max_known = 0;
    return VAE_OK;
}
