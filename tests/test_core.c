/* Status codes, error messages, versions and pinned ABI values. */
#include <pthread.h>

#include "test_util.h"

static const int all_status[] = {VAE_OK,          VAE_ERR_INVALID, VAE_ERR_SHAPE,
                                 VAE_ERR_NOMEM,   VAE_ERR_IO,      VAE_ERR_FORMAT,
                                 VAE_ERR_NUMERIC, VAE_ERR_STATE,   VAE_ERR_CANCELLED};
#define N_STATUS (sizeof all_status / sizeof all_status[0])

static void test_strerror_distinct(void **state)
{
    (void)state;
    const char *unknown = vae_strerror(12345);
    assert_non_null(unknown);
    assert_true(unknown[0] != '\0');
    for (size_t i = 0; i < N_STATUS; i++) {
        const char *s = vae_strerror(all_status[i]);
        assert_non_null(s);
        assert_true(s[0] != '\0');
        /* A known code must not fall through to the unknown-code text. */
        assert_string_not_equal(s, unknown);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(s, vae_strerror(all_status[j]));
    }
    /* Codes just outside the range and extreme values are unknown, not a crash. */
    assert_string_equal(vae_strerror(1), unknown);
    assert_string_equal(vae_strerror(-9), unknown);
    assert_string_equal(vae_strerror(-2147483647 - 1), unknown);
    assert_string_equal(vae_strerror(2147483647), unknown);
}

static void test_status_values_pinned(void **state)
{
    (void)state;
    /* Part of the ABI: a binding compiled against any release hard-codes these. */
    assert_int_equal(VAE_OK, 0);
    assert_int_equal(VAE_ERR_INVALID, -1);
    assert_int_equal(VAE_ERR_SHAPE, -2);
    assert_int_equal(VAE_ERR_NOMEM, -3);
    assert_int_equal(VAE_ERR_IO, -4);
    assert_int_equal(VAE_ERR_FORMAT, -5);
    assert_int_equal(VAE_ERR_NUMERIC, -6);
    assert_int_equal(VAE_ERR_STATE, -7);
    assert_int_equal(VAE_ERR_CANCELLED, -8);
}

static void test_enum_values_pinned(void **state)
{
    (void)state;
    assert_int_equal(VAE_ACT_IDENTITY, 0);
    assert_int_equal(VAE_ACT_RELU, 1);
    assert_int_equal(VAE_ACT_LEAKY_RELU, 2);
    assert_int_equal(VAE_ACT_TANH, 3);
    assert_int_equal(VAE_ACT_SIGMOID, 4);
    assert_int_equal(VAE_ACT_SOFTPLUS, 5);
    assert_int_equal(VAE_ACT_ELU, 6);
    assert_int_equal(VAE_LIKELIHOOD_BERNOULLI, 0);
    assert_int_equal(VAE_LIKELIHOOD_GAUSSIAN, 1);
    assert_int_equal(VAE_OBJECTIVE_ELBO, 0);
    assert_int_equal(VAE_OBJECTIVE_AUTOENCODER, 1);
    /* Added in 1.0: layer kinds and geometry, settings of the objective, the
     * model and the optimizers. */
    assert_int_equal(VAE_LAYER_DENSE, 1);
    assert_int_equal(VAE_LAYER_CONV2D, 2);
    assert_int_equal(VAE_LAYER_CONV2D_TRANSPOSE, 3);
    assert_int_equal(VAE_LAYER_INPUTS, 1);
    assert_int_equal(VAE_LAYER_OUTPUTS, 2);
    assert_int_equal(VAE_LAYER_PARAMS, 3);
    assert_int_equal(VAE_LAYER_IN_CHANNELS, 4);
    assert_int_equal(VAE_LAYER_IN_HEIGHT, 5);
    assert_int_equal(VAE_LAYER_IN_WIDTH, 6);
    assert_int_equal(VAE_LAYER_OUT_CHANNELS, 7);
    assert_int_equal(VAE_LAYER_OUT_HEIGHT, 8);
    assert_int_equal(VAE_LAYER_OUT_WIDTH, 9);
    assert_int_equal(VAE_LAYER_KERNEL_HEIGHT, 10);
    assert_int_equal(VAE_LAYER_KERNEL_WIDTH, 11);
    assert_int_equal(VAE_LAYER_STRIDE, 12);
    assert_int_equal(VAE_LAYER_PADDING, 13);
    assert_int_equal(VAE_LAYER_OUTPUT_PADDING, 14);
    assert_int_equal(VAE_MODEL_GAUSSIAN_SIGMA, 1);
    assert_int_equal(VAE_ELBO_BETA, 1);
    assert_int_equal(VAE_ELBO_OBJECTIVE, 2);
    assert_int_equal(VAE_OPTIMIZER_SGD, 1);
    assert_int_equal(VAE_OPTIMIZER_ADAM, 2);
    assert_int_equal(VAE_OPT_LR, 1);
    assert_int_equal(VAE_OPT_WEIGHT_DECAY, 2);
    assert_int_equal(VAE_OPT_CLIP_NORM, 3);
    assert_int_equal(VAE_OPT_BETA1, 4);
    assert_int_equal(VAE_OPT_BETA2, 5);
    assert_int_equal(VAE_OPT_EPS, 6);
    assert_int_equal(VAE_OPT_MOMENTUM, 7);
    assert_int_equal(VAE_OPT_NESTEROV, 8);
    assert_int_equal(VAE_OPT_DAMPENING, 9);
}

