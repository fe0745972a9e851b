//! Text splitting: an [`Embedder`](crate::Embedder) with several threads runs the jobs of a
//! batch call at the same time, one job (up to [`EmbedderOptions::max_texts`] texts) per thread,
//! instead of splitting each step's products by weight rows. For batches it is the faster split
//! (64 × 127-token texts through nomic-synth-12L on 2 cores: 17.5 s on one thread, 9.05 s with
//! the texts split over two; rows split over two gained nothing on that batch), at the cost of
//! an arena per thread.
//!
//! The calling thread runs the first job of each round of jobs; each other one goes to a
//! [`Worker`]: a thread of its own with its own reader of the open model file (a [`FileReader`]:
//! the same file even if its path was replaced since) and its own arena (the vocab index is
//! shared), started with the embedder, so that its memory is known from the start (an arena's
//! pages are only touched by the jobs that use them). Every job gives the same bits
//! wherever it runs. Unix only (the readers read at their own positions with `pread`).
//!
//! [`EmbedderOptions::max_texts`]: crate::EmbedderOptions::max_texts

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use stepembed_core::engine::{Input, Job, JobOptions, Plan, Step};
use stepembed_core::model::{LayerRefs, Model, ModelMeta};

use crate::embedder::lookup;
use crate::error::{Error, Result};
use crate::io::FileReader;

/// One finished job: its embeddings (one after another) and its step times.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) embeddings: Vec<f32>,
    pub(crate) steps: Vec<Duration>,
}

/// What a worker needs to run jobs like its embedder does.
#[derive(Clone)]
struct Shared {
    /// The model file (a handle on the embedder's) and its path, for errors.
    file: Arc<File>,
    path: PathBuf,
    meta: ModelMeta,
    layers: Vec<LayerRefs>,
    /// The embedder's plan for one thread.
    plan: Plan,
    index: Arc<Vec<u8>>,
}

/// A job given to a worker: its texts, its options, a flag that stops it at its next step, and
/// where its result goes.
struct Task {
    texts: Vec<Vec<u32>>,
    options: JobOptions,
    stop: Arc<AtomicBool>,
    done: Sender<Result<Finished>>,
}

/// A thread that runs [`Task`]s one after another until its queue is closed.
struct Worker {
    tasks: Option<Sender<Task>>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the thread, with a reader of its own on the model file; its arena is allocated
    /// there.
    fn start(model: Shared) -> Result<Worker> {
        let source = FileReader::new(&model.file)
            .map_err(|source| Error::Open { path: model.path.clone(), source })?;
        let (tasks, queue) = mpsc::channel::<Task>();
        let thread = std::thread::Builder::new()
            .name("stepembed-text".into())
            .spawn(move || {
                let mut source = source;
                let mut arena = vec![0u8; model.plan.arena_bytes()];
                for task in queue {
                    let result = run(&model, &mut source, &mut arena, &task);
                    // The caller may have gone (its call was dropped): the result is not wanted.
                    let _ = task.done.send(result);
                }
            })
            .map_err(|e| Error::InvalidArgument(format!("threads: could not start a thread: {e}")))?;
        Ok(Worker { tasks: Some(tasks), thread: Some(thread) })
    }
}

