/* Allocation failure, every allocation point once.
 *
 * A counting allocator (vae_set_allocator) fails the N-th allocation of the
 * library, once. A scenario that touches every module runs for N = 1, 2,
 * ... until it completes without reaching the failure: standalone layers,
 * a conv model built layer by layer and an MLP from vae_model_create_mlp,
 * contexts with 2 workers, datasets, trainers with Adam and with SGD +
 * momentum (steps, epochs, reserve), whole-dataset evaluation, the
 * log-likelihood, encode/decode/sample/reconstruct, the per-sample ELBO,
 * named tensors, saving and loading models through files and memory, and
 * checkpoints: metadata, saving and restoring a trainer through files and
 * memory, and the model part of a checkpoint.
 *
 * For every N the call that meets the failure must return exactly
 * VAE_ERR_NOMEM with a fresh message naming it; every handle must be as it
 * was (a constructor gives NULL, a failed step leaves parameters, gradients
 * and counters alone, a failed save leaves the directory alone); the same
 * call retried (the failure is one-shot) must succeed; and from there the
 * run must give bit for bit the results of a run without failure, so no
 * failed call advanced a generator or changed a handle unseen. After
 * freeing everything vae_allocations() is 0 (LeakSanitizer also watches
 * under ASan).
 *
 * Only the library's own allocations go through the hook: the BLAS and the
 * C library allocate on their own (OpenBLAS 0.3.21 mallocs inside small
 * GEMMs), and are not failed here. See docs/reliability.md. */
#define _POSIX_C_SOURCE 200809L

#include <stdatomic.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_util.h"

/* ---- the counting allocator ----------------------------------------------------- */

static struct {
    atomic_size_t calls;   /* allocations so far (malloc_fn and realloc_fn) */
    atomic_size_t fail_at; /* the allocation that fails, counted from 1; 0: none */
    atomic_int failed;     /* set when that allocation was refused */
} A;

static int refuse(void)
{
    size_t k = atomic_fetch_add(&A.calls, 1) + 1;
    if (k != atomic_load(&A.fail_at))
        return 0;
    atomic_store(&A.failed, 1);
    return 1;
}

static void *a_malloc(void *payload, size_t n)
{
    (void)payload;
    return refuse() ? NULL : malloc(n);
}

static void *a_realloc(void *payload, void *p, size_t n)
{
    (void)payload;
    return refuse() ? NULL : realloc(p, n);
}

static void a_free(void *payload, void *p)
{
    (void)payload;
    free(p);
}

/* ---- data ------------------------------------------------------------------------- */

/* Conv model: 1 x 6 x 6 images, latent 2, Bernoulli. MLP: 8 values, latent
 * 3, Gaussian. */
enum { CD = 36, CL = 2, MD = 8, ML = 3, NXC = 72, NDS = 40, NXM = 24, NZ = 70, NSAMPLE = 70 };

static float g_xc[NXC * CD], g_xm[NXM * MD], g_z[NZ * CL], g_lx[5 * 6];
static int32_t g_labels[NDS];

static void make_data(void)
{
    tu_rng r = {2024};
    tu_fill_range(&r, g_xc, NXC * CD, 0.0, 1.0);
    tu_fill_range(&r, g_xm, NXM * MD, -1.0, 1.0);
    for (size_t i = 0; i < NZ * CL; i++)
        g_z[i] = (float)tu_gauss(&r);
    tu_fill_range(&r, g_lx, 5 * 6, -1.0, 1.0);
    for (size_t i = 0; i < NDS; i++)
        g_labels[i] = (int32_t)(i % 3);
}

static char g_dir[64];

static const char *path_of(const char *name)
{
    return tu_path_in(g_dir, name);
}

/* ---- the scenario's state ------------------------------------------------------------ */

typedef struct results {
    float layer_y[5 * 4 + 3 * 27 + 2 * 50], layer_dx[5 * 6]; /* dense, conv, convT */
    float mu[NXC * CL], logvar[NXC * CL], dec[NZ * CD], smp[NSAMPLE * CD], rec[NXC * CD];
    float mm_mu[NXM * ML], mm_lv[NXM * ML], reserved_smp[NSAMPLE * CD];
    double ll[3], per[NDS], elbo_per[NXC];
    double stats[16][4]; /* loss, recon, kl, samples (seconds vary, so left out) */
    float tensor[64];
} results;

typedef struct sc {
    vae_rng *rng;
    vae_layer *ld, *lc, *lt; /* standalone layers */
    vae_layer *pending;      /* a layer about to be added to mc */
    vae_model *mc, *mm, *ml, *mlm, *mck;
    vae_context *ctx, *ctx2, *ci;
    vae_dataset *dsc, *dsm, *dss, *dsf;
    vae_elbo *e;
    vae_optimizer *adam, *sgd;
    vae_trainer *ta, *ts;
    unsigned char *bytes; /* save_mem of mm, test memory */
    size_t nbytes;
    unsigned char *ck;    /* vae_trainer_save_mem of ta, test memory */
    size_t nck;
    results R;
} sc;

/* Something no constructor returns: a failed one must overwrite it with NULL. */
static char g_poison;
#define POISON ((void *)&g_poison)

/* ---- digests ------------------------------------------------------------------------------ */

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

