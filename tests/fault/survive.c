/* Survival of an allocation failure anywhere in the process.
 *
 * Run by tests/fault/survive.sh with tests/fault/fail_malloc.c preloaded,
 * which fails the N-th allocation of the whole process (libvae, the BLAS,
 * libgomp, the C library) counted from fail_malloc_arm(). The scenario goes
 * through the public API only: an MLP and a small conv model, a context
 * with 2 workers (BLAS threads 1), a trainer per model and a few steps,
 * vae_encode, vae_decode and vae_log_likelihood, vae_model_save and
 * vae_model_load in a temporary directory, then everything freed.
 *
 * Every call's status is checked. A failing call must return VAE_ERR_NOMEM
 * (VAE_ERR_IO also for save and load: fopen may fail for want of memory;
 * VAE_ERR_STATE also for vae_context_set_threads, its documented status
 * when a thread cannot be started) with a message; the failure is one-shot, so the same call is then retried
 * and must succeed. At the end vae_allocations() must be 0 and the program
 * prints one line:
 *
 *   survive: calls=C hit=H failed=NAME status=S checksum=X
 *
 * C: allocating calls after arming; H: 1 when the N-th was reached; NAME
 * and S: the libvae call that reported the failure, if any; X: a hash of
 * every result (parameters after training, codes, decodings,
 * log-likelihoods, the loaded models' parameters), which must equal that of
 * the run without failure: an allocation failure absorbed somewhere must
 * not change a result. Exit 0 when every check held, 1 otherwise; dying
 * from a signal or exiting from inside a library is what the test is for.
 *
 * Without the preload it runs the scenario once, without failure. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vae/vae.h>

static void (*arm)(void);
static void (*disarm)(void);
static unsigned long (*ncalls)(void);
static int (*nhit)(void);

/* ---- bookkeeping, no allocation while armed -------------------------- */
static const char *failed_name = "-";
static int failed_status;
static char failed_msg[512];
static int bad;        /* a check failed */
static char bad_msg[768];
static uint64_t hash = 1469598103934665603ull;

static void mix(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        hash = (hash ^ b[i]) * 1099511628211ull;
}

static void set_bad(const char *name, int rc, const char *why)
{
    if (!bad)
        snprintf(bad_msg, sizeof bad_msg, "%s: %s (status %d: %s)", name, why, rc,
                 vae_last_error());
    bad = 1;
}

/* A failed call: the status must be VAE_ERR_NOMEM, or `also` when that is
 * not 0. 0 when it is. */
static int note(const char *name, int rc, int also)
{
    if (rc == VAE_ERR_NOMEM || (also && rc == also)) {
        if (failed_status == 0) {
            failed_name = name;
            failed_status = rc;
            snprintf(failed_msg, sizeof failed_msg, "%s", vae_last_error());
        } else {
            set_bad(name, rc, "a second failure from a one-shot allocation failure");
            return -1;
        }
        if (!vae_last_error()[0]) {
            set_bad(name, rc, "no message");
            return -1;
        }
        return 0;
    }
    set_bad(name, rc, "unexpected status");
    return -1;
}

/* Runs expr; after a clean failure runs it once more, which must succeed.
 * Jumps to `out` when anything is wrong. */
#define DO(name, also, expr)                                                  \
    do {                                                                    \
        int rc_ = (expr);                                                   \
        if (rc_) {                                                          \
            if (note(name, rc_, also))                                        \
                goto out;                                                   \
            rc_ = (expr);                                                   \
            if (rc_) {                                                      \
                set_bad(name, rc_, "failed again when retried");            \
                goto out;                                                   \
            }                                                               \
        }                                                                   \
    } while (0)

enum { D = 36, L = 2, B = 8 };

/* Creates a layer and adds it, as one retryable unit (a failed add frees
 * the layer). */
static int add_layer(vae_model *m, int encoder, int kind)
{
    vae_layer *l = NULL;
    int rc;
    switch (kind) {
    case 0: rc = vae_layer_conv2d_create(&l, 1, 6, 6, 4, 3, 3, 2, 1, VAE_ACT_ELU); break;
    case 1: rc = vae_layer_dense_create(&l, 36, 8, VAE_ACT_TANH); break;
    case 2: rc = vae_layer_dense_create(&l, L, 36, VAE_ACT_RELU); break;
    default:
        rc = vae_layer_conv2d_transpose_create(&l, 4, 3, 3, 1, 4, 4, 2, 1, 0, VAE_ACT_IDENTITY);
    }
    if (rc)
        return rc;
    rc = encoder ? vae_model_add_encoder_layer(m, &l) : vae_model_add_decoder_layer(m, &l);
    vae_layer_free(l); /* NULL in every case; harmless */
    return rc;
}

static void mix_model(vae_model *m)
{
    size_t n = 0;
    float *p = vae_model_params(m, &n);
    if (p)
        mix(p, n * sizeof *p);
}

