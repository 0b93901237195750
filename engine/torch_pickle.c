/* The pickle machine of PyTorch checkpoints: runs a data.pkl image with only the opcodes and globals a
 * plain state dict or tensor needs, and flattens the result into a list of named tensors, each with its
 * storage record key, dtype, offset and shape, checked against its storage's declared size. It knows
 * nothing of the zip around it (torchpt.c). */
#include "torch_pickle.h"
#include "tensorfile_internal.h"
#include "util.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_MAX ((size_t)1 << 30)
#define DICT_DEPTH_MAX 32
#define DICT_ENTRIES_MAX ((size_t)1 << 22)
#define NAME_LEN_MAX 1024

/* ------------------------------------------------------------------------------------------------
 * Arena: every pickle value lives here, so the machine never frees a value on its own and shared or
 * cyclic references (through the memo) are harmless. */

typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
} arena_block;

#define BLOCK_HDR ((sizeof(arena_block) + 15) & ~(size_t)15)

typedef struct {
    arena_block *head;
    size_t total;
} arena;

static void *arena_alloc(arena *a, size_t n) {
    if (n > ARENA_MAX) return NULL;
    n = (n + 15) & ~(size_t)15;
    if (!a->head || a->head->cap - a->head->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        if (a->total + cap > ARENA_MAX) return NULL;
        arena_block *b = malloc(BLOCK_HDR + cap);
        if (!b) return NULL;
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
        a->total += cap;
    }
    void *p = (char *)a->head + BLOCK_HDR + a->head->used;
    a->head->used += n;
    return p;
}

static void arena_free(arena *a) {
    while (a->head) {
        arena_block *next = a->head->next;
        free(a->head);
        a->head = next;
    }
    a->total = 0;
}

/* ------------------------------------------------------------------------------------------------
 * Pickle values */

enum { V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_TUPLE, V_LIST, V_DICT, V_GLOBAL, V_STORAGE, V_TENSOR, V_DEVICE };
static const char *const kind_name[] = {"None", "bool", "int",    "float",   "str",    "tuple",
                                        "list", "dict", "global", "storage", "tensor", "torch.device"};

enum { G_ORDERED_DICT, G_REBUILD_TENSOR, G_REBUILD_PARAMETER, G_STORAGE, G_DEVICE };

typedef struct val val;

typedef struct {
    val *storage;
    int64_t offset;
    int ndim;
    int64_t shape[SAEFW_MAX_DIMS], stride[SAEFW_MAX_DIMS];
} tensor_rec;

struct val {
    int kind;
    int collected; /* a dict already flattened: reaching it again means shared dicts */
    union {
        int64_t i; /* V_BOOL, V_INT */
        double f;  /* V_FLOAT */
        struct {
            const char *p;
            size_t len;
        } s; /* V_STR, NUL-terminated */
        struct {
            val **v;
            size_t n, cap;
        } seq; /* tuple, list; dict as key, value, key, ... */
        struct {
            int id;
            saefw_dtype dtype;
            const char *name;
        } g;
        struct {
            const char *key;
            size_t key_len;
            saefw_dtype dtype;
            int64_t numel;
        } st;
        tensor_rec *t;
    } u;
};

static const struct {
    const char *mod, *name;
    int id;
    saefw_dtype dtype;
} allowed_globals[] = {
    {"collections", "OrderedDict", G_ORDERED_DICT, SAEFW_DT_F32},
    {"torch._utils", "_rebuild_tensor_v2", G_REBUILD_TENSOR, SAEFW_DT_F32},
    {"torch._utils", "_rebuild_parameter", G_REBUILD_PARAMETER, SAEFW_DT_F32},
    {"torch", "FloatStorage", G_STORAGE, SAEFW_DT_F32},
    {"torch", "HalfStorage", G_STORAGE, SAEFW_DT_F16},
    {"torch", "BFloat16Storage", G_STORAGE, SAEFW_DT_BF16},
    {"torch", "DoubleStorage", G_STORAGE, SAEFW_DT_F64},
    {"torch", "LongStorage", G_STORAGE, SAEFW_DT_I64},
    {"torch", "IntStorage", G_STORAGE, SAEFW_DT_I32},
    {"torch", "ShortStorage", G_STORAGE, SAEFW_DT_I16},
    {"torch", "CharStorage", G_STORAGE, SAEFW_DT_I8},
    {"torch", "ByteStorage", G_STORAGE, SAEFW_DT_U8},
    {"torch", "BoolStorage", G_STORAGE, SAEFW_DT_BOOL},
    {"torch", "device", G_DEVICE, SAEFW_DT_F32},
};

