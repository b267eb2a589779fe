/* Datasets in memory: uint8 images (IDX), coded row by row (dataset.h), or
 * caller floats, converted to float batches on demand. */
#include <stdlib.h>
#include <string.h>

#include "../core/core.h"
#include "../core/rng.h"
#include "dataset.h"

size_t vae_row_code(const uint8_t *row, size_t dim, uint8_t *out)
{
    /* The code stays below dim bytes, or the row is kept as it is. */
    size_t n = 0, j = 0;
    while (j < dim) {
        if (row[j]) {
            if (n + 1 >= dim)
                break;
            out[n++] = row[j++];
            continue;
        }
        size_t r = 1;
        while (r < 255 && j + r < dim && row[j + r] == 0)
            r++;
        if (n + 2 >= dim)
            break;
        out[n++] = 0;
        out[n++] = (uint8_t)r;
        j += r;
    }
    if (j == dim)
        return n;
    memcpy(out, row, dim);
    return dim;
}

/* Row index of ds as dim pixels in px. */
static void row_pixels(const vae_dataset *ds, size_t index, uint8_t *px)
{
    const uint8_t *c = ds->code + ds->off[index];
    const size_t len = ds->off[index + 1] - ds->off[index], d = ds->dim;
    if (len == d) {
        memcpy(px, c, d);
        return;
    }
    for (size_t k = 0, j = 0; k < len; k++) {
        if (c[k]) {
            px[j++] = c[k];
        } else {
            memset(px + j, 0, c[k + 1]);
            j += c[++k];
        }
    }
}

int vae_dataset_alloc(vae_dataset **out, size_t count, size_t dim, size_t code_bytes,
                      int labels, const char *fn)
{
    const int bytes = code_bytes > 0;
    int ovf = 0;
    size_t n = vae_mul_size(count, dim, &ovf);
    if (ovf || n > SIZE_MAX / sizeof(float))
        return vae_fail(VAE_ERR_INVALID, "%s: %zu x %zu values is too large", fn, count, dim);
    vae_dataset *ds = vae_calloc(1, sizeof *ds);
    if (!ds)
        return vae_fail(VAE_ERR_NOMEM, "%s: out of memory", fn);
    ds->count = count;
    ds->dim = dim;
    ds->height = 1;
    ds->width = dim;
    if (bytes) {
        ds->code = vae_malloc(code_bytes);
        ds->off = vae_malloc((count + 1) * sizeof *ds->off);
        if (ds->off)
            ds->off[0] = 0;
    } else {
        ds->f32 = vae_malloc((n ? n : 1) * sizeof(float));
    }
    if (labels)
        ds->labels = vae_malloc((count ? count : 1) * sizeof(int32_t));
    if ((bytes ? !ds->code || !ds->off : !ds->f32) || (labels && !ds->labels)) {
        vae_dataset_free(ds);
        return vae_fail(VAE_ERR_NOMEM, "%s: out of memory for %zu samples of %zu values", fn,
                        count, dim);
    }
    *out = ds;
    return VAE_OK;
}

void vae_dataset_free(vae_dataset *ds)
{
    if (!ds)
        return;
    vae_free(ds->code);
    vae_free(ds->off);
    vae_free(ds->f32);
    vae_free(ds->labels);
    vae_free(ds);
}

int vae_dataset_from_floats(vae_dataset **out, const float *data, size_t count, size_t dim,
                            const int32_t *labels)
{
    const char *fn = "vae_dataset_from_floats";
    if (out)
        *out = NULL;
    if (!out || !data)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn, out ? "data" : "out");
    if (count == 0 || dim == 0)
        return vae_fail(VAE_ERR_INVALID, "%s: count (%zu) and dim (%zu) must be positive", fn,
                        count, dim);
    vae_dataset *ds = NULL;
    int rc = vae_dataset_alloc(&ds, count, dim, 0, labels != NULL, fn);
    if (rc)
        return rc;
    size_t bad = 0;
    if (!vae_all_finite(data, count * dim, &bad)) {
        vae_dataset_free(ds);
        return vae_fail(VAE_ERR_NUMERIC, "%s: data[%zu][%zu] is not finite", fn, bad / dim,
                        bad % dim);
    }
    memcpy(ds->f32, data, count * dim * sizeof(float));
    if (labels)
        memcpy(ds->labels, labels, count * sizeof(int32_t));
    *out = ds;
    return VAE_OK;
}

