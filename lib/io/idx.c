/* IDX files (the MNIST format), plain or gzip-compressed.
 *
 * Layout: two zero bytes, a type byte (0x08 = unsigned byte, the only type
 * accepted), the number of dimensions, then one big-endian uint32 per
 * dimension, then the data. zlib's gz* functions read plain files unchanged
 * and gzip files decompressed, so compression is detected from the content.
 * The data is read in chunks into a buffer that grows only as bytes actually
 * arrive, so a header announcing 2^40 bytes of a short file allocates nothing
 * large; the file must then end exactly where the header says. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "../core/core.h"
#include "dataset.h"

#define IDX_MAX_SAMPLES ((size_t)1 << 31)
#define IDX_MAX_DIM ((size_t)1 << 24)   /* values per sample */

typedef struct idx_file {
    size_t ndims;
    size_t dims[3];
    uint8_t *data;          /* dims[0] * ... bytes */
    size_t size;
} idx_file;

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reads up to n bytes; returns the count read, or -1 on a decompression error. */
static long long read_full(gzFile f, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        size_t want = n - got > (1u << 30) ? (1u << 30) : n - got;
        int r = gzread(f, (char *)buf + got, (unsigned)want);
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (long long)got;
}

/* A failed gzread is either the system refusing to read (an I/O error, e.g.
 * a directory or a bad disk) or zlib rejecting the stream (a format error). */
static int read_failed(gzFile f, const char *fn, const char *path)
{
    int errnum = Z_OK;
    const char *detail = gzerror(f, &errnum);
    size_t plen = strlen(path);
    if (!detail)
        detail = "";
    if (!strncmp(detail, path, plen) && detail[plen] == ':') /* zlib prefixes the path */
        detail += plen + 1 + (detail[plen + 1] == ' ');
    if (errnum == Z_ERRNO)
        return vae_fail(VAE_ERR_IO, "%s: cannot read %s: %s", fn, path, detail);
    return vae_fail(VAE_ERR_FORMAT, "%s: %s: corrupt gzip data (%s)", fn, path, detail);
}

