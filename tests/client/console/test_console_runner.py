"""Serving the console (client/console/runner.py): its stop signals are in place
before its ready line, so that whoever reads that line may signal at once. A real
console process; no broker (the console starts without one)."""

from __future__ import annotations

import subprocess
import sys

from tests.support import free_port

WAIT_S = 60.0   # the process imports Starlette and uvicorn; a loaded machine is slow

# The console's run(), whose ready line is answered, in the same instant, with the
# signal Ctrl-C sends: the earliest a reader of that line could send it.
SIGNAL_AT_READY = """
import os, signal, sys
from plinth.client.console.config import ConsoleConfig
from plinth.client.console.runner import run
config = ConsoleConfig(broker="tcp://127.0.0.1:{broker_port}", listen="127.0.0.1:{port}")
def ready(line):
    print(line, flush=True)
    os.kill(os.getpid(), signal.{signal})
sys.exit(run(config, ready=ready))
"""


def run_signalled_at_ready(signal_name: str) -> subprocess.CompletedProcess:
    code = SIGNAL_AT_READY.format(broker_port=free_port(), port=free_port(), signal=signal_name)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=WAIT_S)


def test_a_console_sent_sigint_as_it_says_ready_stops_with_status_0():
    done = run_signalled_at_ready("SIGINT")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("plinth console ready: http://127.0.0.1:")


def test_a_console_sent_sigterm_as_it_says_ready_stops_with_status_0():
    done = run_signalled_at_ready("SIGTERM")
    assert done.returncode == 0, done.stderr
