#!/usr/bin/env python3
"""Float64 reference forward pass for decoder-style GGUF embedding models: gemma-embedding, qwen3, qwen2.

    decoder.py MODEL.gguf --ids 2,651,1902,1 [--ids ...]        one JSON line per sequence
    decoder.py MODEL.gguf --ids-file IDS.jsonl [--out OUT.jsonl] lines {"ids": [...]} (other keys kept)
    decoder.py MODEL.gguf ... --pooling mean|cls|last            override the file's pooling_type

Independent of the Rust code: every weight is dequantized with gguf-py exactly as stored
(`gguf.quants.dequantize`), then everything is computed in float64 numpy. The ids are used as given
(BOS/EOS are the caller's: take them from llama-tokenize, which applies add_bos_token/add_eos_token).
The computation follows llama.cpp (src/models/{gemma-embedding,qwen3,qwen2}.cpp, src/llama-graph.cpp,
src/llama-hparams.*) and shared/DESIGN.md §8:

* x = token_embd[ids] (gemma-embedding: · √n_embd).
* per layer: h = RMSNorm(x)·attn_norm; q, k, v (+ biases when present); qwen3 and gemma-embedding:
  per-head RMSNorm of q and k; NeoX RoPE on the first n_rot dims (pairs i, i + n_rot/2); softmax(q·kᵀ·s)·v
  per head with GQA (head h reads KV head h / (n_head / n_head_kv)); attn_output (+ bias).
  gemma-embedding: x += RMSNorm(o)·post_attention_norm; x += RMSNorm(down(gelu_tanh(gate f) ⊙ up f))·
  post_ffw_norm with f = RMSNorm(x)·ffn_norm. qwen: x += o; x += down(silu(gate f) ⊙ up f).
* masks: qwen causal unless `{arch}.attention.causal` is false; gemma-embedding non-causal, and on its
  sliding layers key j is visible to query i only when |i − j| ≤ sliding_window / 2.
* RMSNorm·output_norm, then pooling (mean over all tokens, cls = first token, last = last token), then
  dense_2 and dense_3 when present (no bias, no activation), then L2 normalisation.
"""
import argparse
import json
import math
import sys

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize

ARCHS = ("gemma-embedding", "qwen3", "qwen2")
POOLING = {1: "mean", 2: "cls", 3: "last"}


