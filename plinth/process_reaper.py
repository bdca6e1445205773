"""The process reaper: whatever a server started ends with it, however the server ends.

It runs as a process of its own (``python -m plinth.process_reaper``), which
``plinth serve`` starts before it starts Ray. It learns that the server is gone
through a pipe: it reads its stdin, the read end of a pipe whose only write end
the server holds (close-on-exec: no process the server starts holds a copy).
The kernel closes that end when the server exits in any way, SIGKILL included,
and the reaper reads end-of-file.

It knows what the server started in two ways, because neither is enough alone:

- The process tree. While the server lives, the reaper reads /proc every
  REAPER_SCAN_INTERVAL_S (a listing, and the stat of each new process) and
  remembers each descendant of the server by pid and start time (the pair
  names one process: a pid is reused, not with the same start time). The
  server itself is named so too, by the server (once it is dead, its pid may
  name another process, and the reaper's parent is init). That covers the
  processes reparented to init once their parent dies (the raylet's agents)
  or moved to a process group of their own (Ray's workers), which the process
  group would miss; it misses only a process started and orphaned less than a
  scan interval before the server died. The reaper itself and its ancestors
  (the server, while it lives; init) are never counted.
- A mark. The server puts ``PLINTH_SERVER_MARK=<server pid>-<random hex>`` in
  its environment, and every process started from it inherits it. That covers
  a process that leaves the tree before a scan sees it (one that daemonizes),
  but not one that rewrites its environment's memory to set its process title
  (Ray's workers and agents do, with setproctitle). A server started by a
  marked process replaces the mark.

At end-of-file the reaper ends every remembered or marked process still
running: SIGTERM, up to REAPER_TERM_GRACE_S for them to exit, then SIGKILL,
looking again in each round, for at most REAPER_ROUNDS_MAX rounds. It signals
through a pidfd opened before it checks the start time again, so a pid that a
new process took meanwhile is never signalled. It says on stderr which
processes it ended, and exits. After a normal stop Ray has ended its processes
already and the reaper finds none.

Why it exists (ray 2.60): Ray starts GCS, raylet and its monitors with
PR_SET_PDEATHSIG, so they die with the server, and the workers exit when their
raylet does; but the raylet starts its dashboard and runtime-env agents without
it. Those see the raylet die, try to report it to the GCS, which died too, and
wait there for good, holding memory and ports.

Linux only (/proc; pidfd_open from Linux 5.3, before that a plain kill after
the start-time check), as ``plinth serve``'s embedded Ray is.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import secrets
import select
import signal
import subprocess
import sys
import time

from plinth import limits
from plinth.counted import counted

log = logging.getLogger(__name__)

MARK_ENV = "PLINTH_SERVER_MARK"


class ProcessReaper:
    """The server's handle on its reaper process (server process, main thread)."""

    def __init__(self, process: subprocess.Popen | None, mark: str | None):
        self._process = process
        self.mark = mark

    @classmethod
    def start(cls, grace_s: float = limits.REAPER_TERM_GRACE_S,
              scan_interval_s: float = limits.REAPER_SCAN_INTERVAL_S) -> ProcessReaper:
        """Start the reaper and put its mark in this process's environment. Call it
        before starting anything that must not outlive this process. As pid 1 (a
        container's init) it starts none: when pid 1 dies, the kernel ends every
        process of its PID namespace."""
        if os.getpid() == 1:
            return cls(None, None)
        mark = f"{os.getpid()}-{secrets.token_hex(8)}"
        env = {name: value for name, value in os.environ.items() if name != MARK_ENV}
        process = subprocess.Popen(
            [sys.executable, "-m", "plinth.process_reaper", "--mark", mark,
             "--server-pid", str(os.getpid()), "--server-start", str(own_start_time()),
             "--grace-s", str(grace_s), "--scan-interval-s", str(scan_interval_s)],
            stdin=subprocess.PIPE, env=env, close_fds=True)
        os.environ[MARK_ENV] = mark
        return cls(process, mark)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def release(self, wait_s: float = limits.REAPER_EXIT_WAIT_S) -> None:
        """This process is done: close the pipe, so that the reaper ends whatever it
        started that is still running, and wait up to ``wait_s`` for it to finish."""
        if self._process is None or self._process.stdin.closed:
            return
        self._process.stdin.close()
        try:
            self._process.wait(wait_s)
        except subprocess.TimeoutExpired:
            log.warning("the process reaper (pid %d) did not finish within %s s",
                        self._process.pid, wait_s)


