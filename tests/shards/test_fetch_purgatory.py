"""The fetch purgatory (shards/fetch_purgatory.py): parked fetches, answered exactly once.

The purgatory touches no socket and no disk: its neighbour is the answer
callback, here a list of what each parked fetch was answered with.
"""

from __future__ import annotations

import random

import pytest

from plinth import limits
from plinth.errors import UnknownTopicError
from plinth.shards.fetch_purgatory import FetchPurgatory

T0, T1 = ("t", 0), ("t", 1)


class Answers:
    """The answer callback: records (request, error) in the order answered."""

    def __init__(self):
        self.given = []

    def __call__(self, request, error):
        self.given.append((request, error))

    @property
    def requests(self):
        return [request for request, _ in self.given]


@pytest.fixture
def answers():
    return Answers()


def test_waking_a_partition_answers_its_parked_fetches_oldest_first_and_no_others(answers):
    # Given fetches parked on two partitions
    purgatory = FetchPurgatory()
    for request, key in (("a", T0), ("b", T1), ("c", T0)):
        assert purgatory.park(key, 10.0, request, answers)
    # When partition 0's log moves
    woken = purgatory.wake(T0)
    # Then its two fetches are answered, oldest first, without an error; partition 1's waits
    assert woken == 2 and answers.given == [("a", None), ("c", None)]
    assert len(purgatory) == 1
    # And waking it again answers nobody twice
    assert purgatory.wake(T0) == 0 and len(answers.given) == 2


def test_a_fetch_whose_wait_ends_is_answered_and_later_deadlines_keep_waiting(answers):
    # Given fetches with deadlines 3, 1 and 2 s
    purgatory = FetchPurgatory()
    for request, deadline_s in (("late", 3.0), ("early", 1.0), ("middle", 2.0)):
        purgatory.park(T0, deadline_s, request, answers)
    assert purgatory.next_deadline_s() == 1.0
    # When the time is 2 s / Then the two due ones are answered, earliest first
    assert purgatory.expire(2.0) == 2
    assert answers.requests == ["early", "middle"]
    assert purgatory.next_deadline_s() == 3.0 and len(purgatory) == 1
    # And the last one is still woken by its partition
    purgatory.wake(T0)
    assert answers.requests == ["early", "middle", "late"]


def test_a_woken_fetch_is_not_answered_again_when_its_deadline_passes(answers):
    purgatory = FetchPurgatory()
    purgatory.park(T0, 1.0, "a", answers)
    purgatory.wake(T0)
    assert purgatory.expire(5.0) == 0
    assert answers.given == [("a", None)] and purgatory.next_deadline_s() is None


def test_failing_a_partition_answers_its_fetches_with_the_error(answers):
    # Given fetches parked on a partition that is then deleted
    purgatory = FetchPurgatory()
    purgatory.park(T0, 10.0, "a", answers)
    purgatory.park(T1, 10.0, "b", answers)
    deleted = UnknownTopicError("topic 't' was deleted")
    # When it fails / Then each of its fetches gets the error, once
    assert purgatory.fail(T0, deleted) == 1
    assert answers.given == [("a", deleted)]
    assert purgatory.expire(20.0) == 1 and answers.given[-1] == ("b", None)


def test_no_more_than_parked_max_fetches_wait_and_an_answer_makes_room(answers):
    # Given a purgatory full at 3 fetches
    purgatory = FetchPurgatory(parked_max=3, heap_entries_max=6)
    assert all(purgatory.park(T0, 10.0, n, answers) for n in range(3))
    # When one more comes / Then it is refused (its caller answers it at once)
    assert not purgatory.park(T1, 10.0, "refused", answers)
    assert len(purgatory) == 3 and answers.given == []
    # When the parked ones are answered / Then there is room again
    purgatory.wake(T0)
    assert purgatory.park(T1, 10.0, "parked", answers) and len(purgatory) == 1


def test_the_deadline_heap_stays_bounded_while_fetches_are_woken_long_before_their_deadlines(
        answers):
    # Given fetches that wait long but are woken at once, many times over
    purgatory = FetchPurgatory(parked_max=4, heap_entries_max=8)
    for n in range(1000):
        assert purgatory.park(T0, 1000.0 + n, n, answers)
        purgatory.wake(T0)
    # Then the heap never holds more than its bound, and every fetch was answered once
    assert len(purgatory._deadlines) <= 8
    assert answers.requests == list(range(1000))
    # And a fetch parked after them still expires on time
    purgatory.park(T1, 5.0, "last", answers)
    assert purgatory.expire(5.0) == 1 and answers.requests[-1] == "last"


def test_the_heap_must_be_able_to_hold_every_parked_fetch():
    with pytest.raises(AssertionError, match="must hold every parked fetch"):
        FetchPurgatory(parked_max=10, heap_entries_max=10)
    assert limits.PARKED_FETCHES_MAX < limits.PARKED_HEAP_ENTRIES_MAX


def test_while_there_is_room_one_owner_may_park_every_place(answers):
    purgatory = FetchPurgatory(parked_max=4, heap_entries_max=8)
    assert all(purgatory.park(T0, 10.0, n, answers, owner="greedy") for n in range(4))
    assert purgatory.parked_for("greedy") == 4 and answers.given == []


