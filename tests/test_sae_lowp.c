/* enc_dtype (issue 19, point 4): the kernel the CPU gets, rounding to bf16 and fp16, the first step's
 * x_hat and gradients and the parameters after a few Adam steps through the real training loop, on the
 * dense and the sparse path, against tests/fixtures/sae/lowp.safetensors (written by
 * tests/reference/make_lowp_fixtures.py from the semantics: operands rounded by PyTorch's casts,
 * products summed in float64), and enc_dtype through cfg.json. */
#include "checkpoint.h"
#include "plugin_loader.h"
#include "sae.h"
#include "sae_lowp.h"
#include "testtrain.h"
#include "testutil.h"
#include "train.h"
#include "util.h"

#include <stdint.h>

static const char *const NAMES[4] = {"W_enc", "W_dec", "b_enc", "b_dec"};

/* First step: x_hat and gradients are sums of exact products in fp32 against float64 sums rounded once:
 * within TOL_STEP x max |ref| of the reference. Except where an intermediate that is rounded to the low
 * precision (acts, dL/dx_hat, dL/dpre) lies within an fp32 rounding error of a rounding boundary: it
 * then rounds one low-precision step the other way here than there, and moves the elements it feeds by
 * up to that step (2^-8 relative for bf16, 2^-11 for fp16). So: all elements within TOL_FLIP, at most
 * MAX_OFF of them beyond TOL_STEP; and the fp32-product reference has at least MIN_OFF_FP32 of them
 * beyond TOL_STEP (the test tells the precisions apart). */
#define TOL_STEP 2e-5
#define TOL_FLIP 4e-3
#define MAX_OFF 0.01
#define MIN_OFF_FP32 0.2
/* After the Adam steps: an element whose gradient is near zero moves by about lr either way, so the
 * sums' rounding can show at lr's scale; max |p| is about 0.2, lr 1e-3. */
#define TOL_FINAL 2e-2
#define TOL_FINAL_ELEM 1e-4

/* The CPU's flags from /proc/cpuinfo (independent of the engine's cpuid check): 1 if `flag` is listed. */
static int cpu_flag(const char *flag) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return -1;
    char line[8192];
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        if (strncmp(line, "flags", 5) == 0) {
            for (char *tok = strtok(strchr(line, ':') ? strchr(line, ':') + 1 : line, " \t\n"); tok;
                 tok = strtok(NULL, " \t\n"))
                if (strcmp(tok, flag) == 0) found = 1;
            break;
        }
    fclose(f);
    return found;
}

static void check_dispatch(void) {
    const int bf16 = cpu_flag("avx512_bf16");
    const char *k = saefw_lowp_kernel(SAEFW_ENC_BF16);
    printf("cpu avx512_bf16: %s; bf16 kernel: %s\n", bf16 < 0 ? "unknown" : bf16 ? "yes" : "no", k);
    if (bf16 == 0) CHECK(strcmp(k, "sgemm") == 0, "no avx512_bf16 here, but the bf16 kernel is %s", k);
    if (bf16 == 1 && !getenv("SAEFW_LOWP_KERNEL")) CHECK(strcmp(k, "avx512bf16") == 0, "avx512_bf16 but kernel %s", k);
    CHECK(strcmp(saefw_lowp_kernel(SAEFW_ENC_FP16), "sgemm") == 0, "fp16 takes the fallback everywhere");
    CHECK(strcmp(saefw_lowp_kernel(SAEFW_ENC_FP32), "sgemm") == 0, "fp32 is sgemm");
}