static const struct {
    uint8_t op;
    const char *name;
} opcode_names[] = {
    {'(', "MARK"},
    {'.', "STOP"},
    {'0', "POP"},
    {'1', "POP_MARK"},
    {'2', "DUP"},
    {'F', "FLOAT"},
    {'I', "INT"},
    {'J', "BININT"},
    {'K', "BININT1"},
    {'L', "LONG"},
    {'M', "BININT2"},
    {'N', "NONE"},
    {'P', "PERSID"},
    {'Q', "BINPERSID"},
    {'R', "REDUCE"},
    {'S', "STRING"},
    {'T', "BINSTRING"},
    {'U', "SHORT_BINSTRING"},
    {'V', "UNICODE"},
    {'X', "BINUNICODE"},
    {'a', "APPEND"},
    {'b', "BUILD"},
    {'c', "GLOBAL"},
    {'d', "DICT"},
    {'}', "EMPTY_DICT"},
    {'e', "APPENDS"},
    {'g', "GET"},
    {'h', "BINGET"},
    {'i', "INST"},
    {'j', "LONG_BINGET"},
    {'l', "LIST"},
    {']', "EMPTY_LIST"},
    {'o', "OBJ"},
    {'p', "PUT"},
    {'q', "BINPUT"},
    {'r', "LONG_BINPUT"},
    {'s', "SETITEM"},
    {'t', "TUPLE"},
    {')', "EMPTY_TUPLE"},
    {'u', "SETITEMS"},
    {'G', "BINFLOAT"},
    {'B', "BINBYTES"},
    {'C', "SHORT_BINBYTES"},
    {0x80, "PROTO"},
    {0x81, "NEWOBJ"},
    {0x82, "EXT1"},
    {0x83, "EXT2"},
    {0x84, "EXT4"},
    {0x85, "TUPLE1"},
    {0x86, "TUPLE2"},
    {0x87, "TUPLE3"},
    {0x88, "NEWTRUE"},
    {0x89, "NEWFALSE"},
    {0x8a, "LONG1"},
    {0x8b, "LONG4"},
    {0x8c, "SHORT_BINUNICODE"},
    {0x8d, "BINUNICODE8"},
    {0x8e, "BINBYTES8"},
    {0x8f, "EMPTY_SET"},
    {0x90, "ADDITEMS"},
    {0x91, "FROZENSET"},
    {0x92, "NEWOBJ_EX"},
    {0x93, "STACK_GLOBAL"},
    {0x94, "MEMOIZE"},
    {0x95, "FRAME"},
    {0x96, "BYTEARRAY8"},
    {0x97, "NEXT_BUFFER"},
    {0x98, "READONLY_BUFFER"},
};

static const char *opcode_name(uint8_t op) {
    for (size_t i = 0; i < sizeof opcode_names / sizeof opcode_names[0]; i++)
        if (opcode_names[i].op == op) return opcode_names[i].name;
    return "not a pickle opcode";
}

/* ------------------------------------------------------------------------------------------------
 * The pickle machine */

typedef struct {
    const uint8_t *base, *p, *end;
    size_t op_at; /* offset of the opcode being run, for messages */
    arena *a;
    val **stack;
    size_t sp, scap;
    size_t *marks;
    size_t nmarks, mcap;
    val **memo;
    size_t memo_cap, memo_count, memo_limit;
    char *err;
    size_t errlen;
} vm;

static int vm_err(vm *m, const char *fmt, ...) SAEFW_PRINTF(2, 3);
static int vm_err(vm *m, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return saefw_errf(m->err, m->errlen, "data.pkl byte %zu: %s", m->op_at, msg);
}

static val *new_val(vm *m, int kind) {
    val *v = arena_alloc(m->a, sizeof *v);
    if (!v) {
        vm_err(m, "out of memory while unpickling (limit %zu MiB)", ARENA_MAX >> 20);
        return NULL;
    }
    memset(v, 0, sizeof *v);
    v->kind = kind;
    return v;
}

static int grow(void **arr, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 16;
    while (nc < need) {
        if (nc > SIZE_MAX / 2 / elem) return -1;
        nc *= 2;
    }
    void *n = realloc(*arr, nc * elem);
    if (!n) return -1;
    *arr = n;
    *cap = nc;
    return 0;
}

