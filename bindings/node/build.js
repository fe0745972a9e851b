'use strict';
// `npm install` builds the native addon from source with cargo (no prebuilt download) and copies
// it to stepembed.node. In the repository the addon depends on ../../std-adapter; in a packed
// tarball (see pack.js) the sources travel in stepembed-src/ and the manifest is pointed there.

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const here = __dirname;
const manifest = path.join(here, 'Cargo.toml');
const repoAdapter = path.join(here, '..', '..', 'std-adapter', 'Cargo.toml');
const packedAdapter = path.join(here, 'stepembed-src', 'std-adapter', 'Cargo.toml');

if (!fs.existsSync(repoAdapter) && fs.existsSync(packedAdapter)) {
  const text = fs.readFileSync(manifest, 'utf8');
  fs.writeFileSync(manifest, text.replace('path = "../../std-adapter"', 'path = "stepembed-src/std-adapter"'));
}

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
