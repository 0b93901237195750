#!/usr/bin/python3
"""Independent PyTorch reference for issue 16's SAE architectures: writes tests/fixtures/arch/.

Written from the papers (docs/architectures.md states every equation, the sources and where
the public implementations differ), not from saefw's code: TopK with AuxK, BatchTopK with its
inference threshold, JumpReLU with its straight-through estimator, Gated with weight sharing
and the frozen-decoder auxiliary loss, Anthropic's April 2024 recipe (decoder-norm-weighted
L1, no unit-norm constraint, schedules, gradient clipping) and a transcoder.  For each: one
forward/backward at a constructed small case, 20 Adam steps at B 32 / d_in 16 / d_sae 64, and
20 Adam steps at B 256 / d_in 64 / d_sae 512 with L0 well under 10 % (where a sparse kernel
path runs).  Run with Debian's python3 (python3-torch, python3-numpy) from anywhere:

    /usr/bin/python3 tests/reference/make_arch_fixtures.py            # write fixtures
    /usr/bin/python3 tests/reference/make_arch_fixtures.py --check    # + float64 run, FD check

Output is deterministic (fixed seeds, one thread).  Inputs are constructed without ties and
with margins around every discontinuity (top-k boundaries, thresholds, kernel edges), so a
float32 implementation that sums in another order selects the same latents; the margins are
checked at every step and recorded in the metadata.
"""

import argparse
import math
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_sae_fixtures as msf  # noqa: E402  (safetensors writer/reader, sparse data source)

OUT_DIR = os.path.normpath(os.path.join(HERE, "..", "fixtures", "arch"))

# The distance every discontinuity keeps from the values (absolute; pre-activations are ~0.1-3
# and float32 rounds them to ~1e-7): selections and thresholds change the values, so they keep
# 1e-5 at the small shape; at the big shape (5120 rows of 512 latents) near-ties are denser and
# they keep 1e-6; a ReLU kink only changes a derivative and keeps 1e-6.
MARGIN = 1e-5
BIG_MARGIN = 1e-6
KINK_MARGIN = 1e-6
# Kinks: where only a derivative jumps (ReLU at 0, the edges of JumpReLU's rectangle kernel).
KINKS = {"relu", "topk_relu", "auxk_relu", "mag_relu", "kernel_edge"}

UNIT_NORM = {"topk", "batchtopk", "jumprelu", "gated", "transcoder"}


# --------------------------------------------------------------------------- margin bookkeeping

class Margins:
    """Smallest distance of any value from a discontinuity, per kind, over one whole run."""

    def __init__(self, margin=MARGIN):
        self.m = {}
        self.margin = margin

    def add(self, kind, value):
        v = float(value)
        self.m[kind] = min(self.m.get(kind, math.inf), v)

    def ok(self):
        return all(v > (KINK_MARGIN if k in KINKS else self.margin)
                   for k, v in self.m.items())

    def meta(self):
        return ";".join("%s=%.3e" % kv for kv in sorted(self.m.items()))


def topk_gap(values, k, dim=-1):
    """Gap between the k-th and (k+1)-th largest along dim (inf when nothing is left out)."""
    n = values.shape[dim]
    if k >= n:
        return math.inf
    top = values.topk(k + 1, dim=dim).values
    return float((top.select(dim, k - 1) - top.select(dim, k)).min())


# --------------------------------------------------------------------------- STE functions

def rect(u):
    """Rectangle kernel K(u) = 1 for |u| < 1/2 (inputs never sit on the edges)."""
    return (u.abs() < 0.5).to(u.dtype)


class JumpReLUFn(torch.autograd.Function):
    """z * H(z - theta); d/dz = H(z - theta) (true), d/dtheta = -(theta/eps) K((z-theta)/eps)."""

    @staticmethod
    def forward(ctx, z, theta, eps):
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return z * (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, g):
        z, theta = ctx.saved_tensors
        eps = ctx.eps
        gz = g * (z > theta).to(z.dtype)
        gt = (g * (-(theta / eps) * rect((z - theta) / eps))).sum(0)
        return gz, gt, None


class StepFn(torch.autograd.Function):
    """H(z - theta); d/dz = 0 (true, away from the jump), d/dtheta = -(1/eps) K((z-theta)/eps)."""

    @staticmethod
    def forward(ctx, z, theta, eps):
        ctx.save_for_backward(z, theta)
        ctx.eps = eps
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, g):
        z, theta = ctx.saved_tensors
        eps = ctx.eps
        gt = (g * (-(1.0 / eps) * rect((z - theta) / eps))).sum(0)
        return torch.zeros_like(z), gt, None


# --------------------------------------------------------------------------- architectures
# Each forward takes params p (dict), a batch (x, y), the hyperparameters hp, the step state st
# and `frozen` (the stop-gradient values, recomputed when None; the finite-difference check
# passes them in fixed) and returns a dict with "loss", its terms, "pre", "acts", "x_hat".

def sq_err(a, b):
    """Seed convention: squared error summed over the feature dimension, mean over the batch."""
    return (a - b).pow(2).sum(-1).mean()


