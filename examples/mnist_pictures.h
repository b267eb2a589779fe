/* The PNG pictures the MNIST examples draw from a model. Each writer runs
 * the model (read-only) on the given context, returns VAE_OK, a libvae
 * status (already reported), or -1 for a file or memory failure (already
 * reported), and records the path it wrote. */
#ifndef VAE_EXAMPLES_MNIST_PICTURES_H
#define VAE_EXAMPLES_MNIST_PICTURES_H

#include <stddef.h>

#include <vae/vae.h>

#include "image.h"

/* Colors shared by the pictures. */
extern const rgb PIC_BACKGROUND, PIC_TEXT, PIC_WHITE, PIC_BLACK;
/* A fixed 10-color palette (matplotlib's tab10), one color per digit. */
extern const rgb PIC_DIGIT_COLORS[10];

/* Writes the canvas to DIR/NAME and remembers the path for
 * pictures_print_written(); -1 on failure. */
int pictures_save(const image *im, const char *dir, const char *name);
/* Records a non-picture output (the model file) in the same list. */
void pictures_note_written(const char *path);
/* Prints every path recorded so far, one per line, under a heading. */
void pictures_print_written(void);

/* out/samples.png: an 8x8 grid of decoded draws from the prior. */
int picture_samples(vae_context *ctx, const vae_model *m, vae_rng *rng, const char *dir);
/* out/reconstructions.png: 8 rows of 8 (test image, reconstruction) pairs. */
int picture_reconstructions(vae_context *ctx, const vae_model *m,
                            const vae_dataset *test, const char *dir);
/* out/interpolation.png: 8 rows, each a test digit, 10 decodings of the
 * straight line between two latent means, and the other test digit. */
int picture_interpolation(vae_context *ctx, const vae_model *m,
                          const vae_dataset *test, const char *dir);
/* out/manifold.png (latent_dim == 2 only): decodings of a 20x20 grid over
 * [-3, 3]^2, z1 left to right, z2 bottom to top. */
int picture_manifold(vae_context *ctx, const vae_model *m, const char *dir);
/* out/latent_scatter.png (latent_dim == 2, labeled data): the latent mean
 * of every test image, colored by digit, 600x600 with frame, ticks, legend. */
int picture_latent_scatter(vae_context *ctx, const vae_model *m,
                           const vae_dataset *test, const char *dir);

/* Draws a title line at (x, y) in PIC_TEXT, 2x font; returns its height. */
int picture_title(image *im, int x, int y, const char *text);

#endif
