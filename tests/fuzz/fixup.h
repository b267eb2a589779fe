/* Checksum fix-ups shared by the fuzz targets of the model file and the
 * checkpoint reader (format versions 1 and 2, docs/format.md): they make the
 * lengths and CRC-32s of a mutated file match its bytes, so that mutations
 * reach the fields behind the checksums instead of dying at them. */
#ifndef VAE_FUZZ_FIXUP_H
#define VAE_FUZZ_FIXUP_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <zlib.h>

#define FIX_MAGIC_BYTES 8
#define FIX_V1_HEADER 24 /* magic, version 1, flags, payload length */
#define FIX_V2_HEADER 16 /* magic, version 2, writer's version */
#define FIX_CHUNK 16     /* type, length, CRC-32 */

static const char fix_known[][4] = {{'A', 'R', 'C', 'H'}, {'P', 'A', 'R', 'M'},
                                    {'O', 'B', 'J', 'V'}, {'O', 'P', 'T', 'M'},
                                    {'T', 'R', 'N', 'R'}, {'E', 'P', 'O', 'C'},
                                    {'G', 'R', 'A', 'D'}, {'m', 'e', 't', 'a'},
                                    {'D', 'O', 'N', 'E'}};

static inline uint64_t fix_get_le(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static inline void fix_put_le(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline uint32_t fix_crc(const unsigned char *p, size_t n)
{
    return (uint32_t)crc32(crc32(0L, Z_NULL, 0), p, (uInt)n); /* inputs are far below 4 GB */
}

/* The format version in the header, or 0 when there is no header. */
static inline uint32_t fix_version(const unsigned char *buf, size_t size)
{
    return size >= FIX_MAGIC_BYTES + 4 ? (uint32_t)fix_get_le(buf + FIX_MAGIC_BYTES, 4) : 0;
}

static inline int fix_letter(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static inline int fix_is_known(const unsigned char *p)
{
    for (size_t k = 0; k < sizeof fix_known / sizeof *fix_known; k++)
        if (memcmp(p, fix_known[k], 4) == 0)
            return 1;
    return 0;
}

/* Version 1: the payload length becomes what the bytes hold, the CRC-32
 * that of everything before it. */
static inline void fix_v1(unsigned char *buf, size_t size)
{
    if (size < FIX_V1_HEADER + 4)
        return;
    fix_put_le(buf + 16, size - FIX_V1_HEADER - 4, 8);
    fix_put_le(buf + size - 4, fix_crc(buf, size - 4), 4);
}

/* Version 2: walks the chunks from the header as far as a chunk header
 * (16 bytes with its CRC-32) fits. A chunk keeps its length when its CRC-32
 * is then followed by the end of the file or by 4 letters (a chunk type);
 * otherwise (a byte was inserted into or removed from its data, or the
 * length was mutated) the length reaches the next known chunk type further
 * on, or, without one, the end of the file; an empty DONE keeps its
 * length (so bytes after it stay after it). Its CRC-32 is then recomputed.
 * The walk stops after DONE. */
static inline void fix_v2(unsigned char *buf, size_t size)
{
    size_t pos = FIX_V2_HEADER;
    while (size >= FIX_CHUNK && pos <= size - FIX_CHUNK) {
        const size_t data = pos + 12, room = size - data - 4; /* bytes the data can have */
        uint64_t len = fix_get_le(buf + pos + 4, 8);
        int done = memcmp(buf + pos, "DONE", 4) == 0;
        int fits = len <= room;
        if (fits && len < room && !(done && len == 0)) { /* then a chunk type follows */
            fits = room - len >= 4;
            for (size_t i = 0; fits && i < 4; i++)
                fits = fix_letter(buf[data + (size_t)len + 4 + i]);
        }
        if (!fits) {
            len = room;
            /* The next type starts 4 bytes (this chunk's CRC-32) after the data. */
            for (size_t q = data + 4; q + 4 <= size; q++)
                if (fix_is_known(buf + q)) {
                    len = q - 4 - data;
                    break;
                }
        }
        fix_put_le(buf + pos + 4, len, 8);
        fix_put_le(buf + data + len, fix_crc(buf + pos, 12 + (size_t)len), 4);
        pos = data + (size_t)len + 4;
        if (done)
            break;
    }
}

/* The fix-up the version field asks for; other versions are left alone. */
static inline void fix_checksums(unsigned char *buf, size_t size)
{
    uint32_t v = fix_version(buf, size);
    if (v == 1)
        fix_v1(buf, size);
    else if (v == 2)
        fix_v2(buf, size);
}

/* How many chunks of a complete version-2 file are not ARCH, PARM or DONE
 * (so a file of just those saves back to as many bytes); SIZE_MAX when the
 * chunks do not parse. */
static inline size_t fix_extra_chunks(const unsigned char *buf, size_t size)
{
    size_t pos = FIX_V2_HEADER, extra = 0;
    while (size >= FIX_CHUNK && pos <= size - FIX_CHUNK) {
        uint64_t len = fix_get_le(buf + pos + 4, 8);
        if (len > size - pos - FIX_CHUNK)
            return SIZE_MAX;
        if (memcmp(buf + pos, "DONE", 4) == 0)
            return pos + FIX_CHUNK == size ? extra : SIZE_MAX;
        extra += memcmp(buf + pos, "ARCH", 4) != 0 && memcmp(buf + pos, "PARM", 4) != 0;
        pos += FIX_CHUNK + (size_t)len;
    }
    return SIZE_MAX;
}

#endif
