/* Helpers of the programs under tests/mpi, which run under mpirun: checks
 * that count failures on this rank and say which rank failed, a small
 * model and trainer, synthetic data, and the record of a run (losses and
 * parameters) to compare bit for bit. Each program exits 0 when every check
 * passed on every rank, 1 otherwise. */
#ifndef VAE_TESTS_MPI_TEST_H
#define VAE_TESTS_MPI_TEST_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vae/vae_mpi.h>

static int mt_rank = -1, mt_failures;

/* A failed check: printed with this rank, and counted. */
static inline void mt_fail(const char *file, int line, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "rank %d: %s:%d: %s\n", mt_rank, file, line, msg);
    fflush(stderr);
    mt_failures++;
}

#define MT_CHECK(cond, ...)                                                                       \
    do {                                                                                          \
        if (!(cond))                                                                              \
            mt_fail(__FILE__, __LINE__, __VA_ARGS__);                                             \
    } while (0)

/* A libvae call that must succeed. */
#define MT_OK(call)                                                                               \
    do {                                                                                          \
        int mt_rc_ = (call);                                                                      \
        if (mt_rc_ != VAE_OK)                                                                     \
            mt_fail(__FILE__, __LINE__, "%s returned %d (%s): %s | %s", #call, mt_rc_,           \
                    vae_strerror(mt_rc_), vae_last_error(), vae_mpi_last_error());                \
    } while (0)

/* A libvae_mpi call that must return `expected` with a message naming fn
 * and containing each of the needles (NULL-terminated list). */
static inline void mt_expect(int rc, int expected, const char *call, const char *file, int line,
                      const char *fn, ...)
{
    const char *msg = vae_mpi_last_error();
    if (rc != expected) {
        mt_fail(file, line, "%s returned %d (%s), expected %d (%s); message \"%s\"", call, rc,
                vae_strerror(rc), expected, vae_strerror(expected), msg);
        return;
    }
    if (expected == VAE_OK)
        return;
    if (!strstr(msg, fn))
        mt_fail(file, line, "%s: message \"%s\" does not name %s", call, msg, fn);
    va_list ap;
    va_start(ap, fn);
    for (const char *needle; (needle = va_arg(ap, const char *)) != NULL;)
        if (!strstr(msg, needle))
            mt_fail(file, line, "%s: message \"%s\" does not mention \"%s\"", call, msg, needle);
    va_end(ap);
}

/* Plants a known message first, so that a failure without a message of its
 * own is caught. */
