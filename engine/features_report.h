/* The report folder of `saefw features` (docs/features.md): the viewer, data/summary.js and
 * data/shard_NNNN.js for the browser (JSONP-style scripts, so it works from file://), summary.json and
 * features.jsonl for other tools; and `saefw features` itself. */
#ifndef SAEFW_FEATURES_REPORT_H
#define SAEFW_FEATURES_REPORT_H

#include <stddef.h>

#include "features_analysis.h"
#include "tokenizer.h"
#include "sae.h"

#define SAEFW_FEATURES_SCHEMA "saefw-features/1"

typedef struct {
    const char *checkpoint, *model_name, *hook_name; /* for the summary's "sae" object */
    int shard_size;                                  /* features per shard (<= 0: 64) */
    const saefw_token_decoder *dec;                  /* NULL or no token_bytes: tokens shown as "#id" */
    const char *viewer_dir;                          /* folder of index.html, report.js, report.css
                                                      * (NULL: the installed one next to the binary) */
} saefw_report_opts;

/* Write the report of f into dir: everything goes into a temporary sibling folder first, which then
 * replaces dir. An existing dir is replaced only when it is empty or holds an earlier report
 * (summary.json); anything else is refused. The viewer files are copied from viewer_dir; when there
 * is none, index.html says that the viewer is not installed and the data are written all the same. */
int saefw_features_write_report(const saefw_features *f, const saefw_report_opts *o, const char *dir, char *err,
                                size_t errlen);

/* What a report is made from, resolved from a checkpoint and its cfg.json. */
typedef struct {
    saefw_sae sae;
    int have_sae;
    saefw_model *model;
    saefw_tokens *tokens;
    saefw_hook hook;
    char checkpoint[4096], model_name[256], hook_name[128], data[4096];
    saefw_token_decoder dec; /* the model's tokenizer; ids ("#1234") for a model without one */
    saefw_tokenizer *tokenizer;
    int ids_only; /* dec shows ids: the caller says so once, with why_ids */
    char why_ids[1024];
} saefw_features_job;

/* Load the SAE of checkpoint (a path, or a Hub path ORG/NAME/FILE through saefw_sae_resolve); the model (model,
 * else cfg.json's model_name), its hook (hook_name, the seed's act_name, or site and layer), the tokens (data, else
 * cfg.json's data, else tiny-1l's bundled tokens for tiny-1l) in file order, rows of cfg.json's context_size (else
 * seq_len, else 128) with cfg.json's bos (else the model's bos_token_id) at position 0. Errors name what is missing
 * and the option that gives it. Release with saefw_features_job_close (also after a failure). */
int saefw_features_job_open(saefw_features_job *j, const char *checkpoint, const char *model, const char *data,
                            char *err, size_t errlen);
void saefw_features_job_close(saefw_features_job *j);

/* `saefw features CHECKPOINT --out DIR [--model NAME] [--data TOKENS] [--tokens N] [--top-k K]
 * [--seed S]` (argv[0] is "features"; --threads is applied by the caller). Prints errors as one line;
 * returns the exit status. */
int saefw_features_cmd(int argc, char **argv);

#endif
