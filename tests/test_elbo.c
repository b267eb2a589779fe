/* The objective: KL and both likelihoods against closed forms, the whole
 * gradient (from a trainer) against central finite differences, settings,
 * reductions over samples and blocks, accumulation, reproducibility and bad
 * input. */
#include <float.h>
#include <stddef.h>

#include "test_util.h"

/* White box, for one test: struct vae_model, to give a model a sigma that
 * vae_model_set_param() refuses. */
#include "../lib/model/model.h"

#define LOG_2PI 1.8378770664093454836

/* One context and one optimizer for the whole group; each test makes its
 * own trainers. */
static vae_context *g_ctx;
static vae_optimizer *g_opt;

static int group_setup(void **state)
{
    (void)state;
    if (vae_context_create(&g_ctx) || vae_optimizer_create(&g_opt, VAE_OPTIMIZER_SGD))
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    vae_optimizer_free(g_opt);
    vae_context_free(g_ctx);
    return 0;
}

/* Layout of create_mlp(D, {H}, 1, L): encoder D->H, head H->2L, decoder
 * L->H, H->D; each W[out][in] then b[out]. */
typedef struct layout {
    size_t d, h, l;
    size_t head_w, head_b;   /* offsets of the head's weights and biases */
    size_t out_w, out_b;     /* offsets of the last decoder layer's */
    size_t n;
} layout;

static layout layout_of(size_t d, size_t h, size_t l)
{
    layout o = {d, h, l, 0, 0, 0, 0, 0};
    o.head_w = d * h + h;
    o.head_b = o.head_w + 2 * l * h;
    o.out_w = o.head_b + 2 * l + (l * h + h);
    o.out_b = o.out_w + d * h;
    o.n = o.out_b + d;
    return o;
}

static vae_model *mlp1(size_t d, size_t h, size_t l, int act, int lik, uint64_t seed)
{
    vae_model *m = NULL;
    TU_OK(vae_model_create_mlp(&m, d, &h, 1, l, act, lik, seed));
    assert_int_equal(vae_model_param_count(m), layout_of(d, h, l).n);
    /* The layout above is that of the named tensors. */
    size_t off = 0, idx = 0;
    TU_OK(vae_model_tensor_find(m, "head.bias", &idx));
    TU_OK(vae_model_tensor_info(m, idx, NULL, NULL, &off, NULL));
    assert_int_equal(off, layout_of(d, h, l).head_b);
    TU_OK(vae_model_tensor_find(m, "decoder.1.weight", &idx));
    TU_OK(vae_model_tensor_info(m, idx, NULL, NULL, &off, NULL));
    assert_int_equal(off, layout_of(d, h, l).out_w);
    return m;
}

/* Conv VAE on 1x5x4 images, latent 2: Conv2D 1->2 channels, kernel 3x2,
 * stride 1, padding 1 (2x5x5) -> dense 50->6 -> head; decoder dense 2->12
 * (2x3x2) -> ConvTranspose2D 2->1, kernel 2x3, stride 2, padding 1, output
 * padding 1 (1x5x4). */
static vae_model *conv_vae(int lik, int act, uint64_t seed)
{
    vae_model *m = NULL;
    vae_layer *l = NULL;
    TU_OK(vae_model_create(&m, 20, 2, lik));
    TU_OK(vae_layer_conv2d_create(&l, 1, 5, 4, 2, 3, 2, 1, 1, act));
    TU_OK(vae_model_add_encoder_layer(m, &l));
    TU_OK(vae_layer_dense_create(&l, 50, 6, act));
    TU_OK(vae_model_add_encoder_layer(m, &l));
    TU_OK(vae_layer_dense_create(&l, 2, 12, act));
    TU_OK(vae_model_add_decoder_layer(m, &l));
    TU_OK(vae_layer_conv2d_transpose_create(&l, 2, 3, 2, 1, 2, 3, 2, 1, 1, VAE_ACT_IDENTITY));
    TU_OK(vae_model_add_decoder_layer(m, &l));
    TU_OK(vae_model_build(m, seed));
    return m;
}

static vae_elbo *objective(double beta, int obj)
{
    vae_elbo *e = NULL;
    TU_OK(vae_elbo_create(&e));
    TU_OK(vae_elbo_set_param(e, VAE_ELBO_BETA, beta));
    TU_OK(vae_elbo_set_param(e, VAE_ELBO_OBJECTIVE, obj));
    return e;
}

static double beta_of(const vae_elbo *e)
{
    double b = -1.0;
    TU_OK(vae_elbo_get_param(e, VAE_ELBO_BETA, &b));
    return b;
}

static vae_trainer *trainer(vae_model *m, vae_elbo *e, uint64_t seed)
{
    vae_trainer *t = NULL;
    TU_OK(vae_trainer_create(&t, m, e, g_opt, g_ctx, seed));
    assert_non_null(t);
    return t;
}

/* vae_elbo_evaluate on the group's context; returns the stats. */
static vae_epoch_stats evaluate(const vae_model *m, const vae_elbo *e, const float *x,
                                size_t n, const float *eps, vae_rng *rng, double *per)
{
    vae_epoch_stats st = {sizeof st};
    TU_OK(vae_elbo_evaluate(g_ctx, m, e, x, n, eps, rng, per, &st));
    assert_int_equal(st.samples, n);
    return st;
}

static vae_epoch_stats forward_backward(vae_trainer *t, const float *x, size_t n,
                                        const float *eps)
{
    vae_epoch_stats st = {sizeof st};
    TU_OK(vae_trainer_forward_backward(t, x, n, eps, &st));
    assert_int_equal(st.samples, n);
    return st;
}

/* Every field the calls promise is written (the struct starts as 0xab
 * garbage): loss, recon, kl, samples and seconds. */
static void check_stats(const vae_epoch_stats *st, size_t n, const char *what)
{
    if (!(isfinite(st->loss) && isfinite(st->recon) && isfinite(st->kl)) ||
        st->samples != n || !(st->seconds >= 0.0 && st->seconds < 3600.0))
        fail_msg("%s: stats loss %g recon %g kl %g samples %zu seconds %g", what, st->loss,
                 st->recon, st->kl, st->samples, st->seconds);
    assert_int_equal(st->size, sizeof *st);
}

static void test_stats_filled(void **state)
{
    (void)state;
    enum { D = 6, H = 5, L = 2, B = 70 };
    vae_model *m = mlp1(D, H, L, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI, 3);
    vae_elbo *e = objective(0.5, VAE_OBJECTIVE_ELBO);
    vae_trainer *t = trainer(m, e, 3);
    vae_rng *rng = NULL;
    TU_OK(vae_rng_create(&rng, 3));
    float x[B * D];
    tu_rng r = {1};
    tu_fill_range(&r, x, B * D, 0.0, 1.0);
    vae_epoch_stats st = tu_stats();
    TU_OK(vae_elbo_evaluate(g_ctx, m, e, x, B, NULL, rng, NULL, &st));
    check_stats(&st, B, "vae_elbo_evaluate");
    TU_CLOSE(st.loss, st.recon + 0.5 * st.kl, 1e-12, 0.0);
    st = tu_stats();
    TU_OK(vae_trainer_forward_backward(t, x, B, NULL, &st));
    check_stats(&st, B, "vae_trainer_forward_backward");
    TU_CLOSE(st.loss, st.recon + 0.5 * st.kl, 1e-12, 0.0);
    vae_rng_free(rng);
    vae_trainer_free(t);
    vae_elbo_free(e);
    vae_model_free(m);
}

