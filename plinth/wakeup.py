"""Wakeup: lets any thread wake a thread blocked in zmq.Poller.poll.

The owner registers ``wakeup.fd`` with its poller; other threads call
``wake()``, which writes a byte to a non-blocking pipe (a full pipe means the
owner is already awake, so the write is simply dropped); the owner calls
``drain()`` when the fd is readable. No socket shared across threads.

After ``close()`` the pipe's fd numbers are free for the process to reuse (the
next file it opens may get one): ``wake()`` and ``drain()`` then raise
ClosedError instead of writing to, or reading from, whatever now holds them.
A lock orders ``wake()`` against ``close()`` so that no write slips in between
the check and the close.
"""

from __future__ import annotations

import os
import threading

from plinth.errors import ClosedError


class Wakeup:
    def __init__(self):
        self.fd, self._write_fd = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._write_fd, False)
        self._lock = threading.Lock()   # orders wake() against close()
        self._closed = False

    def wake(self) -> None:
        """Any thread. ClosedError after close()."""
        with self._lock:
            self._raise_if_closed("wake")
            try:
                os.write(self._write_fd, b"x")
            except BlockingIOError:
                pass

    def drain(self) -> None:
        """The owning thread, when ``fd`` polled readable. ClosedError after close()."""
        self._raise_if_closed("drain")
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """The owning thread; a second call does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self.fd)
            os.close(self._write_fd)

    def _raise_if_closed(self, what: str) -> None:
        if self._closed:
            raise ClosedError(f"{what}() of a closed wake-up pipe: its fds {self.fd} and "
                              f"{self._write_fd} may belong to another file by now")
