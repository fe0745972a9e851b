//! [`ModelLoader`]: reads a GGUF file once, step by step, keeping only what the engine needs.

use crate::error::{Error, Malformed, Name, Result, Unsupported};
use crate::gguf::{ArrayRef, Event, Reader, TensorInfo, Value, ValueType, MIN_SCRATCH};
use crate::io::{read_exact_at, Source};
use crate::model::{
    check_needs, layer_tensor_name, Arch, HParams, LayerRefs, LayerSlot, ModelMeta, Norm, Pooling, TensorRef,
};
use crate::quant;
use crate::tokenizer::{
    ModelVocabLoader, ModelVocabMeta, Step as TokStep, TokenizerKind, Vocab, VocabLoader, VocabMeta,
    MIN_VOCAB_SCRATCH,
};

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
const MAX_HEAD_DIM: u64 = 1 << 12;

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
    heads_kv: Option<u64>,
    key_length: Option<u64>,
    value_length: Option<u64>,
    layers: Option<u64>,
    ctx: Option<u64>,
    eps: Option<f64>,
    rms_eps: Option<f64>,
    rope_base: Option<f64>,
    rope_base_swa: Option<f64>,
    rope_dims: Option<u64>,
    /// `rope.scaling.type` when it is not `linear` or `none` (which the engine computes).
    rope_scaling_other: Option<Name>,
    rope_factor: Option<f64>,
    causal: Option<bool>,
    sliding_window: Option<u64>,
    swa_pattern: Option<SwaPattern>,
    /// `dense_2_feat_in`, `dense_2_feat_out`, `dense_3_feat_in`, `dense_3_feat_out`.
    dense_feats: [Option<u64>; 4],
    pooling: Option<u64>,
}

