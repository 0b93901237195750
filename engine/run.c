/* The run object: run folder, resume, seed, evaluators and derived settings around the training loop. */
#include "run.h"

#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "train_multi.h"
#include "util.h"

struct saefw_session {
    saefw_train_opts o;
    const char **allow_change; /* the cfg's names, then the command line's */
    char run_dir[PATH_MAX];
    cJSON *config; /* the recorded configuration with the buffer's fields */
    saefw_evaluator *evs[2];
    saefw_recons_evaluator recons;
    saefw_mmcs_evaluator mmcs;
    int with_recons, trained;
    /* several SAEs on one buffer (saefw_run_cfg.saes) */
    int n_saes;
    saefw_train_opts *multi_opts;      /* [n_saes] */
    const char **names;                /* [n_saes] */
    cJSON **configs;                   /* [n_saes]: each SAE's cfg.json fields */
    saefw_source **eval_copies;        /* [n_saes]: each SAE's evaluation source, or NULL */
    saefw_recons_evaluator *recons_of; /* [n_saes] */
    saefw_mmcs_evaluator *mmcs_of;     /* [n_saes] */
    saefw_evaluator *(*evs_of)[2];     /* [n_saes] */
};

/* The command line's run options (saefw_run_set_cli), owned copies. */
static struct {
    char *resume;
    char **allow_change;
    int n_allow_change;
    char **overrides; /* pairs */
    int n_overrides;
    int taken;
} g_cli;

static void cli_free(void) {
    free(g_cli.resume);
    for (int i = 0; i < g_cli.n_allow_change; i++) free(g_cli.allow_change[i]);
    free(g_cli.allow_change);
    for (int i = 0; i < 2 * g_cli.n_overrides; i++) free(g_cli.overrides[i]);
    free(g_cli.overrides);
    memset(&g_cli, 0, sizeof g_cli);
}

int saefw_run_set_cli(const saefw_run_cli *cli, char *err, size_t errlen) {
    cli_free();
    if (!cli) return 0;
    if (cli->resume && !(g_cli.resume = saefw_strdup(cli->resume, err, errlen))) return -1;
    if (cli->n_allow_change > 0) {
        g_cli.allow_change = saefw_calloc((size_t)cli->n_allow_change, sizeof(char *), err, errlen);
        if (!g_cli.allow_change) {
            cli_free();
            return -1;
        }
        for (; g_cli.n_allow_change < cli->n_allow_change; g_cli.n_allow_change++) {
            char *k = saefw_strdup(cli->allow_change[g_cli.n_allow_change], err, errlen);
            if (!k) {
                cli_free();
                return -1;
            }
            g_cli.allow_change[g_cli.n_allow_change] = k;
        }
    }
    if (cli->n_overrides > 0) {
        g_cli.overrides = saefw_calloc(2 * (size_t)cli->n_overrides, sizeof(char *), err, errlen);
        if (!g_cli.overrides) {
            cli_free();
            return -1;
        }
        for (; g_cli.n_overrides < cli->n_overrides; g_cli.n_overrides++) {
            int i = g_cli.n_overrides;
            g_cli.overrides[2 * i] = saefw_strdup(cli->overrides[2 * i], err, errlen);
            g_cli.overrides[2 * i + 1] =
                g_cli.overrides[2 * i] ? saefw_strdup(cli->overrides[2 * i + 1], err, errlen) : NULL;
            if (!g_cli.overrides[2 * i + 1]) {
                g_cli.n_overrides++; /* frees the pair's key too */
                cli_free();
                return -1;
            }
        }
    }
    return 0;
}

const char *saefw_run_cli_resume(void) { return g_cli.resume; }

int saefw_run_n_overrides(void) { return g_cli.n_overrides; }

int saefw_run_overrides_taken(void) { return g_cli.taken; }

void saefw_run_cfg_init(saefw_run_cfg *c) {
    memset(c, 0, sizeof *c);
    c->log_every = 100;
    c->eval_every = 1000;
    c->freq_batches = 5;
    c->recons_batches = 5;
    c->seed = SAEFW_DEFAULT_SEED;
    c->progress = -1;
    c->num_tokens = NAN;
}