/* (a) KL against its closed form: with the head's weights zero, mu and
 * logvar are the head's biases for every input. */
static void test_kl_closed_form(void **state)
{
    (void)state;
    enum { D = 6, H = 5, L = 3, B = 4 };
    const layout o = layout_of(D, H, L);
    vae_model *m = mlp1(D, H, L, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI, 1);
    float *p = vae_model_params(m, NULL);
    const float mu[L] = {0.5f, -1.25f, 2.0f}, lv[L] = {0.3f, -0.7f, 1.5f};
    memset(p + o.head_w, 0, 2 * L * H * sizeof(float));
    memcpy(p + o.head_b, mu, sizeof mu);
    memcpy(p + o.head_b + L, lv, sizeof lv);
    double kl_ref = 0.0;
    for (size_t j = 0; j < L; j++)
        kl_ref += 0.5 * ((double)mu[j] * mu[j] + exp((double)lv[j]) - 1.0 - (double)lv[j]);

    tu_rng r = {3};
    float x[B * D], eps[B * L];
    tu_fill_range(&r, x, B * D, 0.0, 1.0);
    tu_fill_range(&r, eps, B * L, -2.0, 2.0);
    double per[B];
    const double betas[] = {1.0, 0.3, 0.0};
    for (size_t bi = 0; bi < 3; bi++) {
        vae_elbo *e = objective(betas[bi], VAE_OBJECTIVE_ELBO);
        vae_epoch_stats st = evaluate(m, e, x, B, eps, NULL, per);
        /* kl is a double sum of values computed in double from float
         * parameters: only summation rounding remains. */
        TU_CLOSE(st.kl, kl_ref, 1e-12, 0.0);
        TU_CLOSE(st.loss, st.recon + beta_of(e) * kl_ref, 1e-12, 1e-12);
        /* The same numbers come out of a trainer's forward pass. */
        vae_trainer *t = trainer(m, e, 1);
        vae_epoch_stats ft = forward_backward(t, x, B, eps);
        assert_true(ft.loss == st.loss && ft.recon == st.recon && ft.kl == st.kl);
        vae_trainer_free(t);
        vae_elbo_free(e);
    }
    /* The autoencoder objective has no KL term at all. */
    vae_elbo *ae = objective(1.0, VAE_OBJECTIVE_AUTOENCODER);
    vae_epoch_stats st = evaluate(m, ae, x, B, eps, NULL, NULL);
    assert_true(st.kl == 0.0);
    assert_true(st.loss == st.recon);
    vae_elbo_free(ae);
    vae_model_free(m);
}

/* -log Bernoulli(x; sigmoid(l)) written directly, with log sigmoid(t) =
 * -log(1 + e^-t) evaluated in double: fine at |t| = 50. */
static double bce_direct(double l, double x)
{
    double log_p = -log1p(exp(-l)), log_1mp = -log1p(exp(l));
    return -(x * log_p + (1.0 - x) * log_1mp);
}

/* (b) Bernoulli term at logits +-50, where a naive log(sigmoid) gives
 * log(0) = -inf in float. */
static void test_bernoulli_extreme_logits(void **state)
{
    (void)state;
    enum { D = 4, H = 3, L = 2, B = 3 };
    const layout o = layout_of(D, H, L);
    vae_model *m = mlp1(D, H, L, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI, 2);
    float *p = vae_model_params(m, NULL);
    const float logit[D] = {50.0f, -50.0f, 50.0f, -50.0f};
    memset(p + o.out_w, 0, D * H * sizeof(float));
    memcpy(p + o.out_b, logit, sizeof logit);
    /* Sample 0 agrees with every logit (loss ~ 4 e^-50), sample 1 disagrees
     * with every one (loss ~ 200), sample 2 has soft targets. 0.25 and 0.5
     * make l*x exact in float. */
    const float x[B * D] = {1, 0, 1, 0, 0, 1, 0, 1, 0.5f, 0.25f, 0.25f, 0.5f};
    double ref[B];
    for (size_t i = 0; i < B; i++) {
        ref[i] = 0.0;
        for (size_t j = 0; j < D; j++)
            ref[i] += bce_direct(logit[j], x[i * D + j]);
    }
    /* The agreeing sample still has its tiny positive loss, 4 log1p(e^-50). */
    TU_CLOSE(ref[0], 4.0 * log1p(exp(-50.0)), 1e-15, 0.0);
    TU_CLOSE(ref[1], 200.0, 1e-15, 0.0);

    vae_elbo *ae = objective(1.0, VAE_OBJECTIVE_AUTOENCODER);
    double per[B];
    vae_epoch_stats st = evaluate(m, ae, x, B, NULL, NULL, per);
    /* Each term is a few float operations on exact values: relative 1e-6
     * (a few float ulps) even for the 7.7e-22 of sample 0, which a version
     * that dropped the log1p(e^-|l|) term would get as 0. */
    for (size_t i = 0; i < B; i++) {
        assert_true(isfinite(per[i]));
        TU_CLOSE(per[i], ref[i], 1e-6, 0.0);
    }
    TU_CLOSE(st.recon, (ref[0] + ref[1] + ref[2]) / B, 1e-6, 0.0);
    assert_true(st.loss == st.recon);
    /* The gradient at these logits is finite too (sigmoid(+-50) - x). */
    vae_trainer *t = trainer(m, ae, 1);
    forward_backward(t, x, B, NULL);
    size_t n = 0;
    float *g = vae_trainer_grads(t, &n);
    assert_int_equal(n, o.n);
    assert_true(tu_all_finite(g, n));
    /* d recon / d b_out[j] = mean_i (sigmoid(l_j) - x_ij). */
    for (size_t j = 0; j < D; j++) {
        double s = 1.0 / (1.0 + exp(-(double)logit[j])), gref = 0.0;
        for (size_t i = 0; i < B; i++)
            gref += (s - x[i * D + j]) / B;
        TU_CLOSE(g[o.out_b + j], gref, 1e-6, 1e-7);
    }
    vae_trainer_free(t);
    vae_elbo_free(ae);
    vae_model_free(m);
}

/* (c) Gaussian term with its constants: -log N(x; m, s^2) =
 * (x - m)^2 / (2 s^2) + log(2 pi s^2) / 2 per dimension. */
