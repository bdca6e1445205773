"""Consumer groups end to end: no partition is ever held by two members at once.

A member holds a partition from its on_assign until its on_revoke. Real broker,
real consumers (sync ones on threads, asyncio ones on one loop), joining together.
"""

from __future__ import annotations

import asyncio
import threading
import time

from plinth import Admin, Consumer
from plinth.aio import AIOConsumer
from tests.support import unique_topic, wait_until

SESSION_MS = 6000
PARTITIONS = 4
MEMBERS = 5      # one more than the partitions: someone always waits
ROUNDS = 3       # groups joined in turn: each a fresh race of joins
SETTLE_S = 30


class Holdings:
    """Who holds which partition, from every member's on_assign and on_revoke, in the
    order they ran (any thread, any task); and every time one was given to a member
    while another held it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._holder: dict = {}
        self.overlaps: list[tuple] = []   # (partition, holder, given to)

    def callbacks(self, name: str) -> dict:
        return {"on_assign": lambda partitions: self._assigned(name, partitions),
                "on_revoke": lambda partitions: self._revoked(name, partitions)}

    def _assigned(self, name: str, partitions) -> None:
        with self._lock:
            for tp in partitions:
                holder = self._holder.get(tp)
                if holder is not None and holder != name:
                    self.overlaps.append((tp.partition, holder, name))
                self._holder[tp] = name

    def _revoked(self, name: str, partitions) -> None:
        with self._lock:
            for tp in partitions:
                if self._holder.get(tp) == name:
                    del self._holder[tp]

    def settled(self) -> bool:
        """Every partition held, each by another member."""
        with self._lock:
            holders = list(self._holder.values())
        return len(holders) == PARTITIONS == len(set(holders))


def new_topic(url: str) -> str:
    topic = unique_topic("own")
    with Admin(broker=url) as admin:
        admin.create_topic(topic, PARTITIONS)
    return topic


def test_sync_members_joining_together_never_hold_a_partition_at_once(shared_broker):
    topic = new_topic(shared_broker.url)
    for _ in range(ROUNDS):
        # Given five consumers of a four-partition topic, joining at the same moment
        group, holdings = unique_topic("grp"), Holdings()
        start, stop = threading.Barrier(MEMBERS), threading.Event()

        def member(name: str) -> None:
            start.wait(SETTLE_S)
            with Consumer(topic, broker=shared_broker.url, group=group,
                          session_timeout_ms=SESSION_MS, **holdings.callbacks(name)) as consumer:
                while not stop.is_set():
                    consumer.poll(timeout_ms=50)

        threads = [threading.Thread(target=member, args=(f"c{i}",), daemon=True)
                   for i in range(MEMBERS)]
        for thread in threads:
            thread.start()
        try:
            # When the group settles with every partition held
            wait_until(holdings.settled, timeout_s=SETTLE_S)
        finally:
            stop.set()
            for thread in threads:
                thread.join(SETTLE_S)
        # Then no partition was given to one member while another held it
        assert holdings.overlaps == []


def test_asyncio_members_joining_together_never_hold_a_partition_at_once(shared_broker):
    topic = new_topic(shared_broker.url)

    async def round_of_joins() -> Holdings:
        group, holdings = unique_topic("grp"), Holdings()
        consumers = [AIOConsumer(topic, broker=shared_broker.url, group=group,
                                 session_timeout_ms=SESSION_MS, **holdings.callbacks(f"a{i}"))
                     for i in range(MEMBERS)]
        await asyncio.gather(*(consumer.start() for consumer in consumers))
        deadline = time.monotonic() + SETTLE_S
        try:
            while not holdings.settled() and time.monotonic() < deadline:
                await asyncio.gather(*(consumer.getmany(timeout_ms=50) for consumer in consumers))
        finally:
            await asyncio.gather(*(consumer.stop() for consumer in consumers))
        assert holdings.settled(), f"not settled within {SETTLE_S} s"
        return holdings

    for _ in range(ROUNDS):
        # Given five asyncio consumers started together, when their group settles
        holdings = asyncio.run(round_of_joins())
        # Then no partition was given to one member while another held it
        assert holdings.overlaps == []
