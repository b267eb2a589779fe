/*
 * libvae: variational autoencoders in C, with hand-written backprop over CBLAS.
 *
 * Conventions (see docs/abi.md for the policy behind them):
 *  - Every function returns an int status (VAE_OK == 0, failures negative)
 *    unless it is a getter. On failure, vae_last_error() gives a message
 *    specific to the call, kept per thread until the next failure.
 *  - Constructors write the new object through an `out` parameter; on failure
 *    *out is set to NULL. Every *_free accepts NULL.
 *  - Handles are opaque. One object is used by one thread at a time; distinct
 *    objects may be used from distinct threads concurrently.
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
 * main page for the conventions every function follows.
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
 * - @ref rng "Random numbers": the seeded generator all randomness comes from.
 * - @ref layers "Layers": dense and convolution layers, standalone or in a model.
 * - @ref models "Models": encoder and decoder stacks, parameter slabs, inference.
 * - @ref objective "Objective": the negative ELBO and its gradient.
 * - @ref optimizers "Optimizers": SGD and Adam, gradient clipping.
 * - @ref datasets "Datasets": IDX files and float arrays in memory.
 * - @ref training "Training and evaluation": epochs, whole-dataset evaluation, log-likelihood.
 * - @ref model_files "Model files": saving and loading models.
 *
 * The mathematics (objective, every backward pass, optimizers, the log-likelihood estimate)
 * is derived in `docs/math.md`; the model file and IDX formats are specified byte by byte in
 * `docs/format.md`.
 *
 * @section mp_status Status codes and error messages
 *
 * Every function that can fail returns an `int` status: `VAE_OK` (0) on success, a negative
 * `VAE_ERR_*` code on failure. The values are part of the ABI and never change. Each
 * function lists the codes it returns and when. vae_strerror() names a code;
 * vae_last_error() gives the detailed message of the last failure on the calling thread,
 * starting with the name of the function that failed. A successful call leaves that message
 * alone. Getters that cannot fail return their value directly, with a neutral value
 * (0, NULL or -1, as documented) for a NULL handle. The library never prints, never calls
 * `exit` or `abort` and never asserts on user input.
 *
 * @section mp_ownership Ownership and lifetimes
 *
 * - Handles are opaque: `vae_rng`, `vae_layer`, `vae_model`, `vae_elbo`, `vae_optimizer`
 *   and `vae_dataset` are declared but never defined here, so their layout can change
 *   without breaking the ABI.
 * - A constructor writes the new object through its `out` parameter and sets `*out` to NULL
 *   when it fails. The object belongs to the caller, who releases it with the matching
 *   `*_free` function; every `*_free` accepts NULL.
 * - The exception: a layer added to a model belongs to the model from then on and is freed
 *   with it.
 * - Pointers returned by getters (vae_model_params(), vae_layer_grads(), vae_last_error(),
 *   vae_strerror(), ...) are borrowed: never free them. Each getter says how long its
 *   pointer stays valid.
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
 * @section mp_threads Threads
 *
 * One object is used by one thread at a time; distinct objects may be used from distinct
 * threads concurrently. A call that takes several objects (vae_train_epoch() takes a model,
 * an objective, an optimizer, a dataset and a generator) needs all of them for its
 * duration. Inference writes the model's workspace, so vae_model_encode() and the other
 * inference functions need the model to themselves too. Datasets are the exception: no
 * function modifies a dataset after it is created, so several threads may read one dataset
 * at the same time as long as none frees it. vae_version_number(), vae_version_string() and
 * vae_strerror() may be called from any thread at any time; vae_last_error() reports the
 * calling thread's last failure only. The BLAS library may run its own threads inside one
 * call (OpenBLAS follows `OPENBLAS_NUM_THREADS`).
 *
 * @section mp_alloc Allocation
 *
 * Objects allocate when they are created. A model's workspace is sized for a batch size:
 * vae_model_reserve() sizes it once, and afterwards vae_elbo_forward_backward() and
 * vae_elbo_evaluate() on batches up to that size never allocate. vae_optimizer_step()
 * allocates the optimizer state on its first call only. So once the model is reserved and
 * the first step is done, a training step allocates nothing. A larger batch grows the
 * workspace on demand (the workspace never shrinks). Inference functions process any number
 * of samples in chunks of the workspace's batch size. vae_train_epoch() and
 * vae_evaluate_dataset() allocate their buffers once per call, never per step.
 *
 * @section mp_options Structures that may grow
 *
 * The only public structures, vae_train_options and vae_epoch_stats, start with a
 * `size_t size` field holding `sizeof` the structure as the caller compiled it, so that
 * fields can be appended in later versions. Fill options with vae_train_options_init(); set
 * `stats.size = sizeof stats` yourself. The library writes a vae_epoch_stats only as far
 * as its size reaches; vae_train_epoch() rejects options whose size is smaller than the
 * library's own vae_train_options.
 *
 * @section mp_random Reproducibility
 *
 * All randomness comes from vae_rng objects created with an explicit seed: the same seed
 * and the same sequence of calls give the same numbers. The noise of the
 * reparameterization can also be passed in explicitly (the `eps` argument of
 * vae_elbo_forward_backward()), which makes a loss and its gradient a deterministic
 * function of the inputs.
 *
 * @section mp_versions Versions
 *
 * `VAE_VERSION_NUMBER` is the version of the header a program was compiled with;
 * vae_version_number() is the version of the library it runs with. A signature never
 * changes once released; a changed function gets a new name.
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
 *     vae_model *m = NULL; vae_elbo *e = NULL; vae_optimizer *opt = NULL; vae_rng *rng = NULL;
 *     double loss = 0;
 *     int rc = vae_rng_create(&rng, 42);
 *     if (!rc) rc = vae_rng_uniform(rng, x, N * D);
 *     if (!rc) rc = vae_model_create_mlp(&m, D, hidden, 1, L, VAE_ACT_RELU,
 *                                        VAE_LIKELIHOOD_BERNOULLI, 42);
 *     if (!rc) rc = vae_elbo_create(&e);
 *     if (!rc) rc = vae_optimizer_adam_create(&opt, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f);
 *     for (int step = 0; step < 100 && !rc; step++) {
 *         rc = vae_elbo_forward_backward(e, m, x, N, NULL, rng, &loss, NULL, NULL);
 *         if (!rc) rc = vae_optimizer_step(opt, m);
 *     }
 *     if (rc) fprintf(stderr, "%s: %s\n", vae_strerror(rc), vae_last_error());
 *     else printf("loss after 100 steps: %.2f nats per sample\n", loss);
 *     vae_optimizer_free(opt); vae_elbo_free(e); vae_model_free(m); vae_rng_free(rng);
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
 * vae_version_number() (the library actually loaded) to detect a mismatch. Before 1.0 the
 * shared library's soname changes with MAJOR.MINOR.
 * @{
 */

