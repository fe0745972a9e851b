//! [`Job`]: one embedding computation as a state machine the host advances with
//! [`Job::step`]: the tokenizer, then the model's [`Program`] run by one interpreter
//! (`interpreter.rs`) a budget at a time.
//!
//! Index arithmetic is checked (see [`checked`]) and every access goes through `get`, so a bug
//! is an error, not a panic.

mod attention;
mod checked;
mod interpreter;
mod matmul;
mod parts;
mod pool;
mod tokenwise;

use crate::engine::arena::{carve, Regions};
use crate::engine::ops;
use crate::engine::plan::{Layout, Plan};
use crate::engine::program::Program;
use crate::error::{Error, InputError, Result};
use crate::io::{read_exact_at, Source};
use crate::model::{LayerRefs, Model, TensorRef};
use crate::quant::Kernels;
use crate::tokenizer::{self, TextLookup, TextTokenize};
use checked::{add, nth_row, span, sub, units};
use interpreter::Pc;
pub use parts::{Parallel, Part, Sequential};

/// Work units one [`Job::step`] may do by default: about a quarter of a millisecond on one core
/// of the machine the README's numbers come from (AVX-512 kernels), a few milliseconds with the
/// portable scalar kernels.
///
/// A work unit is the time of one multiply-add in the weight kernels (≈ 0.03 ns there); the other
/// passes are converted with the per-element costs below, measured on the same machine.
pub const DEFAULT_BUDGET: u64 = 8_000_000;

/// Work units per element of the element-wise passes.
const NORM_COST: u64 = 80;
const ACT_COST: u64 = 100;
/// Rotary positions: per (cos, sin) pair computed in f64, and per element rotated.
const ROPE_PAIR_COST: u64 = 1000;
const ROPE_COST: u64 = 8;
const EMBED_COST: u64 = 100;
const BIAS_COST: u64 = 10;
const POOL_COST: u64 = 20;
/// Work units per (query, key) pair of one head besides its 2·head_dim multiply-adds: the
/// exponential, the softmax bookkeeping and the value transposition; also the finiteness check
/// of each query's output (head_dim values, done once per query with its last pair). Measured
/// (thread CPU time, nomic-synth-12L batches of 16 texts): at 750 a unit of attention took a
/// quarter of the time of a weight-kernel unit (steps in attention ended 4x early); at 100 they
/// agree within 15%.
const ATTENTION_PAIR_COST: u64 = 100;
/// Work units of the int8 path (fast mode) besides its multiply-adds, counted one unit each as in
/// the f32 kernels (they take 0.55–0.6 of that at 128 tokens, so its steps end early rather than
/// late): per input element quantized (once per token and product; `quantize_q8` measured at
/// 3.5 ns per element, AVX-512 machine, benches/int8.rs, and `quantize_q8_refined`'s error
/// check 0.9 ns more; a token that gets a residual takes about twice that, which the cost does
/// not know in advance), and per weight element unpacked into a panel (once per weight row
/// whatever the token count; 0.3–0.45 ns measured at one token).
const QUANTIZE_COST: u64 = 130;
const PANEL_COST: u64 = 12;
/// Work units per read of part of a weight row (a product over some of its columns reads each
/// row on its own; see `row_read_cost`): on a file a seek and a read, 1.3 µs together
/// measured (std `File`, page-cached, 144-byte reads at scattered offsets, 2-core AMD EPYC),
/// where a unit is about 0.033 ns.
const ROW_READ_COST: u64 = 40_000;
/// Work units per tokenizer unit (a char normalized, a vocab entry compared, …).
const TOKENIZER_COST: u64 = 1000;
/// Work units per computed value checked for finiteness (every stage checks what it computed,
/// see [`Job::non_finite`]): about 0.1 ns per value, measured on a 2-core x86-64 machine where a
/// unit is about 0.033 ns.
const FINITE_COST: u64 = 3;

/// What a job embeds.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// One text, tokenized by the job (cut at the model's context or the plan's token limit,
    /// whichever is smaller, unless [`JobOptions::truncate`] is off).
    Text(&'a str),
    /// Several texts, embedded together: each weight chunk is read once for all of them.
    Texts(&'a [&'a str]),
    /// Token ids of one text, [CLS] and [SEP] included.
    Ids(&'a [u32]),
    /// Token ids of several texts, embedded together.
    IdBatch(&'a [&'a [u32]]),
}

