/* Plugin loader: dlopen with RTLD_NOW|RTLD_LOCAL, one entry point, ABI checks, typed options. */
#include "plugin_loader.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

const char *saefw_plugin_kind_name(saefw_plugin_kind k) {
    switch (k) {
    case SAEFW_KIND_OPTIMIZER: return "optimizer";
    case SAEFW_KIND_RESAMPLER: return "resampler";
    case SAEFW_KIND_EXPERIMENT: return "experiment";
    }
    return "unknown";
}

int saefw_plugin_dirs(char **dirs, int max) {
    int n = 0;
    const char *env = getenv("SAEFW_PLUGIN_PATH");
    if (env && *env) {
        const char *p = env;
        while (*p && n < max) {
            const char *e = strchr(p, ':');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            if (len > 0) {
                char *d = malloc(len + 1);
                if (d) {
                    memcpy(d, p, len);
                    d[len] = 0;
                    dirs[n++] = d;
                }
            }
            p += len + (e ? 1 : 0);
        }
    }
    char here[4096];
    if (n < max && saefw_exe_relative(SAEFW_PLUGIN_SUBDIR, here, sizeof here) == 0 && (dirs[n] = strdup(here))) n++;
    return n;
}

void saefw_plugin_dirs_free(char **dirs, int n) {
    for (int i = 0; i < n; i++) free(dirs[i]);
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int is_path(const char *s) {
    size_t n = strlen(s);
    return strchr(s, '/') != NULL || (n > 3 && strcmp(s + n - 3, ".so") == 0);
}

static int valid_name(const char *s) {
    if (!*s) return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
              *p == '-'))
            return 0;
    return 1;
}

/* Resolve name_or_path to an existing file; on failure, err lists where we looked. */
static char *resolve(const char *name, char *err, size_t errlen) {
    if (is_path(name)) {
        if (!file_exists(name)) {
            saefw_errf(err, errlen, "plugin %s: file not found", name);
            return NULL;
        }
        return saefw_strdup(name, err, errlen);
    }
    if (!valid_name(name)) {
        saefw_errf(err, errlen, "plugin '%s': not a plugin name (letters, digits, '_' and '-') nor a path", name);
        return NULL;
    }
    char *dirs[32];
    int nd = saefw_plugin_dirs(dirs, 32);
    char where[1024] = "";
    char *found = NULL;
    for (int i = 0; i < nd && !found; i++) {
        char cand[PATH_MAX];
        snprintf(cand, sizeof cand, "%s/%s.so", dirs[i], name);
        if (file_exists(cand)) {
            found = saefw_strdup(cand, err, errlen);
            if (!found) break;
        }
        size_t used = strlen(where);
        snprintf(where + used, sizeof where - used, "%s%s", used ? ", " : "", dirs[i]);
    }
    saefw_plugin_dirs_free(dirs, nd);
    if (!found && !(err && *err))
        saefw_errf(err, errlen, "plugin %s: file not found: no %s.so in %s (set SAEFW_PLUGIN_PATH or give a path)",
                   name, name, where[0] ? where : "(no plugin folders)");
    return found;
}

/* Size of ABI 2.0's saefw_plugin: the smallest descriptor this engine accepts. */
#define SAEFW_PLUGIN_SIZE_2_0 (offsetof(saefw_plugin, load_state) + sizeof(((saefw_plugin *)0)->load_state))
#define SAEFW_OPTION_SIZE_2_0 (offsetof(saefw_option, help) + sizeof(((saefw_option *)0)->help))

/* Copy the plugin's options into the engine's layout, stepping by the plugin's option_size (its
 * entries may be longer or shorter than the engine's), and point lp->p.options at the copy. */
