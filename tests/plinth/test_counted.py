"""plinth/counted.py: a count with its noun, plural but for one."""

from __future__ import annotations

from plinth.counted import counted


def test_a_count_of_one_keeps_the_noun_and_others_make_it_plural():
    assert [counted(n, "shard") for n in (0, 1, 2)] == ["0 shards", "1 shard", "2 shards"]


def test_a_noun_ending_in_s_takes_es():
    assert [counted(n, "process") for n in (1, 3)] == ["1 process", "3 processes"]