static void test_gaussian_constants(void **state)
{
    (void)state;
    enum { D = 5, H = 4, L = 2, B = 3 };
    const layout o = layout_of(D, H, L);
    vae_model *m = mlp1(D, H, L, VAE_ACT_TANH, VAE_LIKELIHOOD_GAUSSIAN, 4);
    float *p = vae_model_params(m, NULL);
    const float mean[D] = {0.5f, -1.0f, 2.0f, 0.0f, -0.25f};
    memset(p + o.out_w, 0, D * H * sizeof(float));
    memcpy(p + o.out_b, mean, sizeof mean);
    float x[B * D];
    tu_rng r = {8};
    tu_fill_range(&r, x, B * D, -3.0, 3.0);
    memcpy(x, mean, sizeof mean); /* sample 0: zero residual, constants only */

    vae_elbo *ae = objective(1.0, VAE_OBJECTIVE_AUTOENCODER);
    const double sigmas[] = {1.0, 0.5};
    for (size_t si = 0; si < 2; si++) {
        const double s = sigmas[si];
        if (si > 0)
            TU_OK(vae_model_set_param(m, VAE_MODEL_GAUSSIAN_SIGMA, sigmas[si]));
        double per[B];
        vae_epoch_stats st = evaluate(m, ae, x, B, NULL, NULL, per);
        const double konst = 0.5 * (LOG_2PI + log(s * s));
        /* sigma 1: 0.9189385 per dimension; sigma 0.5: 0.2257913. */
        TU_CLOSE(per[0], D * konst, 1e-6, 0.0);
        double sum = 0.0;
        for (size_t i = 0; i < B; i++) {
            double ref = 0.0;
            for (size_t j = 0; j < D; j++) {
                double d = (double)x[i * D + j] - mean[j];
                ref += d * d / (2.0 * s * s) + konst;
            }
            /* float residuals and squares: relative 1e-6. */
            TU_CLOSE(per[i], ref, 1e-6, 0.0);
            sum += ref;
        }
        TU_CLOSE(st.recon, sum / B, 1e-6, 0.0);
    }
    vae_elbo_free(ae);
    vae_model_free(m);
}

typedef struct grad_case {
    const char *name;
    int lik;
    double sigma;
    double beta;
    int act;
    int objective;
    size_t n_hidden; /* SIZE_MAX: the conv VAE */
    size_t batch;
} grad_case;

/* (d) The gradient of vae_trainer_forward_backward against central
 * differences of vae_elbo_evaluate along random unit directions over the
 * whole parameter slab, with the same injected eps at every point. */
static void check_elbo_gradient(const grad_case *c, uint64_t seed)
{
    const size_t hidden[2] = {5, 4};
    vae_model *m = NULL;
    if (c->n_hidden == SIZE_MAX)
        m = conv_vae(c->lik, c->act, seed);
    else
        TU_OK(vae_model_create_mlp(&m, 6, hidden, c->n_hidden, 2, c->act, c->lik, seed));
    const size_t D = vae_model_input_dim(m), L = vae_model_latent_dim(m), B = c->batch;
    if (c->lik == VAE_LIKELIHOOD_GAUSSIAN)
        TU_OK(vae_model_set_param(m, VAE_MODEL_GAUSSIAN_SIGMA, c->sigma));
    vae_elbo *e = objective(c->beta, c->objective);
    vae_trainer *t = trainer(m, e, seed);
    size_t n = 0, ng = 0;
    float *p = vae_model_params(m, &n), *g = vae_trainer_grads(t, &ng);
    assert_int_equal(ng, n);
    tu_rng r = {seed * 7919};
    /* Larger parameters than the default init, so that logvar and the
     * decoder output move well away from 0 and every term matters. */
    for (size_t i = 0; i < n; i++)
        p[i] *= 2.0f;
    float *x = tu_alloc(B * D, sizeof *x), *eps = tu_alloc(B * L, sizeof *eps);
    if (c->lik == VAE_LIKELIHOOD_BERNOULLI)
        tu_fill_range(&r, x, B * D, 0.0, 1.0);
    else
        for (size_t i = 0; i < B * D; i++)
            x[i] = (float)tu_gauss(&r);
    for (size_t i = 0; i < B * L; i++)
        eps[i] = (float)tu_gauss(&r);

    TU_OK(vae_trainer_zero_grads(t));
    const double loss0 = forward_backward(t, x, B, eps).loss;
    float *grad = tu_alloc(n, sizeof *grad), *p0 = tu_alloc(n, sizeof *p0);
    double *v = tu_alloc(n, sizeof *v);
    memcpy(grad, g, n * sizeof *g);
    memcpy(p0, p, n * sizeof *p);
    double gnorm = 0.0;
    for (size_t i = 0; i < n; i++)
        gnorm += (double)grad[i] * grad[i];
    gnorm = sqrt(gnorm);
    assert_true(gnorm > 0.0);

    const double h = 1e-2;
    for (int trial = 0; trial < 6; trial++) {
        tu_unit_direction(&r, v, n);
        double lp[2];
        for (int side = 0; side < 2; side++) {
            double s = side ? -h : h;
            for (size_t i = 0; i < n; i++)
                p[i] = (float)(p0[i] + s * v[i]);
            lp[side] = evaluate(m, e, x, B, eps, NULL, NULL).loss;
        }
        memcpy(p, p0, n * sizeof *p);
        double fd = (lp[0] - lp[1]) / (2.0 * h);
        double an = tu_dot_fd(grad, v, n);
        /* h = 1e-2 balances the O(h^2) truncation of the central
         * difference (the loss has exp(logvar) and decoder curvature of
         * order 1-10) against the float forward's rounding of a loss of
         * order 10 (~1e-6) divided by 2h; h = 1e-3 measured 8x worse.
         * Measured over the MLP cases in 0.1: |fd - an| <= 9e-6 |g|.
         * The bound, 2e-3 relative plus 1e-4 of the gradient norm |g| (a
         * random direction can make <g, v> nearly cancel), is 10x or more
         * the worst measured error; a wrong factor (1/2, beta, 1/sigma^2,
         * 1/B, a block's 1/b instead of the batch's 1/B), a missing term, a
         * block left out or a wrong transpose moves <g, v> by a sizeable
         * fraction of |g|. */
        double tol = 2e-3 * fabs(an) + 1e-4 * gnorm;
        if (!(fabs(fd - an) <= tol))
            fail_msg("%s trial %d: finite difference %.9g, gradient %.9g (|g| %.3g, tol %.3g)",
                     c->name, trial, fd, an, gnorm, tol);
    }
    /* Neither the gradient nor the loss depend on the evaluations in between,
     * and the slab still holds the one forward_backward's gradient. */
    assert_true(evaluate(m, e, x, B, eps, NULL, NULL).loss == loss0);
    assert_memory_equal(g, grad, n * sizeof *g);
    free(grad);
    free(p0);
    free(v);
    free(x);
    free(eps);
    vae_trainer_free(t);
    vae_elbo_free(e);
    vae_model_free(m);
}

