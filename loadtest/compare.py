"""Plinth against its peer (Redis Streams), and one Plinth build against another, in one run.

This machine's speed varies by up to 2x from day to day, so the README gives
every Plinth figure beside the peer's figure from the same run, as a ratio.
This script makes such a run: for each Plinth build given (a ``plinth``
executable: the checkout's, or an older commit installed in another venv), it
starts a fresh ``plinth serve`` on 127.0.0.1 with its own data directory, runs
``plinth bench produce``, ``consume`` and ``e2e``, and stops it; then it runs
``loadtest/redis_peer.py`` with the same record sizes. Rounds interleave the
systems (A, B, Redis, A, B, Redis, ...) so that a slow minute of the VM hurts
them alike; the table shows each system's median over the rounds.

    python loadtest/compare.py                                   # this checkout vs Redis
    python loadtest/compare.py --plinth before=/opt/venv-before/bin/plinth \\
                               --plinth after=plinth --rounds 3  # before/after vs Redis

Prints one table per benchmark: records/s, the ratio to Redis, and latency
percentiles; ``--json FILE`` also keeps every raw result.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

try:   # run as python -m loadtest.compare, from the repository's root
    from loadtest.redis_peer import free_port
except ModuleNotFoundError:   # run as a script: loadtest/ is on sys.path, not its parent
    from redis_peer import free_port

# Without the web console `plinth serve` starts by default (an environment variable,
# which builds from before the console ignore, rather than --console-listen off).
NO_CONSOLE_ENV = {**os.environ, "PLINTH_CONSOLE_LISTEN": "off"}

HERE = Path(__file__).resolve().parent
READY_TIMEOUT_S = 180.0
BENCH_TIMEOUT_S = 1800.0
STOP_TIMEOUT_S = 120.0


def bench_commands(args) -> list[tuple[str, list[str]]]:
    sizes = ["--key-bytes", str(args.key_bytes), "--value-bytes", str(args.value_bytes)]
    return [
        ("produce", ["produce", "--messages", str(args.produce_messages), *sizes]),
        ("consume", ["consume", "--messages", str(args.consume_messages), "--topic",
                     "compare-consume", *sizes]),
        ("e2e", ["e2e", "--rate", str(args.rate), "--messages", str(args.e2e_messages),
                 "--linger-ms", str(args.linger_ms), *sizes]),
    ]


def run_plinth(executable: str, args) -> dict[str, dict]:
    """Start a broker with ``executable``, run the three benchmarks, stop it."""
    data_dir = Path(tempfile.mkdtemp(prefix="plinth-compare-"))
    url = f"tcp://127.0.0.1:{free_port()}"
    # From a neutral directory: Ray puts the driver's working directory on its
    # workers' sys.path, and a checkout's plinth/ there would shadow the build's.
    server = subprocess.Popen([executable, "serve", "--data-dir", str(data_dir), "--listen", url],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              cwd=data_dir, env=NO_CONSOLE_ENV)
    try:
        _wait_ready(server, url)
        env = {**os.environ, "PLINTH_BROKER": url}
        results = {}
        for name, command in bench_commands(args):
            done = subprocess.run([executable, "bench", *command, "--json"], env=env,
                                  capture_output=True, text=True, timeout=BENCH_TIMEOUT_S,
                                  cwd=data_dir)
            if done.returncode != 0:
                raise SystemExit(f"{executable} bench {name} failed:\n{done.stdout}{done.stderr}")
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        return results
    finally:
        server.terminate()
        try:
            server.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


def _wait_ready(server: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    lines = []
    for line in server.stdout:
        lines.append(line)
        if f"ready: listening on {url}" in line:
            threading.Thread(target=server.stdout.read, daemon=True).start()   # keep draining
            return
        if time.monotonic() > deadline:
            break
    raise SystemExit(f"plinth serve did not get ready on {url} (status {server.poll()}):\n"
                     + "".join(lines[-30:]))


def run_redis(args) -> dict[str, dict]:
    sizes = ["--key-bytes", str(args.key_bytes), "--value-bytes", str(args.value_bytes)]
    results = {}
    for name, messages in (("produce", args.produce_messages), ("consume", args.consume_messages),
                           ("e2e", args.e2e_messages)):
        extra = ["--rate", str(args.rate)] if name == "e2e" else []
        done = subprocess.run([sys.executable, str(HERE / "redis_peer.py"), name, "--messages",
                               str(messages), *sizes, *extra, "--json"],
                              capture_output=True, text=True, timeout=BENCH_TIMEOUT_S)
        if done.returncode != 0:
            raise SystemExit(f"redis_peer.py {name} failed:\n{done.stdout}{done.stderr}")
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def median_of(results: list[dict], path: tuple[str, ...]) -> float | None:
    values = []
    for result in results:
        value = result
        for key in path:
            value = None if value is None else value.get(key)
        if value is not None:
            values.append(value)
    return statistics.median(values) if values else None


def print_tables(runs: dict[str, list[dict]], args) -> None:
    print(f"\n{args.rounds} round(s), medians; {args.key_bytes}-byte keys, "
          f"{args.value_bytes}-byte values; e2e at {args.rate:g} records/s, "
          f"linger {args.linger_ms:g} ms")
    for bench in ("produce", "consume", "e2e"):
        per_system = {name: [r[bench] for r in rounds] for name, rounds in runs.items()}
        peer = median_of(per_system["redis"], ("records_per_s",))
        print(f"\n{bench:8} {'system':>14} {'records/s':>12} {'x redis':>8} "
              f"{'p50 ms':>8} {'p99 ms':>8}")
        for name, results in per_system.items():
            rate = median_of(results, ("records_per_s",))
            p50 = median_of(results, ("latency_us", "p50"))
            p99 = median_of(results, ("latency_us", "p99"))
            ratio = f"{rate / peer:8.2f}" if peer else f"{'-':>8}"
            latency = (f"{p50 / 1000:8.3f} {p99 / 1000:8.3f}" if p50 is not None
                       else f"{'-':>8} {'-':>8}")
            print(f"{'':8} {name:>14} {rate:>12,.0f} {ratio} {latency}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plinth", action="append", default=None, metavar="NAME=EXECUTABLE",
                        help="a Plinth build to measure (repeatable; default: this=plinth)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--produce-messages", type=int, default=2_000_000)
    parser.add_argument("--consume-messages", type=int, default=5_000_000)
    parser.add_argument("--e2e-messages", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=10_000)
    parser.add_argument("--linger-ms", type=float, default=1)
    parser.add_argument("--key-bytes", type=int, default=16)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None, help="write every raw result here")
    args = parser.parse_args(argv)
    builds = [spec.split("=", 1) for spec in (args.plinth or ["this=plinth"])]
    runs: dict[str, list[dict]] = {name: [] for name, _ in builds} | {"redis": []}
    for round_number in range(1, args.rounds + 1):
        for name, executable in builds:
            print(f"round {round_number}: {name} ({executable})", file=sys.stderr, flush=True)
            runs[name].append(run_plinth(executable, args))
        print(f"round {round_number}: redis", file=sys.stderr, flush=True)
        runs["redis"].append(run_redis(args))
    if args.json is not None:
        args.json.write_text(json.dumps(runs, indent=1))
    print_tables(runs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
