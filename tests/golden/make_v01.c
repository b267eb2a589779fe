/* Writes the golden model files of tests/golden with release 0.1 of the library
 * (commit 07d09c8) and its API, and the expected outputs beside them.
 *
 * Build and run it against 0.1, not against the current tree (README.md has the
 * exact commands):
 *
 *   git -C <repo> archive 07d09c8 | tar -x -C /tmp/v01
 *   cmake -S /tmp/v01 -B /tmp/v01/build -DVAE_BUILD_TESTS=OFF -DVAE_BUILD_EXAMPLES=OFF \
 *         -DVAE_BUILD_BENCH=OFF && cmake --build /tmp/v01/build -j2
 *   cc -std=c11 -O2 -I/tmp/v01/include tests/golden/make_v01.c -L/tmp/v01/build -lvae \
 *      -Wl,-rpath,/tmp/v01/build -lm -o /tmp/v01/make_v01
 *   /tmp/v01/make_v01 tests/golden
 *
 * Every parameter and input lies on a coarse binary grid (weights k/16 in [-1, 1],
 * biases k/256 with k != 0, inputs k/16 in [0, 1], latent codes k/8 in [-2, 2]) and the
 * layers are small, so every value the encoder computes, and the decoder of the Gaussian
 * model, is exact in float whatever order the sums are taken in. The program proves
 * that before writing anything: it recomputes each layer in double and checks, for
 * every output, that all its terms (the products and the bias) are integer multiples of
 * one power of two 2^-q and that the sum of their magnitudes is at most 2^(24-q). Every
 * partial sum, in any order, is then an integer multiple of 2^-q of magnitude at most
 * 2^24 (exactly representable in float's 24-bit significand), so every order, fused or
 * not, with or without excess precision, gives the one exact result. Every bias is
 * nonzero, so an output that is zero is +0 in every order. It then checks that 0.1's
 * results equal the double ones exactly.
 *
 * Outputs: v01_mlp.vae, v01_mlp.expected, v01_conv.vae, v01_conv.expected (the format
 * of the .expected files is in README.md; golden_check.c reads them). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vae/vae.h>

#define BATCH 4
#define MAX_UNITS 256

static void die(const char *what, int rc)
{
    fprintf(stderr, "make_v01: %s: %s (%s)\n", what, vae_strerror(rc), vae_last_error());
    exit(1);
}

#define CHECK(call)                                                                      \
    do {                                                                                 \
        int rc_ = (call);                                                                \
        if (rc_ != VAE_OK)                                                               \
            die(#call, rc_);                                                             \
    } while (0)

/* ---- deterministic integers (xorshift64*) -------------------------------- */

static uint64_t g_state = 0x9e3779b97f4a7c15u;

static long rand_int(long lo, long hi) /* uniform enough in [lo, hi] */
{
    g_state ^= g_state >> 12;
    g_state ^= g_state << 25;
    g_state ^= g_state >> 27;
    uint64_t r = (g_state * 0x2545f4914f6cdd1du) >> 33;
    return lo + (long)(r % (uint64_t)(hi - lo + 1));
}

static float weight(void) { return (float)rand_int(-16, 16) / 16.0f; }

static float bias(void)
{
    long k;
    do
        k = rand_int(-64, 64);
    while (k == 0);
    return (float)k / 256.0f;
}

/* ---- exact sums ------------------------------------------------------------ */

/* One output value: the sum of its terms in double, the sum of their magnitudes and
 * the finest binary grid 2^-q they lie on. */
typedef struct acc {
    double sum, mag;
    int q;
} acc;

static void acc_add(acc *a, double t)
{
    int q = 0;
    while (ldexp(t, q) != floor(ldexp(t, q))) {
        q++;
        if (q > 60) {
            fprintf(stderr, "make_v01: term %.17g is not on a binary grid\n", t);
            exit(1);
        }
    }
    if (q > a->q)
        a->q = q;
    a->sum += t;
    a->mag += fabs(t);
}

