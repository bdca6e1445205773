"""The one tree of errors users can cause, and the wire codes for them.

Any process may import this module. Programmer errors (broken invariants) are
``AssertionError`` and crash loudly; everything here is a condition a user or
the environment causes and is expected, handled and reported.

    PlinthError
    ├── BrokerError                 carries a wire ErrorCode (protocol.capnp)
    │   ├── MalformedRequestError   malformedRequest
    │   │   └── KafkaDecodeError    a Kafka request frame does not decode (router/kafka/):
    │   │       │                   names the field path, the position and the length
    │   │       └── KafkaUnsupportedVersionError  an API key or version the Kafka
    │   │                           listener does not serve; carries the decoded header
    │   ├── UnknownTopicError       unknownTopic
    │   ├── PartitionOutOfRangeError partitionOutOfRange
    │   ├── OffsetOutOfRangeError   offsetOutOfRange
    │   │   └── RecordNotFoundError  a console permalink's offset holds no record (the
    │   │                           console's 404; never on the wire): names the range
    │   ├── RecordTooLargeError     recordTooLarge
    │   ├── RequestTooLargeError    requestTooLarge
    │   ├── InvalidBatchError       invalidBatch
    │   ├── TopicExistsError        topicExists
    │   ├── InvalidTopicError       invalidTopic
    │   ├── InvalidConfigError      invalidConfig
    │   ├── TooManyTopicsError      tooManyTopics
    │   ├── StorageError            storageError
    │   │   ├── DiskReserveRefusedError storageError, refused before anything was
    │   │   │                       written (the shard's disk reserve): nothing stored
    │   │   └── RemoteStorageError  storageError: object storage refused for good
    │   │       ├── RemoteObjectNotFoundError
    │   │       ├── RemoteAccessDeniedError
    │   │       └── RemoteObjectExistsError   a conditional put found the object
    │   ├── CorruptDataError        corruptData
    │   ├── UnavailableError        unavailable
    │   │   ├── RemoteStorageUnavailableError  unavailable: object storage down,
    │   │   │                       timed out or 5xx; retriable
    │   │   ├── TierStoreNotOwnedError  unavailable: a shard's deletion in object storage
    │   │   │                       waits: its data dir's claim names another start
    │   │   │                       (shards/tier/store_claim.py)
    │   │   └── ShardRestartingError  unavailable: a shard actor Ray is restarting
    │   │                           (it keeps its name: adopt it, start no other)
    │   ├── RequestTimedOutError    requestTimedOut
    │   ├── InternalError           internalError
    │   ├── TooManyRequestsError    tooManyRequests
    │   ├── UnknownMemberIdError    unknownMemberId
    │   ├── StaleMemberEpochError   staleMemberEpoch
    │   ├── NotOwnerError           notOwner
    │   ├── GroupNotEmptyError      groupNotEmpty
    │   ├── InvalidGroupError       invalidGroup
    │   ├── UnknownGroupError       unknownGroup
    │   ├── OutOfOrderSequenceError outOfOrderSequence
    │   ├── InvalidProducerEpochError invalidProducerEpoch: a fenced (older) producer epoch
    │   ├── NotAuthorizedError      notAuthorized
    │   ├── InvalidTimestampError   invalidTimestamp
    │   ├── GroupMaxSizeReachedError groupMaxSizeReached
    │   ├── TooManyGroupsError      tooManyGroups
    │   ├── TooManyProducersError   tooManyProducers
    │   ├── NotEnoughReplicasError  notEnoughReplicas: appended, the in-sync set then
    │   │   │                       too small to hold it (Kafka's ..._AFTER_APPEND)
    │   │   └── NotEnoughReplicasBeforeWriteError notEnoughReplicas, refused before
    │   │                           anything was written: nothing stored
    │   ├── NotLeaderError          notLeader
    │   ├── FencedLeaderEpochError  fencedLeaderEpoch
    │   ├── InvalidReplicationFactorError invalidReplicationFactor
    │   ├── RebalanceInProgressError rebalanceInProgress (Kafka's classic groups)
    │   ├── FencedInstanceIdError   fencedInstanceId (Kafka's classic groups)
    │   ├── InconsistentGroupProtocolError inconsistentGroupProtocol
    │   ├── InvalidPartitionsError  invalidPartitions: a partition count a topic cannot take
    │   ├── ElectionNotNeededError  electionNotNeeded: the partition has the leader asked for
    │   ├── PreferredLeaderNotAvailableError preferredLeaderNotAvailable
    │   ├── EligibleLeadersNotAvailableError eligibleLeadersNotAvailable
    │   ├── OffsetMetadataTooLargeError offsetMetadataTooLarge: a commit's metadata over
    │   │                           OFFSET_METADATA_BYTES_MAX (refuses the whole commit)
    │   └── GroupSubscribedToTopicError groupSubscribedToTopic: deleteOffsets of a topic
    │                               the group's active members subscribe to (that partition)
    ├── SaslAuthenticationError     a Kafka client's SASL login failed (router/kafka/sasl_*.py):
    │                               names the mechanism and the user, never the password
    └── ClientError                 raised by the client library itself
        ├── PlinthTimeoutError      a client-side timeout ran out
        │   └── ProducerBufferFullError buffer_memory full for max_block_ms
        ├── ClosedError             the producer/consumer/admin was closed
        ├── PartitionNotAssignedError  a consumer call for a partition it is not assigned
        │                           (kafka-python's IllegalStateError): names it and what
        │                           is assigned; also a ValueError
        ├── CommitFailedError       a commit by a group member that left the group because
        │                           its application did not poll within
        │                           max_poll_interval_ms (kafka-python's name): says how long
        ├── HandshakeRefusedError   the broker ended the connection's handshake for good:
        │                           it refused the client's CurveZMQ key, or one side uses
        │                           CurveZMQ and the other not (client/handshake_watch.py)
        ├── WrongEventLoopError     an asyncio client called on an event loop other than
        │                           the one it was started on; also a RuntimeError
        ├── MalformedReplyError     what came back is not a valid Reply
        ├── UnsupportedVersionError  the broker is an older Plinth whose protocol lacks
        │                           what a call needs (it would ignore a guard, or not
        │                           answer): names the call and both protocol versions;
        │                           nothing was sent
        ├── RecordDeserializationError  a consumer's key or value deserializer raised:
        │                           names the topic, partition and offset (attributes
        │                           too), the cause chained; seek past it to skip it
        ├── InputTooLongError       a user's input to the console (a filter, a plan) is
        │                           over its limit; also a ValueError
        ├── StaleConfirmationError  a console change posted with a confirmation token
        │                           that does not bind it (another plan, user or
        │                           console) or has expired; also a ValueError
        └── TooManyGroupsWatchedError  a live-lag stream for one group more than the
                                    console samples at once (client/console/lag_watch.py)

The numeric codes live in ``schemas/protocol.capnp`` (enum ErrorCode); this
module maps each code to its class, both ways.
"""