impl Drop for Worker {
    /// Closes the queue and waits for the thread, which ends after its current job (stopped by
    /// its caller's [`Round`] when that was dropped).
    fn drop(&mut self) {
        drop(self.tasks.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `task` to its end on `arena`, or until its stop flag is set ([`Error::Aborted`]).
fn run(model: &Shared, source: &mut FileReader, arena: &mut [u8], task: &Task) -> Result<Finished> {
    let lookup = lookup(&model.meta, &model.index)?;
    let texts: Vec<&[u32]> = task.texts.iter().map(Vec::as_slice).collect();
    let job_model = Model::new(model.meta, &model.layers)?;
    let mut job = Job::new(job_model, &model.plan, arena, Input::IdBatch(&texts), lookup, task.options)?;
    let mut steps = Vec::new();
    loop {
        if task.stop.load(Ordering::Relaxed) {
            return Err(Error::Aborted);
        }
        let start = Instant::now();
        let step = job.step(source)?;
        steps.push(start.elapsed());
        if let Step::Done(all) = step {
            return Ok(Finished { embeddings: all.to_vec(), steps });
        }
    }
}

/// The workers of an embedder opened from a file: `threads − 1` of them.
pub(crate) struct Spread {
    workers: Vec<Worker>,
    /// Bytes of each worker's arena.
    arena_bytes: usize,
}

impl Spread {
    /// For an embedder of `file` (opened from `path`) whose jobs run with `plan` on
    /// `plan.threads()` threads, its workers started; `None` when that is one thread, or off
    /// unix ([`FileReader`]).
    pub(crate) fn new(
        file: &File,
        path: &std::path::Path,
        meta: ModelMeta,
        layers: &[LayerRefs],
        plan: Plan,
        index: Arc<Vec<u8>>,
    ) -> Result<Option<Spread>> {
        let wanted = plan.threads().saturating_sub(1);
        if wanted == 0 || cfg!(not(unix)) {
            return Ok(None);
        }
        let file = file.try_clone().map_err(|source| Error::Open { path: path.to_owned(), source })?;
        let (file, path) = (Arc::new(file), path.to_owned());
        let model = Shared { file, path, meta, layers: layers.to_vec(), plan: plan.with_threads(1)?, index };
        let arena_bytes = model.plan.arena_bytes();
        let workers = (0..wanted).map(|_| Worker::start(model.clone())).collect::<Result<_>>()?;
        Ok(Some(Spread { workers, arena_bytes }))
    }

    /// Jobs that run at the same time: the calling thread's and one per worker.
    pub(crate) fn width(&self) -> usize {
        self.workers.len().saturating_add(1)
    }

    /// Bytes of the workers' arenas.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.workers.len().saturating_mul(self.arena_bytes)
    }

    /// Gives `jobs` (one per worker at most, in order) to the workers; the [`Round`] collects
    /// their results.
    pub(crate) fn dispatch(&self, jobs: &[&[&[u32]]], options: JobOptions) -> Result<Round> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut results = Vec::with_capacity(jobs.len());
        for (worker, texts) in self.workers.iter().zip(jobs) {
            let (done, result) = mpsc::channel();
            let texts = texts.iter().map(|t| t.to_vec()).collect();
            let task = Task { texts, options, stop: Arc::clone(&stop), done };
            let sent = worker.tasks.as_ref().is_some_and(|tasks| tasks.send(task).is_ok());
            if !sent {
                return Err(stopped());
            }
            results.push(result);
        }
        if results.len() != jobs.len() {
            return Err(stopped());
        }
        Ok(Round { stop, results })
    }
}

/// The error for a worker thread that is gone (it panicked: a bug).
fn stopped() -> Error {
    Error::Core(stepembed_core::Error::InvalidState)
}

/// The jobs given to workers by one [`Spread::dispatch`]. Dropped before all are collected, it
/// stops the rest at their next step.
pub(crate) struct Round {
    stop: Arc<AtomicBool>,
    results: Vec<Receiver<Result<Finished>>>,
}

impl Round {
    /// How long [`Round::wait`] blocks at most.
    const WAIT: Duration = Duration::from_micros(500);

    /// Job `i`'s result if it has come within [`Round::WAIT`] (`None`: not yet). Bounded: the
    /// caller checks its deadline and yields between calls.
    pub(crate) fn wait(&self, i: usize) -> Option<Result<Finished>> {
        match self.results.get(i)?.recv_timeout(Self::WAIT) {
            Ok(result) => Some(result),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(Err(stopped())),
        }
    }

    /// Jobs in the round.
    pub(crate) fn len(&self) -> usize {
        self.results.len()
    }
}

impl Drop for Round {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use futures_lite::future::block_on;