/** Major version of this header. */
#define VAE_VERSION_MAJOR 0
/** Minor version of this header. */
#define VAE_VERSION_MINOR 1
/** Patch version of this header. */
#define VAE_VERSION_PATCH 0
/** MAJOR*10000 + MINOR*100 + PATCH, so 0.1.0 is 100. */
#define VAE_VERSION_NUMBER \
    (VAE_VERSION_MAJOR * 10000 + VAE_VERSION_MINOR * 100 + VAE_VERSION_PATCH)

/**
 * @brief Version of the library actually loaded.
 *
 * Safe to call from any thread.
 * @return The version in the encoding of VAE_VERSION_NUMBER (100 for 0.1.0).
 */
VAE_API unsigned vae_version_number(void);
/**
 * @brief Version string of the library actually loaded.
 *
 * Safe to call from any thread.
 * @return "MAJOR.MINOR.PATCH", such as "0.1.0", in static storage: never NULL, never freed.
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
    VAE_ERR_STATE = -7,     /**< call out of order, such as training before build */
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
/* Random numbers                                                            */
/* ------------------------------------------------------------------------ */

/**
 * @defgroup rng Random numbers
 * @brief The seeded generator that every random draw of the library comes from.
 *
 * Weight initialization, the noise of the reparameterization, shuffling, binarization and
 * sampling all draw from a vae_rng passed explicitly (model building draws from a seed),
 * so results depend only on seeds and the order of calls.
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
 * vae_model_add_decoder_layer(), after which the model owns it and drives it.
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

/**
 * @brief A layer: dense, Conv2D or ConvTranspose2D, with its activation.
 *
 * Opaque. Created by vae_layer_dense_create(), vae_layer_conv2d_create() or
 * vae_layer_conv2d_transpose_create(). The caller owns a new layer and frees it with
 * vae_layer_free(), unless it was added to a model: the model then owns it, and the
 * caller's pointer stays a borrowed pointer, valid until the model is freed.
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
 * @brief Frees a layer the caller still owns.
 *
 * A layer a model owns (one added successfully with vae_model_add_encoder_layer() or
 * vae_model_add_decoder_layer()) is freed by vae_model_free(); passing it here does
 * nothing, so that mistake cannot free it twice.
 * @param[in] layer The layer to free; NULL and layers owned by a model are ignored.
 */
VAE_API void vae_layer_free(vae_layer *layer);
/**
 * @brief Draws the layer's weights and biases uniform in +-1/sqrt(fan_in).
 *
 * PyTorch's default initialization. fan_in is `in` for a dense layer,
 * `in_channels * kernel_h * kernel_w` for Conv2D and `out_channels * kernel_h * kernel_w`
 * for ConvTranspose2D.
 * Parameters are drawn in slab order (weights, then biases). vae_model_build() draws every
 * layer of a model again from its own seed, so there is no need to call this on a layer
 * meant for a model.
 * @param[in,out] layer The layer; its parameters are overwritten.
 * @param[in,out] rng   The generator; its state advances.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID layer or rng is NULL.
 */
VAE_API int vae_layer_init(vae_layer *layer, vae_rng *rng);
/**
 * @brief Forward pass of a standalone layer: y[batch][out] = layer(x[batch][in]).
 *
 * The layer keeps copies of x and y for a following vae_layer_backward(). Works on a
 * standalone layer only: a layer that belongs to a model is driven by the model. The
 * layer's cache grows (allocates) when batch exceeds every earlier batch of this layer;
 * it never shrinks.
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
 * @brief The layer's parameters: weights then biases, in the layout of its constructor.
 *
 * Writable: parameters may be set through the pointer. Before the layer's model is built,
 * the pointer refers to the layer's own storage, which vae_model_build() frees (the layer
 * then moves into the model's slab): call this again after building. After building, the
 * pointer is a view into the slab of vae_model_params().
 * @param[in]  layer The layer, or NULL.
 * @param[out] count Receives the number of floats (0 for a NULL layer); may be NULL.
 * @return A borrowed pointer, valid until the layer is freed or, for a layer added to a
 *         model that is not built yet, until the model is built; NULL when layer is NULL.
 */
VAE_API float *vae_layer_params(vae_layer *layer, size_t *count);
/**
 * @brief The layer's gradients, in the same layout and count as its parameters.
 *
 * Writable, so gradients can be zeroed or set through the pointer. The lifetime rules of
 * vae_layer_params() apply.
 * @param[in]  layer The layer, or NULL.
 * @param[out] count Receives the number of floats (0 for a NULL layer); may be NULL.
 * @return A borrowed pointer with the lifetime of the vae_layer_params() pointer; NULL when
 *         layer is NULL.
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

/** @} */

/* ------------------------------------------------------------------------ */
/* Models                                                                    */
/* ------------------------------------------------------------------------ */

/**
 * @defgroup models Models
 * @brief A VAE: encoder layers, the Gaussian head, decoder layers, slabs and inference.
 *
 * Create an empty model with vae_model_create(), add encoder and decoder layers, then
 * vae_model_build(); or get a built MLP in one call from vae_model_create_mlp(). A built
 * model holds all its parameters in one contiguous float slab and all its gradients in a
 * second slab with the same layout, plus a workspace sized for a batch size.
 * @{
 */

/** @brief Decoder likelihoods p(x|z). Values are part of the ABI and of the model file. */
enum {
    VAE_LIKELIHOOD_BERNOULLI = 0, /**< decoder outputs logits; x in [0, 1] */
    VAE_LIKELIHOOD_GAUSSIAN = 1   /**< decoder outputs means; fixed sigma */
};

