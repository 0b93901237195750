/* A saefw checkpoint loads in SAELens unedited: cfg.json checked field by field against what SAELens
 * 5.11 (SAEConfig dataclass, from_dict renames, handle_config_defaulting) and 6.18 (SAEConfig +
 * StandardSAEConfig, the "metadata" object, handle_config_defaulting's version switch) read, the
 * weight file against SAE.load_state_dict (exactly W_enc, W_dec, b_enc, b_dec, float32, no
 * scaling_factor), and sparsity.safetensors against SAELens's trainer (tensor "sparsity", float32
 * [d_sae], log10(freq + 1e-10)). docs/saelens.md names the SAELens source line behind each check. */
#include <cjson/cJSON.h>
#include <unistd.h>

#include "checkpoint.h"
#include "plugin_loader.h"
#include "testutil.h"
#include "train.h"
#include "util.h"

typedef enum { J_STR, J_INT, J_BOOL, J_NULL, J_OBJ, J_LIST, J_INT_OR_NULL, J_STR_OR_NULL } jtype;

static int is_int(const cJSON *v) { return cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble); }

static int type_ok(const cJSON *v, jtype t) {
    switch (t) {
    case J_STR: return cJSON_IsString(v);
    case J_INT: return is_int(v);
    case J_BOOL: return cJSON_IsBool(v);
    case J_NULL: return cJSON_IsNull(v);
    case J_OBJ: return cJSON_IsObject(v);
    case J_LIST: return cJSON_IsArray(v);
    case J_INT_OR_NULL: return is_int(v) || cJSON_IsNull(v);
    case J_STR_OR_NULL: return cJSON_IsString(v) || cJSON_IsNull(v);
    }
    return 0;
}

typedef struct {
    const char *key;
    jtype type;
} field;

/* SAELens 5.11 sae_lens/sae.py SAEConfig: the fields without a default (from_dict passes the dict
 * to the dataclass, so each must be present, possibly through from_dict's renames or
 * handle_config_defaulting), then the ones with a default, whose types must still fit. */
static const field v5_required[] = {
    {"architecture", J_STR},
    {"d_in", J_INT},
    {"d_sae", J_INT},
    {"activation_fn_str", J_STR},
    {"apply_b_dec_to_input", J_BOOL},
    {"finetuning_scaling_factor", J_BOOL},
    {"context_size", J_INT},
    {"model_name", J_STR},
    {"hook_name", J_STR},
    {"hook_layer", J_INT},
    {"hook_head_index", J_INT_OR_NULL},
    {"prepend_bos", J_BOOL},
    {"dataset_path", J_STR},
    {"dataset_trust_remote_code", J_BOOL},
    {"normalize_activations", J_STR},
    {"dtype", J_STR},
    {"device", J_STR},
    {"sae_lens_training_version", J_STR_OR_NULL},
};
static const field v5_optional[] = {
    {"activation_fn_kwargs", J_OBJ},
    {"neuronpedia_id", J_STR_OR_NULL},
    {"model_from_pretrained_kwargs", J_OBJ},
    {"seqpos_slice", J_LIST},
};
/* SAELens 6.18 sae_lens/saes/sae.py SAEConfig (StandardSAEConfig adds nothing) and the metadata
 * keys of loading/pretrained_sae_loaders.py LLM_METADATA_KEYS that a model-side tool reads. */
static const field v6_top[] = {
    {"architecture", J_STR},
    {"d_in", J_INT},
    {"d_sae", J_INT},
    {"dtype", J_STR},
    {"device", J_STR},
    {"apply_b_dec_to_input", J_BOOL},
    {"normalize_activations", J_STR},
    {"reshape_activations", J_STR},
    {"metadata", J_OBJ},
};
static const field v6_meta[] = {
    {"sae_lens_version", J_STR},
    {"sae_lens_training_version", J_STR_OR_NULL},
    {"model_name", J_STR},
    {"hook_name", J_STR},
    {"hook_head_index", J_INT_OR_NULL},
    {"model_class_name", J_STR},
    {"model_from_pretrained_kwargs", J_OBJ},
    {"prepend_bos", J_BOOL},
    {"context_size", J_INT},
    {"dataset_path", J_STR},
    {"seqpos_slice", J_LIST},
    {"neuronpedia_id", J_STR_OR_NULL},
};

static void check_fields(const char *what, const cJSON *obj, const field *f, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, f[i].key);
        CHECK(v != NULL, "%s: missing '%s'", what, f[i].key);
        if (v) CHECK(type_ok(v, f[i].type), "%s: '%s' has the wrong JSON type", what, f[i].key);
    }
}

static void check_str(const cJSON *obj, const char *key, const char *want) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    CHECK(cJSON_IsString(v) && !strcmp(v->valuestring, want), "'%s' is not \"%s\"", key, want);
}

