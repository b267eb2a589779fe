/* Inference on a const model: encode, decode, reconstruct, sample, the
 * importance-sampled log-likelihood and the per-sample ELBO. One runner
 * cuts the samples into blocks and hands them to the context's workers;
 * every block has the same shape whatever the worker count, so outputs do
 * not depend on it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/core.h"
#include "../core/rng.h"
#include "context.h"
#include "elbo.h"

enum { ENCODE, DECODE, RECONSTRUCT, SAMPLE };

typedef struct infer_job {
    vae_context *ctx;
    const vae_model *m;
    int kind;
    const float *in;          /* x or z, per kind */
    size_t n, nblk, round;    /* round: SAMPLE only, one block per worker */
    float *out, *out2;        /* out[n][...]; out2: logvar for ENCODE */
    size_t bad[VAE_MAX_THREADS]; /* first non-finite output value of each worker, or SIZE_MAX */
} infer_job;

/* Index of the first non-finite value of v[0..count), or SIZE_MAX. */
static size_t first_bad(const float *v, size_t count)
{
    size_t at = 0;
    return vae_all_finite(v, count, &at) ? SIZE_MAX : at;
}

static void run_block(infer_job *j, const vae_ws *ws, size_t blk)
{
    const vae_model *m = j->m;
    const size_t L = m->latent_dim, D = m->input_dim;
    size_t start, b, w = (size_t)(ws - j->ctx->ws);
    vae_block_range(j->n, j->nblk, blk, &start, &b);
    const float *z = NULL;
    if (j->kind == ENCODE || j->kind == RECONSTRUCT) {
        vae_forward_encoder(m, ws, 0, j->in + start * D, b);
        const float *h = vae_ws_act(m, ws, m->n_enc, 0);
        if (j->kind == ENCODE) {
            size_t at = first_bad(h, b * 2 * L);
            if (at != SIZE_MAX) { /* reported as an element of [mu | logvar] */
                size_t v = (start + at / (2 * L)) * 2 * L + at % (2 * L);
                j->bad[w] = v < j->bad[w] ? v : j->bad[w];
                return;
            }
            for (size_t i = 0; i < b; i++) {
                memcpy(j->out + (start + i) * L, h + i * 2 * L, L * sizeof(float));
                memcpy(j->out2 + (start + i) * L, h + i * 2 * L + L, L * sizeof(float));
            }
            return;
        }
        for (size_t i = 0; i < b; i++)
            memcpy(ws->z + i * L, h + i * 2 * L, L * sizeof(float));
        z = ws->z;
    } else {
        z = j->kind == DECODE ? j->in + start * L : ws->z;
    }
    vae_forward_decoder(m, ws, 0, z, b);
    const float *o = vae_ws_act(m, ws, m->n_layers - 1, 0);
    float *out = j->out + start * D;
    if (m->likelihood == VAE_LIKELIHOOD_BERNOULLI)
        vae_sigmoid(o, b * D, out);
    else if (m->likelihood == VAE_LIKELIHOOD_CONTINUOUS_BERNOULLI)
        vae_cb_mean(o, b * D, out);
    else
        memcpy(out, o, b * D * sizeof *out);
    size_t at = first_bad(out, b * D);
    if (at != SIZE_MAX && start * D + at < j->bad[w])
        j->bad[w] = start * D + at;
}

static void infer_part(void *arg, size_t w)
{
    infer_job *j = arg;
    const size_t T = j->ctx->workers;
    if (w >= T)
        return;
    if (j->kind == SAMPLE) {
        if (j->round * T + w < j->nblk)
            run_block(j, &j->ctx->ws[w], j->round * T + w);
        return;
    }
    for (size_t blk = w; blk < j->nblk; blk += T)
        run_block(j, &j->ctx->ws[w], blk);
}

static int run_infer(vae_context *ctx, const vae_model *m, int kind, const float *in, size_t n,
                     vae_rng *rng, float *out, float *out2, const char *fn)
{
    int rc = vae_ctx_layout(ctx, m, n < VAE_MAX_BATCH ? n : VAE_MAX_BATCH, 0, 0, 0, fn);
    if (rc)
        return rc;
    infer_job job = {ctx, m, kind, in, n, vae_blocks(n), 0, out, out2, {0}};
    for (size_t t = 0; t < VAE_MAX_THREADS; t++)
        job.bad[t] = SIZE_MAX;
    const size_t T = ctx->workers, L = m->latent_dim;
    if (kind == SAMPLE) {
        /* The codes are drawn here, block after block, in sample order. */
        for (job.round = 0; job.round * T < job.nblk; job.round++) {
            for (size_t w = 0; w < T && job.round * T + w < job.nblk; w++) {
                size_t start, b;
                vae_block_range(n, job.nblk, job.round * T + w, &start, &b);
                for (size_t k = 0; k < b * L; k++)
                    ctx->ws[w].z[k] = vae_rng_gauss(rng);
            }
            vae_ctx_run(ctx, infer_part, &job);
        }
    } else {
        vae_ctx_run(ctx, infer_part, &job);
    }
    size_t bad = SIZE_MAX;
    for (size_t t = 0; t < T; t++)
        bad = job.bad[t] < bad ? job.bad[t] : bad;
    if (bad != SIZE_MAX) {
        size_t cols = kind == ENCODE ? 2 * L : m->input_dim;
        return vae_fail(VAE_ERR_NUMERIC,
                        "%s: %s[%zu][%zu] is not finite: the model's activations overflow for "
                        "this input",
                        fn, kind == ENCODE ? "[mu | logvar]" : "out", bad / cols, bad % cols);
    }
    return VAE_OK;
}