/* The public structs' layouts are ABI: fields only ever appended. */
static void test_struct_layouts_pinned(void **state)
{
    (void)state;
    assert_int_equal(offsetof(vae_train_options, size), 0);
    assert_int_equal(offsetof(vae_train_options, batch_size), sizeof(size_t));
    assert_int_equal(offsetof(vae_train_options, shuffle), 2 * sizeof(size_t));
    assert_int_equal(offsetof(vae_train_options, binarize), 2 * sizeof(size_t) + sizeof(int));
    assert_true(offsetof(vae_train_options, progress) >= 2 * sizeof(size_t) + 2 * sizeof(int));
    assert_true(offsetof(vae_train_options, payload) > offsetof(vae_train_options, progress));
    assert_int_equal(offsetof(vae_epoch_stats, size), 0);
    assert_true(offsetof(vae_epoch_stats, loss) < offsetof(vae_epoch_stats, recon));
    assert_true(offsetof(vae_epoch_stats, recon) < offsetof(vae_epoch_stats, kl));
    assert_true(offsetof(vae_epoch_stats, kl) < offsetof(vae_epoch_stats, seconds));
    assert_true(offsetof(vae_epoch_stats, seconds) < offsetof(vae_epoch_stats, samples));
    assert_true(offsetof(vae_epoch_stats, samples) < offsetof(vae_epoch_stats, steps));
}

static void test_version(void **state)
{
    (void)state;
    /* This is the 1.2.1 header and library. */
    assert_int_equal(VAE_VERSION_MAJOR, 1);
    assert_int_equal(VAE_VERSION_MINOR, 2);
    assert_int_equal(VAE_VERSION_PATCH, 1);
    assert_int_equal(VAE_VERSION_NUMBER, 10201);
    assert_int_equal(vae_version_number(), 10201);
    assert_string_equal(vae_version_string(), "1.2.1");
    assert_int_equal(VAE_VERSION_NUMBER,
                     VAE_VERSION_MAJOR * 10000 + VAE_VERSION_MINOR * 100 + VAE_VERSION_PATCH);
    /* The library that is loaded agrees with the header it was compiled with. */
    assert_int_equal(vae_version_number(), VAE_VERSION_NUMBER);
    char expect[64];
    snprintf(expect, sizeof expect, "%d.%d.%d", VAE_VERSION_MAJOR, VAE_VERSION_MINOR,
             VAE_VERSION_PATCH);
    assert_non_null(vae_version_string());
    assert_string_equal(vae_version_string(), expect);
    /* Static storage: the same pointer every time. */
    assert_ptr_equal(vae_version_string(), vae_version_string());
}

static void test_last_error_message(void **state)
{
    (void)state;
    TU_EXPECT_ERR(vae_rng_create(NULL, 1), VAE_ERR_INVALID, "vae_rng_create");
    /* A successful call does not clear or change the last failure's message. */
    char before[512];
    snprintf(before, sizeof before, "%s", vae_last_error());
    vae_rng *rng = NULL;
    TU_OK(vae_rng_create(&rng, 1));
    assert_string_equal(vae_last_error(), before);
    vae_rng_free(rng);
}

typedef struct thread_result {
    char initial[512];  /* vae_last_error() when the thread starts */
    char after[512];    /* after its own failure */
    int rc;
} thread_result;

static void *failing_thread(void *arg)
{
    thread_result *r = arg;
    snprintf(r->initial, sizeof r->initial, "%s", vae_last_error());
    r->rc = vae_model_create(NULL, 4, 2, VAE_LIKELIHOOD_BERNOULLI);
    snprintf(r->after, sizeof r->after, "%s", vae_last_error());
    return NULL;
}

static void test_last_error_per_thread(void **state)
{
    (void)state;
    TU_EXPECT_ERR(vae_elbo_set_param(NULL, VAE_ELBO_BETA, 1.0), VAE_ERR_INVALID,
                  "vae_elbo_set_param");
    char mine[512];
    snprintf(mine, sizeof mine, "%s", vae_last_error());

    thread_result r;
    memset(&r, 0, sizeof r);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, failing_thread, &r), 0);
    assert_int_equal(pthread_join(t, NULL), 0);

    /* A fresh thread starts with no message, not with this thread's. */
    assert_string_equal(r.initial, "");
    assert_int_equal(r.rc, VAE_ERR_INVALID);
    assert_non_null(strstr(r.after, "vae_model_create"));
    /* The other thread's failure did not touch this thread's message. */
    assert_string_equal(vae_last_error(), mine);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror_distinct),
        cmocka_unit_test(test_status_values_pinned),
        cmocka_unit_test(test_enum_values_pinned),
        cmocka_unit_test(test_struct_layouts_pinned),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_last_error_message),
        cmocka_unit_test(test_last_error_per_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
