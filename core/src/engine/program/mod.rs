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
mod gemma_embedding;
mod nomic_bert;
mod qwen;

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
    /// has them; times √n_embd when `scaled`.
    Embed { scaled: bool },
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
    /// `dst ← RMSNorm(src) · weight`.
    RmsNorm { weight: Tensor, src: Buf, dst: Buf },
    /// Each head of the group's Q or K (`dst`) ← RMSNorm(head) · weight, where the model has the
    /// weight (else nothing to do).
    HeadNorm { weight: Tensor, dst: Buf },
    /// `dst += src` (a residual).
    Add { src: Buf, dst: Buf },
    /// Rotary positions (NeoX pairs `(i, i + n_rot/2)`) on the group's Q and K, with the
    /// layer's base (the sliding-window layers' own one where the model has those).
    Rope,
    /// Softmax attention of the group's heads, every text on its own, into [`Buf::Ctx`]: each
    /// query sees the keys the model's mask lets it (all, the ones up to itself when causal,
    /// the ones within the window on sliding-window layers); a key/value head serves
    /// `n_head / n_head_kv` query heads.
    Attention,
    /// The FFN's activation on the slab, in [`Buf::Up`].
    Act(Act),
    /// Each text's token vectors → its embedding.
    Pool,
    /// Each text's pooled vector through `w` (nothing to do when the model lacks it): `dst ←
    /// src · wᵀ`, from the embeddings into the dense hidden vectors or back.
    Dense { w: Tensor, into: Pooled },
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
    /// `up ← GELU_tanh(gate) ⊙ up` (GeGLU with the tanh approximation).
    GeluTanhGated,
}

/// Where a [`Kind::Dense`] writes (it reads the other): one vector per text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pooled {
    /// The dense hidden vectors (as wide as the projection's rows), in the wide region.
    Hidden,
    /// The job's embeddings (n_embd).
    Embedding,
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
    /// The RMSNorm weight after the last layer.
    OutputNorm,
    /// The first projection of the pooled vector (`dense_2`), and the second (`dense_3`).
    Dense2,
    Dense3,
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
    /// A normed copy of `X` (n_embd) that the pre-norm architectures' branches read, later a
    /// branch's output before its norm.
    Normed,
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
            Arch::GemmaEmbedding => &gemma_embedding::PROGRAM,
            Arch::Qwen2 | Arch::Qwen3 => &qwen::PROGRAM,
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

    /// Whether a layer uses [`Buf::Normed`] (which then takes room in the wide region).
    pub fn normed(&self) -> bool {
        let writes = |op: &Op| match op.kind {
            Kind::RmsNorm { dst, .. } | Kind::Init { dst, .. } => dst == Buf::Normed,
            _ => false,
        };
        self.layer_ops().any(writes)
    }
}
