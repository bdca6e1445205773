"""gateway.py's order within a connection: a change (CreateTopics, DeleteTopics,
CreatePartitions, AlterConfigs, IncrementalAlterConfigs) is made after the
connection's earlier changes, and the connection's later requests wait for it, as
Kafka serves a connection's requests one at a time; another connection's requests
do not wait for it. The APIs are stand-ins that record when they run."""

from __future__ import annotations

import asyncio

from plinth.router.kafka.codec import API_KEYS, RequestHeader
from plinth.router.kafka.gateway import CHANGE_APIS, KafkaGateway
from plinth.router.kafka.listener import ConnectionInfo


def header(api: str) -> RequestHeader:
    return RequestHeader(API_KEYS[api], 1, 7, "test")


def connection(connection_id: int) -> ConnectionInfo:
    return ConnectionInfo(connection_id, ("127.0.0.1", 5555))


class Recorded:
    """A gateway whose CreateTopics waits for ``release`` (a change waiting for a stopped
    shard) and whose Metadata and DeleteTopics answer at once; ``order`` says what ran."""

    def __init__(self, fail_change: bool = False):
        self.gateway = KafkaGateway(backend=None, cluster=None)
        self.order: list[str] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()

        async def create(gateway, header_, body, conn):
            self.order.append(f"create on {conn.connection_id}")
            self.started.set()
            await self.release.wait()
            if fail_change:
                raise RuntimeError("the create failed")
            return {}

        self.gateway._handlers[API_KEYS["CreateTopics"]] = create
        for api in ("Metadata", "DeleteTopics"):
            self.gateway._handlers[API_KEYS[api]] = self._answering_now(api)

    def _answering_now(self, name: str):
        async def api(gateway, header_, body, conn):
            self.order.append(f"{name} on {conn.connection_id}")
            return {}
        return api

    def handle(self, conn: ConnectionInfo, api: str) -> asyncio.Task:
        return asyncio.create_task(self.gateway.handle(conn, header(api), {}))


def test_the_changing_apis_are_the_five_that_change_topics():
    assert CHANGE_APIS == {API_KEYS[name] for name in (
        "CreateTopics", "DeleteTopics", "CreatePartitions", "AlterConfigs",
        "IncrementalAlterConfigs")}


def test_a_request_after_a_change_waits_for_it_and_another_connections_request_does_not():
    async def scenario():
        recorded = Recorded()
        first, second = connection(1), connection(2)
        # Given a create on connection 1 waiting, and a metadata sent after it there
        creating = recorded.handle(first, "CreateTopics")
        after = recorded.handle(first, "Metadata")
        await recorded.started.wait()
        # When connection 2 asks for metadata / Then it is answered at once
        await recorded.handle(second, "Metadata")
        assert recorded.order == ["create on 1", "Metadata on 2"]
        assert not after.done()
        # And connection 1's metadata is answered once its create is made
        recorded.release.set()
        await asyncio.gather(creating, after)
        assert recorded.order == ["create on 1", "Metadata on 2", "Metadata on 1"]

    asyncio.run(scenario())


def test_a_connections_changes_are_made_one_after_another_in_the_order_sent():
    async def scenario():
        recorded = Recorded()
        conn = connection(1)
        creating = recorded.handle(conn, "CreateTopics")
        deleting = recorded.handle(conn, "DeleteTopics")
        await recorded.started.wait()
        assert not deleting.done()
        recorded.release.set()
        await asyncio.gather(creating, deleting)
        assert recorded.order == ["create on 1", "DeleteTopics on 1"]

    asyncio.run(scenario())


def test_a_request_after_a_change_that_failed_is_still_served():
    async def scenario():
        recorded = Recorded(fail_change=True)
        conn = connection(1)
        creating = recorded.handle(conn, "CreateTopics")
        after = recorded.handle(conn, "Metadata")
        await recorded.started.wait()
        recorded.release.set()
        results = await asyncio.gather(creating, after, return_exceptions=True)
        assert isinstance(results[0], RuntimeError) and results[1] == {}
        assert recorded.order == ["create on 1", "Metadata on 1"]

    asyncio.run(scenario())
