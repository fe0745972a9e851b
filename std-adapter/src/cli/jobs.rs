//! `embed`'s jobs: each batch of a window as one job, and with several threads the batches of a
//! window spread over embedders of their own, one job per thread at a time (text splitting),
//! which is faster for batches than splitting each step's products by weight rows
//! (64 × 127-token texts through nomic-synth-12L on 2 cores: 30–32 s on one thread, 30–32 s
//! with rows split over two, 15–18 s with the texts split over two).

use std::path::{Path, PathBuf};
use std::time::Instant;

use stepembed_core::engine::{Input, Step};

use super::CliError;
use crate::embedder::{Embedder, EmbedderOptions};

/// One finished job: its embeddings (one after another), tokens and step times (µs).
pub(super) struct Done {
    pub(super) embeddings: Vec<f32>,
    pub(super) n_tokens: usize,
    pub(super) steps: Vec<u64>,
}

/// Runs the job of `batch` on `embedder` to its end, on its threads or (`one_thread`) on the
/// calling thread alone.
fn run(embedder: &mut Embedder, batch: &[&[u32]], one_thread: bool) -> Result<Done, CliError> {
    let failed = |e: crate::Error| CliError::Message(e.to_string());
    let mut job = if one_thread {
        embedder.job_one_thread(Input::IdBatch(batch))
    } else {
        embedder.job(Input::IdBatch(batch))
    }
    .map_err(failed)?;
    let mut steps = Vec::new();
    loop {
        let t0 = Instant::now();
        let step = job.step().map_err(failed)?;
        steps.push(t0.elapsed().as_micros() as u64);
        if let Step::Done(v) = step {
            let embeddings = v.to_vec();
            return Ok(Done { embeddings, n_tokens: job.n_tokens(), steps });
        }
    }
}

/// The embedders besides the main one that a window's batches are spread over: `threads − 1`
/// of them, opened (each one thread, the main one's plan) when a window first has more than one
/// batch. Each holds its own arena and vocab index: the memory of `threads` embedders.
pub(super) struct Workers {
    path: PathBuf,
    options: EmbedderOptions,
    wanted: usize,
    extra: Vec<Embedder>,
}

impl Workers {
    /// For `threads` threads (1: none), the main embedder opened from `path` with `options`.
    pub(super) fn new(path: &Path, options: EmbedderOptions, threads: usize) -> Self {
        let options = EmbedderOptions { threads: 1, ..options };
        Workers { path: path.to_owned(), options, wanted: threads.saturating_sub(1), extra: Vec::new() }
    }

    /// The jobs of `batches` (ranges of `ids`), in order: on `main` alone (on all its threads)
    /// when there is one batch or one thread, else spread over `main` and the workers, batch
    /// `i` on embedder `i mod threads`, each on one thread. The same bits either way.
    pub(super) fn run(
        &mut self,
        main: &mut Embedder,
        ids: &[&[u32]],
        batches: &[std::ops::Range<usize>],
    ) -> Result<Vec<Done>, CliError> {
        let batch = |r: &std::ops::Range<usize>| ids.get(r.clone()).unwrap_or_default();
        if batches.len() < 2 || self.wanted == 0 {
            return batches.iter().map(|r| run(main, batch(r), false)).collect();
        }
        while self.extra.len() < self.wanted {
            self.extra.push(super::open_embedder(&self.path, self.options)?);
        }
        let n = self.extra.len() + 1;
        let mut embedders: Vec<&mut Embedder> = std::iter::once(main).chain(self.extra.iter_mut()).collect();
        let mut all: Vec<(usize, Result<Done, CliError>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = embedders
                .iter_mut()
                .enumerate()
                .map(|(w, embedder)| {
                    scope.spawn(move || {
                        let mut done = Vec::new();
                        for (i, r) in batches.iter().enumerate().skip(w).step_by(n) {
                            let result = run(embedder, batch(r), true);
                            let failed = result.is_err();
                            done.push((i, result));
                            if failed {
                                break;
                            }
                        }
                        done
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| {
                    h.join().unwrap_or_else(|_| {
                        vec![(0, Err(CliError::Message("a worker thread panicked".into())))]
                    })
                })
                .collect()
        });
        all.sort_by_key(|(i, _)| *i);
        let done: Vec<Done> = all.into_iter().map(|(_, r)| r).collect::<Result<_, _>>()?;
        if done.len() != batches.len() {
            return Err(CliError::Message("a worker stopped before its batches were done".into()));
        }
        Ok(done)
    }
}
