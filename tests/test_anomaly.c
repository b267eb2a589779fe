/* Anomaly scores (vae_anomaly_score) against references made of the public
 * calls they are defined by: vae_elbo_evaluate for the -ELBO and the
 * reconstruction probability (beta 0), vae_log_likelihood for -log p(x), and
 * zlib's compress2 of the 8-bit quantized input for the complexity term.
 * Every comparison is bit for bit, with one worker and with two. */
#include <zlib.h>

#include "test_util.h"

#define EXPECT_ERR(call, expected, fn, needle) TU_EXPECT_ERR_MSG(call, expected, fn, needle)
#define OK(call) TU_OK(call)

#define LN2 0.69314718055994530942
#define FN "vae_anomaly_score"

enum { D = 12, L = 3, N = 150 }; /* 150 samples: 3 blocks of 50 */

static vae_context *g_ctx1, *g_ctx2; /* one worker, two workers */
static vae_model *g_m;               /* Bernoulli 12-8-3 */
static float g_x[N * D];             /* in [0, 1] */

static int group_setup(void **state)
{
    (void)state;
    size_t hidden[] = {8};
    tu_rng r = {11};
    tu_fill_range(&r, g_x, N * D, 0.0, 1.0);
    for (size_t j = 0; j < D; j++) /* sample 1 all zeros: simple, compresses well */
        g_x[D + j] = 0.0f;
    /* Sample 2 all 255 once rounded to 8 bits, but 254 or 255 when truncated. */
    for (size_t j = 0; j < D; j++)
        g_x[2 * D + j] = (0x5b3u >> j) & 1u ? 1.0f : 0.999f;
    if (vae_blas_set_threads(1) || vae_context_create(&g_ctx1) ||
        vae_context_create(&g_ctx2) || vae_context_set_threads(g_ctx2, 2) ||
        vae_model_create_mlp(&g_m, D, hidden, 1, L, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI, 5))
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    vae_model_free(g_m);
    vae_context_free(g_ctx1);
    vae_context_free(g_ctx2);
    return 0;
}

static vae_rng *rng_at(uint64_t seed)
{
    vae_rng *r = NULL;
    OK(vae_rng_create(&r, seed));
    return r;
}

/* Fails unless a and b hold the same n doubles, bit for bit. */
static void assert_same(const double *a, const double *b, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof a[i]) != 0)
            fail_msg("%s: sample %zu: %.17g, reference %.17g", what, i, a[i], b[i]);
}

/* Both generators have advanced by the same amount: their next draws agree. */
static void assert_same_state(vae_rng *a, vae_rng *b)
{
    float u = 0, v = 0;
    OK(vae_rng_uniform(a, &u, 1));
    OK(vae_rng_uniform(b, &v, 1));
    assert_true(u == v);
}

/* The reference of the pass-based kinds: mean of k vae_elbo_evaluate
 * per-sample losses with the given beta, summed in pass order. */
static void ref_pass_mean(vae_context *ctx, const vae_model *m, const float *x, size_t n,
                          double beta, size_t k, vae_rng *rng, double *out)
{
    vae_elbo *e = NULL;
    double *tmp = tu_alloc(n, sizeof *tmp);
    OK(vae_elbo_create(&e));
    OK(vae_elbo_set_param(e, VAE_ELBO_BETA, beta));
    for (size_t r = 0; r < k; r++) {
        OK(vae_elbo_evaluate(ctx, m, e, x, n, NULL, rng, r ? tmp : out, NULL));
        if (r)
            for (size_t i = 0; i < n; i++)
                out[i] += tmp[i];
    }
    for (size_t i = 0; i < n; i++)
        out[i] /= (double)k;
    vae_elbo_free(e);
    free(tmp);
}

/* The complexity term of input x[d]: 8 ln 2 times the compressed length in
 * bytes of round(255 clamp(x, 0, 1)) at level 9. */
static double ref_complexity(const float *x, size_t d, size_t *bytes)
{
    unsigned char q[64], z[256];
    assert_true(d <= sizeof q);
    for (size_t j = 0; j < d; j++) {
        float v = x[j] < 0.0f ? 0.0f : x[j] > 1.0f ? 1.0f : x[j];
        q[j] = (unsigned char)(255.0f * v + 0.5f);
    }
    unsigned long len = sizeof z;
    assert_int_equal(compress2(z, &len, q, (unsigned long)d, 9), Z_OK);
    *bytes = len;
    return 8.0 * LN2 * (double)len;
}

