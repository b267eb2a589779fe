/* Conv2D and ConvTranspose2D: forward against direct loops, the adjoint
 * identity, backward against finite differences, a whole convolutional VAE's
 * gradient (through a trainer), model files, introspection, and bad
 * geometry. */
#include "test_util.h"

typedef struct geo {
    size_t ci, h, w, co, kh, kw, s, p, op, batch;
} geo;

static size_t conv_out(size_t in, size_t k, size_t s, size_t p)
{
    return (in + 2 * p - k) / s + 1;
}

static size_t convt_out(size_t in, size_t k, size_t s, size_t p, size_t op)
{
    return (in - 1) * s - 2 * p + k + op;
}

static double act_ref(int act, double z)
{
    switch (act) {
    case VAE_ACT_TANH: return tanh(z);
    case VAE_ACT_SIGMOID: return 1.0 / (1.0 + exp(-z));
    case VAE_ACT_RELU: return z > 0 ? z : 0;
    default: return z;
    }
}

/* The direct 7-loop convolution, in double. */
static void conv_naive(const geo *g, int act, const float *x, const float *W, const float *b,
                       double *y)
{
    size_t oh = conv_out(g->h, g->kh, g->s, g->p), ow = conv_out(g->w, g->kw, g->s, g->p);
    for (size_t n = 0; n < g->batch; n++)
        for (size_t oc = 0; oc < g->co; oc++)
            for (size_t oy = 0; oy < oh; oy++)
                for (size_t ox = 0; ox < ow; ox++) {
                    double s = b[oc];
                    for (size_t ic = 0; ic < g->ci; ic++)
                        for (size_t i = 0; i < g->kh; i++)
                            for (size_t j = 0; j < g->kw; j++) {
                                long iy = (long)(oy * g->s + i) - (long)g->p;
                                long ix = (long)(ox * g->s + j) - (long)g->p;
                                if (iy < 0 || ix < 0 || iy >= (long)g->h || ix >= (long)g->w)
                                    continue;
                                s += (double)W[((oc * g->ci + ic) * g->kh + i) * g->kw + j] *
                                     x[((n * g->ci + ic) * g->h + (size_t)iy) * g->w +
                                       (size_t)ix];
                            }
                    y[((n * g->co + oc) * oh + oy) * ow + ox] = act_ref(act, s);
                }
}

/* The transposed convolution as a scatter of every input pixel, in double. */
static void convt_naive(const geo *g, int act, const float *x, const float *W, const float *b,
                        double *y)
{
    size_t oh = convt_out(g->h, g->kh, g->s, g->p, g->op);
    size_t ow = convt_out(g->w, g->kw, g->s, g->p, g->op);
    size_t per = g->co * oh * ow;
    for (size_t n = 0; n < g->batch; n++) {
        double *yn = y + n * per;
        for (size_t k = 0; k < per; k++)
            yn[k] = b[k / (oh * ow)];
        for (size_t ic = 0; ic < g->ci; ic++)
            for (size_t iy = 0; iy < g->h; iy++)
                for (size_t ix = 0; ix < g->w; ix++) {
                    double v = x[((n * g->ci + ic) * g->h + iy) * g->w + ix];
                    for (size_t oc = 0; oc < g->co; oc++)
                        for (size_t i = 0; i < g->kh; i++)
                            for (size_t j = 0; j < g->kw; j++) {
                                long oy = (long)(iy * g->s + i) - (long)g->p;
                                long ox = (long)(ix * g->s + j) - (long)g->p;
                                if (oy < 0 || ox < 0 || oy >= (long)oh || ox >= (long)ow)
                                    continue;
                                yn[(oc * oh + (size_t)oy) * ow + (size_t)ox] +=
                                    v * W[((ic * g->co + oc) * g->kh + i) * g->kw + j];
                            }
                }
        for (size_t k = 0; k < per; k++)
            yn[k] = act_ref(act, yn[k]);
    }
}

