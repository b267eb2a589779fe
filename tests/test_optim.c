/* Optimizers and the trainer's update: Adam, AdamW and SGD (plain, momentum,
 * dampening, Nesterov, weight decay) against torch.optim's update rules
 * written out in double, gradient clipping, non-finite gradients, the
 * optimizer state kept per trainer, the step counter, and bad input.
 *
 * An optimizer is only a kind and hyperparameters; its state (Adam's
 * moments, SGD's momentum buffer) lives in the trainer. The tests write a
 * known gradient into the trainer's slab (vae_trainer_grads() is writable),
 * call vae_trainer_apply() and compare vae_model_params() with the closed
 * form. */
#include <float.h>

#include "test_util.h"

/* White box, for the state-flush test only: struct vae_trainer, to read
 * the moments the trainer keeps. */
#include "../lib/train/trainer.h"

#define N_STEPS 3
#define N_PARAMS 10

/* A tiny model: head 2->2 (6 parameters) and decoder 1->2 (4): 10 values. */
static vae_model *tiny(uint64_t seed)
{
    vae_model *m = NULL;
    TU_OK(vae_model_create_mlp(&m, 2, NULL, 0, 1, VAE_ACT_IDENTITY, VAE_LIKELIHOOD_GAUSSIAN,
                               seed));
    size_t n = 0;
    assert_non_null(vae_model_params(m, &n));
    assert_int_equal(n, N_PARAMS);
    assert_int_equal(vae_model_param_count(m), N_PARAMS);
    return m;
}

/* One hyperparameter setting. */
typedef struct hp {
    int param;
    double value;
} hp;

/* A model, an objective, a context, an optimizer and the trainer over them. */
typedef struct rig {
    vae_model *m;
    vae_elbo *e;
    vae_context *ctx;
    vae_optimizer *o;
    vae_trainer *t;
    int own_opt;
} rig;

static vae_optimizer *make_opt(int kind, const hp *set, size_t n_set)
{
    vae_optimizer *o = NULL;
    TU_OK(vae_optimizer_create(&o, kind));
    assert_int_equal(vae_optimizer_kind(o), kind);
    for (size_t i = 0; i < n_set; i++) {
        TU_OK(vae_optimizer_set_param(o, set[i].param, set[i].value));
        double back = -1.0;
        TU_OK(vae_optimizer_get_param(o, set[i].param, &back));
        /* The value is kept, at least to float precision. */
        TU_CLOSE(back, set[i].value, 1e-7, 0.0);
    }
    return o;
}

/* A rig on tiny(seed) with optimizer `o` (borrowed when given, else made from
 * kind and the settings). */
static void rig_make(rig *r, uint64_t seed, vae_optimizer *o, int kind, const hp *set,
                     size_t n_set)
{
    memset(r, 0, sizeof *r);
    r->m = tiny(seed);
    TU_OK(vae_elbo_create(&r->e));
    TU_OK(vae_context_create(&r->ctx));
    if (o) {
        r->o = o;
    } else {
        r->o = make_opt(kind, set, n_set);
        r->own_opt = 1;
    }
    TU_OK(vae_trainer_create(&r->t, r->m, r->e, r->o, r->ctx, seed + 100));
    size_t n = 0;
    assert_non_null(vae_trainer_grads(r->t, &n));
    assert_int_equal(n, N_PARAMS);
    TU_ASSERT_ZERO_GRADS(r->t); /* a new trainer's slab is zero */
    assert_int_equal(vae_trainer_steps(r->t), 0);
    assert_int_equal(vae_trainer_epochs(r->t), 0);
}

static void rig_free(rig *r)
{
    vae_trainer_free(r->t);
    if (r->own_opt)
        vae_optimizer_free(r->o);
    vae_context_free(r->ctx);
    vae_elbo_free(r->e);
    vae_model_free(r->m);
    memset(r, 0, sizeof *r);
}

/* The hyperparameter as the library keeps it. */
static double get(const vae_optimizer *o, int param)
{
    double v = NAN;
    TU_OK(vae_optimizer_get_param(o, param, &v));
    return v;
}

/* Gradient of step t (1-based) for parameter i: mixed signs and sizes, one
 * parameter with a zero gradient throughout. */
static double grad_at(size_t i, int t)
{
    if (i == 3)
        return 0.0;
    return 0.3 * sin(1.7 * (double)i + 0.9 * t) + 0.05 * (double)(i % 3) - 0.02 * t;
}

static void set_start(rig *r, double *ref)
{
    size_t n = 0;
    float *p = vae_model_params(r->m, &n);
    assert_int_equal(n, N_PARAMS);
    for (size_t i = 0; i < n; i++) {
        p[i] = (float)(0.15 * (double)i - 0.6);
        if (ref)
            ref[i] = p[i];
    }
}

/* Writes the gradient of step t into the trainer's slab. */
static float *set_grads(vae_trainer *t, int step)
{
    size_t n = 0;
    float *g = vae_trainer_grads(t, &n);
    assert_non_null(g);
    assert_int_equal(n, N_PARAMS);
    for (size_t i = 0; i < n; i++)
        g[i] = (float)grad_at(i, step);
    return g;
}

/* Parameters of O(1) after three float updates: the measured error is at
 * most 6.4e-8 (one ulp near 0.75); 5e-7 leaves 8x margin and is still below
 * 1e-3 of the smallest update made here (Adam at lr 1e-3), so a wrong bias
 * correction, eps placement, decay, dampening or momentum rule is caught. */
#define PARAM_TOL 5e-7

static void check_params(rig *r, const double *ref, const char *what, int t)
{
    size_t n = 0;
    const float *p = vae_model_params(r->m, &n);
    for (size_t i = 0; i < n; i++)
        if (!(fabs(p[i] - ref[i]) <= PARAM_TOL))
            fail_msg("%s step %d: p[%zu] = %.9g, expected %.9g", what, t, i, (double)p[i],
                     ref[i]);
    /* The apply zeroes the slab, and counts. */
    TU_ASSERT_ZERO_GRADS(r->t);
    assert_int_equal(vae_trainer_steps(r->t), (uint64_t)t);
}

/* ---- defaults, kinds and the closed forms ---------------------------------------- */

static void test_defaults(void **state)
{
    (void)state;
    vae_optimizer *a = NULL, *s = NULL;
    TU_OK(vae_optimizer_create(&a, VAE_OPTIMIZER_ADAM));
    TU_OK(vae_optimizer_create(&s, VAE_OPTIMIZER_SGD));
    assert_int_equal(vae_optimizer_kind(a), VAE_OPTIMIZER_ADAM);
    assert_int_equal(vae_optimizer_kind(s), VAE_OPTIMIZER_SGD);
    assert_int_equal(vae_optimizer_kind(NULL), -1);
    /* PyTorch's defaults (to float precision, however they are stored). */
    TU_CLOSE(get(a, VAE_OPT_LR), 1e-3, 1e-7, 0.0);
    TU_CLOSE(get(a, VAE_OPT_BETA1), 0.9, 1e-7, 0.0);
    TU_CLOSE(get(a, VAE_OPT_BETA2), 0.999, 1e-7, 0.0);
    TU_CLOSE(get(a, VAE_OPT_EPS), 1e-8, 1e-7, 0.0);
    assert_true(get(a, VAE_OPT_WEIGHT_DECAY) == 0.0);
    assert_true(get(a, VAE_OPT_CLIP_NORM) == 0.0);
    TU_CLOSE(get(s, VAE_OPT_LR), 1e-2, 1e-7, 0.0);
    assert_true(get(s, VAE_OPT_MOMENTUM) == 0.0);
    assert_true(get(s, VAE_OPT_NESTEROV) == 0.0);
    assert_true(get(s, VAE_OPT_DAMPENING) == 0.0);
    assert_true(get(s, VAE_OPT_WEIGHT_DECAY) == 0.0);
    assert_true(get(s, VAE_OPT_CLIP_NORM) == 0.0);
    vae_optimizer_free(a);
    vae_optimizer_free(s);
    vae_optimizer_free(NULL);
}

/* The default Adam (no setter called) follows the closed form with the
 * documented defaults, and so does the default SGD (lr 1e-2, nothing else). */
static void test_default_updates(void **state)
{
    (void)state;
    rig r;
    rig_make(&r, 1, NULL, VAE_OPTIMIZER_ADAM, NULL, 0);
    double p[N_PARAMS], mom[N_PARAMS] = {0}, vel[N_PARAMS] = {0};
    set_start(&r, p);
    for (int t = 1; t <= N_STEPS; t++) {
        set_grads(r.t, t);
        TU_OK(vae_trainer_apply(r.t));
        const double bc1 = 1.0 - pow(0.9, t), bc2 = 1.0 - pow(0.999, t);
        for (size_t i = 0; i < N_PARAMS; i++) {
            const double g = (float)grad_at(i, t);
            mom[i] = 0.9 * mom[i] + 0.1 * g;
            vel[i] = 0.999 * vel[i] + 0.001 * g * g;
            p[i] -= 1e-3 / bc1 * mom[i] / (sqrt(vel[i]) / sqrt(bc2) + 1e-8);
        }
        check_params(&r, p, "default adam", t);
    }
    rig_free(&r);

    rig_make(&r, 2, NULL, VAE_OPTIMIZER_SGD, NULL, 0);
    set_start(&r, p);
    for (int t = 1; t <= N_STEPS; t++) {
        set_grads(r.t, t);
        TU_OK(vae_trainer_apply(r.t));
        for (size_t i = 0; i < N_PARAMS; i++)
            p[i] -= 1e-2 * (float)grad_at(i, t);
        check_params(&r, p, "default sgd", t);
    }
    rig_free(&r);
}

typedef struct adam_case {
    const char *name;
    double lr, b1, b2, eps, wd;
} adam_case;

