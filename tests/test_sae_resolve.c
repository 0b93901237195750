/* saefw_sae_resolve without the network: local paths pass through; Hub paths (ORG/NAME/FILE,
 * hf://...) are found in a hub cache laid out as huggingface_hub lays it out (refs/main ->
 * snapshots/<commit>), for a seed N.pt + N_cfg.json, a safetensors file and a SAELens-layout folder;
 * absent files give the `saefw download` command; malformed paths a one-line error. The download
 * itself is tested against the Hub imitation (hub_sae_from_hub). */
#include <limits.h>
#include <unistd.h>

#include "checkpoint.h"
#include "sae_resolve.h"
#include "testutil.h"

static void sh(const char *fmt, const char *a, const char *b) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, fmt, a, b);
    REQUIRE(system(cmd) == 0, "%s", cmd);
}

int main(void) {
    char err[1024], out[PATH_MAX], want[PATH_MAX + 200];
    int hub = -1;
    const char *tmp = t_tmpdir("test_sae_resolve");
    char cache[PATH_MAX], snap[PATH_MAX + 200];
    snprintf(cache, sizeof cache, "%s/hub", tmp);
    setenv("HF_HUB_CACHE", cache, 1);
    setenv("HF_HUB_OFFLINE", "1", 1);
    const char *rev = "0123456789abcdef0123456789abcdef01234567";
    char repo_dir[PATH_MAX + 64], refs[PATH_MAX + 100];
    snprintf(repo_dir, sizeof repo_dir, "%s/models--NeelNanda--sparse_autoencoder", cache);
    snprintf(snap, sizeof snap, "%s/snapshots/%s", repo_dir, rev);
    sh("mkdir -p '%s' '%s/refs'", snap, repo_dir);
    snprintf(refs, sizeof refs, "%s/refs/main", repo_dir);
    FILE *f = fopen(refs, "w");
    REQUIRE(f && fprintf(f, "%s", rev) > 0 && fclose(f) == 0, "cannot write %s", refs);
    sh("cp fixtures/sae/seed_ckpt/3.pt '%s/25.pt' && cp fixtures/sae/seed_ckpt/3_cfg.json '%s/25_cfg.json'", snap,
       snap);

    /* A local path is itself, whatever it looks like. */
    CHECK(saefw_sae_resolve("fixtures/sae/seed_ckpt/3.pt", out, sizeof out, &hub, err, sizeof err) == 0, "%s", err);
    CHECK(!strcmp(out, "fixtures/sae/seed_ckpt/3.pt") && hub == 0, "local path became %s", out);

    /* Hub paths, with and without hf://, to the cache snapshot refs/main names. */
    const char *specs[] = {"NeelNanda/sparse_autoencoder/25.pt", "hf://NeelNanda/sparse_autoencoder/25.pt"};
    T_FMT(want, "%s/25.pt", snap);
    for (int i = 0; i < 2; i++) {
        CHECK(saefw_sae_resolve(specs[i], out, sizeof out, &hub, err, sizeof err) == 0, "%s: %s", specs[i], err);
        CHECK(!strcmp(out, want) && hub == 1, "%s resolved to %s", specs[i], out);
    }
    saefw_sae sae;
    cJSON *cfg = NULL;
    CHECK(saefw_checkpoint_load(want, &sae, &cfg, err, sizeof err) == 0 && sae.d_in == 16 && sae.d_sae == 64,
          "the resolved seed checkpoint does not load: %s", err);
    saefw_sae_free(&sae);
    cJSON_Delete(cfg);

    /* A SAELens-layout folder in a repo (as `saefw upload --path-in-repo` makes): the folder. */
    char folder[PATH_MAX + 200];
    T_FMT(folder, "%s/blocks.0.mlp.hook_post", snap);
    REQUIRE(saefw_sae_alloc(&sae, 4, 8, 1e-3f, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_checkpoint_save(folder, &sae, NULL, err, sizeof err) == 0, "%s", err);
    saefw_sae_free(&sae);
    CHECK(saefw_sae_resolve("NeelNanda/sparse_autoencoder/blocks.0.mlp.hook_post", out, sizeof out, &hub, err,
                            sizeof err) == 0 &&
              !strcmp(out, folder),
          "folder: %s (%s)", out, err);
    T_FMT(want, "%s/sae_weights.safetensors", folder);
    CHECK(saefw_sae_resolve("hf://NeelNanda/sparse_autoencoder/blocks.0.mlp.hook_post/sae_weights.safetensors", out,
                            sizeof out, &hub, err, sizeof err) == 0 &&
              !strcmp(out, want),
          "safetensors file: %s (%s)", out, err);

    /* The N_cfg.json is part of a seed checkpoint: without it the .pt is not "in the cache". */
    sh("mv '%s/25_cfg.json' '%s/25_cfg.json.away'", snap, snap);
    CHECK(saefw_sae_resolve(specs[0], out, sizeof out, &hub, err, sizeof err) != 0 &&
              strstr(err, "saefw download NeelNanda/sparse_autoencoder 25.pt 25_cfg.json") &&
              strstr(err, "HF_HUB_OFFLINE"),
          "missing cfg: %s", err);
    printf("  %s\n", err);
    sh("mv '%s/25_cfg.json.away' '%s/25_cfg.json'", snap, snap);

    /* A missing path under an existing local folder is a local mistake, not a Hub repo. */
    CHECK(saefw_sae_resolve("fixtures/sae/nosuch.pt", out, sizeof out, &hub, err, sizeof err) != 0 &&
              strstr(err, "no such file or folder") && strstr(err, "hf://fixtures/sae/nosuch.pt"),
          "typo'd local path: %s", err);

    /* Absent repo, absent file, malformed paths: errors, never a crash. */
    CHECK(saefw_sae_resolve("alice/none/1.pt", out, sizeof out, &hub, err, sizeof err) != 0 &&
              strstr(err, "saefw download alice/none 1.pt 1_cfg.json"),
          "absent repo: %s", err);
    const char *bad[] = {"hf://a",
                         "hf://a/b",
                         "hf:///a/b/c",
                         "hf://a/b/../c.pt",
                         "hf://a/b//c.pt",
                         "hf://a--b/c/d.pt",
                         "hf://a/b/./c.pt",
                         "nosuchfile.pt",
                         "./x/y/z.pt",
                         "/abs/none/x.pt",
                         ""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = 0;
        CHECK(saefw_sae_resolve(bad[i], out, sizeof out, &hub, err, sizeof err) != 0 && err[0] && !strchr(err, '\n'),
              "'%s' was accepted or gave no one-line error (%s)", bad[i], err);
    }
    return t_finish("test_sae_resolve");
}
