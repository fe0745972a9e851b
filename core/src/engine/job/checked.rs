//! Checked arithmetic on the job's positions and sizes.
//!
//! Token counts, dimensions and offsets are bounded by the plan (every region a job indexes
//! exists in its arena), so none of this overflows in a correct job; if it ever would, the job
//! fails with [`Error::InvalidState`] (and is poisoned) instead of panicking or indexing the
//! wrong place.

use core::ops::Range;

use crate::error::{Error, Result};

/// `a + b`.
pub(super) fn add(a: usize, b: usize) -> Result<usize> {
    a.checked_add(b).ok_or(Error::InvalidState)
}

/// `a − b`, which must not be negative.
pub(super) fn sub(a: usize, b: usize) -> Result<usize> {
    a.checked_sub(b).ok_or(Error::InvalidState)
}

/// `a · b`.
pub(super) fn mul(a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b).ok_or(Error::InvalidState)
}

/// `start..start + len`.
pub(super) fn span(start: usize, len: usize) -> Result<Range<usize>> {
    Ok(start..add(start, len)?)
}

/// Row `i` of a buffer of rows `width` long: `i·width..(i + 1)·width`.
pub(super) fn nth_row(i: usize, width: usize) -> Result<Range<usize>> {
    span(mul(i, width)?, width)
}

/// Work units: `cost` per element times the product of `counts`. Saturating, since units are an
/// estimate and a budget, never an index.
pub(super) fn units(cost: u64, counts: &[usize]) -> u64 {
    counts.iter().fold(cost, |u, &c| u.saturating_mul(c as u64))
}
