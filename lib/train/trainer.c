/* Trainers: the gradient slab, the optimizer's state, a generator and the
 * counters of one model's training, over a borrowed context. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/core.h"
#include "../core/rng.h"
#include "../model/context.h"
#include "../model/elbo.h"
#include "optimizer.h"
#include "trainer.h"

int vae_trainer_create(vae_trainer **out, vae_model *m, vae_elbo *objective, vae_optimizer *opt,
                       vae_context *ctx, uint64_t seed)
{
    const char *fn = "vae_trainer_create";
    if (!out)
        return vae_fail(VAE_ERR_INVALID, "%s: out is NULL", fn);
    *out = NULL;
    if (!objective || !opt || !ctx)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn,
                        !objective ? "objective" : !opt ? "optimizer" : "context");
    int rc = vae_model_check_ready(m, fn);
    if (rc)
        return rc;
    vae_trainer *t = vae_calloc(1, sizeof *t);
    size_t n = m->n_params, states = opt->kind == VAE_OPTIMIZER_ADAM ? 2 : 1;
    /* gradients, then the optimizer's state, zero */
    float *slab = t ? vae_calloc((1 + states) * n, sizeof *slab) : NULL;
    if (!slab) {
        vae_free(t);
        return vae_fail(VAE_ERR_NOMEM, "%s: out of memory for %zu parameters", fn, n);
    }
    t->m = m;
    t->e = objective;
    t->opt = opt;
    t->ctx = ctx;
    t->kind = opt->kind;
    t->n = n;
    t->grads = slab;
    t->s1 = slab + n;
    t->s2 = states == 2 ? slab + 2 * n : NULL;
    vae_rng_seed(&t->rng, seed);
    *out = t;
    return VAE_OK;
}

void vae_trainer_free(vae_trainer *t)
{
    if (!t)
        return;
    vae_free(t->grads);
    vae_free(t);
}

int vae_trainer_reserve(vae_trainer *t, size_t max_batch)
{
    const char *fn = "vae_trainer_reserve";
    if (!t)
        return vae_fail(VAE_ERR_INVALID, "%s: trainer is NULL", fn);
    int rc = vae_ctx_enter(t->ctx, fn);
    if (rc)
        return rc;
    if (max_batch == 0 || max_batch > VAE_MAX_BATCH)
        rc = vae_fail(VAE_ERR_INVALID, "%s: max_batch %zu is out of range (1 to %zu)", fn,
                      max_batch, VAE_MAX_BATCH);
    else
        rc = vae_ctx_layout(t->ctx, t->m, max_batch, 1, max_batch, fn);
    vae_ctx_leave(t->ctx);
    return rc;
}

int vae_trainer_forward_backward_in(vae_trainer *t, const float *x, size_t n, const float *eps,
                                    vae_epoch_stats *stats, const char *fn)
{
    double t0 = vae_seconds(), sums[3];
    if (!x)
        return vae_fail(VAE_ERR_INVALID, "%s: x is NULL", fn);
    /* A failed pass leaves the generator as it was, like everything else. */
    vae_rng saved = t->rng;
    int rc = vae_elbo_pass(t->ctx, t->m, t->e, x, n, eps, &t->rng, t->grads, NULL, sums, fn);
    if (rc)
        t->rng = saved;
    if (!rc && stats) {
        vae_epoch_stats s = {sizeof s, sums[0], sums[1], sums[2], vae_seconds() - t0, n, 0};
        vae_struct_put(stats, &s, sizeof s);
    }
    return rc;
}

int vae_trainer_forward_backward(vae_trainer *t, const float *x, size_t n, const float *eps,
                                 vae_epoch_stats *stats)
{
    const char *fn = "vae_trainer_forward_backward";
    if (!t)
        return vae_fail(VAE_ERR_INVALID, "%s: trainer is NULL", fn);
    if (stats && vae_struct_check(stats, sizeof *stats, fn, "stats"))
        return VAE_ERR_INVALID;
    int rc = vae_ctx_enter(t->ctx, fn);
    if (rc)
        return rc;
    rc = vae_trainer_forward_backward_in(t, x, n, eps, stats, fn);
    vae_ctx_leave(t->ctx);
    return rc;
}

/* Sum of squares in double, in 8 interleaved partial sums: a fixed order (so
 * the same on every run) that still vectorizes. */