int main(void)
{
    arm = (void (*)(void))dlsym(RTLD_DEFAULT, "fail_malloc_arm");
    disarm = (void (*)(void))dlsym(RTLD_DEFAULT, "fail_malloc_disarm");
    ncalls = (unsigned long (*)(void))dlsym(RTLD_DEFAULT, "fail_malloc_calls");
    nhit = (int (*)(void))dlsym(RTLD_DEFAULT, "fail_malloc_hit");

    char dir[] = "/tmp/vae_survive_XXXXXX", path_mlp[64], path_conv[64];
    if (!mkdtemp(dir)) {
        perror("survive: mkdtemp");
        return 1;
    }
    snprintf(path_mlp, sizeof path_mlp, "%s/mlp.vae", dir);
    snprintf(path_conv, sizeof path_conv, "%s/conv.vae", dir);

    static float x[B * D], mu[B * L], logvar[B * L], dec[B * D];
    static double ll[B];
    for (size_t i = 0; i < B * D; i++)
        x[i] = (float)((i * 37u + 11u) % 101u) / 100.0f;

    vae_model *mlp = NULL, *conv = NULL, *mlp2 = NULL, *conv2 = NULL;
    vae_context *ctx = NULL;
    vae_elbo *elbo = NULL;
    vae_optimizer *opt = NULL;
    vae_trainer *t1 = NULL, *t2 = NULL;
    vae_rng *rng = NULL;
    const size_t hidden[1] = {8};

    if (vae_blas_set_threads(1)) {
        set_bad("vae_blas_set_threads", -1, "failed");
        goto out;
    }
    if (arm)
        arm();

    DO("vae_model_create_mlp", 0,
       vae_model_create_mlp(&mlp, D, hidden, 1, L, VAE_ACT_RELU, VAE_LIKELIHOOD_BERNOULLI, 7));
    /* The conv model of tests/test_alloc.c: Conv2D 1x6x6 -> 4x3x3, dense
     * 36 -> 8, head; decoder dense 2 -> 36, ConvTranspose2D -> 1x6x6. */
    DO("vae_model_create", 0, vae_model_create(&conv, D, L, VAE_LIKELIHOOD_BERNOULLI));
    DO("conv layer 0", 0, add_layer(conv, 1, 0));
    DO("conv layer 1", 0, add_layer(conv, 1, 1));
    DO("conv layer 2", 0, add_layer(conv, 0, 2));
    DO("conv layer 3", 0, add_layer(conv, 0, 3));
    DO("vae_model_build", 0, vae_model_build(conv, 9));

    DO("vae_context_create", 0, vae_context_create(&ctx));
    /* VAE_ERR_STATE is its documented status when a thread cannot be
     * started: pthread_create fails with EAGAIN when glibc cannot allocate
     * the thread's TLS block, as when a thread limit is reached. */
    DO("vae_context_set_threads", VAE_ERR_STATE, vae_context_set_threads(ctx, 2));
    DO("vae_elbo_create", 0, vae_elbo_create(&elbo));
    DO("vae_optimizer_create", 0, vae_optimizer_create(&opt, VAE_OPTIMIZER_ADAM));
    DO("vae_trainer_create", 0, vae_trainer_create(&t1, mlp, elbo, opt, ctx, 1));
    DO("vae_trainer_create", 0, vae_trainer_create(&t2, conv, elbo, opt, ctx, 2));
    for (int s = 0; s < 3; s++) {
        vae_epoch_stats st = {sizeof st};
        DO("vae_trainer_step", 0, vae_trainer_step(t1, x, B, &st));
        mix(&st.loss, sizeof st.loss);
        DO("vae_trainer_step", 0, vae_trainer_step(t2, x, B, &st));
        mix(&st.loss, sizeof st.loss);
    }
    mix_model(mlp);
    mix_model(conv);

    DO("vae_rng_create", 0, vae_rng_create(&rng, 5));
    vae_model *ms[2] = {mlp, conv};
    for (int i = 0; i < 2; i++) {
        DO("vae_encode", 0, vae_encode(ctx, ms[i], x, B, mu, logvar));
        mix(mu, sizeof mu);
        mix(logvar, sizeof logvar);
        DO("vae_decode", 0, vae_decode(ctx, ms[i], mu, B, dec));
        mix(dec, sizeof dec);
        DO("vae_log_likelihood", 0, vae_log_likelihood(ctx, ms[i], x, B, 4, rng, ll));
        mix(ll, sizeof ll);
    }

    DO("vae_model_save", VAE_ERR_IO, vae_model_save(mlp, path_mlp));
    DO("vae_model_save", VAE_ERR_IO, vae_model_save(conv, path_conv));
    DO("vae_model_load", VAE_ERR_IO, vae_model_load(&mlp2, path_mlp));
    DO("vae_model_load", VAE_ERR_IO, vae_model_load(&conv2, path_conv));
    mix_model(mlp2);
    mix_model(conv2);
    DO("vae_encode", 0, vae_encode(ctx, conv2, x, B, mu, logvar));
    mix(mu, sizeof mu);

out:
    vae_trainer_free(t1);
    vae_trainer_free(t2);
    vae_optimizer_free(opt);
    vae_elbo_free(elbo);
    vae_context_free(ctx);
    vae_rng_free(rng);
    vae_model_free(mlp);
    vae_model_free(conv);
    vae_model_free(mlp2);
    vae_model_free(conv2);
    if (disarm)
        disarm();
    unsigned long c = ncalls ? ncalls() : 0;
    int h = nhit ? nhit() : 0;

    if (!bad && vae_allocations() != 0) {
        snprintf(bad_msg, sizeof bad_msg, "vae_allocations() is %zu after freeing everything",
                 vae_allocations());
        bad = 1;
    }
    unlink(path_mlp);
    unlink(path_conv);
    rmdir(dir);
    fprintf(stderr, "survive: calls=%lu hit=%d failed=%s status=%d checksum=%016llx\n", c, h,
            failed_name, failed_status, (unsigned long long)hash);
    if (failed_status)
        fprintf(stderr, "survive: %s said: %s\n", failed_name, failed_msg);
    if (bad)
        fprintf(stderr, "survive: FAILED: %s\n", bad_msg);
    return bad ? 1 : 0;
}
