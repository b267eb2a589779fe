/* The execution context: workers, the workspace they share out, and the
 * guard that keeps one caller at a time. Every call that runs a model lays
 * the workspace out for itself (cheap: a loop over the layers), so one
 * context can serve several models in turn. */
#ifndef VAE_CONTEXT_H
#define VAE_CONTEXT_H

#include <stdatomic.h>
#include <stddef.h>

#include "../core/pool.h"
#include "model.h"

#define VAE_MAX_THREADS 64
/* Samples per block: batches are cut into blocks of at most this many
 * samples, the unit of work of a worker, whatever the worker count
 * (docs/math.md, "Reproducibility"). */
#define VAE_BLOCK 64
/* Largest batch of one call that processes a whole batch at once. */
#define VAE_MAX_BATCH ((size_t)1 << 20)

/* One worker's share of the workspace for one call. Everything holds
 * `rows` rows: all the worker's blocks of a training pass, one block
 * otherwise. */
typedef struct vae_ws {
    float **acts;               /* acts[i][rows][layers[i]->out] */
    float *z, *std;             /* [rows][latent] */
    float *dout;                /* [rows][input]: dL/d(decoder output), training */
    float *dz;                  /* [rows][latent] (training; else a block's) */
    float *dhead;               /* [rows][2 latent] (training; else a block's) */
    float *ga, *gb;             /* [rows][width], ping-pong for dy/dx (training) */
    size_t width;               /* largest layer input or output, >= 2 latent */
    float *scratch;             /* largest layer scratch for a block */
    float *grad;                /* private gradient of one block (training, workers > 0) */
} vae_ws;

struct vae_context {
    atomic_int busy;            /* 1 while a call runs on the context */
    size_t n_threads;           /* workers asked for */
    vae_pool *pool;             /* n_threads > 1 */
    long pid;                   /* process that started the pool */
    float *mem;                 /* workspace */
    size_t cap;                 /* floats in mem */
    float **ptrs;               /* activation pointers of every worker */
    size_t ptr_cap;
    /* Laid out by vae_ctx_layout for the current call: */
    size_t workers;             /* workers of this call */
    vae_ws ws[VAE_MAX_THREADS];
    float *eps;                 /* [n][latent] noise, shared */
    double *rec, *kl;           /* [n] per-sample terms, shared */
    double *extra;              /* the caller's shared doubles */
    double *loss;               /* [n] per-sample losses of the last vae_elbo_pass */
};

/* Takes the context for one call: VAE_ERR_INVALID when NULL, VAE_ERR_STATE
 * when another call holds it; after fork() restarts the workers. */
int vae_ctx_enter(vae_context *ctx, const char *fn);
void vae_ctx_leave(vae_context *ctx);

/* Lays out (growing if needed) the workspace of a call on model m that cuts
 * n samples into blocks: per worker `slots` blocks of activations (slots 1
 * outside training passes), with the recon-gradient rows and a private
 * gradient slab when train is set, the shared noise and per-sample arrays
 * for `shared` samples, and `extra` more doubles for the caller. Sets
 * ctx->workers to at most the number of blocks. */
int vae_ctx_layout(vae_context *ctx, const vae_model *m, size_t n, int train, size_t shared,
                   size_t extra, const char *fn);
/* Sets ctx->workers for a call with at most max units of work and returns it. */
size_t vae_ctx_use_workers(vae_context *ctx, size_t max);
/* Runs fn(job, w) for w in 0..ctx->workers-1, on the pool or inline. Workers
 * of the pool beyond ctx->workers are called too and must return at once. */
void vae_ctx_run(vae_context *ctx, vae_pool_fn fn, void *job);

/* Blocks of a batch of n: ceil(n / VAE_BLOCK) of nearly equal size. */
static inline size_t vae_blocks(size_t n)
{
    return (n + VAE_BLOCK - 1) / VAE_BLOCK;
}
static inline void vae_block_range(size_t n, size_t nblk, size_t b, size_t *start, size_t *rows)
{
    size_t base = n / nblk, extra = n % nblk;
    *start = b * base + (b < extra ? b : extra);
    *rows = base + (b < extra);
}

/* Layer i's activations of slot k (rows of a block) in worker w's space. */
static inline float *vae_ws_act(const vae_model *m, const vae_ws *w, size_t i, size_t k)
{
    return w->acts[i] + k * VAE_BLOCK * m->layers[i]->out;
}

/* The stacks on one block: x[b][input] -> acts of layers 0..n_enc (the head:
 * [b][mu | logvar]); z[b][latent] -> acts of the decoder layers. */
void vae_forward_encoder(const vae_model *m, const vae_ws *w, size_t k, const float *x,
                         size_t b);
void vae_forward_decoder(const vae_model *m, const vae_ws *w, size_t k, const float *z,
                         size_t b);

/* 1 if every value is finite and, for a Bernoulli model, in [0, 1];
 * else sets the error: VAE_ERR_NUMERIC or VAE_ERR_INVALID. */
int vae_check_input(const vae_model *m, const float *x, size_t n, const char *fn);

#endif