static vae_layer *make(const geo *g, int transpose, int act)
{
    vae_layer *l = NULL;
    if (transpose)
        TU_OK(vae_layer_conv2d_transpose_create(&l, g->ci, g->h, g->w, g->co, g->kh, g->kw,
                                                g->s, g->p, g->op, act));
    else
        TU_OK(vae_layer_conv2d_create(&l, g->ci, g->h, g->w, g->co, g->kh, g->kw, g->s, g->p,
                                      act));
    return l;
}

static void fill_params(vae_layer *l, tu_rng *r)
{
    size_t n = 0;
    float *p = vae_layer_params(l, &n);
    tu_fill_range(r, p, n, -0.5, 0.5);
}

static const geo conv_geos[] = {
    {1, 5, 5, 1, 3, 3, 1, 0, 0, 1}, {3, 7, 6, 4, 3, 2, 2, 1, 0, 2}, {2, 8, 5, 3, 1, 4, 1, 2, 0, 3},
    {1, 28, 28, 8, 4, 4, 2, 1, 0, 2}, {4, 6, 9, 2, 5, 3, 3, 2, 0, 1}, {2, 4, 4, 3, 4, 4, 1, 0, 0, 2},
    /* stride above the kernel with a wide padding: the row-by-row loops of
     * im2col/col2im, where the tables would not pay (lib/nn/im2col.c) */
    {2, 3, 4, 2, 1, 2, 3, 2, 0, 2},
};
static const geo convt_geos[] = {
    {1, 3, 3, 1, 3, 3, 1, 0, 0, 1}, {4, 4, 4, 3, 3, 2, 2, 1, 0, 2}, {2, 3, 5, 3, 4, 4, 2, 1, 1, 3},
    {8, 7, 7, 4, 4, 4, 2, 1, 0, 2}, {3, 4, 3, 2, 2, 3, 3, 0, 2, 1}, {2, 1, 1, 3, 3, 3, 1, 0, 0, 2},
    {2, 2, 3, 3, 1, 1, 3, 0, 0, 2}, /* as the last of conv_geos */
};

static void check_forward(const geo *g, int transpose, int act, tu_rng *r)
{
    vae_layer *l = make(g, transpose, act);
    size_t in = vae_layer_input_size(l), out = vae_layer_output_size(l), n = 0;
    size_t oh = transpose ? convt_out(g->h, g->kh, g->s, g->p, g->op)
                          : conv_out(g->h, g->kh, g->s, g->p);
    size_t ow = transpose ? convt_out(g->w, g->kw, g->s, g->p, g->op)
                          : conv_out(g->w, g->kw, g->s, g->p);
    assert_int_equal(in, g->ci * g->h * g->w);
    assert_int_equal(out, g->co * oh * ow); /* PyTorch's output-size formulas */
    fill_params(l, r);
    float *p = vae_layer_params(l, &n);
    assert_int_equal(n, g->ci * g->co * g->kh * g->kw + g->co);
    float *x = tu_alloc(g->batch * in, sizeof *x), *y = tu_alloc(g->batch * out, sizeof *y);
    double *ref = tu_alloc(g->batch * out, sizeof *ref);
    tu_fill_range(r, x, g->batch * in, -1, 1);
    TU_OK(vae_layer_forward(l, x, g->batch, y));
    const float *W = p, *b = p + g->ci * g->co * g->kh * g->kw;
    if (transpose)
        convt_naive(g, act, x, W, b, ref);
    else
        conv_naive(g, act, x, W, b, ref);
    /* float32 sums of at most ci*kh*kw = 128 products of magnitude <= 0.5:
     * rounding stays far below 1e-5 absolute. */
    for (size_t k = 0; k < g->batch * out; k++)
        TU_CLOSE(y[k], ref[k], 1e-5, 1e-5);
    free(x);
    free(y);
    free(ref);
    vae_layer_free(l);
}

