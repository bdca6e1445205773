"""CreateTopics, DeleteTopics, CreatePartitions and DescribeConfigs, from Plinth's admin.

Runs on the Kafka listener's event loop thread (gateway.py). Each topic is one
Plinth createTopic, deleteTopic or describeTopic, all of a request's at once.
Kafka's -1 for the partition count or the replication factor means the
broker's default: KAFKA_TOPIC_PARTITIONS_DEFAULT partitions (Kafka's
num.partitions) and the server's --default-replication-factor. A
``validate_only`` request checks the name and the counts and creates nothing.
Plinth cannot add partitions to a topic yet: CreatePartitions is answered
INVALID_PARTITIONS, saying so.
"""

from __future__ import annotations

import asyncio

from plinth import limits, protocol, topics
from plinth.errors import BrokerError, PlinthError
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.plinth_errors import kafka_code, kafka_message

DEFAULT = -1
RESOURCE_TOPIC = 2
CONFIG_SOURCE_TOPIC = 1          # DYNAMIC_TOPIC_CONFIG
DELETE_BY_TOPIC_VERSION = 6      # DeleteTopics: topics (name or id) from here on


async def _call(gateway, encode) -> protocol.ReplyView | PlinthError:
    """One Plinth admin request, ``encode(request_id) -> header``; its reply, or the
    client-side error (a timeout) in place of one."""
    backend = gateway.backend
    request_id = backend.next_request_id()
    try:
        reply, _ = await backend.call(request_id, encode(request_id))
    except PlinthError as exc:
        return exc
    return reply


def _error_of(reply) -> BaseException | None:
    return reply if isinstance(reply, PlinthError) else reply.error


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
    reply = await _call(gateway, lambda rid: protocol.encode_create_topic(
        rid, name, partitions, config, replication_factor=factor))
    answer["error_code"] = kafka_code(_error_of(reply))
    answer["error_message"] = kafka_message(_error_of(reply))
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
    reply = await _call(gateway, lambda rid: protocol.encode_topic_request(
        rid, "deleteTopic", name))
    answer["error_code"] = kafka_code(_error_of(reply))
    answer["error_message"] = kafka_message(_error_of(reply))
    return answer


async def create_partitions(gateway, header, body: dict, connection) -> dict:
    return {"throttle_time_ms": 0, "results": [
        {"name": topic["name"], "error_code": kafka.INVALID_PARTITIONS,
         "error_message": "Plinth cannot add partitions to an existing topic yet"}
        for topic in body.get("topics") or []]}


async def describe_configs(gateway, header, body: dict, connection) -> dict:
    results = await asyncio.gather(*(_describe_one(gateway, resource)
                                     for resource in body.get("resources") or []))
    return {"throttle_time_ms": 0, "results": list(results)}


async def _describe_one(gateway, resource: dict) -> dict:
    name, kind = resource["resource_name"], resource["resource_type"]
    result = {"error_code": kafka.NONE, "error_message": None, "resource_type": kind,
              "resource_name": name, "configs": []}
    if kind != RESOURCE_TOPIC:
        return result   # no broker configs are exposed: an empty list
    reply = await _call(gateway, lambda rid: protocol.encode_topic_request(
        rid, "describeTopic", name))
    error = _error_of(reply)
    if error is not None:
        result["error_code"], result["error_message"] = kafka_code(error), kafka_message(error)
        return result
    wanted = resource.get("configuration_keys")
    config = reply.topics[0].config if reply.topics else {}
    result["configs"] = [{"name": key, "value": value, "read_only": False, "is_default": False,
                          "config_source": CONFIG_SOURCE_TOPIC, "is_sensitive": False,
                          "synonyms": [], "config_type": 0, "documentation": None}
                         for key, value in sorted(config.items())
                         if wanted is None or key in wanted]
    return result
