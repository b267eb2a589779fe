/*
 * The declarations of vae.h (libvae 1.2.1) as plain C for FFI parsers: LuaJIT's
 * ffi.cdef, Python cffi's cdef, koffi. No preprocessor directives, no attributes;
 * the consumer provides size_t and the fixed-width integer types of <stdint.h>.
 *
 * Generated from vae.h by cmake/VaeFfiHeader.cmake: do not edit. Regenerate with
 *   cmake --build <build-dir> --target ffi-header
 */

enum {
    VAE_VERSION_MAJOR = 1,
    VAE_VERSION_MINOR = 2,
    VAE_VERSION_PATCH = 1,
    VAE_VERSION_NUMBER = 10201
};

unsigned vae_version_number(void);
const char *vae_version_string(void);

enum {
    VAE_OK = 0,
    VAE_ERR_INVALID = -1,
    VAE_ERR_SHAPE = -2,
    VAE_ERR_NOMEM = -3,
    VAE_ERR_IO = -4,
    VAE_ERR_FORMAT = -5,
    VAE_ERR_NUMERIC = -6,
    VAE_ERR_STATE = -7,
    VAE_ERR_CANCELLED = -8
};

const char *vae_strerror(int status);
const char *vae_last_error(void);

typedef struct vae_allocator {
    size_t size;
    void *(*malloc_fn)(void *payload, size_t n);
    void *(*realloc_fn)(void *payload, void *p, size_t n);
    void (*free_fn)(void *payload, void *p);
    void *payload;
} vae_allocator;

int vae_set_allocator(const vae_allocator *a);

enum {
    VAE_LIMIT_FILE_BYTES = 1,
    VAE_LIMIT_MODEL_PARAMS = 2,
    VAE_LIMIT_WORKSPACE_BYTES = 3
};

int vae_set_limit(int limit, uint64_t value);
uint64_t vae_get_limit(int limit);
size_t vae_allocations(void);

typedef struct vae_rng vae_rng;
int vae_rng_create(vae_rng **out, uint64_t seed);
void vae_rng_free(vae_rng *rng);
int vae_rng_normal(vae_rng *rng, float *out, size_t n);
int vae_rng_uniform(vae_rng *rng, float *out, size_t n);

enum {
    VAE_ACT_IDENTITY = 0,
    VAE_ACT_RELU = 1,
    VAE_ACT_LEAKY_RELU = 2,
    VAE_ACT_TANH = 3,
    VAE_ACT_SIGMOID = 4,
    VAE_ACT_SOFTPLUS = 5,
    VAE_ACT_ELU = 6
};

enum {
    VAE_LAYER_DENSE = 1,
    VAE_LAYER_CONV2D = 2,
    VAE_LAYER_CONV2D_TRANSPOSE = 3
};

enum {
    VAE_LAYER_INPUTS = 1,
    VAE_LAYER_OUTPUTS = 2,
    VAE_LAYER_PARAMS = 3,
    VAE_LAYER_IN_CHANNELS = 4,
    VAE_LAYER_IN_HEIGHT = 5,
    VAE_LAYER_IN_WIDTH = 6,
    VAE_LAYER_OUT_CHANNELS = 7,
    VAE_LAYER_OUT_HEIGHT = 8,
    VAE_LAYER_OUT_WIDTH = 9,
    VAE_LAYER_KERNEL_HEIGHT = 10,
    VAE_LAYER_KERNEL_WIDTH = 11,
    VAE_LAYER_STRIDE = 12,
    VAE_LAYER_PADDING = 13,
    VAE_LAYER_OUTPUT_PADDING = 14
};

typedef struct vae_layer vae_layer;
int vae_layer_dense_create(vae_layer **out, size_t in, size_t out_features, int activation);
int vae_layer_conv2d_create(vae_layer **out, size_t in_channels, size_t in_h, size_t in_w,
                            size_t out_channels, size_t kernel_h, size_t kernel_w, size_t stride,
                            size_t padding, int activation);
int vae_layer_conv2d_transpose_create(vae_layer **out, size_t in_channels, size_t in_h,
                                      size_t in_w, size_t out_channels, size_t kernel_h,
                                      size_t kernel_w, size_t stride, size_t padding,
                                      size_t output_padding, int activation);
void vae_layer_free(vae_layer *layer);
int vae_layer_init(vae_layer *layer, vae_rng *rng);
int vae_layer_forward(vae_layer *layer, const float *x, size_t batch, float *y);
int vae_layer_backward(vae_layer *layer, const float *dy, float *dx);
float *vae_layer_params(vae_layer *layer, size_t *count);
float *vae_layer_grads(vae_layer *layer, size_t *count);
size_t vae_layer_input_size(const vae_layer *layer);
size_t vae_layer_output_size(const vae_layer *layer);
int vae_layer_kind(const vae_layer *layer);
int vae_layer_activation(const vae_layer *layer);
int vae_layer_get_param(const vae_layer *layer, int param, size_t *value);

