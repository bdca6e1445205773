"""ApiVersions, Metadata, DescribeCluster and FindCoordinator: the cluster as Kafka sees it.

Runs on the Kafka listener's event loop thread (gateway.py). The cluster is
one broker per Kafka listener, and this listener's broker leads every
partition (it forwards to the shard that leads it). Leader epochs are given
as -1 (unknown), so that clients do not fence fetches on epochs that Plinth's
router, not the client, keeps track of.
"""

from __future__ import annotations

from plinth import protocol
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.codec import SUPPORTED_VERSIONS
from plinth.router.kafka.plinth_errors import kafka_code

UNKNOWN_LEADER_EPOCH = -1


async def api_versions(gateway, header, body: dict, connection) -> dict:
    """The versions of every API this listener answers."""
    keys = sorted(key for key in gateway.api_keys() if key in SUPPORTED_VERSIONS)
    return {"error_code": kafka.NONE, "throttle_time_ms": 0,
            "api_keys": [{"api_key": key, "min_version": SUPPORTED_VERSIONS[key][0],
                          "max_version": SUPPORTED_VERSIONS[key][1]} for key in keys]}


def _broker(gateway, id_field: str = "node_id") -> dict:
    cluster = gateway.cluster
    return {id_field: cluster.node_id, "host": cluster.advertised_host,
            "port": cluster.advertised_port, "rack": None}


async def metadata(gateway, header, body: dict, connection) -> dict:
    """Every topic asked for (all when the request names none), led by this broker."""
    wanted = body["topics"]
    # Every topic: v0's empty list, or null from v1 on (where an empty list is none).
    every = wanted is None or (header.api_version == 0 and not wanted)
    names = None if every else [t["name"] for t in wanted]
    reply = await _plinth_metadata(gateway)
    node_id = gateway.cluster.node_id
    topics = []
    if reply.error is not None:
        topics = [_topic_error(name, kafka_code(reply.error)) for name in (names or [])]
    else:
        known = {info.name: info for info in reply.topics}
        for name in (sorted(known) if names is None else names):
            info = known.get(name)
            if info is None:
                topics.append(_topic_error(name, kafka.UNKNOWN_TOPIC_OR_PARTITION))
                continue
            topics.append({"error_code": kafka.NONE, "name": name,
                           "is_internal": False, "topic_authorized_operations": -2147483648,
                           "partitions": [_partition(index, node_id)
                                          for index in range(info.partitions)]})
    return {"throttle_time_ms": 0, "brokers": [_broker(gateway)],
            "cluster_id": gateway.cluster.cluster_id, "controller_id": node_id,
            "topics": topics, "cluster_authorized_operations": -2147483648}


def _topic_error(name: str | None, code: int) -> dict:
    return {"error_code": code, "name": name, "is_internal": False,
            "partitions": [], "topic_authorized_operations": -2147483648}


def _partition(index: int, node_id: int) -> dict:
    return {"error_code": kafka.NONE, "partition_index": index, "leader_id": node_id,
            "leader_epoch": UNKNOWN_LEADER_EPOCH, "replica_nodes": [node_id],
            "isr_nodes": [node_id], "offline_replicas": []}


async def _plinth_metadata(gateway) -> protocol.ReplyView:
    backend = gateway.backend
    request_id = backend.next_request_id()
    reply, _ = await backend.call(request_id, protocol.encode_metadata(request_id, []))
    return reply


async def describe_cluster(gateway, header, body: dict, connection) -> dict:
    return {"throttle_time_ms": 0, "error_code": kafka.NONE, "error_message": None,
            "endpoint_type": 1, "cluster_id": gateway.cluster.cluster_id,
            "controller_id": gateway.cluster.node_id,
            "brokers": [_broker(gateway, "broker_id")],
            "cluster_authorized_operations": -2147483648}


async def find_coordinator(gateway, header, body: dict, connection) -> dict:
    """This broker coordinates every group: it forwards to the coordinating shard."""
    broker = _broker(gateway)
    keys = body.get("coordinator_keys") or [body.get("key")]
    answer = {"throttle_time_ms": 0, "error_code": kafka.NONE, "error_message": None,
              **{k: broker[k] for k in ("node_id", "host", "port")}}
    answer["coordinators"] = [{"key": key, "error_code": kafka.NONE, "error_message": None,
                               **{k: broker[k] for k in ("node_id", "host", "port")}}
                              for key in keys]
    return answer