static void test_gradient_finite_differences(void **state)
{
    (void)state;
    const size_t CONV = SIZE_MAX;
    const grad_case cases[] = {
        {"bernoulli tanh beta 1", VAE_LIKELIHOOD_BERNOULLI, 1.0, 1.0, VAE_ACT_TANH,
         VAE_OBJECTIVE_ELBO, 1, 3},
        {"bernoulli softplus beta 0.3", VAE_LIKELIHOOD_BERNOULLI, 1.0, 0.3, VAE_ACT_SOFTPLUS,
         VAE_OBJECTIVE_ELBO, 1, 3},
        {"bernoulli sigmoid beta 1, two hidden", VAE_LIKELIHOOD_BERNOULLI, 1.0, 1.0,
         VAE_ACT_SIGMOID, VAE_OBJECTIVE_ELBO, 2, 3},
        {"bernoulli identity beta 0.3, no hidden", VAE_LIKELIHOOD_BERNOULLI, 1.0, 0.3,
         VAE_ACT_IDENTITY, VAE_OBJECTIVE_ELBO, 0, 3},
        {"gaussian sigma 1 elu beta 1", VAE_LIKELIHOOD_GAUSSIAN, 1.0, 1.0, VAE_ACT_ELU,
         VAE_OBJECTIVE_ELBO, 1, 3},
        {"gaussian sigma 0.5 tanh beta 0.3", VAE_LIKELIHOOD_GAUSSIAN, 0.5, 0.3, VAE_ACT_TANH,
         VAE_OBJECTIVE_ELBO, 2, 3},
        {"gaussian sigma 0.5 softplus beta 1", VAE_LIKELIHOOD_GAUSSIAN, 0.5, 1.0,
         VAE_ACT_SOFTPLUS, VAE_OBJECTIVE_ELBO, 1, 3},
        {"autoencoder bernoulli tanh", VAE_LIKELIHOOD_BERNOULLI, 1.0, 1.0, VAE_ACT_TANH,
         VAE_OBJECTIVE_AUTOENCODER, 1, 3},
        {"autoencoder gaussian sigma 0.5 elu", VAE_LIKELIHOOD_GAUSSIAN, 0.5, 0.3, VAE_ACT_ELU,
         VAE_OBJECTIVE_AUTOENCODER, 2, 3},
        /* Batches of several 64-sample blocks (65 -> 33+32, 130 -> three):
         * the blocks' gradients must add up to that of the batch mean. */
        {"bernoulli tanh beta 1, batch 65", VAE_LIKELIHOOD_BERNOULLI, 1.0, 1.0, VAE_ACT_TANH,
         VAE_OBJECTIVE_ELBO, 1, 65},
        {"gaussian sigma 0.5 softplus beta 0.3, batch 130", VAE_LIKELIHOOD_GAUSSIAN, 0.5, 0.3,
         VAE_ACT_SOFTPLUS, VAE_OBJECTIVE_ELBO, 2, 130},
        /* Conv2D and ConvTranspose2D inside a model. */
        {"conv bernoulli tanh beta 1", VAE_LIKELIHOOD_BERNOULLI, 1.0, 1.0, VAE_ACT_TANH,
         VAE_OBJECTIVE_ELBO, CONV, 3},
        {"conv gaussian sigma 0.5 sigmoid beta 0.3, batch 70", VAE_LIKELIHOOD_GAUSSIAN, 0.5,
         0.3, VAE_ACT_SIGMOID, VAE_OBJECTIVE_ELBO, CONV, 70},
    };
    /* ReLU and leaky ReLU are left out here: their kinks make a finite
     * difference through a whole network unreliable, and their backward is
     * checked at the layer level (test_dense.c) with inputs kept off the
     * kinks. The model-level chain rule is the same for every activation. */
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_elbo_gradient(&cases[i], 100 + i);
}

/* The autoencoder objective ignores logvar: the gradient of the head's
 * logvar rows is exactly zero, and eps and rng may both be NULL. */
static void test_autoencoder_ignores_logvar(void **state)
{
    (void)state;
    enum { D = 6, H = 5, L = 2, B = 4 };
    const layout o = layout_of(D, H, L);
    vae_model *m = mlp1(D, H, L, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI, 5);
    vae_elbo *ae = objective(1.0, VAE_OBJECTIVE_AUTOENCODER);
    vae_trainer *t = trainer(m, ae, 1);
    tu_rng r = {6};
    float x[B * D];
    tu_fill_range(&r, x, B * D, 0.0, 1.0);
    forward_backward(t, x, B, NULL);
    evaluate(m, ae, x, B, NULL, NULL, NULL);
    const float *g = vae_trainer_grads(t, NULL);
    for (size_t j = 0; j < L * H; j++)
        assert_true(g[o.head_w + L * H + j] == 0.0f);
    for (size_t j = 0; j < L; j++)
        assert_true(g[o.head_b + L + j] == 0.0f);
    /* ...while the mu rows do get a gradient. */
    double s = 0.0;
    for (size_t j = 0; j < L * H; j++)
        s += fabs(g[o.head_w + j]);
    assert_true(s > 0.0);
    vae_trainer_free(t);
    vae_elbo_free(ae);
    vae_model_free(m);
}

/* (e) per-sample losses sum to batch * loss, and each equals the loss of
 * that sample evaluated alone; also across several blocks. */
static void test_per_sample(void **state)
{
    (void)state;
    enum { D = 6, L = 2, BMAX = 130 };
    const size_t hidden[1] = {5}, batches[2] = {5, BMAX};
    float *x = tu_alloc(BMAX * D, sizeof *x), *eps = tu_alloc(BMAX * L, sizeof *eps);
    double *per = tu_alloc(BMAX, sizeof *per);
    for (size_t bi = 0; bi < 2; bi++)
        for (int obj = 0; obj < 2; obj++)
            for (int lik = 0; lik < 2; lik++) {
                const size_t B = batches[bi];
                vae_model *m = NULL;
                TU_OK(vae_model_create_mlp(&m, D, hidden, 1, L, VAE_ACT_TANH, lik, 9));
                vae_elbo *e = objective(0.3, obj);
                tu_rng r = {10};
                tu_fill_range(&r, x, B * D, 0.0, 1.0);
                for (size_t i = 0; i < B * L; i++)
                    eps[i] = (float)tu_gauss(&r);
                vae_epoch_stats st = evaluate(m, e, x, B, eps, NULL, per);
                double sum = 0.0;
                for (size_t i = 0; i < B; i++)
                    sum += per[i];
                /* Double sums of the same terms in another order: 1e-12. */
                TU_CLOSE(sum, B * st.loss, 1e-12, 0.0);
                TU_CLOSE(st.loss, st.recon + beta_of(e) * st.kl, 1e-12, 0.0);
                if (obj == VAE_OBJECTIVE_ELBO)
                    assert_true(st.kl > 0.0);
                for (size_t i = 0; i < B; i++) {
                    double one = 0;
                    vae_epoch_stats s1 = evaluate(m, e, x + i * D, 1, eps + i * L, NULL, &one);
                    assert_true(s1.loss == one);
                    /* Batch 1 vs B may take different GEMM kernels: 1e-6. */
                    if (fabs(per[i] - one) > 1e-6 * fabs(one))
                        fail_msg("batch %zu sample %zu: %.9g in the batch, %.9g alone", B, i,
                                 per[i], one);
                }
                vae_elbo_free(e);
                vae_model_free(m);
            }
    free(x);
    free(eps);
    free(per);
}

