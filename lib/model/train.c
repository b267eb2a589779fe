/* The epoch loop and whole-dataset evaluation over the public step functions.
 * Buffers are allocated once per call, outside the per-step loop. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/core.h"
#include "../core/rng.h"
#include "../io/dataset.h"
#include "elbo.h"
#include "model.h"

#define LOOP_MAX_BATCH ((size_t)1 << 20)

static double now_seconds(void)
{
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void vae_train_options_init(vae_train_options *opts)
{
    if (!opts)
        return;
    opts->size = sizeof *opts;
    opts->batch_size = 128;
    opts->shuffle = 1;
    opts->binarize = 0;
    opts->progress = NULL;
    opts->payload = NULL;
}

static int check_common(vae_model *m, vae_elbo *e, const vae_dataset *ds, const char *fn)
{
    if (!m || !e || !ds)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn,
                        !m ? "model" : !e ? "objective" : "dataset");
    int rc = vae_model_check_ready(m, fn);
    if (rc)
        return rc;
    if (ds->dim != m->input_dim)
        return vae_fail(VAE_ERR_SHAPE, "%s: the dataset has %zu values per sample, the model %zu",
                        fn, ds->dim, m->input_dim);
    return VAE_OK;
}

static void stats_out(vae_epoch_stats *stats, double loss, double recon, double kl, double secs,
                      size_t samples, size_t steps)
{
    if (!stats)
        return;
    /* Fields are filled only as far as the caller's struct reaches. */
    vae_epoch_stats s = {sizeof s, loss, recon, kl, secs, samples, steps};
    size_t n = stats->size < sizeof s ? stats->size : sizeof s;
    if (n > sizeof(size_t))
        memcpy((char *)stats + sizeof(size_t), (char *)&s + sizeof(size_t), n - sizeof(size_t));
}

int vae_train_epoch(vae_model *m, vae_elbo *e, vae_optimizer *opt, const vae_dataset *ds,
                    vae_rng *rng, const vae_train_options *opts, vae_epoch_stats *stats)
{
    const char *fn = "vae_train_epoch";
    int rc = check_common(m, e, ds, fn);
    if (rc)
        return rc;
    if (!opt || !rng)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn, opt ? "rng" : "optimizer");
    vae_train_options o;
    vae_train_options_init(&o);
    if (opts) {
        if (opts->size < sizeof o)
            return vae_fail(VAE_ERR_INVALID,
                            "%s: opts->size is %zu, expected %zu; use vae_train_options_init()",
                            fn, opts->size, sizeof o);
        o = *opts;
    }
    if (stats && stats->size < sizeof(size_t) + sizeof(double))
        return vae_fail(VAE_ERR_INVALID, "%s: stats->size (%zu) is not set; use sizeof", fn,
                        stats ? stats->size : 0);
    if (o.batch_size == 0 || o.batch_size > LOOP_MAX_BATCH)
        return vae_fail(VAE_ERR_INVALID, "%s: batch_size %zu is out of range", fn,
                        o.batch_size);
    const size_t n = ds->count, bs = o.batch_size < n ? o.batch_size : n;
    if ((rc = vae_model_ensure(m, bs, fn)))
        return rc;
    size_t *order = malloc(n * sizeof *order);
    float *batch = malloc(bs * ds->dim * sizeof *batch);
    if (!order || !batch) {
        free(order);
        free(batch);
        return vae_fail(VAE_ERR_NOMEM, "%s: out of memory", fn);
    }
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    if (o.shuffle) {
        for (size_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
            size_t j = (size_t)vae_rng_below(rng, (uint64_t)i + 1);
            size_t t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
    }
    double t0 = now_seconds(), sl = 0.0, sr = 0.0, sk = 0.0;
    size_t done = 0, steps = 0;
    while (done < n) {
        size_t b = n - done < bs ? n - done : bs;
        double loss, recon, kl;
        if ((rc = vae_dataset_batch(ds, order + done, b, o.binarize, rng, batch)) ||
            (rc = vae_elbo_forward_backward(e, m, batch, b, NULL, rng, &loss, &recon, &kl)) ||
            (rc = vae_optimizer_step(opt, m))) {
            vae_model_zero_grads(m);
            break;
        }
        sl += loss * (double)b;
        sr += recon * (double)b;
        sk += kl * (double)b;
        done += b;
        steps++;
        if (o.progress && o.progress(o.payload, done, n, sl / (double)done)) {
            rc = vae_fail(VAE_ERR_CANCELLED, "%s: stopped by the progress callback after %zu of "
                                             "%zu samples", fn, done, n);
            break;
        }
    }
    free(order);
    free(batch);
    double d = done ? (double)done : 1.0;
    stats_out(stats, sl / d, sr / d, sk / d, now_seconds() - t0, done, steps);
    return rc;
}

int vae_evaluate_dataset(vae_model *m, vae_elbo *e, const vae_dataset *ds, vae_rng *rng,
                         size_t batch_size, double *loss, double *recon, double *kl,
                         double *per_sample)
{
    const char *fn = "vae_evaluate_dataset";
    int rc = check_common(m, e, ds, fn);
    if (rc)
        return rc;
    if (batch_size == 0 || batch_size > LOOP_MAX_BATCH)
        return vae_fail(VAE_ERR_INVALID, "%s: batch_size %zu is out of range", fn, batch_size);
    if (!rng && e->objective == VAE_OBJECTIVE_ELBO)
        return vae_fail(VAE_ERR_INVALID, "%s: rng is NULL; the ELBO draws z from it", fn);
    const size_t n = ds->count, bs = batch_size < n ? batch_size : n;
    if ((rc = vae_model_ensure(m, bs, fn)))
        return rc;
    float *batch = malloc(bs * ds->dim * sizeof *batch);
    if (!batch)
        return vae_fail(VAE_ERR_NOMEM, "%s: out of memory", fn);
    double sl = 0.0, sr = 0.0, sk = 0.0;
    for (size_t done = 0; done < n;) {
        size_t b = n - done < bs ? n - done : bs;
        double l, r, k;
        if ((rc = vae_dataset_range(ds, done, b, batch)) ||
            (rc = vae_elbo_evaluate(e, m, batch, b, NULL, rng, &l, &r, &k,
                                    per_sample ? per_sample + done : NULL)))
            break;
        sl += l * (double)b;
        sr += r * (double)b;
        sk += k * (double)b;
        done += b;
    }
    free(batch);
    if (rc)
        return rc;
    if (loss)
        *loss = sl / (double)n;
    if (recon)
        *recon = sr / (double)n;
    if (kl)
        *kl = sk / (double)n;
    return VAE_OK;
}
