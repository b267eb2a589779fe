#include "image.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int image_create(image *im, int width, int height, rgb background)
{
    im->width = width;
    im->height = height;
    im->pixels = NULL;
    if (width <= 0 || height <= 0)
        return -1;
    im->pixels = malloc((size_t)width * (size_t)height * 3);
    if (!im->pixels)
        return -1;
    image_fill_rect(im, 0, 0, width, height, background);
    return 0;
}

void image_free(image *im)
{
    if (!im)
        return;
    free(im->pixels);
    im->pixels = NULL;
    im->width = im->height = 0;
}

void image_set(image *im, int x, int y, rgb c)
{
    if (x < 0 || y < 0 || x >= im->width || y >= im->height)
        return;
    unsigned char *p = im->pixels + ((size_t)y * (size_t)im->width + (size_t)x) * 3;
    p[0] = c.r;
    p[1] = c.g;
    p[2] = c.b;
}

void image_fill_rect(image *im, int x, int y, int w, int h, rgb c)
{
    int x0 = x < 0 ? 0 : x, y0 = y < 0 ? 0 : y;
    int x1 = x + w > im->width ? im->width : x + w;
    int y1 = y + h > im->height ? im->height : y + h;
    for (int j = y0; j < y1; j++)
        for (int i = x0; i < x1; i++)
            image_set(im, i, j, c);
}

void image_frame(image *im, int x, int y, int w, int h, int thickness, rgb c)
{
    image_fill_rect(im, x, y, w, thickness, c);
    image_fill_rect(im, x, y + h - thickness, w, thickness, c);
    image_fill_rect(im, x, y, thickness, h, c);
    image_fill_rect(im, x + w - thickness, y, thickness, h, c);
}

void image_disc(image *im, double cx, double cy, double radius, rgb c)
{
    int x0 = (int)floor(cx - radius), x1 = (int)ceil(cx + radius);
    int y0 = (int)floor(cy - radius), y1 = (int)ceil(cy + radius);
    for (int j = y0; j <= y1; j++)
        for (int i = x0; i <= x1; i++) {
            /* Pixel (i, j) covers [i, i+1) x [j, j+1); test its centre. */
            double dx = i + 0.5 - cx, dy = j + 0.5 - cy;
            if (dx * dx + dy * dy <= radius * radius)
                image_set(im, i, j, c);
        }
}

void image_put_gray(image *im, int x, int y, const float *pix, int h, int w, int scale)
{
    for (int r = 0; r < h; r++)
        for (int q = 0; q < w; q++) {
            float v = pix[(size_t)r * (size_t)w + (size_t)q];
            if (!(v > 0.0f)) /* also catches NaN */
                v = 0.0f;
            if (v > 1.0f)
                v = 1.0f;
            unsigned char g = (unsigned char)lrintf(v * 255.0f);
            image_fill_rect(im, x + q * scale, y + r * scale, scale, scale, (rgb){g, g, g});
        }
}

int image_grid_width(int cols, int w, int scale, int pad)
{
    return cols * (w * scale + pad) - pad;
}

int image_grid_height(size_t n, int cols, int h, int scale, int pad)
{
    int rows = (int)((n + (size_t)cols - 1) / (size_t)cols);
    return rows * (h * scale + pad) - pad;
}

void image_put_grid(image *im, int x, int y, const float *pix, size_t n, int cols, int h, int w,
                    int scale, int pad)
{
    for (size_t i = 0; i < n; i++) {
        int r = (int)(i / (size_t)cols), q = (int)(i % (size_t)cols);
        image_put_gray(im, x + q * (w * scale + pad), y + r * (h * scale + pad),
                       pix + i * (size_t)h * (size_t)w, h, w, scale);
    }
}

/* 5x7 glyphs, one byte per row, bit 4 is the leftmost column. */
static const unsigned char *glyph(char ch)
{
    static const struct {
        char ch;
        unsigned char rows[7];
    } font[] = {
        {' ', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}},
        {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}},
        {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
        {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}},
        {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
        {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}},
        {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
        {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}},
        {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
        {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}},
        {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
        {'A', {0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11}},
        {'B', {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E}},
        {'C', {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E}},
        {'D', {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C}},
        {'E', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F}},
        {'F', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10}},
        {'G', {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}},
        {'H', {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
        {'I', {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}},
        {'J', {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C}},
        {'K', {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}},
        {'L', {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F}},
        {'M', {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11}},
        {'N', {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11}},
        {'O', {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}},
        {'P', {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10}},
        {'Q', {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D}},
        {'R', {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11}},
        {'S', {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}},
        {'T', {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
        {'U', {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}},
        {'V', {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04}},
        {'W', {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A}},
        {'X', {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11}},
        {'Y', {0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04}},
        {'Z', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F}},
        {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}},
        {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}},
        {',', {0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08}},
        {':', {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}},
        {'=', {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00}},
        {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}},
        {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}},
        {'/', {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00}},
        {'<', {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02}},
        {'>', {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08}},
        {'+', {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00}},
        {'_', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F}},
        {'%', {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}},
        {'|', {0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
    };
    static const unsigned char unknown[7] = {0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F};
    if (ch >= 'a' && ch <= 'z')
        ch = (char)(ch - 'a' + 'A');
    for (size_t i = 0; i < sizeof font / sizeof font[0]; i++)
        if (font[i].ch == ch)
            return font[i].rows;
    return unknown;
}

int image_text_width(const char *text, int scale)
{
    size_t n = strlen(text);
    return n ? (int)n * 6 * scale - scale : 0;
}

int image_text_height(int scale)
{
    return 7 * scale;
}

int image_text(image *im, int x, int y, const char *text, int scale, rgb c)
{
    int x0 = x;
    for (const char *s = text; *s; s++) {
        const unsigned char *rows = glyph(*s);
        for (int r = 0; r < 7; r++)
            for (int q = 0; q < 5; q++)
                if (rows[r] & (0x10 >> q))
                    image_fill_rect(im, x + q * scale, y + r * scale, scale, scale, c);
        x += 6 * scale;
    }
    return x - x0;
}

int image_write_png(const image *im, const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "cannot open %s for writing: %s\n", path, strerror(errno));
        return -1;
    }
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, NULL);
        fclose(f);
        fprintf(stderr, "%s: libpng could not allocate its state\n", path);
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        /* libpng has already printed its own message. */
        png_destroy_write_struct(&png, &info);
        fclose(f);
        fprintf(stderr, "%s: libpng failed to write the image\n", path);
        return -1;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)im->width, (png_uint_32)im->height, 8,
                 PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < im->height; y++)
        png_write_row(png, im->pixels + (size_t)y * (size_t)im->width * 3);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    if (fclose(f) != 0) {
        fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}
