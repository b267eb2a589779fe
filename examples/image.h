/* RGB canvases for the example programs: grids of grayscale images, dots,
 * lines, a 5x7 bitmap font, and PNG output through libpng. Nothing here is
 * part of libvae. */
#ifndef VAE_EXAMPLES_IMAGE_H
#define VAE_EXAMPLES_IMAGE_H

#include <stddef.h>

typedef struct rgb {
    unsigned char r, g, b;
} rgb;

typedef struct image {
    int width, height;
    unsigned char *pixels; /* pixels[height][width][3], row-major RGB */
} image;

/* A width x height canvas filled with `background`; -1 when out of memory. */
int image_create(image *im, int width, int height, rgb background);
void image_free(image *im);

/* Pixels outside the canvas are clipped silently by every drawing call. */
void image_set(image *im, int x, int y, rgb c);
void image_fill_rect(image *im, int x, int y, int w, int h, rgb c);
/* A rectangle outline `thickness` pixels wide, drawn inside (x, y, w, h). */
void image_frame(image *im, int x, int y, int w, int h, int thickness, rgb c);
void image_disc(image *im, double cx, double cy, double radius, rgb c);

/*
 * Draws a grayscale picture pix[h][w] (values in [0, 1], clamped; 0 black,
 * 1 white, as MNIST stores digits) with its top-left corner at (x, y), each
 * pixel enlarged to scale x scale.
 */
void image_put_gray(image *im, int x, int y, const float *pix, int h, int w, int scale);

/*
 * Draws n pictures pix[n][h*w] in a grid of `cols` columns starting at
 * (x, y), `pad` pixels between cells. Returns nothing: the grid's size is
 * image_grid_width()/image_grid_height().
 */
void image_put_grid(image *im, int x, int y, const float *pix, size_t n, int cols, int h, int w,
                    int scale, int pad);
int image_grid_width(int cols, int w, int scale, int pad);
int image_grid_height(size_t n, int cols, int h, int scale, int pad);

/*
 * Text in a 5x7 font (letters are drawn upper case; digits and - . , : = ( )
 * / < > + _ % | are known, other characters draw a box). Each glyph cell is
 * 6x8 pixels times `scale`. Returns the width drawn.
 */
int image_text(image *im, int x, int y, const char *text, int scale, rgb c);
int image_text_width(const char *text, int scale);
int image_text_height(int scale);

/* Writes the canvas as an 8-bit RGB PNG. On failure prints why to stderr
 * and returns -1. */
int image_write_png(const image *im, const char *path);

#endif
