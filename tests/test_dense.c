/* The standalone dense layer and its seven fused activations: forward and
 * backward against naive double-precision loops, backward against central
 * finite differences, introspection, ownership by a model, and bad input. */
#include <float.h>

#include "test_util.h"

#define N_ACT 7

typedef struct shape {
    size_t in, out, batch;
} shape;

/* Batch 1, non-square both ways, and one shape large enough for the BLAS to
 * take its blocked path. */
static const shape shapes[] = {{1, 1, 1}, {3, 5, 1}, {5, 3, 2}, {7, 4, 5}, {64, 33, 9}};
#define N_SHAPES (sizeof shapes / sizeof shapes[0])

static double ref_act(int act, double z)
{
    switch (act) {
    case VAE_ACT_IDENTITY: return z;
    case VAE_ACT_RELU: return z > 0.0 ? z : 0.0;
    case VAE_ACT_LEAKY_RELU: return z > 0.0 ? z : 0.01 * z;
    case VAE_ACT_TANH: return tanh(z);
    case VAE_ACT_SIGMOID: return 1.0 / (1.0 + exp(-z));
    case VAE_ACT_SOFTPLUS: return (z > 0.0 ? z : 0.0) + log1p(exp(-fabs(z)));
    case VAE_ACT_ELU: return z > 0.0 ? z : expm1(z);
    }
    fail_msg("bad activation %d in the test", act);
    return 0.0;
}

static double ref_act_deriv(int act, double z)
{
    switch (act) {
    case VAE_ACT_IDENTITY: return 1.0;
    case VAE_ACT_RELU: return z > 0.0 ? 1.0 : 0.0;
    case VAE_ACT_LEAKY_RELU: return z > 0.0 ? 1.0 : 0.01;
    case VAE_ACT_TANH: return 1.0 - tanh(z) * tanh(z);
    case VAE_ACT_SIGMOID: {
        double s = 1.0 / (1.0 + exp(-z));
        return s * (1.0 - s);
    }
    case VAE_ACT_SOFTPLUS: return 1.0 / (1.0 + exp(-z));
    case VAE_ACT_ELU: return z > 0.0 ? 1.0 : exp(z);
    }
    fail_msg("bad activation %d in the test", act);
    return 0.0;
}

static int has_kink(int act)
{
    return act == VAE_ACT_RELU || act == VAE_ACT_LEAKY_RELU;
}

/* z[B][out] = x W^T + b in double, and zabs = |x| |W|^T + |b|, the scale
 * that bounds the float rounding error of the library's GEMM. */
static void ref_pre(const shape *s, const float *x, const float *p, double *z, double *zabs)
{
    const float *w = p, *b = p + s->in * s->out;
    for (size_t i = 0; i < s->batch; i++)
        for (size_t j = 0; j < s->out; j++) {
            double acc = b[j], accabs = fabs((double)b[j]);
            for (size_t k = 0; k < s->in; k++) {
                acc += (double)x[i * s->in + k] * w[j * s->in + k];
                accabs += fabs((double)x[i * s->in + k] * w[j * s->in + k]);
            }
            z[i * s->out + j] = acc;
            if (zabs)
                zabs[i * s->out + j] = accabs;
        }
}

typedef struct fixture {
    shape s;
    int act;
    vae_layer *layer;
    float *x;      /* [B][in] */
    float *p;      /* the layer's parameters, W[out][in] then b[out] (borrowed) */
    float *g;      /* the layer's gradients, same layout (borrowed) */
    size_t np;
} fixture;

/* A layer with x ~ U(-1, 1) and W ~ U(-2, 2)/sqrt(in), b ~ U(-1, 1): twice
 * the default init scale, so tanh and sigmoid also see their flat parts.
 * For ReLU and leaky ReLU the biases are then moved so that every
 * pre-activation is at least `margin` away from the kink at 0 (half the
 * outputs positive, half negative): finite differences never straddle it and
 * the derivative is unambiguous. */
