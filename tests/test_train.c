/* The epoch loop and whole-dataset evaluation: learning on synthetic data,
 * statistics, the progress callback and cancellation, shuffling and
 * binarization from the trainer's generator, reproducibility, the
 * equivalence with the public step functions, the size-prefixed structs
 * (older and newer callers), options and bad input. */
#include "test_util.h"

/* Error checks from test_util.h: the exact status, and a fresh message that
 * names fn and mentions needle (either may be NULL). */
#define EXPECT_ERR(call, expected, fn, needle) TU_EXPECT_ERR_MSG(call, expected, fn, needle)
#define OK(call) TU_OK(call)

/* ---- synthetic data and a standard setup --------------------------------------- */

enum { COUNT = 300, DIM = 16, LATENT = 2, BATCH = 64, STEPS = (COUNT + BATCH - 1) / BATCH };

/* COUNT binary samples: four random prototypes with 8% of the pixels
 * flipped. With `soft`, values 0.1 and 0.9 instead (for binarization). */
static float *make_data(int soft, int32_t *labels)
{
    float proto[4][DIM];
    tu_rng r = {2024};
    for (size_t k = 0; k < 4; k++)
        for (size_t j = 0; j < DIM; j++)
            proto[k][j] = tu_unif(&r) < 0.5 ? 1.0f : 0.0f;
    float *x = tu_alloc(COUNT * DIM, sizeof *x);
    for (size_t i = 0; i < COUNT; i++) {
        size_t k = (size_t)(tu_u64(&r) % 4);
        if (labels)
            labels[i] = (int32_t)k;
        for (size_t j = 0; j < DIM; j++) {
            float v = tu_unif(&r) < 0.08 ? 1.0f - proto[k][j] : proto[k][j];
            x[i * DIM + j] = soft ? 0.1f + 0.8f * v : v;
        }
    }
    return x;
}

typedef struct setup {
    vae_model *m;
    vae_elbo *e;
    vae_optimizer *opt;
    vae_context *ctx;
    vae_trainer *t;
    vae_dataset *ds;
    float *x;
} setup;

/* The same model (seed 5) every time; `seed` seeds the trainer's generator. */
static setup make_setup_opt(uint64_t seed, double beta, int objective, int opt_kind, double lr,
                            int soft)
{
    setup s;
    int32_t labels[COUNT];
    s.x = make_data(soft, labels);
    OK(vae_dataset_from_floats(&s.ds, s.x, COUNT, DIM, labels));
    const size_t hidden[1] = {24};
    OK(vae_model_create_mlp(&s.m, DIM, hidden, 1, LATENT, VAE_ACT_TANH,
                            VAE_LIKELIHOOD_BERNOULLI, 5));
    OK(vae_elbo_create(&s.e));
    OK(vae_elbo_set_param(s.e, VAE_ELBO_BETA, beta));
    OK(vae_elbo_set_param(s.e, VAE_ELBO_OBJECTIVE, objective));
    OK(vae_optimizer_create(&s.opt, opt_kind));
    OK(vae_optimizer_set_param(s.opt, VAE_OPT_LR, lr));
    OK(vae_context_create(&s.ctx));
    OK(vae_trainer_create(&s.t, s.m, s.e, s.opt, s.ctx, seed));
    return s;
}

static setup make_setup(uint64_t seed, double beta, int objective)
{
    return make_setup_opt(seed, beta, objective, VAE_OPTIMIZER_ADAM, 1e-2, 0);
}

static void free_setup(setup *s)
{
    vae_trainer_free(s->t);
    vae_context_free(s->ctx);
    vae_model_free(s->m);
    vae_elbo_free(s->e);
    vae_optimizer_free(s->opt);
    vae_dataset_free(s->ds);
    free(s->x);
}

static vae_train_options opts_with(size_t batch, int shuffle, int binarize)
{
    vae_train_options o;
    memset(&o, 0xcd, sizeof o);
    OK(vae_train_options_init(&o, sizeof o));
    o.batch_size = batch;
    o.shuffle = shuffle;
    o.binarize = binarize;
    return o;
}

static size_t n_params(setup *s)
{
    size_t n = 0;
    assert_non_null(vae_model_params(s->m, &n));
    return n;
}

static void assert_same_params(setup *a, setup *b, const char *what)
{
    size_t n = n_params(a);
    assert_int_equal(n, n_params(b));
    if (memcmp(vae_model_params(a->m, NULL), vae_model_params(b->m, NULL), n * sizeof(float)))
        fail_msg("%s: the parameters differ", what);
}

/* ---- learning and statistics ------------------------------------------------------- */

static void test_loss_decreases_and_stats(void **state)
{
    (void)state;
    const double beta = 0.5;
    setup s = make_setup(1, beta, VAE_OBJECTIVE_ELBO);
    vae_train_options o = opts_with(BATCH, 1, 0);
    vae_rng *eval = NULL;
    OK(vae_rng_create(&eval, 99));
    vae_epoch_stats before = tu_stats(), after = tu_stats();
    OK(vae_evaluate_dataset(s.ctx, s.m, s.e, s.ds, eval, NULL, &before));
    enum { EPOCHS = 10 };
    double losses[EPOCHS];
    for (int ep = 0; ep < EPOCHS; ep++) {
        vae_epoch_stats st = tu_stats();
        OK(vae_trainer_train_epoch(s.t, s.ds, &o, &st));
        assert_int_equal(st.size, sizeof st); /* the caller's field, left alone */
        assert_int_equal(st.samples, COUNT);
        assert_int_equal(st.steps, STEPS);
        assert_true(st.seconds >= 0.0 && st.seconds < 60.0);
        assert_true(isfinite(st.loss) && st.recon > 0.0 && st.kl >= 0.0);
        /* The epoch means keep the per-step identity loss = recon + beta kl. */
        double want = st.recon + beta * st.kl;
        if (fabs(st.loss - want) > 1e-9 * fabs(want))
            fail_msg("epoch %d: loss %.17g, recon + beta kl %.17g", ep, st.loss, want);
        losses[ep] = st.loss;
        /* The counters: one epoch and STEPS steps more each time. */
        assert_int_equal(vae_trainer_epochs(s.t), (uint64_t)ep + 1);
        assert_int_equal(vae_trainer_steps(s.t), (uint64_t)(ep + 1) * STEPS);
    }
    OK(vae_evaluate_dataset(s.ctx, s.m, s.e, s.ds, eval, NULL, &after));
    assert_int_equal(after.samples, COUNT);
    /* 50 Adam steps on 4 noisy prototypes: the loss starts near 16 ln 2 =
     * 11.1 nats and must fall by a wide margin, on the training statistics
     * and on a separate evaluation pass alike. */
    if (!(losses[EPOCHS - 1] < 0.75 * losses[0]) || !(after.loss < 0.75 * before.loss))
        fail_msg("loss did not fall: epochs %.4f -> %.4f, evaluation %.4f -> %.4f", losses[0],
                 losses[EPOCHS - 1], before.loss, after.loss);
    /* Mostly monotone: each of the later epochs below the first. */
    for (int ep = 1; ep < EPOCHS; ep++)
        assert_true(losses[ep] < losses[0]);
    vae_rng_free(eval);
    free_setup(&s);
}

