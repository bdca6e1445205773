"""Profile the producer's per-record path: where does one send() spend its time?

Sends 500,000 keyed 100-byte records (100,000 distinct 16-byte keys) through one
Producer under cProfile and prints the 15 most expensive functions by own time.

    plinth serve &
    python loadtest/profile_send.py --broker tcp://127.0.0.1:7400
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import secrets

from plinth import Admin, Producer
from plinth.errors import TopicExistsError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default=None)
    parser.add_argument("--messages", type=int, default=500_000)
    args = parser.parse_args()
    with Admin(broker=args.broker) as admin:
        try:
            admin.create_topic("profile-send", 4)
        except TopicExistsError:
            pass
    keys = [secrets.token_bytes(16) for _ in range(100_000)]
    value = b"x" * 100
    with Producer(broker=args.broker) as producer:
        profiler = cProfile.Profile()
        profiler.enable()
        for i in range(args.messages):
            producer.send("profile-send", value, key=keys[i % len(keys)])
        producer.flush()
        profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