static void fixture_make(fixture *f, const shape *s, int act, uint64_t seed, double margin)
{
    tu_rng r = {seed};
    f->s = *s;
    f->act = act;
    f->layer = NULL;
    TU_OK(vae_layer_dense_create(&f->layer, s->in, s->out, act));
    assert_int_equal(vae_layer_input_size(f->layer), s->in);
    assert_int_equal(vae_layer_output_size(f->layer), s->out);
    f->p = vae_layer_params(f->layer, &f->np);
    assert_non_null(f->p);
    assert_int_equal(f->np, s->in * s->out + s->out);
    size_t ng = 0;
    f->g = vae_layer_grads(f->layer, &ng);
    assert_non_null(f->g);
    assert_int_equal(ng, f->np);
    f->x = tu_alloc(s->batch * s->in, sizeof(float));
    tu_fill_range(&r, f->x, s->batch * s->in, -1.0, 1.0);
    double bound = 2.0 / sqrt((double)s->in);
    tu_fill_range(&r, f->p, s->in * s->out, -bound, bound);
    tu_fill_range(&r, f->p + s->in * s->out, s->out, -1.0, 1.0);
    if (has_kink(act)) {
        float *b = f->p + s->in * s->out;
        double *z = tu_alloc(s->batch * s->out, sizeof *z);
        for (size_t j = 0; j < s->out; j++)
            b[j] = 0.0f;
        ref_pre(s, f->x, f->p, z, NULL);
        for (size_t j = 0; j < s->out; j++) {
            double reach = 0.0;
            for (size_t i = 0; i < s->batch; i++)
                reach = fmax(reach, fabs(z[i * s->out + j]));
            b[j] = (float)((j % 2 ? -1.0 : 1.0) * (reach + 2.0 * margin));
        }
        free(z);
    }
}

static void fixture_free(fixture *f)
{
    vae_layer_free(f->layer);
    free(f->x);
}

static void test_new_layer_zero_and_init_bounds(void **state)
{
    (void)state;
    vae_layer *l = NULL;
    TU_OK(vae_layer_dense_create(&l, 10, 7, VAE_ACT_TANH));
    size_t n = 0;
    float *p = vae_layer_params(l, &n);
    assert_int_equal(n, 77);
    for (size_t i = 0; i < n; i++)
        assert_true(p[i] == 0.0f);
    vae_rng *rng = NULL;
    TU_OK(vae_rng_create(&rng, 5));
    TU_OK(vae_layer_init(l, rng));
    /* PyTorch's default: every weight and bias in +-1/sqrt(fan_in). */
    const double bound = 1.0 / sqrt(10.0);
    double maxabs = 0.0;
    size_t nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        assert_true(fabs(p[i]) <= bound);
        maxabs = fmax(maxabs, fabs(p[i]));
        nonzero += p[i] != 0.0f;
    }
    /* The draws fill the range, not a sliver of it: with 77 uniform draws the
     * largest |p| is below 0.8 bound with probability 0.8^77 ~ 4e-8. */
    assert_true(maxabs > 0.8 * bound);
    assert_int_equal(nonzero, n);
    size_t ng = 0;
    float *g = vae_layer_grads(l, &ng);
    assert_int_equal(ng, n);
    for (size_t i = 0; i < ng; i++)
        assert_true(g[i] == 0.0f);
    vae_rng_free(rng);
    vae_layer_free(l);
}

static void test_forward_against_naive(void **state)
{
    (void)state;
    for (int act = 0; act < N_ACT; act++)
        for (size_t si = 0; si < N_SHAPES; si++) {
            const shape *s = &shapes[si];
            fixture f;
            fixture_make(&f, s, act, 1000 + 17 * (uint64_t)act + si, 0.0);
            size_t ny = s->batch * s->out;
            float *y = tu_alloc(ny, sizeof *y);
            double *z = tu_alloc(ny, sizeof *z), *zabs = tu_alloc(ny, sizeof *zabs);
            TU_OK(vae_layer_forward(f.layer, f.x, s->batch, y));
            ref_pre(s, f.x, f.p, z, zabs);
            for (size_t k = 0; k < ny; k++) {
                double ref = ref_act(act, z[k]);
                /* Float GEMM: a sum of in+1 products has error at most
                 * ~(in+1) eps times the sum of absolute values; every
                 * activation is 1-Lipschitz so that carries through, and its
                 * own float evaluation adds a few ulps of the result. */
                double tol = 2.0 * (double)(s->in + 1) * FLT_EPSILON * zabs[k] +
                             4.0 * FLT_EPSILON * fabs(ref) + 1e-30;
                if (!(fabs(y[k] - ref) <= tol))
                    fail_msg("act %d shape %zux%zu batch %zu: y[%zu] = %.9g, reference %.9g",
                             act, s->in, s->out, s->batch, k, (double)y[k], ref);
            }
            free(y);
            free(z);
            free(zabs);
            fixture_free(&f);
        }
}

