//! [`Embedder`]: the blocking and async embedding API over a model file.
//!
//! It loads the model's metadata (never its weights), plans the memory once, allocates the
//! arena and the vocab index once, and then runs core [`Job`]s: to the end for
//! [`Embedder::embed`], one step per poll for [`Embedder::embed_async`], or step by step under
//! the caller's control with [`Embedder::job`].

use std::path::Path;

use stepembed_core::engine::{Input, Job, JobOptions, Limits, Plan, PlanKind, Step, DEFAULT_BUDGET};
use stepembed_core::io::Source;
use stepembed_core::model::{LayerRefs, Model, ModelLoader, ModelMeta};
use stepembed_core::tokenizer::{self, IndexBuilder, Lookup, Tokenize, VocabIndex};

use crate::error::{Error, Result};
use crate::io::FileSource;

/// How an [`Embedder`] plans its memory and runs its jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbedderOptions {
    /// Most tokens per text and per job (default: the model's context length).
    pub max_tokens: Option<usize>,
    /// Most texts [`Embedder::embed_batch`] puts in one job (default 16); their tokens share
    /// each weight chunk read.
    pub max_texts: usize,
    /// Which plan to use (default [`PlanKind::Fast`]; see [`Plan::new`], [`Plan::lean`],
    /// [`Plan::smallest`]).
    pub plan: PlanKind,
    /// At most this much memory for the arena and the vocab index together, in bytes: the
    /// fastest plan that fits is used instead of `plan` ([`Plan::fit`]); too little is
    /// [`stepembed_core::Error::ArenaTooSmall`].
    pub memory: Option<usize>,
    /// Work units per step (default [`DEFAULT_BUDGET`]).
    pub budget: u64,
    /// Scale embeddings to unit length (default true).
    pub normalize: bool,
    /// Cut texts longer than `max_tokens` (default true); when false they are an error.
    pub truncate: bool,
}

impl Default for EmbedderOptions {
    fn default() -> Self {
        EmbedderOptions {
            max_tokens: None,
            max_texts: 16,
            plan: PlanKind::Fast,
            memory: None,
            budget: DEFAULT_BUDGET,
            normalize: true,
            truncate: true,
        }
    }
}

/// A model ready to embed text. See the module documentation.
pub struct Embedder<S: Source = FileSource> {
    pub(crate) source: S,
    pub(crate) meta: ModelMeta,
    pub(crate) layers: Vec<LayerRefs>,
    pub(crate) plan: Plan,
    pub(crate) arena: Vec<u8>,
    /// The vocab index, built once (empty when the plan streams the vocab instead).
    pub(crate) index: Vec<u8>,
    pub(crate) options: EmbedderOptions,
}

impl<S: Source> std::fmt::Debug for Embedder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("meta", &self.meta)
            .field("plan", &self.plan)
            .field("memory_bytes", &self.memory_bytes())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Embedder<FileSource> {
    /// Opens a GGUF model file with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Embedder::open_with(path, EmbedderOptions::default())
    }

    /// Opens a GGUF model file.
    pub fn open_with(path: impl AsRef<Path>, options: EmbedderOptions) -> Result<Self> {
        let path = path.as_ref();
        let file = crate::io::open(path).map_err(|source| Error::Open { path: path.into(), source })?;
        Embedder::from_source(file, options)
    }
}

impl<S: Source> Embedder<S> {
    /// Loads the model from any `Read + Seek` source: reads its metadata and tensor table,
    /// plans, allocates the arena and builds the vocab index (when planned).
    pub fn from_source(mut source: S, options: EmbedderOptions) -> Result<Self> {
        let (meta, layers) = load(&mut source)?;
        let model = Model::new(meta, &layers)?;
        let max_tokens = options.max_tokens.unwrap_or(meta.hparams.n_ctx).min(meta.hparams.n_ctx);
        // Limits the plan refuses (fewer than 2 tokens) come back as its typed error.
        let limits = Limits { max_tokens, max_texts: options.max_texts.max(1).min(max_tokens.max(1)) };
        let plan = match options.memory {
            Some(memory) => Plan::fit(&model, limits, memory)?,
            None => Plan::of_kind(&model, limits, options.plan)?,
        };
        let mut index = vec![0u8; plan.index_bytes()];
        if !index.is_empty() {
            let mut builder = IndexBuilder::new(&meta.vocab, &mut index)?;
            let mut scratch = vec![0u8; 4096];
            while builder.step(&mut source, &mut scratch, u32::MAX)? == tokenizer::Step::Pending {}
            builder.finish()?;
        }
        let arena = vec![0u8; plan.arena_bytes()];
        Ok(Embedder { source, meta, layers, plan, arena, index, options })
    }

    /// The model's metadata.
    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// The memory plan in use.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Floats per embedding.
    pub fn embedding_len(&self) -> usize {
        self.meta.hparams.n_embd
    }

    /// Bytes allocated for the arena and the vocab index.
    pub fn memory_bytes(&self) -> usize {
        self.arena.len() + self.index.len()
    }

    /// A job for `input` that the caller steps: [`Running::step`] does one bounded step. This is
    /// what a host loop uses to interleave embedding with its own work.
    pub fn job<'e>(&'e mut self, input: Input<'e>) -> Result<Running<'e, S>> {
        let o = self.options;
        let options = JobOptions { normalize: o.normalize, budget: o.budget, truncate: o.truncate };
        let model = Model::new(self.meta, &self.layers)?;
        let lookup = lookup(&self.meta, &self.index)?;
        let job = Job::new(model, &self.plan, &mut self.arena, input, lookup, options)?;
        Ok(Running { job, source: &mut self.source })
    }

