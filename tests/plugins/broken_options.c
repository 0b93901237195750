/* Deliberately broken plugin for the loader tests: it lists options but leaves option_size 0, so
 * the engine cannot know how long its entries are. */
#include <saefw/plugin.h>

static const saefw_option OPTIONS[] = {
    {"every", SAEFW_OPT_INTEGER, 1, NULL, "an option"},
    {NULL, 0, 0, NULL, NULL},
};

static const saefw_plugin PLUGIN = {
    .abi_version = SAEFW_ABI_VERSION,
    .struct_size = sizeof(saefw_plugin),
    .name = "broken_options",
    .kind = SAEFW_KIND_EXPERIMENT,
    .options = OPTIONS,
};

const saefw_plugin *saefw_plugin_init(const saefw_host *host, char *err, size_t errlen) { return &PLUGIN; }
