/* Deliberately broken plugin for the loader tests: claims an ABI version the engine does not speak. */
#include <saefw/plugin.h>

static const saefw_plugin PLUGIN = {
    .abi_version = 999,
    .struct_size = sizeof(saefw_plugin),
    .name = "broken_abi",
    .kind = SAEFW_KIND_EXPERIMENT,
};

const saefw_plugin *saefw_plugin_init(const saefw_host *host, char *err, size_t errlen) { return &PLUGIN; }