static void check_num(const cJSON *obj, const char *key, double want) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    CHECK(cJSON_IsNumber(v) && v->valuedouble == want, "'%s' is not %g", key, want);
}

static void check_bool(const cJSON *obj, const char *key, int want) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    CHECK(cJSON_IsBool(v) && !!cJSON_IsTrue(v) == want, "'%s' is not %s", key, want ? "true" : "false");
}

/* "6.0.0" >= 6: SAELens 6 compares Version(sae_lens_version) < Version("6.0.0-rc.0"). */
static int major_at_least_6(const char *v) { return atoi(v) >= 6; }

/* Everything both versions read, on the cfg.json of folder dir, for an SAE of d_in -> d_sae. */
static cJSON *check_cfg(const char *dir, int64_t d_in, int64_t d_sae) {
    char path[1200], err[512];
    snprintf(path, sizeof path, "%s/cfg.json", dir);
    char *text = NULL;
    REQUIRE(saefw_read_file(path, &text, NULL, err, sizeof err) == 0, "%s", err);
    cJSON *c = cJSON_Parse(text);
    free(text);
    REQUIRE(cJSON_IsObject(c), "%s: not a JSON object", path);

    /* 5.x: SAEConfig.from_dict renames activation_fn -> activation_fn_str etc., keeps dataclass fields. */
    check_fields("5.x", c, v5_required, sizeof v5_required / sizeof *v5_required);
    check_fields("5.x", c, v5_optional, sizeof v5_optional / sizeof *v5_optional);
    check_str(c, "architecture", "standard");
    check_str(c, "activation_fn_str", "relu");
    check_str(c, "activation_fn", "relu");    /* the 6.x pre-6 converter's name; both renames then agree */
    check_bool(c, "apply_b_dec_to_input", 1); /* the seed subtracts b_dec before encoding */
    check_bool(c, "finetuning_scaling_factor", 0);
    check_str(c, "normalize_activations", "none");
    check_str(c, "dtype", "float32"); /* a key of SAELens's DTYPE_MAP */
    check_num(c, "d_in", (double)d_in);
    check_num(c, "d_sae", (double)d_sae);
    const cJSON *slice = cJSON_GetObjectItemCaseSensitive(c, "seqpos_slice");
    CHECK(cJSON_GetArraySize(slice) == 1 && cJSON_IsNull(cJSON_GetArrayItem(slice, 0)),
          "seqpos_slice is not [null] (SAELens's (None,))");
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(c, "activation_fn_kwargs")) == 0,
          "activation_fn_kwargs is not empty (relu takes none)");
    /* Names 5.x's from_dict renames onto fields we write would make two values for one field. */
    static const char *const renamed[] = {"hook_point", "hook_point_layer", "hook_point_head_index"};
    for (size_t i = 0; i < 3; i++)
        CHECK(!cJSON_GetObjectItemCaseSensitive(c, renamed[i]), "'%s' would be renamed over a written field",
              renamed[i]);

    /* 6.x: handle_config_defaulting takes the file as 6.x layout when metadata.sae_lens_version >= 6;
     * SAEConfig.from_dict then needs "architecture" and the StandardSAEConfig fields. */
    check_fields("6.x", c, v6_top, sizeof v6_top / sizeof *v6_top);
    check_str(c, "reshape_activations", "none");
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(c, "metadata");
    check_fields("6.x metadata", md, v6_meta, sizeof v6_meta / sizeof *v6_meta);
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(md, "sae_lens_version");
    CHECK(cJSON_IsString(ver) && major_at_least_6(ver->valuestring), "metadata.sae_lens_version is not >= 6");
    CHECK(!cJSON_GetObjectItemCaseSensitive(c, "sae_lens_version"),
          "a top-level sae_lens_version would be read before the metadata's");
    /* The metadata repeats the top level: one truth. */
    static const char *const same[] = {"model_name", "hook_name", "context_size", "prepend_bos", "dataset_path"};
    for (size_t i = 0; i < sizeof same / sizeof *same; i++)
        CHECK(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(c, same[i]), cJSON_GetObjectItemCaseSensitive(md, same[i]),
                            1),
              "metadata.%s differs from the top-level %s", same[i], same[i]);
    return c;
}

