"""file_budget.py: the open-file limit a shard raises, and the partitions it leaves room for."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from plinth import limits
from plinth.errors import InvalidPartitionsError
from plinth.shards import file_budget

FILES_FOR_OTHER_THINGS = limits.SEGMENT_FILES_OPEN_MAX + limits.SHARD_FILES_RESERVED


@pytest.fixture
def soft_limit():
    """Sets this process's soft limit on open files for the test; puts it back after."""
    saved = resource.getrlimit(resource.RLIMIT_NOFILE)

    def set_soft(soft: int) -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, saved[1]))
    yield set_soft
    resource.setrlimit(resource.RLIMIT_NOFILE, saved)


def test_the_soft_limit_is_raised_to_the_hard_limit(soft_limit):
    # Given a soft limit of 1,024 below the hard limit (the usual default)
    soft_limit(1024)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # When raised / Then it is the hard limit (an unlimited hard limit is left alone)
    expected = 1024 if hard == resource.RLIM_INFINITY else hard
    assert file_budget.raise_soft_limit() == (1024, expected)
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == expected


def test_a_shard_has_room_for_its_limit_less_the_files_it_keeps_for_other_things(soft_limit):
    soft_limit(1000)
    room = 1000 - FILES_FOR_OTHER_THINGS
    assert file_budget.partitions_max() == room
    file_budget.check_room("shard-3", room - 2, 2)
    with pytest.raises(InvalidPartitionsError,
                       match=f"shard-3 cannot open 3 more partitions: it holds {room - 2}, and "
                             f"its limit of 1000 open files leaves room for {room} .*ulimit -n"):
        file_budget.check_room("shard-3", room - 2, 3)


def test_a_shard_over_its_room_may_reopen_what_it_holds_but_not_open_more(soft_limit):
    # Given a limit too low for the 3 partitions a shard holds (ulimit -n 256)
    soft_limit(256)
    assert file_budget.partitions_max() == 0
    # Then reopening them, nothing new, is taken, and one more is refused
    file_budget.check_room("shard-0", 3, 0)
    with pytest.raises(InvalidPartitionsError, match="shard-0 cannot open 1 more partitions"):
        file_budget.check_room("shard-0", 3, 1)


def start_warning_under(hard_limit: int) -> str:
    """file_budget.start_warning() in a process whose open-file limits are both
    ``hard_limit`` (as `ulimit -n` sets them), printed: this process's hard limit
    cannot be lowered and raised again."""
    code = ("import resource, sys; "
            f"resource.setrlimit(resource.RLIMIT_NOFILE, ({hard_limit}, {hard_limit})); "
            "from plinth.shards import file_budget; print(file_budget.start_warning())")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()


def test_serve_warns_at_start_when_its_shards_will_have_room_for_too_few_partitions():
    # Given the limit of tester T-fd's `ulimit -n 256`, under which every create failed
    # When plinth serve asks before it starts its shards
    line = start_warning_under(256)
    # Then it says so, naming the limit, the room and the way out
    assert line == (f"the open-file limit here is 256 (ulimit -Hn), so each shard will have "
                    f"room for 0 partitions ({limits.SEGMENT_FILES_OPEN_MAX} files are kept for "
                    f"rolled segments and {limits.SHARD_FILES_RESERVED} for sockets and the "
                    f"rest), fewer than {limits.SHARD_PARTITIONS_ROOM_WARN_MIN}: raise it where "
                    f"the broker starts (ulimit -n, LimitNOFILE= under systemd)")
    # And a limit with room enough says nothing
    assert start_warning_under(
        FILES_FOR_OTHER_THINGS + limits.SHARD_PARTITIONS_ROOM_WARN_MIN) == "None"


def test_a_shard_with_no_room_at_all_is_not_told_to_add_shards(soft_limit):
    # Given a limit that leaves no room (every shard started here has the same one)
    soft_limit(256)
    # Then the refusal names the limit, and not adding shards, which cannot help
    with pytest.raises(InvalidPartitionsError) as refused:
        file_budget.check_room("shard-0", 0, 3)
    assert str(refused.value).endswith("LimitNOFILE= under systemd) where the broker starts")