static void test_conv_forward_naive(void **state)
{
    (void)state;
    tu_rng r = {11};
    for (size_t i = 0; i < sizeof conv_geos / sizeof *conv_geos; i++) {
        check_forward(&conv_geos[i], 0, VAE_ACT_IDENTITY, &r);
        check_forward(&conv_geos[i], 0, VAE_ACT_TANH, &r);
    }
}

static void test_convt_forward_naive(void **state)
{
    (void)state;
    tu_rng r = {12};
    for (size_t i = 0; i < sizeof convt_geos / sizeof *convt_geos; i++) {
        check_forward(&convt_geos[i], 1, VAE_ACT_IDENTITY, &r);
        check_forward(&convt_geos[i], 1, VAE_ACT_SIGMOID, &r);
    }
}

/* <conv(x), y> == <x, convT(y)> with the same weights and zero biases. */
static void test_adjoint(void **state)
{
    (void)state;
    tu_rng r = {13};
    const geo gs[] = {{3, 7, 6, 4, 3, 2, 2, 1, 0, 2}, {2, 8, 8, 3, 3, 3, 2, 1, 0, 3},
                      {1, 28, 28, 4, 4, 4, 2, 1, 0, 1}, {2, 5, 7, 2, 3, 3, 1, 1, 0, 2}};
    for (size_t t = 0; t < sizeof gs / sizeof *gs; t++) {
        const geo *g = &gs[t];
        size_t oh = conv_out(g->h, g->kh, g->s, g->p), ow = conv_out(g->w, g->kw, g->s, g->p);
        /* the output_padding that brings the transposed output back to h */
        size_t op = g->h - convt_out(oh, g->kh, g->s, g->p, 0);
        assert_int_equal(g->w - convt_out(ow, g->kw, g->s, g->p, 0), op);
        geo gt = {g->co, oh, ow, g->ci, g->kh, g->kw, g->s, g->p, op, g->batch};
        vae_layer *c = make(g, 0, VAE_ACT_IDENTITY), *ct = make(&gt, 1, VAE_ACT_IDENTITY);
        assert_int_equal(vae_layer_output_size(ct), vae_layer_input_size(c));
        size_t nc = 0, nt = 0;
        float *pc = vae_layer_params(c, &nc), *pt = vae_layer_params(ct, &nt);
        size_t nw = g->ci * g->co * g->kh * g->kw;
        tu_fill_range(&r, pc, nw, -1, 1);
        memcpy(pt, pc, nw * sizeof *pc); /* W[co][ci][kh][kw] is both layouts */
        memset(pc + nw, 0, (nc - nw) * sizeof *pc);
        memset(pt + nw, 0, (nt - nw) * sizeof *pt);
        size_t in = vae_layer_input_size(c), out = vae_layer_output_size(c);
        float *x = tu_alloc(g->batch * in, 4), *y = tu_alloc(g->batch * out, 4);
        float *cx = tu_alloc(g->batch * out, 4), *ty = tu_alloc(g->batch * in, 4);
        tu_fill_range(&r, x, g->batch * in, -1, 1);
        tu_fill_range(&r, y, g->batch * out, -1, 1);
        TU_OK(vae_layer_forward(c, x, g->batch, cx));
        TU_OK(vae_layer_forward(ct, y, g->batch, ty));
        double a = 0, b = 0, mag = 0;
        for (size_t k = 0; k < g->batch * out; k++) {
            a += (double)cx[k] * y[k];
            mag += fabs((double)cx[k] * y[k]);
        }
        for (size_t k = 0; k < g->batch * in; k++)
            b += (double)x[k] * ty[k];
        /* Both sides add the same products in different orders in float32. */
        TU_CLOSE(a, b, 0, 1e-5 * mag);
        free(x);
        free(y);
        free(cx);
        free(ty);
        vae_layer_free(c);
        vae_layer_free(ct);
    }
}

/* L = <layer(x), r>. Central differences along unit directions in x and in
 * the parameters, compared with <dx, v> and <dW, v> from the backward pass. */