def auxk_term(p, pre, x, x_hat, hp, dead, frozen, M):
    """AuxK (Gao et al. 2024): the k_aux dead latents with the largest pre-activation, ReLU'd,
    decoded without b_dec, reconstruct the main residual e = x - x_hat (stop-gradient)."""
    n_dead = int(dead.sum())
    if n_dead == 0:
        return pre.new_zeros(()), None, 0
    ka = min(hp["k_aux"], n_dead)
    masked = torch.where(dead[None, :], pre, torch.full_like(pre, -math.inf))
    if M is not None and ka < n_dead:
        M.add("auxk_gap", topk_gap(masked.detach(), ka))
    vals, idx = masked.topk(ka, dim=-1)
    if M is not None:
        M.add("auxk_relu", vals.detach().abs().min())
    z_aux = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
    e = frozen["e"] if frozen is not None else (x - x_hat).detach()
    e_hat = z_aux @ p["W_dec"]
    return sq_err(e_hat, e), e, ka


def fwd_topk(p, x, y, hp, st, frozen=None, M=None):
    pre = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
    k = hp["k"]
    if M is not None:
        M.add("topk_gap", topk_gap(pre.detach(), k))
    vals, idx = pre.topk(k, dim=-1)
    acts = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
    if M is not None:
        M.add("topk_relu", vals.detach().abs().min())
    x_hat = acts @ p["W_dec"] + p["b_dec"]
    l2 = sq_err(x_hat, x)
    dead = st["dead_fn"](acts) if "dead_fn" in st else st["dead"]
    aux, e, ka = auxk_term(p, pre, x, x_hat, hp, dead, frozen, M)
    loss = l2 + hp["aux_coeff"] * aux
    return {"loss": loss, "l2": l2, "aux": aux, "pre": pre, "acts": acts, "x_hat": x_hat,
            "frozen": {"e": e}, "dead": dead}


def fwd_batchtopk(p, x, y, hp, st, frozen=None, M=None):
    pre = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
    r = torch.relu(pre)
    kb = hp["k"] * x.shape[0]
    flat = r.reshape(-1)
    if M is not None:
        M.add("batchtopk_gap", topk_gap(flat.detach(), kb))
        M.add("batchtopk_positive", float((flat.detach() > 0).sum() - kb))
    vals, idx = flat.topk(kb)
    acts = torch.zeros_like(flat).scatter(0, idx, vals).reshape(pre.shape)
    x_hat = acts @ p["W_dec"] + p["b_dec"]
    l2 = sq_err(x_hat, x)
    dead = st["dead_fn"](acts) if "dead_fn" in st else st["dead"]
    aux, e, ka = auxk_term(p, pre, x, x_hat, hp, dead, frozen, M)
    loss = l2 + hp["aux_coeff"] * aux
    return {"loss": loss, "l2": l2, "aux": aux, "pre": pre, "acts": acts, "x_hat": x_hat,
            "frozen": {"e": e}, "dead": dead}


def batchtopk_inference(p, x, theta):
    """Inference: a JumpReLU with one threshold for all latents, acts = pre * (pre > theta)."""
    pre = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
    acts = pre * (pre > theta).to(pre.dtype)
    return acts, acts @ p["W_dec"] + p["b_dec"]


def fwd_jumprelu(p, x, y, hp, st, frozen=None, M=None):
    pre = x @ p["W_enc"] + p["b_enc"]
    theta = torch.exp(p["log_threshold"])
    eps = hp["bandwidth"]
    if M is not None:
        d = (pre.detach() - theta.detach()).abs()
        M.add("jump", d.min())
        M.add("kernel_edge", (d - eps / 2).abs().min())
    acts = JumpReLUFn.apply(pre, theta, eps)
    x_hat = acts @ p["W_dec"] + p["b_dec"]
    l2 = sq_err(x_hat, x)
    l0 = StepFn.apply(pre, theta, eps).sum(-1).mean()
    loss = l2 + hp["l0_coeff"] * l0
    return {"loss": loss, "l2": l2, "l0": l0, "pre": pre, "acts": acts, "x_hat": x_hat,
            "frozen": {}}


def fwd_gated(p, x, y, hp, st, frozen=None, M=None):
    xc = x - p["b_dec"]
    pi_gate = xc @ p["W_enc"] + p["b_gate"]
    pi_mag = xc @ (p["W_enc"] * torch.exp(p["r_mag"])[None, :]) + p["b_mag"]
    if M is not None:
        M.add("gate", pi_gate.detach().abs().min())
        M.add("mag_relu", pi_mag.detach().abs()[pi_gate.detach() > 0].min())
    gate = (pi_gate > 0).to(pi_gate.dtype)
    acts = gate * torch.relu(pi_mag)
    x_hat = acts @ p["W_dec"] + p["b_dec"]
    l2 = sq_err(x_hat, x)
    g_act = torch.relu(pi_gate)
    l1 = g_act.sum(-1).mean()
    if frozen is None:
        frozen = {"W_dec": p["W_dec"].detach(), "b_dec": p["b_dec"].detach()}
    x_hat_frozen = g_act @ frozen["W_dec"] + frozen["b_dec"]
    aux = sq_err(x_hat_frozen, x)
    loss = l2 + hp["l1_coeff"] * l1 + aux
    return {"loss": loss, "l2": l2, "l1": l1, "aux": aux, "pre": pi_gate, "pi_mag": pi_mag,
            "acts": acts, "x_hat": x_hat, "frozen": frozen}