void saefw_run_default_dir(const char *script, char *buf, size_t n) {
    /* The script's name without its folder and ".lua", as arg[0] gives it. */
    char name[256] = "run";
    if (script) {
        const char *base = strrchr(script, '/');
        base = base ? base + 1 : script;
        size_t len = strlen(base);
        if (len > 4 && strcmp(base + len - 4, ".lua") == 0) len -= 4;
        if (len > 0 && len < sizeof name) snprintf(name, sizeof name, "%.*s", (int)len, base);
    }
    char stamp[32] = "";
    time_t now = time(NULL);
    struct tm tm;
    if (localtime_r(&now, &tm)) strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
    snprintf(buf, n, "runs/%s-%s", name, stamp);
    /* Unique per second: a folder that already holds a run gets a suffix. */
    for (int k = 2;; k++) {
        char mp[PATH_MAX + 16];
        snprintf(mp, sizeof mp, "%s/metrics.jsonl", buf);
        if (access(mp, F_OK) != 0) return;
        snprintf(buf, n, "runs/%s-%s-%d", name, stamp, k);
    }
}

int64_t saefw_run_model_batch(int64_t batch_size, int64_t seq_len) {
    int64_t mb = seq_len > 0 ? batch_size / seq_len * 16 : 0;
    return mb > 0 ? mb : 1;
}

int64_t saefw_run_steps(double num_tokens, int64_t batch_size, char *err, size_t errlen) {
    double steps = batch_size > 0 ? floor(num_tokens / (double)batch_size) : 0;
    if (!(steps >= 1))
        return saefw_errf(err, errlen, "num_tokens %g is less than one batch of %lld", num_tokens,
                          (long long)batch_size);
    return (int64_t)steps;
}

/* Top-level keys in strcmp order, as the Lua binding writes a config table. */
static void sort_keys(cJSON *obj) {
    cJSON *sorted = NULL;
    while (obj->child) {
        cJSON *it = obj->child;
        obj->child = it->next;
        cJSON **at = &sorted;
        while (*at && strcmp((*at)->string, it->string) <= 0) at = &(*at)->next;
        it->next = *at;
        *at = it;
    }
    cJSON *prev = NULL;
    for (cJSON *it = sorted; it; it = it->next) {
        it->prev = prev;
        prev = it;
    }
    /* cJSON keeps the last item in the first one's prev. */
    if (sorted) sorted->prev = prev;
    obj->child = sorted;
}

/* The config with the buffer's model fields added where the config does not set them. */
static cJSON *record_config(const saefw_run_cfg *c, char *err, size_t errlen) {
    const saefw_run_model *rm = c->on_model;
    const int with_model = rm && rm->model_name;
    if (!c->config && !with_model) return NULL;
    cJSON *cfg = c->config ? cJSON_Duplicate(c->config, 1) : cJSON_CreateObject();
    /* What the trainer does with the decoder (SAELens's name), unless the config says it. */
    if (cfg && cJSON_IsObject(cfg) && !cJSON_HasObjectItem(cfg, "normalize_sae_decoder") &&
        !cJSON_AddBoolToObject(cfg, "normalize_sae_decoder", !c->free_decoder)) {
        cJSON_Delete(cfg);
        saefw_errf(err, errlen, "out of memory");
        return NULL;
    }
    if (cfg && !with_model) return cfg;
    if (!cfg || !cJSON_IsObject(cfg)) {
        cJSON_Delete(cfg);
        saefw_errf(err, errlen, cfg ? "config must be a table of keys" : "out of memory");
        return NULL;
    }
    char hook[96];
    saefw_hook_name(rm->hook, hook, sizeof hook);
    int ok = 1;
    if (!cJSON_HasObjectItem(cfg, "model_name"))
        ok &= cJSON_AddStringToObject(cfg, "model_name", rm->model_name) != NULL;
    if (!cJSON_HasObjectItem(cfg, "hook_name")) ok &= cJSON_AddStringToObject(cfg, "hook_name", hook) != NULL;
    if (!cJSON_HasObjectItem(cfg, "hook_layer") && strncmp(hook, "blocks.", 7) == 0)
        ok &= cJSON_AddNumberToObject(cfg, "hook_layer", rm->hook.layer) != NULL;
    if (c->hook_out && !cJSON_HasObjectItem(cfg, "hook_name_out")) {
        char hook_out[96];
        saefw_hook_name(*c->hook_out, hook_out, sizeof hook_out);
        ok &= cJSON_AddStringToObject(cfg, "hook_name_out", hook_out) != NULL;
    }
    if (!cJSON_HasObjectItem(cfg, "context_size"))
        ok &= cJSON_AddNumberToObject(cfg, "context_size", (double)saefw_tokens_seq_len(rm->tokens)) != NULL;
    if (!cJSON_HasObjectItem(cfg, "model_batch_size"))
        ok &= cJSON_AddNumberToObject(cfg, "model_batch_size", (double)rm->model_batch) != NULL;
    if (!ok) {
        cJSON_Delete(cfg);
        saefw_errf(err, errlen, "out of memory");
        return NULL;
    }
    sort_keys(cfg);
    return cfg;
}

