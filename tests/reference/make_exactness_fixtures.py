#!/usr/bin/env python3
"""Float64 reference for the exactness of the SAE step (issue 19, point 1).

Implements the seed's training step from DESIGN.md ("Numerics: the seed recipe, exactly"), not from
saefw's code: x_cent = x - b_dec, acts = relu(x_cent @ W_enc + b_enc), x_hat = acts @ W_dec + b_dec,
loss = mean_b sum_i (x_hat - x)^2 + l1_coeff * sum |acts|; backward; the W_dec gradient loses its
component along the normalised W_dec rows and W_dec is set to them; torch.optim.Adam (betas 0.9, 0.99,
eps 1e-8). It runs the same step in float64 (the reference) and in float32 (PyTorch's own distance from
it), from the same float32 initial state and batches.

Every input comes from a counter-based hash (splitmix64 of index + stream * golden ratio), so that
tests/test_exactness.c regenerates the same float32 values without a fixture (the arithmetic after
the hash is in float64 and rounded once to float32, identically in C and numpy):
  W_enc [d_in, d_sae] = (2u - 1) * sqrt(6 / d_sae)          stream 1  (kaiming-uniform, size(1) = d_sae)
  W_dec [d_sae, d_in] = (2u - 1) * sqrt(6 / d_in)           stream 2, rows then divided by their norm
  b_enc = -1.6 * sqrt(d_in / 3 * 2 / d_sae)  (about 6 % of entries fire), b_dec = 0
  mu [d_in] = (2u - 1) / 2                                  stream 3
  batch k [B, d_in] = (2u - 1) + mu                         stream 100 + k

Cases:
  issue  d_in 512, d_sae 4096, B 1024, 20 steps, lr 1e-3, l1 3e-4 (the issue's setting); written to
         tests/fixtures/exactness/issue.safetensors: the float64 final W_enc and W_dec as int16-quantised
         differences from the initial state (exact to 1e-5 of max |W|), b_enc and b_dec in float32,
         the float64 gradients of the first step at the initial state for W_enc columns [0, 128),
         W_dec rows [0, 128) and both biases (float32), and in the metadata PyTorch-float32's distances.
  seed   d_in 2048, d_sae 16384, B 4096, 5 steps (the seed's shape; lr 1e-4 as the seed): only with
         --seed-shape DIR, which writes the float64 final parameters as raw float32 files into DIR
         for `test_exactness --seed-shape DIR` (not committed: 300 MiB) and prints PyTorch's distances.

Distance: max |a - ref| / max |ref| per tensor. `--dump DIR` also writes, for the issue case, the
float64 parameters before each step and the gradients of each step (raw float32) for bisecting.

Run from anywhere:  /usr/bin/python3 tests/reference/make_exactness_fixtures.py
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "exactness")
GOLDEN = 0x9E3779B97F4A7C15
M64 = (1 << 64) - 1
NAMES = ["W_enc", "W_dec", "b_enc", "b_dec"]


def uniform(stream, n):
    """n doubles in [0, 1): splitmix64's finaliser of (i + stream * GOLDEN) mod 2^64, top 53 bits."""
    with np.errstate(over="ignore"):
        z = np.arange(n, dtype=np.uint64) + np.uint64((stream * GOLDEN) & M64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)


def init_state(d_in, d_sae):
    W_enc = ((2.0 * uniform(1, d_in * d_sae) - 1.0) * math.sqrt(6.0 / d_sae)).reshape(d_in, d_sae)
    W_dec = ((2.0 * uniform(2, d_sae * d_in) - 1.0) * math.sqrt(6.0 / d_in)).reshape(d_sae, d_in)
    W_dec = W_dec / np.sqrt((W_dec * W_dec).sum(axis=1, keepdims=True))
    b_enc = np.full(d_sae, -1.6 * math.sqrt(d_in / 3.0 * 2.0 / d_sae))
    b_dec = np.zeros(d_in)
    return [torch.from_numpy(a.astype(np.float32)) for a in (W_enc, W_dec, b_enc, b_dec)]


def batch(k, B, d_in, mu):
    return torch.from_numpy(((2.0 * uniform(100 + k, B * d_in) - 1.0).reshape(B, d_in) + mu).astype(np.float32))


def fwd_bwd(params, x, l1_coeff):
    """The seed's loss, its backward pass and the decoder projection; the gradients the optimizer sees
    (W_dec itself is renormalised in place)."""
    W_enc, W_dec, b_enc, b_dec = params
    for p in params:
        p.grad = None
    x_cent = x - b_dec
    acts = torch.relu(x_cent @ W_enc + b_enc)
    x_hat = acts @ W_dec + b_dec
    l2 = (x_hat - x).pow(2).sum(-1).mean(0)
    l1 = l1_coeff * acts.abs().sum()
    (l2 + l1).backward()
    with torch.no_grad():
        n = W_dec / W_dec.norm(dim=-1, keepdim=True)
        W_dec.grad -= (W_dec.grad * n).sum(-1, keepdim=True) * n
        W_dec.data = n
    return float((acts > 0).double().mean())


def sliced(g):
    """The first step's gradients the fixture keeps: W_enc columns [0, 128), W_dec rows [0, 128), biases."""
    return [g[0][:, :128], g[1][:128], g[2], g[3]]


def dist(a, ref):
    a, ref = a.double(), ref.double()
    return float((a - ref).abs().max() / ref.abs().max())


