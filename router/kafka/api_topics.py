"""CreateTopics, DeleteTopics and CreatePartitions, from Plinth's admin.

Runs on the Kafka listener's event loop thread (gateway.py). Each topic is one
Plinth createTopic, deleteTopic or describeTopic, all of a request's at once;
but a CreateTopics of several topics is first tried as Plinth createTopics
requests of up to CREATE_TOPICS_BATCH_MAX topics (one save of the broker's
metadata each), and only a batch that fails goes a topic at a time, for each
topic's own error.
Kafka's -1 for the partition count or the replication factor means the
broker's default: KAFKA_TOPIC_PARTITIONS_DEFAULT partitions (Kafka's
num.partitions) and the server's --default-replication-factor; 0 or below -1
is refused (INVALID_PARTITIONS, INVALID_REPLICATION_FACTOR), as Kafka does,
and so is a CreatePartitions count below 1. A
``validate_only`` CreateTopics is answered as the create would be (the
controller runs the same checks: name, counts, replication factor, config,
existence; Plinth's createTopics with validateOnly) and creates nothing.
CreatePartitions grows a topic to the count asked (Plinth's alterTopic with a
partition count); Plinth places the new partitions itself, so manual
assignments are refused, and ``validate_only`` checks the count against the
topic's and changes nothing.
A name given twice in one request (any of the three) is answered once, with
INVALID_REQUEST, and nothing is done with it, as Kafka does; the request's
other topics are served.
DeleteTopics v6 may name a topic by its id instead (KIP-516; Plinth's topic id,
32 hex digits, is the UUID's): its name is looked up among the topics the user
may see and the delete is guarded by the id (deleteTopic's topicId), so a topic
created again under the name meanwhile is not deleted; an id no topic has is
UNKNOWN_TOPIC_ID, as in Kafka.
Answers carry each topic's id (Plinth's, as Kafka's UUID): CreateTopics v7+
the new topic's (ZERO_UUID for a validate-only create, which makes none), and
DeleteTopics v6+ the deleted topic's, for a topic named by its name too (read
from the metadata just before the delete).
Each change carries what is left of the request's ``timeout_ms`` (at most the
backend's own wait): one still queued behind other changes when it runs out is
not made, and is answered REQUEST_TIMED_OUT (backend.ask_change).
"""

from __future__ import annotations

import asyncio
import uuid

from plinth import limits, protocol, topics
from plinth.errors import BrokerError
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.backend import ask, ask_change, change_deadline_s
from plinth.router.kafka.plinth_errors import kafka_code, kafka_message
from plinth.router.kafka.request_values import (DEFAULT, kafka_topic_id, new_topic_error,
                                                 partition_count_error)
from plinth.router.kafka.wire import UUID_ZERO

DELETE_BY_TOPIC_VERSION = 6      # DeleteTopics: topics (name or id) from here on


async def create_topics(gateway, header, body: dict, connection) -> dict:
    validate_only = bool(body.get("validate_only"))
    asked = body.get("topics") or []
    twice = _named_twice(t["name"] for t in asked)
    wanted = [t for t in asked if t["name"] not in twice]
    deadline_s = change_deadline_s(body.get("timeout_ms"))
    created = {} if validate_only else await _create_batches(gateway, wanted, deadline_s)
    answers = await asyncio.gather(*(_create_one(gateway, topic, validate_only, deadline_s)
                                     for topic in wanted if topic["name"] not in created))
    by_name = {answer["name"]: answer for answer in answers}
    by_name.update((t["name"], _created_answer(_new_topic(t), created[t["name"]]))
                   for t in wanted if t["name"] in created)
    by_name.update((name, {**_duplicate(name), "num_partitions": DEFAULT,
                           "replication_factor": DEFAULT, "configs": []}) for name in twice)
    return {"throttle_time_ms": 0, "topics": _once_in_order(asked, by_name)}


def _named_twice(names) -> set[str]:
    """The names given more than once. Kafka answers each of them once, with
    INVALID_REQUEST, and does nothing with it (ControllerApis.createTopics,
    deleteTopics, createPartitions); the others are served. A topic id (no name,
    DeleteTopics v6) is never a duplicate here: each is answered by itself."""
    seen: set[str] = set()
    twice: set[str] = set()
    for name in names:
        if name is not None:
            (twice if name in seen else seen).add(name)
    return twice


def _duplicate(name: str) -> dict:
    return {"name": name, "error_code": kafka.INVALID_REQUEST,
            "error_message": f"topic {name!r} is given more than once in the request"}