static int open_multi(const saefw_run_cfg *c, saefw_session *s, char *err, size_t errlen);

/* An SAE made for given sites (saefw_sae's hook_name, hook_name_out) trains only on a buffer that
 * captures them; a buffer that does not run on the model is not checked. */
static int check_sae_sites(const saefw_run_cfg *c, const saefw_sae *sae, char *err, size_t errlen) {
    if (!c->on_model) return 0;
    char hook[96];
    saefw_hook_name(c->on_model->hook, hook, sizeof hook);
    if (sae->hook_name[0] && strcmp(sae->hook_name, hook) != 0)
        return saefw_errf(err, errlen, "the SAE was made for site %s, but the buffer captures %s", sae->hook_name,
                          hook);
    if (!sae->hook_name_out[0]) return 0;
    if (!c->hook_out)
        return saefw_errf(err, errlen, "the transcoder reconstructs site %s, but the buffer captures no target site",
                          sae->hook_name_out);
    saefw_hook_name(*c->hook_out, hook, sizeof hook);
    if (strcmp(sae->hook_name_out, hook) != 0)
        return saefw_errf(err, errlen, "the transcoder was made for target site %s, but the buffer captures %s",
                          sae->hook_name_out, hook);
    return 0;
}

int saefw_session_open(const saefw_run_cfg *c, saefw_session **out, char *err, size_t errlen) {
    *out = NULL;
    if (c->saes && c->sae) return saefw_errf(err, errlen, "give 'sae' or 'saes', not both");
    if (c->saes && c->n_saes <= 0) return saefw_errf(err, errlen, "'saes' is empty: give at least one SAE");
    if (c->saes && !c->buffer) return saefw_errf(err, errlen, "saes need a buffer");
    if (!c->saes && (!c->sae || !c->buffer || !c->optimizer.plugin))
        return saefw_errf(err, errlen, "sae, buffer and optimizer are required");
    if (c->sae && check_sae_sites(c, c->sae, err, errlen) != 0) return -1;
    for (int i = 0; c->saes && i < c->n_saes; i++)
        if (c->saes[i].sae && check_sae_sites(c, c->saes[i].sae, err, errlen) != 0) return -1;
    if (c->recons_batches < 0 || c->recons_batches > SAEFW_MAX_EVAL_BATCHES)
        return saefw_errf(err, errlen, "recons_batches = %lld is not in 0..%d", (long long)c->recons_batches,
                          SAEFW_MAX_EVAL_BATCHES);
    if (c->freq_batches > SAEFW_MAX_EVAL_BATCHES)
        return saefw_errf(err, errlen, "freq_batches = %lld is more than %d", (long long)c->freq_batches,
                          SAEFW_MAX_EVAL_BATCHES);
    if (!(c->clip_grad_norm >= 0) || isinf(c->clip_grad_norm))
        return saefw_errf(err, errlen, "clip_grad_norm must be a finite number > 0 (0: no clipping), got %g",
                          c->clip_grad_norm);
    int64_t steps = c->steps;
    if (steps <= 0) {
        if (isnan(c->num_tokens)) return saefw_errf(err, errlen, "give 'steps' or 'num_tokens'");
        if ((steps = saefw_run_steps(c->num_tokens, c->buffer->batch, err, errlen)) < 0) return -1;
    }
    saefw_session *s = saefw_calloc(1, sizeof *s, err, errlen);
    if (!s) return -1;
    /* The command line's --resume when the cfg names none; its --allow-change names after the cfg's. */
    const char *resume = c->resume ? c->resume : g_cli.resume;
    int n_allow = c->n_allow_change + g_cli.n_allow_change;
    if (n_allow > 0) {
        s->allow_change = saefw_calloc((size_t)n_allow, sizeof(char *), err, errlen);
        if (!s->allow_change) {
            free(s);
            return -1;
        }
        for (int i = 0; i < c->n_allow_change; i++) s->allow_change[i] = c->allow_change[i];
        for (int i = 0; i < g_cli.n_allow_change; i++) s->allow_change[c->n_allow_change + i] = g_cli.allow_change[i];
    }
    s->config = record_config(c, err, errlen);
    if (!s->config && (c->config || (c->on_model && c->on_model->model_name))) {
        free(s->allow_change);
        free(s);
        return -1;
    }

    /* The run folder: the one being resumed, else the one named, else a new default one. */
    if (resume) snprintf(s->run_dir, sizeof s->run_dir, "%s", resume);
    else if (c->run_dir) snprintf(s->run_dir, sizeof s->run_dir, "%s", c->run_dir);
    else if (!c->no_run_dir) saefw_run_default_dir(c->script, s->run_dir, sizeof s->run_dir);

    /* Evaluators: MMCS when the evaluation draws come with ground truth (a synthetic source), the
     * reconstruction score, drawn from the run seed, when the buffer runs on the model host. */
    int n = 0;
    char eerr[256];
    if (saefw_mmcs_evaluator_init(&s->mmcs, c->eval_source ? c->eval_source : c->buffer->src, eerr, sizeof eerr) == 0)
        s->evs[n++] = &s->mmcs.ev;
    if (c->on_model && c->recons_batches > 0) {
        saefw_recons_evaluator_init(&s->recons, c->on_model->model, c->on_model->tokens, c->on_model->hook,
                                    c->recons_batches, c->on_model->model_batch, c->recons_mode, c->seed);
        if (c->hook_out) {
            s->recons.transcoder = 1;
            s->recons.hook_in = c->on_model->hook;
            s->recons.hook = *c->hook_out;
        }
        saefw_recons_evaluator_set_freq(&s->recons, c->eval_freq);
        s->evs[n++] = &s->recons.ev;
        s->with_recons = 1;
    }

    saefw_train_opts *o = &s->o;
    o->sae = c->sae;
    o->buffer = c->buffer;
    o->eval_source = c->eval_source;
    o->steps = steps;
    o->optimizer = c->optimizer;
    o->plugins = c->plugins;
    o->n_plugins = c->n_plugins;
    o->log_every = c->log_every;
    o->eval_every = c->eval_every;
    o->checkpoint_every = c->checkpoint_every;
    o->freq_batches = c->freq_batches;
    o->run_dir = s->run_dir[0] ? s->run_dir : NULL;
    o->cfg = s->config;
    o->seed = c->seed;
    o->progress = c->progress;
    o->on_event = c->on_event;
    o->event_ud = c->event_ud;
    o->evaluators = s->evs;
    o->n_evaluators = n;
    o->resume = resume != NULL;
    o->resume_from = c->resume_from;
    o->allow_change = (const char *const *)s->allow_change;
    o->n_allow_change = n_allow;
    o->clip_grad_norm = c->clip_grad_norm;
    o->free_decoder = c->free_decoder;
    o->zero = c->zero;
    if (c->saes && open_multi(c, s, err, errlen) != 0) {
        saefw_session_close(s);
        return -1;
    }
    *out = s;
    return 0;
}

