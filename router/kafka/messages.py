"""The messages of every Kafka API the listener serves, as declarative tables.

Pure data; any thread may import it. Each API is an ``Api``: its key, the range
of versions the broker advertises, its first flexible version (KIP-482:
compact strings, bytes and arrays, and tagged fields, in the request and the
response alike), and the fields of its request and of its response. The tables
were transcribed from Kafka's JSON message definitions
(clients/src/main/resources/common/message/*.json in apache/kafka: the Kafka
4.x copy kafka-python 3.0.12 carries) by a one-off script, keeping only the
fields of the versions below, in Kafka's order, named in snake_case
(``TopicId`` -> ``topic_id``); the tests check every version against
kafka-python's independent codec (tests/router/kafka/). Nothing is loaded at
runtime and the broker does not depend on a Kafka library.

A field is ``F(name, type, versions, nullable=, default=, tag=, fields=)``:

    type      int8 int16 int32 int64 uint16 uint32 float64 bool uuid string
              bytes records, "[]int32" "[]int64" "[]string" (arrays of a
              primitive), "[]" (an array of the struct in ``fields``), "{}" (one
              struct, ``fields``)
    versions  Kafka's notation: "3+" (3 and later), "1-4", "7"; a field outside
              the request's version is not on the wire
    nullable  the versions in which the value may be null (same notation)
    default   the value a missing field encodes as, and a field not on the wire
              decodes as; NULL = null; unset = the type's own (0, False, "",
              b"", null records, empty array, the zero UUID, a struct of
              defaults)
    tag       a tagged field (only in flexible versions), written only when it
              differs from its default

Versions the broker advertises (codec.SUPPORTED_VERSIONS). Produce starts at 0
because librdkafka stops compressing otherwise (KAFKA-18659); its handler
refuses versions below 3. Versions Kafka 4 dropped (Produce 0-2, CreateTopics
0-1, DeleteTopics 0, DescribeConfigs 0, DescribeLogDirs 0, DescribeAcls,
CreateAcls and DeleteAcls 0) keep the fields their JSON still
describes for them.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Api", "Field", "APIS", "NULL", "parse_versions"]

# An explicit null default (``default=NULL``), as Kafka's ``"default": "null"``;
# a plain None means "the type's default".
NULL = type("NullDefault", (), {"__repr__": lambda self: "NULL"})()


class Field(NamedTuple):
    name: str
    type: str
    versions: str
    nullable: str = ""
    default: object = None
    tag: int | None = None
    fields: tuple["Field", ...] = ()


class Api(NamedTuple):
    name: str
    key: int
    versions: tuple[int, int]
    flexible_min: int | None        # None: no flexible version in range
    request: tuple[Field, ...]
    response: tuple[Field, ...]


def F(name: str, type: str, versions: str, *, nullable: str = "", default: object = None,
      tag: int | None = None, fields: tuple[Field, ...] = ()) -> Field:
    return Field(name, type, versions, nullable, default, tag, fields)


def parse_versions(spec: str) -> tuple[int, int]:
    """Kafka's version notation as an inclusive range; "" = none."""
    if not spec:
        return (1, 0)
    if spec.endswith("+"):
        return (int(spec[:-1]), 0x7FFF)
    low, _, high = spec.partition("-")
    return (int(low), int(high or low))


API_VERSIONS = Api("ApiVersions", 18, (0, 3), 3,
    (  # request
        F("client_software_name", "string", "3+"),
        F("client_software_version", "string", "3+"),
    ),
    (  # response
        F("error_code", "int16", "0+"),
        F("api_keys", "[]", "0+", fields=(
            F("api_key", "int16", "0+"),
            F("min_version", "int16", "0+"),
            F("max_version", "int16", "0+"),
        )),
        F("throttle_time_ms", "int32", "1+"),
        F("supported_features", "[]", "3+", tag=0, fields=(
            F("name", "string", "3+"),
            F("min_version", "int16", "3+"),
            F("max_version", "int16", "3+"),
        )),
        F("finalized_features_epoch", "int64", "3+", default=-1, tag=1),
        F("finalized_features", "[]", "3+", tag=2, fields=(
            F("name", "string", "3+"),
            F("max_version_level", "int16", "3+"),
            F("min_version_level", "int16", "3+"),
        )),
        F("zk_migration_ready", "bool", "3+", default=False, tag=3),
    ),
)

