#!/usr/bin/env python3
"""Synthetic gemma-embedding, qwen3 and qwen2 GGUF files (F32, random tame weights, a real vocabulary).

    make_decoder_models.py ARCH OUT.gguf --vocab VOCAB.gguf [--vocab-size N] [shape options]

ARCH is gemma-embedding, qwen3 or qwen2. The tokenizer comes from VOCAB.gguf: a "llama"
(SentencePiece) vocab for gemma-embedding (Gemma 3's), a "gpt2" (BPE) vocab for qwen (llama.cpp's
models/ggml-vocab-qwen2.gguf). --vocab-size N keeps the first N pieces (a SentencePiece vocab is ordered
by score, so its prefix is a working vocab with byte fallback; for BPE the first N − 3 pieces, the
merges that make them and <|endoftext|> <|im_start|> <|im_end|> renumbered after them).
Quantize afterwards with llama-quantize (row lengths that are multiples of 256 keep K-quants).

Weights: N(0, 1/√fan_in) projections, the residual branches' output projections scaled by
--branch-scale, norm weights 1 + N(0, 0.05), biases N(0, 0.1) (qwen2's q/k/v).
"""
import argparse

import numpy as np
import gguf

SPECIAL_QWEN = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def spm_vocab(w, r, n):
    """Copy a SentencePiece ("llama") tokenizer, its first n pieces."""
    f = r.fields
    toks = f["tokenizer.ggml.tokens"].contents()
    n = n or len(toks)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre(f["tokenizer.ggml.pre"].contents() if "tokenizer.ggml.pre" in f else "default")
    w.add_token_list(toks[:n])
    w.add_token_scores(f["tokenizer.ggml.scores"].contents()[:n])
    w.add_token_types(f["tokenizer.ggml.token_type"].contents()[:n])
    for key in ("bos", "eos", "unknown", "padding"):
        k = f"tokenizer.ggml.{key}_token_id"
        if k in f:
            tid = int(f[k].contents())
            if tid >= n:
                raise SystemExit(f"{k} = {tid} is outside the first {n} pieces")
            w.add_uint32(k, tid)
    w.add_add_space_prefix(bool(f["tokenizer.ggml.add_space_prefix"].contents()) if "tokenizer.ggml.add_space_prefix" in f else False)
    return n


