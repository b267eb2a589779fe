/*
 * libvae: variational autoencoders in C, with hand-written backprop over CBLAS.
 *
 * Conventions (see docs/abi.md for the policy behind them):
 *  - Every function returns an int status (VAE_OK == 0, failures negative)
 *    unless it is a getter. On failure, vae_last_error() gives a message
 *    specific to the call, kept per thread until the next failure.
 *  - Constructors write the new object through an `out` parameter; on failure
 *    *out is set to NULL. Every *_free accepts NULL.
 *  - Three kinds of state: a vae_model (architecture and parameters, read-only
 *    during inference, shared by any number of threads), a vae_context
 *    (workspace and workers, one caller at a time) and a vae_trainer
 *    (everything training mutates).
 *  - Buffers are float32, row-major, batch-first: a batch of n vectors of
 *    dimension d is n*d floats, vector i at offset i*d.
 *  - The library never prints, exits or aborts.
 *
 * Released under the MIT license; see LICENSE.
 */

/**
 * @file
 * @brief The whole public API of libvae, in one header that C99 and C++ compilers accept.
 *
 * Include it as `#include <vae/vae.h>`. The API reference is grouped by topic; see the
 * main page for the conventions every function follows. `vae/vae_ffi.h` holds the same
 * declarations without preprocessor directives or attributes, for FFI parsers.
 */

/**
 * @mainpage libvae API reference
 *
 * libvae trains and runs variational autoencoders inside C programs: dense, Conv2D and
 * ConvTranspose2D layers, a Gaussian latent with the reparameterization trick, the negative
 * ELBO with a Bernoulli or Gaussian likelihood, SGD and Adam/AdamW. Every backward pass is
 * written by hand over CBLAS. The whole API is the header `vae/vae.h`, documented by topic:
 *
 * - @ref versions "Versions": header and library versions.
 * - @ref errors "Status codes and errors": status codes and the per-thread error message.
 * - @ref memory "Memory": the allocator every allocation goes through.
 * - @ref rng "Random numbers": the seeded generator all randomness comes from.
 * - @ref layers "Layers": dense and convolution layers, standalone or in a model.
 * - @ref models "Models": architecture, parameters, introspection and named tensors.
 * - @ref contexts "Contexts": workspace and worker threads of the calls that compute.
 * - @ref inference "Inference": encode, decode, sample, reconstruct, log-likelihood,
 *   per-sample ELBO.
 * - @ref objective "Objective": the negative ELBO and its settings.
 * - @ref optimizers "Optimizers": SGD and Adam/AdamW hyperparameters.
 * - @ref training "Trainers": steps, epochs, gradients.
 * - @ref datasets "Datasets": IDX files and float arrays in memory.
 * - @ref model_files "Model files": saving and loading models.
 *
 * The mathematics (objective, every backward pass, optimizers, the log-likelihood estimate)
 * is derived in `docs/math.md`; the model file and IDX formats are specified byte by byte in
 * `docs/format.md`; what may change between releases is in `docs/abi.md`.
 *
 * @section mp_status Status codes and error messages
 *
 * Every function that can fail returns an `int` status: `VAE_OK` (0) on success, a negative
 * `VAE_ERR_*` code on failure. The values are part of the ABI and never change. Each
 * function lists the codes it returns and when. vae_strerror() names a code;
 * vae_last_error() gives the detailed message of the last failure on the calling thread,
 * starting with the name of the function that failed. A successful call leaves that message
 * alone. A failing call leaves every handle it was given as it was (a generator passed to
 * it may have advanced). Getters that cannot fail return their value directly, with a
 * neutral value (0, NULL or -1, as documented) for a NULL handle. The library never prints,
 * never calls `exit` or `abort` and never asserts on user input.
 *
 * @section mp_state Models, contexts and trainers
 *
 * - A vae_model is an architecture and its parameters. Inference takes it as
 *   `const vae_model *` and never writes to it, so any number of threads may run inference
 *   on one model at the same time, each with its own context.
 * - A vae_context is where computation happens: the workspace and the worker threads. One
 *   caller uses it at a time; a call that finds its context in use by another call (from
 *   another thread, or from a callback inside a call on it) fails with VAE_ERR_STATE
 *   instead of waiting or corrupting anything.
 * - A vae_trainer holds what training mutates: the gradient slab, the optimizer's state
 *   (Adam's moments, SGD's momentum), a generator and the step and epoch counters. It
 *   borrows a model, an objective, an optimizer and a context, which must all outlive it.
 *   While a trainer steps a model, no other thread may read that model.
 *
 * @section mp_ownership Ownership and lifetimes
 *
 * - Handles are opaque: `vae_rng`, `vae_layer`, `vae_model`, `vae_context`, `vae_elbo`,
 *   `vae_optimizer`, `vae_trainer` and `vae_dataset` are declared but never defined here,
 *   so their layout can change without breaking the ABI.
 * - A constructor writes the new object through its `out` parameter and sets `*out` to NULL
 *   when it fails. The object belongs to the caller, who releases it with the matching
 *   `*_free` function; every `*_free` accepts NULL.
 * - The exception: vae_model_add_encoder_layer() and vae_model_add_decoder_layer() take
 *   the layer from the caller's pointer and set that pointer to NULL, whether they succeed
 *   (the model owns the layer) or fail (the layer is freed). A layer can therefore never be
 *   freed twice or used after its model is gone.
 * - Pointers returned by getters (vae_model_params(), vae_trainer_grads(), vae_model_layer(),
 *   vae_last_error(), vae_strerror(), ...) are borrowed: never free them. Each getter says
 *   how long its pointer stays valid.
 * - Buffers passed by the caller are used only during the call; the library keeps no pointer
 *   to them. Output buffers must not overlap input buffers.
 *
 * @section mp_buffers Buffers and shapes
 *
 * Buffers are float32, row-major and batch-first: a batch of n vectors of dimension d is
 * n*d contiguous floats, vector i at offset i*d. Shapes are written as C arrays: `x[n][d]`.
 * Convolution layers read each sample as a flat NCHW image `[channels][height][width]`.
 * Sizes are `size_t`; losses are `double`, in nats per sample.
 *
 * @section mp_threads Threads and reproducibility
 *
 * A context splits every batch into blocks of 64 samples (the last one smaller; a batch of
 * n samples has ceil(n/64) blocks of nearly equal size) and runs the blocks on its workers.
 * Noise is drawn per sample in sample order, each block's gradient is computed on its own
 * and the blocks' gradients are summed in block order, so losses, gradients and parameters
 * are bit-identical for the same seed and inputs whatever the number of workers
 * (docs/math.md, "Reproducibility"). vae_version_number(), vae_version_string(),
 * vae_strerror() and the BLAS thread functions may be called from any thread at any
 * time; vae_last_error() reports the calling thread's last failure only. A dataset is
 * never modified after it is created, so several threads may read one dataset at once.
 *
 * @section mp_alloc Allocation
 *
 * Objects allocate when they are created. A context's workspace grows to fit the largest
 * call it has served and never shrinks; vae_context_reserve() and vae_trainer_reserve()
 * size it beforehand, so that afterwards a training step and inference calls up to that
 * batch size allocate nothing. vae_trainer_train_epoch() and vae_evaluate_dataset()
 * allocate their buffers once per call, never per step. Every allocation goes through the
 * allocator of vae_set_allocator(), and process-wide limits (vae_set_limit()) bound what
 * any file or model can make the library allocate. Out of memory is always VAE_ERR_NOMEM
 * and leaves every handle as it was (docs/reliability.md).
 *
 * @section mp_options Structures that may grow
 *
 * The public structures, vae_train_options, vae_epoch_stats and vae_allocator, start with a
 * `size_t size` field holding `sizeof` the structure as the caller compiled it, so that
 * fields can be appended in later versions. A structure from an older header (smaller
 * size) is accepted and its missing fields take their defaults; one from a newer header
 * (larger size) is accepted when every byte past the fields this library knows is zero.
 * Fill options with vae_train_options_init(); set `stats.size = sizeof stats` yourself.
 * Settings of the opaque objects are read and written through typed parameter functions
 * (vae_optimizer_set_param(), vae_elbo_set_param(), vae_model_set_param(),
 * vae_layer_get_param()), so new settings arrive as new enum values, never as new
 * signatures.
 *
 * @section mp_versions Versions
 *
 * `VAE_VERSION_NUMBER` is the version of the header a program was compiled with;
 * vae_version_number() is the version of the library it runs with. Within 1.x the ABI only
 * grows: a signature never changes once released; a changed function gets a new name.
 *
 * @section mp_example Example
 *
 * Train a 784-400-20 VAE on random data in [0, 1] for 100 steps
 * (`examples/minimal.c`):
 * @code
 * #include <stdio.h>
 * #include <vae/vae.h>
 *
 * int main(void)
 * {
 *     enum { N = 64, D = 784, L = 20 };
 *     static float x[N * D];
 *     size_t hidden[] = {400};
 *     vae_model *m = NULL; vae_context *ctx = NULL; vae_elbo *e = NULL;
 *     vae_optimizer *opt = NULL; vae_trainer *t = NULL; vae_rng *rng = NULL;
 *     vae_epoch_stats st = {sizeof st};
 *     int rc = vae_rng_create(&rng, 42);
 *     if (!rc) rc = vae_rng_uniform(rng, x, N * D);
 *     if (!rc) rc = vae_model_create_mlp(&m, D, hidden, 1, L, VAE_ACT_RELU,
 *                                        VAE_LIKELIHOOD_BERNOULLI, 42);
 *     if (!rc) rc = vae_context_create(&ctx);
 *     if (!rc) rc = vae_elbo_create(&e);
 *     if (!rc) rc = vae_optimizer_create(&opt, VAE_OPTIMIZER_ADAM);
 *     if (!rc) rc = vae_trainer_create(&t, m, e, opt, ctx, 42);
 *     for (int step = 0; step < 100 && !rc; step++)
 *         rc = vae_trainer_step(t, x, N, &st);
 *     if (rc) fprintf(stderr, "%s: %s\n", vae_strerror(rc), vae_last_error());
 *     else printf("loss after 100 steps: %.2f nats per sample\n", st.loss);
 *     vae_trainer_free(t); vae_optimizer_free(opt); vae_elbo_free(e);
 *     vae_context_free(ctx); vae_model_free(m); vae_rng_free(rng);
 *     return rc ? 1 : 0;
 * }
 * @endcode
 */
#ifndef VAE_VAE_H
#define VAE_VAE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @brief Marks the functions the shared library exports.
 *
 * Expands to the visibility attribute (GCC, Clang) or `__declspec(dllexport)` /
 * `__declspec(dllimport)` (Windows; define `VAE_STATIC` when linking the static library
 * there). The library is built with hidden visibility, so only functions carrying VAE_API
 * are exported.
 */
#if defined(_WIN32)
#  if defined(VAE_BUILDING_LIBRARY) && !defined(VAE_STATIC)
#    define VAE_API __declspec(dllexport)
#  elif !defined(VAE_STATIC)
#    define VAE_API __declspec(dllimport)
#  else
#    define VAE_API
#  endif
#elif defined(__GNUC__) && __GNUC__ >= 4
#  define VAE_API __attribute__((visibility("default")))
#else
#  define VAE_API
#endif

/* ------------------------------------------------------------------------ */
/* Versions                                                                  */
/* ------------------------------------------------------------------------ */

/**
 * @defgroup versions Versions
 * @brief The version of the header at compile time and of the library at run time.
 *
 * Compare VAE_VERSION_NUMBER (the header the program was compiled with) with
 * vae_version_number() (the library actually loaded) to detect a mismatch. The shared
 * library's soname carries the major version (`libvae.so.1`).
 * @{
 */

/** Major version of this header. */
#define VAE_VERSION_MAJOR 1
/** Minor version of this header. */
#define VAE_VERSION_MINOR 2
/** Patch version of this header. */
#define VAE_VERSION_PATCH 1
/** MAJOR*10000 + MINOR*100 + PATCH, so 1.0.0 is 10000. */
#define VAE_VERSION_NUMBER \
    (VAE_VERSION_MAJOR * 10000 + VAE_VERSION_MINOR * 100 + VAE_VERSION_PATCH)

/**
 * @brief Version of the library actually loaded.
 *
 * Safe to call from any thread.
 * @return The version in the encoding of VAE_VERSION_NUMBER (10000 for 1.0.0).
 */
VAE_API unsigned vae_version_number(void);
/**
 * @brief Version string of the library actually loaded.
 *
 * Safe to call from any thread.
 * @return "MAJOR.MINOR.PATCH", such as "1.0.0", in static storage: never NULL, never freed.
 */
VAE_API const char *vae_version_string(void);

/** @} */

/* ------------------------------------------------------------------------ */
/* Status codes: values are part of the ABI and never renumbered.            */
/* ------------------------------------------------------------------------ */

/**
 * @defgroup errors Status codes and errors
 * @brief The status codes every fallible function returns, and the per-thread message.
 *
 * A failing call returns a negative code and records a message for vae_last_error() on the
 * calling thread. Nothing is printed.
 * @{
 */

/**
 * @brief Status codes.
 *
 * Values are part of the ABI and never renumbered: VAE_OK is 0 and every failure is
 * negative, so both `if (rc)` and `if (rc < 0)` test for failure.
 */
enum {
    VAE_OK = 0,             /**< success */
    VAE_ERR_INVALID = -1,   /**< bad argument: NULL, zero size, out of range */
    VAE_ERR_SHAPE = -2,     /**< sizes do not fit together */
    VAE_ERR_NOMEM = -3,     /**< an allocation failed */
    VAE_ERR_IO = -4,        /**< a file could not be opened, read or written */
    VAE_ERR_FORMAT = -5,    /**< a file or buffer is not in the expected format */
    VAE_ERR_NUMERIC = -6,   /**< a NaN or infinity in input, loss or gradient */
    VAE_ERR_STATE = -7,     /**< call out of order, or a context already in use */
    VAE_ERR_CANCELLED = -8  /**< a callback asked to stop */
};

/**
 * @brief Static English description of a status code.
 *
 * Safe to call from any thread.
 * @param[in] status A status code; any int is accepted.
 * @return A short description in static storage ("invalid argument" for VAE_ERR_INVALID,
 *         "unknown status" for a value that is not a status code); never NULL, never freed.
 */
