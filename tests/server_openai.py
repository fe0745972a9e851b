"""The official `openai` Python client against `stepembed serve`.

Starts the server command given after `--` with `--port 0` appended (loopback), reads the bound
address from its stderr, then:
  1. computes every text's expected embedding once, one request at a time, as floats;
  2. runs 8 client threads x 25 requests of mixed sizes through `openai.OpenAI(base_url=...)`
     with its default encoding (base64), and checks that every result equals the expected one
     and that none is lost;
  3. with --cli BIN, checks the expected embeddings against `BIN embed MODEL TEXT...` too;
  4. sends SIGTERM and checks that the server exits 0.

    python tests/server_openai.py [--cli target/debug/stepembed] -- \
        target/debug/stepembed serve tests/fixtures/models/minilm-l6-Q4_K_M.gguf

Prints `N passed, N failed` and exits non-zero on any failure.
"""

import argparse
import json
import re
import signal
import subprocess
import sys
import threading
import time

import openai

CLIENTS = 8
REQUESTS_PER_CLIENT = 25
TOLERANCE = 1e-6


def texts():
    """Texts of mixed lengths: a few words to a few hundred tokens."""
    base = [
        "Hello world",
        "The quick brown fox jumps over the lazy dog.",
        "stepembed streams the weights of a GGUF model and never loads them.",
        "Embeddings map text to vectors; similar meanings land close together.",
    ]
    out = list(base)
    for n in (5, 20, 40, 80):
        out.append(" ".join(f"token{i % 31} word{i}" for i in range(n)))
    return out


def start_server(command):
    """Starts the server, returns (process, base address)."""
    proc = subprocess.Popen(command + ["--port", "0"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        match = re.search(r"listening on (http://\S+)", line)
        if match:
            # Keep draining stderr so the server never blocks on a full pipe.
            threading.Thread(target=lambda: proc.stderr.read(), daemon=True).start()
            return proc, match.group(1)
    proc.kill()
    sys.exit(f"the server did not start: {command}")


def max_diff(a, b):
    if len(a) != len(b):
        return float("inf")
    return max(abs(x - y) for x, y in zip(a, b))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cli", help="the stepembed binary, to check against `stepembed embed`")
    parser.add_argument("command", nargs="+", help="the server command (after --)")
    args = parser.parse_args()

    proc, base = start_server(args.command)
    client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
    corpus = texts()
    passed, failed = 0, 0

    def check(ok, what):
        nonlocal passed, failed
        if ok:
            passed += 1
        else:
            failed += 1
            print("FAIL:", what, flush=True)

    try:
        expected = [
            client.embeddings.create(model="m", input=t, encoding_format="float").data[0].embedding
            for t in corpus
        ]
        check(len(expected) == len(corpus), "expected embeddings computed")

        if args.cli:
            model = next(a for a in args.command if a.endswith(".gguf"))
            lines = subprocess.run(
                [args.cli, "embed", model, "--", *corpus], check=True, capture_output=True, text=True
            ).stdout.splitlines()
            cli = [json.loads(line)["embedding"] for line in lines]
            worst = max(max_diff(a, b) for a, b in zip(cli, expected))
            check(len(cli) == len(corpus) and worst <= TOLERANCE, f"server equals the CLI (max diff {worst})")

        results = {}
        errors = []

        def run_client(c):
            try:
                for r in range(REQUESTS_PER_CLIENT):
                    size = 1 + (c * 7 + r * 3) % 6
                    pick = [(c + r + k) % len(corpus) for k in range(size)]
                    batch = [corpus[k] for k in pick]
                    # The client's default encoding is base64.
                    reply = client.embeddings.create(model="stepembed", input=batch)
                    results[(c, r)] = (pick, [d.embedding for d in reply.data], reply.model)
            except Exception as e:  # noqa: BLE001 - every failure is reported
                errors.append(f"client {c}: {e!r}")

        threads = [threading.Thread(target=run_client, args=(c,)) for c in range(CLIENTS)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.monotonic() - started
        check(not errors, f"no client failed: {errors[:3]}")
        check(len(results) == CLIENTS * REQUESTS_PER_CLIENT, f"all requests answered ({len(results)})")
        wrong = 0
        for pick, vectors, model in results.values():
            ok = model == "stepembed" and len(vectors) == len(pick)
            ok = ok and all(max_diff(v, expected[k]) <= TOLERANCE for v, k in zip(vectors, pick))
            wrong += not ok
        check(wrong == 0, f"{wrong} requests with a wrong result")
        print(f"{len(results)} concurrent requests in {took:.1f} s", flush=True)

        try:
            client.embeddings.create(model="m", input=[])
            check(False, "empty input is refused")
        except openai.BadRequestError as e:
            check(e.status_code == 400, "empty input is a 400")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    check(code == 0, f"the server exits 0 on SIGTERM (got {code})")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
