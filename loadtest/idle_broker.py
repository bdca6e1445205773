"""What an idle embedded broker costs: its processes, their memory and their CPU.

Starts a fresh ``plinth serve`` (embedded Ray, its own data dir, a free port on
127.0.0.1, nothing connected), waits ``--settle-s`` after ``plinth ready``,
then reads /proc over the server's whole process tree (the server, the
processes Ray starts for it, the actors' workers under the raylet):

  * processes: how many the tree holds at the end;
  * memory: the sum of their RSS, and of their PSS (``smaps_rollup``: shared
    pages split between the processes that share them, so the sum counts
    each page once);
  * CPU: user + system time the tree used over ``--seconds``, as % of one
    core (from /proc/<pid>/stat deltas; a process that started in between
    counts from its start).

With ``--topics N``, N one-partition topics are created first (in createTopics
batches of 100, as loadtest/console_scale.py makes them): what a broker that
holds many topics costs while nothing uses them (the routers' routing refresh).

It prints one line per process, the three figures, and stops the server.

    python -m loadtest.idle_broker                       # 60 s
    python -m loadtest.idle_broker --topics 10000 --seconds 30
    python -m loadtest.idle_broker --seconds 20 --json
    python -m loadtest.idle_broker --plinth /opt/venv-before/bin/plinth   # another build
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from loadtest.console_scale import create_topics
from loadtest.fresh_broker import fresh_broker

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
MIB = 1 << 20


@dataclass
class ProcessCost:
    pid: int
    name: str
    rss_mib: float
    pss_mib: float
    cpu_percent: float          # of one core, over the measured interval


def children_of() -> dict[int, list[int]]:
    """{parent pid: [child pids]} of every process on the machine."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _stat_fields(int(entry.name))
            if stat is not None:
                children.setdefault(int(stat[1]), []).append(int(entry.name))
    return children


def process_tree(root_pid: int) -> list[int]:
    """``root_pid`` and all its descendants, parents first."""
    children, tree, stack = children_of(), [], [root_pid]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, ()))
    return tree


def cpu_ticks(pid: int) -> int | None:
    """User + system clock ticks the process has used (fields 14 and 15 of stat)."""
    stat = _stat_fields(pid)
    return None if stat is None else int(stat[11]) + int(stat[12])


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after "(comm)", from field 3 (state) on."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].decode().split()
    except (OSError, IndexError):
        return None


def memory_mib(pid: int) -> tuple[float, float]:
    """(RSS, PSS) in MiB; zeros if the process is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            rss = int(f.read().split()[1]) * PAGE_BYTES / MIB
        with open(f"/proc/{pid}/smaps_rollup") as f:
            pss = next(int(line.split()[1]) for line in f if line.startswith("Pss:")) / 1024
    except (OSError, StopIteration, ValueError, IndexError):
        return 0.0, 0.0
    return rss, pss


def process_name(pid: int) -> str:
    """A short name: the actor's ``ray::Name``, else the script or binary run."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return "?"
    if not argv:
        return "?"
    if argv[0].startswith("ray::"):
        return argv[0].split()[0]
    for arg in argv[1:3]:
        if arg == "-m" or arg.endswith(".py"):
            return Path(argv[argv.index(arg) + 1] if arg == "-m" else arg).name
    if "serve" in argv:
        return "plinth serve"
    return Path(argv[0]).name


def measure(root_pid: int, seconds: float) -> list[ProcessCost]:
    """The tree's cost over ``seconds``: CPU from stat deltas, memory at the end."""
    before = {pid: cpu_ticks(pid) for pid in process_tree(root_pid)}
    started = time.monotonic()
    time.sleep(seconds)   # the interval being measured, not a wait for a condition
    elapsed_s = time.monotonic() - started
    costs = []
    for pid in process_tree(root_pid):
        ticks = cpu_ticks(pid)
        if ticks is None:
            continue
        used = ticks - (before.get(pid) or 0)
        rss, pss = memory_mib(pid)
        costs.append(ProcessCost(pid, process_name(pid), round(rss, 1), round(pss, 1),
                                 round(100 * used / CLOCK_TICKS_PER_S / elapsed_s, 2)))
    return costs


def totals(costs: list[ProcessCost]) -> dict:
    return {"processes": len(costs),
            "rss_mib": round(sum(c.rss_mib for c in costs), 1),
            "pss_mib": round(sum(c.pss_mib for c in costs), 1),
            "cpu_percent_of_one_core": round(sum(c.cpu_percent for c in costs), 2)}


def format_report(costs: list[ProcessCost], seconds: float) -> str:
    lines = [f"{'pid':>8}  {'process':<28} {'RSS MiB':>8} {'PSS MiB':>8} {'CPU %':>7}"]
    lines += [f"{c.pid:>8}  {c.name:<28} {c.rss_mib:>8.1f} {c.pss_mib:>8.1f} {c.cpu_percent:>7.2f}"
              for c in costs]
    total = totals(costs)
    lines.append(f"idle broker over {seconds:g} s: {total['processes']} processes, "
                 f"RSS {total['rss_mib']:.0f} MiB (PSS {total['pss_mib']:.0f} MiB), "
                 f"CPU {total['cpu_percent_of_one_core']:.2f} % of one core")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="CPU measured over this long")
    parser.add_argument("--settle-s", type=float, default=15.0,
                        help="wait this long after `plinth ready` before measuring")
    parser.add_argument("--plinth", default="plinth", help="the plinth executable (a build)")
    parser.add_argument("--topics", type=int, default=0,
                        help="create this many one-partition topics first")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="plinth-idle-") as work, \
            fresh_broker(args.plinth, Path(work)) as (server, url):
        create_topics(url, args.topics)
        time.sleep(args.settle_s)   # start-up work (workers, first reports) is not idle
        costs = measure(server.pid, args.seconds)
    if args.json:
        print(json.dumps({**totals(costs), "seconds": args.seconds, "topics": args.topics,
                          "per_process": [asdict(c) for c in costs]}))
    else:
        print(format_report(costs, args.seconds)
              + (f", holding {args.topics} topics" if args.topics else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
