"""ApiVersions, Metadata, DescribeTopicPartitions, DescribeCluster and FindCoordinator:
the cluster as Kafka sees it.

Runs on the Kafka listener's event loop thread (gateway.py). Every router's
Kafka listener is a broker (gateway.py's KafkaCluster), and each partition is
"led" by one of them, spread by a hash: whichever router a client sends a
partition's requests to forwards them to the shard that really leads it.
Leader epochs are given as -1 (unknown), so that clients do not fence fetches
on epochs that Plinth's router, not the client, keeps track of. Topic ids
(Metadata v10+, DescribeTopicPartitions) are Plinth's, as Kafka's UUIDs.

DescribeTopicPartitions (KIP-966; newer Java AdminClients' describeTopics)
answers what Metadata does, a page at a time: topics in name order (all of
them when the request names none), from the cursor's topic and partition on,
at most ``response_partition_limit`` partitions (capped at
KAFKA_DESCRIBE_PARTITIONS_LIMIT_MAX, Kafka's max.request.partition.size.limit),
and ``next_cursor`` where the next page starts (null after the last). No
eligible leader replicas: their lists are empty, as from a Kafka cluster
without ELR. A topic that does not exist (or that the user may not see:
Plinth's metadata leaves those out) is UNKNOWN_TOPIC_OR_PARTITION. A cursor
on a topic the request does not name, or a limit below 1, is
INVALID_REQUEST on every topic named, as Kafka answers a request it refuses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

from plinth import limits, protocol, topics as plinth_topics
from plinth.errors import InvalidTopicError, TopicExistsError
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.api_acls import principal_of
from plinth.router.kafka.backend import PRINCIPAL, ask, ask_change, change_deadline_s
from plinth.router.kafka.codec import SUPPORTED_VERSIONS
from plinth.router.kafka.plinth_errors import kafka_code
from plinth.router.kafka.request_values import kafka_topic_id

UNKNOWN_LEADER_EPOCH = -1
# Kafka's "authorized operations not included" (INT32_MIN): Plinth does not compute
# them, as Kafka does unless the client asks (include_*_authorized_operations).
AUTHORIZED_OPERATIONS_OMITTED = -2147483648
BATCHED_COORDINATOR_VERSION = 4   # FindCoordinator: several keys from here on
AUTO_CREATE_FIELD_VERSION = 4     # Metadata: allow_auto_topic_creation from here on

log = logging.getLogger(__name__)


async def api_versions(gateway, header, body: dict, connection) -> dict:
    """The versions of every API this listener answers."""
    keys = sorted(key for key in gateway.api_keys() if key in SUPPORTED_VERSIONS)
    return {"error_code": kafka.NONE, "throttle_time_ms": 0,
            "api_keys": [{"api_key": key, "min_version": SUPPORTED_VERSIONS[key][0],
                          "max_version": SUPPORTED_VERSIONS[key][1]} for key in keys]}


def _broker(broker, id_field: str = "node_id") -> dict:
    return {id_field: broker.node_id, "host": broker.host, "port": broker.port, "rack": None}


async def metadata(gateway, header, body: dict, connection) -> dict:
    """Every topic asked for (all when the request names none), each partition led by
    one of the brokers. With auto-creation on (the listener's and the request's), a
    topic asked for by name that does not exist is created first, with the broker's
    defaults (KAFKA_TOPIC_PARTITIONS_DEFAULT partitions, the default replication
    factor), as Kafka's auto.create.topics.enable does. A name no topic may have (bad
    characters, too long, the internal __consumer_offsets where it does not exist) is
    never tried: it is INVALID_TOPIC_EXCEPTION, which clients fail on at once, as
    Kafka answers it with or without auto-creation (UNKNOWN_TOPIC_OR_PARTITION made
    a producer wait its whole message timeout, retrying the create at every
    metadata refresh). A create refused for another reason (an ACL, the topic limit,
    a stopped shard) is not tried again for that user and name, nor logged again,
    for KAFKA_AUTO_CREATE_REFUSED_TTL_S (``AutoCreateRefusals``): a producer asks
    every retry backoff, and each try was a change for the controller and a warning.
    The internal topic, where it exists (replicated groups), is answered as
    internal."""
    wanted = body["topics"]
    # Every topic: v0's empty list, or null from v1 on (where an empty list is none).
    every = wanted is None or (header.api_version == 0 and not wanted)
    names = None if every else [t["name"] for t in wanted]
    reply = await _plinth_metadata(gateway)
    if names and reply.error is None and _may_create(gateway, header, body):
        refused = gateway.auto_create_refusals
        missing = sorted(name for name in set(names) - {info.name for info in reply.topics}
                         if _name_refusal(name) is None and not refused.refused_lately(name))
        if missing:
            await asyncio.gather(*(_create(gateway, name) for name in missing))
            reply = await _plinth_metadata(gateway)
    cluster = gateway.cluster
    brokers = cluster.brokers()
    topics = []
    if reply.error is not None:
        topics = [_topic_error(name, kafka_code(reply.error)) for name in (names or [])]
    else:
        known = {info.name: info for info in reply.topics}
        for name in (sorted(known) if names is None else names):
            info = known.get(name)
            if info is None:
                topics.append(_topic_error(name, _absent_code(gateway, name)))
                continue
            topics.append({"error_code": kafka.NONE, "name": name,
                           "topic_id": kafka_topic_id(info.topic_id),
                           "is_internal": name == plinth_topics.OFFSETS_TOPIC,
                           "topic_authorized_operations": AUTHORIZED_OPERATIONS_OMITTED,
                           "partitions": [_partition(index, cluster.leader_of(brokers, name, index))
                                          for index in range(info.partitions)]})
    return {"throttle_time_ms": 0, "brokers": [_broker(b) for b in brokers],
            "cluster_id": cluster.cluster_id, "controller_id": cluster.node_id,
            "topics": topics, "cluster_authorized_operations": AUTHORIZED_OPERATIONS_OMITTED}


def _absent_code(gateway, name: str | None) -> int:
    """The code for a topic asked for by name and not in Plinth's answer, which holds only
    the topics the user has a grant on: TOPIC_AUTHORIZATION_FAILED if the user has none
    on the name (whether it exists or not, as Kafka answers, so that existence stays
    hidden and clients fail at once instead of waiting for the topic to appear), else
    INVALID_TOPIC_EXCEPTION for a name no topic may have, else UNKNOWN_TOPIC_OR_PARTITION."""
    user = PRINCIPAL.get()
    if gateway.acl is not None and user is not None and name is not None and not (
            gateway.acl.grants_for(principal_of(user)).may_see_topic(name)):
        return kafka.TOPIC_AUTHORIZATION_FAILED
    if _name_refusal(name) is not None:
        return kafka.INVALID_TOPIC_EXCEPTION
    return kafka.UNKNOWN_TOPIC_OR_PARTITION


def _topic_error(name: str | None, code: int) -> dict:
    return {"error_code": code, "name": name, "is_internal": False,
            "partitions": [], "topic_authorized_operations": AUTHORIZED_OPERATIONS_OMITTED}


def _partition(index: int, node_id: int) -> dict:
    return {"error_code": kafka.NONE, "partition_index": index, "leader_id": node_id,
            "leader_epoch": UNKNOWN_LEADER_EPOCH, "replica_nodes": [node_id],
            "isr_nodes": [node_id], "offline_replicas": []}


def _name_refusal(name: str | None) -> InvalidTopicError | None:
    """Why no topic may be created under ``name`` (None: it may, or it is a topic id)."""
    if name is None:
        return None
    try:
        plinth_topics.validate_topic_name(name)
        plinth_topics.refuse_internal(name, "create")
    except InvalidTopicError as exc:
        return exc
    return None


def _may_create(gateway, header, body: dict) -> bool:
    # Before v4 the request has no say: Kafka creates whenever the broker allows it.
    return gateway.auto_create_topics and (header.api_version < AUTO_CREATE_FIELD_VERSION
                                           or body["allow_auto_topic_creation"])


async def _create(gateway, name: str) -> None:
    """Create a topic with the defaults; an error (a race with another creator, a
    refusal) shows in the metadata answer that follows, and a refusal is remembered
    (``AutoCreateRefusals``)."""
    reply, _ = await ask_change(gateway.backend, change_deadline_s(), protocol.encode_create_topic,
                                name, limits.KAFKA_TOPIC_PARTITIONS_DEFAULT, {})
    if reply.error is not None and not isinstance(reply.error, TopicExistsError):
        gateway.auto_create_refusals.note(name)
        log.warning("Kafka listener: auto-creating topic %r failed (not tried again for "
                    "%g s): %s", name, limits.KAFKA_AUTO_CREATE_REFUSED_TTL_S, reply.error)


class AutoCreateRefusals:
    """The names whose auto-creation was refused lately, per Kafka user (an ACL refuses
    one user, not another), each until KAFKA_AUTO_CREATE_REFUSED_TTL_S after the
    refusal; at most KAFKA_AUTO_CREATE_REFUSALS_REMEMBERED_MAX (the oldest go first).
    A topic created meanwhile is answered as it is: only the create is not tried.
    The listener's event loop thread."""

    def __init__(self):
        self._until_s: OrderedDict[tuple[str | None, str], float] = OrderedDict()

    def refused_lately(self, name: str) -> bool:
        key = (PRINCIPAL.get(), name)
        until_s = self._until_s.get(key)
        if until_s is None:
            return False
        if time.monotonic() < until_s:
            return True
        del self._until_s[key]
        return False

    def note(self, name: str) -> None:
        key = (PRINCIPAL.get(), name)
        self._until_s.pop(key, None)
        self._until_s[key] = time.monotonic() + limits.KAFKA_AUTO_CREATE_REFUSED_TTL_S
        while len(self._until_s) > limits.KAFKA_AUTO_CREATE_REFUSALS_REMEMBERED_MAX:
            self._until_s.popitem(last=False)


