/* End to end: a small MLP VAE learns synthetic data with Adam, and the
 * whole run is reproducible bit for bit from its seeds. */
#include "test_util.h"

enum {
    DIM = 32,        /* input dimension, values in [0, 1] */
    HIDDEN = 32,
    LATENT = 4,
    N_PROTO = 4,
    N_DATA = 512,
    BATCH = 32,
    STEPS = 200,
    WINDOW = 20      /* steps averaged at the start and at the end */
};

/* 4 binary prototypes (entries 0 or 1), samples = a prototype plus
 * Gaussian noise of sd 0.1, clipped to [0, 1]. */
static void make_data(float *data, uint64_t seed)
{
    tu_rng r = {seed};
    float proto[N_PROTO][DIM];
    for (size_t k = 0; k < N_PROTO; k++)
        for (size_t j = 0; j < DIM; j++)
            proto[k][j] = tu_unif(&r) < 0.5 ? 0.0f : 1.0f;
    for (size_t i = 0; i < N_DATA; i++) {
        const float *pk = proto[tu_u64(&r) % N_PROTO];
        for (size_t j = 0; j < DIM; j++) {
            double v = pk[j] + 0.1 * tu_gauss(&r);
            data[i * DIM + j] = (float)(v < 0.0 ? 0.0 : v > 1.0 ? 1.0 : v);
        }
    }
}

typedef struct run_result {
    double first, last;      /* mean loss over the first and last WINDOW steps */
    double final_loss;       /* loss of the last step */
    float *params;           /* final parameter slab (owned) */
    size_t n_params;
} run_result;

static void train(uint64_t seed, run_result *out)
{
    float *data = tu_alloc(N_DATA * DIM, sizeof *data);
    make_data(data, seed);
    vae_model *m = NULL;
    const size_t hidden[1] = {HIDDEN};
    TU_OK(vae_model_create_mlp(&m, DIM, hidden, 1, LATENT, VAE_ACT_TANH,
                               VAE_LIKELIHOOD_BERNOULLI, seed));
    TU_OK(vae_model_reserve(m, BATCH));
    vae_elbo *e = NULL;
    TU_OK(vae_elbo_create(&e));
    vae_optimizer *o = NULL;
    TU_OK(vae_optimizer_adam_create(&o, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f));
    vae_rng *rng = NULL;
    TU_OK(vae_rng_create(&rng, seed + 1));

    double *losses = tu_alloc(STEPS, sizeof *losses);
    for (size_t s = 0; s < STEPS; s++) {
        /* Consecutive batches walk through the data in order. */
        const size_t first = (s * BATCH) % N_DATA;
        double loss = 0, recon = 0, kl = 0;
        TU_OK(vae_elbo_forward_backward(e, m, data + first * DIM, BATCH, NULL, rng, &loss,
                                        &recon, &kl));
        assert_true(isfinite(loss));
        assert_true(kl >= 0.0);
        /* The Bernoulli loss of data in [0, 1] is at least its entropy > 0. */
        assert_true(recon > 0.0);
        TU_OK(vae_optimizer_step(o, m));
        losses[s] = loss;
    }
    out->first = out->last = 0.0;
    for (size_t s = 0; s < WINDOW; s++) {
        out->first += losses[s] / WINDOW;
        out->last += losses[STEPS - WINDOW + s] / WINDOW;
    }
    out->final_loss = losses[STEPS - 1];
    size_t n = 0;
    const float *p = vae_model_params(m, &n);
    out->params = tu_alloc(n, sizeof(float));
    memcpy(out->params, p, n * sizeof(float));
    out->n_params = n;

    free(losses);
    free(data);
    vae_rng_free(rng);
    vae_optimizer_free(o);
    vae_elbo_free(e);
    vae_model_free(m);
}

static void test_loss_goes_down_reproducibly(void **state)
{
    (void)state;
    run_result a, b;
    train(2024, &a);
    train(2024, &b);
    /* Measured on this setup: the mean loss falls from ~18.8 nats over the
     * first 20 steps to ~8.8 over the last 20, 53-57% lower for each of five
     * seeds tried. Requiring at least 25% lower is half the observed drop,
     * robust to other BLAS builds and seeds, while a model that does not
     * learn, or learns with a wrong-signed or badly scaled gradient, fails. */
    if (!(a.last < 0.75 * a.first))
        fail_msg("mean loss of the last %d steps %.4f is not 25%% below the first %d steps' "
                 "%.4f",
                 WINDOW, a.last, WINDOW, a.first);
    /* Same seeds, same thread count: the same numbers, exactly. */
    assert_true(a.final_loss == b.final_loss);
    assert_true(a.first == b.first && a.last == b.last);
    assert_int_equal(a.n_params, b.n_params);
    assert_memory_equal(a.params, b.params, a.n_params * sizeof(float));
    free(a.params);
    free(b.params);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loss_goes_down_reproducibly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
