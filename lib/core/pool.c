#include <pthread.h>
#include <stdlib.h>

#include "core.h"
#include "pool.h"

struct vae_pool {
    pthread_mutex_t lock;
    pthread_cond_t start, done;
    size_t n;                /* workers, the caller included */
    pthread_t *threads;      /* n - 1 */
    size_t started;          /* threads running */
    unsigned long generation;/* bumped for every task */
    size_t pending;          /* threads still working on the current task */
    int quit;
    vae_pool_fn fn;
    void *ctx;
};

typedef struct worker_arg {
    vae_pool *pool;
    size_t index;
} worker_arg;

static void *worker_main(void *arg)
{
    vae_pool *p = ((worker_arg *)arg)->pool;
    size_t index = ((worker_arg *)arg)->index;
    free(arg);
    /* Every task has a generation number above 0; one posted before this
     * thread first takes the lock must still be seen as new. */
    unsigned long seen = 0;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->quit && p->generation == seen)
            pthread_cond_wait(&p->start, &p->lock);
        if (p->quit)
            break;
        seen = p->generation;
        vae_pool_fn fn = p->fn;
        void *ctx = p->ctx;
        pthread_mutex_unlock(&p->lock);
        fn(ctx, index);
        pthread_mutex_lock(&p->lock);
        if (--p->pending == 0)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

void vae_pool_free(vae_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->quit = 1;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->lock);
    for (size_t i = 0; i < p->started; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->start);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->lock);
    free(p->threads);
    free(p);
}

int vae_pool_create(vae_pool **out, size_t n)
{
    *out = NULL;
    vae_pool *p = calloc(1, sizeof *p);
    pthread_t *threads = p ? calloc(n - 1, sizeof *threads) : NULL;
    if (!p || !threads) {
        free(p);
        return vae_fail(VAE_ERR_NOMEM, "out of memory for a pool of %zu threads", n);
    }
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        free(threads);
        free(p);
        return vae_fail(VAE_ERR_STATE, "cannot create a mutex");
    }
    if (pthread_cond_init(&p->start, NULL) != 0) {
        pthread_mutex_destroy(&p->lock);
        free(threads);
        free(p);
        return vae_fail(VAE_ERR_STATE, "cannot create a condition variable");
    }
    if (pthread_cond_init(&p->done, NULL) != 0) {
        pthread_cond_destroy(&p->start);
        pthread_mutex_destroy(&p->lock);
        free(threads);
        free(p);
        return vae_fail(VAE_ERR_STATE, "cannot create a condition variable");
    }
    p->n = n;
    p->threads = threads;
    for (size_t i = 1; i < n; i++) {
        worker_arg *a = malloc(sizeof *a);
        if (!a) {
            vae_pool_free(p);
            return vae_fail(VAE_ERR_NOMEM, "out of memory for a pool of %zu threads", n);
        }
        a->pool = p;
        a->index = i;
        if (pthread_create(&threads[i - 1], NULL, worker_main, a) != 0) {
            free(a);
            vae_pool_free(p);
            return vae_fail(VAE_ERR_STATE, "cannot start thread %zu of %zu", i, n - 1);
        }
        p->started++;
    }
    *out = p;
    return VAE_OK;
}

void vae_pool_run(vae_pool *p, vae_pool_fn fn, void *ctx)
{
    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->ctx = ctx;
    p->pending = p->n - 1;
    p->generation++;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->lock);
    fn(ctx, 0);
    pthread_mutex_lock(&p->lock);
    while (p->pending > 0)
        pthread_cond_wait(&p->done, &p->lock);
    pthread_mutex_unlock(&p->lock);
}
