//! [`Embedder`]: the blocking and async embedding API over a model file.
//!
//! It loads the model's metadata (never its weights), plans the memory once, allocates the
//! arena and the vocab index once, and then runs core [`Job`]s: to the end for
//! [`Embedder::embed`], one step per poll for [`Embedder::embed_async`] and
//! [`Embedder::embed_batch_async`], or step by step under the caller's control with
//! [`Embedder::job`].
//!
//! The async functions do one bounded step per poll and yield between steps, but each step
//! *reads* from the source synchronously: with a cold page cache a step may wait for the disk.
//! They suit a single-threaded executor interleaving other tasks; a host that must never wait
//! runs them on a thread of its own.
//!
//! Every job goes through the breakers of [`crate::breaker`]: the optional per-call
//! [`EmbedderOptions::timeout`] and the step-time target [`EmbedderOptions::step_target`].

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future::{block_on, yield_now};

use stepembed_core::engine::{Input, Job, JobOptions, Limits, Mode, Plan, PlanKind, Step, DEFAULT_BUDGET};
use stepembed_core::io::Source;
use stepembed_core::model::{LayerRefs, LoadStep, Model, ModelLoader, ModelMeta, Pooling};
use stepembed_core::tokenizer::{
    self, TextIndexBuilder, TextLookup, TextTokenize, TextVocab, TokenIndex, VocabIndex,
};

use crate::breaker::{Deadline, StepTuner};
use crate::error::{Error, Result};
use crate::io::FileSource;
use crate::spread::{Finished, Round, Spread};
use crate::threads::Threads;

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
    /// fastest plan that fits is used instead of `plan` ([`Plan::fit_mode`]); too little is
    /// [`stepembed_core::Error::ArenaTooSmall`].
    pub memory: Option<usize>,
    /// How weight matrix products are computed (default [`Mode::Exact`]; [`Mode::Fast`]: int8
    /// activations, a larger plan, see [`Plan::with_mode`]).
    pub mode: Mode,
    /// Work units per step (default [`DEFAULT_BUDGET`]).
    pub budget: u64,
    /// Scale embeddings to unit length (default true).
    pub normalize: bool,
    /// Cut texts longer than `max_tokens` (default true); when false they are an error.
    pub truncate: bool,
    /// Most time one call may take (default none): past it the call fails with
    /// [`Error::Timeout`] and its job is dropped.
    pub timeout: Option<Duration>,
    /// Target time per step (default none): the budget is recalibrated from measured step
    /// times ([`StepTuner`]), `budget` being the starting point.
    pub step_target: Option<Duration>,
    /// How token vectors become the embedding (default: the file's `pooling_type`): mean or
    /// [CLS], both of which every architecture here computes.
    pub pooling: Option<Pooling>,
    /// Threads to embed on, the calling one included (default: the available cores,
    /// [`Threads::available`]; 0 counts as 1); results are bit-identical for any count.
    ///
    /// A batch call ([`Embedder::embed_batch`], the service) with more than one job runs its
    /// jobs in rounds, one job per thread at once, each on one thread with an arena of its own
    /// (text splitting, the faster split for batches; the vocab index is shared): for an
    /// embedder opened from a file ([`Embedder::open_with`]) on unix without a
    /// [`EmbedderOptions::memory`] cap, whose extra arenas (and threads) are made at open and
    /// counted by [`Embedder::memory_bytes`].
    ///
    /// Any other job has each step's matrix products split by weight rows over the threads;
    /// the plan grows by 64 KiB of output tile and one decode scratch per extra thread
    /// ([`Plan::with_threads`]). A step does the same work units as with one thread, so it is
    /// never longer (the parts of a step that are not split — attention, norms, the dense head
    /// — keep one thread's step time). When [`EmbedderOptions::memory`] cannot hold the extra
    /// room, one thread.
    pub threads: usize,
}

