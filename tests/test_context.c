/* Contexts: bad input, bit-reproducibility of training and inference across
 * worker counts, threads sharing one const model, concurrent trainers, a
 * context used by two callers at once (VAE_ERR_STATE, never a deadlock),
 * fork(), and the BLAS thread count.
 *
 * Worker threads of the tests never call cmocka (its assertions jump out of
 * the test on the main thread); they record what they saw in their own
 * structures, which the main thread checks after joining them. Flags shared
 * while threads run are C11 atomics, so that the test code itself is free of
 * data races under ThreadSanitizer. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/types.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"

#if defined(__SANITIZE_THREAD__)
#define TC_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TC_TSAN 1
#endif
#endif

/* ---- models and data ----------------------------------------------------------- */

enum { MD = 12, ML = 3 }; /* MLP: 12 -> 16 -> 8 -> head, decoder 3 -> 8 -> 16 -> 12 */
enum { CD = 36, CL = 2 }; /* conv: 1x6x6 images */
enum { NMAX = 200, STEPS = 5, LL_K = 8 };

static int make_mlp(vae_model **out, uint64_t seed)
{
    const size_t hidden[2] = {16, 8};
    return vae_model_create_mlp(out, MD, hidden, 2, ML, VAE_ACT_TANH, VAE_LIKELIHOOD_BERNOULLI,
                                seed);
}

/* Conv2D 1->3 channels, 3x3, stride 1, padding 1 (3x6x6) -> dense 108->10 ->
 * head; decoder dense 2->18 (2x3x3) -> ConvTranspose2D 2->1, 4x4, stride 2,
 * padding 1 (1x6x6). No cmocka: also called from worker threads. */
static int make_conv(vae_model **out, uint64_t seed)
{
    vae_model *m = NULL;
    vae_layer *l = NULL;
    int rc = vae_model_create(&m, CD, CL, VAE_LIKELIHOOD_BERNOULLI);
    if (!rc)
        rc = vae_layer_conv2d_create(&l, 1, 6, 6, 3, 3, 3, 1, 1, VAE_ACT_TANH);
    if (!rc)
        rc = vae_model_add_encoder_layer(m, &l);
    if (!rc)
        rc = vae_layer_dense_create(&l, 108, 10, VAE_ACT_TANH);
    if (!rc)
        rc = vae_model_add_encoder_layer(m, &l);
    if (!rc)
        rc = vae_layer_dense_create(&l, CL, 18, VAE_ACT_TANH);
    if (!rc)
        rc = vae_model_add_decoder_layer(m, &l);
    if (!rc)
        rc = vae_layer_conv2d_transpose_create(&l, 2, 3, 3, 1, 4, 4, 2, 1, 0, VAE_ACT_IDENTITY);
    if (!rc)
        rc = vae_model_add_decoder_layer(m, &l);
    if (!rc)
        rc = vae_model_build(m, seed);
    if (rc) {
        vae_layer_free(l);
        vae_model_free(m);
        m = NULL;
    }
    *out = m;
    return rc;
}

typedef struct kind {
    const char *name;
    int (*make)(vae_model **out, uint64_t seed);
    size_t d, l;
} kind;

static const kind kinds[2] = {{"mlp", make_mlp, MD, ML}, {"conv", make_conv, CD, CL}};

/* Inputs in [0, 1] for both kinds (NMAX samples of the larger dimension) and
 * latent codes; written once by the group setup, read-only afterwards. */
static float g_x[NMAX * CD], g_z[NMAX * ML];

static int group_setup(void **state)
{
    (void)state;
    tu_rng r = {2024};
    tu_fill_range(&r, g_x, NMAX * CD, 0.0, 1.0);
    for (size_t i = 0; i < NMAX * ML; i++)
        g_z[i] = (float)tu_gauss(&r);
    return 0;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* Waits until *flag is nonzero; 0 on success, -1 after `seconds`. */
static int wait_flag(atomic_int *flag, double seconds)
{
    const double end = now_seconds() + seconds;
    while (!atomic_load(flag)) {
        if (now_seconds() > end)
            return -1;
        sleep_ms(1);
    }
    return 0;
}

/* Waits for a child; kills it after `seconds` (a deadlock) and returns -1. */
static int wait_child(pid_t pid, double seconds, int *status)
{
    const double end = now_seconds() + seconds;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return 0;
        if (r == -1 && errno != EINTR)
            return -2;
        if (now_seconds() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, status, 0);
            return -1;
        }
        sleep_ms(5);
    }
}

/* ---- 1. bad input ------------------------------------------------------------------ */

static void test_context_bad_input(void **state)
{
    (void)state;
    const char *fc = "vae_context_create", *ft = "vae_context_set_threads";
    const char *fr = "vae_context_reserve";
    TU_EXPECT_ERR(vae_context_create(NULL), VAE_ERR_INVALID, fc);
    vae_context *c = NULL;
    TU_OK(vae_context_create(&c));
    assert_non_null(c);
    assert_int_equal(vae_context_threads(c), 1);
    assert_int_equal(vae_context_threads(NULL), 0);

    TU_EXPECT_ERR(vae_context_set_threads(NULL, 2), VAE_ERR_INVALID, ft);
    TU_EXPECT_ERR(vae_context_set_threads(NULL, 1), VAE_ERR_INVALID, ft);
    const size_t bad[4] = {0, 65, 1000, SIZE_MAX};
    for (size_t i = 0; i < 4; i++) {
        TU_EXPECT_ERR(vae_context_set_threads(c, bad[i]), VAE_ERR_INVALID, ft);
        assert_int_equal(vae_context_threads(c), 1);
    }
    TU_OK(vae_context_set_threads(c, 3));
    assert_int_equal(vae_context_threads(c), 3);
    for (size_t i = 0; i < 4; i++) {
        TU_EXPECT_ERR(vae_context_set_threads(c, bad[i]), VAE_ERR_INVALID, ft);
        assert_int_equal(vae_context_threads(c), 3);
    }
    TU_OK(vae_context_set_threads(c, 3));
    assert_int_equal(vae_context_threads(c), 3);
    TU_OK(vae_context_set_threads(c, 64));
    assert_int_equal(vae_context_threads(c), 64);

    vae_model *m = NULL, *u = NULL;
    TU_OK(make_mlp(&m, 1));
    TU_OK(vae_model_create(&u, MD, ML, VAE_LIKELIHOOD_BERNOULLI));
    /* 64 workers on a batch of 200 (4 blocks) compute what one does. */
    float mu1[NMAX * ML], lv1[NMAX * ML], mu64[NMAX * ML], lv64[NMAX * ML];
    TU_OK(vae_encode(c, m, g_x, NMAX, mu64, lv64));
    TU_OK(vae_context_set_threads(c, 1));
    assert_int_equal(vae_context_threads(c), 1);
    TU_OK(vae_encode(c, m, g_x, NMAX, mu1, lv1));
    assert_memory_equal(mu1, mu64, sizeof mu1);
    assert_memory_equal(lv1, lv64, sizeof lv1);

    TU_EXPECT_ERR(vae_context_reserve(NULL, m, 4), VAE_ERR_INVALID, fr);
    TU_EXPECT_ERR(vae_context_reserve(c, NULL, 4), VAE_ERR_INVALID, fr);
    TU_EXPECT_ERR(vae_context_reserve(c, u, 4), VAE_ERR_STATE, fr);
    TU_EXPECT_ERR(vae_context_reserve(c, m, 0), VAE_ERR_INVALID, fr);
    TU_EXPECT_ERR(vae_context_reserve(c, m, ((size_t)1 << 20) + 1), VAE_ERR_INVALID, fr);
    TU_EXPECT_ERR(vae_context_reserve(c, m, SIZE_MAX), VAE_ERR_INVALID, fr);
    TU_OK(vae_context_reserve(c, m, 1));
    TU_OK(vae_context_reserve(c, m, 300));
    /* A reserved context computes the same bits. */
    TU_OK(vae_encode(c, m, g_x, NMAX, mu64, lv64));
    assert_memory_equal(mu1, mu64, sizeof mu1);
    assert_memory_equal(lv1, lv64, sizeof lv1);
    /* A context serves several models in turn, and any of them on an
     * unbuilt model is refused. */
    vae_model *cm = NULL;
    TU_OK(make_conv(&cm, 1));
    TU_OK(vae_context_reserve(c, cm, 70));
    TU_EXPECT_ERR(vae_encode(c, u, g_x, 1, mu64, lv64), VAE_ERR_STATE, "vae_encode");
    vae_model_free(cm);

    vae_context_free(NULL);
    vae_model_free(u);
    vae_model_free(m);
    vae_context_free(c);
}

