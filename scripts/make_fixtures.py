#!/usr/bin/env python3
"""Regenerate the reference fixtures under tests/fixtures/ that the Rust tests read.

Usage (from the repository root, with the packages of
scripts/requirements-fixtures.txt installed):

    python scripts/make_fixtures.py                  # everything
    python scripts/make_fixtures.py --only hf-tiny-gqa tinystories-greedy
    python scripts/make_fixtures.py --shared /path/to/shared/data --out tests/fixtures

`--shared` defaults to <repo root>/../shared/data and must contain
models/tinystories-llama/ and tokenizers/llama2/ (read-only; nothing from there is
copied into the repository).

What is written (all of it deterministic: fixed seeds, CPU only):

  hf-tiny-gqa/       random tiny LlamaForCausalLM, untied head, 4 heads / 2 KV heads.
                     config.json + model.safetensors (f32, save_pretrained) and
                     reference.safetensors: input_ids, targets (I64 [B,T]), logits
                     (F64 [B,T,V]), loss (F64 [1]), grad.<param name> (F64) for every
                     parameter, all computed in float64.
  hf-tiny-tied/      the same with tied embeddings and 1 KV head (multi-query).
  tinystories-greedy.json
                     greedy continuations (f32, eager attention) of three prompts by the
                     shared tinystories-llama model, the last-position logits of the
                     first prompt and its mean NLL.
  llama2-sentencepiece-ids.json
                     ids of ~50 tricky texts under the Llama-2 SentencePiece model
                     (no BOS/EOS), plus what the HF tokenizer.json gives for each.

Float64 note: transformers' Llama code computes RMSNorm, the RoPE angles and the
eager softmax in float32 even when the model is float64 (`.to(torch.float32)`,
`softmax(..., dtype=torch.float32)`, `inv_freq` built in float32). For a reference
that is float64 throughout, those three spots are patched while the reference is
computed (see `strict_float64`). The result is cross-checked against an independent
few-line float64 implementation (must agree to ~1e-12) and against unpatched HF
float64 (agrees only to ~1e-7, the float32 round-off the patch removes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------------------
# tiny random HF models
# --------------------------------------------------------------------------------------

TINY_SPECS = {
    "hf-tiny-gqa": dict(seed=1234, n_kv_heads=2, tie=False),
    "hf-tiny-tied": dict(seed=4321, n_kv_heads=1, tie=True),
}
TINY_B, TINY_T = 2, 12
TINY_IGNORED_PER_ROW = 3  # besides the last position


def tiny_config(n_kv_heads: int, tie: bool):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=n_kv_heads,
        intermediate_size=48,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=tie,
        attn_implementation="eager",
    )


def init_weights_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Non-trivial, deterministic values for every parameter (in named_parameters order)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            if name.endswith("norm.weight"):
                val = 1.0 + 0.1 * noise  # RMSNorm gains: around 1, not all ones
            elif "embed_tokens" in name:
                val = 0.3 * noise
            elif name == "lm_head.weight":
                val = 0.2 * noise
            else:  # q/k/v/o/gate/up/down projections
                val = 0.15 * noise
            p.copy_(val.to(p.dtype))


@contextlib.contextmanager
def strict_float64(model):
    """Make HF's Llama forward float64 end to end (see the module docstring)."""
    from transformers.models.llama import modeling_llama as ml

    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    theta = float(cfg.rope_parameters["rope_theta"])
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))

    def rms_forward(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.variance_epsilon))

    def rope_forward(x, position_ids):
        freqs = position_ids[..., None].to(torch.float64) * inv_freq.to(x.device)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    def eager_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        k = ml.repeat_kv(key, module.num_key_value_groups)
        v = ml.repeat_kv(value, module.num_key_value_groups)
        w = torch.matmul(query, k.transpose(2, 3)) * scaling
        if attention_mask is not None:
            w = w + attention_mask
        w = F.softmax(w, dim=-1)  # in the input dtype
        out = torch.matmul(w, v).transpose(1, 2).contiguous()
        return out, w

    saved = (ml.LlamaRMSNorm.forward, ml.eager_attention_forward)
    rotary = model.model.rotary_emb
    ml.LlamaRMSNorm.forward = rms_forward
    ml.eager_attention_forward = eager_attention
    rotary.forward = rope_forward
    try:
        yield
    finally:
        ml.LlamaRMSNorm.forward, ml.eager_attention_forward = saved
        del rotary.forward