static void check_backward(const geo *g, int transpose, int act, tu_rng *r)
{
    vae_layer *l = make(g, transpose, act);
    fill_params(l, r);
    size_t in = vae_layer_input_size(l), out = vae_layer_output_size(l), np = 0;
    size_t B = g->batch;
    float *p = vae_layer_params(l, &np), *grad = vae_layer_grads(l, &np);
    float *x = tu_alloc(B * in, 4), *y = tu_alloc(B * out, 4), *dx = tu_alloc(B * in, 4);
    float *rr = tu_alloc(B * out, 4), *x0 = tu_alloc(B * in, 4), *p0 = tu_alloc(np, 4);
    double *vx = tu_alloc(B * in, sizeof(double)), *vp = tu_alloc(np, sizeof(double));
    tu_fill_range(r, x, B * in, -1, 1);
    tu_fill_range(r, rr, B * out, -1, 1);
    memset(grad, 0, np * sizeof *grad);
    TU_OK(vae_layer_forward(l, x, B, y));
    TU_OK(vae_layer_backward(l, rr, dx));
    memcpy(x0, x, B * in * 4);
    memcpy(p0, p, np * 4);
    for (int trial = 0; trial < 3; trial++) {
        tu_unit_direction(r, vx, B * in);
        tu_unit_direction(r, vp, np);
        /* h = 1e-2 along a unit vector: the O(h^2) truncation error of the
         * smooth activations used here is ~1e-5 relative, while float32
         * rounding of L (~1e-7 |L|) divided by 2h stays near 1e-5. */
        const double h = 1e-2;
        double lp, lm;
        for (int side = 0; side < 2; side++) {
            double sgn = side ? -h : h;
            for (size_t k = 0; k < B * in; k++)
                x[k] = (float)(x0[k] + sgn * vx[k]);
            TU_OK(vae_layer_forward(l, x, B, y));
            double s = 0;
            for (size_t k = 0; k < B * out; k++)
                s += (double)y[k] * rr[k];
            *(side ? &lm : &lp) = s;
        }
        memcpy(x, x0, B * in * 4);
        double fd = (lp - lm) / (2 * h), an = tu_dot_fd(dx, vx, B * in);
        TU_CLOSE(an, fd, 2e-3, 2e-4);
        for (int side = 0; side < 2; side++) {
            double sgn = side ? -h : h;
            for (size_t k = 0; k < np; k++)
                p[k] = (float)(p0[k] + sgn * vp[k]);
            TU_OK(vae_layer_forward(l, x, B, y));
            double s = 0;
            for (size_t k = 0; k < B * out; k++)
                s += (double)y[k] * rr[k];
            *(side ? &lm : &lp) = s;
        }
        memcpy(p, p0, np * 4);
        fd = (lp - lm) / (2 * h);
        an = tu_dot_fd(grad, vp, np);
        TU_CLOSE(an, fd, 2e-3, 2e-4);
    }
    free(x);
    free(y);
    free(dx);
    free(rr);
    free(x0);
    free(p0);
    free(vx);
    free(vp);
    vae_layer_free(l);
}

static void test_conv_backward_fd(void **state)
{
    (void)state;
    tu_rng r = {14};
    for (size_t i = 0; i < sizeof conv_geos / sizeof *conv_geos; i++) {
        check_backward(&conv_geos[i], 0, VAE_ACT_IDENTITY, &r);
        check_backward(&conv_geos[i], 0, VAE_ACT_TANH, &r);
    }
}

static void test_convt_backward_fd(void **state)
{
    (void)state;
    tu_rng r = {15};
    for (size_t i = 0; i < sizeof convt_geos / sizeof *convt_geos; i++) {
        check_backward(&convt_geos[i], 1, VAE_ACT_IDENTITY, &r);
        check_backward(&convt_geos[i], 1, VAE_ACT_SIGMOID, &r);
    }
}