/* ---- 9. the BLAS thread count -------------------------------------------------------- */

static void test_blas_threads_bad_input(void **state)
{
    (void)state;
    const char *fn = "vae_blas_set_threads";
    const size_t before = vae_blas_threads();
    assert_int_equal(before, 1); /* main() set it */
    TU_EXPECT_ERR(vae_blas_set_threads(0), VAE_ERR_INVALID, fn);
    assert_int_equal(vae_blas_threads(), before);
    TU_EXPECT_ERR(vae_blas_set_threads(1025), VAE_ERR_INVALID, fn);
    assert_int_equal(vae_blas_threads(), before);
    TU_EXPECT_ERR(vae_blas_set_threads(SIZE_MAX), VAE_ERR_INVALID, fn);
    assert_int_equal(vae_blas_threads(), before);
    TU_OK(vae_blas_set_threads(1));
    assert_int_equal(vae_blas_threads(), 1);
}

/* ---- 8. several workers need a single-threaded BLAS ---------------------------------- */

static void test_threads_need_single_threaded_blas(void **state)
{
    (void)state;
    const char *ft = "vae_context_set_threads";
    vae_model *m = NULL;
    TU_OK(make_mlp(&m, 2));
    vae_context *c = NULL, *d = NULL;
    TU_OK(vae_context_create(&c));
    TU_OK(vae_context_create(&d));
    TU_OK(vae_context_set_threads(c, 3));
    float mu[NMAX * ML], lv[NMAX * ML], mu2[NMAX * ML], lv2[NMAX * ML];
    TU_OK(vae_encode(c, m, g_x, 130, mu, lv));

    TU_OK(vae_blas_set_threads(2));
    const size_t blas = vae_blas_threads();
    if (blas >= 2) {
        TU_EXPECT_ERR_MSG(vae_context_set_threads(d, 2), VAE_ERR_STATE, ft, NULL);
        assert_int_equal(vae_context_threads(d), 1);
        TU_EXPECT_ERR_MSG(vae_context_set_threads(c, 2), VAE_ERR_STATE, ft, NULL);
        assert_int_equal(vae_context_threads(c), 3);
        TU_EXPECT_ERR(vae_context_set_threads(c, 4), VAE_ERR_STATE, ft);
        assert_int_equal(vae_context_threads(c), 3);
        /* One worker needs nothing of the BLAS. */
        TU_OK(vae_context_set_threads(d, 1));
        assert_int_equal(vae_context_threads(d), 1);
        /* A bad count is still VAE_ERR_INVALID. */
        TU_EXPECT_ERR(vae_context_set_threads(d, 0), VAE_ERR_INVALID, ft);
    } else {
        /* A BLAS that cannot run threads (reference BLAS) reports 1. */
        print_message("vae_blas_threads() is %zu after vae_blas_set_threads(2): this BLAS "
                      "does not thread, so several workers are allowed\n",
                      blas);
        TU_OK(vae_context_set_threads(d, 2));
    }
    TU_OK(vae_blas_set_threads(1));
    assert_int_equal(vae_blas_threads(), 1);
    /* The refused calls left c as it was: same workers, same results. */
    assert_int_equal(vae_context_threads(c), 3);
    TU_OK(vae_encode(c, m, g_x, 130, mu2, lv2));
    assert_memory_equal(mu, mu2, 130 * ML * sizeof(float));
    assert_memory_equal(lv, lv2, 130 * ML * sizeof(float));
    TU_OK(vae_context_set_threads(d, 2));
    assert_int_equal(vae_context_threads(d), 2);
    TU_OK(vae_encode(d, m, g_x, 130, mu2, lv2));
    assert_memory_equal(mu, mu2, 130 * ML * sizeof(float));
    vae_context_free(c);
    vae_context_free(d);
    vae_model_free(m);
}

/* ---- 2. training is bit-identical for any number of workers -------------------------- */

typedef struct train_res {
    size_t np;
    double loss[STEPS + 1], recon[STEPS + 1], kl[STEPS + 1];
    float *grads;  /* STEPS * np: the slab after each forward_backward */
    float *params; /* np: after the steps */
    double *per;   /* n per-sample losses of the trained model */
    double eval_loss;
} train_res;

static void train_res_free(train_res *r)
{
    free(r->grads);
    free(r->params);
    free(r->per);
    memset(r, 0, sizeof *r);
}

/* STEPS x (forward_backward with the trainer's noise, apply), then one
 * vae_trainer_step, then the per-sample losses. workers 0 changes the count
 * before every step (1, 2, 3, 1, ...). */
static void train_run(const kind *k, size_t workers, size_t n, train_res *res)
{
    vae_model *m = NULL;
    vae_context *c = NULL;
    vae_elbo *e = NULL;
    vae_optimizer *opt = NULL;
    vae_trainer *t = NULL;
    vae_rng *rng = NULL;
    TU_OK(k->make(&m, 21));
    TU_OK(vae_context_create(&c));
    if (workers)
        TU_OK(vae_context_set_threads(c, workers));
    TU_OK(vae_elbo_create(&e));
    TU_OK(vae_elbo_set_param(e, VAE_ELBO_BETA, 0.7));
    TU_OK(vae_optimizer_create(&opt, VAE_OPTIMIZER_ADAM));
    TU_OK(vae_optimizer_set_param(opt, VAE_OPT_LR, 1e-2));
    TU_OK(vae_trainer_create(&t, m, e, opt, c, 1234));
    size_t np = 0;
    float *p = vae_model_params(m, &np);
    res->np = np;
    res->grads = tu_alloc(STEPS * np, sizeof(float));
    res->params = tu_alloc(np, sizeof(float));
    res->per = tu_alloc(n, sizeof(double));
    for (size_t s = 0; s <= STEPS; s++) {
        if (!workers)
            TU_OK(vae_context_set_threads(c, 1 + s % 3));
        vae_epoch_stats st = {sizeof st};
        if (s < STEPS) {
            TU_OK(vae_trainer_forward_backward(t, g_x, n, NULL, &st));
            size_t ng = 0;
            const float *g = vae_trainer_grads(t, &ng);
            assert_int_equal(ng, np);
            memcpy(res->grads + s * np, g, np * sizeof(float));
            TU_OK(vae_trainer_apply(t));
        } else {
            TU_OK(vae_trainer_step(t, g_x, n, &st));
        }
        assert_int_equal(st.samples, n);
        res->loss[s] = st.loss;
        res->recon[s] = st.recon;
        res->kl[s] = st.kl;
    }
    assert_int_equal(vae_trainer_steps(t), STEPS + 1);
    memcpy(res->params, p, np * sizeof(float));
    TU_OK(vae_rng_create(&rng, 99));
    vae_epoch_stats st = {sizeof st};
    TU_OK(vae_elbo_evaluate(c, m, e, g_x, n, NULL, rng, res->per, &st));
    res->eval_loss = st.loss;
    vae_rng_free(rng);
    vae_trainer_free(t);
    vae_optimizer_free(opt);
    vae_elbo_free(e);
    vae_context_free(c);
    vae_model_free(m);
}

static void expect_same_training(const train_res *a, const train_res *b, size_t n,
                                 const char *what)
{
    assert_int_equal(a->np, b->np);
    /* Step by step, so that the first difference is the one reported. */
    for (size_t s = 0; s <= STEPS; s++) {
        const char *diff = NULL;
        if (memcmp(&a->loss[s], &b->loss[s], sizeof a->loss[s]))
            diff = "loss";
        else if (memcmp(&a->recon[s], &b->recon[s], sizeof a->recon[s]))
            diff = "recon";
        else if (memcmp(&a->kl[s], &b->kl[s], sizeof a->kl[s]))
            diff = "kl";
        else if (s < STEPS && memcmp(a->grads + s * a->np, b->grads + s * a->np,
                                     a->np * sizeof(float)))
            diff = "gradient slab";
        if (diff)
            fail_msg("%s, step %zu: the %s differs from one worker's", what, s, diff);
    }
    const char *diff = NULL;
    if (memcmp(a->params, b->params, a->np * sizeof(float)))
        diff = "parameters";
    else if (memcmp(a->per, b->per, n * sizeof(double)))
        diff = "per-sample losses";
    else if (memcmp(&a->eval_loss, &b->eval_loss, sizeof a->eval_loss))
        diff = "evaluated loss";
    if (diff)
        fail_msg("%s, after the steps: the %s differ from one worker's", what, diff);
}