METADATA = Api("Metadata", 3, (0, 12), 9,
    (  # request
        F("topics", "[]", "0+", nullable="1+", fields=(
            F("topic_id", "uuid", "10+"),
            F("name", "string", "0+", nullable="10+"),
        )),
        F("allow_auto_topic_creation", "bool", "4+", default=True),
        F("include_cluster_authorized_operations", "bool", "8-10"),
        F("include_topic_authorized_operations", "bool", "8+"),
    ),
    (  # response
        F("throttle_time_ms", "int32", "3+"),
        F("brokers", "[]", "0+", fields=(
            F("node_id", "int32", "0+"),
            F("host", "string", "0+"),
            F("port", "int32", "0+"),
            F("rack", "string", "1+", nullable="1+", default=NULL),
        )),
        F("cluster_id", "string", "2+", nullable="2+", default=NULL),
        F("controller_id", "int32", "1+", default=-1),
        F("topics", "[]", "0+", fields=(
            F("error_code", "int16", "0+"),
            F("name", "string", "0+", nullable="12+"),
            F("topic_id", "uuid", "10+"),
            F("is_internal", "bool", "1+", default=False),
            F("partitions", "[]", "0+", fields=(
                F("error_code", "int16", "0+"),
                F("partition_index", "int32", "0+"),
                F("leader_id", "int32", "0+"),
                F("leader_epoch", "int32", "7+", default=-1),
                F("replica_nodes", "[]int32", "0+"),
                F("isr_nodes", "[]int32", "0+"),
                F("offline_replicas", "[]int32", "5+"),
            )),
            F("topic_authorized_operations", "int32", "8+", default=-2147483648),
        )),
        F("cluster_authorized_operations", "int32", "8-10", default=-2147483648),
    ),
)

PRODUCE = Api("Produce", 0, (0, 9), 9,
    (  # request
        F("transactional_id", "string", "3+", nullable="3+", default=NULL),
        F("acks", "int16", "0+"),
        F("timeout_ms", "int32", "0+"),
        F("topic_data", "[]", "0+", fields=(
            F("name", "string", "0+"),
            F("partition_data", "[]", "0+", fields=(
                F("index", "int32", "0+"),
                F("records", "records", "0+", nullable="0+"),
            )),
        )),
    ),
    (  # response
        F("responses", "[]", "0+", fields=(
            F("name", "string", "0+"),
            F("partition_responses", "[]", "0+", fields=(
                F("index", "int32", "0+"),
                F("error_code", "int16", "0+"),
                F("base_offset", "int64", "0+"),
                F("log_append_time_ms", "int64", "2+", default=-1),
                F("log_start_offset", "int64", "5+", default=-1),
                F("record_errors", "[]", "8+", fields=(
                    F("batch_index", "int32", "8+"),
                    F("batch_index_error_message", "string", "8+", nullable="8+", default=NULL),
                )),
                F("error_message", "string", "8+", nullable="8+", default=NULL),
            )),
        )),
        F("throttle_time_ms", "int32", "1+", default=0),
    ),
)

FETCH = Api("Fetch", 1, (4, 12), 12,
    (  # request
        F("cluster_id", "string", "12+", nullable="12+", default=NULL, tag=0),
        F("replica_id", "int32", "0+", default=-1),
        F("max_wait_ms", "int32", "0+"),
        F("min_bytes", "int32", "0+"),
        F("max_bytes", "int32", "3+", default=2147483647),
        F("isolation_level", "int8", "4+", default=0),
        F("session_id", "int32", "7+", default=0),
        F("session_epoch", "int32", "7+", default=-1),
        F("topics", "[]", "0+", fields=(
            F("topic", "string", "0+"),
            F("partitions", "[]", "0+", fields=(
                F("partition", "int32", "0+"),
                F("current_leader_epoch", "int32", "9+", default=-1),
                F("fetch_offset", "int64", "0+"),
                F("last_fetched_epoch", "int32", "12+", default=-1),
                F("log_start_offset", "int64", "5+", default=-1),
                F("partition_max_bytes", "int32", "0+"),
            )),
        )),
        F("forgotten_topics_data", "[]", "7+", fields=(
            F("topic", "string", "7+"),
            F("partitions", "[]int32", "7+"),
        )),
        F("rack_id", "string", "11+", default=""),
    ),
    (  # response
        F("throttle_time_ms", "int32", "1+"),
        F("error_code", "int16", "7+"),
        F("session_id", "int32", "7+", default=0),
        F("responses", "[]", "0+", fields=(
            F("topic", "string", "0+"),
            F("partitions", "[]", "0+", fields=(
                F("partition_index", "int32", "0+"),
                F("error_code", "int16", "0+"),
                F("high_watermark", "int64", "0+"),
                F("last_stable_offset", "int64", "4+", default=-1),
                F("log_start_offset", "int64", "5+", default=-1),
                F("diverging_epoch", "{}", "12+", tag=0, fields=(
                    F("epoch", "int32", "12+", default=-1),
                    F("end_offset", "int64", "12+", default=-1),
                )),
                F("current_leader", "{}", "12+", tag=1, fields=(
                    F("leader_id", "int32", "12+", default=-1),
                    F("leader_epoch", "int32", "12+", default=-1),
                )),
                F("snapshot_id", "{}", "12+", tag=2, fields=(
                    F("end_offset", "int64", "0+", default=-1),
                    F("epoch", "int32", "0+", default=-1),
                )),
                F("aborted_transactions", "[]", "4+", nullable="4+", fields=(
                    F("producer_id", "int64", "4+"),
                    F("first_offset", "int64", "4+"),
                )),
                F("preferred_read_replica", "int32", "11+", default=-1),
                F("records", "records", "0+", nullable="0+"),
            )),
        )),
    ),
)

