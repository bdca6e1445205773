"""Encoding and decoding of the Request and Reply messages (schemas/protocol.capnp).

Any process may call these functions: clients encode requests and decode
replies, the router decodes just enough of a request to route it, shards and
the router encode replies. Decoding copies every field it returns into plain
Python values inside the ``from_bytes`` block, because a pycapnp reader must
not outlive the buffer it reads.

Decoding an untrusted request never raises anything but ``MalformedRequestError``
(or ``RequestTooLargeError`` for a header over its limit); decoding a reply that
is not one raises ``MalformedReplyError``.

The four messages of every produce and fetch (the two requests and their
replies) are hand-packed by protocol_hot.py into the bytes pycapnp would
write; decoding tries that first and falls back to pycapnp for any other
shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar, NamedTuple

from plinth import limits, protocol_classic, protocol_hot
from plinth.name_pages import NamesPage, check_page_args
from plinth.errors import (BrokerError, MalformedReplyError, MalformedRequestError,
                           RequestTooLargeError, error_for_code)
from plinth.schemas import protocol
from plinth.version import VERSION

_READ_LIMITS = dict(
    traversal_limit_in_words=limits.HEADER_TRAVERSAL_WORDS_MAX,
    nesting_limit=16,
)

# This build's version of the protocol (schemas/protocol.capnp): the Request kinds and
# fields it reads. It goes up whenever a kind or a field is added that an older broker
# would ignore or not answer; a broker says it on its `topics` replies (Reply's
# protocolVersion), and a client asks it before a call that needs it. 0: a broker before
# Plinth 0.2.0 (no field). 1 (0.2.0): every kind and field of 0.2.0: createTopics'
# validateOnly, deleteTopic's topic id guard, deleteOffsets; and a request of a kind the
# broker does not know is answered malformedRequest at once (before: no answer).
# A field an older peer may ignore or leave out without harm does not raise it: a
# request's hint whose absence leaves the older answer (listOffsets' requireListed:
# the log start as the shard knows it), a reply's field whose zero means "not known"
# or the cautious reading (a status's disk bytes, remotePartitionsNotListed and
# partitionsAppendsFailing; an Error's beforeWrite, false: maybe stored, so retried
# under the producer's id), and the shards' messages to each other (replicaFetch's
# appendFailed), which one ``plinth serve`` build sends to itself.
PROTOCOL_VERSION = 1

# How many times a reply's reader may walk each of its words (_reply_read_limits).
REPLY_TRAVERSAL_WORDS_PER_WORD = 2
ACKS_VALUES = (-1, 0, 1)
# The member epoch of a group heartbeat that leaves the group (as KIP-848's -1).
LEAVE_EPOCH = -1
TopicPartition = tuple[str, int]


# --- Requests, one class per kind of the Request union ------------------------
# Each is what decode_request returns for that kind: plain values, copied out of
# the message. ``kind`` is the union field's name in schemas/protocol.capnp.

@dataclass(frozen=True, slots=True)
class ProduceRequest:
    request_id: int
    topic: str
    partition: int
    acks: int = 1                 # 0: no reply; 1 or -1: reply once durable
    batch_format: int = 0         # log_entry.py's BATCH_FORMAT_*: the payload's format
    kind: ClassVar[str] = "produce"


@dataclass(frozen=True, slots=True)
class FetchRequest:
    request_id: int
    topic: str
    partition: int
    offset: int
    bytes_max: int
    wait_ms_max: int
    kind: ClassVar[str] = "fetch"


@dataclass(frozen=True, slots=True)
class ListOffsetsRequest:
    request_id: int
    topic: str
    partition: int
    # >= 0: also find the first record stamped at or after it; MAX_TIMESTAMP: the
    # one with the largest timestamp; NO_TIME_LOOKUP: start and end offsets only.
    timestamp_ms: int = -1
    # The start offset must be the log start, remote included: unavailable while a
    # tiered partition's remote log is not listed (PartitionRef.requireListed).
    require_listed: bool = False
    kind: ClassVar[str] = "listOffsets"


@dataclass(frozen=True, slots=True)
class DeleteRecordsRequest:
    request_id: int
    topic: str
    partition: int
    offset: int                   # no record below it is served; -1: the high watermark
    kind: ClassVar[str] = "deleteRecords"


@dataclass(frozen=True, slots=True)
class MetadataRequest:
    request_id: int
    topics: tuple[str, ...]       # empty: every topic
    kind: ClassVar[str] = "metadata"


@dataclass(frozen=True, slots=True)
class CreateTopicRequest:
    request_id: int
    topic: str
    partitions: int
    config: dict[str, str]
    replication_factor: int = 0   # 0: the server's --default-replication-factor
    timeout_ms: int = 0           # the client's wait left (timeoutMs, ms); 0: not given
    kind: ClassVar[str] = "createTopic"


@dataclass(frozen=True, slots=True)
class NewTopic:
    """One topic of a createTopics request (Kafka's NewTopic)."""
    name: str
    partitions: int = 1
    config: dict[str, str] = field(default_factory=dict)
    replication_factor: int = 0   # 0: the server's --default-replication-factor


@dataclass(frozen=True, slots=True)
class CreateTopicsRequest:
    request_id: int
    topics: tuple[NewTopic, ...]  # created all or none
    validate_only: bool = False   # checked as a create would be, none created
    timeout_ms: int = 0           # the client's wait left (timeoutMs, ms); 0: not given
    kind: ClassVar[str] = "createTopics"


@dataclass(frozen=True, slots=True)
class AlterTopicRequest:
    request_id: int
    topic: str
    config: dict[str, str]        # the entries to change
    partitions: int = 0           # 0: unchanged; more than the topic has: add partitions
    delete_config: tuple[str, ...] = ()   # keys set back to their defaults
    timeout_ms: int = 0           # the client's wait left (timeoutMs, ms); 0: not given
    kind: ClassVar[str] = "alterTopic"


@dataclass(frozen=True, slots=True)
class DeleteTopicRequest:
    request_id: int
    topic: str
    topic_id: str = ""            # delete only a topic with this id ("": any)
    timeout_ms: int = 0           # the client's wait left (timeoutMs, ms); 0: not given
    kind: ClassVar[str] = "deleteTopic"


@dataclass(frozen=True, slots=True)
class DescribeTopicRequest:
    request_id: int
    topic: str
    kind: ClassVar[str] = "describeTopic"


@dataclass(frozen=True, slots=True)
class ListTopicsRequest:
    request_id: int
    kind: ClassVar[str] = "listTopics"


@dataclass(frozen=True, slots=True)
class ListTopicsPageRequest:
    """A page of the topic names (plinth/name_pages.py; limit 0: every name), answered
    ``namesPage``. The limit is checked where it is answered (requestTooLarge)."""

    request_id: int
    prefix: str = ""
    after: str = ""
    limit: int = 0
    kind: ClassVar[str] = "listTopicsPage"


@dataclass(frozen=True, slots=True)
class GroupHeartbeatRequest:
    request_id: int
    group: str
    member_id: str                # empty: a new member
    member_epoch: int             # LEAVE_EPOCH (-1): the member leaves
    topics: tuple[str, ...]       # its subscription
    owned: frozenset[TopicPartition]
    session_timeout_ms: int       # 0: the default
    assignor: str                 # empty: the group's
    kind: ClassVar[str] = "groupHeartbeat"


@dataclass(frozen=True, slots=True)
class CommitOffsetsRequest:
    request_id: int
    group: str
    member_id: str
    member_epoch: int             # a classic group's commit: its generation id
    offsets: dict[TopicPartition, int]
    classic: bool = False         # Kafka's classic group protocol (OffsetCommit)
    group_instance_id: str = ""   # classic: a static member's instance id
    # The metadata to store with each offset, only where not empty (of these offsets).
    metadata: dict[TopicPartition, str] = field(default_factory=dict)
    kind: ClassVar[str] = "commitOffsets"


@dataclass(frozen=True, slots=True)
class ResetOffsetsRequest:
    request_id: int
    group: str
    offsets: dict[TopicPartition, int]
    metadata: dict[TopicPartition, str] = field(default_factory=dict)   # as a commit's
    kind: ClassVar[str] = "resetOffsets"


@dataclass(frozen=True, slots=True)
class FetchOffsetsRequest:
    request_id: int
    group: str
    kind: ClassVar[str] = "fetchOffsets"


@dataclass(frozen=True, slots=True)
class DeleteGroupRequest:
    request_id: int
    group: str
    kind: ClassVar[str] = "deleteGroup"


@dataclass(frozen=True, slots=True)
class DeleteOffsetsRequest:
    """Some of a group's committed offsets to forget (Kafka's OffsetDelete)."""

    request_id: int
    group: str
    partitions: frozenset[TopicPartition]
    kind: ClassVar[str] = "deleteOffsets"


@dataclass(frozen=True, slots=True)
class DescribeGroupRequest:
    request_id: int
    group: str
    kind: ClassVar[str] = "describeGroup"


@dataclass(frozen=True, slots=True)
class ListGroupsRequest:
    request_id: int
    kind: ClassVar[str] = "listGroups"


@dataclass(frozen=True, slots=True)
class ListGroupsPageRequest:
    """A page of the group names, as ListTopicsPageRequest."""

    request_id: int
    prefix: str = ""
    after: str = ""
    limit: int = 0
    kind: ClassVar[str] = "listGroupsPage"


@dataclass(frozen=True, slots=True)
class TopicStatsRequest:
    """Size and rates of some topics; at most ADMIN_TOPIC_STATS_NAMES_MAX, checked where
    it is answered (requestTooLarge)."""

    request_id: int
    topics: tuple[str, ...]
    kind: ClassVar[str] = "topicStats"


@dataclass(frozen=True, slots=True)
class StatusRequest:
    request_id: int
    kind: ClassVar[str] = "status"


@dataclass(frozen=True, slots=True)
class AddShardsRequest:
    request_id: int
    shard_count: int              # how many shards to add
    timeout_ms: int = 0           # the client's wait left (timeoutMs, ms); 0: not given
    kind: ClassVar[str] = "addShards"


@dataclass(frozen=True, slots=True)
class RemoveShardsRequest:
    request_id: int
    shard_count: int              # how many of the newest shards to remove
    timeout_ms: int = 0           # the client's wait left (timeoutMs, ms); 0: not given
    kind: ClassVar[str] = "removeShards"


@dataclass(frozen=True, slots=True)
class MoveShardRequest:
    request_id: int
    shard: str
    node: str                     # a node's name, pin resource or Ray node id (prefix)
    allow_replicas_on_one_node: bool = False
    accept_data_loss: bool = False
    force: bool = False
    timeout_ms: int = 0           # the client's wait left (timeoutMs, ms); 0: not given
    kind: ClassVar[str] = "moveShard"


# electLeaders' election types (Kafka's ElectionType).
ELECTION_PREFERRED = 0    # each partition's preferred leader, after a hand-over
ELECTION_UNCLEAN = 1      # a leader for an offline partition, among any replica
ELECTION_TYPES = {"preferred": ELECTION_PREFERRED, "unclean": ELECTION_UNCLEAN}
# A group heartbeat's assignor: one the coordinator runs (shards/assignors.py ASSIGNORS,
# held equal by tests/client/test_consumer.py), or "" for the group's own or the default.
GROUP_ASSIGNORS = ("sticky", "range")


@dataclass(frozen=True, slots=True)
class ElectLeadersRequest:
    request_id: int
    election_type: int            # ELECTION_PREFERRED or ELECTION_UNCLEAN
    partitions: tuple[tuple[str, int], ...] | None   # None: every partition of every topic
    kind: ClassVar[str] = "electLeaders"


@dataclass(frozen=True, slots=True)
class ReplicaFetchRequest:
    """A follower shard pulling from the partition's leader (shard to shard only)."""

    request_id: int
    topic: str
    partition: int
    replica_id: str               # the follower shard's id
    leader_epoch: int             # the epoch the follower follows
    fetch_offset: int             # the follower's durable log end offset
    last_fetched_epoch: int       # leader epoch of the follower's last entry, -1 if none
    bytes_max: int
    wait_ms_max: int
    controller_epoch: int
    kind: ClassVar[str] = "replicaFetch"


@dataclass(frozen=True, slots=True)
class ReplicaFetchPartition:
    """One partition of a ReplicaFetchAllRequest (ReplicaFetchRequest's fields for it)."""

    topic: str
    partition: int
    leader_epoch: int
    fetch_offset: int
    last_fetched_epoch: int
    bytes_max: int
    log_start_offset: int = 0     # the follower's: its leader's deleteRecords waits for it
    append_failed: bool = False   # its disk refused its last append of the partition


@dataclass(frozen=True, slots=True)
class ReplicaFetchAllRequest:
    """A follower shard pulling every partition it follows on one leader (shard to
    shard only): answered when any has entries or an answer of its own, or after
    ``wait_ms_max``."""

    request_id: int
    replica_id: str
    controller_epoch: int
    wait_ms_max: int
    bytes_max: int                # the whole answer's entries
    partitions: tuple[ReplicaFetchPartition, ...]
    kind: ClassVar[str] = "replicaFetchAll"


Request = (ProduceRequest | FetchRequest | ListOffsetsRequest | DeleteRecordsRequest
           | MetadataRequest
           | CreateTopicRequest | CreateTopicsRequest | AlterTopicRequest | DeleteTopicRequest
           | DescribeTopicRequest
           | ListTopicsRequest | GroupHeartbeatRequest | CommitOffsetsRequest
           | ResetOffsetsRequest | FetchOffsetsRequest | DescribeGroupRequest | DeleteGroupRequest
           | DeleteOffsetsRequest
           | ListGroupsRequest | ListTopicsPageRequest | ListGroupsPageRequest
           | TopicStatsRequest | StatusRequest | AddShardsRequest | RemoveShardsRequest
           | ReplicaFetchRequest | MoveShardRequest | ReplicaFetchAllRequest
           | ElectLeadersRequest
           | protocol_classic.ClassicJoinRequest | protocol_classic.ClassicSyncRequest
           | protocol_classic.ClassicHeartbeatRequest | protocol_classic.ClassicLeaveRequest)

# Requests that the router forwards to the shard owning the partition.
PARTITION_REQUESTS = (ProduceRequest, FetchRequest, ListOffsetsRequest, DeleteRecordsRequest)
# Requests that the router forwards to the shard coordinating the group.
GROUP_REQUESTS = (GroupHeartbeatRequest, CommitOffsetsRequest, ResetOffsetsRequest,
                  FetchOffsetsRequest, DescribeGroupRequest, DeleteGroupRequest,
                  DeleteOffsetsRequest, *protocol_classic.CLASSIC_REQUESTS)


class PartitionMove(NamedTuple):
    """A partition whose writes moved to another shard at ``offset`` (shards add/remove)."""

    topic: str
    partition: int
    from_shard: str
    to_shard: str
    offset: int


NO_REMOTE_OFFSET = -1   # PartitionInfo's remote offsets when nothing is in object storage
# listOffsets' timestamp_ms: no look-up by time; Kafka's "largest timestamp" (-3).
NO_TIME_LOOKUP = -1
MAX_TIMESTAMP = -3
# deleteRecords' offset: up to the high watermark (Kafka's -1).
DELETE_RECORDS_TO_HIGH_WATERMARK = -1
# PartitionInfo's found_offset / found_timestamp_ms when no record is found.
OFFSET_NONE = -1
TIMESTAMP_UNKNOWN = -1


@dataclass
class PartitionInfo:
    partition: int
    shard: str = ""               # describeTopic: the leader, "" while offline
    start_offset: int = 0
    end_offset: int = 0
    size_bytes: int = 0
    # Replication (describeTopic only; empty or 0 elsewhere)
    replicas: list[str] = field(default_factory=list)          # preferred leader first
    in_sync_replicas: list[str] = field(default_factory=list)
    leader_epoch: int = 0
    high_watermark: int = 0
    # Tiered storage: ``start_offset`` is the log start, remote included, and
    # ``size_bytes`` the bytes on the shards' disks; a segment both uploaded and still
    # within local retention counts in both byte counts.
    local_start_offset: int = 0                  # first offset on the shards' disks
    remote_start_offset: int = NO_REMOTE_OFFSET  # first offset in object storage
    remote_end_offset: int = NO_REMOTE_OFFSET    # the offset after the last one there
    remote_bytes: int = 0                        # log bytes of the readable remote segments
    # listOffsets by time: the first record stamped at or after the time asked and
    # its timestamp (exact in object storage too: shards/tier/remote_time_lookup.py);
    # OFFSET_NONE if none.
    found_offset: int = OFFSET_NONE
    found_timestamp_ms: int = TIMESTAMP_UNKNOWN
    # describeTopic: why the remote fields may lack segments the store holds (its shard
    # has not listed the store yet: a new leader, the store down); "" when they are the
    # store's. Then they are a lower bound, shown as unknown.
    remote_not_listed: str = ""

    @property
    def has_remote(self) -> bool:
        """Whether any of the partition's offsets are in object storage, as far as its
        shard knows (``remote_not_listed``: it may not know yet)."""
        return self.remote_start_offset != NO_REMOTE_OFFSET


@dataclass
class TopicInfo:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    partition_info: list[PartitionInfo] = field(default_factory=list)
    # metadata replies: per partition, its leader's direct address ("": the router)
    direct_addresses: list[str] = field(default_factory=list)
    # 32 hex digits (plinth.topics.new_topic_id); another after a delete and a create
    # under the same name. "" in a validate-only create's answer (no topic made).
    topic_id: str = ""


@dataclass
class MemberInfo:
    member_id: str
    member_epoch: int
    topics: list[str]
    assignment: set[tuple[str, int]]
    # classic groups only (schemas/protocol.capnp)
    group_instance_id: str = ""
    client_id: str = ""
    client_host: str = ""
    metadata: bytes = b""
    assignment_bytes: bytes = b""


@dataclass
class GroupInfo:
    group: str
    assignor: str
    epoch: int
    members: list[MemberInfo] = field(default_factory=list)
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    protocol_type: str = ""       # classic groups: "consumer"; "" for Plinth's
    state: str = ""               # classic: Kafka's state name
    leader: str = ""              # classic: the leader's member id


@dataclass
class GroupListing:
    """A group as listGroups shows it: Kafka's name for its state, and a classic
    group's protocol type ("" for a Plinth group), as describeGroup's GroupInfo."""

    group: str
    state: str
    protocol_type: str = ""


@dataclass
class HeartbeatView:
    member_id: str
    member_epoch: int
    heartbeat_interval_ms: int
    assignment: set[tuple[str, int]]


@dataclass
class ShardStatus:
    shard_id: str
    address: str
    alive: bool
    partitions: int
    size_bytes: int
    records_per_s: float
    bytes_per_s: float
    draining: bool = False
    node: str = ""                # the name of the node it is pinned to
    direct_address: str = ""      # its socket for clients' produce and fetch, "" if none
    requests_via_router: int = 0  # requests taken by socket, since it started
    requests_direct: int = 0
    remote_bytes: int = 0         # tiered storage, over the partitions it uploads
    upload_lag_bytes: int = 0
    upload_lag_s: float = 0.0
    upload_errors: int = 0
    draining_reason: str = ""     # of a draining shard: why it has not retired yet
    records_out_per_s: float = 0.0   # handed to clients' fetches, over records_per_s's window
    bytes_out_per_s: float = 0.0
    pid: int = 0                  # its process on its node (ray::ShardActor); 0: not known
    # The file system of its directory (0: not known); produces that would leave less
    # than disk_reserve_bytes free are refused (shards/disk_reserve.py)
    disk_free_bytes: int = 0
    disk_total_bytes: int = 0
    disk_reserve_bytes: int = 0
    down_reason: str = ""         # of a DOWN shard: why, if known ("restarting: died ...")
    # Of the partitions it uploads, those whose remote log it has not listed yet:
    # remote_bytes may lack their segments in the store (0 from an older broker)
    remote_partitions_not_listed: int = 0
    # Partitions whose last append its disk refused (a full disk, EIO): produces to
    # them fail whatever the reserve says (0 from an older broker)
    partitions_appends_failing: int = 0


@dataclass
class TopicStats:
    """One topic's size and rates (Admin.topic_stats), from the shards' counters.
    ``partitions_answered`` < ``partitions``: a shard did not answer, and the numbers
    lack its partitions."""

    name: str
    partitions: int
    size_bytes: int = 0
    records_in_per_s: float = 0.0
    bytes_in_per_s: float = 0.0
    records_out_per_s: float = 0.0
    bytes_out_per_s: float = 0.0
    partitions_answered: int = 0


@dataclass
class StatusInfo:
    nodes: list[tuple[str, str, bool]]            # (node id, address, alive)
    shards: list[ShardStatus]
    routers: list[tuple[str, str]]                # (listen address, node address)
    under_replicated_partitions: int = 0          # a replica out of the in-sync set
    offline_partitions: int = 0                   # no leader, or its shard down
    node_names: dict[str, str] = field(default_factory=dict)   # node id -> name (--node)
    tier_claim: str = ""           # the server's claim on its tier store, one line ("": no tier)
    tier_claim_held: bool = False  # whether the server holds it (deletes remote segments)


@dataclass(frozen=True)
class ElectionResult:
    """One partition's outcome of electLeaders: ``error`` None if elected, else why not
    (ElectionNotNeededError, PreferredLeaderNotAvailableError, ...); ``leader`` its
    leader after the request ("" offline)."""

    topic: str
    partition: int
    leader: str
    error: BrokerError | None = None


@dataclass(frozen=True)
class OffsetDeletion:
    """One partition's outcome of deleteOffsets: ``error`` None if its offset is gone
    (or none was committed), else why it was kept (GroupSubscribedToTopicError,
    UnknownTopicError, PartitionOutOfRangeError)."""

    topic: str
    partition: int
    error: BrokerError | None = None


@dataclass
class ShardMove:
    """What ``plinth shards move`` did: the shard's old and new node (names), where it
    listens now, the partitions whose replica there is rebuilt from its leader, and
    those that came back empty (no other copy; only with accept_data_loss)."""

    shard: str
    from_node: str
    to_node: str
    address: str
    repairing: list[tuple[str, int]] = field(default_factory=list)
    emptied: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class ReplyView:
    """A decoded Reply. ``error`` is a BrokerError or None."""

    request_id: int
    kind: str
    error: BrokerError | None = None
    base_offset: int = -1
    high_watermark: int = -1
    log_start_offset: int = -1
    topics: list[TopicInfo] = field(default_factory=list)
    offsets: PartitionInfo | None = None
    heartbeat: HeartbeatView | None = None
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    committed_metadata: dict[tuple[str, int], str] = field(default_factory=dict)  # where not ""
    group: GroupInfo | None = None
    groups: list[str] = field(default_factory=list)
    group_listings: list[GroupListing] = field(default_factory=list)   # listGroups
    status: StatusInfo | None = None
    moves: list[PartitionMove] = field(default_factory=list)
    throttle_time_ms: int = 0         # over a quota: wait this long before the next request
    replica_fetch: ReplicaFetchResult | None = None
    shard_move: ShardMove | None = None
    replica_fetch_all: list[ReplicaFetchPartitionResult] = field(default_factory=list)
    classic: protocol_classic.ClassicResult | None = None
    names_page: NamesPage | None = None          # listTopicsPage, listGroupsPage
    topic_stats: list[TopicStats] = field(default_factory=list)
    elections: list[ElectionResult] = field(default_factory=list)   # electLeaders
    offset_deletions: list[OffsetDeletion] = field(default_factory=list)   # deleteOffsets
    protocol_version: int = 0         # the broker's PROTOCOL_VERSION (topics replies; 0: older)


# --- Requests ---------------------------------------------------------------

# Produce and fetch requests and their replies are hand-packed (protocol_hot.py).
encode_produce = protocol_hot.encode_produce
encode_fetch = protocol_hot.encode_fetch


def encode_metadata(request_id: int, topics: list[str]) -> bytes:
    msg = protocol.Request.new_message(requestId=request_id)
    names = msg.init("metadata").init("topics", len(topics))
    for i, name in enumerate(topics):
        names[i] = name
    return msg.to_bytes()


def timeout_field(timeout_ms: float | None) -> int:
    """A change's timeoutMs for a client that still waits ``timeout_ms``: whole ms, at
    least 1 (a wait already over is sent as 1, and the router drops the change, as 0
    would mean "not given") and at most TIMEOUT_MS_FIELD_MAX; None: 0, not given."""
    if timeout_ms is None:
        return 0
    return max(1, min(int(timeout_ms), limits.TIMEOUT_MS_FIELD_MAX))


def _change_message(request_id: int, timeout_ms: float | None):
    """A new Request builder for a change, carrying ``timeout_field(timeout_ms)``."""
    return protocol.Request.new_message(requestId=request_id,
                                        timeoutMs=timeout_field(timeout_ms))


def encode_create_topic(request_id: int, name: str, partitions: int,
                        config: dict[str, str], kind: str = "createTopic",
                        replication_factor: int = 0, delete_config: tuple[str, ...] = (),
                        *, timeout_ms: float | None = None) -> bytes:
    """createTopic, or alterTopic (partitions 0: unchanged; replication factor ignored;
    ``delete_config``: keys back to their defaults). ``replication_factor`` 0: the
    server's default. ``timeout_ms``, for this and every change: how long the client
    still waits (``timeout_field``), None not said."""
    _check_kind(kind, ("createTopic", "alterTopic"))
    assert not (delete_config and kind == "createTopic"), "a new topic has no config to delete"
    msg = _change_message(request_id, timeout_ms)
    body = msg.init(kind)
    body.name, body.partitions = name, partitions
    _fill_config(body.init("config", len(config)), config)
    if kind == "createTopic":
        body.replicationFactor = replication_factor
    if delete_config:
        body.deleteConfig = list(delete_config)
    return msg.to_bytes()


def encode_create_topics(request_id: int, new_topics: list[NewTopic],
                         validate_only: bool = False, *, timeout_ms: float | None = None) -> bytes:
    """createTopics (``validate_only``: checked, none created); RequestTooLargeError if
    the header outgrows HEADER_BYTES_MAX (long names with many config entries: send
    fewer topics at once)."""
    msg = _change_message(request_id, timeout_ms)
    body = msg.init("createTopics")
    body.validateOnly = validate_only
    out = body.init("topics", len(new_topics))
    for i, new in enumerate(new_topics):
        out[i].name, out[i].partitions = new.name, new.partitions
        out[i].replicationFactor = new.replication_factor
        _fill_config(out[i].init("config", len(new.config)), new.config)
    frame = msg.to_bytes()
    if len(frame) > limits.HEADER_BYTES_MAX:
        raise RequestTooLargeError(f"createTopics of {len(new_topics)} topics is {len(frame)} "
                                   f"bytes, over the header limit of {limits.HEADER_BYTES_MAX}: "
                                   f"send fewer at once")
    return frame


def encode_topic_request(request_id: int, kind: str, name: str, topic_id: str = "", *,
                         timeout_ms: float | None = None) -> bytes:
    """deleteTopic or describeTopic; ``topic_id`` and ``timeout_ms`` (deleteTopic only):
    delete the topic only if it has this id ("": whichever it has)."""
    _check_kind(kind, ("deleteTopic", "describeTopic"))
    if (topic_id or timeout_ms is not None) and kind != "deleteTopic":
        raise AssertionError(f"{kind} carries no topic id or timeout (asked with "
                             f"{topic_id!r}, {timeout_ms})")
    msg = _change_message(request_id, timeout_ms)
    request = msg.init(kind)
    request.name = name
    if topic_id:
        request.topicId = topic_id
    return msg.to_bytes()


def _check_kind(kind: str, kinds: tuple[str, ...]) -> None:
    """A programmer error if an encoder is asked for a kind it does not write."""
    if kind not in kinds:
        raise AssertionError(f"request kind {kind!r} is not one of {kinds}")


def encode_list_topics(request_id: int) -> bytes:
    msg = protocol.Request.new_message(requestId=request_id)
    msg.listTopics = None
    return msg.to_bytes()


def encode_names_page_request(request_id: int, kind: str, prefix: str, after: str,
                              limit: int) -> bytes:
    """listTopicsPage or listGroupsPage; ``limit`` checked (check_page_args)."""
    _check_kind(kind, ("listTopicsPage", "listGroupsPage"))
    check_page_args(prefix, after, limit, kind)
    msg = protocol.Request.new_message(requestId=request_id)
    body = msg.init(kind)
    body.prefix, body.after, body.limit = prefix, after, limit
    return msg.to_bytes()


def encode_topic_stats_request(request_id: int, names: list[str]) -> bytes:
    """topicStats of ``names``: RequestTooLargeError beyond ADMIN_TOPIC_STATS_NAMES_MAX."""
    check_topic_stats_count(len(names))
    msg = protocol.Request.new_message(requestId=request_id)
    _fill_texts(msg.init("topicStats").init("topics", len(names)), names)
    return msg.to_bytes()


def check_topic_stats_count(count: int) -> None:
    """RequestTooLargeError for a topicStats of more than ADMIN_TOPIC_STATS_NAMES_MAX
    topics (the client before sending, the controller before answering)."""
    if count > limits.ADMIN_TOPIC_STATS_NAMES_MAX:
        raise RequestTooLargeError(
            f"topicStats of {count} topics is over ADMIN_TOPIC_STATS_NAMES_MAX, "
            f"{limits.ADMIN_TOPIC_STATS_NAMES_MAX} topics per request")


def encode_list_offsets(request_id: int, topic: str, partition: int,
                        timestamp_ms: int = NO_TIME_LOOKUP, require_listed: bool = False) -> bytes:
    """A partition's start and end offsets; with ``timestamp_ms`` (>= 0, or
    MAX_TIMESTAMP) also the first record stamped at or after it; with
    ``require_listed``, unavailable rather than a start offset that records in
    object storage may undercut (PartitionRef.requireListed)."""
    if timestamp_ms < 0 and timestamp_ms not in (NO_TIME_LOOKUP, MAX_TIMESTAMP):
        raise ValueError(f"timestamp_ms={timestamp_ms} is negative: a time is ms since the "
                         f"epoch, 0 or more ({MAX_TIMESTAMP}: the largest timestamp)")
    msg = protocol.Request.new_message(requestId=request_id)
    body = msg.init("listOffsets")
    body.topic, body.partition, body.timestampMs = topic, partition, timestamp_ms
    body.requireListed = require_listed
    return msg.to_bytes()


def encode_delete_records(request_id: int, topic: str, partition: int, offset: int) -> bytes:
    """Delete a partition's records before ``offset`` (-1: the high watermark); answered
    with its PartitionInfo, whose start_offset is the new low watermark. Another
    negative offset is sent as it is (the Kafka listener relays a Kafka client's),
    and the shard refuses it (offsetOutOfRange); Admin refuses it before sending."""
    msg = protocol.Request.new_message(requestId=request_id)
    body = msg.init("deleteRecords")
    body.topic, body.partition, body.offset = topic, partition, offset
    return msg.to_bytes()


def encode_group_heartbeat(request_id: int, group: str, member_id: str, member_epoch: int,
                           topics: list[str], owned: set[tuple[str, int]],
                           session_timeout_ms: int, assignor: str) -> bytes:
    msg = protocol.Request.new_message(requestId=request_id)
    body = msg.init("groupHeartbeat")
    body.group, body.memberId, body.memberEpoch = group, member_id, member_epoch
    body.sessionTimeoutMs, body.assignor = session_timeout_ms, assignor
    _fill_texts(body.init("topics", len(topics)), topics)
    _fill_topic_partitions(body, "owned", owned)
    return msg.to_bytes()


def encode_commit_offsets(request_id: int, kind: str, group: str, member_id: str,
                          member_epoch: int, offsets: dict[tuple[str, int], int],
                          classic: bool = False, group_instance_id: str = "",
                          metadata: dict[tuple[str, int], str] | None = None) -> bytes:
    """commitOffsets, or resetOffsets (member id empty). ``classic``: a commit of Kafka's
    classic group protocol, ``member_epoch`` being the generation id. ``metadata``: the
    string to store with an offset, for some of ``offsets``' partitions (the shard
    checks its size)."""
    _check_kind(kind, ("commitOffsets", "resetOffsets"))
    msg = protocol.Request.new_message(requestId=request_id)
    body = msg.init(kind)
    body.group, body.memberId, body.memberEpoch = group, member_id, member_epoch
    _fill_partition_offsets(body, "offsets", offsets, metadata)
    if kind == "commitOffsets":
        body.classic, body.groupInstanceId = classic, group_instance_id
    return msg.to_bytes()


# What a PartitionOffset takes beside its texts, at most: its struct (two data words,
# two pointers) and each text's NUL and padding to a word.
_OFFSET_ENTRY_BYTES = 4 * 8 + 2 * 8


def commit_offsets_parts(offsets: dict[tuple[str, int], int],
                         metadata: dict[tuple[str, int], str] | None = None
                         ) -> list[dict[tuple[str, int], int]]:
    """``offsets`` split, in (topic, partition) order, into parts each of whose
    commitOffsets or resetOffsets headers fits HEADER_BYTES_MAX, whatever the group,
    member and instance ids (limits.COMMIT_PART_OFFSETS_BYTES_MAX). A consumer of a
    few thousand partitions (about 1,160 with 15-byte topic names) could not commit
    in one. Any process; no parts for no offsets."""
    parts: list[dict[tuple[str, int], int]] = []
    part: dict[tuple[str, int], int] = {}
    part_bytes = 0
    for tp in sorted(offsets):
        text = metadata.get(tp, "") if metadata else ""
        entry_bytes = _OFFSET_ENTRY_BYTES + len(tp[0].encode()) + len(text.encode())
        if part and part_bytes + entry_bytes > limits.COMMIT_PART_OFFSETS_BYTES_MAX:
            parts.append(part)
            part, part_bytes = {}, 0
        part[tp] = offsets[tp]
        part_bytes += entry_bytes
    if part:
        parts.append(part)
    return parts


def encode_group_request(request_id: int, kind: str, group: str) -> bytes:
    """fetchOffsets, describeGroup or deleteGroup."""
    _check_kind(kind, ("fetchOffsets", "describeGroup", "deleteGroup"))
    msg = protocol.Request.new_message(requestId=request_id)
    msg.init(kind).group = group
    return msg.to_bytes()


def encode_delete_offsets(request_id: int, group: str,
                          partitions: set[tuple[str, int]]) -> bytes:
    """deleteOffsets of these partitions' committed offsets of ``group``; the caller
    keeps to a topic per request (schemas/protocol.capnp says why)."""
    msg = protocol.Request.new_message(requestId=request_id)
    body = msg.init("deleteOffsets")
    body.group = group
    _fill_topic_partitions(body, "partitions", partitions)
    return msg.to_bytes()


def encode_status_request(request_id: int) -> bytes:
    msg = protocol.Request.new_message(requestId=request_id)
    msg.status = None
    return msg.to_bytes()


def encode_shards_change(request_id: int, kind: str, count: int, *,
                         timeout_ms: float | None = None) -> bytes:
    """kind: addShards or removeShards."""
    msg = _change_message(request_id, timeout_ms)
    setattr(msg, kind, count)
    return msg.to_bytes()


def encode_move_shard(request_id: int, shard: str, node: str, *,
                      allow_replicas_on_one_node: bool = False, accept_data_loss: bool = False,
                      force: bool = False, timeout_ms: float | None = None) -> bytes:
    msg = _change_message(request_id, timeout_ms)
    body = msg.init("moveShard")
    body.shard, body.node, body.force = shard, node, force
    body.allowReplicasOnOneNode, body.acceptDataLoss = allow_replicas_on_one_node, accept_data_loss
    return msg.to_bytes()


def encode_elect_leaders(request_id: int, election_type: int,
                         partitions: list[tuple[str, int]] | None) -> bytes:
    """``partitions`` None: every partition of every topic."""
    msg = protocol.Request.new_message(requestId=request_id)
    body = msg.init("electLeaders")
    body.electionType, body.all = election_type, partitions is None
    _fill_topic_partitions(body, "partitions", set(partitions or ()))
    return msg.to_bytes()


def encode_elections_reply(request_id: int, results: list[ElectionResult]) -> bytes:
    msg = protocol.Reply.new_message(requestId=request_id)
    out = msg.init("elections", len(results))
    for i, result in enumerate(results):
        o = out[i]
        o.topic, o.partition, o.leader = result.topic, result.partition, result.leader
        if result.error is not None:
            o.error.code, o.error.message = result.error.code_name, str(result.error)
    return msg.to_bytes()


def encode_offset_deletions_reply(request_id: int, results: list[OffsetDeletion]) -> bytes:
    msg = protocol.Reply.new_message(requestId=request_id)
    out = msg.init("offsetDeletions", len(results))
    for i, result in enumerate(results):
        out[i].topic, out[i].partition = result.topic, result.partition
        if result.error is not None:
            out[i].error.code, out[i].error.message = result.error.code_name, str(result.error)
    return msg.to_bytes()


def encode_shard_move_reply(request_id: int, move: ShardMove) -> bytes:
    msg = protocol.Reply.new_message(requestId=request_id)
    body = msg.init("shardMove")
    body.shard, body.fromNode, body.toNode, body.address = (move.shard, move.from_node,
                                                            move.to_node, move.address)
    for name, refs in (("repairing", move.repairing), ("emptied", move.emptied)):
        out = body.init(name, len(refs))
        for i, (topic, partition) in enumerate(refs):
            out[i].topic, out[i].partition = topic, partition
    return msg.to_bytes()


def encode_moves_reply(request_id: int, moves: list[PartitionMove]) -> bytes:
    msg = protocol.Reply.new_message(requestId=request_id)
    out = msg.init("moves", len(moves))
    for i, (topic, partition, from_shard, to_shard, offset) in enumerate(moves):
        out[i].topic, out[i].partition, out[i].offset = topic, partition, offset
        out[i].fromShard, out[i].toShard = from_shard, to_shard
    return msg.to_bytes()


def encode_list_groups(request_id: int) -> bytes:
    msg = protocol.Request.new_message(requestId=request_id)
    msg.listGroups = None
    return msg.to_bytes()


def check_header_bytes(frame) -> None:
    """RequestTooLargeError for a request header over HEADER_BYTES_MAX: the client
    checks every header before sending it, so that it fails at once rather than wait
    for a reply; the router checks it again before decoding."""
    if len(frame) > limits.HEADER_BYTES_MAX:
        raise RequestTooLargeError(
            f"request header is {len(frame)} bytes, over the limit of "
            f"{limits.HEADER_BYTES_MAX} bytes ({limits.HEADER_BYTES_MAX // 1024} KiB)")


def decode_request(frame) -> Request:
    """Decode an untrusted Request frame. Raises MalformedRequestError, or
    RequestTooLargeError for a header over HEADER_BYTES_MAX; nothing else."""
    check_header_bytes(frame)
    hot = protocol_hot.decode_request(frame)
    if hot is not None:
        kind, *fields = hot
        return ProduceRequest(*fields) if kind == "produce" else FetchRequest(*fields)
    try:
        with protocol.Request.from_bytes(bytes(frame), **_READ_LIMITS) as req:
            return _request(req)
    except MalformedRequestError:
        raise
    except Exception as exc:  # pycapnp raises KjException, ValueError, ...
        raise MalformedRequestError(f"request header is not a valid Request: {exc}") from None


def check_payload_frames(request, payload: list) -> None:
    """Raise MalformedRequestError unless a client's request has the payload frames of
    its kind after its header: one for a produce (its RecordBatch), none for the
    others. The router checks every client request; a shard, its direct clients'."""
    expected = 1 if type(request) is ProduceRequest else 0
    if len(payload) != expected:
        raise MalformedRequestError(
            f"a {request.kind} request carries {expected} payload frame(s) after its header, "
            f"not {len(payload)} ({sum(len(frame) for frame in payload)} bytes)")


def _request(req) -> Request:
    """The Request class for the message's kind, its fields copied out of ``req``."""
    try:
        kind = req.which()
    except Exception:   # pycapnp's KjException: a union member this schema lacks
        raise MalformedRequestError(
            f"request {req.requestId} is of a kind this broker does not know (Plinth "
            f"{VERSION}, protocol version {PROTOCOL_VERSION}): a newer client's request? "
            f"Upgrade the broker, or use a client of its version") from None
    decode = _REQUEST_DECODERS.get(kind)
    if decode is None:
        raise MalformedRequestError(f"unknown request kind {kind!r}")
    request = decode(req.requestId, getattr(req, kind))
    if req.timeoutMs and kind in _TIMED_KINDS:
        return replace(request, timeout_ms=req.timeoutMs)
    return request


def _lookup_timestamp_ms(timestamp_ms: int) -> int:
    """listOffsets' timestampMs, checked: >= 0, NO_TIME_LOOKUP or MAX_TIMESTAMP."""
    if timestamp_ms < 0 and timestamp_ms not in (NO_TIME_LOOKUP, MAX_TIMESTAMP):
        raise MalformedRequestError(
            f"listOffsets timestampMs {timestamp_ms} is negative: a time is ms since the epoch, "
            f"0 or more ({NO_TIME_LOOKUP}: no look-up by time, {MAX_TIMESTAMP}: the largest)")
    return timestamp_ms


def _config(entries) -> dict[str, str]:
    return {entry.key: entry.value for entry in entries}


# The kinds whose timeoutMs is kept (the changes); every other kind ignores it.
_TIMED_KINDS = frozenset(("createTopic", "createTopics", "alterTopic", "deleteTopic",
                          "addShards", "removeShards", "moveShard"))
_REQUEST_DECODERS = {
    "produce": lambda rid, b: ProduceRequest(rid, b.topic, b.partition, b.acks, b.batchFormat),
    "fetch": lambda rid, b: FetchRequest(rid, b.topic, b.partition, b.offset, b.maxBytes,
                                         b.maxWaitMs),
    "listOffsets": lambda rid, b: ListOffsetsRequest(rid, b.topic, b.partition,
                                                     _lookup_timestamp_ms(b.timestampMs),
                                                     b.requireListed),
    "deleteRecords": lambda rid, b: DeleteRecordsRequest(rid, b.topic, b.partition, b.offset),
    "metadata": lambda rid, b: MetadataRequest(rid, tuple(b.topics)),
    "createTopic": lambda rid, b: CreateTopicRequest(rid, b.name, b.partitions,
                                                     _config(b.config), b.replicationFactor),
    "createTopics": lambda rid, b: CreateTopicsRequest(rid, tuple(
        NewTopic(t.name, t.partitions, _config(t.config), t.replicationFactor) for t in b.topics),
        b.validateOnly),
    "alterTopic": lambda rid, b: AlterTopicRequest(rid, b.name, _config(b.config), b.partitions,
                                                   tuple(b.deleteConfig)),
    "deleteTopic": lambda rid, b: DeleteTopicRequest(rid, b.name, b.topicId),
    "describeTopic": lambda rid, b: DescribeTopicRequest(rid, b.name),
    "listTopics": lambda rid, _: ListTopicsRequest(rid),
    "listTopicsPage": lambda rid, b: ListTopicsPageRequest(rid, b.prefix, b.after, b.limit),
    "listGroupsPage": lambda rid, b: ListGroupsPageRequest(rid, b.prefix, b.after, b.limit),
    "topicStats": lambda rid, b: TopicStatsRequest(rid, tuple(b.topics)),
    "groupHeartbeat": lambda rid, b: GroupHeartbeatRequest(
        rid, b.group, b.memberId, b.memberEpoch, tuple(b.topics),
        frozenset(_topic_partitions(b.owned)), b.sessionTimeoutMs, b.assignor),
    "commitOffsets": lambda rid, b: _commit_offsets_request(rid, b),
    "resetOffsets": lambda rid, b: ResetOffsetsRequest(rid, b.group,
                                                       *_offsets_and_metadata(b.offsets)),
    "fetchOffsets": lambda rid, b: FetchOffsetsRequest(rid, b.group),
    "deleteGroup": lambda rid, b: DeleteGroupRequest(rid, b.group),
    "deleteOffsets": lambda rid, b: DeleteOffsetsRequest(
        rid, b.group, frozenset(_topic_partitions(b.partitions))),
    "describeGroup": lambda rid, b: DescribeGroupRequest(rid, b.group),
    "listGroups": lambda rid, _: ListGroupsRequest(rid),
    "status": lambda rid, _: StatusRequest(rid),
    "addShards": lambda rid, count: AddShardsRequest(rid, count),
    "removeShards": lambda rid, count: RemoveShardsRequest(rid, count),
    "electLeaders": lambda rid, b: ElectLeadersRequest(
        rid, b.electionType, None if b.all else
        tuple((t.topic, p) for t in b.partitions for p in t.partitions)),
    "moveShard": lambda rid, b: MoveShardRequest(rid, b.shard, b.node, b.allowReplicasOnOneNode,
                                                 b.acceptDataLoss, b.force),
    "replicaFetch": lambda rid, b: ReplicaFetchRequest(
        rid, b.topic, b.partition, b.replicaId, b.leaderEpoch, b.fetchOffset,
        b.lastFetchedEpoch, b.maxBytes, b.maxWaitMs, b.controllerEpoch),
    "replicaFetchAll": lambda rid, b: ReplicaFetchAllRequest(
        rid, b.replicaId, b.controllerEpoch, b.maxWaitMs, b.maxBytes, tuple(
            ReplicaFetchPartition(p.topic, p.partition, p.leaderEpoch, p.fetchOffset,
                                  p.lastFetchedEpoch, p.maxBytes, p.logStartOffset,
                                  p.appendFailed)
            for p in b.partitions)),
    **protocol_classic.REQUEST_DECODERS,
}


# --- Replies ----------------------------------------------------------------

def encode_error(request_id: int, error: BrokerError) -> bytes:
    msg = protocol.Reply.new_message(requestId=request_id)
    msg.error.code = error.code_name
    msg.error.message = error.message
    msg.error.beforeWrite = error.before_write
    msg.error.remoteStorage = error.remote_storage
    msg.none = None
    return msg.to_bytes()


def encode_ok(request_id: int) -> bytes:
    msg = protocol.Reply.new_message(requestId=request_id)
    msg.none = None
    return msg.to_bytes()


encode_produce_reply = protocol_hot.encode_produce_reply
encode_fetch_reply = protocol_hot.encode_fetch_reply


def encode_topics_reply(request_id: int, topics: list[TopicInfo]) -> bytes:
    msg = protocol.Reply.new_message(requestId=request_id, protocolVersion=PROTOCOL_VERSION)
    out = msg.init("topics", len(topics))
    for i, info in enumerate(topics):
        out[i].name, out[i].partitions = info.name, info.partitions
        if info.topic_id:
            out[i].topicId = info.topic_id
        _fill_config(out[i].init("config", len(info.config)), info.config)
        parts = out[i].init("partitionInfo", len(info.partition_info))
        for j, part in enumerate(info.partition_info):
            _fill_partition(parts[j], part)
        if info.direct_addresses:
            direct = out[i].init("directAddresses", len(info.direct_addresses))
            for j, address in enumerate(info.direct_addresses):
                direct[j] = address
    return msg.to_bytes()


def encode_offsets_reply(request_id: int, info: PartitionInfo) -> bytes:
    msg = protocol.Reply.new_message(requestId=request_id)
    _fill_partition(msg.init("offsets"), info)
    return msg.to_bytes()


def encode_heartbeat_reply(request_id: int, member_id: str, member_epoch: int,
                           heartbeat_interval_ms: int, assignment: set[tuple[str, int]]) -> bytes:
    msg = protocol.Reply.new_message(requestId=request_id)
    body = msg.init("heartbeat")
    body.memberId, body.memberEpoch = member_id, member_epoch
    body.heartbeatIntervalMs = heartbeat_interval_ms
    _fill_topic_partitions(body, "assignment", assignment)
    return msg.to_bytes()


def encode_committed_reply(request_id: int, offsets: dict[tuple[str, int], int],
                           metadata: dict[tuple[str, int], str] | None = None) -> bytes:
    """fetchOffsets' answer: the group's offsets, with the metadata committed with some."""
    msg = protocol.Reply.new_message(requestId=request_id)
    _fill_partition_offsets(msg, "committed", offsets, metadata)
    return msg.to_bytes()


def encode_group_reply(request_id: int, info: GroupInfo) -> bytes:
    msg = protocol.Reply.new_message(requestId=request_id)
    body = msg.init("group")
    body.group, body.assignor, body.epoch = info.group, info.assignor, info.epoch
    body.protocolType, body.state, body.leader = info.protocol_type, info.state, info.leader
    members = body.init("members", len(info.members))
    for i, member in enumerate(info.members):
        out = members[i]
        out.memberId, out.memberEpoch = member.member_id, member.member_epoch
        _fill_texts(out.init("topics", len(member.topics)), member.topics)
        _fill_topic_partitions(out, "assignment", member.assignment)
        out.groupInstanceId, out.clientId = member.group_instance_id, member.client_id
        out.clientHost, out.metadata = member.client_host, member.metadata
        out.assignmentBytes = member.assignment_bytes
    _fill_partition_offsets(body, "committed", info.committed)
    return msg.to_bytes()


def encode_groups_reply(request_id: int, listings: list[GroupListing]) -> bytes:
    """listGroups' reply: the names in ``groups``, their states alongside, in order."""
    msg = protocol.Reply.new_message(requestId=request_id)
    _fill_texts(msg.init("groups", len(listings)), [g.group for g in listings])
    out = msg.init("groupListings", len(listings))
    for i, listing in enumerate(listings):
        out[i].state, out[i].protocolType = listing.state, listing.protocol_type
    return msg.to_bytes()


def encode_names_page_reply(request_id: int, page: NamesPage) -> bytes:
    msg = protocol.Reply.new_message(requestId=request_id)
    body = msg.init("namesPage")
    _fill_texts(body.init("names", len(page.names)), page.names)
    body.more = page.more
    if page.unanswered:
        _fill_texts(body.init("unanswered", len(page.unanswered)), page.unanswered)
    return msg.to_bytes()


def encode_topic_stats_reply(request_id: int, stats: list[TopicStats]) -> bytes:
    msg = protocol.Reply.new_message(requestId=request_id)
    out = msg.init("topicStats", len(stats))
    for i, s in enumerate(stats):
        o = out[i]
        o.name, o.partitions, o.sizeBytes = s.name, s.partitions, s.size_bytes
        o.recordsInPerS, o.bytesInPerS = s.records_in_per_s, s.bytes_in_per_s
        o.recordsOutPerS, o.bytesOutPerS = s.records_out_per_s, s.bytes_out_per_s
        o.partitionsAnswered = s.partitions_answered
    return msg.to_bytes()


def encode_status_reply(request_id: int, info: StatusInfo) -> bytes:
    msg = protocol.Reply.new_message(requestId=request_id)
    body = msg.init("status")
    nodes = body.init("nodes", len(info.nodes))
    for i, (node_id, address, alive) in enumerate(info.nodes):
        nodes[i].nodeId, nodes[i].address, nodes[i].alive = node_id, address, alive
        nodes[i].name = info.node_names.get(node_id, "")
    shards = body.init("shards", len(info.shards))
    for i, shard in enumerate(info.shards):
        out = shards[i]
        out.shardId, out.address, out.alive = shard.shard_id, shard.address, shard.alive
        out.partitions, out.sizeBytes = shard.partitions, shard.size_bytes
        out.recordsPerS, out.bytesPerS = shard.records_per_s, shard.bytes_per_s
        out.draining, out.node = shard.draining, shard.node
        out.directAddress = shard.direct_address
        out.requestsViaRouter, out.requestsDirect = shard.requests_via_router, shard.requests_direct
        out.remoteBytes, out.uploadLagBytes = shard.remote_bytes, shard.upload_lag_bytes
        out.uploadLagS, out.uploadErrors = shard.upload_lag_s, shard.upload_errors
        out.drainingReason = shard.draining_reason
        out.recordsOutPerS, out.bytesOutPerS = shard.records_out_per_s, shard.bytes_out_per_s
        out.pid = shard.pid
        out.diskFreeBytes, out.diskTotalBytes = shard.disk_free_bytes, shard.disk_total_bytes
        out.diskReserveBytes = shard.disk_reserve_bytes
        out.downReason = shard.down_reason
        out.remotePartitionsNotListed = shard.remote_partitions_not_listed
        out.partitionsAppendsFailing = shard.partitions_appends_failing
    routers = body.init("routers", len(info.routers))
    for i, (address, node) in enumerate(info.routers):
        routers[i].address, routers[i].node = address, node
    body.underReplicatedPartitions = info.under_replicated_partitions
    body.offlinePartitions = info.offline_partitions
    body.tierClaim, body.tierClaimHeld = info.tier_claim, info.tier_claim_held
    return msg.to_bytes()


def decode_reply(frame) -> ReplyView:
    """Decode a Reply frame from the broker (client side)."""
    hot = protocol_hot.decode_reply(frame)
    if hot is not None:
        request_id, kind, base_offset, high_watermark, log_start_offset = hot
        return ReplyView(request_id, kind, None, base_offset, high_watermark, log_start_offset)
    try:
        with protocol.Reply.from_bytes(bytes(frame), **_reply_read_limits(len(frame))) as rep:
            return _reply_view(rep)
    except Exception as exc:
        raise MalformedReplyError(f"reply from broker is not a valid Reply: {exc}") from None


def _reply_read_limits(frame_bytes: int) -> dict:
    """A reply's reader limits. Unlike a request, whose header is bounded by
    HEADER_BYTES_MAX, a reply may legitimately be large (the metadata of a topic of
    PARTITIONS_PER_TOPIC_MAX partitions, describeTopic with its replicas, status of
    many shards): its reader may walk each word of it about twice, so the work stays
    bounded by what arrived (a crafted reply cannot make it walk gigabytes), and a
    small reply keeps the header's limit."""
    return dict(traversal_limit_in_words=max(limits.HEADER_TRAVERSAL_WORDS_MAX,
                                             frame_bytes // 8 * REPLY_TRAVERSAL_WORDS_PER_WORD),
                nesting_limit=_READ_LIMITS["nesting_limit"])


def _group_listings(names: list[str], listings) -> list[GroupListing]:
    """Each group's listing; a state of "" for all if the writer sent none (it
    predates groupListings) or not one per name."""
    if len(listings) != len(names):
        return [GroupListing(name, "") for name in names]
    return [GroupListing(name, g.state, g.protocolType) for name, g in zip(names, listings)]


def _reply_view(rep) -> ReplyView:
    view = ReplyView(request_id=rep.requestId, kind=rep.which(),
                     throttle_time_ms=rep.throttleTimeMs)
    code = str(rep.error.code)
    if code != "none":
        view.error = error_for_code(code, rep.error.message, rep.error.beforeWrite,
                                    rep.error.remoteStorage)
        return view
    if view.kind == "produce":
        view.base_offset = rep.produce.baseOffset
    elif view.kind == "fetch":
        view.high_watermark = rep.fetch.highWatermark
        view.log_start_offset = rep.fetch.logStartOffset
    elif view.kind == "topics":
        view.topics = [_topic_info(t) for t in rep.topics]
        view.protocol_version = rep.protocolVersion
    elif view.kind == "offsets":
        view.offsets = _partition_info(rep.offsets)
    elif view.kind == "heartbeat":
        hb = rep.heartbeat
        view.heartbeat = HeartbeatView(hb.memberId, hb.memberEpoch, hb.heartbeatIntervalMs,
                                       _topic_partitions(hb.assignment))
    elif view.kind == "committed":
        view.committed, view.committed_metadata = _offsets_and_metadata(rep.committed)
    elif view.kind == "group":
        view.group = _group_info(rep.group)
    elif view.kind == "groups":
        view.groups = list(rep.groups)
        view.group_listings = _group_listings(view.groups, rep.groupListings)
    elif view.kind == "moves":
        view.moves = [PartitionMove(m.topic, m.partition, m.fromShard, m.toShard, m.offset)
                      for m in rep.moves]
    elif view.kind == "replicaFetch":
        view.replica_fetch = _replica_fetch_result(rep.replicaFetch)
    elif view.kind == "shardMove":
        m = rep.shardMove
        view.shard_move = ShardMove(m.shard, m.fromNode, m.toNode, m.address,
                                    [(r.topic, r.partition) for r in m.repairing],
                                    [(r.topic, r.partition) for r in m.emptied])
    elif view.kind == "elections":
        view.elections = [ElectionResult(e.topic, e.partition, e.leader, _error_or_none(e.error))
                          for e in rep.elections]
    elif view.kind == "offsetDeletions":
        view.offset_deletions = [OffsetDeletion(d.topic, d.partition, _error_or_none(d.error))
                                 for d in rep.offsetDeletions]
    elif view.kind == "replicaFetchAll":
        view.replica_fetch_all = [_replica_fetch_partition_result(r) for r in rep.replicaFetchAll]
    elif view.kind == "classic":
        view.classic = protocol_classic.decode_result(rep.classic)
    elif view.kind == "namesPage":
        view.names_page = NamesPage(list(rep.namesPage.names), rep.namesPage.more,
                                    list(rep.namesPage.unanswered))
    elif view.kind == "topicStats":
        view.topic_stats = [TopicStats(t.name, t.partitions, t.sizeBytes, t.recordsInPerS,
                                       t.bytesInPerS, t.recordsOutPerS, t.bytesOutPerS,
                                       t.partitionsAnswered) for t in rep.topicStats]
    elif view.kind == "status":
        st = rep.status
        view.status = StatusInfo(
            nodes=[(n.nodeId, n.address, n.alive) for n in st.nodes],
            shards=[ShardStatus(x.shardId, x.address, x.alive, x.partitions, x.sizeBytes,
                                x.recordsPerS, x.bytesPerS, x.draining, x.node,
                                x.directAddress, x.requestsViaRouter, x.requestsDirect,
                                x.remoteBytes, x.uploadLagBytes, x.uploadLagS, x.uploadErrors,
                                x.drainingReason, x.recordsOutPerS, x.bytesOutPerS, x.pid,
                                x.diskFreeBytes, x.diskTotalBytes, x.diskReserveBytes,
                                x.downReason, x.remotePartitionsNotListed,
                                x.partitionsAppendsFailing)
                    for x in st.shards],
            routers=[(r.address, r.node) for r in st.routers],
            under_replicated_partitions=st.underReplicatedPartitions,
            offline_partitions=st.offlinePartitions,
            node_names={n.nodeId: n.name for n in st.nodes if n.name},
            tier_claim=st.tierClaim, tier_claim_held=st.tierClaimHeld)
    return view


def _error_or_none(error) -> BrokerError | None:
    """A result's own Error: None for code none."""
    code = str(error.code)
    return None if code == "none" else error_for_code(code, error.message, error.beforeWrite,
                                                      error.remoteStorage)


def _group_info(g) -> GroupInfo:
    members = [MemberInfo(m.memberId, m.memberEpoch, list(m.topics), _topic_partitions(m.assignment),
                          m.groupInstanceId, m.clientId, m.clientHost, bytes(m.metadata),
                          bytes(m.assignmentBytes))
               for m in g.members]
    return GroupInfo(g.group, g.assignor, g.epoch, members, _partition_offsets(g.committed),
                     g.protocolType, g.state, g.leader)


def _topic_partitions(entries) -> set[tuple[str, int]]:
    return {(entry.topic, p) for entry in entries for p in entry.partitions}


def _partition_offsets(entries) -> dict[tuple[str, int], int]:
    return {(e.topic, e.partition): e.offset for e in entries}


def _offsets_and_metadata(entries) -> tuple[dict[tuple[str, int], int],
                                            dict[tuple[str, int], str]]:
    """PartitionOffsets as the offsets and, apart, the metadata where not empty (most
    offsets have none, so the offsets keep their plain shape)."""
    offsets, metadata = {}, {}
    for e in entries:
        tp = (e.topic, e.partition)
        offsets[tp] = e.offset
        # Each field read once: every read counts against the reader's traversal limit
        # (the header's size), and a second read of each metadata failed a full header.
        text = e.metadata
        if text:
            metadata[tp] = text
        else:   # a repeated partition: its last entry counts, as for the offset
            metadata.pop(tp, None)
    return offsets, metadata


def _commit_offsets_request(rid: int, b) -> CommitOffsetsRequest:
    offsets, metadata = _offsets_and_metadata(b.offsets)
    return CommitOffsetsRequest(rid, b.group, b.memberId, b.memberEpoch, offsets, b.classic,
                                b.groupInstanceId, metadata)


def _fill_texts(out, texts: list[str]) -> None:
    for i, text in enumerate(texts):
        out[i] = text


def _fill_topic_partitions(parent, name: str, partitions: set[tuple[str, int]]) -> None:
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(partitions):
        by_topic.setdefault(topic, []).append(partition)
    out = parent.init(name, len(by_topic))
    for i, (topic, numbers) in enumerate(by_topic.items()):
        out[i].topic = topic
        _fill_texts(out[i].init("partitions", len(numbers)), numbers)


def _fill_partition_offsets(parent, name: str, offsets: dict[tuple[str, int], int],
                            metadata: dict[tuple[str, int], str] | None = None) -> None:
    """PartitionOffsets, each with its metadata where ``metadata`` has one (of these
    offsets' partitions only: one without an offset is a bug)."""
    out = parent.init(name, len(offsets))
    for i, ((topic, partition), offset) in enumerate(sorted(offsets.items())):
        out[i].topic, out[i].partition, out[i].offset = topic, partition, offset
    if not metadata:
        return
    if not metadata.keys() <= offsets.keys():
        raise AssertionError(f"metadata without an offset for "
                             f"{sorted(metadata.keys() - offsets.keys())[:3]}")
    for i, tp in enumerate(sorted(offsets)):
        if metadata.get(tp):
            out[i].metadata = metadata[tp]


def _topic_info(t) -> TopicInfo:
    return TopicInfo(
        name=t.name, partitions=t.partitions,
        config={e.key: e.value for e in t.config},
        partition_info=[_partition_info(p) for p in t.partitionInfo],
        direct_addresses=list(t.directAddresses), topic_id=t.topicId)


def _partition_info(p) -> PartitionInfo:
    return PartitionInfo(partition=p.partition, shard=p.shard, start_offset=p.startOffset,
                         end_offset=p.endOffset, size_bytes=p.sizeBytes,
                         replicas=list(p.replicas), in_sync_replicas=list(p.inSyncReplicas),
                         leader_epoch=p.leaderEpoch, high_watermark=p.highWatermark,
                         local_start_offset=p.localStartOffset,
                         remote_start_offset=p.remoteStartOffset,
                         remote_end_offset=p.remoteEndOffset, remote_bytes=p.remoteBytes,
                         found_offset=p.foundOffset, found_timestamp_ms=p.foundTimestampMs,
                         remote_not_listed=p.remoteNotListed)


def _fill_config(entries, config: dict[str, str]) -> None:
    for i, (key, value) in enumerate(sorted(config.items())):
        entries[i].key, entries[i].value = key, value


def _fill_partition(out, info: PartitionInfo) -> None:
    out.partition, out.shard = info.partition, info.shard
    out.startOffset, out.endOffset, out.sizeBytes = info.start_offset, info.end_offset, info.size_bytes
    if info.replicas or info.in_sync_replicas:   # describeTopic's: kept off the offsets replies
        _fill_texts(out.init("replicas", len(info.replicas)), info.replicas)
        _fill_texts(out.init("inSyncReplicas", len(info.in_sync_replicas)), info.in_sync_replicas)
    out.leaderEpoch, out.highWatermark = info.leader_epoch, info.high_watermark
    out.localStartOffset, out.remoteBytes = info.local_start_offset, info.remote_bytes
    out.remoteStartOffset, out.remoteEndOffset = info.remote_start_offset, info.remote_end_offset
    out.foundOffset, out.foundTimestampMs = info.found_offset, info.found_timestamp_ms
    if info.remote_not_listed:   # (most replies: none, and no bytes on the wire for it)
        out.remoteNotListed = info.remote_not_listed


# --- Replication: replicaFetch (shard to shard) --------------------------------
# A follower shard's fetch from the partition's leader, and the leader's answer:
# [Reply replicaFetch][a run of whole log entries, as stored]. Not hand-packed:
# one follower fetch carries up to REPLICA_FETCH_BYTES_MAX of entries, so its
# header's encoding is a small share of the work.

NO_DIVERGENCE = -1      # divergingEpoch / divergingEndOffset when the logs agree


class EpochStart(NamedTuple):
    """Leader epoch ``leader_epoch`` wrote from ``start_offset`` on (KIP-101)."""

    leader_epoch: int
    start_offset: int


@dataclass(frozen=True, slots=True)
class ReplicaFetchResult:
    """The leader's answer to a replicaFetch, without its entries (the payload frame).

    ``diverging_epoch`` / ``diverging_end_offset`` (KIP-320): the follower's log
    diverges from the leader's: it truncates to the smaller of
    ``diverging_end_offset`` and its own end of ``diverging_epoch``, and no entries
    come with this answer; NO_DIVERGENCE for both when the logs agree.
    ``epoch_starts``: the leader epochs of the entries sent, each from its first
    offset among them, oldest first."""

    high_watermark: int
    log_start_offset: int
    log_end_offset: int
    diverging_epoch: int = NO_DIVERGENCE
    diverging_end_offset: int = NO_DIVERGENCE
    epoch_starts: tuple[EpochStart, ...] = ()
    # The leader's log start offset for readers (deleteRecords' floor may put it inside
    # a segment; ``log_start_offset`` is where its segments start): followers adopt it.
    log_start_floor: int = 0

    @property
    def diverges(self) -> bool:
        return self.diverging_end_offset != NO_DIVERGENCE


def encode_replica_fetch(request_id: int, topic: str, partition: int, replica_id: str,
                         leader_epoch: int, fetch_offset: int, last_fetched_epoch: int,
                         bytes_max: int, wait_ms_max: int, controller_epoch: int) -> bytes:
    """A follower's fetch (ReplicaFetchRequest's fields, in its order)."""
    msg = protocol.Request.new_message(requestId=request_id)
    body = msg.init("replicaFetch")
    body.topic, body.partition, body.replicaId = topic, partition, replica_id
    body.leaderEpoch, body.fetchOffset = leader_epoch, fetch_offset
    body.lastFetchedEpoch, body.maxBytes, body.maxWaitMs = last_fetched_epoch, bytes_max, wait_ms_max
    body.controllerEpoch = controller_epoch
    return msg.to_bytes()


def encode_replica_fetch_reply(request_id: int, result: ReplicaFetchResult) -> bytes:
    msg = protocol.Reply.new_message(requestId=request_id)
    _fill_replica_fetch_result(msg.init("replicaFetch"), result)
    return msg.to_bytes()


def _fill_replica_fetch_result(body, result: ReplicaFetchResult) -> None:
    body.highWatermark, body.logStartOffset = result.high_watermark, result.log_start_offset
    body.logEndOffset = result.log_end_offset
    body.divergingEpoch = result.diverging_epoch
    body.divergingEndOffset = result.diverging_end_offset
    body.logStartFloor = result.log_start_floor
    starts = body.init("epochStarts", len(result.epoch_starts))
    for i, (leader_epoch, start_offset) in enumerate(result.epoch_starts):
        starts[i].leaderEpoch, starts[i].startOffset = leader_epoch, start_offset


def _replica_fetch_result(r) -> ReplicaFetchResult:
    return ReplicaFetchResult(
        r.highWatermark, r.logStartOffset, r.logEndOffset, r.divergingEpoch,
        r.divergingEndOffset, tuple(EpochStart(e.leaderEpoch, e.startOffset)
                                    for e in r.epochStarts), r.logStartFloor)


@dataclass(frozen=True, slots=True)
class ReplicaFetchPartitionResult:
    """One partition's part of the answer to a replicaFetchAll: ``error`` (this
    partition refused: notLeader, fencedLeaderEpoch, ...) or ``result``, and the
    length of its entries in the payload frame, which holds every partition's
    one after another in the request's order."""

    error: BrokerError | None
    result: ReplicaFetchResult | None
    entries_bytes: int = 0


def encode_replica_fetch_all(request_id: int, replica_id: str, controller_epoch: int,
                             wait_ms_max: int, bytes_max: int,
                             partitions: list[ReplicaFetchPartition]) -> bytes:
    """A follower's fetch of every partition it follows on one leader."""
    msg = protocol.Request.new_message(requestId=request_id)
    body = msg.init("replicaFetchAll")
    body.replicaId, body.controllerEpoch = replica_id, controller_epoch
    body.maxWaitMs, body.maxBytes = wait_ms_max, bytes_max
    out = body.init("partitions", len(partitions))
    for i, p in enumerate(partitions):
        o = out[i]
        o.topic, o.partition, o.leaderEpoch = p.topic, p.partition, p.leader_epoch
        o.fetchOffset, o.lastFetchedEpoch, o.maxBytes = \
            p.fetch_offset, p.last_fetched_epoch, p.bytes_max
        o.logStartOffset, o.appendFailed = p.log_start_offset, p.append_failed
    return msg.to_bytes()


def encode_replica_fetch_all_reply(request_id: int,
                                   results: list[ReplicaFetchPartitionResult]) -> bytes:
    """The leader's answer, one result per partition in the request's order."""
    msg = protocol.Reply.new_message(requestId=request_id)
    out = msg.init("replicaFetchAll", len(results))
    for i, r in enumerate(results):
        o = out[i]
        if r.error is not None:
            o.error.code, o.error.message = r.error.code_name, r.error.message
            continue
        _fill_replica_fetch_result(o.result, r.result)
        o.entriesBytes = r.entries_bytes
    return msg.to_bytes()


def _replica_fetch_partition_result(r) -> ReplicaFetchPartitionResult:
    code = str(r.error.code)
    if code != "none":
        return ReplicaFetchPartitionResult(error_for_code(code, r.error.message), None)
    return ReplicaFetchPartitionResult(None, _replica_fetch_result(r.result), r.entriesBytes)
