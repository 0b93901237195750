/* Deliberately broken plugin for the loader tests: its descriptor's struct_size is smaller than
 * ABI 2.0's saefw_plugin, as from a header that never existed. */
#include <saefw/plugin.h>

static const saefw_plugin PLUGIN = {
    .abi_version = SAEFW_ABI_VERSION,
    .struct_size = 8,
    .name = "broken_size",
    .kind = SAEFW_KIND_EXPERIMENT,
};

const saefw_plugin *saefw_plugin_init(const saefw_host *host, char *err, size_t errlen) { return &PLUGIN; }
