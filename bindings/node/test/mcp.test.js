'use strict';

// The MCP server (bin/stepembed-mcp.js) driven as a client would: the SDK's Client over a real
// stdio child process, and raw JSON-RPC where the bytes on stdout or the exit itself are checked.

const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { test } = require('node:test');
const { Client } = require('@modelcontextprotocol/sdk/client/index.js');
const { StdioClientTransport } = require('@modelcontextprotocol/sdk/client/stdio.js');
const { LATEST_PROTOCOL_VERSION } = require('@modelcontextprotocol/sdk/types.js');
const { Embedder } = require('..');

const SERVER = path.join(__dirname, '..', 'bin', 'stepembed-mcp.js');
const MODELS = path.join(__dirname, '..', '..', '..', 'tests', 'fixtures', 'models');
const MODEL = path.join(MODELS, 'minilm-l6-Q4_K_M.gguf');
const OTHER_MODEL = path.join(MODELS, 'nomic-small-2L-Q4_K_M.gguf');
const CORPUS = path.join(__dirname, 'fixtures-mcp', 'corpus.jsonl');

const CORPUS_DOCUMENTS = fs
  .readFileSync(CORPUS, 'utf8')
  .split('\n')
  .filter((line) => line.trim() !== '')
  .map((line) => JSON.parse(line));

/** A fresh temporary folder, removed when the test ends. */
function temporaryFolder(t) {
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'stepembed-mcp-test-'));
  t.after(() => fs.rmSync(folder, { recursive: true, force: true }));
  return folder;
}

/** Writes documents as a JSONL corpus and returns its path. */
function writeCorpus(file, documents) {
  fs.writeFileSync(file, documents.map((document) => JSON.stringify(document)).join('\n') + '\n');
  return file;
}

/** `count` distinct documents of a few sentences each: enough work that embedding them takes a while. */
function manyDocuments(count, idPrefix = 'doc') {
  return Array.from({ length: count }, (_, i) => {
    const base = CORPUS_DOCUMENTS[i % CORPUS_DOCUMENTS.length].text;
    return {
      id: `${idPrefix}-${i}`,
      text: `${base} This is passage number ${i} of the generated corpus. ${base} It closes passage ${i}.`,
    };
  });
}

/** Collects a child's stderr and resolves waits for lines matching a pattern. */
class StderrLog {
  #text = '';
  #waiters = [];

  constructor(stream) {
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => {
      this.#text += chunk;
      this.#waiters = this.#waiters.filter(({ pattern, resolve }) => {
        const match = this.#text.match(pattern);
        if (match) resolve(match);
        return !match;
      });
    });
  }

  /** Everything written so far. */
  get text() {
    return this.#text;
  }

  /** Resolves with the first match of `pattern` in the stderr text, now or once it arrives. */
  waitFor(pattern) {
    const match = this.#text.match(pattern);
    if (match) return Promise.resolve(match);
    return new Promise((resolve) => this.#waiters.push({ pattern, resolve }));
  }
}

/**
 * Starts the server with `args` (after the model path) and connects an SDK client; returns
 * {client, stderr, handshakeMs}. The client is closed when the test ends.
 */
async function connect(t, args = [], model = MODEL) {
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [SERVER, model, ...args],
    stderr: 'pipe',
  });
  const stderr = new StderrLog(transport.stderr);
  const client = new Client({ name: 'stepembed-mcp-test', version: '0.0.0' });
  const started = performance.now();
  await client.connect(transport);
  const handshakeMs = performance.now() - started;
  t.after(() => client.close());
  return { client, stderr, handshakeMs };
}

/** Calls a tool that must succeed; checks that its text content is its structured content as JSON. */
async function callTool(client, name, args) {
  const result = await client.callTool({ name, arguments: args });
  assert.ok(!result.isError, `${name} failed: ${JSON.stringify(result.content)}`);
  assert.deepEqual(JSON.parse(result.content[0].text), result.structuredContent);
  return result.structuredContent;
}

/** Calls a tool that must fail; returns its error text. */
async function callFailingTool(client, name, args) {
  const result = await client.callTool({ name, arguments: args });
  assert.equal(result.isError, true, `${name} should fail: ${JSON.stringify(result)}`);
  return result.content[0].text;
}

