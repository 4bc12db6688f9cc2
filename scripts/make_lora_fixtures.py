#!/usr/bin/env python3
"""LoRA parity fixtures for the Rust tests: a PEFT LoRA adapter on tests/fixtures/hf-tiny-gqa
and the logits, loss and adapter gradients transformers + peft compute with it.

Usage (from the repository root, with the packages of scripts/requirements-fixtures.txt and
peft installed):

    python scripts/make_lora_fixtures.py                     # writes tests/fixtures/lora/
    python scripts/make_lora_fixtures.py --check-adapter DIR # PEFT-loads an adapter we wrote

What is written (deterministic: fixed seeds, CPU only, float64 reference):

  lora/adapter/               peft `save_pretrained` of a LoRA adapter (r 4, alpha 8,
                              dropout 0, all seven projections) whose A and B were set to
                              seeded random values (B non-zero): adapter_config.json and
                              adapter_model.safetensors (f32).
  lora/reference.safetensors  input_ids, targets (I64 [2, 12]; the first positions of each
                              row and the last are -100, like a masked prompt), logits
                              (F64 [2, 12, 96]), loss (F64 [1], mean over the non-ignored
                              targets, no label shift), and grad.<adapter tensor name> (F64)
                              for every A and B, named as in adapter_model.safetensors.

--check-adapter DIR loads the base model with `PeftModel.from_pretrained(base, DIR)` and
prints the largest logit difference on the fixture batch against DIR/tinyllama_logits.
safetensors (what our engine computed with that adapter; written by the Rust test
`saved_adapter_for_peft` when TINYLLAMA_LORA_CHECK_DIR is set), or, without that file,
against the fixture's logits.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import strict_float64  # noqa: E402

BASE = REPO / "tests" / "fixtures" / "hf-tiny-gqa"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK, ALPHA = 4, 8
SEED = 2468
B, T = 2, 12
PROMPT = [4, 6]  # masked prompt length per row


def load_base(dtype=torch.float32):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(BASE, dtype=dtype, attn_implementation="eager").eval()


def batch():
    gen = torch.Generator().manual_seed(SEED + 1)
    ids = torch.randint(3, 96, (B, T + 1), generator=gen)
    inputs, targets = ids[:, :-1].clone(), ids[:, 1:].clone()
    for b, p in enumerate(PROMPT):
        targets[b, :p] = -100
    targets[:, -1] = -100
    return inputs, targets


def make(out: Path) -> None:
    import peft
    import transformers
    from safetensors.torch import load_file, save_file

    base = load_base()
    cfg = peft.LoraConfig(
        r=RANK,
        lora_alpha=ALPHA,
        lora_dropout=0.0,
        target_modules=TARGETS,
        task_type="CAUSAL_LM",
        bias="none",
    )
    model = peft.get_peft_model(base, cfg)
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    d = out / "lora"
    adir = d / "adapter"
    model.save_pretrained(adir)
    # base_model_name_or_path is an absolute path of this machine: make it relative; peft
    # writes target_modules in set order, which changes with PYTHONHASHSEED: sort it
    cpath = adir / "adapter_config.json"
    c = json.loads(cpath.read_text())
    c["base_model_name_or_path"] = "tests/fixtures/hf-tiny-gqa"
    c["target_modules"] = sorted(c["target_modules"])
    cpath.write_text(json.dumps(c, indent=2, sort_keys=True) + "\n")
    (adir / "README.md").unlink(missing_ok=True)

    inputs, targets = batch()
    model = model.double()
    with strict_float64(model.base_model.model):
        logits = model(input_ids=inputs).logits
        V = logits.shape[-1]
        loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-100)
        loss.backward()
    tensors = {
        "input_ids": inputs.to(torch.int64).contiguous(),
        "targets": targets.to(torch.int64).contiguous(),
        "logits": logits.detach().contiguous(),
        "loss": loss.detach().reshape(1),
    }
    saved = load_file(adir / "adapter_model.safetensors")
    n = 0
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = name.replace(".default.", ".")
            assert key in saved, key
            assert torch.equal(saved[key].double(), p.detach()), key
            tensors["grad." + key] = p.grad.detach().contiguous()
            n += 1
    assert n == len(saved) == 2 * 7 * 2, (n, len(saved))
    meta = {
        "base": "tests/fixtures/hf-tiny-gqa",
        "seed": SEED,
        "lora": {"r": RANK, "lora_alpha": ALPHA, "lora_dropout": 0.0, "target_modules": TARGETS},
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "description": "float64 (strict_float64) logits, mean loss over targets != -100 "
        "(no label shift) and d loss / d adapter tensor for the adapter in adapter/",
    }
    save_file(tensors, d / "reference.safetensors",
              metadata={"reference": json.dumps(meta, sort_keys=True)})
    print(f"[lora] loss {loss.item():.10f} (ln V = {math.log(V):.4f}, "
          f"{int((targets != -100).sum())} targets), {n} adapter tensors")
    total = 0
    for p in sorted(d.rglob("*")):
        if p.is_file():
            total += p.stat().st_size
            print(f"  {p.relative_to(REPO)}  {p.stat().st_size} B")
    print(f"  total {total} B")


def check(adir: Path) -> int:
    from peft import PeftModel
    from safetensors.torch import load_file

    model = PeftModel.from_pretrained(load_base(), adir).eval()
    inputs, _ = batch()
    with torch.no_grad():
        logits = model(input_ids=inputs).logits.double()
    ours = adir / "tinyllama_logits.safetensors"
    if ours.exists():
        want, what = load_file(ours)["logits"].double(), "tinyllama's logits"
    else:
        want = load_file(REPO / "tests/fixtures/lora/reference.safetensors")["logits"]
        what = "the fixture's logits"
    diff = (logits - want.reshape(logits.shape)).abs().max().item()
    print(f"PeftModel.from_pretrained({adir}) on hf-tiny-gqa: max |logit difference| "
          f"vs {what} = {diff:.3e} (logits up to {logits.abs().max().item():.2f})")
    return 0 if diff < 1e-4 else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures")
    ap.add_argument("--check-adapter", type=Path, metavar="DIR")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if args.check_adapter:
        return check(args.check_adapter)
    make(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
