/* Model assembly, layer ownership, shape checks, introspection (layers and
 * named tensors), settings, parameter slab layout and initialization,
 * inference (encode, decode, sample, reconstruct) and bad input. */
#include <float.h>

#include "test_util.h"

enum { D = 6, H = 5, L = 2 };

/* One context for the whole group: a context serves any model in turn. */
static vae_context *g_ctx;

static int group_setup(void **state)
{
    (void)state;
    return vae_context_create(&g_ctx) == VAE_OK ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    vae_context_free(g_ctx);
    g_ctx = NULL;
    return 0;
}

/* Dense y = act(W x + b) in double with W[out][in] then b at p; returns the
 * parameters that follow. Only the activations these tests use. */
static const float *ref_dense(const float *p, size_t in, size_t out, int act, const double *x,
                              double *y)
{
    for (size_t j = 0; j < out; j++) {
        double z = p[in * out + j];
        for (size_t k = 0; k < in; k++)
            z += (double)p[j * in + k] * x[k];
        y[j] = act == VAE_ACT_TANH ? tanh(z) : z;
    }
    return p + in * out + out;
}

/* Reference of the 6-5-2 tanh MLP: head outputs [mu | logvar] and decoder
 * outputs (logits or means) for one sample, from the parameter slab. */
static void ref_encode(const float *slab, const float *x, double *mu, double *logvar)
{
    double xd[D], h[H], head[2 * L];
    for (size_t k = 0; k < D; k++)
        xd[k] = x[k];
    const float *p = ref_dense(slab, D, H, VAE_ACT_TANH, xd, h);
    ref_dense(p, H, 2 * L, VAE_ACT_IDENTITY, h, head);
    for (size_t j = 0; j < L; j++) {
        mu[j] = head[j];
        logvar[j] = head[L + j];
    }
}

static void ref_decode(const float *slab, const double *z, double *out)
{
    /* Decoder parameters follow the encoder (D*H+H) and the head (H*2L+2L). */
    const float *p = slab + (D * H + H) + (H * 2 * L + 2 * L);
    double h[H];
    p = ref_dense(p, L, H, VAE_ACT_TANH, z, h);
    ref_dense(p, H, D, VAE_ACT_IDENTITY, h, out);
}

static vae_model *mlp(int likelihood, uint64_t seed)
{
    vae_model *m = NULL;
    const size_t hidden[1] = {H};
    TU_OK(vae_model_create_mlp(&m, D, hidden, 1, L, VAE_ACT_TANH, likelihood, seed));
    assert_non_null(m);
    return m;
}

static vae_layer *dense(size_t in, size_t out, int act)
{
    vae_layer *l = NULL;
    TU_OK(vae_layer_dense_create(&l, in, out, act));
    assert_non_null(l);
    return l;
}

static void add_enc(vae_model *m, vae_layer *l)
{
    TU_OK(vae_model_add_encoder_layer(m, &l));
    assert_null(l);
}

static void add_dec(vae_model *m, vae_layer *l)
{
    TU_OK(vae_model_add_decoder_layer(m, &l));
    assert_null(l);
}

/* A model from the given encoder and decoder widths; the model owns every
 * layer whether or not a later build succeeds. */
static vae_model *assemble(size_t input, size_t latent, const size_t *enc, size_t n_enc,
                           const size_t *dec, size_t n_dec)
{
    vae_model *m = NULL;
    TU_OK(vae_model_create(&m, input, latent, VAE_LIKELIHOOD_BERNOULLI));
    for (size_t i = 0; i < n_enc; i++)
        add_enc(m, dense(enc[2 * i], enc[2 * i + 1], VAE_ACT_TANH));
    for (size_t i = 0; i < n_dec; i++)
        add_dec(m, dense(dec[2 * i], dec[2 * i + 1], VAE_ACT_TANH));
    return m;
}

/* Conv model on 1x7x6 images, every geometry number distinct from its
 * neighbours so that a swapped getter shows:
 *   encoder.0 Conv2D 1->3 channels, kernel 3x2, stride 2, padding 1, leaky
 *             ReLU: 1x7x6 -> 3x4x4 (48)
 *   encoder.1 dense 48 -> 8 tanh
 *   head      dense 8 -> 2*CL
 *   decoder.0 dense CL -> 24 ELU (read as 2x4x3)
 *   decoder.1 ConvTranspose2D 2->1 channels, kernel 2x3, stride 2, padding 1,
 *             output padding 1: 2x4x3 -> 1x7x6 (42). */
enum { CD = 42, CL = 2 };

static vae_model *conv_model_unbuilt(void)
{
    vae_model *m = NULL;
    vae_layer *l = NULL;
    TU_OK(vae_model_create(&m, CD, CL, VAE_LIKELIHOOD_BERNOULLI));
    TU_OK(vae_layer_conv2d_create(&l, 1, 7, 6, 3, 3, 2, 2, 1, VAE_ACT_LEAKY_RELU));
    add_enc(m, l);
    add_enc(m, dense(48, 8, VAE_ACT_TANH));
    add_dec(m, dense(CL, 24, VAE_ACT_ELU));
    l = NULL;
    TU_OK(vae_layer_conv2d_transpose_create(&l, 2, 4, 3, 1, 2, 3, 2, 1, 1, VAE_ACT_IDENTITY));
    add_dec(m, l);
    return m;
}

static void expect_build_shape_error(vae_model *m, const char *layer_words)
{
    const size_t layers = vae_model_layer_count(m);
    TU_EXPECT_ERR(vae_model_build(m, 1), VAE_ERR_SHAPE, "vae_model_build");
    if (!strstr(vae_last_error(), layer_words))
        fail_msg("\"%s\" does not name \"%s\"", vae_last_error(), layer_words);
    /* Still unbuilt and unchanged: no head, no slab, no tensors, and
     * inference refuses to run. */
    assert_int_equal(vae_model_is_built(m), 0);
    assert_int_equal(vae_model_layer_count(m), layers);
    assert_int_equal(vae_model_param_count(m), 0);
    assert_int_equal(vae_model_tensor_count(m), 0);
    size_t n = 99;
    assert_null(vae_model_params(m, &n));
    assert_int_equal(n, 0);
    float x[D] = {0}, mu[L], lv[L];
    TU_EXPECT_ERR(vae_encode(g_ctx, m, x, 1, mu, lv), VAE_ERR_STATE, "vae_encode");
    vae_model_free(m);
}

static void test_build_shape_errors(void **state)
{
    (void)state;
    /* Each message names the stack and the index of the offending layer. */
    {
        const size_t enc[] = {6, 5, 4, 3}, dec[] = {2, 6};
        expect_build_shape_error(assemble(6, 2, enc, 2, dec, 1), "encoder layer 1");
    }
    {
        const size_t enc[] = {7, 5}, dec[] = {2, 6};
        expect_build_shape_error(assemble(6, 2, enc, 1, dec, 1), "encoder layer 0");
    }
    {
        const size_t enc[] = {6, 5}, dec[] = {2, 5, 4, 6};
        expect_build_shape_error(assemble(6, 2, enc, 1, dec, 2), "decoder layer 1");
    }
    {
        const size_t enc[] = {6, 5}, dec[] = {3, 6};
        expect_build_shape_error(assemble(6, 2, enc, 1, dec, 1), "decoder layer 0");
    }
    {
        /* The decoder must give back input_dim values. */
        const size_t enc[] = {6, 5}, dec[] = {2, 5, 5, 7};
        expect_build_shape_error(assemble(6, 2, enc, 1, dec, 2), "decoder layer 1");
    }
    {
        const size_t enc[] = {6, 5};
        expect_build_shape_error(assemble(6, 2, enc, 1, NULL, 0), "decoder");
    }
    {
        vae_model *m = NULL;
        TU_OK(vae_model_create(&m, 6, 2, VAE_LIKELIHOOD_GAUSSIAN));
        expect_build_shape_error(m, "decoder");
    }
    {
        /* A failed build leaves the model as it was: fix it and build again. */
        const size_t enc[] = {6, 5};
        vae_model *m = assemble(6, 2, enc, 1, NULL, 0);
        TU_EXPECT_ERR(vae_model_build(m, 1), VAE_ERR_SHAPE, "vae_model_build");
        add_dec(m, dense(2, 6, VAE_ACT_IDENTITY));
        TU_OK(vae_model_build(m, 1));
        assert_int_equal(vae_model_is_built(m), 1);
        assert_int_equal(vae_model_layer_count(m), 3);
        assert_int_equal(vae_model_param_count(m), (6 * 5 + 5) + (5 * 4 + 4) + (2 * 6 + 6));
        vae_model_free(m);
    }
    {
        /* No encoder layers is fine: the head reads the input directly. */
        const size_t dec[] = {2, 6};
        vae_model *m = assemble(6, 2, NULL, 0, dec, 1);
        TU_OK(vae_model_build(m, 1));
        size_t n = 0;
        assert_non_null(vae_model_params(m, &n));
        assert_int_equal(n, (6 * 4 + 4) + (2 * 6 + 6));
        assert_int_equal(vae_model_encoder_layer_count(m), 0);
        assert_int_equal(vae_layer_input_size(vae_model_layer(m, 0)), 6);
        assert_int_equal(vae_layer_output_size(vae_model_layer(m, 0)), 4);
        vae_model_free(m);
    }
}

static void test_build_state(void **state)
{
    (void)state;
    vae_model *m = NULL;
    TU_OK(vae_model_create(&m, D, L, VAE_LIKELIHOOD_BERNOULLI));
    add_enc(m, dense(D, H, VAE_ACT_TANH));
    add_dec(m, dense(L, D, VAE_ACT_IDENTITY));
    assert_int_equal(vae_model_is_built(m), 0);
    TU_EXPECT_ERR(vae_model_build(NULL, 1), VAE_ERR_INVALID, "vae_model_build");
    TU_OK(vae_model_build(m, 1));
    assert_int_equal(vae_model_is_built(m), 1);
    const size_t np = vae_model_param_count(m);
    TU_EXPECT_ERR(vae_model_build(m, 2), VAE_ERR_STATE, "vae_model_build");
    /* The refused second build drew nothing: same parameters as a model
     * built once from seed 1. */
    vae_model *ref = NULL;
    TU_OK(vae_model_create(&ref, D, L, VAE_LIKELIHOOD_BERNOULLI));
    add_enc(ref, dense(D, H, VAE_ACT_TANH));
    add_dec(ref, dense(L, D, VAE_ACT_IDENTITY));
    TU_OK(vae_model_build(ref, 1));
    assert_int_equal(vae_model_param_count(ref), np);
    assert_memory_equal(vae_model_params(m, NULL), vae_model_params(ref, NULL),
                        np * sizeof(float));
    vae_model_free(ref);
    vae_model_free(m);
    vae_model_free(NULL);
}

