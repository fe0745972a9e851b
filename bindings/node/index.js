'use strict';
// stepembed for Node.js: text embeddings from GGUF models in-process, without stalling the event
// loop. The native addon (src/lib.rs) loads the model and runs bounded inference steps either on
// a thread of its own ('worker') or in short slices on this thread ('cooperative'); this file is
// the promise API over it (index.d.ts).

const path = require('node:path');
const { NativeEmbedder } = require(path.join(__dirname, 'stepembed.node'));

const PLANS = ['fast', 'lean', 'smallest'];
const MODES = ['exact', 'fast'];
const EXECUTIONS = ['worker', 'cooperative'];
/** Steps aim at this long in worker mode (cancellation and deadlines are seen between steps). */
const WORKER_STEP_MS = 1;
/** The longest a timer can wait: keeps the event loop alive while calls are pending. */
const KEEP_ALIVE_MS = 2 ** 31 - 1;

/** An Error with a stable `code` and a one-line message. */
function codedError(code, message, extra) {
  const error = new Error(message);
  error.code = code;
  return Object.assign(error, extra);
}

function invalid(message) {
  return codedError('ERR_INVALID_ARG', message);
}

function aborted(signal) {
  const reason = signal.reason;
  const why = reason instanceof Error ? `: ${reason.message}` : '';
  return codedError('ERR_ABORTED', `the call was aborted${why}`, { cause: reason });
}

function checkNumber(options, key, min, integer) {
  const value = options[key];
  if (value === undefined) return;
  if (typeof value !== 'number' || !(value >= min) || (integer && !Number.isInteger(value))) {
    throw invalid(`options.${key} must be ${integer ? 'an integer' : 'a number'} >= ${min}, got ${value}`);
  }
}

/** Validates the options and returns them with defaults. */
function normalizeOptions(options) {
  if (options === null || typeof options !== 'object') throw invalid('options must be an object');
  checkNumber(options, 'maxTokens', 2, true);
  checkNumber(options, 'memory', 0, true);
  checkNumber(options, 'timeoutMs', 0, false);
  checkNumber(options, 'maxQueue', 1, true);
  checkNumber(options, 'threads', 1, true);
  if (options.threads > 256) throw invalid(`options.threads must be at most 256, got ${options.threads}`);
  checkNumber(options, 'sliceMs', 0.01, false);
  for (const key of ['normalize', 'truncate']) {
    if (options[key] !== undefined && typeof options[key] !== 'boolean') {
      throw invalid(`options.${key} must be a boolean`);
    }
  }
  if (options.plan !== undefined && !PLANS.includes(options.plan)) {
    throw invalid(`options.plan must be one of ${PLANS.join(', ')}`);
  }
  if (options.mode !== undefined && !MODES.includes(options.mode)) {
    throw invalid(`options.mode must be one of ${MODES.join(', ')}`);
  }
  const execution = options.execution ?? 'worker';
  if (!EXECUTIONS.includes(execution)) {
    throw invalid(`options.execution must be one of ${EXECUTIONS.join(', ')}`);
  }
  return { ...options, execution, sliceMs: options.sliceMs ?? 2 };
}

function checkText(text) {
  if (typeof text !== 'string') throw invalid(`text must be a string, got ${typeof text}`);
}

/** Waits for `promise` to settle (its result is ignored), or for `signal` to abort. */
function settledOrAborted(promise, signal) {
  const settled = promise.then(
    () => {},
    () => {},
  );
  if (!signal) return settled;
  let onAbort;
  const abort = new Promise((resolve) => {
    onAbort = resolve;
    signal.addEventListener('abort', onAbort, { once: true });
  });
  return Promise.race([settled, abort]).finally(() => signal.removeEventListener('abort', onAbort));
}

/** The Error of a native { code, message }. */
function fromNative(error) {
  return codedError(error.code, error.message);
}

