#!/usr/bin/env python3
"""Cosine between decoder.py's float64 embeddings and llama.cpp's.

    compare_llama.py ids LLAMA_EMBED_IDS MODEL.gguf REF.jsonl [--ctx N] [--fa auto|on|off]
        REF.jsonl lines {"ids", "embedding"} (decoder.py's output); llama.cpp embeds the same ids
        with llama_embed_ids (built from llama_embed_ids.c).
    compare_llama.py texts LLAMA_BIN_DIR MODEL.gguf TEXTS.jsonl OUT.jsonl --tokenizer LLAMA_TOKENIZE_MANY
                     --llama A.gguf [--llama B.gguf] [--report REPORT.jsonl] [--ctx N]
        for each {"text"}: ids from libllama's llama_tokenize on MODEL with add_special and parse_special
        on, as llama-embedding tokenizes (tools/tokenizer-fixtures/llama_tokenize_many.c; llama-tokenize
        adds special tokens only when the file sets add_bos_token, so it leaves out Qwen's EOS), and
        decoder.py's float64 embedding of those ids on MODEL,
        written as OUT.jsonl lines {"text", "ids", "embedding"} (a text the reference cannot take is an
        error); then llama-embedding's vector for the text on each --llama file (e.g. an F32 copy and
        MODEL itself), with the settings "exact" (flash attention off, f32 KV cache: exact on F32
        weights) and "default" (flash attention auto, f16 KV cache: what a user gets), compared with
        the reference. REPORT.jsonl lines: {"text", "tokens", "llama": {"FILE exact|default": cosine,
        or an error message}}.

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


def tokenize_all(tool, model, texts):
    """libllama's ids for each text, special tokens added and parsed (llama_tokenize_many)."""
    stdin = b"".join(t.encode("utf-8") + b"\0" for t in texts)
    p = subprocess.run([tool, model, "1", "1"], input=stdin, capture_output=True, check=True)
    lines = p.stdout.decode().splitlines()
    if len(lines) != len(texts):
        raise SystemExit(f"{tool}: {len(lines)} id lines for {len(texts)} texts")
    return [[int(i) for i in line.split()] for line in lines]


# llama-embedding's settings: exact (flash attention off, f32 KV cache: its CPU flash attention and its
# default f16 KV cache round K and V to f16, which moves Qwen2's embeddings to cosine 0.9994) and
# what a user gets by default (flash attention auto, f16 KV cache).
SETTINGS = {"exact": ["-fa", "off", "-ctk", "f32", "-ctv", "f32"], "default": ["-fa", "auto"]}


def llama_embedding(bin_dir, model, text, ctx, setting):
    """llama-embedding's pooled vector for text (one thread, SETTINGS[setting]), or (None, error)."""
    cmd = [os.path.join(bin_dir, "llama-embedding"), "-m", model, "-p", text, "--embd-normalize", "-1",
           "--embd-output-format", "json", "-t", "1", "-c", str(ctx), "-b", str(ctx), "-ub", str(ctx),
           "--embd-separator", "\x01"] + SETTINGS[setting]
    p = subprocess.run(cmd, capture_output=True, text=True)
    try:
        return json.loads(p.stdout)["data"][0]["embedding"], None
    except (ValueError, KeyError, IndexError):
        return None, (p.stderr.strip().splitlines() or ["?"])[-1][:300]


def compare_texts(a):
    m = decoder.Model(a.model)
    runs = [(f, setting) for f in a.llama for setting in SETTINGS]
    cos = {f"{os.path.basename(f)} {setting}": [] for f, setting in runs}
    report = open(a.report, "w") if a.report else None
    texts = [json.loads(line)["text"] for line in open(a.texts, encoding="utf-8") if line.strip()]
    with open(a.out, "w") as out:
        for i, (text, ids) in enumerate(zip(texts, tokenize_all(a.tokenizer, a.model, texts))):
            rec = {"text": text, "ids": ids, "embedding": decoder.embed(m, ids).tolist()}
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
            out.flush()
            got = {}
            for f, setting in runs:
                name = f"{os.path.basename(f)} {setting}"
                vec, err = llama_embedding(a.bin_dir, f, text, a.ctx, setting)
                if vec is None:
                    got[name] = err
                else:
                    got[name] = cosine(rec["embedding"], vec)
                    cos[name].append(got[name])
            shown = "  ".join(f"{k} {v:.9f}" if isinstance(v, float) else f"{k}: {v}" for k, v in got.items())
            print(f"{i:3d} {len(ids):5d} tokens  {shown}", flush=True)
            if report:
                report.write(json.dumps({"text": text, "tokens": len(ids), "llama": got}, ensure_ascii=False) + "\n")
                report.flush()
    for name, c in cos.items():
        if c:
            print(f"{name}: min cosine {min(c):.9f} over {len(c)} texts")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("ids")
    s.add_argument("tool"); s.add_argument("model"); s.add_argument("ref")
    s.add_argument("--ctx", type=int, default=512); s.add_argument("--fa", default="auto")
    s = sub.add_parser("texts")
    s.add_argument("bin_dir"); s.add_argument("model"); s.add_argument("texts"); s.add_argument("out")
    s.add_argument("--llama", action="append", required=True, help="a file for llama-embedding (repeatable)")
    s.add_argument("--tokenizer", required=True, help="llama_tokenize_many, built against the same llama.cpp")
    s.add_argument("--report", help="JSONL of the cosines per text")
    s.add_argument("--ctx", type=int, default=2048)
    a = ap.parse_args()
    compare_ids(a) if a.cmd == "ids" else compare_texts(a)


if __name__ == "__main__":
    main()
