/* Test of the forward's vectorised GELU (saefw_gelu_inplace in engine/model_forward.c) against the exact
 * GELU computed in double with libm's erf: the error bound its comment states, NaN kept, and the same
 * result for a value wherever it lies in the array (so the thread split cannot change it). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "testutil.h"

/* Max |GELU error| / (0.5 |x|), i.e. the error in 1 + erf(x / sqrt 2) with float32's rounding of the
 * products: erf's approximation (2.4e-7) plus a few ulps. */
#define GELU_TOL 5e-7

int main(void) {
    /* Every 1/4096 over [-12, 12], past where erf reaches +-1 in float32. */
    const int64_t n = 24 * 4096 + 1;
    float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
    REQUIRE(x && y, "out of memory");
    for (int64_t i = 0; i < n; i++) x[i] = (float)(-12.0 + (double)i / 4096.0);
    memcpy(y, x, sizeof(float) * (size_t)n);
    saefw_gelu_inplace(y, n);
    double worst = 0, worst_x = 0, worst_erff = 0;
    for (int64_t i = 0; i < n; i++) {
        const double xd = x[i], want = 0.5 * xd * (1.0 + erf(xd / sqrt(2.0)));
        const double scale = fabs(xd) > 1e-30 ? 0.5 * fabs(xd) : 1.0;
        const double e = fabs((double)y[i] - want) / scale;
        if (!(e <= worst)) { /* NaN-safe: a NaN error becomes the worst */
            worst = e;
            worst_x = xd;
        }
        const float ref_f = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
        const double ef = fabs((double)ref_f - want) / scale;
        if (ef > worst_erff) worst_erff = ef;
    }
    printf("gelu over [-12, 12] (%lld points): max |error| / (0.5 |x|) %.3e at x = %g (tol %.0e); "
           "the scalar erff GELU: %.3e\n",
           (long long)n, worst, worst_x, GELU_TOL, worst_erff);
    CHECK(worst <= GELU_TOL, "max error %.3e at x = %g", worst, worst_x);

    /* Where a value lies (the vector body or the zero-padded tail, any offset) does not change it. */
    int moved = 0;
    for (int64_t off = 0; off < 9; off++)
        for (int64_t len = 1; len < 20; len++) {
            float part[32];
            memcpy(part, x + 40000 + off, sizeof(float) * (size_t)len);
            saefw_gelu_inplace(part, len);
            moved += memcmp(part, y + 40000 + off, sizeof(float) * (size_t)len) != 0;
        }
    CHECK(moved == 0, "%d sub-ranges differ from the whole array's result", moved);

    float special[3] = {NAN, 0.0f, -0.0f};
    saefw_gelu_inplace(special, 3);
    CHECK(isnan(special[0]), "GELU(NaN) = %g, not NaN", (double)special[0]);
    CHECK(special[1] == 0.0f && special[2] == 0.0f, "GELU(+-0) = %g, %g", (double)special[1], (double)special[2]);
    free(x);
    free(y);
    return t_finish("test_gelu");
}
