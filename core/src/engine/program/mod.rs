//! The forward pass of each architecture as a table of operations ([`Program`]), which one
//! interpreter (`engine::job`) runs a budget at a time and the planner sizes the arena from.
//!
//! A program has three parts: what turns token ids into hidden states, what every layer does,
//! and what turns hidden states into embeddings. A layer is a list of [`Block`]s; a block runs
//! its operations once, or once per group of attention heads, or once per slab of the FFN's
//! hidden columns — so that memory grows with neither the head count nor the FFN width.
//!
//! Operations name the tensors they read ([`Tensor`]) and the activation buffers they read and
//! write ([`Buf`]); where a buffer lies in the arena, and which rows of a weight matrix the
//! current head group or slab needs, is the interpreter's business. Adding an architecture means
//! writing its table here and its tensor names in `model`.

mod bert;
mod nomic_bert;

use crate::model::{Arch, LayerSlot};

/// One architecture's forward pass.
#[derive(Debug)]
pub(crate) struct Program {
    /// Token ids → hidden states `X`.
    pub embed: &'static [Op],
    /// What each layer does to `X`.
    pub layer: &'static [Block],
    /// `X` → one embedding per text (in the job's outputs).
    pub head: &'static [Op],
}

/// A run of operations and how often it repeats within a layer.
#[derive(Debug)]
pub(crate) enum Block {
    /// Once.
    Once(&'static [Op]),
    /// Once per group of attention heads, the group's Q, K and V in [`Buf::Q`], [`Buf::K`],
    /// [`Buf::V`].
    PerHeadGroup(&'static [Op]),
    /// Once per slab of the FFN's hidden columns, held in [`Buf::Up`] (and [`Buf::Gate`]).
    PerSlab(&'static [Op]),
}

impl Block {
    /// The block's operations.
    pub fn ops(&self) -> &'static [Op] {
        match self {
            Block::Once(ops) | Block::PerHeadGroup(ops) | Block::PerSlab(ops) => ops,
        }
    }
}

/// An operation and the stage it reports (in progress and in errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Op {
    pub stage: Stage,
    pub kind: Kind,
}

/// A table row: `kind`, reported as `stage`.
const fn op(stage: Stage, kind: Kind) -> Op {
    Op { stage, kind }
}

/// What a job reports it works on ([`crate::engine::Progress::stage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Embed,
    Qkv,
    Attention,
    AttentionOut,
    Norm,
    Ffn,
    Pool,
}

impl Stage {
    /// The stage's name.
    pub const fn name(self) -> &'static str {
        match self {
            Stage::Embed => "embed",
            Stage::Qkv => "qkv",
            Stage::Attention => "attention",
            Stage::AttentionOut => "attention-out",
            Stage::Norm => "norm",
            Stage::Ffn => "ffn",
            Stage::Pool => "pool",
        }
    }
}

/// The operations. Token-wise ones work on a run of tokens at a time; a matrix product on a
/// run of weight rows; attention on a run of query tiles of one text; pooling on one text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `X ← token_embd[id]`, plus `position_embd[position]` and `token_types[0]` where the model
    /// has them.
    Embed,
    /// `dst ← 0`, plus `bias` (its elements for the rows `dst` holds) where the model has it.
    Init { dst: Buf, bias: Tensor },
    /// `dst += bias` where the model has the bias (else nothing to do).
    AddBias { dst: Buf, bias: Tensor },
    /// `dst ← src`.
    Copy { src: Buf, dst: Buf },
    /// `dst += src · Wᵀ`: for the rows of `w` that `dst` holds (the group's heads, the slab's
    /// columns, or all), over the columns `src` holds.
    MatMul { w: Tensor, src: Buf, dst: Buf },
    /// `dst ← LayerNorm(src) · weight + bias`.
    LayerNorm { weight: Tensor, bias: Tensor, src: Buf, dst: Buf },
    /// Rotary positions (NeoX pairs `(i, i + d/2)`) on the group's Q and K.
    Rope,
    /// Softmax attention of the group's heads, every text on its own, into [`Buf::Ctx`].
    Attention,
    /// The FFN's activation on the slab, in [`Buf::Up`].
    Act(Act),
    /// Each text's token vectors → its embedding.
    Pool,
    /// Each embedding to unit L2 norm (when the job's options ask for it), checked finite.
    Normalize,
}

/// The FFN activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Act {
    /// `up ← GELU(up)`, the exact (erf) GELU.
    Gelu,
    /// `up ← SiLU(gate) ⊙ up` (SwiGLU).
    SiluGated,
}

/// A tensor an operation reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tensor {
    /// The current layer's.
    Layer(LayerSlot),
    /// The embedding LayerNorm's weight.
    EmbdNormWeight,
    /// The embedding LayerNorm's bias.
    EmbdNormBias,
}

/// The activation buffers, per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Buf {
    /// The hidden states (n_embd).
    X,
    /// The attention output, all heads (n_head · head_dim).
    Ctx,
    /// The FFN output (n_embd), kept apart from `X` until the residual is added.
    Y,
    /// The group's queries, keys and values.
    Q,
    K,
    V,
    /// The slab's up (or only) columns, and its gate columns.
    Up,
    Gate,
}

impl Program {
    /// The program of `arch`.
    pub fn of(arch: Arch) -> &'static Program {
        match arch {
            Arch::Bert => &bert::PROGRAM,
            Arch::NomicBert => &nomic_bert::PROGRAM,
        }
    }

    /// Every operation of a layer.
    fn layer_ops(&self) -> impl Iterator<Item = &'static Op> + '_ {
        self.layer.iter().flat_map(|b| b.ops().iter())
    }

    /// Whether the FFN has a gate (its slab holds gate columns beside the up ones).
    pub fn gated(&self) -> bool {
        self.layer_ops().any(|op| matches!(op.kind, Kind::MatMul { dst: Buf::Gate, .. }))
    }
}
