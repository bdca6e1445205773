"""What consumer groups cost a shard's loop thread (issue 11, finding 6).

Drives a shard's group requests (shards/group_requests.py) the way its loop
does, without sockets: each request is decoded, handled and answered, and
after each the loop's group timers run (member expiry, the next deadline,
and pending assignment work where the code has it). Prints:

- the cost of one loop iteration's group timers with N groups that every
  member has left (``--empty-groups``, the issue measured 84 ms at 100,000),
  and with N groups of one idle member each (``--idle-groups``);
- the loop time that M members joining one group of a topic with P partitions
  take in all, and the longest single call (``--joins``, ``--partitions``;
  the issue measured 30 s for 1,000 joins of a 4,096-partition topic). The
  longest call is given in wall time and in this thread's CPU time: on a
  busy machine the wall time includes the time the thread was not running.

Runs against whichever Plinth is installed, so the same script measures the
code before and after a change:

    python loadtest/group_loop_cost.py --empty-groups 100000 --idle-groups 10000 \
        --joins 1000 --partitions 4096
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from plinth import protocol
from plinth.errors import BrokerError
from plinth.shards.group_requests import GroupRequests

SESSION_TIMEOUT_MS = 30_000
TIMER_ROUNDS = 20


def run_timers(groups: GroupRequests) -> float:
    """One loop iteration's group work (as ShardServer._run_timers and
    _poll_timeout_ms call it); returns its seconds."""
    return timed(_run_timers, groups)[0]


def timed(function, *args) -> tuple[float, float]:
    """(wall seconds, this thread's CPU seconds) of one call."""
    wall_s, cpu_s = time.perf_counter(), time.thread_time()
    function(*args)
    return time.perf_counter() - wall_s, time.thread_time() - cpu_s


def _run_timers(groups: GroupRequests) -> None:
    now_s = time.monotonic()
    if hasattr(groups, "run_timers"):   # since issue 11
        groups.run_timers(now_s)
        groups.next_timer_s()
    else:
        groups.expire(now_s)
        groups.next_expiry_s()


def join(groups: GroupRequests, request_id: int, group: str, topic: str) -> protocol.ReplyView:
    header = protocol.encode_group_heartbeat(request_id, group, "", 0, [topic], set(),
                                             SESSION_TIMEOUT_MS, "")
    return protocol.decode_reply(groups.handle(protocol.decode_request(header)))


def leave(groups: GroupRequests, request_id: int, group: str, topic: str, member_id: str) -> None:
    header = protocol.encode_group_heartbeat(request_id, group, member_id, protocol.LEAVE_EPOCH,
                                             [topic], set(), SESSION_TIMEOUT_MS, "")
    groups.handle(protocol.decode_request(header))


def measure_empty_groups(directory: Path, count: int) -> None:
    groups = GroupRequests.open("shard-measure", directory / "empty")
    groups.set_partition_counts({"t": 1})
    started = time.perf_counter()
    refused = 0
    for n in range(count):
        try:
            member = join(groups, n, f"g{n}", "t").heartbeat
            leave(groups, n, f"g{n}", "t", member.member_id)
        except BrokerError:
            refused += 1
    made_s = time.perf_counter() - started
    costs = [run_timers(groups) for _ in range(TIMER_ROUNDS)]
    print(f"{count} groups joined and left in {made_s:.1f} s ({refused} refused); "
          f"one loop iteration's group timers: median {statistics.median(costs) * 1000:.3f} ms, "
          f"max {max(costs) * 1000:.3f} ms")
    groups.close()


def measure_idle_groups(directory: Path, count: int) -> None:
    groups = GroupRequests.open("shard-measure", directory / "idle")
    groups.set_partition_counts({"t": 1})
    refused = 0
    for n in range(count):
        try:
            join(groups, n, f"g{n}", "t")
        except BrokerError:
            refused += 1
    costs = [run_timers(groups) for _ in range(TIMER_ROUNDS)]
    print(f"{count} groups of one idle member each ({refused} refused); one loop "
          f"iteration's group timers: median {statistics.median(costs) * 1000:.3f} ms, "
          f"max {max(costs) * 1000:.3f} ms")
    groups.close()


def measure_joins(directory: Path, joins: int, partitions: int) -> None:
    groups = GroupRequests.open("shard-measure", directory / "joins")
    groups.set_partition_counts({"big": partitions})
    refused = 0

    def join_or_refuse(n: int) -> None:
        nonlocal refused
        try:
            join(groups, n, "big-group", "big")
        except BrokerError:
            refused += 1
    calls = []   # (wall s, CPU s) of every join and every loop iteration's timers
    for n in range(joins):
        calls.append(timed(join_or_refuse, n))
        calls.append(timed(_run_timers, groups))
    rounds = 0
    while getattr(groups, "assignment_pending", lambda: False)():
        calls.append(timed(_run_timers, groups))
        rounds += 1
    wall_s, cpu_s = sum(c[0] for c in calls), sum(c[1] for c in calls)
    cpu_sorted = sorted(c[1] for c in calls)
    print(f"{joins} joins of a {partitions}-partition topic ({refused} refused): "
          f"{wall_s:.2f} s of loop time in all ({cpu_s:.2f} s CPU); the longest single call "
          f"{max(c[0] for c in calls) * 1000:.1f} ms wall, {cpu_sorted[-1] * 1000:.1f} ms CPU "
          f"(99.9th percentile {cpu_sorted[int(len(cpu_sorted) * 0.999)] * 1000:.1f} ms CPU); "
          f"{rounds} loop iterations of assignment work after the last join")
    groups.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--empty-groups", type=int, default=100_000)
    parser.add_argument("--idle-groups", type=int, default=10_000)
    parser.add_argument("--joins", type=int, default=1_000)
    parser.add_argument("--partitions", type=int, default=4_096)
    args = parser.parse_args()
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as directory:
        measure_empty_groups(Path(directory), args.empty_groups)
        measure_idle_groups(Path(directory), args.idle_groups)
        measure_joins(Path(directory), args.joins, args.partitions)


if __name__ == "__main__":
    main()