/* Enters the context and checks what every inference call shares. */
static int begin(vae_context *ctx, const vae_model *m, const void *a, const char *a_name,
                 const void *b, const char *b_name, size_t n, const char *fn)
{
    int rc = vae_ctx_enter(ctx, fn);
    if (rc)
        return rc;
    if ((rc = vae_model_check_ready(m, fn)))
        ;
    else if (!a || !b)
        rc = vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn, !a ? a_name : b_name);
    else if (n == 0)
        rc = vae_fail(VAE_ERR_INVALID, "%s: n is 0", fn);
    if (rc)
        vae_ctx_leave(ctx);
    return rc;
}

int vae_encode(vae_context *ctx, const vae_model *m, const float *x, size_t n, float *mu,
               float *logvar)
{
    const char *fn = "vae_encode";
    int rc = begin(ctx, m, x, "x", mu, "mu", n, fn);
    if (rc)
        return rc;
    if (!logvar)
        rc = vae_fail(VAE_ERR_INVALID, "%s: logvar is NULL", fn);
    else if (!(rc = vae_check_input(m, x, n, fn)))
        rc = run_infer(ctx, m, ENCODE, x, n, NULL, mu, logvar, fn);
    vae_ctx_leave(ctx);
    return rc;
}

int vae_decode(vae_context *ctx, const vae_model *m, const float *z, size_t n, float *out)
{
    const char *fn = "vae_decode";
    int rc = begin(ctx, m, z, "z", out, "out", n, fn);
    if (rc)
        return rc;
    const size_t L = m->latent_dim;
    size_t bad = 0;
    if (!vae_all_finite(z, n * L, &bad))
        rc = vae_fail(VAE_ERR_NUMERIC, "%s: z[%zu][%zu] is not finite", fn, bad / L, bad % L);
    else
        rc = run_infer(ctx, m, DECODE, z, n, NULL, out, NULL, fn);
    vae_ctx_leave(ctx);
    return rc;
}

int vae_reconstruct(vae_context *ctx, const vae_model *m, const float *x, size_t n, float *out)
{
    const char *fn = "vae_reconstruct";
    int rc = begin(ctx, m, x, "x", out, "out", n, fn);
    if (rc)
        return rc;
    if (!(rc = vae_check_input(m, x, n, fn)))
        rc = run_infer(ctx, m, RECONSTRUCT, x, n, NULL, out, NULL, fn);
    vae_ctx_leave(ctx);
    return rc;
}

int vae_sample(vae_context *ctx, const vae_model *m, vae_rng *rng, size_t n, float *out)
{
    const char *fn = "vae_sample";
    int rc = begin(ctx, m, rng, "rng", out, "out", n, fn);
    if (rc)
        return rc;
    rc = run_infer(ctx, m, SAMPLE, NULL, n, rng, out, NULL, fn);
    vae_ctx_leave(ctx);
    return rc;
}

/* ---- importance-sampled log-likelihood (docs/math.md) -------------------
 *   log p(x) ~ log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x),
 * with log-sum-exp in double. Workers take samples w, w + T, ...; sample i
 * draws its codes from its own generator seeded with seeds[i]. */

typedef struct ll_job {
    vae_context *ctx;
    const vae_model *m;
    const float *x;
    size_t n, k;
    const uint64_t *seeds;
    double *logw;             /* [T][k] */
    double *out;
} ll_job;

