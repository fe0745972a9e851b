//! Many callers, one [`Embedder`]: callers [`Inbox::submit`] requests from any thread and
//! [`serve`] runs them, coalescing concurrent requests into shared jobs (one weight pass for
//! up to [`crate::EmbedderOptions::max_texts`] texts) and enforcing the breakers of
//! [`crate::breaker`]: the bounded queue, per-request deadlines and cancellation.
//!
//! `serve` is a future doing one bounded step per poll, so a host either drives it on a thread
//! of its own (`futures_lite::future::block_on`) or polls it in slices on its event loop.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use stepembed_core::io::Source;
use stepembed_core::InputError;

use crate::breaker::{Deadline, QueueLimit};
use crate::embedder::{Embedder, Tokens};
use crate::error::{Error, Result};

/// The breakers of a [`serve`] loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceOptions {
    /// Most unfinished requests (queued or running); beyond it [`Inbox::submit`] is
    /// [`Error::Busy`] (default 1024).
    pub max_queue: usize,
    /// Most time a request may take from submission (default none): past it the request
    /// completes with [`Error::Timeout`].
    pub timeout: Option<Duration>,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions { max_queue: 1024, timeout: None }
    }
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Embeddings of its texts.
    Embed,
    /// Token ids of its texts only.
    Tokenize,
}

/// One input of a request: a text, or token ids to embed as given ([CLS] and [SEP] included if
/// wanted: what [`Embedder::tokenize`] returns embeds like its text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A text, tokenized by the service.
    Text(String),
    /// Token ids, used as they are: empty, longer than the plan's token limit or outside the vocab
    /// is this item's error.
    Ids(Vec<u32>),
}

/// One text's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    /// Its token ids and whether it was cut.
    pub tokens: Tokens,
    /// Its embedding (empty for [`Work::Tokenize`]).
    pub embedding: Vec<f32>,
}

/// A finished request: every text's own result, or an error of the whole request
/// ([`Error::Timeout`], [`Error::Aborted`]).
#[derive(Debug)]
pub struct Completion {
    /// The id [`Inbox::submit`] gave.
    pub id: u64,
    /// One result per text, in order.
    pub result: Result<Vec<Result<Embedded>>>,
}

/// Counters of a service, as of the latest finished batch of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServiceStats {
    /// Requests completed (with any result).
    pub done: u64,
    /// Requests submitted and not yet completed.
    pub outstanding: usize,
    /// Jobs run (passes over the weights, each shared by its texts).
    pub jobs: u64,
    /// Job steps run.
    pub steps: u64,
    /// The longest step.
    pub max_step: Duration,
    /// The 99th percentile of recent steps.
    pub p99_step: Duration,
}

/// The shared, thread-safe end of a service where requests go in. Clones share one queue.
#[derive(Debug, Clone)]
pub struct Inbox {
    shared: Arc<Mutex<Shared>>,
}

#[derive(Debug)]
struct Shared {
    queue: VecDeque<Queued>,
    limit: QueueLimit,
    timeout: Option<Duration>,
    /// Ids whose cancellation the serve loop has not yet seen.
    cancelled: Vec<u64>,
    closed: bool,
    next_id: u64,
    /// The serve loop, when it waits for requests.
    waker: Option<Waker>,
    stats: ServiceStats,
}

#[derive(Debug)]
struct Queued {
    id: u64,
    work: Work,
    texts: Vec<Item>,
    deadline: Deadline,
}

