#!/usr/bin/python3
"""Independent PyTorch reference for saefw's SAE numerics: writes tests/fixtures/sae/*.safetensors.

Reimplements the seed recipe (Neel Nanda's replication of "Towards Monosemanticity",
see DESIGN.md "Numerics: the seed recipe, exactly") in PyTorch and records forward
values, gradients, a 20-step training run and a bare Adam sequence as fixtures for
the C tests.  Run with Debian's python3 (python3-torch, python3-numpy) from anywhere:

    /usr/bin/python3 tests/reference/make_sae_fixtures.py            # write fixtures
    /usr/bin/python3 tests/reference/make_sae_fixtures.py --check    # write, re-read, cross-check

Output is deterministic (fixed seeds, one thread).  safetensors files are written by
hand because the `safetensors` package is not a dependency.
"""

import argparse
import json
import os
import struct
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.normpath(os.path.join(HERE, "..", "fixtures", "sae"))

_DTYPES = {
    torch.float32: ("F32", np.dtype("<f4")),
    torch.float64: ("F64", np.dtype("<f8")),
    torch.int64: ("I64", np.dtype("<i8")),
}
_NP_BY_NAME = {name: npdt for (name, npdt) in _DTYPES.values()}


# --------------------------------------------------------------------------- safetensors I/O

