"""ElectLeaders: Kafka's preferred and unclean leader elections, from Plinth's
electLeaders (the controller runs them: control/leader_elections.py).

Runs on the Kafka listener's event loop thread (gateway.py). One Plinth
electLeaders carries the whole request: its election type (v0 has none:
preferred) and its partitions, or every partition of every topic for a null
``topic_partitions``. Each partition is answered with the error code and
message of its ElectionResult, grouped by topic: NONE (elected; message null),
ELECTION_NOT_NEEDED (84: it has that leader already, or one copy),
PREFERRED_LEADER_NOT_AVAILABLE (80), ELIGIBLE_LEADERS_NOT_AVAILABLE (83),
UNKNOWN_TOPIC_OR_PARTITION (no such topic or partition; a negative partition
is answered so here, unasked, as the wire's UInt32 cannot carry it). A null
``topic_partitions`` is answered only with the partitions elected or refused,
not those that needed no election, as Kafka's controller answers it.

A request refused as a whole is answered as Kafka's ``getErrorResponse``: the
top-level error code (v1+) and, on every partition the request names (none
for a null one), that code and its message. So are an election type other
than 0 (preferred) or 1 (unclean) (INVALID_REQUEST, asked of no one), a
request whose partitions do not fit one Plinth request header (INVALID_REQUEST,
naming its size and HEADER_BYTES_MAX), and a Plinth error for the whole
request: CLUSTER_AUTHORIZATION_FAILED where the user lacks the ``cluster``
grant (electLeaders needs it, as Kafka's ElectLeaders needs ALTER on the
cluster, and nothing on the topics), REQUEST_TIMED_OUT where no answer came
within the request's ``timeout_ms`` (at most KAFKA_ELECT_LEADERS_WAIT_MS_MAX;
the election may still finish).
"""

from __future__ import annotations

import logging

from plinth import limits, protocol
from plinth.errors import ElectionNotNeededError
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.backend import ask
from plinth.router.kafka.plinth_errors import kafka_code, kafka_message

log = logging.getLogger(__name__)

# One partition's answer: (topic, partition, Kafka error code, message or None).
Outcome = tuple[str, int, int, str | None]


async def elect_leaders(gateway, header, body: dict, connection) -> dict:
    election_type = body.get("election_type", protocol.ELECTION_PREFERRED)
    wanted = body["topic_partitions"]
    asked = None if wanted is None else [(t["topic"], p) for t in wanted
                                         for p in t["partitions"]]
    # A negative partition is not asked: the wire cannot carry it, and it is not there.
    plinth_asked = None if asked is None else sorted({(t, p) for t, p in asked if p >= 0})
    refusal = _request_refusal(election_type, plinth_asked)
    if refusal is not None:
        log.info("Kafka ElectLeaders from %s refused: %s", header.client_id, refusal)
        return _whole_request_error(asked, kafka.INVALID_REQUEST, refusal)
    reply, _ = await ask(gateway.backend, lambda rid: protocol.encode_elect_leaders(
        rid, election_type, plinth_asked), timeout_ms=_wait_ms(body))
    if reply.error is not None:
        return _whole_request_error(asked, kafka_code(reply.error), kafka_message(reply.error))
    outcomes = [(e.topic, e.partition, kafka_code(e.error), kafka_message(e.error))
                for e in reply.elections
                if asked is not None or not isinstance(e.error, ElectionNotNeededError)]
    outcomes += [(t, p, kafka.UNKNOWN_TOPIC_OR_PARTITION,
                  f"topic {t!r} has no partition {p}: a partition index is not negative")
                 for t, p in sorted(set(asked or ())) if p < 0]
    return _response(kafka.NONE, outcomes)


def _request_refusal(election_type: int, partitions: list[tuple[str, int]] | None) -> str | None:
    """Why the whole request is INVALID_REQUEST, or None."""
    if election_type not in protocol.ELECTION_TYPES.values():
        return (f"election type {election_type} is neither {protocol.ELECTION_PREFERRED} "
                f"(preferred) nor {protocol.ELECTION_UNCLEAN} (unclean)")
    # The router would refuse a header this big as requestTooLarge, which Kafka's codes
    # can only call RECORD_LIST_TOO_LARGE; measured here, it is refused naming why.
    size_bytes = len(protocol.encode_elect_leaders(0, election_type, partitions))
    if size_bytes > limits.HEADER_BYTES_MAX:
        return (f"an election of {len(partitions or ())} partitions is {size_bytes} bytes, "
                f"over the request header limit of {limits.HEADER_BYTES_MAX}: ask for fewer "
                f"partitions at once")
    return None


def _wait_ms(body: dict) -> int:
    """How long to wait for the election: the request's timeout_ms, at most the limit."""
    timeout_ms = body.get("timeout_ms", 0)
    return min(timeout_ms, limits.KAFKA_ELECT_LEADERS_WAIT_MS_MAX) if timeout_ms > 0 \
        else limits.KAFKA_ELECT_LEADERS_WAIT_MS_MAX


def _whole_request_error(asked: list[tuple[str, int]] | None, code: int,
                         message: str | None) -> dict:
    """A request refused or failed as a whole: the code at the top and on every partition
    it names, once each."""
    return _response(code, [(t, p, code, message) for t, p in sorted(set(asked or ()))])


def _response(code: int, outcomes: list[Outcome]) -> dict:
    """The response body: ``outcomes`` grouped by topic, in topic then partition order."""
    by_topic: dict[str, list[dict]] = {}
    for topic, partition, error_code, message in sorted(outcomes, key=lambda o: o[:2]):
        by_topic.setdefault(topic, []).append({
            "partition_id": partition, "error_code": error_code,
            "error_message": None if error_code == kafka.NONE else message})
    return {"throttle_time_ms": 0, "error_code": code,
            "replica_election_results": [{"topic": topic, "partition_result": results}
                                         for topic, results in by_topic.items()]}
