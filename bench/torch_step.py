#!/usr/bin/python3
"""The seed recipe's SAE training step in PyTorch, timed at bench_sae's shapes and L0 levels.

One step: forward (x_cent = x - b_dec, acts = relu(x_cent @ W_enc + b_enc), x_hat = acts @ W_dec + b_dec),
loss = mean over rows of the summed squared error + l1_coeff * sum |acts|, backward, the decoder
projection and renormalisation, torch.optim.Adam's step. L0 is set through b_enc as bench_sae sets it:
minus the value that about L0 / d_sae of the pre-activations exceed, on random normal inputs and the
seed's initialisation. Run with Debian's python3 (python3-torch):

    /usr/bin/python3 bench/torch_step.py [--small] [--reps N] [--threads N]

Prints the fastest step of each configuration and RESULT lines that bench/compare.sh pairs with
bench_sae's.
"""

import argparse
import os
import time

import torch

SHAPES = [("small", 512, 4096, 1024), ("full", 2048, 16384, 4096)]


def step(params, opt, x, l1_coeff):
    W_enc, W_dec, b_enc, b_dec = params
    x_cent = x - b_dec
    acts = torch.relu(x_cent @ W_enc + b_enc)
    x_hat = acts @ W_dec + b_dec
    l2 = (x_hat - x).pow(2).sum(-1).mean(0)
    loss = l2 + l1_coeff * acts.abs().sum()
    loss.backward()
    with torch.no_grad():
        unit = W_dec / W_dec.norm(dim=-1, keepdim=True)
        W_dec.grad -= (W_dec.grad * unit).sum(-1, keepdim=True) * unit
        W_dec.data = unit
    opt.step()
    opt.zero_grad()
    return (acts > 0).float().sum(-1).mean().item()


def run_shape(name, d_in, d_sae, batch, reps):
    torch.manual_seed(49)
    W_enc = torch.nn.init.kaiming_uniform_(torch.empty(d_in, d_sae))
    W_dec = torch.nn.init.kaiming_uniform_(torch.empty(d_sae, d_in))
    W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True)
    x = torch.randn(batch, d_in)
    with torch.no_grad():
        pre = x @ W_enc
        sample = pre.flatten()[torch.randint(pre.numel(), (1 << 20,))].sort().values
        del pre
    print("\n== shape %s: d_in %d, d_sae %d, batch %d; %d threads; %d timed reps"
          % (name, d_in, d_sae, batch, torch.get_num_threads(), reps))
    print("%8s %8s | %8s %9s" % ("L0 want", "L0", "step s", "tokens/s"))
    for target in (32, 128, d_sae // 2):
        thresh = sample[min(int((1 - target / d_sae) * sample.numel()), sample.numel() - 1)].item()
        params = [t.clone().requires_grad_(True)
                  for t in (W_enc, W_dec, torch.full((d_sae,), -thresh), torch.zeros(d_in))]
        # A tiny learning rate keeps L0 where b_enc put it, as in bench_sae.
        opt = torch.optim.Adam(params, lr=1e-7, betas=(0.9, 0.99))
        l0 = step(params, opt, x, 3e-4)  # warm-up: allocates Adam's state
        dt = float("inf")
        for _ in range(reps):  # the fastest step, as bench_sae reports
            t0 = time.perf_counter()
            l0 = step(params, opt, x, 3e-4)
            dt = min(dt, time.perf_counter() - t0)
        print("%8d %8.1f | %8.3f %9.0f" % (target, l0, dt, batch / dt))
        print("RESULT shape=%s l0_target=%d l0=%.1f step_s=%.4f tokens_per_s=%.1f"
              % (name, target, l0, dt, batch / dt), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="only the small shape")
    ap.add_argument("--reps", type=int, default=0, help="timed steps per L0 (default: 3 small, 1 full)")
    ap.add_argument("--threads", type=int, default=0,
                    help="threads (default: OPENBLAS_NUM_THREADS, else all cores, as saefw)")
    args = ap.parse_args()
    threads = args.threads or int(os.environ.get("OPENBLAS_NUM_THREADS", "0") or 0) or os.cpu_count()
    torch.set_num_threads(threads)
    print("torch %s, %d threads" % (torch.__version__, torch.get_num_threads()))
    for name, d_in, d_sae, batch in SHAPES[:1] if args.small else SHAPES:
        run_shape(name, d_in, d_sae, batch, args.reps or (3 if name == "small" else 1))


if __name__ == "__main__":
    main()
