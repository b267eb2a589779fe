/* The objective: KL and the likelihoods against closed forms, the whole
 * gradient (from a trainer) against central finite differences, settings,
 * reductions over samples and blocks, accumulation, reproducibility and bad
 * input; the continuous Bernoulli's normalizer, mean and gradient. */
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
    size_t samples;  /* VAE_ELBO_SAMPLES; 0 stands for the default 1 */
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
    const size_t K = c->samples ? c->samples : 1;
    TU_OK(vae_elbo_set_param(e, VAE_ELBO_SAMPLES, (double)K));
    vae_trainer *t = trainer(m, e, seed);
    size_t n = 0, ng = 0;
    float *p = vae_model_params(m, &n), *g = vae_trainer_grads(t, &ng);
    assert_int_equal(ng, n);
    tu_rng r = {seed * 7919};
    /* Larger parameters than the default init, so that logvar and the
     * decoder output move well away from 0 and every term matters. */
    for (size_t i = 0; i < n; i++)
        p[i] *= 2.0f;
    float *x = tu_alloc(B * D, sizeof *x), *eps = tu_alloc(B * K * L, sizeof *eps);
    if (c->lik != VAE_LIKELIHOOD_GAUSSIAN)
        tu_fill_range(&r, x, B * D, 0.0, 1.0);
    else
        for (size_t i = 0; i < B * D; i++)
            x[i] = (float)tu_gauss(&r);
    for (size_t i = 0; i < B * K * L; i++)
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
        /* The continuous Bernoulli through whole networks. */
        {"continuous bernoulli tanh beta 1", VAE_LIKELIHOOD_CONTINUOUS_BERNOULLI, 1.0, 1.0,
         VAE_ACT_TANH, VAE_OBJECTIVE_ELBO, 1, 3},
        {"continuous bernoulli softplus beta 0.3, batch 65", VAE_LIKELIHOOD_CONTINUOUS_BERNOULLI,
         1.0, 0.3, VAE_ACT_SOFTPLUS, VAE_OBJECTIVE_ELBO, 2, 65},
        {"conv continuous bernoulli tanh beta 1", VAE_LIKELIHOOD_CONTINUOUS_BERNOULLI, 1.0, 1.0,
         VAE_ACT_TANH, VAE_OBJECTIVE_ELBO, CONV, 3},
        /* Several draws per input: the ELBO's mean over them, and IWAE's
         * normalised importance weights (k = 1 is the one-draw KL
         * estimate). Batch 30 with k = 5 is 150 rows in three blocks,
         * inputs' draws straddling blocks. */
        {"elbo k 3 bernoulli tanh beta 1", VAE_LIKELIHOOD_BERNOULLI, 1.0, 1.0, VAE_ACT_TANH,
         VAE_OBJECTIVE_ELBO, 1, 3, 3},
        {"iwae k 1 bernoulli tanh beta 1", VAE_LIKELIHOOD_BERNOULLI, 1.0, 1.0, VAE_ACT_TANH,
         VAE_OBJECTIVE_IWAE, 1, 3, 1},
        {"iwae k 4 bernoulli tanh beta 1", VAE_LIKELIHOOD_BERNOULLI, 1.0, 1.0, VAE_ACT_TANH,
         VAE_OBJECTIVE_IWAE, 1, 3, 4},
        {"iwae k 5 gaussian sigma 0.5 softplus beta 0.3, batch 30", VAE_LIKELIHOOD_GAUSSIAN,
         0.5, 0.3, VAE_ACT_SOFTPLUS, VAE_OBJECTIVE_IWAE, 2, 30, 5},
        {"iwae k 3 continuous bernoulli sigmoid beta 1", VAE_LIKELIHOOD_CONTINUOUS_BERNOULLI,
         1.0, 1.0, VAE_ACT_SIGMOID, VAE_OBJECTIVE_IWAE, 1, 4, 3},
        {"conv iwae k 2 bernoulli tanh beta 1", VAE_LIKELIHOOD_BERNOULLI, 1.0, 1.0,
         VAE_ACT_TANH, VAE_OBJECTIVE_IWAE, CONV, 3, 2},
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

/* Noise from a generator is the stream vae_rng_normal draws, in row order,
 * whatever the workers (each computes its own blocks' values) and the block
 * boundaries, also when the generator holds the second value of a pair and
 * when a block ends inside a pair (an odd latent size): per-sample losses
 * equal those of the same noise given as eps, and the generator is left
 * where vae_rng_normal leaves its twin. */
static void test_noise_stream(void **state)
{
    (void)state;
    enum { D = 6, L = 3, NMAX = 200 };
    const size_t hidden[1] = {7};
    vae_model *m = NULL;
    TU_OK(vae_model_create_mlp(&m, D, hidden, 1, L, VAE_ACT_TANH, VAE_LIKELIHOOD_GAUSSIAN, 9));
    vae_elbo *e = NULL;
    TU_OK(vae_elbo_create(&e));
    float *x = tu_alloc(NMAX * D, sizeof *x), *eps = tu_alloc(NMAX * L, sizeof *eps);
    double *pa = tu_alloc(NMAX, sizeof *pa), *pb = tu_alloc(NMAX, sizeof *pb);
    tu_rng r = {5};
    tu_fill_range(&r, x, NMAX * D, -1, 1);
    const size_t sizes[] = {1, 3, 65, 130, 200};
    TU_OK(vae_blas_set_threads(1));
    for (size_t workers = 1; workers <= 3; workers++) {
        vae_context *ctx = NULL;
        TU_OK(vae_context_create(&ctx));
        if (workers > 1)
            TU_OK(vae_context_set_threads(ctx, workers));
        for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++)
            for (int spare = 0; spare <= 1; spare++) {
                const size_t n = sizes[k];
                vae_rng *ga = NULL, *gb = NULL;
                TU_OK(vae_rng_create(&ga, 40 + k));
                TU_OK(vae_rng_create(&gb, 40 + k));
                float first[2];
                if (spare) { /* one value out: the generator holds the pair's second */
                    TU_OK(vae_rng_normal(ga, first, 1));
                    TU_OK(vae_rng_normal(gb, first + 1, 1));
                }
                TU_OK(vae_rng_normal(gb, eps, n * L));
                vae_epoch_stats sa = {sizeof sa}, sb = {sizeof sb};
                TU_OK(vae_elbo_evaluate(ctx, m, e, x, n, NULL, ga, pa, &sa));
                TU_OK(vae_elbo_evaluate(ctx, m, e, x, n, eps, NULL, pb, &sb));
                if (memcmp(pa, pb, n * sizeof *pa) != 0)
                    fail_msg("%zu workers, batch %zu, spare %d: the generator's noise is not "
                             "vae_rng_normal's",
                             workers, n, spare);
                float na[3], nb[3];
                TU_OK(vae_rng_normal(ga, na, 3));
                TU_OK(vae_rng_normal(gb, nb, 3));
                assert_memory_equal(na, nb, sizeof na);
                vae_rng_free(ga);
                vae_rng_free(gb);
            }
        vae_context_free(ctx);
    }
    free(x);
    free(eps);
    free(pa);
    free(pb);
    vae_elbo_free(e);
    vae_model_free(m);
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
    TU_EXPECT_ERR(vae_elbo_set_param(e, 6, 1.0), VAE_ERR_INVALID, fs);
    TU_EXPECT_ERR(vae_elbo_get_param(NULL, VAE_ELBO_BETA, &v), VAE_ERR_INVALID, fg);
    TU_EXPECT_ERR(vae_elbo_get_param(e, VAE_ELBO_BETA, NULL), VAE_ERR_INVALID, fg);
    TU_EXPECT_ERR(vae_elbo_get_param(e, 0, &v), VAE_ERR_INVALID, fg);
    TU_EXPECT_ERR(vae_elbo_get_param(e, 6, &v), VAE_ERR_INVALID, fg);

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

    /* objective: exactly one of the three values. */
    const double bad_obj[] = {3.0, -1.0, 0.5, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad_obj / sizeof bad_obj[0]; i++) {
        TU_EXPECT_ERR(vae_elbo_set_param(e, VAE_ELBO_OBJECTIVE, bad_obj[i]), VAE_ERR_INVALID,
                      fs);
        TU_OK(vae_elbo_get_param(e, VAE_ELBO_OBJECTIVE, &v));
        assert_true(v == VAE_OBJECTIVE_ELBO);
    }
    TU_OK(vae_elbo_set_param(e, VAE_ELBO_OBJECTIVE, VAE_OBJECTIVE_IWAE));
    TU_OK(vae_elbo_get_param(e, VAE_ELBO_OBJECTIVE, &v));
    assert_true(v == VAE_OBJECTIVE_IWAE);
    TU_OK(vae_elbo_set_param(e, VAE_ELBO_OBJECTIVE, VAE_OBJECTIVE_AUTOENCODER));
    TU_OK(vae_elbo_get_param(e, VAE_ELBO_OBJECTIVE, &v));
    assert_true(v == VAE_OBJECTIVE_AUTOENCODER);

    /* The settings of 1.2: defaults, bounds, and a refused value changes
     * nothing. */
    static const struct {
        int param;
        double def, good, bad[6];
        const char *needle;
    } p12[] = {
        {VAE_ELBO_SAMPLES, 1.0, 4096.0, {0.0, 4097.0, 1.5, NAN, INFINITY, -1.0},
         "samples must be a whole number from 1 to 4096"},
        {VAE_ELBO_WARMUP, 0.0, 9007199254740992.0, {-1.0, 0.5, 9007199254740994.0, NAN,
                                                    INFINITY, -INFINITY},
         "warm-up must be a whole number of steps"},
        {VAE_ELBO_FREE_BITS, 0.0, 1e6, {-1e-30, 1.000001e6, NAN, INFINITY, -INFINITY, -1.0},
         "free bits must be from 0 to 1e6"},
    };
    for (size_t q = 0; q < sizeof p12 / sizeof p12[0]; q++) {
        vae_elbo *f = NULL;
        TU_OK(vae_elbo_create(&f));
        TU_OK(vae_elbo_get_param(f, p12[q].param, &v));
        assert_true(v == p12[q].def);
        TU_OK(vae_elbo_set_param(f, p12[q].param, p12[q].good));
        for (size_t i = 0; i < 6; i++) {
            TU_EXPECT_ERR_MSG(vae_elbo_set_param(f, p12[q].param, p12[q].bad[i]),
                              VAE_ERR_INVALID, "vae_elbo_set_param", p12[q].needle);
            TU_OK(vae_elbo_get_param(f, p12[q].param, &v));
            assert_true(v == p12[q].good);
        }
        vae_elbo_free(f);
    }
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

