/* Tests for the tensor-file readers and writers (engine/tensorfile.c; engine/torchpt.c with
 * engine/zipread.c and engine/torch_pickle.c): every fixture from
 * tests/reference/make_tensor_fixtures.py against the values torch/numpy recorded, write/read round
 * trips, 16-bit float conversions, one specific error per malformed input, and a seeded mutation loop
 * that must never crash. Runs from tests/; exits non-zero on any failure. */
#include "tensorfile.h"
#include "tensorfile_internal.h"
#include "torch_pickle.h"
#include "util.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#define FIX "fixtures/tensorfile/"
#define MUTATIONS 2000

static int failures;
static char tmpdir[2048];

#define CHECK(cond, ...)                                                                                               \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            failures++;                                                                                                \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                                \
            printf(__VA_ARGS__);                                                                                       \
            printf("\n");                                                                                              \
        }                                                                                                              \
    } while (0)

static const char *tmp_path(const char *name) {
    static char buf[8][4096];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static int write_bytes(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = len ? fwrite(data, 1, len, f) : 0;
    return fclose(f) == 0 && w == len ? 0 : -1;
}

static uint8_t *read_bytes(const char *path, size_t *len) {
    char *buf, err[512];
    if (saefw_read_file(path, &buf, len, err, sizeof err) != 0) {
        CHECK(0, "cannot read %s: %s", path, err);
        return NULL;
    }
    return (uint8_t *)buf;
}

/* Opening path must fail with an error naming the file and containing phrase. */
static void expect_fail(const char *path, const char *phrase) {
    saefw_tensorfile *tf = (saefw_tensorfile *)1;
    char err[1024] = "";
    int rc = saefw_tf_open(path, &tf, err, sizeof err);
    CHECK(rc == -1 && tf == NULL, "%s: opened, expected an error containing \"%s\"", path, phrase);
    if (rc == 0 && tf) saefw_tf_close(tf);
    CHECK(strstr(err, path) != NULL, "%s: error does not name the file: %s", path, err);
    CHECK(strstr(err, phrase) != NULL, "%s: error lacks \"%s\": %s", path, phrase, err);
    CHECK(strchr(err, '\n') == NULL, "%s: error is not one line: %s", path, err);
}

static void expect_fail_bytes(const char *name, const void *data, size_t len, const char *phrase) {
    const char *p = tmp_path(name);
    if (write_bytes(p, data, len) != 0) {
        CHECK(0, "cannot write %s", p);
        return;
    }
    expect_fail(p, phrase);
}

/* ------------------------------------------------------------------------------------------------
 * Fixtures against expected.json */

static int64_t raw_int(const saefw_tensor_info *t, int64_t i) {
    const uint8_t *p = (const uint8_t *)t->data + (size_t)i * saefw_dtype_size(t->dtype);
    int64_t i64;
    int32_t i32;
    int16_t i16;
    uint16_t u16;
    switch (t->dtype) {
    case SAEFW_DT_I64: memcpy(&i64, p, 8); return i64;
    case SAEFW_DT_I32: memcpy(&i32, p, 4); return i32;
    case SAEFW_DT_I16: memcpy(&i16, p, 2); return i16;
    case SAEFW_DT_U16: memcpy(&u16, p, 2); return u16;
    case SAEFW_DT_I8: return (int8_t)p[0];
    default: return p[0];
    }
}

static void check_values(const char *file, const saefw_tensor_info *t, const cJSON *jt) {
    const cJSON *vals = cJSON_GetObjectItem(jt, "values"), *bits = cJSON_GetObjectItem(jt, "bits");
    CHECK(cJSON_GetArraySize(vals) == t->numel, "%s/%s: %d expected values for %" PRId64 " elements", file, t->name,
          cJSON_GetArraySize(vals), t->numel);
    if (cJSON_GetArraySize(vals) != t->numel) return;
    int is_float =
        t->dtype == SAEFW_DT_F32 || t->dtype == SAEFW_DT_F16 || t->dtype == SAEFW_DT_BF16 || t->dtype == SAEFW_DT_F64;
    if (is_float) {
        char err[512];
        float *f = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *f);
        if (!f) {
            CHECK(0, "out of memory");
            return;
        }
        int rc = saefw_tensor_to_f32(t, f, err, sizeof err);
        CHECK(rc == 0, "%s/%s: to_f32: %s", file, t->name, err);
        double maxd = 0;
        int64_t i = 0;
        for (const cJSON *v = vals->child; rc == 0 && v; v = v->next, i++) {
            double want = (double)(float)v->valuedouble, d = f[i] == want ? 0 : fabs((double)f[i] - want);
            if (d > maxd || d != d) maxd = d != d ? INFINITY : d;
            if (t->dtype == SAEFW_DT_F64) {
                double raw;
                memcpy(&raw, (const uint8_t *)t->data + 8 * i, 8);
                CHECK(raw == v->valuedouble, "%s/%s[%" PRId64 "]: %.17g != %.17g", file, t->name, i, raw,
                      v->valuedouble);
            }
        }
        printf("  %-26s %-14s %-4s max |diff| %g (tolerance 0)\n", file, t->name, saefw_dtype_name(t->dtype), maxd);
        CHECK(maxd == 0, "%s/%s: values differ, max |diff| %g", file, t->name, maxd);
        free(f);
        if (bits) {
            i = 0;
            for (const cJSON *b = bits->child; b; b = b->next, i++) {
                uint16_t h;
                memcpy(&h, (const uint8_t *)t->data + 2 * i, 2);
                CHECK(h == (uint16_t)b->valueint, "%s/%s[%" PRId64 "]: bits 0x%04x != 0x%04x", file, t->name, i, h,
                      b->valueint);
            }
        }
        return;
    }
    int64_t i = 0, bad = 0;
    for (const cJSON *v = vals->child; v; v = v->next, i++) {
        int64_t want = cJSON_IsString(v) ? strtoll(v->valuestring, NULL, 10) : (int64_t)v->valuedouble;
        if (raw_int(t, i) != want && bad++ < 3)
            CHECK(0, "%s/%s[%" PRId64 "]: %" PRId64 " != %" PRId64, file, t->name, i, raw_int(t, i), want);
    }
    printf("  %-26s %-14s %-4s %s\n", file, t->name, saefw_dtype_name(t->dtype), bad ? "MISMATCH" : "exact");
    CHECK(bad == 0, "%s/%s: %" PRId64 " values differ", file, t->name, bad);
}

