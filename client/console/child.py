"""The console as ``plinth serve``'s child process.

Used by the server process's main thread (plinth/server.py). The child is
``plinth --broker <serve's address> console --listen HOST:PORT
--exit-on-stdin-eof``: a process of its own, so that its pages and sampler
never take the router's GIL. Its stdin is a pipe whose only write end the
server holds (close-on-exec), so the child reads end-of-file and stops when the
server ends in any way, kill -9 included; with the embedded Ray the process
reaper (plinth/process_reaper.py) also counts it among the server's
descendants.

If the console cannot start (its address is taken, most often), the server
says so and goes on without it: the broker matters more than its console.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading

from plinth import limits
from plinth.client.console.runner import READY_PREFIX

log = logging.getLogger(__name__)

_WILDCARD_HOSTS = ("0.0.0.0", "*", "[::]", "::")


def broker_url_for_console(listen: str) -> str:
    """The router's address as the console on this machine reaches it: a wildcard
    bind is reached on loopback."""
    scheme, _, rest = listen.rpartition("://")
    host, _, port = rest.rpartition(":")
    if host in _WILDCARD_HOSTS:
        host = "127.0.0.1"
    return f"{scheme or 'tcp'}://{host}:{port}"


class ConsoleChild:
    """The running console child, or why it is not running."""

    def __init__(self, process: subprocess.Popen | None, url: str = "", problem: str = ""):
        self.process = process
        self.url = url
        self.problem = problem

    @classmethod
    def start(cls, broker_listen: str, listen: str,
              wait_s: float = limits.CONSOLE_START_WAIT_S) -> "ConsoleChild":
        """Start it and wait up to ``wait_s`` for its ready line; never raises for a
        console that fails: the returned ConsoleChild's ``problem`` says why."""
        command = [sys.executable, "-m", "plinth.cli", "--broker",
                   broker_url_for_console(broker_listen), "console", "--listen", listen,
                   "--exit-on-stdin-eof"]
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()),
                                  daemon=True, name="console-ready")
        reader.start()
        reader.join(wait_s)
        line = lines[0].strip() if lines else ""
        if line.startswith(READY_PREFIX):
            threading.Thread(target=_forward_stderr, args=(process,), daemon=True,
                             name="console-stderr").start()
            return cls(process, url=line[len(READY_PREFIX):])
        child = cls(process)
        child.stop()
        err = process.stderr.read().strip().splitlines() if process.stderr else []
        reason = err[-1] if err else f"no ready line within {wait_s} s"
        child.problem = (f"the console did not start on {listen} ({reason}); the broker runs "
                         f"without it. Choose another address with --console-listen HOST:PORT, "
                         f"or turn it off with --console-listen off")
        return child

    def stop(self, wait_s: float = limits.CONSOLE_SHUTDOWN_GRACE_S + 2) -> None:
        """End the child (server process, main thread): close its stdin, then SIGTERM,
        then SIGKILL after ``wait_s``."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            process.stdin.close()
        except OSError:
            pass
        process.terminate()
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(wait_s)


def _forward_stderr(process: subprocess.Popen) -> None:
    # The console's warnings and errors into the server's log; bounded by the pipe.
    for line in process.stderr:
        log.warning("console: %s", line.rstrip())