/* (f) forward_backward adds into the gradient slab; (g) the same eps gives
 * the same loss bit for bit, and the noise paths draw eps[n][latent] in
 * sample order. */
static void test_accumulate_and_reproduce(void **state)
{
    (void)state;
    enum { D = 6, L = 2, B = 4 };
    const size_t hidden[1] = {5};
    vae_model *m = NULL, *m2 = NULL;
    TU_OK(vae_model_create_mlp(&m, D, hidden, 1, L, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI,
                               11));
    TU_OK(vae_model_create_mlp(&m2, D, hidden, 1, L, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI,
                               11));
    vae_elbo *e = objective(1.0, VAE_OBJECTIVE_ELBO);
    tu_rng r = {12};
    float x[B * D], eps[B * L];
    tu_fill_range(&r, x, B * D, 0.0, 1.0);
    for (size_t i = 0; i < B * L; i++)
        eps[i] = (float)tu_gauss(&r);
    vae_trainer *t = trainer(m, e, 77);
    size_t n = 0;
    float *g = vae_trainer_grads(t, &n), *g1 = tu_alloc(n, sizeof *g1);
    vae_epoch_stats s1 = forward_backward(t, x, B, eps);
    memcpy(g1, g, n * sizeof *g);
    double gmax = 0.0;
    for (size_t i = 0; i < n; i++)
        gmax = fmax(gmax, fabs(g1[i]));
    assert_true(gmax > 0.0);
    vae_epoch_stats s2 = forward_backward(t, x, B, eps);
    assert_true(s1.loss == s2.loss && s1.recon == s2.recon && s1.kl == s2.kl);
    /* The second call's additions round against the running sums; 1e-6 of
     * the largest gradient bounds that. */
    for (size_t i = 0; i < n; i++)
        TU_CLOSE(g[i], 2.0 * (double)g1[i], 0.0, 1e-6 * gmax);
    /* No step was taken: the parameters are those of the twin model. */
    assert_memory_equal(vae_model_params(m, NULL), vae_model_params(m2, NULL),
                        n * sizeof(float));
    assert_int_equal(vae_trainer_steps(t), 0);
    vae_trainer_free(t);

    /* Noise from the trainer's generator: the same seed gives the same loss
     * and gradient, another seed other noise, and each call draws fresh
     * noise. */
    vae_trainer *ta = trainer(m, e, 77), *tb = trainer(m2, e, 77), *tc = trainer(m2, e, 78);
    float *ga = tu_alloc(n, sizeof *ga);
    vae_epoch_stats sa = forward_backward(ta, x, B, NULL);
    memcpy(ga, vae_trainer_grads(ta, NULL), n * sizeof *ga);
    vae_epoch_stats sb = forward_backward(tb, x, B, NULL);
    assert_true(sa.loss == sb.loss);
    assert_memory_equal(ga, vae_trainer_grads(tb, NULL), n * sizeof *ga);
    vae_epoch_stats sc = forward_backward(tc, x, B, NULL);
    assert_true(sc.loss != sa.loss);
    vae_epoch_stats sa2 = forward_backward(ta, x, B, NULL);
    assert_true(sa2.loss != sa.loss);
    vae_trainer_free(ta);
    vae_trainer_free(tb);
    vae_trainer_free(tc);

    /* vae_elbo_evaluate with a generator: eps[batch][latent] drawn in order
     * from it, i.e. the loss of the eps that vae_rng_normal draws. */
    vae_rng *ra = NULL, *rb = NULL, *rc = NULL, *rd = NULL;
    TU_OK(vae_rng_create(&ra, 77));
    TU_OK(vae_rng_create(&rb, 77));
    TU_OK(vae_rng_create(&rc, 78));
    TU_OK(vae_rng_create(&rd, 78));
    float drawn[B * L];
    TU_OK(vae_rng_normal(rb, drawn, B * L));
    const double la = evaluate(m, e, x, B, NULL, ra, NULL).loss;
    assert_true(evaluate(m, e, x, B, drawn, NULL, NULL).loss == la);
    assert_true(evaluate(m, e, x, B, NULL, rc, NULL).loss != la);
    /* Injected eps is used as given and the generator is left alone. */
    float u1, u2;
    TU_OK(vae_rng_normal(rd, drawn, B * L)); /* rd now where rc is */
    assert_true(evaluate(m, e, x, B, eps, rc, NULL).loss == s1.loss);
    TU_OK(vae_rng_uniform(rc, &u1, 1));
    TU_OK(vae_rng_uniform(rd, &u2, 1));
    assert_true(u1 == u2);

    free(g1);
    free(ga);
    vae_rng_free(ra);
    vae_rng_free(rb);
    vae_rng_free(rc);
    vae_rng_free(rd);
    vae_elbo_free(e);
    vae_model_free(m);
    vae_model_free(m2);
}

/* A forward_backward and an evaluate that fail with VAE_ERR_NUMERIC; the
 * gradient slab keeps the pattern written into it. */
static void expect_numeric_untouched(vae_trainer *t, const vae_model *m, const vae_elbo *e,
                                     const float *x, size_t b, const float *eps)
{
    size_t n = 0;
    float *g = vae_trainer_grads(t, &n), *before = tu_alloc(n, sizeof *before);
    for (size_t i = 0; i < n; i++)
        g[i] = 0.5f + (float)i; /* a pattern the call must leave alone */
    memcpy(before, g, n * sizeof *g);
    vae_epoch_stats st = {sizeof st};
    TU_EXPECT_ERR(vae_trainer_forward_backward(t, x, b, eps, &st), VAE_ERR_NUMERIC,
                  "vae_trainer_forward_backward");
    assert_memory_equal(g, before, n * sizeof *g);
    TU_EXPECT_ERR(vae_elbo_evaluate(g_ctx, m, e, x, b, eps, NULL, NULL, &st), VAE_ERR_NUMERIC,
                  "vae_elbo_evaluate");
    assert_memory_equal(g, before, n * sizeof *g);
    TU_OK(vae_trainer_zero_grads(t));
    free(before);
}