static uint64_t fnv_u(uint64_t h, uint64_t v)
{
    return fnv(h, &v, sizeof v);
}

static uint64_t digest_layer(uint64_t h, vae_layer *l)
{
    h = fnv_u(h, l != NULL);
    if (!l)
        return h;
    size_t n = 0, ng = 0;
    const float *p = vae_layer_params(l, &n), *g = vae_layer_grads(l, &ng);
    h = fnv_u(h, (uint64_t)vae_layer_kind(l));
    h = fnv(h, p, n * sizeof *p);
    return fnv(h, g, ng * sizeof *g);
}

static uint64_t digest_model(uint64_t h, vae_model *m)
{
    h = fnv_u(h, m != NULL);
    if (!m)
        return h;
    double sigma = 0;
    assert_int_equal(vae_model_get_param(m, VAE_MODEL_GAUSSIAN_SIGMA, &sigma), VAE_OK);
    h = fnv_u(h, vae_model_is_built(m));
    h = fnv_u(h, vae_model_layer_count(m));
    h = fnv_u(h, vae_model_encoder_layer_count(m));
    h = fnv(h, &sigma, sizeof sigma);
    size_t n = 0;
    const float *p = vae_model_params(m, &n);
    return fnv(h, p, n * sizeof *p);
}

static uint64_t digest_trainer(uint64_t h, vae_trainer *t)
{
    h = fnv_u(h, t != NULL);
    if (!t)
        return h;
    size_t n = 0;
    const float *g = vae_trainer_grads(t, &n);
    h = fnv_u(h, vae_trainer_steps(t));
    h = fnv_u(h, vae_trainer_epochs(t));
    size_t done = 0, total = 0;
    assert_int_equal(vae_trainer_epoch_position(t, &done, &total), VAE_OK);
    h = fnv_u(h, done);
    h = fnv_u(h, total);
    h = fnv_u(h, vae_trainer_meta_count(t));
    for (size_t i = 0; i < vae_trainer_meta_count(t); i++) {
        const char *k = NULL, *v = NULL;
        assert_int_equal(vae_trainer_meta_at(t, i, &k, &v), VAE_OK);
        h = fnv(h, k, strlen(k) + 1);
        h = fnv(h, v, strlen(v) + 1);
    }
    return fnv(h, g, n * sizeof *g);
}

/* Everything observable about the live handles (generators excepted: their
 * state shows in later results). The layer about to be added is left out
 * when `consumed`: the add calls take it whether they succeed or fail. */
static uint64_t digest_handles(sc *S, int consumed)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    h = fnv_u(h, S->rng != NULL);
    h = digest_layer(h, S->ld);
    h = digest_layer(h, S->lc);
    h = digest_layer(h, S->lt);
    if (!consumed)
        h = digest_layer(h, S->pending);
    vae_model *models[] = {S->mc, S->mm, S->ml, S->mlm, S->mck};
    for (size_t i = 0; i < 5; i++)
        h = digest_model(h, models[i]);
    vae_context *ctxs[] = {S->ctx, S->ctx2, S->ci};
    for (size_t i = 0; i < 3; i++)
        h = fnv_u(h, ctxs[i] ? vae_context_threads(ctxs[i]) + 1 : 0);
    vae_dataset *dss[] = {S->dsc, S->dsm, S->dss, S->dsf};
    for (size_t i = 0; i < 4; i++) {
        h = fnv_u(h, dss[i] ? vae_dataset_count(dss[i]) + 1 : 0);
        h = fnv_u(h, vae_dataset_dim(dss[i]));
        h = fnv_u(h, (uint64_t)vae_dataset_has_labels(dss[i]));
    }
    h = fnv_u(h, S->e != NULL);
    vae_optimizer *opts[] = {S->adam, S->sgd};
    for (size_t i = 0; i < 2; i++) {
        double lr = 0;
        if (opts[i])
            assert_int_equal(vae_optimizer_get_param(opts[i], VAE_OPT_LR, &lr), VAE_OK);
        h = fnv_u(h, opts[i] != NULL);
        h = fnv(h, &lr, sizeof lr);
    }
    h = digest_trainer(h, S->ta);
    h = digest_trainer(h, S->ts);
    return h;
}

static uint64_t digest_all(sc *S)
{
    uint64_t h = digest_handles(S, 0);
    return fnv(h, &S->R, sizeof S->R);
}

/* ---- the operations of the scenario, one allocating call each ------------------------------ */

typedef struct op {
    const char *name; /* the function the operation calls, which a failure must name */
    int (*run)(sc *S);
    int (*again)(sc *S);      /* before a retry, when the failed call consumed an input */
    void (*failed)(sc *S);    /* extra checks after a failure */
    /* The message may instead name a function this one called: set for
     * vae_model_create_mlp, which passes its inner calls' messages on. */
    int inner;
} op;

