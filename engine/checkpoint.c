/* Checkpoint folders (sae_weights.safetensors + cfg.json) and the seed's .pt checkpoints. */
#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sae_arch.h"
#include "state.h"
#include "tensorfile.h"
#include "util.h"

/* Remove a file or a folder with its contents; a symlink is removed, never followed. */
static int remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return -1;
    if (!S_ISDIR(st.st_mode)) return unlink(path);
    DIR *d = opendir(path);
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[PATH_MAX];
        if (saefw_pathf(p, sizeof p, NULL, 0, "%s/%s", path, e->d_name) == 0) remove_tree(p);
    }
    closedir(d);
    return rmdir(path);
}

static int fsync_path(const char *path, int dir) {
    int fd = open(path, dir ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* A field added only when the cfg does not set it; item is consumed. Returns -1 when out of memory. */
static int set_default(cJSON *c, const char *key, cJSON *item) {
    if (!item) return -1;
    if (cJSON_GetObjectItemCaseSensitive(c, key)) {
        cJSON_Delete(item);
        return 0;
    }
    return cJSON_AddItemToObject(c, key, item) ? 0 : (cJSON_Delete(item), -1);
}

/* The fields SAELens 5.x (top level) and 6.x (the metadata object) need to load the folder
 * unedited, as SAELens's "standard" SAE: relu(W_enc^T (x - b_dec) + b_enc), no normalisation, no
 * scaling factor. Values the cfg already holds are kept; the rest are derived from the seed's own
 * fields (seq_len, bos, data) or get SAELens's neutral values. docs/saelens.md has the table. */
static int saelens_fields(cJSON *c) {
    const cJSON *hook = cJSON_GetObjectItemCaseSensitive(c, "hook_name");
    const char *hook_s = cJSON_IsString(hook) ? hook->valuestring : "";
    int layer = 0;
    if (sscanf(hook_s, "blocks.%d.", &layer) != 1 || layer < 0) layer = 0;
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(c, "seq_len");
    const cJSON *bos = cJSON_GetObjectItemCaseSensitive(c, "bos");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(c, "data");
    int rc = 0;
    rc |= set_default(c, "architecture", cJSON_CreateString("standard"));
    rc |= set_default(c, "device", cJSON_CreateString("cpu"));
    rc |= set_default(c, "model_name", cJSON_CreateString(""));
    rc |= set_default(c, "hook_name", cJSON_CreateString(""));
    rc |= set_default(c, "hook_layer", cJSON_CreateNumber(layer));
    rc |= set_default(c, "hook_head_index", cJSON_CreateNull());
    rc |= set_default(c, "activation_fn_str", cJSON_CreateString("relu"));
    rc |= set_default(c, "activation_fn", cJSON_CreateString("relu"));
    rc |= set_default(c, "activation_fn_kwargs", cJSON_CreateObject());
    rc |= set_default(c, "apply_b_dec_to_input", cJSON_CreateTrue());
    rc |= set_default(c, "finetuning_scaling_factor", cJSON_CreateFalse());
    rc |= set_default(c, "normalize_activations", cJSON_CreateString("none"));
    rc |= set_default(c, "reshape_activations", cJSON_CreateString("none"));
    rc |= set_default(c, "context_size", cJSON_CreateNumber(cJSON_IsNumber(seq) ? seq->valuedouble : 0));
    /* The seed's preprocessing puts BOS at position 0 of every row; "bos" < 0 turns it off. */
    rc |= set_default(c, "prepend_bos", cJSON_CreateBool(!cJSON_IsNumber(bos) || bos->valuedouble >= 0));
    rc |= set_default(c, "dataset_path", cJSON_CreateString(cJSON_IsString(data) ? data->valuestring : ""));
    rc |= set_default(c, "dataset_trust_remote_code", cJSON_CreateFalse());
    rc |= set_default(c, "sae_lens_training_version", cJSON_CreateNull());
    rc |= set_default(c, "model_from_pretrained_kwargs", cJSON_CreateObject());
    rc |= set_default(c, "neuronpedia_id", cJSON_CreateNull());
    cJSON *slice = cJSON_CreateArray();
    if (slice && !cJSON_AddItemToArray(slice, cJSON_CreateNull())) {
        cJSON_Delete(slice);
        slice = NULL;
    }
    rc |= set_default(c, "seqpos_slice", slice);
    if (rc) return -1;
    /* 6.x reads the model-side fields from "metadata"; a sae_lens_version of 6 or later there tells
     * it the file is in its own layout (without one it converts the top-level 5.x fields). */
    if (cJSON_GetObjectItemCaseSensitive(c, "metadata")) return 0;
    cJSON *md = cJSON_AddObjectToObject(c, "metadata");
    if (!md) return -1;
    static const char *const copied[] = {"model_name",
                                         "hook_name",
                                         "hook_head_index",
                                         "context_size",
                                         "prepend_bos",
                                         "dataset_path",
                                         "model_from_pretrained_kwargs",
                                         "seqpos_slice",
                                         "neuronpedia_id",
                                         "sae_lens_training_version"};
    if (!cJSON_AddStringToObject(md, "sae_lens_version", SAEFW_SAELENS_LAYOUT_VERSION) ||
        !cJSON_AddStringToObject(md, "model_class_name", "HookedTransformer"))
        return -1;
    for (size_t k = 0; k < sizeof copied / sizeof *copied; k++) {
        cJSON *v = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(c, copied[k]), 1);
        if (!v || !cJSON_AddItemToObject(md, copied[k], v)) {
            cJSON_Delete(v);
            return -1;
        }
    }
    return 0;
}

/* Replace field key of c with item (consumed); -1 when out of memory. */
static int set_field(cJSON *c, const char *key, cJSON *item) {
    if (!item) return -1;
    cJSON_DeleteItemFromObject(c, key);
    return cJSON_AddItemToObject(c, key, item) ? 0 : (cJSON_Delete(item), -1);
}

/* The ReLU SAE's options in SAELens's names, which always describe the SAE (docs/architectures.md):
 * apply_b_dec_to_input, scale_sparsity_penalty_by_decoder_norm, and for a transcoder its architecture
 * and d_out (hook_name_out as the cfg gives it). normalize_sae_decoder is the trainer's: a cfg value is
 * kept, the default follows the penalty (a decoder-norm-weighted L1 replaces the unit-norm constraint). */
static int relu_option_fields(cJSON *c, const saefw_sae *sae) {
    const int weighted = sae->l1_weighting == SAEFW_L1_DECODER_NORM;
    cJSON_DeleteItemFromObject(c, "d_out"); /* a transcoder's alone */
    int rc = set_field(c, "apply_b_dec_to_input", cJSON_CreateBool(sae->apply_b_dec_to_input));
    rc |= set_field(c, "scale_sparsity_penalty_by_decoder_norm", cJSON_CreateBool(weighted));
    rc |= set_default(c, "normalize_sae_decoder", cJSON_CreateBool(!weighted));
    if (rc != 0 || !sae->transcoder) return rc;
    rc |= set_field(c, "architecture", cJSON_CreateString("transcoder"));
    rc |= set_field(c, "d_out", cJSON_CreateNumber((double)sae->d_out));
    if (rc != 0) return rc;
    const cJSON *hook = cJSON_GetObjectItemCaseSensitive(c, "hook_name_out");
    int layer = 0;
    if (!cJSON_IsString(hook) || sscanf(hook->valuestring, "blocks.%d.", &layer) != 1 || layer < 0) layer = 0;
    rc |= set_default(c, "hook_name_out", cJSON_CreateString(""));
    rc |= set_default(c, "hook_layer_out", cJSON_CreateNumber(layer));
    rc |= set_default(c, "hook_head_index_out", cJSON_CreateNull());
    return rc;
}

/* The sites the SAE was made for (saefw.sae{ site =, site_out = }), when it records them: they replace
 * the cfg's hook_name / hook_name_out and their layers, so that cfg.json names what the SAE was checked
 * against. */
static int hook_fields(cJSON *c, const saefw_sae *sae) {
    int rc = 0, layer = 0;
    if (sae->hook_name[0]) {
        rc |= set_field(c, "hook_name", cJSON_CreateString(sae->hook_name));
        if (sscanf(sae->hook_name, "blocks.%d.", &layer) == 1)
            rc |= set_field(c, "hook_layer", cJSON_CreateNumber(layer));
    }
    if (sae->hook_name_out[0]) {
        rc |= set_field(c, "hook_name_out", cJSON_CreateString(sae->hook_name_out));
        if (sscanf(sae->hook_name_out, "blocks.%d.", &layer) == 1)
            rc |= set_field(c, "hook_layer_out", cJSON_CreateNumber(layer));
    }
    return rc;
}

/* The architecture in SAELens's names (docs/architectures.md): topk with k, jumprelu (and batchtopk,
 * saved for inference as a jumprelu whose threshold is theta) with a threshold tensor, gated; saefw's
 * own fields (saefw_arch and the training hyperparameters) let saefw.load_sae rebuild the SAE. */
static int arch_fields(cJSON *c, const saefw_sae *sae) {
    const saefw_sae_arch_cfg *a = &sae->arch;
    const saefw_sae_arch arch = a->arch;
    if (arch == SAEFW_ARCH_RELU) return 0;
    static const char *const saelens[SAEFW_ARCH_COUNT] = {"standard", "topk", "jumprelu", "jumprelu", "gated"};
    int rc = 0;
    rc |= set_field(c, "architecture", cJSON_CreateString(saelens[arch]));
    rc |= set_field(c, "saefw_arch", cJSON_CreateString(saefw_sae_arch_name(arch)));
    const char *fn = arch == SAEFW_ARCH_TOPK ? "topk" : "relu";
    rc |= set_field(c, "activation_fn", cJSON_CreateString(fn));
    rc |= set_field(c, "activation_fn_str", cJSON_CreateString(fn));
    /* The paper's JumpReLU encodes x itself; the others subtract b_dec first. */
    rc |= set_field(c, "apply_b_dec_to_input", cJSON_CreateBool(arch != SAEFW_ARCH_JUMPRELU));
    if (arch == SAEFW_ARCH_TOPK || arch == SAEFW_ARCH_BATCHTOPK) {
        cJSON *kw = cJSON_CreateObject();
        if (kw && arch == SAEFW_ARCH_TOPK) cJSON_AddNumberToObject(kw, "k", (double)a->k);
        rc |= set_field(c, "activation_fn_kwargs", kw);
        rc |= set_field(c, "k", cJSON_CreateNumber((double)a->k));
        rc |= set_field(c, "k_aux", cJSON_CreateNumber((double)a->k_aux));
        rc |= set_field(c, "aux_coeff", cJSON_CreateNumber(a->aux_coeff));
        rc |= set_field(c, "dead_steps", cJSON_CreateNumber((double)a->dead_steps));
    }
    if (arch == SAEFW_ARCH_BATCHTOPK) rc |= set_field(c, "topk_threshold_lr", cJSON_CreateNumber(a->theta_rate));
    if (arch == SAEFW_ARCH_JUMPRELU) {
        rc |= set_field(c, "jumprelu_bandwidth", cJSON_CreateNumber(a->bandwidth));
        rc |= set_field(c, "jumprelu_init_threshold", cJSON_CreateNumber(a->threshold));
        rc |= set_field(c, "l0_coefficient", cJSON_CreateNumber(a->l0_coeff));
    }
    return rc;
}

int saefw_checkpoint_save(const char *dir, const saefw_sae *sae, const cJSON *cfg, char *err, size_t errlen) {
    return saefw_checkpoint_save_ex(dir, sae, cfg, NULL, NULL, err, errlen);
}

int saefw_checkpoint_save_ex(const char *dir, const saefw_sae *sae, const cJSON *cfg, saefw_checkpoint_extra_fn extra,
                             void *ud, char *err, size_t errlen) {
    for (int i = 0; i < sae->n_params; i++)
        for (int64_t k = 0; k < sae->numel[i]; k++)
            if (!isfinite(sae->p[i][k]))
                return saefw_errf(err, errlen, "%s: refusing to write a checkpoint with non-finite %s", dir,
                                  sae->names[i]);
    char tmp[PATH_MAX], path[PATH_MAX];
    if (strlen(dir) > PATH_MAX - 64) return saefw_errf(err, errlen, "%s: path too long", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", dir, (long)getpid());
    remove_tree(tmp);
    if (mkdir(tmp, 0755) != 0) return saefw_errf(err, errlen, "%s: cannot create folder: %s", tmp, strerror(errno));

    saefw_tensor_ref refs[SAEFW_MAX_PARAMS];
    int n_refs = sae->n_params;
    for (int i = 0; i < sae->n_params; i++) {
        refs[i].name = sae->names[i];
        refs[i].dtype = SAEFW_DT_F32;
        refs[i].ndim = sae->ndim[i];
        refs[i].shape = sae->shape[i];
        refs[i].data = sae->p[i];
    }
    /* SAELens's threshold [d_sae]: exp(log_threshold) (jumprelu), or theta for every latent (batchtopk). */
    float *threshold = NULL;
    const saefw_sae_arch arch = sae->arch.arch;
    if (arch == SAEFW_ARCH_JUMPRELU || arch == SAEFW_ARCH_BATCHTOPK) {
        if (!(threshold = saefw_malloc(sizeof(float) * (size_t)sae->d_sae, err, errlen))) goto fail;
        for (int64_t j = 0; j < sae->d_sae; j++)
            threshold[j] = arch == SAEFW_ARCH_JUMPRELU ? expf(sae->p[SAEFW_LOG_THRESHOLD][j]) : (float)sae->theta;
        n_refs = 5;
        refs[4] = (saefw_tensor_ref){
            .name = "threshold", .dtype = SAEFW_DT_F32, .ndim = 1, .shape = sae->shape[2], .data = threshold};
    }
    const char *meta[][2] = {{"format", "pt"}};
    int wrc = saefw_pathf(path, sizeof path, err, errlen, "%s/sae_weights.safetensors", tmp);
    if (wrc == 0) wrc = saefw_write_checked(path, refs, n_refs, meta, 1, err, errlen);
    free(threshold);
    if (wrc != 0) goto fail;
    if (extra && extra(ud, tmp, err, errlen) != 0) goto fail;

    cJSON *c = cfg ? cJSON_Duplicate(cfg, 1) : cJSON_CreateObject();
    if (!c) {
        saefw_errf(err, errlen, "%s: out of memory", dir);
        goto fail;
    }
    /* The shape fields always describe the tensors; SAELens's names first, then the seed's. */
    static const char *const shape_keys[] = {"d_in", "d_sae", "dtype", "act_size", "dict_size", "enc_dtype"};
    for (size_t k = 0; k < sizeof shape_keys / sizeof *shape_keys; k++) cJSON_DeleteItemFromObject(c, shape_keys[k]);
    cJSON_AddNumberToObject(c, "d_in", (double)sae->d_in);
    cJSON_AddNumberToObject(c, "d_sae", (double)sae->d_sae);
    cJSON_AddStringToObject(c, "dtype", "float32");
    cJSON_AddNumberToObject(c, "act_size", (double)sae->d_in);
    cJSON_AddNumberToObject(c, "dict_size", (double)sae->d_sae);
    /* The seed's field: the products' precision; the tensors themselves are always float32. */
    cJSON_AddStringToObject(c, "enc_dtype", saefw_enc_dtype_name(sae->enc_dtype));
    if (!cJSON_GetObjectItemCaseSensitive(c, "l1_coeff")) cJSON_AddNumberToObject(c, "l1_coeff", sae->l1_coeff);
    if (hook_fields(c, sae) != 0 || relu_option_fields(c, sae) != 0 || arch_fields(c, sae) != 0 ||
        saelens_fields(c) != 0) {
        cJSON_Delete(c);
        saefw_errf(err, errlen, "%s: out of memory", dir);
        goto fail;
    }
    char *text = cJSON_Print(c);
    cJSON_Delete(c);
    if (!text) {
        saefw_errf(err, errlen, "%s: out of memory", dir);
        goto fail;
    }
    int rc = saefw_pathf(path, sizeof path, err, errlen, "%s/cfg.json", tmp);
    if (rc == 0) rc = saefw_write_file_atomic(path, text, strlen(text), err, errlen);
    free(text);
    if (rc != 0) goto fail;
    fsync_path(tmp, 1);

    /* Replace an existing checkpoint of the same name (e.g. `final`) only once the new one is complete. */
    char old[PATH_MAX];
    snprintf(old, sizeof old, "%s.old.%ld", dir, (long)getpid());
    struct stat st;
    int had_old = stat(dir, &st) == 0;
    if (had_old && rename(dir, old) != 0) {
        saefw_errf(err, errlen, "%s: cannot move the previous checkpoint aside: %s", dir, strerror(errno));
        goto fail;
    }
    if (rename(tmp, dir) != 0) {
        saefw_errf(err, errlen, "%s: cannot rename the new checkpoint into place: %s", dir, strerror(errno));
        if (had_old) rename(old, dir);
        goto fail;
    }
    if (had_old) remove_tree(old);
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", dir);
    char *slash = strrchr(parent, '/');
    if (slash) {
        *slash = 0;
        fsync_path(parent[0] ? parent : "/", 1);
    } else {
        fsync_path(".", 1);
    }
    return 0;
fail:
    remove_tree(tmp);
    return -1;
}

int saefw_checkpoint_write_sparsity(const char *dir, const float *freq, int64_t d_sae, char *err, size_t errlen) {
    if (d_sae <= 0) return saefw_errf(err, errlen, "%s: sparsity: d_sae must be positive", dir);
    float *lg = saefw_malloc(sizeof(float) * (size_t)d_sae, err, errlen);
    if (!lg) return -1;
    /* In float32, as SAELens computes torch.log10(feature_sparsity + 1e-10). */
    for (int64_t j = 0; j < d_sae; j++) lg[j] = log10f(freq[j] + SAEFW_SPARSITY_EPS);
    char path[PATH_MAX];
    saefw_tensor_ref ref = {.name = "sparsity", .dtype = SAEFW_DT_F32, .ndim = 1, .shape = &d_sae, .data = lg};
    const char *meta[][2] = {{"format", "pt"}};
    int rc = saefw_pathf(path, sizeof path, err, errlen, "%s/" SAEFW_SPARSITY_FILE, dir);
    if (rc == 0) rc = saefw_safetensors_write(path, &ref, 1, meta, 1, err, errlen);
    free(lg);
    return rc;
}

static int get_int(const cJSON *cfg, const char *file, const char *key, int64_t *out, char *err, size_t errlen) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!v) return saefw_errf(err, errlen, "%s: missing key '%s'", file, key);
    /* Range first: casting an out-of-range double to an integer is undefined. */
    if (!cJSON_IsNumber(v) || !(v->valuedouble > 0 && v->valuedouble <= 1e9) || v->valuedouble != floor(v->valuedouble))
        return saefw_errf(err, errlen, "%s: key '%s' must be a positive integer (at most 1e9)", file, key);
    *out = (int64_t)v->valuedouble;
    return 0;
}

