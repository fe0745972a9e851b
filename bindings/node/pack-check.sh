#!/usr/bin/env bash
# Packs the package and installs the tarball into a fresh temporary project, where it builds the
# addon from source, then requires and imports it and embeds one text. ~4 min on a loaded 2-core
# machine (a cold cargo build of the addon).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
model="$here/../../tests/fixtures/models/minilm-l6-Q4_K_M.gguf"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
(cd "$here" && npm pack --pack-destination "$dir" >/dev/null)
cd "$dir"
npm init -y >/dev/null
npm install --no-audit --no-fund ./stepembed-*.tgz
test ! -e node_modules/stepembed/target
node -e "require('stepembed').Embedder.open(process.argv[1]).then(async (e) => {
  if ((await e.embed('Hello world')).length !== 384) throw new Error('wrong length'); e.close(); })" "$model"
node --input-type=module -e "import { Embedder } from 'stepembed'; if (typeof Embedder !== 'function') throw new Error('no Embedder');"
echo "pack-check: the tarball installs, builds and embeds"
