#!/usr/bin/env python3
"""Reference log-likelihoods for the zero-shot task scorer: tests/fixtures/eval-loglik.json.

Usage (from the repository root, packages of scripts/requirements-fixtures.txt installed):

    python scripts/make_eval_fixtures.py
    python scripts/make_eval_fixtures.py --shared /path/to/shared/data --rows 3

For every task, a few items are taken from the files in <shared>/eval (the first `--rows`
rows, plus for HellaSwag the first WikiHow record and the first with a bracket span) and one
Hugging Face-layout row written for this fixture (stored inline). Each item's prompts are
built here the way lm-evaluation-harness builds them, independently of the Rust code: HF rows
directly; llm-foundry rows and HellaSwag 6-line records by first recovering the HF fields
(see docs/eval.md for those conventions). Every (context, continuation) pair is then
tokenised under three policies and scored with transformers on the shared tinystories-llama
model in float64 (strict_float64 from make_fixtures.py):

  joint        harness 0.4 `_encode_pair`: trailing context whitespace moved to the
               continuation, continuation = enc(context + continuation)[len(enc(context)):],
               add_special_tokens=False
  separate     enc(context) and enc(continuation) each with add_special_tokens=False
  joint_bos    `joint` with BOS before the context (add_bos_token=True)

For each: the ids (tokenizer.json through the `tokenizers` library, which is what the Rust
side uses), the summed natural-log probability of the continuation and whether greedy decoding
reproduces it (argmax at every continuation position). Where transformers' AutoTokenizer gives
other ids, they are stored too (`transformers_ids`). transformers 5 rebuilds this Llama tokenizer
(legacy=False) itself rather than running tokenizer.json: it adds no SentencePiece dummy prefix
before a leading space (a continuation encoded on its own, `separate`, loses a `▁` token), and it
drops characters the 2,048-piece vocabulary cannot spell where tokenizer.json gives `<unk>`. Rows from the shared files are
referenced by file and line only; their text is not copied into the fixture (the prompts are,
so that prompt construction is checked apart from scoring).
"""

from __future__ import annotations

import argparse
import bz2
import json
import re
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import strict_float64  # noqa: E402

POLICIES = [
    {"name": "joint", "bos": False, "encoding": "joint"},
    {"name": "separate", "bos": False, "encoding": "separate"},
    {"name": "joint_bos", "bos": True, "encoding": "joint"},
]

FILES = {
    "hellaswag": "hellaswag_val_full.txt.bz2",
    "openbookqa": "openbook_qa.jsonl",
    "winogrande": "winogrande.jsonl",
    "arc_easy": "arc_easy.jsonl",
    "arc_challenge": "arc_challenge.jsonl",
    "boolq": "boolq.jsonl",
    "piqa": "piqa.jsonl",
    "lambada": "lambada_openai.jsonl",
}

# One HF-layout row per task, written for this fixture.
INLINE = {
    "piqa": {"goal": "How do you keep cut apples from browning?",
             "sol1": "Brush the slices with lemon juice.",
             "sol2": "Brush the slices with motor oil.", "label": 0},
    "arc_easy": {"id": "t1", "question": "Which of these gives off its own light?",
                 "choices": {"text": ["the Sun", "a rock", "a shadow", "a spoon"],
                             "label": ["A", "B", "C", "D"]}, "answerKey": "A"},
    "arc_challenge": {"id": "t2", "question": "What do green plants take from the air to make food?",
                      "choices": {"text": ["oxygen", "nitrogen", "carbon dioxide", "helium"],
                                  "label": ["1", "2", "3", "4"]}, "answerKey": "3"},
    "openbookqa": {"id": "t3", "question_stem": "A magnet will stick to",
                   "choices": {"text": ["a steel nail", "a wooden block", "a glass cup", "a paper bag"],
                               "label": ["A", "B", "C", "D"]}, "answerKey": "A"},
    "boolq": {"question": "is the moon bigger than the earth",
              "passage": "The Moon is the only natural satellite of the Earth. Its diameter is about a quarter of the Earth's.",
              "answer": False},
    "hellaswag": {"activity_label": "Making a sandwich",
                  "ctx_a": "A woman puts two slices of bread on a plate.", "ctx_b": "she",
                  "endings": ["spreads butter on the bread [title] and adds  cheese.",
                              "throws the plate into the lake.", "starts to run a marathon.",
                              "paints the bread blue."], "label": "0"},
    "winogrande": {"sentence": "Tom lent Sam his umbrella because _ was going out in the rain.",
                   "option1": "Tom", "option2": "Sam", "answer": "2"},
    "lambada": {"text": "She found a small silver key in the box and tried it in every lock in the house, but no door would open for the key"},
}


# ---- prompts, as the harness builds them from HF fields --------------------------------------