def fwd_relu_april(p, x, y, hp, st, frozen=None, M=None):
    pre = x @ p["W_enc"] + p["b_enc"]
    if M is not None:
        M.add("relu", pre.detach().abs().min())
    acts = torch.relu(pre)
    x_hat = acts @ p["W_dec"] + p["b_dec"]
    l2 = sq_err(x_hat, x)
    l1 = (acts * p["W_dec"].norm(dim=-1)[None, :]).sum(-1).mean()
    loss = l2 + st["l1_coeff"] * l1
    return {"loss": loss, "l2": l2, "l1": l1, "pre": pre, "acts": acts, "x_hat": x_hat,
            "frozen": {}}


def fwd_transcoder(p, x, y, hp, st, frozen=None, M=None):
    pre = x @ p["W_enc"] + p["b_enc"]
    if M is not None:
        M.add("relu", pre.detach().abs().min())
    acts = torch.relu(pre)
    y_hat = acts @ p["W_dec"] + p["b_dec"]
    l2 = sq_err(y_hat, y)
    l1 = acts.abs().sum()  # the seed's L1: summed over the batch too
    loss = l2 + hp["l1_coeff"] * l1
    return {"loss": loss, "l2": l2, "l1": l1, "pre": pre, "acts": acts, "x_hat": y_hat,
            "frozen": {}}


FWD = {"topk": fwd_topk, "batchtopk": fwd_batchtopk, "jumprelu": fwd_jumprelu,
       "gated": fwd_gated, "relu_april": fwd_relu_april, "transcoder": fwd_transcoder}
TERMS = {"topk": ("l2", "aux"), "batchtopk": ("l2", "aux"), "jumprelu": ("l2", "l0"),
         "gated": ("l2", "l1", "aux"), "relu_april": ("l2", "l1"), "transcoder": ("l2", "l1")}
PARAMS = {"topk": ("W_enc", "W_dec", "b_enc", "b_dec"),
          "batchtopk": ("W_enc", "W_dec", "b_enc", "b_dec"),
          "jumprelu": ("W_enc", "W_dec", "b_enc", "b_dec", "log_threshold"),
          "gated": ("W_enc", "W_dec", "b_gate", "b_mag", "r_mag", "b_dec"),
          "relu_april": ("W_enc", "W_dec", "b_enc", "b_dec"),
          "transcoder": ("W_enc", "W_dec", "b_enc", "b_dec")}


# --------------------------------------------------------------------------- post-backward

@torch.no_grad()
def project_and_renorm(W_dec):
    """Unit-norm decoder rows, the seed's order (also OpenAI's train.py): renormalise the rows,
    then remove from each row's gradient its component along the (renormalised) row."""
    n = W_dec / W_dec.norm(dim=-1, keepdim=True)
    W_dec.grad -= (W_dec.grad * n).sum(-1, keepdim=True) * n
    W_dec.data = n


@torch.no_grad()
def clip_grads(params, max_norm):
    """The rule of torch.nn.utils.clip_grad_norm_ (torch 1.13): the 2-norm of all gradients
    together (summed in float64 here), and a scale of max_norm / (norm + 1e-6) when that is
    below 1.  Returns (norm, applied coefficient)."""
    total = torch.sqrt(sum((q.grad.double() ** 2).sum() for q in params)).to(params[0].dtype)
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for q in params:
            q.grad.mul_(coef)
        return float(total), float(coef)
    return float(total), 1.0


def post_backward(arch, P, hp):
    """Everything between backward and the Adam step; returns a dict of recorded values."""
    rec = {}
    if arch in UNIT_NORM:
        rec["grad_raw_W_dec"] = P["W_dec"].grad.clone()
        project_and_renorm(P["W_dec"])
    if arch == "relu_april":
        rec.update({"grad_raw_" + n: P[n].grad.clone() for n in P})
        rec["grad_norm"], rec["clip_coef"] = clip_grads(list(P.values()), hp["max_grad_norm"])
    return rec


def april_schedule(hp, t):
    """lr and L1 coefficient of step t (0-based) out of hp['steps']: linear lr warm-up over
    lr_warmup steps, linear decay to 0 over the last lr_decay steps, linear L1 warm-up."""
    T = hp["steps"]
    lr = hp["lr"]
    if hp["lr_warmup"] > 0:
        lr *= min(1.0, (t + 1) / hp["lr_warmup"])
    if hp["lr_decay"] > 0:
        lr *= min(1.0, (T - t) / hp["lr_decay"])
    l1 = hp["l1_coeff"]
    if hp["l1_warmup"] > 0:
        l1 *= min(1.0, (t + 1) / hp["l1_warmup"])
    return lr, l1


# --------------------------------------------------------------------------- one run

def to_params(init, dtype):
    return {n: t.detach().clone().to(dtype).requires_grad_(True) for n, t in init.items()}


def fwd_bwd(arch, init, x, y, hp, st, dtype, M=None):
    """One forward + backward + post-processing; returns (outputs, grads, recorded, params)."""
    P = to_params(init, dtype)
    xd = x.to(dtype)
    yd = y.to(dtype) if y is not None else None
    st = dict(st)
    if arch == "relu_april":
        st["l1_coeff"] = hp["l1_coeff"]
    out = FWD[arch](P, xd, yd, hp, st, None, M)
    out["loss"].backward()
    rec = post_backward(arch, P, hp)
    grads = {n: P[n].grad.clone() for n in P}
    return out, grads, rec, P