/* vae_model_add_*_layer(m, &l) takes the layer in every case: on success the
 * model owns it, on failure it is freed; l is NULL afterwards. Under
 * AddressSanitizer a failed add that did not free the layer shows as a leak,
 * one that freed a layer a model still owns as a use after free. */
static void test_add_layer_consumes(void **state)
{
    (void)state;
    const char *fe = "vae_model_add_encoder_layer", *fd = "vae_model_add_decoder_layer";
    vae_model *m = NULL, *other = NULL;
    TU_OK(vae_model_create(&m, D, L, VAE_LIKELIHOOD_BERNOULLI));
    TU_OK(vae_model_create(&other, D, L, VAE_LIKELIHOOD_BERNOULLI));

    /* No model: the layer is freed. */
    vae_layer *l = dense(D, H, VAE_ACT_TANH);
    TU_EXPECT_ERR(vae_model_add_encoder_layer(NULL, &l), VAE_ERR_INVALID, fe);
    assert_null(l);
    l = dense(L, D, VAE_ACT_IDENTITY);
    TU_EXPECT_ERR(vae_model_add_decoder_layer(NULL, &l), VAE_ERR_INVALID, fd);
    assert_null(l);
    /* No layer at all. */
    TU_EXPECT_ERR(vae_model_add_encoder_layer(m, NULL), VAE_ERR_INVALID, fe);
    TU_EXPECT_ERR(vae_model_add_decoder_layer(m, NULL), VAE_ERR_INVALID, fd);
    TU_EXPECT_ERR(vae_model_add_encoder_layer(m, &l), VAE_ERR_INVALID, fe);
    TU_EXPECT_ERR(vae_model_add_decoder_layer(m, &l), VAE_ERR_INVALID, fd);
    assert_null(l);
    assert_int_equal(vae_model_layer_count(m), 0);

    /* Success: the model owns it, and vae_model_layer() gives it back. */
    l = dense(D, H, VAE_ACT_TANH);
    vae_layer *keep = l;
    TU_OK(vae_model_add_encoder_layer(m, &l));
    assert_null(l);
    assert_ptr_equal(vae_model_layer(m, 0), keep);
    assert_int_equal(vae_model_layer_count(m), 1);
    assert_int_equal(vae_model_encoder_layer_count(m), 1);

    /* A layer a model owns cannot be added again, to this model or another
     * (it would be freed twice); the caller's copy is cleared but the layer
     * stays the model's. */
    vae_layer *again = keep;
    TU_EXPECT_ERR(vae_model_add_encoder_layer(m, &again), VAE_ERR_INVALID, fe);
    assert_null(again);
    again = keep;
    TU_EXPECT_ERR(vae_model_add_decoder_layer(m, &again), VAE_ERR_INVALID, fd);
    assert_null(again);
    vae_layer *borrowed = (vae_layer *)vae_model_layer(m, 0);
    TU_EXPECT_ERR(vae_model_add_encoder_layer(other, &borrowed), VAE_ERR_INVALID, fe);
    assert_null(borrowed);
    borrowed = (vae_layer *)vae_model_layer(m, 0);
    TU_EXPECT_ERR(vae_model_add_decoder_layer(other, &borrowed), VAE_ERR_INVALID, fd);
    assert_null(borrowed);
    assert_int_equal(vae_model_layer_count(m), 1);
    assert_int_equal(vae_model_layer_count(other), 0);

    /* An owned layer refuses the standalone calls, and freeing it is
     * ignored (the model frees it once). */
    size_t c = 99;
    assert_null(vae_layer_params(keep, &c));
    assert_int_equal(c, 0);
    c = 99;
    assert_null(vae_layer_grads(keep, &c));
    assert_int_equal(c, 0);
    vae_rng *rng = NULL;
    TU_OK(vae_rng_create(&rng, 1));
    TU_EXPECT_ERR(vae_layer_init(keep, rng), VAE_ERR_STATE, "vae_layer_init");
    float xs[D] = {0.5f}, ys[H];
    TU_EXPECT_ERR(vae_layer_forward(keep, xs, 1, ys), VAE_ERR_STATE, "vae_layer_forward");
    vae_layer_free(keep);
    assert_int_equal(vae_layer_output_size(vae_model_layer(m, 0)), H);

    add_dec(m, dense(L, D, VAE_ACT_IDENTITY));
    TU_OK(vae_model_build(m, 1));
    assert_int_equal(vae_model_layer_count(m), 3);

    /* After the build nothing can be added; the layer is freed all the same,
     * dense or convolution, encoder or decoder. */
    l = dense(D, D, VAE_ACT_TANH);
    TU_EXPECT_ERR(vae_model_add_encoder_layer(m, &l), VAE_ERR_STATE, fe);
    assert_null(l);
    l = dense(D, D, VAE_ACT_TANH);
    TU_EXPECT_ERR(vae_model_add_decoder_layer(m, &l), VAE_ERR_STATE, fd);
    assert_null(l);
    TU_OK(vae_layer_conv2d_create(&l, 1, 2, 3, 2, 2, 2, 1, 0, VAE_ACT_RELU));
    TU_EXPECT_ERR(vae_model_add_encoder_layer(m, &l), VAE_ERR_STATE, fe);
    assert_null(l);
    TU_OK(vae_layer_conv2d_transpose_create(&l, 1, 2, 3, 1, 2, 2, 1, 0, 0, VAE_ACT_RELU));
    TU_EXPECT_ERR(vae_model_add_decoder_layer(m, &l), VAE_ERR_STATE, fd);
    assert_null(l);
    assert_int_equal(vae_model_layer_count(m), 3);

    /* The model still works. */
    float x[D] = {0.1f, 0.9f, 0.3f, 0.4f, 0.5f, 0.0f}, mu[L], lv[L];
    TU_OK(vae_encode(g_ctx, m, x, 1, mu, lv));
    assert_true(tu_all_finite(mu, L) && tu_all_finite(lv, L));

    vae_rng_free(rng);
    vae_model_free(other);
    vae_model_free(m);
}

/* Freeing a layer the model owns is ignored: the model frees it once (a
 * double free would show under AddressSanitizer), and it keeps working. */
static void test_free_owned_layer_ignored(void **state)
{
    (void)state;
    vae_model *m = NULL;
    vae_layer *enc = NULL, *dec = NULL;
    TU_OK(vae_model_create(&m, 4, 1, VAE_LIKELIHOOD_GAUSSIAN));
    TU_OK(vae_layer_dense_create(&enc, 4, 3, VAE_ACT_TANH));
    TU_OK(vae_layer_dense_create(&dec, 1, 4, VAE_ACT_IDENTITY));
    vae_layer *enc_copy = enc, *dec_copy = dec;
    TU_OK(vae_model_add_encoder_layer(m, &enc));
    TU_OK(vae_model_add_decoder_layer(m, &dec));
    assert_null(enc);
    assert_null(dec);
    vae_layer_free(enc_copy);
    TU_OK(vae_model_build(m, 1));
    vae_layer_free(dec_copy);
    vae_layer_free((vae_layer *)vae_model_layer(m, 1)); /* the head */
    float z[2] = {0.5f, -1.0f}, out[8];
    TU_OK(vae_decode(g_ctx, m, z, 2, out));
    assert_true(tu_all_finite(out, 8));
    assert_int_equal(vae_layer_output_size(dec_copy), 4);
    assert_int_equal(vae_layer_output_size(vae_model_layer(m, 1)), 2);
    vae_model_free(m);
}

static void test_create_bad_input(void **state)
{
    (void)state;
    vae_model *m = (vae_model *)&m;
    TU_EXPECT_ERR(vae_model_create(NULL, 4, 2, VAE_LIKELIHOOD_BERNOULLI), VAE_ERR_INVALID,
                  "vae_model_create");
    TU_EXPECT_ERR(vae_model_create(&m, 0, 2, VAE_LIKELIHOOD_BERNOULLI), VAE_ERR_INVALID,
                  "vae_model_create");
    assert_null(m);
    TU_EXPECT_ERR(vae_model_create(&m, 4, 0, VAE_LIKELIHOOD_BERNOULLI), VAE_ERR_INVALID,
                  "vae_model_create");
    TU_EXPECT_ERR(vae_model_create(&m, 4, 2, 3), VAE_ERR_INVALID, "vae_model_create");
    TU_EXPECT_ERR(vae_model_create(&m, 4, 2, -1), VAE_ERR_INVALID, "vae_model_create");
    TU_EXPECT_ERR(vae_model_create(&m, SIZE_MAX, 2, VAE_LIKELIHOOD_BERNOULLI), VAE_ERR_INVALID,
                  "vae_model_create");
    TU_EXPECT_ERR(vae_model_create(&m, ((size_t)1 << 24) + 1, 2, VAE_LIKELIHOOD_BERNOULLI),
                  VAE_ERR_INVALID, "vae_model_create");
    TU_EXPECT_ERR(vae_model_create(&m, 4, ((size_t)1 << 20) + 1, VAE_LIKELIHOOD_BERNOULLI),
                  VAE_ERR_INVALID, "vae_model_create");
    assert_null(m);

    const size_t hidden[2] = {5, 0};
    m = (vae_model *)&m;
    TU_EXPECT_ERR(vae_model_create_mlp(NULL, 6, hidden, 1, 2, VAE_ACT_TANH,
                                       VAE_LIKELIHOOD_BERNOULLI, 1),
                  VAE_ERR_INVALID, "vae_model_create_mlp");
    TU_EXPECT_ERR(vae_model_create_mlp(&m, 6, NULL, 1, 2, VAE_ACT_TANH,
                                       VAE_LIKELIHOOD_BERNOULLI, 1),
                  VAE_ERR_INVALID, "vae_model_create_mlp");
    assert_null(m);
    TU_EXPECT_ERR(vae_model_create_mlp(&m, 6, hidden, 2, 2, VAE_ACT_TANH,
                                       VAE_LIKELIHOOD_BERNOULLI, 1),
                  VAE_ERR_INVALID, "vae_model_create_mlp");
    /* Its own argument errors name it, not the pieces it is made of. */
    TU_EXPECT_ERR(vae_model_create_mlp(&m, 0, hidden, 1, 2, VAE_ACT_TANH,
                                       VAE_LIKELIHOOD_BERNOULLI, 1),
                  VAE_ERR_INVALID, "vae_model_create_mlp");
    TU_EXPECT_ERR(vae_model_create_mlp(&m, 6, hidden, 1, 2, 7, VAE_LIKELIHOOD_BERNOULLI, 1),
                  VAE_ERR_INVALID, "vae_model_create_mlp");
    TU_EXPECT_ERR(vae_model_create_mlp(&m, 6, hidden, 1, 2, VAE_ACT_TANH, 5, 1),
                  VAE_ERR_INVALID, "vae_model_create_mlp");
    assert_null(m);
    /* No hidden layers: a linear encoder head and a linear decoder. */
    TU_OK(vae_model_create_mlp(&m, 6, NULL, 0, 2, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI, 1));
    size_t n = 0;
    assert_non_null(vae_model_params(m, &n));
    assert_int_equal(n, (6 * 4 + 4) + (2 * 6 + 6));
    assert_int_equal(vae_model_param_count(m), n);
    assert_int_equal(vae_model_layer_count(m), 2);
    assert_int_equal(vae_model_encoder_layer_count(m), 0);
    assert_int_equal(vae_model_is_built(m), 1);
    vae_model_free(m);
}