#define CREATE(field, call)                                                                 \
    do {                                                                                    \
        S->field = POISON;                                                                  \
        int rc_ = (call);                                                                   \
        if (rc_ && S->field)                                                                \
            fail_msg("%s failed (%d) and left its out pointer set", #call, rc_);            \
        return rc_;                                                                         \
    } while (0)

static void put_stats(sc *S, size_t k, const vae_epoch_stats *st)
{
    S->R.stats[k][0] = st->loss;
    S->R.stats[k][1] = st->recon;
    S->R.stats[k][2] = st->kl;
    S->R.stats[k][3] = (double)st->samples + 1e6 * (double)st->steps;
}

static int op_rng(sc *S)
{
    CREATE(rng, vae_rng_create(&S->rng, 7));
}

/* Standalone layers: create, init, forward (grows the cache), backward. */
static int op_dense_create(sc *S)
{
    CREATE(ld, vae_layer_dense_create(&S->ld, 6, 4, VAE_ACT_TANH));
}
static int op_conv_create(sc *S)
{
    CREATE(lc, vae_layer_conv2d_create(&S->lc, 2, 5, 5, 3, 3, 3, 2, 1, VAE_ACT_RELU));
}
static int op_convt_create(sc *S)
{
    CREATE(lt, vae_layer_conv2d_transpose_create(&S->lt, 3, 2, 2, 2, 3, 3, 2, 0, 0,
                                                 VAE_ACT_ELU));
}
static int op_layers_init(sc *S)
{
    TU_OK(vae_layer_init(S->ld, S->rng));
    TU_OK(vae_layer_init(S->lc, S->rng));
    TU_OK(vae_layer_init(S->lt, S->rng));
    return VAE_OK;
}
static int op_dense_forward(sc *S)
{
    int rc = vae_layer_forward(S->ld, g_lx, 5, S->R.layer_y);
    if (!rc)
        TU_OK(vae_layer_backward(S->ld, S->R.layer_y, S->R.layer_dx));
    return rc;
}
static int op_conv_forward(sc *S)
{
    float x[3 * 50];
    for (size_t i = 0; i < 3 * 50; i++)
        x[i] = g_xc[i];
    int rc = vae_layer_forward(S->lc, x, 3, S->R.layer_y + 20);
    if (!rc)
        TU_OK(vae_layer_backward(S->lc, S->R.layer_y + 20, NULL));
    return rc;
}
static int op_convt_forward(sc *S)
{
    int rc = vae_layer_forward(S->lt, g_xc, 2, S->R.layer_y + 101);
    if (!rc)
        TU_OK(vae_layer_backward(S->lt, S->R.layer_y + 101, S->R.layer_dx));
    return rc;
}

/* The conv model, layer by layer: Conv2D 1x6x6 -> 4x3x3 (kernel 3, stride 2,
 * padding 1), dense 36 -> 8, head 8 -> 2x2; decoder dense 2 -> 36 (4x3x3),
 * ConvTranspose2D 4x3x3 -> 1x6x6 (kernel 4, stride 2, padding 1). */
static int op_mc_create(sc *S)
{
    CREATE(mc, vae_model_create(&S->mc, CD, CL, VAE_LIKELIHOOD_BERNOULLI));
}
static int op_l0(sc *S)
{
    CREATE(pending, vae_layer_conv2d_create(&S->pending, 1, 6, 6, 4, 3, 3, 2, 1, VAE_ACT_ELU));
}
static int op_l1(sc *S)
{
    CREATE(pending, vae_layer_dense_create(&S->pending, 36, 8, VAE_ACT_TANH));
}
static int op_l2(sc *S)
{
    CREATE(pending, vae_layer_dense_create(&S->pending, CL, 36, VAE_ACT_RELU));
}
static int op_l3(sc *S)
{
    CREATE(pending, vae_layer_conv2d_transpose_create(&S->pending, 4, 3, 3, 1, 4, 4, 2, 1, 0,
                                                      VAE_ACT_IDENTITY));
}
static int add_pending(sc *S, int encoder)
{
    size_t before = vae_model_layer_count(S->mc);
    int rc = encoder ? vae_model_add_encoder_layer(S->mc, &S->pending)
                     : vae_model_add_decoder_layer(S->mc, &S->pending);
    if (S->pending)
        fail_msg("the add call (status %d) left the caller its layer", rc);
    assert_int_equal(vae_model_layer_count(S->mc), before + (rc ? 0 : 1));
    return rc;
}
static int op_add_enc(sc *S)
{
    return add_pending(S, 1);
}
static int op_add_dec(sc *S)
{
    return add_pending(S, 0);
}
static int op_mc_build(sc *S)
{
    int rc = vae_model_build(S->mc, 5);
    assert_int_equal(vae_model_is_built(S->mc), rc == VAE_OK);
    return rc;
}

static int op_mlp(sc *S)
{
    static const size_t hidden[] = {6, 5};
    CREATE(mm, vae_model_create_mlp(&S->mm, MD, hidden, 2, ML, VAE_ACT_ELU,
                                    VAE_LIKELIHOOD_GAUSSIAN, 9));
}
static int op_mlp_sigma(sc *S)
{
    TU_OK(vae_model_set_param(S->mm, VAE_MODEL_GAUSSIAN_SIGMA, 0.5));
    return VAE_OK;
}

static int op_ctx(sc *S)
{
    CREATE(ctx, vae_context_create(&S->ctx));
}
static int op_ctx_threads(sc *S)
{
    return vae_context_set_threads(S->ctx, 2);
}
static int op_ctx2(sc *S)
{
    CREATE(ctx2, vae_context_create(&S->ctx2));
}

static int op_dsc(sc *S)
{
    CREATE(dsc, vae_dataset_from_floats(&S->dsc, g_xc, NDS, CD, g_labels));
}
static int op_dsm(sc *S)
{
    CREATE(dsm, vae_dataset_from_floats(&S->dsm, g_xm, NXM, MD, NULL));
}
static int op_dss(sc *S)
{
    static const size_t idx[] = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3};
    CREATE(dss, vae_dataset_subset(&S->dss, S->dsc, idx, 10));
}
static int op_dsf(sc *S)
{
    CREATE(dsf, vae_dataset_filter_label(&S->dsf, S->dsc, 1, 1));
}

