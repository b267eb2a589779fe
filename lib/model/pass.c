/* The ELBO over a batch and its gradient, cut into blocks (docs/math.md,
 * "Reproducibility"). Phase 1: every worker runs the forward pass of its
 * blocks (w, w + T, ...), layer by layer, keeping their activations, and
 * writes each sample's terms. The loss is checked before anything is added
 * to the gradient. Phase 2: with one worker, every block's gradient goes
 * straight into the slab, layer by layer in block order. With T workers, in
 * rounds of T blocks: worker 0 adds the round's first block's gradient into
 * the slab, workers 1.. write theirs into private buffers, and the buffers
 * are added to the slab in block order. Either way the slab gets the
 * blocks' gradients one after another in block order, whatever T is.
 * With k draws per input (VAE_ELBO_SAMPLES) the blocks cut the n k rows,
 * input i repeated as rows i k .. i k + k - 1; each row's gradient is
 * weighted (1/k, or IWAE's normalised importance weight) before its
 * backward pass (docs/math.md, 6a). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../core/core.h"
#include "../core/rng.h"
#include "context.h"
#include "elbo.h"

/* A pass's shared arrays beyond ctx->rec and ctx->kl (which hold one
 * entry per row), carved from ctx->extra by arrays_layout(). */
typedef struct pass_arrays {
    double *loss;   /* [n] per-sample loss */
    double *cw;     /* [rows] weight of each row's gradient (k > 1 or IWAE) */
    double *klmc;   /* [rows] log q(z|x) - log p(z) at the draw (IWAE) */
    double *fbkl;   /* [rows][latent] KL of each dimension (free bits) */
    double *active; /* [latent] 1 when the dimension's batch KL is above lambda (free bits) */
    float *xrep;    /* [rows][input] each input repeated k times (k > 1) */
} pass_arrays;

typedef struct pass_job {
    vae_context *ctx;
    const vae_model *m;
    const vae_elbo *e;
    const float *x, *eps;
    size_t n, nblk, round;  /* n: rows, ns k of them */
    int sampled, train;
    float *grad;
    size_t ns, k;           /* samples and draws of each */
    int iwae, fbits;
    pass_arrays a;
    int overflow[VAE_MAX_THREADS];
    /* This process's blocks: b0 .. b0 + nloc - 1 (all of them unless a
     * distributed pass gives it a share), and where a distributed pass puts
     * each block's gradient (block b at dgrads + b * n_params). */
    size_t b0, nloc;
    float *dgrads;
    /* The largest |gradient| of the slab after the pass (vae_abs_bits),
     * found where its final values are written: by each worker's fold of
     * the last round or, where nothing is folded after it, by worker 0
     * after each layer's last block (max_in_backward). */
    int want_max, max_in_backward;
    uint32_t *gmax; /* [VAE_MAX_THREADS], one per worker */
    /* Noise from the generator: ctx->eps holds values start*L.. of the
     * normals drawn from noise, each worker filling its blocks' rows. */
    int draw;
    vae_rng noise;
} pass_job;

/* The reparameterization of one block: z = mu + s eps, s = exp(logvar / 2)
 * (or z = mu for the autoencoder). Returns 1 when s^2 overflows float. */
static int reparameterize(const pass_job *j, const vae_ws *ws, size_t slot, size_t start,
                          size_t b)
{
    const vae_model *m = j->m;
    const size_t L = m->latent_dim;
    const float *h = vae_ws_act(m, ws, m->n_enc, slot); /* [b][mu | logvar] */
    float *z = ws->z + slot * VAE_BLOCK * L, *sd = ws->std + slot * VAE_BLOCK * L;
    if (!j->sampled) {
        for (size_t i = 0; i < b; i++)
            memcpy(z + i * L, h + i * 2 * L, L * sizeof(float));
        return 0;
    }
    const float *eps = j->eps + start * L;
    /* s^2 = exp(logvar) enters the KL gradient in float: past about logvar
     * 88.7 it overflows although the double KL is finite. */
    int overflow = 0;
    for (size_t i = 0; i < b; i++)
        for (size_t k = 0; k < L; k++) {
            float mu = h[i * 2 * L + k], lv = h[i * 2 * L + L + k];
            float s = expf(0.5f * lv);
            overflow |= !(s * s < INFINITY);
            sd[i * L + k] = s;
            z[i * L + k] = mu + s * eps[i * L + k];
        }
    return overflow;
}