def train(arch, init, batches, targets, hp, dtype, M=None):
    """hp['steps'] Adam steps; per step: forward, backward, post-processing, Adam, then the
    step's bookkeeping (dead-latent counters, BatchTopK threshold).  Returns a record."""
    P = to_params(init, dtype)
    opt = torch.optim.Adam(list(P.values()), lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]),
                           eps=hp["adam_eps"], foreach=False)
    d_sae = init["W_dec"].shape[0]
    since = torch.zeros(d_sae, dtype=torch.int64)  # steps since each latent last fired
    theta = 0.0  # BatchTopK inference threshold, float64
    rec = {k: [] for k in ("loss",) + TERMS[arch]}
    rec.update({"n_dead": [], "theta": [], "lr": [], "l1_coeff": [], "grad_norm": [],
                "clip_coef": [], "l0": []})
    first = None
    for t in range(hp["steps"]):
        x = batches[t].to(dtype)
        y = targets[t].to(dtype) if targets is not None else None
        st = {}
        if arch in ("topk", "batchtopk"):
            def dead_fn(acts, since=since):
                fired = (acts.detach() > 0).any(0)
                since.copy_(torch.where(fired, torch.zeros_like(since), since) + 1)
                return since > hp["dead_steps"]
            st["dead_fn"] = dead_fn
        if arch == "relu_april":
            lr, l1c = april_schedule(hp, t)
            for g in opt.param_groups:
                g["lr"] = lr
            st["l1_coeff"] = l1c
            rec["lr"].append(lr)
            rec["l1_coeff"].append(l1c)
        out = FWD[arch](P, x, y, hp, st, None, M)
        out["loss"].backward()
        pb = post_backward(arch, P, hp)
        if t == 0:
            first = {"x_hat": out["x_hat"].detach().clone(), "acts": out["acts"].detach().clone(),
                     "grads": {n: P[n].grad.clone() for n in P}}
        opt.step()
        opt.zero_grad()
        rec["loss"].append(float(out["loss"]))
        for k in TERMS[arch]:
            rec[k].append(float(out[k]))
        rec["l0"].append(float((out["acts"].detach() != 0).sum(-1).double().mean()))
        if "dead" in out:
            rec["n_dead"].append(int(out["dead"].sum()))
        if arch == "batchtopk":
            a = out["acts"].detach()
            pos = a[a > 0]
            if pos.numel() > 0:
                theta = (1 - hp["theta_rate"]) * theta + hp["theta_rate"] * float(pos.min())
            rec["theta"].append(theta)
        if arch == "relu_april":
            rec["grad_norm"].append(pb["grad_norm"])
            rec["clip_coef"].append(pb["clip_coef"])
    rec["final"] = {n: P[n].detach().clone() for n in P}
    rec["first"] = first
    rec["since"] = since.clone()
    return rec


# --------------------------------------------------------------------------- data and inits

def kaiming(shape, g):
    """kaiming_uniform_(a=0) of a [fan_out, fan_in]-shaped torch weight: U(-b, b),
    b = sqrt(6 / fan_in) with fan_in = shape[1]."""
    b = math.sqrt(6.0 / shape[1])
    return (torch.rand(*shape, generator=g) * 2 - 1) * b


def unit_rows(W):
    return W / W.norm(dim=-1, keepdim=True)


def make_init(arch, d_in, d_sae, g, d_out=None, big=False):
    """The paper's initialisation (docs/architectures.md), plus, at the big shape, negative
    encoder biases so that L0 stays well under 10 % (a fixture choice)."""
    d_out = d_out or d_in
    if arch == "transcoder":
        W_enc = kaiming((d_in, d_sae), g)
        W_dec = unit_rows(kaiming((d_sae, d_out), g))
        p = {"W_enc": W_enc, "W_dec": W_dec, "b_enc": torch.zeros(d_sae),
             "b_dec": torch.zeros(d_out)}
        if big:
            p["b_enc"] = torch.full((d_sae,), -0.3)
        return p
    W_dec = unit_rows(torch.randn(d_sae, d_in, generator=g))
    if arch == "relu_april":
        W_dec = 0.1 * W_dec
    W_enc = W_dec.t().contiguous().clone()
    if arch == "gated":
        p = {"W_enc": W_enc, "W_dec": W_dec.clone(),
             "b_gate": torch.zeros(d_sae), "b_mag": torch.zeros(d_sae),
             "r_mag": torch.zeros(d_sae), "b_dec": torch.zeros(d_in)}
        if big:
            p["b_gate"] = torch.full((d_sae,), -0.6)
        return p
    p = {"W_enc": W_enc, "W_dec": W_dec.clone(), "b_enc": torch.zeros(d_sae),
         "b_dec": torch.zeros(d_in)}
    if arch == "jumprelu":
        p["log_threshold"] = torch.full((d_sae,), math.log(0.6 if big else 0.1))
    if arch == "relu_april" and big:
        p["b_enc"] = torch.full((d_sae,), -0.07)
    return {k: p[k] for k in PARAMS[arch]}


def targets_of(x, M):
    """A transcoder target: an MLP-like nonlinear map of the input (gelu(x M))."""
    return torch.nn.functional.gelu(x @ M)


# --------------------------------------------------------------------------- per-arch settings

