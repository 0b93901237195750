#!/usr/bin/env python3
"""Write a synthetic feature-report data folder (the format `saefw features --out DIR` writes) for
developing and testing the viewer in report/ without the analysis engine.

    python3 tests/report/make_sample_report.py --out DIR [--d_sae 4096] [--seed 1] [--ids]

Writes DIR/data/summary.js, DIR/data/shard_NNNN.js, DIR/summary.json and, with --jsonl,
DIR/features.jsonl (the shard objects one per line; the engine's own export uses the field names
documented in docs/features.md). Deterministic for a given seed: plain python3, no third-party
modules. Some features are dead, and the contexts carry tokens that a viewer must escape or make
visible: HTML, entities, whitespace and control characters, an emoji, RTL text, invalid bytes as
\\xNN. --ids writes a report without a tokenizer (tokens as ids), as the engine does for a model
that has none.
"""
import argparse
import json
import math
import os
import random
import sys

WORDS = [" the", " of", " and", " to", " in", " a", " is", " that", " for", " it", " was", " on",
         " with", " he", " as", " you", " at", " be", " this", " by", " from", " they", " we", " or",
         "ing", "ed", "s", ".", ",", ":", ";", "(", ")", " =", " if", " return", " def", " class",
         " import", "self", " x", " y", " 1", " 2", " 0", "0", "1", " time", " people", " year",
         " Paris", " London", " water", " music", " river", " code", " data", " model", " feature",
         " neuron", " layer", "ly", "er", "tion", " un", "ness", " über", " café", " naïve"]
# The tokens a viewer must escape or make visible, each one token of the vocabulary.
TRICKY = ["<script>", "</script>", "&amp;", "<img src=x onerror=window.saefwXss=1>", " ", "  ",
          "\n", "\n\n", "\t", "\x00", "\r", "\x1b", "\u200b", "\U0001F600", "\U0001F9E0",
          " שלום", " مرحبا", "\\xe2", "\\x80\\x99", '"quoted"', " it's", "a<b", "}{", "\\n"]
VOCAB = WORDS + TRICKY


def sig(x, digits=4):
    """x rounded to `digits` significant digits, to keep the files small."""
    if x == 0 or not math.isfinite(x):
        return 0.0
    return round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))


def token_str(tok_id, ids):
    return str(tok_id) if ids else VOCAB[tok_id]


def make_example(rng, peak, before, after, ids, tricky):
    """One context: up to `before` tokens, the max token, up to `after` tokens; the acts rise
    towards the max token and are mostly zero elsewhere."""
    n_before = before if rng.random() > 0.15 else rng.randint(0, before)
    n = n_before + 1 + after
    toks = [rng.randrange(len(VOCAB)) for _ in range(n)]
    if tricky:
        # The feature's top context carries every tricky token, the HTML one at the max position.
        base = len(WORDS)
        for k in range(min(n, len(TRICKY))):
            toks[k] = base + k
        toks[n_before] = base + TRICKY.index("<script>")
        if n_before + 1 < n:
            toks[n_before + 1] = base + TRICKY.index("<img src=x onerror=window.saefwXss=1>")
    acts = []
    for k in range(n):
        if k == n_before:
            acts.append(sig(peak))
        elif rng.random() < 0.35:
            acts.append(sig(peak * rng.uniform(0.02, 0.9)))
        else:
            acts.append(0)
    return {"max": sig(peak), "pos": n_before, "tokens": [token_str(t, ids) for t in toks],
            "acts": acts}


def make_feature(rng, i, live, args, tricky):
    f = {"i": i, "density": 0.0, "max_act": 0.0, "mean_act": 0.0,
         "act_hist": {"edges": [], "counts": []}, "top_logits": [], "bottom_logits": [],
         "examples": [], "quantiles": []}
    vocab_ids = list(range(len(VOCAB)))
    rng.shuffle(vocab_ids)
    ups = sorted((rng.uniform(0.05, 1.6) for _ in range(10)), reverse=True)
    downs = sorted(-rng.uniform(0.05, 1.6) for _ in range(10))
    f["top_logits"] = [{"id": t, "str": token_str(t, args.ids), "value": sig(v)}
                       for t, v in zip(vocab_ids[:10], ups)]
    f["bottom_logits"] = [{"id": t, "str": token_str(t, args.ids), "value": sig(v)}
                          for t, v in zip(vocab_ids[10:20], downs)]
    if not live:
        return f
    log_d = rng.uniform(-5.5, -0.6) if rng.random() > 0.1 else rng.uniform(-0.6, -0.05)
    f["density"] = sig(10 ** log_d)
    f["max_act"] = sig(rng.uniform(0.3, 25.0))
    f["mean_act"] = sig(f["max_act"] * rng.uniform(0.05, 0.35))
    bins = 24
    edges = [sig(f["max_act"] * k / bins) for k in range(bins + 1)]
    counts = [int(4000 * math.exp(-5.0 * k / bins) * rng.uniform(0.6, 1.4)) for k in range(bins)]
    counts[-1] = max(counts[-1], 1)
    f["act_hist"] = {"edges": edges, "counts": counts}
    peaks = sorted((f["max_act"] * rng.uniform(0.55, 1.0) for _ in range(args.top_k - 1)),
                   reverse=True)
    peaks = [f["max_act"]] + peaks
    f["examples"] = [make_example(rng, p, args.context_before, args.context_after, args.ids,
                                  tricky and k == 0)
                     for k, p in enumerate(peaks)]
    for lo, hi in ((0.5, 0.75), (0.25, 0.5), (0.0, 0.25)):
        exs = [make_example(rng, f["max_act"] * rng.uniform(max(lo, 0.01), hi),
                            args.context_before, args.context_after, args.ids, False)
               for _ in range(2)]
        exs.sort(key=lambda e: -e["max"])
        f["quantiles"].append({"label": "%g-%g of max" % (lo, hi), "examples": exs})
    return f


