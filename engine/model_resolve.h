/* Finding a model's files: known names (gelu-1l, ...; the bundled tiny-1l), Hugging Face repo ids in
 * the standard huggingface_hub cache, local folders and files. */
#ifndef SAEFW_MODEL_RESOLVE_H
#define SAEFW_MODEL_RESOLVE_H

#include <stddef.h>

/* A path from a Hugging Face variable as huggingface_hub reads it: os.path.expandvars of
 * os.path.expanduser ("~", "~user", "$NAME", "${NAME}"). Returns 0, or -1 when it does not fit. */
int saefw_hf_expand_path(const char *path, char *out, size_t n);

/* The Hugging Face home folder as huggingface_hub's constants.py computes it: $HF_HOME, else
 * $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface, with "~" and "$VAR" expanded as Python's
 * expanduser and expandvars do. A variable set to the empty string counts as unset (Python would
 * take it as the current folder). Returns 0, or -1 when the path does not fit in n bytes. */
int saefw_hf_home_dir(char *out, size_t n);

/* The Hugging Face hub cache folder, the one source of truth for every saefw path into the cache
 * (model and dataset resolution, `saefw download`): $HF_HUB_CACHE, else the legacy
 * $HUGGINGFACE_HUB_CACHE, else saefw_hf_home_dir()/hub (so $HF_HOME/hub, else
 * $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub); "~" and "$VAR" expanded, empty
 * variables unset, as in saefw_hf_home_dir. Returns 0, or -1 when the path does not fit. */
int saefw_hf_cache_dir(char *out, size_t n);

/* The name of one repo's folder in the cache, "<type>s--<org>--<name>" (huggingface_hub's
 * repo_folder_name), repo_type "model", "dataset" or "space". Returns 0, or -1 for another type or
 * a name that does not fit. The repo id is not validated here. */
int saefw_hf_repo_folder(const char *repo_type, const char *repo, char *out, size_t n);

/* The cache folder of one repo: saefw_hf_cache_dir()/saefw_hf_repo_folder(). Returns 0 or -1 as
 * saefw_hf_repo_folder. */
int saefw_hf_repo_dir(const char *repo_type, const char *repo, char *out, size_t n);

/* The snapshot folder that refs/main of a cached repo folder points at, into out; 0, or -1 when
 * there is no usable ref (absent, empty, or not a plain commit name). */
int saefw_hf_main_snapshot(const char *repo_folder, char *out, size_t n);

/* Resolve `name` to a weights file and, when there is one, its config.json (config[0] == 0 when the
 * weights carry their config as safetensors metadata). When the files are absent the error says
 * which files are needed, where to put them, and the command that downloads them. */
int saefw_model_resolve(const char *name, char *weights, size_t wn, char *config, size_t cn, char *err, size_t errlen);

#endif
