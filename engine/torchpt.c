/* Reader for PyTorch zip checkpoints (torch.save's default format, e.g. model_final.pth or the seed's
 * N.pt): libzip validates the archive and reads <prefix>/data.pkl, a small pickle machine that knows
 * only what a plain state dict or tensor needs rebuilds the tensor list, and each tensor points into
 * the read-only mapping of its stored <prefix>/data/<key> record, found through the zip's central
 * directory (libzip does not expose where an entry's data starts). */
#include "tensorfile_internal.h"
#include "util.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

#define PKL_MAX ((size_t)64 << 20)
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
static const char *const kind_name[] = {"None", "bool",   "int",     "float",  "str",   "tuple",
                                        "list", "dict",   "global",  "storage", "tensor", "torch.device"};

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
        int64_t i;                                       /* V_BOOL, V_INT */
        double f;                                        /* V_FLOAT */
        struct { const char *p; size_t len; } s;         /* V_STR, NUL-terminated */
        struct { val **v; size_t n, cap; } seq;          /* tuple, list; dict as key, value, key, ... */
        struct { int id; saefw_dtype dtype; const char *name; } g;
        struct { const char *key; size_t key_len; saefw_dtype dtype; int64_t numel; } st;
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
    {'(', "MARK"},          {'.', "STOP"},         {'0', "POP"},          {'1', "POP_MARK"},
    {'2', "DUP"},           {'F', "FLOAT"},        {'I', "INT"},          {'J', "BININT"},
    {'K', "BININT1"},       {'L', "LONG"},         {'M', "BININT2"},      {'N', "NONE"},
    {'P', "PERSID"},        {'Q', "BINPERSID"},    {'R', "REDUCE"},       {'S', "STRING"},
    {'T', "BINSTRING"},     {'U', "SHORT_BINSTRING"}, {'V', "UNICODE"},   {'X', "BINUNICODE"},
    {'a', "APPEND"},        {'b', "BUILD"},        {'c', "GLOBAL"},       {'d', "DICT"},
    {'}', "EMPTY_DICT"},    {'e', "APPENDS"},      {'g', "GET"},          {'h', "BINGET"},
    {'i', "INST"},          {'j', "LONG_BINGET"},  {'l', "LIST"},         {']', "EMPTY_LIST"},
    {'o', "OBJ"},           {'p', "PUT"},          {'q', "BINPUT"},       {'r', "LONG_BINPUT"},
    {'s', "SETITEM"},       {'t', "TUPLE"},        {')', "EMPTY_TUPLE"},  {'u', "SETITEMS"},
    {'G', "BINFLOAT"},      {'B', "BINBYTES"},     {'C', "SHORT_BINBYTES"}, {0x80, "PROTO"},
    {0x81, "NEWOBJ"},       {0x82, "EXT1"},        {0x83, "EXT2"},        {0x84, "EXT4"},
    {0x85, "TUPLE1"},       {0x86, "TUPLE2"},      {0x87, "TUPLE3"},      {0x88, "NEWTRUE"},
    {0x89, "NEWFALSE"},     {0x8a, "LONG1"},       {0x8b, "LONG4"},       {0x8c, "SHORT_BINUNICODE"},
    {0x8d, "BINUNICODE8"},  {0x8e, "BINBYTES8"},   {0x8f, "EMPTY_SET"},   {0x90, "ADDITEMS"},
    {0x91, "FROZENSET"},    {0x92, "NEWOBJ_EX"},   {0x93, "STACK_GLOBAL"}, {0x94, "MEMOIZE"},
    {0x95, "FRAME"},        {0x96, "BYTEARRAY8"},  {0x97, "NEXT_BUFFER"}, {0x98, "READONLY_BUFFER"},
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
    if (n > (uint64_t)(m->end - m->p)) return vm_err(m, "string of %" PRIu64 " bytes runs past the end of the pickle", n);
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
    default:
        return vm_err(m, "calling torch.%s is not supported", fn->u.g.name);
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
    case 'c':
        return op_global(m);
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
    case '}':
        return push(m, new_val(m, V_DICT));
    case ']':
        return push(m, new_val(m, V_LIST));
    case ')':
        return push(m, make_tuple(m, NULL, 0));
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
    case 'X':
        return op_string(m, 4, 0);
    case 0x8c:
        return op_string(m, 1, 0);
    case 0x8d:
        return op_string(m, 8, 0);
    case 'T':
        return op_string(m, 4, 1);
    case 'U':
        return op_string(m, 1, 0);
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
    case 'N':
        return push(m, new_val(m, V_NONE));
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
    case 0x94:
        return memo_put(m, m->memo_count);
    case 'h':
        if (take(m, 1, &q) != 0) return -1;
        return memo_get(m, q[0]);
    case 'j':
        if (take(m, 4, &q) != 0) return -1;
        return memo_get(m, le(q, 4));
    case 'Q':
        return op_persid(m);
    case 'R':
        return op_reduce(m);
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
    case '.':
        *result = pop(m);
        return *result ? 0 : -1;
    default:
        return vm_err(m, "unsupported pickle opcode 0x%02x (%s)", op, opcode_name(op));
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
        if (nl > NAME_LEN_MAX)
            return saefw_errf(c->err, c->errlen, "tensor name longer than %d bytes", NAME_LEN_MAX);
        if (len) buf[len] = '.';
        memcpy(buf + nl - k->u.s.len, k->u.s.p, k->u.s.len);
        int rc = 0;
        switch (v->kind) {
        case V_TENSOR:
            rc = collect_add(c, buf, nl, v->u.t);
            break;
        case V_DICT:
            rc = collect_dict(c, v, buf, nl, depth + 1);
            break;
        case V_NONE:
        case V_BOOL:
        case V_INT:
        case V_FLOAT:
        case V_STR:
            break;
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
    if (root->kind == V_TENSOR)
        rc = collect_add(&c, "tensor", 6, root->u.t);
    else if (root->kind == V_DICT)
        rc = collect_dict(&c, root, buf, 0, 0);
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
                          " elements", nm, t->offset, *numel, st->u.st.numel);
    return 0;
}

