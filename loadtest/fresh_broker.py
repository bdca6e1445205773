"""A fresh embedded ``plinth serve`` for a load-test script: its own data dir, a free
port on 127.0.0.1, its own session (so its whole process group can be ended).

    with fresh_broker("plinth", work_dir) as (server, url):
        ...   # server: the Popen of `plinth serve`; url: its router address
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from loadtest.redis_peer import free_port

# Without the web console `plinth serve` starts by default (an environment variable,
# which builds from before the console ignore, rather than --console-listen off).
NO_CONSOLE_ENV = {**os.environ, "PLINTH_CONSOLE_LISTEN": "off"}

READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0


@contextmanager
def fresh_broker(plinth: str, work_dir: Path, *extra_args: str):
    """Start ``plinth serve`` under ``work_dir`` and wait for ``plinth ready``; stop it after."""
    url = f"tcp://127.0.0.1:{free_port()}"
    # From work_dir: Ray puts the driver's working directory on its workers'
    # sys.path, and a checkout's plinth/ there would shadow another build's.
    server = subprocess.Popen([plinth, "serve", "--data-dir", str(work_dir / "data"),
                               "--listen", url, *extra_args], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, cwd=work_dir,
                              start_new_session=True, env=NO_CONSOLE_ENV)
    try:
        _wait_ready(server, url)
        yield server, url
    finally:
        stop(server)


def _wait_ready(server: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    lines = []
    for line in server.stdout:
        lines.append(line)
        if f"plinth ready: listening on {url}" in line:
            threading.Thread(target=server.stdout.read, daemon=True).start()   # keep draining
            return
        if time.monotonic() > deadline:
            break
    raise SystemExit(f"plinth serve did not get ready on {url} (status {server.poll()}):\n"
                     + "".join(lines[-30:]))


def stop(server: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL to the whole group if it did not exit in time."""
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(STOP_TIMEOUT_S)
