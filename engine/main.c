/* The saefw command line: run Lua experiments, list plugins, inspect tensor files, talk to the Hub. */
#include <dirent.h>
#include <lauxlib.h>
#include <limits.h>
#include <malloc.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist.h"
#include "features_report.h"
#include "lua_saefw.h"
#include "memory.h"
#include "parallel.h"
#include "plugin_loader.h"
#include "run.h"
#include "sae_resolve.h"
#include "tensorfile.h"
#include "tokens_cmd.h"
#include "tokenize_cmd.h"
#include "train.h"
#include "util.h"

#ifdef SAEFW_HAVE_HF
#include "hf.h"
#endif

static const char USAGE[] =
    "usage: saefw <command> [arguments]\n"
    "\n"
    "commands:\n"
    "  run SCRIPT.lua [--key value | --key=value ...] [--resume RUN_DIR [--allow-change KEY]] [--threads N]\n"
    "                 [--allow-memory | --memory-limit SIZE]\n"
    "                      run an experiment; --key overrides that key of the script's saefw.config{};\n"
    "                      --resume continues an interrupted run from its newest intact checkpoint;\n"
    "                      --allow-change KEY (repeatable) lets it change that config key or option;\n"
    "                      --threads sets the threads of the step and the model (default: all cores)\n"
    "  plugins             list the plugins found, their kind and options\n"
    "  info FILE           list the tensors of a safetensors, .npy or PyTorch .pt file\n"
    "  analyze CHECKPOINT [--batches N] [--activations FILE | --model NAME --data TOKENS] [--svg PATH]\n"
    "          [--threads N]\n"
    "                      feature frequencies (log10 histogram, also as SVG), dead and rare\n"
    "                      fractions, the rare-feature direction\n"
    "  tokens convert DATASET [--column NAME] [--out FILE.npy]\n"
    "                      a Parquet token dataset (hf://datasets/ORG/NAME, folder, glob) into a flat\n"
    "                      token file; default: the token cache saefw.tokens() reads\n"
    "  tokenize INPUT... --tokenizer NAME --out FILE.npy|.bin [--field text] [--threads N] [--bos]\n"
    "          [--append-eos] [--special] [--dtype uint16|int32]\n"
    "                      text (JSONL, JSONL.zst, plain text) to a token file\n"
    "  features CHECKPOINT --out DIR [--model NAME] [--data TOKENS] [--tokens N] [--top-k K]\n"
    "          [--threads N] [--seed S]\n"
    "                      feature report: top contexts, activation histograms, logit effects\n"
    "                      (open DIR/index.html); model, hook and data default from cfg.json\n"
#ifdef SAEFW_HAVE_HF
    "  upload DIR --repo ORG/NAME [--path-in-repo SAE_ID] [--create] [--private] [--message MSG] [--revision REV]\n"
    "                      upload a checkpoint folder to the Hugging Face Hub (into folder SAE_ID, as\n"
    "                      SAELens releases are laid out, with a repo card listing the SAEs)\n"
    "  download REPO [FILE...] [--revision REV]\n"
    "                      download a repo's files into the Hugging Face cache\n"
    "  download --dataset ORG/NAME [FILE... | --include GLOB ...] [--revision REV]\n"
    "                      the same for a dataset repo (no FILE or GLOB: all of it)\n"
#endif
    "  version             print the version\n"
    "  help                print this help\n"
    "\n"
    "environment:\n"
    "  SAEFW_PLUGIN_PATH   extra folders (colon-separated) searched for plugins first\n"
    "  SAEFW_LUA_PATH      folder of the saefw Lua library (default: next to the binary)\n"
    "  SAEFW_TRACEBACK=1   print a Lua traceback with script errors\n"
    "  OPENBLAS_NUM_THREADS  threads when --threads is not given (default: all cores)\n";

static int lua_dir(char *out, size_t n) {
    const char *env = getenv("SAEFW_LUA_PATH");
    if (env && *env) {
        snprintf(out, n, "%s", env);
        return 0;
    }
    return saefw_exe_relative(SAEFW_LUA_SUBDIR, out, n);
}