from __future__ import annotations

from pathlib import Path


class PlinthError(Exception):
    """Base of every error Plinth raises on purpose."""


class BrokerError(PlinthError):
    """An error with a stable wire code, raised on the broker or relayed to a client.
    ``before_write``: the broker refused before writing anything of the request (on
    the wire, Error's beforeWrite), so a client may count it as not stored."""

    code_name = "internalError"
    before_write = False
    remote_storage = False   # from tiered storage's object store (Error.remoteStorage)

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class MalformedRequestError(BrokerError):
    code_name = "malformedRequest"


class KafkaDecodeError(MalformedRequestError):
    """Bytes on the Kafka listener that do not decode as the message they claim to be.

    Raised by router/kafka/wire.py at the read that failed, with the position and
    the length of the buffer; each enclosing field adds its name on the way out
    (``add_field``) and the codec names the message (``context``), so the message
    reads "Fetch v12 request: topics[0].partitions[2].fetch_offset: needs 8 bytes at
    position 57 of 60". The listener closes the connection that sent it."""

    def __init__(self, reason: str, position: int, length: int):
        self.reason = reason
        self.position = position
        self.length = length
        self.path: list[str] = []      # innermost field first; reversed when shown
        self.context = ""
        super().__init__(reason)

    def add_field(self, name: str) -> None:
        self.path.append(name)

    def __str__(self) -> str:
        path = ""
        for part in reversed(self.path):
            path += part if part.startswith("[") or not path else "." + part
        where = f"{self.context}: " if self.context else ""
        field = f"{path}: " if path else ""
        return f"{where}{field}{self.reason} at position {self.position} of {self.length} bytes"

    @property
    def message(self) -> str:   # BrokerError's attribute, kept in step with the path
        return str(self)

    @message.setter
    def message(self, value: str) -> None:
        pass


