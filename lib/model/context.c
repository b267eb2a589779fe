/* Contexts: creation, worker threads, the in-use guard and workspace layout. */
#define _POSIX_C_SOURCE 200809L

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/core.h"
#include "context.h"

int vae_context_create(vae_context **out)
{
    if (!out)
        return vae_fail(VAE_ERR_INVALID, "vae_context_create: out is NULL");
    *out = NULL;
    vae_context *ctx = vae_calloc(1, sizeof *ctx);
    if (!ctx)
        return vae_fail(VAE_ERR_NOMEM, "vae_context_create: out of memory");
    atomic_init(&ctx->busy, 0);
    ctx->n_threads = 1;
    *out = ctx;
    return VAE_OK;
}

void vae_context_free(vae_context *ctx)
{
    if (!ctx)
        return;
    /* After fork() the pool's threads belong to the parent: not joined. */
    if (ctx->pool && ctx->pid == (long)getpid())
        vae_pool_free(ctx->pool);
    vae_free(ctx->mem);
    vae_free(ctx->ptrs);
    vae_free(ctx);
}

int vae_ctx_enter(vae_context *ctx, const char *fn)
{
    if (!ctx)
        return vae_fail(VAE_ERR_INVALID, "%s: context is NULL", fn);
    int idle = 0;
    if (!atomic_compare_exchange_strong(&ctx->busy, &idle, 1))
        return vae_fail(VAE_ERR_STATE,
                        "%s: the context is in use by another call; give each thread its own",
                        fn);
    if (ctx->pool && ctx->pid != (long)getpid()) {
        /* A child of fork(): the pool's threads stayed in the parent. Its
         * memory is left as it is (its locks may be held by threads that do
         * not exist here) and a new pool is started. */
        ctx->pool = NULL;
        vae_pool *p = NULL;
        int rc = vae_pool_create(&p, ctx->n_threads);
        if (rc) {
            ctx->n_threads = 1;
            vae_ctx_leave(ctx);
            return vae_fail(rc, "%s: after fork(), restarting the workers: %s; the context "
                                "now has one worker",
                            fn, vae_last_error());
        }
        ctx->pool = p;
        ctx->pid = (long)getpid();
    }
    return VAE_OK;
}

void vae_ctx_leave(vae_context *ctx)
{
    atomic_store(&ctx->busy, 0);
}

int vae_context_set_threads(vae_context *ctx, size_t n)
{
    const char *fn = "vae_context_set_threads";
    if (!ctx)
        return vae_fail(VAE_ERR_INVALID, "%s: context is NULL", fn);
    if (n == 0 || n > VAE_MAX_THREADS)
        return vae_fail(VAE_ERR_INVALID, "%s: %zu threads; 1 to %d are possible", fn, n,
                        VAE_MAX_THREADS);
    size_t blas = vae_blas_threads();
    if (n > 1 && blas > 1)
        return vae_fail(VAE_ERR_STATE,
                        "%s: the BLAS runs %zu threads per call, so %zu workers would run %zu "
                        "threads; set it to one first (vae_blas_set_threads(1) or "
                        "OPENBLAS_NUM_THREADS=1)",
                        fn, blas, n, blas * n);
    int rc = vae_ctx_enter(ctx, fn);
    if (rc)
        return rc;
    if (n != ctx->n_threads) {
        vae_pool *p = NULL;
        if (n > 1 && (rc = vae_pool_create(&p, n))) {
            rc = vae_fail(rc, "%s: %s", fn, vae_last_error());
        } else {
            vae_pool_free(ctx->pool);
            ctx->pool = p;
            ctx->pid = (long)getpid();
            ctx->n_threads = n;
        }
    }
    vae_ctx_leave(ctx);
    return rc;
}

size_t vae_context_threads(const vae_context *ctx)
{
    return ctx ? ctx->n_threads : 0;
}

size_t vae_ctx_use_workers(vae_context *ctx, size_t max)
{
    /* More workers than the BLAS allows without oversubscribing (the program
     * raised the BLAS's threads after vae_context_set_threads) run as one:
     * results do not depend on the count. */
    size_t T = ctx->n_threads > 1 && ctx->pool && vae_blas_threads() == 1 ? ctx->n_threads : 1;
    ctx->workers = T < max ? T : (max ? max : 1);
    return ctx->workers;
}

