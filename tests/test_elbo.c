/* The objective: KL and both likelihoods against closed forms, the whole
 * gradient against central finite differences, reductions, accumulation,
 * reproducibility and bad input. */
#include <float.h>

#include "test_util.h"

#define LOG_2PI 1.8378770664093454836

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
    size_t n = 0;
    vae_model_params(m, &n);
    assert_int_equal(n, layout_of(d, h, l).n);
    return m;
}

static vae_elbo *objective(float beta, int obj)
{
    vae_elbo *e = NULL;
    TU_OK(vae_elbo_create(&e));
    TU_OK(vae_elbo_set_beta(e, beta));
    TU_OK(vae_elbo_set_objective(e, obj));
    return e;
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
    const float betas[] = {1.0f, 0.3f, 0.0f};
    for (size_t bi = 0; bi < 3; bi++) {
        vae_elbo *e = objective(betas[bi], VAE_OBJECTIVE_ELBO);
        double loss = 0, recon = 0, kl = 0;
        TU_OK(vae_elbo_evaluate(e, m, x, B, eps, NULL, &loss, &recon, &kl, per));
        /* kl is a double sum of values computed in double from float
         * parameters: only summation rounding remains. */
        TU_CLOSE(kl, kl_ref, 1e-12, 0.0);
        TU_CLOSE(loss, recon + (double)betas[bi] * kl_ref, 1e-12, 0.0);
        vae_elbo_free(e);
    }
    /* The autoencoder objective has no KL term at all. */
    vae_elbo *ae = objective(1.0f, VAE_OBJECTIVE_AUTOENCODER);
    double loss = 0, recon = 0, kl = -1;
    TU_OK(vae_elbo_evaluate(ae, m, x, B, eps, NULL, &loss, &recon, &kl, NULL));
    assert_true(kl == 0.0);
    assert_true(loss == recon);
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

    vae_elbo *ae = objective(1.0f, VAE_OBJECTIVE_AUTOENCODER);
    double per[B], loss = 0, recon = 0;
    TU_OK(vae_elbo_evaluate(ae, m, x, B, NULL, NULL, &loss, &recon, NULL, per));
    /* Each term is a few float operations on exact values: relative 1e-6
     * (a few float ulps) even for the 7.7e-22 of sample 0, which a version
     * that dropped the log1p(e^-|l|) term would get as 0. */
    for (size_t i = 0; i < B; i++) {
        assert_true(isfinite(per[i]));
        TU_CLOSE(per[i], ref[i], 1e-6, 0.0);
    }
    TU_CLOSE(recon, (ref[0] + ref[1] + ref[2]) / B, 1e-6, 0.0);
    assert_true(loss == recon);
    /* The gradient at these logits is finite too (sigmoid(+-50) - x). */
    TU_OK(vae_elbo_forward_backward(ae, m, x, B, NULL, NULL, NULL, NULL, NULL));
    size_t n = 0;
    float *g = vae_model_grads(m, &n);
    assert_true(tu_all_finite(g, n));
    /* d recon / d b_out[j] = mean_i (sigmoid(l_j) - x_ij). */
    for (size_t j = 0; j < D; j++) {
        double s = 1.0 / (1.0 + exp(-(double)logit[j])), gref = 0.0;
        for (size_t i = 0; i < B; i++)
            gref += (s - x[i * D + j]) / B;
        TU_CLOSE(g[o.out_b + j], gref, 1e-6, 1e-7);
    }
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

    vae_elbo *ae = objective(1.0f, VAE_OBJECTIVE_AUTOENCODER);
    const float sigmas[] = {1.0f, 0.5f};
    for (size_t si = 0; si < 2; si++) {
        const double s = sigmas[si];
        if (si > 0)
            TU_OK(vae_model_set_gaussian_sigma(m, sigmas[si]));
        double per[B], recon = 0;
        TU_OK(vae_elbo_evaluate(ae, m, x, B, NULL, NULL, NULL, &recon, NULL, per));
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
        TU_CLOSE(recon, sum / B, 1e-6, 0.0);
    }
    vae_elbo_free(ae);
    vae_model_free(m);
}

typedef struct grad_case {
    const char *name;
    int lik;
    float sigma;
    float beta;
    int act;
    int objective;
    size_t n_hidden;
} grad_case;

