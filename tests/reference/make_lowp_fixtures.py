#!/usr/bin/env python3
"""Reference for enc_dtype (issue 19, point 4): the seed's SAE step with mixed-precision products.

Written from the semantics in docs/enc_dtype.md, not from saefw's code. fp32 master parameters,
gradients and Adam state (torch.optim.Adam on float32 tensors); each of the five products takes its
operands rounded to the low precision with torch's own casts (round to nearest even) and sums them
in float64, rounded once to float32 (products of bf16 or fp16 values are exact, so this is the ideal
"low-precision products, fp32 accumulation"):

    encoder   pre    = r(x - b_dec) @ r(W_enc) + b_enc,  acts = relu(pre)
    decoder   x_hat  = r(acts) @ r(W_dec) + b_dec
    backward  dW_dec = r(acts)^T @ r_g(dxh),  dacts = r_g(dxh) @ r(W_dec)^T,
              dW_enc = r(x - b_dec)^T @ r_g(dpre)
with dxh = 2/B (x_hat - x), dpre = (dacts + l1_coeff) [acts > 0]. The bias gradients are fp32 sums of
the unrounded dxh and dpre (b_dec's: sum dxh - W_enc @ sum dpre). r_g is r for bf16; for fp16 it
scales by s = 2^(ceil(log2 B) + 3) before the cast and divides after (loss scaling: dxh is 2/B times
the error and would fall into fp16's subnormals).

Writes tests/fixtures/sae/lowp.safetensors: the inputs (initial parameters, STEPS batches), then for
each enc_dtype the first step's x_hat and raw gradients (before the decoder projection) and the
parameters after STEPS steps (bf16 and fp16) of forward, backward, decoder projection and Adam.

    /usr/bin/python3 tests/reference/make_lowp_fixtures.py
"""
import json
import math
import os
import struct

import numpy as np
import torch

D_IN, D_SAE, B, STEPS = 80, 192, 520, 3
LR, L1, BETAS = 1e-3, 3e-4, (0.9, 0.99)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "sae", "lowp.safetensors")


def grad_scale(dt):
    return 2.0 ** (math.ceil(math.log2(B)) + 3) if dt == "fp16" else 1.0


def r(t, dt, scale=1.0):
    if dt == "fp32":
        return t.clone()
    low = torch.bfloat16 if dt == "bf16" else torch.float16
    return (t * scale).to(low).to(torch.float32) / scale


def mm(a, b):
    return (a.double() @ b.double()).float()


def step_grads(p, x, dt):
    W_enc, W_dec, b_enc, b_dec = p
    s = grad_scale(dt)
    xc_r = r(x - b_dec, dt)
    acts = torch.relu(mm(xc_r, r(W_enc, dt)) + b_enc)
    acts_r = r(acts, dt)
    x_hat = mm(acts_r, r(W_dec, dt)) + b_dec
    dxh = (2.0 / B) * (x_hat - x)
    dxh_r = r(dxh, dt, s)
    g_W_dec = mm(acts_r.t(), dxh_r)
    dacts = mm(dxh_r, r(W_dec, dt).t())
    dpre = (dacts + L1) * (acts > 0).float()
    g_b_enc = dpre.double().sum(0)
    g_W_enc = mm(xc_r.t(), r(dpre, dt, s))
    g_b_dec = (dxh.double().sum(0) - W_enc.double() @ g_b_enc).float()
    return x_hat, [g_W_enc, g_W_dec, g_b_enc.float(), g_b_dec]


def project(W_dec, g):
    """The seed's make_decoder_weights_and_grad_unit_norm, in float64, rounded once."""
    n = W_dec.double() / W_dec.double().norm(dim=-1, keepdim=True)
    g = g.double() - (g.double() * n).sum(-1, keepdim=True) * n
    return n.float(), g.float()


def main():
    gen = torch.Generator().manual_seed(19)
    W_enc = (torch.rand(D_IN, D_SAE, generator=gen, dtype=torch.float64) * 2 - 1) * math.sqrt(6 / D_SAE)
    W_dec = (torch.rand(D_SAE, D_IN, generator=gen, dtype=torch.float64) * 2 - 1) * math.sqrt(6 / D_IN)
    W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True)
    # About 15 % of entries active, so both paths see a realistic mix.
    b_enc = torch.full((D_SAE,), -0.35, dtype=torch.float64)
    b_dec = 0.1 * torch.randn(D_IN, generator=gen, dtype=torch.float64)
    init = [t.float() for t in (W_enc, W_dec, b_enc, b_dec)]
    mu = torch.rand(D_IN, generator=gen, dtype=torch.float64) - 0.5
    batches = [((torch.rand(B, D_IN, generator=gen, dtype=torch.float64) * 2 - 1) + mu).float() for _ in range(STEPS)]

    out = {"init_W_enc": init[0], "init_W_dec": init[1], "init_b_enc": init[2], "init_b_dec": init[3],
           "batches": torch.stack(batches)}
    names = ["W_enc", "W_dec", "b_enc", "b_dec"]
    for dt in ("fp32", "bf16", "fp16"):
        x_hat, g = step_grads(init, batches[0], dt)
        out[dt + "_x_hat"] = x_hat
        for n, t in zip(names, g):
            out[dt + "_grad_" + n] = t
        if dt == "fp32":  # the first step only: it shows what the rounding changes
            continue
        params = [t.clone().requires_grad_(True) for t in init]
        opt = torch.optim.Adam(params, lr=LR, betas=BETAS, eps=1e-8)
        for k in range(STEPS):
            with torch.no_grad():
                _, g = step_grads([t.detach() for t in params], batches[k], dt)
                params[1].copy_(project(params[1].detach(), g[1])[0])
                g[1] = project(params[1].detach(), g[1])[1]
            for t, gt in zip(params, g):
                t.grad = gt.clone()
            opt.step()
        for n, t in zip(names, params):
            out[dt + "_final_" + n] = t.detach()
    for dt in ("bf16", "fp16"):
        lo = out[dt + "_grad_W_enc"]
        print("%s: first-step |grad W_enc| max %.3e; vs fp32 products %.3e (max diff / max)" % (
            dt, float(lo.abs().max()),
            float((lo - out["fp32_grad_W_enc"]).abs().max() / out["fp32_grad_W_enc"].abs().max())))
        active = float((torch.relu(mm(r(batches[0] - init[3], dt), r(init[0], dt)) + init[2]) > 0).float().mean())
        print("%s: fraction of active entries at step 0: %.3f" % (dt, active))

    meta = {"d_in": D_IN, "d_sae": D_SAE, "batch": B, "steps": STEPS, "lr": LR, "l1_coeff": L1,
            "beta1": BETAS[0], "beta2": BETAS[1], "torch": torch.__version__}
    header = {"__metadata__": {k: str(v) for k, v in meta.items()}}
    blobs, offset = [], 0
    for name, t in out.items():
        raw = np.ascontiguousarray(t.detach().numpy().astype("<f4")).tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * ((-len(hjson)) % 8)
    with open(OUT + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(hjson)) + hjson + b"".join(blobs))
    os.replace(OUT + ".tmp", OUT)
    print("wrote", os.path.relpath(OUT), offset, "bytes of tensors")


if __name__ == "__main__":
    main()
