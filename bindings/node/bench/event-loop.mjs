#!/usr/bin/env node
// Event-loop delay, peak RSS and wall time of embedding texts through concurrent calls: stepembed
// in its 'worker' and 'cooperative' execution modes beside node-llama-cpp (1 thread) on the same
// model, each measurement in a fresh child process, runs interleaved. Prints a markdown table of
// medians and ratios.
//
//   node bench/event-loop.mjs [--model M.gguf] [--runs N] [--texts N] [--llama-dir DIR] [--no-llama]
//                             [--runners worker,cooperative,node-llama-cpp,idle]
//
// node-llama-cpp is not a dependency of this package: the script installs the pinned version into
// a temporary folder (or uses --llama-dir DIR, a folder where it is already installed).

import { execFileSync, fork } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

const { cosine } = createRequire(import.meta.url)('../bin/mcp/documents.js');

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPOSITORY = path.join(HERE, '..', '..', '..');
const DEFAULT_MODEL = path.join(REPOSITORY, '..', 'shared', 'fixtures', 'models', 'nomic-synth-12L-Q4_K_M.gguf');
const LLAMA_PACKAGE = 'node-llama-cpp@3.22.1';
/** How long the idle baseline child keeps its event loop empty. */
const IDLE_MS = 2000;

/**
 * `count` short, mixed texts: those of tests/fixtures/texts.jsonl between 1 and 300 characters,
 * the 16- and 128-token bench texts, then numbered variants of the short ones until `count`.
 */
function benchTexts(count) {
  const fixtures = path.join(REPOSITORY, 'tests', 'fixtures');
  const short = fs
    .readFileSync(path.join(fixtures, 'texts.jsonl'), 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line).text)
    .filter((text) => text.trim().length > 0 && text.length <= 300);
  const bench = JSON.parse(fs.readFileSync(path.join(fixtures, 'bench-texts.json'), 'utf8'));
  const texts = [...short, bench['16'], bench['128']];
  for (let i = 0; texts.length < count; i++) texts.push(`${short[i % short.length]} (variant ${i})`);
  return texts.slice(0, count);
}

/**
 * Runs `embedAll()` (after `construct()`, both inside the measurement) and returns
 * {maxDelayMs, p99DelayMs, peakRssKiB, totalMs, embeddings}: event-loop delay from construction
 * on, loading included, sampled every millisecond.
 */
async function measure(construct, embedAll) {
  const delay = monitorEventLoopDelay({ resolution: 1 });
  delay.enable();
  const started = performance.now();
  const embedder = await construct();
  const embeddings = await embedAll(embedder);
  const totalMs = performance.now() - started;
  delay.disable();
  return {
    embedder,
    maxDelayMs: delay.max / 1e6,
    p99DelayMs: delay.percentile(99) / 1e6,
    peakRssKiB: process.resourceUsage().maxRSS,
    totalMs,
    embeddings: embeddings.map((v) => Array.from(v)),
  };
}

/** One measurement in this (child) process; the result goes to the parent over IPC. */
async function child(runner, model, textCount, llamaDir) {
  const texts = benchTexts(textCount);
  let result;
  if (runner === 'idle') {
    result = await measure(
      () => null,
      () => new Promise((resolve) => setTimeout(() => resolve([]), IDLE_MS)),
    );
  } else if (runner === 'node-llama-cpp') {
    const { getLlama } = await import(createRequire(path.join(llamaDir, 'x.js')).resolve('node-llama-cpp'));
    result = await measure(
      async () => {
        const llama = await getLlama({ gpu: false });
        const loaded = await llama.loadModel({ modelPath: model });
        const context = await loaded.createEmbeddingContext({ threads: 1, contextSize: 512 });
        return { llama, loaded, context };
      },
      async ({ context }) =>
        (await Promise.all(texts.map((text) => context.getEmbeddingFor(text)))).map((e) => e.vector),
    );
    await result.embedder.context.dispose();
    await result.embedder.loaded.dispose();
    await result.embedder.llama.dispose();
  } else {
    const { Embedder } = createRequire(import.meta.url)('..');
    result = await measure(
      () => new Embedder(model, { execution: runner }),
      (embedder) => Promise.all(texts.map((text) => embedder.embed(text))),
    );
    const { steps, maxStepUs, p99StepUs } = result.embedder.stats();
    result.steps = { steps, maxStepUs, p99StepUs };
    result.embedder.close();
  }
  delete result.embedder;
  process.send(result, () => process.exit(0));
}

