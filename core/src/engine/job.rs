//! [`Job`]: one embedding computation as a state machine the host advances with
//! [`Job::step`].
//!
//! Index arithmetic here is on sizes bounded by the plan (token counts ≤ `Limits::max_tokens`,
//! dimensions ≤ the loader's bounds) whose products are lengths of regions that exist in the
//! arena, so it cannot overflow; every access goes through `get`, so a bug is an error, not a
//! panic. Divisors are dimensions validated non-zero when the model was loaded.
#![allow(clippy::arithmetic_side_effects)]

use crate::engine::arena::{carve, Regions};
use crate::engine::ops;
use crate::engine::plan::{Layout, Plan};
use crate::error::{Error, InputError, Result};
use crate::io::{read_exact_at, Source};
use crate::model::{Arch, Layer, Linear, Model, Norm, Pooling, Qkv, TensorRef};
use crate::quant::Kernels;
use crate::tokenizer::{self, Lookup, Tokenize};

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
/// exponential, the softmax bookkeeping and the value transposition.
const ATTENTION_PAIR_COST: u64 = 750;
/// Work units per tokenizer unit (a char normalized, a vocab entry compared, …).
const TOKENIZER_COST: u64 = 1000;

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

/// Options of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobOptions {
    /// Scale each embedding to unit L2 norm (default true).
    pub normalize: bool,
    /// Work units per step (default [`DEFAULT_BUDGET`]; 0 counts as 1). Every step does about
    /// this much work: at most one weight row, one attention key block or one token more.
    pub budget: u64,
    /// Cut a text longer than the model's context (or the plan's token limit) to [CLS] + the
    /// first pieces + [SEP] (default true); when false such a text is
    /// [`InputError::TooManyTokens`].
    pub truncate: bool,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions { normalize: true, budget: DEFAULT_BUDGET, truncate: true }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Tokenize {
        text: usize,
    },
    Embed {
        token: usize,
    },
    EmbedNorm {
        token: usize,
    },
    Layer {
        index: usize,
        stage: Stage,
    },
    /// Pooling text `text`, from its token `token` on.
    Pool {
        text: usize,
        token: usize,
    },
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Q|K|V of one group of heads ← biases (or zeros).
    QkvInit {
        group: usize,
        token: usize,
    },
    /// Q|K|V of the group += x·Wᵀ, row by row (q rows, then k, then v).
    Qkv {
        group: usize,
        row: usize,
    },
    /// Rotary positions on the group's Q and K (nomic-bert).
    Rope {
        group: usize,
        token: usize,
    },
    /// Online-softmax attention of one head (of the group) of one text: key block `k0` against
    /// the query tiles from `q0` on (see `Job::attention_step`).
    Attention {
        group: usize,
        text: usize,
        head: usize,
        k0: usize,
        q0: usize,
    },
    /// x += bias of the output projection.
    OutInit {
        token: usize,
    },
    /// x += attention · Woᵀ.
    Out {
        row: usize,
    },
    AttnNorm {
        token: usize,
    },
    /// y ← x + bias of the down projection.
    FfnInit {
        token: usize,
    },
    /// The slab's hidden columns ← biases (or zeros).
    SlabInit {
        slab: usize,
        token: usize,
    },
    /// The slab's up (then gate) rows.
    Up {
        slab: usize,
        row: usize,
    },
    /// GELU, or SiLU(gate) ⊙ up.
    Act {
        slab: usize,
        token: usize,
    },
    /// y += slab · W_down[:, slab]ᵀ.
    Down {
        slab: usize,
        row: usize,
    },
    OutNorm {
        token: usize,
    },
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
    plan: Plan,
    kernels: Kernels,
    r: Regions<'a>,
    /// The texts still to tokenize (empty for id input).
    texts: Texts<'a>,
    lookup: Lookup<'a>,
    /// The text being tokenized.
    tokenizer: Option<Tokenize<'a>>,
    n_tokens: usize,
    n_texts: usize,
    /// Texts whose ids are in place.
    filled: usize,
    options: JobOptions,
    phase: Phase,
    /// The current layer's tensors (resolved when the layer starts).
    layer: Option<Layer>,
    /// How the wide region is used, chosen from the token count once it is known.
    layout: Layout,
    done_units: u64,
    total_units: u64,
    failed: Option<Error>,
}

impl<'a> Job<'a> {
    /// A job embedding `input` with `model`, working in `arena` as `plan` lays it out. Texts are
    /// tokenized through `lookup`: [`Lookup::Index`] with an index built for this model when
    /// the plan's [`Plan::tokenizer_mode`] is index, [`Lookup::Scan`] otherwise (and for ids).
    ///
    /// O(layers) (checking the plan against the model); tokenizing is part of the steps; copies
    /// the ids of id input. Fails with [`Error::PlanMismatch`] for a plan made for another model
    /// or a lookup of another mode than the plan's, [`Error::ArenaTooSmall`] for an arena
    /// shorter than `plan.arena_bytes()`, and [`Error::Input`] for more texts than planned or,
    /// for id input, more tokens than planned or than the model's context, an empty sequence,
    /// or an id outside the vocab.
    pub fn new(
        model: Model<'a>,
        plan: &Plan,
        arena: &'a mut [u8],
        input: Input<'a>,
        lookup: Lookup<'a>,
        options: JobOptions,
    ) -> Result<Self> {
        plan.check_model(&model)?;
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
        self.start_embedding();
        Ok(())
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
        let span = self.r.spans.get_mut(2 * text..2 * text + 2).ok_or(Error::InvalidState)?;
        span.copy_from_slice(&[n as u32, ids.len() as u32]);
        self.n_tokens = end;
        self.filled = text + 1;
        Ok(())
    }