    /// Embeds one text (blocking).
    pub fn embed(&mut self, text: &str) -> Result<Vec<f32>> {
        let mut job = self.job(Input::Text(text))?;
        loop {
            if let Step::Done(e) = job.step()? {
                return Ok(e.to_vec());
            }
        }
    }

    /// Embeds one text, one step per poll: between steps the future yields, so other tasks of
    /// the executor run. Cancelling (dropping) the future is safe at any point.
    pub async fn embed_async(&mut self, text: &str) -> Result<Vec<f32>> {
        let mut job = self.job(Input::Text(text))?;
        loop {
            if let Step::Done(e) = job.step()? {
                return Ok(e.to_vec());
            }
            futures_lite::future::yield_now().await;
        }
    }

    /// Embeds texts, several per job: each job's weight chunks are read once for all its texts.
    /// Texts are tokenized first and packed into jobs by [`Embedder::batches`].
    pub fn embed_batch(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| self.tokenize(t)).collect::<Result<_>>()?;
        let e = self.embedding_len();
        let mut out = Vec::with_capacity(texts.len());
        for range in self.batches(&ids) {
            let batch: Vec<&[u32]> = ids[range].iter().map(Vec::as_slice).collect();
            let mut job = self.job(Input::IdBatch(&batch))?;
            let all = loop {
                if let Step::Done(all) = job.step()? {
                    break all.to_vec();
                }
            };
            out.extend(all.chunks_exact(e).map(<[f32]>::to_vec));
        }
        Ok(out)
    }

    /// Splits tokenized texts into consecutive batches of at most `max_texts` texts and
    /// `max_tokens` tokens (each text fits alone, being cut at `max_tokens`), for
    /// [`Input::IdBatch`] jobs.
    pub fn batches(&self, ids: &[Vec<u32>]) -> Vec<std::ops::Range<usize>> {
        let limits = self.plan.limits();
        let mut batches = Vec::new();
        let mut start = 0;
        while start < ids.len() {
            let (mut end, mut tokens) = (start, 0);
            while end < ids.len()
                && end - start < limits.max_texts
                && (end == start || tokens + ids[end].len() <= limits.max_tokens)
            {
                tokens += ids[end].len();
                end += 1;
            }
            batches.push(start..end);
            start = end;
        }
        batches
    }

    /// The token ids of `text`, [CLS] … [SEP], truncated like the embedding is.
    pub fn tokenize(&mut self, text: &str) -> Result<Vec<u32>> {
        self.tokenize_with(text, self.plan.limits().max_tokens, self.options.truncate)
    }

    /// The token ids of `text`, at most `max_tokens` of them ([CLS] and [SEP] included),
    /// truncated when `truncate`, else an error when more are needed.
    pub fn tokenize_with(&mut self, text: &str, max_tokens: usize, truncate: bool) -> Result<Vec<u32>> {
        let lookup = lookup(&self.meta, &self.index)?;
        // An index needs no more than the smallest window; a scan makes one pass over the vocab
        // per window, so it gets one holding most texts whole.
        let window = match lookup.mode() {
            tokenizer::Mode::Index => tokenizer::MIN_WINDOW_CHARS,
            tokenizer::Mode::Scan => text.len().clamp(tokenizer::MIN_WINDOW_CHARS, 4096),
        };
        let mut work = vec![0u8; tokenizer::work_bytes(lookup.mode(), window)];
        let mut out = vec![0u32; max_tokens.max(2)];
        let options = tokenizer::Options { max_tokens: max_tokens.max(2), truncate };
        let mut tok = Tokenize::new(&self.meta.vocab, lookup, text, &mut work, &mut out, options)?;
        Ok(tok.run(&mut self.source)?.to_vec())
    }
}

/// A job in progress over an [`Embedder`]'s source. See [`Embedder::job`].
pub struct Running<'e, S: Source> {
    job: Job<'e>,
    source: &'e mut S,
}

impl<S: Source> std::fmt::Debug for Running<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("job", &self.job).finish_non_exhaustive()
    }
}

impl<S: Source> Running<'_, S> {
    /// One bounded step of work (see [`Job::step`]).
    pub fn step(&mut self) -> Result<Step<'_>> {
        Ok(self.job.step(self.source)?)
    }

    /// Tokens in the job (known once tokenizing is done).
    pub fn n_tokens(&self) -> usize {
        self.job.n_tokens()
    }
}

/// The lookup for an embedder's vocab index (scan when there is none).
fn lookup<'m>(meta: &ModelMeta, index: &'m [u8]) -> Result<Lookup<'m>> {
    if index.is_empty() {
        return Ok(Lookup::Scan);
    }
    Ok(Lookup::Index(VocabIndex::open(&meta.vocab, index)?))
}

/// Loads a model's metadata and layer table, sizing the layer storage to the model.
pub fn load<S: Source>(source: &mut S) -> Result<(ModelMeta, Vec<LayerRefs>)> {
    let mut scratch = vec![0u8; 8192];
    let mut layers = vec![LayerRefs::default(); 64];
    loop {
        let mut loader = ModelLoader::new(&mut scratch, &mut layers)?;
        match loader.load(source) {
            Ok(meta) => {
                layers.truncate(meta.hparams.n_layer);
                return Ok((meta, layers));
            }
            Err(stepembed_core::Error::BufferTooSmall { needed, given })
                if given == layers.len() && needed > given =>
            {
                layers = vec![LayerRefs::default(); needed];
            }
            Err(e) => return Err(e.into()),
        }
    }
}
