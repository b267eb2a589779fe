/* Reference numbers for tests/python/test_libvae.py: a fixed run through the
 * C API, printed one "key value..." line per result with %.17g (exact for
 * doubles and floats), so that the Python binding can be checked bit for bit
 * against it. The Python test repeats the same calls in the same order
 * (python_run() there); any change here must be mirrored there.
 *
 * The run is done twice, on a context with 1 worker (keys "w1.*") and on one
 * with 2 workers (keys "w2.*"). The library promises identical results for any
 * number of workers; the batches are larger than one block of 64 samples so
 * that the second worker really takes part. */
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

/* N samples of dimension D (3 blocks of 64 at most), latent L; the
 * log-likelihood runs on NLL samples (2 blocks) with K importance samples. */
enum { N = 130, D = 20, L = 3, NLL = 70, K = 4 };

static const char *prefix = "";

static void print_doubles(const char *key, const double *v, size_t n)
{
    printf("%s%s", prefix, key);
    for (size_t i = 0; i < n; i++)
        printf(" %.17g", v[i]);
    printf("\n");
}

static void print_floats(const char *key, const float *v, size_t n)
{
    printf("%s%s", prefix, key);
    for (size_t i = 0; i < n; i++)
        printf(" %.17g", (double)v[i]);
    printf("\n");
}

/* Sum in double, in index order (the Python test sums the same way). */
static double sum_floats(const float *v, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)v[i];
    return s;
}

static void print_stats(const char *key, const vae_epoch_stats *st)
{
    double v[5] = {st->loss, st->recon, st->kl, (double)st->samples, (double)st->steps};
    print_doubles(key, v, 5);
}

static void print_sum(const char *key, const float *p, size_t count)
{
    double v[2] = {(double)count, sum_floats(p, count)};
    print_doubles(key, v, 2);
}

