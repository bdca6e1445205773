"""The groups being watched: each open group page's live stream subscribes to its
group here, and only a subscribed group's lag is ever computed.

Runs on the console's event loop. The first subscriber to a group starts that
group's task; every CONSOLE_LAG_POLL_S it asks the broker for the group's members
and lag (group_offsets.group_detail: describeGroup and groupLag, in a pool thread:
the Admin blocks), adds the total to the LagHistory behind the chart and wakes the
group's streams. Two browsers on one group share its task, so a group costs the
broker the same whoever watches it. The last subscriber to leave cancels the task:
a group nobody watches costs nothing.

Bounded: at most ``groups_max`` (CONSOLE_LAG_GROUPS_MAX) groups sampled at once,
the same number the LagHistory keeps, so a watched group's samples are never
the ones it forgets; a stream past that is refused with TooManyGroupsWatchedError.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from plinth import limits
from plinth.client.console import group_offsets
from plinth.client.console.broker_calls import page_deadline
from plinth.errors import TooManyGroupsWatchedError

log = logging.getLogger(__name__)


@dataclass
class WatchedGroup:
    """One watched group: its subscribers, its task and what the last sample saw."""

    subscribers: int = 0
    polls: int = 0                                     # samples asked for (tests, streams)
    detail: group_offsets.GroupDetail | None = None    # the last answer
    error: str = ""                                    # the last failure to ask
    task: asyncio.Task | None = None
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)


class LagWatcher:
    """Owned by the app (pages_groups.lag_watcher); every method runs on the
    console's event loop."""

    def __init__(self, admin, history: group_offsets.LagHistory,
                 interval_s: float = limits.CONSOLE_LAG_POLL_S,
                 groups_max: int = limits.CONSOLE_LAG_GROUPS_MAX):
        self.admin = admin
        self.history = history
        self.interval_s = interval_s
        self.groups_max = groups_max
        self._groups: dict[str, WatchedGroup] = {}

    def watched(self) -> set[str]:
        """The groups whose lag is being computed now."""
        return set(self._groups)

    def polls(self, group: str) -> int:
        """How many samples of ``group`` its current watch asked for (0 if unwatched)."""
        watch = self._groups.get(group)
        return 0 if watch is None else watch.polls

    def subscribe(self, group: str) -> WatchedGroup:
        """Start watching ``group`` (or join its watch); TooManyGroupsWatchedError if it
        would be one more than ``groups_max`` groups."""
        watch = self._groups.get(group)
        if watch is None:
            if len(self._groups) >= self.groups_max:
                raise TooManyGroupsWatchedError(
                    f"the lag of {len(self._groups)} groups is being sampled for open group "
                    f"pages; at most {self.groups_max}: close one of them to watch "
                    f"group {group!r} live")
            watch = self._groups[group] = WatchedGroup()
            watch.task = asyncio.get_running_loop().create_task(self._run(group, watch))
        watch.subscribers += 1
        return watch

    def unsubscribe(self, group: str) -> None:
        watch = self._groups[group]
        watch.subscribers -= 1
        if watch.subscribers == 0:
            # Its last page closed: no more samples of this group.
            watch.task.cancel()
            del self._groups[group]

    async def _run(self, group: str, watch: WatchedGroup) -> None:
        import anyio.to_thread

        while True:
            # The page that opened the stream was drawn from a sample just taken.
            await asyncio.sleep(self.interval_s)
            try:
                with page_deadline():   # one for the sample's calls, as a page's
                    detail = await anyio.to_thread.run_sync(group_offsets.group_detail,
                                                            self.admin, group)
                if watch.error:
                    log.info("console lag of group %r: answered again", group)
                watch.detail, watch.error = detail, ""
                self.history.add(group, self.history.now_s(), detail.total_lag)
            except asyncio.CancelledError:
                raise
            except Exception as exc:   # the broker is down or the group gone: say so, go on
                # A warning when the group's samples start failing, then debug: a page
                # left open on a deleted group would otherwise log one every interval.
                level = logging.DEBUG if watch.error else logging.WARNING
                watch.error = f"{type(exc).__name__}: {exc}"
                log.log(level, "console lag of group %r: %s", group, watch.error)
            watch.polls += 1
            async with watch.changed:
                watch.changed.notify_all()


async def wait_for_sample(watch: WatchedGroup, seen: int, timeout_s: float) -> int:
    """Wait until ``watch`` took more than ``seen`` samples (or ``timeout_s``); returns
    its count. The event loop's."""
    async with watch.changed:
        try:
            await asyncio.wait_for(watch.changed.wait_for(lambda: watch.polls > seen), timeout_s)
        except asyncio.TimeoutError:
            pass
    return watch.polls