/* Per-sample terms of one block: recon_i (and its gradient when training)
 * and kl_i. */
static void block_terms(const pass_job *j, const vae_ws *ws, size_t slot, size_t start,
                        size_t b)
{
    const vae_model *m = j->m;
    const size_t L = m->latent_dim, D = m->input_dim;
    const float *h = vae_ws_act(m, ws, m->n_enc, slot);
    float *dout = j->train ? ws->dout + slot * VAE_BLOCK * D : NULL;
    vae_recon_loss(m, j->x + start * D, vae_ws_act(m, ws, m->n_layers - 1, slot), b, dout,
                   1.0f / (float)j->ns, j->ctx->rec + start);
    /* KL(N(mu, s^2) || N(0, 1)) = 1/2 sum (mu^2 + s^2 - 1 - log s^2); for
     * IWAE also its one-draw estimate log q(z|x) - log p(z) =
     * 1/2 sum (z^2 - eps^2 - log s^2), the log 2 pi terms cancelling. */
    const float *z = ws->z + slot * VAE_BLOCK * L, *eps = j->eps ? j->eps + start * L : NULL;
    for (size_t i = 0; i < b; i++) {
        double kl = 0.0, mc = 0.0;
        double *fb = j->fbits ? j->a.fbkl + (start + i) * L : NULL;
        for (size_t c = 0; j->sampled && c < L; c++) {
            double mu = h[i * 2 * L + c], lv = h[i * 2 * L + L + c];
            double t = mu * mu + exp(lv) - 1.0 - lv;
            kl += t;
            if (fb)
                fb[c] = 0.5 * t;
            if (j->iwae) {
                double zc = z[i * L + c], ec = eps[i * L + c];
                mc += zc * zc - ec * ec - lv;
            }
        }
        j->ctx->kl[start + i] = 0.5 * kl;
        if (j->iwae)
            j->a.klmc[start + i] = 0.5 * mc;
    }
}

/* One layer's forward pass on every block of worker w (slot k holds its
 * k-th block): layer by layer rather than block by block, so a layer's
 * weights are still in cache for its next block. The order changes no
 * result: blocks do not interact in the forward pass. */
static void forward_layer(const pass_job *j, const vae_ws *ws, size_t w, size_t i)
{
    const vae_model *m = j->m;
    const vae_layer *l = m->layers[i];
    const size_t T = j->ctx->workers;
    for (size_t k = w, slot = 0; k < j->nloc; k += T, slot++) {
        size_t start, b;
        vae_block_range(j->n, j->nblk, j->b0 + k, &start, &b);
        const float *in = i == 0 ? j->x + start * m->input_dim
                        : i == m->n_enc + 1 ? ws->z + slot * VAE_BLOCK * m->latent_dim
                                            : vae_ws_act(m, ws, i - 1, slot);
        l->ops->forward(l, in, b, vae_ws_act(m, ws, i, slot), ws->scratch);
    }
}

/* The noise of worker w's blocks, as one stream in row order would give it:
 * the transforms, the costly part, run on every worker at once. */
static void draw_noise(const pass_job *j, size_t w)
{
    const size_t L = j->m->latent_dim, T = j->ctx->workers;
    vae_gauss_cursor c;
    vae_gauss_cursor_init(&c, &j->noise);
    for (size_t k = w; k < j->nloc; k += T) {
        size_t start, b;
        vae_block_range(j->n, j->nblk, j->b0 + k, &start, &b);
        vae_gauss_cursor_fill(&c, j->ctx->eps + start * L, start * L, (start + b) * L);
    }
}

