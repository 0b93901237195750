/* Model card (README.md) for an uploaded SAE checkpoint, written from whatever its cfg.json says:
 * model, hook site, sizes, training tokens, hyperparameters and final metrics. */
#include "hf_internal.h"

#include "../engine/model.h"
#include "../engine/util.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const cJSON *first_of(const cJSON *cfg, const char *const *keys) {
    for (; *keys; keys++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, *keys);
        if (v && !cJSON_IsNull(v)) return v;
    }
    return NULL;
}

/* A JSON scalar as table-safe text: integers in full, other numbers in %g, strings with '|' and
 * line breaks replaced. Returns 0 when v is not a scalar. */
static int scalar_text(const cJSON *v, char *out, size_t n) {
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (isfinite(d) && d == floor(d) && fabs(d) < 1e15) snprintf(out, n, "%.0f", d);
        else snprintf(out, n, "%.6g", d);
        return 1;
    }
    if (cJSON_IsBool(v)) {
        snprintf(out, n, "%s", cJSON_IsTrue(v) ? "true" : "false");
        return 1;
    }
    if (cJSON_IsString(v)) {
        snprintf(out, n, "%.200s", v->valuestring);
        for (char *p = out; *p; p++)
            if (*p == '|' || *p == '\n' || *p == '\r' || *p == '\t') *p = ' ';
        return 1;
    }
    return 0;
}

/* "post" -> "blocks.L.mlp.hook_post": the engine's site names (its hook vocabulary, engine/model.h) to
 * TransformerLens names; a name the engine does not know is shown as it is. */
static void hook_from_site(const char *site, const cJSON *layer, char *out, size_t n) {
    const int l = cJSON_IsNumber(layer) && layer->valuedouble >= 0 && layer->valuedouble < 100000 ? layer->valueint : 0;
    saefw_hook h;
    char err[256];
    if (saefw_hook_parse(site, strncmp(site, "blocks.", 7) ? l : -1, &h, err, sizeof err) == 0)
        saefw_hook_name(h, out, n);
    else snprintf(out, n, "%.200s", site);
}