impl Default for EmbedderOptions {
    fn default() -> Self {
        EmbedderOptions {
            max_tokens: None,
            max_texts: 16,
            plan: PlanKind::Fast,
            memory: None,
            mode: Mode::Exact,
            budget: DEFAULT_BUDGET,
            normalize: true,
            truncate: true,
            timeout: None,
            step_target: None,
            pooling: None,
            threads: Threads::available(),
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
    /// The vocab index, built once (empty when the plan streams the vocab instead), shared with
    /// the [`Spread`] workers.
    pub(crate) index: Arc<Vec<u8>>,
    pub(crate) options: EmbedderOptions,
    /// Calibrates the budget when [`EmbedderOptions::step_target`] is set.
    pub(crate) tuner: Option<StepTuner>,
    /// Every job step's duration.
    pub(crate) step_stats: StepStats,
    /// The threads each step runs on.
    pub(crate) threads: Threads,
    /// The workers that batch calls spread their jobs over (text splitting): for an embedder
    /// opened from a file with several threads and no [`EmbedderOptions::memory`] cap.
    pub(crate) spread: Option<Spread>,
}

/// Step counts and durations of an [`Embedder`]'s jobs.
#[derive(Debug, Clone)]
pub struct StepStats {
    jobs: u64,
    steps: u64,
    max: Duration,
    /// The latest [`StepStats::RECENT`] step times in µs, a ring written at `steps % RECENT`.
    recent: Vec<u32>,
}

impl StepStats {
    /// Steps kept for [`StepStats::p99`].
    pub const RECENT: usize = 1024;

    fn new() -> Self {
        StepStats { jobs: 0, steps: 0, max: Duration::ZERO, recent: Vec::with_capacity(Self::RECENT) }
    }

    fn record(&mut self, step: Duration) {
        let us = u32::try_from(step.as_micros()).unwrap_or(u32::MAX);
        let slot = (self.steps % Self::RECENT as u64) as usize;
        match self.recent.get_mut(slot) {
            Some(old) => *old = us,
            None => self.recent.push(us),
        }
        self.steps += 1;
        self.max = self.max.max(step);
    }

    /// Jobs started (each one pass over the weights for all its texts).
    pub fn jobs(&self) -> u64 {
        self.jobs
    }

    /// Steps done.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The longest step.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The 99th percentile of the latest [`StepStats::RECENT`] step times (zero before any).
    pub fn p99(&self) -> Duration {
        let mut recent = self.recent.clone();
        recent.sort_unstable();
        let rank = (recent.len() * 99).div_ceil(100).saturating_sub(1);
        Duration::from_micros(recent.get(rank).copied().unwrap_or(0).into())
    }
}

/// A text's token ids and whether they were cut to fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// [CLS] … [SEP].
    pub ids: Vec<u32>,
    /// Whether the text had more tokens than the limit and was cut.
    pub truncated: bool,
}

/// Work units per tokenizer unit (a char normalized, a vocab entry compared, …), as the core's
/// jobs count them: converts [`EmbedderOptions::budget`] into tokenizer and index-builder steps.
const TOKENIZER_UNIT_COST: u64 = 1000;

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
        block_on(Embedder::open_async(path, options))
    }

    /// Opens a GGUF model file, yielding between the bounded steps that build the vocab index
    /// (see [`Embedder::from_source_async`]).
    pub async fn open_async(path: impl AsRef<Path>, options: EmbedderOptions) -> Result<Self> {
        let path = path.as_ref();
        let file = crate::io::open(path).map_err(|source| Error::Open { path: path.into(), source })?;
        let mut embedder = Embedder::from_source_async(file, options).await?;
        if options.memory.is_none() {
            let Embedder { source, meta, layers, plan, index, .. } = &embedder;
            embedder.spread = Spread::new(source.inner(), path, *meta, layers, *plan, Arc::clone(index))?;
        }
        Ok(embedder)
    }
}

impl<S: Source> Embedder<S> {
    /// Loads the model from any `Read + Seek` source: reads its metadata and tensor table,
    /// plans, allocates the arena and builds the vocab index (when planned).
    pub fn from_source(source: S, options: EmbedderOptions) -> Result<Self> {
        block_on(Embedder::from_source_async(source, options))
    }

