/* Trainers: the gradient slab, the optimizer's state, a generator and the
 * counters of one model's training, over a borrowed context. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/core.h"
#include "../core/numeric.h"
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
    t->dist.world = 1;
    *out = t;
    return VAE_OK;
}

void vae_trainer_free(vae_trainer *t)
{
    if (!t)
        return;
    vae_free(t->grads);
    vae_meta_free(t->meta, t->n_meta);
    vae_free(t->dist.grads);
    vae_free(t->dist.terms);
    vae_free(t->dist.bytes);
    vae_free(t);
}

int vae_trainer_set_distributed(vae_trainer *t, size_t rank, size_t world, vae_exchange_fn fn,
                                void *payload)
{
    const char *fn_name = "vae_trainer_set_distributed";
    if (!t)
        return vae_fail(VAE_ERR_INVALID, "%s: trainer is NULL", fn_name);
    if (world == 0 || world > 65536 || rank >= world || (world > 1 && !fn))
        return vae_fail(VAE_ERR_INVALID, "%s: rank %zu of %zu ranks%s: needs 1 <= world <= "
                                         "65536, rank < world and a function when world > 1",
                        fn_name, rank, world, fn ? "" : " without a function");
    int rc = vae_ctx_enter(t->ctx, fn_name);
    if (rc)
        return rc;
    size_t *bytes = NULL;
    if (world > 1 && world != t->dist.world) {
        bytes = vae_malloc(world * sizeof *bytes);
        if (!bytes) {
            vae_ctx_leave(t->ctx);
            return vae_fail(VAE_ERR_NOMEM, "%s: out of memory", fn_name);
        }
    }
    if (bytes || world == 1) {
        vae_free(t->dist.bytes);
        t->dist.bytes = bytes;
    }
    t->dist.rank = world > 1 ? rank : 0;
    t->dist.world = world;
    t->dist.fn = world > 1 ? fn : NULL;
    t->dist.payload = world > 1 ? payload : NULL;
    vae_ctx_leave(t->ctx);
    return VAE_OK;
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
        rc = vae_elbo_layout(t->ctx, t->m, t->e, max_batch, 1, fn);
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
    const vae_elbo e = vae_elbo_at_step(t->e, t->steps);
    uint32_t gmax = 0;
    int rc = vae_elbo_pass(t->ctx, t->m, &e, x, n, eps, &t->rng, t->grads, &gmax, NULL, sums,
                           t->dist.world > 1 ? &t->dist : NULL, fn);
    if (rc) {
        t->rng = saved; /* the slab is as it was */
    } else {
        t->grad_max = gmax;
        t->grad_max_known = 1;
    }
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

/* One step in up to three elementwise phases over the context's workers,
 * one range each: the scan (largest gradient and parameter) unless both are
 * known, when the overflow test cannot rule an overflow out the check (the
 * step computed without storing anything), then the update. */
enum { PHASE_SCAN, PHASE_CHECK, PHASE_UPDATE };

typedef struct step_job {
    vae_trainer *t;
    int phase;
    float gscale;
    vae_adam_coef adam;
    vae_sgd_coef sgd;
    uint32_t gmax[VAE_MAX_THREADS], pmax[VAE_MAX_THREADS];
    float smax[VAE_MAX_THREADS][2];
    float newp[VAE_MAX_THREADS];   /* largest |new parameter| of each range */
    int scan_params;               /* the largest parameter is not known: read them */
    int scan_grads;                /* the same for the gradient */
    size_t bad[VAE_MAX_THREADS];
    const char *what[VAE_MAX_THREADS];
} step_job;

static void step_part(void *arg, size_t w)
{
    step_job *j = arg;
    vae_trainer *t = j->t;
    const size_t T = t->ctx->workers;
    if (w >= T)
        return;
    const size_t lo = t->n * w / T, hi = t->n * (w + 1) / T;
    float *p = t->m->params;
    const int adam = t->kind == VAE_OPTIMIZER_ADAM;
    switch (j->phase) {
    case PHASE_SCAN:
        j->gmax[w] = j->scan_grads ? vae_max_abs_bits(t->grads + lo, hi - lo) : 0;
        j->pmax[w] = j->scan_params ? vae_max_abs_bits(p + lo, hi - lo) : 0;
        break;
    case PHASE_CHECK:
        j->bad[w] = adam ? vae_adam_check(&j->adam, p, t->grads, t->s1, t->s2, lo, hi, j->gscale,
                                          &j->what[w])
                         : vae_sgd_check(&j->sgd, p, t->grads, t->s1, lo, hi, j->gscale,
                                         &j->what[w]);
        break;
    default:
        if (adam)
            vae_adam_update(&j->adam, p, t->grads, t->s1, t->s2, lo, hi, j->gscale, j->smax[w],
                            &j->newp[w]);
        else
            vae_sgd_update(&j->sgd, p, t->grads, t->s1, lo, hi, j->gscale, j->smax[w],
                           &j->newp[w]);
    }
}