/// What one [`Job::step`] achieved.
#[derive(Debug, PartialEq)]
#[must_use]
pub enum Step<'j> {
    /// Work remains: call `step` again (interleave other work as you like).
    Pending(Progress),
    /// Finished: one embedding of `n_embd` floats per text, one after another. Later steps
    /// return the same.
    Done(&'j [f32]),
}

/// How far a job is, in work units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Units done so far.
    pub done: u64,
    /// Units the whole job takes (an estimate; fixed once the input is tokenized).
    pub total: u64,
    /// What the next step works on: `"tokenize"`, `"embed"`, `"qkv"`, `"attention"`,
    /// `"attention-out"`, `"ffn"`, `"norm"` or `"pool"`.
    pub stage: &'static str,
    /// The layer the next step works in, when it is in one.
    pub layer: Option<usize>,
}

/// How a job computes its weight matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Mode {
    /// f32 arithmetic throughout, the weights decoded to f32 (the default).
    #[default]
    Exact,
    /// Each matrix product whose weight type has an int8 kernel
    /// ([`crate::quant::has_q8_kernel`]) quantizes its input rows to int8 blocks of 32 (one f32
    /// scale each) and multiplies them with the quantized weights in integer arithmetic; other
    /// types, attention, norms and activations stay f32. Needs a plan made for it
    /// ([`Plan::with_mode`]). Cosine to the float64 reference ≥ 0.9992 for every text of the
    /// fixture models but minilm-l6's 2- and 3-token ones (0.9989).
    Fast,
}

/// Options of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobOptions {
    /// Scale each embedding to unit L2 norm (default true).
    pub normalize: bool,
    /// Work units per step (default [`DEFAULT_BUDGET`]; 0 counts as 1). A step does at most
    /// this much work — or one unit of it (a weight row, an attention tile, a token) when a
    /// single unit costs more.
    pub budget: u64,
    /// Cut a text longer than the model's context (or the plan's token limit) to [CLS] + the
    /// first pieces + [SEP] (default true); when false such a text is
    /// [`InputError::TooManyTokens`].
    pub truncate: bool,
    /// How weight matrix products are computed (default [`Mode::Exact`]).
    pub mode: Mode,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions { normalize: true, budget: DEFAULT_BUDGET, truncate: true, mode: Mode::Exact }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Tokenize {
        text: usize,
    },
    /// Running the program from `Pc` on.
    Run(Pc),
    Done,
}

/// One embedding job: a text (as token ids) or a batch, its arena, and where it is.
///
/// Create with [`Job::new`], then call [`Job::step`] until it returns [`Step::Done`]. Each step
/// does at most one budget of work ([`JobOptions::budget`]) and returns. An error poisons the
/// job: every later step returns it again. Dropping a job at any point is safe; nothing leaks
/// because nothing was allocated.
#[derive(Debug)]
pub struct Job<'a> {
    model: Model<'a>,
    program: &'static Program,
    plan: Plan,
    kernels: Kernels,
    r: Regions<'a>,
    /// The texts still to tokenize (empty for id input).
    texts: Texts<'a>,
    lookup: TextLookup<'a>,
    /// The text being tokenized.
    tokenizer: Option<TextTokenize<'a>>,
    n_tokens: usize,
    n_texts: usize,
    /// Texts whose ids are in place.
    filled: usize,
    options: JobOptions,
    phase: Phase,
    /// The current layer's tensors (when the program is in a layer).
    layer: Option<LayerRefs>,
    /// How the wide region is used, chosen from the token count once it is known.
    layout: Layout,
    /// The input the int8 region holds, if any ([`Mode::Fast`]).
    q8_held: Option<interpreter::Q8Held>,
    /// Tokens of the input being quantized that got a residual so far.
    q8_refined: usize,
    done_units: u64,
    total_units: u64,
    failed: Option<Error>,
}

