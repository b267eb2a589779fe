/* Bare GEMMs of the MLP VAE on one or several streams (gemm_streams.h). */
#define _POSIX_C_SOURCE 200809L

#include "gemm_streams.h"

#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "report.h"

const mlp_layer mlp_layers[MLP_LAYERS] = {
    {"enc", "enc 784->400 relu", 784, 400, VAE_ACT_RELU},
    {"head", "head 400->40", 400, 40, VAE_ACT_IDENTITY},
    {"dec1", "dec 20->400 relu", 20, 400, VAE_ACT_RELU},
    {"dec2", "dec 400->784", 400, 784, VAE_ACT_IDENTITY},
};

size_t block_count(size_t n)
{
    return (n + BENCH_BLOCK - 1) / BENCH_BLOCK;
}

size_t block_rows(size_t n, size_t k)
{
    size_t nb = block_count(n);
    return n / nb + (k < n % nb ? 1 : 0);
}

size_t block_start(size_t n, size_t k)
{
    size_t nb = block_count(n), q = n / nb, r = n % nb;
    return k * q + (k < r ? k : r);
}

double mlp_step_flops(size_t n)
{
    double f = 0.0;
    for (int l = 0; l < MLP_LAYERS; l++)
        f += 2.0 * (double)n * (double)(mlp_layers[l].in * mlp_layers[l].out) *
             (l == 0 ? 2.0 : 3.0);
    return f;
}

double mlp_forward_flops(size_t n)
{
    double f = 0.0;
    for (int l = 0; l < MLP_LAYERS; l++)
        f += 2.0 * (double)n * (double)(mlp_layers[l].in * mlp_layers[l].out);
    return f;
}

void mlp_trainer_create(mlp_trainer *r, size_t hidden, size_t workers, size_t batch)
{
    memset(r, 0, sizeof *r);
    check(vae_model_create_mlp(&r->m, 784, &hidden, 1, 20, VAE_ACT_RELU,
                               VAE_LIKELIHOOD_BERNOULLI, 1),
          "vae_model_create_mlp");
    check(vae_context_create(&r->ctx), "vae_context_create");
    if (workers > 1)
        check(vae_context_set_threads(r->ctx, workers), "vae_context_set_threads");
    check(vae_elbo_create(&r->e), "vae_elbo_create");
    check(vae_optimizer_create(&r->opt, VAE_OPTIMIZER_ADAM), "vae_optimizer_create");
    check(vae_optimizer_set_param(r->opt, VAE_OPT_LR, 1e-3), "vae_optimizer_set_param");
    check(vae_trainer_create(&r->tr, r->m, r->e, r->opt, r->ctx, 7), "vae_trainer_create");
    if (batch)
        check(vae_trainer_reserve(r->tr, batch), "vae_trainer_reserve");
}

void mlp_trainer_free(mlp_trainer *r)
{
    vae_trainer_free(r->tr);
    vae_optimizer_free(r->opt);
    vae_elbo_free(r->e);
    vae_context_free(r->ctx);
    vae_model_free(r->m);
    memset(r, 0, sizeof *r);
}

/* n floats uniform in [-a, a), or NULL. */
static float *random_floats(vae_rng *rng, size_t n, float a)
{
    float *p = malloc(n * sizeof *p);
    if (!p || vae_rng_uniform(rng, p, n) != VAE_OK) {
        free(p);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        p[i] = a * (2.0f * p[i] - 1.0f);
    return p;
}

int gemm_set_create(gemm_set *s, size_t max_rows, size_t streams, vae_rng *rng)
{
    memset(s, 0, sizeof *s);
    if (streams < 1 || streams > MAX_STREAMS)
        return -1;
    s->max_rows = max_rows;
    s->streams = streams;
    int ok = 1;
    for (int l = 0; l < MLP_LAYERS; l++) {
        size_t in = mlp_layers[l].in, out = mlp_layers[l].out;
        gemm_layer *g = &s->layer[l];
        ok &= (g->x = random_floats(rng, max_rows * in, 1.0f)) != NULL;
        ok &= (g->w = random_floats(rng, out * in, 0.05f)) != NULL;
        ok &= (g->y = random_floats(rng, max_rows * out, 0.0f)) != NULL;
        ok &= (g->dz = random_floats(rng, max_rows * out, 0.01f)) != NULL;
        ok &= (g->dx = random_floats(rng, max_rows * in, 0.0f)) != NULL;
        for (size_t t = 0; t < streams; t++)
            ok &= (g->dw[t] = random_floats(rng, out * in, 0.0f)) != NULL;
    }
    if (!ok) {
        gemm_set_free(s);
        return -1;
    }
    return 0;
}

void gemm_set_free(gemm_set *s)
{
    for (int l = 0; l < MLP_LAYERS; l++) {
        gemm_layer *g = &s->layer[l];
        free(g->x);
        free(g->w);
        free(g->y);
        free(g->dz);
        free(g->dx);
        for (size_t t = 0; t < MAX_STREAMS; t++)
            free(g->dw[t]);
    }
    memset(s, 0, sizeof *s);
}

/* Y = X.W^T (NoTrans, Trans, beta 0). */
void gemm_forward(const gemm_set *s, int l, size_t off, size_t rows)
{
    const gemm_layer *g = &s->layer[l];
    int in = (int)mlp_layers[l].in, out = (int)mlp_layers[l].out;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, out, in, 1.0f,
                g->x + off * (size_t)in, in, g->w, in, 0.0f, g->y + off * (size_t)out, out);
}

