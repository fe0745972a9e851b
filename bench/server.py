"""Throughput and latency of `stepembed serve` at 1, 8 and 32 concurrent clients, and its RSS.

Starts the server command given after `--` with `--port 0` appended (loopback only), then for
each concurrency sends a bounded number of `POST /v1/embeddings` requests (one text of a
mixed length each) from that many threads over keep-alive connections (standard library only),
and prints a Markdown table: requests/s, texts/s, p50 and p99 latency, and the server's peak
RSS (VmHWM) after each level.

    python bench/server.py [--requests 96] -- target/release/stepembed serve MODEL.gguf
"""

import argparse
import http.client
import json
import re
import signal
import subprocess
import sys
import threading
import time


def start_server(command):
    proc = subprocess.Popen(command + ["--port", "0"], stderr=subprocess.PIPE, text=True)
    while True:
        line = proc.stderr.readline()
        if not line:
            sys.exit(f"the server did not start: {command}")
        match = re.search(r"listening on http://(\S+):(\d+)", line)
        if match:
            threading.Thread(target=lambda: proc.stderr.read(), daemon=True).start()
            return proc, match.group(1), int(match.group(2))


def rss_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def text(i):
    """Mixed lengths: 8 to about 200 words."""
    words = 8 + (i * 37) % 190
    return " ".join(f"word{(i + k) % 53} item{k}" for k in range(words // 2))


def run_level(host, port, clients, requests):
    latencies = []
    lock = threading.Lock()
    failures = []
    per_client = requests // clients

    def client(c):
        conn = http.client.HTTPConnection(host, port, timeout=300)
        for r in range(per_client):
            body = json.dumps({"input": text(c * per_client + r), "model": "bench"})
            started = time.perf_counter()
            conn.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
            reply = conn.getresponse()
            payload = reply.read()
            took = time.perf_counter() - started
            if reply.status != 200:
                failures.append(f"{reply.status}: {payload[:200]!r}")
            with lock:
                latencies.append(took)
        conn.close()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    return len(latencies) / wall, pick(0.50), pick(0.99), failures


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=96, help="requests per concurrency level")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args()
    proc, host, port = start_server(args.command)
    try:
        print(f"idle RSS: {rss_kib(proc.pid, 'VmRSS') / 1024:.1f} MiB")
        print("| clients | requests | req/s | p50 ms | p99 ms | peak RSS MiB |")
        print("|---:|---:|---:|---:|---:|---:|")
        for clients in (1, 8, 32):
            requests = max(clients, args.requests // clients * clients)
            rate, p50, p99, failures = run_level(host, port, clients, requests)
            peak = rss_kib(proc.pid, "VmHWM") / 1024
            print(f"| {clients} | {requests} | {rate:.1f} | {p50 * 1e3:.0f} | {p99 * 1e3:.0f} | {peak:.1f} |", flush=True)
            if failures:
                print(f"  {len(failures)} failed, e.g. {failures[0]}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)


if __name__ == "__main__":
    main()
