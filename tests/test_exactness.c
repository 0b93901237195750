/* Exactness of the SAE step against a float64 reference (issue 19, point 1): at the setting
 * (d_in 512, d_sae 4096, 20 batches of 1024 rows, about 6 % of entries active, so the sparse path
 * runs), the first step's gradients and the parameters after 20 Adam steps through the real training
 * loop, on the dense and on the sparse path, must each lie within 2 x PyTorch-float32's own distance
 * from float64 (max |diff| / max |ref| per tensor). Inputs are regenerated from the counter-based hash
 * of tests/reference/make_exactness_fixtures.py, which wrote the fixture.
 *
 *   test_exactness                      the ctest case (fixtures/exactness/issue.safetensors)
 *   test_exactness --grads              the first step's gradients only
 *   test_exactness --seed-shape DIR     the seed's shape, 5 steps, against the script's --seed-shape DIR
 *   test_exactness --steps DIR          each step's gradients at the float64 parameters of the script's
 *                                       --dump DIR (to bisect a drift) */
#include "plugin_loader.h"
#include "sae.h"
#include "testtrain.h"
#include "testutil.h"
#include "train.h"
#include "util.h"

#include <stdint.h>

static const char *const NAMES[4] = {"W_enc", "W_dec", "b_enc", "b_dec"};

/* The script's uniform(stream, n)[i]. */
static double hash_u(uint64_t stream, uint64_t i) {
    uint64_t z = i + stream * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1p-53;
}

static void init_state(saefw_sae *sae) {
    const int64_t d_in = sae->d_in, d_sae = sae->d_sae;
    const double be = sqrt(6.0 / (double)d_sae), bd = sqrt(6.0 / (double)d_in);
    for (int64_t k = 0; k < d_in * d_sae; k++)
        sae->p[SAEFW_W_ENC][k] = (float)((2.0 * hash_u(1, (uint64_t)k) - 1.0) * be);
    double *row = malloc(sizeof(double) * (size_t)d_in);
    REQUIRE(row, "out of memory");
    for (int64_t r = 0; r < d_sae; r++) {
        double ss = 0;
        for (int64_t i = 0; i < d_in; i++) {
            row[i] = (2.0 * hash_u(2, (uint64_t)(r * d_in + i)) - 1.0) * bd;
            ss += row[i] * row[i];
        }
        for (int64_t i = 0; i < d_in; i++) sae->p[SAEFW_W_DEC][r * d_in + i] = (float)(row[i] / sqrt(ss));
    }
    free(row);
    const float b = (float)(-1.6 * sqrt((double)d_in / 3.0 * 2.0 / (double)d_sae));
    for (int64_t j = 0; j < d_sae; j++) sae->p[SAEFW_B_ENC][j] = b;
    for (int64_t i = 0; i < d_in; i++) sae->p[SAEFW_B_DEC][i] = 0.0f;
}

typedef struct {
    int64_t next, B, d_in;
} gen;

static void make_batch(int64_t k, int64_t B, int64_t d_in, float *out) {
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < d_in; i++) {
            const double mu = (2.0 * hash_u(3, (uint64_t)i) - 1.0) / 2.0;
            out[b * d_in + i] = (float)((2.0 * hash_u(100 + (uint64_t)k, (uint64_t)(b * d_in + i)) - 1.0) + mu);
        }
}

static int next_batch(void *ud, float *out, int64_t B, char *err, size_t errlen) {
    gen *g = ud;
    if (B != g->B) return saefw_errf(err, errlen, "batch of %lld rows, want %lld", (long long)B, (long long)g->B);
    make_batch(g->next++, B, g->d_in, out);
    return 0;
}

/* max |got - ref| / max |ref|; NaN when either side has one. */
static double dist(const float *got, const float *ref, int64_t n) {
    double d = 0, m = 0;
    for (int64_t k = 0; k < n; k++) {
        d = t_max(d, fabs((double)got[k] - (double)ref[k]));
        m = t_max(m, fabs((double)ref[k]));
    }
    return d / m;
}

