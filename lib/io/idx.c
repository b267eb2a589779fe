/* IDX files (the MNIST format), plain or gzip-compressed.
 *
 * Layout: two zero bytes, a type byte (0x08 = unsigned byte, the only type
 * accepted), the number of dimensions, then one big-endian uint32 per
 * dimension, then the data. A file starting with the gzip magic 1f 8b (an IDX
 * file starts with 00 00) is one gzip member (RFC 1952), inflated here with
 * zlib's inflate, whose allocations go through the library's allocator; any
 * other file is plain IDX. The member must end (Z_STREAM_END: its CRC-32 and
 * length verified) and nothing may follow it, not even a second member.
 *
 * Memory: the file is read in IN_CHUNK pieces and inflated as the data is
 * needed. The header is checked against VAE_LIMIT_FILE_BYTES before any data
 * is read, and the data buffer grows as bytes actually arrive, never past
 * what the header announces: a header announcing 2^40 bytes of a short file
 * allocates nothing large, and a small gzip bomb cannot inflate past the
 * announced size plus one byte. The file must then end exactly where the
 * header says. Images are coded row by row as they arrive (dataset.h), so
 * the raw pixels are never all in memory at once. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "../core/core.h"
#include "file.h"
#include "dataset.h"

#define IDX_MAX_SAMPLES ((size_t)1 << 31)
#define IDX_MAX_DIM ((size_t)1 << 24)   /* values per sample */
#define IN_CHUNK ((size_t)1 << 16)      /* bytes read from the file at a time */
#define FIRST_CAP ((size_t)1 << 20)     /* first size of the data buffer */

static const char *const FN = "vae_dataset_load_idx";

typedef struct idx_file {
    size_t ndims;
    size_t dims[3];
    uint8_t *data;          /* dims[0] * ... bytes (labels), or the rows' code (images) */
    size_t *off;            /* [dims[0] + 1] where each row's code starts (images) */
    size_t size;            /* bytes in data */
} idx_file;

/* The content of one file: its bytes (plain) or its inflated bytes (gzip). */
typedef struct idx_src {
    FILE *f;
    const char *path;
    unsigned char *in;      /* [IN_CHUNK] bytes read from the file */
    size_t pos, len;        /* in[pos..len) not yet consumed */
    uint64_t file_bytes;    /* bytes read from the file so far */
    uint64_t limit;         /* VAE_LIMIT_FILE_BYTES */
    int eof;                /* the file has no more bytes */
    int gz;                 /* a gzip member, inflated through z */
    int z_live;             /* inflateInit2 succeeded: inflateEnd is due */
    int z_end;              /* the member ended (Z_STREAM_END) */
    z_stream z;
} idx_src;

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* zlib's allocations, through the library's allocator. */
static voidpf z_alloc(voidpf opaque, uInt items, uInt size)
{
    (void)opaque;
    int ovf = 0;
    size_t n = vae_mul_size(items, size, &ovf);
    return ovf ? Z_NULL : vae_malloc(n);
}

static void z_free(voidpf opaque, voidpf p)
{
    (void)opaque;
    vae_free(p);
}

/* A failed system call: out of memory is VAE_ERR_NOMEM, anything else an
 * I/O error. */
static int sys_failed(int err, const char *doing, const char *path)
{
    return vae_fail(err == ENOMEM ? VAE_ERR_NOMEM : VAE_ERR_IO, "%s: cannot %s %s: %s", FN,
                    doing, path, err ? strerror(err) : "unknown error");
}

static int over_limit(const idx_src *s, const char *what, unsigned long long n)
{
    return vae_fail(VAE_ERR_NOMEM, "%s: %s: %s %llu bytes, above the limit "
                                   "VAE_LIMIT_FILE_BYTES = %llu",
                    FN, s->path, what, n, (unsigned long long)s->limit);
}

/* Reads the next piece of the file into s->in, when everything before it
 * was consumed. At the end of the file s->eof is set and nothing is read. */
static int fill(idx_src *s)
{
    if (s->pos < s->len || s->eof)
        return VAE_OK;
    errno = 0;
    size_t r = fread(s->in, 1, IN_CHUNK, s->f);
    if (r < IN_CHUNK) {
        if (ferror(s->f))
            return sys_failed(errno, "read", s->path);
        s->eof = 1;
    }
    s->pos = 0;
    s->len = r;
    s->file_bytes += r;
    if (s->file_bytes > s->limit)
        return over_limit(s, "the file has more than", s->limit);
    return VAE_OK;
}

