/* Data-parallel training through vae_trainer_set_distributed, with ranks
 * as threads of this process and an exchange made of a shared buffer and
 * barriers (libvae_mpi does the same over MPI, tests/mpi/): after steps and
 * epochs of uneven global batches, every rank holds parameters bit for bit
 * equal to one trainer alone (1 and 2 workers), for 2, 3 and 4 ranks, Adam
 * and SGD with momentum, MLP and conv; the losses each rank reports are the
 * single trainer's; a failing exchange fails the call and leaves the
 * trainer as it was; bad arguments. */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>

#include "test_util.h"

#define OK(call) TU_OK(call)
#define EXPECT_ERR(call, expected, fn, needle) TU_EXPECT_ERR_MSG(call, expected, fn, needle)

enum { COUNT = 333, DIM = 16, MAX_RANKS = 4 };

static float g_x[COUNT * DIM];

static void make_data(void)
{
    tu_rng r = {31};
    for (size_t i = 0; i < COUNT * DIM; i++)
        g_x[i] = tu_unif(&r) < 0.35 ? 1.0f : 0.0f;
}

/* ---- one trainer ------------------------------------------------------------ */

typedef struct run {
    vae_model *m;
    vae_elbo *e;
    vae_optimizer *opt;
    vae_context *ctx;
    vae_trainer *t;
    vae_dataset *ds;
} run;

static run make_run(int kind, int conv, size_t workers)
{
    run s;
    memset(&s, 0, sizeof s);
    OK(vae_dataset_from_floats(&s.ds, g_x, COUNT, DIM, NULL));
    if (conv == 1) {
        vae_layer *l = NULL;
        OK(vae_model_create(&s.m, DIM, 3, VAE_LIKELIHOOD_BERNOULLI));
        OK(vae_layer_conv2d_create(&l, 1, 4, 4, 3, 3, 3, 1, 1, VAE_ACT_RELU));
        OK(vae_model_add_encoder_layer(s.m, &l));
        OK(vae_layer_dense_create(&l, 3, 48, VAE_ACT_RELU));
        OK(vae_model_add_decoder_layer(s.m, &l));
        OK(vae_layer_conv2d_transpose_create(&l, 3, 4, 4, 1, 3, 3, 1, 1, 0, VAE_ACT_IDENTITY));
        OK(vae_model_add_decoder_layer(s.m, &l));
        OK(vae_model_build(s.m, 13));
    } else {
        const size_t hidden[1] = {24};
        OK(vae_model_create_mlp(&s.m, DIM, hidden, 1, 3, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI,
                                13));
    }
    OK(vae_elbo_create(&s.e));
    if (conv == 2) { /* IWAE of 3 draws: every rank needs every row's log q - log p */
        OK(vae_elbo_set_param(s.e, VAE_ELBO_OBJECTIVE, VAE_OBJECTIVE_IWAE));
        OK(vae_elbo_set_param(s.e, VAE_ELBO_SAMPLES, 3));
    } else if (conv == 3) { /* two draws, free bits (every row's KL per dimension), warm-up */
        OK(vae_elbo_set_param(s.e, VAE_ELBO_SAMPLES, 2));
        OK(vae_elbo_set_param(s.e, VAE_ELBO_FREE_BITS, 0.3));
        OK(vae_elbo_set_param(s.e, VAE_ELBO_WARMUP, 20));
    }
    OK(vae_optimizer_create(&s.opt, kind));
    if (kind == VAE_OPTIMIZER_SGD) {
        OK(vae_optimizer_set_param(s.opt, VAE_OPT_LR, 0.05));
        OK(vae_optimizer_set_param(s.opt, VAE_OPT_MOMENTUM, 0.9));
    } else {
        OK(vae_optimizer_set_param(s.opt, VAE_OPT_LR, 3e-3));
    }
    OK(vae_context_create(&s.ctx));
    OK(vae_context_set_threads(s.ctx, workers));
    OK(vae_trainer_create(&s.t, s.m, s.e, s.opt, s.ctx, 77));
    return s;
}

static void free_run(run *s)
{
    vae_trainer_free(s->t);
    vae_context_free(s->ctx);
    vae_optimizer_free(s->opt);
    vae_elbo_free(s->e);
    vae_model_free(s->m);
    vae_dataset_free(s->ds);
}

/* The schedule every run follows: steps on global batches of uneven sizes
 * (one smaller than the ranks' count of blocks, one of a single sample),
 * then two epochs with batch 100 (the last batch of each 33 samples). */
