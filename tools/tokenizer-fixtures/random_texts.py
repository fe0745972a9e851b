#!/usr/bin/env python3
"""Random texts for the SPM/BPE tokenizer fixtures, tokenized by llama.cpp (libllama, through
llama_tokenize_many.c: add_special and parse_special on, as llama-tokenize and llama-embedding do).

    python3 random_texts.py VOCAB.gguf OUT.jsonl [--n 3000] [--seed 1] [--tokenizer ./llama_tokenize_many]

Texts mix ASCII words, whitespace runs (spaces, tabs, newlines), digits, CJK, emoji (with ZWJ and
variation selectors), combining marks, Latin-1/Greek/Cyrillic/Arabic letters, punctuation and
literal special tokens of the vocab (control and user-defined).
"""
import argparse
import json
import os
import random
import subprocess
import sys

sys.path.insert(0, os.environ.get("GGUF_PY", "/work/dl/llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py"))
import gguf  # noqa: E402

WORDS = "the quick brown fox jumps over lazy dog Hello world internationalization unaffable don't I'm we'll they've".split()
SCRIPTS = [(0x4E00, 0x9FFF), (0x3040, 0x30FF), (0xAC00, 0xD7A3), (0x0391, 0x03C9), (0x0410, 0x044F), (0x0627, 0x064A), (0x00C0, 0x00FF), (0x0E01, 0x0E30)]
EMOJI = ["😀", "👍🏽", "👩‍💻", "🇯🇵", "❤️", "🦙", "✨", "👨‍👩‍👧"]
COMBINING = ["\u0301", "\u0308", "\u0323", "\u20dd", "\u0327"]
PUNCT = list(".,;:!?()[]{}<>\"'`~@#$%^&*-_=+/\\|…—“”«»")
WS = [" ", "  ", "   ", "\t", "\n", "\n\n", " \n", "\r\n", "\u00a0", "\u3000", "    "]


def piece(rng, specials):
    k = rng.random()
    if k < 0.30:
        w = rng.choice(WORDS)
        return w.upper() if rng.random() < 0.1 else w
    if k < 0.45:
        return rng.choice(WS)
    if k < 0.55:
        return str(rng.randrange(0, 10 ** rng.randrange(1, 8)))
    if k < 0.70:
        lo, hi = rng.choice(SCRIPTS)
        return "".join(chr(rng.randrange(lo, hi + 1)) for _ in range(rng.randrange(1, 6)))
    if k < 0.77:
        return rng.choice(EMOJI)
    if k < 0.82:
        return rng.choice("aeiouxn") + rng.choice(COMBINING)
    if k < 0.92:
        return "".join(rng.choice(PUNCT) for _ in range(rng.randrange(1, 4)))
    if specials:
        return rng.choice(specials)
    return "<s>"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("vocab")
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tokenizer", default="/tmp/llama_tokenize_many")
    a = ap.parse_args()
    r = gguf.GGUFReader(a.vocab)
    toks = r.fields["tokenizer.ggml.tokens"].contents()
    types = r.fields["tokenizer.ggml.token_type"].contents()
    specials = [t for t, ty in zip(toks, types) if ty in (2, 3, 4)]
    # Favor the specials that are not <unusedN> filler.
    named = [t for t in specials if "unused" not in t] or specials
    specials = named + specials[:20]
    rng = random.Random(a.seed)
    texts = []
    for i in range(a.n):
        n = rng.choice([0, 1, 2, 3, 5, 8, 13, 30, 60]) if i % 50 else 0
        texts.append("".join(piece(rng, specials) for _ in range(n)))
    payload = b"".join(t.encode() + b"\0" for t in texts)
    res = subprocess.run([a.tokenizer, a.vocab, "1", "1"], input=payload, capture_output=True, check=True)
    lines = res.stdout.decode().split("\n")[: len(texts)]
    assert len(lines) == len(texts)
    with open(a.out, "w") as f:
        for t, l in zip(texts, lines):
            f.write(json.dumps({"text": t, "ids": [int(x) for x in l.split()]}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
