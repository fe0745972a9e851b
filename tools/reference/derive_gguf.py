#!/usr/bin/env python3
"""Copies a GGUF file with a few changes: metadata set, tensors dropped, every weight widened to F32.

    derive_gguf.py SRC.gguf DST.gguf [--set KEY=TYPE:VALUE ...] [--drop TENSOR ...] [--f32]

* --set KEY=TYPE:VALUE adds or replaces one metadata entry; TYPE is u32, f32, bool or str
  (e.g. `--set qwen2.pooling_type=u32:3 --set tokenizer.ggml.add_eos_token=bool:true`).
* --drop TENSOR leaves that tensor out (e.g. an LM head, `output.weight`, an embedding model does not use).
* --f32 stores every tensor as F32, dequantized with gguf-py exactly as stored (so a float64 reference
  of SRC is also one of DST), and sets general.file_type to 0 (all F32): the copy llama.cpp runs without
  quantizing activations, which is how it is compared with the reference.

Every other metadata entry and tensor is copied unchanged, in order.
"""
import argparse

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
from gguf.quants import dequantize

SKIP = {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count", "general.architecture"}
TYPES = {
    "u32": (GGUFValueType.UINT32, int),
    "f32": (GGUFValueType.FLOAT32, float),
    "bool": (GGUFValueType.BOOL, lambda v: {"true": True, "false": False}[v]),
    "str": (GGUFValueType.STRING, str),
}


def parse_set(arg):
    """KEY=TYPE:VALUE -> (key, value type, value)."""
    key, _, typed = arg.partition("=")
    ty, _, value = typed.partition(":")
    if not key or ty not in TYPES:
        raise SystemExit(f"--set {arg!r}: expected KEY=TYPE:VALUE with TYPE one of {', '.join(TYPES)}")
    vtype, parse = TYPES[ty]
    try:
        return key, vtype, parse(value)
    except (KeyError, ValueError):
        raise SystemExit(f"--set {arg!r}: {value!r} is not a {ty}") from None


def as_f32(t):
    """Tensor t dequantized to float32, numpy shape = reversed ggml ne."""
    if t.tensor_type == GGMLQuantizationType.F32:
        out = np.asarray(t.data, dtype=np.float32)
    elif t.tensor_type == GGMLQuantizationType.BF16:
        out = (np.asarray(t.data).view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    else:
        out = dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
    return out.reshape([int(n) for n in reversed(t.shape)])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--set", action="append", default=[], dest="sets")
    ap.add_argument("--drop", action="append", default=[])
    ap.add_argument("--f32", action="store_true")
    a = ap.parse_args()
    sets = {key: (vtype, value) for key, vtype, value in map(parse_set, a.sets)}
    if a.f32:
        sets["general.file_type"] = (GGUFValueType.UINT32, 0)

    r = GGUFReader(a.src)
    names = {t.name for t in r.tensors}
    missing = [d for d in a.drop if d not in names]
    if missing:
        raise SystemExit(f"{a.src}: no tensor {', '.join(missing)} to drop")
    w = GGUFWriter(a.dst, r.fields["general.architecture"].contents())
    for key, f in r.fields.items():
        if key in SKIP or key in sets:
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == GGUFValueType.ARRAY else None
        w.add_key_value(key, f.contents(), vtype, sub_type=sub)
    for key, (vtype, value) in sets.items():
        w.add_key_value(key, value, vtype)
    for t in r.tensors:
        if t.name in a.drop:
            continue
        if a.f32:
            w.add_tensor(t.name, as_f32(t))
        else:
            w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote", a.dst)


if __name__ == "__main__":
    main()
