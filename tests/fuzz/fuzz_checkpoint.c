/* Fuzz target for vae_trainer_restore_mem (the checkpoint reader), and for
 * vae_model_load_mem on the same bytes (a checkpoint's model part).
 *
 * Input: one mode byte, then the candidate checkpoint. Bit 0 of the mode
 * byte set: the harness first makes the checksums match the bytes
 * (fixup.h: each chunk's length and CRC-32 recomputed as far as the chunks
 * parse), so mutations reach the fields inside the chunks. Bit 1 picks the
 * trainer restored into: clear, Adam; set, SGD with momentum. Both train
 * models of the same architecture (Gaussian, 5 -> 4 -> 2 -> 4 -> 5), so a
 * checkpoint of the one restores into the other up to the optimizer kind.
 *
 * Each trainer is built once per process and brought to a fixed state, the
 * "before" state, which holds every chunk a checkpoint can have: steps
 * taken, an open epoch, a pending gradient and metadata. Every input starts
 * from that state.
 *
 * Oracles (a failure aborts, which the fuzzer and the replay test report):
 * - a refused restore is VAE_ERR_FORMAT, VAE_ERR_SHAPE (architecture or
 *   optimizer kind) or VAE_ERR_NOMEM (VAE_ERR_INVALID needs a NULL
 *   argument and VAE_ERR_STATE a context in use, neither possible here)
 *   with a message naming vae_trainer_restore_mem, and leaves the trainer
 *   as it was: it saves to the bytes of the "before" state;
 * - a restored trainer saves (its values are all finite), and restoring
 *   what it saved and saving again gives the same bytes;
 * - vae_model_load_mem of the input fails as a model load may fail
 *   (VAE_ERR_FORMAT or VAE_ERR_NOMEM, *out NULL, a message naming it), and
 *   succeeds whenever the restore did, with the restored parameters and
 *   sigma;
 * - then one step on a fixed batch returns VAE_OK or VAE_ERR_NUMERIC
 *   (VAE_ERR_INVALID only for the Nesterov settings vae_trainer_apply
 *   refuses); the epoch position has done <= total; one epoch over a fixed
 *   3-sample dataset (continuing a restored open epoch) returns the same as
 *   the step, or VAE_ERR_SHAPE exactly when the open epoch is over another
 *   sample count; afterwards every parameter is finite and the trainer
 *   still saves;
 * - restoring the "before" bytes then succeeds and gives back that state.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixup.h"
#include "vae/vae.h"

#define IN 5
#define LATENT 2
#define SAMPLES 3

static void require(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_checkpoint: %s (last error: %s)\n", what, vae_last_error());
        abort();
    }
}

/* One trainer and the objects it borrows, in its "before" state. */
typedef struct fixture {
    vae_model *m;
    vae_elbo *e;
    vae_optimizer *opt;
    vae_context *ctx;
    vae_trainer *t;
    unsigned char *before;
    size_t before_size;
} fixture;

static const float batch[SAMPLES * IN] = {0.0f, 0.25f, 0.5f, 0.75f, 1.0f, 1.0f, 0.0f, 0.5f,
                                          0.2f, 0.9f,  0.3f, 0.3f,  0.6f, 0.1f, 0.8f};
static vae_dataset *dataset;

/* The trainer's checkpoint in a new buffer; *size gets its length. */
static unsigned char *save(const vae_trainer *t, size_t *size)
{
    size_t need = 0;
    require(vae_trainer_save_mem(t, NULL, 0, &need) == VAE_OK && need > 0,
            "save_mem size query");
    unsigned char *buf = malloc(need);
    require(buf != NULL, "out of memory in the harness");
    require(vae_trainer_save_mem(t, buf, need, size) == VAE_OK && *size == need,
            "a trainer does not save");
    return buf;
}

/* Whether the trainer saves to exactly these bytes. */
static int saves_to(const vae_trainer *t, const unsigned char *bytes, size_t size)
{
    size_t n = 0;
    unsigned char *now = save(t, &n);
    int same = n == size && memcmp(now, bytes, n) == 0;
    free(now);
    return same;
}

