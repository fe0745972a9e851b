//! bert (BERT, MiniLM, BGE, …): learned absolute positions, Q/K/V with biases, post-norm
//! (LayerNorm after each residual), GELU (erf) FFN, mean or CLS pooling.

use super::{op, Act, Block, Buf::*, Kind::*, Program, Stage, Tensor, Tensor::Layer as L};
use crate::model::LayerSlot::*;

pub(super) const PROGRAM: Program = Program {
    embed: &[
        // x = token_embd[id] + position_embd[pos] + token_types[0]; x = LN(x).
        op(Stage::Embed, Embed { scaled: false }),
        op(
            Stage::Norm,
            LayerNorm { weight: Tensor::EmbdNormWeight, bias: Tensor::EmbdNormBias, src: X, dst: X },
        ),
    ],
    layer: &[
        // q, k, v = x·Wᵀ + b, then softmax(q·kᵀ/√d)·v, a group of heads at a time.
        Block::PerHeadGroup(&[
            op(Stage::Qkv, Init { dst: Q, bias: L(AttnQBias) }),
            op(Stage::Qkv, Init { dst: K, bias: L(AttnKBias) }),
            op(Stage::Qkv, Init { dst: V, bias: L(AttnVBias) }),
            op(Stage::Qkv, MatMul { w: L(AttnQ), src: X, dst: Q }),
            op(Stage::Qkv, MatMul { w: L(AttnK), src: X, dst: K }),
            op(Stage::Qkv, MatMul { w: L(AttnV), src: X, dst: V }),
            op(Stage::Attention, Attention),
        ]),
        Block::Once(&[
            // x = LN(x + attention·Woᵀ + bo).
            op(Stage::AttentionOut, AddBias { dst: X, bias: L(AttnOutBias) }),
            op(Stage::AttentionOut, MatMul { w: L(AttnOut), src: Ctx, dst: X }),
            op(Stage::Norm, LayerNorm { weight: L(AttnOutNorm), bias: L(AttnOutNormBias), src: X, dst: X }),
            // y = x + b_down, then y += GELU(x·Wupᵀ + b_up)·W_downᵀ a slab of columns at a time.
            op(Stage::Ffn, Copy { src: X, dst: Y }),
            op(Stage::Ffn, AddBias { dst: Y, bias: L(FfnDownBias) }),
        ]),
        Block::PerSlab(&[
            op(Stage::Ffn, Init { dst: Up, bias: L(FfnUpBias) }),
            op(Stage::Ffn, MatMul { w: L(FfnUp), src: X, dst: Up }),
            op(Stage::Ffn, Act(Act::Gelu)),
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
