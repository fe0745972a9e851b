//! Threads for a job's steps: [`Threads`] runs the parts of each step's matrix products
//! ([`Job::step_parallel`](stepembed_core::engine::Job::step_parallel)) on a pool of worker
//! threads and the calling thread together.

use std::sync::atomic::{AtomicUsize, Ordering};

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
            return Ok(Threads { pool: None, n });
        }
        let pool = rayon_core::ThreadPoolBuilder::new()
            .num_threads(n - 1)
            .thread_name(|i| format!("stepembed-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Threads { pool: Some(pool), n })
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
    /// The first part on the calling thread, the others on the pool; returns when all are done.
    /// The calling thread waits by spinning, not sleeping: a part lasts a fraction of a
    /// millisecond, about what waking a sleeping thread would add.
    fn run(&self, parts: &mut [Part<'_>]) {
        let Some(pool) = &self.pool else {
            return Sequential.run(parts);
        };
        let [first, rest @ ..] = parts else { return };
        let finished = AtomicUsize::new(0);
        let others = rest.len();
        pool.in_place_scope(|scope| {
            for part in rest {
                let finished = &finished;
                scope.spawn(move |_| {
                    part.run();
                    finished.fetch_add(1, Ordering::Release);
                });
            }
            first.run();
            while finished.load(Ordering::Acquire) < others {
                std::hint::spin_loop();
            }
        });
    }
}
