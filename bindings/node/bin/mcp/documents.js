'use strict';

/** Euclidean norm of a vector. */
function norm(vector) {
  let sum = 0;
  for (let i = 0; i < vector.length; i++) sum += vector[i] * vector[i];
  return Math.sqrt(sum);
}

/** Dot product of two vectors of the same length. */
function dot(a, b) {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i] * b[i];
  return sum;
}

/** Cosine similarity of two vectors of the same length; 0 when either is all zeros. */
function cosine(a, b) {
  const denominator = norm(a) * norm(b);
  return denominator > 0 ? dot(a, b) / denominator : 0;
}

/**
 * The documents the server searches: id → text and embedding, in insertion order.
 * Adding a document with an id already present replaces it in place.
 */
class DocumentStore {
  #documents = new Map();

  /** Number of documents held. */
  get size() {
    return this.#documents.size;
  }

  /**
   * Stores `{id, text, hash, embedding}` (hash: the index key of the embedded string).
   * Returns true when a document with that id was replaced.
   */
  upsert({ id, text, hash, embedding }) {
    const replaced = this.#documents.has(id);
    this.#documents.set(id, { id, text, hash, embedding, norm: norm(embedding) });
    return replaced;
  }

  /** Every stored document, in insertion order. */
  documents() {
    return this.#documents.values();
  }

  /**
   * The `k` documents nearest to `query` by cosine similarity, best first (ties keep insertion
   * order): `[{id, text, score}]`. A zero vector on either side scores 0.
   */
  search(query, k) {
    const queryNorm = norm(query);
    const scored = [];
    for (const document of this.#documents.values()) {
      const denominator = queryNorm * document.norm;
      const score = denominator > 0 ? dot(query, document.embedding) / denominator : 0;
      scored.push({ id: document.id, text: document.text, score });
    }
    // Array.prototype.sort is stable, so equal scores stay in insertion order.
    scored.sort((a, b) => b.score - a.score);
    return scored.slice(0, k);
  }
}

module.exports = { DocumentStore, cosine };