def write_safetensors(path, tensors, metadata):
    """Write an ordered dict name -> tensor as safetensors (header order == data order)."""
    header = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        if t.dtype not in _DTYPES:
            raise ValueError("unsupported dtype %s for %s" % (t.dtype, name))
        dname, npdt = _DTYPES[t.dtype]
        raw = t.numpy().astype(npdt, copy=False).tobytes(order="C")
        header[name] = {"dtype": dname, "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((-len(hjson)) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_safetensors(path):
    """Return (dict name -> np.ndarray, metadata dict). Strict: checks layout and coverage."""
    with open(path, "rb") as f:
        data = f.read()
    (hlen,) = struct.unpack("<Q", data[:8])
    if hlen % 8 != 0:
        raise ValueError("%s: header length %d not a multiple of 8" % (path, hlen))
    header = json.loads(data[8:8 + hlen].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    body = data[8 + hlen:]
    out = {}
    expect = 0
    for name, info in header.items():
        npdt = _NP_BY_NAME[info["dtype"]]
        b, e = info["data_offsets"]
        if b != expect:
            raise ValueError("%s: %s not contiguous (%d != %d)" % (path, name, b, expect))
        n = int(np.prod(info["shape"])) if info["shape"] else 1
        if e - b != n * npdt.itemsize:
            raise ValueError("%s: %s size mismatch" % (path, name))
        out[name] = np.frombuffer(body[b:e], dtype=npdt).reshape(info["shape"])
        expect = e
    if expect != len(body):
        raise ValueError("%s: %d trailing bytes" % (path, len(body) - expect))
    return out, meta


# --------------------------------------------------------------------------- the seed recipe

def sae_forward(x, W_enc, W_dec, b_enc, b_dec, l1_coeff):
    x_cent = x - b_dec
    acts = torch.relu(x_cent @ W_enc + b_enc)
    x_hat = acts @ W_dec + b_dec
    l2 = (x_hat.float() - x.float()).pow(2).sum(-1).mean(0)
    l1 = l1_coeff * acts.float().abs().sum()
    loss = l2 + l1
    return loss, x_hat, acts, l2, l1


def seed_init(d_in, d_sae, seed):
    """AutoEncoder.__init__ of the seed: manual_seed, kaiming W_enc then W_dec, zero biases,
    then unit-norm W_dec rows."""
    torch.manual_seed(seed)
    W_enc = torch.nn.init.kaiming_uniform_(torch.empty(d_in, d_sae, dtype=torch.float32))
    W_dec = torch.nn.init.kaiming_uniform_(torch.empty(d_sae, d_in, dtype=torch.float32))
    b_enc = torch.zeros(d_sae, dtype=torch.float32)
    b_dec = torch.zeros(d_in, dtype=torch.float32)
    W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True)
    return [t.clone().requires_grad_(True) for t in (W_enc, W_dec, b_enc, b_dec)]


@torch.no_grad()
def project_and_renorm(W_dec):
    """make_decoder_weights_and_grad_unit_norm of the seed."""
    n = W_dec / W_dec.norm(dim=-1, keepdim=True)
    proj = (W_dec.grad * n).sum(-1, keepdim=True) * n
    W_dec.grad -= proj
    W_dec.data = n


def t1(v):
    """A scalar as a float32 tensor of shape [1]."""
    return v.detach().reshape(1).to(torch.float32).clone()


# --------------------------------------------------------------------------- fixture 1: fwd/bwd

FWD_B, FWD_DIN, FWD_DSAE, FWD_L1 = 8, 16, 64, 0.01


def make_fwd_case(gen_seed, b_enc_fn):
    g = torch.Generator().manual_seed(gen_seed)
    torch.manual_seed(gen_seed)  # kaiming_uniform_ uses the global generator
    x = torch.randn(FWD_B, FWD_DIN, generator=g)
    W_enc = torch.nn.init.kaiming_uniform_(torch.empty(FWD_DIN, FWD_DSAE))
    W_dec = torch.nn.init.kaiming_uniform_(torch.empty(FWD_DSAE, FWD_DIN))
    scale = 0.5 + 1.5 * torch.rand(FWD_DSAE, 1, generator=g)  # row factors in [0.5, 2]
    W_dec = W_dec * scale
    b_enc = b_enc_fn(g)
    b_dec = 0.1 * torch.randn(FWD_DIN, generator=g)
    inputs = {"x": x, "W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec}

    p = {k: v.clone().requires_grad_(k != "x") for k, v in inputs.items()}
    loss, x_hat, acts, l2, l1 = sae_forward(p["x"], p["W_enc"], p["W_dec"], p["b_enc"],
                                            p["b_dec"], FWD_L1)
    loss.backward()
    grad_W_dec_raw = p["W_dec"].grad.clone()
    project_and_renorm(p["W_dec"])
    outputs = {
        "loss": t1(loss), "l2": t1(l2), "l1": t1(l1),
        "x_hat": x_hat.detach().clone(), "acts": acts.detach().clone(),
        "grad_W_enc": p["W_enc"].grad.clone(),
        "grad_W_dec_raw": grad_W_dec_raw,
        "grad_W_dec": p["W_dec"].grad.clone(),
        "grad_b_enc": p["b_enc"].grad.clone(),
        "grad_b_dec": p["b_dec"].grad.clone(),
        "W_dec_normed": p["W_dec"].detach().clone(),
    }
    return {**inputs, **outputs}


def make_fwd_bwd():
    base = make_fwd_case(1001, lambda g: 0.05 * torch.randn(FWD_DSAE, generator=g))
    hi = make_fwd_case(1002, lambda g: 4.0 + 0.5 * torch.rand(FWD_DSAE, generator=g))
    tensors = dict(base)
    tensors.update({"hi_" + k: v for k, v in hi.items()})
    meta = {"l1_coeff": repr(FWD_L1), "batch_size": str(FWD_B), "d_in": str(FWD_DIN),
            "d_sae": str(FWD_DSAE),
            "note": "hi_* is a second case with large positive b_enc; grad_W_dec_raw is "
                    "before the projection, grad_W_dec after, W_dec_normed the renormed W_dec"}
    for pre in ("", "hi_"):
        a = tensors[pre + "acts"]
        print("fwd_bwd %-3s loss=%.6f l2=%.6f l1=%.6f active=%d/%d" % (
            pre or "-", tensors[pre + "loss"].item(), tensors[pre + "l2"].item(),
            tensors[pre + "l1"].item(), int((a > 0).sum()), a.numel()))
    return tensors, meta


# --------------------------------------------------------------------------- fixture 2: train20

TR = dict(steps=20, batch_size=32, d_in=16, d_sae=64, lr=1e-3, beta1=0.9, beta2=0.99,
          l1_coeff=3e-4, seed=49, data_seed=12345, n_dirs=48, p_active=0.05, max_mag=2.0)


def sparse_batches(steps, batch, d_in, n_dirs, p, max_mag, seed):
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n_dirs, d_in, generator=g)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    on = (torch.rand(steps, batch, n_dirs, generator=g) < p).float()
    mag = max_mag * torch.rand(steps, batch, n_dirs, generator=g)
    return (on * mag) @ dirs  # [steps, batch, d_in]


def make_train20():
    batches = sparse_batches(TR["steps"], TR["batch_size"], TR["d_in"], TR["n_dirs"],
                             TR["p_active"], TR["max_mag"], TR["data_seed"])
    params = seed_init(TR["d_in"], TR["d_sae"], TR["seed"])
    W_enc, W_dec, b_enc, b_dec = params
    init = {"init_" + n: p.detach().clone()
            for n, p in zip(("W_enc", "W_dec", "b_enc", "b_dec"), params)}
    opt = torch.optim.Adam(params, lr=TR["lr"], betas=(TR["beta1"], TR["beta2"]),
                           foreach=False)
    losses, l2s, l1s = [], [], []
    print("train20: step      loss        l2          l1     act/tok  feats>0")
    for step in range(TR["steps"]):
        loss, x_hat, acts, l2, l1 = sae_forward(batches[step], W_enc, W_dec, b_enc, b_dec,
                                                TR["l1_coeff"])
        loss.backward()
        project_and_renorm(W_dec)
        opt.step()
        opt.zero_grad()
        losses.append(loss.item()); l2s.append(l2.item()); l1s.append(l1.item())
        act_per_tok = (acts > 0).float().sum(-1).mean().item()
        feats_alive = int(((acts > 0).sum(0) > 0).sum())
        print("train20: %4d  %.6f  %.6f  %.6f  %6.2f  %3d/%d" % (
            step, losses[-1], l2s[-1], l1s[-1], act_per_tok, feats_alive, TR["d_sae"]))
    tensors = dict(init)
    tensors["batches"] = batches.clone()
    tensors["losses"] = torch.tensor(losses, dtype=torch.float32)
    tensors["l2s"] = torch.tensor(l2s, dtype=torch.float32)
    tensors["l1s"] = torch.tensor(l1s, dtype=torch.float32)
    for n, p in zip(("W_enc", "W_dec", "b_enc", "b_dec"), params):
        tensors[n] = p.detach().clone()
    meta = {k: repr(TR[k]) for k in ("lr", "beta1", "beta2", "l1_coeff")}
    meta.update({k: str(TR[k]) for k in ("steps", "batch_size", "d_in", "d_sae", "seed")})
    meta["eps"] = repr(1e-8)
    meta["note"] = ("per step: forward, backward, project W_dec grad + renorm W_dec, Adam step; "
                    "losses/l2s/l1s are each step's forward before its update; final W_dec is "
                    "after the 20th Adam step (not exactly unit norm)")
    wn = tensors["W_dec"].norm(dim=-1)
    print("train20: loss %.6f -> %.6f; final W_dec row norms in [%.6f, %.6f]" % (
        losses[0], losses[-1], wn.min().item(), wn.max().item()))
    return tensors, meta


# --------------------------------------------------------------------------- fixture 3: adam

AD = dict(steps=30, lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, seed=777)


def grad_scale(t):
    """Per-step gradient scale: ordinary steps, a tiny run where eps dominates the
    denominator, a huge run, a zero gradient, and a run of 1e-3 after the huge ones."""
    if t < 3:
        return 1e-8       # sqrt(v_hat) ~ eps: exercises the eps term
    if t < 8:
        return 1.0
    if t < 13:
        return 1e3
    if t == 13:
        return 0.0        # zero gradient: momentum alone moves the parameter
    if t < 20:
        return 1e-3
    if t < 24:
        return 1e3
    return 1.0


def make_adam():
    g = torch.Generator().manual_seed(AD["seed"])
    p0 = torch.randn(5, 7, generator=g)
    grads = torch.randn(AD["steps"], 5, 7, generator=g)
    grads = grads * torch.tensor([grad_scale(t) for t in range(AD["steps"])]).view(-1, 1, 1)
    p = p0.clone().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=AD["lr"], betas=(AD["beta1"], AD["beta2"]), eps=AD["eps"],
                           weight_decay=0, amsgrad=False, foreach=False)
    out = []
    for t in range(AD["steps"]):
        p.grad = grads[t].clone()
        opt.step()
        out.append(p.detach().clone())
    tensors = {"p0": p0, "grads": grads, "params": torch.stack(out)}
    meta = {k: repr(AD[k]) for k in ("lr", "beta1", "beta2", "eps")}
    meta["steps"] = str(AD["steps"])
    meta["note"] = "params[t] is p after the (t+1)-th Adam step with p.grad = grads[t]"
    print("adam: %d steps, |params[-1]-p0|max=%.6f" % (
        AD["steps"], (tensors["params"][-1] - p0).abs().max().item()))
    return tensors, meta