/// `attention.sliding_window_pattern`: a period, or one flag per layer (true = sliding).
#[derive(Debug, Clone, Copy)]
enum SwaPattern {
    /// Layer `il` is sliding unless `il % n == n − 1` (every layer when `n` is 0).
    Period(u64),
    /// A bool array in the file.
    Layers(ArrayRef),
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
    /// For SentencePiece and BPE vocabs, the pass over every entry after the metadata is done,
    /// and the metadata waiting for it.
    model_vocab_loader: Option<(ModelVocabLoader, ModelMeta)>,
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
    raw: [RawHParams; Arch::ALL.len()],
    vocab: VocabMeta,
    /// The SentencePiece/BPE keys, and the first error they gave (which matters only when the
    /// file names one of those tokenizers).
    model_vocab: ModelVocabMeta,
    model_vocab_error: Option<Error>,
    token_embd: Option<TensorRef>,
    position_embd: Option<TensorRef>,
    token_types: Option<TensorRef>,
    embd_norm: [Option<TensorRef>; 2],
    output_norm: Option<TensorRef>,
    dense: [Option<TensorRef>; 2],
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
            model_vocab_loader: None,
            layers,
            found: Found { vocab: VocabMeta::any_model(), ..Found::default() },
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
        if let Some((loader, meta)) = &mut self.model_vocab_loader {
            // Everything else is done; learn the SentencePiece/BPE vocab, then finish.
            if loader.step(io, self.vocab_scratch, VOCAB_ENTRIES_PER_STEP)? == TokStep::Pending {
                return Ok(LoadStep::Pending);
            }
            let vocab = loader.vocab()?;
            if vocab.count() as usize != meta.hparams.n_vocab {
                return Err(Error::malformed(Malformed::BadVocab, vocab.tokens().offset));
            }
            return Ok(LoadStep::Done(ModelMeta { model_vocab: Some(vocab), ..*meta }));
        }
        if let Some(loader) = &mut self.vocab_loader {
            // The reader is done; read the special tokens' strings, then finish.
            if loader.step(io, self.vocab_scratch, VOCAB_ENTRIES_PER_STEP)? == TokStep::Pending {
                return Ok(LoadStep::Pending);
            }
            let vocab = loader.vocab()?;
            let layout = self.layout.ok_or(Error::InvalidState)?;
            let meta = self.finish(layout, vocab)?;
            self.mark_sliding_layers(io, &meta)?;
            if meta.tokenizer == TokenizerKind::WordPiece {
                return Ok(LoadStep::Done(meta));
            }
            if let Some(e) = self.found.model_vocab_error {
                return Err(e);
            }
            self.model_vocab_loader = Some((self.found.model_vocab.loader()?, meta));
            return Ok(LoadStep::Pending);
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
            "output_norm.weight" => Some(&mut f.output_norm),
            "dense_2.weight" => f.dense.get_mut(0),
            "dense_3.weight" => f.dense.get_mut(1),
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
        let decoder = arch.is_decoder();
        let req = |v: Option<u64>, k: KeySuffix| v.ok_or(missing_key(arch, k));
        let n_embd = bounded(req(raw.embd, KeySuffix::Embd)?, 1, MAX_EMBD, "embedding_length")?;
        let n_ff = bounded(req(raw.ff, KeySuffix::Ff)?, 1, MAX_FF, "feed_forward_length")?;
        let n_head = bounded(req(raw.heads, KeySuffix::Heads)?, 1, MAX_HEADS, "attention.head_count")?;
        let ctx = bounded(req(raw.ctx, KeySuffix::Ctx)?, 1, MAX_CTX, "context_length")?;
        let eps = if decoder { raw.rms_eps } else { raw.eps }.ok_or(missing_key(arch, KeySuffix::Eps))?;
        if !(0.0..1.0).contains(&eps) {
            return Err(bad_hparam(if decoder {
                "attention.layer_norm_rms_epsilon"
            } else {
                "attention.layer_norm_epsilon"
            }));
        }
        let (n_head_kv, head_dim_k, head_dim_v) = head_shape(&raw, decoder, n_embd, n_head)?;
        let rope = |base: Option<f64>, key| match base.unwrap_or(10_000.0) {
            b if b.is_finite() && b > 1.0 && head_dim_k % 2 == 0 => Ok(b as f32),
            _ => Err(bad_hparam(key)),
        };
        let (rope_base, rope_base_swa) = match arch {
            Arch::Bert => (0.0, 0.0),
            Arch::NomicBert => (rope(raw.rope_base, "rope.freq_base")?, 0.0),
            _ => (rope(raw.rope_base, "rope.freq_base")?, rope(raw.rope_base_swa, "rope.freq_base_swa")?),
        };
        let (n_rot, rope_scale) = if decoder { rotary(&raw, head_dim_k)? } else { (head_dim_k, 1.0) };
        let causal = match arch {
            Arch::Qwen2 | Arch::Qwen3 => raw.causal.unwrap_or(true),
            Arch::Bert | Arch::NomicBert | Arch::GemmaEmbedding => false,
        };
        let sliding_window = match arch {
            Arch::GemmaEmbedding => {
                let w = req(raw.sliding_window, KeySuffix::SlidingWindow)?;
                bounded(w, 1, u64::from(u32::MAX), "attention.sliding_window")?
            }
            _ => 0,
        };
        let pooling = match raw.pooling.unwrap_or(1) {
            1 => Pooling::Mean,
            2 => Pooling::Cls,
            // The last token sees every other one in a causal decoder.
            3 if decoder => Pooling::Last,
            p => return Err(Error::Unsupported(Unsupported::PoolingType(p.try_into().unwrap_or(u32::MAX)))),
        };

        let n_vocab = vocab.count() as usize;

        // The global tensors.
        let global = |t: Option<TensorRef>, name: &str| t.ok_or_else(|| missing_tensor(name));
        let unexpected = |t: Option<TensorRef>, name: &str| match t {
            Some(t) => Err(Error::malformed(Malformed::UnexpectedTensor(Name::new(name)), t.offset)),
            None => Ok(()),
        };
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
            // Rotary positions: absolute ones would be a variant computed wrongly.
            _ => {
                unexpected(self.found.position_embd, "position_embd.weight")?;
                None
            }
        };
        if let Some(t) = self.found.token_types {
            if decoder {
                unexpected(Some(t), "token_types.weight")?;
            }
            expect_cols(&t, n_embd, "token_types.weight")?;
        }
        let [w, b] = self.found.embd_norm;
        let (embd_norm, output_norm) = if decoder {
            unexpected(w, "token_embd_norm.weight")?;
            unexpected(b, "token_embd_norm.bias")?;
            let norm = global(self.found.output_norm, "output_norm.weight")?;
            expect_vector(&norm, n_embd, "output_norm.weight")?;
            (None, Some(norm))
        } else {
            unexpected(self.found.output_norm, "output_norm.weight")?;
            let norm = Norm {
                weight: global(w, "token_embd_norm.weight")?,
                bias: global(b, "token_embd_norm.bias")?,
            };
            expect_vector(&norm.weight, n_embd, "token_embd_norm.weight")?;
            expect_vector(&norm.bias, n_embd, "token_embd_norm.bias")?;
            (Some(norm), None)
        };
        let dense = dense(arch, &raw, self.found.dense, n_embd)?;
        if n_ctx < 2 {
            return Err(bad_hparam("context_length"));
        }

