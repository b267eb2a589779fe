/* Writes the golden files of release 1.1 (format version 2) in tests/golden with the
 * current library and its API, and the expected outputs beside them.
 *
 * Build and run it against a 1.1 library (README.md has the exact commands):
 *
 *   cc -std=c11 -O2 -Iinclude tests/golden/make_v11.c -L<build> -lvae -Wl,-rpath,<build> \
 *      -lm -o make_v11
 *   OPENBLAS_NUM_THREADS=1 ./make_v11 tests/golden
 *
 * Outputs:
 *   v11_conv.vae, .expected   a model file: Gaussian (sigma 0.375), two Conv2D encoder
 *                             layers, a dense and two ConvTranspose2D decoder layers;
 *                             encodings and decoder means recorded.
 *   v11_adam.ckpt, .expected  a checkpoint of an Adam trainer over a Bernoulli MLP: trained
 *                             one epoch and part of a second one (left open by the progress
 *                             callback), one pending gradient, metadata; encodings recorded.
 *   v11_sgd.ckpt, .expected   the same with SGD (momentum, Nesterov, dampening 0) over a
 *                             small Gaussian convolutional model; encodings and decoder means
 *                             recorded.
 *
 * Every parameter and input lies on a coarse binary grid (weights k/16 in [-1, 1], biases
 * k/256 with k != 0, inputs k/16 in [0, 1], latent codes k/8 in [-2, 2]) and the layers are
 * small, so every value the encoders compute, and the decoders of the Gaussian models, is
 * exact in float whatever order the sums are taken in. The program proves that before
 * writing anything, as make_v01.c does: it recomputes each layer in double and checks, for
 * every output, that all its terms (the products and the bias) are integer multiples of one
 * power of two 2^-q and that the sum of their magnitudes is at most 2^(24-q). Every partial
 * sum, in any order, is then an integer multiple of 2^-q of magnitude at most 2^24, so every
 * order, fused or not, with or without excess precision, gives the one exact result. It
 * then checks that the library's results equal the double ones exactly.
 *
 * A checkpoint's trainer trains first, which moves the parameters off the grid; before the
 * save they are written back onto it with vae_model_tensor_set(). The optimizer's state,
 * the generator, the counters, the open epoch and the pending gradient stay what training
 * made them: those values depend on the machine that ran this program, are recorded in the
 * file as they are, and are compared bit for bit by a restore and a save, never recomputed.
 *
 * The format of the .expected files is in README.md; golden_check.c reads them. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vae/vae.h>

#define BATCH 4
#define MAX_UNITS 256
#define MAX_PARAMS 1024

static void die(const char *what, int rc)
{
    fprintf(stderr, "make_v11: %s: %s (%s)\n", what, vae_strerror(rc), vae_last_error());
    exit(1);
}

#define CHECK(call)                                                                      \
    do {                                                                                 \
        int rc_ = (call);                                                                \
        if (rc_ != VAE_OK)                                                               \
            die(#call, rc_);                                                             \
    } while (0)

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "make_v11: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

/* ---- deterministic integers (xorshift64*, as make_v01.c) ------------------ */

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

static float input(void) { return (float)rand_int(0, 16) / 16.0f; }

/* ---- exact sums (as make_v01.c) --------------------------------------------- */

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
            fprintf(stderr, "make_v11: term %.17g is not on a binary grid\n", t);
            exit(1);
        }
    }
    if (q > a->q)
        a->q = q;
    a->sum += t;
    a->mag += fabs(t);
}

/* The finest grid and the largest use of the 2^24 bound met, for the summary. */
static int g_max_q;
static double g_max_use;

