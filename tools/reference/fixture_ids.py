#!/usr/bin/env python3
"""Token-id sequences for a fixture model's reference file.

    fixture_ids.py MODEL.gguf OUT.jsonl [--seed S]

Writes {"ids": [...]} lines of lengths 1, 2, 3, 5, 8, 17, 31, 64, 100, 130, 200, the sliding window + 8
(when the file has one) and the context length. Ids are uniform over the vocabulary; sequences of two
or more ids start with BOS when add_bos_token is set and end with EOS when add_eos_token is set, as
llama-tokenize would give them.
"""
import argparse
import json

import numpy as np
from gguf import GGUFReader


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    f = GGUFReader(a.model).fields
    get = lambda k, d=None: f[k].contents() if k in f else d
    arch = get("general.architecture")
    n_vocab = len(f["tokenizer.ggml.tokens"].data)
    n_ctx = get(f"{arch}.context_length")
    lengths = [1, 2, 3, 5, 8, 17, 31, 64, 100, 130, 200]
    swa = get(f"{arch}.attention.sliding_window")
    if swa:
        lengths.append(swa + 8)
    lengths.append(n_ctx)
    bos = get("tokenizer.ggml.bos_token_id") if get("tokenizer.ggml.add_bos_token", False) else None
    eos = get("tokenizer.ggml.eos_token_id") if get("tokenizer.ggml.add_eos_token", False) else None
    rng = np.random.default_rng(a.seed)
    with open(a.out, "w") as out:
        for n in sorted(set(l for l in lengths if l <= n_ctx)):
            ids = rng.integers(0, n_vocab, n).tolist()
            if n >= 2 and bos is not None:
                ids[0] = bos
            if n >= 2 and eos is not None:
                ids[-1] = eos
            out.write(json.dumps({"ids": ids}) + "\n")


if __name__ == "__main__":
    main()
