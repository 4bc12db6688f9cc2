#!/usr/bin/env python3
"""datatrove on the same corpus and rules as `tinyllama data bench`, for BENCHMARKS.md.

Runs, timing each stage with datatrove's LocalPipelineExecutor on --workers processes:

  1. read jsonl.zst -> GopherRepetitionFilter -> GopherQualityFilter -> C4QualityFilter
     -> FineWebQualityFilter -> write kept docs -> MinhashDedupSignature (5-gram, 14 x 8, 64-bit)
  2. MinhashDedupBuckets      3. MinhashDedupCluster
  4. read kept docs -> MinhashDedupFilter -> DocumentTokenizer (EOS after each doc, no shuffle)

(the same work as our scan -> merge -> emit -> pack), and prints documents/s and MB/s of input
text, in total and per worker, in the units `tinyllama data bench` prints.

Setup (once):
  python -m venv .venv && .venv/bin/pip install datatrove spacy tokenizers zstandard "xxhash<4" orjson
(datatrove splits English words with spaCy's rule-based blank tokenizer, no model download;
xxhash 4 no longer hashes str, which datatrove 0.10 passes it.)
"""

import argparse
import glob
import io
import json
import os
import shutil
import sys
import time


def count_corpus(paths, text_key):
    """Documents and UTF-8 text bytes in the input (outside the timed region)."""
    import zstandard

    docs = nbytes = 0
    for p in paths:
        with open(p, "rb") as f:
            stream = zstandard.ZstdDecompressor().stream_reader(f)
            for line in io.TextIOWrapper(stream, encoding="utf-8"):
                if not line.strip():
                    continue
                d = json.loads(line)
                docs += 1
                nbytes += len(d.get(text_key, "").encode("utf-8"))
    return docs, nbytes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True, help="directory holding the corpus")
    ap.add_argument("--glob", default="*.jsonl.zst", help="file pattern inside --input [*.jsonl.zst]")
    ap.add_argument("--text-key", default="text")
    ap.add_argument("--tokenizer", required=True, help="tokenizer.json")
    ap.add_argument("--eos-token", default="</s>")
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="processes [all cores]")
    ap.add_argument("--work", default="runs/bench-datatrove", help="scratch directory (emptied)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
    )
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.tokens import DocumentTokenizer
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    files = sorted(glob.glob(os.path.join(args.input, args.glob)))
    if not files:
        sys.exit(f"error: no files match {os.path.join(args.input, args.glob)}")
    docs, nbytes = count_corpus(files, args.text_key)
    if os.path.exists(args.work):
        shutil.rmtree(args.work)
    w = args.work
    cfg = MinhashConfig(hash_config=HashConfig(precision=64), n_grams=5, num_buckets=14, hashes_per_bucket=8)
    tasks = len(files)
    stages = [
        (
            "filter+signatures",
            tasks,
            [
                JsonlReader(args.input, glob_pattern=args.glob, text_key=args.text_key),
                GopherRepetitionFilter(),
                GopherQualityFilter(),
                C4QualityFilter(),
                FineWebQualityFilter(),
                JsonlWriter(f"{w}/filtered", compression=None),
                MinhashDedupSignature(output_folder=f"{w}/signatures", config=cfg),
            ],
        ),
        ("buckets", cfg.num_buckets, [MinhashDedupBuckets(f"{w}/signatures", f"{w}/buckets", config=cfg)]),
        ("cluster", 1, [MinhashDedupCluster(f"{w}/buckets", f"{w}/remove_ids", config=cfg)]),
        (
            "dedup-filter+tokenize",
            tasks,
            [
                JsonlReader(f"{w}/filtered", compression=None),
                MinhashDedupFilter(f"{w}/remove_ids"),
                DocumentTokenizer(
                    f"{w}/tokens",
                    tokenizer_name_or_path=args.tokenizer,
                    eos_token=args.eos_token,
                    shuffle_documents=False,
                ),
            ],
        ),
    ]
    timings = []
    total = time.perf_counter()
    for name, n, pipeline in stages:
        t = time.perf_counter()
        LocalPipelineExecutor(
            pipeline=pipeline,
            tasks=n,
            workers=min(args.workers, n),
            logging_dir=f"{w}/logs/{name}",
        ).run()
        timings.append((name, time.perf_counter() - t))
    seconds = time.perf_counter() - total

    per = args.workers
    res = {
        "tool": "datatrove",
        "workers": per,
        "documents": docs,
        "text_bytes": nbytes,
        "stages": {k: v for k, v in timings},
        "seconds": seconds,
        "docs_per_s": docs / seconds,
        "mb_per_s": nbytes / 1e6 / seconds,
        "docs_per_s_per_core": docs / seconds / per,
        "mb_per_s_per_core": nbytes / 1e6 / seconds / per,
    }
    print(f"workers {per}")
    for k, v in timings:
        print(f"  {k:<22} {v:9.2f} s")
    print(
        f"filter+dedup+tokenize  {seconds:8.2f} s  {res['docs_per_s']:10.0f} docs/s  {res['mb_per_s']:8.2f} MB/s"
        f"  per core: {res['docs_per_s_per_core']:8.0f} docs/s {res['mb_per_s_per_core']:7.2f} MB/s"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