static int op_elbo(sc *S)
{
    CREATE(e, vae_elbo_create(&S->e));
}
static int op_adam(sc *S)
{
    CREATE(adam, vae_optimizer_create(&S->adam, VAE_OPTIMIZER_ADAM));
}
static int op_sgd(sc *S)
{
    S->sgd = POISON;
    int rc = vae_optimizer_create(&S->sgd, VAE_OPTIMIZER_SGD);
    if (rc) {
        if (S->sgd)
            fail_msg("vae_optimizer_create failed and left its out pointer set");
        return rc;
    }
    TU_OK(vae_optimizer_set_param(S->sgd, VAE_OPT_LR, 0.05));
    TU_OK(vae_optimizer_set_param(S->sgd, VAE_OPT_MOMENTUM, 0.9));
    return VAE_OK;
}
static int op_ta(sc *S)
{
    CREATE(ta, vae_trainer_create(&S->ta, S->mc, S->e, S->adam, S->ctx, 21));
}
static int op_ts(sc *S)
{
    CREATE(ts, vae_trainer_create(&S->ts, S->mm, S->e, S->sgd, S->ctx2, 22));
}

/* Training: two blocks, so both workers of ctx run. */
static int op_ta_step(sc *S)
{
    vae_epoch_stats st = {sizeof st};
    int rc = vae_trainer_step(S->ta, g_xc, NXC, &st);
    if (!rc)
        put_stats(S, 0, &st);
    return rc;
}
static int op_ta_fb(sc *S)
{
    vae_epoch_stats st = {sizeof st};
    int rc = vae_trainer_forward_backward(S->ta, g_xc + 5 * CD, 5, NULL, &st);
    if (!rc) {
        TU_OK(vae_trainer_apply(S->ta));
        put_stats(S, 1, &st);
    }
    return rc;
}
static int op_ta_epoch(sc *S)
{
    vae_train_options o;
    TU_OK(vae_train_options_init(&o, sizeof o));
    o.batch_size = 16;
    o.binarize = 1;
    vae_epoch_stats st = {sizeof st};
    int rc = vae_trainer_train_epoch(S->ta, S->dsc, &o, &st);
    if (!rc)
        put_stats(S, 2, &st);
    return rc;
}
static int op_ts_epoch(sc *S)
{
    vae_train_options o;
    TU_OK(vae_train_options_init(&o, sizeof o));
    o.batch_size = 8;
    vae_epoch_stats st = {sizeof st};
    int rc = vae_trainer_train_epoch(S->ts, S->dsm, &o, &st);
    if (!rc)
        put_stats(S, 3, &st);
    return rc;
}
static int op_ts_reserve(sc *S)
{
    return vae_trainer_reserve(S->ts, 100);
}
static int op_ts_step(sc *S)
{
    vae_epoch_stats st = {sizeof st};
    size_t before = atomic_load(&A.calls);
    int rc = vae_trainer_step(S->ts, g_xm, NXM, &st);
    /* After vae_trainer_reserve, steps allocate nothing. */
    assert_int_equal(atomic_load(&A.calls), before);
    if (!rc)
        put_stats(S, 4, &st);
    return rc;
}
static int op_mm_encode(sc *S)
{
    return vae_encode(S->ctx2, S->mm, g_xm, NXM, S->R.mm_mu, S->R.mm_lv);
}

/* Inference, each call on a fresh context with two workers so that it lays
 * out (allocates) its own workspace. */