SMALL = dict(B=32, d_in=16, d_sae=64, steps=20)
BIG = dict(B=256, d_in=64, d_sae=512, steps=20, pool=1024)

HP = {
    "topk": dict(k=4, k_aux=8, aux_coeff=1 / 32, dead_steps=2, lr=1e-3, beta1=0.9,
                 beta2=0.999, adam_eps=6.25e-10),
    "batchtopk": dict(k=4, k_aux=8, aux_coeff=1 / 32, dead_steps=2, theta_rate=0.01,
                      lr=1e-3, beta1=0.9, beta2=0.999, adam_eps=1e-8),
    "jumprelu": dict(bandwidth=0.05, l0_coeff=0.02, lr=1e-3, beta1=0.0, beta2=0.999,
                     adam_eps=1e-8),
    "gated": dict(l1_coeff=0.05, lr=1e-3, beta1=0.9, beta2=0.999, adam_eps=1e-8),
    "relu_april": dict(l1_coeff=5.0, max_grad_norm=1.0, lr=1e-3, lr_warmup=3, lr_decay=4,
                       l1_warmup=5, beta1=0.9, beta2=0.999, adam_eps=1e-8),
    "transcoder": dict(l1_coeff=3e-4, lr=1e-3, beta1=0.9, beta2=0.99, adam_eps=1e-8),
}
BIG_OVERRIDES = {"topk": dict(k=32, k_aux=32, dead_steps=1),
                 "batchtopk": dict(k=32, k_aux=32, dead_steps=1),
                 "jumprelu": dict(bandwidth=0.1, l0_coeff=0.002),
                 "gated": dict(l1_coeff=0.02),
                 "relu_april": dict(l1_coeff=5.0, max_grad_norm=1.0),
                 "transcoder": dict(l1_coeff=1e-5)}
D_OUT_SMALL = 24  # the small transcoder maps 16 -> 24, so a swapped dimension shows


def small_data(arch, seed):
    """The seed fixture's sparse source plus dense noise of 0.05 (no all-zero rows: a zero row
    makes every pre-activation equal to the bias, a tie at initialisation)."""
    batches = msf.sparse_batches(SMALL["steps"], SMALL["B"], SMALL["d_in"], 48, 0.05, 2.0, seed)
    g = torch.Generator().manual_seed(seed + 2)
    batches = batches + 0.05 * torch.randn(batches.shape, generator=g)
    targets = None
    if arch == "transcoder":
        g = torch.Generator().manual_seed(seed + 1)
        Mt = torch.randn(SMALL["d_in"], D_OUT_SMALL, generator=g) / math.sqrt(SMALL["d_in"])
        targets = targets_of(batches, Mt)
    return batches, targets


def big_data():
    """A pool of rows and per-step row indices: batch t = pool[index[t]] (keeps files small)."""
    pool = msf.sparse_batches(1, BIG["pool"], BIG["d_in"], 256, 0.03, 2.0, 4242)[0]
    g = torch.Generator().manual_seed(4243)
    pool = pool + 0.05 * torch.randn(pool.shape, generator=g)
    index = torch.stack([torch.randperm(BIG["pool"], generator=g)[:BIG["B"]]
                         for _ in range(BIG["steps"])])
    Mt = torch.randn(BIG["d_in"], BIG["d_in"], generator=g) / math.sqrt(BIG["d_in"])
    pool_y = targets_of(pool, Mt)
    return pool, pool_y, index


def fwd_case(arch, seed):
    """The constructed small forward/backward case: W_dec rows scaled by [0.5, 2] (so the
    renormalisation shows), small random biases, and the architecture's extras."""
    B, d_in, d_sae = SMALL["B"], SMALL["d_in"], SMALL["d_sae"]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, d_in, generator=g)
    d_out = D_OUT_SMALL if arch == "transcoder" else d_in
    y = None
    if arch == "transcoder":
        y = torch.randn(B, d_out, generator=g)
    W_enc = kaiming((d_in, d_sae), g)
    W_dec = kaiming((d_sae, d_out), g) * (0.5 + 1.5 * torch.rand(d_sae, 1, generator=g))
    b_dec = 0.1 * torch.randn(d_out, generator=g)
    st = {}
    if arch == "gated":
        p = {"W_enc": W_enc, "W_dec": W_dec, "b_gate": 0.3 * torch.randn(d_sae, generator=g),
             "b_mag": 0.3 * torch.randn(d_sae, generator=g),
             "r_mag": 0.3 * torch.randn(d_sae, generator=g), "b_dec": b_dec}
    else:
        p = {"W_enc": W_enc, "W_dec": W_dec, "b_enc": 0.2 * torch.randn(d_sae, generator=g),
             "b_dec": b_dec}
    if arch == "jumprelu":
        p["log_threshold"] = torch.log(0.3 + 0.5 * torch.rand(d_sae, generator=g))
    if arch == "relu_april":
        p["W_dec"] = 0.1 * p["W_dec"]
    if arch in ("topk", "batchtopk"):
        dead = torch.zeros(d_sae, dtype=torch.bool)
        dead[torch.randperm(d_sae, generator=g)[:20]] = True
        st["dead"] = dead
    p = {n: p[n] for n in PARAMS[arch]}
    return x, y, p, st


# --------------------------------------------------------------------------- building one file

def t1(v):
    return torch.tensor([float(v)], dtype=torch.float32)


