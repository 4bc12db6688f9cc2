#!/usr/bin/env python3
"""PyTorch side of the CPU training benchmark.

Builds a randomly initialised transformers LlamaForCausalLM from explicit config
arguments (defaults: our `demo-5m` preset) and measures, on random tokens:

  fwd_tok_s      forward only, under torch.no_grad()
  fwd_bwd_tok_s  forward + cross-entropy + backward
  step_tok_s     a full training step: forward, cross-entropy on explicit targets,
                 backward, clip_grad_norm_(1.0), AdamW step, zero_grad

Each figure is batch*seq tokens divided by the median time of --steps timed
iterations, taken after --warmup untimed ones. The loss is
F.cross_entropy(logits.view(-1, V), targets.view(-1)) with targets passed explicitly
(inputs = tokens[:, :-1], targets = tokens[:, 1:]); HF's internal label shifting is
not used.

Modes: f32 (plain float32) and bf16 (forward under torch.autocast("cpu",
dtype=torch.bfloat16); float32 master weights, gradients and optimizer state; the
loss is taken on the logits cast to float32). `--mode all` runs every mode in its own
child process so that each reports its own peak RSS (getrusage ru_maxrss of that
process; init_rss_mb is the same figure read right after the model is built, i.e.
the interpreter + libraries + weights baseline before any step ran).

Prints one JSON line per mode, e.g.
  {"impl": "pytorch", "mode": "f32", "threads": 2, "fwd_tok_s": ..., "fwd_bwd_tok_s": ...,
   "step_tok_s": ..., "peak_rss_mb": ..., "torch": "2.x", ...}

Examples:
  python scripts/pytorch_train_bench.py                       # demo-5m, f32 and bf16
  python scripts/pytorch_train_bench.py --mode f32 --threads 4 --steps 20
  python scripts/pytorch_train_bench.py --steps 2 --warmup 1  # smoke test
  python scripts/pytorch_train_bench.py --vocab 32000 --hidden 2048 --layers 22 \\
      --heads 32 --kv-heads 4 --intermediate 5632 --max-pos 2048 --seq 2048 --batch 1
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

MODES = ["f32", "bf16"]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description="PyTorch CPU training benchmark (transformers LlamaForCausalLM)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = ap.add_argument_group("model config (defaults: demo-5m)")
    g.add_argument("--vocab", type=int, default=4096)
    g.add_argument("--hidden", type=int, default=256)
    g.add_argument("--layers", type=int, default=4)
    g.add_argument("--heads", type=int, default=8)
    g.add_argument("--kv-heads", type=int, default=2)
    g.add_argument("--intermediate", type=int, default=704)
    g.add_argument("--rope-theta", type=float, default=10000.0)
    g.add_argument("--eps", type=float, default=1e-5)
    g.add_argument("--max-pos", type=int, default=256)
    g.add_argument("--tied", action="store_true", help="tie the head to the embedding")
    b = ap.add_argument_group("run")
    b.add_argument("--batch", type=int, default=8)
    b.add_argument("--seq", type=int, default=256)
    b.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: all cores available to the process)")
    b.add_argument("--mode", choices=MODES + ["all"], default="all")
    b.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
    b.add_argument("--steps", type=int, default=10, help="timed iterations per measurement")
    b.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--lr", type=float, default=4e-4)
    b.add_argument("--weight-decay", type=float, default=0.1)
    b.add_argument("--clip", type=float, default=1.0)
    args = ap.parse_args(argv)
    if args.threads is None:
        try:
            args.threads = len(os.sched_getaffinity(0))
        except AttributeError:
            args.threads = os.cpu_count() or 1
    if args.seq > args.max_pos:
        ap.error(f"--seq {args.seq} exceeds --max-pos {args.max_pos}")
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    return args


def timed(fn, warmup: int, steps: int) -> float:
    """Median seconds of fn() over `steps` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_mode(args, mode: str) -> dict:
    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        intermediate_size=args.intermediate,
        rope_theta=args.rope_theta,
        rms_norm_eps=args.eps,
        max_position_embeddings=args.max_pos,
        tie_word_embeddings=args.tied,
        bos_token_id=1,
        eos_token_id=2,
        use_cache=False,
        attn_implementation=args.attn,
    )
    model = LlamaForCausalLM(cfg).float().train()  # dropout is 0 in Llama anyway
    n_params = sum(p.numel() for p in model.parameters())
    V = args.vocab

    gen = torch.Generator().manual_seed(args.seed + 1)
    tokens = torch.randint(0, V, (args.batch, args.seq + 1), generator=gen)
    inputs = tokens[:, :-1].contiguous()
    targets = tokens[:, 1:].contiguous()
    n_tok = args.batch * args.seq
    # peak RSS so far: interpreter + torch/transformers + model + data, before any work
    init_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    if mode == "bf16":
        def autocast():
            return torch.autocast("cpu", dtype=torch.bfloat16)
    else:
        import contextlib

        def autocast():
            return contextlib.nullcontext()

    def loss_fn():
        with autocast():
            logits = model(input_ids=inputs, use_cache=False).logits
        return F.cross_entropy(logits.float().view(-1, V), targets.view(-1))

    def fwd():
        with torch.no_grad(), autocast():
            model(input_ids=inputs, use_cache=False).logits

    def fwd_bwd():
        model.zero_grad(set_to_none=True)  # trivial cost; keeps memory flat
        loss_fn().backward()

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=args.weight_decay)
    last = {}

    def step():
        loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        last["loss"] = loss.item()

    t_fwd = timed(fwd, args.warmup, args.steps)
    t_fb = timed(fwd_bwd, args.warmup, args.steps)
    model.zero_grad(set_to_none=True)
    t_step = timed(step, args.warmup, args.steps)

    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "impl": "pytorch",
        "mode": mode,
        "threads": args.threads,
        "fwd_tok_s": round(n_tok / t_fwd, 1),
        "fwd_bwd_tok_s": round(n_tok / t_fb, 1),
        "step_tok_s": round(n_tok / t_step, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "init_rss_mb": round(init_kb / 1024, 1),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "attn": args.attn,
        "batch": args.batch,
        "seq": args.seq,
        "params": n_params,
        "steps": args.steps,
        "warmup": args.warmup,
        "final_loss": round(last["loss"], 4),
    }


def main() -> int:
    args = parse_args()
    if args.mode != "all":
        print(json.dumps(run_mode(args, args.mode)), flush=True)
        return 0
    # one child process per mode: clean peak RSS and no cross-mode allocator state
    base = [a for a in sys.argv[1:]]
    rc = 0
    for mode in MODES:
        child = [sys.executable, os.path.abspath(__file__), *base, "--mode", mode]
        rc |= subprocess.run(child).returncode
    return rc


if __name__ == "__main__":
    sys.exit(main())
