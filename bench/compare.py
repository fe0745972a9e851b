#!/usr/bin/env python3
"""Side-by-side benchmark: stepembed and llama.cpp on the same machine, in the same run.

    python3 bench/compare.py [MODEL.gguf] [--llama-bin DIR] [--reps 5] [--batch-reps N]
                             [--threads 1,2] [--modes exact,fast] [--quick]

MODEL defaults to ../shared/fixtures/models/nomic-synth-12L-Q4_K_M.gguf. DIR (or $LLAMA_BIN)
holds llama.cpp's llama-bench and llama-embedding, built separately (this repository ships no
llama.cpp code or build recipe); without it only stepembed is measured.

What it measures, for each numeric mode (--modes) and thread count (--threads):
* steady state: the bench texts (tests/fixtures/bench-texts.json: 16, 127 and 512 tokens)
  embedded repeatedly in one process (examples/bench.rs), beside llama-bench's pp16/pp128/pp512
  (`-n 0 --repack 0`);
* one shot: one process per text, `stepembed embed TEXT --stats` beside `llama-embedding -p TEXT
  -c 2048 --no-repack`;
* a batch of 64 texts of ~128 tokens (made from the bench texts, the same every run), one process:
  `stepembed embed --input FILE --lines` beside `llama-embedding -f FILE` at `-c 512 -b 512 -ub 512`
  and as one 8192-token batch (`-c 8192 -b 8192 -ub 8192`);
* wall time and peak RSS of every process (/usr/bin/time);
* a limits table: GFLOP/s achieved (FLOPs counted from the model's hyperparameters) against the
  cores' peak, and the bytes/s at which the layer weights are streamed.

Runs are interleaved: the repetition loop is outside the configurations, so a burst of noise on
a shared machine hits every configuration alike; every figure is the median over repetitions
(of --reps, at least 5 by default; --batch-reps for the batch). --quick is a short smoke run
(one repetition, a 16-text batch), for checking the script, not for numbers.

stepembed's 2-thread rows need `--threads` in `stepembed embed` and examples/bench; where it is
missing they are skipped with a note.
"""
import argparse, json, os, platform, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENGTHS = ["16", "128", "512"]


def sh(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def timed(cmd, tmp):
    """Runs cmd under /usr/bin/time (stdout discarded); returns (wall s, peak RSS KiB, stderr)."""
    tfile = os.path.join(tmp, "time.out")
    p = subprocess.run(["/usr/bin/time", "-o", tfile, "-f", "%e %M"] + cmd,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit(f"failed (exit {p.returncode}): {' '.join(cmd)[:400]}\n{p.stderr[-3000:]}")
    wall, rss = open(tfile).read().split()[-2:]
    return float(wall), int(rss), p.stderr


def timed_stdout(cmd, tmp):
    """As timed, but keeps stdout (llama-bench's JSON); returns (wall, rss, stdout)."""
    tfile = os.path.join(tmp, "time.out")
    p = sh(["/usr/bin/time", "-o", tfile, "-f", "%e %M"] + cmd)
    if p.returncode != 0:
        sys.exit(f"failed (exit {p.returncode}): {' '.join(cmd)[:400]}\n{p.stderr[-3000:]}")
    wall, rss = open(tfile).read().split()[-2:]
    return float(wall), int(rss), p.stdout


def med(xs):
    return statistics.median(xs) if xs else None


def batch_texts(texts, n):
    """n texts of ~128 tokens: the 128-token bench text with its words rotated by i (0 <= i < n),
    so every text differs and has nearly the same token count."""
    words = texts["128"].split()
    return [" ".join(words[i % len(words):] + words[:i % len(words)]) for i in range(n)]


def model_shape(cli, model):
    """Hyperparameters and layer-weight bytes of the model, from `stepembed inspect --json`."""
    p = sh([cli, "inspect", "--json", model])
    if p.returncode != 0:
        sys.exit(p.stderr)
    doc = json.loads(p.stdout)
    meta = {k: v["value"] for k, v in doc["metadata"].items() if "value" in v}
    arch = meta["general.architecture"]
    names = {t["name"] for t in doc["tensors"]}
    return {
        "arch": arch,
        "n_layer": meta[f"{arch}.block_count"],
        "d": meta[f"{arch}.embedding_length"],
        "ff": meta[f"{arch}.feed_forward_length"],
        # A gated FFN (nomic-bert's SiLU gate) has three FFN matrices, bert's GELU FFN two.
        "ffn_mats": 3 if any(n.endswith("ffn_gate.weight") for n in names) else 2,
        # Streamed once per forward pass: every layer tensor (token_embd is read a row a token).
        "layer_bytes": sum(t["n_bytes"] for t in doc["tensors"] if t["name"].startswith("blk.")),
    }


def flops(shape, n):
    """FLOPs of one forward pass over one text of n tokens: the weight matrix products
    (q, k, v, output: 4·d² per token; FFN: ffn_mats·d·ff) and attention (q·kᵀ and ·v: 4·n²·d),
    2 FLOPs a multiply-add; norms, softmax, rotary and pooling are left out (< 1%)."""
    d, ff = shape["d"], shape["ff"]
    per_layer = 2 * n * (4 * d * d + shape["ffn_mats"] * d * ff) + 4 * n * n * d
    return shape["n_layer"] * per_layer


def machine():
    info = {}
    for line in open("/proc/cpuinfo"):
        k, _, v = line.partition(":")
        k, v = k.strip(), v.strip()
        if k in ("model name", "cpu MHz", "cpu family", "model") and k not in info:
            info[k] = v
    flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), [])
    lscpu = sh(["lscpu"]).stdout
    tpc = next((l.split(":")[1].strip() for l in lscpu.splitlines() if l.startswith("Thread(s) per core")), "?")
    return info, flags, tpc


