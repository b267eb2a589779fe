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
    /* The largest |parameter| as a trainer's last step left it, so the next
     * step's overflow test need not read the slab again. Valid while
     * param_max_known; unknown after vae_model_tensor_set. Once the writable
     * slab has been handed out (vae_model_params), anything may be written
     * there at any time, so every step reads it. */
    float param_max;
    int param_max_known;
    int params_exposed;
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
