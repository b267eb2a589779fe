/* The epoch loop and whole-dataset evaluation: learning on synthetic data,
 * statistics, the progress callback and cancellation, reproducibility, the
 * equivalence with the public step functions, options and bad input. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vae/vae.h"

#include "test_util.h"

/* Error checks from test_util.h: the exact status, and a fresh message that
 * names fn and mentions needle (either may be NULL). */
#define EXPECT_ERR(call, expected, fn, needle) TU_EXPECT_ERR_MSG(call, expected, fn, needle)
#define OK(call) TU_OK(call)

/* ---- synthetic data and a standard setup --------------------------------------- */

enum { COUNT = 300, DIM = 16, LATENT = 2, BATCH = 64, STEPS = (COUNT + BATCH - 1) / BATCH };

static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double unif(uint64_t *s)
{
    return (double)(mix(s) >> 11) * 0x1.0p-53;
}

/* COUNT binary samples: four random prototypes with 8% of the pixels
 * flipped. With `soft`, values in (0, 1) instead (for binarization). */
static float *make_data(int soft, int32_t *labels)
{
    float proto[4][DIM];
    uint64_t s = 2024;
    for (size_t k = 0; k < 4; k++)
        for (size_t j = 0; j < DIM; j++)
            proto[k][j] = unif(&s) < 0.5 ? 1.0f : 0.0f;
    float *x = malloc(COUNT * DIM * sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < COUNT; i++) {
        size_t k = (size_t)(mix(&s) % 4);
        if (labels)
            labels[i] = (int32_t)k;
        for (size_t j = 0; j < DIM; j++) {
            float v = unif(&s) < 0.08 ? 1.0f - proto[k][j] : proto[k][j];
            x[i * DIM + j] = soft ? 0.1f + 0.8f * v : v;
        }
    }
    return x;
}

typedef struct setup {
    vae_model *m;
    vae_elbo *e;
    vae_optimizer *opt;
    vae_dataset *ds;
    vae_rng *rng;
    float *x;
} setup;

static setup make_setup(uint64_t seed, float beta, int objective)
{
    setup s;
    int32_t labels[COUNT];
    s.x = make_data(0, labels);
    OK(vae_dataset_from_floats(&s.ds, s.x, COUNT, DIM, labels));
    const size_t hidden[1] = {24};
    OK(vae_model_create_mlp(&s.m, DIM, hidden, 1, LATENT, VAE_ACT_TANH,
                            VAE_LIKELIHOOD_BERNOULLI, 5));
    OK(vae_elbo_create(&s.e));
    OK(vae_elbo_set_beta(s.e, beta));
    OK(vae_elbo_set_objective(s.e, objective));
    OK(vae_optimizer_adam_create(&s.opt, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f));
    OK(vae_rng_create(&s.rng, seed));
    return s;
}

static void free_setup(setup *s)
{
    vae_model_free(s->m);
    vae_elbo_free(s->e);
    vae_optimizer_free(s->opt);
    vae_dataset_free(s->ds);
    vae_rng_free(s->rng);
    free(s->x);
}

static vae_train_options opts_with(size_t batch, int shuffle, int binarize)
{
    vae_train_options o;
    vae_train_options_init(&o);
    o.batch_size = batch;
    o.shuffle = shuffle;
    o.binarize = binarize;
    return o;
}

static vae_epoch_stats fresh_stats(void)
{
    vae_epoch_stats st;
    memset(&st, 0xab, sizeof st); /* garbage a filled field must overwrite */
    st.size = sizeof st;
    return st;
}

/* ---- learning and statistics ------------------------------------------------------- */

