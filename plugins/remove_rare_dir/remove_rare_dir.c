/* remove_rare_dir: the seed's experiment that keeps every encoder column orthogonal to a fixed unit
 * direction d in activation space: after the backward pass W_enc.grad -= d (d . W_enc.grad), after
 * the optimizer step W_enc -= d (d . W_enc), column by column. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <saefw/plugin.h>

static const saefw_option OPTIONS[] = {
    {"direction", SAEFW_OPT_STRING, 0, NULL,
     "file holding the direction [d_in]: safetensors, .npy, or a torch .pt tensor such as the seed's rare_freq_dir.pt"},
    {"tensor", SAEFW_OPT_STRING, 0, "", "name of the tensor in a file holding several (empty: the file's only one)"},
    {NULL, 0, 0, NULL, NULL},
};

typedef struct {
    const saefw_host *host;
    int64_t d_in, d_sae;
    float *d;     /* [d_in], unit norm; the host's memory (read_tensor), released with free_tensor */
    double *proj; /* [d_sae]: d . column, per column */
} remover;

static void rm_destroy(void *self) {
    remover *r = self;
    if (!r) return;
    r->host->free_tensor(r->d);
    free(r->proj);
    free(r);
}

static int rm_create(const saefw_host *host, saefw_run *run, const saefw_opts *opts, void **self, char *err,
                     size_t errlen) {
    const char *path = host->opt_string(opts, "direction"), *name = host->opt_string(opts, "tensor");
    if (!path || !*path)
        return saefw_fail(err, errlen, "option 'direction' is required (a file holding the direction)");
    if (name && !*name) name = NULL;
    remover *r = calloc(1, sizeof *r);
    if (!r) return saefw_fail(err, errlen, "out of memory");
    r->host = host;
    r->d_in = host->d_in(run);
    r->d_sae = host->d_sae(run);
    r->proj = malloc(sizeof(double) * (size_t)r->d_sae);
    if (!r->proj) return rm_destroy(r), saefw_fail(err, errlen, "out of memory");

    char terr[400] = "";
    int64_t numel = 0, shape[4];
    int ndim = 0;
    if (host->read_tensor(run, path, name, &r->d, &numel, &ndim, shape, terr, sizeof terr) != 0)
        return rm_destroy(r), saefw_fail(err, errlen, "option 'direction': %s", terr);
    /* Any shape with d_in entries ([d_in], [1, d_in]) is the same direction. */
    const int64_t d_in = r->d_in;
    if (numel != d_in)
        return rm_destroy(r),
               saefw_fail(err, errlen, "option 'direction': %s: direction has %lld entries, expected d_in = %lld", path,
                          (long long)numel, (long long)d_in);
    double ss = 0;
    for (int64_t i = 0; i < r->d_in; i++) ss += (double)r->d[i] * r->d[i];
    if (!isfinite(ss))
        return rm_destroy(r), saefw_fail(err, errlen, "option 'direction': %s: direction has a non-finite entry", path);
    if (!(ss > 0))
        return rm_destroy(r), saefw_fail(err, errlen, "option 'direction': %s: direction has zero norm", path);
    const double norm = sqrt(ss);
    for (int64_t i = 0; i < r->d_in; i++) r->d[i] = (float)(r->d[i] / norm);
    if (fabs(norm - 1.0) > 1e-5) {
        char msg[300];
        snprintf(msg, sizeof msg, "direction from %s had norm %.6g; normalised to unit norm", path, norm);
        host->log(run, SAEFW_LOG_INFO, msg);
    }
    *self = r;
    return 0;
}

/* m [d_in, d_sae] -= d (d . m), column by column; proj gets d . m per column before the change. */
static void project_out(remover *r, float *m) {
    const int64_t d_in = r->d_in, d_sae = r->d_sae;
    for (int64_t j = 0; j < d_sae; j++) r->proj[j] = 0;
    for (int64_t i = 0; i < d_in; i++) {
        const double di = r->d[i];
        const float *row = m + i * d_sae;
        for (int64_t j = 0; j < d_sae; j++) r->proj[j] += di * row[j];
    }
    for (int64_t i = 0; i < d_in; i++) {
        const double di = r->d[i];
        float *row = m + i * d_sae;
        for (int64_t j = 0; j < d_sae; j++) row[j] = (float)(row[j] - di * r->proj[j]);
    }
}

static int w_enc(remover *r, saefw_run *run, saefw_param *p, char *err, size_t errlen) {
    p->struct_size = sizeof *p;
    if (r->host->param_find(run, "W_enc", p, NULL) != 0) return saefw_fail(err, errlen, "the SAE has no W_enc");
    if (p->ndim != 2 || p->shape[0] != r->d_in || p->shape[1] != r->d_sae)
        return saefw_fail(err, errlen, "W_enc is not [d_in, d_sae]");
    return 0;
}

static int rm_after_backward(void *self, saefw_run *run, char *err, size_t errlen) {
    remover *r = self;
    saefw_param p;
    if (w_enc(r, run, &p, err, errlen) != 0) return -1;
    project_out(r, p.grad);
    return 0;
}

static int rm_after_step(void *self, saefw_run *run, char *err, size_t errlen) {
    remover *r = self;
    saefw_param p;
    if (w_enc(r, run, &p, err, errlen) != 0) return -1;
    project_out(r, p.data);
    return 0;
}

/* Reports max over columns of |d . column|: zero up to rounding while the plugin runs. */
static int rm_report(void *self, saefw_run *run, char *err, size_t errlen) {
    remover *r = self;
    saefw_param p;
    if (w_enc(r, run, &p, err, errlen) != 0) return -1;
    for (int64_t j = 0; j < r->d_sae; j++) r->proj[j] = 0;
    for (int64_t i = 0; i < r->d_in; i++)
        for (int64_t j = 0; j < r->d_sae; j++) r->proj[j] += (double)r->d[i] * p.data[i * r->d_sae + j];
    double worst = 0;
    for (int64_t j = 0; j < r->d_sae; j++) worst = fmax(worst, fabs(r->proj[j]));
    r->host->metric(run, "max_abs_dir_dot", worst);
    return 0;
}

static const saefw_plugin PLUGIN = {
    .abi_version = SAEFW_ABI_VERSION,
    .struct_size = sizeof(saefw_plugin),
    .name = "remove_rare_dir",
    .description = "keeps every encoder column orthogonal to a fixed direction (the seed's rare-direction experiment)",
    .kind = SAEFW_KIND_EXPERIMENT,
    .stateless = 1, /* the direction comes from its file again on resume */
    .options = OPTIONS,
    .option_size = sizeof(saefw_option),
    .create = rm_create,
    .destroy = rm_destroy,
    .after_backward = rm_after_backward,
    .after_step = rm_after_step,
    .on_eval = rm_report,
    .on_end = rm_report,
};

const saefw_plugin *saefw_plugin_init(const saefw_host *host, char *err, size_t errlen) { return &PLUGIN; }