def _once_in_order(asked: list[dict], by_name: dict[str, dict]) -> list[dict]:
    """Each name's answer once, where the request first names it."""
    answered: set[str] = set()
    out = []
    for topic in asked:
        if topic["name"] not in answered:
            answered.add(topic["name"])
            out.append(by_name[topic["name"]])
    return out


async def _create_batches(gateway, wanted: list[dict], deadline_s: float
                          ) -> dict[str, uuid.UUID]:
    """Create the topics in createTopics requests of CREATE_TOPICS_BATCH_MAX (each costs
    the controller one save of its metadata, as one topic would); returns the names
    created, with their topic ids. A batch is all or none: one that fails (a topic
    exists, a name is bad, an ACL refuses one) is left to ``_create_one``, a topic at a
    time, which answers each topic's own error."""
    plain = [_new_topic(t) for t in wanted
             if not t.get("assignments") and _counts_error(t) is None]
    if len(plain) < 2:
        return {}
    created: dict[str, uuid.UUID] = {}
    for first in range(0, len(plain), limits.CREATE_TOPICS_BATCH_MAX):
        batch = plain[first:first + limits.CREATE_TOPICS_BATCH_MAX]
        reply, _ = await ask_change(gateway.backend, deadline_s, protocol.encode_create_topics,
                                    batch)
        if reply.error is None:
            created.update((info.name, kafka_topic_id(info.topic_id)) for info in reply.topics)
    return created


def _counts_error(topic: dict) -> tuple[int, str] | None:
    return new_topic_error(topic["name"], topic.get("num_partitions", DEFAULT),
                           topic.get("replication_factor", DEFAULT))


def _new_topic(topic: dict) -> protocol.NewTopic:
    """A CreateTopics topic as Plinth's: Kafka's -1 counts are the broker's defaults
    (counts ``_counts_error`` refuses are never sent)."""
    partitions = topic.get("num_partitions", DEFAULT)
    partitions = limits.KAFKA_TOPIC_PARTITIONS_DEFAULT if partitions == DEFAULT else partitions
    factor = topic.get("replication_factor", DEFAULT)
    factor = 0 if factor == DEFAULT else factor   # 0: the server's default
    config = {c["name"]: c["value"] for c in topic.get("configs") or []}
    return protocol.NewTopic(topic["name"], partitions, config, factor)


def _created_answer(new: protocol.NewTopic, topic_id: uuid.UUID) -> dict:
    return {"name": new.name, "topic_id": topic_id, "num_partitions": new.partitions,
            "replication_factor": new.replication_factor or -1, "configs": [],
            "error_code": kafka.NONE, "error_message": None}


async def _create_one(gateway, topic: dict, validate_only: bool, deadline_s: float) -> dict:
    new = _new_topic(topic)
    name, partitions, factor, config = new.name, new.partitions, new.replication_factor, new.config
    answer = {"name": name, "num_partitions": partitions,
              "replication_factor": factor or -1, "configs": []}
    if topic.get("assignments"):
        answer["error_code"] = kafka.INVALID_REQUEST
        answer["error_message"] = "Plinth places partitions itself: assignments are refused"
        return answer
    refusal = _counts_error(topic)
    if refusal is not None:
        answer["error_code"], answer["error_message"] = refusal
        return answer
    if validate_only:   # the controller's checks of a create, nothing created
        reply, _ = await ask(gateway.backend, lambda rid: protocol.encode_create_topics(
            rid, [new], validate_only=True))
    else:
        reply, _ = await ask_change(gateway.backend, deadline_s, protocol.encode_create_topic,
                                    name, partitions, config, replication_factor=factor)
    answer["error_code"] = kafka_code(reply.error)
    answer["error_message"] = kafka_message(reply.error)
    if reply.error is None and not validate_only:
        answer["topic_id"] = kafka_topic_id(reply.topics[0].topic_id)
    return answer