impl<'a> Job<'a> {
    /// A job embedding `input` with `model`, working in `arena` as `plan` lays it out. Texts are
    /// tokenized by the model's tokenizer ([`ModelMeta::text_vocab`](crate::model::ModelMeta::text_vocab))
    /// through `lookup`: an index built for this model ([`tokenizer::Lookup::Index`] for
    /// WordPiece, [`TextLookup::Model`] for SentencePiece and BPE) when the plan's
    /// [`Plan::tokenizer_mode`] is index, [`TextLookup::Scan`] otherwise (and for ids).
    ///
    /// O(layers) (checking the plan against the model); tokenizing is part of the steps; copies
    /// the ids of id input. Fails with [`Error::PlanMismatch`] for a plan made for another model
    /// or a lookup of another mode than the plan's or [`Mode::Fast`] options with a plan not made
    /// for them ([`Plan::with_mode`]), [`Error::ArenaTooSmall`] for an arena
    /// shorter than `plan.arena_bytes()`, and [`Error::Input`] for more texts than planned or,
    /// for id input, more tokens than planned or than the model's context, an empty sequence,
    /// or an id outside the vocab.
    pub fn new(
        model: Model<'a>,
        plan: &Plan,
        arena: &'a mut [u8],
        input: Input<'a>,
        lookup: impl Into<TextLookup<'a>>,
        options: JobOptions,
    ) -> Result<Self> {
        let lookup = lookup.into();
        plan.check_model(&model)?;
        if options.mode == Mode::Fast && plan.numeric != Mode::Fast {
            return Err(Error::PlanMismatch);
        }
        let r = carve(plan, arena)?;
        let (texts, n_texts) = match input {
            Input::Text(t) => (Texts::One(t), 1),
            Input::Texts(ts) => (Texts::Many(ts), ts.len()),
            Input::Ids(_) => (Texts::None, 1),
            Input::IdBatch(b) => (Texts::None, b.len()),
        };
        if !matches!(texts, Texts::None) && lookup.mode() != plan.mode {
            return Err(Error::PlanMismatch);
        }
        if n_texts == 0 {
            return Err(Error::Input(InputError::Empty));
        }
        if n_texts > plan.limits.max_texts {
            return Err(Error::Input(InputError::TooManyTexts {
                texts: n_texts,
                max: plan.limits.max_texts,
            }));
        }
        let options = JobOptions { budget: options.budget.max(1), ..options };
        let mut job = Job {
            model,
            program: Program::of(model.meta().arch),
            plan: *plan,
            kernels: Kernels::detect(),
            r,
            texts,
            lookup,
            tokenizer: None,
            n_tokens: 0,
            n_texts,
            filled: 0,
            options,
            phase: Phase::Tokenize { text: 0 },
            layer: None,
            layout: plan.layout_for(plan.limits.max_tokens),
            q8_held: None,
            q8_refined: 0,
            done_units: 0,
            total_units: 0,
            failed: None,
        };
        match input {
            Input::Ids(ids) => job.set_ids(&[ids])?,
            Input::IdBatch(batch) => job.set_ids(batch)?,
            Input::Text(_) | Input::Texts(_) => {}
        }
        Ok(job)
    }

    /// Stores the ids of id input and skips tokenizing.
    fn set_ids(&mut self, texts: &[&[u32]]) -> Result<()> {
        let hp = *self.model.hparams();
        for ids in texts {
            if ids.is_empty() {
                return Err(Error::Input(InputError::Empty));
            }
            if ids.len() > hp.n_ctx {
                return Err(Error::Input(InputError::TooManyTokens { tokens: ids.len(), max: hp.n_ctx }));
            }
            if let Some(&bad) = ids.iter().find(|&&id| id as usize >= hp.n_vocab) {
                return Err(Error::Input(InputError::TokenIdOutOfRange(bad)));
            }
            self.push_text(ids)?;
        }
        self.start_embedding()
    }

    /// Appends one text's ids to the token sequence and records its span.
    fn push_text(&mut self, ids: &[u32]) -> Result<()> {
        let (n, text) = (self.n_tokens, self.filled);
        let end = n.saturating_add(ids.len());
        if end > self.plan.limits.max_tokens {
            return Err(Error::Input(InputError::TooManyTokens {
                tokens: end,
                max: self.plan.limits.max_tokens,
            }));
        }
        self.r.ids.get_mut(n..end).ok_or(Error::InvalidState)?.copy_from_slice(ids);
        let slot = self.r.spans.get_mut(nth_row(text, 2)?).ok_or(Error::InvalidState)?;
        slot.copy_from_slice(&[n as u32, ids.len() as u32]);
        self.n_tokens = end;
        self.filled = add(text, 1)?;
        Ok(())
    }