LIST_OFFSETS = Api("ListOffsets", 2, (1, 10), 6,
    (  # request
        F("replica_id", "int32", "0+"),
        F("isolation_level", "int8", "2+"),
        F("topics", "[]", "0+", fields=(
            F("name", "string", "0+"),
            F("partitions", "[]", "0+", fields=(
                F("partition_index", "int32", "0+"),
                F("current_leader_epoch", "int32", "4+", default=-1),
                F("timestamp", "int64", "0+"),
            )),
        )),
        F("timeout_ms", "int32", "10+", default=0),
    ),
    (  # response
        F("throttle_time_ms", "int32", "2+"),
        F("topics", "[]", "0+", fields=(
            F("name", "string", "0+"),
            F("partitions", "[]", "0+", fields=(
                F("partition_index", "int32", "0+"),
                F("error_code", "int16", "0+"),
                F("timestamp", "int64", "1+", default=-1),
                F("offset", "int64", "1+", default=-1),
                F("leader_epoch", "int32", "4+", default=-1),
            )),
        )),
    ),
)

FIND_COORDINATOR = Api("FindCoordinator", 10, (0, 4), 3,
    (  # request
        F("key", "string", "0-3"),
        F("key_type", "int8", "1+", default=0),
        F("coordinator_keys", "[]string", "4+"),
    ),
    (  # response
        F("throttle_time_ms", "int32", "1+"),
        F("error_code", "int16", "0-3"),
        F("error_message", "string", "1-3", nullable="1-3"),
        F("node_id", "int32", "0-3"),
        F("host", "string", "0-3"),
        F("port", "int32", "0-3"),
        F("coordinators", "[]", "4+", fields=(
            F("key", "string", "4+"),
            F("node_id", "int32", "4+"),
            F("host", "string", "4+"),
            F("port", "int32", "4+"),
            F("error_code", "int16", "4+"),
            F("error_message", "string", "4+", nullable="4+"),
        )),
    ),
)

JOIN_GROUP = Api("JoinGroup", 11, (0, 7), 6,
    (  # request
        F("group_id", "string", "0+"),
        F("session_timeout_ms", "int32", "0+"),
        F("rebalance_timeout_ms", "int32", "1+", default=-1),
        F("member_id", "string", "0+"),
        F("group_instance_id", "string", "5+", nullable="5+", default=NULL),
        F("protocol_type", "string", "0+"),
        F("protocols", "[]", "0+", fields=(
            F("name", "string", "0+"),
            F("metadata", "bytes", "0+"),
        )),
    ),
    (  # response
        F("throttle_time_ms", "int32", "2+"),
        F("error_code", "int16", "0+"),
        F("generation_id", "int32", "0+", default=-1),
        F("protocol_type", "string", "7+", nullable="7+", default=NULL),
        F("protocol_name", "string", "0+", nullable="7+"),
        F("leader", "string", "0+"),
        F("member_id", "string", "0+"),
        F("members", "[]", "0+", fields=(
            F("member_id", "string", "0+"),
            F("group_instance_id", "string", "5+", nullable="5+", default=NULL),
            F("metadata", "bytes", "0+"),
        )),
    ),
)

SYNC_GROUP = Api("SyncGroup", 14, (0, 5), 4,
    (  # request
        F("group_id", "string", "0+"),
        F("generation_id", "int32", "0+"),
        F("member_id", "string", "0+"),
        F("group_instance_id", "string", "3+", nullable="3+", default=NULL),
        F("protocol_type", "string", "5+", nullable="5+", default=NULL),
        F("protocol_name", "string", "5+", nullable="5+", default=NULL),
        F("assignments", "[]", "0+", fields=(
            F("member_id", "string", "0+"),
            F("assignment", "bytes", "0+"),
        )),
    ),
    (  # response
        F("throttle_time_ms", "int32", "1+"),
        F("error_code", "int16", "0+"),
        F("protocol_type", "string", "5+", nullable="5+", default=NULL),
        F("protocol_name", "string", "5+", nullable="5+", default=NULL),
        F("assignment", "bytes", "0+"),
    ),
)

