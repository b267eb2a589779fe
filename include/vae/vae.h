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
#ifndef VAE_VAE_H
#define VAE_VAE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

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

#define VAE_VERSION_MAJOR 0
#define VAE_VERSION_MINOR 1
#define VAE_VERSION_PATCH 0
/** MAJOR*10000 + MINOR*100 + PATCH, so 0.1.0 is 100. */
#define VAE_VERSION_NUMBER \
    (VAE_VERSION_MAJOR * 10000 + VAE_VERSION_MINOR * 100 + VAE_VERSION_PATCH)

/** Version of the library actually loaded, same encoding as VAE_VERSION_NUMBER. */
VAE_API unsigned vae_version_number(void);
/** "MAJOR.MINOR.PATCH" of the library actually loaded; static storage. */
VAE_API const char *vae_version_string(void);

/* ------------------------------------------------------------------------ */
/* Status codes: values are part of the ABI and never renumbered.            */
/* ------------------------------------------------------------------------ */

enum {
    VAE_OK = 0,
    VAE_ERR_INVALID = -1,   /**< bad argument: NULL, zero size, out of range */
    VAE_ERR_SHAPE = -2,     /**< sizes do not fit together */
    VAE_ERR_NOMEM = -3,     /**< an allocation failed */
    VAE_ERR_IO = -4,        /**< a file could not be opened, read or written */
    VAE_ERR_FORMAT = -5,    /**< a file or buffer is not in the expected format */
    VAE_ERR_NUMERIC = -6,   /**< a NaN or infinity in input, loss or gradient */
    VAE_ERR_STATE = -7,     /**< call out of order (e.g. train before build) */
    VAE_ERR_CANCELLED = -8  /**< a callback asked to stop */
};

/** Static English description of a status code; never NULL. */
VAE_API const char *vae_strerror(int status);
/**
 * Detailed message of the last failure on the calling thread, e.g.
 * "vae_model_build: decoder layer 1 expects 400 inputs, previous layer gives 300".
 * Empty string when nothing failed yet. Valid until the next failing call on
 * this thread.
 */
VAE_API const char *vae_last_error(void);

/* ------------------------------------------------------------------------ */
/* Random numbers                                                            */
/* ------------------------------------------------------------------------ */

typedef struct vae_rng vae_rng;

/** A seeded generator (xoshiro256**); the same seed gives the same stream. */
VAE_API int vae_rng_create(vae_rng **out, uint64_t seed);
VAE_API void vae_rng_free(vae_rng *rng);
/** n independent standard normal draws. VAE_ERR_INVALID on NULL. */
VAE_API int vae_rng_normal(vae_rng *rng, float *out, size_t n);
/** n independent uniform draws in [0, 1). VAE_ERR_INVALID on NULL. */
VAE_API int vae_rng_uniform(vae_rng *rng, float *out, size_t n);

/* ------------------------------------------------------------------------ */
/* Layers                                                                    */
/* ------------------------------------------------------------------------ */

/** Activations fused into a layer. Values are part of the ABI. */
enum {
    VAE_ACT_IDENTITY = 0,
    VAE_ACT_RELU = 1,
    VAE_ACT_LEAKY_RELU = 2, /**< slope 0.01 for negative inputs */
    VAE_ACT_TANH = 3,
    VAE_ACT_SIGMOID = 4,
    VAE_ACT_SOFTPLUS = 5,   /**< log(1 + e^x) */
    VAE_ACT_ELU = 6         /**< alpha 1 */
};

typedef struct vae_layer vae_layer;

/**
 * A dense layer y = act(x W^T + b), W stored W[out][in] row-major then b[out].
 * A new layer's parameters are zero; vae_layer_init() draws them (a model
 * draws them itself when it is built). VAE_ERR_INVALID on zero sizes or an
 * unknown activation.
 */
VAE_API int vae_layer_dense_create(vae_layer **out, size_t in, size_t out_features,
                                   int activation);
/**
 * A 2-D convolution over NCHW images, fused with an activation. Each sample
 * is a flat [in_channels][in_h][in_w] vector in, [out_channels][out_h][out_w]
 * out, with out_h = (in_h + 2 padding - kernel_h) / stride + 1 (rounded down;
 * likewise out_w), as PyTorch's Conv2d, so a dense layer can follow directly.
 * Parameters: W[out_channels][in_channels][kernel_h][kernel_w] then
 * b[out_channels]. VAE_ERR_INVALID on zero sizes, VAE_ERR_SHAPE when the
 * kernel does not fit the padded input (the message gives the sizes).
 */