/**
 * @brief A variational autoencoder.
 *
 * Opaque. Created by vae_model_create(), vae_model_create_mlp(), vae_model_load() or
 * vae_model_load_mem(); released by vae_model_free(), which also frees the model's layers.
 * Every call on a model, inference included, writes its state or workspace, so a model is
 * used by one thread at a time.
 */
typedef struct vae_model vae_model;

/**
 * @brief Creates an empty model: add encoder and decoder layers, then vae_model_build().
 *
 * The Gaussian sigma starts at 1 (see vae_model_set_gaussian_sigma()).
 * @param[out] out        Receives the new model, owned by the caller (free it with
 *                        vae_model_free()); set to NULL on failure.
 * @param[in]  input_dim  Values per sample, 1 to 2^24.
 * @param[in]  latent_dim Dimension of the latent code z, 1 to 2^20.
 * @param[in]  likelihood VAE_LIKELIHOOD_BERNOULLI or VAE_LIKELIHOOD_GAUSSIAN.
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
 * Every pointer borrowed from the model (its layers, vae_model_params(),
 * vae_model_grads()) becomes invalid. An optimizer that stepped this model holds state
 * for it and refuses every other model (VAE_ERR_STATE): free it too.
 * @param[in] m The model to free; NULL is ignored.
 */
VAE_API void vae_model_free(vae_model *m);
/**
 * @brief Appends a layer to the encoder.
 *
 * Encoder layers run in the order they are added, from the input (input_dim values) to
 * the Gaussian head that vae_model_build() appends. Shapes are checked by the build. On
 * success the model owns the layer (do not free it; the caller's pointer stays valid,
 * borrowed, until the model is freed); on failure the caller still does. May allocate.
 * @param[in,out] m     The model, not built yet.
 * @param[in,out] layer A standalone layer that belongs to no model.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID m or layer is NULL, or the layer already belongs to a model.
 * @retval VAE_ERR_STATE   the model is already built.
 * @retval VAE_ERR_NOMEM   growing the layer list failed.
 */
VAE_API int vae_model_add_encoder_layer(vae_model *m, vae_layer *layer);
/**
 * @brief Appends a layer to the decoder.
 *
 * Decoder layers run in the order they are added, from the latent code (latent_dim values)
 * to the output, which must have input_dim values: logits for a Bernoulli likelihood,
 * means for a Gaussian one (so the last layer is usually VAE_ACT_IDENTITY). The decoder
 * needs at least one layer. Ownership and failures as vae_model_add_encoder_layer().
 * @param[in,out] m     The model, not built yet.
 * @param[in,out] layer A standalone layer that belongs to no model.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID m or layer is NULL, or the layer already belongs to a model.
 * @retval VAE_ERR_STATE   the model is already built.
 * @retval VAE_ERR_NOMEM   growing the layer list failed.
 */
VAE_API int vae_model_add_decoder_layer(vae_model *m, vae_layer *layer);
/**
 * @brief Checks the shapes, appends the Gaussian head, allocates the slabs, draws weights.
 *
 * Checks that the encoder chains from input_dim and the decoder from latent_dim back to
 * input_dim (VAE_ERR_SHAPE naming the layer), appends the Gaussian head (dense, identity,
 * from the last encoder width, or input_dim without encoder layers, to 2 * latent_dim
 * outputs: [mu | logvar]), allocates the parameter and gradient slabs, moves every layer's
 * parameters into them and draws all the weights from `seed`, as vae_layer_init() would
 * (values set on the layers before are discarded). Gradients start at zero. The workspace
 * is allocated later, by vae_model_reserve() or the first call that needs it. On failure
 * the model is left unbuilt and unchanged: fix it and build again.
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
 * @param[in]  likelihood VAE_LIKELIHOOD_BERNOULLI or VAE_LIKELIHOOD_GAUSSIAN.
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
 * @brief Sizes the workspace for batches up to max_batch.
 *
 * Afterwards vae_elbo_forward_backward() and vae_elbo_evaluate() on batches up to that
 * size never allocate; larger batches grow the workspace on demand. Inference functions
 * work in chunks of this size. A max_batch no larger than the current workspace changes
 * nothing (the workspace never shrinks).
 * @param[in,out] m         A built model.
 * @param[in]     max_batch The largest batch size to prepare for; at least 1.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID m is NULL, max_batch is 0, or max_batch is too large for the
 *                         model (above 2^24, or a batch of activations over INT_MAX floats).
 * @retval VAE_ERR_STATE   the model is not built.
 * @retval VAE_ERR_NOMEM   the allocation failed; the previous workspace is kept.
 */
VAE_API int vae_model_reserve(vae_model *m, size_t max_batch);
/**
 * @brief Splits training and evaluation batches over n threads.
 *
 * vae_elbo_forward_backward() and vae_elbo_evaluate() (and so vae_train_epoch() and
 * vae_evaluate_dataset()) give each of n workers a contiguous run of the batch's rows, with
 * its own workspace and gradient buffer; the caller's thread is one of them. The noise is
 * drawn for the whole batch before the split and per-sample losses are summed in row order,
 * so losses depend on n only through the BLAS's rounding of shorter products (often not at
 * all); gradients are summed in a fixed order, so results are bit-identical for the same n
 * and seed. The GEMMs of
 * each worker should run single-threaded: use a single-threaded BLAS setting (e.g. the
 * environment variable OPENBLAS_NUM_THREADS=1) when n > 1. The threads live until the
 * model is freed or n changes; the workspace is rebuilt for the new worker count.
 * @param[in,out] m A built model.
 * @param[in]     n Number of workers, 1 (the default: no threads) to 64.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID m is NULL, or n is 0 or above 64.
 * @retval VAE_ERR_STATE   the model is not built, or the threads could not be started.
 * @retval VAE_ERR_NOMEM   an allocation failed.
 */
VAE_API int vae_model_set_threads(vae_model *m, size_t n);
/**
 * @brief The number of workers set by vae_model_set_threads().
 * @param[in] m The model.
 * @return 1 unless vae_model_set_threads() chose otherwise; 0 when m is NULL.
 */