        let hparams = HParams {
            n_embd,
            n_ff,
            n_head,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            n_layer,
            n_ctx,
            n_vocab,
            eps: eps as f32,
            rope_base,
            rope_base_swa,
            rope_scale,
            n_rot,
            causal,
            sliding_window,
            pooling,
        };
        let layers = self.layers.get_mut(..n_layer).ok_or(Error::InvalidState)?;
        for (i, refs) in layers.iter().enumerate() {
            check_needs(arch, i, refs)?;
            check_shapes(i, &hparams, refs)?;
        }
        check_layers_agree(layers)?;
        for refs in layers.iter_mut() {
            split_qkv(refs, &hparams)?;
        }
        Ok(ModelMeta {
            arch,
            hparams,
            token_embd,
            position_embd,
            token_types: self.found.token_types,
            embd_norm,
            output_norm,
            dense,
            vocab,
            tokenizer: vocab.kind(),
            model_vocab: None,
            layout,
        })
    }

    /// Sets each layer's sliding flag from `attention.sliding_window_pattern` (gemma-embedding;
    /// period 6 when absent): an array must have one bool per layer. Reads at most one byte per
    /// layer.
    fn mark_sliding_layers<S: Source + ?Sized>(&mut self, io: &mut S, meta: &ModelMeta) -> Result<()> {
        if meta.arch != Arch::GemmaEmbedding {
            return Ok(());
        }
        let pattern = self.raw()?.swa_pattern.unwrap_or(SwaPattern::Period(6));
        let n_layer = meta.hparams.n_layer;
        let key = "attention.sliding_window_pattern";
        let layers = self.layers.get_mut(..n_layer).ok_or(Error::InvalidState)?;
        match pattern {
            SwaPattern::Period(n) => {
                for (il, refs) in layers.iter_mut().enumerate() {
                    refs.sliding =
                        n == 0 || (il as u64).checked_rem(n).is_some_and(|r| r.saturating_add(1) < n);
                }
            }
            SwaPattern::Layers(array) => {
                if array.elem != ValueType::Bool || array.count != n_layer as u64 {
                    return Err(Error::malformed(Malformed::BadHyperParameter(key), array.offset));
                }
                for (chunk, refs) in layers.chunks_mut(self.vocab_scratch.len().max(1)).zip(0u64..) {
                    let first = refs.saturating_mul(self.vocab_scratch.len() as u64);
                    let at = array.offset.saturating_add(first);
                    let bytes = self.vocab_scratch.get_mut(..chunk.len()).ok_or(Error::InvalidState)?;
                    read_exact_at(io, at, bytes)?;
                    for (layer, &flag) in chunk.iter_mut().zip(bytes.iter()) {
                        layer.sliding = match flag {
                            0 => false,
                            1 => true,
                            _ => return Err(Error::malformed(Malformed::WrongValueType, at)),
                        };
                    }
                }
            }
        }
        Ok(())
    }
}

