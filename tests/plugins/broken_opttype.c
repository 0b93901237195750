/* Deliberately broken plugin for the loader tests: it declares an option of a type that does not
 * exist (and is otherwise a valid experiment). */
#include <saefw/plugin.h>

static const saefw_option OPTIONS[] = {
    {.name = "every", .type = SAEFW_OPT_INTEGER, .def_number = 10, .help = "a valid option"},
    {.name = "mode", .type = (saefw_opt_type)9, .def_number = 0, .help = "an option of no known type"},
    {0},
};

static int after_step(void *self, saefw_run *run, char *err, size_t errlen) { return 0; }

static const saefw_plugin PLUGIN = {
    .abi_version = SAEFW_ABI_VERSION,
    .struct_size = sizeof(saefw_plugin),
    .name = "broken_opttype",
    .kind = SAEFW_KIND_EXPERIMENT,
    .options = OPTIONS,
    .option_size = sizeof(saefw_option),
    .after_step = after_step,
    .stateless = 1,
};

SAEFW_EXPORT const saefw_plugin *saefw_plugin_init(const saefw_host *host, char *err, size_t errlen) { return &PLUGIN; }
