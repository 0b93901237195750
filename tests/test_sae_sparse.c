/* The SAE step's two paths and its threads. The sparse path against the dense one on the same inputs
 * at low, middle and high L0 (set through b_enc): x_hat, acts, the statistics and all four gradients
 * within 1e-5 of the largest value per tensor (fp32 sums in another order), with the automatic choice
 * checked at each level. Thread-count independence: both paths with 1 and 3 threads, bit for bit. The
 * evaluation forward pass gives the training step's statistics and activations, bit for bit.
 * The parallel-for: every index exactly once, nested calls included. Then the PyTorch-fixture tests
 * (test_sae_reference, test_fd, test_train_reference) run again with each path forced. */
#include <libgen.h>
#include <limits.h>
#include <unistd.h>

#include "parallel.h"
#include "rng.h"
#include "sae.h"
#include "testutil.h"

/* Shapes that leave partial column groups, feature blocks, row chunks and dense-backward pieces. */
enum { B = 2 * SAEFW_DENSE_PIECE + 76, D_IN = 100, D_SAE = 300 };

typedef struct {
    float *x_hat, *acts, *grads;
    saefw_sae_stats st;
    int used_sparse;
    int eval_same; /* the evaluation forward pass gave the step's statistics and activations, same path */
} result;

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* One training step with the given path, and the evaluation forward pass on the same rows (x_hat comes
 * from it); a copy of everything they produce. */
