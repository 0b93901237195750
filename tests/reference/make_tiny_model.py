#!/usr/bin/python3
"""Trains the bundled tiny model in models/tiny-1l/: a one-layer GELU transformer of gelu-1l's
family (TransformerLens semantics) over bytes, so the whole saefw pipeline runs on a fresh
machine with nothing downloaded.

Vocabulary: the 256 byte values plus BOS = 256 (d_vocab 257). Corpus ("text and code", like
gelu-1l's C4 + code mix), every file freely redistributable and already on the machine:
  * the license texts in /usr/share/common-licenses (Debian's base-files; verbatim copies of
    these texts may be distributed),
  * this repository's own Markdown documents and its .c/.h/.lua sources, as committed at HEAD
    (git show HEAD:path, so uncommitted work in the tree does not leak in).
Files are deduplicated (symlinked licenses appear once), shuffled with a fixed seed, and cut into
a training part and a held-out part (the last documents, about 10% of the bytes). Code files are
taken until the corpus holds MAX_TOKENS bytes.

Training: sequences of n_ctx = 128 tokens, BOS then 127 bytes from a random offset of the
training part (the seed's preprocessing puts BOS at position 0 the same way); AdamW, linear
warmup then cosine decay, on 2 CPU threads, a fixed number of steps.

Writes models/tiny-1l/{model.safetensors, config.json, tokens.npy, train_log.txt, README.md}
and tests/fixtures/model/tiny_heldout.safetensors (4 held-out sequences and their loss,
computed in float64 on the saved fp32 weights) for tests/test_model.c.

Run from any directory with Debian's python3 (python3-torch, python3-numpy):

    /usr/bin/python3 tests/reference/make_tiny_model.py

`--tokens models/tiny-1l/tokens.npy --n-train N` retrains on the shipped corpus instead of
rebuilding it (N from the README), which reproduces the shipped model exactly.
"""

import argparse
import collections
import json
import math
import os
import random
import subprocess
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_model_fixtures import forward, next_token_loss, write_json, write_safetensors  # noqa: E402

REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(REPO, "models", "tiny-1l")
FIXTURE = os.path.join(REPO, "tests", "fixtures", "model", "tiny_heldout.safetensors")
LICENSES = "/usr/share/common-licenses"

BOS = 256
CFG = collections.OrderedDict([
    ("n_layers", 1), ("d_model", 64), ("d_mlp", 256), ("d_head", 16), ("n_heads", 4), ("n_ctx", 128),
    ("d_vocab", 257), ("act_fn", "gelu"), ("normalization", "LN"), ("ln_eps", 1e-05),
    ("positional_embedding_type", "standard"), ("attn_only", False), ("tokenizer_name", None),
    ("bos_token_id", BOS), ("original_architecture", "neel"),
])
MAX_TOKENS = 480_000
HELDOUT_FRACTION = 0.10
SEED = 49
STEPS = 2000
BATCH = 32
LR = 3e-3
WARMUP = 150
WEIGHT_DECAY = 0.01


def log(lines, msg):
    print(msg, flush=True)
    lines.append(msg)


def git(*args):
    return subprocess.run(["git", "-C", REPO] + list(args), check=True, capture_output=True).stdout


def build_corpus():
    """Returns (tokens uint16 [N], n_train, sources list of (name, bytes, part))."""
    text, seen = [], set()
    for name in sorted(os.listdir(LICENSES)):
        real = os.path.realpath(os.path.join(LICENSES, name))
        if real in seen or not os.path.isfile(real):
            continue
        seen.add(real)
        with open(real, "rb") as f:
            text.append((LICENSES + "/" + os.path.basename(real), f.read()))
    files = git("ls-files", "-z", "*.md", "*.c", "*.h", "*.lua").decode().split("\0")
    code = []
    for path in sorted(p for p in files if p):
        data = git("show", "HEAD:" + path)
        (text if path.endswith(".md") else code).append((path, data))
    rng = random.Random(SEED)
    rng.shuffle(code)
    docs, total = list(text), sum(len(d) for _, d in text)
    for name, data in code:
        if total + len(data) > MAX_TOKENS:
            continue
        docs.append((name, data))
        total += len(data)
    rng.shuffle(docs)
    # The held-out part: whole documents from the end of the shuffled list.
    held, held_bytes = [], 0
    while docs and held_bytes < HELDOUT_FRACTION * total:
        held.insert(0, docs.pop())
        held_bytes += len(held[0][1])
    train = docs
    stream = b"".join(d for _, d in train) + b"".join(d for _, d in held)
    tokens = np.frombuffer(stream, dtype=np.uint8).astype(np.uint16)
    n_train = sum(len(d) for _, d in train)
    sources = [(n, len(d), "train") for n, d in train] + [(n, len(d), "held-out") for n, d in held]
    return tokens, n_train, sources