class KafkaUnsupportedVersionError(KafkaDecodeError):
    """A Kafka request for an API key the listener does not know, or a version
    outside the range it advertises. ``header`` is the decoded RequestHeader
    (router/kafka/codec.py): an ApiVersions request gets Kafka's UNSUPPORTED_VERSION
    answer in version 0 (so that the client learns the ranges); any other closes
    the connection, as Kafka does."""

    def __init__(self, reason: str, position: int, length: int, header):
        super().__init__(reason, position, length)
        self.header = header


class UnknownTopicError(BrokerError):
    code_name = "unknownTopic"


class UnknownTopicIdError(BrokerError):
    """A change guarded by a topic id (deleteTopic with ``topicId``, Kafka's
    UNKNOWN_TOPIC_ID) found the topic under that name with another id: it was deleted
    and created again since the id was read. Names the topic and both ids; nothing
    is changed."""

    code_name = "unknownTopicId"


class PartitionOutOfRangeError(BrokerError):
    code_name = "partitionOutOfRange"


class OffsetOutOfRangeError(BrokerError):
    code_name = "offsetOutOfRange"


class RecordNotFoundError(OffsetOutOfRangeError):
    """The console was asked for the record at an offset that holds none (past the
    partition's end, before its start, or in a gap): what a link names does not
    exist, so its page is a 404, where an offset to browse from out of range is bad
    input (400). Names the partition and the offsets it holds. Raised in the
    console's process only; the wire knows it as offsetOutOfRange."""


class RecordTooLargeError(BrokerError):
    code_name = "recordTooLarge"


class RequestTooLargeError(BrokerError):
    code_name = "requestTooLarge"


class InvalidBatchError(BrokerError):
    code_name = "invalidBatch"


class TopicExistsError(BrokerError):
    code_name = "topicExists"


class InvalidTopicError(BrokerError):
    code_name = "invalidTopic"


class InvalidConfigError(BrokerError):
    code_name = "invalidConfig"


class TooManyTopicsError(BrokerError):
    code_name = "tooManyTopics"


class StorageError(BrokerError):
    code_name = "storageError"


class DiskReserveRefusedError(StorageError):
    """A produce a shard refused before appending it: its disk reserve
    (shards/disk_reserve.py) would have been reached, or the file system's free space
    could not be read. Nothing of that attempt was written, where any other
    StorageError may come from a write or an fsync that failed after bytes went to the
    log. Its wire code is storageError (a client before it reads it as one), with
    Error.beforeWrite set."""

    before_write = True


class CorruptDataError(BrokerError):
    """Stored bytes that fail their checks. ``path`` and ``position``: the file and the
    byte where a read found them, when the raiser knows (None otherwise; a shard logs
    each place once, shards/partition_log.py). Neither crosses the wire."""

    code_name = "corruptData"

    def __init__(self, message: str, *, path: Path | None = None,
                 position: int | None = None):
        super().__init__(message)
        self.path = path
        self.position = position


class UnavailableError(BrokerError):
    code_name = "unavailable"


class RemoteStorageError(StorageError):
    """Object storage (tiered storage, shards/tier/) refused a call for good: retrying
    the same call will not help. Names the store's URL and the object. Its wire code
    is storageError, with Error.remoteStorage set."""

    remote_storage = True


class RemoteObjectNotFoundError(RemoteStorageError):
    """The object (or its bucket) does not exist."""


class RemoteAccessDeniedError(RemoteStorageError):
    """The store refused the credentials, or they lack the permission."""


class RemoteObjectExistsError(RemoteStorageError):
    """A put "if absent" found the object already there."""


class RemoteStorageUnavailableError(UnavailableError):
    """Object storage did not answer in time, could not be reached, or answered
    5xx (after the store's own bounded retries). Transient: a client retries it as
    any "unavailable"; a shard's upload retries with backoff. Its wire code is
    unavailable, with Error.remoteStorage set."""

    remote_storage = True