/* A small convolutional VAE: 1x8x8 -> conv(2,4,s2,p1) 2x4x4 -> dense 8 ->
 * head; decoder dense 32 -> convT(2->1,4,s2,p1) 8x8 logits. */
static vae_model *conv_vae(int likelihood, uint64_t seed)
{
    vae_model *m = NULL;
    vae_layer *l = NULL;
    TU_OK(vae_model_create(&m, 64, 3, likelihood));
    TU_OK(vae_layer_conv2d_create(&l, 1, 8, 8, 2, 4, 4, 2, 1, VAE_ACT_TANH));
    TU_OK(vae_model_add_encoder_layer(m, &l));
    assert_null(l);
    TU_OK(vae_layer_dense_create(&l, 32, 8, VAE_ACT_ELU));
    TU_OK(vae_model_add_encoder_layer(m, &l));
    TU_OK(vae_layer_dense_create(&l, 3, 32, VAE_ACT_SOFTPLUS));
    TU_OK(vae_model_add_decoder_layer(m, &l));
    TU_OK(vae_layer_conv2d_transpose_create(&l, 2, 4, 4, 1, 4, 4, 2, 1, 0, VAE_ACT_IDENTITY));
    TU_OK(vae_model_add_decoder_layer(m, &l));
    assert_null(l);
    TU_OK(vae_model_build(m, seed));
    return m;
}

static void test_conv_vae_elbo_fd(void **state)
{
    (void)state;
    tu_rng r = {16};
    for (int lik = 0; lik < 2; lik++) {
        vae_model *m = conv_vae(lik, 3);
        vae_elbo *e = NULL;
        vae_context *ctx = NULL;
        vae_optimizer *o = NULL;
        vae_trainer *t = NULL;
        TU_OK(vae_elbo_create(&e));
        TU_OK(vae_elbo_set_param(e, VAE_ELBO_BETA, 0.6));
        TU_OK(vae_context_create(&ctx));
        TU_OK(vae_optimizer_create(&o, VAE_OPTIMIZER_SGD));
        TU_OK(vae_trainer_create(&t, m, e, o, ctx, 1));
        enum { B = 3 };
        float x[B * 64], eps[B * 3];
        tu_fill_range(&r, x, B * 64, 0, 1);
        for (size_t k = 0; k < B * 3; k++)
            eps[k] = (float)tu_gauss(&r);
        size_t n = 0, ng = 0;
        float *p = vae_model_params(m, &n), *g = vae_trainer_grads(t, &ng);
        /* 2x2x16 + 2 + 32x8 + 8 + 8x6 + 6 + 3x32 + 32 + 2x1x16 + 1 */
        assert_int_equal(n, 34 + 264 + 54 + 128 + 33);
        assert_int_equal(ng, n);
        TU_OK(vae_trainer_zero_grads(t));
        vae_epoch_stats fb = tu_stats();
        TU_OK(vae_trainer_forward_backward(t, x, B, eps, &fb));
        assert_int_equal(fb.samples, B);
        /* The loss of the forward-backward pass is the evaluation's. */
        vae_epoch_stats ev = tu_stats();
        TU_OK(vae_elbo_evaluate(ctx, m, e, x, B, eps, NULL, NULL, &ev));
        TU_CLOSE(fb.loss, ev.loss, 1e-6, 0.0);
        float *p0 = tu_alloc(n, 4);
        double *v = tu_alloc(n, sizeof(double));
        memcpy(p0, p, n * 4);
        for (int trial = 0; trial < 4; trial++) {
            tu_unit_direction(&r, v, n);
            const double h = 1e-2;
            double l2[2];
            for (int side = 0; side < 2; side++) {
                for (size_t k = 0; k < n; k++)
                    p[k] = (float)(p0[k] + (side ? -h : h) * v[k]);
                vae_epoch_stats st = tu_stats();
                TU_OK(vae_elbo_evaluate(ctx, m, e, x, B, eps, NULL, NULL, &st));
                l2[side] = st.loss;
            }
            memcpy(p, p0, n * 4);
            double fd = (l2[0] - l2[1]) / (2 * h), an = tu_dot_fd(g, v, n);
            /* The loss is ~50 nats; float32 rounding of it over 2h gives
             * ~5e-4 absolute noise; truncation of smooth layers ~1e-4 rel. */
            TU_CLOSE(an, fd, 3e-3, 2e-3);
        }
        free(p0);
        free(v);
        vae_trainer_free(t);
        vae_optimizer_free(o);
        vae_context_free(ctx);
        vae_elbo_free(e);
        vae_model_free(m);
    }
}

