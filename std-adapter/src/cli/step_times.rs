//! Step durations for `embed --stats`, in memory that does not grow with the number of steps.

/// Buckets per power of two (and the exact range below the first).
const SUB: u64 = 128;
/// Bucket count: values below [`SUB`] exactly, then [`SUB`] buckets for each power of two from
/// `SUB` up to `2^63`.
const BUCKETS: usize = (SUB as usize) * (64 - SUB.trailing_zeros() as usize + 1);

/// A histogram of step durations in µs: exact below 256 µs, above that within 1/128 (0.8%).
#[derive(Debug, Clone)]
pub(super) struct StepTimes {
    counts: Vec<u64>,
    n: u64,
    max: u64,
}

impl StepTimes {
    pub(super) fn new() -> Self {
        StepTimes { counts: vec![0; BUCKETS], n: 0, max: 0 }
    }

    /// Records one step of `us` microseconds.
    pub(super) fn record(&mut self, us: u64) {
        self.counts[bucket(us)] += 1;
        self.n += 1;
        self.max = self.max.max(us);
    }

    /// Steps recorded.
    pub(super) fn count(&self) -> u64 {
        self.n
    }

    /// The longest step (exact); 0 when none was recorded.
    pub(super) fn max(&self) -> u64 {
        self.max
    }

    /// The 99th percentile (nearest rank): the largest value its bucket can hold, never above
    /// [`StepTimes::max`]; 0 when none was recorded.
    pub(super) fn p99(&self) -> u64 {
        let rank = (self.n * 99).div_ceil(100).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_max(i).min(self.max);
            }
        }
        0
    }
}

/// The bucket holding `v`.
fn bucket(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    // v in [2^octave, 2^(octave+1)), octave >= log2(SUB): SUB buckets of 2^shift values each.
    let octave = u64::from(63 - v.leading_zeros());
    let shift = octave - u64::from(SUB.trailing_zeros());
    ((shift + 1) * SUB + (v >> shift) - SUB) as usize
}

/// The largest value bucket `i` holds.
fn bucket_max(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = i / SUB - 1;
    let first = (i % SUB + SUB) << shift;
    first + ((1u64 << shift) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order() {
        let samples = (0..4096).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]).chain((10..64).map(|s| 1 << s));
        for v in samples {
            let i = bucket(v);
            assert!(i < BUCKETS, "{v}");
            assert!(bucket_max(i) >= v, "{v} above its bucket's max {}", bucket_max(i));
            if i > 0 {
                assert!(bucket_max(i - 1) < v, "{v} belongs to an earlier bucket");
            }
            if v < 2 * SUB {
                assert_eq!(bucket_max(i), v, "exact below {}", 2 * SUB);
            }
        }
    }

    #[test]
    fn p99_is_the_nearest_rank_within_a_bucket() {
        let mut t = StepTimes::new();
        assert_eq!((t.count(), t.max(), t.p99()), (0, 0, 0));
        for v in 1..=200 {
            t.record(v);
        }
        // Nearest rank: the 198th of 200.
        assert_eq!((t.count(), t.max(), t.p99()), (200, 200, 198));
        let mut t = StepTimes::new();
        for _ in 0..99 {
            t.record(10);
        }
        t.record(1_000_000);
        assert_eq!(t.p99(), 10);
        t.record(1_000_000);
        let p = t.p99();
        assert!(p <= 1_000_000 && p as f64 >= 1_000_000.0 * (1.0 - 1.0 / 128.0), "{p}");
        assert_eq!(t.max(), 1_000_000);
    }
}