static int msgh(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (!msg) msg = luaL_tolstring(L, 1, NULL);
    if (getenv("SAEFW_TRACEBACK")) luaL_traceback(L, L, msg, 1);
    else lua_pushstring(L, msg);
    return 1;
}

/* A Lua state with the standard libraries, the saefw library on package.path, the C core and the
 * Hub client preloaded, and `arg` as the standalone interpreter sets it. */
static lua_State *make_lua(int argc, char **argv) {
    char dir[PATH_MAX];
    if (lua_dir(dir, sizeof dir) != 0) {
        fprintf(stderr, "saefw: cannot find the saefw Lua library (set SAEFW_LUA_PATH)\n");
        return NULL;
    }
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "saefw: cannot create a Lua state\n");
        return NULL;
    }
    luaL_openlibs(L);
    saefw_lua_set_libdir(L, dir);
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", dir, dir);
    lua_getfield(L, -2, "path");
    lua_concat(L, 2);
    lua_setfield(L, -2, "path");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_saefw_core);
    lua_setfield(L, -2, "saefw.core");
#ifdef SAEFW_HAVE_HF
    lua_pushcfunction(L, luaopen_saefw_hf);
    lua_setfield(L, -2, "saefw.hf");
#endif
    lua_pop(L, 2);
    lua_createtable(L, argc, 1);
    for (int i = 1; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - 1);
    }
    lua_setglobal(L, "arg");
    return L;
}

/* The command line after the subcommand: --key value / --key=value pairs (a bare --flag is "true")
 * and positional arguments. */
typedef struct {
    char **kv;    /* n pairs: key, value */
    char **owned; /* keys split off "--key=value", freed by args_free */
    char **pos;
    int n, n_owned, n_pos;
} cli_args;

static void args_free(cli_args *a) {
    for (int i = 0; i < a->n_owned; i++) free(a->owned[i]);
    free(a->owned);
    free(a->kv);
    free(a->pos);
}

static int args_parse(int argc, char **argv, int first, cli_args *a) {
    memset(a, 0, sizeof *a);
    a->kv = calloc((size_t)argc * 2 + 2, sizeof(char *));
    a->owned = calloc((size_t)argc + 1, sizeof(char *));
    a->pos = calloc((size_t)argc + 1, sizeof(char *));
    if (!a->kv || !a->owned || !a->pos) return -1;
    for (int i = first; i < argc; i++) {
        const char *s = argv[i];
        if (strncmp(s, "--", 2) != 0 || !s[2]) {
            a->pos[a->n_pos++] = argv[i];
            continue;
        }
        const char *eq = strchr(s + 2, '=');
        if (eq) {
            char *k = strndup(s + 2, (size_t)(eq - s - 2));
            if (!k) return -1;
            a->owned[a->n_owned++] = k;
            a->kv[2 * a->n] = k;
            a->kv[2 * a->n + 1] = (char *)eq + 1;
        } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
            a->kv[2 * a->n] = (char *)s + 2;
            a->kv[2 * a->n + 1] = argv[++i];
        } else {
            a->kv[2 * a->n] = (char *)s + 2;
            a->kv[2 * a->n + 1] = "true";
        }
        a->n++;
    }
    return 0;
}

/* Remove the engine-level option --key from the parsed pairs; its value, or NULL when absent. */
static const char *take_option(cli_args *a, const char *key) {
    for (int i = 0; i < a->n; i++)
        if (!strcmp(a->kv[2 * i], key)) {
            const char *v = a->kv[2 * i + 1];
            memmove(a->kv + 2 * i, a->kv + 2 * i + 2, sizeof(char *) * (size_t)(2 * (a->n - i - 1)));
            a->n--;
            return v;
        }
    return NULL;
}