static int gzip_failed(const idx_src *s, int zr)
{
    if (zr == Z_MEM_ERROR)
        return vae_fail(VAE_ERR_NOMEM, "%s: %s: out of memory for zlib", FN, s->path);
    return vae_fail(VAE_ERR_FORMAT, "%s: %s: corrupt gzip data (%s)", FN, s->path,
                    s->z.msg ? s->z.msg : zr == Z_NEED_DICT ? "needs a dictionary" : "invalid");
}

/* Delivers up to n bytes of the content into dst; *got < n only where the
 * content ends (the end of a plain file, or the end of the gzip member).
 * A gzip member cut before its end (trailer included) is VAE_ERR_FORMAT. */
static int src_read(idx_src *s, unsigned char *dst, size_t n, size_t *got)
{
    *got = 0;
    while (*got < n && !s->z_end) {
        int rc = fill(s);
        if (rc)
            return rc;
        if (s->pos == s->len && !s->gz)
            break; /* the end of a plain file (fill reads when everything was consumed) */
        size_t avail = s->len - s->pos, want = n - *got;
        if (!s->gz) {
            size_t k = want < avail ? want : avail;
            memcpy(dst + *got, s->in + s->pos, k);
            s->pos += k;
            *got += k;
            continue;
        }
        if (want > UINT_MAX)
            want = UINT_MAX;
        s->z.next_in = s->in + s->pos;
        s->z.avail_in = (uInt)avail; /* avail <= IN_CHUNK */
        s->z.next_out = dst + *got;
        s->z.avail_out = (uInt)want;
        int zr = inflate(&s->z, Z_NO_FLUSH);
        s->pos = s->len - s->z.avail_in;
        *got += want - s->z.avail_out;
        /* With the file consumed inflate may still have output pending (a
         * long match), so it is called once more with no input; no progress
         * then (Z_BUF_ERROR) means the member was cut. */
        if (zr == Z_STREAM_END)
            s->z_end = 1;
        else if (zr == Z_BUF_ERROR && s->z.avail_in == 0 && s->eof)
            return vae_fail(VAE_ERR_FORMAT,
                            "%s: %s: truncated gzip data: the file ends inside the gzip member "
                            "(before its end or its CRC-32 and length trailer)",
                            FN, s->path);
        else if (zr != Z_OK)
            return gzip_failed(s, zr == Z_BUF_ERROR ? Z_DATA_ERROR : zr);
    }
    return VAE_OK;
}

static void src_close(idx_src *s)
{
    if (s->z_live)
        inflateEnd(&s->z);
    vae_free(s->in);
    if (s->f)
        fclose(s->f);
}

static int src_open(idx_src *s, const char *path, const char *what)
{
    memset(s, 0, sizeof *s);
    s->path = path;
    s->limit = vae_get_limit(VAE_LIMIT_FILE_BYTES);
    long long regular = -1;
    int rc = vae_file_open_read(path, FN, what, &s->f, &regular);
    if (rc)
        return rc;
    /* A regular file larger than the limit is refused unread. */
    if (regular >= 0 && (unsigned long long)regular > s->limit)
        return over_limit(s, "the file has", (unsigned long long)regular);
    s->in = vae_malloc(IN_CHUNK);
    if (!s->in)
        return vae_fail(VAE_ERR_NOMEM, "%s: %s: out of memory", FN, path);
    if ((rc = fill(s)))
        return rc;
    if (s->len >= 2 && s->in[0] == 0x1f && s->in[1] == 0x8b) {
        s->gz = 1;
        s->z.zalloc = z_alloc;
        s->z.zfree = z_free;
        s->z.opaque = Z_NULL;
        int zr = inflateInit2(&s->z, 15 + 16); /* gzip only */
        if (zr != Z_OK)
            return zr == Z_MEM_ERROR
                       ? vae_fail(VAE_ERR_NOMEM, "%s: %s: out of memory for zlib", FN, path)
                       : vae_fail(VAE_ERR_IO, "%s: cannot read %s: zlib refuses to start: %s",
                                  FN, path, s->z.msg ? s->z.msg : zError(zr));
        s->z_live = 1;
    }
    return VAE_OK;
}

/* After the announced data: the content must end there, and a gzip member
 * must end there too, with nothing after it in the file. */
