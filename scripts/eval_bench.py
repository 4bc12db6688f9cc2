#!/usr/bin/env python3
"""Python side of the zero-shot evaluation benchmark: items/s scoring the first N PIQA items
with lm-evaluation-harness's HF model class (when `lm_eval` is installed) or with a plain
transformers loop, on a Hugging Face model directory — the same items, prompts and model that
`tinyllama bench eval` times.

    python scripts/eval_bench.py --model DIR [--data ../shared/data/eval/piqa.jsonl]
        [--limit 200] [--batch-size 16] [--threads N] [--backend auto|harness|transformers]
        [--bos never|always|auto]

Backends:
  harness       lm_eval.models.huggingface.HFLM(pretrained=DIR, device="cpu",
                dtype="float32", batch_size=B).loglikelihood(...) on the (context,
                continuation) pairs the harness's piqa task would build. The dataset is not
                downloaded: the pairs come from --data, so only the model side is timed.
  transformers  one forward pass per (context, choice), no batching, joint encoding without
                BOS (harness 0.4), summed log-softmax of the continuation tokens.
  auto          harness if `import lm_eval` works, else transformers.

Both backends tokenise with tokenizer.json as written (what the Rust side uses), not
AutoTokenizer, which may rebuild a Llama tokenizer differently (transformers 5 does), so
both sides score the same token sequences.

Prints one JSON line: items, elapsed_s, items_per_s, acc, loglik_sum (compare with
`tinyllama bench eval --json`: equal to float round-off), backend, threads, versions.
Timing covers scoring only (model loading excluded), like the Rust side.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_eval_fixtures import foundry_to_hf, hf_item  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def piqa_items(path: Path, limit: int):
    """(requests, gold) for the first `limit` rows, HF or llm-foundry layout."""
    items = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if len(items) >= limit:
                break
            row = json.loads(line)
            if "query" in row:
                row = foundry_to_hf("piqa", row)
            reqs, gold, _ = hf_item("piqa", row)
            items.append((reqs, gold))
    return items


def load_tokenizer(model_dir: Path):
    """tokenizer.json exactly as written (the ids the Rust side uses). AutoTokenizer may
    rebuild a Llama tokenizer its own way (transformers 5 does), which changes some ids; with
    this the harness and the Rust side score identical token sequences."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"))
    cfg = json.loads((model_dir / "config.json").read_text())
    tok.pad_token = tok.convert_ids_to_tokens(0)  # only pads batches; never scored
    tok.bos_token = tok.convert_ids_to_tokens(cfg.get("bos_token_id", 1))
    tok.eos_token = tok.convert_ids_to_tokens(cfg.get("eos_token_id", 2))
    return tok


def adds_bos(tok, bos: str) -> bool:
    """--bos never/always, or auto: whatever the tokenizer's post-processor does."""
    if bos == "auto":
        return tok.encode("a")[:1] == [tok.bos_token_id] and len(tok.encode("a")) > len(
            tok.encode("a", add_special_tokens=False))
    return bos == "always"


def run_harness(model_dir: Path, items, batch: int, bos: str):
    import lm_eval
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    # add_bos_token None is the harness's own default (0.4.13: the tokenizer's default, i.e.
    # BOS for Llama tokenizers); pinned here so both sides follow --bos.
    add_bos = {"never": False, "always": True, "auto": None}[bos]
    lm = HFLM(pretrained=str(model_dir), tokenizer=load_tokenizer(model_dir), device="cpu",
              dtype="float32", batch_size=batch, add_bos_token=add_bos)
    requests = []
    for i, (reqs, _) in enumerate(items):
        for ctx, cont in reqs:
            requests.append(Instance(request_type="loglikelihood", doc={}, arguments=(ctx, cont),
                                     idx=len(requests), metadata=("piqa", i, 1)))
    t0 = time.perf_counter()
    out = lm.loglikelihood(requests, disable_tqdm=True)
    elapsed = time.perf_counter() - t0
    lls = [ll for ll, _ in out]
    return lls, elapsed, f"lm_eval {getattr(lm_eval, '__version__', '?')}"


def run_transformers(model_dir: Path, items, bos: str):
    from transformers import LlamaForCausalLM

    tok = load_tokenizer(model_dir)
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    prefix = [tok.bos_token_id] if adds_bos(tok, bos) else []
    max_len = model.config.max_position_embeddings
    lls = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for reqs, _ in items:
            for ctx, cont in reqs:
                c = enc(ctx)
                k = enc(ctx + cont)[len(c):]
                c = prefix + c
                inp = (c + k)[-(max_len + 1):][:-1]
                logits = model(input_ids=torch.tensor([inp])).logits[0]
                logp = torch.log_softmax(logits.float(), dim=-1)[len(inp) - len(k):]
                lls.append(logp.gather(1, torch.tensor(k)[:, None]).sum().item())
    return lls, time.perf_counter() - t0, "transformers loop"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "eval" / "piqa.jsonl")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--backend", choices=["auto", "harness", "transformers"], default="auto")
    ap.add_argument("--bos", choices=["never", "always", "auto"], default="never",
                    help="as tinyllama's --bos (default never, like tinyllama)")
    a = ap.parse_args()

    if a.threads:
        torch.set_num_threads(a.threads)
    backend = a.backend
    if backend == "auto":
        try:
            import lm_eval  # noqa: F401
            backend = "harness"
        except ImportError:
            backend = "transformers"
    items = piqa_items(a.data, a.limit)
    # Like the Rust side (and unlike the harness, which asserts), skip items with a
    # continuation that cannot be scored: no tokens, or longer than the model's context.
    from transformers import AutoConfig

    tok = load_tokenizer(a.model)
    max_len = AutoConfig.from_pretrained(a.model).max_position_embeddings

    def scorable(reqs):
        for ctx, cont in reqs:
            c = tok.encode(ctx.rstrip(), add_special_tokens=False)
            n = len(tok.encode(ctx + cont, add_special_tokens=False)) - len(c)
            if n <= 0 or n > max_len:
                return False
        return True

    n_read = len(items)
    items = [it for it in items if scorable(it[0])]
    if backend == "harness":
        lls, elapsed, what = run_harness(a.model, items, a.batch_size, a.bos)
    else:
        lls, elapsed, what = run_transformers(a.model, items, a.bos)
    correct, k = 0, 0
    for reqs, gold in items:
        these = lls[k:k + len(reqs)]
        k += len(reqs)
        correct += max(range(len(these)), key=lambda i: (these[i], -i)) == gold
    import transformers
    print(json.dumps({
        "model": str(a.model), "task": "piqa", "backend": what, "items": len(items),
        "skipped": n_read - len(items),
        "requests": len(lls), "elapsed_s": elapsed, "items_per_s": len(items) / elapsed,
        "acc": correct / len(items), "loglik_sum": sum(lls), "batch_size": a.batch_size,
        "bos": a.bos,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "transformers": transformers.__version__,
    }))


if __name__ == "__main__":
    main()
