/* Signals during evaluation (issue 18, point 5): a run with a long reconstruction evaluation gets
 * SIGTERM in it and ends within seconds with a checkpoint that resumes; evaluation counts past their
 * bound are refused naming the key. */
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"
#include "util.h"

static char out[1 << 16];

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

int main(void) {
    const char *bin = getenv("SAEFW_BIN");
    REQUIRE(bin && *bin, "SAEFW_BIN is not set (run under ctest)");
    const char *tmp = t_tmpdir("test_stop");
    char dir[2048], logp[2100], probe[2100];
    snprintf(dir, sizeof dir, "%s/run", tmp);
    snprintf(logp, sizeof logp, "%s/run.log", tmp);
    snprintf(probe, sizeof probe, "%s/metrics.jsonl", dir);

    /* The first evaluation (after step 0) scores 10000 model batches: minutes, unless stopped. */
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        REQUIRE(freopen(logp, "w", stderr) && freopen(logp, "a", stdout), "redirect");
        execl(bin, bin, "run", "../experiments/quickstart.lua", "--num_tokens", "1e5", "--buffer_mult", "8",
              "--recons_batches", "10000", "--report_tokens", "0", "--run_dir", dir, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 1200 && file_size(probe) <= 0; i++) usleep(100000);
    CHECK(file_size(probe) > 0, "no metrics line after 120 s");
    usleep(1500000); /* well into the evaluation */
    double t0 = saefw_now();
    kill(pid, SIGTERM);
    int st = 0;
    waitpid(pid, &st, 0);
    double dt = saefw_now() - t0;
    t_run(out, sizeof out, "cat %s", logp);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) != 0, "SIGTERM: status %d\n%s", st, out);
    CHECK(dt < 5, "SIGTERM during the evaluation: exit after %.1f s", dt);
    CHECK(strstr(out, "interrupted by SIGTERM after 1 steps; checkpoint saved to"), "SIGTERM message:\n%s", out);
    char ck[2200];
    snprintf(ck, sizeof ck, "%s/0/train_state.safetensors", dir);
    CHECK(file_size(ck) > 0, "no training state in %s/0:\n%s", dir, out);
    printf("  SIGTERM during the evaluation: exit %d after %.2f s, checkpoint %s/0\n", WEXITSTATUS(st), dt, dir);

    /* The checkpoint resumes, with a sane evaluation this time (a change that must be named). */
    int rc = t_run(out, sizeof out,
                   "%s run ../experiments/quickstart.lua --num_tokens 1e5 --buffer_mult 8 --recons_batches 1 "
                   "--report_tokens 0 --resume %s --allow-change recons_batches",
                   bin, dir);
    CHECK(rc == 0 && strstr(out, "resumed at step 1 of"), "resume: rc %d\n%s", rc, out);

    /* Counts past their bound are refused, naming the key. */
    rc = t_run(out, sizeof out, "%s run ../experiments/quickstart.lua --recons_batches 20000 --run_dir %s/b", bin, tmp);
    CHECK(rc != 0 && strstr(out, "recons_batches = 20000 is more than 10000"), "recons_batches 20000: rc %d\n%s", rc,
          out);
    rc = t_run(out, sizeof out, "%s run lua/freq_batches_bound.lua", bin);
    CHECK(rc != 0 && strstr(out, "freq_batches = 1000000 is more than 10000"), "freq_batches: rc %d\n%s", rc, out);
    return t_finish("test_stop");
}
