"""DescribeLogDirs: where a broker keeps each partition, and how many bytes.

Runs on the Kafka listener's event loop thread (gateway.py). Kafka's admin
tools (kafka-log-dirs, AdminClient.describeLogDirs, kafka-python's
describe_log_dirs) ask each broker for its log directories and the size of
every partition replica in them. A Plinth router is one Kafka broker with one
log directory: the broker's data dir (``--data-dir`` of ``plinth serve``, or
of ``plinth router`` when given; "" when the router was not told it), with the
volume's total and usable bytes from ``shutil.disk_usage`` (v4; -1 when the
directory is unknown or unreadable).

Which partitions a router lists: those it is named leader of in Metadata
(KafkaCluster.leader_of), the only replica Metadata gives them, so that a tool
summing over brokers counts each partition once.

Where the sizes come from: Plinth's describeTopic, one per topic, its
``PartitionInfo.size_bytes`` per partition: the log bytes on the shards'
disks (a tiered topic's remote segments are not counted, as Kafka's
PartitionSize counts only the local log). ``offset_lag`` is 0 and
``is_future_key`` false: Plinth never moves a replica between directories.

Who may ask: as Kafka asks DESCRIBE on the cluster, with an ACL file a user
whose grants hold Plinth's ``cluster`` operation (api_acls.cluster_refusal):
the answer names the data dir's absolute path and its volume's sizes. Others
get CLUSTER_AUTHORIZATION_FAILED at the top (v3+; v0-2 have no such field)
and no log dir, as Kafka answers, and a line at INFO naming the user. Without
an ACL file every user may do everything, this too.

Filter: ``topics`` null is every topic (from Plinth's metadata); otherwise
each topic's partitions listed. A topic that does not exist, or that the
user may not describe (the router's ACL refuses its describeTopic), is simply
absent, as Kafka leaves it out; a partition index the topic does not have is
absent too. Any other failure of a topic's describeTopic answers the log
dir's error code (the router's error as Kafka's), its topics left out.
"""

from __future__ import annotations

import asyncio
import logging
import shutil

from plinth import limits, protocol
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.api_acls import cluster_refusal
from plinth.router.kafka.backend import ask
from plinth.router.kafka.plinth_errors import kafka_code

log = logging.getLogger(__name__)

# describeTopic answers that mean "leave the topic out", as Kafka does.
_ABSENT = frozenset({kafka.UNKNOWN_TOPIC_OR_PARTITION, kafka.TOPIC_AUTHORIZATION_FAILED})


async def describe_log_dirs(gateway, header, body: dict, connection) -> dict:
    refusal = cluster_refusal(gateway.acl, "describe the log dirs (DescribeLogDirs)")
    if refusal is not None:
        log.info("Kafka connection %d from %s:%s: %s", connection.connection_id,
                 *connection.peer, refusal)
        return {"throttle_time_ms": 0, "error_code": kafka.CLUSTER_AUTHORIZATION_FAILED,
                "results": []}
    wanted = _wanted(body["topics"])
    names = sorted(wanted) if wanted is not None else await _every_topic(gateway)
    error, topics = kafka.NONE, []
    for first in range(0, len(names), limits.KAFKA_LOG_DIRS_TOPICS_IN_FLIGHT_MAX):
        chunk = names[first:first + limits.KAFKA_LOG_DIRS_TOPICS_IN_FLIGHT_MAX]
        for name, code, described in await asyncio.gather(
                *(_describe(gateway, name, wanted) for name in chunk)):
            if code == kafka.NONE and described["partitions"]:
                topics.append(described)
            elif code not in _ABSENT and error == kafka.NONE:
                error = code
    total_bytes, usable_bytes = _volume_bytes(gateway.log_dir)
    return {"throttle_time_ms": 0, "error_code": kafka.NONE, "results": [{
        "error_code": error, "log_dir": gateway.log_dir,
        "topics": topics if error == kafka.NONE else [],
        "total_bytes": total_bytes, "usable_bytes": usable_bytes}]}


def _wanted(topics: list[dict] | None) -> dict[str, set[int]] | None:
    """The request's filter: topic -> partition indexes; None: every partition of
    every topic. A topic named twice gets the partitions of both entries."""
    if topics is None:
        return None
    wanted: dict[str, set[int]] = {}
    for topic in topics:
        wanted.setdefault(topic["topic"], set()).update(topic["partitions"])
    return wanted


async def _every_topic(gateway) -> list[str]:
    reply, _ = await ask(gateway.backend, lambda rid: protocol.encode_metadata(rid, []))
    if reply.error is not None:
        log.warning("Kafka DescribeLogDirs: listing the topics failed: %s", reply.error)
        return []
    return sorted(info.name for info in reply.topics)


async def _describe(gateway, name: str, wanted) -> tuple[str, int, dict]:
    """(name, Kafka error code, the topic's entry) for one topic: its partitions that
    this router leads, and are asked for, with their sizes."""
    reply, _ = await ask(gateway.backend, lambda rid: protocol.encode_topic_request(
        rid, "describeTopic", name))
    if reply.error is not None:
        return name, kafka_code(reply.error), {}
    cluster = gateway.cluster
    brokers = cluster.brokers()
    asked = None if wanted is None else wanted[name]
    partitions = [{"partition_index": p.partition, "partition_size": p.size_bytes,
                   "offset_lag": 0, "is_future_key": False}
                  for p in reply.topics[0].partition_info
                  if (asked is None or p.partition in asked)
                  and cluster.leader_of(brokers, name, p.partition) == cluster.node_id]
    return name, kafka.NONE, {"name": name, "partitions": partitions}


def _volume_bytes(log_dir: str) -> tuple[int, int]:
    """(total, usable) bytes of the volume ``log_dir`` is on; -1, -1 if unknown."""
    if not log_dir:
        return -1, -1
    try:
        usage = shutil.disk_usage(log_dir)
    except OSError as exc:
        log.warning("Kafka DescribeLogDirs: cannot read the volume of %s: %s", log_dir, exc)
        return -1, -1
    return usage.total, usage.free
