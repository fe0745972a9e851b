//! What the engine needs to know about a model, and nothing more: hyper-parameters, where each
//! tensor it uses lies in the file, and where the vocab is. No tensor data, no names.
//!
//! [`ModelLoader`] builds it by streaming the file once. The per-layer tensor table lives in
//! caller storage ([`LayerRefs`], one per layer), so nothing here grows with the model.

mod loader;

pub use loader::{LoadStep, ModelLoader, MIN_LOADER_SCRATCH};

use core::fmt::Write as _;

use crate::error::{Error, Malformed, Name, Result};
use crate::gguf::{GgmlType, Layout};
use crate::tokenizer::{ModelVocab, TextVocab, TokenizerKind, Vocab};

/// The architectures the engine computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// BERT: learned absolute positions, separate or fused Q/K/V with biases, GELU FFN.
    Bert,
    /// nomic-bert: rotary positions (NeoX style), fused QKV, SwiGLU FFN, no biases.
    NomicBert,
    /// gemma-embedding (EmbeddingGemma): scaled embeddings, RMSNorm before and after each
    /// branch, per-head Q/K norms, sliding-window and global layers, GELU (tanh) gated FFN,
    /// optional dense projections after pooling.
    GemmaEmbedding,
    /// Qwen2: pre-norm causal decoder, RMSNorm, Q/K/V biases, SwiGLU FFN.
    Qwen2,
    /// Qwen3: Qwen2 with per-head Q/K norms instead of biases.
    Qwen3,
}

impl Arch {
    /// The `general.architecture` string.
    pub const fn name(self) -> &'static str {
        match self {
            Arch::Bert => "bert",
            Arch::NomicBert => "nomic-bert",
            Arch::GemmaEmbedding => "gemma-embedding",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }

    /// Every architecture, in declaration order.
    pub const ALL: [Arch; 5] = [Arch::Bert, Arch::NomicBert, Arch::GemmaEmbedding, Arch::Qwen2, Arch::Qwen3];

    /// Whether the architecture is a decoder (RMSNorm, pre-norm, no embedding norm).
    pub const fn is_decoder(self) -> bool {
        matches!(self, Arch::GemmaEmbedding | Arch::Qwen2 | Arch::Qwen3)
    }
}

/// How token vectors become one text vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over all tokens ([CLS] and [SEP] included). `pooling_type` 1.
    Mean,
    /// The first token's vector ([CLS]). `pooling_type` 2.
    Cls,
    /// The last token's vector. `pooling_type` 3, for the decoder architectures.
    Last,
}

/// The model's hyper-parameters, validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HParams {
    /// Width of the hidden state (`embedding_length`).
    pub n_embd: usize,
    /// Width of the FFN's hidden layer (`feed_forward_length`).
    pub n_ff: usize,
    /// Attention heads (`attention.head_count`).
    pub n_head: usize,
    /// Key/value heads (`attention.head_count_kv`; `n_head` when absent): each serves
    /// `n_head / n_head_kv` query heads.
    pub n_head_kv: usize,
    /// Width of one query or key head (`attention.key_length`; `n_embd / n_head` when absent).
    pub head_dim_k: usize,
    /// Width of one value head (`attention.value_length`; `n_embd / n_head` when absent).
    pub head_dim_v: usize,
    /// Transformer layers (`block_count`).
    pub n_layer: usize,
    /// The longest input in tokens (`context_length`, capped by the position table for bert).
    pub n_ctx: usize,
    /// Tokens in the vocab.
    pub n_vocab: usize,
    /// The norms' epsilon: LayerNorm's (`attention.layer_norm_epsilon`) for bert and
    /// nomic-bert, RMSNorm's (`attention.layer_norm_rms_epsilon`) for the decoders.
    pub eps: f32,
    /// RoPE base (`rope.freq_base`) of the global layers; unused by bert.
    pub rope_base: f32,
    /// RoPE base of the sliding-window layers (`rope.freq_base_swa`, 10000 when absent).
    pub rope_base_swa: f32,
    /// Position scale of the global layers' RoPE: 1 / `rope.scaling.factor` (linear scaling),
    /// 1 without scaling.
    pub rope_scale: f32,
    /// Leading dimensions of each query/key head that RoPE rotates (`rope.dimension_count`;
    /// the whole head when absent).
    pub n_rot: usize,
    /// Whether a token attends only to itself and the tokens before it (qwen:
    /// `attention.causal`, true when absent).
    pub causal: bool,
    /// On sliding-window layers, a token sees the tokens at most `sliding_window / 2` positions
    /// away, on either side (`attention.sliding_window`; 0 when the model has none).
    pub sliding_window: usize,
    /// Pooling (`pooling_type`; mean when absent).
    pub pooling: Pooling,
}

