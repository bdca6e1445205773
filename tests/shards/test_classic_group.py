"""classic_group.py: Kafka's classic group protocol with an explicit clock, no sockets."""

from __future__ import annotations

import itertools

import pytest

from plinth import limits
from plinth.shards.classic_group import (ClassicGroupCoordinator, GroupState, JoinAnswer,
                                         KafkaError, SyncAnswer)

DELAY_MS = 100
SESSION_MS = 10_000
REBALANCE_MS = 30_000
# Members joining a new group within its first initial delay form a generation when a
# second one runs out: each newcomer extends it once (Kafka's rule).
FORMED_MS = 2 * DELAY_MS + 1
PROTOCOLS = [("range", b"range-meta"), ("roundrobin", b"rr-meta")]
_tokens = itertools.count()


@pytest.fixture
def coord():
    return ClassicGroupCoordinator(initial_rebalance_delay_ms=DELAY_MS)


def replies(pairs) -> dict:
    """The answers by token; a token answered twice fails the test."""
    answers = {}
    for token, answer in pairs:
        assert token not in answers, f"token {token} answered twice"
        answers[token] = answer
    return answers


def join(coord, member_id="", now=0, group="g", instance=None, protocols=PROTOCOLS,
         key="", ptype="consumer", session_ms=SESSION_MS, rebalance_ms=REBALANCE_MS,
         require_id=True):
    """Send a join; returns (its token, every answer released)."""
    token = next(_tokens)
    out = coord.join(token, group, member_id, instance, ptype, protocols, session_ms,
                     rebalance_ms, now, client_id="cid", client_host="/127.0.0.1",
                     client_key=key, require_known_member_id=require_id)
    return token, replies(out)


def new_member_id(coord, now=0, **kw) -> str:
    token, answers = join(coord, now=now, **kw)
    assert answers[token].error is KafkaError.MEMBER_ID_REQUIRED
    return answers[token].member_id


def sync(coord, member_id, generation, now=0, assignments=(), group="g", key="",
         instance=None, ptype="consumer", pname=None):
    token = next(_tokens)
    out = coord.sync(token, group, generation, member_id, instance, ptype, pname,
                     list(assignments), now, client_key=key)
    return token, replies(out)


def beat(coord, member_id, generation, now=0, group="g", key="", instance=None):
    token = next(_tokens)
    (answered, answer), = coord.heartbeat(token, group, generation, member_id, instance, now,
                                          client_key=key)
    assert answered == token
    return answer.error


def stable_pair(coord, now=0):
    """Two members joined in one generation and synced: (leader, follower, generation)."""
    a, b = new_member_id(coord, now), new_member_id(coord, now)
    ta, held_a = join(coord, a, now)
    tb, held_b = join(coord, b, now)
    assert held_a == {} and held_b == {}
    answers = replies(coord.tick(now + FORMED_MS))
    assert set(answers) == {ta, tb}
    leader = answers[ta].leader_id
    follower = b if leader == a else a
    generation = answers[ta].generation_id
    ts, released = sync(coord, leader, generation, now,
                        [(leader, b"L-assignment"), (follower, b"F-assignment")])
    assert released[ts] == SyncAnswer(KafkaError.NONE, "consumer", "range", b"L-assignment")
    tf, released = sync(coord, follower, generation, now)
    assert released[tf].assignment == b"F-assignment"
    return leader, follower, generation


# --- Joining -----------------------------------------------------------------------

def test_a_new_member_is_handed_a_member_id_to_join_again_with(coord):
    # When a v4+ client joins without a member id
    token, answers = join(coord)
    # Then it is answered at once with a new id, and nothing is held
    answer = answers[token]
    assert answer.error is KafkaError.MEMBER_ID_REQUIRED
    assert answer.member_id.startswith("cid-") and len(answer.member_id) > 30
    assert coord.held_count() == 0 and coord.member_count() == 1


