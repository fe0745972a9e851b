//! nomic-bert (nomic-embed-text): bert with rotary positions (NeoX) instead of learned ones, a
//! fused Q|K|V matrix (the loader splits it into Q, K and V), a SwiGLU FFN and, usually, no
//! biases (the optional ones are added where a file has them).

use super::{op, Act, Block, Buf::*, Kind::*, Program, Stage, Tensor, Tensor::Layer as L};
use crate::model::LayerSlot::*;

pub(super) const PROGRAM: Program = Program {
    embed: &[
        // x = token_embd[id] (+ token_types[0]); x = LN(x).
        op(Stage::Embed, Embed { scaled: false }),
        op(
            Stage::Norm,
            LayerNorm { weight: Tensor::EmbdNormWeight, bias: Tensor::EmbdNormBias, src: X, dst: X },
        ),
    ],
    layer: &[
        // q, k, v = x·Wᵀ (+ b); rotary positions on q and k; softmax(q·kᵀ/√d)·v.
        Block::PerHeadGroup(&[
            op(Stage::Qkv, Init { dst: Q, bias: L(AttnQBias) }),
            op(Stage::Qkv, Init { dst: K, bias: L(AttnKBias) }),
            op(Stage::Qkv, Init { dst: V, bias: L(AttnVBias) }),
            op(Stage::Qkv, MatMul { w: L(AttnQ), src: X, dst: Q }),
            op(Stage::Qkv, MatMul { w: L(AttnK), src: X, dst: K }),
            op(Stage::Qkv, MatMul { w: L(AttnV), src: X, dst: V }),
            op(Stage::Qkv, Rope),
            op(Stage::Attention, Attention),
        ]),
        Block::Once(&[
            // x = LN(x + attention·Woᵀ (+ bo)).
            op(Stage::AttentionOut, AddBias { dst: X, bias: L(AttnOutBias) }),
            op(Stage::AttentionOut, MatMul { w: L(AttnOut), src: Ctx, dst: X }),
            op(Stage::Norm, LayerNorm { weight: L(AttnOutNorm), bias: L(AttnOutNormBias), src: X, dst: X }),
            // y = x (+ b_down), then y += (SiLU(x·W_gateᵀ) ⊙ x·W_upᵀ)·W_downᵀ by slabs.
            op(Stage::Ffn, Copy { src: X, dst: Y }),
            op(Stage::Ffn, AddBias { dst: Y, bias: L(FfnDownBias) }),
        ]),
        Block::PerSlab(&[
            op(Stage::Ffn, Init { dst: Up, bias: L(FfnUpBias) }),
            op(Stage::Ffn, Init { dst: Gate, bias: L(FfnGateBias) }),
            op(Stage::Ffn, MatMul { w: L(FfnUp), src: X, dst: Up }),
            op(Stage::Ffn, MatMul { w: L(FfnGate), src: X, dst: Gate }),
            op(Stage::Ffn, Act(Act::SiluGated)),
            op(Stage::Ffn, MatMul { w: L(FfnDown), src: Up, dst: Y }),
        ]),
        // x = LN(y).
        Block::Once(&[op(
            Stage::Norm,
            LayerNorm { weight: L(LayerOutNorm), bias: L(LayerOutNormBias), src: Y, dst: X },
        )]),
    ],
    head: &[op(Stage::Pool, Pool), op(Stage::Pool, Normalize)],
};
