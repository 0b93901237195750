// Write tests/fixtures/dataset/: the bundled tiny-1l corpus (models/tiny-1l/tokens.npy, bytes) as a
// Hub-style Parquet token dataset like NeelNanda/c4-code-tokenized-2b (one column `tokens`,
// list<int64> of 1024 per row, SNAPPY), in two shards, written by an independent writer
// (parquet-wasm). The test of saefw.tokens() on a dataset compares its rows with tokens.npy.
//
// Usage (the npm packages live outside the repository):
//   mkdir -p /tmp/pqgen && (cd /tmp/pqgen && npm install parquet-wasm@0.8.0 apache-arrow@21.2.0)
//   PQGEN_MODULES=/tmp/pqgen/node_modules node tests/reference/make_tiny_dataset.mjs
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.join(here, "..", "..");
const out = path.join(here, "..", "fixtures", "dataset");
const modules = process.env.PQGEN_MODULES || "/tmp/pqgen/node_modules";
const require = createRequire(path.join(modules, "noop.js"));
const arrow = require("apache-arrow");
const pq = require("parquet-wasm/node");

// tokens.npy: a 1-D '<u2' array; read its header by hand.
const npy = fs.readFileSync(path.join(root, "models", "tiny-1l", "tokens.npy"));
const hlen = npy.readUInt16LE(8);
const header = npy.subarray(10, 10 + hlen).toString("latin1");
if (!header.includes("'<u2'")) throw new Error("tokens.npy: expected '<u2', got " + header);
const data = new Uint16Array(npy.buffer.slice(npy.byteOffset + 10 + hlen, npy.byteOffset + npy.length));

const L = 1024, ROWS = 160, PER_SHARD = 80, GROUP = 32;
fs.mkdirSync(path.join(out, "data"), { recursive: true });
for (let s = 0; s < ROWS / PER_SHARD; s++) {
    const rows = [];
    for (let r = s * PER_SHARD; r < (s + 1) * PER_SHARD; r++)
        rows.push(Array.from(data.subarray(r * L, (r + 1) * L), (v) => BigInt(v)));
    const type = new arrow.List(new arrow.Field("item", new arrow.Int64(), true));
    const table = new arrow.Table({ tokens: arrow.vectorFromArray(rows, type) });
    const wasmTable = pq.Table.fromIPCStream(arrow.tableToIPC(table, "stream"));
    const props = new pq.WriterPropertiesBuilder()
        .setCompression(pq.Compression.SNAPPY)
        .setMaxRowGroupSize(GROUP)
        .build();
    const name = `train-${String(s).padStart(5, "0")}-of-${String(ROWS / PER_SHARD).padStart(5, "0")}.parquet`;
    fs.writeFileSync(path.join(out, "data", name), pq.writeParquet(wasmTable, props));
    console.log(name, rows.length, "rows");
}
