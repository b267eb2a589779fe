/* Epochs over datasets: training and whole-dataset evaluation. Datasets are
 * read through their public functions only. Buffers are allocated once per
 * call, outside the per-step loop. */
#include <stdlib.h>
#include <string.h>

#include "../core/core.h"
#include "../core/rng.h"
#include "../model/context.h"
#include "../model/elbo.h"
#include "trainer.h"

int vae_train_options_init(vae_train_options *opts, size_t size)
{
    if (!opts)
        return vae_fail(VAE_ERR_INVALID, "vae_train_options_init: opts is NULL");
    if (size < sizeof(size_t))
        return vae_fail(VAE_ERR_INVALID,
                        "vae_train_options_init: size %zu is smaller than the size field", size);
    if (size > sizeof(vae_train_options) + 4096)
        return vae_fail(VAE_ERR_INVALID,
                        "vae_train_options_init: size %zu is not the size of the struct", size);
    vae_train_options o;
    memset(&o, 0, sizeof o);
    o.size = size;
    o.batch_size = 128;
    o.shuffle = 1;
    /* Only the bytes the caller's struct has: an older, shorter one gets
     * the fields it knows; a newer, longer one gets zeros in the fields
     * this library does not know, which epochs accept. */
    memset(opts, 0, size);
    memcpy(opts, &o, size < sizeof o ? size : sizeof o);
    return VAE_OK;
}

int vae_trainer_train_epoch(vae_trainer *t, const vae_dataset *ds, const vae_train_options *opts,
                            vae_epoch_stats *stats)
{
    const char *fn = "vae_trainer_train_epoch";
    if (!t || !ds)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn, t ? "dataset" : "trainer");
    vae_train_options o;
    vae_train_options_init(&o, sizeof o);
    if (opts) {
        if (vae_struct_check(opts, sizeof o, fn, "opts"))
            return VAE_ERR_INVALID;
        memcpy((char *)&o + sizeof o.size, (const char *)opts + sizeof o.size,
               (opts->size < sizeof o ? opts->size : sizeof o) - sizeof o.size);
        o.size = sizeof o;
    }
    if (stats && vae_struct_check(stats, sizeof *stats, fn, "stats"))
        return VAE_ERR_INVALID;
    if (o.batch_size == 0 || o.batch_size > VAE_MAX_BATCH)
        return vae_fail(VAE_ERR_INVALID, "%s: batch_size %zu is out of range (1 to %zu)", fn,
                        o.batch_size, VAE_MAX_BATCH);
    const size_t n = vae_dataset_count(ds), dim = vae_dataset_dim(ds);
    if (dim != t->m->input_dim)
        return vae_fail(VAE_ERR_SHAPE, "%s: the dataset has %zu values per sample, the model %zu",
                        fn, dim, t->m->input_dim);
    vae_open_epoch *ep = &t->ep;
    if (ep->open && ep->total != n)
        return vae_fail(VAE_ERR_SHAPE, "%s: the open epoch (%zu of %zu samples done) is over a "
                                       "dataset of %zu samples, this one has %zu; finish it on "
                                       "that dataset or call vae_trainer_discard_epoch",
                        fn, ep->done, ep->total, ep->total, n);
    int rc = vae_ctx_enter(t->ctx, fn);
    if (rc)
        return rc;
    const size_t bs = o.batch_size < n ? o.batch_size : n;
    size_t *order = vae_malloc(n * sizeof *order);
    float *batch = vae_malloc(bs * dim * sizeof *batch);
    if (!order || !batch)
        rc = vae_fail(VAE_ERR_NOMEM, "%s: out of memory", fn);
    else
        rc = vae_elbo_layout(t->ctx, t->m, t->e, bs, 1, fn); /* sized once, before the steps */
    double t0 = vae_seconds();
    if (!rc) {
        if (!ep->open) { /* a new epoch: its order comes from the generator as it stands */
            *ep = (vae_open_epoch){1, o.shuffle != 0, t->rng, n, 0, 0, {0.0, 0.0, 0.0}};
            vae_epoch_order(order, n, ep->shuffle, &t->rng);
        } else { /* continued: the same order, from the generator as the epoch began */
            vae_rng r0 = ep->rng;
            vae_epoch_order(order, n, ep->shuffle, &r0);
        }
    }
    while (!rc && ep->done < n) {
        size_t b = n - ep->done < bs ? n - ep->done : bs;
        vae_epoch_stats st = {sizeof st};
        if ((rc = vae_dataset_batch(ds, order + ep->done, b, o.binarize, &t->rng, batch)) ||
            (rc = vae_trainer_step_in(t, batch, b, &st, fn)))
            break;
        ep->sums[0] += st.loss * (double)b;
        ep->sums[1] += st.recon * (double)b;
        ep->sums[2] += st.kl * (double)b;
        ep->done += b;
        ep->steps++;
        if (o.progress && o.progress(o.payload, ep->done, n, ep->sums[0] / (double)ep->done)) {
            rc = vae_fail(VAE_ERR_CANCELLED, "%s: stopped by the progress callback after %zu of "
                                             "%zu samples",
                          fn, ep->done, n);
            break;
        }
    }
    vae_open_epoch now = *ep;
    if (!rc && ep->open) {
        ep->open = 0;
        t->epochs++;
    }
    vae_free(order);
    vae_free(batch);
    vae_ctx_leave(t->ctx);
    if (stats) {
        double d = now.done ? (double)now.done : 1.0;
        vae_epoch_stats s = {sizeof s,          now.sums[0] / d,        now.sums[1] / d,
                             now.sums[2] / d,   vae_seconds() - t0,     now.done,
                             now.steps};
        vae_struct_put(stats, &s, sizeof s);
    }
    return rc;
}

