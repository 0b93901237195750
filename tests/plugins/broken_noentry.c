/* Deliberately broken plugin for the loader tests: exports no saefw_plugin_init. */
#include <saefw/plugin.h>

SAEFW_EXPORT const saefw_plugin *saefw_plugin_initialise(const saefw_host *host, char *err, size_t errlen);

const saefw_plugin *saefw_plugin_initialise(const saefw_host *host, char *err, size_t errlen) { return NULL; }