/* Each SAE's cfg.json fields: the run's, with its own name, L1 coefficient and learning rate. */
static cJSON *sae_config(const saefw_session *s, const saefw_run_sae *rs) {
    cJSON *cfg = s->config ? cJSON_Duplicate(s->config, 1) : cJSON_CreateObject();
    if (!cfg || !cJSON_IsObject(cfg)) {
        cJSON_Delete(cfg);
        return NULL;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(cfg, "sae_name");
    cJSON_DeleteItemFromObjectCaseSensitive(cfg, "l1_coeff");
    int ok = cJSON_AddStringToObject(cfg, "sae_name", rs->name) != NULL &&
             cJSON_AddNumberToObject(cfg, "l1_coeff", rs->sae->l1_coeff) != NULL;
    double lr = rs->optimizer.opts ? saefw_opts_number(rs->optimizer.opts, "lr") : 0;
    if (ok && lr > 0) {
        cJSON_DeleteItemFromObjectCaseSensitive(cfg, "lr");
        ok = cJSON_AddNumberToObject(cfg, "lr", lr) != NULL;
    }
    if (!ok) {
        cJSON_Delete(cfg);
        return NULL;
    }
    sort_keys(cfg);
    return cfg;
}

/* The per-SAE options of a run of several SAEs, from the single run's options in s->o. */
static int open_multi(const saefw_run_cfg *c, saefw_session *s, char *err, size_t errlen) {
    const int n = c->n_saes;
    s->n_saes = n;
    s->multi_opts = saefw_calloc((size_t)n, sizeof *s->multi_opts, err, errlen);
    s->names = s->multi_opts ? saefw_calloc((size_t)n, sizeof *s->names, err, errlen) : NULL;
    s->configs = s->names ? saefw_calloc((size_t)n, sizeof *s->configs, err, errlen) : NULL;
    s->eval_copies = s->configs ? saefw_calloc((size_t)n, sizeof *s->eval_copies, err, errlen) : NULL;
    s->recons_of = s->eval_copies ? saefw_calloc((size_t)n, sizeof *s->recons_of, err, errlen) : NULL;
    s->mmcs_of = s->recons_of ? saefw_calloc((size_t)n, sizeof *s->mmcs_of, err, errlen) : NULL;
    s->evs_of = s->mmcs_of ? saefw_calloc((size_t)n, sizeof *s->evs_of, err, errlen) : NULL;
    if (!s->evs_of) return -1;
    for (int i = 0; i < n; i++) {
        const saefw_run_sae *rs = &c->saes[i];
        if (!rs->sae || !rs->optimizer.plugin)
            return saefw_errf(err, errlen, "saes[%d]: sae and optimizer are required", i + 1);
        s->names[i] = rs->name;
        saefw_train_opts *o = &s->multi_opts[i];
        *o = s->o;
        o->sae = rs->sae;
        o->optimizer = rs->optimizer;
        o->plugins = rs->plugins;
        o->n_plugins = rs->n_plugins;
        o->seed = saefw_multi_seed(c->seed, rs->name ? rs->name : "");
        if (rs->event_ud) o->event_ud = rs->event_ud;
        if (s->config && !(s->configs[i] = sae_config(s, rs))) return saefw_errf(err, errlen, "out of memory");
        o->cfg = s->configs[i];
        /* On the model, each SAE draws its evaluation rows from a source of its own that starts as the
         * buffer's source would: what it measures does not depend on the SAEs evaluated before it. */
        saefw_source *esrc = c->eval_source ? c->eval_source : c->buffer->src;
        if (!c->eval_source && esrc->kind && !strcmp(esrc->kind, "model")) {
            if (saefw_source_model_eval_copy(esrc, &s->eval_copies[i], err, errlen) != 0) return -1;
            esrc = s->eval_copies[i];
        }
        o->eval_source = esrc;
        int ne = 0;
        char eerr[256];
        if (saefw_mmcs_evaluator_init(&s->mmcs_of[i], esrc, eerr, sizeof eerr) == 0)
            s->evs_of[i][ne++] = &s->mmcs_of[i].ev;
        if (s->with_recons) {
            saefw_recons_evaluator_init(&s->recons_of[i], c->on_model->model, c->on_model->tokens, c->on_model->hook,
                                        c->recons_batches, c->on_model->model_batch, c->recons_mode, c->seed);
            if (c->hook_out) {
                s->recons_of[i].transcoder = 1;
                s->recons_of[i].hook_in = c->on_model->hook;
                s->recons_of[i].hook = *c->hook_out;
            }
            if (i > 0) s->recons_of[i].base_from = &s->recons_of[0];
            saefw_recons_evaluator_set_freq(&s->recons_of[i], c->eval_freq);
            s->evs_of[i][ne++] = &s->recons_of[i].ev;
        }
        o->evaluators = s->evs_of[i];
        o->n_evaluators = ne;
    }
    return 0;
}

int saefw_session_n_saes(const saefw_session *s) { return s->n_saes; }

const saefw_recons *saefw_session_recons_of(const saefw_session *s, int i) {
    return s->with_recons && i >= 0 && i < s->n_saes ? &s->recons_of[i].last : NULL;
}

int saefw_session_train_multi(saefw_session *s, saefw_train_result *res, char *err, size_t errlen) {
    if (!s->n_saes) return saefw_errf(err, errlen, "this session trains one SAE: use saefw_session_train");
    if (s->trained) return saefw_errf(err, errlen, "a session trains once; open another for the next run");
    s->trained = 1;
    for (int i = 0; i < s->n_saes; i++) {
        memset(&res[i], 0, sizeof res[i]);
        res[i].stop = SAEFW_STOP_ERROR;
    }
    return saefw_multi_train(s->o.buffer, s->o.run_dir, s->o.resume, s->names, s->multi_opts, s->n_saes, res, err,
                             errlen);
}

const char *saefw_session_run_dir(const saefw_session *s) { return s->o.run_dir; }

int64_t saefw_session_steps(const saefw_session *s) { return s->o.steps; }

const saefw_recons *saefw_session_recons(const saefw_session *s) { return s->with_recons ? &s->recons.last : NULL; }

int saefw_session_train(saefw_session *s, saefw_train_result *res, char *err, size_t errlen) {
    if (s->trained) {
        memset(res, 0, sizeof *res);
        res->stop = SAEFW_STOP_ERROR;
        return saefw_errf(err, errlen, "a session trains once; open another for the next run");
    }
    if (s->n_saes) {
        memset(res, 0, sizeof *res);
        res->stop = SAEFW_STOP_ERROR;
        return saefw_errf(err, errlen, "this session trains several SAEs: use saefw_session_train_multi");
    }
    s->trained = 1;
    return saefw_train(&s->o, res, err, errlen);
}

void saefw_session_close(saefw_session *s) {
    if (!s) return;
    if (s->with_recons) saefw_recons_evaluator_free(&s->recons);
    for (int i = 0; i < s->n_saes; i++) {
        if (s->recons_of) saefw_recons_evaluator_free(&s->recons_of[i]);
        if (s->configs) cJSON_Delete(s->configs[i]);
        if (s->eval_copies) saefw_source_free(s->eval_copies[i]);
    }
    free(s->multi_opts);
    free(s->names);
    free(s->configs);
    free(s->eval_copies);
    free(s->recons_of);
    free(s->mmcs_of);
    free(s->evs_of);
    cJSON_Delete(s->config);
    free(s->allow_change);
    free(s);
}

/* Lua's tonumber on a string: an integer (decimal, or hex wrapping around) or a float (strtod, but no
 * "inf" or "nan"), with blanks around it. Returns 0 when it is no number. */
static int text_number(const char *s, int *is_int, int64_t *iv, double *fv) {
    if (strpbrk(s, "nN")) return 0; /* Lua refuses "inf" and "nan" */
    const char *p = s;
    while (isspace((unsigned char)*p)) p++;
    int neg = 0;
    if (*p == '-' || *p == '+') neg = *p++ == '-';
    uint64_t a = 0;
    int digits = 0, overflow = 0;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        for (p += 2; isxdigit((unsigned char)*p); p++, digits++)
            a = a * 16 + (uint64_t)(isdigit((unsigned char)*p) ? *p - '0' : (tolower((unsigned char)*p) - 'a') + 10);
    } else {
        for (; isdigit((unsigned char)*p); p++, digits++) {
            int d = *p - '0';
            if (a > (uint64_t)INT64_MAX / 10 || a * 10 + (uint64_t)d > (uint64_t)INT64_MAX + (uint64_t)neg)
                overflow = 1;
            a = a * 10 + (uint64_t)d;
        }
    }
    while (isspace((unsigned char)*p)) p++;
    if (digits > 0 && !overflow && *p == 0) {
        *is_int = 1;
        *iv = (int64_t)(neg ? 0 - a : a);
        return 1;
    }
    char *end;
    double v = strtod(s, &end);
    if (end == s) return 0;
    while (isspace((unsigned char)*end)) end++;
    if (*end != 0) return 0;
    *is_int = 0;
    *fv = v;
    return 1;
}