def test_two_members_joining_within_the_initial_delay_get_one_generation(coord):
    # Given two members that were handed their ids
    a, b = new_member_id(coord), new_member_id(coord)
    # When both join within the initial delay
    ta, first = join(coord, a, now=0)
    tb, second = join(coord, b, now=DELAY_MS // 2)
    # Then both joins are held until the delay ran out
    assert first == {} and second == {} and coord.held_count() == 2
    assert coord.tick(DELAY_MS + 1) == []   # b came after a: another delay
    answers = replies(coord.tick(FORMED_MS))
    # And both are answered with one generation, one leader and one protocol
    assert set(answers) == {ta, tb}
    assert {answers[ta].generation_id, answers[tb].generation_id} == {1}
    assert answers[ta].leader_id == answers[tb].leader_id == a   # the first to join
    assert answers[ta].protocol_name == answers[tb].protocol_name == "range"
    assert answers[ta].protocol_type == "consumer"
    assert coord.describe("g").state is GroupState.COMPLETING_REBALANCE


def test_the_leader_gets_every_members_metadata_and_a_follower_none(coord):
    a, b = new_member_id(coord), new_member_id(coord)
    ta, _ = join(coord, a, protocols=[("range", b"A")])
    tb, _ = join(coord, b, protocols=[("range", b"B")], instance=None)
    answers = replies(coord.tick(FORMED_MS))
    assert [(m.member_id, m.metadata) for m in answers[ta].members] == [(a, b"A"), (b, b"B")]
    assert answers[tb].members == ()


def test_the_initial_delay_is_extended_while_members_keep_arriving(coord):
    # Given a member joined at 0 and another one just before the delay ran out
    a, b = new_member_id(coord), new_member_id(coord)
    ta, _ = join(coord, a, now=0)
    tb, _ = join(coord, b, now=DELAY_MS - 1)
    # Then the first deadline waits another delay instead of completing
    assert coord.tick(DELAY_MS + 1) == []
    assert coord.next_deadline_ms() == 2 * DELAY_MS
    # And a third member arriving meanwhile extends it once more
    tc, _ = join(coord, new_member_id(coord, now=DELAY_MS + 10), now=DELAY_MS + 10)
    assert coord.tick(2 * DELAY_MS + 1) == []
    # And without newcomers the next one completes
    assert set(replies(coord.tick(3 * DELAY_MS + 1))) == {ta, tb, tc}


def test_the_initial_delay_is_extended_only_within_the_rebalance_timeout(coord):
    a, b = new_member_id(coord), new_member_id(coord)
    ta, _ = join(coord, a, now=0, rebalance_ms=DELAY_MS + DELAY_MS // 2)
    tb, _ = join(coord, b, now=1, rebalance_ms=DELAY_MS + DELAY_MS // 2)
    assert coord.tick(DELAY_MS + 1) == []
    # The extension is what was left of the first member's rebalance timeout
    assert coord.next_deadline_ms() == DELAY_MS + DELAY_MS // 2
    assert set(replies(coord.tick(DELAY_MS + DELAY_MS // 2 + 1))) == {ta, tb}


def test_a_client_before_v4_joins_without_being_asked_for_its_member_id(coord):
    token, answers = join(coord, require_id=False)
    assert answers == {}
    answer = replies(coord.tick(FORMED_MS))[token]
    assert answer.error is KafkaError.NONE and answer.leader_id == answer.member_id


def test_the_protocol_is_chosen_by_the_members_votes(coord):
    # Three members prefer roundrobin, one range; all support both
    ids = [new_member_id(coord) for _ in range(4)]
    preferences = [[("range", b""), ("roundrobin", b"")]] + [[("roundrobin", b""), ("range", b"")]] * 3
    tokens = [join(coord, m, protocols=p)[0] for m, p in zip(ids, preferences)]
    answers = replies(coord.tick(FORMED_MS))
    assert {answers[t].protocol_name for t in tokens} == {"roundrobin"}


def test_a_member_of_another_protocol_type_or_without_a_shared_protocol_is_refused(coord):
    leader, _, _ = stable_pair(coord)
    token, answers = join(coord, ptype="connect")
    assert answers[token].error is KafkaError.INCONSISTENT_GROUP_PROTOCOL
    token, answers = join(coord, protocols=[("sticky", b"")])
    assert answers[token].error is KafkaError.INCONSISTENT_GROUP_PROTOCOL
    token, answers = join(coord, protocols=[])
    assert answers[token].error is KafkaError.INCONSISTENT_GROUP_PROTOCOL
    assert coord.describe("g").state is GroupState.STABLE


def test_a_session_timeout_out_of_bounds_is_refused(coord):
    for session_ms in (limits.SESSION_TIMEOUT_MS_MIN - 1,
                       limits.CLASSIC_SESSION_TIMEOUT_MS_MAX + 1):
        token, answers = join(coord, session_ms=session_ms)
        assert answers[token].error is KafkaError.INVALID_SESSION_TIMEOUT
    assert not coord.has_group("g")


@pytest.mark.parametrize("session_ms", [600_000, 1_800_000])
def test_a_kafka_clients_session_up_to_kafkas_30_minutes_is_taken(coord, session_ms):
    # Given a Kafka client asking for a 10- or 30-minute session (Kafka's default
    # group.max.session.timeout.ms is 30 minutes), longer than Plinth's own clients'
    # When it joins / Then it is taken, told its member id (KIP-394), as any member is
    # (it was refused INVALID_SESSION_TIMEOUT, and its consumer never got a partition)
    token, answers = join(coord, session_ms=session_ms)
    assert answers[token].error is KafkaError.MEMBER_ID_REQUIRED
    assert coord.has_group("g")


def test_an_invalid_group_name_is_refused(coord):
    token, answers = join(coord, group="no spaces")
    assert answers[token].error is KafkaError.INVALID_GROUP_ID
    token, answers = sync(coord, "cid-x", 1, group="")
    assert answers[token].error is KafkaError.INVALID_GROUP_ID
    assert beat(coord, "cid-x", 1, group="") is KafkaError.INVALID_GROUP_ID
    token = next(_tokens)
    (_, answer), = coord.leave(token, "", [("cid-x", None)], 0)
    assert answer.error is KafkaError.INVALID_GROUP_ID


def test_a_member_id_the_group_does_not_know_is_refused(coord):
    token, answers = join(coord, "cid-forged")
    assert answers[token] == JoinAnswer(KafkaError.UNKNOWN_MEMBER_ID, "cid-forged")
    stable_pair(coord)
    token, answers = join(coord, "cid-forged")
    assert answers[token].error is KafkaError.UNKNOWN_MEMBER_ID
    assert beat(coord, "cid-forged", 1) is KafkaError.UNKNOWN_MEMBER_ID
    token, answers = sync(coord, "cid-forged", 1)
    assert answers[token].error is KafkaError.UNKNOWN_MEMBER_ID


def test_a_member_joining_twice_gets_its_older_join_answered(coord):
    a = new_member_id(coord)
    first, _ = join(coord, a)
    second, answers = join(coord, a)
    assert answers[first].error is KafkaError.REBALANCE_IN_PROGRESS
    assert coord.held_count() == 1
    assert replies(coord.tick(FORMED_MS))[second].error is KafkaError.NONE


# --- Syncing -----------------------------------------------------------------------

def test_a_followers_sync_waits_for_the_leaders(coord):
    a, b = new_member_id(coord), new_member_id(coord)
    join(coord, a)
    join(coord, b)
    coord.tick(FORMED_MS)
    # When the follower syncs first, it is held
    tf, answers = sync(coord, b, 1, now=200)
    assert answers == {} and coord.held_count() == 1
    # Then the leader's sync answers both, each with its own assignment
    tl, answers = sync(coord, a, 1, now=300, assignments=[(a, b"for-a"), (b, b"for-b")])
    assert answers == {tf: SyncAnswer(KafkaError.NONE, "consumer", "range", b"for-b"),
                       tl: SyncAnswer(KafkaError.NONE, "consumer", "range", b"for-a")}
    assert coord.describe("g").state is GroupState.STABLE


def test_a_member_the_leader_left_out_gets_an_empty_assignment(coord):
    a, b = new_member_id(coord), new_member_id(coord)
    join(coord, a)
    join(coord, b)
    coord.tick(FORMED_MS)
    sync(coord, a, 1, assignments=[(a, b"all"), ("cid-stranger", b"ignored")])
    token, answers = sync(coord, b, 1)
    assert answers[token] == SyncAnswer(KafkaError.NONE, "consumer", "range", b"")


def test_a_sync_with_another_protocol_is_refused(coord):
    leader, _, generation = stable_pair(coord)
    token, answers = sync(coord, leader, generation, pname="roundrobin")
    assert answers[token].error is KafkaError.INCONSISTENT_GROUP_PROTOCOL
    token, answers = sync(coord, leader, generation, ptype="connect")
    assert answers[token].error is KafkaError.INCONSISTENT_GROUP_PROTOCOL


def test_a_member_that_does_not_sync_within_the_rebalance_timeout_is_removed(coord):
    a, b = new_member_id(coord), new_member_id(coord)
    # (sessions longer than the rebalance timeout: only the sync deadline removes b)
    join(coord, a, session_ms=limits.SESSION_TIMEOUT_MS_MAX)
    join(coord, b, session_ms=limits.SESSION_TIMEOUT_MS_MAX)
    coord.tick(FORMED_MS)
    sync(coord, a, 1, assignments=[(a, b"x"), (b, b"y")], now=200)
    # b never syncs: after the rebalance timeout it is out, and a must rejoin
    coord.tick(FORMED_MS + REBALANCE_MS + 1)
    assert [m.member_id for m in coord.describe("g").members] == [a]
    assert beat(coord, a, 1, now=DELAY_MS + REBALANCE_MS + 2) is KafkaError.REBALANCE_IN_PROGRESS


def test_assignments_over_the_group_limit_are_refused_to_every_member(coord, monkeypatch):
    monkeypatch.setattr(limits, "CLASSIC_GROUP_ASSIGNMENT_BYTES_MAX", 10)
    a, b = new_member_id(coord), new_member_id(coord)
    join(coord, a)
    join(coord, b)
    coord.tick(FORMED_MS)
    tf, _ = sync(coord, b, 1)
    tl, answers = sync(coord, a, 1, assignments=[(a, b"123456"), (b, b"123456")])
    assert {answers[tf].error, answers[tl].error} == {KafkaError.UNKNOWN_SERVER_ERROR}
    assert coord.describe("g").state is GroupState.PREPARING_REBALANCE


# --- Rebalancing ---------------------------------------------------------------------

def test_a_third_member_makes_the_others_rejoin_through_heartbeat(coord):
    # Given a stable group of two
    leader, follower, generation = stable_pair(coord)
    assert beat(coord, follower, generation, now=1000) is KafkaError.NONE
    # When a third member joins
    c = new_member_id(coord, now=1000)
    tc, answers = join(coord, c, now=1000)
    assert answers == {}
    # Then the others learn it through their heartbeats and rejoin
    assert beat(coord, leader, generation, now=1100) is KafkaError.REBALANCE_IN_PROGRESS
    assert beat(coord, follower, generation, now=1100) is KafkaError.REBALANCE_IN_PROGRESS
    tl, answers = join(coord, leader, now=1200)
    assert answers == {}
    tf, answers = join(coord, follower, now=1300)
    # And the last rejoin completes the generation for all three, with the same leader
    assert set(answers) == {tc, tl, tf}
    assert {a.generation_id for a in answers.values()} == {generation + 1}
    assert {a.leader_id for a in answers.values()} == {leader}
    assert len(answers[tl].members) == 3


def test_a_member_that_does_not_rejoin_within_the_rebalance_timeout_is_dropped(coord):
    leader, follower, generation = stable_pair(coord)
    c = new_member_id(coord, now=1000)
    tc, _ = join(coord, c, now=1000)
    tl, _ = join(coord, leader, now=1100)
    # The follower keeps heartbeating but never rejoins
    for now in range(5000, 1000 + REBALANCE_MS, SESSION_MS // 2):
        assert beat(coord, follower, generation, now=now) is KafkaError.REBALANCE_IN_PROGRESS
    assert coord.tick(1000 + REBALANCE_MS) == []
    answers = replies(coord.tick(1000 + REBALANCE_MS + 1))
    # Then the held joins are answered with a generation without it
    assert set(answers) == {tc, tl}
    assert {m.member_id for m in answers[tl].members} == {leader, c}
    assert beat(coord, follower, generation, now=1000 + REBALANCE_MS + 2) is \
        KafkaError.UNKNOWN_MEMBER_ID


def test_the_leader_rejoining_a_stable_group_starts_a_rebalance(coord):
    leader, follower, generation = stable_pair(coord)
    tl, answers = join(coord, leader, now=10)
    assert answers == {}
    assert beat(coord, follower, generation, now=20) is KafkaError.REBALANCE_IN_PROGRESS
    tf, answers = join(coord, follower, now=30)
    assert answers[tl].generation_id == answers[tf].generation_id == generation + 1


def test_a_leader_that_does_not_rejoin_is_replaced_by_a_member_that_did(coord):
    leader, follower, generation = stable_pair(coord)
    c = new_member_id(coord, now=1000)
    tc, _ = join(coord, c, now=1000)
    tf, _ = join(coord, follower, now=1000)
    # The old leader neither rejoins nor heartbeats: its session ends at SESSION_MS
    answers = replies(coord.tick(SESSION_MS + 1))
    assert {answers[tc].leader_id, answers[tf].leader_id} == {follower}
    assert len(answers[tf].members) == 2 and answers[tc].members == ()


def test_a_rebalance_is_in_progress_for_syncs_while_members_rejoin(coord):
    leader, follower, generation = stable_pair(coord)
    join(coord, leader, now=10)
    token, answers = sync(coord, follower, generation, now=20)
    assert answers[token].error is KafkaError.REBALANCE_IN_PROGRESS


def test_heartbeats_while_the_leader_assigns_keep_members_alive(coord):
    a, b = new_member_id(coord), new_member_id(coord)
    join(coord, a)
    join(coord, b)
    coord.tick(FORMED_MS)
    for now in range(FORMED_MS, FORMED_MS + 2 * SESSION_MS, SESSION_MS // 2):
        assert beat(coord, a, 1, now=now) is KafkaError.NONE
        assert beat(coord, b, 1, now=now) is KafkaError.NONE
        coord.tick(now)
    assert len(coord.describe("g").members) == 2


def test_a_static_member_restarting_while_the_leader_assigns_starts_a_rebalance(coord):
    a = new_member_id(coord)
    join(coord, a)
    join(coord, "", instance="i")
    coord.tick(FORMED_MS)
    token, answers = join(coord, "", instance="i", now=FORMED_MS)
    assert answers == {}   # held: the leader may be assigning to the old member id
    assert coord.describe("g").state is GroupState.PREPARING_REBALANCE


def test_a_follower_rejoining_a_stable_group_unchanged_is_told_the_current_generation(coord):
    leader, follower, generation = stable_pair(coord)
    token, answers = join(coord, follower, now=10)
    assert answers[token].generation_id == generation and answers[token].members == ()
    assert coord.describe("g").state is GroupState.STABLE


def test_a_rebalance_during_sync_answers_the_held_syncs_with_rebalance_in_progress(coord):
    a, b = new_member_id(coord), new_member_id(coord)
    join(coord, a)
    join(coord, b)
    coord.tick(FORMED_MS)
    tf, _ = sync(coord, b, 1, now=200)
    # The follower's held sync is answered when a new member starts a rebalance
    c = new_member_id(coord, now=300)
    tc, answers = join(coord, c, now=300)
    assert answers == {tf: SyncAnswer(KafkaError.REBALANCE_IN_PROGRESS)}


# --- Sessions and leaving ------------------------------------------------------------

def test_a_silent_member_is_removed_after_its_session_timeout(coord):
    leader, follower, generation = stable_pair(coord)
    beat(coord, leader, generation, now=SESSION_MS - 1)
    # The follower's session started when it was answered at FORMED_MS (its sync kept it)
    coord.tick(FORMED_MS + SESSION_MS + 1)
    assert [m.member_id for m in coord.describe("g").members] == [leader]
    assert coord.describe("g").state is GroupState.PREPARING_REBALANCE
    assert beat(coord, follower, generation, now=SESSION_MS * 2) is KafkaError.UNKNOWN_MEMBER_ID


def test_a_member_waiting_for_the_leader_is_not_expired(coord):
    a, b = new_member_id(coord), new_member_id(coord)
    join(coord, a)
    join(coord, b, session_ms=1000)
    coord.tick(FORMED_MS)
    tf, _ = sync(coord, b, 1, now=FORMED_MS)
    beat(coord, a, 1, now=2000)
    # b's session ran out while its sync was held: it stays
    assert coord.tick(FORMED_MS + 1000 + 1) == []
    assert len(coord.describe("g").members) == 2


def test_a_member_leaving_while_its_join_is_held_gets_the_join_answered(coord):
    leader, follower, generation = stable_pair(coord)
    c = new_member_id(coord, now=1000)
    tc, _ = join(coord, c, now=1000)
    token = next(_tokens)
    answers = replies(coord.leave(token, "g", [(c, None)], 1100))
    assert answers[tc] == JoinAnswer(KafkaError.UNKNOWN_MEMBER_ID, "")
    assert answers[token].members[0].error is KafkaError.NONE
    assert coord.held_count() == 0


def test_a_member_leaving_while_its_sync_is_held_gets_the_sync_answered(coord):
    a, b = new_member_id(coord), new_member_id(coord)
    join(coord, a)
    join(coord, b)
    coord.tick(FORMED_MS)
    tf, _ = sync(coord, b, 1)
    token = next(_tokens)
    answers = replies(coord.leave(token, "g", [(b, None)], 300))
    assert answers[tf] == SyncAnswer(KafkaError.UNKNOWN_MEMBER_ID)
    assert coord.held_count() == 0


def test_a_new_members_join_held_too_long_is_answered_and_the_member_dropped(coord):
    # Given a stable group whose members take the longest rebalance timeout
    leader, follower, generation = stable_pair(coord)
    # When a new member joins and the others keep heartbeating without rejoining
    c = new_member_id(coord, now=1000, rebalance_ms=limits.CLASSIC_REBALANCE_TIMEOUT_MS_MAX)
    tc, _ = join(coord, c, now=1000, rebalance_ms=limits.CLASSIC_REBALANCE_TIMEOUT_MS_MAX)
    end_ms = 1000 + limits.CLASSIC_NEW_MEMBER_JOIN_TIMEOUT_MS
    for now in range(2000, end_ms + 2, SESSION_MS // 2):
        beat(coord, leader, generation, now=now)
        beat(coord, follower, generation, now=now)
        assert tc not in replies(coord.tick(now))
    # Then the new member is dropped after Kafka's new member join timeout
    answers = replies(coord.tick(end_ms + 1))
    assert answers == {tc: JoinAnswer(KafkaError.UNKNOWN_MEMBER_ID, "")}
    assert len(coord.describe("g").members) == 2


def test_a_leaving_member_makes_the_group_rebalance_and_the_last_one_removes_it(coord):
    leader, follower, generation = stable_pair(coord)
    token = next(_tokens)
    answers = replies(coord.leave(token, "g", [(follower, None)], 10))
    assert answers[token].error is KafkaError.NONE
    assert answers[token].members[0].error is KafkaError.NONE
    # The leader, alone now, rejoins and gets a generation of one at once
    tl, answers = join(coord, leader, now=20)
    assert answers[tl].generation_id == generation + 1 and len(answers[tl].members) == 1
    token = next(_tokens)
    replies(coord.leave(token, "g", [(leader, None)], 30))
    assert not coord.has_group("g") and coord.describe("g").state is GroupState.DEAD
    assert coord.member_count() == 0 and coord.next_deadline_ms() is None


def test_leaving_a_batch_answers_each_member(coord):
    leader, follower, _ = stable_pair(coord)
    token = next(_tokens)
    answers = replies(coord.leave(token, "g", [(follower, None), ("cid-nobody", None)], 10))
    assert [m.error for m in answers[token].members] == [KafkaError.NONE,
                                                         KafkaError.UNKNOWN_MEMBER_ID]


def test_a_pending_member_id_expires_after_its_session_timeout(coord):
    a = new_member_id(coord, now=0)
    new_member_id(coord, now=0)   # never joins again
    ta, _ = join(coord, a, now=10)
    # The initial delay is over, but not the pending member's session: a waits
    answers = replies(coord.tick(FORMED_MS))
    assert answers[ta].error is KafkaError.NONE   # (the initial delay does not wait for it)
    assert coord.member_count() == 1 + 1
    coord.tick(SESSION_MS + 1)
    assert coord.member_count() == 1


def test_a_pending_member_delays_the_completion_of_a_later_rebalance(coord):
    leader, follower, generation = stable_pair(coord)
    tl, _ = join(coord, leader, now=10)
    pending = new_member_id(coord, now=10)
    tf, answers = join(coord, follower, now=20)
    assert answers == {}   # every member joined, but a pending id may join yet
    tp, answers = join(coord, pending, now=30)
    assert set(answers) == {tl, tf, tp}


# --- Static membership ---------------------------------------------------------------

def test_a_restarted_static_member_replaces_its_old_member_id(coord):
    a = new_member_id(coord)
    ta, _ = join(coord, a)
    tb, _ = join(coord, "", instance="instance-b")   # static members need no second join
    answers = replies(coord.tick(FORMED_MS))
    old_b = answers[tb].member_id
    sync(coord, a, 1, assignments=[(a, b"for-a"), (old_b, b"for-b")])
    sync(coord, old_b, 1, instance="instance-b")
    # When instance-b restarts and joins without its member id
    token, answers = join(coord, "", instance="instance-b", now=50)
    # Then it gets a new id in the same generation, without a rebalance, and the old
    # leader id so that it does not assign
    new_b = answers[token].member_id
    assert new_b != old_b and answers[token].generation_id == 1
    assert answers[token].leader_id == a
    assert coord.describe("g").state is GroupState.STABLE
    token, answers = sync(coord, new_b, 1, instance="instance-b", now=60)
    assert answers[token].assignment == b"for-b"
    # And the old member id is fenced
    assert beat(coord, old_b, 1, instance="instance-b") is KafkaError.FENCED_INSTANCE_ID


def test_a_replaced_static_members_held_join_is_answered_fenced(coord):
    token_old, _ = join(coord, "", instance="i")
    token_new, answers = join(coord, "", instance="i")
    assert answers[token_old].error is KafkaError.FENCED_INSTANCE_ID
    answer = replies(coord.tick(FORMED_MS))[token_new]
    assert answer.error is KafkaError.NONE and answer.leader_id == answer.member_id


def test_a_static_instance_id_of_another_client_key_is_refused(coord):
    join(coord, "", instance="i", key="tenant-a")
    token, answers = join(coord, "", instance="i", key="tenant-b")
    assert answers[token].error is KafkaError.FENCED_INSTANCE_ID
    assert coord.held_count() == 1


def test_an_administrator_removes_a_static_member_by_instance_id(coord):
    ta, _ = join(coord, "", instance="i")
    token = next(_tokens)
    answers = replies(coord.leave(token, "g", [("", "i")], 10))
    assert answers[ta].error is KafkaError.UNKNOWN_MEMBER_ID    # its held join is answered
    assert answers[token].members[0].error is KafkaError.NONE
    assert not coord.has_group("g")


# --- Whose member it is ----------------------------------------------------------------

def test_a_member_id_of_another_client_key_is_unknown_and_the_member_stays(coord):
    a = new_member_id(coord, key="tenant-a")
    # Another key cannot take the pending id
    token, answers = join(coord, a, key="tenant-b")
    assert answers[token].error is KafkaError.UNKNOWN_MEMBER_ID
    ta, _ = join(coord, a, key="tenant-a")
    coord.tick(FORMED_MS)
    assert beat(coord, a, 1, key="tenant-b") is KafkaError.UNKNOWN_MEMBER_ID
    token, answers = sync(coord, a, 1, key="tenant-b")
    assert answers[token].error is KafkaError.UNKNOWN_MEMBER_ID
    token = next(_tokens)
    answers = replies(coord.leave(token, "g", [(a, None)], 10, client_key="tenant-b"))
    assert answers[token].members[0].error is KafkaError.UNKNOWN_MEMBER_ID
    assert coord.check_commit("g", a, 1, None, client_key="tenant-b") is \
        KafkaError.UNKNOWN_MEMBER_ID
    assert beat(coord, a, 1, key="tenant-a") is KafkaError.NONE


# --- Offsets -------------------------------------------------------------------------------

def test_commits_are_checked_against_membership_and_generation(coord):
    # A group without members takes an administrator's (generation -1) commit only
    assert coord.check_commit("g", "", -1, None) is KafkaError.NONE
    assert coord.check_commit("g", "", 3, None) is KafkaError.ILLEGAL_GENERATION
    a, b = new_member_id(coord), new_member_id(coord)
    join(coord, a)
    join(coord, b)
    coord.tick(FORMED_MS)
    # Members, before the assignment: rebalance in progress
    assert coord.check_commit("g", a, 1, None) is KafkaError.REBALANCE_IN_PROGRESS
    sync(coord, a, 1, assignments=[(a, b""), (b, b"")])
    assert coord.check_commit("g", a, 1, None) is KafkaError.NONE
    assert coord.check_commit("g", a, 0, None) is KafkaError.ILLEGAL_GENERATION
    assert coord.check_commit("g", "", -1, None) is KafkaError.UNKNOWN_MEMBER_ID
    assert coord.check_commit("g", "cid-nobody", 1, None) is KafkaError.UNKNOWN_MEMBER_ID
    assert coord.check_commit("bad name", "", -1, None) is KafkaError.INVALID_GROUP_ID


# --- Bounds ----------------------------------------------------------------------------

def test_a_full_group_refuses_new_members(coord, monkeypatch):
    monkeypatch.setattr(limits, "GROUP_MEMBERS_MAX", 2)
    a, b = new_member_id(coord), new_member_id(coord)
    token, answers = join(coord)
    assert answers[token].error is KafkaError.GROUP_MAX_SIZE_REACHED
    token, answers = join(coord, "", instance="i")
    assert answers[token].error is KafkaError.GROUP_MAX_SIZE_REACHED
    # The two that were handed ids still join
    join(coord, a)
    join(coord, b)
    assert {x.error for x in replies(coord.tick(FORMED_MS)).values()} == {KafkaError.NONE}


def test_one_client_key_cannot_fill_a_group(coord, monkeypatch):
    monkeypatch.setattr(limits, "GROUP_MEMBERS_PER_CLIENT_KEY_MAX", 1)
    new_member_id(coord, key="tenant-a")
    token, answers = join(coord, key="tenant-a")
    assert answers[token].error is KafkaError.GROUP_MAX_SIZE_REACHED
    new_member_id(coord, key="tenant-b")


def test_a_shard_bounds_its_classic_members_and_groups(coord, monkeypatch):
    monkeypatch.setattr(limits, "GROUP_MEMBERS_PER_SHARD_MAX", 1)
    new_member_id(coord, group="g1")
    token, answers = join(coord, group="g2")
    assert answers[token].error is KafkaError.GROUP_MAX_SIZE_REACHED
    assert not coord.has_group("g2")
    monkeypatch.setattr(limits, "GROUP_MEMBERS_PER_SHARD_MAX", 100)
    monkeypatch.setattr(limits, "GROUPS_PER_SHARD_MAX", 1)
    token, answers = join(coord, group="g2")
    assert answers[token].error is KafkaError.COORDINATOR_NOT_AVAILABLE


def test_a_shard_bounds_the_metadata_of_its_classic_groups(coord, monkeypatch):
    # Given a shard budget of about two maximal members' metadata, and three small members
    most = limits.CLASSIC_MEMBER_METADATA_BYTES_MAX
    monkeypatch.setattr(limits, "CLASSIC_GROUP_BYTES_PER_SHARD_MAX", 2 * most + 40)
    for _ in range(3):
        join(coord, require_id=False, protocols=[("range", b"")])
    ids = [m.member_id for m in coord.describe("g").members]
    assert len(ids) == 3
    big = [("range", b"x" * (most - 20))]
    # When two grow to nearly the most a member may have, there is no room for a third
    for member_id in ids[:2]:
        token, answers = join(coord, member_id, protocols=big)
        assert token not in answers   # held, as any rejoin
    token, answers = join(coord, ids[2], protocols=big)
    assert answers[token].error is KafkaError.COORDINATOR_NOT_AVAILABLE
    # Nor for a new member (refused as retriable)
    token, answers = join(coord, group="g2")
    assert answers[token].error is KafkaError.COORDINATOR_NOT_AVAILABLE


def test_too_much_metadata_or_too_many_protocols_are_refused(coord):
    big = [("range", b"x" * (limits.CLASSIC_MEMBER_METADATA_BYTES_MAX + 1))]
    token, answers = join(coord, protocols=big)
    assert answers[token].error is KafkaError.INVALID_REQUEST
    many = [(f"p{i}", b"") for i in range(limits.CLASSIC_MEMBER_PROTOCOLS_MAX + 1)]
    token, answers = join(coord, protocols=many)
    assert answers[token].error is KafkaError.INVALID_REQUEST
    assert not coord.has_group("g")


def test_a_huge_rebalance_timeout_is_cut_to_the_limit(coord):
    a = new_member_id(coord)
    join(coord, a, rebalance_ms=2**31 - 1)
    coord.tick(FORMED_MS)
    assert coord.next_deadline_ms() <= FORMED_MS + limits.CLASSIC_REBALANCE_TIMEOUT_MS_MAX


# --- Inspection and hand-over ---------------------------------------------------------------

def test_describe_shows_metadata_and_assignments_of_a_stable_group_only(coord):
    a, b = new_member_id(coord), new_member_id(coord)
    join(coord, a, protocols=[("range", b"A")])
    join(coord, b, protocols=[("range", b"B")])
    coord.tick(FORMED_MS)
    described = coord.describe("g")
    assert described.protocol_name == "" and {m.metadata for m in described.members} == {b""}
    sync(coord, a, 1, assignments=[(a, b"1"), (b, b"2")])
    described = coord.describe("g")
    assert described.state is GroupState.STABLE and described.protocol_name == "range"
    assert [(m.member_id, m.client_id, m.metadata, m.assignment) for m in described.members] == \
        [(a, "cid", b"A", b"1"), (b, "cid", b"B", b"2")]
    assert coord.list_groups() == [("g", "consumer", GroupState.STABLE)]


def test_closing_answers_every_held_join_and_sync_not_coordinator(coord):
    a, b = new_member_id(coord), new_member_id(coord)
    join(coord, a)
    join(coord, b)
    coord.tick(FORMED_MS)
    tf, _ = sync(coord, b, 1)
    tn, _ = join(coord, group="other", require_id=False)
    answers = replies(coord.close_all())
    assert answers == {tf: SyncAnswer(KafkaError.NOT_COORDINATOR),
                       tn: JoinAnswer(KafkaError.NOT_COORDINATOR, answers[tn].member_id)}
    assert coord.held_count() == 0 and coord.member_count() == 0
    assert coord.list_groups() == [] and coord.next_deadline_ms() is None


# --- What deleting offsets needs ----------------------------------------------------

def test_a_groups_subscriptions_are_its_members_metadata_for_the_chosen_protocol(coord):
    # Given no group, then a member joined but no protocol chosen yet
    assert coord.subscriptions("g") is None
    member = new_member_id(coord)
    join(coord, member)
    assert coord.subscriptions("g") == ("consumer", None)
    # When the generation forms, "range" chosen
    coord.tick(FORMED_MS)
    # Then its members' metadata for range are the subscriptions
    assert coord.subscriptions("g") == ("consumer", [b"range-meta"])