def hs_preprocess(text: str) -> str:
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def hf_item(task: str, r: dict):
    """(list of (context, continuation), gold, choice strings) for an HF row."""
    if task == "piqa":
        ctx, choices, gold = f"Question: {r['goal']}\nAnswer:", [r["sol1"], r["sol2"]], int(r["label"])
    elif task in ("arc_easy", "arc_challenge"):
        ctx = f"Question: {r['question']}\nAnswer:"
        choices = r["choices"]["text"]
        gold = r["choices"]["label"].index(r["answerKey"])
    elif task == "openbookqa":
        ctx, choices = r["question_stem"], r["choices"]["text"]
        gold = r["choices"]["label"].index(r["answerKey"].strip())
    elif task == "boolq":
        ctx = f"{r['passage']}\nQuestion: {r['question']}?\nAnswer:"
        choices, gold = ["no", "yes"], int(r["answer"])
    elif task == "hellaswag":
        ctx = hs_preprocess(r["activity_label"] + ": " + r["ctx_a"] + " " + r["ctx_b"].capitalize())
        choices, gold = [hs_preprocess(e) for e in r["endings"]], int(r["label"])
    elif task == "winogrande":
        i = r["sentence"].index("_")
        contexts = [r["sentence"][:i] + o for o in (r["option1"], r["option2"])]
        rest = r["sentence"][i + 1:].strip()
        return [(c, " " + rest) for c in contexts], int(r["answer"]) - 1, contexts
    elif task == "lambada":
        words = r["text"].split(" ")
        return [(" ".join(words[:-1]), " " + words[-1])], 0, [words[-1]]
    else:
        raise ValueError(task)
    return [(ctx, " " + c) for c in choices], gold, choices


def foundry_to_hf(task: str, r: dict) -> dict:
    """Recover the HF fields from an llm-foundry row (the conventions of docs/eval.md)."""
    if task == "winogrande":
        return None  # already split the harness's way; handled directly
    if task == "lambada":
        return {"text": r["context"] + " " + r["continuation"]}
    q, choices, gold = r["query"], r["choices"], r["gold"]
    if task == "piqa":
        assert q.startswith("Question: ") and q.endswith("\n"), q
        return {"goal": q[len("Question: "):-1], "sol1": choices[0], "sol2": choices[1], "label": gold}
    labels = [chr(ord("A") + i) for i in range(len(choices))]
    if task in ("arc_easy", "arc_challenge"):
        assert q.startswith("Question: "), q
        return {"question": q[len("Question: "):], "choices": {"text": choices, "label": labels},
                "answerKey": labels[gold]}
    if task == "openbookqa":
        return {"question_stem": q, "choices": {"text": choices, "label": labels}, "answerKey": labels[gold]}
    if task == "boolq":
        assert q.startswith("Passage: ") and q.endswith("?"), q
        passage, question = q[len("Passage: "):].rsplit("\nQuestion: ", 1)
        assert choices == ["no", "yes"], choices
        return {"passage": passage, "question": question[:-1], "answer": bool(gold)}
    raise ValueError(task)


def is_wikihow(body: str) -> bool:
    """Without a source field: a "How to" context that ends a sentence. ActivityNet contexts can
    start with "How to" too (validation item 2566) but end in the unfinished ctx_b."""
    return body.startswith("How to ") and body.rstrip().rstrip("\"')").endswith((".", "?", "!"))


def six_line_to_hf(lines: list[str]) -> dict:
    """A HellaSwag 6-line record: `label: ctx_a ctx_b` with ctx_b's capital lost. For ActivityNet
    records ctx_b is taken as the text after the last sentence end when it starts lower-case."""
    label, body = lines[0].split(": ", 1)
    ctx_a, ctx_b = body, ""
    if not is_wikihow(body):
        ends = [body.rfind(p) + 2 for p in (". ", "? ", "! ") if body.rfind(p) >= 0]
        if ends and body[max(ends)][:1].islower():
            i = max(ends)
            ctx_a, ctx_b = body[:i - 1], body[i:]
    return {"activity_label": label, "ctx_a": ctx_a, "ctx_b": ctx_b,
            "endings": lines[2:6], "label": lines[1]}


def shared_items(task: str, eval_dir: Path, rows: int):
    """(source, HF-field row or ready requests) for the first `rows` rows of the shared file."""
    path = eval_dir / FILES[task]
    out = []
    if task == "hellaswag":
        lines = bz2.decompress(path.read_bytes()).decode("utf-8").split("\n")
        recs = [lines[i:i + 6] for i in range(0, len(lines) - 5, 6)]
        picks = list(range(rows))
        picks.append(next(i for i, r in enumerate(recs) if is_wikihow(r[0].split(": ", 1)[1])))
        picks.append(next(i for i, r in enumerate(recs) if "[" in r[0]))
        for i in picks:
            out.append(({"file": FILES[task], "line": 6 * i + 1}, hf_item(task, six_line_to_hf(recs[i]))))
        return out
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if n > rows:
                break
            r = json.loads(line)
            if task == "winogrande":
                reqs = [(c, " " + r["continuation"].strip()) for c in r["context_options"]]
                item = (reqs, r["gold"], r["context_options"])
            else:
                item = hf_item(task, foundry_to_hf(task, r))
            out.append(({"file": FILES[task], "line": n}, item))
    return out