static int read_cfg(const char *path, cJSON **out, char *err, size_t errlen) {
    char *text = NULL;
    if (saefw_read_file(path, &text, NULL, err, errlen) != 0) return -1;
    const char *end = NULL;
    cJSON *c = cJSON_ParseWithOpts(text, &end, 1);
    free(text);
    if (!c || !cJSON_IsObject(c)) {
        cJSON_Delete(c);
        return saefw_errf(err, errlen, "%s: not a JSON object", path);
    }
    *out = c;
    return 0;
}

static double cfg_number(const cJSON *cfg, const char *key, double def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

/* The L1 coefficient as a float (0 when the cfg has none: analysis needs no coefficient); a
 * non-numeric value, or one no float holds, is an error rather than a silent 0 or a bad cast. */
static int cfg_l1(const cJSON *cfg, const char *file, float *out, char *err, size_t errlen) {
    static const char *const keys[] = {"l1_coeff", "l1_coefficient"};
    for (int k = 0; k < 2; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, keys[k]);
        if (v && !cJSON_IsNumber(v))
            return saefw_errf(err, errlen, "%s: %s must be a number, not %s", file, keys[k],
                              cJSON_IsString(v) ? "a string" : "another JSON value");
    }
    double v = cfg_number(cfg, "l1_coeff", cfg_number(cfg, "l1_coefficient", 0));
    if (!(v >= 0 && v <= 1e30)) return saefw_errf(err, errlen, "%s: l1_coeff must be a number from 0 to 1e30", file);
    *out = (float)v;
    return 0;
}

