#ifndef VAE_DATASET_H
#define VAE_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "vae/vae.h"

/* Byte images (IDX) are kept coded row by row: row i is
 * code[off[i] .. off[i + 1]), either its dim pixels as they are (exactly dim
 * bytes) or, when shorter, their zero-run code, in which a byte v > 0 is a
 * pixel and a 0 byte followed by r (1 to 255) is r zero pixels. MNIST's
 * 784-byte digits, four fifths background, take about 200 bytes each. */
struct vae_dataset {
    size_t count, dim;       /* samples, values per sample */
    size_t height, width;    /* image geometry; height * width == dim */
    uint8_t *code;           /* byte rows, coded as above, or NULL */
    size_t *off;             /* [count + 1] where each byte row starts in code */
    float *f32;              /* [count][dim] values, or NULL */
    int32_t *labels;         /* [count], or NULL */
};

/* A dataset of count samples of dim values: floats when code_bytes is 0,
 * else byte rows with room for code_bytes bytes of code (off[] is the
 * caller's to fill, from off[0] = 0). */
int vae_dataset_alloc(vae_dataset **out, size_t count, size_t dim, size_t code_bytes,
                      int labels, const char *fn);
/* Copies sample src_index of src into row dst_index of dst (same kind); byte
 * rows must be copied in row order, each after the one before it. */
void vae_dataset_copy_row(vae_dataset *dst, size_t dst_index, const vae_dataset *src,
                          size_t src_index);
/* Codes a row of dim pixels into out (room for dim bytes): the zero-run
 * code when it is shorter than dim, else the pixels. Returns its length. */
size_t vae_row_code(const uint8_t *row, size_t dim, uint8_t *out);

#endif
