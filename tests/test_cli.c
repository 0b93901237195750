/* The saefw command line, end to end: version/help/plugins/info, config overrides and their errors,
 * Lua errors with file:line, a short training run with checkpoints and metrics, an activation file
 * of the wrong width, a NaN loss that keeps the last good checkpoint, and SIGINT saving a checkpoint. */
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

static const char *BIN;
static char out[65536];

#define EXPECT(rc_cond, phrase, ...)                                                                                   \
    do {                                                                                                               \
        int rc_ = t_run(out, sizeof out, __VA_ARGS__);                                                                 \
        int ok_ = (rc_cond) && strstr(out, phrase) != NULL;                                                            \
        CHECK(ok_, "command exited %d; output lacks '%s' or status wrong:\n%s", rc_, phrase, out);                     \
        if (ok_) printf("  ok (exit %d): %s\n", rc_, phrase);                                                          \
    } while (0)

static int exists(const char *fmt, const char *a) {
    char p[2048];
    snprintf(p, sizeof p, fmt, a);
    struct stat st;
    return stat(p, &st) == 0;
}

int main(void) {
    BIN = getenv("SAEFW_BIN");
    REQUIRE(BIN && *BIN, "SAEFW_BIN is not set (run under ctest)");
    const char *tmp = t_tmpdir("test_cli");
    char dir[2048];

    EXPECT(rc_ == 0, "plugin ABI", "%s version", BIN);
    EXPECT(rc_ == 0, "run SCRIPT.lua", "%s --help", BIN);
    EXPECT(rc_ != 0, "unknown command 'frobnicate'", "%s frobnicate", BIN);
    EXPECT(rc_ == 0, "weight_decay", "%s plugins", BIN);
    CHECK(strstr(out, "adam") && strstr(out, "sgd") && strstr(out, "optimizer"), "plugins listing:\n%s", out);

    /* Overrides reach the config, with the default's type. */
    EXPECT(rc_ == 0, "lr=0.0002 (float)", "%s run lua/print_config.lua --lr 2e-4", BIN);
    EXPECT(rc_ == 0, "batch_size=128 (integer)", "%s run lua/print_config.lua --batch_size=128 --name x", BIN);
    CHECK(strstr(out, "name=x (string)"), "name override: %s", out);
    EXPECT(rc_ == 0, "remove_rare_dir=true (boolean)", "%s run lua/print_config.lua --remove_rare_dir true", BIN);
    EXPECT(rc_ != 0, "unknown config key '--nonexistent' (valid keys: batch_size, lr, name, remove_rare_dir)",
           "%s run lua/print_config.lua --nonexistent 1", BIN);
    EXPECT(rc_ != 0, "lua/print_config.lua:3: --lr: expected a number, got 'abc'",
           "%s run lua/print_config.lua --lr abc", BIN);
    EXPECT(rc_ != 0, "--batch_size: expected an integer, got '1.5'", "%s run lua/print_config.lua --batch_size 1.5",
           BIN);
    EXPECT(rc_ != 0, "--remove_rare_dir: expected true or false", "%s run lua/print_config.lua --remove_rare_dir maybe",
           BIN);
    EXPECT(rc_ != 0, "unexpected argument 'stray'", "%s run lua/print_config.lua stray", BIN);

    /* Lua errors name the file and line. */
    EXPECT(rc_ != 0, "lua/syntax_error.lua:3:", "%s run lua/syntax_error.lua", BIN);
    EXPECT(rc_ != 0, "lua/runtime_error.lua:4: saefw.sae: field 'd_in' must be a number, got string",
           "%s run lua/runtime_error.lua", BIN);
    EXPECT(rc_ != 0, "cannot read the script", "%s run lua/no_such_script.lua", BIN);

    /* A short run: progress lines, checkpoints, metrics, and the checkpoint loads back. */
    snprintf(dir, sizeof dir, "%s/run1", tmp);
    EXPECT(rc_ == 0, "done steps=200 logs=4",
           "%s run lua/train_small.lua --run_dir %s --checkpoint_every 100 --lr 2e-3", BIN, dir);
    CHECK(strstr(out, "reloaded d_in=16 d_sae=64 lr=0.002"), "reload: %s", out);
    CHECK(strstr(out, "step 150/200") && strstr(out, "tok/s") && strstr(out, "ETA"), "no progress lines:\n%s", out);
    CHECK(exists("%s/0/cfg.json", dir) && exists("%s/final/sae_weights.safetensors", dir), "checkpoints missing in %s",
          dir);
    CHECK(!exists("%s/1", dir), "a checkpoint at the last step should be 'final' only");
    char mpath[2100];
    snprintf(mpath, sizeof mpath, "%s/metrics.jsonl", dir);
    char *m = NULL;
    FILE *mf = fopen(mpath, "r");
    if (mf) {
        m = calloc(1, 1 << 16);
        size_t n = fread(m, 1, (1 << 16) - 1, mf);
        m[n] = 0;
        fclose(mf);
    }
    CHECK(m && strstr(m, "\"l2_loss\"") && strstr(m, "\"explained_variance\"") && strstr(m, "\"below_1e-5\"") &&
              strstr(m, "\"event\":\"end\""),
          "metrics.jsonl incomplete:\n%s", m ? m : "(missing)");
    free(m);
    EXPECT(rc_ != 0, "already holds a finished run (its end event is at step 199); choose another run_dir",
           "%s run lua/train_small.lua --run_dir %s", BIN, dir);
    EXPECT(rc_ == 0, "W_enc", "%s info %s/final/sae_weights.safetensors", BIN, dir);
    CHECK(strstr(out, "[16, 64]"), "info lacks the shape:\n%s", out);
    EXPECT(rc_ != 0, "no_such_file", "%s info %s/no_such_file.safetensors", BIN, tmp);

    /* --threads: reaches the engine, and the run's result does not depend on it. */
    EXPECT(rc_ != 0, "saefw run: --threads: expected a whole number from 1 to 4096, got '0'",
           "%s run lua/train_small.lua --threads 0 --run_dir %s/t0", BIN, tmp);
    EXPECT(rc_ != 0, "--threads: expected a whole number from 1 to 4096, got 'many'",
           "%s run lua/train_small.lua --threads many --run_dir %s/t0", BIN, tmp);
    EXPECT(rc_ != 0, "saefw.threads: expected a whole number from 0 (the default) to 4096, got -2",
           "%s run lua/print_config.lua --threads 1 && echo 'require(\"saefw\").threads(-2)' > %s/th.lua && %s run "
           "%s/th.lua",
           BIN, tmp, BIN, tmp);
    char loss1[128] = "", loss3[128] = "";
    EXPECT(rc_ == 0, "threads=1 final loss", "%s run lua/train_small.lua --threads 1 --run_dir %s/t1", BIN, tmp);
    const char *l = strstr(out, "final loss");
    if (l) sscanf(l, "final loss %127s", loss1);
    EXPECT(rc_ == 0, "threads=3 final loss", "%s run lua/train_small.lua --threads=3 --run_dir %s/t3", BIN, tmp);
    l = strstr(out, "final loss");
    if (l) sscanf(l, "final loss %127s", loss3);
    CHECK(loss1[0] && !strcmp(loss1, loss3), "final loss with 1 thread '%s', with 3 '%s'", loss1, loss3);
    printf("  final loss with 1 and 3 threads: %s, %s\n", loss1, loss3);

    /* Activation files: width mismatch, and NaN activations stopping the run. */
    char npy[2100];
    snprintf(npy, sizeof npy, "%s/acts8.npy", tmp);
    {
        static float a[2000 * 8];
        for (int i = 0; i < 2000 * 8; i++) a[i] = (float)((i * 7919) % 13) / 13.0f;
        int64_t shape[2] = {2000, 8};
        char err[512];
        REQUIRE(saefw_npy_write(npy, SAEFW_DT_F32, 2, shape, a, err, sizeof err) == 0, "%s", err);
    }
    EXPECT(rc_ != 0, "activation width is 8, expected d_in = 16",
           "%s run lua/train_small.lua --activations %s --run_dir %s/w", BIN, npy, tmp);
    snprintf(npy, sizeof npy, "%s/acts_nan.npy", tmp);
    {
        static float a[4000 * 16];
        for (int i = 0; i < 4000 * 16; i++) a[i] = i >= 1024 * 16 ? NAN : (float)((i * 7919) % 17) / 17.0f - 0.5f;
        int64_t shape[2] = {4000, 16};
        char err[512];
        REQUIRE(saefw_npy_write(npy, SAEFW_DT_F32, 2, shape, a, err, sizeof err) == 0, "%s", err);
    }
    snprintf(dir, sizeof dir, "%s/run_nan", tmp);
    EXPECT(rc_ != 0, "the loss is NaN; training stopped (last good checkpoint: ",
           "%s run lua/train_small.lua --activations %s --run_dir %s --checkpoint_every 4", BIN, npy, dir);
    CHECK(exists("%s/0/sae_weights.safetensors", dir) && !exists("%s/final", dir), "NaN run checkpoints wrong in %s",
          dir);

    /* Event callbacks: false stops the run after that step, an error names the callback's line; and
     * overrides for a script that never calls saefw.config{} are refused. */
    EXPECT(rc_ == 0, "stopped by on_log: steps_done=21", "%s run lua/train_events.lua", BIN);
    CHECK(strstr(out, "on_eval error: ok=false evals=2 ") && strstr(out, "train_events.lua:18: boom at step 50"),
          "on_eval error not reported at its line:\n%s", out);
    EXPECT(rc_ == 2, "never calls saefw.config{}, so --lr cannot be applied", "%s run lua/train_events.lua --lr 1",
           BIN);

    /* saefw analyze: frequencies from the synthetic source named in cfg.json, histograms, SVG. */
    snprintf(dir, sizeof dir, "%s/toy", tmp);
    EXPECT(rc_ == 0, "MMCS", "%s run ../experiments/toy.lua --steps 300 --run_dir %s", BIN, dir);
    EXPECT(rc_ == 0, "activations from the synthetic source of its config", "%s analyze %s/final --batches 4", BIN,
           dir);
    CHECK(strstr(out, "log10 feature frequency") && strstr(out, "below 1e-5") && strstr(out, "histograms written to"),
          "analyze output:\n%s", out);
    CHECK(exists("%s/final/freq_hist.svg", dir), "no SVG written");
    EXPECT(rc_ != 0, "unknown option --bogus", "%s analyze %s/final --bogus 1", BIN, dir);
    EXPECT(rc_ != 0, "no such file or folder", "%s analyze %s/nothing_here", BIN, dir);

    /* experiments/baseline.lua end to end, with gelu-1l resolved through a Hugging Face cache that
     * holds a small stand-in model of the family (tests/fixtures/model: 2 layers, d_vocab 50). */
    {
        char hub[2048], snap[2300], cmd[8192], toks[2100];
        snprintf(hub, sizeof hub, "%s/hfhome/hub/models--NeelNanda--GELU_1L512W_C4_Code", tmp);
        snprintf(snap, sizeof snap, "%s/snapshots/0123abcd", hub);
        T_FMT(cmd,
              "mkdir -p '%s/refs' '%s' && printf 0123abcd > '%s/refs/main' && cp fixtures/model/config.json '%s/' && "
              "cp fixtures/model/model.pth '%s/model_final.pth'",
              hub, snap, hub, snap, snap);
        REQUIRE(system(cmd) == 0, "fake cache");
        static int32_t t[4000];
        for (int i = 0; i < 4000; i++) t[i] = (i * 7 + i / 13) % 50;
        int64_t shape[1] = {4000};
        char err[512];
        snprintf(toks, sizeof toks, "%s/tokens.npy", tmp);
        REQUIRE(saefw_npy_write(toks, SAEFW_DT_I32, 1, shape, t, err, sizeof err) == 0, "%s", err);
        snprintf(dir, sizeof dir, "%s/baseline", tmp);
        EXPECT(rc_ != 0, "saefw download NeelNanda/GELU_1L512W_C4_Code config.json model_final.pth",
               "HF_HOME=%s/nowhere %s run ../experiments/baseline.lua --data %s", tmp, BIN, toks);
        EXPECT(rc_ != 0, "run: saefw download --dataset NeelNanda/c4-code-tokenized-2b",
               "HF_HOME=%s/hfhome %s run ../experiments/baseline.lua", tmp, BIN);
        EXPECT(rc_ == 0, "final: loss",
               "HF_HOME=%s/hfhome %s run ../experiments/baseline.lua --data %s --seq_len 16 --batch_size 64 "
               "--buffer_mult 8 --num_tokens 3200 --dict_mult 2 --reinit_every 20 --eval_every 25 "
               "--checkpoint_every 25 --recons_batches 1 --run_dir %s",
               tmp, BIN, toks, dir);
        CHECK(strstr(out, "reconstruction score") && strstr(out, "[reinit_dead]"), "baseline output:\n%s", out);
        char cfgp[2200];
        snprintf(cfgp, sizeof cfgp, "%s/final/cfg.json", dir);
        char *c = NULL;
        FILE *cf = fopen(cfgp, "r");
        if (cf) {
            c = calloc(1, 1 << 16);
            size_t n = c ? fread(c, 1, (1 << 16) - 1, cf) : 0;
            if (c) c[n] = 0;
            fclose(cf);
        }
        CHECK(c && strstr(c, "\"hook_name\":\t\"blocks.0.mlp.hook_post\"") &&
                  strstr(c, "\"model_name\":\t\"gelu-1l\"") && strstr(c, "\"d_in\":\t96"),
              "baseline cfg.json:\n%s", c ? c : "(missing)");
        free(c);
        snprintf(mpath, sizeof mpath, "%s/metrics.jsonl", dir);
        FILE *bm = fopen(mpath, "r");
        char line[4096];
        int recons = 0;
        while (bm && fgets(line, sizeof line, bm)) recons += strstr(line, "\"recons_score\"") != NULL;
        if (bm) fclose(bm);
        CHECK(recons >= 2, "metrics.jsonl has %d lines with recons_score", recons);
    }

    /* Plugins written in Lua: the shipped example keeps W_enc orthogonal to its direction; a failing
     * callback stops the run with its file and line. */
    EXPECT(rc_ == 0, "max |d . W_enc column| = ", "%s run ../experiments/lua_plugin.lua --steps 200", BIN);
    {
        const char *at = strstr(out, "max |d . W_enc column| = ");
        double v = at ? atof(at + strlen("max |d . W_enc column| = ")) : 1.0;
        CHECK(v < 1e-6, "Lua plugin left |d . column| = %g", v);
    }
    EXPECT(rc_ != 0, "plugin bad_lua: lua/lua_plugin_error.lua:7: deliberate failure at step 3",
           "%s run lua/lua_plugin_error.lua", BIN);

    /* SIGINT during training saves a checkpoint and exits non-zero. */
    snprintf(dir, sizeof dir, "%s/run_int", tmp);
    fflush(stdout); /* the child must not repeat buffered output */
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        char logp[2100];
        snprintf(logp, sizeof logp, "%s/int.log", tmp);
        REQUIRE(freopen(logp, "w", stderr) && freopen(logp, "a", stdout), "redirect");
        execl(BIN, BIN, "run", "lua/train_small.lua", "--steps", "100000000", "--run_dir", dir, (char *)NULL);
        _exit(127);
    }
    /* Wait until training is under way (metrics.jsonl appears), at most 20 s. */
    char probe[2100];
    snprintf(probe, sizeof probe, "%s/metrics.jsonl", dir);
    for (int i = 0; i < 200 && access(probe, F_OK) != 0; i++) usleep(100000);
    usleep(300000);
    kill(pid, SIGINT);
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) != 0, "SIGINT: exit status %d", st);
    CHECK(exists("%s/0/sae_weights.safetensors", dir), "SIGINT: no checkpoint in %s", dir);
    t_run(out, sizeof out, "cat %s/int.log", tmp);
    CHECK(strstr(out, "interrupted by SIGINT") && strstr(out, "checkpoint saved to"), "SIGINT message:\n%s", out);
    printf("  SIGINT: exit %d, checkpoint %s/0\n", WEXITSTATUS(st), dir);
    return t_finish("test_cli");
}