/* The sum, after checking that every order of summation gives it exactly in float. */
static double acc_exact(const acc *a, const char *where, size_t i)
{
    if (ldexp(a->mag, a->q) > 16777216.0) { /* 2^24 */
        fprintf(stderr,
                "make_v01: %s[%zu]: terms on the grid 2^-%d with total magnitude %.17g: "
                "not exact in every order; choose a coarser grid or smaller layers\n",
                where, i, a->q, a->mag);
        exit(1);
    }
    if ((double)(float)a->sum != a->sum) {
        fprintf(stderr, "make_v01: %s[%zu]: %.17g is not a float\n", where, i, a->sum);
        exit(1);
    }
    return a->sum;
}

static double act(int activation, double v)
{
    switch (activation) {
    case VAE_ACT_IDENTITY: return v;
    case VAE_ACT_RELU: return v > 0 ? v : 0;
    default:
        fprintf(stderr, "make_v01: activation %d is not exact; not in a checked path\n",
                activation);
        exit(1);
    }
}

/* ---- reference layers in double ------------------------------------------ */

typedef struct spec {
    int kind; /* 0 dense, 1 conv2d, 2 conv2d transpose */
    size_t in, out;
    size_t ic, ih, iw, oc, oh, ow, k, stride, pad, opad;
    int activation;
    vae_layer *layer;   /* NULL for the head */
    const float *p;     /* the layer's parameters in the built model's slab */
} spec;

/* y[n][out] = act(layer(x[n][in])), every pre-activation checked exact. */
static void ref_forward(const spec *s, const double *x, size_t n, double *y,
                        const char *where)
{
    static acc a[MAX_UNITS];
    for (size_t b = 0; b < n; b++) {
        const double *xb = x + b * s->in;
        for (size_t o = 0; o < s->out; o++)
            a[o] = (acc){0, 0, 0};
        if (s->kind == 0) {
            const float *W = s->p, *bias_ = s->p + s->out * s->in; /* W[out][in], b[out] */
            for (size_t o = 0; o < s->out; o++) {
                for (size_t i = 0; i < s->in; i++)
                    acc_add(&a[o], (double)W[o * s->in + i] * xb[i]);
                acc_add(&a[o], bias_[o]);
            }
        } else if (s->kind == 1) {
            /* W[oc][ic][k][k], b[oc]; PyTorch's Conv2d with zero padding */
            const float *W = s->p, *bias_ = s->p + s->oc * s->ic * s->k * s->k;
            for (size_t oc = 0; oc < s->oc; oc++)
                for (size_t oy = 0; oy < s->oh; oy++)
                    for (size_t ox = 0; ox < s->ow; ox++) {
                        acc *t = &a[(oc * s->oh + oy) * s->ow + ox];
                        for (size_t ic = 0; ic < s->ic; ic++)
                            for (size_t ky = 0; ky < s->k; ky++)
                                for (size_t kx = 0; kx < s->k; kx++) {
                                    long iy = (long)(oy * s->stride + ky) - (long)s->pad;
                                    long ix = (long)(ox * s->stride + kx) - (long)s->pad;
                                    if (iy < 0 || ix < 0 || iy >= (long)s->ih ||
                                        ix >= (long)s->iw)
                                        continue;
                                    acc_add(t, (double)W[((oc * s->ic + ic) * s->k + ky) *
                                                         s->k + kx] *
                                                   xb[(ic * s->ih + (size_t)iy) * s->iw +
                                                      (size_t)ix]);
                                }
                        acc_add(t, bias_[oc]);
                    }
        } else {
            /* W[ic][oc][k][k], b[oc]; PyTorch's ConvTranspose2d */
            const float *W = s->p, *bias_ = s->p + s->ic * s->oc * s->k * s->k;
            for (size_t ic = 0; ic < s->ic; ic++)
                for (size_t iy = 0; iy < s->ih; iy++)
                    for (size_t ix = 0; ix < s->iw; ix++)
                        for (size_t oc = 0; oc < s->oc; oc++)
                            for (size_t ky = 0; ky < s->k; ky++)
                                for (size_t kx = 0; kx < s->k; kx++) {
                                    long oy = (long)(iy * s->stride + ky) - (long)s->pad;
                                    long ox = (long)(ix * s->stride + kx) - (long)s->pad;
                                    if (oy < 0 || ox < 0 || oy >= (long)s->oh ||
                                        ox >= (long)s->ow)
                                        continue;
                                    acc_add(&a[(oc * s->oh + (size_t)oy) * s->ow + (size_t)ox],
                                            (double)W[((ic * s->oc + oc) * s->k + ky) * s->k +
                                                      kx] *
                                                xb[(ic * s->ih + iy) * s->iw + ix]);
                                }
            for (size_t oc = 0; oc < s->oc; oc++)
                for (size_t j = 0; j < s->oh * s->ow; j++)
                    acc_add(&a[oc * s->oh * s->ow + j], bias_[oc]);
        }
        for (size_t o = 0; o < s->out; o++)
            y[b * s->out + o] = act(s->activation, acc_exact(&a[o], where, b * s->out + o));
    }
}

