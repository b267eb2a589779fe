/* Writes real checkpoints for the seeds of the checkpoint fuzz target, one
 * file each into the directory given: make_corpus.py compiles and runs it
 * (its header says how) and frames and varies what it writes. The trainers
 * match the ones tests/fuzz/fuzz_checkpoint.c restores into (Gaussian,
 * 5 -> 4 -> 2 -> 4 -> 5, tanh), except ckpt-adam-other-arch, a checkpoint
 * the harness refuses for its architecture. Not part of the build. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vae/vae.h"

static const char *dir;

static void check(int rc, const char *what)
{
    if (rc != VAE_OK) {
        fprintf(stderr, "make_seeds: %s: %s\n", what, vae_last_error());
        exit(1);
    }
}

static void write_file(const char *name, const void *buf, size_t size)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, size, f) != size || fclose(f) != 0) {
        fprintf(stderr, "make_seeds: cannot write %s\n", path);
        exit(1);
    }
}

static void write_trainer(const char *name, const vae_trainer *t)
{
    size_t size = 0;
    check(vae_trainer_save_mem(t, NULL, 0, &size), name);
    void *buf = malloc(size);
    if (!buf)
        exit(1);
    check(vae_trainer_save_mem(t, buf, size, &size), name);
    write_file(name, buf, size);
    free(buf);
}

static void write_model(const char *name, const vae_model *m)
{
    size_t size = 0;
    check(vae_model_save_mem(m, NULL, 0, &size), name);
    void *buf = malloc(size);
    if (!buf)
        exit(1);
    check(vae_model_save_mem(m, buf, size, &size), name);
    write_file(name, buf, size);
    free(buf);
}

static int stop_after_first(void *payload, size_t done, size_t total, double loss)
{
    (void)payload;
    (void)total;
    (void)loss;
    return done > 0;
}

/* How far a trainer goes before it is saved. */
enum { FRESH, STEPPED, FULL };

static void make(const char *name, int kind, int likelihood, size_t hidden_width, int stage,
                 int autoencoder)
{
    static const float x[3 * 5] = {0.1f, 0.4f, 0.5f, 0.9f, 1.0f, 0.0f, 0.3f, 0.7f,
                                   0.2f, 0.6f, 0.8f, 0.8f, 0.1f, 0.5f, 0.2f};
    const size_t hidden[] = {hidden_width};
    vae_model *m = NULL;
    vae_elbo *e = NULL;
    vae_optimizer *opt = NULL;
    vae_context *ctx = NULL;
    vae_trainer *t = NULL;
    vae_dataset *ds = NULL;
    check(vae_model_create_mlp(&m, 5, hidden, 1, 2, VAE_ACT_TANH, likelihood, 11), name);
    if (likelihood == VAE_LIKELIHOOD_GAUSSIAN)
        check(vae_model_set_param(m, VAE_MODEL_GAUSSIAN_SIGMA, 0.25), name);
    check(vae_elbo_create(&e), name);
    if (autoencoder)
        check(vae_elbo_set_param(e, VAE_ELBO_OBJECTIVE, VAE_OBJECTIVE_AUTOENCODER), name);
    check(vae_elbo_set_param(e, VAE_ELBO_BETA, 2.0), name);
    check(vae_optimizer_create(&opt, kind), name);
    check(vae_optimizer_set_param(opt, VAE_OPT_LR, 0.01), name);
    if (kind == VAE_OPTIMIZER_SGD) {
        check(vae_optimizer_set_param(opt, VAE_OPT_MOMENTUM, 0.5), name);
        check(vae_optimizer_set_param(opt, VAE_OPT_NESTEROV, 1), name);
    } else {
        check(vae_optimizer_set_param(opt, VAE_OPT_WEIGHT_DECAY, 0.01), name);
        check(vae_optimizer_set_param(opt, VAE_OPT_CLIP_NORM, 1.0), name);
    }
    check(vae_context_create(&ctx), name);
    check(vae_trainer_create(&t, m, e, opt, ctx, 5), name);
    if (stage >= STEPPED)
        for (int i = 0; i < 2; i++)
            check(vae_trainer_step(t, x, 3, NULL), name);
    if (stage >= FULL) {
        /* An epoch left open after its first batch, a pending gradient and
         * metadata: the EPOC, GRAD and meta chunks. */
        check(vae_dataset_from_floats(&ds, x, 3, 5, NULL), name);
        vae_train_options o;
        check(vae_train_options_init(&o, sizeof o), name);
        o.batch_size = 2;
        o.progress = stop_after_first;
        if (vae_trainer_train_epoch(t, ds, &o, NULL) != VAE_ERR_CANCELLED)
            check(-1, "the epoch was not left open");
        check(vae_trainer_forward_backward(t, x + 5, 2, NULL, NULL), name);
        check(vae_trainer_set_meta(t, "command", "train --epochs 3"), name);
        check(vae_trainer_set_meta(t, "dataset", "sha256:00ff"), name);
        check(vae_trainer_set_meta(t, "empty", ""), name);
    }
    write_trainer(name, t);
    if (stage == FRESH && kind == VAE_OPTIMIZER_ADAM)
        write_model("model", m); /* the model part alone: a model file */
    vae_dataset_free(ds);
    vae_trainer_free(t);
    vae_context_free(ctx);
    vae_optimizer_free(opt);
    vae_elbo_free(e);
    vae_model_free(m);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_seeds DIR\n");
        return 2;
    }
    dir = argv[1];
    make("ckpt-adam-fresh", VAE_OPTIMIZER_ADAM, VAE_LIKELIHOOD_GAUSSIAN, 4, FRESH, 0);
    make("ckpt-adam-stepped", VAE_OPTIMIZER_ADAM, VAE_LIKELIHOOD_GAUSSIAN, 4, STEPPED, 0);
    make("ckpt-adam-full", VAE_OPTIMIZER_ADAM, VAE_LIKELIHOOD_GAUSSIAN, 4, FULL, 0);
    make("ckpt-sgd-fresh", VAE_OPTIMIZER_SGD, VAE_LIKELIHOOD_GAUSSIAN, 4, FRESH, 0);
    make("ckpt-sgd-full", VAE_OPTIMIZER_SGD, VAE_LIKELIHOOD_GAUSSIAN, 4, FULL, 0);
    make("ckpt-sgd-autoencoder", VAE_OPTIMIZER_SGD, VAE_LIKELIHOOD_GAUSSIAN, 4, STEPPED, 1);
    make("ckpt-adam-other-arch", VAE_OPTIMIZER_ADAM, VAE_LIKELIHOOD_BERNOULLI, 3, FULL, 0);
    return 0;
}