def init_params(gen):
    """GPT-2-like init: N(0, 0.02) matrices, output projections scaled by 1/sqrt(2 n_layers)."""
    dm, dmlp, dh, nh, V, L = (CFG[k] for k in ("d_model", "d_mlp", "d_head", "n_heads", "d_vocab", "n_layers"))
    std, std_out = 0.02, 0.02 / math.sqrt(2 * L)

    def randn(*shape, s):
        return (torch.randn(*shape, generator=gen) * s).requires_grad_()

    def const(v, *shape):
        return torch.full(shape, float(v)).requires_grad_()

    p = collections.OrderedDict()
    p["embed.W_E"] = randn(V, dm, s=std)
    p["pos_embed.W_pos"] = randn(CFG["n_ctx"], dm, s=std)
    for layer in range(L):
        pre = f"blocks.{layer}."
        p[pre + "ln1.w"], p[pre + "ln1.b"] = const(1, dm), const(0, dm)
        for m in ("W_Q", "W_K", "W_V"):
            p[pre + "attn." + m] = randn(nh, dm, dh, s=std)
        p[pre + "attn.W_O"] = randn(nh, dh, dm, s=std_out)
        for b in ("b_Q", "b_K", "b_V"):
            p[pre + "attn." + b] = const(0, nh, dh)
        p[pre + "attn.b_O"] = const(0, dm)
        p[pre + "ln2.w"], p[pre + "ln2.b"] = const(1, dm), const(0, dm)
        p[pre + "mlp.W_in"] = randn(dm, dmlp, s=std)
        p[pre + "mlp.b_in"] = const(0, dmlp)
        p[pre + "mlp.W_out"] = randn(dmlp, dm, s=std_out)
        p[pre + "mlp.b_out"] = const(0, dm)
    p["ln_final.w"], p["ln_final.b"] = const(1, dm), const(0, dm)
    p["unembed.W_U"] = randn(dm, V, s=std)
    p["unembed.b_U"] = const(0, V)
    return p


def windows(tokens, start, end, T):
    """Non-overlapping [BOS] + (T-1)-byte sequences covering tokens[start:end]."""
    body = T - 1
    n = (end - start) // body
    seq = torch.from_numpy(tokens[start:start + n * body].astype(np.int64)).view(n, body)
    return torch.cat([torch.full((n, 1), BOS, dtype=torch.int64), seq], 1)


def eval_loss(p64, seqs, batch=64):
    """Mean next-token loss in float64 over seqs [n, T] (every sequence weighs the same)."""
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(seqs), batch):
            s = seqs[i:i + batch]
            total += next_token_loss(forward(p64, CFG, s), s).item() * len(s)
    return total / len(seqs)


