"""Profile the producer's per-record path: where does one send() spend its time?

Sends 500,000 keyed 100-byte records (100,000 distinct 16-byte keys; none with
--key-bytes 0) through one Producer under cProfile, then prints the send
loop's wall time and main-thread CPU time per record and the 15 most
expensive functions by own time. The common send() is one C call
(client/_producer.c), which cProfile shows as the ``send`` method of
``ProducerBase``; Python functions below it are the slow path (once per
batch) and waiting (buffer full, flush).

    plinth serve &
    python loadtest/profile_send.py --broker tcp://127.0.0.1:7400
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import secrets
import time

from plinth import Admin, Producer
from plinth.errors import TopicExistsError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default=None)
    parser.add_argument("--messages", type=int, default=500_000)
    parser.add_argument("--key-bytes", type=int, default=16)
    args = parser.parse_args()
    with Admin(broker=args.broker) as admin:
        try:
            admin.create_topic("profile-send", 4)
        except TopicExistsError:
            pass
    keys = [secrets.token_bytes(args.key_bytes) if args.key_bytes else None
            for _ in range(100_000)]
    value = b"x" * 100
    with Producer(broker=args.broker) as producer:
        profiler = cProfile.Profile()
        profiler.enable()
        started_s, started_cpu_s = time.perf_counter(), time.thread_time()
        for i in range(args.messages):
            producer.send("profile-send", value, key=keys[i % len(keys)])
        loop_s, loop_cpu_s = time.perf_counter() - started_s, time.thread_time() - started_cpu_s
        producer.flush()
        profiler.disable()
    print(f"send loop: {loop_s / args.messages * 1e6:.3f} us/record wall, "
          f"{loop_cpu_s / args.messages * 1e6:.3f} us/record main-thread CPU (under cProfile)")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
