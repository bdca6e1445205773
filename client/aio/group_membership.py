"""A consumer's membership in a group, heartbeating as an asyncio task.

Client side. The state, the heartbeat requests and what their answers mean
are the sync GroupMembership's (client/group_membership.py: targets, owned
partitions, losing and rejoining, backoffs, the leave heartbeat); only the
driver differs: one task on the consumer's loop, with a connection of its own,
instead of a thread. ``set_owned`` and ``heartbeat_now`` wake it (``heartbeat_now``
also ends its wait for a member's heartbeat in flight, given up for a new one).

Tasks. ``start``, ``close``, ``end_now`` and ``abandon`` are the AIOConsumer's (the task that
starts and stops it); the consumer's calls (take_target, set_owned, identity,
raise_if_refused, heartbeat_now) come from any task on the same loop.
"""

from __future__ import annotations

import asyncio
import time

from plinth import limits
from plinth.client.aio.connection import AIOConnection
from plinth.client.group_membership import GroupMembership
from plinth.errors import BrokerError, PlinthTimeoutError


class AIOGroupMembership(GroupMembership):
    def __init__(self, broker, group: str, topics: list[str], *, session_timeout_ms: int,
                 assignor: str, request_timeout_ms: float,
                 max_poll_interval_ms: int = limits.MAX_POLL_INTERVAL_MS_DEFAULT):
        self._init_state(group, topics, session_timeout_ms, assignor, request_timeout_ms,
                         max_poll_interval_ms)
        self._wake = asyncio.Event()
        self._conn = AIOConnection(broker)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run_async(), name=f"plinth-aio-heartbeat-{self.group}")

    async def close(self) -> None:
        """Leave the group (its partitions move at once) and end the task: the sync
        membership's close, awaited. Cancelled, it ends the task at once all the same
        (``end_now``): no task outlives a close(), though the leave may not have gone
        (the coordinator then expires the member after session_timeout_ms)."""
        self._closing_since_s = time.monotonic()
        self._closing = True
        self._wake.set()
        self._conn.wake()   # its wait for a heartbeat in flight asks _give_up_for
        try:
            await self._wait_for_leave()
        finally:
            ending = self.end_now()
        if ending is not None:   # the leave's bounds ran out: cancelled, it ends now
            await asyncio.wait({ending})

    async def _wait_for_leave(self) -> None:
        """Await the task's leave and end, within GROUP_LEAVE_TIMEOUT_MS_MAX twice."""
        if self._task is None:
            return
        # A join in flight is given up once the first bound passed (the wake makes
        # its wait ask again); the leave takes at most the second.
        leave_s = limits.GROUP_LEAVE_TIMEOUT_MS_MAX / 1000
        done, _ = await asyncio.wait({self._task}, timeout=leave_s)
        if not done:
            self._conn.wake()
            await asyncio.wait({self._task}, timeout=leave_s)

    def end_now(self) -> asyncio.Task | None:
        """End the membership without waiting: the task is cancelled (it closes the
        connection as it ends, after its wait removed its readers from the socket's
        fds), or the connection closed if no task runs. Nothing is awaited, so no
        cancellation can cut it short. The task if it has yet to end (on the loop's
        next turn), else None. The AIOConsumer's task on the membership's loop."""
        self._closing = True
        if self._task is None or self._task.done():
            self._conn.close()
            return None
        self._task.cancel()
        return self._task

    def abandon(self) -> None:
        """Close the connection without leaving the group: the coordinator expires the
        member after session_timeout_ms. The AIOConsumer's stop() on another loop, once
        no task of this one's loop can run (the heartbeat task cannot be awaited)."""
        self._closing = True
        self._conn.close()

    async def _run_async(self) -> None:
        try:
            await self._heartbeat_until_closed()
        finally:   # ended, failed or cancelled (end_now): its socket goes with it
            self._conn.close()

    async def _heartbeat_until_closed(self) -> None:
        while not self._closing:
            try:
                leave = self._leave_if_unpolled()
                if leave is not None:
                    await self._send_leave_async(leave)
                await self._heartbeat_once_async()
            except Exception as exc:
                self._heartbeat_crashed(exc)
                return
            try:
                await asyncio.wait_for(self._wake.wait(), self._next_wait_s())
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
        await self._leave_async()

    def heartbeat_now(self) -> None:
        """The sync membership's (a refused commit: a member's heartbeat in flight is
        given up for a new one), and end the task's wait for that heartbeat's answer at
        once (its connection's ``wake``). Any task on the loop."""
        super().heartbeat_now()
        self._conn.wake()

    async def _heartbeat_once_async(self) -> None:
        request = self._heartbeat_request()
        if request is None:
            return
        request_id, header = request
        try:
            got = await self._conn.request_async(header, request_id, self.request_timeout_ms,
                                                 give_up=self._give_up_for())
        except (BrokerError, PlinthTimeoutError) as exc:
            self._heartbeat_failed(exc)
            return
        if got is not None:   # None: given up for the heartbeat a refused commit asks for
            self._heartbeat_answered(got[0])

    async def _leave_async(self) -> None:
        leave = self._leave_request()
        if leave is not None:
            await self._send_leave_async(leave)

    async def _send_leave_async(self, leave: tuple[bytes, int, float]) -> None:
        try:
            await self._conn.request_async(*leave)
        except (BrokerError, PlinthTimeoutError) as exc:
            self._leave_failed(exc)