/* The sum, after checking that every order of summation gives it exactly in float. */
static double acc_exact(const acc *a, const char *where, size_t i)
{
    if (a->q > g_max_q)
        g_max_q = a->q;
    if (ldexp(a->mag, a->q) / 16777216.0 > g_max_use)
        g_max_use = ldexp(a->mag, a->q) / 16777216.0;
    if (ldexp(a->mag, a->q) > 16777216.0) { /* 2^24 */
        fprintf(stderr,
                "make_v11: %s[%zu]: terms on the grid 2^-%d with total magnitude %.17g: "
                "not exact in every order; choose a coarser grid or smaller layers\n",
                where, i, a->q, a->mag);
        exit(1);
    }
    if ((double)(float)a->sum != a->sum) {
        fprintf(stderr, "make_v11: %s[%zu]: %.17g is not a float\n", where, i, a->sum);
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
        fprintf(stderr, "make_v11: activation %d is not exact; not in a checked path\n",
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
    const float *p; /* the layer's grid parameters: weights then biases, slab layout */
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
    double sigma;           /* set when the likelihood is Gaussian */
    size_t n_enc, n_dec;
    spec enc[4], dec[4];
    spec head;
    int decode_exact;       /* record decoder outputs (only when every step is exact) */
    /* filled by setup() */
    vae_model *m;
    float grid[MAX_PARAMS]; /* the grid parameters, slab layout */
    size_t n_params;
    float x[BATCH * 256], mu[BATCH * 16], logvar[BATCH * 16];
    float z[BATCH * 16], mean[BATCH * 256];
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

static size_t weight_count(const spec *s)
{
    return s->kind == 0 ? s->out * s->in : s->ic * s->oc * s->k * s->k;
}

static size_t bias_count(const spec *s) { return s->kind == 0 ? s->out : s->oc; }

/* Writes the grid parameters into the model, tensor by tensor, with vae_model_tensor_set()
 * (weight then bias of each layer: the tensor layout is PyTorch's, which for every kind here
 * is the slab layout; checked through vae_model_params() afterwards). */
static void put_grid(golden *g)
{
    size_t count = 0;
    const size_t nt = vae_model_tensor_count(g->m);
    for (size_t i = 0; i < nt; i++) {
        size_t off = 0, n = 0;
        CHECK(vae_model_tensor_info(g->m, i, NULL, NULL, &off, &n));
        CHECK(vae_model_tensor_set(g->m, i, g->grid + off, n));
    }
    const float *slab = vae_model_params(g->m, &count);
    if (count != g->n_params || memcmp(slab, g->grid, count * sizeof *slab) != 0)
        fail("%s: the parameters set tensor by tensor are not the grid slab", g->name);
}

/* Builds the model, puts grid parameters into it, draws inputs and latent codes, and
 * computes and checks the exact outputs. */
static void setup(golden *g)
{
    CHECK(vae_model_create(&g->m, g->input_dim, g->latent_dim, g->likelihood));
    if (g->likelihood == VAE_LIKELIHOOD_GAUSSIAN)
        CHECK(vae_model_set_param(g->m, VAE_MODEL_GAUSSIAN_SIGMA, g->sigma));
    for (size_t i = 0; i < g->n_enc; i++) {
        vae_layer *l = make_layer(&g->enc[i]);
        CHECK(vae_model_add_encoder_layer(g->m, &l));
    }
    for (size_t i = 0; i < g->n_dec; i++) {
        vae_layer *l = make_layer(&g->dec[i]);
        CHECK(vae_model_add_decoder_layer(g->m, &l));
    }
    CHECK(vae_model_build(g->m, 11));

    /* Tensors: weight and bias of each encoder layer, the head, each decoder layer. */
    spec *order[10];
    size_t n_order = 0;
    for (size_t i = 0; i < g->n_enc; i++)
        order[n_order++] = &g->enc[i];
    size_t head_in = g->n_enc ? g->enc[g->n_enc - 1].out : g->input_dim;
    g->head = dense(head_in, 2 * g->latent_dim, VAE_ACT_IDENTITY);
    order[n_order++] = &g->head;
    for (size_t i = 0; i < g->n_dec; i++)
        order[n_order++] = &g->dec[i];
    if (vae_model_tensor_count(g->m) != 2 * n_order)
        fail("%s: the model has another number of tensors than layers", g->name);
    size_t off = 0;
    for (size_t i = 0; i < n_order; i++) {
        spec *s = order[i];
        size_t toff = 0, tn = 0;
        CHECK(vae_model_tensor_info(g->m, 2 * i, NULL, NULL, &toff, &tn));
        if (toff != off || tn != weight_count(s))
            fail("%s: tensor %s is not where this program expects it", g->name,
                 vae_model_tensor_name(g->m, 2 * i));
        CHECK(vae_model_tensor_info(g->m, 2 * i + 1, NULL, NULL, &toff, &tn));
        if (toff != off + weight_count(s) || tn != bias_count(s))
            fail("%s: tensor %s is not where this program expects it", g->name,
                 vae_model_tensor_name(g->m, 2 * i + 1));
        if (off + weight_count(s) + bias_count(s) > MAX_PARAMS)
            fail("%s: more than MAX_PARAMS parameters", g->name);
        s->p = g->grid + off;
        for (size_t j = 0; j < weight_count(s); j++)
            g->grid[off++] = weight();
        for (size_t j = 0; j < bias_count(s); j++)
            g->grid[off++] = bias();
    }
    g->n_params = off;
    if (vae_model_param_count(g->m) != off)
        fail("%s: the model's parameter count differs from the layers'", g->name);
    put_grid(g);

    /* Inputs, and the exact encoder outputs. */
    const size_t D = g->input_dim, L = g->latent_dim;
    static double a[BATCH * MAX_UNITS], b[BATCH * MAX_UNITS];
    for (size_t i = 0; i < BATCH * D; i++)
        a[i] = g->x[i] = input();
    double *cur = a, *nxt = b;
    for (size_t i = 0; i < g->n_enc; i++) {
        ref_forward(&g->enc[i], cur, BATCH, nxt, "encoder");
        double *t = cur; cur = nxt; nxt = t;
    }
    ref_forward(&g->head, cur, BATCH, nxt, "head");
    for (size_t s = 0; s < BATCH; s++)
        for (size_t j = 0; j < L; j++) {
            g->mu[s * L + j] = (float)nxt[s * 2 * L + j];
            g->logvar[s * L + j] = (float)nxt[s * 2 * L + L + j];
        }
    if (g->decode_exact) {
        for (size_t i = 0; i < BATCH * L; i++)
            a[i] = g->z[i] = (float)rand_int(-16, 16) / 8.0f;
        cur = a; nxt = b;
        for (size_t i = 0; i < g->n_dec; i++) {
            ref_forward(&g->dec[i], cur, BATCH, nxt, "decoder");
            double *t = cur; cur = nxt; nxt = t;
        }
        for (size_t i = 0; i < BATCH * D; i++)
            g->mean[i] = (float)cur[i];
    }
}

/* The library's outputs from model m equal the exact ones. */
static void check_outputs(const golden *g, const vae_model *m, const char *which)
{
    const size_t D = g->input_dim, L = g->latent_dim;
    float mu[BATCH * 16], lv[BATCH * 16], mean[BATCH * 256];
    vae_context *ctx = NULL;
    CHECK(vae_context_create(&ctx));
    CHECK(vae_encode(ctx, m, g->x, BATCH, mu, lv));
    if (memcmp(mu, g->mu, BATCH * L * sizeof *mu) || memcmp(lv, g->logvar, BATCH * L * sizeof *lv))
        fail("%s: %s: the library's encodings are not the exact ones", g->name, which);
    if (g->decode_exact) {
        CHECK(vae_decode(ctx, m, g->z, BATCH, mean));
        if (memcmp(mean, g->mean, BATCH * D * sizeof *mean))
            fail("%s: %s: the library's decoder means are not the exact ones", g->name, which);
    }
    vae_context_free(ctx);
}

/* ---- files ------------------------------------------------------------------- */

static unsigned char *slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    static unsigned char buf[1 << 16];
    *size = fread(buf, 1, sizeof buf, f);
    if (ferror(f) || !feof(f))
        fail("%s: cannot read it, or larger than 64 KiB", path);
    fclose(f);
    return buf;
}

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static uint64_t dbits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

/* FNV-1a, 64 bits, over the floats' bit patterns as little-endian bytes. */
static uint64_t fnv(const float *v, size_t n)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 4; k++) {
            h ^= (bits(v[i]) >> (8 * k)) & 0xffu;
            h *= 0x100000001b3u;
        }
    return h;
}