async def _plinth_metadata(gateway) -> protocol.ReplyView:
    reply, _ = await ask(gateway.backend, lambda rid: protocol.encode_metadata(rid, []))
    return reply


async def describe_topic_partitions(gateway, header, body: dict, connection) -> dict:
    reply = await _plinth_metadata(gateway)
    names = sorted({t["name"] for t in body["topics"]})
    cursor, limit = body["cursor"], body["response_partition_limit"]
    refusal = _page_refusal(names, cursor, limit)
    if refusal is not None or reply.error is not None:
        if refusal is not None:
            log.warning("Kafka DescribeTopicPartitions from %s refused: %s", header.client_id,
                        refusal)
        code = kafka.INVALID_REQUEST if refusal is not None else kafka_code(reply.error)
        return {"throttle_time_ms": 0, "next_cursor": None,
                "topics": [_topic_error(name, code) for name in names]}
    counts = {info.name: info.partitions for info in reply.topics}
    ids = {info.name: kafka_topic_id(info.topic_id) for info in reply.topics}
    page, next_cursor = partition_page(counts, names or sorted(counts), cursor,
                                       min(limit, limits.KAFKA_DESCRIBE_PARTITIONS_LIMIT_MAX))
    cluster = gateway.cluster
    brokers = cluster.brokers()
    topics = []
    for name, indexes in page:
        if name not in counts:
            topics.append(_topic_error(name, kafka.UNKNOWN_TOPIC_OR_PARTITION))
            continue
        partitions = [_partition(i, cluster.leader_of(brokers, name, i)) for i in indexes]
        for partition in partitions:
            partition.update(eligible_leader_replicas=[], last_known_elr=[])
        topics.append({"error_code": kafka.NONE, "name": name, "topic_id": ids[name],
                       "is_internal": False, "partitions": partitions,
                       "topic_authorized_operations": AUTHORIZED_OPERATIONS_OMITTED})
    return {"throttle_time_ms": 0, "topics": topics, "next_cursor": next_cursor}


