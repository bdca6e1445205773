"""offset_store.py: committed offsets and settings in a compacted log on disk, deletions,
and each group's last write time surviving restarts and compaction."""

from __future__ import annotations

from plinth import limits
from plinth.shards.offset_store import OffsetStore


class WallClock:
    def __init__(self, now_ms: int = 5_000_000):
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def test_a_deleted_group_stays_deleted_after_a_reopen_and_others_are_untouched(tmp_path):
    # Given two groups with offsets and settings
    store = OffsetStore.open(tmp_path)
    store.commit("gone", {("t", 0): 1}, {"assignor": "range"})
    store.commit("kept", {("t", 0): 2})
    # When one is deleted
    store.delete(["gone", "never-was"])
    assert store.groups() == {"kept"} and store.offsets("gone") == {}
    store.close()
    # Then after a reopen (replay and compaction) it is still gone, the other kept
    store = OffsetStore.open(tmp_path)
    assert store.groups() == {"kept"} and store.offsets("kept") == {("t", 0): 2}
    assert store.setting("gone", "assignor") is None
    store.close()
    # And a group of that name may start afresh
    store = OffsetStore.open(tmp_path)
    store.commit("gone", {("t", 1): 9})
    store.close()
    store = OffsetStore.open(tmp_path)
    assert store.offsets("gone") == {("t", 1): 9}
    store.close()


def test_a_groups_last_write_time_survives_reopens_and_compaction(tmp_path):
    # Given a group written at T, rewritten many times until T + 10 s
    wall = WallClock()
    store = OffsetStore.open(tmp_path, wall)
    for n in range(20):
        store.commit("g", {("t", 0): n})
        wall.now_ms += 500
    written_ms = store.written_ms("g")
    store.close()
    # When the store is reopened twice (the first compacts), an hour later
    wall.now_ms += 3_600_000
    for _ in range(2):
        store = OffsetStore.open(tmp_path, wall)
        # Then its last write time is still the last commit's, not the reopen's
        assert store.written_ms("g") == written_ms
        store.close()


def test_compaction_keeps_at_most_the_retention_of_age_for_long_expired_groups(tmp_path):
    # Given a group last written long before the retention
    wall = WallClock()
    store = OffsetStore.open(tmp_path, wall)
    store.commit("old", {("t", 0): 1})
    store.commit("old", {("t", 0): 2})
    store.close()
    # When the store is reopened (and compacted) far later
    wall.now_ms += 3 * limits.OFFSETS_RETENTION_MS
    store = OffsetStore.open(tmp_path, wall)
    # Then the group's write time is at most one retention ago: it is already due
    assert store.written_ms("old") == wall.now_ms - limits.OFFSETS_RETENTION_MS
    store.close()
