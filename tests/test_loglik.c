/* Importance-sampled log-likelihood against brute-force integration.
 *
 * With a one-dimensional latent code, p(x) = integral of p(x|z) N(z; 0, 1) dz
 * is computed here by the trapezoid rule over z in [-10, 10] (20001 points,
 * in double, the decoder evaluated by vae_decode at every point). The
 * encoder is set by hand (no hidden layer, head weights zero, biases mu and
 * log sigma^2), so the proposal q(z|x) is known exactly and the variance of
 * the importance weights can be integrated too: with w = p(x, z) / q(z),
 *     rho^2 = Var_q[w / p(x)] = integral p(x, z)^2 / q(z) dz / p(x)^2 - 1,
 * the K-sample estimate log p_K has standard deviation ~ sqrt(rho^2 / K) and
 * bias ~ -rho^2 / (2K) (delta method), which sets each tolerance. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vae/vae.h"

#include "test_util.h"

#define LOG_2PI 1.8378770664093454836

/* Error checks from test_util.h: the exact status, and a fresh message that
 * names fn and mentions needle (either may be NULL). */
#define EXPECT_ERR(call, expected, fn, needle) TU_EXPECT_ERR_MSG(call, expected, fn, needle)
#define OK(call) TU_OK(call)

/* One context for the whole group. */
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
    return 0;
}

/* ---- tiny models with hand-set parameters -------------------------------------- */

/* latent 1, no encoder layer: the head maps x[D] to (mu, logvar). The decoder
 * is dense 1 -> H (act) then H -> D (identity), or dense 1 -> D when H == 0.
 * Slab: head W[2][D], head b[2], then the decoder layers (W then b). */
typedef struct tiny {
    vae_model *m;
    size_t D, H;
    int lik;
    float sigma;
} tiny;

static tiny make_tiny(int lik, size_t D, size_t H, int act, const float *w1, const float *b1,
                      const float *w2, const float *b2, float sigma)
{
    tiny t = {NULL, D, H, lik, sigma};
    OK(vae_model_create(&t.m, D, 1, lik));
    vae_layer *l = NULL;
    if (H) {
        OK(vae_layer_dense_create(&l, 1, H, act));
        OK(vae_model_add_decoder_layer(t.m, &l));
        OK(vae_layer_dense_create(&l, H, D, VAE_ACT_IDENTITY));
        OK(vae_model_add_decoder_layer(t.m, &l));
    } else {
        OK(vae_layer_dense_create(&l, 1, D, VAE_ACT_IDENTITY));
        OK(vae_model_add_decoder_layer(t.m, &l));
    }
    OK(vae_model_build(t.m, 1));
    if (lik == VAE_LIKELIHOOD_GAUSSIAN)
        OK(vae_model_set_param(t.m, VAE_MODEL_GAUSSIAN_SIGMA, sigma));
    size_t n = 0;
    float *p = vae_model_params(t.m, &n);
    size_t want = 2 * D + 2 + (H ? (H + H) + (D * H + D) : (D + D));
    assert_int_equal(n, want);
    float *d = p + 2 * D + 2;
    if (H) {
        memcpy(d, w1, H * sizeof(float));
        memcpy(d + H, b1, H * sizeof(float));
        memcpy(d + 2 * H, w2, D * H * sizeof(float));
        memcpy(d + 2 * H + D * H, b2, D * sizeof(float));
    } else {
        memcpy(d, w2, D * sizeof(float));
        memcpy(d + D, b2, D * sizeof(float));
    }
    return t;
}

/* q(z|x) = N(mu_w . x + mu_b, exp(logvar_b)), whatever x (logvar weights 0). */
static void set_q(tiny *t, const float *mu_w, float mu_b, float logvar_b)
{
    float *p = vae_model_params(t->m, NULL);
    for (size_t j = 0; j < t->D; j++) {
        p[j] = mu_w ? mu_w[j] : 0.0f;
        p[t->D + j] = 0.0f;
    }
    p[2 * t->D] = mu_b;
    p[2 * t->D + 1] = logvar_b;
}