static int push(vm *m, val *v) {
    if (!v) return -1;
    if (grow((void **)&m->stack, &m->scap, m->sp + 1, sizeof *m->stack) != 0)
        return vm_err(m, "out of memory while unpickling");
    m->stack[m->sp++] = v;
    return 0;
}

static size_t fence(const vm *m) { return m->nmarks ? m->marks[m->nmarks - 1] : 0; }

/* Pops like CPython's _pickle: never below the innermost MARK. */
static val *pop(vm *m) {
    if (m->sp <= fence(m)) {
        vm_err(m, "pickle stack underflow");
        return NULL;
    }
    return m->stack[--m->sp];
}

static val *top(vm *m) {
    if (m->sp <= fence(m)) {
        vm_err(m, "pickle stack underflow");
        return NULL;
    }
    return m->stack[m->sp - 1];
}

/* Items pushed since the innermost MARK, which is removed: stack[*from .. m->sp before the call). */
static int pop_mark(vm *m, size_t *from, size_t *n) {
    if (m->nmarks == 0) return vm_err(m, "no MARK on the pickle stack");
    size_t k = m->marks[--m->nmarks];
    *from = k;
    *n = m->sp - k;
    m->sp = k;
    return 0;
}

static int seq_append(vm *m, val *seq, val *item) {
    if (seq->u.seq.n == seq->u.seq.cap) {
        size_t nc = seq->u.seq.cap ? 2 * seq->u.seq.cap : 4;
        val **nv = arena_alloc(m->a, nc * sizeof *nv);
        if (!nv) return vm_err(m, "out of memory while unpickling (limit %zu MiB)", ARENA_MAX >> 20);
        if (seq->u.seq.n) memcpy(nv, seq->u.seq.v, seq->u.seq.n * sizeof *nv);
        seq->u.seq.v = nv;
        seq->u.seq.cap = nc;
    }
    seq->u.seq.v[seq->u.seq.n++] = item;
    return 0;
}

static val *make_tuple(vm *m, val *const *items, size_t n) {
    val *t = new_val(m, V_TUPLE);
    if (!t) return NULL;
    if (n) {
        t->u.seq.v = arena_alloc(m->a, n * sizeof *items);
        if (!t->u.seq.v) {
            vm_err(m, "out of memory while unpickling");
            return NULL;
        }
        memcpy(t->u.seq.v, items, n * sizeof *items);
    }
    t->u.seq.n = t->u.seq.cap = n;
    return t;
}

static int take(vm *m, size_t n, const uint8_t **out) {
    if ((size_t)(m->end - m->p) < n) return vm_err(m, "pickle truncated inside the argument of an opcode");
    *out = m->p;
    m->p += n;
    return 0;
}

static uint64_t le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static val *make_str(vm *m, const uint8_t *p, size_t n) {
    val *v = new_val(m, V_STR);
    char *s = v ? arena_alloc(m->a, n + 1) : NULL;
    if (!s) {
        if (v) vm_err(m, "out of memory while unpickling");
        return NULL;
    }
    memcpy(s, p, n);
    s[n] = 0;
    v->u.s.p = s;
    v->u.s.len = n;
    return v;
}

static int op_string(vm *m, int lenbytes, int is_signed) {
    const uint8_t *q = NULL;
    if (take(m, (size_t)lenbytes, &q) != 0) return -1;
    uint64_t n = le(q, lenbytes);
    if (is_signed && (n & 0x80000000u)) return vm_err(m, "negative string length");
    if (n > (uint64_t)(m->end - m->p))
        return vm_err(m, "string of %" PRIu64 " bytes runs past the end of the pickle", n);
    val *v = make_str(m, m->p, (size_t)n);
    m->p += n;
    return push(m, v);
}

static int op_int(vm *m, int64_t i) {
    val *v = new_val(m, V_INT);
    if (v) v->u.i = i;
    return push(m, v);
}

static int resolve_global(vm *m, const char *mod, size_t ml, const char *name, size_t nl) {
    for (size_t i = 0; i < sizeof allowed_globals / sizeof allowed_globals[0]; i++) {
        if (strlen(allowed_globals[i].mod) == ml && memcmp(allowed_globals[i].mod, mod, ml) == 0 &&
            strlen(allowed_globals[i].name) == nl && memcmp(allowed_globals[i].name, name, nl) == 0) {
            val *v = new_val(m, V_GLOBAL);
            if (v) {
                v->u.g.id = allowed_globals[i].id;
                v->u.g.dtype = allowed_globals[i].dtype;
                v->u.g.name = allowed_globals[i].name;
            }
            return push(m, v);
        }
    }
    char a[96], b[96];
    return vm_err(m, "forbidden global %s.%s (only plain state dicts and tensors are read)",
                  saefw_tfi_printable(a, sizeof a, mod, ml), saefw_tfi_printable(b, sizeof b, name, nl));
}