static int stop_after_first(void *payload, size_t done, size_t total, double loss)
{
    (void)payload;
    (void)total;
    (void)loss;
    return done > 0;
}

static void setup(fixture *f, int sgd)
{
    const size_t hidden[] = {4};
    require(vae_model_create_mlp(&f->m, IN, hidden, 1, LATENT, VAE_ACT_TANH,
                                 VAE_LIKELIHOOD_GAUSSIAN, sgd ? 7 : 3) == VAE_OK,
            "model");
    require(vae_model_set_param(f->m, VAE_MODEL_GAUSSIAN_SIGMA, 0.5) == VAE_OK, "sigma");
    require(vae_elbo_create(&f->e) == VAE_OK, "objective");
    require(vae_elbo_set_param(f->e, VAE_ELBO_BETA, 0.5) == VAE_OK, "beta");
    require(vae_optimizer_create(&f->opt, sgd ? VAE_OPTIMIZER_SGD : VAE_OPTIMIZER_ADAM) ==
                VAE_OK,
            "optimizer");
    if (sgd)
        require(vae_optimizer_set_param(f->opt, VAE_OPT_MOMENTUM, 0.9) == VAE_OK, "momentum");
    require(vae_context_create(&f->ctx) == VAE_OK, "context");
    require(vae_trainer_create(&f->t, f->m, f->e, f->opt, f->ctx, 42) == VAE_OK, "trainer");
    if (!dataset)
        require(vae_dataset_from_floats(&dataset, batch, SAMPLES, IN, NULL) == VAE_OK,
                "dataset");
    /* Steps taken, an epoch left open after its first batch, a gradient
     * not yet applied and metadata: every chunk a checkpoint can hold. */
    require(vae_trainer_step(f->t, batch, SAMPLES, NULL) == VAE_OK, "step");
    vae_train_options o;
    require(vae_train_options_init(&o, sizeof o) == VAE_OK, "options");
    o.batch_size = 2;
    o.progress = stop_after_first;
    require(vae_trainer_train_epoch(f->t, dataset, &o, NULL) == VAE_ERR_CANCELLED,
            "epoch stopped by its callback");
    require(vae_trainer_forward_backward(f->t, batch, 1, NULL, NULL) == VAE_OK, "gradient");
    require(vae_trainer_set_meta(f->t, "run", "fuzz") == VAE_OK &&
                vae_trainer_set_meta(f->t, "note", "") == VAE_OK,
            "metadata");
    f->before = save(f->t, &f->before_size);
}

static fixture *get_fixture(int sgd)
{
    static fixture fx[2];
    if (!fx[sgd].t)
        setup(&fx[sgd], sgd);
    return &fx[sgd];
}

static void require_finite_params(vae_model *m)
{
    size_t n = 0;
    const float *p = vae_model_params(m, &n);
    for (size_t i = 0; i < n; i++)
        require(isfinite(p[i]), "a parameter is not finite");
}

/* Whether vae_trainer_apply refuses the optimizer's settings as they are
 * (SGD with Nesterov needs momentum > 0 and dampening 0). */
static int nesterov_refused(const vae_optimizer *opt)
{
    double nesterov = 0.0, momentum = 0.0, dampening = 0.0;
    if (vae_optimizer_kind(opt) != VAE_OPTIMIZER_SGD)
        return 0;
    require(vae_optimizer_get_param(opt, VAE_OPT_NESTEROV, &nesterov) == VAE_OK &&
                vae_optimizer_get_param(opt, VAE_OPT_MOMENTUM, &momentum) == VAE_OK &&
                vae_optimizer_get_param(opt, VAE_OPT_DAMPENING, &dampening) == VAE_OK,
            "SGD settings unreadable");
    return nesterov != 0.0 && (momentum == 0.0 || dampening != 0.0);
}

/* The model part of the same bytes: loads whenever the restore succeeded,
 * with the restored parameters and sigma. */