static void check_fixture(const char *file, const cJSON *exp) {
    char path[512], err[1024];
    snprintf(path, sizeof path, FIX "%s", file);
    saefw_tensorfile *tf;
    if (saefw_tf_open(path, &tf, err, sizeof err) != 0) {
        CHECK(0, "%s: %s", file, err);
        return;
    }
    const char *fmt = cJSON_GetObjectItem(exp, "format")->valuestring;
    CHECK(strcmp(saefw_tf_format(tf), fmt) == 0, "%s: format %s, expected %s", file, saefw_tf_format(tf), fmt);
    const cJSON *tensors = cJSON_GetObjectItem(exp, "tensors");
    CHECK(saefw_tf_count(tf) == cJSON_GetArraySize(tensors), "%s: %d tensors, expected %d", file, saefw_tf_count(tf),
          cJSON_GetArraySize(tensors));
    int i = 0;
    for (const cJSON *jt = tensors->child; jt && i < saefw_tf_count(tf); jt = jt->next, i++) {
        const saefw_tensor_info *t = saefw_tf_get(tf, i);
        const char *name = cJSON_GetObjectItem(jt, "name")->valuestring;
        CHECK(strcmp(t->name, name) == 0, "%s: tensor %d is %s, expected %s", file, i, t->name, name);
        CHECK(saefw_tf_find(tf, name) == t, "%s: find(%s) is not tensor %d", file, name, i);
        saefw_dtype dt;
        CHECK(saefw_dtype_parse(cJSON_GetObjectItem(jt, "dtype")->valuestring, &dt) == 0 && dt == t->dtype,
              "%s/%s: dtype %s, expected %s", file, name, saefw_dtype_name(t->dtype),
              cJSON_GetObjectItem(jt, "dtype")->valuestring);
        const cJSON *shape = cJSON_GetObjectItem(jt, "shape");
        int shape_ok = cJSON_GetArraySize(shape) == t->ndim;
        int64_t numel = 1;
        int d = 0;
        for (const cJSON *s = shape->child; shape_ok && s; s = s->next, d++) {
            shape_ok = t->shape[d] == (int64_t)s->valuedouble;
            numel *= t->shape[d];
        }
        CHECK(shape_ok, "%s/%s: shape differs from torch/numpy", file, name);
        if (!shape_ok || dt != t->dtype) continue;
        CHECK(t->numel == numel && t->nbytes == (size_t)numel * saefw_dtype_size(t->dtype),
              "%s/%s: numel %" PRId64 " nbytes %zu", file, name, t->numel, t->nbytes);
        CHECK(t->nbytes == 0 || (uintptr_t)t->data % saefw_dtype_size(t->dtype) == 0, "%s/%s: data not aligned", file,
              name);
        check_values(file, t, jt);
    }
    CHECK(saefw_tf_get(tf, -1) == NULL && saefw_tf_get(tf, saefw_tf_count(tf)) == NULL, "%s: get out of range", file);
    CHECK(saefw_tf_find(tf, "no such tensor") == NULL, "%s: find of a missing name", file);
    const cJSON *meta = cJSON_GetObjectItem(exp, "metadata");
    int n_meta = cJSON_IsObject(meta) ? cJSON_GetArraySize(meta) : 0;
    CHECK(saefw_tf_metadata_count(tf) == n_meta, "%s: %d metadata entries, expected %d", file,
          saefw_tf_metadata_count(tf), n_meta);
    for (const cJSON *kv = cJSON_IsObject(meta) ? meta->child : NULL; kv; kv = kv->next) {
        const char *v = saefw_tf_metadata(tf, kv->string);
        CHECK(v && strcmp(v, kv->valuestring) == 0, "%s: metadata %s = %s, expected %s", file, kv->string,
              v ? v : "(missing)", kv->valuestring);
    }
    for (int k = 0; k < saefw_tf_metadata_count(tf); k++) {
        const char *key, *value;
        CHECK(saefw_tf_metadata_at(tf, k, &key, &value) == 0 && saefw_tf_metadata(tf, key) == value,
              "%s: metadata_at(%d)", file, k);
    }
    CHECK(saefw_tf_metadata_at(tf, n_meta, NULL, NULL) == -1, "%s: metadata_at out of range", file);
    CHECK(saefw_tf_metadata(tf, "absent") == NULL, "%s: metadata of an absent key", file);
    saefw_tf_close(tf);
}

static const struct {
    const char *file, *phrase;
} refused[] = {
    {"noncontiguous.pt", "tensor w is not contiguous"},
    {"forbidden_global.pt", "forbidden global collections.Counter"},
    {"module.pt", "forbidden global torch.nn.modules.linear.Linear"},
    {"bytes_opcode.pt", "unsupported pickle opcode 0x43 (SHORT_BINBYTES)"},
    {"legacy.pt", "legacy (non-zip) PyTorch file"},
    {"storage_short.pt", "has 56 bytes but the pickle declares 15 F32 elements"},
    {"list_top.pt", "is a list, not a state dict or a tensor"},
    {"fortran.npy", "fortran_order True is not supported"},
    {"big_endian.npy", "(big-endian)"},
};

static void test_fixtures(cJSON *exp) {
    printf("fixtures:\n");
    const cJSON *readable = cJSON_GetObjectItem(exp, "readable");
    for (const cJSON *f = readable->child; f; f = f->next) check_fixture(f->string, f);
    const cJSON *ref = cJSON_GetObjectItem(exp, "refused");
    CHECK(cJSON_GetArraySize(ref) == (int)(sizeof refused / sizeof refused[0]), "refused fixtures: %d in expected.json",
          cJSON_GetArraySize(ref));
    for (const cJSON *r = ref->child; r; r = r->next) {
        size_t k = 0;
        while (k < sizeof refused / sizeof refused[0] && strcmp(refused[k].file, r->valuestring) != 0) k++;
        CHECK(k < sizeof refused / sizeof refused[0], "refused fixture %s has no expected error here", r->valuestring);
    }
    for (size_t k = 0; k < sizeof refused / sizeof refused[0]; k++) {
        char path[512];
        snprintf(path, sizeof path, FIX "%s", refused[k].file);
        expect_fail(path, refused[k].phrase);
    }
}

/* ------------------------------------------------------------------------------------------------
 * Conversions */

