'use strict';
// `npm pack` / `npm publish` hooks: `node pack.js prepack` copies the Rust sources the addon
// builds from (the workspace manifest and lock file, core/, std-adapter/ and this addon crate, as
// tracked by git) into stepembed-src/ in the repository's layout, so that the tarball builds from
// source anywhere (build.js finds them there); `node pack.js postpack` removes the copy.

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const here = __dirname;
const repo = path.join(here, '..', '..');
const out = path.join(here, 'stepembed-src');
const addon = ['Cargo.toml', 'Cargo.lock', 'build.rs', 'src'].map((f) => `bindings/node/${f}`);
const SOURCES = ['Cargo.toml', 'Cargo.lock', 'core', 'std-adapter', ...addon];

fs.rmSync(out, { recursive: true, force: true });
if (process.argv[2] === 'prepack') {
  const files = execFileSync('git', ['ls-files', '-z', ...SOURCES], {
    cwd: repo,
    encoding: 'utf8',
  })
    .split('\0')
    .filter(Boolean);
  for (const file of files) {
    fs.mkdirSync(path.dirname(path.join(out, file)), { recursive: true });
    fs.copyFileSync(path.join(repo, file), path.join(out, file));
  }
}