    /// Moves on to the forward pass once every text's ids are in place.
    fn start_embedding(&mut self) -> Result<()> {
        self.layout = self.plan.layout_for(self.n_tokens);
        self.phase = Phase::Run(self.first_pc()?);
        self.total_units = self.done_units.saturating_add(self.estimate_total());
        Ok(())
    }

    /// Tokenizes text `text` as far as the budget allows; on its end, appends its ids.
    fn tokenize_step<S: Source + ?Sized>(&mut self, io: &mut S, text: usize, budget: u64) -> Result<u64> {
        if self.tokenizer.is_none() {
            let s = self.texts.get(text).ok_or(Error::InvalidState)?;
            // Each text is cut (or refused) at the model's context or the plan's token limit,
            // whichever is smaller; a batch whose texts together overflow the plan is an error.
            let max_tokens = self.model.hparams().n_ctx.min(self.plan.limits.max_tokens);
            let options = tokenizer::Options { max_tokens, truncate: self.options.truncate };
            let out = core::mem::take(&mut self.r.tok_out);
            let work = core::mem::take(&mut self.r.tok_work);
            let vocab = self.model.meta().text_vocab();
            self.tokenizer = Some(TextTokenize::new(&vocab, self.lookup, s, work, out, options)?);
        }
        let tok = self.tokenizer.as_mut().ok_or(Error::InvalidState)?;
        let units = u32::try_from(budget / TOKENIZER_COST).unwrap_or(u32::MAX).max(1);
        if tok.step(io, units)? == tokenizer::Step::Pending {
            return Ok(budget);
        }
        let (out, n, work) = self.tokenizer.take().ok_or(Error::InvalidState)?.into_parts();
        let ids = out.get(..n).ok_or(Error::InvalidState)?;
        let pushed = self.push_text(ids);
        self.r.tok_out = out;
        self.r.tok_work = work;
        pushed?;
        let next = add(text, 1)?;
        if next < self.n_texts {
            self.phase = Phase::Tokenize { text: next };
        } else {
            self.start_embedding()?;
        }
        // The tokenizer does not say how much of its budget it used: count all of it.
        Ok(budget)
    }

    /// Replaces the kernel table (e.g. [`Kernels::scalar`] to compare against the reference
    /// path). Results differ only by float summation order.
    pub fn set_kernels(&mut self, kernels: Kernels) {
        self.kernels = kernels;
    }

    /// Changes the work budget of later steps.
    pub fn set_budget(&mut self, units: u64) {
        self.options.budget = units.max(1);
    }

    /// Tokens in the job (all texts).
    pub fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    /// Floats per embedding.
    pub fn embedding_len(&self) -> usize {
        self.plan.n_embd
    }