/* Every VAE_LAYER_* value of a convolution layer against its constructor's
 * arguments and PyTorch's output sizes; kind and activation. */
static void check_introspection(const vae_layer *l, const geo *g, int transpose, int act)
{
    size_t oh = transpose ? convt_out(g->h, g->kh, g->s, g->p, g->op)
                          : conv_out(g->h, g->kh, g->s, g->p);
    size_t ow = transpose ? convt_out(g->w, g->kw, g->s, g->p, g->op)
                          : conv_out(g->w, g->kw, g->s, g->p);
    assert_int_equal(vae_layer_kind(l),
                     transpose ? VAE_LAYER_CONV2D_TRANSPOSE : VAE_LAYER_CONV2D);
    assert_int_equal(vae_layer_activation(l), act);
    const size_t want[14] = {g->ci * g->h * g->w,
                             g->co * oh * ow,
                             g->ci * g->co * g->kh * g->kw + g->co,
                             g->ci,
                             g->h,
                             g->w,
                             g->co,
                             oh,
                             ow,
                             g->kh,
                             g->kw,
                             g->s,
                             g->p,
                             transpose ? g->op : 0};
    for (int q = VAE_LAYER_INPUTS; q <= VAE_LAYER_OUTPUT_PADDING; q++) {
        size_t v = (size_t)0xdeadbeef;
        TU_OK(vae_layer_get_param(l, q, &v));
        if (v != want[q - 1])
            fail_msg("%s %zux%zux%zu -> %zu, kernel %zux%zu, stride %zu, padding %zu: "
                     "parameter %d is %zu, expected %zu",
                     transpose ? "convT" : "conv", g->ci, g->h, g->w, g->co, g->kh, g->kw, g->s,
                     g->p, q, v, want[q - 1]);
    }
}