int saefw_tfi_unpickle_check(const uint8_t *pkl, size_t len, int *n_tensors, char *err, size_t errlen) {
    arena a = {NULL, 0};
    val *root;
    named_tensor *nt = NULL;
    size_t n = 0;
    int rc = unpickle(pkl, len, &a, &root, err, errlen);
    if (rc == 0) rc = collect(root, &a, &nt, &n, err, errlen);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        int64_t numel;
        size_t nbytes;
        rc = check_tensor(&nt[i], &numel, &nbytes, err, errlen);
    }
    if (rc == 0) *n_tensors = (int)n;
    free(nt);
    arena_free(&a);
    return rc;
}

/* ------------------------------------------------------------------------------------------------
 * The zip's central directory, read from the mapping (libzip validates the archive but hides where
 * an entry's data starts). */

typedef struct {
    const char *name; /* into the mapping, not NUL-terminated */
    size_t name_len;
    uint16_t method;
    uint64_t comp_size, size, local_off;
} cd_entry;

static int zip64_extra(const uint8_t *x, size_t xl, uint64_t *usize, uint64_t *csize, uint64_t *loff) {
    while (xl >= 4) {
        size_t id = (size_t)le(x, 2), l = (size_t)le(x + 2, 2);
        if (l > xl - 4) return -1;
        if (id == 1) {
            const uint8_t *q = x + 4;
            size_t left = l;
            uint64_t *fields[3] = {usize, csize, loff};
            for (int i = 0; i < 3; i++) {
                if (*fields[i] != 0xffffffffu) continue;
                if (left < 8) return -1;
                *fields[i] = le(q, 8);
                q += 8;
                left -= 8;
            }
            return 0;
        }
        x += 4 + l;
        xl -= 4 + l;
    }
    return -1;
}