/* ---- size-prefixed structures: older (shorter) and newer (longer) callers -------- */

/* The three calls that fill a vae_epoch_stats on behalf of this file. */
enum { VIA_EPOCH, VIA_STEP, VIA_EVALUATE, N_VIA };
static const char *const via_name[N_VIA] = {"vae_trainer_train_epoch", "vae_trainer_step",
                                            "vae_evaluate_dataset"};
static const size_t via_samples[N_VIA] = {COUNT, BATCH, COUNT};

static int call_with_stats(setup *s, int via, vae_epoch_stats *st)
{
    vae_train_options o = opts_with(BATCH, 1, 0);
    vae_rng *rng = NULL;
    int rc;
    switch (via) {
    case VIA_EPOCH: return vae_trainer_train_epoch(s->t, s->ds, &o, st);
    case VIA_STEP: return vae_trainer_step(s->t, s->x, BATCH, st);
    default:
        OK(vae_rng_create(&rng, 9));
        rc = vae_evaluate_dataset(s->ctx, s->m, s->e, s->ds, rng, NULL, st);
        vae_rng_free(rng);
        return rc;
    }
}

/* A caller compiled against a shorter vae_epoch_stats: the library fills the
 * fields its size covers and writes no byte past it. */
static void test_stats_truncated(void **state)
{
    (void)state;
    /* What a header that ended after kl would have declared. */
    struct old_stats {
        size_t size;
        double loss, recon, kl;
    };
    const size_t sizes[] = {offsetof(vae_epoch_stats, recon), offsetof(vae_epoch_stats, kl),
                            sizeof(struct old_stats),
                            offsetof(vae_epoch_stats, seconds) + sizeof(double),
                            offsetof(vae_epoch_stats, samples) + sizeof(size_t)};
    for (int via = 0; via < N_VIA; via++)
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            setup s = make_setup(2, 1.0, VAE_OBJECTIVE_ELBO);
            union {
                vae_epoch_stats st;
                unsigned char b[sizeof(vae_epoch_stats) + 32];
            } u;
            memset(&u, 0xab, sizeof u);
            u.st.size = sizes[k];
            OK(call_with_stats(&s, via, &u.st));
            size_t bad = tu_first_byte_not(u.b + sizes[k], sizeof u - sizes[k], 0xab);
            if (bad != sizeof u - sizes[k])
                fail_msg("%s with stats.size %zu wrote byte %zu", via_name[via], sizes[k],
                         sizes[k] + bad);
            assert_int_equal(u.st.size, sizes[k]);
            /* The fields it covers are filled. */
            assert_true(isfinite(u.st.loss) && u.st.loss > 0.0);
            if (sizes[k] >= offsetof(vae_epoch_stats, kl) + sizeof(double))
                assert_true(isfinite(u.st.recon) && u.st.kl >= 0.0);
            if (sizes[k] >= offsetof(vae_epoch_stats, samples) + sizeof(size_t))
                assert_int_equal(u.st.samples, via_samples[via]);
            free_setup(&s);
        }
}

/* A caller compiled against a longer vae_epoch_stats (a newer header): the
 * tail this library does not know must be zero (docs: "accepted when every
 * byte past the fields this library knows is zero"); it is then left zero.
 * A nonzero tail is refused before anything runs. A size that cannot hold
 * even the size field is refused. */
static void test_stats_extended(void **state)
{
    (void)state;
    struct new_stats {
        vae_epoch_stats st;
        double future1;
        uint64_t future2;
    };
    for (int via = 0; via < N_VIA; via++) {
        setup s = make_setup(3, 1.0, VAE_OBJECTIVE_ELBO);
        struct new_stats big;
        memset(&big, 0, sizeof big);
        big.st.size = sizeof big;
        big.st.loss = -1.0;
        OK(call_with_stats(&s, via, &big.st));
        assert_int_equal(big.st.size, sizeof big);
        assert_true(isfinite(big.st.loss) && big.st.loss > 0.0);
        assert_int_equal(big.st.samples, via_samples[via]);
        assert_true(big.future1 == 0.0 && big.future2 == 0);

        /* Nonzero unknown bytes: the first one past the known fields, and
         * the very last byte. */
        const size_t n = n_params(&s);
        float *p0 = tu_copy_floats(vae_model_params(s.m, NULL), n);
        const uint64_t steps0 = vae_trainer_steps(s.t), epochs0 = vae_trainer_epochs(s.t);
        for (int where = 0; where < 2; where++) {
            memset(&big, 0, sizeof big);
            big.st.size = sizeof big;
            unsigned char *tail = (unsigned char *)&big + sizeof(vae_epoch_stats);
            if (where == 0)
                tail[0] = 1;
            else
                big.future2 = (uint64_t)1 << 63;
            EXPECT_ERR(call_with_stats(&s, via, &big.st), VAE_ERR_INVALID, via_name[via],
                       "stats");
            /* Refused before any work: parameters and counters unchanged. */
            if (memcmp(p0, vae_model_params(s.m, NULL), n * sizeof(float)))
                fail_msg("%s refused the stats but changed the parameters", via_name[via]);
            assert_int_equal(vae_trainer_steps(s.t), steps0);
            assert_int_equal(vae_trainer_epochs(s.t), epochs0);
            TU_ASSERT_ZERO_GRADS(s.t);
        }
        /* Sizes that were never set, or too small for the size field. */
        const size_t tiny_sizes[] = {0, 1, sizeof(size_t) - 1};
        for (size_t k = 0; k < 3; k++) {
            vae_epoch_stats st = tu_stats();
            st.size = tiny_sizes[k];
            EXPECT_ERR(call_with_stats(&s, via, &st), VAE_ERR_INVALID, via_name[via], "size");
            if (memcmp(p0, vae_model_params(s.m, NULL), n * sizeof(float)))
                fail_msg("%s refused stats.size %zu but changed the parameters", via_name[via],
                         tiny_sizes[k]);
            assert_int_equal(vae_trainer_steps(s.t), steps0);
        }
        /* No stats at all is fine. */
        OK(call_with_stats(&s, via, NULL));
        free(p0);
        free_setup(&s);
    }
}

