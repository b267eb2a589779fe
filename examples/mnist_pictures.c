#include "mnist_pictures.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mnist_common.h"

const rgb PIC_BACKGROUND = {48, 48, 48};
const rgb PIC_TEXT = {235, 235, 235};
const rgb PIC_WHITE = {255, 255, 255};
const rgb PIC_BLACK = {0, 0, 0};
const rgb PIC_DIGIT_COLORS[10] = {
    {31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},  {148, 103, 189},
    {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207},
};

enum { MARGIN = 10, TITLE_SCALE = 2 };

static char *written[16];
static size_t n_written;

void pictures_note_written(const char *path)
{
    if (n_written < sizeof written / sizeof written[0]) {
        size_t n = strlen(path) + 1;
        char *copy = malloc(n);
        if (copy) {
            memcpy(copy, path, n);
            written[n_written++] = copy;
        }
    }
}

void pictures_print_written(void)
{
    if (n_written == 0)
        return;
    printf("wrote:\n");
    for (size_t i = 0; i < n_written; i++) {
        printf("  %s\n", written[i]);
        free(written[i]);
    }
    n_written = 0;
}

int pictures_save(const image *im, const char *dir, const char *name)
{
    const char *path = join_path(dir, name);
    if (image_write_png(im, path) != 0)
        return -1;
    pictures_note_written(path);
    return 0;
}

int picture_title(image *im, int x, int y, const char *text)
{
    image_text(im, x, y, text, TITLE_SCALE, PIC_TEXT);
    return image_text_height(TITLE_SCALE);
}

static int no_memory(void)
{
    fprintf(stderr, "error: out of memory while drawing\n");
    return -1;
}

/* Canvas size for a title above a block of w x h pixels. */
static int titled_canvas(image *im, int w, int h, const char *title)
{
    int tw = image_text_width(title, TITLE_SCALE);
    int width = 2 * MARGIN + (w > tw ? w : tw);
    int height = 3 * MARGIN + image_text_height(TITLE_SCALE) + h;
    if (image_create(im, width, height, PIC_BACKGROUND) != 0)
        return no_memory();
    picture_title(im, MARGIN, MARGIN, title);
    return 0;
}

static int block_top(void)
{
    return 2 * MARGIN + image_text_height(TITLE_SCALE);
}

int picture_samples(vae_context *ctx, const vae_model *m, vae_rng *rng, const char *dir)
{
    enum { N = 64, COLS = 8, SCALE = 2, PAD = 2 };
    int rc = VAE_OK, ph, pw;
    size_t d = vae_model_input_dim(m);
    picture_shape(d, &ph, &pw);
    image im = {0};
    float *x = malloc(N * d * sizeof *x); /* x[N][d] */
    if (!x)
        return no_memory();
    CHECK(vae_sample(ctx, m, rng, N, x));
    int gw = image_grid_width(COLS, pw, SCALE, PAD), gh = image_grid_height(N, COLS, ph, SCALE, PAD);
    if ((rc = titled_canvas(&im, gw, gh, "samples from the prior")) != 0)
        goto done;
    image_put_grid(&im, MARGIN, block_top(), x, N, COLS, ph, pw, SCALE, PAD);
    rc = pictures_save(&im, dir, "samples.png");
done:
    image_free(&im);
    free(x);
    return rc;
}

int picture_reconstructions(vae_context *ctx, const vae_model *m,
                            const vae_dataset *test, const char *dir)
{
    enum { ROWS = 8, PAIRS = 8, SCALE = 2, INNER = 2, OUTER = 12, ROW_PAD = 4 };
    int rc = VAE_OK, ph, pw;
    size_t d = vae_dataset_dim(test), n = ROWS * PAIRS;
    if (n > vae_dataset_count(test))
        n = vae_dataset_count(test);
    picture_shape(d, &ph, &pw);
    image im = {0};
    float *x = malloc(2 * n * d * sizeof *x); /* x[n][d] then y[n][d] */
    if (!x)
        return no_memory();
    float *y = x + n * d;
    CHECK(vae_dataset_range(test, 0, n, x));
    CHECK(vae_reconstruct(ctx, m, x, n, y));
    int cw = pw * SCALE, ch = ph * SCALE;
    int pair_w = 2 * cw + INNER;
    int gw = PAIRS * pair_w + (PAIRS - 1) * OUTER, gh = ROWS * ch + (ROWS - 1) * ROW_PAD;
    if ((rc = titled_canvas(&im, gw, gh, "test image | reconstruction, 64 pairs")) != 0)
        goto done;
    for (size_t i = 0; i < n; i++) {
        int r = (int)(i / PAIRS), q = (int)(i % PAIRS);
        int px = MARGIN + q * (pair_w + OUTER), py = block_top() + r * (ch + ROW_PAD);
        image_put_gray(&im, px, py, x + i * d, ph, pw, SCALE);
        image_put_gray(&im, px + cw + INNER, py, y + i * d, ph, pw, SCALE);
    }
    rc = pictures_save(&im, dir, "reconstructions.png");
done:
    image_free(&im);
    free(x);
    return rc;
}