HEARTBEAT = Api("Heartbeat", 12, (0, 4), 4,
    (  # request
        F("group_id", "string", "0+"),
        F("generation_id", "int32", "0+"),
        F("member_id", "string", "0+"),
        F("group_instance_id", "string", "3+", nullable="3+", default=NULL),
    ),
    (  # response
        F("throttle_time_ms", "int32", "1+"),
        F("error_code", "int16", "0+"),
    ),
)

LEAVE_GROUP = Api("LeaveGroup", 13, (0, 4), 4,
    (  # request
        F("group_id", "string", "0+"),
        F("member_id", "string", "0-2"),
        F("members", "[]", "3+", fields=(
            F("member_id", "string", "3+"),
            F("group_instance_id", "string", "3+", nullable="3+", default=NULL),
        )),
    ),
    (  # response
        F("throttle_time_ms", "int32", "1+"),
        F("error_code", "int16", "0+"),
        F("members", "[]", "3+", fields=(
            F("member_id", "string", "3+"),
            F("group_instance_id", "string", "3+", nullable="3+"),
            F("error_code", "int16", "3+"),
        )),
    ),
)

OFFSET_COMMIT = Api("OffsetCommit", 8, (2, 8), 8,
    (  # request
        F("group_id", "string", "0+"),
        F("generation_id_or_member_epoch", "int32", "1+", default=-1),
        F("member_id", "string", "1+"),
        F("group_instance_id", "string", "7+", nullable="7+", default=NULL),
        F("retention_time_ms", "int64", "2-4", default=-1),
        F("topics", "[]", "0+", fields=(
            F("name", "string", "0+"),
            F("partitions", "[]", "0+", fields=(
                F("partition_index", "int32", "0+"),
                F("committed_offset", "int64", "0+"),
                F("committed_leader_epoch", "int32", "6+", default=-1),
                F("committed_metadata", "string", "0+", nullable="0+"),
            )),
        )),
    ),
    (  # response
        F("throttle_time_ms", "int32", "3+"),
        F("topics", "[]", "0+", fields=(
            F("name", "string", "0+"),
            F("partitions", "[]", "0+", fields=(
                F("partition_index", "int32", "0+"),
                F("error_code", "int16", "0+"),
            )),
        )),
    ),
)

OFFSET_FETCH = Api("OffsetFetch", 9, (1, 8), 6,
    (  # request
        F("group_id", "string", "0-7"),
        F("topics", "[]", "0-7", nullable="2-7", fields=(
            F("name", "string", "0-7"),
            F("partition_indexes", "[]int32", "0-7"),
        )),
        F("groups", "[]", "8+", fields=(
            F("group_id", "string", "8+"),
            F("topics", "[]", "8+", nullable="8+", fields=(
                F("name", "string", "8+"),
                F("partition_indexes", "[]int32", "8+"),
            )),
        )),
        F("require_stable", "bool", "7+", default=False),
    ),
    (  # response
        F("throttle_time_ms", "int32", "3+"),
        F("topics", "[]", "0-7", fields=(
            F("name", "string", "0-7"),
            F("partitions", "[]", "0-7", fields=(
                F("partition_index", "int32", "0-7"),
                F("committed_offset", "int64", "0-7"),
                F("committed_leader_epoch", "int32", "5-7", default=-1),
                F("metadata", "string", "0-7", nullable="0-7"),
                F("error_code", "int16", "0-7"),
            )),
        )),
        F("error_code", "int16", "2-7", default=0),
        F("groups", "[]", "8+", fields=(
            F("group_id", "string", "8+"),
            F("topics", "[]", "8+", fields=(
                F("name", "string", "8+"),
                F("partitions", "[]", "8+", fields=(
                    F("partition_index", "int32", "8+"),
                    F("committed_offset", "int64", "8+"),
                    F("committed_leader_epoch", "int32", "8+", default=-1),
                    F("metadata", "string", "8+", nullable="8+"),
                    F("error_code", "int16", "8+"),
                )),
            )),
            F("error_code", "int16", "8+", default=0),
        )),
    ),
)

INIT_PRODUCER_ID = Api("InitProducerId", 22, (0, 4), 2,
    (  # request
        F("transactional_id", "string", "0+", nullable="0+"),
        F("transaction_timeout_ms", "int32", "0+"),
        F("producer_id", "int64", "3+", default=-1),
        F("producer_epoch", "int16", "3+", default=-1),
    ),
    (  # response
        F("throttle_time_ms", "int32", "0+"),
        F("error_code", "int16", "0+"),
        F("producer_id", "int64", "0+", default=-1),
        F("producer_epoch", "int16", "0+"),
    ),
)

