//! The native half of the `stepembed` Node package: a [`NativeEmbedder`] that loads a model and
//! serves embedding requests with `stepembed::service`, either on a thread of its own
//! (`worker`: events reach JS through a threadsafe function) or in slices that JS runs on its
//! event loop (`cooperative`: [`NativeEmbedder::run_slice`]). `index.js` wraps it in the
//! promise API of `index.d.ts`.

use std::cell::RefCell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

use napi::bindgen_prelude::{Float32Array, ObjectFinalize, Uint32Array};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status};
use napi_derive::napi;
use stepembed::core::engine::{Mode, PlanKind};
use stepembed::service::{serve, Completion, Inbox, ServiceOptions, Work};
use stepembed::{Embedder, EmbedderOptions, Error};

/// Options as `index.js` passes them (validated there).
#[napi(object)]
pub struct NativeOptions {
    pub max_tokens: Option<u32>,
    pub plan: Option<String>,
    /// `"exact"` (the default) or `"fast"`.
    pub mode: Option<String>,
    /// Threads to embed on (default: the available cores).
    pub threads: Option<u32>,
    pub memory: Option<f64>,
    pub normalize: Option<bool>,
    pub truncate: Option<bool>,
    pub timeout_ms: Option<f64>,
    pub max_queue: Option<u32>,
    /// Target time per step in ms (the budget is calibrated to it).
    pub step_target_ms: Option<f64>,
}

/// What the model is, once loaded.
#[napi(object)]
pub struct ModelInfo {
    pub architecture: String,
    /// The file's name without its `.gguf` extension.
    pub name: Option<String>,
    pub context: u32,
    pub dimensions: u32,
}

/// A failure: `stepembed::Error::code` prefixed with `ERR_`, and its one-line message.
#[napi(object)]
pub struct NativeError {
    pub code: String,
    pub message: String,
}

/// One text's result.
#[napi(object)]
pub struct TextOutcome {
    pub embedding: Option<Float32Array>,
    /// The token ids, for tokenize requests.
    pub ids: Option<Uint32Array>,
    pub tokens: u32,
    pub truncated: bool,
    pub error: Option<NativeError>,
}

/// What the native side reports: `ready` (with `model`, `arenaBytes`, `indexBytes`), `failed`
/// (loading; with `error`) or `done` (request `id`; with `texts` or `error`).
#[napi(object)]
pub struct Event {
    pub kind: String,
    pub id: Option<f64>,
    pub model: Option<ModelInfo>,
    pub arena_bytes: Option<f64>,
    pub index_bytes: Option<f64>,
    pub error: Option<NativeError>,
    pub texts: Option<Vec<TextOutcome>>,
}

/// Counters for `Embedder.stats()`.
#[napi(object)]
pub struct NativeStats {
    /// Weight passes run (concurrent calls share them).
    pub passes: f64,
    pub jobs_done: f64,
    pub jobs_queued: f64,
    pub steps: f64,
    pub max_step_us: f64,
    pub p99_step_us: f64,
}

/// The result of one cooperative slice.
#[napi(object)]
pub struct Slice {
    pub events: Vec<Event>,
    /// Whether work remains (run another slice after yielding to the event loop).
    pub more: bool,
}

/// Delivers worker events to JS; weak, so it never keeps the process alive by itself (index.js
/// holds the event loop open while calls are pending).
type EventCallback = ThreadsafeFunction<Event, (), Event, Status, false, true>;

/// The embedder's lifecycle, polled on the JS thread (cooperative mode).
struct Cooperative {
    task: Option<Pin<Box<dyn Future<Output = ()>>>>,
    events: Rc<RefCell<Vec<Event>>>,
    woken: Arc<Flag>,
}

/// A waker that only records that it was woken.
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

/// A model and its request queue. See the crate documentation.
#[napi(custom_finalize)]
pub struct NativeEmbedder {
    inbox: Inbox,
    /// Bytes reported to V8 as external memory (set on the JS thread when the model is ready).
    accounted: Arc<AtomicI64>,
    closed: Arc<AtomicBool>,
    cooperative: Option<Cooperative>,
}