/* L = <layer(x), r> in double, from the library's float forward. */
static double loss_at(fixture *f, const float *x, const float *r, float *y)
{
    TU_OK(vae_layer_forward(f->layer, x, f->s.batch, y));
    double l = 0.0;
    for (size_t k = 0; k < f->s.batch * f->s.out; k++)
        l += (double)y[k] * r[k];
    return l;
}

static void check_backward(int act, const shape *s, uint64_t seed)
{
    const double margin = 0.25, h = 1e-2;
    fixture f;
    fixture_make(&f, s, act, seed, margin);
    tu_rng r = {seed ^ 0xabcdefULL};
    const size_t nx = s->batch * s->in, ny = s->batch * s->out, np = f.np;
    float *y = tu_alloc(ny, sizeof *y), *dy = tu_alloc(ny, sizeof *dy);
    float *dy_copy = tu_alloc(ny, sizeof *dy_copy), *dx = tu_alloc(nx, sizeof *dx);
    float *g1 = tu_alloc(np, sizeof *g1), *dx1 = tu_alloc(nx, sizeof *dx1);
    double *z = tu_alloc(ny, sizeof *z), *dz = tu_alloc(ny, sizeof *dz);
    double *gtol = tu_alloc(np, sizeof *gtol); /* rounding bound of each gradient */
    tu_fill_range(&r, dy, ny, -1.0, 1.0);
    memcpy(dy_copy, dy, ny * sizeof *dy);

    /* A larger forward first: backward must use the last forward's batch and
     * inputs, not a stale cache. */
    {
        size_t big = s->batch + 3;
        float *xb = tu_alloc(big * s->in, sizeof *xb), *yb = tu_alloc(big * s->out, sizeof *yb);
        tu_fill_range(&r, xb, big * s->in, -3.0, 3.0);
        TU_OK(vae_layer_forward(f.layer, xb, big, yb));
        free(xb);
        free(yb);
    }
    TU_OK(vae_layer_forward(f.layer, f.x, s->batch, y));
    memset(f.g, 0, np * sizeof *f.g);
    for (size_t k = 0; k < nx; k++)
        dx[k] = 1e6f; /* dx is written, not added to */
    TU_OK(vae_layer_backward(f.layer, dy, dx));
    assert_memory_equal(dy, dy_copy, ny * sizeof *dy); /* dy is not modified */
    memcpy(g1, f.g, np * sizeof *g1);
    memcpy(dx1, dx, nx * sizeof *dx);

    /* Naive double reference: dz = dy act'(z), dx = dz W, dW = dz^T x,
     * db = column sums of dz. */
    ref_pre(s, f.x, f.p, z, NULL);
    for (size_t k = 0; k < ny; k++) {
        if (has_kink(act))
            assert_true(fabs(z[k]) >= margin);
        dz[k] = dy[k] * ref_act_deriv(act, z[k]);
    }
    const float *w = f.p;
    /* Tolerances: sums of `batch` or `out` float products (rounding
     * ~count * eps of the absolute sum), plus the library's act'(z) taken from
     * the float output y (a few eps absolute, e.g. 1 - y^2 for tanh). */
    for (size_t i = 0; i < s->batch; i++)
        for (size_t k = 0; k < s->in; k++) {
            double ref = 0.0, scale = 0.0;
            for (size_t j = 0; j < s->out; j++) {
                ref += dz[i * s->out + j] * w[j * s->in + k];
                scale += fabs(dy[i * s->out + j] * w[j * s->in + k]);
            }
            TU_CLOSE(dx1[i * s->in + k], ref, 0.0,
                     (2.0 * (double)s->out + 16.0) * FLT_EPSILON * scale + 1e-30);
        }
    for (size_t j = 0; j < s->out; j++) {
        double refb = 0.0, scaleb = 0.0;
        for (size_t i = 0; i < s->batch; i++) {
            refb += dz[i * s->out + j];
            scaleb += fabs(dy[i * s->out + j]);
        }
        gtol[s->in * s->out + j] = (2.0 * (double)s->batch + 16.0) * FLT_EPSILON * scaleb + 1e-30;
        TU_CLOSE(g1[s->in * s->out + j], refb, 0.0, gtol[s->in * s->out + j]);
        for (size_t k = 0; k < s->in; k++) {
            double ref = 0.0, scale = 0.0;
            for (size_t i = 0; i < s->batch; i++) {
                ref += dz[i * s->out + j] * f.x[i * s->in + k];
                scale += fabs(dy[i * s->out + j] * f.x[i * s->in + k]);
            }
            gtol[j * s->in + k] = (2.0 * (double)s->batch + 16.0) * FLT_EPSILON * scale + 1e-30;
            TU_CLOSE(g1[j * s->in + k], ref, 0.0, gtol[j * s->in + k]);
        }
    }

    /* Central differences along random unit directions v = (vx, vp) of the
     * inputs and all parameters jointly, then of the inputs alone and the
     * parameters alone, compared with <(dx, dW, db), v>. */
    const size_t nt = nx + np;
    double *v = tu_alloc(nt, sizeof *v);
    float *xp = tu_alloc(nx, sizeof *xp), *p0 = tu_alloc(np, sizeof *p0);
    double *zt = tu_alloc(ny, sizeof *zt);
    memcpy(p0, f.p, np * sizeof *p0);
    double gnorm = 0.0;
    for (size_t k = 0; k < nx; k++)
        gnorm += (double)dx1[k] * dx1[k];
    for (size_t k = 0; k < np; k++)
        gnorm += (double)g1[k] * g1[k];
    gnorm = sqrt(gnorm);
    for (int trial = 0; trial < 5; trial++) {
        tu_unit_direction(&r, v, nt);
        if (trial == 3)
            memset(v + nx, 0, np * sizeof *v); /* inputs only */
        if (trial == 4)
            memset(v, 0, nx * sizeof *v);      /* parameters only */
        double vn = 0.0;
        for (size_t k = 0; k < nt; k++)
            vn += v[k] * v[k];
        vn = sqrt(vn);
        for (size_t k = 0; k < nt; k++)
            v[k] /= vn;
        double lp[2];
        for (int side = 0; side < 2; side++) {
            double t = side ? -h : h;
            for (size_t k = 0; k < nx; k++)
                xp[k] = (float)(f.x[k] + t * v[k]);
            for (size_t k = 0; k < np; k++)
                f.p[k] = (float)(p0[k] + t * v[nx + k]);
            if (has_kink(act)) {
                /* The perturbed point is on the same side of every kink. */
                ref_pre(s, xp, f.p, zt, NULL);
                for (size_t k = 0; k < ny; k++)
                    assert_true(zt[k] * z[k] > 0.0);
            }
            lp[side] = loss_at(&f, xp, dy, y);
        }
        memcpy(f.p, p0, np * sizeof *p0);
        double fd = (lp[0] - lp[1]) / (2.0 * h);
        double an = tu_dot_fd(dx1, v, nx) + tu_dot_fd(g1, v + nx, np);
        /* h = 1e-2: the O(h^2) truncation error of the central difference is
         * ~1e-5 for these smooth, O(1)-curvature functions (exactly zero for
         * the piecewise-linear ones away from kinks), and the float forward's
         * rounding (~1e-6 on L) divided by 2h stays ~1e-4. Measured: at most
         * 1.1e-4 absolute over all activations and shapes. The bound is 1e-2
         * relative to the directional derivative plus 1e-4 of the full
         * gradient norm (a directional derivative can cancel to near zero);
         * that leaves a margin of ~30x for correct code while a wrong
         * factor, sign, transpose or missing term moves the result by a
         * sizeable fraction of the gradient norm. */
        double tol = 1e-2 * fabs(an) + 1e-4 * (1.0 + gnorm);
        if (!(fabs(fd - an) <= tol))
            fail_msg("act %d shape %zux%zu batch %zu trial %d: finite difference %.9g, "
                     "backward %.9g (tol %.3g)",
                     act, s->in, s->out, s->batch, trial, fd, an, tol);
    }

    /* Backward adds into the gradients: starting from g1, two more calls
     * after the same forward give 3 g1 (and write the same dx again). Each
     * accumulation rounds against the running value (the bias sum adds row by
     * row), so the bound is a few times the per-gradient rounding bound. */
    TU_OK(vae_layer_forward(f.layer, f.x, s->batch, y));
    memcpy(f.g, g1, np * sizeof *g1);
    TU_OK(vae_layer_backward(f.layer, dy, dx));
    TU_OK(vae_layer_backward(f.layer, dy, NULL)); /* dx may be NULL */
    for (size_t k = 0; k < np; k++)
        TU_CLOSE(f.g[k], 3.0 * (double)g1[k], 0.0, 6.0 * gtol[k]);
    for (size_t k = 0; k < nx; k++)
        TU_CLOSE(dx[k], dx1[k], 1e-6, 1e-30);

    free(v);
    free(xp);
    free(p0);
    free(zt);
    free(y);
    free(dy);
    free(dy_copy);
    free(dx);
    free(g1);
    free(dx1);
    free(z);
    free(dz);
    free(gtol);
    fixture_free(&f);
}

