/* Gradient-norm clipping of the 2024 recipe: torch 1.13's clip_grad_norm_ over every gradient of the
 * SAE together, with the norm summed in double in an order that does not depend on the thread count. */
#ifndef SAEFW_GRAD_CLIP_H
#define SAEFW_GRAD_CLIP_H

#include <stdint.h>

/* N = the 2-norm of grad [n] (all of a model's gradients in one block), c = max_norm / (N + 1e-6);
 * when c < 1 every entry is multiplied by (float)c, else nothing changes. *norm gets N and *coef the
 * factor applied (1 when none). max_norm must be > 0. The sum runs over fixed pieces of the block
 * whose bounds depend only on n, so the result is the same for any number of threads. */
void saefw_clip_grad_norm(float *grad, int64_t n, double max_norm, double *norm, double *coef);

#endif