class ServerProcesses:
    """What a server started: its descendants as last seen, and the processes
    carrying its mark (the reaper process's main thread).

    The server is named by pid and start time, both given by the server itself:
    once it is dead its pid may name another process, and the reaper's own parent
    is then init or a subreaper, whose descendants are not the server's. The
    reaper and its ancestors are never counted, whatever they carry."""

    def __init__(self, server_pid: int, server_start: int, mark: str):
        if server_pid <= 1 or not mark:
            raise AssertionError(f"a server is a pid above 1 with a mark, not {server_pid} "
                                 f"with {mark!r}")
        self.server_pid = server_pid
        self.server_start = server_start
        self.mark = mark
        self._seen: dict[int, int] = {}   # descendant pid -> start time
        self._listed: set[int] = set()    # every pid in /proc at the last scan

    def scan(self) -> None:
        """Remember the server's new descendants; forget those that are gone (so the
        map holds live processes only). Reads the stat of new pids only: a process
        listed before is a descendant already remembered, or never becomes one."""
        listed = {int(entry) for entry in os.listdir("/proc") if entry.isdigit()}
        new = listed - self._listed
        self._listed = listed
        self._seen = {pid: start for pid, start in self._seen.items()
                      if pid in listed and _start_time(pid) == start}
        roots = set(self._seen)
        if _start_time(self.server_pid) == self.server_start:
            roots.add(self.server_pid)
        table = {pid: stat for pid in new if (stat := _stat(pid)) is not None}
        found = _descendants(roots, table)
        for pid in _protected():
            found.pop(pid, None)
        self._seen.update(found)

    def running(self) -> dict[int, int]:
        """pid -> start time of every remembered or marked process still running
        (a zombie is not running: it is dead, waiting for its parent)."""
        table = _process_table()
        found = {pid: start for pid, start in self._seen.items()
                 if table.get(pid, (0, None))[1] == start}
        for pid, (_, start) in table.items():
            if pid not in found and _has_mark(pid, self.mark):
                found[pid] = start
        for pid in _protected():
            found.pop(pid, None)
        return found


def reap(processes: ServerProcesses, grace_s: float = limits.REAPER_TERM_GRACE_S,
         rounds_max: int = limits.REAPER_ROUNDS_MAX) -> dict[int, str]:
    """End every process the server started: SIGTERM first, then SIGKILL. Returns
    pid -> name of those it signalled; logs any still running after the last round."""
    ended: dict[int, str] = {}
    for round_number in range(rounds_max):
        processes.scan()   # children the remembered ones started since the last scan
        found = processes.running()
        if not found:
            return ended
        signum = signal.SIGTERM if round_number == 0 else signal.SIGKILL
        for pid, start in found.items():
            name = _name(pid)
            if _signal_if_same(pid, start, signum):
                ended[pid] = name
        _wait_until_gone(found, grace_s)
    left = processes.running()
    if left:
        log.error("processes still running after %d rounds of SIGTERM/SIGKILL: %s",
                  rounds_max, _describe({pid: _name(pid) for pid in left}))
    return ended


def _protected() -> set[int]:
    """This process and its ancestors, up to init: never the server's to end."""
    pids, pid = {os.getpid()}, os.getppid()
    while pid > 0 and pid not in pids:   # bounded: a chain of distinct pids
        pids.add(pid)
        stat = _stat(pid)
        pid = stat[0] if stat is not None else 0
    return pids | {1}


def _start_time(pid: int) -> int | None:
    stat = _stat(pid)
    return stat[1] if stat is not None else None