/* dW += dZ^T.X (Trans, NoTrans, beta 1). */
void gemm_dw(const gemm_set *s, int l, size_t off, size_t rows, size_t stream)
{
    const gemm_layer *g = &s->layer[l];
    int in = (int)mlp_layers[l].in, out = (int)mlp_layers[l].out;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, (int)rows, 1.0f,
                g->dz + off * (size_t)out, out, g->x + off * (size_t)in, in, 1.0f,
                g->dw[stream], in);
}

/* dX = dZ.W (NoTrans, NoTrans, beta 0). */
void gemm_dx(const gemm_set *s, int l, size_t off, size_t rows)
{
    const gemm_layer *g = &s->layer[l];
    int in = (int)mlp_layers[l].in, out = (int)mlp_layers[l].out;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, in, out, 1.0f,
                g->dz + off * (size_t)out, out, g->w, in, 0.0f, g->dx + off * (size_t)in, in);
}

void gemm_step_share(const gemm_set *s, size_t n, size_t stream, size_t nstreams)
{
    for (size_t k = stream; k < block_count(n); k += nstreams) {
        size_t off = block_start(n, k), b = block_rows(n, k);
        for (int l = 0; l < MLP_LAYERS; l++)
            gemm_forward(s, l, off, b);
        for (int l = MLP_LAYERS - 1; l >= 0; l--) {
            gemm_dw(s, l, off, b, stream);
            if (l > 0)
                gemm_dx(s, l, off, b);
        }
    }
}

void gemm_infer_share(const gemm_set *s, size_t n, size_t stream, size_t nstreams)
{
    for (size_t k = stream; k < block_count(n); k += nstreams)
        for (int l = 0; l < MLP_LAYERS; l++)
            gemm_forward(s, l, block_start(n, k), block_rows(n, k));
}

/* ---- several streams at once ------------------------------------------ */

typedef struct {
    struct gemm_streams *st;
    size_t stream;
} helper_arg;

struct gemm_streams {
    gemm_share_fn share;
    const void *work;
    size_t streams, n_helpers;
    pthread_t thread[MAX_STREAMS];
    helper_arg arg[MAX_STREAMS];
    /* wake-up of the sleeping helpers */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned long gen; /* bumped per run, under mu */
    int quit;
    int job;
    size_t n;
    /* spinning barrier of all streams around the timed part */
    atomic_uint arrived, phase;
};

static void barrier(gemm_streams *st)
{
    unsigned p = atomic_load(&st->phase);
    if (atomic_fetch_add(&st->arrived, 1) + 1 == st->streams) {
        atomic_store(&st->arrived, 0);
        atomic_store(&st->phase, p + 1);
    } else {
        while (atomic_load(&st->phase) == p)
            ;
    }
}

void gemm_set_share(const void *set, int job, size_t n, size_t stream, size_t nstreams)
{
    if (job == GEMM_JOB_STEP)
        gemm_step_share(set, n, stream, nstreams);
    else
        gemm_infer_share(set, n, stream, nstreams);
}

static void *helper_main(void *p)
{
    helper_arg *a = p;
    gemm_streams *st = a->st;
    unsigned long seen = 0;
    for (;;) {
        pthread_mutex_lock(&st->mu);
        while (st->gen == seen && !st->quit)
            pthread_cond_wait(&st->cv, &st->mu);
        seen = st->gen;
        int quit = st->quit;
        int job = st->job;
        size_t n = st->n;
        pthread_mutex_unlock(&st->mu);
        if (quit)
            return NULL;
        barrier(st);
        st->share(st->work, job, n, a->stream, st->streams);
        barrier(st);
    }
}

int gemm_streams_create(gemm_streams **out, size_t streams, gemm_share_fn share,
                        const void *work)
{
    *out = NULL;
    if (streams < 1 || streams > MAX_STREAMS)
        return -1;
    gemm_streams *st = calloc(1, sizeof *st);
    if (!st)
        return -1;
    st->share = share;
    st->work = work;
    st->streams = streams;
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cv, NULL);
    atomic_init(&st->arrived, 0);
    atomic_init(&st->phase, 0);
    for (size_t t = 1; t < streams; t++) {
        helper_arg *a = &st->arg[t];
        a->st = st;
        a->stream = t;
        if (pthread_create(&st->thread[st->n_helpers], NULL, helper_main, a) != 0)
            break;
        st->n_helpers++;
    }
    if (st->n_helpers + 1 != streams) {
        gemm_streams_free(st);
        return -1;
    }
    *out = st;
    return 0;
}

double gemm_streams_run(gemm_streams *st, int job, size_t n)
{
    if (st->n_helpers == 0) {
        double t0 = now_ms();
        st->share(st->work, job, n, 0, 1);
        return now_ms() - t0;
    }
    pthread_mutex_lock(&st->mu);
    st->job = job;
    st->n = n;
    st->gen++;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
    barrier(st);
    double t0 = now_ms();
    st->share(st->work, job, n, 0, st->streams);
    barrier(st);
    return now_ms() - t0;
}

void gemm_streams_free(gemm_streams *st)
{
    if (!st)
        return;
    pthread_mutex_lock(&st->mu);
    st->quit = 1;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
    for (size_t t = 0; t < st->n_helpers; t++)
        pthread_join(st->thread[t], NULL);
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->cv);
    free(st);
}
