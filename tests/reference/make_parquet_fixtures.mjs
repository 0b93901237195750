// Write the Parquet fixtures of tests/test_parquet.c into tests/fixtures/parquet/ with an independent
// writer: parquet-wasm (the Rust arrow/parquet crate compiled to WebAssembly) fed by apache-arrow
// tables. expected.json holds the values from this script's own input data, not from any reader.
//
// Usage (the npm packages live outside the repository):
//   mkdir -p /tmp/pqgen && (cd /tmp/pqgen && npm install parquet-wasm@0.8.0 apache-arrow@21.2.0)
//   PQGEN_MODULES=/tmp/pqgen/node_modules node tests/reference/make_parquet_fixtures.mjs
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.join(here, "..", "fixtures", "parquet");
const modules = process.env.PQGEN_MODULES || "/tmp/pqgen/node_modules";
const require = createRequire(path.join(modules, "noop.js"));
const arrow = require("apache-arrow");
const pq = require("parquet-wasm/node");

// A small deterministic generator (xorshift32), so reruns write the same files.
let state = 0x9e3779b9;
function rnd() {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state;
}
const below = (n) => rnd() % n;

function listRows(n, maxLen, vocab) {
    const rows = [];
    for (let i = 0; i < n; i++) {
        const len = i % 7 === 3 ? 0 : below(maxLen + 1);
        const r = [];
        // Runs of repeats and small ranges let the dictionary and RLE paths switch between
        // bit-packed and repeated runs.
        for (let j = 0; j < len; j++) r.push(j % 5 === 4 && j > 0 ? r[j - 1] : below(vocab));
        rows.push(r);
    }
    return rows;
}

const I64_EDGES = [0n, 1n, -1n, 9223372036854775807n, -9223372036854775808n, 4294967296n, -4294967297n];
function int64Column(n) {
    const v = [];
    for (let i = 0; i < n; i++) {
        if (i < I64_EDGES.length) v.push(I64_EDGES[i]);
        else if (i % 3 === 0) v.push(BigInt(i) * 1000003n - 500000n);
        else v.push((BigInt(rnd()) << 32n | BigInt(rnd())) - (1n << 63n));
    }
    return v;
}

const WORDS = ["", "hello", "Grüße", "日本語のテキスト", "emoji 🙂🚀", "tab\tand\nnewline", "def f(x):\n    return x",
    "a", "the quick brown fox", "\u00e9\u0301", "0123456789"];
function textColumn(n, withNulls) {
    const v = [];
    for (let i = 0; i < n; i++) {
        if (withNulls && i % 9 === 4) v.push(null);
        else v.push(WORDS[i % WORDS.length] + (i % 4 === 1 ? " " + i : ""));
    }
    return v;
}

function listType(inner, nullable) {
    return new arrow.List(new arrow.Field("element", inner, nullable));
}

// columns: [{name, type, nullable, values}] -> Parquet bytes with the given writer properties.
function write(columns, props) {
    const fields = columns.map((c) => new arrow.Field(c.name, c.type, c.nullable));
    const schema = new arrow.Schema(fields);
    const data = {};
    for (const c of columns) data[c.name] = arrow.vectorFromArray(c.values, c.type);
    const table = new arrow.Table(schema, data);
    const ipc = arrow.tableToIPC(table, "stream");
    const wasmTable = pq.Table.fromIPCStream(ipc);
    return pq.writeParquet(wasmTable, props);
}

function props({ codec, v2, dict, rowGroup, pageBytes, dictBytes, batch, encoding, encodings }) {
    let b = new pq.WriterPropertiesBuilder()
        .setCompression(pq.Compression[codec])
        .setWriterVersion(v2 ? pq.WriterVersion.V2 : pq.WriterVersion.V1)
        .setDictionaryEnabled(dict)
        .setCreatedBy("saefw make_parquet_fixtures.mjs (parquet-wasm 0.8.0)");
    if (rowGroup) b = b.setMaxRowGroupSize(rowGroup);
    if (pageBytes) b = b.setDataPageSizeLimit(pageBytes);
    if (dictBytes) b = b.setDictionaryPageSizeLimit(dictBytes);
    if (batch) b = b.setWriteBatchSize(batch);
    if (encoding) b = b.setEncoding(pq.Encoding[encoding]);
    for (const [col, enc] of Object.entries(encodings || {})) b = b.setColumnEncoding(col, pq.Encoding[enc]);
    return b.build();
}