/* (h) bad input. */
static void test_bad_input(void **state)
{
    (void)state;
    enum { D = 6, H = 5, L = 2, B = 2 };
    const layout o = layout_of(D, H, L);
    vae_model *m = mlp1(D, H, L, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI, 1);
    vae_model *u = NULL;
    TU_OK(vae_model_create(&u, D, L, VAE_LIKELIHOOD_BERNOULLI));
    vae_elbo *e = NULL;
    TU_EXPECT_ERR(vae_elbo_create(NULL), VAE_ERR_INVALID, "vae_elbo_create");
    TU_OK(vae_elbo_create(&e));
    vae_rng *rng = NULL;
    TU_OK(vae_rng_create(&rng, 1));
    float x[B * D] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f, 0.9f, 1.0f, 0.0f, 0.5f};
    float eps[B * L] = {0.1f, -0.3f, 1.2f, 0.4f};
    vae_epoch_stats st = {sizeof st};
    const char *fb = "vae_trainer_forward_backward", *ev = "vae_elbo_evaluate";
    const char *tc = "vae_trainer_create";
    vae_context *c = g_ctx;

    /* A trainer needs every borrowed object and a built model. */
    vae_trainer *t = (vae_trainer *)&t;
    TU_EXPECT_ERR(vae_trainer_create(NULL, m, e, g_opt, c, 1), VAE_ERR_INVALID, tc);
    TU_EXPECT_ERR(vae_trainer_create(&t, NULL, e, g_opt, c, 1), VAE_ERR_INVALID, tc);
    assert_null(t);
    TU_EXPECT_ERR(vae_trainer_create(&t, m, NULL, g_opt, c, 1), VAE_ERR_INVALID, tc);
    TU_EXPECT_ERR(vae_trainer_create(&t, m, e, NULL, c, 1), VAE_ERR_INVALID, tc);
    TU_EXPECT_ERR(vae_trainer_create(&t, m, e, g_opt, NULL, 1), VAE_ERR_INVALID, tc);
    TU_EXPECT_ERR(vae_trainer_create(&t, u, e, g_opt, c, 1), VAE_ERR_STATE, tc);
    assert_null(t);
    t = trainer(m, e, 1);

    TU_EXPECT_ERR(vae_trainer_forward_backward(NULL, x, B, eps, &st), VAE_ERR_INVALID, fb);
    TU_EXPECT_ERR(vae_trainer_forward_backward(t, NULL, B, eps, &st), VAE_ERR_INVALID, fb);
    TU_EXPECT_ERR(vae_trainer_forward_backward(t, x, 0, eps, &st), VAE_ERR_INVALID, fb);
    {
        const size_t big = ((size_t)1 << 20) + 1;
        float *xb = tu_alloc(big * D, sizeof *xb);
        TU_EXPECT_ERR(vae_trainer_forward_backward(t, xb, big, NULL, &st), VAE_ERR_INVALID, fb);
        TU_EXPECT_ERR(vae_elbo_evaluate(c, m, e, xb, big, NULL, rng, NULL, &st),
                      VAE_ERR_INVALID, ev);
        free(xb);
    }
    TU_EXPECT_ERR(vae_elbo_evaluate(NULL, m, e, x, B, eps, NULL, NULL, &st), VAE_ERR_INVALID,
                  ev);
    TU_EXPECT_ERR(vae_elbo_evaluate(c, NULL, e, x, B, eps, NULL, NULL, &st), VAE_ERR_INVALID,
                  ev);
    TU_EXPECT_ERR(vae_elbo_evaluate(c, m, NULL, x, B, eps, NULL, NULL, &st), VAE_ERR_INVALID,
                  ev);
    TU_EXPECT_ERR(vae_elbo_evaluate(c, m, e, NULL, B, eps, NULL, NULL, &st), VAE_ERR_INVALID,
                  ev);
    TU_EXPECT_ERR(vae_elbo_evaluate(c, m, e, x, 0, eps, NULL, NULL, &st), VAE_ERR_INVALID, ev);
    TU_EXPECT_ERR(vae_elbo_evaluate(c, u, e, x, B, eps, NULL, NULL, &st), VAE_ERR_STATE, ev);
    /* The ELBO needs noise: eps or a generator. */
    TU_EXPECT_ERR(vae_elbo_evaluate(c, m, e, x, B, NULL, NULL, NULL, &st), VAE_ERR_INVALID, ev);
    /* All output pointers may be NULL; the trainer draws its own noise. */
    TU_OK(vae_elbo_evaluate(c, m, e, x, B, eps, NULL, NULL, NULL));
    TU_OK(vae_elbo_evaluate(c, m, e, x, B, NULL, rng, NULL, NULL));
    TU_OK(vae_trainer_forward_backward(t, x, B, NULL, NULL));
    TU_OK(vae_trainer_zero_grads(t));

    /* stats->size: 0 is refused; a larger structure is accepted when its
     * unknown bytes are zero; a shorter (older) one gets only its fields. */
    {
        st.size = 0;
        TU_EXPECT_ERR(vae_trainer_forward_backward(t, x, B, eps, &st), VAE_ERR_INVALID, fb);
        TU_EXPECT_ERR(vae_elbo_evaluate(c, m, e, x, B, eps, NULL, NULL, &st), VAE_ERR_INVALID,
                      ev);
        struct {
            vae_epoch_stats s;
            unsigned char extra[16];
        } big;
        memset(&big, 0, sizeof big);
        big.s.size = sizeof big;
        big.extra[5] = 1;
        TU_EXPECT_ERR(vae_trainer_forward_backward(t, x, B, eps, &big.s), VAE_ERR_INVALID, fb);
        TU_EXPECT_ERR(vae_elbo_evaluate(c, m, e, x, B, eps, NULL, NULL, &big.s),
                      VAE_ERR_INVALID, ev);
        big.extra[5] = 0;
        TU_OK(vae_elbo_evaluate(c, m, e, x, B, eps, NULL, NULL, &big.s));
        assert_true(big.s.loss > 0.0);
        TU_OK(vae_trainer_forward_backward(t, x, B, eps, &big.s));
        assert_true(big.s.loss > 0.0);
        vae_epoch_stats old;
        old.size = offsetof(vae_epoch_stats, recon); /* size and loss only */
        old.loss = -1.0;
        old.recon = old.kl = 12345.0;
        TU_OK(vae_elbo_evaluate(c, m, e, x, B, eps, NULL, NULL, &old));
        assert_true(old.loss > 0.0);
        assert_true(old.recon == 12345.0 && old.kl == 12345.0);
        TU_OK(vae_trainer_zero_grads(t));
        st.size = sizeof st;
    }

    /* Non-finite x or eps. */
    eps[3] = NAN;
    expect_numeric_untouched(t, m, e, x, B, eps);
    eps[3] = INFINITY;
    expect_numeric_untouched(t, m, e, x, B, eps);
    eps[3] = 0.4f;
    x[D + 2] = NAN;
    expect_numeric_untouched(t, m, e, x, B, eps);
    x[D + 2] = -INFINITY;
    expect_numeric_untouched(t, m, e, x, B, eps);
    /* Bernoulli x outside [0, 1]. */
    x[D + 2] = 1.5f;
    TU_EXPECT_ERR(vae_trainer_forward_backward(t, x, B, eps, &st), VAE_ERR_INVALID, fb);
    TU_EXPECT_ERR(vae_elbo_evaluate(c, m, e, x, B, eps, NULL, NULL, &st), VAE_ERR_INVALID, ev);
    x[D + 2] = -0.5f;
    TU_EXPECT_ERR(vae_elbo_evaluate(c, m, e, x, B, eps, NULL, NULL, &st), VAE_ERR_INVALID, ev);
    TU_EXPECT_ERR(vae_trainer_forward_backward(t, x, B, NULL, &st), VAE_ERR_INVALID, fb);
    x[D + 2] = 0.3f;

    /* A logvar so large that exp overflows: the loss is not finite. */
    float *p = vae_model_params(m, NULL);
    const float saved = p[o.head_b + L];
    p[o.head_b + L] = 1e30f;
    expect_numeric_untouched(t, m, e, x, B, eps);
    p[o.head_b + L] = saved;

    /* A rejected setting leaves the previous one in force: beta is still 4. */
    TU_OK(vae_elbo_set_param(e, VAE_ELBO_BETA, 4.0));
    TU_EXPECT_ERR(vae_elbo_set_param(e, VAE_ELBO_BETA, -1.0), VAE_ERR_INVALID,
                  "vae_elbo_set_param");
    {
        vae_epoch_stats s4 = evaluate(m, e, x, B, eps, NULL, NULL);
        TU_CLOSE(s4.loss, s4.recon + 4.0 * s4.kl, 1e-12, 0.0);
        assert_true(s4.kl > 0.0);
    }
    /* In autoencoder mode no noise is needed, and eps, when given, is not
     * read (not even checked). */
    TU_OK(vae_elbo_set_param(e, VAE_ELBO_OBJECTIVE, VAE_OBJECTIVE_AUTOENCODER));
    TU_OK(vae_elbo_evaluate(c, m, e, x, B, NULL, NULL, NULL, &st));
    const double ae_loss = st.loss;
    TU_OK(vae_trainer_forward_backward(t, x, B, NULL, &st));
    assert_true(st.loss == ae_loss);
    eps[3] = NAN;
    TU_OK(vae_elbo_evaluate(c, m, e, x, B, eps, rng, NULL, &st));
    assert_true(st.loss == ae_loss);
    TU_OK(vae_trainer_forward_backward(t, x, B, eps, &st));
    assert_true(st.loss == ae_loss);
    eps[3] = 0.4f;
    vae_elbo_free(NULL);

    vae_trainer_free(t);
    vae_rng_free(rng);
    vae_elbo_free(e);
    vae_model_free(u);
    vae_model_free(m);
}

