/* ZeRO-1 over MPI ranks (saefw_train_opts.zero): each rank keeps the optimizer's state for one
 * contiguous, row-aligned range of the parameter block, the gradients are reduce-scattered to the
 * range's owner, the owner projects its decoder rows and steps its range, and the ranges are
 * all-gathered back. The layout is also the plain data-parallel gradient sum's (reduce-scatter then
 * all-gather), so zero = 1 and zero = 0 give the same bytes on any rank count. */
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "state.h"
#include "train_internal.h"
#include "util.h"

/* Flat offset of tensor i in the parameter block, and its elements per row (first axis). */
static int64_t tensor_off(const saefw_sae *sae, int i) { return sae->p[i] - sae->params; }
static int64_t row_len(const saefw_sae *sae, int i) {
    return sae->shape[i][0] > 0 ? sae->numel[i] / sae->shape[i][0] : 1;
}

/* Cut the block into P ranges near equal in size, each cut moved to the nearest row boundary of
 * the tensor it falls in: a W_dec row is never split, so its projection and renorm stay on one rank. */
void saefw_train_zero_layout(const saefw_sae *sae, int P, int64_t *b) {
    const int64_t n = (int64_t)sae->n_total;
    b[0] = 0;
    for (int k = 1; k < P; k++) {
        int64_t t = n * k / P;
        for (int i = 0; i < sae->n_params; i++) {
            const int64_t off = tensor_off(sae, i), rl = row_len(sae, i);
            if (t >= off && t < off + sae->numel[i]) {
                t = off + (t - off + rl / 2) / rl * rl;
                break;
            }
        }
        b[k] = t < b[k - 1] ? b[k - 1] : t > n ? n : t;
    }
    b[P] = n;
}

int saefw_train_zero_setup(saefw_run *run, char *err, size_t errlen) {
    const saefw_train_opts *o = run->o;
    if (o->zero) {
        const saefw_plugin *op = &o->optimizer.plugin->p;
        if (!op->zero_slices)
            return saefw_errf(err, errlen,
                              "train: zero = 1 needs an optimizer that updates elementwise and says so (zero_slices); "
                              "%s does not",
                              op->name);
        if (o->clip_grad_norm > 0)
            return saefw_errf(err, errlen,
                              "train: zero = 1 and clip_grad_norm do not go together (the norm needs every rank's "
                              "slice of the gradient); use zero = 0");
        for (int i = 0; i < o->n_plugins; i++)
            if (o->plugins[i].plugin->p.after_backward)
                return saefw_errf(err, errlen,
                                  "train: zero = 1: plugin %s has an after_backward hook, which would see only this "
                                  "rank's slice of the summed gradients; use zero = 0",
                                  o->plugins[i].plugin->p.name);
        run->zero = 1;
    }
    if (run->ranks == 1 && !run->zero) return 0;
    run->zbounds = saefw_malloc(sizeof(int64_t) * (size_t)(run->ranks + 1), err, errlen);
    if (!run->zbounds) return -1;
    saefw_train_zero_layout(run->sae, run->ranks, run->zbounds);
    return 0;
}

int saefw_train_zero_grad_sum(saefw_run *run, char *err, size_t errlen) {
    saefw_sae *sae = run->sae;
    const int64_t n = (int64_t)sae->n_total;
    if (saefw_dist_reduce_scatter_f32(sae->grads, n, run->zbounds, err, errlen) != 0) return -1;
    return run->zero ? 0 : saefw_dist_all_gather_f32(sae->grads, n, run->zbounds, err, errlen);
}

/* Rows [*r0, *r1) of tensor i inside this rank's range. */
static void own_rows(const saefw_run *run, int i, int64_t *r0, int64_t *r1) {
    const saefw_sae *sae = run->sae;
    const int64_t off = tensor_off(sae, i), rl = row_len(sae, i), end = off + sae->numel[i];
    int64_t lo = run->zbounds[run->rank], hi = run->zbounds[run->rank + 1];
    lo = lo < off ? off : lo;
    hi = hi > end ? end : hi;
    if (hi <= lo) lo = hi = off;
    *r0 = (lo - off) / rl;
    *r1 = (hi - off) / rl;
}