VAE_API size_t vae_model_threads(const vae_model *m);
/**
 * @brief Sets sigma of the Gaussian likelihood (default 1).
 *
 * Used by the Gaussian likelihood only; a Bernoulli model accepts and ignores it. Saved in
 * model files. May be called before or after the build.
 * @param[in,out] m     The model.
 * @param[in]     sigma Standard deviation of p(x|z) around the decoder's mean; finite
 *                      and > 0.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID m is NULL, or sigma is not finite and > 0.
 */
VAE_API int vae_model_set_gaussian_sigma(vae_model *m, float sigma);

/**
 * @brief Values per sample the model takes and reconstructs.
 * @param[in] m The model, or NULL.
 * @return input_dim, or 0 when m is NULL.
 */
VAE_API size_t vae_model_input_dim(const vae_model *m);
/**
 * @brief Dimension of the latent code z.
 * @param[in] m The model, or NULL.
 * @return latent_dim, or 0 when m is NULL.
 */
VAE_API size_t vae_model_latent_dim(const vae_model *m);
/**
 * @brief The model's likelihood.
 * @param[in] m The model, or NULL.
 * @return A VAE_LIKELIHOOD_* value, or -1 when m is NULL.
 */
VAE_API int vae_model_likelihood(const vae_model *m);

/**
 * @brief The parameter slab of a built model.
 *
 * Layout: encoder layers in order, then the head, then decoder layers; each dense layer is
 * `W[out][in]` row-major then `b[out]`, each convolution its W then b as documented at its
 * constructor. The head has 2*latent_dim outputs: rows 0..latent_dim-1 give mu, the next
 * latent_dim rows give logvar. Writable: parameters may be set through it. The slab never
 * moves once built.
 * @param[in,out] m     The model, or NULL.
 * @param[out]    count Receives the number of floats (0 before the build or for a NULL
 *                      model); may be NULL.
 * @return A borrowed pointer valid until vae_model_free(); NULL before the build or when m
 *         is NULL.
 */
VAE_API float *vae_model_params(vae_model *m, size_t *count);
/**
 * @brief The gradient slab of a built model: same length and layout as the parameters.
 *
 * vae_elbo_forward_backward() adds into it; vae_optimizer_step() and vae_model_zero_grads()
 * zero it. Writable (to all-reduce gradients across processes, for example). The slab
 * never moves once built.
 * @param[in,out] m     The model, or NULL.
 * @param[out]    count Receives the number of floats (0 before the build or for a NULL
 *                      model); may be NULL.
 * @return A borrowed pointer valid until vae_model_free(); NULL before the build or when m
 *         is NULL.
 */
VAE_API float *vae_model_grads(vae_model *m, size_t *count);
/**
 * @brief Sets every gradient to zero. Does not allocate.
 * @param[in,out] m A built model.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID m is NULL.
 * @retval VAE_ERR_STATE   the model is not built.
 */
VAE_API int vae_model_zero_grads(vae_model *m);

/*
 * Inference. n is any batch size: the samples are processed in chunks of the workspace's
 * batch size (vae_model_reserve()); a model with no workspace yet first gets one for
 * min(n, 256) samples. The workspace is overwritten, so the model is needed exclusively.
 *
 * On VAE_OK every value written is finite. Parameters that make a layer overflow (finite
 * but huge weights) give VAE_ERR_NUMERIC instead, naming the first bad value; the output
 * buffers then hold unspecified values.
 */

/**
 * @brief Encodes inputs: mu[n][latent] and logvar[n][latent] of q(z|x).
 *
 * Inputs are checked first: every value must be finite, and in [0, 1] for a Bernoulli
 * model. Runs in chunks of the workspace's batch size; allocates only when the model has
 * no workspace yet (one for min(n, 256) samples).
 * @param[in,out] m      A built model; its workspace is overwritten.
 * @param[in]     x      Inputs, n * input_dim floats.
 * @param[in]     n      Number of samples; at least 1.
 * @param[out]    mu     Receives the posterior means, n * latent_dim floats.
 * @param[out]    logvar Receives the posterior log-variances, n * latent_dim floats.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID m, x, mu or logvar is NULL, n is 0, or a Bernoulli input lies
 *                         outside [0, 1].
 * @retval VAE_ERR_STATE   the model is not built.
 * @retval VAE_ERR_NUMERIC an input is NaN or infinite, or an output overflowed.
 * @retval VAE_ERR_NOMEM   allocating the first workspace failed.
 */
VAE_API int vae_model_encode(vae_model *m, const float *x, size_t n, float *mu,
                             float *logvar);
/**
 * @brief Decodes latent codes: out[n][input_dim] holds the mean of p(x|z).
 *
 * That is the probabilities sigmoid(logits) for a Bernoulli model and the means for a
 * Gaussian one. Chunks and allocation as vae_model_encode().
 * @param[in,out] m   A built model; its workspace is overwritten.
 * @param[in]     z   Latent codes, n * latent_dim floats.
 * @param[in]     n   Number of codes; at least 1.
 * @param[out]    out Receives n * input_dim floats.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID m, z or out is NULL, or n is 0.
 * @retval VAE_ERR_STATE   the model is not built.
 * @retval VAE_ERR_NUMERIC a value of z is NaN or infinite, or an output overflowed.
 * @retval VAE_ERR_NOMEM   allocating the first workspace failed.
 */
VAE_API int vae_model_decode(vae_model *m, const float *z, size_t n, float *out);
/**
 * @brief Decodes n draws of z ~ N(0, I) from the prior.
 *
 * Writes the mean of p(x|z) as vae_model_decode() does (probabilities, not binary samples,
 * for a Bernoulli model). Chunks and allocation as vae_model_encode().
 * @param[in,out] m   A built model; its workspace is overwritten.
 * @param[in,out] rng The generator the codes are drawn from; its state advances.
 * @param[in]     n   Number of samples; at least 1.
 * @param[out]    out Receives n * input_dim floats.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID m, rng or out is NULL, or n is 0.
 * @retval VAE_ERR_STATE   the model is not built.
 * @retval VAE_ERR_NUMERIC an output overflowed.
 * @retval VAE_ERR_NOMEM   allocating the first workspace failed.
 */
