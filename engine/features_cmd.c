/* `saefw features`: a checkpoint's feature report, with the model, hook and data its cfg.json names. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "features_report.h"
#include "token_dataset.h"
#include "model_resolve.h"
#include "parallel.h"
#include "sae_resolve.h"
#include "util.h"

static const char *cfg_string(const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    return cJSON_IsString(v) && v->valuestring[0] ? v->valuestring : NULL;
}

static int cfg_int(const cJSON *cfg, const char *key, int64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!cJSON_IsNumber(v)) return 0;
    *out = (int64_t)v->valuedouble;
    return 1;
}

void saefw_features_job_close(saefw_features_job *j) {
    if (j->have_sae) saefw_sae_free(&j->sae);
    j->have_sae = 0;
    saefw_tokens_free(j->tokens);
    j->tokens = NULL;
    saefw_model_free(j->model);
    j->model = NULL;
    saefw_tokenizer_free(j->tokenizer);
    j->tokenizer = NULL;
}

int saefw_features_job_open(saefw_features_job *j, const char *checkpoint, const char *model, const char *data,
                            char *err, size_t errlen) {
    memset(j, 0, sizeof *j);
    cJSON *cfg = NULL, *mcfg = NULL;
    int rc = -1;
    /* A Hub path (the seed's NeelNanda/sparse_autoencoder/25.pt) comes from the cache or is fetched. */
    if (saefw_sae_resolve(checkpoint, j->checkpoint, sizeof j->checkpoint, NULL, err, errlen) != 0) return -1;
    if (saefw_checkpoint_load(j->checkpoint, &j->sae, &cfg, err, errlen) != 0) return -1;
    j->have_sae = 1;
    if (j->sae.transcoder) {
        saefw_errf(err, errlen,
                   "%s: a transcoder (its decoder writes %s, not the site it reads): the feature report supports "
                   "SAEs only",
                   checkpoint, cfg_string(cfg, "hook_name_out") ? cfg_string(cfg, "hook_name_out") : "another site");
        goto out;
    }
    if (!model) model = cfg_string(cfg, "model_name");
    if (!model) {
        saefw_errf(err, errlen, "%s: cfg.json names no model_name: give the model with --model NAME", checkpoint);
        goto out;
    }
    snprintf(j->model_name, sizeof j->model_name, "%s", model);

    char weights[PATH_MAX], config[PATH_MAX];
    if (saefw_model_resolve(model, weights, sizeof weights, config, sizeof config, err, errlen) != 0) goto out;
    saefw_model_cfg mc, *mcp = NULL;
    if (config[0]) {
        char *text = NULL;
        if (saefw_read_file(config, &text, NULL, err, errlen) != 0) goto out;
        int r = saefw_model_cfg_from_json(text, config, &mc, err, errlen);
        mcfg = cJSON_Parse(text); /* for bos_token_id */
        free(text);
        if (r != 0) goto out;
        mcp = &mc;
    }
    if (saefw_model_load(weights, mcp, &j->model, err, errlen) != 0) goto out;

    const char *hook = cfg_string(cfg, "hook_name");
    if (!hook) hook = cfg_string(cfg, "act_name"); /* the seed's N_cfg.json */
    int64_t layer = -1;
    if (!hook) {
        hook = cfg_string(cfg, "site");
        if (!cfg_int(cfg, "hook_layer", &layer) && !cfg_int(cfg, "layer", &layer)) layer = 0;
    }
    if (!hook) {
        saefw_errf(err, errlen, "%s: cfg.json names no hook_name (or site): cannot tell where the SAE reads the model",
                   checkpoint);
        goto out;
    }
    if (saefw_model_hook_resolve(j->model, hook, strncmp(hook, "blocks.", 7) ? (int)layer : -1, &j->hook, err,
                                 errlen) != 0) {
        saefw_err_prefix(err, errlen, "%s: hook", checkpoint);
        goto out;
    }
    saefw_hook_name(j->hook, j->hook_name, sizeof j->hook_name);
    int width = saefw_model_hook_width(j->model, j->hook);
    if (j->sae.d_in != width) {
        saefw_errf(err, errlen,
                   "%s: the SAE's d_in %lld does not match the width %d of %s at %s (give the model it was trained "
                   "on with --model NAME)",
                   checkpoint, (long long)j->sae.d_in, width, model, j->hook_name);
        goto out;
    }

    int tiny = !strcmp(model, "tiny-1l");
    if (!data) data = cfg_string(cfg, "data");
    if (!data) data = cfg_string(cfg, "dataset_path");
    if (data) {
        snprintf(j->data, sizeof j->data, "%s", data);
    } else if (!tiny ||
               saefw_exe_relative(SAEFW_DATA_SUBDIR "/models/tiny-1l/tokens.npy", j->data, sizeof j->data) != 0) {
        saefw_errf(err, errlen, "%s: cfg.json names no data: give the tokens with --data FILE", checkpoint);
        goto out;
    }
    int64_t seq_len = 128, bos = -1;
    /* context_size is 0 in a cfg.json written without a token source */
    if (!cfg_int(cfg, "context_size", &seq_len) || seq_len < 2) {
        seq_len = 128;
        cfg_int(cfg, "seq_len", &seq_len);
    }
    if (seq_len > saefw_model_config(j->model)->n_ctx) seq_len = saefw_model_config(j->model)->n_ctx;
    if (!cfg_int(cfg, "bos", &bos) && mcfg) cfg_int(mcfg, "bos_token_id", &bos);
    saefw_tokens_opts to;
    memset(&to, 0, sizeof to);
    to.path = j->data;
    to.seq_len = seq_len;
    to.bos = bos;
    to.shuffle = 0;
    if (saefw_tokens_open_any(&to, NULL, -1, &j->tokens, err, errlen) != 0) goto out;

    j->ids_only = saefw_token_decoder_for_model(&j->dec, j->model_name, tiny ? (int32_t)(bos >= 0 ? bos : 256) : -1,
                                                &j->tokenizer, j->why_ids, sizeof j->why_ids);
    rc = 0;
