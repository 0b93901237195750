/* Values that used to pass silently and now give a clear error: a checkpoint holding a NaN or an
 * infinite weight (it surfaced later as a NaN loss), an l1_coeff that is not a number (it became 0). */
#include <math.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "testutil.h"

enum { D_IN = 4, D_SAE = 6 };

/* A checkpoint folder written by hand: the four tensors (one value replaced) and cfg.json text. */
static void write_ckpt(const char *dir, int param, float bad, const char *cfg) {
    REQUIRE(mkdir(dir, 0755) == 0, "mkdir %s", dir);
    static float w[SAEFW_N_PARAMS][D_IN * D_SAE];
    const int64_t shapes[SAEFW_N_PARAMS][2] = {{D_IN, D_SAE}, {D_SAE, D_IN}, {D_SAE, 0}, {D_IN, 0}};
    saefw_tensor_ref refs[SAEFW_N_PARAMS];
    for (int i = 0; i < SAEFW_N_PARAMS; i++) {
        for (int k = 0; k < D_IN * D_SAE; k++) w[i][k] = 0.25f * (float)(k % 5);
        refs[i].name = saefw_param_name(i);
        refs[i].dtype = SAEFW_DT_F32;
        refs[i].ndim = shapes[i][1] ? 2 : 1;
        refs[i].shape = shapes[i];
        refs[i].data = w[i];
    }
    if (param >= 0) w[param][3] = bad;
    char p[2200], err[512];
    snprintf(p, sizeof p, "%s/sae_weights.safetensors", dir);
    REQUIRE(saefw_safetensors_write(p, refs, SAEFW_N_PARAMS, NULL, 0, err, sizeof err) == 0, "%s", err);
    snprintf(p, sizeof p, "%s/cfg.json", dir);
    FILE *f = fopen(p, "w");
    REQUIRE(f && fputs(cfg, f) >= 0 && fclose(f) == 0, "writing %s", p);
}

static void expect_error(const char *what, const char *dir, const char *phrase) {
    saefw_sae s;
    char err[1024] = "";
    int rc = saefw_checkpoint_load(dir, &s, NULL, err, sizeof err);
    printf("  %-24s -> %s\n", what, err);
    if (rc == 0) saefw_sae_free(&s);
    CHECK(rc != 0 && strstr(err, phrase), "%s: loaded, or the error lacks '%s': %s", what, phrase, err);
}

int main(void) {
    const char *tmp = t_tmpdir("test_bad_values");
    const char *cfg = "{\"d_in\": 4, \"d_sae\": 6, \"l1_coeff\": 0.001}";
    char dir[2048];
    snprintf(dir, sizeof dir, "%s/good", tmp);
    write_ckpt(dir, -1, 0, cfg);
    saefw_sae s;
    char err[1024];
    CHECK(saefw_checkpoint_load(dir, &s, NULL, err, sizeof err) == 0, "a good checkpoint: %s", err);
    if (s.params) saefw_sae_free(&s);

    snprintf(dir, sizeof dir, "%s/nan", tmp);
    write_ckpt(dir, SAEFW_B_ENC, NAN, cfg);
    expect_error("NaN in b_enc", dir, "tensor 'b_enc' holds NaN at element 3");
    snprintf(dir, sizeof dir, "%s/inf", tmp);
    write_ckpt(dir, SAEFW_W_DEC, -INFINITY, cfg);
    expect_error("infinite W_dec", dir, "tensor 'W_dec' holds an infinite value at element 3");
    snprintf(dir, sizeof dir, "%s/l1_string", tmp);
    write_ckpt(dir, -1, 0, "{\"d_in\": 4, \"d_sae\": 6, \"l1_coeff\": \"3e-4\"}");
    expect_error("l1_coeff a string", dir, "l1_coeff must be a number, not a string");
    snprintf(dir, sizeof dir, "%s/l1_null", tmp);
    write_ckpt(dir, -1, 0, "{\"d_in\": 4, \"d_sae\": 6, \"l1_coefficient\": null}");
    expect_error("l1_coefficient null", dir, "l1_coefficient must be a number");
    return t_finish("test_bad_values");
}