/* ---- model description ----------------------------------------------------- */

typedef struct golden {
    const char *name;       /* file stem */
    const char *about;      /* one line for the expected file */
    size_t input_dim, latent_dim;
    int likelihood;
    float sigma;
    size_t n_enc, n_dec;
    spec enc[4], dec[4];
    spec head;
    int decode_exact;       /* record decoder outputs (only when every step is exact) */
} golden;

static spec dense(size_t in, size_t out, int activation)
{
    return (spec){.kind = 0, .in = in, .out = out, .activation = activation};
}

static spec conv(size_t ic, size_t ih, size_t iw, size_t oc, size_t k, size_t stride,
                 size_t pad, int activation)
{
    spec s = {.kind = 1, .ic = ic, .ih = ih, .iw = iw, .oc = oc, .k = k, .stride = stride,
              .pad = pad, .activation = activation};
    s.oh = (ih + 2 * pad - k) / stride + 1;
    s.ow = (iw + 2 * pad - k) / stride + 1;
    s.in = ic * ih * iw;
    s.out = oc * s.oh * s.ow;
    return s;
}

static spec convt(size_t ic, size_t ih, size_t iw, size_t oc, size_t k, size_t stride,
                  size_t pad, size_t opad, int activation)
{
    spec s = {.kind = 2, .ic = ic, .ih = ih, .iw = iw, .oc = oc, .k = k, .stride = stride,
              .pad = pad, .opad = opad, .activation = activation};
    s.oh = (ih - 1) * stride - 2 * pad + k + opad;
    s.ow = (iw - 1) * stride - 2 * pad + k + opad;
    s.in = ic * ih * iw;
    s.out = oc * s.oh * s.ow;
    return s;
}

static vae_layer *make_layer(const spec *s)
{
    vae_layer *l = NULL;
    if (s->kind == 0)
        CHECK(vae_layer_dense_create(&l, s->in, s->out, s->activation));
    else if (s->kind == 1)
        CHECK(vae_layer_conv2d_create(&l, s->ic, s->ih, s->iw, s->oc, s->k, s->k, s->stride,
                                      s->pad, s->activation));
    else
        CHECK(vae_layer_conv2d_transpose_create(&l, s->ic, s->ih, s->iw, s->oc, s->k, s->k,
                                                s->stride, s->pad, s->opad, s->activation));
    return l;
}

static size_t param_count(const spec *s)
{
    if (s->kind == 0)
        return s->out * s->in + s->out;
    return s->ic * s->oc * s->k * s->k + s->oc;
}

static size_t bias_count(const spec *s) { return s->kind == 0 ? s->out : s->oc; }

/* Weights then biases of one layer, in slab order. */
static void fill(float *p, const spec *s)
{
    size_t n = param_count(s), nb = bias_count(s);
    for (size_t i = 0; i < n - nb; i++)
        p[i] = weight();
    for (size_t i = n - nb; i < n; i++)
        p[i] = bias();
}

/* ---- expected-output file ------------------------------------------------- */

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static void put(FILE *f, const char *tag, const float *v, size_t n, size_t dim)
{
    for (size_t i = 0; i < n * dim; i++)
        fprintf(f, "%s %zu %zu %08lx %.9g\n", tag, i / dim, i % dim, (unsigned long)bits(v[i]),
                (double)v[i]);
}

static void check_equal(const char *what, const float *got, const double *want, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((double)got[i] != want[i]) {
            fprintf(stderr, "make_v01: %s[%zu]: 0.1 gives %.9g, the exact value is %.17g\n",
                    what, i, (double)got[i], want[i]);
            exit(1);
        }
}