VAE_API const char *vae_strerror(int status);
/**
 * @brief Detailed message of the last failure on the calling thread.
 *
 * The message starts with the name of the failing function and gives the values involved,
 * such as "vae_model_build: decoder layer 1 expects 400 inputs, the previous layer gives
 * 300". Only failures set it: a successful call leaves the previous message in place. Each
 * thread has its own message, so a failure on one thread never overwrites another's.
 * Messages longer than 511 bytes are truncated.
 * @return The message, or an empty string when nothing has failed on this thread yet;
 *         never NULL. The pointer refers to a per-thread buffer owned by the library: never
 *         free it. Its contents stay until the next failing call on this thread (copy the
 *         text to keep it longer); the pointer itself is valid while the thread lives.
 */
VAE_API const char *vae_last_error(void);

/** @} */

/* ------------------------------------------------------------------------ */
/* Memory                                                                    */
/* ------------------------------------------------------------------------ */

/**
 * @defgroup memory Memory
 * @brief The allocator every allocation of the library goes through.
 *
 * Set once, before the library allocates anything (as SQLite's
 * `sqlite3_config(SQLITE_CONFIG_MALLOC)` and libgit2's allocator setting): a program can
 * count, limit or fail allocations, or place them in its own arena. The BLAS and the C
 * library's threads allocate on their own and are not covered.
 * @{
 */

/**
 * @brief An allocator: three functions and the payload they receive.
 *
 * All three may be called from any of the library's threads at once, so they must be
 * thread-safe. Fill it with `size = sizeof(vae_allocator)`; the size rule of the main
 * page's "Structures that may grow" applies.
 */
typedef struct vae_allocator {
    size_t size;                                       /**< sizeof(vae_allocator) */
    void *(*malloc_fn)(void *payload, size_t n);       /**< as malloc(n); n > 0 */
    void *(*realloc_fn)(void *payload, void *p, size_t n); /**< as realloc(p, n); p, n != 0 */
    void (*free_fn)(void *payload, void *p);           /**< as free(p); p != NULL */
    void *payload;                                     /**< passed to the three */
} vae_allocator;

/**
 * @brief Sets the allocator of every later allocation of the library, process-wide.
 *
 * Allowed only while no block the library allocated is live: before the first object is
 * created, or after every object has been freed; otherwise the blocks of one allocator
 * could reach another's free. An allocation that fails makes the call that needed it
 * return VAE_ERR_NOMEM with every handle as it was. Not thread-safe with other calls.
 * @param[in] a The allocator, copied; NULL restores the C library's malloc, realloc and
 *              free.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID a function is NULL, or a->size is not a size this library
 *                         accepts.
 * @retval VAE_ERR_STATE   blocks allocated by the library are still live.
 */
VAE_API int vae_set_allocator(const vae_allocator *a);
/**
 * @brief Process-wide limits on what input can make the library allocate, for
 *        vae_set_limit(). Values are part of the ABI.
 *
 * A file or a model beyond a limit is refused with VAE_ERR_NOMEM before anything of its
 * size is allocated, so a hostile or damaged input cannot drive the process out of memory.
 */
enum {
    VAE_LIMIT_FILE_BYTES = 1,      /**< bytes a reader takes from one file or buffer, after
                                        decompression; default 2^31 (2 GiB) */
    VAE_LIMIT_MODEL_PARAMS = 2,    /**< parameters of a model built or loaded; default 2^28 */
    VAE_LIMIT_WORKSPACE_BYTES = 3  /**< bytes of one context's workspace; default 2^32 */
};

/**
 * @brief Sets a limit for every later call, process-wide.
 *
 * Not thread-safe with other calls: set limits at start-up.
 * @param[in] limit A VAE_LIMIT_* value.
 * @param[in] value The new limit, at least 1.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID limit is unknown or value is 0.
 */
VAE_API int vae_set_limit(int limit, uint64_t value);
/**
 * @brief The current value of a limit.
 * @param[in] limit A VAE_LIMIT_* value.
 * @return The value, or 0 for an unknown limit.
 */
VAE_API uint64_t vae_get_limit(int limit);
/**
 * @brief Number of blocks the library has allocated and not yet freed.
 *
 * Safe to call from any thread. After every object is freed it is 0 (a context after
 * fork() in the child keeps its parent's worker pool, a few blocks that are never freed).
 * @return The count of live blocks.
 */
VAE_API size_t vae_allocations(void);

/** @} */

/* ------------------------------------------------------------------------ */
/* Random numbers                                                            */
/* ------------------------------------------------------------------------ */

/**
 * @defgroup rng Random numbers
 * @brief The seeded generator that every random draw of the library comes from.
 *
 * Weight initialization, the noise of the reparameterization, shuffling, binarization and
 * sampling all draw from a vae_rng passed explicitly or from a seed (model building, the
 * trainer), so results depend only on seeds and the order of calls.
 * @{
 */

/**
 * @brief A seeded pseudo-random generator (xoshiro256**).
 *
 * Opaque. Created by vae_rng_create(), released by vae_rng_free(). The same seed and the
 * same sequence of calls give the same numbers. Drawing advances its state, so a
 * generator is used by one thread at a time.
 */
typedef struct vae_rng vae_rng;

/**
 * @brief Creates a generator from a seed.
 *
 * Any 64-bit seed, 0 included, gives a valid state (expanded through splitmix64); the same
 * seed gives the same stream.
 * @param[out] out  Receives the new generator, owned by the caller (free it with
 *                  vae_rng_free()); set to NULL on failure.
 * @param[in]  seed The seed.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID out is NULL.
 * @retval VAE_ERR_NOMEM   the allocation failed.
 */
VAE_API int vae_rng_create(vae_rng **out, uint64_t seed);
/**
 * @brief Frees a generator.
 * @param[in] rng The generator to free; NULL is ignored.
 */
VAE_API void vae_rng_free(vae_rng *rng);
/**
 * @brief Draws n independent standard normal numbers.
 *
 * Box-Muller in double precision. Normals are made in pairs; the second of a pair is kept
 * for the next normal draw from the same generator. Does not allocate.
 * @param[in,out] rng The generator; its state advances.
 * @param[out]    out Receives n floats.
 * @param[in]     n   Number of draws; 0 draws nothing.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID rng or out is NULL.
 */
VAE_API int vae_rng_normal(vae_rng *rng, float *out, size_t n);
/**
 * @brief Draws n independent uniform numbers in [0, 1).
 *
 * Each value is a multiple of 2^-24, so it is exact in float and strictly below 1. Does
 * not allocate.
 * @param[in,out] rng The generator; its state advances.
 * @param[out]    out Receives n floats.
 * @param[in]     n   Number of draws; 0 draws nothing.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID rng or out is NULL.
 */
VAE_API int vae_rng_uniform(vae_rng *rng, float *out, size_t n);

/** @} */

/* ------------------------------------------------------------------------ */
/* Layers                                                                    */
/* ------------------------------------------------------------------------ */

/**
 * @defgroup layers Layers
 * @brief Dense and convolution layers with a fused activation and hand-written backward pass.
 *
 * A layer is created standalone, owning its parameters and gradients. It can be run on
 * its own with vae_layer_forward() and vae_layer_backward() (to test it, or to build
 * something other than a VAE), or handed to a model with vae_model_add_encoder_layer() or
 * vae_model_add_decoder_layer(), which take it from the caller. A model's layers are read
 * through vae_model_layer() and the getters here.
 * @{
 */

/**
 * @brief Activations fused into a layer, applied after the bias.
 *
 * Values are part of the ABI and of the model file format.
 */
enum {
    VAE_ACT_IDENTITY = 0,   /**< no activation: y = z */
    VAE_ACT_RELU = 1,       /**< max(z, 0) */
    VAE_ACT_LEAKY_RELU = 2, /**< z for z > 0, slope 0.01 for negative inputs */
    VAE_ACT_TANH = 3,       /**< tanh(z) */
    VAE_ACT_SIGMOID = 4,    /**< 1 / (1 + e^-z) */
    VAE_ACT_SOFTPLUS = 5,   /**< log(1 + e^z) */
    VAE_ACT_ELU = 6         /**< z for z > 0, e^z - 1 otherwise (alpha 1) */
};

/** @brief Layer kinds. Values are part of the ABI and of the model file format. */
enum {
    VAE_LAYER_DENSE = 1,           /**< fully connected */
    VAE_LAYER_CONV2D = 2,          /**< 2-D convolution, NCHW */
    VAE_LAYER_CONV2D_TRANSPOSE = 3 /**< transposed 2-D convolution, NCHW */
};

/**
 * @brief What vae_layer_get_param() can report. Values are part of the ABI.
 *
 * Dense layers have only the first three; the convolution parameters are 0 for them.
 */
enum {
    VAE_LAYER_INPUTS = 1,          /**< input features per sample */
    VAE_LAYER_OUTPUTS = 2,         /**< output features per sample */
    VAE_LAYER_PARAMS = 3,          /**< parameters: weights then biases */
    VAE_LAYER_IN_CHANNELS = 4,     /**< convolution input channels */
    VAE_LAYER_IN_HEIGHT = 5,       /**< convolution input height */
    VAE_LAYER_IN_WIDTH = 6,        /**< convolution input width */
    VAE_LAYER_OUT_CHANNELS = 7,    /**< convolution output channels */
    VAE_LAYER_OUT_HEIGHT = 8,      /**< convolution output height */
    VAE_LAYER_OUT_WIDTH = 9,       /**< convolution output width */
    VAE_LAYER_KERNEL_HEIGHT = 10,  /**< kernel height */
    VAE_LAYER_KERNEL_WIDTH = 11,   /**< kernel width */
    VAE_LAYER_STRIDE = 12,         /**< stride in both directions */
    VAE_LAYER_PADDING = 13,        /**< zero padding on each side */
    VAE_LAYER_OUTPUT_PADDING = 14  /**< extra output rows/columns (transposed only) */
};

/**
 * @brief A layer: dense, Conv2D or ConvTranspose2D, with its activation.
 *
 * Opaque. Created by vae_layer_dense_create(), vae_layer_conv2d_create() or
 * vae_layer_conv2d_transpose_create(). The caller owns a new layer and frees it with
 * vae_layer_free(), unless it hands it to a model.
 */
typedef struct vae_layer vae_layer;

/**
 * @brief Creates a dense layer y = act(x W^T + b).
 *
 * W is stored `W[out][in]` row-major, followed by `b[out]`. A new layer's parameters and
 * gradients are zero: vae_layer_init() draws the parameters (a model draws them itself
 * when it is built).
 * @param[out] out          Receives the new layer, owned by the caller (free it with
 *                          vae_layer_free() unless a model takes it); set to NULL on
 *                          failure.
 * @param[in]  in           Input features per sample, at most 2^24.
 * @param[in]  out_features Output features per sample, at most 2^24; in * out_features
 *                          may not exceed 2^30.
 * @param[in]  activation   One of the VAE_ACT_* values.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID out is NULL, a size is zero or too large, or the activation is
 *                         unknown.
 * @retval VAE_ERR_NOMEM   an allocation failed.
 */
VAE_API int vae_layer_dense_create(vae_layer **out, size_t in, size_t out_features,
                                   int activation);
/**
 * @brief Creates a 2-D convolution over NCHW images, fused with an activation.
 *
 * Each sample is a flat `[in_channels][in_h][in_w]` vector in and a flat
 * `[out_channels][out_h][out_w]` vector out, with out_h = (in_h + 2 padding - kernel_h) /
 * stride + 1 (rounded down; likewise out_w), as PyTorch's Conv2d, so a dense layer can
 * follow directly. Padding is zeros. Parameters:
 * `W[out_channels][in_channels][kernel_h][kernel_w]` then `b[out_channels]`, all zero
 * until vae_layer_init() or a model build.
 * @param[out] out          Receives the new layer, owned by the caller (free it with
 *                          vae_layer_free() unless a model takes it); set to NULL on
 *                          failure.
 * @param[in]  in_channels  Input channels.
 * @param[in]  in_h         Input height.
 * @param[in]  in_w         Input width.
 * @param[in]  out_channels Output channels.
 * @param[in]  kernel_h     Kernel height.
 * @param[in]  kernel_w     Kernel width.
 * @param[in]  stride       Step of the kernel in both directions.
 * @param[in]  padding      Zero rows and columns added on each side; may be 0.
 * @param[in]  activation   One of the VAE_ACT_* values.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID out is NULL; a channel count, image side, kernel side or the
 *                         stride is zero; any size exceeds 2^16; the layer would be too
 *                         large (more than 2^24 inputs or outputs per sample, or more
 *                         than 2^28 weights or unfolded input values); or the activation
 *                         is unknown.
 * @retval VAE_ERR_SHAPE   the kernel does not fit the padded input (the message gives the
 *                         sizes).
 * @retval VAE_ERR_NOMEM   an allocation failed.
 */
VAE_API int vae_layer_conv2d_create(vae_layer **out, size_t in_channels, size_t in_h,
                                    size_t in_w, size_t out_channels, size_t kernel_h,
                                    size_t kernel_w, size_t stride, size_t padding,
                                    int activation);
/**
 * @brief Creates a transposed 2-D convolution (the adjoint of Conv2D with the same geometry).
 *
 * As PyTorch's ConvTranspose2d: out_h = (in_h - 1) stride - 2 padding + kernel_h +
 * output_padding, likewise out_w. Samples are flat NCHW vectors as for
 * vae_layer_conv2d_create(). Parameters:
 * `W[in_channels][out_channels][kernel_h][kernel_w]` then `b[out_channels]`, all zero
 * until vae_layer_init() or a model build.
 * @param[out] out            Receives the new layer, owned by the caller (free it with
 *                            vae_layer_free() unless a model takes it); set to NULL on
 *                            failure.
 * @param[in]  in_channels    Input channels.
 * @param[in]  in_h           Input height.
 * @param[in]  in_w           Input width.
 * @param[in]  out_channels   Output channels.
 * @param[in]  kernel_h       Kernel height.
 * @param[in]  kernel_w       Kernel width.
 * @param[in]  stride         Stride of the convolution this layer is the adjoint of.
 * @param[in]  padding        Padding of that convolution; removed from the output's edges.
 * @param[in]  output_padding Extra rows and columns added to one side of the output; less
 *                            than stride.
 * @param[in]  activation     One of the VAE_ACT_* values.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID out is NULL; a channel count, image side, kernel side or the
 *                         stride is zero; any size, the padding or an output side exceeds
 *                         2^16; the layer would be too large; or the activation is unknown.
 * @retval VAE_ERR_SHAPE   output_padding >= stride, or the output would be empty.
 * @retval VAE_ERR_NOMEM   an allocation failed.
 */
VAE_API int vae_layer_conv2d_transpose_create(vae_layer **out, size_t in_channels, size_t in_h,
                                              size_t in_w, size_t out_channels, size_t kernel_h,
                                              size_t kernel_w, size_t stride, size_t padding,
                                              size_t output_padding, int activation);