/* vae_elbo_set_param / vae_elbo_get_param: defaults, bounds, unknown
 * settings, and that a change takes effect at the next call. */
static void test_elbo_params(void **state)
{
    (void)state;
    const char *fs = "vae_elbo_set_param", *fg = "vae_elbo_get_param";
    vae_elbo *e = NULL;
    TU_OK(vae_elbo_create(&e));
    double v = -5.0;
    TU_OK(vae_elbo_get_param(e, VAE_ELBO_BETA, &v));
    assert_true(v == 1.0);
    TU_OK(vae_elbo_get_param(e, VAE_ELBO_OBJECTIVE, &v));
    assert_true(v == VAE_OBJECTIVE_ELBO);

    TU_EXPECT_ERR(vae_elbo_set_param(NULL, VAE_ELBO_BETA, 1.0), VAE_ERR_INVALID, fs);
    TU_EXPECT_ERR(vae_elbo_set_param(e, 0, 1.0), VAE_ERR_INVALID, fs);
    TU_EXPECT_ERR(vae_elbo_set_param(e, 3, 1.0), VAE_ERR_INVALID, fs);
    TU_EXPECT_ERR(vae_elbo_get_param(NULL, VAE_ELBO_BETA, &v), VAE_ERR_INVALID, fg);
    TU_EXPECT_ERR(vae_elbo_get_param(e, VAE_ELBO_BETA, NULL), VAE_ERR_INVALID, fg);
    TU_EXPECT_ERR(vae_elbo_get_param(e, 0, &v), VAE_ERR_INVALID, fg);
    TU_EXPECT_ERR(vae_elbo_get_param(e, 3, &v), VAE_ERR_INVALID, fg);

    /* beta: finite and >= 0. */
    TU_OK(vae_elbo_set_param(e, VAE_ELBO_BETA, 0.0));
    TU_OK(vae_elbo_get_param(e, VAE_ELBO_BETA, &v));
    assert_true(v == 0.0);
    TU_OK(vae_elbo_set_param(e, VAE_ELBO_BETA, 4.0));
    const double bad_beta[] = {-1.0, -1e-30, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof bad_beta / sizeof bad_beta[0]; i++) {
        TU_EXPECT_ERR(vae_elbo_set_param(e, VAE_ELBO_BETA, bad_beta[i]), VAE_ERR_INVALID, fs);
        TU_OK(vae_elbo_get_param(e, VAE_ELBO_BETA, &v));
        assert_true(v == 4.0);
    }
    TU_OK(vae_elbo_set_param(e, VAE_ELBO_BETA, 0.25));
    TU_OK(vae_elbo_get_param(e, VAE_ELBO_BETA, &v));
    assert_true(v == 0.25);

    /* objective: exactly one of the two values. */
    const double bad_obj[] = {2.0, -1.0, 0.5, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad_obj / sizeof bad_obj[0]; i++) {
        TU_EXPECT_ERR(vae_elbo_set_param(e, VAE_ELBO_OBJECTIVE, bad_obj[i]), VAE_ERR_INVALID,
                      fs);
        TU_OK(vae_elbo_get_param(e, VAE_ELBO_OBJECTIVE, &v));
        assert_true(v == VAE_OBJECTIVE_ELBO);
    }
    TU_OK(vae_elbo_set_param(e, VAE_ELBO_OBJECTIVE, VAE_OBJECTIVE_AUTOENCODER));
    TU_OK(vae_elbo_get_param(e, VAE_ELBO_OBJECTIVE, &v));
    assert_true(v == VAE_OBJECTIVE_AUTOENCODER);
    /* Setting the objective leaves beta alone. */
    TU_OK(vae_elbo_get_param(e, VAE_ELBO_BETA, &v));
    assert_true(v == 0.25);

    /* Each change shows at the next call (KL warm-up changes beta between
     * steps of one trainer). */
    enum { D = 6, H = 5, L = 2, B = 3 };
    vae_model *m = mlp1(D, H, L, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI, 3);
    TU_OK(vae_elbo_set_param(e, VAE_ELBO_OBJECTIVE, VAE_OBJECTIVE_ELBO));
    vae_trainer *t = trainer(m, e, 5);
    tu_rng r = {4};
    float x[B * D], eps[B * L];
    tu_fill_range(&r, x, B * D, 0.0, 1.0);
    tu_fill_range(&r, eps, B * L, -1.0, 1.0);
    const double betas[3] = {0.0, 0.5, 2.0};
    double recon0 = 0.0;
    for (size_t i = 0; i < 3; i++) {
        TU_OK(vae_elbo_set_param(e, VAE_ELBO_BETA, betas[i]));
        vae_epoch_stats s = forward_backward(t, x, B, eps);
        TU_OK(vae_trainer_zero_grads(t));
        if (i == 0)
            recon0 = s.recon;
        assert_true(s.recon == recon0 && s.kl > 0.0);
        TU_CLOSE(s.loss, s.recon + betas[i] * s.kl, 1e-12, 0.0);
    }
    TU_OK(vae_elbo_set_param(e, VAE_ELBO_OBJECTIVE, VAE_OBJECTIVE_AUTOENCODER));
    vae_epoch_stats s = forward_backward(t, x, B, eps);
    assert_true(s.kl == 0.0 && s.loss == s.recon);
    vae_trainer_free(t);
    vae_model_free(m);
    vae_elbo_free(e);
}