/* (d) The gradient of forward_backward against central differences of
 * evaluate along random unit directions over the whole parameter slab, with
 * the same injected eps at every point. */
static void check_elbo_gradient(const grad_case *c, uint64_t seed)
{
    enum { D = 6, L = 2, B = 3 };
    const size_t hidden[2] = {5, 4};
    vae_model *m = NULL;
    TU_OK(vae_model_create_mlp(&m, D, hidden, c->n_hidden, L, c->act, c->lik, seed));
    if (c->lik == VAE_LIKELIHOOD_GAUSSIAN)
        TU_OK(vae_model_set_gaussian_sigma(m, c->sigma));
    vae_elbo *e = objective(c->beta, c->objective);
    size_t n = 0;
    float *p = vae_model_params(m, &n), *g = vae_model_grads(m, NULL);
    tu_rng r = {seed * 7919};
    /* Larger parameters than the default init, so that logvar and the
     * decoder output move well away from 0 and every term matters. */
    for (size_t i = 0; i < n; i++)
        p[i] *= 2.0f;
    float x[B * D], eps[B * L];
    if (c->lik == VAE_LIKELIHOOD_BERNOULLI)
        tu_fill_range(&r, x, B * D, 0.0, 1.0);
    else
        for (size_t i = 0; i < B * D; i++)
            x[i] = (float)tu_gauss(&r);
    for (size_t i = 0; i < B * L; i++)
        eps[i] = (float)tu_gauss(&r);

    TU_OK(vae_model_zero_grads(m));
    double loss0 = 0;
    TU_OK(vae_elbo_forward_backward(e, m, x, B, eps, NULL, &loss0, NULL, NULL));
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
            double t = side ? -h : h;
            for (size_t i = 0; i < n; i++)
                p[i] = (float)(p0[i] + t * v[i]);
            TU_OK(vae_elbo_evaluate(e, m, x, B, eps, NULL, &lp[side], NULL, NULL, NULL));
        }
        memcpy(p, p0, n * sizeof *p);
        double fd = (lp[0] - lp[1]) / (2.0 * h);
        double an = tu_dot_fd(grad, v, n);
        /* h = 1e-2 balances the O(h^2) truncation of the central
         * difference (the loss has exp(logvar) and decoder curvature of
         * order 1-10) against the float forward's rounding of a loss of
         * order 10 (~1e-6) divided by 2h; h = 1e-3 measured 8x worse.
         * Measured over these cases: |fd - an| <= 9e-6 |g| (6e-5 absolute).
         * The bound, 2e-3 relative plus 1e-4 of the gradient norm |g| (a
         * random direction can make <g, v> nearly cancel), is 20x the worst
         * measured error; a wrong factor (1/2, beta, 1/sigma^2, 1/B), a
         * missing term or a wrong transpose moves <g, v> by a sizeable
         * fraction of |g|. */
        double tol = 2e-3 * fabs(an) + 1e-4 * gnorm;
        if (!(fabs(fd - an) <= tol))
            fail_msg("%s trial %d: finite difference %.9g, gradient %.9g (|g| %.3g, tol %.3g)",
                     c->name, trial, fd, an, gnorm, tol);
    }
    /* The gradient does not depend on the loss being evaluated in between. */
    double loss1 = 0;
    TU_OK(vae_elbo_evaluate(e, m, x, B, eps, NULL, &loss1, NULL, NULL, NULL));
    assert_true(loss1 == loss0);
    free(grad);
    free(p0);
    free(v);
    vae_elbo_free(e);
    vae_model_free(m);
}

