'use strict';
// `npm install` builds the native addon from source with cargo (no prebuilt download) and copies
// it to stepembed.node. In the repository the addon crate is this folder; in a packed tarball
// (see pack.js) the repository's Rust sources travel in stepembed-src/, laid out the same way.

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const here = __dirname;
const inRepository = fs.existsSync(path.join(here, '..', '..', 'std-adapter', 'Cargo.toml'));
const manifest = inRepository
  ? path.join(here, 'Cargo.toml')
  : path.join(here, 'stepembed-src', 'bindings', 'node', 'Cargo.toml');

const cargo = process.env.CARGO || 'cargo';
const targetDir = process.env.CARGO_TARGET_DIR || path.join(here, 'target');
try {
  execFileSync(cargo, ['build', '--release', '--manifest-path', manifest], {
    stdio: 'inherit',
    env: { ...process.env, CARGO_TARGET_DIR: targetDir },
  });
} catch (e) {
  console.error(`stepembed: building the native addon with cargo failed (${e.message}); is Rust installed?`);
  process.exit(1);
}

const library = {
  linux: 'libstepembed_node.so',
  darwin: 'libstepembed_node.dylib',
  win32: 'stepembed_node.dll',
}[process.platform] ?? 'libstepembed_node.so';
fs.copyFileSync(path.join(targetDir, 'release', library), path.join(here, 'stepembed.node'));
// An installed package keeps only the addon, not cargo's build tree (~250 MB).
if (!inRepository && !process.env.CARGO_TARGET_DIR) {
  fs.rmSync(targetDir, { recursive: true, force: true });
}
