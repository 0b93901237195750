/* The training run's reporting: the progress line, the eval line, metrics.jsonl and the event
 * callback. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "train_internal.h"
#include "util.h"

static void fmt_duration(double s, char *buf, size_t n) {
    if (!isfinite(s) || s < 0) {
        snprintf(buf, n, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60) snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, n, "%lds", t);
}

static void fmt_rate(double r, char *buf, size_t n) {
    if (r >= 1e6) snprintf(buf, n, "%.2fM", r / 1e6);
    else if (r >= 1e3) snprintf(buf, n, "%.1fk", r / 1e3);
    else snprintf(buf, n, "%.0f", r);
}

void saefw_train_progress_line(const saefw_metrics *m, int tty) {
    char rate[32], eta[32];
    fmt_rate(m->tokens_per_s, rate, sizeof rate);
    double left = m->tokens_per_s > 0
                      ? (double)(m->steps - m->step - 1) * ((double)m->tokens / (double)(m->step + 1)) / m->tokens_per_s
                      : NAN;
    fmt_duration(left, eta, sizeof eta);
    fprintf(stderr, "%sstep %lld/%lld (%.0f%%) | %s tok/s | loss %.5g l2 %.5g l1 %.5g | L0 %.1f | EV %.3f | ETA %s%s",
            tty ? "\r\033[K" : "", (long long)m->step, (long long)m->steps,
            100.0 * (double)(m->step + 1) / (double)m->steps, rate, m->loss, m->l2, m->l1, m->l0, m->explained_variance,
            eta, tty ? "" : "\n");
    fflush(stderr);
}

static void json_num(FILE *f, const char *key, double v) {
    if (isfinite(v)) fprintf(f, ",\"%s\":%.9g", key, v);
    else fprintf(f, ",\"%s\":null", key);
}

const char *saefw_event_name(saefw_event e) {
    switch (e) {
    case SAEFW_EVENT_LOG: return "log";
    case SAEFW_EVENT_EVAL: return "eval";
    case SAEFW_EVENT_END: return "end";
    }
    return "?";
}

const char *saefw_stop_reason_name(saefw_stop_reason r) {
    switch (r) {
    case SAEFW_STOP_DONE: return "done";
    case SAEFW_STOP_ERROR: return "error";
    case SAEFW_STOP_SIGNAL: return "signal";
    case SAEFW_STOP_CALLBACK: return "callback";
    }
    return "?";
}

static int write_metrics_line(FILE *f, saefw_event event, const char *stopped_by, const saefw_metrics *m, char *err,
                              size_t errlen) {
    if (!f) return 0;
    fprintf(f, "{\"event\":\"%s\",\"step\":%lld,\"tokens\":%lld", saefw_event_name(event), (long long)m->step,
            (long long)m->tokens);
    if (stopped_by) fprintf(f, ",\"stopped_by\":\"on_%s\"", stopped_by);
    if (event != SAEFW_EVENT_EVAL) {
        json_num(f, "loss", m->loss);
        json_num(f, "l2_loss", m->l2);
        json_num(f, "l1_loss", m->l1);
        json_num(f, "l0", m->l0);
        json_num(f, "explained_variance", m->explained_variance);
        json_num(f, "tokens_per_s", m->tokens_per_s);
        json_num(f, "elapsed_s", m->elapsed_s);
    }
    if (m->has_eval) {
        json_num(f, "dead", m->frac_dead);
        json_num(f, "below_1e-6", m->frac_below_1e6);
        json_num(f, "below_1e-5", m->frac_below_1e5);
        for (int i = 0; i < m->n_score; i++)
            if (isfinite(m->score_value[i])) json_num(f, m->score_name[i], m->score_value[i]);
    }
    for (int i = 0; i < m->n_extra; i++) json_num(f, m->extra_name[i], m->extra_value[i]);
    if (event != SAEFW_EVENT_LOG) {
        const saefw_time_split *t = &m->time;
        fprintf(f,
                ",\"time_s\":{\"step\":%.3f,\"batch\":%.3f,\"refill\":%.3f,\"eval_freq\":%.3f,\"eval_other\":%.3f,"
                "\"checkpoint\":%.3f,\"plugins\":%.3f,\"logging\":%.3f,\"total\":%.3f}",
                t->step, t->batch, t->refill, t->eval_freq, t->eval_other, t->checkpoint, t->plugins, t->logging,
                t->total);
    }
    fputs("}\n", f);
    if (fflush(f) != 0 || ferror(f)) return saefw_errf(err, errlen, "metrics.jsonl: write failed: %s", strerror(errno));
    return 0;
}

/* Returns 0, or -1 with err. A callback asking to stop (SAEFW_EVENT_STOP) ends the run after this
 * step as if it were the last: run->stopped_by names the event. */
int saefw_train_emit(saefw_run *run, saefw_event event, saefw_metrics *m, char *err, size_t errlen) {
    if (run->metric_error[0]) return saefw_errf(err, errlen, "%s", run->metric_error);
    const double t0 = saefw_now();
    m->time = run->time;
    m->time.total = run->elapsed_before + (t0 - run->t0);
    m->n_extra = run->n_extra;
    memcpy(m->extra_name, run->extra_name, sizeof m->extra_name);
    memcpy(m->extra_value, run->extra_value, sizeof m->extra_value);
    const int end = event == SAEFW_EVENT_END;
    if (write_metrics_line(run->metrics, event, end ? run->stopped_by : NULL, m, err, errlen) != 0) return -1;
    if (run->metrics) run->metrics_lines++;
    int rc = run->o->on_event ? run->o->on_event(run->o->event_ud, event, m, err, errlen) : SAEFW_EVENT_GO_ON;
    run->time.logging += saefw_now() - t0;
    /* A stop asked for at the end changes nothing: the run ends anyway. */
    if (rc == SAEFW_EVENT_STOP) {
        if (!end && !run->stopped_by) run->stopped_by = saefw_event_name(event);
        return 0;
    }
    return rc == SAEFW_EVENT_GO_ON ? 0 : -1;
}

void saefw_train_eval_line(const saefw_run *run, const saefw_metrics *m) {
    char mm[512] = "";
    for (int k = 0; k < m->n_score; k++) {
        size_t u = strlen(mm);
        if (isfinite(m->score_value[k]))
            snprintf(mm + u, sizeof mm - u, ", %s %.4f", m->score_label[k], m->score_value[k]);
    }
    for (int k = 0; k < run->n_extra; k++) {
        size_t u = strlen(mm);
        snprintf(mm + u, sizeof mm - u, ", %s %.4g", run->extra_name[k], run->extra_value[k]);
    }
    fprintf(stderr, "eval step %lld: dead %.4f, below 1e-6 %.4f, below 1e-5 %.4f%s\n", (long long)m->step, m->frac_dead,
            m->frac_below_1e6, m->frac_below_1e5, mm);
}
