"""CreateTopics, DeleteTopics and CreatePartitions, from Plinth's admin.

Runs on the Kafka listener's event loop thread (gateway.py). Each topic is one
Plinth createTopic, deleteTopic or describeTopic, all of a request's at once.
Kafka's -1 for the partition count or the replication factor means the
broker's default: KAFKA_TOPIC_PARTITIONS_DEFAULT partitions (Kafka's
num.partitions) and the server's --default-replication-factor. A
``validate_only`` request checks the name and the counts and creates nothing.
CreatePartitions grows a topic to the count asked (Plinth's alterTopic with a
partition count); Plinth places the new partitions itself, so manual
assignments are refused, and ``validate_only`` checks the count against the
topic's and changes nothing.
"""

from __future__ import annotations

import asyncio

from plinth import limits, protocol, topics
from plinth.errors import BrokerError
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.backend import ask
from plinth.router.kafka.plinth_errors import kafka_code, kafka_message

DEFAULT = -1
DELETE_BY_TOPIC_VERSION = 6      # DeleteTopics: topics (name or id) from here on


async def create_topics(gateway, header, body: dict, connection) -> dict:
    validate_only = bool(body.get("validate_only"))
    answers = await asyncio.gather(*(_create_one(gateway, topic, validate_only)
                                     for topic in body.get("topics") or []))
    return {"throttle_time_ms": 0, "topics": list(answers)}


async def _create_one(gateway, topic: dict, validate_only: bool) -> dict:
    name = topic["name"]
    partitions = topic.get("num_partitions", DEFAULT)
    partitions = limits.KAFKA_TOPIC_PARTITIONS_DEFAULT if partitions == DEFAULT else partitions
    factor = topic.get("replication_factor", DEFAULT)
    factor = 0 if factor == DEFAULT else factor   # 0: the server's default
    config = {c["name"]: c["value"] for c in topic.get("configs") or []}
    answer = {"name": name, "num_partitions": partitions,
              "replication_factor": factor or -1, "configs": []}
    if topic.get("assignments"):
        answer["error_code"] = kafka.INVALID_REQUEST
        answer["error_message"] = "Plinth places partitions itself: assignments are refused"
        return answer
    if validate_only:
        try:
            topics.validate_topic_name(name)
            topics.validate_partition_count(name, partitions)
        except BrokerError as exc:
            answer["error_code"], answer["error_message"] = kafka_code(exc), kafka_message(exc)
        return answer
    reply, _ = await ask(gateway.backend, lambda rid: protocol.encode_create_topic(
        rid, name, partitions, config, replication_factor=factor))
    answer["error_code"] = kafka_code(reply.error)
    answer["error_message"] = kafka_message(reply.error)
    return answer


async def delete_topics(gateway, header, body: dict, connection) -> dict:
    if header.api_version >= DELETE_BY_TOPIC_VERSION:
        names = [t["name"] for t in body["topics"]]
    else:
        names = body["topic_names"]
    answers = await asyncio.gather(*(_delete_one(gateway, name) for name in names))
    return {"throttle_time_ms": 0, "responses": list(answers)}


async def _delete_one(gateway, name: str | None) -> dict:
    answer = {"name": name}
    if name is None:
        answer["error_code"] = kafka.UNKNOWN_TOPIC_ID
        answer["error_message"] = "Plinth deletes topics by name, not by topic id"
        return answer
    reply, _ = await ask(gateway.backend, lambda rid: protocol.encode_topic_request(
        rid, "deleteTopic", name))
    answer["error_code"] = kafka_code(reply.error)
    answer["error_message"] = kafka_message(reply.error)
    return answer


async def create_partitions(gateway, header, body: dict, connection) -> dict:
    validate_only = bool(body.get("validate_only"))
    results = await asyncio.gather(*(_grow_one(gateway, topic, validate_only)
                                     for topic in body.get("topics") or []))
    return {"throttle_time_ms": 0, "results": list(results)}


async def _grow_one(gateway, topic: dict, validate_only: bool) -> dict:
    name, count = topic["name"], topic["count"]
    result = {"name": name, "error_code": kafka.NONE, "error_message": None}
    if topic.get("assignments"):
        result["error_code"] = kafka.INVALID_REPLICA_ASSIGNMENT
        result["error_message"] = "Plinth places partitions itself: assignments are refused"
        return result
    if validate_only:
        reply, _ = await ask(gateway.backend, lambda rid: protocol.encode_topic_request(
            rid, "describeTopic", name))
        error = reply.error or _growth_error(name, reply.topics[0].partitions, count)
    else:
        reply, _ = await ask(gateway.backend, lambda rid: protocol.encode_create_topic(
            rid, name, count, {}, "alterTopic"))
        error = reply.error
    result["error_code"], result["error_message"] = kafka_code(error), kafka_message(error)
    return result


def _growth_error(name: str, partitions: int, count: int) -> BrokerError | None:
    """What growing ``name`` from ``partitions`` to ``count`` would be refused with."""
    try:
        topics.validate_partition_growth(name, partitions, count)
    except BrokerError as exc:
        return exc
    return None