/* sae_weights.safetensors: exactly the four parameters of SAELens's standard SAE, float32. */
static void check_weights(const char *dir, int64_t d_in, int64_t d_sae) {
    char path[1200], err[512];
    snprintf(path, sizeof path, "%s/sae_weights.safetensors", dir);
    saefw_tensorfile *tf = NULL;
    REQUIRE(saefw_tf_open(path, &tf, err, sizeof err) == 0, "%s", err);
    CHECK(!strcmp(saefw_tf_format(tf), "safetensors"), "%s is not safetensors", path);
    CHECK(saefw_tf_count(tf) == 4, "%s holds %d tensors; load_state_dict(strict) wants exactly 4", path,
          saefw_tf_count(tf));
    const struct {
        const char *name;
        int ndim;
        int64_t s0, s1;
    } want[] = {{"W_enc", 2, d_in, d_sae}, {"W_dec", 2, d_sae, d_in}, {"b_enc", 1, d_sae, 0}, {"b_dec", 1, d_in, 0}};
    for (int i = 0; i < 4; i++) {
        const saefw_tensor_info *t = saefw_tf_find(tf, want[i].name);
        CHECK(t != NULL, "tensor %s missing", want[i].name);
        if (!t) continue;
        CHECK(t->dtype == SAEFW_DT_F32, "%s is %s, not F32", want[i].name, saefw_dtype_name(t->dtype));
        CHECK(t->ndim == want[i].ndim && t->shape[0] == want[i].s0 && (want[i].ndim == 1 || t->shape[1] == want[i].s1),
              "%s has the wrong shape", want[i].name);
    }
    CHECK(!saefw_tf_find(tf, "scaling_factor"), "scaling_factor present (finetuning_scaling_factor is false)");
    const char *fmt = saefw_tf_metadata(tf, "format");
    CHECK(fmt && !strcmp(fmt, "pt"), "__metadata__.format is not \"pt\"");
    saefw_tf_close(tf);
}