CREATE_TOPICS = Api("CreateTopics", 19, (0, 7), 5,
    (  # request
        F("topics", "[]", "0+", fields=(
            F("name", "string", "0+"),
            F("num_partitions", "int32", "0+"),
            F("replication_factor", "int16", "0+"),
            F("assignments", "[]", "0+", fields=(
                F("partition_index", "int32", "0+"),
                F("broker_ids", "[]int32", "0+"),
            )),
            F("configs", "[]", "0+", fields=(
                F("name", "string", "0+"),
                F("value", "string", "0+", nullable="0+"),
            )),
        )),
        F("timeout_ms", "int32", "0+", default=60000),
        F("validate_only", "bool", "1+", default=False),
    ),
    (  # response
        F("throttle_time_ms", "int32", "2+"),
        F("topics", "[]", "0+", fields=(
            F("name", "string", "0+"),
            F("topic_id", "uuid", "7+"),
            F("error_code", "int16", "0+"),
            F("error_message", "string", "1+", nullable="0+"),
            F("topic_config_error_code", "int16", "5+", tag=0),
            F("num_partitions", "int32", "5+", default=-1),
            F("replication_factor", "int16", "5+", default=-1),
            F("configs", "[]", "5+", nullable="5+", fields=(
                F("name", "string", "5+"),
                F("value", "string", "5+", nullable="5+"),
                F("read_only", "bool", "5+"),
                F("config_source", "int8", "5+", default=-1),
                F("is_sensitive", "bool", "5+"),
            )),
        )),
    ),
)

DELETE_TOPICS = Api("DeleteTopics", 20, (0, 6), 4,
    (  # request
        F("topics", "[]", "6+", fields=(
            F("name", "string", "6+", nullable="6+", default=NULL),
            F("topic_id", "uuid", "6+"),
        )),
        F("topic_names", "[]string", "0-5"),
        F("timeout_ms", "int32", "0+"),
    ),
    (  # response
        F("throttle_time_ms", "int32", "1+"),
        F("responses", "[]", "0+", fields=(
            F("name", "string", "0+", nullable="6+"),
            F("topic_id", "uuid", "6+"),
            F("error_code", "int16", "0+"),
            F("error_message", "string", "5+", nullable="5+", default=NULL),
        )),
    ),
)

CREATE_PARTITIONS = Api("CreatePartitions", 37, (0, 3), 2,
    (  # request
        F("topics", "[]", "0+", fields=(
            F("name", "string", "0+"),
            F("count", "int32", "0+"),
            F("assignments", "[]", "0+", nullable="0+", fields=(
                F("broker_ids", "[]int32", "0+"),
            )),
        )),
        F("timeout_ms", "int32", "0+"),
        F("validate_only", "bool", "0+"),
    ),
    (  # response
        F("throttle_time_ms", "int32", "0+"),
        F("results", "[]", "0+", fields=(
            F("name", "string", "0+"),
            F("error_code", "int16", "0+"),
            F("error_message", "string", "0+", nullable="0+", default=NULL),
        )),
    ),
)

DESCRIBE_CONFIGS = Api("DescribeConfigs", 32, (0, 4), 4,
    (  # request
        F("resources", "[]", "0+", fields=(
            F("resource_type", "int8", "0+"),
            F("resource_name", "string", "0+"),
            F("configuration_keys", "[]string", "0+", nullable="0+"),
        )),
        F("include_synonyms", "bool", "1+", default=False),
        F("include_documentation", "bool", "3+", default=False),
    ),
    (  # response
        F("throttle_time_ms", "int32", "0+"),
        F("results", "[]", "0+", fields=(
            F("error_code", "int16", "0+"),
            F("error_message", "string", "0+", nullable="0+"),
            F("resource_type", "int8", "0+"),
            F("resource_name", "string", "0+"),
            F("configs", "[]", "0+", fields=(
                F("name", "string", "0+"),
                F("value", "string", "0+", nullable="0+"),
                F("read_only", "bool", "0+"),
                F("config_source", "int8", "1+", default=-1),
                F("is_default", "bool", "0"),
                F("is_sensitive", "bool", "0+"),
                F("synonyms", "[]", "1+", fields=(
                    F("name", "string", "1+"),
                    F("value", "string", "1+", nullable="0+"),
                    F("source", "int8", "1+"),
                )),
                F("config_type", "int8", "3+", default=0),
                F("documentation", "string", "3+", nullable="0+"),
            )),
        )),
    ),
)