#[napi]
impl NativeEmbedder {
    /// Starts loading `path`. With `on_event` (worker mode) a native thread loads and serves;
    /// without it, [`NativeEmbedder::run_slice`] does, on the JS thread.
    #[napi(constructor)]
    pub fn new(path: String, options: NativeOptions, on_event: Option<EventCallback>) -> napi::Result<Self> {
        let (embedder_options, service_options) = convert(&options);
        let inbox = Inbox::new(service_options);
        let accounted = Arc::new(AtomicI64::new(0));
        let closed = Arc::new(AtomicBool::new(false));
        let path = PathBuf::from(path);
        let cooperative = match on_event {
            Some(callback) => {
                let serving = inbox.clone();
                std::thread::Builder::new()
                    .name("stepembed".into())
                    .spawn(move || {
                        let emit = |event| {
                            callback.call(event, ThreadsafeFunctionCallMode::NonBlocking);
                        };
                        let run = lifecycle(path, embedder_options, serving, emit);
                        if catch_unwind(AssertUnwindSafe(|| futures_lite::future::block_on(run))).is_err() {
                            callback.call(internal_failure(), ThreadsafeFunctionCallMode::NonBlocking);
                        }
                    })
                    .map_err(|e| {
                        napi::Error::from_reason(format!("ERR_INTERNAL: cannot start a thread: {e}"))
                    })?;
                None
            }
            None => {
                let events = Rc::new(RefCell::new(Vec::new()));
                let sink = Rc::clone(&events);
                let emit = move |event| sink.borrow_mut().push(event);
                let task: Pin<Box<dyn Future<Output = ()>>> =
                    Box::pin(lifecycle(path, embedder_options, inbox.clone(), emit));
                Some(Cooperative { task: Some(task), events, woken: Arc::new(Flag(AtomicBool::new(true))) })
            }
        };
        Ok(NativeEmbedder { inbox, accounted, closed, cooperative })
    }

    /// Queues texts to embed (`tokenize` false) or tokenize; returns the request id, or an
    /// `ERR_BUSY` / `ERR_CLOSED` error.
    #[napi]
    pub fn submit(&self, texts: Vec<String>, tokenize: bool) -> Submitted {
        let work = if tokenize { Work::Tokenize } else { Work::Embed };
        match self.inbox.submit(work, texts) {
            Ok(id) => Submitted { id: Some(id as f64), error: None },
            Err(e) => Submitted { id: None, error: Some(native_error(&e)) },
        }
    }

    /// Cancels request `id` (it completes with `ERR_ABORTED`).
    #[napi]
    pub fn cancel(&self, id: f64) {
        self.inbox.cancel(id as u64);
    }

    /// Cooperative mode: polls the lifecycle for up to `slice_ms` of steps and returns what
    /// happened. Worker mode: nothing to do.
    #[napi]
    pub fn run_slice(&mut self, env: Env, slice_ms: f64) -> Slice {
        let Some(co) = self.cooperative.as_mut() else {
            return Slice { events: Vec::new(), more: false };
        };
        let until = Instant::now() + Duration::from_secs_f64(slice_ms.max(0.0) / 1000.0);
        let waker = Waker::from(Arc::clone(&co.woken));
        let mut cx = Context::from_waker(&waker);
        let mut more = false;
        while let Some(task) = co.task.as_mut() {
            co.woken.0.store(false, Ordering::Release);
            match catch_unwind(AssertUnwindSafe(|| task.as_mut().poll(&mut cx))) {
                Ok(std::task::Poll::Pending) => {}
                Ok(std::task::Poll::Ready(())) => {
                    co.task = None;
                    break;
                }
                Err(_) => {
                    co.task = None;
                    co.events.borrow_mut().push(internal_failure());
                    break;
                }
            }
            if !co.woken.0.load(Ordering::Acquire) {
                break;
            }
            if Instant::now() >= until {
                more = true;
                break;
            }
        }
        let events = std::mem::take(&mut *co.events.borrow_mut());
        for event in &events {
            account(&env, event, &self.accounted, &self.closed);
        }
        Slice { events, more }
    }

    /// Worker mode: reports a `ready` event's memory to V8 (index.js calls it on the JS thread).
    #[napi]
    pub fn account_memory(&self, env: Env, arena_bytes: f64, index_bytes: f64) {
        if self.cooperative.is_none() {
            let event =
                Event { arena_bytes: Some(arena_bytes), index_bytes: Some(index_bytes), ..event("ready") };
            account(&env, &event, &self.accounted, &self.closed);
        }
    }

    /// The service's counters.
    #[napi]
    pub fn stats(&self) -> NativeStats {
        let s = self.inbox.stats();
        NativeStats {
            passes: s.jobs as f64,
            jobs_done: s.done as f64,
            jobs_queued: s.outstanding as f64,
            steps: s.steps as f64,
            max_step_us: s.max_step.as_micros() as f64,
            p99_step_us: s.p99_step.as_micros() as f64,
        }
    }

    /// Stops serving and releases the model's memory (the worker thread drops it after its
    /// current step) and its V8 accounting.
    #[napi]
    pub fn close(&mut self, env: Env) {
        self.shut_down(&env);
    }
}

impl ObjectFinalize for NativeEmbedder {
    /// Collected without `close()`: the same release.
    fn finalize(mut self, env: Env) -> napi::Result<()> {
        self.shut_down(&env);
        Ok(())
    }
}

impl NativeEmbedder {
    fn shut_down(&mut self, env: &Env) {
        self.inbox.close();
        self.closed.store(true, Ordering::Release);
        let bytes = self.accounted.swap(0, Ordering::AcqRel);
        if bytes != 0 {
            // Failing to un-report memory only skews V8's GC heuristics.
            let _ = env.adjust_external_memory(-bytes);
        }
        self.cooperative = None;
    }
}

/// A request id or the error that refused it.
#[napi(object)]
pub struct Submitted {
    pub id: Option<f64>,
    pub error: Option<NativeError>,
}