static void test_backward_all_activations(void **state)
{
    (void)state;
    for (int act = 0; act < N_ACT; act++)
        for (size_t si = 0; si < N_SHAPES; si++)
            check_backward(act, &shapes[si], 5000 + 31 * (uint64_t)act + si);
}

static void test_bad_create(void **state)
{
    (void)state;
    vae_layer *l = (vae_layer *)&l; /* must be reset to NULL on failure */
    TU_EXPECT_ERR(vae_layer_dense_create(NULL, 3, 4, VAE_ACT_RELU), VAE_ERR_INVALID,
                  "vae_layer_dense_create");
    TU_EXPECT_ERR(vae_layer_dense_create(&l, 0, 4, VAE_ACT_RELU), VAE_ERR_INVALID,
                  "vae_layer_dense_create");
    assert_null(l);
    l = (vae_layer *)&l;
    TU_EXPECT_ERR(vae_layer_dense_create(&l, 3, 0, VAE_ACT_RELU), VAE_ERR_INVALID,
                  "vae_layer_dense_create");
    assert_null(l);
    TU_EXPECT_ERR(vae_layer_dense_create(&l, 3, 4, -1), VAE_ERR_INVALID,
                  "vae_layer_dense_create");
    TU_EXPECT_ERR(vae_layer_dense_create(&l, 3, 4, 7), VAE_ERR_INVALID,
                  "vae_layer_dense_create");
    TU_EXPECT_ERR(vae_layer_dense_create(&l, 3, 4, 1000), VAE_ERR_INVALID,
                  "vae_layer_dense_create");
    /* Sizes whose product cannot be a weight matrix. */
    TU_EXPECT_ERR(vae_layer_dense_create(&l, SIZE_MAX, 2, VAE_ACT_RELU), VAE_ERR_INVALID,
                  "vae_layer_dense_create");
    TU_EXPECT_ERR(vae_layer_dense_create(&l, (size_t)1 << 20, (size_t)1 << 20, VAE_ACT_RELU),
                  VAE_ERR_INVALID, "vae_layer_dense_create");
    assert_null(l);
    for (int act = 0; act < N_ACT; act++) {
        TU_OK(vae_layer_dense_create(&l, 2, 2, act));
        vae_layer_free(l);
    }
    vae_layer_free(NULL);
}