size_t vae_dataset_count(const vae_dataset *ds)
{
    return ds ? ds->count : 0;
}

size_t vae_dataset_dim(const vae_dataset *ds)
{
    return ds ? ds->dim : 0;
}

int vae_dataset_image_size(const vae_dataset *ds, size_t *height, size_t *width)
{
    if (!ds || !height || !width)
        return vae_fail(VAE_ERR_INVALID, "vae_dataset_image_size: %s is NULL",
                        !ds ? "dataset" : !height ? "height" : "width");
    *height = ds->height;
    *width = ds->width;
    return VAE_OK;
}

int vae_dataset_has_labels(const vae_dataset *ds)
{
    return ds && ds->labels ? 1 : 0;
}

int vae_dataset_label(const vae_dataset *ds, size_t index, int32_t *label)
{
    const char *fn = "vae_dataset_label";
    if (!ds || !label)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn, ds ? "label" : "dataset");
    if (!ds->labels)
        return vae_fail(VAE_ERR_STATE, "%s: the dataset has no labels", fn);
    if (index >= ds->count)
        return vae_fail(VAE_ERR_INVALID, "%s: index %zu is past the %zu samples", fn, index,
                        ds->count);
    *label = ds->labels[index];
    return VAE_OK;
}

void vae_dataset_copy_row(vae_dataset *dst, size_t dst_index, const vae_dataset *src,
                          size_t src_index)
{
    size_t d = src->dim;
    if (src->code) {
        size_t at = dst->off[dst_index], len = src->off[src_index + 1] - src->off[src_index];
        memcpy(dst->code + at, src->code + src->off[src_index], len);
        dst->off[dst_index + 1] = at + len;
    } else
        memcpy(dst->f32 + dst_index * d, src->f32 + src_index * d, d * sizeof(float));
    if (src->labels)
        dst->labels[dst_index] = src->labels[src_index];
}

/* A dataset of n rows of ds's kind, with room for code_bytes of code when
 * ds holds bytes. */
static int new_like(vae_dataset **out, const vae_dataset *ds, size_t n, size_t code_bytes,
                    const char *fn)
{
    int rc = vae_dataset_alloc(out, n, ds->dim, ds->code ? code_bytes : 0, ds->labels != NULL,
                               fn);
    if (rc)
        return rc;
    (*out)->height = ds->height;
    (*out)->width = ds->width;
    return VAE_OK;
}

int vae_dataset_subset(vae_dataset **out, const vae_dataset *ds, const size_t *indices,
                       size_t n)
{
    const char *fn = "vae_dataset_subset";
    if (out)
        *out = NULL;
    if (!out || !ds || !indices)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn,
                        !out ? "out" : !ds ? "dataset" : "indices");
    if (n == 0)
        return vae_fail(VAE_ERR_INVALID, "%s: n is 0", fn);
    for (size_t i = 0; i < n; i++)
        if (indices[i] >= ds->count)
            return vae_fail(VAE_ERR_INVALID, "%s: indices[%zu] = %zu is past the %zu samples",
                            fn, i, indices[i], ds->count);
    size_t code = 0;
    for (size_t i = 0; ds->code && i < n; i++)
        code += ds->off[indices[i] + 1] - ds->off[indices[i]];
    vae_dataset *sub = NULL;
    int rc = new_like(&sub, ds, n, code, fn);
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++)
        vae_dataset_copy_row(sub, i, ds, indices[i]);
    *out = sub;
    return VAE_OK;
}

