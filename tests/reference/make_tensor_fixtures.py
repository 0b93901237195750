#!/usr/bin/python3
"""Writes the tensor-file fixtures in tests/fixtures/tensorfile/ for tests/test_tensorfile.c.

Every fixture is written by torch, numpy or (for safetensors, whose package is not a
dependency) by hand with struct + json, and `expected.json` records, for each readable
fixture, the tensors torch/numpy say it holds: name, dtype, shape, the values (flattened,
C order; 16-bit floats also as raw bit patterns) and any safetensors metadata. The C test
compares its reader against that. Fixtures that must be refused are listed under
"refused"; the C test says which error each must give.

Run with Debian's python3 (python3-torch 1.13, python3-numpy) from anywhere:

    /usr/bin/python3 tests/reference/make_tensor_fixtures.py

The zip64 and deflated PyTorch fixtures are repacked from torch.save output here and
checked with torch.load, so they are valid checkpoints as far as torch is concerned.
"""

import collections
import json
import os
import struct
import zipfile
import zlib

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "fixtures", "tensorfile"))

TORCH_DTYPES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}
NP_DTYPES = {
    "<f4": "F32", "<f2": "F16", "<f8": "F64", "<i8": "I64", "<i4": "I32", "<i2": "I16",
    "<u2": "U16", "|i1": "I8", "|u1": "U8", "|b1": "BOOL",
}

expected = {"readable": {}, "refused": []}


def path(name):
    return os.path.join(OUT, name)


def describe_torch(name, t):
    t = t.detach()
    d = {"name": name, "dtype": TORCH_DTYPES[t.dtype], "shape": list(t.shape)}
    flat = t.contiguous().reshape(-1)
    if t.dtype in (torch.float16, torch.bfloat16):
        d["values"] = flat.float().tolist()
        d["bits"] = [b & 0xFFFF for b in flat.view(torch.int16).tolist()]
    elif t.dtype == torch.bool:
        d["values"] = [int(b) for b in flat.tolist()]
    elif t.dtype == torch.int64:
        d["values"] = [str(v) for v in flat.tolist()]  # JSON numbers are doubles: keep int64 exact
    else:
        d["values"] = flat.tolist()
    return d


def describe_np(name, a):
    d = {"name": name, "dtype": NP_DTYPES[a.dtype.str], "shape": list(a.shape)}
    flat = np.ascontiguousarray(a).reshape(-1)
    if a.dtype == np.float16:
        d["values"] = [float(v) for v in flat.astype(np.float32)]
        d["bits"] = [int(b) for b in flat.view(np.uint16)]
    elif a.dtype == np.bool_:
        d["values"] = [int(v) for v in flat]
    elif a.dtype == np.int64:
        d["values"] = [str(v) for v in flat.tolist()]
    else:
        d["values"] = flat.tolist()
    return d


def save_torch(fname, obj, tensors, **kw):
    """torch.save obj; tensors is the list of (name, tensor) the reader must find, in order."""
    torch.save(obj, path(fname), **kw)
    back = torch.load(path(fname))
    del back
    expected["readable"][fname] = {"format": "pytorch",
                                   "tensors": [describe_torch(n, t) for n, t in tensors]}


def save_np(fname, a, version=None):
    with open(path(fname), "wb") as f:
        if version is None:
            np.save(f, a)
        else:
            np.lib.format.write_array(f, a, version=version)
    assert np.array_equal(np.load(path(fname)), a)
    expected["readable"][fname] = {"format": "npy", "tensors": [describe_np("array", a)]}


def write_safetensors(fname, tensors, metadata):
    """tensors: list of (name, torch tensor); header order == data order, 8-byte aligned data."""
    header = {"__metadata__": metadata} if metadata else {}
    blobs, offset = [], 0
    for name, t in tensors:
        t = t.detach().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": TORCH_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((-len(hjson)) % 8)
    with open(path(fname), "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)
    expected["readable"][fname] = {"format": "safetensors",
                                   "tensors": [describe_torch(n, t) for n, t in tensors],
                                   "metadata": metadata}


def zip_entries(src):
    with zipfile.ZipFile(src) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


def repack_deflated(src, dst):
    with zipfile.ZipFile(dst, "w") as z:
        for name, data in zip_entries(src):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)