def git_commit():
    rev = sh(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT).stdout.strip()
    dirty = sh(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT).stdout.strip()
    return rev + (" (with uncommitted changes)" if dirty else "")


def fmt(x, spec, unit=""):
    return "–" if x is None else f"{x:{spec}}{unit}"


def ratio(a, b):
    return "–" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", default=os.path.join(ROOT, "../shared/fixtures/models/nomic-synth-12L-Q4_K_M.gguf"))
    ap.add_argument("--llama-bin", default=os.environ.get("LLAMA_BIN"), help="llama.cpp's bin directory [$LLAMA_BIN]")
    ap.add_argument("--reps", type=int, default=5, help="repetitions (median) of steady-state and one-shot runs")
    ap.add_argument("--batch-reps", type=int, help="repetitions of the batch runs [--reps]")
    ap.add_argument("--inner-reps", type=int, default=3,
                    help="embeddings per steady-state process and length (after one warm-up), their median taken")
    ap.add_argument("--batch-texts", type=int, default=64)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--modes", default="exact,fast")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 repetition, 1 inner, a 16-text batch")
    ap.add_argument("--clock-ghz", type=float, help="core clock for the peaks [/proc/cpuinfo's cpu MHz]")
    ap.add_argument("--f32-flop-per-cycle", type=float, default=32,
                    help="f32 FLOP/cycle/core (Zen 4: 2 FMA pipes × 8 lanes × 2 = 32; AVX-512 runs as two 256-bit halves)")
    ap.add_argument("--int8-ops-per-cycle", type=float, default=128,
                    help="int8 dot-product ops/cycle/core (Zen 4 VNNI: 2 × 256-bit vpdpbusd = 2 × 32 multiply-adds)")
    a = ap.parse_args()
    if a.quick:
        a.reps, a.batch_reps, a.inner_reps, a.batch_texts = 1, 1, 1, 16
    batch_reps = a.batch_reps or a.reps
    threads = [int(t) for t in a.threads.split(",")]
    modes = a.modes.split(",")
    for m in modes:
        if m not in ("exact", "fast"):
            sys.exit(f"--modes: {m} is not exact or fast")
    llama = a.llama_bin
    if llama and not os.path.exists(os.path.join(llama, "llama-bench")):
        sys.exit(f"--llama-bin {llama}: no llama-bench there")
    model = a.model
    started = time.time()
    load_start = os.getloadavg()

    build = sh(["cargo", "build", "--release", "-q", "-p", "stepembed", "--bin", "stepembed", "--example", "bench"], cwd=ROOT)
    if build.returncode != 0:
        sys.exit(build.stderr)
    cli = os.path.join(ROOT, "target/release/stepembed")
    bench = os.path.join(ROOT, "target/release/examples/bench")
    texts = json.load(open(os.path.join(ROOT, "tests/fixtures/bench-texts.json")))
    shape = model_shape(cli, model)
    tmp = tempfile.mkdtemp(prefix="stepembed-bench-")
    texts_file = os.path.join(ROOT, "tests/fixtures/bench-texts.json")
    batch = batch_texts(texts, a.batch_texts)
    batch_file = os.path.join(tmp, "batch.txt")
    with open(batch_file, "w") as f:
        f.write("\n".join(batch) + "\n")

    # Thread support: `embed --help` names --threads; examples/bench refuses an unknown argument.
    notes = []
    cli_threads = "--threads" in sh([cli, "embed", "--help"]).stdout
    probe_texts = os.path.join(tmp, "probe.json")
    json.dump({"16": texts["16"]}, open(probe_texts, "w"))
    probe = sh([bench, model, "--texts", probe_texts, "--reps", "1", "--threads", "1"])
    bench_threads = probe.returncode == 0
    if not cli_threads:
        notes.append("`stepembed embed` has no --threads: its multi-thread one-shot and batch rows are skipped.")
    if not bench_threads:
        notes.append("examples/bench has no --threads: stepembed's multi-thread steady-state rows are skipped.")
    if not llama:
        notes.append("No --llama-bin (or $LLAMA_BIN): stepembed only.")

    def ours_threads(t, supported):
        return [] if t == 1 and not supported else ["--threads", str(t)] if supported else None

    # Configurations: (section, key, command). Measurements keyed by key, one list per metric.
    steady, shots, batches = [], [], []
    for m in modes:
        for t in threads:
            ta = ours_threads(t, bench_threads)
            if ta is not None:
                steady.append((("ours", m, t), [bench, model, "--texts", texts_file, "--reps", str(a.inner_reps), "--mode", m] + ta))
            tc = ours_threads(t, cli_threads)
            if tc is not None:
                for k in LENGTHS:
                    shots.append((("ours", m, t, k), [cli, "embed", model, texts[k], "--mode", m, "--max-tokens", k, "--stats", "-q"] + tc))
                batches.append((("batch", "ours", m, t), [cli, "embed", model, "--input", batch_file, "--lines", "--mode", m, "--stats", "-q"] + tc))
    if llama:
        lb, le = os.path.join(llama, "llama-bench"), os.path.join(llama, "llama-embedding")
        for t in threads:
            steady.append((("llama", t), [lb, "-m", model, "-p", ",".join(LENGTHS), "-n", "0", "-t", str(t),
                                          "-r", str(a.inner_reps), "--repack", "0", "-o", "json"]))
            for k in LENGTHS:
                shots.append((("llama", t, k), [le, "-m", model, "-p", texts[k], "-t", str(t), "--no-repack", "-c", "2048"]))
            for c in (512, 8192):
                batches.append((("batch", "llama", t, c), [le, "-m", model, "-f", batch_file, "-t", str(t), "--no-repack",
                                                  "-c", str(c), "-b", str(c), "-ub", str(c)]))

    res = {}  # key -> {metric: [values]}

    def add(key, **metrics):
        d = res.setdefault(key, {})
        for name, v in metrics.items():
            d.setdefault(name, []).append(v)

    llama_build = None

    def run(key, cmd):
        nonlocal llama_build
        if key[0] == "ours" and len(key) == 3 and cmd[0] == bench:
            wall, rss, out = timed_stdout(cmd, tmp)
            add(key, wall=wall, rss=rss)
            for line in out.splitlines():
                r = json.loads(line)
                add(key + (r["tokens"],), ms=r["median_ms"], max_step=r["max_step_us"], p99_step=r["p99_step_us"],
                    mem=r["arena_bytes"] + r["index_bytes"])
        elif key[0] == "llama" and len(key) == 2:
            wall, rss, out = timed_stdout(cmd, tmp)
            add(key, wall=wall, rss=rss)
            for r in json.loads(out):
                llama_build = r.get("build_commit", llama_build)
                add(key + (r["n_prompt"],), ms=r["n_prompt"] / r["avg_ts"] * 1e3)
        else:
            wall, rss, err = timed(cmd, tmp)
            add(key, wall=wall, rss=rss)
            if "ours" in key[:2]:
                stats = json.loads(next(l for l in reversed(err.strip().splitlines()) if l.startswith("{")))
                add(key, tokens=stats["tokens"], texts=stats["texts"], max_step=stats["max_step_us"],
                    p99_step=stats["p99_step_us"], mem=stats["arena_bytes"] + stats["index_bytes"])

    # The repetition loop outside the configurations; every other repetition in reverse order,
    # so a slow drift of the machine's speed is shared too.
    configs = steady + shots
    for rep in range(a.reps):
        for key, cmd in (configs if rep % 2 == 0 else configs[::-1]):
            print(f"[rep {rep + 1}/{a.reps}] {' '.join(map(str, key))}", file=sys.stderr, flush=True)
            run(key, cmd)
    for rep in range(batch_reps):
        for key, cmd in (batches if rep % 2 == 0 else batches[::-1]):
            print(f"[batch rep {rep + 1}/{batch_reps}] {' '.join(map(str, key))}", file=sys.stderr, flush=True)
            run(key, cmd)

    def m(key, metric):
        return med(res.get(key, {}).get(metric, []))

    # ---- the report ----
    info, flags, tpc = machine()
    clock = a.clock_ghz or float(info.get("cpu MHz", "0")) / 1e3
    print(f"# stepembed vs llama.cpp\n")
    print(f"* machine: {info.get('model name', platform.processor())} (family {info.get('cpu family')} model "
          f"{info.get('model')}), {os.cpu_count()} logical cores, {tpc} thread(s) per core, {clock:.2f} GHz; "
          f"AVX-512 {'yes' if 'avx512f' in flags else 'no'}, VNNI {'yes' if 'avx512_vnni' in flags else 'no'}")
    print(f"* date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}; load average at start "
          f"{' '.join(f'{x:.2f}' for x in load_start)}, at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"run took {(time.time() - started) / 60:.1f} min")
    print(f"* stepembed commit {git_commit()}; llama.cpp {('build ' + llama_build) if llama_build else '–'}")
    print(f"* model {os.path.basename(model)} ({shape['arch']}, {shape['n_layer']} layers, {shape['d']} dims, "
          f"FFN {shape['ff']}, layer weights {shape['layer_bytes'] / 2**20:.1f} MiB)")
    print(f"* medians of {a.reps} interleaved repetitions (batch: {batch_reps}); steady state: each repetition one "
          f"process, the median of {a.inner_reps} embeddings after a warm-up (llama-bench: its mean of "
          f"{a.inner_reps}){'; --quick: a smoke run, not numbers to quote' if a.quick else ''}")
    print("* ratios are stepembed / llama.cpp in time: above 1, stepembed is slower")
    for n in notes:
        print(f"* note: {n}")

    tok = {"16": 16, "128": 128, "512": 512}

    def ours_len_key(base, k):
        # examples/bench reports the text's real token count (127 for the "128" text).
        return next((kk for kk in res if kk[:3] == base and len(kk) == 4 and abs(kk[3] - tok[k]) <= 1), None)

    print("\n## Steady state (one process, the text embedded repeatedly)\n")
    print("| tokens | mode | threads | stepembed ms | stepembed tok/s | llama-bench tok/s | ratio (time/token) | max / p99 step ms | arena + index MiB | stepembed RSS MiB | llama-bench RSS MiB |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k in LENGTHS:
        for mo in modes:
            for t in threads:
                ok = ours_len_key(("ours", mo, t), k)
                lms = m(("llama", t, tok[k]), "ms")
                if ok is None:
                    if lms and mo == modes[0]:
                        lrss = m(("llama", t), "rss")
                        print(f"| {tok[k]} | – | {t} | – | – | {tok[k] / lms * 1e3:.0f} | – | – | – | – | {lrss / 1024:.0f} |")
                    continue
                ms, lms = m(ok, "ms"), m(("llama", t, tok[k]), "ms")
                lrss = m(("llama", t), "rss")
                tps = ok[3] / ms * 1e3
                ltps = tok[k] / lms * 1e3 if lms else None
                print(f"| {ok[3]} | {mo} | {t} | {ms:.1f} | {tps:.0f} | {fmt(ltps, '.0f')} | {ratio(ltps, tps)} | "
                      f"{m(ok, 'max_step') / 1e3:.2f} / {m(ok, 'p99_step') / 1e3:.2f} | {m(ok, 'mem') / 2**20:.1f} | "
                      f"{m(('ours', mo, t), 'rss') / 1024:.0f} | {fmt(lrss and lrss / 1024, '.0f')} |")
    print("\n(Peak RSS is the process's over all three lengths: its largest plan.)")

    print("\n## One shot (one process per text: load, tokenize, embed, print)\n")
    print("| tokens | mode | threads | stepembed wall s | llama-embedding wall s | ratio | stepembed RSS MiB | llama-embedding RSS MiB | RSS ratio |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for k in LENGTHS:
        for mo in modes:
            for t in threads:
                key = ("ours", mo, t, k)
                if key not in res:
                    lw, lr = m(("llama", t, k), "wall"), m(("llama", t, k), "rss")
                    if lw and mo == modes[0]:
                        print(f"| {tok[k]} | – | {t} | – | {lw:.2f} | – | – | {lr / 1024:.0f} | – |")
                    continue
                w, lw = m(key, "wall"), m(("llama", t, k), "wall")
                r, lr = m(key, "rss"), m(("llama", t, k), "rss")
                print(f"| {m(key, 'tokens'):.0f} | {mo} | {t} | {w:.2f} | {fmt(lw, '.2f')} | {ratio(w, lw)} | {r / 1024:.0f} | "
                      f"{fmt(lr and lr / 1024, '.0f')} | {ratio(r, lr)} |")

    n_batch_tokens = next((m(k, "tokens") for k in res if k[:2] == ("batch", "ours") and "tokens" in res[k]), None)
    print(f"\n## Batch ({a.batch_texts} texts, {fmt(n_batch_tokens, '.0f')} tokens in all, one process)\n")
    print("| mode | threads | stepembed wall s | tok/s | RSS MiB | llama -c 512 wall s | ratio | RSS MiB | llama -c 8192 wall s | ratio | RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mo in modes:
        for t in threads:
            key = ("batch", "ours", mo, t)
            ours = "tokens" in res.get(key, {})
            if not ours and not (mo == modes[0] and ("batch", "llama", t, 512) in res):
                continue
            w = m(key, "wall") if ours else None
            cells = []
            for c in (512, 8192):
                lw, lr = m(("batch", "llama", t, c), "wall"), m(("batch", "llama", t, c), "rss")
                cells += [fmt(lw, ".2f"), ratio(w, lw), fmt(lr and lr / 1024, ".0f")]
            head = f"{w:.2f} | {m(key, 'tokens') / w:.0f} | {m(key, 'rss') / 1024:.0f}" if ours else "– | – | –"
            print(f"| {mo if ours else '–'} | {t} | {head} | {' | '.join(cells)} |")
    print("\n(Wall times include loading the model; llama-embedding also prints every embedding as text.)")

    # ---- limits ----
    f32_peak = a.f32_flop_per_cycle * clock
    i8_peak = a.int8_ops_per_cycle * clock
    print("\n## Limits (steady state)\n")
    print(f"Peak per core at {clock:.2f} GHz: f32 FMA {a.f32_flop_per_cycle:.0f} FLOP/cycle = {f32_peak:.0f} GFLOP/s; "
          f"int8 VNNI {a.int8_ops_per_cycle:.0f} ops/cycle = {i8_peak:.0f} Gop/s (times the thread count; "
          f"set with --f32-flop-per-cycle, --int8-ops-per-cycle, --clock-ghz). FLOPs per pass from the "
          f"hyperparameters (weight products + attention); weights streamed: the {shape['layer_bytes'] / 2**20:.1f} MiB "
          f"of layer tensors once per pass.\n")
    print("| tokens | engine | mode | threads | GFLOP/pass | GFLOP/s | % f32 peak | % int8 peak | weights GB/s |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for k in LENGTHS:
        rows = []
        for mo in modes:
            for t in threads:
                ok = ours_len_key(("ours", mo, t), k)
                if ok is not None:
                    rows.append(("stepembed", mo, t, ok[3], m(ok, "ms")))
        for t in threads:
            lms = m(("llama", t, tok[k]), "ms")
            if lms:
                rows.append(("llama.cpp", "–", t, tok[k], lms))
        for eng, mo, t, n, ms in rows:
            g = flops(shape, n) / 1e9
            gs = g / (ms / 1e3)
            i8 = f"{100 * gs / (i8_peak * t):.0f}%" if mo == "fast" else "–"
            print(f"| {n} | {eng} | {mo} | {t} | {g:.2f} | {gs:.1f} | {100 * gs / (f32_peak * t):.0f}% | {i8} | "
                  f"{shape['layer_bytes'] / (ms / 1e3) / 1e9:.2f} |")
    print("\n(llama.cpp's products are int8 × Q4_K/Q6_K dot products too; its % f32 peak is for comparison only.)")


if __name__ == "__main__":
    main()