function cosine(a, b) {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  return ab / Math.sqrt(aa * bb);
}

/** The expected search results: documents ranked by cosine to the query, computed from their embeddings. */
function rank(queryEmbedding, documents, embeddings, k) {
  return documents
    .map((document, i) => ({ id: document.id, text: document.text, score: cosine(queryEmbedding, embeddings[i]) }))
    .sort((a, b) => b.score - a.score)
    .slice(0, k);
}

function assertSameResults(actual, expected) {
  assert.deepEqual(
    actual.map((r) => r.id),
    expected.map((r) => r.id),
  );
  actual.forEach((result, i) => {
    assert.equal(result.text, expected[i].text);
    assert.ok(
      Math.abs(result.score - expected[i].score) <= 1e-6,
      `${result.id}: ${result.score} vs ${expected[i].score}`,
    );
  });
}

/**
 * Spawns the server with plain pipes and speaks raw JSON-RPC: {child, stdoutLines, stderr,
 * exited, request(method, params), notify(method, params)}. `exited` resolves with
 * {code, signal, at} (at: performance.now() of the exit).
 */
function spawnRaw(t, args, env = {}) {
  const child = spawn(process.execPath, [SERVER, ...args], { env: { ...process.env, ...env } });
  t.after(() => child.kill('SIGKILL'));
  const stdoutLines = [];
  const pending = new Map();
  let buffered = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk) => {
    buffered += chunk;
    let newline;
    while ((newline = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      stdoutLines.push(line);
      let message;
      try {
        message = JSON.parse(line);
      } catch {
        continue; // the stdout test reports it
      }
      pending.get(message.id)?.(message);
      pending.delete(message.id);
    }
  });
  const stderr = new StderrLog(child.stderr);
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal, at: performance.now() }));
  });
  let nextId = 1;
  const send = (message) => child.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', ...message })}\n`);
  return {
    child,
    stdoutLines,
    stderr,
    exited,
    trailing: () => buffered,
    request(method, params = {}) {
      const id = nextId++;
      const answered = new Promise((resolve) => pending.set(id, resolve));
      send({ id, method, params });
      return answered;
    },
    notify(method, params = {}) {
      send({ method, params });
    },
  };
}

/** The MCP handshake over a raw server. */
async function initializeRaw(server) {
  const answer = await server.request('initialize', {
    protocolVersion: LATEST_PROTOCOL_VERSION,
    capabilities: {},
    clientInfo: { name: 'raw-test', version: '0.0.0' },
  });
  assert.ok(answer.result, JSON.stringify(answer));
  server.notify('notifications/initialized');
  return answer;
}

test('handshake answers within a second, before the model has loaded', async (t) => {
  const { client, stderr, handshakeMs } = await connect(t, ['--corpus', CORPUS]);
  assert.ok(handshakeMs < 1000, `handshake took ${handshakeMs.toFixed(0)} ms`);
  assert.equal(client.getServerVersion().name, 'stepembed');
  await stderr.waitFor(/corpus: 8 documents ready/);
});

test('tools/list names embed, search and add_documents with their schemas', async (t) => {
  const { client } = await connect(t);
  const { tools } = await client.listTools();
  const byName = Object.fromEntries(tools.map((tool) => [tool.name, tool]));
  assert.deepEqual(Object.keys(byName).sort(), ['add_documents', 'embed', 'search']);
  assert.deepEqual(byName.embed.inputSchema.required, ['texts']);
  assert.deepEqual(byName.search.inputSchema.required, ['query']);
  assert.ok('k' in byName.search.inputSchema.properties);
  assert.deepEqual(byName.add_documents.inputSchema.required, ['documents']);
  for (const tool of tools) assert.equal(tool.outputSchema.type, 'object', tool.name);
});