out:
    cJSON_Delete(cfg);
    cJSON_Delete(mcfg);
    return rc;
}

typedef struct {
    double t0, last;
    int tty;
} progress_state;

static void progress(void *ud, int64_t done, int64_t total) {
    progress_state *p = ud;
    double now = saefw_now();
    if (done < total && now - p->last < (p->tty ? 0.2 : 5.0)) return;
    p->last = now;
    double rate = done / (now - p->t0 > 1e-9 ? now - p->t0 : 1e-9);
    fprintf(stderr, "%sfeatures: %lld/%lld tokens (%.0f%%) | %.1fk tok/s%s", p->tty ? "\r" : "", (long long)done,
            (long long)total, 100.0 * (double)done / (double)total, rate / 1000, p->tty && done < total ? "" : "\n");
    fflush(stderr);
}

static const char USAGE[] =
    "usage: saefw features CHECKPOINT --out DIR [--model NAME] [--data TOKENS] [--tokens N] [--top-k K]\n"
    "                      [--threads N] [--seed S]\n"
    "  CHECKPOINT: a checkpoint folder or file, or a Hub path ORG/NAME/FILE (hf://ORG/NAME/FILE),\n"
    "  e.g. NeelNanda/sparse_autoencoder/25.pt with its 25_cfg.json\n";

/* A whole number in [lo, hi] from option `name`. */
static int parse_int(const char *name, const char *v, int64_t lo, int64_t hi, int64_t *out) {
    char *end = NULL;
    errno = 0;
    double d = strtod(v, &end); /* 1e6 and 1048576 both */
    if (!*v || *end || errno || d != (double)(int64_t)d || d < (double)lo || d > (double)hi) {
        fprintf(stderr, "saefw features: --%s: expected a whole number from %lld to %lld, got '%s'\n", name,
                (long long)lo, (long long)hi, v);
        return -1;
    }
    *out = (int64_t)d;
    return 0;
}

