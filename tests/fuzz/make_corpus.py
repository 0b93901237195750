#!/usr/bin/env python3
"""Write the seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/: small valid files
from tests/fixtures plus hand-made edge cases, in each target's input format (see the comment at the
top of each tests/fuzz/fuzz_<target>.c). Plain Python, no torch or numpy. Rerun after changing a
harness's input format; it replaces the corpus folders it writes."""
import hashlib
import json
import os
import shutil
import struct
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "fixtures")
OUT = os.path.join(HERE, "corpus")
MAX_FIXTURE = 16 << 10  # copy only small fixtures: the whole corpus stays well under 1 MB


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def fixtures(sub, ext):
    d = os.path.join(FIX, sub)
    for n in sorted(os.listdir(d)):
        p = os.path.join(d, n)
        if n.endswith(ext) and os.path.getsize(p) <= MAX_FIXTURE:
            yield n, open(p, "rb").read()


# ---- tensor files ----

def safetensors(tensors, meta=None, pad=b"", header_extra=b""):
    """tensors: list of (name, dtype, shape, bytes)."""
    h, data = {}, b""
    for name, dt, shape, raw in tensors:
        h[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if meta is not None:
        h["__metadata__"] = meta
    hj = json.dumps(h).encode() + header_extra
    return struct.pack("<Q", len(hj)) + hj + pad + data


def raw_st(header, data):
    return struct.pack("<Q", len(header)) + header.encode() + data


def npy(descr, shape, raw, version=1, fortran=False, extra=""):
    shp = "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
    d = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, %s}" % (descr, fortran, shp, extra)
    pre = 10 if version == 1 else 12
    pad = (64 - (pre + len(d) + 1) % 64) % 64
    d = d + " " * pad + "\n"
    head = b"\x93NUMPY" + bytes([version, 0])
    head += struct.pack("<H", len(d)) if version == 1 else struct.pack("<I", len(d))
    return head + d.encode("latin1") + raw


def f32(vals):
    return struct.pack("<%df" % len(vals), *vals)