impl Inbox {
    /// An empty inbox with `options`' breakers.
    pub fn new(options: ServiceOptions) -> Self {
        let shared = Shared {
            queue: VecDeque::new(),
            limit: QueueLimit::new(options.max_queue),
            timeout: options.timeout,
            cancelled: Vec::new(),
            closed: false,
            next_id: 0,
            waker: None,
            stats: ServiceStats::default(),
        };
        Inbox { shared: Arc::new(Mutex::new(shared)) }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock leaves only counters half-updated: keep serving.
        self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a request and returns its id; [`Error::Busy`] at once when the queue is full,
    /// [`Error::Closed`] after [`Inbox::close`]. Exactly one [`Completion`] follows for the id
    /// unless the inbox is closed first.
    pub fn submit(&self, work: Work, texts: Vec<String>) -> Result<u64> {
        self.submit_items(work, texts.into_iter().map(Item::Text).collect())
    }

    /// [`Inbox::submit`] for texts and token ids alike.
    pub fn submit_items(&self, work: Work, texts: Vec<Item>) -> Result<u64> {
        let mut shared = self.lock();
        if shared.closed {
            return Err(Error::Closed);
        }
        shared.limit.admit()?;
        let id = shared.next_id;
        shared.next_id += 1;
        let deadline = Deadline::after(shared.timeout);
        shared.queue.push_back(Queued { id, work, texts, deadline });
        shared.stats.outstanding = shared.limit.outstanding();
        if let Some(waker) = shared.waker.take() {
            waker.wake();
        }
        Ok(id)
    }

    /// Cancels request `id`: it completes with [`Error::Aborted`] before its next step.
    pub fn cancel(&self, id: u64) {
        self.lock().cancelled.push(id);
    }

    /// Stops the service: [`serve`] returns before its next step, and later submissions are
    /// [`Error::Closed`]. Unfinished requests get no completion.
    pub fn close(&self) {
        let mut shared = self.lock();
        shared.closed = true;
        if let Some(waker) = shared.waker.take() {
            waker.wake();
        }
    }

    /// The service's counters.
    pub fn stats(&self) -> ServiceStats {
        self.lock().stats
    }

    /// Waits for requests and takes them from the front of the queue: at least one, then more
    /// while their texts total fewer than `max_texts`. `None` once closed.
    async fn next(&self, max_texts: usize) -> Option<Vec<Queued>> {
        poll_fn(|cx| {
            let mut shared = self.lock();
            if shared.closed {
                return Poll::Ready(None);
            }
            let mut taken = Vec::new();
            let mut texts = 0;
            while texts < max_texts.max(1) {
                let Some(request) = shared.queue.pop_front() else { break };
                texts += request.texts.len();
                taken.push(request);
            }
            if taken.is_empty() {
                shared.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(Some(taken))
        })
        .await
    }

    /// Counts `n` requests finished.
    fn finished(&self, n: usize) {
        let mut shared = self.lock();
        for _ in 0..n {
            shared.limit.release();
        }
        shared.stats.done += n as u64;
        shared.stats.outstanding = shared.limit.outstanding();
    }

    /// Takes the queued requests that are cancelled or past their deadline at `now`, and
    /// returns them with the ids of running requests cancelled since the last call.
    fn sweep(&self, now: Instant) -> (Vec<Completion>, Vec<u64>) {
        let mut shared = self.lock();
        let cancelled = std::mem::take(&mut shared.cancelled);
        let mut gone = Vec::new();
        shared.queue.retain(|q| match ending(q.id, q.deadline, &cancelled, now) {
            Some(error) => {
                gone.push(Completion { id: q.id, result: Err(error) });
                false
            }
            None => true,
        });
        (gone, cancelled)
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    fn record_steps(&self, steps: &crate::StepStats) {
        let mut shared = self.lock();
        shared.stats.jobs = steps.jobs();
        shared.stats.steps = steps.steps();
        shared.stats.max_step = steps.max();
        shared.stats.p99_step = steps.p99();
    }
}

/// Why request `id` must end at `now`: cancelled, or past its deadline.
fn ending(id: u64, deadline: Deadline, cancelled: &[u64], now: Instant) -> Option<Error> {
    if cancelled.contains(&id) {
        Some(Error::Aborted)
    } else if deadline.passed(now) {
        Some(Error::Timeout)
    } else {
        None
    }
}

/// A request being served.
struct Running {
    id: u64,
    deadline: Deadline,
}

/// Serves `inbox` with `embedder` until the inbox is closed, calling `done` once per finished
/// request. One bounded step per poll (see [`Embedder::embed_async`] on reads).
pub async fn serve<S: Source>(embedder: &mut Embedder<S>, inbox: &Inbox, mut done: impl FnMut(Completion)) {
    // As many texts as run at once: a job's worth per thread when the jobs are spread.
    let max_texts = embedder.texts_at_once();
    while let Some(batch) = inbox.next(max_texts).await {
        let mut running: Vec<Running> =
            batch.iter().map(|q| Running { id: q.id, deadline: q.deadline }).collect();
        // Finishes the requests that are cancelled or expired (queued or running); an error when
        // none of this batch's is left.
        let mut check = |running: &mut Vec<Running>| -> Result<()> {
            if inbox.is_closed() {
                return Err(Error::Closed);
            }
            let now = Instant::now();
            let (mut gone, cancelled) = inbox.sweep(now);
            running.retain(|r| match ending(r.id, r.deadline, &cancelled, now) {
                Some(error) => {
                    gone.push(Completion { id: r.id, result: Err(error) });
                    false
                }
                None => true,
            });
            inbox.finished(gone.len());
            gone.into_iter().for_each(&mut done);
            if running.is_empty() {
                return Err(Error::Aborted);
            }
            Ok(())
        };
        let Ok(results) = serve_batch(embedder, batch, &mut running, &mut check).await else {
            inbox.record_steps(embedder.step_stats());
            continue;
        };
        inbox.record_steps(embedder.step_stats());
        let finished: Vec<Completion> = results
            .into_iter()
            .filter(|(id, _)| running.iter().any(|r| r.id == *id))
            .map(|(id, texts)| Completion { id, result: Ok(texts) })
            .collect();
        // Counted before they are delivered, so that a host reading the stats on delivery sees them.
        inbox.finished(finished.len());
        finished.into_iter().for_each(&mut done);
    }
}

/// Tokenizes, then embeds, the texts of `batch`'s requests, calling `check` before every step:
/// its error stops the batch. Returns each request's per-text results.
async fn serve_batch<S: Source>(
    embedder: &mut Embedder<S>,
    batch: Vec<Queued>,
    running: &mut Vec<Running>,
    check: &mut impl FnMut(&mut Vec<Running>) -> Result<()>,
) -> Result<Vec<(u64, Vec<Result<Embedded>>)>> {
    // Per request: its texts' tokens (or errors); the embedding inputs, with where each goes.
    let mut results: Vec<(u64, Vec<Result<Embedded>>)> = Vec::with_capacity(batch.len());
    let mut ids = Vec::new();
    let mut slots = Vec::new();
    for request in batch {
        let mut texts = Vec::with_capacity(request.texts.len());
        for item in &request.texts {
            check(running)?;
            let tokens = match item {
                Item::Text(text) => embedder.tokens_async(text).await,
                Item::Ids(ids) => given_ids(embedder, ids),
            };
            if let (Work::Embed, Ok(t)) = (request.work, &tokens) {
                ids.push(Ok(t.ids.clone()));
                slots.push((results.len(), texts.len()));
            }
            texts.push(tokens.map(|tokens| Embedded { tokens, embedding: Vec::new() }));
        }
        results.push((request.id, texts));
    }
    let embedded = embedder.embed_ids_each(ids, Deadline::NONE, false, || check(running)).await?;
    for ((request, text), embedding) in slots.into_iter().zip(embedded) {
        if let Some(slot) = results.get_mut(request).and_then(|(_, texts)| texts.get_mut(text)) {
            match embedding {
                Ok(v) => {
                    if let Ok(e) = slot {
                        e.embedding = v;
                    }
                }
                Err(e) => *slot = Err(e),
            }
        }
    }
    Ok(results)
}

/// Token ids given by a caller as an item's tokens, if the job can take them: not empty, within
/// the plan's token limit and the vocab.
fn given_ids<S: Source>(embedder: &Embedder<S>, ids: &[u32]) -> Result<Tokens> {
    let input = |e| Error::Core(stepembed_core::Error::Input(e));
    let max = embedder.plan().limits().max_tokens;
    if ids.is_empty() {
        return Err(input(InputError::Empty));
    }
    if ids.len() > max {
        return Err(input(InputError::TooManyTokens { tokens: ids.len(), max }));
    }
    let n_vocab = embedder.meta().hparams.n_vocab;
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= n_vocab) {
        return Err(input(InputError::TokenIdOutOfRange(id)));
    }
    Ok(Tokens { ids: ids.to_vec(), truncated: false })
}