impl HParams {
    /// Query heads per key/value head.
    pub fn heads_per_kv(&self) -> usize {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }
}

/// Where a tensor's data is: absolute offset, type and shape (`cols` = ne0, the contiguous row
/// length; `rows` = ne1). All validated against the file when loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorRef {
    /// Absolute offset of the data.
    pub offset: u64,
    /// Element type.
    pub ty: GgmlType,
    /// Row length (ne0).
    pub cols: u32,
    /// Number of rows (ne1).
    pub rows: u32,
}

impl TensorRef {
    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.ty.row_bytes(u64::from(self.cols)).and_then(|b| usize::try_from(b).ok()).unwrap_or(0)
    }

    /// Absolute offset of row `r`.
    pub fn row_offset(&self, r: usize) -> u64 {
        self.offset.saturating_add((self.row_bytes() as u64).saturating_mul(r as u64))
    }

    /// Bytes of the columns `[c0, c1)` of a row (both multiples of the type's block), and the
    /// offset of `c0` within the row.
    pub fn col_span(&self, c0: usize, c1: usize) -> (u64, usize) {
        let elems = self.ty.block_elems() as usize;
        let bytes = self.ty.block_bytes() as usize;
        let start = c0.checked_div(elems).unwrap_or(0).saturating_mul(bytes);
        let len = c1.saturating_sub(c0).checked_div(elems).unwrap_or(0).saturating_mul(bytes);
        (start as u64, len)
    }
}

/// LayerNorm parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Norm {
    /// Scale (γ).
    pub weight: TensorRef,
    /// Shift (β).
    pub bias: TensorRef,
}

/// One layer's tensors as they are found while the file streams by (any order); once loaded,
/// a fused Q|K|V matrix is held as its Q, K and V parts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerRefs {
    pub(crate) slots: [Option<TensorRef>; LayerSlot::COUNT],
    /// Whether the layer's attention is limited to a sliding window
    /// ([`HParams::sliding_window`]) and uses [`HParams::rope_base_swa`].
    pub(crate) sliding: bool,
}

impl LayerRefs {
    /// The tensor in `slot`, if the layer has it.
    pub(crate) fn get(&self, slot: LayerSlot) -> Option<TensorRef> {
        slot.get(self)
    }
}

/// Declares [`LayerSlot`] from one list of (slot, tensor name suffix): the enum, its
/// `COUNT`, `ALL` (declaration order) and `suffix`, so the three can never disagree.
macro_rules! layer_slots {
    ($($slot:ident => $suffix:literal,)*) => {
        /// The tensor names a layer may have, `blk.N.<suffix>`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum LayerSlot {
            $($slot,)*
        }

        impl LayerSlot {
            /// Every slot, in declaration order.
            pub(crate) const ALL: [LayerSlot; [$(LayerSlot::$slot),*].len()] = [$(LayerSlot::$slot),*];

            pub(crate) const COUNT: usize = LayerSlot::ALL.len();

            /// The tensor name's part after `blk.N.`.
            pub(crate) const fn suffix(self) -> &'static str {
                match self {
                    $(LayerSlot::$slot => $suffix,)*
                }
            }
        }
    };
}