/** Runs one measurement of `runner` in a fresh Node process. */
function measureInChild(runner, model, textCount, llamaDir) {
  return new Promise((resolve, reject) => {
    const worker = fork(fileURLToPath(import.meta.url), ['--child', runner, model, String(textCount), llamaDir ?? ''], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    let result = null;
    worker.on('message', (message) => {
      result = message;
    });
    worker.on('error', reject);
    worker.on('exit', (code) => {
      if (code === 0 && result) resolve(result);
      else reject(new Error(`${runner} child exited with code ${code}`));
    });
  });
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** Installs node-llama-cpp into a new temporary folder and returns it. */
function installLlama() {
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'stepembed-bench-llama-'));
  process.stderr.write(`installing ${LLAMA_PACKAGE} into ${folder} …\n`);
  execFileSync('npm', ['install', '--prefix', folder, '--no-save', '--no-audit', '--no-fund', LLAMA_PACKAGE], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return folder;
}

async function main() {
  const { values } = parseArgs({
    options: {
      model: { type: 'string', default: DEFAULT_MODEL },
      runs: { type: 'string', default: '3' },
      texts: { type: 'string', default: '50' },
      'llama-dir': { type: 'string' },
      'no-llama': { type: 'boolean', default: false },
      runners: { type: 'string' },
    },
  });
  const runs = Number(values.runs);
  const textCount = Number(values.texts);
  if (!fs.existsSync(values.model)) throw new Error(`model ${values.model} not found`);
  const allRunners = ['worker', 'cooperative', ...(values['no-llama'] ? [] : ['node-llama-cpp']), 'idle'];
  const runners = values.runners === undefined ? allRunners : values.runners.split(',');
  const unknown = runners.filter((runner) => !allRunners.includes(runner));
  if (unknown.length > 0) throw new Error(`unknown runners ${unknown.join(', ')}`);
  const withLlama = runners.includes('node-llama-cpp');
  const temporaryLlama = withLlama && values['llama-dir'] === undefined;
  const llamaDir = withLlama ? (values['llama-dir'] ?? installLlama()) : null;

  const measured = Object.fromEntries(runners.map((runner) => [runner, []]));
  let firstEmbeddings = {};
  try {
    for (let run = 0; run < runs; run++) {
      for (const runner of runners) {
        const result = await measureInChild(runner, values.model, textCount, llamaDir);
        if (run === 0) firstEmbeddings[runner] = result.embeddings;
        delete result.embeddings;
        measured[runner].push(result);
        process.stderr.write(
          `run ${run + 1} ${runner}: max ${result.maxDelayMs.toFixed(2)} ms, p99 ${result.p99DelayMs.toFixed(2)} ms, ` +
            `peak RSS ${(result.peakRssKiB / 1024).toFixed(1)} MiB, ${result.totalMs.toFixed(0)} ms\n`,
        );
      }
    }
  } finally {
    if (temporaryLlama) fs.rmSync(llamaDir, { recursive: true, force: true });
  }

  const medians = Object.fromEntries(
    runners.map((runner) => [
      runner,
      {
        maxDelayMs: median(measured[runner].map((r) => r.maxDelayMs)),
        p99DelayMs: median(measured[runner].map((r) => r.p99DelayMs)),
        peakRssMiB: median(measured[runner].map((r) => r.peakRssKiB / 1024)),
        totalS: median(measured[runner].map((r) => r.totalMs / 1000)),
      },
    ]),
  );
  const labels = {
    worker: "stepembed `execution: 'worker'`",
    cooperative: "stepembed `execution: 'cooperative'`",
    'node-llama-cpp': `${LLAMA_PACKAGE} (1 thread)`,
    idle: `idle Node (no model, ${IDLE_MS / 1000} s)`,
  };
  const row = (label, cells) => `| ${label} | ${cells.join(' | ')} |`;
  const lines = [
    `${textCount} texts through concurrent calls, ${path.basename(values.model)}; medians of ${runs} interleaved runs, ` +
      `each in a fresh process. ${os.cpus()[0].model}, Node ${process.version}, ${new Date().toISOString().slice(0, 10)}.`,
    '',
    row('runner', ['max event-loop delay (ms)', 'p99 event-loop delay (ms)', 'peak RSS (MiB)', 'total (s)']),
    row('---', ['---:', '---:', '---:', '---:']),
  ];
  for (const runner of runners) {
    const m = medians[runner];
    lines.push(
      row(labels[runner], [
        m.maxDelayMs.toFixed(2),
        m.p99DelayMs.toFixed(2),
        m.peakRssMiB.toFixed(1),
        m.totalS.toFixed(2),
      ]),
    );
  }
  const modes = ['worker', 'cooperative'].filter((runner) => runners.includes(runner));
  if (withLlama) {
    const llama = medians['node-llama-cpp'];
    for (const runner of modes) {
      const m = medians[runner];
      lines.push(
        row(`${runner} ÷ node-llama-cpp`, [
          (m.maxDelayMs / llama.maxDelayMs).toFixed(2),
          (m.p99DelayMs / llama.p99DelayMs).toFixed(2),
          (m.peakRssMiB / llama.peakRssMiB).toFixed(2),
          (m.totalS / llama.totalS).toFixed(2),
        ]),
      );
    }
  }
  lines.push('');
  if (withLlama && modes.length > 0) {
    const agreement = firstEmbeddings[modes[0]].map((v, i) => cosine(v, firstEmbeddings['node-llama-cpp'][i]));
    lines.push(
      `cosine of stepembed to node-llama-cpp embeddings over the ${textCount} texts: ` +
        `median ${median(agreement).toFixed(5)}, min ${Math.min(...agreement).toFixed(5)}`,
    );
    const texts = benchTexts(textCount);
    agreement.forEach((c, i) => {
      if (c < 0.99) lines.push(`- cosine ${c.toFixed(5)} on ${JSON.stringify(texts[i].slice(0, 60))}`);
    });
  }
  for (const runner of modes) {
    const steps = measured[runner].map((r) => r.steps);
    lines.push(
      `stepembed ${runner} steps (medians): ${median(steps.map((s) => s.steps))} steps, ` +
        `p99 ${(median(steps.map((s) => s.p99StepUs)) / 1000).toFixed(1)} ms, ` +
        `longest ${(median(steps.map((s) => s.maxStepUs)) / 1000).toFixed(1)} ms`,
    );
  }
  if (modes.length === 2) {
    const same = firstEmbeddings.worker.map((v, i) => cosine(v, firstEmbeddings.cooperative[i]));
    lines.push(`cosine of worker to cooperative embeddings: min ${Math.min(...same).toFixed(7)}`);
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

const childAt = process.argv.indexOf('--child');
if (childAt >= 0) {
  const [runner, model, textCount, llamaDir] = process.argv.slice(childAt + 1);
  await child(runner, model, Number(textCount), llamaDir);
} else {
  await main();
}
