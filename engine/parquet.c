/* The Parquet reader of parquet.h: footer and Thrift compact-protocol metadata, pages, encodings and
 * codecs, written against the parquet-format specification. Every length and offset read from the
 * file is checked against the bytes that hold it before it is used or allocated. */
#include "parquet.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <snappy-c.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "util.h"

/* Thrift structs nest a few levels in the metadata (FileMetaData > RowGroup > ColumnChunk >
 * ColumnMetaData > Statistics); anything deeper is damage or an attack on the stack. */
#define THRIFT_DEPTH_MAX 32
/* Schema trees nest a few levels for the columns read here; the bound keeps recursion shallow. */
#define SCHEMA_DEPTH_MAX 64
/* pyarrow writes pages of about 1 MB; a page claiming more than this is damage. */
#define PAGE_BYTES_MAX (1 << 30)
#define MAX_VALUES_DEFAULT (INT64_C(1) << 28)

/* Physical types, repetitions, converted types, codecs, encodings and page types of parquet.thrift. */
enum { T_BOOLEAN, T_INT32, T_INT64, T_INT96, T_FLOAT, T_DOUBLE, T_BYTE_ARRAY, T_FIXED };
enum { R_REQUIRED, R_OPTIONAL, R_REPEATED };
enum {
    CT_UTF8 = 0,
    CT_MAP = 1,
    CT_MAP_KEY_VALUE = 2,
    CT_LIST = 3,
    CT_UINT_8 = 11,
    CT_UINT_64 = 14,
    CT_INT_8 = 15,
    CT_INT_64 = 18,
    CT_JSON = 19
};
enum { LT_STRING = 1, LT_MAP = 2, LT_LIST = 3, LT_ENUM = 4, LT_INTEGER = 10, LT_JSON = 12 };
enum { C_UNCOMPRESSED, C_SNAPPY, C_GZIP, C_LZO, C_BROTLI, C_LZ4, C_ZSTD, C_LZ4_RAW };
enum {
    E_PLAIN = 0,
    E_PLAIN_DICTIONARY = 2,
    E_RLE = 3,
    E_BIT_PACKED = 4,
    E_DELTA_BINARY_PACKED = 5,
    E_DELTA_LENGTH_BYTE_ARRAY = 6,
    E_DELTA_BYTE_ARRAY = 7,
    E_RLE_DICTIONARY = 8,
    E_BYTE_STREAM_SPLIT = 9
};
enum { P_DATA = 0, P_INDEX = 1, P_DICTIONARY = 2, P_DATA_V2 = 3 };

static const char *type_name(int t) {
    static const char *names[] = {"boolean", "int32",  "int64",  "int96",
                                  "float",   "double", "binary", "fixed_len_byte_array"};
    return t >= 0 && t <= T_FIXED ? names[t] : "unknown type";
}

static const char *codec_name(int c) {
    static const char *names[] = {"UNCOMPRESSED", "SNAPPY", "GZIP", "LZO", "BROTLI", "LZ4", "ZSTD", "LZ4_RAW"};
    return c >= 0 && c <= C_LZ4_RAW ? names[c] : "unknown";
}

static const char *encoding_name(int e) {
    static const char *names[] = {
        "PLAIN",          "GROUP_VAR_INT",       "PLAIN_DICTIONARY",        "RLE",
        "BIT_PACKED",     "DELTA_BINARY_PACKED", "DELTA_LENGTH_BYTE_ARRAY", "DELTA_BYTE_ARRAY",
        "RLE_DICTIONARY", "BYTE_STREAM_SPLIT"};
    return e >= 0 && e <= E_BYTE_STREAM_SPLIT ? names[e] : "unknown";
}

typedef struct {
    char *name;
    int type;       /* physical type, -1 for a group */
    int repetition; /* -1 when absent (the root) */
    int num_children;
    int converted;  /* -1 when absent */
    int logical;    /* LogicalType union member, 0 when absent */
    int int_signed; /* for LogicalType INTEGER */
} pq_schema;

typedef struct {
    int64_t start, len; /* the chunk's bytes: dictionary page (if any) and data pages */
    int64_t num_values; /* levels, nulls included */
    int codec, type;
    int has_meta;
} pq_chunk;

typedef struct {
    int64_t rows;
    int n_chunks;
    pq_chunk *chunks;
} pq_rowgroup;

typedef struct {
    saefw_parquet_column pub;
    char type_buf[40];
    int leaf; /* column chunk index in each row group */
    int n_leaves;
    int phys;        /* physical type of the leaf */
    int is_unsigned; /* INT32 annotated unsigned: zero-extend */
    int max_def, max_rep;
    int top_def; /* lists: definition level of an empty list (below it: a null list) */
} pq_col;

struct saefw_parquet {
    char *path;
    int fd;
    int64_t size;
    int64_t data_end; /* where the footer starts: column chunks lie in [4, data_end) */
    int64_t rows;
    pq_schema *schema;
    int n_schema;
    pq_rowgroup *rgs;
    int n_rgs;
    pq_col *cols;
    int n_cols, n_leaves;
};

/* ---- Thrift compact protocol ---- */

typedef struct {
    const uint8_t *p, *end;
    const char *what; /* "file metadata", "page header": names the struct in messages */
    char *err;
    size_t errlen;
} tr;

enum {
    TT_STOP,
    TT_TRUE,
    TT_FALSE,
    TT_BYTE,
    TT_I16,
    TT_I32,
    TT_I64,
    TT_DOUBLE,
    TT_BINARY,
    TT_LIST,
    TT_SET,
    TT_MAP,
    TT_STRUCT
};

static int tr_trunc(tr *t) { return saefw_errf(t->err, t->errlen, "%s truncated", t->what); }

static int tr_bad(tr *t, const char *why) { return saefw_errf(t->err, t->errlen, "%s damaged: %s", t->what, why); }

static int varint(const uint8_t **pp, const uint8_t *end, uint64_t *v) {
    const uint8_t *p = *pp;
    uint64_t r = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (p >= end) return -1;
        uint8_t b = *p++;
        if (shift == 63 && (b & 0x7e)) return -2;
        r |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = r;
            *pp = p;
            return 0;
        }
    }
    return -2;
}

static int tr_varint(tr *t, uint64_t *v) {
    int rc = varint(&t->p, t->end, v);
    if (rc == -1) return tr_trunc(t);
    if (rc == -2) return tr_bad(t, "varint too long");
    return 0;
}

static int64_t unzigzag(uint64_t v) { return (int64_t)((v >> 1) ^ (~(v & 1) + 1)); }

static int tr_i64(tr *t, int64_t *v) {
    uint64_t u;
    *v = 0;
    if (tr_varint(t, &u)) return -1;
    *v = unzigzag(u);
    return 0;
}

/* An integer field of any integer wire type (writers differ on i8/i16/i32). */
static int tr_int(tr *t, int type, int64_t *v) {
    *v = 0;
    if (type == TT_BYTE) {
        if (t->p >= t->end) return tr_trunc(t);
        *v = (int8_t)*t->p++;
        return 0;
    }
    if (type != TT_I16 && type != TT_I32 && type != TT_I64) return tr_bad(t, "integer field of another type");
    return tr_i64(t, v);
}

static int tr_int32(tr *t, int type, int32_t *v) {
    int64_t x;
    *v = 0;
    if (tr_int(t, type, &x)) return -1;
    if (x < INT32_MIN || x > INT32_MAX) return tr_bad(t, "i32 out of range");
    *v = (int32_t)x;
    return 0;
}

static int tr_binary(tr *t, const uint8_t **s, size_t *n) {
    uint64_t len;
    *s = NULL;
    *n = 0;
    if (tr_varint(t, &len)) return -1;
    if (len > (uint64_t)(t->end - t->p)) return tr_trunc(t);
    *s = t->p;
    *n = (size_t)len;
    t->p += len;
    return 0;
}

/* A field header: *type TT_STOP at the end of a struct. Field ids come as deltas from the last. */
static int tr_field(tr *t, int *last, int *type, int *id) {
    if (t->p >= t->end) return tr_trunc(t);
    uint8_t b = *t->p++;
    *type = b & 0x0f;
    if (*type == TT_STOP) return 0;
    int delta = b >> 4;
    if (delta) {
        *id = *last + delta;
    } else {
        int64_t v;
        if (tr_i64(t, &v)) return -1;
        if (v < INT16_MIN || v > INT16_MAX) return tr_bad(t, "field id out of range");
        *id = (int)v;
    }
    *last = *id;
    return 0;
}