def own_start_time() -> int:
    """This process's start time in clock ticks, as /proc says (any process)."""
    stat = _stat(os.getpid())
    if stat is None:
        raise AssertionError(f"/proc/{os.getpid()}/stat is unreadable")
    return stat[1]


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time) of every live process but this one."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            stat = _stat(int(entry))
            if stat is not None:
                table[int(entry)] = stat
    return table


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, None for a gone
    or zombie one. Fields after the command name, which may hold spaces and ')':
    state, ppid, ..., starttime (the 20th)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == b"Z":
        return None
    return int(fields[1]), int(fields[19])


def _descendants(roots: set[int], table: dict[int, tuple[int, int]]) -> dict[int, int]:
    """pid -> start time of every process of ``table`` descended from one of ``roots``."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, int] = {}
    todo = [pid for root in roots for pid in children.get(root, ())]
    while todo:   # bounded: each pid of the table is visited at most once
        pid = todo.pop()
        if pid not in found:
            found[pid] = table[pid][1]
            todo.extend(children.get(pid, ()))
    return found


def _has_mark(pid: int, mark: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:   # gone, or another user's
        return False
    return f"\0{MARK_ENV}={mark}\0".encode() in b"\0" + environ


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read(200).split(b"\0")[0].decode(errors="replace") or "?"
    except OSError:
        return "?"


def _signal_if_same(pid: int, start: int, signum: int) -> bool:
    # The pidfd pins the process that holds the pid now; its start time, read
    # after, proves it is the one we saw (a reused pid has a later start time).
    try:
        pidfd = os.pidfd_open(pid)
    except OSError as exc:
        if exc.errno == errno.ENOSYS:   # Linux before 5.3: check, then kill (a tiny race)
            return _kill_if_same(pid, start, signum)
        return False
    try:
        stat = _stat(pid)
        if stat is None or stat[1] != start:
            return False
        signal.pidfd_send_signal(pidfd, signum)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(pidfd)


def _kill_if_same(pid: int, start: int, signum: int) -> bool:
    stat = _stat(pid)
    if stat is None or stat[1] != start:
        return False
    try:
        os.kill(pid, signum)
        return True
    except ProcessLookupError:
        return False


def _wait_until_gone(processes: dict[int, int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(
            (_stat(pid) or (0, None))[1] == start for pid, start in processes.items()):
        time.sleep(limits.REAPER_POLL_INTERVAL_S)


def _describe(processes: dict[int, str]) -> str:
    return ", ".join(f"{pid} ({name})" for pid, name in sorted(processes.items()))


def _watch_until_end_of_file(fd: int, processes: ServerProcesses, scan_interval_s: float) -> None:
    # The server never writes: the pipe turns readable only at end-of-file.
    # (Were it to write, each read consumes it; the loop still ends with the server.)
    while True:
        readable, _, _ = select.select([fd], [], [], scan_interval_s)
        if readable and not os.read(fd, 4096):
            return
        processes.scan()


def main(argv: list[str] | None = None) -> int:
    """The reaper process: follow the server's processes until its pipe closes, then reap."""
    parser = argparse.ArgumentParser(prog="python -m plinth.process_reaper")
    parser.add_argument("--mark", required=True)
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--server-start", type=int, required=True)
    parser.add_argument("--grace-s", type=float, default=limits.REAPER_TERM_GRACE_S)
    parser.add_argument("--scan-interval-s", type=float, default=limits.REAPER_SCAN_INTERVAL_S)
    args = parser.parse_args(argv)
    processes = ServerProcesses(args.server_pid, args.server_start, args.mark)
    # A Ctrl-C in a terminal goes to the whole foreground group, and a supervisor
    # may SIGTERM the group: the reaper outlives both until the server is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _watch_until_end_of_file(sys.stdin.fileno(), processes, args.scan_interval_s)
    logging.basicConfig(format="plinth reaper: %(message)s", level=logging.INFO)
    ended = reap(processes, args.grace_s)
    if ended:   # a server that stops ends them itself: this one was killed or crashed
        log.warning("server %d is gone without ending what it started (killed: kill -9, or "
                    "the kernel's OOM killer under a memory limit: see dmesg or the cgroup's "
                    "memory.events; or it crashed); ended %s it started: %s",
                    processes.server_pid, counted(len(ended), "process"), _describe(ended))
    return 0


if __name__ == "__main__":
    sys.exit(main())