int main(void) {
    char err[1024];
    const char *tmp = t_tmpdir("test_saelens_cfg");
    const int64_t d_in = 16, d_sae = 64;

    /* 1. A training run with the fields the Lua layer passes (as experiments/quickstart.lua). */
    saefw_synthetic_opts so = {d_in, 24, 0.05, 1.0, 11};
    saefw_source *src = NULL;
    REQUIRE(saefw_source_synthetic(&so, &src, err, sizeof err) == 0, "%s", err);
    saefw_sae sae;
    REQUIRE(saefw_sae_alloc(&sae, d_in, d_sae, 1e-3f, err, sizeof err) == 0, "%s", err);
    saefw_rng rng;
    saefw_rng_seed(&rng, 49);
    saefw_sae_init_params(&sae, &rng);
    saefw_buffer buf;
    REQUIRE(saefw_buffer_init(&buf, src, 256 * 8, 256, SAEFW_BUF_F32, 1, err, sizeof err) == 0, "%s", err);
    saefw_loaded_plugin *adam = NULL;
    REQUIRE(saefw_plugin_load("adam", saefw_host_table(), &adam, err, sizeof err) == 0, "%s", err);
    saefw_opts *opts = NULL;
    REQUIRE(saefw_opts_new(adam, &opts, err, sizeof err) == 0, "%s", err);
    cJSON *cfg = cJSON_Parse("{\"seed\": 49, \"lr\": 0.001, \"l1_coeff\": 0.001, \"seq_len\": 128, \"bos\": 256,"
                             " \"data\": \"tokens.npy\", \"model_name\": \"tiny-1l\","
                             " \"hook_name\": \"blocks.3.mlp.hook_post\", \"context_size\": 128}");
    REQUIRE(cfg, "cfg");
    char run_dir[1100];
    snprintf(run_dir, sizeof run_dir, "%s/run", tmp);
    saefw_train_opts o = {0};
    o.sae = &sae;
    o.buffer = &buf;
    o.steps = 300;
    o.optimizer.plugin = adam;
    o.optimizer.opts = opts;
    o.eval_every = 100;
    o.checkpoint_every = 100;
    o.freq_batches = 8;
    o.progress = 0;
    o.run_dir = run_dir;
    o.cfg = cfg;
    saefw_train_result res;
    REQUIRE(saefw_train(&o, &res, err, sizeof err) == 0, "train: %s", err);
    char final_dir[1200];
    snprintf(final_dir, sizeof final_dir, "%s/final", run_dir);

    cJSON *c = check_cfg(final_dir, d_in, d_sae);
    check_str(c, "model_name", "tiny-1l");
    check_str(c, "hook_name", "blocks.3.mlp.hook_post");
    check_num(c, "hook_layer", 3);
    check_num(c, "context_size", 128);
    check_bool(c, "prepend_bos", 1);
    check_str(c, "dataset_path", "tokens.npy");
    CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(c, "hook_head_index")), "hook_head_index is not null");
    /* The seed's own fields stay. */
    check_num(c, "act_size", (double)d_in);
    check_num(c, "dict_size", (double)d_sae);
    check_num(c, "seed", 49);
    check_num(c, "lr", 0.001);
    check_weights(final_dir, d_in, d_sae);

    /* sparsity.safetensors: log10(freq + 1e-10) of the final SAE's frequencies. The dead count must
     * match the run's own final eval; the densities must match a fresh measurement of the same SAE
     * on the same distribution (1280 + 40000 rows: a few hundredths at most). */
    char path[1300];
    snprintf(path, sizeof path, "%s/sparsity.safetensors", final_dir);
    saefw_tensorfile *tf = NULL;
    REQUIRE(saefw_tf_open(path, &tf, err, sizeof err) == 0, "%s", err);
    CHECK(saefw_tf_count(tf) == 1, "sparsity.safetensors holds %d tensors, not 1", saefw_tf_count(tf));
    const saefw_tensor_info *t = saefw_tf_find(tf, "sparsity");
    REQUIRE(t && t->dtype == SAEFW_DT_F32 && t->ndim == 1 && t->shape[0] == d_sae, "tensor sparsity F32 [%lld]",
            (long long)d_sae);
    const float *s = t->data;
    saefw_sae loaded;
    REQUIRE(saefw_checkpoint_load(final_dir, &loaded, NULL, err, sizeof err) == 0, "%s", err);
    float *ref = malloc(sizeof(float) * (size_t)d_sae);
    REQUIRE(ref, "oom");
    REQUIRE(saefw_feature_frequencies(&loaded, src, 40000, 1000, ref, err, sizeof err) == 0, "%s", err);
    const float floor_log = log10f(SAEFW_SPARSITY_EPS);
    int64_t dead = 0;
    double worst = 0;
    for (int64_t j = 0; j < d_sae; j++) {
        CHECK(s[j] >= floor_log && s[j] <= 0, "sparsity[%lld] = %g outside [log10(1e-10), 0]", (long long)j, s[j]);
        dead += s[j] == floor_log;
        double d = fabs(pow(10.0, s[j]) - 1e-10 - ref[j]);
        if (!(d <= worst)) worst = d;
    }
    printf("  sparsity: %lld dead of %lld; max |10^s - fresh density| %.4f (tolerance 0.05)\n", (long long)dead,
           (long long)d_sae, worst);
    CHECK(worst <= 0.05, "densities differ from a fresh measurement by %g", worst);
    CHECK(fabs((double)dead / (double)d_sae - res.last.frac_dead) < 1e-9, "dead %lld/%lld vs the eval's %g",
          (long long)dead, (long long)d_sae, res.last.frac_dead);
    CHECK(fabs(floor_log - -10.0f) < 1e-5f, "log10(1e-10f) = %g", floor_log);
    saefw_tf_close(tf);
    free(ref);
    saefw_sae_free(&loaded);
    cJSON_Delete(c);

    /* Intermediate checkpoints carry no sparsity file (their frequencies would be stale). */
    snprintf(path, sizeof path, "%s/0/cfg.json", run_dir);
    CHECK(access(path, F_OK) == 0, "no intermediate checkpoint %s", path);
    snprintf(path, sizeof path, "%s/0/sparsity.safetensors", run_dir);
    CHECK(access(path, F_OK) != 0, "%s: an intermediate checkpoint has a sparsity file", path);

    /* 2. A bare checkpoint (no cfg at all) still loads in both versions: every field is present
     * with SAELens's neutral value. */
    char bare[1200];
    snprintf(bare, sizeof bare, "%s/bare", tmp);
    REQUIRE(saefw_checkpoint_save(bare, &sae, NULL, err, sizeof err) == 0, "%s", err);
    c = check_cfg(bare, d_in, d_sae);
    check_str(c, "model_name", "");
    check_num(c, "hook_layer", 0);
    check_num(c, "context_size", 0);
    check_bool(c, "prepend_bos", 1);
    check_bool(c, "dataset_trust_remote_code", 0);
    check_weights(bare, d_in, d_sae);
    cJSON_Delete(c);

    /* 3. Values the config sets win over the defaults (bos < 0: no BOS prepended). */
    cJSON *own = cJSON_Parse("{\"bos\": -1, \"dataset_path\": \"NeelNanda/c4-code-tokenized-2b\","
                             " \"neuronpedia_id\": \"gelu-1l/0-saefw\"}");
    REQUIRE(own, "cfg");
    REQUIRE(saefw_checkpoint_save(bare, &sae, own, err, sizeof err) == 0, "%s", err);
    c = check_cfg(bare, d_in, d_sae);
    check_bool(c, "prepend_bos", 0);
    check_str(c, "dataset_path", "NeelNanda/c4-code-tokenized-2b");
    check_str(c, "neuronpedia_id", "gelu-1l/0-saefw");
    check_str(cJSON_GetObjectItemCaseSensitive(c, "metadata"), "neuronpedia_id", "gelu-1l/0-saefw");
    cJSON_Delete(c);
    cJSON_Delete(own);

    cJSON_Delete(cfg);
    saefw_opts_free(opts);
    saefw_plugin_unload(adam);
    saefw_buffer_free(&buf);
    saefw_sae_free(&sae);
    saefw_source_free(src);
    return t_finish("test_saelens_cfg");
}