// int64 columns as decimal strings (JSON numbers lose precision past 2^53); list elements as numbers
// (the token ids are all below 2^53); nulls as null.
function jsonValues(c) {
    if (c.kind === "int64") return c.values.map((x) => (x === null ? null : x.toString()));
    if (c.kind.startsWith("list"))
        return c.values.map((r) => (r === null ? null : r.map((x) => (x === null ? null : Number(x)))));
    return c.values;
}

const expected = [];
function emit(name, columns, p, meta) {
    const bytes = write(columns, props(p));
    fs.writeFileSync(path.join(out, name), bytes);
    const rows = columns[0].values.length;
    const rowGroups = p.rowGroup ? Math.ceil(rows / p.rowGroup) : 1;
    expected.push({
        file: name, rows, row_groups: rowGroups, codec: p.codec, page_version: p.v2 ? 2 : 1,
        dictionary: p.dict, ...meta,
        columns: columns.map((c) => ({ name: c.name, kind: c.kind, values: jsonValues(c) })),
    });
    console.log(`${name}: ${bytes.length} bytes, ${rows} rows, ${rowGroups} row groups`);
}

fs.rmSync(out, { recursive: true, force: true });
fs.mkdirSync(out, { recursive: true });

// The matrix: every codec x page v1/v2 x dictionary on/off, with list<int64> (nullable as pyarrow
// writes it), list<int32> (required elements), a required int64 column and an optional string column;
// small pages and row groups so that every chunk has several pages and the file several row groups.
// Without the dictionary, page v2 makes the writer pick DELTA_BINARY_PACKED for the integers and
// DELTA_BYTE_ARRAY for the strings; page v1 writes PLAIN.
for (const codec of ["UNCOMPRESSED", "SNAPPY", "GZIP", "ZSTD"]) {
    for (const v2 of [false, true]) {
        for (const dict of [true, false]) {
            const n = 40;
            const columns = [
                { name: "tokens", kind: "list<int64>", type: listType(new arrow.Int64(), true), nullable: true,
                    values: listRows(n, 30, 300).map((r) => r.map(BigInt)) },
                { name: "tok32", kind: "list<int32>", type: listType(new arrow.Int32(), false), nullable: false,
                    values: listRows(n, 12, 50000) },
                { name: "id", kind: "int64", type: new arrow.Int64(), nullable: false, values: int64Column(n) },
                { name: "text", kind: "string", type: new arrow.Utf8(), nullable: true, values: textColumn(n, false) },
            ];
            const name = `m_${codec.toLowerCase()}_v${v2 ? 2 : 1}_${dict ? "dict" : "plain"}.parquet`;
            emit(name, columns, { codec, v2, dict, rowGroup: 16, pageBytes: 64, batch: 4 }, {});
        }
    }
}

// Delta encodings (no dictionary): DELTA_BINARY_PACKED for the integers, DELTA_LENGTH_BYTE_ARRAY
// for the strings, on both page versions.
for (const v2 of [false, true]) {
    const n = 50;
    const columns = [
        { name: "tokens", kind: "list<int64>", type: listType(new arrow.Int64(), true), nullable: true,
            values: listRows(n, 40, 1 << 20).map((r) => r.map(BigInt)) },
        { name: "tok32", kind: "list<int32>", type: listType(new arrow.Int32(), true), nullable: true,
            values: listRows(n, 40, 2000000000) },
        { name: "id", kind: "int64", type: new arrow.Int64(), nullable: true, values: int64Column(n) },
        { name: "i32", kind: "int32", type: new arrow.Int32(), nullable: false,
            values: Array.from({ length: n }, (_, i) => (i % 2 ? -1 : 1) * ((i * 7919 * 104729) % 2147483647)) },
        { name: "text", kind: "string", type: new arrow.Utf8(), nullable: false, values: textColumn(n, false) },
    ];
    // The writer takes per-column settings for top-level columns only: the default encoding covers
    // the nested ones.
    emit(`delta_v${v2 ? 2 : 1}.parquet`, columns, { codec: "SNAPPY", v2, dict: false, rowGroup: 20, pageBytes: 256,
        batch: 8, encoding: "DELTA_BINARY_PACKED", encodings: { text: "DELTA_LENGTH_BYTE_ARRAY" } }, {});
}