static int op_ci(sc *S)
{
    CREATE(ci, vae_context_create(&S->ci));
}
static int op_ci_threads(sc *S)
{
    return vae_context_set_threads(S->ci, 2);
}
static int op_ci_free(sc *S)
{
    vae_context_free(S->ci);
    S->ci = NULL;
    return VAE_OK;
}
static int op_evaluate(sc *S)
{
    vae_epoch_stats st = {sizeof st};
    int rc = vae_evaluate_dataset(S->ci, S->mc, S->e, S->dsc, S->rng, S->R.per, &st);
    if (!rc)
        put_stats(S, 5, &st);
    return rc;
}
static int op_evaluate_subset(sc *S)
{
    vae_epoch_stats st = {sizeof st};
    int rc = vae_evaluate_dataset(S->ci, S->mc, S->e, S->dss, S->rng, NULL, &st);
    if (!rc)
        put_stats(S, 6, &st);
    return rc;
}
static int op_loglik(sc *S)
{
    return vae_log_likelihood(S->ci, S->mc, g_xc, 3, 5, S->rng, S->R.ll);
}
static int op_encode(sc *S)
{
    return vae_encode(S->ci, S->mc, g_xc, NXC, S->R.mu, S->R.logvar);
}
static int op_decode(sc *S)
{
    return vae_decode(S->ci, S->mc, g_z, NZ, S->R.dec);
}
static int op_sample(sc *S)
{
    return vae_sample(S->ci, S->mc, S->rng, NSAMPLE, S->R.smp);
}
static int op_reconstruct(sc *S)
{
    return vae_reconstruct(S->ci, S->mc, g_xc, NXC, S->R.rec);
}
static int op_elbo_eval(sc *S)
{
    vae_epoch_stats st = {sizeof st};
    int rc = vae_elbo_evaluate(S->ci, S->mc, S->e, g_xc, NXC, NULL, S->rng, S->R.elbo_per, &st);
    if (!rc)
        put_stats(S, 7, &st);
    return rc;
}
static int op_ci_reserve(sc *S)
{
    return vae_context_reserve(S->ci, S->mc, 100);
}
/* After vae_context_reserve, inference up to that batch allocates nothing. */
static int op_reserved_inference(sc *S)
{
    size_t before = atomic_load(&A.calls);
    TU_OK(vae_sample(S->ci, S->mc, S->rng, NSAMPLE, S->R.reserved_smp));
    TU_OK(vae_encode(S->ci, S->mc, g_xc, NXC, S->R.mu, S->R.logvar));
    vae_epoch_stats st = {sizeof st};
    TU_OK(vae_elbo_evaluate(S->ci, S->mc, S->e, g_xc, NXC, NULL, S->rng, NULL, &st));
    put_stats(S, 8, &st);
    assert_int_equal(atomic_load(&A.calls), before);
    return VAE_OK;
}

/* Named tensors do not allocate. */
static int op_tensors(sc *S)
{
    size_t idx = 0, count = 0;
    TU_OK(vae_model_tensor_find(S->mc, "decoder.1.weight", &idx));
    TU_OK(vae_model_tensor_info(S->mc, idx, NULL, NULL, NULL, &count));
    assert_int_equal(count, 4 * 1 * 4 * 4);
    TU_OK(vae_model_tensor_get(S->mc, idx, S->R.tensor, count));
    float half[64];
    for (size_t i = 0; i < count; i++)
        half[i] = 0.5f * S->R.tensor[i];
    TU_OK(vae_model_tensor_set(S->mc, idx, half, count));
    return VAE_OK;
}

/* The file, compared with save_mem of the model, byte for byte. */
static void expect_file_is(vae_model *m)
{
    size_t n = 0;
    TU_OK(vae_model_save_mem(m, NULL, 0, &n));
    unsigned char *want = tu_alloc(n, 1);
    TU_OK(vae_model_save_mem(m, want, n, &n));
    FILE *f = fopen(path_of("model.vae"), "rb");
    assert_non_null(f);
    unsigned char *got = tu_alloc(n + 1, 1);
    size_t len = fread(got, 1, n + 1, f);
    fclose(f);
    assert_int_equal(len, n);
    assert_memory_equal(got, want, n);
    free(got);
    free(want);
}

static int op_save_mc(sc *S)
{
    return vae_model_save(S->mc, path_of("model.vae"));
}
/* The first save failed: nothing may be left in the directory. */
static void failed_save_mc(sc *S)
{
    (void)S;
    char names[512];
    tu_list_dir(g_dir, names, sizeof names);
    assert_string_equal(names, "");
}
static int op_load(sc *S)
{
    CREATE(ml, vae_model_load(&S->ml, path_of("model.vae")));
}
static int op_save_mem(sc *S)
{
    size_t n = 0;
    TU_OK(vae_model_save_mem(S->mm, NULL, 0, &n));
    S->bytes = tu_alloc(n, 1);
    S->nbytes = n;
    TU_OK(vae_model_save_mem(S->mm, S->bytes, n, &n));
    return VAE_OK;
}
static int op_load_mem(sc *S)
{
    CREATE(mlm, vae_model_load_mem(&S->mlm, S->bytes, S->nbytes));
}
/* The loaded models are the saved ones. */
static int op_compare_loaded(sc *S)
{
    expect_file_is(S->ml);
    size_t n = 0;
    TU_OK(vae_model_save_mem(S->mlm, NULL, 0, &n));
    assert_int_equal(n, S->nbytes);
    unsigned char *b = tu_alloc(n, 1);
    TU_OK(vae_model_save_mem(S->mlm, b, n, &n));
    assert_memory_equal(b, S->bytes, n);
    free(b);
    return VAE_OK;
}
static int op_save_mm(sc *S)
{
    return vae_model_save(S->mm, path_of("model.vae"));
}
/* A failed save over a file leaves the old file, and nothing else. */
static void failed_save_mm(sc *S)
{
    char names[512];
    tu_list_dir(g_dir, names, sizeof names);
    assert_string_equal(names, "model.vae");
    expect_file_is(S->mc);
}
static int op_check_saved_mm(sc *S)
{
    expect_file_is(S->mm);
    return VAE_OK;
}
static int op_sample_loaded(sc *S)
{
    return vae_sample(S->ctx2, S->ml, S->rng, NSAMPLE, S->R.smp);
}

/* Checkpoints of the Adam trainer: metadata, a save to a file beside the
 * model file, its model part, a step that the restore then undoes, and the
 * same through memory. */
