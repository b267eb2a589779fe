/* The chunked container of format version 2 (chunk.h, docs/format.md). */
#include <stdio.h>
#include <zlib.h>

#include "../core/core.h"
#include "chunk.h"

const unsigned char vae_file_magic[VAE_FILE_MAGIC_BYTES] = {0x89, 'V', 'A', 'E',
                                                            '\r', '\n', 0x1a, '\n'};
const char vae_chunk_types[VAE_CK_KNOWN][4] = {
    {'A', 'R', 'C', 'H'}, {'P', 'A', 'R', 'M'}, {'O', 'B', 'J', 'V'}, {'O', 'P', 'T', 'M'},
    {'T', 'R', 'N', 'R'}, {'E', 'P', 'O', 'C'}, {'G', 'R', 'A', 'D'}, {'m', 'e', 't', 'a'},
};
static const char DONE[4] = {'D', 'O', 'N', 'E'};
#define FORMAT_VERSION 2u

uint32_t vae_crc32(const unsigned char *buf, size_t len)
{
    uLong crc = crc32(0L, Z_NULL, 0);
    for (size_t off = 0; off < len;) {
        uInt part = len - off > (1u << 30) ? (1u << 30) : (uInt)(len - off);
        crc = crc32(crc, buf + off, part);
        off += part;
    }
    return (uint32_t)crc;
}

void vae_put_f32s(vae_writer *w, const float *x, size_t n)
{
    if (!w->base) {
        w->n += 4 * n;
        return;
    }
    unsigned char *p = w->base + w->n;
    for (size_t i = 0; i < n; i++, p += 4) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        p[0] = (unsigned char)u;
        p[1] = (unsigned char)(u >> 8);
        p[2] = (unsigned char)(u >> 16);
        p[3] = (unsigned char)(u >> 24);
    }
    w->n += 4 * n;
}

void vae_put_header(vae_writer *w)
{
    vae_put_bytes(w, vae_file_magic, VAE_FILE_MAGIC_BYTES);
    vae_put_u32(w, FORMAT_VERSION);
    vae_put_u32(w, VAE_VERSION_NUMBER);
}

void vae_chunk_begin(vae_writer *w, const char type[4])
{
    w->chunk_at = w->n;
    vae_put_bytes(w, type, 4);
    vae_put_u64(w, 0); /* the length, patched by vae_chunk_end */
}

void vae_chunk_end(vae_writer *w)
{
    if (w->base) {
        uint64_t len = w->n - w->chunk_at - 12;
        for (int i = 0; i < 8; i++)
            w->base[w->chunk_at + 4 + (size_t)i] = (unsigned char)(len >> (8 * i));
        uint32_t crc = vae_crc32(w->base + w->chunk_at, w->n - w->chunk_at);
        vae_put_u32(w, crc);
    } else {
        w->n += 4;
    }
}

static uint64_t get_le(vae_reader *r, int bytes)
{
    if (r->err || r->left < (size_t)bytes) {
        r->err = 1;
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)r->p[i] << (8 * i);
    r->p += bytes;
    r->left -= (size_t)bytes;
    return v;
}

uint32_t vae_get_u32(vae_reader *r)
{
    return (uint32_t)get_le(r, 4);
}

uint64_t vae_get_u64(vae_reader *r)
{
    return get_le(r, 8);
}