static void check_rounding(void) {
    /* bf16 keeps 8 significant bits: 1 + 2^-8 is a tie (to even: 1), 1 + 3 2^-8 a tie (up to 1 + 2^-6). */
    const float in[] = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-8f + 0x1p-20f, -2.5f, 3.4e38f, NAN, 0.0f};
    const float bf[] = {1.0f, 1.0f + 0x1p-6f, 1.0f + 0x1p-7f, -2.5f, INFINITY, NAN, 0.0f};
    float out[7];
    saefw_lowp_round(out, in, 7, SAEFW_ENC_BF16, 1.0f);
    for (int i = 0; i < 7; i++)
        CHECK(isnan(bf[i]) ? isnan(out[i]) : out[i] == bf[i], "bf16(%.9g) = %.9g, want %.9g", in[i], out[i], bf[i]);
    /* fp16: 11 bits, largest 65504, subnormals from 2^-24; a scale of 2^10 keeps 2^-30 normal. */
    const float hin[] = {1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, 65504.0f, 65520.0f, 1e-8f, 0x1p-30f * 1.5f};
    const float hout[] = {1.0f, 1.0f + 0x1p-9f, 65504.0f, INFINITY, 0.0f, 0.0f};
    saefw_lowp_round(out, hin, 6, SAEFW_ENC_FP16, 1.0f);
    for (int i = 0; i < 6; i++) CHECK(out[i] == hout[i], "fp16(%.9g) = %.9g, want %.9g", hin[i], out[i], hout[i]);
    saefw_lowp_round(out, hin + 5, 1, SAEFW_ENC_FP16, 1024.0f);
    CHECK(out[0] == 0x1p-30f * 1.5f, "fp16 with scale 2^10 keeps 1.5 2^-30 (got %.9g)", out[0]);
    CHECK(saefw_lowp_grad_scale(SAEFW_ENC_FP16, 520) == 8192.0f && saefw_lowp_grad_scale(SAEFW_ENC_BF16, 520) == 1.0f,
          "grad scale");
    saefw_enc_dtype dt;
    char err[256];
    CHECK(saefw_enc_dtype_parse("bf16", &dt, err, sizeof err) == 0 && dt == SAEFW_ENC_BF16, "parse bf16");
    CHECK(saefw_enc_dtype_parse("float8", &dt, err, sizeof err) != 0 && strstr(err, "float8"), "parse error: %s", err);
}

typedef struct {
    const float *batches;
    int64_t next, B, d_in, steps;
} gen;

static int next_batch(void *ud, float *out, int64_t B, char *err, size_t errlen) {
    gen *g = ud;
    if (B != g->B || g->next >= g->steps) return saefw_errf(err, errlen, "unexpected batch request");
    memcpy(out, g->batches + g->next++ * B * g->d_in, sizeof(float) * (size_t)(B * g->d_in));
    return 0;
}

/* `steps` Adam steps replaying the fixture's batches. */
static void train(saefw_sae *sae, const float *batches, int64_t B, int64_t steps, double lr, saefw_sae_path path) {
    gen g = {batches, 0, B, sae->d_in, steps};
    t_train_adam(sae, B, steps, lr, path, next_batch, &g, NULL, NULL);
}

/* Fraction of elements farther than tol x max |ref| from ref. A NaN counts as far. */
static double frac_off(const float *got, const float *ref, int64_t n, double tol) {
    double m = 0;
    for (int64_t k = 0; k < n; k++) m = t_max(m, fabs((double)ref[k]));
    int64_t off = 0;
    for (int64_t k = 0; k < n; k++) off += !(fabs((double)got[k] - (double)ref[k]) <= tol * m);
    return (double)off / (double)n;
}

/* The checks described at TOL_STEP for a low-precision result (ref32: the fp32-product reference, or
 * NULL where the low precision hardly shows, as in the bias gradients). */
static void check_lowp(const char *what, const float *got, const float *ref, const float *ref32, int64_t n) {
    t_close(what, got, ref, n, TOL_FLIP, 0);
    const double off = frac_off(got, ref, n, TOL_STEP);
    printf("  %-28s %.2f %% of elements beyond %.0e x max", what, 100 * off, TOL_STEP);
    CHECK(off <= MAX_OFF, "%s: %.2f %% of elements beyond %.0e x max (at most %.0f %%)", what, 100 * off, TOL_STEP,
          100 * MAX_OFF);
    if (ref32) {
        const double off32 = frac_off(got, ref32, n, TOL_STEP);
        printf("; against fp32 products %.2f %%", 100 * off32);
        CHECK(off32 >= MIN_OFF_FP32, "%s: only %.2f %% of elements differ from fp32 products (operands not rounded?)",
              what, 100 * off32);
    }
    printf("\n");
}