/* The seed's cfg["enc_dtype"] ("fp32", "bf16" or "fp16"; absent: fp32). */
static int cfg_enc_dtype(const cJSON *cfg, const char *file, saefw_enc_dtype *out, char *err, size_t errlen) {
    const cJSON *v = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "enc_dtype") : NULL;
    *out = SAEFW_ENC_FP32;
    if (!v) return 0;
    if (!cJSON_IsString(v))
        return saefw_errf(err, errlen, "%s: enc_dtype must be a string (\"fp32\", \"bf16\" or \"fp16\")", file);
    if (saefw_enc_dtype_parse(v->valuestring, out, err, errlen) != 0) return saefw_err_prefix(err, errlen, "%s", file);
    return 0;
}

/* The ReLU SAE's options a cfg.json records (relu_option_fields); absent ones are the seed's. *d_out is 0
 * outside a transcoder. */
typedef struct {
    int transcoder, apply_b_dec_to_input;
    int64_t d_out;
    saefw_l1_weighting l1_weighting;
} relu_options;

static int cfg_bool(const cJSON *cfg, const char *file, const char *key, int dflt, int *out, char *err, size_t errlen) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    *out = dflt;
    if (!v) return 0;
    if (!cJSON_IsBool(v)) return saefw_errf(err, errlen, "%s: %s must be true or false", file, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

static int cfg_relu_options(const cJSON *cfg, const char *file, relu_options *o, char *err, size_t errlen) {
    memset(o, 0, sizeof *o);
    o->apply_b_dec_to_input = 1;
    if (!cfg) return 0;
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(cfg, "architecture");
    o->transcoder = cJSON_IsString(arch) && strcmp(arch->valuestring, "transcoder") == 0;
    int weighted = 0;
    if (cfg_bool(cfg, file, "apply_b_dec_to_input", !o->transcoder, &o->apply_b_dec_to_input, err, errlen) != 0 ||
        cfg_bool(cfg, file, "scale_sparsity_penalty_by_decoder_norm", 0, &weighted, err, errlen) != 0)
        return -1;
    o->l1_weighting = weighted ? SAEFW_L1_DECODER_NORM : SAEFW_L1_PLAIN;
    if (o->transcoder && get_int(cfg, file, "d_out", &o->d_out, err, errlen) != 0) return -1;
    return 0;
}

/* The architecture a cfg describes (absent: the seed's relu): saefw_arch when saefw wrote it, else
 * SAELens's architecture (a jumprelu that subtracts b_dec is a batchtopk saved for inference), with the
 * hyperparameters saefw writes beside it or the defaults. */
static int cfg_arch(const cJSON *cfg, const char *file, int64_t d_in, saefw_sae_arch_cfg *out, char *err,
                    size_t errlen) {
    saefw_sae_arch_defaults(out, SAEFW_ARCH_RELU, d_in);
    if (!cfg) return 0;
    const cJSON *own = cJSON_GetObjectItemCaseSensitive(cfg, "saefw_arch");
    const cJSON *sl = cJSON_GetObjectItemCaseSensitive(cfg, "architecture");
    saefw_sae_arch arch = SAEFW_ARCH_RELU;
    if (cJSON_IsString(own)) {
        if (saefw_sae_arch_parse(own->valuestring, &arch, err, errlen) != 0)
            return saefw_err_prefix(err, errlen, "%s: saefw_arch", file);
    } else if (cJSON_IsString(sl) && strcmp(sl->valuestring, "standard") != 0 &&
               strcmp(sl->valuestring, "transcoder") != 0) { /* a transcoder is a relu SAE (cfg_relu_options) */
        const cJSON *sub = cJSON_GetObjectItemCaseSensitive(cfg, "apply_b_dec_to_input");
        if (!strcmp(sl->valuestring, "jumprelu")) arch = cJSON_IsTrue(sub) ? SAEFW_ARCH_BATCHTOPK : SAEFW_ARCH_JUMPRELU;
        else if (saefw_sae_arch_parse(sl->valuestring, &arch, err, errlen) != 0)
            return saefw_errf(err, errlen,
                              "%s: architecture '%s' is not supported (standard, transcoder, topk, batchtopk, "
                              "jumprelu or gated)",
                              file, sl->valuestring);
    }
    saefw_sae_arch_defaults(out, arch, d_in);
    if (arch == SAEFW_ARCH_RELU) return 0;
    const cJSON *kw = cJSON_GetObjectItemCaseSensitive(cfg, "activation_fn_kwargs");
    out->k = (int64_t)cfg_number(cfg, "k", cfg_number(kw, "k", (double)out->k));
    out->k_aux = (int64_t)cfg_number(cfg, "k_aux", (double)out->k_aux);
    out->aux_coeff = cfg_number(cfg, "aux_coeff", out->aux_coeff);
    out->dead_steps = (int64_t)cfg_number(cfg, "dead_steps", (double)out->dead_steps);
    out->theta_rate = cfg_number(cfg, "topk_threshold_lr", out->theta_rate);
    out->bandwidth = cfg_number(cfg, "jumprelu_bandwidth", out->bandwidth);
    out->threshold = cfg_number(cfg, "jumprelu_init_threshold", out->threshold);
    out->l0_coeff = cfg_number(cfg, "l0_coefficient", out->l0_coeff);
    return 0;
}

/* Copy the architecture's tensors from an open file into a freshly allocated sae, checking names and
 * shapes. jumprelu's log_threshold and batchtopk's theta come from SAELens's threshold tensor. */
static int fill_sae(const char *path, saefw_tensorfile *tf, int64_t d_in, int64_t d_sae, float l1,
                    const relu_options *o, const saefw_sae_arch_cfg *arch, saefw_sae *sae, char *err, size_t errlen) {
    const saefw_tensor_info *w = saefw_tf_find(tf, "W_enc");
    if (d_in <= 0 || d_sae <= 0) {
        if (!w || w->ndim != 2) return saefw_errf(err, errlen, "%s: missing tensor 'W_enc' [d_in, d_sae]", path);
        d_in = w->shape[0];
        d_sae = w->shape[1];
    }
    const char *names[SAEFW_MAX_PARAMS];
    int n = saefw_arch_names(arch->arch, names);
    if (arch->arch == SAEFW_ARCH_JUMPRELU) names[SAEFW_LOG_THRESHOLD] = "threshold";
    if (arch->arch == SAEFW_ARCH_BATCHTOPK) names[n++] = "threshold";
    /* Every shape is checked against the config before anything is allocated, so a config with
     * absurd sizes is an error, not an out-of-memory. */
    const int64_t d_out = o->transcoder ? o->d_out : d_in;
    const int64_t want_shape[SAEFW_MAX_PARAMS][2] = {{d_in, d_sae}, {d_sae, d_out}, {d_sae, 0},
                                                     {d_out, 0},    {d_sae, 0},     {d_sae, 0}};
    for (int i = 0; i < n; i++) {
        const char *name = names[i];
        const saefw_tensor_info *t = saefw_tf_find(tf, name);
        if (!t) return saefw_errf(err, errlen, "%s: missing tensor '%s'", path, name);
        int nd = want_shape[i][1] ? 2 : 1;
        if (t->ndim != nd || t->shape[0] != want_shape[i][0] || (nd == 2 && t->shape[1] != want_shape[i][1])) {
            char got[128] = "", want[64];
            for (int k = 0; k < t->ndim && k < 4; k++) {
                size_t u = strlen(got);
                snprintf(got + u, sizeof got - u, "%s%lld", k ? ", " : "", (long long)t->shape[k]);
            }
            if (nd == 2)
                snprintf(want, sizeof want, "%lld, %lld", (long long)want_shape[i][0], (long long)want_shape[i][1]);
            else snprintf(want, sizeof want, "%lld", (long long)want_shape[i][0]);
            return saefw_errf(err, errlen, "%s: tensor '%s' has shape [%s], expected [%s]", path, name, got, want);
        }
    }
    if ((arch->arch != SAEFW_ARCH_RELU ? saefw_sae_alloc_arch(sae, d_in, d_sae, l1, arch, err, errlen)
         : o->transcoder               ? saefw_sae_alloc_xy(sae, d_in, d_out, d_sae, l1, err, errlen)
                                       : saefw_sae_alloc(sae, d_in, d_sae, l1, err, errlen)) != 0)
        return saefw_err_prefix(err, errlen, "%s", path);
    if (arch->arch == SAEFW_ARCH_RELU) { /* the other architectures fix these (saefw_sae_alloc_arch) */
        sae->transcoder = o->transcoder;
        sae->apply_b_dec_to_input = o->apply_b_dec_to_input;
        sae->l1_weighting = o->l1_weighting;
    }
    if (saefw_sae_check_options(sae, err, errlen) != 0) {
        saefw_sae_free(sae);
        return saefw_err_prefix(err, errlen, "%s", path);
    }
    float *theta = NULL;
    for (int i = 0; i < n; i++) {
        const char *name = names[i];
        const saefw_tensor_info *t = saefw_tf_find(tf, name);
        float *dst = i < sae->n_params ? sae->p[i] : NULL;
        if (!dst && !(dst = theta = saefw_malloc(sizeof(float) * (size_t)d_sae, err, errlen))) {
            saefw_sae_free(sae);
            return -1;
        }
        if (saefw_tensor_to_f32(t, dst, err, errlen) != 0) {
            free(theta);
            saefw_sae_free(sae);
            return saefw_err_prefix(err, errlen, "%s: tensor '%s'", path, name);
        }
        /* A NaN or infinite weight would only surface later as a NaN loss, far from its cause. */
        for (int64_t k = 0; k < t->numel; k++)
            if (!isfinite(dst[k]) || (!strcmp(name, "threshold") && !(dst[k] > 0))) {
                saefw_errf(err, errlen, "%s: tensor '%s' holds %s at element %lld; refusing to load it", path, name,
                           isnan(dst[k])      ? "NaN"
                           : isfinite(dst[k]) ? "a threshold <= 0"
                                              : "an infinite value",
                           (long long)k);
                free(theta);
                saefw_sae_free(sae);
                return -1;
            }
    }
    if (arch->arch == SAEFW_ARCH_JUMPRELU)
        for (int64_t j = 0; j < d_sae; j++) sae->p[SAEFW_LOG_THRESHOLD][j] = logf(sae->p[SAEFW_LOG_THRESHOLD][j]);
    if (theta) sae->theta = theta[0];
    free(theta);
    return 0;
}

/* The weights file and the cfg file of a checkpoint path (folder, safetensors file or seed N.pt). */
static int checkpoint_files(const char *path, char *weights, char *cfgp, int *seed_pt, char *err, size_t errlen) {
    struct stat st;
    if (stat(path, &st) != 0) return saefw_errf(err, errlen, "%s: no such file or folder", path);
    *seed_pt = 0;
    if (S_ISDIR(st.st_mode))
        return saefw_pathf(weights, PATH_MAX, err, errlen, "%s/sae_weights.safetensors", path) != 0 ||
                       saefw_pathf(cfgp, PATH_MAX, err, errlen, "%s/cfg.json", path) != 0
                   ? -1
                   : 0;
    if (saefw_pathf(weights, PATH_MAX, err, errlen, "%s", path) != 0) return -1;
    if (saefw_ends_with(path, ".pt") || saefw_ends_with(path, ".pth")) {
        /* The seed writes N.pt next to N_cfg.json. */
        *seed_pt = 1;
        size_t n = strlen(path) - (saefw_ends_with(path, ".pt") ? 3 : 4);
        return saefw_pathf(cfgp, PATH_MAX, err, errlen, "%.*s_cfg.json", (int)n, path);
    }
    const char *slash = strrchr(path, '/');
    return saefw_pathf(cfgp, PATH_MAX, err, errlen, "%.*scfg.json", slash ? (int)(slash + 1 - path) : 0, path);
}

int saefw_checkpoint_require_l1(const char *path, const cJSON *cfg, char *err, size_t errlen) {
    char weights[PATH_MAX], cfgp[PATH_MAX];
    int seed_pt;
    if (checkpoint_files(path, weights, cfgp, &seed_pt, err, errlen) != 0) return -1;
    if (!cfg) return saefw_errf(err, errlen, "%s: no %s beside it to give l1_coeff", path, cfgp);
    if (!cJSON_GetObjectItemCaseSensitive(cfg, "l1_coeff") && !cJSON_GetObjectItemCaseSensitive(cfg, "l1_coefficient"))
        return saefw_errf(err, errlen, "%s: no l1_coeff (the L1 coefficient the SAE was trained with)", cfgp);
    return 0;
}

int saefw_checkpoint_load(const char *path, saefw_sae *sae, cJSON **cfg_out, char *err, size_t errlen) {
    memset(sae, 0, sizeof *sae);
    if (cfg_out) *cfg_out = NULL;
    char weights[PATH_MAX], cfgp[PATH_MAX];
    int seed_pt;
    if (checkpoint_files(path, weights, cfgp, &seed_pt, err, errlen) != 0) return -1;
    cJSON *cfg = NULL;
    int64_t d_in = 0, d_sae = 0;
    float l1 = 0;
    if (seed_pt) {
        if (access(cfgp, F_OK) == 0) {
            if (read_cfg(cfgp, &cfg, err, errlen) != 0) return -1;
            if (cfg_l1(cfg, cfgp, &l1, err, errlen) != 0) {
                cJSON_Delete(cfg);
                return -1;
            }
            if (cJSON_GetObjectItemCaseSensitive(cfg, "act_size") &&
                (get_int(cfg, cfgp, "act_size", &d_in, err, errlen) != 0 ||
                 get_int(cfg, cfgp, "dict_size", &d_sae, err, errlen) != 0)) {
                cJSON_Delete(cfg);
                return -1;
            }
        }
    } else {
        if (read_cfg(cfgp, &cfg, err, errlen) != 0) return -1;
        if (get_int(cfg, cfgp, "d_in", &d_in, err, errlen) != 0 ||
            get_int(cfg, cfgp, "d_sae", &d_sae, err, errlen) != 0) {
            cJSON_Delete(cfg);
            return -1;
        }
        if (cfg_l1(cfg, cfgp, &l1, err, errlen) != 0) {
            cJSON_Delete(cfg);
            return -1;
        }
    }
    saefw_tensorfile *tf = NULL;
    if (saefw_tf_open(weights, &tf, err, errlen) != 0) {
        cJSON_Delete(cfg);
        return -1;
    }
    int rc = saefw_checksum_verify(tf, weights, NULL, err, errlen);
    saefw_enc_dtype enc = SAEFW_ENC_FP32;
    relu_options ro;
    if (rc == 0) rc = cfg_enc_dtype(cfg, cfgp, &enc, err, errlen);
    saefw_sae_arch_cfg arch;
    if (rc == 0) rc = cfg_relu_options(cfg, cfgp, &ro, err, errlen);
    if (rc == 0) rc = cfg_arch(cfg, cfgp, d_in, &arch, err, errlen);
    if (rc == 0) rc = fill_sae(weights, tf, d_in, d_sae, l1, &ro, &arch, sae, err, errlen);
    if (rc == 0) sae->enc_dtype = enc;
    saefw_tf_close(tf);
    if (rc != 0) {
        cJSON_Delete(cfg);
        return -1;
    }
    if (cfg_out) *cfg_out = cfg;
    else cJSON_Delete(cfg);
    return 0;
}

static int numbered(const char *name, long *v) {
    char *end;
    errno = 0;
    long x = strtol(name, &end, 10);
    if (*end != 0 || end == name || errno != 0 || x < 0 || x >= INT_MAX) return 0;
    *v = x;
    return 1;
}

static int desc(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x < y) - (x > y);
}

