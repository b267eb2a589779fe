/* Pieces shared by the MNIST example programs: error reporting, loading the
 * IDX files, command-line values, progress output, worker threads, run
 * folders. */
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
 * Progress of a long phase (an epoch, an importance-sampling estimate), on
 * stdout. On a terminal: one bar redrawn in place with \r at most 10 times
 * a second, with the rate in images/s and the time left. Otherwise (a log
 * file, a pipe): a plain line at each further tenth of the phase, at most
 * one per 15 seconds and none in its first 15 seconds, so short phases
 * print nothing. progress_update has the vae_progress_fn shape, so it can
 * be given to vae_train_options directly (payload = the bar).
 */
typedef struct progress {
    char label[64];
    int tty;              /* stdout is a terminal */
    int drawn;            /* something is on the current terminal line */
    int tenth;            /* last tenth reported by a plain line */
    size_t first;         /* images already done when the phase began */
    double start, last_draw, last_line;
} progress;

void progress_begin(progress *p, const char *label);
/* The phase continues one that stopped after `done` images (a resumed
 * epoch): the rate counts only the images of this phase. */
void progress_start_at(progress *p, size_t done);
int progress_update(void *payload, size_t done, size_t total, double running_loss);
/* On a terminal, shows `text` in place of the bar until the next update or
 * progress_end (for a call that reports no progress of its own). */
void progress_status(progress *p, const char *text);
/* Erases the bar so the next line prints cleanly. */
void progress_end(progress *p);

/* "0.84 s", "42 s", "3 min 05 s", "2 h 03 min". */
const char *format_seconds(double seconds, char *buf, size_t cap);
/* "" for 1, "s" otherwise: printf("%zu epoch%s", n, plural(n)). */
const char *plural(uint64_t n);

/* Whether path names a regular file. */
int file_exists(const char *path);
/* The directory part of path ("." when it has none) into buf. */
void path_dirname(const char *path, char *buf, size_t cap);

/*
 * Creates a new folder PARENT/YYYYMMDD-HHMMSS (local time), or with -2, -3,
 * ... appended when that name exists: never an existing folder. PARENT is
 * created when missing. Writes the path to buf; prints why and returns -1
 * on failure.
 */
int make_run_dir(const char *parent, char *buf, size_t cap);
/* The most recently written PARENT/x/model.vae into buf; 0 when found, -1
 * when there is none. */
int newest_run_model(const char *parent, char *buf, size_t cap);

/* Appends arg to the command line in buf (after a space unless buf is
 * empty), quoted for a POSIX shell when needed; truncates at cap. */
void shell_append(char *buf, size_t cap, const char *arg);

/*
 * A fingerprint of a dataset's samples, to recognise the same training data
 * again: "60000 images of 28x28, fnv1a64 0123456789abcdef" (FNV-1a over the
 * bits of every value, in order). Returns a libvae status (reported).
 */
int dataset_fingerprint(const vae_dataset *ds, char *buf, size_t cap);

#endif