VAE_API int vae_layer_conv2d_create(vae_layer **out, size_t in_channels, size_t in_h,
                                    size_t in_w, size_t out_channels, size_t kernel_h,
                                    size_t kernel_w, size_t stride, size_t padding,
                                    int activation);
/**
 * The transposed convolution (the adjoint of Conv2D with the same geometry),
 * as PyTorch's ConvTranspose2d: out_h = (in_h - 1) stride - 2 padding +
 * kernel_h + output_padding, likewise out_w. Parameters:
 * W[in_channels][out_channels][kernel_h][kernel_w] then b[out_channels].
 * VAE_ERR_SHAPE when output_padding >= stride or the output would be empty.
 */
VAE_API int vae_layer_conv2d_transpose_create(vae_layer **out, size_t in_channels, size_t in_h,
                                              size_t in_w, size_t out_channels, size_t kernel_h,
                                              size_t kernel_w, size_t stride, size_t padding,
                                              size_t output_padding, int activation);
/** Frees a layer the caller still owns. Never free a layer a model owns. */
VAE_API void vae_layer_free(vae_layer *layer);
/** Draws weights and biases uniform in +-1/sqrt(fan_in) (PyTorch's default). */
VAE_API int vae_layer_init(vae_layer *layer, vae_rng *rng);
/**
 * y[batch][out] = layer(x[batch][in]). The layer keeps copies of x and y for
 * a following vae_layer_backward(). Works on a standalone layer only: a layer
 * that belongs to a model is driven by the model (VAE_ERR_STATE).
 */
VAE_API int vae_layer_forward(vae_layer *layer, const float *x, size_t batch, float *y);
/**
 * Backward pass of the last vae_layer_forward(): adds dL/dW and dL/db into
 * the layer's gradients and, when dx is not NULL, writes dx[batch][in].
 * dy[batch][out] is not modified. VAE_ERR_STATE without a previous forward.
 */
VAE_API int vae_layer_backward(vae_layer *layer, const float *dy, float *dx);
/** Borrowed pointer to the parameters (W then b) and their count. NULL on NULL. */
VAE_API float *vae_layer_params(vae_layer *layer, size_t *count);
/** Borrowed pointer to the gradients, same layout as the parameters. */
VAE_API float *vae_layer_grads(vae_layer *layer, size_t *count);
/** Input features per sample; 0 on NULL. */
VAE_API size_t vae_layer_input_size(const vae_layer *layer);
/** Output features per sample; 0 on NULL. */
VAE_API size_t vae_layer_output_size(const vae_layer *layer);

/* ------------------------------------------------------------------------ */
/* Models                                                                    */
/* ------------------------------------------------------------------------ */

/** Decoder likelihoods. Values are part of the ABI. */
enum {
    VAE_LIKELIHOOD_BERNOULLI = 0, /**< decoder outputs logits; x in [0, 1] */
    VAE_LIKELIHOOD_GAUSSIAN = 1   /**< decoder outputs means; fixed sigma */
};

typedef struct vae_model vae_model;

/**
 * An empty model: add encoder and decoder layers, then vae_model_build().
 * VAE_ERR_INVALID on zero dimensions or an unknown likelihood.
 */
VAE_API int vae_model_create(vae_model **out, size_t input_dim, size_t latent_dim,
                             int likelihood);
/** Frees the model and every layer it owns. */
VAE_API void vae_model_free(vae_model *m);
/**
 * Appends a layer to the encoder (resp. decoder). On success the model owns
 * the layer; on failure the caller still does. VAE_ERR_STATE after build.
 */
VAE_API int vae_model_add_encoder_layer(vae_model *m, vae_layer *layer);
VAE_API int vae_model_add_decoder_layer(vae_model *m, vae_layer *layer);
/**
 * Checks every shape (VAE_ERR_SHAPE naming the layer), appends the Gaussian
 * head (dense, identity, producing [mu | logvar]), allocates the parameter and
 * gradient slabs and draws the weights from `seed`. VAE_ERR_STATE if built.
 */
