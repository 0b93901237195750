"""Load a saefw checkpoint folder with the real SAELens, where it is installed (not in CI: it needs
PyTorch, TransformerLens and sae_lens). What tests/test_saelens_cfg.c checks rule by rule, done
by SAELens itself:

  python3 tests/reference/check_saelens_load.py runs/<run>/final

SAE.load_from_disk must build a "standard" SAE from cfg.json unedited, its weights must equal the
file's, its forward pass must be relu((x - b_dec) @ W_enc + b_enc) @ W_dec + b_dec, and
sparsity.safetensors (when present) must be float32 [d_sae] within [-10, 0]. Exits non-zero on any
difference; exits 77 (skipped) when sae_lens cannot be imported.
"""
import os
import sys


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    folder = sys.argv[1]
    try:
        import sae_lens
        import torch
        from safetensors.torch import load_file
        from sae_lens import SAE
    except ImportError as e:
        print(f"skipped: {e}")
        return 77
    sae = SAE.load_from_disk(folder, device="cpu")
    sae = sae[0] if isinstance(sae, tuple) else sae
    print(f"sae_lens {getattr(sae_lens, '__version__', '?')}: {type(sae).__name__}, cfg {sae.cfg}")
    w = load_file(os.path.join(folder, "sae_weights.safetensors"))
    for k in ("W_enc", "W_dec", "b_enc", "b_dec"):
        if not torch.equal(getattr(sae, k).detach(), w[k]):
            print(f"FAIL {k} differs from the file")
            return 1
    x = torch.randn(64, w["W_enc"].shape[0])
    want = torch.relu((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]) @ w["W_dec"] + w["b_dec"]
    got = sae(x).detach()
    diff = (got - want).abs().max().item()
    print(f"forward pass: max |SAELens - seed formula| = {diff:.3g}")
    if not diff <= 1e-4:
        print("FAIL forward pass")
        return 1
    sp = os.path.join(folder, "sparsity.safetensors")
    if os.path.exists(sp):
        s = load_file(sp)["sparsity"]
        if s.dtype != torch.float32 or s.shape != (w["W_enc"].shape[1],) or not (s >= -10.0001).all() or not (s <= 0).all():
            print(f"FAIL sparsity: {s.dtype} {tuple(s.shape)} range [{s.min()}, {s.max()}]")
            return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