static void test_bad_forward_backward(void **state)
{
    (void)state;
    vae_layer *l = NULL;
    vae_rng *rng = NULL;
    TU_OK(vae_layer_dense_create(&l, 3, 2, VAE_ACT_TANH));
    TU_OK(vae_rng_create(&rng, 1));
    float x[6] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f}, y[4], dy[4] = {1, 1, 1, 1}, dx[6];

    TU_EXPECT_ERR(vae_layer_init(NULL, rng), VAE_ERR_INVALID, "vae_layer_init");
    TU_EXPECT_ERR(vae_layer_init(l, NULL), VAE_ERR_INVALID, "vae_layer_init");

    TU_EXPECT_ERR(vae_layer_backward(l, dy, dx), VAE_ERR_STATE, "vae_layer_backward");
    TU_EXPECT_ERR(vae_layer_forward(NULL, x, 2, y), VAE_ERR_INVALID, "vae_layer_forward");
    TU_EXPECT_ERR(vae_layer_forward(l, NULL, 2, y), VAE_ERR_INVALID, "vae_layer_forward");
    TU_EXPECT_ERR(vae_layer_forward(l, x, 2, NULL), VAE_ERR_INVALID, "vae_layer_forward");
    TU_EXPECT_ERR(vae_layer_forward(l, x, 0, y), VAE_ERR_INVALID, "vae_layer_forward");
    /* A failed forward leaves no usable state behind. */
    TU_EXPECT_ERR(vae_layer_backward(l, dy, dx), VAE_ERR_STATE, "vae_layer_backward");
    TU_EXPECT_ERR(vae_layer_forward(l, x, SIZE_MAX / 2, y), VAE_ERR_INVALID,
                  "vae_layer_forward");

    TU_OK(vae_layer_forward(l, x, 2, y));
    TU_EXPECT_ERR(vae_layer_backward(NULL, dy, dx), VAE_ERR_INVALID, "vae_layer_backward");
    TU_EXPECT_ERR(vae_layer_backward(l, NULL, dx), VAE_ERR_INVALID, "vae_layer_backward");
    TU_OK(vae_layer_backward(l, dy, dx));

    /* Getters on NULL. */
    size_t n = 99;
    assert_null(vae_layer_params(NULL, &n));
    assert_int_equal(n, 0);
    n = 99;
    assert_null(vae_layer_grads(NULL, &n));
    assert_int_equal(n, 0);
    assert_int_equal(vae_layer_input_size(NULL), 0);
    assert_int_equal(vae_layer_output_size(NULL), 0);
    assert_non_null(vae_layer_params(l, NULL));

    vae_rng_free(rng);
    vae_layer_free(l);
}