static void run(const float *x, size_t workers)
{
    static float eps[N * L], mu[3 * L], logvar[3 * L], rec[2 * D], smp[2 * D], tensor[D];
    static double ps[N], ll[NLL];
    char key[64];
    vae_epoch_stats st = {0};
    size_t count = 0;
    const float *p;

    vae_context *ctx = NULL;
    vae_rng *rng = NULL;
    CHECK(vae_context_create(&ctx));
    if (workers > 1)
        CHECK(vae_context_set_threads(ctx, workers));
    CHECK(vae_rng_create(&rng, 99));
    st.size = sizeof st;

    /* 1. An MLP with a Bernoulli likelihood and Adam: trainer steps, then the
     *    two halves of a step with caller noise, evaluation and inference. */
    size_t hidden[] = {12, 8};
    vae_model *m = NULL;
    vae_elbo *e = NULL;
    vae_optimizer *adam = NULL;
    vae_trainer *t = NULL;
    CHECK(vae_model_create_mlp(&m, D, hidden, 2, L, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI, 11));
    CHECK(vae_elbo_create(&e));
    CHECK(vae_optimizer_create(&adam, VAE_OPTIMIZER_ADAM));
    CHECK(vae_optimizer_set_param(adam, VAE_OPT_LR, 1e-2));
    CHECK(vae_trainer_create(&t, m, e, adam, ctx, 7));
    for (int step = 0; step < 5; step++) {
        CHECK(vae_trainer_step(t, x, N, &st));
        snprintf(key, sizeof key, "step%d", step);
        print_stats(key, &st);
    }
    CHECK(vae_rng_normal(rng, eps, N * L));
    CHECK(vae_trainer_forward_backward(t, x, N, eps, &st));
    print_stats("forward_backward", &st);
    const float *grads = vae_trainer_grads(t, &count);
    print_sum("grads", grads, count);
    print_floats("grads_head", grads, 5);
    CHECK(vae_trainer_apply(t));
    double counters[2] = {(double)vae_trainer_steps(t), (double)vae_trainer_epochs(t)};
    print_doubles("counters", counters, 2);
    CHECK(vae_elbo_evaluate(ctx, m, e, x, N, eps, NULL, ps, &st));
    print_stats("eval", &st);
    print_doubles("eval_per_sample", ps, N);
    p = vae_model_params(m, &count);
    print_sum("mlp_params", p, count);
    size_t index = 0;
    CHECK(vae_model_tensor_find(m, "decoder.2.bias", &index));
    CHECK(vae_model_tensor_get(m, index, tensor, D));
    print_floats("tensor_decoder.2.bias", tensor, D);
    CHECK(vae_encode(ctx, m, x, 3, mu, logvar));
    print_floats("mlp_mu", mu, 3 * L);
    print_floats("mlp_logvar", logvar, 3 * L);
    CHECK(vae_reconstruct(ctx, m, x, 2, rec));
    print_floats("mlp_reconstruct", rec, 2 * D);
    CHECK(vae_sample(ctx, m, rng, 2, smp));
    print_floats("mlp_sample", smp, 2 * D);
    CHECK(vae_log_likelihood(ctx, m, x, NLL, K, rng, ll));
    print_doubles("mlp_loglik", ll, NLL);
    size_t bytes = 0;
    CHECK(vae_model_save_mem(m, NULL, 0, &bytes));
    double size = (double)bytes;
    print_doubles("mlp_file_bytes", &size, 1);
    vae_trainer_free(t);

    /* 2. A Gaussian model built layer by layer, SGD with Nesterov momentum,
     *    weight decay and clipping, beta 0.5, two epochs (the second
     *    binarized), then the autoencoder objective. */
    vae_model *g = NULL;
    vae_layer *layer = NULL;
    vae_elbo *e2 = NULL;
    vae_optimizer *sgd = NULL;
    vae_dataset *ds = NULL;
    vae_trainer *t2 = NULL;
    CHECK(vae_model_create(&g, D, L, VAE_LIKELIHOOD_GAUSSIAN));
    CHECK(vae_layer_dense_create(&layer, D, 10, VAE_ACT_RELU));
    CHECK(vae_model_add_encoder_layer(g, &layer));
    CHECK(vae_layer_dense_create(&layer, L, 10, VAE_ACT_RELU));
    CHECK(vae_model_add_decoder_layer(g, &layer));
    CHECK(vae_layer_dense_create(&layer, 10, D, VAE_ACT_IDENTITY));
    CHECK(vae_model_add_decoder_layer(g, &layer));
    CHECK(vae_model_build(g, 5));
    CHECK(vae_model_set_param(g, VAE_MODEL_GAUSSIAN_SIGMA, 0.5));
    CHECK(vae_elbo_create(&e2));
    CHECK(vae_elbo_set_param(e2, VAE_ELBO_BETA, 0.5));
    CHECK(vae_optimizer_create(&sgd, VAE_OPTIMIZER_SGD));
    CHECK(vae_optimizer_set_param(sgd, VAE_OPT_LR, 0.05));
    CHECK(vae_optimizer_set_param(sgd, VAE_OPT_MOMENTUM, 0.9));
    CHECK(vae_optimizer_set_param(sgd, VAE_OPT_NESTEROV, 1));
    CHECK(vae_optimizer_set_param(sgd, VAE_OPT_WEIGHT_DECAY, 1e-4));
    CHECK(vae_optimizer_set_param(sgd, VAE_OPT_CLIP_NORM, 5.0));
    CHECK(vae_dataset_from_floats(&ds, x, N, D, NULL));
    CHECK(vae_trainer_create(&t2, g, e2, sgd, ctx, 8));
    for (int epoch = 0; epoch < 2; epoch++) {
        vae_train_options o;
        CHECK(vae_train_options_init(&o, sizeof o));
        o.batch_size = 100;
        o.binarize = epoch;
        CHECK(vae_trainer_train_epoch(t2, ds, &o, &st));
        snprintf(key, sizeof key, "epoch%d", epoch);
        print_stats(key, &st);
    }
    counters[0] = (double)vae_trainer_steps(t2);
    counters[1] = (double)vae_trainer_epochs(t2);
    print_doubles("counters2", counters, 2);
    CHECK(vae_evaluate_dataset(ctx, g, e2, ds, rng, ps, &st));
    print_stats("eval_dataset", &st);
    print_doubles("eval_dataset_per_sample", ps, N);
    p = vae_model_params(g, &count);
    print_sum("gauss_params", p, count);
    CHECK(vae_elbo_set_param(e2, VAE_ELBO_OBJECTIVE, VAE_OBJECTIVE_AUTOENCODER));
    CHECK(vae_elbo_evaluate(ctx, g, e2, x, N, NULL, NULL, NULL, &st));
    print_stats("autoencoder", &st);
    CHECK(vae_trainer_forward_backward(t2, x, N, NULL, &st));
    print_stats("autoencoder_forward_backward", &st);
    grads = vae_trainer_grads(t2, &count);
    print_sum("autoencoder_grads", grads, count);
    CHECK(vae_trainer_apply(t2));
    p = vae_model_params(g, &count);
    print_sum("autoencoder_params", p, count);

    vae_trainer_free(t2);
    vae_dataset_free(ds);
    vae_optimizer_free(sgd);
    vae_elbo_free(e2);
    vae_model_free(g);
    vae_optimizer_free(adam);
    vae_elbo_free(e);
    vae_model_free(m);
    vae_rng_free(rng);
    vae_context_free(ctx);
}

int main(void)
{
    static float x[N * D];
    vae_rng *data = NULL;

    if (vae_version_number() / 10000 != VAE_VERSION_MAJOR) {
        fprintf(stderr, "libvae %s loaded, built against the %d.x header\n",
                vae_version_string(), VAE_VERSION_MAJOR);
        return 1;
    }
    CHECK(vae_rng_create(&data, 2024));
    CHECK(vae_rng_uniform(data, x, N * D));
    vae_rng_free(data);

    /* Two workers need a single-threaded BLAS (vae_context_set_threads). */
    CHECK(vae_blas_set_threads(1));
    prefix = "w1.";
    run(x, 1);
    prefix = "w2.";
    run(x, 2);
    return 0;
}