/* ---- each kind against its reference --------------------------------------------- */

static void neg_elbo_equals_elbo_evaluate(void **state)
{
    (void)state;
    double got[N], want[N];
    for (size_t k = 1; k <= 3; k += 2) {
        vae_rng *a = rng_at(21), *b = rng_at(21);
        OK(vae_anomaly_score(g_ctx1, g_m, g_x, N, VAE_ANOMALY_NEG_ELBO, k, a, got));
        ref_pass_mean(g_ctx1, g_m, g_x, N, 1.0, k, b, want);
        assert_same(got, want, N, k == 1 ? "-ELBO, k = 1" : "-ELBO, k = 3");
        assert_same_state(a, b);
        vae_rng_free(a);
        vae_rng_free(b);
    }
    /* k = 1 is exactly the per-sample output of vae_elbo_evaluate with the default
     * objective, and a score is a positive number of nats. */
    vae_elbo *e = NULL;
    vae_rng *a = rng_at(22), *b = rng_at(22);
    OK(vae_elbo_create(&e));
    OK(vae_anomaly_score(g_ctx1, g_m, g_x, N, VAE_ANOMALY_NEG_ELBO, 1, a, got));
    OK(vae_elbo_evaluate(g_ctx1, g_m, e, g_x, N, NULL, b, want, NULL));
    assert_same(got, want, N, "-ELBO against the default objective");
    for (size_t i = 0; i < N; i++)
        assert_true(got[i] > 0.0);
    vae_elbo_free(e);
    vae_rng_free(a);
    vae_rng_free(b);
}

static void recon_prob_equals_beta_zero_passes(void **state)
{
    (void)state;
    double got[N], want[N], elbo[N];
    vae_rng *a = rng_at(31), *b = rng_at(31), *c = rng_at(31);
    OK(vae_anomaly_score(g_ctx1, g_m, g_x, N, VAE_ANOMALY_RECON_PROB, 4, a, got));
    ref_pass_mean(g_ctx1, g_m, g_x, N, 0.0, 4, b, want);
    assert_same(got, want, N, "reconstruction probability");
    assert_same_state(a, b);
    /* Same noise, beta 1: the -ELBO adds a KL term that is positive. */
    OK(vae_anomaly_score(g_ctx1, g_m, g_x, N, VAE_ANOMALY_NEG_ELBO, 4, c, elbo));
    for (size_t i = 0; i < N; i++)
        assert_true(elbo[i] > got[i]);
    vae_rng_free(a);
    vae_rng_free(b);
    vae_rng_free(c);
}

static void neg_log_likelihood_equals_log_likelihood(void **state)
{
    (void)state;
    double got[N], ll[N];
    vae_rng *a = rng_at(41), *b = rng_at(41);
    OK(vae_anomaly_score(g_ctx1, g_m, g_x, N, VAE_ANOMALY_NEG_LOG_LIKELIHOOD, 5, a, got));
    OK(vae_log_likelihood(g_ctx1, g_m, g_x, N, 5, b, ll));
    for (size_t i = 0; i < N; i++)
        ll[i] = -ll[i];
    assert_same(got, ll, N, "-log p(x)");
    assert_same_state(a, b);
    vae_rng_free(a);
    vae_rng_free(b);
}

static void complexity_subtracts_the_zlib_length(void **state)
{
    (void)state;
    double got[N], want[N];
    size_t len[N];
    vae_rng *a = rng_at(51), *b = rng_at(51);
    OK(vae_anomaly_score(g_ctx1, g_m, g_x, N, VAE_ANOMALY_COMPLEXITY, 5, a, got));
    OK(vae_log_likelihood(g_ctx1, g_m, g_x, N, 5, b, want));
    for (size_t i = 0; i < N; i++)
        want[i] = -want[i] - ref_complexity(g_x + i * D, D, &len[i]);
    assert_same(got, want, N, "complexity-corrected score");
    /* The all-zero sample and the one that rounds to all 255 compress to fewer bytes
     * than a noisy one. */
    assert_true(len[1] < len[0]);
    assert_true(len[2] < len[0]);

    /* A Gaussian model takes any value: the quantization clamps to [0, 1]. */
    vae_model *g = NULL;
    size_t hidden[] = {8};
    OK(vae_model_create_mlp(&g, D, hidden, 1, L, VAE_ACT_RELU, VAE_LIKELIHOOD_GAUSSIAN, 6));
    float x[4 * D];
    tu_rng r = {12};
    tu_fill_range(&r, x, 4 * D, -2.0, 3.0);
    double gs[4], gl[4];
    vae_rng *c = rng_at(52), *d = rng_at(52);
    OK(vae_anomaly_score(g_ctx2, g, x, 4, VAE_ANOMALY_COMPLEXITY, 3, c, gs));
    OK(vae_log_likelihood(g_ctx2, g, x, 4, 3, d, gl));
    for (size_t i = 0; i < 4; i++)
        gl[i] = -gl[i] - ref_complexity(x + i * D, D, &len[i]);
    assert_same(gs, gl, 4, "complexity-corrected score, Gaussian");
    vae_model_free(g);
    vae_rng_free(a);
    vae_rng_free(b);
    vae_rng_free(c);
    vae_rng_free(d);
}

