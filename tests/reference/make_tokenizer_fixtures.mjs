// Expected token ids for tests/test_tokenizer.c, made by the official JavaScript implementation of
// Hugging Face tokenizers (npm @huggingface/tokenizers), and the bundled tiny-1l model's
// tokenizer.json. See tests/reference/README.md for how to run it and the versions used.
//
//   cd /tmp/tok && npm install @huggingface/tokenizers@0.2.0
//   node REPO/tests/reference/make_tokenizer_fixtures.mjs      (run in /tmp/tok)
//
// Writes models/tiny-1l/tokenizer.json and tests/fixtures/tokenizer/expected.json.
import fs from "fs";
import path from "path";
import { createRequire } from "module";
import { fileURLToPath } from "url";

const require = createRequire(path.join(process.cwd(), "x.js"));
const { Tokenizer } = require("@huggingface/tokenizers");
const pkgDir = path.dirname(path.dirname(require.resolve("@huggingface/tokenizers")));
const version = JSON.parse(fs.readFileSync(path.join(pkgDir, "package.json"), "utf8")).version;

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const fix = path.join(repo, "tests/fixtures/tokenizer");

// GPT-2's bytes_to_unicode: printable bytes keep their code point, the others get 256 + n in order.
function bytesToUnicode() {
  const out = [];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    out.push(String.fromCodePoint(printable ? b : 256 + n++));
  }
  return out;
}

// tiny-1l: one token per byte (id = byte value), BOS = 256, no merges.
const b2u = bytesToUnicode();
const tinyVocab = {};
b2u.forEach((c, b) => { tinyVocab[c] = b; });
const tiny = {
  version: "1.0",
  truncation: null,
  padding: null,
  added_tokens: [{ id: 256, content: "<|BOS|>", single_word: false, lstrip: false, rstrip: false,
                   normalized: false, special: true }],
  normalizer: null,
  pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
  post_processor: {
    type: "TemplateProcessing",
    single: [{ SpecialToken: { id: "<|BOS|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
    pair: [{ SpecialToken: { id: "<|BOS|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
           { Sequence: { id: "B", type_id: 1 } }],
    special_tokens: { "<|BOS|>": { id: "<|BOS|>", ids: [256], tokens: ["<|BOS|>"] } },
  },
  decoder: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
  model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null,
           end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false,
           vocab: tinyVocab, merges: [] },
};
fs.writeFileSync(path.join(repo, "models/tiny-1l/tokenizer.json"), JSON.stringify(tiny, null, 2) + "\n");

// Variants: a committed file, optionally patched (the C test applies the same patch: top-level keys
// replaced, added tokens appended).
const llamaBos = {
  type: "TemplateProcessing",
  single: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
  pair: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
         { SpecialToken: { id: "<|begin_of_text|>", type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
  special_tokens: { "<|begin_of_text|>": { id: "<|begin_of_text|>", ids: [128000], tokens: ["<|begin_of_text|>"] } },
};
const variants = [
  { name: "gpt2", file: "tests/fixtures/tokenizer/gpt2.json" },
  // GPT-NeoX-digits-like (gelu-1l's tokenizer): NFC, each digit alone, then GPT-2's regex; a
  // normalized non-special added token (NeoX has runs of spaces as added tokens) and a special token
  // with lstrip/rstrip; the merges written as ["a", "b"] pairs (newer files' format).
  { name: "gpt2_digits_nfc", file: "tests/fixtures/tokenizer/gpt2.json", pair_merges: true,
    patch: { normalizer: { type: "NFC" },
             pre_tokenizer: { type: "Sequence", pretokenizers: [
               { type: "Digits", individual_digits: true },
               { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true }] } },
    added: [{ id: 50257, content: "    ", single_word: false, lstrip: false, rstrip: false, normalized: true, special: false },
            { id: 50258, content: "<|mask|>", single_word: false, lstrip: true, rstrip: true, normalized: false, special: true }] },
  // GPT-NeoX-20B: NFC, runs of spaces as normalized non-special added tokens.
  { name: "neox20b", file: "tests/fixtures/tokenizer/neox20b.json" },
  // The same with each digit alone, as gelu-1l's NeelNanda/gpt-neox-tokenizer-digits.
  { name: "neox20b_digits", file: "tests/fixtures/tokenizer/neox20b.json",
    patch: { pre_tokenizer: { type: "Sequence", pretokenizers: [
      { type: "Digits", individual_digits: true },
      { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true }] } } },
  { name: "llama3", file: "tests/fixtures/tokenizer/llama3.json" },
  { name: "llama3_bos", file: "tests/fixtures/tokenizer/llama3.json", patch: { post_processor: llamaBos }, post: true },
  { name: "tiny1l", file: "models/tiny-1l/tokenizer.json", post: true },
];

const texts = fs.readdirSync(path.join(fix, "text")).sort();
const out = { generator: "tests/reference/make_tokenizer_fixtures.mjs", implementation: `@huggingface/tokenizers ${version}`,
              variants: [] };
for (const v of variants) {
  const json = JSON.parse(fs.readFileSync(path.join(repo, v.file), "utf8"));
  Object.assign(json, v.patch ?? {});
  if (v.pair_merges) json.model.merges = json.model.merges.map((m) => m.split(" "));
  json.added_tokens = [...json.added_tokens, ...(v.added ?? [])];
  // Without special-token parsing: the same tokenizer with its special added tokens left out.
  const plain = { ...json, added_tokens: json.added_tokens.filter((a) => !a.special) };
  const tok = new Tokenizer(json, {});
  const tokPlain = new Tokenizer(plain, {});
  const entry = { name: v.name, file: v.file, patch: v.patch ?? {}, added: v.added ?? [], pair_merges: !!v.pair_merges,
                  cases: [] };
  for (const name of texts) {
    // Invalid UTF-8 is read as a decoder with replacement reads it (U+FFFD per maximal subpart).
    const text = new TextDecoder("utf-8").decode(fs.readFileSync(path.join(fix, "text", name)));
    for (const special of [true, false]) {
      // The plain tokenizer lacks the special tokens the post-processor adds: take those from an
      // empty text through the full one.
      const ids = special ? tok.encode(text, { add_special_tokens: !!v.post }).ids
        : [...(v.post ? tok.encode("", { add_special_tokens: true }).ids : []),
           ...tokPlain.encode(text, { add_special_tokens: false }).ids];
      const decoded = ids.length ? tok.decode(ids, { clean_up_tokenization_spaces: false }) : "";
      entry.cases.push({ text: name, special, post: !!v.post, ids, decoded });
    }
  }
  out.variants.push(entry);
  console.log(`${v.name}: ${entry.cases.length} cases`);
}
fs.writeFileSync(path.join(fix, "expected.json"), JSON.stringify(out) + "\n");