# --------------------------------------------------------------------------- independent checks

def np_fwd_bwd(d, pre, l1c):
    """float64 numpy forward + hand-derived backward, independent of autograd."""
    f = lambda k: d[pre + k].astype(np.float64)
    x, We, Wd, be, bd = f("x"), f("W_enc"), f("W_dec"), f("b_enc"), f("b_dec")
    B = x.shape[0]
    xc = x - bd
    pre_act = xc @ We + be
    acts = np.maximum(pre_act, 0)
    x_hat = acts @ Wd + bd
    r = x_hat - x
    l2 = (r ** 2).sum(-1).mean()
    l1 = l1c * np.abs(acts).sum()
    dxh = 2 * r / B
    dacts = dxh @ Wd.T + l1c * np.sign(acts)
    dpre = dacts * (pre_act > 0)
    gWd = acts.T @ dxh
    n = Wd / np.linalg.norm(Wd, axis=-1, keepdims=True)
    gWd_p = gWd - (gWd * n).sum(-1, keepdims=True) * n
    return {"loss": np.array([l2 + l1]), "l2": np.array([l2]), "l1": np.array([l1]),
            "x_hat": x_hat, "acts": acts, "grad_W_enc": xc.T @ dpre, "grad_W_dec_raw": gWd,
            "grad_W_dec": gWd_p, "grad_b_enc": dpre.sum(0),
            "grad_b_dec": dxh.sum(0) - (dpre @ We.T).sum(0), "W_dec_normed": n}


