/* Data-parallel sums (engine/dist.c): run alone (1 rank) and under mpirun with 2 and 3 ranks
 * (tests/dist.cmake). Each rank's gradient of its rows of a global batch, summed across ranks, equals
 * the gradient of the whole batch within float32 rounding (dense and sparse paths, uneven shares);
 * sums are added in the ring's fixed order (the same bits as a local sum in that order); ZeRO-1's
 * reduce-scatter and all-gather over a layout of owners (uneven ranges, one of them empty) add in the
 * owner's order and copy every range to every rank, and a gather puts each rank's part in place on
 * rank 0; ranks with different configurations are told apart by rank; each rank's share of the data,
 * its gathering and the ranks' seeds. */
#include <stdint.h>

#include "dist.h"
#include "rng.h"
#include "sae.h"
#include "testutil.h"

#define D_IN 48
#define D_SAE 192
#define B 61 /* no rank count of 2 or 3 divides it: uneven shares */
/* |summed - whole| <= TOL * max |whole| per tensor: the ranks' partial sums over rows are rounded to
 * float32 once each before they are added, where the whole batch rounds once (a few ulp of the
 * largest entry). */
#define TOL 1e-5

static void make_sae(saefw_sae *sae) {
    char err[256];
    REQUIRE(saefw_sae_alloc(sae, D_IN, D_SAE, 3e-3f, err, sizeof err) == 0, "%s", err);
    saefw_rng rng;
    saefw_rng_seed(&rng, 11);
    saefw_sae_init_params(sae, &rng);
    for (int64_t j = 0; j < D_SAE; j++) sae->p[SAEFW_B_ENC][j] = (float)(0.05 * saefw_rng_normal(&rng));
    for (int64_t i = 0; i < D_IN; i++) sae->p[SAEFW_B_DEC][i] = (float)(0.1 * saefw_rng_normal(&rng));
}

static void grads(saefw_sae *sae, const float *x, int64_t rows, int64_t norm_rows, float *out, saefw_sae_stats *st) {
    char err[256];
    saefw_sae_step *w = NULL;
    REQUIRE(saefw_sae_step_alloc(&w, sae, B, err, sizeof err) == 0, "%s", err);
    saefw_sae_step_set_norm_rows(w, norm_rows);
    saefw_sae_train_step(sae, w, x, rows, st);
    memcpy(out, sae->grads, sizeof(float) * sae->n_total);
    saefw_sae_step_free(w);
}

static void check_path(saefw_sae_path path, const char *name) {
    const int r = saefw_dist_rank(), P = saefw_dist_size();
    char err[256];
    saefw_sae_set_path(path);
    saefw_sae sae;
    make_sae(&sae);
    float *x = malloc(sizeof(float) * B * D_IN), *whole = malloc(sizeof(float) * sae.n_total),
          *sum = malloc(sizeof(float) * sae.n_total);
    REQUIRE(x && whole && sum, "out of memory");
    saefw_rng rng;
    saefw_rng_seed(&rng, 5);
    for (int64_t k = 0; k < B * D_IN; k++) x[k] = (float)saefw_rng_normal(&rng);
    saefw_sae_stats st_whole, st_part;
    grads(&sae, x, B, 0, whole, &st_whole);
    const int64_t r0 = B * r / P, r1 = B * (r + 1) / P;
    grads(&sae, x + r0 * D_IN, r1 - r0, B, sum, &st_part);
    REQUIRE(saefw_dist_sum_f32(sum, (int64_t)sae.n_total, err, sizeof err) == 0, "%s", err);
    for (int t = 0; t < SAEFW_N_PARAMS; t++) {
        const size_t off = (size_t)(sae.g[t] - sae.grads);
        double maxd = 0, maxg = 0;
        int finite = 1;
        for (int64_t k = 0; k < sae.numel[t]; k++) {
            const double a = sum[off + k], b = whole[off + k];
            finite &= isfinite(a) && isfinite(b);
            if (fabs(a - b) > maxd) maxd = fabs(a - b);
            if (fabs(b) > maxg) maxg = fabs(b);
        }
        if (r == 0)
            printf("%s path, %d rank(s): %s gradient: max |summed - whole| = %.3g (max |whole| %.3g, tolerance %.3g)\n",
                   name, P, saefw_param_name(t), maxd, maxg, TOL * maxg);
        CHECK(finite && maxd <= TOL * maxg, "%s %s: max difference %g over tolerance %g", name, saefw_param_name(t),
              maxd, TOL * maxg);
    }
    /* The step's statistics add up as the trainer adds them: l2 and L0 weighted by rows, l1 summed (l2 and
     * l1 are float32 sums inside a step, hence the relative 1e-6). */
    double v[3] = {st_part.l2 * (double)(r1 - r0), st_part.l1, st_part.l0 * (double)(r1 - r0)};
    REQUIRE(saefw_dist_sum_f64(v, 3, err, sizeof err) == 0, "%s", err);
    CHECK(fabs(v[0] / B - st_whole.l2) <= 1e-6 * st_whole.l2, "l2 %.17g vs %.17g", v[0] / B, st_whole.l2);
    CHECK(fabs(v[1] - st_whole.l1) <= 1e-6 * st_whole.l1, "l1 %.17g vs %.17g", v[1], st_whole.l1);
    CHECK(fabs(v[2] / B - st_whole.l0) <= 1e-12 * st_whole.l0, "l0 %.17g vs %.17g", v[2] / B, st_whole.l0);
    free(x);
    free(whole);
    free(sum);
    saefw_sae_free(&sae);
    saefw_sae_set_path(SAEFW_SAE_AUTO);
}

