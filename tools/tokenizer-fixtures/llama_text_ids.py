#!/usr/bin/env python3
"""Token ids of every text of a JSONL file as libllama gives them to `llama-embedding`
(`add_special` and `parse_special` both on: BOS/EOS as the file asks, control tokens matched).
`llama-tokenize` is not used: it adds EOS only when the file also adds BOS.

    llama_text_ids.py LLAMA_TOKENIZE_MANY MODEL.gguf TEXTS.jsonl OUT.jsonl

LLAMA_TOKENIZE_MANY is `llama_tokenize_many.c` built as its header says. Writes one
`{"text": ..., "ids": [...]}` line per text. Never called by tests.
"""
import json
import subprocess
import sys


def main() -> None:
    tokenize, model, texts, out = sys.argv[1:5]
    with open(texts, encoding="utf-8") as f:
        lines = [json.loads(line)["text"] for line in f]
    stdin = b"".join(t.encode("utf-8") + b"\0" for t in lines)
    r = subprocess.run([tokenize, model, "1", "1"], input=stdin, capture_output=True, check=True)
    ids = r.stdout.decode().splitlines()
    assert len(ids) == len(lines), (len(ids), len(lines))
    with open(out, "w", encoding="utf-8") as w:
        for text, line in zip(lines, ids):
            w.write(json.dumps({"text": text, "ids": [int(x) for x in line.split()]}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
