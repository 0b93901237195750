/* Checkpoints: bit-exact round trip, atomic replacement, refusal of NaN weights, clear errors for
 * truncated or corrupted safetensors and for a cfg.json with a missing key, and loading the seed's
 * own N.pt + N_cfg.json (written by tests/reference/make_sae_fixtures.py with torch.save). */
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "testutil.h"

static int same_sae(const saefw_sae *a, const saefw_sae *b) {
    if (a->d_in != b->d_in || a->d_sae != b->d_sae) return 0;
    return memcmp(a->params, b->params, sizeof(float) * a->n_total) == 0;
}

static void sh(const char *fmt, const char *a, const char *b) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, fmt, a, b);
    REQUIRE(system(cmd) == 0, "command failed: %s", cmd);
}

static void expect_load_error(const char *what, const char *path, const char *phrase) {
    saefw_sae s;
    char err[1024] = "";
    int rc = saefw_checkpoint_load(path, &s, NULL, err, sizeof err);
    printf("  %-26s -> %s\n", what, err);
    CHECK(rc != 0, "%s: loaded", what);
    if (rc == 0) saefw_sae_free(&s);
    CHECK(strstr(err, phrase) != NULL, "%s: error '%s' lacks '%s'", what, err, phrase);
}

int main(void) {
    const char *tmp = t_tmpdir("test_checkpoint");
    char dir[2048], path[2048], err[1024];
    saefw_sae a;
    REQUIRE(saefw_sae_alloc(&a, 12, 40, 3e-4f, err, sizeof err) == 0, "%s", err);
    saefw_rng rng;
    saefw_rng_seed(&rng, 5);
    saefw_sae_init_params(&a, &rng);
    for (int64_t j = 0; j < a.d_sae; j++) a.p[SAEFW_B_ENC][j] = (float)saefw_rng_normal(&rng);
    for (int64_t i = 0; i < a.d_in; i++)
        a.p[SAEFW_B_DEC][i] = (float)saefw_rng_normal(&rng) * 1e-20f; /* denormal-ish */

    snprintf(dir, sizeof dir, "%s/0", tmp);
    cJSON *cfg = cJSON_CreateObject();
    cJSON_AddStringToObject(cfg, "hook_name", "blocks.0.mlp.hook_post");
    cJSON_AddNumberToObject(cfg, "lr", 1e-4);
    CHECK(saefw_checkpoint_save(dir, &a, cfg, err, sizeof err) == 0, "save: %s", err);

    saefw_sae b;
    cJSON *got = NULL;
    CHECK(saefw_checkpoint_load(dir, &b, &got, err, sizeof err) == 0, "load: %s", err);
    CHECK(same_sae(&a, &b), "round trip is not bit-exact");
    CHECK(b.l1_coeff == a.l1_coeff, "l1_coeff %g vs %g", b.l1_coeff, a.l1_coeff);
    const cJSON *hn = cJSON_GetObjectItemCaseSensitive(got, "hook_name");
    CHECK(cJSON_IsString(hn) && !strcmp(hn->valuestring, "blocks.0.mlp.hook_post"), "hook_name lost");
    const cJSON *dsae = cJSON_GetObjectItemCaseSensitive(got, "d_sae");
    CHECK(cJSON_IsNumber(dsae) && dsae->valuedouble == 40, "d_sae not written");
    printf("  round trip: bit-exact %s\n", same_sae(&a, &b) ? "yes" : "NO");
    cJSON_Delete(got);
    saefw_sae_free(&b);

    /* Saving again over the same folder replaces it whole; no temporary folder is left behind. */
    a.p[SAEFW_W_ENC][0] += 1.0f;
    CHECK(saefw_checkpoint_save(dir, &a, cfg, err, sizeof err) == 0, "resave: %s", err);
    CHECK(saefw_checkpoint_load(dir, &b, NULL, err, sizeof err) == 0 && same_sae(&a, &b), "resave not loaded back");
    saefw_sae_free(&b);
    CHECK(saefw_checkpoint_next_version(tmp) == 1, "next version %d", saefw_checkpoint_next_version(tmp));
    char listing[4096];
    T_FMT(path, "ls -A '%s' > '%s/../ls.txt'", tmp, tmp);
    REQUIRE(system(path) == 0, "ls");
    snprintf(path, sizeof path, "%s/../ls.txt", tmp);
    FILE *f = fopen(path, "r");
    size_t nread = f ? fread(listing, 1, sizeof listing - 1, f) : 0;
    if (f) fclose(f);
    listing[nread] = 0;
    CHECK(strcmp(listing, "0\n") == 0, "run folder holds more than the checkpoint: %s", listing);

    /* NaN weights are refused and the checkpoint on disk stays as it was. */
    saefw_sae nan_sae;
    REQUIRE(saefw_sae_alloc(&nan_sae, 12, 40, 3e-4f, err, sizeof err) == 0, "%s", err);
    memcpy(nan_sae.params, a.params, sizeof(float) * a.n_total);
    nan_sae.p[SAEFW_W_DEC][7] = NAN;
    CHECK(saefw_checkpoint_save(dir, &nan_sae, cfg, err, sizeof err) != 0 && strstr(err, "non-finite W_dec"),
          "NaN checkpoint written: %s", err);
    CHECK(saefw_checkpoint_load(dir, &b, NULL, err, sizeof err) == 0 && same_sae(&a, &b), "good checkpoint damaged");
    saefw_sae_free(&b);
    saefw_sae_free(&nan_sae);

    /* Damaged files. */
    snprintf(path, sizeof path, "%s/trunc", tmp);
    sh("cp -r '%s' '%s'", dir, path);
    sh("truncate -s 300 '%s/sae_weights.safetensors'%s", path, "");
    expect_load_error("truncated safetensors", path, "sae_weights.safetensors");
    snprintf(path, sizeof path, "%s/trunc_tail", tmp);
    sh("cp -r '%s' '%s'", dir, path);
    sh("truncate -s -4 '%s/sae_weights.safetensors'%s", path, "");
    expect_load_error("safetensors missing 4 bytes", path, "sae_weights.safetensors");
    snprintf(path, sizeof path, "%s/corrupt", tmp);
    sh("cp -r '%s' '%s'", dir, path);
    sh("printf 'XXXX' | dd of='%s/sae_weights.safetensors' bs=1 seek=10 conv=notrunc status=none%s", path, "");
    expect_load_error("corrupted header", path, "sae_weights.safetensors");
    snprintf(path, sizeof path, "%s/nokey", tmp);
    sh("cp -r '%s' '%s'", dir, path);
    sh("sed -i '/\"d_sae\"/d' '%s/cfg.json'%s", path, "");
    expect_load_error("cfg.json without d_sae", path, "cfg.json: missing key 'd_sae'");
    snprintf(path, sizeof path, "%s/badshape", tmp);
    sh("cp -r '%s' '%s'", dir, path);
    sh("sed -i 's/\"d_sae\":.*40/\"d_sae\": 41/' '%s/cfg.json'%s", path, "");
    expect_load_error("cfg.json disagrees", path, "has shape [12, 40], expected [12, 41]");
    snprintf(path, sizeof path, "%s/missing", tmp);
    expect_load_error("no such folder", path, "no such file or folder");

    /* The seed's own checkpoint files. */
    saefw_tensorfile *ref = NULL;
    REQUIRE(saefw_tf_open("fixtures/sae/fwd_bwd.safetensors", &ref, err, sizeof err) == 0, "%s", err);
    saefw_sae s;
    int rc = saefw_checkpoint_load("fixtures/sae/seed_ckpt/3.pt", &s, &got, err, sizeof err);
    CHECK(rc == 0, "seed checkpoint: %s", err);
    if (rc == 0) {
        static const char *names[4] = {"W_enc", "W_dec", "b_enc", "b_dec"};
        for (int i = 0; i < 4; i++) {
            int64_t n;
            float *want = t_tensor(ref, names[i], &n);
            CHECK(n == s.numel[i] && memcmp(want, s.p[i], sizeof(float) * (size_t)n) == 0, "seed %s differs", names[i]);
            free(want);
        }
        CHECK(fabsf(s.l1_coeff - (float)t_meta(ref, "l1_coeff")) < 1e-9f, "seed l1_coeff %g", s.l1_coeff);
        const cJSON *an = cJSON_GetObjectItemCaseSensitive(got, "act_name");
        CHECK(cJSON_IsString(an), "seed cfg not returned");
        printf("  seed 3.pt + 3_cfg.json: d_in %lld, d_sae %lld, l1_coeff %g, tensors bit-exact\n", (long long)s.d_in,
               (long long)s.d_sae, s.l1_coeff);
        cJSON_Delete(got);
        saefw_sae_free(&s);
    }
    saefw_tf_close(ref);
    cJSON_Delete(cfg);
    saefw_sae_free(&a);
    return t_finish("test_checkpoint");
}
