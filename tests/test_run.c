/* The run object (engine/run.h) and the stepped loop (saefw_trainer_*): the derivations (steps from
 * num_tokens, the model batch, the default run folder, command-line overrides), a session on a
 * synthetic source (its evaluators, its run folder, one training only), and a run driven step by step
 * ends with the same bytes as saefw_train. */
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eval.h"
#include "plugin_loader.h"
#include "run.h"
#include "testutil.h"
#include "train.h"

static void check_overrides(void) {
    char err[256];
    saefw_value v;
    CHECK(saefw_run_parse_override("k", "12", SAEFW_VALUE_INT, &v, err, sizeof err) == 0 && v.i == 12, "int 12");
    CHECK(saefw_run_parse_override("k", " 0x10 ", SAEFW_VALUE_INT, &v, err, sizeof err) == 0 && v.i == 16, "int 0x10");
    CHECK(saefw_run_parse_override("k", "1e3", SAEFW_VALUE_INT, &v, err, sizeof err) == 0 && v.i == 1000, "int 1e3");
    CHECK(saefw_run_parse_override("k", "-7", SAEFW_VALUE_INT, &v, err, sizeof err) == 0 && v.i == -7, "int -7");
    CHECK(saefw_run_parse_override("steps", "1.5", SAEFW_VALUE_INT, &v, err, sizeof err) != 0 &&
              strcmp(err, "--steps: expected an integer, got '1.5'") == 0,
          "int 1.5: %s", err);
    CHECK(saefw_run_parse_override("lr", "2e-4", SAEFW_VALUE_FLOAT, &v, err, sizeof err) == 0 && v.f == 2e-4, "2e-4");
    CHECK(saefw_run_parse_override("lr", "10", SAEFW_VALUE_FLOAT, &v, err, sizeof err) == 0 && v.f == 10.0, "10");
    CHECK(saefw_run_parse_override("lr", "inf", SAEFW_VALUE_FLOAT, &v, err, sizeof err) != 0 &&
              strcmp(err, "--lr: expected a number, got 'inf'") == 0,
          "inf: %s", err);
    CHECK(saefw_run_parse_override("lr", "1e-4x", SAEFW_VALUE_FLOAT, &v, err, sizeof err) != 0, "1e-4x accepted");
    CHECK(saefw_run_parse_override("b", "Yes", SAEFW_VALUE_BOOL, &v, err, sizeof err) == 0 && v.b == 1, "Yes");
    CHECK(saefw_run_parse_override("b", "off", SAEFW_VALUE_BOOL, &v, err, sizeof err) == 0 && v.b == 0, "off");
    CHECK(saefw_run_parse_override("b", "maybe", SAEFW_VALUE_BOOL, &v, err, sizeof err) != 0 &&
              strcmp(err, "--b: expected true or false, got 'maybe'") == 0,
          "maybe: %s", err);
    CHECK(saefw_run_parse_override("s", "x y", SAEFW_VALUE_STRING, &v, err, sizeof err) == 0 && strcmp(v.s, "x y") == 0,
          "string");
}

