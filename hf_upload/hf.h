/* Hugging Face Hub client: upload a checkpoint folder as one commit, download files into the
 * huggingface_hub cache, and the `saefw upload` / `saefw download` / Lua `saefw.hf` front ends. */
#ifndef SAEFW_HF_H
#define SAEFW_HF_H

#include <stddef.h>
#include <stdint.h>

/* What a progress callback is told. Messages never contain the token. */
typedef enum {
    HF_EV_STEP,  /* a protocol step starts: msg says which ("preupload 3 files") */
    HF_EV_NOTE,  /* something worth telling the user: a retry, a cache hit, a generated card */
    HF_EV_BYTES, /* bytes of `name` moved so far: done of total (total 0 if unknown) */
    HF_EV_DONE   /* transfer of `name` finished: done == total bytes */
} hf_event_kind;

typedef struct {
    hf_event_kind kind;
    const char *msg;  /* HF_EV_STEP, HF_EV_NOTE */
    const char *name; /* HF_EV_BYTES, HF_EV_DONE: the file's path in the repo */
    uint64_t done, total;
} hf_event;

typedef void (*hf_progress_fn)(void *ud, const hf_event *ev);

/* Where to talk to and with what; filled by hf_config_from_env, may be adjusted afterwards. */
typedef struct {
    char *endpoint;     /* "https://huggingface.co", no trailing slash */
    char *token;        /* NULL when none was found; never printed, never uploaded */
    char *hf_home;      /* $HF_HOME or ~/.cache/huggingface */
    char *cache_dir;    /* hub cache: saefw_hf_cache_dir() of the core */
    int offline;        /* HF_HUB_OFFLINE: never touch the network */
    long retry_base_ms; /* first backoff delay, doubled per retry (SAEFW_HF_RETRY_BASE_MS, default 1000) */
    int max_retries;    /* retries after the first attempt (SAEFW_HF_MAX_RETRIES, default 5) */
    long connect_timeout_s;
    hf_progress_fn progress; /* may be NULL */
    void *progress_ud;
} hf_config;

/* Fill cfg from the environment the way huggingface_hub reads it: token from HF_TOKEN, then
 * HUGGING_FACE_HUB_TOKEN, then the file $HF_TOKEN_PATH, else $HF_HOME/token; endpoint from
 * HF_ENDPOINT; HF_HUB_OFFLINE (else TRANSFORMERS_OFFLINE); home and cache folders from the core
 * (saefw_hf_home_dir, saefw_hf_cache_dir in engine/model_resolve.h). A missing token is not
 * an error here (downloads of public repos need none). Free with hf_config_free. */
int hf_config_from_env(hf_config *cfg, char *err, size_t errlen);
void hf_config_free(hf_config *cfg);

/* Accept `name` or `org/name` (huggingface_hub's rules: letters, digits, '-', '_', '.', no "--" or
 * "..", at most 96 characters, no leading or trailing '-' or '.'); returns 0 or -1 with a message. */
int hf_validate_repo_id(const char *repo, char *err, size_t errlen);

typedef struct {
    const char *dir;          /* checkpoint folder */
    const char *repo;         /* "org/name", or "name" for the token owner's namespace */
    const char *revision;     /* branch, NULL = "main" */
    const char *message;      /* commit summary, NULL = "Upload <folder> with saefw" */
    int create;               /* create the repo first (409 "already exists" is fine) */
    int private_repo;         /* with create: make it private */
    const char *path_in_repo; /* put the folder's files under this sub-folder (an SAE id, as SAELens
                               * releases do) and write the repo-root card listing the SAEs; NULL: root */
} hf_upload_opts;

/* Upload every regular file under opts->dir (hidden files and atomic-write leftovers skipped) as
 * one commit: create repo (if asked), preupload, LFS batch + basic or multipart transfer + verify,
 * then the NDJSON commit as the last request, so a failure leaves no commit. A generated model
 * card README.md is added when the folder has cfg.json but no README.md. On success *commit_url
 * gets a malloc'd URL (caller frees). Returns 0, or -1 with a one-line message in err. */