static const size_t SIZES[] = {128, 70, 1, 200, 64, 65, 129, 256, 3, 100};
enum { N_SIZES = sizeof SIZES / sizeof *SIZES, STEPS = 30, EPOCHS = 2 };

typedef struct record {
    double loss[STEPS + EPOCHS][3];
    size_t n_params;
    float params[4096];
    uint64_t steps, epochs;
} record;

static void train(run *s, record *rec)
{
    for (size_t k = 0; k < STEPS; k++) {
        size_t n = SIZES[k % N_SIZES], first = (k * 37) % (COUNT - n + 1);
        vae_epoch_stats st = tu_stats();
        OK(vae_trainer_step(s->t, g_x + first * DIM, n, &st));
        rec->loss[k][0] = st.loss;
        rec->loss[k][1] = st.recon;
        rec->loss[k][2] = st.kl;
    }
    vae_train_options o;
    OK(vae_train_options_init(&o, sizeof o));
    o.batch_size = 100;
    o.binarize = 1;
    for (size_t e = 0; e < EPOCHS; e++) {
        vae_epoch_stats st = tu_stats();
        OK(vae_trainer_train_epoch(s->t, s->ds, &o, &st));
        rec->loss[STEPS + e][0] = st.loss;
        rec->loss[STEPS + e][1] = st.recon;
        rec->loss[STEPS + e][2] = st.kl;
    }
    size_t n = 0;
    const float *p = vae_model_params(s->m, &n);
    assert_true(n <= sizeof rec->params / sizeof *rec->params);
    rec->n_params = n;
    memcpy(rec->params, p, n * sizeof *p);
    rec->steps = vae_trainer_steps(s->t);
    rec->epochs = vae_trainer_epochs(s->t);
}

/* ---- ranks as threads --------------------------------------------------------- */

typedef struct group {
    size_t world;
    pthread_barrier_t barrier;
    unsigned char *stage;  /* the parts, as the exchange lays them out */
    size_t stage_cap;
    int fail_at;           /* the exchange call that fails on rank 0 (0: none) */
    int calls;             /* rank 0's exchange calls */
} group;

typedef struct rank_arg {
    group *g;
    size_t rank;
    int kind, conv;
    record *rec;
    int failed_rc;
    size_t pending; /* pending_rank_main: where its gradient is 1e21 */
} rank_arg;

static int exchange(void *payload, void *buf, const size_t *bytes)
{
    rank_arg *a = payload;
    group *g = a->g;
    size_t total = 0, mine = 0;
    for (size_t r = 0; r < g->world; r++) {
        if (r == a->rank)
            mine = total;
        total += bytes[r];
    }
    int fail = 0;
    if (a->rank == 0) {
        g->calls++;
        fail = g->fail_at && g->calls == g->fail_at;
        if (total > g->stage_cap) {
            unsigned char *p = realloc(g->stage, total);
            assert_non_null(p);
            g->stage = p;
            g->stage_cap = total;
        }
    }
    pthread_barrier_wait(&g->barrier);
    memcpy(g->stage + mine, (unsigned char *)buf + mine, bytes[a->rank]);
    pthread_barrier_wait(&g->barrier);
    memcpy(buf, g->stage, total);
    pthread_barrier_wait(&g->barrier);
    return fail;
}

static void *rank_main(void *arg)
{
    rank_arg *a = arg;
    run s = make_run(a->kind, a->conv, 1);
    OK(vae_trainer_set_distributed(s.t, a->rank, a->g->world, exchange, a));
    train(&s, a->rec);
    free_run(&s);
    return NULL;
}

/* Runs fn as each of world ranks, with args[r] (its group set here). */
static void run_ranks(size_t world, void *(*fn)(void *), rank_arg *args)
{
    group g;
    memset(&g, 0, sizeof g);
    g.world = world;
    assert_int_equal(pthread_barrier_init(&g.barrier, NULL, (unsigned)world), 0);
    pthread_t th[MAX_RANKS];
    for (size_t r = 0; r < world; r++) {
        args[r].g = &g;
        args[r].rank = r;
        assert_int_equal(pthread_create(&th[r], NULL, fn, &args[r]), 0);
    }
    for (size_t r = 0; r < world; r++)
        assert_int_equal(pthread_join(th[r], NULL), 0);
    pthread_barrier_destroy(&g.barrier);
    free(g.stage);
}

static void distributed(size_t world, int kind, int conv, record *recs)
{
    rank_arg args[MAX_RANKS];
    for (size_t r = 0; r < world; r++)
        args[r] = (rank_arg){NULL, r, kind, conv, &recs[r], 0, 0};
    run_ranks(world, rank_main, args);
}