/* --threads N: a whole number from 1 to 4096, applied before anything runs. */
static int apply_threads(const char *cmd, const char *v) {
    if (!v) return 0;
    char err[256];
    int n;
    if (saefw_threads_arg(v, SAEFW_MAX_THREADS, &n, err, sizeof err) != 0) {
        fprintf(stderr, "saefw %s: %s\n", cmd, err);
        return -1;
    }
    saefw_set_threads(n);
    return 0;
}

/* Print a Lua error (already located at the script's line) and return the exit status. */
static int lua_failure(lua_State *L) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "%s\n", msg ? msg : "(error object is not a string)");
    return 1;
}

/* Under mpirun: the script's bytes and the command line must be the same on every rank. */
static int same_script_everywhere(const char *script, int argc, char **argv, char *err, size_t errlen) {
    if (saefw_dist_size() == 1) return 0;
    FILE *f = fopen(script, "rb");
    if (!f) return saefw_errf(err, errlen, "%s: cannot read the script", script);
    uint64_t h = SAEFW_FNV_OFFSET;
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) h = saefw_fnv1a(h, buf, n);
    int bad = ferror(f);
    fclose(f);
    if (bad) return saefw_errf(err, errlen, "%s: cannot read the script", script);
    for (int i = 2; i < argc; i++) h = saefw_fnv1a(h, argv[i], strlen(argv[i]) + 1);
    return saefw_dist_check_same(h, "script or command line", err, errlen);
}

static int cmd_run(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "saefw run: missing SCRIPT.lua\n");
        return 2;
    }
    const char *script = argv[1];
    if (access(script, R_OK) != 0) {
        fprintf(stderr, "saefw run: %s: cannot read the script\n", script);
        return 2;
    }
    cli_args a;
    int rc = 1;
    if (args_parse(argc, argv, 2, &a) != 0) {
        fprintf(stderr, "saefw: out of memory\n");
        args_free(&a);
        return 1;
    }
    if (a.n_pos > 0) {
        fprintf(stderr, "saefw run: unexpected argument '%s' (overrides are --key value or --key=value)\n", a.pos[0]);
        args_free(&a);
        return 2;
    }
    /* --resume RUN_DIR, --allow-change KEY (repeatable) and --threads N are for the engine, not the
     * script's config. */
    const char *resume = take_option(&a, "resume");
    const char *allow[64];
    int n_allow = 0;
    for (const char *k; (k = take_option(&a, "allow-change")) != NULL;) {
        if (n_allow == 64 || !*k) {
            fprintf(stderr, "saefw run: --allow-change: %s\n", *k ? "at most 64 of them" : "expected a config key");
            args_free(&a);
            return 2;
        }
        allow[n_allow++] = k;
    }
    if (n_allow && !resume) {
        fprintf(stderr, "saefw run: --allow-change %s applies to a resumed run only (add --resume RUN_DIR)\n",
                allow[0]);
        args_free(&a);
        return 2;
    }
    if (apply_threads("run", take_option(&a, "threads")) != 0) {
        args_free(&a);
        return 2;
    }
    /* --allow-memory: run whatever the memory estimate says; --memory-limit SIZE: check against SIZE. */
    const char *allow_mem = take_option(&a, "allow-memory"), *mem_limit = take_option(&a, "memory-limit");
    int64_t limit = 0;
    char merr[256];
    if ((allow_mem && strcmp(allow_mem, "true") != 0) ||
        (mem_limit && saefw_mem_parse(mem_limit, &limit, merr, sizeof merr) != 0)) {
        fprintf(stderr, "saefw run: %s\n",
                allow_mem && strcmp(allow_mem, "true") != 0 ? "--allow-memory takes no value" : merr);
        args_free(&a);
        return 2;
    }
    saefw_mem_set_policy(allow_mem != NULL, limit);
    /* The run object takes them from the core, whatever layer opens the session or the config. */
    saefw_run_cli cli = {.resume = resume,
                         .allow_change = allow,
                         .n_allow_change = n_allow,
                         .overrides = (const char *const *)a.kv,
                         .n_overrides = a.n};
    if (saefw_run_set_cli(&cli, merr, sizeof merr) != 0) {
        fprintf(stderr, "saefw run: %s\n", merr);
        args_free(&a);
        return 1;
    }
    if (same_script_everywhere(script, argc, argv, merr, sizeof merr) != 0) {
        fprintf(stderr, "saefw run: %s\n", merr);
        args_free(&a);
        return 1;
    }
    lua_State *L = make_lua(argc, argv);
    if (L) {
        lua_pushcfunction(L, msgh);
        int h = lua_gettop(L);
        int st = luaL_loadfile(L, script);
        if (st == LUA_OK) st = lua_pcall(L, 0, 0, h);
        if (st != LUA_OK) {
            rc = lua_failure(L);
        } else {
            rc = 0;
            if (a.n > 0 && !saefw_run_overrides_taken()) {
                fprintf(stderr, "saefw run: %s never calls saefw.config{}, so --%s cannot be applied\n", script,
                        a.kv[0]);
                rc = 2;
            }
        }
        lua_close(L);
    }
    saefw_run_set_cli(NULL, merr, sizeof merr);
    args_free(&a);
    return rc;
}

