//! `stepembed serve`: an HTTP server over one [`Embedder`], speaking the embedding APIs of
//! OpenAI (`POST /v1/embeddings`, `GET /v1/models`), text-embeddings-inference (`POST /embed`)
//! and Ollama (`POST /api/embed`), plus `POST /tokenize`, `GET /health` and `GET /metrics`
//! (Prometheus text).
//!
//! Requests from every connection go to one [`Inbox`]; a dedicated thread drives
//! [`service::serve`], which coalesces concurrent requests into shared weight passes. The tokio
//! reactor threads only parse, wait and write: no inference runs on them.
//!
//! Breakers, each answered with an OpenAI-style error object
//! `{"error":{"message","type","param","code"}}`:
//! - more than `max_queue` work requests in flight: `429` at once, before the body is read;
//! - a body over `max_body_bytes`: `413`;
//! - a request not finished `timeout` after it was queued: `504` (the server, not the client,
//!   was too slow; its work is dropped);
//! - an API key configured and a request without `Authorization: Bearer KEY`: `401` (`/health`
//!   stays open);
//! - malformed JSON, wrong types, empty input, `dimensions` out of range, a text longer than the
//!   model's context where the API does not truncate: `400` (`413` on `/embed`, as
//!   text-embeddings-inference does).
//!
//! Memory is the embedder's plan plus at most `max_queue` request bodies, whatever the number of
//! clients. Ctrl-C or SIGTERM stops accepting connections, finishes the requests in flight,
//! then stops the embedder thread.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::{oneshot, Semaphore};

use crate::embedder::{Embedder, EmbedderOptions};
use crate::error::Error;
use crate::service::{self, Completion, Embedded, Inbox, Item, ServiceOptions, Work};
use stepembed_core::engine::Mode;

/// `stepembed serve`'s command line.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The GGUF model file
    #[arg(value_name = "MODEL.gguf")]
    pub model: PathBuf,
    /// Address to listen on (loopback only by default)
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port, printed on start)
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Most tokens per text and per shared weight pass [default: the model's context]
    #[arg(long, value_name = "N", value_parser = positive())]
    pub max_batch_tokens: Option<usize>,
    /// Most texts per shared weight pass
    #[arg(long, value_name = "N", value_parser = positive(), default_value_t = 16)]
    pub max_batch_texts: usize,
    /// HTTP reactor threads (they only parse, wait and write; inference runs on --threads)
    #[arg(long, value_name = "N", value_parser = positive(), default_value_t = 2)]
    pub threads_http: usize,
    /// Inference threads [default: the available cores]: queued texts are taken up to
    /// --max-batch-texts per thread, one job per thread at once (each with an arena of its
    /// own); a lone job has each step's products split by rows over them
    #[arg(long, value_name = "N", value_parser = positive())]
    pub threads: Option<usize>,
    /// Require `Authorization: Bearer KEY` on every endpoint but /health
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Most time a request may take from being queued, in ms (0: none); past it: 504
    #[arg(long, value_name = "N", default_value_t = 60_000)]
    pub timeout_ms: u64,
    /// Most work requests in flight; beyond it: 429
    #[arg(long, value_name = "N", value_parser = positive(), default_value_t = 64)]
    pub max_queue: usize,
    /// Largest request body in bytes; beyond it: 413
    #[arg(long, value_name = "N", value_parser = positive(), default_value_t = 2 << 20)]
    pub max_body_bytes: usize,
    /// How the weight matrix products are computed
    #[arg(long, value_enum, default_value_t = crate::cli::ModeArg::Exact)]
    pub mode: crate::cli::ModeArg,
}

/// Parses a positive count.
fn positive() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}

