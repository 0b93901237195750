/* Damaged plugin files give a one-line error, never a crash: copies of a real plugin cut short at
 * several lengths (inside the ELF header, inside the program headers, inside a segment, just before
 * the end) are each loaded in a child process, which must neither fault nor load it. A plugin that
 * declares an option of no known type is refused too. */
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "plugin_loader.h"
#include "testutil.h"
#include "train.h"

/* Load path in a child: exit 0 when refused with `phrase` in a one-line error, 1 otherwise. */
static int load_in_child(const char *path, const char *phrase) {
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        saefw_loaded_plugin *lp = NULL;
        char err[1024] = "";
        int rc = saefw_plugin_load(path, saefw_host_table(), &lp, err, sizeof err);
        printf("  %-60s -> %s\n", strrchr(path, '/') + 1, rc ? err : "(loaded)");
        fflush(stdout);
        _exit(rc != 0 && strstr(err, phrase) && !strchr(err, '\n') ? 0 : 1);
    }
    int st = 0;
    REQUIRE(waitpid(pid, &st, 0) == pid, "waitpid");
    if (WIFSIGNALED(st)) fprintf(stderr, "%s: the loader died with signal %d\n", path, WTERMSIG(st));
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

int main(void) {
    const char *dirs = getenv("SAEFW_PLUGIN_PATH");
    REQUIRE(dirs && *dirs, "SAEFW_PLUGIN_PATH is not set (run under ctest)");
    char src[2048];
    snprintf(src, sizeof src, "%s/adam.so", dirs);
    size_t n = 0;
    FILE *f = fopen(src, "rb");
    REQUIRE(f, "cannot open %s", src);
    static char data[16 << 20];
    n = fread(data, 1, sizeof data, f);
    fclose(f);
    REQUIRE(n > 4096 && n < sizeof data, "%s: unexpected size %zu", src, n);
    const char *tmp = t_tmpdir("test_plugin_files");
    const size_t cuts[] = {10, 100, 1000, n / 4, n / 2, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        char p[2200];
        snprintf(p, sizeof p, "%s/adam_cut_at_%zu_of_%zu.so", tmp, cuts[i], n);
        f = fopen(p, "wb");
        REQUIRE(f && fwrite(data, 1, cuts[i], f) == cuts[i] && fclose(f) == 0, "writing %s", p);
        CHECK(load_in_child(p, "damaged shared object"), "%s: not refused as a damaged shared object", p);
    }

    /* An option of no known type is refused at load, naming it. */
    const char *tp = getenv("SAEFW_TEST_PLUGINS");
    REQUIRE(tp && *tp, "SAEFW_TEST_PLUGINS is not set (run under ctest)");
    char p[2200];
    snprintf(p, sizeof p, "%s/broken_opttype.so", tp);
    CHECK(load_in_child(p, "option 'mode' has the unknown type 9"), "an option of an unknown type was accepted");
    return t_finish("test_plugin_files");
}