/* ---- quadrature ------------------------------------------------------------------ */

enum { G = 20001 };

typedef struct quad {
    float z[G];
    double lf[G];   /* log p(x|z) + log N(z; 0, 1) at each node */
    double wt[G];   /* trapezoid weights */
    double logp;    /* log p(x) */
    double mean, sd; /* of the posterior p(z|x) */
} quad;

static double log_sum(const double *lv, const double *wt, size_t n)
{
    double mx = -INFINITY;
    for (size_t i = 0; i < n; i++)
        if (lv[i] > mx)
            mx = lv[i];
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += wt[i] * exp(lv[i] - mx);
    return mx + log(s);
}

static double log_normal(double z, double m, double s)
{
    double u = (z - m) / s;
    return -0.5 * u * u - log(s) - 0.5 * LOG_2PI;
}

/* log p(x|out) in double from the decoder's output (means or probabilities). */
static double log_lik(const tiny *t, const float *x, const float *out)
{
    double s = 0.0;
    for (size_t j = 0; j < t->D; j++) {
        if (t->lik == VAE_LIKELIHOOD_GAUSSIAN) {
            double d = (double)x[j] - out[j];
            s += -0.5 * d * d / ((double)t->sigma * t->sigma) - log((double)t->sigma) -
                 0.5 * LOG_2PI;
        } else {
            s += x[j] * log((double)out[j]) + (1.0 - x[j]) * log(1.0 - (double)out[j]);
        }
    }
    return s;
}

static void integrate(quad *q, const tiny *t, const float *x)
{
    float *out = malloc(G * t->D * sizeof *out);
    assert_non_null(out);
    for (size_t i = 0; i < G; i++) {
        q->z[i] = (float)(-10.0 + 20.0 * (double)i / (G - 1));
        q->wt[i] = i == 0 || i == G - 1 ? 0.5 * 20.0 / (G - 1) : 20.0 / (G - 1);
    }
    OK(vae_decode(g_ctx, t->m, q->z, G, out));
    for (size_t i = 0; i < G; i++)
        q->lf[i] = log_lik(t, x, out + i * t->D) + log_normal(q->z[i], 0.0, 1.0);
    free(out);
    q->logp = log_sum(q->lf, q->wt, G);
    double m = 0.0, m2 = 0.0;
    for (size_t i = 0; i < G; i++) {
        double w = q->wt[i] * exp(q->lf[i] - q->logp);
        m += w * q->z[i];
        m2 += w * (double)q->z[i] * q->z[i];
    }
    q->mean = m;
    q->sd = sqrt(m2 - m * m);
}

/* rho^2 of the proposal N(mq, sq^2), as defined at the top. */
static double weight_variance(const quad *q, double mq, double sq)
{
    double *lv = malloc(G * sizeof *lv);
    assert_non_null(lv);
    for (size_t i = 0; i < G; i++)
        lv[i] = 2.0 * q->lf[i] - log_normal(q->z[i], mq, sq);
    double r = exp(log_sum(lv, q->wt, G) - 2.0 * q->logp) - 1.0;
    free(lv);
    return r;
}

/* The ELBO of the proposal N(mq, sq^2): E_q[log p(x, z) - log q(z)]. */
static double exact_elbo(const quad *q, double mq, double sq)
{
    double s = 0.0;
    for (size_t i = 0; i < G; i++) {
        double lq = log_normal(q->z[i], mq, sq);
        s += q->wt[i] * exp(lq) * (q->lf[i] - lq);
    }
    return s;
}

static void mean_se(const double *v, size_t n, double *mean, double *se)
{
    double m = 0.0, s = 0.0;
    for (size_t i = 0; i < n; i++)
        m += v[i];
    m /= (double)n;
    for (size_t i = 0; i < n; i++)
        s += (v[i] - m) * (v[i] - m);
    *mean = m;
    *se = sqrt(s / (double)(n - 1) / (double)n);
}