/// Everything [`run`] and [`Server::start`] need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The GGUF model file.
    pub model: PathBuf,
    /// The address to listen on.
    pub addr: SocketAddr,
    /// Most tokens per text and per job (default: the model's context).
    pub max_batch_tokens: Option<usize>,
    /// Most texts per job.
    pub max_batch_texts: usize,
    /// HTTP reactor threads.
    pub threads_http: usize,
    /// Inference threads ([`EmbedderOptions::threads`]: jobs spread over them, or a lone job's
    /// products split by rows).
    pub threads: usize,
    /// The bearer token required, if any.
    pub api_key: Option<String>,
    /// Most time a request may take from being queued.
    pub timeout: Option<Duration>,
    /// Most work requests in flight.
    pub max_queue: usize,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// How the weight matrix products are computed ([`EmbedderOptions::mode`]).
    pub mode: Mode,
}

impl ServerConfig {
    /// The defaults of `stepembed serve` for `model` on `addr`.
    pub fn new(model: impl Into<PathBuf>, addr: SocketAddr) -> Self {
        ServerConfig {
            model: model.into(),
            addr,
            max_batch_tokens: None,
            max_batch_texts: 16,
            threads_http: 2,
            threads: crate::threads::Threads::available(),
            api_key: None,
            timeout: Some(Duration::from_secs(60)),
            max_queue: 64,
            max_body_bytes: 2 << 20,
            mode: Mode::Exact,
        }
    }
}

impl TryFrom<ServeArgs> for ServerConfig {
    type Error = ServerError;

    fn try_from(args: ServeArgs) -> Result<Self, ServerError> {
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(args.host.as_str(), args.port))
            .map_err(ServerError::Bind)?
            .next()
            .ok_or_else(|| ServerError::Bind(std::io::Error::other("no address to listen on")))?;
        Ok(ServerConfig {
            model: args.model,
            addr,
            max_batch_tokens: args.max_batch_tokens,
            max_batch_texts: args.max_batch_texts,
            threads_http: args.threads_http,
            threads: args.threads.unwrap_or_else(crate::threads::Threads::available),
            api_key: args.api_key,
            timeout: (args.timeout_ms > 0).then(|| Duration::from_millis(args.timeout_ms)),
            max_queue: args.max_queue,
            max_body_bytes: args.max_body_bytes,
            mode: args.mode.into(),
        })
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug)]
pub enum ServerError {
    /// The model could not be opened or planned.
    Model(Error),
    /// The address could not be resolved or bound.
    Bind(std::io::Error),
    /// The runtime or a thread could not be started, or the server failed while running.
    Runtime(std::io::Error),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Model(e) => write!(f, "{e}"),
            ServerError::Bind(e) => write!(f, "cannot listen: {e}"),
            ServerError::Runtime(e) => write!(f, "server: {e}"),
        }
    }
}

impl std::error::Error for ServerError {}

/// Serves `config` until ctrl-C or SIGTERM, printing the bound address on stderr; in-flight
/// requests are finished before it returns.
pub fn run(config: ServerConfig) -> Result<(), ServerError> {
    let server = Server::start(config)?;
    // A closed or full stderr must not stop the server.
    let _ = writeln!(std::io::stderr(), "stepembed: listening on http://{}", server.addr());
    server.wait_for_signal()
}

/// A running server (see [`Server::start`]).
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    http: Option<JoinHandle<std::io::Result<()>>>,
    inference: Option<JoinHandle<()>>,
    inbox: Inbox,
}

impl Server {
    /// Opens the model, starts the inference thread and the HTTP server, and returns once it
    /// listens. It stops on [`Server::shutdown`], on drop, or (with
    /// [`Server::wait_for_signal`]) on ctrl-C/SIGTERM.
    pub fn start(config: ServerConfig) -> Result<Server, ServerError> {
        let options = EmbedderOptions {
            max_tokens: config.max_batch_tokens,
            max_texts: config.max_batch_texts,
            threads: config.threads,
            // Normalized here, after `dimensions` cuts a vector, and skipped when a caller asks.
            normalize: false,
            // Cut texts are flagged; each API decides whether that is an error.
            truncate: true,
            mode: config.mode,
            ..EmbedderOptions::default()
        };
        let embedder = Embedder::open_with(&config.model, options).map_err(ServerError::Model)?;
        let model = ModelInfo {
            name: config.model.file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().into()),
            dims: embedder.embedding_len(),
            max_tokens: embedder.plan().limits().max_tokens,
            memory_bytes: embedder.memory_bytes(),
        };
        let inbox = Inbox::new(ServiceOptions { max_queue: config.max_queue, timeout: config.timeout });
        let backend = Backend { inbox: inbox.clone(), pending: Arc::default() };
        let inference = backend.spawn(embedder).map_err(ServerError::Runtime)?;

