/* SAE checkpoints: a folder holding sae_weights.safetensors + cfg.json (SAELens layout), written
 * atomically; also reads the seed's own N.pt + N_cfg.json. */
#ifndef SAEFW_CHECKPOINT_H
#define SAEFW_CHECKPOINT_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "sae.h"

/* Write the checkpoint folder `dir`: both files go into a temporary sibling folder, are fsynced,
 * and the folder is renamed into place, so `dir` is either the old checkpoint or the complete new
 * one. cfg (may be NULL) is a JSON object of extra fields; d_in, d_sae, dtype are always written. */
int saefw_checkpoint_save(const char *dir, const saefw_sae *sae, const cJSON *cfg, char *err, size_t errlen);

/* Load a checkpoint into a freshly allocated sae (free with saefw_sae_free): a checkpoint folder, a
 * sae_weights.safetensors file (cfg.json beside it), or a seed `N.pt` (N_cfg.json beside it, if any).
 * *cfg_out (may be NULL) receives the parsed cfg (caller frees with cJSON_Delete). */
int saefw_checkpoint_load(const char *path, saefw_sae *sae, cJSON **cfg_out, char *err, size_t errlen);

/* The next free version number in a run folder: 1 + the largest numeric subfolder name, or 0. */
int saefw_checkpoint_next_version(const char *run_dir);

#endif
