/* Workers spin briefly on an atomic task counter before sleeping on a
 * condition variable: a training step hands out three or four tasks a few
 * milliseconds apart, and waking a sleeping thread costs tens of
 * microseconds each time (more on a virtual machine whose idle CPU was
 * descheduled), while a short spin costs nothing when tasks come quickly and
 * gives the CPU back soon when they stop. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "pool.h"

/* About 0.1-0.3 ms of pause instructions on current x86 cores. */
#define POOL_SPINS 4000

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

struct vae_pool {
    pthread_mutex_t lock;
    pthread_cond_t start, done;
    size_t n;                /* workers, the caller included */
    struct worker *workers;  /* n - 1 threads */
    size_t started;          /* threads running */
    atomic_ulong generation; /* bumped for every task, under lock */
    atomic_size_t pending;   /* threads still working on the current task */
    atomic_int quit;
    vae_pool_fn fn;          /* published by the release of generation */
    void *ctx;
};

/* A thread and what it is started with, kept in the pool: no thread
 * allocates or frees anything, so every block of the library is allocated
 * and freed by the calls of its caller (vae_allocations() stays exact). */
typedef struct worker {
    pthread_t thread;
    vae_pool *pool;
    size_t index;
} worker;

static void *worker_main(void *arg)
{
    vae_pool *p = ((worker *)arg)->pool;
    size_t index = ((worker *)arg)->index;
    /* Every task has a generation number above 0; one posted before this
     * thread first looks must still be seen as new. */
    unsigned long seen = 0;
    for (;;) {
        unsigned long g = atomic_load_explicit(&p->generation, memory_order_acquire);
        for (int s = 0; g == seen && s < POOL_SPINS && !atomic_load(&p->quit); s++) {
            cpu_relax();
            g = atomic_load_explicit(&p->generation, memory_order_acquire);
        }
        if (g == seen) {
            pthread_mutex_lock(&p->lock);
            while ((g = atomic_load(&p->generation)) == seen && !atomic_load(&p->quit))
                pthread_cond_wait(&p->start, &p->lock);
            pthread_mutex_unlock(&p->lock);
        }
        if (atomic_load(&p->quit))
            break;
        seen = g;
        p->fn(p->ctx, index);
        if (atomic_fetch_sub(&p->pending, 1) == 1) {
            pthread_mutex_lock(&p->lock);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->lock);
        }
    }
    return NULL;
}

void vae_pool_free(vae_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    atomic_store(&p->quit, 1);
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->lock);
    for (size_t i = 0; i < p->started; i++)
        pthread_join(p->workers[i].thread, NULL);
    pthread_cond_destroy(&p->start);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->lock);
    vae_free(p->workers);
    vae_free(p);
}

int vae_pool_create(vae_pool **out, size_t n)
{
    *out = NULL;
    vae_pool *p = vae_calloc(1, sizeof *p);
    worker *workers = p ? vae_calloc(n - 1, sizeof *workers) : NULL;
    if (!p || !workers) {
        vae_free(p);
        return vae_fail(VAE_ERR_NOMEM, "out of memory for a pool of %zu threads", n);
    }
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        vae_free(workers);
        vae_free(p);
        return vae_fail(VAE_ERR_STATE, "cannot create a mutex");
    }
    if (pthread_cond_init(&p->start, NULL) != 0) {
        pthread_mutex_destroy(&p->lock);
        vae_free(workers);
        vae_free(p);
        return vae_fail(VAE_ERR_STATE, "cannot create a condition variable");
    }
    if (pthread_cond_init(&p->done, NULL) != 0) {
        pthread_cond_destroy(&p->start);
        pthread_mutex_destroy(&p->lock);
        vae_free(workers);
        vae_free(p);
        return vae_fail(VAE_ERR_STATE, "cannot create a condition variable");
    }
    atomic_init(&p->generation, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->quit, 0);
    p->n = n;
    p->workers = workers;
    for (size_t i = 1; i < n; i++) {
        worker *w = &workers[i - 1];
        w->pool = p;
        w->index = i;
        int err = pthread_create(&w->thread, NULL, worker_main, w);
        if (err) {
            vae_pool_free(p);
            /* EAGAIN: the system lacks the memory (the thread's stack) or
             * the thread count to start one more; a caller may retry with
             * fewer workers or later, as after any allocation failure. */
            return vae_fail(err == EAGAIN || err == ENOMEM ? VAE_ERR_NOMEM : VAE_ERR_STATE,
                            "cannot start thread %zu of %zu: %s", i, n - 1, strerror(err));
        }
        p->started++;
    }
    *out = p;
    return VAE_OK;
}

void vae_pool_run(vae_pool *p, vae_pool_fn fn, void *ctx)
{
    p->fn = fn;
    p->ctx = ctx;
    atomic_store(&p->pending, p->n - 1);
    pthread_mutex_lock(&p->lock);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->lock);
    fn(ctx, 0);
    for (int s = 0; s < POOL_SPINS && atomic_load(&p->pending) != 0; s++)
        cpu_relax();
    if (atomic_load(&p->pending) != 0) {
        pthread_mutex_lock(&p->lock);
        while (atomic_load(&p->pending) != 0)
            pthread_cond_wait(&p->done, &p->lock);
        pthread_mutex_unlock(&p->lock);
    }
}