/* vae_train_options_init(&o, size): the defaults, as far as size reaches. */
static void test_options_init(void **state)
{
    (void)state;
    const char *fn = "vae_train_options_init";
    vae_train_options o;
    memset(&o, 0xcd, sizeof o);
    OK(vae_train_options_init(&o, sizeof o));
    assert_int_equal(o.size, sizeof o);
    assert_int_equal(o.batch_size, 128);
    assert_int_equal(o.shuffle, 1);
    assert_int_equal(o.binarize, 0);
    assert_null(o.progress);
    assert_null(o.payload);

    EXPECT_ERR(vae_train_options_init(NULL, sizeof o), VAE_ERR_INVALID, fn, NULL);
    /* Too small to hold even the size field: refused, nothing written. */
    const size_t small[] = {0, 1, sizeof(size_t) - 1};
    for (size_t k = 0; k < 3; k++) {
        memset(&o, 0xcd, sizeof o);
        EXPECT_ERR(vae_train_options_init(&o, small[k]), VAE_ERR_INVALID, fn, "size");
        assert_int_equal(tu_first_byte_not(&o, sizeof o, 0xcd), sizeof o);
    }

    /* Older, shorter structs: no byte past `size` is written, the fields it
     * covers get their defaults. */
    struct old_opts {
        size_t size;
        size_t batch_size;
        int shuffle;
    };
    const size_t sizes[] = {sizeof(size_t), offsetof(vae_train_options, batch_size) + 4,
                            offsetof(vae_train_options, shuffle), sizeof(struct old_opts),
                            offsetof(vae_train_options, progress) + sizeof(void *)};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        union {
            vae_train_options o;
            unsigned char b[sizeof(vae_train_options) + 16];
        } u;
        memset(&u, 0xcd, sizeof u);
        OK(vae_train_options_init(&u.o, sizes[k]));
        assert_int_equal(u.o.size, sizes[k]);
        size_t bad = tu_first_byte_not(u.b + sizes[k], sizeof u - sizes[k], 0xcd);
        if (bad != sizeof u - sizes[k])
            fail_msg("vae_train_options_init(size %zu) wrote byte %zu", sizes[k],
                     sizes[k] + bad);
        if (sizes[k] >= offsetof(vae_train_options, shuffle))
            assert_int_equal(u.o.batch_size, 128);
        if (sizes[k] >= sizeof(struct old_opts)) {
            assert_int_equal(u.o.shuffle, 1);
            assert_int_equal(u.o.binarize, 0); /* inside old_opts' tail padding */
        }
        if (sizes[k] > offsetof(vae_train_options, progress))
            assert_null(u.o.progress);
    }

}

/* vae_train_options_init for a caller compiled against a newer, longer
 * struct: the known fields get their defaults and the unknown tail the only
 * default this library can give it (zero), so that the options it made are
 * accepted by the epoch: `vae_train_options o; vae_train_options_init(&o,
 * sizeof o);` on the stack must work with an older library too. */
static void test_options_init_newer_struct(void **state)
{
    (void)state;
    struct new_opts {
        vae_train_options o;
        uint64_t future1;
        uint32_t future2[2];
    } big;
    memset(&big, 0xcd, sizeof big);
    OK(vae_train_options_init(&big.o, sizeof big));
    assert_int_equal(big.o.size, sizeof big);
    assert_int_equal(big.o.batch_size, 128);
    assert_int_equal(big.o.shuffle, 1);
    assert_int_equal(big.o.binarize, 0);
    assert_null(big.o.progress);
    assert_null(big.o.payload);
    if (big.future1 != 0 || big.future2[0] != 0 || big.future2[1] != 0)
        fail_msg("vae_train_options_init(sizeof a longer struct) left the unknown tail "
                 "%#llx %#x %#x; vae_trainer_train_epoch refuses a nonzero tail",
                 (unsigned long long)big.future1, big.future2[0], big.future2[1]);
    setup s = make_setup(4, 1.0, VAE_OBJECTIVE_ELBO);
    vae_epoch_stats st = tu_stats();
    OK(vae_trainer_train_epoch(s.t, s.ds, &big.o, &st));
    assert_int_equal(st.steps, (COUNT + 127) / 128);
    free_setup(&s);
}

typedef struct progress_log {
    size_t calls, stop_at;
    size_t done[16], total[16];
    double running[16];
    /* Checks made from inside the callback (cmocka asserts cannot jump out
     * of the library's frames). */
    vae_trainer *t;
    vae_context *busy, *other;
    const vae_model *m;
    const vae_elbo *e;
    const vae_dataset *ds;
    const float *x;
    vae_rng *rng;
    int grads_nonzero;      /* a call saw a nonzero gradient slab */
    int busy_rc, busy_rc2;  /* vae_encode / vae_evaluate_dataset on the trainer's context */
    int other_rc;           /* vae_encode on another context */
    char busy_msg[512];
} progress_log;

static int on_progress(void *payload, size_t done, size_t total, double running)
{
    progress_log *p = payload;
    if (p->calls < 16) {
        p->done[p->calls] = done;
        p->total[p->calls] = total;
        p->running[p->calls] = running;
    }
    if (p->t) {
        size_t n = 0;
        const float *g = vae_trainer_grads(p->t, &n);
        if (!g || tu_first_nonzero(g, n) != n)
            p->grads_nonzero = 1;
    }
    if (p->busy && p->calls == 0) {
        float mu[LATENT], lv[LATENT];
        p->busy_rc = vae_encode(p->busy, p->m, p->x, 1, mu, lv);
        snprintf(p->busy_msg, sizeof p->busy_msg, "%s", vae_last_error());
        p->busy_rc2 = vae_evaluate_dataset(p->busy, p->m, p->e, p->ds, p->rng, NULL, NULL);
        p->other_rc = vae_encode(p->other, p->m, p->x, 1, mu, lv);
    }
    p->calls++;
    return p->stop_at && p->calls == p->stop_at;
}

/* A caller compiled against a shorter vae_train_options: the fields it lacks
 * take their defaults, whatever lies in memory past its size. */
static void test_options_truncated(void **state)
{
    (void)state;
    struct old_opts {
        size_t size;
        size_t batch_size;
        int shuffle;
    };
    progress_log log;
    memset(&log, 0, sizeof log);
    union {
        struct old_opts old;
        vae_train_options full;
        unsigned char b[sizeof(vae_train_options) + 16];
    } u;

    /* sizeof(struct old_opts): batch 50, no shuffle. Past it, where a newer
     * caller's progress and payload would be, a callback that must not run. */
    memset(&u, 0, sizeof u);
    u.old.size = sizeof(struct old_opts);
    u.old.batch_size = 50;
    u.old.shuffle = 0;
    u.full.progress = on_progress;
    u.full.payload = &log;
    setup a = make_setup(5, 1.0, VAE_OBJECTIVE_ELBO), b = make_setup(5, 1.0, VAE_OBJECTIVE_ELBO);
    vae_epoch_stats sa = tu_stats(), sb = tu_stats();
    OK(vae_trainer_train_epoch(a.t, a.ds, (const vae_train_options *)&u.old, &sa));
    assert_int_equal(log.calls, 0);
    assert_int_equal(sa.steps, (COUNT + 49) / 50);
    vae_train_options o = opts_with(50, 0, 0);
    OK(vae_trainer_train_epoch(b.t, b.ds, &o, &sb));
    assert_same_params(&a, &b, "old options (batch 50, no shuffle) against the full struct");
    assert_true(sa.loss == sb.loss);
    free_setup(&a);
    free_setup(&b);

    /* Even shorter, batch_size only: shuffle takes its default 1 although
     * the bytes past size say 0, binarize its default 0 although they say 1. */
    memset(&u, 0, sizeof u);
    u.full.size = offsetof(vae_train_options, shuffle);
    u.full.batch_size = 50;
    u.full.shuffle = 0;
    u.full.binarize = 1;
    u.full.progress = on_progress;
    u.full.payload = &log;
    a = make_setup(6, 1.0, VAE_OBJECTIVE_ELBO);
    b = make_setup(6, 1.0, VAE_OBJECTIVE_ELBO);
    OK(vae_trainer_train_epoch(a.t, a.ds, &u.full, &sa));
    assert_int_equal(log.calls, 0);
    o = opts_with(50, 1, 0);
    OK(vae_trainer_train_epoch(b.t, b.ds, &o, &sb));
    assert_same_params(&a, &b, "options of batch_size only against shuffle 1, binarize 0");
    /* ...and that differs from what the bytes past size would have asked. */
    setup c = make_setup(6, 1.0, VAE_OBJECTIVE_ELBO);
    o = opts_with(50, 0, 1);
    OK(vae_trainer_train_epoch(c.t, c.ds, &o, NULL));
    assert_true(memcmp(vae_model_params(a.m, NULL), vae_model_params(c.m, NULL),
                       n_params(&a) * sizeof(float)) != 0);
    free_setup(&a);
    free_setup(&b);
    free_setup(&c);
}

