//! [`ModelLoader`]: reads a GGUF file once, step by step, keeping only what the engine needs.

use crate::error::{Error, Malformed, Name, Result, Unsupported};
use crate::gguf::{Event, Reader, TensorInfo, Value, MIN_SCRATCH};
use crate::io::Source;
use crate::model::{
    check_needs, layer_tensor_name, Arch, HParams, LayerRefs, LayerSlot, ModelMeta, Norm, Pooling, TensorRef,
};
use crate::quant;
use crate::tokenizer::{Step as TokStep, Vocab, VocabLoader, VocabMeta, MIN_VOCAB_SCRATCH};

/// The smallest scratch [`ModelLoader::new`] accepts: the GGUF reader's and the vocab loader's.
pub const MIN_LOADER_SCRATCH: usize = MIN_SCRATCH + MIN_VOCAB_SCRATCH;

/// Vocab entries read per step while looking for the special tokens' strings.
const VOCAB_ENTRIES_PER_STEP: u32 = 1024;

/// Upper bounds on hyper-parameters: far above any embedding model, low enough that every size
/// derived from them fits comfortably in `usize` arithmetic.
const MAX_EMBD: u64 = 1 << 16;
const MAX_FF: u64 = 1 << 18;
const MAX_HEADS: u64 = 1 << 10;
const MAX_LAYERS: u64 = 1 << 12;
const MAX_CTX: u64 = 1 << 20;

/// What one [`ModelLoader::step`] achieved.
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use]
// The metadata is returned by value: there is no allocator to box it in.
#[allow(clippy::large_enum_variant)]
pub enum LoadStep {
    /// More to read: call `step` again.
    Pending,
    /// The model is loaded and valid; the layer storage's first `hparams.n_layer` entries are
    /// filled. Later steps return this again.
    Done(ModelMeta),
}

/// Hyper-parameter values as found, for one architecture prefix.
#[derive(Debug, Clone, Copy, Default)]
struct RawHParams {
    embd: Option<u64>,
    ff: Option<u64>,
    heads: Option<u64>,
    layers: Option<u64>,
    ctx: Option<u64>,
    eps: Option<f64>,
    rope_base: Option<f64>,
    pooling: Option<u64>,
}

/// Reads a model file step by step: metadata, then the tensors the architecture uses.
///
/// Each [`ModelLoader::step`] does one bounded [`Reader::step`] of parsing. Every tensor the
/// engine will use is checked here — shape, type (one the engine can compute with, else
/// [`Unsupported::TensorType`] naming it), place in the file — so nothing fails later, halfway
/// through a layer. Errors poison the loader.
#[derive(Debug)]
pub struct ModelLoader<'s, 'm> {
    reader: Reader<'s>,
    /// Scratch for reading the special tokens' strings once the reader is done.
    vocab_scratch: &'s mut [u8],
    vocab_loader: Option<VocabLoader>,
    layers: &'m mut [LayerRefs],
    found: Found,
    n_layer: Option<usize>,
    layout: Option<crate::gguf::Layout>,
    state: State,
}

/// What the metadata said, as it streams by.
#[derive(Debug, Default)]
struct Found {
    arch: Option<Arch>,
    raw: [RawHParams; 2],
    vocab: VocabMeta,
    token_embd: Option<TensorRef>,
    position_embd: Option<TensorRef>,
    token_types: Option<TensorRef>,
    embd_norm: [Option<TensorRef>; 2],
}

#[derive(Debug, Clone, Copy)]
#[allow(clippy::large_enum_variant)]
enum State {
    Reading,
    Done(ModelMeta),
    Failed(Error),
}

impl<'s, 'm> ModelLoader<'s, 'm> {
    /// A loader parsing in `scratch` (at least [`MIN_LOADER_SCRATCH`] bytes; 4 KiB reads
    /// big vocabs faster) and keeping one [`LayerRefs`] per layer in `layers`.
    ///
    /// `layers` shorter than the model's layer count fails with [`Error::BufferTooSmall`] whose
    /// `needed` is the layer count, as soon as it is known: retry with that much storage.
    pub fn new(scratch: &'s mut [u8], layers: &'m mut [LayerRefs]) -> Result<Self> {
        if scratch.len() < MIN_LOADER_SCRATCH {
            return Err(Error::BufferTooSmall { needed: MIN_LOADER_SCRATCH, given: scratch.len() });
        }
        let split = scratch.len().saturating_sub(MIN_VOCAB_SCRATCH);
        let (reader_scratch, vocab_scratch) = scratch.split_at_mut(split);
        Ok(ModelLoader {
            reader: Reader::new(reader_scratch)?,
            vocab_scratch,
            vocab_loader: None,
            layers,
            found: Found::default(),
            n_layer: None,
            layout: None,
            state: State::Reading,
        })
    }