static void run_adam(const adam_case *c)
{
    const hp set[] = {{VAE_OPT_LR, c->lr},  {VAE_OPT_BETA1, c->b1},
                      {VAE_OPT_BETA2, c->b2}, {VAE_OPT_EPS, c->eps},
                      {VAE_OPT_WEIGHT_DECAY, c->wd}};
    rig r;
    rig_make(&r, 1, NULL, VAE_OPTIMIZER_ADAM, set, sizeof set / sizeof set[0]);
    double p[N_PARAMS], mom[N_PARAMS] = {0}, vel[N_PARAMS] = {0};
    set_start(&r, p);
    /* The hyperparameters as the library keeps them. */
    const double lr = get(r.o, VAE_OPT_LR), b1 = get(r.o, VAE_OPT_BETA1);
    const double b2 = get(r.o, VAE_OPT_BETA2), eps = get(r.o, VAE_OPT_EPS);
    const double wd = get(r.o, VAE_OPT_WEIGHT_DECAY);
    for (int t = 1; t <= N_STEPS; t++) {
        set_grads(r.t, t);
        TU_OK(vae_trainer_apply(r.t));
        const double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
        for (size_t i = 0; i < N_PARAMS; i++) {
            /* The gradient as the library sees it: the float in the slab. */
            const double g = (float)grad_at(i, t);
            p[i] *= 1.0 - lr * wd; /* decoupled weight decay (AdamW), first */
            mom[i] = b1 * mom[i] + (1.0 - b1) * g;
            vel[i] = b2 * vel[i] + (1.0 - b2) * g * g;
            p[i] -= lr / bc1 * mom[i] / (sqrt(vel[i]) / sqrt(bc2) + eps);
        }
        check_params(&r, p, c->name, t);
    }
    rig_free(&r);
}

