/* Pieces shared by the MNIST example programs: error reporting, loading the
 * IDX files, command-line values, a terminal progress bar, worker threads. */
#ifndef VAE_EXAMPLES_MNIST_COMMON_H
#define VAE_EXAMPLES_MNIST_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include <vae/vae.h>

/* Prints "error: WHAT: <vae_strerror> (<code>): <vae_last_error>" to stderr
 * and returns status. */
int report(int status, const char *what);

/* Runs a libvae call; on failure reports it, stores the status in `rc` and
 * jumps to the function's `done:` cleanup label. */
#define CHECK(call)                                                                              \
    do {                                                                                         \
        int check_status_ = (call);                                                              \
        if (check_status_ != VAE_OK) {                                                           \
            rc = report(check_status_, #call);                                                   \
            goto done;                                                                           \
        }                                                                                        \
    } while (0)

/*
 * Loads DIR/train-* (train != 0) or DIR/t10k-* images with their labels. A
 * file named NAME.gz is used when NAME is absent. On failure reports the
 * error, suggests examples/fetch_mnist.sh, and returns the status.
 */
int mnist_load(const char *dir, int train, vae_dataset **out);

/* A dataset holding the first `limit` samples of *ds (replacing it), when
 * 0 < limit < count. */
int dataset_take_first(vae_dataset **ds, size_t limit);

/* mkdir -p; prints the reason and returns -1 on failure. */
int make_dirs(const char *path);

/* dir + "/" + name in a static rotating buffer (valid for 8 calls). */
const char *join_path(const char *dir, const char *name);

/* Picture shape for `dim` values: 28x28 for 784, a square when dim is one,
 * else 1 x dim. */
void picture_shape(size_t dim, int *height, int *width);

double wall_seconds(void);

/*
 * --threads N: with N > 0, sets the BLAS to one thread per call
 * (vae_blas_set_threads(1)) and gives the context N workers
 * (vae_context_set_threads), each running its own single-threaded GEMMs on
 * the blocks of 64 samples of every batch. N == 0 leaves both alone: one
 * worker, with the BLAS's own threads. Reports a failure and returns its
 * status.
 */
int set_workers(vae_context *ctx, size_t n);

/*
 * Command-line values. `flag_value` recognises "--name VALUE" and
 * "--name=VALUE" at argv[*i]: returns 1 and sets *value (advancing *i past
 * a separate value), 0 when argv[*i] is another flag, -1 (after printing a
 * message) when the value is missing.
 */
int flag_value(int argc, char **argv, int *i, const char *name, const char **value);
/* Each parser prints "FLAG: bad value" and returns -1 on failure. */
int parse_size(const char *flag, const char *s, size_t *out);       /* >= 0 integer */
int parse_u64(const char *flag, const char *s, uint64_t *out);
int parse_double(const char *flag, const char *s, double *out);     /* finite */
/* "512,256" -> sizes; at most `cap` of them, each > 0. */
int parse_size_list(const char *flag, const char *s, size_t *out, size_t cap, size_t *n);

/*
 * A one-line progress bar redrawn on stderr at most 10 times a second, only
 * when stderr is a terminal. progress_update has the vae_progress_fn shape,
 * so it can be given to vae_train_options directly (payload = the bar).
 */
typedef struct progress {
    char label[64];
    int enabled;
    double start, last_draw;
} progress;

void progress_begin(progress *p, const char *label);
int progress_update(void *payload, size_t done, size_t total, double running_loss);
/* Erases the bar so the next line prints cleanly. */
void progress_end(progress *p);

#endif
