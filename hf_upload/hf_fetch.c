/* The Hub fetcher the engine's SAE resolution calls (saefw_sae_set_hub_fetch): download a few
 * files of a model repo into the cache with progress on stderr, as `saefw download` does. */
#include "hf_internal.h"

#include <stdlib.h>
#include <string.h>

int saefw_hf_fetch(const char *repo, const char *const *files, size_t nfiles, char **snapshot, char *err,
                   size_t errlen) {
    *snapshot = NULL;
    hf_config cfg;
    if (hf_config_from_env(&cfg, err, errlen) != 0) return -1;
    hf_term term;
    hf_term_init(&term, "download");
    cfg.progress = hf_term_event;
    cfg.progress_ud = &term;
    char *path = NULL;
    /* Two or more files: hf_download answers with the snapshot folder they are in. */
    int rc = hf_download(&cfg, repo, NULL, files, nfiles, &path, err, errlen);
    hf_term_finish(&term);
    hf_config_free(&cfg);
    if (rc != 0) return -1;
    if (nfiles == 1) {
        char *slash = strrchr(path, '/');
        if (slash) *slash = 0;
    }
    *snapshot = path;
    return 0;
}
