/* Model assembly, shape checks, parameter slab layout and initialization,
 * inference (encode, decode, sample, reconstruct) and bad input. */
#include <float.h>

#include "test_util.h"

enum { D = 6, H = 5, L = 2 };

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
    return l;
}

/* A model from the given encoder and decoder widths; the model owns every
 * layer whether or not a later build succeeds. */
static vae_model *assemble(size_t input, size_t latent, const size_t *enc, size_t n_enc,
                           const size_t *dec, size_t n_dec)
{
    vae_model *m = NULL;
    TU_OK(vae_model_create(&m, input, latent, VAE_LIKELIHOOD_BERNOULLI));
    for (size_t i = 0; i < n_enc; i++)
        TU_OK(vae_model_add_encoder_layer(m, dense(enc[2 * i], enc[2 * i + 1], VAE_ACT_TANH)));
    for (size_t i = 0; i < n_dec; i++)
        TU_OK(vae_model_add_decoder_layer(m, dense(dec[2 * i], dec[2 * i + 1], VAE_ACT_TANH)));
    return m;
}

static void expect_build_shape_error(vae_model *m, const char *layer_words)
{
    TU_EXPECT_ERR(vae_model_build(m, 1), VAE_ERR_SHAPE, "vae_model_build");
    if (!strstr(vae_last_error(), layer_words))
        fail_msg("\"%s\" does not name \"%s\"", vae_last_error(), layer_words);
    /* Still unbuilt: no slab, and inference refuses to run. */
    size_t n = 99;
    assert_null(vae_model_params(m, &n));
    assert_int_equal(n, 0);
    float x[D] = {0}, mu[L], lv[L];
    TU_EXPECT_ERR(vae_model_encode(m, x, 1, mu, lv), VAE_ERR_STATE, "vae_model_encode");
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
        /* No encoder layers is fine: the head reads the input directly. */
        const size_t dec[] = {2, 6};
        vae_model *m = assemble(6, 2, NULL, 0, dec, 1);
        TU_OK(vae_model_build(m, 1));
        size_t n = 0;
        assert_non_null(vae_model_params(m, &n));
        assert_int_equal(n, (6 * 4 + 4) + (2 * 6 + 6));
        vae_model_free(m);
    }
}