/**
 * @brief Frees a layer the caller owns.
 *
 * A layer handed to a model is no longer the caller's: the add functions set the caller's
 * pointer to NULL, and the model frees the layer. A pointer to a model's layer obtained
 * some other way (a copy kept before adding it, or a cast of vae_model_layer()) is
 * ignored here, so that mistake cannot free it twice.
 * @param[in] layer The layer to free; NULL and layers owned by a model are ignored.
 */
VAE_API void vae_layer_free(vae_layer *layer);
/**
 * @brief Draws the layer's weights and biases uniform in +-1/sqrt(fan_in).
 *
 * PyTorch's default initialization. fan_in is `in` for a dense layer,
 * `in_channels * kernel_h * kernel_w` for Conv2D and `out_channels * kernel_h * kernel_w`
 * for ConvTranspose2D. Parameters are drawn in slab order (weights, then biases).
 * vae_model_build() draws every layer of a model again from its own seed.
 * @param[in,out] layer A standalone layer; its parameters are overwritten.
 * @param[in,out] rng   The generator; its state advances.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID layer or rng is NULL.
 * @retval VAE_ERR_STATE   the layer belongs to a model.
 */
VAE_API int vae_layer_init(vae_layer *layer, vae_rng *rng);
/**
 * @brief Forward pass of a standalone layer: y[batch][out] = layer(x[batch][in]).
 *
 * The layer keeps copies of x and y for a following vae_layer_backward(). The layer's
 * cache grows (allocates) when batch exceeds every earlier batch of this layer; it never
 * shrinks.
 * @param[in,out] layer The layer; its cache is overwritten.
 * @param[in]     x     Input, batch * vae_layer_input_size() floats.
 * @param[in]     batch Number of samples, 1 to 2^24.
 * @param[out]    y     Output, batch * vae_layer_output_size() floats.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID layer, x or y is NULL, batch is 0, or batch is too large.
 * @retval VAE_ERR_STATE   the layer belongs to a model.
 * @retval VAE_ERR_NOMEM   growing the cache failed.
 */
VAE_API int vae_layer_forward(vae_layer *layer, const float *x, size_t batch, float *y);
/**
 * @brief Backward pass of the last vae_layer_forward() of a standalone layer.
 *
 * Adds dL/dW and dL/db into the layer's gradients (they accumulate over calls; zero them
 * through vae_layer_grads()) and, when dx is not NULL, writes dx[batch][in]. The batch is
 * that of the last forward pass. Does not allocate.
 * @param[in,out] layer The layer; its gradients are added to.
 * @param[in]     dy    dL/dy, batch * vae_layer_output_size() floats; not modified.
 * @param[out]    dx    Receives dL/dx, batch * vae_layer_input_size() floats; may be NULL
 *                      when the input gradient is not needed.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID layer or dy is NULL.
 * @retval VAE_ERR_STATE   the layer belongs to a model, or no vae_layer_forward() came
 *                         before.
 */
VAE_API int vae_layer_backward(vae_layer *layer, const float *dy, float *dx);
/**
 * @brief A standalone layer's parameters: weights then biases, in the layout of its
 *        constructor. Writable.
 *
 * A model's parameters are reached through vae_model_params() and the named tensors.
 * @param[in]  layer A standalone layer, or NULL.
 * @param[out] count Receives the number of floats (0 when NULL is returned); may be NULL.
 * @return A borrowed pointer, valid until the layer is freed or handed to a model; NULL
 *         when layer is NULL or belongs to a model.
 */
VAE_API float *vae_layer_params(vae_layer *layer, size_t *count);
/**
 * @brief A standalone layer's gradients, in the same layout and count as its parameters.
 *
 * Writable, so gradients can be zeroed or set through the pointer.
 * @param[in]  layer A standalone layer, or NULL.
 * @param[out] count Receives the number of floats (0 when NULL is returned); may be NULL.
 * @return A borrowed pointer with the lifetime of the vae_layer_params() pointer; NULL when
 *         layer is NULL or belongs to a model (a trainer holds a model's gradients).
 */
VAE_API float *vae_layer_grads(vae_layer *layer, size_t *count);
/**
 * @brief Input features per sample (in_channels * in_h * in_w for a convolution).
 * @param[in] layer The layer, or NULL.
 * @return The input size, or 0 when layer is NULL.
 */
VAE_API size_t vae_layer_input_size(const vae_layer *layer);
/**
 * @brief Output features per sample (out_channels * out_h * out_w for a convolution).
 * @param[in] layer The layer, or NULL.
 * @return The output size, or 0 when layer is NULL.
 */
VAE_API size_t vae_layer_output_size(const vae_layer *layer);
/**
 * @brief The layer's kind.
 * @param[in] layer The layer, or NULL.
 * @return A VAE_LAYER_DENSE, VAE_LAYER_CONV2D or VAE_LAYER_CONV2D_TRANSPOSE value; -1 when
 *         layer is NULL.
 */
VAE_API int vae_layer_kind(const vae_layer *layer);
/**
 * @brief The layer's fused activation.
 * @param[in] layer The layer, or NULL.
 * @return A VAE_ACT_* value; -1 when layer is NULL.
 */
VAE_API int vae_layer_activation(const vae_layer *layer);
/**
 * @brief Reads one number of the layer's geometry.
 * @param[in]  layer The layer.
 * @param[in]  param A VAE_LAYER_INPUTS ... VAE_LAYER_OUTPUT_PADDING value.
 * @param[out] value Receives the value (0 for a convolution parameter of a dense layer).
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID layer or value is NULL, or param is unknown.
 */
VAE_API int vae_layer_get_param(const vae_layer *layer, int param, size_t *value);

/** @} */

/* ------------------------------------------------------------------------ */
/* Models                                                                    */
/* ------------------------------------------------------------------------ */

/**
 * @defgroup models Models
 * @brief A VAE: encoder layers, the Gaussian head, decoder layers and their parameters.
 *
 * Create an empty model with vae_model_create(), add encoder and decoder layers, then
 * vae_model_build(); or get a built MLP in one call from vae_model_create_mlp(). A built
 * model holds all its parameters in one contiguous float slab. It holds no gradients, no
 * workspace and no threads: those live in a vae_trainer and a vae_context.
 * @{
 */

/**
 * @brief Decoder likelihoods p(x|z). Values are part of the ABI and of the model file.
 *
 * The continuous Bernoulli (Loaiza-Ganem and Cunningham, 2019) is the Bernoulli's
 * cross-entropy made a normalized density on [0, 1]: for grey-level data its losses and
 * log-likelihoods are true negative log-densities (docs/math.md, 4.3). Model files that hold
 * it load with libvae 1.1 and later only.
 */
enum {
    VAE_LIKELIHOOD_BERNOULLI = 0,           /**< decoder outputs logits; x in [0, 1] */
    VAE_LIKELIHOOD_GAUSSIAN = 1,            /**< decoder outputs means; fixed sigma */
    VAE_LIKELIHOOD_CONTINUOUS_BERNOULLI = 2 /**< decoder outputs logits l; x in [0, 1] with
                                                 density l e^(l x) / (e^l - 1); since 1.1 */
};

/** @brief Settings of a model, for vae_model_set_param() and vae_model_get_param(). */
enum {
    VAE_MODEL_GAUSSIAN_SIGMA = 1 /**< sigma of the Gaussian likelihood, as a float in
                                      [1e-6, 1e6]; default 1. At 1e-6 the loss and its
                                      gradient stay finite floats for |x - mean| up to 1e6;
                                      at 1e6, 1/sigma^2 is 1e-12 (docs/math.md, 4.2) */
};

/**
 * @brief A variational autoencoder: architecture and parameters.
 *
 * Opaque. Created by vae_model_create(), vae_model_create_mlp(), vae_model_load() or
 * vae_model_load_mem(); released by vae_model_free(), which also frees the model's layers.
 * Inference reads a built model through a const pointer and never writes to it, so any
 * number of threads may run inference on one model at once, each with its own context.
 * Changing a model (adding layers, building, setting parameters, a trainer's step) needs
 * it to itself.
 */
typedef struct vae_model vae_model;

/**
 * @brief Creates an empty model: add encoder and decoder layers, then vae_model_build().
 *
 * The Gaussian sigma starts at 1 (see VAE_MODEL_GAUSSIAN_SIGMA).
 * @param[out] out        Receives the new model, owned by the caller (free it with
 *                        vae_model_free()); set to NULL on failure.
 * @param[in]  input_dim  Values per sample, 1 to 2^24.
 * @param[in]  latent_dim Dimension of the latent code z, 1 to 2^20.
 * @param[in]  likelihood VAE_LIKELIHOOD_BERNOULLI, VAE_LIKELIHOOD_GAUSSIAN or
 *                        VAE_LIKELIHOOD_CONTINUOUS_BERNOULLI.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID out is NULL, a dimension is zero or too large, or the likelihood
 *                         is unknown.
 * @retval VAE_ERR_NOMEM   the allocation failed.
 */
VAE_API int vae_model_create(vae_model **out, size_t input_dim, size_t latent_dim,
                             int likelihood);
/**
 * @brief Frees the model and every layer it owns.
 *
 * Every pointer borrowed from the model (vae_model_layer(), vae_model_params(), tensor
 * names) becomes invalid. Free the model's trainers first.
 * @param[in] m The model to free; NULL is ignored.
 */
VAE_API void vae_model_free(vae_model *m);
/**
 * @brief Appends a layer to the encoder, taking it from the caller.
 *
 * Encoder layers run in the order they are added, from the input (input_dim values) to
 * the Gaussian head that vae_model_build() appends. Shapes are checked by the build.
 * `*layer` is set to NULL in every case where layer itself is not NULL: on success the
 * model owns the layer, on failure the layer is freed. So `vae_layer_free()` after this
 * call is always harmless and the layer can never outlive its model.
 * @param[in,out] m     The model, not built yet.
 * @param[in,out] layer Address of the caller's pointer to a standalone layer.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID m, layer or *layer is NULL, or the layer belongs to a model.
 * @retval VAE_ERR_STATE   the model is already built.
 * @retval VAE_ERR_NOMEM   growing the layer list failed.
 */
VAE_API int vae_model_add_encoder_layer(vae_model *m, vae_layer **layer);
/**
 * @brief Appends a layer to the decoder, taking it from the caller.
 *
 * Decoder layers run in the order they are added, from the latent code (latent_dim values)
 * to the output, which must have input_dim values: logits for a Bernoulli likelihood,
 * means for a Gaussian one (so the last layer is usually VAE_ACT_IDENTITY). The decoder
 * needs at least one layer. Ownership as vae_model_add_encoder_layer().
 * @param[in,out] m     The model, not built yet.
 * @param[in,out] layer Address of the caller's pointer to a standalone layer.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID m, layer or *layer is NULL, or the layer belongs to a model.
 * @retval VAE_ERR_STATE   the model is already built.
 * @retval VAE_ERR_NOMEM   growing the layer list failed.
 */
VAE_API int vae_model_add_decoder_layer(vae_model *m, vae_layer **layer);
/**
 * @brief Checks the shapes, appends the Gaussian head, allocates the slab, draws weights.
 *
 * Checks that the encoder chains from input_dim and the decoder from latent_dim back to
 * input_dim (VAE_ERR_SHAPE naming the layer), appends the Gaussian head (dense, identity,
 * from the last encoder width, or input_dim without encoder layers, to 2 * latent_dim
 * outputs: [mu | logvar]), allocates the parameter slab, moves every layer's parameters
 * into it and draws all the weights from `seed`, as vae_layer_init() would (values set on
 * the layers before are discarded). On failure the model is left unbuilt and unchanged:
 * fix it and build again.
 * @param[in,out] m    The model.
 * @param[in]     seed Seed of the weight initialization.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID m is NULL, or the head would be too large.
 * @retval VAE_ERR_SHAPE   layer sizes do not chain, or the decoder has no layers.
 * @retval VAE_ERR_STATE   the model is already built.
 * @retval VAE_ERR_NOMEM   an allocation failed.
 */
VAE_API int vae_model_build(vae_model *m, uint64_t seed);
/**
 * @brief Creates and builds a symmetric MLP VAE in one call.
 *
 * Encoder input_dim -> hidden[0] -> ... -> hidden[n-1] -> head; decoder latent ->
 * hidden[n-1] -> ... -> hidden[0] -> input_dim. Hidden layers use `activation`, the
 * decoder's output layer is identity (logits or means). 784-400-20 is hidden = {400}.
 * With n_hidden 0 the encoder is just the head and the decoder one dense layer.
 * @param[out] out        Receives the built model, owned by the caller (free it with
 *                        vae_model_free()); set to NULL on failure.
 * @param[in]  input_dim  Values per sample.
 * @param[in]  hidden     n_hidden hidden widths, input side first; may be NULL when
 *                        n_hidden is 0. Read during the call only.
 * @param[in]  n_hidden   Number of hidden layers on each side.
 * @param[in]  latent_dim Latent dimension.
 * @param[in]  activation VAE_ACT_* value of the hidden layers.
 * @param[in]  likelihood VAE_LIKELIHOOD_BERNOULLI, VAE_LIKELIHOOD_GAUSSIAN or
 *                        VAE_LIKELIHOOD_CONTINUOUS_BERNOULLI.
 * @param[in]  seed       Seed of the weight initialization.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID out is NULL, hidden is NULL with n_hidden > 0, a width or
 *                         dimension is zero or too large, or the activation or likelihood
 *                         is unknown.
 * @retval VAE_ERR_NOMEM   an allocation failed.
 */
VAE_API int vae_model_create_mlp(vae_model **out, size_t input_dim, const size_t *hidden,
                                 size_t n_hidden, size_t latent_dim, int activation,
                                 int likelihood, uint64_t seed);
/**
 * @brief Changes a setting of the model.
 *
 * Sigma is kept as a float (model files store it so), so vae_model_get_param() returns it
 * rounded to float; the bounds apply to that float, and a model file whose sigma lies
 * outside them does not load (VAE_ERR_FORMAT).
 * @param[in,out] m     The model.
 * @param[in]     param A VAE_MODEL_* setting.
 * @param[in]     value The new value, within the setting's documented bounds.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID m is NULL, param is unknown, or value is out of bounds.
 */
VAE_API int vae_model_set_param(vae_model *m, int param, double value);
/**
 * @brief Reads a setting of the model.
 * @param[in]  m     The model.
 * @param[in]  param A VAE_MODEL_* setting.
 * @param[out] value Receives the value.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID m or value is NULL, or param is unknown.
 */