        let listener = std::net::TcpListener::bind(config.addr).map_err(ServerError::Bind)?;
        listener.set_nonblocking(true).map_err(ServerError::Bind)?;
        let addr = listener.local_addr().map_err(ServerError::Bind)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads_http.max(1))
            .enable_io()
            .build()
            .map_err(ServerError::Runtime)?;
        let state = Arc::new(App {
            backend,
            model,
            metrics: Metrics::default(),
            api_key: config.api_key,
            permits: Arc::new(Semaphore::new(config.max_queue.max(1))),
            max_queue: config.max_queue.max(1),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let http = std::thread::Builder::new()
            .name("stepembed-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    let app = router(state, config.max_body_bytes);
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            let _ = stopped.await;
                        })
                        .await
                })
            })
            .map_err(ServerError::Runtime)?;
        Ok(Server { addr, stop: Some(stop), http: Some(http), inference: Some(inference), inbox })
    }

    /// The address it listens on (the real port when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections, finishes the requests in flight, then stops the inference
    /// thread.
    pub fn shutdown(mut self) -> Result<(), ServerError> {
        self.stop_and_join()
    }

    /// Runs until ctrl-C or SIGTERM, then [`Server::shutdown`].
    pub fn wait_for_signal(self) -> Result<(), ServerError> {
        let signals = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(ServerError::Runtime)?;
        signals.block_on(shutdown_signal()).map_err(ServerError::Runtime)?;
        self.shutdown()
    }

    fn stop_and_join(&mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let served = match self.http.take().map(JoinHandle::join) {
            Some(Ok(result)) => result.map_err(ServerError::Runtime),
            Some(Err(_)) => Err(ServerError::Runtime(std::io::Error::other("the HTTP thread panicked"))),
            None => Ok(()),
        };
        self.inbox.close();
        if let Some(Err(_)) = self.inference.take().map(JoinHandle::join) {
            return Err(ServerError::Runtime(std::io::Error::other("the inference thread panicked")));
        }
        served
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        futures_lite::future::or(tokio::signal::ctrl_c(), async {
            term.recv().await;
            Ok(())
        })
        .await
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await
}

/// What the endpoints tell about the model.
#[derive(Debug)]
struct ModelInfo {
    /// The file's stem, listed by `/v1/models`.
    name: String,
    dims: usize,
    max_tokens: usize,
    memory_bytes: usize,
}

/// What a request's texts came back as: every text's result, or the request's error.
type Outcome = crate::Result<Vec<crate::Result<Embedded>>>;

/// The embedding backend of the endpoints: the [`Inbox`] of a [`service::serve`] loop on a
/// thread of its own, and the requests waiting for their completion.
#[derive(Debug)]
struct Backend {
    inbox: Inbox,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Outcome>>>>,
}

impl Backend {
    /// Starts the thread that serves the inbox with `embedder` until the inbox is closed.
    fn spawn(&self, mut embedder: Embedder) -> std::io::Result<JoinHandle<()>> {
        let (inbox, pending) = (self.inbox.clone(), Arc::clone(&self.pending));
        std::thread::Builder::new().name("stepembed-inference".into()).spawn(move || {
            let deliver = |done: Completion| {
                if let Some(reply) = lock(&pending).remove(&done.id) {
                    // The caller may have gone away; its result is dropped.
                    let _ = reply.send(done.result);
                }
            };
            futures_lite::future::block_on(service::serve(&mut embedder, &inbox, deliver));
        })
    }