test('embed returns what the binding computes', async (t) => {
  const texts = ['Hello world', 'naïve café résumé — déjà vu', '東京は日本の首都です。', ''];
  const { client } = await connect(t);
  const embedder = await Embedder.open(MODEL);
  t.after(() => embedder.close());
  const { dimensions, embeddings } = await callTool(client, 'embed', { texts });
  assert.equal(dimensions, embedder.dimensions);
  assert.equal(embeddings.length, texts.length);
  for (const [i, text] of texts.entries()) {
    const expected = await embedder.embed(text);
    assert.equal(embeddings[i].length, expected.length);
    const maxDelta = Math.max(...embeddings[i].map((x, j) => Math.abs(x - expected[j])));
    assert.ok(maxDelta <= 1e-6, `${JSON.stringify(text)}: max |Δ| ${maxDelta}`);
  }
});

test('search ranks the corpus by cosine, best first, with the prefixes applied', async (t) => {
  const queryPrefix = 'search_query: ';
  const documentPrefix = 'search_document: ';
  const { client } = await connect(t, [
    '--corpus',
    CORPUS,
    '--query-prefix',
    queryPrefix,
    '--document-prefix',
    documentPrefix,
  ]);
  const { embeddings } = await callTool(client, 'embed', {
    texts: CORPUS_DOCUMENTS.map((d) => documentPrefix + d.text),
  });
  for (const query of ['What is the capital of France?', 'music on stage', 'memory safety']) {
    const [queryEmbedding] = (await callTool(client, 'embed', { texts: [queryPrefix + query] })).embeddings;
    const { results } = await callTool(client, 'search', { query, k: 3 });
    assertSameResults(results, rank(queryEmbedding, CORPUS_DOCUMENTS, embeddings, 3));
  }
  const { results: all } = await callTool(client, 'search', { query: 'anything' });
  assert.equal(all.length, 5, 'k defaults to 5');
  const { results: capped } = await callTool(client, 'search', { query: 'anything', k: 100 });
  assert.equal(capped.length, CORPUS_DOCUMENTS.length);
});

test('add_documents makes documents searchable and replaces by id', async (t) => {
  const { client } = await connect(t, ['--corpus', CORPUS]);
  const added = await callTool(client, 'add_documents', {
    documents: [
      { id: 'violin', text: 'He tunes his violin before the concert.' },
      { id: 'pasta', text: 'Risotto needs constant stirring.' },
    ],
  });
  assert.deepEqual(added, { added: 1, replaced: 1, total: CORPUS_DOCUMENTS.length + 1 });
  const [top] = (await callTool(client, 'search', { query: 'He tunes his violin before the concert.', k: 1 })).results;
  assert.equal(top.id, 'violin');
  assert.ok(Math.abs(top.score - 1) <= 1e-6, `identical text scores ${top.score}`);
  const [pasta] = (await callTool(client, 'search', { query: 'Risotto needs constant stirring.', k: 1 })).results;
  assert.deepEqual([pasta.id, pasta.text], ['pasta', 'Risotto needs constant stirring.']);
});

test('a search sent while the corpus is embedding waits for it', async (t) => {
  const documents = manyDocuments(250);
  const corpus = writeCorpus(path.join(temporaryFolder(t), 'corpus.jsonl'), documents);
  const { client, stderr } = await connect(t, ['--corpus', corpus]);
  const query = CORPUS_DOCUMENTS[1].text;
  assert.doesNotMatch(stderr.text, /corpus: \d+ documents ready/, 'the corpus must still be embedding');
  const { results } = await callTool(client, 'search', { query, k: 4 });
  assert.match(stderr.text, /corpus: 250 documents ready/);
  const embedder = await Embedder.open(MODEL);
  t.after(() => embedder.close());
  const queryEmbedding = await embedder.embed(query);
  const embeddings = await embedder.embedBatch(documents.map((d) => d.text));
  assertSameResults(results, rank(queryEmbedding, documents, embeddings, 4));
});

test('ping and tools/list are answered while a large add_documents is embedding', async (t) => {
  const { client, stderr } = await connect(t);
  await stderr.waitFor(/model: .* ready/);
  const order = [];
  const adding = client
    .callTool({ name: 'add_documents', arguments: { documents: manyDocuments(300) } })
    .then((result) => {
      order.push('add_documents');
      return result;
    });
  await new Promise((resolve) => setImmediate(resolve));
  await client.ping();
  order.push('ping');
  await client.listTools();
  order.push('tools/list');
  const result = await adding;
  assert.ok(!result.isError, JSON.stringify(result.content));
  assert.deepEqual(result.structuredContent, { added: 300, replaced: 0, total: 300 });
  assert.deepEqual(order, ['ping', 'tools/list', 'add_documents']);
});