static void test_getters(void **state)
{
    (void)state;
    vae_model *m = mlp(VAE_LIKELIHOOD_GAUSSIAN, 1);
    assert_int_equal(vae_model_input_dim(m), D);
    assert_int_equal(vae_model_latent_dim(m), L);
    assert_int_equal(vae_model_likelihood(m), VAE_LIKELIHOOD_GAUSSIAN);
    assert_int_equal(vae_model_is_built(m), 1);
    assert_int_equal(vae_model_input_dim(NULL), 0);
    assert_int_equal(vae_model_latent_dim(NULL), 0);
    assert_int_equal(vae_model_likelihood(NULL), -1);
    assert_int_equal(vae_model_is_built(NULL), 0);
    assert_int_equal(vae_model_layer_count(NULL), 0);
    assert_int_equal(vae_model_encoder_layer_count(NULL), 0);
    assert_int_equal(vae_model_param_count(NULL), 0);
    assert_int_equal(vae_model_tensor_count(NULL), 0);
    assert_null(vae_model_layer(NULL, 0));
    assert_null(vae_model_tensor_name(NULL, 0));
    size_t n = 99;
    assert_null(vae_model_params(NULL, &n));
    assert_int_equal(n, 0);
    assert_int_equal(vae_layer_kind(NULL), -1);
    assert_int_equal(vae_layer_activation(NULL), -1);
    assert_int_equal(vae_layer_input_size(NULL), 0);
    assert_int_equal(vae_layer_output_size(NULL), 0);
    vae_model_free(m);

    /* An unbuilt model: its layers so far, no head, no parameters. */
    TU_OK(vae_model_create(&m, D, L, VAE_LIKELIHOOD_BERNOULLI));
    assert_int_equal(vae_model_input_dim(m), D);
    assert_int_equal(vae_model_likelihood(m), VAE_LIKELIHOOD_BERNOULLI);
    assert_int_equal(vae_model_is_built(m), 0);
    assert_int_equal(vae_model_layer_count(m), 0);
    assert_null(vae_model_layer(m, 0));
    add_dec(m, dense(L, D, VAE_ACT_IDENTITY));
    add_enc(m, dense(D, H, VAE_ACT_RELU));
    assert_int_equal(vae_model_layer_count(m), 2);
    assert_int_equal(vae_model_encoder_layer_count(m), 1);
    assert_int_equal(vae_layer_activation(vae_model_layer(m, 0)), VAE_ACT_RELU);
    assert_int_equal(vae_layer_activation(vae_model_layer(m, 1)), VAE_ACT_IDENTITY);
    assert_int_equal(vae_model_param_count(m), 0);
    assert_int_equal(vae_model_tensor_count(m), 0);
    vae_model_free(m);
}

typedef struct layer_expect {
    int kind, act;
    size_t v[14]; /* VAE_LAYER_INPUTS (1) ... VAE_LAYER_OUTPUT_PADDING (14) */
} layer_expect;

static void check_layer(const vae_layer *l, const layer_expect *e, size_t index)
{
    assert_non_null(l);
    if (vae_layer_kind(l) != e->kind || vae_layer_activation(l) != e->act)
        fail_msg("layer %zu: kind %d activation %d, expected %d and %d", index,
                 vae_layer_kind(l), vae_layer_activation(l), e->kind, e->act);
    for (int p = VAE_LAYER_INPUTS; p <= VAE_LAYER_OUTPUT_PADDING; p++) {
        size_t v = 12345;
        TU_OK(vae_layer_get_param(l, p, &v));
        if (v != e->v[p - 1])
            fail_msg("layer %zu: vae_layer_get_param(%d) = %zu, expected %zu", index, p, v,
                     e->v[p - 1]);
    }
    assert_int_equal(vae_layer_input_size(l), e->v[VAE_LAYER_INPUTS - 1]);
    assert_int_equal(vae_layer_output_size(l), e->v[VAE_LAYER_OUTPUTS - 1]);
}

static layer_expect dense_expect(size_t in, size_t out, int act)
{
    layer_expect e = {VAE_LAYER_DENSE, act, {in, out, in * out + out}};
    return e;
}

static void test_introspection_mlp(void **state)
{
    (void)state;
    vae_model *m = NULL;
    const size_t hidden[2] = {5, 3};
    TU_OK(vae_model_create_mlp(&m, 6, hidden, 2, 2, VAE_ACT_SOFTPLUS, VAE_LIKELIHOOD_GAUSSIAN,
                               3));
    /* encoder 6->5->3, head 3->4, decoder 2->3->5->6 (the last identity). */
    const layer_expect ex[6] = {
        dense_expect(6, 5, VAE_ACT_SOFTPLUS), dense_expect(5, 3, VAE_ACT_SOFTPLUS),
        dense_expect(3, 4, VAE_ACT_IDENTITY), dense_expect(2, 3, VAE_ACT_SOFTPLUS),
        dense_expect(3, 5, VAE_ACT_SOFTPLUS), dense_expect(5, 6, VAE_ACT_IDENTITY),
    };
    assert_int_equal(vae_model_layer_count(m), 6);
    assert_int_equal(vae_model_encoder_layer_count(m), 2);
    size_t total = 0;
    for (size_t i = 0; i < 6; i++) {
        check_layer(vae_model_layer(m, i), &ex[i], i);
        total += ex[i].v[VAE_LAYER_PARAMS - 1];
    }
    assert_null(vae_model_layer(m, 6));
    assert_null(vae_model_layer(m, SIZE_MAX));
    assert_int_equal(vae_model_param_count(m), total);
    size_t n = 0;
    vae_model_params(m, &n);
    assert_int_equal(n, total);

    /* Bad input of vae_layer_get_param. */
    const vae_layer *l = vae_model_layer(m, 0);
    size_t v = 0;
    const char *fn = "vae_layer_get_param";
    TU_EXPECT_ERR(vae_layer_get_param(NULL, VAE_LAYER_INPUTS, &v), VAE_ERR_INVALID, fn);
    TU_EXPECT_ERR(vae_layer_get_param(l, VAE_LAYER_INPUTS, NULL), VAE_ERR_INVALID, fn);
    TU_EXPECT_ERR(vae_layer_get_param(l, 0, &v), VAE_ERR_INVALID, fn);
    TU_EXPECT_ERR(vae_layer_get_param(l, VAE_LAYER_OUTPUT_PADDING + 1, &v), VAE_ERR_INVALID, fn);
    TU_EXPECT_ERR(vae_layer_get_param(l, -1, &v), VAE_ERR_INVALID, fn);
    vae_model_free(m);
}

static void conv_expectations(layer_expect ex[5])
{
    const layer_expect conv = {VAE_LAYER_CONV2D,
                               VAE_ACT_LEAKY_RELU,
                               {42, 48, 3 * 1 * 3 * 2 + 3, 1, 7, 6, 3, 4, 4, 3, 2, 2, 1, 0}};
    const layer_expect convt = {VAE_LAYER_CONV2D_TRANSPOSE,
                                VAE_ACT_IDENTITY,
                                {24, 42, 2 * 1 * 2 * 3 + 1, 2, 4, 3, 1, 7, 6, 2, 3, 2, 1, 1}};
    ex[0] = conv;
    ex[1] = dense_expect(48, 8, VAE_ACT_TANH);
    ex[2] = dense_expect(8, 2 * CL, VAE_ACT_IDENTITY);
    ex[3] = dense_expect(CL, 24, VAE_ACT_ELU);
    ex[4] = convt;
}

static void test_introspection_conv(void **state)
{
    (void)state;
    layer_expect ex[5];
    conv_expectations(ex);
    vae_model *m = conv_model_unbuilt();
    /* Before the build: encoder then decoder, no head. */
    assert_int_equal(vae_model_is_built(m), 0);
    assert_int_equal(vae_model_layer_count(m), 4);
    assert_int_equal(vae_model_encoder_layer_count(m), 2);
    check_layer(vae_model_layer(m, 0), &ex[0], 0);
    check_layer(vae_model_layer(m, 1), &ex[1], 1);
    check_layer(vae_model_layer(m, 2), &ex[3], 2);
    check_layer(vae_model_layer(m, 3), &ex[4], 3);
    assert_null(vae_model_layer(m, 4));
    assert_int_equal(vae_model_param_count(m), 0);

    TU_OK(vae_model_build(m, 5));
    assert_int_equal(vae_model_is_built(m), 1);
    assert_int_equal(vae_model_layer_count(m), 5);
    assert_int_equal(vae_model_encoder_layer_count(m), 2);
    size_t total = 0;
    for (size_t i = 0; i < 5; i++) {
        check_layer(vae_model_layer(m, i), &ex[i], i);
        total += ex[i].v[VAE_LAYER_PARAMS - 1];
    }
    assert_null(vae_model_layer(m, 5));
    assert_int_equal(total, 534);
    assert_int_equal(vae_model_param_count(m), total);

    /* Standalone layers answer the same getters. */
    vae_layer *l = NULL;
    TU_OK(vae_layer_conv2d_transpose_create(&l, 2, 4, 3, 1, 2, 3, 2, 1, 1, VAE_ACT_IDENTITY));
    check_layer(l, &ex[4], 99);
    vae_layer_free(l);
    vae_model_free(m);
}

typedef struct tensor_expect {
    const char *name;
    size_t ndim, shape[4], offset, count;
} tensor_expect;

