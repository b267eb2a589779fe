/* The public header must compile as strict C99 (built with -pedantic-errors)
 * and link: a call into every group of the API, from versions to model
 * files, on a tiny model. Exits 0 when every call behaves. */
#include <stdio.h>
#include <string.h>

#include <vae/vae.h>

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "header_c99: line %d: %s failed: %s\n", __LINE__, #cond,        \
                    vae_last_error());                                                      \
            return 1;                                                                       \
        }                                                                                   \
    } while (0)

static int run(vae_rng *rng, vae_model *m, vae_context *ctx, vae_elbo *e, vae_optimizer *opt,
               vae_trainer **t, vae_dataset **ds, vae_model **copy)
{
    enum { N = 4, D = 6, L = 2 };
    float x[N * D], mu[N * L], logvar[N * L], out[N * D];
    double ll[N], value = 0.0;
    size_t count = 0, shape[4], ndim = 0, index = 0, size = 0;
    unsigned char buf[4096];
    vae_epoch_stats st;
    vae_train_options opts;
    vae_layer *layer = NULL;

    /* Versions and errors. */
    CHECK(vae_version_number() == VAE_VERSION_NUMBER);
    CHECK(strcmp(vae_version_string(), "") != 0);
    CHECK(vae_rng_normal(NULL, x, 1) == VAE_ERR_INVALID);
    CHECK(vae_last_error()[0] != '\0');
    CHECK(vae_strerror(VAE_ERR_STATE) != NULL);

    /* Random numbers. */
    CHECK(vae_rng_uniform(rng, x, N * D) == VAE_OK);

    /* Layers, standalone. */
    CHECK(vae_layer_dense_create(&layer, D, 3, VAE_ACT_RELU) == VAE_OK);
    CHECK(vae_layer_init(layer, rng) == VAE_OK);
    CHECK(vae_layer_forward(layer, x, 1, out) == VAE_OK);
    CHECK(vae_layer_kind(layer) == VAE_LAYER_DENSE);
    CHECK(vae_layer_get_param(layer, VAE_LAYER_PARAMS, &count) == VAE_OK && count == 21);
    vae_layer_free(layer);

    /* Models: introspection and named tensors. */
    CHECK(vae_model_is_built(m) == 1);
    CHECK(vae_model_layer_count(m) == 4 && vae_model_encoder_layer_count(m) == 1);
    CHECK(vae_layer_activation(vae_model_layer(m, 1)) == VAE_ACT_IDENTITY);
    CHECK(vae_model_get_param(m, VAE_MODEL_GAUSSIAN_SIGMA, &value) == VAE_OK && value == 1.0);
    CHECK(vae_model_set_param(m, VAE_MODEL_GAUSSIAN_SIGMA, -1.0) == VAE_ERR_INVALID);
    CHECK(vae_model_tensor_count(m) == 8);
    CHECK(strcmp(vae_model_tensor_name(m, 2), "head.weight") == 0);
    CHECK(vae_model_tensor_find(m, "decoder.1.bias", &index) == VAE_OK && index == 7);
    CHECK(vae_model_tensor_info(m, 2, shape, &ndim, NULL, &count) == VAE_OK && ndim == 2 &&
          shape[0] == 2 * L && count == shape[0] * shape[1]);

    /* Contexts. */
    CHECK(vae_context_threads(ctx) == 1);
    CHECK(vae_context_reserve(ctx, m, N) == VAE_OK);

    /* Objective and optimizers. */
    CHECK(vae_elbo_set_param(e, VAE_ELBO_BETA, 0.5) == VAE_OK);
    CHECK(vae_optimizer_set_param(opt, VAE_OPT_LR, 1e-2) == VAE_OK);
    CHECK(vae_optimizer_get_param(opt, VAE_OPT_BETA1, &value) == VAE_OK && value > 0.8999 &&
          value < 0.9001);

    /* Trainers. */
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    CHECK(vae_trainer_create(t, m, e, opt, ctx, 3) == VAE_OK);
    CHECK(vae_trainer_reserve(*t, N) == VAE_OK);
    CHECK(vae_trainer_step(*t, x, N, &st) == VAE_OK && st.samples == N);
    CHECK(vae_trainer_forward_backward(*t, x, N, NULL, &st) == VAE_OK);
    CHECK(vae_trainer_grads(*t, &count) != NULL && count == vae_model_param_count(m));
    CHECK(vae_trainer_apply(*t) == VAE_OK && vae_trainer_steps(*t) == 2);

    /* Datasets and epochs. */
    CHECK(vae_dataset_from_floats(ds, x, N, D, NULL) == VAE_OK && vae_dataset_count(*ds) == N);
    CHECK(vae_train_options_init(&opts, sizeof opts) == VAE_OK);
    opts.batch_size = 2;
    CHECK(vae_trainer_train_epoch(*t, *ds, &opts, &st) == VAE_OK && vae_trainer_epochs(*t) == 1);
    CHECK(vae_evaluate_dataset(ctx, m, e, *ds, rng, NULL, &st) == VAE_OK);

    /* Inference. */
    CHECK(vae_encode(ctx, m, x, N, mu, logvar) == VAE_OK);
    CHECK(vae_decode(ctx, m, mu, N, out) == VAE_OK);
    CHECK(vae_reconstruct(ctx, m, x, N, out) == VAE_OK);
    CHECK(vae_sample(ctx, m, rng, N, out) == VAE_OK);
    CHECK(vae_log_likelihood(ctx, m, x, N, 2, rng, ll) == VAE_OK);
    CHECK(vae_elbo_evaluate(ctx, m, e, x, N, NULL, rng, NULL, &st) == VAE_OK);

    /* Model files. */
    CHECK(vae_model_save_mem(m, NULL, 0, &size) == VAE_OK && size <= sizeof buf);
    CHECK(vae_model_save_mem(m, buf, sizeof buf, &size) == VAE_OK);
    CHECK(vae_model_load_mem(copy, buf, size) == VAE_OK);
    CHECK(vae_model_param_count(*copy) == vae_model_param_count(m));
    return 0;
}

int main(void)
{
    size_t hidden[1] = {3};
    vae_rng *rng = NULL;
    vae_model *m = NULL, *copy = NULL;
    vae_context *ctx = NULL;
    vae_elbo *e = NULL;
    vae_optimizer *opt = NULL;
    vae_trainer *t = NULL;
    vae_dataset *ds = NULL;
    int rc = 1;
    if (vae_rng_create(&rng, 1) == VAE_OK &&
        vae_model_create_mlp(&m, 6, hidden, 1, 2, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI, 1) ==
            VAE_OK &&
        vae_context_create(&ctx) == VAE_OK && vae_elbo_create(&e) == VAE_OK &&
        vae_optimizer_create(&opt, VAE_OPTIMIZER_ADAM) == VAE_OK)
        rc = run(rng, m, ctx, e, opt, &t, &ds, &copy);
    else
        fprintf(stderr, "header_c99: setup failed: %s\n", vae_last_error());
    vae_trainer_free(t);
    vae_dataset_free(ds);
    vae_model_free(copy);
    vae_optimizer_free(opt);
    vae_elbo_free(e);
    vae_context_free(ctx);
    vae_model_free(m);
    vae_rng_free(rng);
    return rc;
}