static void workers_do_not_change_the_scores(void **state)
{
    (void)state;
    static const int kinds[] = {VAE_ANOMALY_NEG_ELBO, VAE_ANOMALY_NEG_LOG_LIKELIHOOD,
                                VAE_ANOMALY_RECON_PROB, VAE_ANOMALY_COMPLEXITY};
    double one[N], two[N];
    for (size_t q = 0; q < sizeof kinds / sizeof kinds[0]; q++) {
        vae_rng *a = rng_at(61 + q), *b = rng_at(61 + q);
        OK(vae_anomaly_score(g_ctx1, g_m, g_x, N, kinds[q], 3, a, one));
        OK(vae_anomaly_score(g_ctx2, g_m, g_x, N, kinds[q], 3, b, two));
        char what[32];
        snprintf(what, sizeof what, "kind %d", kinds[q]);
        assert_same(one, two, N, what);
        assert_same_state(a, b);
        vae_rng_free(a);
        vae_rng_free(b);
    }
}

/* ---- bad arguments ---------------------------------------------------------------- */

static void bad_arguments(void **state)
{
    (void)state;
    double out[N];
    vae_rng *r = rng_at(71);
    const int E = VAE_ANOMALY_NEG_ELBO;
    EXPECT_ERR(vae_anomaly_score(NULL, g_m, g_x, 2, E, 1, r, out), VAE_ERR_INVALID, FN,
               "ctx is NULL");
    EXPECT_ERR(vae_anomaly_score(g_ctx1, NULL, g_x, 2, E, 1, r, out), VAE_ERR_INVALID, FN,
               "m is NULL");
    EXPECT_ERR(vae_anomaly_score(g_ctx1, g_m, NULL, 2, E, 1, r, out), VAE_ERR_INVALID, FN,
               "x is NULL");
    EXPECT_ERR(vae_anomaly_score(g_ctx1, g_m, g_x, 2, E, 1, NULL, out), VAE_ERR_INVALID, FN,
               "rng is NULL");
    EXPECT_ERR(vae_anomaly_score(g_ctx1, g_m, g_x, 2, E, 1, r, NULL), VAE_ERR_INVALID, FN,
               "out is NULL");
    EXPECT_ERR(vae_anomaly_score(g_ctx1, g_m, g_x, 2, -1, 1, r, out), VAE_ERR_INVALID, FN,
               "kind = -1");
    EXPECT_ERR(vae_anomaly_score(g_ctx1, g_m, g_x, 2, 4, 1, r, out), VAE_ERR_INVALID, FN,
               "kind = 4");
    EXPECT_ERR(vae_anomaly_score(g_ctx1, g_m, g_x, 0, E, 1, r, out), VAE_ERR_INVALID, FN,
               "n = 0");
    EXPECT_ERR(vae_anomaly_score(g_ctx1, g_m, g_x, ((size_t)1 << 20) + 1, E, 1, r, out),
               VAE_ERR_INVALID, FN, "n = 1048577");
    EXPECT_ERR(vae_anomaly_score(g_ctx1, g_m, g_x, 2, VAE_ANOMALY_COMPLEXITY, 0, r, out),
               VAE_ERR_INVALID, FN, "k = 0");
    EXPECT_ERR(vae_anomaly_score(g_ctx1, g_m, g_x, 2, VAE_ANOMALY_RECON_PROB,
                                 ((size_t)1 << 30) + 1, r, out),
               VAE_ERR_INVALID, FN, "k = 1073741825");

    /* A model that is not built. */
    vae_model *raw = NULL;
    OK(vae_model_create(&raw, D, L, VAE_LIKELIHOOD_BERNOULLI));
    EXPECT_ERR(vae_anomaly_score(g_ctx1, raw, g_x, 2, E, 1, r, out), VAE_ERR_STATE, FN,
               "build the model first");
    vae_model_free(raw);

    /* Inputs outside [0, 1] for a Bernoulli model, and a NaN, for every kind: the
     * message names this function, not the call it is made of. */
    float x[2 * D];
    memcpy(x, g_x, sizeof x);
    for (int kind = VAE_ANOMALY_NEG_ELBO; kind <= VAE_ANOMALY_COMPLEXITY; kind++) {
        x[D + 3] = 1.5f;
        EXPECT_ERR(vae_anomaly_score(g_ctx2, g_m, x, 2, kind, 2, r, out), VAE_ERR_INVALID, FN,
                   "[0, 1]");
        assert_null(strstr(vae_last_error(), "vae_log_likelihood"));
        assert_null(strstr(vae_last_error(), "vae_elbo_evaluate"));
        x[D + 3] = NAN;
        EXPECT_ERR(vae_anomaly_score(g_ctx2, g_m, x, 2, kind, 2, r, out), VAE_ERR_NUMERIC, FN,
                   NULL);
    }
    vae_rng_free(r);
}