test('--index: a restart reuses the stored embeddings; changed texts, prefixes and models are re-embedded', async (t) => {
  const folder = temporaryFolder(t);
  const corpus = path.join(folder, 'corpus.jsonl');
  const index = path.join(folder, 'embeddings.index');
  const run = async (args, model = MODEL) => {
    const { client, stderr } = await connect(t, ['--corpus', corpus, '--index', index, ...args], model);
    const [, reused, embedded] = (await stderr.waitFor(/index: (\d+) reused, (\d+) embedded/)).map(Number);
    const { results } = await callTool(client, 'search', { query: 'Which city is the capital of Japan?', k: 8 });
    await client.close();
    return { reused, embedded, results, log: stderr.text };
  };

  writeCorpus(corpus, CORPUS_DOCUMENTS);
  const first = await run([]);
  assert.deepEqual([first.reused, first.embedded], [0, 8]);
  const second = await run([]);
  assert.deepEqual([second.reused, second.embedded], [8, 0]);
  assertSameResults(second.results, first.results);

  const changed = CORPUS_DOCUMENTS.map((d) =>
    d.id === 'tokyo' ? { id: 'tokyo', text: 'Which city is the capital of Japan?' } : d,
  );
  writeCorpus(corpus, changed);
  const third = await run([]);
  assert.deepEqual([third.reused, third.embedded], [7, 1]);
  assert.equal(third.results[0].id, 'tokyo');
  assert.ok(Math.abs(third.results[0].score - 1) <= 1e-6, `the re-embedded text scores ${third.results[0].score}`);

  const prefixed = await run(['--document-prefix', 'search_document: ']);
  assert.deepEqual([prefixed.reused, prefixed.embedded], [0, 8]);

  const otherModel = await run([], OTHER_MODEL);
  assert.match(otherModel.log, /index: .* stale \(model file or binding changed\)/);
  assert.deepEqual([otherModel.reused, otherModel.embedded], [0, 8]);

  const stored = JSON.parse(fs.readFileSync(index, 'utf8'));
  const [hash, vector] = stored.entries[0];
  stored.entries[0] = [hash, vector.slice(0, 10) + (vector[10] === 'A' ? 'B' : 'A') + vector.slice(11)];
  fs.writeFileSync(index, JSON.stringify(stored));
  const damaged = await run([], OTHER_MODEL);
  assert.match(damaged.log, /index: .* damaged \(checksum mismatch\)/);
  assert.deepEqual([damaged.reused, damaged.embedded], [0, 8]);

  assert.deepEqual(fs.readdirSync(folder).sort(), ['corpus.jsonl', 'embeddings.index'], 'no temporary file is left');
});

test('embedder errors become tool errors and the server keeps serving', async (t) => {
  const broken = path.join(temporaryFolder(t), 'broken.gguf');
  fs.writeFileSync(broken, Buffer.from('GGUF this is not a model file at all'));
  const { client, stderr } = await connect(t, ['--corpus', CORPUS], broken);
  const message = await callFailingTool(client, 'embed', { texts: ['Hello world'] });
  assert.match(message, /^ERR_MALFORMED: /);
  assert.match(await callFailingTool(client, 'search', { query: 'Hello' }), /^ERR_MALFORMED: /);
  assert.match(
    await callFailingTool(client, 'add_documents', { documents: [{ id: 'a', text: 'b' }] }),
    /^ERR_MALFORMED: /,
  );
  assert.match(stderr.text, /model: ERR_MALFORMED: /);
  await client.ping();
});

test('invalid arguments are tool errors', async (t) => {
  const { client } = await connect(t);
  assert.match(await callFailingTool(client, 'embed', { texts: [] }), /Invalid arguments for tool embed/);
  assert.match(await callFailingTool(client, 'search', { query: 'x', k: 0 }), /Invalid arguments for tool search/);
  assert.match(await callFailingTool(client, 'add_documents', { documents: [{ id: 'a' }] }), /Invalid arguments/);
});