static void test_build_state_and_ownership(void **state)
{
    (void)state;
    vae_model *m = NULL;
    TU_OK(vae_model_create(&m, D, L, VAE_LIKELIHOOD_BERNOULLI));
    vae_layer *enc = dense(D, H, VAE_ACT_TANH), *dec = dense(L, D, VAE_ACT_IDENTITY);

    TU_EXPECT_ERR(vae_model_add_encoder_layer(NULL, enc), VAE_ERR_INVALID,
                  "vae_model_add_encoder_layer");
    TU_EXPECT_ERR(vae_model_add_decoder_layer(NULL, dec), VAE_ERR_INVALID,
                  "vae_model_add_decoder_layer");
    TU_EXPECT_ERR(vae_model_add_encoder_layer(m, NULL), VAE_ERR_INVALID,
                  "vae_model_add_encoder_layer");
    TU_EXPECT_ERR(vae_model_add_decoder_layer(m, NULL), VAE_ERR_INVALID,
                  "vae_model_add_decoder_layer");
    TU_OK(vae_model_add_encoder_layer(m, enc));
    /* A layer cannot be in a model twice (it would be freed twice). */
    TU_EXPECT_ERR(vae_model_add_encoder_layer(m, enc), VAE_ERR_INVALID,
                  "vae_model_add_encoder_layer");
    TU_EXPECT_ERR(vae_model_add_decoder_layer(m, enc), VAE_ERR_INVALID,
                  "vae_model_add_decoder_layer");
    TU_OK(vae_model_add_decoder_layer(m, dec));
    TU_EXPECT_ERR(vae_model_build(NULL, 1), VAE_ERR_INVALID, "vae_model_build");
    TU_OK(vae_model_build(m, 1));
    TU_EXPECT_ERR(vae_model_build(m, 1), VAE_ERR_STATE, "vae_model_build");

    /* After build no layer can be added; the caller keeps the layer. */
    vae_layer *late = dense(D, D, VAE_ACT_TANH);
    TU_EXPECT_ERR(vae_model_add_encoder_layer(m, late), VAE_ERR_STATE,
                  "vae_model_add_encoder_layer");
    TU_EXPECT_ERR(vae_model_add_decoder_layer(m, late), VAE_ERR_STATE,
                  "vae_model_add_decoder_layer");
    /* Still a working standalone layer that belongs to the caller. */
    float x[D] = {0.5f}, y[D];
    TU_OK(vae_layer_forward(late, x, 1, y));
    vae_layer_free(late);

    /* A second model cannot take a layer the first one owns. */
    vae_model *m2 = NULL;
    TU_OK(vae_model_create(&m2, D, L, VAE_LIKELIHOOD_BERNOULLI));
    TU_EXPECT_ERR(vae_model_add_encoder_layer(m2, enc), VAE_ERR_INVALID,
                  "vae_model_add_encoder_layer");
    vae_model_free(m2);
    vae_model_free(m);
    vae_model_free(NULL);
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
    TU_EXPECT_ERR(vae_model_create(&m, 4, 2, 2), VAE_ERR_INVALID, "vae_model_create");
    TU_EXPECT_ERR(vae_model_create(&m, 4, 2, -1), VAE_ERR_INVALID, "vae_model_create");
    TU_EXPECT_ERR(vae_model_create(&m, SIZE_MAX, 2, VAE_LIKELIHOOD_BERNOULLI), VAE_ERR_INVALID,
                  "vae_model_create");
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
    vae_model_free(m);
}

static void test_getters(void **state)
{
    (void)state;
    vae_model *m = mlp(VAE_LIKELIHOOD_GAUSSIAN, 1);
    assert_int_equal(vae_model_input_dim(m), D);
    assert_int_equal(vae_model_latent_dim(m), L);
    assert_int_equal(vae_model_likelihood(m), VAE_LIKELIHOOD_GAUSSIAN);
    assert_int_equal(vae_model_input_dim(NULL), 0);
    assert_int_equal(vae_model_latent_dim(NULL), 0);
    assert_int_equal(vae_model_likelihood(NULL), -1);
    size_t n = 99;
    assert_null(vae_model_params(NULL, &n));
    assert_int_equal(n, 0);
    n = 99;
    assert_null(vae_model_grads(NULL, &n));
    assert_int_equal(n, 0);
    vae_model_free(m);
}

static void test_slab_count(void **state)
{
    (void)state;
    vae_model *m = mlp(VAE_LIKELIHOOD_BERNOULLI, 1);
    size_t np = 0, ng = 0;
    float *p = vae_model_params(m, &np), *g = vae_model_grads(m, &ng);
    /* encoder 6->5, head 5->2*2, decoder 2->5, 5->6; each in*out + out. */
    assert_int_equal(np, (6 * 5 + 5) + (5 * 4 + 4) + (2 * 5 + 5) + (5 * 6 + 6));
    assert_int_equal(ng, np);
    assert_non_null(p);
    assert_non_null(g);
    assert_true(p != g);
    assert_non_null(vae_model_params(m, NULL));
    vae_model_free(m);

    const size_t hidden[2] = {5, 3};
    TU_OK(vae_model_create_mlp(&m, 6, hidden, 2, 2, VAE_ACT_RELU, VAE_LIKELIHOOD_GAUSSIAN, 3));
    vae_model_params(m, &np);
    assert_int_equal(np, (6 * 5 + 5) + (5 * 3 + 3) + (3 * 4 + 4) + (2 * 3 + 3) + (3 * 5 + 5) +
                             (5 * 6 + 6));
    vae_model_free(m);
}