static void test_loss_decreases_and_stats(void **state)
{
    (void)state;
    const float beta = 0.5f;
    setup s = make_setup(1, beta, VAE_OBJECTIVE_ELBO);
    vae_train_options o = opts_with(BATCH, 1, 0);
    double before = 0.0, after = 0.0;
    OK(vae_evaluate_dataset(s.m, s.e, s.ds, s.rng, 100, &before, NULL, NULL, NULL));
    enum { EPOCHS = 10 };
    double losses[EPOCHS];
    for (int ep = 0; ep < EPOCHS; ep++) {
        vae_epoch_stats st = fresh_stats();
        OK(vae_train_epoch(s.m, s.e, s.opt, s.ds, s.rng, &o, &st));
        assert_int_equal(st.size, sizeof st); /* the caller's field, left alone */
        assert_int_equal(st.samples, COUNT);
        assert_int_equal(st.steps, STEPS);
        assert_true(st.seconds >= 0.0 && st.seconds < 60.0);
        assert_true(isfinite(st.loss) && st.recon > 0.0 && st.kl >= 0.0);
        /* The epoch means keep the per-step identity loss = recon + beta kl. */
        double want = st.recon + (double)beta * st.kl;
        if (fabs(st.loss - want) > 1e-9 * fabs(want))
            fail_msg("epoch %d: loss %.17g, recon + beta kl %.17g", ep, st.loss, want);
        losses[ep] = st.loss;
    }
    OK(vae_evaluate_dataset(s.m, s.e, s.ds, s.rng, 100, &after, NULL, NULL, NULL));
    /* 50 Adam steps on 4 noisy prototypes: the loss starts near 16 ln 2 =
     * 11.1 nats and must fall by a wide margin, on the training statistics
     * and on a separate evaluation pass alike. */
    if (!(losses[EPOCHS - 1] < 0.75 * losses[0]) || !(after < 0.75 * before))
        fail_msg("loss did not fall: epochs %.4f -> %.4f, evaluation %.4f -> %.4f", losses[0],
                 losses[EPOCHS - 1], before, after);
    /* Mostly monotone: each of the last epochs below the first. */
    for (int ep = 1; ep < EPOCHS; ep++)
        assert_true(losses[ep] < losses[0]);
    free_setup(&s);
}

static void test_stats_size(void **state)
{
    (void)state;
    setup s = make_setup(2, 1.0f, VAE_OBJECTIVE_ELBO);
    vae_train_options o = opts_with(BATCH, 1, 0);
    /* An older caller's shorter struct: only the fields it has are written. */
    vae_epoch_stats st = fresh_stats();
    st.size = offsetof(vae_epoch_stats, seconds);
    OK(vae_train_epoch(s.m, s.e, s.opt, s.ds, s.rng, &o, &st));
    assert_true(isfinite(st.loss) && isfinite(st.recon) && isfinite(st.kl));
    vae_epoch_stats garbage;
    memset(&garbage, 0xab, sizeof garbage);
    assert_memory_equal(&st.seconds, &garbage.seconds,
                        sizeof st - offsetof(vae_epoch_stats, seconds));
    /* Stats may be NULL. */
    OK(vae_train_epoch(s.m, s.e, s.opt, s.ds, s.rng, &o, NULL));
    /* A size that was never set. */
    st.size = 0;
    EXPECT_ERR(vae_train_epoch(s.m, s.e, s.opt, s.ds, s.rng, &o, &st), VAE_ERR_INVALID,
               "vae_train_epoch", "stats->size");
    free_setup(&s);
}

/* ---- progress and cancellation ------------------------------------------------------- */

typedef struct progress_log {
    size_t calls, stop_at;
    size_t done[16], total[16];
    double running[16];
} progress_log;

static int on_progress(void *payload, size_t done, size_t total, double running)
{
    progress_log *p = payload;
    if (p->calls < 16) {
        p->done[p->calls] = done;
        p->total[p->calls] = total;
        p->running[p->calls] = running;
    }
    p->calls++;
    return p->stop_at && p->calls == p->stop_at;
}

/* The same training by hand: shuffle off, so batch b is samples
 * b*BATCH.., and the noise comes from rng in the same order. */
static double manual_steps(setup *s, size_t steps)
{
    float *x = malloc(BATCH * DIM * sizeof *x);
    assert_non_null(x);
    double sum = 0.0;
    size_t done = 0;
    for (size_t k = 0; k < steps; k++) {
        size_t b = COUNT - done < BATCH ? COUNT - done : BATCH;
        OK(vae_dataset_range(s->ds, done, b, x));
        double loss = 0.0;
        OK(vae_elbo_forward_backward(s->e, s->m, x, b, NULL, s->rng, &loss, NULL, NULL));
        OK(vae_optimizer_step(s->opt, s->m));
        sum += loss * (double)b;
        done += b;
    }
    free(x);
    return sum / (double)done;
}