/* Every VAE_LAYER_* geometry value of a layer, in order INPUTS ..
 * OUTPUT_PADDING (14 values). */
static void layer_geometry(const vae_layer *l, size_t got[14])
{
    for (int q = VAE_LAYER_INPUTS; q <= VAE_LAYER_OUTPUT_PADDING; q++) {
        size_t v = (size_t)0xdeadbeef;
        TU_OK(vae_layer_get_param(l, q, &v));
        got[q - VAE_LAYER_INPUTS] = v;
    }
}

/* Introspection of dense layers: kind, activation and every geometry value
 * (the convolution ones 0), for standalone layers and layers a model owns;
 * unknown parameters and NULL refused. */
static void test_introspection(void **state)
{
    (void)state;
    const size_t dims[][2] = {{1, 1}, {3, 5}, {784, 400}, {5000, 2}};
    for (int act = 0; act < N_ACT; act++)
        for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
            vae_layer *l = NULL;
            TU_OK(vae_layer_dense_create(&l, dims[d][0], dims[d][1], act));
            assert_int_equal(vae_layer_kind(l), VAE_LAYER_DENSE);
            assert_int_equal(vae_layer_activation(l), act);
            size_t got[14];
            layer_geometry(l, got);
            assert_int_equal(got[VAE_LAYER_INPUTS - 1], dims[d][0]);
            assert_int_equal(got[VAE_LAYER_OUTPUTS - 1], dims[d][1]);
            assert_int_equal(got[VAE_LAYER_PARAMS - 1], dims[d][0] * dims[d][1] + dims[d][1]);
            for (int q = VAE_LAYER_IN_CHANNELS; q <= VAE_LAYER_OUTPUT_PADDING; q++)
                if (got[q - 1] != 0)
                    fail_msg("dense layer: parameter %d is %zu, expected 0", q, got[q - 1]);
            size_t n = 0;
            assert_non_null(vae_layer_params(l, &n));
            assert_int_equal(n, got[VAE_LAYER_PARAMS - 1]);
            vae_layer_free(l);
        }

    vae_layer *l = NULL;
    TU_OK(vae_layer_dense_create(&l, 3, 2, VAE_ACT_ELU));
    const char *fn = "vae_layer_get_param";
    const int bad[] = {0, -1, VAE_LAYER_OUTPUT_PADDING + 1, 1000};
    size_t v = 77;
    for (size_t i = 0; i < 4; i++) {
        TU_EXPECT_ERR(vae_layer_get_param(l, bad[i], &v), VAE_ERR_INVALID, fn);
        assert_int_equal(v, 77); /* nothing written */
    }
    TU_EXPECT_ERR(vae_layer_get_param(NULL, VAE_LAYER_INPUTS, &v), VAE_ERR_INVALID, fn);
    TU_EXPECT_ERR(vae_layer_get_param(l, VAE_LAYER_INPUTS, NULL), VAE_ERR_INVALID, fn);
    assert_int_equal(vae_layer_kind(NULL), -1);
    assert_int_equal(vae_layer_activation(NULL), -1);
    vae_layer_free(l);

    /* The layers of a model, through vae_model_layer(): encoder, head,
     * decoder, with the activations they were given. */
    const size_t hidden[2] = {7, 5};
    vae_model *m = NULL;
    TU_OK(vae_model_create_mlp(&m, 9, hidden, 2, 3, VAE_ACT_SOFTPLUS, VAE_LIKELIHOOD_BERNOULLI,
                               1));
    assert_int_equal(vae_model_layer_count(m), 6);
    assert_int_equal(vae_model_encoder_layer_count(m), 2);
    /* Encoder 9-7-5, head 5 -> 2*3 (identity), decoder 3-5-7-9 with the last
     * layer identity (logits). */
    const size_t want[6][2] = {{9, 7}, {7, 5}, {5, 6}, {3, 5}, {5, 7}, {7, 9}};
    const int want_act[6] = {VAE_ACT_SOFTPLUS, VAE_ACT_SOFTPLUS, VAE_ACT_IDENTITY,
                             VAE_ACT_SOFTPLUS, VAE_ACT_SOFTPLUS, VAE_ACT_IDENTITY};
    size_t total = 0;
    for (size_t i = 0; i < 6; i++) {
        const vae_layer *ml = vae_model_layer(m, i);
        assert_non_null(ml);
        assert_int_equal(vae_layer_kind(ml), VAE_LAYER_DENSE);
        assert_int_equal(vae_layer_activation(ml), want_act[i]);
        size_t got[14];
        layer_geometry(ml, got);
        assert_int_equal(got[VAE_LAYER_INPUTS - 1], want[i][0]);
        assert_int_equal(got[VAE_LAYER_OUTPUTS - 1], want[i][1]);
        assert_int_equal(vae_layer_input_size(ml), want[i][0]);
        assert_int_equal(vae_layer_output_size(ml), want[i][1]);
        total += got[VAE_LAYER_PARAMS - 1];
    }
    assert_null(vae_model_layer(m, 6));
    assert_null(vae_model_layer(NULL, 0));
    assert_int_equal(vae_model_param_count(m), total);
    vae_model_free(m);
}