def repack_stored(src, dst, edit=None):
    with zipfile.ZipFile(dst, "w") as z:
        for name, data in zip_entries(src):
            if edit:
                data = edit(name, data)
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            z.writestr(info, data)


def repack_zip64(src, dst):
    """Stored entries whose sizes and offsets all live in zip64 extra fields, with a zip64 end of
    central directory record, as torch writes for checkpoints over 4 GiB."""
    out, central = bytearray(), bytearray()
    entries = zip_entries(src)
    for name, data in entries:
        nb = name.encode()
        crc = zlib.crc32(data) & 0xFFFFFFFF
        off = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0x21, crc,
                           0xFFFFFFFF, 0xFFFFFFFF, len(nb), 20)
        out += nb + struct.pack("<HHQQ", 1, 16, len(data), len(data)) + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0x21, crc,
                               0xFFFFFFFF, 0xFFFFFFFF, len(nb), 28, 0, 0, 0, 0, 0xFFFFFFFF)
        central += nb + struct.pack("<HHQQQ", 1, 24, len(data), len(data), off)
    cd_off = len(out)
    out += central
    z64 = len(out)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, len(entries), len(entries),
                       len(central), cd_off)
    out += struct.pack("<IIQI", 0x07064B50, 0, z64, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    with open(dst, "wb") as f:
        f.write(out)


class SAE(torch.nn.Module):
    """Shaped like the seed's AutoEncoder, so state_dict() carries _metadata as the seed's N.pt does."""

    def __init__(self, d_in, d_sae):
        super().__init__()
        self.W_enc = torch.nn.Parameter(torch.randn(d_in, d_sae))
        self.W_dec = torch.nn.Parameter(torch.randn(d_sae, d_in))
        self.b_enc = torch.nn.Parameter(torch.randn(d_sae))
        self.b_dec = torch.nn.Parameter(torch.randn(d_in))


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(path(f))
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    # ---- PyTorch zip checkpoints
    sae = SAE(4, 6)
    sd = sae.state_dict()
    assert hasattr(sd, "_metadata")
    save_torch("sae_state_dict.pt", sd, list(sd.items()))
    save_torch("sae_state_dict_proto4.pt", sd, list(sd.items()), pickle_protocol=4)

    t35 = torch.randn(3, 5)
    save_torch("tensor_f32.pt", t35, [("tensor", t35)])
    tokens = torch.randint(0, 50000, (4, 8), dtype=torch.int64)
    save_torch("tokens_i64.pt", tokens, [("tensor", tokens)])

    mixed = collections.OrderedDict()
    mixed["bf16"] = torch.tensor([[1.0, -2.5, 3.140625], [1e-3, 65504.0, -0.0]]).to(torch.bfloat16)
    mixed["f16"] = torch.tensor([0.5, -1.0, 6.1e-5, 65504.0, 1e-7]).to(torch.float16)
    mixed["flag"] = torch.tensor([True, False, True, True, False, False, True])
    mixed["i32"] = torch.tensor([[1, -2], [2147483647, -2147483648]], dtype=torch.int32)
    mixed["f64"] = torch.tensor([1.0 / 3.0, -1e300, 2.0 ** -1074], dtype=torch.float64)
    mixed["i16"] = torch.tensor([-32768, 32767, 7], dtype=torch.int16)
    mixed["i8"] = torch.tensor([-128, 127, 0, 5], dtype=torch.int8)
    mixed["u8"] = torch.tensor([0, 255, 128], dtype=torch.uint8)
    mixed["scalar"] = torch.tensor(2.5)
    mixed["empty"] = torch.zeros(0, 3)
    save_torch("mixed_dtypes.pt", mixed, list(mixed.items()))

    big = torch.arange(40, dtype=torch.float32).reshape(10, 4)
    view = big[2:4]
    assert view.is_contiguous() and view.storage_offset() == 8
    save_torch("slice_offset.pt", view, [("tensor", view)])
    shared = collections.OrderedDict([("head", big[2:4]), ("tail", big[5:]), ("row", big[7])])
    save_torch("shared_storage.pt", shared, list(shared.items()))

    param = torch.nn.Parameter(torch.randn(2, 3))
    save_torch("parameter.pt", {"p": param}, [("p", param)])

    w = torch.randn(2, 2)
    nested = {"model": {"w": w, "cfg": {"b": torch.ones(3)}}, "step": 7, "name": "run", "lr": 1e-4,
              "done": None}
    save_torch("nested.pt", nested, [("model.w", w), ("model.cfg.b", torch.ones(3))])

    repack_deflated(path("sae_state_dict.pt"), path("sae_deflated.pt"))
    torch.load(path("sae_deflated.pt"))
    expected["readable"]["sae_deflated.pt"] = expected["readable"]["sae_state_dict.pt"]
    repack_zip64(path("tensor_f32.pt"), path("tensor_zip64.pt"))
    assert torch.equal(torch.load(path("tensor_zip64.pt")), t35)
    expected["readable"]["tensor_zip64.pt"] = expected["readable"]["tensor_f32.pt"]

    # ---- PyTorch files that must be refused
    def refuse(fname):
        expected["refused"].append(fname)

    torch.save({"w": big.t()}, path("noncontiguous.pt"))
    refuse("noncontiguous.pt")
    torch.save({"x": collections.Counter(a=1)}, path("forbidden_global.pt"))
    refuse("forbidden_global.pt")
    torch.save(torch.nn.Linear(2, 2), path("module.pt"))
    refuse("module.pt")
    # Protocol 4 pickles bytes with SHORT_BINBYTES, outside the state-dict opcode subset.
    torch.save({"x": b"abc"}, path("bytes_opcode.pt"), pickle_protocol=4)
    refuse("bytes_opcode.pt")
    # The legacy format's storage keys are memory addresses, so this file differs between runs.
    torch.save({"w": torch.ones(2)}, path("legacy.pt"), _use_new_zipfile_serialization=False)
    refuse("legacy.pt")
    repack_stored(path("tensor_f32.pt"), path("storage_short.pt"),
                  lambda name, data: data[:-4] if "/data/" in name else data)
    refuse("storage_short.pt")
    torch.save([torch.ones(2)], path("list_top.pt"))
    refuse("list_top.pt")

    # ---- NumPy
    save_np("f32.npy", rng.standard_normal((3, 4)).astype(np.float32))
    save_np("f16.npy", np.array([0.5, -2.0, 65504.0, 6e-8, 1.0009766], dtype=np.float16))
    save_np("i32.npy", rng.integers(-2 ** 31, 2 ** 31, (2, 3)).astype(np.int32))
    save_np("u16.npy", np.array([0, 1, 50256, 65535, 300, 7], dtype=np.uint16))
    save_np("i64.npy", rng.integers(-2 ** 62, 2 ** 62, (2, 2, 2)).astype(np.int64))
    save_np("f64_scalar.npy", np.array(3.25, dtype=np.float64))
    save_np("bool.npy", np.array([True, False, True]))
    save_np("i8_v2.npy", np.array([[-1, 2, -3]], dtype=np.int8), version=(2, 0))
    save_np("u8_v3.npy", np.arange(6, dtype=np.uint8).reshape(2, 3), version=(3, 0))
    np.save(path("fortran.npy"), np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)))
    refuse("fortran.npy")
    np.save(path("big_endian.npy"), np.arange(3, dtype=">f4"))
    refuse("big_endian.npy")

    # ---- safetensors (by hand)
    st = [("W_enc", torch.randn(4, 6)), ("half", torch.tensor([1.5, -0.25], dtype=torch.float16)),
          ("brain", torch.tensor([3.0, -1.0, 0.1], dtype=torch.bfloat16)),
          ("tok", torch.tensor([[1, 2], [3, 50256]], dtype=torch.int64)),
          ("none", torch.zeros(0, 4)), ("s", torch.tensor(4.0))]
    write_safetensors("hand.safetensors", st, {"format": "pt", "note": "made by hand"})
    write_safetensors("nometa.safetensors", [("x", torch.arange(5, dtype=torch.int32))], None)

    with open(path("expected.json"), "w") as f:
        json.dump(expected, f, indent=0, sort_keys=True)
        f.write("\n")
    total = sum(os.path.getsize(path(f)) for f in os.listdir(OUT))
    print("wrote %d files, %d bytes, to %s" % (len(os.listdir(OUT)), total, OUT))


if __name__ == "__main__":
    main()