static const tensor_expect conv_tensors[10] = {
    {"encoder.0.weight", 4, {3, 1, 3, 2}, 0, 18},
    {"encoder.0.bias", 1, {3}, 18, 3},
    {"encoder.1.weight", 2, {8, 48}, 21, 384},
    {"encoder.1.bias", 1, {8}, 405, 8},
    {"head.weight", 2, {4, 8}, 413, 32},
    {"head.bias", 1, {4}, 445, 4},
    {"decoder.0.weight", 2, {24, 2}, 449, 48},
    {"decoder.0.bias", 1, {24}, 497, 24},
    {"decoder.1.weight", 4, {2, 1, 2, 3}, 521, 12},
    {"decoder.1.bias", 1, {1}, 533, 1},
};

/* Names, shapes and offsets of every tensor; the offsets tile the slab
 * exactly, in order, and each layer's weight and bias make up its
 * parameters. */
static void check_tensor_tiling(const vae_model *m, const tensor_expect *ex)
{
    const size_t nt = vae_model_tensor_count(m), nl = vae_model_layer_count(m);
    assert_int_equal(nt, 2 * nl);
    size_t next = 0;
    for (size_t i = 0; i < nt; i++) {
        const char *name = vae_model_tensor_name(m, i);
        assert_non_null(name);
        size_t shape[4] = {0, 0, 0, 0}, ndim = 0, off = 99, cnt = 0, idx = 99;
        TU_OK(vae_model_tensor_info(m, i, shape, &ndim, &off, &cnt));
        TU_OK(vae_model_tensor_find(m, name, &idx));
        assert_int_equal(idx, i);
        if (off != next)
            fail_msg("tensor %zu (%s) starts at %zu, the previous one ends at %zu", i, name,
                     off, next);
        size_t prod = 1;
        assert_true(ndim == 1 || ndim == 2 || ndim == 4);
        for (size_t k = 0; k < ndim; k++)
            prod *= shape[k];
        assert_int_equal(prod, cnt);
        next = off + cnt;

        /* weight of layer i/2 is [out, in] (dense) or 4-D; bias is [out]. */
        const vae_layer *l = vae_model_layer(m, i / 2);
        size_t outs = 0, lparams = 0;
        TU_OK(vae_layer_get_param(l, VAE_LAYER_OUTPUTS, &outs));
        TU_OK(vae_layer_get_param(l, VAE_LAYER_PARAMS, &lparams));
        if (i % 2) {
            assert_non_null(strstr(name, ".bias"));
            assert_int_equal(ndim, 1);
            size_t wc = 0;
            TU_OK(vae_model_tensor_info(m, i - 1, NULL, NULL, NULL, &wc));
            assert_int_equal(wc + cnt, lparams);
        } else {
            assert_non_null(strstr(name, ".weight"));
            if (vae_layer_kind(l) == VAE_LAYER_DENSE) {
                assert_int_equal(ndim, 2);
                assert_int_equal(shape[0], outs);
                assert_int_equal(shape[1], vae_layer_input_size(l));
            }
        }
        if (ex) {
            assert_string_equal(name, ex[i].name);
            assert_int_equal(ndim, ex[i].ndim);
            for (size_t k = 0; k < ndim; k++)
                assert_int_equal(shape[k], ex[i].shape[k]);
            assert_int_equal(off, ex[i].offset);
            assert_int_equal(cnt, ex[i].count);
        }
    }
    assert_int_equal(next, vae_model_param_count(m));
    /* Every output pointer may be NULL. */
    TU_OK(vae_model_tensor_info(m, 0, NULL, NULL, NULL, NULL));
}

static void test_tensor_names_and_layout(void **state)
{
    (void)state;
    vae_model *m = conv_model_unbuilt();
    TU_OK(vae_model_build(m, 9));
    assert_int_equal(vae_model_tensor_count(m), 10);
    check_tensor_tiling(m, conv_tensors);
    vae_model_free(m);

    /* An MLP with two hidden layers: encoder.0, encoder.1, head, decoder.0-2. */
    const size_t hidden[2] = {5, 3};
    TU_OK(vae_model_create_mlp(&m, 6, hidden, 2, 2, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI, 3));
    const tensor_expect mt[12] = {
        {"encoder.0.weight", 2, {5, 6}, 0, 30},   {"encoder.0.bias", 1, {5}, 30, 5},
        {"encoder.1.weight", 2, {3, 5}, 35, 15},  {"encoder.1.bias", 1, {3}, 50, 3},
        {"head.weight", 2, {4, 3}, 53, 12},       {"head.bias", 1, {4}, 65, 4},
        {"decoder.0.weight", 2, {3, 2}, 69, 6},   {"decoder.0.bias", 1, {3}, 75, 3},
        {"decoder.1.weight", 2, {5, 3}, 78, 15},  {"decoder.1.bias", 1, {5}, 93, 5},
        {"decoder.2.weight", 2, {6, 5}, 98, 30},  {"decoder.2.bias", 1, {6}, 128, 6},
    };
    check_tensor_tiling(m, mt);
    assert_int_equal(vae_model_param_count(m), 134);
    vae_model_free(m);

    /* Without encoder layers the first tensors are the head's. */
    TU_OK(vae_model_create_mlp(&m, 6, NULL, 0, 2, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI, 3));
    check_tensor_tiling(m, NULL);
    assert_string_equal(vae_model_tensor_name(m, 0), "head.weight");
    assert_string_equal(vae_model_tensor_name(m, 2), "decoder.0.weight");
    assert_null(vae_model_tensor_name(m, 4));
    vae_model_free(m);
}

static void test_tensor_get_set(void **state)
{
    (void)state;
    vae_model *m = conv_model_unbuilt();
    TU_OK(vae_model_build(m, 9));
    size_t np = 0;
    float *p = vae_model_params(m, &np);
    float *saved = tu_alloc(np, sizeof *saved), *buf = tu_alloc(np + 1, sizeof *buf);
    float *vals = tu_alloc(np + 1, sizeof *vals);
    tu_rng r = {41};

    /* get copies out exactly the slab's segment. */
    for (size_t i = 0; i < 10; i++) {
        const tensor_expect *t = &conv_tensors[i];
        memset(buf, 0, (np + 1) * sizeof *buf);
        TU_OK(vae_model_tensor_get(m, i, buf, t->count));
        assert_memory_equal(buf, p + t->offset, t->count * sizeof(float));
    }

    /* set writes exactly its segment; get gives the values back. */
    for (size_t i = 0; i < 10; i++) {
        const tensor_expect *t = &conv_tensors[i];
        memcpy(saved, p, np * sizeof *p);
        tu_fill_range(&r, vals, t->count, -1.0, 1.0);
        TU_OK(vae_model_tensor_set(m, i, vals, t->count));
        assert_memory_equal(p + t->offset, vals, t->count * sizeof(float));
        assert_memory_equal(p, saved, t->offset * sizeof(float));
        assert_memory_equal(p + t->offset + t->count, saved + t->offset + t->count,
                            (np - t->offset - t->count) * sizeof(float));
        TU_OK(vae_model_tensor_get(m, i, buf, t->count));
        assert_memory_equal(buf, vals, t->count * sizeof(float));
    }

    /* A NaN or an infinity anywhere: VAE_ERR_NUMERIC and nothing copied,
     * not even the finite values before it. */
    memcpy(saved, p, np * sizeof *p);
    const size_t wi = 2, wc = conv_tensors[2].count; /* encoder.1.weight, 384 */
    const float bad[3] = {NAN, INFINITY, -INFINITY};
    const size_t where[3] = {wc - 1, wc / 2, 0};
    for (size_t k = 0; k < 3; k++) {
        tu_fill_range(&r, vals, wc, -1.0, 1.0);
        vals[where[k]] = bad[k];
        TU_EXPECT_ERR(vae_model_tensor_set(m, wi, vals, wc), VAE_ERR_NUMERIC,
                      "vae_model_tensor_set");
        assert_memory_equal(p, saved, np * sizeof *p);
    }

    /* Wrong counts: VAE_ERR_SHAPE, nothing copied either way. */
    tu_fill_range(&r, vals, wc + 1, -1.0, 1.0);
    const size_t wrong[3] = {wc - 1, wc + 1, 0};
    for (size_t k = 0; k < 3; k++) {
        TU_EXPECT_ERR(vae_model_tensor_set(m, wi, vals, wrong[k]), VAE_ERR_SHAPE,
                      "vae_model_tensor_set");
        for (size_t j = 0; j <= wc; j++)
            buf[j] = -7.0f;
        TU_EXPECT_ERR(vae_model_tensor_get(m, wi, buf, wrong[k]), VAE_ERR_SHAPE,
                      "vae_model_tensor_get");
        for (size_t j = 0; j <= wc; j++)
            assert_true(buf[j] == -7.0f);
    }
    TU_EXPECT_ERR(vae_model_tensor_set(m, 9, vals, 2), VAE_ERR_SHAPE, "vae_model_tensor_set");
    assert_memory_equal(p, saved, np * sizeof *p);

    /* Bad arguments. */
    size_t idx = 77, shape[4], ndim, off, cnt;
    TU_EXPECT_ERR(vae_model_tensor_get(NULL, 0, buf, 18), VAE_ERR_INVALID,
                  "vae_model_tensor_get");
    TU_EXPECT_ERR(vae_model_tensor_get(m, 0, NULL, 18), VAE_ERR_INVALID, "vae_model_tensor_get");
    TU_EXPECT_ERR(vae_model_tensor_get(m, 10, buf, 18), VAE_ERR_INVALID, "vae_model_tensor_get");
    TU_EXPECT_ERR(vae_model_tensor_set(NULL, 0, vals, 18), VAE_ERR_INVALID,
                  "vae_model_tensor_set");
    TU_EXPECT_ERR(vae_model_tensor_set(m, 0, NULL, 18), VAE_ERR_INVALID, "vae_model_tensor_set");
    TU_EXPECT_ERR(vae_model_tensor_set(m, 10, vals, 18), VAE_ERR_INVALID,
                  "vae_model_tensor_set");
    TU_EXPECT_ERR(vae_model_tensor_set(m, SIZE_MAX, vals, 18), VAE_ERR_INVALID,
                  "vae_model_tensor_set");
    TU_EXPECT_ERR(vae_model_tensor_info(NULL, 0, shape, &ndim, &off, &cnt), VAE_ERR_INVALID,
                  "vae_model_tensor_info");
    TU_EXPECT_ERR(vae_model_tensor_info(m, 10, shape, &ndim, &off, &cnt), VAE_ERR_INVALID,
                  "vae_model_tensor_info");
    TU_EXPECT_ERR(vae_model_tensor_find(NULL, "head.bias", &idx), VAE_ERR_INVALID,
                  "vae_model_tensor_find");
    TU_EXPECT_ERR(vae_model_tensor_find(m, NULL, &idx), VAE_ERR_INVALID,
                  "vae_model_tensor_find");
    TU_EXPECT_ERR(vae_model_tensor_find(m, "head.bias", NULL), VAE_ERR_INVALID,
                  "vae_model_tensor_find");
    const char *unknown[] = {"encoder.2.weight", "head", "", "head.bias ", "Head.bias",
                             "decoder.1.bia", "decoder.01.bias", "encoder.0.weight.x"};
    for (size_t k = 0; k < sizeof unknown / sizeof unknown[0]; k++)
        TU_EXPECT_ERR_MSG(vae_model_tensor_find(m, unknown[k], &idx), VAE_ERR_INVALID,
                          "vae_model_tensor_find", unknown[k][0] ? unknown[k] : NULL);
    assert_null(vae_model_tensor_name(m, 10));
    assert_null(vae_model_tensor_name(m, SIZE_MAX));
    TU_OK(vae_model_tensor_find(m, "decoder.1.bias", &idx));
    assert_int_equal(idx, 9);
    assert_memory_equal(p, saved, np * sizeof *p);

    /* Through the tensors is through the model: with the head's weights zero,
     * mu and logvar are the head's biases for any input. */
    float zero[32] = {0};
    const float bias[2 * CL] = {0.25f, -1.5f, 0.75f, -2.0f};
    size_t hw = 0, hb = 0;
    TU_OK(vae_model_tensor_find(m, "head.weight", &hw));
    TU_OK(vae_model_tensor_find(m, "head.bias", &hb));
    TU_OK(vae_model_tensor_set(m, hw, zero, 32));
    TU_OK(vae_model_tensor_set(m, hb, bias, 2 * CL));
    float x[2 * CD], mu[2 * CL], lv[2 * CL];
    tu_fill_range(&r, x, 2 * CD, 0.0, 1.0);
    TU_OK(vae_encode(g_ctx, m, x, 2, mu, lv));
    for (size_t i = 0; i < 2; i++)
        for (size_t j = 0; j < CL; j++) {
            assert_true(mu[i * CL + j] == bias[j]);
            assert_true(lv[i * CL + j] == bias[CL + j]);
        }

    /* An unbuilt model has no tensors. */
    vae_model *u = conv_model_unbuilt();
    assert_int_equal(vae_model_tensor_count(u), 0);
    assert_null(vae_model_tensor_name(u, 0));
    TU_EXPECT_ERR(vae_model_tensor_find(u, "head.bias", &idx), VAE_ERR_STATE,
                  "vae_model_tensor_find");
    TU_EXPECT_ERR(vae_model_tensor_info(u, 0, shape, &ndim, &off, &cnt), VAE_ERR_STATE,
                  "vae_model_tensor_info");
    TU_EXPECT_ERR(vae_model_tensor_get(u, 0, buf, 18), VAE_ERR_STATE, "vae_model_tensor_get");
    TU_EXPECT_ERR(vae_model_tensor_set(u, 0, vals, 18), VAE_ERR_STATE, "vae_model_tensor_set");
    vae_model_free(u);

    free(saved);
    free(buf);
    free(vals);
    vae_model_free(m);
}