    /// Runs `work` on `texts`; the request is cancelled if the returned future is dropped
    /// (the client went away) before it completes.
    async fn run(&self, work: Work, texts: Vec<Item>) -> Outcome {
        let (reply, completion) = oneshot::channel();
        let id = {
            // Held across the submission so that the completion cannot arrive before its
            // receiver is registered.
            let mut pending = lock(&self.pending);
            let id = self.inbox.submit_items(work, texts)?;
            pending.insert(id, reply);
            id
        };
        let mut guard = CancelOnDrop { backend: self, id: Some(id) };
        let outcome = completion.await.unwrap_or(Err(Error::Closed));
        guard.id = None;
        outcome
    }
}

/// Cancels request `id` of `backend` when dropped while still set.
struct CancelOnDrop<'b> {
    backend: &'b Backend,
    id: Option<u64>,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            lock(&self.backend.pending).remove(&id);
            self.backend.inbox.cancel(id);
        }
    }
}

/// Locks `mutex`, going on after a panic elsewhere (the maps stay consistent per operation).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The state every handler shares.
#[derive(Debug)]
struct App {
    backend: Backend,
    model: ModelInfo,
    metrics: Metrics,
    api_key: Option<String>,
    /// One per work request in flight.
    permits: Arc<Semaphore>,
    max_queue: usize,
}

/// The routes, with the body limit, the queue limit on the work routes, the API key check and
/// the request metrics.
fn router(state: Arc<App>, max_body_bytes: usize) -> Router {
    let work = Router::new()
        .route("/v1/embeddings", post(openai_embeddings))
        .route("/embed", post(tei_embed))
        .route("/api/embed", post(ollama_embed))
        .route("/tokenize", post(tokenize))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), admit));
    let protected = Router::new()
        .merge(work)
        .route("/v1/models", get(models))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), authorize));
    Router::new()
        .merge(protected)
        .route("/health", get(health))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&state), measure))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// An OpenAI-style error response.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl ApiError {
    /// A 400 about `param`.
    fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param),
            code: None,
        }
    }

    fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}
        });
        (self.status, json_headers(), body.to_string()).into_response()
    }
}

/// A request's error from the service.
impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let (status, kind, code) = match e {
            Error::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout_error", "timeout"),
            Error::Busy { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "queue_full"),
            Error::Closed | Error::Aborted => {
                (StatusCode::SERVICE_UNAVAILABLE, "server_error", "shutting_down")
            }
            ref other if other.code() == "INVALID_ARG" || other.code() == "TOO_LONG" => {
                (StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_input")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal"),
        };
        ApiError { status, message: e.to_string(), kind, param: None, code: Some(code) }
    }
}

fn json_headers() -> [(header::HeaderName, &'static str); 1] {
    [(header::CONTENT_TYPE, "application/json")]
}

/// A 200 response with a JSON `body`.
fn json_response(body: String) -> Response {
    (StatusCode::OK, json_headers(), body).into_response()
}

/// Parses a request body as a JSON object; an oversized body is 413, anything else malformed 400.
fn parse_body(body: Result<Bytes, BytesRejection>) -> Result<serde_json::Map<String, Value>, ApiError> {
    let bytes = body.map_err(|rejection| {
        let too_large = rejection.status() == StatusCode::PAYLOAD_TOO_LARGE;
        ApiError::invalid("body", rejection.body_text())
            .with_status(rejection.status())
            .with_code(if too_large { "body_too_large" } else { "invalid_body" })
    })?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ApiError::invalid("body", "the body must be a JSON object").with_code("invalid_json")),
        Err(e) => Err(ApiError::invalid("body", format!("malformed JSON: {e}")).with_code("invalid_json")),
    }
}

/// Most texts one request may hold (OpenAI's limit).
const MAX_INPUTS: usize = 2048;

