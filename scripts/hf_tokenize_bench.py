#!/usr/bin/env python3
"""Tokenisation throughput of Hugging Face `tokenizers` (Python, batch encode on all cores) on
the benchmark corpus — the baseline for the "tokenize only" line of `tinyllama data bench`.

Reads the first --mb megabytes of document text into memory (not timed), then times
`Tokenizer.encode_batch_fast` (and `encode_batch`) without special tokens, best of --repeat.

Setup: python -m venv .venv && .venv/bin/pip install tokenizers zstandard
"""

import argparse
import glob
import io
import json
import os
import sys
import time


def read_texts(paths, text_key, limit_bytes):
    import zstandard

    texts, n = [], 0
    for p in paths:
        with open(p, "rb") as f:
            raw = zstandard.ZstdDecompressor().stream_reader(f) if p.endswith(".zst") else f
            for line in io.TextIOWrapper(raw, encoding="utf-8"):
                if not line.strip():
                    continue
                t = json.loads(line).get(text_key)
                if not isinstance(t, str):
                    continue
                texts.append(t)
                n += len(t.encode("utf-8"))
                if n >= limit_bytes:
                    return texts, n
    return texts, n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True, help="directory holding the corpus")
    ap.add_argument("--glob", default="*.jsonl.zst")
    ap.add_argument("--text-key", default="text")
    ap.add_argument("--tokenizer", required=True, help="tokenizer.json")
    ap.add_argument("--mb", type=float, default=100, help="text to tokenise, MB [100]")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    from tokenizers import Tokenizer

    files = sorted(glob.glob(os.path.join(args.input, args.glob)))
    if not files:
        sys.exit(f"error: no files match {os.path.join(args.input, args.glob)}")
    texts, nbytes = read_texts(files, args.text_key, int(args.mb * 1e6))
    tok = Tokenizer.from_file(args.tokenizer)
    cores = int(os.environ.get("RAYON_NUM_THREADS", os.cpu_count()))
    res = {"tool": "tokenizers (Python)", "cores": cores, "documents": len(texts), "text_bytes": nbytes}
    methods = ["encode_batch_fast", "encode_batch"] if hasattr(tok, "encode_batch_fast") else ["encode_batch"]
    for m in methods:
        fn = getattr(tok, m)
        best = float("inf")
        tokens = 0
        for _ in range(args.repeat):
            t = time.perf_counter()
            enc = fn(texts, add_special_tokens=False)
            best = min(best, time.perf_counter() - t)
            tokens = sum(len(e.ids) for e in enc)
        res[m] = {
            "seconds": best,
            "tokens": tokens,
            "mb_per_s": nbytes / 1e6 / best,
            "mb_per_s_per_core": nbytes / 1e6 / best / cores,
            "docs_per_s": len(texts) / best,
        }
        print(
            f"{m:<18} {best:8.2f} s  {len(texts) / best:10.0f} docs/s  {nbytes / 1e6 / best:8.2f} MB/s"
            f"  per core: {nbytes / 1e6 / best / cores:7.2f} MB/s  ({tokens} tokens, {cores} cores)"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