VAE_API int vae_model_get_param(const vae_model *m, int param, double *value);
/**
 * @brief Values per sample.
 * @param[in] m The model, or NULL.
 * @return input_dim, or 0 when m is NULL.
 */
VAE_API size_t vae_model_input_dim(const vae_model *m);
/**
 * @brief Dimension of the latent code.
 * @param[in] m The model, or NULL.
 * @return latent_dim, or 0 when m is NULL.
 */
VAE_API size_t vae_model_latent_dim(const vae_model *m);
/**
 * @brief The decoder likelihood.
 * @param[in] m The model, or NULL.
 * @return A VAE_LIKELIHOOD_* value, or -1 when m is NULL.
 */
VAE_API int vae_model_likelihood(const vae_model *m);
/**
 * @brief Whether vae_model_build() (or a load) has completed.
 * @param[in] m The model, or NULL.
 * @return 1 for a built model, 0 otherwise.
 */
VAE_API int vae_model_is_built(const vae_model *m);
/**
 * @brief Number of layers: encoder layers, then (once built) the Gaussian head, then
 *        decoder layers, in the order vae_model_layer() indexes them.
 * @param[in] m The model, or NULL.
 * @return The count, or 0 when m is NULL.
 */
VAE_API size_t vae_model_layer_count(const vae_model *m);
/**
 * @brief Number of encoder layers, the head not included.
 *
 * In a built model the head is layer number vae_model_encoder_layer_count() and the decoder
 * follows it.
 * @param[in] m The model, or NULL.
 * @return The count, or 0 when m is NULL.
 */
VAE_API size_t vae_model_encoder_layer_count(const vae_model *m);
/**
 * @brief One layer of the model, for the layer getters.
 * @param[in] m     The model.
 * @param[in] index 0 to vae_model_layer_count() - 1.
 * @return A borrowed pointer, valid while the model lives; NULL when m is NULL or index is
 *         out of range.
 */
VAE_API const vae_layer *vae_model_layer(const vae_model *m, size_t index);
/**
 * @brief The parameter slab: every layer's weights then biases, layers in
 *        vae_model_layer() order, in the layout of their constructors.
 *
 * Writable: parameters may be set through the pointer (no trainer or inference call may
 * run on the model meanwhile).
 * @param[in]  m     A built model, or NULL.
 * @param[out] count Receives the number of floats (0 when NULL is returned); may be NULL.
 * @return A borrowed pointer, valid while the model lives; NULL when m is NULL or not built.
 */
VAE_API float *vae_model_params(vae_model *m, size_t *count);
/**
 * @brief Number of parameters of a built model.
 * @param[in] m The model, or NULL.
 * @return The count, or 0 when m is NULL or not built.
 */
VAE_API size_t vae_model_param_count(const vae_model *m);

/**
 * @brief Number of named tensors: a weight and a bias per layer.
 *
 * Tensors are named as a PyTorch module holding the stacks would name them:
 * `encoder.<i>.weight`, `encoder.<i>.bias` for encoder layer i (from 0), `head.weight`,
 * `head.bias`, then `decoder.<j>.weight`, `decoder.<j>.bias`, in slab order. Shapes are
 * PyTorch's: `[out, in]` for a dense weight, `[out_c, in_c, kh, kw]` for Conv2D,
 * `[in_c, out_c, kh, kw]` for ConvTranspose2D, `[out]` or `[out_c]` for a bias.
 * @param[in] m A built model, or NULL.
 * @return The count, or 0 when m is NULL or not built.
 */
VAE_API size_t vae_model_tensor_count(const vae_model *m);
/**
 * @brief Name of tensor `index`, such as "encoder.0.weight".
 * @param[in] m     A built model.
 * @param[in] index 0 to vae_model_tensor_count() - 1.
 * @return A borrowed string, valid while the model lives; NULL when m is NULL or not
 *         built, or index is out of range.
 */
VAE_API const char *vae_model_tensor_name(const vae_model *m, size_t index);
/**
 * @brief Index of the tensor with the given name.
 * @param[in]  m     A built model.
 * @param[in]  name  A tensor name such as "decoder.1.bias".
 * @param[out] index Receives the index.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID m, name or index is NULL, or no tensor has that name.
 * @retval VAE_ERR_STATE   the model is not built.
 */
VAE_API int vae_model_tensor_find(const vae_model *m, const char *name, size_t *index);
/**
 * @brief Shape and place in the slab of tensor `index`.
 * @param[in]  m      A built model.
 * @param[in]  index  0 to vae_model_tensor_count() - 1.
 * @param[out] shape  Receives up to 4 dimensions, outermost first; may be NULL.
 * @param[out] ndim   Receives the number of dimensions (1, 2 or 4); may be NULL.
 * @param[out] offset Receives the offset of its first float in vae_model_params(); may be
 *                    NULL.
 * @param[out] count  Receives the number of floats; may be NULL.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID m is NULL or index is out of range.
 * @retval VAE_ERR_STATE   the model is not built.
 */
VAE_API int vae_model_tensor_info(const vae_model *m, size_t index, size_t shape[4],
                                  size_t *ndim, size_t *offset, size_t *count);
/**
 * @brief Copies tensor `index` out: `count` floats in its PyTorch layout.
 * @param[in]  m     A built model.
 * @param[in]  index 0 to vae_model_tensor_count() - 1.
 * @param[out] out   Receives the values.
 * @param[in]  count Size of out in floats; must equal the tensor's count.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID m or out is NULL, or index is out of range.
 * @retval VAE_ERR_SHAPE   count differs from the tensor's count.
 * @retval VAE_ERR_STATE   the model is not built.
 */
VAE_API int vae_model_tensor_get(const vae_model *m, size_t index, float *out, size_t count);
/**
 * @brief Copies values into tensor `index`, all finite, in its PyTorch layout.
 * @param[in,out] m     A built model.
 * @param[in]     index 0 to vae_model_tensor_count() - 1.
 * @param[in]     in    The values.
 * @param[in]     count Number of values; must equal the tensor's count.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID m or in is NULL, or index is out of range.
 * @retval VAE_ERR_SHAPE   count differs from the tensor's count.
 * @retval VAE_ERR_NUMERIC a value is NaN or infinite (nothing is copied).
 * @retval VAE_ERR_STATE   the model is not built.
 */
VAE_API int vae_model_tensor_set(vae_model *m, size_t index, const float *in, size_t count);

/** @} */

/* ------------------------------------------------------------------------ */
/* Contexts                                                                  */
/* ------------------------------------------------------------------------ */

/**
 * @defgroup contexts Contexts
 * @brief Execution state: the workspace and the worker threads of the calls that compute.
 *
 * Every call that runs a model takes a vae_context. One context serves one caller at a
 * time; give each thread its own. A context is not tied to a model: it can serve several
 * models in turn, its workspace growing to fit the largest.
 *
 * BLAS threads: the library never changes the BLAS's thread count by itself. A context
 * with one worker (the default) calls the BLAS from the calling thread, with whatever
 * threading the program has set (OpenBLAS uses every core unless told otherwise), so it
 * never adds threads of its own. A context with several workers runs one single-threaded
 * GEMM stream per worker, which on small layers is faster than one multi-threaded stream
 * (docs/performance.md); it needs the BLAS set to one thread, and
 * vae_context_set_threads() refuses more than one worker otherwise. vae_blas_set_threads()
 * sets the BLAS's process-wide thread count when the program decides to.
 *
 * After `fork()`, a context that had workers in the parent starts new workers in the child
 * at its next call (the parent's threads do not exist there); a context that was in use
 * by another thread at the moment of the fork stays unusable in the child (VAE_ERR_STATE).
 * @{
 */

/**
 * @brief Workspace and worker threads.
 *
 * Opaque. Created by vae_context_create(), released by vae_context_free().
 */
typedef struct vae_context vae_context;

/**
 * @brief Creates a context with one worker (the calling thread) and no workspace yet.
 * @param[out] out Receives the new context, owned by the caller (free it with
 *                 vae_context_free()); set to NULL on failure.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID out is NULL.
 * @retval VAE_ERR_NOMEM   the allocation failed.
 */
VAE_API int vae_context_create(vae_context **out);
/**
 * @brief Stops the context's threads and frees it.
 *
 * Trainers using the context must be freed first. Must not be called while another thread
 * is inside a call on the context.
 * @param[in] ctx The context to free; NULL is ignored.
 */
VAE_API void vae_context_free(vae_context *ctx);
/**
 * @brief Sets the number of workers that share each batch.
 *
 * The calling thread is worker 0; n - 1 threads are started here and live until the count
 * changes or the context is freed. Results do not depend on n (see the main page,
 * "Threads and reproducibility"). On failure the context keeps its previous workers and
 * workspace.
 * @param[in,out] ctx The context, not in use by another call.
 * @param[in]     n   Number of workers, 1 to 64.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID ctx is NULL, or n is 0 or above 64.
 * @retval VAE_ERR_STATE   n > 1 while the BLAS runs more than one thread per call (set it
 *                         to one with vae_blas_set_threads(1) or OPENBLAS_NUM_THREADS=1);
 *                         or the context is in use.
 * @retval VAE_ERR_NOMEM   an allocation failed, or the system could not start a thread
 *                         for want of memory or of threads (pthread_create() failing with
 *                         EAGAIN; the message says so).
 */
VAE_API int vae_context_set_threads(vae_context *ctx, size_t n);
/**
 * @brief The number of workers.
 * @param[in] ctx The context, or NULL.
 * @return 1 unless vae_context_set_threads() chose otherwise; 0 when ctx is NULL.
 */
VAE_API size_t vae_context_threads(const vae_context *ctx);
/**
 * @brief Sizes the workspace for training and inference on batches up to max_batch samples
 *        of this model, so that such calls allocate nothing.
 * @param[in,out] ctx       The context, not in use by another call.
 * @param[in]     m         A built model.
 * @param[in]     max_batch The largest batch to prepare for, 1 to 2^20.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID ctx or m is NULL, or max_batch is 0 or too large.
 * @retval VAE_ERR_STATE   the model is not built, or the context is in use.
 * @retval VAE_ERR_NOMEM   the allocation failed, or the workspace would exceed
 *                         VAE_LIMIT_WORKSPACE_BYTES (the message names the limit);
 *                         the previous workspace is kept.
 */
VAE_API int vae_context_reserve(vae_context *ctx, const vae_model *m, size_t max_batch);
/**
 * @brief Threads the BLAS library uses inside one call, process-wide.
 *
 * Safe to call from any thread.
 * @return The BLAS's current setting (OpenBLAS: openblas_get_num_threads(), BLIS:
 *         bli_thread_get_num_threads(), at least 1).
 */
VAE_API size_t vae_blas_threads(void);
/**
 * @brief Sets the number of threads the BLAS library uses inside one call, for the whole
 *        process.
 *
 * This changes a global setting of the BLAS, shared with every other user of it in the
 * process; the library itself never calls it. Call it before starting work, not while
 * another thread is inside a BLAS call.
 * @param[in] n Threads, 1 to 1024.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID n is 0 or above 1024.
 */
VAE_API int vae_blas_set_threads(size_t n);

/** @} */

/* ------------------------------------------------------------------------ */
/* Objective                                                                 */
/* ------------------------------------------------------------------------ */

/**
 * @defgroup objective Objective
 * @brief The negative ELBO: its kind and the KL weight beta.
 *
 * Derivations in docs/math.md, sections 3 to 6.
 * @{
 */

/** @brief Objectives. Values are part of the ABI. */
enum {
    VAE_OBJECTIVE_ELBO = 0,        /**< -ELBO with reparameterized z */
    VAE_OBJECTIVE_AUTOENCODER = 1, /**< z = mu, no KL: a plain autoencoder */
    /** The importance-weighted bound (Burda et al., 2016) of VAE_ELBO_SAMPLES draws:
     *  loss_i = -log (1/k) sum_j exp(-(recon_ij + beta kl_ij)), with kl_ij =
     *  log q(z_ij|x_i) - log p(z_ij) at the draw. Since 1.2. */
    VAE_OBJECTIVE_IWAE = 2
};

/** @brief Settings of an objective, for vae_elbo_set_param(). Values are part of the ABI. */
enum {
    VAE_ELBO_BETA = 1,      /**< weight of the KL term, as a float finite and >= 0; default 1 */
    /** VAE_OBJECTIVE_ELBO (default), VAE_OBJECTIVE_AUTOENCODER or VAE_OBJECTIVE_IWAE */
    VAE_ELBO_OBJECTIVE = 2,
    /** Draws of z per input, 1 to 4096; default 1. With the ELBO the loss of an input is
     *  the mean of its k draws' reconstruction terms plus beta times its KL; with IWAE, k
     *  is the number of importance samples; the autoencoder ignores it. A pass over n
     *  inputs then runs the model on n k rows (at most 2^20). Since 1.2. */
    VAE_ELBO_SAMPLES = 3,
    /** KL warm-up: a trainer's pass before its step s (vae_trainer_steps(), from 0) weighs
     *  the KL term with beta min(1, (s + 1) / W), rounded to float, for W > 0 steps; 0
     *  (default) turns it off. 0 to 2^53, a whole number. Evaluations use beta itself.
     *  Since 1.2. */
    VAE_ELBO_WARMUP = 4,
    /** Free bits (Kingma et al., 2016), lambda in nats per latent dimension, a float
     *  finite, 0 to 10^6; default 0 (off). In a trainer's pass with the ELBO objective the
     *  KL term becomes sum_d max(lambda, KL_d), KL_d the batch mean of dimension d's KL,
     *  so a dimension whose mean is at most lambda gets no KL gradient. Evaluations use
     *  the plain KL; a trainer's pass with VAE_OBJECTIVE_IWAE and free bits fails with
     *  VAE_ERR_INVALID. Since 1.2. */
    VAE_ELBO_FREE_BITS = 5
};

/**
 * @brief Settings of the objective.
 *
 * Opaque. Created by vae_elbo_create(), released by vae_elbo_free(). Holds no model
 * state. Calls only read it, so one objective may serve several models and threads at
 * once, as long as no thread changes it meanwhile.
 */
typedef struct vae_elbo vae_elbo;

/**
 * @brief Creates the negative ELBO objective with beta = 1.
 * @param[out] out Receives the new objective, owned by the caller (free it with
 *                 vae_elbo_free()); set to NULL on failure.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID out is NULL.
 * @retval VAE_ERR_NOMEM   the allocation failed.
 */