int hf_model_card(const char *cfg_json, const char *repo, char **out, char *err, size_t errlen) {
    *out = NULL;
    cJSON *cfg = cJSON_Parse(cfg_json);
    if (!cJSON_IsObject(cfg)) {
        cJSON_Delete(cfg);
        return saefw_errf(err, errlen, "cfg.json is not a JSON object");
    }
    static const char *const k_model[] = {"model_name", "model", "model_id", NULL};
    static const char *const k_hook[] = {"hook_name", "hook_point", NULL};
    static const char *const k_layer[] = {"hook_layer", "layer", "hook_point_layer", NULL};
    static const char *const k_dsae[] = {"d_sae", "dict_size", NULL};
    static const char *const k_tokens[] = {"training_tokens", "total_training_tokens", "num_tokens", NULL};
    static const char *const k_metrics[] = {"final_metrics", "metrics", NULL};
    const cJSON *model = first_of(cfg, k_model), *hook = first_of(cfg, k_hook), *layer = first_of(cfg, k_layer);
    const cJSON *d_in = cJSON_GetObjectItemCaseSensitive(cfg, "d_in"), *d_sae = first_of(cfg, k_dsae);
    const cJSON *tokens = first_of(cfg, k_tokens), *metrics = first_of(cfg, k_metrics);
    const cJSON *site = cJSON_GetObjectItemCaseSensitive(cfg, "site");
    const cJSON *mult = cJSON_GetObjectItemCaseSensitive(cfg, "dict_mult");

    char model_s[256] = "", hook_s[256] = "", v[256];
    if (model) scalar_text(model, model_s, sizeof model_s);
    if (hook) scalar_text(hook, hook_s, sizeof hook_s);
    else if (cJSON_IsString(site)) hook_from_site(site->valuestring, layer, hook_s, sizeof hook_s);

    hf_buf b = {0};
    hf_buf_puts(&b, "---\nlibrary_name: saefw\ntags:\n- sparse-autoencoder\n- saefw\n---\n\n");
    hf_buf_printf(&b, "# Sparse autoencoder%s%s%s%s\n\n", model_s[0] ? " for " : "", model_s, hook_s[0] ? ", " : "",
                  hook_s[0] ? hook_s : "");
    hf_buf_puts(&b, "A sparse autoencoder (SAE) trained with saefw on the activations of ");
    if (model_s[0]) hf_buf_printf(&b, "`%s`", model_s);
    else hf_buf_puts(&b, "a transformer");
    if (hook_s[0]) hf_buf_printf(&b, " at the hook site `%s`", hook_s);
    hf_buf_puts(&b, ".\n\n");
    hf_buf_puts(&b, "| | |\n|---|---|\n");
    if (model_s[0]) hf_buf_printf(&b, "| Model | %s |\n", model_s);
    if (hook_s[0]) hf_buf_printf(&b, "| Hook site | %s |\n", hook_s);
    if (scalar_text(d_in, v, sizeof v)) hf_buf_printf(&b, "| Input width (d_in) | %s |\n", v);
    if (scalar_text(d_sae, v, sizeof v)) hf_buf_printf(&b, "| Dictionary size (d_sae) | %s |\n", v);
    else if (cJSON_IsNumber(d_in) && cJSON_IsNumber(mult))
        hf_buf_printf(&b, "| Dictionary size (d_sae) | %.0f |\n", d_in->valuedouble * mult->valuedouble);
    if (scalar_text(tokens, v, sizeof v)) hf_buf_printf(&b, "| Training tokens | %s |\n", v);

    static const struct {
        const char *key, *label;
    } hyper[] = {{"architecture", "Architecture"}, {"dtype", "dtype"},
                 {"l1_coeff", "L1 coefficient"},   {"lr", "Learning rate"},
                 {"batch_size", "Batch size"},     {"seed", "Seed"},
                 {"context_size", "Context size"}, {"seq_len", "Sequence length"},
                 {"dataset_path", "Dataset"},      {"dataset", "Dataset"}};
    for (size_t i = 0; i < sizeof hyper / sizeof hyper[0]; i++)
        if (scalar_text(cJSON_GetObjectItemCaseSensitive(cfg, hyper[i].key), v, sizeof v))
            hf_buf_printf(&b, "| %s | %s |\n", hyper[i].label, v);

    if (cJSON_IsObject(metrics) && metrics->child) {
        hf_buf_puts(&b, "\n## Final metrics\n\n| Metric | Value |\n|---|---|\n");
        const cJSON *m;
        cJSON_ArrayForEach(m, metrics) {
            char name[128];
            if (!m->string || !scalar_text(m, v, sizeof v)) continue;
            snprintf(name, sizeof name, "%.100s", m->string);
            for (char *p = name; *p; p++)
                if (*p == '|' || *p == '\n') *p = ' ';
            hf_buf_printf(&b, "| %s | %s |\n", name, v);
        }
    }
    hf_buf_printf(&b,
                  "\n## Use\n\n```sh\nsaefw download %s\n```\n\nor, in Python, "
                  "`huggingface_hub.snapshot_download(\"%s\")`; both fill the same cache.\n",
                  repo, repo);
    /* A saefw checkpoint folder is in SAELens's layout (docs/saelens.md). */
    if (cJSON_GetObjectItemCaseSensitive(cfg, "d_in") && cJSON_GetObjectItemCaseSensitive(cfg, "architecture"))
        hf_buf_printf(&b,
                      "\nWith SAELens:\n\n```python\nfrom huggingface_hub import snapshot_download\nfrom sae_lens "
                      "import SAE\n\nsae = SAE.load_from_disk(snapshot_download(\"%s\"))\n```\n",
                      repo);
    cJSON_Delete(cfg);
    if (b.oom) {
        hf_buf_free(&b);
        return saefw_errf(err, errlen, "out of memory writing the model card");
    }
    *out = b.p;
    return 0;
}

#define LIST_BEGIN "<!-- saefw:saes -->"
#define LIST_END "<!-- /saefw:saes -->"

/* The SAE id of a list line "- `ID`...", copied into id; 0 when the line is not one. */
static int list_line_id(const char *line, size_t n, char *id, size_t idn) {
    if (n < 5 || strncmp(line, "- `", 3) != 0) return 0;
    const char *end = memchr(line + 3, '`', n - 3);
    if (!end || end == line + 3 || (size_t)(end - line - 3) >= idn) return 0;
    snprintf(id, idn, "%.*s", (int)(end - line - 3), line + 3);
    return 1;
}

/* Append the line for id unless the list already has it. */
static int list_has(const hf_buf *list, const char *id) {
    const char *p = list->p ? list->p : "";
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        char got[512];
        if (list_line_id(p, n, got, sizeof got) && !strcmp(got, id)) return 1;
        p += n + (nl != NULL);
    }
    return 0;
}