/* ---- the linear-Gaussian case: q can be the exact posterior ---------------------- */

static void test_linear_gaussian_exact(void **state)
{
    (void)state;
    /* x | z ~ N(w z + c, s^2 I): p(x) = N(x; c, s^2 I + w w^T) in closed form,
     * and the posterior is N(m, v) with 1/v = 1 + |w|^2 / s^2 and
     * m = v w.(x - c) / s^2, which a linear encoder computes exactly. */
    enum { D = 3 };
    const float w[D] = {0.8f, -1.3f, 0.4f}, c[D] = {0.2f, -0.1f, 0.5f}, s = 0.6f;
    tiny t = make_tiny(VAE_LIKELIHOOD_GAUSSIAN, D, 0, 0, NULL, NULL, w, c, s);
    double ww = 0.0;
    for (size_t j = 0; j < D; j++)
        ww += (double)w[j] * w[j];
    const double s2 = (double)s * s, v = 1.0 / (1.0 + ww / s2);
    float mu_w[D];
    double wc = 0.0;
    for (size_t j = 0; j < D; j++) {
        mu_w[j] = (float)(v * w[j] / s2);
        wc += (double)w[j] * c[j];
    }
    set_q(&t, mu_w, (float)(-v * wc / s2), (float)log(v));

    const float xs[3][D] = {{0.9f, -1.2f, 0.7f}, {0.2f, -0.1f, 0.5f}, {-1.5f, 2.0f, 0.0f}};
    static quad q;
    vae_rng *rng = NULL;
    OK(vae_rng_create(&rng, 7));
    for (size_t k = 0; k < 3; k++) {
        const float *x = xs[k];
        /* Closed form: Sigma^-1 = (I - w w^T / (s^2 + |w|^2)) / s^2,
         * det Sigma = s^(2D) (1 + |w|^2 / s^2). */
        double dd = 0.0, wd = 0.0;
        for (size_t j = 0; j < D; j++) {
            double d = (double)x[j] - c[j];
            dd += d * d;
            wd += w[j] * d;
        }
        double quadform = (dd - wd * wd / (s2 + ww)) / s2;
        double logp = -0.5 * D * LOG_2PI - 0.5 * (D * log(s2) + log(1.0 + ww / s2)) -
                      0.5 * quadform;
        /* The quadrature reproduces it (a check of the reference itself). */
        integrate(&q, &t, x);
        if (fabs(q.logp - logp) > 1e-6)
            fail_msg("x%zu: quadrature %.10f, closed form %.10f", k, q.logp, logp);
        assert_true(fabs(q.sd - sqrt(v)) < 1e-5);

        /* Every weight equals p(x): any K gives log p(x) up to float
         * rounding in z, the decoder and the density terms (~1e-5). */
        const size_t ks[3] = {1, 3, 500};
        for (size_t j = 0; j < 3; j++) {
            double ll = 0.0;
            OK(vae_log_likelihood(g_ctx, t.m, x, 1, ks[j], rng, &ll));
            if (fabs(ll - logp) > 2e-4)
                fail_msg("x%zu, K = %zu: estimate %.8f, log p(x) = %.8f", k, ks[j], ll, logp);
        }
    }
    /* The three at once: row i of the output belongs to row i of x. */
    double ll3[3];
    OK(vae_log_likelihood(g_ctx, t.m, &xs[0][0], 3, 2, rng, ll3));
    for (size_t k = 0; k < 3; k++) {
        integrate(&q, &t, xs[k]);
        assert_true(fabs(ll3[k] - q.logp) < 2e-4);
    }
    vae_rng_free(rng);
    vae_model_free(t.m);
}

/* ---- nonlinear decoders against the quadrature ----------------------------------- */

/* Proposal near the posterior but wider: the decoder saturates, so the
 * posterior's tails are the prior's N(0, 1) tails times a constant, and
 * rho^2 is finite only for sd_q > 1/sqrt(2); 0.75 keeps it finite. */