static int op_meta(sc *S)
{
    return vae_trainer_set_meta(S->ta, "note", "fault injection");
}
static int op_meta2(sc *S)
{
    return vae_trainer_set_meta(S->ta, "argv", "test_alloc");
}
static int op_ck_save(sc *S)
{
    return vae_trainer_save(S->ta, path_of("ck.vae"));
}
/* A failed checkpoint save leaves the directory as it was. */
static void failed_ck_save(sc *S)
{
    (void)S;
    char names[512];
    tu_list_dir(g_dir, names, sizeof names);
    assert_string_equal(names, "model.vae");
}
static int op_ck_load(sc *S)
{
    CREATE(mck, vae_model_load(&S->mck, path_of("ck.vae")));
}
static int op_ck_step(sc *S)
{
    vae_epoch_stats st = tu_stats();
    return vae_trainer_step(S->ta, g_xc, NXC, &st);
}
static int op_ck_restore(sc *S)
{
    return vae_trainer_restore(S->ta, path_of("ck.vae"));
}
static int op_ck_save_mem(sc *S)
{
    size_t n = 0;
    TU_OK(vae_trainer_save_mem(S->ta, NULL, 0, &n));
    S->ck = tu_alloc(n, 1);
    S->nck = n;
    TU_OK(vae_trainer_save_mem(S->ta, S->ck, n, &n));
    return VAE_OK;
}
static int op_ck_restore_mem(sc *S)
{
    return vae_trainer_restore_mem(S->ta, S->ck, S->nck);
}

static const op OPS[] = {
    {"vae_rng_create", op_rng, NULL, NULL},
    {"vae_layer_dense_create", op_dense_create, NULL, NULL},
    {"vae_layer_conv2d_create", op_conv_create, NULL, NULL},
    {"vae_layer_conv2d_transpose_create", op_convt_create, NULL, NULL},
    {"vae_layer_init", op_layers_init, NULL, NULL},
    {"vae_layer_forward", op_dense_forward, NULL, NULL},
    {"vae_layer_forward", op_conv_forward, NULL, NULL},
    {"vae_layer_forward", op_convt_forward, NULL, NULL},
    {"vae_model_create", op_mc_create, NULL, NULL},
    {"vae_layer_conv2d_create", op_l0, NULL, NULL},
    {"vae_model_add_encoder_layer", op_add_enc, op_l0, NULL},
    {"vae_layer_dense_create", op_l1, NULL, NULL},
    {"vae_model_add_encoder_layer", op_add_enc, op_l1, NULL},
    {"vae_layer_dense_create", op_l2, NULL, NULL},
    {"vae_model_add_decoder_layer", op_add_dec, op_l2, NULL},
    {"vae_layer_conv2d_transpose_create", op_l3, NULL, NULL},
    {"vae_model_add_decoder_layer", op_add_dec, op_l3, NULL},
    {"vae_model_build", op_mc_build, NULL, NULL},
    {"vae_model_create_mlp", op_mlp, NULL, NULL, 1},
    {"vae_model_set_param", op_mlp_sigma, NULL, NULL},
    {"vae_context_create", op_ctx, NULL, NULL},
    {"vae_context_set_threads", op_ctx_threads, NULL, NULL},
    {"vae_context_create", op_ctx2, NULL, NULL},
    {"vae_dataset_from_floats", op_dsc, NULL, NULL},
    {"vae_dataset_from_floats", op_dsm, NULL, NULL},
    {"vae_dataset_subset", op_dss, NULL, NULL},
    {"vae_dataset_filter_label", op_dsf, NULL, NULL},
    {"vae_elbo_create", op_elbo, NULL, NULL},
    {"vae_optimizer_create", op_adam, NULL, NULL},
    {"vae_optimizer_create", op_sgd, NULL, NULL},
    {"vae_trainer_create", op_ta, NULL, NULL},
    {"vae_trainer_create", op_ts, NULL, NULL},
    {"vae_trainer_step", op_ta_step, NULL, NULL},
    {"vae_trainer_forward_backward", op_ta_fb, NULL, NULL},
    {"vae_trainer_train_epoch", op_ta_epoch, NULL, NULL},
    {"vae_trainer_train_epoch", op_ts_epoch, NULL, NULL},
    {"vae_trainer_reserve", op_ts_reserve, NULL, NULL},
    {"vae_trainer_step", op_ts_step, NULL, NULL},
    {"vae_encode", op_mm_encode, NULL, NULL},
    {"vae_context_create", op_ci, NULL, NULL},
    {"vae_context_set_threads", op_ci_threads, NULL, NULL},
    {"vae_evaluate_dataset", op_evaluate, NULL, NULL},
    {"vae_evaluate_dataset", op_evaluate_subset, NULL, NULL},
    {"vae_context_free", op_ci_free, NULL, NULL},
    {"vae_context_create", op_ci, NULL, NULL},
    {"vae_context_set_threads", op_ci_threads, NULL, NULL},
    {"vae_log_likelihood", op_loglik, NULL, NULL},
    {"vae_context_free", op_ci_free, NULL, NULL},
    {"vae_context_create", op_ci, NULL, NULL},
    {"vae_context_set_threads", op_ci_threads, NULL, NULL},
    {"vae_encode", op_encode, NULL, NULL},
    {"vae_context_free", op_ci_free, NULL, NULL},
    {"vae_context_create", op_ci, NULL, NULL},
    {"vae_context_set_threads", op_ci_threads, NULL, NULL},
    {"vae_decode", op_decode, NULL, NULL},
    {"vae_context_free", op_ci_free, NULL, NULL},
    {"vae_context_create", op_ci, NULL, NULL},
    {"vae_context_set_threads", op_ci_threads, NULL, NULL},
    {"vae_sample", op_sample, NULL, NULL},
    {"vae_context_free", op_ci_free, NULL, NULL},
    {"vae_context_create", op_ci, NULL, NULL},
    {"vae_context_set_threads", op_ci_threads, NULL, NULL},
    {"vae_reconstruct", op_reconstruct, NULL, NULL},
    {"vae_context_free", op_ci_free, NULL, NULL},
    {"vae_context_create", op_ci, NULL, NULL},
    {"vae_context_set_threads", op_ci_threads, NULL, NULL},
    {"vae_elbo_evaluate", op_elbo_eval, NULL, NULL},
    {"vae_context_free", op_ci_free, NULL, NULL},
    {"vae_context_create", op_ci, NULL, NULL},
    {"vae_context_set_threads", op_ci_threads, NULL, NULL},
    {"vae_context_reserve", op_ci_reserve, NULL, NULL},
    {"vae_sample", op_reserved_inference, NULL, NULL},
    {"vae_context_free", op_ci_free, NULL, NULL},
    {"vae_model_tensor_set", op_tensors, NULL, NULL},
    {"vae_model_save", op_save_mc, NULL, failed_save_mc},
    {"vae_model_load", op_load, NULL, NULL},
    {"vae_model_save_mem", op_save_mem, NULL, NULL},
    {"vae_model_load_mem", op_load_mem, NULL, NULL},
    {"vae_model_save_mem", op_compare_loaded, NULL, NULL},
    {"vae_model_save", op_save_mm, NULL, failed_save_mm},
    {"vae_model_save_mem", op_check_saved_mm, NULL, NULL},
    {"vae_sample", op_sample_loaded, NULL, NULL},
    {"vae_trainer_set_meta", op_meta, NULL, NULL},
    {"vae_trainer_set_meta", op_meta2, NULL, NULL},
    {"vae_trainer_save", op_ck_save, NULL, failed_ck_save},
    {"vae_model_load", op_ck_load, NULL, NULL},
    {"vae_trainer_step", op_ck_step, NULL, NULL},
    {"vae_trainer_restore", op_ck_restore, NULL, NULL},
    {"vae_trainer_step", op_ck_step, NULL, NULL},
    {"vae_trainer_save_mem", op_ck_save_mem, NULL, NULL},
    {"vae_trainer_restore_mem", op_ck_restore_mem, NULL, NULL},
};
enum { N_OPS = sizeof OPS / sizeof *OPS };

