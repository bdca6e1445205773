"""DescribeConfigs, AlterConfigs, IncrementalAlterConfigs and ListConfigResources: topic
configs for Kafka's admin clients and kafka-configs, from Plinth's describeTopic and
alterTopic.

Runs on the Kafka listener's event loop thread (gateway.py); a request's resources
are answered all at once.

- DescribeConfigs: a topic's config (DEFAULT_CONFIG where a value is the default)
  and, for a broker, the listener's own options (advertised.listeners,
  auto.create.topics.enable, num.partitions), read only.
- IncrementalAlterConfigs: SET changes a key, DELETE sets it back to its default
  (a Plinth topic always holds every key: deleting one is its default again, as
  Kafka then describes it). APPEND and SUBTRACT are for list-typed configs, and no
  topic config is a list: INVALID_CONFIG.
- AlterConfigs (the older, whole-config API): the keys given are set and every
  other key goes back to its default, as in Kafka; a null value is a DELETE.
- ListConfigResources (v1, Kafka 4.1's KIP-1142): what DescribeConfigs answers,
  every topic the user may see (type 2) and every router's listener by its node id
  (type 4, the brokers Metadata names). Kafka's other types (broker loggers, client
  metrics, groups) list nothing: Plinth has none. So v0, Kafka 3.7's
  ListClientMetricsResources, gets an empty list. No types given: topics and
  brokers. A type Kafka does not define: INVALID_REQUEST (the answer has no message).
- A key named twice in one resource is INVALID_REQUEST, as in Kafka. A broker's
  configs are its command-line options: altering them is INVALID_REQUEST.
- ``validate_only`` checks the change against the topic's current config
  (names, values, limits, remote storage never turned off) and changes nothing;
  whether this broker has tiered storage is checked only by a real alter.
"""

from __future__ import annotations

import asyncio

from plinth import limits, protocol, topics
from plinth.errors import BrokerError, InvalidConfigError, MalformedRequestError
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.backend import ask, ask_change, change_deadline_s
from plinth.router.kafka.plinth_errors import kafka_code, kafka_message

RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
# Kafka's config resource types Plinth holds none of: listed as nothing.
RESOURCE_BROKER_LOGGER, RESOURCE_CLIENT_METRICS, RESOURCE_GROUP = 8, 16, 32
_RESOURCES_LISTED = (RESOURCE_TOPIC, RESOURCE_BROKER)
_RESOURCES_KNOWN = (*_RESOURCES_LISTED, RESOURCE_BROKER_LOGGER, RESOURCE_CLIENT_METRICS,
                    RESOURCE_GROUP)
# Kafka's ConfigSource and ConfigType numbers (DescribeConfigs v1+ and v3+).
CONFIG_SOURCE_TOPIC = 1          # DYNAMIC_TOPIC_CONFIG
CONFIG_SOURCE_STATIC_BROKER = 4  # STATIC_BROKER_CONFIG: the broker's start options
CONFIG_SOURCE_DEFAULT = 5        # DEFAULT_CONFIG
CONFIG_TYPE_BOOLEAN, CONFIG_TYPE_STRING, CONFIG_TYPE_INT, CONFIG_TYPE_LONG = 1, 2, 3, 5
CONFIG_TYPE_LIST = 7
# The types of the keys outside topics.TOPIC_CONFIG_KEYS and TOPIC_CONFIG_BOOLEANS
_CONFIG_TYPES = {topics.MIN_INSYNC_REPLICAS: CONFIG_TYPE_INT,
                 topics.UNCLEAN_LEADER_ELECTION_ENABLE: CONFIG_TYPE_BOOLEAN,
                 topics.CLEANUP_POLICY: CONFIG_TYPE_LIST}
# IncrementalAlterConfigs' operations (Kafka's AlterConfigOp.OpType)
OP_SET, OP_DELETE, OP_APPEND, OP_SUBTRACT = 0, 1, 2, 3


async def describe_configs(gateway, header, body: dict, connection) -> dict:
    results = await asyncio.gather(*(_describe_one(gateway, resource)
                                     for resource in body.get("resources") or []))
    return {"throttle_time_ms": 0, "results": list(results)}