int vae_trainer_apply_in(vae_trainer *t, const char *fn)
{
    const vae_optimizer *o = t->opt;
    const int adam = t->kind == VAE_OPTIMIZER_ADAM;
    const float *p = t->m->params;
    size_t bad = 0;
    if (o->kind == VAE_OPTIMIZER_SGD && o->nesterov &&
        (o->momentum == 0.0f || o->dampening != 0.0f))
        return vae_fail(VAE_ERR_INVALID,
                        "%s: Nesterov momentum needs momentum > 0 and dampening 0 (momentum %g, "
                        "dampening %g)",
                        fn, (double)o->momentum, (double)o->dampening);
    step_job job;
    job.t = t;
    const size_t T = vae_ctx_use_workers(t->ctx, t->n / 4096 + 1);
    /* The parameters are read only when nothing vouches for them: the last
     * step's largest new value stands for them unless they may have been
     * written since (model.h, param_max). */
    vae_model *mod = t->m;
    job.phase = PHASE_SCAN;
    job.scan_params = mod->params_exposed || !mod->param_max_known;
    job.scan_grads = t->grads_exposed || !t->grad_max_known;
    uint32_t gbits = 0, pbits = 0;
    if (job.scan_params || job.scan_grads) {
        vae_ctx_run(t->ctx, step_part, &job);
        for (size_t w = 0; w < T; w++) {
            gbits = job.gmax[w] > gbits ? job.gmax[w] : gbits;
            pbits = job.pmax[w] > pbits ? job.pmax[w] : pbits;
        }
    }
    if (!job.scan_params)
        pbits = vae_abs_bits(mod->param_max);
    if (!job.scan_grads)
        gbits = t->grad_max;
    if (gbits >= 0x7f800000u && !vae_all_finite(t->grads, t->n, &bad))
        return vae_fail(VAE_ERR_NUMERIC,
                        "%s: gradient %zu is not finite; parameters left unchanged", fn, bad);
    if (pbits >= 0x7f800000u && !vae_all_finite(p, t->n, &bad))
        return vae_fail(VAE_ERR_NUMERIC,
                        "%s: parameter %zu is %g, not finite; parameters left unchanged", fn, bad,
                        (double)p[bad]);
    float gscale = 1.0f;
    if (o->clip_norm > 0.0f) {
        double norm = sqrt(sum_squares(t->grads, t->n));
        if (norm > o->clip_norm)
            gscale = (float)(o->clip_norm / (norm + 1e-6));
    }
    job.gscale = gscale;
    /* torch.optim.SGD fills its momentum buffer the first time momentum is on. */
    const int first = !adam && o->momentum > 0.0f && !t->momentum_started;
    if (adam)
        vae_adam_coef_init(&job.adam, o, t->steps + 1);
    else
        vae_sgd_coef_init(&job.sgd, o, first);
    /* A step whose new parameters or state would not all be finite changes
     * nothing. The bounds of the scan and of the state rule that out almost
     * always; otherwise the step is first computed without storing it. */
    float *sb = t->state_max;
    const double G = vae_float_of_bits(gbits), P = vae_float_of_bits(pbits);
    const int safe = adam ? vae_adam_safe(&job.adam, G, P, sb[0], sb[1])
                          : vae_sgd_safe(&job.sgd, G, P, sb[0]);
    if (!safe) {
        job.phase = PHASE_CHECK;
        vae_ctx_run(t->ctx, step_part, &job);
        for (size_t w = 0; w < T; w++) {
            if (job.bad[w] == t->n * (w + 1) / T)
                continue;
            const size_t i = job.bad[w];
            if (!strcmp(job.what[w], "parameter"))
                return vae_fail(VAE_ERR_NUMERIC,
                                "%s: parameter %zu would become non-finite (it is %g, its "
                                "gradient %g, lr %g); parameters and optimizer state left "
                                "unchanged",
                                fn, i, (double)p[i], (double)t->grads[i], (double)o->lr);
            return vae_fail(VAE_ERR_NUMERIC,
                            "%s: the %s of parameter %zu would become non-finite (its gradient "
                            "%g); parameters and optimizer state left unchanged",
                            fn, job.what[w], i, (double)t->grads[i]);
        }
    }
    job.phase = PHASE_UPDATE;
    for (size_t w = 0; w < T; w++)
        job.smax[w][0] = job.smax[w][1] = 0.0f;
    vae_ctx_run(t->ctx, step_part, &job);
    mod->param_max = 0.0f;
    for (size_t w = 0; w < T; w++)
        mod->param_max = job.newp[w] > mod->param_max ? job.newp[w] : mod->param_max;
    mod->param_max_known = 1;
    t->grad_max = 0; /* the update zeroed the slab */
    t->grad_max_known = 1;
    if (adam || o->momentum > 0.0f) {
        sb[0] = sb[1] = 0.0f;
        for (size_t w = 0; w < T; w++)
            for (int s = 0; s < 2; s++)
                sb[s] = job.smax[w][s] > sb[s] ? job.smax[w][s] : sb[s];
    }
    if (first)
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

void vae_trainer_clear_grads(vae_trainer *t)
{
    memset(t->grads, 0, t->n * sizeof *t->grads);
    t->grad_max = 0;
    t->grad_max_known = 1;
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
        vae_trainer_clear_grads(t);
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
        vae_trainer_clear_grads(t);
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
    if (!t)
        return NULL;
    t->grads_exposed = 1;
    return t->grads;
}

int vae_trainer_zero_grads(vae_trainer *t)
{
    if (!t)
        return vae_fail(VAE_ERR_INVALID, "vae_trainer_zero_grads: trainer is NULL");
vae_trainer_clear_grads(t);
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
