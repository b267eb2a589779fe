/* Reference numbers for tests/python/test_libvae.py: a fixed run through the
 * C API, printed one "key value..." line per result with %.17g (exact for
 * doubles and floats), so that the Python binding can be checked bit for bit
 * against it. The Python test repeats the same calls in the same order; any
 * change here must be mirrored in ReferenceRun there. */
#include <stdio.h>
#include <stdlib.h>

#include <vae/vae.h>

#define CHECK(call)                                                                          \
    do {                                                                                     \
        int rc_ = (call);                                                                    \
        if (rc_) {                                                                           \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, vae_strerror(rc_),        \
                    vae_last_error());                                                       \
            exit(1);                                                                         \
        }                                                                                    \
    } while (0)

enum { N = 16, D = 20, L = 3 };

static void print_doubles(const char *key, const double *v, size_t n)
{
    printf("%s", key);
    for (size_t i = 0; i < n; i++)
        printf(" %.17g", v[i]);
    printf("\n");
}

static void print_floats(const char *key, const float *v, size_t n)
{
    printf("%s", key);
    for (size_t i = 0; i < n; i++)
        printf(" %.17g", (double)v[i]);
    printf("\n");
}

static double sum_floats(const float *v, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)v[i];
    return s;
}

int main(void)
{
    static float x[N * D], eps[N * L], smp[2 * D];
    double l, r, k, ps[N], ll[3], v[3];
    char key[32];

    vae_rng *rng = NULL;
    CHECK(vae_rng_create(&rng, 2024));
    CHECK(vae_rng_uniform(rng, x, N * D));

    /* 1. An MLP with a Bernoulli likelihood, Adam, explicit steps. */
    size_t hidden[] = {12, 8};
    vae_model *m = NULL;
    vae_elbo *e = NULL;
    vae_optimizer *adam = NULL;
    CHECK(vae_model_create_mlp(&m, D, hidden, 2, L, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI, 11));
    CHECK(vae_elbo_create(&e));
    CHECK(vae_optimizer_adam_create(&adam, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f));
    for (int step = 0; step < 5; step++) {
        CHECK(vae_elbo_forward_backward(e, m, x, N, NULL, rng, &l, &r, &k));
        CHECK(vae_optimizer_step(adam, m));
        v[0] = l, v[1] = r, v[2] = k;
        snprintf(key, sizeof key, "step%d", step);
        print_doubles(key, v, 3);
    }
    CHECK(vae_rng_normal(rng, eps, N * L));
    CHECK(vae_elbo_evaluate(e, m, x, N, eps, NULL, &l, &r, &k, ps));
    v[0] = l, v[1] = r, v[2] = k;
    print_doubles("eval", v, 3);
    print_doubles("eval_per_sample", ps, N);
    size_t count = 0;
    const float *p = vae_model_params(m, &count);
    v[0] = (double)count, v[1] = sum_floats(p, count);
    print_doubles("mlp_params", v, 2);
    CHECK(vae_model_sample(m, rng, 2, smp));
    print_floats("mlp_sample", smp, 2 * D);
    CHECK(vae_model_log_likelihood(m, x, 3, 4, rng, ll));
    print_doubles("mlp_loglik", ll, 3);
    size_t bytes = 0;
    CHECK(vae_model_save_mem(m, NULL, 0, &bytes));
    v[0] = (double)bytes;
    print_doubles("mlp_file_bytes", v, 1);

    /* 2. A Gaussian model built layer by layer, SGD with Nesterov momentum,
     *    weight decay and clipping, beta 0.5, two epochs of vae_train_epoch. */
    vae_model *g = NULL;
    vae_layer *layer = NULL;
    vae_elbo *e2 = NULL;
    vae_optimizer *sgd = NULL;
    vae_dataset *ds = NULL;
    CHECK(vae_model_create(&g, D, L, VAE_LIKELIHOOD_GAUSSIAN));
    CHECK(vae_layer_dense_create(&layer, D, 10, VAE_ACT_RELU));
    CHECK(vae_model_add_encoder_layer(g, layer));
    CHECK(vae_layer_dense_create(&layer, L, 10, VAE_ACT_RELU));
    CHECK(vae_model_add_decoder_layer(g, layer));
    CHECK(vae_layer_dense_create(&layer, 10, D, VAE_ACT_IDENTITY));
    CHECK(vae_model_add_decoder_layer(g, layer));
    CHECK(vae_model_build(g, 5));
    CHECK(vae_model_set_gaussian_sigma(g, 0.5f));
    CHECK(vae_elbo_create(&e2));
    CHECK(vae_elbo_set_beta(e2, 0.5f));
    CHECK(vae_optimizer_sgd_create(&sgd, 0.05f, 0.9f, 1, 1e-4f));
    CHECK(vae_optimizer_set_clip_norm(sgd, 5.0f));
    CHECK(vae_dataset_from_floats(&ds, x, N, D, NULL));
    for (int epoch = 0; epoch < 2; epoch++) {
        vae_train_options o;
        vae_train_options_init(&o);
        o.batch_size = 5;
        o.binarize = epoch;
        vae_epoch_stats st = {0};
        st.size = sizeof st;
        CHECK(vae_train_epoch(g, e2, sgd, ds, rng, &o, &st));
        double s[5] = {st.loss, st.recon, st.kl, (double)st.samples, (double)st.steps};
        snprintf(key, sizeof key, "epoch%d", epoch);
        print_doubles(key, s, 5);
    }
    CHECK(vae_evaluate_dataset(g, e2, ds, rng, 7, &l, &r, &k, ps));
    v[0] = l, v[1] = r, v[2] = k;
    print_doubles("eval_dataset", v, 3);
    print_doubles("eval_dataset_per_sample", ps, N);
    p = vae_model_params(g, &count);
    v[0] = (double)count, v[1] = sum_floats(p, count);
    print_doubles("gauss_params", v, 2);
    CHECK(vae_elbo_set_objective(e2, VAE_OBJECTIVE_AUTOENCODER));
    CHECK(vae_elbo_forward_backward(e2, g, x, N, NULL, NULL, &l, &r, &k));
    v[0] = l, v[1] = r, v[2] = k;
    print_doubles("autoencoder", v, 3);

    vae_dataset_free(ds);
    vae_optimizer_free(sgd);
    vae_elbo_free(e2);
    vae_model_free(g);
    vae_optimizer_free(adam);
    vae_elbo_free(e);
    vae_model_free(m);
    vae_rng_free(rng);
    return 0;
}
