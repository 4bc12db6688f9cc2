#!/usr/bin/env python3
"""Reference assistant masks for the chat data layer (crates/finetune/src/chat).

Writes tests/fixtures/chat/:
  tokenizer.json         a small byte-level BPE trained here on synthetic sentences
  tokenizer_config.json  bos/eos/unk and the Zephyr-format template with generation blocks
  masks.json             transformers' input_ids and assistant_masks for a few conversations
                         under four templates (two with {% generation %} blocks, two without)

Deterministic: running it twice gives byte-identical files. See scripts/README.md.
"""

import argparse
import json
import random
from pathlib import Path

import tokenizers
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]

# Words written for this script; the sentences below are random combinations of them.
SUBJECTS = ["the robot", "a small cat", "my teacher", "the old ship", "our garden", "a quiet river",
            "the baker", "this lamp", "the north wind", "a curious child", "the library", "your friend"]
VERBS = ["carries", "remembers", "paints", "follows", "counts", "builds", "finds", "answers",
         "explains", "waters", "repairs", "describes"]
OBJECTS = ["seven apples", "a blue kite", "the morning train", "an empty box", "three questions",
           "the last page", "a warm bowl of soup", "every yellow leaf", "the broken clock",
           "a map of the hills", "two wooden chairs", "the answer"]
TAILS = ["before lunch.", "after the rain.", "with great care.", "every Tuesday.", "in the evening.",
         "without a sound.", "for the neighbours.", "again and again.", "near the station.", "at dawn."]
QUESTIONS = ["Can you help me?", "What happens next?", "Why is the sky blue?", "How many are left?",
             "Could you explain that?", "Is it ready yet?"]
EXTRA = ["Café crème, déjà vu, naïve façade.", "Grüße aus München!", "日本語のテキストです。",
         "Привет, как дела?", "Emoji time: 🙂🚀", "Numbers: 12, 345, 6789.", "x = (a + b) * 2;"]

ZEPHYR_GEN = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\\n' }}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
ZEPHYR_PLAIN = ZEPHYR_GEN.replace("{% generation %}", "").replace("{% endgeneration %}", "")

# Multi-line with block tags on their own lines, so trim_blocks/lstrip_blocks matter.
CHATML_GEN = """{{ bos_token }}
{% for message in messages %}
{% if message['role'] == 'assistant' %}
{{ '<|im_start|>assistant\\n' }}
{% generation %}
{{ message['content'] + '<|im_end|>' }}
{% endgeneration %}
{{ '\\n' }}
{% else %}
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}
{% endif %}
{% endfor %}
{% if add_generation_prompt %}
{{ '<|im_start|>assistant\\n' }}
{% endif %}
"""
CHATML_PLAIN = CHATML_GEN.replace("{% generation %}\n", "").replace("{% endgeneration %}\n", "")

TEMPLATES = {
    "zephyr_gen": ZEPHYR_GEN,
    "chatml_gen": CHATML_GEN,
    "zephyr_plain": ZEPHYR_PLAIN,
    "chatml_plain": CHATML_PLAIN,
}

CONVERSATIONS = [
    [  # no system, one exchange
        {"role": "user", "content": "Hello, who are you?"},
        {"role": "assistant", "content": "I am the robot that counts seven apples."},
    ],
    [  # system, two exchanges
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": "What happens next?"},
        {"role": "assistant", "content": "The baker repairs the broken clock at dawn."},
        {"role": "user", "content": "And then?"},
        {"role": "assistant", "content": "Then a curious child finds the answer."},
    ],
    [  # empty system, unicode
        {"role": "system", "content": ""},
        {"role": "user", "content": "Grüße! Café? 日本語で答えて。"},
        {"role": "assistant", "content": "はい。Déjà vu, naïve façade 🙂"},
    ],
    [  # three exchanges, newlines and spaces inside replies
        {"role": "user", "content": "List two things."},
        {"role": "assistant", "content": "1. a blue kite\n2. an empty box"},
        {"role": "user", "content": "  Indented question?"},
        {"role": "assistant", "content": "  Indented answer with trailing space. "},
        {"role": "user", "content": "Thanks."},
        {"role": "assistant", "content": "You are welcome."},
    ],
    [  # system, one exchange, code and emoji
        {"role": "system", "content": "Answer in code."},
        {"role": "user", "content": "Double x please 🚀"},
        {"role": "assistant", "content": "x = (a + b) * 2;\nprint(x)"},
    ],
    [  # ends with a user turn (no reply after it)
        {"role": "user", "content": "Is it ready yet?"},
        {"role": "assistant", "content": "Numbers: 12, 345, 6789."},
        {"role": "user", "content": "Привет, как дела?"},
    ],
]


