/* Deliberately broken plugin for the loader tests: exports no saefw_plugin_init. */
#include <saefw/plugin.h>

SAEFW_EXPORT int saefw_plugin_initialise(const saefw_host *host, saefw_plugin *out, char *err, size_t errlen) {
    return 0;
}