static void test_progress_and_cancel(void **state)
{
    (void)state;
    setup s = make_setup(3, 1.0f, VAE_OBJECTIVE_ELBO);
    progress_log log = {0};
    vae_train_options o = opts_with(BATCH, 0, 0);
    o.progress = on_progress;
    o.payload = &log;
    vae_epoch_stats st = fresh_stats();
    OK(vae_train_epoch(s.m, s.e, s.opt, s.ds, s.rng, &o, &st));
    assert_int_equal(log.calls, STEPS);
    for (size_t k = 0; k < STEPS; k++) {
        size_t want = (k + 1) * BATCH < COUNT ? (k + 1) * BATCH : COUNT;
        assert_int_equal(log.done[k], want);
        assert_int_equal(log.total[k], COUNT);
        assert_true(isfinite(log.running[k]) && log.running[k] > 0.0);
    }
    /* The last running mean is the epoch's loss. */
    assert_true(log.running[STEPS - 1] == st.loss);

    /* The epoch is exactly the public step functions in a loop. */
    setup h = make_setup(3, 1.0f, VAE_OBJECTIVE_ELBO);
    double manual = manual_steps(&h, STEPS);
    size_t n = 0;
    const float *pa = vae_model_params(s.m, &n), *pb = vae_model_params(h.m, NULL);
    assert_memory_equal(pa, pb, n * sizeof(float));
    assert_true(manual == st.loss);
    free_setup(&h);
    free_setup(&s);

    /* Returning nonzero after step 2 stops there: that step is applied,
     * the next is not. */
    s = make_setup(4, 1.0f, VAE_OBJECTIVE_ELBO);
    memset(&log, 0, sizeof log);
    log.stop_at = 2;
    st = fresh_stats();
    EXPECT_ERR(vae_train_epoch(s.m, s.e, s.opt, s.ds, s.rng, &o, &st), VAE_ERR_CANCELLED,
               "vae_train_epoch", "progress");
    assert_int_equal(log.calls, 2);
    assert_int_equal(st.samples, 2 * BATCH);
    assert_int_equal(st.steps, 2);
    assert_true(st.loss == log.running[1]);
    h = make_setup(4, 1.0f, VAE_OBJECTIVE_ELBO);
    manual = manual_steps(&h, 2);
    pa = vae_model_params(s.m, &n);
    pb = vae_model_params(h.m, NULL);
    assert_memory_equal(pa, pb, n * sizeof(float));
    assert_true(manual == st.loss);
    /* The gradients are clean for whatever comes next. */
    const float *g = vae_model_grads(s.m, NULL);
    for (size_t i = 0; i < n; i++)
        assert_true(g[i] == 0.0f);
    free_setup(&h);

    /* Stopping after the first step. */
    memset(&log, 0, sizeof log);
    log.stop_at = 1;
    EXPECT_ERR(vae_train_epoch(s.m, s.e, s.opt, s.ds, s.rng, &o, NULL), VAE_ERR_CANCELLED,
               "vae_train_epoch", NULL);
    assert_int_equal(log.calls, 1);
    free_setup(&s);
}

/* ---- reproducibility ----------------------------------------------------------------- */

static void test_reproducible(void **state)
{
    (void)state;
    double loss[3];
    float *params[3];
    size_t n = 0;
    const uint64_t seeds[3] = {77, 77, 78};
    for (int k = 0; k < 3; k++) {
        setup s = make_setup(seeds[k], 1.0f, VAE_OBJECTIVE_ELBO);
        /* Shuffling and binarization draw from the generator too. */
        vae_train_options o = opts_with(50, 1, 1);
        vae_epoch_stats st = fresh_stats();
        for (int ep = 0; ep < 3; ep++)
            OK(vae_train_epoch(s.m, s.e, s.opt, s.ds, s.rng, &o, &st));
        loss[k] = st.loss;
        const float *p = vae_model_params(s.m, &n);
        params[k] = malloc(n * sizeof(float));
        assert_non_null(params[k]);
        memcpy(params[k], p, n * sizeof(float));
        free_setup(&s);
    }
    assert_memory_equal(&loss[0], &loss[1], sizeof loss[0]);
    assert_memory_equal(params[0], params[1], n * sizeof(float));
    assert_true(loss[0] != loss[2]);
    assert_true(memcmp(params[0], params[2], n * sizeof(float)) != 0);
    for (int k = 0; k < 3; k++)
        free(params[k]);
}

/* ---- options and bad input ----------------------------------------------------------- */