def write_js(path, opening, obj):
    """A JSONP-style data file: `opening` (the callback call up to its last argument), obj, ");"."""
    text = opening + json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + ");\n"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="report folder to write (its data/ is replaced)")
    ap.add_argument("--d_sae", type=int, default=4096)
    ap.add_argument("--shard_size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--top_k", type=int, default=6)
    ap.add_argument("--context_before", type=int, default=8)
    ap.add_argument("--context_after", type=int, default=3)
    ap.add_argument("--ids", action="store_true", help="no tokenizer: tokens as ids")
    ap.add_argument("--jsonl", action="store_true", help="also write features.jsonl")
    args = ap.parse_args()
    if args.d_sae < 8 or args.shard_size < 1 or args.top_k < 1:
        sys.exit("make_sample_report: --d_sae must be at least 8, --shard_size and --top_k at least 1")

    rng = random.Random(args.seed)
    # Feature 0 is dead, feature 1 is live and carries the tricky tokens; about 12 % are dead.
    live = [i != 0 and (i == 1 or rng.random() > 0.12) for i in range(args.d_sae)]
    features = [make_feature(rng, i, live[i], args, i == 1) for i in range(args.d_sae)]

    edges = [sig(-7.0 + 0.25 * k) for k in range(29)]
    counts = [0] * (len(edges) - 1)
    for f in features:
        if f["density"] > 0:
            b = int((math.log10(f["density"]) - edges[0]) / 0.25)
            counts[min(max(b, 0), len(counts) - 1)] += 1
    dead = sum(1 for f in features if f["density"] == 0)
    n_shards = (args.d_sae + args.shard_size - 1) // args.shard_size
    one = int(args.d_sae * 0.03)
    ten = int(args.d_sae * 0.21)
    summary = {
        "schema": "saefw-features/1",
        "sae": {"checkpoint": "runs/sample-%d/final" % args.seed, "d_in": 512, "d_sae": args.d_sae,
                "hook_name": "blocks.0.mlp.hook_post", "model_name": "sample-model"},
        "tokens_analyzed": 2000000, "seed": args.seed, "context_before": args.context_before,
        "context_after": args.context_after, "top_k": args.top_k, "shard_size": args.shard_size,
        "n_shards": n_shards, "tokenizer": None if args.ids else "sample-bytes",
        "density_histogram": {"log10_edges": edges, "counts": counts, "dead": dead,
                              "dead_bin_log10": -10.0},
        "neuron_sparsity": None if args.ids else {"one_sparse": one, "ten_sparse": ten,
                                                  "dense": args.d_sae - one - ten},
        "features": [{"i": f["i"], "density": f["density"], "max_act": f["max_act"],
                      "mean_act": f["mean_act"],
                      "top_logits": [t["str"] for t in f["top_logits"][:3]]} for f in features],
    }

    data = os.path.join(args.out, "data")
    os.makedirs(data, exist_ok=True)
    for name in os.listdir(data):
        if name.startswith("shard_") or name == "summary.js":
            os.remove(os.path.join(data, name))
    write_js(os.path.join(data, "summary.js"), "saefwReport.summary(", summary)
    for s in range(n_shards):
        lo = s * args.shard_size
        shard = {"first": lo, "features": features[lo:lo + args.shard_size]}
        write_js(os.path.join(data, "shard_%04d.js" % s), "saefwReport.shard(%d, " % s, shard)
    with open(os.path.join(args.out, "summary.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, ensure_ascii=False, separators=(",", ":"))
        fh.write("\n")
    if args.jsonl:
        with open(os.path.join(args.out, "features.jsonl"), "w", encoding="utf-8") as fh:
            for f in features:
                fh.write(json.dumps(f, ensure_ascii=False, separators=(",", ":")) + "\n")
    print("sample report: %d features (%d dead), %d shards in %s" % (args.d_sae, dead, n_shards, data))


if __name__ == "__main__":
    main()