VAE_API int vae_model_build(vae_model *m, uint64_t seed);
/**
 * Convenience: a built symmetric MLP VAE. Encoder input_dim -> hidden[0] ->
 * ... -> hidden[n-1] -> head; decoder latent -> hidden[n-1] -> ... ->
 * hidden[0] -> input_dim (identity output). 784-400-20 is hidden = {400}.
 */
VAE_API int vae_model_create_mlp(vae_model **out, size_t input_dim, const size_t *hidden,
                                 size_t n_hidden, size_t latent_dim, int activation,
                                 int likelihood, uint64_t seed);
/**
 * Grows the workspace for batches up to max_batch, so that training steps up
 * to that size never allocate. Larger batches grow it on demand.
 */
VAE_API int vae_model_reserve(vae_model *m, size_t max_batch);
/** Sigma of the Gaussian likelihood (default 1). VAE_ERR_INVALID unless > 0. */
VAE_API int vae_model_set_gaussian_sigma(vae_model *m, float sigma);

VAE_API size_t vae_model_input_dim(const vae_model *m);
VAE_API size_t vae_model_latent_dim(const vae_model *m);
/** VAE_LIKELIHOOD_*, or -1 on NULL. */
VAE_API int vae_model_likelihood(const vae_model *m);

/**
 * The parameter slab and its length in floats (NULL before build). Layout:
 * encoder layers in order, then the head, then decoder layers; each dense
 * layer is W[out][in] row-major then b[out]. The head has 2*latent_dim
 * outputs: rows 0..latent_dim-1 give mu, the next latent_dim rows give logvar.
 * Writable: parameters may be set through it.
 */
VAE_API float *vae_model_params(vae_model *m, size_t *count);
/** The gradient slab: same length and layout as the parameters. */
VAE_API float *vae_model_grads(vae_model *m, size_t *count);
/** Sets every gradient to zero. */
VAE_API int vae_model_zero_grads(vae_model *m);

/* Inference. n is any batch size; the workspace grows as needed. */

/** mu[n][latent] and logvar[n][latent] of q(z|x). */
VAE_API int vae_model_encode(vae_model *m, const float *x, size_t n, float *mu,
                             float *logvar);
/** out[n][input_dim]: probabilities (Bernoulli) or means (Gaussian) of p(x|z). */
VAE_API int vae_model_decode(vae_model *m, const float *z, size_t n, float *out);
/** Decodes n draws of z ~ N(0, I) from rng. */
VAE_API int vae_model_sample(vae_model *m, vae_rng *rng, size_t n, float *out);
/** Decodes the posterior mean of each input: decode(mu(x)). */
VAE_API int vae_model_reconstruct(vae_model *m, const float *x, size_t n, float *out);

/* ------------------------------------------------------------------------ */
/* Objective                                                                 */
/* ------------------------------------------------------------------------ */

/** Objectives. Values are part of the ABI. */
enum {
    VAE_OBJECTIVE_ELBO = 0,       /**< -ELBO with reparameterized z */
    VAE_OBJECTIVE_AUTOENCODER = 1 /**< z = mu, no KL: a plain autoencoder */
};

typedef struct vae_elbo vae_elbo;

/** Negative ELBO with beta = 1. */
VAE_API int vae_elbo_create(vae_elbo **out);
VAE_API void vae_elbo_free(vae_elbo *e);
/** Weight of the KL term (beta-VAE, warm-up). VAE_ERR_INVALID unless finite, >= 0. */
VAE_API int vae_elbo_set_beta(vae_elbo *e, float beta);
/** VAE_OBJECTIVE_ELBO (default) or VAE_OBJECTIVE_AUTOENCODER. */
VAE_API int vae_elbo_set_objective(vae_elbo *e, int objective);

/**
 * One training step's loss and gradient. With per-sample
 * recon_i = -log p(x_i|z_i) (nats, constants included) and
 * kl_i = KL(q(z|x_i) || N(0, I)): *recon = mean recon_i, *kl = mean kl_i,
 * *loss = *recon + beta * *kl. The gradient of *loss is ADDED to the model's
 * gradient slab. z = mu + exp(logvar/2) * eps, eps[batch][latent] taken from
 * `eps` when not NULL, else drawn from `rng`. Output pointers may be NULL.
 * VAE_ERR_NUMERIC on a non-finite input or loss; the gradients are then left
 * untouched. Bernoulli inputs must lie in [0, 1] (VAE_ERR_INVALID).
 */