enum {
    VAE_LIKELIHOOD_BERNOULLI = 0,
    VAE_LIKELIHOOD_GAUSSIAN = 1,
    VAE_LIKELIHOOD_CONTINUOUS_BERNOULLI = 2
};

enum {
    VAE_MODEL_GAUSSIAN_SIGMA = 1
};

typedef struct vae_model vae_model;
int vae_model_create(vae_model **out, size_t input_dim, size_t latent_dim, int likelihood);
void vae_model_free(vae_model *m);
int vae_model_add_encoder_layer(vae_model *m, vae_layer **layer);
int vae_model_add_decoder_layer(vae_model *m, vae_layer **layer);
int vae_model_build(vae_model *m, uint64_t seed);
int vae_model_create_mlp(vae_model **out, size_t input_dim, const size_t *hidden, size_t n_hidden,
                         size_t latent_dim, int activation, int likelihood, uint64_t seed);
int vae_model_set_param(vae_model *m, int param, double value);
int vae_model_get_param(const vae_model *m, int param, double *value);
size_t vae_model_input_dim(const vae_model *m);
size_t vae_model_latent_dim(const vae_model *m);
int vae_model_likelihood(const vae_model *m);
int vae_model_is_built(const vae_model *m);
size_t vae_model_layer_count(const vae_model *m);
size_t vae_model_encoder_layer_count(const vae_model *m);
const vae_layer *vae_model_layer(const vae_model *m, size_t index);
float *vae_model_params(vae_model *m, size_t *count);
size_t vae_model_param_count(const vae_model *m);
size_t vae_model_tensor_count(const vae_model *m);
const char *vae_model_tensor_name(const vae_model *m, size_t index);
int vae_model_tensor_find(const vae_model *m, const char *name, size_t *index);
int vae_model_tensor_info(const vae_model *m, size_t index, size_t shape[4], size_t *ndim,
                          size_t *offset, size_t *count);
int vae_model_tensor_get(const vae_model *m, size_t index, float *out, size_t count);
int vae_model_tensor_set(vae_model *m, size_t index, const float *in, size_t count);

typedef struct vae_context vae_context;
int vae_context_create(vae_context **out);
void vae_context_free(vae_context *ctx);
int vae_context_set_threads(vae_context *ctx, size_t n);
size_t vae_context_threads(const vae_context *ctx);
int vae_context_reserve(vae_context *ctx, const vae_model *m, size_t max_batch);
size_t vae_blas_threads(void);
int vae_blas_set_threads(size_t n);

enum {
    VAE_OBJECTIVE_ELBO = 0,
    VAE_OBJECTIVE_AUTOENCODER = 1,
    VAE_OBJECTIVE_IWAE = 2
};

enum {
    VAE_ELBO_BETA = 1,
    VAE_ELBO_OBJECTIVE = 2,
    VAE_ELBO_SAMPLES = 3,
    VAE_ELBO_WARMUP = 4,
    VAE_ELBO_FREE_BITS = 5
};

typedef struct vae_elbo vae_elbo;
int vae_elbo_create(vae_elbo **out);
void vae_elbo_free(vae_elbo *e);
int vae_elbo_set_param(vae_elbo *e, int param, double value);
int vae_elbo_get_param(const vae_elbo *e, int param, double *value);

typedef struct vae_epoch_stats {
    size_t size;
    double loss;
    double recon;
    double kl;
    double seconds;
    size_t samples;
    size_t steps;
} vae_epoch_stats;

int vae_encode(vae_context *ctx, const vae_model *m, const float *x, size_t n, float *mu,
               float *logvar);
int vae_decode(vae_context *ctx, const vae_model *m, const float *z, size_t n, float *out);
int vae_reconstruct(vae_context *ctx, const vae_model *m, const float *x, size_t n, float *out);
int vae_sample(vae_context *ctx, const vae_model *m, vae_rng *rng, size_t n, float *out);
int vae_log_likelihood(vae_context *ctx, const vae_model *m, const float *x, size_t n, size_t k,
                       vae_rng *rng, double *out);
int vae_elbo_evaluate(vae_context *ctx, const vae_model *m, const vae_elbo *e, const float *x,
                      size_t n, const float *eps, vae_rng *rng, double *per_sample,
                      vae_epoch_stats *stats);

enum {
    VAE_ANOMALY_NEG_ELBO = 0,
    VAE_ANOMALY_NEG_LOG_LIKELIHOOD = 1,
    VAE_ANOMALY_RECON_PROB = 2,
    VAE_ANOMALY_COMPLEXITY = 3
};

int vae_anomaly_score(vae_context *ctx, const vae_model *m, const float *x, size_t n, int kind,
                      size_t k, vae_rng *rng, double *out);

enum {
    VAE_OPTIMIZER_SGD = 1,
    VAE_OPTIMIZER_ADAM = 2
};

