/* Fuzz target: a checkpoint's cfg.json as saefw_checkpoint_load reads it, beside valid weights:
 * a checkpoint folder (d_in, d_sae, l1_coeff, ...) written once with saefw_checkpoint_save, and the
 * seed's N.pt + N_cfg.json (act_size, dict_size) from tests/fixtures when it is there. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "fuzz_common.h"

#define D_IN 4
#define D_SAE 8
/* The seed fixture's shapes (tests/fixtures/sae/seed_ckpt/3_cfg.json). */
#define SEED_D_IN 16
#define SEED_D_SAE 64

static char folder[1024], folder_cfg[1100], seed_pt[1024], seed_cfg[1100];
static int have_seed;

static void copy_file(const char *from, const char *to) {
    FILE *f = fopen(from, "rb");
    if (!f) return;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    int big = !feof(f);
    fclose(f);
    if (big) fuzz_fail("%s is larger than the harness expects", from);
    fuzz_write(to, buf, n);
    have_seed = 1;
}

static void setup(void) {
    char err[1024];
    saefw_sae sae;
    if (saefw_sae_alloc(&sae, D_IN, D_SAE, 1e-3f, err, sizeof err) != 0) fuzz_fail("sae: %s", err);
    for (size_t i = 0; i < sae.n_total; i++) sae.params[i] = (float)((int)(i % 17) - 8) / 8.0f;
    fuzz_path(folder, sizeof folder, "ckpt");
    if (saefw_checkpoint_save(folder, &sae, NULL, err, sizeof err) != 0) fuzz_fail("save: %s", err);
    saefw_sae_free(&sae);
    snprintf(folder_cfg, sizeof folder_cfg, "%s/cfg.json", folder);

    char seed_dir[1024];
    fuzz_path(seed_dir, sizeof seed_dir, "seed");
    if (mkdir(seed_dir, 0755) != 0) fuzz_fail("cannot create %s", seed_dir);
    if (snprintf(seed_pt, sizeof seed_pt, "%s/3.pt", seed_dir) >= (int)sizeof seed_pt ||
        snprintf(seed_cfg, sizeof seed_cfg, "%s/3_cfg.json", seed_dir) >= (int)sizeof seed_cfg)
        fuzz_fail("path too long: %s", seed_dir);
    copy_file(SAEFW_FUZZ_FIXTURES "/sae/seed_ckpt/3.pt", seed_pt);
}

/* Load path; an accepted checkpoint must have the shapes of its weights and a cfg object. */
static void load(const char *path, int64_t d_in, int64_t d_sae) {
    saefw_sae sae;
    cJSON *cfg = NULL;
    char err[1024] = "";
    int rc = saefw_checkpoint_load(path, &sae, &cfg, err, sizeof err);
    fuzz_note("%s", rc == 0 ? "loaded" : err);
    if (rc != 0) {
        FUZZ_CHECK(err[0] != 0 && cfg == NULL, "refused checkpoint without a message, or left a cfg");
        return;
    }
    FUZZ_CHECK(sae.d_in == d_in && sae.d_sae == d_sae, "loaded d_in %lld d_sae %lld from weights of %lld x %lld",
               (long long)sae.d_in, (long long)sae.d_sae, (long long)d_in, (long long)d_sae);
    FUZZ_CHECK(sae.params != NULL, "loaded checkpoint without parameters");
    cJSON_Delete(cfg);
    saefw_sae_free(&sae);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int ready;
    if (!ready) {
        setup();
        ready = 1;
    }
    if (size > (1u << 20)) return 0;
    fuzz_write(folder_cfg, data, size);
    load(folder, D_IN, D_SAE);
    if (have_seed) {
        fuzz_write(seed_cfg, data, size);
        load(seed_pt, SEED_D_IN, SEED_D_SAE);
    }
    return 0;
}