static void test_slab_aliasing(void **state)
{
    (void)state;
    vae_model *m = NULL;
    TU_OK(vae_model_create(&m, D, L, VAE_LIKELIHOOD_BERNOULLI));
    vae_layer *e0 = dense(D, H, VAE_ACT_TANH), *e1 = dense(H, 4, VAE_ACT_TANH);
    vae_layer *d0 = dense(L, 3, VAE_ACT_TANH), *d1 = dense(3, D, VAE_ACT_IDENTITY);
    /* Decoder first, then encoder: the slab order is still encoder, head,
     * decoder. */
    TU_OK(vae_model_add_decoder_layer(m, d0));
    TU_OK(vae_model_add_encoder_layer(m, e0));
    TU_OK(vae_model_add_decoder_layer(m, d1));
    TU_OK(vae_model_add_encoder_layer(m, e1));
    size_t n = 99;
    assert_null(vae_model_params(m, &n));
    assert_int_equal(n, 0);
    assert_null(vae_model_grads(m, &n));
    TU_OK(vae_model_build(m, 11));
    size_t np = 0, ng = 0;
    float *p = vae_model_params(m, &np), *g = vae_model_grads(m, &ng);
    const size_t off_e1 = D * H + H, off_head = off_e1 + H * 4 + 4;
    const size_t off_d0 = off_head + 4 * 2 * L + 2 * L, off_d1 = off_d0 + L * 3 + 3;
    assert_int_equal(np, off_d1 + 3 * D + D);
    assert_int_equal(ng, np);
    vae_layer *layers[4] = {e0, e1, d0, d1};
    const size_t offs[4] = {0, off_e1, off_d0, off_d1};
    for (size_t i = 0; i < 4; i++) {
        size_t c = 0, cg = 0;
        float *lp = vae_layer_params(layers[i], &c), *lg = vae_layer_grads(layers[i], &cg);
        assert_ptr_equal(lp, p + offs[i]);
        assert_ptr_equal(lg, g + offs[i]);
        assert_int_equal(c, vae_layer_input_size(layers[i]) * vae_layer_output_size(layers[i]) +
                                vae_layer_output_size(layers[i]));
        assert_int_equal(cg, c);
    }
    /* Through the slab is through the layer: encode sees a bias written
     * into the slab at the head's offset. Zero the head's weights and set
     * its biases; then mu and logvar are those biases for any x. */
    memset(p + off_head, 0, 4 * 2 * L * sizeof(float));
    const float bias[2 * L] = {0.25f, -1.5f, 0.75f, -2.0f};
    memcpy(p + off_head + 4 * 2 * L, bias, sizeof bias);
    float x[D] = {0.1f, 0.9f, 0.3f, 0.4f, 0.5f, 0.0f}, mu[L], lv[L];
    TU_OK(vae_model_encode(m, x, 1, mu, lv));
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
    /* Gradients start at zero. */
    float *g = vae_model_grads(a, NULL);
    for (size_t i = 0; i < n; i++)
        assert_true(g[i] == 0.0f);

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
    TU_OK(vae_model_add_encoder_layer(m, e0));
    TU_OK(vae_model_add_decoder_layer(m, d0));
    TU_OK(vae_model_add_decoder_layer(m, d1));
    TU_OK(vae_model_build(m, 123));
    size_t nm = 0;
    float *pm = vae_model_params(m, &nm);
    assert_int_equal(nm, n);
    assert_memory_equal(pm, pa, n * sizeof(float));
    vae_model_free(m);
    vae_rng_free(rng);
    vae_model_free(a);
    vae_model_free(b);
    vae_model_free(c);
}

