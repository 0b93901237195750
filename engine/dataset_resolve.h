/* Finding a dataset's shard files on this machine: hf://datasets/ URIs and ORG/NAME ids looked up
 * in the huggingface_hub cache (offline, refs/<rev> -> snapshots/<commit>), local folders, single
 * files and globs, turned into one sorted list of local paths. */
#ifndef SAEFW_DATASET_RESOLVE_H
#define SAEFW_DATASET_RESOLVE_H

#include <stddef.h>

/* The shards a spec names, in the order huggingface `datasets` reads them: sorted by path
 * (byte order; within one folder that is file-name order). */
typedef struct {
    char **paths; /* n local paths (cache entries are the snapshot symlinks, which open the blobs) */
    size_t n;
    char *root;      /* the folder the glob was matched in: the snapshot, the local folder, or the glob's
                     * fixed prefix ("" for the current folder); a single file: its own path */
    char commit[41]; /* the snapshot's commit hash for a cached Hub dataset, else "" */
} saefw_shards;

/* Resolve `spec` to its shard files. spec is one of:
 *   hf://datasets/ORG/NAME[@REV][/GLOB]  the cached snapshot of that dataset repo at REV (default
 *                                        main; a branch or tag through refs/REV, or a commit hash;
 *                                        '/' in REV written %2F); GLOB relative to the repo root
 *   ORG/NAME                             the same, when it is not a local path
 *   a folder                             the files under it that match `pattern`
 *   a file                               itself
 *   a glob (has * ? or [)                the files it matches, e.g. "data/train-*.parquet"
 * Globs: '*' and '?' stay within one folder, '**' crosses folders ("**" followed by '/' also
 * matches no folder at all), [abc] [a-z] [!a] sets; names starting with '.' are skipped unless the
 * glob spells a leading '.'. `pattern` is the glob used when spec carries none (a folder, a repo
 * without GLOB); NULL means every *.parquet file at any depth.
 * Nothing touches the network. When a Hub dataset is not in the cache the error says the exact
 * `saefw download --dataset ORG/NAME [--revision REV]` command; a snapshot entry whose blob is
 * missing, no matching file, or an unreadable folder is a one-line error naming the path.
 * On success out holds at least one path; free it with saefw_shards_free. Returns 0 or -1. */
int saefw_dataset_resolve(const char *spec, const char *pattern, saefw_shards *out, char *err, size_t errlen);

void saefw_shards_free(saefw_shards *s);

/* Whether path (relative, '/'-separated) matches glob under the rules above. */
int saefw_glob_match(const char *glob, const char *path);

#endif
