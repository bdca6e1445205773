"""Plinth and Redis Streams one record at a time, in one run, with the ratio of each figure.

Each record is sent, its acknowledgement awaited, then the next is sent, at
``--rate`` records/s (issue 13's table: 200 records/s, 100-byte values, no keys,
one partition, linger 0). Four measurements per round, interleaved so that a
slow minute of this shared VM hurts both systems alike:

  * Plinth acknowledgement: ``plinth bench produce --one-at-a-time``;
  * Plinth end to end: ``plinth bench e2e --one-at-a-time`` (send to delivery
    in a consumer process);
  * Redis acknowledgement: one XADD's round trip (``redis_peer.py produce
    --one-at-a-time``: AOF, ``appendfsync always``);
  * Redis end to end: XADD to XREAD BLOCK delivery in a consumer process.

A fresh broker (``plinth serve``, ``--fsync-policy always`` unless told) and a
fresh ``redis-server`` serve every round. Prints the median of each percentile
over the rounds, and Plinth ÷ Redis beside each.

    python -m loadtest.one_at_a_time --rounds 3
    python -m loadtest.one_at_a_time --rate 200 --messages 3000 --plinth /opt/venv-before/bin/plinth
    python -m loadtest.one_at_a_time --serve /opt/venv-before/bin/plinth   # that build's broker
    python -m loadtest.one_at_a_time --replication-factor 3   # acks="all", 3 copies

With ``--replication-factor 3`` the broker runs 3 shards on this one machine
(``--allow-replicas-on-one-node``) and the topic has 3 copies, so an
``acks="all"`` acknowledgement waits for the followers' fetch round trip as
well as the leader's fsync. Redis has no synchronous replica in this
comparison; its figures are the same as without the option.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from loadtest import redis_peer
from loadtest.fresh_broker import fresh_broker

BENCH_TIMEOUT_S = 1800.0
PERCENTILE_NAMES = ("p50", "p90", "p99", "p99.9", "max")
MEASUREMENTS = (("ack", "acknowledgement"), ("e2e", "end to end"))


def plinth_bench(plinth: str, url: str, command: str, args, cwd: Path) -> dict:
    """One ``plinth bench <command> --one-at-a-time --json`` run; its JSON report."""
    done = subprocess.run(
        [plinth, "bench", command, "--one-at-a-time", "--rate", str(args.rate), "--messages",
         str(args.messages), "--linger-ms", "0", "--partitions", "1", "--key-bytes",
         str(args.key_bytes), "--value-bytes", str(args.value_bytes), "--acks", args.acks,
         "--replication-factor", str(args.replication_factor), "--json"],
        env={**os.environ, "PLINTH_BROKER": url}, capture_output=True, text=True,
        timeout=BENCH_TIMEOUT_S, cwd=cwd)
    if done.returncode != 0:
        raise SystemExit(f"plinth bench {command} failed:\n{done.stdout}{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def redis_round(port: int, args) -> dict[str, dict]:
    return {"ack": redis_peer.run_produce_one_at_a_time(port, args.messages, args.key_bytes,
                                                        args.value_bytes, args.rate),
            "e2e": redis_peer.run_e2e(port, args.messages, args.key_bytes, args.value_bytes,
                                      args.rate, one_at_a_time=True)}


def medians(results: list[dict]) -> dict[str, float]:
    """The median over the rounds of each percentile, in microseconds."""
    return {name: statistics.median(r["latency_us"][name] for r in results)
            for name in PERCENTILE_NAMES}


def format_table(runs: dict[str, dict[str, list[dict]]], args) -> str:
    """runs[system][measurement] is a list of per-round reports (latency_us inside)."""
    lines = [f"one record at a time: {args.rate:g} records/s, {args.messages} records, "
             f"{args.value_bytes}-byte values, {args.key_bytes}-byte keys, 1 partition, "
             f"linger 0 ms, acks={args.acks}, replication factor {args.replication_factor}; median of {len(runs['plinth']['ack'])} round(s); ms "
             f"(Plinth ÷ Redis)",
             f"{'':28}" + "".join(f"{name:>16}" for name in PERCENTILE_NAMES)]
    for key, title in MEASUREMENTS:
        plinth, redis = medians(runs["plinth"][key]), medians(runs["redis"][key])
        cells = [f"{plinth[n] / 1000:.3f} ({plinth[n] / redis[n]:.2f}x)" if redis[n] else
                 f"{plinth[n] / 1000:.3f}" for n in PERCENTILE_NAMES]
        lines.append(f"{'Plinth ' + title:<28}" + "".join(f"{c:>16}" for c in cells))
        lines.append(f"{'Redis ' + title:<28}"
                     + "".join(f"{redis[n] / 1000:>16.3f}" for n in PERCENTILE_NAMES))
    return "\n".join(lines)


def serve_args(args) -> list[str]:
    """``plinth serve``'s options for this run: the fsync policy, and shards enough for
    the replication factor on one machine."""
    extra = ["--fsync-policy", args.fsync_policy]
    if args.replication_factor > 1:
        extra += ["--shards", str(args.replication_factor), "--allow-replicas-on-one-node"]
    return extra


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plinth", default="plinth", help="the plinth executable (a build)")
    parser.add_argument("--serve", default=None,
                        help="the plinth executable that runs the broker (default: --plinth); "
                             "for a build whose bench has no --one-at-a-time")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=200.0, help="records/s")
    parser.add_argument("--messages", type=int, default=3000, help="records per measurement")
    parser.add_argument("--key-bytes", type=int, default=0)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--fsync-policy", choices=("always", "interval", "never"),
                        default="always", help="the broker's")
    parser.add_argument("--appendfsync", choices=("always", "everysec", "no"), default="always",
                        help="Redis's")
    parser.add_argument("--acks", choices=("0", "1", "all"), default="all",
                        help="the producer's (the Producer's default: all)")
    parser.add_argument("--replication-factor", type=int, default=1,
                        help="copies of the topic; above 1 the broker runs that many shards on "
                             "this machine")
    parser.add_argument("--json", type=Path, default=None, help="write every raw result here")
    args = parser.parse_args(argv)
    redis_peer.require_redis_server()   # before a broker is started for nothing
    runs = {system: {key: [] for key, _ in MEASUREMENTS} for system in ("plinth", "redis")}
    with tempfile.TemporaryDirectory(prefix="plinth-one-") as work, \
            fresh_broker(args.serve or args.plinth, Path(work), *serve_args(args)) as (_, url), \
            redis_peer.redis_server(args.appendfsync) as port:
        for round_number in range(1, args.rounds + 1):
            print(f"round {round_number} of {args.rounds}", file=sys.stderr, flush=True)
            runs["plinth"]["ack"].append(plinth_bench(args.plinth, url, "produce", args, Path(work)))
            runs["plinth"]["e2e"].append(plinth_bench(args.plinth, url, "e2e", args, Path(work)))
            for key, result in redis_round(port, args).items():
                runs["redis"][key].append(result)
    if args.json is not None:
        args.json.write_text(json.dumps(runs, indent=1))
    print(format_table(runs, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