int saefw_features_cmd(int argc, char **argv) {
    const char *ckpt = NULL, *out = NULL, *model = NULL, *data = NULL;
    saefw_features_opts o;
    saefw_features_default_opts(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            if (ckpt) {
                fprintf(stderr, "saefw features: unexpected argument '%s'\n%s", a, USAGE);
                return 2;
            }
            ckpt = a;
            continue;
        }
        const char *k = a + 2, *v = NULL;
        char key[64];
        const char *eq = strchr(k, '=');
        if (eq) {
            snprintf(key, sizeof key, "%.*s", (int)(eq - k), k);
            k = key;
            v = eq + 1;
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            fprintf(stderr, "saefw features: --%s needs a value\n", k);
            return 2;
        }
        int64_t n;
        if (!strcmp(k, "out")) out = v;
        else if (!strcmp(k, "model")) model = v;
        else if (!strcmp(k, "data")) data = v;
        else if (!strcmp(k, "tokens")) {
            if (parse_int(k, v, 1, INT64_MAX / 2, &n) != 0) return 2;
            o.n_tokens = n;
        } else if (!strcmp(k, "top-k") || !strcmp(k, "top_k")) {
            if (parse_int(k, v, 1, 10000, &n) != 0) return 2;
            o.top_k = (int)n;
        } else if (!strcmp(k, "seed")) {
            if (parse_int(k, v, 0, INT64_MAX / 2, &n) != 0) return 2;
            o.seed = (uint64_t)n;
        } else if (!strcmp(k, "threads")) {
            char terr[256];
            int t;
            if (saefw_threads_arg(v, SAEFW_MAX_THREADS, &t, terr, sizeof terr) != 0) {
                fprintf(stderr, "saefw features: %s\n", terr);
                return 2;
            }
            saefw_set_threads(t);
        } else {
            fprintf(stderr, "saefw features: unknown option --%s\n%s", k, USAGE);
            return 2;
        }
    }
    if (!ckpt || !out) {
        fprintf(stderr, "saefw features: %s\n%s", !ckpt ? "missing CHECKPOINT" : "missing --out DIR", USAGE);
        return 2;
    }
    char err[2048];
    saefw_features_job j;
    if (saefw_features_job_open(&j, ckpt, model, data, err, sizeof err) != 0) {
        fprintf(stderr, "saefw features: %s\n", err);
        saefw_features_job_close(&j);
        return 1;
    }
    if (j.ids_only)
        fprintf(stderr, "saefw features: no tokenizer for %s, so tokens are shown as ids (#1234): %s\n", j.model_name,
                j.why_ids);
    fprintf(stderr, "saefw features: SAE %s (%lld -> %lld) on %s at %s, tokens %s\n", ckpt, (long long)j.sae.d_in,
            (long long)j.sae.d_sae, j.model_name, j.hook_name, j.data);
    progress_state ps = {saefw_now(), 0, isatty(2)};
    o.progress = progress;
    o.progress_ud = &ps;
    saefw_features *f = NULL;
    int rc = 1;
    if (saefw_features_run(j.model, j.tokens, j.hook, &j.sae, &o, &f, err, sizeof err) != 0) {
        fprintf(stderr, "saefw features: %s\n", err);
        goto done;
    }
    double t_pass = saefw_now() - ps.t0;
    saefw_report_opts ro;
    memset(&ro, 0, sizeof ro);
    ro.checkpoint = ckpt;
    ro.model_name = j.model_name;
    ro.hook_name = j.hook_name;
    ro.dec = &j.dec;
    if (saefw_features_write_report(f, &ro, out, err, sizeof err) != 0) {
        fprintf(stderr, "saefw features: %s\n", err);
        goto done;
    }
    int64_t dead = 0;
    for (int64_t i = 0; i < f->d_sae; i++) dead += f->f[i].n_nonzero == 0;
    printf("analysed %lld tokens in %.1f s (%.1fk tok/s); %lld of %lld features dead\n", (long long)f->tokens_analyzed,
           t_pass, (double)f->tokens_analyzed / t_pass / 1000, (long long)dead, (long long)f->d_sae);
    printf("report: %s/index.html\n", out);
    rc = 0;
done:
    saefw_features_free(f);
    saefw_features_job_close(&j);
    return rc;
}
