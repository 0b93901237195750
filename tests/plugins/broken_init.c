/* Deliberately broken plugin for the loader tests: its init reports a failure. */
#include <stdio.h>

#include <saefw/plugin.h>

SAEFW_EXPORT int saefw_plugin_init(const saefw_host *host, saefw_plugin *out, char *err, size_t errlen) {
    snprintf(err, errlen, "needs a GPU that is not there");
    return 1;
}