/* A list header; every element takes at least one byte, so the count is bounded by what is left. */
static int tr_list(tr *t, int *elem, int64_t *n) {
    if (t->p >= t->end) return tr_trunc(t);
    uint8_t b = *t->p++;
    *elem = b & 0x0f;
    uint64_t size = b >> 4;
    if (size == 15 && tr_varint(t, &size)) return -1;
    if (size > (uint64_t)(t->end - t->p)) return tr_trunc(t);
    *n = (int64_t)size;
    return 0;
}

static int tr_skip(tr *t, int type, int depth);

static int tr_skip_struct(tr *t, int depth) {
    if (depth > THRIFT_DEPTH_MAX) return tr_bad(t, "structs nested too deeply");
    int last = 0, type, id;
    for (;;) {
        if (tr_field(t, &last, &type, &id)) return -1;
        if (type == TT_STOP) return 0;
        if (tr_skip(t, type, depth + 1)) return -1;
    }
}

/* Skip one value; in a list, booleans are a byte each (elem_bool). */
static int tr_skip_value(tr *t, int type, int depth, int elem_bool) {
    uint64_t u;
    switch (type) {
    case TT_TRUE:
    case TT_FALSE:
        if (!elem_bool) return 0;
        /* fall through */
    case TT_BYTE:
        if (t->p >= t->end) return tr_trunc(t);
        t->p++;
        return 0;
    case TT_I16:
    case TT_I32:
    case TT_I64: return tr_varint(t, &u);
    case TT_DOUBLE:
        if (t->end - t->p < 8) return tr_trunc(t);
        t->p += 8;
        return 0;
    case TT_BINARY: {
        const uint8_t *s;
        size_t n;
        return tr_binary(t, &s, &n);
    }
    case TT_LIST:
    case TT_SET: {
        if (depth > THRIFT_DEPTH_MAX) return tr_bad(t, "lists nested too deeply");
        int elem;
        int64_t n;
        if (tr_list(t, &elem, &n)) return -1;
        for (int64_t i = 0; i < n; i++)
            if (tr_skip_value(t, elem, depth + 1, 1)) return -1;
        return 0;
    }
    case TT_MAP: {
        if (depth > THRIFT_DEPTH_MAX) return tr_bad(t, "maps nested too deeply");
        if (tr_varint(t, &u)) return -1;
        if (u == 0) return 0;
        if (u > (uint64_t)(t->end - t->p)) return tr_trunc(t);
        if (t->p >= t->end) return tr_trunc(t);
        uint8_t kv = *t->p++;
        for (uint64_t i = 0; i < u; i++)
            if (tr_skip_value(t, kv >> 4, depth + 1, 1) || tr_skip_value(t, kv & 0x0f, depth + 1, 1)) return -1;
        return 0;
    }
    case TT_STRUCT: return tr_skip_struct(t, depth + 1);
    default: return tr_bad(t, "unknown field type");
    }
}

static int tr_skip(tr *t, int type, int depth) { return tr_skip_value(t, type, depth, 0); }

static int tr_expect(tr *t, int type, int want) { return type == want ? 0 : tr_bad(t, "field of the wrong type"); }

/* ---- metadata structs ---- */

static int parse_int_type(tr *t, pq_schema *s) {
    int last = 0, type, id;
    s->int_signed = 1;
    for (;;) {
        if (tr_field(t, &last, &type, &id)) return -1;
        if (type == TT_STOP) return 0;
        if (id == 2 && (type == TT_TRUE || type == TT_FALSE)) s->int_signed = type == TT_TRUE;
        else if (tr_skip(t, type, 3)) return -1;
    }
}

/* LogicalType is a union: the one field present says which. */
static int parse_logical(tr *t, pq_schema *s) {
    int last = 0, type, id;
    for (;;) {
        if (tr_field(t, &last, &type, &id)) return -1;
        if (type == TT_STOP) return 0;
        if (tr_expect(t, type, TT_STRUCT)) return -1;
        s->logical = id;
        if (id == LT_INTEGER) {
            if (parse_int_type(t, s)) return -1;
        } else if (tr_skip_struct(t, 3)) {
            return -1;
        }
    }
}

static int parse_schema_element(tr *t, pq_schema *s) {
    int last = 0, type, id;
    int32_t v;
    s->type = -1;
    s->repetition = -1;
    s->converted = -1;
    for (;;) {
        if (tr_field(t, &last, &type, &id)) return -1;
        if (type == TT_STOP) break;
        switch (id) {
        case 1:
            if (tr_int32(t, type, &v)) return -1;
            s->type = v;
            break;
        case 3:
            if (tr_int32(t, type, &v)) return -1;
            s->repetition = v;
            break;
        case 4: {
            const uint8_t *str;
            size_t n;
            if (tr_expect(t, type, TT_BINARY) || tr_binary(t, &str, &n)) return -1;
            free(s->name);
            s->name = malloc(n + 1);
            if (!s->name) return saefw_errf(t->err, t->errlen, "out of memory");
            memcpy(s->name, str, n);
            s->name[n] = 0;
            break;
        }
        case 5:
            if (tr_int32(t, type, &v)) return -1;
            s->num_children = v;
            break;
        case 6:
            if (tr_int32(t, type, &v)) return -1;
            s->converted = v;
            break;
        case 10:
            if (tr_expect(t, type, TT_STRUCT) || parse_logical(t, s)) return -1;
            break;
        default:
            if (tr_skip(t, type, 2)) return -1;
        }
    }
    if (!s->name) return tr_bad(t, "schema element without a name");
    if (s->num_children < 0) return tr_bad(t, "negative num_children");
    return 0;
}

static int parse_column_meta(tr *t, pq_chunk *c) {
    int last = 0, type, id;
    int64_t data_off = -1, dict_off = -1, total = -1;
    int32_t v;
    c->num_values = -1;
    c->codec = -1;
    c->type = -1;
    for (;;) {
        if (tr_field(t, &last, &type, &id)) return -1;
        if (type == TT_STOP) break;
        switch (id) {
        case 1:
            if (tr_int32(t, type, &v)) return -1;
            c->type = v;
            break;
        case 4:
            if (tr_int32(t, type, &v)) return -1;
            c->codec = v;
            break;
        case 5:
            if (tr_int(t, type, &c->num_values)) return -1;
            break;
        case 7:
            if (tr_int(t, type, &total)) return -1;
            break;
        case 9:
            if (tr_int(t, type, &data_off)) return -1;
            break;
        case 11:
            if (tr_int(t, type, &dict_off)) return -1;
            break;
        default:
            if (tr_skip(t, type, 4)) return -1;
        }
    }
    if (c->num_values < 0 || data_off < 0 || total < 0 || c->codec < 0 || c->type < 0)
        return tr_bad(t, "column metadata lacks a required field");
    /* Some writers put 0 here for "no dictionary"; a dictionary page always precedes the data pages. */
    c->start = dict_off > 0 && dict_off < data_off ? dict_off : data_off;
    c->len = total;
    c->has_meta = 1;
    return 0;
}

static int parse_column_chunk(tr *t, pq_chunk *c) {
    int last = 0, type, id;
    for (;;) {
        if (tr_field(t, &last, &type, &id)) return -1;
        if (type == TT_STOP) break;
        if (id == 1) return tr_bad(t, "column data in another file (file_path) is not supported");
        if (id == 3) {
            if (tr_expect(t, type, TT_STRUCT) || parse_column_meta(t, c)) return -1;
        } else if (id == 9) {
            return saefw_errf(t->err, t->errlen, "encrypted columns are not supported");
        } else if (tr_skip(t, type, 3)) {
            return -1;
        }
    }
    if (!c->has_meta) return tr_bad(t, "column chunk without metadata");
    return 0;
}

static int parse_row_group(tr *t, pq_rowgroup *g) {
    int last = 0, type, id;
    int have_rows = 0;
    for (;;) {
        if (tr_field(t, &last, &type, &id)) return -1;
        if (type == TT_STOP) break;
        if (id == 1) {
            int elem;
            int64_t n;
            if (tr_expect(t, type, TT_LIST) || tr_list(t, &elem, &n)) return -1;
            if (elem != TT_STRUCT || g->chunks) return tr_bad(t, "bad column chunk list");
            g->chunks = calloc(n ? (size_t)n : 1, sizeof *g->chunks);
            if (!g->chunks) return saefw_errf(t->err, t->errlen, "out of memory");
            g->n_chunks = (int)n;
            for (int64_t i = 0; i < n; i++)
                if (parse_column_chunk(t, &g->chunks[i])) return -1;
        } else if (id == 3) {
            if (tr_int(t, type, &g->rows)) return -1;
            have_rows = 1;
        } else if (tr_skip(t, type, 2)) {
            return -1;
        }
    }
    if (!g->chunks || !have_rows) return tr_bad(t, "row group lacks columns or num_rows");
    if (g->rows < 0) return tr_bad(t, "negative row count");
    return 0;
}