static void test_zero_grads(void **state)
{
    (void)state;
    vae_model *m = mlp(VAE_LIKELIHOOD_BERNOULLI, 1);
    size_t n = 0;
    float *g = vae_model_grads(m, &n);
    for (size_t i = 0; i < n; i++)
        g[i] = (float)i + 1.0f;
    TU_OK(vae_model_zero_grads(m));
    for (size_t i = 0; i < n; i++)
        assert_true(g[i] == 0.0f);
    TU_EXPECT_ERR(vae_model_zero_grads(NULL), VAE_ERR_INVALID, "vae_model_zero_grads");
    vae_model *u = NULL;
    TU_OK(vae_model_create(&u, D, L, VAE_LIKELIHOOD_BERNOULLI));
    TU_EXPECT_ERR(vae_model_zero_grads(u), VAE_ERR_STATE, "vae_model_zero_grads");
    vae_model_free(u);
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
        TU_OK(vae_model_encode(m, x, N, mu, lv));
        TU_OK(vae_model_decode(m, z, N, out));
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
        TU_OK(vae_model_encode(m, x, N, mu, lv));
        TU_OK(vae_model_decode(m, mu, N, dec));
        TU_OK(vae_model_reconstruct(m, x, N, rec));
        /* The same float operations on the same batch: equal up to the BLAS
         * kernel choice, so 1e-6 (a few ulps of O(1) values). */
        for (size_t k = 0; k < N * D; k++)
            TU_CLOSE(rec[k], dec[k], 0.0, 1e-6);
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
    TU_OK(vae_model_sample(m, r1, N, s));
    /* Sampling decodes z ~ N(0, I) drawn from the generator in order. */
    TU_OK(vae_rng_normal(r2, z, N * L));
    TU_OK(vae_model_decode(m, z, N, d));
    for (size_t k = 0; k < N * D; k++) {
        assert_true(s[k] > 0.0f && s[k] < 1.0f);
        TU_CLOSE(s[k], d[k], 0.0, 1e-6);
    }
    /* The generator advanced: the next samples differ. */
    float s2[N * D];
    TU_OK(vae_model_sample(m, r1, N, s2));
    assert_true(memcmp(s, s2, sizeof s) != 0);
    vae_rng_free(r1);
    vae_rng_free(r2);
    vae_model_free(m);
}

