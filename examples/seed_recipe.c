/* The seed recipe on the bundled tiny-1l through the core's C headers alone, no Lua: tokens -> model
 * -> blocks.0.mlp.hook_post -> shuffled bf16 buffer -> SAE trained with Adam (loaded as a plugin),
 * feature frequencies and the reconstruction score at every eval, checkpoints in a run folder. The
 * same choices as experiments/quickstart.lua, so that with the same sizes it trains the same SAE.
 *   seed_recipe RUN_DIR [STEPS [BATCH_SIZE [EVAL_EVERY]]]   (defaults 1464, 1024, 1000) */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>

#include "eval.h"
#include "model.h"
#include "model_resolve.h"
#include "model_source.h"
#include "plugin_loader.h"
#include "rng.h"
#include "sae.h"
#include "source.h"
#include "tokens.h"
#include "train.h"
#include "util.h"

/* The quickstart's configuration. */
#define SEQ_LEN 128
#define BOS 256 /* tiny-1l's BOS token, written at position 0 of every row as the seed does */
#define BUFFER_MULT 64
#define DICT_MULT 8
#define LR 1e-3
#define L1_COEFF 4e-4f
#define RECONS_BATCHES 5

static int whole_arg(const char *s, long long lo, long long *out) {
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*s == 0 || *end != 0 || v < lo) return -1;
    *out = v;
    return 0;
}