ALTER_CONFIGS = Api("AlterConfigs", 33, (0, 2), 2,
    (  # request
        F("resources", "[]", "0+", fields=(
            F("resource_type", "int8", "0+"),
            F("resource_name", "string", "0+"),
            F("configs", "[]", "0+", fields=(
                F("name", "string", "0+"),
                F("value", "string", "0+", nullable="0+"),
            )),
        )),
        F("validate_only", "bool", "0+"),
    ),
    (  # response
        F("throttle_time_ms", "int32", "0+"),
        F("responses", "[]", "0+", fields=(
            F("error_code", "int16", "0+"),
            F("error_message", "string", "0+", nullable="0+"),
            F("resource_type", "int8", "0+"),
            F("resource_name", "string", "0+"),
        )),
    ),
)

INCREMENTAL_ALTER_CONFIGS = Api("IncrementalAlterConfigs", 44, (0, 1), 1,
    (  # request
        F("resources", "[]", "0+", fields=(
            F("resource_type", "int8", "0+"),
            F("resource_name", "string", "0+"),
            F("configs", "[]", "0+", fields=(
                F("name", "string", "0+"),
                F("config_operation", "int8", "0+"),
                F("value", "string", "0+", nullable="0+"),
            )),
        )),
        F("validate_only", "bool", "0+"),
    ),
    (  # response
        F("throttle_time_ms", "int32", "0+"),
        F("responses", "[]", "0+", fields=(
            F("error_code", "int16", "0+"),
            F("error_message", "string", "0+", nullable="0+"),
            F("resource_type", "int8", "0+"),
            F("resource_name", "string", "0+"),
        )),
    ),
)

DELETE_RECORDS = Api("DeleteRecords", 21, (0, 2), 2,
    (  # request
        F("topics", "[]", "0+", fields=(
            F("name", "string", "0+"),
            F("partitions", "[]", "0+", fields=(
                F("partition_index", "int32", "0+"),
                F("offset", "int64", "0+"),
            )),
        )),
        F("timeout_ms", "int32", "0+"),
    ),
    (  # response
        F("throttle_time_ms", "int32", "0+"),
        F("topics", "[]", "0+", fields=(
            F("name", "string", "0+"),
            F("partitions", "[]", "0+", fields=(
                F("partition_index", "int32", "0+"),
                F("low_watermark", "int64", "0+"),
                F("error_code", "int16", "0+"),
            )),
        )),
    ),
)

ELECT_LEADERS = Api("ElectLeaders", 43, (0, 2), 2,
    (  # request
        F("election_type", "int8", "1+"),
        F("topic_partitions", "[]", "0+", nullable="0+", fields=(
            F("topic", "string", "0+"),
            F("partitions", "[]int32", "0+"),
        )),
        F("timeout_ms", "int32", "0+", default=60000),
    ),
    (  # response
        F("throttle_time_ms", "int32", "0+"),
        F("error_code", "int16", "1+"),
        F("replica_election_results", "[]", "0+", fields=(
            F("topic", "string", "0+"),
            F("partition_result", "[]", "0+", fields=(
                F("partition_id", "int32", "0+"),
                F("error_code", "int16", "0+"),
                F("error_message", "string", "0+", nullable="0+"),
            )),
        )),
    ),
)

DELETE_GROUPS = Api("DeleteGroups", 42, (0, 2), 2,
    (  # request
        F("groups_names", "[]string", "0+"),
    ),
    (  # response
        F("throttle_time_ms", "int32", "0+"),
        F("results", "[]", "0+", fields=(
            F("group_id", "string", "0+"),
            F("error_code", "int16", "0+"),
        )),
    ),
)

OFFSET_DELETE = Api("OffsetDelete", 47, (0, 0), None,
    (  # request
        F("group_id", "string", "0+"),
        F("topics", "[]", "0+", fields=(
            F("name", "string", "0+"),
            F("partitions", "[]", "0+", fields=(
                F("partition_index", "int32", "0+"),
            )),
        )),
    ),
    (  # response
        F("error_code", "int16", "0+"),
        F("throttle_time_ms", "int32", "0+"),
        F("topics", "[]", "0+", fields=(
            F("name", "string", "0+"),
            F("partitions", "[]", "0+", fields=(
                F("partition_index", "int32", "0+"),
                F("error_code", "int16", "0+"),
            )),
        )),
    ),
)

DESCRIBE_GROUPS = Api("DescribeGroups", 15, (0, 5), 5,
    (  # request
        F("groups", "[]string", "0+"),
        F("include_authorized_operations", "bool", "3+"),
    ),
    (  # response
        F("throttle_time_ms", "int32", "1+"),
        F("groups", "[]", "0+", fields=(
            F("error_code", "int16", "0+"),
            F("group_id", "string", "0+"),
            F("group_state", "string", "0+"),
            F("protocol_type", "string", "0+"),
            F("protocol_data", "string", "0+"),
            F("members", "[]", "0+", fields=(
                F("member_id", "string", "0+"),
                F("group_instance_id", "string", "4+", nullable="4+", default=NULL),
                F("client_id", "string", "0+"),
                F("client_host", "string", "0+"),
                F("member_metadata", "bytes", "0+"),
                F("member_assignment", "bytes", "0+"),
            )),
            F("authorized_operations", "int32", "3+", default=-2147483648),
        )),
    ),
)