static void test_options(void **state)
{
    (void)state;
    vae_train_options o;
    memset(&o, 0xcd, sizeof o);
    vae_train_options_init(&o);
    assert_int_equal(o.size, sizeof o);
    assert_int_equal(o.batch_size, 128);
    assert_int_equal(o.shuffle, 1);
    assert_int_equal(o.binarize, 0);
    assert_null(o.progress);
    assert_null(o.payload);
    vae_train_options_init(NULL); /* harmless */

    setup s = make_setup(5, 1.0f, VAE_OBJECTIVE_ELBO);
    vae_epoch_stats st = fresh_stats();
    /* NULL options: the defaults, batches of 128. */
    OK(vae_train_epoch(s.m, s.e, s.opt, s.ds, s.rng, NULL, &st));
    assert_int_equal(st.steps, (COUNT + 127) / 128);
    assert_int_equal(st.samples, COUNT);
    /* A batch larger than the dataset: one step over everything. */
    o = opts_with(1000, 1, 0);
    OK(vae_train_epoch(s.m, s.e, s.opt, s.ds, s.rng, &o, &st));
    assert_int_equal(st.steps, 1);
    assert_int_equal(st.samples, COUNT);
    /* Batches of one. */
    o = opts_with(1, 1, 0);
    OK(vae_train_epoch(s.m, s.e, s.opt, s.ds, s.rng, &o, &st));
    assert_int_equal(st.steps, COUNT);

    const char *fn = "vae_train_epoch";
    o = opts_with(BATCH, 1, 0);
    o.size = 0;
    EXPECT_ERR(vae_train_epoch(s.m, s.e, s.opt, s.ds, s.rng, &o, &st), VAE_ERR_INVALID, fn,
               "opts->size");
    o.size = sizeof o - 1;
    EXPECT_ERR(vae_train_epoch(s.m, s.e, s.opt, s.ds, s.rng, &o, &st), VAE_ERR_INVALID, fn,
               "opts->size");
    o = opts_with(0, 1, 0);
    EXPECT_ERR(vae_train_epoch(s.m, s.e, s.opt, s.ds, s.rng, &o, &st), VAE_ERR_INVALID, fn,
               "batch_size");
    o = opts_with(BATCH, 1, 0);
    EXPECT_ERR(vae_train_epoch(NULL, s.e, s.opt, s.ds, s.rng, &o, &st), VAE_ERR_INVALID, fn,
               "model");
    EXPECT_ERR(vae_train_epoch(s.m, NULL, s.opt, s.ds, s.rng, &o, &st), VAE_ERR_INVALID, fn,
               "objective");
    EXPECT_ERR(vae_train_epoch(s.m, s.e, NULL, s.ds, s.rng, &o, &st), VAE_ERR_INVALID, fn,
               "optimizer");
    EXPECT_ERR(vae_train_epoch(s.m, s.e, s.opt, NULL, s.rng, &o, &st), VAE_ERR_INVALID, fn,
               "dataset");
    EXPECT_ERR(vae_train_epoch(s.m, s.e, s.opt, s.ds, NULL, &o, &st), VAE_ERR_INVALID, fn,
               "rng");

    /* A dataset of another width. */
    vae_dataset *narrow = NULL;
    OK(vae_dataset_from_floats(&narrow, s.x, COUNT, DIM - 1, NULL));
    EXPECT_ERR(vae_train_epoch(s.m, s.e, s.opt, narrow, s.rng, &o, &st), VAE_ERR_SHAPE, fn,
               "15");
    vae_dataset_free(narrow);

    /* An unbuilt model. */
    vae_model *unbuilt = NULL;
    OK(vae_model_create(&unbuilt, DIM, LATENT, VAE_LIKELIHOOD_BERNOULLI));
    EXPECT_ERR(vae_train_epoch(unbuilt, s.e, s.opt, s.ds, s.rng, &o, &st), VAE_ERR_STATE, fn,
               "build");
    vae_model_free(unbuilt);
    free_setup(&s);
}

