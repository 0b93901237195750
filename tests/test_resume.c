/* Exact resume: a small run on the bundled model (Adam, anthropic_resample, frequent checkpoints,
 * buffer refills, evaluations) is killed with SIGKILL during a step, during a checkpoint write, during
 * a buffer refill, and at random moments, then resumed with `saefw run --resume`, possibly several
 * times; its final weights and its metrics (all but the timing fields and time_s) must equal an uninterrupted
 * run's, bit for bit. The random phase prints its seed and fails if it killed nothing. Also: a corrupted newest checkpoint is skipped with a message naming it. */
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

static const char *BIN;
static const char *ARGS = "lua/resume_run.lua";

/* Run saefw with an optional fault spec; returns the wait status. Output goes to log. */
static int run_saefw(const char *run_dir, int resume, const char *fault, int kill_after_ms, const char *log) {
    fflush(stdout); /* the child must not repeat buffered output */
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        REQUIRE(freopen(log, "a", stdout) && freopen(log, "a", stderr), "redirect");
        if (fault) setenv("SAEFW_FAULT", fault, 1);
        else unsetenv("SAEFW_FAULT");
        if (resume) execl(BIN, BIN, "run", ARGS, "--run_dir", run_dir, "--resume", run_dir, (char *)NULL);
        else execl(BIN, BIN, "run", ARGS, "--run_dir", run_dir, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    if (kill_after_ms > 0) {
        for (int waited = 0; waited < kill_after_ms; waited += 5) {
            if (waitpid(pid, &st, WNOHANG) == pid) return st;
            usleep(5000);
        }
        kill(pid, SIGKILL);
    }
    waitpid(pid, &st, 0);
    return st;
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    size_t got = b ? fread(b, 1, (size_t)n, f) : 0;
    fclose(f);
    if (!b || got != (size_t)n) {
        free(b);
        return NULL;
    }
    b[n] = 0;
    if (len) *len = (size_t)n;
    return b;
}

/* metrics.jsonl without the fields that measure time. */
static char *metrics_without_timing(const char *run_dir) {
    char p[2048];
    snprintf(p, sizeof p, "%s/metrics.jsonl", run_dir);
    char *m = slurp(p, NULL);
    if (!m) return NULL;
    char *out = malloc(strlen(m) + 1), *w = out;
    for (char *r = m; *r;) {
        if (!strncmp(r, ",\"time_s\":{", 11)) { /* the run's time split: one flat object */
            while (*r && *r != '}') r++;
            if (*r) r++;
            continue;
        }
        if (!strncmp(r, ",\"tokens_per_s\":", 16) || !strncmp(r, ",\"elapsed_s\":", 13)) {
            r++;
            while (*r && *r != ',' && *r != '}') r++;
            continue;
        }
        *w++ = *r++;
    }
    *w = 0;
    free(m);
    return out;
}

static int same_run(const char *ref, const char *dir, const char *what) {
    char a[2048], b[2048];
    snprintf(a, sizeof a, "%s/final/sae_weights.safetensors", ref);
    snprintf(b, sizeof b, "%s/final/sae_weights.safetensors", dir);
    size_t la = 0, lb = 0;
    char *wa = slurp(a, &la), *wb = slurp(b, &lb);
    int weights = wa && wb && la == lb && memcmp(wa, wb, la) == 0;
    char *ma = metrics_without_timing(ref), *mb = metrics_without_timing(dir);
    int metrics = ma && mb && strcmp(ma, mb) == 0;
    printf("  %-44s weights %s, metrics %s\n", what, weights ? "identical" : "DIFFER",
           metrics ? "identical" : "DIFFER");
    CHECK(weights, "%s: final weights differ from the uninterrupted run", what);
    CHECK(metrics, "%s: metrics differ from the uninterrupted run", what);
    free(wa);
    free(wb);
    free(ma);
    free(mb);
    return weights && metrics;
}

static int killed(int st) { return WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL; }

/* Kill with each fault in turn (resuming after each), then resume to the end. */
static void scenario(const char *tmp, const char *ref, const char *name, const char *const *faults, int n) {
    char dir[2048], log[2100];
    snprintf(dir, sizeof dir, "%s/%s", tmp, name);
    snprintf(log, sizeof log, "%s/%s.log", tmp, name);
    for (int i = 0; i < n; i++) {
        int st = run_saefw(dir, i > 0, faults[i], 0, log);
        CHECK(killed(st), "%s: fault %s did not kill the run (status %d)", name, faults[i], st);
    }
    int st = run_saefw(dir, 1, NULL, 0, log);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: the resumed run failed (status %d); see %s", name, st, log);
    same_run(ref, dir, name);
}

int main(void) {
    BIN = getenv("SAEFW_BIN");
    REQUIRE(BIN && *BIN, "SAEFW_BIN is not set (run under ctest)");
    const char *tmp = t_tmpdir("test_resume");
    char ref[2048], log[2100];
    snprintf(ref, sizeof ref, "%s/reference", tmp);
    snprintf(log, sizeof log, "%s/reference.log", tmp);
    int st = run_saefw(ref, 0, NULL, 0, log);
    REQUIRE(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the reference run failed; see %s", log);

    static const char *const mid_step[] = {"step:40"};
    static const char *const in_checkpoint[] = {"checkpoint:3"};
    static const char *const in_refill[] = {"refill:5"};
    static const char *const several[] = {"step:9", "checkpoint:2", "refill:3", "step:25"};
    scenario(tmp, ref, "killed during a step", mid_step, 1);
    scenario(tmp, ref, "killed during a checkpoint write", in_checkpoint, 1);
    scenario(tmp, ref, "killed during a buffer refill", in_refill, 1);
    scenario(tmp, ref, "killed four times", several, 4);

    /* Random moments: SIGKILL after a random delay, resume, repeat until the run completes. The seed
     * is printed, and SAEFW_RESUME_SEED=<seed> repeats a failing draw. */
    const char *seed_env = getenv("SAEFW_RESUME_SEED");
    unsigned seed = seed_env && *seed_env ? (unsigned)strtoul(seed_env, NULL, 10) : (unsigned)time(NULL);
    printf("  random kills: seed %u (repeat with SAEFW_RESUME_SEED=%u)\n", seed, seed);
    srand(seed);
    char dir[2048];
    snprintf(dir, sizeof dir, "%s/random", tmp);
    snprintf(log, sizeof log, "%s/random.log", tmp);
    int kills = 0, resumed = 0;
    for (int attempt = 0; attempt < 40; attempt++) {
        /* Once the run folder exists always --resume: a run killed before its first checkpoint starts
         * over; before the folder exists there is nothing to resume (and --resume refuses a missing one). */
        struct stat sb;
        int again = stat(dir, &sb) == 0;
        st = run_saefw(dir, again, NULL, attempt < 6 ? 150 + rand() % 600 : 0, log);
        resumed += again;
        if (killed(st)) {
            kills++;
            continue;
        }
        break;
    }
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "random kills: the run did not complete; see %s", log);
    CHECK(kills > 0, "random kills (seed %u): no attempt was killed, so nothing was resumed; see %s", seed, log);
    char what[128];
    snprintf(what, sizeof what, "killed at %d random moments", kills);
    same_run(ref, dir, what);

    /* A corrupted newest checkpoint: resume falls back to the previous one, naming the bad file. */
    snprintf(dir, sizeof dir, "%s/corrupt", tmp);
    snprintf(log, sizeof log, "%s/corrupt.log", tmp);
    st = run_saefw(dir, 0, "step:60", 0, log);
    CHECK(killed(st), "corrupt: the run was not killed");
    char newest[2200] = "", cmd[4600];
    for (int v = 100; v >= 0 && !newest[0]; v--) {
        char p[2200];
        snprintf(p, sizeof p, "%s/%d/train_state.safetensors", dir, v);
        struct stat sb;
        if (stat(p, &sb) == 0) snprintf(newest, sizeof newest, "%s", p);
    }
    REQUIRE(newest[0], "no checkpoint with a training state in %s", dir);
    snprintf(cmd, sizeof cmd, "printf 'garbage!' | dd of='%s' bs=1 seek=4000 conv=notrunc status=none", newest);
    REQUIRE(system(cmd) == 0, "corrupting %s", newest);
    st = run_saefw(dir, 1, NULL, 0, log);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "corrupt: the resumed run failed; see %s", log);
    char *text = slurp(log, NULL);
    CHECK(text && strstr(text, "resume: skipping checkpoint") && strstr(text, "checksum mismatch"),
          "corrupt: no message about the damaged checkpoint in %s", log);
    free(text);
    same_run(ref, dir, "newest checkpoint corrupted");
    return t_finish("test_resume");
}