int hf_upload_folder(const hf_config *cfg, const hf_upload_opts *opts, char **commit_url, char *err, size_t errlen);

typedef struct {
    const char *repo_type;    /* "model" (also when NULL) or "dataset" */
    const char *repo;         /* "org/name" */
    const char *revision;     /* branch, tag or commit hash; NULL = "main" */
    const char *const *files; /* paths in the repo ... */
    size_t nfiles;
    const char *const *include; /* ... or globs matched as huggingface_hub's allow_patterns
                                   * (fnmatch on the whole path, '*' crosses '/') */
    size_t ninclude;            /* neither files nor include: the whole repo */
} hf_download_opts;

/* Download files of a model or dataset repo into the huggingface_hub cache layout
 * (<cache>/<type>s--org--name/{blobs,refs,snapshots}; .no_exist/<commit>/<file> after a 404).
 * Whole repos and include globs are listed through the API's paginated tree endpoint. *path_out
 * gets a malloc'd path: the file when exactly one file was asked for, else the snapshot folder.
 * Partial blobs (<blob>.incomplete) are resumed with HTTP Range. Honours HF_HUB_OFFLINE (cache
 * only) and falls back to the cache when the endpoint cannot be reached. Returns 0, or -1 with a
 * one-line message in err. */
int hf_download_repo(const hf_config *cfg, const hf_download_opts *opts, char **path_out, char *err, size_t errlen);

/* hf_download_repo of a model repo: `files` (nfiles of them; 0: the whole repo) at `revision`. */
int hf_download(const hf_config *cfg, const char *repo, const char *revision, const char *const *files, size_t nfiles,
                char **path_out, char *err, size_t errlen);

/* A saefw_hub_fetch_fn (engine/sae_resolve.h) over hf_download: fetch `files` of model repo `repo`
 * (main) into the cache with progress on stderr; *snapshot gets the malloc'd snapshot folder. */
int saefw_hf_fetch(const char *repo, const char *const *files, size_t nfiles, char **snapshot, char *err,
                   size_t errlen);

/* Build a model card (README.md text, malloc'd into *out) from the text of a cfg.json. Unknown or
 * missing keys are left out; returns -1 only when cfg_json is not a JSON object or memory runs out. */
int hf_model_card(const char *cfg_json, const char *repo, char **out, char *err, size_t errlen);

/* The repo-root model card of a repo holding SAEs in SAELens's layout, one folder per SAE id
 * (`saefw upload --path-in-repo SAE_ID`): lists every SAE, with SAELens and saefw loading
 * instructions. existing is the repo's current README.md (NULL if none): a card saefw wrote keeps
 * everything but its SAE list, whose lines stay in order, the folders `ids` of the repo (nids of
 * them) that it does not name are added, and sae_id's line is (re)written from cfg_json (may be
 * NULL). A README without saefw's list is someone's own: *out stays NULL and it is left alone.
 * Returns 0 (*out malloc'd or NULL), -1 when memory runs out. */
int hf_repo_card(const char *existing, const char *repo, const char *const *ids, size_t nids, const char *sae_id,
                 const char *cfg_json, char **out, char *err, size_t errlen);

/* `saefw upload ...` / `saefw download ...`: argv[0] is "upload" or "download", the rest are the
 * command's arguments. Progress goes to stderr, the result (commit URL, local path) to stdout.
 * Returns the process exit code: 0 ok, 1 on failure (after printing `saefw <cmd>: <message>`),
 * 2 on a usage error. */
int saefw_hf_cli(int argc, char **argv);

/* Lua module `saefw.hf`: upload{dir=, repo=, create=, private=, message=, revision=, path_in_repo=}
 * returns the commit URL; download{repo=, repo_type= "model"|"dataset", files= | include=, revision=}
 * (files and include: a string or a list) returns the local path. Errors are raised as Lua
 * errors naming the bad argument or carrying the Hub's one-line message. */
struct lua_State;
int luaopen_saefw_hf(struct lua_State *L);

#endif