def bpe_vocab(w, r, n):
    """Copy a byte-level BPE ("gpt2") Qwen tokenizer, truncated to n ids when n is given."""
    f = r.fields
    toks = f["tokenizer.ggml.tokens"].contents()
    types = f["tokenizer.ggml.token_type"].contents()
    merges = f["tokenizer.ggml.merges"].contents()
    eos = toks.index(SPECIAL_QWEN[0])
    if n:
        keep = n - len(SPECIAL_QWEN)
        index = {t: i for i, t in enumerate(toks)}
        merges = [m for m in merges if index.get(m.replace(" ", "", 1), keep) < keep]
        types = list(types[:keep]) + [types[toks.index(s)] for s in SPECIAL_QWEN]
        toks = list(toks[:keep]) + list(SPECIAL_QWEN)
        eos = keep
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(f["tokenizer.ggml.pre"].contents())
    w.add_token_list(toks)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(eos)
    w.add_eos_token_id(eos)
    w.add_pad_token_id(eos)
    return len(toks)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("arch", choices=["gemma-embedding", "qwen3", "qwen2"])
    ap.add_argument("out")
    ap.add_argument("--vocab", required=True)
    ap.add_argument("--vocab-size", type=int)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--embd", type=int, default=256)
    ap.add_argument("--ff", type=int, default=512)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--heads-kv", type=int, default=2)
    ap.add_argument("--head-dim", type=int, help="key/value length (default embd / heads)")
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--rope-base", type=float, default=1e6)
    ap.add_argument("--eps", type=float, default=1e-6)
    ap.add_argument("--pooling", choices=["mean", "cls", "last"], default="mean")
    ap.add_argument("--add-eos", action="store_true", help="tokenizer.ggml.add_eos_token = true")
    ap.add_argument("--swa", type=int, default=32, help="gemma-embedding: attention.sliding_window")
    ap.add_argument("--swa-pattern", help="gemma-embedding: a period (u32) or a per-layer list like 1,0,1")
    ap.add_argument("--rope-base-swa", type=float, help="gemma-embedding: rope.freq_base_swa")
    ap.add_argument("--dense", type=int, help="gemma-embedding: dense_2/dense_3 with this hidden width")
    ap.add_argument("--branch-scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--name")
    a = ap.parse_args()

    rng = np.random.default_rng(a.seed)
    rand = lambda shape, s: (rng.standard_normal(shape) * s).astype(np.float32)
    norm = lambda n: (1.0 + rng.standard_normal(n) * 0.05).astype(np.float32)
    E, F, H, Hkv, L = a.embd, a.ff, a.heads, a.heads_kv, a.layers
    D = a.head_dim or E // H
    gemma = a.arch == "gemma-embedding"

    w = gguf.GGUFWriter(a.out, a.arch)
    w.add_name(a.name or f"{a.arch}-synthetic-{L}L-{E}")
    w.add_context_length(a.ctx)
    w.add_embedding_length(E)
    w.add_feed_forward_length(F)
    w.add_block_count(L)
    w.add_head_count(H)
    w.add_head_count_kv(Hkv)
    if a.head_dim:
        w.add_key_length(D)
        w.add_value_length(D)
    w.add_layer_norm_rms_eps(a.eps)
    w.add_rope_freq_base(a.rope_base)
    w.add_pooling_type({"mean": gguf.PoolingType.MEAN, "cls": gguf.PoolingType.CLS, "last": gguf.PoolingType.LAST}[a.pooling])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    if gemma:
        w.add_causal_attention(False)
        w.add_sliding_window(a.swa)
        if a.swa_pattern is not None:
            p = a.swa_pattern
            w.add_sliding_window_pattern([bool(int(v)) for v in p.split(",")] if "," in p else int(p))
        if a.rope_base_swa is not None:
            w.add_rope_freq_base_swa(a.rope_base_swa)
        if a.dense:
            w.add_dense_features_dims("dense_2", E, a.dense)
            w.add_dense_features_dims("dense_3", a.dense, E)
    r = gguf.GGUFReader(a.vocab)
    V = spm_vocab(w, r, a.vocab_size) if gemma else bpe_vocab(w, r, a.vocab_size)
    w.add_add_bos_token(gemma)
    w.add_add_eos_token(a.add_eos)

    w.add_tensor("token_embd.weight", rand((V, E), 0.05 if gemma else 0.5))
    w.add_tensor("output_norm.weight", norm(E))
    for i in range(L):
        p = f"blk.{i}"
        w.add_tensor(f"{p}.attn_norm.weight", norm(E))
        w.add_tensor(f"{p}.attn_q.weight", rand((H * D, E), 1 / np.sqrt(E)))
        w.add_tensor(f"{p}.attn_k.weight", rand((Hkv * D, E), 1 / np.sqrt(E)))
        w.add_tensor(f"{p}.attn_v.weight", rand((Hkv * D, E), 1 / np.sqrt(E)))
        if a.arch == "qwen2":
            w.add_tensor(f"{p}.attn_q.bias", rand((H * D,), 0.1))
            w.add_tensor(f"{p}.attn_k.bias", rand((Hkv * D,), 0.1))
            w.add_tensor(f"{p}.attn_v.bias", rand((Hkv * D,), 0.1))
        if a.arch != "qwen2":
            w.add_tensor(f"{p}.attn_q_norm.weight", norm(D))
            w.add_tensor(f"{p}.attn_k_norm.weight", norm(D))
        w.add_tensor(f"{p}.attn_output.weight", rand((E, H * D), a.branch_scale / np.sqrt(H * D)))
        w.add_tensor(f"{p}.ffn_norm.weight", norm(E))
        w.add_tensor(f"{p}.ffn_gate.weight", rand((F, E), 1 / np.sqrt(E)))
        w.add_tensor(f"{p}.ffn_up.weight", rand((F, E), 1 / np.sqrt(E)))
        w.add_tensor(f"{p}.ffn_down.weight", rand((E, F), a.branch_scale / np.sqrt(F)))
        if gemma:
            w.add_tensor(f"{p}.post_attention_norm.weight", norm(E))
            w.add_tensor(f"{p}.post_ffw_norm.weight", norm(E))
    if gemma and a.dense:
        w.add_tensor("dense_2.weight", rand((a.dense, E), 1 / np.sqrt(E)))
        w.add_tensor("dense_3.weight", rand((E, a.dense), 1 / np.sqrt(a.dense)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote", a.out, f"({V} tokens)")


if __name__ == "__main__":
    main()
