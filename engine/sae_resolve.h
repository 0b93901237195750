/* Where an SAE checkpoint given by the user lives: a local path, or a file or folder of a Hugging
 * Face repo (`ORG/NAME/FILE`, `hf://ORG/NAME/FILE`) found in, or downloaded into, the hub cache. */
#ifndef SAEFW_SAE_RESOLVE_H
#define SAEFW_SAE_RESOLVE_H

#include <stddef.h>

/* Download `files` (paths in the repo) of model repo `repo` into the hub cache; *snapshot gets the
 * malloc'd snapshot folder they are in. Returns 0, or -1 with a one-line message. The binary
 * registers one when it is built with the Hub client; the core itself never talks to the network. */
typedef int (*saefw_hub_fetch_fn)(const char *repo, const char *const *files, size_t nfiles, char **snapshot, char *err,
                                  size_t errlen);
void saefw_sae_set_hub_fetch(saefw_hub_fetch_fn fn);

/* Resolve spec to a path saefw_checkpoint_load takes; *from_hub is set to 1 when it came from the
 * Hub (may be NULL). An existing local file or folder is itself (unless spec starts with hf://).
 * Otherwise `[hf://]ORG/NAME/FILE` names FILE in the model repo ORG/NAME (without hf://, only when no
 * local folder ORG exists, so a mistyped local path is not sent to the Hub): a seed checkpoint N.pt
 * (with N_cfg.json beside it), a *.safetensors file (with cfg.json beside it), or a folder in the
 * SAELens layout (cfg.json + sae_weights.safetensors). Those files are looked up in the hub cache
 * (saefw_hf_cache_dir: refs/main's snapshot first, then any snapshot holding them all), downloaded
 * through the registered fetcher when absent, unless HF_HUB_OFFLINE is set; else the error names
 * the `saefw download` command that fetches them. */
int saefw_sae_resolve(const char *spec, char *out, size_t n, int *from_hub, char *err, size_t errlen);

#endif