test('stdout carries only JSON-RPC, even when a module writes with console.log', async (t) => {
  // Preloaded into the server: a dependency that writes with console.log and console.info once the
  // server is running.
  const strayConsole = path.join(temporaryFolder(t), 'stray-console.js');
  fs.writeFileSync(
    strayConsole,
    "setImmediate(() => { console.log('stray console.log from a dependency'); console.info('stray console.info from a dependency'); });\n",
  );
  const server = spawnRaw(t, [MODEL, '--corpus', CORPUS], { NODE_OPTIONS: `--require ${strayConsole}` });
  await initializeRaw(server);
  await server.request('tools/list');
  assert.ok((await server.request('tools/call', { name: 'embed', arguments: { texts: ['Hello world'] } })).result);
  assert.ok((await server.request('tools/call', { name: 'search', arguments: { query: 'guitar' } })).result);
  assert.ok((await server.request('tools/call', { name: 'no_such_tool', arguments: {} })).result.isError);
  assert.ok((await server.request('no/such/method')).error);
  server.child.stdin.end();
  const { code } = await server.exited;
  assert.equal(code, 0);
  assert.match(server.stderr.text, /stray console\.log from a dependency/);
  assert.match(server.stderr.text, /stray console\.info from a dependency/);
  assert.equal(server.trailing(), '', 'stdout ends with a complete line');
  assert.ok(server.stdoutLines.length >= 6);
  for (const line of server.stdoutLines) {
    const message = JSON.parse(line);
    assert.equal(message.jsonrpc, '2.0', line);
    assert.ok('result' in message || 'error' in message || 'method' in message, line);
  }
});

for (const [how, stop] of [
  ['stdin closes', (child) => child.stdin.end()],
  ['SIGTERM arrives', (child) => child.kill('SIGTERM')],
]) {
  for (const busy of [false, true]) {
    test(`the server exits within a second when ${how} (${busy ? 'while the corpus embeds' : 'idle'})`, async (t) => {
      const corpus = writeCorpus(path.join(temporaryFolder(t), 'corpus.jsonl'), manyDocuments(busy ? 400 : 2));
      const server = spawnRaw(t, [MODEL, '--corpus', corpus]);
      await initializeRaw(server);
      await server.stderr.waitFor(busy ? /model: .* ready/ : /corpus: \d+ documents ready/);
      if (busy)
        assert.doesNotMatch(server.stderr.text, /corpus: \d+ documents ready/, 'the corpus must still be embedding');
      const stopped = performance.now();
      stop(server.child);
      const { code, at } = await server.exited;
      assert.equal(code, 0, server.stderr.text);
      assert.ok(at - stopped < 1000, `exited after ${(at - stopped).toFixed(0)} ms`);
    });
  }
}

test('usage errors exit with code 2 and a message on stderr', async (t) => {
  const cases = [
    [[], /missing MODEL\.gguf/],
    [[path.join(os.tmpdir(), 'no-such-model.gguf')], /cannot read model/],
    [[MODEL, '--no-such-option'], /Unknown option '--no-such-option'/],
    [[MODEL, '--corpus', path.join(os.tmpdir(), 'no-such-corpus.jsonl')], /cannot read corpus/],
    [[MODEL, '--index', path.join(os.tmpdir(), 'no-such-folder', 'x.index')], /the folder of --index/],
  ];
  const badCorpus = writeCorpus(path.join(temporaryFolder(t), 'bad.jsonl'), [
    { id: 'a', text: 'x' },
    { id: 'a', text: 'y' },
  ]);
  cases.push([[MODEL, '--corpus', badCorpus], /bad\.jsonl:2: duplicate id "a"/]);
  for (const [args, message] of cases) {
    const server = spawnRaw(t, args);
    server.child.stdin.end();
    const { code } = await server.exited;
    assert.equal(code, 2, args.join(' '));
    assert.match(server.stderr.text, message);
    assert.match(server.stderr.text, /usage: stepembed-mcp MODEL\.gguf/);
    assert.deepEqual(server.stdoutLines, []);
  }
});
