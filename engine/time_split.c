/* The run's wall-time split (saefw_time_split) as one line of text, for the end of a run and the
 * benchmarks. */
#include <stdio.h>

#include "train.h"

void saefw_time_split_format(const saefw_time_split *t, char *out, size_t n) {
    const double parts[] = {t->step,       t->batch,      t->refill,  t->eval_freq,
                            t->eval_other, t->checkpoint, t->plugins, t->logging};
    static const char *const names[] = {"SAE step",           "batches",     "refills", "eval frequencies",
                                        "eval recons/others", "checkpoints", "plugins", "logging"};
    double rest = t->total;
    size_t u = (size_t)snprintf(out, n, "time %.1f s:", t->total);
    for (int i = 0; i < 8; i++) {
        rest -= parts[i];
        if (u < n)
            u += (size_t)snprintf(out + u, n - u, " %s %.1f s (%.1f %%)%s", names[i], parts[i],
                                  t->total > 0 ? 100.0 * parts[i] / t->total : 0.0, i < 7 ? "," : "");
    }
    if (u < n) snprintf(out + u, n - u, "; rest %.1f s (%.1f %%)", rest, t->total > 0 ? 100.0 * rest / t->total : 0.0);
}