static void test_layer_in_model_is_driven_by_model(void **state)
{
    (void)state;
    vae_model *m = NULL;
    vae_layer *enc = NULL, *dec = NULL;
    TU_OK(vae_model_create(&m, 3, 2, VAE_LIKELIHOOD_BERNOULLI));
    TU_OK(vae_layer_dense_create(&enc, 3, 4, VAE_ACT_TANH));
    TU_OK(vae_layer_dense_create(&dec, 2, 3, VAE_ACT_IDENTITY));
    float x[3] = {0.1f, 0.2f, 0.3f}, y[4], dy[4] = {1, 1, 1, 1};
    /* A forward on the standalone layer first, so the STATE below comes from
     * ownership and not from a missing forward. */
    TU_OK(vae_layer_forward(enc, x, 1, y));
    assert_non_null(vae_layer_params(enc, NULL));
    /* The add takes the layer from the caller: the pointer becomes NULL.
     * A copy kept before (a documented mistake) still reaches the layer. */
    vae_layer *enc_copy = enc, *dec_copy = dec;
    TU_OK(vae_model_add_encoder_layer(m, &enc));
    TU_OK(vae_model_add_decoder_layer(m, &dec));
    assert_null(enc);
    assert_null(dec);
    TU_EXPECT_ERR(vae_layer_forward(enc_copy, x, 1, y), VAE_ERR_STATE, "vae_layer_forward");
    TU_EXPECT_ERR(vae_layer_backward(enc_copy, dy, NULL), VAE_ERR_STATE, "vae_layer_backward");
    TU_OK(vae_model_build(m, 1));
    TU_EXPECT_ERR(vae_layer_forward(enc_copy, x, 1, y), VAE_ERR_STATE, "vae_layer_forward");
    TU_EXPECT_ERR(vae_layer_forward(dec_copy, x, 1, y), VAE_ERR_STATE, "vae_layer_forward");
    TU_EXPECT_ERR(vae_layer_backward(enc_copy, dy, NULL), VAE_ERR_STATE, "vae_layer_backward");
    vae_rng *rng = NULL;
    TU_OK(vae_rng_create(&rng, 1));
    TU_EXPECT_ERR(vae_layer_init(enc_copy, rng), VAE_ERR_STATE, "vae_layer_init");

    /* A model's layer has no parameters or gradients of its own to hand
     * out: they live in the model's slab and in a trainer. Through the copy
     * and through vae_model_layer() alike. */
    for (size_t i = 0; i < vae_model_layer_count(m); i++) {
        vae_layer *ml = (vae_layer *)vae_model_layer(m, i);
        size_t n = 99;
        assert_null(vae_layer_params(ml, &n));
        assert_int_equal(n, 0);
        n = 99;
        assert_null(vae_layer_grads(ml, &n));
        assert_int_equal(n, 0);
        TU_EXPECT_ERR(vae_layer_forward(ml, x, 1, y), VAE_ERR_STATE, "vae_layer_forward");
    }
    assert_ptr_equal(vae_model_layer(m, 0), enc_copy);
    assert_null(vae_layer_params(enc_copy, NULL));
    assert_null(vae_layer_grads(dec_copy, NULL));
    /* Getters still work on them. */
    assert_int_equal(vae_layer_kind(enc_copy), VAE_LAYER_DENSE);
    assert_int_equal(vae_layer_activation(dec_copy), VAE_ACT_IDENTITY);

    /* Freeing a model's layer through the copy is ignored (the model frees
     * it, once: AddressSanitizer would report a double free). */
    vae_layer_free(enc_copy);
    vae_layer_free(dec_copy);
    /* Handing it to another model is refused, and does not free it. */
    vae_model *m2 = NULL;
    TU_OK(vae_model_create(&m2, 3, 2, VAE_LIKELIHOOD_BERNOULLI));
    vae_layer *stolen = enc_copy;
    TU_EXPECT_ERR(vae_model_add_encoder_layer(m2, &stolen), VAE_ERR_INVALID,
                  "vae_model_add_encoder_layer");
    assert_null(stolen);
    assert_int_equal(vae_model_layer_count(m2), 0);
    /* The first model still runs with it. */
    vae_context *ctx = NULL;
    TU_OK(vae_context_create(&ctx));
    float mu[2], lv[2];
    TU_OK(vae_encode(ctx, m, x, 1, mu, lv));
    assert_true(tu_all_finite(mu, 2) && tu_all_finite(lv, 2));

    /* A failed add frees the layer and clears the pointer (LeakSanitizer
     * would report it otherwise): the built model refuses new layers. */
    vae_layer *late = NULL;
    TU_OK(vae_layer_dense_create(&late, 3, 3, VAE_ACT_RELU));
    TU_EXPECT_ERR(vae_model_add_encoder_layer(m, &late), VAE_ERR_STATE,
                  "vae_model_add_encoder_layer");
    assert_null(late);
    vae_layer_free(late); /* harmless */

    vae_context_free(ctx);
    vae_rng_free(rng);
    vae_model_free(m2);
    vae_model_free(m); /* frees enc and dec */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_layer_zero_and_init_bounds),
        cmocka_unit_test(test_forward_against_naive),
        cmocka_unit_test(test_backward_all_activations),
        cmocka_unit_test(test_bad_create),
        cmocka_unit_test(test_bad_forward_backward),
        cmocka_unit_test(test_introspection),
        cmocka_unit_test(test_layer_in_model_is_driven_by_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