static int op_global(vm *m) {
    const char *s = (const char *)m->p, *end = (const char *)m->end;
    const char *nl1 = memchr(s, '\n', (size_t)(end - s));
    const char *nl2 = nl1 ? memchr(nl1 + 1, '\n', (size_t)(end - nl1 - 1)) : NULL;
    if (!nl2) return vm_err(m, "pickle truncated inside GLOBAL");
    m->p = (const uint8_t *)nl2 + 1;
    return resolve_global(m, s, (size_t)(nl1 - s), nl1 + 1, (size_t)(nl2 - nl1 - 1));
}

static int memo_put(vm *m, uint64_t idx) {
    val *v = top(m);
    if (!v) return -1;
    /* Picklers number memo entries 0, 1, 2, ...; a far larger index can only be hostile. */
    if (idx >= m->memo_limit) return vm_err(m, "memo index %" PRIu64 " is out of range", idx);
    size_t old = m->memo_cap;
    if (grow((void **)&m->memo, &m->memo_cap, (size_t)idx + 1, sizeof *m->memo) != 0)
        return vm_err(m, "out of memory while unpickling");
    if (m->memo_cap > old) memset(m->memo + old, 0, (m->memo_cap - old) * sizeof *m->memo);
    if (!m->memo[idx]) m->memo_count++;
    m->memo[idx] = v;
    return 0;
}

static int memo_get(vm *m, uint64_t idx) {
    if (idx >= m->memo_cap || !m->memo[idx]) return vm_err(m, "memo key %" PRIu64 " is not defined", idx);
    return push(m, m->memo[idx]);
}

static int is_str(const val *v, const char *s) {
    return v->kind == V_STR && v->u.s.len == strlen(s) && memcmp(v->u.s.p, s, v->u.s.len) == 0;
}

/* torch.save's persistent id: ('storage', StorageType, key, location, numel). */
static int op_persid(vm *m) {
    val *pid = pop(m);
    if (!pid) return -1;
    val **it = pid->u.seq.v;
    if (pid->kind != V_TUPLE || pid->u.seq.n != 5 || !is_str(it[0], "storage") || it[1]->kind != V_GLOBAL ||
        it[1]->u.g.id != G_STORAGE || it[2]->kind != V_STR || it[2]->u.s.len == 0 ||
        (it[3]->kind != V_STR && it[3]->kind != V_DEVICE) || it[4]->kind != V_INT || it[4]->u.i < 0)
        return vm_err(m, "unsupported persistent id (expected ('storage', torch.<T>Storage, key, location, numel))");
    val *s = new_val(m, V_STORAGE);
    if (!s) return -1;
    s->u.st.key = it[2]->u.s.p;
    s->u.st.key_len = it[2]->u.s.len;
    s->u.st.dtype = it[1]->u.g.dtype;
    s->u.st.numel = it[4]->u.i;
    return push(m, s);
}

static int int_tuple(const val *v, int64_t *out, int *n) {
    if (v->kind != V_TUPLE || v->u.seq.n > SAEFW_MAX_DIMS) return -1;
    for (size_t i = 0; i < v->u.seq.n; i++) {
        if (v->u.seq.v[i]->kind != V_INT) return -1;
        out[i] = v->u.seq.v[i]->u.i;
    }
    *n = (int)v->u.seq.n;
    return 0;
}

