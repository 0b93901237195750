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

/* The same, calling extra(ud, tmp_dir, ...) to add files (the training state) to the folder before
 * it is renamed into place. sae_weights.safetensors carries a checksum of its tensors. */
typedef int (*saefw_checkpoint_extra_fn)(void *ud, const char *tmp_dir, char *err, size_t errlen);
int saefw_checkpoint_save_ex(const char *dir, const saefw_sae *sae, const cJSON *cfg, saefw_checkpoint_extra_fn extra,
                             void *ud, char *err, size_t errlen);

/* The SAELens cfg.json layout the checkpoint follows: its "metadata" carries this as sae_lens_version,
 * which SAELens 6.x reads as "already in the 6.x layout" (5.x ignores the metadata object). */
#define SAEFW_SAELENS_LAYOUT_VERSION "6.0.0"

/* SAELens's per-feature log10 density file beside the weights: one float32 tensor "sparsity"
 * [d_sae] = log10(frequency + 1e-10), as SAELens's trainer writes it. */
#define SAEFW_SPARSITY_FILE "sparsity.safetensors"
#define SAEFW_SPARSITY_EPS 1e-10f

/* Write SAEFW_SPARSITY_FILE into folder dir from feature frequencies freq [d_sae] (fractions of
 * tokens on which each feature is active). Returns 0, or -1 with err. */
int saefw_checkpoint_write_sparsity(const char *dir, const float *freq, int64_t d_sae, char *err, size_t errlen);

/* File name of the resumable training state inside a checkpoint folder. */
#define SAEFW_TRAIN_STATE "train_state.safetensors"
/* Data parallel with each rank's own share of the data: rank r > 0's training state beside it (its
 * buffer, sources and evaluation generators differ from rank 0's). */
#define SAEFW_TRAIN_STATE_RANK "train_state.rank%d.safetensors"

/* The newest complete, uncorrupted checkpoint of run_dir that holds a training state (numbered
 * folders, newest first; damaged ones are skipped with a line through log). Fills out with its path;
 * returns -1 with err when there is none. */
int saefw_checkpoint_find_resumable(const char *run_dir, char *out, size_t n, void (*log)(const char *msg), char *err,
                                    size_t errlen);
/* Remove the training state from every numbered checkpoint of run_dir but the newest `keep` (the
 * weights stay); keeps the disk use of long runs bounded. */
void saefw_checkpoint_prune_states(const char *run_dir, int keep);

/* Load a checkpoint into a freshly allocated sae (free with saefw_sae_free): a checkpoint folder, a
 * sae_weights.safetensors file (cfg.json beside it), or a seed `N.pt` (N_cfg.json beside it, if any).
 * *cfg_out (may be NULL) receives the parsed cfg (caller frees with cJSON_Delete). */
int saefw_checkpoint_load(const char *path, saefw_sae *sae, cJSON **cfg_out, char *err, size_t errlen);
/* 0 if the cfg loaded from the checkpoint at path (NULL: there was none) states the L1 coefficient
 * (l1_coeff, or SAELens's l1_coefficient); else -1 with an error naming the cfg file. For callers
 * that train on, where a missing coefficient must not silently become 0. */
int saefw_checkpoint_require_l1(const char *path, const cJSON *cfg, char *err, size_t errlen);

/* Remove the "<name>.tmp.<pid>" folders that writers killed mid-checkpoint left in run_dir (and put
 * back a "<name>.old.<pid>" whose replacement never arrived), for pids no longer running; one line
 * through log (may be NULL) for each. Call with the run folder's lock held. Returns the count. */
int saefw_checkpoint_remove_leftovers(const char *run_dir, void (*log)(const char *msg));

/* The next free version number in a run folder: 1 + the largest numeric subfolder name, or 0. */
int saefw_checkpoint_next_version(const char *run_dir);

#endif