    /// Moves on to the forward pass once every text's ids are in place.
    fn start_embedding(&mut self) {
        self.layout = self.plan.layout_for(self.n_tokens);
        self.phase = Phase::Embed { token: 0 };
        self.total_units = self.done_units.saturating_add(self.estimate_total());
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
            let vocab = self.model.meta().vocab;
            self.tokenizer = Some(Tokenize::new(&vocab, self.lookup, s, work, out, options)?);
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
        if text + 1 < self.n_texts {
            self.phase = Phase::Tokenize { text: text + 1 };
        } else {
            self.start_embedding();
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
        if let Some(e) = self.failed {
            return Err(e);
        }
        let mut spent = 0u64;
        while self.phase != Phase::Done && spent < self.options.budget {
            let left = self.options.budget.saturating_sub(spent);
            match self.advance(io, left) {
                Ok(units) => spent = spent.saturating_add(units.max(1)),
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
            Phase::Embed { .. } => ("embed", None),
            Phase::EmbedNorm { .. } => ("norm", None),
            Phase::Pool { .. } | Phase::Done => ("pool", None),
            Phase::Layer { index, stage } => {
                let name = match stage {
                    Stage::QkvInit { .. } | Stage::Qkv { .. } | Stage::Rope { .. } => "qkv",
                    Stage::Attention { .. } => "attention",
                    Stage::OutInit { .. } | Stage::Out { .. } => "attention-out",
                    Stage::AttnNorm { .. } | Stage::OutNorm { .. } => "norm",
                    _ => "ffn",
                };
                (name, Some(index))
            }
        }
    }

    /// The span (first token, token count) of text `i`.
    fn span(&self, i: usize) -> Result<(usize, usize)> {
        match self.r.spans.get(2 * i..2 * i + 2) {
            Some(&[start, len]) => Ok((start as usize, len as usize)),
            _ => Err(Error::InvalidState),
        }
    }

    /// Tokens whose per-token work of `cost` fits `budget` (at least one), starting at `token`.
    fn tokens_for(&self, token: usize, cost: u64, budget: u64) -> usize {
        let fit = usize::try_from(budget.checked_div(cost.max(1)).unwrap_or(0)).unwrap_or(usize::MAX);
        fit.max(1).min(self.n_tokens.saturating_sub(token))
    }

    /// Does one bounded unit of work (at most about `budget` units, at least one row, token or
    /// tile) and moves the phase on. Returns the units spent.
    fn advance<S: Source + ?Sized>(&mut self, io: &mut S, budget: u64) -> Result<u64> {
        let hp = *self.model.hparams();
        let e = hp.n_embd;
        let n = self.n_tokens;
        match self.phase {
            Phase::Tokenize { text } => self.tokenize_step(io, text, budget),
            Phase::Embed { token } => {
                let count = self.tokens_for(token, EMBED_COST.saturating_mul(e as u64), budget);
                for t in token..token.saturating_add(count) {
                    self.embed_token(io, t)?;
                }
                let next = token.saturating_add(count);
                self.phase =
                    if next >= n { Phase::EmbedNorm { token: 0 } } else { Phase::Embed { token: next } };
                Ok(EMBED_COST.saturating_mul((count * e) as u64))
            }
            Phase::EmbedNorm { token } => {
                let norm = self.model.meta().embd_norm;
                let done = self.norm_pass(io, &norm, token, budget, false)?;
                self.phase =
                    if done.0 >= n { self.enter_layer(0)? } else { Phase::EmbedNorm { token: done.0 } };
                Ok(done.1)
            }
            Phase::Layer { index, stage } => self.layer_step(io, index, stage, budget),
            Phase::Pool { text, token } => {
                let (next, units) = self.pool(text, token, budget)?;
                self.phase = match next {
                    Some(token) => Phase::Pool { text, token },
                    None if text + 1 < self.n_texts => Phase::Pool { text: text + 1, token: 0 },
                    None => Phase::Done,
                };
                Ok(units)
            }
            Phase::Done => Ok(0),
        }
    }

    fn enter_layer(&mut self, index: usize) -> Result<Phase> {
        if index >= self.model.hparams().n_layer {
            self.layer = None;
            return Ok(Phase::Pool { text: 0, token: 0 });
        }
        self.layer = Some(self.model.layer(index)?);
        Ok(Phase::Layer { index, stage: Stage::QkvInit { group: 0, token: 0 } })
    }

    fn current_layer(&self) -> Result<Layer> {
        self.layer.ok_or(Error::InvalidState)
    }

    fn layer_step<S: Source + ?Sized>(
        &mut self,
        io: &mut S,
        index: usize,
        stage: Stage,
        budget: u64,
    ) -> Result<u64> {
        let hp = *self.model.hparams();
        let (e, n) = (hp.n_embd, self.n_tokens);
        let layer = self.current_layer()?;
        let at = |stage| Phase::Layer { index, stage };
        let (next, units) = match stage {
            Stage::QkvInit { group, token } => {
                let (h0, heads) = self.group_heads(group);
                let (d, dg) = (hp.head_dim(), heads * hp.head_dim());
                let count = self.tokens_for(token, BIAS_COST * 3 * dg as u64, budget);
                let rows = Tokens { first: token, count };
                for part in 0..3 {
                    let (w, first_row) = qkv_rows(&layer.qkv, part, e);
                    let bias = w.bias.map(|b| (b, first_row + h0 * d));
                    self.init_rows(io, bias, Target::Qkv, rows, part * self.group_width(), dg)?;
                }
                let next = token + count;
                let stage = if next >= n {
                    Stage::Qkv { group, row: 0 }
                } else {
                    Stage::QkvInit { group, token: next }
                };
                (at(stage), BIAS_COST * (count * 3 * dg) as u64)
            }
            Stage::Qkv { group, row } => {
                // Rows of q, then k, then v for the group's heads.
                let (h0, heads) = self.group_heads(group);
                let dg = heads * hp.head_dim();
                let (part, local) = (row / dg, row % dg);
                let (w, first_row) = qkv_rows(&layer.qkv, part, e);
                let rows = self.rows_for(&w.weight, e, dg - local, budget);
                let (stride, col) = (3 * self.group_width(), part * self.group_width() + local);
                let qkv_at = n * e;
                let (src, dst) = (&*self.r.x, &mut *self.r.wide);
                let dst = dst.get_mut(qkv_at + col..).ok_or(Error::InvalidState)?;
                let first = first_row + h0 * hp.head_dim() + local;
                let units = matmul_rows(
                    io,
                    &self.kernels,
                    self.r.chunk,
                    self.r.scratch,
                    &w.weight,
                    first,
                    rows,
                    (0, e),
                    src,
                    e,
                    n,
                    dst,
                    stride,
                )?;
                let next = row + rows;
                let stage = if next < 3 * dg {
                    Stage::Qkv { group, row: next }
                } else if self.model.meta().arch == Arch::NomicBert {
                    Stage::Rope { group, token: 0 }
                } else {
                    Stage::Attention { group, text: 0, head: 0, k0: 0, q0: 0 }
                };
                (at(stage), units)
            }
            Stage::Rope { group, token } => {
                let (_, heads) = self.group_heads(group);
                let dg = heads * hp.head_dim();
                let per_token = ROPE_PAIR_COST * (hp.head_dim() / 2) as u64 + ROPE_COST * 2 * dg as u64;
                let count = self.tokens_for(token, per_token, budget);
                self.rope(group, Tokens { first: token, count })?;
                let next = token + count;
                let stage = if next >= n {
                    Stage::Attention { group, text: 0, head: 0, k0: 0, q0: 0 }
                } else {
                    Stage::Rope { group, token: next }
                };
                (at(stage), per_token * count as u64)
            }
            Stage::Attention { group, text, head, k0, q0 } => {
                let (_, len) = self.span(text)?;
                let (_, heads) = self.group_heads(group);
                let ((k0, q0), units) = self.attention_step(group, text, head, (k0, q0), budget)?;
                let stage = if k0 < len {
                    Stage::Attention { group, text, head, k0, q0 }
                } else if head + 1 < heads {
                    Stage::Attention { group, text, head: head + 1, k0: 0, q0: 0 }
                } else if text + 1 < self.n_texts {
                    Stage::Attention { group, text: text + 1, head: 0, k0: 0, q0: 0 }
                } else if (group + 1) * self.layout.group < hp.n_head {
                    Stage::QkvInit { group: group + 1, token: 0 }
                } else {
                    Stage::OutInit { token: 0 }
                };
                (at(stage), units)
            }
            Stage::OutInit { token } => {
                let count = self.tokens_for(token, BIAS_COST * e as u64, budget);
                if let Some(b) = layer.attn_out.bias {
                    self.add_vector(io, &b, (0, e), Target::X, Tokens { first: token, count }, 0)?;
                }
                let next = token + count;
                let stage = if next >= n { Stage::Out { row: 0 } } else { Stage::OutInit { token: next } };
                (at(stage), BIAS_COST * (count * e) as u64)
            }
            Stage::Out { row } => {
                // x += attention output (at the start of the wide region, stride e) · Woᵀ.
                let w = layer.attn_out.weight;
                let rows = self.rows_for(&w, e, e - row, budget);
                let (src, dst) = (&*self.r.wide, &mut *self.r.x);
                let units = matmul_rows(
                    io,
                    &self.kernels,
                    self.r.chunk,
                    self.r.scratch,
                    &w,
                    row,
                    rows,
                    (0, e),
                    src,
                    e,
                    n,
                    dst.get_mut(row..).ok_or(Error::InvalidState)?,
                    e,
                )?;
                let next = row + rows;
                let stage = if next < e { Stage::Out { row: next } } else { Stage::AttnNorm { token: 0 } };
                (at(stage), units)
            }
            Stage::AttnNorm { token } => {
                let (next, units) = self.norm_pass(io, &layer.attn_norm, token, budget, false)?;
                let stage =
                    if next >= n { Stage::FfnInit { token: 0 } } else { Stage::AttnNorm { token: next } };
                (at(stage), units)
            }
            Stage::FfnInit { token } => {
                let count = self.tokens_for(token, BIAS_COST * e as u64, budget);
                // y = x (+ bias): y lives at the start of the wide region, n × e.
                for t in token..token + count {
                    let src = self.r.x.get(t * e..(t + 1) * e).ok_or(Error::InvalidState)?;
                    let dst = self.r.wide.get_mut(t * e..(t + 1) * e).ok_or(Error::InvalidState)?;
                    dst.copy_from_slice(src);
                }
                if let Some(b) = layer.ffn_down.bias {
                    self.add_vector(io, &b, (0, e), Target::Y, Tokens { first: token, count }, 0)?;
                }
                let next = token + count;
                let stage = if next >= n {
                    Stage::SlabInit { slab: 0, token: 0 }
                } else {
                    Stage::FfnInit { token: next }
                };
                (at(stage), BIAS_COST * (count * e) as u64)
            }
            Stage::SlabInit { slab, token } => {
                let (s0, s1) = self.slab_cols(slab);
                let count = self.tokens_for(token, BIAS_COST * 2 * (s1 - s0) as u64, budget);
                let rows = Tokens { first: token, count };
                for (lin, target) in [(Some(layer.ffn_up), Target::Up), (layer.ffn_gate, Target::Gate)] {
                    let Some(lin) = lin else { continue };
                    self.init_rows(io, None, target, rows, 0, s1 - s0)?;
                    if let Some(b) = lin.bias {
                        self.add_vector(io, &b, (s0, s1), target, rows, 0)?;
                    }
                }
                let next = token + count;
                let stage = if next >= n {
                    Stage::Up { slab, row: 0 }
                } else {
                    Stage::SlabInit { slab, token: next }
                };
                (at(stage), BIAS_COST * (count * (s1 - s0)) as u64)
            }
            Stage::Up { slab, row } => {
                let (s0, s1) = self.slab_cols(slab);
                let width = s1 - s0;
                let gated = layer.ffn_gate.is_some();
                let total = if gated { 2 * width } else { width };
                let (lin, local, target) = if row < width {
                    (layer.ffn_up, row, Target::Up)
                } else {
                    (layer.ffn_gate.ok_or(Error::InvalidState)?, row - width, Target::Gate)
                };
                let end = if row < width { width } else { total };
                let rows = self.rows_for(&lin.weight, e, end - row, budget);
                let (y_h, slab_stride) = (self.wide_offset(target), self.layout.slab);
                let (src, dst) = (&*self.r.x, &mut *self.r.wide);
                let dst = dst.get_mut(y_h + local..).ok_or(Error::InvalidState)?;
                let units = matmul_rows(
                    io,
                    &self.kernels,
                    self.r.chunk,
                    self.r.scratch,
                    &lin.weight,
                    s0 + local,
                    rows,
                    (0, e),
                    src,
                    e,
                    n,
                    dst,
                    slab_stride,
                )?;
                let next = row + rows;
                let stage =
                    if next < total { Stage::Up { slab, row: next } } else { Stage::Act { slab, token: 0 } };
                (at(stage), units)
            }
            Stage::Act { slab, token } => {
                let (s0, s1) = self.slab_cols(slab);
                let width = s1 - s0;
                let count = self.tokens_for(token, ACT_COST * width as u64, budget);
                self.activate(token, count, width, layer.ffn_gate.is_some())?;
                let next = token + count;
                let stage =
                    if next >= n { Stage::Down { slab, row: 0 } } else { Stage::Act { slab, token: next } };
                (at(stage), ACT_COST * (count * width) as u64)
            }
            Stage::Down { slab, row } => {
                let (s0, s1) = self.slab_cols(slab);
                let w = layer.ffn_down.weight;
                let rows = self.rows_for(&w, s1 - s0, e - row, budget);
                let up_at = self.wide_offset(Target::Up);
                let (y, h) = self.r.wide.split_at_mut_checked(up_at).ok_or(Error::InvalidState)?;
                let units = matmul_rows(
                    io,
                    &self.kernels,
                    self.r.chunk,
                    self.r.scratch,
                    &w,
                    row,
                    rows,
                    (s0, s1),
                    h,
                    self.layout.slab,
                    n,
                    y.get_mut(row..).ok_or(Error::InvalidState)?,
                    e,
                )?;
                let next = row + rows;
                let stage = if next < e {
                    Stage::Down { slab, row: next }
                } else if s1 < hp.n_ff {
                    Stage::SlabInit { slab: slab + 1, token: 0 }
                } else {
                    Stage::OutNorm { token: 0 }
                };
                (at(stage), units)
            }
            Stage::OutNorm { token } => {
                let (next, units) = self.norm_pass(io, &layer.out_norm, token, budget, true)?;
                if next >= n {
                    (self.enter_layer(index + 1)?, units)
                } else {
                    (at(Stage::OutNorm { token: next }), units)
                }
            }
        };
        self.phase = next;
        Ok(units)
    }

    /// Weight rows (of `k` columns) to process now: what fits the chunk buffer and the budget,
    /// at least one, at most `left`.
    fn rows_for(&self, w: &TensorRef, k: usize, left: usize, budget: u64) -> usize {
        let (_, span) = w.col_span(0, k);
        let fit_chunk = self.r.chunk.len().checked_div(span).unwrap_or(0);
        let per_row = (self.n_tokens as u64).saturating_mul(k as u64).max(1);
        let fit_budget = usize::try_from(budget.checked_div(per_row).unwrap_or(0)).unwrap_or(usize::MAX);
        fit_chunk.min(fit_budget).max(1).min(left)
    }

    /// Columns `[s0, s1)` of the FFN hidden layer in slab `slab`.
    fn slab_cols(&self, slab: usize) -> (usize, usize) {
        let ff = self.model.hparams().n_ff;
        let s0 = slab.saturating_mul(self.layout.slab).min(ff);
        (s0, s0.saturating_add(self.layout.slab).min(ff))
    }

    /// Where `target` starts in the wide region (see [`place`]).
    fn wide_offset(&self, target: Target) -> usize {
        place(target, self.n_tokens, &self.plan, self.layout).1
    }

    /// Embeds token `t`: its row of `token_embd`, plus its position row (bert) and type row 0.
    fn embed_token<S: Source + ?Sized>(&mut self, io: &mut S, t: usize) -> Result<()> {
        let meta = *self.model.meta();
        let e = self.plan.n_embd;
        let id = *self.r.ids.get(t).ok_or(Error::InvalidState)? as usize;
        let pos = self.position_of(t)?;
        let x = self.r.x.get_mut(t * e..(t + 1) * e).ok_or(Error::InvalidState)?;
        read_row(io, &self.kernels, self.r.chunk, &meta.token_embd, id, x)?;
        let extra = [meta.position_embd.map(|p| (p, pos)), meta.token_types.map(|t| (t, 0))];
        for (tensor, row) in extra.into_iter().flatten() {
            let tmp = self.r.scratch.get_mut(..e).ok_or(Error::InvalidState)?;
            read_row(io, &self.kernels, self.r.chunk, &tensor, row, tmp)?;
            for (a, b) in x.iter_mut().zip(tmp.iter()) {
                *a += *b;
            }
        }
        Ok(())
    }

    /// Position of token `t` within its text. O(log texts): texts lie one after another, so
    /// `t` is in the last one that starts at or before it.
    fn position_of(&self, t: usize) -> Result<usize> {
        let (mut lo, mut hi) = (0, self.n_texts);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.span(mid)?.0 <= t {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let (start, len) = self.span(lo)?;
        if t < start || t >= start + len {
            return Err(Error::InvalidState);
        }
        Ok(t - start)
    }

    /// LayerNorm of tokens from `token` on, as the budget allows: x ← LN(x), or x ← LN(y) when
    /// `from_y`. γ and β are read into scratch when the pass starts (token 0) and stay there.
    /// Returns (next token, units).
    fn norm_pass<S: Source + ?Sized>(
        &mut self,
        io: &mut S,
        norm: &Norm,
        token: usize,
        budget: u64,
        from_y: bool,
    ) -> Result<(usize, u64)> {
        let e = self.plan.n_embd;
        let eps = self.model.hparams().eps;
        if token == 0 {
            // Norm vectors are single rows.
            let (g, b) = self.r.scratch.split_at_mut_checked(e).ok_or(Error::InvalidState)?;
            let b = b.get_mut(..e).ok_or(Error::InvalidState)?;
            read_row(io, &self.kernels, self.r.chunk, &norm.weight, 0, g)?;
            read_row(io, &self.kernels, self.r.chunk, &norm.bias, 0, b)?;
        }
        let count = self.tokens_for(token, NORM_COST * e as u64, budget);
        let (g, b) = self.r.scratch.split_at_checked(e).ok_or(Error::InvalidState)?;
        let b = b.get(..e).ok_or(Error::InvalidState)?;
        for t in token..token + count {
            let x = self.r.x.get_mut(t * e..(t + 1) * e).ok_or(Error::InvalidState)?;
            if from_y {
                x.copy_from_slice(self.r.wide.get(t * e..(t + 1) * e).ok_or(Error::InvalidState)?);
            }
            ops::layer_norm(x, g, b, eps);
        }
        Ok((token + count, NORM_COST * (count * e) as u64))
    }

    /// Rotary positions on the Q and K of group `group`'s heads, for `tokens`.
    fn rope(&mut self, group: usize, tokens: Tokens) -> Result<()> {
        let hp = *self.model.hparams();
        let d = hp.head_dim();
        let (_, heads) = self.group_heads(group);
        let (gw, qkv_at, stride) = (self.group_width(), self.n_tokens * hp.n_embd, 3 * self.group_width());
        // In the attention region (free until attention): the (cos, sin) pairs of one position,
        // then each pair's frequency as an f32 pair (high, low) that sums to its f64 value.
        let freqs = self.r.attn.get_mut(d..2 * d).ok_or(Error::InvalidState)?;
        for (i, f) in freqs.chunks_exact_mut(2).enumerate() {
            let exact = ops::inv_freq(hp.rope_base, i, d);
            let hi = exact as f32;
            f.copy_from_slice(&[hi, (exact - f64::from(hi)) as f32]);
        }
        for t in tokens.range() {
            let pos = self.position_of(t)?;
            let (pairs, freqs) = self.r.attn.split_at_mut_checked(d).ok_or(Error::InvalidState)?;
            for (pair, f) in pairs.chunks_exact_mut(2).zip(freqs.chunks_exact(2)) {
                let exact = f.iter().map(|&v| f64::from(v)).sum::<f64>();
                let (c, s) = ops::rotation(pos, exact);
                pair.copy_from_slice(&[c, s]);
            }
            let pairs = &*pairs;
            let row_at = qkv_at + t * stride;
            // Q then K of token t: each `heads · d` floats, `gw` apart.
            for part in 0..2 {
                let at = row_at + part * gw;
                let vecs = self.r.wide.get_mut(at..at + heads * d).ok_or(Error::InvalidState)?;
                for head in vecs.chunks_exact_mut(d) {
                    ops::rope(head, pairs);
                }
            }
        }
        Ok(())
    }

    /// Online-softmax attention of text `text` for head `head` of group `group`: the key block
    /// starting at `k0` against query tiles from `q0` on, until about `budget` units are spent.
    /// Returns where to go on (`(k0, q0)`, `k0 ≥ len` when the head is done) and the units.
    ///
    /// Key blocks are the outer loop so that each block's values are transposed once for all
    /// queries. The accumulators are the head's columns of the attention output itself (start of
    /// the wide region, stride n_embd); the running max and sum of every query live in the
    /// attention region. The last key block normalises each query's row.
    fn attention_step(
        &mut self,
        group: usize,
        text: usize,
        head: usize,
        (k0, q0): (usize, usize),
        budget: u64,
    ) -> Result<((usize, usize), u64)> {
        let hp = *self.model.hparams();
        let (e, d) = (hp.n_embd, hp.head_dim());
        let (h0, _) = self.group_heads(group);
        let (gw, qkv_at) = (self.group_width(), self.n_tokens * e);
        let stride = 3 * gw;
        let (start, len) = self.span(text)?;
        let (q_tile, k_tile) = (self.plan.q_tile, self.plan.k_tile);
        let tk = k_tile.min(len - k0);
        let scale = 1.0 / libm::sqrtf(d as f32);
        let (scores, rest) = self.r.attn.split_at_mut_checked(q_tile * k_tile).ok_or(Error::InvalidState)?;
        let (values_t, rest) = rest.split_at_mut_checked(k_tile * d).ok_or(Error::InvalidState)?;
        let (run_max, rest) = rest.split_at_mut_checked(len).ok_or(Error::InvalidState)?;
        let run_sum = rest.get_mut(..len).ok_or(Error::InvalidState)?;
        // Token t's q of this head; its k and v follow at `gw` and `2·gw`. Query i's output row
        // (its accumulator) is at `out_of(i)` in the attention output.
        let q_of = |t: usize| t * stride + head * d;
        let out_of = |i: usize| (start + i) * e + (h0 + head) * d;
        let (ctx, qkv) = self.r.wide.split_at_mut_checked(qkv_at).ok_or(Error::InvalidState)?;
        let qkv = &*qkv;
        if (k0, q0) == (0, 0) {
            run_max.fill(f32::NEG_INFINITY);
            run_sum.fill(0.0);
            for i in 0..len {
                ctx.get_mut(out_of(i)..out_of(i) + d).ok_or(Error::InvalidState)?.fill(0.0);
            }
        }
        let vt = values_t.get_mut(..d * tk).ok_or(Error::InvalidState)?;
        if q0 == 0 {
            // The block's values, transposed so that each head dimension is a row.
            for j in 0..tk {
                let v_at = q_of(start + k0 + j) + 2 * gw;
                let v = qkv.get(v_at..v_at + d).ok_or(Error::InvalidState)?;
                for (i, &x) in v.iter().enumerate() {
                    *vt.get_mut(i * tk + j).ok_or(Error::InvalidState)? = x;
                }
            }
        }
        let keys = qkv.get(q_of(start + k0) + gw..).ok_or(Error::InvalidState)?;
        let last_block = k0 + tk >= len;
        let (mut q0, mut units) = (q0, 0u64);
        while q0 < len && (units == 0 || units < budget) {
            let tq = q_tile.min(len - q0);
            // Scores of the tile: S = Q·Kᵀ.
            let queries = qkv.get(q_of(start + q0)..).ok_or(Error::InvalidState)?;
            let block = scores.get_mut(..tq * tk).ok_or(Error::InvalidState)?;
            block.fill(0.0);
            self.kernels.gemm_f32_acc(keys, stride, tk, d, queries, stride, tq, block, tk)?;
            // Online softmax: rescale what was accumulated when the running max grows; the
            // scores become unnormalised probabilities.
            for (t, row) in block.chunks_exact_mut(tk).enumerate() {
                let i = q0 + t;
                let m = run_max.get_mut(i).ok_or(Error::InvalidState)?;
                let l = run_sum.get_mut(i).ok_or(Error::InvalidState)?;
                let m_new = m.max(ops::scaled_max(row, scale));
                let correction = ops::exp(*m - m_new);
                if correction != 1.0 {
                    let acc = ctx.get_mut(out_of(i)..out_of(i) + d).ok_or(Error::InvalidState)?;
                    acc.iter_mut().for_each(|v| *v *= correction);
                }
                *l = *l * correction + ops::exp_and_sum(row, scale, m_new);
                *m = m_new;
            }
            // Accumulators += P·V.
            let acc = ctx.get_mut(out_of(q0)..).ok_or(Error::InvalidState)?;
            self.kernels.gemm_f32_acc(vt, tk, d, tk, block, tk, tq, acc, e)?;
            if last_block {
                for i in q0..q0 + tq {
                    let l = *run_sum.get(i).ok_or(Error::InvalidState)?;
                    let out = ctx.get_mut(out_of(i)..out_of(i) + d).ok_or(Error::InvalidState)?;
                    out.iter_mut().for_each(|v| *v /= l);
                }
            }
            units = units.saturating_add((tq * tk) as u64 * (2 * d as u64 + ATTENTION_PAIR_COST));
            q0 += tq;
        }
        let next = if q0 < len { (k0, q0) } else { (k0 + tk, 0) };
        Ok((next, units))
    }

    /// The first head of group `group` and how many heads it has.
    fn group_heads(&self, group: usize) -> (usize, usize) {
        let n_head = self.model.hparams().n_head;
        let h0 = (group * self.layout.group).min(n_head);
        (h0, self.layout.group.min(n_head - h0))
    }

    /// Floats of q (or k, or v) per token in the group layout: a full group's worth.
    fn group_width(&self) -> usize {
        self.layout.group * self.model.hparams().head_dim()
    }

    /// The FFN activation on tokens `[token, token + count)` of the current slab (`width`
    /// columns): up ← GELU(up), or up ← SiLU(gate) ⊙ up.
    fn activate(&mut self, token: usize, count: usize, width: usize, gated: bool) -> Result<()> {
        let s = self.layout.slab;
        let up_at = self.wide_offset(Target::Up);
        let gate_at = self.wide_offset(Target::Gate);
        for t in token..token + count {
            if gated {
                let (up, gate) = self.r.wide.split_at_mut_checked(gate_at).ok_or(Error::InvalidState)?;
                let u = up.get_mut(up_at + t * s..up_at + t * s + width).ok_or(Error::InvalidState)?;
                let g = gate.get(t * s..t * s + width).ok_or(Error::InvalidState)?;
                for (u, &g) in u.iter_mut().zip(g) {
                    *u *= ops::silu(g);
                }
            } else {
                let u =
                    self.r.wide.get_mut(up_at + t * s..up_at + t * s + width).ok_or(Error::InvalidState)?;
                u.iter_mut().for_each(|v| *v = ops::gelu(*v));
            }
        }
        Ok(())
    }

    /// Pools text `text` from its token `token` on, as far as `budget` allows. Mean pooling sums
    /// the tokens into scratch with compensation (Neumaier), so the sum is as exact as in f64,
    /// then, at the text's last token, writes the mean to the text's output slot; CLS pooling
    /// copies the first token. The embedding is then normalised if asked. Returns the next token
    /// (`None` once the text is done) and the units spent.
    fn pool(&mut self, text: usize, token: usize, budget: u64) -> Result<(Option<usize>, u64)> {
        let e = self.plan.n_embd;
        let (start, len) = self.span(text)?;
        let out = self.r.out.get_mut(text * e..(text + 1) * e).ok_or(Error::InvalidState)?;
        let units = match self.model.hparams().pooling {
            Pooling::Cls => {
                out.copy_from_slice(self.r.x.get(start * e..(start + 1) * e).ok_or(Error::InvalidState)?);
                e as u64
            }
            Pooling::Mean => {
                let (sum, comp) = self.r.scratch.split_at_mut_checked(e).ok_or(Error::InvalidState)?;
                let comp = comp.get_mut(..e).ok_or(Error::InvalidState)?;
                if token == 0 {
                    sum.fill(0.0);
                    comp.fill(0.0);
                }
                let fit = usize::try_from(budget / (POOL_COST * e as u64).max(1)).unwrap_or(usize::MAX);
                let count = fit.max(1).min(len - token);
                let rows = self.r.x.get((start + token) * e..(start + token + count) * e);
                for row in rows.ok_or(Error::InvalidState)?.chunks_exact(e) {
                    for ((s, c), &v) in sum.iter_mut().zip(comp.iter_mut()).zip(row) {
                        let t = *s + v;
                        *c += if s.abs() >= v.abs() { (*s - t) + v } else { (v - t) + *s };
                        *s = t;
                    }
                }
                let units = POOL_COST * (count * e) as u64;
                if token + count < len {
                    return Ok((Some(token + count), units));
                }
                let inv = 1.0 / len as f64;
                for ((o, &s), &c) in out.iter_mut().zip(sum.iter()).zip(comp.iter()) {
                    *o = ((f64::from(s) + f64::from(c)) * inv) as f32;
                }
                units
            }
        };
        if self.options.normalize {
            ops::l2_normalize(out);
        }
        Ok((None, units))
    }

    /// Sets columns `[col, col + width)` of `rows` of `target` to elements `[first, first +
    /// width)` of `bias = Some((tensor, first))`, or to zero.
    fn init_rows<S: Source + ?Sized>(
        &mut self,
        io: &mut S,
        bias: Option<(TensorRef, usize)>,
        target: Target,
        rows: Tokens,
        col: usize,
        width: usize,
    ) -> Result<()> {
        let (buf, stride) = self.target(target)?;
        for t in rows.range() {
            let at = t * stride + col;
            buf.get_mut(at..at + width).ok_or(Error::InvalidState)?.fill(0.0);
        }
        match bias {
            Some((b, first)) => self.add_vector(io, &b, (first, first + width), target, rows, col),
            None => Ok(()),
        }
    }

    /// Adds elements `[c0, c1)` of vector tensor `v` to the columns from `col` on of `rows` of
    /// `target`, in pieces that fit the chunk buffer and scratch.
    fn add_vector<S: Source + ?Sized>(
        &mut self,
        io: &mut S,
        v: &TensorRef,
        (c0, c1): (usize, usize),
        target: Target,
        rows: Tokens,
        col: usize,
    ) -> Result<()> {
        let be = v.ty.block_elems() as usize;
        let bb = v.ty.block_bytes() as usize;
        let piece = (self.r.chunk.len() / bb).min(self.r.scratch.len() / be).max(1) * be;
        let mut p = c0;
        while p < c1 {
            // Pieces start at block boundaries of the vector.
            let start = p / be * be;
            let end = (start + piece).min(v.cols as usize).min(c1.div_ceil(be) * be);
            let (off, bytes) = v.col_span(start, end);
            let raw = self.r.chunk.get_mut(..bytes).ok_or(Error::InvalidState)?;
            read_exact_at(io, v.offset.saturating_add(off), raw)?;
            let vals = self.r.scratch.get_mut(..end - start).ok_or(Error::InvalidState)?;
            self.kernels.dequantize(v.ty, raw, vals)?;
            let (lo, hi) = (p, end.min(c1));
            let (buf, stride) =
                target_buf(self.r.x, self.r.wide, place(target, self.n_tokens, &self.plan, self.layout))?;
            let src = self.r.scratch.get(lo - start..hi - start).ok_or(Error::InvalidState)?;
            for t in rows.range() {
                let at = t * stride + col + lo - c0;
                let dst = buf.get_mut(at..at + (hi - lo)).ok_or(Error::InvalidState)?;
                dst.iter_mut().zip(src).for_each(|(d, &s)| *d += s);
            }
            p = hi;
        }
        Ok(())
    }

    /// A target buffer and its row stride.
    fn target(&mut self, target: Target) -> Result<(&mut [f32], usize)> {
        target_buf(self.r.x, self.r.wide, place(target, self.n_tokens, &self.plan, self.layout))
    }

    /// A rough count of the job's work units, for progress reports.
    fn estimate_total(&self) -> u64 {
        let hp = self.model.hparams();
        let (n, e, f) = (self.n_tokens as u64, hp.n_embd as u64, hp.n_ff as u64);
        let gates = if self.model.meta().arch == Arch::NomicBert { 3 } else { 2 };
        let per_layer = n * e * (4 * e + gates * f) + 2 * n * n * e;
        per_layer * hp.n_layer as u64
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

/// A run of tokens `[first, first + count)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tokens {
    first: usize,
    count: usize,
}

impl Tokens {
    fn range(self) -> core::ops::Range<usize> {
        self.first..self.first + self.count
    }
}

/// Where an element-wise pass writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The hidden states.
    X,
    /// The group's Q|K|V after the attention output in the wide region.
    Qkv,
    /// The FFN output y at the start of the wide region (stride n_embd).
    Y,
    /// The slab's up (or only) hidden columns.
    Up,
    /// The slab's gate columns.
    Gate,
}

/// Where a target lies: `(in the wide region, offset, row stride)` — the wide region holds the
/// attention output or FFN output y (n × n_embd) first, then the group's Q|K|V or the slab's up
/// columns (n × slab), then its gate columns.
fn place(target: Target, n_tokens: usize, plan: &Plan, layout: Layout) -> (bool, usize, usize) {
    let e = plan.n_embd;
    let after_y = n_tokens * e;
    match target {
        Target::X => (false, 0, e),
        Target::Y => (true, 0, e),
        Target::Qkv => (true, after_y, 3 * layout.group * plan.head_dim),
        Target::Up => (true, after_y, layout.slab),
        Target::Gate => (true, after_y + n_tokens * layout.slab, layout.slab),
    }
}

/// A target's buffer (from its offset on) and its row stride.
fn target_buf<'r>(
    x: &'r mut [f32],
    wide: &'r mut [f32],
    (in_wide, offset, stride): (bool, usize, usize),
) -> Result<(&'r mut [f32], usize)> {
    let buf = if in_wide { wide } else { x };
    Ok((buf.get_mut(offset..).ok_or(Error::InvalidState)?, stride))
}

/// The matrix holding part `part` (0 = q, 1 = k, 2 = v) of the Q|K|V projection, and the row
/// where that part starts in it.
fn qkv_rows(qkv: &Qkv, part: usize, n_embd: usize) -> (Linear, usize) {
    match qkv {
        Qkv::Fused(l) => (*l, part * n_embd),
        Qkv::Separate([q, k, v]) => (
            match part {
                0 => *q,
                1 => *k,
                _ => *v,
            },
            0,
        ),
    }
}

/// Reads `rows` weight rows from `first` on (columns `[c0, c1)` of each) into `chunk`, and
/// accumulates `out[t·out_stride + r] += Σ W[r]·x[t]` for all `n` tokens. Returns the work units.
#[allow(clippy::too_many_arguments)]
fn matmul_rows<S: Source + ?Sized>(
    io: &mut S,
    kernels: &Kernels,
    chunk: &mut [u8],
    scratch: &mut [f32],
    w: &TensorRef,
    first: usize,
    rows: usize,
    (c0, c1): (usize, usize),
    x: &[f32],
    x_stride: usize,
    n: usize,
    out: &mut [f32],
    out_stride: usize,
) -> Result<u64> {
    let k = c1.saturating_sub(c0);
    let (col_off, span) = w.col_span(c0, c1);
    let raw = chunk.get_mut(..rows.saturating_mul(span)).ok_or(Error::InvalidState)?;
    if span == w.row_bytes() {
        read_exact_at(io, w.row_offset(first), raw)?;
    } else {
        for (i, row) in raw.chunks_exact_mut(span.max(1)).enumerate() {
            read_exact_at(io, w.row_offset(first.saturating_add(i)).saturating_add(col_off), row)?;
        }
    }
    kernels.matmul_acc(w.ty, raw, rows, k, x, x_stride, n, out, out_stride, scratch)?;
    Ok((rows as u64).saturating_mul(k as u64).saturating_mul(n as u64))
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