static int op_reduce(vm *m) {
    val *args = pop(m);
    val *fn = args ? pop(m) : NULL;
    if (!fn) return -1;
    if (fn->kind != V_GLOBAL) return vm_err(m, "REDUCE on a %s, not on an allowed global", kind_name[fn->kind]);
    if (args->kind != V_TUPLE) return vm_err(m, "REDUCE arguments are a %s, not a tuple", kind_name[args->kind]);
    val **a = args->u.seq.v;
    size_t n = args->u.seq.n;
    switch (fn->u.g.id) {
    case G_ORDERED_DICT:
        if (n != 0) return vm_err(m, "collections.OrderedDict called with arguments");
        return push(m, new_val(m, V_DICT));
    case G_REBUILD_TENSOR: {
        /* (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata]) */
        tensor_rec t;
        int nd, ns;
        memset(&t, 0, sizeof t);
        if ((n != 6 && n != 7) || a[0]->kind != V_STORAGE || a[1]->kind != V_INT ||
            int_tuple(a[2], t.shape, &nd) != 0 || int_tuple(a[3], t.stride, &ns) != 0 || nd != ns ||
            a[4]->kind != V_BOOL || a[5]->kind != V_DICT || (n == 7 && a[6]->kind != V_NONE && a[6]->kind != V_DICT))
            return vm_err(m, "unexpected arguments to torch._utils._rebuild_tensor_v2 (at most %d dimensions)",
                          SAEFW_MAX_DIMS);
        if (a[5]->u.seq.n) return vm_err(m, "tensor with backward hooks");
        t.storage = a[0];
        t.offset = a[1]->u.i;
        t.ndim = nd;
        val *v = new_val(m, V_TENSOR);
        tensor_rec *tr = v ? arena_alloc(m->a, sizeof *tr) : NULL;
        if (!tr) return v ? vm_err(m, "out of memory while unpickling") : -1;
        *tr = t;
        v->u.t = tr;
        return push(m, v);
    }
    case G_REBUILD_PARAMETER:
        /* (data, requires_grad, backward_hooks): a Parameter is just its tensor here. */
        if (n != 3 || a[0]->kind != V_TENSOR)
            return vm_err(m, "unexpected arguments to torch._utils._rebuild_parameter");
        return push(m, a[0]);
    case G_DEVICE:
        if (n < 1 || n > 2 || a[0]->kind != V_STR || (n == 2 && a[1]->kind != V_INT))
            return vm_err(m, "unexpected arguments to torch.device");
        return push(m, new_val(m, V_DEVICE));
    default: return vm_err(m, "calling torch.%s is not supported", fn->u.g.name);
    }
}

static int op_setitems(vm *m, size_t from, size_t n) {
    val *d = top(m);
    if (!d) return -1;
    if (d->kind != V_DICT) return vm_err(m, "SETITEM(S) on a %s, not a dict", kind_name[d->kind]);
    if (n % 2) return vm_err(m, "SETITEMS with an odd number of items");
    /* Duplicate keys are kept here and refused later as duplicate tensor names. */
    for (size_t i = 0; i < n; i++)
        if (seq_append(m, d, m->stack[from + i]) != 0) return -1;
    return 0;
}

static int op_appends(vm *m, size_t from, size_t n) {
    val *l = top(m);
    if (!l) return -1;
    if (l->kind != V_LIST) return vm_err(m, "APPEND(S) on a %s, not a list", kind_name[l->kind]);
    for (size_t i = 0; i < n; i++)
        if (seq_append(m, l, m->stack[from + i]) != 0) return -1;
    return 0;
}

