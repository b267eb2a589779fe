/* The seeded generator: reproducibility, distributions, bad input. */
#include "test_util.h"

#define N_DRAWS 100000

static void test_same_seed_same_stream(void **state)
{
    (void)state;
    vae_rng *a = NULL, *b = NULL;
    TU_OK(vae_rng_create(&a, 42));
    TU_OK(vae_rng_create(&b, 42));
    float xa[257], xb[257];
    /* Uneven chunk sizes: Box-Muller makes normals in pairs, and the spare
     * must carry over between calls exactly as in one long call. */
    TU_OK(vae_rng_normal(a, xa, 257));
    TU_OK(vae_rng_normal(b, xb, 100));
    TU_OK(vae_rng_normal(b, xb + 100, 1));
    TU_OK(vae_rng_normal(b, xb + 101, 156));
    assert_memory_equal(xa, xb, sizeof xa);
    TU_OK(vae_rng_uniform(a, xa, 257));
    TU_OK(vae_rng_uniform(b, xb, 257));
    assert_memory_equal(xa, xb, sizeof xa);
    vae_rng_free(a);
    vae_rng_free(b);
}

static void test_different_seeds_differ(void **state)
{
    (void)state;
    /* Seed 0 included: the generator must not get stuck in the all-zero state. */
    const uint64_t seeds[] = {0, 1, 2, 42, UINT64_MAX};
    enum { NS = sizeof seeds / sizeof seeds[0], N = 64 };
    float u[NS][N];
    for (size_t s = 0; s < NS; s++) {
        vae_rng *r = NULL;
        TU_OK(vae_rng_create(&r, seeds[s]));
        TU_OK(vae_rng_uniform(r, u[s], N));
        vae_rng_free(r);
        /* Within one stream the values vary too. */
        size_t distinct = 0;
        for (size_t i = 1; i < N; i++)
            distinct += u[s][i] != u[s][0];
        assert_true(distinct > N / 2);
    }
    for (size_t s = 0; s < NS; s++)
        for (size_t t = 0; t < s; t++) {
            /* 64 draws of 24 bits each: equal by chance with probability ~0. */
            size_t same = 0;
            for (size_t i = 0; i < N; i++)
                same += u[s][i] == u[t][i];
            assert_true(same < 4);
        }
}

static void test_normal_moments(void **state)
{
    (void)state;
    vae_rng *r = NULL;
    TU_OK(vae_rng_create(&r, 7));
    float *x = tu_alloc(N_DRAWS, sizeof *x);
    TU_OK(vae_rng_normal(r, x, N_DRAWS));
    double s = 0.0, s2 = 0.0, s4 = 0.0;
    size_t beyond3 = 0;
    for (size_t i = 0; i < N_DRAWS; i++) {
        assert_true(isfinite(x[i]));
        s += x[i];
        s2 += (double)x[i] * x[i];
        s4 += (double)x[i] * x[i] * x[i] * x[i];
        beyond3 += fabsf(x[i]) > 3.0f;
    }
    double mean = s / N_DRAWS, var = s2 / N_DRAWS - mean * mean, kurt = s4 / N_DRAWS;
    /* Standard errors for n = 1e5: mean 1/sqrt(n) = 0.0032, variance
     * sqrt(2/n) = 0.0045, fourth moment sqrt(96/n) = 0.031. Tolerances are
     * about 5 standard errors, so a correct generator fails with probability
     * < 1e-6 while a wrong scale (e.g. variance 2 or 0.5) fails for sure. */
    TU_CLOSE(mean, 0.0, 0.0, 0.016);
    TU_CLOSE(var, 1.0, 0.0, 0.023);
    TU_CLOSE(kurt, 3.0, 0.0, 0.16);
    /* P(|x| > 3) = 0.0027: 270 expected, sd 16.4. */
    assert_true(beyond3 > 190 && beyond3 < 350);
    free(x);
    vae_rng_free(r);
}

static void test_uniform_range_and_moments(void **state)
{
    (void)state;
    vae_rng *r = NULL;
    TU_OK(vae_rng_create(&r, 9));
    float *x = tu_alloc(N_DRAWS, sizeof *x);
    TU_OK(vae_rng_uniform(r, x, N_DRAWS));
    double s = 0.0, s2 = 0.0;
    size_t bins[10] = {0};
    for (size_t i = 0; i < N_DRAWS; i++) {
        assert_true(x[i] >= 0.0f);
        assert_true(x[i] < 1.0f);
        s += x[i];
        s2 += (double)x[i] * x[i];
        bins[(size_t)((double)x[i] * 10.0)]++; /* double: no rounding up to 10 */
    }
    double mean = s / N_DRAWS, var = s2 / N_DRAWS - mean * mean;
    /* sd of the mean sqrt(1/12n) = 0.00091, of the variance ~0.00027. */
    TU_CLOSE(mean, 0.5, 0.0, 0.005);
    TU_CLOSE(var, 1.0 / 12.0, 0.0, 0.0014);
    /* Each decile holds 1e4 +- 95 (sd); 6 sd bounds. */
    for (size_t b = 0; b < 10; b++)
        assert_true(bins[b] > 9430 && bins[b] < 10570);
    free(x);
    vae_rng_free(r);
}

static void test_zero_count(void **state)
{
    (void)state;
    vae_rng *r = NULL;
    TU_OK(vae_rng_create(&r, 3));
    float guard = 123.0f;
    /* n = 0 is a valid empty request and writes nothing. */
    TU_OK(vae_rng_normal(r, &guard, 0));
    TU_OK(vae_rng_uniform(r, &guard, 0));
    assert_true(guard == 123.0f);
    vae_rng_free(r);
}

static void test_bad_input(void **state)
{
    (void)state;
    vae_rng *r = NULL;
    float x[4];
    TU_EXPECT_ERR(vae_rng_create(NULL, 1), VAE_ERR_INVALID, "vae_rng_create");
    TU_OK(vae_rng_create(&r, 3));
    TU_EXPECT_ERR(vae_rng_normal(NULL, x, 4), VAE_ERR_INVALID, "vae_rng_normal");
    TU_EXPECT_ERR(vae_rng_normal(r, NULL, 4), VAE_ERR_INVALID, "vae_rng_normal");
    TU_EXPECT_ERR(vae_rng_uniform(NULL, x, 4), VAE_ERR_INVALID, "vae_rng_uniform");
    TU_EXPECT_ERR(vae_rng_uniform(r, NULL, 4), VAE_ERR_INVALID, "vae_rng_uniform");
    vae_rng_free(r);
    vae_rng_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_seed_same_stream),
        cmocka_unit_test(test_different_seeds_differ),
        cmocka_unit_test(test_normal_moments),
        cmocka_unit_test(test_uniform_range_and_moments),
        cmocka_unit_test(test_zero_count),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
