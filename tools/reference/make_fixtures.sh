#!/usr/bin/env bash
# Regenerates the decoder fixtures (tests/fixtures/models/{gemma-emb,qwen3,qwen2}-tiny-*.gguf and their
# tests/fixtures/reference/*.jsonl) and checks the float64 reference against llama.cpp on F32 copies.
#
#   tools/reference/make_fixtures.sh WORK_DIR
#
# Needs: python with numpy + gguf (PyPI), LLAMA = a built llama.cpp tree (llama-quantize, libllama),
# GEMMA3 = the Gemma 3 270M Q4_K_M GGUF (its vocabulary; see fetch_models.sh), a C compiler.
# Tests never run this; it is here so anyone can remake the files.
set -euo pipefail
WORK=${1:?usage: make_fixtures.sh WORK_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
LLAMA=${LLAMA:?set LLAMA to the llama.cpp source tree with build/bin}
GEMMA3=${GEMMA3:?set GEMMA3 to gemma-3-270m Q4_K_M .gguf}
PY=${PY:-python3}
QWEN_VOCAB=$LLAMA/models/ggml-vocab-qwen2.gguf
mkdir -p "$WORK" && cd "$WORK"

cc -O2 -o llama_embed_ids "$HERE/llama_embed_ids.c" -I"$LLAMA/include" -I"$LLAMA/ggml/include" \
   -L"$LLAMA/build/bin" -lllama -Wl,-rpath,"$LLAMA/build/bin"

mk() { "$PY" "$HERE/make_decoder_models.py" "$@"; }
# gemma-embedding, 3 layers (sliding, sliding, global: pattern 3), window 32, dense 256 -> 512 -> 256
mk gemma-embedding gemma-emb-tiny-3L-F32.gguf --vocab "$GEMMA3" --vocab-size 2048 --layers 3 --swa 32 \
   --swa-pattern 3 --rope-base-swa 10000 --dense 512 --add-eos --seed 11 --name gemma-emb-tiny-3L
# gemma-embedding, 2 layers given as a per-layer pattern array [sliding, global], no dense
mk gemma-embedding gemma-emb-tiny-2L-F32.gguf --vocab "$GEMMA3" --vocab-size 1024 --layers 2 --swa 32 \
   --swa-pattern 1,0 --add-eos --seed 14 --name gemma-emb-tiny-2L
# qwen3: key_length 128 != 256 / 4 heads, last-token pooling, EOS appended
mk qwen3 qwen3-tiny-2L-F32.gguf --vocab "$QWEN_VOCAB" --vocab-size 2048 --head-dim 128 --pooling last \
   --add-eos --seed 12 --name qwen3-tiny-2L
# qwen2: q/k/v biases, mean pooling, no EOS
mk qwen2 qwen2-tiny-2L-F32.gguf --vocab "$QWEN_VOCAB" --vocab-size 2048 --pooling mean --seed 13 --name qwen2-tiny-2L

q() { "$LLAMA/build/bin/llama-quantize" "$1-F32.gguf" "$1-$2.gguf" "$2" 1 > "$1-$2.log" 2>&1; }
q gemma-emb-tiny-3L Q4_K_M
q gemma-emb-tiny-2L Q8_0
q qwen3-tiny-2L Q4_K_M
q qwen2-tiny-2L Q4_K_M

for m in gemma-emb-tiny-3L:Q4_K_M gemma-emb-tiny-2L:Q8_0 qwen3-tiny-2L:Q4_K_M qwen2-tiny-2L:Q4_K_M; do
  base=${m%%:*}; type=${m##*:}
  "$PY" "$HERE/fixture_ids.py" "$base-F32.gguf" "$base.ids.jsonl" --seed 7
  for t in F32 "$type"; do
    "$PY" "$HERE/decoder.py" "$base-$t.gguf" --ids-file "$base.ids.jsonl" --out "$base-$t.jsonl"
    echo "== $base-$t vs llama.cpp"
    "$PY" "$HERE/compare_llama.py" ids ./llama_embed_ids "$base-$t.gguf" "$base-$t.jsonl" --ctx 256
  done
  cp "$base-$type.gguf" "$REPO/tests/fixtures/models/"
  cp "$base-$type.jsonl" "$REPO/tests/fixtures/reference/"
done