void vae_ctx_run(vae_context *ctx, vae_pool_fn fn, void *job)
{
    if (ctx->workers > 1)
        vae_pool_run(ctx->pool, fn, job);
    else
        fn(job, 0);
}

int vae_ctx_layout(vae_context *ctx, const vae_model *m, size_t n, int train, size_t shared,
                   size_t extra, const char *fn)
{
    const size_t L = m->latent_dim, D = m->input_dim, B = VAE_BLOCK, nblk = vae_blocks(n);
    const size_t T = vae_ctx_use_workers(ctx, nblk);
    const size_t slots = train ? (nblk + T - 1) / T : 1, rows = slots * B;
    size_t width = 2 * L, scratch = 0, acts = 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        const vae_layer *l = m->layers[i];
        width = l->in > width ? l->in : width;
        width = l->out > width ? l->out : width;
        acts += l->out;
        size_t s = l->ops->scratch_floats(l, B);
        scratch = s > scratch ? s : scratch;
    }
    /* Per worker, for its rows: activations, z, std, dz, dhead, two gradient
     * buffers (and the recon gradient when training); scratch for a block;
     * a gradient slab for training workers > 0. Shared: noise, then two
     * double arrays. */
    double per_d = (double)rows * (double)(acts + 5 * L + 2 * width + (train ? D : 0)) +
                   (double)scratch;
    double total_d = per_d * (double)T + (train ? (double)(T - 1) * (double)m->n_params : 0) +
                     (double)shared * (double)(L + 4) + 2.0 * (double)extra + 2;
    if (total_d * sizeof(float) > (double)(SIZE_MAX / 4))
        return vae_fail(VAE_ERR_NOMEM, "%s: a workspace of %.0f floats is too large", fn,
                        total_d);
    if (total_d * sizeof(float) > (double)vae_get_limit(VAE_LIMIT_WORKSPACE_BYTES))
        return vae_fail(VAE_ERR_NOMEM,
                        "%s: the workspace for %zu sample%s would take %.0f bytes, above the "
                        "limit VAE_LIMIT_WORKSPACE_BYTES = %llu",
                        fn, n, n == 1 ? "" : "s", total_d * sizeof(float),
                        (unsigned long long)vae_get_limit(VAE_LIMIT_WORKSPACE_BYTES));
    size_t per = rows * (acts + 5 * L + 2 * width + (train ? D : 0)) + scratch;
    size_t total = per * T + (train ? (T - 1) * m->n_params : 0) + shared * (L + 4) + 2 * extra + 2;
    size_t nptr = T * m->n_layers;
    /* Both blocks are had before either replaces the old one, so a failure
     * leaves the context's workspace as it was. */
    float *mem = NULL;
    float **ptrs = NULL;
    int bad = 0;
    if (total > ctx->cap)
        bad = !(mem = vae_malloc(total * sizeof *mem));
    if (!bad && nptr > ctx->ptr_cap)
        bad = !(ptrs = vae_malloc(nptr * sizeof *ptrs));
    if (bad) {
        vae_free(mem);
        vae_free(ptrs);
        return vae_fail(VAE_ERR_NOMEM, "%s: out of memory for a workspace of %zu bytes", fn,
                        total * sizeof(float) + nptr * sizeof *ptrs);
    }
    if (mem) {
        vae_free(ctx->mem);
        ctx->mem = mem;
        ctx->cap = total;
    }
    if (ptrs) {
        vae_free(ctx->ptrs);
        ctx->ptrs = ptrs;
        ctx->ptr_cap = nptr;
    }
    float *p = ctx->mem;
    for (size_t t = 0; t < T; t++) {
        vae_ws *w = &ctx->ws[t];
        w->acts = ctx->ptrs + t * m->n_layers;
        for (size_t i = 0; i < m->n_layers; i++) {
            w->acts[i] = p;
            p += rows * m->layers[i]->out;
        }
        w->z = p; p += rows * L;
        w->std = p; p += rows * L;
        w->dout = NULL;
        if (train) {
            w->dout = p;
            p += rows * D;
        }
        w->dz = p; p += rows * L;
        w->dhead = p; p += rows * 2 * L;
        w->ga = p; p += rows * width;
        w->gb = p; p += rows * width;
        w->width = width;
        w->scratch = p; p += scratch;
        w->grad = NULL;
        if (train && t > 0) {
            w->grad = p;
            p += m->n_params;
        }
    }
    ctx->eps = p;
    p += shared * L;
    /* doubles, 8-byte aligned: malloc's block is, so an even float offset is */
    if ((size_t)(p - ctx->mem) % 2)
        p++;
    ctx->rec = (double *)(void *)p;
    ctx->kl = ctx->rec + shared;
    ctx->extra = ctx->kl + shared;
    return VAE_OK;
}