/* A caller compiled against a longer vae_train_options (a newer header): the
 * tail must be zero; a nonzero tail is refused before anything runs. */
static void test_options_extended(void **state)
{
    (void)state;
    struct new_opts {
        vae_train_options o;
        double future1;
        uint64_t future2;
    } big;
    setup a = make_setup(7, 1.0, VAE_OBJECTIVE_ELBO), b = make_setup(7, 1.0, VAE_OBJECTIVE_ELBO);
    memset(&big, 0, sizeof big);
    big.o = opts_with(BATCH, 1, 0);
    big.o.size = sizeof big;
    vae_epoch_stats st = tu_stats();
    OK(vae_trainer_train_epoch(a.t, a.ds, &big.o, &st));
    assert_int_equal(st.steps, STEPS);
    vae_train_options o = opts_with(BATCH, 1, 0);
    OK(vae_trainer_train_epoch(b.t, b.ds, &o, NULL));
    assert_same_params(&a, &b, "a longer options struct with a zero tail");

    const size_t n = n_params(&a);
    float *p0 = tu_copy_floats(vae_model_params(a.m, NULL), n);
    for (int where = 0; where < 3; where++) {
        memset(&big, 0, sizeof big);
        big.o = opts_with(BATCH, 1, 0);
        big.o.size = sizeof big;
        if (where == 0)
            big.future1 = 1.0;
        else if (where == 1)
            big.future2 = 1;
        else
            ((unsigned char *)&big)[sizeof big - 1] = 0x80;
        st = tu_stats();
        EXPECT_ERR(vae_trainer_train_epoch(a.t, a.ds, &big.o, &st), VAE_ERR_INVALID,
                   "vae_trainer_train_epoch", "opts");
        if (memcmp(p0, vae_model_params(a.m, NULL), n * sizeof(float)))
            fail_msg("case %d: refused options, yet the parameters changed", where);
        assert_int_equal(vae_trainer_steps(a.t), STEPS);
        assert_int_equal(vae_trainer_epochs(a.t), 1);
    }
    free(p0);
    free_setup(&a);
    free_setup(&b);
}

/* ---- progress and cancellation ------------------------------------------------------- */

/* The same training by hand: shuffle off, so batch b is samples b*BATCH..,
 * and vae_trainer_step draws the noise from the trainer's generator in the
 * same order. */
static double manual_steps(setup *s, size_t steps)
{
    float *x = tu_alloc(BATCH * DIM, sizeof *x);
    double sum = 0.0;
    size_t done = 0;
    for (size_t k = 0; k < steps; k++) {
        size_t b = COUNT - done < BATCH ? COUNT - done : BATCH;
        OK(vae_dataset_range(s->ds, done, b, x));
        vae_epoch_stats st = tu_stats();
        OK(vae_trainer_step(s->t, x, b, &st));
        assert_int_equal(st.steps, 1);
        assert_int_equal(st.samples, b);
        sum += st.loss * (double)b;
        done += b;
    }
    free(x);
    return sum / (double)done;
}

static void test_progress_and_cancel(void **state)
{
    (void)state;
    setup s = make_setup(3, 1.0, VAE_OBJECTIVE_ELBO);
    progress_log log;
    memset(&log, 0, sizeof log);
    log.t = s.t;
    log.busy = s.ctx;
    vae_context *other = NULL;
    vae_rng *rng = NULL;
    OK(vae_context_create(&other));
    OK(vae_rng_create(&rng, 1));
    log.other = other;
    log.rng = rng;
    log.m = s.m;
    log.e = s.e;
    log.ds = s.ds;
    log.x = s.x;
    vae_train_options o = opts_with(BATCH, 0, 0);
    o.progress = on_progress;
    o.payload = &log;
    vae_epoch_stats st = tu_stats();
    OK(vae_trainer_train_epoch(s.t, s.ds, &o, &st));
    assert_int_equal(log.calls, STEPS);
    for (size_t k = 0; k < STEPS; k++) {
        size_t want = (k + 1) * BATCH < COUNT ? (k + 1) * BATCH : COUNT;
        assert_int_equal(log.done[k], want);
        assert_int_equal(log.total[k], COUNT);
        assert_true(isfinite(log.running[k]) && log.running[k] > 0.0);
    }
    /* The last running mean is the epoch's loss. */
    assert_true(log.running[STEPS - 1] == st.loss);
    /* Between steps the slab is zero; the trainer's context is busy (a
     * second call on it is refused, not queued or corrupted) and another
     * context serves inference. */
    assert_false(log.grads_nonzero);
    assert_int_equal(log.busy_rc, VAE_ERR_STATE);
    assert_non_null(strstr(log.busy_msg, "vae_encode"));
    assert_int_equal(log.busy_rc2, VAE_ERR_STATE);
    assert_int_equal(log.other_rc, VAE_OK);
    assert_int_equal(vae_trainer_epochs(s.t), 1);
    assert_int_equal(vae_trainer_steps(s.t), STEPS);

    /* The epoch is exactly the public step function in a loop. */
    setup h = make_setup(3, 1.0, VAE_OBJECTIVE_ELBO);
    double manual = manual_steps(&h, STEPS);
    assert_same_params(&s, &h, "an epoch against vae_trainer_step in a loop");
    TU_CLOSE(manual, st.loss, 1e-13, 0.0);
    assert_int_equal(vae_trainer_epochs(h.t), 0); /* steps are not epochs */
    free_setup(&h);
    free_setup(&s);

    /* Returning nonzero after step 2 stops there: that step is applied, the
     * next is not, and the stats say what was done. */
    s = make_setup(4, 1.0, VAE_OBJECTIVE_ELBO);
    memset(&log, 0, sizeof log);
    log.stop_at = 2;
    log.t = s.t;
    st = tu_stats();
    EXPECT_ERR(vae_trainer_train_epoch(s.t, s.ds, &o, &st), VAE_ERR_CANCELLED,
               "vae_trainer_train_epoch", "progress");
    assert_int_equal(log.calls, 2);
    assert_int_equal(st.samples, 2 * BATCH);
    assert_int_equal(st.steps, 2);
    assert_true(isfinite(st.seconds) && st.seconds >= 0.0);
    assert_true(st.loss == log.running[1]);
    TU_CLOSE(st.loss, st.recon + st.kl, 1e-12, 0.0);
    assert_false(log.grads_nonzero);
    /* A cancelled epoch is not counted; its steps are. */
    assert_int_equal(vae_trainer_epochs(s.t), 0);
    assert_int_equal(vae_trainer_steps(s.t), 2);
    h = make_setup(4, 1.0, VAE_OBJECTIVE_ELBO);
    manual = manual_steps(&h, 2);
    assert_same_params(&s, &h, "a cancelled epoch against two steps");
    TU_CLOSE(manual, st.loss, 1e-13, 0.0);
    /* The gradients are clean for whatever comes next. */
    TU_ASSERT_ZERO_GRADS(s.t);
    free_setup(&h);

    /* Stopping after the first step, stats NULL. */
    memset(&log, 0, sizeof log);
    log.stop_at = 1;
    EXPECT_ERR(vae_trainer_train_epoch(s.t, s.ds, &o, NULL), VAE_ERR_CANCELLED,
               "vae_trainer_train_epoch", NULL);
    assert_int_equal(log.calls, 1);
    assert_int_equal(vae_trainer_steps(s.t), 3);
    assert_int_equal(vae_trainer_epochs(s.t), 0);
    /* Each call continued the open epoch where the last one stopped (its
     * 3 steps are the first 3 of the epoch); the next finishes it, which
     * then counts as the first. */
    size_t done = 0, total = 0;
    OK(vae_trainer_epoch_position(s.t, &done, &total));
    assert_int_equal(done, 3 * BATCH);
    assert_int_equal(total, COUNT);
    o.progress = NULL;
    st = tu_stats();
    OK(vae_trainer_train_epoch(s.t, s.ds, &o, &st));
    assert_int_equal(vae_trainer_epochs(s.t), 1);
    assert_int_equal(vae_trainer_steps(s.t), STEPS);
    assert_int_equal(st.samples, COUNT); /* the stats cover the whole epoch */
    assert_int_equal(st.steps, STEPS);
    OK(vae_trainer_epoch_position(s.t, &done, &total));
    assert_int_equal(done + total, 0);
    vae_context_free(other);
    vae_rng_free(rng);
    free_setup(&s);
}