static void test_training_bit_identical(void **state)
{
    (void)state;
    const size_t batches[6] = {1, 63, 64, 65, 130, 200};
    for (size_t ki = 0; ki < 2; ki++)
        for (size_t bi = 0; bi < 6; bi++) {
            const size_t n = batches[bi];
            train_res ref = {0};
            train_run(&kinds[ki], 1, n, &ref);
            for (size_t s = 0; s <= STEPS; s++)
                assert_true(isfinite(ref.loss[s]) && ref.loss[s] > 0.0);
            /* The model did train (the parameters moved). */
            assert_true(ref.loss[STEPS] != ref.loss[0]);
            const size_t workers[3] = {2, 3, 0};
            for (size_t wi = 0; wi < 3; wi++) {
                train_res r = {0};
                train_run(&kinds[ki], workers[wi], n, &r);
                char what[96];
                snprintf(what, sizeof what, "%s, batch %zu, %s", kinds[ki].name, n,
                         workers[wi] == 2   ? "2 workers"
                         : workers[wi] == 3 ? "3 workers"
                                            : "1, 2, 3 workers in turn");
                expect_same_training(&ref, &r, n, what);
                train_res_free(&r);
            }
            train_res_free(&ref);
        }
}

/* ---- 3. inference is bit-identical for any number of workers ------------------------- */

typedef struct infer_out {
    float *mu, *lv, *dec, *rec, *smp;
    double *ll, *per;
    double loss;
} infer_out;

/* No cmocka: also used by worker threads. 0 on success. */
static int infer_alloc(infer_out *o, size_t n, size_t d, size_t l)
{
    memset(o, 0, sizeof *o);
    o->mu = calloc(n * l, sizeof(float));
    o->lv = calloc(n * l, sizeof(float));
    o->dec = calloc(n * d, sizeof(float));
    o->rec = calloc(n * d, sizeof(float));
    o->smp = calloc(n * d, sizeof(float));
    o->ll = calloc(n, sizeof(double));
    o->per = calloc(n, sizeof(double));
    return o->mu && o->lv && o->dec && o->rec && o->smp && o->ll && o->per ? 0 : -1;
}

static void infer_free(infer_out *o)
{
    free(o->mu);
    free(o->lv);
    free(o->dec);
    free(o->rec);
    free(o->smp);
    free(o->ll);
    free(o->per);
    memset(o, 0, sizeof *o);
}

/* Every inference call once, generators seeded the same every time. */
static int infer_run(vae_context *c, const vae_model *m, const vae_elbo *e, size_t n,
                     infer_out *o)
{
    vae_rng *r1 = NULL, *r2 = NULL, *r3 = NULL;
    vae_epoch_stats st = {sizeof st};
    int rc = vae_rng_create(&r1, 5);
    if (!rc)
        rc = vae_rng_create(&r2, 6);
    if (!rc)
        rc = vae_rng_create(&r3, 7);
    if (!rc)
        rc = vae_encode(c, m, g_x, n, o->mu, o->lv);
    if (!rc)
        rc = vae_decode(c, m, g_z, n, o->dec);
    if (!rc)
        rc = vae_reconstruct(c, m, g_x, n, o->rec);
    if (!rc)
        rc = vae_sample(c, m, r1, n, o->smp);
    if (!rc)
        rc = vae_log_likelihood(c, m, g_x, n, LL_K, r2, o->ll);
    if (!rc)
        rc = vae_elbo_evaluate(c, m, e, g_x, n, NULL, r3, o->per, &st);
    o->loss = st.loss;
    vae_rng_free(r1);
    vae_rng_free(r2);
    vae_rng_free(r3);
    return rc;
}

/* The name of the first output that differs, or NULL. */
static const char *infer_diff(const infer_out *a, const infer_out *b, size_t n, size_t d,
                              size_t l)
{
    if (memcmp(a->mu, b->mu, n * l * sizeof(float)))
        return "vae_encode mu";
    if (memcmp(a->lv, b->lv, n * l * sizeof(float)))
        return "vae_encode logvar";
    if (memcmp(a->dec, b->dec, n * d * sizeof(float)))
        return "vae_decode";
    if (memcmp(a->rec, b->rec, n * d * sizeof(float)))
        return "vae_reconstruct";
    if (memcmp(a->smp, b->smp, n * d * sizeof(float)))
        return "vae_sample";
    if (memcmp(a->ll, b->ll, n * sizeof(double)))
        return "vae_log_likelihood";
    if (memcmp(a->per, b->per, n * sizeof(double)))
        return "vae_elbo_evaluate per-sample";
    if (memcmp(&a->loss, &b->loss, sizeof a->loss))
        return "vae_elbo_evaluate loss";
    return NULL;
}

static void test_inference_bit_identical(void **state)
{
    (void)state;
    const size_t batches[6] = {1, 63, 64, 65, 130, 200};
    vae_elbo *e = NULL;
    TU_OK(vae_elbo_create(&e));
    TU_OK(vae_elbo_set_param(e, VAE_ELBO_BETA, 0.5));
    /* One context used for every model, batch and worker count in turn. */
    vae_context *shared = NULL;
    TU_OK(vae_context_create(&shared));
    for (size_t ki = 0; ki < 2; ki++) {
        const kind *k = &kinds[ki];
        vae_model *m = NULL;
        TU_OK(k->make(&m, 31));
        for (size_t bi = 0; bi < 6; bi++) {
            const size_t n = batches[bi];
            infer_out ref, o;
            assert_int_equal(infer_alloc(&ref, n, k->d, k->l), 0);
            assert_int_equal(infer_alloc(&o, n, k->d, k->l), 0);
            vae_context *c = NULL;
            TU_OK(vae_context_create(&c));
            TU_OK(infer_run(c, m, e, n, &ref));
            assert_true(tu_all_finite(ref.smp, n * k->d));
            for (size_t w = 1; w <= 3; w++) {
                TU_OK(vae_context_set_threads(c, w));
                TU_OK(infer_run(c, m, e, n, &o));
                const char *diff = infer_diff(&ref, &o, n, k->d, k->l);
                if (diff)
                    fail_msg("%s, batch %zu, %zu workers: %s differs from one worker's",
                             k->name, n, w, diff);
                TU_OK(vae_context_set_threads(shared, w));
                TU_OK(infer_run(shared, m, e, n, &o));
                diff = infer_diff(&ref, &o, n, k->d, k->l);
                if (diff)
                    fail_msg("%s, batch %zu, %zu workers, a context used before for other "
                             "models and batches: %s differs",
                             k->name, n, w, diff);
            }
            vae_context_free(c);
            infer_free(&ref);
            infer_free(&o);
        }
        vae_model_free(m);
    }
    vae_context_free(shared);
    vae_elbo_free(e);
}

/* An overflow in one sample of a batch spread over workers is reported
 * at that sample, whatever the worker count: the first non-finite output in
 * sample order, not the first a worker happened to find. */
