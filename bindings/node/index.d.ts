/** Where inference steps run: a native thread owned by the embedder, or the JS thread in slices. */
export type Execution = 'worker' | 'cooperative';

export interface EmbedderOptions {
  /** Most tokens per text (default: the model's context). */
  maxTokens?: number;
  plan?: 'fast' | 'lean' | 'smallest';
  /**
   * How weight matrix products are computed (default 'exact'): 'fast' multiplies int8
   * activations with the quantized weights (faster on long texts, a larger arena, cosine to
   * the exact result about 0.999–0.99999).
   */
  mode?: 'exact' | 'fast';
  /**
   * Threads to embed on, the stepping one included (default: the available cores). Queued
   * texts are taken up to 16 per thread and their jobs run one per thread at once
   * (each with an arena of its own); a lone job has its matrix products split by weight rows.
   * Results are the same bits for any count.
   */
  threads?: number;
  /** Byte cap for arena + vocab index: the fastest plan that fits, or ERR_MEMORY. */
  memory?: number;
  /** Scale embeddings to unit length (default true). */
  normalize?: boolean;
  /** Cut long texts (default true); false → ERR_TOO_LONG for long texts. */
  truncate?: boolean;
  /** Per-call deadline in ms (default none) → ERR_TIMEOUT. */
  timeoutMs?: number;
  /** Most unfinished calls (default 1024); beyond it calls reject at once with ERR_BUSY. */
  maxQueue?: number;
  /** Default 'worker'. */
  execution?: Execution;
  /** Cooperative mode: most ms of steps per event-loop turn (default 2). */
  sliceMs?: number;
}

export interface ModelInfo {
  architecture: string;
  /** The model file's name without `.gguf`. */
  name: string | null;
  context: number;
  dimensions: number;
}

export interface EmbedInfo {
  embedding: Float32Array;
  tokens: number;
  truncated: boolean;
}

export interface CallOptions {
  signal?: AbortSignal;
}

export interface EmbedderStats {
  /** Every arena: with several threads, one per thread that batch jobs are spread over. */
  arenaBytes: number;
  indexBytes: number;
  /** Passes over the weights (concurrent calls share them). */
  passes: number;
  /** Calls completed. */
  jobsDone: number;
  /** Calls queued or running. */
  jobsQueued: number;
  steps: number;
  maxStepUs: number;
  p99StepUs: number;
}

export type ErrorCode =
  | 'ERR_MALFORMED'
  | 'ERR_UNSUPPORTED'
  | 'ERR_IO'
  | 'ERR_TOO_LONG'
  | 'ERR_TIMEOUT'
  | 'ERR_ABORTED'
  | 'ERR_BUSY'
  | 'ERR_MEMORY'
  | 'ERR_NON_FINITE'
  | 'ERR_CLOSED'
  | 'ERR_INVALID_ARG'
  | 'ERR_INTERNAL';

/** Every rejection: an Error with a stable code and a one-line message. */
export interface StepembedError extends Error {
  code: ErrorCode;
}

/** An embedBatch rejection: which text failed first, and every text's result. */
export interface BatchError extends StepembedError {
  index: number;
  results: Array<Float32Array | StepembedError>;
}

export class Embedder {
  /** Starts loading off the JS thread; does at most ~1 ms of work here. */
  constructor(path: string, options?: EmbedderOptions);
  /** Resolves when ready. */
  static open(path: string, options?: EmbedderOptions): Promise<Embedder>;
  /** Rejects (with a coded Error) when the file fails to load. */
  readonly ready: Promise<void>;
  /** Valid once ready. */
  readonly dimensions: number;
  /** Valid once ready. */
  readonly model: ModelInfo;
  embed(text: string, opts?: CallOptions): Promise<Float32Array>;
  /** Rejects with a BatchError when a text fails. */
  embedBatch(texts: string[], opts?: CallOptions): Promise<Float32Array[]>;
  embedWithInfo(text: string, opts?: CallOptions): Promise<EmbedInfo>;
  tokenize(text: string, opts?: CallOptions): Promise<Uint32Array>;
  stats(): EmbedderStats;
  /** Pending calls reject with ERR_CLOSED; memory is released. */
  close(): void;
}

declare const stepembed: { Embedder: typeof Embedder };
export default stepembed;