/* ---- the continuous Bernoulli ---------------------------------------------
 * Reference, in long double and in the form of the definition rather than
 * the library's: -log p(x|l) = BCE(l, x) - log C(l), C(l) = l / tanh(l/2)
 * (C(0) = 2); d/dl = sigmoid(l) - x - (1/l - 1/sinh l); E[x] = 1/(1 - e^-l)
 * - 1/l (1/2 at 0). Long double keeps the cancellations of these forms
 * (1/l - 1/sinh l near 0) below 1e-13 absolute at the logits used here. */
static long double cb_nll_ref(long double l, long double x)
{
    long double bce = (l > 0 ? l : 0) - l * x + log1pl(expl(-fabsl(l)));
    long double logc = l == 0 ? logl(2.0L) : logl(l / tanhl(l / 2));
    return bce - logc;
}

static long double cb_grad_ref(long double l, long double x)
{
    long double g = l == 0 ? 0 : 1 / l - 1 / sinhl(l);
    return 1 / (1 + expl(-l)) - x - g;
}

static long double cb_mean_ref(long double l)
{
    /* Below 1e-6 the two terms cancel to nothing: 1/2 + l/12 is exact there. */
    return fabsl(l) < 1e-6L ? 0.5L + l / 12 : 1 / -expm1l(-l) - 1 / l;
}

/* Logits in both tails, on both sides of 0, below and above the series'
 * switch at |l| = 1.5; targets at both ends and inside. */
static const float CB_L[] = {-30.0f, -8.0f, -1.0f, -1e-3f, 0.0f, 1e-5f, 0.3f, 5.0f, 40.0f};
static const float CB_X[] = {0.0f, 0.2f, 0.5f, 1.0f};
enum { CB_NL = sizeof CB_L / sizeof CB_L[0], CB_NX = sizeof CB_X / sizeof CB_X[0] };

/* A continuous Bernoulli MLP whose decoder ignores z: the last layer's
 * weights are 0 and its biases the logits, so out = logits for every input
 * and d recon / d bias_j is the per-value gradient. With zero_head the
 * posterior is N(0, I) for every input, the prior itself. */
static vae_model *cb_pinned(size_t d, const float *logits, int zero_head)
{
    enum { H = 3, L = 2 };
    const layout o = layout_of(d, H, L);
    vae_model *m = mlp1(d, H, L, VAE_ACT_TANH, VAE_LIKELIHOOD_CONTINUOUS_BERNOULLI, 17);
    assert_int_equal(vae_model_likelihood(m), VAE_LIKELIHOOD_CONTINUOUS_BERNOULLI);
    float *p = vae_model_params(m, NULL);
    memset(p + o.out_w, 0, d * H * sizeof(float));
    memcpy(p + o.out_b, logits, d * sizeof(float));
    if (zero_head)
        memset(p + o.head_w, 0, (2 * L * H + 2 * L) * sizeof(float));
    return m;
}

/* The loss against the reference, and the gradient d(-log p)/dl against the
 * reference's closed form, a central difference of the reference (long
 * double, h = 1e-4: truncation h^2/6 |A'''| < 2e-10 with A''' <= 0.1), and a
 * central difference of the library's own float loss, for every pair of
 * CB_L x CB_X. One sample of D = 36 values, value j = (logit j / 4,
 * target j % 4); batch 1, so the gradient is not scaled. */
