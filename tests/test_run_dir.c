/* The run folder's guards, each on the saefw binary with a small synthetic run: one writer at a time
 * (two fresh runs at once, a --resume while the run goes on), --resume refusing a finished run, a
 * mistyped path and a run whose checkpoints are all damaged (nothing changed), starting over a run
 * killed before its first checkpoint, leftovers of killed checkpoint writers removed, metrics.jsonl
 * missing or cut short refused (never padded), and configuration changes refused unless named with
 * --allow-change, then recorded in metrics.jsonl and cfg.json; a run stopped by its on_log callback
 * ends properly. */
#include <dirent.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

static const char *BIN;
static const char *TMP;

/* Start `saefw run lua/resume_run.lua --source synthetic ARGS...` (NULL-terminated), output to log. */
static pid_t spawn(const char *log, const char *fault, ...) {
    const char *argv[32] = {BIN, "run", "lua/resume_run.lua", "--source", "synthetic"};
    int n = 5;
    va_list ap;
    va_start(ap, fault);
    for (const char *a; n < 31 && (a = va_arg(ap, const char *)) != NULL;) argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        /* Both streams append, so that neither writes over the other. */
        FILE *f = fopen(log, "w");
        if (!f || fclose(f) != 0 || !freopen(log, "a", stdout) || !freopen(log, "a", stderr)) _exit(126);
        if (fault) setenv("SAEFW_FAULT", fault, 1);
        else unsetenv("SAEFW_FAULT");
        execv(BIN, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static int wait_for(pid_t pid) {
    int st = 0;
    REQUIRE(waitpid(pid, &st, 0) == pid, "waitpid");
    return st;
}

static int ok(int st) { return WIFEXITED(st) && WEXITSTATUS(st) == 0; }
static int failed(int st) { return WIFEXITED(st) && WEXITSTATUS(st) != 0; }
static int killed(int st) { return WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL; }

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *b = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = (n + 4096 + 1) * 2;
            char *nb = realloc(b, cap);
            REQUIRE(nb, "out of memory");
            b = nb;
        }
        size_t got = fread(b + n, 1, 4096, f);
        n += got;
        if (got < 4096) break;
    }
    fclose(f);
    b[n] = 0;
    if (len) *len = n;
    return b;
}

static char *path_of(const char *fmt, ...) {
    static char buf[64][2048]; /* enough for the paths one scenario keeps */
    static int k = 0;
    char *p = buf[k++ % 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p, sizeof buf[0], fmt, ap);
    va_end(ap);
    return p;
}

static int exists(const char *p) {
    struct stat st;
    return lstat(p, &st) == 0;
}

static int count(const char *text, const char *what) {
    int n = 0;
    for (const char *p = text; text && (p = strstr(p, what)) != NULL; p++) n++;
    return n;
}

/* The log of a run holds `what`. */
static int log_has(const char *log, const char *what) {
    char *t = slurp(log, NULL);
    int has = t && strstr(t, what);
    if (!has) fprintf(stderr, "--- %s (expected \"%s\"):\n%s\n", log, what, t ? t : "(missing)");
    free(t);
    return has;
}

/* A run killed by a fault (a step or a checkpoint write); returns its folder. */
static const char *killed_run(const char *name, const char *fault) {
    const char *dir = path_of("%s/%s", TMP, name);
    int st = wait_for(spawn(path_of("%s/%s.0.log", TMP, name), fault, "--run_dir", dir, NULL));
    REQUIRE(killed(st), "%s: the fault %s did not kill the run (status %d)", name, fault, st);
    return dir;
}