class TierStoreNotOwnedError(UnavailableError):
    """A shard's deletion in object storage waits: the store's claim for its data dir
    names another start (a copy of the data dir), or its lease ran out
    (shards/tier/store_claim.py). Names the store and who claims it."""


class ShardRestartingError(UnavailableError):
    """Ray reports a shard actor temporarily unavailable (ActorUnavailableError): its
    process died and Ray is restarting it, or it cannot be reached for now. The actor
    still holds its name, so a controller that finds it by name adopts it: another
    actor of that name cannot start (control/shard_set.py). Transient, as any
    "unavailable"."""


class RequestTimedOutError(BrokerError):
    code_name = "requestTimedOut"


class InternalError(BrokerError):
    code_name = "internalError"


class TooManyRequestsError(BrokerError):
    code_name = "tooManyRequests"


class UnknownMemberIdError(BrokerError):
    code_name = "unknownMemberId"


class StaleMemberEpochError(BrokerError):
    code_name = "staleMemberEpoch"


class NotOwnerError(BrokerError):
    code_name = "notOwner"


class GroupNotEmptyError(BrokerError):
    code_name = "groupNotEmpty"


class InvalidGroupError(BrokerError):
    code_name = "invalidGroup"


class UnknownGroupError(BrokerError):
    code_name = "unknownGroup"


class OutOfOrderSequenceError(BrokerError):
    code_name = "outOfOrderSequence"


class InvalidProducerEpochError(BrokerError):
    """A batch in an epoch older than its producer's last one on the partition (a Kafka
    client fenced by its own epoch bump, shards/producer_state.py)."""

    code_name = "invalidProducerEpoch"


class NotAuthorizedError(BrokerError):
    code_name = "notAuthorized"


class InvalidTimestampError(BrokerError):
    code_name = "invalidTimestamp"


class GroupMaxSizeReachedError(BrokerError):
    code_name = "groupMaxSizeReached"


class TooManyGroupsError(BrokerError):
    code_name = "tooManyGroups"


class TooManyProducersError(BrokerError):
    code_name = "tooManyProducers"


class NotEnoughReplicasError(BrokerError):
    """acks="all" with fewer in-sync replicas than min.insync.replicas: names the
    partition, the in-sync set and the minimum. Retriable."""

    code_name = "notEnoughReplicas"


class NotEnoughReplicasBeforeWriteError(NotEnoughReplicasError):
    """An acks="all" produce refused before it was appended: the in-sync set was
    already smaller than min.insync.replicas. Nothing of it was written, where a
    NotEnoughReplicasError answering a produce that waited was appended first (Kafka's
    NOT_ENOUGH_REPLICAS and NOT_ENOUGH_REPLICAS_AFTER_APPEND). Its wire code is
    notEnoughReplicas (a client before it reads it as one), with Error.beforeWrite set."""

    before_write = True


class NotLeaderError(BrokerError):
    """The shard does not lead the partition (any more): the router refreshes its
    routing table and the client retries."""

    code_name = "notLeader"


class FencedLeaderEpochError(BrokerError):
    """A request carries an older leader epoch or controller epoch than the shard knows."""

    code_name = "fencedLeaderEpoch"


class InvalidReplicationFactorError(BrokerError):
    code_name = "invalidReplicationFactor"


class RebalanceInProgressError(BrokerError):
    """A classic group (Kafka's protocol) is rebalancing: its member rejoins."""

    code_name = "rebalanceInProgress"


class FencedInstanceIdError(BrokerError):
    """A classic group's static member was replaced by a newer one with its instance id."""

    code_name = "fencedInstanceId"


class InconsistentGroupProtocolError(BrokerError):
    """A group is used with the other group protocol (Plinth's or Kafka's classic) than
    the one its members joined with."""

    code_name = "inconsistentGroupProtocol"


class InvalidPartitionsError(BrokerError):
    """A topic cannot take this partition count: fewer than it has (partitions are
    never removed), the same count, or any change of an internal topic's."""

    code_name = "invalidPartitions"


class ElectionNotNeededError(BrokerError):
    """electLeaders: the partition is led by the replica the election would choose
    (its preferred leader; any leader, for an unclean one), or has one copy."""

    code_name = "electionNotNeeded"