VAE_API int vae_model_sample(vae_model *m, vae_rng *rng, size_t n, float *out);
/**
 * @brief Reconstructs inputs from their posterior mean: out = decode(mu(x)).
 *
 * Deterministic (no noise). Input checks as vae_model_encode(), output as
 * vae_model_decode(), chunks and allocation as vae_model_encode().
 * @param[in,out] m   A built model; its workspace is overwritten.
 * @param[in]     x   Inputs, n * input_dim floats.
 * @param[in]     n   Number of samples; at least 1.
 * @param[out]    out Receives n * input_dim floats.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID m, x or out is NULL, n is 0, or a Bernoulli input lies outside
 *                         [0, 1].
 * @retval VAE_ERR_STATE   the model is not built.
 * @retval VAE_ERR_NUMERIC an input is NaN or infinite, or an output overflowed.
 * @retval VAE_ERR_NOMEM   allocating the first workspace failed.
 */
VAE_API int vae_model_reconstruct(vae_model *m, const float *x, size_t n, float *out);

/** @} */

/* ------------------------------------------------------------------------ */
/* Objective                                                                 */
/* ------------------------------------------------------------------------ */

/**
 * @defgroup objective Objective
 * @brief The negative ELBO of a batch and its gradient through the reparameterization.
 *
 * Derivations in docs/math.md, sections 3 to 6.
 * @{
 */

/** @brief Objectives. Values are part of the ABI. */
enum {
    VAE_OBJECTIVE_ELBO = 0,       /**< -ELBO with reparameterized z */
    VAE_OBJECTIVE_AUTOENCODER = 1 /**< z = mu, no KL: a plain autoencoder */
};

/**
 * @brief Settings of the objective: the KL weight beta and the objective kind.
 *
 * Opaque. Created by vae_elbo_create(), released by vae_elbo_free(). Holds no model
 * state, so one objective can serve several models (one thread at a time).
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
 * @brief Sets the weight of the KL term (beta-VAE, KL warm-up).
 *
 * Takes effect at the next call that uses the objective, so it may change between steps.
 * @param[in,out] e    The objective.
 * @param[in]     beta The weight; finite and >= 0.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID e is NULL, or beta is negative, infinite or NaN.
 */
VAE_API int vae_elbo_set_beta(vae_elbo *e, float beta);
/**
 * @brief Chooses between the VAE objective and a plain autoencoder.
 * @param[in,out] e         The objective.
 * @param[in]     objective VAE_OBJECTIVE_ELBO (the default) or VAE_OBJECTIVE_AUTOENCODER.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID e is NULL, or the objective is unknown.
 */
VAE_API int vae_elbo_set_objective(vae_elbo *e, int objective);

/**
 * @brief One training step's loss and gradient.
 *
 * With per-sample recon_i = -log p(x_i|z_i) (nats, constants included) and
 * kl_i = KL(q(z|x_i) || N(0, I)): `*recon` = mean recon_i, `*kl` = mean kl_i,
 * `*loss` = `*recon` + beta * `*kl`. The gradient of `*loss` is ADDED to the model's
 * gradient slab (zero it between steps: vae_optimizer_step() does).
 * z = mu + exp(logvar/2) * eps, with eps[batch][latent] taken from `eps` when it is not
 * NULL, else drawn from `rng`. With VAE_OBJECTIVE_AUTOENCODER, z = mu, the KL term is 0,
 * and eps and rng are not used.
 *
 * Allocates only when batch exceeds the workspace (see vae_model_reserve()). On any
 * failure the gradient slab and the output values are left untouched (rng may have
 * advanced).
 * @param[in]     e     The objective.
 * @param[in,out] m     A built model; its workspace is overwritten and its gradient slab
 *                      added to.
 * @param[in]     x     Inputs, batch * input_dim floats: finite, and in [0, 1] for a
 *                      Bernoulli model.
 * @param[in]     batch Number of samples; at least 1.
 * @param[in]     eps   Noise, batch * latent_dim finite floats, or NULL to draw it from rng.
 * @param[in,out] rng   Generator for the noise when eps is NULL (its state advances);
 *                      may be NULL when eps is given or the objective is
 *                      VAE_OBJECTIVE_AUTOENCODER.
 * @param[out]    loss  Receives the mean loss; may be NULL.
 * @param[out]    recon Receives the mean reconstruction term; may be NULL.
 * @param[out]    kl    Receives the mean KL term; may be NULL.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID e, m or x is NULL; batch is 0; eps and rng are both NULL with
 *                         the ELBO objective; a Bernoulli input lies outside [0, 1]; or
 *                         batch is too large for the model.
 * @retval VAE_ERR_STATE   the model is not built.
 * @retval VAE_ERR_NUMERIC an input or noise value is not finite, exp(logvar) overflows, or
 *                         the loss is not finite.
 * @retval VAE_ERR_NOMEM   growing the workspace failed.
 */
VAE_API int vae_elbo_forward_backward(vae_elbo *e, vae_model *m, const float *x, size_t batch,
                                      const float *eps, vae_rng *rng, double *loss,
                                      double *recon, double *kl);
/**
 * @brief The same losses as vae_elbo_forward_backward(), without gradients.
 *
 * per_sample[i] gets recon_i + beta * kl_i, the loss of sample i (an anomaly score). The
 * noise is used as in vae_elbo_forward_backward(); the gradient slab is not touched.
 * Allocates only when batch exceeds the workspace. On failure the outputs are not set,
 * except that per_sample may be partly written.
 * @param[in]     e          The objective.
 * @param[in,out] m          A built model; its workspace is overwritten.
 * @param[in]     x          Inputs, batch * input_dim floats: finite, and in [0, 1] for a
 *                           Bernoulli model.
 * @param[in]     batch      Number of samples; at least 1.
 * @param[in]     eps        Noise, batch * latent_dim finite floats, or NULL to draw it
 *                           from rng.
 * @param[in,out] rng        Generator for the noise when eps is NULL; may be NULL when eps
 *                           is given or the objective is VAE_OBJECTIVE_AUTOENCODER.
 * @param[out]    loss       Receives the mean loss; may be NULL.
 * @param[out]    recon      Receives the mean reconstruction term; may be NULL.
 * @param[out]    kl         Receives the mean KL term; may be NULL.
 * @param[out]    per_sample Receives batch per-sample losses; may be NULL.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID e, m or x is NULL; batch is 0; eps and rng are both NULL with
 *                         the ELBO objective; a Bernoulli input lies outside [0, 1]; or
 *                         batch is too large for the model.
 * @retval VAE_ERR_STATE   the model is not built.
 * @retval VAE_ERR_NUMERIC an input or noise value is not finite, exp(logvar) overflows, or
 *                         the loss is not finite.
 * @retval VAE_ERR_NOMEM   growing the workspace failed.
 */