static void same_record(const record *a, const record *b, const char *what)
{
    if (memcmp(a->loss, b->loss, sizeof a->loss) != 0)
        fail_msg("%s: the reported losses differ", what);
    if (a->n_params != b->n_params || memcmp(a->params, b->params, a->n_params * 4) != 0)
        fail_msg("%s: the parameters differ", what);
    assert_int_equal(a->steps, b->steps);
    assert_int_equal(a->epochs, b->epochs);
}

static void compare(int kind, int conv)
{
    record *alone = calloc(2, sizeof *alone), *ranks = calloc(MAX_RANKS, sizeof *ranks);
    for (size_t workers = 1; workers <= 2; workers++) {
        run s = make_run(kind, conv, workers);
        train(&s, &alone[workers - 1]);
        free_run(&s);
    }
    same_record(&alone[0], &alone[1], "one trainer, 1 against 2 workers");
    for (size_t world = 2; world <= MAX_RANKS; world++) {
        memset(ranks, 0, MAX_RANKS * sizeof *ranks);
        distributed(world, kind, conv, ranks);
        for (size_t r = 0; r < world; r++) {
            char what[64];
            snprintf(what, sizeof what, "rank %zu of %zu against one trainer", r, world);
            same_record(&ranks[r], &alone[0], what);
        }
    }
    free(alone);
    free(ranks);
}

static void test_adam_mlp(void **state)
{
    (void)state;
    compare(VAE_OPTIMIZER_ADAM, 0);
}

static void test_sgd_mlp(void **state)
{
    (void)state;
    compare(VAE_OPTIMIZER_SGD, 0);
}

static void test_adam_conv(void **state)
{
    (void)state;
    compare(VAE_OPTIMIZER_ADAM, 1);
}

static void test_adam_iwae(void **state)
{
    (void)state;
    compare(VAE_OPTIMIZER_ADAM, 2);
}

static void test_sgd_draws_free_bits(void **state)
{
    (void)state;
    compare(VAE_OPTIMIZER_SGD, 3);
}

/* ---- failures and arguments ------------------------------------------------------ */

/* Rank 0 of 2 alone: the first call (the loss terms) makes the missing
 * rank's part zeros (no overflow, zero terms), the second (the gradients)
 * fails. */
/* A pending gradient of 1e21, restored on every rank from a checkpoint (so
 * that no rank's slab was ever handed out), in the first or the last
 * parameter: the largest gradient the ranks' fold finds as it writes the
 * sums (lib/model/pass.c) must include it, so that the step is refused,
 * (1 - beta2) g^2 overflowing, instead of storing an infinite moment. kind is
 * the rank's worker count. */
static void *pending_rank_main(void *arg)
{
    rank_arg *a = arg;
    run src = make_run(VAE_OPTIMIZER_ADAM, 0, 1), s = make_run(VAE_OPTIMIZER_ADAM, 0,
                                                                 (size_t)a->kind);
    size_t n = 0, size = 0;
    vae_trainer_grads(src.t, &n)[a->pending] = 1e21f;
    OK(vae_trainer_save_mem(src.t, NULL, 0, &size));
    unsigned char *ck = tu_alloc(size, 1);
    OK(vae_trainer_save_mem(src.t, ck, size, &size));
    OK(vae_trainer_restore_mem(s.t, ck, size));
    OK(vae_trainer_set_distributed(s.t, a->rank, a->g->world, exchange, a));
    OK(vae_trainer_forward_backward(s.t, g_x, 200, NULL, NULL));
    float *before = tu_copy_floats(vae_model_params(s.m, NULL), n);
    a->failed_rc = vae_trainer_apply(s.t);
    if (a->failed_rc == VAE_ERR_NUMERIC && !strstr(vae_last_error(), "second moment"))
        a->failed_rc = -1;
    if (memcmp(before, vae_model_params(s.m, NULL), n * sizeof *before) != 0)
        a->failed_rc = -2;
    free(before);
    free(ck);
    free_run(&src);
    free_run(&s);
    return NULL;
}