static int src_finish(idx_src *s)
{
    unsigned char extra;
    size_t got = 0;
    int rc = src_read(s, &extra, 1, &got);
    if (rc)
        return rc;
    if (got)
        return vae_fail(VAE_ERR_FORMAT, "%s: %s: data continues past the size the header announces",
                        FN, s->path);
    if (!s->gz)
        return VAE_OK;
    /* src_read stops short only at Z_STREAM_END: the CRC-32 and the length
     * were verified. What follows (another member, padding) is refused. */
    if ((rc = fill(s)))
        return rc;
    if (s->pos < s->len)
        return vae_fail(VAE_ERR_FORMAT,
                        "%s: %s: trailing bytes after the gzip member (only one member is read, "
                        "nothing may follow it)",
                        FN, s->path);
    return VAE_OK;
}

/* Reads one IDX file of min_dims to max_dims dimensions. When expect_count
 * is nonzero (labels), the first dimension must equal it; images_path names
 * the file it comes from. */
/* p, holding *cap elements of `size` bytes, grown by doubling (never past
 * most elements) to hold at least need; NULL when that fails (the error is
 * set, p is still valid and owned by the caller). */
static void *grow(void *p, size_t *cap, size_t need, size_t most, size_t size,
                  const char *path)
{
    if (need <= *cap)
        return p;
    size_t ncap = *cap > most / 2 ? most : 2 * *cap;
    ncap = ncap < need ? need : ncap;
    void *np = vae_realloc(p, ncap * size);
    if (!np) {
        vae_fail(VAE_ERR_NOMEM, "%s: %s: out of memory for %zu bytes", FN, path, ncap * size);
        return NULL;
    }
    *cap = ncap;
    return np;
}

/* Reads the header and the data; with code set (images) the data is coded
 * row by row into out->data and out->off. */
static int read_body(idx_src *s, idx_file *out, size_t min_dims, size_t max_dims,
                     const char *what, size_t expect_count, const char *images_path, int code)
{
    const char *path = s->path;
    unsigned char head[16];
    size_t got = 0;
    int rc = src_read(s, head, 4, &got);
    if (rc)
        return rc;
    if (got < 4)
        return vae_fail(VAE_ERR_FORMAT, "%s: %s: truncated header (%zu bytes)", FN, path, got);
    if (head[0] != 0 || head[1] != 0 || head[2] != 0x08 || head[3] < min_dims ||
        head[3] > max_dims)
        return vae_fail(VAE_ERR_FORMAT,
                        "%s: %s: wrong magic 0x%02x%02x%02x%02x for an IDX %s file (expected "
                        "0x000008%02zx)",
                        FN, path, head[0], head[1], head[2], head[3], what, max_dims);
    out->ndims = head[3];
    if ((rc = src_read(s, head + 4, 4 * out->ndims, &got)))
        return rc;
    if (got < 4 * out->ndims)
        return vae_fail(VAE_ERR_FORMAT, "%s: %s: truncated header", FN, path);
    size_t per_sample = 1;
    for (size_t i = 0; i < out->ndims; i++) {
        out->dims[i] = be32(head + 4 + 4 * i);
        if (i > 0)
            per_sample *= out->dims[i];
        if (out->dims[i] == 0 || (i > 0 && per_sample > IDX_MAX_DIM))
            return vae_fail(VAE_ERR_FORMAT, "%s: %s: absurd dimension %zu = %zu", FN, path, i,
                            out->dims[i]);
    }
    if (out->dims[0] > IDX_MAX_SAMPLES)
        return vae_fail(VAE_ERR_FORMAT, "%s: %s: absurd sample count %zu", FN, path,
                        out->dims[0]);
    if (expect_count && out->dims[0] != expect_count)
        return vae_fail(VAE_ERR_FORMAT, "%s: %s has %zu labels but %s has %zu images", FN, path,
                        out->dims[0], images_path, expect_count);
    int ovf = 0;
    size_t total = vae_mul_size(out->dims[0], per_sample, &ovf);
    if (ovf)
        return vae_fail(VAE_ERR_FORMAT, "%s: %s: %zu samples of %zu bytes do not fit in memory",
                        FN, path, out->dims[0], per_sample);
    /* The whole content, header included, within the limit before anything
     * of its size is allocated. */
    uint64_t content = 4 + 4 * (uint64_t)out->ndims + (uint64_t)total;
    if (content > s->limit)
        return vae_fail(VAE_ERR_NOMEM,
                        "%s: %s: the header announces %zu samples of %zu bytes (%llu bytes with "
                        "the header), above the limit VAE_LIMIT_FILE_BYTES = %llu",
                        FN, path, out->dims[0], per_sample, (unsigned long long)content,
                        (unsigned long long)s->limit);
    /* Grow by doubling as data arrives, never past what the header promised
     * (for images: the rows' code, never longer than the rows, and the
     * rows' offsets, grown after each row has arrived). */
    const size_t rows = out->dims[0];
    size_t cap = total < FIRST_CAP ? total : FIRST_CAP, have = 0, used = 0;
    size_t off_cap = rows + 1 < 4096 ? rows + 1 : 4096;
    uint8_t *buf = vae_malloc(cap), *row = code ? vae_malloc(per_sample) : NULL, *nb;
    size_t *off = code ? vae_malloc(off_cap * sizeof *off) : NULL, *no;
    if (!buf || (code && (!row || !off))) {
        vae_free(buf);
        vae_free(row);
        vae_free(off);
        return vae_fail(VAE_ERR_NOMEM, "%s: %s: out of memory for %zu bytes", FN, path, cap);
    }
    if (!code) {
        for (;;) {
            if ((rc = src_read(s, buf + have, cap - have, &got)))
                break;
            have += got;
            if (have < cap || cap == total)
                break;
            if (!(nb = grow(buf, &cap, cap + 1, total, 1, path))) {
                rc = VAE_ERR_NOMEM;
                break;
            }
            buf = nb;
        }
    } else {
        off[0] = 0;
        for (size_t r = 0; r < rows; r++) {
            if (!(nb = grow(buf, &cap, used + per_sample, total, 1, path))) {
                rc = VAE_ERR_NOMEM;
                break;
            }
            buf = nb;
            if ((rc = src_read(s, row, per_sample, &got)))
                break;
            have += got;
            if (got < per_sample)
                break;
            if (!(no = grow(off, &off_cap, r + 2, rows + 1, sizeof *off, path))) {
                rc = VAE_ERR_NOMEM;
                break;
            }
            off = no;
            used += vae_row_code(row, per_sample, buf + used);
            off[r + 1] = used;
        }
    }
    vae_free(row);
    if (!rc && have < total)
        rc = vae_fail(VAE_ERR_FORMAT,
                      "%s: %s: truncated: the header announces %zu samples (%zu bytes of "
                      "data), the file has %zu",
                      FN, path, out->dims[0], total, have);
    if (!rc)
        rc = src_finish(s);
    if (rc) {
        vae_free(buf);
        vae_free(off);
        return rc;
    }
    if (code && used < cap && (nb = vae_realloc(buf, used ? used : 1))) /* give back the rest */
        buf = nb;
    out->data = buf;
    out->off = off;
    out->size = code ? used : total;
    return VAE_OK;
}