static void test_adam(void **state)
{
    (void)state;
    const adam_case cases[] = {
        {"adam defaults", 1e-3, 0.9, 0.999, 1e-8, 0.0},
        {"adam lr 0.05", 0.05, 0.9, 0.999, 1e-8, 0.0},
        /* A large eps tells apart where eps and the bias corrections go:
         * sqrt(v)/sqrt(1-b2^t) + eps, not (sqrt(v) + eps)/sqrt(1-b2^t). */
        {"adam eps 0.1", 0.05, 0.8, 0.95, 0.1, 0.0},
        {"adam beta1 0", 0.05, 0.0, 0.9, 1e-8, 0.0},
        {"adamw wd 0.1", 0.05, 0.9, 0.999, 1e-8, 0.1},
        {"adamw wd 2", 0.05, 0.5, 0.99, 1e-3, 2.0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_adam(&cases[i]);
}

typedef struct sgd_case {
    const char *name;
    double lr, momentum;
    int nesterov;
    double wd, dampening;
} sgd_case;

static void run_sgd(const sgd_case *c)
{
    const hp set[] = {{VAE_OPT_LR, c->lr},
                      {VAE_OPT_MOMENTUM, c->momentum},
                      {VAE_OPT_NESTEROV, c->nesterov},
                      {VAE_OPT_WEIGHT_DECAY, c->wd},
                      {VAE_OPT_DAMPENING, c->dampening}};
    rig r;
    rig_make(&r, 2, NULL, VAE_OPTIMIZER_SGD, set, sizeof set / sizeof set[0]);
    double p[N_PARAMS], buf[N_PARAMS] = {0};
    set_start(&r, p);
    const double lr = get(r.o, VAE_OPT_LR), mu = get(r.o, VAE_OPT_MOMENTUM);
    const double wd = get(r.o, VAE_OPT_WEIGHT_DECAY), damp = get(r.o, VAE_OPT_DAMPENING);
    for (int t = 1; t <= N_STEPS; t++) {
        set_grads(r.t, t);
        TU_OK(vae_trainer_apply(r.t));
        /* torch.optim.SGD: d = g + wd p; buf = d at the first step, then
         * mu buf + (1 - dampening) d; d = d + mu buf (Nesterov) or buf. */
        for (size_t i = 0; i < N_PARAMS; i++) {
            double g = (float)grad_at(i, t);
            g += wd * p[i];
            if (mu != 0.0) {
                buf[i] = t == 1 ? g : mu * buf[i] + (1.0 - damp) * g;
                g = c->nesterov ? g + mu * buf[i] : buf[i];
            }
            p[i] -= lr * g;
        }
        check_params(&r, p, c->name, t);
    }
    rig_free(&r);
}

static void test_sgd(void **state)
{
    (void)state;
    const sgd_case cases[] = {
        {"sgd plain", 0.1, 0.0, 0, 0.0, 0.0},
        {"sgd weight decay", 0.1, 0.0, 0, 0.05, 0.0},
        {"sgd momentum", 0.1, 0.9, 0, 0.0, 0.0},
        {"sgd momentum + weight decay", 0.1, 0.9, 0, 0.05, 0.0},
        {"sgd nesterov", 0.1, 0.9, 1, 0.0, 0.0},
        {"sgd nesterov + weight decay", 0.2, 0.5, 1, 0.1, 0.0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_sgd(&cases[i]);
}

/* Dampening scales what the buffer adds after the first step, and only that:
 * torch.optim.SGD takes buf = g (undampened) at the first step. */
static void test_sgd_dampening(void **state)
{
    (void)state;
    const sgd_case cases[] = {
        {"sgd dampening 0.5", 0.1, 0.9, 0, 0.0, 0.5},
        {"sgd dampening 0.9 + weight decay", 0.2, 0.8, 0, 0.05, 0.9},
        {"sgd dampening 0.25, momentum 0.5", 0.3, 0.5, 0, 0.0, 0.25},
        /* Without momentum there is no buffer: dampening changes nothing. */
        {"sgd dampening without momentum", 0.1, 0.0, 0, 0.0, 0.7},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_sgd(&cases[i]);

    /* The first step with dampening equals the first step without it, and
     * the second differs by exactly lr * dampening * g2 (buf2 = mu g1 +
     * (1 - dampening) g2 against mu g1 + g2). */
    const hp with[] = {{VAE_OPT_LR, 0.5}, {VAE_OPT_MOMENTUM, 0.9}, {VAE_OPT_DAMPENING, 0.5}};
    const hp without[] = {{VAE_OPT_LR, 0.5}, {VAE_OPT_MOMENTUM, 0.9}};
    rig a, b;
    rig_make(&a, 3, NULL, VAE_OPTIMIZER_SGD, with, 3);
    rig_make(&b, 3, NULL, VAE_OPTIMIZER_SGD, without, 2);
    set_start(&a, NULL);
    set_start(&b, NULL);
    set_grads(a.t, 1);
    set_grads(b.t, 1);
    TU_OK(vae_trainer_apply(a.t));
    TU_OK(vae_trainer_apply(b.t));
    const float *pa = vae_model_params(a.m, NULL), *pb = vae_model_params(b.m, NULL);
    assert_memory_equal(pa, pb, N_PARAMS * sizeof(float));
    set_grads(a.t, 2);
    set_grads(b.t, 2);
    TU_OK(vae_trainer_apply(a.t));
    TU_OK(vae_trainer_apply(b.t));
    for (size_t i = 0; i < N_PARAMS; i++)
        TU_CLOSE((double)pa[i] - pb[i], 0.5 * 0.5 * (float)grad_at(i, 2), 0.0, 5e-7);
    rig_free(&a);
    rig_free(&b);
}

static void test_set_lr_between_steps(void **state)
{
    (void)state;
    const hp set[] = {{VAE_OPT_LR, 0.1}, {VAE_OPT_MOMENTUM, 0.5}};
    rig r;
    rig_make(&r, 3, NULL, VAE_OPTIMIZER_SGD, set, 2);
    double p[N_PARAMS], buf[N_PARAMS] = {0};
    set_start(&r, p);
    const double lrs[N_STEPS] = {0.1, 0.025, 0.4};
    for (int t = 1; t <= N_STEPS; t++) {
        if (t > 1)
            TU_OK(vae_optimizer_set_param(r.o, VAE_OPT_LR, lrs[t - 1]));
        const double lr = get(r.o, VAE_OPT_LR);
        TU_CLOSE(lr, lrs[t - 1], 1e-7, 0.0);
        set_grads(r.t, t);
        TU_OK(vae_trainer_apply(r.t));
        for (size_t i = 0; i < N_PARAMS; i++) {
            double g = (float)grad_at(i, t);
            buf[i] = t == 1 ? g : 0.5 * buf[i] + g;
            p[i] -= lr * buf[i];
        }
        check_params(&r, p, "sgd with a new lr per step", t);
    }
    rig_free(&r);
}

static void test_clip_norm(void **state)
{
    (void)state;
    /* Plain SGD with lr 1 makes the update the (clipped) gradient itself. */
    const double clips[] = {1.0, 0.25, 100.0, 0.0};
    for (size_t ci = 0; ci < 4; ci++) {
        const hp set[] = {{VAE_OPT_LR, 1.0}, {VAE_OPT_CLIP_NORM, clips[ci]}};
        rig r;
        rig_make(&r, 4, NULL, VAE_OPTIMIZER_SGD, set, 2);
        size_t n = 0;
        float *p = vae_model_params(r.m, &n), *g = vae_trainer_grads(r.t, NULL);
        float p0[N_PARAMS], g0[N_PARAMS];
        memcpy(p0, p, sizeof p0);
        double norm = 0.0;
        for (size_t i = 0; i < n; i++) {
            g[i] = (float)(0.5 * (double)i - 2.0); /* spread over the whole slab */
            norm += (double)g[i] * g[i];
        }
        norm = sqrt(norm); /* 3.6 */
        memcpy(g0, g, sizeof g0);
        TU_OK(vae_trainer_apply(r.t));
        const double scale = clips[ci] > 0.0 && norm > clips[ci] ? clips[ci] / norm : 1.0;
        double moved = 0.0;
        for (size_t i = 0; i < n; i++) {
            double d = (double)p0[i] - p[i];
            /* Each component is the gradient scaled by one global factor;
             * the library may add a tiny epsilon to the norm (1e-6 relative
             * here) and works in float. */
            TU_CLOSE(d, scale * g0[i], 1e-5, 1e-6);
            moved += d * d;
        }
        if (scale < 1.0)
            TU_CLOSE(sqrt(moved), clips[ci], 1e-5, 0.0);
        else
            TU_CLOSE(sqrt(moved), norm, 1e-5, 0.0);
        TU_ASSERT_ZERO_GRADS(r.t);
        rig_free(&r);
    }
}

/* ---- failures that change nothing ------------------------------------------------ */

/* A NaN or infinite gradient: VAE_ERR_NUMERIC, and parameters, slab and
 * optimizer state (moments, momentum, step count) untouched: the following
 * good steps give exactly what they would have without the bad one. */
static void check_nonfinite(int kind, float bad, size_t where)
{
    const hp adam[] = {{VAE_OPT_LR, 0.05}};
    const hp sgd[] = {{VAE_OPT_LR, 0.1}, {VAE_OPT_MOMENTUM, 0.9}};
    const hp *set = kind == VAE_OPTIMIZER_ADAM ? adam : sgd;
    size_t n_set = kind == VAE_OPTIMIZER_ADAM ? 1 : 2;
    rig r, ref;
    rig_make(&r, 5, NULL, kind, set, n_set);
    rig_make(&ref, 5, NULL, kind, set, n_set);
    float *p = vae_model_params(r.m, NULL);
    set_grads(r.t, 1);
    set_grads(ref.t, 1);
    TU_OK(vae_trainer_apply(r.t));
    TU_OK(vae_trainer_apply(ref.t));

    float p_before[N_PARAMS], g_bad[N_PARAMS];
    memcpy(p_before, p, sizeof p_before);
    float *g = set_grads(r.t, 2);
    g[where] = bad;
    memcpy(g_bad, g, sizeof g_bad);
    TU_EXPECT_ERR(vae_trainer_apply(r.t), VAE_ERR_NUMERIC, "vae_trainer_apply");
    assert_memory_equal(p, p_before, sizeof p_before);
    assert_memory_equal(g, g_bad, sizeof g_bad); /* "changes nothing": the slab too */
    assert_int_equal(vae_trainer_steps(r.t), 1);

    for (int t = 2; t <= N_STEPS; t++) {
        set_grads(r.t, t);
        set_grads(ref.t, t);
        TU_OK(vae_trainer_apply(r.t));
        TU_OK(vae_trainer_apply(ref.t));
        if (memcmp(p, vae_model_params(ref.m, NULL), N_PARAMS * sizeof(float)) != 0)
            fail_msg("kind %d, bad value %g at %zu: step %d after the refused one differs from "
                     "the run without it",
                     kind, (double)bad, where, t);
    }
    assert_int_equal(vae_trainer_steps(r.t), N_STEPS);
    rig_free(&r);
    rig_free(&ref);
}

static void test_nonfinite_gradient(void **state)
{
    (void)state;
    const float bad[] = {NAN, INFINITY, -INFINITY};
    const size_t where[] = {0, 7, N_PARAMS - 1};
    for (int kind = VAE_OPTIMIZER_SGD; kind <= VAE_OPTIMIZER_ADAM; kind++)
        for (size_t i = 0; i < 3; i++)
            for (size_t w = 0; w < 3; w++)
                check_nonfinite(kind, bad[i], where[w]);
}

/* ---- updates that would not be finite ------------------------------------------- */

/* A step whose new parameters or optimizer state would not all be finite
 * fails with VAE_ERR_NUMERIC, naming what would overflow, and changes
 * nothing: parameters, gradient slab, step counter and state (the
 * following steps give exactly what a run without the refused one gives).
 * Each case takes `good` ordinary steps on both rigs (the last with
 * gradient `pre` at `where` when pre is not 0), then writes `param` (when
 * not 0) into parameter `where` and gradient `grad` at `where` in one rig
 * only. Before, each returned VAE_OK with an infinite or NaN value stored. */
typedef struct overflow_case {
    const char *name;
    int kind;
    hp set[3];
    size_t n_set;
    int good;
    size_t where;
    float pre, param, grad;
    const char *what;
} overflow_case;

static void check_overflow(const overflow_case *c)
{
    rig r, ref;
    rig_make(&r, 11, NULL, c->kind, c->set, c->n_set);
    rig_make(&ref, 11, NULL, c->kind, c->set, c->n_set);
    set_start(&r, NULL);
    set_start(&ref, NULL);
    float *p = vae_model_params(r.m, NULL);
    const float *pref = vae_model_params(ref.m, NULL);
    for (int t = 1; t <= c->good; t++) {
        float *g = set_grads(r.t, t), *gref = set_grads(ref.t, t);
        if (t == c->good && c->pre != 0.0f)
            g[c->where] = gref[c->where] = c->pre;
        TU_OK(vae_trainer_apply(r.t));
        TU_OK(vae_trainer_apply(ref.t));
    }
    assert_memory_equal(p, pref, N_PARAMS * sizeof(float));
    assert_true(tu_all_finite(p, N_PARAMS));

    const float kept = p[c->where];
    if (c->param != 0.0f)
        p[c->where] = c->param;
    float p_bad[N_PARAMS], g_bad[N_PARAMS];
    memcpy(p_bad, p, sizeof p_bad);
    float *g = set_grads(r.t, c->good + 1);
    g[c->where] = c->grad;
    memcpy(g_bad, g, sizeof g_bad);
    TU_EXPECT_ERR_MSG(vae_trainer_apply(r.t), VAE_ERR_NUMERIC, "vae_trainer_apply", c->what);
    if (memcmp(p, p_bad, sizeof p_bad) != 0 || memcmp(g, g_bad, sizeof g_bad) != 0)
        fail_msg("%s: the refused step changed the parameters or the gradient slab", c->name);
    assert_int_equal(vae_trainer_steps(r.t), c->good);

    /* The same trainer carries on from the state before the refused step. */
    p[c->where] = kept;
    TU_OK(vae_trainer_zero_grads(r.t));
    for (int t = c->good + 1; t <= c->good + 3; t++) {
        set_grads(r.t, t);
        set_grads(ref.t, t);
        TU_OK(vae_trainer_apply(r.t));
        TU_OK(vae_trainer_apply(ref.t));
        if (memcmp(p, pref, N_PARAMS * sizeof(float)) != 0)
            fail_msg("%s: step %d after the refused one differs from the run without it",
                     c->name, t);
        assert_true(tu_all_finite(p, N_PARAMS));
    }
    assert_int_equal(vae_trainer_steps(r.t), c->good + 3);
    rig_free(&r);
    rig_free(&ref);
}

static void test_overflowing_update(void **state)
{
    (void)state;
    const overflow_case cases[] = {
        /* (1 - beta2) g^2 = 1e-3 * 1e42 */
        {"adam second moment", VAE_OPTIMIZER_ADAM, {{VAE_OPT_LR, 0.05}}, 1, 2, 5, 0.0f, 0.0f,
         1e21f, "second moment"},
        /* AdamW: p (1 - lr wd) = 1e33 * (1 - 1e6) */
        {"adamw parameter",
         VAE_OPTIMIZER_ADAM,
         {{VAE_OPT_LR, 1e3}, {VAE_OPT_WEIGHT_DECAY, 1e3}},
         2,
         1,
         7,
         0.0f,
         1e33f,
         0.5f,
         "parameter"},
        /* p - lr g = p - 1e6 * 1e33 */
        {"sgd parameter", VAE_OPTIMIZER_SGD, {{VAE_OPT_LR, 1e6}}, 1, 1, 2, 0.0f, 0.0f, 1e33f,
         "parameter"},
        /* buf = 0.9 * 3e38 + 3e38, after a step that stored buf = 3e38 (that
         * step is checked before it is stored, and succeeds) */
        {"sgd momentum buffer",
         VAE_OPTIMIZER_SGD,
         {{VAE_OPT_LR, 1e-3}, {VAE_OPT_MOMENTUM, 0.9}},
         2,
         2,
         4,
         3e38f,
         0.0f,
         3e38f,
         "momentum buffer"},
        /* Nesterov: d + mu buf with buf = 3e38 */
        {"sgd nesterov parameter",
         VAE_OPTIMIZER_SGD,
         {{VAE_OPT_LR, 1.0}, {VAE_OPT_MOMENTUM, 0.9}, {VAE_OPT_NESTEROV, 1}},
         3,
         1,
         9,
         0.0f,
         0.0f,
         2e38f,
         "parameter"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_overflow(&cases[i]);
}

/* Values far beyond the usual but finite: the overflow test cannot rule an
 * overflow out (g^2 = 2.25e38 is above FLT_MAX / 2), so the step is checked
 * before it is stored, and then stored: the closed form still holds, and
 * every other parameter gets the same bits as without the large gradient. */
static void test_large_finite_update(void **state)
{
    (void)state;
    const hp set[] = {{VAE_OPT_LR, 0.05}};
    rig r, ref;
    rig_make(&r, 12, NULL, VAE_OPTIMIZER_ADAM, set, 1);
    rig_make(&ref, 12, NULL, VAE_OPTIMIZER_ADAM, set, 1);
    double p[N_PARAMS], mom[N_PARAMS] = {0}, vel[N_PARAMS] = {0};
    set_start(&r, p);
    set_start(&ref, NULL);
    const double lr = get(r.o, VAE_OPT_LR);
    for (int t = 1; t <= N_STEPS; t++) {
        float *g = set_grads(r.t, t);
        set_grads(ref.t, t);
        g[5] = t == 2 ? 1.5e19f : g[5];
        TU_OK(vae_trainer_apply(r.t));
        TU_OK(vae_trainer_apply(ref.t));
        const double bc1 = 1.0 - pow(0.9, t), bc2 = 1.0 - pow(0.999, t);
        for (size_t i = 0; i < N_PARAMS; i++) {
            const double gi = i == 5 && t == 2 ? 1.5e19 : (float)grad_at(i, t);
            mom[i] = 0.9 * mom[i] + 0.1 * gi;
            vel[i] = 0.999 * vel[i] + 0.001 * gi * gi;
            p[i] -= lr / bc1 * mom[i] / (sqrt(vel[i]) / sqrt(bc2) + 1e-8);
        }
        check_params(&r, p, "adam, one gradient of 1.5e19", t);
        const float *pr = vae_model_params(r.m, NULL), *pf = vae_model_params(ref.m, NULL);
        for (size_t i = 0; i < N_PARAMS; i++)
            if (i != 5 && memcmp(pr + i, pf + i, sizeof(float)) != 0)
                fail_msg("step %d: parameter %zu differs from the run without the large "
                         "gradient",
                         t, i);
    }
    rig_free(&r);
    rig_free(&ref);
}

/* Training with the largest learning rate on data of magnitude 1e15 may
 * diverge; an epoch then stops with VAE_ERR_NUMERIC, never with a parameter
 * that is NaN or infinite. (Adam with lr 1e38, formerly accepted, gave an
 * epoch that returned VAE_OK with every parameter non-finite.) */
static void test_epoch_never_nonfinite(void **state)
{
    (void)state;
    enum { COUNT = 40, DIM = 2 };
    float x[COUNT * DIM];
    tu_rng rr = {13};
    tu_fill_range(&rr, x, COUNT * DIM, -1e15, 1e15);
    vae_dataset *ds = NULL;
    TU_OK(vae_dataset_from_floats(&ds, x, COUNT, DIM, NULL));
    vae_train_options opts;
    TU_OK(vae_train_options_init(&opts, sizeof opts));
    opts.batch_size = 8;
    for (int kind = VAE_OPTIMIZER_SGD; kind <= VAE_OPTIMIZER_ADAM; kind++) {
        const hp set[] = {{VAE_OPT_LR, 1e6}};
        rig r;
        rig_make(&r, 14, NULL, kind, set, 1);
        TU_EXPECT_ERR_MSG(vae_optimizer_set_param(r.o, VAE_OPT_LR, 1e38), VAE_ERR_INVALID,
                          "vae_optimizer_set_param", "lr");
        assert_true(get(r.o, VAE_OPT_LR) == 1e6);
        int rc = VAE_OK;
        for (int epoch = 0; epoch < 5 && rc == VAE_OK; epoch++) {
            rc = vae_trainer_train_epoch(r.t, ds, &opts, NULL);
            if (rc != VAE_OK && rc != VAE_ERR_NUMERIC)
                fail_msg("kind %d: epoch %d returned %d: %s", kind, epoch, rc,
                         vae_last_error());
            if (!tu_all_finite(vae_model_params(r.m, NULL), N_PARAMS))
                fail_msg("kind %d: epoch %d (status %d) left a non-finite parameter", kind,
                         epoch, rc);
        }
        rig_free(&r);
    }
    vae_dataset_free(ds);
}

/* The same with several workers (a model of 10 656 parameters: three
 * ranges): the checked step gives the same bits with one worker and with
 * three, and a refused step names the first bad parameter whichever range
 * it lies in, and changes nothing in any range. */
static void test_overflow_workers(void **state)
{
    (void)state;
    TU_OK(vae_blas_set_threads(1));
    const size_t hidden[1] = {100};
    vae_model *m[2] = {NULL, NULL};
    vae_context *ctx[2] = {NULL, NULL};
    vae_trainer *t[2] = {NULL, NULL};
    vae_elbo *e = NULL;
    TU_OK(vae_elbo_create(&e));
    const hp set[] = {{VAE_OPT_LR, 0.05}};
    vae_optimizer *o = make_opt(VAE_OPTIMIZER_ADAM, set, 1);
    for (int k = 0; k < 2; k++) {
        TU_OK(vae_model_create_mlp(&m[k], 40, hidden, 1, 8, VAE_ACT_TANH,
                                   VAE_LIKELIHOOD_GAUSSIAN, 17));
        TU_OK(vae_context_create(&ctx[k]));
        if (k == 1)
            TU_OK(vae_context_set_threads(ctx[k], 3));
        TU_OK(vae_trainer_create(&t[k], m[k], e, o, ctx[k], 18));
    }
    size_t n = 0;
    const float *p0 = vae_model_params(m[0], &n), *p1 = vae_model_params(m[1], NULL);
    assert_int_equal(n, 10656);
    const size_t mid = n / 2, last = n - 5; /* in the second and third of three ranges */
    float *before = tu_alloc(n, sizeof *before), *gsave = tu_alloc(n, sizeof *gsave);
    for (int step = 1; step <= 4; step++) {
        for (int k = 0; k < 2; k++) {
            float *g = vae_trainer_grads(t[k], NULL);
            for (size_t i = 0; i < n; i++)
                g[i] = (float)(0.2 * sin(0.37 * (double)i + step));
            if (step == 2)
                g[last] = 1.5e19f; /* checked first, then stored */
            if (step == 3)
                g[mid] = g[last] = 1e21f; /* (1 - beta2) g^2 overflows */
            if (step == 3) {
                memcpy(before, vae_model_params(m[k], NULL), n * sizeof *before);
                memcpy(gsave, g, n * sizeof *gsave);
                char where[48];
                snprintf(where, sizeof where, "second moment of parameter %zu ", mid);
                TU_EXPECT_ERR_MSG(vae_trainer_apply(t[k]), VAE_ERR_NUMERIC,
                                  "vae_trainer_apply", where);
                assert_memory_equal(vae_model_params(m[k], NULL), before, n * sizeof *before);
                assert_memory_equal(g, gsave, n * sizeof *gsave);
                assert_int_equal(vae_trainer_steps(t[k]), 2);
                TU_OK(vae_trainer_zero_grads(t[k]));
            } else {
                TU_OK(vae_trainer_apply(t[k]));
            }
        }
        if (memcmp(p0, p1, n * sizeof *p0) != 0)
            fail_msg("step %d: one worker and three give different parameters", step);
    }
    assert_true(tu_all_finite(p0, n));
    free(before);
    free(gsave);
    for (int k = 0; k < 2; k++) {
        vae_trainer_free(t[k]);
        vae_context_free(ctx[k]);
        vae_model_free(m[k]);
    }
    vae_optimizer_free(o);
    vae_elbo_free(e);
}

/* The overflow test takes the largest gradient from the pass that wrote the
 * slab, found as the final sums are written (lib/model/pass.c), when the
 * slab was never handed out. A pending gradient of 1e21 restored from a
 * checkpoint, in each layer in turn, must be in that maximum after a pass
 * with 1, 2 and 3 workers and 1, 2 and 3 blocks (a last round that is
 * folded, and one that is not): (1 - beta2) g^2 then overflows, and the
 * step is refused instead of storing an infinite second moment. */
static void test_pass_gradient_max(void **state)
{
    (void)state;
    TU_OK(vae_blas_set_threads(1));
    const size_t hidden[1] = {100};
    /* one parameter in each layer: encoder, head, decoder 8->100, 100->40 */
    const size_t where[4] = {17, 4105, 5719, 10655};
    const size_t batches[3] = {50, 128, 150};
    vae_elbo *e = NULL;
    TU_OK(vae_elbo_create(&e));
    const hp set[] = {{VAE_OPT_LR, 0.05}};
    vae_optimizer *o = make_opt(VAE_OPTIMIZER_ADAM, set, 1);
    float *x = tu_alloc(150 * 40, sizeof *x);
    tu_rng rr = {21};
    tu_fill_range(&rr, x, 150 * 40, -1, 1);
    for (size_t workers = 1; workers <= 3; workers++)
        for (size_t b = 0; b < 3; b++)
            for (size_t l = 0; l < 4; l++) {
                vae_model *m[2] = {NULL, NULL};
                vae_context *ctx[2] = {NULL, NULL};
                vae_trainer *t[2] = {NULL, NULL};
                for (int k = 0; k < 2; k++) {
                    TU_OK(vae_model_create_mlp(&m[k], 40, hidden, 1, 8, VAE_ACT_TANH,
                                               VAE_LIKELIHOOD_GAUSSIAN, 17));
                    TU_OK(vae_context_create(&ctx[k]));
                    if (workers > 1)
                        TU_OK(vae_context_set_threads(ctx[k], workers));
                    TU_OK(vae_trainer_create(&t[k], m[k], e, o, ctx[k], 18));
                }
                /* trainer 0 writes the pending gradient; trainer 1 only
                 * restores it, so its slab was never handed out */
                size_t n = 0;
                float *g = vae_trainer_grads(t[0], &n);
                assert_int_equal(n, 10656);
                g[where[l]] = 1e21f;
                size_t size = 0;
                TU_OK(vae_trainer_save_mem(t[0], NULL, 0, &size));
                unsigned char *buf = tu_alloc(size, 1);
                TU_OK(vae_trainer_save_mem(t[0], buf, size, &size));
                TU_OK(vae_trainer_restore_mem(t[1], buf, size));
                TU_OK(vae_trainer_forward_backward(t[1], x, batches[b], NULL, NULL));
                float *before = tu_alloc(n, sizeof *before);
                memcpy(before, vae_model_params(m[1], NULL), n * sizeof *before);
                char msg[48];
                snprintf(msg, sizeof msg, "second moment of parameter %zu ", where[l]);
                if (vae_trainer_apply(t[1]) != VAE_ERR_NUMERIC)
                    fail_msg("%zu workers, batch %zu, pending 1e21 at %zu: the step was not "
                             "refused",
                             workers, batches[b], where[l]);
                assert_non_null(strstr(vae_last_error(), msg));
                assert_memory_equal(vae_model_params(m[1], NULL), before, n * sizeof *before);
                free(before);
                free(buf);
                for (int k = 0; k < 2; k++) {
                    vae_trainer_free(t[k]);
                    vae_context_free(ctx[k]);
                    vae_model_free(m[k]);
                }
            }
    free(x);
    vae_optimizer_free(o);
    vae_elbo_free(e);
}

/* A gradient near 1e22 made by the pass itself, in one block of two only
 * (one input of 1e15 per row there, sigma 1e-4), must be refused by
 * vae_trainer_step ((1 - beta2) g^2 overflows) with nothing changed, whether
 * it lies in the block that goes straight into the slab or in the one the
 * second worker folds in, and an ordinary batch must still step: with 1
 * worker and 2. */
static void test_step_overflow_blocks(void **state)
{
    (void)state;
    TU_OK(vae_blas_set_threads(1));
    enum { B = 128, D = 40 };
    const size_t hidden[1] = {100};
    vae_elbo *e = NULL;
    TU_OK(vae_elbo_create(&e));
    const hp set[] = {{VAE_OPT_LR, 0.05}};
    vae_optimizer *o = make_opt(VAE_OPTIMIZER_ADAM, set, 1);
    float *x = tu_alloc(B * D, sizeof *x);
    for (size_t workers = 1; workers <= 2; workers++)
        for (int half = 0; half <= 2; half++) { /* huge inputs in block 0, 1, or none */
            vae_model *m = NULL;
            vae_context *ctx = NULL;
            vae_trainer *t = NULL;
            TU_OK(vae_model_create_mlp(&m, D, hidden, 1, 8, VAE_ACT_TANH,
                                       VAE_LIKELIHOOD_GAUSSIAN, 17));
            TU_OK(vae_model_set_param(m, VAE_MODEL_GAUSSIAN_SIGMA, 1e-4));
            TU_OK(vae_context_create(&ctx));
            if (workers > 1)
                TU_OK(vae_context_set_threads(ctx, workers));
            TU_OK(vae_trainer_create(&t, m, e, o, ctx, 18));
            tu_rng r = {23};
            tu_fill_range(&r, x, B * D, 0, 1);
            for (size_t i = 0; i < B; i++)
                if (half < 2 && i / 64 == (size_t)half)
                    x[i * D] = 1e15f;
            size_t n = 0;
            const float *p = vae_model_params(m, &n);
            float *before = tu_copy_floats(p, n);
            vae_epoch_stats st = tu_stats();
            int rc = vae_trainer_step(t, x, B, &st);
            if (half == 2) {
                TU_OK(rc);
                assert_int_equal(vae_trainer_steps(t), 1);
            } else {
                if (rc != VAE_ERR_NUMERIC)
                    fail_msg("%zu workers, huge inputs in block %d: the step gave %d, not a "
                             "refusal",
                             workers, half, rc);
                assert_non_null(strstr(vae_last_error(), "second moment"));
                assert_memory_equal(p, before, n * sizeof *p);
                assert_int_equal(vae_trainer_steps(t), 0);
            }
            free(before);
            vae_trainer_free(t);
            vae_context_free(ctx);
            vae_model_free(m);
        }
    free(x);
    vae_optimizer_free(o);
    vae_elbo_free(e);
}

/* ---- the state flush and small eps --------------------------------------------- */

/* Adam with a tiny eps on tiny gradients, against the closed form. With
 * eps = 1e-20 and gradients of 1e-15, v = 1e-33 was set to 0 (the flush
 * was a fixed 1e-30) and one step moved a parameter by 100 instead of
 * PyTorch's 0.001. Gradients of 1e-18 give subnormal v (1e-39), which must
 * be kept too: with this eps it matters. */
static void test_adam_tiny_eps(void **state)
{
    (void)state;
    const double epss[] = {1e-20, 1e-20};
    const double scales[] = {1e-15, 1e-18};
    for (size_t k = 0; k < 2; k++) {
        const hp set[] = {{VAE_OPT_EPS, epss[k]}};
        rig r;
        rig_make(&r, 15, NULL, VAE_OPTIMIZER_ADAM, set, 1);
        double p[N_PARAMS], mom[N_PARAMS] = {0}, vel[N_PARAMS] = {0};
        set_start(&r, p);
        const double lr = get(r.o, VAE_OPT_LR), eps = get(r.o, VAE_OPT_EPS);
        for (int t = 1; t <= N_STEPS; t++) {
            float *g = vae_trainer_grads(r.t, NULL);
            for (size_t i = 0; i < N_PARAMS; i++)
                g[i] = (float)(scales[k] * grad_at(i, t));
            TU_OK(vae_trainer_apply(r.t));
            const double bc1 = 1.0 - pow(0.9, t), bc2 = 1.0 - pow(0.999, t);
            for (size_t i = 0; i < N_PARAMS; i++) {
                const double gi = (float)(scales[k] * grad_at(i, t));
                mom[i] = 0.9 * mom[i] + 0.1 * gi;
                vel[i] = 0.999 * vel[i] + 0.001 * gi * gi;
                p[i] -= lr / bc1 * mom[i] / (sqrt(vel[i]) / sqrt(bc2) + eps);
            }
            char what[64];
            snprintf(what, sizeof what, "adam eps %g, gradients %g", eps, scales[k]);
            check_params(&r, p, what, t);
        }
        rig_free(&r);
    }
}

static int is_subnormal(float x)
{
    return x != 0.0f && fabsf(x) < FLT_MIN;
}

/* Adam's update does not change when the gradients and eps are scaled by
 * one power of two (every quantity scales exactly while it stays a normal
 * float); the flush, whose thresholds scale with eps, must keep that: the
 * run with gradients and eps times 2^-45 gives the same parameter bits.
 * With the former fixed threshold the scaled run lost its v (below 1e-30)
 * and moved its parameters by up to eps'^-1 m. Also the flush does its
 * job: after 400 steps without gradient the first moments of those
 * parameters are exactly 0, and no moment is ever subnormal. */
static void test_adam_flush_scale_invariant(void **state)
{
    (void)state;
    const double s = 0x1p-45;
    const hp plain[] = {{VAE_OPT_LR, 0.01}};
    const hp scaled[] = {{VAE_OPT_LR, 0.01}, {VAE_OPT_EPS, (double)1e-8f * s}};
    rig a, b;
    rig_make(&a, 16, NULL, VAE_OPTIMIZER_ADAM, plain, 1);
    rig_make(&b, 16, NULL, VAE_OPTIMIZER_ADAM, scaled, 2);
    set_start(&a, NULL);
    set_start(&b, NULL);
    const struct vae_trainer *ta = (const struct vae_trainer *)a.t;
    const struct vae_trainer *tb = (const struct vae_trainer *)b.t;
    for (int t = 1; t <= 403; t++) {
        float *ga = vae_trainer_grads(a.t, NULL), *gb = vae_trainer_grads(b.t, NULL);
        for (size_t i = 0; i < N_PARAMS; i++) {
            /* in [0.01, 1] or 0; parameters 0..4 stop after 3 steps */
            double g = i == 3 || (i < 5 && t > 3) ? 0.0
                                                   : 0.01 + 0.11 * (double)i * (t % 2 ? 1 : 0.5);
            ga[i] = (float)g;
            gb[i] = (float)(g * s);
        }
        TU_OK(vae_trainer_apply(a.t));
        TU_OK(vae_trainer_apply(b.t));
        if (memcmp(vae_model_params(a.m, NULL), vae_model_params(b.m, NULL),
                   N_PARAMS * sizeof(float)) != 0)
            fail_msg("step %d: gradients and eps scaled by 2^-45 change the parameters", t);
        for (size_t i = 0; i < N_PARAMS; i++)
            if (is_subnormal(ta->s1[i]) || is_subnormal(ta->s2[i]) ||
                is_subnormal(tb->s1[i]) || is_subnormal(tb->s2[i]))
                fail_msg("step %d: a moment of parameter %zu is subnormal", t, i);
    }
    for (size_t i = 0; i < 5; i++) {
        assert_true(ta->s1[i] == 0.0f && tb->s1[i] == 0.0f);
        if (i != 3)
            assert_true(ta->s2[i] > 0.0f && tb->s2[i] > 0.0f); /* v decays far slower */
    }
    rig_free(&a);
    rig_free(&b);
}

/* Nesterov needs momentum: the setting is accepted (momentum may be set
 * afterwards) but the step is refused, changing nothing. */
static void test_nesterov_without_momentum(void **state)
{
    (void)state;
    const hp set[] = {{VAE_OPT_LR, 0.1}, {VAE_OPT_NESTEROV, 1}};
    rig r;
    rig_make(&r, 6, NULL, VAE_OPTIMIZER_SGD, set, 2);
    double p[N_PARAMS];
    set_start(&r, p);
    float p0[N_PARAMS], g0[N_PARAMS];
    memcpy(p0, vae_model_params(r.m, NULL), sizeof p0);
    float *g = set_grads(r.t, 1);
    memcpy(g0, g, sizeof g0);
    TU_EXPECT_ERR_MSG(vae_trainer_apply(r.t), VAE_ERR_INVALID, "vae_trainer_apply", "momentum");
    assert_memory_equal(vae_model_params(r.m, NULL), p0, sizeof p0);
    assert_memory_equal(g, g0, sizeof g0);
    assert_int_equal(vae_trainer_steps(r.t), 0);
    /* vae_trainer_step refuses likewise, and leaves the slab zero. */
    float x[2] = {0.25f, -0.5f};
    vae_epoch_stats st = tu_stats();
    TU_EXPECT_ERR_MSG(vae_trainer_step(r.t, x, 1, &st), VAE_ERR_INVALID, NULL, "momentum");
    assert_memory_equal(vae_model_params(r.m, NULL), p0, sizeof p0);
    TU_ASSERT_ZERO_GRADS(r.t);
    assert_int_equal(vae_trainer_steps(r.t), 0);

    /* With momentum the same trainer steps, from a fresh momentum buffer:
     * the first Nesterov step is p -= lr (g + mu g). */
    TU_OK(vae_optimizer_set_param(r.o, VAE_OPT_MOMENTUM, 0.9));
    set_grads(r.t, 1);
    TU_OK(vae_trainer_apply(r.t));
    const double lr = get(r.o, VAE_OPT_LR), mu = get(r.o, VAE_OPT_MOMENTUM);
    for (size_t i = 0; i < N_PARAMS; i++)
        p[i] -= lr * (1.0 + mu) * (float)grad_at(i, 1);
    check_params(&r, p, "nesterov once momentum is set", 1);
    rig_free(&r);
}

/* vae_trainer_step fails at its first half (bad input) or its second (a
 * non-finite slab, refused Nesterov): the parameters and optimizer state are
 * unchanged and the slab is zero, whatever it held before. */
static void test_step_failure_zeroes_slab(void **state)
{
    (void)state;
    const hp set[] = {{VAE_OPT_LR, 0.05}};
    rig r, ref;
    rig_make(&r, 7, NULL, VAE_OPTIMIZER_ADAM, set, 1);
    rig_make(&ref, 7, NULL, VAE_OPTIMIZER_ADAM, set, 1);
    float x[4] = {0.25f, -0.5f, 1.5f, 0.125f}, eps[2] = {0.3f, -1.1f};
    /* One good step first, so the Adam state is not the initial one. */
    TU_OK(vae_trainer_forward_backward(r.t, x, 2, eps, NULL));
    TU_OK(vae_trainer_forward_backward(ref.t, x, 2, eps, NULL));
    TU_OK(vae_trainer_apply(r.t));
    TU_OK(vae_trainer_apply(ref.t));
    const float *p = vae_model_params(r.m, NULL);
    float p0[N_PARAMS];
    memcpy(p0, p, sizeof p0);

    float xbad[4] = {0.25f, NAN, 1.5f, 0.125f};
    for (int k = 0; k < 4; k++) {
        /* A slab a custom loop left nonzero. */
        float *g = set_grads(r.t, 2 + k);
        vae_epoch_stats st = tu_stats();
        switch (k) {
        case 0:
            TU_EXPECT_ERR(vae_trainer_step(r.t, xbad, 2, &st), VAE_ERR_NUMERIC,
                          "vae_trainer_step");
            break;
        case 1:
            TU_EXPECT_ERR(vae_trainer_step(r.t, NULL, 2, &st), VAE_ERR_INVALID,
                          "vae_trainer_step");
            break;
        case 2:
            TU_EXPECT_ERR(vae_trainer_step(r.t, x, 0, &st), VAE_ERR_INVALID,
                          "vae_trainer_step");
            break;
        default:
            /* The batch's gradient is fine; the slab it is added to is not. */
            g[4] = NAN;
            TU_EXPECT_ERR_MSG(vae_trainer_step(r.t, x, 2, &st), VAE_ERR_NUMERIC, NULL, NULL);
            break;
        }
        if (tu_first_nonzero(g, N_PARAMS) != N_PARAMS)
            fail_msg("case %d: the slab is not zero after a failed vae_trainer_step", k);
        assert_memory_equal(p, p0, sizeof p0);
        assert_int_equal(vae_trainer_steps(r.t), 1);
    }
    /* The optimizer state is the one after the good step: the next step
     * matches the run that never failed. */
    TU_OK(vae_trainer_forward_backward(r.t, x, 2, eps, NULL));
    TU_OK(vae_trainer_forward_backward(ref.t, x, 2, eps, NULL));
    TU_OK(vae_trainer_apply(r.t));
    TU_OK(vae_trainer_apply(ref.t));
    assert_memory_equal(p, vae_model_params(ref.m, NULL), sizeof p0);
    rig_free(&r);
    rig_free(&ref);
}

/* The step's overflow test reads the parameters only when nothing vouches
 * for them: after vae_model_tensor_set it must read them again. A weight set
 * to 3e38 and a step of 1e38 towards infinity must be refused, not written
 * as inf because the test relied on the small parameters of the step
 * before. The model's slab pointer is never taken here (that alone would
 * make every step read the parameters). */
static void test_overflow_after_tensor_set(void **state)
{
    (void)state;
    vae_model *m = NULL;
    vae_context *ctx = NULL;
    vae_elbo *e = NULL;
    vae_optimizer *o = NULL;
    vae_trainer *t = NULL;
    size_t hidden[] = {3};
    TU_OK(vae_model_create_mlp(&m, 4, hidden, 1, 2, VAE_ACT_TANH, VAE_LIKELIHOOD_GAUSSIAN, 5));
    TU_OK(vae_context_create(&ctx));
    TU_OK(vae_elbo_create(&e));
    TU_OK(vae_optimizer_create(&o, VAE_OPTIMIZER_SGD));
    TU_OK(vae_optimizer_set_param(o, VAE_OPT_LR, 1e6));
    TU_OK(vae_trainer_create(&t, m, e, o, ctx, 3));
    size_t n = 0;
    float *g = vae_trainer_grads(t, &n);
    g[1] = 1e-9f; /* one ordinary step: the trainer now knows the largest parameter */
    TU_OK(vae_trainer_apply(t));
    size_t count = 0;
    TU_OK(vae_model_tensor_info(m, 0, NULL, NULL, NULL, &count));
    float *w = tu_alloc(count, sizeof *w), *before = tu_alloc(count, sizeof *before);
    TU_OK(vae_model_tensor_get(m, 0, w, count));
    w[0] = 3e38f;
    TU_OK(vae_model_tensor_set(m, 0, w, count));
    TU_OK(vae_model_tensor_get(m, 0, before, count));
    g[0] = -1e32f; /* p - lr g = 3e38 + 1e38: not a float */
    TU_EXPECT_ERR(vae_trainer_apply(t), VAE_ERR_NUMERIC, "vae_trainer_apply");
    TU_OK(vae_model_tensor_get(m, 0, w, count));
    assert_memory_equal(w, before, count * sizeof *w);
    assert_int_equal(vae_trainer_steps(t), 1);
    free(w);
    free(before);
    vae_trainer_free(t);
    vae_optimizer_free(o);
    vae_elbo_free(e);
    vae_context_free(ctx);
    vae_model_free(m);
}

/* A step that fails after drawing its noise (here: the gradient it adds to
 * is not finite) leaves the trainer's generator as it was: the next step
 * draws the noise the failed one drew, so two trainers of the same seed,
 * one with a failed step in between, end with the same bits. */
static void test_failed_step_keeps_generator(void **state)
{
    (void)state;
    const hp set[] = {{VAE_OPT_LR, 0.05}};
    rig r, ref;
    rig_make(&r, 7, NULL, VAE_OPTIMIZER_ADAM, set, 1);
    rig_make(&ref, 7, NULL, VAE_OPTIMIZER_ADAM, set, 1);
    float x[4] = {0.25f, -0.5f, 1.5f, 0.125f};
    size_t n = 0;
    float *g = vae_trainer_grads(r.t, &n);
    g[3] = NAN;
    TU_EXPECT_ERR(vae_trainer_step(r.t, x, 2, NULL), VAE_ERR_NUMERIC, "vae_trainer_step");
    TU_OK(vae_trainer_step(r.t, x, 2, NULL));
    TU_OK(vae_trainer_step(ref.t, x, 2, NULL));
    assert_memory_equal(vae_model_params(r.m, NULL), vae_model_params(ref.m, NULL),
                        n * sizeof(float));
    rig_free(&r);
    rig_free(&ref);
}

/* The same postcondition when the step is refused for its stats argument
 * (size never set, or a longer struct with an unknown nonzero byte). */
static void test_step_bad_stats_zeroes_slab(void **state)
{
    (void)state;
    rig r;
    rig_make(&r, 7, NULL, VAE_OPTIMIZER_SGD, NULL, 0);
    float x[4] = {0.25f, -0.5f, 1.5f, 0.125f};
    float p0[N_PARAMS];
    memcpy(p0, vae_model_params(r.m, NULL), sizeof p0);
    struct {
        vae_epoch_stats st;
        double future;
    } big;
    for (int k = 0; k < 2; k++) {
        float *g = set_grads(r.t, 1 + k);
        memset(&big, 0, sizeof big);
        big.st.size = k == 0 ? 0 : sizeof big;
        big.future = 1.0;
        TU_EXPECT_ERR_MSG(vae_trainer_step(r.t, x, 2, &big.st), VAE_ERR_INVALID,
                          "vae_trainer_step", k == 0 ? "size" : "stats");
        assert_memory_equal(vae_model_params(r.m, NULL), p0, sizeof p0);
        assert_int_equal(vae_trainer_steps(r.t), 0);
        if (tu_first_nonzero(g, N_PARAMS) != N_PARAMS)
            fail_msg("vae_trainer_step refused stats (%s) and left the slab nonzero; the "
                     "header: \"On failure ... the gradient slab is zero\"",
                     k == 0 ? "size 0" : "nonzero unknown tail");
    }
    rig_free(&r);
}

/* ---- optimizer state lives in the trainer ---------------------------------------- */

/* Two trainers with one optimizer on two models: each keeps its own moments
 * and step count, so what the optimizer does on model B does not depend on
 * how often it stepped model A, and the reverse. */
static void check_shared(int kind)
{
    const hp adam[] = {{VAE_OPT_LR, 0.05}, {VAE_OPT_BETA1, 0.8}};
    const hp sgd[] = {{VAE_OPT_LR, 0.1}, {VAE_OPT_MOMENTUM, 0.9}, {VAE_OPT_DAMPENING, 0.3}};
    const hp *set = kind == VAE_OPTIMIZER_ADAM ? adam : sgd;
    size_t n_set = kind == VAE_OPTIMIZER_ADAM ? 2 : 3;
    vae_optimizer *shared = make_opt(kind, set, n_set);
    rig a, b, a_alone, b_alone;
    rig_make(&a, 6, shared, kind, NULL, 0);
    rig_make(&b, 7, shared, kind, NULL, 0);
    /* The references: the same models, each with an optimizer of its own. */
    rig_make(&a_alone, 6, NULL, kind, set, n_set);
    rig_make(&b_alone, 7, NULL, kind, set, n_set);
    const size_t bytes = N_PARAMS * sizeof(float);

    /* A takes three steps, then B its first: B's step is a first step. */
    for (int t = 1; t <= 3; t++) {
        set_grads(a.t, t);
        set_grads(a_alone.t, t);
        TU_OK(vae_trainer_apply(a.t));
        TU_OK(vae_trainer_apply(a_alone.t));
    }
    set_grads(b.t, 1);
    set_grads(b_alone.t, 1);
    TU_OK(vae_trainer_apply(b.t));
    TU_OK(vae_trainer_apply(b_alone.t));
    assert_memory_equal(vae_model_params(b.m, NULL), vae_model_params(b_alone.m, NULL), bytes);
    /* Interleaved: each continues its own sequence. */
    for (int t = 2; t <= 4; t++) {
        set_grads(b.t, t);
        set_grads(b_alone.t, t);
        TU_OK(vae_trainer_apply(b.t));
        TU_OK(vae_trainer_apply(b_alone.t));
        set_grads(a.t, t + 2);
        set_grads(a_alone.t, t + 2);
        TU_OK(vae_trainer_apply(a.t));
        TU_OK(vae_trainer_apply(a_alone.t));
    }
    if (memcmp(vae_model_params(a.m, NULL), vae_model_params(a_alone.m, NULL), bytes) != 0 ||
        memcmp(vae_model_params(b.m, NULL), vae_model_params(b_alone.m, NULL), bytes) != 0)
        fail_msg("optimizer kind %d: trainers sharing it do not match trainers with one each",
                 kind);
    assert_int_equal(vae_trainer_steps(a.t), 6);
    assert_int_equal(vae_trainer_steps(b.t), 4);
    /* The optimizer is only read: a new learning rate reaches both. */
    TU_OK(vae_optimizer_set_param(shared, VAE_OPT_LR, 1e-3));
    TU_OK(vae_optimizer_set_param(a_alone.o, VAE_OPT_LR, 1e-3));
    TU_OK(vae_optimizer_set_param(b_alone.o, VAE_OPT_LR, 1e-3));
    set_grads(a.t, 7);
    set_grads(a_alone.t, 7);
    set_grads(b.t, 5);
    set_grads(b_alone.t, 5);
    TU_OK(vae_trainer_apply(a.t));
    TU_OK(vae_trainer_apply(a_alone.t));
    TU_OK(vae_trainer_apply(b.t));
    TU_OK(vae_trainer_apply(b_alone.t));
    assert_memory_equal(vae_model_params(a.m, NULL), vae_model_params(a_alone.m, NULL), bytes);
    assert_memory_equal(vae_model_params(b.m, NULL), vae_model_params(b_alone.m, NULL), bytes);
    /* Freeing one trainer leaves the other and the optimizer working. */
    rig_free(&a);
    set_grads(b.t, 6);
    TU_OK(vae_trainer_apply(b.t));
    assert_int_equal(vae_trainer_steps(b.t), 6);
    rig_free(&b);
    rig_free(&a_alone);
    rig_free(&b_alone);
    vae_optimizer_free(shared);
}

static void test_shared_optimizer_separate_state(void **state)
{
    (void)state;
    check_shared(VAE_OPTIMIZER_ADAM);
    check_shared(VAE_OPTIMIZER_SGD);
}

/* Two trainers on the same model (one after the other) each start from a
 * zero state: a new trainer's first Adam step is a first step. */
static void test_new_trainer_fresh_state(void **state)
{
    (void)state;
    const hp set[] = {{VAE_OPT_LR, 0.05}};
    rig r;
    rig_make(&r, 8, NULL, VAE_OPTIMIZER_ADAM, set, 1);
    double p[N_PARAMS];
    set_start(&r, p);
    for (int t = 1; t <= 2; t++) {
        set_grads(r.t, t);
        TU_OK(vae_trainer_apply(r.t));
    }
    vae_trainer_free(r.t);
    r.t = NULL;
    TU_OK(vae_trainer_create(&r.t, r.m, r.e, r.o, r.ctx, 1));
    assert_int_equal(vae_trainer_steps(r.t), 0);
    TU_ASSERT_ZERO_GRADS(r.t);
    const float *q = vae_model_params(r.m, NULL);
    for (size_t i = 0; i < N_PARAMS; i++)
        p[i] = q[i];
    set_grads(r.t, 3);
    TU_OK(vae_trainer_apply(r.t));
    /* The first Adam step moves each parameter by lr sign(g) (up to eps). */
    const double lr = get(r.o, VAE_OPT_LR);
    for (size_t i = 0; i < N_PARAMS; i++) {
        double g = (float)grad_at(i, 3);
        p[i] -= g == 0.0 ? 0.0 : lr * g / (fabs(g) + 1e-8);
    }
    check_params(&r, p, "adam on a new trainer", 1);
    rig_free(&r);
}

/* The step counter counts the applies that succeeded, from any entry point;
 * forward_backward and zero_grads do not count. */
static void test_steps_count(void **state)
{
    (void)state;
    rig r;
    rig_make(&r, 9, NULL, VAE_OPTIMIZER_SGD, NULL, 0);
    float x[4] = {0.25f, -0.5f, 1.5f, 0.125f};
    vae_epoch_stats st = tu_stats();
    TU_OK(vae_trainer_forward_backward(r.t, x, 2, NULL, &st));
    assert_int_equal(st.samples, 2);
    assert_int_equal(vae_trainer_steps(r.t), 0);
    size_t n = 0;
    const float *g = vae_trainer_grads(r.t, &n);
    assert_true(tu_first_nonzero(g, n) < n); /* the batch added a gradient */
    TU_OK(vae_trainer_zero_grads(r.t));
    TU_ASSERT_ZERO_GRADS(r.t);
    assert_int_equal(vae_trainer_steps(r.t), 0);
    TU_OK(vae_trainer_apply(r.t)); /* a zero slab is a valid step */
    assert_int_equal(vae_trainer_steps(r.t), 1);
    st = tu_stats();
    TU_OK(vae_trainer_step(r.t, x, 2, &st));
    assert_int_equal(st.steps, 1);
    assert_int_equal(st.samples, 2);
    assert_int_equal(vae_trainer_steps(r.t), 2);
    TU_OK(vae_trainer_step(r.t, x, 1, NULL));
    assert_int_equal(vae_trainer_steps(r.t), 3);
    set_grads(r.t, 1)[0] = NAN;
    TU_EXPECT_ERR(vae_trainer_apply(r.t), VAE_ERR_NUMERIC, "vae_trainer_apply");
    assert_int_equal(vae_trainer_steps(r.t), 3);
    TU_OK(vae_trainer_zero_grads(r.t));
    for (int k = 0; k < 5; k++)
        TU_OK(vae_trainer_apply(r.t));
    assert_int_equal(vae_trainer_steps(r.t), 8);
    assert_int_equal(vae_trainer_epochs(r.t), 0);
    assert_int_equal(vae_trainer_steps(NULL), 0);
    assert_int_equal(vae_trainer_epochs(NULL), 0);
    rig_free(&r);
}

/* ---- bad input ----------------------------------------------------------------- */

static void test_bad_create(void **state)
{
    (void)state;
    const char *fn = "vae_optimizer_create";
    vae_optimizer *o = (vae_optimizer *)&o;
    TU_EXPECT_ERR(vae_optimizer_create(NULL, VAE_OPTIMIZER_ADAM), VAE_ERR_INVALID, fn);
    const int bad_kind[] = {0, -1, 3, 1000};
    for (size_t i = 0; i < 4; i++) {
        o = (vae_optimizer *)&o;
        TU_EXPECT_ERR_MSG(vae_optimizer_create(&o, bad_kind[i]), VAE_ERR_INVALID, fn, "kind");
        assert_null(o);
    }
}

/* Every hyperparameter of each kind: bad values refused with the value kept;
 * the other kind's and unknown ones refused. lr and weight_decay are at
 * most 1e6 (docs/math.md, "Optimizers"): Adam accepted lr 1e38, whose
 * lr / (1 - beta1) overflows float, and one step turned every parameter
 * into NaN or infinity with VAE_OK. */
typedef struct bound_case {
    int param;
    double bad[9];
    size_t n_bad;
    double good[4];
    size_t n_good;
} bound_case;

static void check_bounds(vae_optimizer *o, const bound_case *c)
{
    const char *set = "vae_optimizer_set_param";
    for (size_t i = 0; i < c->n_good; i++) {
        TU_OK(vae_optimizer_set_param(o, c->param, c->good[i]));
        TU_CLOSE(get(o, c->param), c->good[i], 1e-7, 0.0);
    }
    const double kept = get(o, c->param);
    for (size_t i = 0; i < c->n_bad; i++) {
        TU_EXPECT_ERR(vae_optimizer_set_param(o, c->param, c->bad[i]), VAE_ERR_INVALID, set);
        if (!(get(o, c->param) == kept))
            fail_msg("param %d: the refused value %g changed the setting from %g to %g",
                     c->param, c->bad[i], kept, get(o, c->param));
    }
}

static void test_bad_params(void **state)
{
    (void)state;
    const char *set = "vae_optimizer_set_param", *getfn = "vae_optimizer_get_param";
    vae_optimizer *a = NULL, *s = NULL;
    TU_OK(vae_optimizer_create(&a, VAE_OPTIMIZER_ADAM));
    TU_OK(vae_optimizer_create(&s, VAE_OPTIMIZER_SGD));
    const bound_case common[] = {
        {VAE_OPT_LR,
         {0.0, -0.0, -1e-3, NAN, INFINITY, -INFINITY, 1e38, 1.0001e6, 1e300},
         9,
         {1e6, 1e-6, 5.0, 0.01},
         4},
        {VAE_OPT_WEIGHT_DECAY,
         {-0.1, -1e-30, NAN, INFINITY, 1e38, 1.0001e6, 1e300},
         7,
         {1e6, 0.0, 3.0, 0.01},
         4},
        {VAE_OPT_CLIP_NORM, {-1.0, -1e-30, NAN, INFINITY}, 4, {0.0, 100.0, 0.0}, 3},
    };
    for (size_t i = 0; i < 3; i++) {
        check_bounds(a, &common[i]);
        check_bounds(s, &common[i]);
    }
    const bound_case adam[] = {
        {VAE_OPT_BETA1, {-0.1, 1.0, 1.5, NAN, INFINITY, -1e-30}, 6, {0.0, 0.999, 0.9}, 3},
        {VAE_OPT_BETA2, {-0.1, 1.0, 1.5, NAN, INFINITY, -1e-30}, 6, {0.0, 0.9999, 0.999}, 3},
        {VAE_OPT_EPS, {0.0, -1e-8, NAN, INFINITY}, 4, {1e-12, 1.0, 1e-8}, 3},
    };
    for (size_t i = 0; i < 3; i++)
        check_bounds(a, &adam[i]);
    const bound_case sgd[] = {
        {VAE_OPT_MOMENTUM, {-0.1, 1.0, 2.0, NAN, INFINITY, -1e-30}, 6, {0.0, 0.99, 0.5}, 3},
        {VAE_OPT_NESTEROV, {-1.0, 2.0, 0.5, NAN, INFINITY}, 5, {1.0, 0.0}, 2},
        {VAE_OPT_DAMPENING, {-0.1, 1.0, 1.5, NAN, INFINITY, -1e-30}, 6, {0.0, 0.99, 0.25}, 3},
    };
    for (size_t i = 0; i < 3; i++)
        check_bounds(s, &sgd[i]);

    /* The other kind's settings, both ways, and unknown ones. */
    double v = 42.0;
    const int sgd_only[] = {VAE_OPT_MOMENTUM, VAE_OPT_NESTEROV, VAE_OPT_DAMPENING};
    const int adam_only[] = {VAE_OPT_BETA1, VAE_OPT_BETA2, VAE_OPT_EPS};
    for (size_t i = 0; i < 3; i++) {
        TU_EXPECT_ERR(vae_optimizer_set_param(a, sgd_only[i], 0.0), VAE_ERR_INVALID, set);
        TU_EXPECT_ERR(vae_optimizer_get_param(a, sgd_only[i], &v), VAE_ERR_INVALID, getfn);
        TU_EXPECT_ERR(vae_optimizer_set_param(s, adam_only[i], 0.5), VAE_ERR_INVALID, set);
        TU_EXPECT_ERR(vae_optimizer_get_param(s, adam_only[i], &v), VAE_ERR_INVALID, getfn);
    }
    assert_true(v == 42.0); /* no value was written by a refused get */
    const int unknown[] = {0, -1, 10, 1000};
    for (size_t i = 0; i < 4; i++) {
        TU_EXPECT_ERR(vae_optimizer_set_param(a, unknown[i], 0.5), VAE_ERR_INVALID, set);
        TU_EXPECT_ERR(vae_optimizer_set_param(s, unknown[i], 0.5), VAE_ERR_INVALID, set);
        TU_EXPECT_ERR(vae_optimizer_get_param(a, unknown[i], &v), VAE_ERR_INVALID, getfn);
        TU_EXPECT_ERR(vae_optimizer_get_param(s, unknown[i], &v), VAE_ERR_INVALID, getfn);
    }
    TU_EXPECT_ERR(vae_optimizer_set_param(NULL, VAE_OPT_LR, 0.1), VAE_ERR_INVALID, set);
    TU_EXPECT_ERR(vae_optimizer_get_param(NULL, VAE_OPT_LR, &v), VAE_ERR_INVALID, getfn);
    TU_EXPECT_ERR(vae_optimizer_get_param(a, VAE_OPT_LR, NULL), VAE_ERR_INVALID, getfn);
    /* The kinds are unchanged by all that. */
    assert_int_equal(vae_optimizer_kind(a), VAE_OPTIMIZER_ADAM);
    assert_int_equal(vae_optimizer_kind(s), VAE_OPTIMIZER_SGD);
    vae_optimizer_free(a);
    vae_optimizer_free(s);

    /* Refused values change nothing: a fresh SGD with lr 0.1 after a series
     * of refused settings still takes a plain step of lr 0.1, unclipped. */
    const hp lr[] = {{VAE_OPT_LR, 0.1}};
    rig r;
    rig_make(&r, 8, NULL, VAE_OPTIMIZER_SGD, lr, 1);
    TU_EXPECT_ERR(vae_optimizer_set_param(r.o, VAE_OPT_LR, -1.0), VAE_ERR_INVALID, set);
    TU_EXPECT_ERR(vae_optimizer_set_param(r.o, VAE_OPT_CLIP_NORM, -1.0), VAE_ERR_INVALID, set);
    TU_EXPECT_ERR(vae_optimizer_set_param(r.o, VAE_OPT_MOMENTUM, 1.0), VAE_ERR_INVALID, set);
    TU_EXPECT_ERR(vae_optimizer_set_param(r.o, VAE_OPT_BETA1, 0.5), VAE_ERR_INVALID, set);
    double p[N_PARAMS];
    set_start(&r, p);
    set_grads(r.t, 1);
    TU_OK(vae_trainer_apply(r.t));
    for (size_t i = 0; i < N_PARAMS; i++)
        p[i] -= get(r.o, VAE_OPT_LR) * (float)grad_at(i, 1);
    TU_CLOSE(get(r.o, VAE_OPT_LR), 0.1, 1e-7, 0.0);
    check_params(&r, p, "sgd after refused settings", 1);
    rig_free(&r);
}

static void test_bad_trainer_args(void **state)
{
    (void)state;
    const char *fn = "vae_trainer_create";
    vae_model *m = tiny(9), *unbuilt = NULL;
    TU_OK(vae_model_create(&unbuilt, 2, 1, VAE_LIKELIHOOD_GAUSSIAN));
    vae_elbo *e = NULL;
    vae_context *ctx = NULL;
    vae_optimizer *o = NULL;
    TU_OK(vae_elbo_create(&e));
    TU_OK(vae_context_create(&ctx));
    TU_OK(vae_optimizer_create(&o, VAE_OPTIMIZER_ADAM));
    vae_trainer *t = (vae_trainer *)&t;
    TU_EXPECT_ERR(vae_trainer_create(NULL, m, e, o, ctx, 1), VAE_ERR_INVALID, fn);
    TU_EXPECT_ERR(vae_trainer_create(&t, NULL, e, o, ctx, 1), VAE_ERR_INVALID, fn);
    assert_null(t);
    t = (vae_trainer *)&t;
    TU_EXPECT_ERR(vae_trainer_create(&t, m, NULL, o, ctx, 1), VAE_ERR_INVALID, fn);
    assert_null(t);
    t = (vae_trainer *)&t;
    TU_EXPECT_ERR(vae_trainer_create(&t, m, e, NULL, ctx, 1), VAE_ERR_INVALID, fn);
    assert_null(t);
    t = (vae_trainer *)&t;
    TU_EXPECT_ERR(vae_trainer_create(&t, m, e, o, NULL, 1), VAE_ERR_INVALID, fn);
    assert_null(t);
    t = (vae_trainer *)&t;
    TU_EXPECT_ERR_MSG(vae_trainer_create(&t, unbuilt, e, o, ctx, 1), VAE_ERR_STATE, fn, "build");
    assert_null(t);

    TU_OK(vae_trainer_create(&t, m, e, o, ctx, 1));
    TU_EXPECT_ERR(vae_trainer_apply(NULL), VAE_ERR_INVALID, "vae_trainer_apply");
    TU_EXPECT_ERR(vae_trainer_zero_grads(NULL), VAE_ERR_INVALID, "vae_trainer_zero_grads");
    TU_EXPECT_ERR(vae_trainer_reserve(NULL, 8), VAE_ERR_INVALID, "vae_trainer_reserve");
    TU_EXPECT_ERR(vae_trainer_reserve(t, 0), VAE_ERR_INVALID, "vae_trainer_reserve");
    TU_EXPECT_ERR(vae_trainer_reserve(t, ((size_t)1 << 20) + 1), VAE_ERR_INVALID,
                  "vae_trainer_reserve");
    TU_OK(vae_trainer_reserve(t, 16));
    size_t n = 99;
    assert_null(vae_trainer_grads(NULL, &n));
    assert_int_equal(n, 0);
    assert_non_null(vae_trainer_grads(t, NULL));

    float x[4] = {0.1f, 0.2f, 0.3f, 0.4f}, eps[2] = {0.5f, -0.5f};
    const char *fb = "vae_trainer_forward_backward";
    TU_EXPECT_ERR(vae_trainer_forward_backward(NULL, x, 2, NULL, NULL), VAE_ERR_INVALID, fb);
    TU_EXPECT_ERR(vae_trainer_forward_backward(t, NULL, 2, NULL, NULL), VAE_ERR_INVALID, fb);
    TU_EXPECT_ERR(vae_trainer_forward_backward(t, x, 0, NULL, NULL), VAE_ERR_INVALID, fb);
    TU_EXPECT_ERR(vae_trainer_forward_backward(t, x, ((size_t)1 << 20) + 1, NULL, NULL),
                  VAE_ERR_INVALID, fb);
    eps[1] = INFINITY;
    TU_EXPECT_ERR(vae_trainer_forward_backward(t, x, 2, eps, NULL), VAE_ERR_NUMERIC, fb);
    vae_epoch_stats st = tu_stats();
    st.size = 0;
    TU_EXPECT_ERR_MSG(vae_trainer_forward_backward(t, x, 2, NULL, &st), VAE_ERR_INVALID, fb,
                      "size");
    TU_ASSERT_ZERO_GRADS(t); /* nothing was added by the refused calls */
    TU_EXPECT_ERR(vae_trainer_step(NULL, x, 2, NULL), VAE_ERR_INVALID, "vae_trainer_step");
    assert_int_equal(vae_trainer_steps(t), 0);

    vae_trainer_free(t);
    vae_trainer_free(NULL);
    vae_optimizer_free(o);
    vae_context_free(ctx);
    vae_elbo_free(e);
    vae_model_free(unbuilt);
    vae_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_default_updates),
        cmocka_unit_test(test_adam),
        cmocka_unit_test(test_sgd),
        cmocka_unit_test(test_sgd_dampening),
        cmocka_unit_test(test_set_lr_between_steps),
        cmocka_unit_test(test_clip_norm),
        cmocka_unit_test(test_nonfinite_gradient),
        cmocka_unit_test(test_overflowing_update),
        cmocka_unit_test(test_large_finite_update),
        cmocka_unit_test(test_overflow_workers),
        cmocka_unit_test(test_pass_gradient_max),
        cmocka_unit_test(test_step_overflow_blocks),
        cmocka_unit_test(test_epoch_never_nonfinite),
        cmocka_unit_test(test_adam_tiny_eps),
        cmocka_unit_test(test_adam_flush_scale_invariant),
        cmocka_unit_test(test_nesterov_without_momentum),
        cmocka_unit_test(test_step_failure_zeroes_slab),
        cmocka_unit_test(test_failed_step_keeps_generator),
        cmocka_unit_test(test_overflow_after_tensor_set),
        cmocka_unit_test(test_step_bad_stats_zeroes_slab),
        cmocka_unit_test(test_shared_optimizer_separate_state),
        cmocka_unit_test(test_new_trainer_fresh_state),
        cmocka_unit_test(test_steps_count),
        cmocka_unit_test(test_bad_create),
        cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_bad_trainer_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