def unigram_loss(tokens, n_train):
    """Cross-entropy on the held-out bytes of the byte frequencies of the training part (add-one)."""
    counts = np.bincount(tokens[:n_train], minlength=256).astype(np.float64) + 1
    logp = np.log(counts / counts.sum())
    return float(-logp[tokens[n_train:]].mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", help="train on this tokens.npy instead of rebuilding the corpus")
    ap.add_argument("--n-train", type=int, help="with --tokens: how many leading tokens are the training part")
    ap.add_argument("--steps", type=int, default=STEPS)
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    lines = []
    t_start = time.time()

    if args.tokens:
        if args.n_train is None:
            ap.error("--tokens needs --n-train")
        tokens, n_train = np.load(args.tokens), args.n_train
        sources = [(args.tokens, len(tokens), "train + held-out")]
        head = "(from " + args.tokens + ")"
    else:
        tokens, n_train, sources = build_corpus()
        head = git("rev-parse", "HEAD").decode().strip()
    N, T = len(tokens), CFG["n_ctx"]
    log(lines, f"corpus: {N} tokens, training part {n_train}, held-out part {N - n_train}; repository HEAD {head}")

    gen = torch.Generator().manual_seed(SEED)
    p = init_params(gen)
    decay = [v for k, v in p.items() if v.dim() >= 2]
    no_decay = [v for k, v in p.items() if v.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}], lr=LR, betas=(0.9, 0.99))

    def lr_at(step):
        if step < WARMUP:
            return LR * (step + 1) / WARMUP
        frac = (step - WARMUP) / max(1, args.steps - WARMUP)
        return LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    train_tok = torch.from_numpy(tokens[:n_train].astype(np.int64))
    heldout = windows(tokens, n_train, N, T)
    train_eval = windows(tokens, 0, n_train, T)[:: max(1, (n_train // (T - 1)) // len(heldout))][: len(heldout)]
    log(lines, f"model: {dict(CFG)}; {sum(v.numel() for v in p.values())} parameters")
    log(lines, f"training: {args.steps} steps of {BATCH} x {T} tokens, AdamW lr {LR} (warmup {WARMUP}, cosine to "
               f"{LR * 0.1:g}), betas (0.9, 0.99), weight decay {WEIGHT_DECAY}, seed {SEED}, 2 threads")
    t0, c0 = time.time(), time.process_time()
    ewma = None
    for step in range(args.steps):
        offs = torch.randint(0, n_train - (T - 1), (BATCH,), generator=gen)
        body = train_tok[offs.unsqueeze(1) + torch.arange(T - 1)]
        seqs = torch.cat([torch.full((BATCH, 1), BOS, dtype=torch.int64), body], 1)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = next_token_loss(forward(p, CFG, seqs), seqs)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(p.values()), 1.0)
        opt.step()
        ewma = loss.item() if ewma is None else 0.98 * ewma + 0.02 * loss.item()
        if step % 250 == 0 or step == args.steps - 1:
            log(lines, f"step {step:5d}  loss {loss.item():.4f}  (ewma {ewma:.4f})  lr {lr_at(step):.2e}  "
                       f"{time.time() - t0:6.1f} s")
    train_secs, train_cpu = time.time() - t0, time.process_time() - c0

    p32 = collections.OrderedDict((k, v.detach().float().contiguous()) for k, v in p.items())
    p64 = collections.OrderedDict((k, v.double()) for k, v in p32.items())
    loss_train = eval_loss(p64, train_eval)
    loss_held = eval_loss(p64, heldout)
    uni = unigram_loss(tokens, n_train)
    log(lines, f"final loss (float64 eval of the saved fp32 weights): train {loss_train:.4f} on {len(train_eval)} "
               f"sequences, held-out {loss_held:.4f} on {len(heldout)} sequences; unigram baseline on held-out "
               f"{uni:.4f}; uniform log(257) = {math.log(257):.4f}")
    log(lines, f"training time {train_secs:.0f} s wall clock, {train_cpu:.0f} s process CPU time; total "
               f"{time.time() - t_start:.0f} s")

    os.makedirs(OUT, exist_ok=True)
    meta = {k: ("" if v is None else str(v).lower() if isinstance(v, bool) else str(v)) for k, v in CFG.items()
            if v is not None}
    write_safetensors(os.path.join(OUT, "model.safetensors"), p32, meta)
    write_json(os.path.join(OUT, "config.json"), CFG)
    tmp = os.path.join(OUT, "tokens.tmp.npy")
    np.save(tmp, tokens.astype(np.uint16))
    os.replace(tmp, os.path.join(OUT, "tokens.npy"))
    with open(os.path.join(OUT, "train_log.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")

    fix = heldout[:4]
    with torch.no_grad():
        fix_loss = next_token_loss(forward(p64, CFG, fix), fix).item()
    write_safetensors(FIXTURE, {"tokens": fix.to(torch.int32)}, {"loss": repr(fix_loss)})

    write_readme(N, n_train, sources, head, loss_train, loss_held, uni, (train_secs, train_cpu), len(train_eval),
                 len(heldout), sum(v.numel() for v in p.values()), args)
    size = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {OUT} ({size} bytes) and {FIXTURE} (loss on 4 held-out sequences {fix_loss:.6f})")


def write_readme(N, n_train, sources, head, loss_train, loss_held, uni, secs, n_tr, n_ho, n_params, args):
    text_bytes = sum(n for name, n, _ in sources if name.startswith(LICENSES) or name.endswith(".md"))
    cmd = "/usr/bin/python3 tests/reference/make_tiny_model.py"
    if args.tokens:
        cmd += f" --tokens {args.tokens} --n-train {args.n_train}"
    if args.steps != STEPS:
        cmd += f" --steps {args.steps}"
    src_lines = "\n".join(f"| `{name}` | {n} | {part} |" for name, n, part in sources)
    cfg_lines = ", ".join(f"{k} {v}" for k, v in CFG.items() if k in ("n_layers", "d_model", "d_mlp", "d_head",
                                                                       "n_heads", "n_ctx", "d_vocab"))
    readme = f"""# tiny-1l: a bundled one-layer GELU transformer over bytes

A tiny model of gelu-1l's family (TransformerLens's "neel" architecture: embedding plus
learned positional embedding, one block of LayerNorm, causal multi-head attention, LayerNorm,
an MLP with exact-erf GELU, then a final LayerNorm and the unembedding). It is here so that the
whole saefw pipeline (`experiments/quickstart.lua`) runs on a fresh machine without any download.
It is small and weak, but it is trained, not random.

- Shape: {cfg_lines}; {n_params} parameters, fp32.
- Tokens: one token per byte (0..255) plus BOS = 256. Sequences start with BOS, as in the seed's
  preprocessing (which overwrites position 0 with BOS).
- `model.safetensors`: the weights, with TransformerLens names (`embed.W_E`, `blocks.0.attn.W_Q`,
  ..., `unembed.b_U`), fp32, with the config keys as strings in `__metadata__`.
- `config.json`: the same keys as gelu-1l's Hugging Face config (`n_layers`, `d_model`, `d_mlp`,
  `d_head`, `n_heads`, `n_ctx`, `d_vocab`, `act_fn`, `normalization`, `ln_eps`), plus `bos_token_id`.
- `tokens.npy`: the corpus as uint16 byte values, shape [{N}], with no BOS. Tokens
  [0, {n_train}) are the training part and [{n_train}, {N}) the held-out part.
- `train_log.txt`: the training log.

## Results

| | loss (nats per token) |
|---|---|
| train (final weights, {n_tr} sequences of the training part) | {loss_train:.4f} |
| held-out ({n_ho} sequences, all of the held-out part) | **{loss_held:.4f}** |
| unigram baseline (training byte frequencies) on held-out | {uni:.4f} |
| uniform over 257 tokens, log(257) | {math.log(257):.4f} |

Losses are the mean next-token cross-entropy over positions 0..126 of BOS + 127-byte sequences,
computed in float64 on the saved fp32 weights. Training took {secs[0]:.0f} s of wall-clock time
({secs[1]:.0f} s of process CPU time) on 2 CPU threads, torch {torch.__version__}; the wall-clock
time grows when other jobs share the cores. The license texts overlap each other a lot (GPL-2/LGPL-2/LGPL-2.1,
GFDL-1.2/1.3, ...), so the held-out loss on them is lower than on truly new text.
`tests/test_model.c` checks that the C forward gives the same loss as torch on 4 held-out sequences.

## How it was made

    {cmd}

from the repository root (any working directory works), with Debian's python3-torch and
python3-numpy, at repository commit `{head}`. Seed {SEED}, {args.steps} AdamW steps of {BATCH}
sequences, lr {LR} with {WARMUP} warmup steps and cosine decay to {LR * 0.1:g}, weight decay
{WEIGHT_DECAY}, gradient clipping at 1. To retrain on exactly the shipped corpus:

    /usr/bin/python3 tests/reference/make_tiny_model.py --tokens models/tiny-1l/tokens.npy --n-train {n_train}

## Corpus

{N} bytes, about {100 * text_bytes / max(1, N):.0f}% English text and the rest code, every file freely redistributable:

- the license texts of Debian's `base-files` package in `/usr/share/common-licenses`. These are
  the licenses' own texts, whose verbatim copying and distribution is permitted (for example
  "Everyone is permitted to copy and distribute verbatim copies of this license document");
- this repository's own Markdown documents and C and Lua sources (saefw's own code), taken as
  committed at the commit above.

Files, in corpus order:

| file | bytes | part |
|---|---|---|
{src_lines}
"""
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write(readme)


if __name__ == "__main__":
    main()
