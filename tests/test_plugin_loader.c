/* Each way a plugin can fail to load gives its own one-line error: file not found, not a shared
 * object, missing entry point, ABI mismatch (version, and a descriptor or option entry smaller than
 * ABI 2.0's), init failure, unknown option (and a wrongly typed one). */
#include "plugin_loader.h"
#include "testutil.h"
#include "train.h"

static char msgs[16][1024];
static int n_msgs = 0;

static void expect_load_error(const char *what, const char *path, const char *phrase) {
    saefw_loaded_plugin *lp = NULL;
    REQUIRE(n_msgs < 16, "too many messages for msgs[]");
    char *err = msgs[n_msgs++];
    int rc = saefw_plugin_load(path, saefw_host_table(), &lp, err, 1024);
    printf("  %-22s -> %s\n", what, err);
    CHECK(rc != 0 && lp == NULL, "%s: loaded", what);
    CHECK(strstr(err, phrase) != NULL, "%s: error '%s' lacks '%s'", what, err, phrase);
    CHECK(strchr(err, '\n') == NULL, "%s: error is not one line", what);
}

int main(void) {
    const char *dir = getenv("SAEFW_TEST_PLUGINS");
    REQUIRE(dir && *dir, "SAEFW_TEST_PLUGINS is not set (run under ctest)");
    char p[1024];
    snprintf(p, sizeof p, "%s/does_not_exist.so", dir);
    expect_load_error("missing file", p, "file not found");
    expect_load_error("missing name", "no_such_plugin_anywhere", "file not found");
    snprintf(p, sizeof p, "%s/not_a_plugin.so", dir);
    expect_load_error("not a shared object", p, "not a shared object");
    snprintf(p, sizeof p, "%s/broken_noentry.so", dir);
    expect_load_error("no entry point", p, "missing entry point saefw_plugin_init");
    snprintf(p, sizeof p, "%s/broken_abi.so", dir);
    expect_load_error("ABI mismatch", p, "ABI mismatch: built for ABI version 999");
    snprintf(p, sizeof p, "%s/broken_size.so", dir);
    expect_load_error("descriptor too small", p, "ABI mismatch: struct_size 8 is smaller than");
    snprintf(p, sizeof p, "%s/broken_options.so", dir);
    expect_load_error("no option_size", p, "ABI mismatch: option_size 0 is smaller than");
    snprintf(p, sizeof p, "%s/broken_init.so", dir);
    expect_load_error("init failure", p, "init failed: needs a GPU that is not there");

    /* Options are checked against what the plugin declares. */
    saefw_loaded_plugin *lp = NULL;
    char err[1024];
    REQUIRE(saefw_plugin_load("adam", saefw_host_table(), &lp, err, sizeof err) == 0, "%s", err);
    CHECK(strcmp(lp->p.name, "adam") == 0 && lp->p.kind == SAEFW_KIND_OPTIMIZER, "adam loaded wrongly");
    saefw_opts *o = NULL;
    REQUIRE(saefw_opts_new(lp, &o, err, sizeof err) == 0, "%s", err);
    CHECK(saefw_opts_number(o, "beta2") == 0.999, "default beta2 %g", saefw_opts_number(o, "beta2"));
    char *e = msgs[n_msgs++];
    CHECK(saefw_opts_set_number(o, lp, "lrr", 1e-3, e, 1024) != 0, "unknown option accepted");
    printf("  %-22s -> %s\n", "unknown option", e);
    CHECK(strstr(e, "unknown option 'lrr'") && strstr(e, "lr, beta1, beta2"), "unknown option error: %s", e);
    CHECK(saefw_opts_set_string(o, lp, "lr", "fast", err, sizeof err) != 0 &&
              strstr(err, "option 'lr' must be a number"),
          "wrong type error: %s", err);
    printf("  %-22s -> %s\n", "wrong option type", err);
    CHECK(saefw_opts_set_number(o, lp, "lr", 2e-4, err, sizeof err) == 0 && saefw_opts_number(o, "lr") == 2e-4,
          "setting lr failed: %s", err);
    saefw_opts_free(o);
    saefw_plugin_unload(lp);

    /* The messages differ from one another. */
    for (int i = 0; i < n_msgs; i++)
        for (int j = i + 1; j < n_msgs; j++)
            CHECK(strcmp(msgs[i], msgs[j]) != 0, "errors %d and %d are the same", i, j);
    return t_finish("test_plugin_loader");
}