static void test_cb_gradient_finite_differences(void **state)
{
    (void)state;
    enum { D = CB_NL * CB_NX, H = 3, L = 2 };
    const layout o = layout_of(D, H, L);
    float logits[D], x[D];
    for (size_t j = 0; j < D; j++) {
        logits[j] = CB_L[j / CB_NX];
        x[j] = CB_X[j % CB_NX];
    }
    vae_model *m = cb_pinned(D, logits, 0);
    float *p = vae_model_params(m, NULL);
    vae_elbo *ae = objective(1.0, VAE_OBJECTIVE_AUTOENCODER);
    vae_trainer *t = trainer(m, ae, 1);
    const vae_epoch_stats st = forward_backward(t, x, 1, NULL);
    const float *g = vae_trainer_grads(t, NULL);

    /* The loss: each value to a few float ulps of its two parts (a (1 - x)
     * or a x, and log((1 - e^-a)/a)), both at most |l| + |-log p| in size. */
    double ref = 0.0, scale = 0.0, worst_g = 0.0, worst_fd = 0.0, worst_fdl = 0.0;
    for (size_t j = 0; j < D; j++) {
        const long double r = cb_nll_ref(logits[j], x[j]);
        ref += (double)r;
        scale += 2.0 * fabs((double)logits[j]) + (double)fabsl(r);
    }
    TU_CLOSE(st.recon, ref, 0.0, 3.0 * FLT_EPSILON * scale);
    assert_true(st.loss == st.recon);

    for (size_t j = 0; j < D; j++) {
        const long double l = logits[j], xj = x[j];
        const double gj = g[o.out_b + j];
        /* E[x] - x: the mean within 2.1 ulp and two roundings, all in
         * [0, 1]: 2.5e-7 absolute (measured 3.9e-8). */
        const double an = (double)cb_grad_ref(l, xj);
        worst_g = fmax(worst_g, fabs(gj - an));
        if (!(fabs(gj - an) <= 2.5e-7))
            fail_msg("l = %g, x = %g: gradient %.9g, reference %.12g", (double)logits[j],
                     (double)x[j], gj, an);
        const long double hl = 1e-4L;
        const double fd = (double)((cb_nll_ref(l + hl, xj) - cb_nll_ref(l - hl, xj)) / (2 * hl));
        worst_fd = fmax(worst_fd, fabs(gj - fd));
        if (!(fabs(gj - fd) <= 2.5e-7))
            fail_msg("l = %g, x = %g: gradient %.9g, difference of the reference %.12g",
                     (double)logits[j], (double)x[j], gj, fd);

        /* The library's own loss, value j moved by +-h in float: the float
         * terms' rounding (half an ulp of values up to |l| + 4, on both
         * sides) over the step, plus the truncation h^2/6 A''' (2e-6 at
         * h = 1e-2). */
        const float hf = 1e-2f, lp = logits[j] + hf, lm = logits[j] - hf;
        double lv[2];
        for (int side = 0; side < 2; side++) {
            p[o.out_b + j] = side ? lm : lp;
            lv[side] = evaluate(m, ae, x, 1, NULL, NULL, NULL).recon;
        }
        p[o.out_b + j] = logits[j];
        const double step = (double)lp - (double)lm, fdl = (lv[0] - lv[1]) / step;
        const double tol = 2.0 * FLT_EPSILON * (fabs((double)logits[j]) + 4.0) / step + 5e-6;
        worst_fdl = fmax(worst_fdl, fabs(gj - fdl));
        if (!(fabs(gj - fdl) <= tol))
            fail_msg("l = %g, x = %g: gradient %.9g, difference of the loss %.9g (tol %.3g)",
                     (double)logits[j], (double)x[j], gj, fdl, tol);
    }
    print_message("continuous Bernoulli gradient: within %.3g of the closed form, %.3g of "
                  "the reference's differences, %.3g of the float loss's\n",
                  worst_g, worst_fd, worst_fdl);
    /* The gradient of the decoder's bias is the mean over the batch of
     * E[x] - x: with two samples, the mean of the two. */
    float x2[2 * D];
    memcpy(x2, x, sizeof x);
    for (size_t j = 0; j < D; j++)
        x2[D + j] = 1.0f - x[j];
    TU_OK(vae_trainer_zero_grads(t));
    forward_backward(t, x2, 2, NULL);
    for (size_t j = 0; j < D; j++) {
        const double want =
            (double)(cb_grad_ref(logits[j], x2[j]) + cb_grad_ref(logits[j], x2[D + j])) / 2;
        TU_CLOSE(g[o.out_b + j], want, 0.0, 2.5e-7);
    }
    vae_trainer_free(t);
    vae_elbo_free(ae);
    vae_model_free(m);
}

/* Simpson's rule over [0, 1] with 2048 intervals: 2049 nodes i/2048, each
 * exact in float, so that the library sees the nodes themselves. */
enum { SIMPSON_N = 2048 };

static double simpson(const double *f)
{
    double s = f[0] + f[SIMPSON_N];
    for (size_t i = 1; i < SIMPSON_N; i++)
        s += (i % 2 ? 4.0 : 2.0) * f[i];
    return s / (3.0 * SIMPSON_N);
}

/* p(x|l) as the library computes it (exp of minus its loss) integrates to
 * 1 over [0, 1], and its mean is what vae_decode, vae_reconstruct and
 * vae_sample return. Simpson's error is about (h l)^4 / 180 relative,
 * below 1e-9 at l = 40. */
static void test_cb_normalizer_and_mean(void **state)
{
    (void)state;
    enum { B = SIMPSON_N + 1 };
    float *x = tu_alloc(B, sizeof *x);
    double *per = tu_alloc(B, sizeof *per), *f = tu_alloc(B, sizeof *f),
           *xf = tu_alloc(B, sizeof *xf);
    for (size_t i = 0; i < B; i++)
        x[i] = (float)i / SIMPSON_N;
    vae_elbo *ae = objective(1.0, VAE_OBJECTIVE_AUTOENCODER);
    vae_rng *rng = NULL;
    TU_OK(vae_rng_create(&rng, 5));
    double worst = 0.0, worst_ref = 0.0, worst_mean = 0.0;
    for (size_t li = 0; li < CB_NL; li++) {
        const float l = CB_L[li];
        vae_model *m = cb_pinned(1, &l, 0);
        evaluate(m, ae, x, B, NULL, NULL, per);
        for (size_t i = 0; i < B; i++) {
            f[i] = exp(-per[i]);
            xf[i] = x[i] * f[i];
        }
        const double integral = simpson(f), mean = simpson(xf);
        /* The same integral of the reference density. */
        for (size_t i = 0; i < B; i++)
            f[i] = exp(-(double)cb_nll_ref(l, x[i]));
        const double integral_ref = simpson(f);
        worst = fmax(worst, fabs(1.0 - integral));
        worst_ref = fmax(worst_ref, fabs(1.0 - integral_ref));
        if (!(fabs(1.0 - integral) < 1e-6) || !(fabs(1.0 - integral_ref) < 1e-6))
            fail_msg("l = %g: the density integrates to %.12g (reference %.12g)", (double)l,
                     integral, integral_ref);

        /* The mean: vae_decode (any z), vae_reconstruct and vae_sample. */
        float z[2] = {0.3f, -1.0f}, dec = -1.0f, rec[2] = {-1.0f, -1.0f}, smp[3];
        TU_OK(vae_decode(g_ctx, m, z, 1, &dec));
        TU_OK(vae_reconstruct(g_ctx, m, x + 100, 2, rec));
        TU_OK(vae_sample(g_ctx, m, rng, 3, smp));
        assert_true(rec[0] == dec && rec[1] == dec);
        assert_true(smp[0] == dec && smp[1] == dec && smp[2] == dec);
        assert_true(dec >= 0.0f && dec <= 1.0f);
        worst_mean = fmax(worst_mean, fabs(dec - mean));
        TU_CLOSE(dec, mean, 0.0, 1e-6);
        /* ...and the closed form, to float rounding. */
        TU_CLOSE(dec, (double)cb_mean_ref(l), 3e-7, 0.0);
        vae_model_free(m);
    }
    print_message("continuous Bernoulli: |1 - integral| at most %.3g (reference %.3g), means "
                  "within %.3g of the numerical ones\n",
                  worst, worst_ref, worst_mean);
    vae_rng_free(rng);
    vae_elbo_free(ae);
    free(x);
    free(per);
    free(f);
    free(xf);
}

/* The decoded mean of extreme logits: in [0, 1] and close to the closed
 * form (1/|l| for l -> -inf, 1 - 1/l for l -> +inf). */