static void test_introspection(void **state)
{
    (void)state;
    const int acts[] = {VAE_ACT_IDENTITY, VAE_ACT_LEAKY_RELU, VAE_ACT_ELU};
    for (size_t a = 0; a < 3; a++) {
        for (size_t i = 0; i < sizeof conv_geos / sizeof *conv_geos; i++) {
            vae_layer *l = make(&conv_geos[i], 0, acts[a]);
            check_introspection(l, &conv_geos[i], 0, acts[a]);
            vae_layer_free(l);
        }
        for (size_t i = 0; i < sizeof convt_geos / sizeof *convt_geos; i++) {
            vae_layer *l = make(&convt_geos[i], 1, acts[a]);
            check_introspection(l, &convt_geos[i], 1, acts[a]);
            vae_layer_free(l);
        }
    }
    /* Unknown parameters are refused for every kind, nothing written. */
    const char *fn = "vae_layer_get_param";
    const int bad[] = {0, -1, VAE_LAYER_OUTPUT_PADDING + 1, 1 << 30};
    for (int transpose = 0; transpose < 2; transpose++) {
        vae_layer *l = make(transpose ? &convt_geos[2] : &conv_geos[1], transpose,
                            VAE_ACT_TANH);
        for (size_t i = 0; i < 4; i++) {
            size_t v = 55;
            TU_EXPECT_ERR(vae_layer_get_param(l, bad[i], &v), VAE_ERR_INVALID, fn);
            assert_int_equal(v, 55);
        }
        TU_EXPECT_ERR(vae_layer_get_param(l, VAE_LAYER_STRIDE, NULL), VAE_ERR_INVALID, fn);
        vae_layer_free(l);
    }

    /* The layers of a model answer the same, and hand out no parameters or
     * gradients of their own (the model's slab and a trainer hold them). */
    vae_model *m = conv_vae(VAE_LIKELIHOOD_BERNOULLI, 4);
    assert_int_equal(vae_model_layer_count(m), 5);
    assert_int_equal(vae_model_encoder_layer_count(m), 2);
    const geo enc = {1, 8, 8, 2, 4, 4, 2, 1, 0, 1}, dec = {2, 4, 4, 1, 4, 4, 2, 1, 0, 1};
    check_introspection(vae_model_layer(m, 0), &enc, 0, VAE_ACT_TANH);
    check_introspection(vae_model_layer(m, 4), &dec, 1, VAE_ACT_IDENTITY);
    assert_int_equal(vae_layer_kind(vae_model_layer(m, 1)), VAE_LAYER_DENSE);
    assert_int_equal(vae_layer_kind(vae_model_layer(m, 2)), VAE_LAYER_DENSE); /* head */
    assert_int_equal(vae_layer_kind(vae_model_layer(m, 3)), VAE_LAYER_DENSE);
    for (size_t i = 0; i < 5; i++) {
        vae_layer *ml = (vae_layer *)vae_model_layer(m, i);
        size_t n = 99;
        assert_null(vae_layer_params(ml, &n));
        assert_int_equal(n, 0);
        n = 99;
        assert_null(vae_layer_grads(ml, &n));
        assert_int_equal(n, 0);
        vae_layer_free(ml); /* ignored: the model owns it */
    }
    /* Still all there. */
    vae_context *ctx = NULL;
    TU_OK(vae_context_create(&ctx));
    float z[3] = {0.5f, -0.5f, 1.0f}, out[64];
    TU_OK(vae_decode(ctx, m, z, 1, out));
    assert_true(tu_all_finite(out, 64));
    vae_context_free(ctx);
    vae_model_free(m);
}

