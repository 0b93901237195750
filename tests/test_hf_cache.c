/* saefw_hf_cache_dir / saefw_hf_home_dir / saefw_hf_repo_dir against huggingface_hub's
 * constants.py, for every combination of HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME and
 * XDG_CACHE_HOME (set, unset, empty), with HOME set and unset, and its "~" / "$VAR" expansion.
 * The expected paths are written out by hand from constants.py's precedence:
 *   HF_HOME  = expandvars(expanduser($HF_HOME or ($XDG_CACHE_HOME or ~/.cache) + "/huggingface"))
 *   HF_HUB_CACHE = expandvars(expanduser($HF_HUB_CACHE or $HUGGINGFACE_HUB_CACHE or HF_HOME + "/hub")) */
#include <pwd.h>
#include <unistd.h>

#include "model_resolve.h"
#include "testutil.h"

static const char *const VARS[4] = {"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"};
static const char *const VALUES[4] = {"/env/hub-cache", "/env/legacy-cache", "/env/hf-home", "/env/xdg"};

static void set(const char *name, const char *v) {
    if (v) setenv(name, v, 1);
    else unsetenv(name);
}

int main(void) {
    char got[4096], home[4096], repo[4096];
    const char *pw_home = getpwuid(getuid()) ? getpwuid(getuid())->pw_dir : "/";

    /* 3^4 states (unset, set, empty) of the four variables, each with HOME set and unset. */
    int cases = 0;
    for (int home_set = 0; home_set < 2; home_set++) {
        set("HOME", home_set ? "/users/me" : NULL);
        const char *base = home_set ? "/users/me" : pw_home;
        for (int code = 0; code < 81; code++) {
            int state[4];
            for (int v = 0, c = code; v < 4; v++, c /= 3) {
                state[v] = c % 3; /* 0 unset, 1 set, 2 empty (counts as unset) */
                set(VARS[v], state[v] == 0 ? NULL : state[v] == 1 ? VALUES[v] : "");
            }
            char want_home[4096], want[4096];
            if (state[2] == 1) snprintf(want_home, sizeof want_home, "/env/hf-home");
            else if (state[3] == 1) snprintf(want_home, sizeof want_home, "/env/xdg/huggingface");
            else snprintf(want_home, sizeof want_home, "%s/.cache/huggingface", strcmp(base, "/") ? base : "");
            if (state[0] == 1) snprintf(want, sizeof want, "/env/hub-cache");
            else if (state[1] == 1) snprintf(want, sizeof want, "/env/legacy-cache");
            else T_FMT(want, "%s/hub", want_home);
            CHECK(saefw_hf_home_dir(home, sizeof home) == 0 && !strcmp(home, want_home), "case %d/%d: home %s, want %s",
                  home_set, code, home, want_home);
            CHECK(saefw_hf_cache_dir(got, sizeof got) == 0 && !strcmp(got, want), "case %d/%d: cache %s, want %s",
                  home_set, code, got, want);
            char want_repo[4200];
            snprintf(want_repo, sizeof want_repo, "%s/datasets--NeelNanda--c4-code-tokenized-2b", want);
            CHECK(saefw_hf_repo_dir("dataset", "NeelNanda/c4-code-tokenized-2b", repo, sizeof repo) == 0 &&
                      !strcmp(repo, want_repo),
                  "case %d/%d: repo dir %s", home_set, code, repo);
            cases++;
        }
    }
    CHECK(cases == 162, "%d cases", cases);
    for (int v = 0; v < 4; v++) unsetenv(VARS[v]);

    /* Expansion: expanduser first, then expandvars (unknown variables stay), on each source. */
    setenv("HOME", "/users/me/", 1);
    setenv("SAEFW_T_DISK", "/mnt/disk", 1);
    unsetenv("SAEFW_T_UNSET");
    static const struct {
        const char *var, *value, *want_cache;
    } EXP[] = {
        {"HF_HOME", "~/hf", "/users/me/hf/hub"},
        {"HF_HOME", "~", "/users/me/hub"},
        {"HF_HOME", "$SAEFW_T_DISK/hf", "/mnt/disk/hf/hub"},
        {"HF_HOME", "${SAEFW_T_DISK}/hf/", "/mnt/disk/hf/hub"},
        {"HF_HOME", "/x/$SAEFW_T_UNSET/y", "/x/$SAEFW_T_UNSET/y/hub"},
        {"HF_HOME", "/x/$/y", "/x/$/y/hub"},
        {"HF_HOME", "/a~b", "/a~b/hub"},
        {"XDG_CACHE_HOME", "~/xdg", "/users/me/xdg/huggingface/hub"},
        {"XDG_CACHE_HOME", "$SAEFW_T_DISK", "/mnt/disk/huggingface/hub"},
        {"HF_HUB_CACHE", "~/hub-here", "/users/me/hub-here"},
        {"HF_HUB_CACHE", "${SAEFW_T_DISK}", "/mnt/disk"},
        {"HUGGINGFACE_HUB_CACHE", "~/legacy", "/users/me/legacy"},
        {"HUGGINGFACE_HUB_CACHE", "$SAEFW_T_DISK/legacy", "/mnt/disk/legacy"},
        {"HF_HUB_CACHE", "relative/hub", "relative/hub"},
    };
    for (size_t i = 0; i < sizeof EXP / sizeof *EXP; i++) {
        setenv(EXP[i].var, EXP[i].value, 1);
        CHECK(saefw_hf_cache_dir(got, sizeof got) == 0 && !strcmp(got, EXP[i].want_cache), "%s=%s: cache %s, want %s",
              EXP[i].var, EXP[i].value, got, EXP[i].want_cache);
        unsetenv(EXP[i].var);
    }
    /* "~user" is that user's home from the password database. */
    struct passwd *pw = getpwuid(getuid());
    if (pw && pw->pw_name && pw->pw_dir) {
        char v[512], want[4200];
        snprintf(v, sizeof v, "~%s/cache", pw->pw_name);
        snprintf(want, sizeof want, "%s/cache", strcmp(pw->pw_dir, "/") ? pw->pw_dir : "");
        setenv("HF_HUB_CACHE", v, 1);
        CHECK(saefw_hf_cache_dir(got, sizeof got) == 0 && !strcmp(got, want), "~user: %s, want %s", got, want);
        unsetenv("HF_HUB_CACHE");
    }
    /* A variable expanded to another "~" path is expanded again for the hub cache, as Python does. */
    setenv("SAEFW_T_TILDE", "~/deep", 1);
    setenv("HF_HOME", "$SAEFW_T_TILDE", 1);
    CHECK(saefw_hf_home_dir(home, sizeof home) == 0 && !strcmp(home, "~/deep"), "home %s", home);
    CHECK(saefw_hf_cache_dir(got, sizeof got) == 0 && !strcmp(got, "/users/me/deep/hub"), "cache %s", got);
    unsetenv("HF_HOME");

    /* Repo folders: huggingface_hub's repo_folder_name; unknown types and short buffers refused. */
    setenv("HF_HUB_CACHE", "/c", 1);
    CHECK(saefw_hf_repo_dir("model", "NeelNanda/GELU_1L512W_C4_Code", repo, sizeof repo) == 0 &&
              !strcmp(repo, "/c/models--NeelNanda--GELU_1L512W_C4_Code"),
          "%s", repo);
    CHECK(saefw_hf_repo_folder("dataset", "gpt2", repo, sizeof repo) == 0 && !strcmp(repo, "datasets--gpt2"), "%s",
          repo);
    CHECK(saefw_hf_repo_folder("bucket", "a/b", repo, sizeof repo) != 0, "unknown type accepted");
    CHECK(saefw_hf_repo_dir("model", "a/b", repo, 8) != 0, "short buffer accepted");
    CHECK(saefw_hf_cache_dir(got, 2) != 0, "short buffer accepted");
    return t_finish("test_hf_cache");
}