/* The command line's run options kept in the core, and its overrides applied to a JSON config. */
static void check_cli(void) {
    char err[512];
    const char *allow[] = {"lr"};
    const char *kv[] = {"lr", "2e-4", "steps", "0x10", "name", "b", "steps", "7"};
    saefw_run_cli cli = {
        .resume = "runs/x", .allow_change = allow, .n_allow_change = 1, .overrides = kv, .n_overrides = 4};
    REQUIRE(saefw_run_set_cli(&cli, err, sizeof err) == 0, "set_cli: %s", err);
    CHECK(saefw_run_cli_resume() && strcmp(saefw_run_cli_resume(), "runs/x") == 0, "resume not kept");
    CHECK(saefw_run_n_overrides() == 4 && !saefw_run_overrides_taken(), "overrides: %d", saefw_run_n_overrides());
    cJSON *cfg = cJSON_Parse("{\"steps\": 100, \"lr\": 1, \"name\": \"a\", \"nested\": {}}");
    REQUIRE(cfg, "parse");
    /* lr's default is a float in the script (1.0), which JSON cannot tell: the types say it. */
    saefw_value_type types[] = {SAEFW_VALUE_INT, SAEFW_VALUE_FLOAT, SAEFW_VALUE_STRING, SAEFW_VALUE_NONE};
    saefw_override applied[4];
    CHECK(saefw_run_apply_overrides(cfg, types, applied, err, sizeof err) == 0, "apply: %s", err);
    CHECK(saefw_run_overrides_taken(), "not marked taken");
    CHECK(cJSON_GetObjectItem(cfg, "steps")->valuedouble == 7 && cJSON_GetObjectItem(cfg, "lr")->valuedouble == 2e-4 &&
              strcmp(cJSON_GetObjectItem(cfg, "name")->valuestring, "b") == 0,
          "applied values");
    CHECK(strcmp(applied[1].key, "steps") == 0 && applied[1].value.type == SAEFW_VALUE_INT &&
              applied[1].value.i == 16 && applied[0].value.type == SAEFW_VALUE_FLOAT,
          "applied list");
    /* Without types, the JSON values say: lr = 1 reads as an integer. */
    CHECK(saefw_run_apply_overrides(cfg, NULL, NULL, err, sizeof err) == 0, "apply (JSON types): %s", err);
    cJSON_Delete(cfg);
    const char *bad[] = {"nested", "1"};
    cli.overrides = bad;
    cli.n_overrides = 1;
    REQUIRE(saefw_run_set_cli(&cli, err, sizeof err) == 0, "set_cli: %s", err);
    cfg = cJSON_Parse("{\"steps\": 100, \"nested\": {}}");
    CHECK(saefw_run_apply_overrides(cfg, NULL, NULL, err, sizeof err) != 0 &&
              strcmp(err, "--nested: the key holds a table, which cannot be set from the command line") == 0,
          "table: %s", err);
    bad[0] = "stepz";
    REQUIRE(saefw_run_set_cli(&cli, err, sizeof err) == 0, "set_cli: %s", err);
    CHECK(saefw_run_apply_overrides(cfg, NULL, NULL, err, sizeof err) != 0 &&
              strcmp(err, "unknown config key '--stepz' (valid keys: nested, steps)") == 0,
          "unknown: %s", err);
    cJSON_Delete(cfg);
    saefw_run_set_cli(NULL, err, sizeof err);
    CHECK(!saefw_run_cli_resume() && saefw_run_n_overrides() == 0, "set_cli(NULL) kept options");
}

static void check_derivations(const char *tmp) {
    char err[256];
    CHECK(saefw_run_steps(1000, 256, err, sizeof err) == 3, "1000 tokens of 256");
    CHECK(saefw_run_steps(100, 256, err, sizeof err) < 0 &&
              strcmp(err, "num_tokens 100 is less than one batch of 256") == 0,
          "100 tokens: %s", err);
    CHECK(saefw_run_model_batch(4096, 128) == 512 && saefw_run_model_batch(100, 128) == 1, "model batch");

    char cwd[4096], dir[4096], dir2[4096];
    REQUIRE(getcwd(cwd, sizeof cwd) && chdir(tmp) == 0, "chdir %s", tmp);
    saefw_run_default_dir("experiments/quick.lua", dir, sizeof dir);
    CHECK(strncmp(dir, "runs/quick-", 11) == 0 && strlen(dir) == 11 + 15, "default run folder %s", dir);
    /* A folder of that name holding a run gets a suffix (unless the second turned meanwhile). */
    REQUIRE(mkdir("runs", 0755) == 0 && mkdir(dir, 0755) == 0, "mkdir %s", dir);
    char mp[4200];
    snprintf(mp, sizeof mp, "%s/metrics.jsonl", dir);
    FILE *f = fopen(mp, "w");
    REQUIRE(f && fclose(f) == 0, "%s", mp);
    saefw_run_default_dir("experiments/quick.lua", dir2, sizeof dir2);
    char want[4200];
    snprintf(want, sizeof want, "%s-2", dir);
    CHECK(strcmp(dir2, want) == 0 || strncmp(dir2, dir, 26) != 0, "second run folder %s (first %s)", dir2, dir);
    saefw_run_default_dir(NULL, dir, sizeof dir);
    CHECK(strncmp(dir, "runs/run-", 9) == 0, "no script: %s", dir);
    REQUIRE(chdir(cwd) == 0, "chdir back");
}

typedef struct {
    saefw_source *src;
    saefw_buffer buf;
    saefw_sae sae;
} parts;