VAE_API int vae_elbo_forward_backward(vae_elbo *e, vae_model *m, const float *x, size_t batch,
                                      const float *eps, vae_rng *rng, double *loss,
                                      double *recon, double *kl);
/**
 * The same losses without gradients; per_sample[batch] (may be NULL) gets
 * recon_i + beta * kl_i.
 */
VAE_API int vae_elbo_evaluate(vae_elbo *e, vae_model *m, const float *x, size_t batch,
                              const float *eps, vae_rng *rng, double *loss, double *recon,
                              double *kl, double *per_sample);

/* ------------------------------------------------------------------------ */
/* Optimizers                                                                */
/* ------------------------------------------------------------------------ */

typedef struct vae_optimizer vae_optimizer;

/**
 * Adam; weight_decay > 0 is decoupled (AdamW): p -= lr * wd * p before the
 * Adam update. PyTorch defaults: lr 1e-3, betas 0.9/0.999, eps 1e-8.
 */
VAE_API int vae_optimizer_adam_create(vae_optimizer **out, float lr, float beta1, float beta2,
                                      float eps, float weight_decay);
/**
 * SGD with momentum (buf = momentum*buf + g, first buf = g), optional
 * Nesterov, and L2 weight decay added to the gradient (as in PyTorch).
 */
VAE_API int vae_optimizer_sgd_create(vae_optimizer **out, float lr, float momentum,
                                     int nesterov, float weight_decay);
VAE_API void vae_optimizer_free(vae_optimizer *opt);
VAE_API int vae_optimizer_set_lr(vae_optimizer *opt, float lr);
/** Rescales the gradient to this global L2 norm when larger; 0 disables. */
VAE_API int vae_optimizer_set_clip_norm(vae_optimizer *opt, float max_norm);
/**
 * Updates the model's parameters from its gradient slab, then zeroes the
 * gradients. The optimizer binds to the first model it steps (its state has
 * that model's layout): another model gives VAE_ERR_STATE. A non-finite
 * gradient gives VAE_ERR_NUMERIC and leaves parameters, state and gradients
 * untouched.
 */
VAE_API int vae_optimizer_step(vae_optimizer *opt, vae_model *m);

/* ------------------------------------------------------------------------ */
/* Datasets                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct vae_dataset vae_dataset;

/**
 * Reads an IDX image file (MNIST's format: magic 0x00000803, uint8 pixels)
 * and, when labels_path is not NULL, the matching IDX label file (magic
 * 0x00000801). Either file may be gzip-compressed (detected from its first
 * bytes, not its name). Pixels stay uint8 in memory and become floats in
 * [0, 1] (p / 255) per batch. VAE_ERR_IO when a file cannot be read,
 * VAE_ERR_FORMAT (naming the file and the problem) for a wrong magic, a
 * truncated file, sizes that disagree with the file or with each other, or
 * absurd dimensions; nothing is allocated from an unchecked header.
 */
VAE_API int vae_dataset_load_idx(vae_dataset **out, const char *images_path,
                                 const char *labels_path);
/**
 * A dataset holding a copy of data[count][dim] (finite values; the caller's
 * buffer is not kept) and, when labels is not NULL, labels[count].
 */
VAE_API int vae_dataset_from_floats(vae_dataset **out, const float *data, size_t count,
                                    size_t dim, const int32_t *labels);
VAE_API void vae_dataset_free(vae_dataset *ds);
/** Number of samples; 0 on NULL. */
VAE_API size_t vae_dataset_count(const vae_dataset *ds);
/** Values per sample (784 for MNIST); 0 on NULL. */
VAE_API size_t vae_dataset_dim(const vae_dataset *ds);
/** Image height and width (28 x 28 for MNIST; 1 x dim for flat data). */
VAE_API int vae_dataset_image_size(const vae_dataset *ds, size_t *height, size_t *width);
/** 1 when the dataset has labels, 0 otherwise (and on NULL). */
VAE_API int vae_dataset_has_labels(const vae_dataset *ds);
/** The label of sample `index`. VAE_ERR_STATE without labels. */
VAE_API int vae_dataset_label(const vae_dataset *ds, size_t index, int32_t *label);
/** A new dataset with the samples indices[0..n-1] (repeats allowed). */
VAE_API int vae_dataset_subset(vae_dataset **out, const vae_dataset *ds, const size_t *indices,
                               size_t n);