VAE_API int vae_elbo_evaluate(vae_elbo *e, vae_model *m, const float *x, size_t batch,
                              const float *eps, vae_rng *rng, double *loss, double *recon,
                              double *kl, double *per_sample);

/** @} */

/* ------------------------------------------------------------------------ */
/* Optimizers                                                                */
/* ------------------------------------------------------------------------ */

/**
 * @defgroup optimizers Optimizers
 * @brief SGD and Adam/AdamW over a model's parameter slab, with optional gradient clipping.
 *
 * The arithmetic follows PyTorch's torch.optim.SGD and torch.optim.Adam / AdamW
 * (docs/math.md, section 10).
 * @{
 */

/**
 * @brief An optimizer with its state (Adam's m and v, SGD's momentum buffer).
 *
 * Opaque. Created by vae_optimizer_adam_create() or vae_optimizer_sgd_create(), released
 * by vae_optimizer_free(). Its state belongs to the first model it steps, so use one
 * optimizer per model (see vae_optimizer_step()).
 */
typedef struct vae_optimizer vae_optimizer;

/**
 * @brief Creates an Adam optimizer; weight_decay > 0 makes it AdamW.
 *
 * The decay is decoupled: p -= lr * wd * p before the Adam update. PyTorch's defaults are
 * lr 1e-3, betas 0.9/0.999, eps 1e-8. The state is allocated at the first step.
 * @param[out] out          Receives the new optimizer, owned by the caller (free it with
 *                          vae_optimizer_free()); set to NULL on failure.
 * @param[in]  lr           Learning rate; finite and > 0.
 * @param[in]  beta1        Decay of the first moment; in [0, 1).
 * @param[in]  beta2        Decay of the second moment; in [0, 1).
 * @param[in]  eps          Added to the denominator; finite and > 0.
 * @param[in]  weight_decay Decoupled weight decay; finite and >= 0 (0 for plain Adam).
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID out is NULL, or a value is out of its range.
 * @retval VAE_ERR_NOMEM   the allocation failed.
 */
VAE_API int vae_optimizer_adam_create(vae_optimizer **out, float lr, float beta1, float beta2,
                                      float eps, float weight_decay);
/**
 * @brief Creates an SGD optimizer with optional momentum, Nesterov and L2 weight decay.
 *
 * As PyTorch (dampening 0): weight_decay * p is added to the gradient g; with momentum,
 * buf = momentum * buf + g (buf = g at the first step) and the update uses buf, or
 * g + momentum * buf with Nesterov. The momentum buffer, if any, is allocated at the first
 * step.
 * @param[out] out          Receives the new optimizer, owned by the caller (free it with
 *                          vae_optimizer_free()); set to NULL on failure.
 * @param[in]  lr           Learning rate; finite and > 0.
 * @param[in]  momentum     Momentum; in [0, 1), 0 for none.
 * @param[in]  nesterov     Nonzero for Nesterov momentum (needs momentum > 0).
 * @param[in]  weight_decay L2 weight decay; finite and >= 0.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID out is NULL, a value is out of its range, or nesterov is set with
 *                         momentum 0.
 * @retval VAE_ERR_NOMEM   the allocation failed.
 */
VAE_API int vae_optimizer_sgd_create(vae_optimizer **out, float lr, float momentum,
                                     int nesterov, float weight_decay);
/**
 * @brief Frees an optimizer and its state.
 * @param[in] opt The optimizer to free; NULL is ignored.
 */
VAE_API void vae_optimizer_free(vae_optimizer *opt);
/**
 * @brief Changes the learning rate (for a schedule); takes effect at the next step.
 * @param[in,out] opt The optimizer.
 * @param[in]     lr  The new learning rate; finite and > 0.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID opt is NULL, or lr is not finite and > 0.
 */
VAE_API int vae_optimizer_set_lr(vae_optimizer *opt, float lr);
/**
 * @brief Clips the gradient's global L2 norm.
 *
 * At each step, when the L2 norm of the whole gradient slab exceeds max_norm, the gradient
 * is scaled by max_norm / (norm + 1e-6) before the update (the slab itself is not
 * rescaled).
 * @param[in,out] opt      The optimizer.
 * @param[in]     max_norm The largest norm allowed; 0 (the default) disables clipping.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID opt is NULL, or max_norm is negative, infinite or NaN.
 */
VAE_API int vae_optimizer_set_clip_norm(vae_optimizer *opt, float max_norm);
/**
 * @brief Updates the model's parameters from its gradient slab, then zeroes the gradients.
 *
 * The optimizer binds to the first model it steps and allocates its state then (two
 * floats per parameter for Adam, one for SGD with momentum, none for plain SGD); later
 * steps do not allocate. Stepping another model gives VAE_ERR_STATE, also when it is a
 * new model that happens to occupy a freed model's memory. A model follows the last
 * optimizer that bound it: once another optimizer has stepped it, the first one gives
 * VAE_ERR_STATE on it. A non-finite gradient gives VAE_ERR_NUMERIC and leaves parameters, state
 * and gradients untouched; every other failure also leaves them untouched.
 * @param[in,out] opt The optimizer; its state advances.
 * @param[in,out] m   A built model: its parameters are updated and its gradients zeroed.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID opt or m is NULL.
 * @retval VAE_ERR_STATE   the model is not built, the optimizer holds state for another
 *                         model, or another optimizer has stepped this model since.
 * @retval VAE_ERR_NUMERIC a gradient is NaN or infinite.
 * @retval VAE_ERR_NOMEM   allocating the state at the first step failed.
 */