static void put_values(FILE *f, const char *tag, const float *v, size_t n, size_t dim)
{
    for (size_t i = 0; i < n * dim; i++)
        fprintf(f, "%s %zu %zu %08lx %.9g\n", tag, i / dim, i % dim, (unsigned long)bits(v[i]),
                (double)v[i]);
}

static void put_setting(FILE *f, const char *tag, int key, double v)
{
    fprintf(f, "%s %d %016llx %.17g\n", tag, key, (unsigned long long)dbits(v), v);
}

static void put_hex(FILE *f, const char *s)
{
    if (!*s)
        fputc('-', f);
    for (; *s; s++)
        fprintf(f, "%02x", (unsigned)(unsigned char)*s);
}

static FILE *open_expected(const golden *g, const char *dir, const char *ext)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.expected", dir, g->name);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(1);
    }
    fprintf(f, "libvae-golden 1\n");
    fprintf(f, "# %s.%s: %s\n", g->name, ext, g->about);
    fprintf(f, "# Written by tests/golden/make_v11.c with libvae %s; see tests/golden/README.md.\n",
            vae_version_string());
    fprintf(f, "input_dim %zu\nlatent_dim %zu\n", g->input_dim, g->latent_dim);
    fprintf(f, "likelihood %s\n",
            g->likelihood == VAE_LIKELIHOOD_GAUSSIAN ? "gaussian" : "bernoulli");
    if (g->likelihood == VAE_LIKELIHOOD_GAUSSIAN) {
        double v = 0;
        CHECK(vae_model_get_param(g->m, VAE_MODEL_GAUSSIAN_SIGMA, &v));
        fprintf(f, "# Settings: key, the double's bits, decimal (%%.17g).\n");
        put_setting(f, "model", VAE_MODEL_GAUSSIAN_SIGMA, v);
    }
    fprintf(f, "params %zu %016llx\n", g->n_params,
            (unsigned long long)fnv(g->grid, g->n_params));
    return f;
}

