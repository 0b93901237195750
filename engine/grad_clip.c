/* Gradient-norm clipping (torch 1.13's clip_grad_norm_ with norm_type 2): the sum of squares in
 * double over fixed pieces, added in piece order, then one scale of every gradient. */
#include <math.h>

#include "grad_clip.h"
#include "parallel.h"

/* At most this many pieces: their partial sums live on the stack. */
#define CLIP_MAX_PIECES 256
/* Fewer entries than this per piece are not worth a thread. */
#define CLIP_MIN_PIECE 4096

typedef struct {
    float *grad;
    int64_t n, piece;
    double *part; /* [pieces] */
    float scale;
} clip_ctx;

static void sum_pieces(void *ctx, int64_t begin, int64_t end) {
    clip_ctx *c = ctx;
    for (int64_t p = begin; p < end; p++) {
        const int64_t a = p * c->piece, b = a + c->piece < c->n ? a + c->piece : c->n;
        double s = 0;
        for (int64_t i = a; i < b; i++) s += (double)c->grad[i] * (double)c->grad[i];
        c->part[p] = s;
    }
}

static void scale_range(void *ctx, int64_t begin, int64_t end) {
    clip_ctx *c = ctx;
    for (int64_t i = begin; i < end; i++) c->grad[i] *= c->scale;
}

void saefw_clip_grad_norm(float *grad, int64_t n, double max_norm, double *norm, double *coef) {
    double part[CLIP_MAX_PIECES];
    /* The piece size depends on n alone, so the pieces, and the order of their sum, do too. */
    int64_t piece = (n + CLIP_MAX_PIECES - 1) / CLIP_MAX_PIECES;
    if (piece < CLIP_MIN_PIECE) piece = CLIP_MIN_PIECE;
    const int64_t pieces = n > 0 ? (n + piece - 1) / piece : 0;
    clip_ctx c = {grad, n, piece, part, 1.0f};
    if (pieces > 1) saefw_parallel_for(pieces, sum_pieces, &c);
    else if (pieces == 1) sum_pieces(&c, 0, 1);
    double s = 0;
    for (int64_t p = 0; p < pieces; p++) s += part[p];
    const double total = sqrt(s), k = max_norm / (total + 1e-6);
    *norm = total;
    *coef = 1.0;
    if (!(k < 1.0)) return;
    c.scale = (float)k;
    *coef = (double)c.scale;
    saefw_parallel_for(n, scale_range, &c);
}