async def delete_topics(gateway, header, body: dict, connection) -> dict:
    if header.api_version >= DELETE_BY_TOPIC_VERSION:
        asked = [(t["name"], t["topic_id"]) for t in body["topics"]]
    else:
        asked = [(name, UUID_ZERO) for name in body["topic_names"]]
    names = [name for name, _ in asked]
    twice = _named_twice(names)
    once = [name for name in names if name is not None and name not in twice]
    ids = [topic_id for name, topic_id in asked if name is None]
    known = await _topic_ids(gateway) if once and header.api_version >= DELETE_BY_TOPIC_VERSION \
        else {}
    deadline_s = change_deadline_s(body.get("timeout_ms"))
    answers = await asyncio.gather(*(_delete_one(gateway, name, deadline_s) for name in once),
                                   *(_delete_by_id(gateway, topic_id, deadline_s)
                                     for topic_id in ids))
    for name, answer in zip(once, answers):   # v6 echoes the id of a topic deleted by name
        answer["topic_id"] = known.get(name, UUID_ZERO) if answer["error_code"] == kafka.NONE \
            else UUID_ZERO
    by_name = dict(zip(once, answers[:len(once)]))
    by_name.update((name, _duplicate(name)) for name in twice)
    # Topic ids (no name) are answered each; every name once, where first named.
    by_id = iter(answers[len(once):])
    responses, answered = [], set()
    for name in names:
        if name is None:
            responses.append(next(by_id))
        elif name not in answered:
            answered.add(name)
            responses.append(by_name[name])
    return {"throttle_time_ms": 0, "responses": responses}


async def _topic_ids(gateway) -> dict[str, uuid.UUID]:
    """The topic ids of the topics the user may see (Plinth's metadata answer); {} if
    it fails (the ids are then answered as ZERO_UUID, as by a broker without them)."""
    reply = await _visible_topics(gateway)
    if reply.error is not None:
        return {}
    return {info.name: kafka_topic_id(info.topic_id) for info in reply.topics}


async def _visible_topics(gateway) -> protocol.ReplyView:
    """Plinth's metadata answer: every topic the user may see, with its id."""
    reply, _ = await ask(gateway.backend, lambda rid: protocol.encode_metadata(rid, []))
    return reply


async def _delete_one(gateway, name: str, deadline_s: float, topic_id: str = "") -> dict:
    """Plinth's deleteTopic of ``name`` (with ``topic_id``: only if it has that id)."""
    reply, _ = await ask_change(gateway.backend, deadline_s, protocol.encode_topic_request,
                                "deleteTopic", name, topic_id)
    return {"name": name, "error_code": kafka_code(reply.error),
            "error_message": kafka_message(reply.error)}


async def _delete_by_id(gateway, topic_id: uuid.UUID, deadline_s: float) -> dict:
    """DeleteTopics v6 of a topic named by its id: the name is looked up among the
    topics the user may see (Plinth's metadata answer), and the delete is guarded by
    the id, so a topic created again under that name meanwhile is not deleted
    (UNKNOWN_TOPIC_ID, as for an id no topic has)."""
    reply = await _visible_topics(gateway)
    if reply.error is not None:
        return {"name": None, "topic_id": topic_id, "error_code": kafka_code(reply.error),
                "error_message": kafka_message(reply.error)}
    named = [info.name for info in reply.topics if info.topic_id == topic_id.hex]
    if not named:
        return {"name": None, "topic_id": topic_id, "error_code": kafka.UNKNOWN_TOPIC_ID,
                "error_message": f"no topic has topic id {topic_id.hex}"}
    return {**await _delete_one(gateway, named[0], deadline_s, topic_id.hex),
            "topic_id": topic_id}


async def create_partitions(gateway, header, body: dict, connection) -> dict:
    validate_only = bool(body.get("validate_only"))
    asked = body.get("topics") or []
    twice = _named_twice(t["name"] for t in asked)
    deadline_s = change_deadline_s(body.get("timeout_ms"))
    results = await asyncio.gather(*(_grow_one(gateway, topic, validate_only, deadline_s)
                                     for topic in asked if topic["name"] not in twice))
    by_name = {result["name"]: result for result in results}
    by_name.update((name, _duplicate(name)) for name in twice)
    return {"throttle_time_ms": 0, "results": _once_in_order(asked, by_name)}


async def _grow_one(gateway, topic: dict, validate_only: bool, deadline_s: float) -> dict:
    name, count = topic["name"], topic["count"]
    result = {"name": name, "error_code": kafka.NONE, "error_message": None}
    if topic.get("assignments"):
        result["error_code"] = kafka.INVALID_REPLICA_ASSIGNMENT
        result["error_message"] = "Plinth places partitions itself: assignments are refused"
        return result
    refusal = partition_count_error(name, count)
    if refusal is not None:
        result["error_code"], result["error_message"] = refusal
        return result
    if validate_only:
        reply, _ = await ask(gateway.backend, lambda rid: protocol.encode_topic_request(
            rid, "describeTopic", name))
        error = reply.error or _growth_error(name, reply.topics[0].partitions, count)
    else:
        reply, _ = await ask_change(gateway.backend, deadline_s, protocol.encode_create_topic,
                                    name, count, {}, "alterTopic")
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