/* VAE_MODEL_GAUSSIAN_SIGMA: default 1, in [1e-6, 1e6] as a float, a
 * rejected value leaves the previous one, and it changes what a Gaussian
 * model computes. 1e-20 used to be accepted, and a forward-backward then
 * succeeded with a loss of 3.8e40 and an infinite gradient (1/sigma^2
 * overflows float); test_elbo.c checks that pass. */
static void test_model_params(void **state)
{
    (void)state;
    const char *fs = "vae_model_set_param", *fg = "vae_model_get_param";
    vae_model *g = mlp(VAE_LIKELIHOOD_GAUSSIAN, 1), *u = NULL;
    TU_OK(vae_model_create(&u, D, L, VAE_LIKELIHOOD_GAUSSIAN));
    double v = -1.0;
    TU_OK(vae_model_get_param(g, VAE_MODEL_GAUSSIAN_SIGMA, &v));
    assert_true(v == 1.0);
    v = -1.0;
    TU_OK(vae_model_get_param(u, VAE_MODEL_GAUSSIAN_SIGMA, &v));
    assert_true(v == 1.0);

    TU_EXPECT_ERR(vae_model_set_param(NULL, VAE_MODEL_GAUSSIAN_SIGMA, 1.0), VAE_ERR_INVALID, fs);
    TU_EXPECT_ERR(vae_model_set_param(g, 0, 1.0), VAE_ERR_INVALID, fs);
    TU_EXPECT_ERR(vae_model_set_param(g, 2, 1.0), VAE_ERR_INVALID, fs);
    TU_EXPECT_ERR(vae_model_get_param(NULL, VAE_MODEL_GAUSSIAN_SIGMA, &v), VAE_ERR_INVALID, fg);
    TU_EXPECT_ERR(vae_model_get_param(g, VAE_MODEL_GAUSSIAN_SIGMA, NULL), VAE_ERR_INVALID, fg);
    TU_EXPECT_ERR(vae_model_get_param(g, 0, &v), VAE_ERR_INVALID, fg);
    TU_EXPECT_ERR(vae_model_get_param(g, 2, &v), VAE_ERR_INVALID, fg);

    TU_OK(vae_model_set_param(g, VAE_MODEL_GAUSSIAN_SIGMA, 0.5));
    const double bad[] = {0.0,    -0.0,  -1.0, -1e-300, NAN,     INFINITY, -INFINITY, 1e-20,
                          9.9e-7, 1e-45, 1e-300, 1.01e6, 1e7, 3.4e38, 1e300};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        TU_EXPECT_ERR_MSG(vae_model_set_param(g, VAE_MODEL_GAUSSIAN_SIGMA, bad[i]),
                          VAE_ERR_INVALID, fs, "[1e-6, 1e6]");
        TU_OK(vae_model_get_param(g, VAE_MODEL_GAUSSIAN_SIGMA, &v));
        assert_true(v == 0.5);
    }
    /* The bounds themselves, kept as floats. */
    TU_OK(vae_model_set_param(g, VAE_MODEL_GAUSSIAN_SIGMA, 1e-6));
    TU_OK(vae_model_get_param(g, VAE_MODEL_GAUSSIAN_SIGMA, &v));
    assert_true(v == (double)1e-6f);
    TU_OK(vae_model_set_param(g, VAE_MODEL_GAUSSIAN_SIGMA, (double)1e-6f)); /* read back */
    TU_OK(vae_model_set_param(g, VAE_MODEL_GAUSSIAN_SIGMA, 1e6));
    TU_OK(vae_model_get_param(g, VAE_MODEL_GAUSSIAN_SIGMA, &v));
    assert_true(v == 1e6);
    TU_OK(vae_model_set_param(g, VAE_MODEL_GAUSSIAN_SIGMA, 1e-3));
    TU_OK(vae_model_get_param(g, VAE_MODEL_GAUSSIAN_SIGMA, &v));
    TU_CLOSE(v, 1e-3, 1e-7, 0.0);
    TU_OK(vae_model_set_param(u, VAE_MODEL_GAUSSIAN_SIGMA, 2.0));
    TU_OK(vae_model_get_param(u, VAE_MODEL_GAUSSIAN_SIGMA, &v));
    assert_true(v == 2.0);

    /* The setting is used. With the last decoder layer's weights zero and
     * its biases equal to x, the mean is x for every z: the loss of x under
     * the autoencoder objective (no KL, no noise) is then the constant
     * D log(2 pi sigma^2) / 2 alone. */
    vae_elbo *ae = NULL;
    TU_OK(vae_elbo_create(&ae));
    TU_OK(vae_elbo_set_param(ae, VAE_ELBO_OBJECTIVE, VAE_OBJECTIVE_AUTOENCODER));
    float x[D], zero[D * H] = {0};
    tu_rng r = {3};
    tu_fill_range(&r, x, D, -1.0, 1.0);
    size_t wi = 0, bi = 0;
    TU_OK(vae_model_tensor_find(g, "decoder.1.weight", &wi));
    TU_OK(vae_model_tensor_find(g, "decoder.1.bias", &bi));
    TU_OK(vae_model_tensor_set(g, wi, zero, D * H));
    TU_OK(vae_model_tensor_set(g, bi, x, D));
    const double log_2pi = 1.8378770664093454836;
    const double sigmas[3] = {1.0, 0.5, 3.0};
    for (size_t i = 0; i < 3; i++) {
        vae_epoch_stats st = {sizeof st};
        double per = 0;
        TU_OK(vae_model_set_param(g, VAE_MODEL_GAUSSIAN_SIGMA, sigmas[i]));
        TU_OK(vae_elbo_evaluate(g_ctx, g, ae, x, 1, NULL, NULL, &per, &st));
        const double want = 0.5 * D * (log_2pi + 2.0 * log(sigmas[i]));
        TU_CLOSE(per, want, 1e-6, 0.0);
        TU_CLOSE(st.loss, want, 1e-6, 0.0);
    }
    vae_elbo_free(ae);
    vae_model_free(u);
    vae_model_free(g);
}

static void test_slab_count(void **state)
{
    (void)state;
    vae_model *m = mlp(VAE_LIKELIHOOD_BERNOULLI, 1);
    size_t np = 0;
    float *p = vae_model_params(m, &np);
    /* encoder 6->5, head 5->2*2, decoder 2->5, 5->6; each in*out + out. */
    assert_int_equal(np, (6 * 5 + 5) + (5 * 4 + 4) + (2 * 5 + 5) + (5 * 6 + 6));
    assert_int_equal(vae_model_param_count(m), np);
    assert_non_null(p);
    assert_ptr_equal(vae_model_params(m, NULL), p);
    vae_model_free(m);

    const size_t hidden[2] = {5, 3};
    TU_OK(vae_model_create_mlp(&m, 6, hidden, 2, 2, VAE_ACT_RELU, VAE_LIKELIHOOD_GAUSSIAN, 3));
    vae_model_params(m, &np);
    assert_int_equal(np, (6 * 5 + 5) + (5 * 3 + 3) + (3 * 4 + 4) + (2 * 3 + 3) + (3 * 5 + 5) +
                             (5 * 6 + 6));
    vae_model_free(m);
}

