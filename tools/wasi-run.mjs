#!/usr/bin/env -S node --no-warnings
// Runs a wasm32-wasip1 program (cargo's runner for that target, see .cargo/config.toml) under
// Node's WASI: `tools/wasi-run.mjs PROGRAM.wasm ARGS...`. The workspace around the working
// directory (its nearest ancestor holding Cargo.lock) is visible to the program at its real
// absolute path, so tests find tests/fixtures through CARGO_MANIFEST_DIR (a single preopen: a
// nested one for the working directory would be chosen for `core/../tests` and refuse the `..`).
// The environment is passed through. Exits with the program's exit code.
// (Node 20 may segfault at the exit of a program that grew its memory: see the wasm32-wasip1
// rustflags in .cargo/config.toml.)
import { readFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { WASI } from "node:wasi";

const [program, ...args] = process.argv.slice(2);
if (!program) {
  console.error("usage: wasi-run.mjs PROGRAM.wasm [ARGS...]");
  process.exit(2);
}

/** The nearest ancestor of `dir` (itself included) holding Cargo.lock, or `dir`. */
function workspaceRoot(dir) {
  for (let d = dir; ; d = dirname(d)) {
    if (existsSync(join(d, "Cargo.lock"))) return d;
    if (dirname(d) === d) return dir;
  }
}

const root = workspaceRoot(process.cwd());
const wasi = new WASI({
  version: "preview1",
  args: [program, ...args],
  env: process.env,
  preopens: { [root]: root },
  returnOnExit: true,
});
const module = await WebAssembly.compile(await readFile(resolve(program)));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
process.exitCode = wasi.start(instance);