static void free_all(sc *S)
{
    vae_trainer_free(S->ta);
    vae_trainer_free(S->ts);
    vae_optimizer_free(S->adam);
    vae_optimizer_free(S->sgd);
    vae_elbo_free(S->e);
    vae_dataset_free(S->dsc);
    vae_dataset_free(S->dsm);
    vae_dataset_free(S->dss);
    vae_dataset_free(S->dsf);
    vae_context_free(S->ctx);
    vae_context_free(S->ctx2);
    vae_context_free(S->ci);
    vae_model_free(S->mc);
    vae_model_free(S->mm);
    vae_model_free(S->ml);
    vae_model_free(S->mlm);
    vae_model_free(S->mck);
    vae_layer_free(S->ld);
    vae_layer_free(S->lc);
    vae_layer_free(S->lt);
    vae_layer_free(S->pending);
    vae_rng_free(S->rng);
    free(S->bytes);
    free(S->ck);
    memset(S, 0, sizeof *S);
    unlink(path_of("model.vae"));
    unlink(path_of("ck.vae"));
}

/* ---- running it ---------------------------------------------------------------------------- */

/* What the run without failure recorded: the digest after every operation
 * and the allocations each made. */
static uint64_t g_trace[N_OPS];
static size_t g_points[N_OPS];

/* Runs the scenario with allocation fail_at failing (0: none). Returns the
 * operation in which it failed, or N_OPS when it was not reached. */