static void test_cb_mean_extremes(void **state)
{
    (void)state;
    const float l[] = {-FLT_MAX, -1e30f, -1e4f, -100.0f, -88.0f, -87.0f, -20.0f, -1.5f,
                       -1e-30f,  -0.0f,  0.0f,  1e-30f, 1.5f,   20.0f,  87.0f,  88.0f,
                       100.0f,   1e4f,   1e30f, FLT_MAX};
    enum { N = sizeof l / sizeof l[0] };
    vae_model *m = cb_pinned(N, l, 0);
    float z[2] = {0.0f, 0.0f}, out[N];
    TU_OK(vae_decode(g_ctx, m, z, 1, out));
    for (size_t i = 0; i < N; i++) {
        if (!(out[i] >= 0.0f && out[i] <= 1.0f))
            fail_msg("l = %g: mean %.9g is outside [0, 1]", (double)l[i], (double)out[i]);
        const long double li = l[i];
        const long double want = fabsl(li) > 1e4L ? (li > 0 ? 1 - 1 / li : -1 / li)
                                                  : cb_mean_ref(li);
        TU_CLOSE(out[i], (double)want, 3e-7, 1e-38);
    }
    /* Exactly 1/2 at 0 and symmetric: E[x | -l] = 1 - E[x | l]. */
    assert_true(out[9] == 0.5f && out[10] == 0.5f);
    for (size_t i = 0; i < N / 2; i++)
        TU_CLOSE(out[i], 1.0 - out[N - 1 - i], 0.0, 6e-8);
    vae_model_free(m);
}

/* Values just below the switch at |l| = 1.5 come from the series, the
 * switch itself from the closed forms. The loss term, the gradient and the
 * mean on the two sides agree to a few float ulps (for the term, of its
 * parts a w and log((1 - e^-a)/a), both below |l| + |-log p|), and each
 * side is within as much of the reference. */
static void test_cb_series_switch(void **state)
{
    (void)state;
    const float sw = 1.5f, below = nextafterf(sw, 0.0f);
    const float l[4] = {below, sw, -below, -sw};
    vae_elbo *ae = objective(1.0, VAE_OBJECTIVE_AUTOENCODER);
    const layout o = layout_of(1, 3, 2);
    double term[4][CB_NX], grad[4][CB_NX], worst_t = 0.0, worst_g = 0.0;
    float mean[4];
    for (size_t k = 0; k < 4; k++) {
        vae_model *m = cb_pinned(1, &l[k], 0);
        vae_trainer *t = trainer(m, ae, 1);
        evaluate(m, ae, CB_X, CB_NX, NULL, NULL, term[k]);
        for (size_t i = 0; i < CB_NX; i++) {
            TU_OK(vae_trainer_zero_grads(t));
            forward_backward(t, &CB_X[i], 1, NULL);
            grad[k][i] = vae_trainer_grads(t, NULL)[o.out_b];
        }
        float z[2] = {0.0f, 0.0f};
        TU_OK(vae_decode(g_ctx, m, z, 1, &mean[k]));
        vae_trainer_free(t);
        vae_model_free(m);
    }
    const double dl = (double)sw - (double)below;
    for (size_t k = 0; k < 4; k += 2) {
        for (size_t i = 0; i < CB_NX; i++) {
            const double x = CB_X[i], scale = 2.0 * sw + fabs(term[k][i]);
            /* Plus the true change over one ulp of l: |d/dl| <= 1 for the
             * term, Var[x] <= 1/12 for the gradient and the mean. */
            const double tol_t = 4.0 * FLT_EPSILON * scale + dl;
            const double tol_g = 4.0 * FLT_EPSILON + dl / 12.0;
            worst_t = fmax(worst_t, fabs(term[k][i] - term[k + 1][i]) / (FLT_EPSILON * scale));
            worst_g = fmax(worst_g, fabs(grad[k][i] - grad[k + 1][i]) / FLT_EPSILON);
            if (!(fabs(term[k][i] - term[k + 1][i]) <= tol_t) ||
                !(fabs(grad[k][i] - grad[k + 1][i]) <= tol_g))
                fail_msg("l = %a | %a, x = %g: terms %.9g | %.9g, gradients %.9g | %.9g",
                         (double)l[k], (double)l[k + 1], x, term[k][i], term[k + 1][i],
                         grad[k][i], grad[k + 1][i]);
            for (size_t side = 0; side < 2; side++) {
                const float lv = l[k + side];
                TU_CLOSE(term[k + side][i], (double)cb_nll_ref(lv, x), 0.0,
                         4.0 * FLT_EPSILON * scale);
                TU_CLOSE(grad[k + side][i], (double)cb_grad_ref(lv, x), 0.0, 4.0 * FLT_EPSILON);
            }
        }
        TU_CLOSE(mean[k], mean[k + 1], 0.0, 2.0 * FLT_EPSILON + dl / 12.0);
        TU_CLOSE(mean[k], (double)cb_mean_ref(l[k]), 2.0 * FLT_EPSILON, 0.0);
        TU_CLOSE(mean[k + 1], (double)cb_mean_ref(l[k + 1]), 2.0 * FLT_EPSILON, 0.0);
    }
    print_message("continuous Bernoulli switch: terms differ by at most %.3g FLT_EPSILON of "
                  "their parts, gradients by %.3g FLT_EPSILON\n",
                  worst_t, worst_g);
    vae_elbo_free(ae);
}

/* Distance of a float from a long double reference, in ulps of the
 * reference rounded to float. */
static double ulps_from(double v, long double ref)
{
    const float rf = (float)ref;
    const double ulp = (double)nextafterf(fabsf(rf), INFINITY) - (double)fabsf(rf);
    return (double)(fabsl((long double)v - ref) / ulp);
}

/* n(a) = log((1 - e^-a)/a) and the mean over a = |l| from 1e-7 to 1e3 and
 * densely around the switch, to a few ulps: n is the whole loss term at
 * (l < 0, x = 0) and at (l > 0, x = 1), h = E[x | l] for l < 0 is the
 * decoded mean. Measured over 4e5 points in [1e-8, 1e4]: n within 2.4 ulp,
 * h within 2.1; a switch at 1.0 would leave 4.9 ulp in the closed forms,
 * one at 2.0 seven in the six-term series. */
static void test_cb_accuracy_sweep(void **state)
{
    (void)state;
    enum { NA = 301, N = 2 * NA };
    float *l = tu_alloc(N, sizeof *l), *mean = tu_alloc(N, sizeof *mean);
    for (size_t k = 0; k < NA; k++) {
        /* 201 points log-spaced over [1e-7, 1e3], 100 over [1.3, 1.7]. */
        const double a = k < 201 ? pow(10.0, -7.0 + 10.0 * (double)k / 200.0)
                                 : 1.3 + 0.4 * (double)(k - 201) / 99.0;
        l[2 * k] = -(float)a;
        l[2 * k + 1] = (float)a;
    }
    vae_elbo *ae = objective(1.0, VAE_OBJECTIVE_AUTOENCODER);
    double worst_n = 0.0, worst_h = 0.0;
    for (size_t i = 0; i < N; i++) {
        vae_model *m = cb_pinned(1, &l[i], 0);
        const float x = l[i] < 0.0f ? 0.0f : 1.0f;
        double term = 0.0;
        evaluate(m, ae, &x, 1, NULL, NULL, &term);
        const double e = ulps_from(term, cb_nll_ref(l[i], x));
        worst_n = fmax(worst_n, e);
        if (!(e <= 3.0))
            fail_msg("l = %.9g, x = %g: -log p = %.9g is %.3g ulp from %.12Lg", (double)l[i],
                     (double)x, term, e, cb_nll_ref(l[i], x));
        vae_model_free(m);
    }
    vae_model *m = cb_pinned(N, l, 0);
    float z[2] = {0.0f, 0.0f};
    TU_OK(vae_decode(g_ctx, m, z, 1, mean));
    for (size_t i = 0; i < N; i++) {
        const double e = ulps_from(mean[i], cb_mean_ref(l[i]));
        worst_h = fmax(worst_h, e);
        if (!(e <= 3.0))
            fail_msg("l = %.9g: mean %.9g is %.3g ulp from %.12Lg", (double)l[i],
                     (double)mean[i], e, cb_mean_ref(l[i]));
    }
    print_message("continuous Bernoulli: normalizer within %.3g ulp, mean within %.3g ulp\n",
                  worst_n, worst_h);
    vae_model_free(m);
    vae_elbo_free(ae);
    free(l);
    free(mean);
}

