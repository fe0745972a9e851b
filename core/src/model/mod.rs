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
use crate::tokenizer::Vocab;

/// The architectures the engine computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// BERT: learned absolute positions, separate or fused Q/K/V with biases, GELU FFN.
    Bert,
    /// nomic-bert: rotary positions (NeoX style), fused QKV, SwiGLU FFN, no biases.
    NomicBert,
}

impl Arch {
    /// The `general.architecture` string.
    pub const fn name(self) -> &'static str {
        match self {
            Arch::Bert => "bert",
            Arch::NomicBert => "nomic-bert",
        }
    }
}

/// How token vectors become one text vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over all tokens ([CLS] and [SEP] included). `pooling_type` 1.
    Mean,
    /// The first token's vector ([CLS]). `pooling_type` 2.
    Cls,
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
    /// Transformer layers (`block_count`).
    pub n_layer: usize,
    /// The longest input in tokens (`context_length`, capped by the position table for bert).
    pub n_ctx: usize,
    /// Tokens in the vocab.
    pub n_vocab: usize,
    /// LayerNorm epsilon (`attention.layer_norm_epsilon`).
    pub eps: f32,
    /// RoPE base (`rope.freq_base`), nomic-bert only.
    pub rope_base: f32,
    /// Pooling (`pooling_type`; mean when absent).
    pub pooling: Pooling,
}

impl HParams {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.n_embd.checked_div(self.n_head).unwrap_or(0)
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

/// A weight matrix with an optional bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linear {
    /// The weight: `rows` outputs of `cols` inputs.
    pub weight: TensorRef,
    /// The bias (`rows` values), if the model has one.
    pub bias: Option<TensorRef>,
}

/// LayerNorm parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Norm {
    /// Scale (γ).
    pub weight: TensorRef,
    /// Shift (β).
    pub bias: TensorRef,
}

/// Q, K and V projections: one fused matrix (rows q, then k, then v) or three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qkv {
    /// `attn_qkv`: 3·n_embd rows.
    Fused(Linear),
    /// `attn_q`, `attn_k`, `attn_v`.
    Separate([Linear; 3]),
}

/// The tensors of one transformer layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    /// Q, K, V projections.
    pub qkv: Qkv,
    /// Attention output projection.
    pub attn_out: Linear,
    /// LayerNorm after attention.
    pub attn_norm: Norm,
    /// FFN up projection.
    pub ffn_up: Linear,
    /// FFN gate projection (nomic-bert's SwiGLU).
    pub ffn_gate: Option<Linear>,
    /// FFN down projection.
    pub ffn_down: Linear,
    /// LayerNorm after the FFN.
    pub out_norm: Norm,
}

/// One layer's tensors as they are found while the file streams by (any order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerRefs {
    pub(crate) slots: [Option<TensorRef>; LayerSlot::COUNT],
}

/// The tensor names a layer may have, `blk.N.<suffix>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LayerSlot {
    Qkv,
    QkvBias,
    Q,
    QBias,
    K,
    KBias,
    V,
    VBias,
    Out,
    OutBias,
    AttnNormW,
    AttnNormB,
    Up,
    UpBias,
    Gate,
    GateBias,
    Down,
    DownBias,
    OutNormW,
    OutNormB,
}

impl LayerSlot {
    pub(crate) const COUNT: usize = 20;

    /// Every slot, in declaration order.
    pub(crate) const ALL: [LayerSlot; LayerSlot::COUNT] = {
        use LayerSlot::*;
        [
            Qkv, QkvBias, Q, QBias, K, KBias, V, VBias, Out, OutBias, AttnNormW, AttnNormB, Up, UpBias, Gate,
            GateBias, Down, DownBias, OutNormW, OutNormB,
        ]
    };