static void forward_part(void *arg, size_t w)
{
    pass_job *j = arg;
    const vae_model *m = j->m;
    j->overflow[w] = 0;
    if (w >= j->ctx->workers)
        return;
    const vae_ws *ws = &j->ctx->ws[w];
    const size_t T = j->ctx->workers;
    if (j->draw)
        draw_noise(j, w);
    if (!j->train) {
        /* One slot serves every block in turn. */
        for (size_t k = w; k < j->nloc; k += T) {
            size_t start, b;
            vae_block_range(j->n, j->nblk, j->b0 + k, &start, &b);
            vae_forward_encoder(m, ws, 0, j->x + start * m->input_dim, b);
            j->overflow[w] |= reparameterize(j, ws, 0, start, b);
            vae_forward_decoder(m, ws, 0, ws->z, b);
            block_terms(j, ws, 0, start, b);
        }
        return;
    }
    for (size_t i = 0; i <= m->n_enc; i++)
        forward_layer(j, ws, w, i);
    for (size_t k = w, slot = 0; k < j->nloc; k += T, slot++) {
        size_t start, b;
        vae_block_range(j->n, j->nblk, j->b0 + k, &start, &b);
        j->overflow[w] |= reparameterize(j, ws, slot, start, b);
    }
    for (size_t i = m->n_enc + 1; i < m->n_layers; i++)
        forward_layer(j, ws, w, i);
    for (size_t k = w, slot = 0; k < j->nloc; k += T, slot++) {
        size_t start, b;
        vae_block_range(j->n, j->nblk, j->b0 + k, &start, &b);
        block_terms(j, ws, slot, start, b);
    }
}

/* Backward of layers last .. first for the blocks in slots [s0, s1) of
 * worker w, layer by layer as the forward pass. At the first layer the
 * gradient is cur(slot) (overwritten); the last one computed writes its
 * input gradient to out(slot) (NULL: not needed). Each parameter receives
 * its blocks' gradients in slot order, that is block order. */
typedef float *(*slot_buf)(const pass_job *j, const vae_ws *ws, size_t slot);

static float *slot_dout(const pass_job *j, const vae_ws *ws, size_t slot)
{
    return ws->dout + slot * VAE_BLOCK * j->m->input_dim;
}
static float *slot_dz(const pass_job *j, const vae_ws *ws, size_t slot)
{
    return ws->dz + slot * VAE_BLOCK * j->m->latent_dim;
}
static float *slot_dhead(const pass_job *j, const vae_ws *ws, size_t slot)
{
    return ws->dhead + slot * VAE_BLOCK * 2 * j->m->latent_dim;
}

static void backward_layers(const pass_job *j, const vae_ws *ws, size_t w, size_t s0, size_t s1,
                            size_t first, size_t last, slot_buf cur, slot_buf out, float *grad,
                            int accumulate)
{
    const vae_model *m = j->m;
    const size_t T = j->ctx->workers;
    for (size_t i = last + 1, t = 0; i-- > first; t++) {
        const vae_layer *l = m->layers[i];
        for (size_t slot = s0; slot < s1; slot++) {
            size_t start, b;
            vae_block_range(j->n, j->nblk, j->b0 + w + slot * T, &start, &b);
            const float *in = i > first ? vae_ws_act(m, ws, i - 1, slot)
                              : first == 0 ? j->x + start * m->input_dim
                                           : ws->z + slot * VAE_BLOCK * m->latent_dim;
            /* dy and dx ping-pong between ga and gb, a block's rows each */
            float *pp[2] = {ws->ga + slot * VAE_BLOCK * ws->width,
                            ws->gb + slot * VAE_BLOCK * ws->width};
            float *dy = t == 0 ? cur(j, ws, slot) : pp[(t - 1) % 2];
            float *dx = i > first ? pp[t % 2] : out ? out(j, ws, slot) : NULL;
            l->ops->backward(l, in, vae_ws_act(m, ws, i, slot), dy, b, dx, ws->scratch,
                             grad + l->offset, accumulate);
        }
        if (j->max_in_backward && w == 0) {
            /* the layer's slab range is final and still in cache */
            uint32_t mx = vae_max_abs_bits(grad + l->offset, l->n_params);
            j->gmax[0] = mx > j->gmax[0] ? mx : j->gmax[0];
        }
    }
}

/* dz -> [dmu | dlogvar] of one block, plus beta times the KL gradient (of
 * the mean over the batch). */