/**
 * A new dataset with the samples whose label is `label` (keep != 0) or is not
 * (keep == 0). VAE_ERR_STATE without labels; VAE_ERR_INVALID when nothing
 * would be left.
 */
VAE_API int vae_dataset_filter_label(vae_dataset **out, const vae_dataset *ds, int32_t label,
                                     int keep);
/**
 * out[n][dim] = samples indices[0..n-1] as floats. With binarize != 0 each
 * value p becomes 1 with probability p, else 0, drawn from rng (dynamic
 * binarization).
 */
VAE_API int vae_dataset_batch(const vae_dataset *ds, const size_t *indices, size_t n,
                              int binarize, vae_rng *rng, float *out);
/** out[n][dim] = samples first..first+n-1 as floats. */
VAE_API int vae_dataset_range(const vae_dataset *ds, size_t first, size_t n, float *out);

/* ------------------------------------------------------------------------ */
/* Training loop                                                             */
/* ------------------------------------------------------------------------ */

/**
 * Called after every step with the samples done so far, the total and the
 * mean loss so far. Returning nonzero stops the epoch (VAE_ERR_CANCELLED).
 */
typedef int (*vae_progress_fn)(void *payload, size_t done, size_t total, double running_loss);

/** Options of vae_train_epoch(); fill with vae_train_options_init(). */
typedef struct vae_train_options {
    size_t size;            /**< sizeof(vae_train_options), set by init */
    size_t batch_size;      /**< default 128; the last batch may be smaller */
    int shuffle;            /**< default 1: a fresh permutation from rng */
    int binarize;           /**< default 0: dynamic binarization of each batch */
    vae_progress_fn progress; /**< default NULL */
    void *payload;          /**< passed to progress */
} vae_train_options;

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
 * One epoch: for each minibatch, vae_elbo_forward_backward() then
 * vae_optimizer_step(). Noise, shuffling and binarization come from rng.
 * opts may be NULL for the defaults; stats may be NULL. A step that fails
 * (e.g. VAE_ERR_NUMERIC) ends the epoch with its status; the parameters
 * keep the last good step.
 */
VAE_API int vae_train_epoch(vae_model *m, vae_elbo *e, vae_optimizer *opt,
                            const vae_dataset *ds, vae_rng *rng,
                            const vae_train_options *opts, vae_epoch_stats *stats);
/**
 * Mean loss, recon and KL over a whole dataset (not binarized), in batches of
 * batch_size; per_sample[count] (may be NULL) gets each sample's loss.
 * Output pointers may be NULL.
 */
VAE_API int vae_evaluate_dataset(vae_model *m, vae_elbo *e, const vae_dataset *ds,
                                 vae_rng *rng, size_t batch_size, double *loss,
                                 double *recon, double *kl, double *per_sample);
/**
 * Importance-sampled log-likelihood: out_per_sample[i] =
 * log (1/k) sum_k p(x_i|z_k) p(z_k) / q(z_k|x_i), z_k ~ q(z|x_i), in nats,
 * computed with log-sum-exp in double. k >= 1.
 */
VAE_API int vae_model_log_likelihood(vae_model *m, const float *x, size_t n, size_t k,
                                     vae_rng *rng, double *out_per_sample);

/* ------------------------------------------------------------------------ */
/* Model files (docs/format.md)                                              */
/* ------------------------------------------------------------------------ */

/**
 * Writes the architecture and parameters to `path` atomically: a temporary
 * file in the same directory, flushed, then renamed over the target.
 */
VAE_API int vae_model_save(const vae_model *m, const char *path);
/** Reads a model written by vae_model_save(); VAE_ERR_FORMAT if damaged. */
VAE_API int vae_model_load(vae_model **out, const char *path);
/**
 * The same bytes into a caller buffer: *size gets the bytes needed. With
 * buf NULL only *size is set; with cap < *size, VAE_ERR_INVALID.
 */
VAE_API int vae_model_save_mem(const vae_model *m, void *buf, size_t cap, size_t *size);
VAE_API int vae_model_load_mem(vae_model **out, const void *buf, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* VAE_VAE_H */