class Model:
    """A GGUF file opened for the reference: hyperparameters as llama.cpp derives them, tensors
    dequantized to float64 on first use (numpy shape = reversed ggml ne: [rows, row length])."""

    def __init__(self, path):
        self.reader = GGUFReader(path)
        self.fields = self.reader.fields
        self.tensors = {t.name: t for t in self.reader.tensors}
        self._cache = {}
        arch = self.value("general.architecture")
        if arch not in ARCHS:
            raise ValueError(f"{path}: architecture {arch!r} is not one of {ARCHS}")
        self.arch = arch
        self.n_embd = self.arch_value("embedding_length")
        self.n_layer = self.arch_value("block_count")
        self.n_head = self.arch_value("attention.head_count")
        self.n_head_kv = self.arch_value("attention.head_count_kv", self.n_head)
        self.head_k = self.arch_value("attention.key_length", self.n_embd // self.n_head)
        self.head_v = self.arch_value("attention.value_length", self.n_embd // self.n_head)
        self.n_rot = self.arch_value("rope.dimension_count", self.head_k)
        self.eps = self.arch_value("attention.layer_norm_rms_epsilon")
        self.n_ctx = self.arch_value("context_length")
        self.freq_base = self.arch_value("rope.freq_base", 10000.0)
        factor = self.arch_value("rope.scaling.factor", 0.0)
        self.freq_scale = 1.0 / factor if factor else 1.0
        scaling = self.arch_value("rope.scaling.type", "linear")
        if scaling not in ("linear", "none"):
            raise ValueError(f"rope scaling {scaling!r} is not supported by this reference")
        self.pooling = POOLING.get(self.arch_value("pooling_type", 0))
        if self.n_head % self.n_head_kv != 0:
            raise ValueError("head_count is not a multiple of head_count_kv")
        if self.arch == "gemma-embedding":
            self.causal = False
            self.n_swa = self.arch_value("attention.sliding_window")
            self.freq_base_swa = self.arch_value("rope.freq_base_swa", 10000.0)
            self.is_swa = self._swa_layers()
        else:
            self.causal = self.arch_value("attention.causal", True)
            self.is_swa = [False] * self.n_layer

    def value(self, key, default=None):
        f = self.fields.get(key)
        return default if f is None else f.contents()

    def arch_value(self, key, default=None):
        v = self.value(f"{self.arch}.{key}", default)
        if v is None:
            raise ValueError(f"missing key {self.arch}.{key}")
        return v

    def _swa_layers(self):
        """llama.cpp's load_swa_pattern: a per-layer bool array, or a period n (default 6) where
        layer il is sliding unless il % n == n - 1 (n == 0: every layer sliding)."""
        pattern = self.value(f"{self.arch}.attention.sliding_window_pattern", 6)
        if isinstance(pattern, list):
            if len(pattern) != self.n_layer:
                raise ValueError("sliding_window_pattern array length is not block_count")
            return [bool(p) for p in pattern]
        n = int(pattern)
        return [n == 0 or il % n < n - 1 for il in range(self.n_layer)]

    def has(self, name):
        return name in self.tensors

    def weight(self, name):
        """The whole tensor `name` dequantized, float64."""
        if name not in self._cache:
            t = self.tensors.get(name)
            if t is None:
                raise KeyError(f"missing tensor {name}")
            self._cache[name] = dequant(t, t.data)
        return self._cache[name]

    def embedding_rows(self, ids):
        """Rows `ids` of token_embd, dequantized (only those rows, so a 262k vocab stays cheap)."""
        t = self.tensors["token_embd.weight"]
        n_vocab = int(t.shape[1])
        for i in ids:
            if not 0 <= i < n_vocab:
                raise ValueError(f"token id {i} outside the vocabulary of {n_vocab}")
        return dequant(t, np.asarray(t.data)[np.asarray(ids, dtype=np.int64)])


def dequant(t, data):
    """Dequantize tensor rows as stored (gguf-py), to float64 [rows, row length]."""
    ne0 = int(t.shape[0])
    if t.tensor_type == GGMLQuantizationType.F32:
        out = np.asarray(data, dtype=np.float32)
    elif t.tensor_type == GGMLQuantizationType.BF16:
        raw = np.asarray(data).view(np.uint16).astype(np.uint32) << 16
        out = raw.view(np.float32)
    else:
        out = dequantize(np.asarray(data), t.tensor_type)
    return np.asarray(out, dtype=np.float64).reshape(-1, ne0)


def rms_norm(x, w, eps):
    """x / √(mean x² + eps) · w over the last axis."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def silu(x):
    return x / (1.0 + np.exp(-x))


def rope_neox(x, n_rot, base, scale):
    """NeoX rotary embedding of x [T, heads, d] at positions 0..T-1: dims i and i + n_rot/2
    (i < n_rot/2) rotate by pos·scale·base^(−2i/n_rot); dims from n_rot on pass through."""
    t = x.shape[0]
    half = n_rot // 2
    inv = base ** (-2.0 * np.arange(half, dtype=np.float64) / n_rot)
    ang = (np.arange(t, dtype=np.float64) * scale)[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = x[..., :half], x[..., half:n_rot]
    out = x.copy()
    out[..., :half] = a * cos - b * sin
    out[..., half:n_rot] = a * sin + b * cos
    return out


def linear(m, x, name):
    """x · Wᵀ (+ bias when the file has one) for tensor `name`.weight."""
    y = x @ m.weight(f"{name}.weight").T
    if m.has(f"{name}.bias"):
        y = y + m.weight(f"{name}.bias").reshape(-1)
    return y


def attention_mask(m, t, sliding):
    """[T, T] bool, True where query i may see key j."""
    i = np.arange(t)[:, None]
    j = np.arange(t)[None, :]
    visible = np.ones((t, t), dtype=bool)
    if m.causal:
        visible &= j <= i
    if sliding:
        half = m.n_swa // 2
        visible &= np.abs(i - j) <= half
    return visible


def attention(m, il, h):
    """Self-attention block of layer il on normed input h [T, E]; returns attn_output's result [T, E]."""
    t = h.shape[0]
    p = f"blk.{il}"
    q = linear(m, h, f"{p}.attn_q").reshape(t, m.n_head, m.head_k)
    k = linear(m, h, f"{p}.attn_k").reshape(t, m.n_head_kv, m.head_k)
    v = linear(m, h, f"{p}.attn_v").reshape(t, m.n_head_kv, m.head_v)
    if m.has(f"{p}.attn_q_norm.weight"):
        q = rms_norm(q, m.weight(f"{p}.attn_q_norm.weight").reshape(-1), m.eps)
        k = rms_norm(k, m.weight(f"{p}.attn_k_norm.weight").reshape(-1), m.eps)
    sliding = m.is_swa[il]
    base = m.freq_base_swa if sliding else m.freq_base
    scale = 1.0 if sliding else m.freq_scale
    q = rope_neox(q, m.n_rot, base, scale)
    k = rope_neox(k, m.n_rot, base, scale)
    visible = attention_mask(m, t, sliding)
    group = m.n_head // m.n_head_kv
    out = np.empty((t, m.n_head, m.head_v))
    for hd in range(m.n_head):
        kv = hd // group
        s = (q[:, hd, :] @ k[:, kv, :].T) / math.sqrt(m.head_k)
        s = np.where(visible, s, -np.inf)
        s = np.exp(s - s.max(axis=1, keepdims=True))
        s /= s.sum(axis=1, keepdims=True)
        out[:, hd, :] = s @ v[:, kv, :]
    return linear(m, out.reshape(t, m.n_head * m.head_v), f"{p}.attn_output")


def layer(m, il, x):
    p = f"blk.{il}"
    norm = lambda v, n: rms_norm(v, m.weight(f"{p}.{n}.weight").reshape(-1), m.eps)
    a = attention(m, il, norm(x, "attn_norm"))
    if m.arch == "gemma-embedding":
        x = x + norm(a, "post_attention_norm")
        f = norm(x, "ffn_norm")
        g = gelu_tanh(linear(m, f, f"{p}.ffn_gate")) * linear(m, f, f"{p}.ffn_up")
        return x + norm(linear(m, g, f"{p}.ffn_down"), "post_ffw_norm")
    x = x + a
    f = norm(x, "ffn_norm")
    g = silu(linear(m, f, f"{p}.ffn_gate")) * linear(m, f, f"{p}.ffn_up")
    return x + linear(m, g, f"{p}.ffn_down")


def hidden_states(m, ids):
    """The final-normed hidden states [T, E] for the token ids (as given, specials included)."""
    if not ids:
        raise ValueError("empty id sequence")
    if len(ids) > m.n_ctx:
        raise ValueError(f"{len(ids)} ids exceed the context length {m.n_ctx}")
    x = m.embedding_rows(ids)
    if m.arch == "gemma-embedding":
        x = x * math.sqrt(m.n_embd)
    for il in range(m.n_layer):
        x = layer(m, il, x)
    return rms_norm(x, m.weight("output_norm.weight").reshape(-1), m.eps)


def embed(m, ids, pooling=None):
    """Pooled (dense-projected when the file has dense_2/dense_3), L2-normalized float64 embedding."""
    pooling = pooling or m.pooling
    h = hidden_states(m, ids)
    if pooling == "mean":
        e = h.mean(axis=0)
    elif pooling == "cls":
        e = h[0]
    elif pooling == "last":
        e = h[-1]
    else:
        raise ValueError("the file declares no pooling_type (1 mean, 2 cls, 3 last): pass --pooling")
    if m.has("dense_2.weight"):
        e = m.weight("dense_2.weight") @ e
    if m.has("dense_3.weight"):
        e = m.weight("dense_3.weight") @ e
    return e / np.linalg.norm(e)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--ids", action="append", default=[], help="comma-separated token ids (repeatable)")
    ap.add_argument("--ids-file", help='JSONL with {"ids": [...]} per line; other keys are copied')
    ap.add_argument("--pooling", choices=["mean", "cls", "last"])
    ap.add_argument("--out", help="output JSONL (default stdout)")
    a = ap.parse_args()
    m = Model(a.model)
    recs = [{"ids": [int(i) for i in s.split(",")]} for s in a.ids]
    if a.ids_file:
        recs += [json.loads(line) for line in open(a.ids_file) if line.strip()]
    out = open(a.out, "w") if a.out else sys.stdout
    for r in recs:
        r["embedding"] = embed(m, r["ids"], a.pooling).tolist()
        out.write(json.dumps(r, ensure_ascii=False) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
