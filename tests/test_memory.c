/* Memory before it is spent (issue 18, point 10): sizes parse, the available memory honours
 * MemAvailable and a cgroup limit, a run or buffer that cannot fit is refused at once without
 * allocating, and the overrides (--allow-memory, --memory-limit) work from the command line. */
#include <stdarg.h>
#include <sys/wait.h>
#include <unistd.h>

#include "memory.h"
#include "source.h"
#include "testutil.h"
#include "util.h"

static char out[1 << 16];

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    REQUIRE(f && fputs(text, f) >= 0 && fclose(f) == 0, "cannot write %s", path);
}

int main(void) {
    char err[512];
    int64_t v = 0;
    CHECK(saefw_mem_parse("8G", &v, err, sizeof err) == 0 && v == (int64_t)8 << 30, "8G -> %lld", (long long)v);
    CHECK(saefw_mem_parse("512MiB", &v, err, sizeof err) == 0 && v == (int64_t)512 << 20, "512MiB -> %lld",
          (long long)v);
    CHECK(saefw_mem_parse("1e6", &v, err, sizeof err) == 0 && v == 1000000, "1e6 -> %lld", (long long)v);
    CHECK(saefw_mem_parse("8Q", &v, err, sizeof err) != 0 && strstr(err, "8Q"), "8Q accepted: %s", err);
    CHECK(saefw_mem_parse("-1G", &v, err, sizeof err) != 0, "-1G accepted");
    CHECK(saefw_mem_parse("", &v, err, sizeof err) != 0, "empty size accepted");

    char what[160];
    const int64_t real = saefw_mem_available(what, sizeof what);
    CHECK(real > 0, "no available memory read (%lld)", (long long)real);

    /* A fake machine: 1 GiB available, in a cgroup limited to 512 MiB of which 128 MiB are used. */
    const char *tmp = t_tmpdir("test_memory");
    char path[2048], cg[2048];
    snprintf(path, sizeof path, "%s/meminfo", tmp);
    write_text(path, "MemTotal:       4194304 kB\nMemFree:         100 kB\nMemAvailable:    1048576 kB\n");
    snprintf(cg, sizeof cg, "%s/cgroup", tmp);
    REQUIRE(saefw_mkdirs(cg, err, sizeof err) == 0, "%s", err);
    char f[2100];
    snprintf(f, sizeof f, "%s/memory.max", cg);
    write_text(f, "536870912\n");
    snprintf(f, sizeof f, "%s/memory.current", cg);
    write_text(f, "134217728\n");
    setenv("SAEFW_MEMINFO", path, 1);
    setenv("SAEFW_CGROUP_ROOT", cg, 1);
    int64_t rss = saefw_mem_rss(), have = saefw_mem_available(what, sizeof what);
    CHECK(rss > 0 && have >= ((int64_t)384 << 20) + rss - 8192 && have <= ((int64_t)384 << 20) + rss + (8 << 20) &&
              strstr(what, "memory.max"),
          "cgroup room: %lld (%s), rss %lld", (long long)have, what, (long long)rss);
    snprintf(f, sizeof f, "%s/memory.max", cg);
    write_text(f, "max\n");
    have = saefw_mem_available(what, sizeof what);
    CHECK(have >= ((int64_t)1 << 30) && !strcmp(what, "MemAvailable"), "no cgroup limit: %lld (%s)", (long long)have,
          what);
    CHECK(saefw_mem_check("the thing", 2e9, err, sizeof err) != 0 && strstr(err, "the thing") &&
              strstr(err, "--allow-memory"),
          "2 GB on a 1 GiB machine: %s", err);
    CHECK(saefw_mem_check("the thing", 1e8, err, sizeof err) == 0, "100 MB on a 1 GiB machine refused: %s", err);
    unsetenv("SAEFW_MEMINFO");
    unsetenv("SAEFW_CGROUP_ROOT");

    /* A buffer of 1 TiB is refused at once, before anything is allocated. */
    saefw_synthetic_opts so = {.d_in = 512, .n_features = 1024, .p_active = 0.01, .max_magnitude = 1, .seed = 1};
    saefw_source *src = NULL;
    REQUIRE(saefw_source_synthetic(&so, &src, err, sizeof err) == 0, "%s", err);
    saefw_buffer b;
    const int64_t peak0 = saefw_mem_peak();
    double t0 = saefw_now();
    int rc = saefw_buffer_init(&b, src, (int64_t)1 << 30, 4096, SAEFW_BUF_BF16, 1, err, sizeof err);
    double dt = saefw_now() - t0;
    CHECK(rc != 0 && strstr(err, "activation buffer") && strstr(err, "TiB") && strstr(err, "--allow-memory"),
          "1 TiB buffer: rc %d: %s", rc, err);
    CHECK(dt < 0.5, "the refusal took %.2f s", dt);
    CHECK(saefw_mem_peak() - peak0 < (16 << 20), "peak memory grew by %lld bytes",
          (long long)(saefw_mem_peak() - peak0));
    printf("  1 TiB buffer refused in %.3f s: %s\n", dt, err);
    /* A limit below the need refuses a small one; allowing runs it. */
    saefw_mem_set_policy(0, 1 << 20);
    CHECK(saefw_buffer_init(&b, src, 4096, 256, SAEFW_BUF_F32, 1, err, sizeof err) != 0 && strstr(err, "memory_limit"),
          "limit 1 MiB: %s", err);
    saefw_mem_set_policy(1, 1 << 20);
    CHECK(saefw_buffer_init(&b, src, 4096, 256, SAEFW_BUF_F32, 1, err, sizeof err) == 0, "allowed: %s", err);
    saefw_buffer_free(&b);
    saefw_mem_set_policy(0, 0);
    saefw_source_free(src);

    /* The command line: the estimate is printed, a run that cannot fit is refused quickly. */
    const char *bin = getenv("SAEFW_BIN");
    REQUIRE(bin && *bin, "SAEFW_BIN is not set (run under ctest)");
    t0 = saefw_now();
    rc = t_run(
        out, sizeof out,
        "%s run ../experiments/toy.lua --d_in 512 --dict_mult 4 --batch_size 4096 --buffer_mult 262144 --run_dir %s/a",
        bin, tmp);
    dt = saefw_now() - t0;
    CHECK(rc != 0 && strstr(out, "activation buffer") && strstr(out, "needs an estimated"), "1 TiB toy: rc %d\n%s", rc,
          out);
    CHECK(dt < 2, "the refusal took %.2f s", dt);
    rc = t_run(out, sizeof out, "%s run ../experiments/toy.lua --steps 20 --memory-limit 2M --run_dir %s/b", bin, tmp);
    CHECK(rc != 0 && strstr(out, "memory_limit"), "--memory-limit 2M: rc %d\n%s", rc, out);
    rc = t_run(out, sizeof out, "%s run ../experiments/toy.lua --steps 20 --eval_every 10 --run_dir %s/c", bin, tmp);
    CHECK(rc == 0 && strstr(out, "memory: estimated peak") && strstr(out, "memory: peak resident"), "toy: rc %d\n%s",
          rc, out);
    rc = t_run(out, sizeof out,
               "%s run ../experiments/toy.lua --steps 20 --memory-limit 2M --allow-memory --run_dir %s/d", bin, tmp);
    CHECK(rc == 0, "--allow-memory: rc %d\n%s", rc, out);
    rc = t_run(out, sizeof out, "%s run ../experiments/toy.lua --memory-limit lots --run_dir %s/e", bin, tmp);
    CHECK(rc == 2 && strstr(out, "lots"), "--memory-limit lots: rc %d\n%s", rc, out);
    return t_finish("test_memory");
}