static void test_overflow_reported_at_first_sample(void **state)
{
    (void)state;
    enum { N = 200 };
    vae_model *m = NULL;
    const size_t hidden[1] = {6};
    /* Gaussian (any finite input) with identity activations: a huge input
     * or code becomes an infinite activation in its own sample only. */
    TU_OK(vae_model_create_mlp(&m, MD, hidden, 1, ML, VAE_ACT_IDENTITY,
                               VAE_LIKELIHOOD_GAUSSIAN, 5));
    float w_enc[6 * MD], w_dec[6 * ML];
    for (size_t i = 0; i < 6 * MD; i++)
        w_enc[i] = 10.0f;
    for (size_t i = 0; i < 6 * ML; i++)
        w_dec[i] = 10.0f;
    size_t ie = 0, id = 0;
    TU_OK(vae_model_tensor_find(m, "encoder.0.weight", &ie));
    TU_OK(vae_model_tensor_find(m, "decoder.0.weight", &id));
    TU_OK(vae_model_tensor_set(m, ie, w_enc, 6 * MD));
    TU_OK(vae_model_tensor_set(m, id, w_dec, 6 * ML));
    float *x = tu_alloc(N * MD, sizeof *x), *z = tu_alloc(N * ML, sizeof *z);
    float *out = tu_alloc(N * MD, sizeof *out);
    float mu[N * ML], lv[N * ML];
    double ll[N];
    memcpy(x, g_x, N * MD * sizeof *x);
    memcpy(z, g_z, N * ML * sizeof *z);
    /* Samples 150 and 190 overflow (blocks 3 and 4 of 4 with 200 samples). */
    for (size_t k = 0; k < MD; k++)
        x[150 * MD + k] = x[190 * MD + k] = 3e38f;
    for (size_t k = 0; k < ML; k++)
        z[150 * ML + k] = z[190 * ML + k] = 3e38f;
    vae_context *c = NULL;
    vae_rng *rng = NULL;
    TU_OK(vae_context_create(&c));
    TU_OK(vae_rng_create(&rng, 1));
    for (size_t w = 1; w <= 3; w++) {
        TU_OK(vae_context_set_threads(c, w));
        TU_EXPECT_ERR_MSG(vae_encode(c, m, x, N, mu, lv), VAE_ERR_NUMERIC, "vae_encode",
                          "[mu | logvar][150][0]");
        TU_EXPECT_ERR_MSG(vae_decode(c, m, z, N, out), VAE_ERR_NUMERIC, "vae_decode",
                          "out[150][0]");
        TU_EXPECT_ERR_MSG(vae_reconstruct(c, m, x, N, out), VAE_ERR_NUMERIC, "vae_reconstruct",
                          "out[150][0]");
        TU_EXPECT_ERR_MSG(vae_log_likelihood(c, m, x, N, 4, rng, ll), VAE_ERR_NUMERIC,
                          "vae_log_likelihood", "sample 150");
        /* The context is usable after each failure. */
        TU_OK(vae_encode(c, m, g_x, N, mu, lv));
    }
    vae_rng_free(rng);
    vae_context_free(c);
    free(x);
    free(z);
    free(out);
    vae_model_free(m);
}

/* ---- 4. threads sharing one const model ----------------------------------------------- */

enum { SHARED_THREADS = 4, SHARED_REPS = 20, SHARED_N = 130 };

typedef struct shared_job {
    const vae_model *m;
    const vae_elbo *e;
    const infer_out *expect;
    size_t d, l, workers;
    /* written by the thread only */
    int failures, reps_done;
    char msg[320];
} shared_job;

static void *shared_worker(void *arg)
{
    shared_job *j = arg;
    vae_context *c = NULL;
    infer_out o;
    int rc = vae_context_create(&c);
    if (!rc)
        rc = vae_context_set_threads(c, j->workers);
    if (rc) {
        j->failures++;
        snprintf(j->msg, sizeof j->msg, "context: %s", vae_last_error());
        vae_context_free(c);
        return NULL;
    }
    if (infer_alloc(&o, SHARED_N, j->d, j->l)) {
        j->failures++;
        snprintf(j->msg, sizeof j->msg, "out of memory");
        infer_free(&o);
        vae_context_free(c);
        return NULL;
    }
    for (int r = 0; r < SHARED_REPS; r++) {
        rc = infer_run(c, j->m, j->e, SHARED_N, &o);
        const char *diff = rc ? NULL : infer_diff(j->expect, &o, SHARED_N, j->d, j->l);
        if (rc || diff) {
            if (!j->failures)
                snprintf(j->msg, sizeof j->msg, "repetition %d: %s", r,
                         rc ? vae_last_error() : diff);
            j->failures++;
        }
        j->reps_done++;
    }
    infer_free(&o);
    vae_context_free(c);
    return NULL;
}

static void test_threads_share_const_model(void **state)
{
    (void)state;
    vae_elbo *e = NULL;
    TU_OK(vae_elbo_create(&e));
    for (size_t ki = 0; ki < 2; ki++) {
        const kind *k = &kinds[ki];
        vae_model *m = NULL;
        TU_OK(k->make(&m, 41));
        const size_t np = vae_model_param_count(m);
        float *before = tu_alloc(np, sizeof *before);
        memcpy(before, vae_model_params(m, NULL), np * sizeof *before);
        /* The serial answer, computed before any thread starts. */
        infer_out expect;
        assert_int_equal(infer_alloc(&expect, SHARED_N, k->d, k->l), 0);
        vae_context *c = NULL;
        TU_OK(vae_context_create(&c));
        TU_OK(infer_run(c, m, e, SHARED_N, &expect));
        vae_context_free(c);

        shared_job jobs[SHARED_THREADS];
        pthread_t th[SHARED_THREADS];
        const vae_model *cm = m; /* the threads only get the const model */
        for (size_t i = 0; i < SHARED_THREADS; i++) {
            memset(&jobs[i], 0, sizeof jobs[i]);
            jobs[i].m = cm;
            jobs[i].e = e;
            jobs[i].expect = &expect;
            jobs[i].d = k->d;
            jobs[i].l = k->l;
            jobs[i].workers = 1 + i % 3; /* 1, 2, 3, 1 */
        }
        for (size_t i = 0; i < SHARED_THREADS; i++)
            assert_int_equal(pthread_create(&th[i], NULL, shared_worker, &jobs[i]), 0);
        for (size_t i = 0; i < SHARED_THREADS; i++)
            assert_int_equal(pthread_join(th[i], NULL), 0);
        for (size_t i = 0; i < SHARED_THREADS; i++) {
            if (jobs[i].failures)
                fail_msg("%s, thread %zu (%zu workers): %d of %d repetitions failed; first: %s",
                         k->name, i, jobs[i].workers, jobs[i].failures, SHARED_REPS,
                         jobs[i].msg);
            assert_int_equal(jobs[i].reps_done, SHARED_REPS);
        }
        /* Inference never wrote to the model. */
        assert_memory_equal(vae_model_params(m, NULL), before, np * sizeof *before);
        free(before);
        infer_free(&expect);
        vae_model_free(m);
    }
    vae_elbo_free(e);
}

/* ---- 5. concurrent trainers ------------------------------------------------------------ */

enum { JOB_STEPS = 4, JOB_N = 100, JOB_EPOCH_N = 150 };

typedef struct train_job {
    const kind *k;
    uint64_t seed;
    size_t workers;
    const vae_dataset *ds;
    /* written by the job */
    int rc;
    char msg[320];
    double loss[JOB_STEPS + 1];
    float *params;
    size_t np;
} train_job;

/* JOB_STEPS vae_trainer_step on g_x, then one epoch over ds (batches of 32,
 * shuffled and binarized from the trainer's generator). No cmocka. */
static void *train_worker(void *arg)
{
    train_job *j = arg;
    vae_model *m = NULL;
    vae_context *c = NULL;
    vae_elbo *e = NULL;
    vae_optimizer *opt = NULL;
    vae_trainer *t = NULL;
    int rc = j->k->make(&m, j->seed);
    if (!rc)
        rc = vae_context_create(&c);
    if (!rc)
        rc = vae_context_set_threads(c, j->workers);
    if (!rc)
        rc = vae_elbo_create(&e);
    if (!rc)
        rc = vae_optimizer_create(&opt, VAE_OPTIMIZER_ADAM);
    if (!rc)
        rc = vae_optimizer_set_param(opt, VAE_OPT_LR, 5e-3);
    if (!rc)
        rc = vae_trainer_create(&t, m, e, opt, c, j->seed + 1);
    for (int s = 0; s < JOB_STEPS && !rc; s++) {
        vae_epoch_stats st = {sizeof st};
        rc = vae_trainer_step(t, g_x, JOB_N, &st);
        j->loss[s] = st.loss;
    }
    if (!rc) {
        vae_train_options o;
        vae_epoch_stats st = {sizeof st};
        rc = vae_train_options_init(&o, sizeof o);
        o.batch_size = 32;
        o.binarize = 1;
        if (!rc)
            rc = vae_trainer_train_epoch(t, j->ds, &o, &st);
        j->loss[JOB_STEPS] = st.loss;
    }
    if (!rc) {
        size_t np = 0;
        const float *p = vae_model_params(m, &np);
        j->params = malloc(np * sizeof(float));
        if (j->params) {
            memcpy(j->params, p, np * sizeof(float));
            j->np = np;
        } else {
            rc = VAE_ERR_NOMEM;
        }
    }
    j->rc = rc;
    if (rc)
        snprintf(j->msg, sizeof j->msg, "%s", vae_last_error());
    vae_trainer_free(t);
    vae_optimizer_free(opt);
    vae_elbo_free(e);
    vae_context_free(c);
    vae_model_free(m);
    return NULL;
}