/* vae_log_likelihood uses the same normalized density: with the posterior
 * pinned to the prior and the decoder to fixed logits, every importance
 * weight is p(x|l) and the estimate is exactly -recon, whatever k. It is
 * positive where the density exceeds 1 (grey levels near the mode of a
 * sharp logit), which a cross-entropy never is, and it differs from the
 * Bernoulli cross-entropy by sum_j log C(l_j). */
static void test_cb_log_likelihood(void **state)
{
    (void)state;
    enum { D = 4, B = 3 };
    const float logits[D] = {12.0f, -6.0f, 0.25f, 30.0f};
    const float x[B * D] = {0.95f, 0.05f, 0.5f, 1.0f, 0.9f, 0.2f,
                            0.4f,  0.97f, 0.1f, 0.9f, 0.0f, 0.5f};
    vae_model *m = cb_pinned(D, logits, 1);
    vae_elbo *ae = objective(1.0, VAE_OBJECTIVE_AUTOENCODER);
    double per[B], ll[B], ll9[B];
    evaluate(m, ae, x, B, NULL, NULL, per);
    vae_rng *rng = NULL;
    TU_OK(vae_rng_create(&rng, 9));
    TU_OK(vae_log_likelihood(g_ctx, m, x, B, 1, rng, ll));
    TU_OK(vae_log_likelihood(g_ctx, m, x, B, 9, rng, ll9));
    long double logc = 0;
    for (size_t j = 0; j < D; j++)
        logc += logl(logits[j] / tanhl(logits[j] / 2));
    for (size_t i = 0; i < B; i++) {
        long double ref = 0, bce = 0;
        for (size_t j = 0; j < D; j++) {
            ref -= cb_nll_ref(logits[j], x[i * D + j]);
            bce -= (long double)bce_direct(logits[j], x[i * D + j]);
        }
        assert_true(ll[i] == -per[i]);
        TU_CLOSE(ll9[i], ll[i], 1e-15, 1e-15);
        TU_CLOSE(ll[i], (double)ref, 1e-6, 1e-6);
        TU_CLOSE(ll[i] - (double)bce, (double)logc, 1e-6, 1e-6);
    }
    assert_true(ll[0] > 0.0 && ll[1] > 0.0); /* near the modes: density above 1 */
    assert_true(ll[2] < 0.0);                /* far from them */
    vae_rng_free(rng);
    vae_elbo_free(ae);
    vae_model_free(m);
}

/* A continuous Bernoulli model trains on grey-level data (the loss of a
 * fixed batch and noise falls), and survives vae_model_save_mem and
 * vae_model_load_mem with its likelihood, parameters and outputs. The
 * value 2 is accepted; 3 and -1 are refused by both constructors. */
static void test_cb_train_and_round_trip(void **state)
{
    (void)state;
    enum { D = 16, L = 2, B = 32 };
    const size_t hidden[1] = {12};
    vae_model *m = NULL;
    TU_OK(vae_model_create_mlp(&m, D, hidden, 1, L, VAE_ACT_TANH,
                               VAE_LIKELIHOOD_CONTINUOUS_BERNOULLI, 21));
    assert_int_equal(vae_model_likelihood(m), VAE_LIKELIHOOD_CONTINUOUS_BERNOULLI);
    float x[B * D], eps[B * L];
    tu_rng r = {23};
    for (size_t i = 0; i < B; i++) {
        const double phase = tu_range(&r, 0.0, 6.283185307179586), amp = tu_range(&r, 0.1, 0.45);
        for (size_t j = 0; j < D; j++)
            x[i * D + j] = (float)(0.5 + amp * sin(phase + 0.7 * (double)j));
    }
    for (size_t i = 0; i < B * L; i++)
        eps[i] = (float)tu_gauss(&r);
    vae_elbo *e = objective(1.0, VAE_OBJECTIVE_ELBO);
    vae_optimizer *adam = NULL;
    TU_OK(vae_optimizer_create(&adam, VAE_OPTIMIZER_ADAM));
    TU_OK(vae_optimizer_set_param(adam, VAE_OPT_LR, 1e-2));
    vae_trainer *t = NULL;
    TU_OK(vae_trainer_create(&t, m, e, adam, g_ctx, 25));
    const vae_epoch_stats before = evaluate(m, e, x, B, eps, NULL, NULL);
    vae_epoch_stats st = {sizeof st};
    for (int step = 0; step < 60; step++)
        TU_OK(vae_trainer_step(t, x, B, &st));
    const vae_epoch_stats after = evaluate(m, e, x, B, eps, NULL, NULL);
    print_message("continuous Bernoulli: loss %.4f before 60 Adam steps, %.4f after\n",
                  before.loss, after.loss);
    if (!(after.loss < before.loss - 1.0))
        fail_msg("loss %.6g before training, %.6g after 60 steps", before.loss, after.loss);
    vae_trainer_free(t);
    vae_optimizer_free(adam);

    size_t size = 0, n = 0, n2 = 0;
    unsigned char *bytes = tu_model_bytes(m, &size);
    vae_model *back = NULL;
    TU_OK(vae_model_load_mem(&back, bytes, size));
    assert_int_equal(vae_model_likelihood(back), VAE_LIKELIHOOD_CONTINUOUS_BERNOULLI);
    const float *p = vae_model_params(m, &n), *p2 = vae_model_params(back, &n2);
    assert_int_equal(n, n2);
    assert_memory_equal(p, p2, n * sizeof *p);
    assert_true(evaluate(back, e, x, B, eps, NULL, NULL).loss == after.loss);
    float out[B * D], out2[B * D];
    TU_OK(vae_reconstruct(g_ctx, m, x, B, out));
    TU_OK(vae_reconstruct(g_ctx, back, x, B, out2));
    assert_memory_equal(out, out2, sizeof out);
    for (size_t i = 0; i < B * D; i++)
        assert_true(out[i] >= 0.0f && out[i] <= 1.0f);
    /* Its density lives on [0, 1]: a value outside is refused, as for the
     * Bernoulli, by every call that reads x. */
    x[3 * D + 5] = 1.5f;
    float mu[B * L], lv[B * L];
    TU_EXPECT_ERR_MSG(vae_encode(g_ctx, m, x, B, mu, lv), VAE_ERR_INVALID, "vae_encode",
                      "x[3][5] = 1.5 is outside [0, 1]");
    TU_EXPECT_ERR_MSG(vae_reconstruct(g_ctx, m, x, B, out), VAE_ERR_INVALID, "vae_reconstruct",
                      "continuous Bernoulli");
    x[3 * D + 5] = -0.25f;
    vae_epoch_stats bad_st = {sizeof bad_st};
    TU_EXPECT_ERR_MSG(vae_elbo_evaluate(g_ctx, m, e, x, B, eps, NULL, NULL, &bad_st),
                      VAE_ERR_INVALID, "vae_elbo_evaluate", "outside [0, 1]");
    x[3 * D + 5] = 0.5f;
    /* Saved again: the same bytes. */
    size_t size2 = 0;
    unsigned char *bytes2 = tu_model_bytes(back, &size2);
    assert_int_equal(size2, size);
    assert_memory_equal(bytes2, bytes, size);
    free(bytes);
    free(bytes2);
    vae_model_free(back);
    vae_elbo_free(e);
    vae_model_free(m);

    /* 2 is the last likelihood value known. */
    vae_model *bad = (vae_model *)&bad;
    const int unknown[] = {3, -1};
    for (size_t i = 0; i < 2; i++) {
        char want[48];
        snprintf(want, sizeof want, "unknown likelihood %d", unknown[i]);
        TU_EXPECT_ERR_MSG(vae_model_create(&bad, D, L, unknown[i]), VAE_ERR_INVALID,
                          "vae_model_create", want);
        assert_null(bad);
        bad = (vae_model *)&bad;
        TU_EXPECT_ERR_MSG(vae_model_create_mlp(&bad, D, hidden, 1, L, VAE_ACT_TANH, unknown[i],
                                               1),
                          VAE_ERR_INVALID, "vae_model_create_mlp", want);
        assert_null(bad);
    }
    TU_OK(vae_model_create(&bad, D, L, VAE_LIKELIHOOD_CONTINUOUS_BERNOULLI));
    assert_int_equal(vae_model_likelihood(bad), 2);
    vae_model_free(bad);
}

