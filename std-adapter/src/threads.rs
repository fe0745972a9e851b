//! Threads for a job's steps: [`Threads`] runs the parts of each step's matrix products
//! ([`Job::step_parallel`](stepembed_core::engine::Job::step_parallel)) on a pool of worker
//! threads and the calling thread together.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stepembed_core::engine::{Parallel, Part, Sequential};

/// The calling thread and `n − 1` pool threads kept between steps. One thread is
/// [`Sequential`]: no pool at all.
#[derive(Debug)]
pub struct Threads {
    /// The pool, and what keeps its threads awake between steps.
    pool: Option<(rayon_core::ThreadPool, Arc<Warm>)>,
    n: usize,
}

/// The pool's threads wait for the next step's parts by polling for up to [`KEEP_WARM`] after
/// the last step, instead of going to sleep: a job's steps come a fraction of a millisecond
/// apart, and waking a sleeping thread costs about as much as a part's work.
#[derive(Debug)]
struct Warm {
    /// When the pool was made: [`Warm::last`] counts from it.
    epoch: Instant,
    /// Nanoseconds from `epoch` to the latest step's end.
    last: AtomicU64,
    /// Threads polling now.
    polling: AtomicUsize,
}

impl Warm {
    fn new() -> Self {
        Warm { epoch: Instant::now(), last: AtomicU64::new(0), polling: AtomicUsize::new(0) }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Polls the pool for work (the next steps' parts) until [`KEEP_WARM`] has passed since the
    /// latest step, yielding to the OS when there is none; runs on a pool thread.
    fn poll(&self) {
        let keep = u64::try_from(KEEP_WARM.as_nanos()).unwrap_or(u64::MAX);
        while self.now().saturating_sub(self.last.load(Ordering::Relaxed)) < keep {
            if rayon_core::yield_now() != Some(rayon_core::Yield::Executed) {
                std::thread::yield_now();
            }
        }
        self.polling.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Threads {
    /// `n` threads in all (0 counts as 1); fails when the OS refuses to start the pool's threads.
    pub fn new(n: usize) -> std::io::Result<Self> {
        let n = n.max(1);
        if n == 1 {
            return Ok(Threads::one());
        }
        let pool = rayon_core::ThreadPoolBuilder::new()
            .num_threads(n - 1)
            .thread_name(|i| format!("stepembed-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Threads { pool: Some((pool, Arc::new(Warm::new()))), n })
    }

    /// The calling thread alone: [`Sequential`].
    pub const fn one() -> Self {
        Threads { pool: None, n: 1 }
    }

    /// The threads available to this process ([`std::thread::available_parallelism`]; 1 when
    /// unknown).
    pub fn available() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// Threads in all, the calling one included.
    pub fn count(&self) -> usize {
        self.n
    }
}

impl Parallel for Threads {
    /// Runs the parts on the calling thread and the pool together; returns when all are done.
    ///
    /// Each thread takes the next part not yet taken until none is left, so the calling thread
    /// runs every part the pool has not started: a pool thread that is slow to wake, or not
    /// scheduled at all on a busy machine, costs the step at most the parts it has already
    /// taken, never the parallel time of the others. The calling thread then waits for those
    /// by spinning for a short while (a part lasts a fraction of a millisecond, about what
    /// waking a sleeping thread would add) and then sleeping, so that on a machine with fewer
    /// free cores than threads it does not burn the time the pool thread needs. The pool's
    /// threads then poll for the next step's parts for [`KEEP_WARM`] (yielding to the OS when
    /// there are none) instead of sleeping.
    fn run(&self, parts: &mut [Part<'_>]) {
        let Some((pool, warm)) = &self.pool else {
            return Sequential.run(parts);
        };
        let total = parts.len();
        let slots: Vec<Mutex<&mut Part<'_>>> = parts.iter_mut().map(Mutex::new).collect();
        let next = AtomicUsize::new(0);
        let finished = AtomicUsize::new(0);
        let work = || {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(slot) = slots.get(i) else { break };
                // Each index is taken once, so the lock is never contended (nor poisoned: a
                // part does not panic, and a poisoned lock still holds the part).
                slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).run();
                finished.fetch_add(1, Ordering::Release);
            }
        };
        pool.in_place_scope(|scope| {
            for _ in 1..self.n.min(total) {
                scope.spawn(|_| work());
            }
            work();
            let start = Instant::now();
            while finished.load(Ordering::Acquire) < total && start.elapsed() < SPIN_TIME {
                for _ in 0..64 {
                    std::hint::spin_loop();
                }
            }
            // Still running: the scope's end sleeps until the pool's jobs are done.
        });
        // Keep the pool's threads polling for the next step's parts.
        warm.last.store(warm.now(), Ordering::Relaxed);
        while warm.polling.load(Ordering::Relaxed) < self.n - 1 {
            warm.polling.fetch_add(1, Ordering::Relaxed);
            let warm = Arc::clone(warm);
            pool.spawn(move || warm.poll());
        }
    }
}

/// How long the calling thread spins for the pool's parts before it sleeps: about the time a
/// part takes, so that on an idle machine the wait rarely sleeps, and on a busy one a step
/// burns at most this much waiting.
const SPIN_TIME: Duration = Duration::from_micros(100);

/// How long the pool's threads poll for work after a step before they sleep: a few steps' gap,
/// so that they stay awake through a job and sleep soon after it (burning at most this much of
/// each core).
const KEEP_WARM: Duration = Duration::from_micros(500);
