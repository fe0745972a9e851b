//! gemma-embedding (EmbeddingGemma): embeddings scaled by √n_embd, RMSNorm before and after
//! each branch (the stored weights include Gemma's 1 + w), grouped-query bidirectional
//! attention with per-head Q/K norms and rotary positions (NeoX), sliding-window layers beside
//! global ones, a GELU (tanh) gated FFN, mean pooling, then the optional dense projections.

use super::{op, Act, Block, Buf::*, Kind::*, Pooled, Program, Stage, Tensor, Tensor::Layer as L};
use crate::model::LayerSlot::*;

pub(super) const PROGRAM: Program = Program {
    embed: &[op(Stage::Embed, Embed { scaled: true })],
    layer: &[
        // h = RMSNorm(x)·attn_norm.
        Block::Once(&[op(Stage::Norm, RmsNorm { weight: L(AttnNorm), src: X, dst: Normed })]),
        // q, k, v = h·Wᵀ (+ b); per-head RMSNorm of q and k; rotary positions with the layer's
        // base; softmax(q·kᵀ/√d)·v over the layer's window, a group of key/value heads at a time.
        Block::PerHeadGroup(&[
            op(Stage::Qkv, Init { dst: Q, bias: L(AttnQBias) }),
            op(Stage::Qkv, Init { dst: K, bias: L(AttnKBias) }),
            op(Stage::Qkv, Init { dst: V, bias: L(AttnVBias) }),
            op(Stage::Qkv, MatMul { w: L(AttnQ), src: Normed, dst: Q }),
            op(Stage::Qkv, MatMul { w: L(AttnK), src: Normed, dst: K }),
            op(Stage::Qkv, MatMul { w: L(AttnV), src: Normed, dst: V }),
            op(Stage::Qkv, HeadNorm { weight: L(AttnQNorm), dst: Q }),
            op(Stage::Qkv, HeadNorm { weight: L(AttnKNorm), dst: K }),
            op(Stage::Qkv, Rope),
            op(Stage::Attention, Attention),
        ]),
        Block::Once(&[
            // x += RMSNorm(attention·Woᵀ)·post_attention_norm.
            op(Stage::AttentionOut, Init { dst: Normed, bias: L(AttnOutBias) }),
            op(Stage::AttentionOut, MatMul { w: L(AttnOut), src: Ctx, dst: Normed }),
            op(Stage::Norm, RmsNorm { weight: L(PostAttnNorm), src: Normed, dst: Normed }),
            op(Stage::AttentionOut, Add { src: Normed, dst: X }),
            // h = RMSNorm(x)·ffn_norm; y = 0.
            op(Stage::Norm, RmsNorm { weight: L(FfnNorm), src: X, dst: Normed }),
            op(Stage::Ffn, Init { dst: Y, bias: L(FfnDownBias) }),
        ]),
        // y += (GELU_tanh(h·W_gateᵀ) ⊙ h·W_upᵀ)·W_downᵀ, a slab of columns at a time.
        Block::PerSlab(&[
            op(Stage::Ffn, Init { dst: Up, bias: L(FfnUpBias) }),
            op(Stage::Ffn, Init { dst: Gate, bias: L(FfnGateBias) }),
            op(Stage::Ffn, MatMul { w: L(FfnUp), src: Normed, dst: Up }),
            op(Stage::Ffn, MatMul { w: L(FfnGate), src: Normed, dst: Gate }),
            op(Stage::Ffn, Act(Act::GeluTanhGated)),
            op(Stage::Ffn, MatMul { w: L(FfnDown), src: Up, dst: Y }),
        ]),
        // x += RMSNorm(y)·post_ffw_norm.
        Block::Once(&[
            op(Stage::Norm, RmsNorm { weight: L(PostFfwNorm), src: Y, dst: Y }),
            op(Stage::Ffn, Add { src: Y, dst: X }),
        ]),
    ],
    head: &[
        // RMSNorm·output_norm, mean pooling, dense_2 then dense_3 (where the file has them).
        op(Stage::Norm, RmsNorm { weight: Tensor::OutputNorm, src: X, dst: X }),
        op(Stage::Pool, Pool),
        op(Stage::Pool, Dense { w: Tensor::Dense2, into: Pooled::Hidden }),
        op(Stage::Pool, Dense { w: Tensor::Dense3, into: Pooled::Embedding }),
        op(Stage::Pool, Normalize),
    ],
};