# ---- tokenisation and scoring --------------------------------------------------------------

def encode_pair(enc, bos_id: int, ctx: str, cont: str, bos: bool, encoding: str):
    """`enc(text)` gives ids without special tokens."""
    if encoding == "joint":
        n = len(ctx) - len(ctx.rstrip())
        if n:
            cont, ctx = ctx[-n:] + cont, ctx[:-n]
        c = enc(ctx)
        k = enc(ctx + cont)[len(c):]
    else:
        c, k = enc(ctx), enc(cont)
    if bos or not c:
        c = [bos_id] + c
    return c, k


def score(model, ctx_ids: list[int], cont_ids: list[int]):
    """As the harness: the input is (context + continuation)[-(max_len + 1):][:-1], so a long
    context loses its first tokens; the last len(continuation) positions are scored."""
    max_len = model.config.max_position_embeddings
    inp = (ctx_ids + cont_ids)[-(max_len + 1):][:-1]
    ids = torch.tensor([inp], dtype=torch.int64)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].to(torch.float64)
    logp = torch.log_softmax(logits, dim=-1)[len(inp) - len(cont_ids):]
    target = torch.tensor(cont_ids)
    ll = logp.gather(1, target[:, None]).sum().item()
    greedy = bool((logp.argmax(-1) == target).all().item())
    top2 = torch.topk(logp, 2, dim=-1).values
    margin = (top2[:, 0] - top2[:, 1]).min().item()
    return ll, greedy, margin


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "eval-loglik.json")
    ap.add_argument("--rows", type=int, default=3)
    a = ap.parse_args()

    import tokenizers
    import transformers
    from transformers import AutoTokenizer, LlamaForCausalLM

    mdir = a.shared / "models" / "tinystories-llama"
    tok = AutoTokenizer.from_pretrained(mdir)
    raw = tokenizers.Tokenizer.from_file(str(mdir / "tokenizer.json"))
    model = LlamaForCausalLM.from_pretrained(mdir, dtype=torch.float32, attn_implementation="eager").eval()
    model = model.double()
    bos_id = model.config.bos_token_id
    hf_enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    raw_enc = lambda s: raw.encode(s, add_special_tokens=False).ids  # noqa: E731

    items = []
    min_margin = float("inf")
    n_differ = {}
    with strict_float64(model):
        for task in FILES:
            sources = shared_items(task, a.shared / "eval", a.rows)
            sources.append(({"inline": INLINE[task]}, hf_item(task, INLINE[task])))
            for source, (reqs, gold, choices) in sources:
                out_reqs = []
                for ctx, cont in reqs:
                    scores = {}
                    for p in POLICIES:
                        # tokenizer.json through the tokenizers library, as the Rust side
                        c, k = encode_pair(raw_enc, bos_id, ctx, cont, p["bos"], p["encoding"])
                        hf = encode_pair(hf_enc, bos_id, ctx, cont, p["bos"], p["encoding"])
                        ll, greedy, margin = score(model, c, k)
                        if greedy:
                            min_margin = min(min_margin, margin)
                        scores[p["name"]] = {"context_ids": c, "continuation_ids": k,
                                             "loglik": ll, "greedy": greedy}
                        if hf != (c, k):
                            n_differ[p["name"]] = n_differ.get(p["name"], 0) + 1
                            scores[p["name"]]["transformers_ids"] = {"context_ids": hf[0],
                                                                     "continuation_ids": hf[1]}
                    out_reqs.append({"context": ctx, "continuation": cont, "scores": scores})
                items.append({"task": task, "source": source, "gold": gold,
                              "choice_chars": [len(c) for c in choices], "requests": out_reqs})

    doc = {
        "model": "shared/data/models/tinystories-llama",
        "description": "per-choice summed log-probabilities (natural log) of lm-evaluation-harness "
                       "style prompts under three tokenisation policies; see "
                       "scripts/make_eval_fixtures.py",
        "policies": POLICIES,
        "dtype": "float64 (strict_float64)",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__},
        "items": items,
    }
    # One compact line per item keeps the file small and its diffs readable.
    head = json.dumps({k: v for k, v in doc.items() if k != "items"}, indent=1, ensure_ascii=False)
    body = ",\n".join(json.dumps(i, ensure_ascii=False) for i in items)
    a.out.write_text(head[:-2] + ',\n "items": [\n' + body + "\n]}\n", encoding="utf-8")
    json.loads(a.out.read_text(encoding="utf-8"))
    n_req = sum(len(i["requests"]) for i in items)
    print(f"wrote {a.out}: {len(items)} items, {n_req} requests x {len(POLICIES)} policies; "
          f"smallest greedy top-2 margin {min_margin:.2e}; requests where AutoTokenizer ids "
          f"differ from tokenizer.json ids, by policy: {n_differ}")


if __name__ == "__main__":
    main()