static void make(golden *g, const char *dir)
{
    vae_model *m = NULL;
    CHECK(vae_model_create(&m, g->input_dim, g->latent_dim, g->likelihood));
    CHECK(vae_model_set_gaussian_sigma(m, g->sigma));
    for (size_t i = 0; i < g->n_enc; i++) {
        g->enc[i].layer = make_layer(&g->enc[i]);
        CHECK(vae_model_add_encoder_layer(m, g->enc[i].layer));
    }
    for (size_t i = 0; i < g->n_dec; i++) {
        g->dec[i].layer = make_layer(&g->dec[i]);
        CHECK(vae_model_add_decoder_layer(m, g->dec[i].layer));
    }
    CHECK(vae_model_build(m, 1));

    /* Slab: encoder layers, the head, decoder layers (0.1's vae_model_params()). */
    size_t count = 0, off = 0;
    float *slab = vae_model_params(m, &count);
    spec *order[10];
    size_t n_order = 0;
    for (size_t i = 0; i < g->n_enc; i++)
        order[n_order++] = &g->enc[i];
    size_t head_in = g->n_enc ? g->enc[g->n_enc - 1].out : g->input_dim;
    g->head = dense(head_in, 2 * g->latent_dim, VAE_ACT_IDENTITY);
    order[n_order++] = &g->head;
    for (size_t i = 0; i < g->n_dec; i++)
        order[n_order++] = &g->dec[i];
    for (size_t i = 0; i < n_order; i++) {
        spec *s = order[i];
        if (s->layer) { /* the layout this program assumes is the one 0.1 reports */
            size_t lc = 0;
            if (vae_layer_params(s->layer, &lc) != slab + off || lc != param_count(s)) {
                fprintf(stderr, "make_v01: %s: layer %zu is not where expected in the slab\n",
                        g->name, i);
                exit(1);
            }
        }
        s->p = slab + off;
        fill(slab + off, s);
        off += param_count(s);
    }
    if (off != count) {
        fprintf(stderr, "make_v01: %s: slab has %zu floats, layers %zu\n", g->name, count, off);
        exit(1);
    }

    /* Inputs, and the exact encoder outputs. */
    const size_t D = g->input_dim, L = g->latent_dim;
    float x[BATCH * 256], mu[BATCH * 16], logvar[BATCH * 16];
    double a[BATCH * MAX_UNITS], b[BATCH * MAX_UNITS];
    for (size_t i = 0; i < BATCH * D; i++) {
        x[i] = (float)rand_int(0, 16) / 16.0f;
        a[i] = x[i];
    }
    double *cur = a, *nxt = b;
    for (size_t i = 0; i < g->n_enc; i++) {
        ref_forward(&g->enc[i], cur, BATCH, nxt, "encoder");
        double *t = cur; cur = nxt; nxt = t;
    }
    ref_forward(&g->head, cur, BATCH, nxt, "head");
    double want_mu[BATCH * 16], want_lv[BATCH * 16];
    for (size_t s = 0; s < BATCH; s++)
        for (size_t j = 0; j < L; j++) {
            want_mu[s * L + j] = nxt[s * 2 * L + j];
            want_lv[s * L + j] = nxt[s * 2 * L + L + j];
        }
    CHECK(vae_model_encode(m, x, BATCH, mu, logvar));
    check_equal("mu", mu, want_mu, BATCH * L);
    check_equal("logvar", logvar, want_lv, BATCH * L);

    /* Latent codes and the exact decoder means. */
    float z[BATCH * 16], mean[BATCH * 256];
    if (g->decode_exact) {
        for (size_t i = 0; i < BATCH * L; i++) {
            z[i] = (float)rand_int(-16, 16) / 8.0f;
            a[i] = z[i];
        }
        cur = a; nxt = b;
        for (size_t i = 0; i < g->n_dec; i++) {
            ref_forward(&g->dec[i], cur, BATCH, nxt, "decoder");
            double *t = cur; cur = nxt; nxt = t;
        }
        CHECK(vae_model_decode(m, z, BATCH, mean));
        check_equal("mean", mean, cur, BATCH * D);
    }

    char path[4096];
    snprintf(path, sizeof path, "%s/%s.vae", dir, g->name);
    CHECK(vae_model_save(m, path));

    /* The saved file, read back by 0.1, gives the same bits. */
    vae_model *back = NULL;
    float mu2[BATCH * 16], lv2[BATCH * 16];
    CHECK(vae_model_load(&back, path));
    CHECK(vae_model_encode(back, x, BATCH, mu2, lv2));
    if (memcmp(mu, mu2, BATCH * L * sizeof *mu) || memcmp(logvar, lv2, BATCH * L * sizeof *mu)) {
        fprintf(stderr, "make_v01: %s: the reloaded model encodes differently\n", path);
        exit(1);
    }
    vae_model_free(back);

    snprintf(path, sizeof path, "%s/%s.expected", dir, g->name);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(1);
    }
    fprintf(f, "libvae-golden 1\n");
    fprintf(f, "# %s\n", g->about);
    fprintf(f, "# Written by tests/golden/make_v01.c with libvae %s; see tests/golden/README.md.\n",
            vae_version_string());
    fprintf(f, "# Value lines: name sample index float-bits-hex decimal.\n");
    fprintf(f, "input_dim %zu\nlatent_dim %zu\n", D, L);
    fprintf(f, "encode %d\n", BATCH);
    put(f, "x", x, BATCH, D);
    put(f, "mu", mu, BATCH, L);
    put(f, "logvar", logvar, BATCH, L);
    if (g->decode_exact) {
        fprintf(f, "decode %d\n", BATCH);
        put(f, "z", z, BATCH, L);
        put(f, "mean", mean, BATCH, D);
    }
    fprintf(f, "end\n");
    if (fclose(f) != 0) {
        perror(path);
        exit(1);
    }
    printf("make_v01: wrote %s/%s.vae and .expected (%zu parameters)\n", dir, g->name, count);
    vae_model_free(m);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_v01 OUTPUT_DIR (run against libvae 0.1, see README.md)\n");
        return 2;
    }
    if (vae_version_number() != 100) {
        fprintf(stderr, "make_v01: linked against libvae %s, not 0.1.0\n", vae_version_string());
        return 1;
    }
    /* MLP, Bernoulli: 16 -> 12 relu -> head(3); 3 -> 12 tanh -> 16 logits. The decoder's
     * tanh and the sigmoid of the means are not exact: only the encoder is recorded. */
    golden mlp = {
        .name = "v01_mlp",
        .about = "MLP 16-12(relu)-3, decoder 3-12(tanh)-16, Bernoulli; encoder only",
        .input_dim = 16, .latent_dim = 3, .likelihood = VAE_LIKELIHOOD_BERNOULLI,
        .sigma = 1.0f, .n_enc = 1, .n_dec = 2, .decode_exact = 0,
    };
    mlp.enc[0] = dense(16, 12, VAE_ACT_RELU);
    mlp.dec[0] = dense(3, 12, VAE_ACT_TANH);
    mlp.dec[1] = dense(12, 16, VAE_ACT_IDENTITY);

    /* Convolutional, Gaussian (sigma 0.5): 1x8x8 -> Conv2D 4 k3 s2 p1 relu (4x4x4) ->
     * head(2); decoder 2 -> 64 relu (4x4x4) -> ConvTranspose2D 1 k3 s2 p1 op1 -> 1x8x8
     * means. Every step is exact, so the decoder's means are recorded too. */
    golden cnn = {
        .name = "v01_conv",
        .about = "Conv2D 1x8x8-4x4x4(relu)-2, decoder 2-64(relu)-ConvT-1x8x8, Gaussian sigma 0.5",
        .input_dim = 64, .latent_dim = 2, .likelihood = VAE_LIKELIHOOD_GAUSSIAN,
        .sigma = 0.5f, .n_enc = 1, .n_dec = 2, .decode_exact = 1,
    };
    cnn.enc[0] = conv(1, 8, 8, 4, 3, 2, 1, VAE_ACT_RELU);
    cnn.dec[0] = dense(2, 64, VAE_ACT_RELU);
    cnn.dec[1] = convt(4, 4, 4, 1, 3, 2, 1, 1, VAE_ACT_IDENTITY);

    make(&mlp, argv[1]);
    make(&cnn, argv[1]);
    return 0;
}
