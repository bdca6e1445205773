"""How long one createTopic takes on a broker that already holds many topics.

Starts a fresh ``plinth serve`` (embedded Ray, its own data dir, a free port on
127.0.0.1), creates ``--topics`` one-partition topics in createTopics batches
of 100 (console_scale.create_topics), then times ``--creates`` single
createTopic calls, one after the other, from one Admin client: each saves the
controller's metadata.json and a shard's manifest.json and sends the routers a
new routing table, so each grows with the topics held. Prints the p50, p90 and
slowest, and the creates per second; stops the server.

    python -m loadtest.create_at_scale                        # 5,000 topics, 200 creates
    python -m loadtest.create_at_scale --topics 9800 --creates 200 --json   # up to the limit
    python -m loadtest.create_at_scale --plinth /opt/venv-before/bin/plinth   # another build
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from loadtest.console_scale import create_topics
from loadtest.direct_vs_router import percentile
from loadtest.fresh_broker import fresh_broker
from plinth import limits
from plinth.client.admin import Admin


def time_creates(url: str, creates: int) -> list[float]:
    """The seconds of each of ``creates`` single createTopic calls, in order."""
    seconds = []
    with Admin(broker=url, request_timeout_ms=120_000) as admin:
        for i in range(creates):
            started_s = time.monotonic()
            admin.create_topic(f"single-{i:05d}", 1)
            seconds.append(time.monotonic() - started_s)
    return seconds


def summary(seconds: list[float], topics: int) -> dict:
    return {"topics_held": topics, "creates": len(seconds),
            "p50_ms": round(1000 * percentile(seconds, 50), 1),
            "p90_ms": round(1000 * percentile(seconds, 90), 1),
            "max_ms": round(1000 * max(seconds), 1),
            "creates_per_s": round(len(seconds) / sum(seconds), 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topics", type=int, default=5000, help="topics held before timing")
    parser.add_argument("--creates", type=int, default=200, help="single creates timed")
    parser.add_argument("--shards", type=int, default=None, help="the server's --shards")
    parser.add_argument("--plinth", default="plinth", help="the plinth executable (a build)")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args(argv)
    if args.topics < 0 or args.creates < 1:
        parser.error("--topics must be 0 or more and --creates 1 or more")
    if args.topics + args.creates > limits.TOPICS_MAX:
        parser.error(f"--topics {args.topics} plus --creates {args.creates} is more than a "
                     f"broker's limit of {limits.TOPICS_MAX} topics")
    extra = () if args.shards is None else ("--shards", str(args.shards))
    with tempfile.TemporaryDirectory(prefix="plinth-creates-") as work, \
            fresh_broker(args.plinth, Path(work), *extra) as (_, url):
        create_topics(url, args.topics)
        report = summary(time_creates(url, args.creates), args.topics)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['creates']} single createTopic calls on a broker holding "
              f"{report['topics_held']} topics: p50 {report['p50_ms']} ms, p90 "
              f"{report['p90_ms']} ms, max {report['max_ms']} ms, "
              f"{report['creates_per_s']} creates/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