/// Key/value heads and the query/key and value head widths. bert and nomic-bert: as many
/// key/value heads as heads, `n_embd / n_head` wide. Decoders: `attention.head_count_kv` (a
/// divisor of the head count), `attention.key_length` and `value_length` when present.
fn head_shape(
    raw: &RawHParams,
    decoder: bool,
    n_embd: usize,
    n_head: usize,
) -> Result<(usize, usize, usize)> {
    let even = n_embd.checked_div(n_head).filter(|d| d.saturating_mul(n_head) == n_embd);
    if !decoder {
        let d = even.ok_or(bad_hparam("attention.head_count"))?;
        return Ok((n_head, d, d));
    }
    let kv = bounded(raw.heads_kv.unwrap_or(n_head as u64), 1, n_head as u64, "attention.head_count_kv")?;
    if n_head.checked_rem(kv) != Some(0) {
        return Err(bad_hparam("attention.head_count_kv"));
    }
    let width = |v: Option<u64>, key| match v {
        Some(v) => bounded(v, 1, MAX_HEAD_DIM, key),
        None => even.ok_or(bad_hparam("attention.head_count")),
    };
    Ok((
        kv,
        width(raw.key_length, "attention.key_length")?,
        width(raw.value_length, "attention.value_length")?,
    ))
}

/// A decoder's rotated head dimensions (`rope.dimension_count`: even, at most the head) and the
/// global layers' position scale (linear `rope.scaling.factor`; another scaling type is
/// [`Unsupported::RopeScaling`]).
fn rotary(raw: &RawHParams, head_dim_k: usize) -> Result<(usize, f32)> {
    let n_rot =
        bounded(raw.rope_dims.unwrap_or(head_dim_k as u64), 2, head_dim_k as u64, "rope.dimension_count")?;
    if n_rot % 2 != 0 {
        return Err(bad_hparam("rope.dimension_count"));
    }
    if let Some(name) = raw.rope_scaling_other {
        return Err(Error::Unsupported(Unsupported::RopeScaling(name)));
    }
    let scale = match raw.rope_factor.unwrap_or(0.0) {
        0.0 => 1.0,
        f if f.is_finite() && f > 0.0 => (1.0 / f) as f32,
        _ => return Err(bad_hparam("rope.scaling.factor")),
    };
    Ok((n_rot, scale))
}

/// The dense projections after pooling (gemma-embedding): both or neither, `dense_2` of n_embd
/// columns, `dense_3` back to n_embd, agreeing with the `dense_*_feat_*` keys where present (a
/// key without its tensor is [`Malformed::MissingTensor`]). Another architecture has none.
fn dense(
    arch: Arch,
    raw: &RawHParams,
    found: [Option<TensorRef>; 2],
    n_embd: usize,
) -> Result<Option<[TensorRef; 2]>> {
    const NAMES: [&str; 2] = ["dense_2.weight", "dense_3.weight"];
    const KEYS: [&str; 4] = ["dense_2_feat_in", "dense_2_feat_out", "dense_3_feat_in", "dense_3_feat_out"];
    if arch != Arch::GemmaEmbedding {
        for (t, name) in found.iter().zip(NAMES) {
            if let Some(t) = t {
                return Err(Error::malformed(Malformed::UnexpectedTensor(Name::new(name)), t.offset));
            }
        }
        return Ok(None);
    }
    let [up, down] = match found {
        [None, None] if raw.dense_feats.iter().all(Option::is_none) => return Ok(None),
        [Some(up), Some(down)] => [up, down],
        [None, _] => return Err(missing_tensor(NAMES[0])),
        [Some(_), None] => return Err(missing_tensor(NAMES[1])),
    };
    let hidden = up.rows as usize;
    if hidden == 0 || hidden as u64 > MAX_FF {
        return Err(shape_error(&up, NAMES[0]));
    }
    expect_shape(&up, n_embd, hidden, NAMES[0])?;
    expect_shape(&down, hidden, n_embd, NAMES[1])?;
    for ((found, expected), key) in raw.dense_feats.iter().zip([n_embd, hidden, hidden, n_embd]).zip(KEYS) {
        if found.is_some_and(|v| v != expected as u64) {
            return Err(bad_hparam(key));
        }
    }
    Ok(Some([up, down]))
}