static float *fixture(saefw_tensorfile *tf, const char *dt, const char *what, const char *name) {
    char key[96];
    snprintf(key, sizeof key, "%s%s%s%s", dt, dt[0] ? "_" : "", what, name);
    return t_tensor(tf, key, NULL);
}

/* One training step's gradients (the backward pass fused into the forward pass, as the loop runs it) of
 * the fixture's first batch from sae's parameters, and the evaluation forward pass's x_hat, against the
 * reference. */
static void check_first_step(saefw_tensorfile *tf, saefw_sae *sae, const float *batches, saefw_sae_path path,
                             saefw_enc_dtype dt) {
    char err[512], what[96];
    const int64_t d_in = sae->d_in, B = (int64_t)t_meta(tf, "batch");
    const char *pname = path == SAEFW_SAE_DENSE ? "dense" : "sparse", *dname = saefw_enc_dtype_name(dt);
    saefw_sae_step *w = NULL;
    saefw_sae_eval *e = NULL;
    saefw_sae_set_path(path);
    REQUIRE(saefw_sae_step_alloc(&w, sae, B, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_sae_eval_alloc(&e, sae, B, err, sizeof err) == 0, "%s", err);
    saefw_sae_set_path(SAEFW_SAE_AUTO);
    const float *x_hat = saefw_sae_eval_forward(sae, e, batches, B, NULL);
    saefw_sae_train_step(sae, w, batches, B, NULL);
    CHECK(saefw_sae_step_path(w) == path, "%s: the %s path did not run", dname, pname);
    float *ref = fixture(tf, dname, "", "x_hat"), *ref32 = fixture(tf, "fp32", "", "x_hat");
    snprintf(what, sizeof what, "%s %s x_hat", dname, pname);
    if (dt == SAEFW_ENC_FP32) t_close(what, x_hat, ref, B * d_in, TOL_STEP, 0);
    else check_lowp(what, x_hat, ref, ref32, B * d_in);
    free(ref);
    free(ref32);
    for (int i = 0; i < 4; i++) {
        ref = fixture(tf, dname, "grad_", NAMES[i]);
        snprintf(what, sizeof what, "%s %s grad %s", dname, pname, NAMES[i]);
        if (dt == SAEFW_ENC_FP32) t_close(what, sae->g[i], ref, sae->numel[i], TOL_STEP, 0);
        else {
            ref32 = i < 2 ? fixture(tf, "fp32", "grad_", NAMES[i]) : NULL;
            check_lowp(what, sae->g[i], ref, ref32, sae->numel[i]);
            free(ref32);
        }
        free(ref);
    }
    saefw_sae_step_free(w);
    saefw_sae_eval_free(e);
}

static void check_case(saefw_tensorfile *tf, saefw_sae_path path, saefw_enc_dtype dt) {
    char err[512], what[96];
    const int64_t d_in = (int64_t)t_meta(tf, "d_in"), d_sae = (int64_t)t_meta(tf, "d_sae");
    const int64_t B = (int64_t)t_meta(tf, "batch"), steps = (int64_t)t_meta(tf, "steps");
    const char *pname = path == SAEFW_SAE_DENSE ? "dense" : "sparse", *dname = saefw_enc_dtype_name(dt);
    printf("%s, %s path:\n", dname, pname);
    saefw_sae sae;
    REQUIRE(saefw_sae_alloc(&sae, d_in, d_sae, (float)t_meta(tf, "l1_coeff"), err, sizeof err) == 0, "%s", err);
    sae.enc_dtype = dt;
    float *init[4];
    for (int i = 0; i < 4; i++) {
        init[i] = fixture(tf, "", "init_", NAMES[i]);
        memcpy(sae.p[i], init[i], sizeof(float) * (size_t)sae.numel[i]);
    }
    float *batches = t_tensor(tf, "batches", NULL);

    check_first_step(tf, &sae, batches, path, dt);

    if (dt != SAEFW_ENC_FP32) {
        float *ref;
        for (int i = 0; i < 4; i++) memcpy(sae.p[i], init[i], sizeof(float) * (size_t)sae.numel[i]);
        train(&sae, batches, B, steps, t_meta(tf, "lr"), path);
        for (int i = 0; i < 4; i++) {
            ref = fixture(tf, dname, "final_", NAMES[i]);
            snprintf(what, sizeof what, "%s %s %lld steps %s", dname, pname, (long long)steps, NAMES[i]);
            t_close(what, sae.p[i], ref, sae.numel[i], TOL_FINAL, 0);
            const double off = frac_off(sae.p[i], ref, sae.numel[i], TOL_FINAL_ELEM);
            CHECK(off <= MAX_OFF, "%s: %.2f %% of elements beyond %.0e x max", what, 100 * off, TOL_FINAL_ELEM);
            free(ref);
        }
    }
    for (int i = 0; i < 4; i++) free(init[i]);
    free(batches);
    saefw_sae_free(&sae);
}

/* enc_dtype goes into cfg.json and comes back; a wrong one is refused with the file's name. */
static void check_checkpoint(void) {
    char err[1024], path[1200];
    const char *dir = t_tmpdir("test_sae_lowp");
    saefw_sae a, b;
    REQUIRE(saefw_sae_alloc(&a, 8, 16, 1e-3f, err, sizeof err) == 0, "%s", err);
    a.enc_dtype = SAEFW_ENC_BF16;
    snprintf(path, sizeof path, "%s/ck", dir);
    REQUIRE(saefw_checkpoint_save(path, &a, NULL, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_checkpoint_load(path, &b, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(b.enc_dtype == SAEFW_ENC_BF16, "enc_dtype after a round trip: %s", saefw_enc_dtype_name(b.enc_dtype));
    saefw_sae_free(&b);
    char cfgp[1300], *text = NULL;
    snprintf(cfgp, sizeof cfgp, "%s/cfg.json", path);
    REQUIRE(saefw_read_file(cfgp, &text, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(strstr(text, "\"enc_dtype\":\t\"bf16\"") != NULL, "cfg.json: %s", text);
    char *at = strstr(text, "\"bf16\"");
    REQUIRE(at, "no bf16 in cfg.json");
    memcpy(at, "\"bf15\"", 6);
    REQUIRE(saefw_write_file_atomic(cfgp, text, strlen(text), err, sizeof err) == 0, "%s", err);
    free(text);
    CHECK(saefw_checkpoint_load(path, &b, NULL, err, sizeof err) != 0 && strstr(err, "cfg.json") && strstr(err, "bf15"),
          "a bad enc_dtype: %s", err);
    saefw_sae_free(&a);
}

int main(void) {
    check_dispatch();
    check_rounding();
    saefw_tensorfile *tf = NULL;
    char err[1024];
    REQUIRE(saefw_tf_open("fixtures/sae/lowp.safetensors", &tf, err, sizeof err) == 0, "%s", err);
    static const saefw_sae_path PATHS[2] = {SAEFW_SAE_DENSE, SAEFW_SAE_SPARSE};
    static const saefw_enc_dtype DTS[3] = {SAEFW_ENC_FP32, SAEFW_ENC_BF16, SAEFW_ENC_FP16};
    for (int d = 0; d < 3; d++)
        for (int p = 0; p < 2; p++) check_case(tf, PATHS[p], DTS[d]);
    saefw_tf_close(tf);
    check_checkpoint();
    return t_finish("test_sae_lowp");
}