static int read_idx(idx_file *out, const char *path, size_t min_dims, size_t max_dims,
                    const char *what, size_t expect_count, const char *images_path, int code)
{
    memset(out, 0, sizeof *out);
    idx_src s;
    int rc = src_open(&s, path, what);
    if (!rc)
        rc = read_body(&s, out, min_dims, max_dims, what, expect_count, images_path, code);
    src_close(&s);
    return rc;
}

int vae_dataset_load_idx(vae_dataset **out, const char *images_path, const char *labels_path)
{
    if (out)
        *out = NULL;
    if (!out || !images_path)
        return vae_fail(VAE_ERR_INVALID, "%s: %s is NULL", FN, out ? "images_path" : "out");
    idx_file img, lab = {0};
    int rc = read_idx(&img, images_path, 2, 3, "image", 0, NULL, 1);
    if (rc)
        return rc;
    if (labels_path &&
        (rc = read_idx(&lab, labels_path, 1, 1, "label", img.dims[0], images_path, 0))) {
        vae_free(img.data);
        vae_free(img.off);
        return rc;
    }
    vae_dataset *ds = vae_calloc(1, sizeof *ds);
    int32_t *labels = labels_path ? vae_malloc(lab.dims[0] * sizeof *labels) : NULL;
    if (!ds || (labels_path && !labels)) {
        vae_free(ds);
        vae_free(labels);
        vae_free(img.data);
        vae_free(img.off);
        vae_free(lab.data);
        return vae_fail(VAE_ERR_NOMEM, "%s: out of memory", FN);
    }
    for (size_t i = 0; labels && i < lab.dims[0]; i++)
        labels[i] = lab.data[i];
    vae_free(lab.data);
    ds->count = img.dims[0];
    ds->height = img.ndims == 3 ? img.dims[1] : 1;
    ds->width = img.ndims == 3 ? img.dims[2] : img.dims[1];
    ds->dim = ds->height * ds->width;
    ds->code = img.data;
    ds->off = img.off;
    ds->labels = labels;
    *out = ds;
    return VAE_OK;
}
