//! qwen2 and qwen3 (Qwen embedding models): pre-norm decoders with RMSNorm, grouped-query
//! causal attention with rotary positions (NeoX), Q/K/V biases (qwen2) or per-head Q/K norms
//! (qwen3) — whichever the file has — a SwiGLU FFN, and last-token (or mean) pooling.

use super::{op, Act, Block, Buf::*, Kind::*, Program, Stage, Tensor, Tensor::Layer as L};
use crate::model::LayerSlot::*;

pub(super) const PROGRAM: Program = Program {
    embed: &[op(Stage::Embed, Embed { scaled: false })],
    layer: &[
        // h = RMSNorm(x)·attn_norm.
        Block::Once(&[op(Stage::Norm, RmsNorm { weight: L(AttnNorm), src: X, dst: Normed })]),
        // q, k, v = h·Wᵀ (+ b); per-head RMSNorm of q and k (qwen3); rotary positions;
        // causal softmax(q·kᵀ/√d)·v, a group of key/value heads at a time.
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
            // x += attention·Woᵀ; h = RMSNorm(x)·ffn_norm.
            op(Stage::AttentionOut, MatMul { w: L(AttnOut), src: Ctx, dst: X }),
            op(Stage::Norm, RmsNorm { weight: L(FfnNorm), src: X, dst: Normed }),
        ]),
        // x += (SiLU(h·W_gateᵀ) ⊙ h·W_upᵀ)·W_downᵀ, a slab of columns at a time.
        Block::PerSlab(&[
            op(Stage::Ffn, Init { dst: Up, bias: L(FfnUpBias) }),
            op(Stage::Ffn, Init { dst: Gate, bias: L(FfnGateBias) }),
            op(Stage::Ffn, MatMul { w: L(FfnUp), src: Normed, dst: Up }),
            op(Stage::Ffn, MatMul { w: L(FfnGate), src: Normed, dst: Gate }),
            op(Stage::Ffn, Act(Act::SiluGated)),
            op(Stage::Ffn, MatMul { w: L(FfnDown), src: Up, dst: X }),
        ]),
    ],
    head: &[
        op(Stage::Norm, RmsNorm { weight: Tensor::OutputNorm, src: X, dst: X }),
        op(Stage::Pool, Pool),
        op(Stage::Pool, Normalize),
    ],
};