static void near_posterior(const quad *q, double *mq, double *sq)
{
    *mq = q->mean;
    *sq = fmax(1.2 * q->sd, 0.75);
}

static void check_against_quadrature(tiny *t, const float *x, size_t K, uint64_t seed,
                                     const char *what)
{
    static quad q;
    integrate(&q, t, x);
    double mq, sq;
    near_posterior(&q, &mq, &sq);
    set_q(t, NULL, (float)mq, (float)log(sq * sq));
    /* The float proposal actually used. */
    mq = (float)mq;
    sq = sqrt((double)expf((float)log(sq * sq)));
    double rho2 = weight_variance(&q, mq, sq);
    /* A proposal this close keeps the test sharp. */
    if (!(rho2 >= 0.0 && rho2 < 1.0))
        fail_msg("%s: rho^2 = %g: the proposal is too far from the posterior", what, rho2);
    /* 6 standard deviations, plus the bias, plus float rounding. */
    double tol = 6.0 * sqrt(rho2 / (double)K) + rho2 / (double)K + 1e-4;
    assert_true(tol < 0.03);
    vae_rng *rng = NULL;
    OK(vae_rng_create(&rng, seed));
    double ll = 0.0;
    OK(vae_log_likelihood(g_ctx, t->m, x, 1, K, rng, &ll));
    vae_rng_free(rng);
    if (fabs(ll - q.logp) > tol)
        fail_msg("%s: estimate %.6f, quadrature %.6f (diff %.2g > tol %.2g; posterior %.3f "
                 "+- %.3f, q %.3f +- %.3f, rho^2 %.3g)",
                 what, ll, q.logp, ll - q.logp, tol, q.mean, q.sd, mq, sq, rho2);
}

static tiny gaussian_tanh(void)
{
    const float w1[4] = {1.5f, -1.0f, 0.7f, 2.0f}, b1[4] = {0.1f, 0.3f, -0.2f, 0.0f};
    const float w2[2 * 4] = {0.8f, -0.5f, 0.3f, 0.4f, -0.2f, 0.6f, 0.9f, -0.7f};
    const float b2[2] = {0.05f, -0.1f};
    return make_tiny(VAE_LIKELIHOOD_GAUSSIAN, 2, 4, VAE_ACT_TANH, w1, b1, w2, b2, 0.7f);
}

static tiny bernoulli_tanh(void)
{
    const float w1[4] = {1.2f, -0.8f, 2.0f, 0.5f}, b1[4] = {0.0f, 0.4f, -0.3f, 0.2f};
    const float w2[3 * 4] = {2.0f, -1.0f, 0.5f, 1.5f, -1.5f, 2.5f, 0.3f, -0.4f,
                             0.7f,  0.2f,  -2.0f, 1.0f};
    const float b2[3] = {0.1f, -0.3f, 0.2f};
    return make_tiny(VAE_LIKELIHOOD_BERNOULLI, 3, 4, VAE_ACT_TANH, w1, b1, w2, b2, 1.0f);
}

static void test_gaussian_vs_quadrature(void **state)
{
    (void)state;
    tiny t = gaussian_tanh();
    const float xs[3][2] = {{0.9f, -0.2f}, {-0.3f, 0.4f}, {1.6f, 1.2f}};
    for (size_t k = 0; k < 3; k++) {
        char what[32];
        snprintf(what, sizeof what, "Gaussian x%zu", k);
        check_against_quadrature(&t, xs[k], 50000, 100 + k, what);
    }
    vae_model_free(t.m);
}