/* ---- several draws, IWAE, free bits and warm-up (1.2) ------------------ */

static vae_elbo *objective_k(double beta, int obj, size_t k)
{
    vae_elbo *e = objective(beta, obj);
    TU_OK(vae_elbo_set_param(e, VAE_ELBO_SAMPLES, (double)k));
    return e;
}

/* The IWAE loss and the k-draw ELBO recomputed from pieces the API gives
 * one by one: the reconstruction term of every draw (a one-draw pass with
 * beta 0 over the inputs repeated k times, with the same noise rows), and
 * mu and logvar from vae_encode; log q - log p = 1/2 sum (z^2 - eps^2 -
 * logvar) with z = mu + exp(logvar/2) eps. */
static void test_iwae_value(void **state)
{
    (void)state;
    enum { D = 7, H = 6, L = 3, B = 5, K = 4 };
    vae_model *m = mlp1(D, H, L, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI, 21);
    size_t np = 0;
    float *p = vae_model_params(m, &np);
    for (size_t i = 0; i < np; i++)
        p[i] *= 2.0f;
    tu_rng r = {77};
    float x[B * D], xr[B * K * D], eps[B * K * L], mu[B * L], lv[B * L];
    tu_fill_range(&r, x, B * D, 0.0, 1.0);
    for (size_t i = 0; i < B * K * L; i++)
        eps[i] = (float)tu_gauss(&r);
    for (size_t i = 0; i < B; i++)
        for (size_t q = 0; q < K; q++)
            memcpy(xr + (i * K + q) * D, x + i * D, sizeof(float) * D);
    TU_OK(vae_encode(g_ctx, m, x, B, mu, lv));
    vae_elbo *rec_only = objective(0.0, VAE_OBJECTIVE_ELBO);
    double rec[B * K];
    evaluate(m, rec_only, xr, B * K, eps, NULL, rec);
    vae_elbo *iw = objective_k(0.7, VAE_OBJECTIVE_IWAE, K);
    vae_elbo *el = objective_k(0.7, VAE_OBJECTIVE_ELBO, K);
    const double beta = beta_of(iw); /* 0.7 rounded to float */
    double per_iw[B], per_el[B];
    vae_epoch_stats si = evaluate(m, iw, x, B, eps, NULL, per_iw);
    vae_epoch_stats se = evaluate(m, el, x, B, eps, NULL, per_el);
    double sum_iw = 0.0, sum_rec = 0.0, sum_kl = 0.0;
    for (size_t i = 0; i < B; i++) {
        double lw[K], mx = -INFINITY, rmean = 0.0, kl = 0.0;
        for (size_t c = 0; c < L; c++) {
            double a = mu[i * L + c], v = lv[i * L + c];
            kl += 0.5 * (a * a + exp(v) - 1.0 - v);
        }
        for (size_t q = 0; q < K; q++) {
            double mc = 0.0;
            for (size_t c = 0; c < L; c++) {
                double e = eps[(i * K + q) * L + c], s = exp(0.5 * lv[i * L + c]);
                double z = mu[i * L + c] + s * e;
                mc += 0.5 * (z * z - e * e - lv[i * L + c]);
            }
            lw[q] = -(rec[i * K + q] + beta * mc);
            mx = lw[q] > mx ? lw[q] : mx;
            rmean += rec[i * K + q] / K;
        }
        double se_ = 0.0;
        for (size_t q = 0; q < K; q++)
            se_ += exp(lw[q] - mx);
        double ref = -(mx + log(se_ / K));
        /* float z and s in the library against double here: 1e-6 relative */
        TU_CLOSE(per_iw[i], ref, 1e-6, 1e-6);
        TU_CLOSE(per_el[i], rmean + beta * kl, 1e-6, 1e-6);
        sum_iw += per_iw[i];
        sum_rec += rmean;
        sum_kl += kl;
    }
    TU_CLOSE(si.loss, sum_iw / B, 1e-12, 0.0);
    TU_CLOSE(si.recon, sum_rec / B, 1e-6, 0.0);
    TU_CLOSE(si.kl, sum_kl / B, 1e-6, 0.0);
    /* Both report the same recon and KL; only the loss differs. */
    assert_true(si.recon == se.recon && si.kl == se.kl);
    TU_CLOSE(se.loss, se.recon + beta * se.kl, 1e-12, 0.0);
    /* The trainer's pass reports the same loss as the evaluation. */
    vae_trainer *t = trainer(m, iw, 3);
    vae_epoch_stats st = forward_backward(t, x, B, eps);
    assert_true(st.loss == si.loss && st.recon == si.recon && st.kl == si.kl);
    vae_trainer_free(t);
    vae_elbo_free(rec_only);
    vae_elbo_free(iw);
    vae_elbo_free(el);
    vae_model_free(m);
}

/* One trainer pass with the given context's workers; returns the loss and
 * copies the gradient. */
static double pass_on(vae_context *ctx, vae_model *m, vae_elbo *e, const float *x, size_t n,
                      uint64_t seed, float *grad)
{
    vae_trainer *t = NULL;
    TU_OK(vae_trainer_create(&t, m, e, g_opt, ctx, seed));
    vae_epoch_stats st = forward_backward(t, x, n, NULL);
    size_t ng = 0;
    const float *g = vae_trainer_grads(t, &ng);
    memcpy(grad, g, ng * sizeof *grad);
    vae_trainer_free(t);
    return st.loss;
}

/* Several draws, IWAE and free bits give the same bits with 1, 2 and 3
 * workers (batches of 3 to 5 blocks of rows). */