static void test_conversions(void) {
    static const struct {
        uint32_t f32, bf16;
    } bf[] = {
        {0x3f800000u, 0x3f80}, /* 1.0 */
        {0x3f808000u, 0x3f80}, /* tie, even stays */
        {0x3f818000u, 0x3f82}, /* tie, odd rounds up */
        {0x3f808001u, 0x3f81}, /* above the tie */
        {0x3f807fffu, 0x3f80}, /* below the tie */
        {0xbf818000u, 0xbf82}, /* negative tie, odd */
        {0x7f7fffffu, 0x7f80}, /* FLT_MAX rounds to +Inf */
        {0x7f800000u, 0x7f80}, /* +Inf */
        {0xff800000u, 0xff80}, /* -Inf */
        {0x80000000u, 0x8000}, /* -0 */
        {0x00000001u, 0x0000}, /* smallest subnormal rounds to 0 */
        {0x00018000u, 0x0002}, /* subnormal tie, odd */
        {0x7fc00000u, 0x7fc0}, /* quiet NaN */
        {0x7f800001u, 0x7fc0}, /* signalling NaN with a low payload stays NaN (quieted) */
        {0xffffffffu, 0xffff}, /* NaN with all mantissa bits */
    };
    for (size_t i = 0; i < sizeof bf / sizeof bf[0]; i++) {
        float f;
        memcpy(&f, &bf[i].f32, 4);
        uint16_t h = saefw_f32_to_bf16(f);
        CHECK(h == (uint16_t)bf[i].bf16, "f32_to_bf16(0x%08x) = 0x%04x, expected 0x%04x", bf[i].f32, h, bf[i].bf16);
        float back = saefw_bf16_to_f32((uint16_t)bf[i].bf16);
        uint32_t u;
        memcpy(&u, &back, 4);
        CHECK(u == bf[i].bf16 << 16, "bf16_to_f32(0x%04x) = 0x%08x", bf[i].bf16, u);
    }
    CHECK(isnan(saefw_bf16_to_f32(saefw_f32_to_bf16(NAN))), "NaN does not stay NaN through bf16");
    static const struct {
        uint16_t h;
        float f;
    } hf[] = {{0x3c00, 1.0f},
              {0xc000, -2.0f},
              {0x7bff, 65504.0f},
              {0x0001, 5.9604644775390625e-8f},
              {0x03ff, 6.09755516052246094e-5f},
              {0x0400, 6.103515625e-5f},
              {0x3555, 0.333251953125f},
              {0x7c00, INFINITY},
              {0xfc00, -INFINITY}};
    for (size_t i = 0; i < sizeof hf / sizeof hf[0]; i++)
        CHECK(saefw_f16_to_f32(hf[i].h) == hf[i].f, "f16_to_f32(0x%04x) = %.9g, expected %.9g", hf[i].h,
              saefw_f16_to_f32(hf[i].h), hf[i].f);
    CHECK(isnan(saefw_f16_to_f32(0x7e00)) && isnan(saefw_f16_to_f32(0xfc01)), "f16 NaN");
    float nz = saefw_f16_to_f32(0x8000);
    CHECK(nz == 0 && signbit(nz), "f16 -0");

    for (int i = 0; i < SAEFW_DT_COUNT; i++) {
        saefw_dtype dt;
        CHECK(saefw_dtype_parse(saefw_dtype_name((saefw_dtype)i), &dt) == 0 && dt == (saefw_dtype)i,
              "dtype name round trip %d", i);
    }
    saefw_dtype dt;
    CHECK(saefw_dtype_parse("F8", &dt) == -1 && saefw_dtype_parse("f32", &dt) == -1, "dtype_parse accepts junk");
    CHECK(saefw_dtype_size(SAEFW_DT_BF16) == 2 && saefw_dtype_size(SAEFW_DT_I64) == 8 &&
              saefw_dtype_size(SAEFW_DT_BOOL) == 1,
          "dtype sizes");

    /* Slices and refusals of the float conversion. */
    float src[6] = {0, 1, 2, 3, 4, 5}, dst[6];
    saefw_tensor_info t = {"t", SAEFW_DT_F32, 2, {2, 3}, 6, src, sizeof src};
    char err[512];
    CHECK(saefw_tensor_slice_f32(&t, 2, 3, dst, err, sizeof err) == 0 && dst[0] == 2 && dst[2] == 4, "slice");
    CHECK(saefw_tensor_slice_f32(&t, 6, 0, dst, err, sizeof err) == 0, "empty slice at the end");
    CHECK(saefw_tensor_slice_f32(&t, 4, 3, dst, err, sizeof err) == -1 && strstr(err, "out of range"),
          "slice past the end: %s", err);
    CHECK(saefw_tensor_slice_f32(&t, -1, 1, dst, err, sizeof err) == -1, "negative slice");
    int32_t ints[2] = {1, 2};
    saefw_tensor_info ti = {"ints", SAEFW_DT_I32, 1, {2}, 2, ints, sizeof ints};
    CHECK(saefw_tensor_to_f32(&ti, dst, err, sizeof err) == -1 && strstr(err, "ints") && strstr(err, "I32"),
          "to_f32 of I32: %s", err);
}

/* ------------------------------------------------------------------------------------------------
 * Writers */

static int no_tmp_left(void) {
    DIR *d = opendir(tmpdir);
    if (!d) return 0;
    int ok = 1;
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".tmp.")) ok = 0;
    closedir(d);
    return ok;
}