static int copy_options(saefw_loaded_plugin *lp, const char *who, char *err, size_t errlen) {
    const char *src = (const char *)lp->p.options;
    const size_t stride = lp->p.option_size;
    lp->p.options = NULL;
    lp->p.option_size = sizeof(saefw_option);
    if (!src) return 0;
    if (stride < SAEFW_OPTION_SIZE_2_0)
        return saefw_errf(err, errlen,
                          "plugin %s: ABI mismatch: option_size %zu is smaller than ABI 2.0's saefw_option (%zu bytes)",
                          who, stride, (size_t)SAEFW_OPTION_SIZE_2_0);
    size_t n = 0;
    while (((const saefw_option *)(src + n * stride))->name) {
        if (++n > 4096)
            return saefw_errf(err, errlen, "plugin %s: init failed: its options list has no end (a NULL name)", who);
    }
    lp->options = saefw_calloc(n + 1, sizeof(saefw_option), err, errlen);
    if (!lp->options) return -1;
    const size_t take = stride < sizeof(saefw_option) ? stride : sizeof(saefw_option);
    for (size_t i = 0; i < n; i++) memcpy(&lp->options[i], src + i * stride, take);
    lp->p.options = lp->options;
    return 0;
}

static int check_descriptor(const saefw_loaded_plugin *lp, const char *who, char *err, size_t errlen) {
    const saefw_plugin *p = &lp->p;
    if (!p->name || !*p->name) return saefw_errf(err, errlen, "plugin %s: init failed: the plugin gave no name", who);
    if (p->kind != SAEFW_KIND_OPTIMIZER && p->kind != SAEFW_KIND_RESAMPLER && p->kind != SAEFW_KIND_EXPERIMENT)
        return saefw_errf(err, errlen, "plugin %s: init failed: unknown kind %d", who, (int)p->kind);
    if (p->kind == SAEFW_KIND_OPTIMIZER && !p->step)
        return saefw_errf(err, errlen, "plugin %s: init failed: an optimizer must provide step()", who);
    return 0;
}

/* dlopen's own message for a bad file is long and varies, and a file cut short makes it fault
 * (SIGBUS) while mapping what is not there: the ELF header, the program and section header tables
 * and every segment are checked against the file's size first. */
static int check_elf(const char *path, const char *name, char *err, size_t errlen) {
#if UINTPTR_MAX == 0xffffffffffffffffu
    typedef Elf64_Ehdr ehdr_t;
    typedef Elf64_Phdr phdr_t;
    const unsigned char native_class = ELFCLASS64;
#else
    typedef Elf32_Ehdr ehdr_t;
    typedef Elf32_Phdr phdr_t;
    const unsigned char native_class = ELFCLASS32;
#endif
    FILE *f = fopen(path, "rb");
    if (!f) return saefw_errf(err, errlen, "plugin %s: cannot open: %s", name, strerror(errno));
    struct stat st;
    ehdr_t eh;
    memset(&eh, 0, sizeof eh);
    size_t got = fread(&eh, 1, sizeof eh, f);
    int rc = 0;
    if (fstat(fileno(f), &st) != 0) {
        rc = saefw_errf(err, errlen, "plugin %s: cannot stat: %s", name, strerror(errno));
    } else if (got < 4 || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) {
        rc = saefw_errf(err, errlen, "plugin %s: not a shared object (no ELF header)", name);
    } else if (got < sizeof eh) {
        rc = saefw_errf(err, errlen,
                        "plugin %s: damaged shared object: the file ends inside its ELF header (%lld "
                        "bytes; truncated?)",
                        name, (long long)st.st_size);
    } else if (eh.e_ident[EI_CLASS] != native_class || eh.e_type != ET_DYN) {
        rc = saefw_errf(err, errlen, "plugin %s: not a shared object for this machine (ELF class %d, type %d)", name,
                        eh.e_ident[EI_CLASS], (int)eh.e_type);
    } else {
        const uint64_t size = (uint64_t)st.st_size;
        if (eh.e_phentsize != sizeof(phdr_t) || eh.e_phnum == 0 ||
            (uint64_t)eh.e_phoff + (uint64_t)eh.e_phnum * sizeof(phdr_t) > size)
            rc = saefw_errf(err, errlen,
                            "plugin %s: damaged shared object: its program headers lie past the end of "
                            "the file (%llu bytes; truncated?)",
                            name, (unsigned long long)size);
        else if (eh.e_shoff && (uint64_t)eh.e_shoff + (uint64_t)eh.e_shnum * eh.e_shentsize > size)
            rc = saefw_errf(err, errlen,
                            "plugin %s: damaged shared object: its section headers lie past the end of "
                            "the file (%llu bytes; truncated?)",
                            name, (unsigned long long)size);
        for (unsigned i = 0; rc == 0 && i < eh.e_phnum; i++) {
            phdr_t ph;
            if (fseek(f, (long)(eh.e_phoff + i * sizeof ph), SEEK_SET) != 0 || fread(&ph, sizeof ph, 1, f) != 1)
                rc = saefw_errf(err, errlen, "plugin %s: cannot read its program headers", name);
            else if (ph.p_type == PT_LOAD && (uint64_t)ph.p_offset + (uint64_t)ph.p_filesz > size)
                rc = saefw_errf(err, errlen,
                                "plugin %s: damaged shared object: segment %u ends at byte %llu, past the "
                                "end of the file (%llu bytes; truncated?)",
                                name, i, (unsigned long long)((uint64_t)ph.p_offset + ph.p_filesz),
                                (unsigned long long)size);
        }
    }
    fclose(f);
    return rc;
}

