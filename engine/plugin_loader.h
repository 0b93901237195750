/* Finding, loading and validating plugins (.so files with one entry point), and their options. */
#ifndef SAEFW_PLUGIN_LOADER_H
#define SAEFW_PLUGIN_LOADER_H

#include <stddef.h>

#include "saefw/plugin.h"

/* A loaded plugin: the dlopen handle and the engine's copy of the plugin's descriptor. */
typedef struct {
    void *dl;
    char *path;
    /* The engine's view: the first min(plugin's struct_size, sizeof(saefw_plugin)) bytes of the
     * plugin's descriptor, the rest zero; options points at `options` below and option_size is the
     * engine's sizeof(saefw_option). */
    saefw_plugin p;
    saefw_option *options; /* the plugin's options in the engine's layout, NULL-name terminated (owned) */
} saefw_loaded_plugin;

/* Options of one plugin instance: values for every option the plugin declares. */
struct saefw_opts {
    const saefw_option *spec;
    int n;
    double *num;
    char **str;
    unsigned char *given;
};

/* Folders searched for `<name>.so`, in order: $SAEFW_PLUGIN_PATH (colon-separated), the folder
 * next to the running binary (build tree and install tree alike). Fills at most max entries of dirs
 * (each malloc'd; free with saefw_plugin_dirs_free) and returns the count. */
int saefw_plugin_dirs(char **dirs, int max);
void saefw_plugin_dirs_free(char **dirs, int n);

/* Load a plugin by name (searched on the path) or by path (anything containing '/' or ending in .so).
 * Errors are one line and distinct: not found, not a shared object, no entry point, ABI mismatch,
 * init failure. The host table is the one the engine hands every plugin. A descriptor longer than
 * the engine's (a plugin built against a newer minor version) is cut to the engine's size: the
 * fields this engine does not know are ignored. */
int saefw_plugin_load(const char *name_or_path, const saefw_host *host, saefw_loaded_plugin **out, char *err,
                      size_t errlen);
void saefw_plugin_unload(saefw_loaded_plugin *lp);

const char *saefw_plugin_kind_name(saefw_plugin_kind k);

/* Options: start from the defaults, then set by name. Unknown names and wrong types give an error
 * naming the plugin and the option (and listing the options the plugin takes). */
int saefw_opts_new(const saefw_loaded_plugin *lp, saefw_opts **out, char *err, size_t errlen);
int saefw_opts_set_number(saefw_opts *o, const saefw_loaded_plugin *lp, const char *name, double v, char *err,
                          size_t errlen);
int saefw_opts_set_bool(saefw_opts *o, const saefw_loaded_plugin *lp, const char *name, int v, char *err,
                        size_t errlen);
int saefw_opts_set_string(saefw_opts *o, const saefw_loaded_plugin *lp, const char *name, const char *v, char *err,
                          size_t errlen);
/* Check that every required option (a STRING with no default) was given. */
int saefw_opts_check(const saefw_opts *o, const saefw_loaded_plugin *lp, char *err, size_t errlen);
void saefw_opts_free(saefw_opts *o);
double saefw_opts_number(const saefw_opts *o, const char *name);
const char *saefw_opts_string(const saefw_opts *o, const char *name);

#endif