int picture_interpolation(vae_context *ctx, const vae_model *m,
                          const vae_dataset *test, const char *dir)
{
    enum { ROWS = 8, STEPS = 10, SCALE = 2, PAD = 2, GAP = 12, ROW_PAD = 4 };
    int rc = VAE_OK, ph, pw;
    size_t d = vae_dataset_dim(test), L = vae_model_latent_dim(m);
    size_t count = vae_dataset_count(test);
    image im = {0};
    float *x = NULL, *mu = NULL, *lv = NULL, *z = NULL, *y = NULL;
    picture_shape(d, &ph, &pw);
    /* Endpoints: test images 2r and the next one after it with another label
     * (any next one when the data has no labels). */
    size_t ends[ROWS][2];
    size_t rows = 0;
    for (size_t r = 0; r < ROWS && 2 * r + 1 < count; r++) {
        size_t a = 2 * r, b = 2 * r + 1;
        if (vae_dataset_has_labels(test)) {
            int32_t la = 0, lb = 0;
            CHECK(vae_dataset_label(test, a, &la));
            for (; b < count; b++) {
                CHECK(vae_dataset_label(test, b, &lb));
                if (lb != la)
                    break;
            }
            if (b == count)
                b = 2 * r + 1;
        }
        ends[r][0] = a;
        ends[r][1] = b;
        rows++;
    }
    if (rows == 0) {
        fprintf(stderr, "error: interpolation needs at least two test images\n");
        return -1;
    }
    x = malloc(2 * d * sizeof *x);      /* x[2][d]: the endpoints */
    mu = malloc(2 * L * sizeof *mu);    /* mu[2][L] */
    lv = malloc(2 * L * sizeof *lv);    /* logvar[2][L] */
    z = malloc(STEPS * L * sizeof *z);  /* z[STEPS][L] */
    y = malloc(STEPS * d * sizeof *y);  /* y[STEPS][d] */
    if (!x || !mu || !lv || !z || !y) {
        rc = no_memory();
        goto done;
    }
    int cw = pw * SCALE, ch = ph * SCALE;
    int strip = image_grid_width(STEPS, pw, SCALE, PAD);
    int gw = cw + GAP + strip + GAP + cw;
    int gh = (int)rows * ch + ((int)rows - 1) * ROW_PAD;
    if ((rc = titled_canvas(&im, gw, gh, "test image a | decoded (1-t) mu(a) + t mu(b) | test image b")) != 0)
        goto done;
    for (size_t r = 0; r < rows; r++) {
        CHECK(vae_dataset_batch(test, ends[r], 2, 0, NULL, x));
        CHECK(vae_encode(ctx, m, x, 2, mu, lv));
        for (size_t s = 0; s < STEPS; s++) {
            float t = (float)s / (float)(STEPS - 1);
            for (size_t j = 0; j < L; j++)
                z[s * L + j] = (1.0f - t) * mu[j] + t * mu[L + j];
        }
        CHECK(vae_decode(ctx, m, z, STEPS, y));
        int py = block_top() + (int)r * (ch + ROW_PAD);
        image_put_gray(&im, MARGIN, py, x, ph, pw, SCALE);
        image_put_grid(&im, MARGIN + cw + GAP, py, y, STEPS, STEPS, ph, pw, SCALE, PAD);
        image_put_gray(&im, MARGIN + cw + GAP + strip + GAP, py, x + d, ph, pw, SCALE);
    }
    rc = pictures_save(&im, dir, "interpolation.png");
done:
    image_free(&im);
    free(x);
    free(mu);
    free(lv);
    free(z);
    free(y);
    return rc;
}

