"""ShardRevivals: when the controller starts a new actor for a shard Ray gave up on.

Ray restarts a dead shard actor up to SHARD_RESTARTS_MAX times, then gives up: the
actor is dead for good, its name is freed, and no process serves the shard. Under
a memory limit too small for its start-up, the kernel's OOM killer used those
restarts up in minutes (tester M, finding 4); the server process stayed alive, so
no container supervisor restarted the broker, and raising the limit again did not
bring the shard back. The controller is that supervisor now: a shard found dead
for good (Controller.revive_dead_shards) is given a new actor after a backoff that
starts at SHARD_REVIVAL_BACKOFF_S_MIN and doubles up to SHARD_REVIVAL_BACKOFF_S_MAX
at each death of the new actor too, without bound on the attempts; it is reset
once the shard has served SHARD_REVIVAL_BACKOFF_S_MAX since it announced itself (a
new actor that announces itself and is killed soon after, in a loop, still backs
off).

A shard whose actor raised in its constructor (its directory locked by another
process, a manifest it cannot read) is not started again (``give_up``): Ray does not
restart it either, a new actor would only raise the same after its lock wait, and
what it raised is the operator's to fix; its failure is its reason for not serving.

This class keeps the schedule and says it: one ERROR line when a shard is first
found dead for good, a WARNING for each later death (of the actors it started),
and the reason ``plinth status`` shows beside the shard's DOWN. It starts nothing:
the controller's reviver thread (shard_reviver.py) has the actor thread act on it.
Controller actor thread only (status reads ``reason`` from its plan, on that thread
too).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from plinth import limits

log = logging.getLogger("plinth.control.controller")


@dataclass(frozen=True)
class ShardDeath:
    """What Ray says of a dead shard actor; each 0 or "" where it does not say."""

    restarts: int = 0     # how often Ray restarted it before it gave up
    how: str = ""         # e.g. "killed by SIGKILL (possibly the kernel's OOM killer)"


@dataclass
class _Revival:
    deaths: int           # the shard's deaths we know of, its last actor's included
    backoff_s: float      # the wait before the next start
    due_s: float          # when the next start is due (the clock's); inf: started
    how: str = ""
    serving_since_s: float | None = None   # when its new actor announced itself


class ShardRevivals:
    def __init__(self, clock_s: Callable[[], float] = time.monotonic):
        self._clock_s = clock_s
        self._pending: dict[str, _Revival] = {}   # shard id -> its next start; one each
        # Shards whose actor raised in its constructor: not started again, nor looked at
        # (each look would ask Ray's actor table again). At most one entry per shard.
        self.given_up: set[str] = set()

    def __contains__(self, shard_id: str) -> bool:
        return shard_id in self._pending

    def __len__(self) -> int:
        """The shards not serving yet: the reviver keeps looking while there are any."""
        return sum(1 for r in self._pending.values() if r.serving_since_s is None)

    def not_serving(self, shard_id: str) -> bool:
        """Whether ``shard_id`` is scheduled or its new actor has not announced itself:
        not worth a call (one stuck in its constructor would hold it)."""
        revival = self._pending.get(shard_id)
        return revival is not None and revival.serving_since_s is None

    def ids(self) -> list[str]:
        """The shards scheduled, started, or serving for less than the backoff's max
        (whose next death backs off longer); those serving longer are forgotten."""
        now_s = self._clock_s()
        for shard_id, revival in list(self._pending.items()):
            if (revival.serving_since_s is not None
                    and now_s - revival.serving_since_s >= limits.SHARD_REVIVAL_BACKOFF_S_MAX):
                del self._pending[shard_id]
        return list(self._pending)

    def dead(self, shard_id: str, death: ShardDeath) -> None:
        """``shard_id``'s actor was found dead for good: schedule a new one (logged). A
        shard already scheduled is not scheduled again until ``started``."""
        if shard_id in self._pending:
            return
        how = f" ({death.how})" if death.how else ""
        deaths = death.restarts + 1
        log.error("%s died %d %s%s; Ray's restarts (SHARD_RESTARTS_MAX %d) are %s; "
                  "starting a new actor in %g s", shard_id, deaths,
                  "time" if deaths == 1 else "times", how, limits.SHARD_RESTARTS_MAX,
                  "used up" if death.restarts >= limits.SHARD_RESTARTS_MAX
                  else "not used for it (it was ended)",
                  limits.SHARD_REVIVAL_BACKOFF_S_MIN)
        self._schedule(shard_id, deaths, limits.SHARD_REVIVAL_BACKOFF_S_MIN, death.how)

    def due(self) -> list[str]:
        """The shards whose new actor is due now."""
        now_s = self._clock_s()
        return [s for s, revival in self._pending.items() if revival.due_s <= now_s]

    def starting(self, shard_id: str) -> None:
        """A new actor for ``shard_id`` was started: if it dies too (``died_again``),
        the next waits twice as long."""
        revival = self._pending[shard_id]
        revival.due_s = float("inf")   # until it announces itself or is found dead

    def died_again(self, shard_id: str, death: ShardDeath) -> None:
        """The actor ``starting`` started for ``shard_id`` is dead for good too (logged)."""
        revival = self._pending[shard_id]
        if revival.due_s != float("inf"):
            return   # not started yet: the same death
        revival.serving_since_s = None
        backoff_s = min(2 * revival.backoff_s, limits.SHARD_REVIVAL_BACKOFF_S_MAX)
        deaths = revival.deaths + death.restarts + 1
        log.warning("%s died again%s (%d deaths); starting a new actor in %g s", shard_id,
                    f" ({death.how})" if death.how else "", deaths, backoff_s)
        self._schedule(shard_id, deaths, backoff_s, death.how or revival.how)

    def started(self, shard_id: str) -> None:
        """``shard_id`` announced itself: it serves again (a death within the backoff's
        max from now still backs off longer, ``ids``)."""
        self.given_up.discard(shard_id)   # it serves after all (e.g. adopted, restarted)
        revival = self._pending.get(shard_id)
        if revival is not None and revival.serving_since_s is None:
            revival.due_s = float("inf")
            revival.serving_since_s = self._clock_s()
            log.info("%s serves again, in a new actor, after %d deaths", shard_id,
                     revival.deaths)

    def give_up(self, shard_id: str, why: str) -> None:
        """``shard_id``'s actor raised in its constructor (``why``): not started again
        (logged: an ERROR if it was one this schedule started)."""
        if self._pending.pop(shard_id, None) is not None:
            log.error("%s: its new actor raised in its constructor; not started again, as "
                      "what it raised is the operator's to fix (then restart the server): %s",
                      shard_id, why)
        else:
            log.info("%s raised in its constructor; not started again: %s", shard_id, why)
        self.given_up.add(shard_id)

    def forget(self, shard_id: str) -> None:
        """``shard_id`` left the broker (retired, removed)."""
        self._pending.pop(shard_id, None)
        self.given_up.discard(shard_id)

    def reason(self, shard_id: str) -> str:
        """Why ``shard_id`` is down, for ``plinth status``; "" if not scheduled."""
        revival = self._pending.get(shard_id)
        if revival is None or revival.serving_since_s is not None:
            return ""
        died = (f"died {revival.deaths} {'time' if revival.deaths == 1 else 'times'}"
                + (f" ({revival.how})" if revival.how else ""))
        if revival.due_s == float("inf"):
            return f"restarting: {died}, a new actor is starting"
        return (f"restarting: {died}, next start in "
                f"{max(0.0, revival.due_s - self._clock_s()):.0f} s")

    def _schedule(self, shard_id: str, deaths: int, backoff_s: float, how: str) -> None:
        self._pending[shard_id] = _Revival(deaths, backoff_s, self._clock_s() + backoff_s, how)