VAE_API int vae_optimizer_step(vae_optimizer *opt, vae_model *m);

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
 * file may be gzip-compressed (detected from its first bytes, not its name). Pixels stay
 * uint8 in memory and become floats in [0, 1] (p / 255) per batch; labels (0 to 255)
 * become int32. Nothing is allocated from an unchecked header: the buffer grows as data
 * arrives. The format is specified in docs/format.md.
 * @param[out] out         Receives the new dataset, owned by the caller (free it with
 *                         vae_dataset_free()); set to NULL on failure.
 * @param[in]  images_path Path of the image file.
 * @param[in]  labels_path Path of the label file, or NULL for none.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID out or images_path is NULL.
 * @retval VAE_ERR_IO      a file cannot be opened or read.
 * @retval VAE_ERR_FORMAT  (the message names the file and the problem) a wrong magic, a
 *                         truncated file or data past the announced end, corrupt gzip data,
 *                         a zero or absurd dimension (more than 2^31 samples or 2^24 values
 *                         per sample), or label and image counts that differ.
 * @retval VAE_ERR_NOMEM   an allocation failed.
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
/* Training loop                                                             */
/* ------------------------------------------------------------------------ */

/**
 * @defgroup training Training and evaluation
 * @brief Epochs over a dataset, whole-dataset losses and the importance-sampled
 *        log-likelihood.
 * @{
 */

/**
 * @brief Progress callback of vae_train_epoch(), called after every optimizer step.
 *
 * Runs on the calling thread between two steps, when the parameters are consistent and
 * the gradients zero: it may for instance save the model, or change the learning rate or
 * beta. It must not free any object the epoch uses.
 * @param[in] payload      vae_train_options::payload, passed through.
 * @param[in] done         Samples processed so far in this epoch.
 * @param[in] total        Samples in the epoch.
 * @param[in] running_loss Mean loss per sample so far in this epoch.
 * @return 0 to continue; nonzero stops the epoch, which then returns VAE_ERR_CANCELLED.
 */
typedef int (*vae_progress_fn)(void *payload, size_t done, size_t total, double running_loss);

/**
 * @brief Options of vae_train_epoch(); fill with vae_train_options_init().
 *
 * Set the fields to change after the init call. vae_train_epoch() rejects a size smaller
 * than sizeof(vae_train_options) (VAE_ERR_INVALID).
 */
typedef struct vae_train_options {
    size_t size;            /**< sizeof(vae_train_options), set by init */
    size_t batch_size;      /**< default 128, at most 2^20; the last batch may be smaller */
    int shuffle;            /**< default 1: a fresh permutation from rng */
    int binarize;           /**< default 0: dynamic binarization of each batch */
    vae_progress_fn progress; /**< default NULL */
    void *payload;          /**< passed to progress */
} vae_train_options;

/**
 * @brief Fills opts with the defaults and sets opts->size.
 * @param[out] opts The options to fill; NULL is ignored.
 */
VAE_API void vae_train_options_init(vae_train_options *opts);

/** What one pass over a dataset measured; set size = sizeof before the call. */
typedef struct vae_epoch_stats {
    size_t size;            /**< sizeof(vae_epoch_stats), set by the caller */
    double loss;            /**< mean over samples of recon + beta * kl */
    double recon;           /**< mean -log p(x|z), nats per sample */
    double kl;              /**< mean KL(q(z|x) || p(z)), nats per sample */
    double seconds;         /**< wall-clock time of the pass */
    size_t samples;         /**< samples seen */
    size_t steps;           /**< optimizer steps taken */
} vae_epoch_stats;

/**
 * @brief One epoch of training over a dataset.
 *
 * For each minibatch: vae_dataset_batch(), vae_elbo_forward_backward() then
 * vae_optimizer_step(). Shuffling, binarization and the noise come from rng, in that
 * order. The workspace is grown to the batch size at the start and two buffers are
 * allocated once per call, so the steps do not allocate (apart from the optimizer's state
 * at its very first step). A step that fails
 * (VAE_ERR_NUMERIC, for example) ends the epoch with its status; the parameters keep the
 * last good step and the gradient slab is zeroed. stats, when given, is filled even when
 * the epoch stops early, with what was done; only the fields that fit in stats->size are
 * written.
 * @param[in,out] m     A built model; its parameters are trained.
 * @param[in]     e     The objective.
 * @param[in,out] opt   The optimizer of this model.
 * @param[in]     ds    The training data; dim must equal the model's input_dim.
 * @param[in,out] rng   The generator; its state advances.
 * @param[in]     opts  Options, or NULL for the defaults of vae_train_options_init().
 * @param[out]    stats Receives the measurements, or NULL; its size field must be set.
 * @retval VAE_OK            success.
 * @retval VAE_ERR_INVALID   m, e, opt, ds or rng is NULL; opts->size is smaller than
 *                           sizeof(vae_train_options); stats->size is too small to hold
 *                           the loss; batch_size is 0 or above 2^20; or a Bernoulli
 *                           model meets a value outside [0, 1].
 * @retval VAE_ERR_SHAPE     the dataset's dim differs from the model's input_dim.
 * @retval VAE_ERR_STATE     the model is not built, or the optimizer holds state for
 *                           another model.
 * @retval VAE_ERR_NUMERIC   a step met a non-finite value or loss.
 * @retval VAE_ERR_CANCELLED the progress callback returned nonzero.
 * @retval VAE_ERR_NOMEM     an allocation failed.
 */
VAE_API int vae_train_epoch(vae_model *m, vae_elbo *e, vae_optimizer *opt,
                            const vae_dataset *ds, vae_rng *rng,
                            const vae_train_options *opts, vae_epoch_stats *stats);