/* Two fresh runs started together, then a --resume while a run goes on: one writer each time. */
static void two_writers(void) {
    const char *dir = path_of("%s/together", TMP);
    const char *la = path_of("%s/together.a.log", TMP), *lb = path_of("%s/together.b.log", TMP);
    pid_t a = spawn(la, NULL, "--run_dir", dir, "--steps", "300", NULL);
    pid_t b = spawn(lb, NULL, "--run_dir", dir, "--steps", "300", NULL);
    int sa = wait_for(a), sb = wait_for(b);
    CHECK(ok(sa) + ok(sb) == 1 && (failed(sa) || failed(sb)), "two fresh runs: statuses %d and %d (one must fail)", sa,
          sb);
    const char *loser = ok(sa) ? lb : la;
    pid_t winner = ok(sa) ? a : b;
    /* The loser either met the lock or, if the winner had finished already, the finished run. */
    char *t = slurp(loser, NULL);
    char want[128];
    snprintf(want, sizeof want, "is in use by saefw process %ld", (long)winner);
    CHECK(t && (strstr(t, want) || strstr(t, "already holds")), "two fresh runs: the second gave no clear refusal:\n%s",
          t ? t : "");
    if (t && strstr(t, want)) printf("  two fresh runs at once: the second refused: \"%s\"\n", want);
    free(t);
    char *m = slurp(path_of("%s/metrics.jsonl", dir), NULL);
    CHECK(count(m, "\"event\":\"end\"") == 1 && count(m, "\"event\":\"log\",\"step\":0,") == 1,
          "two fresh runs: metrics.jsonl holds %d end events and %d lines of step 0", count(m, "\"event\":\"end\""),
          count(m, "\"event\":\"log\",\"step\":0,"));
    free(m);

    /* --resume while the run goes on. */
    dir = path_of("%s/during", TMP);
    la = path_of("%s/during.a.log", TMP);
    lb = path_of("%s/during.b.log", TMP);
    a = spawn(la, NULL, "--run_dir", dir, "--steps", "300", NULL);
    int started = 0;
    for (int i = 0; i < 2000 && !started; i++) {
        char *mm = slurp(path_of("%s/metrics.jsonl", dir), NULL);
        started = mm && count(mm, "\n") >= 3;
        free(mm);
        if (!started) usleep(5000);
    }
    CHECK(started, "resume during a run: the first run never wrote its metrics");
    int sr = wait_for(spawn(lb, NULL, "--run_dir", dir, "--resume", dir, "--steps", "300", NULL));
    sa = wait_for(a);
    snprintf(want, sizeof want, "is in use by saefw process %ld", (long)a);
    CHECK(failed(sr) && log_has(lb, want), "resume during a run: status %d, not refused naming PID %ld", sr, (long)a);
    CHECK(ok(sa), "resume during a run: the running one failed (status %d); see %s", sa, la);
    m = slurp(path_of("%s/metrics.jsonl", dir), NULL);
    CHECK(count(m, "\"event\":\"end\"") == 1 && count(m, "\"event\":\"log\",\"step\":0,") == 1,
          "resume during a run: metrics.jsonl mixed");
    free(m);
}

/* Resumes that have nothing to resume: refused, the folder left as it was. */
static void nothing_to_resume(void) {
    const char *dir = path_of("%s/finished", TMP), *log = path_of("%s/finished.log", TMP);
    REQUIRE(ok(wait_for(spawn(log, NULL, "--run_dir", dir, NULL))), "the finished run failed; see %s", log);
    size_t lm = 0, lw = 0;
    char *m0 = slurp(path_of("%s/metrics.jsonl", dir), &lm);
    char *w0 = slurp(path_of("%s/final/sae_weights.safetensors", dir), &lw);
    int st = wait_for(spawn(log, NULL, "--run_dir", dir, "--resume", dir, NULL));
    CHECK(failed(st) && log_has(log, "that run has finished (its end event is at step 119)"),
          "--resume on a finished run: status %d", st);
    size_t lm1 = 0, lw1 = 0;
    char *m1 = slurp(path_of("%s/metrics.jsonl", dir), &lm1);
    char *w1 = slurp(path_of("%s/final/sae_weights.safetensors", dir), &lw1);
    CHECK(m0 && m1 && lm == lm1 && !memcmp(m0, m1, lm) && w0 && w1 && lw == lw1 && !memcmp(w0, w1, lw),
          "--resume on a finished run changed its metrics or final weights");
    free(m0);
    free(m1);
    free(w0);
    free(w1);

    const char *typo = path_of("%s/finsihed", TMP);
    st = wait_for(spawn(log, NULL, "--run_dir", typo, "--resume", typo, NULL));
    CHECK(failed(st) && log_has(log, "no such run folder") && !exists(typo), "--resume on a mistyped path: status %d",
          st);

    /* Every checkpoint damaged: refused rather than started over. */
    dir = killed_run("damaged", "step:60");
    DIR *d = opendir(dir);
    REQUIRE(d, "%s", dir);
    struct dirent *e;
    int damaged = 0;
    while ((e = readdir(d)))
        if (e->d_name[0] >= '0' && e->d_name[0] <= '9') {
            const char *p = path_of("%s/%s/train_state.safetensors", dir, e->d_name);
            if (exists(p)) damaged += truncate(p, 100) == 0;
        }
    closedir(d);
    REQUIRE(damaged > 0, "no training state to damage in %s", dir);
    char *m = slurp(path_of("%s/metrics.jsonl", dir), &lm);
    log = path_of("%s/damaged.log", TMP);
    st = wait_for(spawn(log, NULL, "--run_dir", dir, "--resume", dir, NULL));
    CHECK(failed(st) && log_has(log, "refusing to start over on top of its checkpoints"),
          "--resume with every checkpoint damaged: status %d", st);
    m1 = slurp(path_of("%s/metrics.jsonl", dir), &lm1);
    CHECK(m && m1 && lm == lm1 && !memcmp(m, m1, lm), "--resume with every checkpoint damaged changed metrics.jsonl");
    free(m);
    free(m1);

    /* A fresh start in a folder that holds something else. */
    dir = path_of("%s/occupied", TMP);
    REQUIRE(mkdir(dir, 0755) == 0, "mkdir %s", dir);
    FILE *f = fopen(path_of("%s/notes.txt", dir), "w");
    REQUIRE(f && fputs("mine\n", f) >= 0 && fclose(f) == 0, "notes.txt");
    st = wait_for(spawn(log, NULL, "--run_dir", dir, NULL));
    CHECK(failed(st) && log_has(log, "is not empty (it holds 'notes.txt')"), "fresh start in a used folder: status %d",
          st);
    st = wait_for(spawn(log, NULL, "--run_dir", dir, "--resume", dir, NULL));
    CHECK(failed(st) && log_has(log, "holds notes.txt but no checkpoint"), "--resume on a folder of other files: %d",
          st);
}

