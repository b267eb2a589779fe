/* The container of model files and checkpoints (format version 2,
 * docs/format.md): a 16-byte header, then typed, length-prefixed chunks,
 * each with its own CRC-32, ending with a DONE chunk. Little-endian
 * writers and bounds-checked readers of the fields inside chunks. */
#ifndef VAE_CHUNK_H
#define VAE_CHUNK_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define VAE_FILE_MAGIC_BYTES 8
extern const unsigned char vae_file_magic[VAE_FILE_MAGIC_BYTES];
#define VAE_FILE_HEADER_BYTES 16u   /* magic, format version, writer's version */
#define VAE_CHUNK_OVERHEAD 16u      /* type, length, CRC-32 */

/* ---- writing: one pass with p NULL counts the bytes, a second writes ---- */

typedef struct vae_writer {
    unsigned char *base, *p;   /* base NULL: count only */
    size_t n;                  /* bytes so far */
    size_t chunk_at;           /* offset of the open chunk's type */
} vae_writer;

static inline void vae_put_bytes(vae_writer *w, const void *src, size_t len)
{
    if (w->base && len)
        memcpy(w->base + w->n, src, len);
    w->n += len;
}

static inline void vae_put_u32(vae_writer *w, uint32_t v)
{
    unsigned char b[4];
    for (int i = 0; i < 4; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    vae_put_bytes(w, b, 4);
}

static inline void vae_put_u64(vae_writer *w, uint64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    vae_put_bytes(w, b, 8);
}

static inline void vae_put_f32(vae_writer *w, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    vae_put_u32(w, u);
}

static inline void vae_put_f64(vae_writer *w, double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    vae_put_u64(w, u);
}

/* n floats as their little-endian bit patterns. */
void vae_put_f32s(vae_writer *w, const float *x, size_t n);

/* The file header (magic, version 2, this library's version). */
void vae_put_header(vae_writer *w);
/* Opens a chunk of the given 4-letter type; vae_chunk_end patches its
 * length in and appends its CRC-32. */
void vae_chunk_begin(vae_writer *w, const char type[4]);
void vae_chunk_end(vae_writer *w);

/* ---- reading ------------------------------------------------------------ */

/* A short read sets err and yields zeros; callers test err once. */
typedef struct vae_reader {
    const unsigned char *p;
    size_t left;
    int err;
} vae_reader;

uint32_t vae_get_u32(vae_reader *r);
uint64_t vae_get_u64(vae_reader *r);
float vae_get_f32(vae_reader *r);
double vae_get_f64(vae_reader *r);
/* Bytes left in r, as a pointer, after checking len of them are there. */
const unsigned char *vae_get_bytes(vae_reader *r, size_t len);

/* CRC-32 (zlib's) of len bytes, fed to zlib in parts that fit its uInt. */
uint32_t vae_crc32(const unsigned char *buf, size_t len);

/* The chunks of a version-2 file that this library knows, located and
 * CRC-checked by vae_chunks_parse. */
enum {
    VAE_CK_ARCH, /* the model's architecture */
    VAE_CK_PARM, /* its parameters */
    VAE_CK_OBJV, /* checkpoint: the objective's settings */
    VAE_CK_OPTM, /* checkpoint: the optimizer's kind, settings and state */
    VAE_CK_TRNR, /* checkpoint: the trainer's generator and counters */
    VAE_CK_EPOC, /* checkpoint: the open epoch */
    VAE_CK_GRAD, /* checkpoint: gradients not yet applied */
    VAE_CK_META, /* checkpoint: key/value metadata (ancillary) */
    VAE_CK_KNOWN
};
extern const char vae_chunk_types[VAE_CK_KNOWN][4];

typedef struct vae_chunks {
    uint32_t writer;                    /* VAE_VERSION_NUMBER of the writer */
    const unsigned char *at[VAE_CK_KNOWN]; /* data of each known chunk, or NULL */
    size_t len[VAE_CK_KNOWN];
    size_t skipped;                     /* unknown ancillary chunks */
} vae_chunks;

/* Splits a version-2 file into its chunks: checks the header (the caller
 * has checked the magic), each chunk's type, length and CRC-32, refuses an
 * unknown critical chunk (naming it and the writer's version), a known one
 * twice, a missing ARCH or PARM, and anything after DONE. */
int vae_chunks_parse(vae_chunks *c, const unsigned char *buf, size_t size, const char *what,
                     const char *fn);

/* "1.2.3" of a VAE_VERSION_NUMBER, into buf[16]. */
const char *vae_version_text(uint32_t number, char buf[16]);

#endif