def st_seeds():
    for n, b in fixtures("tensorfile", ".safetensors"):
        put("safetensors", n, b)
    for n, b in fixtures("model", ".safetensors"):
        put("safetensors", n, b)
    for n, b in fixtures("sae", ".safetensors"):
        put("safetensors", n, b)
    put("safetensors", "empty_header", safetensors([]))
    put("safetensors", "meta_only", safetensors([], meta={"format": "pt", "d_model": "32"}))
    put("safetensors", "all_dtypes", safetensors([
        ("f32", "F32", [2], f32([1.0, -2.0])), ("f16", "F16", [2], b"\x00\x3c\x00\xbc"),
        ("bf16", "BF16", [2], b"\x80\x3f\x80\xbf"), ("f64", "F64", [1], struct.pack("<d", 0.5)),
        ("i64", "I64", [1], struct.pack("<q", -3)), ("i32", "I32", [1], struct.pack("<i", 7)),
        ("i16", "I16", [1], b"\x01\x00"), ("u16", "U16", [1], b"\xff\xff"), ("i8", "I8", [1], b"\x80"),
        ("u8", "U8", [1], b"\x01"), ("b", "BOOL", [1], b"\x01")]))
    put("safetensors", "zero_dims", safetensors([("z", "F32", [0, 1 << 40], b""), ("s", "F32", [], f32([3.0]))]))
    # One byte of U8 first puts the F32 after it at an odd offset: the reader must copy it.
    put("safetensors", "misaligned", safetensors([("a", "U8", [1], b"\x07"), ("b", "F32", [2], f32([1.0, 2.0]))]))
    put("safetensors", "trailing_space", safetensors([("w", "F32", [1], f32([1.0]))], header_extra=b"   "))
    put("safetensors", "dup_names", raw_st('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                                           '"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"\x01"))
    put("safetensors", "overlap", raw_st('{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', bytes(12)))
    put("safetensors", "header_too_long", struct.pack("<Q", 1 << 40) + b"{}")
    put("safetensors", "legacy_pickle", b"\x80\x02\x8a\x0alZ\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.")


def npy_seeds():
    for n, b in fixtures("tensorfile", ".npy"):
        put("npy", n, b)
    put("npy", "scalar", npy("<f4", [], f32([1.5])))
    put("npy", "empty_rows", npy("<i4", [0, 3], b""))
    put("npy", "v2_3d", npy("<f8", [1, 2, 1], struct.pack("<2d", 1.0, 2.0), version=2))
    put("npy", "v3_bool", npy("|b1", [3], b"\x00\x01\x01", version=3))
    put("npy", "extra_key", npy("<f4", [1], f32([1.0]), extra="'x': 1, "))
    put("npy", "truncated", npy("<f4", [4], f32([1.0])))
    put("npy", "huge_shape", npy("<f4", [1 << 62, 1 << 62], b""))
    put("npy", "short", b"\x93NUMPY\x01\x00")


# ---- PyTorch zip and pickle ----

def pt_parts(path):
    """data.pkl and the storages data/0.. of a fixture checkpoint, or None for other layouts."""
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl")]
        if len(pkl) != 1:
            return None
        prefix = pkl[0][: -len("data.pkl")]
        keys = sorted((n[len(prefix) + 5:] for n in names if n.startswith(prefix + "data/")), key=lambda k: (len(k), k))
        if keys != [str(i) for i in range(len(keys))]:
            return z.read(pkl[0]), None
        return z.read(pkl[0]), [z.read(prefix + "data/" + k) for k in keys]


def pickle_seeds():
    # Protocol 2 programs by hand: a cyclic dict, memo use, LONG1, nested dicts, a bare tensor.
    storage = (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nq\x00((X\x07\x00\x00\x00storageq\x01ctorch\nFloatStorage\n"
               b"q\x02X\x01\x00\x00\x000q\x03X\x03\x00\x00\x00cpuq\x04K\x04tq\x05Q")
    tensor = storage + b"K\x00K\x02K\x02\x86q\x06K\x02K\x01\x86q\x07\x89}q\x08tq\x09Rq\x0a"
    put("pickle", "bare_tensor", tensor + b".")
    put("pickle", "state_dict", b"\x80\x02}q\x10(X\x01\x00\x00\x00w" + tensor[2:] + b"X\x04\x00\x00\x00stepK\x05u.")
    put("pickle", "cyclic_dict", b"\x80\x02}q\x00X\x01\x00\x00\x00ah\x00sX\x01\x00\x00\x00bh\x00s.")
    put("pickle", "long1", b"\x80\x02\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f.")
    put("pickle", "ordered_dict", b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01.")
    put("pickle", "empty", b"")
    for n, b in fixtures("tensorfile", ".pt"):
        try:
            parts = pt_parts(os.path.join(FIX, "tensorfile", n))
        except zipfile.BadZipFile:
            continue
        if parts:
            put("pickle", n.replace(".pt", ".pkl"), parts[0])


def torch_seeds():
    for sub in ("tensorfile", "model"):
        for n, b in fixtures(sub, ".pt"):
            put("torch_zip", n, b)
        for n, b in fixtures(sub, ".pth"):
            put("torch_zip", n, b)
    # Built form: flags byte, data.pkl, "@@@@" between the storages data/0, data/1, ...
    for n in ("sae_state_dict.pt", "mixed_dtypes.pt", "shared_storage.pt", "slice_offset.pt", "tokens_i64.pt"):
        parts = pt_parts(os.path.join(FIX, "tensorfile", n))
        if not parts or parts[1] is None:
            continue
        pkl, storages = parts
        for flags in (0, 1 | 4):
            put("torch_zip", "built_%d_%s" % (flags, n), bytes([flags]) + b"@@@@".join([pkl] + storages))
    put("torch_zip", "built_big_endian", bytes([4 | 8]) + b"\x80\x02}.")


# ---- JSON configs ----

CKPT_CFG = {"d_in": 4, "d_sae": 8, "dtype": "float32", "act_size": 4, "dict_size": 8, "l1_coeff": 0.001,
            "architecture": "standard", "activation_fn_str": "relu", "apply_b_dec_to_input": True,
            "normalize_activations": "none", "device": "cpu", "hook_name": "blocks.0.mlp.hook_post",
            "model_name": "gelu-1l", "seed": 49, "lr": 0.0001, "batch_size": 4096,
            "final_metrics": {"l0": 12.5, "explained_variance": 0.93, "dead": 3}}


def cfg_seeds():
    put("checkpoint_cfg", "saved", json.dumps(CKPT_CFG, indent=2))
    put("checkpoint_cfg", "seed_cfg.json", open(os.path.join(FIX, "sae", "seed_ckpt", "3_cfg.json"), "rb").read())
    put("checkpoint_cfg", "seed_sizes", '{"act_size": 16, "dict_size": 64, "l1_coeff": 3e-4}')
    put("checkpoint_cfg", "float_dims", '{"d_in": 4.0, "d_sae": 8.5}')
    put("checkpoint_cfg", "string_dims", '{"d_in": "4", "d_sae": "8"}')
    put("checkpoint_cfg", "l1_coefficient", '{"d_in": 4, "d_sae": 8, "l1_coefficient": -1e39}')
    put("checkpoint_cfg", "not_object", '[4, 8]')
    put("checkpoint_cfg", "trailing", '{"d_in": 4, "d_sae": 8} x')

    model = open(os.path.join(FIX, "model", "config.json"), "rb").read()
    put("model_cfg", "fixture_config.json", model)
    put("model_cfg", "tiny_1l_config.json", open(os.path.join(HERE, "..", "..", "models", "tiny-1l", "config.json"), "rb").read())
    put("model_cfg", "strings", '{"n_layers": "1", "d_model": "64", "d_mlp": "256", "d_head": "16", "n_heads": "4",'
        ' "n_ctx": "128", "d_vocab": "257", "act_fn": "gelu", "normalization_type": "LN", "ln_eps": "1e-5",'
        ' "use_attn_scale": "True", "final_rms": "false"}')
    put("model_cfg", "disagree", '{"n_layers": 1, "d_model": 8, "d_mlp": 8, "d_head": 2, "n_heads": 4, "n_ctx": 4,'
        ' "d_vocab": 5, "act_fn": "gelu", "normalization": "LN", "normalization_type": "RMS"}')
    put("model_cfg", "huge", '{"n_layers": 1e9, "d_model": 65536, "d_mlp": 65536, "d_head": 65536, "n_heads": 65536,'
        ' "n_ctx": 1, "d_vocab": 1, "act_fn": "gelu", "normalization": "LN", "ln_eps": 1}')

    put("hf_card", "saved_cfg.json", json.dumps(CKPT_CFG))
    put("hf_card", "seed_cfg.json", open(os.path.join(FIX, "sae", "seed_ckpt", "3_cfg.json"), "rb").read())
    put("hf_card", "site_layer", '{"site": "resid_mid", "layer": 1e99, "d_in": 1e308, "dict_mult": 1e308,'
        ' "metrics": {"a|b\\n": "x|y", "n": null, "o": {}}, "model": ["list"]}')
    put("hf_card", "not_object", '"cfg"')


# ---- token files ----

def tokens_seeds():
    def tok(kind, seq, flags, bos, body):
        return bytes([kind, seq, flags, bos]) + body
    ids = list(range(40))
    put("tokens", "npy_i32_stream", tok(0, 6, 2, 0, npy("<i4", [40], struct.pack("<40i", *ids))))
    put("tokens", "npy_u16_2d_bos", tok(0, 3, 1 | 2 | 4, 7, npy("<u2", [4, 7], struct.pack("<28H", *ids[:28]))))
    put("tokens", "npy_i64_vocab", tok(0, 2, 4, 0, npy("<i8", [6], struct.pack("<6q", 1, 2, 60, -1, 3, 4))))
    put("tokens", "npy_f32_refused", tok(0, 2, 0, 0, npy("<f4", [4], f32([1, 2, 3, 4]))))
    put("tokens", "bin_u16", tok(1, 8, 2, 0, struct.pack("<32H", *ids[:32])))
    put("tokens", "bin_i32_bos", tok(2, 4, 1, 5, struct.pack("<16i", *ids[:16])))
    put("tokens", "bin_i64_big", tok(3, 2, 0, 0, struct.pack("<4q", 1, 1 << 40, 2, 3)))
    put("tokens", "bin_odd_size", tok(2, 2, 0, 0, b"\x01\x02\x03"))
    put("tokens", "seq_len_max", tok(1, 255, 0, 0, struct.pack("<4H", 1, 2, 3, 4)))
    put("tokens", "seq_len_one", tok(1, 254, 0, 0, struct.pack("<4H", 1, 2, 3, 4)))
    put("tokens", "named_safetensors", tok(4, 2, 2, 0, safetensors([
        ("tokens", "I32", [2, 4], struct.pack("<8i", *ids[:8])), ("other", "I64", [1], struct.pack("<q", 1))])))
    pt = os.path.join(FIX, "tensorfile", "tokens_i64.pt")
    put("tokens", "torch_i64", tok(0, 4, 2, 0, open(pt, "rb").read()))


# ---- Parquet files (fuzz_parquet.c) ----

def parquet_seeds():
    for n, data in fixtures("parquet", ".parquet"):
        put("parquet", n[:-len(".parquet")], data)
    put("parquet", "magic_only", b"PAR1PAR1")
    put("parquet", "footer_too_long", b"PAR1" + struct.pack("<I", 1 << 30) + b"PAR1")
    put("parquet", "encrypted", b"PAR1" + b"\x00" * 8 + struct.pack("<I", 4) + b"PARE")
    # Metadata of a struct nested as deep as Thrift allows and beyond: the parser's depth bound.
    deep = b"\x1c" * 64 + b"\x00" * 64
    put("parquet", "deep_structs", b"PAR1" + deep + struct.pack("<I", len(deep)) + b"PAR1")


# ---- tokenizer.json (fuzz_tokenizer_json.c) ----

def cut_tokenizer(path, n_merges, n_added):
    """A tokenizer.json of a few KB cut from a real one: its 256 byte tokens, its first merges and the
    tokens they make, its first added tokens; ids renumbered densely in the original order."""
    d = json.load(open(path, encoding="utf-8"))
    m = d["model"]
    merges = [mm if isinstance(mm, str) else " ".join(mm) for mm in m["merges"][:n_merges]]
    keep = {t for t in m["vocab"] if len(t) == 1}
    for mm in merges:
        a, b = mm.split(" ")
        keep |= {a, b, a + b}
    toks = sorted((t for t in keep if t in m["vocab"]), key=lambda t: m["vocab"][t])
    m["vocab"] = {t: i for i, t in enumerate(toks)}
    m["merges"] = [mm for mm in merges if all(p in m["vocab"] for p in mm.split(" ") + [mm.replace(" ", "")])]
    added = []
    for a in d["added_tokens"][:n_added]:
        a["id"] = m["vocab"].get(a["content"], len(m["vocab"]) + len(added))
        added.append(a)
    d["added_tokens"] = added
    return json.dumps(d, ensure_ascii=False, separators=(",", ":"))


def tokenizer_seeds():
    tok = os.path.join(FIX, "tokenizer")
    put("tokenizer_json", "tiny_1l", open(os.path.join(HERE, "..", "..", "models", "tiny-1l", "tokenizer.json"),
                                         "rb").read())
    put("tokenizer_json", "gpt2_cut", cut_tokenizer(os.path.join(tok, "gpt2.json"), 64, 1))
    put("tokenizer_json", "neox20b_cut", cut_tokenizer(os.path.join(tok, "neox20b.json"), 64, 4))
    put("tokenizer_json", "llama3_cut", cut_tokenizer(os.path.join(tok, "llama3.json"), 64, 3))
    # A tokenizer_config.json after a NUL: the bos/eos conventions.
    put("tokenizer_json", "gpt2_config", cut_tokenizer(os.path.join(tok, "gpt2.json"), 16, 1) + "\0" +
        '{"bos_token": "<|endoftext|>", "eos_token": {"content": "<|endoftext|>"}, "add_bos_token": true}')
    bpe = lambda vocab, merges, **kw: json.dumps(dict({"model": {"type": "BPE", "vocab": vocab, "merges": merges},
                                                        "pre_tokenizer": {"type": "ByteLevel"},
                                                        "decoder": {"type": "ByteLevel"}}, **kw))
    ab = {"a": 0, "b": 1, "ab": 2}
    put("tokenizer_json", "tiny_bpe", bpe(ab, ["a b"]))
    put("tokenizer_json", "pair_merges", bpe(ab, [["a", "b"]]))
    put("tokenizer_json", "merge_unknown", bpe(ab, ["a c"]))
    put("tokenizer_json", "merge_no_space", bpe(ab, ["ab"]))
    put("tokenizer_json", "dup_ids", bpe({"a": 0, "b": 0}, []))
    put("tokenizer_json", "negative_id", bpe({"a": -1}, []))
    put("tokenizer_json", "huge_id", bpe({"a": 2147483647}, []))
    put("tokenizer_json", "empty_vocab", bpe({}, []))
    put("tokenizer_json", "added_huge", bpe(ab, [], added_tokens=[{"id": 4294967296, "content": "<x>", "special": True}]))
    put("tokenizer_json", "added_empty", bpe(ab, [], added_tokens=[{"id": 3, "content": "", "special": True}]))
    put("tokenizer_json", "bad_regex", bpe(ab, [], pre_tokenizer={"type": "Split", "pattern": {"Regex": "(a|"},
                                                                  "behavior": "Isolated", "invert": False}))
    put("tokenizer_json", "split_string", bpe(ab, [], pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"String": " "}, "behavior": "Removed", "invert": False},
        {"type": "Digits", "individual_digits": True}, {"type": "ByteLevel", "use_regex": False}]}))
    put("tokenizer_json", "template", bpe(ab, [], added_tokens=[{"id": 3, "content": "<s>", "special": True}],
                                          post_processor={"type": "TemplateProcessing",
                                                          "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                                     {"Sequence": {"id": "A", "type_id": 0}}],
                                                          "special_tokens": {"<s>": {"id": "<s>", "ids": [3]}}}))
    put("tokenizer_json", "wordpiece", '{"model": {"type": "WordPiece", "vocab": {"a": 0}}}')
    put("tokenizer_json", "normalizer_unknown", bpe(ab, [], normalizer={"type": "Lowercase"}))
    put("tokenizer_json", "not_object", "[1, 2, 3]")
    put("tokenizer_json", "truncated", bpe(ab, ["a b"])[:40])


# ---- Hub answers (fuzz_hub.c) ----

SEP = "\n===\n"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
# The upload folder fuzz_hub.c writes: its safetensors file is the one LFS object.
WEIGHTS = (struct.pack("<Q", 58) + b'{"b_dec":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}' + b"\x00\x00\x80\x3f")
WSHA = hashlib.sha256(WEIGHTS).hexdigest()
HELLO_SHA = hashlib.sha256(b"hello").hexdigest()


def hub(mode, answers):
    return bytes([mode]) + SEP.join(answers).encode()


def preupload(lfs=True, ignore=False):
    files = [{"path": "README.md", "uploadMode": "regular"}, {"path": "cfg.json", "uploadMode": "regular"},
             {"path": "sae_weights.safetensors", "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": ignore}]
    return json.dumps({"files": files})


def batch(actions=None, error=None):
    o = {"oid": WSHA, "size": len(WEIGHTS)}
    if actions is not None:
        o["actions"] = actions
    if error is not None:
        o["error"] = error
    return json.dumps({"transfer": "basic", "objects": [o]})


def hub_seeds():
    commit = json.dumps({"commitUrl": "https://hub.example/org/fuzzrepo/commit/" + COMMIT, "commitOid": COMMIT})
    basic = {"upload": {"href": "http://storage.example/put?sig=1", "header": {"x-amz-acl": "private"}},
             "verify": {"href": "http://hub.example/verify", "header": {}}}
    put("hub", "upload_basic", hub(0, [preupload(), batch(basic), "200\n\n", "200\n\n{}", commit]))
    put("hub", "upload_create", hub(4 | 16, ["200\n\n{\"url\": \"x\"}", preupload(), batch(basic), "200\n\n",
                                            "200\n\n{}", commit]))
    put("hub", "upload_exists", hub(4, ["409\n\n{\"error\": \"exists\"}", preupload(lfs=False), commit]))
    put("hub", "upload_whoami", hub(1, ['{"name": "org", "type": "user"}', preupload(), batch(), commit]))
    put("hub", "upload_revision", hub(8, [preupload(ignore=True), json.dumps({"commitOid": COMMIT})]))
    parts = {"chunk_size": "32", "00001": "http://s3.example/p1", "00002": "http://s3.example/p2",
             "00003": "http://s3.example/p3"}
    multipart = {"upload": {"href": "http://hub.example/complete", "header": parts}}
    put("hub", "upload_multipart", hub(0, [preupload(), batch(multipart), "200\nETag: \"e1\"\n\n",
                                           "200\nETag: \"e2\"\n\n", "200\nETag: \"e3\"\n\n", "200\n\n{}", commit]))
    put("hub", "upload_lfs_error", hub(0, [preupload(), batch(error={"code": 422, "message": "bad oid"})]))
    put("hub", "upload_403", hub(0, ["403\nX-Error-Message: no write access\n\n{\"error\": \"forbidden\"}"]))
    put("hub", "upload_404_revision", hub(8, ["404\nX-Error-Code: RevisionNotFound\n\n"]))
    put("hub", "upload_500_html", hub(0, ["500\n\n<html>oops</html>"]))
    put("hub", "upload_bad_json", hub(0, ["{\"files\": [{\"path\": 1}"]))
    put("hub", "upload_commit_409", hub(0, [preupload(lfs=False), "409\n\n{\"message\": \"moved\"}"]))

    head = "200\nX-Repo-Commit: %s\nETag: \"abc123\"\nContent-Length: 5\n\n" % COMMIT
    put("hub", "download_one", hub(2, [head, "hello"]))
    lfs_head = ("302\nLocation: http://cdn.example/blob/1\nX-Repo-Commit: %s\nX-Linked-Etag: \"%s\"\n"
                "X-Linked-Size: 5\nETag: W/\"x\"\n\n" % (COMMIT, HELLO_SHA))
    put("hub", "download_lfs", hub(2 | 32, [lfs_head, "hello"]))
    put("hub", "download_relative", hub(2, ["307\nLocation: /api/resolve-cache/models/org/fuzzrepo/x\n\n", head,
                                            "301\nLocation: http://cdn.example/moved\n\n", "hello"]))
    put("hub", "download_range", hub(2, [head, "206\nContent-Range: bytes 0-4/5\n\nhello"]))
    put("hub", "download_bad_sha", hub(2, [lfs_head, "hellO"]))
    put("hub", "download_401", hub(2, ["401\nX-Error-Code: RepoNotFound\n\n"]))
    put("hub", "download_gated", hub(2 | 8, ["403\nX-Error-Code: GatedRepo\nX-Error-Message: accept\n\n"]))
    put("hub", "download_429", hub(2, ["429\nRetry-After: 1000\n\n"]))
    put("hub", "download_bad_etag", hub(2, ["200\nX-Repo-Commit: %s\nETag: \"../../x\"\n\n" % COMMIT]))
    listing = json.dumps({"sha": COMMIT, "siblings": [{"rfilename": "cfg.json"}, {"rfilename": "sub/w.bin"}]})
    put("hub", "download_repo", hub(3, [listing, head, "hello", head.replace("abc123", "def456"), "hello"]))
    put("hub", "download_repo_unsafe", hub(3, [json.dumps({"sha": COMMIT, "siblings": [{"rfilename": "../x"}]})]))
    put("hub", "download_repo_empty", hub(3, [json.dumps({"sha": COMMIT, "siblings": []})]))


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    st_seeds()
    npy_seeds()
    pickle_seeds()
    torch_seeds()
    cfg_seeds()
    tokens_seeds()
    parquet_seeds()
    tokenizer_seeds()
    hub_seeds()
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(OUT) for f in fs)
    print("corpus: %d bytes in %s" % (total, OUT))
    if total > 1 << 20:
        sys.exit("corpus larger than 1 MB")


if __name__ == "__main__":
    main()