class PreferredLeaderNotAvailableError(BrokerError):
    """electLeaders (preferred): the partition's preferred leader may not lead now: its
    shard does not answer, it is not in sync, or it did not catch up with the
    leader's log end within the hand-over's bound."""

    code_name = "preferredLeaderNotAvailable"


class EligibleLeadersNotAvailableError(BrokerError):
    """electLeaders (unclean): no replica of an offline partition answers."""

    code_name = "eligibleLeadersNotAvailable"


class OffsetMetadataTooLargeError(BrokerError):
    """A commit (or reset) carries metadata for an offset longer than
    OFFSET_METADATA_BYTES_MAX UTF-8 bytes (Kafka's offset.metadata.max.bytes): names
    the group, the partition, the size and the limit. Plinth refuses the whole
    commit, where Kafka refuses only that partition's offset."""

    code_name = "offsetMetadataTooLarge"


class GroupSubscribedToTopicError(BrokerError):
    """deleteOffsets (Kafka's OffsetDelete) of a partition whose topic the group's
    active members subscribe to: that offset is kept (the others of the request are
    deleted), as Kafka's GROUP_SUBSCRIBED_TO_TOPIC. Names the group, the partition
    and the members."""

    code_name = "groupSubscribedToTopic"


class SaslAuthenticationError(PlinthError):
    """A Kafka client's SASL login failed: an unknown user, a wrong password or proof,
    or a message that breaks the mechanism's rules. The Kafka listener answers it
    SASL_AUTHENTICATION_FAILED with this message and logs it with the peer."""


class ClientError(PlinthError):
    """Raised by the client library without a broker reply."""


class PlinthTimeoutError(ClientError, TimeoutError):
    """A client-side timeout (request_timeout_ms, max_block_ms, ...) ran out."""


class ProducerBufferFullError(PlinthTimeoutError):
    """A producer's buffer_memory stayed full for max_block_ms (a PlinthTimeoutError, as
    the sync producer always raised it; the asyncio producer tells it apart to await
    room on its event loop instead of blocking it)."""


class ClosedError(ClientError):
    """The producer, consumer or admin client was already closed."""


class PartitionNotAssignedError(ClientError, ValueError):
    """A consumer call (pause, resume, seek, position, highwater) for a partition the
    consumer is not assigned, where kafka-python and aiokafka raise IllegalStateError:
    names the partition and the partitions assigned. Also a ValueError, what these
    calls raised before it had a name of its own."""


class CommitFailedError(ClientError):
    """A group member's commit after it left the group because poll() (getmany()) was
    not called within max_poll_interval_ms, before the next poll() rejoined: its
    partitions may be another member's now (kafka-python's and Kafka's
    CommitFailedError). Says how long the consumer went without polling."""


class HandshakeRefusedError(ClientError):
    """The broker ended the client's handshake for good (libzmq does not reconnect
    after it): it refused the client's CurveZMQ key, or one side uses CurveZMQ and
    the other does not. Raised instead of waiting out a timeout."""


class WrongEventLoopError(ClientError, RuntimeError):
    """An asyncio client (client/aio/) was called on an event loop other than the one
    it was started on: its tasks, futures and locks belong to that loop, which is
    closed, not running, or running in another thread (aiokafka's clients are bound
    to their loop alike). Raised at once, naming the client and the call; also a
    RuntimeError, as asyncio's own "attached to a different loop" errors are."""


class MalformedReplyError(ClientError):
    """The broker's answer does not decode as a Reply (a client connected to
    something that is not a Plinth router, or a bug)."""


class UnsupportedVersionError(ClientError):
    """A call needs a broker of a later protocol version (plinth/protocol.py
    PROTOCOL_VERSION) than the one connected: an older Plinth would ignore the
    call's guard (a delete's topic id, a create's validate_only) or not answer it
    (Kafka's UnsupportedVersionException, which its clients raise from ApiVersions).
    Raised before the call is sent, naming it and both versions."""