def sparse(acts):
    """(flat index int64, value) of the non-zero entries, row-major, increasing."""
    flat = acts.reshape(-1)
    idx = torch.nonzero(flat != 0).reshape(-1)
    return idx.to(torch.int64), flat[idx].clone()


def build_small(arch, seed_base):
    """The small cases of one architecture in float32; return (tensors, meta, inputs for the
    float64 replay) or None when a margin is too small (the caller tries another seed)."""
    M = Margins()
    hp = dict(HP[arch], steps=SMALL["steps"])
    T, meta = {}, {"arch": arch}

    # 1. constructed forward/backward
    x, y, p, st = fwd_case(arch, seed_base)
    out, grads, rec, P = fwd_bwd(arch, p, x, y, hp, st, torch.float32, M)
    T["fwd_x"] = x
    if y is not None:
        T["fwd_y"] = y
    for n in PARAMS[arch]:
        T["fwd_" + n] = p[n]
    if "dead" in st:
        T["fwd_dead_mask"] = st["dead"].to(torch.int64)
    T["fwd_pre"] = out["pre"].detach()
    T["fwd_acts"] = out["acts"].detach()
    T["fwd_x_hat"] = out["x_hat"].detach()
    T["fwd_loss"] = t1(out["loss"])
    for k in TERMS[arch]:
        T["fwd_" + k] = t1(out[k])
    for n in PARAMS[arch]:
        T["fwd_grad_" + n] = grads[n]
    for k, v in rec.items():
        if k.startswith("grad_raw_"):
            T["fwd_" + k] = v
    if arch in UNIT_NORM:
        T["fwd_W_dec_normed"] = P["W_dec"].detach().clone()
    if arch == "relu_april":
        T["fwd_grad_norm"] = t1(rec["grad_norm"])
        T["fwd_clip_coef"] = t1(rec["clip_coef"])
        if rec["clip_coef"] >= 1.0:
            print("%s: clipping not active in the forward case" % arch)
            return None
    if arch == "batchtopk":
        theta = float(out["acts"].detach()[out["acts"].detach() > 0].min()) * 1.01
        d = (out["pre"].detach() - theta).abs().min()
        M.add("inference_theta", d)
        ai, xi = batchtopk_inference(p, x, theta)
        T["fwd_theta"] = t1(theta)
        T["fwd_acts_inf"] = ai
        T["fwd_x_hat_inf"] = xi
    if arch == "jumprelu":
        z = out["pre"].detach()
        th = torch.exp(p["log_threshold"])
        hits = int((rect((z - th) / hp["bandwidth"]) > 0).sum())
        meta["fwd_kernel_hits"] = str(hits)
        if hits < 5:
            print("jumprelu: only %d kernel hits" % hits)
            return None
    if arch in ("topk", "batchtopk") and not float(out["aux"]) > 0:
        print("%s: aux is zero in the forward case" % arch)
        return None

    # 2. 20 steps at the small shape
    g = torch.Generator().manual_seed(seed_base + 7)
    init = make_init(arch, SMALL["d_in"], SMALL["d_sae"], g,
                     D_OUT_SMALL if arch == "transcoder" else None)
    batches, targets = small_data(arch, seed_base + 11)
    tr = train(arch, init, batches, targets, hp, torch.float32, M)
    for n in PARAMS[arch]:
        T["tr_init_" + n] = init[n]
    T["tr_batches"] = batches
    if targets is not None:
        T["tr_targets"] = targets
    put_record(T, "tr_", arch, tr)

    if arch in ("topk", "batchtopk") and max(tr["n_dead"]) == 0:
        print("%s: no dead latents in training" % arch)
        return None
    if arch == "relu_april":
        c = tr["clip_coef"]
        if all(v >= 1 for v in c) or all(v < 1 for v in c):
            print("relu_april: clipping active in %d of 20 steps" % sum(v < 1 for v in c))
            return None
    if not M.ok():
        print("%s seed %d: small margins too small: %s" % (arch, seed_base, M.meta()))
        return None
    for k, v in hp.items():
        meta[k] = repr(v)
    meta["margins"] = M.meta()
    meta["seed"] = str(seed_base)
    replay = {"fwd": (x, y, p, st), "tr": (init, batches, targets), "hp": hp}
    print("%-10s seed %d  fwd loss %.6f  train loss %.5f -> %.5f" % (
        arch, seed_base, float(out["loss"]), tr["loss"][0], tr["loss"][-1]))
    return T, meta, replay


