/* ZeRO-1's option on one process (saefw_train_opts.zero; the sharded runs on 2 and 3 ranks are in
 * dist_training): zero = 1 trains to the same bytes as zero = 0 (its own projection of W_dec rows,
 * the optimizer's view and state calls), and what it cannot serve is refused before any step with one
 * line: an optimizer without zero_slices (sgd), clip_grad_norm, a plugin with an after_backward hook. */
#include "plugin_loader.h"
#include "sae.h"
#include "testutil.h"
#include "train.h"

static int probe_after_backward(void *self, saefw_run *run, char *err, size_t errlen) { return 0; }

static saefw_loaded_plugin g_probe = {
    .p = {.abi_version = SAEFW_ABI_VERSION,
          .struct_size = sizeof(saefw_plugin),
          .name = "probe",
          .kind = SAEFW_KIND_EXPERIMENT,
          .stateless = 1,
          .after_backward = probe_after_backward},
};

static saefw_loaded_plugin *load(const char *name) {
    saefw_loaded_plugin *lp = NULL;
    char err[1024];
    REQUIRE(saefw_plugin_load(name, saefw_host_table(), &lp, err, sizeof err) == 0, "%s", err);
    return lp;
}

/* 40 steps of a small SAE on synthetic data with the seed's resampler every 15 steps (threshold 0.3,
 * so that it re-initialises features and resets their Adam state); the final parameters into params
 * (may be NULL). Returns saefw_train's status. */
static int train(saefw_loaded_plugin *opt, saefw_loaded_plugin *hook, int zero, double clip, float *params,
                 int64_t *steps_done, char *err, size_t errlen) {
    saefw_synthetic_opts syn = {16, 24, 0.1, 1.0, 3};
    saefw_source *src = NULL;
    saefw_buffer buf;
    REQUIRE(saefw_source_synthetic(&syn, &src, err, errlen) == 0, "%s", err);
    REQUIRE(saefw_buffer_init(&buf, src, 64 * 4, 64, SAEFW_BUF_F32, 1, err, errlen) == 0, "%s", err);
    saefw_sae sae;
    REQUIRE(saefw_sae_alloc(&sae, 16, 64, 0.05f, err, errlen) == 0, "%s", err);
    saefw_rng rng;
    saefw_rng_seed(&rng, 7);
    saefw_sae_init_params(&sae, &rng);
    saefw_opts *oo = NULL, *ro = NULL;
    saefw_loaded_plugin *reinit = load("reinit_dead");
    REQUIRE(saefw_opts_new(opt, &oo, err, errlen) == 0 && saefw_opts_set_number(oo, opt, "lr", 1e-3, err, errlen) == 0,
            "%s", err);
    REQUIRE(saefw_opts_new(reinit, &ro, err, errlen) == 0 &&
                saefw_opts_set_number(ro, reinit, "every", 15, err, errlen) == 0 &&
                saefw_opts_set_number(ro, reinit, "threshold", 0.3, err, errlen) == 0,
            "%s", err);
    saefw_plugin_use use[2] = {{.plugin = reinit, .opts = ro}, {.plugin = hook}};
    saefw_train_opts o = {0};
    o.sae = &sae;
    o.buffer = &buf;
    o.steps = 40;
    o.seed = 5;
    o.optimizer.plugin = opt;
    o.optimizer.opts = oo;
    o.plugins = use;
    o.n_plugins = hook ? 2 : 1;
    o.progress = 0;
    o.clip_grad_norm = clip;
    o.zero = zero;
    saefw_train_result res;
    int rc = saefw_train(&o, &res, err, errlen);
    *steps_done = res.steps_done;
    if (params) memcpy(params, sae.params, sizeof(float) * sae.n_total);
    saefw_opts_free(oo);
    saefw_opts_free(ro);
    saefw_plugin_unload(reinit);
    saefw_sae_free(&sae);
    saefw_buffer_free(&buf);
    saefw_source_free(src);
    return rc;
}

static void refused(saefw_loaded_plugin *opt, saefw_loaded_plugin *hook, double clip, const char *want) {
    char err[1024] = "";
    int64_t steps = -1;
    int rc = train(opt, hook, 1, clip, NULL, &steps, err, sizeof err);
    printf("  refused: %s\n", err);
    CHECK(rc != 0 && steps == 0 && strstr(err, want) && !strchr(err, '\n'),
          "expected a one-line error containing \"%s\" before any step; rc %d, %lld steps, got: %s", want, rc,
          (long long)steps, err);
}

int main(void) {
    saefw_loaded_plugin *adam = load("adam"), *sgd = load("sgd");
    const int64_t n = 16 * 64 * 2 + 64 + 16;
    float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
    REQUIRE(a && b, "out of memory");
    char err[1024] = "";
    int64_t steps = 0;
    CHECK(train(adam, NULL, 0, 0, a, &steps, err, sizeof err) == 0 && steps == 40, "zero = 0: %s", err);
    CHECK(train(adam, NULL, 1, 0, b, &steps, err, sizeof err) == 0 && steps == 40, "zero = 1: %s", err);
    int64_t differ = 0;
    for (int64_t k = 0; k < n; k++) differ += memcmp(&a[k], &b[k], sizeof(float)) != 0;
    printf("zero = 1 against zero = 0 on one process, 40 steps: %lld of %lld parameters differ\n", (long long)differ,
           (long long)n);
    CHECK(differ == 0, "zero = 1 changed %lld parameters", (long long)differ);

    refused(sgd, NULL, 0,
            "zero = 1 needs an optimizer that updates elementwise and says so (zero_slices); sgd does not");
    refused(adam, NULL, 1.0, "zero = 1 and clip_grad_norm do not go together");
    refused(adam, &g_probe, 0, "zero = 1: plugin probe has an after_backward hook");

    free(a);
    free(b);
    saefw_plugin_unload(adam);
    saefw_plugin_unload(sgd);
    return t_finish("test_zero");
}
