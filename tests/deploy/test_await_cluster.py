"""deploy/await_cluster.py: the bounded wait and the command line (no Ray cluster needed)."""

from __future__ import annotations

import pytest

from tests.deploy.deploy_files import load_await_cluster

await_cluster = load_await_cluster()


class FakeClock:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self):
        self.now_s = 100.0
        self.sleeps_s: list[float] = []

    def __call__(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.sleeps_s.append(seconds)
        self.now_s += seconds


def test_waiting_ends_as_soon_as_the_condition_holds():
    # Given a condition that becomes true on the third look
    clock, looks = FakeClock(), []

    def ready():
        looks.append(clock())
        return len(looks) == 3

    # When waiting up to a minute, looking every 2 s
    assert await_cluster.wait_until(ready, 60, interval_s=2, clock=clock, sleep=clock.sleep)
    # Then it looked three times, 2 s apart, and stopped
    assert looks == [100.0, 102.0, 104.0]


def test_waiting_gives_up_at_the_timeout_after_a_bounded_number_of_looks():
    clock, looks = FakeClock(), []

    def never():
        looks.append(clock())
        return False

    assert not await_cluster.wait_until(never, 5, interval_s=2, clock=clock, sleep=clock.sleep)
    # Looks at 0, 2, 4 and the deadline 5; the last sleep is cut to the time left
    assert looks == [100.0, 102.0, 104.0, 105.0]
    assert clock.sleeps_s == [2, 2, 1]


def test_waiting_looks_once_even_with_no_time_left():
    clock = FakeClock()
    assert await_cluster.wait_until(lambda: True, 0, clock=clock, sleep=clock.sleep)
    assert not await_cluster.wait_until(lambda: False, -1, clock=clock, sleep=clock.sleep)
    assert clock.sleeps_s == []


@pytest.mark.parametrize("argv", [
    [],                                   # neither --nodes nor --broker
    ["--nodes", "0"],
    ["--nodes", "three"],
    ["--broker", "plinth", "--timeout-s", "0"],
    ["--broker", "plinth", "--timeout", "60"],
], ids=lambda argv: " ".join(argv) or "no options")
def test_the_helper_refuses_a_command_line_that_says_nothing_to_wait_for_or_a_bad_value(argv):
    with pytest.raises(SystemExit) as exit_info:
        await_cluster.parse_args(argv)
    assert exit_info.value.code == 2


def test_the_helper_waits_for_nodes_and_a_broker_with_a_default_timeout():
    args = await_cluster.parse_args(["--nodes", "3", "--broker", "plinth"])
    assert (args.nodes, args.broker, args.ray_address) == (3, "plinth", "auto")
    assert args.timeout_s == await_cluster.TIMEOUT_S_DEFAULT