static void test_safetensors_roundtrip(void) {
    static float f32[6] = {1.5f, -2.25f, 3e-38f, 1e30f, -0.0f, 7};
    static uint16_t h16[3] = {0x3c00, 0x7e00, 0x0001};
    static uint16_t b16[4] = {0x3f80, 0xff80, 0x7fc0, 0x8000};
    static double f64[2] = {1.0 / 3.0, -1e300};
    static int64_t i64[3] = {INT64_MIN, -1, INT64_MAX};
    static int32_t i32[2] = {INT32_MIN, 42};
    static int16_t i16[2] = {-5, 5};
    static uint16_t u16[2] = {65535, 50256};
    static int8_t i8[2] = {-128, 127};
    static uint8_t u8[3] = {0, 200, 255};
    static uint8_t b8[2] = {1, 0};
    static float scalar = 9.5f;
    int64_t s23[2] = {2, 3}, s3[1] = {3}, s4[1] = {4}, s2[1] = {2}, s0[2] = {0, 5};
    saefw_tensor_ref refs[] = {
        {"f32", SAEFW_DT_F32, 2, s23, f32},
        {"f16", SAEFW_DT_F16, 1, s3, h16},
        {"bf16", SAEFW_DT_BF16, 1, s4, b16},
        {"f64", SAEFW_DT_F64, 1, s2, f64},
        {"i64", SAEFW_DT_I64, 1, s3, i64},
        {"i32", SAEFW_DT_I32, 1, s2, i32},
        {"i16", SAEFW_DT_I16, 1, s2, i16},
        {"u16", SAEFW_DT_U16, 1, s2, u16},
        {"i8", SAEFW_DT_I8, 1, s2, i8},
        {"u8", SAEFW_DT_U8, 1, s3, u8},
        {"we\"ird\\name\n\xc3\xa9", SAEFW_DT_BOOL, 1, s2, b8},
        {"scalar", SAEFW_DT_F32, 0, NULL, &scalar},
        {"empty", SAEFW_DT_F32, 2, s0, NULL},
    };
    int n = (int)(sizeof refs / sizeof refs[0]);
    const char *const meta[][2] = {{"format", "pt"}, {"cfg", "{\"d_in\": 512, \"x\": \"\\u00e9\"}"}};
    const char *p = tmp_path("rt.safetensors");
    char err[1024];
    for (int pass = 0; pass < 2; pass++) { /* the second write replaces the first */
        CHECK(saefw_safetensors_write(p, refs, n, meta, 2, err, sizeof err) == 0, "safetensors write: %s", err);
    }
    CHECK(no_tmp_left(), "a temporary file was left behind");
    size_t len;
    uint8_t *raw = read_bytes(p, &len);
    if (raw) {
        uint64_t hlen = 0;
        for (int i = 7; i >= 0; i--) hlen = hlen << 8 | raw[i];
        CHECK((8 + hlen) % 8 == 0, "safetensors data section not 8-byte aligned (header %" PRIu64 ")", hlen);
        free(raw);
    }
    saefw_tensorfile *tf;
    if (saefw_tf_open(p, &tf, err, sizeof err) != 0) {
        CHECK(0, "reopen: %s", err);
        return;
    }
    CHECK(strcmp(saefw_tf_format(tf), "safetensors") == 0 && saefw_tf_count(tf) == n, "round trip count %d",
          saefw_tf_count(tf));
    for (int i = 0; i < n && i < saefw_tf_count(tf); i++) {
        const saefw_tensor_info *t = saefw_tf_get(tf, i);
        int64_t numel;
        size_t nbytes;
        saefw_tfi_shape_size(refs[i].ndim, refs[i].shape, saefw_dtype_size(refs[i].dtype), &numel, &nbytes);
        CHECK(strcmp(t->name, refs[i].name) == 0 && t->dtype == refs[i].dtype && t->ndim == refs[i].ndim &&
                  t->numel == numel && t->nbytes == nbytes,
              "round trip tensor %d (%s)", i, refs[i].name);
        for (int d = 0; d < t->ndim && d < refs[i].ndim; d++)
            CHECK(t->shape[d] == refs[i].shape[d], "round trip %s shape[%d]", refs[i].name, d);
        CHECK(nbytes == 0 || memcmp(t->data, refs[i].data, nbytes) == 0, "round trip %s: bytes differ", refs[i].name);
    }
    CHECK(saefw_tf_metadata_count(tf) == 2, "round trip metadata count");
    for (int i = 0; i < 2; i++) {
        const char *k, *v;
        CHECK(saefw_tf_metadata_at(tf, i, &k, &v) == 0 && strcmp(k, meta[i][0]) == 0 && strcmp(v, meta[i][1]) == 0,
              "round trip metadata %d", i);
    }
    saefw_tf_close(tf);

    /* No metadata, no tensors. */
    const char *p0 = tmp_path("empty.safetensors");
    CHECK(saefw_safetensors_write(p0, NULL, 0, NULL, 0, err, sizeof err) == 0, "empty write: %s", err);
    if (saefw_tf_open(p0, &tf, err, sizeof err) == 0) {
        CHECK(saefw_tf_count(tf) == 0 && saefw_tf_metadata_count(tf) == 0, "empty file round trip");
        saefw_tf_close(tf);
    } else {
        CHECK(0, "empty reopen: %s", err);
    }

    /* Refused writes leave nothing behind. */
    const char *pb = tmp_path("bad.safetensors");
    int64_t neg[1] = {-1};
    saefw_tensor_ref dup[2] = {{"a", SAEFW_DT_F32, 1, s2, f32}, {"a", SAEFW_DT_F32, 1, s2, f32}};
    saefw_tensor_ref reserved = {"__metadata__", SAEFW_DT_F32, 1, s2, f32};
    saefw_tensor_ref baddt = {"a", (saefw_dtype)99, 1, s2, f32};
    saefw_tensor_ref negshape = {"a", SAEFW_DT_F32, 1, neg, f32};
    saefw_tensor_ref nodata = {"a", SAEFW_DT_F32, 1, s2, NULL};
    const char *const dupmeta[][2] = {{"k", "1"}, {"k", "2"}};
    CHECK(saefw_safetensors_write(pb, dup, 2, NULL, 0, err, sizeof err) == -1 && strstr(err, "duplicate"),
          "duplicate names: %s", err);
    CHECK(saefw_safetensors_write(pb, &reserved, 1, NULL, 0, err, sizeof err) == -1 && strstr(err, "reserved"),
          "__metadata__ name: %s", err);
    CHECK(saefw_safetensors_write(pb, &baddt, 1, NULL, 0, err, sizeof err) == -1 && strstr(err, "dtype"),
          "bad dtype: %s", err);
    CHECK(saefw_safetensors_write(pb, &negshape, 1, NULL, 0, err, sizeof err) == -1 && strstr(err, "shape"),
          "negative shape: %s", err);
    CHECK(saefw_safetensors_write(pb, &nodata, 1, NULL, 0, err, sizeof err) == -1 && strstr(err, "no data"),
          "NULL data: %s", err);
    CHECK(saefw_safetensors_write(pb, refs, 1, dupmeta, 2, err, sizeof err) == -1 && strstr(err, "duplicate metadata"),
          "duplicate metadata: %s", err);
    CHECK(access(pb, F_OK) != 0 && no_tmp_left(), "a refused write left a file");
    char missing[4200];
    snprintf(missing, sizeof missing, "%s/no/such/folder/x.safetensors", tmpdir);
    CHECK(saefw_safetensors_write(missing, refs, 1, NULL, 0, err, sizeof err) == -1 && strstr(err, "cannot create"),
          "write into a missing folder: %s", err);
}

static void test_npy_roundtrip(void) {
    static uint8_t data[8 * 24];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(i * 37 + 11);
    static const int64_t shapes[][3] = {{2, 3, 4}, {24, 0, 0}, {0, 0, 0}, {3, 0, 5}};
    static const int ndims[] = {3, 1, 0, 3};
    char err[1024];
    for (int dt = 0; dt < SAEFW_DT_COUNT; dt++) {
        for (int s = 0; s < 4; s++) {
            const char *p = tmp_path("rt.npy");
            int rc = saefw_npy_write(p, (saefw_dtype)dt, ndims[s], shapes[s], data, err, sizeof err);
            if (dt == SAEFW_DT_BF16) {
                CHECK(rc == -1 && strstr(err, "no NumPy dtype"), "npy write of BF16: %s", err);
                continue;
            }
            if (dt == SAEFW_DT_BOOL) { /* NumPy bools are 0/1 */
                CHECK(rc == 0, "npy write: %s", err);
                static uint8_t bools[24] = {1, 0, 1, 1, 0, 0, 1};
                rc = saefw_npy_write(p, (saefw_dtype)dt, ndims[s], shapes[s], bools, err, sizeof err);
            }
            CHECK(rc == 0, "npy write %s: %s", saefw_dtype_name((saefw_dtype)dt), err);
            saefw_tensorfile *tf;
            if (rc != 0 || saefw_tf_open(p, &tf, err, sizeof err) != 0) {
                CHECK(0, "npy reopen: %s", err);
                continue;
            }
            const saefw_tensor_info *t = saefw_tf_get(tf, 0);
            CHECK(saefw_tf_count(tf) == 1 && strcmp(t->name, "array") == 0 && t->dtype == (saefw_dtype)dt &&
                      t->ndim == ndims[s] && strcmp(saefw_tf_format(tf), "npy") == 0,
                  "npy round trip %s/%d", saefw_dtype_name((saefw_dtype)dt), s);
            for (int d = 0; d < t->ndim; d++) CHECK(t->shape[d] == shapes[s][d], "npy shape");
            CHECK(t->nbytes == 0 || memcmp(t->data, dt == SAEFW_DT_BOOL ? (const void *)"\1\0\1\1\0\0\1" : data,
                                           dt == SAEFW_DT_BOOL && t->nbytes > 7 ? 7 : t->nbytes) == 0,
                  "npy bytes %s/%d", saefw_dtype_name((saefw_dtype)dt), s);
            CHECK(((const uint8_t *)t->data - (const uint8_t *)tf->map) % 64 == 0, "npy data not 64-byte aligned");
            saefw_tf_close(tf);
        }
    }
    CHECK(no_tmp_left(), "a temporary file was left behind");
}