    /// Does one bounded piece of loading.
    pub fn step<S: Source + ?Sized>(&mut self, io: &mut S) -> Result<LoadStep> {
        match self.state {
            State::Done(meta) => return Ok(LoadStep::Done(meta)),
            State::Failed(e) => return Err(e),
            State::Reading => {}
        }
        match self.advance(io) {
            Ok(step) => {
                if let LoadStep::Done(meta) = step {
                    self.state = State::Done(meta);
                }
                Ok(step)
            }
            Err(e) => {
                self.state = State::Failed(e);
                Err(e)
            }
        }
    }

    /// Runs [`ModelLoader::step`] to the end. Not bounded: for tools and tests.
    pub fn load<S: Source + ?Sized>(&mut self, io: &mut S) -> Result<ModelMeta> {
        loop {
            if let LoadStep::Done(meta) = self.step(io)? {
                return Ok(meta);
            }
        }
    }

    /// The filled layer storage (valid once loading is done).
    pub fn layers(&self) -> &[LayerRefs] {
        let n = self.n_layer.unwrap_or(0);
        self.layers.get(..n).unwrap_or_default()
    }

    fn advance<S: Source + ?Sized>(&mut self, io: &mut S) -> Result<LoadStep> {
        if let Some(loader) = &mut self.vocab_loader {
            // The reader is done; read the special tokens' strings, then finish.
            if loader.step(io, self.vocab_scratch, VOCAB_ENTRIES_PER_STEP)? == TokStep::Pending {
                return Ok(LoadStep::Pending);
            }
            let vocab = loader.vocab()?;
            let layout = self.layout.ok_or(Error::InvalidState)?;
            return Ok(LoadStep::Done(self.finish(layout, vocab)?));
        }
        let event = self.reader.step(io)?;
        match event {
            Event::Kv { key, value } => {
                note_kv(&mut self.found, key, value)?;
                Ok(LoadStep::Pending)
            }
            Event::Tensor(t) => {
                self.note_tensor(&t)?;
                Ok(LoadStep::Pending)
            }
            Event::Done(layout) => {
                self.layout = Some(layout);
                self.vocab_loader = Some(self.found.vocab.loader()?);
                Ok(LoadStep::Pending)
            }
            Event::Header(_) | Event::Progress => Ok(LoadStep::Pending),
        }
    }

    /// The architecture, once known.
    fn arch(&self) -> Result<Arch> {
        self.found.arch.ok_or(Error::malformed(Malformed::MissingKey("general.architecture"), 0))
    }

    fn raw(&self) -> Result<&RawHParams> {
        let i = self.arch()? as usize;
        self.found.raw.get(i).ok_or(Error::InvalidState)
    }

    /// The layer count: known once the metadata is read; checks the caller's storage.
    fn n_layer(&mut self) -> Result<usize> {
        if let Some(n) = self.n_layer {
            return Ok(n);
        }
        let layers = self.raw()?.layers.ok_or(missing_key(self.arch()?, KeySuffix::Layers))?;
        let n = bounded(layers, 1, MAX_LAYERS, "block_count")?;
        if n > self.layers.len() {
            return Err(Error::BufferTooSmall { needed: n, given: self.layers.len() });
        }
        for slot in self.layers.iter_mut().take(n) {
            *slot = LayerRefs::default();
        }
        self.n_layer = Some(n);
        Ok(n)
    }

    fn note_tensor(&mut self, t: &TensorInfo) -> Result<()> {
        let name = t.name.as_str();
        let f = &mut self.found;
        let global = match name {
            "token_embd.weight" => Some(&mut f.token_embd),
            "position_embd.weight" => Some(&mut f.position_embd),
            "token_types.weight" => Some(&mut f.token_types),
            "token_embd_norm.weight" => f.embd_norm.get_mut(0),
            "token_embd_norm.bias" => f.embd_norm.get_mut(1),
            _ => None,
        };
        if let Some(slot) = global {
            return store(slot, t);
        }
        let Some((index, slot)) = parse_layer_name(name) else {
            return Ok(());
        };
        let n = self.n_layer()?;
        if index >= n {
            // Tensors of layers the model does not have are not ours to use.
            return Ok(());
        }
        let refs = self.layers.get_mut(index).ok_or(Error::InvalidState)?;
        let slot = refs.slots.get_mut(slot as usize).ok_or(Error::InvalidState)?;
        store(slot, t)
    }