/* The run; returns 0, or -1 with err. Everything it makes it frees. */
static int run(const char *run_dir, int64_t steps, int64_t batch, int64_t eval_every, char *err, size_t errlen) {
    char weights[4096], config[4096], data[4096], tokens_path[4200];
    saefw_model *model = NULL;
    saefw_tokens *tokens = NULL;
    saefw_source *src = NULL;
    saefw_buffer buf = {0};
    int buf_made = 0, sae_made = 0, rc = -1;
    saefw_sae sae;
    saefw_loaded_plugin *adam = NULL;
    saefw_opts *opts = NULL;
    cJSON *cfg = NULL;

    /* The model by name, as saefw.model("tiny-1l"); its config.json beside the weights. */
    if (saefw_model_resolve("tiny-1l", weights, sizeof weights, config, sizeof config, err, errlen) != 0) goto out;
    saefw_model_cfg mcfg, *mcfgp = NULL;
    if (config[0]) {
        char *text = NULL;
        if (saefw_read_file(config, &text, NULL, err, errlen) != 0) goto out;
        int crc = saefw_model_cfg_from_json(text, config, &mcfg, err, errlen);
        free(text);
        if (crc != 0) goto out;
        mcfgp = &mcfg;
    }
    if (saefw_model_load(weights, mcfgp, &model, err, errlen) != 0) goto out;

    /* The bundled tokens, shuffled rows of SEQ_LEN with BOS first. */
    if (saefw_exe_relative(SAEFW_DATA_SUBDIR, data, sizeof data) != 0) {
        saefw_errf(err, errlen, "cannot find the folder of saefw's bundled data");
        goto out;
    }
    snprintf(tokens_path, sizeof tokens_path, "%s/models/tiny-1l/tokens.npy", data);
    saefw_tokens_opts to = {
        .path = tokens_path, .seq_len = SEQ_LEN, .bos = BOS, .shuffle = 1, .seed = SAEFW_DEFAULT_SEED};
    if (saefw_tokens_open(&to, &tokens, err, errlen) != 0) goto out;

    /* Activations at the hook, model batches of batch / seq_len * 16 sequences, into the buffer. */
    saefw_hook hook;
    if (saefw_model_hook_resolve(model, "post", 0, &hook, err, errlen) != 0) goto out;
    int64_t model_batch = batch / SEQ_LEN * 16 > 0 ? batch / SEQ_LEN * 16 : 1;
    saefw_model_source_opts so = {model, tokens, hook, model_batch, SAEFW_DEFAULT_SEED};
    if (saefw_source_model(&so, &src, err, errlen) != 0) goto out;
    if (saefw_buffer_init(&buf, src, batch * BUFFER_MULT, batch, SAEFW_BUF_BF16, SAEFW_DEFAULT_SEED, err, errlen) != 0)
        goto out;
    buf_made = 1;

    /* The SAE: kaiming-uniform init from the seed, unit decoder rows. */
    const int64_t d_in = saefw_model_hook_width(model, hook);
    if (saefw_sae_alloc(&sae, d_in, d_in * DICT_MULT, L1_COEFF, err, errlen) != 0) goto out;
    sae_made = 1;
    saefw_rng rng;
    saefw_rng_seed(&rng, SAEFW_DEFAULT_SEED);
    saefw_sae_init_params(&sae, &rng);

    /* Adam through the plugin loader, with the seed's betas. */
    if (saefw_plugin_load("adam", saefw_host_table(), &adam, err, errlen) != 0 ||
        saefw_opts_new(adam, &opts, err, errlen) != 0 ||
        saefw_opts_set_number(opts, adam, "lr", LR, err, errlen) != 0 ||
        saefw_opts_set_number(opts, adam, "beta1", 0.9, err, errlen) != 0 ||
        saefw_opts_set_number(opts, adam, "beta2", 0.99, err, errlen) != 0)
        goto out;

    /* What every cfg.json of the run records beside the SAE's own fields. */
    cfg = cJSON_CreateObject();
    if (!cfg || !cJSON_AddStringToObject(cfg, "model_name", "tiny-1l") ||
        !cJSON_AddStringToObject(cfg, "hook_name", "blocks.0.mlp.hook_post") ||
        !cJSON_AddNumberToObject(cfg, "hook_layer", 0) || !cJSON_AddNumberToObject(cfg, "context_size", SEQ_LEN) ||
        !cJSON_AddNumberToObject(cfg, "seed", SAEFW_DEFAULT_SEED) ||
        !cJSON_AddNumberToObject(cfg, "batch_size", (double)batch) || !cJSON_AddNumberToObject(cfg, "lr", LR) ||
        !cJSON_AddNumberToObject(cfg, "l1_coeff", L1_COEFF)) {
        saefw_errf(err, errlen, "out of memory");
        goto out;
    }

    /* The reconstruction score at every eval on a held-out set fixed at the first one, as saefw.train
     * does by default. */
    saefw_recons_evaluator recons;
    saefw_recons_evaluator_init(&recons, model, tokens, hook, RECONS_BATCHES, model_batch, SAEFW_RECONS_FIXED,
                                SAEFW_DEFAULT_SEED);
    saefw_evaluator *evs[1] = {&recons.ev};

    saefw_train_opts o = {0};
    o.sae = &sae;
    o.buffer = &buf;
    o.steps = steps;
    o.optimizer.plugin = adam;
    o.optimizer.opts = opts;
    o.log_every = 100;
    o.eval_every = eval_every;
    o.checkpoint_every = 2000;
    o.freq_batches = 5;
    o.run_dir = run_dir;
    o.cfg = cfg;
    o.seed = SAEFW_DEFAULT_SEED;
    o.progress = -1;
    o.evaluators = evs;
    o.n_evaluators = 1;
    saefw_train_result res;
    int trc = saefw_train(&o, &res, err, errlen);
    saefw_recons_evaluator_free(&recons);
    if (trc != 0) goto out;
    printf("final: loss %.5f, L0 %.2f, explained variance %.4f, dead %.4f\n", res.last.loss, res.last.l0,
           res.last.explained_variance, res.last.frac_dead);
    printf("reconstruction score %.4f (loss clean %.4f, with the SAE %.4f, zero-ablated %.4f)\n", recons.last.score,
           recons.last.loss_clean, recons.last.loss_recons, recons.last.loss_zero);
    printf("checkpoint: %s (stopped: %s)\n", res.last_checkpoint, saefw_stop_reason_name(res.stop));
    rc = 0;
out:
    cJSON_Delete(cfg);
    saefw_opts_free(opts);
    if (adam) saefw_plugin_unload(adam);
    if (sae_made) saefw_sae_free(&sae);
    if (buf_made) saefw_buffer_free(&buf);
    if (src) saefw_source_free(src);
    if (tokens) saefw_tokens_free(tokens);
    if (model) saefw_model_free(model);
    return rc;
}

int main(int argc, char **argv) {
    long long steps = 1464, batch = 1024, eval_every = 1000;
    if (argc < 2 || argc > 5 || (argc > 2 && whole_arg(argv[2], 1, &steps) != 0) ||
        (argc > 3 && whole_arg(argv[3], 1, &batch) != 0) || (argc > 4 && whole_arg(argv[4], 0, &eval_every) != 0)) {
        fprintf(stderr, "usage: seed_recipe RUN_DIR [STEPS [BATCH_SIZE [EVAL_EVERY]]]\n");
        return 2;
    }
    char err[2048];
    if (run(argv[1], steps, batch, eval_every, err, sizeof err) != 0) {
        fprintf(stderr, "seed_recipe: %s\n", err);
        return 1;
    }
    return 0;
}