static void test_bernoulli_vs_quadrature(void **state)
{
    (void)state;
    tiny t = bernoulli_tanh();
    /* Binary data, and values inside [0, 1], which the Bernoulli
     * log-likelihood (cross-entropy) takes too. */
    const float xs[4][3] = {{1, 0, 1}, {0, 1, 1}, {0, 0, 0}, {0.2f, 0.9f, 0.5f}};
    for (size_t k = 0; k < 4; k++) {
        char what[32];
        snprintf(what, sizeof what, "Bernoulli x%zu", k);
        check_against_quadrature(&t, xs[k], 50000, 200 + k, what);
    }
    vae_model_free(t.m);
}

/* ---- relation to the ELBO --------------------------------------------------------- */

static void test_bound_and_elbo(void **state)
{
    (void)state;
    tiny t = gaussian_tanh();
    const float x[2] = {0.9f, -0.2f};
    static quad q;
    integrate(&q, &t, x);
    /* A deliberately poor proposal: shifted and too wide, so the ELBO lies
     * well below log p(x). */
    double mq = (float)(q.mean + 0.7 * q.sd), sq = fmax(1.4 * q.sd, 0.8);
    set_q(&t, NULL, (float)mq, (float)log(sq * sq));
    sq = sqrt((double)expf((float)log(sq * sq)));
    const double elbo = exact_elbo(&q, mq, sq), gap = q.logp - elbo;
    assert_true(gap > 0.1);

    enum { N1 = 40000, N10 = 4000, N100 = 400 };
    double *v = malloc(N1 * sizeof *v);
    float *xr = malloc(N1 * 2 * sizeof *xr);
    assert_true(v && xr);
    for (size_t i = 0; i < N1; i++) {
        xr[2 * i] = x[0];
        xr[2 * i + 1] = x[1];
    }
    vae_rng *rng = NULL;
    OK(vae_rng_create(&rng, 31337));
    double m1, se1, m10, se10, m100, se100;
    /* K = 1 is one draw of log p(x|z) + log p(z) - log q(z): on average the
     * ELBO, not log p(x). */
    OK(vae_log_likelihood(g_ctx, t.m, xr, N1, 1, rng, v));
    mean_se(v, N1, &m1, &se1);
    if (fabs(m1 - elbo) > 5.0 * se1 + 1e-4)
        fail_msg("K = 1: mean %.5f +- %.5f, exact ELBO %.5f (log p %.5f)", m1, se1, elbo,
                 q.logp);
    /* vae_elbo_evaluate estimates the same ELBO (analytic KL, sampled
     * reconstruction term): -loss agrees within its own noise. */
    vae_elbo *e = NULL;
    OK(vae_elbo_create(&e));
    vae_epoch_stats st = {sizeof st};
    OK(vae_elbo_evaluate(g_ctx, t.m, e, xr, N1, NULL, rng, v, &st));
    const double loss = st.loss;
    double ml, sel;
    mean_se(v, N1, &ml, &sel);
    assert_true(fabs(ml - loss) < 1e-9 * fabs(loss) + 1e-12);
    if (fabs(-loss - elbo) > 5.0 * sel + 1e-4)
        fail_msg("vae_elbo_evaluate: -loss %.5f +- %.5f, exact ELBO %.5f", -loss, sel, elbo);
    vae_elbo_free(e);

    /* More samples tighten the bound towards log p(x), from below. */
    OK(vae_log_likelihood(g_ctx, t.m, xr, N10, 10, rng, v));
    mean_se(v, N10, &m10, &se10);
    OK(vae_log_likelihood(g_ctx, t.m, xr, N100, 100, rng, v));
    mean_se(v, N100, &m100, &se100);
    double rho2 = weight_variance(&q, mq, sq);
    if (!(m10 > m1 + 5.0 * hypot(se1, se10)) || !(m100 > m10 + 5.0 * hypot(se10, se100)))
        fail_msg("means for K = 1, 10, 100: %.5f (+-%.5f), %.5f (+-%.5f), %.5f (+-%.5f)", m1,
                 se1, m10, se10, m100, se100);
    assert_true(m100 > elbo + 0.8 * gap);
    /* The mean of log p_100 is log p(x) - rho^2 / 200 to first order. */
    if (fabs(m100 - (q.logp - rho2 / 200.0)) > 5.0 * se100 + rho2 / 200.0 + 1e-3)
        fail_msg("K = 100: mean %.5f +- %.5f, log p(x) %.5f, rho^2 %.3f", m100, se100, q.logp,
                 rho2);
    free(v);
    free(xr);
    vae_rng_free(rng);
    vae_model_free(t.m);
}

