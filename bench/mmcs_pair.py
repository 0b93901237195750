#!/usr/bin/env python3
"""MMCS between two SAE checkpoints: for each decoder row of A, the largest cosine similarity with any
decoder row of B, averaged over A's live rows (rows with a nonzero norm). Used to compare runs that
differ in one setting (e.g. enc_dtype, BENCHMARKS.md). numpy only.

    python3 bench/mmcs_pair.py RUN_A/final RUN_B/final
"""
import json
import struct
import sys

import numpy as np


def w_dec(folder):
    with open(folder + "/sae_weights.safetensors", "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        info = header["W_dec"]
        if info["dtype"] != "F32":
            sys.exit("%s: W_dec is %s, expected F32" % (folder, info["dtype"]))
        start, end = info["data_offsets"]
        f.seek(8 + n + start)
        return np.frombuffer(f.read(end - start), dtype="<f4").reshape(info["shape"]).astype(np.float64)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: mmcs_pair.py CHECKPOINT_A CHECKPOINT_B")
    a, b = w_dec(sys.argv[1]), w_dec(sys.argv[2])
    if a.shape[1] != b.shape[1]:
        sys.exit("d_in differs: %d and %d" % (a.shape[1], b.shape[1]))
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    a, b = a[na > 0] / na[na > 0, None], b[nb > 0] / nb[nb > 0, None]
    best = (a @ b.T).max(axis=1)
    print("MMCS %.4f over %d rows (median %.4f, min %.4f; rows above 0.9: %.1f %%)"
          % (best.mean(), len(best), np.median(best), best.min(), 100 * (best > 0.9).mean()))


if __name__ == "__main__":
    main()