/* One forward and backward pass and the decoder projection (W_dec renormalised in place), as a step. */
static void grads(saefw_sae *sae, const float *x, int64_t B, saefw_sae_path path, int64_t *nnz) {
    saefw_sae_step *w;
    char err[512];
    saefw_sae_set_path(path);
    REQUIRE(saefw_sae_step_alloc(&w, sae, B, err, sizeof err) == 0, "%s", err);
    saefw_sae_stats st;
    saefw_sae_train_step(sae, w, x, B, &st);
    saefw_sae_project_decoder(sae);
    REQUIRE(path != SAEFW_SAE_SPARSE || saefw_sae_step_path(w) == SAEFW_SAE_SPARSE, "the sparse path did not run");
    if (nnz) *nnz = llround(st.l0 * (double)B);
    saefw_sae_step_free(w);
    saefw_sae_set_path(SAEFW_SAE_AUTO);
}

/* `steps` Adam steps on this test's generated batches. */
static void train(saefw_sae *sae, int64_t B, int64_t steps, double lr, saefw_sae_path path,
                  saefw_train_event_fn on_event, void *ud) {
    gen g = {0, B, sae->d_in};
    t_train_adam(sae, B, steps, lr, path, next_batch, &g, on_event, ud);
}

static const char *path_name(saefw_sae_path p) { return p == SAEFW_SAE_DENSE ? "dense" : "sparse"; }

/* Prints got next to PyTorch-float32's distance and checks got <= 2 x it. */
static void check_dist(const char *what, const char *name, saefw_sae_path path, double got, double torch) {
    const int ok = got <= 2.0 * torch;
    printf("  %-10s %-5s %-6s saefw %.3e  torch-f32 %.3e  ratio %.2f%s\n", what, name, path_name(path), got, torch,
           got / torch, ok ? "" : "  <-- FAIL (limit 2)");
    CHECK(ok, "%s %s on the %s path: %.3e from float64, PyTorch-float32 %.3e", what, name, path_name(path), got, torch);
}