async def _describe_one(gateway, resource: dict) -> dict:
    name, kind = resource["resource_name"], resource["resource_type"]
    result = {"error_code": kafka.NONE, "error_message": None, "resource_type": kind,
              "resource_name": name, "configs": []}
    wanted = resource.get("configuration_keys")
    if kind == RESOURCE_BROKER:
        result["configs"] = _broker_configs(gateway, wanted)
        return result
    if kind != RESOURCE_TOPIC:
        result["error_code"] = kafka.INVALID_REQUEST
        result["error_message"] = f"resource type {kind}: only topics and brokers have configs"
        return result
    reply, _ = await ask(gateway.backend, lambda rid: protocol.encode_topic_request(
        rid, "describeTopic", name))
    error = reply.error
    if error is not None:
        result["error_code"], result["error_message"] = kafka_code(error), kafka_message(error)
        return result
    config = reply.topics[0].config if reply.topics else {}
    unstored = topics.unstored_config_defaults(config)
    result["configs"] = [_topic_config(key, value, key in unstored)
                         for key, value in sorted({**config, **unstored}.items())
                         if wanted is None or key in wanted]
    return result


def _topic_config(key: str, value: str, unstored: bool = False) -> dict:
    """One topic config entry: Kafka's DEFAULT_CONFIG where it holds the default, or
    is ``unstored`` (topics.unstored_config_defaults)."""
    if key in topics.TOPIC_CONFIG_KEYS:
        default, config_type = str(topics.TOPIC_CONFIG_KEYS[key][2]), CONFIG_TYPE_LONG
    elif key in topics.TOPIC_CONFIG_BOOLEANS:
        default, config_type = topics.TOPIC_CONFIG_BOOLEANS[key], CONFIG_TYPE_BOOLEAN
    else:
        default, config_type = None, _CONFIG_TYPES.get(key, CONFIG_TYPE_STRING)
    is_default = unstored or value == default
    return {"name": key, "value": value, "read_only": False, "is_default": is_default,
            "config_source": CONFIG_SOURCE_DEFAULT if is_default else CONFIG_SOURCE_TOPIC,
            "is_sensitive": False, "synonyms": [], "config_type": config_type,
            "documentation": None}


def _broker_configs(gateway, wanted) -> list[dict]:
    """What a Kafka admin asks a broker most: where it listens and what it creates.
    Read only: they are this listener's command-line options."""
    security = ("SASL_SSL" if gateway.sasl_users is not None and gateway.tls else
                "SASL_PLAINTEXT" if gateway.sasl_users is not None else
                "SSL" if gateway.tls else "PLAINTEXT")
    values = {
        "advertised.listeners": (f"{security}://{gateway.cluster.advertised}", CONFIG_TYPE_LIST),
        "auto.create.topics.enable": (str(gateway.auto_create_topics).lower(),
                                      CONFIG_TYPE_BOOLEAN),
        "num.partitions": (str(limits.KAFKA_TOPIC_PARTITIONS_DEFAULT), CONFIG_TYPE_INT),
    }
    return [{"name": key, "value": value, "read_only": True, "is_default": False,
             "config_source": CONFIG_SOURCE_STATIC_BROKER, "is_sensitive": False,
             "synonyms": [], "config_type": config_type, "documentation": None}
            for key, (value, config_type) in sorted(values.items())
            if wanted is None or key in wanted]


async def list_config_resources(gateway, header, body: dict, connection) -> dict:
    answer = {"throttle_time_ms": 0, "error_code": kafka.NONE, "config_resources": []}
    if header.api_version == 0:   # client metrics resources only: none
        return answer
    wanted = set(body["resource_types"] or _RESOURCES_LISTED)
    if not wanted <= set(_RESOURCES_KNOWN):
        answer["error_code"] = kafka.INVALID_REQUEST
        return answer
    listed = []
    if RESOURCE_TOPIC in wanted:
        reply, _ = await ask(gateway.backend, lambda rid: protocol.encode_metadata(rid, []))
        if reply.error is not None:
            answer["error_code"] = kafka_code(reply.error)
            return answer
        listed += [(info.name, RESOURCE_TOPIC) for info in sorted(reply.topics,
                                                                   key=lambda t: t.name)]
    if RESOURCE_BROKER in wanted:
        listed += [(str(broker.node_id), RESOURCE_BROKER) for broker in gateway.cluster.brokers()]
    answer["config_resources"] = [{"resource_name": name, "resource_type": kind}
                                  for name, kind in listed]
    return answer


async def incremental_alter_configs(gateway, header, body: dict, connection) -> dict:
    validate_only = bool(body.get("validate_only"))
    answers = await asyncio.gather(*(_alter_one(gateway, resource, validate_only,
                                                _incremental_changes)
                                     for resource in body.get("resources") or []))
    return {"throttle_time_ms": 0, "responses": list(answers)}


