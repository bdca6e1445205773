"""Plinth's errors as Kafka error codes, for the Kafka listener's answers.

Any thread. Each Plinth wire code (schemas/protocol.capnp's ErrorCode) maps to
the Kafka error a Kafka client handles the same way: retriable where Plinth's
is retriable (unavailable -> NOT_LEADER_OR_FOLLOWER, so the client refreshes
its metadata and retries), fatal where it is fatal. The numbers are Kafka's
(Errors.java); the names are those of router/kafka/error_codes.py.

An error from tiered storage's object store (Error.remoteStorage: a fetch or a
look-up by time below the local log start whose remote read failed) is
UNKNOWN_SERVER_ERROR whatever its code, as Kafka answers a failed remote read
(RemoteLogReader's error, through Errors.forException): the Java consumer and
kafka-python log it and fetch again, librdkafka hands it to the application.
As NOT_LEADER_OR_FOLLOWER (its code, unavailable) or KAFKA_STORAGE_ERROR, every
client took it for a leader change and retried without a word: a consumer
reading old offsets while the store was down got nothing and no error, for as
long as it waited (tester T-rk, session 43).
"""

from __future__ import annotations

import re

from plinth.errors import BrokerError, NotAuthorizedError, PlinthTimeoutError
from plinth.router.kafka import error_codes as kafka

# Plinth code name -> Kafka error code. The classic group APIs' own answers
# carry Kafka's codes already (protocol_classic.py); these are the rest.
_BY_PLINTH_CODE = {
    "malformedRequest": kafka.INVALID_REQUEST,
    "unknownTopic": kafka.UNKNOWN_TOPIC_OR_PARTITION,
    "unknownTopicId": kafka.UNKNOWN_TOPIC_ID,
    "partitionOutOfRange": kafka.UNKNOWN_TOPIC_OR_PARTITION,
    "offsetOutOfRange": kafka.OFFSET_OUT_OF_RANGE,
    "offsetMetadataTooLarge": kafka.OFFSET_METADATA_TOO_LARGE,
    "recordTooLarge": kafka.MESSAGE_TOO_LARGE,
    "requestTooLarge": kafka.RECORD_LIST_TOO_LARGE,
    "invalidBatch": kafka.CORRUPT_MESSAGE,
    "corruptData": kafka.CORRUPT_MESSAGE,
    "topicExists": kafka.TOPIC_ALREADY_EXISTS,
    "invalidTopic": kafka.INVALID_TOPIC_EXCEPTION,
    "invalidConfig": kafka.INVALID_CONFIG,
    "tooManyTopics": kafka.POLICY_VIOLATION,
    "storageError": kafka.KAFKA_STORAGE_ERROR,
    "unavailable": kafka.NOT_LEADER_OR_FOLLOWER,
    "notLeader": kafka.NOT_LEADER_OR_FOLLOWER,
    "fencedLeaderEpoch": kafka.FENCED_LEADER_EPOCH,
    "requestTimedOut": kafka.REQUEST_TIMED_OUT,
    "internalError": kafka.UNKNOWN_SERVER_ERROR,
    "tooManyRequests": kafka.THROTTLING_QUOTA_EXCEEDED,
    "outOfOrderSequence": kafka.OUT_OF_ORDER_SEQUENCE_NUMBER,
    "invalidProducerEpoch": kafka.INVALID_PRODUCER_EPOCH,
    "notAuthorized": kafka.TOPIC_AUTHORIZATION_FAILED,
    "invalidTimestamp": kafka.INVALID_TIMESTAMP,
    "tooManyProducers": kafka.NOT_ENOUGH_REPLICAS,   # retriable: the client backs off
    "notEnoughReplicas": kafka.NOT_ENOUGH_REPLICAS,
    "invalidReplicationFactor": kafka.INVALID_REPLICATION_FACTOR,
    "unknownMemberId": kafka.UNKNOWN_MEMBER_ID,
    "staleMemberEpoch": kafka.ILLEGAL_GENERATION,
    "rebalanceInProgress": kafka.REBALANCE_IN_PROGRESS,
    "fencedInstanceId": kafka.FENCED_INSTANCE_ID,
    "inconsistentGroupProtocol": kafka.INCONSISTENT_GROUP_PROTOCOL,
    "invalidPartitions": kafka.INVALID_PARTITIONS,
    "electionNotNeeded": kafka.ELECTION_NOT_NEEDED,
    "preferredLeaderNotAvailable": kafka.PREFERRED_LEADER_NOT_AVAILABLE,
    "eligibleLeadersNotAvailable": kafka.ELIGIBLE_LEADERS_NOT_AVAILABLE,
    "notOwner": kafka.UNKNOWN_MEMBER_ID,
    "groupNotEmpty": kafka.NON_EMPTY_GROUP,
    "invalidGroup": kafka.INVALID_GROUP_ID,
    "unknownGroup": kafka.GROUP_ID_NOT_FOUND,
    "groupSubscribedToTopic": kafka.GROUP_SUBSCRIBED_TO_TOPIC,
    "groupMaxSizeReached": kafka.GROUP_MAX_SIZE_REACHED,
    "tooManyGroups": kafka.COORDINATOR_NOT_AVAILABLE,
}


def kafka_code(error: BaseException | None) -> int:
    """The Kafka error code for a Plinth error (None: NONE)."""
    if error is None:
        return kafka.NONE
    if isinstance(error, PlinthTimeoutError):
        return kafka.REQUEST_TIMED_OUT
    if isinstance(error, NotAuthorizedError):
        return _refused(str(error))
    if isinstance(error, BrokerError) and not error.remote_storage:
        return _BY_PLINTH_CODE.get(error.code_name, kafka.UNKNOWN_SERVER_ERROR)
    return kafka.UNKNOWN_SERVER_ERROR


def kafka_message(error: BaseException | None) -> str | None:
    """The message that goes with it in answers that carry one."""
    return None if error is None else str(error)


# router/acl.py's refusals: "... may not <doing> topic '<name>' ...", "... may
# not <doing> group '<name>' ...", "... it needs a grant of the cluster operation";
# <doing> is one or two words ("produce to", "administer").
_REFUSED_RESOURCE = re.compile(r" may not \w+(?: \w+)? (topic|group) '")


def _refused(message: str) -> int:
    """The Kafka authorization error for a refusal of the ACL (router/acl.py): on a
    group, on the cluster, else on a topic. The message is the ACL's own; a name
    that mimics its wording only changes the code its own client sees."""
    if message.endswith("the cluster operation"):
        return kafka.CLUSTER_AUTHORIZATION_FAILED
    found = _REFUSED_RESOURCE.search(message)
    if found is not None and found.group(1) == "group":
        return kafka.GROUP_AUTHORIZATION_FAILED
    return kafka.TOPIC_AUTHORIZATION_FAILED
