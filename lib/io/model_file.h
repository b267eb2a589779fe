/* What the checkpoint shares with the model file (model_file.c). */
#ifndef VAE_MODEL_FILE_H
#define VAE_MODEL_FILE_H

#include "../model/model.h"
#include "chunk.h"

/* The ARCH and PARM chunks of a built model. */
void vae_model_chunks_put(vae_writer *w, const vae_model *m);

/* Index of the first NaN or infinity of x[0..n), or n. */
size_t vae_first_not_finite(const float *x, size_t n);

/* Checks that an ARCH chunk describes m's architecture exactly: input and
 * latent sizes, likelihood, every layer's kind, activation and geometry.
 * VAE_ERR_SHAPE naming the first difference, VAE_ERR_FORMAT for a chunk
 * that is not well formed. *sigma gets the stored Gaussian sigma. */
int vae_arch_match(const unsigned char *arch, size_t len, const vae_model *m, float *sigma,
                   const char *what, const char *fn);

#endif