static void head_gradient(const pass_job *j, const vae_ws *ws, size_t w, size_t slot)
{
    const vae_model *m = j->m;
    const size_t L = m->latent_dim;
    size_t start, b;
    vae_block_range(j->n, j->nblk, j->b0 + w + slot * j->ctx->workers, &start, &b);
    const float *h = vae_ws_act(m, ws, m->n_enc, slot);
    const float *sd = ws->std + slot * VAE_BLOCK * L, *dz = slot_dz(j, ws, slot);
    const float *eps = j->sampled ? j->eps + start * L : NULL;
    const float *z = ws->z + slot * VAE_BLOCK * L;
    float *dhead = slot_dhead(j, ws, slot);
    const float fb = j->e->beta / (float)j->ns;
    for (size_t i = 0; i < b; i++) {
        /* the row's share of the KL gradient: its weight times beta / n */
        const float cf = (j->a.cw ? (float)j->a.cw[start + i] : 1.0f) * fb;
        for (size_t k = 0; k < L; k++) {
            float g = dz[i * L + k];
            float *dh = dhead + i * 2 * L;
            if (j->iwae) {
                /* d/dmu and d/dlogvar of 1/2 (z^2 - eps^2 - logvar) */
                float s = sd[i * L + k], e = eps[i * L + k], zk = z[i * L + k];
                dh[k] = g + cf * zk;
                dh[L + k] = 0.5f * g * e * s + cf * (0.5f * zk * s * e - 0.5f);
            } else if (j->sampled) {
                float mu = h[i * 2 * L + k], s = sd[i * L + k];
                float c = j->fbits ? cf * (float)j->a.active[k] : cf;
                dh[k] = g + c * mu;
                dh[L + k] = 0.5f * g * eps[i * L + k] * s + 0.5f * c * (s * s - 1.0f);
            } else {
                dh[k] = g;
                dh[L + k] = 0.0f;
            }
        }
    }
}

/* dout *= each row's weight, for the slots [s0, s1) of worker w. */
static void weigh_rows(const pass_job *j, const vae_ws *ws, size_t w, size_t s0, size_t s1)
{
    const size_t D = j->m->input_dim;
    for (size_t slot = s0; slot < s1; slot++) {
        size_t start, b;
        vae_block_range(j->n, j->nblk, j->b0 + w + slot * j->ctx->workers, &start, &b);
        float *d = slot_dout(j, ws, slot);
        for (size_t i = 0; i < b; i++) {
            const float c = (float)j->a.cw[start + i];
            for (size_t q = 0; q < D; q++)
                d[i * D + q] *= c;
        }
    }
}

/* The whole backward pass of worker w's slots [s0, s1). */
static void backward_slots(const pass_job *j, size_t w, size_t s0, size_t s1, float *grad,
                           int accumulate)
{
    const vae_model *m = j->m;
    const vae_ws *ws = &j->ctx->ws[w];
    if (j->a.cw)
        weigh_rows(j, ws, w, s0, s1);
    backward_layers(j, ws, w, s0, s1, m->n_enc + 1, m->n_layers - 1, slot_dout, slot_dz, grad,
                    accumulate);
    for (size_t slot = s0; slot < s1; slot++)
        head_gradient(j, ws, w, slot);
    backward_layers(j, ws, w, s0, s1, 0, m->n_enc, slot_dhead, NULL, grad, accumulate);
}

/* Round `round` with several workers: worker 0 adds its block into the
 * slab, the others write theirs into their own buffers. */
static void backward_part(void *arg, size_t w)
{
    pass_job *j = arg;
    const size_t T = j->ctx->workers;
    if (w >= T || j->round * T + w >= j->nloc)
        return;
    backward_slots(j, w, j->round, j->round + 1, w == 0 ? j->grad : j->ctx->ws[w].grad, w == 0);
}

/* grad += the round's private gradients in block order; worker t sums one
 * range of the slab. */
static void fold_part(void *arg, size_t t)
{
    pass_job *j = arg;
    const size_t T = j->ctx->workers;
    if (t >= T)
        return;
    size_t in_round = j->nloc - j->round * T;
    in_round = in_round < T ? in_round : T;
    const size_t n = j->m->n_params, lo = n * t / T, hi = n * (t + 1) / T;
    const int last = (j->round + 1) * T >= j->nloc;
    for (size_t u = 1; u < in_round; u++)
        j->gmax[t] = vae_add_floats(j->grad + lo, j->ctx->ws[u].grad + lo, hi - lo,
                                    j->want_max && last && u + 1 == in_round);
}

/* Distributed: worker w's local blocks, each block's gradient into its own
 * place of dgrads (written, not added). */