static int parse_file_meta(tr *t, saefw_parquet *pq) {
    int last = 0, type, id, elem;
    int have_rows = 0;
    int64_t n;
    for (;;) {
        if (tr_field(t, &last, &type, &id)) return -1;
        if (type == TT_STOP) break;
        if (id == 2) {
            if (tr_expect(t, type, TT_LIST) || tr_list(t, &elem, &n)) return -1;
            if (elem != TT_STRUCT || pq->schema || n > INT_MAX) return tr_bad(t, "bad schema list");
            pq->schema = calloc(n ? (size_t)n : 1, sizeof *pq->schema);
            if (!pq->schema) return saefw_errf(t->err, t->errlen, "out of memory");
            pq->n_schema = (int)n;
            for (int64_t i = 0; i < n; i++)
                if (parse_schema_element(t, &pq->schema[i])) return -1;
        } else if (id == 3) {
            if (tr_int(t, type, &pq->rows)) return -1;
            have_rows = 1;
        } else if (id == 4) {
            if (tr_expect(t, type, TT_LIST) || tr_list(t, &elem, &n)) return -1;
            if (elem != TT_STRUCT || pq->rgs || n > INT_MAX) return tr_bad(t, "bad row group list");
            pq->rgs = calloc(n ? (size_t)n : 1, sizeof *pq->rgs);
            if (!pq->rgs) return saefw_errf(t->err, t->errlen, "out of memory");
            pq->n_rgs = (int)n;
            for (int64_t i = 0; i < n; i++)
                if (parse_row_group(t, &pq->rgs[i])) return -1;
        } else if (tr_skip(t, type, 1)) {
            return -1;
        }
    }
    if (!pq->schema || !have_rows || !pq->rgs)
        return tr_bad(t, "file metadata lacks the schema, num_rows or row groups");
    if (pq->rows < 0) return tr_bad(t, "negative row count");
    return 0;
}

/* ---- schema: top-level columns and their levels ---- */

/* Walk the subtree at *i, counting its leaves. */
static int count_leaves(saefw_parquet *pq, int *i, int depth, int *leaves, char *err, size_t errlen) {
    if (depth > SCHEMA_DEPTH_MAX) return saefw_errf(err, errlen, "schema nested too deeply");
    if (*i >= pq->n_schema) return saefw_errf(err, errlen, "schema tree is cut short");
    const pq_schema *s = &pq->schema[(*i)++];
    if (s->num_children == 0) {
        if (s->type < 0) return saefw_errf(err, errlen, "schema leaf '%s' has no type", s->name);
        (*leaves)++;
        return 0;
    }
    for (int c = 0; c < s->num_children; c++)
        if (count_leaves(pq, i, depth + 1, leaves, err, errlen)) return -1;
    return 0;
}

static int is_int_leaf(const pq_schema *s) {
    if (s->type != T_INT32 && s->type != T_INT64) return 0;
    if (s->logical && s->logical != LT_INTEGER) return 0;
    return s->converted < 0 || (s->converted >= CT_UINT_8 && s->converted <= CT_INT_64);
}

static int is_unsigned_leaf(const pq_schema *s) {
    return (s->logical == LT_INTEGER && !s->int_signed) || (s->converted >= CT_UINT_8 && s->converted <= CT_UINT_64);
}

static int is_list_group(const pq_schema *s) { return s->converted == CT_LIST || s->logical == LT_LIST; }

static void classify(saefw_parquet *pq, pq_col *c, int at) {
    const pq_schema *f = &pq->schema[at];
    const pq_schema *leaf = NULL;
    c->pub.kind = SAEFW_PQ_OTHER;
    c->top_def = f->repetition == R_OPTIONAL;
    if (f->num_children == 0) {
        snprintf(c->type_buf, sizeof c->type_buf, "%s", f->type == T_BYTE_ARRAY ? "string" : type_name(f->type));
        if (f->repetition == R_REPEATED) {
            /* A bare repeated field is a list of required elements. */
            snprintf(c->type_buf, sizeof c->type_buf, "list<%s>", type_name(f->type));
            if (is_int_leaf(f)) {
                c->pub.kind = f->type == T_INT32 ? SAEFW_PQ_LIST_INT32 : SAEFW_PQ_LIST_INT64;
                c->top_def = 0;
                c->max_def = 1;
                c->max_rep = 1;
                leaf = f;
            }
        } else if (is_int_leaf(f) || f->type == T_BYTE_ARRAY) {
            c->pub.kind = f->type == T_INT32 ? SAEFW_PQ_INT32 : f->type == T_INT64 ? SAEFW_PQ_INT64 : SAEFW_PQ_STRING;
            c->max_def = f->repetition == R_OPTIONAL;
            c->pub.nullable = c->max_def;
            leaf = f;
        }
    } else if (is_list_group(f) && f->num_children == 1 && c->n_leaves == 1 && f->repetition != R_REPEATED) {
        const pq_schema *r = &pq->schema[at + 1];
        snprintf(c->type_buf, sizeof c->type_buf, "list");
        if (r->repetition == R_REPEATED) {
            const pq_schema *e = NULL;
            int elem_def = 0;
            if (r->num_children == 0) {
                e = r; /* legacy 2-level: the repeated field is the element */
            } else if (r->num_children == 1 && strcmp(r->name, "array") != 0) {
                char tuple[300];
                snprintf(tuple, sizeof tuple, "%s_tuple", f->name);
                const pq_schema *x = &pq->schema[at + 2];
                if (strcmp(r->name, tuple) != 0 && x->num_children == 0 && x->repetition != R_REPEATED) {
                    e = x;
                    elem_def = x->repetition == R_OPTIONAL;
                }
            }
            if (e) {
                snprintf(c->type_buf, sizeof c->type_buf, "list<%s>",
                         e->type == T_BYTE_ARRAY ? "string" : type_name(e->type));
                if (is_int_leaf(e)) {
                    c->pub.kind = e->type == T_INT32 ? SAEFW_PQ_LIST_INT32 : SAEFW_PQ_LIST_INT64;
                    c->max_def = c->top_def + 1 + elem_def;
                    c->max_rep = 1;
                    c->pub.nullable = c->top_def || elem_def;
                    leaf = e;
                }
            }
        }
    } else {
        snprintf(c->type_buf, sizeof c->type_buf, "%s",
                 f->converted == CT_MAP || f->converted == CT_MAP_KEY_VALUE || f->logical == LT_MAP ? "map"
                 : is_list_group(f)                                                                 ? "list"
                                                                                                    : "struct");
    }
    if (leaf) {
        c->phys = leaf->type;
        c->is_unsigned = is_unsigned_leaf(leaf);
    }
    c->pub.type = c->type_buf;
}

static int build_columns(saefw_parquet *pq, char *err, size_t errlen) {
    const pq_schema *root = &pq->schema[0];
    if (pq->n_schema < 1 || root->num_children < 1) return saefw_errf(err, errlen, "schema has no columns");
    if (root->num_children > pq->n_schema) return saefw_errf(err, errlen, "schema tree is cut short");
    pq->cols = calloc((size_t)root->num_children, sizeof *pq->cols);
    if (!pq->cols) return saefw_errf(err, errlen, "out of memory");
    pq->n_cols = root->num_children;
    int i = 1, leaves = 0;
    for (int k = 0; k < pq->n_cols; k++) {
        pq_col *c = &pq->cols[k];
        int at = i, before = leaves;
        if (count_leaves(pq, &i, 1, &leaves, err, errlen)) return -1;
        c->pub.name = pq->schema[at].name;
        c->leaf = before;
        c->n_leaves = leaves - before;
        classify(pq, c, at);
    }
    if (i != pq->n_schema) return saefw_errf(err, errlen, "schema has %d elements after its tree", pq->n_schema - i);
    pq->n_leaves = leaves;
    int64_t total = 0;
    for (int g = 0; g < pq->n_rgs; g++) {
        if (pq->rgs[g].n_chunks != leaves)
            return saefw_errf(err, errlen, "row group %d has %d column chunks, the schema %d leaf columns", g,
                              pq->rgs[g].n_chunks, leaves);
        for (int k = 0; k < leaves; k++) {
            const pq_chunk *ch = &pq->rgs[g].chunks[k];
            if (ch->start < 4 || ch->len < 0 || ch->start > pq->data_end || ch->len > pq->data_end - ch->start)
                return saefw_errf(err, errlen, "row group %d: column chunk %d lies outside the file's data", g, k);
        }
        if (pq->rgs[g].rows > INT64_MAX - total) return saefw_errf(err, errlen, "row counts overflow");
        total += pq->rgs[g].rows;
    }
    if (total != pq->rows)
        return saefw_errf(err, errlen, "row groups hold %lld rows, the footer says %lld", (long long)total,
                          (long long)pq->rows);
    return 0;
}

