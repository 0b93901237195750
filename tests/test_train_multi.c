/* Several SAEs on one buffer through the C API (engine/train_multi.h, saefw_run_cfg.saes), on
 * synthetic data: an SAE trained beside another ends with the same bytes as alone, every SAE gets
 * its folder and final checkpoint, the group's buffer states are written at checkpoint steps, the
 * seeds come from the names, and bad groups are refused with one line before anything is written. */
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "plugin_loader.h"
#include "run.h"
#include "testutil.h"
#include "train_multi.h"

typedef struct {
    saefw_source *src;
    saefw_buffer buf;
    saefw_sae sae[3];
} parts;

static void parts_make(parts *p, int d_in_last) {
    char err[512];
    saefw_synthetic_opts so = {16, 24, 0.05, 1.0, 3};
    REQUIRE(saefw_source_synthetic(&so, &p->src, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_buffer_init(&p->buf, p->src, 64 * 8, 64, SAEFW_BUF_F32, 5, err, sizeof err) == 0, "%s", err);
    const int64_t d_sae[3] = {64, 32, 48};
    const float l1[3] = {1e-3f, 3e-3f, 1e-3f};
    for (int i = 0; i < 3; i++) {
        REQUIRE(saefw_sae_alloc(&p->sae[i], i == 2 ? d_in_last : 16, d_sae[i], l1[i], err, sizeof err) == 0, "%s", err);
        saefw_rng rng;
        saefw_rng_seed(&rng, SAEFW_DEFAULT_SEED + (uint64_t)i);
        saefw_sae_init_params(&p->sae[i], &rng);
    }
}

static void parts_free(parts *p) {
    for (int i = 0; i < 3; i++) saefw_sae_free(&p->sae[i]);
    saefw_buffer_free(&p->buf);
    saefw_source_free(p->src);
}

static int exists(const char *dir, const char *name) {
    char p[4400];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

int main(void) {
    const char *tmp = t_tmpdir("test_train_multi");
    char err[1024];
    saefw_loaded_plugin *adam = NULL;
    REQUIRE(saefw_plugin_load("adam", saefw_host_table(), &adam, err, sizeof err) == 0, "%s", err);
    saefw_opts *opts = NULL;
    REQUIRE(saefw_opts_new(adam, &opts, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_opts_set_number(opts, adam, "lr", 1e-3, err, sizeof err) == 0, "%s", err);

    /* Seeds: from the run seed and the name, nothing else. */
    CHECK(saefw_multi_seed(49, "a") == saefw_multi_seed(49, "a"), "seed not repeatable");
    CHECK(saefw_multi_seed(49, "a") != saefw_multi_seed(49, "b"), "names give one seed");
    CHECK(saefw_multi_seed(49, "a") != saefw_multi_seed(50, "a"), "run seeds give one seed");

    /* x and y together, then y alone: y's weights are the same bytes. */
    parts two, one;
    parts_make(&two, 16);
    parts_make(&one, 16);
    saefw_run_sae saes[3];
    memset(saes, 0, sizeof saes);
    const char *names[3] = {"x", "y", "z"};
    for (int i = 0; i < 3; i++) {
        saes[i].name = names[i];
        saes[i].optimizer.plugin = adam;
        saes[i].optimizer.opts = opts;
    }
    saefw_run_cfg c;
    saefw_run_cfg_init(&c);
    c.buffer = &two.buf;
    c.progress = 0;
    c.eval_every = 4;
    c.checkpoint_every = 5;
    c.steps = 12;
    char dir_xy[4200], dir_y[4200];
    snprintf(dir_xy, sizeof dir_xy, "%s/xy", tmp);
    snprintf(dir_y, sizeof dir_y, "%s/y", tmp);
    c.run_dir = dir_xy;
    saes[0].sae = &two.sae[0];
    saes[1].sae = &two.sae[1];
    c.saes = saes;
    c.n_saes = 2;
    saefw_session *s = NULL;
    REQUIRE(saefw_session_open(&c, &s, err, sizeof err) == 0, "open: %s", err);
    CHECK(saefw_session_n_saes(s) == 2, "n_saes %d", saefw_session_n_saes(s));
    saefw_train_result res[2];
    CHECK(saefw_session_train(s, res, err, sizeof err) != 0 && strstr(err, "saefw_session_train_multi"),
          "single train on a session of several: %s", err);
    CHECK(saefw_session_train_multi(s, res, err, sizeof err) == 0, "train: %s", err);
    CHECK(res[0].steps_done == 12 && res[1].steps_done == 12 && res[1].stop == SAEFW_STOP_DONE, "steps %lld %lld",
          (long long)res[0].steps_done, (long long)res[1].steps_done);
    saefw_session_close(s);
    char sub[4400];
    snprintf(sub, sizeof sub, "%s/x", dir_xy);
    CHECK(exists(sub, "final/sae_weights.safetensors") && exists(sub, "metrics.jsonl"), "x's folder");
    CHECK(exists(dir_xy, "buffer-5.safetensors") && exists(dir_xy, "buffer-10.safetensors"), "buffer states");

    c.buffer = &one.buf;
    c.run_dir = dir_y;
    saes[1].sae = &one.sae[1];
    c.saes = &saes[1];
    c.n_saes = 1;
    REQUIRE(saefw_session_open(&c, &s, err, sizeof err) == 0, "open y: %s", err);
    CHECK(saefw_session_train_multi(s, res, err, sizeof err) == 0, "train y: %s", err);
    saefw_session_close(s);
    CHECK(memcmp(two.sae[1].params, one.sae[1].params, sizeof(float) * (size_t)one.sae[1].n_total) == 0,
          "y beside x differs from y alone");
    CHECK(memcmp(two.sae[0].params, one.sae[0].params, sizeof(float) * (size_t)one.sae[0].n_total) != 0,
          "x was not trained");

    /* Refusals, each before a folder is made. */
    parts bad;
    parts_make(&bad, 8);
    char dir_bad[4200];
    snprintf(dir_bad, sizeof dir_bad, "%s/bad", tmp);
    c.buffer = &bad.buf;
    c.run_dir = dir_bad;
    saes[0].sae = &bad.sae[0];
    saes[1].sae = &bad.sae[1];
    saes[2].sae = &bad.sae[2];
    c.saes = saes;
    c.n_saes = 0;
    CHECK(saefw_session_open(&c, &s, err, sizeof err) != 0 && strstr(err, "'saes' is empty"), "empty: %s", err);
    c.n_saes = 2;
    c.sae = &bad.sae[0];
    CHECK(saefw_session_open(&c, &s, err, sizeof err) != 0 && strcmp(err, "give 'sae' or 'saes', not both") == 0,
          "both: %s", err);
    c.sae = NULL;
    saefw_train_opts o[3];
    for (int i = 0; i < 3; i++) {
        memset(&o[i], 0, sizeof o[i]);
        o[i].sae = &bad.sae[i];
        o[i].optimizer.plugin = adam;
        o[i].optimizer.opts = opts;
        o[i].steps = 4;
    }
    saefw_multi *g = NULL;
    const char *dup[2] = {"x", "x"}, *slash[2] = {"x", "a/b"};
    CHECK(saefw_multi_open(&bad.buf, dir_bad, 0, dup, o, 2, &g, err, sizeof err) != 0 &&
              strcmp(err, "train: saes[1] and saes[2] are both named 'x'") == 0,
          "duplicate names: %s", err);
    CHECK(saefw_multi_open(&bad.buf, dir_bad, 0, slash, o, 2, &g, err, sizeof err) != 0 &&
              strstr(err, "'a/b' is not a plain folder name"),
          "a name with a slash: %s", err);
    CHECK(saefw_multi_open(&bad.buf, dir_bad, 0, names, o, 3, &g, err, sizeof err) != 0 &&
              strcmp(err, "train: SAE z has d_in = 8, but the buffer's activations have width 16") == 0,
          "d_in: %s", err);
    o[1].steps = 5;
    CHECK(saefw_multi_open(&bad.buf, dir_bad, 0, names, o, 2, &g, err, sizeof err) != 0 &&
              strstr(err, "must be the same"),
          "different lengths: %s", err);
    o[1].steps = 4;
    o[1].sae = o[0].sae;
    CHECK(saefw_multi_open(&bad.buf, dir_bad, 0, names, o, 2, &g, err, sizeof err) != 0 &&
              strstr(err, "the same SAE object"),
          "one SAE twice: %s", err);
    CHECK(saefw_multi_open(&bad.buf, dir_bad, 0, names, o, 0, &g, err, sizeof err) != 0, "no SAEs accepted");
    CHECK(access(dir_bad, F_OK) != 0, "a refused group made its run folder");

    parts_free(&bad);
    parts_free(&two);
    parts_free(&one);
    saefw_opts_free(opts);
    saefw_plugin_unload(adam);
    return t_finish("test_train_multi");
}