/* Versions of run_dir's numbered folders, newest first; *n gets the count. Caller frees. */
static long *versions(const char *run_dir, int *n) {
    *n = 0;
    DIR *d = opendir(run_dir);
    if (!d) return NULL;
    int cap = 16;
    long *v = malloc(sizeof(long) * (size_t)cap);
    struct dirent *e;
    while (v && (e = readdir(d))) {
        long x;
        if (!numbered(e->d_name, &x)) continue;
        if (*n == cap) {
            long *nv = realloc(v, sizeof(long) * (size_t)(cap *= 2));
            if (!nv) {
                free(v);
                v = NULL;
                break;
            }
            v = nv;
        }
        v[(*n)++] = x;
    }
    closedir(d);
    if (v) qsort(v, (size_t)*n, sizeof(long), desc);
    return v;
}

static int checkpoint_intact(const char *dir, char *err, size_t errlen) {
    char p[PATH_MAX];
    saefw_sae s;
    if (saefw_checkpoint_load(dir, &s, NULL, err, errlen) != 0) return -1;
    saefw_sae_free(&s);
    if (saefw_pathf(p, sizeof p, err, errlen, "%s/" SAEFW_TRAIN_STATE, dir) != 0) return -1;
    saefw_state_in st;
    if (saefw_state_open(p, &st, err, errlen) != 0) return -1;
    saefw_state_close(&st);
    return 0;
}