static void test_concurrent_trainers(void **state)
{
    (void)state;
    vae_dataset *ds[2] = {NULL, NULL};
    TU_OK(vae_dataset_from_floats(&ds[0], g_x, JOB_EPOCH_N, MD, NULL));
    TU_OK(vae_dataset_from_floats(&ds[1], g_x, JOB_EPOCH_N, CD, NULL));
    train_job serial[2], conc[2];
    for (size_t i = 0; i < 2; i++) {
        memset(&serial[i], 0, sizeof serial[i]);
        serial[i].k = &kinds[i];
        serial[i].seed = 50 + i;
        serial[i].workers = 2 - i; /* mlp on 2 workers, conv on 1 */
        serial[i].ds = ds[i];
        conc[i] = serial[i];
    }
    /* Serially on the main thread first... */
    for (size_t i = 0; i < 2; i++) {
        train_worker(&serial[i]);
        if (serial[i].rc)
            fail_msg("%s serially: %s", serial[i].k->name, serial[i].msg);
    }
    /* ...then both at once, each with its own model, trainer and context. */
    pthread_t th[2];
    for (size_t i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, train_worker, &conc[i]), 0);
    for (size_t i = 0; i < 2; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (size_t i = 0; i < 2; i++) {
        if (conc[i].rc)
            fail_msg("%s in a thread: %s", conc[i].k->name, conc[i].msg);
        assert_int_equal(conc[i].np, serial[i].np);
        assert_memory_equal(conc[i].loss, serial[i].loss, sizeof conc[i].loss);
        assert_memory_equal(conc[i].params, serial[i].params, conc[i].np * sizeof(float));
        assert_true(isfinite(conc[i].loss[JOB_STEPS]));
        free(conc[i].params);
        free(serial[i].params);
    }
    vae_dataset_free(ds[0]);
    vae_dataset_free(ds[1]);
}

/* Steps and a shuffled, binarized epoch (train_worker) give the same bits
 * with 1, 2 and 3 workers. */
static void test_epoch_bit_identical(void **state)
{
    (void)state;
    for (size_t ki = 0; ki < 2; ki++) {
        vae_dataset *ds = NULL;
        TU_OK(vae_dataset_from_floats(&ds, g_x, JOB_EPOCH_N, kinds[ki].d, NULL));
        train_job ref;
        memset(&ref, 0, sizeof ref);
        ref.k = &kinds[ki];
        ref.seed = 7;
        ref.workers = 1;
        ref.ds = ds;
        train_worker(&ref);
        if (ref.rc)
            fail_msg("%s, 1 worker: %s", ref.k->name, ref.msg);
        for (size_t w = 2; w <= 3; w++) {
            train_job j = ref;
            j.workers = w;
            j.params = NULL;
            train_worker(&j);
            if (j.rc)
                fail_msg("%s, %zu workers: %s", j.k->name, w, j.msg);
            if (memcmp(j.loss, ref.loss, sizeof j.loss) ||
                memcmp(j.params, ref.params, ref.np * sizeof(float)))
                fail_msg("%s: %zu workers train other bits than one (epoch loss %.17g vs "
                         "%.17g)",
                         j.k->name, w, j.loss[JOB_STEPS], ref.loss[JOB_STEPS]);
            free(j.params);
        }
        free(ref.params);
        vae_dataset_free(ds);
    }
}

/* A context is not tied to a model: two trainers on one context, their
 * steps interleaved (forward_backward of one between forward_backward and
 * apply of the other), train what each trains on a context of its own. */
static void test_one_context_two_trainers(void **state)
{
    (void)state;
    enum { ROUNDS = 4, N = 70 };
    vae_model *m[2][2] = {{NULL, NULL}, {NULL, NULL}}; /* [shared or alone][kind] */
    vae_context *shared = NULL, *alone[2] = {NULL, NULL};
    vae_elbo *e = NULL;
    vae_optimizer *opt = NULL;
    vae_trainer *t[2][2];
    TU_OK(vae_context_create(&shared));
    TU_OK(vae_context_set_threads(shared, 2));
    TU_OK(vae_elbo_create(&e));
    TU_OK(vae_optimizer_create(&opt, VAE_OPTIMIZER_ADAM));
    for (size_t k = 0; k < 2; k++) {
        TU_OK(vae_context_create(&alone[k]));
        for (size_t v = 0; v < 2; v++) {
            TU_OK(kinds[k].make(&m[v][k], 100 + k));
            TU_OK(vae_trainer_create(&t[v][k], m[v][k], e, opt, v ? alone[k] : shared, 7 + k));
        }
    }
    double loss[2][2][ROUNDS];
    for (size_t r = 0; r < ROUNDS; r++) {
        vae_epoch_stats st = {sizeof st};
        /* Interleaved on the shared context. */
        TU_OK(vae_trainer_forward_backward(t[0][0], g_x, N, NULL, &st));
        loss[0][0][r] = st.loss;
        TU_OK(vae_trainer_forward_backward(t[0][1], g_x, N, NULL, &st));
        loss[0][1][r] = st.loss;
        TU_OK(vae_trainer_apply(t[0][0]));
        TU_OK(vae_trainer_apply(t[0][1]));
        /* Each alone. */
        for (size_t k = 0; k < 2; k++) {
            TU_OK(vae_trainer_step(t[1][k], g_x, N, &st));
            loss[1][k][r] = st.loss;
        }
    }
    for (size_t k = 0; k < 2; k++) {
        assert_memory_equal(loss[0][k], loss[1][k], sizeof loss[0][k]);
        assert_int_equal(vae_model_param_count(m[0][k]), vae_model_param_count(m[1][k]));
        assert_memory_equal(vae_model_params(m[0][k], NULL), vae_model_params(m[1][k], NULL),
                            vae_model_param_count(m[0][k]) * sizeof(float));
        for (size_t v = 0; v < 2; v++) {
            vae_trainer_free(t[v][k]);
            vae_model_free(m[v][k]);
        }
        vae_context_free(alone[k]);
    }
    vae_optimizer_free(opt);
    vae_elbo_free(e);
    vae_context_free(shared);
}

/* ---- 6. one context, two callers ------------------------------------------------------- */

typedef struct meddle {
    vae_context *busy, *other;
    const vae_model *m;
    vae_trainer *t;
    vae_rng *rng;
    int active; /* 0: only count the calls */
    int calls, wrong;
    size_t last_done, last_total;
    char msg[512];
} meddle;

static void meddle_note(meddle *s, const char *call, int rc, int want)
{
    if (rc == want)
        return;
    if (!s->wrong)
        snprintf(s->msg, sizeof s->msg, "callback %d: %s returned %d (%s), expected %d; %s",
                 s->calls, call, rc, vae_strerror(rc), want, vae_last_error());
    s->wrong++;
}

/* The progress callback runs while the trainer's context is in use: every
 * call on that context fails with VAE_ERR_STATE; another context works. */
