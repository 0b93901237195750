/* Deliberately broken plugin for the loader tests: claims an ABI version the engine does not speak. */
#include <saefw/plugin.h>

SAEFW_EXPORT int saefw_plugin_init(const saefw_host *host, saefw_plugin *out, char *err, size_t errlen) {
    out->abi_version = 999;
    out->struct_size = sizeof(saefw_plugin);
    out->name = "broken_abi";
    out->kind = SAEFW_KIND_EXPERIMENT;
    return 0;
}