static void test_large_batches_in_chunks(void **state)
{
    (void)state;
    enum { N = 1000, C = 16 };
    vae_model *m = mlp(VAE_LIKELIHOOD_BERNOULLI, 4);
    TU_OK(vae_model_reserve(m, C));
    tu_rng r = {9};
    float *x = tu_alloc(N * D, sizeof *x), *z = tu_alloc(N * L, sizeof *z);
    float *out = tu_alloc(N * D, sizeof *out), *ref = tu_alloc(N * D, sizeof *ref);
    float *mu = tu_alloc(N * L, sizeof *mu), *lv = tu_alloc(N * L, sizeof *lv);
    float *rmu = tu_alloc(N * L, sizeof *rmu), *rlv = tu_alloc(N * L, sizeof *rlv);
    tu_fill_range(&r, x, N * D, 0.0, 1.0);
    tu_fill_range(&r, z, N * L, -2.0, 2.0);

    /* n = 1000 after reserve(16) runs in chunks of the workspace; the result
     * is what 16-row calls give, row for row (same batch sizes, so the same
     * float operations: compared exactly). */
    TU_OK(vae_model_decode(m, z, N, out));
    for (size_t s = 0; s < N; s += C) {
        size_t b = N - s < C ? N - s : C;
        TU_OK(vae_model_decode(m, z + s * L, b, ref + s * D));
    }
    assert_memory_equal(out, ref, N * D * sizeof(float));

    TU_OK(vae_model_encode(m, x, N, mu, lv));
    for (size_t s = 0; s < N; s += C) {
        size_t b = N - s < C ? N - s : C;
        TU_OK(vae_model_encode(m, x + s * D, b, rmu + s * L, rlv + s * L));
    }
    assert_memory_equal(mu, rmu, N * L * sizeof(float));
    assert_memory_equal(lv, rlv, N * L * sizeof(float));

    TU_OK(vae_model_reconstruct(m, x, N, out));
    for (size_t s = 0; s < N; s += C) {
        size_t b = N - s < C ? N - s : C;
        TU_OK(vae_model_reconstruct(m, x + s * D, b, ref + s * D));
    }
    assert_memory_equal(out, ref, N * D * sizeof(float));

    /* Without a reservation, a large batch agrees with the double reference. */
    vae_model *m2 = mlp(VAE_LIKELIHOOD_GAUSSIAN, 4);
    const float *slab = vae_model_params(m2, NULL);
    TU_OK(vae_model_decode(m2, z, N, out));
    for (size_t i = 0; i < N; i++) {
        double zd[L] = {z[i * L], z[i * L + 1]}, ro[D];
        ref_decode(slab, zd, ro);
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
    vae_model_free(m);
}

static void test_inference_bad_input(void **state)
{
    (void)state;
    vae_model *m = mlp(VAE_LIKELIHOOD_BERNOULLI, 1), *g = mlp(VAE_LIKELIHOOD_GAUSSIAN, 1);
    vae_model *u = NULL;
    TU_OK(vae_model_create(&u, D, L, VAE_LIKELIHOOD_BERNOULLI));
    vae_rng *rng = NULL;
    TU_OK(vae_rng_create(&rng, 1));
    float x[2 * D] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f};
    float z[2 * L] = {0.1f, -0.2f, 0.3f, 0.4f}, mu[2 * L], lv[2 * L], out[2 * D];

    /* reserve */
    TU_EXPECT_ERR(vae_model_reserve(NULL, 4), VAE_ERR_INVALID, "vae_model_reserve");
    TU_EXPECT_ERR(vae_model_reserve(u, 4), VAE_ERR_STATE, "vae_model_reserve");
    TU_EXPECT_ERR(vae_model_reserve(m, 0), VAE_ERR_INVALID, "vae_model_reserve");
    TU_EXPECT_ERR(vae_model_reserve(m, SIZE_MAX), VAE_ERR_INVALID, "vae_model_reserve");
    TU_OK(vae_model_reserve(m, 4));

    /* sigma */
    TU_EXPECT_ERR(vae_model_set_gaussian_sigma(NULL, 1.0f), VAE_ERR_INVALID,
                  "vae_model_set_gaussian_sigma");
    const float bad_sigma[] = {0.0f, -0.0f, -1.0f, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof bad_sigma / sizeof bad_sigma[0]; i++)
        TU_EXPECT_ERR(vae_model_set_gaussian_sigma(g, bad_sigma[i]), VAE_ERR_INVALID,
                      "vae_model_set_gaussian_sigma");
    TU_OK(vae_model_set_gaussian_sigma(g, 0.5f));
    TU_OK(vae_model_set_gaussian_sigma(g, 1e-3f));

    /* encode */
    TU_EXPECT_ERR(vae_model_encode(NULL, x, 2, mu, lv), VAE_ERR_INVALID, "vae_model_encode");
    TU_EXPECT_ERR(vae_model_encode(u, x, 2, mu, lv), VAE_ERR_STATE, "vae_model_encode");
    TU_EXPECT_ERR(vae_model_encode(m, NULL, 2, mu, lv), VAE_ERR_INVALID, "vae_model_encode");
    TU_EXPECT_ERR(vae_model_encode(m, x, 2, NULL, lv), VAE_ERR_INVALID, "vae_model_encode");
    TU_EXPECT_ERR(vae_model_encode(m, x, 2, mu, NULL), VAE_ERR_INVALID, "vae_model_encode");
    TU_EXPECT_ERR(vae_model_encode(m, x, 0, mu, lv), VAE_ERR_INVALID, "vae_model_encode");

    /* decode */
    TU_EXPECT_ERR(vae_model_decode(NULL, z, 2, out), VAE_ERR_INVALID, "vae_model_decode");
    TU_EXPECT_ERR(vae_model_decode(u, z, 2, out), VAE_ERR_STATE, "vae_model_decode");
    TU_EXPECT_ERR(vae_model_decode(m, NULL, 2, out), VAE_ERR_INVALID, "vae_model_decode");
    TU_EXPECT_ERR(vae_model_decode(m, z, 2, NULL), VAE_ERR_INVALID, "vae_model_decode");
    TU_EXPECT_ERR(vae_model_decode(m, z, 0, out), VAE_ERR_INVALID, "vae_model_decode");
    z[3] = NAN;
    TU_EXPECT_ERR(vae_model_decode(m, z, 2, out), VAE_ERR_NUMERIC, "vae_model_decode");
    z[3] = -INFINITY;
    TU_EXPECT_ERR(vae_model_decode(g, z, 2, out), VAE_ERR_NUMERIC, "vae_model_decode");
    z[3] = 0.4f;

    /* sample */
    TU_EXPECT_ERR(vae_model_sample(NULL, rng, 2, out), VAE_ERR_INVALID, "vae_model_sample");
    TU_EXPECT_ERR(vae_model_sample(u, rng, 2, out), VAE_ERR_STATE, "vae_model_sample");
    TU_EXPECT_ERR(vae_model_sample(m, NULL, 2, out), VAE_ERR_INVALID, "vae_model_sample");
    TU_EXPECT_ERR(vae_model_sample(m, rng, 2, NULL), VAE_ERR_INVALID, "vae_model_sample");
    TU_EXPECT_ERR(vae_model_sample(m, rng, 0, out), VAE_ERR_INVALID, "vae_model_sample");

    /* reconstruct */
    TU_EXPECT_ERR(vae_model_reconstruct(NULL, x, 2, out), VAE_ERR_INVALID,
                  "vae_model_reconstruct");
    TU_EXPECT_ERR(vae_model_reconstruct(u, x, 2, out), VAE_ERR_STATE, "vae_model_reconstruct");
    TU_EXPECT_ERR(vae_model_reconstruct(m, NULL, 2, out), VAE_ERR_INVALID,
                  "vae_model_reconstruct");
    TU_EXPECT_ERR(vae_model_reconstruct(m, x, 2, NULL), VAE_ERR_INVALID,
                  "vae_model_reconstruct");
    TU_EXPECT_ERR(vae_model_reconstruct(m, x, 0, out), VAE_ERR_INVALID,
                  "vae_model_reconstruct");

    /* Non-finite inputs (in the second sample, so the whole batch is checked)
     * and, for Bernoulli models, inputs outside [0, 1]. */
    const float bad_finite[] = {NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < 3; i++) {
        x[D + 4] = bad_finite[i];
        TU_EXPECT_ERR(vae_model_encode(m, x, 2, mu, lv), VAE_ERR_NUMERIC, "vae_model_encode");
        TU_EXPECT_ERR(vae_model_encode(g, x, 2, mu, lv), VAE_ERR_NUMERIC, "vae_model_encode");
        TU_EXPECT_ERR(vae_model_reconstruct(m, x, 2, out), VAE_ERR_NUMERIC,
                      "vae_model_reconstruct");
        TU_EXPECT_ERR(vae_model_reconstruct(g, x, 2, out), VAE_ERR_NUMERIC,
                      "vae_model_reconstruct");
    }
    const float outside[] = {-0.01f, 1.01f, 2.0f};
    for (size_t i = 0; i < 3; i++) {
        x[D + 4] = outside[i];
        TU_EXPECT_ERR(vae_model_encode(m, x, 2, mu, lv), VAE_ERR_INVALID, "vae_model_encode");
        TU_EXPECT_ERR(vae_model_reconstruct(m, x, 2, out), VAE_ERR_INVALID,
                      "vae_model_reconstruct");
        /* A Gaussian model takes any finite value. */
        TU_OK(vae_model_encode(g, x, 2, mu, lv));
        TU_OK(vae_model_reconstruct(g, x, 2, out));
    }
    /* The bounds themselves are valid Bernoulli inputs. */
    x[D + 4] = 0.0f;
    x[D + 5] = 1.0f;
    TU_OK(vae_model_encode(m, x, 2, mu, lv));

    vae_rng_free(rng);
    vae_model_free(u);
    vae_model_free(g);
    vae_model_free(m);
}

