"""The groups being watched (client/console/lag_watch.py): a group's lag is asked for
only while it has subscribers, once an interval however many, for a bounded number
of groups; a failure is reported and the watch goes on."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from plinth.client.console.group_offsets import LagHistory
from plinth.client.console.lag_watch import LagWatcher, wait_for_sample
from plinth.errors import TooManyGroupsWatchedError, UnavailableError
from plinth.protocol import GroupInfo

INTERVAL_S = 0.01


class CountingBroker:
    """Answers describe_group and group_lag like a broker with one idle group per name
    (lag 7 on one partition); counts the group_lag calls per group."""

    def __init__(self, failing: bool = False):
        self.lag_calls: dict[str, int] = {}
        self.failing = failing
        self.lock = threading.Lock()

    def describe_group(self, group: str) -> GroupInfo:
        if self.failing:
            raise UnavailableError(f"no shard answers for group {group}")
        return GroupInfo(group, "sticky", 0, committed={("t", 0): 3})

    def group_lag(self, group: str):
        with self.lock:
            self.lag_calls[group] = self.lag_calls.get(group, 0) + 1
        return [("t", 0, 3, 10, 7)]


async def samples_of(watch, count: int) -> None:
    seen = 0
    while seen < count:
        seen = await wait_for_sample(watch, seen, timeout_s=10)


def test_a_group_is_asked_about_only_while_it_has_subscribers():
    broker = CountingBroker()

    async def scenario():
        history = LagHistory()
        watcher = LagWatcher(broker, history, interval_s=INTERVAL_S)
        # Given nobody subscribed: nothing asked
        await asyncio.sleep(10 * INTERVAL_S)
        assert broker.lag_calls == {} and watcher.watched() == set()
        # When two pages of group a subscribe: its samples arrive, the lag summed
        watch = watcher.subscribe("a")
        watcher.subscribe("a")
        await samples_of(watch, 3)
        assert watcher.watched() == {"a"} and history.samples("a")[-1][1] == 7
        assert watch.detail.total_lag == 7 and watch.error == ""
        # When both leave: no more calls (a third group's samples measure the quiet)
        watcher.unsubscribe("a")
        watcher.unsubscribe("a")
        assert watcher.watched() == set()
        # (its task ends, cancelled, once a call it was making returns)
        done, _ = await asyncio.wait([watch.task], timeout=10)
        assert done and watch.task.cancelled()
        stopped_at = broker.lag_calls["a"]
        await samples_of(watcher.subscribe("b"), 5)
        assert broker.lag_calls["a"] == stopped_at
        watcher.unsubscribe("b")

    asyncio.run(scenario())


def test_more_groups_than_the_limit_are_refused_and_a_freed_place_is_reused():
    async def scenario():
        watcher = LagWatcher(CountingBroker(), LagHistory(), interval_s=INTERVAL_S,
                             groups_max=2)
        watcher.subscribe("a")
        watcher.subscribe("b")
        watcher.subscribe("b")   # one more page of a watched group takes no place
        with pytest.raises(TooManyGroupsWatchedError, match="the lag of 2 groups is being "
                                                            "sampled .* at most 2"):
            watcher.subscribe("c")
        assert watcher.watched() == {"a", "b"}
        watcher.unsubscribe("a")
        watcher.subscribe("c")
        assert watcher.watched() == {"b", "c"}
        for group in ("b", "b", "c"):
            watcher.unsubscribe(group)

    asyncio.run(scenario())


async def until(watch, condition) -> None:
    seen = watch.polls
    while not condition():
        seen = await wait_for_sample(watch, seen, timeout_s=10)


def test_a_failing_broker_is_reported_and_the_watch_keeps_asking():
    async def scenario():
        watcher = LagWatcher(CountingBroker(failing=True), LagHistory(), interval_s=INTERVAL_S)
        watch = watcher.subscribe("a")
        await samples_of(watch, 3)
        watcher.unsubscribe("a")
        return watch

    watch = asyncio.run(scenario())
    assert watch.error == "UnavailableError: no shard answers for group a"
    assert watch.detail is None


def test_a_group_whose_samples_keep_failing_is_warned_about_once_until_it_answers_again(
        caplog):
    broker = CountingBroker(failing=True)

    async def scenario():
        watcher = LagWatcher(broker, LagHistory(), interval_s=INTERVAL_S)
        watch = watcher.subscribe("a")
        await samples_of(watch, 3)
        broker.failing = False
        await until(watch, lambda: not watch.error)
        broker.failing = True
        await until(watch, lambda: watch.error)
        await samples_of(watch, watch.polls + 2)
        watcher.unsubscribe("a")

    # Given a group whose samples fail 3 times, then answer, then fail again
    with caplog.at_level(logging.DEBUG, logger="plinth.client.console.lag_watch"):
        asyncio.run(scenario())
    # Then one warning for each spell of failures, the repeats at debug
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["console lag of group 'a': UnavailableError: no shard answers "
                        "for group a"] * 2
    assert any(r.levelno == logging.DEBUG for r in caplog.records)
    assert any("answered again" in r.getMessage() for r in caplog.records)