def build_big(arch, data_big, seed_base):
    """The big-shape run of one architecture in float32 (see build_small)."""
    T, meta = {}, {}
    hp = dict(HP[arch], steps=BIG["steps"])
    pool, pool_y, index = data_big
    hpb = dict(hp, **BIG_OVERRIDES[arch])
    g = torch.Generator().manual_seed(seed_base)
    binit = make_init(arch, BIG["d_in"], BIG["d_sae"], g, big=True)
    bb = pool[index]
    bt = pool_y[index] if arch == "transcoder" else None
    bm = Margins(BIG_MARGIN)
    btr = train(arch, binit, bb, bt, hpb, torch.float32, bm)
    for n in PARAMS[arch]:
        T["big_init_" + n] = binit[n]
    T["big_x_hat0"] = btr["first"]["x_hat"]
    T["big_acts0_index"], T["big_acts0_value"] = sparse(btr["first"]["acts"])
    for n in PARAMS[arch]:
        T["big_grad0_" + n] = btr["first"]["grads"][n]
    put_record(T, "big_", arch, btr)
    l0max = max(btr["l0"]) / BIG["d_sae"]
    if l0max >= 0.10 or min(btr["l0"]) <= 0:
        print("%s: big L0 fraction %.3f out of range" % (arch, l0max))
        return None
    if not bm.ok():
        print("%s seed %d: big margins too small: %s" % (arch, seed_base, bm.meta()))
        return None
    for k, v in hpb.items():
        if HP[arch].get(k) != v:
            meta["big_" + k] = repr(v)
    meta["big_margins"] = bm.meta()
    meta["big_l0"] = "%.2f..%.2f of %d" % (min(btr["l0"]), max(btr["l0"]), BIG["d_sae"])
    meta["big_seed"] = str(seed_base)
    print("%-10s big seed %d  loss %.5f -> %.5f  L0 %s" % (
        arch, seed_base, btr["loss"][0], btr["loss"][-1], meta["big_l0"]))
    return T, meta, {"big": (binit, bb, bt), "hpb": hpb}


def put_record(T, pre, arch, r):
    T[pre + "loss"] = torch.tensor(r["loss"], dtype=torch.float32)
    for k in TERMS[arch]:
        T[pre + k] = torch.tensor(r[k], dtype=torch.float32)
    T[pre + "l0"] = torch.tensor(r["l0"], dtype=torch.float32)
    if r["n_dead"]:
        T[pre + "n_dead"] = torch.tensor(r["n_dead"], dtype=torch.int64)
        T[pre + "steps_since_fired"] = r["since"]
    if r["theta"]:
        T[pre + "theta"] = torch.tensor(r["theta"], dtype=torch.float64)
    if r["lr"]:
        T[pre + "lr"] = torch.tensor(r["lr"], dtype=torch.float64)
        T[pre + "l1_coeff"] = torch.tensor(r["l1_coeff"], dtype=torch.float64)
        T[pre + "grad_norm"] = torch.tensor(r["grad_norm"], dtype=torch.float32)
        T[pre + "clip_coef"] = torch.tensor(r["clip_coef"], dtype=torch.float32)
    for n, v in r["final"].items():
        T[pre + n] = v


# --------------------------------------------------------------------------- checks

