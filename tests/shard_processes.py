"""Which process serves each shard of a broker, for the tests that kill shard actors.

A running shard holds its data directory's lock file open
(``<data dir>/shards/<shard id>/.lock``, flocked by ShardServer.start) for as
long as it lives, so the process with that file open is the shard: the test
asks the kernel (``/proc/<pid>/fd``), not the broker. Only processes whose
title is Ray's ``ray::ShardActor`` are looked at. While a shard is between
processes (the old one dying, the new one starting) it may be missing from the
answer, or appear twice: it is then left out, and the caller asks again.
Linux only, like the fault tests.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

from tests.support import wait_until

SHARD_PROCESS_TITLE = b"ray::ShardActor"
LOCK_FILE = ".lock"


def kill_after_failover(pid: int, failed_over: Callable[[], bool], timeout_s: float) -> None:
    """SIGKILL a shard's process after its partitions got other leaders: SIGSTOP it,
    wait until ``failed_over()`` (the controller's lease found it silent and elected
    others), then SIGKILL it, so that Ray restarts a shard that leads nothing. Killed
    outright, a shard is at times restarted by Ray before the lease notices, and the
    controller then lets it lead again in a new epoch (Controller.shard_started): a
    test of what follows a failover must not depend on which came first (on a quiet
    machine the restart won every time)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(failed_over, timeout_s=timeout_s)
    finally:
        os.kill(pid, signal.SIGKILL)


def shard_pids(data_dir: Path) -> dict[str, int]:
    """shard id -> pid of the process serving it, for each shard that has exactly one."""
    locks = {str((path.parent / LOCK_FILE).resolve()): path.parent.name
             for path in Path(data_dir).glob(f"shards/*/{LOCK_FILE}")}
    holders: dict[str, list[int]] = {}
    for pid in _shard_processes():
        for shard_id in {locks[target] for target in _open_files(pid) if target in locks}:
            holders.setdefault(shard_id, []).append(pid)
    return {shard_id: pids[0] for shard_id, pids in holders.items() if len(pids) == 1}


def _shard_processes() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(SHARD_PROCESS_TITLE):
                    pids.append(int(entry.name))
            except OSError:   # it exited meanwhile
                continue
    return pids


def _open_files(pid: int) -> list[str]:
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return []
    targets = []
    for fd in fds:
        try:
            targets.append(os.readlink(fd))
        except OSError:
            continue
    return targets