enum {
    VAE_OPT_LR = 1,
    VAE_OPT_WEIGHT_DECAY = 2,
    VAE_OPT_CLIP_NORM = 3,
    VAE_OPT_BETA1 = 4,
    VAE_OPT_BETA2 = 5,
    VAE_OPT_EPS = 6,
    VAE_OPT_MOMENTUM = 7,
    VAE_OPT_NESTEROV = 8,
    VAE_OPT_DAMPENING = 9
};

typedef struct vae_optimizer vae_optimizer;
int vae_optimizer_create(vae_optimizer **out, int kind);
void vae_optimizer_free(vae_optimizer *opt);
int vae_optimizer_kind(const vae_optimizer *opt);
int vae_optimizer_set_param(vae_optimizer *opt, int param, double value);
int vae_optimizer_get_param(const vae_optimizer *opt, int param, double *value);

typedef struct vae_dataset vae_dataset;
int vae_dataset_load_idx(vae_dataset **out, const char *images_path, const char *labels_path);
int vae_dataset_from_floats(vae_dataset **out, const float *data, size_t count, size_t dim,
                            const int32_t *labels);
void vae_dataset_free(vae_dataset *ds);
size_t vae_dataset_count(const vae_dataset *ds);
size_t vae_dataset_dim(const vae_dataset *ds);
int vae_dataset_image_size(const vae_dataset *ds, size_t *height, size_t *width);
int vae_dataset_has_labels(const vae_dataset *ds);
int vae_dataset_label(const vae_dataset *ds, size_t index, int32_t *label);
int vae_dataset_subset(vae_dataset **out, const vae_dataset *ds, const size_t *indices, size_t n);
int vae_dataset_filter_label(vae_dataset **out, const vae_dataset *ds, int32_t label, int keep);
int vae_dataset_batch(const vae_dataset *ds, const size_t *indices, size_t n, int binarize,
                      vae_rng *rng, float *out);
int vae_dataset_range(const vae_dataset *ds, size_t first, size_t n, float *out);

typedef int (*vae_progress_fn)(void *payload, size_t done, size_t total, double running_loss);

typedef struct vae_train_options {
    size_t size;
    size_t batch_size;
    int shuffle;
    int binarize;
    vae_progress_fn progress;
    void *payload;
} vae_train_options;

int vae_train_options_init(vae_train_options *opts, size_t size);

typedef struct vae_trainer vae_trainer;
int vae_trainer_create(vae_trainer **out, vae_model *m, vae_elbo *objective, vae_optimizer *opt,
                       vae_context *ctx, uint64_t seed);
void vae_trainer_free(vae_trainer *t);
int vae_trainer_reserve(vae_trainer *t, size_t max_batch);
int vae_trainer_forward_backward(vae_trainer *t, const float *x, size_t n, const float *eps,
                                 vae_epoch_stats *stats);
int vae_trainer_apply(vae_trainer *t);
int vae_trainer_step(vae_trainer *t, const float *x, size_t n, vae_epoch_stats *stats);
int vae_trainer_train_epoch(vae_trainer *t, const vae_dataset *ds, const vae_train_options *opts,
                            vae_epoch_stats *stats);
float *vae_trainer_grads(vae_trainer *t, size_t *count);
int vae_trainer_zero_grads(vae_trainer *t);
uint64_t vae_trainer_steps(const vae_trainer *t);
uint64_t vae_trainer_epochs(const vae_trainer *t);

typedef int (*vae_exchange_fn)(void *payload, void *buf, const size_t *bytes);
int vae_trainer_set_distributed(vae_trainer *t, size_t rank, size_t world, vae_exchange_fn fn,
                                void *payload);
int vae_trainer_epoch_position(const vae_trainer *t, size_t *done, size_t *total);
int vae_trainer_discard_epoch(vae_trainer *t);
int vae_evaluate_dataset(vae_context *ctx, const vae_model *m, const vae_elbo *e,
                         const vae_dataset *ds, vae_rng *rng, double *per_sample,
                         vae_epoch_stats *stats);
int vae_model_save(const vae_model *m, const char *path);
int vae_model_load(vae_model **out, const char *path);
int vae_model_save_mem(const vae_model *m, void *buf, size_t cap, size_t *size);
int vae_model_load_mem(vae_model **out, const void *buf, size_t size);
int vae_trainer_save(const vae_trainer *t, const char *path);
int vae_trainer_save_mem(const vae_trainer *t, void *buf, size_t cap, size_t *size);
int vae_trainer_restore(vae_trainer *t, const char *path);
int vae_trainer_restore_mem(vae_trainer *t, const void *buf, size_t size);
int vae_trainer_set_meta(vae_trainer *t, const char *key, const char *value);
int vae_trainer_get_meta(const vae_trainer *t, const char *key, const char **value);
size_t vae_trainer_meta_count(const vae_trainer *t);
int vae_trainer_meta_at(const vae_trainer *t, size_t i, const char **key, const char **value);