static void backward_dist_part(void *arg, size_t w)
{
    pass_job *j = arg;
    const size_t T = j->ctx->workers, np = j->m->n_params;
    if (w >= T)
        return;
    for (size_t k = w, slot = 0; k < j->nloc; k += T, slot++)
        backward_slots(j, w, slot, slot + 1, j->dgrads + (j->b0 + k) * np, 0);
}

/* Distributed: grad += every block's gradient in block order; worker t sums
 * one range of the slab. */
static void fold_dist_part(void *arg, size_t t)
{
    pass_job *j = arg;
    const size_t T = j->ctx->workers;
    if (t >= T)
        return;
    const size_t np = j->m->n_params, lo = np * t / T, hi = np * (t + 1) / T;
    for (size_t b = 0; b < j->nblk; b++)
        j->gmax[t] = vae_add_floats(j->grad + lo, j->dgrads + b * np + lo, hi - lo,
                                    j->want_max && b + 1 == j->nblk);
}

/* The first block of rank r's share of nblk blocks. */
static size_t dist_first(const vae_dist *d, size_t nblk, size_t r)
{
    return (size_t)((uint64_t)nblk * r / d->world);
}

/* Grows the distributed buffers for a pass of n rows in nblk blocks, with
 * `per_row` doubles of terms each, before anything runs, so that a rank
 * short of memory fails before its first exchange. */
static int dist_reserve(vae_dist *d, size_t n, size_t nblk, size_t np, size_t per_row,
                        const char *fn)
{
    size_t g = nblk * np, t = d->world + per_row * n;
    if (nblk > SIZE_MAX / (np ? np : 1) / sizeof(float))
        return vae_fail(VAE_ERR_NOMEM, "%s: %zu block gradients of %zu parameters do not fit "
                                       "in memory",
                        fn, nblk, np);
    if (g > d->grads_cap) {
        float *p = vae_malloc(g * sizeof *p);
        if (!p)
            return vae_fail(VAE_ERR_NOMEM, "%s: out of memory for %zu block gradients", fn,
                            nblk);
        vae_free(d->grads);
        d->grads = p;
        d->grads_cap = g;
    }
    if (t > d->terms_cap) {
        double *p = vae_malloc(t * sizeof *p);
        if (!p)
            return vae_fail(VAE_ERR_NOMEM, "%s: out of memory", fn);
        vae_free(d->terms);
        d->terms = p;
        d->terms_cap = t;
    }
    return VAE_OK;
}

/* The first sample of block b of n samples in nblk blocks (n for b = nblk). */
static size_t block_start(size_t n, size_t nblk, size_t b)
{
    size_t start = n, rows;
    if (b < nblk)
        vae_block_range(n, nblk, b, &start, &rows);
    return start;
}

/* The per-row terms a pass exchanges: rec and kl, IWAE's klmc and the free
 * bits' per-dimension KL, each with its width in doubles. Returns their
 * count. */
static size_t row_terms(const pass_job *j, double *arr[4], size_t width[4])
{
    size_t c = 0;
    arr[c] = j->ctx->rec, width[c++] = 1;
    arr[c] = j->ctx->kl, width[c++] = 1;
    if (j->iwae)
        arr[c] = j->a.klmc, width[c++] = 1;
    if (j->fbits)
        arr[c] = j->a.fbkl, width[c++] = j->m->latent_dim;
    return c;
}

/* Every rank's loss terms to every rank: rank r's part is its overflow
 * flag, then each per-row array (row_terms) over its rows. Sets *overflow
 * when any rank's reparameterization overflowed. */
static int dist_terms(vae_dist *d, const pass_job *j, int *overflow, const char *fn)
{
    const size_t n = j->n, nblk = j->nblk;
    double *arr[4];
    size_t width[4], na = row_terms(j, arr, width), per_row = 0;
    for (size_t q = 0; q < na; q++)
        per_row += width[q];
    for (int back = 0; back < 2; back++) {
        for (size_t r = 0, at = 0; r < d->world; r++) {
            size_t s0 = block_start(n, nblk, dist_first(d, nblk, r));
            size_t rows = block_start(n, nblk, dist_first(d, nblk, r + 1)) - s0;
            if (!back) {
                d->bytes[r] = (1 + per_row * rows) * sizeof(double);
                if (r == d->rank)
                    d->terms[at] = *overflow ? 1.0 : 0.0;
            } else {
                *overflow |= d->terms[at] != 0.0;
            }
            size_t o = at + 1;
            for (size_t q = 0; q < na; q++) {
                double *p = arr[q] + s0 * width[q];
                size_t len = rows * width[q];
                if (!back && r == d->rank)
                    memcpy(d->terms + o, p, len * sizeof(double));
                else if (back)
                    memcpy(p, d->terms + o, len * sizeof(double));
                o += len;
            }
            at = o;
        }
        if (!back) {
            int rc = d->fn(d->payload, d->terms, d->bytes);
            if (rc)
                return vae_fail(VAE_ERR_IO, "%s: the exchange of the loss terms failed (%d) on "
                                            "rank %zu of %zu",
                                fn, rc, d->rank, d->world);
        }
    }
    return VAE_OK;
}