static int meddle_progress(void *payload, size_t done, size_t total, double running_loss)
{
    meddle *s = payload;
    s->calls++;
    s->last_done = done;
    s->last_total = total;
    if (!isfinite(running_loss))
        meddle_note(s, "running_loss", -100, 0);
    if (!s->active)
        return 0;
    float mu[ML], lv[ML], out[MD];
    double ll = 0;
    (void)vae_rng_uniform(NULL, NULL, 0); /* a stale message to replace */
    int rc = vae_encode(s->busy, s->m, g_x, 1, mu, lv);
    meddle_note(s, "vae_encode(busy)", rc, VAE_ERR_STATE);
    if (rc == VAE_ERR_STATE && !strstr(vae_last_error(), "vae_encode"))
        meddle_note(s, "vae_last_error() naming vae_encode", -100, 0);
    meddle_note(s, "vae_decode(busy)", vae_decode(s->busy, s->m, g_z, 1, out), VAE_ERR_STATE);
    meddle_note(s, "vae_log_likelihood(busy)",
                vae_log_likelihood(s->busy, s->m, g_x, 1, 4, s->rng, &ll), VAE_ERR_STATE);
    meddle_note(s, "vae_context_set_threads(busy, 3)", vae_context_set_threads(s->busy, 3),
                VAE_ERR_STATE);
    meddle_note(s, "vae_context_reserve(busy)", vae_context_reserve(s->busy, s->m, 8),
                VAE_ERR_STATE);
    meddle_note(s, "vae_trainer_step", vae_trainer_step(s->t, g_x, 1, NULL), VAE_ERR_STATE);
    meddle_note(s, "vae_trainer_forward_backward",
                vae_trainer_forward_backward(s->t, g_x, 1, NULL, NULL), VAE_ERR_STATE);
    meddle_note(s, "vae_trainer_apply", vae_trainer_apply(s->t), VAE_ERR_STATE);
    meddle_note(s, "vae_trainer_reserve", vae_trainer_reserve(s->t, 8), VAE_ERR_STATE);
    /* Inference from the callback with another context is fine. */
    rc = vae_encode(s->other, s->m, g_x, 1, mu, lv);
    meddle_note(s, "vae_encode(other)", rc, VAE_OK);
    if (!rc && !(tu_all_finite(mu, ML) && tu_all_finite(lv, ML)))
        meddle_note(s, "vae_encode(other) finite", -100, 0);
    if (vae_context_threads(s->busy) != 2)
        meddle_note(s, "vae_context_threads(busy) == 2", -100, 0);
    return 0;
}

/* One epoch of an MLP over 150 samples in batches of 20 on a context with
 * two workers; the callback meddles or not. Returns the parameters. */
static float *epoch_with_callback(int do_meddle, meddle *s, size_t *np)
{
    vae_model *m = NULL;
    vae_context *busy = NULL, *other = NULL;
    vae_elbo *e = NULL;
    vae_optimizer *opt = NULL;
    vae_trainer *t = NULL;
    vae_dataset *ds = NULL;
    TU_OK(make_mlp(&m, 61));
    TU_OK(vae_context_create(&busy));
    TU_OK(vae_context_set_threads(busy, 2));
    TU_OK(vae_context_create(&other));
    TU_OK(vae_elbo_create(&e));
    TU_OK(vae_optimizer_create(&opt, VAE_OPTIMIZER_ADAM));
    TU_OK(vae_trainer_create(&t, m, e, opt, busy, 62));
    TU_OK(vae_dataset_from_floats(&ds, g_x, 150, MD, NULL));
    memset(s, 0, sizeof *s);
    s->busy = busy;
    s->other = other;
    s->m = m;
    s->t = t;
    s->active = do_meddle;
    TU_OK(vae_rng_create(&s->rng, 3));
    vae_train_options o;
    TU_OK(vae_train_options_init(&o, sizeof o));
    o.batch_size = 20;
    o.progress = meddle_progress;
    o.payload = s;
    vae_epoch_stats st = {sizeof st};
    TU_OK(vae_trainer_train_epoch(t, ds, &o, &st));
    assert_int_equal(st.samples, 150);
    assert_int_equal(st.steps, 8);
    /* Released after the call: the context works again. */
    float mu[ML], lv[ML];
    TU_OK(vae_encode(busy, m, g_x, 1, mu, lv));
    assert_int_equal(vae_context_threads(busy), 2);
    assert_int_equal(vae_trainer_steps(t), 8);
    float *params = tu_alloc(vae_model_param_count(m), sizeof(float));
    *np = vae_model_param_count(m);
    memcpy(params, vae_model_params(m, NULL), *np * sizeof(float));
    vae_rng_free(s->rng);
    vae_dataset_free(ds);
    vae_trainer_free(t);
    vae_optimizer_free(opt);
    vae_elbo_free(e);
    vae_context_free(other);
    vae_context_free(busy);
    vae_model_free(m);
    return params;
}

static void test_context_in_use_from_callback(void **state)
{
    (void)state;
    meddle quiet, busy;
    size_t n1 = 0, n2 = 0;
    float *p_quiet = epoch_with_callback(0, &quiet, &n1);
    float *p_busy = epoch_with_callback(1, &busy, &n2);
    if (busy.wrong)
        fail_msg("%d unexpected results inside the progress callback; first: %s", busy.wrong,
                 busy.msg);
    assert_int_equal(quiet.wrong, 0);
    assert_int_equal(busy.calls, 8);
    assert_int_equal(busy.last_done, 150);
    assert_int_equal(busy.last_total, 150);
    /* The refused calls changed nothing: not the parameters, the optimizer
     * state, the trainer's generator or the workspace. */
    assert_int_equal(n1, n2);
    assert_memory_equal(p_quiet, p_busy, n1 * sizeof(float));
    free(p_quiet);
    free(p_busy);
}

/* Two threads on one context: a long vae_log_likelihood in one, vae_encode
 * in the other while it runs. */
enum { LONG_N = 4, LONG_K = 40000, ENC_N = 5 };

typedef struct contend {
    vae_context *ctx;
    const vae_model *m;
    /* expected results, computed before the threads start */
    double ll_expect[LONG_N];
    float mu_expect[ENC_N * ML], lv_expect[ENC_N * ML];
    atomic_int started;   /* the long call is about to begin */
    atomic_int finished;  /* the long caller is done */
    atomic_int saw_state; /* the second caller was refused at least once */
    atomic_int b_done;
    atomic_int stop;      /* the main thread gave up waiting */
    /* long caller (thread A) only */
    int a_ok, a_state, a_bad, a_mismatch;
    char a_msg[320];
    /* second caller (thread B) only */
    long b_ok, b_state, b_bad, b_mismatch;
    char b_msg[320];
} contend;

static void *long_caller(void *arg)
{
    contend *s = arg;
    double out[LONG_N];
    /* Until one long call has succeeded while the other thread was refused,
     * at most 5 successful long calls; a call refused because the other
     * thread held the context at that moment is retried. */
    for (int guard = 0; guard < 10000; guard++) {
        vae_rng *r = NULL;
        if (vae_rng_create(&r, 31)) {
            s->a_bad++;
            break;
        }
        atomic_store(&s->started, 1);
        int rc = vae_log_likelihood(s->ctx, s->m, g_x, LONG_N, LONG_K, r, out);
        vae_rng_free(r);
        if (rc == VAE_OK) {
            s->a_ok++;
            if (memcmp(out, s->ll_expect, sizeof out))
                s->a_mismatch++;
        } else if (rc == VAE_ERR_STATE) {
            s->a_state++;
        } else {
            if (!s->a_bad)
                snprintf(s->a_msg, sizeof s->a_msg, "%d: %s", rc, vae_last_error());
            s->a_bad++;
        }
        if (s->a_ok >= 5 || (s->a_ok >= 1 && atomic_load(&s->saw_state)) ||
            atomic_load(&s->stop))
            break;
    }
    atomic_store(&s->finished, 1);
    return NULL;
}

static void *second_caller(void *arg)
{
    contend *s = arg;
    float mu[ENC_N * ML], lv[ENC_N * ML];
    if (wait_flag(&s->started, 120.0) == 0) {
        while (!atomic_load(&s->finished) && !atomic_load(&s->stop)) {
            int rc = vae_encode(s->ctx, s->m, g_x, ENC_N, mu, lv);
            if (rc == VAE_OK) {
                s->b_ok++;
                if (memcmp(mu, s->mu_expect, sizeof mu) || memcmp(lv, s->lv_expect, sizeof lv))
                    s->b_mismatch++;
            } else if (rc == VAE_ERR_STATE) {
                if (!s->b_state && !strstr(vae_last_error(), "vae_encode"))
                    snprintf(s->b_msg, sizeof s->b_msg, "message without vae_encode: %s",
                             vae_last_error());
                s->b_state++;
                atomic_store(&s->saw_state, 1);
                break;
            } else {
                if (!s->b_bad)
                    snprintf(s->b_msg, sizeof s->b_msg, "%d: %s", rc, vae_last_error());
                s->b_bad++;
            }
        }
    }
    atomic_store(&s->b_done, 1);
    return NULL;
}