/* A second trainer on the context an epoch is using: from the progress
 * callback its calls find the context busy and fail with VAE_ERR_STATE,
 * refused rather than queued or run on a workspace in use, and change
 * neither the parameters nor the step counter; vae_trainer_apply leaves the
 * slab as the caller wrote it. (vae_trainer_step's "the slab is zero after
 * a failure" is not asserted for VAE_ERR_STATE: the busy context may mean
 * another thread is inside a call on this very trainer, whose slab must not
 * be touched then; the report of this port raises it.) */
typedef struct busy_log {
    vae_trainer *t2;
    vae_model *m2;
    const float *x;
    int calls;
    int apply_rc, step_rc, fb_rc;
    int slab_kept_after_apply, slab_zero_after_step, params_kept;
    char step_msg[512];
} busy_log;

static int on_progress_busy(void *payload, size_t done, size_t total, double running)
{
    (void)done;
    (void)total;
    (void)running;
    busy_log *b = payload;
    if (b->calls++ == 0) {
        size_t n = 0;
        float *g = vae_trainer_grads(b->t2, &n);
        const float *p = vae_model_params(b->m2, NULL);
        float *p0 = malloc(n * sizeof *p0), *g0 = malloc(n * sizeof *g0);
        if (!p0 || !g0) {
            free(p0);
            free(g0);
            return 1;
        }
        memcpy(p0, p, n * sizeof *p0);
        for (size_t i = 0; i < n; i++)
            g[i] = 0.01f * (float)(i % 7) + 0.001f;
        memcpy(g0, g, n * sizeof *g0);
        b->apply_rc = vae_trainer_apply(b->t2);
        b->slab_kept_after_apply = memcmp(g, g0, n * sizeof *g0) == 0;
        b->fb_rc = vae_trainer_forward_backward(b->t2, b->x, 2, NULL, NULL);
        b->step_rc = vae_trainer_step(b->t2, b->x, 2, NULL);
        snprintf(b->step_msg, sizeof b->step_msg, "%s", vae_last_error());
        b->slab_zero_after_step = tu_first_nonzero(g, n) == n;
        b->params_kept = memcmp(p, p0, n * sizeof *p0) == 0;
        free(p0);
        free(g0);
    }
    return 0;
}

static void test_busy_context_from_callback(void **state)
{
    (void)state;
    setup s = make_setup(12, 1.0, VAE_OBJECTIVE_ELBO);
    const size_t hidden[1] = {24};
    busy_log b;
    memset(&b, 0, sizeof b);
    OK(vae_model_create_mlp(&b.m2, DIM, hidden, 1, LATENT, VAE_ACT_TANH,
                            VAE_LIKELIHOOD_BERNOULLI, 6));
    OK(vae_trainer_create(&b.t2, b.m2, s.e, s.opt, s.ctx, 1));
    b.x = s.x;
    vae_train_options o = opts_with(BATCH, 1, 0);
    o.progress = on_progress_busy;
    o.payload = &b;
    OK(vae_trainer_train_epoch(s.t, s.ds, &o, NULL));
    assert_int_equal(b.calls, STEPS);
    assert_int_equal(b.apply_rc, VAE_ERR_STATE);
    assert_int_equal(b.fb_rc, VAE_ERR_STATE);
    assert_int_equal(b.step_rc, VAE_ERR_STATE);
    assert_non_null(strstr(b.step_msg, "vae_trainer_step"));
    assert_true(b.params_kept);
    assert_true(b.slab_kept_after_apply);
    assert_int_equal(vae_trainer_steps(b.t2), 0);
    print_message("vae_trainer_step refused on a busy context left the slab %s\n",
                  b.slab_zero_after_step ? "zero" : "as it was");
    vae_trainer_free(b.t2);
    vae_model_free(b.m2);
    free_setup(&s);
}

/* ---- shuffling, binarization and reproducibility ---------------------------------- */

/* Shuffling draws a permutation: over one batch holding the whole set, the
 * (noise-free) autoencoder gradient is the same sum in another order, so one
 * SGD step lands within rounding of the unshuffled one; a draw with
 * replacement would leave out about a third of the samples and move the
 * result by orders of magnitude more. In batches of 64 the order matters. */