/// The texts of `value` (a string or a non-empty array of non-empty strings), named `param`.
fn texts(value: Option<&Value>, param: &'static str) -> Result<Vec<String>, ApiError> {
    let value = value.ok_or_else(|| ApiError::invalid(param, format!("'{param}' is required")))?;
    let texts = match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if items.is_empty() => {
            return Err(ApiError::invalid(param, format!("'{param}' must not be empty")));
        }
        Value::Array(items) if items.iter().all(|v| v.is_number() || v.is_array()) => {
            return Err(ApiError::invalid(
                param,
                format!("'{param}' must be a string or an array of strings"),
            ));
        }
        Value::Array(items) => {
            items.iter().map(|item| item.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>().ok_or_else(
                || ApiError::invalid(param, format!("'{param}' must be a string or an array of strings")),
            )?
        }
        _ => {
            return Err(ApiError::invalid(
                param,
                format!("'{param}' must be a string or an array of strings"),
            ))
        }
    };
    if texts.len() > MAX_INPUTS {
        return Err(ApiError::invalid(param, format!("'{param}' has more than {MAX_INPUTS} texts")));
    }
    if texts.iter().any(String::is_empty) {
        return Err(ApiError::invalid(param, format!("'{param}' must not contain empty strings")));
    }
    Ok(texts)
}

/// The inputs of an OpenAI request: what [`texts`] accepts, or token ids — an array of integers
/// (one input) or an array of such arrays — embedded as given.
fn inputs(value: Option<&Value>, param: &'static str) -> Result<Vec<Item>, ApiError> {
    let ids = |v: &Value| -> Option<Vec<u32>> {
        v.as_array()?.iter().map(|n| n.as_u64().and_then(|n| u32::try_from(n).ok())).collect()
    };
    let bad_ids =
        || ApiError::invalid(param, format!("token ids in '{param}' must be non-empty arrays of u32"));
    match value {
        Some(v @ Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_number) => {
            Ok(vec![Item::Ids(ids(v).filter(|i| !i.is_empty()).ok_or_else(bad_ids)?)])
        }
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_array) => {
            if items.len() > MAX_INPUTS {
                return Err(ApiError::invalid(param, format!("'{param}' has more than {MAX_INPUTS} inputs")));
            }
            items
                .iter()
                .map(|v| ids(v).filter(|i| !i.is_empty()).map(Item::Ids).ok_or_else(bad_ids))
                .collect()
        }
        other => Ok(texts(other, param)?.into_iter().map(Item::Text).collect()),
    }
}

/// Texts as service items.
fn text_items(texts: Vec<String>) -> Vec<Item> {
    texts.into_iter().map(Item::Text).collect()
}

/// An optional boolean field.
fn flag(body: &serde_json::Map<String, Value>, param: &'static str, default: bool) -> Result<bool, ApiError> {
    match body.get(param) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid(param, format!("'{param}' must be a boolean"))),
    }
}

/// The `model` field echoed back (any name is accepted), or the served model's name.
fn model_name(body: &serde_json::Map<String, Value>, app: &App) -> Result<String, ApiError> {
    match body.get("model") {
        None | Some(Value::Null) => Ok(app.model.name.clone()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::invalid("model", "'model' must be a string")),
    }
}

/// How a request's vectors are finished.
#[derive(Debug, Clone, Copy)]
struct Finish {
    /// Keep the first this many floats (Matryoshka).
    dims: Option<usize>,
    normalize: bool,
    /// A text cut at the context is an error with this status (none: truncation is fine).
    too_long: Option<StatusCode>,
}

