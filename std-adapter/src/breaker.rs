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
/// steps last about a target time. It measures the time per work unit of the steps (a step that
/// ends a phase early does less than its budget, so step durations alone would push the budget
/// up without bound) and sets the budget to target / median time per unit: after the first
/// step (a starting budget may be far off for the machine), then after every
/// [`StepTuner::WINDOW`] steps, by at most [`StepTuner::MAX_FACTOR`] either way and within
/// [`StepTuner::MIN_BUDGET`]..=[`StepTuner::MAX_BUDGET`].
#[derive(Debug, Clone)]
pub struct StepTuner {
    target: Duration,
    budget: u64,
    /// Seconds per work unit of the steps of the current window.
    samples: Vec<f64>,
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

    /// The budget to use for the next step.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Records one step: how long it took and how many work units it did (as its
    /// [`stepembed_core::engine::Progress::done`] advanced); recalibrates when a window of steps
    /// is complete. A step that did no units tells nothing and is not counted.
    pub fn record(&mut self, step: Duration, units: u64) {
        if units == 0 {
            return;
        }
        self.samples.push(step.as_secs_f64() / units as f64);
        if self.samples.len() < self.window {
            return;
        }
        self.window = Self::WINDOW;
        self.samples.sort_unstable_by(f64::total_cmp);
        let per_unit = self.samples[self.samples.len() / 2].max(1e-15);
        self.samples.clear();
        let wanted = self.target.as_secs_f64() / per_unit;
        let current = self.budget as f64;
        let scaled = wanted.clamp(current / Self::MAX_FACTOR, current * Self::MAX_FACTOR);
        // Within [MIN_BUDGET / 8, MAX_BUDGET * 8], far inside f64's exact integer range.
        self.budget = (scaled as u64).clamp(Self::MIN_BUDGET, Self::MAX_BUDGET);
    }
}