async def alter_configs(gateway, header, body: dict, connection) -> dict:
    validate_only = bool(body.get("validate_only"))
    answers = await asyncio.gather(*(_alter_one(gateway, resource, validate_only,
                                                _whole_config_changes)
                                     for resource in body.get("resources") or []))
    return {"throttle_time_ms": 0, "responses": list(answers)}


async def _alter_one(gateway, resource: dict, validate_only: bool, changes_of) -> dict:
    """One resource's alter: ``changes_of(name, entries, config)`` says what to set and
    what to delete, from the request's entries and the topic's current config."""
    name, kind = resource["resource_name"], resource["resource_type"]
    answer = {"error_code": kafka.NONE, "error_message": None, "resource_type": kind,
              "resource_name": name}
    if kind != RESOURCE_TOPIC:
        answer["error_code"] = kafka.INVALID_REQUEST
        answer["error_message"] = (
            "a broker's configs are its command-line options: read only" if kind == RESOURCE_BROKER
            else f"resource type {kind}: only topics have configs to alter")
        return answer
    reply, _ = await ask(gateway.backend, lambda rid: protocol.encode_topic_request(
        rid, "describeTopic", name))
    error = reply.error
    if error is None:
        info = reply.topics[0]
        try:
            changes, deleted = changes_of(name, resource.get("configs") or [], info.config)
            if validate_only:
                _validate(name, info, changes, deleted)
        except BrokerError as exc:
            error = exc
    if error is None and not validate_only:
        reply, _ = await ask_change(gateway.backend, change_deadline_s(),
                                    protocol.encode_create_topic, name, 0, changes,
                                    "alterTopic", delete_config=deleted)
        error = reply.error
    answer["error_code"], answer["error_message"] = kafka_code(error), kafka_message(error)
    return answer


def _incremental_changes(name: str, entries: list[dict], config: dict[str, str]):
    """IncrementalAlterConfigs' entries as (keys to set, keys to delete)."""
    _refuse_duplicates(name, entries)
    changes, deleted = {}, []
    for entry in entries:
        key, operation, value = entry["name"], entry["config_operation"], entry["value"]
        if operation == OP_SET:
            if value is None:
                raise InvalidConfigError(f"topic {name!r}: SET {key} without a value "
                                         f"(DELETE sets a key back to its default)")
            changes[key] = value
        elif operation == OP_DELETE:
            deleted.append(key)
        elif operation in (OP_APPEND, OP_SUBTRACT):
            raise InvalidConfigError(f"topic {name!r}: {key} is not a list: APPEND and "
                                     f"SUBTRACT are for list-typed configs, and Plinth's "
                                     f"topics have none")
        else:
            raise InvalidConfigError(f"topic {name!r}: config operation {operation} for {key} "
                                     f"is none of SET 0, DELETE 1, APPEND 2, SUBTRACT 3")
    return changes, tuple(deleted)


def _whole_config_changes(name: str, entries: list[dict], config: dict[str, str]):
    """AlterConfigs' entries, the whole config: the keys given set (a null value
    deleted), every other key of the topic deleted."""
    _refuse_duplicates(name, entries)
    changes = {e["name"]: e["value"] for e in entries if e["value"] is not None}
    deleted = tuple(sorted(set(config) - set(changes)))
    return changes, deleted


def _refuse_duplicates(name: str, entries: list[dict]) -> None:
    if len(entries) > limits.CONFIG_ENTRIES_MAX:
        raise InvalidConfigError(f"topic {name!r}: {len(entries)} config entries, over the "
                                 f"limit of {limits.CONFIG_ENTRIES_MAX}")
    keys = [entry["name"] for entry in entries]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise MalformedRequestError(f"topic {name!r}: config {', '.join(twice)} named more "
                                 f"than once in one request")


def _validate(name: str, info, changes: dict[str, str], deleted: tuple[str, ...]) -> None:
    """What the controller's alter_topic checks, on the topic's config as described
    (its replication factor from its replicas), without changing anything."""
    factor = max(1, len(info.partition_info[0].replicas)) if info.partition_info else 1
    kept = topics.config_without(name, info.config, changes, deleted)
    config = topics.normalize_topic_config(name, {**kept, **changes}, factor)
    topics.check_config_change(name, info.config, config)