def np_adam(p0, grads, lr, b1, b2, eps):
    p = p0.astype(np.float64)
    m = np.zeros_like(p); v = np.zeros_like(p)
    out = []
    for t in range(grads.shape[0]):
        gr = grads[t].astype(np.float64)
        m = b1 * m + (1 - b1) * gr
        v = b2 * v + (1 - b2) * gr * gr
        k = t + 1
        p = p - (lr / (1 - b1 ** k)) * m / (np.sqrt(v) / np.sqrt(1 - b2 ** k) + eps)
        out.append(p)
    return np.stack(out)


def maxrel(a, b):
    """max |a - b| relative to the largest |b| of the tensor (robust to cancellation)."""
    a = np.asarray(a, np.float64); b = np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def check(files):
    ok = True
    for fname, (tensors, meta) in files.items():
        path = os.path.join(OUT_DIR, fname)
        back, bmeta = read_safetensors(path)
        if list(back.keys()) != list(tensors.keys()):
            print("CHECK FAIL %s: tensor names/order differ" % fname); ok = False
        if bmeta != {str(k): str(v) for k, v in meta.items()}:
            print("CHECK FAIL %s: metadata differs" % fname); ok = False
        for k, t in tensors.items():
            a = t.detach().numpy()
            if k not in back or back[k].shape != a.shape or not np.array_equal(back[k], a):
                print("CHECK FAIL %s: %s does not round-trip" % (fname, k)); ok = False
        print("check: %s round-trips (%d tensors, %d bytes)" % (
            fname, len(back), os.path.getsize(path)))

    # autograd vs hand-derived float64 gradients
    fb, fbm = read_safetensors(os.path.join(OUT_DIR, "fwd_bwd.safetensors"))
    l1c = float(fbm["l1_coeff"])
    for pre in ("", "hi_"):
        ref = np_fwd_bwd(fb, pre, l1c)
        worst = max((maxrel(fb[pre + k], v), k) for k, v in ref.items())
        print("check: fwd_bwd %-3s vs float64 hand backward: max diff / max|ref| %.2e (%s)" % (
            pre or "-", worst[0], worst[1]))
        if worst[0] > 1e-5:
            print("CHECK FAIL fwd_bwd %s" % pre); ok = False

    ad, adm = read_safetensors(os.path.join(OUT_DIR, "adam.safetensors"))
    ref = np_adam(ad["p0"], ad["grads"], float(adm["lr"]), float(adm["beta1"]),
                  float(adm["beta2"]), float(adm["eps"]))
    d = float(np.max(np.abs(ref - ad["params"])))
    print("check: adam vs float64 hand Adam: max abs diff %.2e" % d)
    if d > 1e-5:
        print("CHECK FAIL adam"); ok = False

    # replay train20 in float64 numpy from the stored init + batches
    tr, trm = read_safetensors(os.path.join(OUT_DIR, "train20.safetensors"))
    P = {k: tr["init_" + k].astype(np.float64) for k in ("W_enc", "W_dec", "b_enc", "b_dec")}
    M = {k: np.zeros_like(v) for k, v in P.items()}
    V = {k: np.zeros_like(v) for k, v in P.items()}
    lr, b1, b2, eps = (float(trm[k]) for k in ("lr", "beta1", "beta2", "eps"))
    l1c = float(trm["l1_coeff"])
    losses = []
    for s in range(int(trm["steps"])):
        dd = {"x": tr["batches"][s], **P}
        r = np_fwd_bwd(dd, "", l1c)
        losses.append(r["loss"][0])
        G = {"W_enc": r["grad_W_enc"], "W_dec": r["grad_W_dec"], "b_enc": r["grad_b_enc"],
             "b_dec": r["grad_b_dec"]}
        P["W_dec"] = r["W_dec_normed"]
        k = s + 1
        for n in P:
            M[n] = b1 * M[n] + (1 - b1) * G[n]
            V[n] = b2 * V[n] + (1 - b2) * G[n] ** 2
            P[n] = P[n] - (lr / (1 - b1 ** k)) * M[n] / (np.sqrt(V[n]) / np.sqrt(1 - b2 ** k) + eps)
    dl = maxrel(tr["losses"], losses)
    dp = max(float(np.max(np.abs(tr[n] - P[n]))) for n in P)
    print("check: train20 vs float64 replay: losses max diff/max %.2e, final params max abs %.2e"
          % (dl, dp))
    if dl > 1e-5 or dp > 1e-5:
        print("CHECK FAIL train20"); ok = False
    return ok