static int vm_step(vm *m, uint8_t op, val **result) {
    const uint8_t *q = NULL;
    size_t from = 0, n = 0;
    val *v;
    switch (op) {
    case 0x80: /* PROTO */
        if (take(m, 1, &q) != 0) return -1;
        if (q[0] > 5) return vm_err(m, "unsupported pickle protocol %d", q[0]);
        return 0;
    case 0x95: /* FRAME: only a length prefix; the framed opcodes follow inline. */
        if (take(m, 8, &q) != 0) return -1;
        if (le(q, 8) > (uint64_t)(m->end - m->p)) return vm_err(m, "FRAME runs past the end of the pickle");
        return 0;
    case 'c': return op_global(m);
    case 0x93: { /* STACK_GLOBAL */
        val *name = pop(m), *mod = name ? pop(m) : NULL;
        if (!mod) return -1;
        if (name->kind != V_STR || mod->kind != V_STR) return vm_err(m, "STACK_GLOBAL needs two strings");
        return resolve_global(m, mod->u.s.p, mod->u.s.len, name->u.s.p, name->u.s.len);
    }
    case '(':
        if (grow((void **)&m->marks, &m->mcap, m->nmarks + 1, sizeof *m->marks) != 0)
            return vm_err(m, "out of memory while unpickling");
        m->marks[m->nmarks++] = m->sp;
        return 0;
    case '}': return push(m, new_val(m, V_DICT));
    case ']': return push(m, new_val(m, V_LIST));
    case ')': return push(m, make_tuple(m, NULL, 0));
    case 't':
        if (pop_mark(m, &from, &n) != 0) return -1;
        /* No elements after the mark: no pointer arithmetic on a possibly empty stack. */
        return push(m, make_tuple(m, n ? m->stack + from : NULL, n));
    case 0x85:
    case 0x86:
    case 0x87:
        n = (size_t)(op - 0x84);
        if (m->sp < fence(m) + n) return vm_err(m, "pickle stack underflow");
        m->sp -= n;
        return push(m, make_tuple(m, m->stack + m->sp, n));
    case 'X': return op_string(m, 4, 0);
    case 0x8c: return op_string(m, 1, 0);
    case 0x8d: return op_string(m, 8, 0);
    case 'T': return op_string(m, 4, 1);
    case 'U': return op_string(m, 1, 0);
    case 'J':
        if (take(m, 4, &q) != 0) return -1;
        return op_int(m, (int32_t)(uint32_t)le(q, 4));
    case 'K':
        if (take(m, 1, &q) != 0) return -1;
        return op_int(m, q[0]);
    case 'M':
        if (take(m, 2, &q) != 0) return -1;
        return op_int(m, (int64_t)le(q, 2));
    case 0x8a: { /* LONG1: little-endian two's complement of n bytes */
        if (take(m, 1, &q) != 0) return -1;
        size_t nb = q[0];
        if (take(m, nb, &q) != 0) return -1;
        if (nb > 8) return vm_err(m, "integer wider than 64 bits");
        uint64_t u = nb ? le(q, (int)nb) : 0;
        if (nb && nb < 8 && (q[nb - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * nb);
        return op_int(m, (int64_t)u);
    }
    case 'G': {
        if (take(m, 8, &q) != 0) return -1;
        uint64_t u = 0;
        for (int i = 0; i < 8; i++) u = (u << 8) | q[i];
        v = new_val(m, V_FLOAT);
        if (v) memcpy(&v->u.f, &u, sizeof u);
        return push(m, v);
    }
    case 'N': return push(m, new_val(m, V_NONE));
    case 0x88:
    case 0x89:
        v = new_val(m, V_BOOL);
        if (v) v->u.i = op == 0x88;
        return push(m, v);
    case 'q':
        if (take(m, 1, &q) != 0) return -1;
        return memo_put(m, q[0]);
    case 'r':
        if (take(m, 4, &q) != 0) return -1;
        return memo_put(m, le(q, 4));
    case 0x94: return memo_put(m, m->memo_count);
    case 'h':
        if (take(m, 1, &q) != 0) return -1;
        return memo_get(m, q[0]);
    case 'j':
        if (take(m, 4, &q) != 0) return -1;
        return memo_get(m, le(q, 4));
    case 'Q': return op_persid(m);
    case 'R': return op_reduce(m);
    case 'b': { /* BUILD: only a dict's attribute state (a state dict's _metadata), which is ignored. */
        val *state = pop(m), *inst = state ? top(m) : NULL;
        if (!inst) return -1;
        if (inst->kind != V_DICT) return vm_err(m, "BUILD on a %s is not supported", kind_name[inst->kind]);
        return 0;
    }
    case 's': {
        if (m->sp < fence(m) + 3) return vm_err(m, "pickle stack underflow");
        m->sp -= 2;
        return op_setitems(m, m->sp, 2);
    }
    case 'u':
        if (pop_mark(m, &from, &n) != 0) return -1;
        return op_setitems(m, from, n);
    case 'a':
        if (m->sp < fence(m) + 2) return vm_err(m, "pickle stack underflow");
        m->sp -= 1;
        return op_appends(m, m->sp, 1);
    case 'e':
        if (pop_mark(m, &from, &n) != 0) return -1;
        return op_appends(m, from, n);
    case '.': *result = pop(m); return *result ? 0 : -1;
    default: return vm_err(m, "unsupported pickle opcode 0x%02x (%s)", op, opcode_name(op));
    }
}

/* Runs the pickle; the result and everything it refers to live in a. */
static int unpickle(const uint8_t *pkl, size_t len, arena *a, val **result, char *err, size_t errlen) {
    vm m;
    memset(&m, 0, sizeof m);
    m.base = m.p = pkl;
    m.end = pkl + len;
    m.a = a;
    m.err = err;
    m.errlen = errlen;
    m.memo_limit = len > 256 ? len : 256;
    *result = NULL;
    int rc = 0;
    while (rc == 0 && !*result) {
        if (m.p >= m.end) {
            m.op_at = len;
            rc = vm_err(&m, "pickle ends without STOP (truncated?)");
            break;
        }
        m.op_at = (size_t)(m.p - m.base);
        uint8_t op = *m.p++;
        rc = vm_step(&m, op, result);
    }
    free(m.stack);
    free(m.marks);
    free(m.memo);
    return rc;
}

/* ------------------------------------------------------------------------------------------------
 * From the unpickled object to a list of named tensors. Nested dicts are flattened with "." (so
 * {'model': {'w': t}} gives "model.w"); None, bool, int, float and str entries (a step counter, a
 * config string) are skipped; lists, tuples and anything else are refused. */

typedef struct {
    const char *name;
    size_t name_len;
    const tensor_rec *t;
} named_tensor;

typedef struct {
    named_tensor *v;
    size_t n, cap;
    size_t visited;
    arena *a;
    char *err;
    size_t errlen;
} collector;

static int collect_add(collector *c, const char *name, size_t len, const tensor_rec *t) {
    if (grow((void **)&c->v, &c->cap, c->n + 1, sizeof *c->v) != 0)
        return saefw_errf(c->err, c->errlen, "out of memory");
    char *copy = arena_alloc(c->a, len + 1);
    if (!copy) return saefw_errf(c->err, c->errlen, "out of memory");
    memcpy(copy, name, len);
    copy[len] = 0;
    c->v[c->n].name = copy;
    c->v[c->n].name_len = len;
    c->v[c->n].t = t;
    c->n++;
    return 0;
}

static int collect_dict(collector *c, val *d, char *buf, size_t len, int depth) {
    char nm[128];
    if (depth > DICT_DEPTH_MAX)
        return saefw_errf(c->err, c->errlen, "state dict nested more than %d deep (at %s)", DICT_DEPTH_MAX,
                          saefw_tfi_printable(nm, sizeof nm, buf, len));
    /* torch.save never shares a dict between keys; memo references to one dict would multiply its
     * tensors exponentially with depth. */
    if (d->collected)
        return saefw_errf(c->err, c->errlen, "state dict reuses one nested dict under several keys (at %s)",
                          saefw_tfi_printable(nm, sizeof nm, buf, len));
    d->collected = 1;
    for (size_t i = 0; i + 1 < d->u.seq.n; i += 2) {
        const val *k = d->u.seq.v[i];
        val *v = d->u.seq.v[i + 1];
        if (++c->visited > DICT_ENTRIES_MAX)
            return saefw_errf(c->err, c->errlen, "state dict has more than %zu entries", DICT_ENTRIES_MAX);
        if (k->kind != V_STR && len)
            return saefw_errf(c->err, c->errlen, "state dict key under %s is a %s, not a string",
                              saefw_tfi_printable(nm, sizeof nm, buf, len), kind_name[k->kind]);
        if (k->kind != V_STR)
            return saefw_errf(c->err, c->errlen, "state dict key is a %s, not a string", kind_name[k->kind]);
        size_t nl = len + (len ? 1 : 0) + k->u.s.len;
        if (nl > NAME_LEN_MAX) return saefw_errf(c->err, c->errlen, "tensor name longer than %d bytes", NAME_LEN_MAX);
        if (len) buf[len] = '.';
        memcpy(buf + nl - k->u.s.len, k->u.s.p, k->u.s.len);
        int rc = 0;
        switch (v->kind) {
        case V_TENSOR: rc = collect_add(c, buf, nl, v->u.t); break;
        case V_DICT: rc = collect_dict(c, v, buf, nl, depth + 1); break;
        case V_NONE:
        case V_BOOL:
        case V_INT:
        case V_FLOAT:
        case V_STR: break;
        default:
            rc = saefw_errf(c->err, c->errlen, "entry %s is a %s; only tensors and dicts of tensors are read",
                            saefw_tfi_printable(nm, sizeof nm, buf, nl), kind_name[v->kind]);
        }
        if (rc != 0) return rc;
    }
    return 0;
}

static int collect(val *root, arena *a, named_tensor **out, size_t *n, char *err, size_t errlen) {
    collector c = {NULL, 0, 0, 0, a, err, errlen};
    char buf[NAME_LEN_MAX + 1];
    buf[0] = 0; /* read as an empty name at the top level (and GCC -O3 cannot tell) */
    int rc;
    if (root->kind == V_TENSOR) rc = collect_add(&c, "tensor", 6, root->u.t);
    else if (root->kind == V_DICT) rc = collect_dict(&c, root, buf, 0, 0);
    else
        rc = saefw_errf(err, errlen, "the pickled object is a %s, not a state dict or a tensor", kind_name[root->kind]);
    if (rc != 0) {
        free(c.v);
        return -1;
    }
    *out = c.v;
    *n = c.n;
    return 0;
}

static void fmt_dims(char *out, size_t outlen, const int64_t *d, int n) {
    size_t o = 0;
    out[0] = 0;
    for (int i = 0; i < n && o < outlen; i++) {
        int w = snprintf(out + o, outlen - o, "%s%" PRId64, i ? ", " : "", d[i]);
        if (w < 0) break;
        o += (size_t)w;
    }
}

/* Shape, contiguity and range checks of one tensor against its storage's declared size. */
static int check_tensor(const named_tensor *nt, int64_t *numel, size_t *nbytes, char *err, size_t errlen) {
    const tensor_rec *t = nt->t;
    const val *st = t->storage;
    size_t isz = saefw_dtype_size(st->u.st.dtype);
    char nm[128], a[160], b[160];
    saefw_tfi_printable(nm, sizeof nm, nt->name, nt->name_len);
    if (saefw_tfi_shape_size(t->ndim, t->shape, isz, numel, nbytes) != 0)
        return saefw_errf(err, errlen, "tensor %s: negative or too large shape", nm);
    if (st->u.st.numel > INT64_MAX / (int64_t)isz)
        return saefw_errf(err, errlen, "tensor %s: storage of %" PRId64 " elements is too large", nm, st->u.st.numel);
    if (*numel > 0) {
        int64_t expect = 1;
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (t->shape[d] != 1 && t->stride[d] != expect) {
                fmt_dims(a, sizeof a, t->shape, t->ndim);
                fmt_dims(b, sizeof b, t->stride, t->ndim);
                return saefw_errf(err, errlen,
                                  "tensor %s is not contiguous (shape [%s], stride [%s]); save it with .contiguous()",
                                  nm, a, b);
            }
            expect *= t->shape[d];
        }
    }
    if (t->offset < 0 || t->offset > st->u.st.numel || *numel > st->u.st.numel - t->offset)
        return saefw_errf(err, errlen,
                          "tensor %s: storage offset %" PRId64 " + %" PRId64 " elements exceeds its storage of %" PRId64
                          " elements",
                          nm, t->offset, *numel, st->u.st.numel);
    return 0;
}

struct saefw_pickle {
    arena a;
    named_tensor *nt;
    size_t n;
};

int saefw_pickle_load(const uint8_t *pkl, size_t len, saefw_pickle **out, char *err, size_t errlen) {
    *out = NULL;
    saefw_pickle *p = saefw_calloc(1, sizeof *p, err, errlen);
    if (!p) return -1;
    val *root;
    int rc = unpickle(pkl, len, &p->a, &root, err, errlen);
    if (rc == 0) rc = collect(root, &p->a, &p->nt, &p->n, err, errlen);
    if (rc != 0) {
        saefw_pickle_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

size_t saefw_pickle_count(const saefw_pickle *p) { return p->n; }

int saefw_pickle_get(const saefw_pickle *p, size_t i, saefw_pickle_tensor *out, char *err, size_t errlen) {
    const named_tensor *nt = &p->nt[i];
    const tensor_rec *t = nt->t;
    const val *st = t->storage;
    if (check_tensor(nt, &out->numel, &out->nbytes, err, errlen) != 0) return -1;
    out->name = nt->name;
    out->name_len = nt->name_len;
    out->key = st->u.st.key;
    out->key_len = st->u.st.key_len;
    out->dtype = st->u.st.dtype;
    out->storage_numel = st->u.st.numel;
    out->offset = t->offset;
    out->ndim = t->ndim;
    memcpy(out->shape, t->shape, (size_t)t->ndim * sizeof t->shape[0]);
    return 0;
}

void saefw_pickle_free(saefw_pickle *p) {
    if (!p) return;
    free(p->nt);
    arena_free(&p->a);
    free(p);
}

int saefw_tfi_unpickle_check(const uint8_t *pkl, size_t len, int *n_tensors, char *err, size_t errlen) {
    saefw_pickle *p;
    if (saefw_pickle_load(pkl, len, &p, err, errlen) != 0) return -1;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < p->n; i++) {
        saefw_pickle_tensor t;
        rc = saefw_pickle_get(p, i, &t, err, errlen);
    }
    if (rc == 0) *n_tensors = (int)p->n;
    saefw_pickle_free(p);
    return rc;
}