static void test_print_info(void) {
    char *buf = NULL;
    size_t len = 0;
    char err[1024];
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        CHECK(0, "open_memstream");
        return;
    }
    int rc = saefw_tf_print_info(FIX "hand.safetensors", f, err, sizeof err);
    rc |= saefw_tf_print_info(FIX "sae_state_dict.pt", f, err, sizeof err);
    fclose(f);
    CHECK(rc == 0, "print_info: %s", err);
    CHECK(
        buf && strstr(buf, "format: safetensors\nW_enc  F32  [4, 6]\n") && strstr(buf, "s  F32  []\n") &&
            strstr(buf, "none  F32  [0, 4]\n") && strstr(buf, "metadata: format, note\n") &&
            strstr(buf, "format: pytorch\nW_enc  F32  [4, 6]\nW_dec  F32  [6, 4]\nb_enc  F32  [6]\nb_dec  F32  [4]\n"),
        "print_info output:\n%s", buf ? buf : "");
    free(buf);
    f = fopen("/dev/null", "w");
    CHECK(f && saefw_tf_print_info(FIX "no-such-file", f, err, sizeof err) == -1 && strstr(err, "no-such-file"),
          "print_info of a missing file: %s", err);
    if (f) fclose(f);
}

/* ------------------------------------------------------------------------------------------------
 * Malformed files */

static size_t make_st(uint8_t *out, size_t cap, const char *json, uint64_t hlen_field, size_t data_len) {
    size_t jl = strlen(json);
    if (8 + jl + data_len > cap) return 0;
    for (int i = 0; i < 8; i++) out[i] = (uint8_t)(hlen_field >> (8 * i));
    memcpy(out + 8, json, jl);
    memset(out + 8 + jl, 0x5a, data_len);
    return 8 + jl + data_len;
}

static void st_case(const char *name, const char *json, size_t data_len, const char *phrase) {
    uint8_t buf[4096];
    size_t n = make_st(buf, sizeof buf, json, strlen(json), data_len);
    expect_fail_bytes(name, buf, n, phrase);
}

