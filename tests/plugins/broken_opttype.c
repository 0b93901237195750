/* Deliberately broken plugin for the loader tests: it declares an option of a type that does not
 * exist (and is otherwise a valid experiment). */
#include <string.h>

#include <saefw/plugin.h>

static const saefw_option OPTIONS[] = {
    {.name = "every", .type = SAEFW_OPT_INTEGER, .def_number = 10, .help = "a valid option"},
    {.name = "mode", .type = (saefw_opt_type)9, .def_number = 0, .help = "an option of no known type"},
    {0},
};

static int after_step(void *self, saefw_run *run, char *err, size_t errlen) { return 0; }

SAEFW_EXPORT int saefw_plugin_init(const saefw_host *host, saefw_plugin *out, char *err, size_t errlen) {
    out->name = "broken_opttype";
    out->kind = SAEFW_KIND_EXPERIMENT;
    out->options = OPTIONS;
    out->after_step = after_step;
    out->stateless = 1;
    return 0;
}
