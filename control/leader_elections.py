"""Elections asked for by an operator (electLeaders: ``plinth topic elect-leaders``,
Kafka's ElectLeaders), beside the controller's own elections of a leader lost
(control/leadership.py's ``elect_leader``, run by the leader checks).

Preferred. After failovers, leaders stay where they moved: one shard may lead
most partitions while the others follow. A preferred election gives each
partition asked back to its preferred leader, the first of its replicas, where
that replica answers and is in sync. A partition whose leader answers is handed
over first (shards/shard_replication.py, "Hand-overs"):

    1. plan (controller's actor thread): who may be elected (``plan``); each leader
       to hand over from is sent its record (the controller's answer to its own
       in-sync change may not have reached its loop yet);
    2. hand over (a query thread, ``hand_over``): each leader refuses produces and
       is asked every SEAL_POLL_INTERVAL_MS until its preferred replica holds its
       whole log, for at most LEADER_HANDOVER_WAIT_MS;
    3. finish (actor thread, the controller's ``_finish_elections``): each partition
       handed over whose leader did not change meanwhile is asked once more
       (``confirm``: the refusal of writes starts again, so it cannot run out before
       the new record arrives), then gets a new leader epoch with its preferred
       replica leading (``leadership.elect_preferred``), saved and pushed; the
       others take writes again (``end_hand_over``).

The controller's moves off a disk that refuses writes (disk_moves.py) hand over
the same way, each ask naming another in-sync replica as ``to`` and why, and
step 3 elects it (``leadership.elect_replica``).

So the old leader, now a follower, holds nothing its new leader lacks and cuts
nothing: no acknowledged record is lost, acks=1 included (Kafka's preferred
election switches at once, and may lose acks=1 records the new leader lacks).
A partition whose leader does not answer needs no hand-over: the failover rule
elects its first alive in-sync replica, the preferred one if it may lead.

Unclean. A partition with no leader (offline: no in-sync or eligible replica
answers) gets one among any replica that answers, as
``unclean.leader.election.enable`` would, for this one request: records may be
lost. A partition with a leader needs no election.

Every function here but ``hand_over`` is pure; ``hand_over`` waits for shards.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from plinth import limits, protocol
from plinth.control import leadership as leadership_rules
from plinth.control.metadata import BrokerMetadata
from plinth.errors import (BrokerError, ElectionNotNeededError, MalformedRequestError,
                           PartitionOutOfRangeError, PreferredLeaderNotAvailableError,
                           UnknownTopicError)
from plinth.shards.shard_handle import PartitionId, ShardHandle, wait_all

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HandOverAsk:
    """A partition to hand over from ``leader`` to ``to`` (its preferred replica, or
    for ``why`` another in-sync one: disk_moves.py), planned in this leader epoch (the
    finish compares it: a partition whose leader changed meanwhile is not given to
    ``to``)."""

    pid: PartitionId
    leader: str
    to: str
    leader_epoch: int
    why: str = ""   # "": a preferred election; else why it moves (for its log line)

    @property
    def to_named(self) -> str:
        """``to`` as the errors name it."""
        return f"its preferred leader {self.to}" if not self.why else f"its replica {self.to}"


@dataclass
class ElectionPlan:
    """What ``plan`` decided: the partitions answered already (refused, or not
    needed), those to elect at once (no leader answers: the failover rule, unclean
    where asked), and those to hand over first."""

    answered: list[protocol.ElectionResult] = field(default_factory=list)
    elect_now: list[tuple[str, int]] = field(default_factory=list)
    hand_overs: list[HandOverAsk] = field(default_factory=list)


def check_election_type(election_type: int) -> None:
    """MalformedRequestError for a type that is neither preferred nor unclean."""
    if election_type not in protocol.ELECTION_TYPES.values():
        raise MalformedRequestError(
            f"election type {election_type!r} is neither {protocol.ELECTION_PREFERRED} "
            f"(preferred) nor {protocol.ELECTION_UNCLEAN} (unclean)")


def asked_partitions(metadata: BrokerMetadata,
                     partitions: list[tuple[str, int]] | None) -> list[tuple[str, int]]:
    """The partitions a request names, by topic then partition; None: every partition of
    every replicated topic (one copy never needs an election)."""
    if partitions is not None:
        return sorted(set(partitions))
    return [(name, p) for name, topic in sorted(metadata.topics.items())
            for p in sorted(topic.leadership)]


def plan(metadata: BrokerMetadata, election_type: int, partitions: list[tuple[str, int]],
         alive: Collection[str], repairing: dict[tuple[str, int], set[str]]) -> ElectionPlan:
    """Decide each of ``partitions``: ``alive`` the shards that answer now,
    ``repairing`` the replicas that may not lead until they caught up."""
    decided = ElectionPlan()
    for name, partition in partitions:
        where = f"{name}-{partition}"
        topic = metadata.topics.get(name)
        refusal = _not_there(topic, name, partition)
        if refusal is None and partition not in topic.leadership:
            refusal = ElectionNotNeededError(f"{where} has one copy, on "
                                             f"{topic.leader_of(partition)}; it needs no "
                                             f"election")
        if refusal is not None:
            leader = "" if topic is None or partition >= topic.partitions else \
                topic.leader_of(partition)
            decided.answered.append(protocol.ElectionResult(name, partition, leader, refusal))
            continue
        record = topic.leadership[partition]
        if election_type == protocol.ELECTION_UNCLEAN:
            _plan_unclean(decided, name, partition, record)
        else:
            _plan_preferred(decided, name, partition, record, alive,
                            repairing.get((name, partition), set()))
    return decided


def _not_there(topic, name: str, partition: int) -> BrokerError | None:
    if topic is None:
        return UnknownTopicError(f"topic {name!r} does not exist")
    if not 0 <= partition < topic.partitions:
        return PartitionOutOfRangeError(f"topic {name!r} has {topic.partitions} partitions; "
                                        f"there is no partition {partition}")
    return None


def _plan_unclean(decided: ElectionPlan, name: str, partition: int, record) -> None:
    if record.leader:
        decided.answered.append(protocol.ElectionResult(name, partition, record.leader,
                                                        ElectionNotNeededError(
            f"{name}-{partition} has a leader, {record.leader} (leader epoch "
            f"{record.leader_epoch}); an unclean election is only for one without")))
    else:
        decided.elect_now.append((name, partition))


def _plan_preferred(decided: ElectionPlan, name: str, partition: int, record,
                    alive: Collection[str], repairing: Collection[str]) -> None:
    refusal = leadership_rules.preferred_refusal(record, alive, needs_repair=repairing,
                                                 where=f"{name}-{partition}")
    if refusal is not None:
        decided.answered.append(protocol.ElectionResult(name, partition, record.leader, refusal))
    elif record.leader not in alive:   # no leader to hand over from: the failover rule
        decided.elect_now.append((name, partition))
    else:
        decided.hand_overs.append(HandOverAsk(PartitionId(name, partition), record.leader,
                                              to=record.replicas[0],
                                              leader_epoch=record.leader_epoch))


def imbalanced(metadata: BrokerMetadata, percent_max: int) -> list[tuple[str, int]]:
    """The partitions an auto leader rebalance elects (Kafka's
    leader.imbalance.per.broker.percentage): of each shard that more than
    ``percent_max`` % of its preferred partitions are led away from, those whose
    preferred leader (it) is in sync; by topic then partition."""
    preferred_of: dict[str, list[tuple[str, int, object]]] = {}
    for name, topic in metadata.topics.items():
        for partition, record in topic.leadership.items():
            preferred_of.setdefault(record.replicas[0], []).append((name, partition, record))
    wanted = []
    for shard_id, its in preferred_of.items():
        led_away = [(name, p, r) for name, p, r in its if r.leader != shard_id]
        if len(led_away) * 100 > percent_max * len(its):
            wanted += [(name, p) for name, p, r in led_away if shard_id in r.in_sync]
    return sorted(wanted)


def hand_over(asks: list[HandOverAsk], handles: dict[str, ShardHandle], *,
              clock_s: Callable[[], float] = time.monotonic,
              sleep_s: Callable[[float], None] = time.sleep) -> dict[PartitionId, BrokerError | None]:
    """Ask each partition's leader to hand it over until the replica it goes to
    (``ask.to``) holds the whole log, for at most LEADER_HANDOVER_WAIT_MS (a query
    thread: it waits for the shards, and the controller's elections go on
    meanwhile). Returns, per partition, None once handed over, else why not; a
    leader that does not answer is an error."""
    outcome: dict[PartitionId, BrokerError | None] = {}
    waiting = {ask.pid: ask for ask in asks}
    started_s = clock_s()
    deadline_s = started_s + limits.LEADER_HANDOVER_WAIT_MS / 1000
    last_seen: dict[PartitionId, tuple[int, str]] = {}
    rounds = 0
    while waiting:
        rounds += 1
        timeout_s = max(deadline_s - clock_s(), limits.LEADER_PING_TIMEOUT_S)
        for ask, state in _ask_leaders(list(waiting.values()), handles, timeout_s).items():
            if isinstance(state, BaseException) or state.error is not None:
                outcome[ask.pid] = _as_broker_error(state if isinstance(state, BaseException)
                                                    else state.error, ask)
                del waiting[ask.pid]
            elif state.complete:
                outcome[ask.pid] = None
                del waiting[ask.pid]
            else:
                last_seen[ask.pid] = (state.end_offset, ask.to_named)
        if waiting and clock_s() >= deadline_s:
            break
        if waiting:
            sleep_s(limits.SEAL_POLL_INTERVAL_MS / 1000)   # the replica handed to fetches
    log.info("hand-overs of %d partitions: %d done in %.0f ms, %d rounds", len(asks),
             sum(1 for e in outcome.values() if e is None), (clock_s() - started_s) * 1000, rounds)
    for pid, ask in waiting.items():
        end_offset, named = last_seen.get(pid, (-1, ask.to_named))
        outcome[pid] = PreferredLeaderNotAvailableError(
            f"{pid.topic}-{pid.partition}: {named} did not fetch up to "
            f"its leader {ask.leader}'s log end ({end_offset}) within "
            f"{limits.LEADER_HANDOVER_WAIT_MS} ms; {ask.leader} leads it and takes writes "
            f"again; run the election again")
    return outcome


def confirm(asks: list[HandOverAsk], handles: dict[str, ShardHandle]
            ) -> dict[PartitionId, BrokerError | None]:
    """Ask each leader once more, right before the new records are saved (the actor
    thread, waiting at most LEADER_PING_TIMEOUT_S): the replica it goes to still holds
    the whole log, and the refusal of writes starts again from now, so it cannot run
    out between the last ask of ``hand_over`` and the new records, however long the
    actor thread took to get to them."""
    outcome: dict[PartitionId, BrokerError | None] = {}
    for ask, state in _ask_leaders(asks, handles, limits.LEADER_PING_TIMEOUT_S).items():
        if isinstance(state, BaseException) or state.error is not None:
            outcome[ask.pid] = _as_broker_error(state if isinstance(state, BaseException)
                                                else state.error, ask)
        elif not state.complete:
            outcome[ask.pid] = PreferredLeaderNotAvailableError(
                f"{ask.pid.topic}-{ask.pid.partition}: {ask.to_named} no "
                f"longer holds its leader {ask.leader}'s whole log (its end is "
                f"{state.end_offset}); run the election again")
        else:
            outcome[ask.pid] = None
    return outcome


def _ask_leaders(asks: list[HandOverAsk], handles: dict[str, ShardHandle],
                 timeout_s: float) -> dict:
    """One round: every leader asked at once, for all its partitions, waiting at most
    ``timeout_s``; per ask, its HandOverState, or the error of its leader's call."""
    by_leader: dict[str, list[HandOverAsk]] = {}
    for ask in asks:
        by_leader.setdefault(ask.leader, []).append(ask)
    calls = wait_all({leader: handles[leader].hand_over([a.pid for a in its],
                                                        [a.to for a in its])
                      for leader, its in by_leader.items()}, timeout_s)
    states = {}
    for leader, its in by_leader.items():
        answer = calls[leader]
        for i, ask in enumerate(its):
            states[ask] = answer if isinstance(answer, BaseException) else answer[i]
    return states


def _as_broker_error(error: BaseException, ask: HandOverAsk) -> BrokerError:
    if isinstance(error, PreferredLeaderNotAvailableError):
        return error
    return PreferredLeaderNotAvailableError(
        f"{ask.pid.topic}-{ask.pid.partition}: its leader {ask.leader} did not hand it over to "
        f"{ask.to}: {type(error).__name__}: {error}")
