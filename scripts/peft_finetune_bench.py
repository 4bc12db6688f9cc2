#!/usr/bin/env python3
"""transformers + peft side of the CPU fine-tuning benchmark.

The same model as `tinyllama bench finetune --preset P` (a randomly initialised
LlamaForCausalLM with the preset's shape), the same batch, sequence length and thread
count, and the same step on random tokens: forward, cross-entropy on explicit targets,
backward, clip_grad_norm_(1.0), AdamW over the trainable parameters, zero_grad.

  --method full   every weight trained
  --method lora   peft.get_peft_model with LoraConfig(r, lora_alpha=2r, lora_dropout=0.05,
                  target_modules = all seven projections); the base frozen

Each method runs in its own child process, so each reports its own peak RSS
(getrusage ru_maxrss) and init_rss_mb (the same figure right after the model is built:
interpreter, torch, transformers, peft and the weights). Prints one JSON line per method:
  {"impl": "transformers+peft", "method": "lora", "step_tok_s": ..., "peak_rss_mb": ..., ...}

Examples:
  python scripts/peft_finetune_bench.py --preset demo-5m
  python scripts/peft_finetune_bench.py --preset cpu-25m --method lora --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

# The shapes of our presets (crates/model/src/presets.rs): vocab, dim, layers, heads,
# kv heads, ffn, context.
PRESETS = {
    "micro-1m": (2048, 128, 2, 4, 2, 384, 256),
    "demo-5m": (4096, 256, 4, 8, 2, 704, 256),
    "cpu-25m": (8192, 512, 6, 8, 2, 1408, 512),
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="demo-5m")
    ap.add_argument("--method", choices=["full", "lora", "all"], default="all")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
    args = ap.parse_args(argv)
    if args.threads is None:
        args.threads = len(os.sched_getaffinity(0))
    return args


def run_method(args) -> dict:
    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    v, d, layers, heads, kv, ffn, ctx = PRESETS[args.preset]
    cfg = LlamaConfig(vocab_size=v, hidden_size=d, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv,
                      intermediate_size=ffn, max_position_embeddings=ctx,
                      tie_word_embeddings=False, use_cache=False,
                      attn_implementation=args.attn)
    model = LlamaForCausalLM(cfg).float().train()
    n_params = sum(p.numel() for p in model.parameters())
    extra = {"transformers": transformers.__version__}
    if args.method == "lora":
        import peft
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank,
                                                 lora_dropout=0.05, target_modules=TARGETS,
                                                 task_type="CAUSAL_LM"))
        # B starts at zero; give it values so the step computes what a trained adapter does.
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.01)
        model.train()
        extra["peft"] = peft.__version__
    trainable = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, v, (args.batch, args.seq + 1), generator=gen)
    inputs, targets = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    init_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    opt = torch.optim.AdamW(trainable, lr=1e-4, betas=(0.9, 0.999), weight_decay=0.0)

    def step():
        logits = model(input_ids=inputs, use_cache=False).logits
        loss = F.cross_entropy(logits.view(-1, v), targets.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    n_tok = args.batch * args.seq
    return {
        "impl": "transformers+peft" if args.method == "lora" else "transformers",
        "method": args.method,
        "preset": args.preset,
        "params": n_params,
        "trainable": sum(p.numel() for p in trainable),
        "batch": args.batch,
        "seq": args.seq,
        "threads": args.threads,
        "step_tok_s": round(n_tok / statistics.median(times), 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "init_rss_mb": round(init_kb / 1024, 1),
        "torch": torch.__version__,
        **extra,
    }


def main(argv=None):
    args = parse_args(argv)
    if args.method != "all":
        print(json.dumps(run_method(args)), flush=True)
        return
    base = [a for a in (argv if argv is not None else sys.argv[1:])]
    for m in ["full", "lora"]:
        out = subprocess.run([sys.executable, __file__, *base, "--method", m],
                             check=True, capture_output=True, text=True)
        sys.stdout.write(out.stdout)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