def run(case, dump=None):
    d_in, d_sae, B, steps, lr, l1 = case["d_in"], case["d_sae"], case["B"], case["steps"], case["lr"], case["l1"]
    init = init_state(d_in, d_sae)
    mu = (2.0 * uniform(3, d_in) - 1.0) / 2.0
    runs = {}
    for dt in (torch.float64, torch.float32):
        params = [p.to(dt).clone().requires_grad_(True) for p in init]
        opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99), eps=1e-8)
        rec = {"grad0": None, "grad_err": [], "fired": []}
        for k in range(steps):
            x = batch(k, B, d_in, mu)
            if dt == torch.float64:
                if dump:
                    for name, p in zip(NAMES, params):
                        p.detach().float().numpy().tofile(os.path.join(dump, "step%02d_%s.f32" % (k, name)))
                # PyTorch-float32's gradient at the reference's own parameters: its per-step error.
                p32 = [p.detach().float().clone().requires_grad_(True) for p in params]
                fwd_bwd(p32, x, l1)
            rec["fired"].append(fwd_bwd(params, x.to(dt), l1))
            if dt == torch.float64:
                rec["grad_err"].append([dist(a.grad, g.grad) for a, g in zip(p32, params)])
                if dump:
                    for name, p in zip(NAMES, params):
                        p.grad.float().numpy().tofile(os.path.join(dump, "step%02d_grad_%s.f32" % (k, name)))
            if k == 0:
                rec["grad0"] = sliced([p.grad.detach().clone() for p in params])
            opt.step()
        rec["final"] = [p.detach().clone() for p in params]
        runs[dt] = rec
    ref, f32 = runs[torch.float64], runs[torch.float32]
    final_dist = [dist(a, r) for a, r in zip(f32["final"], ref["final"])]
    grad0_dist = [dist(a, r) for a, r in zip(f32["grad0"], ref["grad0"])]
    grad_err = np.max(np.array(ref["grad_err"]), axis=0).tolist()
    print("%s: d_in %d d_sae %d B %d, %d steps; fired %.4f..%.4f of entries" %
          (case["name"], d_in, d_sae, B, steps, min(ref["fired"]), max(ref["fired"])))
    for i, n in enumerate(NAMES):
        print("  %-5s torch-f32 vs f64: final %.3e  first-step grad %.3e  worst per-step grad (at f64 params) %.3e"
              % (n, final_dist[i], grad0_dist[i], grad_err[i]))
    return init, ref, final_dist, grad0_dist, grad_err


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}}
    blobs, offset = [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        dname = {np.dtype("<f4"): "F32", np.dtype("<i2"): "I16"}[a.dtype]
        raw = a.tobytes(order="C")
        header[name] = {"dtype": dname, "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((-len(hjson)) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)
    os.replace(path + ".tmp", path)


def quantised(final, init):
    """final - init as int16 steps of scale = max |final - init| / 32767 (scale returned)."""
    d = final.double() - init.double()
    scale = float(d.abs().max()) / 32767.0
    return np.round((d / scale).numpy()).astype("<i2"), scale


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump", help="also write the issue case's per-step f64 parameters and gradients here")
    ap.add_argument("--seed-shape", help="run the seed's shape and write its f64 final parameters here")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    issue = {"name": "issue", "d_in": 512, "d_sae": 4096, "B": 1024, "steps": 20, "lr": 1e-3, "l1": 3e-4}
    if args.dump:
        os.makedirs(args.dump, exist_ok=True)
    init, ref, final_dist, grad0_dist, grad_err = run(issue, args.dump)
    os.makedirs(OUT, exist_ok=True)
    t, meta = {}, {k: v for k, v in issue.items() if k != "name"}
    for i, n in enumerate(NAMES):
        if i < 2:
            q, scale = quantised(ref["final"][i], init[i])
            t["final_%s_q" % n] = q
            meta["final_%s_scale" % n] = repr(scale)
        else:
            t["final_%s" % n] = ref["final"][i].float().numpy()
        meta["torch_f32_final_%s" % n] = repr(final_dist[i])
        meta["torch_f32_grad_%s" % n] = repr(grad0_dist[i])
        meta["torch_f32_step_grad_%s" % n] = repr(grad_err[i])
    g = ref["grad0"]
    t["grad0_W_enc_cols128"] = g[0].float().numpy()
    t["grad0_W_dec_rows128"] = g[1].float().numpy()
    t["grad0_b_enc"] = g[2].float().numpy()
    t["grad0_b_dec"] = g[3].float().numpy()
    write_safetensors(os.path.join(OUT, "issue.safetensors"), t, meta)
    print("wrote", os.path.normpath(os.path.join(OUT, "issue.safetensors")))
    if args.seed_shape:
        os.makedirs(args.seed_shape, exist_ok=True)
        seed = {"name": "seed", "d_in": 2048, "d_sae": 16384, "B": 4096, "steps": 5, "lr": 1e-4, "l1": 3e-4}
        init, ref, final_dist, grad0_dist, grad_err = run(seed)
        for n, p in zip(NAMES, ref["final"]):
            p.float().numpy().tofile(os.path.join(args.seed_shape, "final_%s.f32" % n))
        with open(os.path.join(args.seed_shape, "torch_f32.txt"), "w") as f:
            for n, d in zip(NAMES, final_dist):
                f.write("%s %r\n" % (n, d))
        print("wrote", args.seed_shape)
    return 0


if __name__ == "__main__":
    sys.exit(main())
