#!/usr/bin/env python3
"""DPO parity fixture for the Rust tests: the sigmoid DPO loss (Rafailov et al.) of the LoRA
fixture model on two fixed preference pairs, and its gradient for every adapter tensor, in
float64 with a few lines of PyTorch.

Usage (from the repository root, after scripts/make_lora_fixtures.py):

    python scripts/make_dpo_fixture.py        # writes tests/fixtures/dpo/reference.safetensors

The policy is tests/fixtures/hf-tiny-gqa with the adapter tests/fixtures/lora/adapter (r 4,
alpha 8, B non-zero); the reference is the same base with the adapter switched off (what a
LoRA DPO run uses). Each of the P = 2 pairs is a chosen and a rejected row of T = 12 inputs
with explicit targets (no label shift): the prompt positions are -100, the reply positions
hold the next token. Written, for p in chosen/rejected:

  {p}_inputs, {p}_targets   I64 [2, 12]
  ref_logps                 F64 [2, 2]  (chosen, rejected) summed target log-probabilities
                                        under the reference
  policy_logps              F64 [2, 2]  the same under the policy
  beta                      F64 [1]
  loss                      F64 [1]     mean over pairs of −log σ(β·((πc − rc) − (πr − rr)))
  grad.<adapter tensor>     F64         d loss / d tensor, named as in adapter_model.safetensors
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import strict_float64  # noqa: E402

BASE = REPO / "tests" / "fixtures" / "hf-tiny-gqa"
ADAPTER = REPO / "tests" / "fixtures" / "lora" / "adapter"
SEED = 1357
P, T = 2, 12
PROMPT = [5, 7]
BETA = 0.5


def rows(gen):
    """One prompt per pair, two different replies after it."""
    ids = torch.randint(3, 96, (P, T + 1), generator=gen)
    other = ids.clone()
    for p, n in enumerate(PROMPT):
        other[p, n + 1:] = torch.randint(3, 96, (T - n,), generator=gen)
    out = []
    for x in (ids, other):
        inputs, targets = x[:, :-1].clone(), x[:, 1:].clone()
        for p, n in enumerate(PROMPT):
            targets[p, :n] = -100
        out.append((inputs, targets))
    return out


def logps(model, inputs, targets):
    logits = model(input_ids=inputs).logits
    lp = -F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="none")
    return lp.sum(-1)


def main() -> int:
    from peft import PeftModel
    from safetensors.torch import load_file, save_file
    from transformers import LlamaForCausalLM

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    base = LlamaForCausalLM.from_pretrained(BASE, dtype=torch.float64,
                                            attn_implementation="eager").eval()
    model = PeftModel.from_pretrained(base, ADAPTER, is_trainable=True).double()
    (ci, ct), (ri, rt) = rows(torch.Generator().manual_seed(SEED))
    with strict_float64(model.base_model.model):
        with torch.no_grad(), model.disable_adapter():
            rc, rr = logps(model, ci, ct), logps(model, ri, rt)
        pc, pr = logps(model, ci, ct), logps(model, ri, rt)
        z = BETA * ((pc - rc) - (pr - rr))
        loss = -F.logsigmoid(z).mean()
        loss.backward()
    tensors = {
        "chosen_inputs": ci.contiguous(),
        "chosen_targets": ct.contiguous(),
        "rejected_inputs": ri.contiguous(),
        "rejected_targets": rt.contiguous(),
        "ref_logps": torch.stack([rc, rr], dim=1).contiguous(),
        "policy_logps": torch.stack([pc, pr], dim=1).detach().contiguous(),
        "beta": torch.tensor([BETA], dtype=torch.float64),
        "loss": loss.detach().reshape(1),
    }
    saved = load_file(ADAPTER / "adapter_model.safetensors")
    n = 0
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = name.replace(".default.", ".")
            assert key in saved, key
            tensors["grad." + key] = p.grad.detach().contiguous()
            n += 1
    assert n == len(saved), (n, len(saved))
    out = REPO / "tests" / "fixtures" / "dpo"
    out.mkdir(parents=True, exist_ok=True)
    meta = {"seed": SEED, "beta": BETA, "torch": torch.__version__,
            "description": "sigmoid DPO loss, float64, reference = base with the adapter off"}
    save_file(tensors, out / "reference.safetensors",
              metadata={"reference": json.dumps(meta, sort_keys=True)})
    print(f"[dpo] loss {loss.item():.10f}, z {z.detach().tolist()}, {n} adapter gradients, "
          f"{(out / 'reference.safetensors').stat().st_size} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