    /// The tensor name's part after `blk.N.`.
    pub(crate) const fn suffix(self) -> &'static str {
        use LayerSlot::*;
        match self {
            Qkv => "attn_qkv.weight",
            QkvBias => "attn_qkv.bias",
            Q => "attn_q.weight",
            QBias => "attn_q.bias",
            K => "attn_k.weight",
            KBias => "attn_k.bias",
            V => "attn_v.weight",
            VBias => "attn_v.bias",
            Out => "attn_output.weight",
            OutBias => "attn_output.bias",
            AttnNormW => "attn_output_norm.weight",
            AttnNormB => "attn_output_norm.bias",
            Up => "ffn_up.weight",
            UpBias => "ffn_up.bias",
            Gate => "ffn_gate.weight",
            GateBias => "ffn_gate.bias",
            Down => "ffn_down.weight",
            DownBias => "ffn_down.bias",
            OutNormW => "layer_output_norm.weight",
            OutNormB => "layer_output_norm.bias",
        }
    }

    /// The slot of a tensor name's part after `blk.N.`, if the engine knows it.
    pub(crate) fn from_suffix(s: &str) -> Option<Self> {
        LayerSlot::ALL.into_iter().find(|slot| slot.suffix() == s)
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
    /// LayerNorm after the embeddings.
    pub embd_norm: Norm,
    /// The vocab: where its entries are, the special tokens.
    pub vocab: Vocab,
    /// Where everything is in the file.
    pub layout: Layout,
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
        let model = Model { meta, layers };
        for i in 0..layers.len() {
            model.layer(i)?;
        }
        Ok(model)
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
    pub fn layer(&self, i: usize) -> Result<Layer> {
        let refs = self.layers.get(i).ok_or(Error::InvalidState)?;
        resolve_layer(self.meta.arch, i, refs)
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
    /// variant with biases computes correctly, so they are optional there.
    pub(crate) fn need(self, slot: LayerSlot, fused: bool) -> Need {
        use LayerSlot::*;
        use Need::*;
        let bias = match self {
            Arch::Bert => Required,
            Arch::NomicBert => Optional,
        };
        match slot {
            Qkv if fused => Required,
            Q | K | V if !fused => Required,
            QkvBias if fused => bias,
            QBias | KBias | VBias if !fused => bias,
            Qkv | Q | K | V | QkvBias | QBias | KBias | VBias => Unused,
            Out | AttnNormW | AttnNormB | Up | Down | OutNormW | OutNormB => Required,
            OutBias | UpBias | DownBias => bias,
            Gate => match self {
                Arch::Bert => Unused,
                Arch::NomicBert => Required,
            },
            GateBias => match self {
                Arch::Bert => Unused,
                Arch::NomicBert => Optional,
            },
        }
    }
}

/// The layer's tensors as the engine uses them, checked against what `arch` needs (see
/// [`Arch::need`]); `Optional` tensors are taken as found (the loader checks they are in all
/// layers or none).
pub(crate) fn resolve_layer(arch: Arch, index: usize, refs: &LayerRefs) -> Result<Layer> {
    use LayerSlot::*;
    let fused = Qkv.get(refs).is_some();
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
    // Every required slot is now known to be present.
    let req = |slot: LayerSlot| slot.get(refs).ok_or(Error::InvalidState);
    let lin =
        |w: LayerSlot, b: LayerSlot| -> Result<Linear> { Ok(Linear { weight: req(w)?, bias: b.get(refs) }) };
    let qkv = if fused {
        self::Qkv::Fused(lin(Qkv, QkvBias)?)
    } else {
        self::Qkv::Separate([lin(Q, QBias)?, lin(K, KBias)?, lin(V, VBias)?])
    };
    let ffn_gate = match arch {
        Arch::NomicBert => Some(lin(Gate, GateBias)?),
        Arch::Bert => None,
    };
    Ok(Layer {
        qkv,
        attn_out: lin(Out, OutBias)?,
        attn_norm: Norm { weight: req(AttnNormW)?, bias: req(AttnNormB)? },
        ffn_up: lin(Up, UpBias)?,
        ffn_gate,
        ffn_down: lin(Down, DownBias)?,
        out_norm: Norm { weight: req(OutNormW)?, bias: req(OutNormB)? },
    })
}
