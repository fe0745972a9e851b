#!/usr/bin/env python3
"""Writes a vocab-only GGUF: the tokenizer.* keys of a model (no tensors, no other metadata).

    python3 vocab_only.py IN.gguf OUT.gguf [--drop-key tokenizer.chat_template] [--pre NAME]

--pre replaces tokenizer.ggml.pre (the BPE tests tokenize the Qwen2 vocab with the llama3 split).

gguf-py is the one vendored in llama.cpp (GGUF_PY=path/to/llama.cpp/gguf-py or on sys.path).
"""
import argparse
import os
import sys

sys.path.insert(0, os.environ.get("GGUF_PY", "/work/dl/llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py"))
import gguf  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--drop-key", action="append", default=["tokenizer.chat_template"])
    ap.add_argument("--pre")
    args = ap.parse_args()
    r = gguf.GGUFReader(args.src)
    arch = r.fields["general.architecture"].contents() if "general.architecture" in r.fields else "llama"
    w = gguf.GGUFWriter(args.dst, arch)
    for key, f in r.fields.items():
        if not key.startswith("tokenizer.") or key in args.drop_key:
            continue
        t = f.types[0]
        if t == gguf.GGUFValueType.ARRAY:
            w.add_array(key, f.contents())
        elif t == gguf.GGUFValueType.STRING:
            w.add_string(key, args.pre if key == "tokenizer.ggml.pre" and args.pre else f.contents())
        elif t == gguf.GGUFValueType.BOOL:
            w.add_bool(key, f.contents())
        elif t == gguf.GGUFValueType.UINT32:
            w.add_uint32(key, f.contents())
        elif t == gguf.GGUFValueType.INT32:
            w.add_int32(key, f.contents())
        else:
            raise SystemExit(f"unhandled type {t} for {key}")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