/* The options a plugin declares: a known type each, unique names, defaults of that type. */
static int check_options(const saefw_plugin *p, const char *name, char *err, size_t errlen) {
    for (int i = 0; p->options && p->options[i].name; i++) {
        const saefw_option *o = &p->options[i];
        if (i >= 256)
            return saefw_errf(err, errlen, "plugin %s: init failed: more than 256 options (no end marker?)", name);
        if (!*o->name)
            return saefw_errf(err, errlen, "plugin %s: init failed: option %d has an empty name", name, i + 1);
        if (o->type != SAEFW_OPT_NUMBER && o->type != SAEFW_OPT_INTEGER && o->type != SAEFW_OPT_BOOL &&
            o->type != SAEFW_OPT_STRING)
            return saefw_errf(err, errlen,
                              "plugin %s: init failed: option '%s' has the unknown type %d (NUMBER, "
                              "INTEGER, BOOL or STRING)",
                              name, o->name, (int)o->type);
        for (int j = 0; j < i; j++)
            if (!strcmp(p->options[j].name, o->name))
                return saefw_errf(err, errlen, "plugin %s: init failed: option '%s' is declared twice", name, o->name);
        const double d = o->def_number;
        if ((o->type == SAEFW_OPT_NUMBER && !isfinite(d)) ||
            (o->type == SAEFW_OPT_INTEGER && !(isfinite(d) && d == floor(d))) ||
            (o->type == SAEFW_OPT_BOOL && d != 0 && d != 1))
            return saefw_errf(err, errlen, "plugin %s: init failed: option '%s' has the default %g, not %s", name,
                              o->name, d,
                              o->type == SAEFW_OPT_BOOL      ? "0 or 1"
                              : o->type == SAEFW_OPT_INTEGER ? "a whole number"
                                                             : "a finite number");
    }
    return 0;
}