static void test_failing_step_keeps_parameters(void **state)
{
    (void)state;
    setup s = make_setup(6, 1.0f, VAE_OBJECTIVE_ELBO);
    /* Values outside [0, 1] are not Bernoulli data: the first step fails,
     * the epoch ends with its status and nothing was updated. */
    float *bad = malloc(COUNT * DIM * sizeof *bad);
    assert_non_null(bad);
    for (size_t i = 0; i < COUNT * DIM; i++)
        bad[i] = 2.0f * s.x[i] - 0.5f;
    vae_dataset *ds = NULL;
    OK(vae_dataset_from_floats(&ds, bad, COUNT, DIM, NULL));
    size_t n = 0;
    float *before = malloc(vae_model_params(s.m, &n) ? n * sizeof(float) : 1);
    assert_non_null(before);
    memcpy(before, vae_model_params(s.m, NULL), n * sizeof(float));
    vae_train_options o = opts_with(BATCH, 1, 0);
    vae_epoch_stats st = fresh_stats();
    EXPECT_ERR(vae_train_epoch(s.m, s.e, s.opt, ds, s.rng, &o, &st), VAE_ERR_INVALID, NULL,
               "[0, 1]");
    assert_int_equal(st.steps, 0);
    assert_int_equal(st.samples, 0);
    assert_memory_equal(before, vae_model_params(s.m, NULL), n * sizeof(float));
    const float *g = vae_model_grads(s.m, NULL);
    for (size_t i = 0; i < n; i++)
        assert_true(g[i] == 0.0f);
    /* Dynamic binarization turns the same values into 0/1 draws (below 0
     * never fires, above 1 always does), so the epoch runs. */
    o.binarize = 1;
    OK(vae_train_epoch(s.m, s.e, s.opt, ds, s.rng, &o, &st));
    assert_int_equal(st.steps, STEPS);
    assert_true(memcmp(before, vae_model_params(s.m, NULL), n * sizeof(float)) != 0);
    free(before);
    free(bad);
    vae_dataset_free(ds);
    free_setup(&s);
}

/* ---- the autoencoder objective --------------------------------------------------------- */

static void test_autoencoder_trains(void **state)
{
    (void)state;
    setup s = make_setup(7, 1.0f, VAE_OBJECTIVE_AUTOENCODER);
    vae_train_options o = opts_with(BATCH, 1, 0);
    double first = 0.0, last = 0.0;
    for (int ep = 0; ep < 10; ep++) {
        vae_epoch_stats st = fresh_stats();
        OK(vae_train_epoch(s.m, s.e, s.opt, s.ds, s.rng, &o, &st));
        assert_true(st.kl == 0.0);
        assert_true(st.loss == st.recon);
        if (ep == 0)
            first = st.loss;
        last = st.loss;
    }
    if (!(last < 0.75 * first))
        fail_msg("autoencoder loss %.4f -> %.4f", first, last);
    free_setup(&s);
}

/* ---- evaluation over a dataset ---------------------------------------------------------- */