class Embedder {
  #native;
  #execution;
  #sliceMs;
  #model = null;
  #memory = { arenaBytes: 0, indexBytes: 0 };
  #loading = true;
  #failure = null;
  #closed = false;
  #settleReady;
  /** Request id → { resolve, reject, signal, onAbort }. */
  #pending = new Map();
  #sliceScheduled = false;
  #keepAlive = null;

  /**
   * Starts loading the model at `path` off the JS thread (or in slices); `ready` settles when
   * it is loaded. Throws ERR_INVALID_ARG for invalid options.
   */
  constructor(modelPath, options = {}) {
    if (typeof modelPath !== 'string') throw invalid('path must be a string');
    const o = normalizeOptions(options);
    this.#execution = o.execution;
    this.#sliceMs = o.sliceMs;
    this.ready = new Promise((resolve, reject) => {
      this.#settleReady = { resolve, reject };
    });
    // A failed load also rejects every call; an unobserved `ready` must not crash the process.
    this.ready.catch(() => {});
    const stepTargetMs = o.execution === 'worker' ? WORKER_STEP_MS : Math.min(WORKER_STEP_MS, o.sliceMs / 4);
    const native = {
      maxTokens: o.maxTokens,
      plan: o.plan,
      mode: o.mode,
      threads: o.threads,
      memory: o.memory,
      normalize: o.normalize,
      truncate: o.truncate,
      timeoutMs: o.timeoutMs,
      maxQueue: o.maxQueue,
      stepTargetMs,
    };
    if (o.execution === 'worker') {
      // The native thread must not keep this object alive, or it could never be collected.
      const self = new WeakRef(this);
      this.#native = new NativeEmbedder(modelPath, native, (event) => self.deref()?.#onEvent(event));
    } else {
      this.#native = new NativeEmbedder(modelPath, native);
      this.#scheduleSlice();
    }
    this.#updateKeepAlive();
  }

  /** Opens a model and resolves once it is ready. */
  static async open(modelPath, options) {
    const embedder = new Embedder(modelPath, options);
    await embedder.ready;
    return embedder;
  }

  /** Floats per embedding (once ready). */
  get dimensions() {
    return this.#model?.dimensions;
  }

  /** { architecture, name, context, dimensions } (once ready). */
  get model() {
    return this.#model;
  }

  async embed(text, opts) {
    checkText(text);
    const [result] = await this.#call([text], false, opts);
    if (result.error) throw fromNative(result.error);
    return result.embedding;
  }

  async embedWithInfo(text, opts) {
    checkText(text);
    const [result] = await this.#call([text], false, opts);
    if (result.error) throw fromNative(result.error);
    return { embedding: result.embedding, tokens: result.tokens, truncated: result.truncated };
  }

  /**
   * Embeds texts in shared weight passes. When some fail, rejects with the first failure; its
   * `index` says which text, and `results` holds every text's embedding or Error.
   */
  async embedBatch(texts, opts) {
    if (!Array.isArray(texts)) throw invalid('texts must be an array of strings');
    texts.forEach(checkText);
    const results = await this.#call(texts, false, opts);
    const index = results.findIndex((r) => r.error);
    if (index >= 0) {
      const all = results.map((r) => (r.error ? fromNative(r.error) : r.embedding));
      throw codedError(results[index].error.code, results[index].error.message, { index, results: all });
    }
    return results.map((r) => r.embedding);
  }

  async tokenize(text, opts) {
    checkText(text);
    const [result] = await this.#call([text], true, opts);
    if (result.error) throw fromNative(result.error);
    return result.ids;
  }

