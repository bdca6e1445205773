"""Process tuning: what a data-path process sets for itself once started (issue 13).

One function, ``tune_data_path_process``, called when a process on the
record's path has started: at the end of a shard actor's ``__init__`` in its
Ray worker (shards/actor.py; not when a test hosts the actor), and by ``plinth serve`` and ``plinth router`` once their
router runs (plinth/server.py).

Why, as measured on the development machine (README, Performance, "The tail
at 10,000 records/s"):

- Scheduling priority: changed. Ray starts every worker process at niceness
  15 (its ``worker_niceness``), so that workers yield to its own daemons. A
  shard actor is a Ray worker, so its loop thread, its ZeroMQ I/O thread and
  its fsync threads ran at 15, while the router, the clients and every other
  program on the machine ran at 0. The kernel's fair scheduler gives a nice-15
  thread 1/28 of the weight of a nice-0 one: on a busy machine the shard's
  loop waited 40% longer in the run queue at 15 than at 0 (3.7-4.7 s against
  2.4-3.7 s in a 12-second run).
- The startup heap: frozen (``gc.freeze()``). During a 10-second run at
  10,000 records/s the router and each shard collect at most once (a
  generation-0 pass of about 0.15 ms): Plinth's per-record paths allocate no
  tracked containers. But a full collection walks every object the process
  made while it started (Ray's, pycapnp's, Plinth's modules: about 64,000 in
  a shard), which took 56-167 ms in a running router or shard, with the GIL
  held, so its loop stood still. Ray asks every worker and driver for one
  periodically (its local GC, every ``local_gc_interval_s``), and Python makes
  one when enough objects survive. Frozen objects are never scanned again: the
  same collection took 0.1-1.7 ms.
  They can still be freed by reference counting; only a cycle among them
  would stay, and what a process made while starting lives as long as it.
- The interpreter's switch interval: left alone (see the README's table).
- The OOM killer's preference: a shard at DATA_PATH_OOM_SCORE_ADJ (1000), where
  Ray's workers already are, the router (``plinth serve``, ``plinth router``) at
  ROUTER_OOM_SCORE_ADJ (500). Under a memory limit (a container's, a cgroup's)
  the kernel kills the process whose size plus oom_score_adj / 1000 of the
  limit is largest. Ray starts its workers (the shard and controller actors)
  at 1000 and leaves the driver, the process of ``plinth serve`` that runs the
  router, at 0: when clients made the router grow to 1.38 GB inside a 1.5 GiB
  limit, the kernel killed the 70 MB shard, then the controller, then fresh
  workers, and the router last (tester M, session 40). At 1000 with the
  workers, the router was killed as merely the largest: a 196 MB ``plinth
  serve`` in a 620 MB limit, and the broker was gone for good, where a killed
  shard is restarted within a second (tester T-ext, session 46). At 500 it goes
  first only when it holds half the limit more than a worker. Ray's daemons
  (raylet, GCS), which every actor needs, stay at 0 below them all.
  This runs after Ray has started: a process's children inherit its value,
  and Ray's daemons are children of ``plinth serve``. Raising it needs no
  privilege; a process already above it is left alone.
- Freed heap memory: handed back to the system every HEAP_TRIM_INTERVAL_S by a
  daemon thread (glibc's ``malloc_trim(0)``). glibc returns freed memory at
  the top of a heap by itself, but not memory below a chunk still in use:
  after hostile clients made the router hold 1 GiB of requests and left, it
  stayed at 866 MiB, a limit's headroom gone (tester M, session 40); one trim
  brought it to 125 MiB. A trim that finds nothing to return takes about
  25 us. Not where the C library is not glibc (no ``malloc_trim``).

Lowering a niceness needs the CAP_SYS_NICE capability (root has it) or an
RLIMIT_NICE that allows it. Without either the threads keep Ray's niceness
and a warning says how to avoid it: start Ray with RAY_worker_niceness=0 in
its environment, so that it never raises it.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from plinth import limits

log = logging.getLogger(__name__)

_TASKS_DIR = "/proc/self/task"   # one entry per thread of this process (Linux)
_OOM_SCORE_ADJ_FILE = "/proc/self/oom_score_adj"
_heap_trimmer: threading.Thread | None = None   # started once per process


@dataclass(frozen=True)
class TuningReport:
    """What ``tune_data_path_process`` found and did."""

    niceness_max_before: int   # the highest niceness among the process's threads
    threads_reniced: int       # threads brought down to the target niceness
    refused: str | None        # why a thread could not be reniced; None: none was refused
    objects_frozen: int        # objects the cyclic GC will not scan again
    oom_score_adj: int | None = None   # the process's now; None: not known (no /proc)
    heap_trimmed: bool = False         # a thread trims the heap (no glibc: False)


def tune_data_path_process(niceness: int = limits.DATA_PATH_NICENESS,
                           who: str = "this process",
                           oom_score_adj: int = limits.DATA_PATH_OOM_SCORE_ADJ,
                           heap_trim_interval_s: float = limits.HEAP_TRIM_INTERVAL_S,
                           ) -> TuningReport:
    """Bring every thread of this process that runs above ``niceness`` down to it,
    freeze the objects made so far out of the cyclic GC's reach, raise the
    process's OOM score adjustment to ``oom_score_adj``, and start a thread that
    trims its heap every ``heap_trim_interval_s`` (see the module).

    Any thread may call it, once the process has started (imported its modules,
    built its long-lived state): threads started later inherit the niceness of
    the thread that starts them, and objects made later are collected as usual.
    A thread already at or below ``niceness`` is left alone: this never lowers a
    process's priority. ``who`` names the process in the warning logged when
    renicing is refused.
    """
    report = _renice_threads(niceness, who)
    gc.freeze()
    return TuningReport(*report, objects_frozen=gc.get_freeze_count(),
                        oom_score_adj=_raise_oom_score_adj(oom_score_adj, who),
                        heap_trimmed=_start_heap_trimmer(heap_trim_interval_s))


def _start_heap_trimmer(interval_s: float) -> bool:
    """Start the daemon thread that calls glibc's ``malloc_trim(0)`` every
    ``interval_s``, once per process; False where the C library has none."""
    global _heap_trimmer
    if interval_s <= 0:
        raise AssertionError(f"a heap trim interval of {interval_s} s")
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):   # not glibc
        return False
    malloc_trim.argtypes, malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    if _heap_trimmer is None:
        _heap_trimmer = threading.Thread(target=_trim_heap_forever,
                                         args=(malloc_trim, interval_s),
                                         name="plinth-heap-trim", daemon=True)
        _heap_trimmer.start()
    return True


def _trim_heap_forever(malloc_trim, interval_s: float) -> None:
    """The heap trimmer's thread: until the process ends."""
    while True:
        time.sleep(interval_s)   # a timer, not a wait for anything
        malloc_trim(0)


def _raise_oom_score_adj(wanted: int, who: str) -> int | None:
    """The process's oom_score_adj, raised to ``wanted`` if it was below (never
    lowered); None where /proc does not say. A refused write is a warning."""
    try:
        current = int(Path(_OOM_SCORE_ADJ_FILE).read_text())
    except (OSError, ValueError):
        return None
    if current >= wanted:
        return current
    try:
        Path(_OOM_SCORE_ADJ_FILE).write_text(str(wanted))
    except OSError as exc:
        log.warning("%s: could not raise its oom_score_adj from %d to %d (%s): under a "
                    "memory limit the OOM killer may kill a shard before it", who, current,
                    wanted, exc)
        return current
    return wanted


def _renice_threads(niceness: int, who: str) -> tuple[int, int, str | None]:
    """(highest niceness before, threads reniced, why one was refused or None)."""
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
    return max(before, default=niceness), reniced, refused


def _thread_ids() -> list[int]:
    """Every thread of this process; where /proc has no task list, the calling thread
    (0: setpriority's "the caller")."""
    try:
        return sorted(int(tid) for tid in os.listdir(_TASKS_DIR))
    except FileNotFoundError:
        return [0]