static void test_slab_order(void **state)
{
    (void)state;
    vae_model *m = NULL;
    TU_OK(vae_model_create(&m, D, L, VAE_LIKELIHOOD_BERNOULLI));
    vae_layer *e0 = dense(D, H, VAE_ACT_TANH), *e1 = dense(H, 4, VAE_ACT_TANH);
    vae_layer *d0 = dense(L, 3, VAE_ACT_TANH), *d1 = dense(3, D, VAE_ACT_IDENTITY);
    const vae_layer *ids[4] = {e0, e1, d0, d1};
    /* Decoder first, then encoder: the order is still encoder, head,
     * decoder, each stack in the order of its adds. */
    add_dec(m, d0);
    add_enc(m, e0);
    add_dec(m, d1);
    add_enc(m, e1);
    size_t n = 99;
    assert_null(vae_model_params(m, &n));
    assert_int_equal(n, 0);
    assert_ptr_equal(vae_model_layer(m, 0), ids[0]);
    assert_ptr_equal(vae_model_layer(m, 1), ids[1]);
    assert_ptr_equal(vae_model_layer(m, 2), ids[2]);
    assert_ptr_equal(vae_model_layer(m, 3), ids[3]);
    TU_OK(vae_model_build(m, 11));
    assert_ptr_equal(vae_model_layer(m, 0), ids[0]);
    assert_ptr_equal(vae_model_layer(m, 1), ids[1]);
    assert_int_equal(vae_layer_input_size(vae_model_layer(m, 2)), 4);
    assert_int_equal(vae_layer_output_size(vae_model_layer(m, 2)), 2 * L);
    assert_ptr_equal(vae_model_layer(m, 3), ids[2]);
    assert_ptr_equal(vae_model_layer(m, 4), ids[3]);
    size_t np = 0;
    float *p = vae_model_params(m, &np);
    const size_t off_e1 = D * H + H, off_head = off_e1 + H * 4 + 4;
    const size_t off_d0 = off_head + 4 * 2 * L + 2 * L, off_d1 = off_d0 + L * 3 + 3;
    assert_int_equal(np, off_d1 + 3 * D + D);
    const size_t offs[5] = {0, off_e1, off_head, off_d0, off_d1};
    for (size_t i = 0; i < 5; i++) {
        size_t off = 1, cnt = 0, lp = 0;
        TU_OK(vae_model_tensor_info(m, 2 * i, NULL, NULL, &off, &cnt));
        assert_int_equal(off, offs[i]);
        TU_OK(vae_layer_get_param(vae_model_layer(m, i), VAE_LAYER_PARAMS, &lp));
        size_t bc = 0;
        TU_OK(vae_model_tensor_info(m, 2 * i + 1, NULL, NULL, NULL, &bc));
        assert_int_equal(cnt + bc, lp);
    }
    /* Through the slab is through the layer: encode sees a bias written
     * into the slab at the head's offset. Zero the head's weights and set
     * its biases; then mu and logvar are those biases for any x. */
    memset(p + off_head, 0, 4 * 2 * L * sizeof(float));
    const float bias[2 * L] = {0.25f, -1.5f, 0.75f, -2.0f};
    memcpy(p + off_head + 4 * 2 * L, bias, sizeof bias);
    float x[D] = {0.1f, 0.9f, 0.3f, 0.4f, 0.5f, 0.0f}, mu[L], lv[L];
    TU_OK(vae_encode(g_ctx, m, x, 1, mu, lv));
    for (size_t j = 0; j < L; j++) {
        assert_true(mu[j] == bias[j]);
        assert_true(lv[j] == bias[L + j]);
    }
    vae_model_free(m);
}

static void check_init_bounds(const float *p, const size_t *in, const size_t *out, size_t n)
{
    for (size_t l = 0; l < n; l++) {
        const double bound = 1.0 / sqrt((double)in[l]);
        const size_t cnt = in[l] * out[l] + out[l];
        double maxabs = 0.0;
        for (size_t i = 0; i < cnt; i++) {
            if (!(fabs(p[i]) <= bound))
                fail_msg("layer %zu parameter %zu = %g is outside +-1/sqrt(%zu)", l, i,
                         (double)p[i], in[l]);
            maxabs = fmax(maxabs, fabs(p[i]));
        }
        /* Uniform over the whole range: with >= 10 draws the largest is
         * below 0.5 bound with probability <= 2^-10. Catches a wrong fan
         * (fan_out or in*out) in the bound. */
        assert_true(maxabs > 0.5 * bound);
        p += cnt;
    }
}

static void test_init(void **state)
{
    (void)state;
    vae_model *a = mlp(VAE_LIKELIHOOD_BERNOULLI, 123), *b = mlp(VAE_LIKELIHOOD_BERNOULLI, 123);
    vae_model *c = mlp(VAE_LIKELIHOOD_BERNOULLI, 124);
    size_t n = 0;
    float *pa = vae_model_params(a, &n), *pb = vae_model_params(b, NULL);
    float *pc = vae_model_params(c, NULL);
    /* encoder 6->5, head 5->4, decoder 2->5, 5->6 */
    const size_t in[4] = {D, H, L, H}, out[4] = {H, 2 * L, H, D};
    check_init_bounds(pa, in, out, 4);
    check_init_bounds(pc, in, out, 4);
    assert_memory_equal(pa, pb, n * sizeof(float));
    size_t same = 0;
    for (size_t i = 0; i < n; i++)
        same += pa[i] == pc[i];
    assert_true(same < n / 20);

    /* The model draws every parameter from the build seed in slab order:
     * a hand-assembled model with the same architecture and seed matches the
     * convenience constructor bit for bit, even when its layers had been
     * initialized before they were added. */
    vae_model *m = NULL;
    vae_rng *rng = NULL;
    TU_OK(vae_rng_create(&rng, 99));
    TU_OK(vae_model_create(&m, D, L, VAE_LIKELIHOOD_BERNOULLI));
    vae_layer *e0 = dense(D, H, VAE_ACT_TANH), *d0 = dense(L, H, VAE_ACT_TANH);
    vae_layer *d1 = dense(H, D, VAE_ACT_IDENTITY);
    TU_OK(vae_layer_init(e0, rng));
    TU_OK(vae_layer_init(d1, rng));
    add_enc(m, e0);
    add_dec(m, d0);
    add_dec(m, d1);
    TU_OK(vae_model_build(m, 123));
    size_t nm = 0;
    float *pm = vae_model_params(m, &nm);
    assert_int_equal(nm, n);
    assert_memory_equal(pm, pa, n * sizeof(float));

    /* Conv layers are drawn with their fan-in too: in_c*kh*kw for Conv2D
     * (1*3*2 = 6), out_c*kh*kw for ConvTranspose2D (1*2*3 = 6). */
    vae_model *cm = conv_model_unbuilt();
    TU_OK(vae_model_build(cm, 7));
    const float *pcm = vae_model_params(cm, NULL);
    const size_t cin[1] = {6}, cout[1] = {3};
    check_init_bounds(pcm, cin, cout, 1); /* 18 weights + 3 biases */
    double mx = 0.0;
    for (size_t i = 521; i < 534; i++) {
        assert_true(fabs(pcm[i]) <= 1.0 / sqrt(6.0));
        mx = fmax(mx, fabs(pcm[i]));
    }
    assert_true(mx > 0.5 / sqrt(6.0));
    vae_model_free(cm);

    vae_model_free(m);
    vae_rng_free(rng);
    vae_model_free(a);
    vae_model_free(b);
    vae_model_free(c);
}

/* A trainer holds the model's gradients: a zero slab of the model's
 * parameter count, writable, zeroed on request. */
static void test_trainer_grads(void **state)
{
    (void)state;
    vae_model *m = mlp(VAE_LIKELIHOOD_BERNOULLI, 1);
    vae_elbo *e = NULL;
    vae_optimizer *opt = NULL;
    vae_trainer *t = NULL;
    TU_OK(vae_elbo_create(&e));
    TU_OK(vae_optimizer_create(&opt, VAE_OPTIMIZER_SGD));
    TU_OK(vae_trainer_create(&t, m, e, opt, g_ctx, 1));
    size_t n = 0;
    float *g = vae_trainer_grads(t, &n);
    assert_non_null(g);
    assert_int_equal(n, vae_model_param_count(m));
    assert_true(g != vae_model_params(m, NULL));
    for (size_t i = 0; i < n; i++)
        assert_true(g[i] == 0.0f);
    for (size_t i = 0; i < n; i++)
        g[i] = (float)i + 1.0f;
    TU_OK(vae_trainer_zero_grads(t));
    for (size_t i = 0; i < n; i++)
        assert_true(g[i] == 0.0f);
    TU_EXPECT_ERR(vae_trainer_zero_grads(NULL), VAE_ERR_INVALID, "vae_trainer_zero_grads");
    n = 99;
    assert_null(vae_trainer_grads(NULL, &n));
    assert_int_equal(n, 0);

    /* No trainer for an unbuilt model. */
    vae_model *u = NULL;
    vae_trainer *tu = (vae_trainer *)&tu;
    TU_OK(vae_model_create(&u, D, L, VAE_LIKELIHOOD_BERNOULLI));
    TU_EXPECT_ERR(vae_trainer_create(&tu, u, e, opt, g_ctx, 1), VAE_ERR_STATE,
                  "vae_trainer_create");
    assert_null(tu);
    vae_model_free(u);
    vae_trainer_free(t);
    vae_optimizer_free(opt);
    vae_elbo_free(e);
    vae_model_free(m);
}

/* Tolerance of the float forward against the double reference: O(1) values
 * through three small layers of at most 6 terms each, so a few 1e-7 of
 * rounding; 2e-6 leaves margin while any wrong weight shows at 1e-2. */
#define INFER_TOL 2e-6

