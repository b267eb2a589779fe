/* Optimizers: Adam, AdamW and SGD (plain, momentum, Nesterov, weight decay)
 * against PyTorch's update rules written out in double, gradient clipping,
 * non-finite gradients, binding to one model, and bad input. */
#include <float.h>

#include "test_util.h"

#define N_STEPS 3

/* A tiny model: head 2->2 (6 parameters) and decoder 1->2 (4): 10 values. */
static vae_model *tiny(uint64_t seed)
{
    vae_model *m = NULL;
    TU_OK(vae_model_create_mlp(&m, 2, NULL, 0, 1, VAE_ACT_IDENTITY, VAE_LIKELIHOOD_GAUSSIAN,
                               seed));
    size_t n = 0;
    vae_model_params(m, &n);
    assert_int_equal(n, 10);
    return m;
}

/* Gradient of step t (1-based) for parameter i: mixed signs and sizes, one
 * parameter with a zero gradient throughout. */
static double grad_at(size_t i, int t)
{
    if (i == 3)
        return 0.0;
    return 0.3 * sin(1.7 * (double)i + 0.9 * t) + 0.05 * (double)(i % 3) - 0.02 * t;
}

static void set_start(vae_model *m, double *ref)
{
    size_t n = 0;
    float *p = vae_model_params(m, &n);
    for (size_t i = 0; i < n; i++) {
        p[i] = (float)(0.15 * (double)i - 0.6);
        ref[i] = p[i];
    }
}

static void set_grads(vae_model *m, int t)
{
    size_t n = 0;
    float *g = vae_model_grads(m, &n);
    for (size_t i = 0; i < n; i++)
        g[i] = (float)grad_at(i, t);
}

/* Parameters of O(1) after three float updates: the measured error is at
 * most 6.4e-8 (one ulp near 0.75); 5e-7 leaves 8x margin and is still below
 * 1e-3 of the smallest update made here (Adam at lr 1e-3), so a wrong bias
 * correction, eps placement, decay or momentum rule is caught. */
#define PARAM_TOL 5e-7

static void check_params(vae_model *m, const double *ref, const char *what, int t)
{
    size_t n = 0;
    const float *p = vae_model_params(m, &n);
    const float *g = vae_model_grads(m, NULL);
    for (size_t i = 0; i < n; i++) {
        if (!(fabs(p[i] - ref[i]) <= PARAM_TOL))
            fail_msg("%s step %d: p[%zu] = %.9g, expected %.9g", what, t, i, (double)p[i],
                     ref[i]);
        /* The step zeroes the gradients. */
        if (g[i] != 0.0f)
            fail_msg("%s step %d: gradient %zu = %g after the step, expected 0", what, t, i,
                     (double)g[i]);
    }
}

typedef struct adam_case {
    const char *name;
    double lr, b1, b2, eps, wd;
} adam_case;

static void run_adam(const adam_case *c)
{
    vae_model *m = tiny(1);
    vae_optimizer *o = NULL;
    TU_OK(vae_optimizer_adam_create(&o, (float)c->lr, (float)c->b1, (float)c->b2,
                                    (float)c->eps, (float)c->wd));
    double p[10], mom[10] = {0}, vel[10] = {0};
    set_start(m, p);
    /* The hyperparameters as the library stores them (float). */
    const double lr = (float)c->lr, b1 = (float)c->b1, b2 = (float)c->b2;
    const double eps = (float)c->eps, wd = (float)c->wd;
    for (int t = 1; t <= N_STEPS; t++) {
        set_grads(m, t);
        TU_OK(vae_optimizer_step(o, m));
        const double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
        for (size_t i = 0; i < 10; i++) {
            /* The gradient as the library sees it: the float in the slab. */
            const double g = (float)grad_at(i, t);
            p[i] *= 1.0 - lr * wd; /* decoupled weight decay (AdamW), first */
            mom[i] = b1 * mom[i] + (1.0 - b1) * g;
            vel[i] = b2 * vel[i] + (1.0 - b2) * g * g;
            p[i] -= lr / bc1 * mom[i] / (sqrt(vel[i]) / sqrt(bc2) + eps);
        }
        check_params(m, p, c->name, t);
    }
    vae_optimizer_free(o);
    vae_model_free(m);
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
    double wd;
} sgd_case;

