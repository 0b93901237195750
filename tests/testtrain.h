/* Test helpers that train through saefw_train with the adam plugin (header-only, like testutil.h). */
#ifndef SAEFW_TESTTRAIN_H
#define SAEFW_TESTTRAIN_H

#include "plugin_loader.h"
#include "source.h"
#include "testutil.h"
#include "train.h"

/* The adam plugin loaded with lr and betas set; exits on failure. Release with t_adam_free. */
typedef struct {
    saefw_loaded_plugin *plugin;
    saefw_opts *opts;
} t_adam;

static inline t_adam t_adam_load(double lr, double beta1, double beta2) {
    char err[1024];
    t_adam a = {0};
    REQUIRE(saefw_plugin_load("adam", saefw_host_table(), &a.plugin, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_opts_new(a.plugin, &a.opts, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_opts_set_number(a.opts, a.plugin, "lr", lr, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_opts_set_number(a.opts, a.plugin, "beta1", beta1, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_opts_set_number(a.opts, a.plugin, "beta2", beta2, err, sizeof err) == 0, "%s", err);
    return a;
}

static inline void t_adam_free(t_adam *a) {
    saefw_opts_free(a->opts);
    saefw_plugin_unload(a->plugin);
    *a = (t_adam){0};
}

/* `steps` Adam steps (lr, betas 0.9 and 0.99) through saefw_train on the given kernel path, batches of B
 * rows from next_batch; on_event (may be NULL) sees every step. Evaluation draws come from an unrelated
 * synthetic source and change nothing. Exits on failure. */
static inline void t_train_adam(saefw_sae *sae, int64_t B, int64_t steps, double lr, saefw_sae_path path,
                                int (*next_batch)(void *, float *, int64_t, char *, size_t), void *batch_ud,
                                saefw_train_event_fn on_event, void *event_ud) {
    char err[1024];
    t_adam adam = t_adam_load(lr, 0.9, 0.99);
    saefw_synthetic_opts so = {sae->d_in, 8, 0.1, 1.0, 1};
    saefw_source *eval = NULL;
    REQUIRE(saefw_source_synthetic(&so, &eval, err, sizeof err) == 0, "%s", err);
    saefw_train_opts o = {0};
    o.sae = sae;
    o.next_batch = next_batch;
    o.next_batch_ud = batch_ud;
    o.batch_size = B;
    o.eval_source = eval;
    o.steps = steps;
    o.optimizer.plugin = adam.plugin;
    o.optimizer.opts = adam.opts;
    o.progress = 0;
    o.on_event = on_event;
    o.event_ud = event_ud;
    o.log_every = on_event ? 1 : 0;
    saefw_sae_set_path(path);
    saefw_train_result res;
    REQUIRE(saefw_train(&o, &res, err, sizeof err) == 0, "train: %s", err);
    saefw_sae_set_path(SAEFW_SAE_AUTO);
    saefw_source_free(eval);
    t_adam_free(&adam);
}

#endif
