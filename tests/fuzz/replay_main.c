/* main() for building a fuzz target without libFuzzer (any compiler): runs LLVMFuzzerTestOneInput
 * once on every file of the folders (or files) named on the command line, so ctest replays the
 * committed corpora and crash inputs. A missing folder counts as empty; replaying nothing at all
 * is a failure, so a lost corpus does not pass silently. A crash or an input that runs longer than
 * SAEFW_FUZZ_REPLAY_TIMEOUT seconds (default 30) names the input and fails. */
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *current = "";

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "replay: input ran too long: ";
    if (write(2, msg, sizeof msg - 1) < 0 || write(2, current, strlen(current)) < 0 || write(2, "\n", 1) < 0) _exit(3);
    _exit(3);
}

static int run_file(const char *path, unsigned timeout_s) {
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f || fstat(fileno(f), &st) != 0) {
        if (f) fclose(f);
        fprintf(stderr, "replay: cannot open %s\n", path);
        return -1;
    }
    /* An exact-size buffer, as libFuzzer gives, so a read past the end is caught. */
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    int ok = buf && fread(buf, 1, n, f) == n;
    fclose(f);
    if (!ok) {
        free(buf);
        fprintf(stderr, "replay: cannot read %s\n", path);
        return -1;
    }
    current = path;
    fprintf(stderr, "replay: %s (%zu bytes)\n", path, n);
    alarm(timeout_s);
    LLVMFuzzerTestOneInput(buf, n);
    alarm(0);
    free(buf);
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Every regular file of dir, in name order so a run is repeatable. */
static int run_dir(const char *dir, unsigned timeout_s, int *count) {
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "replay: %s: no such folder, nothing to replay there\n", dir);
        return 0;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn) {
                rc = -1;
                break;
            }
            names = nn;
        }
        if (!(names[n] = strdup(e->d_name))) {
            rc = -1;
            break;
        }
        n++;
    }
    closedir(d);
    if (rc == 0) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (rc == 0 && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            if (run_file(path, timeout_s) != 0) rc = -1;
            else ++*count;
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s FOLDER_OR_FILE...\n", argv[0]);
        return 2;
    }
    const char *t = getenv("SAEFW_FUZZ_REPLAY_TIMEOUT");
    unsigned timeout_s = t && atoi(t) > 0 ? (unsigned)atoi(t) : 30;
    signal(SIGALRM, on_alarm);
    int count = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        int rc = stat(argv[i], &st) == 0 && S_ISREG(st.st_mode)
                     ? (run_file(argv[i], timeout_s) == 0 ? (count++, 0) : -1)
                     : run_dir(argv[i], timeout_s, &count);
        if (rc != 0) return 1;
    }
    if (count == 0) {
        fprintf(stderr, "replay: no inputs found\n");
        return 1;
    }
    printf("replay: %d inputs ran without a crash\n", count);
    return 0;
}