/* A failure inside a convenience call is reported under the name of the
 * function the caller called, as the header promises ("a message specific to
 * the call"), not under an internal helper's name. */
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
        TU_EXPECT_ERR_MSG(vae_model_encode(m, x, 2, mu, lv), VAE_ERR_NUMERIC, "vae_model_encode",
                          "[mu | logvar][0][0] is not finite");
        TU_EXPECT_ERR_MSG(vae_model_decode(m, z, 2, out), VAE_ERR_NUMERIC, "vae_model_decode",
                          "out[0][0] is not finite: the model's activations overflow");
        TU_EXPECT_ERR_MSG(vae_model_sample(m, rng, 2, out), VAE_ERR_NUMERIC, "vae_model_sample",
                          "overflow");
        TU_EXPECT_ERR_MSG(vae_model_reconstruct(m, x, 2, out), VAE_ERR_NUMERIC,
                          "vae_model_reconstruct", "overflow");
        /* Ordinary parameters again: the same calls succeed. */
        for (size_t i = 0; i < n; i++)
            p[i] = 0.01f;
        TU_OK(vae_model_encode(m, x, 2, mu, lv));
        TU_OK(vae_model_decode(m, z, 2, out));
        TU_OK(vae_model_sample(m, rng, 2, out));
        TU_OK(vae_model_reconstruct(m, x, 2, out));
        vae_rng_free(rng);
        vae_model_free(m);
    }
}

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
    vae_layer *d0 = dense(big, 1, VAE_ACT_TANH), *d1 = dense(1, 1024, VAE_ACT_IDENTITY);
    TU_OK(vae_model_create(&m, 1024, big, VAE_LIKELIHOOD_BERNOULLI));
    TU_OK(vae_model_add_decoder_layer(m, d0));
    TU_OK(vae_model_add_decoder_layer(m, d1));
    tu_prime_error("vae_model_build");
    rc = vae_model_build(m, 1);
    assert_true(rc == VAE_ERR_INVALID || rc == VAE_ERR_SHAPE);
    assert_null(vae_model_params(m, NULL));
    const int named = strstr(vae_last_error(), "vae_model_build") != NULL;
    char msg[512];
    snprintf(msg, sizeof msg, "%s", vae_last_error());
    vae_model_free(m);
    if (!named)
        fail_msg("vae_model_build with a too large head: message \"%s\" does not name "
                 "vae_model_build",
                 msg);
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
    TU_OK(vae_model_add_encoder_layer(m, enc));
    TU_OK(vae_model_add_decoder_layer(m, dec));
    vae_layer_free(enc);
    TU_OK(vae_model_build(m, 1));
    vae_layer_free(dec);
    float z[2] = {0.5f, -1.0f}, out[8];
    TU_OK(vae_model_decode(m, z, 2, out));
    assert_int_equal(vae_layer_output_size(dec), 4);
    vae_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_shape_errors),
        cmocka_unit_test(test_build_state_and_ownership),
        cmocka_unit_test(test_free_owned_layer_ignored),
        cmocka_unit_test(test_create_bad_input),
        cmocka_unit_test(test_getters),
        cmocka_unit_test(test_slab_count),
        cmocka_unit_test(test_slab_aliasing),
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_zero_grads),
        cmocka_unit_test(test_encode_decode_reference),
        cmocka_unit_test(test_reconstruct_is_decode_of_mu),
        cmocka_unit_test(test_sample),
        cmocka_unit_test(test_large_batches_in_chunks),
        cmocka_unit_test(test_inference_bad_input),
        cmocka_unit_test(test_inference_overflow),
        cmocka_unit_test(test_create_mlp_error_names_create_mlp),
        cmocka_unit_test(test_build_error_names_build),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