static void parts_make(parts *p) {
    char err[512];
    saefw_synthetic_opts so = {16, 24, 0.05, 1.0, 3};
    REQUIRE(saefw_source_synthetic(&so, &p->src, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_buffer_init(&p->buf, p->src, 64 * 8, 64, SAEFW_BUF_F32, 5, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_sae_alloc(&p->sae, 16, 64, 1e-3f, err, sizeof err) == 0, "%s", err);
    saefw_rng rng;
    saefw_rng_seed(&rng, SAEFW_DEFAULT_SEED);
    saefw_sae_init_params(&p->sae, &rng);
}

static void parts_free(parts *p) {
    saefw_sae_free(&p->sae);
    saefw_buffer_free(&p->buf);
    saefw_source_free(p->src);
}

int main(void) {
    const char *tmp = t_tmpdir("test_run");
    check_overrides();
    check_cli();
    check_derivations(tmp);

    char err[1024];
    saefw_loaded_plugin *adam = NULL;
    REQUIRE(saefw_plugin_load("adam", saefw_host_table(), &adam, err, sizeof err) == 0, "%s", err);
    saefw_opts *opts = NULL;
    REQUIRE(saefw_opts_new(adam, &opts, err, sizeof err) == 0, "%s", err);
    REQUIRE(saefw_opts_set_number(opts, adam, "lr", 1e-3, err, sizeof err) == 0, "%s", err);

    /* A session: the length from num_tokens, MMCS because the draws have ground truth, no run folder. */
    parts a;
    parts_make(&a);
    saefw_run_cfg c;
    saefw_run_cfg_init(&c);
    c.sae = &a.sae;
    c.buffer = &a.buf;
    c.optimizer.plugin = adam;
    c.optimizer.opts = opts;
    c.progress = 0;
    c.eval_every = 4;
    c.no_run_dir = 1;
    saefw_session *s = NULL;
    CHECK(saefw_session_open(&c, &s, err, sizeof err) != 0 && strcmp(err, "give 'steps' or 'num_tokens'") == 0,
          "no length: %s", err);
    c.num_tokens = 64 * 9 + 10;
    REQUIRE(saefw_session_open(&c, &s, err, sizeof err) == 0, "%s", err);
    CHECK(saefw_session_steps(s) == 9, "steps %lld, want 9", (long long)saefw_session_steps(s));
    CHECK(saefw_session_run_dir(s) == NULL && saefw_session_recons(s) == NULL, "run folder or recons where none");
    saefw_train_result res;
    CHECK(saefw_session_train(s, &res, err, sizeof err) == 0, "train: %s", err);
    CHECK(res.steps_done == 9 && res.stop == SAEFW_STOP_DONE, "steps done %lld", (long long)res.steps_done);
    const double mmcs = saefw_metrics_get(&res.last, "mmcs");
    CHECK(mmcs > 0 && mmcs <= 1, "the session's MMCS evaluator reported %g", mmcs);
    CHECK(saefw_session_train(s, &res, err, sizeof err) != 0 && res.stop == SAEFW_STOP_ERROR, "a second train ran");
    saefw_session_close(s);

    /* The same run again, driven a step at a time with a run folder: same weights, a final checkpoint. */
    parts b;
    parts_make(&b);
    char run_dir[4200];
    snprintf(run_dir, sizeof run_dir, "%s/stepped", tmp);
    saefw_train_opts o = {0};
    o.sae = &b.sae;
    o.buffer = &b.buf;
    o.steps = 9;
    o.optimizer.plugin = adam;
    o.optimizer.opts = opts;
    o.eval_every = 4;
    o.seed = SAEFW_DEFAULT_SEED;
    o.run_dir = run_dir;
    saefw_mmcs_evaluator mev;
    REQUIRE(saefw_mmcs_evaluator_init(&mev, b.src, err, sizeof err) == 0, "%s", err);
    saefw_evaluator *evs[1] = {&mev.ev};
    o.evaluators = evs;
    o.n_evaluators = 1;
    saefw_trainer *t = NULL;
    REQUIRE(saefw_trainer_open(&o, &t, err, sizeof err) == 0, "open: %s", err);
    int n = 0, rc;
    while ((rc = saefw_trainer_step(t, err, sizeof err)) == 1) n++;
    CHECK(rc == 0 && n == 9, "stepped %d times, last %d: %s", n, rc, err);
    CHECK(saefw_trainer_step(t, err, sizeof err) == 0, "a step past the end ran");
    CHECK(saefw_trainer_close(t, &res, err, sizeof err) == 0, "close: %s", err);
    CHECK(res.steps_done == 9 && fabs(saefw_metrics_get(&res.last, "mmcs") - mmcs) == 0,
          "stepped: %lld steps, MMCS %g vs %g", (long long)res.steps_done, saefw_metrics_get(&res.last, "mmcs"), mmcs);
    CHECK(memcmp(a.sae.params, b.sae.params, sizeof(float) * (size_t)a.sae.n_total) == 0,
          "the stepped run's weights differ from saefw_train's");
    char final_cfg[4300];
    snprintf(final_cfg, sizeof final_cfg, "%s/final/cfg.json", run_dir);
    CHECK(access(final_cfg, R_OK) == 0, "no %s", final_cfg);

    parts_free(&a);
    parts_free(&b);
    saefw_opts_free(opts);
    saefw_plugin_unload(adam);
    return t_finish("test_run");
}