static void test_conv_model_file(void **state)
{
    (void)state;
    vae_model *m = conv_vae(VAE_LIKELIHOOD_BERNOULLI, 9), *m2 = NULL;
    size_t size = 0;
    TU_OK(vae_model_save_mem(m, NULL, 0, &size));
    unsigned char *buf = tu_alloc(size, 1);
    TU_OK(vae_model_save_mem(m, buf, size, &size));
    TU_OK(vae_model_load_mem(&m2, buf, size));
    size_t n1 = 0, n2 = 0;
    float *p1 = vae_model_params(m, &n1), *p2 = vae_model_params(m2, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(p1, p2, n1 * sizeof *p1);
    float z[2 * 3] = {0.1f, -1, 2, 0.5f, 0.3f, -0.2f}, o1[2 * 64], o2[2 * 64];
    vae_context *ctx = NULL;
    TU_OK(vae_context_create(&ctx));
    TU_OK(vae_decode(ctx, m, z, 2, o1));
    TU_OK(vae_decode(ctx, m2, z, 2, o2));
    assert_memory_equal(o1, o2, sizeof o1);
    /* The loaded layers have the same kinds, activations and geometry. */
    assert_int_equal(vae_model_layer_count(m2), vae_model_layer_count(m));
    for (size_t i = 0; i < vae_model_layer_count(m); i++) {
        const vae_layer *a = vae_model_layer(m, i), *b = vae_model_layer(m2, i);
        assert_int_equal(vae_layer_kind(a), vae_layer_kind(b));
        assert_int_equal(vae_layer_activation(a), vae_layer_activation(b));
        for (int q = VAE_LAYER_INPUTS; q <= VAE_LAYER_OUTPUT_PADDING; q++) {
            size_t va = 1, vb = 2;
            TU_OK(vae_layer_get_param(a, q, &va));
            TU_OK(vae_layer_get_param(b, q, &vb));
            assert_int_equal(va, vb);
        }
    }
    vae_context_free(ctx);
    free(buf);
    vae_model_free(m);
    vae_model_free(m2);
}

static void test_bad_geometry(void **state)
{
    (void)state;
    vae_layer *l = (vae_layer *)&l;
    const char *c = "vae_layer_conv2d_create", *t = "vae_layer_conv2d_transpose_create";
    TU_EXPECT_ERR(vae_layer_conv2d_create(NULL, 1, 4, 4, 1, 3, 3, 1, 0, 0), VAE_ERR_INVALID, c);
    TU_EXPECT_ERR(vae_layer_conv2d_create(&l, 0, 4, 4, 1, 3, 3, 1, 0, 0), VAE_ERR_INVALID, c);
    assert_null(l);
    TU_EXPECT_ERR(vae_layer_conv2d_create(&l, 1, 4, 4, 1, 3, 3, 0, 0, 0), VAE_ERR_INVALID, c);
    TU_EXPECT_ERR(vae_layer_conv2d_create(&l, 1, 4, 4, 1, 3, 3, 1, 0, 7), VAE_ERR_INVALID, c);
    /* kernel 5 does not fit 3 + 2*0: the message shows the sizes */
    TU_EXPECT_ERR(vae_layer_conv2d_create(&l, 1, 3, 3, 1, 5, 5, 1, 0, 0), VAE_ERR_SHAPE, c);
    assert_non_null(strstr(vae_last_error(), "5x5"));
    assert_non_null(strstr(vae_last_error(), "3x3"));
    TU_EXPECT_ERR(vae_layer_conv2d_transpose_create(NULL, 1, 4, 4, 1, 3, 3, 1, 0, 0, 0),
                  VAE_ERR_INVALID, t);
    TU_EXPECT_ERR(vae_layer_conv2d_transpose_create(&l, 1, 4, 4, 0, 3, 3, 1, 0, 0, 0),
                  VAE_ERR_INVALID, t);
    TU_EXPECT_ERR(vae_layer_conv2d_transpose_create(&l, 1, 4, 4, 1, 3, 3, 2, 0, 2, 0),
                  VAE_ERR_SHAPE, t); /* output_padding >= stride */
    TU_EXPECT_ERR(vae_layer_conv2d_transpose_create(&l, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0),
                  VAE_ERR_SHAPE, t); /* output -1 x -1 */
    assert_non_null(strstr(vae_last_error(), "-1x-1"));
    /* a dense layer after a conv must take its flat C*H*W output */
    vae_model *m = NULL;
    TU_OK(vae_model_create(&m, 64, 2, VAE_LIKELIHOOD_BERNOULLI));
    TU_OK(vae_layer_conv2d_create(&l, 1, 8, 8, 2, 4, 4, 2, 1, VAE_ACT_RELU));
    TU_OK(vae_model_add_encoder_layer(m, &l));
    TU_OK(vae_layer_dense_create(&l, 30, 8, VAE_ACT_RELU));
    TU_OK(vae_model_add_encoder_layer(m, &l));
    TU_OK(vae_layer_dense_create(&l, 2, 64, VAE_ACT_IDENTITY));
    TU_OK(vae_model_add_decoder_layer(m, &l));
    TU_EXPECT_ERR(vae_model_build(m, 1), VAE_ERR_SHAPE, "vae_model_build");
    assert_non_null(strstr(vae_last_error(), "encoder layer 1 expects 30 inputs"));
    assert_non_null(strstr(vae_last_error(), "32"));
    vae_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_forward_naive), cmocka_unit_test(test_convt_forward_naive),
        cmocka_unit_test(test_adjoint),            cmocka_unit_test(test_conv_backward_fd),
        cmocka_unit_test(test_convt_backward_fd),  cmocka_unit_test(test_conv_vae_elbo_fd),
        cmocka_unit_test(test_conv_model_file),    cmocka_unit_test(test_bad_geometry),
        cmocka_unit_test(test_introspection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