static size_t run(size_t fail_at, int reference)
{
    static sc S; /* static: a few hundred kB of results */
    memset(&S, 0, sizeof S);
    atomic_store(&A.calls, 0);
    atomic_store(&A.fail_at, fail_at);
    atomic_store(&A.failed, 0);
    size_t failed_in = N_OPS;
    for (size_t i = 0; i < N_OPS; i++) {
        const op *o = &OPS[i];
        uint64_t before = digest_handles(&S, o->again != NULL);
        size_t calls0 = atomic_load(&A.calls), live0 = vae_allocations();
        int was = atomic_load(&A.failed);
        (void)vae_rng_uniform(NULL, NULL, 0); /* a stale message to be replaced */
        int rc = o->run(&S);
        if (reference)
            g_points[i] = atomic_load(&A.calls) - calls0;
        if (atomic_load(&A.failed) && !was) {
            failed_in = i;
            char call[160];
            snprintf(call, sizeof call, "op %zu (%s) with allocation %zu failing", i, o->name,
                     fail_at);
            tu_check_error_msg(rc, VAE_ERR_NOMEM, o->inner ? "vae_" : o->name, NULL, call,
                               __FILE__, __LINE__);
            if (digest_handles(&S, o->again != NULL) != before)
                fail_msg("%s: a handle changed although the call failed (%s)", call,
                         vae_last_error());
            /* Nothing kept from a failed call: not even a grown workspace
             * (a consumed layer is freed, one block or two fewer). */
            size_t live1 = vae_allocations();
            if (o->again ? live1 > live0 : live1 != live0)
                fail_msg("%s: %zu blocks live before the call, %zu after its failure", call,
                         live0, live1);
            if (o->failed)
                o->failed(&S);
            if (o->again)
                TU_OK(o->again(&S));
            rc = o->run(&S);
            if (rc != VAE_OK)
                fail_msg("%s: the retry failed with %d (%s): %s", call, rc, vae_strerror(rc),
                         vae_last_error());
        } else if (rc != VAE_OK) {
            fail_msg("op %zu (%s), allocation %zu failing: status %d (%s) without an allocation "
                     "failure: %s",
                     i, o->name, fail_at, rc, vae_strerror(rc), vae_last_error());
        }
        uint64_t d = digest_all(&S);
        if (reference)
            g_trace[i] = d;
        else if (d != g_trace[i])
            fail_msg("op %zu (%s), allocation %zu failing (in op %zu): the results differ from "
                     "the run without failure",
                     i, o->name, fail_at, failed_in);
    }
    free_all(&S);
    size_t live = vae_allocations();
    if (live)
        fail_msg("allocation %zu failing (in op %zu, %s): %zu blocks leaked", fail_at, failed_in,
                 failed_in < N_OPS ? OPS[failed_in].name : "none", live);
    return failed_in;
}

static void test_every_allocation_fails_once(void **state)
{
    (void)state;
    assert_int_equal(vae_allocations(), 0);
    vae_allocator a = {sizeof a, a_malloc, a_realloc, a_free, NULL};
    TU_OK(vae_set_allocator(&a));
    TU_OK(vae_blas_set_threads(1));

    assert_int_equal(run(0, 1), N_OPS);
    const size_t total = atomic_load(&A.calls);
    assert_true(total > 0);
    size_t first[N_OPS + 1];
    for (size_t i = 0, at = 1; i <= N_OPS; i++) {
        first[i] = at;
        at += i < N_OPS ? g_points[i] : 0;
    }
    for (size_t n = 1; n <= total; n++) {
        size_t in = run(n, 0);
        if (in == N_OPS)
            fail_msg("allocation %zu of %zu was never made", n, total);
        if (n < first[in] || n >= first[in] + g_points[in])
            fail_msg("allocation %zu failed in op %zu (%s), the run without failure made it "
                     "elsewhere",
                     n, in, OPS[in].name);
    }
    /* One past the last: the scenario completes without meeting the failure. */
    assert_int_equal(run(total + 1, 0), N_OPS);

    /* What was covered, by the function that allocates. */
    print_message("test_alloc: %zu allocation points covered, each failed once:\n", total);
    const char *seen[N_OPS];
    size_t nseen = 0;
    for (size_t i = 0; i < N_OPS; i++) {
        size_t k = 0;
        while (k < nseen && strcmp(seen[k], OPS[i].name))
            k++;
        if (k < nseen)
            continue;
        seen[nseen++] = OPS[i].name;
        size_t pts = 0, calls = 0;
        for (size_t j = i; j < N_OPS; j++)
            if (!strcmp(OPS[j].name, OPS[i].name) && g_points[j]) {
                pts += g_points[j];
                calls++;
            }
        if (pts)
            print_message("  %-36s %3zu in %zu call%s\n", OPS[i].name, pts, calls,
                          calls == 1 ? "" : "s");
    }
    TU_OK(vae_set_allocator(NULL));
}

/* Calls that failed for want of memory leave the process in a state where
 * the allocator can be changed again, that is with nothing leaked. */
static void test_allocator_back_to_default(void **state)
{
    (void)state;
    assert_int_equal(vae_allocations(), 0);
    vae_model *m = NULL;
    static const size_t hidden[] = {4};
    TU_OK(vae_model_create_mlp(&m, 5, hidden, 1, 2, VAE_ACT_RELU, VAE_LIKELIHOOD_BERNOULLI, 1));
    vae_allocator a = {sizeof a, a_malloc, a_realloc, a_free, NULL};
    TU_EXPECT_ERR_MSG(vae_set_allocator(&a), VAE_ERR_STATE, "vae_set_allocator", "still");
    vae_model_free(m);
    assert_int_equal(vae_allocations(), 0);
}

static int setup(void **state)
{
    (void)state;
    make_data();
    return tu_make_tmpdir(g_dir, sizeof g_dir, "vae_test_alloc");
}

static int teardown(void **state)
{
    (void)state;
    unlink(path_of("model.vae"));
    return rmdir(g_dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_allocation_fails_once),
        cmocka_unit_test(test_allocator_back_to_default),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
