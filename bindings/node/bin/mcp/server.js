'use strict';

const { McpServer } = require('@modelcontextprotocol/sdk/server/mcp.js');
const { z } = require('zod');
const { DocumentStore } = require('./documents.js');
const { EmbeddingIndex, textHash } = require('./embedding-index.js');

/** Texts per `embedBatch` call: long inputs go through the embedder in slices of this many. */
const EMBED_BATCH = 64;

/** Results `search` returns when the call gives no `k`. */
const DEFAULT_K = 5;

/** One line for an error: `CODE: message` for the embedder's coded errors, else the message. */
function describeError(error) {
  const message = error instanceof Error ? error.message : String(error);
  const code = error && typeof error.code === 'string' ? error.code : null;
  return code && !message.startsWith(code) ? `${code}: ${message}` : message;
}

/** A successful tool result: the object as structured content and as JSON text. */
function toolResult(structured) {
  return { structuredContent: structured, content: [{ type: 'text', text: JSON.stringify(structured) }] };
}

/** Wraps a tool handler so that any error becomes a tool error result (isError) instead of a crash. */
function guarded(handler) {
  return async (args) => {
    try {
      return await handler(args);
    } catch (error) {
      return { isError: true, content: [{ type: 'text', text: describeError(error) }] };
    }
  };
}

/**
 * The MCP server over one Embedder: tools `embed`, `search` and `add_documents`, a document store
 * seeded with `corpus` in the background, and (when `indexFile` is set) the embeddings kept on disk
 * under `indexKey`.
 *
 * options: {embedder, version, corpus: [{id, text}], queryPrefix, documentPrefix, indexFile,
 * indexKey, log(line)}.
 */
class EmbeddingServer {
  #embedder;
  #store = new DocumentStore();
  #queryPrefix;
  #documentPrefix;
  #log;
  #closing = false;
  /** Resolves to the EmbeddingIndex (or null) once the corpus is in the store. */
  #corpusLoaded;
  /** The EmbeddingIndex once opened, for cleanup at close. */
  #index = null;

  constructor({ embedder, version, corpus, queryPrefix, documentPrefix, indexFile, indexKey, log }) {
    this.#embedder = embedder;
    this.#queryPrefix = queryPrefix;
    this.#documentPrefix = documentPrefix;
    this.#log = log;
    this.mcp = new McpServer({ name: 'stepembed', version });
    this.#registerTools();
    this.#corpusLoaded = this.#loadCorpus(corpus, indexFile, indexKey);
    this.#corpusLoaded.catch((error) => {
      if (!this.#closing) log(`corpus: ${describeError(error)}`);
    });
  }

  /**
   * Closes the embedder (pending calls fail with ERR_CLOSED) and the MCP connection, then waits up
   * to `graceMs` for an index write in progress and removes any temporary file it leaves.
   */
  async close(graceMs) {
    this.#closing = true;
    this.#embedder.close();
    await this.mcp.close();
    if (this.#index) {
      const grace = new Promise((resolve) => setTimeout(resolve, graceMs).unref());
      await Promise.race([this.#index.settled(), grace]);
      this.#index.removeTemporary();
    }
  }

  async #loadCorpus(corpus, indexFile, indexKey) {
    await this.#embedder.ready;
    const index = indexFile
      ? await EmbeddingIndex.open(indexFile, indexKey, this.#embedder.dimensions, this.#log)
      : null;
    this.#index = index;
    const { reused, embedded } = await this.#insert(corpus, index);
    if (index) {
      this.#log(`index: ${reused} reused, ${embedded} embedded`);
      await this.#saveIndex(index);
    }
    this.#log(`corpus: ${this.#store.size} documents ready`);
    return index;
  }

  /** Embeds texts in slices of EMBED_BATCH; one Float32Array per text, in order. */
  async #embedAll(texts) {
    const embeddings = [];
    for (let start = 0; start < texts.length; start += EMBED_BATCH) {
      embeddings.push(...(await this.#embedder.embedBatch(texts.slice(start, start + EMBED_BATCH))));
    }
    return embeddings;
  }

  /**
   * Embeds `documents` ([{id, text}], each text behind the document prefix) — reusing what the
   * index holds for the same string — and stores them. Returns {reused, embedded, replaced}.
   */
  async #insert(documents, index) {
    const prepared = documents.map(({ id, text }) => {
      const hash = textHash(this.#documentPrefix + text);
      return { id, text, hash, embedding: index ? index.lookup(hash) : undefined };
    });
    const missing = prepared.filter((document) => document.embedding === undefined);
    const fresh = await this.#embedAll(missing.map((document) => this.#documentPrefix + document.text));
    missing.forEach((document, i) => {
      document.embedding = fresh[i];
    });
    let replaced = 0;
    for (const document of prepared) if (this.#store.upsert(document)) replaced += 1;
    return { reused: prepared.length - missing.length, embedded: missing.length, replaced };
  }

  #saveIndex(index) {
    return index.save(() => this.#store.documents());
  }

  #registerTools() {
    this.mcp.registerTool(
      'embed',
      {
        title: 'Embed texts',
        description: 'Embedding vectors of the given texts, exactly as given (no prefix is added).',
        inputSchema: { texts: z.array(z.string()).min(1).describe('Texts to embed') },
        outputSchema: { dimensions: z.number().int(), embeddings: z.array(z.array(z.number())) },
      },
      guarded(async ({ texts }) => {
        const embeddings = await this.#embedAll(texts);
        return toolResult({ dimensions: this.#embedder.dimensions, embeddings: embeddings.map((v) => Array.from(v)) });
      }),
    );

    const result = z.object({ id: z.string(), text: z.string(), score: z.number() });
    this.mcp.registerTool(
      'search',
      {
        title: 'Search documents',
        description:
          'The documents nearest to the query by cosine similarity of their embeddings, best first. ' +
          'Waits for the corpus to finish embedding.',
        inputSchema: {
          query: z.string().describe('What to look for'),
          k: z.number().int().min(1).optional().describe(`How many results (default ${DEFAULT_K})`),
        },
        outputSchema: { results: z.array(result) },
      },
      guarded(async ({ query, k = DEFAULT_K }) => {
        const [, embedding] = await Promise.all([this.#corpusLoaded, this.#embedder.embed(this.#queryPrefix + query)]);
        return toolResult({ results: this.#store.search(embedding, k) });
      }),
    );

    this.mcp.registerTool(
      'add_documents',
      {
        title: 'Add documents',
        description:
          'Embeds the documents and adds them to the searchable set; a document with an existing id replaces it.',
        inputSchema: {
          documents: z
            .array(z.object({ id: z.string(), text: z.string() }))
            .min(1)
            .describe('Documents to add'),
        },
        outputSchema: { added: z.number().int(), replaced: z.number().int(), total: z.number().int() },
      },
      guarded(async ({ documents }) => {
        const index = await this.#corpusLoaded;
        const { replaced } = await this.#insert(documents, index);
        if (index) await this.#saveIndex(index);
        return toolResult({ added: documents.length - replaced, replaced, total: this.#store.size });
      }),
    );
  }
}

module.exports = { EmbeddingServer, describeError };