/* What rank q contributes to the order test: values whose sum depends on the order of addition. */
static float part(int q, int64_t k) { return (float)((q + 1) * 1e-3 + (k % 7) * 1e4 * (q % 2 ? -1 : 1) + k * 1e-7); }

/* Pieces of the ring's sums (SAEFW_DIST_PIECE): small, so that the sums below run over several
 * segments, the last one short. */
#define PIECE 700

int main(int argc, char **argv) {
    char err[512];
    setenv("SAEFW_DIST_PIECE", "700", 1);
    REQUIRE(saefw_dist_init(&argc, &argv, err, sizeof err) == 0, "%s", err);
    const int r = saefw_dist_rank(), P = saefw_dist_size();
    if (r == 0) printf("ranks: %d (MPI %s)\n", P, saefw_dist_built() ? "built in" : "not built in");

    check_path(SAEFW_SAE_DENSE, "dense");
    check_path(SAEFW_SAE_SPARSE, "sparse");

    /* The ring's order (dist.h): in each segment of PIECE x P elements, piece c of the P floor-split
     * pieces is ((x_c + x_c+1) + ...) + x_c-1, bit for bit, on every rank. */
    enum { N = 10000 };
    float *v = malloc(sizeof(float) * N);
    REQUIRE(v, "out of memory");
    for (int64_t k = 0; k < N; k++) v[k] = part(r, k);
    REQUIRE(saefw_dist_sum_f32(v, N, err, sizeof err) == 0, "%s", err);
    int64_t bad = 0;
    for (int64_t k = 0; k < N; k++) {
        const int64_t o = k / (PIECE * P) * (PIECE * P), L = N - o < PIECE * P ? N - o : PIECE * P;
        int c = 0;
        while (L * (c + 1) / P <= k - o) c++;
        float e = part(c, k);
        for (int q = 1; q < P; q++) e += part((c + q) % P, k);
        bad += memcmp(&e, &v[k], sizeof e) != 0;
    }
    CHECK(bad == 0, "rank %d: %lld sums differ from the rank-order sum", r, (long long)bad);

    /* ZeRO-1's layout: rank q owns [b[q], b[q+1]); the last but one range is empty on 3 ranks. Its
     * elements are ((x_q+1 + x_q+2) + ...) + x_q after the reduce-scatter, on the owner, bit for bit. */
    int64_t b[4] = {0, 0, 0, 0};
    b[P] = N;
    if (P == 2) b[1] = 6001;
    if (P == 3) b[1] = 2345, b[2] = 2345;
    for (int64_t k = 0; k < N; k++) v[k] = part(r, k);
    REQUIRE(saefw_dist_reduce_scatter_f32(v, N, b, err, sizeof err) == 0, "%s", err);
    int64_t bad_rs = 0, bad_ag = 0;
    for (int64_t k = b[r]; k < b[r + 1]; k++) {
        float e = part((r + 1) % P, k);
        for (int q = 2; q <= P; q++) e += part((r + q) % P, k);
        bad_rs += memcmp(&e, &v[k], sizeof e) != 0;
    }
    CHECK(bad_rs == 0, "rank %d: %lld reduce-scatter sums differ from the owner-order sum", r, (long long)bad_rs);
    REQUIRE(saefw_dist_all_gather_f32(v, N, b, err, sizeof err) == 0, "%s", err);
    for (int64_t k = 0; k < N; k++) {
        int o = 0;
        while (k >= b[o + 1]) o++;
        float e = part((o + 1) % P, k);
        for (int q = 2; q <= P; q++) e += part((o + q) % P, k);
        bad_ag += memcmp(&e, &v[k], sizeof e) != 0;
    }
    CHECK(bad_ag == 0, "rank %d: %lld elements differ after the all-gather", r, (long long)bad_ag);
    if (r == 0)
        printf("reduce-scatter + all-gather over %d uneven range(s): %lld + %lld differing\n", P, (long long)bad_rs,
               (long long)bad_ag);
    /* Rank 0 gathers each rank's range of k * 0.5 (an empty part included). */
    float *full = malloc(sizeof(float) * N);
    REQUIRE(full, "out of memory");
    for (int64_t k = b[r]; k < b[r + 1]; k++) v[k] = (float)k * 0.5f;
    REQUIRE(saefw_dist_gather_f32(v + b[r], b[r], b[r + 1] - b[r], full, N, err, sizeof err) == 0, "%s", err);
    if (r == 0) {
        int64_t bad_g = 0;
        for (int64_t k = 0; k < N; k++) bad_g += full[k] != (float)k * 0.5f;
        CHECK(bad_g == 0, "gather: %lld elements out of place", (long long)bad_g);
    }
    free(full);

    int64_t m[2] = {r, -r};
    REQUIRE(saefw_dist_max_i64(m, 2, err, sizeof err) == 0, "%s", err);
    CHECK(m[0] == P - 1 && m[1] == 0, "max: %lld %lld", (long long)m[0], (long long)m[1]);

    char buf[32] = "";
    if (r == 0) snprintf(buf, sizeof buf, "from rank 0");
    REQUIRE(saefw_dist_bcast(buf, sizeof buf, 0, err, sizeof err) == 0, "%s", err);
    CHECK(strcmp(buf, "from rank 0") == 0, "broadcast gave '%s'", buf);

    CHECK(saefw_dist_check_same(42, "configuration", err, sizeof err) == 0, "same hash refused: %s", err);
    int rc = saefw_dist_check_same(r == P - 1 ? 43 : 42, "configuration", err, sizeof err);
    if (P > 1) {
        char want[64];
        snprintf(want, sizeof want, "rank %d's configuration differs from rank 0's", P - 1);
        CHECK(rc == -1 && strstr(err, want), "a differing rank: rc %d, '%s'", rc, err);
        if (r == 0) printf("differing configuration: %s\n", err);
    } else {
        CHECK(rc == 0, "one rank has nothing to differ from");
    }

    free(v);

    /* Each rank's share (dist.h): floor-split, in rank order, covering every item once; gathering the
     * shares gives every rank all items in rank order (61 items on 2 or 3 ranks: uneven shares). */
    int64_t lo = -1, cnt = -1;
    saefw_dist_share(B, &lo, &cnt);
    CHECK(lo == B * r / P && lo + cnt == B * (r + 1) / P, "share of %d: [%lld, %lld)", B, (long long)lo,
          (long long)(lo + cnt));
    double items[B][2];
    for (int64_t k = 0; k < B; k++) items[k][0] = items[k][1] = -1;
    for (int64_t k = lo; k < lo + cnt; k++) {
        items[k][0] = (double)k;
        items[k][1] = (double)r;
    }
    REQUIRE(saefw_dist_gather_shares(items, B, sizeof items[0], err, sizeof err) == 0, "%s", err);
    int64_t wrong = 0;
    for (int64_t k = 0; k < B; k++) {
        int owner = 0;
        while (B * (owner + 1) / P <= k) owner++;
        wrong += items[k][0] != (double)k || items[k][1] != (double)owner;
    }
    CHECK(wrong == 0, "rank %d: %lld gathered items are not in rank order", r, (long long)wrong);
    /* Rank 0 keeps the seed (a 1-rank run draws what a plain run draws); the other ranks get others. */
    const uint64_t mine = saefw_dist_rank_seed(49);
    CHECK(r != 0 || mine == 49, "rank 0's seed changed: %llu", (unsigned long long)mine);
    if (P > 1 && P <= 3) {
        uint64_t all[3] = {0, 0, 0};
        all[r] = mine;
        REQUIRE(saefw_dist_gather_shares(all, P, sizeof all[0], err, sizeof err) == 0, "%s", err);
        for (int q = 1; q < P; q++) CHECK(all[q] != all[0] && all[q] != all[q - 1], "rank %d's seed repeats", q);
    }

    saefw_dist_finalize();
    return t_finish("test_dist");
}