class RecordDeserializationError(ClientError):
    """A consumer's key_deserializer or value_deserializer raised on a record (Kafka's
    RecordDeserializationException). ``topic``, ``partition`` and ``offset`` name the
    record; the deserializer's exception is the ``__cause__``. The records before it
    are handed out first; then each poll raises this again, the position left at the
    record, until the application seeks past it (``offset + 1``) to skip it."""

    def __init__(self, topic: str, partition: int, offset: int, field: str,
                 cause: BaseException):
        super().__init__(f"the {field}_deserializer raised on the record at offset {offset} "
                         f"of {topic}-{partition}: {type(cause).__name__}: {cause}; to skip "
                         f"the record, seek to offset {offset + 1}")
        self.topic, self.partition, self.offset = topic, partition, offset


class InputTooLongError(ClientError, ValueError):
    """Something a user typed or a link carries (a console filter, a reset plan) is
    longer than its limit in plinth/limits.py: names it, its size and the limit,
    and is refused before anything is asked of the broker."""


class StaleConfirmationError(ClientError, ValueError):
    """A change posted to the console (client/console/confirm_tokens.py) whose token
    was not made for exactly this plan, by this user, by this console process, or
    has expired (CONSOLE_CONFIRM_TOKEN_S): nothing is applied, and the page says to
    confirm again."""


class TooManyGroupsWatchedError(ClientError):
    """A console stream for one group more than it samples the lag of at once
    (CONSOLE_LAG_GROUPS_MAX): shown as a message on the page, naming the limit."""


BROKER_ERRORS: dict[str, type[BrokerError]] = {
    cls.code_name: cls
    for cls in (
        MalformedRequestError, UnknownTopicError, PartitionOutOfRangeError,
        OffsetOutOfRangeError, RecordTooLargeError, RequestTooLargeError,
        InvalidBatchError, TopicExistsError, InvalidTopicError,
        InvalidConfigError, TooManyTopicsError, StorageError, CorruptDataError,
        UnavailableError, RequestTimedOutError, InternalError,
        TooManyRequestsError, UnknownMemberIdError, StaleMemberEpochError, NotOwnerError,
        GroupNotEmptyError, InvalidGroupError, UnknownGroupError, OutOfOrderSequenceError,
        NotAuthorizedError, InvalidTimestampError, GroupMaxSizeReachedError, TooManyGroupsError,
        TooManyProducersError, NotEnoughReplicasError, NotLeaderError, FencedLeaderEpochError,
        InvalidReplicationFactorError, RebalanceInProgressError, FencedInstanceIdError,
        InconsistentGroupProtocolError, InvalidPartitionsError, ElectionNotNeededError,
        PreferredLeaderNotAvailableError, EligibleLeadersNotAvailableError,
        InvalidProducerEpochError, OffsetMetadataTooLargeError, UnknownTopicIdError,
        GroupSubscribedToTopicError,
    )
}


# Conditions that pass by themselves (a shard restarting or moving, a full queue, a
# slow disk): clients retry them with backoff instead of surfacing them at once.
TRANSIENT_ERRORS: tuple[type[BrokerError], ...] = (
    UnavailableError, TooManyRequestsError, RequestTimedOutError, TooManyProducersError,
    NotEnoughReplicasError, NotLeaderError)


# The class for a wire code whose Error says beforeWrite (a code not here: its usual
# class, the flag ignored).
BEFORE_WRITE_ERRORS: dict[str, type[BrokerError]] = {
    cls.code_name: cls for cls in (DiskReserveRefusedError, NotEnoughReplicasBeforeWriteError)
}


# The class for a wire code whose Error says remoteStorage (likewise).
REMOTE_STORAGE_ERRORS: dict[str, type[BrokerError]] = {
    cls.code_name: cls for cls in (RemoteStorageError, RemoteStorageUnavailableError)
}


def error_for_code(code_name: str, message: str, before_write: bool = False,
                   remote_storage: bool = False) -> BrokerError:
    """The exception for a wire error code (and its Error's beforeWrite and
    remoteStorage); unknown codes become InternalError."""
    cls = BEFORE_WRITE_ERRORS.get(code_name) if before_write else None
    cls = cls or (REMOTE_STORAGE_ERRORS.get(code_name) if remote_storage else None)
    cls = cls or BROKER_ERRORS.get(code_name, InternalError)
    return cls(message if cls is not InternalError or code_name == "internalError"
               else f"unknown error code {code_name!r}: {message}")