/* Killed before its first checkpoint: --resume starts over, saying so. Killed during a checkpoint
 * write: the writer's leftover folder goes at the resume. */
static void start_over_and_leftovers(void) {
    const char *dir = killed_run("early", "step:3");
    const char *log = path_of("%s/early.log", TMP);
    int st = wait_for(spawn(log, NULL, "--run_dir", dir, "--resume", dir, NULL));
    CHECK(ok(st) &&
              log_has(log, "has no checkpoint yet (the run stopped before its first one); starting from the beginning"),
          "--resume before the first checkpoint: status %d", st);
    char *m = slurp(path_of("%s/metrics.jsonl", dir), NULL);
    CHECK(count(m, "\"event\":\"log\",\"step\":0,") == 1 && count(m, "\"event\":\"end\"") == 1,
          "start over: metrics.jsonl mixes two runs");
    free(m);

    dir = killed_run("leftover", "checkpoint:2");
    char left[2048] = "";
    DIR *d = opendir(dir);
    REQUIRE(d, "%s", dir);
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) snprintf(left, sizeof left, "%s/%s", dir, e->d_name);
    closedir(d);
    REQUIRE(left[0], "the killed checkpoint write left no .tmp. folder in %s", dir);
    log = path_of("%s/leftover.log", TMP);
    st = wait_for(spawn(log, NULL, "--run_dir", dir, "--resume", dir, NULL));
    CHECK(ok(st) && !exists(left) && log_has(log, "(no longer running)"), "leftover %s: status %d, still there: %d",
          left, st, exists(left));
    printf("  removed at resume: %s\n", strrchr(left, '/') + 1);

    /* A writer killed between moving the previous checkpoint aside and renaming the new one into
     * place: the previous one comes back from its .old folder. */
    dir = killed_run("moved_aside", "step:60");
    long newest = -1;
    d = opendir(dir);
    REQUIRE(d, "%s", dir);
    while ((e = readdir(d)))
        if (e->d_name[0] >= '0' && e->d_name[0] <= '9' && atol(e->d_name) > newest) newest = atol(e->d_name);
    closedir(d);
    pid_t gone = fork(); /* a PID that surely runs no more */
    REQUIRE(gone >= 0, "fork");
    if (gone == 0) _exit(0);
    REQUIRE(waitpid(gone, NULL, 0) == gone, "waitpid");
    const char *ck = path_of("%s/%ld", dir, newest), *old = path_of("%s/%ld.old.%ld", dir, newest, (long)gone);
    REQUIRE(newest >= 0 && rename(ck, old) == 0, "moving %s aside", ck);
    log = path_of("%s/moved_aside.log", TMP);
    st = wait_for(spawn(log, NULL, "--run_dir", dir, "--resume", dir, NULL));
    CHECK(ok(st) && !exists(old) && exists(ck) && log_has(log, path_of("restored %s from", ck)),
          "a checkpoint moved aside: status %d, not restored", st);
}