layer_slots! {
    AttnQkv => "attn_qkv.weight",
    AttnQkvBias => "attn_qkv.bias",
    AttnQ => "attn_q.weight",
    AttnQBias => "attn_q.bias",
    AttnK => "attn_k.weight",
    AttnKBias => "attn_k.bias",
    AttnV => "attn_v.weight",
    AttnVBias => "attn_v.bias",
    AttnOut => "attn_output.weight",
    AttnOutBias => "attn_output.bias",
    AttnOutNorm => "attn_output_norm.weight",
    AttnOutNormBias => "attn_output_norm.bias",
    FfnUp => "ffn_up.weight",
    FfnUpBias => "ffn_up.bias",
    FfnGate => "ffn_gate.weight",
    FfnGateBias => "ffn_gate.bias",
    FfnDown => "ffn_down.weight",
    FfnDownBias => "ffn_down.bias",
    LayerOutNorm => "layer_output_norm.weight",
    LayerOutNormBias => "layer_output_norm.bias",
    AttnNorm => "attn_norm.weight",
    AttnQNorm => "attn_q_norm.weight",
    AttnKNorm => "attn_k_norm.weight",
    PostAttnNorm => "post_attention_norm.weight",
    FfnNorm => "ffn_norm.weight",
    PostFfwNorm => "post_ffw_norm.weight",
}

impl LayerSlot {
    /// The slot of a tensor name's part after `blk.N.`, if the engine knows it.
    pub(crate) fn from_suffix(s: &str) -> Option<Self> {
        LayerSlot::ALL.into_iter().find(|slot| slot.suffix() == s)
    }

    /// Whether the slot holds a bias vector (read in pieces, never a whole row at once).
    pub(crate) const fn is_bias(self) -> bool {
        use LayerSlot::*;
        matches!(
            self,
            AttnQkvBias
                | AttnQBias
                | AttnKBias
                | AttnVBias
                | AttnOutBias
                | FfnUpBias
                | FfnGateBias
                | FfnDownBias
        )
    }

    pub(crate) fn get(self, refs: &LayerRefs) -> Option<TensorRef> {
        refs.slots.get(self as usize).copied().flatten()
    }
}

/// Everything about a model except its per-layer tensors (see [`Model`]). Small and `Copy`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelMeta {
    /// Architecture.
    pub arch: Arch,
    /// Hyper-parameters.
    pub hparams: HParams,
    /// Token embeddings (`token_embd`): one row of n_embd per token.
    pub token_embd: TensorRef,
    /// Absolute position embeddings (bert).
    pub position_embd: Option<TensorRef>,
    /// Token-type embeddings; row 0 is added to every token.
    pub token_types: Option<TensorRef>,
    /// LayerNorm after the embeddings (bert, nomic-bert).
    pub embd_norm: Option<Norm>,
    /// RMSNorm weight after the last layer (decoders).
    pub output_norm: Option<TensorRef>,
    /// The projections of the pooled vector (gemma-embedding, when the file has them):
    /// `dense_2` (n_embd → its rows), then `dense_3` (back to n_embd).
    pub dense: Option<[TensorRef; 2]>,
    /// The vocab: where its entries are, the special tokens.
    pub vocab: Vocab,
    /// The tokenizer the file names.
    pub tokenizer: TokenizerKind,
    /// The SentencePiece or BPE vocab (what the loader's pass over every entry learned); `None`
    /// for WordPiece.
    pub model_vocab: Option<ModelVocab>,
    /// Where everything is in the file.
    pub layout: Layout,
}

impl ModelMeta {
    /// The vocab as the model's tokenizer needs it.
    pub fn text_vocab(&self) -> TextVocab {
        match self.model_vocab {
            Some(v) => TextVocab::Model(v),
            None => TextVocab::WordPiece(self.vocab),
        }
    }
}

/// A loaded model: its metadata plus one [`LayerRefs`] per layer, in caller storage.
#[derive(Debug, Clone, Copy)]
pub struct Model<'m> {
    meta: ModelMeta,
    layers: &'m [LayerRefs],
}

impl<'m> Model<'m> {
    /// Joins metadata and the layer table a [`ModelLoader`] produced. `layers` must be exactly
    /// the filled part of the loader's storage (`meta.hparams.n_layer` entries).
    pub fn new(meta: ModelMeta, layers: &'m [LayerRefs]) -> Result<Self> {
        if layers.len() != meta.hparams.n_layer {
            return Err(Error::BufferTooSmall { needed: meta.hparams.n_layer, given: layers.len() });
        }
        for (i, refs) in layers.iter().enumerate() {
            check_needs(meta.arch, i, refs)?;
        }
        Ok(Model { meta, layers })
    }

