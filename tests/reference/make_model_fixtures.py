#!/usr/bin/python3
"""Writes the model-host fixtures in tests/fixtures/model/ for tests/test_model.c.

A small random transformer of the "neel" family (gelu-1l's architecture, 2 layers) is saved
twice: as a PyTorch state dict (`model.pth`, torch.save of an OrderedDict with TransformerLens
names, with the extra buffers blocks.L.attn.mask / blocks.L.attn.IGNORE and without
unembed.b_U, like gelu-1l's model_final.pth) beside a `config.json`, and as safetensors
(`model.safetensors`, config keys as strings in __metadata__, unembed.b_U present as zeros).
TransformerLens is not installed here, so `forward` below is TransformerLens's forward written
out in plain torch; the reference values are computed in float64 and stored as float32.

`reference.safetensors` holds the tokens [3, 12], the logits, the activations at every hook
site of every layer and at ln_final.hook_normalized (named by their TransformerLens hook names,
in TransformerLens's shapes), the mean vector used for
mean ablation, and in __metadata__ (as repr'd float64) the clean loss and the losses with
blocks.1.mlp.hook_post zero-ablated, mean-ablated and scaled by 0.5.

`bad_missing.pth` and `bad_shape.pth` are a 1-layer model of SMALL_CFG's shape without
blocks.0.mlp.W_in, and with blocks.0.attn.W_K of shape [2, 8, 3] instead of [2, 8, 4].

Run with Debian's python3 (python3-torch, python3-numpy) from any directory:

    /usr/bin/python3 tests/reference/make_model_fixtures.py

The output is deterministic. make_tiny_model.py imports `forward` from this file.
"""

import collections
import json
import math
import os
import struct

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "fixtures", "model"))

CFG = {
    "n_layers": 2, "d_model": 32, "d_mlp": 96, "d_head": 6, "n_heads": 4, "n_ctx": 16,
    "d_vocab": 50, "act_fn": "gelu", "normalization_type": "LN",
}
SMALL_CFG = {
    "n_layers": 1, "d_model": 8, "d_mlp": 16, "d_head": 4, "n_heads": 2, "n_ctx": 4,
    "d_vocab": 10, "act_fn": "gelu", "normalization_type": "LN",
}
HOOKS = ["hook_resid_pre", "hook_resid_mid", "mlp.hook_post", "hook_mlp_out", "hook_resid_post"]
# TransformerLens's other sites, written from the same forward: LayerNorm outputs before the gain
# and bias ([batch, pos, d_model]), queries/keys/values and z ([batch, pos, head, d_head]), the
# attention pattern ([batch, head, q, k]), the MLP's pre-activation ([batch, pos, d_mlp]).
MORE_HOOKS = ["ln1.hook_normalized", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_pattern",
              "attn.hook_z", "ln2.hook_normalized", "mlp.hook_pre"]