def write_seed_checkpoint(tensors, meta):
    """The seed's own checkpoint files: torch.save(encoder.state_dict(), "3.pt") next to
    "3_cfg.json", holding the base fwd_bwd case's tensors (so the C test knows the values)."""
    import json

    class AutoEncoder(torch.nn.Module):
        def __init__(self, W_enc, W_dec, b_enc, b_dec):
            super().__init__()
            self.W_enc = torch.nn.Parameter(W_enc.clone())
            self.W_dec = torch.nn.Parameter(W_dec.clone())
            self.b_enc = torch.nn.Parameter(b_enc.clone())
            self.b_dec = torch.nn.Parameter(b_dec.clone())

    enc = AutoEncoder(*(torch.from_numpy(tensors[k].copy()) if isinstance(tensors[k], np.ndarray) else tensors[k]
                        for k in ("W_enc", "W_dec", "b_enc", "b_dec")))
    folder = os.path.join(OUT_DIR, "seed_ckpt")
    os.makedirs(folder, exist_ok=True)
    torch.save(enc.state_dict(), os.path.join(folder, "3.pt"))
    d_in, d_sae = enc.W_enc.shape
    cfg = {"seed": 49, "batch_size": 4096, "buffer_mult": 384, "lr": 1e-4, "num_tokens": 2000000000,
           "l1_coeff": float(meta["l1_coeff"]), "beta1": 0.9, "beta2": 0.99, "dict_mult": d_sae // d_in,
           "seq_len": 128, "enc_dtype": "fp32", "remove_rare_dir": False, "model_name": "gelu-1l",
           "site": "post", "layer": 0, "device": "cuda:0", "act_name": "blocks.0.mlp.hook_post",
           "act_size": int(d_in), "dict_size": int(d_sae), "name": "gelu-1l_0_%d_post" % d_sae}
    with open(os.path.join(folder, "3_cfg.json"), "w") as f:
        json.dump(cfg, f)
    print("wrote %s (seed-style checkpoint)" % os.path.relpath(folder))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="re-read the written files and cross-check them")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(OUT_DIR, exist_ok=True)
    files = {
        "fwd_bwd.safetensors": make_fwd_bwd(),
        "train20.safetensors": make_train20(),
        "adam.safetensors": make_adam(),
    }
    write_seed_checkpoint(*files["fwd_bwd.safetensors"])
    total = 0
    for fname, (tensors, meta) in files.items():
        path = os.path.join(OUT_DIR, fname)
        write_safetensors(path, tensors, meta)
        total += os.path.getsize(path)
        print("wrote %s (%d bytes)" % (os.path.relpath(path), os.path.getsize(path)))
    print("total %d bytes" % total)
    if args.check and not check(files):
        print("check FAILED")
        return 1
    if args.check:
        print("check OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