    /// Does at most one budget of work, reading weights from `io`, and reports.
    pub fn step<S: Source + ?Sized>(&mut self, io: &mut S) -> Result<Step<'_>> {
        self.step_parallel(io, &Sequential)
    }

    /// [`Job::step`], with each matrix product of the step split into up to
    /// [`Plan::threads`] parts that `par` runs (on as many threads as it likes; the job waits
    /// for them). The same budget, the same results, bit for bit, whatever `par` does with the
    /// parts; with a plan for one thread it is [`Job::step`].
    pub fn step_parallel<S: Source + ?Sized>(&mut self, io: &mut S, par: &dyn Parallel) -> Result<Step<'_>> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let mut spent = 0u64;
        while self.phase != Phase::Done && spent < self.options.budget {
            let left = self.options.budget.saturating_sub(spent);
            let advanced = match self.phase {
                Phase::Tokenize { text } => self.tokenize_step(io, text, left).map(Some),
                Phase::Run(pc) => self.run(io, pc, left, spent == 0, par),
                Phase::Done => Ok(Some(0)),
            };
            match advanced {
                Ok(Some(units)) => spent = spent.saturating_add(units.max(1)),
                // The next unit of work does not fit what is left of this step.
                Ok(None) => break,
                Err(e) => {
                    self.failed = Some(e);
                    return Err(e);
                }
            }
        }
        self.done_units = self.done_units.saturating_add(spent);
        if self.phase == Phase::Done {
            let len = self.n_texts.saturating_mul(self.plan.n_embd);
            return match self.r.out.get(..len) {
                Some(out) => Ok(Step::Done(out)),
                None => {
                    self.failed = Some(Error::InvalidState);
                    Err(Error::InvalidState)
                }
            };
        }
        let (stage, layer) = self.stage_name();
        Ok(Step::Pending(Progress {
            done: self.done_units,
            total: self.total_units.max(self.done_units),
            stage,
            layer,
        }))
    }

    /// The name of what the job works on next, and its layer.
    fn stage_name(&self) -> (&'static str, Option<usize>) {
        match self.phase {
            Phase::Tokenize { .. } => ("tokenize", None),
            Phase::Run(pc) => (self.op_at(pc).map_or("pool", |op| op.stage.name()), pc.layer()),
            Phase::Done => ("pool", None),
        }
    }

    /// The error for a NaN or an infinity computed by what the job works on now (the stage and
    /// layer that [`Job::step`] reports as next while the work is under way).
    fn non_finite(&self) -> Error {
        let (stage, layer) = self.stage_name();
        Error::NonFinite { stage, layer: layer.map(|l| u16::try_from(l).unwrap_or(u16::MAX)) }
    }

    /// The span (first token, token count) of text `i`.
    fn span(&self, i: usize) -> Result<(usize, usize)> {
        match self.r.spans.get(nth_row(i, 2)?) {
            Some(&[start, len]) => Ok((start as usize, len as usize)),
            _ => Err(Error::InvalidState),
        }
    }

    /// Position of token `t` within its text. O(log texts): texts lie one after another, so
    /// `t` is in the last one that starts at or before it.
    fn position_of(&self, t: usize) -> Result<usize> {
        let (mut lo, mut hi) = (0, self.n_texts);
        while hi.saturating_sub(lo) > 1 {
            // lo < mid < hi: the midpoint, without overflow.
            let mid = lo.midpoint(hi);
            if self.span(mid)?.0 <= t {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let (start, len) = self.span(lo)?;
        if !span(start, len)?.contains(&t) {
            return Err(Error::InvalidState);
        }
        sub(t, start)
    }

    /// A rough count of the job's work units, for progress reports.
    fn estimate_total(&self) -> u64 {
        let hp = self.model.hparams();
        let (n, e, f) = (self.n_tokens, hp.n_embd, hp.n_ff);
        let gates = if self.program.gated() { 3 } else { 2 };
        // Per layer: n·e·(4·e + gates·f) in the projections, 2·n²·e in attention.
        let projections = units(4, &[n, e, e]).saturating_add(units(gates, &[n, e, f]));
        let per_layer = projections.saturating_add(units(2, &[n, n, e]));
        per_layer.saturating_mul(hp.n_layer as u64)
    }
}

/// The texts of a job.
#[derive(Debug, Clone, Copy)]
enum Texts<'a> {
    /// Id input: nothing to tokenize.
    None,
    One(&'a str),
    Many(&'a [&'a str]),
}

impl<'a> Texts<'a> {
    fn get(&self, i: usize) -> Option<&'a str> {
        match *self {
            Texts::None => None,
            Texts::One(t) => (i == 0).then_some(t),
            Texts::Many(ts) => ts.get(i).copied(),
        }
    }
}

/// `Ok` when every value of `v` is finite, `non_finite` (the stage's [`Error::NonFinite`])
/// otherwise.
fn ensure_finite(v: &[f32], non_finite: Error) -> Result<()> {
    if ops::all_finite(v) {
        Ok(())
    } else {
        Err(non_finite)
    }
}

/// Reads row `row` of `t` and dequantizes it into `dst` (`t.cols` floats).
fn read_row<S: Source + ?Sized>(
    io: &mut S,
    kernels: &Kernels,
    chunk: &mut [u8],
    t: &TensorRef,
    row: usize,
    dst: &mut [f32],
) -> Result<()> {
    let raw = chunk.get_mut(..t.row_bytes()).ok_or(Error::InvalidState)?;
    read_exact_at(io, t.row_offset(row), raw)?;
    kernels.dequantize(t.ty, raw, dst)?;
    Ok(())
}