def _page_refusal(names: list[str], cursor: dict | None, limit: int) -> str | None:
    """Why a DescribeTopicPartitions request cannot be answered, or None."""
    if limit < 1:
        return f"response_partition_limit {limit} is below 1"
    if cursor is not None and names and cursor["topic_name"] not in names:
        return (f"the cursor's topic {cursor['topic_name']!r} is not among the "
                f"{len(names)} topics asked for")
    if cursor is not None and cursor["partition_index"] < 0:
        return f"the cursor's partition index {cursor['partition_index']} is negative"
    return None


def partition_page(counts: dict[str, int], names: list[str], cursor: dict | None,
                   limit: int) -> tuple[list[tuple[str, range]], dict | None]:
    """One page: [(topic, its partition indexes on this page)] in name order from the
    cursor on, at most ``limit`` partitions in all, and the next page's cursor (None:
    this is the last). A topic not in ``counts`` (unknown) takes no room. A topic
    cut by the limit goes on at the next page's cursor."""
    start_topic = cursor["topic_name"] if cursor is not None else None
    page, room = [], limit
    for name in names:
        if start_topic is not None and name < start_topic:
            continue
        first = cursor["partition_index"] if name == start_topic else 0
        count = counts.get(name, 0)
        if name in counts and room == 0 and first < count:
            return page, {"topic_name": name, "partition_index": first}
        end = min(count, first + room)
        page.append((name, range(first, end) if name in counts else range(0)))
        room -= max(0, end - first)
        if end < count:
            return page, {"topic_name": name, "partition_index": end}
    return page, None


async def describe_cluster(gateway, header, body: dict, connection) -> dict:
    cluster = gateway.cluster
    return {"throttle_time_ms": 0, "error_code": kafka.NONE, "error_message": None,
            "endpoint_type": 1, "cluster_id": cluster.cluster_id,
            "controller_id": cluster.node_id,
            "brokers": [_broker(b, "broker_id") for b in cluster.brokers()],
            "cluster_authorized_operations": AUTHORIZED_OPERATIONS_OMITTED}


async def find_coordinator(gateway, header, body: dict, connection) -> dict:
    """Any router coordinates any group (it forwards to the coordinating shard): the one
    named is spread over them by the group's name."""
    cluster = gateway.cluster
    brokers = cluster.brokers()
    keys = body["coordinator_keys"] if header.api_version >= BATCHED_COORDINATOR_VERSION \
        else [body["key"]]
    found = [{"key": key, "error_code": kafka.NONE, "error_message": None,
              **_broker(cluster.coordinator_of(brokers, key))} for key in keys]
    for answer in found:
        del answer["rack"]
    return {"throttle_time_ms": 0, "error_code": kafka.NONE, "error_message": None,
            **{k: found[0][k] for k in ("node_id", "host", "port")}, "coordinators": found}