/* A logvar of 100 gives std e^50 ~ 5e21 (finite in float) but a variance
 * e^100 ~ 3e43 that float cannot hold, while the KL in double is finite.
 * The loss reported is then finite, so the call must not leave an infinite
 * gradient behind: either it succeeds with a finite gradient or it fails
 * with VAE_ERR_NUMERIC and the slab untouched. */
static void test_large_logvar_gradient(void **state)
{
    (void)state;
    enum { D = 6, H = 5, L = 2, B = 2 };
    const layout o = layout_of(D, H, L);
    vae_model *m = mlp1(D, H, L, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI, 1);
    vae_elbo *e = objective(1.0, VAE_OBJECTIVE_ELBO);
    vae_trainer *t = trainer(m, e, 1);
    float x[B * D] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f, 0.9f, 1.0f, 0.0f, 0.5f};
    float eps[B * L] = {0.1f, -0.3f, 1.2f, 0.4f};
    float *p = vae_model_params(m, NULL);
    memset(p + o.head_w + L * H, 0, L * H * sizeof(float));
    p[o.head_b + L] = 100.0f;
    size_t n = 0;
    float *g = vae_trainer_grads(t, &n), *before = tu_alloc(n, sizeof *before);
    memcpy(before, g, n * sizeof *g);
    vae_epoch_stats st = {sizeof st};
    int rc = vae_trainer_forward_backward(t, x, B, eps, &st);
    const int finite = tu_all_finite(g, n);
    const int untouched = memcmp(g, before, n * sizeof *g) == 0;
    /* Free before asserting, so a failure here reports no leak under ASan. */
    free(before);
    vae_trainer_free(t);
    vae_elbo_free(e);
    vae_model_free(m);
    if (rc == VAE_OK && !finite)
        fail_msg("vae_trainer_forward_backward returned VAE_OK (loss %g) but left a "
                 "non-finite value in the gradient slab",
                 st.loss);
    if (rc != VAE_OK) {
        assert_int_equal(rc, VAE_ERR_NUMERIC);
        assert_true(untouched);
    }
}

/* The Gaussian likelihood at the ends of sigma's range, [1e-6, 1e6]. The
 * decoder's mean is pinned (last layer's weights 0, biases `mean`), so the
 * recon term and its gradient have closed forms. At sigma 1e-6 residuals
 * up to 1e6 give a finite loss (5e23 per value) and gradient (1e18 / n);
 * at 1e6, 1/sigma^2 = 1e-12. A residual whose square overflows float makes
 * the loss infinite: VAE_ERR_NUMERIC, the slab untouched. And a sigma the
 * setter now refuses (1e-20, forced into the model: 1/sigma^2 = 1e40
 * overflows float) used to give a forward-backward that succeeded with a
 * loss of 3.8e40 and an infinite gradient: now both calls fail. */
static void test_gaussian_sigma_range(void **state)
{
    (void)state;
    enum { D = 4, H = 3, L = 2, B = 2 };
    const layout o = layout_of(D, H, L);
    vae_model *m = mlp1(D, H, L, VAE_ACT_TANH, VAE_LIKELIHOOD_GAUSSIAN, 5);
    float *p = vae_model_params(m, NULL);
    const float mean[D] = {0.5f, -1.0f, 2.0f, 0.0f};
    memset(p + o.out_w, 0, D * H * sizeof(float));
    memcpy(p + o.out_b, mean, sizeof mean);
    vae_elbo *ae = objective(1.0, VAE_OBJECTIVE_AUTOENCODER);
    vae_trainer *t = trainer(m, ae, 3);
    const float resid[B * D] = {1e6f, -1e6f, 0.0f, 3.0f, -2.5e5f, 1e-3f, 7e5f, -1.0f};
    float x[B * D];
    for (size_t i = 0; i < B * D; i++)
        x[i] = mean[i % D] + resid[i];
    size_t n = 0;
    float *g = vae_trainer_grads(t, &n);
    const double sigmas[] = {1e-6, 1e6};
    for (size_t si = 0; si < 2; si++) {
        TU_OK(vae_model_set_param(m, VAE_MODEL_GAUSSIAN_SIGMA, sigmas[si]));
        const double s = (float)sigmas[si];
        double ref = 0.0;
        for (size_t i = 0; i < B * D; i++) {
            const double d = (double)x[i] - mean[i % D];
            ref += d * d / (2.0 * s * s) + 0.5 * (LOG_2PI + log(s * s));
        }
        ref /= B;
        vae_epoch_stats st = evaluate(m, ae, x, B, NULL, NULL, NULL);
        TU_CLOSE(st.loss, ref, 1e-6, 0.0);
        TU_OK(vae_trainer_zero_grads(t));
        st = forward_backward(t, x, B, NULL);
        TU_CLOSE(st.loss, ref, 1e-6, 0.0);
        if (!tu_all_finite(g, n))
            fail_msg("sigma %g: a gradient is not finite", s);
        /* d/d(bias_j) = mean over the batch of (mean_j - x_j) / s^2 */
        for (size_t j = 0; j < D; j++) {
            double want = 0.0;
            for (size_t i = 0; i < B; i++)
                want += ((double)mean[j] - x[i * D + j]) / (s * s) / B;
            TU_CLOSE(g[o.out_b + j], want, 1e-5, 1e-30);
        }
    }
    TU_OK(vae_trainer_zero_grads(t));

    /* A residual whose square overflows float. */
    float xbig[B * D];
    memcpy(xbig, x, sizeof xbig);
    xbig[2] = 2e19f;
    expect_numeric_untouched(t, m, ae, xbig, B, NULL);

    /* The sigma from the report, forced past the setter. */
    m->sigma = 1e-20f;
    const float small[B * D] = {0.5f, -1.0f, 2.0f, 0.25f, 0.5f, -1.0f, 2.0f, 0.0f};
    expect_numeric_untouched(t, m, ae, small, B, NULL);
    vae_epoch_stats st = {sizeof st};
    TU_EXPECT_ERR_MSG(vae_trainer_step(t, small, B, &st), VAE_ERR_NUMERIC, "vae_trainer_step",
                      "not finite");
    TU_ASSERT_ZERO_GRADS(t);

    vae_trainer_free(t);
    vae_elbo_free(ae);
    vae_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stats_filled),
        cmocka_unit_test(test_kl_closed_form),
        cmocka_unit_test(test_bernoulli_extreme_logits),
        cmocka_unit_test(test_gaussian_constants),
        cmocka_unit_test(test_gradient_finite_differences),
        cmocka_unit_test(test_autoencoder_ignores_logvar),
        cmocka_unit_test(test_per_sample),
        cmocka_unit_test(test_accumulate_and_reproduce),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_elbo_params),
        cmocka_unit_test(test_large_logvar_gradient),
        cmocka_unit_test(test_gaussian_sigma_range),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