/// Reports a `ready` event's memory to V8 as external memory, once and unless closed.
fn account(env: &Env, event: &Event, accounted: &AtomicI64, closed: &AtomicBool) {
    if event.kind != "ready" || closed.load(Ordering::Acquire) {
        return;
    }
    let bytes = (event.arena_bytes.unwrap_or(0.0) + event.index_bytes.unwrap_or(0.0)) as i64;
    if accounted.compare_exchange(0, bytes, Ordering::AcqRel, Ordering::Acquire).is_ok() {
        // Failing to report memory only skews V8's GC heuristics.
        let _ = env.adjust_external_memory(bytes);
    }
}

/// Loads the model, reports `ready` or `failed`, then serves `inbox` until it is closed.
async fn lifecycle(path: PathBuf, options: EmbedderOptions, inbox: Inbox, mut emit: impl FnMut(Event)) {
    let mut embedder = match Embedder::open_async(&path, options).await {
        Ok(embedder) => embedder,
        Err(e) => return emit(Event { error: Some(native_error(&e)), ..event("failed") }),
    };
    let meta = embedder.meta();
    let model = ModelInfo {
        architecture: meta.arch.name().into(),
        name: model_name(&path),
        context: u32::try_from(meta.hparams.n_ctx).unwrap_or(u32::MAX),
        dimensions: u32::try_from(meta.hparams.n_embd).unwrap_or(u32::MAX),
    };
    emit(Event {
        model: Some(model),
        // Every arena: one per thread when batch jobs are spread over them.
        arena_bytes: Some(embedder.memory_bytes().saturating_sub(embedder.plan().index_bytes()) as f64),
        index_bytes: Some(embedder.plan().index_bytes() as f64),
        ..event("ready")
    });
    serve(&mut embedder, &inbox, |c| emit(done(c))).await;
}

/// An event of `kind` with nothing else set.
fn event(kind: &str) -> Event {
    Event {
        kind: kind.into(),
        id: None,
        model: None,
        arena_bytes: None,
        index_bytes: None,
        error: None,
        texts: None,
    }
}

/// The `done` event of a completion.
fn done(c: Completion) -> Event {
    let base = Event { id: Some(c.id as f64), ..event("done") };
    let texts = match c.result {
        Ok(texts) => texts,
        Err(e) => return Event { error: Some(native_error(&e)), ..base },
    };
    let texts = texts
        .into_iter()
        .map(|text| match text {
            Ok(t) => {
                let tokens = u32::try_from(t.tokens.ids.len()).unwrap_or(u32::MAX);
                let truncated = t.tokens.truncated;
                // Tokenize requests have no embedding; they return the ids instead.
                let (embedding, ids) = match t.embedding.is_empty() {
                    true => (None, Some(Uint32Array::new(t.tokens.ids))),
                    false => (Some(Float32Array::new(t.embedding)), None),
                };
                TextOutcome { embedding, ids, tokens, truncated, error: None }
            }
            Err(e) => TextOutcome {
                embedding: None,
                ids: None,
                tokens: 0,
                truncated: false,
                error: Some(native_error(&e)),
            },
        })
        .collect();
    Event { texts: Some(texts), ..base }
}

/// The `failed` event of a panic: a bug, reported instead of crossing into JS.
fn internal_failure() -> Event {
    let error = NativeError {
        code: "ERR_INTERNAL".into(),
        message: "internal error (a bug: please report it)".into(),
    };
    Event { error: Some(error), ..event("failed") }
}

fn native_error(e: &Error) -> NativeError {
    let message = e.to_string().lines().next().unwrap_or_default().to_owned();
    NativeError { code: format!("ERR_{}", e.code()), message }
}

/// The file name without its `.gguf` extension.
fn model_name(path: &Path) -> Option<String> {
    path.file_stem().map(|s| s.to_string_lossy().into_owned())
}

/// The embedder's and the service's options from the JS ones.
fn convert(o: &NativeOptions) -> (EmbedderOptions, ServiceOptions) {
    let plan = match o.plan.as_deref() {
        Some("lean") => PlanKind::Lean,
        Some("smallest") => PlanKind::Smallest,
        _ => PlanKind::Fast,
    };
    let mode = match o.mode.as_deref() {
        Some("fast") => Mode::Fast,
        _ => Mode::Exact,
    };
    let defaults = EmbedderOptions::default();
    let embedder = EmbedderOptions {
        max_tokens: o.max_tokens.map(|n| n as usize),
        plan,
        mode,
        threads: o.threads.map_or(defaults.threads, |n| n as usize),
        memory: o.memory.map(|m| m as usize),
        normalize: o.normalize.unwrap_or(defaults.normalize),
        truncate: o.truncate.unwrap_or(defaults.truncate),
        step_target: o.step_target_ms.map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0)),
        ..defaults
    };
    let service = ServiceOptions {
        max_queue: o.max_queue.map_or(ServiceOptions::default().max_queue, |n| n as usize),
        timeout: o.timeout_ms.map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0)),
    };
    (embedder, service)
}
