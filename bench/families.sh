#!/usr/bin/env bash
# One-shot timing of the decoder families beside llama.cpp, for the README's families table:
#
#   LLAMA_BIN=/path/to/llama.cpp/build/bin bench/families.sh DIR [--reps N] [--llama-only]
#
# DIR holds the second suite's models (tools/reference/fetch_models.sh DIR). For each of
# gemma-emb-270m-dense, qwen2-emb-0.5b and qwen3-synth-4L-1024 (Q4_K_M), one process per run embeds
# the 128-token bench text (tests/fixtures/bench-texts.json "128"; its token count differs per
# tokenizer and is printed): `llama-embedding -t 1` and `stepembed embed` (the release CLI, built
# here; --llama-only skips it, and a model the CLI cannot embed is reported, not fatal). Each is run
# N times (default 5); the table gives the median wall time and the median peak RSS, both from
# `/usr/bin/time -v`. Both sides get a 512-token context: llama-embedding `-c 512 -b 512 -ub 512`
# (its best one-shot settings; its default context is the model's 32768), stepembed
# `--max-tokens 512`. llama.cpp's weight repacking is off (`--no-repack`) as in bench/compare.py.
# Machines are shared and noisy: run it on an idle machine, with `nice` if others work.
set -euo pipefail

die() {
  echo "families.sh: error: $*" >&2
  exit 1
}

DIR= REPS=5 LLAMA_ONLY=
while [ $# -gt 0 ]; do
  case $1 in
    --reps) REPS=${2:?--reps needs a number}; shift 2 ;;
    --llama-only) LLAMA_ONLY=1; shift ;;
    -*) die "unknown option $1" ;;
    *) [ -z "$DIR" ] || die "one DIR only"; DIR=$1; shift ;;
  esac
done
[ -n "$DIR" ] || die "usage: LLAMA_BIN=DIR bench/families.sh MODELS_DIR [--reps N] [--llama-only]"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LLAMA_BIN=${LLAMA_BIN:?set LLAMA_BIN to llama.cpp build/bin (llama-embedding, llama-tokenize)}
[ -x "$LLAMA_BIN/llama-embedding" ] || die "$LLAMA_BIN/llama-embedding is missing"
[ -x /usr/bin/time ] || die "/usr/bin/time is missing (apt-get install time)"
TEXT=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["128"])' "$ROOT/tests/fixtures/bench-texts.json")

CLI=${CARGO_TARGET_DIR:-$ROOT/target}/release/stepembed
if [ -z "$LLAMA_ONLY" ]; then
  (cd "$ROOT" && cargo build --release -q -p stepembed --bin stepembed) || die "cannot build the CLI"
fi

# runs TAG COMMAND...: runs COMMAND REPS times under /usr/bin/time -v; prints "median_wall_s
# median_rss_mib", or "error: LAST STDERR LINE" when a run fails.
runs() {
  local log walls=() rsss=() i
  log=$(mktemp)
  for ((i = 0; i < REPS; i++)); do
    if ! /usr/bin/time -v "$@" > /dev/null 2> "$log"; then
      echo "error: $(grep -v -E '^\s|Command exited' "$log" | tail -1 | cut -c1-160)"
      rm -f "$log"
      return
    fi
    walls+=("$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (k = 1; k <= n; k++) s = s * 60 + t[k]; print s }' "$log")")
    rsss+=("$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$log")")
  done
  rm -f "$log"
  python3 -c 'import statistics as s, sys; n = len(sys.argv) // 2
w, r = map(float, sys.argv[1:n + 1]), map(float, sys.argv[n + 1:])
print(f"{s.median(w):.2f} {s.median(r) / 1024:.0f}")' "${walls[@]}" "${rsss[@]}"
}

cpu=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
echo "Machine: $cpu, $(nproc) cores; $(date -u +%F); one thread; median of $REPS one-shot runs of the 128-token bench text."
echo
echo "| model | tokens | llama-embedding -t 1: wall s, peak RSS MiB | stepembed embed: wall s, peak RSS MiB |"
echo "| --- | --- | --- | --- |"
for m in gemma-emb-270m-dense qwen2-emb-0.5b qwen3-synth-4L-1024; do
  model=$DIR/$m-Q4_K_M.gguf
  [ -f "$model" ] || die "$model is missing: run tools/reference/fetch_models.sh $DIR"
  # llama-embedding's own tokens (the count it logs), so the row says what was embedded.
  tokens=$("$LLAMA_BIN/llama-embedding" -m "$model" -p "$TEXT" -t 1 -c 512 -b 512 -ub 512 --no-repack --verbose-prompt 2>&1 |
    sed -n 's/.*number of tokens in prompt = \([0-9]*\).*/\1/p' | head -1)
  llama=$(runs "$LLAMA_BIN/llama-embedding" -m "$model" -p "$TEXT" -t 1 -c 512 -b 512 -ub 512 --no-repack)
  ours="not run"
  [ -n "$LLAMA_ONLY" ] || ours=$(runs "$CLI" embed "$model" "$TEXT" --max-tokens 512 --quiet)
  fmt() { case $1 in error:* | "not run") echo "$1" ;; *) set -- $1; echo "$1 s, $2 MiB" ;; esac; }
  echo "| $m-Q4_K_M | ${tokens:-?} | $(fmt "$llama") | $(fmt "$ours") |"
done