    use crate::breaker::Deadline;
    use crate::{Embedder, EmbedderOptions, Error};

    /// The texts go evenly over the jobs, whatever the thread count; one job stays one job.
    #[test]
    fn jobs_are_even_and_the_same_for_any_thread_count() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/models/minilm-l6-Q4_K_M.gguf");
        let open =
            |threads| Embedder::open_with(path, EmbedderOptions { threads, ..EmbedderOptions::default() });
        let ids = |n: usize| vec![vec![101u32, 2023, 102]; n];
        for threads in [1, 2, 3] {
            let e = open(threads).unwrap();
            assert_eq!(e.batches(&ids(20)), [0..10, 10..20]);
            assert_eq!(e.batches(&ids(40)), [0..14, 14..28, 28..40]);
            assert_eq!(e.batches(&ids(32)), [0..16, 16..32]);
            assert_eq!(e.batches(&ids(10)).len(), 1, "one job stays one job");
            assert_eq!(e.batches(&ids(0)), []);
        }
    }

    /// The workers read the file the embedder opened, even after its path names another one.
    #[test]
    fn workers_read_the_open_file_after_its_path_is_replaced() {
        let fixture =
            |name: &str| format!("{}/../tests/fixtures/models/{name}.gguf", env!("CARGO_MANIFEST_DIR"));
        let dir = std::env::temp_dir().join(format!("stepembed-spread-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.gguf");
        std::fs::copy(fixture("minilm-l6-Q4_K_M"), &path).unwrap();
        let texts: Vec<String> = (1..=6).map(|n| "the model file was replaced ".repeat(n)).collect();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let options = |threads| EmbedderOptions { threads, max_texts: 2, ..EmbedderOptions::default() };
        let want = Embedder::open_with(&path, options(1)).unwrap().embed_batch(&texts).unwrap();
        let mut e = Embedder::open_with(&path, options(2)).unwrap();
        let replacement = dir.join("other.gguf");
        std::fs::copy(fixture("nomic-small-2L-Q4_K_M"), &replacement).unwrap();
        std::fs::rename(&replacement, &path).unwrap();
        // 6 texts, 2 per job: the jobs are spread.
        assert_eq!(e.texts_at_once(), 4);
        assert_eq!(e.embed_batch(&texts).unwrap(), want);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A call stopped while the workers' jobs run returns the error at once; the workers drop
    /// those jobs at their next step, and the next call gets the same embeddings as before.
    #[test]
    fn a_call_stopped_midway_leaves_the_workers_ready_for_the_next() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/models/minilm-l6-Q4_K_M.gguf");
        let options = EmbedderOptions { threads: 2, max_texts: 2, ..EmbedderOptions::default() };
        let mut e = Embedder::open_with(path, options).unwrap();
        let words = "a streaming embedder reads its weights in chunks and never holds the model";
        let ids: Vec<Vec<u32>> = (1..=9).map(|n| e.tokenize(&words.repeat(n)).unwrap()).collect();
        let texts: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let batches = e.batches(&ids);
        assert_eq!(batches.len(), 5);
        let all = |e: &mut Embedder| -> Vec<Vec<f32>> {
            let done = block_on(e.run_jobs(&texts, &batches, Deadline::NONE, &mut || Ok(()), false)).unwrap();
            done.into_iter().map(|d| d.unwrap().embeddings).collect()
        };
        let want = all(&mut e);
        for stop_after in [0, 3, 40] {
            let mut checks = 0;
            let mut check = || {
                checks += 1;
                if checks > stop_after {
                    Err(Error::Aborted)
                } else {
                    Ok(())
                }
            };
            let stopped = block_on(e.run_jobs(&texts, &batches, Deadline::NONE, &mut check, false));
            assert!(matches!(stopped, Err(Error::Aborted)), "after {stop_after} checks");
            assert_eq!(all(&mut e), want, "after a call stopped after {stop_after} checks");
        }
    }
}