/* Sizes (in doubles) the pass's arrays for n samples of k rows each, and
 * points a at them from base when base is not NULL. */
static size_t arrays_layout(const vae_model *m, size_t n, size_t k, int iwae, int fbits,
                            double *base, pass_arrays *a)
{
    const size_t N = n * k, L = m->latent_dim;
    size_t at = 0;
    double *p[5] = {NULL};
    size_t len[5] = {n, (k > 1 || iwae) ? N : 0, iwae ? N : 0, fbits ? N * L : 0,
                     fbits ? L : 0};
    for (size_t q = 0; q < 5; q++) {
        p[q] = base && len[q] ? base + at : NULL;
        at += len[q];
    }
    size_t xr = k > 1 ? (N * m->input_dim + 1) / 2 : 0;
    if (a)
        *a = (pass_arrays){p[0], p[1], p[2], p[3], p[4],
                           base && xr ? (float *)(void *)(base + at) : NULL};
    return at + xr;
}

/* The pass's shape: rows per sample, and whether it is IWAE or uses free
 * bits. Fails on a batch whose rows exceed VAE_MAX_BATCH. */
static int pass_shape(const vae_elbo *e, size_t n, int train, size_t *k, int *iwae, int *fbits,
                      const char *fn)
{
    const int sampled = e->objective != VAE_OBJECTIVE_AUTOENCODER;
    *k = sampled ? e->samples : 1;
    *iwae = e->objective == VAE_OBJECTIVE_IWAE;
    *fbits = train && e->objective == VAE_OBJECTIVE_ELBO && e->free_bits > 0.0f;
    if (n == 0)
        return vae_fail(VAE_ERR_INVALID, "%s: n is 0", fn);
    if (n > VAE_MAX_BATCH / *k)
        return vae_fail(VAE_ERR_INVALID, "%s: n = %zu%s is above %zu; split the batch", fn, n,
                        *k > 1 ? " times the objective's samples" : "", VAE_MAX_BATCH);
    if (train && *iwae && e->free_bits > 0.0f)
        return vae_fail(VAE_ERR_INVALID, "%s: free bits apply to the ELBO objective, not to "
                                         "IWAE; set VAE_ELBO_FREE_BITS to 0",
                        fn);
    return VAE_OK;
}

int vae_elbo_layout(vae_context *ctx, const vae_model *m, const vae_elbo *e, size_t n, int train,
                    const char *fn)
{
    size_t k;
    int iwae, fbits;
    int rc = pass_shape(e, n, train, &k, &iwae, &fbits, fn);
    if (rc)
        return rc;
    return vae_ctx_layout(ctx, m, n * k, train, n * k,
                          arrays_layout(m, n, k, iwae, fbits, NULL, NULL), fn);
}

/* Sample i's loss from its k rows, with the rows' gradient weights:
 * ELBO, mean of rec plus beta kl (weights 1/k); IWAE, -log of the mean of
 * the importance weights exp(-(rec + beta klmc)), computed from their
 * largest (weights: the normalised importance weights). Free bits are
 * added by the caller. */
static double sample_loss(const pass_job *j, size_t i, double beta, double *rec)
{
    const size_t k = j->k, r0 = i * k;
    const double *rr = j->ctx->rec + r0;
    double rs = rr[0];
    for (size_t q = 1; q < k; q++)
        rs += rr[q];
    *rec = k == 1 ? rs : rs / (double)k;
    if (!j->iwae) {
        for (size_t q = 0; j->a.cw && q < k; q++)
            j->a.cw[r0 + q] = 1.0 / (double)k;
        return *rec + beta * j->ctx->kl[r0];
    }
    double *w = j->a.cw + r0, mx = -INFINITY, sum = 0.0;
    for (size_t q = 0; q < k; q++) {
        w[q] = -(rr[q] + beta * j->a.klmc[r0 + q]);
        mx = w[q] > mx ? w[q] : mx;
    }
    for (size_t q = 0; q < k; q++)
        sum += (w[q] = exp(w[q] - mx));
    for (size_t q = 0; q < k; q++)
        w[q] /= sum;
    return -(mx + log(sum / (double)k));
}

