#!/usr/bin/env node
'use strict';

// stdout carries JSON-RPC and nothing else: from here on, console output of any module
// (console.log, info, debug, dir, table, …) goes to stderr.
const { Console } = require('node:console');

const stderrConsole = new Console({ stdout: process.stderr, stderr: process.stderr });
for (const [name, method] of Object.entries(stderrConsole)) {
  if (typeof method === 'function') console[name] = method;
}

const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { readCorpus, UsageError } = require('./mcp/corpus.js');
const { modelKey } = require('./mcp/embedding-index.js');

const USAGE =
  'usage: stepembed-mcp MODEL.gguf [--corpus FILE.jsonl] [--query-prefix P] [--document-prefix P] [--index FILE]';

/** How long shutdown waits for an index write in progress before exiting anyway. */
const EXIT_GRACE_MS = 500;

/** Writes one log line on stderr. */
function log(line) {
  process.stderr.write(`stepembed-mcp: ${line}\n`);
}

/**
 * The command line as {model, corpus, queryPrefix, documentPrefix, index, help}; throws a
 * UsageError for unknown options, a missing or extra positional argument, or a model that is not a
 * readable file.
 */
function parseCommandLine(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        corpus: { type: 'string' },
        'query-prefix': { type: 'string', default: '' },
        'document-prefix': { type: 'string', default: '' },
        index: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (error) {
    throw new UsageError(error.message);
  }
  const { values, positionals } = parsed;
  if (values.help) return { help: true };
  if (positionals.length === 0) throw new UsageError('missing MODEL.gguf');
  if (positionals.length > 1) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[1])}`);
  const model = positionals[0];
  try {
    fs.accessSync(model, fs.constants.R_OK);
    if (!fs.statSync(model).isFile()) throw new Error('not a file');
  } catch (error) {
    throw new UsageError(`cannot read model ${model}: ${error.message}`);
  }
  if (values.index !== undefined && !fs.existsSync(path.dirname(path.resolve(values.index)))) {
    throw new UsageError(`the folder of --index ${values.index} does not exist`);
  }
  return {
    model,
    corpus: values.corpus,
    queryPrefix: values['query-prefix'],
    documentPrefix: values['document-prefix'],
    index: values.index,
  };
}

/** Starts the server on stdio; exits 2 on a usage error. */
function main() {
  const version = require('../package.json').version;
  let options;
  let corpus;
  let indexKey;
  try {
    options = parseCommandLine(process.argv.slice(2));
    if (options.help) {
      process.stderr.write(`${USAGE}\n`);
      return;
    }
    corpus = options.corpus === undefined ? [] : readCorpus(options.corpus);
    indexKey = options.index === undefined ? null : modelKey(options.model, version);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`stepembed-mcp: ${error.message}\n${USAGE}\n`);
    process.exit(2);
  }

  const { StdioServerTransport } = require('@modelcontextprotocol/sdk/server/stdio.js');
  const { Embedder } = require('..');
  const { EmbeddingServer, describeError } = require('./mcp/server.js');

  // The constructor returns at once; the model loads in the background and tools wait for it.
  const embedder = new Embedder(options.model);
  embedder.ready.then(
    () => log(`model: ${options.model} ready (${embedder.dimensions} dimensions)`),
    (error) => log(`model: ${describeError(error)}`),
  );
  const server = new EmbeddingServer({
    embedder,
    version,
    corpus,
    queryPrefix: options.queryPrefix,
    documentPrefix: options.documentPrefix,
    indexFile: options.index,
    indexKey,
    log,
  });

  let exiting = false;
  const exit = async (reason) => {
    if (exiting) return;
    exiting = true;
    log(`exiting (${reason})`);
    await server.close(EXIT_GRACE_MS).catch((error) => log(`close: ${describeError(error)}`));
    process.exit(0);
  };
  process.stdin.on('end', () => exit('stdin closed'));
  process.stdin.on('error', (error) => exit(`stdin: ${error.message}`));
  process.stdout.on('error', (error) => exit(`stdout: ${error.message}`));
  process.on('SIGTERM', () => exit('SIGTERM'));
  process.on('SIGINT', () => exit('SIGINT'));

  server.mcp.connect(new StdioServerTransport()).catch((error) => {
    log(`transport: ${describeError(error)}`);
    exit('transport failed');
  });
}

main();
