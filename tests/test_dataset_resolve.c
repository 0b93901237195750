/* saefw_dataset_resolve on a fake huggingface_hub cache built here (refs, snapshots of symlinks
 * into blobs, as `saefw download --dataset` and huggingface_hub write it), on local folders, files
 * and globs, and the error messages for what is absent or broken. */
#include <sys/stat.h>
#include <unistd.h>

#include "dataset_resolve.h"
#include "testutil.h"

#define COMMIT_A "1111111111111111111111111111111111111111"
#define COMMIT_B "2222222222222222222222222222222222222222"

static char root[1024];

static void put(const char *rel, const char *text) {
    char p[2048], cmd[4200];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    snprintf(cmd, sizeof cmd, "mkdir -p \"$(dirname '%s')\"", p);
    REQUIRE(system(cmd) == 0, "mkdir for %s", p);
    FILE *f = fopen(p, "w");
    REQUIRE(f && fputs(text, f) >= 0 && fclose(f) == 0, "write %s", p);
}

/* snapshots/<commit>/<rel> -> ../../(../)*blobs/<blob>, the layout huggingface_hub creates. */
static void link_blob(const char *repo_dir, const char *commit, const char *rel, const char *blob) {
    char target[1024] = "../../", p[2048], cmd[4200];
    for (const char *c = rel; *c; c++)
        if (*c == '/') strcat(target, "../");
    strcat(target, "blobs/");
    strcat(target, blob);
    snprintf(p, sizeof p, "%s/%s/snapshots/%s/%s", root, repo_dir, commit, rel);
    snprintf(cmd, sizeof cmd, "mkdir -p \"$(dirname '%s')\"", p);
    REQUIRE(system(cmd) == 0 && symlink(target, p) == 0, "symlink %s", p);
}

/* Resolve and compare the paths relative to `base` (a prefix stripped from each) with want. */
static void expect(const char *spec, const char *pattern, const char *base, const char *const *want, size_t nwant) {
    saefw_shards s;
    char err[1024] = "";
    int rc = saefw_dataset_resolve(spec, pattern, &s, err, sizeof err);
    CHECK(rc == 0, "%s: %s", spec, err);
    if (rc != 0) return;
    CHECK(s.n == nwant, "%s: %zu shards, want %zu", spec, s.n, nwant);
    for (size_t i = 0; i < s.n && i < nwant; i++) {
        size_t bl = strlen(base);
        const char *rel = strncmp(s.paths[i], base, bl) == 0 ? s.paths[i] + bl : s.paths[i];
        CHECK(!strcmp(rel, want[i]), "%s: shard %zu is %s, want %s", spec, i, s.paths[i], want[i]);
        FILE *f = fopen(s.paths[i], "r");
        CHECK(f != NULL, "%s: cannot open %s", spec, s.paths[i]);
        if (f) fclose(f);
    }
    saefw_shards_free(&s);
}

static void expect_error(const char *spec, const char *pattern, const char *needle1, const char *needle2) {
    saefw_shards s;
    char err[1024] = "";
    int rc = saefw_dataset_resolve(spec, pattern, &s, err, sizeof err);
    CHECK(rc != 0, "%s: resolved, expected an error", spec);
    if (rc == 0) {
        saefw_shards_free(&s);
        return;
    }
    CHECK(strstr(err, needle1) != NULL, "%s: '%s' lacks '%s'", spec, err, needle1);
    CHECK(!needle2 || strstr(err, needle2) != NULL, "%s: '%s' lacks '%s'", spec, err, needle2);
    CHECK(!strchr(err, '\n'), "%s: message is not one line", spec);
}