// A dictionary that outgrows its page limit: the writer falls back to PLAIN pages inside the chunk,
// after a dictionary page and RLE_DICTIONARY pages.
{
    const n = 60;
    const columns = [
        { name: "tokens", kind: "list<int64>", type: listType(new arrow.Int64(), true), nullable: true,
            values: listRows(n, 20, 100000).map((r) => r.map(BigInt)) },
        { name: "text", kind: "string", type: new arrow.Utf8(), nullable: true,
            values: textColumn(n, false).map((s, i) => s + "#" + i) },
    ];
    emit("dict_fallback.parquet", columns, { codec: "ZSTD", v2: false, dict: true, pageBytes: 128, dictBytes: 256, batch: 4 }, {});
}

// Nulls: a null list and a null element in token columns (errors for the reader), a null in an
// optional int column (an error) and null strings (skipped by the reader).
{
    const n = 12;
    const nullList = listRows(n, 5, 100).map((r) => r.map(BigInt));
    nullList[5] = null;
    const nullElem = listRows(n, 5, 100).map((r) => r.map(BigInt));
    nullElem[7] = [1n, null, 3n];
    const ints = int64Column(n);
    ints[2] = null;
    const columns = [
        { name: "null_list", kind: "list<int64>", type: listType(new arrow.Int64(), true), nullable: true, values: nullList },
        { name: "null_elem", kind: "list<int64>", type: listType(new arrow.Int64(), true), nullable: true, values: nullElem },
        { name: "null_int", kind: "int64", type: new arrow.Int64(), nullable: true, values: ints },
        { name: "text", kind: "string", type: new arrow.Utf8(), nullable: true, values: textColumn(n, true) },
    ];
    emit("nulls.parquet", columns, { codec: "SNAPPY", v2: false, dict: false }, {});
}

// Shaped like the seed's dataset: one column `tokens`, list<int64> of 1024 per row, as pyarrow
// writes it (nullable list, nullable element named `element`, snappy, page v1), several row groups;
// once with the dictionary (pyarrow's default) and once without.
for (const dict of [true, false]) {
    const n = 6;
    const rows = [];
    for (let i = 0; i < n; i++) rows.push(Array.from({ length: 1024 }, () => below(2000)));
    const columns = [{ name: "tokens", kind: "list<int64>", type: listType(new arrow.Int64(), true), nullable: true,
        values: rows.map((r) => r.map(BigInt)) }];
    emit(`seedlike_${dict ? "dict" : "plain"}.parquet`, columns, { codec: "SNAPPY", v2: false, dict, rowGroup: 2 }, {});
}