static void run_sgd(const sgd_case *c)
{
    vae_model *m = tiny(2);
    vae_optimizer *o = NULL;
    TU_OK(vae_optimizer_sgd_create(&o, (float)c->lr, (float)c->momentum, c->nesterov,
                                   (float)c->wd));
    double p[10], buf[10] = {0};
    set_start(m, p);
    const double lr = (float)c->lr, mu = (float)c->momentum, wd = (float)c->wd;
    for (int t = 1; t <= N_STEPS; t++) {
        set_grads(m, t);
        TU_OK(vae_optimizer_step(o, m));
        for (size_t i = 0; i < 10; i++) {
            double g = (float)grad_at(i, t);
            g += wd * p[i];                              /* L2 decay in the gradient */
            if (mu != 0.0) {
                buf[i] = t == 1 ? g : mu * buf[i] + g;   /* no dampening */
                g = c->nesterov ? g + mu * buf[i] : buf[i];
            }
            p[i] -= lr * g;
        }
        check_params(m, p, c->name, t);
    }
    vae_optimizer_free(o);
    vae_model_free(m);
}

static void test_sgd(void **state)
{
    (void)state;
    const sgd_case cases[] = {
        {"sgd plain", 0.1, 0.0, 0, 0.0},
        {"sgd weight decay", 0.1, 0.0, 0, 0.05},
        {"sgd momentum", 0.1, 0.9, 0, 0.0},
        {"sgd momentum + weight decay", 0.1, 0.9, 0, 0.05},
        {"sgd nesterov", 0.1, 0.9, 1, 0.0},
        {"sgd nesterov + weight decay", 0.2, 0.5, 1, 0.1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_sgd(&cases[i]);
}

static void test_set_lr_between_steps(void **state)
{
    (void)state;
    vae_model *m = tiny(3);
    vae_optimizer *o = NULL;
    TU_OK(vae_optimizer_sgd_create(&o, 0.1f, 0.5f, 0, 0.0f));
    double p[10], buf[10] = {0};
    set_start(m, p);
    const double lrs[N_STEPS] = {0.1f, 0.025f, 0.4f};
    for (int t = 1; t <= N_STEPS; t++) {
        if (t > 1)
            TU_OK(vae_optimizer_set_lr(o, (float)lrs[t - 1]));
        set_grads(m, t);
        TU_OK(vae_optimizer_step(o, m));
        for (size_t i = 0; i < 10; i++) {
            double g = (float)grad_at(i, t);
            buf[i] = t == 1 ? g : 0.5 * buf[i] + g;
            p[i] -= lrs[t - 1] * buf[i];
        }
        check_params(m, p, "sgd with set_lr", t);
    }
    vae_optimizer_free(o);
    vae_model_free(m);
}

static void test_clip_norm(void **state)
{
    (void)state;
    /* Plain SGD with lr 1 makes the update the (clipped) gradient itself. */
    const float clips[] = {1.0f, 0.25f, 100.0f, 0.0f};
    for (size_t ci = 0; ci < 4; ci++) {
        vae_model *m = tiny(4);
        vae_optimizer *o = NULL;
        TU_OK(vae_optimizer_sgd_create(&o, 1.0f, 0.0f, 0, 0.0f));
        TU_OK(vae_optimizer_set_clip_norm(o, clips[ci]));
        size_t n = 0;
        float *p = vae_model_params(m, &n), *g = vae_model_grads(m, NULL);
        float p0[10];
        memcpy(p0, p, sizeof p0);
        double norm = 0.0;
        for (size_t i = 0; i < n; i++) {
            g[i] = (float)(0.5 * (double)i - 2.0); /* spread over the whole slab */
            norm += (double)g[i] * g[i];
        }
        norm = sqrt(norm); /* 3.6 */
        float g0[10];
        memcpy(g0, g, sizeof g0);
        TU_OK(vae_optimizer_step(o, m));
        const double scale = clips[ci] > 0.0f && norm > clips[ci] ? clips[ci] / norm : 1.0;
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
        vae_optimizer_free(o);
        vae_model_free(m);
    }
}

/* A NaN or infinite gradient: VAE_ERR_NUMERIC, and parameters, gradients
 * and optimizer state (momentum, step count) untouched: the following good
 * step gives exactly what it would have without the bad one. */
static void check_nonfinite(int adam, float bad)
{
    vae_model *m = tiny(5), *ref = tiny(5);
    vae_optimizer *o = NULL, *oref = NULL;
    if (adam) {
        TU_OK(vae_optimizer_adam_create(&o, 0.05f, 0.9f, 0.999f, 1e-8f, 0.0f));
        TU_OK(vae_optimizer_adam_create(&oref, 0.05f, 0.9f, 0.999f, 1e-8f, 0.0f));
    } else {
        TU_OK(vae_optimizer_sgd_create(&o, 0.1f, 0.9f, 0, 0.0f));
        TU_OK(vae_optimizer_sgd_create(&oref, 0.1f, 0.9f, 0, 0.0f));
    }
    size_t n = 0;
    float *p = vae_model_params(m, &n), *g = vae_model_grads(m, NULL);
    set_grads(m, 1);
    set_grads(ref, 1);
    TU_OK(vae_optimizer_step(o, m));
    TU_OK(vae_optimizer_step(oref, ref));

    float p_before[10], g_bad[10];
    memcpy(p_before, p, sizeof p_before);
    set_grads(m, 2);
    g[7] = bad;
    memcpy(g_bad, g, sizeof g_bad);
    TU_EXPECT_ERR(vae_optimizer_step(o, m), VAE_ERR_NUMERIC, "vae_optimizer_step");
    assert_memory_equal(p, p_before, sizeof p_before);
    assert_memory_equal(g, g_bad, sizeof g_bad);

    set_grads(m, 2);
    set_grads(ref, 2);
    TU_OK(vae_optimizer_step(o, m));
    TU_OK(vae_optimizer_step(oref, ref));
    assert_memory_equal(p, vae_model_params(ref, NULL), n * sizeof(float));
    vae_optimizer_free(o);
    vae_optimizer_free(oref);
    vae_model_free(m);
    vae_model_free(ref);
}

static void test_nonfinite_gradient(void **state)
{
    (void)state;
    const float bad[] = {NAN, INFINITY, -INFINITY};
    for (int adam = 0; adam < 2; adam++)
        for (size_t i = 0; i < 3; i++)
            check_nonfinite(adam, bad[i]);
}

/* Gives m the gradients of step t and checks that o refuses to step it with
 * VAE_ERR_STATE, a message containing needle, and m's parameters untouched
 * (its gradients stay for whoever steps it next). */
static void expect_refused(vae_optimizer *o, vae_model *m, int t, const char *needle)
{
    size_t n = 0;
    float *p = vae_model_params(m, &n), p0[10];
    assert_int_equal(n, 10);
    memcpy(p0, p, sizeof p0);
    set_grads(m, t);
    TU_EXPECT_ERR_MSG(vae_optimizer_step(o, m), VAE_ERR_STATE, "vae_optimizer_step", needle);
    assert_memory_equal(p, p0, sizeof p0);
}

static void test_binding_and_state(void **state)
{
    (void)state;
    vae_model *a = tiny(6), *b = tiny(7), *u = NULL;
    TU_OK(vae_model_create(&u, 2, 1, VAE_LIKELIHOOD_GAUSSIAN));
    vae_optimizer *o = NULL;
    TU_OK(vae_optimizer_adam_create(&o, 0.01f, 0.9f, 0.999f, 1e-8f, 0.0f));
    TU_EXPECT_ERR(vae_optimizer_step(NULL, a), VAE_ERR_INVALID, "vae_optimizer_step");
    TU_EXPECT_ERR(vae_optimizer_step(o, NULL), VAE_ERR_INVALID, "vae_optimizer_step");
    TU_EXPECT_ERR(vae_optimizer_step(o, u), VAE_ERR_STATE, "vae_optimizer_step");
    set_grads(a, 1);
    TU_OK(vae_optimizer_step(o, a));
    /* The state now has a's layout: another model is refused, untouched. */
    expect_refused(o, b, 1, "another model");
    /* ...and the bound model still steps. */
    set_grads(a, 2);
    TU_OK(vae_optimizer_step(o, a));
    vae_optimizer_free(o);
    vae_optimizer_free(NULL);
    vae_model_free(a);
    vae_model_free(b);
    vae_model_free(u);
}

/* A model freed and replaced must not inherit the state of the optimizer
 * that stepped it, even when the new model is allocated at the same address
 * (glibc usually gives it back; under AddressSanitizer it never does, and the
 * rule holds either way). */
static void test_replaced_model_is_refused(void **state)
{
    (void)state;
    for (int adam = 0; adam < 2; adam++) {
        vae_optimizer *o = NULL;
        if (adam)
            TU_OK(vae_optimizer_adam_create(&o, 0.01f, 0.9f, 0.999f, 1e-8f, 0.0f));
        else
            TU_OK(vae_optimizer_sgd_create(&o, 0.01f, 0.9f, 0, 0.0f));
        vae_model *a = tiny(6);
        set_grads(a, 1);
        TU_OK(vae_optimizer_step(o, a));
        uintptr_t old = (uintptr_t)a;
        vae_model_free(a);
        vae_model *b = tiny(6); /* same layout, so same parameter count */
        expect_refused(o, b, 1, "another model");
        print_message("optimizer %d: the new model %s the freed one's address\n", adam,
                      (uintptr_t)b == old ? "reuses" : "does not reuse");
        /* A fresh optimizer serves it. */
        vae_optimizer *o2 = NULL;
        TU_OK(vae_optimizer_sgd_create(&o2, 0.01f, 0.0f, 0, 0.0f));
        TU_OK(vae_optimizer_step(o2, b));
        vae_optimizer_free(o2);
        vae_optimizer_free(o);
        vae_model_free(b);
    }
}

/* Switching a model to another optimizer leaves the first one's state
 * behind: the first is refused from then on, the second keeps working. */
static void test_model_switched_to_another_optimizer(void **state)
{
    (void)state;
    vae_model *m = tiny(3);
    vae_optimizer *a = NULL, *b = NULL;
    TU_OK(vae_optimizer_adam_create(&a, 0.01f, 0.9f, 0.999f, 1e-8f, 0.0f));
    TU_OK(vae_optimizer_sgd_create(&b, 0.01f, 0.5f, 1, 0.0f));
    set_grads(m, 1);
    TU_OK(vae_optimizer_step(a, m));
    set_grads(m, 2);
    TU_OK(vae_optimizer_step(b, m));
    float *p = vae_model_params(m, NULL), p0[10];
    memcpy(p0, p, sizeof p0);
    expect_refused(a, m, 3, "another optimizer now steps");
    TU_OK(vae_optimizer_step(b, m));
    assert_memory_not_equal(p, p0, sizeof p0);
    vae_optimizer_free(a);
    vae_optimizer_free(b);
    vae_model_free(m);
}

static void test_bad_constructor_args(void **state)
{
    (void)state;
    const char *fa = "vae_optimizer_adam_create", *fs = "vae_optimizer_sgd_create";
    vae_optimizer *o = (vae_optimizer *)&o;
    TU_EXPECT_ERR(vae_optimizer_adam_create(NULL, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f),
                  VAE_ERR_INVALID, fa);
    const float bad_lr[] = {0.0f, -1e-3f, NAN, INFINITY};
    for (size_t i = 0; i < 4; i++) {
        TU_EXPECT_ERR(vae_optimizer_adam_create(&o, bad_lr[i], 0.9f, 0.999f, 1e-8f, 0.0f),
                      VAE_ERR_INVALID, fa);
        assert_null(o);
        o = (vae_optimizer *)&o;
        TU_EXPECT_ERR(vae_optimizer_sgd_create(&o, bad_lr[i], 0.0f, 0, 0.0f), VAE_ERR_INVALID,
                      fs);
        assert_null(o);
    }
    const float bad_beta[] = {-0.1f, 1.0f, 1.5f, NAN};
    for (size_t i = 0; i < 4; i++) {
        TU_EXPECT_ERR(vae_optimizer_adam_create(&o, 1e-3f, bad_beta[i], 0.999f, 1e-8f, 0.0f),
                      VAE_ERR_INVALID, fa);
        TU_EXPECT_ERR(vae_optimizer_adam_create(&o, 1e-3f, 0.9f, bad_beta[i], 1e-8f, 0.0f),
                      VAE_ERR_INVALID, fa);
    }
    const float bad_eps[] = {0.0f, -1e-8f, NAN, INFINITY};
    for (size_t i = 0; i < 4; i++)
        TU_EXPECT_ERR(vae_optimizer_adam_create(&o, 1e-3f, 0.9f, 0.999f, bad_eps[i], 0.0f),
                      VAE_ERR_INVALID, fa);
    const float bad_wd[] = {-0.1f, NAN, INFINITY};
    for (size_t i = 0; i < 3; i++) {
        TU_EXPECT_ERR(vae_optimizer_adam_create(&o, 1e-3f, 0.9f, 0.999f, 1e-8f, bad_wd[i]),
                      VAE_ERR_INVALID, fa);
        TU_EXPECT_ERR(vae_optimizer_sgd_create(&o, 0.1f, 0.9f, 0, bad_wd[i]), VAE_ERR_INVALID,
                      fs);
    }
    TU_EXPECT_ERR(vae_optimizer_sgd_create(NULL, 0.1f, 0.0f, 0, 0.0f), VAE_ERR_INVALID, fs);
    const float bad_mom[] = {-0.1f, 1.0f, 2.0f, NAN};
    for (size_t i = 0; i < 4; i++)
        TU_EXPECT_ERR(vae_optimizer_sgd_create(&o, 0.1f, bad_mom[i], 0, 0.0f), VAE_ERR_INVALID,
                      fs);
    TU_EXPECT_ERR(vae_optimizer_sgd_create(&o, 0.1f, 0.0f, 1, 0.0f), VAE_ERR_INVALID, fs);
    assert_null(o);
    /* Valid edge values. */
    TU_OK(vae_optimizer_adam_create(&o, 1e-3f, 0.0f, 0.0f, 1e-8f, 0.0f));
    vae_optimizer_free(o);
    TU_OK(vae_optimizer_sgd_create(&o, 0.1f, 0.0f, 0, 0.0f));
    vae_optimizer_free(o);
}

static void test_bad_setters(void **state)
{
    (void)state;
    vae_optimizer *o = NULL;
    TU_OK(vae_optimizer_sgd_create(&o, 0.1f, 0.0f, 0, 0.0f));
    TU_EXPECT_ERR(vae_optimizer_set_lr(NULL, 0.1f), VAE_ERR_INVALID, "vae_optimizer_set_lr");
    const float bad_lr[] = {0.0f, -0.0f, -1.0f, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof bad_lr / sizeof bad_lr[0]; i++)
        TU_EXPECT_ERR(vae_optimizer_set_lr(o, bad_lr[i]), VAE_ERR_INVALID,
                      "vae_optimizer_set_lr");
    TU_EXPECT_ERR(vae_optimizer_set_clip_norm(NULL, 1.0f), VAE_ERR_INVALID,
                  "vae_optimizer_set_clip_norm");
    const float bad_clip[] = {-1.0f, NAN, INFINITY};
    for (size_t i = 0; i < 3; i++)
        TU_EXPECT_ERR(vae_optimizer_set_clip_norm(o, bad_clip[i]), VAE_ERR_INVALID,
                      "vae_optimizer_set_clip_norm");
    TU_OK(vae_optimizer_set_clip_norm(o, 0.0f));

    /* The rejected values changed nothing: lr is still 0.1, no clipping. */
    vae_model *m = tiny(8);
    double p[10];
    set_start(m, p);
    set_grads(m, 1);
    TU_OK(vae_optimizer_step(o, m));
    for (size_t i = 0; i < 10; i++)
        p[i] -= (double)0.1f * (float)grad_at(i, 1);
    check_params(m, p, "sgd after rejected setters", 1);
    vae_model_free(m);
    vae_optimizer_free(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adam),
        cmocka_unit_test(test_sgd),
        cmocka_unit_test(test_set_lr_between_steps),
        cmocka_unit_test(test_clip_norm),
        cmocka_unit_test(test_nonfinite_gradient),
        cmocka_unit_test(test_binding_and_state),
        cmocka_unit_test(test_replaced_model_is_refused),
        cmocka_unit_test(test_model_switched_to_another_optimizer),
        cmocka_unit_test(test_bad_constructor_args),
        cmocka_unit_test(test_bad_setters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