static result run_path(saefw_sae *sae, const float *x, saefw_sae_path path) {
    char err[256];
    saefw_sae_set_path(path);
    saefw_sae_step *w;
    saefw_sae_eval *e;
    REQUIRE(saefw_sae_step_alloc(&w, sae, B, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_sae_eval_alloc(&e, sae, B, err, sizeof err) == 0, "%s", err);
    saefw_sae_set_path(SAEFW_SAE_AUTO);
    result r;
    saefw_sae_train_step(sae, w, x, B, &r.st);
    const float *acts = saefw_sae_step_acts(sae, w, err, sizeof err);
    REQUIRE(acts, "%s", err);
    r.used_sparse = saefw_sae_step_path(w) == SAEFW_SAE_SPARSE;
    r.x_hat = malloc(sizeof(float) * B * D_IN);
    r.acts = malloc(sizeof(float) * B * D_SAE);
    r.grads = malloc(sizeof(float) * sae->n_total);
    REQUIRE(r.x_hat && r.acts && r.grads, "out of memory");
    memcpy(r.acts, acts, sizeof(float) * B * D_SAE);
    memcpy(r.grads, sae->grads, sizeof(float) * sae->n_total);

    saefw_sae_stats est;
    saefw_sae_entries ent;
    const float *x_hat = saefw_sae_eval_forward(sae, e, x, B, &est);
    memcpy(r.x_hat, x_hat, sizeof(float) * B * D_IN);
    const int eval_sparse = saefw_sae_eval_entries(e, &ent);
    const float *eacts = saefw_sae_eval_acts(sae, e, err, sizeof err);
    REQUIRE(eacts, "%s", err);
    int64_t *count = calloc(D_SAE, sizeof(int64_t)), *want = calloc(D_SAE, sizeof(int64_t));
    REQUIRE(count && want, "out of memory");
    REQUIRE(saefw_sae_eval_count_active(sae, e, count, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_sae_step_count_active(sae, w, want, err, sizeof err) == 0, "%s", err);
    r.eval_same = eval_sparse == r.used_sparse && memcmp(eacts, r.acts, sizeof(float) * B * D_SAE) == 0 &&
                  memcmp(count, want, sizeof(int64_t) * D_SAE) == 0 && memcmp(&est, &r.st, sizeof est) == 0;
    /* The entries by feature are the activations, rows ascending. */
    for (int64_t j = 0; eval_sparse && j < D_SAE; j++)
        for (int64_t k = ent.start[j]; k < ent.start[j + 1]; k++)
            if (ent.act[k] != eacts[ent.row[k] * D_SAE + j] || (k > ent.start[j] && ent.row[k] <= ent.row[k - 1]))
                r.eval_same = 0;
    free(count);
    free(want);
    saefw_sae_eval_free(e);
    saefw_sae_step_free(w);
    return r;
}

static void free_result(result *r) {
    free(r->x_hat);
    free(r->acts);
    free(r->grads);
}

static int same_bits(const result *a, const result *b, size_t n_grads) {
    return memcmp(a->x_hat, b->x_hat, sizeof(float) * B * D_IN) == 0 &&
           memcmp(a->acts, b->acts, sizeof(float) * B * D_SAE) == 0 &&
           memcmp(a->grads, b->grads, sizeof(float) * n_grads) == 0 && a->st.loss == b->st.loss &&
           a->st.l0 == b->st.l0 && a->st.explained_variance == b->st.explained_variance;
}

static void compare_paths(saefw_sae *sae, const float *x, double l0_target, const char *level, int auto_sparse) {
    /* b_enc = minus the value that about l0_target / D_SAE of the pre-activations exceed. */
    float *pre = malloc(sizeof(float) * B * D_SAE);
    REQUIRE(pre, "out of memory");
    for (int b = 0; b < B; b++)
        for (int j = 0; j < D_SAE; j++) {
            double s = 0;
            for (int i = 0; i < D_IN; i++)
                s += ((double)x[b * D_IN + i] - sae->p[SAEFW_B_DEC][i]) * sae->p[SAEFW_W_ENC][i * D_SAE + j];
            pre[b * D_SAE + j] = (float)s;
        }
    qsort(pre, B * D_SAE, sizeof(float), cmp_float);
    /* Halfway between two neighbours: the paths compute the encoder product in different blocks, and
     * a pre-activation within rounding of the threshold (the ReLU's kink) could be active on one path
     * only. */
    const int at = (int)((1.0 - l0_target / D_SAE) * (B * D_SAE - 1));
    const float t = 0.5f * (pre[at] + pre[at + 1]);
    free(pre);
    for (int j = 0; j < D_SAE; j++) sae->p[SAEFW_B_ENC][j] = -t;

    result d = run_path(sae, x, SAEFW_SAE_DENSE), s = run_path(sae, x, SAEFW_SAE_SPARSE);
    result a = run_path(sae, x, SAEFW_SAE_AUTO);
    printf("%s L0 (target %.0f of %d): %.2f; auto path %s\n", level, l0_target, D_SAE, d.st.l0,
           a.used_sparse ? "sparse" : "dense");
    CHECK(!d.used_sparse && s.used_sparse, "%s: the forced paths were not taken", level);
    CHECK(a.used_sparse == auto_sparse, "%s: auto chose the %s path", level, a.used_sparse ? "sparse" : "dense");
    t_close("x_hat", s.x_hat, d.x_hat, B * D_IN, 1e-5, 1e-6);
    t_close("acts", s.acts, d.acts, B * D_SAE, 1e-5, 1e-6);
    t_close1("loss", s.st.loss, d.st.loss, 1e-5);
    t_close1("l2", s.st.l2, d.st.l2, 1e-5);
    t_close1("l1", s.st.l1, d.st.l1, 1e-5);
    t_close1("explained variance", s.st.explained_variance, d.st.explained_variance, 1e-5);
    CHECK(s.st.l0 == d.st.l0, "%s: l0 %g vs %g", level, s.st.l0, d.st.l0);
    size_t off = 0;
    for (int i = 0; i < SAEFW_N_PARAMS; i++) {
        char what[64];
        snprintf(what, sizeof what, "grad %s", saefw_param_name(i));
        t_close(what, s.grads + off, d.grads + off, sae->numel[i], 1e-5, 1e-6);
        off += (size_t)sae->numel[i];
    }

    /* Each path with 1 and with 3 threads (uneven splits), bit for bit; and the evaluation forward pass
     * gives the training step's statistics, activations and counts. */
    static const saefw_sae_path paths[2] = {SAEFW_SAE_DENSE, SAEFW_SAE_SPARSE};
    for (int p = 0; p < 2; p++) {
        saefw_set_threads(1);
        result one = run_path(sae, x, paths[p]);
        saefw_set_threads(3);
        result three = run_path(sae, x, paths[p]);
        saefw_set_threads(0);
        int same = same_bits(&one, &three, sae->n_total), same_eval = one.eval_same && three.eval_same;
        printf("  %-28s 1 vs 3 threads: %s; evaluation forward vs step: %s\n", p ? "sparse path" : "dense path",
               same ? "bit-identical" : "DIFFERENT", same_eval ? "bit-identical" : "DIFFERENT");
        CHECK(same, "%s: %s path results depend on the thread count", level, p ? "sparse" : "dense");
        CHECK(same_eval, "%s: %s path: the evaluation forward pass differs from the step", level,
              p ? "sparse" : "dense");
        free_result(&one);
        free_result(&three);
    }
    free_result(&d);
    free_result(&s);
    free_result(&a);
}

/* ---- the parallel-for ---- */

typedef struct {
    int *hits;
    int nested;
} pf_ctx;

static void mark(void *vctx, int64_t b0, int64_t b1) {
    pf_ctx *c = vctx;
    for (int64_t k = b0; k < b1; k++) __atomic_fetch_add(&c->hits[k], 1, __ATOMIC_RELAXED);
}

/* Each range calls the parallel-for again on its own indices (it must run them itself). */
static void mark_nested(void *vctx, int64_t b0, int64_t b1) {
    pf_ctx *c = vctx;
    pf_ctx sub = {c->hits + b0, 0};
    saefw_parallel_for(b1 - b0, mark, &sub);
}

static void check_parallel_for(void) {
    int hits[257];
    int bad = 0;
    for (int threads = 1; threads <= 5; threads++) {
        saefw_set_threads(threads);
        for (int n = 0; n <= 257; n += (n < 10 ? 1 : 31)) {
            for (int nested = 0; nested < 2; nested++) {
                memset(hits, 0, sizeof hits);
                pf_ctx c = {hits, nested};
                saefw_parallel_for(n, nested ? mark_nested : mark, &c);
                for (int k = 0; k < n; k++) bad += hits[k] != 1;
            }
        }
    }
    saefw_set_threads(0);
    printf("parallel_for: 1..5 threads, n 0..257, flat and nested: %d index(es) not run exactly once\n", bad);
    CHECK(bad == 0, "parallel_for ran %d index(es) other than once", bad);
}

/* ---- the fixture tests with a forced path ---- */

static void rerun_with_path(const char *dir, const char *test, const char *path) {
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "'%s/%s' > /dev/null", dir, test);
    setenv("SAEFW_SAE_PATH", path, 1);
    int rc = system(cmd);
    unsetenv("SAEFW_SAE_PATH");
    printf("%-22s with SAEFW_SAE_PATH=%-6s %s\n", test, path, rc == 0 ? "passed" : "FAILED");
    CHECK(rc == 0, "%s with SAEFW_SAE_PATH=%s failed (status %d); run it by hand to see why", test, path, rc);
}

int main(void) {
    char err[256];
    saefw_sae sae;
    REQUIRE(saefw_sae_alloc(&sae, D_IN, D_SAE, 1e-3f, err, sizeof err) == 0, "%s", err);
    saefw_rng rng;
    saefw_rng_seed(&rng, 6);
    saefw_sae_init_params(&sae, &rng);
    for (int i = 0; i < D_IN; i++) sae.p[SAEFW_B_DEC][i] = (float)(0.1 * saefw_rng_normal(&rng));
    float *x = malloc(sizeof(float) * B * D_IN);
    REQUIRE(x, "out of memory");
    for (int k = 0; k < B * D_IN; k++) x[k] = (float)saefw_rng_normal(&rng);

    compare_paths(&sae, x, 3, "low", 1);
    compare_paths(&sae, x, 0.8 * SAEFW_SAE_SPARSE_MAX_FRACTION * D_SAE, "middle", 1);
    compare_paths(&sae, x, D_SAE / 2, "high", 0);
    check_parallel_for();

    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    REQUIRE(n > 0, "cannot find this program's folder");
    self[n] = 0;
    const char *dir = dirname(self);
    static const char *const tests[3] = {"test_sae_reference", "test_fd", "test_train_reference"};
    for (int t = 0; t < 3; t++) {
        rerun_with_path(dir, tests[t], "sparse");
        rerun_with_path(dir, tests[t], "dense");
    }

    free(x);
    saefw_sae_free(&sae);
    return t_finish("test_sae_sparse");
}
