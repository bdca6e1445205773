"""AIOAdmin: the sync Admin's calls as coroutines, on the caller's event loop.

Client side. Each method is the sync Admin's (client/admin.py) of the same
name, arguments, answer and errors: the same checks (plinth/topics.py), the
same request encoders (plinth/protocol.py), the same retries of "unavailable"
within ``request_timeout_ms`` (except adding and removing shards); only the
wait is awaited (client/aio/connection.py).

Tasks. Any task on the loop of its first call may call it; calls from several
tasks take turns (an asyncio.Lock), one request in flight at a time, as one
thread at a time uses a sync Admin. A call awaited on another loop raises
WrongEventLoopError at once (client/aio/event_loop.py); ``close()`` there closes
the socket first (nothing else is kept between calls).

    async with AIOAdmin(broker="tcp://127.0.0.1:7400") as admin:
        await admin.create_topic("orders", 4)
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable

from plinth import limits, protocol, topics
from plinth.client.admin import (LIST_OFFSETS_RETRIED_ERRORS, NewTopic, alter_topic_args,
                                 checked_admin_timeout, checked_config, check_names_page_args,
                                 check_new_topic, checked_new_topics,
                                 checked_records_to_delete, checked_shard_count,
                                 election_partitions, election_type_code, group_topics,
                                 lag_row, list_offsets_args, offset_deletions,
                                 offsets_to_delete, refuse_partial, timed_change,
                                 unknown_topic)
from plinth.client.arguments import (checked_bool, checked_offsets, checked_str, checked_topic_id,
                                     checked_topic_names)
from plinth.client.aio.connection import AIOConnection
from plinth.client.aio.event_loop import refuse_release_while_running, wrong_loop_error
from plinth.client.broker_protocol import check_protocol
from plinth.client.connection import RETRIED_ERRORS, broker_address
from plinth.client.fetcher import TopicPartition
from plinth.client.kafka_option_names import kafka_option_names
from plinth.errors import BrokerError, InternalError, UnknownTopicError
from plinth.name_pages import NamesPage


def _on_its_loop(method):
    """An AIOAdmin coroutine whose first act is the loop check, naming it: the check in
    ``_call`` comes after the arguments' checks and, for a call made of several
    requests (group_lag), names none ("A call of an AIOAdmin")."""
    @functools.wraps(method)
    async def checked(self, *args, **kwargs):
        self._check_loop(method.__name__)
        return await method(self, *args, **kwargs)
    return checked


@kafka_option_names
class AIOAdmin:
    def __init__(self, *, broker=None, bootstrap_servers: str | list[str] | None = None,
                 request_timeout_ms: int = limits.CLIENT_REQUEST_TIMEOUT_MS_DEFAULT,
                 curve_key_file: str | None = None, curve_server_key_file: str | None = None):
        """Connects at once (ZeroMQ connects in the background); no I/O until a call."""
        self.request_timeout_ms = checked_admin_timeout(request_timeout_ms)
        self._conn = AIOConnection(broker_address(broker, curve_key_file, curve_server_key_file,
                                                  bootstrap_servers))
        self._turn = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None   # that of the first call
        self._broker_protocol: int | None = None   # asked before the first guarded call

    async def __aenter__(self) -> "AIOAdmin":
        self._check_loop("__aenter__")
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the socket; a call after it raises ClosedError. Event loop thread. On
        another loop than its calls': WrongEventLoopError, once the socket is closed
        (unless that loop runs in another thread: then nothing is closed)."""
        loop = self._loop
        if loop is None or self._conn.closed or asyncio.get_running_loop() is loop:
            self._conn.close()
            return
        refuse_release_while_running(loop, "AIOAdmin", "close")
        self._conn.close()
        raise wrong_loop_error("AIOAdmin", "close", loop,
                               "Its socket is closed; nothing was lost (an admin keeps "
                               "nothing between calls)", bound_at="first used on")

    def release(self) -> None:
        """Close the socket without looking at the loop: the stop() of the client that
        owns this admin, on another loop, once it found nothing of its own loop runs."""
        self._conn.close()

    def _check_loop(self, call: str | None) -> None:
        """Bind the admin to the running loop at its first call; WrongEventLoopError for
        a call on another loop later. The calling task."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._loop is not None:
                raise wrong_loop_error("AIOAdmin", call, self._loop, bound_at="first used on")
            self._loop = loop

    async def _require_protocol(self, call: str) -> None:
        """Admin._require_protocol: the broker's version asked once, on this loop."""
        if self._broker_protocol is None:
            view = await self._call(protocol.encode_metadata, [])
            self._broker_protocol = view.protocol_version
        check_protocol(call, self._broker_protocol, self._conn.url)

    async def _call(self, encode, *args, retry: bool = True, retried: tuple = RETRIED_ERRORS):
        self._check_loop(None)   # before the turn: the lock belongs to the admin's loop too
        async with self._turn:
            if not retry:
                request_id = self._conn.next_request_id()
                view, _ = await self._conn.request_async(encode(request_id, *args), request_id,
                                                         self.request_timeout_ms)
                return view
            view, _ = await self._conn.request_retrying_async(
                lambda request_id: encode(request_id, *args), self.request_timeout_ms, retried)
            return view

    async def _change(self, encode, *args, retry: bool = True):
        """Admin._change: the requests carry the time left (``timed_change``)."""
        return await self._call(timed_change(encode, self.request_timeout_ms), *args,
                                retry=retry)

    @_on_its_loop
    async def create_topic(self, name: str, partitions: int = 1,
                           replication_factor: int | None = None,
                           config: dict[str, str] | None = None) -> protocol.TopicInfo:
        """Admin.create_topic."""
        check_new_topic(name, partitions, replication_factor)
        config = checked_config(config)
        view = await self._change(protocol.encode_create_topic, name, partitions, config,
                                  "createTopic", replication_factor or 0)
        return view.topics[0]

    @_on_its_loop
    async def create_topics(self, new_topics: list[NewTopic], *,
                            validate_only: bool = False) -> list[protocol.TopicInfo]:
        """Admin.create_topics: all of them in one request, or none; ``validate_only``:
        checked as a create would be, none created."""
        checked = checked_new_topics(new_topics)
        if checked_bool("validate_only", validate_only):
            await self._require_protocol("create_topics(validate_only=True)")
            view = await self._call(protocol.encode_create_topics, checked, True)
        else:
            view = await self._change(protocol.encode_create_topics, checked)
        return view.topics

    @_on_its_loop
    async def alter_topic(self, name: str, config: dict[str, str] | None = None,
                          delete_config: Iterable[str] = ()) -> protocol.TopicInfo:
        """Admin.alter_topic."""
        config, deleted = alter_topic_args(config, delete_config)
        view = await self._change(protocol.encode_create_topic, name, 0, config, "alterTopic",
                                  0, deleted)
        return view.topics[0]

    @_on_its_loop
    async def create_partitions(self, name: str, total_count: int) -> protocol.TopicInfo:
        """Admin.create_partitions: grow the topic to ``total_count`` partitions."""
        topics.validate_partition_growth(name, 0, total_count)
        view = await self._change(protocol.encode_create_topic, name, total_count, {},
                                  "alterTopic")
        return view.topics[0]

    @_on_its_loop
    async def list_topics(self) -> list[str]:
        """Admin.list_topics: names of all topics, sorted, a page at a time."""
        return await self._all_names("listTopicsPage", limits.TOPICS_MAX)

    @_on_its_loop
    async def list_topics_page(self, prefix: str = "", after: str = "",
                               limit: int = limits.ADMIN_LIST_PAGE_NAMES_DEFAULT) -> NamesPage:
        """Admin.list_topics_page: ``.names`` and ``.more``."""
        return await self._names_page("listTopicsPage", prefix, after, limit)

    @_on_its_loop
    async def topic_stats(self, names: list[str]) -> dict[str, protocol.TopicStats]:
        """Admin.topic_stats: size and rates by name."""
        view = await self._call(protocol.encode_topic_stats_request,
                                checked_topic_names("names", names))
        return {stats.name: stats for stats in view.topic_stats}

    @_on_its_loop
    async def describe_topic(self, name: str) -> protocol.TopicInfo:
        """Admin.describe_topic."""
        return (await self._call(protocol.encode_topic_request, "describeTopic",
                                 checked_str("name", name))).topics[0]

    @_on_its_loop
    async def delete_topic(self, name: str, topic_id: str | None = None) -> None:
        """Admin.delete_topic: with ``topic_id``, only if the topic still has it."""
        name, topic_id = checked_str("name", name), checked_topic_id("topic_id", topic_id)
        if topic_id:
            await self._require_protocol("delete_topic(topic_id=...)")
        await self._change(protocol.encode_topic_request, "deleteTopic", name, topic_id)

    @_on_its_loop
    async def partition_count(self, name: str) -> int:
        """Admin.partition_count."""
        try:
            return (await self._call(protocol.encode_metadata,
                                     [checked_str("name", name)])).topics[0].partitions
        except UnknownTopicError as exc:
            raise unknown_topic(name, exc) from None

    @_on_its_loop
    async def add_shards(self, count: int) -> list[tuple[str, int, str, str, int]]:
        """Admin.add_shards (not retried)."""
        return (await self._change(protocol.encode_shards_change, "addShards",
                                   checked_shard_count(count), retry=False)).moves

    @_on_its_loop
    async def remove_shards(self, count: int) -> list[tuple[str, int, str, str, int]]:
        """Admin.remove_shards (not retried)."""
        return (await self._change(protocol.encode_shards_change, "removeShards",
                                   checked_shard_count(count), retry=False)).moves

    @_on_its_loop
    async def move_shard(self, shard: str, node: str, *, allow_replicas_on_one_node: bool = False,
                         accept_data_loss: bool = False, force: bool = False) -> protocol.ShardMove:
        """Admin.move_shard (not retried)."""
        view = await self._change(lambda request_id, timeout_ms: protocol.encode_move_shard(
            request_id, shard, node, allow_replicas_on_one_node=allow_replicas_on_one_node,
            accept_data_loss=accept_data_loss, force=force, timeout_ms=timeout_ms),
            retry=False)
        return view.shard_move

    @_on_its_loop
    async def elect_leaders(self, election_type: str | int = "preferred",
                            topic_partitions=None) -> list[protocol.ElectionResult]:
        """Admin.elect_leaders (not retried)."""
        return (await self._call(protocol.encode_elect_leaders,
                                 election_type_code(election_type),
                                 election_partitions(topic_partitions), retry=False)).elections

    @_on_its_loop
    async def status(self) -> protocol.StatusInfo:
        """Admin.status: nodes, shards and routers of the broker."""
        return (await self._call(protocol.encode_status_request)).status

    @_on_its_loop
    async def list_groups(self) -> list[str]:
        """Admin.list_groups: every group, sorted, a page at a time."""
        return await self._all_names("listGroupsPage",
                                     limits.GROUPS_PER_SHARD_MAX * limits.SHARDS_MAX)

    @_on_its_loop
    async def list_groups_page(self, prefix: str = "", after: str = "",
                               limit: int = limits.ADMIN_LIST_PAGE_NAMES_DEFAULT) -> NamesPage:
        """Admin.list_groups_page: ``.names`` and ``.more``."""
        return await self._names_page("listGroupsPage", prefix, after, limit)

    async def _all_names(self, kind: str, names_max: int) -> list[str]:
        names: list[str] = []
        step = limits.ADMIN_LIST_PAGE_NAMES_MAX
        for _ in range(names_max // step + 2):
            page = await self._names_page(kind, "", names[-1] if names else "", step)
            refuse_partial(kind, page)
            names += page.names
            if not page.more:
                return names
        raise InternalError(f"{kind}: the pages did not end within {names_max} names")

    async def _names_page(self, kind: str, prefix: str, after: str, limit: int) -> NamesPage:
        check_names_page_args(kind, prefix, after, limit)
        view = await self._call(protocol.encode_names_page_request, kind, prefix, after, limit)
        return view.names_page

    @_on_its_loop
    async def describe_group(self, group: str) -> protocol.GroupInfo:
        return (await self._call(protocol.encode_group_request, "describeGroup",
                                 checked_str("group", group))).group

    @_on_its_loop
    async def group_lag(self, group: str) -> list[tuple[str, int, int | None, int, int | None]]:
        """Admin.group_lag: (topic, partition, committed, end, lag) per partition; a
        topic that no longer exists is left out."""
        info = await self.describe_group(group)
        rows = []
        for topic in group_topics(info):
            try:
                rows += [lag_row(topic, partition, info.committed,
                                 (await self.list_offsets(topic, partition)).end_offset)
                         for partition in range(await self.partition_count(topic))]
            except UnknownTopicError:
                continue
        return rows

    @_on_its_loop
    async def reset_group_offsets(self, group: str, offsets: dict[tuple[str, int], int]) -> None:
        """Admin.reset_group_offsets: refused while the group has members."""
        group = checked_str("group", group)
        for part in protocol.commit_offsets_parts(checked_offsets("reset_group_offsets", offsets)):
            await self._call(protocol.encode_commit_offsets, "resetOffsets", group, "", 0, part)

    @_on_its_loop
    async def delete_group(self, group: str) -> None:
        """Admin.delete_group: refused while the group has members."""
        await self._call(protocol.encode_group_request, "deleteGroup",
                         checked_str("group", group))

    @_on_its_loop
    async def delete_group_offsets(self, group: str, partitions
                                   ) -> dict[TopicPartition, BrokerError | None]:
        """Admin.delete_group_offsets: each partition's outcome, a request per topic."""
        group = checked_str("group", group)
        outcomes: dict[TopicPartition, BrokerError | None] = {}
        by_topic = sorted(offsets_to_delete(partitions).items())
        await self._require_protocol("delete_group_offsets")
        for topic, numbers in by_topic:
            outcomes.update(offset_deletions(await self._call(
                protocol.encode_delete_offsets, group, {(topic, p) for p in numbers})))
        return outcomes

    @_on_its_loop
    async def delete_records(self, records_to_delete: dict) -> dict[TopicPartition, int]:
        """Admin.delete_records, every partition at once."""
        wanted = checked_records_to_delete(records_to_delete)
        answers = await asyncio.gather(*(
            self._call(protocol.encode_delete_records, tp.topic, tp.partition, offset)
            for tp, offset in wanted.items()), return_exceptions=True)
        refusals = [a for a in answers if isinstance(a, BaseException)]
        if refusals:
            raise refusals[0]
        return {tp: answer.offsets.start_offset for tp, answer in zip(wanted, answers)}

    @_on_its_loop
    async def list_offsets(self, topic: str, partition: int,
                           timestamp_ms: int = protocol.NO_TIME_LOOKUP, *,
                           require_listed: bool = False) -> protocol.PartitionInfo:
        """Admin.list_offsets (requestTimedOut, and with ``require_listed`` a remote
        log not listed yet, retried likewise)."""
        return (await self._call(protocol.encode_list_offsets,
                                 *list_offsets_args(topic, partition, timestamp_ms,
                                                    require_listed),
                                 retried=LIST_OFFSETS_RETRIED_ERRORS)).offsets
