/* Fuzz target for vae_dataset_load_idx (IDX files, plain or gzip).
 *
 * Input: a flags byte, a 2-byte little-endian split point, then the bytes of
 * the images file and, when flag bit 0 is set, of the labels file after the
 * split point. Both go to anonymous in-memory files (memfd) opened by path,
 * as a caller's files would be.
 *
 * Oracles (a failure aborts):
 * - a refusal is VAE_ERR_FORMAT, VAE_ERR_SHAPE or VAE_ERR_NOMEM with a message
 *   naming the function, and *out is NULL;
 * - a loaded dataset has count >= 1 and dim >= 1, its rows convert to floats
 *   in [0,1], its image size (when it has one) multiplies to dim, and every
 *   label is readable.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vae/vae.h"

static void require(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_idx: %s (last error: %s)\n", what, vae_last_error());
        abort();
    }
}

/* Writes bytes into a new memfd; path gets a name that opens it. */
static int to_file(const uint8_t *p, size_t n, char *path, size_t cap)
{
    int fd = memfd_create("idx", 0);
    require(fd >= 0, "memfd_create failed");
    for (size_t off = 0; off < n;) {
        ssize_t w = write(fd, p + off, n - off);
        require(w > 0, "write to memfd failed");
        off += (size_t)w;
    }
    snprintf(path, cap, "/proc/self/fd/%d", fd);
    return fd;
}

static void check(vae_dataset *ds)
{
    size_t count = vae_dataset_count(ds), dim = vae_dataset_dim(ds);
    require(count >= 1 && dim >= 1, "empty dataset loaded");
    size_t rows = count < 4 ? count : 4;
    float *x = malloc(rows * dim * sizeof *x);
    require(x != NULL, "out of memory in the harness");
    require(vae_dataset_range(ds, count - rows, rows, x) == VAE_OK, "range failed");
    for (size_t i = 0; i < rows * dim; i++)
        require(x[i] >= 0.0f && x[i] <= 1.0f, "pixel outside [0,1]");
    free(x);
    size_t h = 0, w = 0;
    if (vae_dataset_image_size(ds, &h, &w) == VAE_OK)
        require(h * w == dim, "image size does not match dim");
    if (vae_dataset_has_labels(ds))
        for (size_t i = 0; i < count; i++) {
            int32_t label = -1;
            require(vae_dataset_label(ds, i, &label) == VAE_OK, "label unreadable");
        }
    else {
        int32_t label = -1;
        require(vae_dataset_label(ds, 0, &label) == VAE_ERR_STATE,
                "an unlabelled dataset gives a label");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    int labels = data[0] & 1;
    size_t split = (size_t)data[1] | (size_t)data[2] << 8;
    data += 3;
    size -= 3;
    if (!labels || split > size)
        split = size;
    char ipath[64], lpath[64];
    int ifd = to_file(data, split, ipath, sizeof ipath);
    int lfd = labels ? to_file(data + split, size - split, lpath, sizeof lpath) : -1;

    vae_dataset *ds = (vae_dataset *)ipath; /* must be overwritten with NULL on failure */
    int rc = vae_dataset_load_idx(&ds, ipath, labels ? lpath : NULL);
    if (rc == VAE_OK) {
        check(ds);
        vae_dataset_free(ds);
    } else {
        require(rc == VAE_ERR_FORMAT || rc == VAE_ERR_SHAPE || rc == VAE_ERR_NOMEM,
                "unexpected status");
        require(ds == NULL, "*out not cleared on failure");
        require(strstr(vae_last_error(), "vae_dataset_load_idx") != NULL,
                "message names no function");
    }
    close(ifd);
    if (lfd >= 0)
        close(lfd);
    return 0;
}
