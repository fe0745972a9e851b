'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

/** Format tag of the index file; a file with another tag is ignored. */
const FORMAT = 'stepembed-mcp-index/1';

/** Hex SHA-256 of a string (UTF-8): the index key of one embedded string. */
function textHash(text) {
  return crypto.createHash('sha256').update(text, 'utf8').digest('hex');
}

/**
 * What the stored embeddings depend on besides their text: the model file (real path, device and
 * inode, size, modification time) and the version of the binding that computed them.
 */
function modelKey(modelPath, bindingVersion) {
  const real = fs.realpathSync(modelPath);
  const stat = fs.statSync(real);
  return {
    model: real,
    dev: stat.dev,
    ino: stat.ino,
    size: stat.size,
    mtimeMs: stat.mtimeMs,
    binding: bindingVersion,
  };
}

/** The little-endian f32 bytes of a vector as base64. */
function encodeVector(vector) {
  return Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength).toString('base64');
}

/** A vector of `dimensions` f32 from base64, or null when the length does not match. */
function decodeVector(base64, dimensions) {
  const bytes = Buffer.from(base64, 'base64');
  if (bytes.length !== dimensions * 4) return null;
  const vector = new Float32Array(dimensions);
  new Uint8Array(vector.buffer).set(bytes);
  return vector;
}

/** SHA-256 over the entries (hash and vector bytes, in order): detects a damaged file. */
function entriesChecksum(entries) {
  const digest = crypto.createHash('sha256');
  for (const [hash, base64] of entries) digest.update(hash).update(base64);
  return digest.digest('hex');
}

/**
 * Parses an index file's text into a Map hash → embedding, or returns a reason string when the
 * file cannot be used (other format, other key, other dimensions, damaged).
 */
function parseIndex(text, key, dimensions) {
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    return `unreadable (${error.message})`;
  }
  if (parsed === null || typeof parsed !== 'object' || parsed.format !== FORMAT) return 'unknown format';
  if (JSON.stringify(parsed.key) !== JSON.stringify(key)) return 'stale (model file or binding changed)';
  if (parsed.dimensions !== dimensions) return 'stale (dimensions changed)';
  if (!Array.isArray(parsed.entries) || parsed.checksum !== entriesChecksum(parsed.entries)) {
    return 'damaged (checksum mismatch)';
  }
  const embeddings = new Map();
  for (const entry of parsed.entries) {
    const vector = Array.isArray(entry) && typeof entry[1] === 'string' ? decodeVector(entry[1], dimensions) : null;
    if (vector === null || typeof entry[0] !== 'string') return 'damaged (bad entry)';
    embeddings.set(entry[0], vector);
  }
  return embeddings;
}

/**
 * Corpus embeddings kept on disk between runs, keyed by the hash of each embedded string under a
 * model key; a file whose key differs is never reused. Saves replace the file atomically (a
 * temporary file in the same folder, then rename) and run one at a time.
 */
class EmbeddingIndex {
  #file;
  #key;
  #dimensions;
  #embeddings;
  #log;
  #saving = Promise.resolve();
  #saveQueued = false;
  #temporary;

  constructor(file, key, dimensions, embeddings, log) {
    this.#file = file;
    this.#key = key;
    this.#dimensions = dimensions;
    this.#embeddings = embeddings;
    this.#log = log;
    this.#temporary = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  }

  /**
   * Opens the index at `file` for embeddings of `dimensions` under `key`. A missing, stale or
   * damaged file yields an empty index (and a log line saying why); it is replaced on the next save.
   */
  static async open(file, key, dimensions, log) {
    let embeddings = new Map();
    try {
      const found = parseIndex(await fs.promises.readFile(file, 'utf8'), key, dimensions);
      if (typeof found === 'string') log(`index: ${file} ${found}; its embeddings are not used`);
      else embeddings = found;
    } catch (error) {
      if (error.code !== 'ENOENT') log(`index: cannot read ${file} (${error.message}); its embeddings are not used`);
    }
    return new EmbeddingIndex(file, key, dimensions, embeddings, log);
  }

  /** The stored embedding of the string with this hash, or undefined. */
  lookup(hash) {
    return this.#embeddings.get(hash);
  }

  /**
   * Writes the embeddings returned by `snapshot()` (an iterable of `{hash, embedding}`, read when
   * the write starts) and keeps them for later lookups. Calls made while a save is waiting to start
   * share it. Resolves when written; a failed write is logged, never thrown.
   */
  save(snapshot) {
    if (this.#saveQueued) return this.#saving;
    this.#saveQueued = true;
    this.#saving = this.#saving.then(async () => {
      this.#saveQueued = false;
      const entries = [];
      for (const { hash, embedding } of snapshot()) {
        this.#embeddings.set(hash, embedding);
        entries.push([hash, encodeVector(embedding)]);
      }
      const body = JSON.stringify({
        format: FORMAT,
        key: this.#key,
        dimensions: this.#dimensions,
        checksum: entriesChecksum(entries),
        entries,
      });
      try {
        await fs.promises.writeFile(this.#temporary, body);
        await fs.promises.rename(this.#temporary, this.#file);
      } catch (error) {
        this.#log(`index: cannot write ${this.#file} (${error.message})`);
      }
    });
    return this.#saving;
  }

  /** Resolves when no save is running or queued. */
  settled() {
    return this.#saving;
  }

  /** Removes a temporary file left by a save cut short (for use at exit). */
  removeTemporary() {
    fs.rmSync(this.#temporary, { force: true });
  }
}

module.exports = { EmbeddingIndex, modelKey, textHash };
