/* End to end: a small MLP VAE learns synthetic data with Adam through a
 * trainer, and the whole run is reproducible bit for bit from its seeds,
 * whatever the number of workers of the context. */
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
    double recon_err;        /* mean |reconstruction - x| after training */
    double recon_err0;       /* the same with the untrained model */
    size_t n_params;
} run_result;

static void train(uint64_t seed, size_t workers, run_result *out)
{
    float *data = tu_alloc(N_DATA * DIM, sizeof *data);
    make_data(data, seed);
    vae_model *m = NULL;
    const size_t hidden[1] = {HIDDEN};
    TU_OK(vae_model_create_mlp(&m, DIM, hidden, 1, LATENT, VAE_ACT_TANH,
                               VAE_LIKELIHOOD_BERNOULLI, seed));
    vae_context *ctx = NULL;
    TU_OK(vae_context_create(&ctx));
    if (workers > 1) {
        /* Several workers need a single-threaded BLAS. */
        TU_OK(vae_blas_set_threads(1));
        TU_OK(vae_context_set_threads(ctx, workers));
    }
    assert_int_equal(vae_context_threads(ctx), workers);
    vae_elbo *e = NULL;
    TU_OK(vae_elbo_create(&e));
    vae_optimizer *o = NULL;
    TU_OK(vae_optimizer_create(&o, VAE_OPTIMIZER_ADAM));
    TU_OK(vae_optimizer_set_param(o, VAE_OPT_LR, 1e-2));
    vae_trainer *t = NULL;
    TU_OK(vae_trainer_create(&t, m, e, o, ctx, seed + 1));
    TU_OK(vae_trainer_reserve(t, BATCH));

    double *losses = tu_alloc(STEPS, sizeof *losses);
    for (size_t s = 0; s < STEPS; s++) {
        /* Consecutive batches walk through the data in order. */
        const size_t first = (s * BATCH) % N_DATA;
        vae_epoch_stats st = tu_stats();
        TU_OK(vae_trainer_step(t, data + first * DIM, BATCH, &st));
        assert_true(isfinite(st.loss));
        assert_true(st.kl >= 0.0);
        /* The Bernoulli loss of data in [0, 1] is at least its entropy > 0. */
        assert_true(st.recon > 0.0);
        TU_CLOSE(st.loss, st.recon + st.kl, 1e-12, 0.0); /* beta 1 */
        assert_int_equal(st.samples, BATCH);
        assert_int_equal(st.steps, 1);
        losses[s] = st.loss;
    }
    assert_int_equal(vae_trainer_steps(t), STEPS);
    TU_ASSERT_ZERO_GRADS(t);
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

    /* The trained model reconstructs its data better than the untrained one
     * with the same initialization. */
    vae_model *m0 = NULL;
    TU_OK(vae_model_create_mlp(&m0, DIM, hidden, 1, LATENT, VAE_ACT_TANH,
                               VAE_LIKELIHOOD_BERNOULLI, seed));
    float *rec = tu_alloc(N_DATA * DIM, sizeof *rec), *rec0 = tu_alloc(N_DATA * DIM, sizeof *rec0);
    TU_OK(vae_reconstruct(ctx, m, data, N_DATA, rec));
    TU_OK(vae_reconstruct(ctx, m0, data, N_DATA, rec0));
    double err = 0.0, err0 = 0.0;
    for (size_t k = 0; k < N_DATA * DIM; k++) {
        err += fabs((double)rec[k] - data[k]);
        err0 += fabs((double)rec0[k] - data[k]);
    }
    out->recon_err = err / (N_DATA * DIM);
    out->recon_err0 = err0 / (N_DATA * DIM);

    free(rec);
    free(rec0);
    vae_model_free(m0);
    free(losses);
    free(data);
    vae_trainer_free(t);
    vae_optimizer_free(o);
    vae_elbo_free(e);
    vae_context_free(ctx);
    vae_model_free(m);
}

static void test_loss_goes_down_reproducibly(void **state)
{
    (void)state;
    run_result a, b, c;
    train(2024, 1, &a);
    train(2024, 1, &b);
    train(2024, 3, &c);
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
    /* Three workers: blocks of 64 samples summed in block order, so the
     * same numbers again. */
    assert_true(a.final_loss == c.final_loss);
    assert_true(a.first == c.first && a.last == c.last);
    assert_int_equal(a.n_params, c.n_params);
    assert_memory_equal(a.params, c.params, a.n_params * sizeof(float));
    /* The batch of 32 is one block, but the reconstruction of all 512
     * samples is eight, spread over the three workers. */
    assert_true(a.recon_err == c.recon_err && a.recon_err0 == c.recon_err0);
    /* Reconstructions of the training data: measured 0.043 mean absolute
     * error after training against 0.46 before. Requiring a quarter of the
     * untrained error leaves 2.7x margin and still catches a model that
     * learned something other than its inputs (or inference that does not
     * use the trained parameters). */
    if (!(a.recon_err < 0.25 * a.recon_err0))
        fail_msg("mean reconstruction error %.4f after training, %.4f before", a.recon_err,
                 a.recon_err0);
    free(a.params);
    free(b.params);
    free(c.params);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loss_goes_down_reproducibly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