static void test_context_in_use_two_threads(void **state)
{
    (void)state;
    vae_model *m = NULL;
    TU_OK(make_mlp(&m, 71));
    /* Shared with the threads; on the heap, so that threads left behind by
     * a failure never touch this function's stack. */
    contend *s = tu_alloc(1, sizeof *s);
    /* Expected results from another context, before the threads start. */
    vae_context *ref = NULL, *ctx = NULL;
    vae_rng *r = NULL;
    TU_OK(vae_context_create(&ref));
    TU_OK(vae_rng_create(&r, 31));
    TU_OK(vae_log_likelihood(ref, m, g_x, LONG_N, LONG_K, r, s->ll_expect));
    TU_OK(vae_encode(ref, m, g_x, ENC_N, s->mu_expect, s->lv_expect));
    vae_rng_free(r);
    vae_context_free(ref);
    TU_OK(vae_context_create(&ctx));
    TU_OK(vae_context_set_threads(ctx, 2));

    s->ctx = ctx;
    s->m = m;
    atomic_init(&s->started, 0);
    atomic_init(&s->finished, 0);
    atomic_init(&s->saw_state, 0);
    atomic_init(&s->b_done, 0);
    atomic_init(&s->stop, 0);
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&tb, NULL, second_caller, s), 0);
    assert_int_equal(pthread_create(&ta, NULL, long_caller, s), 0);
    /* Neither caller may wait for the other forever. */
    if (wait_flag(&s->finished, 240.0) || wait_flag(&s->b_done, 60.0)) {
        atomic_store(&s->stop, 1);
        const int gone = !wait_flag(&s->finished, 60.0) && !wait_flag(&s->b_done, 60.0);
        if (gone) {
            pthread_join(ta, NULL);
            pthread_join(tb, NULL);
        }
        /* s, m and ctx are left to the threads when they are stuck. */
        fail_msg("two callers on one context did not finish within 4 minutes%s (long caller: "
                 "%d ok, %d refused; second caller: %ld ok, %ld refused)",
                 gone ? "" : ", and still had not 2 minutes after being told to stop: a "
                             "deadlock",
                 s->a_ok, s->a_state, s->b_ok, s->b_state);
    }
    assert_int_equal(pthread_join(ta, NULL), 0);
    assert_int_equal(pthread_join(tb, NULL), 0);
    if (s->a_bad || s->b_bad)
        fail_msg("a call failed with something else than VAE_ERR_STATE: long caller %d "
                 "(%s), second caller %ld (%s)",
                 s->a_bad, s->a_msg, s->b_bad, s->b_msg);
    if (s->b_msg[0])
        fail_msg("%s", s->b_msg);
    if (s->a_mismatch || s->b_mismatch)
        fail_msg("wrong results from calls that succeeded: %d of %d long calls, %ld of %ld "
                 "encodes",
                 s->a_mismatch, s->a_ok, s->b_mismatch, s->b_ok);
    assert_true(s->a_ok >= 1);
    if (!s->b_state)
        fail_msg("vae_encode never got VAE_ERR_STATE while vae_log_likelihood ran on its "
                 "context (%d long calls succeeded, %ld encodes succeeded): the second call "
                 "waited or ran concurrently",
                 s->a_ok, s->b_ok);
    /* Both callers gone: the context serves again, with correct results. */
    float mu2[ENC_N * ML], lv2[ENC_N * ML];
    TU_OK(vae_encode(ctx, m, g_x, ENC_N, mu2, lv2));
    assert_memory_equal(mu2, s->mu_expect, sizeof mu2);
    assert_memory_equal(lv2, s->lv_expect, sizeof lv2);
    free(s);
    vae_context_free(ctx);
    vae_model_free(m);
}

/* ---- 7. fork() ------------------------------------------------------------------------- */

enum { FORK_N = 130, FORK_STEPS = 3 };

typedef struct fork_res {
    double loss[FORK_STEPS];
    float params[1024];
    float mu[FORK_N * ML], lv[FORK_N * ML];
    double ll[FORK_N];
} fork_res;

/* Trains a fresh MLP for FORK_STEPS steps on ctx, then infers. No cmocka:
 * also runs in the child. */
static int fork_work(vae_context *ctx, fork_res *res)
{
    vae_model *m = NULL;
    vae_elbo *e = NULL;
    vae_optimizer *opt = NULL;
    vae_trainer *t = NULL;
    vae_rng *r = NULL;
    memset(res, 0, sizeof *res);
    int rc = make_mlp(&m, 81);
    if (!rc)
        rc = vae_elbo_create(&e);
    if (!rc)
        rc = vae_optimizer_create(&opt, VAE_OPTIMIZER_ADAM);
    if (!rc)
        rc = vae_trainer_create(&t, m, e, opt, ctx, 82);
    for (int s = 0; s < FORK_STEPS && !rc; s++) {
        vae_epoch_stats st = {sizeof st};
        rc = vae_trainer_step(t, g_x, FORK_N, &st);
        res->loss[s] = st.loss;
    }
    if (!rc && vae_model_param_count(m) > 1024)
        rc = VAE_ERR_SHAPE;
    if (!rc)
        memcpy(res->params, vae_model_params(m, NULL), vae_model_param_count(m) * sizeof(float));
    if (!rc)
        rc = vae_encode(ctx, m, g_x, FORK_N, res->mu, res->lv);
    if (!rc)
        rc = vae_rng_create(&r, 83);
    if (!rc)
        rc = vae_log_likelihood(ctx, m, g_x, FORK_N, 16, r, res->ll);
    vae_rng_free(r);
    vae_trainer_free(t);
    vae_optimizer_free(opt);
    vae_elbo_free(e);
    vae_model_free(m);
    return rc;
}

static int under_tsan(void)
{
#ifdef TC_TSAN
    return 1;
#else
    return 0;
#endif
}

/* Under valgrind (tests/run.sh sets VAE_TEST_NO_FORK) a forked child reports
 * the parent's worker pool, which a child must leave alone, as a leak and
 * exits with valgrind's error code. */
static int fork_skipped(void)
{
    if (getenv("VAE_TEST_NO_FORK")) {
        print_message("skipped: VAE_TEST_NO_FORK is set (a memory checker runs this)\n");
        return 1;
    }
    return 0;
}

