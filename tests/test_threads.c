/* vae_model_set_threads: a batch split over workers gives the same losses as
 * one worker, gradients equal up to summation order, and bit-identical
 * results for the same worker count. */
#include "test_util.h"

enum { D = 24, L = 3, B = 13 };

static vae_model *mlp(uint64_t seed)
{
    vae_model *m = NULL;
    size_t hidden[] = {17, 9};
    TU_OK(vae_model_create_mlp(&m, D, hidden, 2, L, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI,
                               seed));
    return m;
}

static void data(float *x, float *eps, size_t n)
{
    tu_rng r = {5};
    tu_fill_range(&r, x, n * D, 0, 1);
    for (size_t k = 0; k < n * L; k++)
        eps[k] = (float)tu_gauss(&r);
}

/* loss, per-sample losses and gradient of one batch with n workers */
static void one_step(size_t threads, size_t batch, double *loss, double *ps, float *grad)
{
    float x[B * D], eps[B * L];
    data(x, eps, B);
    vae_model *m = mlp(3);
    vae_elbo *e = NULL;
    TU_OK(vae_elbo_create(&e));
    TU_OK(vae_elbo_set_beta(e, 0.7f));
    TU_OK(vae_model_set_threads(m, threads));
    assert_int_equal(vae_model_threads(m), threads);
    size_t n = 0;
    float *g = vae_model_grads(m, &n);
    TU_OK(vae_elbo_forward_backward(e, m, x, batch, eps, NULL, loss, NULL, NULL));
    memcpy(grad, g, n * sizeof *g);
    double l2 = 0;
    TU_OK(vae_elbo_evaluate(e, m, x, batch, eps, NULL, &l2, NULL, NULL, ps));
    assert_true(l2 == *loss);
    vae_elbo_free(e);
    vae_model_free(m);
}

static void test_split_matches_single(void **state)
{
    (void)state;
    vae_model *m = mlp(3);
    size_t n = 0;
    vae_model_params(m, &n);
    vae_model_free(m);
    float *g1 = tu_alloc(n, 4), *gt = tu_alloc(n, 4), *gt2 = tu_alloc(n, 4);
    double ps1[B], pst[B], loss1, losst, losst2;
    for (size_t batch = 1; batch <= B; batch += 6) {
        one_step(1, batch, &loss1, ps1, g1);
        for (size_t t = 2; t <= 5; t++) {
            one_step(t, batch, &losst, pst, gt);
            /* Rows are computed independently and summed in row order, so
             * only a BLAS whose rounding depends on the number of rows in a
             * product (some kernels treat row remainders differently) can
             * make them differ: at most float rounding, ~1e-7 relative. */
            TU_CLOSE(losst, loss1, 1e-6, 0);
            for (size_t i = 0; i < batch; i++)
                TU_CLOSE(pst[i], ps1[i], 1e-6, 0);
            /* The gradient sums the workers' parts in another order: equal
             * up to float rounding of sums of at most B terms. */
            double gmax = 0;
            for (size_t i = 0; i < n; i++)
                gmax = fmax(gmax, fabs(g1[i]));
            for (size_t i = 0; i < n; i++)
                TU_CLOSE(gt[i], g1[i], 1e-5, 1e-6 * gmax);
            /* The same worker count gives the same bits. */
            one_step(t, batch, &losst2, pst, gt2);
            assert_memory_equal(gt, gt2, n * sizeof *gt);
        }
    }
    free(g1);
    free(gt);
    free(gt2);
}

/* Training with threads through the epoch loop is reproducible. */
static double train(size_t threads, float *params_out)
{
    float x[64 * D], eps[64 * L];
    (void)eps;
    tu_rng r = {9};
    tu_fill_range(&r, x, 64 * D, 0, 1);
    vae_dataset *ds = NULL;
    TU_OK(vae_dataset_from_floats(&ds, x, 64, D, NULL));
    vae_model *m = mlp(4);
    TU_OK(vae_model_set_threads(m, threads));
    vae_elbo *e = NULL;
    vae_optimizer *opt = NULL;
    vae_rng *rng = NULL;
    TU_OK(vae_elbo_create(&e));
    TU_OK(vae_optimizer_adam_create(&opt, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f));
    TU_OK(vae_rng_create(&rng, 11));
    vae_train_options o;
    vae_train_options_init(&o);
    o.batch_size = 10;
    vae_epoch_stats st = {sizeof st};
    for (int ep = 0; ep < 5; ep++)
        TU_OK(vae_train_epoch(m, e, opt, ds, rng, &o, &st));
    size_t n = 0;
    memcpy(params_out, vae_model_params(m, &n), n * sizeof(float));
    vae_rng_free(rng);
    vae_optimizer_free(opt);
    vae_elbo_free(e);
    vae_model_free(m);
    vae_dataset_free(ds);
    return st.loss;
}

static void test_training_reproducible(void **state)
{
    (void)state;
    vae_model *m = mlp(4);
    size_t n = 0;
    vae_model_params(m, &n);
    vae_model_free(m);
    float *a = tu_alloc(n, 4), *b = tu_alloc(n, 4), *c = tu_alloc(n, 4);
    double la = train(3, a), lb = train(3, b), lc = train(1, c);
    assert_true(la == lb);
    assert_memory_equal(a, b, n * sizeof *a);
    /* One worker follows nearly the same path (rounding differs). */
    TU_CLOSE(la, lc, 1e-3, 0);
    free(a);
    free(b);
    free(c);
}

/* Changing the worker count keeps a reserved workspace usable. */
static void test_change_threads(void **state)
{
    (void)state;
    float x[B * D], eps[B * L], out[B * D];
    data(x, eps, B);
    vae_model *m = mlp(3);
    vae_elbo *e = NULL;
    TU_OK(vae_elbo_create(&e));
    TU_OK(vae_model_reserve(m, B));
    double l1, l2, l3;
    TU_OK(vae_elbo_evaluate(e, m, x, B, eps, NULL, &l1, NULL, NULL, NULL));
    TU_OK(vae_model_set_threads(m, 4));
    TU_OK(vae_elbo_evaluate(e, m, x, B, eps, NULL, &l2, NULL, NULL, NULL));
    TU_OK(vae_model_reconstruct(m, x, B, out));
    TU_OK(vae_model_set_threads(m, 1));
    TU_OK(vae_elbo_evaluate(e, m, x, B, eps, NULL, &l3, NULL, NULL, NULL));
    TU_CLOSE(l2, l1, 1e-6, 0);
    assert_true(l3 == l1); /* back to one worker: the same computation */
    vae_elbo_free(e);
    vae_model_free(m);
}

static void test_bad_input(void **state)
{
    (void)state;
    const char *fn = "vae_model_set_threads";
    TU_EXPECT_ERR(vae_model_set_threads(NULL, 2), VAE_ERR_INVALID, fn);
    vae_model *m = NULL;
    TU_OK(vae_model_create(&m, D, L, VAE_LIKELIHOOD_BERNOULLI));
    TU_EXPECT_ERR(vae_model_set_threads(m, 2), VAE_ERR_STATE, fn);
    vae_model_free(m);
    m = mlp(1);
    TU_EXPECT_ERR(vae_model_set_threads(m, 0), VAE_ERR_INVALID, fn);
    TU_EXPECT_ERR(vae_model_set_threads(m, 65), VAE_ERR_INVALID, fn);
    assert_int_equal(vae_model_threads(m), 1);
    assert_int_equal(vae_model_threads(NULL), 0);
    vae_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_matches_single),
        cmocka_unit_test(test_training_reproducible),
        cmocka_unit_test(test_change_threads),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