int picture_manifold(vae_context *ctx, const vae_model *m, const char *dir)
{
    enum { N = 20, SCALE = 1 };
    const float lim = 3.0f;
    int rc = VAE_OK, ph, pw;
    size_t d = vae_model_input_dim(m);
    if (vae_model_latent_dim(m) != 2) {
        fprintf(stderr, "error: manifold.png needs a 2-dimensional latent space\n");
        return -1;
    }
    picture_shape(d, &ph, &pw);
    image im = {0};
    float *z = malloc(N * N * 2 * sizeof *z); /* z[N*N][2], row-major over the picture */
    float *y = malloc(N * N * d * sizeof *y); /* y[N*N][d] */
    if (!z || !y) {
        rc = no_memory();
        goto done;
    }
    for (int r = 0; r < N; r++)
        for (int q = 0; q < N; q++) {
            z[(r * N + q) * 2 + 0] = -lim + 2.0f * lim * (float)q / (N - 1);
            z[(r * N + q) * 2 + 1] = lim - 2.0f * lim * (float)r / (N - 1); /* up is +z2 */
        }
    CHECK(vae_decode(ctx, m, z, N * N, y));
    int gw = image_grid_width(N, pw, SCALE, 0), gh = image_grid_height(N * N, N, ph, SCALE, 0);
    if ((rc = titled_canvas(&im, gw, gh, "decoded z: z1 from -3 to 3 ->, z2 from -3 to 3 up")) != 0)
        goto done;
    image_put_grid(&im, MARGIN, block_top(), y, N * N, N, ph, pw, SCALE, 0);
    rc = pictures_save(&im, dir, "manifold.png");
done:
    image_free(&im);
    free(z);
    free(y);
    return rc;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

int picture_latent_scatter(vae_context *ctx, const vae_model *m,
                           const vae_dataset *test, const char *dir)
{
    enum { SIZE = 600, CHUNK = 1000, LEFT = 56, RIGHT = 90, TOP = 40, BOTTOM = 50 };
    const rgb frame = {40, 40, 40}, grid = {225, 225, 225};
    int rc = VAE_OK;
    size_t n = vae_dataset_count(test), d = vae_dataset_dim(test);
    image im = {0};
    if (vae_model_latent_dim(m) != 2 || !vae_dataset_has_labels(test)) {
        fprintf(stderr, "error: latent_scatter.png needs a 2-D latent space and labels\n");
        return -1;
    }
    float *x = malloc(CHUNK * d * sizeof *x); /* x[CHUNK][d] */
    float *lv = malloc(CHUNK * 2 * sizeof *lv); /* logvar[CHUNK][2] */
    float *mu = malloc(n * 2 * sizeof *mu);   /* mu[n][2] */
    float *mag = malloc(n * 2 * sizeof *mag); /* |mu| for the axis range */
    if (!x || !lv || !mu || !mag) {
        rc = no_memory();
        goto done;
    }
    for (size_t first = 0; first < n; first += CHUNK) {
        size_t b = n - first < CHUNK ? n - first : CHUNK;
        CHECK(vae_dataset_range(test, first, b, x));
        CHECK(vae_encode(ctx, m, x, b, mu + first * 2, lv));
    }
    /* Symmetric square range covering 99.9% of the coordinates, so a few
     * far outliers do not squash the picture; those are left out. */
    for (size_t i = 0; i < 2 * n; i++)
        mag[i] = fabsf(mu[i]);
    qsort(mag, 2 * n, sizeof *mag, cmp_float);
    double lim = ceil(mag[(size_t)(0.999 * (double)(2 * n - 1))]);
    if (!(lim >= 1.0))
        lim = 1.0;
    int step = (int)ceil(2.0 * lim / 8.0);
    if (step < 1)
        step = 1;

    if (image_create(&im, SIZE, SIZE, PIC_WHITE) != 0) {
        rc = no_memory();
        goto done;
    }
    const int x0 = LEFT, x1 = SIZE - RIGHT, y0 = TOP, y1 = SIZE - BOTTOM;
    const double sx = (x1 - x0) / (2.0 * lim), sy = (y1 - y0) / (2.0 * lim);
    char label[32];
    image_text(&im, x0, 12, "test-set latent means by digit", 2, frame);
    for (int t = -(int)lim / step * step; t <= (int)lim; t += step) {
        int px = x0 + (int)lround((t + lim) * sx), py = y1 - (int)lround((t + lim) * sy);
        image_fill_rect(&im, px, y0, 1, y1 - y0, grid);
        image_fill_rect(&im, x0, py, x1 - x0, 1, grid);
        image_fill_rect(&im, px, y1, 1, 6, frame); /* tick marks outside the frame */
        image_fill_rect(&im, x0 - 6, py, 6, 1, frame);
        snprintf(label, sizeof label, "%d", t);
        image_text(&im, px - image_text_width(label, 1) / 2, y1 + 10, label, 1, frame);
        image_text(&im, x0 - 10 - image_text_width(label, 1), py - 3, label, 1, frame);
    }
    image_text(&im, (x0 + x1) / 2 - image_text_width("z1", 2) / 2, y1 + 26, "z1", 2, frame);
    image_text(&im, 8, (y0 + y1) / 2 - 7, "z2", 2, frame);
    for (size_t i = 0; i < n; i++) {
        double px = x0 + (mu[2 * i] + lim) * sx, py = y1 - (mu[2 * i + 1] + lim) * sy;
        if (px < x0 || px > x1 || py < y0 || py > y1)
            continue;
        int32_t lab = 0;
        CHECK(vae_dataset_label(test, i, &lab));
        rgb c = lab >= 0 && lab < 10 ? PIC_DIGIT_COLORS[lab] : PIC_BLACK;
        image_disc(&im, px, py, 1.6, c);
    }
    image_frame(&im, x0, y0, x1 - x0 + 1, y1 - y0 + 1, 1, frame);
    /* Legend to the right of the frame. */
    for (int k = 0; k < 10; k++) {
        int ly = y0 + 10 + k * 22;
        image_fill_rect(&im, x1 + 16, ly, 14, 14, PIC_DIGIT_COLORS[k]);
        snprintf(label, sizeof label, "%d", k);
        image_text(&im, x1 + 38, ly, label, 2, frame);
    }
    rc = pictures_save(&im, dir, "latent_scatter.png");
done:
    image_free(&im);
    free(x);
    free(lv);
    free(mu);
    free(mag);
    return rc;
}
