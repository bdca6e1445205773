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
says so and goes on without it: the broker matters more than its console. If it
ends later (killed, crashed), the server says how and starts it again, after a
backoff and at most CONSOLE_RESTARTS_MAX times (``keep_running``).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading

from plinth import limits
from plinth.client.console.runner import READY_PREFIX

log = logging.getLogger(__name__)

_WILDCARD_HOSTS = ("0.0.0.0", "*", "[::]", "::")
# How the child logs (plinth/cli.py, with --exit-on-stdin-eof): the server's log,
# which each line goes on to, gives it its time.
CHILD_LOG_FORMAT = "%(levelname)s %(name)s %(message)s"


def broker_url_for_console(listen: str) -> str:
    """The router's address as the console on this machine reaches it: a wildcard
    bind is reached on loopback."""
    scheme, _, rest = listen.rpartition("://")
    host, _, port = rest.rpartition(":")
    if host in _WILDCARD_HOSTS:
        host = "127.0.0.1"
    return f"{scheme or 'tcp'}://{host}:{port}"


class ConsoleChild:
    """The running console child, or why it is not running. Once ``keep_running``
    was called, a thread of its own starts it again whenever it ends other than by
    ``stop()``."""

    def __init__(self, broker_listen: str, listen: str):
        self.broker_listen = broker_listen
        self.listen = listen
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.problem = ""
        self._stopping = threading.Event()
        # A (re)start and stop() one at a time: stop() never misses a child being started.
        self._lock = threading.Lock()

    @classmethod
    def start(cls, broker_listen: str, listen: str,
              wait_s: float = limits.CONSOLE_START_WAIT_S) -> "ConsoleChild":
        """Start it and wait up to ``wait_s`` for its ready line; never raises for a
        console that fails: the returned ConsoleChild's ``problem`` says why."""
        child = cls(broker_listen, listen)
        reason = child._launch(wait_s)
        if reason:
            child.problem = (f"the console did not start on {listen} ({reason}); the broker "
                             f"runs without it. Choose another address with --console-listen "
                             f"HOST:PORT, or turn it off with --console-listen off")
        return child

    def _launch(self, wait_s: float) -> str:
        """Start the child process and wait for its ready line: "" once it serves (then
        ``process`` and ``url`` are its), else why not (and ``process`` is None)."""
        command = [sys.executable, "-m", "plinth.cli", "--broker",
                   broker_url_for_console(self.broker_listen), "console", "--listen",
                   self.listen, "--exit-on-stdin-eof"]
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
            self.process, self.url = process, line[len(READY_PREFIX):]
            return ""
        self.process = None
        _end(process, limits.CONSOLE_SHUTDOWN_GRACE_S + 2)
        with process.stderr:
            err = process.stderr.read().strip().splitlines()
        return err[-1] if err else f"no ready line within {wait_s} s"

    def keep_running(self, restarts_max: int = limits.CONSOLE_RESTARTS_MAX,
                     backoff_s: float = limits.CONSOLE_RESTART_BACKOFF_S_MIN,
                     backoff_s_max: float = limits.CONSOLE_RESTART_BACKOFF_S_MAX,
                     wait_s: float = limits.CONSOLE_START_WAIT_S) -> None:
        """Start the console-watch thread, which starts the child again each time it
        ends with a status other than 0 (killed, crashed; 0 is a console stopped as
        asked) until ``stop()``: after ``backoff_s``, doubled each
        time up to ``backoff_s_max``, at most ``restarts_max`` times. Server
        process, main thread."""
        threading.Thread(target=self._watch, args=(restarts_max, backoff_s, backoff_s_max,
                                                   wait_s),
                         daemon=True, name="console-watch").start()

    def _watch(self, restarts_max: int, backoff_s: float, backoff_s_max: float,
               wait_s: float) -> None:
        """The console-watch thread: says how each child ended, in one line, and starts
        the next; says so when it gives up."""
        for restart in range(1, restarts_max + 1):
            status, ended = self._wait_for_end()
            if self._stopping.is_set():
                return
            if status == 0:
                # It stopped as asked (SIGTERM, or Ctrl-C, which reaches the whole
                # process group): not a failure, and the server is most likely ending.
                log.info("the console on %s %s; not starting it again", self.listen, ended)
                return
            log.warning("the console on %s %s; starting it again in %.1f s (restart %d of at "
                        "most %d)", self.listen, ended, backoff_s, restart, restarts_max)
            if self._stopping.wait(backoff_s):
                return
            backoff_s = min(2 * backoff_s, backoff_s_max)
            with self._lock:
                if self._stopping.is_set():
                    return
                self.problem = self._launch(wait_s)
            if not self.problem:
                log.info("the console serves again on %s", self.url)
        _, ended = self._wait_for_end()
        if not self._stopping.is_set():
            log.error("the console on %s %s; it was started again %d times, the most "
                      "CONSOLE_RESTARTS_MAX allows: the broker runs without it from now on",
                      self.listen, ended, restarts_max)

    def _wait_for_end(self) -> tuple[int | None, str]:
        """The current child's exit status (None: it did not start) and how it ended
        in words, once it has (the console-watch thread)."""
        process = self.process
        if process is None:
            return None, f"did not start again ({self.problem})"
        status = process.wait()
        _close_pipes(process)
        return status, f"(pid {process.pid}) exited with {exit_status(status)}"

    def stop(self, wait_s: float = limits.CONSOLE_SHUTDOWN_GRACE_S + 2) -> None:
        """End the child for good, never to be started again (server process, main
        thread): close its stdin, then SIGTERM, then SIGKILL after ``wait_s``."""
        self._stopping.set()
        with self._lock:
            process, self.process = self.process, None
        if process is not None:
            _end(process, wait_s)


def exit_status(returncode: int) -> str:
    """A process's exit status in words: ``status 1``, ``status -9 (SIGKILL)``."""
    if returncode < 0:
        try:
            return f"status {returncode} ({signal.Signals(-returncode).name})"
        except ValueError:
            pass
    return f"status {returncode}"


def _end(process: subprocess.Popen, wait_s: float) -> None:
    if process.poll() is not None:
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


def _close_pipes(process: subprocess.Popen) -> None:
    # Its stdin and stdout once it ended (its stderr is _forward_stderr's to close):
    # a restarted console would otherwise keep two descriptors per start.
    for pipe in (process.stdin, process.stdout):
        try:
            pipe.close()
        except OSError:
            pass


def _forward_stderr(process: subprocess.Popen) -> None:
    # The console's log into the server's, each line at its own level; bounded by the
    # pipe. The child writes CHILD_LOG_FORMAT, without a time: the server's log adds
    # one, so a line carries one time, not the child's inside the server's.
    with process.stderr:
        for line in process.stderr:
            level, text = child_log_line(line.rstrip())
            log.log(level, "console: %s", text)


def child_log_line(line: str) -> tuple[int, str]:
    """(level, the rest) of a line the child logged in CHILD_LOG_FORMAT; a line of
    another form (a traceback's, uvicorn's own) is a warning, as it is."""
    name, _, rest = line.partition(" ")
    level = logging.getLevelName(name)
    return (level, rest) if isinstance(level, int) else (logging.WARNING, line)
