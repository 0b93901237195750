/* Plugins that misbehave: one that fills its error buffer without a terminating NUL gets its message
 * cut at the buffer's end (it was read past it); one that crashes in a callback (SIGSEGV in
 * after_step, in a child process) still ends with SIGSEGV, after a line naming the plugin, the
 * callback, the step and how many steps since the last checkpoint are lost; one that records a
 * metric name too long, or more metrics than a step holds, stops the run naming it. */
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "plugin_loader.h"
#include "sae.h"
#include "source.h"
#include "testutil.h"
#include "train.h"

enum { D_IN = 8, D_SAE = 16, BATCH = 32 };

static const saefw_host *g_host;

static int keep_host(const saefw_host *host, saefw_run *run, const saefw_opts *opts, void **self, char *err,
                     size_t errlen) {
    g_host = host;
    *self = NULL;
    return 0;
}

/* Fills the whole buffer with 'x', no NUL, and fails. */
static int noterm_after_step(void *self, saefw_run *run, char *err, size_t errlen) {
    memset(err, 'x', errlen);
    return -1;
}

/* Writes to a page mapped without access (address 0 is not a sure fault on every system). */
static int crash_after_step(void *self, saefw_run *run, char *err, size_t errlen) {
    if (g_host->step(run) != 5) return 0;
    volatile int *bad = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (bad == MAP_FAILED) return snprintf(err, errlen, "mmap failed"), -1;
    *bad = 1;
    return 0;
}

static int long_metric_after_step(void *self, saefw_run *run, char *err, size_t errlen) {
    g_host->metric(run, "a_metric_name_that_is_far_longer_than_the_engine_keeps_for_it", 1.0);
    return 0;
}

static int many_metrics_after_step(void *self, saefw_run *run, char *err, size_t errlen) {
    for (int i = 0; i <= SAEFW_MAX_EXTRA_METRICS; i++) {
        char name[16];
        snprintf(name, sizeof name, "m%d", i);
        g_host->metric(run, name, i);
    }
    return 0;
}

static saefw_loaded_plugin experiment(const char *name, saefw_callback after_step) {
    saefw_loaded_plugin lp;
    memset(&lp, 0, sizeof lp);
    lp.p.abi_version = SAEFW_ABI_VERSION;
    lp.p.struct_size = sizeof(saefw_plugin);
    lp.p.name = name;
    lp.p.kind = SAEFW_KIND_EXPERIMENT;
    lp.p.create = keep_host;
    lp.p.after_step = after_step;
    lp.p.stateless = 1;
    return lp;
}

/* Train 10 steps on synthetic data with Adam and one experiment plugin. */
static int train(saefw_loaded_plugin *exp, const char *run_dir, char *err, size_t errlen) {
    saefw_source *src = NULL;
    saefw_synthetic_opts so = {D_IN, 24, 0.05, 1.0, 7};
    REQUIRE(saefw_source_synthetic(&so, &src, err, errlen) == 0, "%s", err);
    saefw_sae sae;
    REQUIRE(saefw_sae_alloc(&sae, D_IN, D_SAE, 1e-3f, err, errlen) == 0, "%s", err);
    saefw_rng rng;
    saefw_rng_seed(&rng, 49);
    saefw_sae_init_params(&sae, &rng);
    saefw_buffer buf;
    REQUIRE(saefw_buffer_init(&buf, src, BATCH * 8, BATCH, SAEFW_BUF_F32, 1, err, errlen) == 0, "%s", err);
    saefw_loaded_plugin *adam = NULL;
    saefw_opts *ao = NULL;
    REQUIRE(saefw_plugin_load("adam", saefw_host_table(), &adam, err, errlen) == 0 &&
                saefw_opts_new(adam, &ao, err, errlen) == 0,
            "%s", err);
    saefw_plugin_use use = {.plugin = exp};
    saefw_train_opts o;
    memset(&o, 0, sizeof o);
    o.sae = &sae;
    o.buffer = &buf;
    o.steps = 10;
    o.optimizer.plugin = adam;
    o.optimizer.opts = ao;
    o.plugins = &use;
    o.n_plugins = 1;
    o.checkpoint_every = 2;
    o.run_dir = run_dir;
    o.seed = 5;
    saefw_train_result res;
    int rc = saefw_train(&o, &res, err, errlen);
    saefw_opts_free(ao);
    saefw_plugin_unload(adam);
    saefw_buffer_free(&buf);
    saefw_sae_free(&sae);
    saefw_source_free(src);
    return rc;
}

int main(void) {
    const char *tmp = t_tmpdir("test_plugin_crash");
    char err[4096];

    /* A crash in after_step: the run's line, then the signal as before. First, while this process has
     * no worker threads that a forked child would lack. */
    char dir[2048], log[2100];
    snprintf(dir, sizeof dir, "%s/crash", tmp);
    snprintf(log, sizeof log, "%s/crash.log", tmp);
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        if (!freopen(log, "w", stderr)) _exit(126);
        saefw_loaded_plugin crasher = experiment("crasher", crash_after_step);
        if (train(&crasher, dir, err, sizeof err) != 0) fprintf(stderr, "%s\n", err);
        _exit(0);
    }
    int st = 0;
    REQUIRE(waitpid(pid, &st, 0) == pid, "waitpid");
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV, "the crash ended with status %d, not SIGSEGV", st);
    FILE *f = fopen(log, "r");
    char text[8192] = "";
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f) fclose(f);
    text[n] = 0;
    char want[4300];
    snprintf(want, sizeof want,
             "saefw: plugin crasher crashed (SIGSEGV) in its after_step callback at step 5; 1 "
             "step(s) done since the last checkpoint are lost (it is %s/1: continue with --resume %s)\n",
             dir, dir);
    CHECK(strstr(text, want), "crash report:\n%s\nwanted:\n%s", text, want);
    printf("  %s", want);
    /* No NUL: the message ends where the engine's 512-byte buffer does. */
    saefw_loaded_plugin noterm = experiment("noterm", noterm_after_step);
    memset(err, 0, sizeof err);
    CHECK(train(&noterm, NULL, err, sizeof err) != 0, "the failing plugin did not stop the run");
    const char *x = strstr(err, "plugin noterm: x");
    size_t nx = x ? strspn(x + 15, "x") : 0;
    CHECK(x && nx == 511 && x[15 + nx] == 0, "message of a buffer without NUL: %zu x's, then '%.20s'", nx,
          x ? x + 15 + nx : "");

    /* Metrics that cannot be recorded stop the run, naming the plugin (they were cut or dropped). */
    saefw_loaded_plugin longname = experiment("longname", long_metric_after_step);
    CHECK(train(&longname, NULL, err, sizeof err) != 0 &&
              strstr(err, "plugin longname: metric name 'a_metric_name_that_is_far_longer") && strstr(err, "too long"),
          "a metric name too long: %s", err);
    printf("  %s\n", err);
    saefw_loaded_plugin many = experiment("many", many_metrics_after_step);
    CHECK(train(&many, NULL, err, sizeof err) != 0 && strstr(err, "plugin many: metric 'm32' is one more than the 32"),
          "too many metrics: %s", err);
    printf("  %s\n", err);
    return t_finish("test_plugin_crash");
}