/// Embeds `texts` and finishes every vector by `finish`; returns them with the token count.
async fn embed(app: &App, texts: Vec<Item>, finish: Finish) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    let results = app.backend.run(Work::Embed, texts).await?;
    let mut vectors = Vec::with_capacity(results.len());
    let mut tokens = 0;
    for (index, result) in results.into_iter().enumerate() {
        let embedded =
            result.map_err(|e| ApiError { message: format!("input {index}: {e}"), ..ApiError::from(e) })?;
        if let (true, Some(status)) = (embedded.tokens.truncated, finish.too_long) {
            let message = format!("input {index} has more than the model's {} tokens", app.model.max_tokens);
            return Err(ApiError::invalid("input", message)
                .with_code("context_length_exceeded")
                .with_status(status));
        }
        tokens += embedded.tokens.ids.len();
        let mut vector = embedded.embedding;
        vector.truncate(finish.dims.unwrap_or(usize::MAX));
        if finish.normalize {
            // The core's own normalization, so full-length vectors equal `Embedder::embed`'s.
            stepembed_core::engine::l2_normalize(&mut vector);
        }
        vectors.push(vector);
    }
    app.metrics.tokens.fetch_add(tokens as u64, Ordering::Relaxed);
    Ok((vectors, tokens))
}

/// `vector` as JSON: floats (shortest round-trip form) or, for base64, its little-endian f32
/// bytes encoded as a string.
fn vector_json(vector: &[f32], base64: bool) -> String {
    if base64 {
        let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
        return Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)).to_string();
    }
    serde_json::to_string(vector).unwrap_or_else(|_| "[]".into())
}

/// `vectors` as a JSON array of float arrays.
fn vectors_json(vectors: &[Vec<f32>]) -> String {
    let items: Vec<String> = vectors.iter().map(|v| vector_json(v, false)).collect();
    format!("[{}]", items.join(","))
}

/// `POST /v1/embeddings`.
async fn openai_embeddings(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = parse_body(body)?;
    let texts = inputs(body.get("input"), "input")?;
    let model = model_name(&body, &app)?;
    let base64 = match body.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s == "float" => false,
        Some(Value::String(s)) if s == "base64" => true,
        Some(_) => {
            return Err(ApiError::invalid(
                "encoding_format",
                "'encoding_format' must be \"float\" or \"base64\"",
            ))
        }
    };
    let dims = match body.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64().and_then(|d| usize::try_from(d).ok()) {
            Some(d) if (1..=app.model.dims).contains(&d) => Some(d),
            _ => {
                let message = format!("'dimensions' must be an integer from 1 to {}", app.model.dims);
                return Err(ApiError::invalid("dimensions", message));
            }
        },
    };
    let finish = Finish { dims, normalize: true, too_long: Some(StatusCode::BAD_REQUEST) };
    let (vectors, tokens) = embed(&app, texts, finish).await?;
    let data: Vec<String> = vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            format!(r#"{{"object":"embedding","index":{index},"embedding":{}}}"#, vector_json(v, base64))
        })
        .collect();
    Ok(json_response(format!(
        r#"{{"object":"list","data":[{}],"model":{},"usage":{{"prompt_tokens":{tokens},"total_tokens":{tokens}}}}}"#,
        data.join(","),
        Value::String(model)
    )))
}

/// `POST /embed` (text-embeddings-inference): `{"inputs", "normalize"?, "truncate"?}` →
/// `[[f32…]…]`.
async fn tei_embed(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = parse_body(body)?;
    let texts = texts(body.get("inputs"), "inputs")?;
    let normalize = flag(&body, "normalize", true)?;
    let truncate = flag(&body, "truncate", false)?;
    let too_long = (!truncate).then_some(StatusCode::PAYLOAD_TOO_LARGE);
    let (vectors, _) = embed(&app, text_items(texts), Finish { dims: None, normalize, too_long }).await?;
    Ok(json_response(vectors_json(&vectors)))
}

/// `POST /api/embed` (Ollama): `{"model", "input", "truncate"?}` → `{"model", "embeddings"}`.
async fn ollama_embed(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = parse_body(body)?;
    let texts = texts(body.get("input"), "input")?;
    let model = model_name(&body, &app)?;
    let truncate = flag(&body, "truncate", true)?;
    let too_long = (!truncate).then_some(StatusCode::BAD_REQUEST);
    let (vectors, tokens) =
        embed(&app, text_items(texts), Finish { dims: None, normalize: true, too_long }).await?;
    Ok(json_response(format!(
        r#"{{"model":{},"embeddings":{},"prompt_eval_count":{tokens}}}"#,
        Value::String(model),
        vectors_json(&vectors)
    )))
}