def corpus(rng: random.Random, n: int) -> list[str]:
    lines = []
    for _ in range(n):
        s = f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(TAILS)}"
        if rng.random() < 0.3:
            s += " " + rng.choice(QUESTIONS)
        if rng.random() < 0.15:
            s += "\n" + rng.choice(EXTRA)
        lines.append(s)
    # Role markers as they appear in rendered chats, so they get merges too.
    lines += ["<|system|>\n", "<|user|>\n", "<|assistant|>\n", "user\n", "assistant\n", "system\n"] * 20
    return lines


def train_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        min_frequency=2,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(random.Random(15), 400), trainer=trainer)
    return tok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "tests/fixtures/chat")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    tok = train_tokenizer()
    tok.save(str(args.out / "tokenizer.json"), pretty=False)
    config = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "chat_template": ZEPHYR_GEN,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (args.out / "tokenizer_config.json").write_text(json.dumps(config, indent=1, ensure_ascii=False) + "\n")

    hf = PreTrainedTokenizerFast(
        tokenizer_file=str(args.out / "tokenizer.json"), bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    cases = []
    for name, template in TEMPLATES.items():
        generation = "{% generation %}" in template
        for i, conv in enumerate(CONVERSATIONS):
            out = hf.apply_chat_template(
                conv,
                chat_template=template,
                tokenize=True,
                return_dict=True,
                return_assistant_tokens_mask=generation,
            )
            case = {
                "template": name,
                "conversation": i,
                "text": hf.apply_chat_template(conv, chat_template=template, tokenize=False),
                "input_ids": list(out["input_ids"]),
            }
            if generation:
                case["assistant_masks"] = list(out["assistant_masks"])
                assert len(case["assistant_masks"]) == len(case["input_ids"])
            cases.append(case)
    # Rendering with the generation prompt (what `tinyllama chat` sends): no markers, no mask.
    prompts = [
        {
            "template": name,
            "conversation": i,
            "text": hf.apply_chat_template(CONVERSATIONS[i][:-1], chat_template=t, tokenize=False, add_generation_prompt=True),
        }
        for name, t in TEMPLATES.items()
        for i in (1, 3)
    ]
    fixture = {
        "about": "transformers apply_chat_template(..., tokenize=True, return_dict=True, "
        "return_assistant_tokens_mask=True) on tokenizer.json; *_plain templates have no generation "
        "blocks, so only input_ids (the mask must be derived otherwise). Written by scripts/make_chat_fixtures.py.",
        "versions": {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__},
        "special_tokens": {t: tok.token_to_id(t) for t in SPECIAL},
        "templates": TEMPLATES,
        "conversations": CONVERSATIONS,
        "cases": cases,
        "generation_prompts": prompts,
    }
    (args.out / "masks.json").write_text(json.dumps(fixture, ensure_ascii=False, separators=(",", ":")) + "\n")
    # The two template variants must agree on the ids (the markers add no text).
    by = {(c["template"], c["conversation"]): c for c in cases}
    for i in range(len(CONVERSATIONS)):
        for fam in ("zephyr", "chatml"):
            assert by[(f"{fam}_gen", i)]["input_ids"] == by[(f"{fam}_plain", i)]["input_ids"], (fam, i)
    print(f"wrote {args.out}: vocab {tok.get_vocab_size()}, {len(cases)} cases")


if __name__ == "__main__":
    main()
