#!/usr/bin/env bash
# The second suite's references, made in DIR beside the models fetch_models.sh put there:
#
#   LLAMA=/path/to/llama.cpp tools/reference/real_references.sh DIR
#
# DIR/texts.jsonl: 14 texts — 13 of tests/fixtures/texts.jsonl (short and long English, code, German,
# French, Japanese, Hindi, emoji, tabs and newlines, spaces, a 5,999-character text longer than
# Gemma's sliding window) and the 128-token text of tests/fixtures/bench-texts.json.
# For each model M (gemma-emb-270m-dense, qwen2-emb-0.5b, qwen3-synth-4L-1024):
# * DIR/M-Q4_K_M.jsonl: lines {"text", "ids", "embedding"}: libllama's ids on M-Q4_K_M.gguf as
#   llama-embedding tokenizes (special tokens added and parsed; tools/tokenizer-fixtures/
#   llama_tokenize_many.c, built into DIR/bin) and decoder.py's float64 embedding of them (what
#   tests/real_models.rs compares with);
# * DIR/M-Q4_K_M.llama.jsonl and .llama.txt: the cosine of llama-embedding's vectors to that reference,
#   on M-F32.gguf (the same weights dequantized) and on M-Q4_K_M.gguf, each "exact" (flash attention
#   off, f32 KV cache) and "default" (flash attention auto, f16 KV cache; see compare_llama.py).
# A model whose three files are there is skipped (remove them to remake them).
# Needs: python3 with numpy and gguf, LLAMA = a llama.cpp tree built as in shared/DESIGN.md §7
# (build/bin/llama-embedding, libllama), a C compiler. About 20 minutes on an idle core (40 on a loaded one); tests never run this.
set -euo pipefail

die() {
  echo "real_references.sh: error: $*" >&2
  exit 1
}

[ $# -eq 1 ] || die "usage: LLAMA=/path/to/llama.cpp $0 DIR"
DIR=$(cd "$1" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PY=${PY:-python3}
LLAMA=${LLAMA:?set LLAMA to a built llama.cpp tree (build/bin/llama-embedding, libllama)}
BIN=$LLAMA/build/bin
[ -x "$BIN/llama-embedding" ] || die "$BIN/llama-embedding is missing: build llama.cpp first (shared/DESIGN.md §7)"
mkdir -p "$DIR/bin"
TOKENIZE=$DIR/bin/llama_tokenize_many
cc -O2 -o "$TOKENIZE" "$REPO/tools/tokenizer-fixtures/llama_tokenize_many.c" -I"$LLAMA/include" \
  -I"$LLAMA/ggml/include" -L"$BIN" -lllama -Wl,-rpath,"$BIN" || die "cannot build $TOKENIZE"
# One thread for numpy's BLAS: the machines are shared.
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
# No __pycache__ in the repository.
export PYTHONDONTWRITEBYTECODE=1

"$PY" - "$REPO/tests/fixtures" "$DIR/texts.jsonl" <<'EOF'
import json, sys
fixtures, out = sys.argv[1], sys.argv[2]
texts = [json.loads(line)["text"] for line in open(f"{fixtures}/texts.jsonl", encoding="utf-8")]
picked = [texts[i] for i in (0, 1, 3, 5, 6, 7, 8, 9, 10, 12, 13, 20, 24)]
picked.append(json.load(open(f"{fixtures}/bench-texts.json", encoding="utf-8"))["128"])
with open(out, "w", encoding="utf-8") as f:
    for t in picked:
        f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
EOF

for m in gemma-emb-270m-dense qwen2-emb-0.5b qwen3-synth-4L-1024; do
  q=$DIR/$m-Q4_K_M
  for f in "$q.gguf" "$DIR/$m-F32.gguf"; do
    [ -f "$f" ] || die "$f is missing: run tools/reference/fetch_models.sh $DIR first"
  done
  if [ -f "$q.jsonl" ] && [ -f "$q.llama.jsonl" ] && [ -f "$q.llama.txt" ]; then
    echo "ok    $m-Q4_K_M references"
    continue
  fi
  echo "== $m-Q4_K_M: float64 reference, llama.cpp on the F32 copy and on the Q4_K_M file"
  "$PY" "$HERE/compare_llama.py" texts "$BIN" "$q.gguf" "$DIR/texts.jsonl" "$q.jsonl.part" \
    --tokenizer "$TOKENIZE" --llama "$DIR/$m-F32.gguf" --llama "$q.gguf" --report "$q.llama.jsonl.part" --ctx 2048 |
    tee "$q.llama.txt.part"
  mv "$q.jsonl.part" "$q.jsonl"
  mv "$q.llama.jsonl.part" "$q.llama.jsonl"
  mv "$q.llama.txt.part" "$q.llama.txt"
done
echo "references in $DIR; run: STEPEMBED_REAL_MODELS=$DIR cargo test -p stepembed --test real_models -- --ignored"