    /// The metadata.
    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// The hyper-parameters.
    pub fn hparams(&self) -> &HParams {
        &self.meta.hparams
    }

    /// Layer `i`'s tensors. Loading validated them, so this fails only for `i` out of range.
    pub fn layer(&self, i: usize) -> Result<&'m LayerRefs> {
        self.layers.get(i).ok_or(Error::InvalidState)
    }
}

/// The name `blk.{index}.{suffix}` (for errors).
pub(crate) fn layer_tensor_name(index: usize, suffix: &str) -> Name {
    let mut name = heapless::String::<{ Name::CAPACITY }>::new();
    // A name too long for the buffer is cut; the error stays useful.
    let _ = write!(name, "blk.{index}.{suffix}");
    Name::new(&name)
}

/// Whether an architecture uses a layer tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// The layer must have it: absent is [`Malformed::MissingTensor`].
    Required,
    /// Used when present; present in every layer or in none (a single layer without it is a
    /// renamed or dropped tensor, [`Malformed::MissingTensor`]).
    Optional,
    /// Not part of the architecture: present is [`Malformed::UnexpectedTensor`] (a file of
    /// another variant, which computing without it would get silently wrong).
    Unused,
}

impl Arch {
    /// What the architecture needs of each layer tensor. `fused` tells whether the layer stores
    /// Q, K and V as one `attn_qkv` matrix (both layouts are accepted; one of them entirely).
    ///
    /// bert checkpoints have every bias; nomic-bert ones (nomic-embed-text) have none, but a
    /// variant with biases computes correctly, so they are optional there. The decoders'
    /// Q/K/V biases are optional (Qwen2 files have them, llama.cpp adds them wherever they
    /// are); they have no other bias.
    pub(crate) fn need(self, slot: LayerSlot, fused: bool) -> Need {
        use LayerSlot::*;
        use Need::*;
        let decoder = self.is_decoder();
        let bias = match self {
            Arch::Bert => Required,
            Arch::NomicBert => Optional,
            Arch::GemmaEmbedding | Arch::Qwen2 | Arch::Qwen3 => Unused,
        };
        let qkv_bias = if decoder { Optional } else { bias };
        let when = |used: bool, need: Need| if used { need } else { Unused };
        match slot {
            AttnQkv if fused => Required,
            AttnQ | AttnK | AttnV if !fused => Required,
            AttnQkvBias if fused => qkv_bias,
            AttnQBias | AttnKBias | AttnVBias if !fused => qkv_bias,
            AttnQkv | AttnQ | AttnK | AttnV | AttnQkvBias | AttnQBias | AttnKBias | AttnVBias => Unused,
            AttnOut | FfnUp | FfnDown => Required,
            AttnOutBias | FfnUpBias | FfnDownBias => bias,
            AttnOutNorm | AttnOutNormBias | LayerOutNorm | LayerOutNormBias => when(!decoder, Required),
            FfnGate => when(self != Arch::Bert, Required),
            FfnGateBias => when(self == Arch::NomicBert, Optional),
            AttnNorm | FfnNorm => when(decoder, Required),
            AttnQNorm | AttnKNorm => when(matches!(self, Arch::GemmaEmbedding | Arch::Qwen3), Required),
            PostAttnNorm | PostFfwNorm => when(self == Arch::GemmaEmbedding, Required),
        }
    }
}

/// Checks layer `index`'s tensors against what `arch` needs (see [`Arch::need`]): a required
/// one missing is [`Malformed::MissingTensor`], one the architecture does not use
/// [`Malformed::UnexpectedTensor`].
pub(crate) fn check_needs(arch: Arch, index: usize, refs: &LayerRefs) -> Result<()> {
    let fused = LayerSlot::AttnQkv.get(refs).is_some();
    for slot in LayerSlot::ALL {
        let name = || layer_tensor_name(index, slot.suffix());
        match (arch.need(slot, fused), slot.get(refs)) {
            (Need::Required, None) => return Err(Error::malformed(Malformed::MissingTensor(name()), 0)),
            (Need::Unused, Some(t)) => {
                return Err(Error::malformed(Malformed::UnexpectedTensor(name()), t.offset))
            }
            _ => {}
        }
    }
    Ok(())
}
