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

Sources cost the sender nothing (a fresh CurveZMQ key, a made-up user name per
try), so the per-source turn alone does not bound the log: a tester wrote 6,115
lines in 10 s with a new key per handshake. A ``LogLimit`` therefore also writes
at most ``lines_max`` lines per interval in all: the first line over it says that
the rest of the interval's are dropped, and the next line written after the
interval says how many were.
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
                 lines_max: int = limits.UNAUTHENTICATED_LOG_LINES_PER_INTERVAL_MAX):
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
        # All sources' lines: when the current interval began, lines written in it,
        # lines dropped over lines_max since the last line written.
        self._window_start_s = float("-inf")
        self._window_lines = 0
        self._over_dropped = 0

    def warning(self, source: str, message: str, *args) -> bool:
        """Log ``message % args`` at WARNING unless ``source`` logged one within the
        interval (then count it as dropped); returns whether it was written."""
        return self._emit(logging.WARNING, source, message, args)

    def log(self, level: int, source: str, message: str, *args) -> bool:
        """As ``warning``, at ``level``."""
        return self._emit(level, source, message, args)

    def _emit(self, level: int, source: str, message: str, args: tuple) -> bool:
        now_s = time.monotonic()
        dropped = self._take_turn(source, now_s)
        if dropped is None:
            return False
        turn = self._take_global_turn(now_s)
        if turn is None:
            return False
        over, is_last = turn
        if over:
            message += " (and %d such lines of all sources dropped over the limit of %d in %.0f s)"
            args += (over, self._lines_max, self._interval_s)
        if is_last:   # once per interval: the line at the bound says what happens next
            message += (" (%d such lines in %.0f s, the limit: the rest of this interval's "
                        "are dropped and counted)")
            args += (self._lines_max, self._interval_s)
        if dropped:
            message += " (and %d such lines of this source dropped in the last %.0f s)"
            args += (dropped, self._interval_s)
        # stacklevel: the line of whoever called warning() or log(), not this module's
        self._logger.log(level, message, *args, stacklevel=3)
        return True

    def _take_global_turn(self, now_s: float) -> tuple[int, bool] | None:
        """Whether a line may be written now, all sources counted: None if not (counted
        as dropped); else the lines dropped over the bound since the last written one,
        and whether this is the last line its interval may write."""
        with self._lock:
            if now_s - self._window_start_s >= self._interval_s:
                self._window_start_s, self._window_lines = now_s, 0
            if self._window_lines >= self._lines_max:
                self._over_dropped += 1
                return None
            self._window_lines += 1
            dropped, self._over_dropped = self._over_dropped, 0
            return dropped, self._window_lines == self._lines_max

    def _take_turn(self, source: str, now_s: float) -> int | None:
        """The lines of ``source`` dropped since its last written one, if it may write
        now; None if it may not (counted as one more dropped)."""
        with self._lock:
            last = self._sources.get(source)
            if last is not None and now_s - last[0] < self._interval_s:
                self._sources[source] = (last[0], last[1] + 1)
                return None
            self._sources[source] = (now_s, 0)
            self._sources.move_to_end(source)
            while len(self._sources) > self._sources_max:
                self._sources.popitem(last=False)
            return 0 if last is None else last[1]