static void test_draws_worker_invariant(void **state)
{
    (void)state;
    enum { D = 12, H = 9, L = 4, B = 45 };
    vae_model *m = mlp1(D, H, L, VAE_ACT_SOFTPLUS, VAE_LIKELIHOOD_BERNOULLI, 5);
    size_t np = 0;
    vae_model_params(m, &np);
    tu_rng r = {9};
    float x[B * D];
    tu_fill_range(&r, x, B * D, 0.0, 1.0);
    TU_OK(vae_blas_set_threads(1));
    vae_elbo *es[3] = {objective_k(1.0, VAE_OBJECTIVE_IWAE, 5),
                       objective_k(0.5, VAE_OBJECTIVE_ELBO, 7),
                       objective_k(1.0, VAE_OBJECTIVE_ELBO, 3)};
    TU_OK(vae_elbo_set_param(es[2], VAE_ELBO_FREE_BITS, 0.05));
    float *g1 = tu_alloc(np, sizeof *g1), *g2 = tu_alloc(np, sizeof *g2);
    for (size_t q = 0; q < 3; q++) {
        double l1 = pass_on(g_ctx, m, es[q], x, B, 11, g1);
        for (size_t T = 2; T <= 3; T++) {
            vae_context *c = NULL;
            TU_OK(vae_context_create(&c));
            TU_OK(vae_context_set_threads(c, T));
            double l2 = pass_on(c, m, es[q], x, B, 11, g2);
            assert_true(l1 == l2);
            assert_memory_equal(g1, g2, np * sizeof *g1);
            vae_context_free(c);
        }
        assert_true(tu_first_nonzero(g1, np) < np);
    }
    for (size_t q = 0; q < 3; q++)
        vae_elbo_free(es[q]);
    free(g1);
    free(g2);
    vae_model_free(m);
}

/* The free-bits objective recomputed: recon from a beta-0 evaluation, and
 * beta sum_d max(lambda, KL_d) with KL_d (written to kls) from vae_encode. */
static double fb_objective(const vae_model *m, const vae_elbo *rec_only, const float *x,
                           size_t n, const float *eps, double beta, double lambda, double *kls)
{
    const size_t L = vae_model_latent_dim(m);
    float *mu = tu_alloc(n * L, sizeof *mu), *lv = tu_alloc(n * L, sizeof *lv);
    double rec = evaluate(m, rec_only, x, n, eps, NULL, NULL).recon, t = 0.0;
    TU_OK(vae_encode(g_ctx, m, x, n, mu, lv));
    for (size_t d = 0; d < L; d++) {
        double s = 0.0;
        for (size_t i = 0; i < n; i++) {
            double a = mu[i * L + d], v = lv[i * L + d];
            s += 0.5 * (a * a + exp(v) - 1.0 - v);
        }
        kls[d] = s / (double)n;
        t += kls[d] > lambda ? kls[d] : lambda;
    }
    free(mu);
    free(lv);
    return rec + beta * t;
}

/* Free bits: the trainer's loss is recon + beta sum_d max(lambda, KL_d),
 * KL_d the batch mean of dimension d (recomputed from vae_encode), and its
 * gradient matches central differences of that objective, with lambda
 * between the dimensions' KLs so that some are floored and some not. */
static void test_free_bits(void **state)
{
    (void)state;
    enum { D = 6, H = 5, L = 3, B = 9 };
    vae_model *m = mlp1(D, H, L, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI, 31);
    size_t n = 0;
    float *p = vae_model_params(m, &n);
    for (size_t i = 0; i < n; i++)
        p[i] *= 2.0f;
    tu_rng r = {5};
    float x[B * D], eps[B * L];
    tu_fill_range(&r, x, B * D, 0.0, 1.0);
    for (size_t i = 0; i < B * L; i++)
        eps[i] = (float)tu_gauss(&r);
    const double beta = (float)0.8;
    double kls[L];
    vae_elbo *rec_only = objective(0.0, VAE_OBJECTIVE_ELBO);
#define FB_OBJ(lambda) fb_objective(m, rec_only, x, B, eps, beta, (lambda), kls)
    (void)FB_OBJ(0.0);
    double lo = kls[0], hi = kls[0];
    for (size_t d = 1; d < L; d++) {
        lo = kls[d] < lo ? kls[d] : lo;
        hi = kls[d] > hi ? kls[d] : hi;
    }
    assert_true(hi - lo > 0.05); /* else no lambda separates them */
    const double lambda = (float)(0.5 * (lo + hi));
    vae_elbo *e = objective(beta, VAE_OBJECTIVE_ELBO);
    TU_OK(vae_elbo_set_param(e, VAE_ELBO_FREE_BITS, lambda));
    vae_trainer *t = trainer(m, e, 1);
    vae_epoch_stats st = forward_backward(t, x, B, eps);
    const double ref = FB_OBJ(lambda);
    TU_CLOSE(st.loss, ref, 1e-6, 0.0);
    /* recon and kl stay the plain terms; the floor shows in the loss only. */
    vae_epoch_stats plain = evaluate(m, e, x, B, eps, NULL, NULL);
    assert_true(st.recon == plain.recon && st.kl == plain.kl);
    assert_true(plain.loss == plain.recon + beta * plain.kl);
    assert_true(st.loss > plain.loss); /* a floored dimension adds lambda - KL_d > 0 */
    size_t ng = 0;
    float *g = vae_trainer_grads(t, &ng), *grad = tu_copy_floats(g, n), *p0 = tu_copy_floats(p, n);
    double *v = tu_alloc(n, sizeof *v), gnorm = 0.0;
    for (size_t i = 0; i < n; i++)
        gnorm += (double)grad[i] * grad[i];
    gnorm = sqrt(gnorm);
    const double h = 1e-2;
    for (int trial = 0; trial < 6; trial++) {
        tu_unit_direction(&r, v, n);
        double lp[2];
        for (int side = 0; side < 2; side++) {
            for (size_t i = 0; i < n; i++)
                p[i] = (float)(p0[i] + (side ? -h : h) * v[i]);
            lp[side] = FB_OBJ(lambda);
            /* the step must not cross a floor, or the difference is not a
             * derivative */
            for (size_t d = 0; d < L; d++)
                assert_true(fabs(kls[d] - lambda) > 1e-3);
        }
        memcpy(p, p0, n * sizeof *p);
        double fd = (lp[0] - lp[1]) / (2.0 * h), an = tu_dot_fd(grad, v, n);
        double tol = 2e-3 * fabs(an) + 1e-4 * gnorm;
        if (!(fabs(fd - an) <= tol))
            fail_msg("free bits trial %d: finite difference %.9g, gradient %.9g (tol %.3g)",
                     trial, fd, an, tol);
    }
#undef FB_OBJ
    /* Lambda 0 is the plain ELBO's gradient, which differs. */
    TU_OK(vae_trainer_zero_grads(t));
    TU_OK(vae_elbo_set_param(e, VAE_ELBO_FREE_BITS, 0.0));
    forward_backward(t, x, B, eps);
    assert_true(memcmp(vae_trainer_grads(t, &ng), grad, n * sizeof *grad) != 0);
    /* Above every dimension's KL, every dimension is floored: the loss is
     * recon + beta L lambda. */
    TU_OK(vae_trainer_zero_grads(t));
    TU_OK(vae_elbo_set_param(e, VAE_ELBO_FREE_BITS, hi + 1.0));
    st = forward_backward(t, x, B, eps);
    TU_CLOSE(st.loss, st.recon + beta * L * (double)(float)(hi + 1.0), 1e-12, 0.0);
    vae_trainer_free(t);
    vae_elbo_free(e);
    vae_elbo_free(rec_only);
    free(grad);
    free(p0);
    free(v);
    vae_model_free(m);
}

/* Warm-up: pass s of a trainer weighs the KL with beta min(1, (s+1)/W);
 * evaluations use beta; the schedule follows vae_trainer_steps(), so
 * passes without a step keep their weight. */
