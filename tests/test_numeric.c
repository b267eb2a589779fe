/* The library's own scalar kernels (lib/core/numeric.h) against libm in
 * double: they replace expf and log1pf in the Bernoulli loss and softplus.
 * Also: what they give for NaN and infinities, without undefined
 * behaviour (build with clang's -fsanitize=undefined, which includes
 * float-cast-overflow, to see the difference; GCC's leaves it out). */
#include <float.h>

#include "test_util.h"

#include "../lib/core/numeric.h"

/* Over [-87, 0] in steps of 1e-4 (870001 points): at most 3e-7 relative,
 * i.e. within about 2 ulp of the correctly rounded float. */
static void test_exp_nonpos(void **state)
{
    (void)state;
    double worst = 0;
    for (long i = 0; i <= 870000; i++) {
        float x = (float)(-1e-4 * (double)i);
        double ref = exp((double)x), rel = fabs(vae_exp_nonpos(x) - ref) / ref;
        if (rel > worst)
            worst = rel;
    }
    assert_true(worst < 3e-7);
    assert_true(vae_exp_nonpos(0.0f) == 1.0f);
    /* Below -87 the result stays at e^-87, a normal float. */
    float low = vae_exp_nonpos(-1000.0f);
    assert_true(low >= 1.17549435e-38f && low < 1.7e-38f);
    assert_true(vae_exp_nonpos(-87.0f) == low);
}

/* vae_exp_nonpos as it was before NaN was handled: k from x itself. The
 * new one must give the same bits on the whole domain. */
static float exp_nonpos_ref(float x)
{
    x = x < -87.0f ? -87.0f : x;
    int k = (int)(x * 1.44269504088896341f - 0.5f);
    float kf = (float)k;
    float r = (x - kf * 0.693145751953125f) - kf * 1.42860682030941723212e-6f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union {
        uint32_t u;
        float f;
    } scale = {(uint32_t)(k + 127) << 23};
    return p * scale.f;
}

/* NaN in gives NaN out, infinities give defined values, and nothing on the
 * way is undefined: the float-to-int conversion inside used to get NaN (a
 * logit that training had made NaN), which UBSan reports as "nan is
 * outside the range of representable values of type 'int'". In a loop
 * like the library's (which the compiler may vectorize) and one value at a
 * time through volatile, so that nothing is folded at compile time. */
static void test_exp_nonpos_special(void **state)
{
    (void)state;
    volatile float vnan = NAN, vinf = INFINITY, vbig = 1e30f, vmax = FLT_MAX;
    assert_true(isnan(vae_exp_nonpos(vnan)));
    assert_true(isnan(vae_exp_nonpos(-vnan)));
    const float low = vae_exp_nonpos(-87.0f);
    assert_true(vae_exp_nonpos(-vinf) == low);                 /* as any x below -87 */
    assert_true(vae_exp_nonpos(-vmax) == low);
    assert_true(isinf(vae_exp_nonpos(vinf)) && vae_exp_nonpos(vinf) > 0.0f);
    /* Positive x are outside the domain: defined, not NaN. */
    assert_false(isnan(vae_exp_nonpos(vbig)));
    assert_false(isnan(vae_exp_nonpos(vmax)));

    /* The sigmoid built on it: NaN stays NaN, infinities saturate. */
    assert_true(isnan(vae_sigmoidf(vnan)));
    assert_true(vae_sigmoidf(vinf) == 1.0f);
    assert_true(vae_sigmoidf(-vinf) > 0.0f && vae_sigmoidf(-vinf) < 1e-37f);

    /* A loop over a mix, as the Bernoulli loss runs it (t = e^-|a|). */
    enum { N = 67 };
    float a[N], t[N];
    for (size_t i = 0; i < N; i++)
        a[i] = (float)i - 33.0f;
    a[3] = NAN;
    a[17] = INFINITY;
    a[18] = -INFINITY;
    a[40] = -NAN;
    a[66] = FLT_MAX;
    for (size_t i = 0; i < N; i++)
        t[i] = vae_exp_nonpos(-fabsf(a[i]));
    for (size_t i = 0; i < N; i++) {
        if (isnan(a[i]))
            assert_true(isnan(t[i]));
        else if (isinf(a[i]) || a[i] == FLT_MAX)
            assert_true(t[i] == low);
        else
            assert_true(t[i] == exp_nonpos_ref(-fabsf(a[i])));
    }
}

/* The NaN handling changes no value of the domain: the same bits as the
 * former single clamp over [-100, 0] in steps of 1e-4, and at -0. */
static void test_exp_nonpos_unchanged(void **state)
{
    (void)state;
    for (long i = 0; i <= 1000000; i++) {
        float x = (float)(-1e-4 * (double)i);
        float a = vae_exp_nonpos(x), b = exp_nonpos_ref(x);
        if (memcmp(&a, &b, sizeof a) != 0)
            fail_msg("vae_exp_nonpos(%.9g) = %.9g, was %.9g", (double)x, (double)a, (double)b);
    }
    assert_true(vae_exp_nonpos(-0.0f) == 1.0f);
}

/* log(1 + t) on [0, 1]: at most 3e-7 relative, exact 0 at 0, and tiny
 * arguments keep their value (log1p(t) ~ t). */
static void test_log1p_unit(void **state)
{
    (void)state;
    double worst = 0;
    for (long i = 1; i <= 1000000; i++) {
        float t = (float)(1e-6 * (double)i);
        double ref = log1p((double)t), rel = fabs(vae_log1p_unit(t) - ref) / ref;
        if (rel > worst)
            worst = rel;
    }
    assert_true(worst < 3e-7);
    assert_true(vae_log1p_unit(0.0f) == 0.0f);
    TU_CLOSE(vae_log1p_unit(1e-30f), 1e-30, 1e-6, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exp_nonpos),
        cmocka_unit_test(test_exp_nonpos_special),
        cmocka_unit_test(test_exp_nonpos_unchanged),
        cmocka_unit_test(test_log1p_unit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
