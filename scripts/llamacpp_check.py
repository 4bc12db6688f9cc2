#!/usr/bin/env python3
"""Check that llama.cpp loads our GGUF export and continues a prompt exactly as we do.

Exports MODEL_DIR to GGUF with `tinyllama export gguf`, generates greedily with
`tinyllama generate --json`, then loads the GGUF with llama-cpp-python (which wraps
llama.cpp) and generates greedily from the same prompt token ids. Exit status 0 when
the continuations are identical.

Install llama-cpp-python (it compiles llama.cpp; ~10+ minutes on 2 cores):
    python3 -m venv /tmp/llcpp-venv && /tmp/llcpp-venv/bin/pip install llama-cpp-python
or, with an existing llama.cpp build (libllama.so), use the package's Python sources
without compiling: PYTHONPATH=<llama_cpp_python source dir> LLAMA_CPP_LIB_PATH=<dir of libllama.so>.

Example:
    /tmp/llcpp-venv/bin/python scripts/llamacpp_check.py \\
        --model ../shared/data/models/tinystories-llama --type f32
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Hugging Face model directory")
    ap.add_argument("--tinyllama", default="target/release/tinyllama", help="our binary")
    ap.add_argument("--type", default="f32", help="GGUF type: f32, f16, bf16, q8_0, q4_0")
    ap.add_argument("--prompt", action="append",
                    help="prompt text (repeatable; default: two story openings)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--gguf", help="keep the exported file here (default: a temporary file)")
    a = ap.parse_args()
    prompts = a.prompt or ["Once upon a time, there was a little girl", "The dog ran to the park and"]

    # Our runtime decodes in the same precision as the file, so both sides see the same
    # numbers (f16 has no runtime format of ours; it is compared with f32 decoding).
    quant = {"f32": "f32", "f16": "f32", "bf16": "bf16", "q8_0": "q8_0", "q4_0": "q4_0"}[a.type]
    tmp = tempfile.TemporaryDirectory()
    gguf = a.gguf or os.path.join(tmp.name, f"model-{a.type}.gguf")
    subprocess.run([a.tinyllama, "export", "gguf", "--model", a.model, "--out", gguf, "--type", a.type], check=True)

    from llama_cpp import Llama  # imported late so --help works without it

    llm = Llama(model_path=gguf, n_ctx=0, n_threads=a.threads, n_batch=512, verbose=False)
    print(f"llama.cpp loaded {gguf}: n_vocab={llm.n_vocab()}, n_ctx={llm.n_ctx()}")
    failures = 0
    for prompt in prompts:
        ours = subprocess.run(
            [a.tinyllama, "generate", "--model", a.model, "--prompt", prompt, "--temperature", "0",
             "--max-new-tokens", str(a.max_new_tokens), "--quant", quant, "--json"],
            check=True, capture_output=True, text=True).stdout
        ours = json.loads(ours.strip().splitlines()[-1])
        ids = ours["prompt_ids"]
        theirs = []
        llm.reset()
        for t in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
            if t == llm.token_eos() or len(theirs) >= a.max_new_tokens:
                break
            theirs.append(t)
        tok = llm.tokenize(prompt.encode(), add_bos=True, special=False)
        same = theirs == ours["ids"]
        failures += not same
        print(f"\nprompt: {prompt!r}")
        print(f"  tokenization {'identical' if tok == ids else 'DIFFERS'}: ours {ids[:12]}..., llama.cpp {tok[:12]}...")
        print(f"  ours     : {ours['text']!r}")
        print(f"  llama.cpp: {llm.detokenize(theirs).decode(errors='replace')!r}")
        if same:
            print(f"  greedy continuation identical ({len(theirs)} tokens)")
        else:
            n = next((i for i, (x, y) in enumerate(zip(theirs, ours['ids'])) if x != y), min(len(theirs), len(ours['ids'])))
            print(f"  DIFFERENT from token {n}: ours {ours['ids'][n:n + 8]}, llama.cpp {theirs[n:n + 8]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