static void test_pending_gradient_max(void **state)
{
    (void)state;
    run probe = make_run(VAE_OPTIMIZER_ADAM, 0, 1);
    size_t n = 0;
    vae_model_params(probe.m, &n);
    free_run(&probe);
    const size_t where[2] = {0, n - 1};
    for (size_t world = 2; world <= 3; world++)
        for (int workers = 1; workers <= 2; workers++)
            for (size_t q = 0; q < 2; q++) {
                rank_arg args[MAX_RANKS];
                for (size_t r = 0; r < world; r++)
                    args[r] = (rank_arg){NULL, r, workers, 0, NULL, 0, where[q]};
                run_ranks(world, pending_rank_main, args);
                for (size_t r = 0; r < world; r++)
                    if (args[r].failed_rc != VAE_ERR_NUMERIC)
                        fail_msg("world %zu, %d workers, 1e21 at %zu: rank %zu's step gave %d, "
                                 "not a refusal that changes nothing",
                                 world, workers, where[q], r, args[r].failed_rc);
            }
}

static int failing_exchange(void *payload, void *buf, const size_t *bytes)
{
    int *calls = payload;
    if (++*calls == 2)
        return 7;
    memset((unsigned char *)buf + bytes[0], 0, bytes[1]);
    return 0;
}

/* A world of 2 in which only rank 0 exists: checks that a failing exchange
 * fails the call with VAE_ERR_IO and changes nothing. */
static void test_exchange_failure(void **state)
{
    (void)state;
    run s = make_run(VAE_OPTIMIZER_ADAM, 0, 1);
    int calls = 0;
    OK(vae_trainer_set_distributed(s.t, 0, 2, failing_exchange, &calls));
    size_t n = 0;
    const float *p = vae_model_params(s.m, &n);
    float *before = tu_copy_floats(p, n);
    size_t size = 0;
    OK(vae_trainer_save_mem(s.t, NULL, 0, &size));
    unsigned char *ck0 = tu_alloc(size, 1), *ck1 = tu_alloc(size, 1);
    OK(vae_trainer_save_mem(s.t, ck0, size, &size));
    vae_epoch_stats st = tu_stats();
    EXPECT_ERR(vae_trainer_step(s.t, g_x, 128, &st), VAE_ERR_IO, "vae_trainer_step",
               "exchange of the gradients failed (7)");
    assert_int_equal(calls, 2);
    assert_memory_equal(p, before, n * sizeof *p);
    OK(vae_trainer_save_mem(s.t, ck1, size, &size));
    assert_memory_equal(ck0, ck1, size); /* generator, counters, slab: all as they were */
    free(before);
    free(ck0);
    free(ck1);
    free_run(&s);
}

static int never_called(void *payload, void *buf, const size_t *bytes)
{
    (void)payload, (void)buf, (void)bytes;
    fail_msg("the exchange was called");
    return 1;
}

static void test_bad_arguments(void **state)
{
    (void)state;
    run s = make_run(VAE_OPTIMIZER_ADAM, 0, 1);
    const char *fn = "vae_trainer_set_distributed";
    EXPECT_ERR(vae_trainer_set_distributed(NULL, 0, 2, never_called, NULL), VAE_ERR_INVALID, fn,
               "trainer is NULL");
    EXPECT_ERR(vae_trainer_set_distributed(s.t, 0, 0, never_called, NULL), VAE_ERR_INVALID, fn,
               "world");
    EXPECT_ERR(vae_trainer_set_distributed(s.t, 2, 2, never_called, NULL), VAE_ERR_INVALID, fn,
               "rank 2 of 2");
    EXPECT_ERR(vae_trainer_set_distributed(s.t, 0, 65537, never_called, NULL), VAE_ERR_INVALID,
               fn, "65536");
    EXPECT_ERR(vae_trainer_set_distributed(s.t, 0, 2, NULL, NULL), VAE_ERR_INVALID, fn,
               "without a function");
    /* World 1 needs no function, and inference never exchanges. */
    OK(vae_trainer_set_distributed(s.t, 0, 2, never_called, NULL));
    OK(vae_trainer_set_distributed(s.t, 0, 1, NULL, NULL));
    vae_epoch_stats st = tu_stats();
    OK(vae_trainer_step(s.t, g_x, 50, &st));
    OK(vae_trainer_set_distributed(s.t, 0, 2, never_called, NULL));
    float mu[3], lv[3];
    OK(vae_encode(s.ctx, s.m, g_x, 1, mu, lv));
    free_run(&s);
}

int main(void)
{
    make_data();
    OK(vae_blas_set_threads(1));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adam_mlp),
        cmocka_unit_test(test_sgd_mlp),
        cmocka_unit_test(test_adam_conv),
        cmocka_unit_test(test_adam_iwae),
        cmocka_unit_test(test_sgd_draws_free_bits),
        cmocka_unit_test(test_exchange_failure),
        cmocka_unit_test(test_pending_gradient_max),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