/* ---- opening ---- */

static int pread_all(int fd, void *buf, size_t n, int64_t off) {
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return r == 0 ? -2 : -1;
        p += r;
        n -= (size_t)r;
        off += r;
    }
    return 0;
}

int saefw_parquet_open(const char *path, saefw_parquet **out, char *err, size_t errlen) {
    *out = NULL;
    saefw_parquet *pq = calloc(1, sizeof *pq);
    if (!pq) return saefw_errf(err, errlen, "%s: out of memory", path);
    pq->fd = -1;
    pq->path = strdup(path);
    uint8_t *footer = NULL;
    if (!pq->path) {
        saefw_errf(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    pq->fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (pq->fd < 0 || fstat(pq->fd, &st) != 0) {
        saefw_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        saefw_errf(err, errlen, "%s: not a regular file", path);
        goto fail;
    }
    pq->size = st.st_size;
    uint8_t head[4], tail[8];
    if (pq->size < 12 || pread_all(pq->fd, head, 4, 0) || pread_all(pq->fd, tail, 8, pq->size - 8)) {
        if (pq->size >= 4 && pread_all(pq->fd, head, 4, 0) == 0 && memcmp(head, "PAR1", 4) == 0)
            saefw_errf(err, errlen, "%s: truncated Parquet file (%lld bytes)", path, (long long)pq->size);
        else saefw_errf(err, errlen, "%s: not a Parquet file (too short)", path);
        goto fail;
    }
    if (memcmp(head, "PAR1", 4) != 0) {
        saefw_errf(err, errlen, "%s: not a Parquet file (no PAR1 magic at the start)", path);
        goto fail;
    }
    if (memcmp(tail + 4, "PARE", 4) == 0) {
        saefw_errf(err, errlen, "%s: encrypted Parquet files are not supported", path);
        goto fail;
    }
    if (memcmp(tail + 4, "PAR1", 4) != 0) {
        saefw_errf(err, errlen, "%s: truncated Parquet file (no PAR1 magic at the end)", path);
        goto fail;
    }
    uint32_t flen = (uint32_t)tail[0] | (uint32_t)tail[1] << 8 | (uint32_t)tail[2] << 16 | (uint32_t)tail[3] << 24;
    if ((int64_t)flen > pq->size - 12) {
        saefw_errf(err, errlen, "%s: footer length %u exceeds the file (%lld bytes): truncated or damaged", path, flen,
                   (long long)pq->size);
        goto fail;
    }
    pq->data_end = pq->size - 8 - flen;
    footer = malloc(flen ? flen : 1);
    if (!footer) {
        saefw_errf(err, errlen, "%s: out of memory for a %u-byte footer", path, flen);
        goto fail;
    }
    if (pread_all(pq->fd, footer, flen, pq->data_end)) {
        saefw_errf(err, errlen, "%s: cannot read the footer: %s", path, strerror(errno));
        goto fail;
    }
    tr t = {footer, footer + flen, "file metadata", err, errlen};
    if (parse_file_meta(&t, pq) || build_columns(pq, err, errlen)) {
        saefw_err_prefix(err, errlen, "%s", path);
        goto fail;
    }
    free(footer);
    *out = pq;
    return 0;
fail:
    free(footer);
    saefw_parquet_close(pq);
    return -1;
}

void saefw_parquet_close(saefw_parquet *pq) {
    if (!pq) return;
    if (pq->fd >= 0) close(pq->fd);
    for (int i = 0; i < pq->n_schema; i++) free(pq->schema[i].name);
    free(pq->schema);
    for (int g = 0; g < pq->n_rgs; g++) free(pq->rgs[g].chunks);
    free(pq->rgs);
    free(pq->cols);
    free(pq->path);
    free(pq);
}

const char *saefw_parquet_path(const saefw_parquet *pq) { return pq->path; }
int64_t saefw_parquet_rows(const saefw_parquet *pq) { return pq->rows; }
int saefw_parquet_row_groups(const saefw_parquet *pq) { return pq->n_rgs; }
int64_t saefw_parquet_row_group_rows(const saefw_parquet *pq, int rg) {
    return rg >= 0 && rg < pq->n_rgs ? pq->rgs[rg].rows : -1;
}
int saefw_parquet_columns(const saefw_parquet *pq) { return pq->n_cols; }
const saefw_parquet_column *saefw_parquet_column_info(const saefw_parquet *pq, int c) {
    return c >= 0 && c < pq->n_cols ? &pq->cols[c].pub : NULL;
}

const char *saefw_parquet_kind_name(saefw_parquet_kind kind) {
    switch (kind) {
    case SAEFW_PQ_INT32: return "int32";
    case SAEFW_PQ_INT64: return "int64";
    case SAEFW_PQ_STRING: return "string";
    case SAEFW_PQ_LIST_INT32: return "list<int32>";
    case SAEFW_PQ_LIST_INT64: return "list<int64>";
    default: return "other";
    }
}

static void kinds_text(unsigned kinds, char *out, size_t n) {
    if ((kinds & SAEFW_PQ_LISTS) == SAEFW_PQ_LISTS && !(kinds & ~(unsigned)SAEFW_PQ_LISTS)) {
        snprintf(out, n, "list<int32|int64>");
        return;
    }
    if ((kinds & SAEFW_PQ_INTS) == SAEFW_PQ_INTS && !(kinds & ~(unsigned)SAEFW_PQ_INTS)) {
        snprintf(out, n, "int32|int64");
        return;
    }
    out[0] = 0;
    for (unsigned k = 1; k <= SAEFW_PQ_LIST_INT64; k <<= 1) {
        if (!(kinds & k)) continue;
        size_t len = strlen(out);
        snprintf(out + len, n - len, "%s%s", len ? " or " : "", saefw_parquet_kind_name((saefw_parquet_kind)k));
    }
}

int saefw_parquet_find(const saefw_parquet *pq, const char *name, unsigned kinds, char *err, size_t errlen) {
    for (int c = 0; c < pq->n_cols; c++) {
        if (strcmp(pq->cols[c].pub.name, name) != 0) continue;
        if (pq->cols[c].pub.kind & kinds) return c;
        char want[96];
        kinds_text(kinds, want, sizeof want);
        saefw_errf(err, errlen, "%s: column '%s' is %s, expected %s", pq->path, name, pq->cols[c].pub.type, want);
        return -1;
    }
    char list[256] = "";
    for (int c = 0; c < pq->n_cols; c++) {
        size_t len = strlen(list);
        if (len > 200) {
            snprintf(list + len, sizeof list - len, ", ...");
            break;
        }
        snprintf(list + len, sizeof list - len, "%s%s", c ? ", " : "", pq->cols[c].pub.name);
    }
    saefw_errf(err, errlen, "%s: no column '%s' (columns: %s)", pq->path, name, list);
    return -1;
}

/* ---- batches ---- */

void saefw_parquet_batch_init(saefw_parquet_batch *b) { memset(b, 0, sizeof *b); }

void saefw_parquet_batch_free(saefw_parquet_batch *b) {
    if (!b) return;
    free(b->values);
    free(b->offsets);
    free(b->bytes);
    free(b->chunk);
    free(b->page);
    free(b->dict);
    free(b->dict_bytes);
    free(b->levels);
    free(b->idx);
    memset(b, 0, sizeof *b);
}

/* Make *buf hold at least n elements of size sz, growing by doubling. */
static int reserve(void *bufp, size_t *cap, size_t n, size_t sz, char *err, size_t errlen) {
    void **buf = bufp;
    if (n <= *cap && *buf) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < n) {
        if (c > SIZE_MAX / 2 / sz) return saefw_errf(err, errlen, "out of memory");
        c *= 2;
    }
    void *p = realloc(*buf, c * sz);
    if (!p) return saefw_errf(err, errlen, "out of memory (%zu bytes)", c * sz);
    *buf = p;
    *cap = c;
    return 0;
}

/* ---- decoding: RLE / bit-packed hybrid, delta, plain ---- */

/* 8 little-endian bytes; compilers turn this into one load on little-endian machines. */
static inline uint64_t load_le64(const uint8_t *p) {
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 |
           (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

/* Bits [pos, pos + bw) of a little-endian bit stream, bw <= 64; the caller checked the bytes exist. */
static uint64_t getbits(const uint8_t *b, uint64_t pos, int bw) {
    if (bw == 0) return 0;
    uint64_t byte = pos >> 3;
    int got = 8 - (int)(pos & 7);
    uint64_t v = b[byte++] >> (pos & 7);
    while (got < bw) {
        v |= (uint64_t)b[byte++] << got;
        got += 8;
    }
    return bw == 64 ? v : v & ((UINT64_C(1) << bw) - 1);
}

typedef struct {
    const uint8_t *p, *end;
    int bw;
    uint64_t run; /* values left in the current run */
    int packed;
    uint32_t value; /* of an RLE run */
    const uint8_t *bits;
    uint64_t bitpos, bitend;
} rle_dec;

static void rle_init(rle_dec *d, const uint8_t *p, const uint8_t *end, int bw) {
    memset(d, 0, sizeof *d);
    d->p = p;
    d->end = end;
    d->bw = bw;
}

static int rle_get(rle_dec *d, uint32_t *out, int64_t n, const char *what, char *err, size_t errlen) {
    while (n > 0) {
        if (d->run == 0) {
            uint64_t h;
            if (varint(&d->p, d->end, &h)) return saefw_errf(err, errlen, "%s: RLE data truncated", what);
            if (h & 1) {
                uint64_t groups = h >> 1;
                if (groups == 0 || groups > (UINT64_C(1) << 40))
                    return saefw_errf(err, errlen, "%s: bad bit-packed run", what);
                uint64_t bytes = groups * (uint64_t)d->bw;
                uint64_t avail = (uint64_t)(d->end - d->p);
                if (bytes > avail) bytes = avail; /* a final run may be cut short; its values are checked below */
                d->packed = 1;
                d->bits = d->p;
                d->bitpos = 0;
                d->bitend = bytes * 8;
                d->p += bytes;
                d->run = groups * 8;
            } else {
                int nb = (d->bw + 7) / 8;
                if (d->end - d->p < nb) return saefw_errf(err, errlen, "%s: RLE data truncated", what);
                uint32_t v = 0;
                for (int k = 0; k < nb; k++) v |= (uint32_t)d->p[k] << (8 * k);
                d->p += nb;
                d->packed = 0;
                d->value = v;
                d->run = h >> 1;
            }
            continue;
        }
        int64_t take = (uint64_t)n < d->run ? n : (int64_t)d->run;
        if (d->packed) {
            if ((uint64_t)take * (uint64_t)d->bw > d->bitend - d->bitpos)
                return saefw_errf(err, errlen, "%s: bit-packed run truncated", what);
            /* Whole 8-byte loads while they stay inside the run (the hot loop of levels and
             * dictionary indices), byte by byte at its end. */
            const uint64_t mask = d->bw == 32 ? UINT32_MAX : (UINT64_C(1) << d->bw) - 1;
            const uint64_t nbytes = d->bitend / 8;
            int64_t i = 0;
            for (; i < take && (d->bitpos >> 3) + 8 <= nbytes; i++) {
                out[i] = (uint32_t)((load_le64(d->bits + (d->bitpos >> 3)) >> (d->bitpos & 7)) & mask);
                d->bitpos += (uint64_t)d->bw;
            }
            for (; i < take; i++) {
                out[i] = (uint32_t)getbits(d->bits, d->bitpos, d->bw);
                d->bitpos += (uint64_t)d->bw;
            }
        } else {
            for (int64_t i = 0; i < take; i++) out[i] = d->value;
        }
        out += take;
        n -= take;
        d->run -= (uint64_t)take;
    }
    return 0;
}

/* DELTA_BINARY_PACKED: exactly n values into out (arithmetic wraps, as the writers' does); *endp is
 * the first byte after the encoded block. */
static int delta_decode(const uint8_t *p, const uint8_t *end, int64_t n, int64_t *out, const uint8_t **endp, char *err,
                        size_t errlen) {
    uint64_t block, mbs, total, first;
    if (varint(&p, end, &block) || varint(&p, end, &mbs) || varint(&p, end, &total) || varint(&p, end, &first))
        return saefw_errf(err, errlen, "DELTA_BINARY_PACKED header truncated");
    if (block == 0 || block % 128 || block > (1u << 20) || mbs == 0 || block % mbs || (block / mbs) % 32)
        return saefw_errf(err, errlen, "DELTA_BINARY_PACKED header damaged (block %llu, miniblocks %llu)",
                          (unsigned long long)block, (unsigned long long)mbs);
    if (total != (uint64_t)n)
        return saefw_errf(err, errlen, "DELTA_BINARY_PACKED holds %llu values, the page %lld",
                          (unsigned long long)total, (long long)n);
    uint64_t per_mb = block / mbs;
    int64_t got = 0;
    uint64_t last = (uint64_t)unzigzag(first);
    if (n > 0) out[got++] = (int64_t)last;
    while (got < n) {
        uint64_t md;
        if (varint(&p, end, &md)) return saefw_errf(err, errlen, "DELTA_BINARY_PACKED block truncated");
        uint64_t min_delta = (uint64_t)unzigzag(md);
        if ((uint64_t)(end - p) < mbs) return saefw_errf(err, errlen, "DELTA_BINARY_PACKED block truncated");
        const uint8_t *widths = p;
        p += mbs;
        for (uint64_t m = 0; m < mbs && got < n; m++) {
            int bw = widths[m];
            if (bw > 64) return saefw_errf(err, errlen, "DELTA_BINARY_PACKED bit width %d", bw);
            uint64_t need = (uint64_t)(n - got) < per_mb ? (uint64_t)(n - got) : per_mb;
            uint64_t bytes = per_mb * (uint64_t)bw / 8, avail = (uint64_t)(end - p);
            if (need * (uint64_t)bw > avail * 8)
                return saefw_errf(err, errlen, "DELTA_BINARY_PACKED miniblock truncated");
            for (uint64_t i = 0; i < need; i++) {
                last += min_delta + getbits(p, i * (uint64_t)bw, bw);
                out[got++] = (int64_t)last;
            }
            p += bytes < avail ? bytes : avail;
        }
    }
    *endp = p;
    return 0;
}

/* ---- reading one column chunk ---- */

typedef struct {
    int type;
    int32_t uncompressed, compressed;
    int has_v1, has_v2, has_dict;
    int32_t num_values, encoding, def_enc, rep_enc; /* v1 and dictionary */
    int32_t v2_nulls, v2_rows, def_len, rep_len;
    int v2_compressed;
} page_header;

static int parse_data_header(tr *t, page_header *h, int v2) {
    int last = 0, type, id;
    int32_t v;
    h->encoding = -1;
    h->num_values = -1;
    for (;;) {
        if (tr_field(t, &last, &type, &id)) return -1;
        if (type == TT_STOP) break;
        if (!v2 && id <= 4) {
            if (tr_int32(t, type, &v)) return -1;
            if (id == 1) h->num_values = v;
            else if (id == 2) h->encoding = v;
            else if (id == 3) h->def_enc = v;
            else h->rep_enc = v;
        } else if (v2 && id <= 6) {
            if (tr_int32(t, type, &v)) return -1;
            if (id == 1) h->num_values = v;
            else if (id == 2) h->v2_nulls = v;
            else if (id == 3) h->v2_rows = v;
            else if (id == 4) h->encoding = v;
            else if (id == 5) h->def_len = v;
            else h->rep_len = v;
        } else if (v2 && id == 7 && (type == TT_TRUE || type == TT_FALSE)) {
            h->v2_compressed = type == TT_TRUE;
        } else if (tr_skip(t, type, 2)) {
            return -1;
        }
    }
    if (h->num_values < 0 || h->encoding < 0) return tr_bad(t, "data page header lacks num_values or encoding");
    if (v2 && (h->def_len < 0 || h->rep_len < 0)) return tr_bad(t, "negative level lengths");
    return 0;
}

static int parse_page_header(tr *t, page_header *h) {
    int last = 0, type, id;
    int32_t v;
    memset(h, 0, sizeof *h);
    h->type = -1;
    h->uncompressed = h->compressed = -1;
    h->v2_compressed = 1;
    for (;;) {
        if (tr_field(t, &last, &type, &id)) return -1;
        if (type == TT_STOP) break;
        if (id >= 1 && id <= 3) {
            if (tr_int32(t, type, &v)) return -1;
            if (id == 1) h->type = v;
            else if (id == 2) h->uncompressed = v;
            else h->compressed = v;
        } else if (id == 5 || id == 8) {
            if (tr_expect(t, type, TT_STRUCT) || parse_data_header(t, h, id == 8)) return -1;
            if (id == 5) h->has_v1 = 1;
            else h->has_v2 = 1;
        } else if (id == 7) {
            int l2 = 0, ty2, id2;
            if (tr_expect(t, type, TT_STRUCT)) return -1;
            h->num_values = -1;
            h->encoding = -1;
            for (;;) {
                if (tr_field(t, &l2, &ty2, &id2)) return -1;
                if (ty2 == TT_STOP) break;
                if (id2 == 1 || id2 == 2) {
                    if (tr_int32(t, ty2, &v)) return -1;
                    if (id2 == 1) h->num_values = v;
                    else h->encoding = v;
                } else if (tr_skip(t, ty2, 2)) {
                    return -1;
                }
            }
            if (h->num_values < 0 || h->encoding < 0)
                return tr_bad(t, "dictionary page header lacks num_values or encoding");
            h->has_dict = 1;
        } else if (tr_skip(t, type, 1)) {
            return -1;
        }
    }
    if (h->type < 0 || h->uncompressed < 0 || h->compressed < 0)
        return tr_bad(t, "page header lacks its type or sizes");
    return 0;
}

typedef struct {
    const saefw_parquet *pq;
    const pq_col *col;
    const pq_chunk *ch;
    saefw_parquet_batch *b;
    int64_t rows_done, levels_done, values_done;
    int64_t max_values;
    int have_dict;
    char *err;
    size_t errlen;
} chunk_ctx;

/* Decompress src into the batch's page buffer (or point at src when it is stored as is). */
static int decompress(chunk_ctx *x, const uint8_t *src, size_t n, size_t want, const uint8_t **outp) {
    int codec = x->ch->codec;
    if (codec == C_UNCOMPRESSED) {
        if (n != want) return saefw_errf(x->err, x->errlen, "uncompressed page of %zu bytes claims %zu", n, want);
        *outp = src;
        return 0;
    }
    if (reserve(&x->b->page, &x->b->page_cap, want ? want : 1, 1, x->err, x->errlen)) return -1;
    uint8_t *dst = x->b->page;
    if (codec == C_SNAPPY) {
        size_t len;
        if (snappy_uncompressed_length((const char *)src, n, &len) != SNAPPY_OK || len != want)
            return saefw_errf(x->err, x->errlen, "snappy data damaged (page claims %zu bytes)", want);
        if (snappy_uncompress((const char *)src, n, (char *)dst, &len) != SNAPPY_OK || len != want)
            return saefw_errf(x->err, x->errlen, "snappy data damaged");
    } else if (codec == C_ZSTD) {
        size_t r = ZSTD_decompress(dst, want, src, n);
        if (ZSTD_isError(r)) return saefw_errf(x->err, x->errlen, "zstd data damaged: %s", ZSTD_getErrorName(r));
        if (r != want) return saefw_errf(x->err, x->errlen, "zstd data holds %zu bytes, the page claims %zu", r, want);
    } else if (codec == C_GZIP) {
        z_stream zs;
        memset(&zs, 0, sizeof zs);
        if (inflateInit2(&zs, 15 + 32) != Z_OK) return saefw_errf(x->err, x->errlen, "zlib init failed");
        zs.next_in = (Bytef *)src;
        zs.avail_in = (uInt)n;
        zs.next_out = dst;
        zs.avail_out = (uInt)want;
        int rc;
        /* Several gzip members are one stream, as gzip itself reads them. */
        while ((rc = inflate(&zs, Z_FINISH)) == Z_STREAM_END && zs.avail_in > 0)
            if (inflateReset(&zs) != Z_OK) break;
        size_t got = want - zs.avail_out; /* total_out restarts at each member */
        inflateEnd(&zs);
        if (rc != Z_STREAM_END || zs.avail_in != 0 || got != want)
            return saefw_errf(x->err, x->errlen, "gzip data damaged (page claims %zu bytes)", want);
    } else {
        return saefw_errf(x->err, x->errlen, "codec %s is not supported (UNCOMPRESSED, SNAPPY, GZIP, ZSTD are)",
                          codec_name(codec));
    }
    *outp = dst;
    return 0;
}

static int value_size(int phys) { return phys == T_INT32 ? 4 : 8; }

static int64_t widen(const pq_col *c, uint64_t v) {
    if (c->phys != T_INT32) return (int64_t)v;
    return c->is_unsigned ? (int64_t)(uint32_t)v : (int64_t)(int32_t)(uint32_t)v;
}

static uint64_t load_le(const uint8_t *p, int size) {
    uint64_t v = 0;
    for (int k = 0; k < size; k++) v |= (uint64_t)p[k] << (8 * k);
    return v;
}

static int read_dictionary(chunk_ctx *x, const page_header *h, const uint8_t *d, size_t n) {
    saefw_parquet_batch *b = x->b;
    if (x->have_dict) return saefw_errf(x->err, x->errlen, "second dictionary page");
    if (x->levels_done > 0) return saefw_errf(x->err, x->errlen, "dictionary page after data pages");
    if (h->encoding != E_PLAIN && h->encoding != E_PLAIN_DICTIONARY)
        return saefw_errf(x->err, x->errlen, "dictionary page encoding %s is not supported",
                          encoding_name(h->encoding));
    int64_t count = h->num_values;
    if (x->col->pub.kind == SAEFW_PQ_STRING) {
        if ((uint64_t)count > n / 4) return saefw_errf(x->err, x->errlen, "dictionary page truncated");
        if (reserve(&b->dict, &b->dict_cap, (size_t)count + 1, sizeof *b->dict, x->err, x->errlen) ||
            reserve(&b->dict_bytes, &b->dict_bytes_cap, n ? n : 1, 1, x->err, x->errlen))
            return -1;
        size_t pos = 0, outp = 0;
        b->dict[0] = 0;
        for (int64_t i = 0; i < count; i++) {
            if (n - pos < 4) return saefw_errf(x->err, x->errlen, "dictionary page truncated");
            uint64_t len = load_le(d + pos, 4);
            pos += 4;
            if (len > n - pos) return saefw_errf(x->err, x->errlen, "dictionary page truncated");
            memcpy(b->dict_bytes + outp, d + pos, len);
            pos += len;
            outp += len;
            b->dict[i + 1] = (int64_t)outp;
        }
    } else {
        int sz = value_size(x->col->phys);
        if ((uint64_t)count > n / (size_t)sz) return saefw_errf(x->err, x->errlen, "dictionary page truncated");
        if (reserve(&b->dict, &b->dict_cap, (size_t)count + 1, sizeof *b->dict, x->err, x->errlen)) return -1;
        for (int64_t i = 0; i < count; i++) b->dict[i] = widen(x->col, load_le(d + i * sz, sz));
    }
    b->dict_n = count;
    x->have_dict = 1;
    return 0;
}

static int level_width(int max) {
    int w = 0;
    while ((1 << w) <= max) w++;
    return w;
}

/* Append one string's bytes. */
static int put_string(chunk_ctx *x, const uint8_t *s, size_t len) {
    saefw_parquet_batch *b = x->b;
    size_t used = (size_t)b->offsets[b->n];
    if (len > SIZE_MAX - used) return saefw_errf(x->err, x->errlen, "strings too large");
    if (reserve(&b->bytes, &b->bytes_cap, used + len ? used + len : 1, 1, x->err, x->errlen)) return -1;
    memcpy(b->bytes + used, s, len);
    b->n++;
    b->offsets[b->n] = (int64_t)(used + len);
    return 0;
}

/* Decode nn non-null values of a data page's value section [d, end). */
static int decode_values(chunk_ctx *x, int encoding, const uint8_t *d, const uint8_t *end, int64_t nn) {
    saefw_parquet_batch *b = x->b;
    const pq_col *c = x->col;
    int is_str = c->pub.kind == SAEFW_PQ_STRING;
    if (nn == 0) return 0;
    if (!is_str && reserve(&b->values, &b->values_cap, (size_t)(b->n + nn), sizeof *b->values, x->err, x->errlen))
        return -1;
    size_t n = (size_t)(end - d);
    if (encoding == E_PLAIN) {
        if (is_str) {
            size_t pos = 0;
            for (int64_t i = 0; i < nn; i++) {
                if (n - pos < 4) return saefw_errf(x->err, x->errlen, "PLAIN strings truncated");
                uint64_t len = load_le(d + pos, 4);
                pos += 4;
                if (len > n - pos) return saefw_errf(x->err, x->errlen, "PLAIN strings truncated");
                if (put_string(x, d + pos, (size_t)len)) return -1;
                pos += len;
            }
            return 0;
        }
        int sz = value_size(c->phys);
        if ((uint64_t)nn > n / (size_t)sz) return saefw_errf(x->err, x->errlen, "PLAIN values truncated");
        int64_t *out = b->values + b->n;
        if (c->phys == T_INT64) {
            for (int64_t i = 0; i < nn; i++) out[i] = (int64_t)load_le64(d + 8 * i);
        } else {
            for (int64_t i = 0; i < nn; i++) out[i] = widen(c, load_le(d + 4 * i, 4));
        }
        b->n += nn;
        return 0;
    }
    if (encoding == E_PLAIN_DICTIONARY || encoding == E_RLE_DICTIONARY) {
        if (!x->have_dict) return saefw_errf(x->err, x->errlen, "dictionary-encoded page without a dictionary page");
        if (n < 1) return saefw_errf(x->err, x->errlen, "dictionary indices truncated");
        int bw = d[0];
        if (bw > 32) return saefw_errf(x->err, x->errlen, "dictionary index width %d", bw);
        if (reserve(&b->idx, &b->idx_cap, (size_t)nn, sizeof *b->idx, x->err, x->errlen)) return -1;
        rle_dec r;
        rle_init(&r, d + 1, end, bw);
        if (rle_get(&r, b->idx, nn, "dictionary indices", x->err, x->errlen)) return -1;
        for (int64_t i = 0; i < nn; i++)
            if (b->idx[i] >= (uint64_t)b->dict_n)
                return saefw_errf(x->err, x->errlen, "dictionary index %u out of range (dictionary of %lld)", b->idx[i],
                                  (long long)b->dict_n);
        if (is_str) {
            for (int64_t i = 0; i < nn; i++) {
                int64_t a = b->dict[b->idx[i]], z = b->dict[b->idx[i] + 1];
                if (put_string(x, b->dict_bytes + a, (size_t)(z - a))) return -1;
            }
        } else {
            int64_t *out = b->values + b->n;
            const int64_t *dict = b->dict;
            const uint32_t *idx = b->idx;
            for (int64_t i = 0; i < nn; i++) out[i] = dict[idx[i]];
            b->n += nn;
        }
        return 0;
    }
    if (encoding == E_DELTA_BINARY_PACKED && !is_str) {
        const uint8_t *after;
        int64_t *out = b->values + b->n;
        if (delta_decode(d, end, nn, out, &after, x->err, x->errlen)) return -1;
        if (c->phys == T_INT32)
            for (int64_t i = 0; i < nn; i++) out[i] = widen(c, (uint64_t)out[i]);
        b->n += nn;
        return 0;
    }
    if (encoding == E_DELTA_LENGTH_BYTE_ARRAY && is_str) {
        /* The lengths decode into the values array, which strings leave unused. */
        if (reserve(&b->values, &b->values_cap, (size_t)nn, sizeof *b->values, x->err, x->errlen)) return -1;
        const uint8_t *s;
        if (delta_decode(d, end, nn, b->values, &s, x->err, x->errlen)) return -1;
        for (int64_t i = 0; i < nn; i++) {
            int64_t len = b->values[i];
            if (len < 0 || (uint64_t)len > (uint64_t)(end - s))
                return saefw_errf(x->err, x->errlen, "DELTA_LENGTH_BYTE_ARRAY strings truncated");
            if (put_string(x, s, (size_t)len)) return -1;
            s += len;
        }
        return 0;
    }
    if (encoding == E_DELTA_BYTE_ARRAY && is_str) {
        /* Prefix lengths, then suffix lengths, then the suffixes; each string shares its prefix with
         * the string before it in the page. */
        if (reserve(&b->values, &b->values_cap, 2 * (size_t)nn, sizeof *b->values, x->err, x->errlen)) return -1;
        const uint8_t *q, *s;
        int64_t *pre = b->values, *suf = b->values + nn;
        if (delta_decode(d, end, nn, pre, &q, x->err, x->errlen) ||
            delta_decode(q, end, nn, suf, &s, x->err, x->errlen))
            return -1;
        int64_t first = b->n;
        for (int64_t i = 0; i < nn; i++) {
            int64_t prev_len = b->n > first ? b->offsets[b->n] - b->offsets[b->n - 1] : 0;
            if (pre[i] < 0 || pre[i] > prev_len)
                return saefw_errf(x->err, x->errlen, "DELTA_BYTE_ARRAY prefix out of range");
            if (suf[i] < 0 || (uint64_t)suf[i] > (uint64_t)(end - s))
                return saefw_errf(x->err, x->errlen, "DELTA_BYTE_ARRAY strings truncated");
            size_t used = (size_t)b->offsets[b->n], len = (size_t)(pre[i] + suf[i]);
            if (reserve(&b->bytes, &b->bytes_cap, used + len ? used + len : 1, 1, x->err, x->errlen)) return -1;
            if (pre[i]) memmove(b->bytes + used, b->bytes + b->offsets[b->n - 1], (size_t)pre[i]);
            memcpy(b->bytes + used + pre[i], s, (size_t)suf[i]);
            s += suf[i];
            b->n++;
            b->offsets[b->n] = (int64_t)(used + len);
        }
        return 0;
    }
    return saefw_errf(x->err, x->errlen, "encoding %s is not supported for %s values", encoding_name(encoding),
                      c->pub.type);
}

/* Levels of a page into rep [nv] and def [nv] (zeros where the column has none). v1 levels carry a
 * 4-byte length; v2 levels are given with their lengths. Returns the bytes used through *used. */
static int read_levels(chunk_ctx *x, const uint8_t *p, const uint8_t *end, int v1, int32_t rep_len, int32_t def_len,
                       int64_t nv, uint32_t *rep, uint32_t *def, size_t *used) {
    const uint8_t *start = p;
    for (int which = 0; which < 2; which++) {
        int max = which == 0 ? x->col->max_rep : x->col->max_def;
        uint32_t *out = which == 0 ? rep : def;
        const char *what = which == 0 ? "repetition levels" : "definition levels";
        if (max == 0) {
            memset(out, 0, (size_t)nv * sizeof *out);
            continue;
        }
        uint64_t len;
        if (v1) {
            if (end - p < 4) return saefw_errf(x->err, x->errlen, "%s truncated", what);
            len = load_le(p, 4);
            p += 4;
        } else {
            len = (uint64_t)(which == 0 ? rep_len : def_len);
        }
        if (len > (uint64_t)(end - p)) return saefw_errf(x->err, x->errlen, "%s truncated", what);
        rle_dec r;
        rle_init(&r, p, p + len, level_width(max));
        if (rle_get(&r, out, nv, what, x->err, x->errlen)) return -1;
        for (int64_t i = 0; i < nv; i++)
            if (out[i] > (uint32_t)max)
                return saefw_errf(x->err, x->errlen, "%s: level %u above the maximum %d", what, out[i], max);
        p += len;
    }
    *used = (size_t)(p - start);
    return 0;
}

/* Walk a page's levels: count its non-null values, start rows, refuse nulls where they cannot be. */
static int walk_levels(chunk_ctx *x, const uint32_t *rep, const uint32_t *def, int64_t nv, int64_t *nn_out) {
    saefw_parquet_batch *b = x->b;
    const pq_col *c = x->col;
    const int max_def = c->max_def;
    int64_t nn = 0;
    if (c->max_rep) {
        int64_t vals = x->values_done;
        for (int64_t i = 0; i < nv; i++) {
            if (rep[i] == 0) {
                if (x->rows_done >= b->rows)
                    return saefw_errf(x->err, x->errlen, "more rows than the row group's %lld", (long long)b->rows);
                b->offsets[x->rows_done++] = vals;
            } else if (x->rows_done == 0) {
                return saefw_errf(x->err, x->errlen, "the first value continues a row");
            }
            if ((int)def[i] == max_def) {
                vals++;
            } else if ((int)def[i] < c->top_def) {
                return saefw_errf(x->err, x->errlen, "row %lld is a null list (a token list cannot be null)",
                                  (long long)x->rows_done - 1);
            } else if ((int)def[i] > c->top_def) {
                return saefw_errf(x->err, x->errlen, "row %lld holds a null element (a token cannot be null)",
                                  (long long)x->rows_done - 1);
            }
        }
        nn = vals - x->values_done;
    } else {
        if (nv > b->rows - x->rows_done)
            return saefw_errf(x->err, x->errlen, "more rows than the row group's %lld", (long long)b->rows);
        for (int64_t i = 0; i < nv; i++) {
            if ((int)def[i] == max_def) {
                nn++;
            } else if (c->pub.kind == SAEFW_PQ_STRING) {
                b->nulls_skipped++;
            } else {
                return saefw_errf(x->err, x->errlen, "row %lld is null (an integer column cannot hold nulls here)",
                                  (long long)(x->rows_done + i));
            }
        }
        x->rows_done += nv;
    }
    *nn_out = nn;
    return 0;
}

static int data_page(chunk_ctx *x, const page_header *h, const uint8_t *body) {
    saefw_parquet_batch *b = x->b;
    int v2 = h->type == P_DATA_V2;
    if (v2 ? !h->has_v2 : !h->has_v1) return saefw_errf(x->err, x->errlen, "data page without its header");
    int64_t nv = h->num_values;
    if (nv > x->ch->num_values - x->levels_done)
        return saefw_errf(x->err, x->errlen, "pages hold more values than the column chunk's %lld",
                          (long long)x->ch->num_values);
    if (!v2 && ((x->col->max_rep && h->rep_enc != E_RLE) || (x->col->max_def && h->def_enc != E_RLE)))
        return saefw_errf(x->err, x->errlen, "level encoding %s is not supported (RLE is)",
                          encoding_name(x->col->max_rep && h->rep_enc != E_RLE ? h->rep_enc : h->def_enc));
    if (reserve(&b->levels, &b->levels_cap, 2 * (size_t)(nv ? nv : 1), sizeof *b->levels, x->err, x->errlen)) return -1;
    uint32_t *rep = b->levels, *def = b->levels + nv;
    const uint8_t *vals, *vend;
    size_t used = 0;
    if (!v2) {
        const uint8_t *page;
        if (decompress(x, body, (size_t)h->compressed, (size_t)h->uncompressed, &page)) return -1;
        const uint8_t *pend = page + h->uncompressed;
        if (read_levels(x, page, pend, 1, 0, 0, nv, rep, def, &used)) return -1;
        vals = page + used;
        vend = pend;
    } else {
        int64_t lv = (int64_t)h->rep_len + h->def_len;
        if (lv > h->compressed || lv > h->uncompressed)
            return saefw_errf(x->err, x->errlen, "level lengths exceed the page");
        if (read_levels(x, body, body + lv, 0, h->rep_len, h->def_len, nv, rep, def, &used)) return -1;
        size_t cn = (size_t)(h->compressed - lv), un = (size_t)(h->uncompressed - lv);
        if (h->v2_compressed) {
            if (decompress(x, body + lv, cn, un, &vals)) return -1;
        } else {
            if (cn != un) return saefw_errf(x->err, x->errlen, "uncompressed page of %zu bytes claims %zu", cn, un);
            vals = body + lv;
        }
        vend = vals + un;
    }
    int64_t nn = 0;
    if (walk_levels(x, rep, def, nv, &nn)) return -1;
    if (nn > x->max_values - x->values_done)
        return saefw_errf(x->err, x->errlen, "more than %lld values", (long long)x->max_values);
    if (decode_values(x, h->encoding, vals, vend, nn)) return -1;
    x->values_done += nn;
    x->levels_done += nv;
    return 0;
}

static int read_chunk(chunk_ctx *x) {
    saefw_parquet_batch *b = x->b;
    const pq_chunk *ch = x->ch;
    if (ch->type != x->col->phys)
        return saefw_errf(x->err, x->errlen, "column chunk of type %s, the schema says %s", type_name(ch->type),
                          type_name(x->col->phys));
    if (ch->num_values > x->max_values)
        return saefw_errf(x->err, x->errlen, "column chunk of %lld values exceeds the limit of %lld",
                          (long long)ch->num_values, (long long)x->max_values);
    if (reserve(&b->chunk, &b->chunk_cap, ch->len ? (size_t)ch->len : 1, 1, x->err, x->errlen)) return -1;
    int rc = pread_all(x->pq->fd, b->chunk, (size_t)ch->len, ch->start);
    if (rc)
        return saefw_errf(x->err, x->errlen, "cannot read the column chunk: %s",
                          rc == -2 ? "file shrank" : strerror(errno));
    const uint8_t *p = b->chunk, *end = b->chunk + ch->len;
    int64_t page_no = 0;
    while (x->levels_done < ch->num_values) {
        if (p >= end)
            return saefw_errf(x->err, x->errlen, "column chunk ends after %lld of %lld values",
                              (long long)x->levels_done, (long long)ch->num_values);
        page_header h;
        tr t = {p, end, "page header", x->err, x->errlen};
        if (parse_page_header(&t, &h)) return saefw_err_prefix(x->err, x->errlen, "page %lld", (long long)page_no);
        p = t.p;
        if (h.compressed > end - p)
            return saefw_errf(x->err, x->errlen, "page %lld: page of %d bytes runs past the column chunk",
                              (long long)page_no, h.compressed);
        if (h.uncompressed > PAGE_BYTES_MAX)
            return saefw_errf(x->err, x->errlen, "page %lld: %d bytes uncompressed is too large", (long long)page_no,
                              h.uncompressed);
        const uint8_t *body = p;
        p += h.compressed;
        int prc = 0;
        if (h.type == P_DICTIONARY) {
            const uint8_t *d;
            if (!h.has_dict) prc = saefw_errf(x->err, x->errlen, "dictionary page without its header");
            else
                prc = decompress(x, body, (size_t)h.compressed, (size_t)h.uncompressed, &d) ||
                      read_dictionary(x, &h, d, (size_t)h.uncompressed);
        } else if (h.type == P_DATA || h.type == P_DATA_V2) {
            prc = data_page(x, &h, body);
        } /* index pages and unknown page types are skipped */
        if (prc) return saefw_err_prefix(x->err, x->errlen, "page %lld", (long long)page_no);
        page_no++;
    }
    if (x->rows_done != b->rows)
        return saefw_errf(x->err, x->errlen, "column chunk holds %lld rows, the row group %lld",
                          (long long)x->rows_done, (long long)b->rows);
    if (x->col->max_rep) b->offsets[b->rows] = x->values_done;
    return 0;
}

int saefw_parquet_read(const saefw_parquet *pq, int rg, int col, saefw_parquet_batch *b, char *err, size_t errlen) {
    if (rg < 0 || rg >= pq->n_rgs)
        return saefw_errf(err, errlen, "%s: row group %d out of range (%d row groups)", pq->path, rg, pq->n_rgs);
    if (col < 0 || col >= pq->n_cols)
        return saefw_errf(err, errlen, "%s: column %d out of range (%d columns)", pq->path, col, pq->n_cols);
    const pq_col *c = &pq->cols[col];
    if (c->pub.kind == SAEFW_PQ_OTHER)
        return saefw_errf(err, errlen,
                          "%s: row group %d, column '%s': type %s cannot be read (int32, int64, string, "
                          "list<int32|int64> can)",
                          pq->path, rg, c->pub.name, c->pub.type);
    chunk_ctx x = {
        pq,  c,     &pq->rgs[rg].chunks[c->leaf], b, 0, 0, 0, b->max_values > 0 ? b->max_values : MAX_VALUES_DEFAULT, 0,
        err, errlen};
    b->rows = pq->rgs[rg].rows;
    b->n = 0;
    b->nulls_skipped = 0;
    b->dict_n = 0;
    int rc = 0;
    if (b->rows > x.max_values)
        rc = saefw_errf(err, errlen, "%lld rows exceed the limit of %lld", (long long)b->rows, (long long)x.max_values);
    if (!rc) rc = reserve(&b->offsets, &b->offsets_cap, (size_t)b->rows + 1, sizeof *b->offsets, err, errlen);
    if (!rc) {
        b->offsets[0] = 0;
        rc = read_chunk(&x);
    }
    if (rc) return saefw_err_prefix(err, errlen, "%s: row group %d, column '%s'", pq->path, rg, c->pub.name);
    if (c->pub.kind != SAEFW_PQ_STRING && !c->max_rep && b->n != b->rows)
        return saefw_errf(err, errlen, "%s: row group %d, column '%s': %lld values for %lld rows", pq->path, rg,
                          c->pub.name, (long long)b->n, (long long)b->rows);
    return 0;
}