def maxrel(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def check_float64(arch, T, replay):
    """The same reference in float64 from the same float32 inputs; returns the worst
    max|diff|/max|ref| per group."""
    hp, hpb = replay["hp"], replay["hpb"]
    x, y, p, st = replay["fwd"]
    out, grads, rec, P = fwd_bwd(arch, p, x, y, hp, st, torch.float64)
    worst = {}
    w = max(maxrel(T["fwd_grad_" + n], grads[n]) for n in PARAMS[arch])
    w = max(w, maxrel(T["fwd_x_hat"], out["x_hat"].detach()), maxrel(T["fwd_loss"], [float(out["loss"])]))
    worst["fwd"] = w
    init, batches, targets = replay["tr"]
    tr = train(arch, init, batches, targets, hp, torch.float64)
    worst["train_losses"] = maxrel(T["tr_loss"], tr["loss"])
    worst["train_params"] = max(maxrel(T["tr_" + n], tr["final"][n]) for n in PARAMS[arch])
    binit, bb, bt = replay["big"]
    btr = train(arch, binit, bb, bt, hpb, torch.float64)
    worst["big_grad0"] = max(maxrel(T["big_grad0_" + n], btr["first"]["grads"][n])
                             for n in PARAMS[arch])
    worst["big_losses"] = maxrel(T["big_loss"], btr["loss"])
    worst["big_params"] = max(maxrel(T["big_" + n], btr["final"][n]) for n in PARAMS[arch])
    return worst


def check_fd(arch, replay, n_entries=12, h=1e-6):
    """Central differences in float64 of the reference's loss (with its stop-gradient values
    held fixed) against autograd's raw gradients; JumpReLU's log_threshold is a
    pseudo-gradient and is skipped.  Returns the worst |fd - grad| / max|grad| per param."""
    x, y, p, st = replay["fwd"]
    hp = replay["hp"]
    P = to_params(p, torch.float64)
    xd = x.double()
    yd = y.double() if y is not None else None
    st = dict(st, l1_coeff=hp.get("l1_coeff"))
    out = FWD[arch](P, xd, yd, hp, st)
    out["loss"].backward()
    frozen = {k: (v.detach().clone() if v is not None else None) for k, v in out["frozen"].items()}
    g = torch.Generator().manual_seed(99)
    res = {}
    for n in PARAMS[arch]:
        if arch == "jumprelu" and n == "log_threshold":
            continue
        grad = P[n].grad
        flat = P[n].data.view(-1)
        picks = torch.randperm(flat.numel(), generator=g)[:n_entries]
        worst = 0.0
        for i in picks.tolist():
            old = float(flat[i])
            vals = []
            for s in (1, -1):
                flat[i] = old + s * h
                with torch.no_grad():
                    vals.append(float(FWD[arch](P, xd, yd, hp, st, frozen)["loss"]))
            flat[i] = old
            fd = (vals[0] - vals[1]) / (2 * h)
            worst = max(worst, abs(fd - float(grad.view(-1)[i])))
        res[n] = worst / max(float(grad.abs().max()), 1e-30)
    return res


def check_jumprelu_ste(T, hp):
    """JumpReLU's threshold pseudo-gradient recomputed in float64 numpy from the paper's
    formulas (not from the autograd Functions above), from the file's arrays T; returns
    max|diff| / max|ref|."""
    f = lambda k: T["fwd_" + k].astype(np.float64)
    x, We, Wd, be, bd, lt = (f(k) for k in ("x", "W_enc", "W_dec", "b_enc", "b_dec",
                                             "log_threshold"))
    B = x.shape[0]
    eps, lam = hp["bandwidth"], hp["l0_coeff"]
    theta = np.exp(lt)
    pre = x @ We + be
    acts = pre * (pre > theta)
    g_acts = (2.0 / B) * (acts @ Wd + bd - x) @ Wd.T
    K = (np.abs((pre - theta) / eps) < 0.5).astype(np.float64)
    d_theta = (g_acts * -(theta / eps) * K).sum(0) + (lam / B) * (-(1.0 / eps) * K).sum(0)
    return maxrel(T["fwd_grad_log_threshold"], theta * d_theta)


def check_files(files):
    ok = True
    for fname, (tensors, meta) in files.items():
        path = os.path.join(OUT_DIR, fname)
        back, bmeta = msf.read_safetensors(path)
        if list(back.keys()) != list(tensors.keys()):
            print("CHECK FAIL %s: tensor names/order differ" % fname)
            ok = False
        if bmeta != {str(k): str(v) for k, v in meta.items()}:
            print("CHECK FAIL %s: metadata differs" % fname)
            ok = False
        for k, t in tensors.items():
            a = t.detach().numpy()
            if k not in back or back[k].shape != a.shape or not np.array_equal(back[k], a):
                print("CHECK FAIL %s: %s does not round-trip" % (fname, k))
                ok = False
        print("check: %s round-trips (%d tensors, %d bytes)" % (fname, len(back),
                                                                 os.path.getsize(path)))
    return ok


# --------------------------------------------------------------------------- main

SEEDS = {"topk": 100, "batchtopk": 200, "jumprelu": 300, "gated": 400, "relu_april": 500,
         "transcoder": 600}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="re-read the files; rerun in float64; finite-difference the gradients")
    ap.add_argument("--only", help="comma-separated architectures (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(OUT_DIR, exist_ok=True)

    archs = args.only.split(",") if args.only else list(SEEDS)
    pool, pool_y, index = big_data()
    files = {"data.safetensors": ({"big_pool": pool, "big_pool_y": pool_y, "big_index": index},
                                  {"note": "big-shape batch t is big_pool[big_index[t]] "
                                           "(transcoder target: big_pool_y[big_index[t]])",
                                   "steps": str(BIG["steps"]), "batch_size": str(BIG["B"])})}
    replays = {}
    for arch in archs:
        parts = []
        for fn, args_of in ((build_small, lambda s: (arch, s)),
                            (build_big, lambda s: (arch, (pool, pool_y, index), s + 1000))):
            for attempt in range(60):
                r = fn(*args_of(SEEDS[arch] + attempt))
                if r is not None:
                    break
            else:
                print("%s: no seed gave the margins" % arch)
                return 1
            parts.append(r)
        (T, meta, replay), (bT, bmeta, breplay) = parts
        T.update(bT)
        meta.update(bmeta)
        replay.update(breplay)
        files[arch + ".safetensors"] = (T, meta)
        replays[arch] = replay

    total = 0
    for fname, (tensors, meta) in files.items():
        path = os.path.join(OUT_DIR, fname)
        msf.write_safetensors(path, tensors, meta)
        total += os.path.getsize(path)
        print("wrote %s (%d bytes)" % (os.path.relpath(path), os.path.getsize(path)))
    print("total %d bytes" % total)
    if not args.check:
        return 0

    ok = check_files(files)
    for arch in archs:
        T = files[arch + ".safetensors"][0]
        w = check_float64(arch, T, replays[arch])
        print("check: %-10s float32 vs float64, max|diff|/max|ref|: %s" % (
            arch, "  ".join("%s %.1e" % kv for kv in w.items())))
        limits = {"fwd": 1e-5, "big_grad0": 1e-5}
        for k, v in w.items():
            if not v <= limits.get(k, 1e-4):
                print("CHECK FAIL %s float64 %s %.2e" % (arch, k, v))
                ok = False
        if arch == "jumprelu":
            back, _ = msf.read_safetensors(os.path.join(OUT_DIR, "jumprelu.safetensors"))
            d = check_jumprelu_ste(back, replays[arch]["hp"])
            print("check: jumprelu   log_threshold pseudo-gradient vs float64 numpy from the "
                  "paper's formulas: %.1e" % d)
            if not d <= 1e-5:
                print("CHECK FAIL jumprelu pseudo-gradient %.2e" % d)
                ok = False
        fd = check_fd(arch, replays[arch])
        print("check: %-10s finite differences (float64, h 1e-6), max|fd-grad|/max|grad|: %s" % (
            arch, "  ".join("%s %.1e" % kv for kv in fd.items())))
        for k, v in fd.items():
            if not v <= 1e-6:
                print("CHECK FAIL %s finite difference %s %.2e" % (arch, k, v))
                ok = False
    print("check OK" if ok else "check FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
