"""Wakeup: lets any thread wake a thread blocked in zmq.Poller.poll.

The owner registers ``wakeup.fd`` with its poller; other threads call
``wake()``, which writes a byte to a non-blocking pipe (a full pipe means the
owner is already awake, so the write is simply dropped); the owner calls
``drain()`` when the fd is readable. No lock, no socket shared across threads.
"""

from __future__ import annotations

import os


class Wakeup:
    def __init__(self):
        self.fd, self._write_fd = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._write_fd, False)

    def wake(self) -> None:
        """Any thread."""
        try:
            os.write(self._write_fd, b"x")
        except BlockingIOError:
            pass

    def drain(self) -> None:
        """The owning thread, when ``fd`` polled readable."""
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.fd)
        os.close(self._write_fd)