static void test_malformed_safetensors(void) {
    size_t len;
    uint8_t *hand = read_bytes(FIX "hand.safetensors", &len);
    if (!hand) return;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | hand[i];
    expect_fail_bytes("trunc4.safetensors", hand, 4, "shorter than the 8-byte safetensors header length");
    expect_fail_bytes("trunc_data.safetensors", hand, len - 10, "out of range");
    expect_fail_bytes("trunc_header.safetensors", hand, 8 + hlen / 2, "is larger than the file");
    uint8_t big[64];
    memcpy(big, hand, sizeof big);
    big[2] = 0x0f; /* header length ~1e6 */
    expect_fail_bytes("hlen.safetensors", big, sizeof big, "is larger than the file");
    free(hand);

    uint8_t buf[4096];
    size_t n = make_st(buf, sizeof buf, "{}", 2, 0);
    const char *p = tmp_path("empty_header.safetensors");
    saefw_tensorfile *tf = NULL;
    char err[1024];
    CHECK(write_bytes(p, buf, n) == 0 && saefw_tf_open(p, &tf, err, sizeof err) == 0, "{} header: %s", err);
    if (tf) saefw_tf_close(tf);

    st_case("json1.safetensors", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1", 4, "bad JSON");
    st_case("json2.safetensors", "{\"a\": 1} x", 0, "bad JSON");
    st_case("json3.safetensors", "[1, 2]  ", 0, "not a JSON object");
    st_case("json4.safetensors", "not json", 0, "bad JSON");
    st_case("dtype.safetensors", "{\"a\": {\"dtype\": \"F8\", \"shape\": [1], \"data_offsets\": [0, 1]}}", 1,
            "tensor a: unknown dtype \"F8\"");
    st_case("nodtype.safetensors", "{\"a\": {\"shape\": [1], \"data_offsets\": [0, 1]}}", 1, "missing \"dtype\"");
    st_case("range.safetensors", "{\"a\": {\"dtype\": \"F32\", \"shape\": [250], \"data_offsets\": [0, 1000]}}", 16,
            "tensor a: data_offsets [0, 1000] out of range (data section is 16 bytes)");
    st_case("order.safetensors", "{\"a\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [8, 4]}}", 16,
            "out of range");
    st_case("span.safetensors", "{\"a\": {\"dtype\": \"F32\", \"shape\": [2, 2], \"data_offsets\": [0, 12]}}", 16,
            "span 12 bytes but shape and dtype F32 need 16");
    st_case("overflow.safetensors",
            "{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4294967296], \"data_offsets\": [0, 4]}}",
            4, "shape too large");
    st_case("negshape.safetensors", "{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", 4,
            "bad shape");
    st_case("fracshape.safetensors", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", 4,
            "bad shape");
    st_case("ndim.safetensors",
            "{\"a\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 4]}}", 4, "at most 8");
    st_case("offs.safetensors", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", 4,
            "\"data_offsets\" is not a pair");
    st_case("meta.safetensors", "{\"__metadata__\": {\"k\": 1}}", 0, "__metadata__ value for \"k\" is not a string");
    st_case("meta2.safetensors", "{\"__metadata__\": [1]}", 0, "__metadata__ is not a JSON object");
    st_case("entry.safetensors", "{\"a\": 3}", 0, "tensor a: header entry is not a JSON object");
    st_case("dup.safetensors",
            "{\"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]},"
            " \"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [1, 2]}}",
            2, "duplicate tensor name \"a\"");

    /* A NUL byte inside the header's padding. */
    static const char nul_json[] = "{\"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]}}\0 ";
    n = make_st(buf, sizeof buf, "", sizeof nul_json - 1, 0);
    memcpy(buf + 8, nul_json, sizeof nul_json - 1);
    buf[8 + sizeof nul_json - 1] = 7;
    expect_fail_bytes("nul.safetensors", buf, 8 + sizeof nul_json, "bad JSON in safetensors header: bytes after");

    /* Overlapping and out-of-order ranges are accepted when they are in range. */
    n = make_st(buf, sizeof buf,
                "{\"b\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [2, 4]},"
                " \"a\": {\"dtype\": \"I16\", \"shape\": [2], \"data_offsets\": [0, 4]}}",
                0, 4);
    n = make_st(buf, sizeof buf,
                "{\"b\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [2, 4]},"
                " \"a\": {\"dtype\": \"I16\", \"shape\": [2], \"data_offsets\": [0, 4]}}",
                n - 8 - 4, 4);
    p = tmp_path("overlap.safetensors");
    CHECK(write_bytes(p, buf, n) == 0 && saefw_tf_open(p, &tf, err, sizeof err) == 0, "overlap: %s", err);
    if (tf) {
        CHECK(saefw_tf_count(tf) == 2 && strcmp(saefw_tf_get(tf, 0)->name, "b") == 0, "overlap order");
        saefw_tf_close(tf);
    }

    expect_fail_bytes("empty.bin", "", 0, "empty file");
    expect_fail(tmp_path("does-not-exist.safetensors"), "cannot open");
    expect_fail(tmpdir, "not a regular file");
    expect_fail_bytes("text.txt", "hello world, this is not a tensor file\n", 39,
                      "not a safetensors, .npy or PyTorch zip file");
}

static void test_malformed_npy(void) {
    size_t len;
    uint8_t *f32 = read_bytes(FIX "f32.npy", &len);
    if (!f32) return;
    expect_fail_bytes("trunc.npy", f32, len - 4, "(truncated?)");
    expect_fail_bytes("trunc_hdr.npy", f32, 9, "truncated .npy file");
    uint8_t buf[512];
    memcpy(buf, f32, len);
    buf[9] = 0x7f;
    expect_fail_bytes("hlen.npy", buf, len, ".npy header length");
    memcpy(buf, f32, len);
    buf[6] = 9;
    expect_fail_bytes("version.npy", buf, len, "unsupported .npy version 9.0");
    memcpy(buf, f32, len);
    buf[len] = 0; /* one trailing byte */
    expect_fail_bytes("long.npy", buf, len + 1, ".npy data has 49 bytes but shape and dtype F32 need 48");
    free(f32);

    static const struct {
        const char *hdr, *phrase;
    } cases[] = {
        {"{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", "unsupported dtype '<c8'"},
        {"{'descr': '<f4', 'fortran_order': False, }", "needs descr, fortran_order and shape"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (3), }", "shape is not a tuple"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (-3,), }", "shape is not a tuple"},
        {"{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,), }", "fortran_order is not True or False"},
        {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", "repeated key 'descr'"},
        {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", "unsupported dtype"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } junk", "bytes after the dict"},
        {"['descr']", "not a dict"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", "shape is not a tuple"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", "at most 8"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }",
         ".npy shape too large"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t hl = strlen(cases[i].hdr);
        memcpy(buf, "\x93NUMPY\x01\x00", 8);
        buf[8] = (uint8_t)(hl + 1);
        buf[9] = 0;
        memcpy(buf + 10, cases[i].hdr, hl);
        buf[10 + hl] = '\n';
        memset(buf + 11 + hl, 0, 4);
        char name[32];
        snprintf(name, sizeof name, "hdr%zu.npy", i);
        expect_fail_bytes(name, buf, 11 + hl + 4, cases[i].phrase);
    }
}

static void test_malformed_zip(void) {
    size_t len;
    uint8_t *sd = read_bytes(FIX "sae_state_dict.pt", &len);
    if (!sd) return;
    expect_fail_bytes("half.pt", sd, len / 2, "bad zip archive");
    expect_fail_bytes("short.pt", sd, 10, "bad zip archive");
    expect_fail_bytes("nocd.pt", sd, len - 22, "bad zip archive");
    /* A byte of the stored data.pkl changed: libzip's CRC check must catch it. */
    uint8_t *cp = malloc(len);
    if (cp) {
        memcpy(cp, sd, len);
        size_t at = 30 + (size_t)(cp[26] | cp[27] << 8) + (size_t)(cp[28] | cp[29] << 8) + 40;
        cp[at] ^= 0x01;
        expect_fail_bytes("crc.pt", cp, len, "CRC error");
        free(cp);
    }
    free(sd);

    /* A valid zip that is not a checkpoint. */
    const char *p = tmp_path("plain.zip");
    int ze;
    zip_t *z = zip_open(p, ZIP_CREATE | ZIP_TRUNCATE, &ze);
    zip_source_t *s = z ? zip_source_buffer(z, "hello", 5, 0) : NULL;
    CHECK(z && s && zip_file_add(z, "folder/readme.txt", s, 0) >= 0 && zip_close(z) == 0, "libzip write");
    expect_fail(p, "no <prefix>/data.pkl record");

    /* A checkpoint whose data.pkl names a storage that is absent. */
    p = tmp_path("nostorage.pt");
    z = zip_open(p, ZIP_CREATE | ZIP_TRUNCATE, &ze);
    static const char pk[] =
        "\x80\x02\x63torch._utils\n_rebuild_tensor_v2\n((X\x07\0\0\0storage\x63torch\nFloatStorage\n"
        "X\x01\0\0\0\x39X\x03\0\0\0cpuK\x02tQK\0K\x02\x85K\x01\x85\x89}tR.";
    s = z ? zip_source_buffer(z, pk, sizeof pk - 1, 0) : NULL;
    CHECK(z && s && zip_file_add(z, "arc/data.pkl", s, 0) >= 0 && zip_close(z) == 0, "libzip write");
    expect_fail(p, "record arc/data/9 is missing from the archive");
}

/* ------------------------------------------------------------------------------------------------
 * Hand-made pickles through the unpickler alone */

typedef struct {
    uint8_t *b;
    size_t n, cap;
} pk;

static void pk_raw(pk *p, const void *d, size_t n) {
    if (p->n + n > p->cap) {
        size_t cap = p->cap ? p->cap : 256;
        while (cap < p->n + n) cap *= 2;
        uint8_t *nb = realloc(p->b, cap);
        if (!nb) abort();
        p->b = nb;
        p->cap = cap;
    }
    memcpy(p->b + p->n, d, n);
    p->n += n;
}
#define PK_LIT(p, lit) pk_raw((p), (lit), sizeof(lit) - 1)
static void pk_op(pk *p, uint8_t op) { pk_raw(p, &op, 1); }
static void pk_str(pk *p, const char *s) {
    uint32_t n = (uint32_t)strlen(s);
    uint8_t l[4] = {(uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16), (uint8_t)(n >> 24)};
    pk_op(p, 'X');
    pk_raw(p, l, 4);
    pk_raw(p, s, n);
}
static void pk_int(pk *p, int32_t v) {
    uint32_t u = (uint32_t)v;
    uint8_t l[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
    pk_op(p, 'J');
    pk_raw(p, l, 4);
}
static void pk_global(pk *p, const char *mod, const char *name) {
    pk_op(p, 'c');
    pk_raw(p, mod, strlen(mod));
    pk_op(p, '\n');
    pk_raw(p, name, strlen(name));
    pk_op(p, '\n');
}
static void pk_tensor(pk *p, const char *key, int numel, int offset, int ndim, const int *shape, const int *stride) {
    pk_global(p, "torch._utils", "_rebuild_tensor_v2");
    pk_op(p, '(');
    pk_op(p, '(');
    pk_str(p, "storage");
    pk_global(p, "torch", "FloatStorage");
    pk_str(p, key);
    pk_str(p, "cpu");
    pk_int(p, numel);
    pk_op(p, 't');
    pk_op(p, 'Q');
    pk_int(p, offset);
    pk_op(p, '(');
    for (int i = 0; i < ndim; i++) pk_int(p, shape[i]);
    pk_op(p, 't');
    pk_op(p, '(');
    for (int i = 0; i < ndim; i++) pk_int(p, stride[i]);
    pk_op(p, 't');
    pk_op(p, 0x89);
    pk_global(p, "collections", "OrderedDict");
    pk_op(p, ')');
    pk_op(p, 'R');
    pk_op(p, 't');
    pk_op(p, 'R');
}

static void pickle_case(const char *what, pk *p, int want_tensors, const char *phrase) {
    char err[1024] = "";
    int n = -1;
    int rc = saefw_tfi_unpickle_check(p->b, p->n, &n, err, sizeof err);
    if (phrase)
        CHECK(rc == -1 && strstr(err, phrase), "pickle %s: expected \"%s\", got rc %d: %s", what, phrase, rc, err);
    else CHECK(rc == 0 && n == want_tensors, "pickle %s: rc %d, %d tensors: %s", what, rc, n, err);
    free(p->b);
    memset(p, 0, sizeof *p);
}

static void test_pickles(void) {
    pk p = {0};
    int sh[2] = {2, 3}, st[2] = {3, 1}, bad_st[2] = {1, 2};

    pk_op(&p, 0x80);
    pk_op(&p, 2);
    pk_op(&p, '}');
    pk_str(&p, "w");
    pk_tensor(&p, "0", 6, 0, 2, sh, st);
    pk_op(&p, 's');
    pk_op(&p, '.');
    pickle_case("state dict", &p, 1, NULL);

    pk_op(&p, 0x80);
    pk_op(&p, 2);
    pk_op(&p, '}');
    pk_str(&p, "w");
    pk_tensor(&p, "0", 6, 1, 2, sh, st);
    pk_op(&p, 's');
    pk_op(&p, '.');
    pickle_case("offset", &p, 0, "tensor w: storage offset 1 + 6 elements exceeds its storage of 6 elements");

    pk_op(&p, 0x80);
    pk_op(&p, 2);
    pk_op(&p, '}');
    pk_str(&p, "w");
    pk_tensor(&p, "0", 6, 0, 2, sh, bad_st);
    pk_op(&p, 's');
    pk_op(&p, '.');
    pickle_case("strides", &p, 0, "tensor w is not contiguous (shape [2, 3], stride [1, 2])");

    int huge[3] = {1 << 30, 1 << 30, 1 << 30}, hs[3] = {1, 1, 1};
    pk_op(&p, 0x80);
    pk_op(&p, 2);
    pk_tensor(&p, "0", 6, 0, 3, huge, hs);
    pk_op(&p, '.');
    pickle_case("huge shape", &p, 0, "negative or too large shape");

    int negs[1] = {-2}, one[1] = {1};
    pk_op(&p, 0x80);
    pk_op(&p, 2);
    pk_tensor(&p, "0", 6, 0, 1, negs, one);
    pk_op(&p, '.');
    pickle_case("negative shape", &p, 0, "tensor tensor: negative or too large shape");

    pk_op(&p, 0x80);
    pk_op(&p, 2);
    pk_op(&p, 0xff);
    pickle_case("0xff", &p, 0, "unsupported pickle opcode 0xff (not a pickle opcode)");

    pk_op(&p, 0x80);
    pk_op(&p, 2);
    pk_op(&p, 'N');
    pickle_case("no STOP", &p, 0, "without STOP");

    pk_op(&p, 0x80);
    pk_op(&p, 2);
    pk_op(&p, 's');
    pk_op(&p, '.');
    pickle_case("underflow", &p, 0, "stack underflow");

    pk_op(&p, '}');
    pk_op(&p, '(');
    pk_op(&p, 'b');
    pickle_case("underflow past MARK", &p, 0, "stack underflow");

    pk_op(&p, 'h');
    pk_op(&p, 5);
    pickle_case("memo", &p, 0, "memo key 5 is not defined");

    pk_op(&p, 'N');
    PK_LIT(&p, "r\xff\xff\xff\xff");
    pickle_case("memo index", &p, 0, "memo index 4294967295 is out of range");

    PK_LIT(&p, "\x8a\x09\1\1\1\1\1\1\1\1\1.");
    pickle_case("LONG1", &p, 0, "wider than 64 bits");

    PK_LIT(&p, "\x80\x04\x8c\x02os\x8c\x06system\x93.");
    pickle_case("STACK_GLOBAL", &p, 0, "forbidden global os.system");

    PK_LIT(&p, "\x80\x02X\x10\0\0\0ab");
    pickle_case("short string", &p, 0, "runs past the end");

    PK_LIT(&p, "\x80\x06N.");
    pickle_case("protocol", &p, 0, "unsupported pickle protocol 6");

    PK_LIT(&p, "NK\x01R.");
    pickle_case("REDUCE on None", &p, 0, "REDUCE on a None");

    pk_global(&p, "torch", "FloatStorage");
    pk_op(&p, ')');
    pk_op(&p, 'R');
    pk_op(&p, '.');
    pickle_case("storage call", &p, 0, "calling torch.FloatStorage is not supported");

    PK_LIT(&p, "(X\x07\0\0\0storageK\x01K\x02K\x03K\x04tQ.");
    pickle_case("persistent id", &p, 0, "unsupported persistent id");

    PK_LIT(&p, "}K\x01K\x02s.");
    pickle_case("int key", &p, 0, "state dict key is a int, not a string");

    PK_LIT(&p, "}X\x01\0\0\0a]s.");
    pickle_case("list value", &p, 0, "entry a is a list");

    PK_LIT(&p, "]N.");
    pickle_case("None top", &p, 0, "is a None, not a state dict");

    /* d = {}; d['a'] = d: a cycle through the memo. */
    PK_LIT(&p, "}q\x00X\x01\0\0\0ah\x00s.");
    pickle_case("cycle", &p, 0, "reuses one nested dict under several keys");

    /* d0 = {'t': tensor}, d(k+1) = {'a': dk, 'b': dk}: 2^30 leaves through shared memo references. */
    int s1[1] = {1};
    pk_op(&p, 0x80);
    pk_op(&p, 2);
    pk_op(&p, '}');
    pk_str(&p, "t");
    pk_tensor(&p, "0", 1, 0, 1, s1, s1);
    pk_op(&p, 's');
    for (int k = 0; k <= 30; k++) {
        uint8_t idx[4] = {(uint8_t)(100 + k), 0, 0, 0};
        pk_op(&p, 'r');
        pk_raw(&p, idx, 4);
        if (k == 30) break;
        pk_op(&p, '}');
        pk_op(&p, '(');
        pk_str(&p, "a");
        pk_op(&p, 'j');
        pk_raw(&p, idx, 4);
        pk_str(&p, "b");
        pk_op(&p, 'j');
        pk_raw(&p, idx, 4);
        pk_op(&p, 'u');
    }
    pk_op(&p, '.');
    pickle_case("shared DAG", &p, 0, "reuses one nested dict under several keys");
}

/* ------------------------------------------------------------------------------------------------
 * Mutations: random damage to every fixture must give an error or a usable file, never a crash. */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static size_t mutate(const uint8_t *src, size_t len, uint8_t *dst) {
    memcpy(dst, src, len);
    size_t n = len;
    int kind = (int)(rnd() % 8);
    int flips = 1 + (int)(rnd() % 4);
    for (int k = 0; k < flips && kind <= 4; k++) {
        size_t where = rnd() % 4, at;
        if (where == 0 || len < 256) at = rnd() % len;
        else if (where == 1) at = rnd() % 256;
        else at = len - 1 - rnd() % 256;
        if (kind == 4) dst[at] = (uint8_t)rnd();
        else dst[at] ^= (uint8_t)(1u << (rnd() % 8));
    }
    if (kind == 5 || kind == 7) n = rnd() % len;
    if (kind == 6) {
        size_t at = rnd() % len, run = 1 + rnd() % 16;
        uint8_t v = (uint8_t)(rnd() % 3 == 0 ? 0 : rnd() % 2 ? 0xff : rnd());
        for (size_t i = at; i < at + run && i < len; i++) dst[i] = v;
    }
    if (kind == 7) dst[rnd() % (n ? n : 1)] ^= 0x80;
    return n;
}

static uint64_t touch(saefw_tensorfile *tf) {
    uint64_t sum = 0;
    char err[512];
    for (int i = 0; i < saefw_tf_count(tf); i++) {
        const saefw_tensor_info *t = saefw_tf_get(tf, i);
        const uint8_t *d = t->data;
        for (size_t b = 0; b < t->nbytes; b++) sum += d[b];
        if (t->numel > 0 && t->numel < (1 << 20)) {
            float *f = malloc((size_t)t->numel * sizeof *f);
            if (f && saefw_tensor_to_f32(t, f, err, sizeof err) == 0) sum += (uint64_t)(f[0] != f[0]);
            free(f);
        }
    }
    for (int i = 0; i < saefw_tf_metadata_count(tf); i++) {
        const char *k, *v;
        saefw_tf_metadata_at(tf, i, &k, &v);
        sum += strlen(k) + strlen(v);
    }
    return sum;
}

static void test_mutations(cJSON *exp) {
    const char *files[64];
    int nf = 0;
    for (const cJSON *f = cJSON_GetObjectItem(exp, "readable")->child; f && nf < 64; f = f->next)
        files[nf++] = f->string;
    for (size_t k = 0; k < sizeof refused / sizeof refused[0] && nf < 64; k++) files[nf++] = refused[k].file;
    FILE *devnull = fopen("/dev/null", "w");
    const char *p = tmp_path("mutant");
    int fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    long opened = 0, refused_n = 0;
    uint64_t sum = 0;
    for (int fi = 0; fi < nf; fi++) {
        char path[512];
        snprintf(path, sizeof path, FIX "%s", files[fi]);
        size_t len;
        uint8_t *src = read_bytes(path, &len);
        uint8_t *dst = src ? malloc(len) : NULL;
        if (!dst) {
            free(src);
            continue;
        }
        for (int it = 0; it < MUTATIONS; it++) {
            size_t n = mutate(src, len, dst);
            /* Rewritten in place: truncating to zero and rewriting makes ext4 flush on every close. */
            if (fd < 0 || pwrite(fd, dst, n, 0) != (ssize_t)n || ftruncate(fd, (off_t)n) != 0) {
                CHECK(0, "cannot write %s", p);
                break;
            }
            saefw_tensorfile *tf;
            char err[1024];
            if (saefw_tf_open(p, &tf, err, sizeof err) == 0) {
                opened++;
                sum += touch(tf);
                saefw_tf_close(tf);
                if (it % 50 == 0 && devnull) saefw_tf_print_info(p, devnull, err, sizeof err);
            } else {
                refused_n++;
                CHECK(strstr(err, p) && !strchr(err, '\n'), "mutant of %s: bad error: %s", files[fi], err);
            }
        }
        free(src);
        free(dst);
    }
    if (devnull) fclose(devnull);
    if (fd >= 0) close(fd);
    printf("mutations: %d files x %d: %ld opened, %ld refused, no crash (checksum %" PRIu64 ")\n", nf, MUTATIONS,
           opened, refused_n, sum % 1000);

    /* The pickles alone, past libzip's CRC check. */
    long ok = 0, bad = 0;
    for (int fi = 0; fi < nf; fi++) {
        char path[512];
        snprintf(path, sizeof path, FIX "%s", files[fi]);
        int ze;
        zip_t *z = zip_open(path, ZIP_RDONLY, &ze);
        if (!z) continue;
        for (zip_int64_t e = 0; e < zip_get_num_entries(z, 0); e++) {
            const char *name = zip_get_name(z, (zip_uint64_t)e, 0);
            zip_stat_t st;
            if (!name || strlen(name) < 9 || strcmp(name + strlen(name) - 9, "/data.pkl") != 0 ||
                zip_stat_index(z, (zip_uint64_t)e, 0, &st) != 0)
                continue;
            uint8_t *pkl = malloc(st.size), *m = malloc(st.size);
            zip_file_t *zf = zip_fopen_index(z, (zip_uint64_t)e, 0);
            if (pkl && m && zf && zip_fread(zf, pkl, st.size) == (zip_int64_t)st.size) {
                for (int it = 0; it < MUTATIONS; it++) {
                    size_t n = mutate(pkl, st.size, m);
                    int nt;
                    char err[1024];
                    if (saefw_tfi_unpickle_check(m, n, &nt, err, sizeof err) == 0) ok++;
                    else bad++;
                }
            }
            if (zf) zip_fclose(zf);
            free(pkl);
            free(m);
        }
        zip_discard(z);
    }
    printf("pickle mutations: %ld accepted, %ld refused, no crash\n", ok, bad);
    CHECK(ok + bad > 0, "no pickles were fuzzed");
}

int main(void) {
    const char *base = getenv("SAEFW_TEST_TMP");
    snprintf(tmpdir, sizeof tmpdir, "%s/tensorfile.%ld", base && *base ? base : "/tmp", (long)getpid());
    char err[1024];
    if (saefw_mkdirs(tmpdir, err, sizeof err) != 0) {
        printf("FAIL: %s\n", err);
        return 1;
    }
    char *json;
    if (saefw_read_file(FIX "expected.json", &json, NULL, err, sizeof err) != 0) {
        printf("FAIL: %s (run from tests/)\n", err);
        return 1;
    }
    cJSON *exp = cJSON_Parse(json);
    free(json);
    if (!exp) {
        printf("FAIL: " FIX "expected.json is not JSON\n");
        return 1;
    }
    test_fixtures(exp);
    test_conversions();
    test_safetensors_roundtrip();
    test_npy_roundtrip();
    test_print_info();
    test_malformed_safetensors();
    test_malformed_npy();
    test_malformed_zip();
    test_pickles();
    test_mutations(exp);
    cJSON_Delete(exp);

    DIR *d = opendir(tmpdir);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char p[4400];
        snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
        unlink(p);
    }
    if (d) closedir(d);
    rmdir(tmpdir);
    if (failures) {
        printf("test_tensorfile: %d FAILED\n", failures);
        return 1;
    }
    printf("test_tensorfile: all passed\n");
    return 0;
}