/* metrics.jsonl cut short or missing at a resume: refused, never padded. */
static void damaged_metrics(void) {
    const char *dir = killed_run("short", "step:60");
    const char *mp = path_of("%s/metrics.jsonl", dir), *log = path_of("%s/short.log", TMP);
    REQUIRE(truncate(mp, 300) == 0, "truncate %s", mp);
    int st = wait_for(spawn(log, NULL, "--run_dir", dir, "--resume", dir, NULL));
    size_t n = 0;
    char *m = slurp(mp, &n);
    CHECK(failed(st) && log_has(log, "bytes, but the checkpoint recorded") && n == 300 && m && strlen(m) == n,
          "metrics.jsonl cut short: status %d, now %zu bytes", st, n);
    free(m);

    REQUIRE(unlink(mp) == 0, "unlink %s", mp);
    st = wait_for(spawn(log, NULL, "--run_dir", dir, "--resume", dir, NULL));
    CHECK(failed(st) && log_has(log, "metrics.jsonl is missing") && !exists(mp), "metrics.jsonl missing: status %d",
          st);
}

/* A resume with another configuration: refused, unless each change is named; then recorded. */
static void config_changes(void) {
    const char *dir = killed_run("changed", "step:60");
    const char *log = path_of("%s/changed.log", TMP);
    int st = wait_for(spawn(log, NULL, "--run_dir", dir, "--resume", dir, "--seed", "6", NULL));
    CHECK(failed(st) && log_has(log, "seed 5 -> 6") && log_has(log, "--allow-change"), "changed seed: status %d", st);
    st = wait_for(spawn(log, NULL, "--run_dir", dir, "--resume", dir, "--resample", "false", NULL));
    CHECK(failed(st) && log_has(log, "plugins \"adam, anthropic_resample\" -> \"adam\""), "plugin dropped: status %d",
          st);
    st =
        wait_for(spawn(log, NULL, "--run_dir", dir, "--resume", dir, "--steps", "150", "--allow-change", "seed", NULL));
    CHECK(failed(st) && log_has(log, "steps 120 -> 150"), "a change not named: status %d", st);

    st = wait_for(
        spawn(log, NULL, "--run_dir", dir, "--resume", dir, "--steps", "150", "--allow-change", "steps", NULL));
    CHECK(ok(st) && log_has(log, "resume: \"steps\" changed from 120 to 150"), "allowed change: status %d", st);
    char *m = slurp(path_of("%s/metrics.jsonl", dir), NULL);
    CHECK(m && strstr(m, "{\"event\":\"config_change\",\"step\":") &&
              strstr(m, "\"key\":\"train.steps\",\"from\":120,\"to\":150}") &&
              strstr(m, "\"event\":\"end\",\"step\":149,"),
          "metrics.jsonl lacks the change or the run's end");
    free(m);
    char *c = slurp(path_of("%s/final/cfg.json", dir), NULL);
    CHECK(c && strstr(c, "\"config_changes\"") && strstr(c, "\"key\":\t\"steps\""),
          "final/cfg.json lacks the change:\n%s", c ? c : "(missing)");
    free(c);

    st = system(path_of("'%s' run lua/resume_run.lua --allow-change lr > '%s' 2>&1", BIN, log));
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2 && log_has(log, "applies to a resumed run only"),
          "--allow-change without --resume: status %d", st);
}

/* on_log returning false: the run ends after that step with a final checkpoint and an end event that
 * name the callback, and exits 0 with the real figures. */
static void stopped_by_callback(void) {
    const char *dir = path_of("%s/stopped", TMP), *log = path_of("%s/stopped.log", TMP);
    int st = system(path_of("'%s' run lua/stop_early.lua --run_dir '%s' > '%s' 2>&1", BIN, dir, log));
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "stopped run: status %d", st);
    CHECK(log_has(log, "the on_log callback stopped the run after step 20 of 100") &&
              log_has(log, "stopped_by on_log steps_done 21 loss "),
          "stopped run: no message or result");
    char *t = slurp(log, NULL);
    CHECK(t && !strstr(t, "loss 0 ") && exists(path_of("%s/final/sae_weights.safetensors", dir)),
          "stopped run: a loss of 0 or no final checkpoint");
    free(t);
    char *m = slurp(path_of("%s/metrics.jsonl", dir), NULL);
    CHECK(m && strstr(m, "{\"event\":\"end\",\"step\":20,\"tokens\":1344,\"stopped_by\":\"on_log\""),
          "stopped run: no end event naming the callback:\n%s", m ? m : "(missing)");
    free(m);
}

int main(void) {
    BIN = getenv("SAEFW_BIN");
    REQUIRE(BIN && *BIN, "SAEFW_BIN is not set (run under ctest)");
    TMP = t_tmpdir("test_run_dir");
    two_writers();
    nothing_to_resume();
    start_over_and_leftovers();
    damaged_metrics();
    config_changes();
    stopped_by_callback();
    return t_finish("test_run_dir");
}