    fn finish(&mut self, layout: crate::gguf::Layout, vocab: Vocab) -> Result<ModelMeta> {
        let arch = self.arch()?;
        let raw = *self.raw()?;
        let n_layer = self.n_layer()?;
        let req = |v: Option<u64>, k: KeySuffix| v.ok_or(missing_key(arch, k));
        let n_embd = bounded(req(raw.embd, KeySuffix::Embd)?, 1, MAX_EMBD, "embedding_length")?;
        let n_ff = bounded(req(raw.ff, KeySuffix::Ff)?, 1, MAX_FF, "feed_forward_length")?;
        let n_head = bounded(req(raw.heads, KeySuffix::Heads)?, 1, MAX_HEADS, "attention.head_count")?;
        let ctx = bounded(req(raw.ctx, KeySuffix::Ctx)?, 1, MAX_CTX, "context_length")?;
        let eps = raw.eps.ok_or(missing_key(arch, KeySuffix::Eps))?;
        if !(0.0..1.0).contains(&eps) {
            return Err(bad_hparam("attention.layer_norm_epsilon"));
        }
        let head_dim = n_embd.checked_div(n_head).unwrap_or(0);
        if head_dim.saturating_mul(n_head) != n_embd {
            return Err(bad_hparam("attention.head_count"));
        }
        let rope_base = match arch {
            Arch::NomicBert => {
                let base = raw.rope_base.unwrap_or(10_000.0);
                if !(base.is_finite() && base > 1.0) || head_dim % 2 != 0 {
                    return Err(bad_hparam("rope.freq_base"));
                }
                base as f32
            }
            Arch::Bert => 0.0,
        };
        let pooling = match raw.pooling.unwrap_or(1) {
            1 => Pooling::Mean,
            2 => Pooling::Cls,
            p => return Err(Error::Unsupported(Unsupported::PoolingType(p.try_into().unwrap_or(u32::MAX)))),
        };

        let n_vocab = vocab.count() as usize;

        // The global tensors.
        let global = |t: Option<TensorRef>, name: &str| t.ok_or_else(|| missing_tensor(name));
        let token_embd = global(self.found.token_embd, "token_embd.weight")?;
        expect_shape(&token_embd, n_embd, n_vocab, "token_embd.weight")?;
        let mut n_ctx = ctx;
        let position_embd = match arch {
            Arch::Bert => {
                let p = global(self.found.position_embd, "position_embd.weight")?;
                expect_cols(&p, n_embd, "position_embd.weight")?;
                n_ctx = n_ctx.min(p.rows as usize);
                Some(p)
            }
            Arch::NomicBert => match self.found.position_embd {
                // Rotary positions: absolute ones would be a variant computed wrongly.
                Some(p) => {
                    let name = Name::new("position_embd.weight");
                    return Err(Error::malformed(Malformed::UnexpectedTensor(name), p.offset));
                }
                None => None,
            },
        };
        if let Some(t) = self.found.token_types {
            expect_cols(&t, n_embd, "token_types.weight")?;
        }
        let [w, b] = self.found.embd_norm;
        let embd_norm =
            Norm { weight: global(w, "token_embd_norm.weight")?, bias: global(b, "token_embd_norm.bias")? };
        expect_vector(&embd_norm.weight, n_embd, "token_embd_norm.weight")?;
        expect_vector(&embd_norm.bias, n_embd, "token_embd_norm.bias")?;
        if n_ctx < 2 {
            return Err(bad_hparam("context_length"));
        }

        let hparams = HParams {
            n_embd,
            n_ff,
            n_head,
            n_head_kv: n_head,
            head_dim_k: head_dim,
            head_dim_v: head_dim,
            n_layer,
            n_ctx,
            n_vocab,
            eps: eps as f32,
            rope_base,
            pooling,
        };
        let layers = self.layers.get_mut(..n_layer).ok_or(Error::InvalidState)?;
        for (i, refs) in layers.iter().enumerate() {
            check_needs(arch, i, refs)?;
            check_shapes(i, &hparams, refs)?;
        }
        check_layers_agree(layers)?;
        for refs in layers.iter_mut() {
            split_qkv(refs, n_embd)?;
        }
        Ok(ModelMeta {
            arch,
            hparams,
            token_embd,
            position_embd,
            token_types: self.found.token_types,
            embd_norm,
            vocab,
            layout,
        })
    }
}