/// `POST /tokenize`: `{"content"|"input": str|[str]}` → `{"tokens": [ids]}` for a string,
/// `{"tokens": [[ids]…]}` for an array; [CLS] and [SEP] included, cut at the context.
async fn tokenize(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = parse_body(body)?;
    let (value, param) = match body.get("content") {
        Some(v) => (v, "content"),
        None => (body.get("input").unwrap_or(&Value::Null), "input"),
    };
    let single = value.is_string();
    let texts = texts((!value.is_null()).then_some(value), param)?;
    let results = app.backend.run(Work::Tokenize, text_items(texts)).await?;
    let ids = results.into_iter().map(|r| r.map(|e| e.tokens.ids)).collect::<crate::Result<Vec<_>>>()?;
    let tokens = match (single, ids.as_slice()) {
        (true, [one]) => json!(one),
        _ => json!(ids),
    };
    Ok(json_response(json!({ "tokens": tokens }).to_string()))
}

/// `GET /v1/models`: the one model served.
async fn models(State(app): State<Arc<App>>) -> Response {
    let model = json!({"id": app.model.name, "object": "model", "created": 0, "owned_by": "stepembed"});
    json_response(json!({"object": "list", "data": [model]}).to_string())
}

/// `GET /health`.
async fn health() -> Response {
    json_response(json!({"status": "ok"}).to_string())
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: "no such endpoint".into(),
        kind: "invalid_request_error",
        param: None,
        code: Some("not_found"),
    }
}

/// Refuses a work request at once with 429 when `max_queue` are in flight.
async fn admit(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let Ok(_permit) = Arc::clone(&app.permits).try_acquire_owned() else {
        return ApiError::from(Error::Busy { max_queue: app.max_queue }).into_response();
    };
    next.run(request).await
}

/// Refuses a request without the configured bearer token with 401.
async fn authorize(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if let Some(key) = &app.api_key {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), key.as_bytes())) {
            return ApiError {
                status: StatusCode::UNAUTHORIZED,
                message: "missing or wrong API key (Authorization: Bearer KEY)".into(),
                kind: "invalid_request_error",
                param: None,
                code: Some("invalid_api_key"),
            }
            .into_response();
        }
    }
    next.run(request).await
}

/// Whether `a == b`, in a time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The paths served, as `/metrics` labels them (any other is `other`).
const ENDPOINTS: [&str; 7] =
    ["/v1/embeddings", "/embed", "/api/embed", "/tokenize", "/v1/models", "/metrics", "/health"];

/// Counts every request by endpoint and status, and times it.
async fn measure(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let endpoint = ENDPOINTS.iter().copied().find(|&e| e == path).unwrap_or("other");
    let start = Instant::now();
    let response = next.run(request).await;
    app.metrics.record(endpoint, response.status().as_u16(), start.elapsed());
    response
}

/// Upper bounds of the latency histogram's buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The counters `/metrics` shows.
#[derive(Debug, Default)]
struct Metrics {
    /// Requests by (endpoint, status).
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Tokens embedded.
    tokens: AtomicU64,
    latency: Mutex<Histogram>,
}

/// A cumulative-on-output latency histogram.
#[derive(Debug, Default)]
struct Histogram {
    /// Requests per bucket of [`LATENCY_BUCKETS`] (not cumulative), the last one for slower.
    counts: [u64; LATENCY_BUCKETS.len() + 1],
    sum: f64,
}

