"""Process tuning: what a data-path process sets for itself when it starts (issue 13).

One function, ``tune_data_path_process``, called first thing in a shard
actor's ``__init__`` (shards/actor.py), before the shard starts its threads.

Why, as measured on the development machine (README, Performance, "The tail
at 10,000 records/s"):

- Scheduling priority: changed. Ray starts every worker process at niceness
  15 (its ``worker_niceness``), so that workers yield to its own daemons. A
  shard actor is a Ray worker, so its loop thread, its ZeroMQ I/O thread and
  its fsync threads ran at 15, while the router, the clients and every other
  program on the machine ran at 0. The kernel's fair scheduler gives a nice-15
  thread 1/28 of the weight of a nice-0 one, and a waking nice-15 thread does
  not preempt a running nice-0 one: on a busy machine each record waited at
  the shard for the CPU, twice (the produce, then the fetch it wakes).
- The cyclic GC: left alone. During a 10-second run at 10,000 records/s the
  router and each shard collect at most once (a generation-0 pass of about
  0.15 ms), the clients a few times (2 ms in all): Plinth's per-record paths
  allocate no tracked containers.
- The interpreter's switch interval: left alone (see the README's table).

Lowering a niceness needs the CAP_SYS_NICE capability (root has it) or an
RLIMIT_NICE that allows it. Without either the threads keep Ray's niceness
and a warning says how to avoid it: start Ray with RAY_worker_niceness=0 in
its environment, so that it never raises it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from plinth import limits

log = logging.getLogger(__name__)

_TASKS_DIR = "/proc/self/task"   # one entry per thread of this process (Linux)


@dataclass(frozen=True)
class TuningReport:
    """What ``tune_data_path_process`` found and did."""

    niceness_max_before: int   # the highest niceness among the process's threads
    threads_reniced: int       # threads brought down to the target niceness
    refused: str | None        # why a thread could not be reniced; None: none was refused


def tune_data_path_process(niceness: int = limits.DATA_PATH_NICENESS,
                           who: str = "this process") -> TuningReport:
    """Bring every thread of this process that runs above ``niceness`` down to it.

    Any thread may call it; call it before the process starts its own threads,
    although those started later inherit the niceness of the thread that starts
    them, so a thread reniced here passes it on. A thread already at or below
    ``niceness`` is left alone: this never lowers a process's priority. ``who``
    names the process in the warning logged when renicing is refused.
    """
    before, reniced, refused = [], 0, None
    for tid in _thread_ids():
        try:
            current = os.getpriority(os.PRIO_PROCESS, tid)
            before.append(current)
            if current > niceness:
                os.setpriority(os.PRIO_PROCESS, tid, niceness)
                reniced += 1
        except ProcessLookupError:   # the thread ended meanwhile
            continue
        except PermissionError as exc:
            refused = (f"{who}: could not lower thread {tid}'s niceness from {current} to "
                       f"{niceness} ({exc}); its data path competes for the CPU at "
                       f"niceness {current}. Give it CAP_SYS_NICE, or start Ray with "
                       f"RAY_worker_niceness={niceness} in its environment")
            log.warning("%s", refused)
            break
    return TuningReport(max(before, default=niceness), reniced, refused)


def _thread_ids() -> list[int]:
    """Every thread of this process; where /proc has no task list, the calling thread
    (0: setpriority's "the caller")."""
    try:
        return sorted(int(tid) for tid in os.listdir(_TASKS_DIR))
    except FileNotFoundError:
        return [0]
