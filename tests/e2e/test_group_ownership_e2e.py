"""Consumer groups end to end: no partition is ever held by two members at once,
and a member hands out records only of partitions it holds.

A member holds a partition from its on_assign until its on_revoke. Real broker,
real consumers (sync ones on threads, asyncio ones on one loop): joining
together, and one expelled while its event loop was blocked.
"""

from __future__ import annotations

import asyncio
import threading
import time

from plinth import Admin, Consumer, Producer
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
        self.events: list[tuple] = []     # (member, "assign" or "revoke", partitions)
        self.foreign: list[tuple] = []    # (partition, member handed its records, holder)

    def callbacks(self, name: str) -> dict:
        return {"on_assign": lambda partitions: self._assigned(name, partitions),
                "on_revoke": lambda partitions: self._revoked(name, partitions)}

    def _assigned(self, name: str, partitions) -> None:
        with self._lock:
            self.events.append((name, "assign", {tp.partition for tp in partitions}))
            for tp in partitions:
                holder = self._holder.get(tp)
                if holder is not None and holder != name:
                    self.overlaps.append((tp.partition, holder, name))
                self._holder[tp] = name

    def _revoked(self, name: str, partitions) -> None:
        with self._lock:
            self.events.append((name, "revoke", {tp.partition for tp in partitions}))
            for tp in partitions:
                if self._holder.get(tp) == name:
                    del self._holder[tp]

    def handed_out(self, name: str, polled: dict) -> None:
        """A poll's records were handed to member ``name``: note each partition of
        them that it did not hold then."""
        with self._lock:
            for tp in polled:
                if self._holder.get(tp) != name:
                    self.foreign.append((tp.partition, name, self._holder.get(tp)))

    def held_by(self, name: str) -> set[int]:
        with self._lock:
            return {tp.partition for tp, holder in self._holder.items() if holder == name}

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


def test_an_asyncio_member_expelled_while_its_loop_was_blocked_drops_its_partitions_first(
        shared_broker):
    topic, group, holdings = new_topic(shared_broker.url), unique_topic("grp"), Holdings()
    everything = set(range(PARTITIONS))
    session_ms = 2000
    stop = threading.Event()

    def produce(count: int) -> None:
        with Producer(broker=shared_broker.url) as producer:
            for n in range(count):
                producer.send(topic, b"%d" % n, partition=n % PARTITIONS)

    def other_member() -> None:
        with Consumer(topic, broker=shared_broker.url, group=group, session_timeout_ms=session_ms,
                      auto_offset_reset="earliest", **holdings.callbacks("c2")) as consumer:
            while not stop.is_set():
                holdings.handed_out("c2", consumer.poll(timeout_ms=50))

    async def expelled_member() -> list:
        consumer = AIOConsumer(topic, broker=shared_broker.url, group=group,
                               session_timeout_ms=session_ms, auto_offset_reset="earliest",
                               **holdings.callbacks("c1"))
        await consumer.start()
        try:
            # Given c1 alone in the group, reading every partition, fetches parked
            deadline = time.monotonic() + SETTLE_S
            while holdings.held_by("c1") != everything and time.monotonic() < deadline:
                holdings.handed_out("c1", await consumer.getmany(timeout_ms=50))
            assert holdings.held_by("c1") == everything
            # When its event loop is blocked (no heartbeat) until its session ended and c2,
            # joining meanwhile, was given every partition; records arrive for c1 meanwhile
            threading.Thread(target=other_member, daemon=True).start()
            produce(400)
            wait_until(lambda: holdings.held_by("c2") == everything, timeout_s=SETTLE_S)
            blocked_events = len(holdings.events)
            # Then, unblocked, it reads on until it holds its share again
            deadline = time.monotonic() + SETTLE_S
            while time.monotonic() < deadline and not (
                    len(holdings.held_by("c1")) == len(holdings.held_by("c2")) == 2):
                holdings.handed_out("c1", await consumer.getmany(timeout_ms=50))
            return [event for event in holdings.events[blocked_events:] if event[0] == "c1"]
        finally:
            stop.set()
            await consumer.stop()

    c1_events = asyncio.run(expelled_member())
    # No record was handed to a member while it did not hold its partition (before the
    # fix c1 handed out the records buffered for partitions c2 held)
    assert holdings.foreign == []
    # And c1 dropped all four before it was given its share again
    assert c1_events[0] == ("c1", "revoke", everything)
    assert c1_events[1][1] == "assign" and len(c1_events[1][2]) == 2