int saefw_run_parse_override(const char *key, const char *text, saefw_value_type type, saefw_value *out, char *err,
                             size_t errlen) {
    memset(out, 0, sizeof *out);
    out->type = type;
    int is_int = 0;
    int64_t iv = 0;
    double fv = 0;
    switch (type) {
    case SAEFW_VALUE_INT:
        if (text_number(text, &is_int, &iv, &fv)) {
            /* math.tointeger: a float with an integral value in range is that integer. */
            if (is_int) {
                out->i = iv;
                return 0;
            }
            if (fv == floor(fv) && fv >= -9223372036854775808.0 && fv < 9223372036854775808.0) {
                out->i = (int64_t)fv;
                return 0;
            }
        }
        return saefw_errf(err, errlen, "--%s: expected an integer, got '%s'", key, text);
    case SAEFW_VALUE_FLOAT:
        if (!text_number(text, &is_int, &iv, &fv))
            return saefw_errf(err, errlen, "--%s: expected a number, got '%s'", key, text);
        out->f = is_int ? (double)iv : fv;
        return 0;
    case SAEFW_VALUE_BOOL: {
        static const char *const yes[] = {"true", "1", "yes", "on"}, *const no[] = {"false", "0", "no", "off"};
        for (int k = 0; k < 4; k++) {
            if (strcasecmp(text, yes[k]) == 0) {
                out->b = 1;
                return 0;
            }
            if (strcasecmp(text, no[k]) == 0) return 0;
        }
        return saefw_errf(err, errlen, "--%s: expected true or false, got '%s'", key, text);
    }
    case SAEFW_VALUE_STRING: out->s = text; return 0;
    case SAEFW_VALUE_NONE: break;
    }
    return saefw_errf(err, errlen, "--%s: the key's type cannot be set from the command line", key);
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* "unknown config key '--KEY' (valid keys: ...)" with config's keys sorted. */
static int unknown_key(const cJSON *config, const char *key, char *err, size_t errlen) {
    int n = cJSON_GetArraySize(config);
    const char **names = n > 0 ? calloc((size_t)n, sizeof *names) : NULL;
    char list[1024] = "";
    if (names) {
        int k = 0;
        for (const cJSON *it = config->child; it && k < n; it = it->next) names[k++] = it->string;
        qsort(names, (size_t)k, sizeof *names, cmp_names);
        size_t used = 0;
        for (int i = 0; i < k && used < sizeof list; i++)
            used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", names[i]);
        free(names);
    }
    return saefw_errf(err, errlen, "unknown config key '--%s' (valid keys: %s)", key, list);
}

int saefw_run_apply_overrides(cJSON *config, const saefw_value_type *types, saefw_override *applied, char *err,
                              size_t errlen) {
    g_cli.taken = 1;
    if (!cJSON_IsObject(config)) return saefw_errf(err, errlen, "the configuration must be a table of keys");
    for (int i = 0; i < g_cli.n_overrides; i++) {
        const char *key = g_cli.overrides[2 * i], *text = g_cli.overrides[2 * i + 1];
        int at = 0;
        cJSON *item = config->child;
        while (item && strcmp(item->string, key) != 0) {
            item = item->next;
            at++;
        }
        if (!item) return unknown_key(config, key, err, errlen);
        saefw_value_type ty = SAEFW_VALUE_NONE;
        if (types) ty = types[at];
        else if (cJSON_IsNumber(item))
            ty = item->valuedouble == floor(item->valuedouble) && fabs(item->valuedouble) < 9.0e15 ? SAEFW_VALUE_INT
                                                                                                   : SAEFW_VALUE_FLOAT;
        else if (cJSON_IsBool(item)) ty = SAEFW_VALUE_BOOL;
        else if (cJSON_IsString(item)) ty = SAEFW_VALUE_STRING;
        if (ty == SAEFW_VALUE_NONE)
            return saefw_errf(err, errlen, "--%s: the key holds a %s, which cannot be set from the command line", key,
                              cJSON_IsObject(item) || cJSON_IsArray(item) ? "table" : "value with no JSON form");
        saefw_value v;
        if (saefw_run_parse_override(key, text, ty, &v, err, errlen) != 0) return -1;
        cJSON *nv = ty == SAEFW_VALUE_INT     ? cJSON_CreateNumber((double)v.i)
                    : ty == SAEFW_VALUE_FLOAT ? cJSON_CreateNumber(v.f)
                    : ty == SAEFW_VALUE_BOOL  ? cJSON_CreateBool(v.b)
                                              : cJSON_CreateString(text);
        if (!nv || !cJSON_ReplaceItemInObjectCaseSensitive(config, key, nv)) {
            cJSON_Delete(nv);
            return saefw_errf(err, errlen, "out of memory");
        }
        if (applied) {
            applied[i].key = key;
            applied[i].value = v;
        }
    }
    return 0;
}