/* Free bits: each dimension's batch KL, which dimensions exceed lambda,
 * and the KL term sum_d max(lambda, KL_d); each sample's loss gets its
 * share, beta times (KL_d of the sample where active, lambda elsewhere). */
static double free_bits(const pass_job *j, double beta)
{
    const size_t L = j->m->latent_dim, N = j->n, k = j->k;
    const double lambda = j->e->free_bits;
    double term = 0.0;
    for (size_t d = 0; d < L; d++) {
        double s = 0.0;
        for (size_t r = 0; r < N; r++)
            s += j->a.fbkl[r * L + d];
        s /= (double)N;
        j->a.active[d] = s > lambda ? 1.0 : 0.0;
        term += s > lambda ? s : lambda;
    }
    for (size_t i = 0; i < j->ns; i++) {
        const double *f = j->a.fbkl + i * k * L;
        double t = 0.0;
        for (size_t d = 0; d < L; d++)
            t += j->a.active[d] != 0.0 ? f[d] : lambda;
        j->a.loss[i] = j->ctx->rec[i] + beta * t;
    }
    return term;
}

int vae_elbo_pass(vae_context *ctx, const vae_model *m, const vae_elbo *e, const float *x,
                  size_t n, const float *eps, vae_rng *rng, float *grad, uint32_t *grad_max,
                  double *per_sample, double sums[3], vae_dist *dist, const char *fn)
{
    size_t k;
    int iwae, fbits;
    int rc = pass_shape(e, n, grad != NULL, &k, &iwae, &fbits, fn);
    if (rc)
        return rc;
    const int sampled = e->objective != VAE_OBJECTIVE_AUTOENCODER;
    if (sampled && !eps && !rng)
        return vae_fail(VAE_ERR_INVALID, "%s: eps and rng are both NULL; one must give the noise",
                        fn);
    if ((rc = vae_check_input(m, x, n, fn)))
        return rc;
    const size_t L = m->latent_dim, N = n * k;
    size_t bad = 0;
    if (sampled && eps && !vae_all_finite(eps, N * L, &bad))
        return vae_fail(VAE_ERR_NUMERIC, "%s: eps[%zu][%zu] is not finite", fn, bad / L,
                        bad % L);
    if (!sampled)
        eps = NULL;
    if (dist && !grad)
        dist = NULL; /* only training passes are shared out */
    if (dist && (rc = dist_reserve(dist, N, vae_blocks(N), m->n_params,
                                   2 + (size_t)iwae + (fbits ? L : 0), fn)))
        return rc;
    if ((rc = vae_elbo_layout(ctx, m, e, n, grad != NULL, fn)))
        return rc;
    pass_job job = {ctx, m, e, x, eps, N, vae_blocks(N), 0, sampled, grad != NULL, grad, n, k,
                    iwae, fbits, {0}, {0}, 0, vae_blocks(N), NULL};
    arrays_layout(m, n, k, iwae, fbits, ctx->extra, &job.a);
    uint32_t gmax[VAE_MAX_THREADS] = {0};
    job.want_max = grad && grad_max;
    job.gmax = gmax;
    ctx->loss = job.a.loss;
    if (k > 1) {
        /* Row i k + q is input i. */
        const size_t D = m->input_dim;
        for (size_t i = 0; i < n; i++)
            for (size_t q = 0; q < k; q++)
                memcpy(job.a.xrep + (i * k + q) * D, x + i * D, D * sizeof(float));
        job.x = job.a.xrep;
    }
    if (sampled && !eps) {
        /* One stream in row order: the generator moves past it here, and
         * the workers compute their rows' values in forward_part. */
        job.draw = 1;
        job.noise = *rng;
        vae_rng_gauss_skip(rng, N * L);
        job.eps = ctx->eps;
    }
    if (dist) {
        job.b0 = dist_first(dist, job.nblk, dist->rank);
        job.nloc = dist_first(dist, job.nblk, dist->rank + 1) - job.b0;
        job.dgrads = dist->grads;
        vae_ctx_use_workers(ctx, job.nloc ? job.nloc : 1);
    }
    vae_ctx_run(ctx, forward_part, &job);
    int overflow = 0;
    for (size_t t = 0; t < ctx->workers; t++)
        overflow |= job.overflow[t];
    if (dist && (rc = dist_terms(dist, &job, &overflow, fn)))
        return rc;
    if (overflow)
        return vae_fail(VAE_ERR_NUMERIC,
                        "%s: exp(logvar) overflows float; the encoder's logvar output is too "
                        "large%s",
                        fn, dist ? " (on one of the ranks)" : "");
    const double beta = e->beta;
    if (iwae)
        for (size_t r = 0; r < N; r++)
            if (!isfinite(ctx->rec[r] + job.a.klmc[r]))
                return vae_fail(VAE_ERR_NUMERIC,
                                "%s: the loss of sample %zu, draw %zu, is not finite (recon %g, "
                                "log q - log p %g); logvar or the decoder output overflowed",
                                fn, r / k, r % k, ctx->rec[r], job.a.klmc[r]);
    /* Per-sample terms, then rec and kl packed to one entry per sample
     * (entry i is written after rows i k.. are read, and i <= i k). */
    double lsum = 0.0;
    for (size_t i = 0; i < n; i++) {
        double rec;
        job.a.loss[i] = sample_loss(&job, i, beta, &rec);
        lsum += job.a.loss[i];
        ctx->kl[i] = ctx->kl[i * k];
        ctx->rec[i] = rec;
    }
    double rsum = 0.0, ksum = 0.0;
    for (size_t i = 0; i < n; i++) {
        rsum += ctx->rec[i];
        ksum += ctx->kl[i];
    }
    double r = rsum / (double)n, kk = ksum / (double)n;
    double total = iwae ? lsum / (double)n : fbits ? r + beta * free_bits(&job, beta)
                                                   : r + beta * kk;
    if (!isfinite(total))
        return vae_fail(VAE_ERR_NUMERIC,
                        "%s: the loss is not finite (recon %g, kl %g); logvar or the decoder "
                        "output overflowed",
                        fn, r, kk);
    if (per_sample)
        memcpy(per_sample, job.a.loss, n * sizeof *per_sample);
    if (dist) {
        /* Every rank computes its blocks' gradients, gets everyone's, and
         * adds them all in block order: the sums one process makes. */
        vae_ctx_run(ctx, backward_dist_part, &job);
        for (size_t q = 0; q < dist->world; q++)
            dist->bytes[q] = (dist_first(dist, job.nblk, q + 1) - dist_first(dist, job.nblk, q)) *
                             m->n_params * sizeof(float);
        int xr = dist->fn(dist->payload, dist->grads, dist->bytes);
        if (xr)
            return vae_fail(VAE_ERR_IO, "%s: the exchange of the gradients failed (%d) on rank "
                                        "%zu of %zu",
                            fn, xr, dist->rank, dist->world);
        vae_ctx_use_workers(ctx, job.nblk);
        vae_ctx_run(ctx, fold_dist_part, &job);
    } else if (grad && ctx->workers == 1) {
        /* One worker holds every block: all of them straight into the slab. */
        job.max_in_backward = job.want_max;
        backward_slots(&job, 0, 0, job.nblk, grad, 1);
    } else if (grad) {
        const size_t T = ctx->workers;
        for (job.round = 0; job.round * T < job.nblk; job.round++) {
            /* a last round of one block is not folded */
            job.max_in_backward = job.want_max && job.nblk - job.round * T == 1;
            vae_ctx_run(ctx, backward_part, &job);
            if (T > 1 && job.nblk - job.round * T > 1)
                vae_ctx_run(ctx, fold_part, &job);
        }
    }
    if (job.want_max) {
        uint32_t mx = 0;
        for (size_t t = 0; t < VAE_MAX_THREADS; t++)
            mx = gmax[t] > mx ? gmax[t] : mx;
        *grad_max = mx;
    }
    sums[0] = total;
    sums[1] = r;
    sums[2] = kk;
    return VAE_OK;
}