def independent_forward(sd: dict, cfg, input_ids: torch.Tensor) -> torch.Tensor:
    """A from-scratch float64 Llama forward used only to cross-check the fixture."""
    V, D = cfg.vocab_size, cfg.hidden_size
    H, KV = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = D // H
    eps = cfg.rms_norm_eps
    theta = float(cfg.rope_parameters["rope_theta"])
    B, T = input_ids.shape

    def norm(x, w):
        return w * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)

    # RoPE on (even, odd) = (i, i + hd/2) pairs, HF's rotate_half layout
    inv = theta ** (-torch.arange(0, hd // 2, dtype=torch.float64) * 2 / hd)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]  # [T, hd/2]
    cos, sin = ang.cos(), ang.sin()

    def rope(x):  # [B, h, T, hd]
        a, b = x[..., : hd // 2], x[..., hd // 2 :]
        return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)

    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    x = sd["model.embed_tokens.weight"][input_ids]
    for l in range(cfg.num_hidden_layers):
        p = f"model.layers.{l}."
        h = norm(x, sd[p + "input_layernorm.weight"])
        q = (h @ sd[p + "self_attn.q_proj.weight"].T).view(B, T, H, hd).transpose(1, 2)
        k = (h @ sd[p + "self_attn.k_proj.weight"].T).view(B, T, KV, hd).transpose(1, 2)
        v = (h @ sd[p + "self_attn.v_proj.weight"].T).view(B, T, KV, hd).transpose(1, 2)
        q, k = rope(q), rope(k)
        k = k.repeat_interleave(H // KV, dim=1)
        v = v.repeat_interleave(H // KV, dim=1)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, dim=-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, D)
        x = x + o @ sd[p + "self_attn.o_proj.weight"].T
        h = norm(x, sd[p + "post_attention_layernorm.weight"])
        g = h @ sd[p + "mlp.gate_proj.weight"].T
        u = h @ sd[p + "mlp.up_proj.weight"].T
        x = x + (F.silu(g) * u) @ sd[p + "mlp.down_proj.weight"].T
    x = norm(x, sd["model.norm.weight"])
    head = sd["model.embed_tokens.weight"] if cfg.tie_word_embeddings else sd["lm_head.weight"]
    return x @ head.T


def make_tiny(out_dir: Path, name: str, seed: int, n_kv_heads: int, tie: bool) -> None:
    from safetensors.torch import load_file, save_file
    from transformers import LlamaForCausalLM

    d = out_dir / name
    d.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(n_kv_heads, tie)
    torch.manual_seed(seed)  # only HF's own (overwritten) init draws from this
    model = LlamaForCausalLM(cfg).float().eval()
    gen = torch.Generator().manual_seed(seed)
    init_weights_(model, gen)
    if tie:
        assert model.lm_head.weight is model.model.embed_tokens.weight, "head not tied"
    model.save_pretrained(d, safe_serialization=True)

    # the saved f32 weights must be exactly the model's
    stored = load_file(d / "model.safetensors")
    names = [n for n, _ in model.named_parameters()]
    assert sorted(stored) == sorted(names), (sorted(stored), names)
    for n, p in model.named_parameters():
        assert stored[n].dtype == torch.float32 and torch.equal(stored[n], p.detach()), n

    # batch: random ids, explicit next-token targets with some ignored positions
    V = cfg.vocab_size
    input_ids = torch.randint(0, V, (TINY_B, TINY_T), generator=gen, dtype=torch.int64)
    targets = torch.full_like(input_ids, -100)
    targets[:, :-1] = input_ids[:, 1:]
    for b in range(TINY_B):
        drop = torch.randperm(TINY_T - 1, generator=gen)[:TINY_IGNORED_PER_ROW]
        targets[b, drop] = -100

    model = model.double()
    # unpatched HF float64 (float32 norm / rope / softmax inside) for comparison
    with torch.no_grad():
        hf_plain = model(input_ids=input_ids, use_cache=False).logits

    with strict_float64(model):
        logits = model(input_ids=input_ids, use_cache=False).logits
        loss = F.cross_entropy(logits.view(-1, V), targets.view(-1), ignore_index=-100)
        model.zero_grad(set_to_none=True)
        loss.backward()

    sd64 = {n: p.detach() for n, p in model.named_parameters()}
    ref = independent_forward(sd64, cfg, input_ids)
    diff_indep = (ref - logits.detach()).abs().max().item()
    diff_plain = (hf_plain - logits.detach()).abs().max().item()
    assert diff_indep < 1e-10, f"independent f64 forward disagrees: {diff_indep}"

    tensors = {
        "input_ids": input_ids.contiguous(),
        "targets": targets.contiguous(),
        "logits": logits.detach().contiguous(),
        "loss": loss.detach().reshape(1).contiguous(),
    }
    gnorm2 = 0.0
    for n, p in model.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float64, n
        gn = p.grad.norm().item()
        assert gn > 0 and math.isfinite(gn), f"zero/non-finite grad for {n}"
        gnorm2 += gn * gn
        tensors[f"grad.{n}"] = p.grad.detach().contiguous()
    import transformers

    meta = {
        "description": "float64 reference (strict: norm/rope/softmax in f64) for the f32 "
        "weights in model.safetensors; loss = F.cross_entropy(logits.view(-1,V), "
        "targets.view(-1), ignore_index=-100), mean over non-ignored positions",
        "seed": str(seed),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "max_abs_diff_vs_unpatched_hf_f64": f"{diff_plain:.3e}",
    }
    # one metadata key: safetensors stores metadata as a hash map, so several keys would
    # be written in a random order and the file would differ from run to run
    save_file(tensors, d / "reference.safetensors",
              metadata={"reference": json.dumps(meta, sort_keys=True)})

    back = load_file(d / "reference.safetensors")
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    n_valid = int((targets != -100).sum())
    print(
        f"[{name}] loss {loss.item():.10f} (ln V = {math.log(V):.4f}, {n_valid} targets), "
        f"grad norm {math.sqrt(gnorm2):.6f} over {len(names)} params; "
        f"|logits - independent f64| {diff_indep:.2e}, |logits - unpatched HF f64| {diff_plain:.2e}"
    )


# --------------------------------------------------------------------------------------
# tinystories greedy generation
# --------------------------------------------------------------------------------------

GREEDY_PROMPTS = [
    "Once upon a time, there was a little",
    "The cat and the dog",
    "Lily wanted to",
]
GREEDY_NEW_TOKENS = 40


def make_greedy(out_dir: Path, shared: Path) -> None:
    import transformers
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, LlamaForCausalLM

    mdir = shared / "models" / "tinystories-llama"
    tok = AutoTokenizer.from_pretrained(mdir)
    raw = Tokenizer.from_file(str(mdir / "tokenizer.json"))
    model = LlamaForCausalLM.from_pretrained(
        mdir, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    assert model.dtype == torch.float32

    cases = []
    for i, prompt in enumerate(GREEDY_PROMPTS):
        ids = tok(prompt, add_special_tokens=True).input_ids
        assert ids[0] == model.config.bos_token_id, ids
        # what the Rust side (tokenizer.json through the tokenizers crate) gives
        assert raw.encode(prompt).ids == ids, (raw.encode(prompt).ids, ids)
        x = torch.tensor([ids], dtype=torch.int64)
        with torch.no_grad():
            out = model.generate(
                input_ids=x,
                attention_mask=torch.ones_like(x),
                do_sample=False,
                max_new_tokens=GREEDY_NEW_TOKENS,
                pad_token_id=model.config.eos_token_id,
                output_scores=True,
                return_dict_in_generate=True,
            )
        new_ids = out.sequences[0, len(ids):].tolist()
        # greedy on raw logits: no logits processors are active, check that
        margins = []
        for s, nid in zip(out.scores, new_ids):
            top = torch.topk(s[0].float(), 2)
            assert top.indices[0].item() == nid
            margins.append((top.values[0] - top.values[1]).item())
        case = {
            "prompt": prompt,
            "prompt_ids": ids,
            "new_ids": new_ids,
            "text": tok.decode(new_ids, skip_special_tokens=True),
            "stopped_at_eos": bool(new_ids and new_ids[-1] == model.config.eos_token_id),
            "min_top2_logit_margin": round(min(margins), 6),
            "top2_logit_margins": [round(m, 5) for m in margins],
        }
        if i == 0:
            with torch.no_grad():
                logits = model(input_ids=x, use_cache=False).logits[0]  # [n, V] f32
            lp = torch.log_softmax(logits.double(), dim=-1)
            nll = -lp[:-1].gather(1, x[0, 1:, None]).mean().item()
            case["last_logits"] = [float(f"{v:.9g}") for v in logits[-1].tolist()]
            case["prompt_mean_nll"] = nll
            case["prompt_nll_tokens"] = len(ids) - 1
        cases.append(case)
        print(f"[tinystories-greedy] {prompt!r} -> {case['text']!r} "
              f"({len(new_ids)} new, min margin {case['min_top2_logit_margin']})")
    print(f"[tinystories-greedy] prompt 0 mean NLL {cases[0]['prompt_mean_nll']:.6f} "
          f"over {cases[0]['prompt_nll_tokens']} tokens")

    doc = {
        "model": "shared/data/models/tinystories-llama",
        "dtype": "float32",
        "attn_implementation": "eager",
        "generate": {"do_sample": False, "max_new_tokens": GREEDY_NEW_TOKENS},
        "notes": "prompt_ids = HF tokenizer with add_special_tokens=True (BOS first); "
        "new_ids = continuation only; text = decode(new_ids, skip_special_tokens=True); "
        "last_logits = final-position logits of the prompt forward (first case only); "
        "prompt_mean_nll = mean -ln p(prompt_ids[t+1] | prompt_ids[..=t]) over the "
        "prompt_nll_tokens predicted tokens; top2_logit_margins = per generated step, "
        "best minus second-best logit (small values are near-ties where an f32 "
        "implementation may legitimately pick the other token); min_top2_logit_margin "
        "= their minimum",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cases": cases,
    }
    path = out_dir / "tinystories-greedy.json"
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------
# Llama-2 SentencePiece ids
# --------------------------------------------------------------------------------------

SP_TEXTS = [
    "",
    " ",
    "   ",
    "\t",
    "\n",
    "A",
    "Hello world",
    " Hello world",
    "Hello world ",
    "Hello   world",
    "   three leading spaces, then words",
    "two trailing spaces  ",
    "first line\nsecond line",
    "\n\nstarts after two newlines",
    "paragraph one\n\n\nparagraph two",
    "ends with a newline\n",
    "\r\nwindows style\r\nline endings\r\n",
    "name\tage\tcity\nAnna\t31\tGraz",
    "The bus leaves at 7:45 and costs 2.50, or 12 for a week.",
    "0 1 9 10 99 100 1234 56789 3.14159 -273 1e-5 1,000,000",
    "Is it done?! Almost... wait; not yet: (see below) [1] {x} <y>",
    "She said \"maybe\" and he said 'never' with a `grin`.",
    "Write to the.owner@mail.test or open http://a.test/x?y=1&z=two#top",
    "Café au lait, déjà vu, naïve piñata, Ångström in Zürich",
    "Łódź, Øresund, Şişli, Čeština, Ærø and Þórshöfn",
    "今日は雨が降っているので、家で本を読みます。",
    "我每天早上在公园里散步。",
    "저는 매일 아침 커피를 마셔요.",
    "Кошка спит на тёплом диване.",
    "Η γάτα κοιμάται στον καναπέ.",
    "القطة نائمة على الأريكة",
    "बिल्ली सोफ़े पर सो रही है।",
    "Smiles 😀, rockets 🚀, thumbs 👍🏽 and a family 👨\u200d👩\u200d👧 emoji",
    "flag 🇦🇹 and a lone keycap 7\ufe0f\u20e3",
    "def area(w, h):\n    if w < 0:\n        raise ValueError(w)\n    return w * h\n",
    "fn main() {\n\tlet v: Vec<u8> = vec![1, 2, 3];\n\tprintln!(\"{:?}\", v);\n}",
    "{\"key\": [1, 2, {\"nested\": null}], \"ok\": true}",
    "unbelievablyoverengineeredtokenizerstresstestingwordwithoutanyspacesatall",
    "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
    "camelCaseName snake_case_name kebab-case-name SHOUTING_CASE",
    "non\u00a0breaking space, zero\u200bwidth space, soft\u00adhyphen",
    "∑ x² ≤ ∞ while α + β ≠ γ, and 6 × 7 ÷ 2 ≈ 21",
    "$4.99, €12,50, £7, ¥800 and ₹150",
    "fancy 𝔣𝔯𝔞𝔨𝔱𝔲𝔯 letters and ᚠᚢᚦ runes",
    "<s> and </s> and <unk> written as plain text",
    "....!!!???---___***",
    "  \t mixed \t whitespace \t ",
    "Tabs\tand\ttrailing\ttab\t",
]


def make_sp(out_dir: Path, shared: Path) -> None:
    import sentencepiece as spm
    from tokenizers import Tokenizer

    tdir = shared / "tokenizers" / "llama2"
    sp = spm.SentencePieceProcessor(model_file=str(tdir / "tokenizer.model"))
    hf = Tokenizer.from_file(str(tdir / "tokenizer.json"))
    cases, n_diff = [], 0
    for text in SP_TEXTS:
        ids = sp.encode(text, out_type=int, add_bos=False, add_eos=False)
        hf_ids = hf.encode(text, add_special_tokens=False).ids
        case = {
            "text": text,
            "ids": ids,
            "pieces": [sp.id_to_piece(i) for i in ids],
            "hf_ids": hf_ids,
            "hf_matches_sp": hf_ids == ids,
            "sp_decode_roundtrip": sp.decode(ids) == text,
        }
        if hf_ids != ids:
            n_diff += 1
            print(f"[llama2-sp] HF tokenizer.json differs for {text!r}:\n"
                  f"    sp {ids}\n    hf {hf_ids}")
        cases.append(case)
    doc = {
        "tokenizer_model": "shared/data/tokenizers/llama2/tokenizer.model",
        "notes": "ids = sentencepiece encode(text) without BOS/EOS; hf_ids = the Python "
        "tokenizers library on tokenizer.json with add_special_tokens=False; "
        "hf_matches_sp tells whether the two agree; sp_decode_roundtrip whether "
        "sp.decode(ids) gives back the text exactly",
        "sentencepiece": spm.__version__,
        "tokenizers": __import__("tokenizers").__version__,
        "vocab_size": sp.get_piece_size(),
        "cases": cases,
    }
    path = out_dir / "llama2-sentencepiece-ids.json"
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"[llama2-sp] {len(cases)} texts, {n_diff} where tokenizer.json != sentencepiece")


# --------------------------------------------------------------------------------------

ALL = ["hf-tiny-gqa", "hf-tiny-tied", "tinystories-greedy", "llama2-sp"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data",
                    help="shared data folder (default: <repo>/../shared/data)")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures")
    ap.add_argument("--only", nargs="+", choices=ALL, default=ALL)
    args = ap.parse_args()

    torch.set_num_threads(1)  # small work; also keeps float results run-to-run stable
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        if name in TINY_SPECS:
            make_tiny(args.out, name, **TINY_SPECS[name])
        elif name == "tinystories-greedy":
            make_greedy(args.out, args.shared)
        elif name == "llama2-sp":
            make_sp(args.out, args.shared)

    print("written:")
    total = 0
    for p in sorted(args.out.rglob("*")):
        if p.is_file():
            total += p.stat().st_size
            print(f"  {p.relative_to(REPO) if p.is_relative_to(REPO) else p}  {p.stat().st_size} B")
    print(f"  total {total} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