static void test_encode_decode_reference(void **state)
{
    (void)state;
    for (int lik = 0; lik < 2; lik++) {
        vae_model *m = mlp(lik, 7 + (uint64_t)lik);
        const float *slab = vae_model_params(m, NULL);
        tu_rng r = {77};
        enum { N = 5 };
        float x[N * D], mu[N * L], lv[N * L], z[N * L], out[N * D];
        tu_fill_range(&r, x, N * D, 0.0, 1.0);
        tu_fill_range(&r, z, N * L, -3.0, 3.0);
        TU_OK(vae_encode(g_ctx, m, x, N, mu, lv));
        TU_OK(vae_decode(g_ctx, m, z, N, out));
        for (size_t i = 0; i < N; i++) {
            double rmu[L], rlv[L], zd[L], rout[D];
            ref_encode(slab, x + i * D, rmu, rlv);
            for (size_t j = 0; j < L; j++) {
                TU_CLOSE(mu[i * L + j], rmu[j], 0.0, INFER_TOL);
                TU_CLOSE(lv[i * L + j], rlv[j], 0.0, INFER_TOL);
                zd[j] = z[i * L + j];
            }
            ref_decode(slab, zd, rout);
            for (size_t k = 0; k < D; k++) {
                if (lik == VAE_LIKELIHOOD_BERNOULLI) {
                    /* Probabilities, strictly inside (0, 1) at these logits. */
                    assert_true(out[i * D + k] > 0.0f && out[i * D + k] < 1.0f);
                    TU_CLOSE(out[i * D + k], 1.0 / (1.0 + exp(-rout[k])), 0.0, INFER_TOL);
                } else {
                    TU_CLOSE(out[i * D + k], rout[k], 0.0, INFER_TOL);
                }
            }
        }
        vae_model_free(m);
    }
}

static void test_reconstruct_is_decode_of_mu(void **state)
{
    (void)state;
    for (int lik = 0; lik < 2; lik++) {
        vae_model *m = mlp(lik, 21);
        tu_rng r = {5};
        enum { N = 7 };
        float x[N * D], mu[N * L], lv[N * L], dec[N * D], rec[N * D];
        tu_fill_range(&r, x, N * D, 0.0, 1.0);
        TU_OK(vae_encode(g_ctx, m, x, N, mu, lv));
        TU_OK(vae_decode(g_ctx, m, mu, N, dec));
        TU_OK(vae_reconstruct(g_ctx, m, x, N, rec));
        /* The same float operations on the same batch: equal up to the BLAS
         * kernel choice, so 1e-6 (a few ulps of O(1) values). */
        for (size_t k = 0; k < N * D; k++)
            TU_CLOSE(rec[k], dec[k], 0.0, 1e-6);
        /* Deterministic: the same call again gives the same bits. */
        float rec2[N * D];
        TU_OK(vae_reconstruct(g_ctx, m, x, N, rec2));
        assert_memory_equal(rec, rec2, sizeof rec);
        vae_model_free(m);
    }
}

static void test_sample(void **state)
{
    (void)state;
    vae_model *m = mlp(VAE_LIKELIHOOD_BERNOULLI, 3);
    vae_rng *r1 = NULL, *r2 = NULL;
    TU_OK(vae_rng_create(&r1, 8));
    TU_OK(vae_rng_create(&r2, 8));
    enum { N = 9 };
    float s[N * D], z[N * L], d[N * D];
    TU_OK(vae_sample(g_ctx, m, r1, N, s));
    /* Sampling decodes z ~ N(0, I) drawn from the generator in sample
     * order: the same as drawing the n*latent normals and decoding them. */
    TU_OK(vae_rng_normal(r2, z, N * L));
    TU_OK(vae_decode(g_ctx, m, z, N, d));
    for (size_t k = 0; k < N * D; k++)
        assert_true(s[k] > 0.0f && s[k] < 1.0f);
    assert_memory_equal(s, d, sizeof s);
    /* Both generators advanced by the same draws. */
    float a1, a2;
    TU_OK(vae_rng_uniform(r1, &a1, 1));
    TU_OK(vae_rng_uniform(r2, &a2, 1));
    assert_true(a1 == a2);
    /* The generator advanced: the next samples differ. */
    float s2[N * D];
    TU_OK(vae_sample(g_ctx, m, r1, N, s2));
    assert_true(memcmp(s, s2, sizeof s) != 0);
    vae_rng_free(r1);
    vae_rng_free(r2);
    vae_model_free(m);
}

/* Batches far larger than a block (64 samples) or than the reservation of
 * the context: the result does not depend on the workspace size, and every
 * row agrees with smaller calls and with the double reference. */
static void test_large_batches(void **state)
{
    (void)state;
    enum { N = 1000, C = 64 };
    vae_model *m = mlp(VAE_LIKELIHOOD_BERNOULLI, 4);
    vae_context *small = NULL;
    TU_OK(vae_context_create(&small));
    TU_OK(vae_context_reserve(small, m, 16));
    tu_rng r = {9};
    float *x = tu_alloc(N * D, sizeof *x), *z = tu_alloc(N * L, sizeof *z);
    float *out = tu_alloc(N * D, sizeof *out), *ref = tu_alloc(N * D, sizeof *ref);
    float *mu = tu_alloc(N * L, sizeof *mu), *lv = tu_alloc(N * L, sizeof *lv);
    float *rmu = tu_alloc(N * L, sizeof *rmu), *rlv = tu_alloc(N * L, sizeof *rlv);
    tu_fill_range(&r, x, N * D, 0.0, 1.0);
    tu_fill_range(&r, z, N * L, -2.0, 2.0);

    /* A context reserved for 16 rows grows to the batch and computes the
     * same bits as one that never was reserved. */
    TU_OK(vae_decode(g_ctx, m, z, N, out));
    TU_OK(vae_decode(small, m, z, N, ref));
    assert_memory_equal(out, ref, N * D * sizeof(float));
    /* Rows agree with 64-row calls up to the BLAS's rounding of other
     * block sizes (a row decoded at the wrong offset would be far off). */
    for (size_t s = 0; s < N; s += C) {
        size_t b = N - s < C ? N - s : C;
        TU_OK(vae_decode(small, m, z + s * L, b, ref + s * D));
    }
    for (size_t k = 0; k < N * D; k++)
        TU_CLOSE(out[k], ref[k], 0.0, 1e-6);

    TU_OK(vae_encode(g_ctx, m, x, N, mu, lv));
    TU_OK(vae_encode(small, m, x, N, rmu, rlv));
    assert_memory_equal(mu, rmu, N * L * sizeof(float));
    assert_memory_equal(lv, rlv, N * L * sizeof(float));
    for (size_t s = 0; s < N; s += C) {
        size_t b = N - s < C ? N - s : C;
        TU_OK(vae_encode(small, m, x + s * D, b, rmu + s * L, rlv + s * L));
    }
    for (size_t k = 0; k < N * L; k++) {
        TU_CLOSE(mu[k], rmu[k], 0.0, 1e-6);
        TU_CLOSE(lv[k], rlv[k], 0.0, 1e-6);
    }
    const float *slab = vae_model_params(m, NULL);
    for (size_t i = 0; i < N; i++) {
        double emu[L], elv[L];
        ref_encode(slab, x + i * D, emu, elv);
        for (size_t j = 0; j < L; j++) {
            TU_CLOSE(mu[i * L + j], emu[j], 0.0, INFER_TOL);
            TU_CLOSE(lv[i * L + j], elv[j], 0.0, INFER_TOL);
        }
    }

    TU_OK(vae_reconstruct(g_ctx, m, x, N, out));
    TU_OK(vae_reconstruct(small, m, x, N, ref));
    assert_memory_equal(out, ref, N * D * sizeof(float));

    /* A Gaussian model's large batch agrees with the double reference. */
    vae_model *m2 = mlp(VAE_LIKELIHOOD_GAUSSIAN, 4);
    const float *slab2 = vae_model_params(m2, NULL);
    TU_OK(vae_decode(small, m2, z, N, out));
    for (size_t i = 0; i < N; i++) {
        double zd[L] = {z[i * L], z[i * L + 1]}, ro[D];
        ref_decode(slab2, zd, ro);
        for (size_t k = 0; k < D; k++)
            TU_CLOSE(out[i * D + k], ro[k], 0.0, INFER_TOL);
    }
    vae_model_free(m2);

    free(x);
    free(z);
    free(out);
    free(ref);
    free(mu);
    free(lv);
    free(rmu);
    free(rlv);
    vae_context_free(small);
    vae_model_free(m);
}