int vae_context_reserve(vae_context *ctx, const vae_model *m, size_t max_batch)
{
    const char *fn = "vae_context_reserve";
    int rc = vae_ctx_enter(ctx, fn);
    if (rc)
        return rc;
    if ((rc = vae_model_check_ready(m, fn)))
        ;
    else if (max_batch == 0 || max_batch > VAE_MAX_BATCH)
        rc = vae_fail(VAE_ERR_INVALID, "%s: max_batch %zu is out of range (1 to %zu)", fn,
                      max_batch, VAE_MAX_BATCH);
    else
        rc = vae_ctx_layout(ctx, m, max_batch, 1, max_batch, 0, fn);
    vae_ctx_leave(ctx);
    return rc;
}

void vae_forward_encoder(const vae_model *m, const vae_ws *w, size_t k, const float *x,
                         size_t b)
{
    const float *in = x;
    for (size_t i = 0; i <= m->n_enc; i++) {
        const vae_layer *l = m->layers[i];
        float *y = vae_ws_act(m, w, i, k);
        l->ops->forward(l, in, b, y, w->scratch);
        in = y;
    }
}

void vae_forward_decoder(const vae_model *m, const vae_ws *w, size_t k, const float *z,
                         size_t b)
{
    const float *in = z;
    for (size_t i = m->n_enc + 1; i < m->n_layers; i++) {
        const vae_layer *l = m->layers[i];
        float *y = vae_ws_act(m, w, i, k);
        l->ops->forward(l, in, b, y, w->scratch);
        in = y;
    }
}

/* 1 when every x[i] lies in [0, 1] (NaN does not): one branch-free pass. */
VAE_CLONES static int all_in_unit_range(const float *x, size_t count)
{
    int out = 0;
    for (size_t i = 0; i < count; i++)
        out |= !(x[i] >= 0.0f) | !(x[i] <= 1.0f);
    return !out;
}

int vae_check_input(const vae_model *m, const float *x, size_t n, const char *fn)
{
    size_t count = n * m->input_dim, bad = 0;
    /* The usual case in one pass; otherwise the passes below say why. */
    if (m->likelihood != VAE_LIKELIHOOD_GAUSSIAN && all_in_unit_range(x, count))
        return VAE_OK;
    if (!vae_all_finite(x, count, &bad))
        return vae_fail(VAE_ERR_NUMERIC, "%s: x[%zu][%zu] is not finite", fn,
                        bad / m->input_dim, bad % m->input_dim);
    if (m->likelihood != VAE_LIKELIHOOD_GAUSSIAN) { /* both Bernoulli densities live on [0, 1] */
        /* A branch-free pass (vectorized); the search runs only on failure. */
        int out = 0;
        for (size_t i = 0; i < count; i++)
            out |= (x[i] < 0.0f) | (x[i] > 1.0f);
        for (size_t i = 0; out && i < count; i++)
            if (x[i] < 0.0f || x[i] > 1.0f)
                return vae_fail(VAE_ERR_INVALID,
                                "%s: x[%zu][%zu] = %g is outside [0, 1], which a Bernoulli or "
                                "continuous Bernoulli likelihood requires",
                                fn, i / m->input_dim, i % m->input_dim, (double)x[i]);
    }
    return VAE_OK;
}