int saefw_checkpoint_find_resumable(const char *run_dir, char *out, size_t n, void (*log)(const char *msg), char *err,
                                    size_t errlen) {
    struct stat st;
    if (stat(run_dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return saefw_errf(err, errlen, "%s: no such run folder", run_dir);
    int nv = 0;
    long *v = versions(run_dir, &nv);
    for (int i = 0; i < nv; i++) {
        char dir[PATH_MAX], why[1024];
        if (saefw_pathf(dir, sizeof dir, err, errlen, "%s/%ld", run_dir, v[i]) != 0 ||
            saefw_pathf(out, n, err, errlen, "%s", dir) != 0) {
            free(v);
            return -1;
        }
        if (checkpoint_intact(dir, why, sizeof why) == 0) {
            free(v);
            return 0;
        }
        out[0] = 0;
        if (log) {
            char msg[PATH_MAX + 1100];
            snprintf(msg, sizeof msg, "resume: skipping checkpoint %s: %s", dir, why);
            log(msg);
        }
    }
    free(v);
    return saefw_errf(err, errlen, "%s: no complete checkpoint with a training state to resume from", run_dir);
}

int saefw_checkpoint_next_version(const char *run_dir) {
    int nv = 0;
    long *v = versions(run_dir, &nv);
    int next = v && nv > 0 ? (int)v[0] + 1 : 0;
    free(v);
    return next;
}

void saefw_checkpoint_prune_states(const char *run_dir, int keep) {
    int nv = 0;
    long *v = versions(run_dir, &nv);
    for (int i = keep; i < nv; i++) {
        char p[PATH_MAX];
        if (saefw_pathf(p, sizeof p, NULL, 0, "%s/%ld/" SAEFW_TRAIN_STATE, run_dir, v[i]) == 0) unlink(p);
        for (int r = 1; saefw_pathf(p, sizeof p, NULL, 0, "%s/%ld/" SAEFW_TRAIN_STATE_RANK, run_dir, v[i], r) == 0 &&
                        unlink(p) == 0;
             r++) {}
    }
    free(v);
}

/* A "<base>.tmp.<pid>" or "<base>.old.<pid>" name from saefw_checkpoint_save_ex: 1 (tmp) or 2 (old),
 * with the base's length and the pid; 0 for any other name. */
static int leftover_name(const char *name, size_t *base_len, long *pid) {
    static const char *const tags[2] = {".tmp.", ".old."};
    for (int k = 0; k < 2; k++) {
        const char *t = strstr(name, tags[k]);
        if (!t || t == name) continue;
        char *end;
        errno = 0;
        long v = strtol(t + 5, &end, 10);
        if (*end != 0 || end == t + 5 || errno != 0 || v <= 0) continue;
        *base_len = (size_t)(t - name);
        *pid = v;
        return k + 1;
    }
    return 0;
}

int saefw_checkpoint_remove_leftovers(const char *run_dir, void (*log)(const char *msg)) {
    DIR *d = opendir(run_dir);
    if (!d) return 0;
    int done = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t base_len;
        long pid;
        int kind = leftover_name(e->d_name, &base_len, &pid);
        /* Only a process that no longer runs has given up its folder. */
        if (!kind || pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        char path[PATH_MAX], base[PATH_MAX], msg[2 * PATH_MAX];
        /* A name that does not fit is not one this process could have made. */
        if (saefw_pathf(path, sizeof path, NULL, 0, "%s/%s", run_dir, e->d_name) != 0 ||
            saefw_pathf(base, sizeof base, NULL, 0, "%s/%.*s", run_dir, (int)base_len, e->d_name) != 0)
            continue;
        struct stat st;
        /* A writer killed between moving the previous checkpoint aside and renaming the new one into
         * place leaves the previous one complete in .old: it goes back. */
        if (kind == 2 && stat(base, &st) != 0 && errno == ENOENT && rename(path, base) == 0) {
            snprintf(msg, sizeof msg, "restored %s from %s, left by process %ld (no longer running)", base, e->d_name,
                     pid);
        } else {
            if (remove_tree(path) != 0 && errno != ENOENT) continue;
            snprintf(msg, sizeof msg, "removed %s, left by process %ld (no longer running)", path, pid);
        }
        if (log) log(msg);
        done++;
    }
    closedir(d);
    return done;
}
