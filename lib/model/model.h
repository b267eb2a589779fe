/* The model object, shared by model.c, elbo.c, infer.c, loglik.c and the
 * file format. */
#ifndef VAE_MODEL_H
#define VAE_MODEL_H

#include <stddef.h>

#include "../core/pool.h"
#include "../nn/layer.h"

#define VAE_MAX_THREADS 64

/* What one worker needs to run a slice of a batch through the model; every
 * buffer holds ws_batch rows. Worker 0 adds its gradients into the model's
 * slab, the others into their private `grads`, summed afterwards. */
typedef struct vae_ws {
    float **acts;               /* acts[i][B][layers[i]->out] */
    float *z, *std, *dz;        /* [B][latent] */
    float *dhead;               /* [B][2*latent] */
    float *grad_a, *grad_b;     /* [B][max width], ping-pong for dy/dx */
    float *scratch;             /* largest layer scratch */
    float *grads;               /* private gradient slab (workers > 0), or NULL */
} vae_ws;

struct vae_model {
    size_t input_dim, latent_dim;
    int likelihood;
    float sigma;                /* Gaussian likelihood only */

    /* Before build: the two stacks as added. After build: layers[] is
     * encoder, head, decoder in slab order, and n_enc counts the encoder. */
    vae_layer **layers;
    size_t n_layers, cap_layers;
    size_t n_enc;               /* encoder layers (the head follows them) */
    int built;

    float *params, *grads;      /* slabs of n_params floats, same layout */
    size_t n_params;
    /* The optimizer whose state follows this model: set by its first step,
     * only compared. With the optimizer's own pointer back to the model it
     * tells a model from a new one allocated at a freed model's address. */
    uintptr_t stepped_by;

    /* Workspace for batches up to ws_batch: one per worker, plus what the
     * whole batch shares. One allocation (mem). */
    size_t n_threads;
    vae_pool *pool;             /* n_threads > 1 */
    float *mem;
    size_t ws_batch;
    vae_ws ws[VAE_MAX_THREADS];
    float *eps;                 /* [B][latent] noise of the whole batch */
    double *rec_ps, *kl_ps;     /* [B] per-sample terms, summed in row order */
};

static inline vae_layer *vae_model_head(const vae_model *m)
{
    return m->layers[m->n_enc];
}
static inline float *vae_model_out(const vae_model *m, const vae_ws *w)
{
    return w->acts[m->n_layers - 1];
}

/* Grows the workspace to hold `batch`; fn names the public caller. */
int vae_model_ensure(vae_model *m, size_t batch, const char *fn);
/* Encoder + head on x[B][input]; result in w->acts[n_enc] = [B][mu | logvar]. */
void vae_model_forward_encoder(vae_model *m, vae_ws *w, const float *x, size_t batch);
/* Decoder on z[B][latent]; result in vae_model_out(m, w). */
void vae_model_forward_decoder(vae_model *m, vae_ws *w, const float *z, size_t batch);
/* dout[B][input] (overwritten) -> decoder gradients, dz[B][latent]. */
void vae_model_backward_decoder(vae_model *m, vae_ws *w, const float *z, float *dout,
                                size_t batch, float *dz);
/* dhead[B][2 latent] (overwritten) -> gradients of head and encoder. */
void vae_model_backward_encoder(vae_model *m, vae_ws *w, const float *x, float *dhead,
                                size_t batch);
/* Common argument checks: model built. */
int vae_model_check_ready(const vae_model *m, const char *fn);

#endif
