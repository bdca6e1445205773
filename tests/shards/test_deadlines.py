"""deadlines.py: keys with one deadline each, earliest first, memory bounded."""

from __future__ import annotations

import pytest

from plinth.shards.deadlines import Deadlines


def test_keys_come_due_earliest_first_and_at_most_as_many_as_asked():
    deadlines = Deadlines(entries_min=4)
    for key, deadline in (("c", 3.0), ("a", 1.0), ("b", 2.0), ("d", 9.0)):
        deadlines.set(key, deadline)
    assert deadlines.next_deadline() == 1.0
    assert deadlines.pop_due(5.0, count_max=2) == ["a", "b"]
    assert deadlines.pop_due(5.0, count_max=2) == ["c"]
    assert len(deadlines) == 1 and "d" in deadlines and deadlines.next_deadline() == 9.0


def test_a_deadline_moved_later_or_discarded_does_not_come_due_early():
    # Given a key whose deadline moves later (a heartbeat), and one discarded
    deadlines = Deadlines(entries_min=4)
    deadlines.set("member", 1.0)
    deadlines.set("gone", 0.5)
    deadlines.set("member", 10.0)
    deadlines.discard("gone")
    # When the old deadlines pass / Then nothing is due, and the next deadline is the new one
    assert deadlines.pop_due(5.0, count_max=10) == []
    assert deadlines.next_deadline() == 10.0 and deadlines.get("member") == 10.0
    # And a deadline moved earlier comes due at once
    deadlines.set("member", 2.0)
    assert deadlines.pop_due(5.0, count_max=10) == ["member"]
    assert deadlines.next_deadline() is None


def test_the_heap_holds_at_most_twice_its_keys_however_often_they_change():
    # Given 100 keys whose deadlines move earlier a thousand times each
    deadlines = Deadlines(entries_min=16)
    for round_ in range(1000):
        for key in range(100):
            deadlines.set(key, 1e6 - round_)
        # Then the heap never holds more than twice the live keys
        assert len(deadlines._heap) <= 2 * len(deadlines)
    assert deadlines.pop_due(1e6, count_max=1000) == list(range(100))


def test_a_heap_without_room_is_a_bug():
    with pytest.raises(AssertionError):
        Deadlines(entries_min=0)