float vae_get_f32(vae_reader *r)
{
    uint32_t u = vae_get_u32(r);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

double vae_get_f64(vae_reader *r)
{
    uint64_t u = vae_get_u64(r);
    double d;
    memcpy(&d, &u, 8);
    return d;
}

const unsigned char *vae_get_bytes(vae_reader *r, size_t len)
{
    if (r->err || r->left < len) {
        r->err = 1;
        return NULL;
    }
    const unsigned char *p = r->p;
    r->p += len;
    r->left -= len;
    return p;
}

const char *vae_version_text(uint32_t number, char buf[16])
{
    snprintf(buf, 16, "%u.%u.%u", (unsigned)(number / 10000 % 1000), (unsigned)(number / 100 % 100),
             (unsigned)(number % 100));
    return buf;
}

static int is_letter(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

int vae_chunks_parse(vae_chunks *c, const unsigned char *buf, size_t size, const char *what,
                     const char *fn)
{
    memset(c, 0, sizeof *c);
    char wv[16], mine[16];
    vae_reader r = {buf + VAE_FILE_MAGIC_BYTES, size - VAE_FILE_MAGIC_BYTES, 0};
    vae_get_u32(&r); /* the version, checked by the caller */
    c->writer = vae_get_u32(&r);
    if (r.err)
        return vae_fail(VAE_ERR_FORMAT, "%s: %s: truncated file header", fn, what);
    vae_version_text(c->writer, wv);
    vae_version_text(VAE_VERSION_NUMBER, mine);
    for (size_t index = 0;; index++) {
        size_t off = size - r.left;
        if (r.left == 0)
            return vae_fail(VAE_ERR_FORMAT, "%s: %s: truncated: the file ends at byte %zu "
                                            "without its DONE chunk",
                            fn, what, off);
        const unsigned char *type = vae_get_bytes(&r, 4);
        uint64_t len = vae_get_u64(&r);
        if (r.err)
            return vae_fail(VAE_ERR_FORMAT, "%s: %s: truncated chunk header at byte %zu", fn,
                            what, off);
        char name[5] = {0};
        for (int i = 0; i < 4; i++)
            name[i] = is_letter(type[i]) ? (char)type[i] : '?';
        if (name[0] == '?' || name[1] == '?' || name[2] == '?' || name[3] == '?')
            return vae_fail(VAE_ERR_FORMAT, "%s: %s: chunk %zu at byte %zu has an invalid type "
                                            "(bytes %02x %02x %02x %02x; types are 4 letters)",
                            fn, what, index, off, type[0], type[1], type[2], type[3]);
        if (len > r.left || r.left - len < 4)
            return vae_fail(VAE_ERR_FORMAT, "%s: %s: chunk %s at byte %zu announces %llu bytes, "
                                            "the file has %zu after its header (truncated)",
                            fn, what, name, off, (unsigned long long)len,
                            r.left >= 4 ? r.left - 4 : 0);
        const unsigned char *data = vae_get_bytes(&r, (size_t)len);
        uint32_t crc = vae_get_u32(&r);
        if (vae_crc32(type, 12 + (size_t)len) != crc)
            return vae_fail(VAE_ERR_FORMAT, "%s: %s: chunk %s at byte %zu: checksum mismatch: the "
                                            "file is damaged",
                            fn, what, name, off);
        if (memcmp(type, DONE, 4) == 0) {
            if (len != 0)
                return vae_fail(VAE_ERR_FORMAT, "%s: %s: the DONE chunk has %llu bytes of data, "
                                                "it has none",
                                fn, what, (unsigned long long)len);
            if (r.left != 0)
                return vae_fail(VAE_ERR_FORMAT, "%s: %s: %zu bytes after the DONE chunk", fn,
                                what, r.left);
            break;
        }
        int k = 0;
        while (k < VAE_CK_KNOWN && memcmp(type, vae_chunk_types[k], 4) != 0)
            k++;
        if (k == VAE_CK_KNOWN) {
            /* Bit 5 of the first letter, as in PNG: lowercase is ancillary. */
            if (type[0] & 0x20) {
                c->skipped++;
                continue;
            }
            return vae_fail(VAE_ERR_FORMAT, "%s: %s: unknown critical chunk %s: the file was "
                                            "written by libvae %s, with a part that this "
                                            "library (%s) cannot read",
                            fn, what, name, wv, mine);
        }
        if (c->at[k])
            return vae_fail(VAE_ERR_FORMAT, "%s: %s: chunk %s appears twice", fn, what, name);
        c->at[k] = data;
        c->len[k] = (size_t)len;
    }
    if (!c->at[VAE_CK_ARCH] || !c->at[VAE_CK_PARM])
        return vae_fail(VAE_ERR_FORMAT, "%s: %s: no %s chunk (the model's %s)", fn, what,
                        c->at[VAE_CK_ARCH] ? "PARM" : "ARCH",
                        c->at[VAE_CK_ARCH] ? "parameters" : "architecture");
    return VAE_OK;
}