// The list forms parquet-wasm does not write, by hand from the parquet-format spec (a Thrift compact
// writer of a few lines): `legacy`, the legacy 2-level list (optional group (LIST) { repeated int32
// element }), and `bare`, a repeated int64 field with no LIST group; one uncompressed PLAIN v1 page
// each, levels as RLE runs of one.
{
    const bytes = [];
    const u8 = (...b) => bytes.push(...b);
    const varint = (v) => {
        v = BigInt(v);
        while (v >= 0x80n) { u8(Number(v & 0x7fn) | 0x80); v >>= 7n; }
        u8(Number(v));
    };
    const zz = (v) => { v = BigInt(v); return v >= 0n ? v << 1n : ((-v) << 1n) - 1n; };
    const u32 = (v, to = bytes) => to.push(v & 255, (v >>> 8) & 255, (v >>> 16) & 255, v >>> 24);
    // Thrift compact: field header (delta << 4 | type), i32/i64 zigzag varints, binary, list, struct.
    const T = { I32: 5, I64: 6, BIN: 8, LIST: 9, STRUCT: 12 };
    let last = [0];
    const field = (id, t) => { u8(((id - last[last.length - 1]) << 4) | t); last[last.length - 1] = id; };
    const i32 = (id, v) => { field(id, T.I32); varint(zz(v)); };
    const i64 = (id, v) => { field(id, T.I64); varint(zz(v)); };
    const str = (id, s) => { field(id, T.BIN); const b = Buffer.from(s); varint(b.length); u8(...b); };
    const list = (id, t, n) => { field(id, T.LIST); u8((n << 4) | t); };
    const begin = (id) => { if (id) field(id, T.STRUCT); last.push(0); };
    const end = () => { u8(0); last.pop(); };

    const cols = [
        { name: "legacy", type: 1, size: 4, rows: [[1, 2, 3], [], [7]], defs: [2, 2, 2, 1, 2], reps: [0, 1, 1, 0, 0],
            path: ["legacy", "element"] },
        { name: "bare", type: 2, size: 8, rows: [[5], [6, -7], []], defs: [1, 1, 1, 0], reps: [0, 0, 1, 0], path: ["bare"] },
    ];
    u8(...Buffer.from("PAR1"));
    for (const c of cols) {
        const body = [];
        const rle = (levels) => { const r = []; for (const l of levels) r.push(2, l); return r; };
        const reps = rle(c.reps), defs = rle(c.defs);
        u32(reps.length, body); body.push(...reps);
        u32(defs.length, body); body.push(...defs);
        for (const v of c.rows.flat()) {
            const b = Buffer.alloc(c.size);
            if (c.size === 4) b.writeInt32LE(v); else b.writeBigInt64LE(BigInt(v));
            body.push(...b);
        }
        c.offset = bytes.length;
        last = [0];
        i32(1, 0); i32(2, body.length); i32(3, body.length);
        begin(5); i32(1, c.defs.length); i32(2, 0); i32(3, 3); i32(4, 3); end();
        u8(0);
        u8(...body);
        c.total = bytes.length - c.offset;
    }
    const footer = bytes.length;
    last = [0];
    i32(1, 1);
    list(2, T.STRUCT, 4);
    begin(0); str(4, "schema"); i32(5, 2); end();
    begin(0); i32(3, 1); str(4, "legacy"); i32(5, 1); i32(6, 3); end();
    begin(0); i32(1, 1); i32(3, 2); str(4, "element"); end();
    begin(0); i32(1, 2); i32(3, 2); str(4, "bare"); end();
    i64(3, 3);
    list(4, T.STRUCT, 1);
    begin(0);
    list(1, T.STRUCT, 2);
    for (const c of cols) {
        begin(0);
        i64(2, c.offset);
        begin(3);
        i32(1, c.type);
        list(2, T.I32, 2); varint(zz(0)); varint(zz(3));
        list(3, T.BIN, c.path.length);
        for (const p of c.path) { varint(p.length); u8(...Buffer.from(p)); }
        i32(4, 0); i64(5, c.defs.length); i64(6, c.total); i64(7, c.total); i64(9, c.offset);
        end();
        end();
    }
    i64(2, cols[0].total + cols[1].total);
    i64(3, 3);
    end();
    end();
    u32(bytes.length - footer);
    u8(...Buffer.from("PAR1"));
    fs.writeFileSync(path.join(out, "legacy_lists.parquet"), Buffer.from(bytes));
    expected.push({
        file: "legacy_lists.parquet", rows: 3, row_groups: 1, codec: "UNCOMPRESSED", page_version: 1, dictionary: false,
        writer: "by hand in this script",
        columns: [{ name: "legacy", kind: "list<int32>", values: cols[0].rows },
            { name: "bare", kind: "list<int64>", values: cols[1].rows }],
    });
    console.log(`legacy_lists.parquet: ${bytes.length} bytes, written by hand`);
}

fs.writeFileSync(path.join(out, "expected.json"), JSON.stringify({
    generator: "tests/reference/make_parquet_fixtures.mjs", writer: "parquet-wasm 0.8.0, apache-arrow 21.2.0",
    files: expected,
}) + "\n");
console.log(`wrote ${expected.length} files and expected.json to ${out}`);