static void test_inference_bad_input(void **state)
{
    (void)state;
    vae_model *m = mlp(VAE_LIKELIHOOD_BERNOULLI, 1), *g = mlp(VAE_LIKELIHOOD_GAUSSIAN, 1);
    vae_model *u = NULL;
    vae_context *c = g_ctx;
    TU_OK(vae_model_create(&u, D, L, VAE_LIKELIHOOD_BERNOULLI));
    vae_rng *rng = NULL;
    TU_OK(vae_rng_create(&rng, 1));
    float x[2 * D] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f};
    float z[2 * L] = {0.1f, -0.2f, 0.3f, 0.4f}, mu[2 * L], lv[2 * L], out[2 * D];

    /* reserve */
    const char *fr = "vae_context_reserve";
    TU_EXPECT_ERR(vae_context_reserve(NULL, m, 4), VAE_ERR_INVALID, fr);
    TU_EXPECT_ERR(vae_context_reserve(c, NULL, 4), VAE_ERR_INVALID, fr);
    TU_EXPECT_ERR(vae_context_reserve(c, u, 4), VAE_ERR_STATE, fr);
    TU_EXPECT_ERR(vae_context_reserve(c, m, 0), VAE_ERR_INVALID, fr);
    TU_EXPECT_ERR(vae_context_reserve(c, m, ((size_t)1 << 20) + 1), VAE_ERR_INVALID, fr);
    TU_EXPECT_ERR(vae_context_reserve(c, m, SIZE_MAX), VAE_ERR_INVALID, fr);
    TU_OK(vae_context_reserve(c, m, 4));

    /* encode */
    const char *fe = "vae_encode";
    TU_EXPECT_ERR(vae_encode(NULL, m, x, 2, mu, lv), VAE_ERR_INVALID, fe);
    TU_EXPECT_ERR(vae_encode(c, NULL, x, 2, mu, lv), VAE_ERR_INVALID, fe);
    TU_EXPECT_ERR(vae_encode(c, u, x, 2, mu, lv), VAE_ERR_STATE, fe);
    TU_EXPECT_ERR(vae_encode(c, m, NULL, 2, mu, lv), VAE_ERR_INVALID, fe);
    TU_EXPECT_ERR(vae_encode(c, m, x, 2, NULL, lv), VAE_ERR_INVALID, fe);
    TU_EXPECT_ERR(vae_encode(c, m, x, 2, mu, NULL), VAE_ERR_INVALID, fe);
    TU_EXPECT_ERR(vae_encode(c, m, x, 0, mu, lv), VAE_ERR_INVALID, fe);

    /* decode */
    const char *fd = "vae_decode";
    TU_EXPECT_ERR(vae_decode(NULL, m, z, 2, out), VAE_ERR_INVALID, fd);
    TU_EXPECT_ERR(vae_decode(c, NULL, z, 2, out), VAE_ERR_INVALID, fd);
    TU_EXPECT_ERR(vae_decode(c, u, z, 2, out), VAE_ERR_STATE, fd);
    TU_EXPECT_ERR(vae_decode(c, m, NULL, 2, out), VAE_ERR_INVALID, fd);
    TU_EXPECT_ERR(vae_decode(c, m, z, 2, NULL), VAE_ERR_INVALID, fd);
    TU_EXPECT_ERR(vae_decode(c, m, z, 0, out), VAE_ERR_INVALID, fd);
    z[3] = NAN;
    TU_EXPECT_ERR(vae_decode(c, m, z, 2, out), VAE_ERR_NUMERIC, fd);
    z[3] = -INFINITY;
    TU_EXPECT_ERR(vae_decode(c, g, z, 2, out), VAE_ERR_NUMERIC, fd);
    z[3] = 0.4f;

    /* sample */
    const char *fs = "vae_sample";
    TU_EXPECT_ERR(vae_sample(NULL, m, rng, 2, out), VAE_ERR_INVALID, fs);
    TU_EXPECT_ERR(vae_sample(c, NULL, rng, 2, out), VAE_ERR_INVALID, fs);
    TU_EXPECT_ERR(vae_sample(c, u, rng, 2, out), VAE_ERR_STATE, fs);
    TU_EXPECT_ERR(vae_sample(c, m, NULL, 2, out), VAE_ERR_INVALID, fs);
    TU_EXPECT_ERR(vae_sample(c, m, rng, 2, NULL), VAE_ERR_INVALID, fs);
    TU_EXPECT_ERR(vae_sample(c, m, rng, 0, out), VAE_ERR_INVALID, fs);

    /* reconstruct */
    const char *fc = "vae_reconstruct";
    TU_EXPECT_ERR(vae_reconstruct(NULL, m, x, 2, out), VAE_ERR_INVALID, fc);
    TU_EXPECT_ERR(vae_reconstruct(c, NULL, x, 2, out), VAE_ERR_INVALID, fc);
    TU_EXPECT_ERR(vae_reconstruct(c, u, x, 2, out), VAE_ERR_STATE, fc);
    TU_EXPECT_ERR(vae_reconstruct(c, m, NULL, 2, out), VAE_ERR_INVALID, fc);
    TU_EXPECT_ERR(vae_reconstruct(c, m, x, 2, NULL), VAE_ERR_INVALID, fc);
    TU_EXPECT_ERR(vae_reconstruct(c, m, x, 0, out), VAE_ERR_INVALID, fc);

    /* Non-finite inputs (in the second sample, so the whole batch is checked)
     * and, for Bernoulli models, inputs outside [0, 1]. */
    const float bad_finite[] = {NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < 3; i++) {
        x[D + 4] = bad_finite[i];
        TU_EXPECT_ERR(vae_encode(c, m, x, 2, mu, lv), VAE_ERR_NUMERIC, fe);
        TU_EXPECT_ERR(vae_encode(c, g, x, 2, mu, lv), VAE_ERR_NUMERIC, fe);
        TU_EXPECT_ERR(vae_reconstruct(c, m, x, 2, out), VAE_ERR_NUMERIC, fc);
        TU_EXPECT_ERR(vae_reconstruct(c, g, x, 2, out), VAE_ERR_NUMERIC, fc);
    }
    const float outside[] = {-0.01f, 1.01f, 2.0f};
    for (size_t i = 0; i < 3; i++) {
        x[D + 4] = outside[i];
        TU_EXPECT_ERR(vae_encode(c, m, x, 2, mu, lv), VAE_ERR_INVALID, fe);
        TU_EXPECT_ERR(vae_reconstruct(c, m, x, 2, out), VAE_ERR_INVALID, fc);
        /* A Gaussian model takes any finite value. */
        TU_OK(vae_encode(c, g, x, 2, mu, lv));
        TU_OK(vae_reconstruct(c, g, x, 2, out));
    }
    /* The bounds themselves are valid Bernoulli inputs. */
    x[D + 4] = 0.0f;
    x[D + 5] = 1.0f;
    TU_OK(vae_encode(c, m, x, 2, mu, lv));

    vae_rng_free(rng);
    vae_model_free(u);
    vae_model_free(g);
    vae_model_free(m);
}

/* Finite but huge parameters overflow the activations; inference reports it
 * instead of returning inf or NaN. Every parameter is 3e38 except: the first
 * decoder layer has zero weights, so its output is its bias 3e38 whatever z
 * is; the second then overflows to +inf; the last layer's weights are +-1
 * along each row, so every output is inf - inf = NaN, which a Bernoulli
 * model's sigmoid does not hide (a lone +-inf logit would give a finite 0 or
 * 1, and fused multiply-adds can turn a finite inf - inf into inf). */
static void test_inference_overflow(void **state)
{
    (void)state;
    for (int lik = 0; lik < 2; lik++) {
        vae_model *m = NULL;
        const size_t hidden[2] = {H, H};
        TU_OK(vae_model_create_mlp(&m, D, hidden, 2, L, VAE_ACT_IDENTITY, lik, 1));
        size_t n = 0;
        float *p = vae_model_params(m, &n);
        const size_t last = n - (D * H + D), dec2 = last - (H * H + H), dec1 = dec2 - (L * H + H);
        for (size_t i = 0; i < n; i++)
            p[i] = 3e38f;
        for (size_t k = 0; k < L * H; k++)
            p[dec1 + k] = 0.0f;
        for (size_t k = 0; k < D * H + D; k++)
            p[last + k] = k >= D * H ? 0.0f : (k % H) % 2 ? -1.0f : 1.0f;
        float x[2 * D], z[2 * L], out[2 * D], mu[2 * L], lv[2 * L];
        for (size_t i = 0; i < 2 * D; i++)
            x[i] = 0.5f;
        for (size_t i = 0; i < 2 * L; i++)
            z[i] = 1.0f;
        vae_rng *rng = NULL;
        TU_OK(vae_rng_create(&rng, 3));
        TU_EXPECT_ERR_MSG(vae_encode(g_ctx, m, x, 2, mu, lv), VAE_ERR_NUMERIC, "vae_encode",
                          "[mu | logvar][0][0] is not finite");
        TU_EXPECT_ERR_MSG(vae_decode(g_ctx, m, z, 2, out), VAE_ERR_NUMERIC, "vae_decode",
                          "out[0][0] is not finite: the model's activations overflow");
        TU_EXPECT_ERR_MSG(vae_sample(g_ctx, m, rng, 2, out), VAE_ERR_NUMERIC, "vae_sample",
                          "overflow");
        TU_EXPECT_ERR_MSG(vae_reconstruct(g_ctx, m, x, 2, out), VAE_ERR_NUMERIC,
                          "vae_reconstruct", "overflow");
        /* Ordinary parameters again: the same calls succeed. */
        for (size_t i = 0; i < n; i++)
            p[i] = 0.01f;
        TU_OK(vae_encode(g_ctx, m, x, 2, mu, lv));
        TU_OK(vae_decode(g_ctx, m, z, 2, out));
        TU_OK(vae_sample(g_ctx, m, rng, 2, out));
        TU_OK(vae_reconstruct(g_ctx, m, x, 2, out));
        vae_rng_free(rng);
        vae_model_free(m);
    }
}

/* A failure inside a convenience call is reported under the name of the
 * function the caller called, as the header promises ("a message specific to
 * the call"), not under an internal helper's name. */
static void test_create_mlp_error_names_create_mlp(void **state)
{
    (void)state;
    vae_model *m = NULL;
    const size_t hidden[1] = {5};
    tu_prime_error("vae_model_create_mlp");
    int rc = vae_model_create_mlp(&m, 6, hidden, 1, 2, 7, VAE_LIKELIHOOD_BERNOULLI, 1);
    assert_int_equal(rc, VAE_ERR_INVALID);
    assert_null(m);
    if (!strstr(vae_last_error(), "vae_model_create_mlp"))
        fail_msg("vae_model_create_mlp with activation 7: message \"%s\" does not name "
                 "vae_model_create_mlp",
                 vae_last_error());
}

static void test_build_error_names_build(void **state)
{
    (void)state;
    vae_model *m = NULL;
    int rc;
    /* A head too large to create: input 1024, latent 2^20, so the head is a
     * 1024 -> 2^21 dense layer, beyond the 2^30-weight limit of a layer. */
    const size_t big = (size_t)1 << 20;
    TU_OK(vae_model_create(&m, 1024, big, VAE_LIKELIHOOD_BERNOULLI));
    add_dec(m, dense(big, 1, VAE_ACT_TANH));
    add_dec(m, dense(1, 1024, VAE_ACT_IDENTITY));
    tu_prime_error("vae_model_build");
    rc = vae_model_build(m, 1);
    assert_true(rc == VAE_ERR_INVALID || rc == VAE_ERR_SHAPE);
    assert_null(vae_model_params(m, NULL));
    assert_int_equal(vae_model_is_built(m), 0);
    const int named = strstr(vae_last_error(), "vae_model_build") != NULL;
    char msg[512];
    snprintf(msg, sizeof msg, "%s", vae_last_error());
    vae_model_free(m);
    if (!named)
        fail_msg("vae_model_build with a too large head: message \"%s\" does not name "
                 "vae_model_build",
                 msg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_shape_errors),
        cmocka_unit_test(test_build_state),
        cmocka_unit_test(test_add_layer_consumes),
        cmocka_unit_test(test_free_owned_layer_ignored),
        cmocka_unit_test(test_create_bad_input),
        cmocka_unit_test(test_getters),
        cmocka_unit_test(test_introspection_mlp),
        cmocka_unit_test(test_introspection_conv),
        cmocka_unit_test(test_tensor_names_and_layout),
        cmocka_unit_test(test_tensor_get_set),
        cmocka_unit_test(test_model_params),
        cmocka_unit_test(test_slab_count),
        cmocka_unit_test(test_slab_order),
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_trainer_grads),
        cmocka_unit_test(test_encode_decode_reference),
        cmocka_unit_test(test_reconstruct_is_decode_of_mu),
        cmocka_unit_test(test_sample),
        cmocka_unit_test(test_large_batches),
        cmocka_unit_test(test_inference_bad_input),
        cmocka_unit_test(test_inference_overflow),
        cmocka_unit_test(test_create_mlp_error_names_create_mlp),
        cmocka_unit_test(test_build_error_names_build),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
