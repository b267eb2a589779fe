/* The bare cblas_sgemm calls of the 784-400-20 VAE's training step and
 * inference, with the shapes, transpose flags and leading dimensions of
 * lib/nn/dense.c, issued on one GEMM stream or on several at once (one
 * thread each, the BLAS at one thread): the GEMM bounds that vae_bench and
 * vae_bench_sweep set the library's times against. The runner of several
 * streams (gemm_streams_*) takes any work; vae_bench_conv gives it the conv
 * VAE's GEMMs. Nothing here is part of libvae. */
#ifndef VAE_BENCH_GEMM_STREAMS_H
#define VAE_BENCH_GEMM_STREAMS_H

#include <stddef.h>

#include "vae/vae.h"

#define MLP_LAYERS 4
#define BENCH_BLOCK 64      /* samples per block of a context */
#define MAX_STREAMS 64      /* as vae_context_set_threads() */

/* The dense layers of vae_model_create_mlp(784, {400}, 1, 20, ...) in slab
 * order: encoder, head [mu | logvar], decoder. */
typedef struct {
    const char *id;   /* short key for reports */
    const char *name;
    size_t in, out;
    int act;
} mlp_layer;
extern const mlp_layer mlp_layers[MLP_LAYERS];

/* A context cuts n samples into ceil(n/64) blocks of nearly equal size; the
 * first n % blocks blocks take one more sample. */
size_t block_count(size_t n);
size_t block_rows(size_t n, size_t k);
size_t block_start(size_t n, size_t k);

/* GEMM FLOPs (2 B in out per GEMM) of one training step at batch n: forward
 * and dW for every layer, dX for all but the first; and of one forward
 * pass. */
double mlp_step_flops(size_t n);
double mlp_forward_flops(size_t n);

/* Buffers of one layer, room for max_rows; a block at row `off` uses rows
 * off.. of x, y, dz and dx, as the library's blocks use their own rows of
 * the batch. Each stream accumulates into its own dW, as each worker but the
 * first does in the library. */
typedef struct {
    float *x;               /* [rows][in]   input */
    float *w;               /* [out][in]    weights, shared by the streams */
    float *y;               /* [rows][out]  forward output */
    float *dz;              /* [rows][out]  gradient at the pre-activation */
    float *dx;              /* [rows][in]   input gradient */
    float *dw[MAX_STREAMS]; /* [out][in]    weight gradient per stream (beta 1) */
} gemm_layer;

typedef struct {
    gemm_layer layer[MLP_LAYERS];
    size_t max_rows, streams;
} gemm_set;

/* Buffers for batches up to max_rows and `streams` streams (1..64), filled
 * from rng. 0, or -1 when out of memory (a half-made set is freed). */
int gemm_set_create(gemm_set *s, size_t max_rows, size_t streams, vae_rng *rng);
void gemm_set_free(gemm_set *s);

/* Layer l's GEMMs on `rows` rows from row `off` (dW into stream 0's). */
void gemm_forward(const gemm_set *s, int l, size_t off, size_t rows);
void gemm_dw(const gemm_set *s, int l, size_t off, size_t rows, size_t stream);
void gemm_dx(const gemm_set *s, int l, size_t off, size_t rows);

/* The 11 GEMMs of a training step (or the 4 forward GEMMs of inference) on
 * the blocks k = stream, stream + nstreams, ... of a batch of n, block after
 * block, in the order the step issues them: the share of worker `stream` of
 * nstreams. stream 0 of 1 is the whole step on one stream. */
void gemm_step_share(const gemm_set *s, size_t n, size_t stream, size_t nstreams);
void gemm_infer_share(const gemm_set *s, size_t n, size_t stream, size_t nstreams);

/* The library side of the MLP comparisons: vae_model_create_mlp(784,
 * {hidden}, 1, 20, RELU, BERNOULLI, seed 1), a context of `workers` workers,
 * the negative ELBO, Adam with lr 1e-3 and a trainer (seed 7) over them,
 * reserved for batches of `batch` (0: not reserved). Exits on failure. */
typedef struct {
    vae_model *m;
    vae_context *ctx;
    vae_elbo *e;
    vae_optimizer *opt;
    vae_trainer *tr;
} mlp_trainer;
void mlp_trainer_create(mlp_trainer *r, size_t hidden, size_t workers, size_t batch);
void mlp_trainer_free(mlp_trainer *r);

/* The share of stream `stream` of nstreams of job `job` at batch n; `work`
 * is what the runner was created with. */
typedef void (*gemm_share_fn)(const void *work, int job, size_t n, size_t stream,
                              size_t nstreams);

/* Jobs of gemm_set_share, whose work is a gemm_set. */
enum { GEMM_JOB_STEP, GEMM_JOB_INFER };
void gemm_set_share(const void *set, int job, size_t n, size_t stream, size_t nstreams);

/* `streams` streams: the calling thread and streams - 1 helper threads,
 * which sleep between runs. */
typedef struct gemm_streams gemm_streams;

/* 0, or -1 when a thread could not be started. work is borrowed. */
int gemm_streams_create(gemm_streams **out, size_t streams, gemm_share_fn share,
                        const void *work);
/* Runs every stream's share of the job at batch n at once and returns the
 * ms from the moment all streams are released together (after the helpers
 * have woken up) until the last one finishes. */
double gemm_streams_run(gemm_streams *st, int job, size_t n);
void gemm_streams_free(gemm_streams *st);

#endif