/* ---- determinism and per-sample generators ---------------------------------------- */

static void test_reproducible(void **state)
{
    (void)state;
    tiny a = bernoulli_tanh();
    set_q(&a, NULL, 0.3f, -0.5f);
    const float x[4 * 3] = {1, 0, 1, 0, 1, 1, 0.5f, 0.5f, 0.5f, 1, 1, 1};
    double r1[4], r2[4], r3[4];
    vae_rng *g1 = NULL, *g2 = NULL, *g3 = NULL;
    OK(vae_rng_create(&g1, 99));
    OK(vae_rng_create(&g2, 99));
    OK(vae_rng_create(&g3, 100));
    /* A context reserved for 7 rows grows to what K = 700 draws need and
     * computes the same bits as one that was never reserved. */
    vae_context *small = NULL;
    OK(vae_context_create(&small));
    OK(vae_context_reserve(small, a.m, 7));
    OK(vae_log_likelihood(g_ctx, a.m, x, 4, 700, g1, r1));
    OK(vae_log_likelihood(small, a.m, x, 4, 700, g2, r2));
    OK(vae_log_likelihood(g_ctx, a.m, x, 4, 700, g3, r3));
    for (size_t i = 0; i < 4; i++) {
        assert_true(isfinite(r1[i]));
        assert_true(r1[i] < 0.0); /* a probability of binary data below 1 */
        assert_true(r1[i] != r3[i]); /* another seed, other draws */
    }
    assert_memory_equal(r1, r2, sizeof r1);
    /* Same seed, same model: bit for bit. */
    vae_rng_free(g1);
    OK(vae_rng_create(&g1, 99));
    OK(vae_log_likelihood(g_ctx, a.m, x, 4, 700, g1, r3));
    assert_memory_equal(r1, r3, sizeof r1);

    /* Sample i draws its codes from its own generator, seeded by the i-th
     * draw of rng: four calls of one sample each, in order, on one
     * generator estimate the same numbers as one call of four. A sample
     * seeded from the wrong draw would be off by the estimator's noise, far
     * more than the 1e-9 left for a BLAS that rounds other batch shapes
     * differently. */
    vae_rng *g4 = NULL;
    OK(vae_rng_create(&g4, 99));
    for (size_t i = 0; i < 4; i++) {
        double one = 0.0;
        OK(vae_log_likelihood(small, a.m, x + 3 * i, 1, 700, g4, &one));
        if (fabs(one - r1[i]) > 1e-9 * fabs(r1[i]))
            fail_msg("sample %zu: %.17g alone, %.17g in the batch", i, one, r1[i]);
    }
    /* ...and both generators advanced by the same draws (one per sample). */
    float u1 = 0, u2 = 0;
    OK(vae_rng_uniform(g1, &u1, 1));
    OK(vae_rng_uniform(g4, &u2, 1));
    assert_true(u1 == u2);
    /* The same sample at another position of the batch gets other draws. */
    const float x2[2 * 3] = {0, 1, 1, 1, 0, 1};
    double rr[2];
    vae_rng_free(g1);
    OK(vae_rng_create(&g1, 99));
    OK(vae_log_likelihood(g_ctx, a.m, x2, 2, 700, g1, rr));
    assert_true(isfinite(rr[1]));
    assert_true(rr[1] != r1[0]);
    vae_rng_free(g1);
    vae_rng_free(g2);
    vae_rng_free(g3);
    vae_rng_free(g4);
    vae_context_free(small);
    vae_model_free(a.m);
}

