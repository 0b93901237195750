/* Fuzz target: a model's config.json (saefw_model_cfg_from_json). */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > (1u << 20)) return 0;
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    saefw_model_cfg cfg;
    char err[1024] = "";
    int rc = saefw_model_cfg_from_json(text, "config.json", &cfg, err, sizeof err);
    free(text);
    fuzz_note("%s", rc == 0 ? "accepted" : err);
    if (rc != 0) {
        FUZZ_CHECK(err[0] != 0, "refused config without a message");
        return 0;
    }
    /* What the model host relies on once a config is accepted. */
    FUZZ_CHECK(cfg.n_layers > 0 && cfg.d_model > 0 && cfg.d_mlp > 0 && cfg.d_head > 0 && cfg.n_heads > 0 &&
                   cfg.n_ctx > 0 && cfg.d_vocab > 0,
               "accepted a config with a non-positive size");
    FUZZ_CHECK(memchr(cfg.act_fn, 0, sizeof cfg.act_fn) && memchr(cfg.normalization, 0, sizeof cfg.normalization),
               "unterminated name");
    FUZZ_CHECK(cfg.ln_eps > 0 && cfg.ln_eps < 1, "ln_eps %g accepted", (double)cfg.ln_eps);
    return 0;
}
