/* The library's own scalar kernels (lib/core/numeric.h) against libm in
 * double: they replace expf and log1pf in the Bernoulli loss and softplus. */
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
        cmocka_unit_test(test_log1p_unit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
