/* A fixed set of worker threads that run one task at a time together: the
 * caller is worker 0, the pool's threads are workers 1..n-1. Used to split a
 * training step's batch; created outside the hot loop. */
#ifndef VAE_POOL_H
#define VAE_POOL_H

#include <stddef.h>

typedef struct vae_pool vae_pool;
typedef void (*vae_pool_fn)(void *ctx, size_t worker);

/* n >= 2 workers (n - 1 threads). VAE_ERR_NOMEM or VAE_ERR_STATE (threads
 * could not be started) with the message set. */
int vae_pool_create(vae_pool **out, size_t n);
/* Runs fn(ctx, w) for every worker w, w = 0 on the calling thread, and
 * returns when all are done. */
void vae_pool_run(vae_pool *p, vae_pool_fn fn, void *ctx);
void vae_pool_free(vae_pool *p);

#endif