  stats() {
    const s = this.#native.stats();
    return { ...this.#memory, ...s };
  }

  /** Stops serving: pending calls reject with ERR_CLOSED and the model's memory is released. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#native.close();
    this.#memory = { arenaBytes: 0, indexBytes: 0 };
    const closed = codedError('ERR_CLOSED', 'the embedder is closed');
    if (this.#loading) {
      this.#loading = false;
      this.#settleReady.reject(closed);
    }
    for (const [id, entry] of this.#pending) {
      this.#settle(id, entry);
      entry.reject(codedError('ERR_CLOSED', 'the embedder is closed'));
    }
    this.#updateKeepAlive();
  }

  /** Submits texts once ready; resolves with the native per-text results. */
  async #call(texts, tokenize, opts) {
    const signal = opts?.signal;
    if (signal?.aborted) throw aborted(signal);
    if (this.#loading) await settledOrAborted(this.ready, signal);
    if (this.#closed) throw codedError('ERR_CLOSED', 'the embedder is closed');
    if (this.#failure) throw codedError(this.#failure.code, this.#failure.message);
    if (signal?.aborted) throw aborted(signal);
    const submitted = this.#native.submit(texts, tokenize);
    if (submitted.error) throw fromNative(submitted.error);
    const id = submitted.id;
    return new Promise((resolve, reject) => {
      const entry = { resolve, reject, signal, onAbort: null };
      if (signal) {
        entry.onAbort = () => {
          this.#settle(id, entry);
          this.#native.cancel(id);
          this.#scheduleSlice();
          this.#updateKeepAlive();
          reject(aborted(signal));
        };
        signal.addEventListener('abort', entry.onAbort, { once: true });
      }
      this.#pending.set(id, entry);
      this.#updateKeepAlive();
      this.#scheduleSlice();
    });
  }

  /** Forgets a pending call. */
  #settle(id, entry) {
    this.#pending.delete(id);
    if (entry.onAbort) entry.signal.removeEventListener('abort', entry.onAbort);
  }

  #onEvent(event) {
    switch (event.kind) {
      case 'ready':
        this.#model = event.model;
        this.#memory = { arenaBytes: event.arenaBytes, indexBytes: event.indexBytes };
        if (this.#execution === 'worker') this.#native.accountMemory(event.arenaBytes, event.indexBytes);
        this.#loading = false;
        this.#settleReady.resolve();
        break;
      case 'failed':
        this.#failure = fromNative(event.error);
        if (this.#loading) {
          this.#loading = false;
          this.#settleReady.reject(this.#failure);
        }
        for (const [id, entry] of this.#pending) {
          this.#settle(id, entry);
          entry.reject(fromNative(event.error));
        }
        break;
      case 'done': {
        const entry = this.#pending.get(event.id);
        if (!entry) break; // aborted or closed already
        this.#settle(event.id, entry);
        if (event.error) entry.reject(fromNative(event.error));
        else entry.resolve(event.texts);
        break;
      }
    }
    this.#updateKeepAlive();
  }

  /** Cooperative mode: runs one slice of steps soon (after pending I/O callbacks). */
  #scheduleSlice() {
    if (this.#execution !== 'cooperative' || this.#sliceScheduled || this.#closed) return;
    this.#sliceScheduled = true;
    setImmediate(() => this.#runSlice());
  }

  #runSlice() {
    this.#sliceScheduled = false;
    if (this.#closed) return;
    const { events, more } = this.#native.runSlice(this.#sliceMs);
    for (const event of events) this.#onEvent(event);
    if (more) this.#scheduleSlice();
  }

  /**
   * Holds the event loop open while the model loads or calls are pending (the worker's event
   * callback is weak so that an idle embedder never keeps the process alive).
   */
  #updateKeepAlive() {
    const busy = !this.#closed && (this.#loading || this.#pending.size > 0);
    if (busy && !this.#keepAlive) {
      // The callback refers to this embedder, so that it is not collected while busy.
      this.#keepAlive = setInterval(() => this.#pending, KEEP_ALIVE_MS);
    } else if (!busy && this.#keepAlive) {
      clearInterval(this.#keepAlive);
      this.#keepAlive = null;
    }
  }
}

module.exports = { Embedder };
module.exports.default = module.exports;