/* saefw analyze CHECKPOINT [--key value ...]: runs saefw.cli.analyze from the Lua library. */
static int cmd_analyze(int argc, char **argv) {
    cli_args a;
    int rc = 1;
    if (args_parse(argc, argv, 1, &a) != 0) {
        fprintf(stderr, "saefw: out of memory\n");
        args_free(&a);
        return 1;
    }
    if (apply_threads("analyze", take_option(&a, "threads")) != 0) {
        args_free(&a);
        return 2;
    }
    lua_State *L = make_lua(argc, argv);
    if (L) {
        lua_pushcfunction(L, msgh);
        int h = lua_gettop(L);
        lua_getglobal(L, "require");
        lua_pushstring(L, "saefw.cli");
        int st = lua_pcall(L, 1, 1, h);
        if (st == LUA_OK) {
            lua_getfield(L, -1, "analyze");
            lua_createtable(L, a.n_pos, 1);
            for (int i = 0; i < a.n_pos; i++) {
                lua_pushstring(L, a.pos[i]);
                lua_rawseti(L, -2, i + 1);
            }
            lua_newtable(L);
            for (int i = 0; i < a.n; i++) {
                lua_pushstring(L, a.kv[2 * i + 1]);
                lua_setfield(L, -2, a.kv[2 * i]);
            }
            lua_setfield(L, -2, "options");
            st = lua_pcall(L, 1, 0, h);
        }
        rc = st == LUA_OK ? 0 : lua_failure(L);
        lua_close(L);
    }
    args_free(&a);
    return rc;
}

static int cmd_plugins(void) {
    char *dirs[32];
    int nd = saefw_plugin_dirs(dirs, 32);
    int found = 0;
    for (int i = 0; i < nd; i++) {
        DIR *d = opendir(dirs[i]);
        if (!d) continue;
        char real[PATH_MAX];
        printf("%s:\n", realpath(dirs[i], real) ? real : dirs[i]);
        struct dirent *e;
        while ((e = readdir(d))) {
            size_t len = strlen(e->d_name);
            if (len < 4 || strcmp(e->d_name + len - 3, ".so") != 0) continue;
            char path[PATH_MAX];
            snprintf(path, sizeof path, "%s/%s", dirs[i], e->d_name);
            saefw_loaded_plugin *lp = NULL;
            char err[1024];
            if (saefw_plugin_load(path, saefw_host_table(), &lp, err, sizeof err) != 0) {
                printf("  %-20s (cannot load: %s)\n", e->d_name, err);
                continue;
            }
            found++;
            printf("  %-20s %-10s %s\n", lp->p.name, saefw_plugin_kind_name(lp->p.kind),
                   lp->p.description ? lp->p.description : "");
            for (const saefw_option *o = lp->p.options; o && o->name; o++) {
                if (o->type == SAEFW_OPT_STRING)
                    printf("      %-18s string  default %-10s %s\n", o->name,
                           o->def_string ? o->def_string : "(required)", o->help ? o->help : "");
                else if (o->type == SAEFW_OPT_BOOL)
                    printf("      %-18s bool    default %-10s %s\n", o->name, o->def_number != 0 ? "true" : "false",
                           o->help ? o->help : "");
                else
                    printf("      %-18s %-7s default %-10g %s\n", o->name,
                           o->type == SAEFW_OPT_INTEGER ? "integer" : "number", o->def_number, o->help ? o->help : "");
            }
            saefw_plugin_unload(lp);
        }
        closedir(d);
    }
    saefw_plugin_dirs_free(dirs, nd);
    if (!found) {
        fprintf(stderr, "saefw plugins: no plugins found (set SAEFW_PLUGIN_PATH)\n");
        return 1;
    }
    return 0;
}