def layer_norm(x, w, b, eps, hook=None, name=None):
    """TransformerLens's LayerNorm: hook_normalized sees x / scale, before the gain and bias."""
    x = x - x.mean(-1, keepdim=True)
    scale = (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    x = x / scale
    if hook is not None:
        x = hook(name, x)
    return x * w + b


def forward(p, cfg, tokens, hooks=None, cache=None, eps=1e-5):
    """TransformerLens forward of a "neel" model. p: dict of TransformerLens-named tensors (any
    float dtype; unembed.b_U optional). hooks: {hook name: fn(act) -> act} applied at that site.
    cache: dict filled with every hook's activations (after its hook fn). Returns logits."""
    hooks = hooks or {}

    def hook(name, x):
        if name in hooks:
            x = hooks[name](x)
        if cache is not None:
            cache[name] = x
        return x

    T = tokens.shape[1]
    resid = p["embed.W_E"][tokens] + p["pos_embed.W_pos"][:T].unsqueeze(0)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for L in range(cfg["n_layers"]):
        pre = f"blocks.{L}."
        resid = hook(pre + "hook_resid_pre", resid)
        x = layer_norm(resid, p[pre + "ln1.w"], p[pre + "ln1.b"], eps, hook, pre + "ln1.hook_normalized")
        q = hook(pre + "attn.hook_q", torch.einsum("bpm,hmd->bphd", x, p[pre + "attn.W_Q"]) + p[pre + "attn.b_Q"])
        k = hook(pre + "attn.hook_k", torch.einsum("bpm,hmd->bphd", x, p[pre + "attn.W_K"]) + p[pre + "attn.b_K"])
        v = hook(pre + "attn.hook_v", torch.einsum("bpm,hmd->bphd", x, p[pre + "attn.W_V"]) + p[pre + "attn.b_V"])
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(cfg["d_head"])
        scores = scores.masked_fill(~causal, float("-inf"))
        pattern = hook(pre + "attn.hook_pattern", scores.softmax(-1))
        z = hook(pre + "attn.hook_z", torch.einsum("bhqk,bkhd->bqhd", pattern, v))
        attn_out = torch.einsum("bqhd,hdm->bqm", z, p[pre + "attn.W_O"]) + p[pre + "attn.b_O"]
        resid = hook(pre + "hook_resid_mid", resid + attn_out)
        x = layer_norm(resid, p[pre + "ln2.w"], p[pre + "ln2.b"], eps, hook, pre + "ln2.hook_normalized")
        mlp_pre = hook(pre + "mlp.hook_pre", x @ p[pre + "mlp.W_in"] + p[pre + "mlp.b_in"])
        post = torch.nn.functional.gelu(mlp_pre)
        post = hook(pre + "mlp.hook_post", post)
        mlp_out = hook(pre + "hook_mlp_out", post @ p[pre + "mlp.W_out"] + p[pre + "mlp.b_out"])
        resid = hook(pre + "hook_resid_post", resid + mlp_out)
    x = layer_norm(resid, p["ln_final.w"], p["ln_final.b"], eps, hook, "ln_final.hook_normalized")
    logits = x @ p["unembed.W_U"]
    if "unembed.b_U" in p:
        logits = logits + p["unembed.b_U"]
    return logits


def next_token_loss(logits, tokens):
    """Mean over every row and every position but the last of -log p(next token)."""
    logp = logits[:, :-1].log_softmax(-1)
    return -logp.gather(-1, tokens[:, 1:].unsqueeze(-1)).mean()


def random_params(cfg, gen):
    """Float64 weights with trained-model-like scales: unit-ish embeddings, 1/sqrt(fan_in)
    matrices, LN gains around 1 and non-zero biases, queries/keys scaled up so attention
    patterns are far from uniform."""
    dm, dmlp, dh, nh, V = cfg["d_model"], cfg["d_mlp"], cfg["d_head"], cfg["n_heads"], cfg["d_vocab"]

    def randn(*shape, std=1.0):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * std

    p = collections.OrderedDict()
    p["embed.W_E"] = randn(V, dm, std=0.8)
    p["pos_embed.W_pos"] = randn(cfg["n_ctx"], dm, std=0.3)
    for L in range(cfg["n_layers"]):
        pre = f"blocks.{L}."
        p[pre + "ln1.w"] = 1 + randn(dm, std=0.2)
        p[pre + "ln1.b"] = randn(dm, std=0.1)
        p[pre + "ln2.w"] = 1 + randn(dm, std=0.2)
        p[pre + "ln2.b"] = randn(dm, std=0.1)
        p[pre + "attn.W_Q"] = randn(nh, dm, dh, std=2.0 / math.sqrt(dm))
        p[pre + "attn.W_K"] = randn(nh, dm, dh, std=2.0 / math.sqrt(dm))
        p[pre + "attn.W_V"] = randn(nh, dm, dh, std=1.0 / math.sqrt(dm))
        p[pre + "attn.W_O"] = randn(nh, dh, dm, std=1.0 / math.sqrt(nh * dh))
        p[pre + "attn.b_Q"] = randn(nh, dh, std=0.1)
        p[pre + "attn.b_K"] = randn(nh, dh, std=0.1)
        p[pre + "attn.b_V"] = randn(nh, dh, std=0.1)
        p[pre + "attn.b_O"] = randn(dm, std=0.1)
        p[pre + "mlp.W_in"] = randn(dm, dmlp, std=1.0 / math.sqrt(dm))
        p[pre + "mlp.b_in"] = randn(dmlp, std=0.2)
        p[pre + "mlp.W_out"] = randn(dmlp, dm, std=1.0 / math.sqrt(dmlp))
        p[pre + "mlp.b_out"] = randn(dm, std=0.1)
    p["ln_final.w"] = 1 + randn(dm, std=0.2)
    p["ln_final.b"] = randn(dm, std=0.1)
    p["unembed.W_U"] = randn(dm, V, std=1.5 / math.sqrt(dm))
    return p


SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.int32: "I32",
                      torch.int64: "I64", torch.uint8: "U8", torch.int16: "I16"}


