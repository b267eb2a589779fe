#ifndef VAE_DATASET_H
#define VAE_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "vae/vae.h"

struct vae_dataset {
    size_t count, dim;       /* samples, values per sample */
    size_t height, width;    /* image geometry; height * width == dim */
    uint8_t *u8;             /* [count][dim] pixels, or NULL */
    float *f32;              /* [count][dim] values, or NULL */
    int32_t *labels;         /* [count], or NULL */
};

int vae_dataset_alloc(vae_dataset **out, size_t count, size_t dim, int bytes, int labels,
                      const char *fn);
/* Copies sample src_index of src into row dst_index of dst (same kind). */
void vae_dataset_copy_row(vae_dataset *dst, size_t dst_index, const vae_dataset *src,
                          size_t src_index);

#endif