/* ---- bad input ----------------------------------------------------------------------- */

static void test_bad_input(void **state)
{
    (void)state;
    tiny t = bernoulli_tanh();
    vae_rng *rng = NULL;
    OK(vae_rng_create(&rng, 1));
    float x[3] = {1, 0, 1};
    double out[2] = {0};
    const char *fn = "vae_log_likelihood";
    vae_context *c = g_ctx;
    EXPECT_ERR(vae_log_likelihood(NULL, t.m, x, 1, 5, rng, out), VAE_ERR_INVALID, fn, "context");
    EXPECT_ERR(vae_log_likelihood(c, NULL, x, 1, 5, rng, out), VAE_ERR_INVALID, fn, "model");
    EXPECT_ERR(vae_log_likelihood(c, t.m, NULL, 1, 5, rng, out), VAE_ERR_INVALID, fn, "x");
    EXPECT_ERR(vae_log_likelihood(c, t.m, x, 1, 5, NULL, out), VAE_ERR_INVALID, fn, "rng");
    EXPECT_ERR(vae_log_likelihood(c, t.m, x, 1, 5, rng, NULL), VAE_ERR_INVALID, fn, "out");
    EXPECT_ERR(vae_log_likelihood(c, t.m, x, 0, 5, rng, out), VAE_ERR_INVALID, fn, "n is 0");
    EXPECT_ERR(vae_log_likelihood(c, t.m, x, 1, 0, rng, out), VAE_ERR_INVALID, fn, "k = 0");
    EXPECT_ERR(vae_log_likelihood(c, t.m, x, 1, ((size_t)1 << 30) + 1, rng, out),
               VAE_ERR_INVALID, fn, "2^30");
    EXPECT_ERR(vae_log_likelihood(c, t.m, x, 1, SIZE_MAX, rng, out), VAE_ERR_INVALID, fn,
               "2^30");
    x[1] = NAN;
    EXPECT_ERR(vae_log_likelihood(c, t.m, x, 1, 5, rng, out), VAE_ERR_NUMERIC, fn, "x[0][1]");
    x[1] = INFINITY;
    EXPECT_ERR(vae_log_likelihood(c, t.m, x, 1, 5, rng, out), VAE_ERR_NUMERIC, fn, "x[0][1]");
    x[1] = 1.5f;
    EXPECT_ERR(vae_log_likelihood(c, t.m, x, 1, 5, rng, out), VAE_ERR_INVALID, fn, "[0, 1]");
    x[1] = 0.0f;
    OK(vae_log_likelihood(c, t.m, x, 1, 5, rng, out));
    assert_true(isfinite(out[0]) && out[0] < 0.0);
    vae_model_free(t.m);

    vae_model *unbuilt = NULL;
    OK(vae_model_create(&unbuilt, 3, 1, VAE_LIKELIHOOD_BERNOULLI));
    EXPECT_ERR(vae_log_likelihood(c, unbuilt, x, 1, 5, rng, out), VAE_ERR_STATE, fn, "build");
    vae_model_free(unbuilt);

    /* A decoder whose output overflows: the estimate is not finite. */
    const float w[2] = {1.0f, 1.0f}, huge[2] = {3e38f, -3e38f};
    tiny g = make_tiny(VAE_LIKELIHOOD_GAUSSIAN, 2, 0, 0, NULL, NULL, w, huge, 1.0f);
    const float xg[4] = {0.0f, 0.0f, 1.0f, 1.0f};
    EXPECT_ERR(vae_log_likelihood(c, g.m, xg, 2, 4, rng, out), VAE_ERR_NUMERIC, fn,
               "sample 0");
    vae_model_free(g.m);
    vae_rng_free(rng);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_gaussian_exact),
        cmocka_unit_test(test_gaussian_vs_quadrature),
        cmocka_unit_test(test_bernoulli_vs_quadrature),
        cmocka_unit_test(test_bound_and_elbo),
        cmocka_unit_test(test_reproducible),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