static void test_shuffle_is_a_permutation(void **state)
{
    (void)state;
    setup a = make_setup_opt(8, 1.0, VAE_OBJECTIVE_AUTOENCODER, VAE_OPTIMIZER_SGD, 0.5, 0);
    setup b = make_setup_opt(8, 1.0, VAE_OBJECTIVE_AUTOENCODER, VAE_OPTIMIZER_SGD, 0.5, 0);
    const size_t n = n_params(&a);
    float *p0 = tu_copy_floats(vae_model_params(a.m, NULL), n);
    vae_train_options on = opts_with(COUNT, 1, 0), off = opts_with(COUNT, 0, 0);
    vae_epoch_stats sa = tu_stats(), sb = tu_stats();
    OK(vae_trainer_train_epoch(a.t, a.ds, &on, &sa));
    OK(vae_trainer_train_epoch(b.t, b.ds, &off, &sb));
    assert_int_equal(sa.steps, 1);
    TU_CLOSE(sa.loss, sb.loss, 1e-6, 0.0);
    const float *pa = vae_model_params(a.m, NULL), *pb = vae_model_params(b.m, NULL);
    double moved = 0.0, diff = 0.0;
    for (size_t i = 0; i < n; i++) {
        moved = fmax(moved, fabs((double)pb[i] - p0[i]));
        diff = fmax(diff, fabs((double)pa[i] - pb[i]));
    }
    assert_true(moved > 1e-3); /* the step did something */
    if (!(diff <= 1e-5))
        fail_msg("one full batch, shuffled or not: parameters differ by up to %.3g (the step "
                 "moved them by up to %.3g)",
                 diff, moved);

    /* Batches of 64: shuffled differs from in order. */
    on = opts_with(BATCH, 1, 0);
    off = opts_with(BATCH, 0, 0);
    OK(vae_trainer_train_epoch(a.t, a.ds, &on, NULL));
    OK(vae_trainer_train_epoch(b.t, b.ds, &off, NULL));
    assert_true(memcmp(vae_model_params(a.m, NULL), vae_model_params(b.m, NULL),
                       n * sizeof(float)) != 0);
    free(p0);
    free_setup(&a);
    free_setup(&b);
}

/* Binarization draws from the trainer's generator and only changes values
 * strictly inside (0, 1): on 0/1 data the autoencoder (which draws no
 * noise) trains identically with and without it; on soft data it does not;
 * and on values outside [0, 1] it makes Bernoulli training possible. */
static void test_binarize(void **state)
{
    (void)state;
    for (int soft = 0; soft < 2; soft++) {
        setup a = make_setup_opt(9, 1.0, VAE_OBJECTIVE_AUTOENCODER, VAE_OPTIMIZER_ADAM, 1e-2,
                                 soft);
        setup b = make_setup_opt(9, 1.0, VAE_OBJECTIVE_AUTOENCODER, VAE_OPTIMIZER_ADAM, 1e-2,
                                 soft);
        vae_train_options bin = opts_with(BATCH, 0, 1), plain = opts_with(BATCH, 0, 0);
        vae_epoch_stats sa = tu_stats(), sb = tu_stats();
        OK(vae_trainer_train_epoch(a.t, a.ds, &bin, &sa));
        OK(vae_trainer_train_epoch(b.t, b.ds, &plain, &sb));
        int same = memcmp(vae_model_params(a.m, NULL), vae_model_params(b.m, NULL),
                          n_params(&a) * sizeof(float)) == 0;
        if (soft && (same || sa.loss == sb.loss))
            fail_msg("binarize changed nothing on data in (0, 1)");
        if (!soft && (!same || sa.loss != sb.loss))
            fail_msg("binarize changed 0/1 data: loss %.17g against %.17g", sa.loss, sb.loss);
        free_setup(&a);
        free_setup(&b);
    }
}