static void test_fork_with_workers(void **state)
{
    (void)state;
    if (fork_skipped())
        skip();
    if (under_tsan()) {
        /* ThreadSanitizer does not support a child of a multi-threaded
         * process that starts threads, which the context must do here: it
         * kills the child (die_after_fork=1, the default) or, with
         * die_after_fork=0, may abort it on a thread id the parent used
         * ("dup thread with used id"). test_fork_context_in_use still runs. */
        print_message("skipped under ThreadSanitizer (no threads after fork())\n");
        skip();
    }
    vae_context *ctx = NULL, *idle = NULL;
    TU_OK(vae_context_create(&ctx));
    TU_OK(vae_context_set_threads(ctx, 2));
    TU_OK(vae_context_create(&idle));
    TU_OK(vae_context_set_threads(idle, 3));
    fork_res *parent = tu_alloc(1, sizeof *parent), *again = tu_alloc(1, sizeof *again);
    /* The parent uses the context (its workers are running) ... */
    TU_OK(fork_work(ctx, parent));
    float mu[ML], lv[ML];
    vae_model *m = NULL;
    TU_OK(make_mlp(&m, 1));
    TU_OK(vae_encode(idle, m, g_x, 1, mu, lv));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* ... and after fork() the child uses the same context: new
         * workers, the same results. Only _exit from here. */
        fork_res *child = malloc(sizeof *child);
        if (!child)
            _exit(3);
        int rc = fork_work(ctx, child);
        if (rc) {
            fprintf(stderr, "child: %s: %s\n", vae_strerror(rc), vae_last_error());
            _exit(1);
        }
        if (vae_context_threads(ctx) != 2)
            _exit(4);
        if (memcmp(child, parent, sizeof *child)) {
            fprintf(stderr, "child: results differ from the parent's\n");
            _exit(2);
        }
        /* Freeing contexts in the child returns: one whose workers were
         * restarted here, and one whose workers exist only in the parent. */
        vae_context_free(ctx);
        vae_context_free(idle);
        _exit(0);
    }
    int status = 0;
    const int w = wait_child(pid, 120.0, &status);
    if (w == -1)
        fail_msg("the child did not finish within 120 s after fork(): a deadlock");
    assert_int_equal(w, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("the child %s %d (1: a call failed, 2: results differ, 4: worker count)",
                 WIFEXITED(status) ? "exited with" : "was killed by signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    /* The parent's context still works, with the same results. */
    TU_OK(fork_work(ctx, again));
    assert_memory_equal(again, parent, sizeof *again);
    TU_OK(vae_encode(idle, m, g_x, 1, mu, lv));
    free(parent);
    free(again);
    vae_model_free(m);
    vae_context_free(idle);
    vae_context_free(ctx);
}

/* A context in use by another thread at the moment of fork() stays unusable
 * in the child; everything else works there. */
typedef struct blocker {
    atomic_int inside, release;
} blocker;

static int blocking_progress(void *payload, size_t done, size_t total, double loss)
{
    (void)done;
    (void)total;
    (void)loss;
    blocker *b = payload;
    atomic_store(&b->inside, 1);
    while (!atomic_load(&b->release))
        sleep_ms(1);
    return 1; /* stop the epoch */
}

typedef struct epoch_job {
    vae_trainer *t;
    const vae_dataset *ds;
    blocker *b;
    int rc;
} epoch_job;

static void *epoch_thread(void *arg)
{
    epoch_job *j = arg;
    vae_train_options o;
    j->rc = vae_train_options_init(&o, sizeof o);
    o.batch_size = 16;
    o.progress = blocking_progress;
    o.payload = j->b;
    if (!j->rc)
        j->rc = vae_trainer_train_epoch(j->t, j->ds, &o, NULL);
    return NULL;
}

/* A thread the system cannot start (pthread_create failing with EAGAIN, here
 * because the address space is capped below what one more stack needs) is
 * reported as VAE_ERR_NOMEM, like any allocation failure, and the context
 * keeps its previous worker; once the cap is lifted the same call succeeds.
 * In a child process, whose address-space limit dies with it. Not under the
 * sanitizers (their shadow memory does not fit under such a cap) or a memory
 * checker. */
static void test_thread_start_failure(void **state)
{
    (void)state;
#if defined(__SANITIZE_ADDRESS__) || defined(TC_TSAN)
    print_message("skipped under a sanitizer (address-space cap)\n");
    skip();
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    print_message("skipped under a sanitizer (address-space cap)\n");
    skip();
#endif
#endif
    if (fork_skipped())
        skip();
    vae_context *ctx = NULL;
    TU_OK(vae_context_create(&ctx));
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        long pages = 0;
        FILE *f = fopen("/proc/self/statm", "r");
        if (!f || fscanf(f, "%ld", &pages) != 1)
            _exit(10);
        fclose(f);
        struct rlimit old, cap;
        if (getrlimit(RLIMIT_AS, &old) != 0)
            _exit(11);
        cap = old;
        cap.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + ((rlim_t)24 << 20);
        if (setrlimit(RLIMIT_AS, &cap) != 0)
            _exit(12);
        int rc = vae_context_set_threads(ctx, 64);
        if (rc != VAE_ERR_NOMEM)
            _exit(13);
        if (!strstr(vae_last_error(), "vae_context_set_threads") ||
            !strstr(vae_last_error(), "cannot start thread"))
            _exit(14);
        if (vae_context_threads(ctx) != 1)
            _exit(15);
        if (setrlimit(RLIMIT_AS, &old) != 0)
            _exit(16);
        if (vae_context_set_threads(ctx, 4) != VAE_OK || vae_context_threads(ctx) != 4)
            _exit(17);
        vae_context_free(ctx);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) != 0)
        fail_msg("the child failed at check %d (see the test)", WEXITSTATUS(status));
    vae_context_free(ctx);
}

static void test_fork_context_in_use(void **state)
{
    (void)state;
    if (fork_skipped())
        skip();
    vae_model *m = NULL;
    vae_context *ctx = NULL;
    vae_elbo *e = NULL;
    vae_optimizer *opt = NULL;
    vae_trainer *t = NULL;
    vae_dataset *ds = NULL;
    TU_OK(make_mlp(&m, 91));
    TU_OK(vae_context_create(&ctx));
    TU_OK(vae_elbo_create(&e));
    TU_OK(vae_optimizer_create(&opt, VAE_OPTIMIZER_SGD));
    TU_OK(vae_trainer_create(&t, m, e, opt, ctx, 92));
    TU_OK(vae_dataset_from_floats(&ds, g_x, 64, MD, NULL));
    blocker *b = tu_alloc(1, sizeof *b);
    atomic_init(&b->inside, 0);
    atomic_init(&b->release, 0);
    epoch_job job = {t, ds, b, -100};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, epoch_thread, &job), 0);
    if (wait_flag(&b->inside, 120.0)) {
        atomic_store(&b->release, 1);
        pthread_join(th, NULL);
        fail_msg("the progress callback never ran (epoch: %d)", job.rc);
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        /* The epoch's thread does not exist here; its context stays in use. */
        float mu[ML], lv[ML];
        int rc = vae_encode(ctx, m, g_x, 1, mu, lv);
        if (rc != VAE_ERR_STATE) {
            fprintf(stderr, "child: vae_encode on the busy context returned %d\n", rc);
            _exit(10);
        }
        if (!strstr(vae_last_error(), "vae_encode"))
            _exit(11);
        /* A new context works in the child. */
        vae_context *c2 = NULL;
        if (vae_context_create(&c2) || vae_encode(c2, m, g_x, 1, mu, lv)) {
            fprintf(stderr, "child: %s\n", vae_last_error());
            _exit(12);
        }
        vae_context_free(c2);
        _exit(0);
    }
    atomic_store(&b->release, 1);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_true(pid > 0);
    int status = 0;
    const int w = wait_child(pid, 120.0, &status);
    if (w == -1)
        fail_msg("the child did not finish within 120 s after fork(): a deadlock");
    assert_int_equal(w, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("the child %s %d (10: the busy context was usable, 11: message, 12: a new "
                 "context failed)",
                 WIFEXITED(status) ? "exited with" : "was killed by signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    assert_int_equal(job.rc, VAE_ERR_CANCELLED);
    /* In the parent the context is free again once the epoch returned. */
    float mu[ML], lv[ML];
    TU_OK(vae_encode(ctx, m, g_x, 1, mu, lv));
    free(b);
    vae_dataset_free(ds);
    vae_trainer_free(t);
    vae_optimizer_free(opt);
    vae_elbo_free(e);
    vae_context_free(ctx);
    vae_model_free(m);
}

int main(void)
{
    /* More than one worker per context needs a single-threaded BLAS. */
    if (vae_blas_set_threads(1) != VAE_OK) {
        fprintf(stderr, "vae_blas_set_threads(1): %s\n", vae_last_error());
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_context_bad_input),
        cmocka_unit_test(test_blas_threads_bad_input),
        cmocka_unit_test(test_threads_need_single_threaded_blas),
        cmocka_unit_test(test_training_bit_identical),
        cmocka_unit_test(test_inference_bit_identical),
        cmocka_unit_test(test_overflow_reported_at_first_sample),
        cmocka_unit_test(test_threads_share_const_model),
        cmocka_unit_test(test_epoch_bit_identical),
        cmocka_unit_test(test_concurrent_trainers),
        cmocka_unit_test(test_one_context_two_trainers),
        cmocka_unit_test(test_context_in_use_from_callback),
        cmocka_unit_test(test_context_in_use_two_threads),
        cmocka_unit_test(test_fork_with_workers),
        cmocka_unit_test(test_fork_context_in_use),
        cmocka_unit_test(test_thread_start_failure),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