static int ctest_case(int train_too) {
    saefw_tensorfile *tf = NULL;
    char err[1024];
    REQUIRE(saefw_tf_open("fixtures/exactness/issue.safetensors", &tf, err, sizeof err) == 0, "%s", err);
    const int64_t d_in = (int64_t)t_meta(tf, "d_in"), d_sae = (int64_t)t_meta(tf, "d_sae");
    const int64_t B = (int64_t)t_meta(tf, "B");
    const int64_t steps = (int64_t)t_meta(tf, "steps");
    const double lr = t_meta(tf, "lr"), l1 = t_meta(tf, "l1");
    saefw_sae init;
    REQUIRE(saefw_sae_alloc(&init, d_in, d_sae, (float)l1, err, sizeof err) == 0, "%s", err);
    init_state(&init);

    /* The float64 final state: W_enc and W_dec as int16 steps from the initial state. */
    float *ref[4];
    for (int i = 0; i < 4; i++) {
        char key[64];
        ref[i] = malloc(sizeof(float) * (size_t)init.numel[i]);
        REQUIRE(ref[i], "out of memory");
        if (i < 2) {
            snprintf(key, sizeof key, "final_%s_q", NAMES[i]);
            const saefw_tensor_info *q = saefw_tf_find(tf, key);
            REQUIRE(q && q->dtype == SAEFW_DT_I16 && q->numel == init.numel[i], "fixture tensor %s", key);
            snprintf(key, sizeof key, "final_%s_scale", NAMES[i]);
            const double scale = t_meta(tf, key);
            const int16_t *v = q->data;
            for (int64_t k = 0; k < q->numel; k++) ref[i][k] = (float)((double)init.p[i][k] + scale * (double)v[k]);
        } else {
            snprintf(key, sizeof key, "final_%s", NAMES[i]);
            float *v = t_tensor(tf, key, NULL);
            memcpy(ref[i], v, sizeof(float) * (size_t)init.numel[i]);
            free(v);
        }
    }
    float *g0[4];
    static const char *G0[4] = {"grad0_W_enc_cols128", "grad0_W_dec_rows128", "grad0_b_enc", "grad0_b_dec"};
    for (int i = 0; i < 4; i++) g0[i] = t_tensor(tf, G0[i], NULL);

    float *x = malloc(sizeof(float) * (size_t)(B * d_in)), *slice = malloc(sizeof(float) * (size_t)(d_in * 128));
    REQUIRE(x && slice, "out of memory");
    make_batch(0, B, d_in, x);
    static const saefw_sae_path PATHS[2] = {SAEFW_SAE_DENSE, SAEFW_SAE_SPARSE};
    for (int p = 0; p < 2; p++) {
        saefw_sae s;
        REQUIRE(saefw_sae_alloc(&s, d_in, d_sae, (float)l1, err, sizeof err) == 0, "%s", err);
        memcpy(s.params, init.params, sizeof(float) * s.n_total);
        int64_t nnz = 0;
        grads(&s, x, B, PATHS[p], &nnz);
        printf("%s path, first step: %.2f %% of entries active\n", path_name(PATHS[p]),
               100.0 * (double)nnz / (double)(B * d_sae));
        for (int64_t i = 0; i < d_in; i++) memcpy(slice + i * 128, s.g[SAEFW_W_ENC] + i * d_sae, sizeof(float) * 128);
        const double gd[4] = {dist(slice, g0[0], d_in * 128), dist(s.g[SAEFW_W_DEC], g0[1], 128 * d_in),
                              dist(s.g[SAEFW_B_ENC], g0[2], d_sae), dist(s.g[SAEFW_B_DEC], g0[3], d_in)};
        for (int i = 0; i < 4; i++) {
            char key[64];
            snprintf(key, sizeof key, "torch_f32_grad_%s", NAMES[i]);
            check_dist("grad 1", NAMES[i], PATHS[p], gd[i], t_meta(tf, key));
        }
        memcpy(s.params, init.params, sizeof(float) * s.n_total);
        if (train_too) train(&s, B, steps, lr, PATHS[p], NULL, NULL);
        for (int i = 0; i < 4; i++) {
            char key[64], what[32];
            snprintf(key, sizeof key, "torch_f32_final_%s", NAMES[i]);
            snprintf(what, sizeof what, "step %lld", (long long)steps);
            if (!train_too) break;
            check_dist(what, NAMES[i], PATHS[p], dist(s.p[i], ref[i], s.numel[i]), t_meta(tf, key));
        }
        saefw_sae_free(&s);
    }
    for (int i = 0; i < 4; i++) {
        free(ref[i]);
        free(g0[i]);
    }
    free(x);
    free(slice);
    saefw_sae_free(&init);
    saefw_tf_close(tf);
    return t_finish("test_exactness");
}

static float *read_f32(const char *dir, const char *name, int64_t n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    REQUIRE(f, "%s: cannot open", path);
    float *v = malloc(sizeof(float) * (size_t)n);
    REQUIRE(v && fread(v, sizeof(float), (size_t)n, f) == (size_t)n, "%s: short read", path);
    fclose(f);
    return v;
}

/* The seed's shape, 5 steps at lr 1e-4, on both paths, against DIR/final_*.f32 and DIR/torch_f32.txt. */
static int seed_shape(const char *dir) {
    const int64_t d_in = 2048, d_sae = 16384, B = 4096, steps = 5;
    char err[512], path[1024];
    double torch[4];
    snprintf(path, sizeof path, "%s/torch_f32.txt", dir);
    FILE *f = fopen(path, "r");
    REQUIRE(f, "%s: cannot open", path);
    for (int i = 0; i < 4; i++) REQUIRE(fscanf(f, "%*s %lf", &torch[i]) == 1, "%s: line %d", path, i + 1);
    fclose(f);
    static const saefw_sae_path PATHS[2] = {SAEFW_SAE_DENSE, SAEFW_SAE_SPARSE};
    for (int p = 0; p < 2; p++) {
        saefw_sae s;
        REQUIRE(saefw_sae_alloc(&s, d_in, d_sae, 3e-4f, err, sizeof err) == 0, "%s", err);
        init_state(&s);
        train(&s, B, steps, 1e-4, PATHS[p], NULL, NULL);
        for (int i = 0; i < 4; i++) {
            char name[64];
            snprintf(name, sizeof name, "final_%s.f32", NAMES[i]);
            float *ref = read_f32(dir, name, s.numel[i]);
            check_dist("step 5", NAMES[i], PATHS[p], dist(s.p[i], ref, s.numel[i]), torch[i]);
            free(ref);
        }
        saefw_sae_free(&s);
    }
    return t_finish("test_exactness --seed-shape");
}

