"""assignors.py: every partition has one owner; sticky moves only what it must."""

from __future__ import annotations

import random

import pytest

from plinth.shards.assignors import assign, assign_steps

COUNTS = {"a": 6, "b": 3}


def owners(result):
    return {tp: m for m, tps in result.items() for tp in tps}


@pytest.mark.parametrize("assignor", ["range", "sticky"])
def test_three_members_share_six_partitions_two_each(assignor):
    subs = {m: {"a"} for m in ("m1", "m2", "m3")}
    result = assign(assignor, subs, COUNTS, {})
    assert sorted(len(tps) for tps in result.values()) == [2, 2, 2]
    assert set(owners(result)) == {("a", p) for p in range(6)}


def test_range_gives_contiguous_ranges_in_member_order():
    result = assign("range", {"x": {"a"}, "y": {"a"}, "z": {"a"}, "w": {"a"}}, COUNTS, {})
    assert result["w"] == {("a", 0), ("a", 1)} and result["x"] == {("a", 2), ("a", 3)}
    assert result["y"] == {("a", 4)} and result["z"] == {("a", 5)}


def test_sticky_keeps_every_partition_it_can_when_a_member_joins():
    # Given two members sharing six partitions
    subs = {"m1": {"a"}, "m2": {"a"}}
    before = assign("sticky", subs, COUNTS, {})
    # When a third member joins
    subs["m3"] = {"a"}
    after = assign("sticky", subs, COUNTS, before)
    # Then the old members only lose partitions (to the newcomer), never swap
    assert after["m1"] <= before["m1"] and after["m2"] <= before["m2"]
    assert sorted(len(t) for t in after.values()) == [2, 2, 2]


def test_sticky_gives_a_leavers_partitions_to_the_others_and_keeps_theirs():
    subs = {"m1": {"a"}, "m2": {"a"}, "m3": {"a"}}
    before = assign("sticky", subs, COUNTS, {})
    del subs["m2"]
    after = assign("sticky", subs, COUNTS, before)
    assert before["m1"] <= after["m1"] and before["m3"] <= after["m3"]
    assert sorted(len(t) for t in after.values()) == [3, 3]


def test_members_only_get_topics_they_subscribe_to():
    subs = {"m1": {"a"}, "m2": {"a", "b"}}
    for assignor in ("range", "sticky"):
        result = assign(assignor, subs, COUNTS, {})
        assert all(t == "a" for t, _ in result["m1"])
        assert {("b", p) for p in range(3)} <= result["m2"]


def test_sticky_stays_valid_and_balanced_through_random_membership_changes():
    rng = random.Random(5)
    current: dict = {}
    subs: dict = {}
    for step in range(300):
        if subs and rng.random() < 0.4:
            del subs[rng.choice(sorted(subs))]
        else:
            subs[f"m{step}"] = {"a", "b"} if rng.random() < 0.7 else {"a"}
        current = assign("sticky", subs, COUNTS, current)   # assign() checks ownership itself
        if subs and all(s == {"a", "b"} for s in subs.values()):
            sizes = [len(t) for t in current.values()]
            assert max(sizes) - min(sizes) <= 1, (step, sizes)


def run_steps(steps) -> tuple[dict, int]:
    """Run an assignment's steps to the end; (its result, how many steps it took)."""
    count = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value, count + 1
        count += 1


@pytest.mark.parametrize("assignor", ["range", "sticky"])
def test_an_assignment_in_small_steps_is_the_same_as_at_once(assignor):
    # Given members coming and going on two topics, with what they had before
    rng = random.Random(11)
    subs = {f"m{n}": {"a", "b"} if rng.random() < 0.5 else {"a"} for n in range(40)}
    counts = {"a": 300, "b": 77}
    current = assign(assignor, subs, counts, {})
    for gone in rng.sample(sorted(subs), 10):
        del subs[gone]
    subs.update({f"new{n}": {"b"} for n in range(5)})
    # When it is computed in steps of 1, 7 and 256 units / Then the result is the same
    expected = assign(assignor, subs, counts, current)
    for step_units in (1, 7, 256):
        result, _ = run_steps(assign_steps(assignor, subs, counts, current, step_units))
        assert result == expected


def test_a_large_assignment_is_cut_into_many_small_steps():
    # Given 1,000 members on a topic of 4,096 partitions (the measurement)
    subs = {f"member-{n:04d}": {"big"} for n in range(1000)}
    # When the sticky assignor runs in steps of 256 units
    result, steps = run_steps(assign_steps("sticky", subs, {"big": 4096}, {}, 256))
    # Then the work is cut into many steps (each of about 256 units), and the result is whole
    assert steps >= 4096 * 2 // 256
    assert sum(map(len, result.values())) == 4096