static int read_idx(idx_file *out, const char *path, size_t min_dims, size_t max_dims,
                    const char *what)
{
    const char *fn = "vae_dataset_load_idx";
    memset(out, 0, sizeof *out);
    errno = 0;
    gzFile f = gzopen(path, "rb");
    if (!f)
        return vae_fail(VAE_ERR_IO, "%s: cannot open %s file %s: %s", fn, what, path,
                        errno ? strerror(errno) : "out of memory");
    int rc = VAE_OK;
    unsigned char head[16];
    long long r = read_full(f, head, 4);
    if (r < 0) {
        rc = read_failed(f, fn, path);
        goto done;
    }
    if (r < 4) {
        rc = vae_fail(VAE_ERR_FORMAT, "%s: %s: truncated header (%lld bytes)", fn, path, r);
        goto done;
    }
    if (head[0] != 0 || head[1] != 0 || head[2] != 0x08 || head[3] < min_dims ||
        head[3] > max_dims) {
        rc = vae_fail(VAE_ERR_FORMAT,
                      "%s: %s: wrong magic 0x%02x%02x%02x%02x for an IDX %s file (expected "
                      "0x000008%02zx)",
                      fn, path, head[0], head[1], head[2], head[3], what, max_dims);
        goto done;
    }
    out->ndims = head[3];
    r = read_full(f, head + 4, 4 * out->ndims);
    if (r < (long long)(4 * out->ndims)) {
        rc = r < 0 ? read_failed(f, fn, path)
                   : vae_fail(VAE_ERR_FORMAT, "%s: %s: truncated header", fn, path);
        goto done;
    }
    size_t per_sample = 1;
    for (size_t i = 0; i < out->ndims; i++) {
        out->dims[i] = be32(head + 4 + 4 * i);
        if (i > 0)
            per_sample *= out->dims[i];
        if (out->dims[i] == 0 || (i > 0 && per_sample > IDX_MAX_DIM)) {
            rc = vae_fail(VAE_ERR_FORMAT, "%s: %s: absurd dimension %zu = %zu", fn, path, i,
                          out->dims[i]);
            goto done;
        }
    }
    if (out->dims[0] > IDX_MAX_SAMPLES) {
        rc = vae_fail(VAE_ERR_FORMAT, "%s: %s: absurd sample count %zu", fn, path, out->dims[0]);
        goto done;
    }
    int ovf = 0;
    size_t total = vae_mul_size(out->dims[0], per_sample, &ovf);
    if (ovf) {
        rc = vae_fail(VAE_ERR_FORMAT, "%s: %s: %zu samples of %zu bytes do not fit in memory",
                      fn, path, out->dims[0], per_sample);
        goto done;
    }
    /* Grow by doubling as data arrives, never past what the header promised. */
    size_t cap = total < (1u << 20) ? total : (1u << 20), got = 0;
    uint8_t *buf = vae_malloc(cap);
    if (!buf) {
        rc = vae_fail(VAE_ERR_NOMEM, "%s: %s: out of memory", fn, path);
        goto done;
    }
    for (;;) {
        r = read_full(f, buf + got, cap - got);
        if (r < 0) {
            vae_free(buf);
            rc = read_failed(f, fn, path);
            goto done;
        }
        got += (size_t)r;
        if (got < cap || cap == total)
            break;
        size_t ncap = cap > total / 2 ? total : 2 * cap;
        uint8_t *nb = vae_realloc(buf, ncap);
        if (!nb) {
            vae_free(buf);
            rc = vae_fail(VAE_ERR_NOMEM, "%s: %s: out of memory", fn, path);
            goto done;
        }
        buf = nb;
        cap = ncap;
    }
    if (got < total) {
        vae_free(buf);
        rc = vae_fail(VAE_ERR_FORMAT,
                      "%s: %s: truncated: the header announces %zu samples (%zu bytes of "
                      "data), the file has %zu",
                      fn, path, out->dims[0], total, got);
        goto done;
    }
    unsigned char extra;
    r = read_full(f, &extra, 1);
    if (r != 0) {
        vae_free(buf);
        rc = r < 0 ? read_failed(f, fn, path)
                   : vae_fail(VAE_ERR_FORMAT,
                              "%s: %s: data continues past the size the header announces", fn,
                              path);
        goto done;
    }
    out->data = buf;
    out->size = total;
done:
    gzclose(f);
    return rc;
}

int vae_dataset_load_idx(vae_dataset **out, const char *images_path, const char *labels_path)
{
    const char *fn = "vae_dataset_load_idx";
    if (out)
        *out = NULL;
    if (!out || !images_path)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", fn, out ? "images_path" : "out");
    idx_file img, lab = {0};
    int rc = read_idx(&img, images_path, 2, 3, "image");
    if (rc)
        return rc;
    if (labels_path) {
        if ((rc = read_idx(&lab, labels_path, 1, 1, "label"))) {
            vae_free(img.data);
            return rc;
        }
        if (lab.dims[0] != img.dims[0]) {
            vae_free(img.data);
            vae_free(lab.data);
            return vae_fail(VAE_ERR_FORMAT, "%s: %s has %zu labels but %s has %zu images", fn,
                            labels_path, lab.dims[0], images_path, img.dims[0]);
        }
    }
    vae_dataset *ds = vae_calloc(1, sizeof *ds);
    int32_t *labels = labels_path ? vae_malloc(lab.dims[0] * sizeof *labels) : NULL;
    if (!ds || (labels_path && !labels)) {
        vae_free(ds);
        vae_free(labels);
        vae_free(img.data);
        vae_free(lab.data);
        return vae_fail(VAE_ERR_NOMEM, "%s: out of memory", fn);
    }
    for (size_t i = 0; labels && i < lab.dims[0]; i++)
        labels[i] = lab.data[i];
    vae_free(lab.data);
    ds->count = img.dims[0];
    ds->height = img.ndims == 3 ? img.dims[1] : 1;
    ds->width = img.ndims == 3 ? img.dims[2] : img.dims[1];
    ds->dim = ds->height * ds->width;
    ds->u8 = img.data;
    ds->labels = labels;
    *out = ds;
    return VAE_OK;
}