LIST_GROUPS = Api("ListGroups", 16, (0, 5), 3,
    (  # request
        F("states_filter", "[]string", "4+"),
        F("types_filter", "[]string", "5+"),
    ),
    (  # response
        F("throttle_time_ms", "int32", "1+"),
        F("error_code", "int16", "0+"),
        F("groups", "[]", "0+", fields=(
            F("group_id", "string", "0+"),
            F("protocol_type", "string", "0+"),
            F("group_state", "string", "4+"),
            F("group_type", "string", "5+"),
        )),
    ),
)

DESCRIBE_CLUSTER = Api("DescribeCluster", 60, (0, 1), 0,
    (  # request
        F("include_cluster_authorized_operations", "bool", "0+"),
        F("endpoint_type", "int8", "1+", default=1),
    ),
    (  # response
        F("throttle_time_ms", "int32", "0+"),
        F("error_code", "int16", "0+"),
        F("error_message", "string", "0+", nullable="0+", default=NULL),
        F("endpoint_type", "int8", "1+", default=1),
        F("cluster_id", "string", "0+"),
        F("controller_id", "int32", "0+", default=-1),
        F("brokers", "[]", "0+", fields=(
            F("broker_id", "int32", "0+"),
            F("host", "string", "0+"),
            F("port", "int32", "0+"),
            F("rack", "string", "0+", nullable="0+", default=NULL),
        )),
        F("cluster_authorized_operations", "int32", "0+", default=-2147483648),
    ),
)

SASL_HANDSHAKE = Api("SaslHandshake", 17, (0, 1), None,
    (  # request
        F("mechanism", "string", "0+"),
    ),
    (  # response
        F("error_code", "int16", "0+"),
        F("mechanisms", "[]string", "0+"),
    ),
)

SASL_AUTHENTICATE = Api("SaslAuthenticate", 36, (0, 2), 2,
    (  # request
        F("auth_bytes", "bytes", "0+"),
    ),
    (  # response
        F("error_code", "int16", "0+"),
        F("error_message", "string", "0+", nullable="0+"),
        F("auth_bytes", "bytes", "0+"),
        F("session_lifetime_ms", "int64", "1+", default=0),
    ),
)

DESCRIBE_LOG_DIRS = Api("DescribeLogDirs", 35, (0, 4), 2,
    (  # request
        F("topics", "[]", "0+", nullable="0+", fields=(
            F("topic", "string", "0+"),
            F("partitions", "[]int32", "0+"),
        )),
    ),
    (  # response
        F("throttle_time_ms", "int32", "0+"),
        F("error_code", "int16", "3+"),
        F("results", "[]", "0+", fields=(
            F("error_code", "int16", "0+"),
            F("log_dir", "string", "0+"),
            F("topics", "[]", "0+", fields=(
                F("name", "string", "0+"),
                F("partitions", "[]", "0+", fields=(
                    F("partition_index", "int32", "0+"),
                    F("partition_size", "int64", "0+"),
                    F("offset_lag", "int64", "0+"),
                    F("is_future_key", "bool", "0+"),
                )),
            )),
            F("total_bytes", "int64", "4+", default=-1),
            F("usable_bytes", "int64", "4+", default=-1),
        )),
    ),
)

DESCRIBE_TOPIC_PARTITIONS = Api("DescribeTopicPartitions", 75, (0, 0), 0,
    (  # request
        F("topics", "[]", "0+", fields=(
            F("name", "string", "0+"),
        )),
        F("response_partition_limit", "int32", "0+", default=2000),
        F("cursor", "{}", "0+", nullable="0+", default=NULL, fields=(
            F("topic_name", "string", "0+"),
            F("partition_index", "int32", "0+"),
        )),
    ),
    (  # response
        F("throttle_time_ms", "int32", "0+"),
        F("topics", "[]", "0+", fields=(
            F("error_code", "int16", "0+"),
            F("name", "string", "0+", nullable="0+"),
            F("topic_id", "uuid", "0+"),
            F("is_internal", "bool", "0+", default=False),
            F("partitions", "[]", "0+", fields=(
                F("error_code", "int16", "0+"),
                F("partition_index", "int32", "0+"),
                F("leader_id", "int32", "0+"),
                F("leader_epoch", "int32", "0+", default=-1),
                F("replica_nodes", "[]int32", "0+"),
                F("isr_nodes", "[]int32", "0+"),
                F("eligible_leader_replicas", "[]int32", "0+", nullable="0+", default=NULL),
                F("last_known_elr", "[]int32", "0+", nullable="0+", default=NULL),
                F("offline_replicas", "[]int32", "0+"),
            )),
            F("topic_authorized_operations", "int32", "0+", default=-2147483648),
        )),
        F("next_cursor", "{}", "0+", nullable="0+", default=NULL, fields=(
            F("topic_name", "string", "0+"),
            F("partition_index", "int32", "0+"),
        )),
    ),
)

