#include <math.h>

#include "vae/vae.h"
#include "../core/core.h"
#include "../core/numeric.h"
#include "activation.h"

int vae_act_valid(int act)
{
    return act >= VAE_ACT_IDENTITY && act <= VAE_ACT_ELU;
}

const char *vae_act_name(int act)
{
    static const char *names[] = {"identity", "relu", "leaky_relu", "tanh",
                                  "sigmoid", "softplus", "elu"};
    return vae_act_valid(act) ? names[act] : "unknown";
}

static float act_one(int act, float z)
{
    switch (act) {
    case VAE_ACT_RELU: return z > 0.0f ? z : 0.0f;
    case VAE_ACT_LEAKY_RELU: return z > 0.0f ? z : VAE_LEAKY_SLOPE * z;
    case VAE_ACT_TANH: return tanhf(z);
    case VAE_ACT_SIGMOID: return vae_sigmoidf(z);
    case VAE_ACT_SOFTPLUS:
        /* log(1+e^z) = max(z,0) + log1p(e^-|z|) */
        return (z > 0.0f ? z : 0.0f) + vae_log1p_unit(expf(-fabsf(z)));
    case VAE_ACT_ELU: return z > 0.0f ? z : expm1f(z);
    default: return z;
    }
}

VAE_CLONES void vae_act_bias_forward(int act, float *y, size_t rows, size_t cols, const float *b,
                          int bias_per_row)
{
    for (size_t r = 0; r < rows; r++) {
        float *row = y + r * cols;
        if (b && bias_per_row) {
            float br = b[r];
            for (size_t c = 0; c < cols; c++)
                row[c] += br;
        } else if (b) {
            for (size_t c = 0; c < cols; c++)
                row[c] += b[c];
        }
        switch (act) {
        case VAE_ACT_IDENTITY: break;
        case VAE_ACT_RELU:
            for (size_t c = 0; c < cols; c++)
                row[c] = row[c] > 0.0f ? row[c] : 0.0f;
            break;
        default:
            for (size_t c = 0; c < cols; c++)
                row[c] = act_one(act, row[c]);
            break;
        }
    }
}

VAE_CLONES void vae_act_backward(int act, const float *y, float *dy, size_t n)
{
    switch (act) {
    case VAE_ACT_IDENTITY: break;
    case VAE_ACT_RELU:
        for (size_t i = 0; i < n; i++)
            dy[i] = y[i] > 0.0f ? dy[i] : 0.0f;
        break;
    case VAE_ACT_LEAKY_RELU: /* sign(y) == sign(z) because the slope is > 0 */
        for (size_t i = 0; i < n; i++)
            dy[i] *= y[i] > 0.0f ? 1.0f : VAE_LEAKY_SLOPE;
        break;
    case VAE_ACT_TANH:
        for (size_t i = 0; i < n; i++)
            dy[i] *= 1.0f - y[i] * y[i];
        break;
    case VAE_ACT_SIGMOID:
        for (size_t i = 0; i < n; i++)
            dy[i] *= y[i] * (1.0f - y[i]);
        break;
    case VAE_ACT_SOFTPLUS: /* sigmoid(z) = 1 - e^-y since e^y = 1 + e^z */
        for (size_t i = 0; i < n; i++)
            dy[i] *= -expm1f(-y[i]);
        break;
    case VAE_ACT_ELU: /* z <= 0: d/dz (e^z - 1) = e^z = y + 1 */
        for (size_t i = 0; i < n; i++)
            dy[i] *= y[i] > 0.0f ? 1.0f : y[i] + 1.0f;
        break;
    default: break;
    }
}
