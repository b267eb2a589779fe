/* The FFI copy of the header (vae/vae_ffi.h) must compile as strict C99
 * (built with -pedantic-errors) after <stddef.h> and <stdint.h> alone, without
 * vae.h, and its declarations must match the library: calls through every
 * kind of declaration it holds (functions, enums, the two structures, the
 * progress callback typedef) on a tiny model. Exits 0 when every call
 * behaves. */
#include <stddef.h>
#include <stdint.h>

#include "vae/vae_ffi.h"

#include <stdio.h>
#include <string.h>

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "ffi_header: line %d: %s failed: %s\n", __LINE__, #cond,        \
                    vae_last_error());                                                      \
            return 1;                                                                       \
        }                                                                                   \
    } while (0)

enum { N = 4, D = 6, H = 8, L = 2 };

static int finite(double v) { return v == v && v - v == 0.0; }

struct progress_seen {
    size_t calls, last_done, last_total;
};

static int on_progress(void *payload, size_t done, size_t total, double running_loss)
{
    struct progress_seen *seen = payload;
    seen->calls++;
    seen->last_done = done;
    seen->last_total = total;
    return finite(running_loss) ? 0 : 1;
}

static int run(vae_rng *rng, vae_model *m, vae_context *ctx, vae_elbo *e, vae_optimizer *opt,
               vae_trainer **t, vae_dataset **ds, vae_model **copy)
{
    float x[N * D], mu[N * L], logvar[N * L], out[N * D];
    unsigned char buf[4096];
    size_t i, count = 0, size = 0;
    double value = 0.0;
    vae_epoch_stats st;
    vae_train_options opts;
    struct progress_seen seen = {0, 0, 0};

    /* Versions, enums and errors. */
    CHECK(vae_version_number() == VAE_VERSION_NUMBER);
    CHECK(VAE_VERSION_NUMBER ==
          VAE_VERSION_MAJOR * 10000 + VAE_VERSION_MINOR * 100 + VAE_VERSION_PATCH);
    CHECK(strlen(vae_version_string()) >= 5);
    CHECK(vae_rng_normal(NULL, x, 1) == VAE_ERR_INVALID && vae_last_error()[0] != '\0');
    CHECK(strcmp(vae_strerror(VAE_ERR_INVALID), "invalid argument") == 0);

    /* The model: dense D-H, head H-2L, dense L-H, dense H-D. */
    CHECK(vae_model_param_count(m) ==
          (size_t)(D * H + H) + (H * 2 * L + 2 * L) + (L * H + H) + (H * D + D));
    CHECK(vae_model_input_dim(m) == D && vae_model_latent_dim(m) == L);
    CHECK(vae_model_params(m, &count) != NULL && count == vae_model_param_count(m));
    CHECK(vae_layer_kind(vae_model_layer(m, 0)) == VAE_LAYER_DENSE);
    CHECK(vae_model_get_param(m, VAE_MODEL_GAUSSIAN_SIGMA, &value) == VAE_OK && value == 1.0);

    /* Inference. */
    CHECK(vae_rng_uniform(rng, x, N * D) == VAE_OK);
    CHECK(vae_encode(ctx, m, x, N, mu, logvar) == VAE_OK);
    for (i = 0; i < N * L; i++)
        CHECK(finite(mu[i]) && finite(logvar[i]));
    CHECK(vae_reconstruct(ctx, m, x, N, out) == VAE_OK);
    for (i = 0; i < N * D; i++)
        CHECK(out[i] >= 0.0f && out[i] <= 1.0f);

    /* vae_epoch_stats: fields the library writes at the offsets this header gives. */
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    CHECK(vae_optimizer_set_param(opt, VAE_OPT_LR, 1e-2) == VAE_OK);
    CHECK(vae_trainer_create(t, m, e, opt, ctx, 3) == VAE_OK);
    CHECK(vae_trainer_step(*t, x, N, &st) == VAE_OK);
    CHECK(st.size == sizeof st && st.samples == N && st.steps == 1);
    CHECK(finite(st.loss) && st.loss > 0.0 && finite(st.recon) && finite(st.kl));
    CHECK(vae_trainer_steps(*t) == 1);

    /* vae_train_options and the progress callback. */
    CHECK(vae_train_options_init(&opts, sizeof opts) == VAE_OK);
    CHECK(opts.size == sizeof opts && opts.batch_size == 128 && opts.shuffle == 1 &&
          opts.binarize == 0 && opts.progress == NULL && opts.payload == NULL);
    opts.batch_size = 2;
    opts.progress = on_progress;
    opts.payload = &seen;
    CHECK(vae_dataset_from_floats(ds, x, N, D, NULL) == VAE_OK && vae_dataset_count(*ds) == N);
    CHECK(vae_trainer_train_epoch(*t, *ds, &opts, &st) == VAE_OK);
    CHECK(seen.calls == N / 2 && seen.last_done == N && seen.last_total == N);
    CHECK(st.samples == N && st.steps == N / 2 && vae_trainer_epochs(*t) == 1);

    /* Model files. */
    CHECK(vae_model_save_mem(m, NULL, 0, &size) == VAE_OK && size <= sizeof buf);
    CHECK(vae_model_save_mem(m, buf, sizeof buf, &size) == VAE_OK);
    CHECK(vae_model_load_mem(copy, buf, size) == VAE_OK);
    CHECK(vae_model_param_count(*copy) == vae_model_param_count(m));
    return 0;
}

int main(void)
{
    size_t hidden[1] = {H};
    vae_rng *rng = NULL;
    vae_model *m = NULL, *copy = NULL;
    vae_context *ctx = NULL;
    vae_elbo *e = NULL;
    vae_optimizer *opt = NULL;
    vae_trainer *t = NULL;
    vae_dataset *ds = NULL;
    int rc = 1;
    if (vae_rng_create(&rng, 1) == VAE_OK &&
        vae_model_create_mlp(&m, D, hidden, 1, L, VAE_ACT_RELU, VAE_LIKELIHOOD_BERNOULLI, 1) ==
            VAE_OK &&
        vae_context_create(&ctx) == VAE_OK && vae_elbo_create(&e) == VAE_OK &&
        vae_optimizer_create(&opt, VAE_OPTIMIZER_ADAM) == VAE_OK)
        rc = run(rng, m, ctx, e, opt, &t, &ds, &copy);
    else
        fprintf(stderr, "ffi_header: setup failed: %s\n", vae_last_error());
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
