#!/usr/bin/env python3
"""Cosine between decoder.py's float64 embeddings and llama.cpp's.

    compare_llama.py ids LLAMA_EMBED_IDS MODEL.gguf REF.jsonl [--ctx N] [--fa auto|on|off]
        REF.jsonl lines {"ids", "embedding"} (decoder.py's output); llama.cpp embeds the same ids
        with llama_embed_ids (built from llama_embed_ids.c).
    compare_llama.py texts LLAMA_BIN_DIR MODEL.gguf TEXTS.jsonl OUT.jsonl [--ctx N] [--ref-model F32.gguf]
        for each {"text"}: ids from llama-tokenize (BOS/EOS as the file says, special tokens parsed,
        as llama-embedding tokenizes), decoder.py's embedding of those ids (on --ref-model when given,
        e.g. an F32 copy, else MODEL), llama-embedding's vector for the text, and their cosine. OUT.jsonl
        lines: {"text", "ids", "embedding" (float64), "llama_embedding", "cosine"}; texts llama.cpp
        cannot embed get "error" instead.

Prints one line per input (index, tokens, cosine) and the minimum.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import decoder  # noqa: E402


def cosine(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def compare_ids(a):
    refs = [json.loads(line) for line in open(a.ref) if line.strip()]
    with tempfile.TemporaryDirectory() as d:
        ids_txt, out_txt = os.path.join(d, "ids.txt"), os.path.join(d, "out.txt")
        with open(ids_txt, "w") as f:
            for r in refs:
                f.write(" ".join(map(str, r["ids"])) + "\n")
        subprocess.run([a.tool, a.model, ids_txt, out_txt, str(a.ctx), a.fa], check=True,
                       stderr=subprocess.DEVNULL)
        got = [[float(v) for v in line.split()] for line in open(out_txt)]
    cos = []
    for i, (r, g) in enumerate(zip(refs, got)):
        cos.append(cosine(r["embedding"], g))
        print(f"{i:3d} {len(r['ids']):5d} tokens  cosine {cos[-1]:.9f}")
    print(f"min cosine {min(cos):.9f} over {len(cos)} sequences")


def tokenize(bin_dir, model, text):
    p = subprocess.run([os.path.join(bin_dir, "llama-tokenize"), "-m", model, "-p", text, "--ids", "--log-disable"],
                       capture_output=True, text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def llama_embedding(bin_dir, model, text, ctx):
    cmd = [os.path.join(bin_dir, "llama-embedding"), "-m", model, "-p", text, "--embd-normalize", "-1",
           "--embd-output-format", "json", "-t", "1", "-c", str(ctx), "-b", str(ctx), "-ub", str(ctx),
           "--embd-separator", "\x01"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    try:
        return json.loads(p.stdout)["data"][0]["embedding"], None
    except (ValueError, KeyError, IndexError):
        return None, (p.stderr.strip().splitlines() or ["?"])[-1][:300]


def compare_texts(a):
    ref_model = decoder.Model(a.ref_model or a.model)
    cos = []
    with open(a.out, "w") as out:
        for i, line in enumerate(open(a.texts)):
            text = json.loads(line)["text"]
            rec = {"text": text}
            try:
                ids = tokenize(a.bin_dir, a.model, text)[: ref_model.n_ctx]
                rec["ids"] = ids
                rec["embedding"] = decoder.embed(ref_model, ids).tolist()
            except (subprocess.CalledProcessError, ValueError) as e:
                rec["error"] = f"reference: {e}"
            if "error" not in rec:
                vec, err = llama_embedding(a.bin_dir, a.model, text, a.ctx)
                if vec is None:
                    rec["error"] = f"llama-embedding: {err}"
                else:
                    rec["llama_embedding"] = vec
                    rec["cosine"] = cosine(rec["embedding"], vec)
                    cos.append(rec["cosine"])
            print(f"{i:3d} {len(rec.get('ids', [])):5d} tokens  " +
                  (f"cosine {rec['cosine']:.9f}" if "cosine" in rec else rec["error"]), flush=True)
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
    if cos:
        print(f"min cosine {min(cos):.9f} over {len(cos)} texts")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("ids")
    s.add_argument("tool"); s.add_argument("model"); s.add_argument("ref")
    s.add_argument("--ctx", type=int, default=512); s.add_argument("--fa", default="auto")
    s = sub.add_parser("texts")
    s.add_argument("bin_dir"); s.add_argument("model"); s.add_argument("texts"); s.add_argument("out")
    s.add_argument("--ctx", type=int, default=2048); s.add_argument("--ref-model")
    a = ap.parse_args()
    compare_ids(a) if a.cmd == "ids" else compare_texts(a)


if __name__ == "__main__":
    main()