/// Records a metadata value the engine uses.
fn note_kv(l: &mut Found, key: &str, value: Value<'_>) -> Result<()> {
    l.vocab.observe(key, &value)?;
    match key {
        "general.architecture" => {
            let name = value.as_str().ok_or(Error::malformed(Malformed::WrongValueType, 0))?;
            l.arch = Some(match name {
                "bert" => Arch::Bert,
                "nomic-bert" => Arch::NomicBert,
                other => return Err(Error::Unsupported(Unsupported::Architecture(Name::new(other)))),
            });
        }
        _ => {
            for (i, arch) in [Arch::Bert, Arch::NomicBert].into_iter().enumerate() {
                let Some(suffix) = key.strip_prefix(arch.name()).and_then(|k| k.strip_prefix('.')) else {
                    continue;
                };
                let raw = l.raw.get_mut(i).ok_or(Error::InvalidState)?;
                let int = || value.as_u64().ok_or(Error::malformed(Malformed::WrongValueType, 0));
                let float = || value.as_f64().ok_or(Error::malformed(Malformed::WrongValueType, 0));
                match suffix {
                    "embedding_length" => raw.embd = Some(int()?),
                    "feed_forward_length" => raw.ff = Some(int()?),
                    "attention.head_count" => raw.heads = Some(int()?),
                    "block_count" => raw.layers = Some(int()?),
                    "context_length" => raw.ctx = Some(int()?),
                    "attention.layer_norm_epsilon" => raw.eps = Some(float()?),
                    "rope.freq_base" => raw.rope_base = Some(float()?),
                    "pooling_type" => raw.pooling = Some(int()?),
                    "attention.causal" if value == Value::Bool(true) => {
                        return Err(bad_hparam("attention.causal"));
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// `blk.N.suffix` → (N, slot) for the suffixes the engine knows.
fn parse_layer_name(name: &str) -> Option<(usize, LayerSlot)> {
    let rest = name.strip_prefix("blk.")?;
    let (index, suffix) = rest.split_once('.')?;
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) || index.len() > 6 {
        return None;
    }
    Some((index.parse().ok()?, LayerSlot::from_suffix(suffix)?))
}

/// Keeps a tensor the engine uses: at most 2-D, dimensions that fit u32, a computable type.
fn store(slot: &mut Option<TensorRef>, t: &TensorInfo) -> Result<()> {
    if slot.is_some() {
        return Err(Error::malformed(Malformed::DuplicateTensor, t.offset));
    }
    let [cols, rows, a, b] = t.ne;
    if a != 1 || b != 1 {
        return Err(Error::malformed(Malformed::BadShape(t.name), t.offset));
    }
    let (Ok(cols), Ok(rows)) = (u32::try_from(cols), u32::try_from(rows)) else {
        return Err(Error::malformed(Malformed::BadShape(t.name), t.offset));
    };
    if !quant::is_computable(t.ty) {
        return Err(Error::Unsupported(Unsupported::TensorType { tensor: t.name, ty: t.ty }));
    }
    *slot = Some(TensorRef { offset: t.offset, ty: t.ty, cols, rows });
    Ok(())
}

#[derive(Clone, Copy)]
enum KeySuffix {
    Embd,
    Ff,
    Heads,
    Layers,
    Ctx,
    Eps,
}

fn missing_key(arch: Arch, k: KeySuffix) -> Error {
    let key = match (arch, k) {
        (Arch::Bert, KeySuffix::Embd) => "bert.embedding_length",
        (Arch::Bert, KeySuffix::Ff) => "bert.feed_forward_length",
        (Arch::Bert, KeySuffix::Heads) => "bert.attention.head_count",
        (Arch::Bert, KeySuffix::Layers) => "bert.block_count",
        (Arch::Bert, KeySuffix::Ctx) => "bert.context_length",
        (Arch::Bert, KeySuffix::Eps) => "bert.attention.layer_norm_epsilon",
        (Arch::NomicBert, KeySuffix::Embd) => "nomic-bert.embedding_length",
        (Arch::NomicBert, KeySuffix::Ff) => "nomic-bert.feed_forward_length",
        (Arch::NomicBert, KeySuffix::Heads) => "nomic-bert.attention.head_count",
        (Arch::NomicBert, KeySuffix::Layers) => "nomic-bert.block_count",
        (Arch::NomicBert, KeySuffix::Ctx) => "nomic-bert.context_length",
        (Arch::NomicBert, KeySuffix::Eps) => "nomic-bert.attention.layer_norm_epsilon",
    };
    Error::malformed(Malformed::MissingKey(key), 0)
}

fn missing_tensor(name: &str) -> Error {
    Error::malformed(Malformed::MissingTensor(Name::new(name)), 0)
}

fn bad_hparam(key: &'static str) -> Error {
    Error::malformed(Malformed::BadHyperParameter(key), 0)
}

/// `v` as usize within `[lo, hi]`.
fn bounded(v: u64, lo: u64, hi: u64, key: &'static str) -> Result<usize> {
    if v < lo || v > hi {
        return Err(bad_hparam(key));
    }
    usize::try_from(v).map_err(|_| bad_hparam(key))
}

fn shape_error(t: &TensorRef, name: &str) -> Error {
    Error::malformed(Malformed::BadShape(Name::new(name)), t.offset)
}

fn expect_cols(t: &TensorRef, cols: usize, name: &str) -> Result<()> {
    if t.cols as usize != cols || t.rows == 0 {
        return Err(shape_error(t, name));
    }
    Ok(())
}

fn expect_shape(t: &TensorRef, cols: usize, rows: usize, name: &str) -> Result<()> {
    if t.cols as usize != cols || t.rows as usize != rows {
        return Err(shape_error(t, name));
    }
    Ok(())
}

fn expect_vector(t: &TensorRef, len: usize, name: &str) -> Result<()> {
    expect_shape(t, len, 1, name)
}

/// Every layer has the same tensors: an optional tensor (a nomic-bert bias) in every layer or in
/// none, the same Q/K/V layout everywhere. A layer that differs from the first names the tensor:
/// missing where the first layer has it, unexpected where it does not.
fn check_layers_agree(layers: &[LayerRefs]) -> Result<()> {
    let Some(first) = layers.first() else {
        return Ok(());
    };
    for (i, refs) in layers.iter().enumerate() {
        for slot in LayerSlot::ALL {
            let name = || layer_tensor_name(i, slot.suffix());
            match (slot.get(first), slot.get(refs)) {
                (Some(_), None) => return Err(Error::malformed(Malformed::MissingTensor(name()), 0)),
                (None, Some(t)) => {
                    return Err(Error::malformed(Malformed::UnexpectedTensor(name()), t.offset))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The shape (cols, rows) a layer tensor must have.
fn expected_shape(slot: LayerSlot, hp: &HParams) -> (usize, usize) {
    use LayerSlot::*;
    let (e, f) = (hp.n_embd, hp.n_ff);
    let q = hp.n_head.saturating_mul(hp.head_dim_k);
    let k = hp.n_head_kv.saturating_mul(hp.head_dim_k);
    let v = hp.n_head_kv.saturating_mul(hp.head_dim_v);
    let ctx = hp.n_head.saturating_mul(hp.head_dim_v);
    match slot {
        AttnQkv => (e, q.saturating_add(k).saturating_add(v)),
        AttnQkvBias => (q.saturating_add(k).saturating_add(v), 1),
        AttnQ => (e, q),
        AttnQBias => (q, 1),
        AttnK => (e, k),
        AttnKBias => (k, 1),
        AttnV => (e, v),
        AttnVBias => (v, 1),
        AttnOut => (ctx, e),
        FfnUp | FfnGate => (e, f),
        FfnUpBias | FfnGateBias => (f, 1),
        FfnDown => (f, e),
        AttnOutBias | FfnDownBias | AttnOutNorm | AttnOutNormBias | LayerOutNorm | LayerOutNormBias => (e, 1),
    }
}

/// Checks every tensor of layer `index` against the hyper-parameters.
fn check_shapes(index: usize, hp: &HParams, refs: &LayerRefs) -> Result<()> {
    for slot in LayerSlot::ALL {
        let Some(t) = slot.get(refs) else { continue };
        let (cols, rows) = expected_shape(slot, hp);
        if t.cols as usize != cols || t.rows as usize != rows {
            let name = layer_tensor_name(index, slot.suffix());
            return Err(Error::malformed(Malformed::BadShape(name), t.offset));
        }
    }
    Ok(())
}

/// Replaces a fused Q|K|V matrix (rows q, then k, then v) and its bias by their three parts,
/// each a tensor of its own: the rows of a part are contiguous in the file, and so are a bias
/// part's elements when the part starts on a block of the bias's type (else
/// [`Malformed::BadShape`]).
fn split_qkv(refs: &mut LayerRefs, n_embd: usize) -> Result<()> {
    use LayerSlot::*;
    let mut take = |slot: LayerSlot| refs.slots.get_mut(slot as usize).and_then(Option::take);
    let (weight, bias) = (take(AttnQkv), take(AttnQkvBias));
    let rows = u32::try_from(n_embd).map_err(|_| Error::InvalidState)?;
    for (part, (w_slot, b_slot)) in
        [(AttnQ, AttnQBias), (AttnK, AttnKBias), (AttnV, AttnVBias)].into_iter().enumerate()
    {
        let first = (part as u64).saturating_mul(u64::from(rows));
        if let Some(w) = weight {
            let offset = w.offset.saturating_add(first.saturating_mul(w.row_bytes() as u64));
            put(refs, w_slot, TensorRef { offset, rows, ..w });
        }
        if let Some(b) = bias {
            let (be, bb) = (u64::from(b.ty.block_elems()), u64::from(b.ty.block_bytes()));
            if first.checked_rem(be) != Some(0) || u64::from(rows).checked_rem(be) != Some(0) {
                let name = Name::new(AttnQkvBias.suffix());
                return Err(Error::malformed(Malformed::BadShape(name), b.offset));
            }
            let offset = b.offset.saturating_add(first.checked_div(be).unwrap_or(0).saturating_mul(bb));
            put(refs, b_slot, TensorRef { offset, cols: rows, ..b });
        }
    }
    Ok(())
}

fn put(refs: &mut LayerRefs, slot: LayerSlot, t: TensorRef) {
    if let Some(s) = refs.slots.get_mut(slot as usize) {
        *s = Some(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgmlType;
    use crate::model::Need;

    fn t(offset: u64) -> TensorRef {
        TensorRef { offset, ty: GgmlType::F32, cols: 1, rows: 1 }
    }

    /// A layer with every tensor `arch` requires (fused Q/K/V for nomic-bert).
    fn full_layer(arch: Arch) -> LayerRefs {
        let mut refs = LayerRefs::default();
        let fused = arch == Arch::NomicBert;
        for (i, slot) in LayerSlot::ALL.into_iter().enumerate() {
            if arch.need(slot, fused) == Need::Required {
                refs.slots[slot as usize] = Some(t(i as u64));
            }
        }
        refs
    }

    #[test]
    fn bert_biases_are_required() {
        let mut refs = full_layer(Arch::Bert);
        assert!(check_needs(Arch::Bert, 3, &refs).is_ok());
        refs.slots[LayerSlot::FfnDownBias as usize] = None;
        let err = check_needs(Arch::Bert, 3, &refs).unwrap_err();
        assert_eq!(err, Error::malformed(Malformed::MissingTensor(Name::new("blk.3.ffn_down.bias")), 0));
    }

    #[test]
    fn unused_tensors_are_refused() {
        let mut refs = full_layer(Arch::Bert);
        refs.slots[LayerSlot::FfnGate as usize] = Some(t(99));
        let err = check_needs(Arch::Bert, 0, &refs).unwrap_err();
        assert_eq!(
            err,
            Error::malformed(Malformed::UnexpectedTensor(Name::new("blk.0.ffn_gate.weight")), 99)
        );
    }

    #[test]
    fn optional_tensors_are_in_every_layer_or_none() {
        let plain = full_layer(Arch::NomicBert);
        let mut biased = plain;
        biased.slots[LayerSlot::AttnOutBias as usize] = Some(t(7));
        assert!(check_needs(Arch::NomicBert, 0, &biased).is_ok());
        assert!(check_layers_agree(&[plain, plain]).is_ok());
        assert!(check_layers_agree(&[biased, biased]).is_ok());
        let missing = Malformed::MissingTensor(Name::new("blk.1.attn_output.bias"));
        assert_eq!(check_layers_agree(&[biased, plain]).unwrap_err(), Error::malformed(missing, 0));
        let unexpected = Malformed::UnexpectedTensor(Name::new("blk.1.attn_output.bias"));
        assert_eq!(check_layers_agree(&[plain, biased]).unwrap_err(), Error::malformed(unexpected, 7));
    }
}