static void close_expected(const golden *g, FILE *f, const char *dir)
{
    fprintf(f, "# Value lines: name sample index float-bits-hex decimal.\n");
    fprintf(f, "encode %d\n", BATCH);
    put_values(f, "x", g->x, BATCH, g->input_dim);
    put_values(f, "mu", g->mu, BATCH, g->latent_dim);
    put_values(f, "logvar", g->logvar, BATCH, g->latent_dim);
    if (g->decode_exact) {
        fprintf(f, "decode %d\n", BATCH);
        put_values(f, "z", g->z, BATCH, g->latent_dim);
        put_values(f, "mean", g->mean, BATCH, g->input_dim);
    }
    fprintf(f, "end\n");
    if (fclose(f) != 0)
        fail("%s/%s.expected: write failed", dir, g->name);
}

/* ---- (a) a model file ---------------------------------------------------------- */

static void make_model(golden *g, const char *dir)
{
    setup(g);
    check_outputs(g, g->m, "built model");
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.vae", dir, g->name);
    CHECK(vae_model_save(g->m, path));

    /* Read back: the same outputs, and saved again the same bytes. */
    size_t size = 0, again = 0;
    const unsigned char *file = slurp(path, &size);
    static unsigned char mem[1 << 16];
    vae_model *back = NULL;
    CHECK(vae_model_load(&back, path));
    check_outputs(g, back, "reloaded model");
    CHECK(vae_model_save_mem(back, mem, sizeof mem, &again));
    if (again != size || memcmp(mem, file, size) != 0)
        fail("%s: the reloaded model saves other bytes", path);
    vae_model_free(back);

    FILE *f = open_expected(g, dir, "vae");
    fprintf(f, "resave\n");
    close_expected(g, f, dir);
    printf("make_v11: wrote %s (%zu bytes, %zu parameters) and %s.expected\n", path, size,
           g->n_params, g->name);
}

