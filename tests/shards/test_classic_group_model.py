"""classic_group.py under random joins, syncs, heartbeats, leaves, intruders and clock
advances (hypothesis.stateful), checking what must always hold: every request is
answered exactly once, at most one leader per generation, every member of a Stable
group knows its generation, and time alone empties the coordinator."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from plinth.shards.classic_group import ClassicGroupCoordinator, GroupState, KafkaError

GROUP = "g"
DELAY_MS = 100
SESSION_MS = 1_000
REBALANCE_MS = 3_000
SLOTS = 5                  # client processes; the last one is static ("instance")
STATIC = SLOTS - 1
PROTOCOL_SETS = [
    (("range", b"r"),),
    (("range", b"r2"), ("roundrobin", b"x")),
    (("roundrobin", b""),),
]
STEPS_MS = [1, 1, DELAY_MS // 2, DELAY_MS + 1, DELAY_MS + 1, SESSION_MS // 2, SESSION_MS + 1,
            REBALANCE_MS + 1]


@dataclass
class Slot:
    """What one client process knows."""
    key: str
    instance: str | None
    member_id: str = ""
    generation: int = -1


class ClassicGroupModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.coord = ClassicGroupCoordinator(initial_rebalance_delay_ms=DELAY_MS)
        self.now_ms = 0
        self.tokens = itertools.count()
        self.held: dict[int, int] = {}            # token -> slot, waiting for an answer
        self.answered: set[int] = set()
        self.leaders: dict[int, set[str]] = {}    # generation -> members told they lead
        self.slots = [Slot(f"key-{i % 2}", "instance" if i == STATIC else None)
                      for i in range(SLOTS)]

    # --- Sending -------------------------------------------------------------------

    def send(self, slot: int, call) -> None:
        token = next(self.tokens)
        self.held[token] = slot
        self.receive(call(token))

    def receive(self, replies) -> None:
        for token, answer in replies:
            assert token not in self.answered, f"token {token} answered twice"
            assert token in self.held, f"token {token} answered but never held"
            self.answered.add(token)
            self.learn(self.slots[self.held.pop(token)], answer)

    def learn(self, slot: Slot, answer) -> None:
        error = answer.error
        if error in (KafkaError.UNKNOWN_MEMBER_ID, KafkaError.FENCED_INSTANCE_ID,
                     KafkaError.NOT_COORDINATOR):
            slot.member_id, slot.generation = "", -1
        elif hasattr(answer, "generation_id") and error is KafkaError.MEMBER_ID_REQUIRED:
            slot.member_id = answer.member_id
        elif hasattr(answer, "generation_id") and error is KafkaError.NONE:
            slot.member_id, slot.generation = answer.member_id, answer.generation_id
            if answer.members:
                self.leaders.setdefault(answer.generation_id, set()).add(answer.member_id)

    # --- Rules -----------------------------------------------------------------------

    def members(self) -> list[int]:
        return [i for i, s in enumerate(self.slots) if s.member_id]

    def synced_members(self) -> list[int]:
        return [i for i in self.members() if self.slots[i].generation >= 0]

    @rule(slot=st.integers(0, SLOTS - 1), protocols=st.sampled_from(PROTOCOL_SETS),
          require_id=st.booleans(), ptype=st.sampled_from(["consumer"] * 9 + ["connect"]))
    def join(self, slot, protocols, require_id, ptype):
        self.join_as(slot, protocols, require_id, ptype)

    @precondition(lambda self: self.members())
    @rule(data=st.data(), same_protocols=st.booleans())
    def a_member_joins_again(self, data, same_protocols):
        slot = data.draw(st.sampled_from(self.members()))
        self.join_as(slot, PROTOCOL_SETS[0 if same_protocols else 1], True, "consumer")

    def join_as(self, slot, protocols, require_id, ptype):
        s = self.slots[slot]
        self.send(slot, lambda token: self.coord.join(
            token, GROUP, s.member_id, s.instance, ptype, list(protocols), SESSION_MS,
            REBALANCE_MS, self.now_ms, client_id=f"c{slot}", client_key=s.key,
            require_known_member_id=require_id))

    @precondition(lambda self: self.synced_members())
    @rule(data=st.data(), assign=st.booleans())
    def a_member_syncs(self, data, assign):
        self.sync_as(data.draw(st.sampled_from(self.synced_members())), assign)

    @precondition(lambda self: self.followers())
    @rule(data=st.data())
    def a_follower_syncs(self, data):
        """(Its own rule: a follower syncing before its leader is the case that holds.)"""
        self.sync_as(data.draw(st.sampled_from(self.followers())), False)

    def followers(self) -> list[int]:
        leader = self.coord.describe(GROUP).leader_id
        return [i for i in self.synced_members() if self.slots[i].member_id != leader]

    def sync_as(self, slot, assign):
        s = self.slots[slot]
        members = [m.member_id for m in self.coord.describe(GROUP).members]
        assignments = [(m, m.encode()) for m in members] if assign else []
        self.send(slot, lambda token: self.coord.sync(
            token, GROUP, s.generation, s.member_id, s.instance, "consumer", None,
            assignments, self.now_ms, client_key=s.key))

    @precondition(lambda self: self.members())
    @rule(data=st.data())
    def heartbeat(self, data):
        slot = data.draw(st.sampled_from(self.members()))
        s = self.slots[slot]
        self.send(slot, lambda token: self.coord.heartbeat(
            token, GROUP, s.generation, s.member_id, s.instance, self.now_ms,
            client_key=s.key))

    @precondition(lambda self: self.members())
    @rule(data=st.data(), by_instance=st.booleans())
    def leave(self, data, by_instance):
        slot = data.draw(st.sampled_from(self.members()))
        s = self.slots[slot]
        identity = ("", s.instance) if by_instance else (s.member_id, s.instance)
        self.send(slot, lambda token: self.coord.leave(token, GROUP, [identity], self.now_ms,
                                                       client_key=s.key))

    @rule(slot=st.integers(0, SLOTS - 1))
    def an_intruder_names_a_member(self, slot):
        """Another client key naming a member is refused and changes nothing."""
        s = self.slots[slot]
        if not s.member_id:
            return
        before = self.coord.describe(GROUP)
        token = next(self.tokens)
        (_, answer), = self.coord.heartbeat(token, GROUP, s.generation, s.member_id, None,
                                            self.now_ms, client_key="intruder")
        assert answer.error in (KafkaError.UNKNOWN_MEMBER_ID, KafkaError.FENCED_INSTANCE_ID)
        (_, answer), = self.coord.leave(token, GROUP, [(s.member_id, None)], self.now_ms,
                                        client_key="intruder")
        assert answer.members[0].error is KafkaError.UNKNOWN_MEMBER_ID
        if s.generation >= 0:   # (-1 is an administrator's commit: fine for a group
            # without members, whoever sends it)
            assert self.coord.check_commit(GROUP, s.member_id, s.generation, None,
                                           client_key="intruder") is not KafkaError.NONE
        assert self.coord.describe(GROUP) == before

    @rule(step_ms=st.sampled_from(STEPS_MS))
    def time_passes(self, step_ms):
        self.now_ms += step_ms
        self.receive(self.coord.tick(self.now_ms))

    @precondition(lambda self: self.coord.held_count() >= 3)
    @rule()
    def the_shard_hands_over(self):
        self.receive(self.coord.close_all())
        assert not self.held

    def everyone_falls_silent(self):
        """With time alone, every held request is answered and every group leaves."""
        for _ in range(100):
            deadline = self.coord.next_deadline_ms()
            if deadline is None:
                break
            self.now_ms = max(self.now_ms, int(deadline) + 1)
            self.receive(self.coord.tick(self.now_ms))
        assert not self.held, f"held without an answer: {sorted(self.held)}"
        assert self.coord.list_groups() == [] and self.coord.member_count() == 0

    # --- Invariants --------------------------------------------------------------------

    @invariant()
    def every_held_request_is_held_by_the_coordinator(self):
        assert self.coord.held_count() == len(self.held)

    @invariant()
    def at_most_one_leader(self):
        if not self.coord.has_group(GROUP):   # a group that left starts again at generation 1
            self.leaders.clear()
        for generation, leaders in self.leaders.items():
            assert len(leaders) <= 1, f"generation {generation} has leaders {leaders}"
        described = self.coord.describe(GROUP)
        ids = [m.member_id for m in described.members]
        assert (described.leader_id in ids) if ids else not described.leader_id

    @invariant()
    def every_member_of_a_stable_group_has_its_generation(self):
        described = self.coord.describe(GROUP)
        if described.state is not GroupState.STABLE:
            return
        ids = {m.member_id for m in described.members}
        for s in self.slots:
            if s.instance is None and s.member_id in ids:
                assert s.generation == described.generation_id, (s, described)

    def teardown(self):
        self.everyone_falls_silent()
        self.receive(self.coord.close_all())
        assert not self.held


ClassicGroupModel.TestCase.settings = settings(
    max_examples=300, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_the_classic_group_protocol_keeps_its_invariants = ClassicGroupModel.TestCase