int main(void) {
    snprintf(root, sizeof root, "%s", t_tmpdir("dataset_resolve"));
    REQUIRE(chdir(root) == 0, "chdir %s", root);
    const char *ds = "hub/datasets--org--ds";
    put("hub/datasets--org--ds/refs/main", COMMIT_A);
    put("hub/datasets--org--ds/refs/v1", COMMIT_B "\n");
    const char *blobs[] = {"b0", "b1", "b2", "b3", "b4", "b5"};
    for (int i = 0; i < 6; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "hub/datasets--org--ds/blobs/%s", blobs[i]);
        put(rel, "PAR1");
    }
    /* Made out of order, so the listing has to sort them. */
    link_blob(ds, COMMIT_A, "data/train-00002-of-00003.parquet", "b2");
    link_blob(ds, COMMIT_A, "data/train-00000-of-00003.parquet", "b0");
    link_blob(ds, COMMIT_A, "data/train-00001-of-00003.parquet", "b1");
    link_blob(ds, COMMIT_A, "data/sub/extra.parquet", "b3");
    link_blob(ds, COMMIT_A, "data/.hidden.parquet", "b3");
    link_blob(ds, COMMIT_A, "README.md", "b4");
    link_blob(ds, COMMIT_B, "train.parquet", "b5");
    setenv("HF_HUB_CACHE", "hub", 1);
    unsetenv("HUGGINGFACE_HUB_CACHE");

    char snapA[1200], snapB[1200];
    snprintf(snapA, sizeof snapA, "hub/datasets--org--ds/snapshots/%s/", COMMIT_A);
    snprintf(snapB, sizeof snapB, "hub/datasets--org--ds/snapshots/%s/", COMMIT_B);
    const char *all[] = {"data/sub/extra.parquet", "data/train-00000-of-00003.parquet",
                         "data/train-00001-of-00003.parquet", "data/train-00002-of-00003.parquet"};
    expect("hf://datasets/org/ds", NULL, snapA, all, 4);
    expect("hf://datasets/org/ds/", NULL, snapA, all, 4);
    expect("org/ds", NULL, snapA, all, 4);
    expect("hf://datasets/org/ds@main", NULL, snapA, all, 4);
    expect("hf://datasets/org/ds/data", NULL, snapA, all, 4);
    expect("hf://datasets/org/ds/data/*.parquet", NULL, snapA, all + 1, 3);
    expect("hf://datasets/org/ds/data/train-0000[02]-*", NULL, snapA, (const char *const[]){all[1], all[3]}, 2);
    expect("hf://datasets/org/ds/data/train-00001-of-00003.parquet", NULL, snapA, all + 2, 1);
    expect("hf://datasets/org/ds/**/extra.parquet", NULL, snapA, all, 1);
    expect("hf://datasets/org/ds/data/.hidden.parquet", NULL, snapA, (const char *const[]){"data/.hidden.parquet"}, 1);
    expect("hf://datasets/org/ds", "*.md", snapA, (const char *const[]){"README.md"}, 1);
    expect("hf://datasets/org/ds@v1", NULL, snapB, (const char *const[]){"train.parquet"}, 1);
    expect("hf://datasets/org/ds@" COMMIT_B, NULL, snapB, (const char *const[]){"train.parquet"}, 1);
    saefw_shards s;
    char err[1024];
    REQUIRE(saefw_dataset_resolve("org/ds", NULL, &s, err, sizeof err) == 0, "%s", err);
    CHECK(!strcmp(s.commit, COMMIT_A), "commit %s", s.commit);
    CHECK(!strcmp(s.root, "hub/datasets--org--ds/snapshots/" COMMIT_A), "root %s", s.root);
    saefw_shards_free(&s);

    /* The cache folder comes from the same variables as everywhere else. */
    unsetenv("HF_HUB_CACHE");
    char elsewhere[1200];
    snprintf(elsewhere, sizeof elsewhere, "%s/elsewhere", root);
    setenv("HF_HOME", elsewhere, 1);
    expect_error("org/ds", NULL, "saefw download --dataset org/ds", "elsewhere/hub/datasets--org--ds");
    REQUIRE(rename("hub", "hub2") == 0 && mkdir("hfhome", 0755) == 0 && rename("hub2", "hfhome/hub") == 0, "move");
    char hfhome[1200];
    snprintf(hfhome, sizeof hfhome, "%s/hfhome", root);
    setenv("HF_HOME", hfhome, 1);
    char abs_snap[2400];
    snprintf(abs_snap, sizeof abs_snap, "%s/hub/datasets--org--ds/snapshots/%s/", hfhome, COMMIT_A);
    expect("org/ds", NULL, abs_snap, all, 4);

    /* Absent datasets and revisions: the exact command that fetches them. */
    expect_error("hf://datasets/org/none", NULL, "not in the Hugging Face cache",
                 "run: saefw download --dataset org/none");
    expect_error("org/none", NULL,
                 "org/none (revision main) is neither a local file or folder nor in the Hugging Face cache",
                 "run: saefw download --dataset org/none");
    expect_error("hf://datasets/org/ds@v9", NULL, "saefw download --dataset org/ds --revision v9", NULL);
    expect_error("hf://datasets/org/ds@" COMMIT_B "/x", NULL, "no file matches", NULL);
    expect_error("hf://datasets/org/ds/nothing/*.parquet", NULL, "no file matches nothing/*.parquet",
                 "saefw download --dataset org/ds");
    expect_error("hf://datasets/org/ds@"
                 "3333333333333333333333333333333333333333",
                 NULL, "not in the Hugging Face cache", NULL);
    /* A snapshot entry whose blob is gone (cleaned cache) is an error, not a silently missing shard. */
    link_blob("hfhome/hub/datasets--org--ds", COMMIT_A, "data/train-00003-of-00003.parquet", "gone");
    expect_error("hf://datasets/org/ds", NULL, "missing blob", "saefw download --dataset org/ds");
    expect("hf://datasets/org/ds/data/train-0000[0-2]*", NULL, abs_snap, all + 1, 3);

    /* Bad URIs. */
    expect_error("hf://models/org/m", NULL, "hf://datasets/ORG/NAME", NULL);
    expect_error("hf://datasets/org", NULL, "expected hf://datasets/ORG/NAME", NULL);
    expect_error("hf://datasets/org/na me", NULL, "expected", NULL);
    expect_error("hf://datasets/org/ds@/x", NULL, "bad revision", NULL);
    expect_error("hf://datasets/org/ds@..%2F..%2Fx", NULL, "bad revision", NULL);
    expect_error("", NULL, "empty", NULL);

    /* Local folders, files and globs. */
    put("local/b.parquet", "PAR1");
    put("local/a.parquet", "PAR1");
    put("local/sub/c.parquet", "PAR1");
    put("local/.hid/d.parquet", "PAR1");
    put("local/notes.txt", "x");
    put("empty/notes.txt", "x");
    const char *loc[] = {"local/a.parquet", "local/b.parquet", "local/sub/c.parquet"};
    expect("local", NULL, "", loc, 3);
    expect("local/", NULL, "", (const char *const[]){"local/a.parquet", "local/b.parquet", "local/sub/c.parquet"}, 3);
    expect("local/*.parquet", NULL, "", loc, 2);
    expect("local/**/*.parquet", NULL, "", loc, 3);
    expect("local/**", NULL, "",
           (const char *const[]){"local/a.parquet", "local/b.parquet", "local/notes.txt", "local/sub/c.parquet"}, 4);
    expect("local/[!a].parquet", NULL, "", loc + 1, 1);
    expect("*/sub/?.parquet", NULL, "", loc + 2, 1);
    expect("local/b.parquet", NULL, "", loc + 1, 1);
    expect("local", "*.txt", "", (const char *const[]){"local/notes.txt"}, 1);
    char absglob[1300];
    snprintf(absglob, sizeof absglob, "%s/local/*.parquet", root);
    char absbase[1300];
    snprintf(absbase, sizeof absbase, "%s/", root);
    expect(absglob, NULL, absbase, loc, 2);
    expect_error("empty", NULL, "dataset folder empty: no file matches", NULL);
    expect_error("local/*.json", NULL, "no file matches *.json", NULL);
    expect_error("nope/x/y", NULL, "no such file or folder", NULL);
    expect_error("nope/*.parquet", NULL, "nope", "cannot list");

    /* The glob rules on their own. */
    static const struct {
        const char *g, *p;
        int want;
    } G[] = {
        {"*.parquet", "a.parquet", 1},
        {"*.parquet", "d/a.parquet", 0},
        {"**/*.parquet", "a.parquet", 1},
        {"**/*.parquet", "d/e/a.parquet", 1},
        {"**", "d/e/f", 1},
        {"d/**", "d/e/f", 1},
        {"d/**/f", "d/f", 1},
        {"d/**/f", "d/x/y/f", 1},
        {"d/*/f", "d/x/y/f", 0},
        {"?.p", "a.p", 1},
        {"?.p", "/.p", 0},
        {"[a-c]x", "bx", 1},
        {"[a-c]x", "dx", 0},
        {"[!a-c]x", "dx", 1},
        {"[]]x", "]x", 1},
        {"[ab", "[ab", 1},
        {"train-*", "train-0.parquet", 1},
        {"", "", 1},
        {"a", "", 0},
        {"*", "", 1},
        {"**x", "a/bx", 1},
    };
    for (size_t i = 0; i < sizeof G / sizeof *G; i++)
        CHECK(saefw_glob_match(G[i].g, G[i].p) == G[i].want, "glob '%s' on '%s' should give %d", G[i].g, G[i].p,
              G[i].want);
    return t_finish("test_dataset_resolve");
}