int saefw_plugin_load(const char *name_or_path, const saefw_host *host, saefw_loaded_plugin **out, char *err,
                      size_t errlen) {
    *out = NULL;
    if (err && errlen) err[0] = 0;
    char *path = resolve(name_or_path, err, errlen);
    if (!path) return -1;
    if (check_elf(path, name_or_path, err, errlen) != 0) {
        free(path);
        return -1;
    }
    /* dlopen needs a slash to take the path literally rather than searching LD_LIBRARY_PATH. */
    char full[PATH_MAX];
    snprintf(full, sizeof full, "%s%s", strchr(path, '/') ? "" : "./", path);
    void *dl = dlopen(full, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        const char *m = dlerror();
        free(path);
        return saefw_errf(err, errlen, "plugin %s: not a loadable shared object: %s", name_or_path, m ? m : "?");
    }
    saefw_plugin_init_fn init;
    *(void **)&init = dlsym(dl, SAEFW_PLUGIN_ENTRY);
    if (!init) {
        dlclose(dl);
        free(path);
        return saefw_errf(err, errlen, "plugin %s: missing entry point %s()", name_or_path, SAEFW_PLUGIN_ENTRY);
    }
    saefw_loaded_plugin *lp = saefw_calloc(1, sizeof *lp, err, errlen);
    if (!lp) {
        dlclose(dl);
        free(path);
        return -1;
    }
    lp->dl = dl;
    lp->path = path;
    char perr[512] = "";
    const saefw_plugin *d = init(host, perr, sizeof perr);
    if (!d) {
        saefw_errf(err, errlen, "plugin %s: init failed: %s", name_or_path, perr[0] ? perr : "(no message)");
        saefw_plugin_unload(lp);
        return -1;
    }
    /* The version and size come first in every version of the descriptor: read them alone before
     * copying anything. */
    if (d->abi_version != SAEFW_ABI_VERSION) {
        saefw_errf(err, errlen,
                   "plugin %s: ABI mismatch: built for ABI version %u, this saefw speaks %u (rebuild it against this "
                   "saefw's plugin.h)",
                   name_or_path, d->abi_version, SAEFW_ABI_VERSION);
        saefw_plugin_unload(lp);
        return -1;
    }
    if (d->struct_size < SAEFW_PLUGIN_SIZE_2_0) {
        saefw_errf(err, errlen,
                   "plugin %s: ABI mismatch: struct_size %u is smaller than ABI 2.0's saefw_plugin (%zu bytes)",
                   name_or_path, d->struct_size, (size_t)SAEFW_PLUGIN_SIZE_2_0);
        saefw_plugin_unload(lp);
        return -1;
    }
    /* Fields past the smaller size stay zero: absent for an older plugin, unknown (ignored) for a newer one. */
    memcpy(&lp->p, d, d->struct_size < sizeof lp->p ? d->struct_size : sizeof lp->p);
    lp->p.struct_size = sizeof lp->p;
    if (copy_options(lp, name_or_path, err, errlen) != 0 || check_descriptor(lp, name_or_path, err, errlen) != 0) {
        saefw_plugin_unload(lp);
        return -1;
    }
    if (check_options(&lp->p, name_or_path, err, errlen) != 0) {
        saefw_plugin_unload(lp);
        return -1;
    }
    *out = lp;
    return 0;
}

void saefw_plugin_unload(saefw_loaded_plugin *lp) {
    if (!lp) return;
    if (lp->dl) dlclose(lp->dl);
    free(lp->options);
    free(lp->path);
    free(lp);
}

/* ---- options ---- */

static int opt_index(const saefw_opts *o, const char *name) {
    for (int i = 0; i < o->n; i++)
        if (strcmp(o->spec[i].name, name) == 0) return i;
    return -1;
}

static int unknown_option(const saefw_opts *o, const saefw_loaded_plugin *lp, const char *name, char *err,
                          size_t errlen) {
    char list[512] = "";
    for (int i = 0; i < o->n; i++) {
        size_t used = strlen(list);
        snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", o->spec[i].name);
    }
    return saefw_errf(err, errlen, "plugin %s: unknown option '%s' (it takes: %s)", lp->p.name, name,
                      o->n ? list : "no options");
}

int saefw_opts_new(const saefw_loaded_plugin *lp, saefw_opts **out, char *err, size_t errlen) {
    *out = NULL;
    saefw_opts *o = saefw_calloc(1, sizeof *o, err, errlen);
    if (!o) return -1;
    o->spec = lp->p.options;
    if (o->spec)
        while (o->spec[o->n].name) o->n++;
    o->num = saefw_calloc((size_t)o->n, sizeof(double), err, errlen);
    o->str = o->num ? saefw_calloc((size_t)o->n, sizeof(char *), err, errlen) : NULL;
    o->given = o->str ? saefw_calloc((size_t)o->n, 1, err, errlen) : NULL;
    if (!o->given) {
        saefw_opts_free(o);
        return -1;
    }
    for (int i = 0; i < o->n; i++) {
        o->num[i] = o->spec[i].def_number;
        if (o->spec[i].def_string && !(o->str[i] = saefw_strdup(o->spec[i].def_string, err, errlen))) {
            saefw_opts_free(o);
            return -1;
        }
    }
    *out = o;
    return 0;
}

