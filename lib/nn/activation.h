#ifndef VAE_ACTIVATION_H
#define VAE_ACTIVATION_H

#include <stddef.h>

#define VAE_LEAKY_SLOPE 0.01f

int vae_act_valid(int act);
const char *vae_act_name(int act);
/* y[r][c] = act(y[r][c] + b[c]) for rows x cols, b may be NULL; the bias
 * add and the activation share one pass over y after the GEMM. When
 * bias_per_row is set, b has one value per row instead (conv channels). */
void vae_act_bias_forward(int act, float *y, size_t rows, size_t cols, const float *b,
                          int bias_per_row);
/* dy[i] *= act'(z_i), written in terms of the output y_i = act(z_i) so the
 * pre-activation need not be kept. See docs/math.md. */
void vae_act_backward(int act, const float *y, float *dy, size_t n);

#endif
