"""Small helpers shared by the tests (not fixtures: those are in conftest.py)."""

from __future__ import annotations

import secrets
import socket
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique_topic(prefix: str = "t") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def wait_until(predicate, timeout_s: float = 30.0, interval_s: float = 0.05):
    """Poll a condition with a bound; used only for external processes' state."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s")