static void check_model_part(fixture *f, const unsigned char *buf, size_t size, int restored)
{
    vae_model *lm = (vae_model *)f; /* must be overwritten with NULL on failure */
    int rc = vae_model_load_mem(&lm, buf, size);
    if (rc != VAE_OK) {
        require(!restored, "a restored checkpoint's model part does not load");
        require(rc == VAE_ERR_FORMAT || rc == VAE_ERR_NOMEM, "unexpected model load status");
        require(lm == NULL, "*out not cleared on failure");
        require(strstr(vae_last_error(), "vae_model_load_mem") != NULL,
                "model load message names no function");
        return;
    }
    if (restored) {
        size_t n = 0, ln = 0;
        const float *p = vae_model_params(f->m, &n), *lp = vae_model_params(lm, &ln);
        require(n == ln && memcmp(p, lp, n * sizeof *p) == 0,
                "the loaded model part differs from the restored parameters");
        double s = 0.0, ls = 0.0;
        require(vae_model_get_param(f->m, VAE_MODEL_GAUSSIAN_SIGMA, &s) == VAE_OK &&
                    vae_model_get_param(lm, VAE_MODEL_GAUSSIAN_SIGMA, &ls) == VAE_OK &&
                    s == ls,
                "the loaded model part has another sigma");
    }
    require_finite_params(lm);
    vae_model_free(lm);
}

/* Training goes on from a restored state: a step, then an epoch. */
static void train_on(fixture *f)
{
    int refused = nesterov_refused(f->opt);
    int rc = vae_trainer_step(f->t, batch, SAMPLES, NULL);
    require(rc == VAE_OK || rc == VAE_ERR_NUMERIC || (refused && rc == VAE_ERR_INVALID),
            "a step failed unexpectedly");
    require_finite_params(f->m);
    size_t done = 0, total = 0;
    require(vae_trainer_epoch_position(f->t, &done, &total) == VAE_OK, "epoch position");
    /* done == total: saved from the progress callback after the last step. */
    require(total == 0 ? done == 0 : done <= total, "impossible epoch position");
    int other = total != 0 && total != SAMPLES;
    vae_train_options o;
    require(vae_train_options_init(&o, sizeof o) == VAE_OK, "options");
    o.batch_size = 2;
    rc = vae_trainer_train_epoch(f->t, dataset, &o, NULL);
    if (other)
        require(rc == VAE_ERR_SHAPE, "an epoch over another sample count continued");
    else
        require(rc == VAE_OK || rc == VAE_ERR_NUMERIC || (refused && rc == VAE_ERR_INVALID),
                "an epoch failed unexpectedly");
    require_finite_params(f->m);
    size_t n = 0;
    free(save(f->t, &n)); /* the state stays finite */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int fix = data[0] & 1, sgd = (data[0] >> 1) & 1;
    fixture *f = get_fixture(sgd);
    require(saves_to(f->t, f->before, f->before_size), "the trainer left its fixed state");
    size--;
    unsigned char *buf = malloc(size ? size : 1);
    require(buf != NULL, "out of memory in the harness");
    memcpy(buf, data + 1, size);
    if (fix)
        fix_checksums(buf, size);

    int rc = vae_trainer_restore_mem(f->t, buf, size);
    if (rc != VAE_OK) {
        require(rc == VAE_ERR_FORMAT || rc == VAE_ERR_SHAPE || rc == VAE_ERR_NOMEM,
                "unexpected restore status");
        require(strstr(vae_last_error(), "vae_trainer_restore_mem") != NULL,
                "restore message names no function");
        require(saves_to(f->t, f->before, f->before_size),
                "a refused restore changed the trainer");
        check_model_part(f, buf, size, 0);
        free(buf);
        return 0;
    }
    check_model_part(f, buf, size, 1);
    size_t n1 = 0, n2 = 0;
    unsigned char *s1 = save(f->t, &n1);
    require(vae_trainer_restore_mem(f->t, s1, n1) == VAE_OK,
            "a saved checkpoint does not restore");
    unsigned char *s2 = save(f->t, &n2);
    require(n1 == n2 && memcmp(s1, s2, n1) == 0, "save, restore, save is not stable");
    train_on(f);
    require(vae_trainer_restore_mem(f->t, f->before, f->before_size) == VAE_OK,
            "the fixed state does not restore");
    require(saves_to(f->t, f->before, f->before_size), "the fixed state does not come back");
    free(s1);
    free(s2);
    free(buf);
    return 0;
}
