#!/usr/bin/python3
"""The model host's forward in PyTorch at bench_model's shape, for a same-run comparison.

gelu-1l's shape (d_model 512, d_mlp 2048, 8 heads of 64, d_vocab 48262, n_ctx 1024), random weights
(normal, std 0.02, LayerNorm gains 1 and biases 0, as bench_model writes them), 32 sequences x 128
random tokens, float32 under torch.inference_mode: the forward stopping at blocks.0.mlp.hook_post (the
exact erf GELU), and the full forward with the mean next-token cross-entropy, written out as
TransformerLens computes them (LayerNorm, causal attention scaled by 1/sqrt(d_head), GELU, unembed).
Run with Debian's python3 (python3-torch):

    /usr/bin/python3 bench/torch_forward.py [--reps N] [--threads N]

Prints the fastest of N forwards (wall and process CPU time) and RESULT lines.
"""

import argparse
import math
import os
import time

import torch
import torch.nn.functional as F

D_MODEL, D_MLP, N_HEADS, D_HEAD, N_CTX, D_VOCAB = 512, 2048, 8, 64, 1024, 48262
B, T = 32, 128


def weights(gen):
    def rn(*shape):
        return torch.randn(*shape, generator=gen) * 0.02

    return {
        "W_E": rn(D_VOCAB, D_MODEL), "W_pos": rn(N_CTX, D_MODEL),
        "W_Q": rn(N_HEADS, D_MODEL, D_HEAD), "W_K": rn(N_HEADS, D_MODEL, D_HEAD),
        "W_V": rn(N_HEADS, D_MODEL, D_HEAD), "W_O": rn(N_HEADS, D_HEAD, D_MODEL),
        "W_in": rn(D_MODEL, D_MLP), "W_out": rn(D_MLP, D_MODEL), "W_U": rn(D_MODEL, D_VOCAB),
        "b_U": torch.zeros(D_VOCAB),
    }


def layernorm(x):
    # Gains 1 and biases 0, as bench_model's model has them.
    return F.layer_norm(x, (D_MODEL,), eps=1e-5)


def forward(w, tokens, full):
    x = w["W_E"][tokens] + w["W_pos"][:T]
    h = layernorm(x)
    q = torch.einsum("bpd,hde->bphe", h, w["W_Q"])
    k = torch.einsum("bpd,hde->bphe", h, w["W_K"])
    v = torch.einsum("bpd,hde->bphe", h, w["W_V"])
    scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(D_HEAD)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    pattern = scores.masked_fill(mask, float("-inf")).softmax(-1)
    z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
    x = x + torch.einsum("bqhe,hed->bqd", z, w["W_O"])
    post = F.gelu(layernorm(x) @ w["W_in"])
    if not full:
        return post
    x = x + post @ w["W_out"]
    logits = layernorm(x) @ w["W_U"] + w["b_U"]
    return F.cross_entropy(logits[:, :-1].reshape(-1, D_VOCAB), tokens[:, 1:].reshape(-1))


def best_of(fn, reps):
    fn()  # warm-up
    wall = cpu = float("inf")
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="timed forwards of each kind (default 3)")
    ap.add_argument("--threads", type=int, default=0,
                    help="threads (default: OPENBLAS_NUM_THREADS, else all cores, as saefw)")
    args = ap.parse_args()
    threads = args.threads or int(os.environ.get("OPENBLAS_NUM_THREADS", "0") or 0) or os.cpu_count()
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(1)
    w = weights(gen)
    tokens = torch.randint(D_VOCAB, (B, T), generator=gen)
    print("torch %s, %d threads; gelu-1l's shape, %d sequences x %d tokens" % (torch.__version__, threads, B, T))
    with torch.inference_mode():
        for name, full in (("hook_post", False), ("full", True)):
            wall, cpu, out = best_of(lambda: forward(w, tokens, full), args.reps)
            extra = " (loss %.3f)" % out.item() if full else ""
            print("  forward %-9s: %.3f s = %.0f tokens/s; CPU %.3f s = %.1f us per token%s"
                  % (name, wall, B * T / wall, cpu, 1e6 * cpu / (B * T), extra))
            print("RESULT forward=%s wall_s=%.4f tokens_per_s=%.1f cpu_us_per_token=%.2f"
                  % (name, wall, B * T / wall, 1e6 * cpu / (B * T)), flush=True)


if __name__ == "__main__":
    main()