int hf_repo_card(const char *existing, const char *repo, const char *const *ids, size_t nids, const char *sae_id,
                 const char *cfg_json, char **out, char *err, size_t errlen) {
    *out = NULL;
    const char *begin = existing ? strstr(existing, LIST_BEGIN) : NULL;
    const char *end = begin ? strstr(begin, LIST_END) : NULL;
    if (existing && !end) return 0; /* someone else's card: theirs to edit */

    /* The new SAE's line, from its cfg.json. */
    char model_s[256] = "", hook_s[256] = "", din[64] = "", dsae[64] = "";
    cJSON *cfg = cfg_json ? cJSON_Parse(cfg_json) : NULL;
    if (cJSON_IsObject(cfg)) {
        static const char *const k_model[] = {"model_name", "model", NULL};
        static const char *const k_hook[] = {"hook_name", "hook_point", NULL};
        static const char *const k_dsae[] = {"d_sae", "dict_size", NULL};
        const cJSON *v;
        if ((v = first_of(cfg, k_model))) scalar_text(v, model_s, sizeof model_s);
        if ((v = first_of(cfg, k_hook))) scalar_text(v, hook_s, sizeof hook_s);
        scalar_text(cJSON_GetObjectItemCaseSensitive(cfg, "d_in"), din, sizeof din);
        if ((v = first_of(cfg, k_dsae))) scalar_text(v, dsae, sizeof dsae);
    }
    cJSON_Delete(cfg);
    hf_buf mine = {0};
    /* "- `ID`: MODEL at `HOOK`, D_IN -> D_SAE features", each part only when known. */
    hf_buf_printf(&mine, "- `%s`", sae_id);
    const char *sep = ": ";
    if (model_s[0]) {
        hf_buf_printf(&mine, "%s%s", sep, model_s);
        sep = " ";
    }
    if (hook_s[0]) {
        hf_buf_printf(&mine, "%sat `%s`", sep, hook_s);
        sep = ", ";
    } else if (model_s[0]) {
        sep = ", ";
    }
    if (din[0] && dsae[0]) hf_buf_printf(&mine, "%s%s -> %s features", sep, din, dsae);
    hf_buf_puts(&mine, "\n");

    /* The list: the card's own lines in their order (the new SAE's replacing its old one), then
     * SAE folders the repo holds that it does not name yet, then the new SAE. */
    hf_buf list = {0};
    if (begin) {
        const char *p = begin + strlen(LIST_BEGIN);
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
            char id[512];
            if (list_line_id(p, n, id, sizeof id) && strcmp(id, sae_id) != 0) {
                hf_buf_append(&list, p, n);
                hf_buf_puts(&list, "\n");
            }
            p += n + (nl != NULL);
        }
    }
    for (size_t i = 0; i < nids; i++)
        if (strcmp(ids[i], sae_id) != 0 && !list_has(&list, ids[i])) hf_buf_printf(&list, "- `%s`\n", ids[i]);
    hf_buf_append(&list, mine.p, mine.len);
    hf_buf_free(&mine);

    hf_buf b = {0};
    if (begin) {
        hf_buf_append(&b, existing, (size_t)(begin - existing));
        hf_buf_puts(&b, LIST_BEGIN "\n");
        hf_buf_append(&b, list.p, list.len);
        hf_buf_puts(&b, end);
    } else {
        hf_buf_puts(&b, "---\nlibrary_name: saelens\ntags:\n- sparse-autoencoder\n- saelens\n- saefw\n---\n\n");
        hf_buf_printf(&b, "# Sparse autoencoders%s%s\n\n", model_s[0] ? " for " : "", model_s);
        hf_buf_puts(&b, "Sparse autoencoders trained with saefw, in SAELens's layout: one folder per SAE (its SAE id), "
                        "holding `cfg.json`, `sae_weights.safetensors` and, for a final checkpoint, "
                        "`sparsity.safetensors` (log10 feature density).\n\n## SAEs in this repository\n\n");
        hf_buf_puts(&b, LIST_BEGIN "\n");
        hf_buf_append(&b, list.p, list.len);
        hf_buf_puts(&b, LIST_END "\n");
        hf_buf_printf(&b,
                      "\n## Use\n\nWith SAELens (5.x returns `(sae, cfg, sparsity)`, 6.x the SAE):\n\n```python\n"
                      "from sae_lens import SAE\n\nsae = SAE.from_pretrained(\"%s\", \"%s\")\n"
                      "# or, from a local copy of one folder:\nsae = SAE.load_from_disk(\"path/to/%s\")\n```\n\n"
                      "With saefw:\n\n```lua\nlocal sae, cfg = saefw.load_sae(\"%s/%s\")\n```\n\n"
                      "```sh\nsaefw analyze %s/%s\nsaefw download %s %s/cfg.json %s/sae_weights.safetensors\n```\n",
                      repo, sae_id, sae_id, repo, sae_id, repo, sae_id, repo, sae_id, sae_id);
    }
    int oom = b.oom || list.oom;
    hf_buf_free(&list);
    if (oom) {
        hf_buf_free(&b);
        return saefw_errf(err, errlen, "out of memory writing the model card");
    }
    *out = b.p;
    return 0;
}
