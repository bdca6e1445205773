"""deleteRecords answers waiting for the in-sync followers (shards/deletion_waits.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from plinth import limits
from plinth.errors import NotLeaderError, RequestTimedOutError, TooManyRequestsError
from plinth.shards.deletion_waits import DeletionWaits

LEADER = "shard-0"


def led_with(in_sync=(LEADER, "shard-1", "shard-2"), **log_starts):
    """What the waits read of a Led: its partition, in-sync set and followers' log starts."""
    return SimpleNamespace(part=SimpleNamespace(key=("t", 0), name="t-0"),
                           leadership=SimpleNamespace(in_sync=tuple(in_sync)),
                           follower_log_starts={k.replace("_", "-"): v
                                                for k, v in log_starts.items()})


def test_the_answer_waits_until_every_in_sync_follower_holds_the_floor():
    # Given a deletion to 7 while one follower's log starts at 7 and the other's at 0
    waits, answers = DeletionWaits(LEADER), []
    led = led_with(shard_1=7, shard_2=0)
    waits.wait(led, 7, answers.append, now_s=0.0)
    assert answers == []
    # When the other follower's next fetch says it holds 7
    led.follower_log_starts["shard-2"] = 7
    waits.check(led)
    # Then the deletion is answered, once
    waits.check(led)
    assert answers == [None]
    assert waits.next_deadline_s() is None


def test_a_partition_whose_followers_hold_the_floor_is_answered_at_once():
    answers = []
    DeletionWaits(LEADER).wait(led_with(shard_1=9, shard_2=12), 9, answers.append, now_s=0.0)
    assert answers == [None]


def test_a_follower_out_of_the_in_sync_set_is_not_waited_for():
    waits, answers = DeletionWaits(LEADER), []
    led = led_with(shard_1=5, shard_2=0)
    waits.wait(led, 5, answers.append, now_s=0.0)
    led.leadership.in_sync = (LEADER, "shard-1")   # shard-2 lagged out
    waits.expire(1.0, lambda key: led)
    assert answers == [None]


def test_a_wait_past_its_bound_is_answered_timed_out_naming_the_floor():
    waits, answers = DeletionWaits(LEADER), []
    led = led_with(shard_1=0, shard_2=0)
    waits.wait(led, 5, answers.append, now_s=100.0)
    deadline_s = 100.0 + limits.DELETE_RECORDS_WAIT_MS_MAX / 1000
    assert waits.next_deadline_s() == deadline_s
    waits.expire(deadline_s - 0.001, lambda key: led)
    assert answers == []
    waits.expire(deadline_s, lambda key: led)
    assert len(answers) == 1 and isinstance(answers[0], RequestTimedOutError)
    assert "t-0 before offset 5" in str(answers[0])


def test_a_partition_no_longer_led_answers_its_waits_with_why():
    waits, answers = DeletionWaits(LEADER), []
    waits.wait(led_with(shard_1=0), 5, answers.append, now_s=0.0)
    deposed = NotLeaderError("deposed")
    waits.fail(("t", 0), deposed)
    assert answers == [deposed] and waits.next_deadline_s() is None


def test_waits_are_bounded_per_shard(monkeypatch):
    monkeypatch.setattr(limits, "DELETE_RECORDS_PENDING_MAX", 2)
    waits, led = DeletionWaits(LEADER), led_with(shard_1=0)
    waits.wait(led, 5, lambda error: None, now_s=0.0)
    waits.wait(led, 6, lambda error: None, now_s=0.0)
    with pytest.raises(TooManyRequestsError, match="2 deleteRecords waiting"):
        waits.wait(led, 7, lambda error: None, now_s=0.0)
