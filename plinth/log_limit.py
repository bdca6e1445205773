"""Log lines that anyone can cause, at most one per source per interval.

Router and console side (any thread). A refused CurveZMQ key, a failed SASL login, a
connection over the limit: each is caused by whoever connects, before they
authenticate, so one client reconnecting in a loop would write a WARNING per
try, without bound (a tester filled 1,000 lines in 11 s with one key). A
``LogLimit`` writes the first line of a source (a key, a user, an address) at
once, then drops that source's lines for ``interval_s``, and the next line it
writes says how many were dropped since. It remembers at most ``sources_max``
sources: past that, the one least recently logged is forgotten (its next line
is written at once, as a new source's), so memory stays bounded whatever
sources are sent.

Sources cost a client little (a fresh key, user name or address each try), so a
limit may also bound the lines of all sources: ``lines_max`` per interval at
most; a line over it is dropped, and the next line written says how many were.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

from plinth import limits


class LogLimit:
    def __init__(self, logger: logging.Logger,
                 interval_s: float = limits.UNAUTHENTICATED_LOG_INTERVAL_S,
                 sources_max: int = limits.UNAUTHENTICATED_LOG_SOURCES_MAX,
                 lines_max: int | None = None):
        """``lines_max``: lines of all sources per interval at most (None: no bound)."""
        if interval_s <= 0 or sources_max < 1:
            raise AssertionError(f"LogLimit({interval_s=}, {sources_max=}): both must be positive")
        if lines_max is not None and lines_max < 1:
            raise AssertionError(f"LogLimit({lines_max=}): must be positive or None")
        self._logger = logger
        self._interval_s = interval_s
        self._sources_max = sources_max
        self._lines_max = lines_max
        self._lock = threading.Lock()
        # source -> (when its last line was written, lines dropped since), oldest first
        self._sources: OrderedDict[str, tuple[float, int]] = OrderedDict()
        # The bound on all sources' lines: the current interval's start, lines written in
        # it, and lines dropped over the bound since the last written one.
        self._window_start_s = float("-inf")
        self._window_lines = 0
        self._dropped_over_bound = 0

    def warning(self, source: str, message: str, *args) -> bool:
        """Log ``message % args`` at WARNING unless ``source`` logged one within the
        interval (then count it as dropped); returns whether it was written."""
        return self._emit(logging.WARNING, source, message, args)

    def log(self, level: int, source: str, message: str, *args) -> bool:
        """As ``warning``, at ``level``."""
        return self._emit(level, source, message, args)

    def _emit(self, level: int, source: str, message: str, args: tuple) -> bool:
        turn = self._take_turn(source, time.monotonic())
        if turn is None:
            return False
        dropped, dropped_over_bound = turn
        if dropped:
            message += " (and %d such lines of this source dropped in the last %.0f s)"
            args += (dropped, self._interval_s)
        if dropped_over_bound:
            message += " (and %d lines of any source dropped over the bound of %d every %.0f s)"
            args += (dropped_over_bound, self._lines_max, self._interval_s)
        # stacklevel: the line of whoever called warning() or log(), not this module's
        self._logger.log(level, message, *args, stacklevel=3)
        return True

    def _take_turn(self, source: str, now_s: float) -> tuple[int, int] | None:
        """If ``source`` may write now: the lines of it dropped since its last written
        one, and those of any source dropped over the bound. None if it may not
        (counted as one more dropped)."""
        with self._lock:
            last = self._sources.get(source)
            if last is not None and now_s - last[0] < self._interval_s:
                self._sources[source] = (last[0], last[1] + 1)
                return None
            if not self._bound_allows_locked(now_s):
                return None
            self._sources[source] = (now_s, 0)
            self._sources.move_to_end(source)
            while len(self._sources) > self._sources_max:
                self._sources.popitem(last=False)
            dropped_over_bound, self._dropped_over_bound = self._dropped_over_bound, 0
            return 0 if last is None else last[1], dropped_over_bound

    def _bound_allows_locked(self, now_s: float) -> bool:
        """Whether the bound on all sources' lines lets one more be written now, counting
        it (or its drop). Called with ``self._lock`` held."""
        if self._lines_max is None:
            return True
        if now_s - self._window_start_s >= self._interval_s:
            self._window_start_s, self._window_lines = now_s, 0
        if self._window_lines >= self._lines_max:
            self._dropped_over_bound += 1
            return False
        self._window_lines += 1
        return True