    /// [`Embedder::from_source`], yielding between the loader's bounded steps (one metadata
    /// entry, a few array elements or tensor infos each; see [`load_async`]) and between steps of
    /// at most one budget ([`EmbedderOptions::budget`]) while the vocab index is built. Nothing
    /// is allocated when the plan does not fit [`EmbedderOptions::memory`].
    pub async fn from_source_async(mut source: S, options: EmbedderOptions) -> Result<Self> {
        let (mut meta, layers) = load_async(&mut source).await?;
        if let Some(pooling) = options.pooling {
            meta.hparams.pooling = pooling;
        }
        let model = Model::new(meta, &layers)?;
        let max_tokens = options.max_tokens.unwrap_or(meta.hparams.n_ctx).min(meta.hparams.n_ctx);
        // Limits the plan refuses (fewer than 2 tokens) come back as its typed error.
        let limits = Limits { max_tokens, max_texts: options.max_texts.max(1).min(max_tokens.max(1)) };
        let plan = match options.memory {
            Some(memory) => {
                let plan = Plan::fit_mode(&model, limits, memory, options.mode)?;
                Some(plan.with_threads(options.threads)?)
                    .filter(|p| p.memory_bytes() <= memory)
                    .unwrap_or(plan)
            }
            None => Plan::of_kind(&model, limits, options.plan)?
                .with_mode(options.mode)?
                .with_threads(options.threads)?,
        };
        let threads = Threads::new(plan.threads()).map_err(|e| {
            Error::InvalidArgument(format!("threads: could not start {} threads: {e}", plan.threads()))
        })?;
        let mut index = vec![0u8; plan.index_bytes()];
        if !index.is_empty() {
            let mut scratch = vec![0u8; 4096];
            let budget = tokenizer_budget(options.budget);
            let mut builder = TextIndexBuilder::new(&meta.text_vocab(), &mut index)?;
            while builder.step(&mut source, &mut scratch, budget)? == tokenizer::Step::Pending {
                yield_now().await;
            }
            builder.finish()?;
        }
        let arena = vec![0u8; plan.arena_bytes()];
        let tuner = options.step_target.map(|target| StepTuner::new(target, options.budget));
        let step_stats = StepStats::new();
        let index = Arc::new(index);
        Ok(Embedder {
            source,
            meta,
            layers,
            plan,
            arena,
            index,
            options,
            tuner,
            step_stats,
            threads,
            spread: None,
        })
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

    /// Bytes allocated for the arena and the vocab index, and for the arenas of the threads that
    /// batch calls spread their jobs over (see [`EmbedderOptions::threads`]).
    pub fn memory_bytes(&self) -> usize {
        let spread = self.spread.as_ref().map_or(0, Spread::memory_bytes);
        self.arena.len() + self.index.len() + spread
    }

    /// Most texts a batch call runs at once: [`EmbedderOptions::max_texts`] per job, times the
    /// jobs that run at the same time (one per thread when they are spread, see
    /// [`EmbedderOptions::threads`]).
    pub fn texts_at_once(&self) -> usize {
        let jobs = self.spread.as_ref().map_or(1, Spread::width);
        self.plan.limits().max_texts.saturating_mul(jobs)
    }

    /// Step counts and durations of the jobs run so far.
    pub fn step_stats(&self) -> &StepStats {
        &self.step_stats
    }

    /// The options in use (the budget as last calibrated when a step target is set).
    pub fn options(&self) -> EmbedderOptions {
        let budget = self.tuner.as_ref().map_or(self.options.budget, StepTuner::budget);
        EmbedderOptions { budget, ..self.options }
    }

    /// A job for `input` that the caller steps: [`Running::step`] does one bounded step. This is
    /// what a host loop uses to interleave embedding with its own work. The job's deadline is
    /// [`EmbedderOptions::timeout`] from now.
    pub fn job<'e>(&'e mut self, input: Input<'e>) -> Result<Running<'e, S>> {
        let deadline = Deadline::after(self.options.timeout);
        self.job_until(input, deadline)
    }

    /// [`Embedder::job`] with an explicit deadline.
    pub fn job_until<'e>(&'e mut self, input: Input<'e>, deadline: Deadline) -> Result<Running<'e, S>> {
        let options = self.job_options();
        let model = Model::new(self.meta, &self.layers)?;
        let lookup = lookup(&self.meta, &self.index)?;
        let job = Job::new(model, &self.plan, &mut self.arena, input, lookup, options)?;
        self.step_stats.jobs += 1;
        let (tuner, stats) = (self.tuner.as_mut(), &mut self.step_stats);
        let threads = &self.threads;
        Ok(Running { job, source: &mut self.source, tuner, stats, deadline, done_units: 0, threads })
    }

    /// The options of the next job: the budget as last calibrated.
    fn job_options(&self) -> JobOptions {
        let EmbedderOptions { normalize, truncate, mode, .. } = self.options;
        JobOptions { normalize, budget: self.options().budget, truncate, mode }
    }

    /// Embeds one text (blocking).
    pub fn embed(&mut self, text: &str) -> Result<Vec<f32>> {
        block_on(self.embed_async(text))
    }

    /// Embeds one text, one step per poll: between steps the future yields, so other tasks of
    /// the executor run. Cancelling (dropping) the future is safe at any point. See the module
    /// documentation on reads.
    pub async fn embed_async(&mut self, text: &str) -> Result<Vec<f32>> {
        let mut job = self.job(Input::Text(text))?;
        loop {
            if let Step::Done(e) = job.step()? {
                return Ok(e.to_vec());
            }
            yield_now().await;
        }
    }

    /// Embeds texts, several per job: each job's weight chunks are read once for all its texts.
    /// Texts are tokenized first and packed into jobs by [`Embedder::batches`]. Fails fast: the
    /// first text that fails fails the call (see [`Embedder::embed_batch_each`]).
    pub fn embed_batch(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        block_on(self.embed_batch_async(texts))
    }

    /// [`Embedder::embed_batch`], one step per poll (see [`Embedder::embed_async`]). The
    /// deadline ([`EmbedderOptions::timeout`]) covers the whole batch.
    pub async fn embed_batch_async(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let deadline = Deadline::after(self.options.timeout);
        self.batch_each(texts, deadline, true).await?.into_iter().collect()
    }

    /// Embeds texts like [`Embedder::embed_batch`], but a text that fails (too long, …) only
    /// fails its own entry: the others are still returned. A deadline that passes fails the
    /// whole call.
    pub fn embed_batch_each(&mut self, texts: &[&str]) -> Result<Vec<Result<Vec<f32>>>> {
        let deadline = Deadline::after(self.options.timeout);
        block_on(self.batch_each(texts, deadline, false))
    }

    /// Tokenizes and embeds `texts`, one result per text; with `fail_fast` a text that fails
    /// to tokenize is the error of the call, before anything is embedded.
    async fn batch_each(
        &mut self,
        texts: &[&str],
        deadline: Deadline,
        fail_fast: bool,
    ) -> Result<Vec<Result<Vec<f32>>>> {
        let mut ids = Vec::with_capacity(texts.len());
        for text in texts {
            deadline.check()?;
            match self.tokens_async(text).await {
                Err(e) if fail_fast => return Err(e),
                tokens => ids.push(tokens.map(|t| t.ids)),
            }
        }
        self.embed_ids_each(ids, deadline, fail_fast, || Ok(())).await
    }

    /// Embeds tokenized texts packed into shared jobs by [`Embedder::batches`], one result per
    /// entry: an entry that is already an error stays one. A job that fails is the call's error
    /// with `fail_fast`; otherwise it is rerun text by text so that only the failing texts fail
    /// (a non-finite value from one text's corrupt embedding row, say) — except when the source
    /// failed, which no text caused: then every text of the job gets that error (a transient
    /// read error is reported, never hidden by a rerun). Before every step `deadline` and
    /// `check` are tested; their error stops the call (the job is dropped).
    pub(crate) async fn embed_ids_each(
        &mut self,
        ids: Vec<Result<Vec<u32>>>,
        deadline: Deadline,
        fail_fast: bool,
        mut check: impl FnMut() -> Result<()>,
    ) -> Result<Vec<Result<Vec<f32>>>> {
        let mut out: Vec<Result<Vec<f32>>> = Vec::with_capacity(ids.len());
        let mut seqs = Vec::new();
        let mut slots = Vec::new();
        for (slot, entry) in ids.into_iter().enumerate() {
            match entry {
                Ok(seq) => {
                    seqs.push(seq);
                    slots.push(slot);
                    out.push(Ok(Vec::new()));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        let e = self.embedding_len();
        let texts: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        let batches = self.batches(&seqs);
        let finished = self.run_jobs(&texts, &batches, deadline, &mut check, fail_fast).await?;
        for (range, result) in batches.into_iter().zip(finished) {
            let batch = texts.get(range.clone()).unwrap_or_default();
            match result {
                Ok(done) => {
                    for (slot, v) in slots[range].iter().zip(done.embeddings.chunks_exact(e)) {
                        out[*slot] = Ok(v.to_vec());
                    }
                }
                Err(err) if fail_fast => return Err(err),
                Err(err) if batch.len() == 1 => out[slots[range.start]] = Err(err),
                Err(Error::Core(err @ stepembed_core::Error::Io { .. })) => {
                    for slot in &slots[range] {
                        out[*slot] = Err(Error::Core(err));
                    }
                }
                Err(_) => {
                    for (slot, seq) in slots[range].iter().zip(batch) {
                        let alone = self.run_ids(&[seq], deadline, &mut check, false).await?;
                        out[*slot] = alone.map(|done| done.embeddings);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Runs the [`Input::IdBatch`] jobs of `batches` (ranges of `texts`, from
    /// [`Embedder::batches`]), yielding between steps; one result per job, in order (fewer when
    /// `fail_fast` stops after a round with a failed job). With [`Spread`] workers (several
    /// threads) the jobs run in rounds, one job per thread at once, each on one thread; a lone
    /// job (or a round of one) is split by weight rows over the threads instead. The same bits
    /// either way. Before every step of the calling thread's job and between waits for the
    /// others, `deadline` and `check` are tested; their error stops the call (and the workers'
    /// jobs at their next step). The workers' jobs run with the budget of the round's start;
    /// their step times are added to [`Embedder::step_stats`].
    pub(crate) async fn run_jobs(
        &mut self,
        texts: &[&[u32]],
        batches: &[std::ops::Range<usize>],
        deadline: Deadline,
        check: &mut impl FnMut() -> Result<()>,
        fail_fast: bool,
    ) -> Result<Vec<Result<Finished>>> {
        let job = |r: &std::ops::Range<usize>| texts.get(r.clone()).unwrap_or_default();
        let width = match &self.spread {
            Some(spread) if batches.len() > 1 => spread.width(),
            _ => 1,
        };
        let mut out = Vec::with_capacity(batches.len());
        for round in batches.chunks(width) {
            let Some((first, rest)) = round.split_first() else { continue };
            let options = self.job_options();
            let others = match self.spread.as_ref().filter(|_| !rest.is_empty()) {
                Some(spread) => {
                    let jobs: Vec<&[&[u32]]> = rest.iter().map(job).collect();
                    Some(spread.dispatch(&jobs, options)?)
                }
                None => None,
            };
            out.push(self.run_ids(job(first), deadline, check, others.is_some()).await?);
            // Dropped at the end of the round, or early by an error: then it stops the rest.
            let round = others.as_ref();
            for i in 0..round.map_or(0, Round::len) {
                let result = loop {
                    if let Some(result) = round.and_then(|r| r.wait(i)) {
                        break result;
                    }
                    deadline.check()?;
                    check()?;
                    yield_now().await;
                };
                if let Ok(done) = &result {
                    self.step_stats.jobs += 1;
                    done.steps.iter().for_each(|&took| self.step_stats.record(took));
                }
                out.push(result);
            }
            if fail_fast && out.iter().any(Result::is_err) {
                break;
            }
        }
        Ok(out)
    }

    /// Runs one [`Input::IdBatch`] job, yielding between steps, on the embedder's threads or
    /// (`one_thread`) on the calling thread alone: the inner result is the job's, the outer one
    /// the deadline's or `check`'s.
    async fn run_ids(
        &mut self,
        batch: &[&[u32]],
        deadline: Deadline,
        check: &mut impl FnMut() -> Result<()>,
        one_thread: bool,
    ) -> Result<Result<Finished>> {
        let mut job = match self.job_until(Input::IdBatch(batch), Deadline::NONE) {
            Ok(job) => job,
            Err(e) => return Ok(Err(e)),
        };
        if one_thread {
            job.threads = &ONE_THREAD;
        }
        let mut steps = Vec::new();
        loop {
            deadline.check()?;
            check()?;
            let start = Instant::now();
            let step = job.step();
            steps.push(start.elapsed());
            match step {
                Ok(Step::Done(all)) => {
                    return Ok(Ok(Finished { embeddings: all.to_vec(), steps }));
                }
                Ok(Step::Pending(_)) => yield_now().await,
                Err(e) => return Ok(Err(e)),
            }
        }
    }

    /// Splits tokenized texts into consecutive batches of at most `max_texts` texts and
    /// `max_tokens` tokens (each text fits alone, being cut at `max_tokens`), for
    /// [`Input::IdBatch`] jobs, the texts spread evenly over as many jobs as `max_texts` calls
    /// for: 20 texts of 16 at most are two jobs of 10, not 16 and 4, so that jobs run on
    /// several threads at once end together. The grouping does not depend on the thread count
    /// (in fast mode a text's bits depend on its job's layout).
    pub fn batches(&self, ids: &[Vec<u32>]) -> Vec<std::ops::Range<usize>> {
        let limits = self.plan.limits();
        let packed = pack(ids, limits.max_texts, limits.max_tokens);
        if packed.len() < 2 {
            return packed;
        }
        pack(ids, ids.len().div_ceil(packed.len()), limits.max_tokens)
    }

    /// The token ids of `text`, [CLS] … [SEP], truncated like the embedding is.
    pub fn tokenize(&mut self, text: &str) -> Result<Vec<u32>> {
        self.tokenize_with(text, self.plan.limits().max_tokens, self.options.truncate)
    }

    /// The token ids of `text`, at most `max_tokens` of them ([CLS] and [SEP] included),
    /// truncated when `truncate`, else an error when more are needed.
    pub fn tokenize_with(&mut self, text: &str, max_tokens: usize, truncate: bool) -> Result<Vec<u32>> {
        block_on(self.tokenize_async(text, max_tokens, truncate))
    }

    /// The token ids of `text` as [`Embedder::tokenize`] gives them, and whether the text was
    /// cut, tokenized in bounded steps (see [`Embedder::tokenize_async`]).
    pub async fn tokens_async(&mut self, text: &str) -> Result<Tokens> {
        let max = self.plan.limits().max_tokens.max(2);
        if !self.options.truncate {
            let ids = self.tokenize_async(text, max, false).await?;
            return Ok(Tokens { ids, truncated: false });
        }
        // One token more than the limit tells whether cutting was needed: the cut keeps [CLS],
        // the first pieces and [SEP], exactly as tokenizing with the limit does.
        let mut ids = self.tokenize_async(text, max + 1, true).await?;
        let truncated = ids.len() > max;
        if truncated {
            ids.truncate(max - 1);
            ids.push(self.meta.vocab.sep());
        }
        Ok(Tokens { ids, truncated })
    }

    /// [`Embedder::tokenize_with`], yielding between steps of at most one budget.
    pub async fn tokenize_async(
        &mut self,
        text: &str,
        max_tokens: usize,
        truncate: bool,
    ) -> Result<Vec<u32>> {
        let budget = tokenizer_budget(self.options().budget);
        let lookup = lookup(&self.meta, &self.index)?;
        let vocab = self.meta.text_vocab();
        let mode = lookup.mode();
        let window = match vocab {
            // WordPiece: an index needs no more than the smallest window; a scan makes one pass
            // over the vocab per window, so it gets one holding most texts whole.
            TextVocab::WordPiece(_) => match mode {
                tokenizer::Mode::Index => tokenizer::MIN_WINDOW_CHARS,
                tokenizer::Mode::Scan => text.len().clamp(tokenizer::MIN_WINDOW_CHARS, 4096),
            },
            // SentencePiece and BPE cut windows only where no piece spans: a window holding the
            // whole escaped text (a space becomes 3 bytes) never runs out, up to 64 KiB.
            // BPE scanning: the window is the longest word (98 bytes of memory per byte).
            TextVocab::Model(v)
                if mode == tokenizer::Mode::Scan && matches!(v.kind(), tokenizer::ModelKind::Bpe(_)) =>
            {
                text.len().clamp(vocab.min_window(), tokenizer::MAX_BPE_SCAN_WINDOW)
            }
            TextVocab::Model(_) => text.len().saturating_mul(3).clamp(vocab.min_window(), 64 << 10),
        };
        let mut work = vec![0u8; vocab.work_bytes(mode, window)];
        let mut out = vec![0u32; max_tokens.max(2)];
        let options = tokenizer::Options { max_tokens: max_tokens.max(2), truncate };
        let mut tok = TextTokenize::new(&vocab, lookup, text, &mut work, &mut out, options)?;
        while tok.step(&mut self.source, budget)? == tokenizer::Step::Pending {
            yield_now().await;
        }
        Ok(tok.ids().to_vec())
    }
}

/// The calling thread alone (a job of a round spread over threads, see [`Embedder::run_jobs`]).
static ONE_THREAD: Threads = Threads::one();

/// A job in progress over an [`Embedder`]'s source. See [`Embedder::job`].
pub struct Running<'e, S: Source> {
    job: Job<'e>,
    source: &'e mut S,
    tuner: Option<&'e mut StepTuner>,
    stats: &'e mut StepStats,
    deadline: Deadline,
    /// The job's work units done when the last step ended (what the step tuner measures by).
    done_units: u64,
    threads: &'e Threads,
}

impl<S: Source> std::fmt::Debug for Running<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("job", &self.job).finish_non_exhaustive()
    }
}

impl<S: Source> Running<'_, S> {
    /// One bounded step of work (see [`Job::step`]) of the budget the step-time target calls
    /// for, timed for it; past the job's deadline it is [`Error::Timeout`] instead.
    pub fn step(&mut self) -> Result<Step<'_>> {
        self.deadline.check()?;
        if let Some(tuner) = self.tuner.as_ref() {
            // Recalibrated within the job too: a single long text is thousands of steps.
            self.job.set_budget(tuner.budget());
        }
        let start = Instant::now();
        let step = self.job.step_parallel(self.source, self.threads);
        let took = start.elapsed();
        self.stats.record(took);
        if let Ok(Step::Pending(progress)) = &step {
            let units = progress.done.saturating_sub(self.done_units);
            self.done_units = progress.done;
            if let Some(tuner) = self.tuner.as_mut() {
                tuner.record(took, units);
            }
        }
        Ok(step?)
    }

    /// Tokens in the job (known once tokenizing is done).
    pub fn n_tokens(&self) -> usize {
        self.job.n_tokens()
    }
}

/// A tokenizer step's budget (tokenizer units) for a job budget of `budget` work units.
fn tokenizer_budget(budget: u64) -> u32 {
    u32::try_from(budget / TOKENIZER_UNIT_COST).unwrap_or(u32::MAX).max(1)
}

/// `ids` in consecutive runs of at most `max_texts` texts and `max_tokens` tokens (a text
/// longer than that alone in its run).
fn pack(ids: &[Vec<u32>], max_texts: usize, max_tokens: usize) -> Vec<std::ops::Range<usize>> {
    let mut batches = Vec::new();
    let mut start = 0;
    while start < ids.len() {
        let (mut end, mut tokens) = (start, 0);
        while end < ids.len()
            && end - start < max_texts.max(1)
            && (end == start || tokens + ids[end].len() <= max_tokens)
        {
            tokens += ids[end].len();
            end += 1;
        }
        batches.push(start..end);
        start = end;
    }
    batches
}

/// The lookup for an embedder's vocab index (scan when there is none).
pub(crate) fn lookup<'m>(meta: &ModelMeta, index: &'m [u8]) -> Result<TextLookup<'m>> {
    if index.is_empty() {
        return Ok(TextLookup::Scan);
    }
    Ok(match meta.text_vocab() {
        TextVocab::WordPiece(vocab) => TextLookup::WordPiece(VocabIndex::open(&vocab, index)?),
        TextVocab::Model(vocab) => TextLookup::Model(TokenIndex::open(&vocab, index)?),
    })
}

/// Loads a model's metadata and layer table, sizing the layer storage to the model. Blocks
/// until done; [`load_async`] is the same in bounded steps.
pub fn load<S: Source>(source: &mut S) -> Result<(ModelMeta, Vec<LayerRefs>)> {
    block_on(load_async(source))
}

/// [`load`], yielding after every [`ModelLoader::step`] (a bounded piece of reading: one
/// metadata entry, a few array elements or tensor infos), so that a host polling it in slices
/// (the Node addon's cooperative mode) is never held for the whole header. A model with more
/// layers than first guessed is read again with room for all of them.
pub async fn load_async<S: Source>(source: &mut S) -> Result<(ModelMeta, Vec<LayerRefs>)> {
    let mut scratch = vec![0u8; 8192];
    let mut layers = vec![LayerRefs::default(); 64];
    loop {
        let mut loader = ModelLoader::new(&mut scratch, &mut layers)?;
        let loaded = loop {
            match loader.step(source) {
                Ok(LoadStep::Pending) => yield_now().await,
                Ok(LoadStep::Done(meta)) => break Ok(meta),
                Err(e) => break Err(e),
            }
        };
        match loaded {
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
