/* Deliberately broken plugin for the loader tests: its init reports a failure. */
#include <saefw/plugin.h>

const saefw_plugin *saefw_plugin_init(const saefw_host *host, char *err, size_t errlen) {
    saefw_fail(err, errlen, "needs a GPU that is not there");
    return NULL;
}