static void test_warmup(void **state)
{
    (void)state;
    enum { D = 6, H = 5, L = 2, B = 4, W = 4 };
    vae_model *m = mlp1(D, H, L, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI, 41);
    vae_elbo *e = objective(2.0, VAE_OBJECTIVE_ELBO);
    TU_OK(vae_elbo_set_param(e, VAE_ELBO_WARMUP, W));
    vae_optimizer *o = NULL;
    TU_OK(vae_optimizer_create(&o, VAE_OPTIMIZER_SGD));
    TU_OK(vae_optimizer_set_param(o, VAE_OPT_LR, 1e-9)); /* the model nearly stays put */
    vae_trainer *t = NULL;
    TU_OK(vae_trainer_create(&t, m, e, o, g_ctx, 1));
    tu_rng r = {6};
    float x[B * D], eps[B * L];
    tu_fill_range(&r, x, B * D, 0.0, 1.0);
    for (size_t i = 0; i < B * L; i++)
        eps[i] = (float)tu_gauss(&r);
    for (uint64_t s = 0; s < 7; s++) {
        assert_int_equal(vae_trainer_steps(t), s);
        for (int again = 0; again < 2; again++) {
            vae_epoch_stats st = forward_backward(t, x, B, eps);
            double want = (float)(2.0 * (s + 1 < W ? (double)(s + 1) / W : 1.0));
            TU_CLOSE(st.loss, st.recon + want * st.kl, 1e-12, 0.0);
            assert_true(st.kl > 0.0);
        }
        vae_epoch_stats ev = evaluate(m, e, x, B, eps, NULL, NULL);
        TU_CLOSE(ev.loss, ev.recon + 2.0 * ev.kl, 1e-12, 0.0);
        TU_OK(vae_trainer_apply(t));
    }
    vae_trainer_free(t);
    vae_optimizer_free(o);
    vae_elbo_free(e);
    vae_model_free(m);
}

/* Bad input of the 1.2 settings at pass time. */
static void test_draws_bad_input(void **state)
{
    (void)state;
    enum { D = 4, H = 3, L = 2, B = 3, K = 4 };
    vae_model *m = mlp1(D, H, L, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI, 51);
    vae_elbo *e = objective_k(1.0, VAE_OBJECTIVE_IWAE, K);
    float x[B * D], eps[B * K * L];
    tu_rng r = {8};
    tu_fill_range(&r, x, B * D, 0.0, 1.0);
    for (size_t i = 0; i < B * K * L; i++)
        eps[i] = (float)tu_gauss(&r);
    /* A NaN in a draw past the first n: all n k rows are checked. */
    eps[(B * K - 1) * L + 1] = NAN;
    vae_epoch_stats st = {sizeof st};
    TU_EXPECT_ERR_MSG(vae_elbo_evaluate(g_ctx, m, e, x, B, eps, NULL, NULL, &st),
                      VAE_ERR_NUMERIC, "vae_elbo_evaluate", "eps[11][1] is not finite");
    eps[(B * K - 1) * L + 1] = 0.0f;
    /* n k rows above 2^20. */
    TU_OK(vae_elbo_set_param(e, VAE_ELBO_SAMPLES, 4096));
    TU_EXPECT_ERR_MSG(vae_elbo_evaluate(g_ctx, m, e, x, 257, eps, NULL, NULL, &st),
                      VAE_ERR_INVALID, "vae_elbo_evaluate",
                      "n = 257 times the objective's samples is above 1048576");
    TU_OK(vae_elbo_set_param(e, VAE_ELBO_SAMPLES, K));
    /* IWAE with free bits trains nowhere; evaluating is fine. */
    TU_OK(vae_elbo_set_param(e, VAE_ELBO_FREE_BITS, 0.5));
    vae_trainer *t = trainer(m, e, 2);
    size_t np = 0;
    float *p = vae_model_params(m, &np), *p0 = tu_copy_floats(p, np);
    TU_EXPECT_ERR_MSG(vae_trainer_forward_backward(t, x, B, eps, &st), VAE_ERR_INVALID,
                      "vae_trainer_forward_backward",
                      "free bits apply to the ELBO objective, not to IWAE");
    TU_EXPECT_ERR_MSG(vae_trainer_step(t, x, B, &st), VAE_ERR_INVALID, "vae_trainer_step",
                      "free bits apply");
    TU_EXPECT_ERR_MSG(vae_trainer_reserve(t, 64), VAE_ERR_INVALID, "vae_trainer_reserve",
                      "free bits apply");
    size_t ng = 0;
    float *g = vae_trainer_grads(t, &ng);
    assert_int_equal(tu_first_nonzero(g, ng), ng);
    assert_memory_equal(p, p0, np * sizeof *p);
    assert_int_equal(vae_trainer_steps(t), 0);
    TU_OK(vae_elbo_evaluate(g_ctx, m, e, x, B, eps, NULL, NULL, &st));
    vae_trainer_free(t);
    free(p0);
    vae_elbo_free(e);
    vae_model_free(m);
}

/* vae_evaluate_dataset cuts a dataset into chunks of at most 2^20 rows when
 * every sample takes many draws: with k = 2048 its 600 samples are two
 * chunks (512 and 88), and the per-sample losses are those of two
 * vae_elbo_evaluate calls on the same rows with the same generator. */
static void test_evaluate_dataset_many_draws(void **state)
{
    (void)state;
    enum { D = 4, H = 3, L = 2, N = 600, K = 2048 };
    vae_model *m = mlp1(D, H, L, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI, 61);
    vae_elbo *e = objective_k(1.0, VAE_OBJECTIVE_IWAE, K);
    float *x = tu_alloc((size_t)N * D, sizeof *x);
    tu_rng r = {12};
    tu_fill_range(&r, x, (size_t)N * D, 0.0, 1.0);
    vae_dataset *ds = NULL;
    TU_OK(vae_dataset_from_floats(&ds, x, N, D, NULL));
    vae_rng *g1 = NULL, *g2 = NULL;
    TU_OK(vae_rng_create(&g1, 5));
    TU_OK(vae_rng_create(&g2, 5));
    double *per = tu_alloc(N, sizeof *per), *ref = tu_alloc(N, sizeof *ref);
    vae_epoch_stats st = {sizeof st};
    TU_OK(vae_evaluate_dataset(g_ctx, m, e, ds, g1, per, &st));
    evaluate(m, e, x, 512, NULL, g2, ref);
    evaluate(m, e, x + 512 * D, N - 512, NULL, g2, ref + 512);
    assert_memory_equal(per, ref, N * sizeof *per);
    double sum = 0.0;
    for (size_t i = 0; i < N; i++)
        sum += ref[i];
    TU_CLOSE(st.loss, sum / N, 1e-12, 0.0);
    vae_rng_free(g1);
    vae_rng_free(g2);
    vae_dataset_free(ds);
    free(per);
    free(ref);
    free(x);
    vae_elbo_free(e);
    vae_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stats_filled),
        cmocka_unit_test(test_noise_stream),
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
        cmocka_unit_test(test_cb_gradient_finite_differences),
        cmocka_unit_test(test_cb_normalizer_and_mean),
        cmocka_unit_test(test_cb_mean_extremes),
        cmocka_unit_test(test_cb_series_switch),
        cmocka_unit_test(test_cb_accuracy_sweep),
        cmocka_unit_test(test_cb_log_likelihood),
        cmocka_unit_test(test_cb_train_and_round_trip),
        cmocka_unit_test(test_iwae_value),
        cmocka_unit_test(test_draws_worker_invariant),
        cmocka_unit_test(test_free_bits),
        cmocka_unit_test(test_warmup),
        cmocka_unit_test(test_draws_bad_input),
        cmocka_unit_test(test_evaluate_dataset_many_draws),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
