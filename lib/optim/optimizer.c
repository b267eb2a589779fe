/* What every optimizer shares: arguments, binding to a model, gradient
 * checks and clipping, then one flat loop of the kind's update. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/core.h"
#include "../model/model.h"
#include "optimizer.h"

static int finite_nonneg(float v)
{
    return v >= 0.0f && v < INFINITY;
}

int vae_optimizer_new(vae_optimizer **out, int kind, float lr, float weight_decay,
                      const char *fn)
{
    if (!out)
        return vae_fail(VAE_ERR_INVALID, "%s: out is NULL", fn);
    *out = NULL;
    if (!finite_nonneg(lr) || lr == 0.0f)
        return vae_fail(VAE_ERR_INVALID, "%s: lr must be finite and > 0, got %g", fn,
                        (double)lr);
    if (!finite_nonneg(weight_decay))
        return vae_fail(VAE_ERR_INVALID, "%s: weight_decay must be finite and >= 0, got %g", fn,
                        (double)weight_decay);
    vae_optimizer *o = calloc(1, sizeof *o);
    if (!o)
        return vae_fail(VAE_ERR_NOMEM, "%s: out of memory", fn);
    o->kind = kind;
    o->lr = lr;
    o->weight_decay = weight_decay;
    *out = o;
    return VAE_OK;
}

void vae_optimizer_free(vae_optimizer *opt)
{
    if (!opt)
        return;
    free(opt->s1);
    free(opt->s2);
    free(opt);
}

int vae_optimizer_set_lr(vae_optimizer *opt, float lr)
{
    if (!opt)
        return vae_fail(VAE_ERR_INVALID, "vae_optimizer_set_lr: optimizer is NULL");
    if (!finite_nonneg(lr) || lr == 0.0f)
        return vae_fail(VAE_ERR_INVALID, "vae_optimizer_set_lr: lr must be finite and > 0, got %g",
                        (double)lr);
    opt->lr = lr;
    return VAE_OK;
}

int vae_optimizer_set_clip_norm(vae_optimizer *opt, float max_norm)
{
    if (!opt)
        return vae_fail(VAE_ERR_INVALID, "vae_optimizer_set_clip_norm: optimizer is NULL");
    if (!finite_nonneg(max_norm))
        return vae_fail(VAE_ERR_INVALID,
                        "vae_optimizer_set_clip_norm: max_norm must be finite and >= 0, got %g",
                        (double)max_norm);
    opt->clip_norm = max_norm;
    return VAE_OK;
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

/* Both sides must agree: the optimizer names the model and the model names
 * the optimizer. A model created after the bound one was freed, even at the
 * same address, names no optimizer; a model that another optimizer has
 * stepped since names that one. */
static int bind(vae_optimizer *o, vae_model *m, const char *fn)
{
    const uintptr_t me = (uintptr_t)o, it = (uintptr_t)m;
    if (o->bound == it && m->stepped_by == me && o->n == m->n_params)
        return VAE_OK;
    if (o->bound)
        return vae_fail(VAE_ERR_STATE,
                        o->bound == it && m->stepped_by
                            ? "%s: another optimizer now steps this model (or it is a new "
                              "model at a freed one's address); this one's state is not its"
                            : "%s: the optimizer holds state for another model (freed or "
                              "alive); create one optimizer per model",
                        fn);
    size_t states = o->kind == VAE_OPT_ADAM ? 2 : (o->momentum > 0.0f ? 1 : 0);
    float *s1 = NULL, *s2 = NULL;
    if (states >= 1 && !(s1 = calloc(m->n_params, sizeof(float))))
        return vae_fail(VAE_ERR_NOMEM, "%s: out of memory for optimizer state", fn);
    if (states == 2 && !(s2 = calloc(m->n_params, sizeof(float)))) {
        free(s1);
        return vae_fail(VAE_ERR_NOMEM, "%s: out of memory for optimizer state", fn);
    }
    o->s1 = s1;
    o->s2 = s2;
    o->n = m->n_params;
    o->bound = it;
    m->stepped_by = me;
    return VAE_OK;
}

/* The update is elementwise: the model's workers take one range each. */
typedef struct step_job {
    vae_optimizer *opt;
    vae_model *m;
    float gscale;
} step_job;

static void step_part(void *ctx, size_t t)
{
    step_job *j = ctx;
    size_t n = j->m->n_params, T = j->m->n_threads;
    size_t lo = n * t / T, hi = n * (t + 1) / T;
    if (j->opt->kind == VAE_OPT_ADAM)
        vae_adam_update(j->opt, j->m->params, j->m->grads, lo, hi, j->gscale);
    else
        vae_sgd_update(j->opt, j->m->params, j->m->grads, lo, hi, j->gscale);
}

int vae_optimizer_step(vae_optimizer *opt, vae_model *m)
{
    const char *fn = "vae_optimizer_step";
    if (!opt)
        return vae_fail(VAE_ERR_INVALID, "%s: optimizer is NULL", fn);
    int rc = vae_model_check_ready(m, fn);
    if (rc)
        return rc;
    const size_t n = m->n_params;
    size_t bad = 0;
    if (!vae_all_finite(m->grads, n, &bad))
        return vae_fail(VAE_ERR_NUMERIC,
                        "%s: gradient %zu is not finite; parameters left unchanged", fn, bad);
    if ((rc = bind(opt, m, fn)))
        return rc;
    float gscale = 1.0f;
    if (opt->clip_norm > 0.0f) {
        double norm = sqrt(sum_squares(m->grads, n));
        if (norm > opt->clip_norm)
            gscale = (float)(opt->clip_norm / (norm + 1e-6));
    }
    opt->t++;
    step_job job = {opt, m, gscale};
    if (m->n_threads > 1)
        vae_pool_run(m->pool, step_part, &job);
    else
        step_part(&job, 0);
    return VAE_OK;
}