static double sum_squares(const float *g, size_t n)
{
    double part[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (size_t j = 0; j < 8; j++)
            part[j] += (double)g[i + j] * (double)g[i + j];
    for (; i < n; i++)
        part[0] += (double)g[i] * (double)g[i];
    return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

/* The update is elementwise: the context's workers take one range each. */
typedef struct step_job {
    vae_trainer *t;
    float gscale;
    int first;
} step_job;

static void step_part(void *arg, size_t w)
{
    step_job *j = arg;
    vae_trainer *t = j->t;
    const size_t T = t->ctx->workers;
    if (w >= T)
        return;
    const size_t lo = t->n * w / T, hi = t->n * (w + 1) / T;
    if (t->kind == VAE_OPTIMIZER_ADAM)
        vae_adam_update(t->opt, t->steps + 1, t->m->params, t->grads, t->s1, t->s2, lo, hi,
                        j->gscale);
    else
        vae_sgd_update(t->opt, j->first, t->m->params, t->grads, t->s1, lo, hi, j->gscale);
}

int vae_trainer_apply_in(vae_trainer *t, const char *fn)
{
    const vae_optimizer *o = t->opt;
    size_t bad = 0;
    if (o->kind == VAE_OPTIMIZER_SGD && o->nesterov &&
        (o->momentum == 0.0f || o->dampening != 0.0f))
        return vae_fail(VAE_ERR_INVALID,
                        "%s: Nesterov momentum needs momentum > 0 and dampening 0 (momentum %g, "
                        "dampening %g)",
                        fn, (double)o->momentum, (double)o->dampening);
    if (!vae_all_finite(t->grads, t->n, &bad))
        return vae_fail(VAE_ERR_NUMERIC,
                        "%s: gradient %zu is not finite; parameters left unchanged", fn, bad);
    float gscale = 1.0f;
    if (o->clip_norm > 0.0f) {
        double norm = sqrt(sum_squares(t->grads, t->n));
        if (norm > o->clip_norm)
            gscale = (float)(o->clip_norm / (norm + 1e-6));
    }
    /* torch.optim.SGD fills its momentum buffer the first time momentum is on. */
    step_job job = {t, gscale, o->kind == VAE_OPTIMIZER_SGD && o->momentum > 0.0f &&
                                   !t->momentum_started};
    vae_ctx_use_workers(t->ctx, t->n / 4096 + 1);
    vae_ctx_run(t->ctx, step_part, &job);
    if (job.first)
        t->momentum_started = 1;
    t->steps++;
    return VAE_OK;
}

int vae_trainer_apply(vae_trainer *t)
{
    const char *fn = "vae_trainer_apply";
    if (!t)
        return vae_fail(VAE_ERR_INVALID, "%s: trainer is NULL", fn);
    int rc = vae_ctx_enter(t->ctx, fn);
    if (rc)
        return rc;
    rc = vae_trainer_apply_in(t, fn);
    vae_ctx_leave(t->ctx);
    return rc;
}

int vae_trainer_step_in(vae_trainer *t, const float *x, size_t n, vae_epoch_stats *stats,
                        const char *fn)
{
    double t0 = vae_seconds();
    vae_rng saved = t->rng;
    int rc = vae_trainer_forward_backward_in(t, x, n, NULL, stats, fn);
    if (!rc)
        rc = vae_trainer_apply_in(t, fn);
    if (rc) {
        t->rng = saved;
        memset(t->grads, 0, t->n * sizeof *t->grads);
        return rc;
    }
    if (stats) {
        vae_epoch_stats s;
        memset(&s, 0, sizeof s);
        size_t size = stats->size < sizeof s ? stats->size : sizeof s;
        memcpy(&s, stats, size);
        s.steps = 1;
        s.seconds = vae_seconds() - t0;
        vae_struct_put(stats, &s, sizeof s);
    }
    return VAE_OK;
}

int vae_trainer_step(vae_trainer *t, const float *x, size_t n, vae_epoch_stats *stats)
{
    const char *fn = "vae_trainer_step";
    if (!t)
        return vae_fail(VAE_ERR_INVALID, "%s: trainer is NULL", fn);
    if (stats && vae_struct_check(stats, sizeof *stats, fn, "stats")) {
        memset(t->grads, 0, t->n * sizeof *t->grads);
        return VAE_ERR_INVALID;
    }
    int rc = vae_ctx_enter(t->ctx, fn);
    if (rc)
        return rc;
    rc = vae_trainer_step_in(t, x, n, stats, fn);
    vae_ctx_leave(t->ctx);
    return rc;
}

float *vae_trainer_grads(vae_trainer *t, size_t *count)
{
    if (count)
        *count = t ? t->n : 0;
    return t ? t->grads : NULL;
}

int vae_trainer_zero_grads(vae_trainer *t)
{
    if (!t)
        return vae_fail(VAE_ERR_INVALID, "vae_trainer_zero_grads: trainer is NULL");
    memset(t->grads, 0, t->n * sizeof *t->grads);
    return VAE_OK;
}

uint64_t vae_trainer_steps(const vae_trainer *t)
{
    return t ? t->steps : 0;
}

uint64_t vae_trainer_epochs(const vae_trainer *t)
{
    return t ? t->epochs : 0;
}