static void ll_part(void *arg, size_t w)
{
    ll_job *j = arg;
    const size_t T = j->ctx->workers;
    if (w >= T)
        return;
    const vae_model *m = j->m;
    const vae_ws *ws = &j->ctx->ws[w];
    const size_t L = m->latent_dim, D = m->input_dim, k = j->k;
    double *logw = j->logw + w * k;
    for (size_t i = w; i < j->n; i += T) {
        const float *xi = j->x + i * D;
        vae_rng rng;
        vae_rng_seed(&rng, j->seeds[i]);
        vae_forward_encoder(m, ws, 0, xi, 1);
        const float *post = vae_ws_act(m, ws, m->n_enc, 0); /* [mu | logvar] */
        double sum_lv = 0.0;
        for (size_t c = 0; c < L; c++)
            sum_lv += post[L + c];
        /* The posterior is kept in std (the decoder overwrites the head's rows). */
        float *mu = ws->std, *sd = ws->std + L;
        for (size_t c = 0; c < L; c++) {
            mu[c] = post[c];
            sd[c] = expf(0.5f * post[L + c]);
        }
        for (size_t s = 0; s < k; s += VAE_BLOCK) {
            size_t b = k - s < VAE_BLOCK ? k - s : VAE_BLOCK;
            for (size_t r = 0; r < b; r++) {
                /* log p(z) - log q(z|x) = -1/2 sum z^2 + 1/2 sum eps^2 + 1/2 sum logvar */
                double zz = 0.0, ee = 0.0;
                for (size_t c = 0; c < L; c++) {
                    float e = vae_rng_gauss(&rng);
                    float z = mu[c] + sd[c] * e;
                    ws->z[r * L + c] = z;
                    zz += (double)z * z;
                    ee += (double)e * e;
                }
                logw[s + r] = 0.5 * (ee - zz + sum_lv);
            }
            vae_forward_decoder(m, ws, 0, ws->z, b);
            const float *o = vae_ws_act(m, ws, m->n_layers - 1, 0);
            for (size_t r = 0; r < b; r++)
                logw[s + r] -= vae_recon_loss(m, xi, o + r * D, 1, NULL, 0.0f, NULL);
        }
        double mx = -INFINITY;
        for (size_t s = 0; s < k; s++)
            mx = logw[s] > mx ? logw[s] : mx;
        double acc = 0.0;
        for (size_t s = 0; s < k; s++)
            acc += exp(logw[s] - mx);
        j->out[i] = mx + log(acc) - log((double)k);
    }
}

int vae_log_likelihood(vae_context *ctx, const vae_model *m, const float *x, size_t n, size_t k,
                       vae_rng *rng, double *out)
{
    const char *fn = "vae_log_likelihood";
    int rc = begin(ctx, m, x, "x", out, "out", n, fn);
    if (rc)
        return rc;
    uint64_t *seeds = NULL;
    double *logw = NULL;
    if (!rng)
        rc = vae_fail(VAE_ERR_INVALID, "%s: rng is NULL", fn);
    else if (k == 0 || k > ((size_t)1 << 30))
        rc = vae_fail(VAE_ERR_INVALID, "%s: k = %zu; 1 to 2^30 are possible", fn, k);
    else if (n > SIZE_MAX / 2 / sizeof *seeds)
        rc = vae_fail(VAE_ERR_INVALID, "%s: n = %zu is too large", fn, n);
    else if (!(rc = vae_check_input(m, x, n, fn))) {
        /* Workers: as many as samples, at most the context's (the layout
         * may choose fewer). The buffers come first, so that a failure
         * leaves the workspace as it was. */
        size_t T = ctx->n_threads > 1 && ctx->pool ? ctx->n_threads : 1;
        T = T < n ? T : n;
        if (!(seeds = vae_malloc(n * sizeof *seeds)) ||
            !(logw = vae_malloc(T * k * sizeof *logw)))
            rc = vae_fail(VAE_ERR_NOMEM, "%s: out of memory for %zu samples, k = %zu", fn, n, k);
        else
            rc = vae_ctx_layout(ctx, m, T * VAE_BLOCK, 0, 0, 0, fn);
    }
    if (!rc) {
        for (size_t i = 0; i < n; i++)
            seeds[i] = vae_rng_u64(rng);
        ll_job job = {ctx, m, x, n, k, seeds, logw, out};
        vae_ctx_run(ctx, ll_part, &job);
        for (size_t i = 0; i < n && !rc; i++)
            if (!isfinite(out[i]))
                rc = vae_fail(VAE_ERR_NUMERIC, "%s: log-likelihood of sample %zu is not finite",
                              fn, i);
    }
    vae_free(seeds);
    vae_free(logw);
    vae_ctx_leave(ctx);
    return rc;
}

/* ---- the per-sample ELBO ------------------------------------------------- */

int vae_elbo_evaluate(vae_context *ctx, const vae_model *m, const vae_elbo *e, const float *x,
                      size_t n, const float *eps, vae_rng *rng, double *per_sample,
                      vae_epoch_stats *stats)
{
    const char *fn = "vae_elbo_evaluate";
    double t0 = vae_seconds();
    int rc = begin(ctx, m, e, "objective", x, "x", n, fn);
    if (rc)
        return rc;
    double sums[3];
    if (stats && (rc = vae_struct_check(stats, sizeof *stats, fn, "stats")))
        ;
    else if (!(rc = vae_elbo_pass(ctx, m, e, x, n, eps, rng, NULL, NULL, per_sample, sums, NULL,
                                  fn)) &&
             stats) {
        vae_epoch_stats s = {sizeof s, sums[0], sums[1], sums[2], vae_seconds() - t0, n, 0};
        vae_struct_put(stats, &s, sizeof s);
    }
    vae_ctx_leave(ctx);
    return rc;
}