/// Records a metadata value the engine uses.
fn note_kv(l: &mut Found, key: &str, value: Value<'_>) -> Result<()> {
    l.vocab.observe(key, &value)?;
    // WordPiece's model name is not one of the SentencePiece/BPE ones; other errors of theirs are
    // kept until the tokenizer is known.
    let wordpiece = key == "tokenizer.ggml.model" && value.as_str() == Some("bert");
    if !wordpiece && l.model_vocab_error.is_none() {
        l.model_vocab_error = l.model_vocab.observe(key, &value).err();
    }
    if key == "general.architecture" {
        let name = value.as_str().ok_or(Error::malformed(Malformed::WrongValueType, 0))?;
        let arch = Arch::ALL.into_iter().find(|a| a.name() == name);
        l.arch = Some(arch.ok_or(Error::Unsupported(Unsupported::Architecture(Name::new(name))))?);
        return Ok(());
    }
    for (arch, raw) in Arch::ALL.into_iter().zip(l.raw.iter_mut()) {
        let Some(suffix) = key.strip_prefix(arch.name()).and_then(|k| k.strip_prefix('.')) else {
            continue;
        };
        let wrong = Error::malformed(Malformed::WrongValueType, 0);
        let int = || value.as_u64().ok_or(wrong);
        let float = || value.as_f64().ok_or(wrong);
        match suffix {
            "embedding_length" => raw.embd = Some(int()?),
            "feed_forward_length" => raw.ff = Some(int()?),
            "attention.head_count" => raw.heads = Some(int()?),
            "block_count" => raw.layers = Some(int()?),
            "context_length" => raw.ctx = Some(int()?),
            "attention.layer_norm_epsilon" => raw.eps = Some(float()?),
            "rope.freq_base" => raw.rope_base = Some(float()?),
            "pooling_type" => raw.pooling = Some(int()?),
            "attention.causal" if !arch.is_decoder() && value == Value::Bool(true) => {
                return Err(bad_hparam("attention.causal"));
            }
            _ if !arch.is_decoder() => {}
            "attention.head_count_kv" => raw.heads_kv = Some(int()?),
            "attention.key_length" => raw.key_length = Some(int()?),
            "attention.value_length" => raw.value_length = Some(int()?),
            "attention.layer_norm_rms_epsilon" => raw.rms_eps = Some(float()?),
            "rope.freq_base_swa" => raw.rope_base_swa = Some(float()?),
            "rope.dimension_count" => raw.rope_dims = Some(int()?),
            "rope.scaling.type" => match value.as_str().ok_or(wrong)? {
                "linear" | "none" => {}
                other => raw.rope_scaling_other = Some(Name::new(other)),
            },
            "rope.scaling.factor" => raw.rope_factor = Some(float()?),
            "attention.causal" => match value {
                Value::Bool(b) => raw.causal = Some(b),
                _ => return Err(wrong),
            },
            "attention.sliding_window" => raw.sliding_window = Some(int()?),
            "attention.sliding_window_pattern" => {
                raw.swa_pattern = Some(match value {
                    Value::Array(a) => SwaPattern::Layers(a),
                    _ => SwaPattern::Period(int()?),
                })
            }
            "dense_2_feat_in" => raw.dense_feats[0] = Some(int()?),
            "dense_2_feat_out" => raw.dense_feats[1] = Some(int()?),
            "dense_3_feat_in" => raw.dense_feats[2] = Some(int()?),
            "dense_3_feat_out" => raw.dense_feats[3] = Some(int()?),
            _ => {}
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

/// The required keys, as indexes of [`keys_of`]'s table.
#[derive(Clone, Copy)]
enum KeySuffix {
    Embd,
    Ff,
    Heads,
    Layers,
    Ctx,
    Eps,
    SlidingWindow,
}

/// An architecture's required keys, in [`KeySuffix`] order; `$eps` is its norm's epsilon key.
macro_rules! keys_of {
    ($arch:literal, $eps:literal) => {
        [
            concat!($arch, ".embedding_length"),
            concat!($arch, ".feed_forward_length"),
            concat!($arch, ".attention.head_count"),
            concat!($arch, ".block_count"),
            concat!($arch, ".context_length"),
            concat!($arch, ".attention.", $eps),
            concat!($arch, ".attention.sliding_window"),
        ]
    };
}

fn missing_key(arch: Arch, k: KeySuffix) -> Error {
    let keys: [&'static str; 7] = match arch {
        Arch::Bert => keys_of!("bert", "layer_norm_epsilon"),
        Arch::NomicBert => keys_of!("nomic-bert", "layer_norm_epsilon"),
        Arch::GemmaEmbedding => keys_of!("gemma-embedding", "layer_norm_rms_epsilon"),
        Arch::Qwen2 => keys_of!("qwen2", "layer_norm_rms_epsilon"),
        Arch::Qwen3 => keys_of!("qwen3", "layer_norm_rms_epsilon"),
    };
    let key = keys.get(k as usize).copied().unwrap_or("general.architecture");
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
    let head = hp.head_dim_k;
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
        AttnQNorm | AttnKNorm => (head, 1),
        AttnOutBias | FfnDownBias | AttnOutNorm | AttnOutNormBias | LayerOutNorm | LayerOutNormBias => (e, 1),
        AttnNorm | PostAttnNorm | FfnNorm | PostFfwNorm => (e, 1),
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

/// Replaces a fused Q|K|V matrix (rows q, then k, then v: `n_head`, `n_head_kv` and
/// `n_head_kv` heads) and its bias by their three parts, each a tensor of its own: the rows of a
/// part are contiguous in the file, and so are a bias part's elements when the part starts on a
/// block of the bias's type (else [`Malformed::BadShape`]).
fn split_qkv(refs: &mut LayerRefs, hp: &HParams) -> Result<()> {
    use LayerSlot::*;
    let mut take = |slot: LayerSlot| refs.slots.get_mut(slot as usize).and_then(Option::take);
    let (weight, bias) = (take(AttnQkv), take(AttnQkvBias));
    let rows = |heads: usize, width: usize| {
        u32::try_from(heads.saturating_mul(width)).map_err(|_| Error::InvalidState)
    };
    let parts = [
        (AttnQ, AttnQBias, rows(hp.n_head, hp.head_dim_k)?),
        (AttnK, AttnKBias, rows(hp.n_head_kv, hp.head_dim_k)?),
        (AttnV, AttnVBias, rows(hp.n_head_kv, hp.head_dim_v)?),
    ];
    let mut first = 0u64;
    for (w_slot, b_slot, rows) in parts {
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
        first = first.saturating_add(u64::from(rows));
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
    fn each_decoder_requires_its_norms_and_refuses_the_others() {
        let err = |arch, slot: LayerSlot, present: bool| {
            let mut refs = full_layer(arch);
            refs.slots[slot as usize] = present.then(|| t(5));
            check_needs(arch, 1, &refs).err()
        };
        let missing = |s: &str| Some(Error::malformed(Malformed::MissingTensor(Name::new(s)), 0));
        let unexpected = |s: &str| Some(Error::malformed(Malformed::UnexpectedTensor(Name::new(s)), 5));
        for arch in [Arch::GemmaEmbedding, Arch::Qwen2, Arch::Qwen3] {
            assert!(check_needs(arch, 0, &full_layer(arch)).is_ok(), "{arch:?}");
            assert_eq!(err(arch, LayerSlot::AttnNorm, false), missing("blk.1.attn_norm.weight"));
            assert_eq!(err(arch, LayerSlot::FfnGate, false), missing("blk.1.ffn_gate.weight"));
            assert_eq!(err(arch, LayerSlot::AttnQBias, true), None, "{arch:?}: optional");
            assert_eq!(err(arch, LayerSlot::AttnOutNorm, true), unexpected("blk.1.attn_output_norm.weight"));
            assert_eq!(err(arch, LayerSlot::FfnUpBias, true), unexpected("blk.1.ffn_up.bias"));
        }
        assert_eq!(err(Arch::Qwen3, LayerSlot::AttnKNorm, false), missing("blk.1.attn_k_norm.weight"));
        assert_eq!(err(Arch::Qwen2, LayerSlot::AttnKNorm, true), unexpected("blk.1.attn_k_norm.weight"));
        assert_eq!(
            err(Arch::GemmaEmbedding, LayerSlot::PostFfwNorm, false),
            missing("blk.1.post_ffw_norm.weight")
        );
        assert_eq!(err(Arch::Qwen3, LayerSlot::PostFfwNorm, true), unexpected("blk.1.post_ffw_norm.weight"));
        assert_eq!(err(Arch::Bert, LayerSlot::AttnNorm, true), unexpected("blk.1.attn_norm.weight"));
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