VAE_API int vae_elbo_create(vae_elbo **out);
/**
 * @brief Frees an objective.
 * @param[in] e The objective to free; NULL is ignored.
 */
VAE_API void vae_elbo_free(vae_elbo *e);
/**
 * @brief Changes a setting; takes effect at the next call that uses the objective, so beta
 *        may change between steps (KL warm-up).
 *
 * Beta is kept as a float, so vae_elbo_get_param() returns it rounded to float.
 * @param[in,out] e     The objective.
 * @param[in]     param A VAE_ELBO_* setting.
 * @param[in]     value The new value, within the setting's bounds.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID e is NULL, param is unknown, or value is out of bounds.
 */
VAE_API int vae_elbo_set_param(vae_elbo *e, int param, double value);
/**
 * @brief Reads a setting.
 * @param[in]  e     The objective.
 * @param[in]  param A VAE_ELBO_* setting.
 * @param[out] value Receives the value.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID e or value is NULL, or param is unknown.
 */
VAE_API int vae_elbo_get_param(const vae_elbo *e, int param, double *value);

/** @} */

/* ------------------------------------------------------------------------ */
/* Inference                                                                 */
/* ------------------------------------------------------------------------ */

/**
 * @defgroup inference Inference
 * @brief Calls that read a model through a const pointer, with a context for the work.
 *
 * All of them check their inputs first (every value finite, and in [0, 1] for a Bernoulli
 * model), run in blocks of 64 samples over the context's workers, report an output that
 * overflowed as VAE_ERR_NUMERIC, and allocate only to grow the context's workspace.
 * @{
 */

/** What one pass over a batch or a dataset measured; set size = sizeof before the call. */
typedef struct vae_epoch_stats {
    size_t size;            /**< sizeof(vae_epoch_stats), set by the caller */
    double loss;            /**< mean over samples of recon + beta * kl */
    double recon;           /**< mean -log p(x|z), nats per sample */
    double kl;              /**< mean KL(q(z|x) || p(z)), nats per sample */
    double seconds;         /**< wall-clock time of the call */
    size_t samples;         /**< samples seen */
    size_t steps;           /**< optimizer steps taken */
} vae_epoch_stats;

/**
 * @brief Encodes inputs: mu[n][latent] and logvar[n][latent] of q(z|x).
 * @param[in,out] ctx    The context.
 * @param[in]     m      A built model.
 * @param[in]     x      Inputs, n * input_dim floats.
 * @param[in]     n      Number of samples; at least 1.
 * @param[out]    mu     Receives the posterior means, n * latent_dim floats.
 * @param[out]    logvar Receives the posterior log-variances, n * latent_dim floats.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID ctx, m, x, mu or logvar is NULL, n is 0, or an input of a
 *                         (continuous) Bernoulli model lies outside [0, 1].
 * @retval VAE_ERR_STATE   the model is not built, or the context is in use.
 * @retval VAE_ERR_NUMERIC an input is NaN or infinite, or an output overflowed.
 * @retval VAE_ERR_NOMEM   growing the workspace failed, or it would exceed
 *                         VAE_LIMIT_WORKSPACE_BYTES (the message names the limit).
 */
VAE_API int vae_encode(vae_context *ctx, const vae_model *m, const float *x, size_t n,
                       float *mu, float *logvar);
/**
 * @brief Decodes latent codes: out[n][input_dim] holds the mean of p(x|z).
 *
 * That is the probabilities sigmoid(l) of the logits l for a Bernoulli model, the means
 * for a Gaussian one, and for a continuous Bernoulli model its mean
 * E[x] = 1/(1 - e^-l) - 1/l (1/2 at l = 0), in [0, 1] and not sigmoid(l) (docs/math.md,
 * 4.3).
 * @param[in,out] ctx The context.
 * @param[in]     m   A built model.
 * @param[in]     z   Latent codes, n * latent_dim floats.
 * @param[in]     n   Number of codes; at least 1.
 * @param[out]    out Receives n * input_dim floats.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID ctx, m, z or out is NULL, or n is 0.
 * @retval VAE_ERR_STATE   the model is not built, or the context is in use.
 * @retval VAE_ERR_NUMERIC a value of z is NaN or infinite, or an output overflowed.
 * @retval VAE_ERR_NOMEM   growing the workspace failed, or it would exceed
 *                         VAE_LIMIT_WORKSPACE_BYTES (the message names the limit).
 */
VAE_API int vae_decode(vae_context *ctx, const vae_model *m, const float *z, size_t n,
                       float *out);
/**
 * @brief Reconstructs inputs from their posterior mean: out = decode(mu(x)).
 *
 * Deterministic (no noise).
 * @param[in,out] ctx The context.
 * @param[in]     m   A built model.
 * @param[in]     x   Inputs, n * input_dim floats.
 * @param[in]     n   Number of samples; at least 1.
 * @param[out]    out Receives n * input_dim floats.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID ctx, m, x or out is NULL, n is 0, or an input of a
 *                         (continuous) Bernoulli model lies outside [0, 1].
 * @retval VAE_ERR_STATE   the model is not built, or the context is in use.
 * @retval VAE_ERR_NUMERIC an input is NaN or infinite, or an output overflowed.
 * @retval VAE_ERR_NOMEM   growing the workspace failed, or it would exceed
 *                         VAE_LIMIT_WORKSPACE_BYTES (the message names the limit).
 */
VAE_API int vae_reconstruct(vae_context *ctx, const vae_model *m, const float *x, size_t n,
                            float *out);
/**
 * @brief Decodes n draws of z ~ N(0, I) from the prior.
 *
 * Writes the mean of p(x|z) as vae_decode() does (probabilities, not binary samples, for a
 * Bernoulli model). The codes of sample i are drawn in sample order from rng.
 * @param[in,out] ctx The context.
 * @param[in]     m   A built model.
 * @param[in,out] rng The generator the codes are drawn from; its state advances.
 * @param[in]     n   Number of samples; at least 1.
 * @param[out]    out Receives n * input_dim floats.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID ctx, m, rng or out is NULL, or n is 0.
 * @retval VAE_ERR_STATE   the model is not built, or the context is in use.
 * @retval VAE_ERR_NUMERIC an output overflowed.
 * @retval VAE_ERR_NOMEM   an allocation failed, or the workspace would exceed
 *                         VAE_LIMIT_WORKSPACE_BYTES (the message names the limit).
 */
VAE_API int vae_sample(vae_context *ctx, const vae_model *m, vae_rng *rng, size_t n,
                       float *out);
/**
 * @brief Importance-sampled log-likelihood of each input.
 *
 * out[i] = log (1/k) sum_k p(x_i|z_k) p(z_k) / q(z_k|x_i), z_k ~ q(z|x_i), in nats,
 * computed with log-sum-exp in double (docs/math.md, "Log-likelihood"). A lower bound of
 * log p(x_i) in expectation that tightens as k grows; k = 1 gives an estimate of the ELBO.
 * Each sample draws its k codes from its own generator, seeded from rng in sample order,
 * so results do not depend on the context's workers. Allocates k doubles per worker.
 * @param[in,out] ctx The context.
 * @param[in]     m   A built model.
 * @param[in]     x   Inputs, n * input_dim floats.
 * @param[in]     n   Number of samples; at least 1.
 * @param[in]     k   Importance samples per input, 1 to 2^30.
 * @param[in,out] rng Generator of the per-sample seeds; its state advances.
 * @param[out]    out Receives n log-likelihoods.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID ctx, m, x, rng or out is NULL, n or k is 0, k is too large, or a
 *                         (continuous) Bernoulli input lies outside [0, 1].
 * @retval VAE_ERR_STATE   the model is not built, or the context is in use.
 * @retval VAE_ERR_NUMERIC an input or a result is not finite.
 * @retval VAE_ERR_NOMEM   an allocation failed, or the workspace would exceed
 *                         VAE_LIMIT_WORKSPACE_BYTES (the message names the limit).
 */
VAE_API int vae_log_likelihood(vae_context *ctx, const vae_model *m, const float *x, size_t n,
                               size_t k, vae_rng *rng, double *out);
/**
 * @brief The loss of each sample (recon_i + beta kl_i) and the batch means, without
 *        gradients.
 *
 * With per-sample recon_i = -log p(x_i|z_i) (nats, constants included) and
 * kl_i = KL(q(z|x_i) || N(0, I)). z = mu + exp(logvar/2) eps, with eps[n][latent] taken
 * from `eps` when it is not NULL, else drawn from `rng` in sample order. With
 * VAE_OBJECTIVE_AUTOENCODER z = mu, the KL term is 0 and neither eps nor rng is used.
 *
 * With k = VAE_ELBO_SAMPLES draws per sample, eps holds n * k * latent values, draw j of
 * sample i in row i * k + j (drawn from rng in that order). recon_i is then the mean of
 * the k draws' terms; with VAE_OBJECTIVE_IWAE the loss is the importance-weighted bound
 * (see VAE_OBJECTIVE_IWAE), and stats->loss is the mean of the per-sample losses while
 * stats->recon and stats->kl stay the mean reconstruction term and the analytic KL, so
 * stats->recon + beta stats->kl - stats->loss is how much tighter the bound is. Warm-up
 * and free bits apply to training passes only.
 * @param[in,out] ctx        The context.
 * @param[in]     m          A built model.
 * @param[in]     e          The objective.
 * @param[in]     x          Inputs, n * input_dim floats.
 * @param[in]     n          Number of samples, 1 to 2^20.
 * @param[in]     eps        Noise, n * k * latent_dim finite floats (k draws per sample,
 *                           1 unless VAE_ELBO_SAMPLES is set), or NULL.
 * @param[in,out] rng        Generator of the noise when eps is NULL; may be NULL when eps
 *                           is given or with VAE_OBJECTIVE_AUTOENCODER.
 * @param[out]    per_sample Receives n losses; may be NULL.
 * @param[out]    stats      Receives the means (loss, recon, kl, samples, seconds); may be
 *                           NULL; its size field must be set.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID ctx, m, e or x is NULL, n is 0 or n k above 2^20, neither eps nor
 *                         rng gives the noise, stats->size is too small or has unknown
 *                         nonzero bytes, or a (continuous) Bernoulli input lies outside
 *                         [0, 1].
 * @retval VAE_ERR_STATE   the model is not built, or the context is in use.
 * @retval VAE_ERR_NUMERIC an input, eps or the loss is not finite.
 * @retval VAE_ERR_NOMEM   growing the workspace failed, or it would exceed
 *                         VAE_LIMIT_WORKSPACE_BYTES (the message names the limit).
 */
VAE_API int vae_elbo_evaluate(vae_context *ctx, const vae_model *m, const vae_elbo *e,
                              const float *x, size_t n, const float *eps, vae_rng *rng,
                              double *per_sample, vae_epoch_stats *stats);

/** @brief Anomaly scores of vae_anomaly_score(). Values are part of the ABI. Since 1.1. */
enum {
    /** Mean over k draws of the per-sample -ELBO, recon_i + kl_i (beta 1). */
    VAE_ANOMALY_NEG_ELBO = 0,
    /** -log p(x), the importance-sampled estimate of vae_log_likelihood() with k samples. */
    VAE_ANOMALY_NEG_LOG_LIKELIHOOD = 1,
    /** Reconstruction probability (An and Cho, 2015): mean over k draws z ~ q(z|x) of
     *  -log p(x|z). */
    VAE_ANOMALY_RECON_PROB = 2,
    /** Input complexity correction (Serra et al., 2020): -log p(x) as for
     *  VAE_ANOMALY_NEG_LOG_LIKELIHOOD minus the input's compressed length in nats. */
    VAE_ANOMALY_COMPLEXITY = 3
};

/**
 * @brief Anomaly score of each input, in nats: higher means less like the training data.
 *        Since 1.1.
 *
 * The kinds, with draws and seeds defined by the existing calls, so that each one can be
 * reproduced from them:
 * - VAE_ANOMALY_NEG_ELBO: k passes of vae_elbo_evaluate() with beta 1 and the ELBO
 *   objective, noise drawn from rng (each pass draws n * latent_dim values in sample
 *   order); out[i] is the sum of sample i's k losses in pass order, divided by k. With
 *   k = 1 it equals the per_sample output of vae_elbo_evaluate() given the same rng.
 * - VAE_ANOMALY_RECON_PROB: the same k passes with beta 0, so out[i] is the mean of
 *   -log p(x_i|z) over k draws of z = mu + exp(logvar/2) eps.
 * - VAE_ANOMALY_NEG_LOG_LIKELIHOOD: out[i] = -l_i, with l the output of
 *   vae_log_likelihood() with k importance samples and the same rng.
 * - VAE_ANOMALY_COMPLEXITY: out[i] = -l_i - 8 ln(2) c_i, with l as above and c_i the size
 *   in bytes of the zlib stream that compress2() at level 9 (Z_BEST_COMPRESSION) makes of
 *   input i quantized to 8 bits: byte j is (uint8_t)(255 v + 0.5f) computed in float, with
 *   v = x[i][j] clamped to [0, 1]. Inputs that compress well are simple, and a simple input
 *   gets a high likelihood whatever the training data; subtracting the length removes that
 *   part of the score.
 *
 * The results do not depend on the context's workers. On failure out holds no meaningful
 * values. Allocates n doubles when the kind takes several passes, and the buffers of
 * vae_log_likelihood() or of one compression.
 * @param[in,out] ctx  The context.
 * @param[in]     m    A built model.
 * @param[in]     x    Inputs, n * input_dim floats.
 * @param[in]     n    Number of samples, 1 to 2^20.
 * @param[in]     kind A VAE_ANOMALY_* score.
 * @param[in]     k    Draws of z (importance samples for the likelihood kinds) per input,
 *                     1 to 2^30.
 * @param[in,out] rng  Generator of the noise or of the per-sample seeds; its state
 *                     advances.
 * @param[out]    out  Receives n scores.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID ctx, m, x, rng or out is NULL, n is 0 or above 2^20, kind is
 *                         unknown, k is 0 or above 2^30, or a (continuous) Bernoulli input
 *                         lies outside [0, 1].
 * @retval VAE_ERR_STATE   the model is not built, or the context is in use.
 * @retval VAE_ERR_NUMERIC an input or a score is not finite.
 * @retval VAE_ERR_NOMEM   an allocation failed, or the workspace would exceed
 *                         VAE_LIMIT_WORKSPACE_BYTES (the message names the limit).
 */
VAE_API int vae_anomaly_score(vae_context *ctx, const vae_model *m, const float *x, size_t n,
                              int kind, size_t k, vae_rng *rng, double *out);

/** @} */