static const char *type_name(saefw_opt_type t) {
    switch (t) {
    case SAEFW_OPT_NUMBER: return "a number";
    case SAEFW_OPT_INTEGER: return "an integer";
    case SAEFW_OPT_BOOL: return "a boolean";
    case SAEFW_OPT_STRING: return "a string";
    }
    return "?";
}

int saefw_opts_set_number(saefw_opts *o, const saefw_loaded_plugin *lp, const char *name, double v, char *err,
                          size_t errlen) {
    int i = opt_index(o, name);
    if (i < 0) return unknown_option(o, lp, name, err, errlen);
    saefw_opt_type t = o->spec[i].type;
    if (t == SAEFW_OPT_NUMBER || (t == SAEFW_OPT_INTEGER && v == floor(v) && fabs(v) < 9.007199254740992e15)) {
        if (!isfinite(v)) return saefw_errf(err, errlen, "plugin %s: option '%s' must be finite", lp->p.name, name);
        o->num[i] = v;
        o->given[i] = 1;
        return 0;
    }
    return saefw_errf(err, errlen, "plugin %s: option '%s' must be %s, got %g", lp->p.name, name, type_name(t), v);
}

int saefw_opts_set_bool(saefw_opts *o, const saefw_loaded_plugin *lp, const char *name, int v, char *err,
                        size_t errlen) {
    int i = opt_index(o, name);
    if (i < 0) return unknown_option(o, lp, name, err, errlen);
    if (o->spec[i].type != SAEFW_OPT_BOOL)
        return saefw_errf(err, errlen, "plugin %s: option '%s' must be %s, got a boolean", lp->p.name, name,
                          type_name(o->spec[i].type));
    o->num[i] = v ? 1.0 : 0.0;
    o->given[i] = 1;
    return 0;
}

int saefw_opts_set_string(saefw_opts *o, const saefw_loaded_plugin *lp, const char *name, const char *v, char *err,
                          size_t errlen) {
    int i = opt_index(o, name);
    if (i < 0) return unknown_option(o, lp, name, err, errlen);
    if (o->spec[i].type != SAEFW_OPT_STRING)
        return saefw_errf(err, errlen, "plugin %s: option '%s' must be %s, got a string", lp->p.name, name,
                          type_name(o->spec[i].type));
    char *s = saefw_strdup(v, err, errlen);
    if (!s) return -1;
    free(o->str[i]);
    o->str[i] = s;
    o->given[i] = 1;
    return 0;
}

int saefw_opts_check(const saefw_opts *o, const saefw_loaded_plugin *lp, char *err, size_t errlen) {
    for (int i = 0; i < o->n; i++)
        if (o->spec[i].type == SAEFW_OPT_STRING && !o->str[i])
            return saefw_errf(err, errlen, "plugin %s: option '%s' is required", lp->p.name, o->spec[i].name);
    return 0;
}

void saefw_opts_free(saefw_opts *o) {
    if (!o) return;
    if (o->str)
        for (int i = 0; i < o->n; i++) free(o->str[i]);
    free(o->str);
    free(o->num);
    free(o->given);
    free(o);
}

double saefw_opts_number(const saefw_opts *o, const char *name) {
    int i = opt_index(o, name);
    return i < 0 ? 0.0 : o->num[i];
}

const char *saefw_opts_string(const saefw_opts *o, const char *name) {
    int i = opt_index(o, name);
    return i < 0 ? NULL : o->str[i];
}