static int cmd_info(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: saefw info FILE\n");
        return 2;
    }
    char err[1024];
    if (saefw_tf_print_info(argv[1], stdout, err, sizeof err) != 0) {
        fprintf(stderr, "saefw info: %s\n", err);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    /* Large scratch arrays (model and evaluation work areas, made and freed around evaluations) go
     * straight back to the system when freed: glibc's adaptive threshold would otherwise move them
     * onto the heap after the first free, where freed memory stays resident. */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    if (argc < 2) {
        fputs(USAGE, stderr);
        return 2;
    }
    const char *cmd = argv[1];
#ifdef SAEFW_HAVE_HF
    saefw_sae_set_hub_fetch(saefw_hf_fetch); /* saefw.load_sae and analyze fetch Hub paths */
#endif
    if (!strcmp(cmd, "run")) {
        /* Under mpirun each process is one rank of a data-parallel run; a failed rank ends the whole
         * job (the others may be waiting for it in a collective), a finished one leaves it. */
        char derr[256];
        if (saefw_dist_init(&argc, &argv, derr, sizeof derr) != 0) {
            fprintf(stderr, "saefw run: %s\n", derr);
            return 1;
        }
        int rc = cmd_run(argc - 1, argv + 1);
        /* A signal is agreed on by all ranks, which stop after the same step: the others wait for rank
         * 0's checkpoint, since mpirun ends the job as soon as one rank exits with a failure. */
        if (rc != 0 && saefw_dist_size() > 1 && saefw_stop_requested() && saefw_dist_barrier(derr, sizeof derr) == 0) {
            saefw_dist_finalize();
            return rc;
        }
        if (rc != 0 && saefw_dist_size() > 1) {
            fprintf(stderr, "saefw run: rank %d of %d failed (its message is above); ending the job\n",
                    saefw_dist_rank(), saefw_dist_size());
            fflush(stderr);
            saefw_dist_abort(rc);
        }
        saefw_dist_finalize();
        return rc;
    }
    if (!strcmp(cmd, "plugins")) return cmd_plugins();
    if (!strcmp(cmd, "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(cmd, "analyze")) return cmd_analyze(argc - 1, argv + 1);
    if (!strcmp(cmd, "tokens")) return saefw_cmd_tokens(argc - 1, argv + 1);
    if (!strcmp(cmd, "tokenize")) return saefw_cmd_tokenize(argc - 1, argv + 1);
    if (!strcmp(cmd, "features")) return saefw_features_cmd(argc - 1, argv + 1);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("saefw %s (plugin ABI %u)\n", SAEFW_VERSION, SAEFW_ABI_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        fputs(USAGE, stdout);
        return 0;
    }
#ifdef SAEFW_HAVE_HF
    if (!strcmp(cmd, "upload") || !strcmp(cmd, "download")) return saefw_hf_cli(argc - 1, argv + 1);
#endif
    fprintf(stderr, "saefw: unknown command '%s' (see saefw --help)\n", cmd);
    return 2;
}
