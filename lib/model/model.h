/* The model object: architecture and parameters, nothing that a call writes
 * while it runs. Shared by model.c, the passes and inference. */
#ifndef VAE_MODEL_H
#define VAE_MODEL_H

#include <stddef.h>

#include "../nn/layer.h"

struct vae_model {
    size_t input_dim, latent_dim;
    int likelihood;
    float sigma;                /* Gaussian likelihood only */

    /* Before build: the two stacks as added. After build: layers[] is
     * encoder, head, decoder in slab order, and n_enc counts the encoder. */
    vae_layer **layers;
    size_t n_layers, cap_layers;
    size_t n_enc;               /* encoder layers (the head follows them) */
    int built;

    float *params;              /* slab of n_params floats */
    size_t n_params;
    char *names;                /* tensor names, 2 per layer, NUL-separated */
    const char **name_of;       /* [2 * n_layers] into names */
};

static inline const vae_layer *vae_model_head(const vae_model *m)
{
    return m->layers[m->n_enc];
}

/* Common argument check: m not NULL and built. */
int vae_model_check_ready(const vae_model *m, const char *fn);

#endif