/* From a progress callback the trainer's context is in use: every kind
 * fails with VAE_ERR_STATE there and works on another context. */
typedef struct meddle {
    vae_context *busy, *other;
    vae_rng *rng;
    int wrong, calls;
} meddle;

static int meddle_progress(void *payload, size_t done, size_t total, double running_loss)
{
    (void)done;
    (void)total;
    (void)running_loss;
    meddle *s = payload;
    double out[2];
    s->calls++;
    for (int kind = VAE_ANOMALY_NEG_ELBO; kind <= VAE_ANOMALY_COMPLEXITY; kind++) {
        (void)vae_rng_uniform(NULL, NULL, 0);
        int rc = vae_anomaly_score(s->busy, g_m, g_x, 2, kind, 2, s->rng, out);
        if (rc != VAE_ERR_STATE || !strstr(vae_last_error(), FN)) {
            print_error("kind %d on the busy context: %d (%s)\n", kind, rc, vae_last_error());
            s->wrong++;
        }
        if (vae_anomaly_score(s->other, g_m, g_x, 2, kind, 2, s->rng, out) != VAE_OK) {
            print_error("kind %d on another context: %s\n", kind, vae_last_error());
            s->wrong++;
        }
    }
    return 0;
}

static void context_in_use(void **state)
{
    (void)state;
    vae_model *m = NULL;
    vae_elbo *e = NULL;
    vae_optimizer *opt = NULL;
    vae_trainer *t = NULL;
    vae_dataset *ds = NULL;
    size_t hidden[] = {8};
    meddle s = {g_ctx2, g_ctx1, rng_at(81), 0, 0};
    OK(vae_model_create_mlp(&m, D, hidden, 1, L, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI, 7));
    OK(vae_elbo_create(&e));
    OK(vae_optimizer_create(&opt, VAE_OPTIMIZER_ADAM));
    OK(vae_trainer_create(&t, m, e, opt, g_ctx2, 1));
    OK(vae_dataset_from_floats(&ds, g_x, N, D, NULL));
    vae_train_options o;
    OK(vae_train_options_init(&o, sizeof o));
    o.batch_size = 50;
    o.progress = meddle_progress;
    o.payload = &s;
    OK(vae_trainer_train_epoch(t, ds, &o, NULL));
    assert_true(s.calls > 0);
    assert_int_equal(s.wrong, 0);
    vae_dataset_free(ds);
    vae_trainer_free(t);
    vae_optimizer_free(opt);
    vae_elbo_free(e);
    vae_model_free(m);
    vae_rng_free(s.rng);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(neg_elbo_equals_elbo_evaluate),
        cmocka_unit_test(recon_prob_equals_beta_zero_passes),
        cmocka_unit_test(neg_log_likelihood_equals_log_likelihood),
        cmocka_unit_test(complexity_subtracts_the_zlib_length),
        cmocka_unit_test(workers_do_not_change_the_scores),
        cmocka_unit_test(bad_arguments),
        cmocka_unit_test(context_in_use),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