/**
 * @brief Mean loss, reconstruction and KL over a whole dataset.
 *
 * Runs vae_elbo_evaluate() over the samples in order (not binarized), in batches of
 * batch_size; the gradient slab is not touched. Allocates one batch buffer per call and
 * grows the workspace to the batch size if needed. On failure the outputs are not set,
 * except that per_sample may be partly written.
 * @param[in,out] m          A built model; its workspace is overwritten.
 * @param[in]     e          The objective.
 * @param[in]     ds         The data; dim must equal the model's input_dim.
 * @param[in,out] rng        Generator for the noise; may be NULL only with
 *                           VAE_OBJECTIVE_AUTOENCODER.
 * @param[in]     batch_size Samples per batch, 1 to 2^20.
 * @param[out]    loss       Receives the mean loss; may be NULL.
 * @param[out]    recon      Receives the mean reconstruction term; may be NULL.
 * @param[out]    kl         Receives the mean KL term; may be NULL.
 * @param[out]    per_sample Receives vae_dataset_count() per-sample losses; may be NULL.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID m, e or ds is NULL, batch_size is 0 or above 2^20, rng is NULL
 *                         with the ELBO objective, or a Bernoulli model meets a value
 *                         outside [0, 1].
 * @retval VAE_ERR_SHAPE   the dataset's dim differs from the model's input_dim.
 * @retval VAE_ERR_STATE   the model is not built.
 * @retval VAE_ERR_NUMERIC a value or loss is not finite.
 * @retval VAE_ERR_NOMEM   an allocation failed.
 */
VAE_API int vae_evaluate_dataset(vae_model *m, vae_elbo *e, const vae_dataset *ds,
                                 vae_rng *rng, size_t batch_size, double *loss,
                                 double *recon, double *kl, double *per_sample);
/**
 * @brief Importance-sampled log-likelihood of each input.
 *
 * out_per_sample[i] = log (1/k) sum_k p(x_i|z_k) p(z_k) / q(z_k|x_i), z_k ~ q(z|x_i), in
 * nats, computed with log-sum-exp in double (docs/math.md, section 11). It is a lower
 * bound of log p(x_i) in expectation that tightens as k grows; k = 1 gives an estimate of
 * the ELBO. The k codes of one sample are decoded in chunks of the workspace's batch size
 * (a model with no workspace yet first gets one for min(k, 256) codes). Allocates k
 * doubles per call. On VAE_ERR_NUMERIC the results up to and including the failing sample
 * are written and the later ones are not.
 * @param[in,out] m              A built model; its workspace is overwritten.
 * @param[in]     x              Inputs, n * input_dim floats: finite, and in [0, 1] for a
 *                               Bernoulli model.
 * @param[in]     n              Number of samples; at least 1.
 * @param[in]     k              Importance samples per input, 1 to 2^30.
 * @param[in,out] rng            Generator of the codes; its state advances.
 * @param[out]    out_per_sample Receives n log-likelihoods.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID m, x, rng or out_per_sample is NULL, n or k is 0, k is too
 *                         large, or a Bernoulli input lies outside [0, 1].
 * @retval VAE_ERR_STATE   the model is not built.
 * @retval VAE_ERR_NUMERIC an input or a result is not finite.
 * @retval VAE_ERR_NOMEM   an allocation failed.
 */
VAE_API int vae_model_log_likelihood(vae_model *m, const float *x, size_t n, size_t k,
                                     vae_rng *rng, double *out_per_sample);

/** @} */

/* ------------------------------------------------------------------------ */
/* Model files (docs/format.md)                                              */
/* ------------------------------------------------------------------------ */

/**
 * @defgroup model_files Model files
 * @brief Saving and loading a built model: architecture and parameters, CRC-32 checked.
 *
 * A model file holds the likelihood, the Gaussian sigma, every layer's kind, activation
 * and geometry, and the parameter slab, little-endian, so files are byte-identical across
 * machines. It holds nothing about training: no gradients, optimizer state, generator
 * state, objective settings or workspace size. Specification in docs/format.md.
 * @{
 */

/**
 * @brief Writes the architecture and parameters to `path` atomically.
 *
 * Writes a temporary file `path.XXXXXX` in the same directory, flushes it to disk, gives
 * it mode 0644, renames it over the target and flushes the directory: `path` holds either
 * its old contents or the complete new file, never a partial one. The temporary file is
 * removed on failure.
 * Allocates a buffer of the file's size. Does not modify the model.
 * @param[in] m    A built model.
 * @param[in] path Destination path.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID m or path is NULL, or path is empty.
 * @retval VAE_ERR_STATE   the model is not built.
 * @retval VAE_ERR_IO      the temporary file cannot be created, written, flushed or
 *                         renamed.
 * @retval VAE_ERR_NOMEM   an allocation failed.
 */
VAE_API int vae_model_save(const vae_model *m, const char *path);
/**
 * @brief Reads a model written by vae_model_save().
 *
 * The new model is built, with the parameters from the file, zero gradients and no
 * workspace yet. Every field is checked before it is used (docs/format.md lists the
 * checks): a damaged file never makes the reader read out of bounds or allocate more than
 * the file can hold.
 * @param[out] out  Receives the new model, owned by the caller (free it with
 *                  vae_model_free()); set to NULL on failure.
 * @param[in]  path Path of the model file.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID out or path is NULL.
 * @retval VAE_ERR_IO      the file cannot be opened or read, or is not a regular file.
 * @retval VAE_ERR_FORMAT  the file is damaged, truncated, of another format version, or
 *                         describes an impossible model (the message says what). Some
 *                         allocation failures while rebuilding the layers are reported
 *                         with this code too.
 * @retval VAE_ERR_NOMEM   an allocation failed.
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
 */
VAE_API int vae_model_save_mem(const vae_model *m, void *buf, size_t cap, size_t *size);
/**
 * @brief Reads a model from the bytes of a model file in memory.
 *
 * Same checks and result as vae_model_load(). The buffer is read during the call only.
 * @param[out] out  Receives the new model, owned by the caller (free it with
 *                  vae_model_free()); set to NULL on failure.
 * @param[in]  buf  The bytes of a model file.
 * @param[in]  size Number of bytes in buf.
 * @retval VAE_OK          success.
 * @retval VAE_ERR_INVALID out or buf is NULL.
 * @retval VAE_ERR_FORMAT  the bytes are damaged, truncated, of another format version, or
 *                         describe an impossible model (the message says what). Some
 *                         allocation failures while rebuilding the layers are reported
 *                         with this code too.
 * @retval VAE_ERR_NOMEM   an allocation failed.
 */
VAE_API int vae_model_load_mem(vae_model **out, const void *buf, size_t size);

/** @} */

#ifdef __cplusplus
}
#endif

#endif /* VAE_VAE_H */