def write_safetensors(path, tensors, metadata=None):
    """safetensors by hand (the package is not a dependency): u64 header length, JSON header,
    then the raw little-endian data in the order given. Written to a temp name, then renamed."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    for name, t in tensors.items():
        t = t.detach().contiguous()
        b = t.numpy().tobytes()
        header[name] = {"dtype": SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)
    p64 = random_params(CFG, gen)
    # The C code runs on float32 weights; the reference runs in float64 on exactly those values.
    p32 = collections.OrderedDict((k, v.float()) for k, v in p64.items())
    p64 = collections.OrderedDict((k, v.double()) for k, v in p32.items())

    # The .pth: TransformerLens state dict order, extra buffers, no unembed.b_U.
    sd = collections.OrderedDict()
    for k, v in p32.items():
        sd[k] = v.clone()
        if k.endswith("attn.b_O"):
            sd[k[: -len("b_O")] + "mask"] = torch.ones(CFG["n_ctx"], CFG["n_ctx"], dtype=torch.bool).tril()
            sd[k[: -len("b_O")] + "IGNORE"] = torch.tensor(-1e5)
    torch.save(sd, os.path.join(OUT, "model.pth"))
    back = torch.load(os.path.join(OUT, "model.pth"))
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    write_json(os.path.join(OUT, "config.json"), CFG)

    st = collections.OrderedDict(p32)
    st["unembed.b_U"] = torch.zeros(CFG["d_vocab"])
    write_safetensors(os.path.join(OUT, "model.safetensors"), st, CFG)

    tokens = torch.randint(0, CFG["d_vocab"], (3, 12), generator=gen)
    cache = {}
    with torch.no_grad():
        logits = forward(p64, CFG, tokens, cache=cache)
        loss = next_token_loss(logits, tokens).item()
        site = "blocks.1.mlp.hook_post"
        mean = (torch.randn(CFG["d_mlp"], generator=gen, dtype=torch.float64) * 0.3 + 0.1).float().double()
        loss_zero = next_token_loss(forward(p64, CFG, tokens, hooks={site: torch.zeros_like}), tokens).item()
        loss_mean = next_token_loss(forward(p64, CFG, tokens, hooks={site: lambda x: mean.expand_as(x)}),
                                    tokens).item()
        loss_half = next_token_loss(forward(p64, CFG, tokens, hooks={site: lambda x: 0.5 * x}), tokens).item()

    ref = collections.OrderedDict()
    ref["tokens"] = tokens.to(torch.int32)
    ref["logits"] = logits.float()
    for L in range(CFG["n_layers"]):
        for h in HOOKS + MORE_HOOKS:
            name = f"blocks.{L}.{h}"
            ref[name] = cache[name].float()
    ref["ln_final.hook_normalized"] = cache["ln_final.hook_normalized"].float()
    ref["mean_post1"] = mean.float()
    meta = {"loss": repr(loss), "loss_zero_post1": repr(loss_zero), "loss_mean_post1": repr(loss_mean),
            "loss_half_post1": repr(loss_half)}
    write_safetensors(os.path.join(OUT, "reference.safetensors"), ref, meta)

    # Broken checkpoints of a very small model (SMALL_CFG): one lacks a tensor, one has a tensor of
    # the wrong shape.
    small = collections.OrderedDict(
        (k, v.float()) for k, v in random_params(SMALL_CFG, torch.Generator().manual_seed(7)).items())
    missing = collections.OrderedDict((k, v) for k, v in small.items() if k != "blocks.0.mlp.W_in")
    torch.save(missing, os.path.join(OUT, "bad_missing.pth"))
    badshape = collections.OrderedDict(small)
    badshape["blocks.0.attn.W_K"] = badshape["blocks.0.attn.W_K"][:, :, :3].contiguous()
    torch.save(badshape, os.path.join(OUT, "bad_shape.pth"))
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {OUT}: loss {loss:.6f}  zero-ablated {loss_zero:.6f}  mean-ablated {loss_mean:.6f}  "
          f"half {loss_half:.6f}; {total} bytes in the folder")


if __name__ == "__main__":
    main()
