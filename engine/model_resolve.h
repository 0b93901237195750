/* Finding a model's files: known names (gelu-1l, ...; the bundled tiny-1l), Hugging Face repo ids in
 * the standard huggingface_hub cache, local folders and files. */
#ifndef SAEFW_MODEL_RESOLVE_H
#define SAEFW_MODEL_RESOLVE_H

#include <stddef.h>

/* The Hugging Face hub cache folder: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub. */
int saefw_hf_cache_dir(char *out, size_t n);

/* Resolve `name` to a weights file and, when there is one, its config.json (config[0] == 0 when the
 * weights carry their config as safetensors metadata). When the files are absent the error says
 * which files are needed, where to put them, and the command that downloads them. */
int saefw_model_resolve(const char *name, char *weights, size_t wn, char *config, size_t cn, char *err,
                        size_t errlen);

#endif
