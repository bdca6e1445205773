"""Log lines that anyone can cause, at most one per source per interval.

Router side (any thread). A refused CurveZMQ key, a failed SASL login, a
connection over the limit: each is caused by whoever connects, before they
authenticate, so one client reconnecting in a loop would write a WARNING per
try, without bound (a tester filled 1,000 lines in 11 s with one key). A
``LogLimit`` writes the first line of a source (a key, a user, an address) at
once, then drops that source's lines for ``interval_s``, and the next line it
writes says how many were dropped since. It remembers at most ``sources_max``
sources: past that, the one least recently logged is forgotten (its next line
is written at once, as a new source's), so memory stays bounded whatever
sources are sent.

The sources are chosen by the client (a SASL user name is whatever it sends, a
CurveZMQ key costs nothing to make), so one source per line is no bound by
itself: a tester sending a fresh user name per login wrote 5,595 lines in
10 s. So a ``LogLimit`` also writes at most ``lines_max`` lines in all per
``interval_s`` (a window that starts at the first line after the last one
ended). The line that takes the window's last place says so; the lines after
it are dropped and counted, and the first call after the window (whatever its
source) writes a summary of how many were dropped before its own line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

from plinth import limits


class LogLimit:
    """Construct anywhere; ``warning`` and ``log`` from any thread."""

    def __init__(self, logger: logging.Logger,
                 interval_s: float = limits.UNAUTHENTICATED_LOG_INTERVAL_S,
                 sources_max: int = limits.UNAUTHENTICATED_LOG_SOURCES_MAX,
                 lines_max: int = limits.UNAUTHENTICATED_LOG_LINES_MAX):
        if interval_s <= 0 or sources_max < 1 or lines_max < 1:
            raise AssertionError(f"LogLimit({interval_s=}, {sources_max=}, {lines_max=}): "
                                 f"all must be positive")
        self._logger = logger
        self._interval_s = interval_s
        self._sources_max = sources_max
        self._lines_max = lines_max
        self._lock = threading.Lock()
        # source -> (when its last line was written, lines dropped since), oldest first
        self._sources: OrderedDict[str, tuple[float, int]] = OrderedDict()
        # The window of lines_max lines in all: its start (None: none open), the lines
        # written in it, and those dropped because it was full.
        self._window_start_s: float | None = None
        self._window_lines = 0
        self._window_dropped = 0

    def warning(self, source: str, message: str, *args) -> bool:
        """Log ``message % args`` at WARNING unless ``source`` logged one within the
        interval (then count it as dropped); returns whether it was written."""
        return self._emit(logging.WARNING, source, message, args)

    def log(self, level: int, source: str, message: str, *args) -> bool:
        """As ``warning``, at ``level``."""
        return self._emit(level, source, message, args)

    def _emit(self, level: int, source: str, message: str, args: tuple) -> bool:
        with self._lock:
            now_s = time.monotonic()
            dropped_in_all = self._end_window(now_s)
            dropped = self._take_turn(source, now_s)
            last_place = dropped is not None and self._window_lines == self._lines_max
        if dropped_in_all:
            self._logger.log(level, "%d lines of this kind were dropped, of any source: over "
                             "the %d such lines written in %.0f s (the limit)", dropped_in_all,
                             self._lines_max, self._interval_s, stacklevel=3)
        if dropped is None:
            return False
        if dropped:
            message += " (and %d such lines of this source dropped in the last %.0f s)"
            args += (dropped, self._interval_s)
        if last_place:
            message += (" (the last of %d such lines in %.0f s, the limit: the next are "
                        "dropped and counted)")
            args += (self._lines_max, self._interval_s)
        # stacklevel: the line of whoever called warning() or log(), not this module's
        self._logger.log(level, message, *args, stacklevel=3)
        return True

    def _end_window(self, now_s: float) -> int:
        """Ends the window of lines in all if its interval is over; returns the lines it
        dropped (0 if none, or if it is still open). Holding the lock."""
        start_s = self._window_start_s
        if start_s is None or now_s - start_s < self._interval_s:
            return 0
        dropped = self._window_dropped
        self._window_start_s, self._window_lines, self._window_dropped = None, 0, 0
        return dropped

    def _take_turn(self, source: str, now_s: float) -> int | None:
        """The lines of ``source`` dropped since its last written one, if it may write
        now; None if it may not (counted as one more dropped, by the source or, when
        the window of lines in all is full, by the window). Holding the lock."""
        last = self._sources.get(source)
        if last is not None and now_s - last[0] < self._interval_s:
            self._sources[source] = (last[0], last[1] + 1)
            return None
        if self._window_lines >= self._lines_max:
            self._window_dropped += 1
            return None
        if self._window_start_s is None:
            self._window_start_s = now_s
        self._window_lines += 1
        self._sources[source] = (now_s, 0)
        self._sources.move_to_end(source)
        while len(self._sources) > self._sources_max:
            self._sources.popitem(last=False)
        return 0 if last is None else last[1]
