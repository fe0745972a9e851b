'use strict';

const fs = require('node:fs');

/** A problem with the command line or its files: reported on stderr with exit code 2. */
class UsageError extends Error {}

/**
 * Reads a JSONL corpus (UTF-8, an optional byte-order mark): one `{"id": string, "text": string}`
 * object per line (blank lines are skipped). Returns `[{id, text}]` in file order; throws a
 * UsageError naming the file and line of the first bad or duplicate entry.
 */
function readCorpus(file) {
  let content;
  try {
    content = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new UsageError(`cannot read corpus ${file}: ${error.message}`);
  }
  const documents = [];
  const seen = new Set();
  content
    .replace(/^\uFEFF/, '')
    .split('\n')
    .forEach((line, lineIndex) => {
      if (line.trim() === '') return;
      const where = `${file}:${lineIndex + 1}`;
      let entry;
      try {
        entry = JSON.parse(line);
      } catch (error) {
        throw new UsageError(`${where}: not JSON (${error.message})`);
      }
      if (
        entry === null ||
        typeof entry !== 'object' ||
        typeof entry.id !== 'string' ||
        typeof entry.text !== 'string'
      ) {
        throw new UsageError(`${where}: expected {"id": string, "text": string}`);
      }
      if (seen.has(entry.id)) throw new UsageError(`${where}: duplicate id ${JSON.stringify(entry.id)}`);
      seen.add(entry.id);
      documents.push({ id: entry.id, text: entry.text });
    });
  return documents;
}

module.exports = { readCorpus, UsageError };
