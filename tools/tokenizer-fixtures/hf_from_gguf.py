#!/usr/bin/env python3
"""Hugging Face tokenizer ids for the tokenizer fixtures, with the tokenizer built from each vocab GGUF
by transformers' own GGUF converter (`<Class>.from_pretrained(dir, gguf_file=...)`, the path
`AutoTokenizer` takes once it knows the architecture). Never called by tests.

    python3 -m venv /tmp/hfvenv
    /tmp/hfvenv/bin/pip install transformers gguf tokenizers sentencepiece protobuf numpy
    /tmp/hfvenv/bin/python tools/tokenizer-fixtures/hf_from_gguf.py [FIXTURES_DIR]

FIXTURES_DIR defaults to tests/fixtures. Writes FIXTURES_DIR/reference/tokenizer-hf/<vocab>.jsonl: for
each source, a line `{"src": PATH, "count": N, "add_special_tokens": BOOL}` (PATH under FIXTURES_DIR),
then N lines, each the JSON array of ids of the source's next text, in the source's order:

* `texts.jsonl` and `tokenizer/random-<vocab>.jsonl`, with `add_special_tokens=True` (BOS/EOS as the
  file says; HF always matches the added tokens — control and user-defined — whole in the text);
* `tokenizer/<vocab>.inp` where llama.cpp has a vocab test for it (inputs split on
  `\\n__ggml_vocab_test__\\n`), with `add_special_tokens=False` as llama.cpp's test-tokenizer-0 runs.

Checked with transformers 5.24.0, tokenizers 0.23.3, gguf 0.19.0 (what pip gave on 2026-12-03).
transformers 5's GGUF reader imports torch at the top of the module for tensor dtypes, though a
vocab-only file has no tensors; rather than install torch, a placeholder module stands in for it
(transformers is imported first, so it still knows torch is absent and never uses it).
"""
import json
import os
import sys
import types

import transformers
from transformers import GemmaTokenizer, LlamaTokenizer, Qwen2Tokenizer

# vocab name -> (GGUF file under tokenizer/, the class AutoTokenizer picks for its architecture,
# whether llama.cpp has a vocab test `<name>.inp` for it)
VOCABS = {
    "gemma3": ("vocab-gemma3.gguf", GemmaTokenizer, False),
    "llama-spm": ("vocab-llama-spm.gguf", LlamaTokenizer, True),
    "qwen2": ("vocab-qwen2.gguf", Qwen2Tokenizer, True),
}


class _Placeholder:
    """Whatever the GGUF reader asks of `torch` at import time (dtype names); nothing is computed."""

    itemsize = 0

    def __init__(self, name):
        self._name = name

    def __getattr__(self, key):
        return _Placeholder(f"{self._name}.{key}")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self._name} called: the tokenizer path is not meant to need torch")

    def __hash__(self):
        return hash(self._name)

    def __eq__(self, other):
        return isinstance(other, _Placeholder) and other._name == self._name


def stand_in_for_torch():
    assert not transformers.utils.is_torch_available(), "torch is installed: no placeholder needed"
    if "torch" not in sys.modules:
        mod = types.ModuleType("torch")
        mod.__getattr__ = lambda key: _Placeholder(f"torch.{key}")
        sys.modules["torch"] = mod


def jsonl_texts(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def inp_texts(path):
    with open(path, encoding="utf-8", newline="") as f:
        texts = f.read().split("\n__ggml_vocab_test__\n")
    if texts and texts[-1] == "":
        texts.pop()
    return texts


def main():
    fixtures = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures")
    tok_dir = os.path.join(fixtures, "tokenizer")
    out_dir = os.path.join(fixtures, "reference", "tokenizer-hf")
    os.makedirs(out_dir, exist_ok=True)
    stand_in_for_torch()
    for name, (gguf_file, cls, has_inp) in VOCABS.items():
        tok = cls.from_pretrained(tok_dir, gguf_file=gguf_file)
        sets = [("texts.jsonl", jsonl_texts(os.path.join(fixtures, "texts.jsonl")), True)]
        rel = f"tokenizer/random-{name}.jsonl"
        sets.append((rel, jsonl_texts(os.path.join(fixtures, rel)), True))
        if has_inp:
            rel = f"tokenizer/{name}.inp"
            sets.append((rel, inp_texts(os.path.join(fixtures, rel)), False))
        out = os.path.join(out_dir, f"{name}.jsonl")
        with open(out, "w", encoding="utf-8") as w:
            for src, texts, add_special in sets:
                ids = tok(texts, add_special_tokens=add_special)["input_ids"]
                assert len(ids) == len(texts)
                head = {"src": src, "count": len(ids), "add_special_tokens": add_special}
                w.write(json.dumps(head) + "\n")
                for row in ids:
                    w.write(json.dumps([int(x) for x in row], separators=(",", ":")) + "\n")
        print(f"{out}: {sum(len(t) for _, t, _ in sets)} texts ({type(tok).__name__})")


if __name__ == "__main__":
    main()