void vae_epoch_order(size_t *order, size_t n, int shuffle, vae_rng *rng)
{
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    if (shuffle)
        for (size_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
            size_t j = (size_t)vae_rng_below(rng, (uint64_t)i + 1);
            size_t tmp = order[i];
            order[i] = order[j];
            order[j] = tmp;
        }
}

int vae_trainer_epoch_position(const vae_trainer *t, size_t *done, size_t *total)
{
    if (!t)
        return vae_fail(VAE_ERR_INVALID, "vae_trainer_epoch_position: trainer is NULL");
    if (done)
        *done = t->ep.open ? t->ep.done : 0;
    if (total)
        *total = t->ep.open ? t->ep.total : 0;
    return VAE_OK;
}

int vae_trainer_discard_epoch(vae_trainer *t)
{
    const char *fn = "vae_trainer_discard_epoch";
    if (!t)
        return vae_fail(VAE_ERR_INVALID, "%s: trainer is NULL", fn);
    int rc = vae_ctx_enter(t->ctx, fn); /* not from inside an epoch's callback */
    if (rc)
        return rc;
    t->ep.open = 0;
    vae_ctx_leave(t->ctx);
    return VAE_OK;
}

/* Samples per pass of vae_evaluate_dataset: results do not depend on it. */
#define EVAL_CHUNK ((size_t)1024)

int vae_evaluate_dataset(vae_context *ctx, const vae_model *m, const vae_elbo *e,
                         const vae_dataset *ds, vae_rng *rng, double *per_sample,
                         vae_epoch_stats *stats)
{
    const char *fn = "vae_evaluate_dataset";
    double t0 = vae_seconds();
    if (!m || !e || !ds)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn,
                        !m ? "model" : !e ? "objective" : "dataset");
    int rc = vae_model_check_ready(m, fn);
    if (rc)
        return rc;
    if (!rng && e->objective != VAE_OBJECTIVE_AUTOENCODER)
        return vae_fail(VAE_ERR_INVALID, "%s: rng is NULL; the ELBO draws z from it", fn);
    if (stats && vae_struct_check(stats, sizeof *stats, fn, "stats"))
        return VAE_ERR_INVALID;
    const size_t n = vae_dataset_count(ds), dim = vae_dataset_dim(ds);
    if (dim != m->input_dim)
        return vae_fail(VAE_ERR_SHAPE, "%s: the dataset has %zu values per sample, the model %zu",
                        fn, dim, m->input_dim);
    if ((rc = vae_ctx_enter(ctx, fn)))
        return rc;
    /* Chunks of at most EVAL_CHUNK samples, and of at most VAE_MAX_BATCH
     * rows when each sample takes several draws. */
    const size_t draws = e->objective == VAE_OBJECTIVE_AUTOENCODER ? 1 : e->samples;
    const size_t most = EVAL_CHUNK < VAE_MAX_BATCH / draws ? EVAL_CHUNK : VAE_MAX_BATCH / draws;
    const size_t bs = n < most ? n : most;
    float *batch = vae_malloc(bs * dim * sizeof *batch);
    if (!batch)
        rc = vae_fail(VAE_ERR_NOMEM, "%s: out of memory", fn);
    double sr = 0.0, sk = 0.0, sl = 0.0, sums[3];
    for (size_t done = 0; !rc && done < n;) {
        size_t b = n - done < bs ? n - done : bs;
        if ((rc = vae_dataset_range(ds, done, b, batch)) ||
            (rc = vae_elbo_pass(ctx, m, e, batch, b, NULL, rng, NULL, NULL,
                                per_sample ? per_sample + done : NULL, sums, NULL, fn)))
            break;
        /* Summed sample by sample, so the chunk size changes nothing. */
        for (size_t i = 0; i < b; i++) {
            sr += ctx->rec[i];
            sk += ctx->kl[i];
            sl += ctx->loss[i];
        }
        done += b;
    }
    vae_free(batch);
    vae_ctx_leave(ctx);
    if (!rc && stats) {
        /* The ELBO's mean loss as r + beta k, which 1.0 and 1.1 reported */
        double r = sr / (double)n, k = sk / (double)n;
        double loss = e->objective == VAE_OBJECTIVE_IWAE ? sl / (double)n : r + e->beta * k;
        vae_epoch_stats s = {sizeof s, loss, r, k, vae_seconds() - t0, n, 0};
        vae_struct_put(stats, &s, sizeof s);
    }
    return rc;
}