/* ------------------------------------------------------------------------ */
/* Optimizers                                                                */
/* ------------------------------------------------------------------------ */

/**
 * @defgroup optimizers Optimizers
 * @brief The kind of update and its hyperparameters. Its state lives in a vae_trainer.
 * @{
 */

/** @brief Optimizer kinds. Values are part of the ABI and of checkpoint files. */
enum {
    VAE_OPTIMIZER_SGD = 1, /**< SGD as torch.optim.SGD: momentum, Nesterov, L2 decay */
    VAE_OPTIMIZER_ADAM = 2 /**< Adam as torch.optim.Adam; AdamW with weight decay > 0 */
};

/**
 * @brief Hyperparameters, for vae_optimizer_set_param(). Values are part of the ABI.
 *
 * Each kind accepts the ones listed for it and refuses the others (VAE_ERR_INVALID).
 */
enum {
    VAE_OPT_LR = 1,           /**< learning rate, > 0 and at most 1e6 (an Adam step moves a
                                   parameter by about lr; the bound keeps lr / (1 -
                                   beta1^t) a finite float: docs/math.md, section 10).
                                   Default 1e-3 (Adam), 1e-2 (SGD) */
    VAE_OPT_WEIGHT_DECAY = 2, /**< in [0, 1e6] (so lr * weight_decay stays a finite
                                   float), default 0: decoupled (AdamW) for Adam, L2 added
                                   to the gradient for SGD */
    VAE_OPT_CLIP_NORM = 3,    /**< global gradient norm limit, finite and >= 0; 0 (the
                                   default) does not clip. Both kinds */
    VAE_OPT_BETA1 = 4,        /**< Adam, in [0, 1), default 0.9 */
    VAE_OPT_BETA2 = 5,        /**< Adam, in [0, 1), default 0.999 */
    VAE_OPT_EPS = 6,          /**< Adam, finite and > 0, default 1e-8. The moments are
                                   set to 0 below thresholds proportional to eps, where
                                   that changes no update beyond float rounding; with
                                   eps below about 1e-11 the second moment may keep
                                   subnormal values (slower, still exact): docs/math.md,
                                   section 10 */
    VAE_OPT_MOMENTUM = 7,     /**< SGD, in [0, 1), default 0 */
    VAE_OPT_NESTEROV = 8,     /**< SGD, 0 (default) or 1; 1 needs momentum > 0 and
                                   dampening 0 at the step */
    VAE_OPT_DAMPENING = 9     /**< SGD, in [0, 1), default 0: the momentum buffer adds
                                   (1 - dampening) g, as torch.optim.SGD. Added after the
                                   others without a new function, as docs/abi.md shows */
};

/**
 * @brief An optimizer's kind and hyperparameters.
 *
 * Opaque. Created by vae_optimizer_create(), released by vae_optimizer_free(). It holds no
 * state of any model: a trainer keeps Adam's moments and SGD's momentum. Trainers only
 * read it, at every step, so changing the learning rate between steps schedules it.
 */
typedef struct vae_optimizer vae_optimizer;

/**
 * @brief Creates an optimizer of the given kind with PyTorch's defaults.
 * @param[out] out  Receives the new optimizer, owned by the caller (free it with
 *                  vae_optimizer_free()); set to NULL on failure.
 * @param[in]  kind VAE_OPTIMIZER_SGD or VAE_OPTIMIZER_ADAM.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID out is NULL, or kind is unknown.
 * @retval VAE_ERR_NOMEM   the allocation failed.
 */
VAE_API int vae_optimizer_create(vae_optimizer **out, int kind);
/**
 * @brief Frees an optimizer.
 *
 * Trainers using it must be freed first.
 * @param[in] opt The optimizer to free; NULL is ignored.
 */
VAE_API void vae_optimizer_free(vae_optimizer *opt);
/**
 * @brief The optimizer's kind.
 * @param[in] opt The optimizer, or NULL.
 * @return VAE_OPTIMIZER_SGD or VAE_OPTIMIZER_ADAM; -1 when opt is NULL.
 */
VAE_API int vae_optimizer_kind(const vae_optimizer *opt);
/**
 * @brief Sets a hyperparameter; the next step uses it.
 *
 * The value is kept as a float, the precision of the update it enters, so
 * vae_optimizer_get_param() returns it rounded to float (0.9 reads back as 0.89999998).
 * The bounds apply to that float; a refused value leaves the setting as it was. Within
 * them every number a step derives from the settings is a finite float; a step whose
 * values would still overflow is refused by vae_trainer_apply().
 * @param[in,out] opt   The optimizer.
 * @param[in]     param A VAE_OPT_* value that this kind accepts.
 * @param[in]     value The new value, within the bounds of VAE_OPT_*.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID opt is NULL, param is unknown or not one of this kind's, or value
 *                         is out of bounds.
 */
VAE_API int vae_optimizer_set_param(vae_optimizer *opt, int param, double value);
/**
 * @brief Reads a hyperparameter.
 * @param[in]  opt   The optimizer.
 * @param[in]  param A VAE_OPT_* value that this kind accepts.
 * @param[out] value Receives the value.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID opt or value is NULL, or param is unknown or not one of this
 *                         kind's.
 */
VAE_API int vae_optimizer_get_param(const vae_optimizer *opt, int param, double *value);

/** @} */


/* ------------------------------------------------------------------------ */
/* Datasets                                                                  */
/* ------------------------------------------------------------------------ */

/**
 * @defgroup datasets Datasets
 * @brief Samples in memory, from IDX files (MNIST) or caller floats, with optional labels.
 *
 * A dataset is immutable: subsets and filters make new datasets. Every function taking a
 * `const vae_dataset *` only reads it.
 * @{
 */

/**
 * @brief Samples, their image geometry and optional int32 labels.
 *
 * Opaque. Created by vae_dataset_load_idx(), vae_dataset_from_floats(),
 * vae_dataset_subset() or vae_dataset_filter_label(); released by vae_dataset_free().
 * Never modified after creation, so several threads may read one dataset concurrently.
 */
typedef struct vae_dataset vae_dataset;

/**
 * @brief Loads an IDX image file and, optionally, the matching IDX label file.
 *
 * The image file has magic 0x00000803 (uint8 pixels, count x height x width, as MNIST) or
 * 0x00000802 (count x dim, read as height 1); the label file has magic 0x00000801. Either
 * file may be gzip-compressed (detected from its first bytes 1f 8b, not its name): then it
 * must be exactly one complete gzip member, its CRC-32 and length verified. Pixels stay
 * uint8 in memory, each image coded as it is read with its runs of zero pixels shortened
 * (an MNIST digit takes about 200 bytes instead of 784; an image that would not shrink
 * is kept as it is), and become floats in [0, 1] (p / 255) per batch; labels (0 to 255)
 * become int32. Nothing is allocated from an unchecked header: a header is checked against
 * VAE_LIMIT_FILE_BYTES before any data is read, and the buffer grows as data arrives. zlib
 * allocates through vae_set_allocator()'s allocator. The format is specified in
 * docs/format.md.
 * @param[out] out         Receives the new dataset, owned by the caller (free it with
 *                         vae_dataset_free()); set to NULL on failure.
 * @param[in]  images_path Path of the image file.
 * @param[in]  labels_path Path of the label file, or NULL for none.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID out or images_path is NULL.
 * @retval VAE_ERR_IO      a file cannot be opened or read, or is not a regular file (a
 *                         FIFO, device, socket or directory is refused at once, without
 *                         blocking; since 1.1).
 * @retval VAE_ERR_FORMAT  (the message names the file and the problem) a wrong magic, a
 *                         truncated file or data past the announced end, corrupt gzip data,
 *                         a gzip member cut anywhere (its trailer included) or followed by
 *                         any byte (a second member, garbage), a zero or absurd dimension
 *                         (more than 2^31 samples or 2^24 values per sample), or label and
 *                         image counts that differ.
 * @retval VAE_ERR_NOMEM   an allocation failed (in zlib, or open failing with ENOMEM), or
 *                         a file or its content (header and data, after decompression, as
 *                         its header announces it) is larger than VAE_LIMIT_FILE_BYTES; the
 *                         message names the limit.
 */
VAE_API int vae_dataset_load_idx(vae_dataset **out, const char *images_path,
                                 const char *labels_path);
/**
 * @brief Creates a dataset holding a copy of caller floats and, optionally, labels.
 *
 * The caller's buffers are copied and not kept. The image size is 1 x dim. Values are used
 * as given (Bernoulli models need them in [0, 1]).
 * @param[out] out    Receives the new dataset, owned by the caller (free it with
 *                    vae_dataset_free()); set to NULL on failure.
 * @param[in]  data   count * dim finite floats, sample i at offset i * dim.
 * @param[in]  count  Number of samples; at least 1.
 * @param[in]  dim    Values per sample; at least 1.
 * @param[in]  labels count labels, or NULL for none.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID out or data is NULL, count or dim is 0, or count * dim is too
 *                         large.
 * @retval VAE_ERR_NUMERIC a value of data is NaN or infinite.
 * @retval VAE_ERR_NOMEM   an allocation failed.
 */
VAE_API int vae_dataset_from_floats(vae_dataset **out, const float *data, size_t count,
                                    size_t dim, const int32_t *labels);
/**
 * @brief Frees a dataset.
 * @param[in] ds The dataset to free; NULL is ignored.
 */
VAE_API void vae_dataset_free(vae_dataset *ds);
/**
 * @brief Number of samples.
 * @param[in] ds The dataset, or NULL.
 * @return The sample count, or 0 when ds is NULL.
 */
VAE_API size_t vae_dataset_count(const vae_dataset *ds);
/**
 * @brief Values per sample (784 for MNIST).
 * @param[in] ds The dataset, or NULL.
 * @return The dimension, or 0 when ds is NULL.
 */
VAE_API size_t vae_dataset_dim(const vae_dataset *ds);
/**
 * @brief Image height and width of the samples (height * width == dim).
 *
 * 28 x 28 for MNIST; 1 x dim for flat data (vae_dataset_from_floats(), 2-D IDX files).
 * @param[in]  ds     The dataset.
 * @param[out] height Receives the height.
 * @param[out] width  Receives the width.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID ds, height or width is NULL.
 */
VAE_API int vae_dataset_image_size(const vae_dataset *ds, size_t *height, size_t *width);
/**
 * @brief Whether the dataset has labels.
 * @param[in] ds The dataset, or NULL.
 * @return 1 when the dataset has labels, 0 otherwise (and when ds is NULL).
 */
VAE_API int vae_dataset_has_labels(const vae_dataset *ds);
/**
 * @brief The label of one sample.
 * @param[in]  ds    The dataset.
 * @param[in]  index Sample index, below vae_dataset_count().
 * @param[out] label Receives the label.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID ds or label is NULL, or index is past the last sample.
 * @retval VAE_ERR_STATE   the dataset has no labels.
 */
VAE_API int vae_dataset_label(const vae_dataset *ds, size_t index, int32_t *label);
/**
 * @brief A new dataset with the samples indices[0..n-1] of ds (repeats allowed).
 *
 * Copies the samples with their labels and image size; the new dataset does not depend on
 * ds.
 * @param[out] out     Receives the new dataset, owned by the caller (free it with
 *                     vae_dataset_free()); set to NULL on failure.
 * @param[in]  ds      The source dataset.
 * @param[in]  indices n sample indices into ds.
 * @param[in]  n       Number of samples; at least 1.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID out, ds or indices is NULL, n is 0, or an index is past the last
 *                         sample.
 * @retval VAE_ERR_NOMEM   an allocation failed.
 */
VAE_API int vae_dataset_subset(vae_dataset **out, const vae_dataset *ds, const size_t *indices,
                               size_t n);
/**
 * @brief A new dataset with the samples whose label is, or is not, `label`.
 *
 * Samples keep their order, labels and image size; the new dataset does not depend on ds.
 * @param[out] out   Receives the new dataset, owned by the caller (free it with
 *                   vae_dataset_free()); set to NULL on failure.
 * @param[in]  ds    The source dataset; it must have labels.
 * @param[in]  label The label to select on.
 * @param[in]  keep  Nonzero keeps the samples with this label, 0 keeps all the others.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID out or ds is NULL, or no sample would be left.
 * @retval VAE_ERR_STATE   the dataset has no labels.
 * @retval VAE_ERR_NOMEM   an allocation failed.
 */
VAE_API int vae_dataset_filter_label(vae_dataset **out, const vae_dataset *ds, int32_t label,
                                     int keep);
/**
 * @brief Copies the samples indices[0..n-1] as floats: out[n][dim].
 *
 * With binarize != 0 each value p becomes 1 with probability p, else 0, drawn from rng
 * (dynamic binarization; values below 0 always give 0, above 1 always 1). Does not
 * allocate.
 * @param[in]     ds       The dataset.
 * @param[in]     indices  n sample indices.
 * @param[in]     n        Number of samples; at least 1.
 * @param[in]     binarize Nonzero to binarize.
 * @param[in,out] rng      Generator for the binarization (its state advances); may be NULL
 *                         when binarize is 0.
 * @param[out]    out      Receives n * vae_dataset_dim() floats.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID ds, indices or out is NULL, n is 0, binarize is set with rng
 *                         NULL, or an index is past the last sample.
 */
VAE_API int vae_dataset_batch(const vae_dataset *ds, const size_t *indices, size_t n,
                              int binarize, vae_rng *rng, float *out);
/**
 * @brief Copies the samples first..first+n-1 as floats: out[n][dim]. Does not allocate.
 * @param[in]  ds    The dataset.
 * @param[in]  first Index of the first sample.
 * @param[in]  n     Number of samples; at least 1.
 * @param[out] out   Receives n * vae_dataset_dim() floats.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID ds or out is NULL, n is 0, or the range goes past the last
 *                         sample.
 */
VAE_API int vae_dataset_range(const vae_dataset *ds, size_t first, size_t n, float *out);

/** @} */


/* ------------------------------------------------------------------------ */
/* Trainers                                                                  */
/* ------------------------------------------------------------------------ */

/**
 * @defgroup training Trainers
 * @brief Everything training mutates: gradients, optimizer state, generator, counters.
 *
 * A trainer borrows a model (whose parameters it updates), an objective and an optimizer
 * (read at every step, so their settings may change between steps) and a context (where
 * the work runs). All four must outlive the trainer. Several trainers may exist at once,
 * on different models and contexts, in different threads.
 *
 * vae_trainer_step() is vae_trainer_forward_backward() then vae_trainer_apply(). Users who
 * write their own loop, or check gradients against another framework, call the two
 * halves and read the gradient slab in between.
 * @{
 */