impl Metrics {
    fn record(&self, endpoint: &'static str, status: u16, took: Duration) {
        *lock(&self.requests).entry((endpoint, status)).or_default() += 1;
        let seconds = took.as_secs_f64();
        let bucket = LATENCY_BUCKETS.iter().position(|&b| seconds <= b).unwrap_or(LATENCY_BUCKETS.len());
        let mut latency = lock(&self.latency);
        if let Some(count) = latency.counts.get_mut(bucket) {
            *count += 1;
        }
        latency.sum += seconds;
    }
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(State(app): State<Arc<App>>) -> Response {
    use std::fmt::Write as _;
    let mut out = String::new();
    let stats = app.backend.inbox.stats();
    out.push_str("# HELP stepembed_requests_total HTTP requests by endpoint and status.\n");
    out.push_str("# TYPE stepembed_requests_total counter\n");
    for ((endpoint, status), n) in lock(&app.metrics.requests).iter() {
        let _ = writeln!(out, "stepembed_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}");
    }
    let latency = lock(&app.metrics.latency);
    out.push_str("# HELP stepembed_request_duration_seconds Time from request to response.\n");
    out.push_str("# TYPE stepembed_request_duration_seconds histogram\n");
    let mut cumulative = 0;
    for (bound, count) in LATENCY_BUCKETS.iter().zip(&latency.counts) {
        cumulative += count;
        let _ = writeln!(out, "stepembed_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let total: u64 = latency.counts.iter().sum();
    let _ = writeln!(out, "stepembed_request_duration_seconds_bucket{{le=\"+Inf\"}} {total}");
    let _ = writeln!(out, "stepembed_request_duration_seconds_sum {}", latency.sum);
    let _ = writeln!(out, "stepembed_request_duration_seconds_count {total}");
    drop(latency);
    let gauges = [
        ("tokens_total", "counter", "Tokens embedded.", app.metrics.tokens.load(Ordering::Relaxed)),
        ("queue_depth", "gauge", "Requests queued or running.", stats.outstanding as u64),
        ("jobs_total", "counter", "Shared weight passes run.", stats.jobs),
        ("steps_total", "counter", "Job steps run.", stats.steps),
        (
            "arena_bytes",
            "gauge",
            "Bytes of the arena and vocab index (the plan).",
            app.model.memory_bytes as u64,
        ),
    ];
    for (name, kind, help, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP stepembed_{name} {help}\n# TYPE stepembed_{name} {kind}\nstepembed_{name} {value}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP stepembed_step_seconds_max The longest job step.\n# TYPE stepembed_step_seconds_max gauge\nstepembed_step_seconds_max {}",
        stats.max_step.as_secs_f64()
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_little_endian_f32() {
        let encoded = vector_json(&[1.0, -2.5], true);
        let text: String = serde_json::from_str(&encoded).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD.decode(text).unwrap();
        assert_eq!(bytes, [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat());
    }

    #[test]
    fn texts_accept_strings_and_refuse_the_rest() {
        assert_eq!(texts(Some(&json!("a")), "input").unwrap(), ["a"]);
        assert_eq!(texts(Some(&json!(["a", "b"])), "input").unwrap(), ["a", "b"]);
        for bad in [json!([]), json!(""), json!(["a", ""]), json!(3), json!(["a", 1]), json!({"a": 1})] {
            assert_eq!(texts(Some(&bad), "input").unwrap_err().status, StatusCode::BAD_REQUEST, "{bad}");
        }
        assert_eq!(texts(Some(&json!([1, 2])), "input").unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(inputs(Some(&json!([1, 2])), "input").unwrap(), [Item::Ids(vec![1, 2])]);
        assert_eq!(
            inputs(Some(&json!([[1], [2, 3]])), "input").unwrap(),
            [Item::Ids(vec![1]), Item::Ids(vec![2, 3])]
        );
        assert_eq!(inputs(Some(&json!(["a"])), "input").unwrap(), [Item::Text("a".into())]);
        for bad in [json!([[]]), json!([-1]), json!([1.5]), json!([[1], "a"]), json!([1u64 << 40])] {
            assert!(inputs(Some(&bad), "input").is_err(), "{bad}");
        }
        assert!(texts(None, "input").is_err());
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"key", b"key"));
        assert!(!constant_time_eq(b"key", b"kez"));
        assert!(!constant_time_eq(b"key", b"ke"));
    }
}