int vae_dataset_filter_label(vae_dataset **out, const vae_dataset *ds, int32_t label, int keep)
{
    const char *fn = "vae_dataset_filter_label";
    if (out)
        *out = NULL;
    if (!out || !ds)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn, out ? "dataset" : "out");
    if (!ds->labels)
        return vae_fail(VAE_ERR_STATE, "%s: the dataset has no labels", fn);
    size_t n = 0, code = 0;
    for (size_t i = 0; i < ds->count; i++)
        if ((ds->labels[i] == label) == (keep != 0)) {
            n++;
            code += ds->code ? ds->off[i + 1] - ds->off[i] : 0;
        }
    if (n == 0)
        return vae_fail(VAE_ERR_INVALID, "%s: no sample %s label %d", fn,
                        keep ? "has" : "is left without", (int)label);
    vae_dataset *sub = NULL;
    int rc = new_like(&sub, ds, n, code, fn);
    if (rc)
        return rc;
    for (size_t i = 0, j = 0; i < ds->count; i++)
        if ((ds->labels[i] == label) == (keep != 0))
            vae_dataset_copy_row(sub, j++, ds, i);
    *out = sub;
    return VAE_OK;
}

static void row_to_float(const vae_dataset *ds, size_t index, float *out)
{
    size_t d = ds->dim;
    if (ds->code) {
        /* The pixels land in the bytes of out's last quarter, each read
         * before the float that overwrites it is written (float j covers
         * bytes 4j..4j+3, pixel j lies at byte 3d + j >= 4j + 3 for j < d). */
        uint8_t *p = (uint8_t *)(void *)out + 3 * d;
        row_pixels(ds, index, p);
        /* A division, not a multiplication by 1/255 (which is off by one ulp
         * for half of the pixel values): p / 255 correctly rounded, the
         * value torchvision's ToTensor gives. */
        for (size_t j = 0; j < d; j++)
            out[j] = (float)p[j] / 255.0f;
    } else {
        memcpy(out, ds->f32 + index * d, d * sizeof(float));
    }
}

int vae_dataset_batch(const vae_dataset *ds, const size_t *indices, size_t n, int binarize,
                      vae_rng *rng, float *out)
{
    const char *fn = "vae_dataset_batch";
    if (!ds || !indices || !out)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn,
                        !ds ? "dataset" : !indices ? "indices" : "out");
    if (n == 0)
        return vae_fail(VAE_ERR_INVALID, "%s: n is 0", fn);
    if (binarize && !rng)
        return vae_fail(VAE_ERR_INVALID, "%s: binarize needs an rng", fn);
    for (size_t i = 0; i < n; i++)
        if (indices[i] >= ds->count)
            return vae_fail(VAE_ERR_INVALID, "%s: indices[%zu] = %zu is past the %zu samples",
                            fn, i, indices[i], ds->count);
    const size_t d = ds->dim;
    for (size_t i = 0; i < n; i++) {
        float *row = out + i * d;
        row_to_float(ds, indices[i], row);
        if (binarize) {
            /* Values outside [0, 1] clamp: below 0 never fires, above 1 always. */
            for (size_t j = 0; j < d; j++)
                row[j] = vae_rng_double(rng) < (double)row[j] ? 1.0f : 0.0f;
        }
    }
    return VAE_OK;
}

int vae_dataset_range(const vae_dataset *ds, size_t first, size_t n, float *out)
{
    const char *fn = "vae_dataset_range";
    if (!ds || !out)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn, ds ? "out" : "dataset");
    if (n == 0)
        return vae_fail(VAE_ERR_INVALID, "%s: n is 0", fn);
    if (first > ds->count || n > ds->count - first)
        return vae_fail(VAE_ERR_INVALID, "%s: samples %zu..%zu are past the %zu samples", fn,
                        first, first + n - 1, ds->count);
    for (size_t i = 0; i < n; i++)
        row_to_float(ds, first + i, out + i * ds->dim);
    return VAE_OK;
}
