//! Threads for a job's steps: [`Threads`] runs the parts of each step's matrix products
//! ([`Job::step_parallel`](stepembed_core::engine::Job::step_parallel)) on a pool of worker
//! threads and the calling thread together.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use stepembed_core::engine::{Parallel, Part, Sequential};

/// The calling thread and `n − 1` pool threads kept between steps. One thread is
/// [`Sequential`]: no pool at all.
#[derive(Debug)]
pub struct Threads {
    pool: Option<rayon_core::ThreadPool>,
    n: usize,
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
        Ok(Threads { pool: Some(pool), n })
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
    /// free cores than threads it does not burn the time the pool thread needs.
    fn run(&self, parts: &mut [Part<'_>]) {
        let Some(pool) = &self.pool else {
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
    }
}

/// How long the calling thread spins for the pool's parts before it sleeps: about the time a
/// part takes, so that on an idle machine the wait rarely sleeps, and on a busy one a step
/// burns at most this much waiting.
const SPIN_TIME: Duration = Duration::from_micros(100);