/**
 * @brief Progress callback of vae_trainer_train_epoch(), called after every step.
 *
 * Runs on the calling thread between two steps, when the parameters are consistent and
 * the gradients zero: it may for instance save the model, or change the learning rate or
 * beta. The trainer's context is in use meanwhile, so inference from the callback needs
 * another context. It must not free any object the trainer uses.
 * @param[in] payload      vae_train_options::payload, passed through.
 * @param[in] done         Samples processed so far in this epoch.
 * @param[in] total        Samples in the epoch.
 * @param[in] running_loss Mean loss per sample so far in this epoch.
 * @return 0 to continue; nonzero stops the epoch, which then returns VAE_ERR_CANCELLED.
 */
typedef int (*vae_progress_fn)(void *payload, size_t done, size_t total, double running_loss);

/**
 * @brief Options of vae_trainer_train_epoch(); fill with vae_train_options_init().
 *
 * Set the fields to change after the init call.
 */
typedef struct vae_train_options {
    size_t size;            /**< sizeof(vae_train_options) as the caller compiled it */
    size_t batch_size;      /**< default 128, at most 2^20; the last batch may be smaller */
    int shuffle;            /**< default 1: a fresh permutation from the trainer's generator */
    int binarize;           /**< default 0: dynamic binarization of each batch */
    vae_progress_fn progress; /**< default NULL */
    void *payload;          /**< passed to progress */
} vae_train_options;

/**
 * @brief Fills opts with the defaults, as far as `size` bytes reach, and sets opts->size.
 *
 * Pass `sizeof *opts` as the caller compiled it: a program built against an older, shorter
 * vae_train_options gets only the fields it knows filled in; one built against a newer,
 * longer one gets zeros in the fields this library does not know.
 * @param[out] opts The options to fill.
 * @param[in]  size sizeof(vae_train_options) in the caller's header; at least
 *                  sizeof(size_t).
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID opts is NULL, or size is smaller than sizeof(size_t) or more than
 *                         4096 bytes beyond this library's struct.
 */
VAE_API int vae_train_options_init(vae_train_options *opts, size_t size);

/**
 * @brief Training state of one model.
 *
 * Opaque. Created by vae_trainer_create(), released by vae_trainer_free().
 */
typedef struct vae_trainer vae_trainer;

/**
 * @brief Creates a trainer for a built model.
 *
 * Allocates the gradient slab (zero) and the optimizer's state for the model's parameter
 * count, and seeds the trainer's generator, from which the noise, the shuffles and the
 * binarization of its steps and epochs are drawn.
 * @param[out] out       Receives the new trainer, owned by the caller (free it with
 *                       vae_trainer_free()); set to NULL on failure.
 * @param[in]  m         A built model; borrowed, its parameters are trained.
 * @param[in]  objective The objective; borrowed.
 * @param[in]  opt       The optimizer; borrowed.
 * @param[in]  ctx       The context the work runs on; borrowed.
 * @param[in]  seed      Seed of the trainer's generator.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID out, m, objective, opt or ctx is NULL.
 * @retval VAE_ERR_STATE   the model is not built.
 * @retval VAE_ERR_NOMEM   an allocation failed.
 */
VAE_API int vae_trainer_create(vae_trainer **out, vae_model *m, vae_elbo *objective,
                               vae_optimizer *opt, vae_context *ctx, uint64_t seed);
/**
 * @brief Frees a trainer; the objects it borrowed are untouched.
 * @param[in] t The trainer to free; NULL is ignored.
 */
VAE_API void vae_trainer_free(vae_trainer *t);
/**
 * @brief Sizes the context's workspace for steps of up to max_batch samples, so that
 *        steps allocate nothing.
 * @param[in,out] t         The trainer.
 * @param[in]     max_batch The largest batch, 1 to 2^20.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID t is NULL, max_batch is 0 or too large (times the objective's
 *                         VAE_ELBO_SAMPLES, above 2^20), or the objective is IWAE with free
 *                         bits.
 * @retval VAE_ERR_STATE   the context is in use.
 * @retval VAE_ERR_NOMEM   the allocation failed; the previous workspace is kept.
 */
VAE_API int vae_trainer_reserve(vae_trainer *t, size_t max_batch);
/**
 * @brief Adds the gradient of the batch's mean loss to the gradient slab, without stepping.
 *
 * The loss is that of vae_elbo_evaluate(), with eps from the caller or drawn from the
 * trainer's generator in sample order. When the loss is not finite nothing is added, the
 * generator is left as it was and the call fails. Allocates only to grow the context's workspace.
 * @param[in,out] t     The trainer.
 * @param[in]     x     Inputs, n * input_dim floats: finite, and in [0, 1] for a Bernoulli
 *                      model.
 * @param[in]     n     Number of samples, 1 to 2^20.
 * @param[in]     eps   Noise, n * latent_dim finite floats, or NULL to draw it.
 * @param[out]    stats Receives the batch's loss, recon, kl, samples and seconds; may be
 *                      NULL; its size field must be set.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID t or x is NULL, n is 0 or too large (n times the objective's
 *                         VAE_ELBO_SAMPLES above 2^20), stats->size is too small or has
 *                         unknown nonzero bytes, a Bernoulli input lies outside [0, 1], or
 *                         the objective is IWAE with free bits.
 * @retval VAE_ERR_STATE   the context is in use.
 * @retval VAE_ERR_NUMERIC an input, eps or the loss is not finite.
 * @retval VAE_ERR_NOMEM   growing the workspace failed.
 */
VAE_API int vae_trainer_forward_backward(vae_trainer *t, const float *x, size_t n,
                                         const float *eps, vae_epoch_stats *stats);
/**
 * @brief Takes one optimizer step with the gradient slab, then zeroes the slab.
 *
 * A slab or a parameter holding a non-finite value, or a step that would make a
 * parameter or the optimizer's state (Adam's moments, SGD's momentum buffer) NaN or
 * infinite, fails with VAE_ERR_NUMERIC and changes nothing: not the parameters, the
 * state, the step counter or the slab. Otherwise increments the step counter.
 * @param[in,out] t The trainer.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID t is NULL, or Nesterov momentum is set with momentum 0 or
 *                         dampening other than 0 (as torch.optim.SGD refuses).
 * @retval VAE_ERR_STATE   the context is in use.
 * @retval VAE_ERR_NUMERIC a gradient or a parameter is not finite, or the step would make
 *                         a parameter or the optimizer's state overflow (NaN or infinite).
 */
VAE_API int vae_trainer_apply(vae_trainer *t);
/**
 * @brief One training step on one batch: vae_trainer_forward_backward() with drawn noise,
 *        then vae_trainer_apply().
 *
 * On failure the parameters, the optimizer state and the generator are unchanged and the
 * gradient slab is zero, except after VAE_ERR_STATE: the context is in use, perhaps by
 * another call on this very trainer, so nothing of the trainer is touched.
 * @param[in,out] t     The trainer.
 * @param[in]     x     Inputs, n * input_dim floats.
 * @param[in]     n     Number of samples, 1 to 2^20.
 * @param[out]    stats Receives the batch's loss, recon, kl, samples, steps (1) and
 *                      seconds; may be NULL; its size field must be set.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID as vae_trainer_forward_backward() and vae_trainer_apply().
 * @retval VAE_ERR_STATE   the context is in use.
 * @retval VAE_ERR_NUMERIC an input, the loss, a gradient or a parameter is not finite, or
 *                         the update would make a parameter or the optimizer's state
 *                         overflow (as vae_trainer_apply()).
 * @retval VAE_ERR_NOMEM   growing the workspace failed.
 */
VAE_API int vae_trainer_step(vae_trainer *t, const float *x, size_t n, vae_epoch_stats *stats);
/**
 * @brief One epoch of training over a dataset.
 *
 * Shuffles the sample order (when asked) from the trainer's generator, then for each
 * minibatch: vae_dataset_batch() (binarized from the same generator when asked) and
 * vae_trainer_step(). Buffers are allocated once per call. The epoch counter grows by one
 * when the epoch completes.
 *
 * An epoch that stops early (the progress callback returned nonzero, or a step failed,
 * whose status is returned; the parameters keep the last good step) stays open: the next
 * call continues it at the next sample of the same order, whatever its batch size, until
 * it completes or vae_trainer_discard_epoch() closes it. A checkpoint saved meanwhile, or
 * from the progress callback, holds the open epoch, and a restored trainer continues it
 * the same way (since 1.1; 1.0 started a new epoch instead). stats, when given, is filled
 * even when the epoch stops early; its loss, recon, kl, samples and steps cover the
 * whole epoch so far, including the calls before this one, and seconds this call.
 * @param[in,out] t     The trainer.
 * @param[in]     ds    The training data; dim must equal the model's input_dim.
 * @param[in]     opts  Options, or NULL for the defaults of vae_train_options_init().
 * @param[out]    stats Receives the measurements, or NULL; its size field must be set.
 * @retval VAE_OK            success.
 * @retval VAE_ERR_INVALID   t or ds is NULL; opts->size or stats->size is too small or
 *                           the bytes past the known fields are not zero; batch_size is 0
 *                           or above 2^20 (times the objective's VAE_ELBO_SAMPLES); the
 *                           objective is IWAE with free bits; or a Bernoulli model meets a
 *                           value outside [0, 1].
 * @retval VAE_ERR_SHAPE     the dataset's dim differs from the model's input_dim, or an
 *                           open epoch was begun on a dataset of another sample count.
 * @retval VAE_ERR_STATE     the context is in use.
 * @retval VAE_ERR_NUMERIC   a step met a non-finite value, loss or gradient.
 * @retval VAE_ERR_CANCELLED the progress callback returned nonzero.
 * @retval VAE_ERR_NOMEM     an allocation failed, or the workspace would exceed
 *                           VAE_LIMIT_WORKSPACE_BYTES (the message names the limit).
 */
VAE_API int vae_trainer_train_epoch(vae_trainer *t, const vae_dataset *ds,
                                    const vae_train_options *opts, vae_epoch_stats *stats);
/**
 * @brief The gradient slab, in the layout of vae_model_params().
 *
 * Holds the sum of what vae_trainer_forward_backward() calls added since the last
 * vae_trainer_apply() or vae_trainer_zero_grads(). Writable: a custom loop may add its own
 * terms before vae_trainer_apply(). Once a program has taken the pointer, every later step
 * reads the slab once more for its overflow test, since the program may have written it
 * (a few percent of a step; docs/math.md, section 10).
 * @param[in]  t     The trainer, or NULL.
 * @param[out] count Receives the number of floats (0 for a NULL trainer); may be NULL.
 * @return A borrowed pointer, valid while the trainer lives; NULL when t is NULL.
 */
VAE_API float *vae_trainer_grads(vae_trainer *t, size_t *count);
/**
 * @brief Sets the gradient slab to zero.
 * @param[in,out] t The trainer.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID t is NULL.
 */
VAE_API int vae_trainer_zero_grads(vae_trainer *t);
/**
 * @brief Optimizer steps taken (vae_trainer_apply() calls that succeeded).
 * @param[in] t The trainer, or NULL.
 * @return The count; 0 when t is NULL.
 */
VAE_API uint64_t vae_trainer_steps(const vae_trainer *t);
/**
 * @brief Epochs completed by vae_trainer_train_epoch().
 * @param[in] t The trainer, or NULL.
 * @return The count; 0 when t is NULL.
 */
VAE_API uint64_t vae_trainer_epochs(const vae_trainer *t);
/**
 * @brief Exchange callback of a distributed trainer: an in-place all-gather over bytes.
 *
 * buf holds one part per rank, concatenated in rank order, part r of bytes[r] bytes (the
 * same bytes array on every rank, some entries may be 0). On entry the caller's own part
 * is filled; on return every part must hold what its rank had put there. With MPI this is
 * MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, counts, displs, MPI_BYTE, comm)
 * (libvae_mpi provides it). Called from the thread that called the trainer, between the
 * forward and the backward pass and after the backward pass of every training pass.
 * @param[in]     payload As given to vae_trainer_set_distributed().
 * @param[in,out] buf     The parts.
 * @param[in]     bytes   bytes[r]: size of rank r's part; world entries.
 * @return 0 when every part arrived; nonzero fails the trainer's call with VAE_ERR_IO.
 */
typedef int (*vae_exchange_fn)(void *payload, void *buf, const size_t *bytes);
/**
 * @brief Makes the trainer one of `world` ranks of a data-parallel run, or (world 1) a
 *        trainer of its own again. Since 1.1.
 *
 * Every rank holds the same state (the same seed, or one checkpoint restored everywhere)
 * and makes the same calls with the same arguments: the same global batch x of n samples
 * for vae_trainer_step() and vae_trainer_forward_backward(), the same dataset and options
 * for vae_trainer_train_epoch(). The batch is cut into its blocks of at most 64 samples as
 * in one process; rank r runs the forward and backward pass of blocks
 * [r * nblk / world, (r + 1) * nblk / world) only (an uneven batch leaves some ranks fewer
 * blocks, or none). The ranks then exchange their samples' loss terms and their blocks'
 * gradients through fn, and every rank adds all blocks' gradients into its slab in block
 * order. The slab holds the gradient of the mean loss over the n samples of the global
 * batch, the reported losses are those means, and both are bit for bit what one process
 * computes for the same batch with any number of workers; so every rank applies the same
 * step and all ranks keep identical parameters (docs/distributed.md).
 *
 * Each pass makes two calls of fn; the second moves every block's gradient to every rank
 * (ceil(n / 64) times the parameter count in floats). A rank whose call fails returns its
 * status while the others may wait in fn: the program must end the run then (MPI_Abort()).
 * Inference and vae_evaluate_dataset() are not distributed.
 * @param[in,out] t       The trainer.
 * @param[in]     rank    This rank, below world.
 * @param[in]     world   Number of ranks, 1 to 65536; 1 turns distribution off.
 * @param[in]     fn      The exchange; may be NULL only when world is 1.
 * @param[in]     payload Passed to fn (an MPI communicator, for instance).
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID t is NULL, world is 0 or above 65536, rank >= world, or fn is
 *                         NULL with world > 1.
 * @retval VAE_ERR_STATE   the trainer's context is in use.
 */
VAE_API int vae_trainer_set_distributed(vae_trainer *t, size_t rank, size_t world,
                                        vae_exchange_fn fn, void *payload);