LIST_CONFIG_RESOURCES = Api("ListConfigResources", 74, (0, 1), 0,
    (  # request
        F("resource_types", "[]int8", "1+"),
    ),
    (  # response
        F("throttle_time_ms", "int32", "0+"),
        F("error_code", "int16", "0+"),
        F("config_resources", "[]", "0+", fields=(
            F("resource_name", "string", "0+"),
            F("resource_type", "int8", "1+", default=16),
        )),
    ),
)

_ACL_FILTER = (
    F("resource_type_filter", "int8", "0+"),
    F("resource_name_filter", "string", "0+", nullable="0+"),
    F("pattern_type_filter", "int8", "1+", default=3),
    F("principal_filter", "string", "0+", nullable="0+"),
    F("host_filter", "string", "0+", nullable="0+"),
    F("operation", "int8", "0+"),
    F("permission_type", "int8", "0+"),
)

DESCRIBE_ACLS = Api("DescribeAcls", 29, (0, 3), 2,
    _ACL_FILTER,  # request
    (  # response
        F("throttle_time_ms", "int32", "0+"),
        F("error_code", "int16", "0+"),
        F("error_message", "string", "0+", nullable="0+"),
        F("resources", "[]", "0+", fields=(
            F("resource_type", "int8", "0+"),
            F("resource_name", "string", "0+"),
            F("pattern_type", "int8", "1+", default=3),
            F("acls", "[]", "0+", fields=(
                F("principal", "string", "0+"),
                F("host", "string", "0+"),
                F("operation", "int8", "0+"),
                F("permission_type", "int8", "0+"),
            )),
        )),
    ),
)

CREATE_ACLS = Api("CreateAcls", 30, (0, 3), 2,
    (  # request
        F("creations", "[]", "0+", fields=(
            F("resource_type", "int8", "0+"),
            F("resource_name", "string", "0+"),
            F("resource_pattern_type", "int8", "1+", default=3),
            F("principal", "string", "0+"),
            F("host", "string", "0+"),
            F("operation", "int8", "0+"),
            F("permission_type", "int8", "0+"),
        )),
    ),
    (  # response
        F("throttle_time_ms", "int32", "0+"),
        F("results", "[]", "0+", fields=(
            F("error_code", "int16", "0+"),
            F("error_message", "string", "0+", nullable="0+"),
        )),
    ),
)

DELETE_ACLS = Api("DeleteAcls", 31, (0, 3), 2,
    (  # request
        F("filters", "[]", "0+", fields=_ACL_FILTER),
    ),
    (  # response
        F("throttle_time_ms", "int32", "0+"),
        F("filter_results", "[]", "0+", fields=(
            F("error_code", "int16", "0+"),
            F("error_message", "string", "0+", nullable="0+"),
            F("matching_acls", "[]", "0+", fields=(
                F("error_code", "int16", "0+"),
                F("error_message", "string", "0+", nullable="0+"),
                F("resource_type", "int8", "0+"),
                F("resource_name", "string", "0+"),
                F("pattern_type", "int8", "1+", default=3),
                F("principal", "string", "0+"),
                F("host", "string", "0+"),
                F("operation", "int8", "0+"),
                F("permission_type", "int8", "0+"),
            )),
        )),
    ),
)

APIS: tuple[Api, ...] = (
    PRODUCE, FETCH, LIST_OFFSETS, METADATA, OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR,
    JOIN_GROUP, HEARTBEAT, LEAVE_GROUP, SYNC_GROUP, DESCRIBE_GROUPS, LIST_GROUPS,
    SASL_HANDSHAKE, API_VERSIONS, CREATE_TOPICS, DELETE_TOPICS, INIT_PRODUCER_ID,
    DESCRIBE_CONFIGS, ALTER_CONFIGS, SASL_AUTHENTICATE, CREATE_PARTITIONS,
    DELETE_GROUPS, INCREMENTAL_ALTER_CONFIGS, DESCRIBE_CLUSTER, DESCRIBE_LOG_DIRS, DELETE_RECORDS,
    DESCRIBE_TOPIC_PARTITIONS, DESCRIBE_ACLS, CREATE_ACLS, DELETE_ACLS, ELECT_LEADERS,
    LIST_CONFIG_RESOURCES, OFFSET_DELETE)