/* ---- (b), (c) checkpoints -------------------------------------------------------- */

typedef struct setting {
    int key;
    double value;
} setting;

typedef struct trainer_spec {
    int kind;                   /* VAE_OPTIMIZER_* */
    const setting *opt, *elbo;  /* terminated by key 0 */
    const char *const *meta;    /* key, value pairs, terminated by NULL */
    size_t samples, batch, stop_at; /* dataset size, batch size, where epoch 2 stops */
    size_t pending;             /* samples of the forward-backward pass left pending */
    int shuffle;                /* vae_train_options::shuffle */
    uint64_t seed;
} trainer_spec;

static int stop_at(void *payload, size_t done, size_t total, double running_loss)
{
    (void)total;
    (void)running_loss;
    return done >= *(const size_t *)payload;
}

static void make_checkpoint(golden *g, const trainer_spec *ts, const char *dir)
{
    setup(g);
    check_outputs(g, g->m, "built model");
    vae_context *ctx = NULL;
    vae_elbo *obj = NULL;
    vae_optimizer *opt = NULL, *fresh = NULL;
    vae_elbo *fresh_obj = NULL;
    vae_trainer *t = NULL;
    CHECK(vae_context_create(&ctx));
    CHECK(vae_elbo_create(&obj));
    CHECK(vae_elbo_create(&fresh_obj));
    CHECK(vae_optimizer_create(&opt, ts->kind));
    CHECK(vae_optimizer_create(&fresh, ts->kind));
    /* Every setting recorded differs from the default, so that a reader that skipped it
     * would be noticed (except where the optimizer allows only the default: dampening
     * with Nesterov momentum). */
    for (const setting *s = ts->opt; s->key; s++) {
        double d = 0, v = 0;
        CHECK(vae_optimizer_set_param(opt, s->key, s->value));
        CHECK(vae_optimizer_get_param(fresh, s->key, &d));
        CHECK(vae_optimizer_get_param(opt, s->key, &v));
        if (v == d && !(s->key == VAE_OPT_DAMPENING && ts->kind == VAE_OPTIMIZER_SGD))
            fail("%s: an optimizer setting equals its default", g->name);
    }
    for (const setting *s = ts->elbo; s->key; s++) {
        double d = 0, v = 0;
        CHECK(vae_elbo_set_param(obj, s->key, s->value));
        CHECK(vae_elbo_get_param(fresh_obj, s->key, &d));
        CHECK(vae_elbo_get_param(obj, s->key, &v));
        if (v == d)
            fail("%s: an objective setting equals its default", g->name);
    }
    CHECK(vae_trainer_create(&t, g->m, obj, opt, ctx, ts->seed));

    /* Training data on the input grid. */
    const size_t D = g->input_dim, N = ts->samples;
    float *data = malloc(N * D * sizeof *data);
    if (!data)
        fail("out of memory");
    for (size_t i = 0; i < N * D; i++)
        data[i] = input();
    vae_dataset *ds = NULL;
    CHECK(vae_dataset_from_floats(&ds, data, N, D, NULL));

    /* One whole epoch, then one stopped by the progress callback part-way: it stays open. */
    vae_train_options o;
    CHECK(vae_train_options_init(&o, sizeof o));
    o.batch_size = ts->batch;
    o.shuffle = ts->shuffle;
    CHECK(vae_trainer_train_epoch(t, ds, &o, NULL));
    o.progress = stop_at;
    o.payload = (void *)&ts->stop_at;
    vae_epoch_stats st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    int rc = vae_trainer_train_epoch(t, ds, &o, &st);
    if (rc != VAE_ERR_CANCELLED)
        die("vae_trainer_train_epoch (stopped)", rc);
    size_t done = 0, total = 0;
    CHECK(vae_trainer_epoch_position(t, &done, &total));
    if (done != ts->stop_at || total != N || st.samples != done)
        fail("%s: the open epoch is not where the callback stopped it", g->name);
    /* The epoch's means are its sums divided by done: exact (the same double on every
     * machine) when done is a power of two. */
    if (done & (done - 1))
        fail("%s: the open epoch stops after %zu samples, not a power of two", g->name, done);
    /* A pending gradient: one forward-backward pass without its step. */
    CHECK(vae_trainer_forward_backward(t, data, ts->pending, NULL, NULL));
    for (const char *const *kv = ts->meta; *kv; kv += 2)
        CHECK(vae_trainer_set_meta(t, kv[0], kv[1]));
    /* The parameters back onto the grid; everything else stays as training left it. */
    put_grid(g);
    check_outputs(g, g->m, "trainer's model");

    char path[4096];
    snprintf(path, sizeof path, "%s/%s.ckpt", dir, g->name);
    CHECK(vae_trainer_save(t, path));
    size_t size = 0, again = 0;
    const unsigned char *file = slurp(path, &size);

    /* Read back: the model part gives the exact outputs; a trainer restored from the file
     * saves the same bytes. */
    vae_model *back = NULL;
    vae_trainer *t2 = NULL;
    vae_elbo *obj2 = NULL;
    vae_optimizer *opt2 = NULL;
    vae_context *ctx2 = NULL;
    static unsigned char mem[1 << 16];
    CHECK(vae_model_load(&back, path));
    check_outputs(g, back, "model part of the checkpoint");
    CHECK(vae_context_create(&ctx2));
    CHECK(vae_elbo_create(&obj2));
    CHECK(vae_optimizer_create(&opt2, ts->kind));
    CHECK(vae_trainer_create(&t2, back, obj2, opt2, ctx2, 0));
    CHECK(vae_trainer_restore(t2, path));
    CHECK(vae_trainer_save_mem(t2, mem, sizeof mem, &again));
    if (again != size || memcmp(mem, file, size) != 0)
        fail("%s: a restored trainer saves other bytes", path);

    /* What the trainer reports, recorded for golden_check to compare field by field. */
    const char *kind = ts->kind == VAE_OPTIMIZER_ADAM ? "adam" : "sgd";
    FILE *f = open_expected(g, dir, "ckpt");
    fprintf(f, "optimizer %s\n", kind);
    for (int key = 1; key < 32; key++) { /* every setting this kind has */
        double v = 0;
        if (vae_optimizer_get_param(opt, key, &v) == VAE_OK)
            put_setting(f, "opt", key, v);
    }
    for (int key = 1; key < 32; key++) {
        double v = 0;
        if (vae_elbo_get_param(obj, key, &v) == VAE_OK)
            put_setting(f, "elbo", key, v);
    }
    fprintf(f, "steps %llu\nepochs %llu\nepoch_position %zu %zu\n",
            (unsigned long long)vae_trainer_steps(t), (unsigned long long)vae_trainer_epochs(t),
            done, total);
    fprintf(f, "# The open epoch as vae_trainer_train_epoch() reports it: its steps so far, and "
               "its mean\n# loss, recon and kl per sample (the double's bits, decimal).\n");
    fprintf(f, "epoch_steps %zu\n", st.steps);
    fprintf(f, "epoch_mean loss %016llx %.17g\n", (unsigned long long)dbits(st.loss), st.loss);
    fprintf(f, "epoch_mean recon %016llx %.17g\n", (unsigned long long)dbits(st.recon),
            st.recon);
    fprintf(f, "epoch_mean kl %016llx %.17g\n", (unsigned long long)dbits(st.kl), st.kl);
    size_t ng = 0;
    const float *grads = vae_trainer_grads(t, &ng);
    size_t nonzero = 0;
    for (size_t i = 0; i < ng; i++)
        nonzero += grads[i] != 0.0f;
    if (!nonzero)
        fail("%s: no pending gradient", g->name);
    fprintf(f, "# The pending gradient: count and FNV-1a 64 of its bits (%zu nonzero).\n",
            nonzero);
    fprintf(f, "grads %zu %016llx\n", ng, (unsigned long long)fnv(grads, ng));
    size_t nm = vae_trainer_meta_count(t);
    fprintf(f, "# Metadata: index, key and value as hex bytes (UTF-8; '-' for empty).\n");
    for (size_t i = 0; i < nm; i++) {
        const char *k = NULL, *v = NULL;
        CHECK(vae_trainer_meta_at(t, i, &k, &v));
        fprintf(f, "#   %s = %s\n", k, v);
    }
    fprintf(f, "meta %zu\n", nm);
    for (size_t i = 0; i < nm; i++) {
        const char *k = NULL, *v = NULL;
        CHECK(vae_trainer_meta_at(t, i, &k, &v));
        fprintf(f, "entry %zu ", i);
        put_hex(f, k);
        fputc(' ', f);
        put_hex(f, v);
        fputc('\n', f);
    }
    close_expected(g, f, dir);
    printf("make_v11: wrote %s (%zu bytes, %s, %llu steps, %llu epochs, epoch open at %zu of "
           "%zu) and %s.expected\n",
           path, size, kind, (unsigned long long)vae_trainer_steps(t),
           (unsigned long long)vae_trainer_epochs(t), done, total, g->name);

    vae_trainer_free(t2);
    vae_optimizer_free(opt2);
    vae_elbo_free(obj2);
    vae_context_free(ctx2);
    vae_model_free(back);
    vae_dataset_free(ds);
    free(data);
    vae_trainer_free(t);
    vae_optimizer_free(opt);
    vae_optimizer_free(fresh);
    vae_elbo_free(obj);
    vae_elbo_free(fresh_obj);
    vae_context_free(ctx);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_v11 OUTPUT_DIR (run against libvae 1.1, see README.md)\n");
        return 2;
    }
    if (vae_version_number() / 100 != 101) {
        fprintf(stderr, "make_v11: linked against libvae %s, not 1.1\n", vae_version_string());
        return 1;
    }
    static golden cnn = {
        .name = "v11_conv",
        .about = "Conv2D 1x8x8-3x4x4(relu)-4x2x2(relu)-3, decoder 3-16(relu)-ConvT-2x4x4(relu)"
                 "-ConvT-1x8x8, Gaussian sigma 0.375",
        .input_dim = 64, .latent_dim = 3, .likelihood = VAE_LIKELIHOOD_GAUSSIAN,
        .sigma = 0.375, .n_enc = 2, .n_dec = 3, .decode_exact = 1,
    };
    cnn.enc[0] = conv(1, 8, 8, 3, 3, 2, 1, VAE_ACT_RELU);
    cnn.enc[1] = conv(3, 4, 4, 4, 3, 2, 1, VAE_ACT_RELU);
    cnn.dec[0] = dense(3, 16, VAE_ACT_RELU);
    cnn.dec[1] = convt(4, 2, 2, 2, 3, 2, 1, 1, VAE_ACT_RELU);
    cnn.dec[2] = convt(2, 4, 4, 1, 3, 2, 1, 1, VAE_ACT_IDENTITY);

    /* Adam over a Bernoulli MLP 12-8(relu)-3, decoder 3-8(tanh)-12: the decoder's tanh and
     * sigmoid are not exact, so only the encoder is recorded. Each sample draws 3 normal
     * numbers, which come in pairs: 21 samples in epoch 1, 16 in epoch 2 and 2 in the pending
     * pass leave a spare one both in the generator as epoch 2 began and in the trainer's,
     * so both generator records in the file have their spare-value field set. */
    static golden mlp = {
        .name = "v11_adam",
        .about = "Adam trainer over MLP 12-8(relu)-3, decoder 3-8(tanh)-12, Bernoulli; open "
                 "epoch, pending gradient, metadata",
        .input_dim = 12, .latent_dim = 3, .likelihood = VAE_LIKELIHOOD_BERNOULLI,
        .n_enc = 1, .n_dec = 2, .decode_exact = 0,
    };
    mlp.enc[0] = dense(12, 8, VAE_ACT_RELU);
    mlp.dec[0] = dense(3, 8, VAE_ACT_TANH);
    mlp.dec[1] = dense(8, 12, VAE_ACT_IDENTITY);
    static const setting adam_opt[] = {
        {VAE_OPT_LR, 3e-3},    {VAE_OPT_WEIGHT_DECAY, 1e-2}, {VAE_OPT_CLIP_NORM, 4.0},
        {VAE_OPT_BETA1, 0.5},  {VAE_OPT_BETA2, 0.99},        {VAE_OPT_EPS, 1e-6},
        {0, 0}};
    static const setting adam_elbo[] = {{VAE_ELBO_BETA, 0.75}, {0, 0}};
    /* UTF-8: "Grüße aus Zürich: λ = 3·10⁻³, 𝛽₁ = ½ ✓" (two-, three- and four-byte
     * sequences). */
    static const char *const adam_meta[] = {
        "run", "golden v11_adam",
        "note", "Gr\xc3\xbc\xc3\x9f" "e aus Z\xc3\xbcrich: \xce\xbb = 3\xc2\xb7" "10"
                "\xe2\x81\xbb\xc2\xb3, \xf0\x9d\x9b\xbd\xe2\x82\x81 = \xc2\xbd \xe2\x9c\x93",
        NULL};
    static const trainer_spec adam = {VAE_OPTIMIZER_ADAM, adam_opt, adam_elbo, adam_meta,
                                      21, 4, 16, 2, 1, 20251101};

    /* SGD over a small Gaussian convolutional model: 1x6x6 -> Conv2D 2 k3 s2 p1 relu
     * (2x3x3) -> head(2); decoder 2 -> 18 relu (2x3x3) -> ConvTranspose2D 1 k3 s2 p1 op1
     * -> 1x6x6 means. Every step is exact, so the decoder's means are recorded too. The
     * autoencoder objective and epochs in sample order (no shuffle) differ from the Adam
     * checkpoint's settings; batches of 4 over 22 samples end with a partial one. */
    static golden small = {
        .name = "v11_sgd",
        .about = "SGD trainer over Conv2D 1x6x6-2x3x3(relu)-2, decoder 2-18(relu)-ConvT-1x6x6, "
                 "Gaussian sigma 0.75; open epoch, pending gradient, metadata",
        .input_dim = 36, .latent_dim = 2, .likelihood = VAE_LIKELIHOOD_GAUSSIAN,
        .sigma = 0.75, .n_enc = 1, .n_dec = 2, .decode_exact = 1,
    };
    small.enc[0] = conv(1, 6, 6, 2, 3, 2, 1, VAE_ACT_RELU);
    small.dec[0] = dense(2, 18, VAE_ACT_RELU);
    small.dec[1] = convt(2, 3, 3, 1, 3, 2, 1, 1, VAE_ACT_IDENTITY);
    static const setting sgd_opt[] = {
        {VAE_OPT_LR, 0.02},        {VAE_OPT_WEIGHT_DECAY, 5e-3}, {VAE_OPT_CLIP_NORM, 2.0},
        {VAE_OPT_MOMENTUM, 0.875}, {VAE_OPT_NESTEROV, 1},        {VAE_OPT_DAMPENING, 0},
        {0, 0}};
    static const setting sgd_elbo[] = {
        {VAE_ELBO_BETA, 2.5}, {VAE_ELBO_OBJECTIVE, VAE_OBJECTIVE_AUTOENCODER}, {0, 0}};
    /* UTF-8 key "größe" = "6×6 Bild, σ = 0.75", and an empty value. */
    static const char *const sgd_meta[] = {
        "gr\xc3\xb6\xc3\x9f" "e", "6\xc3\x97" "6 Bild, \xcf\x83 = 0.75",
        "empty", "",
        "run", "golden v11_sgd",
        NULL};
    static const trainer_spec sgd = {VAE_OPTIMIZER_SGD, sgd_opt, sgd_elbo, sgd_meta,
                                     22, 4, 8, 3, 0, 20251102};

    make_model(&cnn, argv[1]);
    make_checkpoint(&mlp, &adam, argv[1]);
    make_checkpoint(&small, &sgd, argv[1]);
    printf("make_v11: every sum exact: finest grid 2^-%d, at most %.3g of the 2^24 bound\n",
           g_max_q, g_max_use);
    return 0;
}