static void test_evaluate_dataset(void **state)
{
    (void)state;
    setup s = make_setup(8, 0.7f, VAE_OBJECTIVE_AUTOENCODER);
    vae_train_options o = opts_with(BATCH, 1, 0);
    OK(vae_train_epoch(s.m, s.e, s.opt, s.ds, s.rng, &o, NULL)); /* away from the init */

    /* Without noise (z = mu) the result is the direct call's, whatever the
     * generator: batch >= count is a single call over the whole set. */
    double loss, recon, kl, per[COUNT], dl, dr, dk, dper[COUNT];
    OK(vae_evaluate_dataset(s.m, s.e, s.ds, NULL, COUNT, &loss, &recon, &kl, per));
    OK(vae_elbo_evaluate(s.e, s.m, s.x, COUNT, NULL, NULL, &dl, &dr, &dk, dper));
    assert_true(loss == dl && recon == dr && kl == dk && kl == 0.0);
    assert_memory_equal(per, dper, sizeof per);

    /* In batches of 7 (the last one of 6): each batch is the direct call on
     * its rows, and the means agree with the whole-set call. */
    OK(vae_evaluate_dataset(s.m, s.e, s.ds, NULL, 7, &loss, &recon, &kl, per));
    for (size_t first = 0; first < COUNT; first += 7) {
        size_t b = COUNT - first < 7 ? COUNT - first : 7;
        double bp[7];
        OK(vae_elbo_evaluate(s.e, s.m, s.x + first * DIM, b, NULL, NULL, NULL, NULL, NULL, bp));
        assert_memory_equal(per + first, bp, b * sizeof(double));
    }
    double mean = 0.0;
    for (size_t i = 0; i < COUNT; i++)
        mean += per[i];
    mean /= COUNT;
    assert_true(fabs(mean - loss) <= 1e-12 * fabs(loss));
    assert_true(fabs(loss - dl) <= 1e-6 * fabs(dl));
    assert_true(fabs(recon - dr) <= 1e-6 * fabs(dr));
    assert_true(kl == 0.0);

    /* With the ELBO, the noise comes from rng in sample order, so the same
     * seed gives the direct call's numbers. */
    OK(vae_elbo_set_objective(s.e, VAE_OBJECTIVE_ELBO));
    vae_rng *r1 = NULL, *r2 = NULL;
    OK(vae_rng_create(&r1, 555));
    OK(vae_rng_create(&r2, 555));
    OK(vae_evaluate_dataset(s.m, s.e, s.ds, r1, COUNT, &loss, &recon, &kl, per));
    OK(vae_elbo_evaluate(s.e, s.m, s.x, COUNT, NULL, r2, &dl, &dr, &dk, dper));
    assert_true(loss == dl && recon == dr && kl == dk);
    assert_memory_equal(per, dper, sizeof per);
    assert_true(kl > 0.0);
    assert_true(fabs(loss - (recon + 0.7 * kl)) <= 1e-9 * fabs(loss));
    vae_rng_free(r1);
    OK(vae_rng_create(&r1, 555));
    OK(vae_evaluate_dataset(s.m, s.e, s.ds, r1, 7, &loss, &recon, &kl, per));
    for (size_t i = 0; i < COUNT; i++)
        if (fabs(per[i] - dper[i]) > 1e-5 * fabs(dper[i]))
            fail_msg("sample %zu: %.9g in batches of 7, %.9g in one call", i, per[i], dper[i]);
    mean = 0.0;
    for (size_t i = 0; i < COUNT; i++)
        mean += per[i];
    assert_true(fabs(mean / COUNT - loss) <= 1e-12 * fabs(loss));
    /* All outputs are optional. */
    OK(vae_evaluate_dataset(s.m, s.e, s.ds, r1, 64, NULL, NULL, NULL, NULL));

    const char *fn = "vae_evaluate_dataset";
    EXPECT_ERR(vae_evaluate_dataset(NULL, s.e, s.ds, r1, 7, &loss, NULL, NULL, NULL),
               VAE_ERR_INVALID, fn, "model");
    EXPECT_ERR(vae_evaluate_dataset(s.m, NULL, s.ds, r1, 7, &loss, NULL, NULL, NULL),
               VAE_ERR_INVALID, fn, "objective");
    EXPECT_ERR(vae_evaluate_dataset(s.m, s.e, NULL, r1, 7, &loss, NULL, NULL, NULL),
               VAE_ERR_INVALID, fn, "dataset");
    EXPECT_ERR(vae_evaluate_dataset(s.m, s.e, s.ds, r1, 0, &loss, NULL, NULL, NULL),
               VAE_ERR_INVALID, fn, "batch_size");
    /* The ELBO needs noise: no generator is an error (from the step it
     * delegates to), not a crash. */
    EXPECT_ERR(vae_evaluate_dataset(s.m, s.e, s.ds, NULL, 7, &loss, NULL, NULL, NULL),
               VAE_ERR_INVALID, NULL, "rng");
    vae_dataset *wide = NULL;
    float *x2 = calloc(10 * (DIM + 1), sizeof *x2);
    assert_non_null(x2);
    OK(vae_dataset_from_floats(&wide, x2, 10, DIM + 1, NULL));
    EXPECT_ERR(vae_evaluate_dataset(s.m, s.e, wide, r1, 7, &loss, NULL, NULL, NULL),
               VAE_ERR_SHAPE, fn, "17");
    vae_dataset_free(wide);
    free(x2);
    vae_model *unbuilt = NULL;
    OK(vae_model_create(&unbuilt, DIM, LATENT, VAE_LIKELIHOOD_BERNOULLI));
    EXPECT_ERR(vae_evaluate_dataset(unbuilt, s.e, s.ds, r1, 7, &loss, NULL, NULL, NULL),
               VAE_ERR_STATE, fn, "build");
    vae_model_free(unbuilt);
    vae_rng_free(r1);
    vae_rng_free(r2);
    free_setup(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loss_decreases_and_stats),
        cmocka_unit_test(test_stats_size),
        cmocka_unit_test(test_progress_and_cancel),
        cmocka_unit_test(test_reproducible),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_failing_step_keeps_parameters),
        cmocka_unit_test(test_autoencoder_trains),
        cmocka_unit_test(test_evaluate_dataset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