static void test_reproducible(void **state)
{
    (void)state;
    double loss[3];
    float *params[3];
    size_t n = 0;
    const uint64_t seeds[3] = {77, 77, 78};
    for (int k = 0; k < 3; k++) {
        setup s = make_setup_opt(seeds[k], 1.0, VAE_OBJECTIVE_ELBO, VAE_OPTIMIZER_ADAM, 1e-2, 1);
        /* Shuffling, binarization and noise all draw from the trainer's
         * generator. */
        vae_train_options o = opts_with(50, 1, 1);
        vae_epoch_stats st = tu_stats();
        for (int ep = 0; ep < 3; ep++)
            OK(vae_trainer_train_epoch(s.t, s.ds, &o, &st));
        loss[k] = st.loss;
        n = n_params(&s);
        params[k] = tu_copy_floats(vae_model_params(s.m, NULL), n);
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

static void test_options_and_bad_input(void **state)
{
    (void)state;
    setup s = make_setup(5, 1.0, VAE_OBJECTIVE_ELBO);
    vae_epoch_stats st = tu_stats();
    /* NULL options: the defaults, batches of 128. */
    OK(vae_trainer_train_epoch(s.t, s.ds, NULL, &st));
    assert_int_equal(st.steps, (COUNT + 127) / 128);
    assert_int_equal(st.samples, COUNT);
    /* A batch larger than the dataset: one step over everything. */
    vae_train_options o = opts_with(1000, 1, 0);
    OK(vae_trainer_train_epoch(s.t, s.ds, &o, &st));
    assert_int_equal(st.steps, 1);
    assert_int_equal(st.samples, COUNT);
    /* Batches of one. */
    o = opts_with(1, 1, 0);
    OK(vae_trainer_train_epoch(s.t, s.ds, &o, &st));
    assert_int_equal(st.steps, COUNT);
    /* The largest batch size allowed. */
    o = opts_with((size_t)1 << 20, 0, 0);
    OK(vae_trainer_train_epoch(s.t, s.ds, &o, &st));
    assert_int_equal(st.steps, 1);
    assert_int_equal(vae_trainer_epochs(s.t), 4);

    const char *fn = "vae_trainer_train_epoch";
    const size_t n = n_params(&s);
    float *p0 = tu_copy_floats(vae_model_params(s.m, NULL), n);
    const uint64_t steps0 = vae_trainer_steps(s.t);
    o = opts_with(BATCH, 1, 0);
    o.size = 0;
    EXPECT_ERR(vae_trainer_train_epoch(s.t, s.ds, &o, &st), VAE_ERR_INVALID, fn, "size");
    o.size = sizeof(size_t) - 1;
    EXPECT_ERR(vae_trainer_train_epoch(s.t, s.ds, &o, &st), VAE_ERR_INVALID, fn, "size");
    o = opts_with(0, 1, 0);
    EXPECT_ERR(vae_trainer_train_epoch(s.t, s.ds, &o, &st), VAE_ERR_INVALID, fn, "batch_size");
    o = opts_with(((size_t)1 << 20) + 1, 1, 0);
    EXPECT_ERR(vae_trainer_train_epoch(s.t, s.ds, &o, &st), VAE_ERR_INVALID, fn, "batch_size");
    o = opts_with(BATCH, 1, 0);
    EXPECT_ERR(vae_trainer_train_epoch(NULL, s.ds, &o, &st), VAE_ERR_INVALID, fn, NULL);
    EXPECT_ERR(vae_trainer_train_epoch(s.t, NULL, &o, &st), VAE_ERR_INVALID, fn, NULL);

    /* A dataset of another width: the message gives both. */
    vae_dataset *narrow = NULL;
    OK(vae_dataset_from_floats(&narrow, s.x, COUNT, DIM - 1, NULL));
    EXPECT_ERR(vae_trainer_train_epoch(s.t, narrow, &o, &st), VAE_ERR_SHAPE, fn, "15");
    assert_non_null(strstr(vae_last_error(), "16"));
    vae_dataset_free(narrow);
    /* None of that trained anything. */
    assert_memory_equal(p0, vae_model_params(s.m, NULL), n * sizeof(float));
    assert_int_equal(vae_trainer_steps(s.t), steps0);
    assert_int_equal(vae_trainer_epochs(s.t), 4);
    free(p0);
    free_setup(&s);
}

static void test_failing_step_keeps_parameters(void **state)
{
    (void)state;
    setup s = make_setup(6, 1.0, VAE_OBJECTIVE_ELBO);
    /* Values outside [0, 1] are not Bernoulli data: the first step fails,
     * the epoch ends with its status and nothing was updated. */
    float *bad = tu_alloc(COUNT * DIM, sizeof *bad);
    for (size_t i = 0; i < COUNT * DIM; i++)
        bad[i] = 2.0f * s.x[i] - 0.5f;
    vae_dataset *ds = NULL;
    OK(vae_dataset_from_floats(&ds, bad, COUNT, DIM, NULL));
    const size_t n = n_params(&s);
    float *before = tu_copy_floats(vae_model_params(s.m, NULL), n);
    vae_train_options o = opts_with(BATCH, 1, 0);
    vae_epoch_stats st = tu_stats();
    EXPECT_ERR(vae_trainer_train_epoch(s.t, ds, &o, &st), VAE_ERR_INVALID, NULL, "[0, 1]");
    assert_int_equal(st.steps, 0);
    assert_int_equal(st.samples, 0);
    assert_memory_equal(before, vae_model_params(s.m, NULL), n * sizeof(float));
    TU_ASSERT_ZERO_GRADS(s.t);
    assert_int_equal(vae_trainer_steps(s.t), 0);
    assert_int_equal(vae_trainer_epochs(s.t), 0);
    /* Dynamic binarization turns the same values into 0/1 draws (below 0
     * never fires, above 1 always does), so the epoch runs. */
    o.binarize = 1;
    OK(vae_trainer_train_epoch(s.t, ds, &o, &st));
    assert_int_equal(st.steps, STEPS);
    assert_true(memcmp(before, vae_model_params(s.m, NULL), n * sizeof(float)) != 0);
    assert_int_equal(vae_trainer_epochs(s.t), 1);
    vae_dataset_free(ds);
    free(before);
    free_setup(&s);

    /* A bad value in the third batch (in order). The epoch steps batch by
     * batch, so it fails at step 3 with two steps applied; a library that
     * checks the whole dataset first would fail before any step, which is
     * as good. Either way the stats, the step counter and the parameters
     * agree on what was done, the slab is zero and the epoch not counted. */
    s = make_setup(7, 1.0, VAE_OBJECTIVE_ELBO);
    memcpy(bad, s.x, COUNT * DIM * sizeof *bad);
    bad[(2 * BATCH + 5) * DIM + 3] = 1.5f;
    OK(vae_dataset_from_floats(&ds, bad, COUNT, DIM, NULL));
    o = opts_with(BATCH, 0, 0);
    st = tu_stats();
    EXPECT_ERR(vae_trainer_train_epoch(s.t, ds, &o, &st), VAE_ERR_INVALID, NULL, "[0, 1]");
    if (st.steps != 2 && st.steps != 0)
        fail_msg("the epoch failing at batch 3 reports %zu steps", st.steps);
    assert_int_equal(st.samples, st.steps * BATCH);
    TU_ASSERT_ZERO_GRADS(s.t);
    assert_int_equal(vae_trainer_steps(s.t), st.steps);
    assert_int_equal(vae_trainer_epochs(s.t), 0);
    setup h = make_setup(7, 1.0, VAE_OBJECTIVE_ELBO);
    if (st.steps) {
        double manual = manual_steps(&h, st.steps);
        assert_true(isfinite(st.loss) && st.loss > 0.0);
        TU_CLOSE(st.loss, manual, 1e-13, 0.0);
    } else {
        print_message("the epoch refused the dataset before its first step\n");
    }
    assert_same_params(&s, &h, "an epoch failing at batch 3 against its good steps");
    free_setup(&h);
    vae_dataset_free(ds);
    free(bad);
    free_setup(&s);
}

/* ---- the autoencoder objective --------------------------------------------------------- */

static void test_autoencoder_trains(void **state)
{
    (void)state;
    setup s = make_setup(7, 1.0, VAE_OBJECTIVE_AUTOENCODER);
    vae_train_options o = opts_with(BATCH, 1, 0);
    double first = 0.0, last = 0.0;
    for (int ep = 0; ep < 10; ep++) {
        vae_epoch_stats st = tu_stats();
        OK(vae_trainer_train_epoch(s.t, s.ds, &o, &st));
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

/* Same numbers up to float rounding of the network (the reference call may
 * cut the samples into other blocks): 1e-6 relative, while a sample given
 * another sample's noise moves its loss by a sizeable fraction. */
static void assert_per_sample_close(const double *per, const double *ref, size_t n,
                                    const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (!(fabs(per[i] - ref[i]) <= 1e-6 * fabs(ref[i]) + 1e-9))
            fail_msg("%s: sample %zu has loss %.17g, the reference %.17g", what, i, per[i],
                     ref[i]);
}

static double mean_of(const double *v, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += v[i];
    return s / (double)n;
}

static void test_evaluate_dataset(void **state)
{
    (void)state;
    const double beta = 0.7;
    setup s = make_setup(8, beta, VAE_OBJECTIVE_AUTOENCODER);
    vae_train_options o = opts_with(BATCH, 1, 0);
    OK(vae_trainer_train_epoch(s.t, s.ds, &o, NULL)); /* away from the init */

    /* Without noise (z = mu) no generator is needed, and the result is the
     * direct call's on all the samples. */
    double per[COUNT], dper[COUNT];
    vae_epoch_stats st = tu_stats(), dst = tu_stats();
    OK(vae_evaluate_dataset(s.ctx, s.m, s.e, s.ds, NULL, per, &st));
    OK(vae_elbo_evaluate(s.ctx, s.m, s.e, s.x, COUNT, NULL, NULL, dper, &dst));
    assert_per_sample_close(per, dper, COUNT, "autoencoder");
    assert_int_equal(st.samples, COUNT);
    assert_true(st.kl == 0.0 && dst.kl == 0.0);
    assert_true(st.loss == st.recon);
    TU_CLOSE(st.loss, dst.loss, 1e-9, 0.0);
    TU_CLOSE(mean_of(per, COUNT), st.loss, 1e-12, 0.0);
    assert_true(st.seconds >= 0.0 && st.seconds < 60.0);

    /* With the ELBO, the noise of sample i is drawn from rng in sample
     * order: the same seed and vae_rng_normal give the direct call's eps,
     * the generator advances by exactly COUNT * LATENT normals, and there is
     * no batch size left to choose. */
    OK(vae_elbo_set_param(s.e, VAE_ELBO_OBJECTIVE, VAE_OBJECTIVE_ELBO));
    vae_rng *r1 = NULL, *r2 = NULL;
    OK(vae_rng_create(&r1, 555));
    OK(vae_rng_create(&r2, 555));
    float *eps = tu_alloc(COUNT * LATENT, sizeof *eps);
    OK(vae_evaluate_dataset(s.ctx, s.m, s.e, s.ds, r1, per, &st));
    OK(vae_rng_normal(r2, eps, COUNT * LATENT));
    OK(vae_elbo_evaluate(s.ctx, s.m, s.e, s.x, COUNT, eps, NULL, dper, &dst));
    assert_per_sample_close(per, dper, COUNT, "elbo, noise from the same seed");
    float next1[3], next2[3];
    OK(vae_rng_normal(r1, next1, 3));
    OK(vae_rng_normal(r2, next2, 3));
    assert_memory_equal(next1, next2, sizeof next1);
    assert_true(st.kl > 0.0);
    TU_CLOSE(st.loss, dst.loss, 1e-6, 0.0);
    TU_CLOSE(st.recon, dst.recon, 1e-6, 0.0);
    TU_CLOSE(st.kl, dst.kl, 1e-6, 0.0);
    TU_CLOSE(st.loss, st.recon + beta * st.kl, 1e-9, 0.0);
    TU_CLOSE(mean_of(per, COUNT), st.loss, 1e-12, 0.0);
    assert_int_equal(st.samples, COUNT);

    /* The first 100 samples as a dataset of their own, from the same seed:
     * the same per-sample losses as the first 100 of the whole set. */
    vae_dataset *head = NULL;
    size_t idx[100];
    for (size_t i = 0; i < 100; i++)
        idx[i] = i;
    OK(vae_dataset_subset(&head, s.ds, idx, 100));
    vae_rng_free(r1);
    OK(vae_rng_create(&r1, 555));
    double hper[100];
    OK(vae_evaluate_dataset(s.ctx, s.m, s.e, head, r1, hper, NULL));
    assert_per_sample_close(hper, per, 100, "the first 100 samples alone");
    /* Reproducible: the same seed again gives the same numbers exactly. */
    vae_rng_free(r1);
    OK(vae_rng_create(&r1, 555));
    double again[COUNT];
    vae_epoch_stats st2 = tu_stats();
    OK(vae_evaluate_dataset(s.ctx, s.m, s.e, s.ds, r1, again, &st2));
    assert_memory_equal(again, per, sizeof per);
    assert_true(st2.loss == st.loss);
    /* A context with more workers gives the same numbers (blocks of 64). */
    vae_context *ctx3 = NULL;
    OK(vae_context_create(&ctx3));
    OK(vae_blas_set_threads(1));
    OK(vae_context_set_threads(ctx3, 3));
    vae_rng_free(r1);
    OK(vae_rng_create(&r1, 555));
    OK(vae_evaluate_dataset(ctx3, s.m, s.e, s.ds, r1, again, &st2));
    assert_memory_equal(again, per, sizeof per);
    vae_context_free(ctx3);
    /* Evaluation does not train: the parameters and counters are unchanged. */
    assert_int_equal(vae_trainer_steps(s.t), STEPS);
    /* All outputs are optional. */
    OK(vae_evaluate_dataset(s.ctx, s.m, s.e, s.ds, r1, NULL, NULL));

    const char *fn = "vae_evaluate_dataset";
    EXPECT_ERR(vae_evaluate_dataset(NULL, s.m, s.e, s.ds, r1, NULL, &st), VAE_ERR_INVALID, fn,
               NULL);
    EXPECT_ERR(vae_evaluate_dataset(s.ctx, NULL, s.e, s.ds, r1, NULL, &st), VAE_ERR_INVALID, fn,
               NULL);
    EXPECT_ERR(vae_evaluate_dataset(s.ctx, s.m, NULL, s.ds, r1, NULL, &st), VAE_ERR_INVALID, fn,
               NULL);
    EXPECT_ERR(vae_evaluate_dataset(s.ctx, s.m, s.e, NULL, r1, NULL, &st), VAE_ERR_INVALID, fn,
               NULL);
    /* The ELBO needs noise: no generator is an error, not a crash. */
    EXPECT_ERR(vae_evaluate_dataset(s.ctx, s.m, s.e, s.ds, NULL, NULL, &st), VAE_ERR_INVALID,
               NULL, "rng");
    vae_dataset *wide = NULL;
    float *x2 = tu_alloc(10 * (DIM + 1), sizeof *x2);
    OK(vae_dataset_from_floats(&wide, x2, 10, DIM + 1, NULL));
    EXPECT_ERR(vae_evaluate_dataset(s.ctx, s.m, s.e, wide, r1, NULL, &st), VAE_ERR_SHAPE, fn,
               "17");
    vae_dataset_free(wide);
    /* Bernoulli data outside [0, 1] (evaluation never binarizes). */
    for (size_t i = 0; i < 10 * (DIM + 1); i++)
        x2[i] = i == 37 ? -0.25f : 0.5f;
    vae_dataset *outside = NULL;
    OK(vae_dataset_from_floats(&outside, x2, 10, DIM, NULL));
    EXPECT_ERR(vae_evaluate_dataset(s.ctx, s.m, s.e, outside, r1, NULL, &st), VAE_ERR_INVALID,
               NULL, "[0, 1]");
    vae_dataset_free(outside);
    free(x2);
    vae_model *unbuilt = NULL;
    OK(vae_model_create(&unbuilt, DIM, LATENT, VAE_LIKELIHOOD_BERNOULLI));
    EXPECT_ERR(vae_evaluate_dataset(s.ctx, unbuilt, s.e, s.ds, r1, NULL, &st), VAE_ERR_STATE, fn,
               "build");
    vae_model_free(unbuilt);
    vae_dataset_free(head);
    free(eps);
    vae_rng_free(r1);
    vae_rng_free(r2);
    free_setup(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loss_decreases_and_stats),
        cmocka_unit_test(test_stats_truncated),
        cmocka_unit_test(test_stats_extended),
        cmocka_unit_test(test_options_init),
        cmocka_unit_test(test_options_init_newer_struct),
        cmocka_unit_test(test_options_truncated),
        cmocka_unit_test(test_options_extended),
        cmocka_unit_test(test_progress_and_cancel),
        cmocka_unit_test(test_busy_context_from_callback),
        cmocka_unit_test(test_shuffle_is_a_permutation),
        cmocka_unit_test(test_binarize),
        cmocka_unit_test(test_reproducible),
        cmocka_unit_test(test_options_and_bad_input),
        cmocka_unit_test(test_failing_step_keeps_parameters),
        cmocka_unit_test(test_autoencoder_trains),
        cmocka_unit_test(test_evaluate_dataset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