#define MT_EXPECT(call, expected, fn, ...)                                                        \
    do {                                                                                          \
        (void)vae_mpi_set_chunk_bytes(NULL, 1);                                                   \
        int mt_rc_ = (call);                                                                      \
        mt_expect(mt_rc_, (expected), #call, __FILE__, __LINE__, (fn), __VA_ARGS__, (char *)0);   \
    } while (0)

/* Whether every rank's text equals rank 0's (a collective on comm). */
static inline int mt_same_everywhere(MPI_Comm comm, const char *text)
{
    char mine[512], root[512];
    memset(mine, 0, sizeof mine);
    strncpy(mine, text, sizeof mine - 1);
    memcpy(root, mine, sizeof root);
    MPI_Bcast(root, (int)sizeof root, MPI_CHAR, 0, comm);
    int same = !memcmp(mine, root, sizeof mine), all = 0;
    MPI_Allreduce(&same, &all, 1, MPI_INT, MPI_MIN, comm);
    return all;
}

/* The end of a program: every rank's failures summed; rank 0 reports. */
static inline int mt_finish(const char *name)
{
    int total = 0, size = 1;
    MPI_Allreduce(&mt_failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (mt_rank == 0) {
        if (total)
            printf("%s: %d failed check%s over %d rank%s\n", name, total, total > 1 ? "s" : "",
                   size, size > 1 ? "s" : "");
        else
            printf("%s: every check passed on %d rank%s\n", name, size, size > 1 ? "s" : "");
    }
    return total ? 1 : 0;
}

/* ---- data and models -------------------------------------------------------------- */

enum { MT_COUNT = 533, MT_DIM = 16 };

static float mt_x[MT_COUNT * MT_DIM];

/* Binary data from a generator of its own: the same on every rank. */
static inline void mt_make_data(void)
{
    uint64_t s = 0x2545F4914F6CDD1Du;
    for (size_t i = 0; i < MT_COUNT * MT_DIM; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        mt_x[i] = (s >> 11) % 100 < 35 ? 1.0f : 0.0f;
    }
}

typedef struct mt_run {
    vae_model *m;
    vae_elbo *e;
    vae_optimizer *opt;
    vae_context *ctx;
    vae_trainer *t;
    vae_dataset *ds;
} mt_run;

/* A built model: an MLP 16-24-3 (tanh), or with conv a 1x4x4 convolution
 * encoder and a transposed-convolution decoder; Bernoulli likelihood. */
static inline vae_model *mt_model(int conv)
{
    vae_model *m = NULL;
    if (conv) {
        vae_layer *l = NULL;
        MT_OK(vae_model_create(&m, MT_DIM, 3, VAE_LIKELIHOOD_BERNOULLI));
        MT_OK(vae_layer_conv2d_create(&l, 1, 4, 4, 3, 3, 3, 1, 1, VAE_ACT_RELU));
        MT_OK(vae_model_add_encoder_layer(m, &l));
        MT_OK(vae_layer_dense_create(&l, 3, 48, VAE_ACT_RELU));
        MT_OK(vae_model_add_decoder_layer(m, &l));
        MT_OK(vae_layer_conv2d_transpose_create(&l, 3, 4, 4, 1, 3, 3, 1, 1, 0,
                                                VAE_ACT_IDENTITY));
        MT_OK(vae_model_add_decoder_layer(m, &l));
        MT_OK(vae_model_build(m, 13));
    } else {
        const size_t hidden[1] = {24};
        MT_OK(vae_model_create_mlp(&m, MT_DIM, hidden, 1, 3, VAE_ACT_TANH,
                                   VAE_LIKELIHOOD_BERNOULLI, 13));
    }
    return m;
}

/* Objective, Adam (lr 3e-3), a context of `workers` and a trainer over m
 * (taken), and the dataset of mt_x. */
static inline mt_run mt_make_run(vae_model *m, size_t workers)
{
    mt_run s;
    memset(&s, 0, sizeof s);
    s.m = m;
    MT_OK(vae_dataset_from_floats(&s.ds, mt_x, MT_COUNT, MT_DIM, NULL));
    MT_OK(vae_elbo_create(&s.e));
    MT_OK(vae_optimizer_create(&s.opt, VAE_OPTIMIZER_ADAM));
    MT_OK(vae_optimizer_set_param(s.opt, VAE_OPT_LR, 3e-3));
    MT_OK(vae_context_create(&s.ctx));
    MT_OK(vae_context_set_threads(s.ctx, workers));
    MT_OK(vae_trainer_create(&s.t, s.m, s.e, s.opt, s.ctx, 77));
    return s;
}

static inline void mt_free_run(mt_run *s)
{
    vae_trainer_free(s->t);
    vae_context_free(s->ctx);
    vae_optimizer_free(s->opt);
    vae_elbo_free(s->e);
    vae_model_free(s->m);
    vae_dataset_free(s->ds);
    memset(s, 0, sizeof *s);
}

/* ---- records of runs ------------------------------------------------------------------ */

enum { MT_MAX_LOSSES = 256 };

/* What a run reports and ends with: losses (loss, recon, kl per step or
 * epoch, in order), counters and the parameters. Plain bytes, so that it
 * can be broadcast, written and compared with memcmp. */
typedef struct mt_record {
    double loss[MT_MAX_LOSSES][3];
    uint64_t n_loss, steps, epochs, n_params;
    float params[4096];
} mt_record;

static inline void mt_note(mt_record *r, const vae_epoch_stats *st)
{
    if (r->n_loss < MT_MAX_LOSSES) {
        r->loss[r->n_loss][0] = st->loss;
        r->loss[r->n_loss][1] = st->recon;
        r->loss[r->n_loss][2] = st->kl;
    }
    r->n_loss++;
}

static inline void mt_finish_record(mt_record *r, const mt_run *s)
{
    size_t n = 0;
    const float *p = vae_model_params(s->m, &n);
    MT_CHECK(n <= sizeof r->params / sizeof *r->params, "%zu parameters do not fit", n);
    if (n > sizeof r->params / sizeof *r->params)
        n = 0;
    r->n_params = n;
    if (n)
        memcpy(r->params, p, n * sizeof *p);
    r->steps = vae_trainer_steps(s->t);
    r->epochs = vae_trainer_epochs(s->t);
}

/* Compares a run with the reference bit for bit; reports the first
 * difference. */
static inline void mt_compare(const mt_record *got, const mt_record *want, const char *what)
{
    MT_CHECK(got->n_loss == want->n_loss, "%s: %llu losses, the reference has %llu", what,
             (unsigned long long)got->n_loss, (unsigned long long)want->n_loss);
    for (uint64_t k = 0; k < got->n_loss && k < want->n_loss && k < MT_MAX_LOSSES; k++) {
        if (memcmp(got->loss[k], want->loss[k], sizeof got->loss[k])) {
            mt_fail(__FILE__, __LINE__, "%s: loss %llu is %.17g (recon %.17g, kl %.17g), the "
                                        "reference %.17g (%.17g, %.17g)",
                    what, (unsigned long long)k, got->loss[k][0], got->loss[k][1],
                    got->loss[k][2], want->loss[k][0], want->loss[k][1], want->loss[k][2]);
            break;
        }
    }
    MT_CHECK(got->steps == want->steps && got->epochs == want->epochs,
             "%s: %llu steps and %llu epochs, the reference %llu and %llu", what,
             (unsigned long long)got->steps, (unsigned long long)got->epochs,
             (unsigned long long)want->steps, (unsigned long long)want->epochs);
    MT_CHECK(got->n_params == want->n_params, "%s: %llu parameters, the reference has %llu",
             what, (unsigned long long)got->n_params, (unsigned long long)want->n_params);
    for (uint64_t i = 0; i < got->n_params && got->n_params == want->n_params; i++) {
        if (memcmp(&got->params[i], &want->params[i], sizeof *got->params)) {
            mt_fail(__FILE__, __LINE__, "%s: parameter %llu is %.9g, the reference %.9g", what,
                    (unsigned long long)i, got->params[i], want->params[i]);
            break;
        }
    }
}

#endif