static void test_gradient_finite_differences(void **state)
{
    (void)state;
    const grad_case cases[] = {
        {"bernoulli tanh beta 1", VAE_LIKELIHOOD_BERNOULLI, 1.0f, 1.0f, VAE_ACT_TANH,
         VAE_OBJECTIVE_ELBO, 1},
        {"bernoulli softplus beta 0.3", VAE_LIKELIHOOD_BERNOULLI, 1.0f, 0.3f, VAE_ACT_SOFTPLUS,
         VAE_OBJECTIVE_ELBO, 1},
        {"bernoulli sigmoid beta 1, two hidden", VAE_LIKELIHOOD_BERNOULLI, 1.0f, 1.0f,
         VAE_ACT_SIGMOID, VAE_OBJECTIVE_ELBO, 2},
        {"bernoulli identity beta 0.3, no hidden", VAE_LIKELIHOOD_BERNOULLI, 1.0f, 0.3f,
         VAE_ACT_IDENTITY, VAE_OBJECTIVE_ELBO, 0},
        {"gaussian sigma 1 elu beta 1", VAE_LIKELIHOOD_GAUSSIAN, 1.0f, 1.0f, VAE_ACT_ELU,
         VAE_OBJECTIVE_ELBO, 1},
        {"gaussian sigma 0.5 tanh beta 0.3", VAE_LIKELIHOOD_GAUSSIAN, 0.5f, 0.3f, VAE_ACT_TANH,
         VAE_OBJECTIVE_ELBO, 2},
        {"gaussian sigma 0.5 softplus beta 1", VAE_LIKELIHOOD_GAUSSIAN, 0.5f, 1.0f,
         VAE_ACT_SOFTPLUS, VAE_OBJECTIVE_ELBO, 1},
        {"autoencoder bernoulli tanh", VAE_LIKELIHOOD_BERNOULLI, 1.0f, 1.0f, VAE_ACT_TANH,
         VAE_OBJECTIVE_AUTOENCODER, 1},
        {"autoencoder gaussian sigma 0.5 elu", VAE_LIKELIHOOD_GAUSSIAN, 0.5f, 0.3f, VAE_ACT_ELU,
         VAE_OBJECTIVE_AUTOENCODER, 2},
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
    vae_elbo *ae = objective(1.0f, VAE_OBJECTIVE_AUTOENCODER);
    tu_rng r = {6};
    float x[B * D];
    tu_fill_range(&r, x, B * D, 0.0, 1.0);
    TU_OK(vae_elbo_forward_backward(ae, m, x, B, NULL, NULL, NULL, NULL, NULL));
    const float *g = vae_model_grads(m, NULL);
    for (size_t j = 0; j < L * H; j++)
        assert_true(g[o.head_w + L * H + j] == 0.0f);
    for (size_t j = 0; j < L; j++)
        assert_true(g[o.head_b + L + j] == 0.0f);
    /* ...while the mu rows do get a gradient. */
    double s = 0.0;
    for (size_t j = 0; j < L * H; j++)
        s += fabs(g[o.head_w + j]);
    assert_true(s > 0.0);
    vae_elbo_free(ae);
    vae_model_free(m);
}

/* (e) per-sample losses sum to batch * loss, and each equals the loss of
 * that sample evaluated alone. */
static void test_per_sample(void **state)
{
    (void)state;
    enum { D = 6, L = 2, B = 5 };
    const size_t hidden[1] = {5};
    for (int obj = 0; obj < 2; obj++)
        for (int lik = 0; lik < 2; lik++) {
            vae_model *m = NULL;
            TU_OK(vae_model_create_mlp(&m, D, hidden, 1, L, VAE_ACT_TANH, lik, 9));
            vae_elbo *e = objective(0.3f, obj);
            tu_rng r = {10};
            float x[B * D], eps[B * L];
            tu_fill_range(&r, x, B * D, 0.0, 1.0);
            for (size_t i = 0; i < B * L; i++)
                eps[i] = (float)tu_gauss(&r);
            double per[B], loss = 0, recon = 0, kl = 0;
            TU_OK(vae_elbo_evaluate(e, m, x, B, eps, NULL, &loss, &recon, &kl, per));
            double sum = 0.0;
            for (size_t i = 0; i < B; i++)
                sum += per[i];
            /* Double sums of the same terms in another order: 1e-12. */
            TU_CLOSE(sum, B * loss, 1e-12, 0.0);
            /* beta is stored as a float: 0.3f, not 0.3. */
            TU_CLOSE(loss, recon + (double)0.3f * kl, 1e-12, 0.0);
            for (size_t i = 0; i < B; i++) {
                double one = 0;
                TU_OK(vae_elbo_evaluate(e, m, x + i * D, 1, eps + i * L, NULL, &one, NULL,
                                        NULL, NULL));
                /* Batch 1 vs 5 may take different GEMM kernels: 1e-6. */
                TU_CLOSE(per[i], one, 1e-6, 0.0);
            }
            vae_elbo_free(e);
            vae_model_free(m);
        }
}

/* (f) forward_backward adds into the gradient slab; (g) the same eps gives
 * the same loss bit for bit, and the rng path is the eps path with eps drawn
 * from the generator. */
static void test_accumulate_and_reproduce(void **state)
{
    (void)state;
    enum { D = 6, L = 2, B = 4 };
    const size_t hidden[1] = {5};
    vae_model *m = NULL;
    TU_OK(vae_model_create_mlp(&m, D, hidden, 1, L, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI,
                               11));
    vae_elbo *e = objective(1.0f, VAE_OBJECTIVE_ELBO);
    tu_rng r = {12};
    float x[B * D], eps[B * L];
    tu_fill_range(&r, x, B * D, 0.0, 1.0);
    for (size_t i = 0; i < B * L; i++)
        eps[i] = (float)tu_gauss(&r);
    size_t n = 0;
    float *g = vae_model_grads(m, &n), *g1 = tu_alloc(n, sizeof *g1);
    double l1 = 0, l2 = 0, r1 = 0, k1 = 0, r2 = 0, k2 = 0;
    TU_OK(vae_elbo_forward_backward(e, m, x, B, eps, NULL, &l1, &r1, &k1));
    memcpy(g1, g, n * sizeof *g);
    double gmax = 0.0;
    for (size_t i = 0; i < n; i++)
        gmax = fmax(gmax, fabs(g1[i]));
    assert_true(gmax > 0.0);
    TU_OK(vae_elbo_forward_backward(e, m, x, B, eps, NULL, &l2, &r2, &k2));
    assert_true(l1 == l2 && r1 == r2 && k1 == k2);
    /* The second call's additions round against the running sums; 1e-6 of
     * the largest gradient bounds that. */
    for (size_t i = 0; i < n; i++)
        TU_CLOSE(g[i], 2.0 * (double)g1[i], 0.0, 1e-6 * gmax);

    /* Noise from the generator: same seed, same loss and gradient. */
    vae_rng *ra = NULL, *rb = NULL, *rc = NULL;
    TU_OK(vae_rng_create(&ra, 77));
    TU_OK(vae_rng_create(&rb, 77));
    TU_OK(vae_rng_create(&rc, 78));
    float *ga = tu_alloc(n, sizeof *ga);
    double la = 0, lb = 0, lc = 0, le = 0;
    TU_OK(vae_model_zero_grads(m));
    TU_OK(vae_elbo_forward_backward(e, m, x, B, NULL, ra, &la, NULL, NULL));
    memcpy(ga, g, n * sizeof *g);
    TU_OK(vae_model_zero_grads(m));
    TU_OK(vae_elbo_forward_backward(e, m, x, B, NULL, rb, &lb, NULL, NULL));
    assert_true(la == lb);
    assert_memory_equal(ga, g, n * sizeof *g);
    TU_OK(vae_elbo_evaluate(e, m, x, B, NULL, rc, &lc, NULL, NULL, NULL));
    assert_true(lc != la);
    /* eps[batch][latent] drawn in order from the generator. */
    vae_rng *rd = NULL;
    float drawn[B * L];
    TU_OK(vae_rng_create(&rd, 77));
    TU_OK(vae_rng_normal(rd, drawn, B * L));
    TU_OK(vae_elbo_evaluate(e, m, x, B, drawn, NULL, &le, NULL, NULL, NULL));
    assert_true(le == la);
    /* Injected eps is used as given: the rng is ignored when eps is set. */
    double lf = 0;
    TU_OK(vae_elbo_evaluate(e, m, x, B, drawn, rc, &lf, NULL, NULL, NULL));
    assert_true(lf == la);

    free(g1);
    free(ga);
    vae_rng_free(ra);
    vae_rng_free(rb);
    vae_rng_free(rc);
    vae_rng_free(rd);
    vae_elbo_free(e);
    vae_model_free(m);
}

static void expect_numeric_untouched(vae_elbo *e, vae_model *m, const float *x, size_t b,
                                     const float *eps)
{
    size_t n = 0;
    float *g = vae_model_grads(m, &n), *before = tu_alloc(n, sizeof *before);
    for (size_t i = 0; i < n; i++)
        g[i] = 0.5f + (float)i; /* a pattern the call must leave alone */
    memcpy(before, g, n * sizeof *g);
    double loss = 12345.0;
    TU_EXPECT_ERR(vae_elbo_forward_backward(e, m, x, b, eps, NULL, &loss, NULL, NULL),
                  VAE_ERR_NUMERIC, "vae_elbo_forward_backward");
    assert_memory_equal(g, before, n * sizeof *g);
    TU_EXPECT_ERR(vae_elbo_evaluate(e, m, x, b, eps, NULL, &loss, NULL, NULL, NULL),
                  VAE_ERR_NUMERIC, "vae_elbo_evaluate");
    assert_memory_equal(g, before, n * sizeof *g);
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
    double loss = 0;
    const char *fb = "vae_elbo_forward_backward", *ev = "vae_elbo_evaluate";

    TU_EXPECT_ERR(vae_elbo_forward_backward(NULL, m, x, B, eps, NULL, &loss, NULL, NULL),
                  VAE_ERR_INVALID, fb);
    TU_EXPECT_ERR(vae_elbo_forward_backward(e, NULL, x, B, eps, NULL, &loss, NULL, NULL),
                  VAE_ERR_INVALID, fb);
    TU_EXPECT_ERR(vae_elbo_forward_backward(e, m, NULL, B, eps, NULL, &loss, NULL, NULL),
                  VAE_ERR_INVALID, fb);
    TU_EXPECT_ERR(vae_elbo_forward_backward(e, m, x, 0, eps, NULL, &loss, NULL, NULL),
                  VAE_ERR_INVALID, fb);
    TU_EXPECT_ERR(vae_elbo_forward_backward(e, u, x, B, eps, NULL, &loss, NULL, NULL),
                  VAE_ERR_STATE, fb);
    TU_EXPECT_ERR(vae_elbo_forward_backward(e, m, x, B, NULL, NULL, &loss, NULL, NULL),
                  VAE_ERR_INVALID, fb);
    TU_EXPECT_ERR(vae_elbo_evaluate(NULL, m, x, B, eps, NULL, &loss, NULL, NULL, NULL),
                  VAE_ERR_INVALID, ev);
    TU_EXPECT_ERR(vae_elbo_evaluate(e, NULL, x, B, eps, NULL, &loss, NULL, NULL, NULL),
                  VAE_ERR_INVALID, ev);
    TU_EXPECT_ERR(vae_elbo_evaluate(e, m, NULL, B, eps, NULL, &loss, NULL, NULL, NULL),
                  VAE_ERR_INVALID, ev);
    TU_EXPECT_ERR(vae_elbo_evaluate(e, m, x, 0, eps, NULL, &loss, NULL, NULL, NULL),
                  VAE_ERR_INVALID, ev);
    TU_EXPECT_ERR(vae_elbo_evaluate(e, u, x, B, eps, NULL, &loss, NULL, NULL, NULL),
                  VAE_ERR_STATE, ev);
    TU_EXPECT_ERR(vae_elbo_evaluate(e, m, x, B, NULL, NULL, &loss, NULL, NULL, NULL),
                  VAE_ERR_INVALID, ev);
    /* All output pointers may be NULL. */
    TU_OK(vae_elbo_evaluate(e, m, x, B, eps, NULL, NULL, NULL, NULL, NULL));
    TU_OK(vae_elbo_forward_backward(e, m, x, B, NULL, rng, NULL, NULL, NULL));

    /* Non-finite x or eps. */
    eps[3] = NAN;
    expect_numeric_untouched(e, m, x, B, eps);
    eps[3] = INFINITY;
    expect_numeric_untouched(e, m, x, B, eps);
    eps[3] = 0.4f;
    x[D + 2] = NAN;
    expect_numeric_untouched(e, m, x, B, eps);
    x[D + 2] = -INFINITY;
    expect_numeric_untouched(e, m, x, B, eps);
    /* Bernoulli x outside [0, 1]. */
    x[D + 2] = 1.5f;
    TU_EXPECT_ERR(vae_elbo_forward_backward(e, m, x, B, eps, NULL, &loss, NULL, NULL),
                  VAE_ERR_INVALID, fb);
    TU_EXPECT_ERR(vae_elbo_evaluate(e, m, x, B, eps, NULL, &loss, NULL, NULL, NULL),
                  VAE_ERR_INVALID, ev);
    x[D + 2] = -0.5f;
    TU_EXPECT_ERR(vae_elbo_evaluate(e, m, x, B, eps, NULL, &loss, NULL, NULL, NULL),
                  VAE_ERR_INVALID, ev);
    x[D + 2] = 0.3f;

    /* A logvar so large that exp overflows: the loss is not finite. */
    float *p = vae_model_params(m, NULL);
    const float saved = p[o.head_b + L];
    p[o.head_b + L] = 1e30f;
    expect_numeric_untouched(e, m, x, B, eps);
    p[o.head_b + L] = saved;

    /* beta and objective setters. */
    TU_EXPECT_ERR(vae_elbo_set_beta(NULL, 1.0f), VAE_ERR_INVALID, "vae_elbo_set_beta");
    const float bad_beta[] = {-1.0f, -1e-30f, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof bad_beta / sizeof bad_beta[0]; i++)
        TU_EXPECT_ERR(vae_elbo_set_beta(e, bad_beta[i]), VAE_ERR_INVALID, "vae_elbo_set_beta");
    TU_OK(vae_elbo_set_beta(e, 0.0f));
    TU_OK(vae_elbo_set_beta(e, 4.0f));
    TU_EXPECT_ERR(vae_elbo_set_objective(NULL, VAE_OBJECTIVE_ELBO), VAE_ERR_INVALID,
                  "vae_elbo_set_objective");
    TU_EXPECT_ERR(vae_elbo_set_objective(e, 2), VAE_ERR_INVALID, "vae_elbo_set_objective");
    TU_EXPECT_ERR(vae_elbo_set_objective(e, -1), VAE_ERR_INVALID, "vae_elbo_set_objective");
    /* A rejected value leaves the previous one in force: beta is still 4. */
    {
        double l4 = 0, r4 = 0, k4 = 0;
        TU_OK(vae_elbo_evaluate(e, m, x, B, eps, NULL, &l4, &r4, &k4, NULL));
        TU_CLOSE(l4, r4 + 4.0 * k4, 1e-12, 0.0);
    }
    /* In autoencoder mode no noise is needed. */
    TU_OK(vae_elbo_set_objective(e, VAE_OBJECTIVE_AUTOENCODER));
    TU_OK(vae_elbo_forward_backward(e, m, x, B, NULL, NULL, &loss, NULL, NULL));
    vae_elbo_free(NULL);

    vae_rng_free(rng);
    vae_elbo_free(e);
    vae_model_free(u);
    vae_model_free(m);
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
    vae_elbo *e = objective(1.0f, VAE_OBJECTIVE_ELBO);
    float x[B * D] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f, 0.9f, 1.0f, 0.0f, 0.5f};
    float eps[B * L] = {0.1f, -0.3f, 1.2f, 0.4f};
    float *p = vae_model_params(m, NULL);
    memset(p + o.head_w + L * H, 0, L * H * sizeof(float));
    p[o.head_b + L] = 100.0f;
    size_t n = 0;
    float *g = vae_model_grads(m, &n), *before = tu_alloc(n, sizeof *before);
    memcpy(before, g, n * sizeof *g);
    double loss = 0;
    int rc = vae_elbo_forward_backward(e, m, x, B, eps, NULL, &loss, NULL, NULL);
    const int finite = tu_all_finite(g, n);
    const int untouched = memcmp(g, before, n * sizeof *g) == 0;
    /* Free before asserting, so a failure here reports no leak under ASan. */
    free(before);
    vae_elbo_free(e);
    vae_model_free(m);
    if (rc == VAE_OK && !finite)
        fail_msg("vae_elbo_forward_backward returned VAE_OK (loss %g) but left a non-finite "
                 "value in the gradient slab",
                 loss);
    if (rc != VAE_OK) {
        assert_int_equal(rc, VAE_ERR_NUMERIC);
        assert_true(untouched);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kl_closed_form),
        cmocka_unit_test(test_bernoulli_extreme_logits),
        cmocka_unit_test(test_gaussian_constants),
        cmocka_unit_test(test_gradient_finite_differences),
        cmocka_unit_test(test_autoencoder_ignores_logvar),
        cmocka_unit_test(test_per_sample),
        cmocka_unit_test(test_accumulate_and_reproduce),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_large_logvar_gradient),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
