/* Signals during a buffer refill (issue 18, point 5): with each piece of the refill slowed to stand
 * in for a large model's forward (SAEFW_SLOW=refill:MS), SIGTERM in the middle of a refill ends the
 * run within a second with a checkpoint of the last completed step and no trace of the refill in the
 * buffer's position or the token stream; metrics.jsonl ends saying so; the resumed run ends with the
 * same weights, to the bit, as a run never interrupted. Also the bounds of the counts a user sets. */
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "state.h"
#include "testutil.h"
#include "util.h"

static char out[1 << 16];

static int has_line(const char *path, const char *needle) {
    char *text = NULL;
    size_t len = 0;
    if (saefw_read_file(path, &text, &len, NULL, 0) != 0) return 0;
    int yes = strstr(text, needle) != NULL;
    free(text);
    return yes;
}

static int64_t state_i64(const char *path, const char *name) {
    saefw_state_in st;
    char err[512];
    int64_t v = -1;
    if (saefw_state_open(path, &st, err, sizeof err) != 0) return -1;
    if (saefw_state_get_i64(&st, name, &v, err, sizeof err) != 0) v = -1;
    saefw_state_close(&st);
    return v;
}

/* The quickstart on the bundled model, small: batch 1024 in a buffer of 8192 rows, refilled by 4096
 * rows (8 pieces of 512, one model batch of 32 sequences) with the batch of steps 3, 7, 11, ...;
 * a metrics line after every step. */
#define ARGS                                                                                                           \
    "../experiments/quickstart.lua --num_tokens 2e4 --buffer_mult 8 --recons_batches 1 --report_tokens 0 "             \
    "--log_every 1"

int main(void) {
    const char *bin = getenv("SAEFW_BIN");
    REQUIRE(bin && *bin, "SAEFW_BIN is not set (run under ctest)");
    const char *tmp = t_tmpdir("test_stop_refill");
    char ref[2048], dir[2048], logp[2100], probe[2100], ck[2200], want[2200], got[2200];
    T_FMT(ref, "%s/ref", tmp);
    T_FMT(dir, "%s/run", tmp);
    T_FMT(logp, "%s/run.log", tmp);
    T_FMT(probe, "%s/metrics.jsonl", dir);

    /* The run never interrupted (not slowed: the slowing changes no value). */
    int rc = t_run(out, sizeof out, "%s run " ARGS " --run_dir %s", bin, ref);
    REQUIRE(rc == 0, "reference run: rc %d\n%s", rc, out);

    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        REQUIRE(freopen(logp, "w", stderr) && freopen(logp, "a", stdout), "redirect");
        setenv("SAEFW_SLOW", "refill:300", 1); /* 8 pieces: 2.4 s for the refill */
        execl(bin, bin, "run", "../experiments/quickstart.lua", "--num_tokens", "2e4", "--buffer_mult", "8",
              "--recons_batches", "1", "--report_tokens", "0", "--log_every", "1", "--run_dir", dir, (char *)NULL);
        _exit(127);
    }
    /* Step 6's line is written just before step 7 reads its batch and starts the second refill. */
    for (int i = 0; i < 1800 && !has_line(probe, "\"step\":6,"); i++) usleep(100000);
    CHECK(has_line(probe, "\"step\":6,"), "no metrics line of step 6 after 180 s");
    usleep(800000); /* well into the refill's 2.4 s */
    double t0 = saefw_now();
    kill(pid, SIGTERM);
    int st = 0;
    waitpid(pid, &st, 0);
    double dt = saefw_now() - t0;
    t_run(out, sizeof out, "cat %s", logp);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) != 0, "SIGTERM: status %d\n%s", st, out);
    CHECK(dt < 1.0, "SIGTERM during the refill: exit after %.2f s\n%s", dt, out);
    CHECK(strstr(out, "interrupted by SIGTERM after 7 steps; checkpoint saved to"), "SIGTERM message:\n%s", out);
    printf("  SIGTERM during the refill: exit %d after %.2f s\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1, dt);

    /* Step 7 is dropped with the refill its batch started: the checkpoint holds the buffer as after
     * step 6 and the stream where the first refill left it (8192 + 4096 rows: three model batches of
     * 32 sequences). */
    T_FMT(ck, "%s/0/train_state.safetensors", dir);
    CHECK(state_i64(ck, "run/next_step") == 7, "checkpoint step %lld", (long long)state_i64(ck, "run/next_step"));
    CHECK(state_i64(ck, "buffer/pointer") == 3072 && state_i64(ck, "buffer/refills") == 2,
          "buffer in the checkpoint: pointer %lld, refills %lld (want 3072, 2: as after step 6)",
          (long long)state_i64(ck, "buffer/pointer"), (long long)state_i64(ck, "buffer/refills"));
    CHECK(state_i64(ck, "source/cursor") == 96 && state_i64(ck, "source/pass") == 0,
          "token stream in the checkpoint: row %lld of pass %lld (want 96 of 0: the stopped refill left a trace)",
          (long long)state_i64(ck, "source/cursor"), (long long)state_i64(ck, "source/pass"));
    rc = t_run(out, sizeof out, "tail -n 1 %s", probe);
    CHECK(strstr(out, "\"event\":\"interrupted\",\"step\":7,\"signal\":\"SIGTERM\",\"checkpoint_saved\":true"),
          "last line of metrics.jsonl: %s", out);

    /* The resume, slowed too, ends with the same bits as the run never interrupted. */
    rc = t_run(out, sizeof out, "SAEFW_SLOW=refill:1 %s run " ARGS " --resume %s", bin, dir);
    CHECK(rc == 0 && strstr(out, "resumed at step 7 of"), "resume: rc %d\n%s", rc, out);
    T_FMT(want, "%s/final/sae_weights.safetensors", ref);
    T_FMT(got, "%s/final/sae_weights.safetensors", dir);
    rc = t_run(out, sizeof out, "cmp %s %s", want, got);
    CHECK(rc == 0, "the resumed run's weights differ from the uninterrupted run's:\n%s", out);
    printf("  resumed at step 7: final weights %s the uninterrupted run's\n", rc == 0 ? "equal to" : "differ from");

    /* Counts past their bounds: one line naming the key, before any work. */
    static const char *const bounds[][2] = {
        {"buffer_size",
         "saefw.buffer: buffer: size = 9000000000000000 rows of width 2048 is more than memory can address"},
        {"model_batch_size", "model_batch_size = 100000 sequences is not in 1 .. 65536"},
        {"reinit_batches", "plugin reinit_dead: option 'batches' must be >= 1 and <= 10000, got 1e+06"},
    };
    for (size_t i = 0; i < sizeof bounds / sizeof *bounds; i++) {
        rc = t_run(out, sizeof out, "%s run lua/count_bounds.lua --case %s", bin, bounds[i][0]);
        CHECK(rc != 0 && strstr(out, bounds[i][1]), "%s: rc %d\n%s", bounds[i][0], rc, out);
    }
    return t_finish("test_stop_refill");
}