/**
 * @brief Where the open epoch stands: one that a call of vae_trainer_train_epoch() left
 *        part-way (its progress callback stopped it, or a step failed), or that
 *        vae_trainer_restore() brought back.
 *
 * The next vae_trainer_train_epoch() continues an open epoch at the next sample of the
 * same order instead of starting a new one. Since 1.1.
 * @param[in]  t     The trainer.
 * @param[out] done  Receives the samples done in the open epoch, 0 when none is open; may
 *                   be NULL.
 * @param[out] total Receives the samples of the open epoch's dataset, 0 when none is open;
 *                   may be NULL.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID t is NULL.
 */
VAE_API int vae_trainer_epoch_position(const vae_trainer *t, size_t *done, size_t *total);
/**
 * @brief Closes an open epoch without finishing it: the next vae_trainer_train_epoch()
 *        starts a new one. Does nothing when no epoch is open. Since 1.1.
 * @param[in,out] t The trainer.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID t is NULL.
 * @retval VAE_ERR_STATE   the trainer's context is in use (for instance from the progress
 *                         callback of the epoch itself).
 */
VAE_API int vae_trainer_discard_epoch(vae_trainer *t);

/** @} */

/**
 * @brief Mean loss, reconstruction and KL over a whole dataset, and each sample's loss.
 * @ingroup inference
 *
 * vae_elbo_evaluate() over the samples in order (not binarized), noise drawn from rng in
 * sample order, so the results depend neither on the context's workers nor on how the
 * dataset is cut into batches. Allocates one buffer per call.
 * @param[in,out] ctx        The context.
 * @param[in]     m          A built model.
 * @param[in]     e          The objective.
 * @param[in]     ds         The data; dim must equal the model's input_dim.
 * @param[in,out] rng        Generator for the noise; may be NULL only with
 *                           VAE_OBJECTIVE_AUTOENCODER.
 * @param[out]    per_sample Receives vae_dataset_count() per-sample losses; may be NULL.
 * @param[out]    stats      Receives the means, samples and seconds; may be NULL; its
 *                           size field must be set.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID ctx, m, e or ds is NULL, rng is NULL with the ELBO or IWAE objective,
 *                         stats->size is too small or has unknown nonzero bytes, or a
 *                         (continuous) Bernoulli model meets a value outside [0, 1].
 * @retval VAE_ERR_SHAPE   the dataset's dim differs from the model's input_dim.
 * @retval VAE_ERR_STATE   the model is not built, or the context is in use.
 * @retval VAE_ERR_NUMERIC a value or loss is not finite.
 * @retval VAE_ERR_NOMEM   an allocation failed, or the workspace would exceed
 *                         VAE_LIMIT_WORKSPACE_BYTES (the message names the limit).
 */
VAE_API int vae_evaluate_dataset(vae_context *ctx, const vae_model *m, const vae_elbo *e,
                                 const vae_dataset *ds, vae_rng *rng, double *per_sample,
                                 vae_epoch_stats *stats);

/* ------------------------------------------------------------------------ */
/* Model files (docs/format.md)                                              */
/* ------------------------------------------------------------------------ */

/**
 * @defgroup model_files Model files
 * @brief Saving and loading a built model: architecture and parameters, CRC-32 checked.
 *
 * A model file holds the likelihood, the Gaussian sigma, every layer's kind, activation
 * and geometry, and the parameter slab, little-endian, so files are byte-identical across
 * machines. It holds nothing about training (a checkpoint does: vae_trainer_save()).
 * Since 1.1 files are written in format version 2, in typed, checksummed chunks; the
 * readers also read version 1, which 0.1 and 1.0 wrote. Specification in docs/format.md.
 * @{
 */

/**
 * @brief Writes the architecture and parameters to `path` atomically.
 *
 * Writes a temporary file `path.tmp-XXXXXX` in the same directory (locked until the
 * rename; such files left by saves that were killed are removed first), flushes it to
 * disk, renames it over the target and flushes the directory: `path` holds either its
 * old contents or the complete new file, never a partial one. A replaced file keeps its
 * permission bits (and owner and group where allowed); a new one gets 0666 less the
 * umask. Through a symbolic link, the file it points to is replaced and the link kept.
 * docs/format.md, "Writing", has the rules. The temporary file is removed on failure.
 * Allocates a buffer of the file's size. Does not modify the model.
 * @param[in] m    A built model.
 * @param[in] path Destination path.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID m or path is NULL, or path is empty.
 * @retval VAE_ERR_STATE   the model is not built.
 * @retval VAE_ERR_NUMERIC a parameter is not finite (written through vae_model_params()):
 *                         nothing is written, since the file could not be loaded.
 * @retval VAE_ERR_IO      the temporary file cannot be created, written, flushed or
 *                         renamed; path is a dangling symbolic link, or names a
 *                         directory, FIFO, device or socket.
 * @retval VAE_ERR_NOMEM   an allocation failed.
 */
VAE_API int vae_model_save(const vae_model *m, const char *path);
/**
 * @brief Reads a model written by vae_model_save(), or the model part of a checkpoint
 *        written by vae_trainer_save().
 *
 * The new model is built, with the parameters from the file. Every field is checked before
 * it is used (docs/format.md lists the checks): a damaged file never makes the reader read
 * out of bounds or allocate more than the file can hold.
 * @param[out] out  Receives the new model, owned by the caller (free it with
 *                  vae_model_free()); set to NULL on failure.
 * @param[in]  path Path of the model file.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID out or path is NULL.
 * @retval VAE_ERR_IO      the file cannot be opened or read, or is not a regular file (a
 *                         FIFO, device, socket or directory is refused at once, without
 *                         blocking).
 * @retval VAE_ERR_FORMAT  the file is damaged, truncated, of another format version, or
 *                         describes an impossible model (the message says what).
 * @retval VAE_ERR_NOMEM   an allocation failed, or the file is larger than
 *                         VAE_LIMIT_FILE_BYTES or the model has more parameters than
 *                         VAE_LIMIT_MODEL_PARAMS (the message names the limit; nothing of
 *                         that size is allocated).
 */
VAE_API int vae_model_load(vae_model **out, const char *path);
/**
 * @brief Writes the bytes vae_model_save() would write into a caller buffer.
 *
 * Call once with buf NULL to learn the size, then with a buffer of that size. Does not
 * allocate and does not modify the model.
 * @param[in]  m    A built model.
 * @param[out] buf  Receives the file's bytes, or NULL to query the size only.
 * @param[in]  cap  Size of buf in bytes (ignored when buf is NULL).
 * @param[out] size Receives the number of bytes needed, also when cap is too small.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID m or size is NULL, or cap < `*size` (nothing is written to buf).
 * @retval VAE_ERR_STATE   the model is not built.
 * @retval VAE_ERR_NUMERIC a parameter is not finite (checked when buf is not NULL;
 *                         nothing is written).
 */
VAE_API int vae_model_save_mem(const vae_model *m, void *buf, size_t cap, size_t *size);
/**
 * @brief Reads a model from the bytes of a model file (or checkpoint) in memory.
 *
 * Same checks and result as vae_model_load(). The buffer is read during the call only.
 * @param[out] out  Receives the new model, owned by the caller (free it with
 *                  vae_model_free()); set to NULL on failure.
 * @param[in]  buf  The bytes of a model file.
 * @param[in]  size Number of bytes in buf.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID out or buf is NULL.
 * @retval VAE_ERR_FORMAT  the bytes are damaged, truncated, of another format version, or
 *                         describe an impossible model (the message says what).
 * @retval VAE_ERR_NOMEM   an allocation failed, or size is above VAE_LIMIT_FILE_BYTES
 *                         or the model has more parameters than VAE_LIMIT_MODEL_PARAMS
 *                         (the message names the limit).
 */
VAE_API int vae_model_load_mem(vae_model **out, const void *buf, size_t size);

/** @} */

/* ------------------------------------------------------------------------ */
/* Checkpoints (docs/format.md)                                              */
/* ------------------------------------------------------------------------ */

/**
 * @defgroup checkpoints Checkpoints
 * @brief A trainer's whole state in one file, to resume training bit for bit. Since 1.1.
 *
 * A checkpoint holds everything the trainer's steps and epochs read or change: the model
 * (architecture and parameters, as a model file holds them), the optimizer's kind,
 * hyperparameters and state, the objective's settings, the trainer's generator, its step
 * and epoch counters, the position in an open epoch (vae_trainer_epoch_position()), any
 * gradients not yet applied, and the key/value metadata of vae_trainer_set_meta().
 * Training continued from a restored checkpoint, in this process or another, gives the
 * same parameters and the same losses, bit for bit, as training that never stopped, with
 * any number of workers.
 *
 * A checkpoint is a model file with more chunks (docs/format.md), so vae_model_load()
 * reads its model part: the usual way to resume is vae_model_load() of the checkpoint,
 * then a trainer on that model, then vae_trainer_restore().
 * @{
 */

/**
 * @brief Writes the trainer's whole state to `path` atomically, like vae_model_save().
 *
 * Can be called from the progress callback of vae_trainer_train_epoch(): the checkpoint
 * then resumes after the step just taken. Allocates a buffer of the file's size. Does
 * not modify the trainer.
 * @param[in] t    The trainer.
 * @param[in] path Destination path.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID t or path is NULL, or path is empty.
 * @retval VAE_ERR_NUMERIC a parameter, optimizer state value or pending gradient is not
 *                         finite: nothing is written (a file that could not be loaded
 *                         would be worse than the last good one).
 * @retval VAE_ERR_IO      the file cannot be written (as vae_model_save()).
 * @retval VAE_ERR_NOMEM   an allocation failed.
 */
VAE_API int vae_trainer_save(const vae_trainer *t, const char *path);
/**
 * @brief Writes the bytes vae_trainer_save() would write into a caller buffer.
 *
 * Call once with buf NULL to learn the size, then with a buffer of that size. Does not
 * allocate and does not modify the trainer.
 * @param[in]  t    The trainer.
 * @param[out] buf  Receives the bytes, or NULL to query the size only.
 * @param[in]  cap  Size of buf in bytes (ignored when buf is NULL).
 * @param[out] size Receives the number of bytes needed, also when cap is too small.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID t or size is NULL, or cap < `*size` (nothing is written).
 * @retval VAE_ERR_NUMERIC as vae_trainer_save() (checked when buf is not NULL).
 */
VAE_API int vae_trainer_save_mem(const vae_trainer *t, void *buf, size_t cap, size_t *size);
/**
 * @brief Restores a state written by vae_trainer_save() into a trainer of the same
 *        architecture.
 *
 * Writes the model's parameters (and its Gaussian sigma), the optimizer's
 * hyperparameters, the objective's settings, the optimizer state, the generator, the
 * counters, the open epoch, the pending gradients and the metadata. The trainer's model,
 * optimizer and objective are written even though they are borrowed: another trainer
 * that shares them sees the restored settings. Everything is read and checked first; on
 * any failure nothing is changed.
 * @param[in,out] t    The trainer, over a model of the checkpoint's architecture and an
 *                     optimizer of the checkpoint's kind.
 * @param[in]     path Path of the checkpoint.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID t or path is NULL.
 * @retval VAE_ERR_SHAPE   the checkpoint's architecture (input and latent sizes,
 *                         likelihood, layers, parameter count) or optimizer kind differs
 *                         from the trainer's (the message says what).
 * @retval VAE_ERR_IO      the file cannot be opened or read, or is not a regular file.
 * @retval VAE_ERR_FORMAT  the file is damaged or truncated, is a model file without a
 *                         trainer's state, or holds a value out of range (the message
 *                         says what).
 * @retval VAE_ERR_STATE   the trainer's context is in use.
 * @retval VAE_ERR_NOMEM   an allocation failed, or the file is above
 *                         VAE_LIMIT_FILE_BYTES.
 */
VAE_API int vae_trainer_restore(vae_trainer *t, const char *path);
/**
 * @brief vae_trainer_restore() from the bytes of a checkpoint in memory.
 * @param[in,out] t    The trainer.
 * @param[in]     buf  The bytes of a checkpoint, read during the call only.
 * @param[in]     size Number of bytes in buf.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID t or buf is NULL.
 * @retval VAE_ERR_SHAPE   as vae_trainer_restore().
 * @retval VAE_ERR_FORMAT  as vae_trainer_restore().
 * @retval VAE_ERR_STATE   the trainer's context is in use.
 * @retval VAE_ERR_NOMEM   an allocation failed, or size is above VAE_LIMIT_FILE_BYTES.
 */
VAE_API int vae_trainer_restore_mem(vae_trainer *t, const void *buf, size_t size);
/**
 * @brief Sets, replaces or removes one metadata entry, saved with the checkpoint.
 *
 * Free-form text such as the command line, a dataset checksum or a note. Entries keep the
 * order in which they were first set.
 * @param[in,out] t     The trainer.
 * @param[in]     key   1 to 255 bytes, none of them a control character (below 0x20, or
 *                      0x7f).
 * @param[in]     value Up to 65535 bytes (a C string), or NULL to remove the entry.
 * @retval VAE_OK          success (also when removing an entry that does not exist).
 * @retval VAE_ERR_INVALID t or key is NULL, the key or value is out of those bounds, or
 *                         the trainer already has 1024 entries.
 * @retval VAE_ERR_NOMEM   an allocation failed; the entries are as they were.
 */
VAE_API int vae_trainer_set_meta(vae_trainer *t, const char *key, const char *value);
/**
 * @brief Looks a metadata entry up.
 * @param[in]  t     The trainer.
 * @param[in]  key   The key.
 * @param[out] value Receives the value, owned by the trainer and valid until the entry is
 *                   next set or removed or the trainer restored or freed; NULL when the
 *                   key is absent.
 * @retval VAE_OK          success, whether the key was found or not.
 * @retval VAE_ERR_INVALID t, key or value is NULL.
 */
VAE_API int vae_trainer_get_meta(const vae_trainer *t, const char *key, const char **value);
/**
 * @brief Number of metadata entries.
 * @param[in] t The trainer, or NULL.
 * @return The count; 0 when t is NULL.
 */
VAE_API size_t vae_trainer_meta_count(const vae_trainer *t);
/**
 * @brief The i-th metadata entry, in the order entries were first set.
 * @param[in]  t     The trainer.
 * @param[in]  i     Index below vae_trainer_meta_count().
 * @param[out] key   Receives the key (valid as in vae_trainer_get_meta()); may be NULL.
 * @param[out] value Receives the value; may be NULL.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID t is NULL or i is out of range.
 */
VAE_API int vae_trainer_meta_at(const vae_trainer *t, size_t i, const char **key,
                                const char **value);

/** @} */

#ifdef __cplusplus
}
#endif

#endif /* VAE_VAE_H */
