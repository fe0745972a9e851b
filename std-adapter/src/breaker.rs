//! Circuit breakers: the limits that keep an embedding host responsive and bounded, shared by
//! the Rust [`crate::Embedder`], [`crate::service`] and the bindings over it.
//!
//! - **Memory cap**: [`crate::EmbedderOptions::memory`] picks the fastest plan whose arena and
//!   vocab index fit, or fails with [`crate::Error::Core`]`(ArenaTooSmall)` (code `MEMORY`)
//!   before anything is allocated.
//! - **Deadline** ([`Deadline`]): a call not finished by then fails with [`Error::Timeout`] and
//!   its work is dropped.
//! - **Bounded queue** ([`QueueLimit`]): a call beyond the limit of unfinished calls fails at
//!   once with [`Error::Busy`] instead of growing the queue.
//! - **Step-time target** ([`StepTuner`]): the work budget per step is recalibrated from the
//!   measured step times so that steps last about the target.
//! - **Partial batches**: [`crate::Embedder::embed_batch_each`] returns every text's result,
//!   so one failing text does not lose the others; [`crate::Embedder::embed_batch`] fails fast.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// When a call must be finished by, if ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// No deadline.
    pub const NONE: Deadline = Deadline(None);

    /// `timeout` from now (none for `None`).
    pub fn after(timeout: Option<Duration>) -> Self {
        Deadline(timeout.and_then(|t| Instant::now().checked_add(t)))
    }

    /// Whether the deadline has passed at `now`.
    pub fn passed(&self, now: Instant) -> bool {
        self.0.is_some_and(|d| now >= d)
    }

    /// [`Error::Timeout`] when the deadline has passed.
    pub fn check(&self) -> Result<()> {
        if self.passed(Instant::now()) {
            return Err(Error::Timeout);
        }
        Ok(())
    }
}

/// A limit on unfinished calls: [`QueueLimit::admit`] counts one in, [`QueueLimit::release`] one
/// out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimit {
    max: usize,
    outstanding: usize,
}

impl QueueLimit {
    /// At most `max` unfinished calls (0 counts as 1).
    pub fn new(max: usize) -> Self {
        QueueLimit { max: max.max(1), outstanding: 0 }
    }

    /// Counts one more call, or [`Error::Busy`] when `max` are unfinished.
    pub fn admit(&mut self) -> Result<()> {
        if self.outstanding >= self.max {
            return Err(Error::Busy { max_queue: self.max });
        }
        self.outstanding += 1;
        Ok(())
    }

    /// Counts one call finished (or dropped).
    pub fn release(&mut self) {
        self.outstanding = self.outstanding.saturating_sub(1);
    }

    /// Calls admitted and not yet released.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }
}

/// Calibrates the work budget per step ([`stepembed_core::engine::JobOptions::budget`]) so that
/// steps last about a target time: the budget is scaled by target / median step time after the
/// first step (a starting budget may be far off for the machine), then after every
/// [`StepTuner::WINDOW`] steps, by at most [`StepTuner::MAX_FACTOR`] either way and within
/// [`StepTuner::MIN_BUDGET`]..=[`StepTuner::MAX_BUDGET`].
#[derive(Debug, Clone)]
pub struct StepTuner {
    target: Duration,
    budget: u64,
    samples: Vec<Duration>,
    /// Steps to measure before the next adjustment.
    window: usize,
}

impl StepTuner {
    /// Steps measured per adjustment.
    pub const WINDOW: usize = 32;
    /// The most one adjustment scales the budget by (up or down).
    pub const MAX_FACTOR: f64 = 8.0;
    /// The smallest budget it sets.
    pub const MIN_BUDGET: u64 = 10_000;
    /// The largest budget it sets.
    pub const MAX_BUDGET: u64 = 1_000_000_000;

    /// A tuner aiming at `target` per step, starting from `budget`.
    pub fn new(target: Duration, budget: u64) -> Self {
        let budget = budget.clamp(Self::MIN_BUDGET, Self::MAX_BUDGET);
        StepTuner { target, budget, samples: Vec::with_capacity(Self::WINDOW), window: 1 }
    }

    /// The budget to use for the next job.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Records one step's duration, and recalibrates when a window of steps is complete.
    pub fn record(&mut self, step: Duration) {
        self.samples.push(step);
        if self.samples.len() < self.window {
            return;
        }
        self.window = Self::WINDOW;
        self.samples.sort_unstable();
        let median = self.samples[self.samples.len() / 2].max(Duration::from_nanos(1));
        self.samples.clear();
        let factor = (self.target.as_secs_f64() / median.as_secs_f64())
            .clamp(1.0 / Self::MAX_FACTOR, Self::MAX_FACTOR);
        // The product is within [MIN_BUDGET / 8, MAX_BUDGET * 8], far inside f64's exact range.
        let scaled = (self.budget as f64 * factor) as u64;
        self.budget = scaled.clamp(Self::MIN_BUDGET, Self::MAX_BUDGET);
    }
}
