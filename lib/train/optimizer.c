/* Optimizer objects: kind and hyperparameters, set and read by parameter. */
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "../core/core.h"
#include "optimizer.h"

int vae_optimizer_create(vae_optimizer **out, int kind)
{
    const char *fn = "vae_optimizer_create";
    if (!out)
        return vae_fail(VAE_ERR_INVALID, "%s: out is NULL", fn);
    *out = NULL;
    if (kind != VAE_OPTIMIZER_SGD && kind != VAE_OPTIMIZER_ADAM)
        return vae_fail(VAE_ERR_INVALID, "%s: unknown kind %d", fn, kind);
    vae_optimizer *o = vae_calloc(1, sizeof *o);
    if (!o)
        return vae_fail(VAE_ERR_NOMEM, "%s: out of memory", fn);
    /* torch.optim's defaults (SGD has none for lr; 0.01 is customary). */
    o->kind = kind;
    o->lr = kind == VAE_OPTIMIZER_ADAM ? 1e-3f : 1e-2f;
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->eps = 1e-8f;
    *out = o;
    return VAE_OK;
}

void vae_optimizer_free(vae_optimizer *opt)
{
    vae_free(opt);
}

int vae_optimizer_kind(const vae_optimizer *opt)
{
    return opt ? opt->kind : -1;
}

/* The field of a parameter for this kind, or NULL; bounds [lo, hi) or
 * [lo, hi] (hi_open) and whether lo itself is allowed. The bounds are
 * documented with the VAE_OPT_* values and justified in docs/math.md,
 * "Optimizers". */
static float *field(vae_optimizer *o, int param, double *lo, double *hi, int *lo_open,
                    int *hi_open)
{
    const int adam = o->kind == VAE_OPTIMIZER_ADAM;
    *lo = 0.0;
    *hi = INFINITY;
    *lo_open = 0;
    *hi_open = 1;
    switch (param) {
    case VAE_OPT_LR:
        *lo_open = 1;
        *hi = VAE_OPT_MAX_RATE;
        *hi_open = 0;
        return &o->lr;
    case VAE_OPT_WEIGHT_DECAY:
        *hi = VAE_OPT_MAX_RATE;
        *hi_open = 0;
        return &o->weight_decay;
    case VAE_OPT_CLIP_NORM: return &o->clip_norm;
    case VAE_OPT_BETA1: *hi = 1.0; return adam ? &o->beta1 : NULL;
    case VAE_OPT_BETA2: *hi = 1.0; return adam ? &o->beta2 : NULL;
    case VAE_OPT_EPS: *lo_open = 1; return adam ? &o->eps : NULL;
    case VAE_OPT_MOMENTUM: *hi = 1.0; return adam ? NULL : &o->momentum;
    case VAE_OPT_DAMPENING: *hi = 1.0; return adam ? NULL : &o->dampening;
    default: return NULL;
    }
}

static const char *param_name(int param)
{
    static const char *names[] = {"?", "lr", "weight_decay", "clip_norm", "beta1", "beta2",
                                  "eps", "momentum", "nesterov", "dampening"};
    return param >= 1 && param <= VAE_OPT_DAMPENING ? names[param] : "unknown parameter";
}

int vae_optimizer_set_param(vae_optimizer *opt, int param, double value)
{
    const char *fn = "vae_optimizer_set_param";
    if (!opt)
        return vae_fail(VAE_ERR_INVALID, "%s: optimizer is NULL", fn);
    const char *kind = opt->kind == VAE_OPTIMIZER_ADAM ? "Adam" : "SGD";
    if (param == VAE_OPT_NESTEROV) {
        if (opt->kind != VAE_OPTIMIZER_SGD)
            return vae_fail(VAE_ERR_INVALID, "%s: %s has no nesterov setting", fn, kind);
        if (value != 0.0 && value != 1.0)
            return vae_fail(VAE_ERR_INVALID, "%s: nesterov is 0 or 1, got %g", fn, value);
        opt->nesterov = value != 0.0;
        return VAE_OK;
    }
    double lo, hi;
    int lo_open, hi_open;
    float *f = field(opt, param, &lo, &hi, &lo_open, &hi_open);
    if (!f)
        return vae_fail(VAE_ERR_INVALID, "%s: %s has no %s (parameter %d)", fn, kind,
                        param_name(param), param);
    /* The float the update will use must satisfy the bounds too (a double
     * beyond the float range is refused before it is converted). */
    int ok = fabs(value) <= FLT_MAX;
    float v = ok ? (float)value : 0.0f;
    ok = ok && (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
    if (!ok)
        return vae_fail(VAE_ERR_INVALID, "%s: %s must be in %s%g, %g%s as a float, got %g", fn,
                        param_name(param), lo_open ? "(" : "[", lo, hi, hi_open ? ")" : "]",
                        value);
    *f = v;
    return VAE_OK;
}

int vae_optimizer_get_param(const vae_optimizer *opt, int param, double *value)
{
    const char *fn = "vae_optimizer_get_param";
    if (!opt || !value)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn, opt ? "value" : "optimizer");
    if (param == VAE_OPT_NESTEROV && opt->kind == VAE_OPTIMIZER_SGD) {
        *value = opt->nesterov;
        return VAE_OK;
    }
    double lo, hi;
    int lo_open, hi_open;
    const float *f = field((vae_optimizer *)opt, param, &lo, &hi, &lo_open, &hi_open);
    if (!f || param == VAE_OPT_NESTEROV)
        return vae_fail(VAE_ERR_INVALID, "%s: %s has no %s (parameter %d)", fn,
                        opt->kind == VAE_OPTIMIZER_ADAM ? "Adam" : "SGD", param_name(param),
                        param);
    *value = *f;
    return VAE_OK;
}