static int cd_parse(const uint8_t *m, size_t size, cd_entry **out, size_t *n_out, char *err, size_t errlen) {
    *out = NULL;
    *n_out = 0;
    if (size < 22) return saefw_errf(err, errlen, "truncated zip archive (no end of central directory)");
    size_t lo = size - 22 > 65535 ? size - 22 - 65535 : 0, eocd = SIZE_MAX;
    for (size_t p = size - 22;; p--) {
        if (le(m + p, 4) == 0x06054b50u && p + 22 + le(m + p + 20, 2) <= size) {
            eocd = p;
            break;
        }
        if (p == lo) break;
    }
    if (eocd == SIZE_MAX) return saefw_errf(err, errlen, "truncated zip archive (no end of central directory)");
    uint64_t n_ent = le(m + eocd + 10, 2), cd_size = le(m + eocd + 12, 4), cd_off = le(m + eocd + 16, 4);
    if (le(m + eocd + 4, 2) != 0 || le(m + eocd + 6, 2) != 0 || le(m + eocd + 8, 2) != n_ent)
        return saefw_errf(err, errlen, "multi-disk zip archives are not supported");
    if (n_ent == 0xffff || cd_size == 0xffffffffu || cd_off == 0xffffffffu) {
        if (eocd < 20 || le(m + eocd - 20, 4) != 0x07064b50u)
            return saefw_errf(err, errlen, "bad zip archive: zip64 end of central directory locator missing");
        uint64_t z = le(m + eocd - 20 + 8, 8);
        if (z > eocd - 20 || eocd - 20 - z < 56 || le(m + z, 4) != 0x06064b50u)
            return saefw_errf(err, errlen, "bad zip archive: zip64 end of central directory record out of range");
        n_ent = le(m + z + 32, 8);
        cd_size = le(m + z + 40, 8);
        cd_off = le(m + z + 48, 8);
    }
    if (cd_off > size || cd_size > size - cd_off)
        return saefw_errf(err, errlen, "bad zip archive: central directory out of range (truncated?)");
    if (n_ent > cd_size / 46)
        return saefw_errf(err, errlen, "bad zip archive: %" PRIu64 " entries do not fit in the central directory", n_ent);
    cd_entry *e = saefw_calloc(n_ent ? (size_t)n_ent : 1, sizeof *e, err, errlen);
    if (!e) return -1;
    const uint8_t *p = m + cd_off, *end = m + cd_off + cd_size;
    for (uint64_t i = 0; i < n_ent; i++) {
        if (end - p < 46 || le(p, 4) != 0x02014b50u) {
            free(e);
            return saefw_errf(err, errlen, "bad zip archive: central directory entry %" PRIu64 " is corrupt", i);
        }
        size_t nl = (size_t)le(p + 28, 2), xl = (size_t)le(p + 30, 2), cl = (size_t)le(p + 32, 2);
        if ((size_t)(end - p) - 46 < nl + xl + cl) {
            free(e);
            return saefw_errf(err, errlen, "bad zip archive: central directory entry %" PRIu64 " is truncated", i);
        }
        e[i].name = (const char *)p + 46;
        e[i].name_len = nl;
        e[i].method = (uint16_t)le(p + 10, 2);
        e[i].comp_size = le(p + 20, 4);
        e[i].size = le(p + 24, 4);
        e[i].local_off = le(p + 42, 4);
        if ((e[i].size == 0xffffffffu || e[i].comp_size == 0xffffffffu || e[i].local_off == 0xffffffffu) &&
            zip64_extra(p + 46 + nl, xl, &e[i].size, &e[i].comp_size, &e[i].local_off) != 0) {
            free(e);
            return saefw_errf(err, errlen, "bad zip archive: zip64 extra field of entry %" PRIu64 " missing or short", i);
        }
        p += 46 + nl + xl + cl;
    }
    *out = e;
    *n_out = (size_t)n_ent;
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * The archive */

typedef struct {
    saefw_tensorfile *tf;
    zip_t *za;
    cd_entry *cd;
    size_t n_cd;
    const char *prefix; /* "<prefix>/" into the mapping */
    size_t prefix_len;
    const uint8_t **inflated; /* [n_cd], decompressed copies owned by tf */
} archive;

static int zip_msg(char *err, size_t errlen, const char *what, zip_error_t *ze) {
    return saefw_errf(err, errlen, "bad zip archive: %s: %s", what, zip_error_strerror(ze));
}

/* Locates entry `name`, checks libzip agrees with the central directory about it, and returns where
 * its data starts in the file. */
static int entry_find(archive *ar, const char *name, const char *what, size_t *idx, uint64_t *data_off,
                      char *err, size_t errlen) {
    zip_int64_t i = zip_name_locate(ar->za, name, ZIP_FL_ENC_RAW);
    if (i < 0) return saefw_errf(err, errlen, "%s: record %s is missing from the archive", what, name);
    if ((size_t)i >= ar->n_cd)
        return saefw_errf(err, errlen, "bad zip archive: libzip and the central directory disagree about %s", name);
    const cd_entry *e = &ar->cd[i];
    zip_stat_t st;
    zip_stat_init(&st);
    if (e->name_len != strlen(name) || memcmp(e->name, name, e->name_len) != 0 ||
        zip_stat_index(ar->za, (zip_uint64_t)i, ZIP_FL_ENC_RAW, &st) != 0 ||
        (st.valid & (ZIP_STAT_SIZE | ZIP_STAT_COMP_SIZE | ZIP_STAT_COMP_METHOD)) !=
            (ZIP_STAT_SIZE | ZIP_STAT_COMP_SIZE | ZIP_STAT_COMP_METHOD) ||
        st.size != e->size || st.comp_size != e->comp_size || st.comp_method != e->method)
        return saefw_errf(err, errlen, "bad zip archive: libzip and the central directory disagree about %s", name);
    const uint8_t *m = ar->tf->map;
    size_t size = ar->tf->size;
    if (e->local_off > size || size - e->local_off < 30 || le(m + e->local_off, 4) != 0x04034b50u)
        return saefw_errf(err, errlen, "bad zip archive: local header of %s out of range or corrupt", name);
    size_t nl = (size_t)le(m + e->local_off + 26, 2), xl = (size_t)le(m + e->local_off + 28, 2);
    uint64_t d = e->local_off + 30 + nl + xl;
    if (nl != e->name_len || d > size || memcmp(m + e->local_off + 30, e->name, nl) != 0)
        return saefw_errf(err, errlen, "bad zip archive: local header of %s disagrees with the central directory",
                          name);
    if (e->comp_size > size - d)
        return saefw_errf(err, errlen, "%s: data of %s runs past the end of the file (truncated?)", what, name);
    *idx = (size_t)i;
    *data_off = d;
    return 0;
}

/* Reads and decompresses a whole entry with libzip (which also checks its CRC). */
static int entry_read(archive *ar, size_t idx, const char *name, size_t max, uint8_t **out, char *err,
                      size_t errlen) {
    uint64_t size = ar->cd[idx].size;
    if (size > max) return saefw_errf(err, errlen, "record %s is too large (%" PRIu64 " bytes)", name, size);
    uint8_t *buf = saefw_malloc((size_t)size, err, errlen);
    if (!buf) return -1;
    zip_file_t *zf = zip_fopen_index(ar->za, idx, 0);
    if (!zf) {
        free(buf);
        return zip_msg(err, errlen, name, zip_get_error(ar->za));
    }
    uint64_t got = 0;
    zip_int64_t r = 1;
    while (got < size && r > 0) {
        r = zip_fread(zf, buf + got, size - got);
        if (r > 0) got += (uint64_t)r;
    }
    /* One more read makes libzip check the CRC at the end of the entry. */
    uint8_t extra;
    if (r >= 0 && got == size) r = zip_fread(zf, &extra, 1);
    int rc = 0;
    if (r < 0)
        rc = zip_msg(err, errlen, name, zip_file_get_error(zf));
    else if (got != size)
        rc = saefw_errf(err, errlen, "bad zip archive: %s is shorter than its stated size", name);
    else if (r > 0)
        rc = saefw_errf(err, errlen, "bad zip archive: %s is longer than its stated size", name);
    zip_fclose(zf);
    if (rc != 0) {
        free(buf);
        return rc;
    }
    *out = buf;
    return 0;
}

static int find_prefix(archive *ar, char *err, size_t errlen) {
    static const char tail[] = "/data.pkl";
    const size_t tl = sizeof tail - 1;
    int found = 0;
    for (size_t i = 0; i < ar->n_cd; i++) {
        const cd_entry *e = &ar->cd[i];
        if (e->name_len <= tl || memcmp(e->name + e->name_len - tl, tail, tl) != 0) continue;
        if (memchr(e->name, '/', e->name_len - tl) || memchr(e->name, 0, e->name_len)) continue;
        if (found++) return saefw_errf(err, errlen, "more than one <prefix>/data.pkl record in the archive");
        ar->prefix = e->name;
        ar->prefix_len = e->name_len - tl + 1;
    }
    if (!found) return saefw_errf(err, errlen, "no <prefix>/data.pkl record: a zip archive but not a PyTorch checkpoint");
    return 0;
}

/* "<prefix>/<rest>" into buf. */
static int record_name(const archive *ar, char *buf, size_t buflen, const char *rest, size_t rest_len) {
    if (ar->prefix_len + rest_len + 1 > buflen) return -1;
    memcpy(buf, ar->prefix, ar->prefix_len);
    memcpy(buf + ar->prefix_len, rest, rest_len);
    buf[ar->prefix_len + rest_len] = 0;
    return 0;
}

static int check_byteorder(archive *ar, char *err, size_t errlen) {
    char name[NAME_LEN_MAX + 64];
    if (record_name(ar, name, sizeof name, "byteorder", 9) != 0) return 0;
    if (zip_name_locate(ar->za, name, ZIP_FL_ENC_RAW) < 0) return 0;
    size_t idx;
    uint64_t off;
    uint8_t *buf;
    if (entry_find(ar, name, "byteorder", &idx, &off, err, errlen) != 0) return -1;
    if (entry_read(ar, idx, name, 64, &buf, err, errlen) != 0) return -1;
    int little = ar->cd[idx].size == 6 && memcmp(buf, "little", 6) == 0;
    free(buf);
    if (!little) return saefw_errf(err, errlen, "checkpoint was written on a big-endian machine; not supported");
    return 0;
}

/* Points t at its storage's bytes: the mapping for a stored record, a decompressed copy otherwise. */
static int resolve(archive *ar, const named_tensor *nt, saefw_tensor_info *out, char *err, size_t errlen) {
    const tensor_rec *t = nt->t;
    const val *st = t->storage;
    char nm[128], key[96], name[NAME_LEN_MAX + 64];
    saefw_tfi_printable(nm, sizeof nm, nt->name, nt->name_len);
    saefw_tfi_printable(key, sizeof key, st->u.st.key, st->u.st.key_len);
    int64_t numel;
    size_t nbytes, isz = saefw_dtype_size(st->u.st.dtype);
    if (check_tensor(nt, &numel, &nbytes, err, errlen) != 0) return -1;
    if (memchr(st->u.st.key, 0, st->u.st.key_len) || memchr(st->u.st.key, '/', st->u.st.key_len) ||
        ar->prefix_len + 5 + st->u.st.key_len + 1 > sizeof name)
        return saefw_errf(err, errlen, "tensor %s: bad storage key \"%s\"", nm, key);
    record_name(ar, name, sizeof name, "data/", 5);
    memcpy(name + ar->prefix_len + 5, st->u.st.key, st->u.st.key_len + 1);
    char what[256];
    snprintf(what, sizeof what, "tensor %s", nm);
    size_t idx;
    uint64_t off;
    if (entry_find(ar, name, what, &idx, &off, err, errlen) != 0) return -1;
    uint64_t want = (uint64_t)st->u.st.numel * isz;
    if (ar->cd[idx].size != want)
        return saefw_errf(err, errlen,
                          "tensor %s: storage %s has %" PRIu64 " bytes but the pickle declares %" PRId64
                          " %s elements (%" PRIu64 " bytes)", nm, key, ar->cd[idx].size, st->u.st.numel,
                          saefw_dtype_name(st->u.st.dtype), want);
    const uint8_t *base;
    if (ar->cd[idx].method == 0) {
        if (ar->cd[idx].comp_size != ar->cd[idx].size)
            return saefw_errf(err, errlen, "bad zip archive: stored record %s has different sizes", name);
        base = ar->tf->map + off;
    } else {
        if (!ar->inflated[idx]) {
            uint8_t *buf;
            if (entry_read(ar, idx, name, SIZE_MAX, &buf, err, errlen) != 0) return -1;
            if (saefw_tfi_own(ar->tf, buf, err, errlen) != 0) return -1;
            ar->inflated[idx] = buf;
        }
        base = ar->inflated[idx];
    }
    out->dtype = st->u.st.dtype;
    out->ndim = t->ndim;
    memcpy(out->shape, t->shape, (size_t)t->ndim * sizeof t->shape[0]);
    out->numel = numel;
    out->nbytes = nbytes;
    out->data = base + (size_t)t->offset * isz;
    return 0;
}

int saefw_tfi_load_torch(saefw_tensorfile *tf, char *err, size_t errlen) {
    archive ar;
    memset(&ar, 0, sizeof ar);
    ar.tf = tf;
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *src = zip_source_buffer_create(tf->map, tf->size, 0, &ze);
    if (!src) {
        int rc = zip_msg(err, errlen, "opening", &ze);
        zip_error_fini(&ze);
        return rc;
    }
    ar.za = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &ze);
    if (!ar.za) {
        zip_source_free(src);
        int rc = saefw_errf(err, errlen, "bad zip archive (truncated or corrupt?): %s", zip_error_strerror(&ze));
        zip_error_fini(&ze);
        return rc;
    }
    zip_error_fini(&ze);

    arena a = {NULL, 0};
    uint8_t *pkl = NULL;
    named_tensor *nt = NULL;
    size_t n_nt = 0, idx;
    uint64_t off;
    val *root;
    char name[NAME_LEN_MAX + 64];
    int rc = cd_parse(tf->map, tf->size, &ar.cd, &ar.n_cd, err, errlen);
    if (rc == 0 && (zip_int64_t)ar.n_cd != zip_get_num_entries(ar.za, 0))
        rc = saefw_errf(err, errlen, "bad zip archive: libzip and the central directory disagree on the entry count");
    if (rc == 0) rc = find_prefix(&ar, err, errlen);
    if (rc == 0 && !(ar.inflated = calloc(ar.n_cd, sizeof *ar.inflated)))
        rc = saefw_errf(err, errlen, "out of memory");
    if (rc == 0 && record_name(&ar, name, sizeof name, "data.pkl", 8) != 0)
        rc = saefw_errf(err, errlen, "archive prefix too long");
    if (rc == 0) rc = entry_find(&ar, name, "data.pkl", &idx, &off, err, errlen);
    if (rc == 0) rc = entry_read(&ar, idx, name, PKL_MAX, &pkl, err, errlen);
    if (rc == 0) rc = check_byteorder(&ar, err, errlen);
    if (rc == 0) rc = unpickle(pkl, ar.cd[idx].size, &a, &root, err, errlen);
    if (rc == 0) rc = collect(root, &a, &nt, &n_nt, err, errlen);
    for (size_t i = 0; rc == 0 && i < n_nt; i++) {
        saefw_tensor_info tmp, *t;
        memset(&tmp, 0, sizeof tmp);
        rc = resolve(&ar, &nt[i], &tmp, err, errlen);
        if (rc == 0) rc = saefw_tfi_add(tf, nt[i].name, nt[i].name_len, &t, err, errlen);
        if (rc == 0) {
            tmp.name = t->name;
            *t = tmp;
        }
    }
    free(nt);
    free(pkl);
    arena_free(&a);
    free(ar.inflated);
    free(ar.cd);
    zip_discard(ar.za);
    return rc;
}