typedef struct {
    saefw_sae *sae;
    const char *dir;
} traj;

/* After step k: W_enc's distance from the float64 run's (its parameters before step k + 1) and where. */
static int traj_event(void *ud, saefw_event event, const saefw_metrics *m, char *err, size_t errlen) {
    const traj *t = ud;
    if (event != SAEFW_EVENT_LOG || m->step + 1 >= 20) return 0;
    char name[64];
    snprintf(name, sizeof name, "step%02lld_W_enc.f32", (long long)m->step + 1);
    const int64_t n = t->sae->numel[SAEFW_W_ENC], d_sae = t->sae->d_sae;
    float *ref = read_f32(t->dir, name, n);
    double d = 0, mx = 0;
    int64_t at = 0;
    for (int64_t k = 0; k < n; k++) {
        double e = fabs((double)t->sae->p[SAEFW_W_ENC][k] - ref[k]);
        if (e > d) {
            d = e;
            at = k;
        }
        mx = t_max(mx, fabs((double)ref[k]));
    }
    printf("  after step %2lld: W_enc %.3e (row %lld, feature %lld)\n", (long long)m->step, d / mx,
           (long long)(at / d_sae), (long long)(at % d_sae));
    free(ref);
    return 0;
}

/* Each step's gradients at the float64 run's parameters (DIR from the script's --dump), both paths. */
static int per_step(const char *dir) {
    const int64_t d_in = 512, d_sae = 4096, B = 1024;
    char err[512];
    float *x = malloc(sizeof(float) * (size_t)(B * d_in));
    REQUIRE(x, "out of memory");
    for (int64_t k = 0; k < 20; k++) {
        make_batch(k, B, d_in, x);
        printf("step %2lld:", (long long)k);
        for (int p = 0; p < 2; p++) {
            saefw_sae s;
            REQUIRE(saefw_sae_alloc(&s, d_in, d_sae, 3e-4f, err, sizeof err) == 0, "%s", err);
            for (int i = 0; i < 4; i++) {
                char name[64];
                snprintf(name, sizeof name, "step%02lld_%s.f32", (long long)k, NAMES[i]);
                float *v = read_f32(dir, name, s.numel[i]);
                memcpy(s.p[i], v, sizeof(float) * (size_t)s.numel[i]);
                free(v);
            }
            grads(&s, x, B, p ? SAEFW_SAE_SPARSE : SAEFW_SAE_DENSE, NULL);
            printf("  %s", p ? "sparse" : "dense");
            for (int i = 0; i < 4; i++) {
                char name[64];
                snprintf(name, sizeof name, "step%02lld_grad_%s.f32", (long long)k, NAMES[i]);
                float *ref = read_f32(dir, name, s.numel[i]);
                printf(" %s %.2e", NAMES[i], dist(s.g[i], ref, s.numel[i]));
                free(ref);
            }
            saefw_sae_free(&s);
        }
        printf("\n");
    }
    for (int p = 0; p < 2; p++) {
        saefw_sae s;
        REQUIRE(saefw_sae_alloc(&s, d_in, d_sae, 3e-4f, err, sizeof err) == 0, "%s", err);
        init_state(&s);
        printf("%s path, trajectory:\n", p ? "sparse" : "dense");
        traj t = {&s, dir};
        train(&s, B, 20, 1e-3, p ? SAEFW_SAE_SPARSE : SAEFW_SAE_DENSE, traj_event, &t);
        saefw_sae_free(&s);
    }
    free(x);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--seed-shape") == 0) return seed_shape(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--steps") == 0) return per_step(argv[2]);
    if (argc == 2 && strcmp(argv[1], "--grads") == 0) return ctest_case(0);
    REQUIRE(argc == 1, "usage: test_exactness [--grads | --seed-shape DIR | --steps DIR]");
    return ctest_case(1);
}
