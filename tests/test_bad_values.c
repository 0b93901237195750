/* Values that used to pass silently and now give a clear error: a checkpoint holding a NaN or an
 * infinite weight (it surfaced later as a NaN loss), an l1_coeff that is not a number (it became 0),
 * a model weight that is NaN (it surfaced as "step 0: the loss is NaN", naming no tensor). */
#include <math.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "model.h"
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

    /* The bundled tiny model with one NaN in blocks.0.mlp.W_in: refused at load, naming the tensor. */
    saefw_tensorfile *tf = NULL;
    REQUIRE(saefw_tf_open("../models/tiny-1l/model.safetensors", &tf, err, sizeof err) == 0, "%s", err);
    int n = saefw_tf_count(tf);
    saefw_tensor_ref *refs = calloc((size_t)n, sizeof *refs);
    float *poisoned = NULL;
    REQUIRE(refs, "out of memory");
    for (int i = 0; i < n; i++) {
        const saefw_tensor_info *t = saefw_tf_get(tf, i);
        refs[i] = (saefw_tensor_ref){t->name, t->dtype, t->ndim, t->shape, t->data};
        if (!strcmp(t->name, "blocks.0.mlp.W_in")) {
            REQUIRE(t->dtype == SAEFW_DT_F32 && (poisoned = malloc(t->nbytes)), "W_in is not F32");
            memcpy(poisoned, t->data, t->nbytes);
            poisoned[7] = NAN;
            refs[i].data = poisoned;
        }
    }
    REQUIRE(poisoned, "the tiny model has no blocks.0.mlp.W_in");
    snprintf(dir, sizeof dir, "%s/model", tmp);
    REQUIRE(mkdir(dir, 0755) == 0, "mkdir %s", dir);
    char path[2200], cmd[4500];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    REQUIRE(saefw_safetensors_write(path, refs, n, NULL, 0, err, sizeof err) == 0, "%s", err);
    snprintf(cmd, sizeof cmd, "cp ../models/tiny-1l/config.json '%s/'", dir);
    REQUIRE(system(cmd) == 0, "%s", cmd);
    saefw_model *m = NULL;
    err[0] = 0;
    int rc = saefw_model_load(path, NULL, &m, err, sizeof err);
    printf("  %-24s -> %s\n", "NaN in a model weight", err);
    CHECK(rc != 0 && !m && strstr(err, "tensor blocks.0.mlp.W_in holds NaN at element 7"), "NaN model weight: %s", err);
    if (m) saefw_model_free(m);
    free(poisoned);
    free(refs);
    saefw_tf_close(tf);
    return t_finish("test_bad_values");
}