void saefw_train_zero_project(saefw_run *run) {
    int64_t r0, r1;
    own_rows(run, SAEFW_W_DEC, &r0, &r1);
    saefw_sae_project_decoder_rows(run->sae, r0, r1);
}

int saefw_train_zero_gather_params(saefw_run *run, char *err, size_t errlen) {
    return saefw_dist_all_gather_f32(run->sae->params, (int64_t)run->sae->n_total, run->zbounds, err, errlen);
}

int saefw_train_zero_opt_view(const saefw_run *run) {
    return run->zero && run->current && run->current == run->o->optimizer.plugin->p.name;
}

void saefw_train_zero_slice(const saefw_run *run, int i, saefw_param *v) {
    int64_t r0, r1;
    own_rows(run, i, &r0, &r1);
    const int64_t rl = row_len(run->sae, i);
    v->data += r0 * rl;
    v->grad += r0 * rl;
    v->shape[0] = r1 - r0;
    v->numel = (r1 - r0) * rl;
}

int saefw_train_zero_save_shadow(saefw_run *run, char *err, size_t errlen) {
    const saefw_plugin *op = &run->o->optimizer.plugin->p;
    if (!op->save_state) return 0;
    /* The same calls as rank 0's save, in the same order, so that the gathers meet; what this rank
     * puts besides its slices is thrown away. */
    saefw_state_out st;
    saefw_state_out_init(&st);
    char perr[512] = "";
    run->current = op->name;
    run->callback = "save_state";
    int rc = op->save_state(run->opt_self, run, (saefw_state_writer *)&st, perr, sizeof perr);
    run->current = NULL;
    saefw_state_out_free(&st);
    if (rc != 0)
        return saefw_errf(err, errlen, "plugin %s: saving its state: %s", op->name,
                          saefw_train_plugin_msg(perr, sizeof perr, "failed"));
    return 0;
}

int saefw_train_zero_put(saefw_run *run, saefw_state_out *w, const char *name, const float *data, int i, char *err,
                         size_t errlen) {
    const saefw_sae *sae = run->sae;
    const int64_t total = sae->numel[i];
    if (!run->zero) return saefw_state_put_copy(w, name, SAEFW_DT_F32, total, data, err, errlen);
    int64_t r0, r1;
    own_rows(run, i, &r0, &r1);
    const int64_t rl = row_len(sae, i);
    float *full = NULL;
    if (run->rank == 0 && !(full = saefw_malloc(sizeof(float) * (size_t)(total > 0 ? total : 1), err, errlen)))
        return -1;
    int rc = saefw_dist_gather_f32(data, r0 * rl, (r1 - r0) * rl, full, total, err, errlen);
    if (rc == 0 && run->rank == 0) rc = saefw_state_put_copy(w, name, SAEFW_DT_F32, total, full, err, errlen);
    free(full);
    return rc;
}

int saefw_train_zero_get(saefw_run *run, saefw_state_in *r, const char *name, float *data, int i, char *err,
                         size_t errlen) {
    const saefw_sae *sae = run->sae;
    const int64_t total = sae->numel[i];
    if (!run->zero) return saefw_state_get(r, name, SAEFW_DT_F32, total, data, err, errlen);
    int64_t r0, r1;
    own_rows(run, i, &r0, &r1);
    const int64_t rl = row_len(sae, i);
    float *full = saefw_malloc(sizeof(float) * (size_t)(total > 0 ? total : 1), err, errlen);
    if (!full) return -1;
    int rc = saefw_state_get(r, name, SAEFW_DT_F32, total, full, err, errlen);
    if (rc == 0 && r1 > r0) memcpy(data, full + r0 * rl, sizeof(float) * (size_t)((r1 - r0) * rl));
    free(full);
    return rc;
}
