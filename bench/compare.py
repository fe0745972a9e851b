#!/usr/bin/env python3
"""Side-by-side benchmark: stepembed and llama.cpp on the same machine, in the same run.

    python3 bench/compare.py [MODEL.gguf] [--llama-bin DIR] [--reps N]

MODEL defaults to ../shared/fixtures/models/nomic-synth-12L-Q4_K_M.gguf. DIR (or $LLAMA_BIN) holds
llama.cpp's llama-bench and llama-embedding, built separately (this repository ships no llama.cpp
code or build recipe); without it only stepembed is measured.

Measures, one thread each:
* steady state: each bench text (16, 128, 512 tokens) embedded repeatedly in one process —
  stepembed's examples/bench.rs, llama-bench's pp16/pp128/pp512;
* one shot: one process per text — `stepembed embed --stats` and `llama-embedding`, wall time and
  peak RSS from /usr/bin/time.
Prints a markdown table. Run it a few times: the machines are shared and noisy.
"""
import json, os, platform, re, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def timed(cmd):
    """Runs cmd under /usr/bin/time; returns (wall s, peak RSS KiB, completed process)."""
    p = sh(["/usr/bin/time", "-f", "TIME %e %M"] + cmd)
    m = re.search(r"TIME ([0-9.]+) ([0-9]+)", p.stderr)
    if p.returncode != 0 or not m:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr[-2000:]}")
    return float(m.group(1)), int(m.group(2)), p


def main():
    args = sys.argv[1:]
    llama = os.environ.get("LLAMA_BIN")
    reps = 10
    if "--llama-bin" in args:
        i = args.index("--llama-bin"); llama = args[i + 1]; del args[i:i + 2]
    if "--reps" in args:
        i = args.index("--reps"); reps = int(args[i + 1]); del args[i:i + 2]
    model = args[0] if args else os.path.join(ROOT, "../shared/fixtures/models/nomic-synth-12L-Q4_K_M.gguf")
    texts = json.load(open(os.path.join(ROOT, "tests/fixtures/bench-texts.json")))

    build = sh(["cargo", "build", "--release", "-q", "-p", "stepembed", "--bin", "stepembed", "--example", "bench"], cwd=ROOT)
    if build.returncode != 0:
        sys.exit(build.stderr)
    cli = os.path.join(ROOT, "target/release/stepembed")
    bench = os.path.join(ROOT, "target/release/examples/bench")

    ours = {}
    p = sh([bench, model, "--reps", str(reps)], cwd=ROOT)
    if p.returncode != 0:
        sys.exit(p.stderr)
    for line in p.stdout.splitlines():
        r = json.loads(line)
        ours[r["tokens"]] = r

    shots = {}
    for key in ["16", "128", "512"]:
        wall, rss, p = timed([cli, "embed", model, texts[key], "--max-tokens", key, "--stats"])
        stats = json.loads(p.stderr.strip().splitlines()[-2])
        shots[key] = {"wall": wall, "rss": rss, "stats": stats}
        if llama:
            lwall, lrss, _ = timed([os.path.join(llama, "llama-embedding"), "-m", model, "-p", texts[key],
                                    "-t", "1", "--no-repack", "-c", "2048"])
            shots[key].update(llama_wall=lwall, llama_rss=lrss)

    lb = {}
    if llama:
        p = sh([os.path.join(llama, "llama-bench"), "-m", model, "-p", "16,128,512", "-n", "0", "-t", "1",
                "-r", "5", "--repack", "0", "-o", "json"])
        if p.returncode != 0:
            sys.exit("llama-bench failed:\n" + p.stderr[-2000:])
        for r in json.loads(p.stdout):
            lb[r["n_prompt"]] = r["avg_ts"]

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    print(f"Machine: {cpu}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}; model {os.path.basename(model)}; 1 thread.\n")
    print("Steady state (one process, each text embedded repeatedly; median):\n")
    print("| tokens | stepembed ms/embedding | stepembed tok/s | llama-bench tok/s | ratio (time) | steps | max step ms | p99 step ms | arena + index |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (key, n_prompt) in [("16", 16), ("128", 128), ("512", 512)]:
        r = next(v for k, v in ours.items() if abs(k - n_prompt) <= 1)
        l = lb.get(n_prompt)
        ratio = f"{l / r['tokens_per_s']:.2f}×" if l else "–"
        mem = (r["arena_bytes"] + r["index_bytes"]) / 2**20
        print(f"| {r['tokens']} | {r['median_ms']:.1f} | {r['tokens_per_s']:.0f} | {l:.0f} | {ratio} | {r['steps_per_embedding']} | "
              f"{r['max_step_us'] / 1e3:.2f} | {r['p99_step_us'] / 1e3:.2f} | {mem:.1f} MiB |" if l else
              f"| {r['tokens']} | {r['median_ms']:.1f} | {r['tokens_per_s']:.0f} | – | – | {r['steps_per_embedding']} | "
              f"{r['max_step_us'] / 1e3:.2f} | {r['p99_step_us'] / 1e3:.2f} | {mem:.1f} MiB |")
    print("\nOne shot (one process per text: load, tokenize, embed, print):\n")
    print("| tokens | stepembed wall | stepembed peak RSS | max / p99 step | llama-embedding wall | llama-embedding peak RSS |")
    print("|---:|---:|---:|---:|---:|---:|")
    for key in ["16", "128", "512"]:
        s = shots[key]; st = s["stats"]
        lw = f"{s['llama_wall']:.2f} s" if "llama_wall" in s else "–"
        lr = f"{s['llama_rss'] / 1024:.0f} MiB" if "llama_rss" in s else "–"
        print(f"| {st['tokens']} | {s['wall']:.2f} s | {s['rss'] / 1024:.1f} MiB | {st['max_step_us'] / 1e3:.2f} / "
              f"{st['p99_step_us'] / 1e3:.2f} ms | {lw} | {lr} |")


if __name__ == "__main__":
    main()
