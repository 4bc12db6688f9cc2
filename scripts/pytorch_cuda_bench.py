#!/usr/bin/env python3
"""PyTorch side of the GPU training benchmark (`tinyllama bench train --device cuda`).

Builds a randomly initialised transformers LlamaForCausalLM with the same configuration as a
tinyllama preset (default tinyllama-1.1b: 22 layers, dim 2048, 32 heads / 4 KV heads, SwiGLU
5632, vocab 32000, untied) and times, on random tokens of `--seq` positions in micro-batches of
`--micro-batch` sequences:

  fwd_tok_s      forward only (no_grad), bf16 autocast
  fwd_bwd_tok_s  forward + cross-entropy + backward
  step_tok_s     a full step: forward, cross-entropy, backward, clip_grad_norm_(1.0),
                 AdamW(fused=True) step, zero_grad(set_to_none=True)

as the median of `--steps` timed iterations after `--warmup` untimed ones, each ending in
torch.cuda.synchronize(). Precision is the usual mixed precision: float32 master weights,
gradients and AdamW state; the forward pass under torch.autocast("cuda", dtype=torch.bfloat16);
attention through SDPA (`attn_implementation="sdpa"`, FlashAttention-2 kernels on A100/H100);
the loss on logits cast to float32. `--compile` also runs the step under torch.compile (the
result says whether compiling worked; a failure falls back to eager and is reported).

MFU uses the same FLOP count as tinyllama (6·N for the matmul parameters — the input embedding
excluded — plus 12·layers·seq·dim for attention, no causal discount) against the GPU's dense
bf16 peak (H100 SXM 989, H100 PCIe 756, A100 312 TFLOP/s; override with --peak-tflops).
Peak memory is torch.cuda.max_memory_allocated() (and _reserved()) over the whole run.

Prints a table and one JSON line (`--json` for the JSON line only). Run it on the same GPU and
with the same configuration as `tinyllama bench train --preset tinyllama-1.1b --device cuda
--seq 2048 --micro-batch 8`:

  python scripts/pytorch_cuda_bench.py --preset tinyllama-1.1b --seq 2048 --micro-batch 8
  python scripts/pytorch_cuda_bench.py --preset tinyllama-1.1b --seq 2048 --micro-batch 8 --compile
  python scripts/pytorch_cuda_bench.py --preset demo-5m --seq 256 --micro-batch 4 --steps 3  # smoke

Needs torch with CUDA and transformers (pip install torch transformers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

# The tinyllama presets (crates/model/src/presets.rs): vocab, dim, layers, heads, kv heads,
# ffn, context, tied.
PRESETS = {
    "tinyllama-1.1b": (32000, 2048, 22, 32, 4, 5632, 2048, False),
    "tinyllama-120m": (32000, 768, 12, 12, 1, 2048, 2048, False),
    "cpu-25m": (8192, 512, 6, 8, 2, 1408, 512, False),
    "demo-5m": (4096, 256, 4, 8, 2, 704, 256, False),
}

# Dense bf16 peak FLOP/s by device-name substring, first match wins (as metrics.rs does).
GPU_PEAKS = [
    ("A100", 312e12),
    ("H100 SXM", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("L40S", 362e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description="PyTorch GPU training benchmark (transformers LlamaForCausalLM, bf16 autocast, SDPA, fused AdamW)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--preset", default="tinyllama-1.1b", choices=sorted(PRESETS))
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--micro-batch", "--batch", dest="micro_batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10, help="timed iterations (median reported)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--compile", action="store_true", help="also try torch.compile on the model")
    ap.add_argument("--peak-tflops", type=float, default=None, help="override the GPU's dense bf16 peak")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    return ap.parse_args(argv)


def flops_per_token(vocab, dim, layers, heads, kv_heads, ffn, seq, tied):
    head_dim = dim // heads
    kv_dim = kv_heads * head_dim
    per_layer = 2 * dim + dim * dim * 2 + 2 * dim * kv_dim + 3 * dim * ffn
    n = vocab * dim + layers * per_layer + dim + (0 if tied else vocab * dim)
    matmul_params = n - (0 if tied else vocab * dim)
    return 6.0 * matmul_params + 12.0 * layers * seq * dim, n


def gpu_peak(name):
    for key, peak in GPU_PEAKS:
        if key in name:
            return peak
    return None


def build(args, torch):
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab, dim, layers, heads, kv, ffn, ctx, tied = PRESETS[args.preset]
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=dim,
        intermediate_size=ffn,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=max(ctx, args.seq),
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=tied,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(args.device)  # float32 master weights
    model.train()
    return model, cfg


def run(args):
    import torch
    import torch.nn.functional as F

    if not torch.cuda.is_available():
        sys.exit("pytorch_cuda_bench: torch sees no CUDA device")
    dev_name = torch.cuda.get_device_name(0)
    model, cfg = build(args, torch)
    vocab = cfg.vocab_size
    opt = torch.optim.AdamW(
        model.parameters(), lr=args.lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, fused=True
    )
    g = torch.Generator(device="cpu").manual_seed(1)
    tokens = torch.randint(0, vocab, (args.micro_batch, args.seq + 1), generator=g).to(args.device)
    inputs, targets = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

    compiled = "not requested"
    fwd_model = model
    if args.compile:
        try:
            fwd_model = torch.compile(model)
            compiled = "yes"
        except Exception as e:  # noqa: BLE001 - report and fall back
            compiled = f"failed: {type(e).__name__}: {e}"[:300]
            fwd_model = model

    def loss_fn():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = fwd_model(input_ids=inputs).logits
        return F.cross_entropy(logits.float().view(-1, vocab), targets.view(-1))

    def fwd():
        with torch.no_grad():
            loss_fn()

    def fwd_bwd():
        loss_fn().backward()
        opt.zero_grad(set_to_none=True)

    def step():
        loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def timed(f):
        for _ in range(args.warmup):
            f()
        torch.cuda.synchronize()
        ts = []
        for _ in range(max(1, args.steps)):
            t = time.perf_counter()
            f()
            torch.cuda.synchronize()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    torch.cuda.reset_peak_memory_stats()
    try:
        t_fwd = timed(fwd)
        t_fb = timed(fwd_bwd)
        t_step = timed(step)
    except Exception as e:  # noqa: BLE001 - a compile failure surfaces at the first call
        if args.compile and fwd_model is not model:
            compiled = f"failed at run time: {type(e).__name__}: {e}"[:300]
            fwd_model = model
            torch.cuda.reset_peak_memory_stats()
            t_fwd = timed(fwd)
            t_fb = timed(fwd_bwd)
            t_step = timed(step)
        else:
            raise

    vocab_, dim, layers, heads, kv, ffn, ctx, tied = PRESETS[args.preset]
    fpt, n_params = flops_per_token(vocab_, dim, layers, heads, kv, ffn, args.seq, tied)
    ntok = args.micro_batch * args.seq
    peak = args.peak_tflops * 1e12 if args.peak_tflops else gpu_peak(dev_name)
    step_flops = fpt * ntok / t_step
    out = {
        "impl": "pytorch",
        "device": dev_name,
        "preset": args.preset,
        "params": n_params,
        "micro_batch": args.micro_batch,
        "seq": args.seq,
        "fwd_tok_s": ntok / t_fwd,
        "fwd_bwd_tok_s": ntok / t_fb,
        "step_tok_s": ntok / t_step,
        "step_tflops": step_flops / 1e12,
        "mfu": (step_flops / peak) if peak else None,
        "peak_flops": peak,
        "peak_mem_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
        "peak_mem_reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
        "torch_compile": compiled,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    try:
        import transformers

        out["transformers"] = transformers.__version__
    except Exception:  # noqa: BLE001
        pass
    if not args.json:
        print(f"{args.preset} ({n_params} params), micro-batch {args.micro_batch} × {args.seq}, {dev_name}")
        print(f"forward            {out['fwd_tok_s']:>10.0f} tokens/s")
        print(f"forward+backward   {out['fwd_bwd_tok_s']:>10.0f} tokens/s")
        print(f"full AdamW step    {out['step_tok_s']:>10.0f} tokens/s ({out['step_tflops']:.1f} TFLOP/s)")
        if out["mfu"] is not None:
            print(f"MFU                {100 * out['mfu']:>10.1f} % of {peak / 1e12:.0f} TFLOP/s")
        print(
            f"peak GPU memory    {out['peak_mem_allocated_gib']:>10.2f} GiB allocated "
            f"({out['peak_mem_reserved_gib']:.2f} GiB reserved)"
        )
        print(f"torch.compile      {compiled}")
    print(json.dumps(out))


if __name__ == "__main__":
    run(parse_args())