def test_a_full_purgatory_makes_room_for_an_owner_below_its_share_by_answering_the_largest_owners_oldest(
        answers):
    # Given a full purgatory: "greedy" parked 3 fetches, "modest" 1
    purgatory = FetchPurgatory(parked_max=4, heap_entries_max=8)
    for request in ("g1", "g2", "g3"):
        assert purgatory.park(T0, 10.0, request, answers, owner="greedy")
    assert purgatory.park(T1, 10.0, "m1", answers, owner="modest")
    # When "modest" (1 of a share of 4 / 2 owners) parks another
    assert purgatory.park(T1, 10.0, "m2", answers, owner="modest")
    # Then greedy's oldest fetch was answered now, without an error, to make room
    assert answers.given == [("g1", None)]
    assert (purgatory.parked_for("greedy"), purgatory.parked_for("modest"), len(purgatory)) == (
        2, 2, 4)
    # And when greedy's partition moves, only its own two remaining fetches are answered
    assert purgatory.wake(T0) == 2 and answers.requests == ["g1", "g2", "g3"]


def test_a_full_purgatory_refuses_an_owner_at_its_share(answers):
    # Given a full purgatory shared 2 and 2
    purgatory = FetchPurgatory(parked_max=4, heap_entries_max=8)
    for owner in ("a", "a", "b", "b"):
        assert purgatory.park(T0, 10.0, owner, answers, owner=owner)
    # When either parks one more / Then it is refused, and nobody is answered
    assert not purgatory.park(T0, 10.0, "a3", answers, owner="a")
    assert not purgatory.park(T0, 10.0, "b3", answers, owner="b")
    assert answers.given == [] and len(purgatory) == 4
    # And a newcomer (a share of 4 / 3 owners) takes a place from one of them
    assert purgatory.park(T1, 10.0, "c1", answers, owner="c")
    assert len(answers.given) == 1 and len(purgatory) == 4 and purgatory.parked_for("c") == 1


def test_with_more_owners_than_places_a_newcomer_still_parks_one_fetch(answers):
    # Given a purgatory of 4 places, full with one fetch each of 4 owners
    purgatory = FetchPurgatory(parked_max=4, heap_entries_max=8)
    for owner in "abcd":
        assert purgatory.park(T0, 10.0, owner, answers, owner=owner)
    # When a fifth owner parks (its share, 4 // 5, rounds to none) / Then it still gets
    # one place, taken from the oldest fetch, and a second fetch of it is refused
    assert purgatory.park(T1, 10.0, "e1", answers, owner="e")
    assert answers.given == [("a", None)] and purgatory.parked_for("e") == 1
    assert not purgatory.park(T1, 10.0, "e2", answers, owner="e")
    assert len(purgatory) == 4


def test_one_owner_parking_thousands_never_stops_others_parking_their_share(answers):
    # Given an owner that keeps a full purgatory of 1,000 places busy
    purgatory = FetchPurgatory(parked_max=1000, heap_entries_max=2000)
    for n in range(5000):
        purgatory.park(T0, 100.0 + n, ("flood", n), answers, owner="flood")
    assert len(purgatory) == 1000 and purgatory.parked_for("flood") == 1000
    # When 9 consumers park one long poll each, and then their share, while the flood goes on
    for round_ in range(1000 // 10):
        for consumer in range(9):
            assert purgatory.park(T1, 60.0, (consumer, round_), answers, owner=consumer), (
                f"consumer {consumer} refused at {purgatory.parked_for(consumer)} parked")
        purgatory.park(T0, 100.0, ("flood", "more"), answers, owner="flood")
    # Then each holds its share of a tenth, and nothing of theirs was answered early
    assert [purgatory.parked_for(consumer) for consumer in range(9)] == [100] * 9
    assert purgatory.parked_for("flood") == 100 and len(purgatory) == 1000
    assert all(request[0] == "flood" for request in answers.requests)
    # And every place is accounted for once the partitions move
    assert purgatory.wake(T0) + purgatory.wake(T1) == 1000
    assert len(purgatory) == 0 and purgatory.parked_for("flood") == 0


def test_shares_stay_consistent_through_random_parks_wakes_and_expiries(answers):
    # Given a purgatory of 50 places, seven owners and a flood owner acting at random
    rng = random.Random(5)
    purgatory = FetchPurgatory(parked_max=50, heap_entries_max=100)
    owners = [*"abcdefg", "flood"]
    now_s = 0.0
    for step in range(20_000):
        action = rng.random()
        owner = rng.choice(owners[:-1]) if rng.random() < 0.8 else "flood"
        if action < 0.7:
            before = purgatory.parked_for(owner)
            holding = sum(1 for o in owners if purgatory.parked_for(o)) + (before == 0)
            parked = purgatory.park(rng.choice((T0, T1)), now_s + rng.random(), step, answers,
                                    owner=owner)
            # Then an owner below its fair share is never refused
            assert parked or before >= 50 // holding, (step, owner, before, holding)
        elif action < 0.8:
            purgatory.wake(rng.choice((T0, T1)))
        else:
            now_s += 0.1
            purgatory.expire(now_s)
        # And the places held add up, within the bound
        assert sum(purgatory.parked_for(o) for o in owners) == len(purgatory) <= 50
    # And every fetch was answered at most once
    assert len(answers.requests) == len(set(answers.requests))
